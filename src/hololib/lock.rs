//! rcc's locks: the holotree-wide `<holotree>/global.lck` (flock LOCK_EX),
//! taken while vhrun adds to rcc's hololib, so an rcc import or build
//! running at the same time never interleaves with ours; and a space's
//! `<space>.lck`, which rcc holds exclusively while it restores the space
//! ([`SpaceLock`]).

use crate::error::{Error, IoContext, Result};
use crate::paths::mkdir_all;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Held until dropped.
pub struct FileLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// Open (create, truncate, 0666 as rcc) and flock `path`, waiting if another
/// process holds it.
pub fn lock_file(path: &Path) -> Result<FileLock> {
    let lock = open_and_flock(path, false, "held by another rcc or vhrun")?;
    Ok(FileLock {
        _lock: lock,
        path: path.to_path_buf(),
    })
}

/// Open `path` as rcc opens its lock files (its directory made, created
/// 0666, truncated) and flock it exclusively or `shared`, saying what it
/// waits for when another process holds it.
fn open_and_flock(path: &Path, shared: bool, held_by: &str) -> Result<Flock<File>> {
    if let Some(parent) = path.parent() {
        mkdir_all(parent, 0o750)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .at(path)?;
    let (now, wait) = if shared {
        (FlockArg::LockSharedNonblock, FlockArg::LockShared)
    } else {
        (FlockArg::LockExclusiveNonblock, FlockArg::LockExclusive)
    };
    match Flock::lock(file, now) {
        Ok(lock) => Ok(lock),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            tracing::info!("waiting for {} ({held_by})", path.display());
            Flock::lock(file, wait).map_err(|(_, e)| Error::io(path, e.into()))
        }
        Err((_, e)) => Err(Error::io(path, e.into())),
    }
}

/// `<holotree>/global.lck`, rcc's `HolotreeLock`.
pub fn holotree_lock(holotree: &Path) -> Result<FileLock> {
    lock_file(&holotree.join("global.lck"))
}

/// A space's `<space>.lck` (rcc's restore lock), as a copy-mode run holds
/// it: shared while it checks the space and while its task runs, so runs
/// of an unchanged space go side by side; exclusive while it repairs, which
/// waits for every running task of the space (vhrun's, and rcc's restores)
/// to end first. rcc's own restore takes it exclusively, so neither ever
/// sees the other's half-written space.
pub struct SpaceLock {
    lock: Flock<File>,
    pub path: PathBuf,
    exclusive: bool,
}

impl SpaceLock {
    /// Open it as rcc does and take it shared.
    pub fn shared(path: &Path) -> Result<SpaceLock> {
        Ok(SpaceLock {
            lock: open_and_flock(path, true, "a restore holds it")?,
            path: path.to_path_buf(),
            exclusive: false,
        })
    }

    /// Hold it exclusively, waiting for every other holder. flock converts
    /// by unlocking first: whoever got in between may have changed the
    /// space, so check it again after this.
    pub fn exclusive(&mut self) -> Result<()> {
        if self.exclusive {
            return Ok(());
        }
        if self.lock.relock(FlockArg::LockExclusiveNonblock).is_err() {
            tracing::info!(
                "waiting for {}: other runs of the space are still running",
                self.path.display()
            );
            self.lock
                .relock(FlockArg::LockExclusive)
                .map_err(|e| Error::io(&self.path, e.into()))?;
        }
        self.exclusive = true;
        Ok(())
    }

    /// Back to shared (after a repair).
    pub fn share(&mut self) -> Result<()> {
        if self.exclusive {
            self.lock
                .relock(FlockArg::LockShared)
                .map_err(|e| Error::io(&self.path, e.into()))?;
            self.exclusive = false;
        }
        Ok(())
    }
}
