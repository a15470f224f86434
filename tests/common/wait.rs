use std::time::{Duration, Instant};

/// Poll `ok` every 10 ms until it holds; fail naming `what` after `timeout`
/// (at the caller's line).
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
