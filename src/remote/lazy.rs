//! Lazy serving from an rccremote origin (`--lazy`, `VHRUN_REMOTE=lazy`):
//! a run starts with the catalog alone, and the FUSE tree fetches a blob
//! when a file that needs it is first opened (`lower::blobcache` asks
//! [`Lazy::ensure`] for a blob the hololib lacks).
//!
//! - One request per miss: `POST /delta/<catalog>` with the missing blobs
//!   of every file in the opened file's directory ([`Batching::Directory`];
//!   a package's modules are imported together), or of that file alone
//!   ([`Batching::File`], `VHRUN_LAZY_BATCH=file`, to measure the other).
//! - Every blob is hashed against its digest before it is renamed into the
//!   hololib (`zipio::import_delta`); nothing is served before that, so a
//!   bad blob or a broken download is an error (EIO for the file), never
//!   wrong bytes.
//! - Fetched blobs are kept in the hololib, where `vhrun pull` and rcc's
//!   pull would put them, so the next run (lazy or not) is local for them.
//!   The catalog stays in `$VHRUN_HOME/lazy/` until a pull completes it:
//!   rcc would take a catalog in its hololib for a whole environment.
//! - One fetch at a time per catalog: in-process behind a mutex, across
//!   processes (runs without a warm server) behind `locks/lazy-<catalog>.lck`;
//!   whoever waited re-checks, so each blob crosses the network once.
//! - Bounded: [`PATIENCE`] per request, one retry when the connection
//!   failed before any byte arrived.

use crate::error::{Error, Result};
use crate::hololib::lock::lock_file;
use crate::hololib::part::write_via_part;
use crate::hololib::{zipio, Hololib};
use crate::home::Home;
use crate::paths::mkdir_all;
use crate::remote::origin::{Origin, Patience};
use crate::tree::{Kind, Tree};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// The missing blobs of every file in the opened file's directory.
    #[default]
    Directory,
    /// The opened file's blob alone.
    File,
}

impl std::str::FromStr for Batching {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Batching, String> {
        match s {
            "dir" | "directory" => Ok(Batching::Directory),
            "file" => Ok(Batching::File),
            _ => Err(format!("{s:?}: expected dir or file")),
        }
    }
}

impl Batching {
    pub fn as_str(self) -> &'static str {
        match self {
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
        }
    }

    pub fn plus(&self, o: &RemoteStats) -> RemoteStats {
        RemoteStats {
            requests: self.requests + o.requests,
            blobs: self.blobs + o.blobs,
            bytes: self.bytes + o.bytes,
            wait_us: self.wait_us + o.wait_us,
            failures: self.failures + o.failures,
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
}

/// The origin a lazily served tree fills its hololib from.
pub struct Lazy {
    origin: Origin,
    catalog: String,
    lib: Hololib,
    tree: Arc<Tree>,
    scratch: PathBuf,
    lock_path: PathBuf,
    batching: Batching,
    /// Blob digest -> the directory (inode) of a file that needs it.
    dirs: OnceLock<HashMap<String, u64>>,
    gate: Mutex<()>,
    counters: Counters,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lazy")
            .field("origin", &self.origin.url)
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
    ) -> Lazy {
        let catalog = file_name(tree.catalog_path());
        Lazy {
            lock_path: lock_path(home, &catalog),
            scratch: home.lazy(),
            origin,
            catalog,
            lib,
            tree,
            batching,
            dirs: OnceLock::new(),
            gate: Mutex::new(()),
            counters: Counters::default(),
        }
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
    ) -> Result<Lazy> {
        let settings = crate::settings::NetworkSettings::load(robocorp_home)?;
        let origin = Origin::new(url, &settings)?;
        Ok(Lazy::new(origin, lib, tree, home, batching))
    }

    pub fn url(&self) -> &str {
        &self.origin.url
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
        }
    }

    /// Make the blob `digest` present in the hololib, fetching it (with its
    /// batch) when it is not.
    pub fn ensure(&self, digest: &str) -> Result<()> {
        if self.lib.blob_path(digest).is_file() {
            return Ok(());
        }
        let mut batch = vec![digest.to_string()];
        if self.batching == Batching::Directory {
            batch.extend(self.siblings(digest));
        }
        let refused = self.fetch(batch)?;
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
        let r = self.fetch_inner(digests);
        self.counters
            .wait_us
            .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
        if r.is_err() {
            self.counters.failures.fetch_add(1, Relaxed);
        }
        r
    }

    fn fetch_inner(&self, digests: Vec<String>) -> Result<Vec<(String, String)>> {
        let _turn = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        let missing = |all: &[String]| -> Vec<String> {
            let mut seen = HashSet::new();
            all.iter()
                .filter(|d| seen.insert(d.as_str()) && !self.lib.blob_path(d).is_file())
                .cloned()
                .collect()
        };
        if missing(&digests).is_empty() {
            return Ok(Vec::new());
        }
        let _lock = lock_file(&self.lock_path)?;
        // Another process may have fetched them while this one waited.
        let wanted = missing(&digests);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let _s = tracing::info_span!("lazy.fetch", blobs = wanted.len()).entered();
        let got = delta(
            &self.origin,
            &self.catalog,
            &self.lib,
            &self.scratch,
            &wanted,
            &self.counters,
        )?;
        for (d, why) in &got.refused {
            tracing::debug!("{}: blob {d} refused: {why}", self.origin.url);
        }
        Ok(got.refused)
    }

    fn data_err(&self, msg: String) -> Error {
        Error::RemoteData {
            origin: self.origin.url.clone(),
            catalog: self.catalog.clone(),
            msg,
        }
    }
}

/// `POST /delta/<catalog>` for `wanted`, downloaded into `scratch` and its
/// wanted blobs placed into `lib` (verified). One retry when the request
/// failed before any byte arrived (a refused or reset connection).
fn delta(
    origin: &Origin,
    catalog: &str,
    lib: &Hololib,
    scratch: &Path,
    wanted: &[String],
    counters: &Counters,
) -> Result<zipio::Delta> {
    mkdir_all(scratch, 0o750)?;
    let body = wanted.join("\n");
    let mut last = None;
    for attempt in 0..2 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(200));
        }
        counters.requests.fetch_add(1, Relaxed);
        let set: HashSet<&str> = wanted.iter().map(String::as_str).collect();
        let data_err = |e: Error| match e {
            Error::BadInput { msg, .. } => Error::RemoteData {
                origin: origin.url.clone(),
                catalog: catalog.to_string(),
                msg,
            },
            other => other,
        };
        let path = format!("/delta/{catalog}");
        let (r, got) = if wanted.is_empty() {
            // the catalog itself is wanted: the whole answer, as a file
            let mut tmp = tempfile::Builder::new()
                .prefix(".delta.")
                .tempfile_in(scratch)
                .map_err(|e| Error::io(scratch, e))?;
            let mut got = 0;
            let r = origin
                .post_to(&path, &body, PATIENCE, tmp.as_file_mut(), &mut |n, _| {
                    got = n
                })
                .and_then(|_| zipio::import_delta(lib, tmp.path(), &set).map_err(data_err));
            (r, got)
        } else {
            let got = AtomicU64::new(0);
            let r = origin
                .post_stream(&path, &body, PATIENCE)
                .and_then(|(body, _)| {
                    let counted = Counted {
                        inner: body,
                        n: &got,
                    };
                    zipio::stream_delta(counted, lib, &set, Path::new(&path)).map_err(data_err)
                });
            (r, got.load(Relaxed))
        };
        counters.bytes.fetch_add(got, Relaxed);
        match r {
            Ok(d) => {
                counters.blobs.fetch_add(d.placed.len() as u64, Relaxed);
                tracing::debug!(
                    "{catalog}: {} blobs ({got} bytes) from {}",
                    d.placed.len(),
                    origin.url
                );
                return Ok(d);
            }
            Err(e) if got == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// A reader counting the bytes it read.
struct Counted<'a, R> {
    inner: R,
    n: &'a AtomicU64,
}

impl<R: std::io::Read> std::io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Relaxed);
        Ok(k)
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
        let got = delta(&origin, catalog, lib, &home.lazy(), &[], &counters)?;
        let (name, raw) = got.catalog.ok_or_else(|| Error::RemoteData {
            origin: origin.url.clone(),
            catalog: catalog.to_string(),
            msg: "the delta zip holds no catalog".into(),
        })?;
        if name != catalog {
            return Err(Error::RemoteData {
                origin: origin.url.clone(),
                catalog: catalog.to_string(),
                msg: format!("the delta zip holds catalog {name}"),
            });
        }
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
