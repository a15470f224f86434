use crate::cli::LiftArgs;
use crate::error::Result;
use crate::hololib::lift::{self, LiftOptions};
use crate::hololib::lock::holotree_lock;
use crate::hololib::{Hololib, Locations};
use crate::paths::absolute;

pub fn run(args: &LiftArgs) -> Result<i32> {
    let locs = Locations::from_env();
    let lib = match &args.hololib {
        Some(dir) => Hololib::new(absolute(dir)),
        None => locs.hololib.clone(),
    };
    let bp = crate::blueprint::blueprint_of_file(&args.blueprint, false, &locs.robocorp_home)?;
    // rcc records environments under its holotree lock; so do we in its hololib.
    let _lock = if lib == locs.hololib {
        Some(holotree_lock(&locs.holotree)?)
    } else {
        None
    };
    let lifted = lift::lift(
        &lib,
        &args.dir,
        &LiftOptions {
            blueprint: bp.text,
            blueprint_hash: bp.hash,
            no_compress: args.no_compress,
            identity_yaml: !args.no_identity_yaml,
            progress: crate::logging::decorations() && !crate::logging::quiet(),
        },
    )?;
    println!("{}", lifted.key);
    Ok(0)
}
