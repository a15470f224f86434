//! The `fuser::Filesystem` over a tree and the blob cache.
//!
//! Everything is immutable, so every positive or negative answer carries a
//! long TTL and the kernel stops asking; opens go through passthrough (one
//! `BackingId` per inode, shared by concurrent opens, as the kernel demands)
//! or, without it, keep the page cache across opens and answer READ with
//! pread. Write-type requests answer EROFS. Requests never log, except
//! a first failure per file (EIO), which names the file and the blob.

use super::stats::{Counters, ReadMode};
use super::workset::Recorder;
use crate::lower::blobcache::BlobCache;
use crate::sys::handover::{BackingRecord, Inherited};
use crate::tree::{Kind, NodeRef, Tree, MTIME};
use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Entry, attribute and negative-entry lifetime: the tree never changes
/// while mounted.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const BLKSIZE: u32 = 4096;
/// Contents a server without opens keeps open for READ: a bound on its
/// descriptors (the page cache, not these, serves warm reads).
const KEPT: usize = 512;

/// One opened content, shared by every open of the same inode.
struct OpenFile {
    file: std::fs::File,
    backing: Option<Arc<BackingId>>,
    /// Where its backing id is recorded for a successor: cleared before
    /// the id closes.
    recorded: Option<(Arc<BackingRecord>, u64, u32)>,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if let Some((record, ino, raw)) = &self.recorded {
            record.clear(*ino, *raw);
        }
    }
}

/// What a server that takes over a connection inherits: the record of
/// backing ids, and the ids its predecessor left open.
pub(crate) struct Handed {
    pub record: Arc<BackingRecord>,
    pub inherited: Inherited,
}

pub(crate) struct VhFs {
    pub tree: Arc<Tree>,
    pub cache: Arc<BlobCache>,
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    /// Where the tree is mounted (for messages only).
    pub mountpoint: PathBuf,
    pub want_passthrough: bool,
    pub counters: Arc<Counters>,
    pub recorder: Arc<Recorder>,
    /// What the kernel offered at INIT (for a successor's INIT).
    pub offered: Arc<AtomicU64>,
    passthrough: AtomicBool,
    /// The kernel opens directories without asking (FUSE_NO_OPENDIR_SUPPORT).
    no_opendir: AtomicBool,
    /// The kernel opens files without asking (FUSE_NO_OPEN_SUPPORT, where
    /// reads are served): READ then comes with handle 0 and is answered
    /// from `kept`, and the kernel keeps each file's page cache.
    no_open: AtomicBool,
    by_inode: Mutex<HashMap<u64, Weak<OpenFile>>>,
    /// Backing ids recorded for a successor (warm servers only).
    handed: Option<Handed>,
    /// Ids a dead predecessor opened, kept for the connection's life:
    /// its files may stay open (mapped libraries) for as long, and every
    /// open of their inode must carry the same id.
    adopted: Mutex<HashMap<u64, Arc<BackingId>>>,
    /// Contents read without an open (`no_open`), at most [`KEPT`].
    kept: Mutex<HashMap<u64, Arc<OpenFile>>>,
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    mtime: SystemTime,
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl VhFs {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        tree: Arc<Tree>,
        cache: Arc<BlobCache>,
        target: String,
        uid: u32,
        gid: u32,
        mountpoint: PathBuf,
        want_passthrough: bool,
        counters: Arc<Counters>,
        recorder: Arc<Recorder>,
        handed: Option<Handed>,
    ) -> VhFs {
        VhFs {
            tree,
            cache,
            target,
            uid,
            gid,
            mountpoint,
            want_passthrough,
            counters,
            recorder,
            offered: Arc::new(AtomicU64::new(0)),
            passthrough: AtomicBool::new(false),
            no_opendir: AtomicBool::new(false),
            no_open: AtomicBool::new(false),
            kept: Mutex::new(HashMap::new()),
            by_inode: Mutex::new(HashMap::new()),
            handed,
            adopted: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            mtime: UNIX_EPOCH + Duration::from_secs(MTIME),
        }
    }

    fn attr(&self, n: &NodeRef<'_>) -> FileAttr {
        let (kind, blocks) = match n.kind() {
            Kind::Dir => (FileType::Directory, n.size().div_ceil(4096) * 8),
            Kind::File => (FileType::RegularFile, n.size().div_ceil(4096) * 8),
            // Short link texts live in the inode (ext4 "fast symlinks").
            Kind::Symlink => (FileType::Symlink, 0),
        };
        FileAttr {
            ino: INodeNo(n.ino()),
            size: n.size(),
            blocks,
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind,
            perm: n.perm(),
            nlink: n.nlink(),
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    /// The attributes of a miss: inode 0 makes the kernel cache it.
    fn negative(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind: FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLKSIZE,
            flags: 0,
        }
    }

    fn eio(&self, ino: u64, what: &dyn std::fmt::Display) -> Errno {
        Counters::bump(&self.counters.eio);
        let message = || {
            format!(
                "{}: {what}",
                self.mountpoint.join(self.tree.path(ino)).display()
            )
        };
        if let Some(m) = self.counters.notices.push(ino, message) {
            tracing::error!("{m}");
        }
        Errno::EIO
    }

    /// The content of `n`, decoded, verified and relocated in the blob
    /// cache; with a backing id when `reply` is given and passthrough is on.
    fn open_content(
        &self,
        n: &NodeRef<'_>,
        reply: Option<&ReplyOpen>,
    ) -> Result<Arc<OpenFile>, Errno> {
        let ino = n.ino();
        if let Some(f) = self
            .by_inode
            .lock()
            .unwrap()
            .get(&ino)
            .and_then(Weak::upgrade)
        {
            return Ok(f);
        }
        if let Some(d) = n.defect() {
            let why = format!("{} ({})", d.describe(), self.tree.catalog_path().display());
            return Err(self.eio(ino, &why));
        }
        self.recorder.content(ino);
        let digest = n.digest().unwrap_or_default();
        let (file, _source) = self
            .cache
            .open(digest, n.size(), n.rewrite(), &self.target)
            .map_err(|e| match out_of_resources(&e) {
                Some(errno) => errno,
                None => self.eio(ino, &e),
            })?;
        let mut map = self.by_inode.lock().unwrap();
        // Another thread may have opened the same inode meanwhile: keep its
        // backing id (one per inode). Ids are made under the lock, so no
        // other is ever opened for the inode.
        if let Some(f) = map.get(&ino).and_then(Weak::upgrade) {
            return Ok(f);
        }
        let (backing, recorded) = match reply.filter(|_| self.passthrough.load(Relaxed)) {
            Some(reply) => self.backing_for(reply, ino, &file)?,
            None => (None, None),
        };
        let fresh = Arc::new(OpenFile {
            file,
            backing,
            recorded,
        });
        map.insert(ino, Arc::downgrade(&fresh));
        drop(map);
        if let Some(remote) = self.cache.remote() {
            // A module of a lazily served tree: what it imports is fetched
            // ahead (`remote::lazy`).
            remote.opened(ino, &fresh.file);
        }
        Ok(fresh)
    }

    /// The backing id of `ino` for a passthrough open of `file`: the one a
    /// predecessor left, or a new one, recorded for a successor.
    #[allow(clippy::type_complexity)]
    fn backing_for(
        &self,
        reply: &ReplyOpen,
        ino: u64,
        file: &std::fs::File,
    ) -> Result<
        (
            Option<Arc<BackingId>>,
            Option<(Arc<BackingRecord>, u64, u32)>,
        ),
        Errno,
    > {
        if let Some(id) = self.adopted.lock().unwrap().get(&ino) {
            return Ok((Some(id.clone()), None));
        }
        if let Some(h) = &self.handed {
            if let Some(id) = h.inherited.take(reply, ino) {
                let id = Arc::new(id);
                self.adopted.lock().unwrap().insert(ino, id.clone());
                return Ok((Some(id), None));
            }
        }
        match reply.open_backing(file) {
            Ok(id) => Ok(match &self.handed {
                Some(h) => {
                    let (raw, id) = h.record.record(reply, ino, id);
                    (Some(Arc::new(id)), Some((h.record.clone(), ino, raw)))
                }
                None => (Some(Arc::new(id)), None),
            }),
            Err(e) if e.raw_os_error().is_some_and(is_transient) => Err(Errno::from(e)),
            Err(e) => {
                // Refused for good (privileges, stacking): mixing modes
                // on one inode is refused by the kernel, so drop
                // passthrough for the whole mount, once.
                if self.passthrough.swap(false, Relaxed) {
                    let m = format!(
                        "FUSE passthrough refused by the kernel ({e}); serving reads from vhrun"
                    );
                    tracing::warn!("{m}");
                    // Inode 0 names no file: the mount's own event.
                    self.counters.notices.push(0, || m);
                    self.counters.set_read_mode(ReadMode::Served);
                }
                Ok((None, None))
            }
        }
    }

    /// The content of `n` for a READ without an open handle (`no_open`):
    /// counted as opened on its first read.
    fn kept_content(&self, n: &NodeRef<'_>) -> Result<Arc<OpenFile>, Errno> {
        let ino = n.ino();
        if let Some(f) = self.kept.lock().unwrap().get(&ino) {
            return Ok(f.clone());
        }
        let f = self.open_content(n, None)?;
        self.counters.opened(ino, n.size());
        let mut kept = self.kept.lock().unwrap();
        if kept.len() >= KEPT {
            // Any one: a file read again after this is reopened from the
            // blob cache, which is cheap next to the READ that needs it.
            if let Some(&old) = kept.keys().next() {
                kept.remove(&old);
            }
        }
        kept.insert(ino, f.clone());
        Ok(f)
    }

    fn dir_entries(&self, ino: u64) -> Option<(NodeRef<'_>, u64)> {
        let n = self.tree.get(ino)?;
        let r = n.children();
        (n.kind() == Kind::Dir).then_some((n, 2 + (r.end - r.start)))
    }

    /// Entry `i` of a listing: `.`, `..`, then the children in name order.
    fn dir_entry<'a>(&'a self, dir: &NodeRef<'a>, i: u64) -> Option<(NodeRef<'a>, &'a [u8])> {
        match i {
            0 => Some((*dir, b".")),
            1 => Some((self.tree.get(dir.parent())?, b"..")),
            _ => {
                let c = self.tree.get(dir.children().start + i - 2)?;
                Some((c, c.name()))
            }
        }
    }
}

fn is_transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EINTR
    )
}

/// Running out of descriptors or memory is the caller's problem to retry,
/// not a damaged blob: answer with that errno and log nothing.
fn out_of_resources(e: &crate::error::Error) -> Option<Errno> {
    match e {
        crate::error::Error::Io { source, .. } => source
            .raw_os_error()
            .filter(|&n| is_transient(n))
            .map(Errno::from_i32),
        _ => None,
    }
}

/// CAP_SYS_ADMIN in the initial user namespace, which `open_backing` needs.
pub(crate) fn passthrough_privileged() -> Result<(), String> {
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let initial = map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"];
    if !initial {
        return Err("running in a user namespace".into());
    }
    match caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_ADMIN,
    ) {
        Ok(true) => Ok(()),
        _ => Err("no CAP_SYS_ADMIN".into()),
    }
}

impl Filesystem for VhFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        self.offered.store(caps.bits(), Relaxed);
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_READ;
        let _ = config.add_capabilities(wanted & caps);
        // Answering OPENDIR with ENOSYS then makes the kernel stop sending
        // OPENDIR/RELEASEDIR and cache listings (KEEP_CACHE | CACHE_DIR).
        self.no_opendir.store(
            caps.contains(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
                && config
                    .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
                    .is_ok(),
            Relaxed,
        );
        let _ = config.set_time_granularity(Duration::from_secs(1));
        let mode = if !self.want_passthrough {
            tracing::info!("read mode: served by vhrun (passthrough turned off)");
            ReadMode::Served
        } else if !caps.contains(InitFlags::FUSE_PASSTHROUGH) {
            tracing::info!("read mode: served by vhrun (the kernel has no FUSE passthrough; needs Linux >= 6.9)");
            ReadMode::Served
        } else if let Err(why) = passthrough_privileged() {
            tracing::info!("read mode: served by vhrun (FUSE passthrough needs root in the initial user namespace: {why})");
            ReadMode::Served
        } else if config
            .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
            .is_err()
            || config.set_max_stack_depth(1).is_err()
        {
            tracing::info!("read mode: served by vhrun (passthrough could not be negotiated)");
            ReadMode::Served
        } else {
            tracing::info!("read mode: FUSE passthrough (the kernel reads cache files directly)");
            ReadMode::Passthrough
        };
        self.passthrough
            .store(mode == ReadMode::Passthrough, Relaxed);
        self.counters.set_read_mode(mode);
        // Where vhrun serves the reads, an OPEN buys nothing (the content
        // is found by inode) and costs a round trip per open.
        let no_open = mode == ReadMode::Served
            && caps.contains(InitFlags::FUSE_NO_OPEN_SUPPORT)
            && config
                .add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT)
                .is_ok();
        self.no_open.store(no_open, Relaxed);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        Counters::bump(&self.counters.lookup);
        let Some(dir) = self.tree.get(parent.0) else {
            return reply.error(Errno::ENOENT);
        };
        if dir.kind() != Kind::Dir {
            return reply.error(Errno::ENOTDIR);
        }
        let name = name.as_bytes();
        let found = match name {
            b"." => Some(dir),
            b".." => self.tree.get(dir.parent()),
            _ => {
                self.recorder.lookup(parent.0, name);
                self.tree.lookup(parent.0, name)
            }
        };
        match found {
            Some(n) => reply.entry(&TTL, &self.attr(&n), Generation(0)),
            None => {
                Counters::bump(&self.counters.lookup_negative);
                reply.entry(&TTL, &self.negative(), Generation(0))
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        Counters::bump(&self.counters.getattr);
        match self.tree.get(ino.0) {
            Some(n) => reply.attr(&TTL, &self.attr(&n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        Counters::bump(&self.counters.readlink);
        match self.tree.get(ino.0).and_then(|n| n.symlink_target()) {
            Some(t) => reply.data(t),
            None => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        Counters::bump(&self.counters.open);
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0 {
            Counters::bump(&self.counters.rejected_writes);
            return reply.error(Errno::EROFS);
        }
        let Some(n) = self.tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        match n.kind() {
            Kind::File => {}
            Kind::Dir => return reply.error(Errno::EISDIR),
            Kind::Symlink => return reply.error(Errno::ELOOP),
        }
        if self.no_open.load(Relaxed) {
            // The first open of the connection: what fails for it fails
            // here, what works is kept for its READs, and ENOSYS tells
            // the kernel to open every file without asking from now on.
            return match self.kept_content(&n) {
                Ok(_) => reply.error(Errno::ENOSYS),
                Err(e) => reply.error(e),
            };
        }
        let f = match self.open_content(&n, Some(&reply)) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        self.counters.opened(ino.0, n.size());
        let fh = self.next_fh.fetch_add(1, Relaxed);
        self.handles.lock().unwrap().insert(fh, f.clone());
        match &f.backing {
            // Never FOPEN_KEEP_CACHE with passthrough: the kernel fails
            // such opens with EIO.
            Some(id) => {
                Counters::bump(&self.counters.open_passthrough);
                reply.opened_passthrough(FileHandle(fh), FopenFlags::FOPEN_NOFLUSH, id)
            }
            None => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
            ),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        Counters::bump(&self.counters.read);
        let f = match self.handles.lock().unwrap().get(&fh.0).cloned() {
            Some(f) => f,
            // Without an open (FUSE_NO_OPEN_SUPPORT), or a handle a
            // predecessor gave out: the content is found by inode.
            None => {
                let Some(n) = self.tree.get(ino.0).filter(|n| n.kind() == Kind::File) else {
                    return reply.error(Errno::EBADF);
                };
                match self.kept_content(&n) {
                    Ok(f) => f,
                    Err(e) => return reply.error(e),
                }
            }
        };
        READ_BUF.with_borrow_mut(|buf| {
            if buf.len() < size as usize {
                buf.resize(size as usize, 0);
            }
            let buf = &mut buf[..size as usize];
            let mut n = 0;
            while n < buf.len() {
                match f.file.read_at(&mut buf[n..], offset + n as u64) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return reply.error(self.eio(ino.0, &e)),
                }
            }
            self.counters.bytes_read.fetch_add(n as u64, Relaxed);
            reply.data(&buf[..n]);
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so a close has nothing to flush; ENOSYS
        // makes the kernel stop sending FLUSH on every close (a round trip
        // per closed file, a hundred in a heavy import).
        Counters::bump(&self.counters.flush);
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        Counters::bump(&self.counters.release);
        // Dropping the last handle of an inode closes its backing id.
        let gone = self.handles.lock().unwrap().remove(&fh.0);
        drop(gone);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _ds: bool, reply: ReplyEmpty) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        Counters::bump(&self.counters.opendir);
        match self.tree.get(ino.0).map(|n| n.kind()) {
            Some(Kind::Dir) if self.no_opendir.load(Relaxed) => reply.error(Errno::ENOSYS),
            // The kernel keeps the listing in its page cache across opens.
            Some(Kind::Dir) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        Counters::bump(&self.counters.readdir);
        let Some((dir, total)) = self.dir_entries(ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        if offset == 0 {
            self.recorder.listed(ino.0);
        }
        for i in offset..total {
            let Some((n, name)) = self.dir_entry(&dir, i) else {
                break;
            };
            let kind = self.attr(&n).kind;
            if reply.add(INodeNo(n.ino()), i + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        Counters::bump(&self.counters.readdirplus);
        let Some((dir, total)) = self.dir_entries(ino.0) else {
            return reply.error(Errno::ENOTDIR);
        };
        if offset == 0 {
            self.recorder.listed(ino.0);
        }
        for i in offset..total {
            let Some((n, name)) = self.dir_entry(&dir, i) else {
                break;
            };
            let attr = self.attr(&n);
            if reply.add(
                INodeNo(n.ino()),
                i + 1,
                OsStr::from_bytes(name),
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        Counters::bump(&self.counters.statfs);
        let (_, bytes) = self.tree.totals();
        reply.statfs(
            bytes.div_ceil(BLKSIZE as u64),
            0,
            0,
            self.tree.len() as u64,
            0,
            BLKSIZE,
            255,
            BLKSIZE,
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        Counters::bump(&self.counters.access);
        let Some(n) = self.tree.get(ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if mask.contains(AccessFlags::W_OK) {
            return reply.error(Errno::EROFS);
        }
        let perm = n.perm() as u32;
        let allowed = if req.uid() == 0 {
            // root may read anything and execute what has some x bit.
            let x = n.kind() == Kind::Dir || perm & 0o111 != 0;
            0o4 | if x { 0o1 } else { 0 }
        } else if req.uid() == self.uid {
            (perm >> 6) & 7
        } else if req.gid() == self.gid {
            (perm >> 3) & 7
        } else {
            perm & 7
        };
        let need = (mask.bits() & 0o7) as u32;
        if need & !allowed == 0 {
            reply.ok()
        } else {
            reply.error(Errno::EACCES)
        }
    }

    // Without extended attributes: ENOSYS makes the kernel stop asking
    // (it remembers per connection), and overlayfs treats that as "unset".
    fn getxattr(&self, _r: &Request, _i: INodeNo, _n: &OsStr, _s: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _r: &Request, _i: INodeNo, _s: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    // Everything that would change the tree.
    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: fuser::ReplyWrite,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: fuser::ReplyCreate,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: fuser::ReplyWrite,
    ) {
        self.rofs();
        reply.error(Errno::EROFS);
    }

    // Locks, lseek, ioctl, poll, bmap: ENOSYS lets the kernel handle them
    // locally (and it stops asking); answered here only to skip fuser's
    // "not implemented" log line.
    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        reply: fuser::ReplyLock,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        _start: u64,
        _end: u64,
        _typ: i32,
        _pid: u32,
        _sleep: bool,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn bmap(&self, _req: &Request, _ino: INodeNo, _bs: u32, _idx: u64, reply: fuser::ReplyBmap) {
        reply.error(Errno::ENOSYS);
    }
}

impl VhFs {
    fn rofs(&self) {
        Counters::bump(&self.counters.rejected_writes);
    }
}
