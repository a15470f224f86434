//! The server side: `vhrun __serve`, started by the first run that needs
//! it (see the parent module for the why and the protocol).

use super::keeper::{self, Held, Keeper, Msg, State};
use super::{short_socket_path, write_frame, Hello, Paths};
use crate::error::{Error, IoContext, Result};
use crate::hololib::Hololib;
use crate::home::Home;
use crate::lower::blobcache::BlobCache;
use crate::lower::fuse::{self, MountOptions, MountedTree, PassthroughMode};
use crate::lower::image::{self, Image};
use crate::remote::lazy::{Batching, Lazy};
use crate::sandbox::namespaces::{self, Identity, Propagation};
use crate::sandbox::rundir::RunDir;
use crate::tree::Tree;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a new server waits for its first run, whatever its idle time.
const FIRST_RUN_GRACE: Duration = Duration::from_secs(10);

/// What `vhrun __serve` is told by the run that starts it.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub home: Home,
    pub key: String,
    pub catalog: PathBuf,
    pub hololib: PathBuf,
    pub blobs: PathBuf,
    pub target_name: String,
    pub shown_as: PathBuf,
    pub idle: Duration,
    pub passthrough: PassthroughMode,
    /// Build the kernel image after a few runs (as root).
    pub image: bool,
    /// Serve lazily from this rccremote origin (`remote::lazy`).
    pub origin: Option<(String, Batching)>,
    /// rcc's home, whose network settings reach the origin.
    pub robocorp_home: PathBuf,
    /// Take over a live connection handed on stdin by a keeper
    /// (`keeper`) instead of mounting.
    pub takeover: bool,
    /// Start a keeper, so that a successor can take over (`VHRUN_TAKEOVER`).
    pub keeper: bool,
}

/// Detach and serve. Returns in the starter's child at once (exit 0); the
/// server itself runs in a grandchild, so that the starting run never has
/// it as a child (its reaper would wait for or kill it).
pub fn serve(cfg: &ServeConfig) -> Result<i32> {
    namespaces::ensure_single_threaded()?;
    if cfg.takeover {
        // Started by a keeper, detached already, in the namespaces.
        take_over(cfg)?;
        return Ok(0);
    }
    // Out of the caller's session: a terminal's ^C or hangup is not ours.
    let _ = nix::unistd::setsid();
    // Nor its working directory: a server living on in the robot's
    // directory would keep that filesystem busy.
    let _ = std::env::set_current_dir("/");
    // The process is single-threaded here, so the child may run ordinary
    // code (the restriction of `clone_child` is about other threads).
    crate::sys::fork::clone_child(false, || match serve_detached(cfg) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            e.exit_code()
        }
    })
    .map_err(|e| Error::sys("clone (detaching the warm server)", e))?;
    Ok(0)
}

fn serve_detached(cfg: &ServeConfig) -> Result<()> {
    let dir = cfg.home.servers();
    let paths = Paths::new(&dir, &cfg.key);
    let key_lock = lock_key(&dir.join(format!("{}.lock", cfg.key)))?;
    let id = Identity::current();
    crate::sys::rlimit::raise_nofile_limit();
    // Blocked before any thread starts, so every thread inherits it.
    let signals = block_signals()?;
    namespaces::enter_with(&id, Propagation::Slave)?;
    let (tree, blobs, opts) = what_to_serve(cfg, &id)?;
    // A run directory of its own: gc sees the catalog in use, and a
    // crashed server's directory is removed by the next one.
    let run = RunDir::create(&dir, &cfg.catalog.to_string_lossy())?;
    let image_build = image_builder(cfg, &tree, &id);
    let mounted = fuse::mount(tree, blobs, &run.lower(), &opts)?;

    // Bound under a temporary name and renamed: a run never connects to
    // a socket whose server is not ready.
    let dirf = std::fs::File::open(&dir).at(&dir)?;
    let tmp = format!(".{}.{}.sock", cfg.key, std::process::id());
    let listener = UnixListener::bind(short_socket_path(&dirf, &tmp)).at(dir.join(&tmp))?;
    let sock = dir.join(&paths.socket_name);
    std::fs::rename(dir.join(&tmp), &sock).at(&sock)?;
    let sock_ino = std::fs::metadata(&sock).map(|m| m.ino()).unwrap_or(0);
    listener.set_nonblocking(true).at(&sock)?;
    let state = State {
        argv: successor_argv(),
        offered: 0,
        generation: 0,
        rundir: run.path.clone(),
        socket_ino: sock_ino,
        listening: true,
    };
    // Before the first run can connect: a server killed from then on
    // has a successor.
    let keeper = if cfg.keeper {
        start_keeper(
            &mounted,
            &run,
            &state,
            Some((key_lock.as_fd(), listener.as_fd())),
            &[],
        )
    } else {
        None
    };
    tracing::info!(
        pid = std::process::id(),
        lower = %run.lower().display(),
        idle = ?cfg.idle,
        keeper = keeper.is_some(),
        "warm server ready for {}",
        cfg.catalog.display()
    );
    announce_ready();
    serve_until_done(
        cfg,
        &id,
        Serving {
            mounted,
            run,
            listener: Some(listener),
            key_lock: Some(key_lock),
            sock,
            sock_ino,
            state,
            keeper,
            clients: Vec::new(),
            image_build,
            signals,
        },
    )
}

/// A successor: serve the connection a keeper hands over on stdin.
fn take_over(cfg: &ServeConfig) -> Result<()> {
    let old_keeper = Keeper::adopt(keeper::peer_on_stdin()?);
    let signals = block_signals()?;
    let handed = keeper::receive(old_keeper.stream())?;
    let id = Identity::current();
    crate::sys::rlimit::raise_nofile_limit();
    let (tree, blobs, opts) = what_to_serve(cfg, &id)?;
    let keeper::Handed {
        mut state,
        held,
        clients,
    } = handed;
    let run = RunDir::adopt(state.rundir.clone(), held.rundir_lock);
    let t0 = Instant::now();
    let mounted = fuse::resume(
        tree.clone(),
        blobs,
        &run.lower(),
        &opts,
        fuse::Handover {
            fuse: held.fuse,
            record: held.record,
            offered: state.offered,
            generation: state.generation,
        },
    )?;
    let key_lock = match held.key_lock {
        Some(fd) => match Flock::lock(std::fs::File::from(fd), FlockArg::LockExclusiveNonblock) {
            Ok(l) => Some(l),
            Err((_, e)) => {
                tracing::warn!(
                    "the key's lock: {}; serving the runs in flight only",
                    e.desc()
                );
                None
            }
        },
        None => None,
    };
    let listener = match (held.listener, &key_lock) {
        (Some(fd), Some(_)) => {
            let l = UnixListener::from(fd);
            l.set_nonblocking(true)
                .map_err(|e| Error::io("the listening socket", e))?;
            Some(l)
        }
        _ => None,
    };
    state.argv = successor_argv();
    let sock = cfg.home.servers().join(format!("{}.sock", cfg.key));
    let client_fds: Vec<_> = clients.iter().map(|c| c.as_fd()).collect();
    let listening = key_lock
        .as_ref()
        .zip(listener.as_ref())
        .map(|(k, l)| (k.as_fd(), l.as_fd()));
    // A keeper of this binary, and the old one retires; a successor that
    // fails before that is retried by the old one. Without a new one,
    // the old keeper goes on keeping this server.
    let keeper = match start_keeper(&mounted, &run, &state, listening, &client_fds) {
        Some(k) => {
            old_keeper.tell(&Msg::Retire);
            Some(k)
        }
        None => keeper_parts(&mounted, &run, &state, listening)
            .and_then(|(state, held)| old_keeper.hello(&state, &held, &client_fds))
            .map(|()| old_keeper)
            .inspect_err(|e| tracing::warn!("the old keeper: {e}"))
            .ok(),
    };
    drop(client_fds);
    tracing::info!(
        pid = std::process::id(),
        generation = state.generation,
        runs = clients.len(),
        "took the warm server of {} over in {:?}",
        cfg.catalog.display(),
        t0.elapsed()
    );
    let image_build = image_builder(cfg, &tree, &id);
    let sock_ino = state.socket_ino;
    serve_until_done(
        cfg,
        &id,
        Serving {
            mounted,
            run,
            listener,
            key_lock,
            sock,
            sock_ino,
            state,
            keeper,
            clients: clients
                .into_iter()
                .map(|stream| Client {
                    stream,
                    pending: Vec::new(),
                })
                .collect(),
            image_build,
            signals,
        },
    )
}

/// The arguments a successor is started with: this server's own. Each
/// keeps its place even if it is not UTF-8 (the handed-over state holds
/// strings), so a successor never reads one flag's value as another's.
fn successor_argv() -> Vec<String> {
    crate::sys::startup::args_os()
        .iter()
        .skip(2)
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| a != "--takeover")
        .collect()
}

/// What a keeper of `mounted` holds: a duplicate of each descriptor.
fn keeper_parts(
    mounted: &MountedTree,
    run: &RunDir,
    state: &State,
    listening: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
) -> Result<(State, Held)> {
    let h = mounted
        .handover()
        .ok_or_else(|| Error::Internal("no connection to hand over".into()))?;
    let dup = |fd: BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map_err(|e| Error::io("a descriptor for the keeper", e))
    };
    let (key_lock, listener) = match listening {
        Some((k, l)) => (Some(dup(k)?), Some(dup(l)?)),
        None => (None, None),
    };
    let held = Held {
        fuse: h.fuse,
        record: h.record,
        rundir_lock: dup(run.lock_fd())?,
        key_lock,
        listener,
    };
    let state = State {
        offered: h.offered,
        generation: h.generation,
        listening: listening.is_some(),
        ..state.clone()
    };
    Ok((state, held))
}

/// Start a keeper for `mounted` (none, with a warning, if it cannot be).
fn start_keeper(
    mounted: &MountedTree,
    run: &RunDir,
    state: &State,
    listening: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
    clients: &[BorrowedFd<'_>],
) -> Option<Keeper> {
    keeper_parts(mounted, run, state, listening)
        .and_then(|(state, held)| Keeper::spawn(&state, &held, clients))
        .inspect_err(|e| tracing::warn!("no keeper ({e}): a crash of this server ends its runs"))
        .ok()
}

/// The tree, blob cache and mount options of `cfg` for `id`.
fn what_to_serve(cfg: &ServeConfig, id: &Identity) -> Result<(Arc<Tree>, BlobCache, MountOptions)> {
    let mut tree = Tree::load_indexed(&cfg.catalog, &cfg.home.index())?;
    tree.detach_from_index();
    let tree = Arc::new(tree);
    let lib = Hololib::new(&cfg.hololib);
    let remote = match &cfg.origin {
        Some((url, batching)) => Some(Lazy::connect(
            url,
            *batching,
            lib.clone(),
            tree.clone(),
            &cfg.home,
            &cfg.robocorp_home,
        )?),
        None => None,
    };
    let blobs = BlobCache::new(lib, &cfg.blobs).with_remote(remote);
    let opts = MountOptions {
        target_name: cfg.target_name.clone(),
        uid: id.uid,
        gid: id.gid,
        threads: 2,
        passthrough: if id.rootless {
            PassthroughMode::Off
        } else {
            cfg.passthrough
        },
        shown_as: Some(cfg.shown_as.clone()),
        handover: cfg.keeper,
    };
    Ok((tree, blobs, opts))
}

/// A serving server's parts.
struct Serving {
    mounted: MountedTree,
    run: RunDir,
    listener: Option<UnixListener>,
    key_lock: Option<Flock<std::fs::File>>,
    sock: PathBuf,
    sock_ino: u64,
    state: State,
    keeper: Option<Keeper>,
    clients: Vec<Client>,
    image_build: Option<Box<dyn FnOnce()>>,
    signals: SignalFd,
}

/// Serve runs until idle or signalled, then withdraw, unmount and exit.
fn serve_until_done(cfg: &ServeConfig, id: &Identity, s: Serving) -> Result<()> {
    let (mounted, run, signals, sock, sock_ino) = (s.mounted, s.run, s.signals, s.sock, s.sock_ino);
    let userns = if id.rootless {
        Some(std::fs::File::open("/proc/self/ns/user").at("/proc/self/ns/user")?)
    } else {
        None
    };
    let mntns = std::fs::File::open("/proc/self/ns/mnt").at("/proc/self/ns/mnt")?;
    let served = Served {
        mounted: &mounted,
        run: &run,
        lower: run.lower(),
        catalog: cfg.catalog.clone(),
        shown_as: cfg.shown_as.clone(),
        idle: cfg.idle,
        served: std::cell::Cell::new(0),
        userns: userns.as_ref().map(|f| f.as_fd()),
        mntns: mntns.as_fd(),
        uid: id.uid,
        image_build: std::cell::RefCell::new(s.image_build),
        keeper: std::cell::RefCell::new(s.keeper),
        keepers_started: std::cell::Cell::new(0),
        state: std::cell::RefCell::new(s.state),
        key_lock: std::cell::RefCell::new(s.key_lock),
        exe: super::exe_identity(),
    };
    // No new run once it goes: the socket is removed and the key's lock
    // let go, so the next run starts a server of its own at once (those
    // queued on the closed listener are turned away and do the same).
    let mut withdraw = || {
        if std::fs::metadata(&sock).is_ok_and(|m| m.ino() == sock_ino) {
            let _ = std::fs::remove_file(&sock);
        }
        served.key_lock.borrow_mut().take();
        if let Some(k) = served.keeper.borrow().as_ref() {
            k.tell(&Msg::Withdrawn);
        }
    };
    let end = served.run(s.listener, s.clients, &signals, cfg.idle, &mut withdraw);
    let why = match end {
        End::Done(why) => why,
        End::Upgrade(exe) => {
            // The keeper starts `exe` in our place: nothing of ours is
            // undone (the mount, the run directory), and what was in
            // flight on the connection is sent again to the successor.
            tracing::info!("handing over to {}", exe.display());
            if let Some(k) = served.keeper.borrow().as_ref() {
                k.tell(&Msg::Upgrade { exe });
            }
            // _exit, not exit: no atexit handler may wait for a lock a
            // server thread holds, keeping the keeper from its EOF.
            crate::sys::fork::exit_now(0);
        }
    };
    tracing::info!("warm server exits: {why}");
    withdraw();
    if let Some(k) = served.keeper.borrow_mut().take() {
        k.tell(&Msg::Bye);
    }
    drop(served);
    drop(signals);
    if let Err(e) = mounted.unmount() {
        tracing::warn!("{e}");
    }
    if let Err(e) = run.remove() {
        tracing::warn!("{e}");
    }
    Ok(())
}

/// Runs of one server before it has the kernel image built: a catalog run
/// once (a CI job, a try-out) is not worth decoding whole, nor a
/// background writer into a home that may be deleted right after; one run
/// again is. Never during a run: a cold run is not slowed down.
pub const IMAGE_AFTER_RUNS: u64 = 2;

/// As root, the catalog's kernel image (`crate::lower::image`) built in the
/// background (`vhrun __image`) once [`IMAGE_AFTER_RUNS`] runs have
/// ended: the runs after it mount the image and no longer need this
/// server, which then idles out. Nothing when the image exists, is switched off, or cannot be
/// (rootless).
fn image_builder(cfg: &ServeConfig, tree: &Tree, id: &Identity) -> Option<Box<dyn FnOnce()>> {
    // An image reads every blob: a lazily served tree would pull the
    // whole environment behind its runs' backs.
    if id.rootless || !cfg.image || cfg.origin.is_some() {
        return None;
    }
    let who = image::For {
        target_name: &cfg.target_name,
        uid: id.uid,
        gid: id.gid,
    };
    if Image::find(&cfg.home, tree, who).is_some() {
        return None;
    }
    let mut cmd = std::process::Command::new(std::env::current_exe().ok()?);
    cmd.arg("__image")
        .args(crate::logging::verbosity_args())
        .args(
            crate::lower::TreePaths {
                catalog: cfg.catalog.clone(),
                hololib: cfg.hololib.clone(),
                blobs: cfg.blobs.clone(),
                target: cfg.target_name.clone(),
                origin: None,
            }
            .argv(),
        )
        .env("VHRUN_HOME", cfg.home.root())
        // stderr stays the server's log.
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    Some(Box::new(move || match cmd.spawn() {
        // Reaped by a thread of its own: the server's loop never waits.
        Ok(mut child) => {
            let reaper = std::thread::Builder::new()
                .name("vhrun-image-wait".into())
                .spawn(move || match child.wait() {
                    Ok(st) if !st.success() => tracing::warn!("image build: {st}"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("image build: {e}"),
                });
            if let Err(e) = reaper {
                tracing::warn!("cannot wait for the image build: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot start the image build: {e}"),
    }))
}

/// One server per key: wait a little for one that is exiting.
fn lock_key(path: &std::path::Path) -> Result<Flock<std::fs::File>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = std::fs::File::create(path).at(path)?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(g) => return Ok(g),
            Err((_, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(Error::unavailable(
                    format!("{}: another warm server holds this key", path.display()),
                    "it did not exit within 10 s",
                ))
            }
            Err((_, e)) => return Err(Error::io(path, e.into())),
        }
    }
}

fn block_signals() -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    crate::sandbox::block_into_signalfd(&set).map(|(_, fd)| fd)
}

/// Tell the starter we serve, then let go of its pipe.
fn announce_ready() {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = out.write_all(b"ready\n");
    let _ = out.flush();
    if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

struct Served<'a> {
    mounted: &'a MountedTree,
    run: &'a RunDir,
    lower: PathBuf,
    catalog: PathBuf,
    shown_as: PathBuf,
    idle: Duration,
    /// Runs greeted so far.
    served: std::cell::Cell<u64>,
    userns: Option<std::os::fd::BorrowedFd<'a>>,
    mntns: std::os::fd::BorrowedFd<'a>,
    uid: u32,
    /// Started once [`IMAGE_AFTER_RUNS`] runs have ended.
    image_build: std::cell::RefCell<Option<Box<dyn FnOnce()>>>,
    keeper: std::cell::RefCell<Option<Keeper>>,
    /// Keepers started after the first (see [`MAX_KEEPERS`]).
    keepers_started: std::cell::Cell<u32>,
    state: std::cell::RefCell<State>,
    /// Held while this server takes runs.
    key_lock: std::cell::RefCell<Option<Flock<std::fs::File>>>,
    /// `exe_identity` of this process (its executable cannot change under it).
    exe: String,
}

/// Keepers a server starts in place of dead ones before it serves on
/// without (a keeper that cannot live is not restarted forever).
const MAX_KEEPERS: u32 = 10;

/// Why [`Served::run`] ended.
enum End {
    Done(String),
    /// A newer vhrun asked to take over (`vhrun servers --restart`).
    Upgrade(PathBuf),
}

/// What a run's line asked for, beyond an answer.
enum Asked {
    Nothing,
    Gone,
    Upgrade(PathBuf),
}

struct Client {
    stream: UnixStream,
    pending: Vec<u8>,
}

/// A greeting carries the namespaces only to a run.
enum Greeting {
    Run,
    Info,
}

impl Served<'_> {
    /// Serve runs until idle, signalled, or unmounted; says which.
    /// A first SIGTERM/SIGINT/SIGHUP drains: `withdraw` removes the socket
    /// and lets the key go (a new server may start beside this one), the
    /// listener closes, and the server exits when the runs in flight have
    /// ended; a second one exits at once (those runs lose their
    /// environment).
    fn run(
        &self,
        mut listener: Option<UnixListener>,
        mut clients: Vec<Client>,
        signals: &SignalFd,
        idle: Duration,
        withdraw: &mut dyn FnMut(),
    ) -> End {
        let mut idle_since = Instant::now();
        let mut draining: Option<String> = None;
        loop {
            if let (Some(why), true) = (&draining, clients.is_empty()) {
                return End::Done(why.clone());
            }
            let served = self.served.get();
            if served >= IMAGE_AFTER_RUNS && clients.is_empty() {
                if let Some(start) = self.image_build.borrow_mut().take() {
                    start();
                }
            }
            if !self.mounted.is_serving() {
                return End::Done("the tree was unmounted".into());
            }
            // The run that started the server is on its way: wait for it
            // even with a zero idle time.
            let idle = if served == 0 {
                idle.max(FIRST_RUN_GRACE)
            } else {
                idle
            };
            if clients.is_empty() && idle_since.elapsed() >= idle && draining.is_none() {
                return End::Done(format!("no run for {idle:?}"));
            }
            // Wake at least once a second to notice an unmount.
            let wait = if clients.is_empty() {
                idle.saturating_sub(idle_since.elapsed())
            } else {
                Duration::from_secs(1)
            }
            .min(Duration::from_secs(1));
            // [signals, keeper, listener (while accepting), clients...]
            let keeper = self.keeper.borrow();
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            let keeper_at = keeper.as_ref().map(|k| {
                fds.push(PollFd::new(k.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let listener_at = fds.len();
            fds.extend(
                listener
                    .iter()
                    .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN)),
            );
            let first_client = fds.len();
            fds.extend(
                clients
                    .iter()
                    .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)),
            );
            let ms = u16::try_from(wait.as_millis()).unwrap_or(1000);
            match nix::poll::poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return End::Done(format!("poll: {}", e.desc())),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let signalled = ready(0);
            let keeper_ready = keeper_at.is_some_and(ready);
            let listener_ready = listener.is_some() && ready(listener_at);
            let readable: Vec<usize> = (0..clients.len())
                .filter(|&i| ready(i + first_client))
                .collect();
            drop(fds);
            drop(keeper);
            if keeper_ready {
                self.keeper_check(listener.as_ref(), &clients);
            }
            if signalled {
                if let Ok(Some(s)) = signals.read_signal() {
                    let why = format!("signal {}", s.ssi_signo);
                    if draining.is_some() {
                        return End::Done(why);
                    }
                    tracing::info!(
                        "{why}: no new run; exiting after {} in flight",
                        clients.len()
                    );
                    withdraw();
                    listener = None;
                    draining = Some(why);
                }
            }
            // Newest first, so removing keeps the other indexes right.
            for i in readable.into_iter().rev() {
                match self.answer(&mut clients[i]) {
                    Asked::Nothing => {}
                    Asked::Gone => {
                        clients.swap_remove(i);
                        if clients.is_empty() {
                            idle_since = Instant::now();
                        }
                    }
                    Asked::Upgrade(exe) => return End::Upgrade(exe),
                }
            }
            if let Some(l) = listener.as_ref().filter(|_| listener_ready) {
                while let Ok((stream, _)) = l.accept() {
                    if let Some(mut c) = self.admit(stream) {
                        if let Some(k) = self.keeper.borrow().as_ref() {
                            k.client(c.stream.as_fd());
                        }
                        // A run writes its request as it connects: answer
                        // it now, not a poll round later.
                        let asked = match request_waiting(&c.stream) {
                            true => self.answer(&mut c),
                            false => Asked::Nothing,
                        };
                        match asked {
                            Asked::Nothing => clients.push(c),
                            Asked::Gone => {}
                            Asked::Upgrade(exe) => return End::Upgrade(exe),
                        }
                    }
                }
                if clients.is_empty() {
                    idle_since = Instant::now();
                }
            }
        }
    }

    /// The keeper's socket is readable: if the keeper died, start another
    /// (without one, a crash of this server would end its runs).
    fn keeper_check(&self, listener: Option<&UnixListener>, clients: &[Client]) {
        let alive = self.keeper.borrow_mut().as_mut().is_some_and(|k| k.alive());
        if alive {
            return;
        }
        let n = self.keepers_started.get() + 1;
        self.keepers_started.set(n);
        if n > MAX_KEEPERS {
            tracing::error!("{MAX_KEEPERS} keepers died; serving on without one");
            *self.keeper.borrow_mut() = None;
            return;
        }
        tracing::warn!("the keeper is gone; starting another");
        let fds: Vec<_> = clients.iter().map(|c| c.stream.as_fd()).collect();
        let state = self.state.borrow().clone();
        let key = self.key_lock.borrow();
        let listening = key
            .as_ref()
            .zip(listener)
            .map(|(k, l)| (k.as_fd(), l.as_fd()));
        let k = start_keeper(self.mounted, self.run, &state, listening, &fds);
        drop(key);
        *self.keeper.borrow_mut() = k;
    }

    /// Same user only; the greeting waits for the client to say who it is.
    fn admit(&self, stream: UnixStream) -> Option<Client> {
        let peer =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
                .ok()?;
        if peer.uid() != self.uid {
            tracing::warn!(uid = peer.uid(), "refused a connection from another user");
            return None;
        }
        stream.set_nonblocking(false).ok()?;
        Some(Client {
            stream,
            pending: Vec::new(),
        })
    }

    fn greet(&self, c: &mut Client, what: Greeting) -> bool {
        let served = self.served.get();
        let hello = Hello {
            pid: std::process::id(),
            lower: self.lower.clone(),
            served,
            userns: self.userns.is_some(),
            stats: self.mounted.stats(),
            catalog: self.catalog.clone(),
            environment: self.shown_as.clone(),
            idle_s: self.idle.as_secs_f64(),
            notice_seq: self.mounted.notice_seq(),
            exe: self.exe.clone(),
        };
        let Ok(json) = serde_json::to_vec(&hello) else {
            return false;
        };
        match what {
            Greeting::Info => write_frame(&mut c.stream, &json).is_ok(),
            Greeting::Run => {
                let mut fds = Vec::new();
                fds.extend(self.userns);
                fds.push(self.mntns);
                match crate::sys::fdpass::send(&c.stream, &super::frame(&json), &fds) {
                    Ok(()) => {
                        tracing::debug!(served, "run connected");
                        self.served.set(served + 1);
                        true
                    }
                    Err(e) => {
                        tracing::debug!("greeting a run: {}", e.desc());
                        false
                    }
                }
            }
        }
    }

    /// Read what a run asks and answer it.
    fn answer(&self, c: &mut Client) -> Asked {
        let mut buf = [0u8; 256];
        let n = match c.stream.read(&mut buf) {
            Ok(0) | Err(_) => return Asked::Gone,
            Ok(n) => n,
        };
        c.pending.extend_from_slice(&buf[..n]);
        if c.pending.len() > 4096 {
            return Asked::Gone;
        }
        while let Some(end) = c.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = c.pending.drain(..=end).collect();
            let payload = match &line[..line.len() - 1] {
                b"run" => {
                    if !self.greet(c, Greeting::Run) {
                        return Asked::Gone;
                    }
                    continue;
                }
                b"info" => {
                    if !self.greet(c, Greeting::Info) {
                        return Asked::Gone;
                    }
                    continue;
                }
                l if l.starts_with(b"upgrade ") => {
                    let exe = PathBuf::from(std::ffi::OsStr::from_bytes(&l[8..]));
                    let ok = self.keeper.borrow().is_some() && exe.is_absolute();
                    let answer: &[u8] = if ok { b"ok" } else { b"no keeper" };
                    let _ = write_frame(&mut c.stream, answer);
                    if ok {
                        return Asked::Upgrade(exe);
                    }
                    continue;
                }
                b"compile" => {
                    // The feed's read end rides with the answer; none: a
                    // tree that predicts nothing.
                    let feed = self.mounted.compile_feed();
                    let fds: Vec<_> = feed.iter().map(|f| f.as_fd()).collect();
                    let answer: &[u8] = if feed.is_some() { b"ok" } else { b"none" };
                    if crate::sys::fdpass::send(&c.stream, &super::frame(answer), &fds).is_err() {
                        return Asked::Gone;
                    }
                    continue;
                }
                l if l.starts_with(b"entry ") => {
                    let words = String::from_utf8_lossy(&l[6..]).into_owned();
                    let found = words
                        .split_whitespace()
                        .filter_map(crate::remote::imports::decode)
                        .collect();
                    self.mounted.entry_imports(found);
                    b"ok".to_vec()
                }
                b"stats" => serde_json::to_vec(&self.mounted.stats()).unwrap_or_default(),
                l if l.starts_with(b"notices ") => {
                    let seq = std::str::from_utf8(&l[8..])
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    serde_json::to_vec(&self.mounted.notices_since(seq)).unwrap_or_default()
                }
                b"workset" => self.mounted.working_set().to_bytes(),
                _ => return Asked::Gone,
            };
            if write_frame(&mut c.stream, &payload).is_err() {
                return Asked::Gone;
            }
        }
        Asked::Nothing
    }
}

/// Bytes are waiting on `stream` (it would not block to read them).
fn request_waiting(stream: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    let flags = nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
    matches!(nix::sys::socket::recv(std::os::fd::AsRawFd::as_raw_fd(stream), &mut b, flags), Ok(n) if n > 0)
}
