//! Whether this process may create namespaces, or mount a filesystem,
//! found by trying: a child process unshares (and mounts) before it execs
//! a harmless program. The caller's own namespaces are never touched, and
//! a probe mount dies with the child's mount namespace.

use nix::errno::Errno;
use nix::sched::CloneFlags;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// Try `unshare(flags)` in a short-lived child. `Err` carries the errno
/// (EPERM, EINVAL, ENOSPC...) the kernel answered.
pub fn try_unshare(flags: CloneFlags) -> Result<(), Errno> {
    let mut cmd = harmless()?;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes one async-signal-safe syscall (unshare), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(flags).map_err(|e| std::io::Error::from_raw_os_error(e as i32))
        });
    }
    status(cmd)
}

/// Try mounting `source` (a file or device) read-only as `fstype` at
/// `target`, in a short-lived child's private mount namespace.
pub fn try_mount(source: &Path, target: &Path, fstype: &str) -> Result<(), Errno> {
    use nix::mount::{mount, MsFlags};
    let cstr = |p: &[u8]| CString::new(p).map_err(|_| Errno::EINVAL);
    let (source, target, fstype) = (
        cstr(source.as_os_str().as_bytes())?,
        cstr(target.as_os_str().as_bytes())?,
        cstr(fstype.as_bytes())?,
    );
    let mut cmd = harmless()?;
    let io = |e: Errno| std::io::Error::from_raw_os_error(e as i32);
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe syscalls on strings prepared above, allocating
    // nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(io)?;
            mount(
                None::<&CStr>,
                c"/",
                None::<&CStr>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&CStr>,
            )
            .map_err(io)?;
            mount(
                Some(source.as_c_str()),
                target.as_c_str(),
                Some(fstype.as_c_str()),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None::<&CStr>,
            )
            .map_err(io)
        });
    }
    status(cmd)
}

/// vhrun itself printing its version: a child that does nothing.
fn harmless() -> Result<Command, Errno> {
    let exe = std::env::current_exe().map_err(|_| Errno::ENOENT)?;
    let mut cmd = Command::new(exe);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(cmd)
}

/// The pre-exec step's errno, if it failed.
fn status(mut cmd: Command) -> Result<(), Errno> {
    match cmd.status() {
        Ok(_) => Ok(()),
        Err(e) => Err(e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO)),
    }
}
