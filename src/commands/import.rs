use crate::cli::ImportArgs;
use crate::error::Result;
use crate::hololib::lock::holotree_lock;
use crate::hololib::zipio;
use crate::hololib::Locations;

/// Prints each imported catalog's name.
pub fn run(args: &ImportArgs) -> Result<i32> {
    let locs = Locations::from_env();
    let _lock = holotree_lock(&locs.holotree)?;
    for zip in &args.zips {
        let stats = zipio::import_zip(&locs.hololib, zip)?;
        for c in stats.catalogs {
            println!("{c}");
        }
    }
    Ok(0)
}
