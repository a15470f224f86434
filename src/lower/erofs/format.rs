//! The EROFS on-disk format, as far as vhrun writes or reads it: the
//! kernel's `fs/erofs/erofs_fs.h` as Rust types. Every multi-byte field is
//! little-endian on disk whatever the host, hence zerocopy's `U16`/`U32`/
//! `U64`: their alignment is 1, so the structs have no padding and their
//! bytes are exactly the on-disk record (the size asserts pin that).
//!
//! Fields hold raw on-disk values; what they mean (layouts, file types,
//! chunk formats) is in the constants and helpers beside them, so a
//! reader can hold a corrupt value without the type refusing it first.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The superblock is this far into the image (room for a boot sector).
pub const SUPERBLOCK_OFFSET: usize = 1024;
pub const MAGIC_V1: u32 = 0xE0F5_E1E2;

/// vhrun writes 4 KiB blocks, the page size the kernel needs to mount.
pub const BLOCK_BITS: u8 = 12;
pub const BLOCK_SIZE: usize = 1 << BLOCK_BITS;

/// An inode is named by its `nid`: its offset from the start of the
/// metadata area (`meta_blkaddr`) in 32-byte slots.
pub const INODE_SLOT_BITS: u32 = 5;
pub const INODE_SLOT_SIZE: usize = 1 << INODE_SLOT_BITS;

pub const FEATURE_COMPAT_SB_CHKSUM: u32 = 0x0001;
pub const FEATURE_COMPAT_MTIME: u32 = 0x0002;
pub const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x0004;

pub const FEATURE_INCOMPAT_ZERO_PADDING: u32 = 0x0001;
pub const FEATURE_INCOMPAT_COMPR_CFGS: u32 = 0x0002;
pub const FEATURE_INCOMPAT_CHUNKED_FILE: u32 = 0x0004;
pub const FEATURE_INCOMPAT_DEVICE_TABLE: u32 = 0x0008;
pub const FEATURE_INCOMPAT_ZTAILPACKING: u32 = 0x0010;
pub const FEATURE_INCOMPAT_FRAGMENTS: u32 = 0x0020;
pub const FEATURE_INCOMPAT_XATTR_PREFIXES: u32 = 0x0040;
/// 48-bit block addresses: moves the root nid and block counts.
pub const FEATURE_INCOMPAT_48BIT: u32 = 0x0080;
/// Inodes in a metabox: nids no longer plain offsets.
pub const FEATURE_INCOMPAT_METABOX: u32 = 0x0100;

/// The classic 128-byte superblock (`sb_extslots` = 0): newer kernels
/// extend it in 16-byte slots only when a feature needs them.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Superblock {
    pub magic: U32,
    /// crc32c of the block from the superblock on, when
    /// `FEATURE_COMPAT_SB_CHKSUM`.
    pub checksum: U32,
    pub feature_compat: U32,
    pub blkszbits: u8,
    pub extslots: u8,
    pub root_nid: U16,
    pub inos: U64,
    /// Seconds that compact inodes' mtimes count from (the kernel's
    /// `epoch`).
    pub build_time: U64,
    pub build_time_nsec: U32,
    pub blocks: U32,
    pub meta_blkaddr: U32,
    pub xattr_blkaddr: U32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_incompat: U32,
    pub available_compr_algs: U16,
    pub extra_devices: U16,
    pub devt_slotoff: U16,
    pub dirblkbits: u8,
    pub xattr_prefix_count: u8,
    pub xattr_prefix_start: U32,
    pub packed_nid: U64,
    pub xattr_filter_reserved: u8,
    pub reserved: [u8; 23],
}

/// `i_format`: bit 0 the inode layout, bits 1-3 the data layout.
pub const INODE_LAYOUT_COMPACT: u16 = 0;
pub const INODE_LAYOUT_EXTENDED: u16 = 1;
pub const INODE_LAYOUT_MASK: u16 = 0x1;
pub const INODE_DATALAYOUT_BIT: u16 = 1;
pub const INODE_DATALAYOUT_MASK: u16 = 0x7;
/// (compact, non-directory inodes) nlink is 1 and `nb` is something else.
pub const INODE_NLINK_1_BIT: u16 = 4;

/// Data in consecutive blocks from `u` (a block address).
pub const FLAT_PLAIN: u16 = 0;
pub const COMPRESSED_FULL: u16 = 1;
/// As `FLAT_PLAIN`, but the last partial block sits right after the
/// inode and its xattrs, in the same block.
pub const FLAT_INLINE: u16 = 2;
pub const COMPRESSED_COMPACT: u16 = 3;
/// Data in chunks found through a map after the inode and its xattrs;
/// `u` is a `ChunkInfo`.
pub const CHUNK_BASED: u16 = 4;

pub const fn inode_format(layout: u16, datalayout: u16) -> u16 {
    layout | datalayout << INODE_DATALAYOUT_BIT
}

pub const fn inode_layout(format: u16) -> u16 {
    format & INODE_LAYOUT_MASK
}

pub const fn inode_datalayout(format: u16) -> u16 {
    (format >> INODE_DATALAYOUT_BIT) & INODE_DATALAYOUT_MASK
}

/// The 32-byte inode: sizes and ids that fit 32 and 16 bits, mtime as an
/// offset from the superblock's `build_time`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InodeCompact {
    pub format: U16,
    pub xattr_icount: U16,
    pub mode: U16,
    /// nlink, unless `INODE_NLINK_1_BIT` says it is 1.
    pub nb: U16,
    pub size: U32,
    pub mtime: U32,
    /// Start block (flat), `ChunkInfo` (chunk-based) or rdev.
    pub u: U32,
    /// Only for 32-bit `stat`; the nid is the identity.
    pub ino: U32,
    pub uid: U16,
    pub gid: U16,
    pub reserved: U32,
}

/// The 64-byte inode, the one vhrun writes: 32-bit ids and a full mtime.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct InodeExtended {
    pub format: U16,
    pub xattr_icount: U16,
    pub mode: U16,
    /// Block address high bits with `FEATURE_INCOMPAT_48BIT`; else 0.
    pub nb: U16,
    pub size: U64,
    /// Start block (flat), `ChunkInfo` (chunk-based) or rdev.
    pub u: U32,
    /// Only for 32-bit `stat`; the nid is the identity.
    pub ino: U32,
    pub uid: U32,
    pub gid: U32,
    pub mtime: U64,
    pub mtime_nsec: U32,
    pub nlink: U32,
    pub reserved: [u8; 16],
}

/// A chunk-based inode's `u`: chunk size and map kind.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ChunkInfo {
    pub format: U16,
    pub reserved: U16,
}

impl ChunkInfo {
    pub fn to_u(self) -> U32 {
        U32::read_from_bytes(self.as_bytes()).expect("same size")
    }
    pub fn from_u(u: U32) -> ChunkInfo {
        ChunkInfo::read_from_bytes(u.as_bytes()).expect("same size")
    }
}

/// `ChunkInfo.format`: a chunk is `BLOCK_SIZE << (format & BLKBITS_MASK)`.
pub const CHUNK_FORMAT_BLKBITS_MASK: u16 = 0x001F;
/// The map is `ChunkIndex` entries, not 4-byte block addresses.
pub const CHUNK_FORMAT_INDEXES: u16 = 0x0020;
pub const CHUNK_FORMAT_48BIT: u16 = 0x0040;

/// A block map entry (`__le32`) or chunk index saying "hole": the chunk
/// reads as zeroes.
pub const NULL_ADDR: u32 = u32::MAX;
pub const BLOCK_MAP_ENTRY_SIZE: usize = 4;

/// A chunk map entry when `CHUNK_FORMAT_INDEXES`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct ChunkIndex {
    pub startblk_hi: U16,
    pub device_id: U16,
    pub startblk_lo: U32,
}

/// Starts an inode's inline xattrs; `xattr_icount` counts it as one
/// 4-byte word, then one per word of shared ids and entries.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XattrIbodyHeader {
    /// A bloom filter of absent names, read only with
    /// `FEATURE_COMPAT_XATTR_FILTER`.
    pub name_filter: U32,
    /// 4-byte ids of shared xattrs following this header.
    pub shared_count: u8,
    pub reserved: [u8; 7],
}

/// Bytes of an inode's inline xattrs for an `xattr_icount`.
pub const fn xattr_ibody_size(icount: u16) -> usize {
    if icount == 0 {
        0
    } else {
        size_of::<XattrIbodyHeader>() + 4 * (icount as usize - 1)
    }
}

/// The `xattr_icount` of an inline xattr area of `size` bytes (0 or a
/// header and whole words).
pub const fn xattr_icount(size: usize) -> usize {
    if size == 0 {
        0
    } else {
        1 + (size - size_of::<XattrIbodyHeader>()) / 4
    }
}

/// One xattr, followed by its name (without the prefix its index names)
/// and value, padded to 4 bytes.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XattrEntry {
    pub name_len: u8,
    pub name_index: u8,
    pub value_size: U16,
}

pub const fn xattr_entry_size(name_len: usize, value_len: usize) -> usize {
    (size_of::<XattrEntry>() + name_len + value_len).next_multiple_of(4)
}

pub const XATTR_INDEX_USER: u8 = 1;
pub const XATTR_INDEX_POSIX_ACL_ACCESS: u8 = 2;
pub const XATTR_INDEX_POSIX_ACL_DEFAULT: u8 = 3;
pub const XATTR_INDEX_TRUSTED: u8 = 4;
pub const XATTR_INDEX_LUSTRE: u8 = 5;
pub const XATTR_INDEX_SECURITY: u8 = 6;
/// `name_index` bit: the rest indexes the image's long-prefix table.
pub const XATTR_LONG_PREFIX: u8 = 0x80;

/// What a short `name_index` puts before the stored name.
pub fn xattr_prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        XATTR_INDEX_USER => b"user.",
        XATTR_INDEX_POSIX_ACL_ACCESS => b"system.posix_acl_access",
        XATTR_INDEX_POSIX_ACL_DEFAULT => b"system.posix_acl_default",
        XATTR_INDEX_TRUSTED => b"trusted.",
        XATTR_INDEX_LUSTRE => b"lustre.",
        XATTR_INDEX_SECURITY => b"security.",
        _ => return None,
    })
}

/// A directory block is these, sorted by name (the kernel looks names up
/// by binary search), then the names they point at; the first entry's
/// `nameoff` is where the names start, so it gives the count.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Dirent {
    pub nid: U64,
    pub nameoff: U16,
    pub file_type: u8,
    pub reserved: u8,
}

pub const NAME_LEN_MAX: usize = 255;

pub const FT_UNKNOWN: u8 = 0;
pub const FT_REG_FILE: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHRDEV: u8 = 3;
pub const FT_BLKDEV: u8 = 4;
pub const FT_FIFO: u8 = 5;
pub const FT_SOCK: u8 = 6;
pub const FT_SYMLINK: u8 = 7;

pub const S_IFMT: u16 = 0o170000;
pub const S_IFSOCK: u16 = 0o140000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFBLK: u16 = 0o060000;
pub const S_IFDIR: u16 = 0o040000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFIFO: u16 = 0o010000;

/// The dirent file type that goes with an inode's mode.
pub const fn file_type_of_mode(mode: u16) -> u8 {
    match mode & S_IFMT {
        S_IFREG => FT_REG_FILE,
        S_IFDIR => FT_DIR,
        S_IFCHR => FT_CHRDEV,
        S_IFBLK => FT_BLKDEV,
        S_IFIFO => FT_FIFO,
        S_IFSOCK => FT_SOCK,
        S_IFLNK => FT_SYMLINK,
        _ => FT_UNKNOWN,
    }
}

const _: () = assert!(size_of::<Superblock>() == 128);
const _: () = assert!(size_of::<InodeCompact>() == 32);
const _: () = assert!(size_of::<InodeExtended>() == 64);
const _: () = assert!(size_of::<ChunkInfo>() == 4);
const _: () = assert!(size_of::<ChunkIndex>() == 8);
const _: () = assert!(size_of::<XattrIbodyHeader>() == 12);
const _: () = assert!(size_of::<XattrEntry>() == 4);
const _: () = assert!(size_of::<Dirent>() == 12);
const _: () = assert!(INODE_SLOT_SIZE == 32);
