use super::switches::Switches;
use crate::cli::RunArgs;
use crate::error::Result;
use crate::hololib::Locations;
use crate::run::RunOptions;

pub fn run(args: &RunArgs) -> Result<i32> {
    let switches = Switches::from_env();
    let robot = crate::run::RobotOptions {
        lazy: switches.lazy(args.sandbox.lazy)?,
        ..args.robot.options()
    };
    let opts = RunOptions {
        robot,
        task: args.task.clone(),
        dev: args.dev,
        args: args.args.clone(),
        rcc_exit_codes: args.rcc_exit_codes,
        sandbox: crate::run::SandboxOptions {
            overlay_size: switches.overlay_size()?,
            ..args.sandbox.options()
        },
        lower: switches.lower_for_run(args.sandbox.mode)?,
    };
    crate::run::run(Locations::from_env(), &opts)
}
