//! The staging directory: where an environment is assembled before it is
//! lifted. Its basename has the length of rcc's identities (24 bytes), so a
//! restore or the FUSE tree can relocate it in place, and it sits in the
//! directory where spaces are served (`Locations::holotree`), because a
//! relocation rewrites only the basename.

use super::python::Interpreter;
use crate::digest::{sipit, textual};
use crate::error::{Error, IoContext, Result};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `"b" + uhi + "_" + 14 hex + "v"`: 24 bytes like rcc's `h…t` stage and
/// `…_…_…` space names, distinct from both, and one per blueprint, so two
/// builds of different blueprints never share a stage (builds of the same
/// blueprint are serialised by the build lock).
pub fn stage_name(user_home_identity: &str, blueprint: &str) -> String {
    let tag = textual(sipit(format!("vhrun build {blueprint}").as_bytes()), 14);
    format!("b{user_home_identity}_{tag}v")
}

/// Removes the directory when dropped, on success and on every error path.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
    /// A tmpfs is mounted on it (the build's own mount namespace).
    in_memory: bool,
}

impl StagingDir {
    /// [`StagingDir::create`], with a tmpfs mounted on the directory when
    /// `in_memory` (the caller is in a mount namespace of its own, which
    /// every process of the build inherits): the environment is staged in
    /// RAM, so installing it writes nothing to disk, lifting reads it from
    /// memory and removing it is instant. Falls back to the disk when the
    /// mount is refused.
    pub fn create_in(parent: &Path, name: &str, in_memory: bool) -> Result<StagingDir> {
        let mut stage = Self::create(parent, name)?;
        if in_memory {
            let mounted = nix::mount::mount(
                Some("vhrun-stage"),
                &stage.path,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some("mode=0755"),
            );
            match mounted {
                Ok(()) => stage.in_memory = true,
                Err(e) => tracing::info!("staging on disk: tmpfs at {}: {e}", stage.path.display()),
            }
        }
        Ok(stage)
    }

    /// Create `parent/name`, replacing a leftover of a build that was killed
    /// (the caller holds the blueprint's build lock, so nobody else uses it).
    pub fn create(parent: &Path, name: &str) -> Result<StagingDir> {
        crate::paths::mkdir_all(parent, 0o750)?;
        let path = parent.join(name);
        if path.symlink_metadata().is_ok() {
            tracing::warn!("removing the leftover staging directory {}", path.display());
            remove_tree(&path)?;
        }
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .at(&path)?;
        Ok(StagingDir {
            path,
            in_memory: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn in_memory(&self) -> bool {
        self.in_memory
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if self.in_memory {
            // The tmpfs and all it holds go with the unmount.
            if let Err(e) = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH) {
                tracing::error!("unmounting the staging tmpfs {}: {e}", self.path.display());
            }
        }
        if let Err(e) = remove_tree(&self.path) {
            tracing::error!("could not remove staging directory: {e}");
        }
    }
}

/// `rm -rf`, also through directories without write permission.
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_writable(path);
            std::fs::remove_dir_all(path).at(path)
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn make_writable(path: &Path) {
    let Ok(md) = path.symlink_metadata() else {
        return;
    };
    if md.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// What a copy took.
#[derive(Debug, Default, Clone, Copy)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    pub symlinks: u64,
}

/// Bytecode never goes into a stage: rcc's lift drops it anyway.
fn is_bytecode(name: &str) -> bool {
    name == "__pycache__" || name.ends_with(".pyc") || name.ends_with(".pyo")
}

/// Copy the interpreter's own part of its prefix into `dst`: CPython's
/// entry points in bin/, its standard library (without site-packages'
/// content, CPython's test suite and the static libpython archive), its
/// shared libraries and headers. Third-party scripts, packages and bytecode
/// stay behind; so does anything else that shares the prefix (/usr/local).
pub fn copy_prefix(interp: &Interpreter, dst: &Path) -> Result<CopyStats> {
    let src = &interp.base_prefix;
    let mut stats = CopyStats::default();
    let mut c = Copier {
        src_prefix: src,
        dst_prefix: dst,
        stats: &mut stats,
        stdlib: &interp.stdlib,
    };
    let selected = |dir: &str, keep: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(src.join(dir))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.file_name().to_str().is_some_and(keep))
                    .map(|e| Path::new(dir).join(e.file_name()))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let bin = selected("bin", &|n| {
        ["python", "pydoc", "idle", "2to3"]
            .iter()
            .any(|p| n.starts_with(p))
    });
    if bin.is_empty() {
        return Err(Error::bad_input(
            src,
            "no bin/python* in this prefix: not a CPython installation",
        ));
    }
    let lib = selected("lib", &|n| {
        ["libpython", "tcl", "tk", "itcl", "thread"]
            .iter()
            .any(|p| n.starts_with(p))
    });
    let pkgconfig = selected("lib/pkgconfig", &|n| n.starts_with("python"));
    let include = selected("include", &|n| n.starts_with("python"));
    for rel in bin
        .iter()
        .chain(lib.iter())
        .chain(pkgconfig.iter())
        .chain(include.iter())
        .chain(std::iter::once(&interp.stdlib))
    {
        c.copy(rel)?;
    }
    // An empty site-packages where pip will install.
    let site = dst.join(&interp.stdlib).join("site-packages");
    crate::paths::mkdir_all(&site, 0o755)?;
    Ok(stats)
}

struct Copier<'a> {
    src_prefix: &'a Path,
    dst_prefix: &'a Path,
    stdlib: &'a Path,
    stats: &'a mut CopyStats,
}

impl Copier<'_> {
    fn skip(&self, rel: &Path) -> bool {
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if is_bytecode(name) {
            return true;
        }
        if let Ok(in_stdlib) = rel.strip_prefix(self.stdlib) {
            let mut comps = in_stdlib.components();
            let first = comps.next().and_then(|c| c.as_os_str().to_str());
            let deeper = comps.next().is_some();
            return match first {
                // the machine's packages are not the interpreter
                Some("site-packages") | Some("dist-packages") => deeper,
                // CPython's own regression tests: ~120 MB no robot imports
                Some("test") => true,
                // `config-3.11-*/libpython3.11.a`: only for static embedding
                Some(c) if c.starts_with("config-") => name.ends_with(".a"),
                _ => false,
            };
        }
        false
    }

    fn copy(&mut self, rel: &Path) -> Result<()> {
        if self.skip(rel) {
            return Ok(());
        }
        let from = self.src_prefix.join(rel);
        let to = self.dst_prefix.join(rel);
        let md = match from.symlink_metadata() {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&from, e)),
        };
        if let Some(parent) = to.parent() {
            crate::paths::mkdir_all(parent, 0o755)?;
        }
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&from).at(&from)?;
            // rcc restores link text verbatim, so a link must not name the
            // source prefix: make those relative.
            let target = match target.strip_prefix(self.src_prefix) {
                Ok(inside) if target.is_absolute() => {
                    relative_to(rel.parent().unwrap_or(Path::new("")), inside)
                }
                _ => target,
            };
            std::os::unix::fs::symlink(&target, &to).at(&to)?;
            self.stats.symlinks += 1;
        } else if ft.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&to)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .at(&to)?;
            let mut names: Vec<_> = std::fs::read_dir(&from)
                .at(&from)?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect();
            names.sort();
            for n in names {
                self.copy(&rel.join(n))?;
            }
            // The source's permissions, but always writable by us: pip
            // installs into these directories next.
            let mode = (md.permissions().mode() & 0o7777) | 0o700;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).at(&to)?;
        } else if ft.is_file() {
            // std::fs::copy uses copy_file_range and keeps the permission bits.
            let n = std::fs::copy(&from, &to).at(&from)?;
            let mode = (md.permissions().mode() & 0o7777) | 0o200;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).at(&to)?;
            self.stats.files += 1;
            self.stats.bytes += n;
        }
        // sockets, fifos, devices: nothing an interpreter needs
        Ok(())
    }
}

/// The relative path from directory `from_dir` to `to` (both relative to
/// the same root).
pub fn relative_to(from_dir: &Path, to: &Path) -> PathBuf {
    let a: Vec<_> = from_dir.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Remove bytecode a build step left (ensurepip, pip, post-install scripts).
pub fn strip_bytecode(root: &Path) -> Result<()> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) => return Err(Error::io(root, e)),
    };
    for e in rd {
        let e = e.at(root)?;
        let p = e.path();
        let ft = e.file_type().at(&p)?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if ft.is_dir() {
            if name == "__pycache__" {
                remove_tree(&p)?;
            } else {
                strip_bytecode(&p)?;
            }
        } else if ft.is_file() && is_bytecode(&name) {
            std::fs::remove_file(&p).at(&p)?;
        }
    }
    Ok(())
}

/// Remove PEP 668's `EXTERNALLY-MANAGED` from the staged standard library
/// (`stdlib` relative to the prefix): uv-managed and distribution CPythons
/// carry it, and neither pip nor uv would install into the copy otherwise.
pub fn remove_externally_managed(stage: &Path, stdlib: &Path) -> Result<()> {
    let marker = stage.join(stdlib).join("EXTERNALLY-MANAGED");
    match std::fs::remove_file(&marker) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&marker, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_have_the_identity_length() {
        let n = stage_name("59acff1", "c34ed96c2d8a459a");
        assert_eq!(n.len(), 24);
        assert_eq!(n.len(), "h59acff1_493f813dad24d3t".len());
        assert_ne!(n, stage_name("59acff1", "0000000000000000"));
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_to(Path::new("lib"), Path::new("lib/libpython3.11.so.1.0")),
            PathBuf::from("libpython3.11.so.1.0")
        );
        assert_eq!(
            relative_to(Path::new("lib/pkgconfig"), Path::new("bin/x")),
            PathBuf::from("../../bin/x")
        );
    }

    #[test]
    fn staging_dir_goes_away() {
        let t = tempfile::tempdir().unwrap();
        let p = {
            let s = StagingDir::create(t.path(), "stage").unwrap();
            std::fs::create_dir_all(s.path().join("a/b")).unwrap();
            std::fs::write(s.path().join("a/b/f"), "x").unwrap();
            std::fs::set_permissions(s.path().join("a"), std::fs::Permissions::from_mode(0o500))
                .unwrap();
            s.path().to_path_buf()
        };
        assert!(!p.exists());
    }
}
