//! The sandbox a run executes in: private namespaces, an overlay over a
//! read-only lower tree, the task under a PID-namespace reaper, and a
//! teardown the kernel guarantees.
//!
//! # API
//!
//! ```text
//! let mut spec = SandboxSpec::new(home.runs(), env_path, vec![argv]);
//! spec.env = task_env;                       // exactly the task's environment
//! spec.cwd = robot_root;
//! spec.readonly_paths = vec![hololib, blob_cache];
//! spec.writable_paths = vec![pycache_dir];   // below a read-only path
//! let ended = run_sandboxed(&spec, |target: &LowerTarget| {
//!     // mount the tree at target.mountpoint, start its threads, return
//!     // whatever keeps it served (`crate::lower::Lower::mount`)
//!     Ok(Mounted { guard: fuse_handle, data_layers: vec![], kernel_served: false })
//! });
//! let fuse_handle = ended.lower;             // back after the teardown
//! std::process::exit(ended.outcome?.code());
//! ```
//! For a plain directory as the lower layer: `crate::lower::plain_dir(dir)`.
//! Copy mode, on a machine that refuses namespaces, runs the same commands
//! in place with [`run_in_place`] (no namespace, no overlay, a subreaper).
//!
//! # Sequence (and the constraints behind it)
//!
//! In the calling process, which must still be single-threaded
//! (`unshare(CLONE_NEWUSER)` fails with a second thread; `CLONE_NEWNS`
//! would move only the calling thread):
//! 1. check `Threads: 1`; remove stale run locks and directories; hold
//!    the run's slot `$VHRUN_HOME/runs/slot-<n>.run` (`spec.slot`, or one
//!    taken here; with `keep_overlay`: create and lock
//!    `runs/<id>/{lower,upper,work}` on disk); create the environment's
//!    mountpoint (host side, as rcc's restore creates the space dir);
//! 2. block SIGINT/TERM/HUP/QUIT/CHLD in the main thread and open a
//!    signalfd for them; threads created later inherit the mask, so the
//!    signals wait for the supervisor loop instead of killing vhrun;
//! 3. unshare the mount namespace (plus a user namespace mapping the
//!    caller's uid/gid to themselves when not root) and make / rprivate;
//!    or, with `spec.join` (a warm server, `crate::lower::server`), `setns` into
//!    the server's user and mount namespaces, where the tree is already
//!    mounted, and unshare a private mount namespace from there; then
//!    (in memory) mount the run's tmpfs over `runs/` and make
//!    `runs/<id>/{lower,upper,work}` in it ([`rundir`]);
//! 4. **call `mount_lower(&LowerTarget)`**: threads may be started from
//!    here on (FUSE workers). It mounts the lower tree at
//!    `target.mountpoint` (joining a server: mounts nothing, the tree is
//!    there) and returns a guard, handed back to the caller after the unmount;
//! 5. mount the overlay at `env_path`;
//! 6. resolve each command's program in the task's PATH, build argv/envp;
//!    when the kernel serves the tree alone (`Mounted::kernel_served`, as
//!    root, nothing to keep or measure), apply the task's isolation here;
//! 7. from the main thread (PDEATHSIG fires when the forking *thread*
//!    exits), clone the reaper into a new PID namespace; see
//!    [`reaper`] for what it does before exec'ing the task (its own mount
//!    namespace and the isolation, unless step 6 applied it); in that
//!    case vhrun steps back into the namespace it started in: the run's
//!    belongs to the reaper and the task alone, and ends with them;
//! 8. forward signals to the reaper, which forwards them to the task; a
//!    second SIGINT kills the reaper, and with it the namespace;
//! 9. when the reaper exits (or, stepped out, once it reports every
//!    process of the run dead: its own exit, the namespace's teardown,
//!    is then nobody's to wait for): unmount the overlay and the lower tree
//!    (lazily; a kernel-served tree's mounts are left to the namespace's
//!    end), hand the guard back, move the upper layer to `keep_overlay` if
//!    asked, remove the run directory, restore the signal mask.
//!
//! Unless it stepped out, the process stays in the private namespaces
//! afterwards; it is meant to exit with [`RunOutcome::code`].
//!
//! # What callers must know
//!
//! - Every fd vhrun opens must be `O_CLOEXEC` (std and nix do it; open
//!   `/dev/fuse` with it): the reaper inherits all of them, the task only
//!   those without the flag.
//! - Threads started in `mount_lower` or later inherit the blocked
//!   signals: they never run signal handlers, the supervisor loop reads
//!   the signals from its signalfd.
//! - `spec.stdio` fds stay open in `spec` after the run: a thread teeing a
//!   pipe to a log sees EOF only once the spec is dropped.
//! - Mounts other processes (other runs) make are invisible here, and two
//!   runs of the same environment path each see their own overlay.
//! - With `share_pids`, vhrun is a child subreaper and kills every child it
//!   has after the run; the task can reach other same-user runs' views
//!   through `/proc/<pid>/root`, which the PID namespace otherwise hides.
//!
//! If vhrun is SIGKILLed, the kernel tears everything down: the mount
//! namespace dies with its last process, PDEATHSIG kills the reaper, and
//! the reaper's death (pid 1) kills every process of the PID namespace.
//! Only the run directory stays, removed by the next run (its flock is
//! free). With `share_pids` there is no PID namespace: processes the task
//! left behind are killed at the end of the run, but survive a SIGKILL of
//! vhrun.

pub mod capabilities;
pub mod command;
pub mod isolation;
pub mod namespaces;
pub mod overlay;
pub mod process;
pub mod reaper;
pub mod rundir;

pub use crate::sys::wait::ExitKind;
pub use isolation::Isolation;
pub use namespaces::Identity;
pub use process::RunOutcome;
pub use rundir::OverlaySize;

use crate::error::{Error, Result};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rundir::RunDir;
use std::ffi::{CString, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tracing::info_span;

/// What to run and how.
#[derive(Debug)]
pub struct SandboxSpec {
    /// Where run directories go (`<runs_dir>/<id>`; `Home::runs`): hidden
    /// from the task.
    pub runs_dir: PathBuf,
    /// Where the environment appears (absolute): the overlay's mountpoint.
    pub env_path: PathBuf,
    /// Commands run in order in the same sandbox (preRunScripts, then the
    /// task); the first that fails ends the run. argv[0] is looked up in
    /// the PATH of `env`.
    pub commands: Vec<Vec<OsString>>,
    /// The complete environment of every command (nothing is inherited).
    /// A name given twice takes its last value, as in rcc (Go's exec).
    pub env: Vec<(OsString, OsString)>,
    /// Working directory of every command (absolute).
    pub cwd: PathBuf,
    /// No PID namespace: commands run in vhrun's (still reaped at the end).
    pub share_pids: bool,
    /// Move the overlay's upper directory here after the run (must not
    /// exist, or be an empty directory).
    pub keep_overlay: Option<PathBuf>,
    /// The most the write layer may hold when it is in memory (not with
    /// `keep_overlay`, whose layer is on disk): `ENOSPC` for the task
    /// beyond. `None`: tmpfs's default, half of RAM.
    pub overlay_size: Option<rundir::OverlaySize>,
    /// Read-only for the task (hololib, blob cache), writable for vhrun.
    pub readonly_paths: Vec<PathBuf>,
    /// Writable for the task even below a read-only path (bytecode cache).
    pub writable_paths: Vec<PathBuf>,
    /// Covered by an empty read-only tmpfs for the task. `runs_dir`
    /// is always hidden.
    pub hidden_paths: Vec<PathBuf>,
    /// stdin/stdout/stderr of the commands; `None` inherits vhrun's.
    pub stdio: [Option<OwnedFd>; 3],
    /// Measure the write layer before it goes (`RunOutcome::upper`): a
    /// walk of what the run wrote, so only when asked (`--stats`).
    pub measure_upper: bool,
    /// Enter a warm server's namespaces, where the tree is already mounted,
    /// instead of creating fresh ones (`crate::lower::server`). `mount_lower` is
    /// still called, with the server's mountpoint, and must not mount.
    pub join: Option<namespaces::Joined>,
    /// What the run serves, written in its lock file for `vhrun gc` (the
    /// catalog's path).
    pub note: String,
    /// The run's slot, when the caller took it already (it names the
    /// run's TEMP); otherwise the sandbox takes one with `note`.
    pub slot: Option<std::sync::Arc<rundir::Slot>>,
    /// A helper started beside the commands (not in copy mode).
    pub companion: Option<Companion>,
}

/// A process started beside the commands, before the first, in their
/// sandbox: their environment, working directory and confinement, at a
/// lower priority. It has no part in the run: stdin, stdout and stderr
/// are `/dev/null`, it gets no signal, its exit status is not looked at,
/// and it is killed when the last command ends. Its fd 3 is `input`; what
/// it writes on fd 4 is counted (`RunOutcome::companion_reported`).
#[derive(Debug)]
pub struct Companion {
    /// argv[0] is looked up as the commands' is.
    pub argv: Vec<OsString>,
    pub input: OwnedFd,
}

impl SandboxSpec {
    /// A spec with vhrun's own environment and working directory.
    pub fn new(runs_dir: PathBuf, env_path: PathBuf, commands: Vec<Vec<OsString>>) -> Self {
        SandboxSpec {
            runs_dir,
            env_path,
            commands,
            env: std::env::vars_os().collect(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            share_pids: false,
            keep_overlay: None,
            overlay_size: None,
            readonly_paths: Vec::new(),
            writable_paths: Vec::new(),
            hidden_paths: Vec::new(),
            stdio: [None, None, None],
            measure_upper: false,
            join: None,
            note: String::new(),
            slot: None,
            companion: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.commands.is_empty() || self.commands.iter().any(|c| c.is_empty()) {
            return Err(Error::Usage("sandbox: empty command".into()));
        }
        for (what, p) in [
            ("environment path", &self.env_path),
            ("working directory", &self.cwd),
            ("run directory", &self.runs_dir),
        ] {
            if !p.is_absolute() {
                return Err(Error::Usage(format!(
                    "sandbox: {what} must be absolute: {}",
                    p.display()
                )));
            }
        }
        if let Some(keep) = &self.keep_overlay {
            if !keep.is_absolute() {
                return Err(Error::Usage(format!(
                    "--keep-overlay must be absolute: {}",
                    keep.display()
                )));
            }
            match std::fs::read_dir(keep) {
                Ok(mut rd) => {
                    if rd.next().is_some() {
                        return Err(Error::bad_input(
                            keep,
                            "--keep-overlay: directory is not empty",
                        ));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let parent = keep.parent().unwrap_or(Path::new("/"));
                    if !parent.is_dir() {
                        return Err(Error::NotFound {
                            path: parent.to_path_buf(),
                        });
                    }
                }
                Err(e) => return Err(Error::io(keep, e)),
            }
        }
        Ok(())
    }
}

/// Where and as whom the lower tree is mounted.
#[derive(Debug, Clone)]
pub struct LowerTarget {
    /// An empty directory in the run directory; mount the tree here (or,
    /// joining a warm server, where it is already mounted).
    pub mountpoint: PathBuf,
    /// The caller's ids (mapped to themselves in a user namespace): what
    /// the tree should report as owner (kernel-facts.md, "Rootless").
    pub uid: u32,
    pub gid: u32,
    /// In a user namespace: no FUSE passthrough, overlay with userxattr.
    pub rootless: bool,
}

/// What `mount_lower` mounted.
pub struct Mounted<G> {
    /// Keeps the lower tree served (e.g. the FUSE session); handed back
    /// after the tree is unmounted.
    pub guard: G,
    /// Data-only layers below the tree (an EROFS image's blob store): the
    /// overlay then gets `lowerdir=<tree>::<layer>...,metacopy=on`.
    pub data_layers: Vec<PathBuf>,
    /// The kernel serves the tree alone (an EROFS image, a warm server's
    /// mount) and no thread of this process reads or writes through it:
    /// dropping the guard needs nothing unmounted first, so the run's
    /// mounts are left to go with its namespace, as after a crash
    /// (unmounting them one by one cost about 0.3 ms a run), and vhrun
    /// may leave that namespace to the reaper (`run_in`'s step out).
    pub kernel_served: bool,
}

/// How a sandboxed run ended, and the lower tree's guard, given back
/// after the teardown (`None` when nothing was mounted).
pub struct Ended<G> {
    pub outcome: Result<RunOutcome>,
    pub lower: Option<G>,
}

/// Run `spec.commands` in the sandbox over the tree `mount_lower` mounts.
/// See the module doc for the sequence. Must be called while the process
/// is single-threaded.
pub fn run_sandboxed<G, M>(spec: &SandboxSpec, mount_lower: M) -> Ended<G>
where
    M: FnOnce(&LowerTarget) -> Result<Mounted<G>>,
{
    let started = Instant::now();
    match prepare(spec) {
        Ok((run, id, signals)) => run_prepared(spec, run, &id, signals, mount_lower, started),
        Err(e) => Ended {
            outcome: Err(e),
            lower: None,
        },
    }
}

/// Steps 1 and 2 of the module doc: nothing to undo if they fail.
fn prepare(spec: &SandboxSpec) -> Result<(RunDir, Identity, SignalGuard)> {
    spec.validate()?;
    // Single-threadedness is checked where it matters, right before the
    // namespaces are entered or joined (`namespaces::enter`, `join`).
    let id = Identity::current();
    let run = {
        let _s = info_span!("sandbox_prepare").entered();
        // A write layer kept after the run must be on disk; any other
        // lives in memory and vanishes with the run's namespace.
        let run = match spec.keep_overlay {
            Some(_) => RunDir::create(&spec.runs_dir, &spec.note)?,
            None => RunDir::in_memory(&spec.runs_dir, &spec.note, spec.slot.as_deref())?,
        };
        overlay::ensure_mountpoint(&spec.env_path)?;
        run
    };
    tracing::debug!(run = %run.path.display(), rootless = id.rootless, "run directory");
    let signals = SignalGuard::block()?;
    Ok((run, id, signals))
}

fn run_prepared<G, M>(
    spec: &SandboxSpec,
    run: RunDir,
    id: &Identity,
    signals: SignalGuard,
    mount_lower: M,
    started: Instant,
) -> Ended<G>
where
    M: FnOnce(&LowerTarget) -> Result<Mounted<G>>,
{
    let mut mounts = Mounts::default();
    let outcome = run_in(spec, &run, id, mount_lower, &signals, &mut mounts, started);

    let _s = info_span!("sandbox_teardown").entered();
    let overlay_mounted = mounts.env.is_some();
    // A kept or measured write layer is read once the overlay is gone.
    let leave = mounts.kernel_served && spec.keep_overlay.is_none() && !spec.measure_upper;
    let (unmounted, lower) = if leave {
        (Ok(()), mounts.guard.take())
    } else {
        mounts.teardown()
    };
    drop(signals);
    let upper = spec
        .measure_upper
        .then(|| overlay::measure_upper(&run.upper()));
    let mut kept = Ok(());
    if let (Some(dest), true) = (&spec.keep_overlay, overlay_mounted) {
        kept = run.keep_upper(dest);
    }
    match (&unmounted, &kept) {
        (Ok(()), Ok(())) => {
            if let Err(e) = run.remove() {
                tracing::warn!("{e}");
            }
        }
        (Err(e), _) => tracing::warn!("{e}; leaving the run directory to a later run"),
        (_, Err(e)) => tracing::error!(
            "--keep-overlay: {e}; the write layer stays in {} until the next run",
            run.upper().display()
        ),
    }
    let outcome = outcome.and_then(|mut outcome| {
        kept?;
        outcome.upper = upper;
        Ok(outcome)
    });
    Ended { outcome, lower }
}

fn run_in<G, M>(
    spec: &SandboxSpec,
    run: &RunDir,
    id: &Identity,
    mount_lower: M,
    signals: &SignalGuard,
    mounts: &mut Mounts<G>,
    started: Instant,
) -> Result<RunOutcome>
where
    M: FnOnce(&LowerTarget) -> Result<Mounted<G>>,
{
    let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    // Root can come back to where it started once the reaper is in the
    // run's namespace (see `step_out` below).
    let home_ns = if id.rootless {
        None
    } else {
        namespaces::current_mount_ns()
    };
    let lower = match &spec.join {
        Some(joined) => {
            let _s = info_span!("sandbox_join").entered();
            namespaces::join(id, joined, &here)?;
            joined.lower.clone()
        }
        None => {
            let _s = info_span!("sandbox_namespaces").entered();
            namespaces::enter(id)?;
            // Ours to unmount at the end.
            mounts.lower = Some(run.lower());
            run.lower()
        }
    };
    run.mount(spec.overlay_size.as_ref())?;
    let data_layers = {
        let _s = info_span!("sandbox_mount_lower").entered();
        let target = LowerTarget {
            mountpoint: lower.clone(),
            uid: id.uid,
            gid: id.gid,
            rootless: id.rootless,
        };
        let mounted = mount_lower(&target)?;
        mounts.guard = Some(mounted.guard);
        mounts.kernel_served = mounted.kernel_served;
        mounted.data_layers
    };
    {
        let _s = info_span!("sandbox_overlay").entered();
        let volatile = spec.keep_overlay.is_none();
        let layers = overlay::Layers {
            lower: &lower,
            data: &data_layers,
        };
        overlay::mount_overlay(run, &layers, &spec.env_path, id.rootless, volatile)?;
        mounts.env = Some(spec.env_path.clone());
    }
    let _s = info_span!("sandbox_prepare_exec").entered();
    let exec = prepare_exec(spec)?;
    let mut hidden = spec.hidden_paths.clone();
    hidden.push(spec.runs_dir.clone());
    let isolation = Isolation {
        readonly: spec.readonly_paths.clone(),
        writable: spec.writable_paths.clone(),
        hidden,
    }
    .prepare()?;
    let caps = capabilities::CapDrop::for_identity(id.rootless);
    // When nothing of vhrun's needs the run's mounts again (the kernel
    // serves the tree, no write layer to keep or measure, no thread of
    // ours in the namespace), the task's isolation goes into the run's
    // namespace itself and vhrun steps back out of it once the reaper is
    // in: the reaper needs no copy of the namespace (one copy and one
    // teardown of some thirty mounts less per run), and the namespace
    // ends with the task.
    let step_out = home_ns.filter(|_| {
        mounts.kernel_served
            && spec.keep_overlay.is_none()
            && !spec.measure_upper
            && namespaces::thread_count().is_ok_and(|n| n == 1)
    });
    let applied = isolation::Prepared::default();
    if step_out.is_some() {
        isolation.apply().map_err(|(i, e)| isolation.error(i, e))?;
    }
    drop(_s);

    let confinement = Confinement {
        pid_ns: !spec.share_pids,
        mount_ns: step_out.is_none(),
        isolation: if step_out.is_some() {
            &applied
        } else {
            &isolation
        },
        caps: caps.as_ref(),
        step_out: step_out.as_ref().map(|ns| (ns, here.as_path())),
    };
    spawn(spec, signals, &exec, &confinement, started)
}

/// Run `spec.commands` in place, with no namespace, no overlay and no
/// isolation mounts: copy mode, on a machine that refuses them. Only
/// `commands`, `env`, `cwd` and `stdio` of `spec` apply. vhrun is a child
/// subreaper and kills whatever the commands leave running when the run
/// ends; a SIGKILL of vhrun leaves those alive (no PID namespace holds
/// them), which is as far as an unprivileged process can go.
///
/// `prepare` (copy mode: restoring the space) runs once the supervised
/// signals are blocked, so the threads it starts leave them to the
/// supervisor; what it returns lives until the commands have ended.
pub fn run_in_place<T>(
    spec: &SandboxSpec,
    prepare: impl FnOnce() -> Result<T>,
) -> Result<(RunOutcome, T)> {
    let started = Instant::now();
    spec.validate()?;
    if spec.keep_overlay.is_some() {
        return Err(Error::Usage(
            "--keep-overlay needs the virtual holotree: a run from a copy writes into the space itself"
                .into(),
        ));
    }
    let signals = SignalGuard::block()?;
    let prepared = prepare()?;
    let _s = info_span!("sandbox_prepare_exec").entered();
    let exec = prepare_exec(spec)?;
    let isolation = isolation::Prepared::default();
    drop(_s);
    let confinement = Confinement {
        pid_ns: false,
        mount_ns: false,
        isolation: &isolation,
        caps: None,
        step_out: None,
    };
    let outcome = spawn(spec, &signals, &exec, &confinement, started)?;
    Ok((outcome, prepared))
}

/// How far the commands are confined beyond vhrun's own namespaces.
struct Confinement<'a> {
    pid_ns: bool,
    /// The task's own mount namespace, with `isolation` applied.
    mount_ns: bool,
    isolation: &'a isolation::Prepared,
    caps: Option<&'a capabilities::CapDrop>,
    /// Leave the run's mount namespace for this one once the reaper is in
    /// it, and go back to this working directory.
    step_out: Option<(&'a OwnedFd, &'a Path)>,
}

/// Fork the reaper for the prepared commands and supervise it to the end.
fn spawn(
    spec: &SandboxSpec,
    signals: &SignalGuard,
    exec: &Exec,
    confinement: &Confinement,
    started: Instant,
) -> Result<RunOutcome> {
    let _s = info_span!("sandbox_run").entered();
    let companion = match (&exec.companion, &spec.companion) {
        (Some(command), Some(c)) => Some((command, &c.input, CompanionPipes::new()?)),
        _ => None,
    };
    let mut outcome = process::spawn_and_supervise(&process::Supervision {
        commands: &exec.commands,
        envp: &exec.envp,
        cwd: &exec.cwd,
        pid_ns: confinement.pid_ns,
        mount_ns: confinement.mount_ns,
        isolation: confinement.isolation,
        caps: confinement.caps,
        task_mask: signals.original,
        stdio: [
            spec.stdio[0].as_ref(),
            spec.stdio[1].as_ref(),
            spec.stdio[2].as_ref(),
        ],
        signals: &signals.fd,
        started,
        step_out: confinement.step_out,
        companion: companion
            .as_ref()
            .map(|(command, input, p)| (*command, *input, &p.report_w, &p.null)),
    })?;
    if let Some((_, _, p)) = companion {
        outcome.companion_reported = p.reported();
    }
    Ok(outcome)
}

/// The companion's report pipe and `/dev/null`, made before the fork.
struct CompanionPipes {
    report_r: OwnedFd,
    report_w: OwnedFd,
    null: OwnedFd,
}

impl CompanionPipes {
    fn new() -> Result<CompanionPipes> {
        use nix::fcntl::OFlag;
        // Non-blocking both ways: a companion that reports more than the
        // pipe holds loses the count, never its progress, and vhrun reads
        // what is there once the run has ended.
        let (report_r, report_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|e| Error::sys("pipe2", e))?;
        let null = nix::fcntl::open(
            "/dev/null",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::io("/dev/null", e.into()))?;
        Ok(CompanionPipes {
            report_r,
            report_w,
            null,
        })
    }

    /// Bytes in the report pipe (the companion is gone by now).
    fn reported(self) -> u64 {
        drop(self.report_w);
        let mut buf = [0u8; 4096];
        let mut n = 0u64;
        while let Ok(got @ 1..) = nix::unistd::read(&self.report_r, &mut buf) {
            n += got as u64;
        }
        n
    }
}

/// The commands as the exec needs them, prepared before the fork.
struct Exec {
    commands: Vec<command::PreparedCommand>,
    companion: Option<command::PreparedCommand>,
    envp: crate::sys::exec::CStringArray,
    cwd: CString,
}

/// Each command's program found in the task's PATH, and the environment
/// and working directory as the exec needs them (before the fork).
fn prepare_exec(spec: &SandboxSpec) -> Result<Exec> {
    let path_var = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let commands = spec
        .commands
        .iter()
        .map(|argv| command::prepare_command(argv, path_var, &spec.cwd))
        .collect::<Result<Vec<_>>>()?;
    let companion = match &spec.companion {
        Some(c) => Some(command::prepare_command(&c.argv, path_var, &spec.cwd)?),
        None => None,
    };
    let envp = command::prepare_env(&spec.env)?;
    let cwd = CString::new(spec.cwd.as_os_str().as_bytes())
        .map_err(|_| Error::bad_input(&spec.cwd, "path contains a NUL byte"))?;
    Ok(Exec {
        commands,
        companion,
        envp,
        cwd,
    })
}

/// What is mounted in the run's namespace, undone in reverse order.
struct Mounts<G> {
    env: Option<PathBuf>,
    lower: Option<PathBuf>,
    guard: Option<G>,
    /// `Mounted::kernel_served`.
    kernel_served: bool,
}

impl<G> Default for Mounts<G> {
    fn default() -> Self {
        Mounts {
            env: None,
            lower: None,
            guard: None,
            kernel_served: false,
        }
    }
}

impl<G> Mounts<G> {
    /// Unmount the overlay, then the lower tree; the guard of what served
    /// it. An error means the lower tree may still be mounted.
    fn teardown(&mut self) -> (Result<()>, Option<G>) {
        if let Some(env) = self.env.take() {
            if let Err(e) = overlay::unmount(&env) {
                tracing::warn!("{e}");
            }
        }
        let mut result = Ok(());
        if let Some(lower) = self.lower.take() {
            match nix::mount::umount2(&lower, nix::mount::MntFlags::MNT_DETACH) {
                // EINVAL: nothing mounted there (mount_lower failed early).
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(e) => result = Err(Error::sys(format!("unmounting {}", lower.display()), e)),
            }
        }
        (result, self.guard.take())
    }
}

/// The supervised signals blocked in the main thread (and so in every
/// thread started later), readable from a signalfd; restored on drop.
struct SignalGuard {
    original: SigSet,
    fd: SignalFd,
}

impl SignalGuard {
    fn block() -> Result<SignalGuard> {
        let set = process::supervised_signals();
        // A SIG_IGN'd SIGCHLD (inherited) would make the kernel reap our
        // children itself.
        crate::sys::signal::set_default(libc::SIGCHLD)
            .map_err(|e| Error::sys("sigaction(SIGCHLD, SIG_DFL)", e))?;
        let (original, fd) = block_into_signalfd(&set)?;
        Ok(SignalGuard { original, fd })
    }
}

/// Block `set` in the calling thread (and so in every thread it starts
/// later) and read those signals from a non-blocking signalfd instead:
/// the mask it replaced, and the fd.
pub fn block_into_signalfd(set: &SigSet) -> Result<(SigSet, SignalFd)> {
    let original = set
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(|e| Error::sys("pthread_sigmask(SIG_BLOCK)", e))?;
    let fd = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| Error::sys("signalfd", e))?;
    Ok((original, fd))
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // Signals that arrived after the run ended have nobody to go to.
        while let Ok(Some(_)) = self.fd.read_signal() {}
        let _ = self.original.thread_set_mask();
    }
}
