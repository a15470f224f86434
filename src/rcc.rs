//! The real rcc: where it is, and how to get it. The shim hands every
//! command but `run --virtual` to it, the builder lets it build
//! environments, doctor reports it. vhrun's own shims (and vhrun itself)
//! are never taken for it, wherever they stand on PATH.

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How to get rcc, for messages.
pub const INSTALL_HINT: &str = "install rcc: `curl -o rcc https://github.com/joshyorko/rcc/releases/latest/download/rcc-linux64 && chmod a+x rcc && sudo mv rcc /usr/local/bin/`";

/// Found in the first bytes of every shim script.
pub const MARKER: &str = "vhrun-rcc-shim";

/// True if `path` is a shim script (by its marker, following symlinks).
pub fn is_shim(path: &Path) -> bool {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    head[..n].starts_with(b"#!") && memchr::memmem::find(&head[..n], MARKER.as_bytes()).is_some()
}

/// The real rcc: the first executable `rcc` in `path_var` (a PATH value)
/// that is not a shim and not vhrun itself. `skip` names a shim to pass
/// over even if it could not be read.
pub fn find_real_rcc(path_var: Option<&OsStr>, skip: Option<&Path>) -> Option<PathBuf> {
    let skip = skip.and_then(|s| std::fs::canonicalize(s).ok());
    let me = std::env::current_exe()
        .ok()
        .and_then(|e| std::fs::canonicalize(e).ok());
    std::env::split_paths(path_var?)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join("rcc"))
        .find(|p| {
            if !crate::paths::is_executable(p) || is_shim(p) {
                return false;
            }
            let real = std::fs::canonicalize(p).ok();
            real.is_some() && real != skip && real != me
        })
}

/// The rcc that builds environments: `VHRUN_RCC` names one (empty: none,
/// vhrun's own builder then), else the real rcc on `PATH`.
pub fn for_builds(vhrun_rcc: Option<&OsStr>, path_var: Option<&OsStr>) -> Option<PathBuf> {
    match vhrun_rcc {
        Some(v) if v.is_empty() => None,
        Some(v) => Some(PathBuf::from(v)),
        None => find_real_rcc(path_var, None),
    }
}
