//! A catalog decoded once into an immutable inode arena, the index the FUSE
//! server answers every lookup from.
//!
//! Nodes live in one flat `Vec` (inode = index + 1, root = 1), numbered
//! breadth first with each directory's children consecutive and sorted by
//! name bytes, so a directory is just a range of inodes and a lookup is a
//! binary search over it: no hashing, no path strings on the hot path. Names,
//! digests and symlink texts share one byte pool.
//!
//! What the tree reports is what an rcc restore of the catalog would leave
//! on disk (htfs `RestoreTo`): directories 0750 (rcc does not apply catalog
//! directory modes), files with their recorded permission bits, symlinks
//! with their recorded text; a directory recorded with `symlink` is only the
//! link (rcc restores just that), and so is a file with `symlink` or with
//! Go's `ModeSymlink` (a dangling link lifted through `Lstat`).
//!
//! Hostile catalogs. A name that cannot exist in a directory (empty, `.`,
//! `..`, containing `/` or NUL, longer than 255 bytes), a `name` field that
//! disagrees with its map key, or a file and a directory with the same name
//! refuse the whole load with `Error::Catalog` naming the catalog and the
//! entry's path: such a catalog was not written by rcc, and serving part of
//! it would silently differ from what a restore gives. Problems confined to
//! one file's contents (negative size, a digest that is not hex, a rewrite
//! offset outside the file) only make that file answer EIO when opened.
//! Setuid, setgid and device bits are never served (the mount is also
//! nosuid,nodev).

pub mod index;
pub mod summary;

use crate::error::{Error, IoContext, Result};
use crate::gomode;
use crate::hololib::{Catalog, Dir, File};
use std::path::{Path, PathBuf};

/// Inode number of the root directory.
pub const ROOT: u64 = 1;
/// Permission bits of every directory: what rcc's restore creates
/// (`os.MkdirAll(path, 0o750)`; catalog directory modes are not applied).
pub const DIR_PERM: u16 = 0o750;
/// mtime/atime/ctime of every node: rcc's `motherTime`, which restore sets
/// on every file and directory. Keeping it fixed keeps bytecode caches valid.
pub const MTIME: u64 = 1_610_000_000;
/// Longest name a Linux directory entry can have.
const NAME_MAX: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
}

/// Why a file cannot be served (it answers EIO when opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    NegativeSize,
    BadDigest,
    RewriteOutOfRange,
}

impl Defect {
    pub fn describe(self) -> &'static str {
        match self {
            Defect::NegativeSize => "catalog records a negative size",
            Defect::BadDigest => "catalog digest is not a sha256 or siphash128 hex string",
            Defect::RewriteOutOfRange => "catalog rewrite offset lies outside the file",
        }
    }
}

/// A byte range in the tree's pools.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    off: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.off as usize..(self.off + self.len) as usize
    }
}

#[derive(Debug, Clone, Copy)]
enum Payload {
    /// Children are inodes `first .. first + count`, sorted by name.
    Dir { first: u32, count: u32 },
    File {
        digest: Span,
        rewrite: Span,
        defect: Option<Defect>,
    },
    Symlink {
        target: Span,
        /// Lifted as a file (its target's mode and digest, no `ModeSymlink`
        /// bit): `stat` through it finds a file, as in a restored space.
        file: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct Node {
    name: Span,
    parent: u32,
    perm: u16,
    nlink: u32,
    size: u64,
    payload: Payload,
}

/// A borrowed view of one node.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    tree: &'a Tree,
    ino: u64,
    node: &'a Node,
}

impl<'a> NodeRef<'a> {
    pub fn ino(&self) -> u64 {
        self.ino
    }
    pub fn kind(&self) -> Kind {
        match self.node.payload {
            Payload::Dir { .. } => Kind::Dir,
            Payload::File { .. } => Kind::File,
            Payload::Symlink { .. } => Kind::Symlink,
        }
    }
    pub fn name(&self) -> &'a [u8] {
        &self.tree.text[self.node.name.range()]
    }
    pub fn parent(&self) -> u64 {
        self.node.parent as u64
    }
    /// Permission bits as served (no setuid/setgid; sticky kept).
    pub fn perm(&self) -> u16 {
        self.node.perm
    }
    /// `st_mode`: type bits plus `perm`.
    pub fn st_mode(&self) -> u32 {
        let ty = match self.kind() {
            Kind::Dir => libc::S_IFDIR,
            Kind::File => libc::S_IFREG,
            Kind::Symlink => libc::S_IFLNK,
        };
        ty | self.node.perm as u32
    }
    /// Content size: file bytes, link text length, or 4096 for a
    /// directory (what ext4 reports for a small one).
    pub fn size(&self) -> u64 {
        self.node.size
    }
    pub fn nlink(&self) -> u32 {
        self.node.nlink
    }
    /// Children inode range (empty for non-directories).
    pub fn children(&self) -> std::ops::Range<u64> {
        match self.node.payload {
            Payload::Dir { first, count } => first as u64..(first + count) as u64,
            _ => 0..0,
        }
    }
    /// The blob digest of a file.
    pub fn digest(&self) -> Option<&'a str> {
        match self.node.payload {
            Payload::File { digest, .. } => {
                std::str::from_utf8(&self.tree.text[digest.range()]).ok()
            }
            _ => None,
        }
    }
    /// Offsets where the identity must be replaced by the target name.
    pub fn rewrite(&self) -> &'a [u64] {
        match self.node.payload {
            Payload::File { rewrite, .. } => &self.tree.rewrites[rewrite.range()],
            _ => &[],
        }
    }
    pub fn defect(&self) -> Option<Defect> {
        match self.node.payload {
            Payload::File { defect, .. } => defect,
            _ => None,
        }
    }
    pub fn symlink_target(&self) -> Option<&'a [u8]> {
        match self.node.payload {
            Payload::Symlink { target, .. } => Some(&self.tree.text[target.range()]),
            _ => None,
        }
    }
    /// What `stat` (following links) would find a regular file: a file, or
    /// a symlink the catalog recorded as a file (not a dangling link nor a
    /// symlinked directory).
    pub fn stats_as_file(&self) -> bool {
        matches!(
            self.node.payload,
            Payload::File { .. } | Payload::Symlink { file: true, .. }
        )
    }
}

/// The byte pool of names, digests and link texts: built in memory, or a
/// window of a mapped index file (no copy on a warm load).
#[derive(Debug)]
enum Pool {
    Owned(Vec<u8>),
    Mapped {
        map: std::sync::Arc<crate::sys::mmap::MappedFile>,
        start: usize,
        len: usize,
    },
}

impl std::ops::Deref for Pool {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Pool::Owned(v) => v,
            Pool::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

impl Pool {
    fn owned(&mut self) -> &mut Vec<u8> {
        if let Pool::Mapped { .. } = self {
            *self = Pool::Owned(self.to_vec());
        }
        match self {
            Pool::Owned(v) => v,
            Pool::Mapped { .. } => unreachable!("converted above"),
        }
    }
}

/// The immutable tree of one catalog.
#[derive(Debug)]
pub struct Tree {
    nodes: Vec<Node>,
    text: Pool,
    rewrites: Vec<u64>,
    identity: String,
    /// The catalog's recorded `path` (where it was lifted).
    recorded_path: String,
    /// rcc's Sipit of the catalog file's bytes (0 when built from a decoded
    /// catalog without them).
    fingerprint: u64,
    catalog_path: PathBuf,
    files: u64,
    bytes: u64,
}

/// Where an entry sits while it waits for an inode.
enum Pending<'c> {
    Dir(&'c Dir),
    File(&'c File),
}

impl Tree {
    /// Copy what is still read from the mapped index file into memory. A
    /// warm server lives for minutes: it must not serve whatever someone
    /// writes into that file meanwhile (vhrun itself only ever replaces
    /// indexes by rename).
    pub fn detach_from_index(&mut self) {
        self.text.owned();
    }

    /// One line per node with everything served from it (path, kind, mode,
    /// size, links, children, digest, rewrites, defect, link target): two
    /// trees that serve the same answer the same. For tests and debugging.
    pub fn describe(&self) -> Vec<String> {
        (1..=self.len() as u64)
            .filter_map(|i| {
                let n = self.get(i)?;
                Some(format!(
                    "{} {:?} {:o} {} {} {:?} {:?} {:?} {:?} {:?} {}",
                    self.path(i).display(),
                    n.kind(),
                    n.st_mode(),
                    n.size(),
                    n.nlink(),
                    n.children(),
                    n.digest(),
                    n.rewrite(),
                    n.defect(),
                    n.symlink_target(),
                    n.stats_as_file()
                ))
            })
            .collect()
    }

    /// Read and decode a catalog file into a tree.
    pub fn load(catalog_path: &Path) -> Result<Tree> {
        let span = tracing::info_span!("tree.load", catalog = %catalog_path.display());
        let _g = span.enter();
        let t0 = std::time::Instant::now();
        let raw = std::fs::read(catalog_path).at(catalog_path)?;
        let catalog = Catalog::from_bytes(&raw).map_err(|msg| Error::catalog(catalog_path, msg))?;
        let t1 = std::time::Instant::now();
        let mut tree = Tree::from_catalog(&catalog, catalog_path)?;
        tree.fingerprint = crate::digest::sipit(&raw);
        tracing::info!(
            nodes = tree.len(),
            decode_ms = (t1 - t0).as_secs_f64() * 1e3,
            arena_ms = t1.elapsed().as_secs_f64() * 1e3,
            "catalog loaded"
        );
        Ok(tree)
    }

    /// Like `load`, through a binary index of the arena kept in
    /// `index_dir` (`$VHRUN_HOME/index`), keyed by the catalog's sha256:
    /// the first load writes it, later loads skip the catalog decode.
    ///
    /// A warm load does not even read the catalog: a symlink named after
    /// the catalog file's identity (path, device, inode, size, mtime and
    /// ctime in ns, which no rewrite or replacement of the file keeps)
    /// leads straight to its index.
    pub fn load_indexed(catalog_path: &Path, index_dir: &Path) -> Result<Tree> {
        let span = tracing::info_span!("tree.load", catalog = %catalog_path.display());
        let _g = span.enter();
        let t0 = std::time::Instant::now();
        let meta = std::fs::metadata(catalog_path).at(catalog_path)?;
        let by_stat = index::stat_path(index_dir, catalog_path, &meta);
        if let Some(tree) = index::load(&by_stat, catalog_path) {
            tracing::info!(
                nodes = tree.len(),
                ms = t0.elapsed().as_secs_f64() * 1e3,
                "catalog loaded from index {}",
                by_stat.display()
            );
            return Ok(tree);
        }
        let raw = std::fs::read(catalog_path).at(catalog_path)?;
        let idx = index::index_path(index_dir, &raw);
        if idx.exists() {
            if let Some(tree) = index::load(&idx, catalog_path) {
                index::link_stat_path(&by_stat, &idx);
                tracing::info!(
                    nodes = tree.len(),
                    ms = t0.elapsed().as_secs_f64() * 1e3,
                    "catalog loaded from index {}",
                    idx.display()
                );
                return Ok(tree);
            }
            tracing::warn!("{}: damaged index, rebuilding it", idx.display());
        }
        let catalog = Catalog::from_bytes(&raw).map_err(|msg| Error::catalog(catalog_path, msg))?;
        let mut tree = Tree::from_catalog(&catalog, catalog_path)?;
        tree.fingerprint = crate::digest::sipit(&raw);
        let saved =
            crate::paths::mkdir_all(index_dir, 0o750).and_then(|()| index::save(&idx, &tree));
        match saved {
            Ok(()) => index::link_stat_path(&by_stat, &idx),
            Err(e) => tracing::debug!("cannot save the tree index: {e}"),
        }
        tracing::info!(
            nodes = tree.len(),
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "catalog decoded (index written)"
        );
        Ok(tree)
    }

    /// Build the arena from a decoded catalog; `source` names the catalog in
    /// errors.
    pub fn from_catalog(catalog: &Catalog, source: &Path) -> Result<Tree> {
        let mut t = Tree {
            nodes: Vec::new(),
            text: Pool::Owned(Vec::new()),
            rewrites: Vec::new(),
            identity: catalog.identity.clone(),
            recorded_path: catalog.path.clone(),
            fingerprint: 0,
            catalog_path: source.to_path_buf(),
            files: 0,
            bytes: 0,
        };
        let root = &catalog.tree;
        if !root.symlink.is_empty() {
            return Err(Error::catalog(source, "the root directory is a symlink"));
        }
        let id_len = catalog.identity.len() as u64;
        // Breadth first: pending[i] is the entry of inode i + 1.
        let mut pending: Vec<Pending> = vec![Pending::Dir(root)];
        t.nodes.push(Node {
            name: Span::default(),
            parent: ROOT as u32,
            perm: DIR_PERM,
            nlink: 2,
            size: 4096,
            payload: Payload::Dir { first: 0, count: 0 },
        });
        let mut i = 0;
        let mut children: Vec<(&str, Pending)> = Vec::new();
        while i < pending.len() {
            let ino = (i + 1) as u32;
            let Pending::Dir(dir) = pending[i] else {
                i += 1;
                continue;
            };
            if !matches!(t.nodes[i].payload, Payload::Dir { .. }) {
                // A symlinked directory: rcc restores only the link.
                i += 1;
                continue;
            }
            children.clear();
            for (key, sub) in &dir.dirs {
                if !sub.name.is_empty() && sub.name != *key {
                    return Err(t.bad_entry(i, key, "its name field disagrees with its key"));
                }
                children.push((key.as_str(), Pending::Dir(sub)));
            }
            for (key, file) in &dir.files {
                if !file.name.is_empty() && file.name != *key {
                    return Err(t.bad_entry(i, key, "its name field disagrees with its key"));
                }
                children.push((key.as_str(), Pending::File(file)));
            }
            children.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for w in children.windows(2) {
                if w[0].0 == w[1].0 {
                    return Err(t.bad_entry(i, w[0].0, "is both a file and a directory"));
                }
            }
            let first = (t.nodes.len() + 1) as u32;
            let mut subdirs = 0;
            for (name, entry) in children.drain(..) {
                check_name(name).map_err(|msg| t.bad_entry(i, name, msg))?;
                let name_span = t.push_text(name.as_bytes());
                let node = match entry {
                    Pending::Dir(d) if d.symlink.is_empty() => {
                        subdirs += 1;
                        Node {
                            name: name_span,
                            parent: ino,
                            perm: DIR_PERM,
                            nlink: 2,
                            size: 4096,
                            payload: Payload::Dir { first: 0, count: 0 },
                        }
                    }
                    Pending::Dir(d) => t
                        .symlink_node(name_span, ino, &d.symlink, false)
                        .map_err(|msg| t.bad_entry(i, name, msg))?,
                    Pending::File(f) if !f.symlink.is_empty() || gomode::is_symlink(f.mode) => t
                        .symlink_node(name_span, ino, &f.symlink, !gomode::is_symlink(f.mode))
                        .map_err(|msg| t.bad_entry(i, name, msg))?,
                    Pending::File(f) => t.file_node(name_span, ino, f, id_len),
                };
                t.nodes.push(node);
                pending.push(entry);
            }
            let count = t.nodes.len() as u32 + 1 - first;
            t.nodes[i].payload = Payload::Dir { first, count };
            t.nodes[i].nlink = 2 + subdirs;
            if t.nodes.len() >= u32::MAX as usize / 2 {
                return Err(Error::catalog(source, "too many entries"));
            }
            i += 1;
        }
        if t.text.len() >= u32::MAX as usize || t.rewrites.len() >= u32::MAX as usize {
            return Err(Error::catalog(source, "catalog too large"));
        }
        t.nodes.shrink_to_fit();
        t.text.owned().shrink_to_fit();
        t.rewrites.shrink_to_fit();
        Ok(t)
    }

    fn push_text(&mut self, bytes: &[u8]) -> Span {
        let off = self.text.len() as u32;
        self.text.owned().extend_from_slice(bytes);
        Span {
            off,
            len: bytes.len() as u32,
        }
    }

    fn symlink_node(
        &mut self,
        name: Span,
        parent: u32,
        target: &str,
        file: bool,
    ) -> std::result::Result<Node, &'static str> {
        if target.is_empty() {
            return Err("is a symlink without a target");
        }
        if target.contains('\0') || target.len() > libc::PATH_MAX as usize {
            return Err("has an impossible symlink target");
        }
        let target = self.push_text(target.as_bytes());
        Ok(Node {
            name,
            parent,
            perm: 0o777,
            nlink: 1,
            size: target.len as u64,
            payload: Payload::Symlink { target, file },
        })
    }

    fn file_node(&mut self, name: Span, parent: u32, f: &File, id_len: u64) -> Node {
        let mut defect = None;
        let size = if f.size < 0 {
            defect = Some(Defect::NegativeSize);
            0
        } else {
            f.size as u64
        };
        if !crate::digest::is_hex_digest(&f.digest) {
            defect = defect.or(Some(Defect::BadDigest));
        }
        let digest = self.push_text(f.digest.as_bytes());
        let off = self.rewrites.len() as u32;
        for &o in &f.rewrite {
            if o < 0 || (o as u64).saturating_add(id_len) > size {
                defect = defect.or(Some(Defect::RewriteOutOfRange));
            } else {
                self.rewrites.push(o as u64);
            }
        }
        let rewrite = Span {
            off,
            len: self.rewrites.len() as u32 - off,
        };
        self.files += 1;
        // Saturating: a hostile catalog may record sizes near i64::MAX.
        self.bytes = self.bytes.saturating_add(size);
        // Only rwx and sticky: setuid/setgid are dropped on purpose, and
        // type bits other than dir/symlink mean nothing for a restored file.
        let perm = (gomode::to_chmod(f.mode) & 0o1777) as u16;
        Node {
            name,
            parent,
            perm,
            nlink: 1,
            size,
            payload: Payload::File {
                digest,
                rewrite,
                defect,
            },
        }
    }

    fn bad_entry(&self, dir_index: usize, name: &str, msg: &str) -> Error {
        let mut p = self.path((dir_index + 1) as u64);
        p.push(name);
        Error::catalog(
            &self.catalog_path,
            format!("entry {:?} {msg}", p.display().to_string()),
        )
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The stage identity recorded in the catalog (what rewrite offsets hold).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn catalog_path(&self) -> &Path {
        &self.catalog_path
    }

    /// The `path` the catalog records (where the environment was lifted).
    pub fn recorded_path(&self) -> &str {
        &self.recorded_path
    }

    /// rcc's Sipit of the catalog file's bytes: a short fingerprint of
    /// this exact catalog, for naming per-catalog caches. Set by `load` and
    /// `load_indexed`; 0 for a tree built with `from_catalog`.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Regular (non-symlink) file count and their total size.
    pub fn totals(&self) -> (u64, u64) {
        (self.files, self.bytes)
    }

    /// True if some file carries rewrite offsets (and so needs the target
    /// name to have the identity's length).
    pub fn has_rewrites(&self) -> bool {
        !self.rewrites.is_empty()
    }

    pub fn get(&self, ino: u64) -> Option<NodeRef<'_>> {
        let node = self.nodes.get((ino as usize).checked_sub(1)?)?;
        Some(NodeRef {
            tree: self,
            ino,
            node,
        })
    }

    /// The child of directory `parent` called `name`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Option<NodeRef<'_>> {
        let dir = self.get(parent)?;
        let range = dir.children();
        if range.is_empty() {
            return None;
        }
        let (lo, hi) = (range.start as usize - 1, range.end as usize - 1);
        let kids = self.nodes.get(lo..hi)?;
        let pos = kids
            .binary_search_by(|n| self.text[n.name.range()].cmp(name))
            .ok()?;
        self.get(range.start + pos as u64)
    }

    /// Follow a relative path of plain names (no symlinks followed).
    pub fn resolve(&self, rel: &Path) -> Option<NodeRef<'_>> {
        use std::os::unix::ffi::OsStrExt;
        let mut cur = self.get(ROOT)?;
        for c in rel.components() {
            match c {
                std::path::Component::Normal(n) => cur = self.lookup(cur.ino, n.as_bytes())?,
                std::path::Component::CurDir => {}
                _ => return None,
            }
        }
        Some(cur)
    }

    /// The path of `ino` relative to the root (for messages, not the hot path).
    pub fn path(&self, ino: u64) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT {
            let Some(n) = self.get(cur) else { break };
            parts.push(n.name());
            cur = n.parent();
        }
        let mut p = PathBuf::new();
        for part in parts.iter().rev() {
            p.push(std::ffi::OsStr::from_bytes(part));
        }
        p
    }
}

fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("has an empty name");
    }
    if name == "." || name == ".." {
        return Err("is named . or ..");
    }
    if name.contains('/') {
        return Err("has a name containing '/'");
    }
    if name.contains('\0') {
        return Err("has a name containing NUL");
    }
    if name.len() > NAME_MAX {
        return Err("has a name longer than 255 bytes");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gomode::{MODE_DIR, MODE_SETUID, MODE_SYMLINK};

    fn dir(name: &str) -> Dir {
        Dir {
            name: name.into(),
            mode: MODE_DIR | 0o755,
            ..Default::default()
        }
    }

    fn file(name: &str, size: i64, mode: u32) -> File {
        File {
            name: name.into(),
            size,
            mode,
            digest: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
            ..Default::default()
        }
    }

    fn catalog(tree: Dir) -> Catalog {
        Catalog {
            identity: "h59acff1_493f813dad24d3t".into(),
            path: "/x/h59acff1_493f813dad24d3t".into(),
            tree,
            ..Default::default()
        }
    }

    fn sample() -> Catalog {
        let mut root = dir("");
        let mut bin = dir("bin");
        bin.files
            .insert("python".into(), file("python", 10, 0o755 | MODE_SETUID));
        let mut link = file("py", 10, 0o755);
        link.symlink = "python".into();
        bin.files.insert("py".into(), link);
        let mut dangling = file("gone", 4, MODE_SYMLINK | 0o777);
        dangling.symlink = "nope".into();
        bin.files.insert("gone".into(), dangling);
        root.dirs.insert("bin".into(), bin);
        let mut lib = dir("lib64");
        lib.symlink = "lib".into();
        lib.dirs.insert("shadowed".into(), dir("shadowed"));
        root.dirs.insert("lib64".into(), lib);
        let mut lib = dir("lib");
        lib.files.insert("a".into(), file("a", -1, 0o644));
        let mut bad = file("b", 3, 0o644);
        bad.digest = "../../etc/passwd".into();
        lib.files.insert("b".into(), bad);
        let mut rw = file("c", 30, 0o644);
        rw.rewrite = vec![0, 6];
        lib.files.insert("c".into(), rw);
        let mut rw = file("d", 30, 0o644);
        rw.rewrite = vec![7];
        lib.files.insert("d".into(), rw);
        root.dirs.insert("lib".into(), lib);
        root.files.insert("z".into(), file("z", 5, 0o644));
        catalog(root)
    }

    #[test]
    fn arena_shape_and_lookup() {
        let t = Tree::from_catalog(&sample(), Path::new("cat")).unwrap();
        let root = t.get(ROOT).unwrap();
        assert_eq!(root.kind(), Kind::Dir);
        assert_eq!(root.nlink(), 4); // bin, lib (lib64 is a link)
        let names: Vec<_> = root
            .children()
            .map(|i| t.get(i).unwrap().name().to_vec())
            .collect();
        assert_eq!(
            names,
            vec![
                b"bin".to_vec(),
                b"lib".to_vec(),
                b"lib64".to_vec(),
                b"z".to_vec()
            ]
        );
        let py = t.resolve(Path::new("bin/python")).unwrap();
        assert_eq!(py.kind(), Kind::File);
        assert_eq!(py.st_mode(), libc::S_IFREG | 0o755, "setuid stripped");
        assert_eq!(
            t.resolve(Path::new("bin/py")).unwrap().symlink_target(),
            Some(&b"python"[..])
        );
        assert!(t.resolve(Path::new("bin/py")).unwrap().stats_as_file());
        assert!(py.stats_as_file());
        let gone = t.resolve(Path::new("bin/gone")).unwrap();
        assert_eq!(gone.kind(), Kind::Symlink);
        assert!(!gone.stats_as_file(), "a dangling link");
        assert_eq!(gone.size(), 4);
        let lib64 = t.resolve(Path::new("lib64")).unwrap();
        assert_eq!(lib64.kind(), Kind::Symlink);
        assert!(!lib64.stats_as_file(), "a symlinked directory");
        assert!(t.resolve(Path::new("lib64/shadowed")).is_none());
        assert_eq!(
            t.resolve(Path::new("lib/a")).unwrap().defect(),
            Some(Defect::NegativeSize)
        );
        assert_eq!(
            t.resolve(Path::new("lib/b")).unwrap().defect(),
            Some(Defect::BadDigest)
        );
        let c = t.resolve(Path::new("lib/c")).unwrap();
        assert_eq!((c.defect(), c.rewrite()), (None, &[0u64, 6][..]));
        assert_eq!(
            t.resolve(Path::new("lib/d")).unwrap().defect(),
            Some(Defect::RewriteOutOfRange)
        );
        assert!(t.lookup(ROOT, b"nothing").is_none());
        assert!(t.lookup(py.ino(), b"x").is_none());
        assert_eq!(t.path(c.ino()), PathBuf::from("lib/c"));
        assert!(t.has_rewrites());
    }

    #[test]
    fn index_round_trip_and_damage() {
        let t = Tree::from_catalog(&sample(), Path::new("cat")).unwrap();
        let buf = index::encode(&t);
        let back = index::decode(&buf, Path::new("cat")).unwrap();
        assert_eq!(t.describe(), back.describe());
        assert_eq!((back.identity(), back.totals()), (t.identity(), t.totals()));
        assert_eq!(back.recorded_path(), "/x/h59acff1_493f813dad24d3t");
        for i in [0, 9, 30, buf.len() / 2, buf.len() - 1] {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                index::decode(&bad, Path::new("cat")).is_none(),
                "flip at {i}"
            );
        }
        assert!(index::decode(&buf[..buf.len() - 1], Path::new("cat")).is_none());

        let dir = tempfile::tempdir().unwrap();
        let cat = dir.path().join("k");
        sample().save(&cat).unwrap();
        let a = Tree::load_indexed(&cat, &dir.path().join("index")).unwrap();
        let names = || {
            let mut v: Vec<String> = std::fs::read_dir(dir.path().join("index"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let written = names();
        let b = Tree::load_indexed(&cat, &dir.path().join("index")).unwrap();
        assert_eq!(
            (written.len(), a.describe()),
            (2, b.describe()),
            "{written:?}"
        );
        assert!(
            written[1].starts_with("s-"),
            "index + its stat link: {written:?}"
        );
        assert_eq!(names(), written, "a warm load writes nothing");
        let raw = std::fs::read(&cat).unwrap();
        assert_eq!(a.fingerprint(), crate::digest::sipit(&raw));
        assert_eq!(b.fingerprint(), a.fingerprint(), "kept in the index");
        // The catalog replaced (as rcc and vhrun write them: a new file
        // renamed over it): the stat link no longer matches, the new
        // contents are served.
        let mut changed = sample();
        changed
            .tree
            .files
            .insert("new".into(), file("new", 1, 0o644));
        changed.save(&cat).unwrap();
        let c = Tree::load_indexed(&cat, &dir.path().join("index")).unwrap();
        assert!(c.resolve(Path::new("new")).is_some());
        assert!(b.resolve(Path::new("new")).is_none());
        // A damaged index behind the stat link is rebuilt, not trusted.
        let idx = index::index_path(&dir.path().join("index"), &std::fs::read(&cat).unwrap());
        crate::paths::write_atomic(&idx, b"VHRUNTR4 damaged", 0o444).unwrap();
        let d = Tree::load_indexed(&cat, &dir.path().join("index")).unwrap();
        assert_eq!(d.describe(), c.describe());
        assert!(std::fs::read(&idx).unwrap().len() > 100, "rebuilt");
    }

    #[test]
    fn hostile_names_refuse_the_load() {
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            let mut root = dir("");
            let mut sub = dir("sub");
            sub.files.insert(bad.to_string(), file("", 1, 0o644));
            root.dirs.insert("sub".into(), sub);
            let err = Tree::from_catalog(&catalog(root), Path::new("/lib/catalog/k")).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, Error::Catalog { .. }), "{msg}");
            assert!(
                msg.starts_with("catalog /lib/catalog/k: entry \"sub/"),
                "{msg}"
            );
        }
        let mut root = dir("");
        root.dirs.insert("x".into(), dir("x"));
        root.files.insert("x".into(), file("x", 1, 0o644));
        let msg = Tree::from_catalog(&catalog(root), Path::new("k"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("both a file and a directory"), "{msg}");
        let mut root = dir("");
        root.files.insert("x".into(), file("y", 1, 0o644));
        let msg = Tree::from_catalog(&catalog(root), Path::new("k"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("disagrees"), "{msg}");
    }
}
