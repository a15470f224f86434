//! A catalog served at a mount point of the host, in the foreground
//! (`vhrun mount`), until SIGINT/SIGTERM/SIGHUP or an outside `umount`.
//! Unlike a run's tree, this mount is in the caller's namespace, so a
//! watchdog process unmounts it (and removes a mount point it created)
//! if vhrun is killed: it is never left behind.

use crate::error::{Error, IoContext, Result};
use crate::lower::blobcache::BlobCache;
use crate::lower::fuse::{self, MountOptions, PassthroughMode, SignalWatch, WaitOutcome};
use crate::lower::fuse::{Stats, WorkingSet};
use crate::sys::watchdog;
use crate::tree::Tree;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to serve where.
#[derive(Debug)]
pub struct HostMount {
    pub tree: Arc<Tree>,
    pub blobs: BlobCache,
    /// As given; made absolute and symlink-free here.
    pub mountpoint: PathBuf,
    /// Basename written at relocation offsets; default: the mount point's.
    pub target_name: Option<String>,
    pub threads: usize,
    pub passthrough: PassthroughMode,
    /// Replay the recorded working set once mounted.
    pub prefetch: bool,
    pub workset_path: PathBuf,
}

/// Serve until a signal or an outside unmount; the final counters.
pub fn serve(m: HostMount) -> Result<Stats> {
    let t0 = std::time::Instant::now();
    let (mountpoint, exists) = resolve_mountpoint(&m.mountpoint)?;
    let target = match m.target_name {
        Some(t) => t,
        None => mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::bad_input(&mountpoint, "cannot mount at the root"))?,
    };
    fuse::check_target_name(&m.tree, &target)?;
    if exists {
        check_empty_dir(&mountpoint)?;
    }
    crate::sys::rlimit::raise_nofile_limit();

    // Forked while single-threaded, before anything is created: from here
    // on neither the mount nor a mount point we made can outlive us.
    let source = fuse::mount_source(std::process::id());
    let dog = watchdog::spawn(&mountpoint, &source, !exists)?;
    if !exists {
        // As a restore creates the space directory.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o750)
            .create(&mountpoint)
            .at(&mountpoint)?;
    }
    let opts = MountOptions {
        target_name: target,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        threads: m.threads,
        passthrough: m.passthrough,
        shown_as: None,
        handover: false,
    };
    // Caught from before the mount exists: a Ctrl-C at any point unmounts
    // cleanly.
    let signals = SignalWatch::new(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
    let mounted = fuse::mount(m.tree.clone(), m.blobs, &mountpoint, &opts)?;
    if m.prefetch {
        if let Some(ws) = WorkingSet::load(&m.workset_path) {
            let p = mounted.prefetch(&ws, 4);
            tracing::info!(
                "prefetched {} paths and {} directories in {:.1} ms",
                p.paths,
                p.dirs,
                p.elapsed.as_secs_f64() * 1e3
            );
        }
    }
    tracing::info!(
        "serving {} ({} nodes) at {}, ready in {:.1} ms",
        m.tree.catalog_path().display(),
        m.tree.len(),
        mountpoint.display(),
        t0.elapsed().as_secs_f64() * 1e3
    );

    match mounted.wait(&signals)? {
        WaitOutcome::Signal(s) => tracing::info!("signal {s}: unmounting"),
        WaitOutcome::Unmounted => tracing::info!("unmounted from outside"),
    }
    let previous = WorkingSet::load(&m.workset_path);
    mounted
        .working_set()
        .record(previous.as_ref(), &m.workset_path);
    let stats = mounted.unmount();
    dog.disarm();
    if !exists {
        let _ = std::fs::remove_dir(&mountpoint);
    }
    stats
}

/// The absolute, symlink-free path to mount on, and whether it exists.
/// A missing mount point is created later (its parent must exist).
fn resolve_mountpoint(given: &Path) -> Result<(PathBuf, bool)> {
    let abs = std::path::absolute(given).at(given)?;
    if std::fs::symlink_metadata(&abs).is_ok() {
        return Ok((abs.canonicalize().at_user(&abs)?, true));
    }
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(Error::bad_input(&abs, "not a possible mount point"));
    };
    Ok((parent.canonicalize().at_user(parent)?.join(name), false))
}

fn check_empty_dir(path: &Path) -> Result<()> {
    if !path.is_dir() {
        return Err(Error::bad_input(path, "mount point is not a directory"));
    }
    if std::fs::read_dir(path).at(path)?.next().is_some() {
        return Err(Error::bad_input(
            path,
            "mount point is not empty (vhrun mount refuses to hide files)",
        ));
    }
    Ok(())
}
