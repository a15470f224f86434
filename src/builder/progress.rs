//! What a build shows while it works: one spinner per phase on a terminal
//! (its latest line and the elapsed time); otherwise (stderr not a
//! terminal, or NO_COLOR: `logging::decorations`) one line per finished
//! phase; nothing with `-q`.
//! Each phase is also an info-level `tracing` span, so `-v` times it.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Progress {
    /// One stack of lines on stderr; finished phases stay above the running one.
    bars: Option<MultiProgress>,
    quiet: bool,
}

impl Progress {
    /// Spinners only on an interactive terminal; `quiet` also silences notes.
    pub fn new(quiet: bool) -> Progress {
        let bars = !quiet && crate::logging::decorations();
        Progress {
            bars: bars.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            quiet,
        }
    }

    /// No output at all (library callers, tests).
    pub fn hidden() -> Progress {
        Progress {
            bars: None,
            quiet: true,
        }
    }

    pub fn phase(&self, what: &str) -> Phase {
        let bar = if let Some(multi) = &self.bars {
            let b = multi.add(ProgressBar::new_spinner());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner:.cyan} {prefix:.bold} {wide_msg:.dim} {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.set_prefix(what.to_string());
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        Phase {
            bar,
            lines: self.bars.is_none() && !self.quiet,
            what: what.to_string(),
            start: Instant::now(),
            done: false,
            _span: tracing::info_span!("build", phase = what).entered(),
        }
    }

    /// A line the user should read (chosen interpreter, result), unless quiet.
    pub fn note(&self, line: &str) {
        match &self.bars {
            Some(multi) => {
                let _ = multi.println(format!("vhrun: {line}"));
            }
            None if !self.quiet => eprintln!("vhrun: {line}"),
            None => {}
        }
    }
}

/// One phase; dropping it unfinished marks it failed.
pub struct Phase {
    bar: ProgressBar,
    /// No spinner: a line on stderr when the phase ends.
    lines: bool,
    what: String,
    start: Instant,
    done: bool,
    _span: tracing::span::EnteredSpan,
}

impl Phase {
    pub fn set_message(&self, msg: &str) {
        self.bar
            .set_message(msg.chars().take(200).collect::<String>());
    }

    pub fn finish(mut self, summary: &str) {
        self.done = true;
        let took = self.start.elapsed();
        tracing::info!("{}: {summary} ({:.1?})", self.what, took);
        if self.lines {
            eprintln!(
                "vhrun: {}: {summary} ({:.1}s)",
                self.what,
                took.as_secs_f64()
            );
        }
        if !self.bar.is_hidden() {
            self.bar.set_style(
                ProgressStyle::with_template("✔ {prefix:.bold} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            self.bar
                .finish_with_message(format!("{summary} ({:.1}s)", took.as_secs_f64()));
        }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if !self.done && !self.bar.is_hidden() {
            self.bar.set_style(
                ProgressStyle::with_template("✘ {prefix:.bold} failed")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            self.bar.abandon();
        }
    }
}
