use crate::cli::ExecArgs;
use crate::error::{Error, Result};
use crate::hololib::layout::{absolute, Locations};
use crate::sandbox::{self, SandboxSpec};

pub fn run(args: &ExecArgs) -> Result<i32> {
    if let (Some(lower), Some(env_path)) = (&args.lower_dir, &args.env_path) {
        return exec_over_dir(args, &absolute(lower), &absolute(env_path));
    }
    Err(Error::Internal("vhrun exec: not implemented yet".into()))
}

/// `vhrun exec --lower-dir DIR --env-path PATH -- CMD`: the sandbox over a
/// plain directory, with vhrun's own environment (tests, debugging).
fn exec_over_dir(
    args: &ExecArgs,
    lower: &std::path::Path,
    env_path: &std::path::Path,
) -> Result<i32> {
    let locations = Locations::from_env();
    let mut commands: Vec<Vec<std::ffi::OsString>> = args
        .pre_sh
        .iter()
        .map(|script| vec!["sh".into(), "-c".into(), script.into()])
        .collect();
    commands.push(args.command.iter().map(Into::into).collect());
    let mut spec = SandboxSpec::new(
        locations.vhrun_home.clone(),
        env_path.to_path_buf(),
        commands,
    );
    spec.share_pids = args.sandbox.share_pids;
    spec.keep_overlay = args.sandbox.keep_overlay.as_deref().map(absolute);
    spec.readonly_paths = args.ro_paths.iter().map(|p| absolute(p)).collect();
    let outcome = sandbox::run_sandboxed(&spec, sandbox::lower_dir(lower.to_path_buf()))?;
    Ok(outcome.code())
}
