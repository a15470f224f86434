use crate::admin::doctor;
use crate::cli::DoctorArgs;
use crate::error::{exit, Result};
use crate::hololib::Locations;

pub fn run(args: &DoctorArgs) -> Result<i32> {
    let rcc = super::switches::Switches::from_env().build_rcc();
    let report = doctor::run_checks(&Locations::from_env(), rcc.as_deref());
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
