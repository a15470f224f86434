use crate::cli::ExportArgs;
use crate::error::Result;
use crate::hololib::zipio;
use crate::hololib::Locations;

/// Prints the zip's path.
pub fn run(args: &ExportArgs) -> Result<i32> {
    let locs = Locations::from_env();
    let (lib, key) = locs.find_catalog(&args.key)?;
    let stats = zipio::export_zip(&lib, &key, &args.output)?;
    tracing::info!(
        "exported {key}: {} blobs ({} bytes) to {}",
        stats.blobs,
        stats.bytes,
        args.output.display()
    );
    println!("{}", args.output.display());
    Ok(0)
}
