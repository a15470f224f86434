//! A run: robot.yaml -> task -> catalog -> sandbox over the lower tree.
//!
//! Everything that can fail on bad input (robot.yaml, env.json, a missing
//! or broken catalog) is decided in [`plan`], before any namespace
//! exists, so errors are plain one-liners and nothing needs undoing. Only
//! then [`execute`] chooses how the tree is provided (`crate::lower`),
//! enters the sandbox over it, runs the commands and tears everything
//! down.

use crate::environ::{self, EnvList};
use crate::error::{Error, Result};
use crate::hololib::catalog::{catalog_name, host_platform};
use crate::hololib::Locations;
use crate::lower::blobcache::BlobCache;
use crate::lower::fuse::{self, WorkingSet};
use crate::lower::{self, Lower};
use crate::paths::{absolute, mkdir_all};
use crate::remote::lazy::Lazy;
use crate::resolve::{self, EnvOptions, Resolved};
use crate::robot::Robot;
use crate::runstats::{self, RunStats};
use crate::sandbox::rundir::{clear_temp, open_temp, Slot};
use crate::sandbox::{self, Identity, SandboxSpec};
use crate::tree::summary::Facts;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// rcc's exit code for any failed task (`--rcc-exit-codes`).
pub const RCC_TASK_FAILED: i32 = 10;
/// rcc's exit code when a preRunScript cannot be split into words.
pub const RCC_PRE_RUN_UNPARSABLE: i32 = 11;
/// rcc's exit code when a preRunScript fails.
pub const RCC_PRE_RUN_FAILED: i32 = 12;

/// How a run ended: the exit code (128+N for signal N) and the index in
/// `Plan::commands` of the command that ended it (the first that failed,
/// else the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    pub code: i32,
    pub command: usize,
}

impl RunEnd {
    /// rcc's exit code for this end when the first `pre_run` commands were
    /// preRunScripts: 0, 12 for a failed script, 10 for a failed task.
    pub fn rcc_code(self, pre_run: usize) -> i32 {
        match self.code {
            0 => 0,
            _ if self.command < pre_run => RCC_PRE_RUN_FAILED,
            _ => RCC_TASK_FAILED,
        }
    }
}

/// Which robot, and the rcc flags that place its environment.
#[derive(Debug, Clone)]
pub struct RobotOptions {
    pub robot: PathBuf,
    /// rcc's `--space` and `--controller`.
    pub space: String,
    pub controller: String,
    /// env.json whose variables are added to the task's environment.
    pub environment: Option<PathBuf>,
    /// Control Room workspace id: `RC_WORKSPACE_ID`.
    pub workspace: Option<String>,
    /// Serve a catalog missing here lazily from `RCC_REMOTE_ORIGIN`
    /// (`--lazy`, `VHRUN_REMOTE=lazy`), batching misses so; `None`: pull
    /// it whole first, as rcc does.
    pub lazy: Option<crate::remote::lazy::Batching>,
}

/// How the sandbox runs the commands, and what it reports.
#[derive(Debug, Clone, Default)]
pub struct SandboxOptions {
    /// No PID namespace (a subreaper instead).
    pub share_pids: bool,
    /// Keep the run's writes here.
    pub keep_overlay: Option<PathBuf>,
    /// Bound the in-memory write layer (`VHRUN_OVERLAY_SIZE`).
    pub overlay_size: Option<crate::sandbox::OverlaySize>,
    /// rcc's variables exactly (no persistent bytecode cache).
    pub rcc_env: bool,
    /// `--stats`: a summary on stderr.
    pub stats: bool,
    /// `--stats-json FILE`.
    pub stats_json: Option<PathBuf>,
}

impl SandboxOptions {
    pub fn wants_stats(&self) -> bool {
        self.stats || self.stats_json.is_some()
    }
}

/// `vhrun run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub robot: RobotOptions,
    pub task: Option<String>,
    /// robot.yaml's devTasks (no preRunScripts).
    pub dev: bool,
    /// Arguments appended to the task's command.
    pub args: Vec<String>,
    /// rcc's exit codes (10, 11, 12) instead of the task's.
    pub rcc_exit_codes: bool,
    pub sandbox: SandboxOptions,
    pub lower: lower::Options,
}

/// `vhrun exec`.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    pub robot: RobotOptions,
    /// This catalog instead of robot.yaml's environment.
    pub catalog: Option<String>,
    pub command: Vec<String>,
    pub sandbox: SandboxOptions,
    pub lower: lower::Options,
}

/// What a run needs once the robot and its environment are resolved.
pub struct Plan {
    pub locations: Locations,
    pub resolved: Resolved,
    /// preRunScripts then the task (or the `exec` command).
    pub commands: Vec<Vec<OsString>>,
    pub env: EnvList,
    pub cwd: PathBuf,
    /// rcc's per-run TEMP/TMP directory, emptied after the run (it is
    /// the slot's).
    pub temp_dir: PathBuf,
    /// The run's slot (its lock, its TEMP).
    pub slot: Arc<Slot>,
    pub sandbox: SandboxOptions,
    pub lower: lower::Options,
    /// rcc's `--controller` and `--space`, recorded in a copy's `.meta`.
    pub controller: String,
    pub space: String,
    /// How a lazily served tree batches its fetches.
    pub lazy_batch: crate::remote::lazy::Batching,
}

/// `vhrun run` / `vhrun -r robot.yaml -t task`.
pub fn run(locations: Locations, opts: &RunOptions) -> Result<i32> {
    let robot = Robot::load(&opts.robot.robot)?;
    let task = robot.task(opts.task.as_deref(), opts.dev)?;
    let mut argv = task.argv()?;
    argv.extend(opts.args.iter().cloned());
    let mut commands = if opts.dev {
        Vec::new()
    } else {
        match robot.pre_run_scripts() {
            Ok(scripts) => scripts,
            Err(e) if opts.rcc_exit_codes => {
                eprintln!("vhrun: {e}");
                return Ok(RCC_PRE_RUN_UNPARSABLE);
            }
            Err(e) => return Err(e),
        }
    };
    let pre_run = commands.len();
    commands.push(argv);
    mkdir_all(&robot.artifacts_dir(), 0o750)?;

    let end = match resolve_or_build(&locations, &robot, &opts.robot)? {
        None => run_shell_robot(&locations, &robot, commands)?,
        Some(resolved) => {
            let plan = plan(
                locations,
                resolved,
                Some(&robot),
                &opts.robot,
                (&opts.sandbox, &opts.lower),
                commands,
            )?;
            execute_to_end(plan)?
        }
    };
    Ok(if opts.rcc_exit_codes {
        end.rcc_code(pre_run)
    } else {
        end.code
    })
}

/// `vhrun exec (-r robot.yaml | --catalog KEY) -- CMD ARGS...`.
pub fn exec(locations: Locations, opts: &ExecOptions) -> Result<i32> {
    let commands = vec![opts.command.clone()];
    let r = &opts.robot;
    let (resolved, robot) = match &opts.catalog {
        Some(key) => (
            resolve_catalog_or_pull(&locations, key, (&r.controller, &r.space), r.lazy)?,
            None,
        ),
        None => {
            let robot = Robot::load(&r.robot)?;
            mkdir_all(&robot.artifacts_dir(), 0o750)?;
            match resolve_or_build(&locations, &robot, r)? {
                Some(resolved) => (resolved, Some(robot)),
                None => return run_shell_robot(&locations, &robot, commands).map(|end| end.code),
            }
        }
    };
    let plan = plan(
        locations,
        resolved,
        robot.as_ref(),
        r,
        (&opts.sandbox, &opts.lower),
        commands,
    )?;
    execute(plan)
}

/// [`resolve::resolve_catalog`]; a catalog that is in no hololib is first
/// pulled from `RCC_REMOTE_ORIGIN` when that is set (as a child
/// `vhrun pull`, for the same reason as the build below; its failure is its
/// one line on stderr, and the missing catalog the error).
pub fn resolve_catalog_or_pull(
    locations: &Locations,
    key: &str,
    (controller, space): (&str, &str),
    lazy: Option<crate::remote::lazy::Batching>,
) -> Result<Resolved> {
    match resolve::resolve_catalog(locations, key, controller, space) {
        Err(e @ Error::NoSuchCatalog { .. }) => {
            if crate::remote::origin::origin_from_env().is_none() {
                return Err(e);
            }
            if lazy.is_some() {
                let name = crate::remote::pull::catalog_key(key);
                let source = Path::new(key);
                if let Some(r) = resolve_lazily(locations, &name, source, (controller, space))? {
                    return Ok(r);
                }
            }
            if !vhrun_child("pull", &["--catalog".as_ref(), key.as_ref()], false)?
                .status
                .success()
            {
                return Err(e);
            }
            resolve::resolve_catalog(locations, key, controller, space)
        }
        other => other,
    }
}

/// Catalog `key` served lazily from `RCC_REMOTE_ORIGIN`: fetched first
/// when it is not here yet, by a child `vhrun pull --lazy` (HTTP may start
/// a resolver thread, which would forbid this process its user
/// namespace). `None` when no origin is set or that fetch failed (it said
/// why on stderr).
fn resolve_lazily(
    locations: &Locations,
    key: &str,
    source: &Path,
    (controller, space): (&str, &str),
) -> Result<Option<Resolved>> {
    let Some(url) = crate::remote::origin::origin_from_env() else {
        return Ok(None);
    };
    let here = || resolve::resolve_lazy(locations, key, source, (controller, space), &url);
    if let Some(r) = here()? {
        return Ok(Some(r));
    }
    let args = [
        "--lazy".as_ref(),
        "--json".as_ref(),
        "--catalog".as_ref(),
        key.as_ref(),
    ];
    let out = vhrun_child("pull", &args, false)?;
    interrupted(&out.status, "the lazy fetch (vhrun pull --lazy)")?;
    if !out.status.success() {
        // the child printed why
        eprintln!("vhrun: warning: cannot serve {key} lazily from {url}: building it instead");
        return Ok(None);
    }
    let fetched = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        tracing::debug!("vhrun pull --lazy --json: {e}");
        Default::default()
    });
    Ok(here()?.map(|r| Resolved { fetched, ..r }))
}

/// `Err` when a child step was ended by a signal (Ctrl-C reaches the
/// whole process group): nothing is tried in its place.
fn interrupted(status: &std::process::ExitStatus, what: &str) -> Result<()> {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(signal) => Err(Error::Interrupted {
            what: what.to_string(),
            signal,
        }),
        None => Ok(()),
    }
}

/// Run `vhrun COMMAND ARGS` (with this process's verbosity) to its end,
/// its stdout captured, its stderr ours; `no_origin`: without
/// `RCC_REMOTE_ORIGIN` (the origin already failed this run).
fn vhrun_child(
    command: &str,
    args: &[&std::ffi::OsStr],
    no_origin: bool,
) -> Result<std::process::Output> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(command)
        .args(crate::logging::verbosity_args())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    if no_origin {
        cmd.env_remove(crate::remote::origin::ORIGIN_ENV);
    }
    cmd.output()
        .map_err(|e| Error::spawn(format!("vhrun {command}"), e))
}

/// The robot's environment, built first when its catalog is missing.
///
/// The build runs as a child `vhrun build`: it starts threads (rayon, pip
/// readers) that would forbid the user namespace this process still needs.
pub fn resolve_or_build(
    locations: &Locations,
    robot: &Robot,
    opts: &RobotOptions,
) -> Result<Option<Resolved>> {
    // A hololib.zip beside robot.yaml is imported before anything is built.
    match crate::holozip::resolve_environment(locations, robot, &opts.controller, &opts.space) {
        Err(Error::CatalogMissing {
            blueprint, file, ..
        }) => {
            let place = (opts.controller.as_str(), opts.space.as_str());
            let mut lazy_failed = false;
            if opts.lazy.is_some() {
                let key = catalog_name(&blueprint, host_platform());
                if let Some(r) = resolve_lazily(locations, &key, &file, place)? {
                    return Ok(Some(r));
                }
                lazy_failed = crate::remote::origin::origin_from_env().is_some();
            }
            tracing::info!(
                "no catalog for blueprint {blueprint} ({}): building it",
                file.display()
            );
            let status = vhrun_child(
                "build",
                &[
                    "-r".as_ref(),
                    robot.file().as_os_str(),
                    "--space".as_ref(),
                    opts.space.as_ref(),
                    "--controller".as_ref(),
                    opts.controller.as_ref(),
                ],
                lazy_failed,
            )?
            .status;
            interrupted(&status, "the build (vhrun build)")?;
            if !status.success() {
                // The build printed its own one-line error.
                return Err(Error::EnvBuildFailed {
                    blueprint,
                    code: status.code().unwrap_or(crate::error::exit::INTERNAL),
                });
            }
            resolve::resolve_environment(locations, robot, &opts.controller, &opts.space)
        }
        other => other,
    }
}

/// Decide everything the sandbox needs: environment variables, directories.
fn plan(
    locations: Locations,
    resolved: Resolved,
    robot: Option<&Robot>,
    opts: &RobotOptions,
    (sandbox, lower): (&SandboxOptions, &lower::Options),
    commands: Vec<Vec<String>>,
) -> Result<Plan> {
    // A broken catalog or a target name that cannot be written is a plain
    // error here, before any namespace exists.
    fuse::check_target_name(&resolved.tree, &resolved.space_name)?;
    let extra = match &opts.environment {
        Some(file) => environ::load_env_json(file)?,
        None => Vec::new(),
    };
    // The run's slot, taken now: it names the TEMP the variables give.
    let slot = Arc::new(Slot::take(
        &locations.home.runs(),
        &resolved.catalog_path.to_string_lossy(),
    )?);
    let temp_dir = slot.temp_dir(&locations.robocorp_home);
    let inputs = resolved.env_inputs(
        &locations,
        robot,
        EnvOptions {
            full: true,
            rcc_env: sandbox.rcc_env,
            extra,
            temp_dir: temp_dir.clone(),
            workspace: opts.workspace.clone(),
        },
    )?;
    let env = environ::dedup_for_exec(&environ::build(&inputs));
    let cwd = match robot {
        Some(r) => r.root().to_path_buf(),
        None => std::env::current_dir().map_err(|e| Error::io(".", e))?,
    };
    Ok(Plan {
        locations,
        resolved,
        commands: commands
            .into_iter()
            .map(|c| c.into_iter().map(OsString::from).collect())
            .collect(),
        env,
        cwd,
        temp_dir,
        slot,
        sandbox: sandbox.clone(),
        lower: lower.clone(),
        controller: opts.controller.clone(),
        space: opts.space.clone(),
        lazy_batch: opts.lazy.unwrap_or_default(),
    })
}

/// Enter the sandbox, serve the catalog, run the commands, tear down.
pub fn execute(plan: Plan) -> Result<i32> {
    execute_to_end(plan).map(|end| end.code)
}

/// [`execute`], saying which command ended the run.
pub fn execute_to_end(plan: Plan) -> Result<RunEnd> {
    let started = runstats::started();
    let home = &plan.locations.home;
    let resolved = &plan.resolved;
    let remote = match &resolved.origin {
        Some(url) => Some(Lazy::connect(
            url,
            plan.lazy_batch,
            resolved.hololib.clone(),
            resolved.tree.full()?,
            home,
            &plan.locations.robocorp_home,
        )?),
        None => None,
    };
    let blobs = BlobCache::at_home(resolved.hololib.clone(), home).with_remote(remote);
    open_temp(&plan.temp_dir)?;
    mkdir_all(blobs.root(), 0o750)?;
    if !plan.sandbox.rcc_env {
        mkdir_all(&resolved.pycache_dir, 0o750)?;
    }
    let spec = sandbox_spec(&plan);
    let source = lower::Source {
        home: home.clone(),
        tree: resolved.tree.clone(),
        blobs,
        target_name: resolved.space_name.clone(),
        shown_as: resolved.space_path.clone(),
        workset_path: WorkingSet::path_for_commands(home, &resolved.tree, &plan.commands),
    };
    let mut lower = Lower::choose(source, &plan.lower, &Identity::current())?;
    if let Some(because) = lower.copy() {
        if let Some(e) = because {
            tracing::warn!("{}", lower::probe::fallback_warning(e));
        }
        let refusal = because.and_then(Error::refusal);
        return execute_copy(&plan, started, refusal);
    }
    if resolved.origin.is_some() {
        let found = plan
            .commands
            .iter()
            .flat_map(|argv| crate::remote::imports::entry_imports(argv, &plan.cwd))
            .collect();
        lower.entry_imports(found);
    }
    let spec = SandboxSpec {
        join: lower.namespaces(),
        companion: compile_ahead(&plan, &mut lower),
        ..spec
    };
    let ended = sandbox::run_sandboxed(&spec, move |target| lower.mount(target));
    let report = ended.lower.and_then(lower::Served::finish);
    let outcome = match ended.outcome {
        // Refused before the task started: nothing ran, and the sandbox
        // unmounted what it had made.
        Err(e) if plan.lower.mode == lower::Mode::Auto && e.refusal().is_some() => {
            tracing::warn!("{}", lower::probe::fallback_warning(&e));
            return execute_copy(&plan, started, e.refusal());
        }
        other => other,
    };
    remove_temp(&plan.temp_dir);
    let outcome = outcome?;
    if let Some(report) = report.filter(|_| plan.sandbox.wants_stats()) {
        report_stats(
            &plan,
            &report,
            &outcome,
            started,
            spec.keep_overlay.as_deref(),
        );
    }
    Ok(RunEnd {
        code: outcome.code(),
        command: outcome.command,
    })
}

/// The helper that compiles a lazily served tree's predicted modules into
/// the run's bytecode cache (`remote::compile`), when there is a cache
/// (not with rcc's variables), an interpreter, and a feed.
fn compile_ahead(plan: &Plan, lower: &mut Lower) -> Option<sandbox::Companion> {
    let resolved = &plan.resolved;
    if !plan.lower.compile_ahead || plan.sandbox.rcc_env || resolved.origin.is_none() {
        return None;
    }
    let python = resolved
        .space_path
        .join("bin")
        .join(resolved.facts.python.as_ref()?);
    let input = lower.compile_feed()?;
    tracing::debug!("compiling ahead with {}", python.display());
    Some(sandbox::Companion {
        argv: crate::remote::compile::helper_argv(
            &python,
            &resolved.space_path,
            &resolved.pycache_dir,
        ),
        input,
    })
}

/// Run the commands in a restored copy of the environment (copy mode),
/// `because` of a refusal of the machine (`None`: asked for).
fn execute_copy(
    plan: &Plan,
    started: std::time::Instant,
    because: Option<crate::error::Refusal>,
) -> Result<RunEnd> {
    let resolved = &plan.resolved;
    // A copy is restored whole: a lazily served catalog is pulled first
    // (the blobs fetched so far are not asked for again).
    if resolved.origin.is_some() {
        let key: &std::ffi::OsStr = resolved.catalog_key.as_ref();
        if !vhrun_child("pull", &["--catalog".as_ref(), key], false)?
            .status
            .success()
        {
            return Err(Error::Remote {
                origin: resolved.origin.clone().unwrap_or_default(),
                msg: format!(
                    "a run from a copy needs all of {}, and pulling it failed",
                    resolved.catalog_key
                ),
            });
        }
    }
    let tree = resolved.tree.full()?;
    let source = lower::copy::CopySource {
        hololib: &resolved.hololib,
        tree: &tree,
        space: &resolved.space_path,
        target_name: &resolved.space_name,
        controller: &plan.controller,
        space_label: &plan.space,
    };
    // The space's lock is held until the task has ended.
    let ran = sandbox::run_in_place(&sandbox_spec(plan), || lower::copy::prepare(&source));
    remove_temp(&plan.temp_dir);
    let (outcome, space) = ran?;
    let copied = space.report.clone();
    drop(space);
    if plan.sandbox.wants_stats() {
        let report = lower::Report {
            totals: resolved.tree.totals(),
            copy: Some(copied),
            refused: because,
            ..lower::Report::default()
        };
        report_stats(plan, &report, &outcome, started, None);
    }
    Ok(RunEnd {
        code: outcome.code(),
        command: outcome.command,
    })
}

fn report_stats(
    plan: &Plan,
    report: &lower::Report,
    outcome: &sandbox::RunOutcome,
    started: std::time::Instant,
    kept: Option<&Path>,
) {
    let resolved = &plan.resolved;
    let stats = RunStats::collect(&runstats::Inputs {
        started,
        catalog_path: &resolved.catalog_path,
        environment: &resolved.space_path,
        lower: report,
        outcome,
        exit_code: outcome.code(),
        kept,
        remote: resolved
            .origin
            .as_deref()
            .map(|url| (url, resolved.fetched)),
    });
    let json = plan.sandbox.stats_json.as_deref();
    if let Err(e) = runstats::report(&stats, plan.sandbox.stats, json) {
        tracing::error!("--stats-json: {e}");
    }
}

/// The sandbox of a planned run: its commands, environment, and the
/// paths the task may not write.
fn sandbox_spec(plan: &Plan) -> SandboxSpec {
    let home = &plan.locations.home;
    let resolved = &plan.resolved;
    let mut spec = SandboxSpec::new(
        home.runs(),
        resolved.space_path.clone(),
        plan.commands.clone(),
    );
    spec.env = plan.env.clone();
    spec.cwd = plan.cwd.clone();
    spec.share_pids = plan.sandbox.share_pids;
    spec.keep_overlay = plan.sandbox.keep_overlay.as_deref().map(absolute);
    spec.overlay_size = plan.sandbox.overlay_size.clone();
    spec.measure_upper = plan.sandbox.wants_stats();
    // `vhrun gc` spares the blobs of the catalog a live run names; without
    // the note it leaves the whole blob cache alone while any run lives.
    spec.note = resolved.catalog_path.to_string_lossy().into_owned();
    spec.slot = Some(plan.slot.clone());
    // The task reads the store only through the tree: it may not write the
    // hololibs, the blob cache, the index or the images (whose data/ links
    // are blob cache files), whoever owns them.
    spec.readonly_paths = plan
        .locations
        .hololibs()
        .into_iter()
        .map(|h| h.root)
        .chain([home.blobs(), home.index(), home.images()])
        .filter(|p| p.exists())
        .collect();
    spec.writable_paths = vec![plan.temp_dir.clone()];
    if !plan.sandbox.rcc_env {
        spec.writable_paths.push(resolved.pycache_dir.clone());
    }
    spec
}

/// What the task left in TEMP goes; the directory stays for the slot's
/// next run.
fn remove_temp(dir: &Path) {
    if let Err(e) = clear_temp(dir) {
        tracing::warn!("{e}");
    }
}

/// A robot without a conda config: rcc runs it directly with the robot's
/// PATH in front (`ExecuteSimpleTask`); so does vhrun, without a sandbox.
fn run_shell_robot(
    locations: &Locations,
    robot: &Robot,
    commands: Vec<Vec<String>>,
) -> Result<RunEnd> {
    let inherited: EnvList = std::env::vars_os().collect();
    let cwd = robot.root().to_path_buf();
    let uhi = crate::hololib::layout::user_home_identity(locations.user_home.as_deref());
    // As rcc: no env.json, PYTHONPATH or ROBOT_* for shell robots.
    let env = environ::build_shell(&inherited, true, &cwd, &uhi, &robot.path_entries());
    let env = environ::dedup_for_exec(&env);
    let last = commands.len().saturating_sub(1);
    for (index, argv) in commands.into_iter().enumerate() {
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&cwd)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        let status = cmd
            .status()
            .map_err(|e| Error::user_path(PathBuf::from(&argv[0]), e))?;
        let code = match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(c), _) => c,
            (None, Some(sig)) => 128 + sig,
            (None, None) => crate::error::exit::INTERNAL,
        };
        if code != 0 {
            return Ok(RunEnd {
                code,
                command: index,
            });
        }
    }
    Ok(RunEnd {
        code: 0,
        command: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcc_codes_say_which_command_failed() {
        let end = |code, command| RunEnd { code, command };
        // two preRunScripts (0, 1), then the task (2)
        assert_eq!(end(0, 2).rcc_code(2), 0);
        assert_eq!(end(3, 0).rcc_code(2), RCC_PRE_RUN_FAILED);
        assert_eq!(end(137, 1).rcc_code(2), RCC_PRE_RUN_FAILED);
        assert_eq!(end(1, 2).rcc_code(2), RCC_TASK_FAILED);
        assert_eq!(end(1, 0).rcc_code(0), RCC_TASK_FAILED);
    }
}
