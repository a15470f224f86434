//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The shared fixtures and tools: `$VHRUN_SHARED` if set, else
/// `<repo>/../shared` (the layout of the project's checkout).
pub fn shared_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VHRUN_SHARED") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}
