//! `vhrun hash FILE... [--devdeps] [--json]`: each file's blueprint hash,
//! as rcc computes it.

use crate::blueprint::blueprint_of_file;
use crate::cli::HashArgs;
use crate::error::Result;
use crate::hololib::Locations;

pub fn run(args: &HashArgs) -> Result<i32> {
    let locations = Locations::from_env();
    let mut results = Vec::with_capacity(args.files.len());
    for file in &args.files {
        let bp = blueprint_of_file(file, args.devdeps, &locations.robocorp_home)?;
        results.push((file, bp));
    }
    if args.json {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            file: String,
            hash: &'a str,
            blueprint: &'a str,
        }
        let entries: Vec<Entry> = results
            .iter()
            .map(|(file, bp)| Entry {
                file: file.display().to_string(),
                hash: &bp.hash,
                blueprint: &bp.text,
            })
            .collect();
        let json = crate::hololib::catalog::go_json(&entries);
        println!("{}", String::from_utf8_lossy(&json));
    } else {
        for (file, bp) in &results {
            println!("{}  {}", bp.hash, file.display());
        }
    }
    Ok(0)
}
