//! The overlay at the environment's path: lower = the read-only tree
//! (FUSE, or a bind-mounted directory), upper/work = the run's private
//! write layer.

use super::rundir::RunDir;
use crate::error::{Error, IoContext, Refusal, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Create the (empty) mountpoint where rcc's restore would create the
/// space directory. Runs on the host side, before any namespace.
pub fn ensure_mountpoint(env_path: &Path) -> Result<()> {
    match std::fs::metadata(env_path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::bad_input(
            env_path,
            "environment path exists and is not a directory",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::paths::mkdir_all(env_path, 0o755)
        }
        Err(e) => Err(Error::io(env_path, e)),
    }
}

/// Escape a path for overlayfs' option string, where `,` separates options,
/// `:` separates lower layers, and `\` escapes either.
pub fn escape(path: &Path) -> String {
    let s = path.to_string_lossy();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | ':') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The read-only layers under the run's write layer.
#[derive(Debug, Clone, Copy)]
pub struct Layers<'a> {
    /// The tree the task sees.
    pub lower: &'a Path,
    /// Data-only layers the tree's metacopy files redirect into.
    pub data: &'a [std::path::PathBuf],
}

/// The mount data for the run's overlay. `volatile` (when the write layer
/// is thrown away) skips overlayfs' sync of the whole upper filesystem at
/// unmount, which costs hundreds of milliseconds on a busy disk.
pub fn options(run: &RunDir, layers: &Layers<'_>, userxattr: bool, volatile: bool) -> String {
    let mut lowerdir = escape(layers.lower);
    for d in layers.data {
        lowerdir.push_str("::");
        lowerdir.push_str(&escape(d));
    }
    let mut data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        escape(&run.upper()),
        escape(&run.work())
    );
    if !layers.data.is_empty() {
        // Data-only layers are read through metacopy redirects.
        data.push_str(",metacopy=on");
    }
    if userxattr {
        // Unprivileged overlayfs stores its metadata in user.overlay.*.
        data.push_str(",userxattr");
    }
    if volatile {
        data.push_str(",volatile");
    }
    data
}

/// Mount the overlay at `target`. The merged root takes its mode and times
/// from the upper directory, so the upper root is given the lower root's
/// first: the task then sees the environment's root as a restore has it.
pub fn mount_overlay(
    run: &RunDir,
    layers: &Layers<'_>,
    target: &Path,
    userxattr: bool,
    volatile: bool,
) -> Result<()> {
    let lower = layers.lower;
    let upper = run.upper();
    let meta = std::fs::metadata(lower).at(lower)?;
    std::fs::set_permissions(
        &upper,
        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
    )
    .at(&upper)?;
    let times = std::fs::FileTimes::new()
        .set_accessed(meta.accessed().at(lower)?)
        .set_modified(meta.modified().at(lower)?);
    std::fs::File::open(&upper)
        .and_then(|f| f.set_times(times))
        .at(&upper)?;

    let try_mount = |data: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(data),
        )
    };
    let mut data = options(run, layers, userxattr, volatile);
    let mut result = try_mount(&data);
    if volatile && result == Err(nix::errno::Errno::EINVAL) {
        // Kernels before 5.10 do not know `volatile`.
        data = options(run, layers, userxattr, false);
        result = try_mount(&data);
    }
    result.map_err(|e| {
        Error::refused(
            Refusal::Overlay,
            format!(
                "mounting overlayfs at {}: {} (options {data}{})",
                target.display(),
                e.desc(),
                if userxattr {
                    "; unprivileged use needs userxattr support, Linux >= 5.11"
                } else {
                    ""
                }
            ),
        )
    })
}

/// Bind-mount a plain directory as the lower layer (tests, debugging, a
/// restored copy).
pub fn bind_lower(dir: &Path, mountpoint: &Path) -> Result<()> {
    mount(
        Some(dir),
        mountpoint,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        Error::unavailable(
            format!(
                "bind-mounting {} at {}",
                dir.display(),
                mountpoint.display()
            ),
            e.desc(),
        )
    })
}

/// Lazily unmount `path` in this mount namespace.
pub fn unmount(path: &Path) -> Result<()> {
    umount2(path, MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys(format!("unmounting {}", path.display()), e))
}

/// What a run wrote: the overlay's upper directory, measured after the
/// overlay is unmounted and before the directory is kept or removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UpperUsage {
    /// Regular files created or modified (a modified file is copied up whole).
    pub files: u64,
    /// Directories created or copied up (the root not counted).
    pub dirs: u64,
    pub symlinks: u64,
    /// Entries of the environment deleted (overlayfs whiteouts).
    pub whiteouts: u64,
    /// Sum of the regular files' sizes.
    pub bytes: u64,
    /// Space allocated on disk (st_blocks), directories included.
    pub disk_bytes: u64,
}

/// Walk `upper` (never following symlinks). Best effort: an entry that
/// cannot be read is left out.
pub fn measure_upper(upper: &Path) -> UpperUsage {
    let mut u = UpperUsage::default();
    let mut stack = vec![upper.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            u.disk_bytes += m.blocks() * 512;
            let t = m.file_type();
            if t.is_dir() {
                u.dirs += 1;
                stack.push(e.path());
            } else if t.is_file() {
                u.files += 1;
                u.bytes += m.len();
            } else if t.is_symlink() {
                u.symlinks += 1;
            } else if std::os::unix::fs::FileTypeExt::is_char_device(&t) && m.rdev() == 0 {
                u.whiteouts += 1;
            }
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_what_a_run_wrote() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path();
        std::fs::create_dir_all(up.join("lib/site")).unwrap();
        std::fs::write(up.join("lib/site/new.py"), vec![b'x'; 5000]).unwrap();
        std::fs::write(up.join("top"), b"abc").unwrap();
        std::os::unix::fs::symlink("top", up.join("link")).unwrap();
        let u = measure_upper(up);
        assert_eq!((u.files, u.dirs, u.symlinks, u.whiteouts), (2, 2, 1, 0));
        assert_eq!(u.bytes, 5003);
        assert!(u.disk_bytes >= 8192, "{u:?}");
        // A whiteout: the character device 0/0 (root only).
        if nix::unistd::geteuid().is_root() {
            nix::sys::stat::mknod(
                &up.join("gone"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o600),
                0,
            )
            .unwrap();
            assert_eq!(measure_upper(up).whiteouts, 1);
        }
    }

    #[test]
    fn escapes_separators() {
        assert_eq!(escape(Path::new("/a,b:c\\d/e")), "/a\\,b\\:c\\\\d/e");
        assert_eq!(escape(Path::new("/plain/path")), "/plain/path");
    }
}
