//! Logs go to stderr through `tracing`; the task's own output is never
//! touched. `VHRUN_LOG` takes a tracing filter (`vhrun=debug,fuser=info`).

use tracing_subscriber::EnvFilter;

/// Install the subscriber. It spawns no thread, which matters: the sandbox
/// unshares namespaces that a second thread would forbid.
pub fn init(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
    let filter = std::env::var("VHRUN_LOG")
        .ok()
        .filter(|s| !s.is_empty())
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let timed = verbose > 0;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        // `-v` shows how long each span took (mount ready, first open, ...).
        .with_span_events(if timed {
            tracing_subscriber::fmt::format::FmtSpan::CLOSE
        } else {
            tracing_subscriber::fmt::format::FmtSpan::NONE
        });
    let _ = if timed {
        builder
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .try_init()
    } else {
        builder.without_time().try_init()
    };
}
