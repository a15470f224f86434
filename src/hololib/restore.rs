//! Copy restore: write a catalog's environment out of the hololib into a
//! directory, as rcc's `RestoreTo` does (htfs/library.go, functions.go):
//!
//! - the target's basename replaces the catalog's identity at every
//!   `rewrite` offset, so it must have the identity's length (rcc also
//!   demands the same parent directory; vhrun only warns, because the bytes
//!   are right either way and tests restore elsewhere);
//! - directories are made 0750 and get mtime 1610000000 before any file is
//!   written (rcc's `MakeBranches`), so a directory that receives files ends
//!   up with the current mtime, exactly as after rcc; catalog dir modes are
//!   not applied (rcc does not either);
//! - every file is decoded from its blob into `<file>.part#n`, its digest
//!   checked (unrelocated content), the target name written at each offset,
//!   then chmod (full Go mode: setuid/setgid/sticky too) and atime/mtime
//!   1610000000 on the open file, and a rename into place;
//! - symlinked files and directories are recreated as links (nothing below a
//!   symlinked directory is written);
//! - in an existing target, entries the catalog does not have are removed and
//!   every file is rewritten (rcc keeps files whose size and mode match;
//!   vhrun does not trust that).
//!
//! Not done, on purpose: rcc touches the catalog's mtime and
//! `hololib/used/<blueprint>.<uhi>` after a restore; vhrun never modifies a
//! hololib it did not write. `<target>.meta` is written by [`write_meta`]
//! (the `restore` command does, as rcc; `--no-meta` skips it).

use crate::digest::DigestKind;
use crate::error::{Error, IoContext, Result};
use crate::gomode;
use crate::hololib::blob::{self, Codec};
use crate::hololib::catalog::catalog_name;
use crate::hololib::part::PartFile;
use crate::hololib::{Catalog, Dir, File, Hololib};
use crate::paths::{absolute, mkdir_all};
use crate::relocate;
use rayon::prelude::*;
use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// rcc's `motherTime`: atime and mtime of every restored file and directory.
pub const MOTHER_TIME: i64 = 1_610_000_000;

/// Blobs and contents up to this size are decoded in memory (one read, one
/// write); bigger ones are streamed.
pub(crate) const IN_MEMORY_LIMIT: u64 = 64 << 20;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreStats {
    /// Real directories made or kept.
    pub dirs: u64,
    /// Regular files written.
    pub files: u64,
    /// Symlinks (to files and to directories) created or kept.
    pub symlinks: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries of an existing target that the catalog does not have.
    pub removed: u64,
}

/// Restore `catalog` (from `lib`) into `target`, relocated to its basename.
pub fn restore(lib: &Hololib, catalog: &Catalog, target: &Path) -> Result<RestoreStats> {
    let _span = tracing::info_span!("restore", target = %target.display()).entered();
    let target = absolute(target);
    let name = target_name(catalog, &target)?;
    let catalog_path = lib.catalog_path(&catalog_name(&catalog.blueprint, &catalog.platform));
    catalog
        .validate_names()
        .map_err(|m| Error::catalog(&catalog_path, m))?;
    let recorded_parent = Path::new(&catalog.path).parent();
    if recorded_parent != target.parent() {
        tracing::warn!(
            "{}: rcc would refuse this target: the catalog was lifted in {}, and only the basename is relocated",
            target.display(),
            recorded_parent.map_or("?".into(), |p| p.display().to_string())
        );
    }

    let existed = std::fs::symlink_metadata(&target).is_ok();
    let mut stats = RestoreStats::default();
    {
        let _s = tracing::info_span!("restore.branches").entered();
        make_branches(&target, &catalog.tree)?;
    }
    let mut drops = Vec::new();
    let mut links = Vec::new();
    plan(
        &target,
        &catalog.tree,
        existed,
        &mut drops,
        &mut links,
        &mut stats,
    )?;
    {
        let _s = tracing::info_span!("restore.files", files = drops.len()).entered();
        let written: Vec<(u64, bool)> = drops
            .par_iter()
            .map(|(sink, f)| drop_file(lib, sink, f, name.as_bytes(), IN_MEMORY_LIMIT))
            .collect::<Result<_>>()?;
        for (bytes, link) in written {
            if link {
                stats.symlinks += 1;
            } else {
                stats.files += 1;
                stats.bytes += bytes;
            }
        }
    }
    for (path, text) in links {
        restore_symlink(text, &path)?;
        stats.symlinks += 1;
    }
    tracing::info!(
        "restored {} files ({} bytes), {} symlinks, {} dirs into {}",
        stats.files,
        stats.bytes,
        stats.symlinks,
        stats.dirs,
        target.display()
    );
    Ok(stats)
}

/// The target's basename, which must be as long as the catalog's identity.
pub fn target_name(catalog: &Catalog, target: &Path) -> Result<String> {
    let name = target.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Error::Usage(format!(
            "{}: target needs a UTF-8 basename",
            target.display()
        ))
    })?;
    relocate::check_names(&catalog.identity, name).map_err(|e| {
        Error::Usage(format!(
            "{}: {e}; rcc relocates in place, so the target's name must be as long as the catalog's identity",
            target.display()
        ))
    })?;
    Ok(name.to_string())
}

/// Save the relocated catalog as `<target>.meta` (+ `.meta.info`) with
/// `controller` and `space` filled, as rcc does after a restore.
pub fn write_meta(
    catalog: &Catalog,
    target: &Path,
    controller: &str,
    space: &str,
) -> Result<PathBuf> {
    let target = absolute(target);
    let mut meta = catalog.clone();
    meta.identity = target_name(catalog, &target)?;
    meta.path = target.to_string_lossy().into_owned();
    meta.controller = controller.to_string();
    meta.space = space.to_string();
    let mut name = target.clone().into_os_string();
    name.push(".meta");
    let path = PathBuf::from(name);
    meta.save(&path)?;
    Ok(path)
}

fn mother_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(MOTHER_TIME as u64)
}

pub(crate) fn set_dir_times(path: &Path) -> Result<()> {
    let t = nix::sys::time::TimeSpec::new(MOTHER_TIME, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::io(path, e.into()))
}

/// rcc's `MakeBranches`: leaves (and dirs holding symlinked dirs) are made
/// with 0750, parents implicitly; each real dir gets the mother time.
fn make_branches(path: &Path, it: &Dir) -> Result<()> {
    if it.shadow || !it.symlink.is_empty() {
        return Ok(());
    }
    // Whatever is not a real directory where the catalog has one goes.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.is_dir() {
            std::fs::remove_file(path).at(path)?;
        }
    }
    if it.dirs.is_empty() || it.dirs.values().any(|d| !d.symlink.is_empty()) {
        mkdir_all(path, 0o750)?;
    }
    for (name, sub) in &it.dirs {
        make_branches(&path.join(name), sub)?;
    }
    set_dir_times(path)
}

type Drops<'a> = Vec<(PathBuf, &'a File)>;
type Links<'a> = Vec<(PathBuf, &'a str)>;

/// rcc's `RestoreDirectory`, minus its writes: list what to drop and link,
/// removing extras when the target existed before.
fn plan<'a>(
    path: &Path,
    it: &'a Dir,
    scan: bool,
    drops: &mut Drops<'a>,
    links: &mut Links<'a>,
    stats: &mut RestoreStats,
) -> Result<()> {
    if it.shadow {
        return Ok(());
    }
    if !it.symlink.is_empty() {
        links.push((path.to_path_buf(), &it.symlink));
        return Ok(());
    }
    stats.dirs += 1;
    if scan {
        for entry in std::fs::read_dir(path).at(path)? {
            let entry = entry.at(path)?;
            let full = entry.path();
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            let is_dir = entry.file_type().at(&full)?.is_dir();
            if is_dir {
                if !it.dirs.contains_key(name) {
                    std::fs::remove_dir_all(&full).at(&full)?;
                    stats.removed += 1;
                }
                continue;
            }
            if it.dirs.get(name).is_some_and(|d| !d.symlink.is_empty()) {
                continue;
            }
            if !it.files.contains_key(name) {
                std::fs::remove_file(&full).at(&full)?;
                stats.removed += 1;
            }
        }
    }
    for (name, f) in &it.files {
        drops.push((path.join(name), f));
    }
    for (name, sub) in &it.dirs {
        plan(&path.join(name), sub, scan, drops, links, stats)?;
    }
    Ok(())
}

pub(crate) fn restore_symlink(text: &str, sink: &Path) -> Result<()> {
    if let Ok(m) = std::fs::symlink_metadata(sink) {
        if m.file_type().is_symlink()
            && std::fs::read_link(sink).is_ok_and(|t| t.as_os_str() == text)
        {
            return Ok(());
        }
        if m.is_dir() {
            std::fs::remove_dir_all(sink).at(sink)?;
        } else {
            std::fs::remove_file(sink).at(sink)?;
        }
    }
    std::os::unix::fs::symlink(text, sink).at(sink)
}

thread_local! {
    /// (blob bytes, decoded content), reused across the files a worker drops.
    static BUFS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// rcc's `DropFile`. Returns (content bytes written, was a symlink).
pub(crate) fn drop_file(
    lib: &Hololib,
    sink: &Path,
    f: &File,
    name: &[u8],
    in_memory_limit: u64,
) -> Result<(u64, bool)> {
    if !f.symlink.is_empty() {
        restore_symlink(&f.symlink, sink)?;
        return Ok((0, true));
    }
    let blob_path = lib.blob_path(&f.digest);
    let kind = DigestKind::from_hex_len(f.digest.len())
        .filter(|_| crate::digest::is_hex_digest(&f.digest))
        .ok_or_else(|| {
            Error::blob(
                &f.digest,
                &blob_path,
                format!(
                    "{}: catalog digest is not a sha256 or siphash128 hex digest",
                    sink.display()
                ),
            )
        })?;
    // Blob errors name the file being restored too.
    let for_sink = |e: Error| match e {
        Error::Blob { digest, path, msg } => Error::Blob {
            digest,
            path,
            msg: format!("{msg} (restoring {})", sink.display()),
        },
        other => other,
    };
    let mut blob_file = blob::open_blob_file(&blob_path, &f.digest).map_err(for_sink)?;
    let blob_len = blob_file
        .metadata()
        .map_err(|e| Error::blob(&f.digest, &blob_path, e.to_string()))?
        .len();
    let mut part = PartFile::create(sink, 0o600)?;
    let part_path = part.path().to_path_buf();
    let bad_offsets = |e: relocate::RelocateError| {
        Error::blob(&f.digest, &blob_path, format!("{}: {e}", sink.display()))
    };
    let written = if blob_len <= in_memory_limit && (f.size.max(0) as u64) <= in_memory_limit {
        BUFS.with(|cell| -> Result<u64> {
            let mut bufs = cell.borrow_mut();
            let (raw, content) = &mut *bufs;
            raw.clear();
            blob_file
                .read_to_end(raw)
                .map_err(|e| Error::blob(&f.digest, &blob_path, e.to_string()))?;
            let data: &mut Vec<u8> = match Codec::of_blob(&f.digest, raw) {
                Codec::Raw => raw,
                codec => {
                    content.clear();
                    content.reserve(f.size.max(0) as usize);
                    decode_slice(codec, raw, content).map_err(|e| {
                        for_sink(Error::blob(
                            &f.digest,
                            &blob_path,
                            format!("cannot decode: {e}"),
                        ))
                    })?;
                    content
                }
            };
            let got = kind.digest(data);
            if got != f.digest {
                return Err(for_sink(Error::blob(
                    &f.digest,
                    &blob_path,
                    format!("content hashes to {got}"),
                )));
            }
            relocate::patch_slice(data, &f.rewrite, name).map_err(bad_offsets)?;
            part.file().write_all(data).at(&part_path)?;
            let n = data.len() as u64;
            for b in [raw, content] {
                if b.capacity() > 16 << 20 {
                    *b = Vec::new();
                }
            }
            Ok(n)
        })?
    } else {
        drop(blob_file);
        let n = blob::copy_verified(&blob_path, &f.digest, part.file()).map_err(for_sink)?;
        relocate::check_offsets(&f.rewrite, name.len(), n).map_err(bad_offsets)?;
        relocate::patch_file(part.file(), n, &f.rewrite, name).at(&part_path)?;
        n
    };
    let file = part.file();
    file.set_permissions(std::fs::Permissions::from_mode(gomode::to_chmod(f.mode)))
        .at(&part_path)?;
    let t = mother_time();
    file.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .at(&part_path)?;
    part.commit(sink)?;
    Ok((written, false))
}

fn decode_slice(codec: Codec, raw: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    match codec {
        Codec::Gzip => flate2::bufread::MultiGzDecoder::new(raw).read_to_end(out)?,
        Codec::Zstd => zstd::stream::read::Decoder::with_buffer(raw)?.read_to_end(out)?,
        Codec::Raw => {
            out.extend_from_slice(raw);
            raw.len()
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hololib::catalog::gzip_bytes;

    #[test]
    fn streamed_and_in_memory_drops_write_the_same_file() {
        let t = tempfile::tempdir().unwrap();
        let lib = Hololib::new(t.path().join("lib"));
        let id = "hbe7c0de_0123456789abcdt";
        let mut data: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
        data[500..524].copy_from_slice(id.as_bytes());
        data[99_976..].copy_from_slice(id.as_bytes());
        for (kind, blob) in [
            (DigestKind::Sha256, gzip_bytes(&data)),
            (DigestKind::Sha256, zstd::encode_all(&data[..], 3).unwrap()),
            (DigestKind::Sip128, data.clone()),
        ] {
            let digest = kind.digest(&data);
            let path = lib.blob_path(&digest);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &blob).unwrap();
            let f = File {
                name: "f".into(),
                size: data.len() as i64,
                mode: gomode::MODE_SETUID | 0o755,
                digest: digest.clone(),
                rewrite: vec![500, 99_976],
                ..Default::default()
            };
            let mut expected = data.clone();
            expected[500..524].copy_from_slice(b"0123456_0123456_01234567");
            expected[99_976..].copy_from_slice(b"0123456_0123456_01234567");
            for limit in [u64::MAX, 0] {
                let sink = t.path().join(format!("out{limit}"));
                let (n, link) =
                    drop_file(&lib, &sink, &f, b"0123456_0123456_01234567", limit).unwrap();
                assert_eq!((n, link), (data.len() as u64, false));
                assert!(std::fs::read(&sink).unwrap() == expected);
                let m = std::fs::metadata(&sink).unwrap();
                assert_eq!(m.permissions().mode() & 0o7777, 0o4755);
                assert_eq!(std::os::unix::fs::MetadataExt::mtime(&m), MOTHER_TIME);
            }
            // an offset beyond the content is refused, nothing is left behind
            let bad = File {
                rewrite: vec![data.len() as i64 - 10],
                ..f.clone()
            };
            for limit in [u64::MAX, 0] {
                let sink = t.path().join("bad");
                assert!(drop_file(&lib, &sink, &bad, id.as_bytes(), limit).is_err());
                assert!(!sink.exists());
            }
            std::fs::remove_file(&path).unwrap();
        }
        let leftovers: Vec<_> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".part#"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
