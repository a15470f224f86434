//! What the task sees of the host, set up in the task's own mount
//! namespace.
//!
//! The reaper (single-threaded, forked after the FUSE server started)
//! unshares a second mount namespace before exec'ing the task. Only that
//! namespace gets these mounts, so the FUSE server in vhrun's namespace
//! keeps writing its blob cache while the task cannot. (When the kernel
//! serves the tree alone, nothing of vhrun's writes there any more: vhrun
//! applies them in the run's namespace and leaves it to the reaper, which
//! then needs no second one.)
//! - read-only paths (the hololib, the blob cache): bind-mounted onto
//!   themselves, recursively, then remounted `MS_RDONLY`;
//! - writable paths (the bytecode cache, artifacts) below a read-only one:
//!   bind-mounted onto themselves again and remounted read-write;
//! - hidden paths (`$VHRUN_HOME/runs`: other runs' write layers): covered
//!   by an empty read-only tmpfs. The overlay does not need them visible.
//!
//! A remount must keep the flags the kernel locked on the original mount
//! (nosuid, nodev, noexec when a user namespace copied them), so those are
//! read with statvfs beforehand. Rootless, the task has no capability left
//! to undo any of this; if it creates a user namespace of its own, the
//! kernel locks these mounts together (MNT_LOCKED, MNT_LOCK_READONLY).

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{fstatvfs, FsFlags};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Which paths the task sees read-only, writable or not at all.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    pub readonly: Vec<PathBuf>,
    pub writable: Vec<PathBuf>,
    pub hidden: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    ReadOnly,
    Writable,
    Hide,
}

#[derive(Debug)]
pub struct MountOp {
    pub kind: OpKind,
    pub path: PathBuf,
    cpath: CString,
    // Flags the remount must repeat (see the module doc).
    locked: MsFlags,
}

/// The mounts, with paths and flags resolved before forking.
#[derive(Debug, Default)]
pub struct Prepared {
    pub ops: Vec<MountOp>,
}

impl Isolation {
    pub fn is_empty(&self) -> bool {
        self.readonly.is_empty() && self.writable.is_empty() && self.hidden.is_empty()
    }

    /// Resolve every path (it must exist) and read its mount flags.
    /// Order: read-only first, then writable, then hidden. A writable path
    /// that no read-only path contains is writable already and gets no
    /// mounts: two fewer per run and path (the bytecode cache and TEMP lie
    /// outside the hololib and the blob cache in the default layout).
    pub fn prepare(&self) -> Result<Prepared> {
        let mut ops = Vec::new();
        for (kind, paths) in [
            (OpKind::ReadOnly, &self.readonly),
            (OpKind::Writable, &self.writable),
            (OpKind::Hide, &self.hidden),
        ] {
            for p in paths {
                let op = MountOp::new(kind, p)?;
                let inside_readonly = || {
                    ops.iter().any(|o: &MountOp| {
                        o.kind == OpKind::ReadOnly && op.path.starts_with(&o.path)
                    })
                };
                if kind != OpKind::Writable || inside_readonly() {
                    ops.push(op);
                }
            }
        }
        Ok(Prepared { ops })
    }
}

impl MountOp {
    fn new(kind: OpKind, path: &Path) -> Result<MountOp> {
        // Opened once, then named, measured and typed through the
        // descriptor: realpath(3) reads every component's link, and this
        // runs for each path on every run's start.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let fd_link = format!("/proc/self/fd/{}", file.as_raw_fd());
        let path = match std::fs::read_link(&fd_link) {
            Ok(real) if real.is_absolute() => real,
            // No /proc: the slower way.
            _ => std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?,
        };
        // A bind mount takes a file as well; a tmpfs needs a directory.
        let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
        if kind == OpKind::Hide && !is_dir {
            return Err(Error::bad_input(&path, "a hidden path must be a directory"));
        }
        let vfs = fstatvfs(&file).map_err(|e| Error::io(&path, e.into()))?;
        let f = vfs.flags();
        let mut locked = MsFlags::empty();
        for (st, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ] {
            if f.contains(st) {
                locked |= ms;
            }
        }
        let cpath = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::bad_input(&path, "path contains a NUL byte"))?;
        Ok(MountOp {
            kind,
            path,
            cpath,
            locked,
        })
    }

    /// Allocation-free; runs in the reaper.
    fn apply(&self) -> Result<(), Errno> {
        let p = self.cpath.as_c_str();
        match self.kind {
            OpKind::ReadOnly | OpKind::Writable => {
                mount(
                    Some(p),
                    p,
                    None::<&std::ffi::CStr>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&std::ffi::CStr>,
                )?;
                let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | self.locked;
                if self.kind == OpKind::ReadOnly {
                    flags |= MsFlags::MS_RDONLY;
                }
                mount(
                    None::<&std::ffi::CStr>,
                    p,
                    None::<&std::ffi::CStr>,
                    flags,
                    None::<&std::ffi::CStr>,
                )
            }
            OpKind::Hide => mount(
                Some(c"tmpfs"),
                p,
                Some(c"tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(c"mode=0755,size=4k"),
            ),
        }
    }
}

impl Prepared {
    /// Apply every mount; on failure, the index of the failing op.
    pub fn apply(&self) -> Result<(), (usize, Errno)> {
        for (i, op) in self.ops.iter().enumerate() {
            op.apply().map_err(|e| (i, e))?;
        }
        Ok(())
    }

    /// The error of op `index` failing with `errno`.
    pub fn error(&self, index: usize, errno: Errno) -> Error {
        let op = self.ops.get(index);
        Error::unavailable(
            format!(
                "sandbox mount ({:?}) of {}",
                op.map(|o| o.kind),
                op.map(|o| o.path.display().to_string()).unwrap_or_default()
            ),
            errno.desc(),
        )
    }
}
