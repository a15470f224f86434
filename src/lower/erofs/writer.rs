//! The image writer. Only what `image.rs` needs is written: 4 KiB
//! blocks, no compression, extended (64-byte) inodes, inline xattrs, plain
//! directory blocks, symlink texts inline (in a block of their own when
//! near 4 KiB). The layout follows the kernel's `fs/erofs/erofs_fs.h`;
//! `fsck.erofs` and a real mount check it in tests.

use std::collections::HashMap;

const BLOCK: usize = 4096;
const BLOCK_BITS: u8 = 12;
const SUPERBLOCK_OFFSET: usize = 1024;
const SUPERBLOCK_SIZE: usize = 128;
const MAGIC: u32 = 0xE0F5_E1E2;
const FEATURE_INCOMPAT_CHUNKED_FILE: u32 = 0x4;
const INODE_SIZE: usize = 64;
/// Inodes are addressed by `nid = offset / 32`.
const SLOT: usize = 32;
const DIRENT_SIZE: usize = 12;
const XATTR_HEADER_SIZE: usize = 12;
const XATTR_INDEX_TRUSTED: u8 = 4;
/// `i_format`: bit 0 is the inode version (1 = extended), bits 1-3 the
/// data layout.
const EXTENDED: u16 = 1;
const FLAT_PLAIN: u16 = 0 << 1;
const FLAT_INLINE: u16 = 2 << 1;
const CHUNK_BASED: u16 = 4 << 1;
/// A chunk-map entry saying "hole".
const NULL_ADDR: u32 = u32::MAX;
const S_IFREG: u16 = 0o100000;
const S_IFDIR: u16 = 0o040000;
const S_IFLNK: u16 = 0o120000;
const FT_REG: u8 = 1;
const FT_DIR: u8 = 2;
const FT_LNK: u8 = 7;

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
    let mut off = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE;
    for (i, e) in entries.iter().enumerate() {
        let rec = INODE_SIZE + xattr_size(e) + inline_size(e);
        off = off.next_multiple_of(SLOT);
        if off % BLOCK + rec > BLOCK {
            off = off.next_multiple_of(BLOCK);
        }
        pos[i] = off;
        off += rec;
    }
    // The root's nid is a 16-bit field: it comes first, at nid 36.
    let nid = |i: usize| (pos[i] / SLOT) as u64;

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
    let mut img = vec![0u8; first_data_block * BLOCK];
    for (i, e) in entries.iter().enumerate() {
        let subdirs = match &e.body {
            Body::Dir(children) => children
                .iter()
                .filter(|(_, c)| matches!(entries[*c].body, Body::Dir(_)))
                .count() as u32,
            _ => 0,
        };
        write_inode(
            &mut img[pos[i]..],
            i,
            e,
            mtime,
            placed.get(&i).copied(),
            subdirs,
        );
    }
    img.extend_from_slice(&data);

    let sb = &mut img[SUPERBLOCK_OFFSET..SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE];
    put32(sb, 0, MAGIC);
    // checksum (4) and feature_compat (8) stay 0: no checksum to verify.
    sb[12] = BLOCK_BITS;
    put16(sb, 14, nid(0) as u16);
    put64(sb, 16, entries.len() as u64); // inos
    put64(sb, 24, mtime); // build_time
    put32(sb, 36, blocks);
    // meta_blkaddr (40) = 0: nids count from the image's start.
    sb[64..80].copy_from_slice(b"vhrun\0\0\0\0\0\0\0\0\0\0\0"); // volume_name
    put32(sb, 80, FEATURE_INCOMPAT_CHUNKED_FILE);
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
        Body::File { .. } => FT_REG,
        Body::Symlink(_) => FT_LNK,
    }
}

const METACOPY: &[u8] = b"overlay.metacopy";
const REDIRECT: &[u8] = b"overlay.redirect";

fn xattr_entry_size(name: &[u8], value: &[u8]) -> usize {
    (4 + name.len() + value.len()).next_multiple_of(4)
}

fn xattr_size(e: &Entry) -> usize {
    match &e.body {
        Body::File { size, redirect } if *size > 0 => {
            XATTR_HEADER_SIZE
                + xattr_entry_size(METACOPY, b"")
                + xattr_entry_size(REDIRECT, redirect)
        }
        _ => 0,
    }
}

/// Bytes after the inode and its xattrs in the same record: a file's
/// one-entry chunk map, or a symlink text short enough to sit inline
/// (0 = in a data block of its own).
fn inline_size(e: &Entry) -> usize {
    match &e.body {
        Body::File { size, .. } if *size > 0 => 4,
        Body::Symlink(t) if INODE_SIZE + t.len() <= BLOCK => t.len(),
        _ => 0,
    }
}

/// Chunk size exponent over the block size that makes one chunk hold the
/// whole file.
fn chunk_bits(size: u64) -> u16 {
    let bits = 64 - (size.max(1) - 1).leading_zeros();
    (bits.saturating_sub(BLOCK_BITS as u32)).min(31) as u16
}

fn write_inode(
    out: &mut [u8],
    index: usize,
    e: &Entry,
    mtime: u64,
    placed: Option<(u32, u64)>,
    subdirs: u32,
) {
    let xsize = xattr_size(e);
    let (format, kind, size, u, nlink) = match &e.body {
        Body::Dir(_) => {
            let (blk, len) = placed.expect("directories get data blocks");
            (FLAT_PLAIN, S_IFDIR, len, blk, 2 + subdirs)
        }
        Body::File { size: 0, .. } => (FLAT_PLAIN, S_IFREG, 0, 0, 1),
        Body::File { size, .. } => (CHUNK_BASED, S_IFREG, *size, chunk_bits(*size) as u32, 1),
        Body::Symlink(t) => match placed {
            Some((blk, len)) => (FLAT_PLAIN, S_IFLNK, len, blk, 1),
            None => (FLAT_INLINE, S_IFLNK, t.len() as u64, 0, 1),
        },
    };
    put16(out, 0, EXTENDED | format);
    // xattr_icount: the ibody is a 12-byte header plus (icount - 1) words.
    let icount = if xsize == 0 {
        0
    } else {
        1 + (xsize - XATTR_HEADER_SIZE) / 4
    };
    put16(out, 2, icount as u16);
    let perm = if kind == S_IFLNK {
        0o777
    } else {
        e.perm & 0o7777
    };
    put16(out, 4, kind | perm);
    put64(out, 8, size);
    put32(out, 16, u);
    put32(out, 20, (index + 1) as u32); // ino, for 32-bit stat only
    put32(out, 24, e.uid);
    put32(out, 28, e.gid);
    put64(out, 32, mtime);
    put32(out, 44, nlink);

    let mut at = INODE_SIZE;
    if let Body::File { size, redirect } = &e.body {
        if *size > 0 {
            at += XATTR_HEADER_SIZE; // name filter 0, no shared xattrs
            for (name, value) in [(METACOPY, &b""[..]), (REDIRECT, &redirect[..])] {
                out[at] = name.len() as u8;
                out[at + 1] = XATTR_INDEX_TRUSTED;
                put16(out, at + 2, value.len() as u16);
                out[at + 4..at + 4 + name.len()].copy_from_slice(name);
                let v = at + 4 + name.len();
                out[v..v + value.len()].copy_from_slice(value);
                at += xattr_entry_size(name, value);
            }
            put32(out, at, NULL_ADDR);
        }
    }
    if let (Body::Symlink(t), None) = (&e.body, placed) {
        out[at..at + t.len()].copy_from_slice(t);
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
        let mut block = vec![0u8; used];
        let mut name_off = DIRENT_SIZE * (end - start);
        for (k, (name, nid, ft)) in list[start..end].iter().enumerate() {
            let d = k * DIRENT_SIZE;
            put64(&mut block, d, *nid);
            put16(&mut block, d + 8, name_off as u16);
            block[d + 10] = *ft;
            block[name_off..name_off + name.len()].copy_from_slice(name);
            name_off += name.len();
        }
        if !out.is_empty() {
            out.resize(out.len().next_multiple_of(BLOCK), 0);
        }
        out.extend_from_slice(&block);
        start = end;
    }
    out
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Root inode: extended, flat plain, a directory bigger than 2 blocks.
        let root = &img[1152..1152 + 64];
        assert_eq!(
            u16::from_le_bytes([root[0], root[1]]),
            EXTENDED | FLAT_PLAIN
        );
        let size = u64::from_le_bytes(root[8..16].try_into().unwrap());
        assert!(size > 2 * BLOCK as u64 && size < 3 * BLOCK as u64, "{size}");
        // Names are sorted within and across blocks.
        let blk = u32::from_le_bytes(root[16..20].try_into().unwrap()) as usize;
        let mut seen = Vec::new();
        for b in 0..3 {
            let block = &img[(blk + b) * BLOCK..(blk + b + 1) * BLOCK];
            let max = (size as usize - b * BLOCK).min(BLOCK);
            let first = u16::from_le_bytes([block[8], block[9]]) as usize;
            let count = first / DIRENT_SIZE;
            for k in 0..count {
                let off = u16::from_le_bytes([block[k * 12 + 8], block[k * 12 + 9]]) as usize;
                let end = if k + 1 < count {
                    u16::from_le_bytes([block[k * 12 + 20], block[k * 12 + 21]]) as usize
                } else {
                    max
                };
                let name = &block[off..end];
                let len = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                seen.push(name[..len].to_vec());
            }
        }
        assert_eq!(seen.len(), n + 2);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted);
    }
}
