//! What the next server of a live FUSE connection needs and fuser offers
//! no safe way to do (`lower::server::keeper` has the why of a takeover):
//! - [`adopt_session_fd`]: make a fuser session, which insists on an INIT
//!   handshake, serve a connection whose INIT was answered long ago;
//! - [`BackingRecord`]: the passthrough backing ids the connection holds,
//!   by inode, in memory that outlives the server that opened them, so its
//!   successor answers every open of such an inode with the same id (the
//!   kernel fails an open with another backing file with EIO while the
//!   inode has passthrough files open).

use nix::errno::Errno;
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// Make `session` (a descriptor owned by a fuser session, handed to it in
/// place of `/dev/fuse` to receive a synthetic INIT) refer to `fuse`, the
/// live connection, from now on. `dup3` replaces the open file behind
/// the number atomically, so the session's owner never sees it closed.
pub fn adopt_session_fd(session: BorrowedFd<'_>, fuse: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: both descriptors are open and stay open across the call;
    // dup3 touches no memory. The number `session` keeps its owner (the
    // fuser session): it now names another open file, of the same kind
    // the session was meant to get (a /dev/fuse descriptor).
    let r = unsafe { libc::dup3(fuse.as_raw_fd(), session.as_raw_fd(), libc::O_CLOEXEC) };
    if r < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// Inode -> backing id of one connection, a `u32` per inode in a memfd
/// shared by its successive servers (0: none). Invariant: a recorded id is
/// open on the connection and no live `BackingId` of a dead server owns
/// it: an id is recorded only once it is the inode's id, and cleared
/// before it is closed.
#[derive(Debug)]
pub struct BackingRecord {
    file: std::fs::File,
    /// Check-and-set of a slot is atomic against the other threads.
    lock: Mutex<()>,
}

impl BackingRecord {
    /// A new, empty record for `inodes` inodes.
    pub fn create(inodes: u64) -> std::io::Result<BackingRecord> {
        let fd = nix::sys::memfd::memfd_create(
            c"vhrun-backing-ids",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        let file = std::fs::File::from(fd);
        file.set_len((inodes + 1) * 4)?;
        Ok(BackingRecord {
            file,
            lock: Mutex::new(()),
        })
    }

    /// The record a previous server of this connection kept.
    pub fn inherit(fd: OwnedFd) -> BackingRecord {
        BackingRecord {
            file: std::fs::File::from(fd),
            lock: Mutex::new(()),
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    fn get(&self, ino: u64) -> u32 {
        let mut b = [0u8; 4];
        match self.file.read_exact_at(&mut b, ino * 4) {
            Ok(()) => u32::from_le_bytes(b),
            Err(_) => 0,
        }
    }

    fn put(&self, ino: u64, id: u32) {
        if let Err(e) = self.file.write_all_at(&id.to_le_bytes(), ino * 4) {
            tracing::warn!("backing id of inode {ino} not recorded: {e}");
        }
    }

    /// Record `id` as the backing of `ino`: its raw number (for
    /// [`clear`](Self::clear)) and the id again, owned.
    pub fn record(
        &self,
        reply: &fuser::ReplyOpen,
        ino: u64,
        id: fuser::BackingId,
    ) -> (u32, fuser::BackingId) {
        let raw = id.into_raw();
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.put(ino, raw);
        // SAFETY: `raw` was opened on this session a moment ago and its
        // only owner, `id`, gave it up above.
        (raw, unsafe { reply.wrap_backing(raw) })
    }

    /// Forget `raw` as the backing of `ino` (before it is closed), unless
    /// another id replaced it meanwhile.
    pub fn clear(&self, ino: u64, raw: u32) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.get(ino) == raw {
            self.put(ino, 0);
        }
    }
}

/// The ids a dead predecessor recorded, each handed out at most once.
#[derive(Debug, Default)]
pub struct Inherited(Mutex<HashMap<u64, u32>>);

impl Inherited {
    /// Read once, before this server opens any id of its own.
    pub fn of(record: &BackingRecord) -> Inherited {
        let mut all = Vec::new();
        let mut f = &record.file;
        let _ = std::io::Seek::rewind(&mut f)
            .and_then(|_| std::io::Read::read_to_end(&mut f, &mut all));
        let map = all
            .chunks_exact(4)
            .enumerate()
            .filter_map(|(ino, b)| {
                let raw = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                (raw != 0).then_some((ino as u64, raw))
            })
            .collect();
        Inherited(Mutex::new(map))
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id the predecessor left for `ino`, owned from now on: keep it
    /// for the connection's life (the record keeps naming it).
    pub fn take(&self, reply: &fuser::ReplyOpen, ino: u64) -> Option<fuser::BackingId> {
        let raw = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ino)?;
        // SAFETY: by the record's invariant `raw` is open on this
        // connection and no live server owns it; it left the map above,
        // so this is its one owner.
        Some(unsafe { reply.wrap_backing(raw) })
    }
}
