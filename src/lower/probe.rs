//! What the machine allows the virtual holotree, asked up front, for real
//! and cheaply, so `--mode auto` can run from a copy instead of failing
//! half-way:
//!
//! - `/dev/fuse` is opened (read-write, as a mount would; a device cgroup
//!   or a 0600 mode refuses here, not at the mount);
//! - the sandbox's first steps (a mount namespace, rootless in a user
//!   namespace with the id maps; `/` private) are tried in a forked child
//!   (~0.2 ms): under AppArmor's `apparmor_restrict_unprivileged_userns`
//!   the unshare itself succeeds and the steps after it fail, which would
//!   leave vhrun itself in a namespace where it cannot even create files;
//!   and a warm server started under a seccomp filter that refuses
//!   `unshare` or `mount` would only fail in its turn.
//!
//! Neither runs when a kernel image or a running warm server serves the
//! run (they have proved both). The rest is found where it happens, with
//! nothing to undo: the FUSE mount and the overlay mount in the run's
//! private namespace fail as `Error::Refused` before the task starts, and
//! the run falls back from there (`crate::run`).

use crate::error::{Error, Refusal, Result};
use crate::sandbox::Identity;
use crate::sys::nsprobe::{self, UsernsStep};
use std::os::unix::fs::OpenOptionsExt;

/// Both probes: what a FUSE way (a server to start, a mount of the run's
/// own) needs before the sandbox starts.
pub fn virtual_allowed(id: &Identity) -> Result<()> {
    let _s = tracing::info_span!("probe").entered();
    dev_fuse()?;
    namespaces(id)
}

/// `/dev/fuse` opens read-write.
pub fn dev_fuse() -> Result<()> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/fuse")
        .map(drop)
        .map_err(|e| Error::refused(Refusal::DevFuse, format!("/dev/fuse: {e}")))
}

/// The sandbox's namespaces can be made.
pub fn namespaces(id: &Identity) -> Result<()> {
    nsprobe::try_sandbox_namespaces(id.rootless, id.uid, id.gid).map_err(|(step, errno)| {
        let what = match (step, id.rootless) {
            (UsernsStep::Unshare, true) => "unshare(CLONE_NEWUSER|CLONE_NEWNS)",
            (UsernsStep::Unshare, false) => "unshare(CLONE_NEWNS)",
            (UsernsStep::Map, _) => "mapping the caller's ids in a new user namespace",
            (UsernsStep::Mount, _) => "making / private in a new mount namespace",
        };
        let refusal = if id.rootless {
            Refusal::UserNamespace
        } else {
            Refusal::MountNamespace
        };
        Error::refused(refusal, format!("{what}: {}", errno.desc()))
    })
}

/// The one warning line of a fallback to a copy: the refusal, and the
/// fix `vhrun doctor` gives.
pub fn fallback_warning(e: &Error) -> String {
    match e {
        Error::Refused { refusal, detail } => format!(
            "{} ({detail}): running from a copy of the environment (slower); to run it virtually: {}",
            refusal.what(),
            refusal.fix()
        ),
        other => format!("{other}: running from a copy of the environment (slower)"),
    }
}
