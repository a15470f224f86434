use crate::cli::DoctorArgs;
use crate::doctor;
use crate::error::{exit, Result};
use crate::hololib::Locations;

pub fn run(args: &DoctorArgs) -> Result<i32> {
    let report = doctor::run_checks(&Locations::from_env());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print!("{}", doctor::render_text(&report));
    }
    Ok(if report.ok { 0 } else { exit::UNAVAILABLE })
}
