//! Letting rcc build an environment. `rcc holotree variables -r robot.yaml`
//! is the command that builds a robot's blueprint into rcc's hololib (shared
//! or per-user, whichever rcc uses) and prints the variables; `rcc holotree
//! prebuild` would avoid restoring a space but refuses to work unless the
//! shared holotree is enabled, so it is no general answer.
//!
//! rcc also restores the space it builds for; vhrun passes the same
//! `--space`/`--controller` as the run that needs it, so that directory is
//! the one `rcc run` would have produced (vhrun mounts over it).

use super::progress::Phase;
use crate::error::{Error, Result};
use std::path::Path;
use std::process::Command;

/// The exact command vhrun runs.
pub fn build_command(rcc: &Path, robot_yaml: &Path, space: &str, controller: &str) -> Command {
    let mut c = Command::new(rcc);
    c.args(["holotree", "variables", "--robot"])
        .arg(robot_yaml)
        .args([
            "--space",
            space,
            "--controller",
            controller,
            "--json",
            "--silent",
        ])
        .stdin(std::process::Stdio::null());
    c
}

/// Run rcc to build the robot's environment; the caller checks afterwards
/// that the catalog exists.
pub fn build(
    rcc: &Path,
    robot_yaml: &Path,
    space: &str,
    controller: &str,
    phase: &Phase,
) -> Result<()> {
    let cmd = build_command(rcc, robot_yaml, space, controller);
    let (code, log) = super::pip::run_logged(cmd, phase)?;
    if code != 0 {
        let tail: Vec<&str> = log
            .lines()
            .filter(|l| {
                !l.trim().is_empty() && !l.trim_start().starts_with(['{', '}', '[', ']', '"'])
            })
            .collect();
        let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
        return Err(Error::unavailable(
            format!(
                "{}: rcc could not build the environment (`{} holotree variables` exited with {code})",
                robot_yaml.display(),
                rcc.display()
            ),
            if tail.is_empty() { "see rcc's output above".to_string() } else { format!("rcc said: {tail}") },
        ));
    }
    Ok(())
}
