//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `../shared` next to the repository (fixtures, oracles); `VHRUN_SHARED`
/// overrides it (a worktree at /work/wt/<name> has no ../shared).
pub fn shared_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("VHRUN_SHARED").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}
