//! A run's private directory `$VHRUN_HOME/runs/<run-id>/`: `lower` (the
//! lower layer's mountpoint), `upper` and `work` (the overlay's write
//! layer), and the run's lock, flock'ed for its life and holding what the
//! run serves (its note, for `vhrun gc`).
//!
//! Two homes for it:
//! - **in memory** (a run's default, [`RunDir::in_memory`]): on disk only
//!   the run's [`Slot`], a lock file `runs/slot-<n>.run` that outlives the
//!   run and is reused by the next; the directory lives on a tmpfs the run
//!   mounts over `runs/` in its own mount namespace ([`RunDir::mount`]),
//!   so it vanishes with the namespace and nothing is created or removed
//!   on disk. Why: creating and removing a directory or a file with data
//!   costs 0.03-1 ms each on ext4 with `discard` (a freed block is
//!   discarded), and a run had seven directories, then a lock file and its
//!   TEMP directory.
//! - **on disk** ([`RunDir::create`]: warm servers, `--keep-overlay`,
//!   whose write layer must survive the run): `runs/<run-id>/` with a
//!   `lock` file inside, created as `.new-<id>` and renamed into place only
//!   once it is locked, so a concurrent cleaner never sees it unlocked.
//!
//! A crash (even SIGKILL) cannot leave a mount behind, since every mount
//! lives in the run's mount namespace, but it does leave the lock file or
//! the directory. Each run therefore removes those whose lock nobody holds.
//! The lock's file description is inherited by the reaper, so a run whose
//! vhrun died but whose reaper still lives is not touched.

use crate::error::{Error, IoContext, Result};
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old a `.new-*` directory (a crash between its mkdir and its rename,
/// a window of microseconds) must be before a later run removes it.
const NEW_DIR_GRACE: Duration = Duration::from_secs(2);

/// The suffix of an in-memory run's lock file.
pub const LOCK_SUFFIX: &str = ".run";

/// The prefix of a slot's lock file: `runs/slot-<n>.run`.
const SLOT_PREFIX: &str = "slot-";

/// A run's slot: the lock file `runs/slot-<n>.run` with the lowest `n`
/// that no live run holds, flock'ed for the run's life and saying what the
/// run serves (its note, for `vhrun gc`). Slot files outlive their runs
/// and the next run takes them over, and the run's TEMP directory is named
/// after its slot ([`Slot::temp_dir`]), so the common run creates, writes
/// and removes nothing on disk. `vhrun gc` removes slots unused for its
/// `--days`, holding their lock.
#[derive(Debug)]
pub struct Slot {
    path: PathBuf,
    lock: File,
}

impl Slot {
    /// Take the first free slot under `runs`, with `note` in it.
    pub fn take(runs: &Path, note: &str) -> Result<Slot> {
        use std::os::unix::fs::OpenOptionsExt;
        mkdir(runs, 0o700, true)?;
        let mut index = 0u32;
        loop {
            let path = runs.join(format!("{SLOT_PREFIX}{index}{LOCK_SUFFIX}"));
            let lock = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .at(&path)?;
            match lock.try_lock() {
                // `vhrun gc` unlinks a slot only while holding its lock: one
                // opened just before that and locked just after is no
                // longer the file gc sees, so it is taken again.
                Ok(()) if lock.metadata().at(&path)?.nlink() == 0 => continue,
                Ok(()) => {
                    let slot = Slot { path, lock };
                    slot.write_note(note)?;
                    return Ok(slot);
                }
                Err(std::fs::TryLockError::WouldBlock) => index += 1,
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
        }
    }

    /// Rewritten only when it changed: the slot's block stays as it is.
    fn write_note(&self, note: &str) -> Result<()> {
        let mut old = vec![0u8; note.len() + 1];
        let n = self.lock.read_at(&mut old, 0).at(&self.path)?;
        if &old[..n] != note.as_bytes() {
            self.lock.write_all_at(note.as_bytes(), 0).at(&self.path)?;
            self.lock.set_len(note.len() as u64).at(&self.path)?;
        }
        Ok(())
    }

    /// The run's TEMP (rcc's `$ROBOCORP_HOME/temp/<16 hex>`): the same
    /// directory for every run of this slot, which holds it alone.
    pub fn temp_dir(&self, robocorp_home: &Path) -> PathBuf {
        let seed = format!("vhrun slot\0{}", self.path.display());
        let hex = crate::digest::textual(crate::digest::sipit(seed.as_bytes()), 0);
        robocorp_home.join("temp").join(hex)
    }

    /// A second descriptor of the lock (the same flock).
    fn lock_dup(&self) -> Result<File> {
        self.lock.try_clone().at(&self.path)
    }
}

/// Make a slot's TEMP directory ready and empty (a run killed before it
/// could clear it may have left files), its times now's: a cleaner of old
/// temporary directories (rcc's) sees it in use.
pub fn open_temp(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            let now = nix::sys::time::TimeSpec::UTIME_NOW;
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                dir,
                &now,
                &now,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| Error::io(dir, e.into()))?;
            clear_temp(dir)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => mkdir(dir, 0o700, true),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// Remove what a run left in its TEMP directory, keeping the directory
/// for the slot's next run.
pub fn clear_temp(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).at(dir)?;
    if !meta.is_dir() {
        return Err(Error::bad_input(dir, "TEMP is not a directory"));
    }
    remove_dir_contents(dir, meta.dev())
}

/// How much an in-memory run's write layer may hold, in tmpfs's `size=`
/// terms: bytes with an optional `k`, `m` or `g`, or a percentage of RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlaySize(String);

impl std::str::FromStr for OverlaySize {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<OverlaySize, String> {
        let s = s.trim();
        let (digits, unit) = match s.char_indices().last() {
            Some((i, c)) if !c.is_ascii_digit() => (&s[..i], Some(c.to_ascii_lowercase())),
            _ => (s, None),
        };
        let n: u64 = match digits.parse() {
            Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("{s:?}: expected a size such as 512m, 4g or 25%")),
        };
        match unit {
            None | Some('k' | 'm' | 'g') => Ok(OverlaySize(s.to_ascii_lowercase())),
            Some('%') if n <= 100 => Ok(OverlaySize(s.to_string())),
            _ => Err(format!("{s:?}: expected a size such as 512m, 4g or 25%")),
        }
    }
}

#[derive(Debug)]
pub struct RunDir {
    pub id: String,
    pub path: PathBuf,
    // Held (flock LOCK_EX) until the RunDir is dropped.
    _lock: File,
    /// In memory: the directory is on the run's tmpfs, and its lock a
    /// slot's.
    memory: bool,
}

impl RunDir {
    /// Remove stale run directories and lock files under `runs`, then
    /// make a run directory held by `slot` (or a slot taken here, saying
    /// `note`); the directory itself appears once [`RunDir::mount`] is
    /// called.
    pub fn in_memory(runs: &Path, note: &str, slot: Option<&Slot>) -> Result<RunDir> {
        clean_stale(runs);
        let lock = match slot {
            Some(slot) => slot.lock_dup()?,
            None => Slot::take(runs, note)?.lock,
        };
        let id = new_id();
        Ok(RunDir {
            path: runs.join(&id),
            id,
            _lock: lock,
            memory: true,
        })
    }

    /// An in-memory run's directory: a tmpfs over `runs/` holding
    /// `<id>/{lower,upper,work}`. Must be called in the run's own mount
    /// namespace; a run on disk has its directory already.
    /// `size` bounds what the task can write into the environment (the
    /// tmpfs's own default is half of RAM).
    pub fn mount(&self, size: Option<&OverlaySize>) -> Result<()> {
        if !self.memory {
            return Ok(());
        }
        let runs = self.path.parent().unwrap_or(Path::new("/"));
        let options = match size {
            Some(size) => format!("mode=0700,size={}", size.0),
            None => "mode=0700".to_string(),
        };
        nix::mount::mount(
            Some("vhrun-run"),
            runs,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| Error::sys(format!("mounting the run's tmpfs at {}", runs.display()), e))?;
        mkdir(&self.path, 0o700, false)?;
        self.make_layers()
    }

    fn make_layers(&self) -> Result<()> {
        mkdir(&self.path.join("lower"), 0o755, false)?;
        mkdir(&self.path.join("upper"), 0o755, false)?;
        mkdir(&self.path.join("work"), 0o700, false)
    }

    /// Remove stale run directories under `runs`, then create and lock a
    /// fresh one on disk, with `note` in its lock file.
    pub fn create(runs: &Path, note: &str) -> Result<RunDir> {
        mkdir(runs, 0o700, true)?;
        clean_stale(runs);
        let id = new_id();
        let tmp = runs.join(format!(".new-{id}"));
        mkdir(&tmp, 0o700, false)?;
        let lock_path = tmp.join("lock");
        let lock = File::create(&lock_path).at(&lock_path)?;
        lock.try_lock()
            .map_err(|e| Error::io(&lock_path, e.into()))?;
        lock.write_all_at(note.as_bytes(), 0).at(&lock_path)?;
        let staged = RunDir {
            id: id.clone(),
            path: tmp.clone(),
            _lock: lock,
            memory: false,
        };
        staged.make_layers()?;
        let path = runs.join(&id);
        fs::rename(&tmp, &path).at(&path)?;
        Ok(RunDir { path, ..staged })
    }

    /// A run directory on disk whose lock is still held by `lock`, a
    /// duplicate a dead server's keeper kept (`lower::server::keeper`).
    pub fn adopt(path: PathBuf, lock: std::os::fd::OwnedFd) -> RunDir {
        RunDir {
            id: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path,
            _lock: File::from(lock),
            memory: false,
        }
    }

    /// The lock, for a duplicate that keeps the directory held.
    pub fn lock_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self._lock)
    }

    pub fn lower(&self) -> PathBuf {
        self.path.join("lower")
    }
    pub fn upper(&self) -> PathBuf {
        self.path.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.path.join("work")
    }

    /// Move the write layer to `dest` (must not exist, or be an empty
    /// directory). Across filesystems the tree is copied.
    pub fn keep_upper(&self, dest: &Path) -> Result<()> {
        let upper = self.upper();
        match fs::rename(&upper, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                copy_tree(&upper, dest)?;
                Ok(())
            }
            Err(e) => Err(Error::io(dest, e)),
        }
    }

    /// Remove the directory (in memory: nothing; the tmpfs goes with the
    /// namespace, the slot stays for the next run). Must be called only
    /// after the lower layer is unmounted: `lower` is removed with rmdir,
    /// never recursively, so a mount still in place fails here instead of
    /// losing its files.
    pub fn remove(self) -> Result<()> {
        match self.memory {
            true => Ok(()),
            false => remove_run_dir(&self.path),
        }
    }
}

/// A run id: unique among runs of this machine, sorted by start.
fn new_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}-{}", nanos, std::process::id())
}

fn mkdir(path: &Path, mode: u32, recursive: bool) -> Result<()> {
    let r = fs::DirBuilder::new()
        .recursive(recursive)
        .mode(mode)
        .create(path);
    r.at(path)
}

/// Remove every run directory under `runs` that no live run holds.
/// Best effort: problems are logged, never fatal.
pub fn clean_stale(runs: &Path) {
    let Ok(rd) = fs::read_dir(runs) else { return };
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Slots stay for the next run (`vhrun gc` removes old ones): the
        // only entries a clean `runs/` has, skipped before any system call.
        if name.starts_with(SLOT_PREFIX) && name.ends_with(LOCK_SUFFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let old_enough = || {
            meta.modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > NEW_DIR_GRACE)
        };
        if meta.is_file() && name.ends_with(LOCK_SUFFIX) {
            // An in-memory run's lock before slots, free: its run is gone.
            if name.starts_with(".new-") && !old_enough() {
                continue;
            }
            if let Ok(lock) = File::open(&path) {
                if lock.try_lock().is_ok() {
                    log_remove(&path, fs::remove_file(&path).at(&path));
                }
            }
            continue;
        }
        if !meta.is_dir() {
            continue;
        }
        if name.starts_with(".new-") && !old_enough() {
            continue;
        }
        match File::open(path.join("lock")) {
            // Nobody holds it: a crashed run. Keep holding it while removing.
            Ok(lock) => {
                if lock.try_lock().is_ok() {
                    log_remove(&path, remove_run_dir(&path));
                }
            }
            // A directory a removal left half done.
            Err(e) if e.kind() == ErrorKind::NotFound => log_remove(&path, remove_run_dir(&path)),
            Err(_) => {}
        }
    }
}

fn log_remove(path: &Path, r: Result<()>) {
    match r {
        Ok(()) => tracing::info!("removed stale run directory {}", path.display()),
        Err(e) => tracing::warn!("cannot remove stale run directory {}: {e}", path.display()),
    }
}

fn remove_run_dir(path: &Path) -> Result<()> {
    let lower = path.join("lower");
    match fs::remove_dir(&lower) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                &lower,
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{e}; not removing the run directory (is something still mounted there?)"
                    ),
                ),
            ))
        }
    }
    remove_tree(path)
}

/// `rm -rf` that never follows symlinks, never leaves the filesystem of
/// `root`, and makes unreadable directories (overlayfs leaves `work/work`
/// mode 000; a task may leave 0500 directories) readable first.
pub fn remove_tree(root: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(root, e)),
    };
    if !meta.is_dir() {
        return fs::remove_file(root).at(root);
    }
    remove_dir_contents(root, meta.dev())?;
    fs::remove_dir(root).at(root)
}

fn remove_dir_contents(dir: &Path, dev: u64) -> Result<()> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).at(dir)?;
            fs::read_dir(dir).at(dir)?
        }
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in rd {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).at(&path)?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(Error::io(
                    &path,
                    std::io::Error::new(
                        ErrorKind::ResourceBusy,
                        "another filesystem is mounted here; not removing it",
                    ),
                ));
            }
            // Unlinking entries needs write permission on their directory.
            if meta.permissions().mode() & 0o700 != 0o700 {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).at(&path)?;
            }
            remove_dir_contents(&path, dev)?;
            fs::remove_dir(&path).at(&path)?;
        } else {
            fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

/// Copy a write layer across filesystems: directories, regular files,
/// symlinks and overlay whiteouts (0/0 character devices), with their
/// permission bits. Extended attributes (opaque-directory marks) are not
/// copied.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(src).at(src)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        match fs::create_dir(dst) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists && dst.is_dir() => {}
            Err(e) => return Err(Error::io(dst, e)),
        }
        for entry in fs::read_dir(src).at(src)? {
            let entry = entry.at(src)?;
            copy_tree(&entry.path(), &dst.join(entry.file_name()))?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777)).at(dst)?;
    } else if ft.is_symlink() {
        let target = fs::read_link(src).at(src)?;
        std::os::unix::fs::symlink(target, dst).at(dst)?;
    } else if ft.is_file() {
        fs::copy(src, dst).at(dst)?;
    } else {
        use nix::sys::stat::{mknod, Mode, SFlag};
        let kind = SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
        if let Err(e) = mknod(
            dst,
            kind,
            Mode::from_bits_truncate(meta.mode() & 0o7777),
            meta.rdev(),
        ) {
            tracing::warn!("--keep-overlay: cannot copy {}: {e}", src.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::OverlaySize;

    #[test]
    fn overlay_sizes_are_what_tmpfs_takes() {
        for ok in ["4096", "512m", "4G", "64k", "25%", "100%"] {
            assert!(ok.parse::<OverlaySize>().is_ok(), "{ok}");
        }
        assert_eq!("4G".parse::<OverlaySize>().unwrap().0, "4g");
        for bad in [
            "", "0", "0m", "m", "-1g", "1.5g", "4gb", "1t", "101%", "25 %", "x",
        ] {
            let e = bad.parse::<OverlaySize>().unwrap_err();
            assert!(e.contains("expected a size"), "{bad}: {e}");
        }
    }
}
