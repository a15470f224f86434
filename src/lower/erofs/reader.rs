//! Reading an image back, for tests: the superblock, inodes with their
//! xattrs, directories, symlink texts and chunk maps, found the way the
//! kernel finds them (nids, `i_format`, dirent name offsets), not by the
//! writer's bookkeeping, so a writer bug shows as a difference or an error.
//!
//! Every offset comes from the image and is checked before use: a
//! truncated or corrupt image is a [`ReadError`], never a panic, a loop
//! or an allocation larger than the image. Not read: compressed data,
//! long xattr name prefixes, 48-bit addresses, the superblock checksum.

use super::format::{
    file_type_of_mode, inode_datalayout, inode_layout, xattr_entry_size, xattr_ibody_size,
    xattr_prefix, ChunkIndex, ChunkInfo, Dirent, InodeCompact, InodeExtended, Superblock,
    XattrEntry, XattrIbodyHeader, BLOCK_MAP_ENTRY_SIZE, CHUNK_BASED, CHUNK_FORMAT_BLKBITS_MASK,
    CHUNK_FORMAT_INDEXES, FEATURE_INCOMPAT_48BIT, FEATURE_INCOMPAT_METABOX, FLAT_INLINE,
    FLAT_PLAIN, FT_DIR, FT_UNKNOWN, INODE_LAYOUT_EXTENDED, INODE_NLINK_1_BIT, INODE_SLOT_BITS,
    MAGIC_V1, NAME_LEN_MAX, NULL_ADDR, SUPERBLOCK_OFFSET, S_IFDIR, S_IFLNK, S_IFMT,
    XATTR_LONG_PREFIX,
};
use std::collections::HashSet;
use zerocopy::FromBytes;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0} bytes is too short for an EROFS superblock")]
    TooShort(usize),
    #[error("no EROFS magic (found {0:#010x})")]
    BadMagic(u32),
    #[error("not supported by this reader: {0}")]
    Unsupported(String),
    #[error("corrupt image: {0}")]
    Corrupt(String),
}

type Result<T> = std::result::Result<T, ReadError>;

fn corrupt<T>(what: impl Into<String>) -> Result<T> {
    Err(ReadError::Corrupt(what.into()))
}

/// A parsed image over its bytes.
#[derive(Debug, Clone)]
pub struct Image<'a> {
    bytes: &'a [u8],
    pub superblock: Superblock,
    block_bits: u32,
}

/// An inode's attributes, whichever inode layout held them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub nid: u64,
    pub extended: bool,
    /// `FLAT_PLAIN`, `FLAT_INLINE`, `CHUNK_BASED`, ...
    pub datalayout: u16,
    /// File type and permission bits, as `st_mode`.
    pub mode: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u64,
    pub mtime_nsec: u32,
    pub ino: u32,
    /// The raw `i_u`: start block, `ChunkInfo` or rdev.
    pub u: u32,
    pub xattrs: Vec<Xattr>,
    /// Where what follows the inode and its xattrs starts: the inline
    /// tail or the chunk map.
    pub tail_offset: u64,
    /// (directories) the `.` entry is left out.
    dot_omitted: bool,
}

/// One xattr, its name with the prefix its index stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub nid: u64,
    pub file_type: u8,
}

/// Where a chunk-based file's data is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMap {
    /// A chunk is `block size << chunk_bits` bytes.
    pub chunk_bits: u16,
    pub chunk_size: u64,
    /// Whether the map is of `ChunkIndex` rather than block addresses.
    pub indexes: bool,
    /// One per chunk: its start block, or `None` for a hole.
    pub blocks: Vec<Option<u64>>,
}

/// An entry found by [`Image::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Relative to the root (the root's is empty), `/`-separated.
    pub path: Vec<u8>,
    pub inode: Inode,
    /// A symlink's text.
    pub link: Option<Vec<u8>>,
    /// A chunk-based regular file's map.
    pub chunks: Option<ChunkMap>,
}

impl Inode {
    pub fn file_type(&self) -> u8 {
        file_type_of_mode(self.mode)
    }
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    pub fn perm(&self) -> u16 {
        self.mode & 0o7777
    }
    /// The value of xattr `name` (full name, e.g. `trusted.overlay.redirect`).
    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|x| x.name == name)
            .map(|x| &x.value[..])
    }
}

impl<'a> Image<'a> {
    pub fn open(bytes: &'a [u8]) -> Result<Image<'a>> {
        let sb_bytes = bytes
            .get(SUPERBLOCK_OFFSET..SUPERBLOCK_OFFSET + size_of::<Superblock>())
            .ok_or(ReadError::TooShort(bytes.len()))?;
        let superblock = Superblock::read_from_bytes(sb_bytes).expect("sized slice");
        if superblock.magic.get() != MAGIC_V1 {
            return Err(ReadError::BadMagic(superblock.magic.get()));
        }
        // The kernel mounts 512-byte blocks up to the page size.
        let block_bits = u32::from(superblock.blkszbits);
        if !(9..=16).contains(&block_bits) {
            return corrupt(format!("block size 2^{block_bits}"));
        }
        let incompat = superblock.feature_incompat.get();
        let unread = FEATURE_INCOMPAT_48BIT | FEATURE_INCOMPAT_METABOX;
        if incompat & unread != 0 || incompat >= FEATURE_INCOMPAT_METABOX << 1 {
            return Err(ReadError::Unsupported(format!(
                "incompatible features {incompat:#x}"
            )));
        }
        Ok(Image {
            bytes,
            superblock,
            block_bits,
        })
    }

    pub fn block_size(&self) -> u64 {
        1 << self.block_bits
    }

    pub fn root_nid(&self) -> u64 {
        u64::from(self.superblock.root_nid.get())
    }

    /// `len` bytes at `offset`, if the image has them.
    fn get(&self, offset: u64, len: u64) -> Result<&'a [u8]> {
        let range = offset
            .checked_add(len)
            .and_then(|end| Some(usize::try_from(offset).ok()?..usize::try_from(end).ok()?));
        match range.and_then(|r| self.bytes.get(r)) {
            Some(b) => Ok(b),
            None => corrupt(format!(
                "{len} bytes at {offset} are past the image's end ({})",
                self.bytes.len()
            )),
        }
    }

    fn read<T: FromBytes>(&self, offset: u64) -> Result<T> {
        let b = self.get(offset, size_of::<T>() as u64)?;
        Ok(T::read_from_bytes(b).expect("sized slice"))
    }

    fn block_offset(&self, blkaddr: u64) -> Result<u64> {
        match blkaddr.checked_mul(self.block_size()) {
            Some(o) => Ok(o),
            None => corrupt(format!("block address {blkaddr}")),
        }
    }

    pub fn inode(&self, nid: u64) -> Result<Inode> {
        let meta = self.block_offset(u64::from(self.superblock.meta_blkaddr.get()))?;
        let Some(at) = nid
            .checked_mul(1 << INODE_SLOT_BITS)
            .and_then(|o| o.checked_add(meta))
        else {
            return corrupt(format!("nid {nid}"));
        };
        let format: zerocopy::little_endian::U16 = self.read(at)?;
        let format = format.get();
        if format >> (INODE_NLINK_1_BIT + 1) != 0 {
            return Err(ReadError::Unsupported(format!(
                "nid {nid}: i_format {format:#x}"
            )));
        }
        let datalayout = inode_datalayout(format);
        if datalayout > CHUNK_BASED {
            return corrupt(format!("nid {nid}: data layout {datalayout}"));
        }
        // Bit 4 means nlink 1 for a compact non-directory, no `.` dirent
        // for a directory.
        let bit4 = format & (1 << INODE_NLINK_1_BIT) != 0;
        let (mut inode, icount) = if inode_layout(format) == INODE_LAYOUT_EXTENDED {
            let i: InodeExtended = self.read(at)?;
            let inode = Inode {
                nid,
                extended: true,
                datalayout,
                mode: i.mode.get(),
                nlink: i.nlink.get(),
                uid: i.uid.get(),
                gid: i.gid.get(),
                size: i.size.get(),
                mtime: i.mtime.get(),
                mtime_nsec: i.mtime_nsec.get(),
                ino: i.ino.get(),
                u: i.u.get(),
                xattrs: Vec::new(),
                tail_offset: at + size_of::<InodeExtended>() as u64,
                dot_omitted: false,
            };
            (inode, i.xattr_icount.get())
        } else {
            let i: InodeCompact = self.read(at)?;
            let mode = i.mode.get();
            let is_dir = mode & S_IFMT == S_IFDIR;
            let inode = Inode {
                nid,
                extended: false,
                datalayout,
                mode,
                nlink: if bit4 && !is_dir {
                    1
                } else {
                    u32::from(i.nb.get())
                },
                uid: u32::from(i.uid.get()),
                gid: u32::from(i.gid.get()),
                size: u64::from(i.size.get()),
                mtime: self
                    .superblock
                    .build_time
                    .get()
                    .saturating_add(u64::from(i.mtime.get())),
                mtime_nsec: self.superblock.build_time_nsec.get(),
                ino: i.ino.get(),
                u: i.u.get(),
                xattrs: Vec::new(),
                tail_offset: at + size_of::<InodeCompact>() as u64,
                dot_omitted: false,
            };
            (inode, i.xattr_icount.get())
        };
        inode.dot_omitted = bit4 && inode.is_dir();
        if file_type_of_mode(inode.mode) == FT_UNKNOWN {
            return corrupt(format!("nid {nid}: mode {:#o}", inode.mode));
        }
        let xsize = xattr_ibody_size(icount) as u64;
        inode.xattrs = self.xattrs(nid, inode.tail_offset, xsize)?;
        inode.tail_offset += xsize;
        Ok(inode)
    }

    /// The inline xattr area of `len` bytes at `at`: shared ones first,
    /// then the entries stored in place.
    fn xattrs(&self, nid: u64, at: u64, len: u64) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        if len == 0 {
            return Ok(out);
        }
        let header: XattrIbodyHeader = self.read(at)?;
        let mut pos = at + size_of::<XattrIbodyHeader>() as u64;
        let end = at + len;
        let shared = u64::from(header.shared_count);
        if pos + 4 * shared > end {
            return corrupt(format!(
                "nid {nid}: {shared} shared xattrs overflow the ibody"
            ));
        }
        let shared_base = self.block_offset(u64::from(self.superblock.xattr_blkaddr.get()))?;
        for _ in 0..shared {
            let id: zerocopy::little_endian::U32 = self.read(pos)?;
            let Some(x) = u64::from(id.get())
                .checked_mul(4)
                .and_then(|o| o.checked_add(shared_base))
            else {
                return corrupt(format!("nid {nid}: shared xattr id {}", id.get()));
            };
            out.push(self.xattr_entry(nid, x, u64::MAX)?.0);
            pos += 4;
        }
        while pos < end {
            let (x, size) = self.xattr_entry(nid, pos, end - pos)?;
            out.push(x);
            pos += size;
        }
        Ok(out)
    }

    /// The xattr entry at `at`, of at most `room` bytes, and its padded size.
    fn xattr_entry(&self, nid: u64, at: u64, room: u64) -> Result<(Xattr, u64)> {
        let e: XattrEntry = self.read(at)?;
        let (name_len, value_len) = (usize::from(e.name_len), usize::from(e.value_size.get()));
        let size = xattr_entry_size(name_len, value_len) as u64;
        if size > room {
            return corrupt(format!("nid {nid}: an xattr entry overflows the ibody"));
        }
        if e.name_index & XATTR_LONG_PREFIX != 0 {
            return Err(ReadError::Unsupported(format!(
                "nid {nid}: long xattr name prefix"
            )));
        }
        let Some(prefix) = xattr_prefix(e.name_index) else {
            return corrupt(format!("nid {nid}: xattr name index {}", e.name_index));
        };
        let body = self.get(
            at + size_of::<XattrEntry>() as u64,
            (name_len + value_len) as u64,
        )?;
        let mut name = prefix.to_vec();
        name.extend_from_slice(&body[..name_len]);
        let value = body[name_len..].to_vec();
        Ok((Xattr { name, value }, size))
    }

    /// The bytes of a flat (uncompressed, not chunk-based) inode: a
    /// directory's blocks, a symlink's text, a plain file's content.
    pub fn data(&self, inode: &Inode) -> Result<Vec<u8>> {
        let bs = self.block_size();
        let nid = inode.nid;
        let start = self.block_offset(u64::from(inode.u));
        match inode.datalayout {
            _ if inode.size == 0 => Ok(Vec::new()),
            FLAT_PLAIN => Ok(self.get(start?, inode.size)?.to_vec()),
            FLAT_INLINE => {
                // All blocks but the last are at `u`; the last, whole or
                // partial, follows the inode and must not leave its block.
                let head = (inode.size - 1) / bs * bs;
                let tail = inode.size - head;
                if inode.tail_offset % bs + tail > bs {
                    return corrupt(format!("nid {nid}: inline data crosses a block boundary"));
                }
                let mut out = if head > 0 {
                    self.get(start?, head)?.to_vec()
                } else {
                    Vec::new()
                };
                out.extend_from_slice(self.get(inode.tail_offset, tail)?);
                Ok(out)
            }
            other => Err(ReadError::Unsupported(format!(
                "nid {nid}: data of layout {other}"
            ))),
        }
    }

    /// A chunk-based inode's map.
    pub fn chunk_map(&self, inode: &Inode) -> Result<ChunkMap> {
        let nid = inode.nid;
        if inode.datalayout != CHUNK_BASED {
            return corrupt(format!("nid {nid}: not chunk-based"));
        }
        let format = ChunkInfo::from_u(zerocopy::little_endian::U32::new(inode.u))
            .format
            .get();
        let indexes = format & CHUNK_FORMAT_INDEXES != 0;
        if format & !(CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
            return Err(ReadError::Unsupported(format!(
                "nid {nid}: chunk format {format:#x}"
            )));
        }
        let chunk_bits = format & CHUNK_FORMAT_BLKBITS_MASK;
        let chunk_size = self.block_size() << chunk_bits;
        let count = inode.size.div_ceil(chunk_size);
        let entry = if indexes {
            size_of::<ChunkIndex>()
        } else {
            BLOCK_MAP_ENTRY_SIZE
        } as u64;
        let at = inode.tail_offset.next_multiple_of(entry);
        let Some(len) = count.checked_mul(entry) else {
            return corrupt(format!("nid {nid}: {count} chunks"));
        };
        let map = self.get(at, len)?;
        let blocks = map
            .chunks_exact(entry as usize)
            .map(|e| {
                let addr = if indexes {
                    ChunkIndex::read_from_bytes(e)
                        .expect("sized chunk")
                        .startblk_lo
                        .get()
                } else {
                    zerocopy::little_endian::U32::read_from_bytes(e)
                        .expect("sized chunk")
                        .get()
                };
                (addr != NULL_ADDR).then_some(u64::from(addr))
            })
            .collect();
        Ok(ChunkMap {
            chunk_bits,
            chunk_size,
            indexes,
            blocks,
        })
    }

    /// A directory's entries, `.` and `..` included, in their on-disk
    /// order (which must be sorted).
    pub fn dir_entries(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        let nid = dir.nid;
        if !dir.is_dir() {
            return corrupt(format!("nid {nid}: not a directory"));
        }
        let data = self.data(dir)?;
        let mut out: Vec<DirEntry> = Vec::new();
        for block in data.chunks(self.block_size() as usize) {
            let first = Dirent::read_from_prefix(block)
                .map_err(|_| ReadError::Corrupt(format!("nid {nid}: a short directory block")))?
                .0;
            let names_at = usize::from(first.nameoff.get());
            let dirent = size_of::<Dirent>();
            if names_at < dirent || names_at % dirent != 0 || names_at >= block.len() {
                return corrupt(format!("nid {nid}: first name offset {names_at}"));
            }
            let count = names_at / dirent;
            for k in 0..count {
                let d = Dirent::read_from_bytes(&block[k * dirent..(k + 1) * dirent])
                    .expect("within names_at");
                let from = usize::from(d.nameoff.get());
                let to = if k + 1 < count {
                    let next = Dirent::read_from_bytes(&block[(k + 1) * dirent..(k + 2) * dirent])
                        .expect("within names_at");
                    usize::from(next.nameoff.get())
                } else {
                    // The last name runs to the block's end or a NUL.
                    let rest = block.get(from..).unwrap_or_default();
                    from + rest.iter().position(|&c| c == 0).unwrap_or(rest.len())
                };
                if from < names_at || to <= from || to > block.len() || to - from > NAME_LEN_MAX {
                    return corrupt(format!("nid {nid}: name at {from}..{to}"));
                }
                let name = block[from..to].to_vec();
                if let Some(prev) = out.last() {
                    if prev.name >= name {
                        return corrupt(format!(
                            "nid {nid}: names not sorted ({:?} then {:?})",
                            String::from_utf8_lossy(&prev.name),
                            String::from_utf8_lossy(&name)
                        ));
                    }
                }
                out.push(DirEntry {
                    name,
                    nid: d.nid.get(),
                    file_type: d.file_type,
                });
            }
        }
        Ok(out)
    }

    /// Every entry from the root down, depth first, each directory's
    /// children in name order. Checks what ties the tree together: `.`
    /// and `..` name the directory and its parent, a dirent's file type
    /// is its inode's, no directory is reached twice.
    pub fn walk(&self) -> Result<Vec<Node>> {
        let root = self.inode(self.root_nid())?;
        if !root.is_dir() {
            return corrupt("the root is not a directory");
        }
        let mut seen = HashSet::from([root.nid]);
        let mut out = Vec::new();
        // (path, inode, parent nid), popped in name order.
        let mut stack = vec![(Vec::new(), root.clone(), root.nid)];
        while let Some((path, inode, parent)) = stack.pop() {
            let shown = String::from_utf8_lossy(&path).into_owned();
            let mut node = Node {
                path,
                inode,
                link: None,
                chunks: None,
            };
            let inode = &node.inode;
            if inode.is_dir() {
                let entries = self.dir_entries(inode)?;
                let mut dots = (inode.dot_omitted, false);
                let mut children = Vec::new();
                for e in entries {
                    match &e.name[..] {
                        b"." => dots.0 = e.nid == inode.nid && e.file_type == FT_DIR,
                        b".." => dots.1 = e.nid == parent && e.file_type == FT_DIR,
                        _ => children.push(e),
                    }
                }
                if dots != (true, true) {
                    return corrupt(format!("/{shown}: `.` or `..` missing or wrong"));
                }
                for e in children.into_iter().rev() {
                    let child = self.inode(e.nid)?;
                    let mut p = node.path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&e.name);
                    if child.file_type() != e.file_type {
                        return corrupt(format!(
                            "{}: dirent type {} for mode {:#o}",
                            String::from_utf8_lossy(&p),
                            e.file_type,
                            child.mode
                        ));
                    }
                    if child.is_dir() && !seen.insert(child.nid) {
                        return corrupt(format!(
                            "{}: directory nid {} reached twice",
                            String::from_utf8_lossy(&p),
                            child.nid
                        ));
                    }
                    stack.push((p, child, node.inode.nid));
                }
            } else if inode.mode & S_IFMT == S_IFLNK {
                node.link = Some(self.data(inode)?);
            } else if inode.datalayout == CHUNK_BASED {
                node.chunks = Some(self.chunk_map(inode)?);
            }
            out.push(node);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::erofs::format::{InodeExtended, BLOCK_SIZE, FT_REG_FILE, S_IFREG};
    use crate::lower::erofs::{write, Body, Entry};
    use std::mem::offset_of;

    const MTIME: u64 = 1_600_000_000;

    fn entry(perm: u16, body: Body) -> Entry {
        Entry {
            perm,
            uid: 1000,
            gid: 2000,
            body,
        }
    }

    fn file(size: u64, redirect: &str) -> Body {
        Body::File {
            size,
            redirect: redirect.as_bytes().to_vec(),
        }
    }

    /// root: a/ (b, c -> b), d, long -> 4040 x's (a block of its own),
    /// many/ (150 files).
    fn sample() -> Vec<u8> {
        let n = |s: &str| s.as_bytes().to_vec();
        let mut entries = vec![
            entry(
                0o755,
                Body::Dir(vec![
                    (n("a"), 1),
                    (n("d"), 4),
                    (n("long"), 5),
                    (n("many"), 6),
                ]),
            ),
            entry(0o700, Body::Dir(vec![(n("c"), 3), (n("b"), 2)])),
            entry(0o4755, file(10_000, "/ab/blob")),
            entry(0o777, Body::Symlink(n("b"))),
            entry(0o000, file(0, "")),
            entry(0o777, Body::Symlink(vec![b'x'; 4040])),
            entry(0o750, Body::Dir(Vec::new())),
        ];
        let kids = (0..150)
            .map(|i| (format!("file-{i:03}").into_bytes(), 7 + i))
            .collect();
        entries[6].body = Body::Dir(kids);
        for i in 0..150 {
            entries.push(entry(0o644, file(i + 1, &format!("/{i:02}/x"))));
        }
        write(&entries, MTIME).unwrap()
    }

    fn walk(img: &[u8]) -> Result<Vec<Node>> {
        Image::open(img)?.walk()
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let img = sample();
        let nodes = walk(&img).unwrap();
        let paths: Vec<String> = nodes
            .iter()
            .take(7)
            .map(|n| String::from_utf8_lossy(&n.path).into_owned())
            .collect();
        assert_eq!(paths, ["", "a", "a/b", "a/c", "d", "long", "many"]);
        assert_eq!(nodes.len(), 7 + 150);
        let by = |p: &str| nodes.iter().find(|n| n.path == p.as_bytes()).unwrap();
        let root = &by("").inode;
        assert_eq!((root.mode, root.nlink), (S_IFDIR | 0o755, 4));
        let b = by("a/b");
        assert_eq!(b.inode.mode, 0o104755);
        assert_eq!(
            (b.inode.uid, b.inode.gid, b.inode.size),
            (1000, 2000, 10_000)
        );
        assert_eq!((b.inode.mtime, b.inode.nlink), (MTIME, 1));
        assert_eq!(
            b.inode.xattr(b"trusted.overlay.redirect"),
            Some(&b"/ab/blob"[..])
        );
        assert_eq!(b.inode.xattr(b"trusted.overlay.metacopy"), Some(&b""[..]));
        let chunks = b.chunks.as_ref().unwrap();
        assert_eq!((chunks.chunk_size, chunks.indexes), (16384, false));
        assert_eq!(chunks.blocks, [None]);
        assert_eq!(by("a/c").link.as_deref(), Some(&b"b"[..]));
        assert_eq!(by("long").link.as_deref(), Some(&[b'x'; 4040][..]));
        let d = &by("d");
        assert_eq!((d.inode.mode, d.inode.size), (S_IFREG, 0));
        assert!(d.inode.xattrs.is_empty() && d.chunks.is_none());
        assert_eq!(by("many/file-149").inode.size, 150);
        let image = Image::open(&img).unwrap();
        assert_eq!(image.superblock.inos.get(), nodes.len() as u64);
        assert_eq!(
            image.superblock.blocks.get() as usize * BLOCK_SIZE,
            img.len()
        );
    }

    #[test]
    fn truncated_images_are_errors() {
        let img = sample();
        let whole = walk(&img).unwrap();
        let lens = (0..img.len()).step_by(37).chain(img.len() - 200..img.len());
        for len in lens {
            match walk(&img[..len]) {
                Err(ReadError::TooShort(_)) => assert!(len < 1024 + 128, "{len}"),
                Err(_) => {}
                // Only the last block's zero padding may go.
                Ok(nodes) => {
                    assert!(len > img.len() - BLOCK_SIZE, "{len}");
                    assert_eq!(nodes, whole);
                }
            }
        }
    }

    /// A tiny xorshift: the same corruptions every run.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn random_corruption_is_an_error_or_a_tree_never_a_panic() {
        let img = sample();
        let image = Image::open(&img).unwrap();
        // Mostly the metadata, where offsets and counts live.
        let meta = image.superblock.blocks.get() as usize * BLOCK_SIZE - 3 * BLOCK_SIZE;
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut errors = 0;
        for _ in 0..3000 {
            let mut bad = img.clone();
            for _ in 0..1 + rng.below(4) {
                let at = if rng.below(4) == 0 {
                    rng.below(bad.len())
                } else {
                    1024 + rng.below(meta - 1024)
                };
                bad[at] = [0, 0xff, 0x80, rng.below(256) as u8][rng.below(4)];
            }
            errors += walk(&bad).is_err() as usize;
        }
        assert!(errors > 300, "{errors} of 3000 corruptions noticed");
    }

    /// Overwrite the field at `field` of the (extended) inode `nid`.
    fn patch_inode(img: &mut [u8], nid: u64, field: usize, bytes: &[u8]) {
        let at = nid as usize * 32 + field;
        img[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn node<'a>(nodes: &'a [Node], path: &str) -> &'a Node {
        nodes.iter().find(|n| n.path == path.as_bytes()).unwrap()
    }

    fn corrupt_msg(r: Result<Vec<Node>>) -> String {
        match r {
            Err(ReadError::Corrupt(m)) => m,
            other => panic!("not corrupt: {other:?}"),
        }
    }

    #[test]
    fn specific_corruptions_are_named() {
        let img = sample();
        let nodes = walk(&img).unwrap();

        let mut bad = img.clone();
        bad[1024] ^= 1;
        assert!(matches!(walk(&bad), Err(ReadError::BadMagic(_))));

        // Names out of order: swap "b" and "c" in a/'s only block.
        let a = &node(&nodes, "a").inode;
        let blk = a.u as usize * BLOCK_SIZE;
        let names = blk + 4 * 12;
        assert_eq!(&img[names..names + 5], b"...bc");
        let mut bad = img.clone();
        bad[names + 3..names + 5].copy_from_slice(b"cb");
        assert!(corrupt_msg(walk(&bad)).contains("not sorted"));

        // a/ points back at the root: a cycle, not an endless walk.
        let root = &node(&nodes, "").inode;
        let dirent_a = root.u as usize * BLOCK_SIZE + 2 * 12;
        let root = root.nid;
        let mut bad = img.clone();
        bad[dirent_a..dirent_a + 8].copy_from_slice(&root.to_le_bytes());
        assert!(corrupt_msg(walk(&bad)).contains("reached twice"));

        // A file whose dirent says directory.
        let mut bad = img.clone();
        bad[blk + 2 * 12 + 10] = FT_DIR;
        assert!(corrupt_msg(walk(&bad)).contains("dirent type"));
        assert_eq!(img[blk + 2 * 12 + 10], FT_REG_FILE);

        // Sizes and counts beyond the image.
        let size = offset_of!(InodeExtended, size);
        let mut bad = img.clone();
        patch_inode(&mut bad, root, size, &(1u64 << 40).to_le_bytes());
        assert!(corrupt_msg(walk(&bad)).contains("past the image's end"));
        let b = node(&nodes, "a/b").inode.nid;
        let mut bad = img.clone();
        patch_inode(&mut bad, b, size, &u64::MAX.to_le_bytes());
        assert!(walk(&bad).is_err());
        let icount = offset_of!(InodeExtended, xattr_icount);
        let mut bad = img.clone();
        patch_inode(&mut bad, b, icount, &u16::MAX.to_le_bytes());
        assert!(walk(&bad).is_err());
        // The redirect's value_size: its entry no longer fits the ibody.
        let mut bad = img.clone();
        let redirect = b as usize * 32 + 64 + 12 + 20 + 2;
        bad[redirect..redirect + 2].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(corrupt_msg(walk(&bad)).contains("overflows the ibody"));
        // A root nid past the end.
        let mut bad = img.clone();
        bad[1024 + 14..1024 + 16].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(corrupt_msg(walk(&bad)).contains("past the image's end"));
    }
}
