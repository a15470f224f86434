//! The decompressed blob cache: what the FUSE server actually opens.
//!
//! A gzip or zstd blob cannot be read at an offset, so on first open it is
//! decoded once into `<root>/<d[0:2]>/<digest>` (root = `$VHRUN_HOME/blobs`),
//! its digest checked while writing. A file with rewrite offsets is cached
//! per (digest, target name) as `<digest>.<target>` with the relocation
//! applied. A raw (`compress.no`) blob without rewrites is served in place
//! from the hololib; its digest is checked on the first open in each process
//! (it costs a full read) and remembered.
//!
//! Filling is crash- and race-safe without locks between processes: each
//! writer decodes into its own temp file (`.<name>.<pid>.<n>.tmp`) in the
//! final directory and renames it into place; rename is atomic and every
//! writer produces the same bytes, so the last rename wins harmlessly.
//! Inside one process, threads asking for the same entry wait for the first
//! one instead of decoding twice; across processes (a cold run decoding
//! ahead beside its warm server), `filllock` says who decodes. No fsync:
//! the cache can always be rebuilt, a file is only served when its size is
//! the catalog's (a crash leaves at worst a short file, on ext4/xfs data is
//! written before the rename's metadata commits), and an fsync per first
//! open would dominate cold runs.
//! Cache files are 0444. Temp files of a killed writer are left behind (they
//! are never served; `vhrun check` is the place to sweep them).
//!
//! A lazily served tree's cache has a remote ([`BlobCache::with_remote`]):
//! a blob the hololib lacks is first fetched from the origin into the
//! hololib (`remote::lazy`), then decoded as any other.

use crate::error::{Error, Result};
use crate::hololib::blob::{self, Codec};
use crate::hololib::Hololib;
use crate::home::Home;
use crate::lower::filllock::{self, FillLock, Turn};
use crate::remote::lazy::Lazy;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Where an opened file's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Already in the cache.
    Cached,
    /// Decoded from a gzip/zstd blob just now.
    Decoded,
    /// Decoded (any codec) and relocated just now.
    Relocated,
    /// A raw blob served from the hololib itself.
    Raw,
}

/// Counters since the cache was created (cheap atomics).
#[derive(Debug, Default)]
pub struct CacheCounters {
    pub hits: AtomicU64,
    pub decoded: AtomicU64,
    pub relocated: AtomicU64,
    pub raw_verified: AtomicU64,
    pub raw_opened: AtomicU64,
    pub bytes_written: AtomicU64,
    pub failures: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub hits: u64,
    pub decoded: u64,
    pub relocated: u64,
    pub raw_verified: u64,
    pub raw_opened: u64,
    pub bytes_written: u64,
    pub failures: u64,
}

#[derive(Debug)]
pub struct BlobCache {
    hololib: Hololib,
    root: PathBuf,
    /// Entries being filled by some thread of this process.
    inflight: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Raw blobs whose digest this process has checked.
    raw_ok: Mutex<HashSet<String>>,
    counters: CacheCounters,
    /// Where missing blobs come from (lazy serving).
    remote: Option<Arc<Lazy>>,
}

impl BlobCache {
    /// A cache of `hololib`'s blobs under `root` (`$VHRUN_HOME/blobs`).
    pub fn new(hololib: Hololib, root: impl Into<PathBuf>) -> BlobCache {
        BlobCache {
            hololib,
            root: root.into(),
            inflight: Mutex::new(HashMap::new()),
            raw_ok: Mutex::new(HashSet::new()),
            counters: CacheCounters::default(),
            remote: None,
        }
    }

    /// This cache, fetching the blobs its hololib lacks from `remote`.
    pub fn with_remote(self, remote: Option<Arc<Lazy>>) -> BlobCache {
        BlobCache { remote, ..self }
    }

    pub fn remote(&self) -> Option<&Arc<Lazy>> {
        self.remote.as_ref()
    }

    /// The cache for `hololib` at vhrun's usual place.
    pub fn at_home(hololib: Hololib, home: &Home) -> BlobCache {
        BlobCache::new(hololib, home.blobs())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn hololib(&self) -> &Hololib {
        &self.hololib
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Relaxed),
            decoded: c.decoded.load(Relaxed),
            relocated: c.relocated.load(Relaxed),
            raw_verified: c.raw_verified.load(Relaxed),
            raw_opened: c.raw_opened.load(Relaxed),
            bytes_written: c.bytes_written.load(Relaxed),
            failures: c.failures.load(Relaxed),
        }
    }

    /// Cache file of `digest` (relocated to `target` when given).
    pub fn entry_path(&self, digest: &str, target: Option<&str>) -> PathBuf {
        let name = match target {
            Some(t) => format!("{digest}.{t}"),
            None => digest.to_string(),
        };
        self.root.join(&digest[..2]).join(name)
    }

    /// Take `file`, whose bytes hash to `digest` (the caller computed it
    /// from them, as lift does), as the decoded entry of `digest` without
    /// copying: a hard link, made read-only. For a freshly built
    /// environment, whose staged files are about to be removed: its first
    /// run then decodes nothing. Nothing happens when the entry exists; a
    /// link that cannot be made is left to the first open, which decodes.
    pub fn adopt(&self, digest: &str, size: u64, file: &Path) {
        if !crate::digest::is_hex_digest(digest) {
            return;
        }
        let entry = self.entry_path(digest, None);
        if open_if_size(&entry, size).is_some() {
            return;
        }
        let dir = entry.parent().expect("cache entries have a parent");
        if crate::paths::mkdir_all(dir, 0o750).is_ok()
            && std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).is_ok()
        {
            let _ = std::fs::hard_link(file, &entry);
        }
    }

    /// Decode the entries of `files` (digest, size, rewrite offsets) that
    /// are not cached yet, in their order, from `threads` threads, until
    /// `stop` is set: a task that opens them next finds them ready. A file
    /// that fails is left to the open that needs it, which reports it.
    /// Returns how many were decoded.
    pub fn fill_ahead(
        &self,
        files: &[(&str, u64, &[u64])],
        target: &str,
        threads: usize,
        stop: &std::sync::atomic::AtomicBool,
    ) -> u64 {
        let next = AtomicU64::new(0);
        let before = self.counters.decoded.load(Relaxed);
        std::thread::scope(|s| {
            for _ in 0..threads.max(1) {
                s.spawn(|| {
                    crate::sys::priority::nice_this_thread();
                    while !stop.load(Relaxed) {
                        let i = next.fetch_add(1, Relaxed) as usize;
                        let Some(&(digest, size, rewrite)) = files.get(i) else {
                            break;
                        };
                        match self.open_inner(Who::Ahead, digest, size, rewrite, target) {
                            Ok(Some(_)) => {}
                            Ok(None) => tracing::debug!("decoding ahead: {digest} left to a task"),
                            Err(e) => tracing::debug!("decoding ahead: {e}"),
                        }
                    }
                });
            }
        });
        self.counters.decoded.load(Relaxed) - before
    }

    /// Open the content of a file of `size` bytes whose blob is `digest`,
    /// with `target` written at each `rewrite` offset. The returned file is
    /// read-only and holds exactly the bytes a restore would write.
    pub fn open(
        &self,
        digest: &str,
        size: u64,
        rewrite: &[u64],
        target: &str,
    ) -> Result<(File, Source)> {
        let r = self
            .open_inner(Who::Task, digest, size, rewrite, target)
            .and_then(|o| o.ok_or_else(|| Error::Internal("a task's open gave way".into())));
        if r.is_err() {
            self.counters.failures.fetch_add(1, Relaxed);
        }
        r
    }

    /// `None`: decoding ahead left the entry to a task (see `filllock`).
    fn open_inner(
        &self,
        who: Who,
        digest: &str,
        size: u64,
        rewrite: &[u64],
        target: &str,
    ) -> Result<Option<(File, Source)>> {
        let blob_path = self.hololib.blob_path(digest);
        if !crate::digest::is_hex_digest(digest) {
            return Err(Error::blob(digest, &blob_path, "not a hex digest"));
        }
        let relocated = !rewrite.is_empty();
        if relocated && (target.is_empty() || target.contains('/') || target.starts_with('.')) {
            return Err(Error::Internal(format!("bad relocation target {target:?}")));
        }
        let entry = self.entry_path(digest, relocated.then_some(target));
        if let Some(f) = open_if_size(&entry, size) {
            self.counters.hits.fetch_add(1, Relaxed);
            return Ok(Some((f, Source::Cached)));
        }
        if let Some(remote) = &self.remote {
            remote
                .ensure(digest)
                .map_err(|e| Error::blob(digest, &blob_path, format!("not fetched: {e}")))?;
        }
        if !relocated {
            let file = blob::open_blob_file(&blob_path, digest)?;
            if sniff(&file, digest).map_err(|e| Error::blob(digest, &blob_path, e.to_string()))?
                == Codec::Raw
            {
                return self.open_raw(file, digest, size, &blob_path).map(Some);
            }
        }
        // One filler per entry in this process; others wait, then hit.
        let key = entry.to_string_lossy().into_owned();
        let gate = self
            .inflight
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _turn = gate.lock().unwrap_or_else(|p| p.into_inner());
            match open_if_size(&entry, size) {
                Some(f) => {
                    self.counters.hits.fetch_add(1, Relaxed);
                    Ok(Some((f, Source::Cached)))
                }
                None => self.fill_locked(
                    who,
                    Wanted {
                        entry: &entry,
                        blob_path: &blob_path,
                        digest,
                        size,
                        rewrite,
                        target,
                    },
                ),
            }
        };
        let mut map = self.inflight.lock().unwrap();
        if Arc::strong_count(&gate) <= 2 {
            map.remove(&key);
        }
        result
    }

    fn open_raw(
        &self,
        file: File,
        digest: &str,
        size: u64,
        blob_path: &Path,
    ) -> Result<(File, Source)> {
        let len = file
            .metadata()
            .map_err(|e| Error::blob(digest, blob_path, e.to_string()))?
            .len();
        if len != size {
            return Err(Error::blob(
                digest,
                blob_path,
                format!("raw blob has {len} bytes, the catalog says {size}"),
            ));
        }
        if !self.raw_ok.lock().unwrap().contains(digest) {
            blob::copy_verified(blob_path, digest, &mut io::sink())?;
            self.raw_ok.lock().unwrap().insert(digest.to_string());
            self.counters.raw_verified.fetch_add(1, Relaxed);
        }
        self.counters.raw_opened.fetch_add(1, Relaxed);
        Ok((file, Source::Raw))
    }

    /// Fill `entry` for `who`, in turn with other processes (`filllock`):
    /// a task waits for another task's filler and for decoding ahead that
    /// makes progress; decoding ahead leaves alone what a task fills.
    fn fill_locked(&self, who: Who, wanted: Wanted) -> Result<Option<(File, Source)>> {
        let Wanted { entry, size, .. } = wanted;
        let dir = entry.parent().expect("cache entries have a parent");
        crate::paths::mkdir_all(dir, 0o750)?;
        let fill = |ahead| self.fill(wanted, ahead);
        if who == Who::Ahead {
            return match filllock::ahead_file(entry) {
                Some(file) => fill(Some(file)),
                None => Ok(None),
            };
        }
        let Some(lock) = FillLock::open(entry) else {
            return fill(None);
        };
        let landed = || open_if_size(entry, size);
        let filled = || landed().is_some();
        let turn = lock.take_for_task(filled);
        if turn == Turn::TimedOut {
            tracing::warn!(
                "{}: waited {:?} for another process to fill it; filling it here",
                entry.display(),
                filllock::WAIT
            );
        }
        // The entry may have landed between our first look and the lock,
        // or be about to, from decoding ahead.
        let found = landed().or_else(|| lock.wait_for_ahead(entry, filled).then(landed)?);
        let r = match found {
            Some(f) => {
                self.counters.hits.fetch_add(1, Relaxed);
                Ok(Some((f, Source::Cached)))
            }
            None => fill(None),
        };
        if turn == Turn::Filler {
            lock.done();
        }
        r
    }

    /// Decode into a temp file and rename it into place. Decoding ahead
    /// brings its own (`ahead`) and gives up (`None`) as soon as a task
    /// decodes the entry itself.
    fn fill(
        &self,
        wanted: Wanted,
        ahead: Option<(PathBuf, File)>,
    ) -> Result<Option<(File, Source)>> {
        let Wanted {
            entry,
            blob_path,
            digest,
            size,
            rewrite,
            target,
        } = wanted;
        let _s = tracing::debug_span!("blob.decode", digest = &digest[..12], size).entered();
        let gave_way = std::cell::Cell::new(false);
        let watched = ahead.is_some();
        let (tmp, mut f) = match ahead {
            Some(a) => a,
            None => {
                let tmp = filllock::unique_sibling(entry)
                    .ok_or_else(|| Error::Internal(format!("{}: no file name", entry.display())))?;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_CLOEXEC)
                    .open(&tmp)
                    .map_err(|e| Error::io(&tmp, e))?;
                (tmp, f)
            }
        };
        let written = (|| -> Result<()> {
            let f = &mut f;
            let n = if watched {
                let mut w = Watched::new(f, entry, size, &gave_way);
                blob::copy_verified(blob_path, digest, &mut w)?
            } else {
                blob::copy_verified(blob_path, digest, f)?
            };
            if n != size {
                return Err(Error::blob(
                    digest,
                    blob_path,
                    format!("decodes to {n} bytes, the catalog says {size}"),
                ));
            }
            if !rewrite.is_empty() {
                let offsets: Vec<i64> = rewrite.iter().map(|&o| o as i64).collect();
                crate::relocate::patch_file(f, size, &offsets, target.as_bytes())
                    .map_err(|e| Error::blob(digest, blob_path, format!("relocation: {e}")))?;
            }
            f.set_permissions(std::fs::Permissions::from_mode(0o444))
                .map_err(|e| Error::io(&tmp, e))?;
            // A task that stopped waiting (decoding ahead stalled) in the
            // last MiB decodes it too: one decode counted, not two.
            if watched {
                // The task claims the file after its last look at byte 1:
                // only then does the link fail.
                if not_ours(entry, size) || !filllock::commit_ahead(f, &tmp, entry) {
                    gave_way.set(true);
                    return Err(Error::Internal("a task decodes this entry itself".into()));
                }
                return Ok(());
            }
            std::fs::rename(&tmp, entry).map_err(|e| Error::io(entry, e))
        })();
        if let Err(e) = written {
            if watched {
                filllock::remove_if_ours(&tmp, &f);
            } else {
                let _ = std::fs::remove_file(&tmp);
            }
            return if gave_way.get() { Ok(None) } else { Err(e) };
        }
        self.counters.bytes_written.fetch_add(size, Relaxed);
        let source = if rewrite.is_empty() {
            self.counters.decoded.fetch_add(1, Relaxed);
            Source::Decoded
        } else {
            self.counters.relocated.fetch_add(1, Relaxed);
            Source::Relocated
        };
        let f = open_if_size(entry, size)
            .ok_or_else(|| Error::io(entry, io::Error::other("vanished right after filling")))?;
        Ok(Some((f, source)))
    }
}

/// A cache entry to fill: where it goes, the blob it comes from, what the
/// catalog says of the file.
#[derive(Debug, Clone, Copy)]
struct Wanted<'a> {
    entry: &'a Path,
    blob_path: &'a Path,
    digest: &'a str,
    size: u64,
    rewrite: &'a [u64],
    target: &'a str,
}

/// Who asks for an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// An open for a task (FUSE, image build, restore).
    Task,
    /// Decoding ahead, at nice 19: never makes a task wait.
    Ahead,
}

/// Decoding ahead's entry of `size` bytes is no longer its to fill: a task
/// decodes it itself, or already did (its lock file is gone then, the
/// entry is in place; a short one a crash left is still ahead's to mend).
fn not_ours(entry: &Path, size: u64) -> bool {
    filllock::task_decodes(entry) || entry.symlink_metadata().is_ok_and(|m| m.len() == size)
}

/// A decoding-ahead fill's sink: every MiB it asks whether the entry is
/// still its to fill ([`not_ours`]), and fails the write if not.
struct Watched<'a> {
    inner: &'a mut File,
    entry: &'a Path,
    size: u64,
    unchecked: usize,
    gave_way: &'a std::cell::Cell<bool>,
}

impl<'a> Watched<'a> {
    fn new(
        inner: &'a mut File,
        entry: &'a Path,
        size: u64,
        gave_way: &'a std::cell::Cell<bool>,
    ) -> Self {
        Watched {
            inner,
            entry,
            size,
            unchecked: 0,
            gave_way,
        }
    }
}

impl io::Write for Watched<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.unchecked += buf.len();
        if self.unchecked >= 1 << 20 {
            self.unchecked = 0;
            if not_ours(self.entry, self.size) {
                self.gave_way.set(true);
                return Err(io::Error::other("a task needs this entry now"));
            }
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Open a cache entry read-only if it is a regular file of `size` bytes.
fn open_if_size(path: &Path, size: u64) -> Option<File> {
    // O_NONBLOCK: a FIFO at the entry's name must not block the open.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = f.metadata().ok()?;
    if !(meta.is_file() && meta.len() == size) {
        return None;
    }
    blob::clear_nonblock(&f).ok()?;
    Some(f)
}

fn sniff(file: &File, digest: &str) -> io::Result<Codec> {
    let mut head = [0u8; 4];
    let n = blob::read_head(file, &mut head)?;
    Ok(Codec::of_blob(digest, &head[..n]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestKind;
    use std::io::Read;

    fn put_blob(lib: &Hololib, stored: &[u8], digest: &str) {
        let p = lib.blob_path(digest);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, stored).unwrap();
    }

    fn read(mut f: File) -> Vec<u8> {
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn decode_relocate_raw_and_corrupt() {
        let t = tempfile::tempdir().unwrap();
        let lib = Hololib::new(t.path().join("lib"));
        let cache = BlobCache::new(lib.clone(), t.path().join("blobs"));
        let content = b"#!/x/IDENTITY/bin/python\nIDENTITY end\n".to_vec();
        let d = DigestKind::Sha256.digest(&content);
        put_blob(&lib, &crate::hololib::catalog::gzip_bytes(&content), &d);
        let n = content.len() as u64;

        let (f, s) = cache.open(&d, n, &[], "").unwrap();
        assert_eq!((read(f), s), (content.clone(), Source::Decoded));
        let (f, s) = cache.open(&d, n, &[], "").unwrap();
        assert_eq!((read(f), s), (content.clone(), Source::Cached));
        let meta = std::fs::metadata(cache.entry_path(&d, None)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);

        let (f, s) = cache.open(&d, n, &[5, 25], "TARGETNA").unwrap();
        assert_eq!(s, Source::Relocated);
        assert_eq!(read(f), b"#!/x/TARGETNA/bin/python\nTARGETNA end\n");
        assert!(cache.entry_path(&d, Some("TARGETNA")).is_file());

        // A cache entry of the wrong size is never served, but rebuilt.
        std::fs::remove_file(cache.entry_path(&d, None)).unwrap();
        std::fs::write(cache.entry_path(&d, None), b"short").unwrap();
        let (f, s) = cache.open(&d, n, &[], "").unwrap();
        assert_eq!((read(f), s), (content.clone(), Source::Decoded));

        // Raw blob: served in place, verified once.
        let raw = b"plain bytes".to_vec();
        let rd = DigestKind::Sip128.digest(&raw);
        put_blob(&lib, &raw, &rd);
        for _ in 0..2 {
            let (f, s) = cache.open(&rd, raw.len() as u64, &[], "").unwrap();
            assert_eq!((read(f), s), (raw.clone(), Source::Raw));
        }
        assert_eq!(cache.stats().raw_verified, 1);
        // A raw blob that is itself a gzip file (botocore's `.json.gz`):
        // served as stored, never decoded.
        let gz = crate::hololib::catalog::gzip_bytes(b"{}");
        let gd = DigestKind::Sip128.digest(&gz);
        put_blob(&lib, &gz, &gd);
        let (f, s) = cache.open(&gd, gz.len() as u64, &[], "").unwrap();
        assert_eq!((read(f), s), (gz.clone(), Source::Raw));

        // Corrupt blob: error naming the blob, nothing cached, no temp left.
        let bad = b"good content".to_vec();
        let bd = DigestKind::Sha256.digest(&bad);
        put_blob(
            &lib,
            &crate::hololib::catalog::gzip_bytes(b"evil content"),
            &bd,
        );
        let err = cache.open(&bd, 12, &[], "").unwrap_err().to_string();
        assert!(err.contains(&bd) && err.contains("hashes to"), "{err}");
        let left: Vec<_> = std::fs::read_dir(cache.root().join(&bd[..2]))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // Missing blob.
        let md = DigestKind::Sha256.digest(b"nowhere");
        let err = cache.open(&md, 7, &[], "").unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        assert!(cache.open("../../etc", 7, &[], "").is_err());
    }

    /// A hololib under `t` with one gzip blob of 2 MB; its content and digest.
    fn two_megabyte_blob(t: &Path) -> (Hololib, Vec<u8>, String) {
        let lib = Hololib::new(t.join("lib"));
        let content: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let d = DigestKind::Sha256.digest(&content);
        put_blob(&lib, &crate::hololib::catalog::gzip_bytes(&content), &d);
        (lib, content, d)
    }

    #[test]
    fn threads_racing_fill_once() {
        let t = tempfile::tempdir().unwrap();
        let (lib, content, d) = two_megabyte_blob(t.path());
        let cache = Arc::new(BlobCache::new(lib, t.path().join("blobs")));
        let hs: Vec<_> = (0..8)
            .map(|_| {
                let c = cache.clone();
                let d = d.clone();
                std::thread::spawn(move || read(c.open(&d, 2_000_000, &[], "").unwrap().0))
            })
            .collect();
        for h in hs {
            assert!(h.join().unwrap() == content);
        }
        assert_eq!(cache.stats().decoded, 1);
        assert_eq!(cache.stats().hits, 7);
    }

    /// A run's decode-ahead (its own cache) is half-way through a big blob
    /// when the task's server opens it: the server waits for it instead of
    /// decoding the same bytes a second time. (On a machine so busy that
    /// decoding ahead stalls, the server decodes it and decoding ahead
    /// gives up: one decode either way.)
    #[test]
    fn an_open_takes_the_entry_decoding_ahead_is_writing() {
        let t = tempfile::tempdir().unwrap();
        let lib = Hololib::new(t.path().join("lib"));
        let mut x = 1u32;
        let content: Vec<u8> = (0..16_000_000u32)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                b"abcdefghijklmnop"[(x >> 28) as usize]
            })
            .collect();
        let d = DigestKind::Sha256.digest(&content);
        put_blob(&lib, &crate::hololib::catalog::gzip_bytes(&content), &d);
        let ahead = BlobCache::new(lib.clone(), t.path().join("blobs"));
        let task = BlobCache::new(lib, t.path().join("blobs"));
        let entry = task.entry_path(&d, None);
        let ahead_file = entry.with_file_name(format!(".{d}.ahead.tmp"));
        let size = content.len() as u64;
        // At the test's priority, not fill_ahead's nice 19: the other tests
        // running beside it would starve it.
        let (got, source, ahead_decoded) = std::thread::scope(|s| {
            let h = s.spawn(|| ahead.open_inner(Who::Ahead, &d, size, &[], "").unwrap());
            while !std::fs::metadata(&ahead_file).is_ok_and(|m| m.len() > 0) {
                assert!(!h.is_finished(), "decoding ahead ended before it wrote");
                std::thread::yield_now();
            }
            let (f, source) = task.open(&d, size, &[], "").unwrap();
            let ahead_decoded = h.join().unwrap().is_some();
            (read(f), source, ahead_decoded)
        });
        assert!(got == content);
        let task_decoded = task.stats().decoded == 1;
        assert!(
            ahead_decoded != task_decoded,
            "decoded by decoding ahead: {ahead_decoded}, by the task: {task_decoded}"
        );
        if ahead_decoded {
            assert_eq!((source, task.stats().hits), (Source::Cached, 1));
        }
        let left: Vec<_> = std::fs::read_dir(entry.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![entry.file_name().unwrap().to_owned()]);
    }

    /// Two caches of one process over the same directory (a run's
    /// decode-ahead beside its tree's) filling the same entry at once: both
    /// succeed with the right bytes.
    #[test]
    fn two_caches_of_one_process_fill_the_same_entry() {
        let t = tempfile::tempdir().unwrap();
        let (lib, content, d) = two_megabyte_blob(t.path());
        for _ in 0..5 {
            let _ = std::fs::remove_dir_all(t.path().join("blobs"));
            let start = Arc::new(std::sync::Barrier::new(2));
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let cache = BlobCache::new(lib.clone(), t.path().join("blobs"));
                    let (d, start) = (d.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        cache.open(&d, 2_000_000, &[], "").map(|(f, _)| read(f))
                    })
                })
                .collect();
            for h in hs {
                assert!(h.join().unwrap().unwrap() == content);
            }
        }
    }
}
