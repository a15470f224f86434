//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The shared fixtures and bench scripts: `$VHRUN_SHARED`, else
/// `$CARGO_MANIFEST_DIR/../shared`.
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VHRUN_SHARED").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}
