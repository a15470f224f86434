//! `waitpid` returning the raw status: nix's `WaitStatus` cannot describe
//! a child killed by a real-time signal and would lose that status.

use nix::errno::Errno;
use nix::unistd::Pid;

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Exited(i32),
    Signaled(i32),
}

impl ExitKind {
    /// The shell's convention: the exit code, or 128+N for signal N.
    pub fn code(self) -> i32 {
        match self {
            ExitKind::Exited(c) => c,
            ExitKind::Signaled(s) => 128 + s,
        }
    }
}

/// `waitpid(pid, WNOHANG?)`. `Ok(None)`: no child changed state (WNOHANG).
/// Only terminations are reported (no WUNTRACED). Allocation-free.
pub fn wait(pid: Option<Pid>, nohang: bool) -> Result<Option<(Pid, ExitKind)>, Errno> {
    let raw = pid.map_or(-1, Pid::as_raw);
    let flags = if nohang { libc::WNOHANG } else { 0 } | libc::__WALL;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let ret = unsafe { libc::waitpid(raw, &mut status, flags) };
        match Errno::result(ret) {
            Ok(0) => return Ok(None),
            Ok(p) => {
                let kind = if libc::WIFEXITED(status) {
                    ExitKind::Exited(libc::WEXITSTATUS(status))
                } else if libc::WIFSIGNALED(status) {
                    ExitKind::Signaled(libc::WTERMSIG(status))
                } else {
                    continue;
                };
                return Ok(Some((Pid::from_raw(p), kind)));
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
