//! Lift: add a built environment directory to a hololib the way rcc's
//! `hololib.Record` does (htfs/library.go, directory.go, functions.go).
//!
//! - `identity.yaml` (the blueprint text plus a newline) is written into the
//!   directory first, as rcc writes it into its stage and as the benchmark's
//!   `pack-store.py` does (rcc v11, which wrote the linux fixture, added the
//!   newline; v18 writes the bare text). `LiftOptions::identity_yaml = false`
//!   leaves the directory untouched.
//! - The walk follows rcc's `Dir.Lift`: killfile names (also matched on Go's
//!   `filepath.Ext`) are skipped; modes, sizes and kinds come from `stat`
//!   (symlinks followed, their text kept in `symlink`); a broken symlink is
//!   recorded from `lstat` (digest `N/A`, where rcc itself would panic);
//!   a symlinked directory is walked, its contents marked `shadow`.
//! - Every file is hashed (sha256, or siphash128 in a `compress.no` hololib)
//!   over its content as found, and scanned for the directory's basename
//!   (`relocate::locate`, rcc's quirks included) for the `rewrite` offsets.
//! - Each distinct content is stored once (gzip level 1, or raw), except for
//!   symlinks and files below symlinked directories, as rcc's
//!   `ScheduleLifters`. Existing blobs are never rewritten. Unlike rcc, the
//!   catalog is saved after the blobs, so it never names a missing blob.
//! - Root fields: `rcc` = [`WRITER`] (rcc puts its own version, e.g.
//!   `v18.18.1`, there and nothing reads it back; a vhrun-made catalog says
//!   so), identity = basename, path = the absolute directory, controller and
//!   space empty (as in every rcc catalog), platform of this host, the
//!   blueprint hash, lifted = true.

use crate::digest::DigestKind;
use crate::error::{Error, IoContext, Result};
use crate::gomode;
use crate::hololib::catalog::{catalog_name, host_platform};
use crate::hololib::layout::SHARED_HOLOTREE;
use crate::hololib::part::{write_via_part, PartFile};
use crate::hololib::{Catalog, Dir, File, Hololib};
use crate::paths::{absolute, mkdir_all};
use rayon::prelude::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The catalog's `rcc` field for catalogs vhrun lifts.
pub const WRITER: &str = concat!("vhrun-v", env!("CARGO_PKG_VERSION"));

/// Files up to this size are read whole (one read, memmem scan); bigger ones
/// are streamed twice (digest + scan, then compression).
const IN_MEMORY_LIMIT: u64 = 64 << 20;

/// rcc's killfile (htfs/directory.go), matched on the name and on `Ext(name)`.
const KILLFILE: [&str; 7] = [
    "__MACOSX",
    "__pycache__",
    ".pyc",
    ".git",
    ".hg",
    ".svn",
    ".gitignore",
];

/// Go's `filepath.Ext`: from the last dot of the name, or "".
pub fn go_ext(name: &str) -> &str {
    name.rfind('.').map_or("", |i| &name[i..])
}

/// Whether rcc's lift skips this directory entry.
pub fn killed(name: &str) -> bool {
    KILLFILE.contains(&name) || KILLFILE.contains(&go_ext(name))
}

#[derive(Debug, Clone)]
pub struct LiftOptions {
    /// The blueprint text (identity.yaml content without the newline).
    pub blueprint: String,
    /// Its rcc blueprint hash (the catalog key's prefix).
    pub blueprint_hash: String,
    /// Raw blobs and siphash128 digests (creates `catalog/compress.no` in a
    /// fresh hololib; refused in one that holds gzip blobs).
    pub no_compress: bool,
    /// Write `identity.yaml` into the directory before lifting (rcc does).
    pub identity_yaml: bool,
    /// Show an indicatif progress bar on stderr.
    pub progress: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LiftStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinked_files: u64,
    pub bytes: u64,
    pub files_with_rewrite: u64,
    pub distinct_blobs: u64,
    pub new_blobs: u64,
    pub new_blob_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Lifted {
    /// Catalog file name, `<blueprint>v12.<platform>`.
    pub key: String,
    pub catalog_path: PathBuf,
    pub catalog: Catalog,
    pub stats: LiftStats,
}

/// Which digest (and blob encoding) a lift into `lib` uses, and whether
/// `compress.no` must be created (a fresh hololib lifted raw); refuses to
/// mix the two modes.
pub fn lift_mode(lib: &Hololib, no_compress: bool) -> Result<(DigestKind, bool)> {
    if !lib.compress() {
        return Ok((DigestKind::Sip128, false));
    }
    if !no_compress {
        return Ok((DigestKind::Sha256, false));
    }
    let occupied = |d: PathBuf| {
        std::fs::read_dir(&d)
            .map(|mut rd| rd.next().is_some())
            .unwrap_or(false)
    };
    if occupied(lib.library_dir()) || !lib.catalogs().is_empty() {
        return Err(Error::bad_input(
            &lib.root,
            "holds gzip blobs with sha256 digests (no catalog/compress.no); raw blobs cannot be mixed in: lift into another --hololib",
        ));
    }
    Ok((DigestKind::Sip128, true))
}

/// One file the lift reads.
struct Job {
    full: PathBuf,
    /// Store its blob (not a symlink, not below a symlinked directory).
    store: bool,
    /// A dangling symlink: nothing to read.
    broken: bool,
}

struct Digested {
    digest: String,
    rewrite: Vec<i64>,
    new_blob_bytes: Option<u64>,
}

/// Lift `dir` into `lib`: store its blobs, save its catalog, return the key.
pub fn lift(lib: &Hololib, dir: &Path, opts: &LiftOptions) -> Result<Lifted> {
    let _span = tracing::info_span!("lift", dir = %dir.display()).entered();
    let dir = absolute(dir);
    let meta = std::fs::metadata(&dir).at_user(&dir)?;
    if !meta.is_dir() {
        return Err(Error::bad_input(&dir, "not a directory"));
    }
    let identity = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::bad_input(&dir, "directory name is not UTF-8"))?
        .to_string();
    if identity.len() != 24 {
        tracing::warn!(
            "{}: basename has {} bytes; it can only be restored into names of that length (rcc space names have 24)",
            dir.display(),
            identity.len()
        );
    }
    let (kind, new_marker) = lift_mode(lib, opts.no_compress)?;
    let compress = kind == DigestKind::Sha256;

    if opts.identity_yaml {
        let path = dir.join("identity.yaml");
        let content = format!("{}\n", opts.blueprint);
        if std::fs::read(&path).ok().as_deref() != Some(content.as_bytes()) {
            write_via_part(&path, content.as_bytes(), 0o644)?;
        }
    }

    let mut tree = Dir::default();
    {
        let _s = tracing::info_span!("lift.walk").entered();
        lift_dir(&dir, &mut tree, &mut Vec::new())?;
    }
    let mut jobs = Vec::new();
    collect(&tree, &dir, false, &mut jobs);
    // The hololib is touched only once the directory has been walked.
    lib.ensure_dirs()?;
    if new_marker {
        write_via_part(&lib.catalog_dir().join("compress.no"), b"", 0o644)?;
    }

    let results = {
        let _s = tracing::info_span!("lift.hash_store", files = jobs.len()).entered();
        let bar = progress_bar(opts.progress, jobs.len() as u64);
        let claimed = Mutex::new(HashSet::new());
        let shared = lib.root == Path::new(SHARED_HOLOTREE).join("lib");
        let needle = identity.as_bytes();
        let results: Result<Vec<Digested>> = jobs
            .par_iter()
            .map(|job| {
                let r = digest_and_store(
                    job,
                    needle,
                    kind,
                    Store {
                        compress,
                        shared,
                        lib,
                        claimed: &claimed,
                    },
                    IN_MEMORY_LIMIT,
                );
                bar.inc(1);
                r
            })
            .collect();
        bar.finish_and_clear();
        results?
    };

    let mut stats = LiftStats::default();
    let mut it = results.into_iter();
    assign(&mut tree, &mut it, &mut stats);
    let mut distinct = HashSet::new();
    for (job, f) in jobs.iter().zip(files_in_order(&tree)) {
        if job.store {
            distinct.insert(f.digest.clone());
        }
    }
    stats.distinct_blobs = distinct.len() as u64;

    let platform = host_platform().to_string();
    let key = catalog_name(&opts.blueprint_hash, &platform);
    let catalog = Catalog {
        rcc_version: WRITER.to_string(),
        identity,
        path: dir.to_string_lossy().into_owned(),
        controller: String::new(),
        space: String::new(),
        platform,
        blueprint: opts.blueprint_hash.clone(),
        lifted: true,
        tree,
    };
    let catalog_path = lib.catalog_path(&key);
    {
        let _s = tracing::info_span!("lift.save_catalog").entered();
        if catalog_path.exists() {
            tracing::warn!("replacing catalog {}", catalog_path.display());
        }
        catalog.save(&catalog_path)?;
    }
    tracing::info!(
        "lifted {} files ({} bytes) in {} dirs: {} distinct blobs, {} new ({} bytes), {} files with rewrite offsets",
        stats.files,
        stats.bytes,
        stats.dirs,
        stats.distinct_blobs,
        stats.new_blobs,
        stats.new_blob_bytes,
        stats.files_with_rewrite
    );
    Ok(Lifted {
        key,
        catalog_path,
        catalog,
        stats,
    })
}

fn progress_bar(enabled: bool, len: u64) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {pos}/{len} files {elapsed}")
    {
        bar.set_style(style);
    }
    bar.set_message("lift");
    bar
}

/// rcc's `Dir.Lift` for one directory, then its subdirectories. `ancestors`
/// (device, inode) catch a symlinked directory that contains itself, where
/// rcc would recurse forever.
fn lift_dir(path: &Path, node: &mut Dir, ancestors: &mut Vec<(u64, u64)>) -> Result<()> {
    let st = std::fs::metadata(path).at(path)?;
    node.mode = gomode::from_posix(st.mode());
    let id = (st.dev(), st.ino());
    if ancestors.contains(&id) {
        return Err(Error::bad_input(
            path,
            "symlink loop: this directory is its own ancestor",
        ));
    }
    ancestors.push(id);
    let shadow = node.shadow || !node.symlink.is_empty();
    for entry in std::fs::read_dir(path).at(path)? {
        let entry = entry.at(path)?;
        let full = entry.path();
        let name = entry.file_name().into_string().map_err(|_| {
            Error::bad_input(&full, "file name is not UTF-8 (catalogs hold UTF-8 names)")
        })?;
        if killed(&name) {
            continue;
        }
        let lst = std::fs::symlink_metadata(&full).at(&full)?;
        let (info, symlink) = if lst.file_type().is_symlink() {
            let text = std::fs::read_link(&full).at(&full)?;
            let text = text
                .into_os_string()
                .into_string()
                .map_err(|_| Error::bad_input(&full, "symlink target is not UTF-8"))?;
            match std::fs::metadata(&full) {
                Ok(target) => (target, text),
                // Dangling (or looping) link: lifted as itself, as rcc does.
                Err(_) => (lst, text),
            }
        } else {
            (lst, String::new())
        };
        if info.is_dir() {
            node.dirs.insert(
                name.clone(),
                Dir {
                    name,
                    symlink,
                    shadow,
                    ..Default::default()
                },
            );
            continue;
        }
        let ft = info.file_type();
        if !ft.is_file() && !ft.is_symlink() {
            return Err(Error::bad_input(
                &full,
                "not a regular file, directory or symlink (a fifo, socket or device cannot be lifted)",
            ));
        }
        node.files.insert(
            name.clone(),
            File {
                name,
                symlink,
                size: info.len() as i64,
                mode: gomode::from_posix(info.mode()),
                digest: "N/A".to_string(),
                rewrite: Vec::new(),
            },
        );
    }
    for (name, sub) in node.dirs.iter_mut() {
        lift_dir(&path.join(name), sub, ancestors)?;
    }
    ancestors.pop();
    Ok(())
}

/// Files in catalog order (each directory's files, then its subdirectories).
fn collect(dir: &Dir, path: &Path, shadow: bool, jobs: &mut Vec<Job>) {
    for (name, f) in &dir.files {
        jobs.push(Job {
            full: path.join(name),
            store: !shadow && f.symlink.is_empty(),
            broken: gomode::is_symlink(f.mode),
        });
    }
    for (name, sub) in &dir.dirs {
        collect(
            sub,
            &path.join(name),
            shadow || sub.shadow || !sub.symlink.is_empty(),
            jobs,
        );
    }
}

fn assign(dir: &mut Dir, results: &mut impl Iterator<Item = Digested>, stats: &mut LiftStats) {
    stats.dirs += 1;
    for f in dir.files.values_mut() {
        let d = results.next().expect("one result per file");
        f.digest = d.digest;
        f.rewrite = d.rewrite;
        stats.files += 1;
        stats.bytes += f.size.max(0) as u64;
        stats.symlinked_files += !f.symlink.is_empty() as u64;
        stats.files_with_rewrite += !f.rewrite.is_empty() as u64;
        if let Some(n) = d.new_blob_bytes {
            stats.new_blobs += 1;
            stats.new_blob_bytes += n;
        }
    }
    for sub in dir.dirs.values_mut() {
        assign(sub, results, stats);
    }
}

fn files_in_order(dir: &Dir) -> Vec<&File> {
    fn go<'a>(dir: &'a Dir, out: &mut Vec<&'a File>) {
        out.extend(dir.files.values());
        for sub in dir.dirs.values() {
            go(sub, out);
        }
    }
    let mut out = Vec::new();
    go(dir, &mut out);
    out
}

/// rcc's `Locator` (digest + rewrite offsets), then `LiftFile` for the
/// first file of each new digest.
/// Where and how `digest_and_store` puts blobs.
struct Store<'a> {
    compress: bool,
    shared: bool,
    lib: &'a Hololib,
    /// Digests some worker has taken on (each blob is written once).
    claimed: &'a Mutex<HashSet<String>>,
}

fn digest_and_store(
    job: &Job,
    needle: &[u8],
    kind: DigestKind,
    store: Store<'_>,
    in_memory_limit: u64,
) -> Result<Digested> {
    let Store {
        compress,
        shared,
        lib,
        claimed,
    } = store;
    if job.broken {
        return Ok(Digested {
            digest: "N/A".to_string(),
            rewrite: Vec::new(),
            new_blob_bytes: None,
        });
    }
    let mut file = std::fs::File::open(&job.full).at(&job.full)?;
    let size = file.metadata().at(&job.full)?.len();
    let claim = |digest: &str| {
        job.store
            && claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(digest.to_string())
            && !lib.blob_path(digest).is_file()
    };
    if size <= in_memory_limit {
        let mut data = Vec::with_capacity(size as usize + 1);
        file.read_to_end(&mut data).at(&job.full)?;
        let digest = kind.digest(&data);
        let rewrite = crate::relocate::locate(&data, needle);
        let new_blob_bytes = if claim(&digest) {
            Some(store_blob(lib, &digest, &mut &data[..], compress, shared)?)
        } else {
            None
        };
        return Ok(Digested {
            digest,
            rewrite,
            new_blob_bytes,
        });
    }
    let mut hasher = kind.hasher();
    let mut locator = crate::relocate::Locator::new(needle);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(&job.full, e)),
        };
        hasher.update(&buf[..n]);
        locator.update(&buf[..n]);
    }
    let digest = hasher.finish_hex();
    let rewrite = locator.finish();
    let new_blob_bytes = if claim(&digest) {
        let mut again = std::fs::File::open(&job.full).at(&job.full)?;
        Some(store_blob(lib, &digest, &mut again, compress, shared)?)
    } else {
        None
    };
    Ok(Digested {
        digest,
        rewrite,
        new_blob_bytes,
    })
}

/// Write one blob via `<blob>.part#n` + rename: gzip level 1 with Go's
/// header (mtime 0, XFL 4, OS 255), or raw. Returns the stored size.
fn store_blob(
    lib: &Hololib,
    digest: &str,
    source: &mut dyn Read,
    compress: bool,
    shared: bool,
) -> Result<u64> {
    let sink = lib.blob_path(digest);
    let parent = sink.parent().expect("blob paths have a parent");
    mkdir_all(parent, if shared { 0o777 } else { 0o750 })?;
    let mut part = PartFile::create(&sink, 0o666)?;
    let part_path = part.path().to_path_buf();
    let stored = {
        let out = std::io::BufWriter::with_capacity(256 << 10, part.file());
        let mut out = CountingWriter { inner: out, n: 0 };
        if compress {
            let mut gz = flate2::GzBuilder::new()
                .mtime(0)
                .operating_system(255)
                .write(&mut out, flate2::Compression::fast());
            std::io::copy(source, &mut gz).at(&part_path)?;
            gz.finish().at(&part_path)?;
        } else {
            std::io::copy(source, &mut out).at(&part_path)?;
        }
        out.flush().at(&part_path)?;
        out.n
    };
    if shared {
        part.file()
            .set_permissions(std::fs::Permissions::from_mode(0o666))
            .at(&part_path)?;
    }
    part.commit(&sink)?;
    Ok(stored)
}

struct CountingWriter<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_and_in_memory_files_give_the_same_result() {
        let t = tempfile::tempdir().unwrap();
        let id = b"hbe7c0de_0123456789abcdt";
        let mut data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for at in [10usize, 32768 - 24, 65536 - 30, 200_000 - 24] {
            data[at..at + 24].copy_from_slice(id);
        }
        let file = t.path().join("f");
        std::fs::write(&file, &data).unwrap();
        let job = Job {
            full: file,
            store: true,
            broken: false,
        };
        let mut seen = Vec::new();
        for (limit, kind) in [
            (u64::MAX, DigestKind::Sha256),
            (0, DigestKind::Sha256),
            (u64::MAX, DigestKind::Sip128),
            (0, DigestKind::Sip128),
        ] {
            let lib = Hololib::new(t.path().join(format!("lib{limit}{kind:?}")));
            let claimed = Mutex::new(HashSet::new());
            let compress = kind == DigestKind::Sha256;
            let store = Store {
                compress,
                shared: false,
                lib: &lib,
                claimed: &claimed,
            };
            let d = digest_and_store(&job, id, kind, store, limit).unwrap();
            assert_eq!(d.digest, kind.digest(&data));
            assert_eq!(d.rewrite, crate::relocate::locate_literal(&data, id));
            assert!(d.new_blob_bytes.is_some());
            let blob = std::fs::read(lib.blob_path(&d.digest)).unwrap();
            assert_eq!(crate::hololib::blob::decode_all(&blob).unwrap(), data);
            assert_eq!(blob.starts_with(&[0x1f, 0x8b]), compress);
            seen.push(d.rewrite);
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn killfile_matches_name_and_go_ext() {
        for k in [
            "__pycache__",
            "x.pyc",
            ".git",
            "x.git",
            "a.b.svn",
            ".gitignore",
            "__MACOSX",
        ] {
            assert!(killed(k), "{k}");
        }
        for k in ["git", "x.py", "pyc", "x.pyc.txt", "gitignore"] {
            assert!(!killed(k), "{k}");
        }
        assert_eq!(go_ext("a.tar.gz"), ".gz");
        assert_eq!(go_ext("noext"), "");
    }
}
