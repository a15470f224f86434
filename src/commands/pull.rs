//! `vhrun pull (-r robot.yaml | --catalog KEY) [--origin URL] [--force]`,
//! as `rcc holotree pull`: the catalog name on stdout, a progress bar and
//! a summary on stderr. `--lazy`: the catalog alone, for lazy runs.

use crate::cli::PullArgs;
use crate::error::{Error, Result};
use crate::hololib::Locations;
use crate::remote::{self, Origin};
use crate::settings::NetworkSettings;

pub fn run(args: &PullArgs) -> Result<i32> {
    let locations = Locations::from_env();
    let catalog = match &args.catalog {
        Some(key) => remote::pull::catalog_key(key),
        None => {
            let robot = crate::paths::absolute(&args.robot);
            let conda = crate::builder::robot_conda_file(&robot)?;
            let blueprint = crate::builder::blueprint_of(&conda)?;
            remote::pull::catalog_key(&blueprint.hash)
        }
    };
    let url = args
        .origin
        .clone()
        .or_else(remote::origin::origin_from_env)
        .ok_or_else(|| {
            Error::Usage(format!(
                "no origin: pass --origin URL or set {}",
                remote::origin::ORIGIN_ENV
            ))
        })?;
    let settings = NetworkSettings::load(&locations.robocorp_home)?;
    let origin = Origin::new(&url, &settings)?;
    if args.lazy {
        let (path, stats) = remote::lazy::fetch_catalog(
            &locations.home,
            &locations.hololib,
            origin,
            &catalog,
            crate::resolve::startup_digests,
        )?;
        if !crate::logging::quiet() {
            eprintln!(
                "vhrun: fetched catalog {catalog} from {url} for lazy runs ({}): {} blobs, {} bytes",
                path.display(),
                stats.blobs,
                stats.bytes
            );
        }
        if args.json {
            println!("{}", serde_json::to_string(&stats).unwrap_or_default());
        } else {
            println!("{catalog}");
        }
        return Ok(0);
    }
    let bar = crate::logging::decorations() && !crate::logging::quiet();
    let stats = remote::pull(&locations, &origin, &catalog, args.force, bar)?;
    if !crate::logging::quiet() {
        eprintln!(
            "vhrun: pulled {catalog} from {}: {} parts, {} requested, {} new blobs, {} bytes",
            origin.url, stats.parts, stats.requested, stats.new_blobs, stats.bytes
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&stats).unwrap_or_default());
    } else {
        println!("{catalog}");
    }
    Ok(0)
}
