use crate::cli::CheckArgs;
use crate::error::{exit, Result};
use crate::hololib::check;
use crate::hololib::Locations;

/// Problems go to stdout (one line each, or the JSON report); exit 74 when
/// there is any.
pub fn run(args: &CheckArgs) -> Result<i32> {
    let locs = Locations::from_env();
    let report = check::check(&locs.hololibs());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        for p in &report.problems {
            if p.path.is_empty() {
                println!("{}: catalog {}: {}", p.catalog, p.blob.display(), p.problem);
            } else {
                println!(
                    "{}: {}: blob {}: {}",
                    p.catalog,
                    p.path,
                    p.blob.display(),
                    p.problem
                );
            }
        }
        eprintln!(
            "checked {} catalogs and {} blobs in {} hololibs: {}",
            report.catalogs,
            report.blobs,
            report.hololibs,
            match report.problems.len() {
                0 => "all good".to_string(),
                n => format!("{n} problems"),
            }
        );
    }
    Ok(if report.ok() { 0 } else { exit::IO })
}
