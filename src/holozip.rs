//! rcc's `hololib.zip` beside robot.yaml (`robot.Holozip()`): a robot that
//! ships its environment. rcc then restores from the zip instead of
//! building (`htfs.NewEnvironment` with a `ZipLibrary`). vhrun imports the
//! zip into the hololib when the robot's catalog is missing there, and
//! serves the catalog as usual; later runs find it without the zip.
//!
//! The import runs as a child `vhrun import` (the same command, its checks
//! and the holotree lock): it starts worker threads that would forbid the
//! user namespace the run still needs.

use crate::error::{Error, Result};
use crate::hololib::catalog::{catalog_name, host_platform};
use crate::hololib::{zipio, Locations};
use crate::resolve::{self, Resolved};
use crate::robot::Robot;
use std::path::{Path, PathBuf};

/// rcc's `Holozip()`: `hololib.zip` in the robot's directory, when it is a
/// file.
pub fn holozip(robot: &Robot) -> Option<PathBuf> {
    let zip = robot.root().join("hololib.zip");
    std::fs::metadata(&zip)
        .is_ok_and(|m| !m.is_dir())
        .then_some(zip)
}

/// [`resolve::resolve_environment`], importing the robot's `hololib.zip`
/// first when the catalog is missing and the zip is there. Any other
/// outcome (including a still missing catalog without a zip) is returned
/// as is, for the caller to build.
pub fn resolve_environment(
    locations: &Locations,
    robot: &Robot,
    controller: &str,
    space: &str,
) -> Result<Option<Resolved>> {
    let missing = match resolve::resolve_environment(locations, robot, controller, space) {
        Err(e @ Error::CatalogMissing { .. }) => e,
        other => return other,
    };
    let (
        Some(zip),
        Error::CatalogMissing {
            blueprint, file, ..
        },
    ) = (holozip(robot), &missing)
    else {
        return Err(missing);
    };
    import(&zip, blueprint, file)?;
    resolve::resolve_environment(locations, robot, controller, space)
}

/// Import `zip` if it holds this platform's catalog of `blueprint` (rcc
/// fails on a zip without it too; nothing is imported then).
fn import(zip: &Path, blueprint: &str, conda_file: &Path) -> Result<()> {
    let _span = tracing::info_span!("holozip.import", zip = %zip.display()).entered();
    let key = catalog_name(blueprint, host_platform());
    let held = zipio::catalog_names(zip)?;
    if !held.contains(&key) {
        return Err(Error::bad_input(
            zip,
            format!(
                "has no catalog {key} for the robot's environment ({}); it holds: {}",
                conda_file.display(),
                if held.is_empty() {
                    "none".to_string()
                } else {
                    held.join(", ")
                }
            ),
        ));
    }
    tracing::info!(
        "no catalog for blueprint {blueprint}: importing {}",
        zip.display()
    );
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let status = std::process::Command::new(exe)
        .arg("import")
        .args(crate::logging::verbosity_args())
        .arg(zip)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| Error::spawn("vhrun import", e))?;
    if !status.success() {
        // The import printed its own one-line error naming the zip.
        return Err(Error::EnvBuildFailed {
            blueprint: blueprint.to_string(),
            code: status.code().unwrap_or(crate::error::exit::INTERNAL),
        });
    }
    Ok(())
}
