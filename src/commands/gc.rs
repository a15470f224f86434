use crate::admin::gc::{self, GcOptions};
use crate::cli::GcArgs;
use crate::error::Result;
use crate::hololib::Locations;

fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn run(args: &GcArgs) -> Result<i32> {
    let locations = Locations::from_env();
    let report = gc::collect(
        &locations,
        &GcOptions {
            days: args.days,
            dry_run: args.dry_run,
        },
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
        return Ok(0);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &report.removed {
        println!(
            "{verb} {} ({}, {})",
            r.path.display(),
            human(r.bytes),
            r.reason
        );
    }
    for n in &report.notes {
        eprintln!("vhrun: note: {n}");
    }
    println!(
        "{} {} entries, {} {}; {} live runs and {} warm servers left alone",
        verb,
        report.removed.len(),
        human(report.bytes),
        if args.dry_run { "to free" } else { "freed" },
        report.live_runs,
        report.live_servers
    );
    Ok(0)
}
