//! `vhrun mount`: serve a catalog at a mount point of the host
//! (`crate::lower::host`).

use crate::cli::MountArgs;
use crate::error::{Error, Result};
use crate::hololib::Locations;
use crate::lower::blobcache::BlobCache;
use crate::lower::fuse::{PassthroughMode, WorkingSet};
use crate::lower::host::{self, HostMount};
use crate::tree::Tree;
use std::sync::Arc;

pub fn run(args: &MountArgs) -> Result<i32> {
    let loc = Locations::from_env();
    let (lib, name) = match (&args.catalog, &args.robot) {
        (Some(key), _) => loc.find_catalog(key)?,
        // The robot's environment, resolved as `vhrun run` does (no build).
        (None, Some(robot)) => {
            let robot = crate::robot::Robot::load(robot)?;
            let resolved = crate::resolve::resolve_environment(&loc, &robot, "user", "user")?
                .ok_or_else(|| {
                    Error::bad_input(
                        robot.file(),
                        "no condaConfigFile: a shell robot has no environment to mount",
                    )
                })?;
            (resolved.hololib, resolved.catalog_key)
        }
        (None, None) => {
            return Err(Error::Usage(
                "vhrun mount needs --catalog KEY or -r robot.yaml".into(),
            ))
        }
    };
    let tree = Arc::new(Tree::load_indexed(
        &lib.catalog_path(&name),
        &loc.home.index(),
    )?);
    let stats = host::serve(HostMount {
        workset_path: WorkingSet::path_for(&loc.home, &tree),
        tree,
        blobs: BlobCache::at_home(lib, &loc.home),
        mountpoint: args.mountpoint.clone(),
        target_name: args.target_name.clone(),
        threads: args.threads as usize,
        passthrough: if args.no_passthrough {
            PassthroughMode::Off
        } else {
            PassthroughMode::Auto
        },
        prefetch: args.prefetch,
    })?;
    if args.stats {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).expect("stats serialise")
        );
    }
    Ok(0)
}
