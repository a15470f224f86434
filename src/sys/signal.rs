//! Signal plumbing nix has no safe (or no allocation-free) wrapper for.

use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::unistd::Pid;

/// `si_code` of a signal the kernel generated itself, e.g. the terminal's
/// SIGINT on Ctrl-C, which the tty sends to the whole foreground process
/// group (the task included).
pub const SI_KERNEL: i32 = libc::SI_KERNEL;

/// Set the disposition of `signo` back to `SIG_DFL`.
pub fn set_default(signo: i32) -> Result<(), Errno> {
    set_disposition(signo, libc::SIG_DFL)
}

/// Ignore `signo` (`SIG_IGN`).
pub fn ignore(signo: i32) -> Result<(), Errno> {
    set_disposition(signo, libc::SIG_IGN)
}

fn set_disposition(signo: i32, disposition: libc::sighandler_t) -> Result<(), Errno> {
    // SAFETY: a zeroed sigaction with SIG_DFL or SIG_IGN installs no
    // handler code; the old action is not requested.
    let ret = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = disposition;
        libc::sigaction(signo, &sa, std::ptr::null_mut())
    };
    Errno::result(ret).map(drop)
}

/// Wait for one of the (blocked) signals of `set`; return its number and
/// `si_code`. Allocation-free.
pub fn wait_info(set: &SigSet) -> Result<(i32, i32), Errno> {
    loop {
        // SAFETY: `info` is a valid out-pointer; `set` is a valid sigset_t.
        let (ret, code) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let ret = libc::sigwaitinfo(set.as_ref(), &mut info);
            (ret, info.si_code)
        };
        match Errno::result(ret) {
            Ok(signo) => return Ok((signo, code)),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// `kill(pid, signo)` for any signal number, real-time ones included.
pub fn kill(pid: Pid, signo: i32) -> Result<(), Errno> {
    // SAFETY: plain syscall with integer arguments.
    Errno::result(unsafe { libc::kill(pid.as_raw(), signo) }).map(drop)
}
