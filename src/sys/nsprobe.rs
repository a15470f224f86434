//! Whether this process may create namespaces, found by trying: a child
//! process unshares before it execs a harmless program. The caller's own
//! namespaces are never touched.

use nix::errno::Errno;
use nix::sched::CloneFlags;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Try `unshare(flags)` in a short-lived child. `Err` carries the errno
/// (EPERM, EINVAL, ENOSPC...) the kernel answered.
pub fn try_unshare(flags: CloneFlags) -> Result<(), Errno> {
    let exe = std::env::current_exe().map_err(|_| Errno::ENOENT)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one async-signal-safe syscall (unshare), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(flags).map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    match cmd.status() {
        Ok(_) => Ok(()),
        Err(e) => Err(e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)),
    }
}
