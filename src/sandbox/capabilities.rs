//! The task gets no capability it did not have before vhrun.
//!
//! - Real root (CAP_SYS_ADMIN, no user namespace): nothing was gained, the
//!   task keeps root's capabilities.
//! - Rootless: the user namespace granted every capability (in that
//!   namespace). All of them are dropped before exec, bounding and ambient
//!   sets included, so neither a file capability nor an ambient set can
//!   bring one back. The task's uid is not 0 in the namespace, so exec
//!   itself grants nothing either.
//!
//! A consequence worth knowing: a binary with file capabilities marked
//! effective (e.g. `ping` with `cap_net_raw+ep`) fails to exec with EPERM
//! in a rootless sandbox, as in any container with an empty bounding set.

use caps::{CapSet, Capability};
use nix::errno::Errno;

/// What to do with capabilities in the task, prepared before forking.
#[derive(Debug, Clone)]
pub struct CapDrop {
    // Bounding-set members to drop: every capability this kernel knows
    // (an unknown one would fail, and the failure path allocates).
    bounding: Vec<Capability>,
}

impl CapDrop {
    /// `None` when nothing needs dropping (real root).
    pub fn for_identity(rootless: bool) -> Option<CapDrop> {
        rootless.then(|| {
            let known = caps::runtime::procfs_all_supported(None)
                .unwrap_or_else(|_| caps::runtime::thread_all_supported());
            let mut bounding: Vec<Capability> = known.into_iter().collect();
            bounding.sort_by_key(|c| c.index());
            CapDrop { bounding }
        })
    }

    /// Drop everything, in the only order that works: the bounding set
    /// needs CAP_SETPCAP in the effective set, so it goes first.
    /// Allocation-free unless a step fails; runs in a forked child.
    pub fn apply(&self) -> Result<(), Errno> {
        for &cap in &self.bounding {
            caps::drop(None, CapSet::Bounding, cap).map_err(|_| Errno::last())?;
        }
        caps::clear(None, CapSet::Ambient).map_err(|_| Errno::last())?;
        caps::clear(None, CapSet::Inheritable).map_err(|_| Errno::last())?;
        // Clearing the permitted set clears the effective set with it.
        caps::clear(None, CapSet::Permitted).map_err(|_| Errno::last())?;
        Ok(())
    }
}
