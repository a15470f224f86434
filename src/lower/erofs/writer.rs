//! The image writer. Only what `image.rs` needs is written: 4 KiB
//! blocks, no compression, extended (64-byte) inodes, inline xattrs, plain
//! directory blocks, symlink texts inline (in a block of their own when
//! near 4 KiB). `fsck.erofs`, a real mount and `reader` check it in tests.
//!
//! The image is produced front to back: superblock, inode records at the
//! offsets a first pass chose (their nids are needed by the directory
//! blocks), then the data blocks.

use super::format::{
    inode_format, xattr_entry_size, xattr_icount, ChunkInfo, Dirent, InodeExtended, Superblock,
    XattrEntry, XattrIbodyHeader, BLOCK_BITS, BLOCK_SIZE, CHUNK_BASED,
    FEATURE_INCOMPAT_CHUNKED_FILE, FLAT_INLINE, FLAT_PLAIN, FT_DIR, FT_REG_FILE, FT_SYMLINK,
    INODE_LAYOUT_EXTENDED, INODE_SLOT_SIZE, MAGIC_V1, NULL_ADDR, SUPERBLOCK_OFFSET, S_IFDIR,
    S_IFLNK, S_IFREG, XATTR_INDEX_TRUSTED,
};
use std::collections::HashMap;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

const BLOCK: usize = BLOCK_SIZE;
const INODE_SIZE: usize = size_of::<InodeExtended>();
const XATTR_HEADER_SIZE: usize = size_of::<XattrIbodyHeader>();
const DIRENT_SIZE: usize = size_of::<Dirent>();

/// What an inode holds.
#[derive(Debug, Clone)]
pub enum Body {
    /// Children as (name, index into the entry list); any order.
    Dir(Vec<(Vec<u8>, usize)>),
    /// A file of `size` bytes whose data is at `redirect` (an absolute path
    /// inside the data-only layer); ignored when `size` is 0.
    File {
        size: u64,
        redirect: Vec<u8>,
    },
    Symlink(Vec<u8>),
}

/// One inode: permission bits, owner, body.
#[derive(Debug, Clone)]
pub struct Entry {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub body: Body,
}

/// Why entries cannot become an image (a caller's bug, not bad input:
/// the tree has already refused bad names).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("entry 0 (the root) is not a directory")]
    RootNotDir,
    #[error("entry {0} is named by no directory, or by more than one")]
    BadLinks(usize),
    #[error("entry {0}: a name is empty, longer than 255 bytes, or holds '/' or NUL")]
    BadName(usize),
    #[error("entry {0}: redirect must be an absolute path")]
    BadRedirect(usize),
    #[error("image too large for EROFS block addresses")]
    TooLarge,
}

/// Serialise `entries` (entry 0 is the root directory) into an image whose
/// every inode has modification time `mtime`.
pub fn write(entries: &[Entry], mtime: u64) -> Result<Vec<u8>, ImageError> {
    let parents = check(entries)?;

    // Inode records (inode, inline xattrs, inline tail) packed after the
    // superblock, 32-byte aligned, none crossing a block boundary: the
    // kernel reads an inline tail from one block.
    let mut pos = vec![0usize; entries.len()];
    let mut off = SUPERBLOCK_OFFSET + size_of::<Superblock>();
    for (i, e) in entries.iter().enumerate() {
        let rec = record_size(e);
        off = off.next_multiple_of(INODE_SLOT_SIZE);
        if off % BLOCK + rec > BLOCK {
            off = off.next_multiple_of(BLOCK);
        }
        pos[i] = off;
        off += rec;
    }
    // meta_blkaddr is 0, so a nid is an offset from the image's start.
    // The root's nid is a 16-bit field: it comes first, at nid 36.
    let nid = |i: usize| (pos[i] / INODE_SLOT_SIZE) as u64;

    // Data blocks after the metadata: directory blocks and long symlinks.
    let mut data: Vec<u8> = Vec::new();
    let first_data_block = off.div_ceil(BLOCK);
    let mut placed: HashMap<usize, (u32, u64)> = HashMap::new(); // index -> (blkaddr, size)
    for (i, e) in entries.iter().enumerate() {
        let bytes = match &e.body {
            Body::Dir(children) => {
                let mut list: Vec<(&[u8], u64, u8)> = Vec::with_capacity(children.len() + 2);
                list.push((b".", nid(i), FT_DIR));
                list.push((b"..", nid(parents[i]), FT_DIR));
                for (name, c) in children {
                    list.push((name, nid(*c), file_type(&entries[*c].body)));
                }
                list.sort_unstable_by(|a, b| a.0.cmp(b.0));
                dir_blocks(&list)
            }
            Body::Symlink(target) if inline_size(e) == 0 => target.clone(),
            _ => continue,
        };
        let blk = first_data_block + data.len() / BLOCK;
        let blk = u32::try_from(blk).map_err(|_| ImageError::TooLarge)?;
        placed.insert(i, (blk, bytes.len() as u64));
        data.extend_from_slice(&bytes);
        data.resize(data.len().next_multiple_of(BLOCK), 0);
    }

    let total = first_data_block * BLOCK + data.len();
    let blocks = u32::try_from(total / BLOCK).map_err(|_| ImageError::TooLarge)?;
    let mut img = Vec::with_capacity(total);
    img.resize(SUPERBLOCK_OFFSET, 0);
    let mut volume_name = [0u8; 16];
    volume_name[..5].copy_from_slice(b"vhrun");
    let sb = Superblock {
        magic: U32::new(MAGIC_V1),
        // No checksum (feature_compat 0): nothing for the kernel to verify
        // or for a rewrite to keep up to date.
        blkszbits: BLOCK_BITS,
        root_nid: U16::new(nid(0) as u16),
        inos: U64::new(entries.len() as u64),
        build_time: U64::new(mtime),
        blocks: U32::new(blocks),
        volume_name,
        feature_incompat: U32::new(FEATURE_INCOMPAT_CHUNKED_FILE),
        ..Superblock::default()
    };
    img.extend_from_slice(sb.as_bytes());
    for (i, e) in entries.iter().enumerate() {
        let subdirs = match &e.body {
            Body::Dir(children) => children
                .iter()
                .filter(|(_, c)| matches!(entries[*c].body, Body::Dir(_)))
                .count() as u32,
            _ => 0,
        };
        img.resize(pos[i], 0);
        write_inode(&mut img, i, e, mtime, placed.get(&i).copied(), subdirs);
        debug_assert_eq!(img.len(), pos[i] + record_size(e));
    }
    img.resize(first_data_block * BLOCK, 0);
    img.extend_from_slice(&data);
    Ok(img)
}

/// Every entry but the root is named exactly once; names are valid.
/// Returns each entry's parent (the root is its own).
fn check(entries: &[Entry]) -> Result<Vec<usize>, ImageError> {
    if !matches!(entries.first().map(|e| &e.body), Some(Body::Dir(_))) {
        return Err(ImageError::RootNotDir);
    }
    let mut parent = vec![usize::MAX; entries.len()];
    parent[0] = 0;
    for (i, e) in entries.iter().enumerate() {
        match &e.body {
            Body::Dir(children) => {
                for (name, c) in children {
                    if name.is_empty()
                        || name.len() > 255
                        || name.contains(&b'/')
                        || name.contains(&0)
                        || name == b"."
                        || name == b".."
                    {
                        return Err(ImageError::BadName(i));
                    }
                    if *c == 0 || *c >= entries.len() || parent[*c] != usize::MAX {
                        return Err(ImageError::BadLinks((*c).min(entries.len())));
                    }
                    parent[*c] = i;
                }
            }
            Body::File { size, redirect } if *size > 0 && !redirect.starts_with(b"/") => {
                return Err(ImageError::BadRedirect(i));
            }
            _ => {}
        }
    }
    match parent.iter().position(|&p| p == usize::MAX) {
        Some(i) => Err(ImageError::BadLinks(i)),
        None => Ok(parent),
    }
}

fn file_type(b: &Body) -> u8 {
    match b {
        Body::Dir(_) => FT_DIR,
        Body::File { .. } => FT_REG_FILE,
        Body::Symlink(_) => FT_SYMLINK,
    }
}

/// The names as stored: `XATTR_INDEX_TRUSTED` supplies `trusted.`.
const METACOPY: &[u8] = b"overlay.metacopy";
const REDIRECT: &[u8] = b"overlay.redirect";

fn xattr_size(e: &Entry) -> usize {
    match &e.body {
        Body::File { size, redirect } if *size > 0 => {
            XATTR_HEADER_SIZE
                + xattr_entry_size(METACOPY.len(), 0)
                + xattr_entry_size(REDIRECT.len(), redirect.len())
        }
        _ => 0,
    }
}

/// Bytes after the inode and its xattrs in the same record: a file's
/// one-entry chunk map, or a symlink text short enough to sit inline
/// (0 = in a data block of its own).
fn inline_size(e: &Entry) -> usize {
    match &e.body {
        Body::File { size, .. } if *size > 0 => size_of::<U32>(),
        Body::Symlink(t) if INODE_SIZE + t.len() <= BLOCK => t.len(),
        _ => 0,
    }
}

fn record_size(e: &Entry) -> usize {
    INODE_SIZE + xattr_size(e) + inline_size(e)
}

/// Chunk size exponent over the block size that makes one chunk hold the
/// whole file.
fn chunk_bits(size: u64) -> u16 {
    let bits = 64 - (size.max(1) - 1).leading_zeros();
    (bits.saturating_sub(BLOCK_BITS as u32)).min(31) as u16
}

/// Append entry `index`'s record: its inode, then its xattrs and chunk
/// map or inline symlink text.
fn write_inode(
    out: &mut Vec<u8>,
    index: usize,
    e: &Entry,
    mtime: u64,
    placed: Option<(u32, u64)>,
    subdirs: u32,
) {
    let (datalayout, kind, size, u, nlink) = match &e.body {
        Body::Dir(_) => {
            let (blk, len) = placed.expect("directories get data blocks");
            (FLAT_PLAIN, S_IFDIR, len, blk, 2 + subdirs)
        }
        Body::File { size: 0, .. } => (FLAT_PLAIN, S_IFREG, 0, 0, 1),
        Body::File { size, .. } => {
            // A block map (no `CHUNK_FORMAT_INDEXES`) of one chunk.
            let chunks = ChunkInfo {
                format: U16::new(chunk_bits(*size)),
                ..ChunkInfo::default()
            };
            (CHUNK_BASED, S_IFREG, *size, chunks.to_u().get(), 1)
        }
        Body::Symlink(t) => match placed {
            Some((blk, len)) => (FLAT_PLAIN, S_IFLNK, len, blk, 1),
            None => (FLAT_INLINE, S_IFLNK, t.len() as u64, 0, 1),
        },
    };
    let perm = if kind == S_IFLNK {
        0o777
    } else {
        e.perm & 0o7777
    };
    let inode = InodeExtended {
        format: U16::new(inode_format(INODE_LAYOUT_EXTENDED, datalayout)),
        xattr_icount: U16::new(xattr_icount(xattr_size(e)) as u16),
        mode: U16::new(kind | perm),
        size: U64::new(size),
        u: U32::new(u),
        ino: U32::new((index + 1) as u32),
        uid: U32::new(e.uid),
        gid: U32::new(e.gid),
        mtime: U64::new(mtime),
        nlink: U32::new(nlink),
        ..InodeExtended::default()
    };
    out.extend_from_slice(inode.as_bytes());

    match &e.body {
        Body::File { size, redirect } if *size > 0 => {
            // Name filter 0 is never read (no FEATURE_COMPAT_XATTR_FILTER);
            // nothing is shared between inodes.
            out.extend_from_slice(XattrIbodyHeader::default().as_bytes());
            for (name, value) in [(METACOPY, &b""[..]), (REDIRECT, &redirect[..])] {
                let end = out.len() + xattr_entry_size(name.len(), value.len());
                let entry = XattrEntry {
                    name_len: name.len() as u8,
                    name_index: XATTR_INDEX_TRUSTED,
                    value_size: U16::new(value.len() as u16),
                };
                out.extend_from_slice(entry.as_bytes());
                out.extend_from_slice(name);
                out.extend_from_slice(value);
                out.resize(end, 0);
            }
            // One chunk, a hole: the data is the redirect's, not ours.
            out.extend_from_slice(U32::new(NULL_ADDR).as_bytes());
        }
        Body::Symlink(t) if placed.is_none() => out.extend_from_slice(t),
        _ => {}
    }
}

/// Directory data: sorted entries packed into blocks, each block its
/// dirent array then the names; the last block is cut at its last name.
fn dir_blocks(list: &[(&[u8], u64, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < list.len() {
        let mut end = start;
        let mut used = 0;
        while end < list.len() && used + DIRENT_SIZE + list[end].0.len() <= BLOCK {
            used += DIRENT_SIZE + list[end].0.len();
            end += 1;
        }
        out.resize(out.len().next_multiple_of(BLOCK), 0);
        let mut nameoff = DIRENT_SIZE * (end - start);
        for (name, nid, file_type) in &list[start..end] {
            let d = Dirent {
                nid: U64::new(*nid),
                nameoff: U16::new(nameoff as u16),
                file_type: *file_type,
                reserved: 0,
            };
            out.extend_from_slice(d.as_bytes());
            nameoff += name.len();
        }
        for (name, ..) in &list[start..end] {
            out.extend_from_slice(name);
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::erofs::reader::Image;

    fn dir(children: Vec<(&str, usize)>) -> Entry {
        Entry {
            perm: 0o750,
            uid: 0,
            gid: 0,
            body: Body::Dir(
                children
                    .into_iter()
                    .map(|(n, i)| (n.as_bytes().to_vec(), i))
                    .collect(),
            ),
        }
    }

    /// A small tree with one of each thing the writer emits: a multi-block
    /// directory, files empty and not (setuid, mode 0), short and long
    /// symlinks, owners other than root.
    fn golden_tree() -> Vec<Entry> {
        let file = |perm, size: u64, redirect: &str| Entry {
            perm,
            uid: 1000,
            gid: 100,
            body: Body::File {
                size,
                redirect: redirect.as_bytes().to_vec(),
            },
        };
        let mut entries = vec![
            dir(vec![
                ("bin", 1),
                ("empty", 3),
                ("link", 4),
                ("long", 5),
                ("many", 6),
            ]),
            dir(vec![("tool", 2)]),
            file(0o4755, 5000, "/ab/abcdef0123"),
            file(0o000, 0, ""),
            Entry {
                perm: 0o777,
                uid: 0,
                gid: 0,
                body: Body::Symlink(b"bin/tool".to_vec()),
            },
            Entry {
                perm: 0o777,
                uid: 0,
                gid: 0,
                body: Body::Symlink(vec![b'x'; 4050]),
            },
        ];
        let names: Vec<String> = (0..300).map(|i| format!("entry-{i:03}")).collect();
        entries.push(dir(names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), 7 + i))
            .collect()));
        for i in 0..300u64 {
            entries.push(file(0o644, i * 977, &format!("/{:02x}/blob-{i}", i % 256)));
        }
        entries
    }

    /// The bytes of a fixed image, pinned: any change to the layout shows
    /// here first (update the hash only for a deliberate format change,
    /// with `fsck.erofs` and the kernel tests run).
    #[test]
    fn golden_image_is_unchanged() {
        use sha2::Digest;
        let img = write(&golden_tree(), 1_700_000_000).unwrap();
        let hex: String = sha2::Sha256::digest(&img)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            (img.len(), hex.as_str()),
            (
                73728,
                "fe13e9097065cd2a1359f2f8e29a720c2dff20c59e7a1f5e4677995baadf2dec"
            )
        );
    }

    #[test]
    fn chunk_covers_the_file() {
        for size in [1u64, 4095, 4096, 4097, 1 << 20, (1 << 20) + 1, 5 << 30] {
            let chunk = (BLOCK as u64) << chunk_bits(size);
            assert!(
                chunk >= size && (chunk == BLOCK as u64 || chunk / 2 < size),
                "{size}"
            );
        }
    }

    #[test]
    fn refuses_malformed_entry_lists() {
        let file = |s| Entry {
            perm: 0o644,
            uid: 0,
            gid: 0,
            body: Body::File {
                size: s,
                redirect: b"ab/rel".to_vec(),
            },
        };
        assert!(matches!(write(&[file(0)], 0), Err(ImageError::RootNotDir)));
        let orphan = [dir(vec![]), file(0)];
        assert!(matches!(write(&orphan, 0), Err(ImageError::BadLinks(1))));
        let twice = [dir(vec![("a", 1), ("b", 1)]), file(0)];
        assert!(matches!(write(&twice, 0), Err(ImageError::BadLinks(1))));
        let slash = [dir(vec![("a/b", 1)]), file(0)];
        assert!(matches!(write(&slash, 0), Err(ImageError::BadName(0))));
        let relative = [dir(vec![("a", 1)]), file(3)];
        assert!(matches!(
            write(&relative, 0),
            Err(ImageError::BadRedirect(1))
        ));
    }

    #[test]
    fn large_directories_span_blocks_sorted() {
        let n = 600; // 600 * (12 + 8) bytes: three blocks
        let mut entries = vec![dir((1..=n).map(|i| ("", i)).collect())];
        let names: Vec<String> = (1..=n).map(|i| format!("f{:07}", n + 1 - i)).collect();
        if let Body::Dir(c) = &mut entries[0].body {
            for (k, (name, _)) in c.iter_mut().enumerate() {
                *name = names[k].as_bytes().to_vec();
            }
        }
        for _ in 0..n {
            entries.push(Entry {
                perm: 0o644,
                uid: 0,
                gid: 0,
                body: Body::File {
                    size: 0,
                    redirect: Vec::new(),
                },
            });
        }
        let img = write(&entries, 7).unwrap();
        assert_eq!(img.len() % BLOCK, 0);
        let image = Image::open(&img).unwrap();
        let root = image.inode(image.root_nid()).unwrap();
        assert!(root.extended);
        assert_eq!(root.datalayout, FLAT_PLAIN);
        let size = root.size;
        assert!(size > 2 * BLOCK as u64 && size < 3 * BLOCK as u64, "{size}");
        // The reader refuses names out of order, within or across blocks.
        let seen = image.dir_entries(&root).unwrap();
        assert_eq!(seen.len(), n + 2);
        assert_eq!(seen[2].name, b"f0000001");
    }
}
