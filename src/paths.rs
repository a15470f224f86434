//! Path helpers with Go's semantics where rcc's behaviour depends on them
//! (`filepath.Abs`, `filepath.Clean`, `os.ExpandEnv`), used by every layer
//! from robot.yaml to the sandbox; nothing here knows about the store.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub fn mkdir_all(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io(path, e))
}

/// Go's `os.ExpandEnv` for `$VAR` and `${VAR}`.
pub fn expand_env(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            let (name, next) = if b[i + 1] == b'{' {
                match s[i + 2..].find('}') {
                    Some(end) => (&s[i + 2..i + 2 + end], i + 3 + end),
                    None => {
                        out.push('$');
                        i += 1;
                        continue;
                    }
                }
            } else {
                let len = s[i + 1..]
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                (&s[i + 1..i + 1 + len], i + 1 + len)
            };
            out.push_str(&std::env::var(name).unwrap_or_default());
            i = next;
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// `filepath.Abs`: join to cwd and clean lexically.
pub fn absolute(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    clean(&joined)
}

/// Go's `filepath.Clean` for absolute paths.
pub fn clean(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(if p.is_absolute() { "/" } else { "." });
    }
    out
}

/// A regular file (after symlinks) with an execute bit: what PATH lookups take.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Write `data` as the file at `path` with permission bits `mode` (less
/// the umask): a fresh temporary file in the same directory, renamed over
/// `path`. Readers see the old file or the new one, never a part, and a
/// file already open or mapped keeps its old bytes (`sys::mmap` relies on
/// that).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    // A temp file a killed run of this pid left behind.
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| Error::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
