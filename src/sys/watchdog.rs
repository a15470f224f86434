//! A watchdog process that unmounts a FUSE mount on the host when its
//! server dies without cleaning up (SIGKILL, OOM, a crash).
//!
//! On the host there is no mount namespace to take the mount with it, and
//! fusermount's auto_unmount is not used as root; when the server dies the
//! kernel aborts the connection but the dead mount stays ("Transport
//! endpoint is not connected"). The watchdog is a child forked while the
//! server is still single-threaded, holding the read end of a pipe whose
//! write end only the server holds (close-on-exec, so nothing the server
//! starts inherits it). It ignores job-control signals (a Ctrl-C reaches the
//! whole process group) and waits; a `D` on the pipe says the server
//! unmounted cleanly. When the pipe reaches EOF without `D`, the server is
//! gone: the watchdog lazily unmounts the `fuse.vhrun` mount at the mount
//! point whose source names that server (`vhrun:<pid>`), so a kill at any
//! moment, even while `mount(2)` runs, is covered, and nobody else's mount
//! is touched.

use crate::error::{Error, Result};
use nix::fcntl::OFlag;
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::{ForkResult, Pid};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Watchdog {
    tx: Option<OwnedFd>,
    pid: Pid,
}

/// Fork the watchdog for a mount about to be made at `mount_point` with
/// mount source `source`; with `remove_dir` it also removes the (empty)
/// mount point after unmounting. Must be called while the process has a
/// single thread.
pub fn spawn(mount_point: &Path, source: &str, remove_dir: bool) -> Result<Watchdog> {
    let threads = super::fork::thread_count().unwrap_or(0);
    if threads != 1 {
        return Err(Error::Internal(format!(
            "watchdog must be forked from a single-threaded process ({threads} threads)"
        )));
    }
    let (rx, tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("pipe2 (unmount watchdog)", e))?;
    // SAFETY: the process has exactly one thread (checked above), so the
    // child cannot inherit a lock held by another thread; it only reads a
    // pipe, parses /proc and calls umount2/rmdir before `_exit`.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(Error::sys("fork (unmount watchdog)", e)),
        Ok(ForkResult::Child) => {
            drop(tx);
            watch(rx, mount_point.to_path_buf(), source, remove_dir)
        }
        Ok(ForkResult::Parent { child }) => {
            drop(rx);
            Ok(Watchdog {
                tx: Some(tx),
                pid: child,
            })
        }
    }
}

impl Watchdog {
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// The server unmounted by itself: the watchdog exits without acting.
    pub fn disarm(mut self) {
        self.send(b"D\n");
        self.tx = None;
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }

    fn send(&self, msg: &[u8]) {
        if let Some(tx) = &self.tx {
            let _ = nix::unistd::write(tx, msg);
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Without `disarm` (an error path): closing the pipe makes the
        // watchdog unmount; reap it so no zombie is left.
        if self.tx.take().is_some() {
            let _ = nix::sys::wait::waitpid(self.pid, None);
        }
    }
}

fn watch(rx: OwnedFd, mount_point: PathBuf, source: &str, remove_dir: bool) -> ! {
    let mut quiet = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGPIPE,
    ] {
        quiet.add(s);
    }
    let _ = quiet.thread_block();
    let mut done = false;
    let mut buf = [0u8; 64];
    loop {
        match nix::unistd::read(&rx, &mut buf) {
            Ok(0) => break,
            Ok(n) => done |= buf[..n].contains(&b'D'),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if !done {
        let ours = super::mountinfo::read().ok().is_some_and(|all| {
            all.iter().any(|m| {
                m.mount_point == mount_point && m.fs_type == "fuse.vhrun" && m.source == source
            })
        });
        if ours {
            match umount2(&mount_point, MntFlags::MNT_DETACH) {
                Ok(()) => eprintln!(
                    "vhrun: the server died; unmounted {}",
                    mount_point.display()
                ),
                Err(e) => eprintln!(
                    "vhrun: the server died; cannot unmount {}: {e}",
                    mount_point.display()
                ),
            }
        }
        if remove_dir {
            let _ = std::fs::remove_dir(&mount_point);
        }
    }
    // Skipping atexit handlers and stdio flushing is the point (they
    // belong to the parent's state).
    super::fork::exit_now(0)
}
