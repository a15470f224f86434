//! Logs go to stderr through `tracing`; the task's own output is never
//! touched. `VHRUN_LOG` takes a tracing filter (`vhrun=debug,fuser=info`).
//!
//! Decorations (ANSI colours in log lines, progress bars and spinners) are
//! shown only when stderr is a terminal, `NO_COLOR` is unset or empty and
//! `TERM` is not `dumb`: CI logs and pipes get plain lines. Every part of
//! vhrun that draws on stderr asks [`decorations`].

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use tracing_subscriber::EnvFilter;

/// `-q` as [`QUIET`], else the `-v` count (set by [`init`]).
static LEVEL: AtomicU8 = AtomicU8::new(0);
const QUIET: u8 = u8::MAX;

/// Install the subscriber. It spawns no thread, which matters: the sandbox
/// unshares namespaces that a second thread would forbid.
pub fn init(verbose: u8, quiet: bool) {
    LEVEL.store(if quiet { QUIET } else { verbose.min(3) }, Relaxed);
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
    let timed = verbose > 0;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(decorations())
        .with_target(false)
        // A log line that cannot be written (a warm server's log on a full
        // disk, a closed stderr) is dropped: by default the subscriber
        // would report it with eprintln!, which panics when stderr fails.
        .log_internal_errors(false)
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

/// Colours and progress bars on stderr: only for a person at a terminal
/// who did not ask for plain output (`NO_COLOR`, `TERM=dumb`).
pub fn decorations() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    !no_color && !dumb && std::io::IsTerminal::is_terminal(&std::io::stderr())
}

/// `-q` was given.
pub fn quiet() -> bool {
    LEVEL.load(Relaxed) == QUIET
}

/// The `-q`/`-v` flags this process got, for a vhrun it starts itself (so
/// a child build is as quiet or as verbose as the run that needs it).
pub fn verbosity_args() -> Vec<&'static str> {
    match LEVEL.load(Relaxed) {
        QUIET => vec!["-q"],
        0 => vec![],
        1 => vec!["-v"],
        2 => vec!["-vv"],
        _ => vec!["-vvv"],
    }
}
