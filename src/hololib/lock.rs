//! rcc's holotree-wide lock (`<holotree>/global.lck`, flock LOCK_EX), taken
//! while vhrun adds to rcc's hololib, so an rcc import or build running at
//! the same time never interleaves with ours.

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
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            return Ok(FileLock {
                _lock: lock,
                path: path.to_path_buf(),
            })
        }
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
        Err((_, e)) => return Err(Error::io(path, e.into())),
    };
    tracing::info!(
        "waiting for {} (held by another rcc or vhrun)",
        path.display()
    );
    let lock =
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::io(path, e.into()))?;
    Ok(FileLock {
        _lock: lock,
        path: path.to_path_buf(),
    })
}

/// `<holotree>/global.lck`, rcc's `HolotreeLock`.
pub fn holotree_lock(holotree: &Path) -> Result<FileLock> {
    lock_file(&holotree.join("global.lck"))
}
