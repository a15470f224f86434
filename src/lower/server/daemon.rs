//! The server side: `vhrun __serve`, started by the first run that needs
//! it (see the parent module for the why and the protocol).

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
use std::os::fd::AsFd;
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
}

/// Detach and serve. Returns in the starter's child at once (exit 0); the
/// server itself runs in a grandchild, so that the starting run never has
/// it as a child (its reaper would wait for or kill it).
pub fn serve(cfg: &ServeConfig) -> Result<i32> {
    namespaces::ensure_single_threaded()?;
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
    let userns = if id.rootless {
        Some(std::fs::File::open("/proc/self/ns/user").at("/proc/self/ns/user")?)
    } else {
        None
    };
    let mntns = std::fs::File::open("/proc/self/ns/mnt").at("/proc/self/ns/mnt")?;

    let mut tree = Tree::load_indexed(&cfg.catalog, &cfg.home.index())?;
    tree.detach_from_index();
    let tree = Arc::new(tree);
    let lib = Hololib::new(&cfg.hololib);
    let remote = match &cfg.origin {
        Some((url, batching)) => Some(Arc::new(Lazy::connect(
            url,
            *batching,
            lib.clone(),
            tree.clone(),
            &cfg.home,
            &cfg.robocorp_home,
        )?)),
        None => None,
    };
    let blobs = BlobCache::new(lib, &cfg.blobs).with_remote(remote);
    // A run directory of its own: gc sees the catalog in use, and a
    // crashed server's directory is removed by the next one.
    let run = RunDir::create(&dir, &cfg.catalog.to_string_lossy())?;
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
    };
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
    tracing::info!(
        pid = std::process::id(),
        lower = %run.lower().display(),
        idle = ?cfg.idle,
        "warm server ready for {}",
        cfg.catalog.display()
    );
    announce_ready();

    let state = Served {
        mounted: &mounted,
        lower: run.lower(),
        catalog: cfg.catalog.clone(),
        shown_as: cfg.shown_as.clone(),
        idle: cfg.idle,
        served: std::cell::Cell::new(0),
        userns: userns.as_ref().map(|f| f.as_fd()),
        mntns: mntns.as_fd(),
        uid: id.uid,
        image_build: std::cell::RefCell::new(image_build),
    };
    // No new run once it goes: the socket is removed and the key's lock
    // let go, so the next run starts a server of its own at once (those
    // queued on the closed listener are turned away and do the same).
    let mut key_lock = Some(key_lock);
    let mut withdraw = || {
        if std::fs::metadata(&sock).is_ok_and(|m| m.ino() == sock_ino) {
            let _ = std::fs::remove_file(&sock);
        }
        key_lock.take();
    };
    let why = state.run(listener, &signals, cfg.idle, &mut withdraw);
    tracing::info!("warm server exits: {why}");
    withdraw();
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
        listener: UnixListener,
        signals: &SignalFd,
        idle: Duration,
        withdraw: &mut dyn FnMut(),
    ) -> String {
        let mut listener = Some(listener);
        let mut clients: Vec<Client> = Vec::new();
        let mut idle_since = Instant::now();
        let mut draining: Option<String> = None;
        loop {
            if let (Some(why), true) = (&draining, clients.is_empty()) {
                return why.clone();
            }
            let served = self.served.get();
            if served >= IMAGE_AFTER_RUNS && clients.is_empty() {
                if let Some(start) = self.image_build.borrow_mut().take() {
                    start();
                }
            }
            if !self.mounted.is_serving() {
                return "the tree was unmounted".into();
            }
            // The run that started the server is on its way: wait for it
            // even with a zero idle time.
            let idle = if served == 0 {
                idle.max(FIRST_RUN_GRACE)
            } else {
                idle
            };
            if clients.is_empty() && idle_since.elapsed() >= idle {
                return format!("no run for {idle:?}");
            }
            // Wake at least once a second to notice an unmount.
            let wait = if clients.is_empty() {
                idle.saturating_sub(idle_since.elapsed())
            } else {
                Duration::from_secs(1)
            }
            .min(Duration::from_secs(1));
            // [signals, listener (while accepting), clients...]
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
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
                Err(e) => return format!("poll: {}", e.desc()),
            }
            let ready = |i: usize| {
                fds.get(i)
                    .and_then(|f| f.revents())
                    .is_some_and(|r| !r.is_empty())
            };
            let signalled = ready(0);
            let listener_ready = listener.is_some() && ready(1);
            let readable: Vec<usize> = (0..clients.len())
                .filter(|&i| ready(i + first_client))
                .collect();
            drop(fds);
            if signalled {
                if let Ok(Some(s)) = signals.read_signal() {
                    let why = format!("signal {}", s.ssi_signo);
                    if draining.is_some() {
                        return why;
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
                if !self.answer(&mut clients[i]) {
                    clients.swap_remove(i);
                    if clients.is_empty() {
                        idle_since = Instant::now();
                    }
                }
            }
            if let Some(l) = listener.as_ref().filter(|_| listener_ready) {
                while let Ok((stream, _)) = l.accept() {
                    if let Some(c) = self.admit(stream) {
                        clients.push(c);
                    }
                }
            }
        }
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

    /// Read what a run asks and answer it; false once it is gone.
    fn answer(&self, c: &mut Client) -> bool {
        let mut buf = [0u8; 256];
        let n = match c.stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        c.pending.extend_from_slice(&buf[..n]);
        if c.pending.len() > 4096 {
            return false;
        }
        while let Some(end) = c.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = c.pending.drain(..=end).collect();
            let payload = match &line[..line.len() - 1] {
                b"run" => {
                    if !self.greet(c, Greeting::Run) {
                        return false;
                    }
                    continue;
                }
                b"info" => {
                    if !self.greet(c, Greeting::Info) {
                        return false;
                    }
                    continue;
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
                _ => return false,
            };
            if write_frame(&mut c.stream, &payload).is_err() {
                return false;
            }
        }
        true
    }
}
