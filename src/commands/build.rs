use crate::builder::{self, BuildOptions, BuildOutcome, Progress};
use crate::cli::{BuildArgs, GlobalArgs};
use crate::error::Result;
use crate::hololib::Locations;

/// `vhrun build -r robot.yaml`: the catalog key on stdout (for CI caches),
/// progress and notes on stderr.
pub fn run(args: &BuildArgs, global: &GlobalArgs) -> Result<i32> {
    let locations = Locations::from_env();
    let robot = crate::paths::absolute(&args.robot);
    let conda = builder::robot_conda_file(&robot)?;
    let progress = Progress::new(global.quiet);
    let switches = super::switches::Switches::from_env();
    let rcc = switches.build_rcc();
    // vhrun's own builder (not rcc) stages in RAM, in a mount namespace of
    // this process's own; entered first, while the process is single-threaded.
    let own_builder = rcc.is_none() || args.python.is_some();
    let stage_in_memory = own_builder && builder::enter_build_namespace();
    let opts = BuildOptions {
        python: args.python.clone(),
        uv: switches.uv(),
        stage_in_memory,
        rcc,
        space: args.space.clone(),
        controller: args.controller.clone(),
    };
    let outcome = builder::ensure_environment(&locations, &robot, &conda, &opts, &progress)?;
    match &outcome {
        BuildOutcome::Existing { key } => progress.note(&format!("{key} is already built")),
        BuildOutcome::Pulled { key } => progress.note(&format!("{key} pulled, nothing built")),
        BuildOutcome::BuiltByRcc { key } => progress.note(&format!("rcc built {key}")),
        BuildOutcome::Built {
            key, interpreter, ..
        } => progress.note(&format!(
            "built {key} with CPython {} into {}",
            interpreter.version,
            locations.own_hololib().root.display()
        )),
    }
    println!("{}", outcome.key());
    Ok(0)
}
