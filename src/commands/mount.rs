//! `vhrun mount`: serve a catalog at a mount point of the host, in the
//! foreground, until SIGINT/SIGTERM/SIGHUP or an outside `umount`; never
//! leave the mount behind, even when killed (a watchdog process unmounts).

use crate::cli::MountArgs;
use crate::error::{Error, IoContext, Result};
use crate::hololib::Locations;
use crate::lower::blobcache::BlobCache;
use crate::lower::fuse::{
    self, MountOptions, PassthroughMode, SignalWatch, WaitOutcome, WorkingSet,
};
use crate::sys::watchdog;
use crate::tree::Tree;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub fn run(args: &MountArgs) -> Result<i32> {
    let t0 = std::time::Instant::now();
    let loc = Locations::from_env();
    let (lib, name) = match (&args.catalog, &args.robot) {
        (Some(key), _) => loc.find_catalog(key)?,
        // The robot's environment, resolved as `vhrun run` does (no build).
        (None, Some(robot)) => {
            let robot = crate::robot::Robot::load(robot)?;
            let resolved = crate::resolve::resolve_environment(&loc, &robot, "user", "user")?
                .ok_or_else(|| {
                    Error::bad_input(
                        robot.file(),
                        "no condaConfigFile: a shell robot has no environment to mount",
                    )
                })?;
            (resolved.hololib, resolved.catalog_key)
        }
        (None, None) => {
            return Err(Error::Usage(
                "vhrun mount needs --catalog KEY or -r robot.yaml".into(),
            ))
        }
    };
    let tree = Arc::new(Tree::load_indexed(
        &lib.catalog_path(&name),
        &loc.vhrun_home.join("index"),
    )?);

    let (mountpoint, exists) = resolve_mountpoint(&args.mountpoint)?;
    let target = match &args.target_name {
        Some(t) => t.clone(),
        None => mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::bad_input(&mountpoint, "cannot mount at the root"))?,
    };
    fuse::check_target_name(&tree, &target)?;
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
        threads: args.threads as usize,
        passthrough: if args.no_passthrough {
            PassthroughMode::Off
        } else {
            PassthroughMode::Auto
        },
        shown_as: None,
    };
    let cache = BlobCache::at_home(lib, &loc.vhrun_home);
    // Caught from before the mount exists: a Ctrl-C at any point unmounts
    // cleanly and exits 0.
    let signals = SignalWatch::new(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;
    let mounted = fuse::mount(tree.clone(), cache, &mountpoint, &opts)?;
    let ws_path = WorkingSet::path_for(&loc.vhrun_home, &tree);
    if args.prefetch {
        if let Some(ws) = WorkingSet::load(&ws_path) {
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
        "serving {name} ({} nodes) at {}, ready in {:.1} ms",
        tree.len(),
        mountpoint.display(),
        t0.elapsed().as_secs_f64() * 1e3
    );

    let outcome = mounted.wait(&signals)?;
    match outcome {
        WaitOutcome::Signal(s) => tracing::info!("signal {s}: unmounting"),
        WaitOutcome::Unmounted => tracing::info!("unmounted from outside"),
    }
    let mut ws = mounted.working_set();
    if !ws.is_empty() {
        if let Some(old) = WorkingSet::load(&ws_path) {
            ws.merge(old);
        }
        if let Err(e) = ws.save(&ws_path) {
            tracing::warn!("cannot save the working set: {e}");
        }
    }
    let stats = mounted.unmount();
    dog.disarm();
    if !exists {
        let _ = std::fs::remove_dir(&mountpoint);
    }
    let stats = stats?;
    if args.stats {
        println!(
            "{}",
            serde_json::to_string_pretty(&stats).expect("stats serialise")
        );
    }
    Ok(0)
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
