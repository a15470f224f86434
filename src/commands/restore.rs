use crate::cli::RestoreArgs;
use crate::error::Result;
use crate::hololib::lock::lock_file;
use crate::hololib::restore;
use crate::hololib::{Catalog, Locations};
use crate::paths::absolute;
use std::path::PathBuf;

pub fn run(args: &RestoreArgs) -> Result<i32> {
    let locs = Locations::from_env();
    let (lib, key) = locs.find_catalog(&args.catalog)?;
    let catalog = Catalog::load(&lib.catalog_path(&key))?;
    let target = absolute(&args.target);
    restore::target_name(&catalog, &target)?;
    // rcc holds `<space>.lck` while it restores a space and records it in
    // `<space>.meta`; both live next to the target.
    let _lock = if args.no_meta {
        None
    } else {
        let mut lck = target.clone().into_os_string();
        lck.push(".lck");
        Some(lock_file(&PathBuf::from(lck))?)
    };
    restore::restore(&lib, &catalog, &target)?;
    if !args.no_meta {
        restore::write_meta(&catalog, &target, "", "")?;
    }
    println!("{}", target.display());
    Ok(0)
}
