//! Lazy serving from an rccremote origin (`--lazy`, `VHRUN_REMOTE=lazy`):
//! a run starts with the catalog alone, and the FUSE tree fetches a blob
//! when a file that needs it is first opened (`lower::blobcache` asks
//! [`Lazy::ensure`] for a blob the hololib lacks).
//!
//! - One request per miss: `POST /delta/<catalog>` with the missing blobs
//!   of every file in the opened file's directory ([`Batching::Directory`];
//!   a package's modules are imported together), or of that file alone
//!   ([`Batching::File`], `VHRUN_LAZY_BATCH=file`, to measure the other).
//! - Ahead of the misses ([`Batching::Imports`], the default): every Python
//!   module opened is read for the packages it imports at its top level
//!   (`remote::imports`), and [`AHEAD_THREADS`] threads fetch their
//!   directories' missing blobs while the task is still busy with that
//!   module, each batch of predictions in one request. A run otherwise
//!   waits for a round trip per package directory, one after the other.
//!   The first miss (the interpreter's exec) also queues what every
//!   interpreter opens as it starts and what the task's command imports
//!   ([`Lazy::entry_imports`]). The modules predicted go on to a helper
//!   that compiles them beside the task (`remote::compile`).
//! - Every blob is hashed against its digest before it is renamed into the
//!   hololib (`zipio::stream_delta`); nothing is served before that, so a
//!   bad blob or a broken download is an error (EIO for the file), never
//!   wrong bytes.
//! - Fetched blobs are kept in the hololib, where `vhrun pull` and rcc's
//!   pull would put them, so the next run (lazy or not) is local for them.
//!   The catalog stays in `$VHRUN_HOME/lazy/` until a pull completes it:
//!   rcc would take a catalog in its hololib for a whole environment.
//! - Each blob crosses the network once. In a process, fetches run side
//!   by side, the opens' on one connection and each fetching-ahead
//!   thread's on one of its own, each asking only for blobs no request in flight carries and
//!   waiting for those that carry the rest (`remote::inflight`). Across
//!   processes (runs without a warm server) fetches take turns behind
//!   `locks/lazy-<catalog>.lck`, and whoever waited re-checks.
//! - Bounded: [`PATIENCE`] per request, one retry when the connection
//!   failed before any byte arrived.

use crate::error::{Error, Result};
use crate::hololib::lock::lock_file;
use crate::hololib::part::write_via_part;
use crate::hololib::{zipio, Hololib};
use crate::home::Home;
use crate::paths::mkdir_all;
use crate::remote::inflight::{InFlight, SharedLock};
use crate::remote::origin::{Origin, OriginThread, Patience, Post};
use crate::remote::{compile, imports};
use crate::tree::{Kind, Tree};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How long one lazy fetch may take (a task's `open` waits for it): in
/// all, and with no byte arriving.
pub const PATIENCE: Patience = Patience {
    global: Duration::from_secs(60),
    idle: Duration::from_secs(15),
};

/// What one miss asks the origin for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Batching {
    /// [`Batching::Directory`], and the directories of the packages each
    /// opened module imports, fetched ahead.
    #[default]
    Imports,
    /// The missing blobs of every file in the opened file's directory.
    Directory,
    /// The opened file's blob alone.
    File,
}

impl std::str::FromStr for Batching {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Batching, String> {
        match s {
            "imports" => Ok(Batching::Imports),
            "dir" | "directory" => Ok(Batching::Directory),
            "file" => Ok(Batching::File),
            _ => Err(format!("{s:?}: expected imports, dir or file")),
        }
    }
}

impl Batching {
    pub fn as_str(self) -> &'static str {
        match self {
            Batching::Imports => "imports",
            Batching::Directory => "dir",
            Batching::File => "file",
        }
    }
}

/// What lazy serving fetched, for `--stats` (`remote` in `--stats-json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RemoteStats {
    /// `/delta` requests made (failed ones included).
    pub requests: u64,
    /// Blobs placed into the hololib.
    pub blobs: u64,
    /// Bytes downloaded (the zips).
    pub bytes: u64,
    /// Time opens spent waiting for the network, in microseconds.
    pub wait_us: u64,
    /// Fetches that failed (each an EIO for the file that wanted it).
    pub failures: u64,
    /// Of `blobs`, those fetched ahead of any open, for the packages the
    /// opened modules import ([`Batching::Imports`]).
    #[serde(default)]
    pub ahead: u64,
}

impl RemoteStats {
    pub fn since(&self, e: &RemoteStats) -> RemoteStats {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        RemoteStats {
            requests: d(self.requests, e.requests),
            blobs: d(self.blobs, e.blobs),
            bytes: d(self.bytes, e.bytes),
            wait_us: d(self.wait_us, e.wait_us),
            failures: d(self.failures, e.failures),
            ahead: d(self.ahead, e.ahead),
        }
    }

    pub fn plus(&self, o: &RemoteStats) -> RemoteStats {
        RemoteStats {
            requests: self.requests + o.requests,
            blobs: self.blobs + o.blobs,
            bytes: self.bytes + o.bytes,
            wait_us: self.wait_us + o.wait_us,
            failures: self.failures + o.failures,
            ahead: self.ahead + o.ahead,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    blobs: AtomicU64,
    bytes: AtomicU64,
    wait_us: AtomicU64,
    failures: AtomicU64,
    ahead: AtomicU64,
}

/// The origin a lazily served tree fills its hololib from.
pub struct Lazy {
    /// The opens' connection.
    origin: OriginThread,
    /// The fetches ahead's, one per fetching-ahead thread: an open never
    /// queues behind one.
    ahead_origins: Vec<OriginThread>,
    catalog: String,
    lib: Hololib,
    tree: Arc<Tree>,
    batching: Batching,
    /// Blob digest -> the directory (inode) of a file that needs it.
    dirs: OnceLock<HashMap<String, u64>>,
    /// The blobs being fetched, and the catalog's lock file held meanwhile.
    flying: InFlight,
    lock: SharedLock,
    counters: Counters,
    ahead: Ahead,
}

/// Fetching ahead ([`Batching::Imports`]): the modules opened go to
/// [`AHEAD_THREADS`] threads, started on the first job, which read them and
/// fetch what they import.
#[derive(Default)]
struct Ahead {
    me: Weak<Lazy>,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    /// The interpreter's start-up was queued (once, on the first miss).
    startup: AtomicBool,
    /// What the task's command imports (`imports::entry_imports`), until
    /// the start-up is queued with it.
    entry: Mutex<Vec<imports::Import>>,
    /// Package directories predicted so far (each is fetched once).
    predicted: Mutex<HashSet<u64>>,
    /// Modules read for their imports so far (each is read once).
    read: Mutex<HashSet<u64>>,
    roots: OnceLock<Vec<u64>>,
    /// Set by a fetch ahead that failed: an origin that is gone or refuses
    /// is not asked again for guesses (opens still ask, and report).
    off: AtomicBool,
    /// Where the modules predicted go, to be compiled beside the task
    /// (`remote::compile`); made here, with the `Lazy`, for the reason
    /// [`compile::Feed`] gives.
    compile: Option<compile::Feed>,
}

/// Work for the fetching-ahead threads.
enum Job {
    /// A module the task opened, its content in the file.
    Opened(u64, File),
    /// What the interpreter opens as it starts (`imports::startup`).
    Startup,
    /// What a task's command imports, given once the start-up was queued.
    Entry(Vec<imports::Import>),
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy")
            .field("origin", &self.origin.url())
            .field("catalog", &self.catalog)
            .field("batching", &self.batching)
            .finish()
    }
}

impl Lazy {
    /// Fill `lib` with the blobs of `tree` (whose catalog file is named as
    /// the origin names it) from `origin`.
    pub fn new(
        origin: Origin,
        lib: Hololib,
        tree: Arc<Tree>,
        home: &Home,
        batching: Batching,
    ) -> Arc<Lazy> {
        let catalog = file_name(tree.catalog_path());
        Arc::new_cyclic(|me| Lazy {
            lock: SharedLock::new(lock_path(home, &catalog)),
            ahead_origins: (0..AHEAD_THREADS)
                .map(|_| OriginThread::new(origin.with_own_connections()))
                .collect(),
            origin: OriginThread::new(origin),
            catalog,
            lib,
            tree,
            batching,
            dirs: OnceLock::new(),
            flying: InFlight::default(),
            counters: Counters::default(),
            ahead: Ahead {
                me: me.clone(),
                compile: (batching == Batching::Imports)
                    .then(compile::Feed::new)
                    .and_then(|f| {
                        f.map_err(|e| tracing::debug!("no feed to compile ahead: {e}"))
                            .ok()
                    }),
                ..Ahead::default()
            },
        })
    }

    /// [`Lazy::new`] with an origin at `url`, configured by rcc's network
    /// settings of `robocorp_home`.
    pub fn connect(
        url: &str,
        batching: Batching,
        lib: Hololib,
        tree: Arc<Tree>,
        home: &Home,
        robocorp_home: &Path,
    ) -> Result<Arc<Lazy>> {
        let settings = crate::settings::NetworkSettings::load(robocorp_home)?;
        let origin = Origin::new(url, &settings)?;
        Ok(Lazy::new(origin, lib, tree, home, batching))
    }

    pub fn url(&self) -> &str {
        self.origin.url()
    }

    pub fn batching(&self) -> Batching {
        self.batching
    }

    pub fn stats(&self) -> RemoteStats {
        let c = &self.counters;
        RemoteStats {
            requests: c.requests.load(Relaxed),
            blobs: c.blobs.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
            wait_us: c.wait_us.load(Relaxed),
            failures: c.failures.load(Relaxed),
            ahead: c.ahead.load(Relaxed),
        }
    }

    /// The module file `ino` was opened, its content in `file`: with
    /// [`Batching::Imports`], what it imports is fetched ahead (on the
    /// fetching-ahead threads; the open does not wait for it).
    pub fn opened(&self, ino: u64, file: &File) {
        if self.batching != Batching::Imports || self.ahead.off.load(Relaxed) {
            return;
        }
        if !self.is_python(ino) {
            return;
        }
        if self.ahead.read.lock().is_ok_and(|r| r.contains(&ino)) {
            return;
        }
        let Ok(file) = file.try_clone() else { return };
        self.ahead_job(Job::Opened(ino, file));
    }

    /// Hand `job` to the fetching-ahead threads, started on the first.
    fn ahead_job(&self, job: Job) {
        let mut queue = self.ahead.queue.lock().unwrap_or_else(|p| p.into_inner());
        if queue.is_none() {
            let (tx, rx) = mpsc::channel();
            let rx = Arc::new(Mutex::new(rx));
            for worker in 0..self.ahead_origins.len() {
                let (me, rx) = (self.ahead.me.clone(), rx.clone());
                let started = std::thread::Builder::new()
                    .name("vhrun-fetch-ahead".into())
                    .spawn(move || fetch_ahead_loop(me, &rx, worker));
                if let Err(e) = started {
                    tracing::debug!("no thread to fetch ahead ({e})");
                    if worker == 0 {
                        self.ahead.off.store(true, Relaxed);
                        return;
                    }
                    break;
                }
            }
            *queue = Some(tx);
        }
        if let Some(q) = queue.as_ref() {
            let _ = q.send(job);
        }
    }

    /// What the task's command imports (its `-c` code, script or `-m`
    /// module; `imports::entry_imports`): fetched ahead with the
    /// interpreter's start-up, or at once if that was queued already (a
    /// warm server's later run).
    pub fn entry_imports(&self, found: Vec<imports::Import>) {
        if self.batching != Batching::Imports || found.is_empty() {
            return;
        }
        let mut entry = self.ahead.entry.lock().unwrap_or_else(|p| p.into_inner());
        if self.ahead.startup.load(Relaxed) {
            drop(entry);
            self.ahead_job(Job::Entry(found));
        } else {
            entry.extend(found);
        }
    }

    /// The read end of the feed of the modules predicted, for a helper
    /// that compiles them ahead of the task (`remote::compile`); `None`
    /// when nothing is predicted ([`Batching::Imports`] only).
    pub fn compile_feed(&self) -> Option<std::os::fd::OwnedFd> {
        let feed = self.ahead.compile.as_ref()?;
        feed.reader()
            .map_err(|e| tracing::debug!("no feed to compile ahead: {e}"))
            .ok()
    }

    /// Read the modules the task `opened` for what they import and fetch
    /// ahead, one request a round: the missing blobs of the package
    /// directories not predicted before, and of the modules those imports
    /// run. Those modules are read next (from the hololib, as soon as
    /// their blobs are here), so the fetching stays ahead of the task
    /// through a package's `__init__.py` chain, until the imports lead
    /// nowhere new.
    fn fetch_ahead(
        &self,
        opened: Vec<(u64, File)>,
        startup: bool,
        mut entry: Vec<imports::Import>,
        worker: usize,
    ) {
        let roots = self.ahead.roots.get_or_init(|| imports::roots(&self.tree));
        let mut sources: Vec<(u64, Vec<u8>)> = opened
            .into_iter()
            .filter(|(ino, _)| self.first_read(*ino))
            .filter_map(|(ino, f)| Some((ino, head(&f, MODULE_READ)?)))
            .collect();
        let mut seed = if startup {
            let mut queued = self.ahead.entry.lock().unwrap_or_else(|p| p.into_inner());
            entry.append(&mut queued);
            imports::startup(&self.tree)
        } else {
            imports::Resolved::default()
        };
        seed.extend(imports::resolve_entry(&self.tree, roots, &entry));
        loop {
            if self.ahead.off.load(Relaxed) || (sources.is_empty() && seed.is_empty()) {
                break;
            }
            let mut dirs = Vec::new();
            let mut modules = Vec::new();
            let mut extensions = Vec::new();
            let found = sources
                .iter()
                .map(|(ino, src)| imports::resolve(&self.tree, roots, *ino, &imports::scan(src)));
            for r in std::iter::once(std::mem::take(&mut seed)).chain(found) {
                let mut predicted = self
                    .ahead
                    .predicted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                dirs.extend(r.dirs.into_iter().filter(|d| predicted.insert(*d)));
                modules.extend(r.modules.into_iter().filter(|m| self.first_read(*m)));
                extensions.extend(r.files);
            }
            let files = dirs
                .iter()
                .filter_map(|&d| self.tree.get(d))
                .flat_map(|d| d.children())
                .chain(modules.iter().copied())
                .chain(extensions);
            let mut seen = HashSet::new();
            let wanted: Vec<String> = files
                .filter_map(|ino| self.tree.get(ino))
                .filter(|n| n.kind() == Kind::File)
                .filter_map(|n| n.digest())
                .filter(|d| seen.insert(*d) && !self.lib.blob_path(d).is_file())
                .map(str::to_string)
                .collect();
            if !wanted.is_empty() {
                let _s = tracing::debug_span!("lazy.ahead", dirs = dirs.len()).entered();
                match self.fetch_inner(wanted, &self.ahead_origins[worker]) {
                    Ok((placed, _refused)) => {
                        self.counters.ahead.fetch_add(placed, Relaxed);
                    }
                    Err(e) => {
                        tracing::debug!("fetching ahead stopped: {e}");
                        self.ahead.off.store(true, Relaxed);
                        return;
                    }
                }
            }
            if let Some(feed) = &self.ahead.compile {
                feed.send(
                    modules
                        .iter()
                        .filter(|&&m| self.is_python(m) && self.lib_has(m))
                        .map(|&m| self.tree.path(m)),
                );
            }
            sources = modules
                .into_iter()
                .filter_map(|m| Some((m, self.module_source(m)?)))
                .collect();
        }
    }

    /// Whether file `ino` is a Python module (not a `.pth` file).
    fn is_python(&self, ino: u64) -> bool {
        self.tree
            .get(ino)
            .is_some_and(|n| n.name().ends_with(b".py"))
    }

    /// Whether the blob of file `ino` is in the hololib.
    fn lib_has(&self, ino: u64) -> bool {
        let digest = self.tree.get(ino).and_then(|n| n.digest());
        digest.is_some_and(|d| self.lib.blob_path(d).is_file())
    }

    /// Whether module `ino` is read for its imports for the first time.
    fn first_read(&self, ino: u64) -> bool {
        let mut read = self.ahead.read.lock().unwrap_or_else(|p| p.into_inner());
        read.insert(ino)
    }

    /// The text of module file `ino` from its blob in the hololib (checked
    /// against its digest), when the blob is here and the module is not
    /// too big to read for its imports.
    fn module_source(&self, ino: u64) -> Option<Vec<u8>> {
        let n = self.tree.get(ino)?;
        let digest = n.digest()?;
        if n.size() > MODULE_READ as u64 * 4 {
            return None;
        }
        let mut text = Vec::with_capacity(n.size() as usize);
        crate::hololib::blob::copy_verified(&self.lib.blob_path(digest), digest, &mut text).ok()?;
        Some(text)
    }

    /// Make the blob `digest` present in the hololib, fetching it (with its
    /// batch) when it is not.
    pub fn ensure(&self, digest: &str) -> Result<()> {
        if self.lib.blob_path(digest).is_file() {
            return Ok(());
        }
        // The first miss is the interpreter starting: what it opens next
        // is fetched ahead, beside this miss.
        if self.batching == Batching::Imports
            && !self.ahead.off.load(Relaxed)
            && !self.ahead.startup.load(Relaxed)
        {
            // Under the entry's lock: `entry_imports` queues its own job
            // once it sees the start-up queued.
            let first = {
                let _entry = self.ahead.entry.lock().unwrap_or_else(|p| p.into_inner());
                !self.ahead.startup.swap(true, Relaxed)
            };
            if first {
                self.ahead_job(Job::Startup);
            }
        }
        let mut batch = vec![digest.to_string()];
        if self.batching != Batching::File {
            batch.extend(self.siblings(digest));
        }
        let mut refused = self.fetch(batch)?;
        if !self.lib.blob_path(digest).is_file() {
            // It came with another fetch that failed or was refused
            // (this one waited for it): ask for it on the open's own.
            refused = self.fetch(vec![digest.to_string()])?;
        }
        if self.lib.blob_path(digest).is_file() {
            return Ok(());
        }
        self.counters.failures.fetch_add(1, Relaxed);
        let why = refused
            .into_iter()
            .find(|(d, _)| d == digest)
            .map(|(_, why)| why)
            .unwrap_or_else(|| format!("the origin sent no blob {digest}"));
        Err(self.data_err(why))
    }

    /// Blobs of the files in the directory of a file needing `digest`.
    fn siblings(&self, digest: &str) -> Vec<String> {
        let dirs = self.dirs.get_or_init(|| {
            let _s = tracing::debug_span!("lazy.index").entered();
            let mut m = HashMap::new();
            for ino in 1..=self.tree.len() as u64 {
                if let Some(n) = self.tree.get(ino).filter(|n| n.kind() == Kind::File) {
                    if let Some(d) = n.digest() {
                        m.entry(d.to_string()).or_insert(n.parent());
                    }
                }
            }
            m
        });
        let Some(dir) = dirs.get(digest).and_then(|&ino| self.tree.get(ino)) else {
            return Vec::new();
        };
        dir.children()
            .filter_map(|ino| self.tree.get(ino))
            .filter(|n| n.kind() == Kind::File)
            .filter_map(|n| n.digest().map(str::to_string))
            .collect()
    }

    /// Fetch those of `digests` the hololib lacks, in one request. What
    /// arrived is in the hololib, verified; `Ok` lists the blobs refused
    /// (and why), `Err` is a request that failed.
    pub fn fetch(&self, digests: Vec<String>) -> Result<Vec<(String, String)>> {
        let started = Instant::now();
        let r = self
            .fetch_inner(digests, &self.origin)
            .map(|(_, refused)| refused);
        self.counters
            .wait_us
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        if r.is_err() {
            self.counters.failures.fetch_add(1, Relaxed);
        }
        r
    }

    /// [`Lazy::fetch`] over `origin`, untimed: how many blobs were placed
    /// (by this request), and those refused. Blobs another request is
    /// fetching are waited for, not asked for again.
    fn fetch_inner(
        &self,
        digests: Vec<String>,
        origin: &OriginThread,
    ) -> Result<(u64, Vec<(String, String)>)> {
        let missing = |all: Vec<String>| -> Vec<String> {
            let mut seen = HashSet::new();
            all.into_iter()
                .filter(|d| seen.insert(d.clone()) && !self.lib.blob_path(d).is_file())
                .collect()
        };
        let claim = self.flying.claim(missing(digests));
        let mut got = (0, Vec::new());
        if !claim.mine.is_empty() {
            let _lock = self.lock.share()?;
            // Another process may have fetched them while this one waited.
            let wanted = missing(claim.mine.clone());
            if !wanted.is_empty() {
                let _s = tracing::info_span!("lazy.fetch", blobs = wanted.len()).entered();
                let delta = delta(
                    origin,
                    &self.catalog,
                    &self.lib,
                    &wanted,
                    Want::Blobs,
                    &self.counters,
                )?;
                for (d, why) in &delta.refused {
                    tracing::debug!("{}: blob {d} refused: {why}", origin.url());
                }
                got = (delta.placed.len() as u64, delta.refused);
            }
        }
        claim.wait_theirs();
        Ok(got)
    }

    fn data_err(&self, msg: String) -> Error {
        Error::RemoteData {
            origin: self.origin.url().to_string(),
            catalog: self.catalog.clone(),
            msg,
        }
    }
}

/// What one `/delta` request is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The blobs asked for.
    Blobs,
    /// The catalog alone (the blobs asked for only make the answer this
    /// catalog's: rccremote caches answers by the list asked for).
    Catalog,
}

/// `POST /delta/<catalog>` asking for `asked`: the wanted blobs placed
/// into `lib` (verified) as they stream in, or the catalog read. One retry
/// when the request failed before any byte arrived (a refused or reset
/// connection).
fn delta(
    origin: &dyn Post,
    catalog: &str,
    lib: &Hololib,
    asked: &[String],
    want: Want,
    counters: &Counters,
) -> Result<zipio::Delta> {
    let body = asked.join("\n");
    let path = format!("/delta/{catalog}");
    let set: HashSet<&str> = match want {
        Want::Blobs => asked.iter().map(String::as_str).collect(),
        Want::Catalog => HashSet::new(),
    };
    let data_err = |e: Error| match e {
        Error::BadInput { msg, .. } => Error::RemoteData {
            origin: origin.url().to_string(),
            catalog: catalog.to_string(),
            msg,
        },
        other => other,
    };
    let mut last = None;
    for attempt in 0..2 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        let got = AtomicU64::new(0);
        let before = counters.requests.load(Relaxed);
        let wanted_blob = |n: &str| match zipio::classify(n) {
            Ok(zipio::EntryKind::Blob(d)) => set.contains(d.as_str()),
            _ => false,
        };
        let pick = |ix: &zipio::ZipIndex| match want {
            Want::Blobs => ix.end_of(wanted_blob).map(|end| (0, end)),
            Want::Catalog => ix.span_of(&format!("catalog/{catalog}")),
        };
        let read = |r: &mut dyn std::io::Read| {
            zipio::stream_delta(r, lib, &set, want == Want::Catalog, Path::new(&path))
                .map_err(data_err)
        };
        let r = ranged(origin, &path, &body, counters, &got, pick, read);
        counters.bytes.fetch_add(got.load(Relaxed), Relaxed);
        match r {
            Ok(d) => {
                counters.blobs.fetch_add(d.placed.len() as u64, Relaxed);
                tracing::debug!(
                    "{catalog}: {} blobs ({} bytes, {} requests) from {}",
                    d.placed.len(),
                    got.load(Relaxed),
                    counters.requests.load(Relaxed) - before,
                    origin.url()
                );
                return Ok(d);
            }
            Err(e) if got.load(Relaxed) == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// One `/delta` answer, read in ranges where the origin serves them
/// (rccremote does: `http.ServeFile`): first its last bytes, the zip's
/// central directory, then only the span `pick` chooses from that index
/// (`None`: nothing in it is wanted). rccremote ends every answer with
/// the whole catalog (1.1 MB for a 12k-file environment), which a lazy
/// fetch already has: a range leaves it on the server, and a response
/// read to its end keeps the connection for the next request. An origin
/// that answers with the whole zip is read as it streams. `read` gets the
/// body; `got` counts its bytes.
fn ranged<T>(
    origin: &dyn Post,
    path: &str,
    body: &str,
    counters: &Counters,
    got: &AtomicU64,
    pick: impl FnOnce(&zipio::ZipIndex) -> Option<(u64, u64)>,
    read: impl FnOnce(&mut dyn std::io::Read) -> Result<T>,
) -> Result<T> {
    use std::io::Read;
    let post = |range: Option<&str>| {
        counters.requests.fetch_add(1, Relaxed);
        origin.post(path, body, range, PATIENCE)
    };
    // a central directory entry is 46 bytes and a name (~81 for a blob)
    let entries = body.lines().count() as u64 + 1;
    let tail_len = 22 + 4096 + 160 * entries;
    let first = post(Some(&format!("bytes=-{tail_len}")))?;
    let Some(total) = first.whole else {
        return read(&mut Counted::new(first.reader, got));
    };
    let mut tail = Vec::new();
    Counted::new(first.reader, got)
        .take(tail_len + 1)
        .read_to_end(&mut tail)
        .map_err(|e| origin_err(origin, format!("POST {path}: download broke: {e}")))?;
    let span = match zipio::ZipIndex::from_tail(&tail, total) {
        Ok(index) => pick(&index),
        Err(why) => {
            tracing::debug!("{}{path}: {why}: reading the whole answer", origin.url());
            return read(&mut Counted::new(post(None)?.reader, got));
        }
    };
    let Some((from, to)) = span.filter(|(f, t)| f < t) else {
        return read(&mut std::io::empty());
    };
    let mut rest = Counted::new(post(Some(&format!("bytes={from}-{}", to - 1)))?.reader, got);
    let t = read(&mut rest)?;
    // The range's end (nothing, normally): read, the connection goes back
    // to the pool; an origin sending more than asked loses it instead.
    let _ = std::io::copy(&mut (&mut rest).take(64 << 10), &mut std::io::sink());
    Ok(t)
}

fn origin_err(origin: &dyn Post, msg: String) -> Error {
    Error::Remote {
        origin: origin.url().to_string(),
        msg,
    }
}

/// A reader counting the bytes it read.
struct Counted<'a, R> {
    inner: R,
    n: &'a AtomicU64,
}

impl<'a, R> Counted<'a, R> {
    fn new(inner: R, n: &'a AtomicU64) -> Self {
        Counted { inner, n }
    }
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Relaxed);
        Ok(k)
    }
}

/// How much of a module is read for its imports (they come first).
const MODULE_READ: usize = 256 << 10;

/// The first `max` bytes of `file` (a blob-cache entry).
fn head(file: &File, max: usize) -> Option<Vec<u8>> {
    let len = file.metadata().ok()?.len().min(max as u64) as usize;
    let mut buf = vec![0; len];
    let n = crate::hololib::blob::read_head(file, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// How many threads fetch ahead, each on a connection of its own: while
/// one waits for a round of a package's chain, another starts on what the
/// task opened since.
const AHEAD_THREADS: usize = 2;

/// A fetching-ahead thread: takes the jobs queued since the last were
/// taken, all at once, until the [`Lazy`] is gone.
fn fetch_ahead_loop(me: Weak<Lazy>, rx: &Mutex<mpsc::Receiver<Job>>, worker: usize) {
    loop {
        let jobs: Vec<Job> = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Ok(first) = rx.recv() else { return };
            std::iter::once(first).chain(rx.try_iter()).collect()
        };
        let mut startup = false;
        let mut opened = Vec::new();
        let mut entry = Vec::new();
        for job in jobs {
            match job {
                Job::Opened(ino, f) => opened.push((ino, f)),
                Job::Startup => startup = true,
                Job::Entry(found) => entry.extend(found),
            }
        }
        let Some(lazy) = me.upgrade() else { return };
        if lazy.ahead.off.load(Relaxed) {
            return;
        }
        lazy.fetch_ahead(opened, startup, entry, worker);
    }
}

/// The file name of a catalog path, as the origin names the catalog.
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One fetch from the origin per catalog at a time, across processes.
fn lock_path(home: &Home, catalog: &str) -> PathBuf {
    home.locks().join(format!("lazy-{catalog}.lck"))
}

/// Where a lazily served catalog is kept.
pub fn catalog_path(home: &Home, catalog: &str) -> PathBuf {
    home.lazy().join(catalog)
}

/// `vhrun pull --lazy`: fetch catalog `catalog` alone from `origin` into
/// `$VHRUN_HOME/lazy/` (checked as an import checks it), then the blobs a
/// run needs before it starts (`startup`, given the loaded tree), into
/// `lib`. Returns the catalog's path and what was fetched.
pub fn fetch_catalog(
    home: &Home,
    lib: &Hololib,
    origin: Origin,
    catalog: &str,
    startup: impl FnOnce(&Tree) -> Vec<String>,
) -> Result<(PathBuf, RemoteStats)> {
    let _s = tracing::info_span!("lazy.catalog", catalog).entered();
    let path = catalog_path(home, catalog);
    let counters = Counters::default();
    // Runs starting together fetch the catalog once (the lock is dropped
    // before the blobs: `Lazy::fetch` takes it again).
    let lock = lock_file(&lock_path(home, catalog))?;
    if !path.is_file() {
        mkdir_all(&home.lazy(), 0o750)?;
        let raw = catalog_bytes(&origin, catalog, lib, &counters)?;
        write_via_part(&path, &raw, 0o644)?;
    }
    drop(lock);
    let tree = Arc::new(Tree::load(&path)?);
    let wanted = startup(&tree);
    let lazy = Lazy::new(origin, lib.clone(), tree, home, Batching::File);
    for d in &wanted {
        lazy.ensure(d)?;
    }
    let mut stats = lazy.stats();
    stats.requests += counters.requests.load(Relaxed);
    stats.bytes += counters.bytes.load(Relaxed);
    Ok((path, stats))
}

/// The bytes of catalog `catalog` from `origin`, asked for with no blob
/// first. rccremote caches its answers by the list asked for alone, not
/// by the catalog: an origin that was asked the same list for another
/// catalog before sends that one's zip. The list is then made this
/// catalog's own: one, then two of its parts (ordered by a hash keyed
/// with the catalog's name, so that other catalogs pick other parts).
fn catalog_bytes(
    origin: &Origin,
    catalog: &str,
    lib: &Hololib,
    counters: &Counters,
) -> Result<Vec<u8>> {
    let mut asked = Vec::new();
    for round in 0..3 {
        let got = delta(
            origin as &dyn Post,
            catalog,
            lib,
            &asked,
            Want::Catalog,
            counters,
        )?;
        match got.catalog {
            Some((name, raw)) if name == catalog => return Ok(raw),
            held => tracing::info!(
                "{}: asked for catalog {catalog} with {} blobs, the answer holds {}: \
                 asking with other blobs",
                origin.url,
                asked.len(),
                held.map_or("no catalog".to_string(), |(n, _)| format!("catalog {n}"))
            ),
        }
        if round == 0 {
            let parts = crate::remote::pull::parts(origin, catalog)?;
            asked = crate::remote::pull::own_parts(catalog, parts);
        }
        asked.truncate(round + 1);
    }
    Err(Error::RemoteData {
        origin: origin.url.clone(),
        catalog: catalog.to_string(),
        msg: "every answer held another catalog or none (rccremote's answer cache)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_parses() {
        assert_eq!("dir".parse(), Ok(Batching::Directory));
        assert_eq!("file".parse(), Ok(Batching::File));
        assert!("all".parse::<Batching>().is_err());
    }
}
