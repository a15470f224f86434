//! The environment's read-only tree: the overlay's lower layer, and every
//! way vhrun has of providing it.
//!
//! | way | what the run mounts | used when |
//! | --- | --- | --- |
//! | [`Way::Image`] | the catalog's EROFS image and its data-only layers | root, and `vhrun prepare` or a warm server built the image |
//! | [`Way::Server`] | nothing: it joins the catalog's warm FUSE server | a server could be reached or started |
//! | [`Way::Fuse`] | a FUSE mount of its own, served by its threads | otherwise, and when an image fails to mount |
//! | [`Way::Copy`] | nothing: the task runs in a restored copy of the environment ([`copy`]) | `--mode copy`, or `auto` on a machine that refuses a step of the others ([`probe`]) |
//!
//! A run calls [`Lower::choose`] before any namespace exists (connecting
//! to a server is a plain socket call), hands [`Lower::mount`] to the
//! sandbox, gets the [`Served`] guard back after the sandbox's teardown,
//! and asks [`Served::finish`] for what `--stats` reports. A copy-mode run
//! instead prepares its space with [`copy::prepare`] and runs in place
//! (`crate::sandbox::run_in_place`); so does a run whose sandbox the
//! machine refused before the task started (`crate::error::Refusal`). Each way's own
//! module holds its mechanics: [`image`] (and the [`erofs`] writer behind
//! it), [`server`], [`fuse`] (and the [`blobcache`] every FUSE tree reads
//! through).

pub mod blobcache;
pub mod copy;
pub mod erofs;
pub mod filllock;
pub mod fuse;
pub mod host;
pub mod image;
pub mod probe;
pub mod server;

use crate::error::{Error, Result};
use crate::home::Home;
use crate::remote::lazy::{Batching, Lazy, RemoteStats};
use crate::sandbox::{Identity, LowerTarget, Mounted};
use crate::tree::summary::{Facts, TreeRef};
use crate::tree::Tree;
use blobcache::BlobCache;
use fuse::{MountOptions, MountedTree, PassthroughMode, WorkingSet};
use image::Image;
use server::Connection;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Which ways runs may take, and how (the `VHRUN_*` switches, read by
/// `commands`).
#[derive(Debug, Clone)]
pub struct Options {
    /// Mount a built kernel image instead of serving FUSE (`VHRUN_IMAGE`).
    pub image: bool,
    /// Use the catalog's warm server (`VHRUN_SERVER`).
    pub server: bool,
    /// How long a server started now waits for its next run
    /// (`VHRUN_SERVER_IDLE`).
    pub server_idle: Duration,
    /// FUSE passthrough where the kernel allows it (`VHRUN_PASSTHROUGH`).
    pub passthrough: PassthroughMode,
    /// Replaying the recorded working set on a cold tree (`VHRUN_PREFETCH`).
    pub prefetch: Prefetch,
    /// A lazily served tree's predicted modules compiled ahead of the task
    /// (`remote::compile`; `VHRUN_COMPILE_AHEAD`).
    pub compile_ahead: bool,
    /// Virtual holotree or a copy (`--mode`, `VHRUN_MODE`).
    pub mode: Mode,
}

/// How a run gets its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The virtual holotree where the machine allows it, else a copy.
    #[default]
    Auto,
    /// The virtual holotree or nothing (a refusal is exit 69).
    Virtual,
    /// A restored copy of the environment, as rcc runs it.
    Copy,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "auto" => Ok(Mode::Auto),
            "virtual" => Ok(Mode::Virtual),
            "copy" => Ok(Mode::Copy),
            _ => Err(format!("{s:?}: expected auto, virtual or copy")),
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            image: true,
            server: true,
            server_idle: Duration::from_secs(server::DEFAULT_IDLE),
            passthrough: PassthroughMode::Auto,
            prefetch: Prefetch::Alongside,
            compile_ahead: true,
            mode: Mode::Auto,
        }
    }
}

/// When a cold tree replays what the same command opened last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefetch {
    /// In a thread, while the task's exec and interpreter start-up run:
    /// a `python -c pass` 5 ms sooner, the heavy import no slower than
    /// replaying first.
    #[default]
    Alongside,
    /// Before the task starts (diagnosis).
    Before,
    Off,
}

/// What a run wants served.
#[derive(Debug)]
pub struct Source {
    pub home: Home,
    /// Loaded whole only where this process serves it.
    pub tree: Arc<TreeRef>,
    pub blobs: BlobCache,
    /// Basename written at relocation offsets (the space's name).
    pub target_name: String,
    /// Where the environment appears, above the overlay.
    pub shown_as: PathBuf,
    /// Where this command's working set is recorded and replayed from.
    pub workset_path: PathBuf,
}

/// A served tree named by paths, as the detached children of vhrun that
/// serve or image it get it on their command line (`vhrun __serve`,
/// `vhrun __image`; `cli::TreeArgs` parses the same flags).
#[derive(Debug, Clone)]
pub struct TreePaths {
    pub catalog: PathBuf,
    pub hololib: PathBuf,
    pub blobs: PathBuf,
    pub target: String,
    /// A lazily served tree's origin, and how it batches.
    pub origin: Option<(String, Batching)>,
}

impl TreePaths {
    pub fn argv(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec![
            "--catalog".into(),
            self.catalog.clone().into(),
            "--hololib".into(),
            self.hololib.clone().into(),
            "--blobs".into(),
            self.blobs.clone().into(),
            "--target".into(),
            self.target.clone().into(),
        ];
        if let Some((url, batching)) = &self.origin {
            v.extend([
                "--origin".into(),
                url.into(),
                "--lazy-batch".into(),
                batching.as_str().into(),
            ]);
        }
        v
    }

    /// The paths of what `blobs` serves (its origin included).
    pub fn of(catalog: &Path, blobs: &BlobCache, target: &str) -> TreePaths {
        TreePaths {
            catalog: catalog.to_path_buf(),
            hololib: blobs.hololib().root.clone(),
            blobs: blobs.root().to_path_buf(),
            target: target.to_string(),
            origin: blobs.remote().map(|r| (r.url().to_string(), r.batching())),
        }
    }
}

/// The way a run's tree is provided.
#[derive(Debug)]
pub enum Way {
    Image(Image),
    /// Boxed: a connection carries its greeting and descriptors.
    Server(Box<Connection>),
    Fuse,
    /// Run in a restored copy; `because` is the refusal that led here in
    /// `auto` mode (`None`: asked for).
    Copy {
        because: Option<Error>,
    },
}

/// A chosen way, with what it serves.
#[derive(Debug)]
pub struct Lower {
    source: Source,
    opts: Options,
    way: Way,
    /// What this command touched last time, if recorded.
    previous: Option<WorkingSet>,
}

impl Lower {
    /// The image if one is built (root only), else the warm server, else a
    /// FUSE mount of the run's own; a copy when asked, or in `auto` mode
    /// when the machine refuses what those need. `Err` only in `virtual`
    /// mode, with the refusal.
    pub fn choose(source: Source, opts: &Options, id: &Identity) -> Result<Lower> {
        let way = match opts.mode {
            Mode::Copy => Way::Copy { because: None },
            Mode::Virtual => Self::virtual_way(&source, opts, id)?,
            Mode::Auto => match Self::virtual_way(&source, opts, id) {
                Ok(way) => way,
                Err(e) if e.refusal().is_some() => Way::Copy { because: Some(e) },
                Err(e) => return Err(e),
            },
        };
        // A copy replays nothing: its files are on disk already.
        let previous = match way {
            Way::Copy { .. } => None,
            _ => WorkingSet::load(&source.workset_path),
        };
        Ok(Lower {
            source,
            opts: opts.clone(),
            way,
            previous,
        })
    }

    /// What the machine refused, when the way is a copy because of it.
    pub fn copy(&self) -> Option<Option<&Error>> {
        match &self.way {
            Way::Copy { because } => Some(because.as_ref()),
            _ => None,
        }
    }

    fn virtual_way(source: &Source, opts: &Options, id: &Identity) -> Result<Way> {
        if let Some(image) = Self::image(source, opts, id) {
            return Ok(Way::Image(image));
        }
        let req = server::Request {
            home: &source.home,
            tree: &source.tree,
            blobs: &source.blobs,
            target_name: &source.target_name,
            shown_as: &source.shown_as,
            passthrough: opts.passthrough,
            idle: opts.server_idle,
            identity: *id,
        };
        // A warm server already running has proved FUSE and namespaces;
        // before starting one, or mounting for this run, ask the machine.
        if opts.server {
            if let Some(conn) = server::connect_running(&req) {
                return Ok(Way::Server(Box::new(conn)));
            }
        }
        probe::virtual_allowed(id)?;
        if opts.server {
            match server::connect_or_spawn(&req) {
                Ok(conn) => return Ok(Way::Server(Box::new(conn))),
                Err(e) => {
                    tracing::warn!("no warm server ({e}); mounting the tree for this run only")
                }
            }
        }
        Ok(Way::Fuse)
    }

    fn image(source: &Source, opts: &Options, id: &Identity) -> Option<Image> {
        if id.rootless || !opts.image {
            return None;
        }
        let who = image::For {
            target_name: &source.target_name,
            uid: id.uid,
            gid: id.gid,
        };
        let found = Image::find(&source.home, &source.tree, who)?;
        found.touch();
        Some(found)
    }

    /// Tell a lazily served tree what the run's commands import, to fetch
    /// ahead (`remote::imports::entry_imports`).
    pub fn entry_imports(&mut self, found: Vec<crate::remote::imports::Import>) {
        if found.is_empty() {
            return;
        }
        match &mut self.way {
            Way::Server(conn) => conn.entry_imports(&found),
            Way::Fuse => {
                if let Some(r) = self.source.blobs.remote() {
                    r.entry_imports(found);
                }
            }
            Way::Image(_) | Way::Copy { .. } => {}
        }
    }

    /// A feed of the modules a lazily served tree predicts the task will
    /// import, for a helper that compiles them ahead (`remote::compile`):
    /// from the warm server, or from this process's own tree.
    pub fn compile_feed(&mut self) -> Option<std::os::fd::OwnedFd> {
        match &mut self.way {
            Way::Server(conn) => conn.compile_feed(),
            Way::Fuse => self.source.blobs.remote()?.compile_feed(),
            Way::Image(_) | Way::Copy { .. } => None,
        }
    }

    /// The warm server's namespaces, for the sandbox to join (once).
    pub fn namespaces(&mut self) -> Option<crate::sandbox::namespaces::Joined> {
        match &mut self.way {
            Way::Server(conn) => conn.take_namespaces(),
            _ => None,
        }
    }

    /// Mount the tree at `target.mountpoint`, in the run's namespaces
    /// (joining a server: it is there already). The sandbox calls this.
    pub fn mount(self, target: &LowerTarget) -> Result<Mounted<Served>> {
        let Lower {
            source,
            opts,
            way,
            previous,
        } = self;
        let startup = match (source.blobs.remote(), &previous) {
            (Some(remote), Some(ws)) => fetch_working_set(remote, &*source.tree.full()?, ws),
            _ => Default::default(),
        };
        let Source {
            tree,
            blobs,
            target_name,
            shown_as,
            workset_path,
            ..
        } = source;
        // The run's own handle on the cache the tree reads through, for
        // decoding ahead (a lazily served tree fetched its working set
        // above; what it lacks is fetched by the opens that need it).
        let ahead =
            (previous.is_some() && blobs.remote().is_none() && opts.prefetch != Prefetch::Off)
                .then(|| BlobCache::new(blobs.hololib().clone(), blobs.root()));
        let ahead_target = target_name.clone();
        let fuse = |blobs| {
            let mount_opts = MountOptions {
                target_name,
                uid: target.uid,
                gid: target.gid,
                threads: 2,
                passthrough: if target.rootless {
                    PassthroughMode::Off
                } else {
                    opts.passthrough
                },
                shown_as: Some(shown_as),
                handover: false,
            };
            fuse::mount(tree.full()?, blobs, &target.mountpoint, &mount_opts).map(By::Fuse)
        };
        let mut data_layers = Vec::new();
        let by = match way {
            Way::Image(image) => match image.mount(&target.mountpoint) {
                Ok(()) => {
                    data_layers = image.data_layers();
                    By::Image(image.dir)
                }
                Err(e) => {
                    tracing::warn!("{e}; serving the tree with FUSE instead");
                    fuse(blobs)?
                }
            },
            Way::Server(conn) => By::Server(conn),
            Way::Fuse => fuse(blobs)?,
            Way::Copy { .. } => {
                return Err(Error::Internal(
                    "a run from a copy has no tree to mount (a bug in vhrun)".into(),
                ))
            }
        };
        // A warm server's kernel caches already hold what earlier runs
        // touched, and an image needs no replay: replaying is for a tree
        // nobody has read yet.
        let cold = match &by {
            By::Image(_) => false,
            By::Server(conn) => conn.fresh(),
            By::Fuse(_) => true,
        };
        let replay = previous
            .as_ref()
            .filter(|_| cold)
            .and_then(|ws| replay(ws.clone(), &target.mountpoint, opts.prefetch));
        let ahead = match (previous.as_ref(), ahead) {
            (Some(ws), Some(cache)) if cold => decode_ahead(ws, tree.full()?, cache, ahead_target),
            _ => None,
        };
        // No thread of this process reads the tree either.
        let kernel_served =
            matches!(by, By::Image(_) | By::Server(_)) && replay.is_none() && ahead.is_none();
        Ok(Mounted {
            kernel_served,
            guard: Served {
                by,
                replay,
                ahead,
                previous,
                tree,
                workset_path,
                startup,
            },
            data_layers,
        })
    }
}

/// A lazily served tree fetches the blobs of the files the command opened
/// or looked up last time before its task starts, in one request (a
/// failure is logged: each file then fetches on its first open).
fn fetch_working_set(remote: &Lazy, tree: &Tree, ws: &WorkingSet) -> RemoteStats {
    let digests: Vec<String> = ws
        .files()
        .filter_map(|p| tree.resolve(p))
        .filter(|n| n.kind() == crate::tree::Kind::File)
        .filter_map(|n| n.digest().map(str::to_string))
        .collect();
    let before = remote.stats();
    match remote.fetch(digests) {
        Err(e) => tracing::warn!("{e}: files will be fetched as they are opened"),
        Ok(refused) if !refused.is_empty() => {
            tracing::warn!("{} blobs of the working set refused", refused.len())
        }
        Ok(_) => {}
    }
    remote.stats().since(&before)
}

/// Replay `ws` through `mountpoint`: a thread for [`Prefetch::Alongside`]
/// (joined in [`Served::finish`], after the unmount), done here for
/// [`Prefetch::Before`].
fn replay(ws: WorkingSet, mountpoint: &Path, when: Prefetch) -> Option<JoinHandle<()>> {
    // A thread per 64 paths, at most 4: spawning 4 threads for the few
    // paths of a small command costs more than it saves.
    let paths = ws.lookups.len() + ws.dirs.len();
    let threads = paths.div_ceil(64).clamp(1, 4);
    match when {
        Prefetch::Off => None,
        Prefetch::Before => {
            let _s = tracing::info_span!("fuse.prefetch", paths).entered();
            ws.prefetch(mountpoint, threads);
            None
        }
        Prefetch::Alongside => {
            let mountpoint = mountpoint.to_path_buf();
            std::thread::Builder::new()
                .name("vhrun-prefetch".into())
                .spawn(move || {
                    let _s = tracing::info_span!("prefetch", paths).entered();
                    let done = ws.prefetch(&mountpoint, threads);
                    tracing::info!("working set replayed in {:?}", done.elapsed);
                })
                .inspect_err(|e| tracing::debug!("no prefetch thread: {e}"))
                .ok()
        }
    }
}

/// Decode the blobs of the files `ws` looked up into the blob cache, on
/// every core at nice 19, while the task starts: a cold tree otherwise
/// decodes each file when the task first opens it, one after the other,
/// on the task's time. An open that finds a file being decoded here waits
/// for it rather than decoding it too (`filllock`). Stopped when the run
/// ends.
fn decode_ahead(
    ws: &WorkingSet,
    tree: Arc<Tree>,
    cache: BlobCache,
    target: String,
) -> Option<Ahead> {
    let paths: Vec<PathBuf> = ws.files().cloned().collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let handle = std::thread::Builder::new()
        .name("vhrun-decode".into())
        .spawn(move || {
            let _s = tracing::info_span!("decode_ahead", paths = paths.len()).entered();
            let files: Vec<(&str, u64, &[u64])> = paths
                .iter()
                .filter_map(|p| tree.resolve(p))
                .filter(|n| n.kind() == crate::tree::Kind::File && n.defect().is_none())
                .filter_map(|n| Some((n.digest()?, n.size(), n.rewrite())))
                .collect();
            let t0 = std::time::Instant::now();
            let decoded = cache.fill_ahead(&files, &target, threads, &stopped);
            tracing::info!(
                "decoded {decoded} of {} files ahead in {:?}",
                files.len(),
                t0.elapsed()
            );
        })
        .inspect_err(|e| tracing::debug!("no decode-ahead thread: {e}"))
        .ok()?;
    Some(Ahead { handle, stop })
}

/// A running [`decode_ahead`].
#[derive(Debug)]
struct Ahead {
    handle: JoinHandle<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

/// What serves a mounted tree; the sandbox hands it back after its
/// teardown (the tree is unmounted from the run's namespace by then).
#[derive(Debug)]
pub struct Served {
    by: By,
    replay: Option<JoinHandle<()>>,
    ahead: Option<Ahead>,
    previous: Option<WorkingSet>,
    tree: Arc<TreeRef>,
    workset_path: PathBuf,
    /// What this process fetched for a lazily served tree before its task.
    startup: RemoteStats,
}

#[derive(Debug)]
enum By {
    Image(PathBuf),
    Server(Box<Connection>),
    Fuse(MountedTree),
}

/// A served tree's share of a run, for `--stats`.
#[derive(Debug, Default)]
pub struct Report {
    pub fuse: fuse::Stats,
    /// (regular files, bytes) of the catalog.
    pub totals: (u64, u64),
    pub server: Option<server::ServerInfo>,
    /// The kernel image mounted, if one was.
    pub image: Option<PathBuf>,
    /// A copy-mode run's space (`None`: the virtual holotree served it).
    pub copy: Option<copy::CopyReport>,
    /// The refusal that made an `auto` run use a copy.
    pub refused: Option<crate::error::Refusal>,
}

impl Served {
    /// Record the working set, stop serving, and say what it cost. `None`
    /// when the warm server ended during the run (logged: the run's files
    /// read after that failed).
    pub fn finish(self) -> Option<Report> {
        let startup = self.startup;
        let mut report = self.finish_serving()?;
        report.fuse.remote = report.fuse.remote.plus(&startup);
        Some(report)
    }

    fn finish_serving(mut self) -> Option<Report> {
        if let Some(a) = self.ahead.take() {
            a.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = a.handle.join();
        }
        if let Some(h) = self.replay.take() {
            let _ = h.join();
        }
        let totals = self.tree.totals();
        match self.by {
            By::Image(dir) => Some(Report {
                totals,
                image: Some(dir),
                ..Report::default()
            }),
            By::Fuse(mounted) => {
                mounted
                    .working_set()
                    .record(self.previous.as_ref(), &self.workset_path);
                let so_far = mounted.stats();
                let fuse = mounted.unmount().unwrap_or_else(|e| {
                    tracing::warn!("{e}");
                    so_far
                });
                Some(Report {
                    fuse,
                    totals,
                    ..Report::default()
                })
            }
            By::Server(mut conn) => {
                match conn.notices() {
                    Ok(lines) => lines.iter().for_each(|l| tracing::error!("{l}")),
                    Err(e) => tracing::debug!("{e}"),
                }
                let now = match conn.stats() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(
                            "{e}: it ended during the run with no successor, and the \
                             environment with it (files read after that failed with \
                             ENOTCONN or ECONNABORTED)"
                        );
                        return None;
                    }
                };
                if conn.fresh() {
                    match conn.working_set() {
                        Ok(ws) => ws.record(self.previous.as_ref(), &self.workset_path),
                        Err(e) => tracing::debug!("working set not saved: {e}"),
                    }
                }
                Some(Report {
                    fuse: now.since(&conn.hello.stats),
                    totals,
                    server: Some(server::ServerInfo {
                        pid: conn.hello.pid,
                        runs_before: conn.hello.served,
                        takeovers: now.takeovers.saturating_sub(conn.hello.stats.takeovers),
                    }),
                    ..Report::default()
                })
            }
        }
    }
}

/// A plain directory as the lower tree, bind-mounted (`vhrun exec
/// --lower-dir`, a testing aid).
pub fn plain_dir(dir: PathBuf) -> impl FnOnce(&LowerTarget) -> Result<Mounted<()>> {
    move |target: &LowerTarget| {
        if !dir.is_dir() {
            return Err(crate::Error::NotFound { path: dir });
        }
        crate::sandbox::overlay::bind_lower(&dir, &target.mountpoint)?;
        Ok(Mounted {
            guard: (),
            data_layers: Vec::new(),
            kernel_served: true,
        })
    }
}
