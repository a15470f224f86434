//! The arena saved as a compact binary index, so a mount skips the gzip +
//! JSON decode of the catalog (about 27 ms for 12k entries, against about
//! 1 ms for this): `$VHRUN_HOME/index/<sha256 of the catalog bytes>.tree5`.
//!
//! Keyed by the catalog's content, an index can never describe another
//! catalog; a checksum catches a damaged file and every span is bounds-
//! checked on load, so a bad index is rebuilt, never trusted. Layout (all
//! little endian): magic, header counts and totals, the catalog's
//! fingerprint, checksum of the body, identity, recorded path, 44-byte node
//! records, the text pool, the rewrite offsets.
//!
//! A load maps the file instead of reading it, so it is written read-only
//! and replaced, never rewritten ([`save`], `sys::mmap`).

use super::{Defect, Node, Payload, Pool, Span, Tree};
use crate::sys::mmap::MappedFile;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"VHRUNTR4";
const HEADER: usize = 8 + 4 * 5 + 8 * 4;
/// Where the checksum sits (it covers the header before it).
const SUM_AT: usize = HEADER - 8;
const RECORD: usize = 44;

/// Index file of the catalog with these bytes.
pub fn index_path(dir: &Path, catalog_bytes: &[u8]) -> PathBuf {
    let key = crate::digest::DigestKind::Sha256.digest(catalog_bytes);
    // The format version is in the name: an older vhrun's index is ignored
    // (5: the layout of 4, written read-only for mapping).
    dir.join(format!("{}.tree5", &key[..32]))
}

/// The name under which a catalog file's index is found without reading
/// the catalog: `s-<16 hex>.tree5`, a hash of the file's path and of the
/// stat fields any write, rename or replacement changes (ctime cannot be
/// set from userspace).
pub fn stat_path(dir: &Path, catalog_path: &Path, meta: &std::fs::Metadata) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let mut key = catalog_path.as_os_str().as_bytes().to_vec();
    for v in [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ctime() as u64,
        meta.ctime_nsec() as u64,
    ] {
        key.extend_from_slice(&v.to_le_bytes());
    }
    let key = crate::digest::textual(crate::digest::sipit(&key), 0);
    dir.join(format!("s-{key}.tree5"))
}

/// Point `by_stat` at `index` (a relative symlink, replaced atomically).
/// Best effort: without it the next load reads and hashes the catalog.
pub fn link_stat_path(by_stat: &Path, index: &Path) {
    let Some(name) = index.file_name() else {
        return;
    };
    let tmp = by_stat.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let made = std::os::unix::fs::symlink(name, &tmp).and_then(|()| std::fs::rename(&tmp, by_stat));
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("{}: {e}", by_stat.display());
    }
}

pub fn encode(t: &Tree) -> Vec<u8> {
    let mut body = Vec::with_capacity(
        t.identity.len()
            + t.recorded_path.len()
            + t.nodes.len() * RECORD
            + t.text.len()
            + t.rewrites.len() * 8,
    );
    body.extend_from_slice(t.identity.as_bytes());
    body.extend_from_slice(t.recorded_path.as_bytes());
    for n in &t.nodes {
        let (kind, defect, a, b) = match n.payload {
            Payload::Dir { first, count } => (
                0u8,
                0u8,
                Span {
                    off: first,
                    len: count,
                },
                Span::default(),
            ),
            Payload::File {
                digest,
                rewrite,
                defect,
            } => (1, defect_code(defect), digest, rewrite),
            Payload::Symlink { target, file } => (2, file as u8, target, Span::default()),
        };
        body.extend_from_slice(&n.name.off.to_le_bytes());
        body.extend_from_slice(&n.name.len.to_le_bytes());
        body.extend_from_slice(&n.parent.to_le_bytes());
        body.extend_from_slice(&n.perm.to_le_bytes());
        body.push(kind);
        body.push(defect);
        body.extend_from_slice(&n.nlink.to_le_bytes());
        body.extend_from_slice(&n.size.to_le_bytes());
        for v in [a.off, a.len, b.off, b.len] {
            body.extend_from_slice(&v.to_le_bytes());
        }
    }
    body.extend_from_slice(&t.text);
    for r in &t.rewrites {
        body.extend_from_slice(&r.to_le_bytes());
    }
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(MAGIC);
    for v in [
        t.nodes.len() as u32,
        t.text.len() as u32,
        t.rewrites.len() as u32,
        t.identity.len() as u32,
        t.recorded_path.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&t.files.to_le_bytes());
    out.extend_from_slice(&t.bytes.to_le_bytes());
    out.extend_from_slice(&t.fingerprint.to_le_bytes());
    let sum = checksum(&out, &body);
    out.extend_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Covers the header fields before it and the whole body (CRC32: catches
/// damage at memory speed; the content key already pins the catalog).
/// crc32fast, not flate2's CRC: zlib-rs as flate2 builds it has no SIMD
/// CRC, which made this 15% of a `vhrun exec -- true`.
fn checksum(head: &[u8], body: &[u8]) -> u64 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(head);
    crc.update(body);
    crc.finalize() as u64
}

fn defect_code(d: Option<Defect>) -> u8 {
    match d {
        None => 0,
        Some(Defect::NegativeSize) => 1,
        Some(Defect::BadDigest) => 2,
        Some(Defect::RewriteOutOfRange) => 3,
    }
}

/// Write the index of `t` at `path`, as `load` can map it: read-only,
/// replaced by rename, never rewritten (`sys::mmap`).
pub fn save(path: &Path, t: &Tree) -> crate::Result<()> {
    crate::paths::write_atomic(path, &encode(t), 0o444)
}

/// Map and decode the index file at `path`; `None` if it is missing,
/// malformed, or not a read-only file `save` wrote. The tree's byte pool
/// stays in the mapping.
pub fn load(path: &Path, catalog_path: &Path) -> Option<Tree> {
    let map = Arc::new(MappedFile::open_immutable(path).ok()?);
    decode_with(&map, catalog_path, |start, len| Pool::Mapped {
        map: map.clone(),
        start,
        len,
    })
}

/// Decode an index held in memory; `None` for anything malformed.
#[cfg(test)]
pub fn decode(buf: &[u8], catalog_path: &Path) -> Option<Tree> {
    decode_with(buf, catalog_path, |start, len| {
        Pool::Owned(buf[start..start + len].to_vec())
    })
}

/// `pool(start, len)` makes the byte pool from `buf[start..start + len]`.
fn decode_with(
    buf: &[u8],
    catalog_path: &Path,
    pool: impl FnOnce(usize, usize) -> Pool,
) -> Option<Tree> {
    let u32_at =
        |b: &[u8], at: usize| Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let u64_at =
        |b: &[u8], at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    if buf.get(..8)? != MAGIC {
        return None;
    }
    let n_nodes = u32_at(buf, 8)? as usize;
    let n_text = u32_at(buf, 12)? as usize;
    let n_rw = u32_at(buf, 16)? as usize;
    let n_id = u32_at(buf, 20)? as usize;
    let n_path = u32_at(buf, 24)? as usize;
    let files = u64_at(buf, 28)?;
    let bytes = u64_at(buf, 36)?;
    let fingerprint = u64_at(buf, 44)?;
    let sum = u64_at(buf, SUM_AT)?;
    let body = buf.get(HEADER..)?;
    let want = n_id
        .checked_add(n_path)?
        .checked_add(n_nodes.checked_mul(RECORD)?)?
        .checked_add(n_text)?
        .checked_add(n_rw.checked_mul(8)?)?;
    if body.len() != want || checksum(&buf[..SUM_AT], body) != sum {
        return None;
    }
    let (identity, rest) = body.split_at(n_id);
    let (recorded_path, rest) = rest.split_at(n_path);
    let (recs, rest) = rest.split_at(n_nodes * RECORD);
    let (_, rw) = rest.split_at(n_text);
    let text_start = buf.len() - rw.len() - n_text;
    let in_text = |s: Span| {
        (s.off as usize)
            .checked_add(s.len as usize)
            .is_some_and(|e| e <= n_text)
    };
    let in_rw = |s: Span| {
        (s.off as usize)
            .checked_add(s.len as usize)
            .is_some_and(|e| e <= n_rw)
    };
    let mut nodes = Vec::with_capacity(n_nodes);
    for (i, r) in recs.chunks_exact(RECORD).enumerate() {
        let ino = i + 1;
        let span = |at: usize| {
            Some(Span {
                off: u32_at(r, at)?,
                len: u32_at(r, at + 4)?,
            })
        };
        let name = span(0)?;
        let parent = u32_at(r, 8)?;
        let (a, b) = (span(28)?, span(36)?);
        let payload = match r[14] {
            0 => {
                // Children are inodes first..first+count, inside the arena.
                let end = (a.off as usize).checked_add(a.len as usize)?;
                // Numbered breadth first: children come after their
                // directory, so walks towards the leaves always end.
                if a.len > 0 && ((a.off as usize) <= ino || end > n_nodes + 1) {
                    return None;
                }
                Payload::Dir {
                    first: a.off,
                    count: a.len,
                }
            }
            1 if in_text(a) && in_rw(b) => Payload::File {
                digest: a,
                rewrite: b,
                defect: match r[15] {
                    0 => None,
                    1 => Some(Defect::NegativeSize),
                    2 => Some(Defect::BadDigest),
                    3 => Some(Defect::RewriteOutOfRange),
                    _ => return None,
                },
            },
            2 if in_text(a) && r[15] <= 1 => Payload::Symlink {
                target: a,
                file: r[15] == 1,
            },
            _ => return None,
        };
        // A parent comes before its children (the root is its own), so
        // `Tree::path` and other walks to the root always end.
        let parent_ok = if ino == 1 {
            parent == 1
        } else {
            parent != 0 && (parent as usize) < ino
        };
        if !in_text(name) || !parent_ok {
            return None;
        }
        nodes.push(Node {
            name,
            parent,
            // As from a catalog: setuid/setgid never served.
            perm: u16::from_le_bytes([r[12], r[13]]) & 0o1777,
            nlink: u32_at(r, 16)?,
            size: u64_at(r, 20)?,
            payload,
        });
    }
    if nodes.is_empty() || !matches!(nodes[0].payload, Payload::Dir { .. }) {
        return None;
    }
    Some(Tree {
        nodes,
        text: pool(text_start, n_text),
        rewrites: rw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        identity: std::str::from_utf8(identity).ok()?.to_string(),
        recorded_path: std::str::from_utf8(recorded_path).ok()?.to_string(),
        fingerprint,
        catalog_path: catalog_path.to_path_buf(),
        files,
        bytes,
    })
}
