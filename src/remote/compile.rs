//! Compiling ahead: the modules a lazily served tree predicts the task
//! will import (`remote::imports`, [`super::lazy::Batching::Imports`]) are
//! compiled to bytecode by a helper process beside the task, on the core
//! the task leaves idle, before the task gets to them.
//!
//! On a fresh worker most of a heavy import is CPython compiling sources
//! into an empty bytecode cache: rcc's hololib carries no `.pyc` (its
//! lift drops them), so every first run of a catalog on a machine pays
//! for it, one module after the other, on one core. The fetching-ahead
//! thread already knows, seconds early, which modules those are.
//!
//! - The tree's [`Feed`] gets the path of every module predicted, once,
//!   as soon as its blob is in the hololib (one line each, relative to
//!   the environment).
//! - The run starts [`helper_argv`] beside its commands
//!   (`sandbox::Companion`): the environment's own interpreter, in the
//!   task's sandbox, so the bytecode is exactly what the task's import
//!   would write (same interpreter, same source paths, mtimes and sizes),
//!   into the run's bytecode cache (`PYTHONPYCACHEPREFIX`). It skips a
//!   module whose `.pyc` is there, writes each atomically (as the import
//!   does: the task sees a whole file or none), and reports one byte per
//!   module compiled.
//! - Best effort: a helper that cannot start, a module that does not
//!   compile, a full pipe, all cost the task nothing but the head start.
//!   The helper is killed when the task ends.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// The helper's program, for `python -I -S -c`: argv[1] the environment's
/// root, argv[2] the bytecode cache; module paths on fd 3, one byte per
/// module compiled on fd 4. `-I` keeps the task's `PYTHONPATH` (and
/// whatever shadows the standard library there) out; the cache is set
/// from argv instead of `PYTHONPYCACHEPREFIX`. Timestamp pycs, as the
/// import writes them (py_compile would make hash-based ones under
/// `SOURCE_DATE_EPOCH`).
pub const HELPER: &str = r#"import os, sys, importlib.util, py_compile
root, sys.pycache_prefix = sys.argv[1], sys.argv[2]
ts = py_compile.PycInvalidationMode.TIMESTAMP
with os.fdopen(3, "rb") as feed:
    for line in feed:
        src = os.path.join(root, os.fsdecode(line.rstrip(b"\n")))
        try:
            pyc = importlib.util.cache_from_source(src)
            if os.path.exists(pyc):
                continue
            py_compile.compile(src, cfile=pyc, doraise=True, invalidation_mode=ts)
            os.write(4, b"c")
        except Exception:
            pass
"#;

/// The helper's command line: `python` the environment's interpreter (as
/// the task sees it), `root` the environment, `cache` the bytecode cache.
pub fn helper_argv(python: &Path, root: &Path, cache: &Path) -> Vec<OsString> {
    vec![
        python.into(),
        "-I".into(),
        "-S".into(),
        "-c".into(),
        HELPER.into(),
        root.into(),
        cache.into(),
    ]
}

/// The pipe the modules predicted for one tree go down, to the helpers of
/// its runs (one run's, or every run of a warm server: each line is read
/// by one of them).
///
/// Made with the tree's `Lazy`, before the FUSE server threads split their
/// descriptor table from the process's (`lower::fuse::mount`): the
/// fetching-ahead thread, started from a FUSE thread, writes through the
/// server threads' table, and a run's helper gets a duplicate of the read
/// end from the process's, so the pipe must be in both.
#[derive(Debug)]
pub struct Feed {
    read: OwnedFd,
    write: std::fs::File,
    /// A helper was handed the read end (until then nothing is written).
    wanted: AtomicBool,
}

impl Feed {
    pub fn new() -> std::io::Result<Feed> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // A helper that falls behind loses lines; the tree never waits.
        fcntl(&write, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        // Room for a big import's worth of paths (best effort: the
        // default 64 KiB holds some 900).
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        Ok(Feed {
            read,
            write: std::fs::File::from(write),
            wanted: AtomicBool::new(false),
        })
    }

    /// The read end, for a helper.
    pub fn reader(&self) -> std::io::Result<OwnedFd> {
        let r = self.read.try_clone()?;
        self.wanted.store(true, Relaxed);
        Ok(r)
    }

    /// Send `paths` (relative to the environment), once a helper was
    /// handed the feed. A line is one write of at most `PIPE_BUF` bytes,
    /// so it arrives whole or not at all.
    pub fn send(&self, paths: impl IntoIterator<Item = impl AsRef<Path>>) {
        if !self.wanted.load(Relaxed) {
            return;
        }
        for p in paths {
            let mut line = p.as_ref().as_os_str().as_bytes().to_vec();
            if line.contains(&b'\n') || line.len() >= PIPE_BUF {
                continue;
            }
            line.push(b'\n');
            if (&self.write).write(&line).is_err() {
                // Full: the helpers are behind (or gone) and lose the rest.
                return;
            }
        }
    }
}

/// POSIX's bound on an atomic pipe write (Linux: 4096).
const PIPE_BUF: usize = 4096;

/// The feed's capacity asked for (the unprivileged limit by default).
const PIPE_SIZE: i32 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(fd: OwnedFd) -> Vec<u8> {
        let mut f = std::fs::File::from(fd);
        nix::fcntl::fcntl(
            &f,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut got = Vec::new();
        let _ = f.read_to_end(&mut got);
        got
    }

    #[test]
    fn a_feed_carries_whole_lines_once_a_helper_has_it() {
        let feed = Feed::new().unwrap();
        // Nobody listens yet: nothing is written.
        feed.send(["lib/early.py"]);
        let r = feed.reader().unwrap();
        feed.send(["lib/x.py", "bad\nname.py"]);
        feed.send(["lib/y.py"]);
        assert_eq!(read_all(r), b"lib/x.py\nlib/y.py\n");
    }

    #[test]
    fn a_full_feed_loses_lines_and_never_blocks() {
        let feed = Feed::new().unwrap();
        let r = feed.reader().unwrap();
        let long = "d/".repeat(1000) + "m.py";
        // 2 MiB of lines do not fit a pipe of 1 MiB at most.
        feed.send(std::iter::repeat_n(&long, 1000));
        let got = read_all(r);
        let lines: Vec<&[u8]> = got
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert!(lines.iter().all(|l| *l == long.as_bytes()));
        assert!(
            !lines.is_empty() && lines.len() < 1000,
            "{} lines",
            lines.len()
        );
    }
}
