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

/// The step of [`try_sandbox_namespaces`] the kernel refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernsStep {
    Unshare,
    /// Writing setgroups, uid_map or gid_map (AppArmor's restriction of
    /// unprivileged user namespaces lets the unshare succeed and refuses
    /// this, or the mount after it).
    Map,
    /// Making `/` private in the new mount namespace.
    Mount,
}

/// What a run's sandbox does first, tried in a forked child (no exec):
/// `unshare(CLONE_NEWNS)`, with `CLONE_NEWUSER` and the caller's ids mapped
/// to themselves when `user`, then make `/` private. A refusal after the
/// unshare would leave the caller itself in a namespace it cannot use.
pub fn try_sandbox_namespaces(user: bool, uid: u32, gid: u32) -> Result<(), (UsernsStep, Errno)> {
    use nix::fcntl::{open, OFlag};
    use nix::mount::{mount, MsFlags};
    use nix::sys::stat::Mode;
    let uid_map = format!("{uid} {uid} 1");
    let gid_map = format!("{gid} {gid} 1");
    let writes: [(&CStr, &[u8]); 3] = [
        (c"/proc/self/setgroups", b"deny"),
        (c"/proc/self/uid_map", uid_map.as_bytes()),
        (c"/proc/self/gid_map", gid_map.as_bytes()),
    ];
    let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| (UsernsStep::Unshare, e))?;
    // The child writes the failed step and its errno: 8 bytes, one write.
    let child = || -> i32 {
        let fail = |step: u32, e: Errno| {
            let mut rec = [0u8; 8];
            rec[..4].copy_from_slice(&step.to_ne_bytes());
            rec[4..].copy_from_slice(&(e as i32).to_ne_bytes());
            let _ = nix::unistd::write(&tx, &rec);
            1
        };
        let flags = if user {
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS
        } else {
            CloneFlags::CLONE_NEWNS
        };
        if let Err(e) = nix::sched::unshare(flags) {
            return fail(0, e);
        }
        for &(path, data) in writes.iter().filter(|_| user) {
            let r = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                .and_then(|fd| nix::unistd::write(&fd, data));
            if let Err(e) = r {
                return fail(1, e);
            }
        }
        let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
        if let Err(e) = mount(None::<&CStr>, c"/", None::<&CStr>, private, None::<&CStr>) {
            return fail(2, e);
        }
        // Every step passed: say so before exiting, so the caller need not
        // wait for this exit, which tears the namespace down (an RCU grace
        // period: milliseconds).
        let _ = nix::unistd::write(&tx, &PASSED);
        0
    };
    let pid = super::fork::clone_child(false, child).map_err(|e| (UsernsStep::Unshare, e))?;
    drop(tx);
    let mut rec = [0u8; 8];
    let n = loop {
        match nix::unistd::read(&rx, &mut rec) {
            Err(Errno::EINTR) => continue,
            r => break r.unwrap_or(0),
        }
    };
    if rec == PASSED {
        // reaped by the next probe, or by the kernel when vhrun exits: a
        // zombie meanwhile
        reap_later(pid);
        return Ok(());
    }
    let clean = loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(Errno::EINTR) => continue,
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => break true,
            _ => break false,
        }
    };
    if n < rec.len() {
        return if clean {
            Ok(())
        } else {
            Err((UsernsStep::Unshare, Errno::ECHILD))
        };
    }
    let step = match u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]) {
        0 => UsernsStep::Unshare,
        1 => UsernsStep::Map,
        _ => UsernsStep::Mount,
    };
    let errno = Errno::from_raw(i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]));
    Err((step, errno))
}

/// What a probe child writes when every step passed.
const PASSED: [u8; 8] = [0xff; 8];

/// Probe children that said they passed and are exiting; reaped, without
/// waiting, at the next probe.
static EXITING: std::sync::Mutex<Vec<nix::unistd::Pid>> = std::sync::Mutex::new(Vec::new());

fn reap_later(pid: nix::unistd::Pid) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut exiting = EXITING.lock().unwrap_or_else(|p| p.into_inner());
    exiting.retain(|&p| {
        matches!(
            waitpid(p, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        )
    });
    exiting.push(pid);
}
