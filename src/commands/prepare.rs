//! `vhrun prepare`: everything a run needs, done ahead (a CI pipeline's
//! setup step): the environment built if its catalog is missing, and as
//! root the kernel image (`image.rs`), checked to mount on this kernel.

use crate::cli::PrepareArgs;
use crate::error::{Error, Result};
use crate::hololib::Locations;
use crate::lower::blobcache::BlobCache;
use crate::lower::image::{self, Image, Prepared};
use crate::paths::mkdir_all;
use crate::robot::Robot;
use crate::sandbox::Identity;

pub fn run(args: &PrepareArgs) -> Result<i32> {
    let locations = Locations::from_env();
    let (controller, space) = (&args.robot.controller, &args.robot.space);
    let resolved = match &args.catalog {
        Some(key) => {
            crate::run::resolve_catalog_or_pull(&locations, key, (controller, space), None)?
        }
        None => {
            let robot = Robot::load(&args.robot.robot)?;
            crate::run::resolve_or_build(&locations, &robot, &args.robot.options())?.ok_or_else(
                || {
                    Error::bad_input(
                        robot.file(),
                        "no condaConfigFile: a shell robot has no environment to prepare",
                    )
                },
            )?
        }
    };
    let tree = &resolved.tree.full()?;
    crate::lower::fuse::check_target_name(tree, &resolved.space_name)?;
    let say = |s: String| {
        if !crate::logging::quiet() {
            eprintln!("vhrun: {s}");
        }
    };
    let id = Identity::current();
    if id.rootless || !super::switches::Switches::from_env().lower().image {
        say(format!(
            "{} is ready; runs serve it with FUSE ({})",
            resolved.catalog_key,
            if id.rootless {
                "the kernel image needs root"
            } else {
                "VHRUN_IMAGE=off"
            }
        ));
        return Ok(0);
    }
    let home = &locations.home;
    let blobs = BlobCache::at_home(resolved.hololib.clone(), home);
    mkdir_all(blobs.root(), 0o750)?;
    let who = image::For {
        target_name: &resolved.space_name,
        uid: id.uid,
        gid: id.gid,
    };
    let img = match Image::prepare(home, tree, &blobs, who)? {
        Prepared::Ready(img) => img,
        Prepared::Unsupported(why) => {
            say(format!(
                "{} is ready; runs serve it with FUSE (no kernel image: {why})",
                resolved.catalog_key
            ));
            return Ok(0);
        }
    };
    let m = &img.meta;
    say(format!(
        "image ready: {} ({} files, {} MB, built in {} ms, {} blobs decoded)",
        img.dir.display(),
        m.files,
        m.bytes / 1_000_000,
        m.build_ms,
        m.decoded
    ));
    Ok(0)
}
