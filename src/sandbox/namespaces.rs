//! Entering the run's private mount namespace (and, without privileges, a
//! user namespace mapping the caller to itself).
//!
//! `unshare(CLONE_NEWUSER)` fails once a process has a second thread, and
//! `unshare(CLONE_NEWNS)` with threads moves only the calling thread
//! (kernel-facts.md), so [`enter`] refuses to run in a multi-threaded
//! process instead of producing a half-private sandbox.

use crate::error::{Error, Refusal, Result};
use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{getegid, geteuid};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Who runs the sandbox and whether it needs a user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Effective uid/gid of the caller; inside a user namespace they are
    /// mapped to themselves, so the task sees the same numbers.
    pub uid: u32,
    pub gid: u32,
    /// No CAP_SYS_ADMIN: the sandbox lives in a user namespace.
    pub rootless: bool,
}

impl Identity {
    pub fn current() -> Identity {
        let uid = geteuid().as_raw();
        let admin = caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_ADMIN,
        )
        .unwrap_or(false);
        Identity {
            uid,
            gid: getegid().as_raw(),
            rootless: uid != 0 || !admin,
        }
    }
}

/// Number of threads of this process.
pub fn thread_count() -> Result<usize> {
    crate::sys::fork::thread_count().map_err(|e| Error::io("/proc/self/task", e))
}

/// Fail unless this process runs a single thread.
pub fn ensure_single_threaded() -> Result<()> {
    match thread_count()? {
        1 => Ok(()),
        n => Err(Error::Internal(format!(
            "sandbox: the process already runs {n} threads; namespaces must be entered before \
             any thread starts (a bug in vhrun)"
        ))),
    }
}

/// How mounts made after entering propagate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Nothing in either direction: a run's namespace.
    Private,
    /// Host mounts made later still appear inside, nothing goes out: the
    /// warm server's namespace, which runs enter long after it was made.
    Slave,
}

/// Unshare the mount namespace (plus a user namespace when rootless), map
/// the caller's uid/gid to themselves, and make every mount private so
/// nothing mounted from now on propagates to the host.
pub fn enter(id: &Identity) -> Result<()> {
    enter_with(id, Propagation::Private)
}

/// [`enter`] with the propagation of the new namespace's mounts chosen.
pub fn enter_with(id: &Identity, propagation: Propagation) -> Result<()> {
    ensure_single_threaded()?;
    let mut flags = CloneFlags::CLONE_NEWNS;
    if id.rootless {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    unshare(flags).map_err(|e| unshare_error(id, e))?;
    if id.rootless {
        // An unprivileged writer may map only its own ids, and only after
        // giving up setgroups(2) (user_namespaces(7)).
        write_proc("/proc/self/setgroups", "deny")?;
        write_proc("/proc/self/uid_map", &format!("{0} {0} 1", id.uid))?;
        write_proc("/proc/self/gid_map", &format!("{0} {0} 1", id.gid))?;
    }
    set_propagation(propagation)
}

fn set_propagation(propagation: Propagation) -> Result<()> {
    let (flag, what) = match propagation {
        Propagation::Private => (MsFlags::MS_PRIVATE, "private"),
        Propagation::Slave => (MsFlags::MS_SLAVE, "slave"),
    };
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | flag,
        None::<&str>,
    )
    .map_err(|e| {
        Error::refused(
            Refusal::MountNamespace,
            format!("making / {what} in a new mount namespace: {}", e.desc()),
        )
    })?;
    Ok(())
}

/// The namespaces of a warm server, handed to a run (see `crate::lower::server`).
#[derive(Debug)]
pub struct Joined {
    /// The server's user namespace (rootless servers only).
    pub userns: Option<OwnedFd>,
    /// The server's mount namespace, where the tree is mounted.
    pub mntns: OwnedFd,
    /// Where the tree is mounted in that namespace.
    pub lower: PathBuf,
}

/// Enter a warm server's namespaces, then unshare a private mount
/// namespace of our own from its: the tree (and its warm kernel caches)
/// is there, and nothing this run mounts reaches the server or the host.
///
/// `setns` into a mount namespace resets the working directory to its
/// root; it is set back to `cwd` (the same directory: the server's
/// namespace sees the host's filesystems).
pub fn join(id: &Identity, ns: &Joined, cwd: &Path) -> Result<()> {
    ensure_single_threaded()?;
    if let Some(userns) = &ns.userns {
        setns(userns, CloneFlags::CLONE_NEWUSER).map_err(|e| {
            Error::refused(
                Refusal::UserNamespace,
                format!("entering the warm server's user namespace: {}", e.desc()),
            )
        })?;
    } else if id.rootless {
        return Err(Error::Internal(
            "a rootless run needs the warm server's user namespace".into(),
        ));
    }
    setns(&ns.mntns, CloneFlags::CLONE_NEWNS).map_err(|e| {
        Error::refused(
            Refusal::MountNamespace,
            format!("entering the warm server's mount namespace: {}", e.desc()),
        )
    })?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| {
        Error::refused(
            Refusal::MountNamespace,
            format!(
                "unshare(CLONE_NEWNS) in the warm server's namespace: {}",
                e.desc()
            ),
        )
    })?;
    set_propagation(Propagation::Private)?;
    if let Err(e) = std::env::set_current_dir(cwd) {
        tracing::debug!("{}: {e}", cwd.display());
    }
    Ok(())
}

/// This process's mount namespace, to step back into after a run's is
/// set up ([`step_out`]). Root only: from a user namespace there is no
/// way back into its parent's mount namespace.
pub fn current_mount_ns() -> Option<OwnedFd> {
    std::fs::File::open("/proc/self/ns/mnt")
        .map(OwnedFd::from)
        .ok()
}

/// Leave the run's mount namespace for `home` ([`current_mount_ns`]) once
/// the reaper is in it: the reaper and the task then hold it alone, so the
/// reaper needs no copy of its own, and it ends with them. `setns` resets
/// the working directory; it is set back to `cwd`. Single-threaded callers
/// only (the kernel refuses a shared `fs_struct`).
pub fn step_out(home: &OwnedFd, cwd: &Path) -> Result<()> {
    setns(home, CloneFlags::CLONE_NEWNS)
        .map_err(|e| Error::sys("setns back into vhrun's mount namespace", e))?;
    if let Err(e) = std::env::set_current_dir(cwd) {
        tracing::debug!("{}: {e}", cwd.display());
    }
    Ok(())
}

fn write_proc(path: &str, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| {
        Error::refused(
            Refusal::UserNamespace,
            format!("writing {value:?} to {path}: {e} (the user namespace cannot map the caller)"),
        )
    })
}

fn unshare_error(id: &Identity, e: nix::errno::Errno) -> Error {
    if !id.rootless {
        return Error::refused(
            Refusal::MountNamespace,
            format!("unshare(CLONE_NEWNS): {}", e.desc()),
        );
    }
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    let hint = if max.trim() == "0" {
        "user namespaces are disabled: sysctl -w user.max_user_namespaces=15000".to_string()
    } else if std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .is_ok_and(|v| v.trim() == "0")
    {
        "unprivileged user namespaces are disabled: sysctl -w kernel.unprivileged_userns_clone=1"
            .to_string()
    } else if std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        .is_ok_and(|v| v.trim() == "1")
    {
        "AppArmor restricts unprivileged user namespaces: \
         sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile for vhrun)"
            .to_string()
    } else {
        format!(
            "{}; user namespaces are needed to run without root",
            e.desc()
        )
    };
    Error::refused(
        Refusal::UserNamespace,
        format!("cannot create a user namespace ({hint})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_multi_threaded_process() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv().ok());
        assert!(thread_count().unwrap() >= 2);
        let err = ensure_single_threaded().unwrap_err();
        assert!(err.to_string().contains("threads"), "{err}");
        assert_eq!(err.exit_code(), crate::error::exit::INTERNAL);
        // enter() checks first and unshares nothing.
        let me = Identity::current();
        assert!(enter(&me).is_err());
        drop(tx);
        t.join().unwrap();
    }
}
