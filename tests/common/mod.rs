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

/// Copy a directory tree (regular files and directories), leaving out
/// `output` and `__pycache__` (what a robot run leaves in a robot dir).
pub fn copy_robot(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if name == "output" || name == "__pycache__" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_robot(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}
