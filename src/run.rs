//! A run: robot.yaml -> task -> catalog -> sandbox over the FUSE tree.
//!
//! Everything that can fail on bad input (robot.yaml, env.json, a missing
//! or broken catalog) is decided in [`plan`], before any namespace
//! exists, so errors are plain one-liners and nothing needs undoing. Only
//! then [`execute`] finds the catalog's warm server (`crate::lower::server`; or
//! mounts the tree itself inside the sandbox when there is none), enters
//! the sandbox, runs the commands and tears everything down.

use crate::cli::{ExecArgs, RobotArgs, RunArgs, SandboxArgs};
use crate::environ::{self, EnvList};
use crate::error::{Error, Result};
use crate::hololib::Locations;
use crate::lower::fuse::{self, MountOptions, MountedTree, PassthroughMode, WorkingSet};
use crate::paths::{absolute, mkdir_all};
use crate::resolve::{self, EnvOptions, Resolved};
use crate::robot::Robot;
use crate::sandbox::{self, SandboxSpec};
use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::rc::Rc;

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

/// What a run needs once the robot and its environment are resolved.
pub struct Plan {
    pub locations: Locations,
    pub resolved: Resolved,
    /// preRunScripts then the task (or the `exec` command).
    pub commands: Vec<Vec<OsString>>,
    pub env: EnvList,
    pub cwd: PathBuf,
    /// rcc's per-run TEMP/TMP directory, removed after the run.
    pub temp_dir: PathBuf,
    pub sandbox: SandboxArgs,
}

/// `vhrun run` / `vhrun -r robot.yaml -t task`.
pub fn run(args: &RunArgs) -> Result<i32> {
    let robot = Robot::load(&args.robot.robot)?;
    let task = robot.task(args.task.as_deref(), args.dev)?;
    let mut argv = task.argv()?;
    argv.extend(args.args.iter().cloned());
    let mut commands = if args.dev {
        Vec::new()
    } else {
        match robot.pre_run_scripts() {
            Ok(scripts) => scripts,
            Err(e) if args.rcc_exit_codes => {
                eprintln!("vhrun: {e}");
                return Ok(RCC_PRE_RUN_UNPARSABLE);
            }
            Err(e) => return Err(e),
        }
    };
    let pre_run = commands.len();
    commands.push(argv);
    mkdir_all(&robot.artifacts_dir(), 0o750)?;

    let locations = Locations::from_env();
    let end = match resolve_or_build(&locations, &robot, &args.robot)? {
        None => run_shell_robot(&robot, commands)?,
        Some(resolved) => {
            let plan = plan(
                locations,
                resolved,
                Some(&robot),
                &args.robot,
                &args.sandbox,
                commands,
            )?;
            execute_to_end(plan)?
        }
    };
    Ok(if args.rcc_exit_codes {
        end.rcc_code(pre_run)
    } else {
        end.code
    })
}

/// `vhrun exec (-r robot.yaml | --catalog KEY) -- CMD ARGS...`.
pub fn exec(args: &ExecArgs) -> Result<i32> {
    let locations = Locations::from_env();
    let commands = vec![args.command.clone()];
    let (resolved, robot) = match &args.catalog {
        Some(key) => (
            resolve::resolve_catalog(&locations, key, &args.robot.controller, &args.robot.space)?,
            None,
        ),
        None => {
            let robot = Robot::load(&args.robot.robot)?;
            mkdir_all(&robot.artifacts_dir(), 0o750)?;
            match resolve_or_build(&locations, &robot, &args.robot)? {
                Some(resolved) => (resolved, Some(robot)),
                None => return run_shell_robot(&robot, commands).map(|end| end.code),
            }
        }
    };
    let plan = plan(
        locations,
        resolved,
        robot.as_ref(),
        &args.robot,
        &args.sandbox,
        commands,
    )?;
    execute(plan)
}

/// The robot's environment, built first when its catalog is missing.
///
/// The build runs as a child `vhrun build`: it starts threads (rayon, pip
/// readers) that would forbid the user namespace this process still needs.
pub(crate) fn resolve_or_build(
    locations: &Locations,
    robot: &Robot,
    args: &RobotArgs,
) -> Result<Option<Resolved>> {
    // A hololib.zip beside robot.yaml is imported before anything is built.
    match crate::holozip::resolve_environment(locations, robot, &args.controller, &args.space) {
        Err(Error::CatalogMissing {
            blueprint, file, ..
        }) => {
            tracing::info!(
                "no catalog for blueprint {blueprint} ({}): building it",
                file.display()
            );
            let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
            let status = std::process::Command::new(exe)
                .arg("build")
                .args(crate::logging::verbosity_args())
                .arg("-r")
                .arg(robot.file())
                .args(["--space", &args.space, "--controller", &args.controller])
                .stdout(std::process::Stdio::null())
                .status()
                .map_err(|e| Error::spawn("vhrun build", e))?;
            if !status.success() {
                // The build printed its own one-line error.
                return Err(Error::EnvBuildFailed {
                    blueprint,
                    code: status.code().unwrap_or(crate::error::exit::INTERNAL),
                });
            }
            resolve::resolve_environment(locations, robot, &args.controller, &args.space)
        }
        other => other,
    }
}

/// Decide everything the sandbox needs: environment variables, directories.
fn plan(
    locations: Locations,
    resolved: Resolved,
    robot: Option<&Robot>,
    args: &RobotArgs,
    sandbox: &SandboxArgs,
    commands: Vec<Vec<String>>,
) -> Result<Plan> {
    let extra = match &args.environment {
        Some(file) => environ::load_env_json(file)?,
        None => Vec::new(),
    };
    let temp_dir = environ::rcc_temp_dir(&locations.robocorp_home);
    let inputs = resolved.env_inputs(
        &locations,
        robot,
        EnvOptions {
            full: true,
            rcc_env: sandbox.rcc_env,
            extra,
            temp_dir: temp_dir.clone(),
            workspace: args.workspace.clone(),
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
        sandbox: sandbox.clone(),
    })
}

/// Enter the sandbox, serve the catalog, run the commands, tear down.
pub fn execute(plan: Plan) -> Result<i32> {
    execute_to_end(plan).map(|end| end.code)
}

/// [`execute`], saying which command ended the run.
pub fn execute_to_end(plan: Plan) -> Result<RunEnd> {
    let vhrun_home = plan.locations.vhrun_home.clone();
    let resolved = &plan.resolved;
    // Loaded by resolve, before the namespaces exist: a broken catalog is
    // a plain error.
    let tree = resolved.tree.clone();
    fuse::check_target_name(&tree, &resolved.space_name)?;
    let workset_path = WorkingSet::path_for_commands(&vhrun_home, &tree, &plan.commands);
    let previous = WorkingSet::load(&workset_path);

    mkdir_all(&plan.temp_dir, 0o700)?;
    if !plan.sandbox.rcc_env {
        mkdir_all(&resolved.pycache_dir, 0o750)?;
    }
    let blobs = crate::lower::blobcache::BlobCache::at_home(resolved.hololib.clone(), &vhrun_home);
    mkdir_all(blobs.root(), 0o750)?;

    let started = crate::runstats::started();
    let mut spec = SandboxSpec::new(
        vhrun_home.clone(),
        resolved.space_path.clone(),
        plan.commands,
    );
    spec.env = plan.env;
    spec.cwd = plan.cwd;
    spec.share_pids = plan.sandbox.share_pids;
    spec.keep_overlay = plan.sandbox.keep_overlay.as_deref().map(absolute);
    spec.measure_upper = plan.sandbox.wants_stats();
    // The task reads the store only through the tree: it may not write the
    // hololibs, the blob cache, the index or the images (whose data/ links
    // are blob cache files), whoever owns them.
    spec.readonly_paths = plan
        .locations
        .hololibs()
        .into_iter()
        .map(|h| h.root)
        .chain([
            blobs.root().to_path_buf(),
            vhrun_home.join("index"),
            crate::lower::image::images_dir(&vhrun_home),
        ])
        .filter(|p| p.exists())
        .collect();
    spec.writable_paths = vec![plan.temp_dir.clone()];
    if !plan.sandbox.rcc_env {
        spec.writable_paths.push(resolved.pycache_dir.clone());
    }

    let passthrough = if switched_off("VHRUN_PASSTHROUGH") {
        PassthroughMode::Off
    } else {
        PassthroughMode::Auto
    };
    // A built EROFS image (root only) leaves the kernel alone in the data
    // path: no server, no FUSE mount.
    let identity = sandbox::Identity::current();
    let image = (!identity.rootless && crate::lower::image::enabled())
        .then(|| {
            let who = crate::lower::image::For {
                target_name: &resolved.space_name,
                uid: identity.uid,
                gid: identity.gid,
            };
            crate::lower::image::Image::find(&vhrun_home, &tree, who)
        })
        .flatten()
        .inspect(|image| image.touch());
    let mut server = if image.is_none() && crate::lower::server::enabled() {
        let req = crate::lower::server::Request {
            vhrun_home: &vhrun_home,
            tree: &tree,
            hololib: &resolved.hololib,
            blobs: &blobs,
            target_name: &resolved.space_name,
            shown_as: &resolved.space_path,
            passthrough,
            identity,
        };
        match crate::lower::server::connect_or_spawn(&req) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("no warm server ({e}); mounting the tree for this run only");
                None
            }
        }
    } else {
        None
    };
    spec.join = server.as_mut().and_then(|c| c.take_namespaces());
    // A warm server's kernel caches already hold what earlier runs
    // touched: replaying is for a tree nobody has read yet.
    let replay = previous
        .clone()
        .filter(|_| !switched_off("VHRUN_PREFETCH"))
        .filter(|_| server.as_ref().is_none_or(|c| c.fresh()));

    let mounted: Rc<RefCell<Option<MountedTree>>> = Rc::default();
    let slot = mounted.clone();
    let target_name = resolved.space_name.clone();
    let shown_as = resolved.space_path.clone();
    let catalog_path = resolved.catalog_path.clone();
    let per_run = spec.join.is_none();
    let used_image: Rc<RefCell<Option<PathBuf>>> = Rc::default();
    let image_slot = used_image.clone();
    let outcome = sandbox::run_sandboxed(&spec, move |target| {
        // `vhrun gc` spares the blobs of the catalog a live run names in
        // `runs/<id>/catalog`; without it, gc leaves the whole blob cache
        // alone while any run lives.
        let note = target.run_dir.join("catalog");
        if let Err(e) = std::fs::write(&note, catalog_path.as_os_str().as_encoded_bytes()) {
            tracing::debug!("{}: {e}", note.display());
        }
        if let Some(image) = image {
            match image.mount(&target.mountpoint) {
                Ok(()) => {
                    *image_slot.borrow_mut() = Some(image.dir.clone());
                    return Ok(sandbox::Lower {
                        guard: Box::new(()),
                        data_layers: image.data_layers(),
                    });
                }
                Err(e) => tracing::warn!("{e}; serving the tree with FUSE instead"),
            }
        }
        if per_run {
            let opts = MountOptions {
                target_name,
                uid: target.uid,
                gid: target.gid,
                threads: 2,
                passthrough: if target.rootless {
                    PassthroughMode::Off
                } else {
                    passthrough
                },
                shown_as: Some(shown_as),
            };
            *slot.borrow_mut() = Some(fuse::mount(tree, blobs, &target.mountpoint, &opts)?);
        }
        let Some(ws) = replay else {
            return Ok(sandbox::Lower::served_by(()));
        };
        // A thread per 64 paths, at most 4: spawning 4 threads for the
        // few paths of a small command costs more than it saves.
        let paths = ws.lookups.len() + ws.dirs.len();
        let threads = paths.div_ceil(64).clamp(1, 4);
        if std::env::var_os("VHRUN_PREFETCH").is_some_and(|v| v == "sync") {
            let _s = tracing::info_span!("fuse.prefetch", paths).entered();
            ws.prefetch(&target.mountpoint, threads);
            return Ok(sandbox::Lower::served_by(()));
        }
        // Alongside the task: its exec and interpreter start-up overlap
        // the replay (a `python -c pass` 5 ms sooner, the heavy import no
        // slower than replaying first). Joined when the guard drops, after
        // the unmount.
        let mountpoint = target.mountpoint.clone();
        let replay = std::thread::Builder::new()
            .name("vhrun-prefetch".into())
            .spawn(move || {
                let _s = tracing::info_span!("prefetch", paths).entered();
                let done = ws.prefetch(&mountpoint, threads);
                tracing::info!("working set replayed in {:?}", done.elapsed);
            })
            .ok();
        Ok(sandbox::Lower::served_by(JoinOnDrop(replay)))
    });
    let tree_mount = mounted.borrow_mut().take();
    let used_image = used_image.borrow_mut().take();
    let served = match (tree_mount, server.as_mut()) {
        (Some(m), _) => Some(finish_mount(m, previous, &workset_path)),
        (None, Some(conn)) => finish_server(conn, previous, &workset_path, &resolved.tree),
        (None, None) => used_image
            .is_some()
            .then(|| (fuse::Stats::default(), resolved.tree.totals())),
    };
    let served_by = server.as_ref().map(|c| crate::runstats::Server {
        pid: c.hello.pid,
        runs_before: c.hello.served,
    });
    drop(server);
    remove_temp(&plan.temp_dir);
    let outcome = outcome?;
    if let Some((fuse, totals)) = served.filter(|_| plan.sandbox.wants_stats()) {
        let stats = crate::runstats::RunStats::collect(&crate::runstats::Inputs {
            started,
            catalog_path: &resolved.catalog_path,
            environment: &resolved.space_path,
            totals,
            fuse: &fuse,
            outcome: &outcome,
            exit_code: outcome.code(),
            kept: spec.keep_overlay.as_deref(),
            server: served_by,
            image: used_image.as_deref(),
        });
        let json = plan.sandbox.stats_json.as_deref();
        if let Err(e) = crate::runstats::report(&stats, plan.sandbox.stats, json) {
            tracing::error!("--stats-json: {e}");
        }
    }
    Ok(RunEnd {
        code: outcome.code(),
        command: outcome.command,
    })
}

/// A warm server's share of the run: its counters' difference, and the
/// working set it recorded when this run was its first.
fn finish_server(
    conn: &mut crate::lower::server::Connection,
    previous: Option<WorkingSet>,
    workset_path: &Path,
    tree: &crate::tree::Tree,
) -> Option<(fuse::Stats, (u64, u64))> {
    match conn.notices() {
        Ok(lines) => lines.iter().for_each(|l| tracing::error!("{l}")),
        Err(e) => tracing::debug!("{e}"),
    }
    let now = match conn.stats() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                "{e}: it ended during the run, and the environment with it (files read \
                 after that failed with ENOTCONN)"
            );
            return None;
        }
    };
    if conn.fresh() {
        match conn.working_set() {
            Ok(ws) => save_merged(ws, previous, workset_path),
            Err(e) => tracing::debug!("working set not saved: {e}"),
        }
    }
    Some((now.since(&conn.hello.stats), tree.totals()))
}
/// Save the working set and unmount; the mount's final counters and the
/// catalog's (files, bytes) totals, for `--stats`.
fn finish_mount(
    tree_mount: MountedTree,
    previous: Option<WorkingSet>,
    workset_path: &Path,
) -> (fuse::Stats, (u64, u64)) {
    save_working_set(&tree_mount, previous, workset_path);
    let totals = tree_mount.tree().totals();
    let so_far = tree_mount.stats();
    match tree_mount.unmount() {
        Ok(stats) => (stats, totals),
        Err(e) => {
            tracing::warn!("{e}");
            (so_far, totals)
        }
    }
}

/// Joins the working-set replay when the sandbox drops the lower guard.
struct JoinOnDrop(Option<std::thread::JoinHandle<()>>);
impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// Hidden switches for benchmarks and diagnosis: `VHRUN_PASSTHROUGH=off`
/// serves reads from vhrun even where passthrough works, `VHRUN_PREFETCH=off`
/// skips replaying the previous working set (`=sync` replays it before the
/// task starts instead of alongside it).
fn switched_off(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v == "off" || v == "0")
}

/// Remember what this run touched, so the next run's mount is warm (not
/// rewritten when the run touched nothing new).
fn save_working_set(tree_mount: &MountedTree, previous: Option<WorkingSet>, path: &Path) {
    save_merged(tree_mount.working_set(), previous, path);
}

fn save_merged(touched: WorkingSet, previous: Option<WorkingSet>, path: &Path) {
    let mut ws = previous.clone().unwrap_or_default();
    ws.merge(touched);
    if previous.as_ref() == Some(&ws) {
        return;
    }
    if let Err(e) = ws.save(path) {
        tracing::debug!("working set not saved: {e}");
    }
}

fn remove_temp(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("{}: {e}", dir.display());
        }
    }
}

/// A robot without a conda config: rcc runs it directly with the robot's
/// PATH in front (`ExecuteSimpleTask`); so does vhrun, without a sandbox.
fn run_shell_robot(robot: &Robot, commands: Vec<Vec<String>>) -> Result<RunEnd> {
    let locations = Locations::from_env();
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
