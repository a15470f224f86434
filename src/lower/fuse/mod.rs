//! The virtual holotree: a catalog served read-only through FUSE.
//!
//! `mount` does the whole job without fusermount: open `/dev/fuse`,
//! `mount(2)` of type `fuse.vhrun` (nosuid, nodev, read-only), the INIT
//! handshake in the calling thread, then the server threads. The returned
//! [`MountedTree`] unmounts (lazily) and stops the server when dropped.
//!
//! Sequencing for the sandbox (see kernel-facts.md): call `mount` after
//! `unshare(CLONE_NEWNS[|CLONE_NEWUSER])` and `mount --make-rprivate /`
//! (they need a single-threaded process: `mount` starts the threads), and
//! before `unshare(CLONE_NEWPID)` or any `fork` of the task; mount the
//! overlay on top afterwards. The server threads run in the calling process
//! and must outlive every user of the mount; unmount the overlay first, then
//! drop the `MountedTree`.

mod fs;
pub mod notices;
pub mod stats;
pub mod workset;

pub use stats::{ReadMode, Stats};
pub use workset::{Prefetched, WorkingSet};

use crate::error::{Error, Refusal, Result};
use crate::lower::blobcache::BlobCache;
use crate::sys::handover::{BackingRecord, Inherited};
use crate::tree::summary::Facts;
use crate::tree::Tree;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Whether to hand open files to the kernel (FUSE passthrough).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PassthroughMode {
    /// Use it when the kernel supports it and we are root in the initial
    /// user namespace; otherwise serve reads.
    #[default]
    Auto,
    /// Always serve reads from vhrun.
    Off,
}

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Basename written at rewrite offsets (a restore's target directory
    /// name); must have the catalog identity's length when any file has
    /// rewrite offsets.
    pub target_name: String,
    /// Owner reported for every node, and the only user (with root) the
    /// kernel lets in (no allow_other).
    pub uid: u32,
    pub gid: u32,
    /// Server threads (at least 1).
    pub threads: usize,
    pub passthrough: PassthroughMode,
    /// Where users see the tree (a run's environment path, above the
    /// overlay), used in messages instead of the private mountpoint.
    pub shown_as: Option<PathBuf>,
    /// Keep what a successor needs to take the connection over
    /// ([`MountedTree::handover`], [`resume`]): warm servers.
    pub handover: bool,
}

impl MountOptions {
    /// Defaults for the calling user: 2 threads, passthrough when possible.
    pub fn for_caller(target_name: impl Into<String>) -> MountOptions {
        MountOptions {
            target_name: target_name.into(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            threads: 2,
            passthrough: PassthroughMode::Auto,
            shown_as: None,
            handover: false,
        }
    }
}

/// A live mount and its server threads.
#[derive(Debug)]
pub struct MountedTree {
    mountpoint: PathBuf,
    tree: Arc<Tree>,
    recorder: Arc<workset::Recorder>,
    counters: Arc<stats::Counters>,
    cache: Arc<BlobCache>,
    /// Readable (EOF) once the session has ended.
    ended: OwnedFd,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    unmounted: bool,
    /// A duplicate of the connection and the record of its backing ids,
    /// for a successor.
    kept: Option<(OwnedFd, Arc<BackingRecord>)>,
    offered: Arc<std::sync::atomic::AtomicU64>,
}

/// What a new server needs to serve a live connection whose server died
/// (`lower::server::keeper`).
#[derive(Debug)]
pub struct Handover {
    /// The connection: a duplicate of its `/dev/fuse` descriptor.
    pub fuse: OwnedFd,
    /// The passthrough backing ids it holds, by inode (a memfd).
    pub record: OwnedFd,
    /// What the kernel offered at INIT (fuser `InitFlags` bits).
    pub offered: u64,
    /// Servers of the connection before the one that takes it now.
    pub generation: u64,
}

/// What ended [`MountedTree::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// One of the signals asked for arrived.
    Signal(i32),
    /// The file system went away (unmounted from outside).
    Unmounted,
}

/// Signals caught into self-pipes, for [`MountedTree::wait`]. Create it
/// before mounting, so a signal that arrives early is not lost (or fatal).
/// While it lives, the signals do not take their default action.
#[derive(Debug)]
pub struct SignalWatch {
    pipes: Vec<(i32, OwnedFd, signal_hook::SigId)>,
}

impl SignalWatch {
    pub fn new(signals: &[i32]) -> Result<SignalWatch> {
        let mut pipes = Vec::with_capacity(signals.len());
        for &s in signals {
            // One pipe per signal: the readable one says which arrived.
            let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                .map_err(|e| Error::sys("pipe2", e))?;
            let id = signal_hook::low_level::pipe::register(s, tx)
                .map_err(|e| Error::Internal(format!("catching signal {s}: {e}")))?;
            pipes.push((s, rx, id));
        }
        Ok(SignalWatch { pipes })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        for (_, _, id) in self.pipes.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// The mount source (`findmnt` SOURCE) of the mounts a server process
/// makes: names the process, so a watchdog can tell its mount apart.
pub fn mount_source(server_pid: u32) -> String {
    format!("vhrun:{server_pid}")
}

/// Check that `target` can replace the catalog identity in place.
pub fn check_target_name(tree: &impl Facts, target: &str) -> Result<()> {
    if target.is_empty() || target.contains('/') || target == "." || target == ".." {
        return Err(Error::Usage(format!("invalid target name {target:?}")));
    }
    if tree.has_rewrites() && target.len() != tree.identity().len() {
        return Err(Error::Usage(format!(
            "target name {target:?} has {} bytes but catalog {} relocates files in place \
             with its identity {:?}: the target name (by default the mount point's \
             basename) must have {} bytes",
            target.len(),
            tree.catalog_path().display(),
            tree.identity(),
            tree.identity().len(),
        )));
    }
    Ok(())
}

/// Mount `tree` at `mountpoint` (an existing directory) and start serving.
pub fn mount(
    tree: Arc<Tree>,
    cache: BlobCache,
    mountpoint: &Path,
    opts: &MountOptions,
) -> Result<MountedTree> {
    let span = tracing::info_span!("fuse.mount", mountpoint = %mountpoint.display());
    let _g = span.enter();
    check_target_name(&tree, &opts.target_name)?;
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map_err(|e| Error::refused(Refusal::DevFuse, format!("/dev/fuse: {e}")))?;
    let data = format!(
        "fd={},rootmode=40000,user_id={},group_id={}",
        dev.as_raw_fd(),
        opts.uid,
        opts.gid
    );
    nix::mount::mount(
        Some(mount_source(std::process::id()).as_str()),
        mountpoint,
        Some("fuse.vhrun"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
    .map_err(|e| match e {
        // The kernel's answer to "not allowed here" (EPERM) or "no fuse
        // filesystem" (ENODEV): nothing wrong with the mountpoint itself.
        nix::errno::Errno::EPERM | nix::errno::Errno::EACCES | nix::errno::Errno::ENODEV => {
            Error::refused(
                Refusal::FuseMount,
                format!("mounting FUSE at {}: {}", mountpoint.display(), e.desc()),
            )
        }
        _ => Error::io(mountpoint, std::io::Error::from(e)),
    })?;
    let handed = if opts.handover {
        let record = BackingRecord::create(tree.len() as u64)
            .map_err(|e| Error::io("memfd (backing ids)", e))?;
        let fuse = dev
            .try_clone()
            .map_err(|e| Error::io("/dev/fuse (a duplicate)", e))?;
        Some((OwnedFd::from(fuse), Arc::new(record)))
    } else {
        None
    };
    let parts = Parts::new(tree, cache, mountpoint, opts, handed, Inherited::default());
    let dev_fd = dev.as_raw_fd();
    let session =
        match fuser::Session::from_fd(parts.fs, OwnedFd::from(dev), parts.acl, parts.config) {
            Ok(s) => s,
            Err(e) => {
                let _ = nix::mount::umount2(mountpoint, MntFlags::MNT_DETACH);
                return Err(Error::refused(
                    Refusal::FuseMount,
                    format!(
                        "FUSE handshake at {}: {e} (the kernel refused the connection)",
                        mountpoint.display()
                    ),
                ));
            }
        };
    start(session, dev_fd, parts.tree_parts, mountpoint).inspect_err(|_| {
        let _ = nix::mount::umount2(mountpoint, MntFlags::MNT_DETACH);
    })
}

/// Serve the live connection of `h`, mounted at `mountpoint` by a server
/// that died, in its place: the requests it had read and not answered
/// are sent again (`FUSE_NOTIFY_RESEND`, Linux >= 6.9). Nothing is
/// mounted or unmounted here; a failure leaves the connection to the
/// caller, whose exit ends it when no one else holds it.
pub fn resume(
    tree: Arc<Tree>,
    cache: BlobCache,
    mountpoint: &Path,
    opts: &MountOptions,
    h: Handover,
) -> Result<MountedTree> {
    let span = tracing::info_span!("fuse.resume", mountpoint = %mountpoint.display());
    let _g = span.enter();
    check_target_name(&tree, &opts.target_name)?;
    let record = BackingRecord::inherit(h.record);
    let inherited = Inherited::of(&record);
    tracing::debug!(inherited = inherited.len(), "backing ids left open");
    let fuse = h.fuse;
    let parts = Parts::new(
        tree,
        cache,
        mountpoint,
        opts,
        Some((
            fuse.try_clone()
                .map_err(|e| Error::io("/dev/fuse (a duplicate)", e))?,
            Arc::new(record),
        )),
        inherited,
    );
    parts
        .tree_parts
        .counters
        .takeovers
        .store(h.generation, std::sync::atomic::Ordering::Relaxed);
    // fuser's session starts with an INIT handshake, which a live
    // connection never sends again: it gets one written to a socket,
    // then the connection in the socket's place.
    let (ours, theirs) =
        crate::sys::fdpass::seqpacket_pair().map_err(|e| Error::sys("socketpair", e))?;
    nix::unistd::write(&ours, &synthetic_init(h.offered))
        .map_err(|e| Error::sys("write (INIT)", e))?;
    let session_fd = theirs.as_raw_fd();
    let session = fuser::Session::from_fd(parts.fs, theirs, parts.acl, parts.config)
        .map_err(|e| Error::Internal(format!("taking the FUSE connection over: {e}")))?;
    drop(ours);
    crate::sys::handover::adopt_session_fd(session.as_fd(), fuse.as_fd())
        .map_err(|e| Error::sys("dup3 (the FUSE connection)", e))?;
    resend(fuse.as_fd())?;
    start(session, session_fd, parts.tree_parts, mountpoint)
}

/// FUSE_NOTIFY_RESEND: every request the connection's servers read and
/// did not answer goes back to the queue.
fn resend(fuse: std::os::fd::BorrowedFd<'_>) -> Result<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    let mut msg = Vec::with_capacity(16);
    msg.extend_from_slice(&16u32.to_le_bytes());
    msg.extend_from_slice(&FUSE_NOTIFY_RESEND.to_le_bytes());
    msg.extend_from_slice(&0u64.to_le_bytes());
    nix::unistd::write(fuse, &msg).map(|_| ()).map_err(|e| {
        Error::unavailable(
            "cannot take the FUSE connection over",
            format!(
                "the kernel refused FUSE_NOTIFY_RESEND ({}; it needs Linux >= 6.9)",
                e.desc()
            ),
        )
    })
}

/// An INIT request as the kernel sends it, offering `offered`.
fn synthetic_init(offered: u64) -> Vec<u8> {
    const FUSE_INIT: u32 = 26;
    const FUSE_INIT_EXT: u64 = 1 << 30;
    let mut m = Vec::with_capacity(104);
    // fuse_in_header
    m.extend_from_slice(&104u32.to_le_bytes());
    m.extend_from_slice(&FUSE_INIT.to_le_bytes());
    m.extend_from_slice(&1u64.to_le_bytes()); // unique
    m.extend_from_slice(&0u64.to_le_bytes()); // nodeid
    m.extend_from_slice(&[0u8; 16]); // uid, gid, pid, padding
                                     // fuse_init_in: 7.40, fuser's own version
    m.extend_from_slice(&7u32.to_le_bytes());
    m.extend_from_slice(&40u32.to_le_bytes());
    m.extend_from_slice(&(128u32 << 10).to_le_bytes()); // max_readahead
    m.extend_from_slice(&((offered as u32) | FUSE_INIT_EXT as u32).to_le_bytes());
    m.extend_from_slice(&((offered >> 32) as u32).to_le_bytes());
    m.extend_from_slice(&[0u8; 44]);
    m
}

/// What a session is made of.
struct Parts {
    fs: fs::VhFs,
    acl: fuser::SessionACL,
    config: fuser::Config,
    tree_parts: TreeParts,
}

/// What the [`MountedTree`] keeps of it.
struct TreeParts {
    tree: Arc<Tree>,
    recorder: Arc<workset::Recorder>,
    counters: Arc<stats::Counters>,
    cache: Arc<BlobCache>,
    kept: Option<(OwnedFd, Arc<BackingRecord>)>,
    offered: Arc<std::sync::atomic::AtomicU64>,
}

impl Parts {
    fn new(
        tree: Arc<Tree>,
        cache: BlobCache,
        mountpoint: &Path,
        opts: &MountOptions,
        kept: Option<(OwnedFd, Arc<BackingRecord>)>,
        inherited: Inherited,
    ) -> Parts {
        let counters = Arc::new(stats::Counters::for_tree(tree.len()));
        let recorder = Arc::new(workset::Recorder::default());
        let cache = Arc::new(cache);
        let handed = kept.as_ref().map(|(_, record)| fs::Handed {
            record: record.clone(),
            inherited,
        });
        let fs = fs::VhFs::new(
            tree.clone(),
            cache.clone(),
            opts.target_name.clone(),
            opts.uid,
            opts.gid,
            opts.shown_as
                .clone()
                .unwrap_or_else(|| mountpoint.to_path_buf()),
            opts.passthrough == PassthroughMode::Auto,
            counters.clone(),
            recorder.clone(),
            handed,
        );
        let offered = fs.offered.clone();
        let mut config = fuser::Config::default();
        config.n_threads = Some(opts.threads.max(1));
        // A successor finds the requests in flight on the descriptors that
        // outlive a server: cloned ones die with it, and the kernel ends
        // what was read on them (ECONNABORTED).
        config.clone_fd = opts.threads > 1 && !opts.handover;
        // The kernel already admits only user_id/group_id (no allow_other);
        // fuser's own uid filter would also reject root.
        config.acl = fuser::SessionACL::All;
        Parts {
            fs,
            acl: config.acl,
            config,
            tree_parts: TreeParts {
                tree,
                recorder,
                counters,
                cache,
                kept,
                offered,
            },
        }
    }
}

/// Start the server threads of `session`, whose descriptor is `dev_fd`.
fn start(
    session: fuser::Session<fs::VhFs>,
    dev_fd: std::os::fd::RawFd,
    parts: TreeParts,
    mountpoint: &Path,
) -> Result<MountedTree> {
    let (ended, ended_tx) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    let ended_tx_fd = ended_tx.as_raw_fd();
    // The server threads get a descriptor table of their own, and the
    // caller's table drops /dev/fuse. Why: a thread of this process that
    // uses the mount (prefetch, the overlay mount, PATH lookups) and is
    // waiting for an answer when the process is SIGKILLed waits
    // uninterruptibly for a server that is gone; the kernel only aborts
    // the connection when the last /dev/fuse descriptor closes, which that
    // thread's table would prevent forever (a process stuck in D state
    // with its namespace and mounts). With the tables split, the server
    // threads' exit closes /dev/fuse and releases such a waiter. (A warm
    // server keeps a duplicate for its successor: it never uses its own
    // mount.)
    let (split_tx, split_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("vhrun-fuse".into())
        .spawn(move || {
            let split = nix::sched::unshare(nix::sched::CloneFlags::CLONE_FILES);
            let _ = split_tx.send(split.is_ok());
            let r = session.run();
            drop(ended_tx);
            r
        })
        .map_err(|e| Error::spawn("the FUSE server thread", e))?;
    match split_rx.recv() {
        // Our copies only: the server's table keeps its own (and the end
        // of the session is still seen as EOF on `ended`).
        Ok(true) => {
            let _ = nix::unistd::close(dev_fd);
            let _ = nix::unistd::close(ended_tx_fd);
        }
        _ => tracing::warn!(
            "the FUSE server shares this process's descriptor table: a SIGKILL while \
             vhrun itself reads the tree could leave the process hanging"
        ),
    }
    Ok(MountedTree {
        mountpoint: mountpoint.to_path_buf(),
        tree: parts.tree,
        recorder: parts.recorder,
        counters: parts.counters,
        cache: parts.cache,
        ended,
        thread: Some(thread),
        unmounted: false,
        kept: parts.kept,
        offered: parts.offered,
    })
}

/// Serve `tree` at `mountpoint` while `f` runs, then unmount: `f`'s
/// result and the final counters. A panic in `f` still unmounts (the
/// mount's drop); a SIGKILL does not, so mount in a private mount
/// namespace (`sandbox::namespaces::enter`) when nothing may be left.
pub fn serve_while<R>(
    tree: Arc<Tree>,
    cache: BlobCache,
    mountpoint: &Path,
    opts: &MountOptions,
    f: impl FnOnce(&MountedTree) -> R,
) -> Result<(R, Stats)> {
    let mounted = mount(tree, cache, mountpoint, opts)?;
    let r = f(&mounted);
    let stats = mounted.unmount()?;
    Ok((r, stats))
}

impl MountedTree {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Duplicates of what a successor needs, if this mount keeps them
    /// (`MountOptions::handover`).
    pub fn handover(&self) -> Option<Handover> {
        let (fuse, record) = self.kept.as_ref()?;
        Some(Handover {
            fuse: fuse.try_clone().ok()?,
            record: record.as_fd().try_clone_to_owned().ok()?,
            offered: self.offered.load(std::sync::atomic::Ordering::Relaxed),
            generation: self
                .counters
                .takeovers
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Counters so far (cheap: a few atomic loads).
    pub fn stats(&self) -> Stats {
        Stats::from(
            &self.counters,
            self.cache.stats(),
            self.cache.remote().map(|r| r.stats()).unwrap_or_default(),
        )
    }

    pub fn read_mode(&self) -> ReadMode {
        self.counters.read_mode()
    }

    /// Tell a lazily served tree what a run's command imports
    /// (`remote::lazy::Lazy::entry_imports`).
    pub fn entry_imports(&self, found: Vec<crate::remote::imports::Import>) {
        if let Some(r) = self.cache.remote() {
            r.entry_imports(found);
        }
    }

    /// A lazily served tree's feed of predicted modules
    /// (`remote::compile`), for one run's helper.
    pub fn compile_feed(&self) -> Option<std::os::fd::OwnedFd> {
        self.cache.remote()?.compile_feed()
    }

    pub fn tree(&self) -> &Arc<Tree> {
        &self.tree
    }

    /// Every path looked up and directory listed through this mount so far
    /// (save it with `WorkingSet::save` at the end of a run).
    pub fn working_set(&self) -> WorkingSet {
        self.recorder.snapshot(&self.tree)
    }

    /// Warm the kernel's caches of this mount with `ws` (a previous run's
    /// working set) from `threads` threads; call before starting the task.
    pub fn prefetch(&self, ws: &WorkingSet, threads: usize) -> Prefetched {
        let span = tracing::info_span!("fuse.prefetch", paths = ws.lookups.len());
        let _g = span.enter();
        ws.prefetch(&self.mountpoint, threads)
    }

    /// The number the next error notice gets (see [`notices`]).
    pub fn notice_seq(&self) -> u64 {
        self.counters.notices.next_seq()
    }

    /// Error notices numbered `seq` or later, once per file.
    pub fn notices_since(&self, seq: u64) -> Vec<String> {
        self.counters.notices.since(seq)
    }

    /// True while the server still runs (the mount was not torn down).
    pub fn is_serving(&self) -> bool {
        !self.poll_ended(0)
    }

    fn poll_ended(&self, timeout_ms: u16) -> bool {
        let mut fds = [PollFd::new(self.ended.as_fd(), PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::from(timeout_ms)), Ok(n) if n > 0)
    }

    /// Block until one of the watched signals arrives or the mount goes away.
    pub fn wait(&self, signals: &SignalWatch) -> Result<WaitOutcome> {
        loop {
            let mut fds: Vec<PollFd> = signals
                .pipes
                .iter()
                .map(|(_, rx, _)| PollFd::new(rx.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(self.ended.as_fd(), PollFlags::POLLIN));
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("poll", e)),
                Ok(_) => {}
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            let n = signals.pipes.len();
            if let Some(i) = fds[..n].iter().position(ready) {
                return Ok(WaitOutcome::Signal(signals.pipes[i].0));
            }
            if ready(&fds[n]) {
                return Ok(WaitOutcome::Unmounted);
            }
        }
    }

    /// Unmount (lazily: processes still inside keep working until they
    /// leave) and stop the server. Returns the final counters. If the mount
    /// is still in use (an overlay on top, open files), the server threads
    /// are left to finish when the last user goes.
    pub fn unmount(mut self) -> Result<Stats> {
        self.teardown()?;
        Ok(self.stats())
    }

    fn teardown(&mut self) -> Result<()> {
        if self.unmounted {
            return Ok(());
        }
        self.unmounted = true;
        let r = match nix::mount::umount2(&self.mountpoint, MntFlags::MNT_DETACH) {
            // EINVAL/ENOENT: not a mount point any more (unmounted from outside,
            // or the sandbox already removed it).
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(Error::io(&self.mountpoint, std::io::Error::from(e))),
        };
        if self.poll_ended(2000) {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        } else {
            tracing::warn!(
                "{}: still in use after unmounting; the FUSE server ends with its last user",
                self.mountpoint.display()
            );
        }
        r
    }
}

impl Drop for MountedTree {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            tracing::warn!("{e}");
        }
    }
}
