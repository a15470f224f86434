//! `vhrun vars -r robot.yaml`: the environment a task of the robot would
//! get, printed as `rcc holotree variables` does (`export K=V` lines in
//! builder order, or `--json`). Read only: nothing is mounted or restored,
//! the space's facts come from the catalog.

use crate::cli::VarsArgs;
use crate::environ::{self, build, build_shell, load_env_json, render_exports, render_json};
use crate::error::{Error, IoContext, Result};
use crate::hololib::catalog::{catalog_name, host_platform};
use crate::hololib::layout::user_home_identity;
use crate::hololib::Locations;
use crate::paths::absolute;
use crate::resolve::{resolve_environment, EnvOptions};
use crate::robot::Robot;

pub fn run(args: &VarsArgs) -> Result<i32> {
    let locations = Locations::from_env();
    let robot = Robot::load(&args.robot.robot)?;
    let extra = match &args.robot.environment {
        Some(p) => load_env_json(&absolute(p))?,
        None => Vec::new(),
    };
    let (controller, space) = (&args.robot.controller, &args.robot.space);
    let resolved = match resolve_environment(&locations, &robot, controller, space) {
        // as rcc's `holotree variables`: pull a missing catalog first
        Err(Error::CatalogMissing { blueprint, .. })
            if crate::remote::pull_before_build(
                &locations,
                &catalog_name(&blueprint, host_platform()),
            ) =>
        {
            resolve_environment(&locations, &robot, controller, space)
        }
        other => other,
    };
    let env = match resolved? {
        // a shell robot gets only its PATH (rcc's `ht vars` fails on it)
        None => {
            let inherited: environ::EnvList = std::env::vars_os().collect();
            let cwd = std::env::current_dir().at(".")?;
            let uhi = user_home_identity(locations.user_home.as_deref());
            build_shell(&inherited, false, &cwd, &uhi, &robot.path_entries())
        }
        Some(resolved) => {
            let temp_dir = make_temp_dir(&locations)?;
            let opts = EnvOptions {
                full: false,
                rcc_env: args.rcc_env,
                extra,
                temp_dir,
                workspace: args.robot.workspace.clone(),
            };
            build(&resolved.env_inputs(&locations, Some(&robot), opts)?)
        }
    };
    if args.json {
        print!("{}", render_json(&env));
    } else {
        print!("{}", render_exports(&env));
    }
    Ok(0)
}

/// rcc creates its per-process `<home>/temp/<hex>` for `ht vars` too, so a
/// shell that sources the output has a TEMP that exists; `recycle.now` is
/// rcc's marker that lets its recycler remove the directory after 48 hours.
fn make_temp_dir(locations: &Locations) -> Result<std::path::PathBuf> {
    let dir = environ::rcc_temp_dir(&locations.robocorp_home);
    crate::paths::mkdir_all(&dir, 0o750)?;
    let marker = dir.join("recycle.now");
    std::fs::write(&marker, "True").at(&marker)?;
    Ok(dir)
}
