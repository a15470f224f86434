#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

/// The shared fixtures directory: `$VHRUN_SHARED` if set, else
/// `<repo>/../shared`.
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VHRUN_SHARED").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}
