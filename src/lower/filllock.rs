//! Who fills a blob-cache entry, across processes.
//!
//! A cold run decodes its working set ahead in its own process while the
//! warm server (another process) decodes what the task opens: without a
//! word between them, both decoded the first big libraries at once (a cold
//! heavy import decoded 52 of its 98 MB twice, on a machine of two cores).
//!
//! An open for a task that must fill an entry holds a lock file beside it,
//! `.<entry>.lock.tmp`, with open-file-description locks (per descriptor,
//! so threads of one process exclude each other too):
//! - byte 0, written: the task's filler. Other tasks wait for it, at most
//!   [`WAIT`], then fill anyway: a stopped or stuck process never hangs the
//!   others (a second fill writes the same bytes through its own temp
//!   file, as before);
//! - byte 1, read: "this task decodes the entry itself".
//!
//! Decoding ahead writes `.<entry>.ahead.tmp`, runs at nice 19 and holds no
//! lock: the run that decodes ahead forks the sandbox meanwhile, and a lock
//! held by a descriptor a child inherits would stay held for the child's
//! life. It skips an entry a task fills. A task that finds it decoding
//! waits while the ahead file grows (what is left of a decode is less than
//! all of it); when it stops growing for [`STALL`] (decoding ahead starved
//! by busier processes, or killed), the task decodes the entry itself and
//! says so with byte 1, and decoding ahead gives up at its next MiB (or
//! on finding the entry in place: the task's lock file is gone by then).
//!
//! Exactly one of them puts the entry in place, by a rename each of the
//! same name: the task *claims* the ahead file (renames it away, unlinks
//! it) before it decodes, and decoding ahead links its file into place
//! through its descriptor ([`commit_ahead`]), which fails once the file
//! was claimed. A file that had stopped growing because it was complete,
//! its starved writer between its last look at byte 1 and its rename,
//! was decoded twice before. Linking through the descriptor, never by the
//! shared name, also means a starved writer can only ever place its own
//! file, never another run's unfinished one of the same name.
//!
//! Best effort throughout: a lock file that cannot be made (another user's
//! cache, a full disk) only means filling without it. The `.tmp` names
//! leave what a killed process left behind to `vhrun gc`.

use nix::fcntl::{fcntl, FcntlArg};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long an open for a task waits for another task's filler.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a task waits for decoding ahead that makes no progress.
pub const STALL: Duration = Duration::from_millis(50);

const FILLER: i64 = 0;
const DECODES_ITSELF: i64 = 1;

/// A task's hold on an entry's lock file.
#[derive(Debug)]
pub struct FillLock {
    file: File,
    path: PathBuf,
}

/// How an open for a task got its turn.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// It holds the filler's lock.
    Filler,
    /// The entry appeared while it waited.
    Filled,
    /// It waited [`WAIT`] in vain and fills without the lock.
    TimedOut,
}

impl FillLock {
    /// The lock file of `entry` (created), or `None` where it cannot be made.
    pub fn open(entry: &Path) -> Option<FillLock> {
        let path = sibling(entry, "lock.tmp")?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        Some(FillLock { file, path })
    }

    /// Take the filler's lock, waiting for another task's filler until
    /// `filled` says the entry is there or [`WAIT`] has passed.
    pub fn take_for_task(&self, filled: impl Fn() -> bool) -> Turn {
        let start = Instant::now();
        let mut pause = Duration::from_micros(50);
        loop {
            if set(&self.file, libc::F_WRLCK, FILLER) {
                return Turn::Filler;
            }
            if filled() {
                return Turn::Filled;
            }
            if start.elapsed() >= WAIT {
                return Turn::TimedOut;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Wait while decoding ahead fills the entry: `true` when `filled`
    /// says it is there; `false` when there is no such decode or it made
    /// no progress for [`STALL`], and this task is to decode it (decoding
    /// ahead is told to stop, and its file is claimed: it can no longer
    /// put it in place).
    pub fn wait_for_ahead(&self, entry: &Path, filled: impl Fn() -> bool) -> bool {
        let Some(ahead) = sibling(entry, "ahead.tmp") else {
            return false;
        };
        let mut last = None;
        let mut moved = Instant::now();
        loop {
            if filled() {
                return true;
            }
            let now = std::fs::symlink_metadata(&ahead).ok().map(|m| m.len());
            match now {
                // Gone: renamed into place, or given up.
                None if last.is_some() => {
                    if filled() {
                        return true;
                    }
                    break;
                }
                None => break,
                Some(_) if now != last => {
                    last = now;
                    moved = Instant::now();
                }
                Some(_) if moved.elapsed() >= STALL => break,
                Some(_) => {}
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        let _ = set(&self.file, libc::F_RDLCK, DECODES_ITSELF);
        claim(&ahead, entry);
        // Decoding ahead may have committed before the claim.
        filled()
    }

    /// The entry is in place (or could not be filled): the lock file goes.
    /// Whoever still waits on it finds the entry, or takes the lock of the
    /// unlinked file and fills; a newcomer makes a new lock file.
    pub fn done(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where decoding ahead writes `entry`, or `None` when it should leave the
/// entry alone: a task fills it, or another run decodes it ahead.
///
/// An ahead file a killed run left behind is never taken over: its writer
/// renames it by name, and a starved writer (not dead after all) would then
/// rename another's unfinished file into place. Tasks decode such an entry
/// themselves after [`STALL`], and `vhrun gc` sweeps the file.
pub fn ahead_file(entry: &Path) -> Option<(PathBuf, File)> {
    if held(entry, FILLER) {
        return None;
    }
    let path = sibling(entry, "ahead.tmp")?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .ok()?;
    Some((path, file))
}

/// Put decoding ahead's finished `file` (written as `ahead`) in place as
/// `entry`, unless a task claimed it: `false` then, and nothing changed.
/// The file is linked by its descriptor under a name of this process's own
/// and renamed from there; a claimed file has no link left, and linking it
/// fails. Without `/proc` the link fails too, and the entry is left to a
/// task.
pub fn commit_ahead(file: &File, ahead: &Path, entry: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Some(mine) = unique_sibling(entry) else {
        return false;
    };
    let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
    let linked = nix::unistd::linkat(
        nix::fcntl::AT_FDCWD,
        by_fd.as_str(),
        nix::fcntl::AT_FDCWD,
        &mine,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    );
    if let Err(e) = linked {
        tracing::debug!("{}: not linked into place: {e}", entry.display());
        return false;
    }
    if let Err(e) = std::fs::rename(&mine, entry) {
        tracing::debug!("{}: not renamed into place: {e}", entry.display());
        let _ = std::fs::remove_file(&mine);
        return false;
    }
    remove_if_ours(ahead, file);
    true
}

/// Remove `path` if it still names `file` (the inode): decoding ahead
/// cleans up only what it wrote, never a file another run made since under
/// the same name.
pub fn remove_if_ours(path: &Path, file: &File) {
    use std::os::unix::fs::MetadataExt;
    let same =
        |a: std::fs::Metadata, b: std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    if let (Ok(named), Ok(mine)) = (std::fs::symlink_metadata(path), file.metadata()) {
        if same(named, mine) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Take the ahead file `ahead` of `entry` away from its writer: renamed to
/// a name of this process's own, then unlinked. Nothing when there is none.
fn claim(ahead: &Path, entry: &Path) {
    let Some(mine) = unique_sibling(entry) else {
        return;
    };
    if std::fs::rename(ahead, &mine).is_ok() {
        let _ = std::fs::remove_file(&mine);
    }
}

/// `.<entry>.<pid>.<n>.tmp` beside `entry`: a name no other process or
/// thread uses (the `.tmp` leaves a crash's leftover to `vhrun gc`).
/// Unique in the process, not per cache: two caches of one process may
/// fill the same entry at once (a task's open that gave up waiting; the
/// later rename wins, with the same bytes), and per-cache counters once
/// gave both the same name (EEXIST).
pub fn unique_sibling(entry: &Path) -> Option<PathBuf> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    sibling(entry, &format!("{}.{n}.tmp", std::process::id()))
}

/// A task decodes `entry` itself: decoding ahead stops (an open and an
/// `fcntl` when a lock file exists).
pub fn task_decodes(entry: &Path) -> bool {
    held(entry, DECODES_ITSELF)
}

fn held(entry: &Path, byte: i64) -> bool {
    let Some(file) = sibling(entry, "lock.tmp").and_then(|p| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(p)
            .ok()
    }) else {
        return false;
    };
    let mut l = flock(libc::F_WRLCK, byte);
    fcntl(&file, FcntlArg::F_OFD_GETLK(&mut l)).is_ok()
        && l.l_type != libc::F_UNLCK as libc::c_short
}

fn set(file: &File, kind: libc::c_int, byte: i64) -> bool {
    fcntl(file, FcntlArg::F_OFD_SETLK(&flock(kind, byte))).is_ok()
}

/// `.<entry>.<suffix>` beside `entry`.
fn sibling(entry: &Path, suffix: &str) -> Option<PathBuf> {
    let name = entry.file_name()?.to_string_lossy();
    Some(entry.with_file_name(format!(".{name}.{suffix}")))
}

fn flock(kind: libc::c_int, byte: i64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: byte,
        l_len: 1,
        // OFD locks want 0 here.
        l_pid: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// An entry `name` under `t` that decoding ahead wrote whole (`bytes`)
    /// but has not placed, and a task that fills it: the entry, the ahead
    /// file, its writer's descriptor and the task's lock.
    fn decoded_ahead(
        t: &tempfile::TempDir,
        name: &str,
        bytes: &[u8],
    ) -> (PathBuf, PathBuf, File, FillLock) {
        let entry = t.path().join(name);
        let (path, mut f) = ahead_file(&entry).unwrap();
        f.write_all(bytes).unwrap();
        let (_, task) = filling(t, name);
        (entry, path, f, task)
    }

    /// The names in `t`, sorted.
    fn leftovers(t: &tempfile::TempDir) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// An entry `name` under `t` whose filler's lock a task holds.
    fn filling(t: &tempfile::TempDir, name: &str) -> (PathBuf, FillLock) {
        let entry = t.path().join(name);
        let lock = FillLock::open(&entry).unwrap();
        assert_eq!(lock.take_for_task(|| false), Turn::Filler);
        (entry, lock)
    }

    #[test]
    fn a_second_task_waits_for_the_first_and_decoding_ahead_keeps_out() {
        let t = tempfile::tempdir().unwrap();
        let (entry, first) = filling(&t, "abcd");
        assert!(ahead_file(&entry).is_none(), "a task fills it");
        // A second task (another descriptor, as another process has)
        // waits for the first and finds the entry it wrote.
        let second = std::thread::scope(|s| {
            let h = s.spawn(|| {
                let again = FillLock::open(&entry).unwrap();
                let start = Instant::now();
                (again.take_for_task(|| entry.exists()), start.elapsed())
            });
            std::thread::sleep(Duration::from_millis(50));
            std::fs::write(&entry, b"x").unwrap();
            first.done();
            h.join().unwrap()
        });
        // Filled, or the lock once the first let go: the entry is there.
        assert_ne!(second.0, Turn::TimedOut);
        assert!(entry.exists());
        assert!(
            second.1 >= Duration::from_millis(40),
            "it waited: {:?}",
            second.1
        );
        assert!(!t.path().join(".abcd.lock.tmp").exists());
    }

    #[test]
    fn a_task_takes_over_when_the_filler_goes_away() {
        let t = tempfile::tempdir().unwrap();
        let (entry, first) = filling(&t, "abcd");
        let second = std::thread::scope(|s| {
            let h = s.spawn(|| FillLock::open(&entry).unwrap().take_for_task(|| false));
            std::thread::sleep(Duration::from_millis(20));
            // A filler that fails (or dies) releases the lock unfilled.
            drop(first);
            h.join().unwrap()
        });
        assert_eq!(second, Turn::Filler);
    }

    #[test]
    fn a_task_waits_for_a_growing_ahead_file_and_takes_over_a_stalled_one() {
        let t = tempfile::tempdir().unwrap();
        let entry = t.path().join("abcd");
        let (path, mut f) = ahead_file(&entry).unwrap();
        assert!(ahead_file(&entry).is_none(), "another run decodes it ahead");
        let (_, task) = filling(&t, "abcd");
        let got = std::thread::scope(|s| {
            let h = s.spawn(|| task.wait_for_ahead(&entry, || entry.exists()));
            for _ in 0..5 {
                f.write_all(&[0; 4096]).unwrap();
                std::thread::sleep(STALL / 5);
            }
            std::fs::rename(&path, &entry).unwrap();
            h.join().unwrap()
        });
        assert!(got, "the task took the entry decoding ahead wrote");
        assert!(!task_decodes(&entry));

        let entry = t.path().join("efgh");
        let (_path, _f) = ahead_file(&entry).unwrap();
        let (_, task) = filling(&t, "efgh");
        let start = Instant::now();
        assert!(!task.wait_for_ahead(&entry, || false));
        assert!(start.elapsed() >= STALL);
        assert!(task_decodes(&entry), "decoding ahead is told to stop");
        drop(task);
        assert!(!task_decodes(&entry));
    }

    /// Decoding ahead wrote the whole entry and was starved before its
    /// rename: its file stops growing, the task takes over. Then exactly
    /// one of them places the entry (this race once decoded it twice).
    #[test]
    fn a_stalled_finished_ahead_file_is_placed_by_its_writer_or_claimed_by_the_task() {
        let t = tempfile::tempdir().unwrap();
        let (entry, path, f, task) = decoded_ahead(&t, "abcd", b"decoded");
        assert!(!task.wait_for_ahead(&entry, || entry.exists()));
        assert!(!path.exists(), "the task claimed the ahead file");
        assert!(
            !commit_ahead(&f, &path, &entry),
            "a claimed file is not placed"
        );
        assert!(!entry.exists());
        task.done();
        assert_eq!(leftovers(&t), Vec::<String>::new());

        // The writer wins: the task finds the entry once its claim missed.
        let (entry, path, f, task) = decoded_ahead(&t, "efgh", b"decoded");
        assert!(commit_ahead(&f, &path, &entry));
        assert!(task.wait_for_ahead(&entry, || entry.exists()));
        assert_eq!(std::fs::read(&entry).unwrap(), b"decoded");
        task.done();
        assert_eq!(leftovers(&t), vec!["efgh".to_string()]);
    }

    /// A starved writer whose ahead file was claimed, and whose name
    /// another run's decode took since, neither places nor removes that
    /// other file: it links by its descriptor, never by the name.
    #[test]
    fn a_starved_writer_never_places_another_runs_file_of_the_same_name() {
        let t = tempfile::tempdir().unwrap();
        let (entry, path, first, task) = decoded_ahead(&t, "abcd", b"first, finished");
        assert!(!task.wait_for_ahead(&entry, || entry.exists()));
        task.done();
        // Another run decodes ahead under the same name, not finished yet.
        let (again, mut second) = ahead_file(&entry).unwrap();
        assert_eq!(again, path);
        second.write_all(b"half").unwrap();
        assert!(!commit_ahead(&first, &path, &entry));
        remove_if_ours(&path, &first);
        assert!(!entry.exists(), "the unfinished file stays where it is");
        assert_eq!(std::fs::read(&path).unwrap(), b"half");
    }
}
