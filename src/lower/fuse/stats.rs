//! Request counters of a mounted tree: relaxed atomics bumped on every
//! request (no logging on the hot path), read as a snapshot for `--stats`.

use crate::lower::blobcache::CacheStats;
use crate::remote::lazy::RemoteStats;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};

/// How file contents reach readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadMode {
    /// Not decided yet (before INIT).
    #[default]
    Unknown,
    /// FUSE passthrough: the kernel reads the cache file itself.
    Passthrough,
    /// vhrun answers READ requests with pread from the cache file.
    Served,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub lookup: AtomicU64,
    pub lookup_negative: AtomicU64,
    pub getattr: AtomicU64,
    pub readlink: AtomicU64,
    pub open: AtomicU64,
    pub open_passthrough: AtomicU64,
    pub opendir: AtomicU64,
    pub readdir: AtomicU64,
    pub readdirplus: AtomicU64,
    pub read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub release: AtomicU64,
    pub flush: AtomicU64,
    pub statfs: AtomicU64,
    pub access: AtomicU64,
    pub rejected_writes: AtomicU64,
    pub eio: AtomicU64,
    /// Distinct files opened, and the sum of their sizes.
    pub files_opened: AtomicU64,
    pub bytes_opened: AtomicU64,
    opened: OpenedSet,
    /// `ReadMode` as u8.
    pub read_mode: AtomicU8,
    /// Errors to tell the runs that met them.
    pub notices: super::notices::Notices,
    /// Servers of this connection before this one (warm server takeovers).
    pub takeovers: AtomicU64,
}

/// One bit per inode, set by its first successful open: a distinct-file
/// count costs one atomic `or` per OPEN request.
#[derive(Debug, Default)]
struct OpenedSet {
    bits: Box<[AtomicU64]>,
}

impl OpenedSet {
    fn with_inodes(max_ino: u64) -> OpenedSet {
        let words = (max_ino / 64 + 1) as usize;
        OpenedSet {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// True the first time `ino` is marked.
    fn first(&self, ino: u64) -> bool {
        let bit = 1u64 << (ino % 64);
        self.bits
            .get((ino / 64) as usize)
            .is_some_and(|w| w.fetch_or(bit, Relaxed) & bit == 0)
    }
}

impl Counters {
    /// Counters for a tree whose inodes are `1..=nodes`.
    pub fn for_tree(nodes: usize) -> Counters {
        Counters {
            opened: OpenedSet::with_inodes(nodes as u64),
            ..Counters::default()
        }
    }

    /// A file of `size` bytes was opened; counted once per inode.
    pub fn opened(&self, ino: u64, size: u64) {
        if self.opened.first(ino) {
            self.files_opened.fetch_add(1, Relaxed);
            self.bytes_opened.fetch_add(size, Relaxed);
        }
    }

    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn set_read_mode(&self, m: ReadMode) {
        self.read_mode.store(m as u8, Relaxed);
    }

    pub fn read_mode(&self) -> ReadMode {
        match self.read_mode.load(Relaxed) {
            x if x == ReadMode::Passthrough as u8 => ReadMode::Passthrough,
            x if x == ReadMode::Served as u8 => ReadMode::Served,
            _ => ReadMode::Unknown,
        }
    }
}

/// A snapshot of a mounted tree's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    pub read_mode: ReadMode,
    pub lookup: u64,
    pub lookup_negative: u64,
    pub getattr: u64,
    pub readlink: u64,
    pub open: u64,
    pub open_passthrough: u64,
    pub opendir: u64,
    pub readdir: u64,
    pub readdirplus: u64,
    pub read: u64,
    /// Bytes returned by READ requests (0 under passthrough).
    pub bytes_read: u64,
    pub release: u64,
    /// FLUSH requests: one per connection at most (answered ENOSYS, after
    /// which the kernel stops sending them on close).
    #[serde(default)]
    pub flush: u64,
    pub statfs: u64,
    pub access: u64,
    pub rejected_writes: u64,
    /// Requests answered EIO (missing or corrupt blobs, bad catalog entries).
    pub eio: u64,
    /// Distinct regular files opened at least once.
    pub files_opened: u64,
    /// Sum of the sizes of those files (what the run could have read).
    pub bytes_opened: u64,
    pub cache: CacheStats,
    /// What a lazily served tree fetched from its origin.
    #[serde(default)]
    pub remote: RemoteStats,
    /// Times a new warm server took the connection over: counters before
    /// the last one are lost, the run's files were not.
    #[serde(default)]
    pub takeovers: u64,
}

impl Stats {
    pub(crate) fn from(c: &Counters, cache: CacheStats, remote: RemoteStats) -> Stats {
        let g = |a: &AtomicU64| a.load(Relaxed);
        Stats {
            read_mode: c.read_mode(),
            lookup: g(&c.lookup),
            lookup_negative: g(&c.lookup_negative),
            getattr: g(&c.getattr),
            readlink: g(&c.readlink),
            open: g(&c.open),
            open_passthrough: g(&c.open_passthrough),
            opendir: g(&c.opendir),
            readdir: g(&c.readdir),
            readdirplus: g(&c.readdirplus),
            read: g(&c.read),
            bytes_read: g(&c.bytes_read),
            release: g(&c.release),
            flush: g(&c.flush),
            statfs: g(&c.statfs),
            access: g(&c.access),
            rejected_writes: g(&c.rejected_writes),
            eio: g(&c.eio),
            files_opened: g(&c.files_opened),
            bytes_opened: g(&c.bytes_opened),
            cache,
            remote,
            takeovers: g(&c.takeovers),
        }
    }

    /// What was counted between `earlier` and this snapshot of the same
    /// mount (a run's share of a warm server's work; runs at the same time
    /// are counted in each other's share).
    pub fn since(&self, earlier: &Stats) -> Stats {
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let c = &self.cache;
        let e = &earlier.cache;
        Stats {
            read_mode: self.read_mode,
            lookup: d(self.lookup, earlier.lookup),
            lookup_negative: d(self.lookup_negative, earlier.lookup_negative),
            getattr: d(self.getattr, earlier.getattr),
            readlink: d(self.readlink, earlier.readlink),
            open: d(self.open, earlier.open),
            open_passthrough: d(self.open_passthrough, earlier.open_passthrough),
            opendir: d(self.opendir, earlier.opendir),
            readdir: d(self.readdir, earlier.readdir),
            readdirplus: d(self.readdirplus, earlier.readdirplus),
            read: d(self.read, earlier.read),
            bytes_read: d(self.bytes_read, earlier.bytes_read),
            release: d(self.release, earlier.release),
            flush: d(self.flush, earlier.flush),
            statfs: d(self.statfs, earlier.statfs),
            access: d(self.access, earlier.access),
            rejected_writes: d(self.rejected_writes, earlier.rejected_writes),
            eio: d(self.eio, earlier.eio),
            files_opened: d(self.files_opened, earlier.files_opened),
            bytes_opened: d(self.bytes_opened, earlier.bytes_opened),
            cache: CacheStats {
                hits: d(c.hits, e.hits),
                decoded: d(c.decoded, e.decoded),
                relocated: d(c.relocated, e.relocated),
                raw_verified: d(c.raw_verified, e.raw_verified),
                raw_opened: d(c.raw_opened, e.raw_opened),
                bytes_written: d(c.bytes_written, e.bytes_written),
                failures: d(c.failures, e.failures),
            },
            remote: self.remote.since(&earlier.remote),
            takeovers: d(self.takeovers, earlier.takeovers),
        }
    }

    /// Total requests counted.
    pub fn requests(&self) -> u64 {
        self.lookup
            + self.getattr
            + self.readlink
            + self.open
            + self.opendir
            + self.readdir
            + self.readdirplus
            + self.read
            + self.release
            + self.flush
            + self.statfs
            + self.access
            + self.rejected_writes
    }
}
