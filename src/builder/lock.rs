//! One build per blueprint at a time: `$VHRUN_HOME/locks/<blueprint>.lck`,
//! held with flock(2) (released by the kernel if the builder dies). The
//! second builder waits, then finds the first one's catalog and reuses it.

use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::path::PathBuf;

#[derive(Debug)]
pub struct BuildLock {
    _lock: Flock<std::fs::File>,
    pub path: PathBuf,
}

pub fn lock_path(home: &Home, blueprint: &str) -> PathBuf {
    home.locks().join(format!("{blueprint}.lck"))
}

/// Take the lock, calling `waiting` once if another build holds it.
pub fn acquire(home: &Home, blueprint: &str, waiting: impl FnOnce()) -> Result<BuildLock> {
    let path = lock_path(home, blueprint);
    if let Some(dir) = path.parent() {
        crate::paths::mkdir_all(dir, 0o750)?;
    }
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .at(&path)
    };
    let lock = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((file, Errno::EWOULDBLOCK)) => {
            waiting();
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, e)| Error::io(&path, e.into()))?
        }
        Err((_, e)) => return Err(Error::io(&path, e.into())),
    };
    Ok(BuildLock { _lock: lock, path })
}
