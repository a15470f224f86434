//! rcc's hololib zips (`rcc holotree export` / `import`): entries relative
//! to the hololib, `library/<aa>/<bb>/<cc>/<digest>` (the stored blob bytes)
//! and `catalog/<blueprint>v12.<platform>` (the gzip catalog), Deflate, no
//! directory entries. Windows exports use `\` separators.
//!
//! Import is stricter than rcc's (which unzips anything as is): every entry
//! name is checked first (nothing is written if one is bad: no traversal,
//! absolute names, symlinks, unknown entries, blob directories that do not
//! match the digest), each blob's content must hash to its name before it is
//! renamed into place, existing blobs are kept, and a catalog is placed last
//! and only when every blob it needs is in the hololib.

use crate::digest::DigestKind;
use crate::error::{Error, IoContext, Result};
use crate::hololib::blob;
use crate::hololib::layout::is_catalog_name;
use crate::hololib::part::{write_via_part, PartFile};
use crate::hololib::{Catalog, Hololib};
use crate::paths::mkdir_all;
use rayon::prelude::*;
use std::collections::HashSet;
use std::io::{BufReader, Write};
use std::path::Path;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImportStats {
    /// Blob entries in the zip.
    pub blobs: u64,
    /// Of those, blobs the hololib did not have yet.
    pub new_blobs: u64,
    /// Catalog names placed.
    pub catalogs: Vec<String>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExportStats {
    pub blobs: u64,
    pub bytes: u64,
}

/// What a zip entry is, from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Blob(String),
    Catalog(String),
    /// A directory entry on the way to blobs or catalogs (`library/ab/`).
    Directory,
}

const PLATFORMS: [&str; 6] = [
    "linux_amd64",
    "linux_arm64",
    "darwin_amd64",
    "darwin_arm64",
    "windows_amd64",
    "windows_arm64",
];

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Classify an entry name as rcc's `--strict` shapes do (either separator,
/// one or two of them), but exactly: the three blob directories must be the
/// digest's first six hex digits and catalogs must be `<16hex>v12.<platform>`.
pub fn classify(name: &str) -> std::result::Result<EntryKind, String> {
    if name.contains('\0') {
        return Err("name contains NUL".into());
    }
    if name.starts_with(['/', '\\']) || name.get(1..2) == Some(":") {
        return Err("absolute name".into());
    }
    let is_dir = name.ends_with(['/', '\\']);
    let raw: Vec<&str> = name
        .trim_end_matches(['/', '\\'])
        .split(['/', '\\'])
        .collect();
    // `a//b` is allowed (rcc's pattern takes one or two separators), not more.
    let mut parts = Vec::new();
    let mut empties = 0;
    for p in raw {
        if p.is_empty() {
            empties += 1;
            if empties > 1 {
                return Err("too many separators".into());
            }
            continue;
        }
        empties = 0;
        if p == "." || p == ".." {
            return Err("relative path component".into());
        }
        parts.push(p);
    }
    let not_ours = || "not a hololib library or catalog entry".to_string();
    match parts.as_slice() {
        ["library", dirs @ ..] if is_dir && dirs.len() <= 3 => {
            if dirs.iter().all(|d| d.len() == 2 && is_lower_hex(d)) {
                Ok(EntryKind::Directory)
            } else {
                Err(not_ours())
            }
        }
        ["catalog"] if is_dir => Ok(EntryKind::Directory),
        _ if is_dir => Err(not_ours()),
        ["library", a, b, c, digest] => {
            if !crate::digest::is_hex_digest(digest) {
                return Err("blob name is not a lowercase sha256 or siphash128 hex digest".into());
            }
            if [*a, *b, *c] != [&digest[0..2], &digest[2..4], &digest[4..6]] {
                return Err("blob directories do not match its digest".into());
            }
            Ok(EntryKind::Blob(digest.to_string()))
        }
        ["catalog", file] => {
            let ok = file.len() > 20
                && is_lower_hex(&file[..16])
                && file[16..].starts_with("v12.")
                && PLATFORMS.contains(&&file[20..])
                && is_catalog_name(file);
            if ok {
                Ok(EntryKind::Catalog(file.to_string()))
            } else {
                Err("catalog name is not <16 hex>v12.<os>_<arch>".into())
            }
        }
        _ => Err(not_ours()),
    }
}

fn open_zip(path: &Path) -> Result<zip::ZipArchive<BufReader<std::fs::File>>> {
    let file = std::fs::File::open(path).at_user(path)?;
    zip::ZipArchive::new(BufReader::with_capacity(64 << 10, file))
        .map_err(|e| Error::bad_input(path, format!("not a readable zip: {e}")))
}

/// The digests a restore needs blobs for: regular files outside symlinked
/// directories (symlinks are recreated as links; rcc lifts no blob for them).
pub fn needed_digests(catalog: &Catalog) -> Vec<(String, String)> {
    let mut out = Vec::new();
    catalog.walk_files(|path, f, shadow| {
        if !shadow && f.symlink.is_empty() {
            out.push((path.to_string(), f.digest.clone()));
        }
    });
    out
}

/// The catalog names a hololib zip holds (read from its entry names only;
/// entries that are not hololib entries are skipped here, `import_zip`
/// refuses them).
pub fn catalog_names(zip_path: &Path) -> Result<Vec<String>> {
    let mut archive = open_zip(zip_path)?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| Error::bad_input(zip_path, format!("entry #{i}: {e}")))?;
        if let Ok(EntryKind::Catalog(c)) = classify(&String::from_utf8_lossy(entry.name_raw())) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Import one `rcc holotree export` zip into `lib`.
pub fn import_zip(lib: &Hololib, zip_path: &Path) -> Result<ImportStats> {
    import_zip_over(lib, &[], zip_path)
}

/// [`import_zip`] into `lib`, where a blob already in one of `have` counts
/// as present: it is not written again, and a catalog may need it (a
/// delta zip staged apart from the hololib it completes).
pub fn import_zip_over(lib: &Hololib, have: &[&Hololib], zip_path: &Path) -> Result<ImportStats> {
    let present =
        |d: &str| lib.blob_path(d).is_file() || have.iter().any(|h| h.blob_path(d).is_file());
    let _span = tracing::info_span!("import", zip = %zip_path.display()).entered();
    let mut archive = open_zip(zip_path)?;
    let bad = |name: &str, msg: &str| Error::bad_input(zip_path, format!("entry {name:?}: {msg}"));

    let mut blobs = Vec::new();
    let mut catalogs = Vec::new();
    for i in 0..archive.len() {
        let entry = archive
            .by_index_raw(i)
            .map_err(|e| Error::bad_input(zip_path, format!("entry #{i}: {e}")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let kind = classify(&name).map_err(|m| bad(&name, &m))?;
        if entry.is_symlink() {
            return Err(bad(&name, "is a symlink"));
        }
        match kind {
            EntryKind::Directory => {}
            EntryKind::Blob(d) => blobs.push((i, name, d)),
            EntryKind::Catalog(c) => catalogs.push((i, name, c)),
        }
    }
    if catalogs.is_empty() {
        return Err(Error::bad_input(
            zip_path,
            "no catalog/<blueprint>v12.<platform> entry: not an rcc holotree export",
        ));
    }
    let mut kinds: Vec<DigestKind> = blobs
        .iter()
        .filter_map(|(_, _, d)| DigestKind::from_hex_len(d.len()))
        .collect();
    kinds.dedup();
    if kinds.iter().any(|k| *k != kinds[0]) {
        return Err(Error::bad_input(
            zip_path,
            "mixes sha256 and siphash128 blob names",
        ));
    }
    lib.ensure_dirs()?;
    if let Some(&kind) = kinds.first() {
        if kind != lib.digest_kind() {
            let fresh = lib.catalogs().is_empty()
                && std::fs::read_dir(lib.library_dir())
                    .map(|mut r| r.next().is_none())
                    .unwrap_or(true);
            if fresh && kind == DigestKind::Sip128 {
                write_via_part(&lib.catalog_dir().join("compress.no"), b"", 0o644)?;
            } else {
                return Err(Error::bad_input(
                    zip_path,
                    format!(
                        "holds {} blobs but {} uses {} digests; rcc cannot mix them in one hololib",
                        if kind == DigestKind::Sha256 {
                            "gzip/sha256"
                        } else {
                            "raw/siphash128 (compress.no)"
                        },
                        lib.root.display(),
                        if lib.compress() {
                            "sha256"
                        } else {
                            "siphash128"
                        },
                    ),
                ));
            }
        }
    }

    // Blobs, in parallel: each worker reads its share through its own handle.
    let workers = rayon::current_num_threads().max(1);
    let share = blobs.len().div_ceil(workers * 4).max(1);
    let new_blobs: u64 = {
        let _s = tracing::info_span!("import.blobs", blobs = blobs.len()).entered();
        blobs
            .par_chunks(share)
            .map(|chunk| -> Result<u64> {
                let mut archive = open_zip(zip_path)?;
                let mut placed = 0;
                for (i, name, digest) in chunk {
                    if present(digest) {
                        continue;
                    }
                    place_blob(&mut archive, *i, name, digest, lib, zip_path)?;
                    placed += 1;
                }
                Ok(placed)
            })
            .collect::<Result<Vec<u64>>>()?
            .into_iter()
            .sum()
    };

    // Catalogs last, once their blobs are all there.
    let mut placed = Vec::new();
    for (i, name, file) in &catalogs {
        let (raw, catalog) = read_catalog(&mut archive, *i, name, zip_path)?;
        let missing: Vec<_> = needed_digests(&catalog)
            .into_iter()
            .filter(|(_, d)| !present(d))
            .collect();
        if let Some((path, digest)) = missing.first() {
            return Err(bad(
                name,
                &format!(
                    "{} blobs it needs are neither in the zip nor in {} (first: {path} -> {digest})",
                    missing.len(),
                    lib.root.display()
                ),
            ));
        }
        write_via_part(&lib.catalog_path(file), &raw, 0o666)?;
        placed.push(file.clone());
    }
    tracing::info!(
        "imported {}: {} blobs ({} new), catalogs {}",
        zip_path.display(),
        blobs.len(),
        new_blobs,
        placed.join(", ")
    );
    Ok(ImportStats {
        blobs: blobs.len() as u64,
        new_blobs,
        catalogs: placed,
    })
}

type Archive = zip::ZipArchive<BufReader<std::fs::File>>;

/// Entry `i` (`name`, blob `digest`) of the zip at `zip_path`, copied into
/// `lib` through a part file and committed only when it hashes to its
/// digest.
fn place_blob(
    archive: &mut Archive,
    i: usize,
    name: &str,
    digest: &str,
    lib: &Hololib,
    zip_path: &Path,
) -> Result<()> {
    let mut entry = archive
        .by_index(i)
        .map_err(|e| Error::bad_input(zip_path, format!("entry {name:?}: {e}")))?;
    land_blob(&mut entry, name, digest, lib, zip_path)
}

/// The bytes of entry `name` from `src`, placed into `lib` as blob
/// `digest` through a part file, committed only when they hash to it.
fn land_blob(
    src: &mut dyn std::io::Read,
    name: &str,
    digest: &str,
    lib: &Hololib,
    zip_path: &Path,
) -> Result<()> {
    let bad = |msg: &str| Error::bad_input(zip_path, format!("entry {name:?}: {msg}"));
    let sink = lib.blob_path(digest);
    mkdir_all(sink.parent().expect("blob has a parent"), 0o750)?;
    let mut part = PartFile::create(&sink, 0o666)?;
    let part_path = part.path().to_path_buf();
    std::io::copy(src, part.file()).map_err(|e| bad(&format!("cannot read: {e}")))?;
    part.file().flush().at(&part_path)?;
    blob::copy_verified(part.path(), digest, &mut std::io::sink()).map_err(|e| match e {
        Error::Blob { msg, .. } => bad(&msg),
        other => other,
    })?;
    part.commit(&sink)
}

/// Place the blobs of a delta zip (rccremote's answer to `/delta`) that
/// are in `wanted` into `lib`, each verified against its digest (the
/// others are ignored: the zip comes from the network), reading the
/// answer as it streams in and stopping once every blob of `wanted` has
/// been read: rccremote ends each answer with the whole catalog (1.1 MB
/// for a 12k-file environment), which a lazy fetch already has. Entries
/// are read by their local headers: stored or deflated, with sizes up
/// front or (Go's `zip.Writer.Create`) in a data descriptor after deflated
/// data; each name is checked as an import checks it. `source` names the
/// answer in errors.
///
/// `want_catalog`: also read the catalog entry (checked as an import
/// checks it) into [`Delta::catalog`], and go on until it came.
pub fn stream_delta(
    reader: impl std::io::Read,
    lib: &Hololib,
    wanted: &HashSet<&str>,
    want_catalog: bool,
    source: &Path,
) -> Result<Delta> {
    use std::io::Read;
    let bad = |msg: String| Error::bad_input(source, msg);
    let mut r = BufReader::with_capacity(64 << 10, reader);
    let mut delta = Delta::default();
    let mut left: HashSet<&str> = wanted
        .iter()
        .copied()
        .filter(|d| !lib.blob_path(d).is_file())
        .collect();
    let le16 = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    while !left.is_empty() || (want_catalog && delta.catalog.is_none()) {
        let mut head = [0u8; 30];
        match r.read_exact(&mut head[..4]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(bad(format!("download broke: {e}"))),
        }
        if head[..4] == *b"PK\x01\x02" || head[..4] == *b"PK\x05\x06" {
            // the central directory: no entry follows
            break;
        }
        if head[..4] != *b"PK\x03\x04" {
            return Err(bad(format!(
                "after {} entries: no zip entry where one was due",
                delta.placed.len() + delta.refused.len()
            )));
        }
        r.read_exact(&mut head[4..])
            .map_err(|e| bad(format!("a local header broke off: {e}")))?;
        let (flags, method) = (le16(&head, 6), le16(&head, 8));
        let size = le32(&head, 18) as u64;
        let mut meta = vec![0u8; le16(&head, 26) as usize + le16(&head, 28) as usize];
        r.read_exact(&mut meta)
            .map_err(|e| bad(format!("a local header broke off: {e}")))?;
        let name_len = le16(&head, 26) as usize;
        let name = String::from_utf8_lossy(&meta[..name_len]).into_owned();
        let kind = classify(&name).map_err(|m| bad(format!("entry {name:?}: {m}")))?;
        let described = flags & 0x8 != 0;
        let digest = match &kind {
            EntryKind::Blob(d) if left.contains(d.as_str()) => Some(d.clone()),
            _ => None,
        };
        let catalog = match kind {
            EntryKind::Catalog(c) if want_catalog => Some(c),
            _ => None,
        };
        let mut land = |src: &mut dyn Read| -> Result<()> {
            if let Some(c) = &catalog {
                let (raw, _) = read_catalog_from(src, &name, source)?;
                delta.catalog = Some((c.clone(), raw));
                return Ok(());
            }
            match &digest {
                Some(d) => match land_blob(src, &name, d, lib, source) {
                    Ok(()) => {
                        delta.placed.push(d.clone());
                        Ok(())
                    }
                    Err(Error::BadInput { msg, .. }) => {
                        // the rest of the entry is skipped below
                        delta.refused.push((d.clone(), msg));
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
                None => std::io::copy(src, &mut std::io::sink())
                    .map(drop)
                    .map_err(|e| bad(format!("entry {name:?}: {e}"))),
            }
        };
        match (method, described) {
            (0, false) => {
                let mut entry = (&mut r).take(size);
                land(&mut entry)?;
                std::io::copy(&mut entry, &mut std::io::sink())
                    .map_err(|e| bad(format!("entry {name:?}: {e}")))?;
            }
            (8, _) => {
                let mut entry = flate2::bufread::DeflateDecoder::new(&mut r);
                land(&mut entry)?;
                std::io::copy(&mut entry, &mut std::io::sink())
                    .map_err(|e| bad(format!("entry {name:?}: {e}")))?;
                if !described && entry.total_in() != size {
                    return Err(bad(format!("entry {name:?}: deflate data of another size")));
                }
            }
            _ => {
                return Err(bad(format!(
                    "entry {name:?}: compression method {method}{} cannot be streamed",
                    if described {
                        " with a data descriptor"
                    } else {
                        ""
                    }
                )))
            }
        }
        if described {
            // [signature] crc32, compressed size, size (32-bit: Go writes
            // zip64 descriptors only past 4 GiB). Read, not peeked: the
            // buffer may hold fewer than 4 bytes of it.
            let mut desc = [0u8; 16];
            r.read_exact(&mut desc[..4])
                .map_err(|e| bad(format!("a data descriptor broke off: {e}")))?;
            let rest = if desc[..4] == *b"PK\x07\x08" { 12 } else { 8 };
            r.read_exact(&mut desc[4..4 + rest])
                .map_err(|e| bad(format!("a data descriptor broke off: {e}")))?;
        }
        if let Some(d) = &digest {
            left.remove(d.as_str());
        }
    }
    Ok(delta)
}

/// Catalog entry `i` (`name`) of the zip: its bytes, parsed and checked.
fn read_catalog(
    archive: &mut Archive,
    i: usize,
    name: &str,
    zip_path: &Path,
) -> Result<(Vec<u8>, Catalog)> {
    let mut entry = archive
        .by_index(i)
        .map_err(|e| Error::bad_input(zip_path, format!("entry {name:?}: {e}")))?;
    read_catalog_from(&mut entry, name, zip_path)
}

/// The bytes of catalog entry `name` from `src`, parsed and checked
/// (`source` names the zip in errors).
fn read_catalog_from(
    src: &mut dyn std::io::Read,
    name: &str,
    source: &Path,
) -> Result<(Vec<u8>, Catalog)> {
    let bad = |msg: &str| Error::bad_input(source, format!("entry {name:?}: {msg}"));
    let mut raw = Vec::new();
    let cap = crate::hololib::catalog::MAX_DECODED_CAP;
    std::io::Read::read_to_end(&mut std::io::Read::take(src, cap + 1), &mut raw)
        .map_err(|e| bad(&format!("cannot read: {e}")))?;
    if raw.len() as u64 > cap {
        return Err(bad(&format!("more than {} MiB: not a catalog", cap >> 20)));
    }
    let catalog = Catalog::from_bytes(&raw).map_err(|m| bad(&m))?;
    catalog.validate_names().map_err(|m| bad(&m))?;
    Ok((raw, catalog))
}

/// Where a zip's entries start, from its central directory: what a lazy
/// fetch reads from the end of an answer (an HTTP range) to ask next for
/// only the span of its blobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipIndex {
    /// Entry names and the offsets of their local headers, in zip order.
    pub entries: Vec<(String, u64)>,
    /// Where the central directory starts (the end of the last entry).
    pub directory: u64,
}

impl ZipIndex {
    /// Read the index from `tail`, the last bytes of a zip of `total`
    /// bytes. `Err` when the tail does not hold the whole central
    /// directory or is not one (zip64 included: a delta is far smaller).
    pub fn from_tail(tail: &[u8], total: u64) -> std::result::Result<ZipIndex, String> {
        let le16 = |at: usize| u16::from_le_bytes([tail[at], tail[at + 1]]) as usize;
        let le32 = |at: usize| {
            u32::from_le_bytes([tail[at], tail[at + 1], tail[at + 2], tail[at + 3]]) as u64
        };
        let start = total
            .checked_sub(tail.len() as u64)
            .ok_or("the tail is longer than the zip")?;
        // the end record: 22 bytes, then a comment of up to 64 KiB
        let eocd = (0..=tail.len().saturating_sub(22))
            .rev()
            .take(1 << 16)
            .find(|&i| tail[i..].starts_with(b"PK\x05\x06") && i + 22 + le16(i + 20) == tail.len())
            .ok_or("no end of central directory record")?;
        let (count, size, offset) = (le16(eocd + 10), le32(eocd + 12), le32(eocd + 16));
        if offset + size != start + eocd as u64 {
            return Err("the central directory is not where the end record puts it".into());
        }
        let mut at = offset
            .checked_sub(start)
            .ok_or("the tail does not reach back to the central directory")?
            as usize;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            if at + 46 > eocd || !tail[at..].starts_with(b"PK\x01\x02") {
                return Err("a central directory entry is broken".into());
            }
            let (n, x, c) = (le16(at + 28), le16(at + 30), le16(at + 32));
            let local = le32(at + 42);
            let name = tail
                .get(at + 46..at + 46 + n)
                .ok_or("a central directory entry is broken")?;
            if local >= offset {
                return Err("an entry starts after the central directory".into());
            }
            entries.push((String::from_utf8_lossy(name).into_owned(), local));
            at += 46 + n + x + c;
        }
        Ok(ZipIndex {
            entries,
            directory: offset,
        })
    }

    /// The end of the last entry `keep` selects: where a range holding
    /// all of them may stop (the next entry's start, or the directory).
    pub fn end_of(&self, keep: impl Fn(&str) -> bool) -> Option<u64> {
        let mut starts: Vec<(u64, bool)> =
            self.entries.iter().map(|(n, o)| (*o, keep(n))).collect();
        starts.sort_unstable();
        let last = starts.iter().rposition(|&(_, k)| k)?;
        Some(starts.get(last + 1).map_or(self.directory, |&(o, _)| o))
    }

    /// The byte span of entry `name` (its local header to the next entry).
    pub fn span_of(&self, name: &str) -> Option<(u64, u64)> {
        let (_, from) = self.entries.iter().find(|(n, _)| n == name)?;
        let to = self
            .entries
            .iter()
            .map(|&(_, o)| o)
            .filter(|&o| o > *from)
            .min()
            .unwrap_or(self.directory);
        Some((*from, to))
    }
}

/// What a delta zip (rccremote's answer to `/delta`) brought.
#[derive(Debug, Default)]
pub struct Delta {
    /// Digests of the blobs placed into the hololib.
    pub placed: Vec<String>,
    /// Blobs refused (a digest mismatch, an unreadable entry), and why:
    /// one bad blob costs only the files that need it.
    pub refused: Vec<(String, String)>,
    /// The catalog entry: its name and bytes (checked, not written).
    pub catalog: Option<(String, Vec<u8>)>,
}

/// Export catalog `key` of `lib` and its blobs to `out`, laid out as rcc's
/// export: blobs first (each once, catalog order), then the catalog.
/// Every blob a restore needs must exist; blobs of symlinks (which rcc's
/// export also wants) are included when present and skipped otherwise.
pub fn export_zip(lib: &Hololib, key: &str, out: &Path) -> Result<ExportStats> {
    let _span = tracing::info_span!("export", key, out = %out.display()).entered();
    let catalog_path = lib.catalog_path(key);
    let raw = std::fs::read(&catalog_path).at(&catalog_path)?;
    let catalog = Catalog::from_bytes(&raw).map_err(|m| Error::catalog(&catalog_path, m))?;
    catalog
        .validate_names()
        .map_err(|m| Error::catalog(&catalog_path, m))?;

    let needed: HashSet<String> = needed_digests(&catalog)
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    let mut seen = HashSet::new();
    let mut digests = Vec::new();
    let mut first_error = None;
    catalog.walk_files(|path, f, _| {
        if !seen.insert(f.digest.clone()) {
            return;
        }
        let present = crate::digest::is_hex_digest(&f.digest) && lib.blob_path(&f.digest).is_file();
        if present {
            digests.push(f.digest.clone());
        } else if needed.contains(&f.digest) && first_error.is_none() {
            first_error = Some(Error::blob(
                &f.digest,
                lib.blob_path(&f.digest),
                format!("missing (needed for {path} of {key}); cannot export"),
            ));
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }

    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(Error::NotFound {
                path: parent.to_path_buf(),
            });
        }
    }
    let mut part = PartFile::create(out, 0o666)?;
    let part_path = part.path().to_path_buf();
    let zerr = |e: zip::result::ZipError| Error::io(&part_path, std::io::Error::other(e));
    let mut stats = ExportStats::default();
    {
        let writer = std::io::BufWriter::with_capacity(256 << 10, part.file());
        let mut zip = zip::ZipWriter::new(writer);
        let options = |len: u64| {
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .compression_level(Some(1))
                .last_modified_time(zip::DateTime::DEFAULT)
                .system(zip::System::Dos)
                .large_file(len >= u32::MAX as u64)
        };
        for d in &digests {
            let blob_path = lib.blob_path(d);
            let mut f = blob::open_blob_file(&blob_path, d)?;
            let len = f.metadata().at(&blob_path)?.len();
            let rel = format!("library/{}/{}/{}/{d}", &d[0..2], &d[2..4], &d[4..6]);
            zip.start_file(rel, options(len)).map_err(zerr)?;
            std::io::copy(&mut f, &mut zip).at(&blob_path)?;
            stats.blobs += 1;
            stats.bytes += len;
        }
        zip.start_file(format!("catalog/{key}"), options(raw.len() as u64))
            .map_err(zerr)?;
        zip.write_all(&raw).at(&part_path)?;
        let mut writer = zip.finish().map_err(zerr)?;
        writer.flush().at(&part_path)?;
    }
    part.commit(out)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delta as Go's `zip.Writer.Create` writes it (deflated, sizes in
    /// data descriptors) and as a seekable writer does (stored, sizes up
    /// front): blobs, then a large catalog.
    fn delta_zip(blobs: &[(&str, &[u8])], method: zip::CompressionMethod, stream: bool) -> Vec<u8> {
        use std::io::Write as _;
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        let add = |z: &mut dyn FnMut(&str, &[u8])| {
            for (d, b) in blobs {
                z(
                    &format!("library/{}/{}/{}/{d}", &d[0..2], &d[2..4], &d[4..6]),
                    b,
                );
            }
            // incompressible, as a gzip catalog is
            let mut x = 1u32;
            let big: Vec<u8> = (0..1 << 20)
                .map(|_| {
                    x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (x >> 24) as u8
                })
                .collect();
            z("catalog/0123456789abcdefv12.linux_amd64", &big);
        };
        if stream {
            let mut z = zip::ZipWriter::new_stream(Vec::new());
            add(&mut |n, b| {
                z.start_file(n, opts).unwrap();
                z.write_all(b).unwrap();
            });
            z.finish().unwrap().into_inner()
        } else {
            let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            add(&mut |n, b| {
                z.start_file(n, opts).unwrap();
                z.write_all(b).unwrap();
            });
            z.finish().unwrap().into_inner()
        }
    }

    #[test]
    fn a_streamed_delta_lands_verified_blobs_and_stops_before_the_catalog() {
        let gz = |t: &[u8]| crate::hololib::catalog::gzip_bytes(t);
        let (a, b) = (gz(b"alpha"), gz(b"beta"));
        let da = DigestKind::Sha256.digest(b"alpha");
        let db = DigestKind::Sha256.digest(b"beta");
        let evil = gz(b"evil");
        for (method, stream) in [
            (zip::CompressionMethod::Deflated, true),
            (zip::CompressionMethod::Stored, false),
            (zip::CompressionMethod::Deflated, false),
        ] {
            let t = tempfile::tempdir().unwrap();
            let lib = Hololib::new(t.path());
            let zip = delta_zip(&[(&da, &a), (&db, &evil)], method, stream);
            let mut read = 0u64;
            struct Count<'a>(&'a [u8], &'a mut u64);
            impl std::io::Read for Count<'_> {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    let n = std::io::Read::read(&mut self.0, buf)?;
                    *self.1 += n as u64;
                    Ok(n)
                }
            }
            let wanted: HashSet<&str> = [da.as_str(), db.as_str()].into();
            let d = stream_delta(
                Count(&zip, &mut read),
                &lib,
                &wanted,
                false,
                Path::new("test"),
            )
            .unwrap();
            assert_eq!(d.placed, vec![da.clone()], "{method:?}");
            assert_eq!(d.refused.len(), 1, "{method:?}");
            assert!(d.refused[0].1.contains("hashes to"), "{:?}", d.refused);
            assert!(lib.blob_path(&da).is_file() && !lib.blob_path(&db).exists());
            assert!(
                read < (zip.len() as u64) / 2,
                "{method:?}: read {read} of {} bytes: the catalog too",
                zip.len()
            );
            // a good b in a second answer
            let zip = delta_zip(&[(&db, &b)], method, stream);
            let d = stream_delta(&zip[..], &lib, &wanted, false, Path::new("test")).unwrap();
            assert_eq!(d.placed, vec![db.clone()]);
        }
    }

    /// A streamed answer (entries with data descriptors) arriving in odd
    /// pieces, so that descriptors straddle the reader's buffer: every blob
    /// lands (a descriptor's signature is read, not peeked at).
    #[test]
    fn descriptors_split_across_reads_lose_no_blob() {
        let gz = |t: &[u8]| crate::hololib::catalog::gzip_bytes(t);
        let texts: Vec<Vec<u8>> = (0..40).map(|i| format!("blob {i}").into_bytes()).collect();
        let blobs: Vec<(String, Vec<u8>)> = texts
            .iter()
            .map(|t| (DigestKind::Sha256.digest(t), gz(t)))
            .collect();
        let refs: Vec<(&str, &[u8])> = blobs
            .iter()
            .map(|(d, b)| (d.as_str(), b.as_slice()))
            .collect();
        let zip = delta_zip(&refs, zip::CompressionMethod::Deflated, true);
        struct Pieces<'a>(&'a [u8], usize);
        impl std::io::Read for Pieces<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.1 += 1;
                let n = (self.1 % 7 + 1).min(buf.len()).min(self.0.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let t = tempfile::tempdir().unwrap();
        let lib = Hololib::new(t.path());
        let wanted: HashSet<&str> = blobs.iter().map(|(d, _)| d.as_str()).collect();
        let d = stream_delta(Pieces(&zip, 0), &lib, &wanted, false, Path::new("t")).unwrap();
        assert_eq!(d.placed.len(), blobs.len(), "refused: {:?}", d.refused);
        // Bytes that are no local header where one is due are an error, not
        // the end of the answer.
        let mut garbled = zip.clone();
        let second = garbled
            .windows(4)
            .enumerate()
            .filter(|(_, w)| *w == b"PK\x03\x04")
            .nth(1)
            .unwrap()
            .0;
        garbled[second] = b'X';
        let t = tempfile::tempdir().unwrap();
        let lib = Hololib::new(t.path());
        let d = stream_delta(&garbled[..], &lib, &wanted, false, Path::new("t"));
        assert!(
            matches!(&d, Err(Error::BadInput { msg, .. }) if msg.contains("no zip entry")),
            "{d:?}"
        );
    }

    #[test]
    fn a_zip_tail_tells_where_its_blobs_end_and_its_catalog_lies() {
        let gz = |t: &[u8]| crate::hololib::catalog::gzip_bytes(t);
        let (da, db) = (
            DigestKind::Sha256.digest(b"alpha"),
            DigestKind::Sha256.digest(b"beta"),
        );
        let blob = |d: &str| format!("library/{}/{}/{}/{d}", &d[0..2], &d[2..4], &d[4..6]);
        for (method, stream) in [
            (zip::CompressionMethod::Deflated, true),
            (zip::CompressionMethod::Stored, false),
        ] {
            let zip = delta_zip(&[(&da, &gz(b"alpha")), (&db, &gz(b"beta"))], method, stream);
            let total = zip.len() as u64;
            let tail = &zip[zip.len() - 600..];
            let ix = ZipIndex::from_tail(tail, total).unwrap();
            assert_eq!(ix.entries.len(), 3);
            let cat = "catalog/0123456789abcdefv12.linux_amd64";
            let (from, to) = ix.span_of(cat).unwrap();
            assert_eq!(to, ix.directory);
            assert_eq!(ix.end_of(|n| n == blob(&db) || n == blob(&da)), Some(from));
            let first = ix.end_of(|n| n == blob(&da)).unwrap();
            assert!(first < from);
            assert_eq!(ix.end_of(|_| false), None);
            // the blobs' span alone streams both of them in
            let t = tempfile::tempdir().unwrap();
            let lib = Hololib::new(t.path());
            let wanted: HashSet<&str> = [da.as_str(), db.as_str()].into();
            let d =
                stream_delta(&zip[..from as usize], &lib, &wanted, false, Path::new("t")).unwrap();
            assert_eq!(d.placed.len(), 2, "{method:?}");
            // the catalog's span alone is read as the catalog
            let span = &zip[from as usize..to as usize];
            let d = stream_delta(span, &lib, &HashSet::new(), true, Path::new("t"));
            assert!(
                matches!(&d, Err(Error::BadInput { msg, .. }) if msg.contains(cat)),
                "not a catalog, refused as one: {d:?}"
            );
            // a tail too short for the directory, or not a zip's, is said so
            assert!(ZipIndex::from_tail(&zip[zip.len() - 40..], total).is_err());
            assert!(ZipIndex::from_tail(&[0u8; 100], 1000).is_err());
        }
    }

    const D: &str = "fa883829ebb8cd2a602f9b21c1f85de24cf47949d520bceb1828b4cd1cb6906c";

    #[test]
    fn entry_names() {
        let blob = format!("library/fa/88/38/{D}");
        assert_eq!(classify(&blob), Ok(EntryKind::Blob(D.into())));
        assert_eq!(
            classify(&blob.replace('/', "\\")),
            Ok(EntryKind::Blob(D.into()))
        );
        assert_eq!(
            classify(&blob.replace('/', "//")),
            Ok(EntryKind::Blob(D.into()))
        );
        assert_eq!(
            classify("catalog/c34ed96c2d8a459av12.linux_amd64"),
            Ok(EntryKind::Catalog("c34ed96c2d8a459av12.linux_amd64".into()))
        );
        assert_eq!(
            classify("catalog\\c34ed96c2d8a459av12.windows_amd64"),
            Ok(EntryKind::Catalog(
                "c34ed96c2d8a459av12.windows_amd64".into()
            ))
        );
        assert_eq!(classify("library/fa/"), Ok(EntryKind::Directory));
        for bad in [
            format!("/library/fa/88/38/{D}"),
            format!("library/fa/88/38/../{D}"),
            format!("library/fa/88/39/{D}"),
            format!("library/fa/88/38/{}", D.to_uppercase()),
            format!("library///fa/88/38/{D}"),
            format!("C:\\library\\fa\\88\\38\\{D}"),
            "catalog/c34ed96c2d8a459av12.linux_amd64.info".into(),
            "catalog/../c34ed96c2d8a459av12.linux_amd64".into(),
            "catalog/c34ed96c2d8a459av12.plan9_amd64".into(),
            "../etc/passwd".into(),
            "hololib.zip".into(),
            "other/".into(),
            "library/fa/88/38/x\0".into(),
        ] {
            assert!(classify(&bad).is_err(), "{bad:?}");
        }
    }
}
