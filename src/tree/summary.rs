//! A catalog's summary: what a run asks of a catalog that another process
//! serves (a kernel image, a warm server), so that such a run decodes no
//! tree. Loading the 12k-node index costs ~1 ms of an activation of 5-10
//! ms, and a process that holds it forks its reaper slower.
//!
//! `$VHRUN_HOME/index/s-<stat key>.sum2`: keyed like the index's stat name
//! (the catalog's path and the stat fields any write changes), it holds the
//! vhrun version that wrote it and a checksum, so a rewritten catalog, a
//! damaged file or another vhrun's record is ignored and written anew. Its
//! space facts come from the catalog's own tree and `rcc_activate.json`'s
//! blob, verified against its digest when the summary was made; the
//! activation is kept as stored and relocated per run (the space name
//! differs by controller and space). Its checksum is rcc's Sipit, not a
//! CRC: the first CRC of a process detects the CPU's features, a dozen
//! CPUID instructions, and each traps to the hypervisor on a VM (0.1 ms of
//! every activation).
//!
//! [`TreeRef`] carries the summary and loads the whole tree only when a
//! caller needs its nodes (a FUSE mount, a copy, a lazily served tree).

use super::Tree;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

const MAGIC: &[u8; 8] = b"VHRUNSU2";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What both a whole tree and a summary answer.
pub trait Facts {
    /// The catalog's identity (the basename its files are relocated from).
    fn identity(&self) -> &str;
    fn catalog_path(&self) -> &Path;
    /// The directory the catalog was lifted in.
    fn recorded_path(&self) -> &str;
    /// rcc's Sipit of the catalog's bytes (0: unknown).
    fn fingerprint(&self) -> u64;
    /// Files and their bytes.
    fn totals(&self) -> (u64, u64);
    /// Some file is relocated in place.
    fn has_rewrites(&self) -> bool;
}

impl Facts for Tree {
    fn identity(&self) -> &str {
        Tree::identity(self)
    }
    fn catalog_path(&self) -> &Path {
        Tree::catalog_path(self)
    }
    fn recorded_path(&self) -> &str {
        Tree::recorded_path(self)
    }
    fn fingerprint(&self) -> u64 {
        Tree::fingerprint(self)
    }
    fn totals(&self) -> (u64, u64) {
        Tree::totals(self)
    }
    fn has_rewrites(&self) -> bool {
        Tree::has_rewrites(self)
    }
}

impl<T: Facts + ?Sized> Facts for Arc<T> {
    fn identity(&self) -> &str {
        (**self).identity()
    }
    fn catalog_path(&self) -> &Path {
        (**self).catalog_path()
    }
    fn recorded_path(&self) -> &str {
        (**self).recorded_path()
    }
    fn fingerprint(&self) -> u64 {
        (**self).fingerprint()
    }
    fn totals(&self) -> (u64, u64) {
        (**self).totals()
    }
    fn has_rewrites(&self) -> bool {
        (**self).has_rewrites()
    }
}

/// What rcc's environment builder asks of the space, as the catalog holds
/// it (`resolve::space_record`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpaceRecord {
    /// `python3` or `python` in `bin/`.
    pub python: Option<String>,
    pub pyvenv_cfg: bool,
    /// `rcc_activate.json` as stored, and its rewrite offsets.
    pub activation: Option<(Vec<u8>, Vec<u64>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    identity: String,
    recorded_path: String,
    fingerprint: u64,
    files: u64,
    bytes: u64,
    has_rewrites: bool,
    catalog_path: PathBuf,
    pub space: SpaceRecord,
}

impl Summary {
    pub fn of(tree: &Tree, space: SpaceRecord) -> Summary {
        let (files, bytes) = tree.totals();
        Summary {
            identity: tree.identity().to_string(),
            recorded_path: tree.recorded_path().to_string(),
            fingerprint: tree.fingerprint(),
            files,
            bytes,
            has_rewrites: tree.has_rewrites(),
            catalog_path: tree.catalog_path().to_path_buf(),
            space,
        }
    }

    fn encode(&self) -> Vec<u8> {
        self.encode_as(VERSION)
    }

    fn encode_as(&self, version: &str) -> Vec<u8> {
        let mut b = Vec::new();
        let put = |b: &mut Vec<u8>, bytes: &[u8]| {
            b.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            b.extend_from_slice(bytes);
        };
        put(&mut b, version.as_bytes());
        put(&mut b, self.identity.as_bytes());
        put(&mut b, self.recorded_path.as_bytes());
        for v in [self.fingerprint, self.files, self.bytes] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let s = &self.space;
        b.push(
            u8::from(self.has_rewrites)
                | u8::from(s.pyvenv_cfg) << 1
                | u8::from(s.python.is_some()) << 2
                | u8::from(s.activation.is_some()) << 3,
        );
        put(&mut b, s.python.as_deref().unwrap_or_default().as_bytes());
        let (content, offsets) = s.activation.clone().unwrap_or_default();
        put(&mut b, &content);
        b.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
        for o in offsets {
            b.extend_from_slice(&o.to_le_bytes());
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&crate::digest::sipit(&b).to_le_bytes());
        out.extend_from_slice(&b);
        out
    }

    /// `None` for anything this vhrun did not write, or damaged.
    fn decode(buf: &[u8], catalog_path: &Path) -> Option<Summary> {
        let body = buf.strip_prefix(MAGIC)?;
        let (sum, body) = body.split_first_chunk::<8>()?;
        if crate::digest::sipit(body) != u64::from_le_bytes(*sum) {
            return None;
        }
        let mut r = Reader(body);
        if r.bytes()? != VERSION.as_bytes() {
            return None;
        }
        let identity = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let recorded_path = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let (fingerprint, files, bytes) = (r.u64()?, r.u64()?, r.u64()?);
        let flags = r.take(1)?[0];
        let python = String::from_utf8(r.bytes()?.to_vec()).ok()?;
        let content = r.bytes()?.to_vec();
        let n = r.u32()? as usize;
        let offsets = (0..n).map(|_| r.u64()).collect::<Option<Vec<u64>>>()?;
        if !r.0.is_empty() {
            return None;
        }
        Some(Summary {
            identity,
            recorded_path,
            fingerprint,
            files,
            bytes,
            has_rewrites: flags & 1 != 0,
            catalog_path: catalog_path.to_path_buf(),
            space: SpaceRecord {
                python: (flags & 4 != 0).then_some(python),
                pyvenv_cfg: flags & 2 != 0,
                activation: (flags & 8 != 0).then_some((content, offsets)),
            },
        })
    }

    /// The summary of the catalog at `catalog_path` as it is now, if one
    /// was saved.
    pub fn load(index_dir: &Path, catalog_path: &Path) -> Option<Summary> {
        let meta = std::fs::metadata(catalog_path).ok()?;
        let buf = std::fs::read(path(index_dir, catalog_path, &meta)).ok()?;
        Summary::decode(&buf, catalog_path)
    }

    /// Best effort: without it the next run loads the tree.
    pub fn save(&self, index_dir: &Path) {
        let saved = std::fs::metadata(&self.catalog_path)
            .map_err(|e| Error::io(&self.catalog_path, e))
            .and_then(|meta| {
                let p = path(index_dir, &self.catalog_path, &meta);
                crate::paths::write_atomic(&p, &self.encode(), 0o444)
            });
        if let Err(e) = saved {
            tracing::debug!("cannot save the catalog's summary: {e}");
        }
    }
}

fn path(index_dir: &Path, catalog_path: &Path, meta: &std::fs::Metadata) -> PathBuf {
    super::index::stat_path(index_dir, catalog_path, meta).with_extension("sum2")
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

impl Facts for Summary {
    fn identity(&self) -> &str {
        &self.identity
    }
    fn catalog_path(&self) -> &Path {
        &self.catalog_path
    }
    fn recorded_path(&self) -> &str {
        &self.recorded_path
    }
    fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
    fn totals(&self) -> (u64, u64) {
        (self.files, self.bytes)
    }
    fn has_rewrites(&self) -> bool {
        self.has_rewrites
    }
}

/// A catalog's summary, and its whole tree once somebody needs it.
#[derive(Debug)]
pub struct TreeRef {
    summary: Summary,
    index_dir: PathBuf,
    full: OnceLock<Arc<Tree>>,
}

impl TreeRef {
    /// From a summary alone: the tree is loaded on the first [`TreeRef::full`].
    pub fn summarized(summary: Summary, index_dir: &Path) -> TreeRef {
        TreeRef {
            summary,
            index_dir: index_dir.to_path_buf(),
            full: OnceLock::new(),
        }
    }

    /// From a tree loaded already.
    pub fn loaded(tree: Arc<Tree>, space: SpaceRecord, index_dir: &Path) -> TreeRef {
        let r = TreeRef::summarized(Summary::of(&tree, space), index_dir);
        let _ = r.full.set(tree);
        r
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The whole tree, loaded once. Fails if the catalog changed since its
    /// summary was read: the run would otherwise serve another catalog
    /// than the one its variables describe.
    pub fn full(&self) -> Result<Arc<Tree>> {
        if let Some(t) = self.full.get() {
            return Ok(t.clone());
        }
        let path = &self.summary.catalog_path;
        let tree = Arc::new(Tree::load_indexed(path, &self.index_dir)?);
        if tree.fingerprint() != self.summary.fingerprint {
            return Err(Error::catalog(
                path,
                "changed while this run was starting; run again",
            ));
        }
        Ok(self.full.get_or_init(|| tree).clone())
    }
}

impl Facts for TreeRef {
    fn identity(&self) -> &str {
        self.summary.identity()
    }
    fn catalog_path(&self) -> &Path {
        self.summary.catalog_path()
    }
    fn recorded_path(&self) -> &str {
        self.summary.recorded_path()
    }
    fn fingerprint(&self) -> u64 {
        self.summary.fingerprint()
    }
    fn totals(&self) -> (u64, u64) {
        self.summary.totals()
    }
    fn has_rewrites(&self) -> bool {
        self.summary.has_rewrites()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            identity: "hbe7c0de_0123456789abcdt".into(),
            recorded_path: "/h/holotree/hbe7c0de_0123456789abcdt".into(),
            fingerprint: 0x1234_5678_9abc_def0,
            files: 12,
            bytes: 3456,
            has_rewrites: true,
            catalog_path: PathBuf::from("/h/catalog/x"),
            space: SpaceRecord {
                python: Some("python3".into()),
                pyvenv_cfg: false,
                activation: Some((b"{\"A\": \"x\"}".to_vec(), vec![3, 9])),
            },
        }
    }

    #[test]
    fn round_trip_and_every_damage_refused() {
        let s = sample();
        let buf = s.encode();
        assert_eq!(
            Summary::decode(&buf, Path::new("/h/catalog/x")),
            Some(s.clone())
        );
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert_eq!(
                Summary::decode(&bad, Path::new("/h/catalog/x")),
                None,
                "byte {i}"
            );
        }
        for n in 0..buf.len() {
            assert_eq!(Summary::decode(&buf[..n], Path::new("/h/catalog/x")), None);
        }
        // another vhrun's summary
        assert_eq!(
            Summary::decode(&s.encode_as("0.0.0-other"), Path::new("/h/catalog/x")),
            None
        );
        let none = Summary {
            space: SpaceRecord::default(),
            ..s
        };
        assert_eq!(
            Summary::decode(&none.encode(), Path::new("/h/catalog/x")),
            Some(none)
        );
    }
}
