//! The working set of a run: every name the kernel looked up (found or
//! not), every directory it listed and every file whose content it asked
//! for, recorded by the server, saved when the mount ends, and replayed
//! against the next fresh mount of the same catalog before the task
//! starts. The contents are kept apart, in the order they were first
//! asked for: a directory read (`readdirplus`) gives the kernel its
//! entries without a lookup each, so most files a program imports are
//! never looked up by name, and the blobs to decode ahead are these.
//!
//! A fresh mount starts with empty dentry and page caches, so a run pays one
//! round trip per distinct path it touches (an import-heavy task: ~400
//! lookups, a third of them misses, and ~150 directory reads). Replaying the
//! previous run's set from several threads warms those caches in a few ms,
//! in parallel, before the task's own single-threaded walk needs them. The
//! kernel sends each lookup once per mount, so recording is a push per
//! distinct name, not per `stat`.

use crate::error::Result;
use crate::home::Home;
use crate::tree::summary::Facts;
use crate::tree::Tree;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest set kept (a `find` over the whole tree should not be replayed).
const MAX_ENTRIES: usize = 20_000;

#[derive(Debug, Default)]
pub(crate) struct Recorder {
    lookups: Mutex<Vec<(u64, Box<[u8]>)>>,
    listed: Mutex<Vec<u64>>,
    contents: Mutex<Vec<u64>>,
}

impl Recorder {
    pub fn lookup(&self, parent: u64, name: &[u8]) {
        let mut v = self.lookups.lock().unwrap();
        if v.len() < MAX_ENTRIES {
            v.push((parent, name.into()));
        }
    }

    pub fn listed(&self, dir: u64) {
        let mut v = self.listed.lock().unwrap();
        if v.len() < MAX_ENTRIES {
            v.push(dir);
        }
    }

    /// A file's content was asked for (its inode).
    pub fn content(&self, ino: u64) {
        let mut v = self.contents.lock().unwrap();
        if v.len() < MAX_ENTRIES {
            v.push(ino);
        }
    }

    pub fn snapshot(&self, tree: &Tree) -> WorkingSet {
        let mut lookups: Vec<PathBuf> = self
            .lookups
            .lock()
            .unwrap()
            .iter()
            .map(|(p, n)| tree.path(*p).join(OsStr::from_bytes(n)))
            .collect();
        let mut dirs: Vec<PathBuf> = self
            .listed
            .lock()
            .unwrap()
            .iter()
            .map(|&d| tree.path(d))
            .collect();
        lookups.sort();
        lookups.dedup();
        dirs.sort();
        dirs.dedup();
        let mut contents = Vec::new();
        first_of_each(
            &mut contents,
            self.contents.lock().unwrap().iter().map(|&i| tree.path(i)),
        );
        WorkingSet {
            lookups,
            dirs,
            contents,
        }
    }
}

/// Append the paths of `new` that `into` lacks, in their order.
fn first_of_each(into: &mut Vec<PathBuf>, new: impl IntoIterator<Item = PathBuf>) {
    let mut seen: std::collections::HashSet<PathBuf> = into.iter().cloned().collect();
    for p in new {
        if into.len() >= MAX_ENTRIES {
            break;
        }
        if seen.insert(p.clone()) {
            into.push(p);
        }
    }
}

/// Paths relative to the mount point.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkingSet {
    /// Names looked up (existing or not).
    pub lookups: Vec<PathBuf>,
    /// Directories listed.
    pub dirs: Vec<PathBuf>,
    /// Files whose content was asked for, first asked first.
    pub contents: Vec<PathBuf>,
}

/// What a prefetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefetched {
    pub paths: usize,
    pub dirs: usize,
    pub elapsed: Duration,
}

impl WorkingSet {
    pub fn is_empty(&self) -> bool {
        self.lookups.is_empty() && self.dirs.is_empty() && self.contents.is_empty()
    }

    /// Where the set of a catalog is kept: `<home>/workset/<catalog file name>`.
    pub fn path_for(home: &Home, tree: &impl Facts) -> PathBuf {
        let name = tree
            .catalog_path()
            .file_name()
            .unwrap_or_else(|| OsStr::new("catalog"));
        home.worksets().join(name)
    }

    /// The set of one command line on a catalog:
    /// `<home>/workset/<catalog file name>.<16 hex of the commands>`.
    /// Different commands touch different files: a `true` must not pay for
    /// replaying the thousand paths an import touched (~10 ms), nor a
    /// `python -c pass` for a robot's whole working set.
    pub fn path_for_commands<S: AsRef<OsStr>>(
        home: &Home,
        tree: &impl Facts,
        commands: &[Vec<S>],
    ) -> PathBuf {
        let mut key = Vec::new();
        for argv in commands {
            for a in argv {
                key.extend_from_slice(a.as_ref().as_bytes());
                key.push(0);
            }
            key.push(b'\n');
        }
        let mut p = Self::path_for(home, tree).into_os_string();
        p.push(".");
        p.push(crate::digest::textual(crate::digest::sipit(&key), 0));
        PathBuf::from(p)
    }

    /// NUL-separated records `L<path>` / `D<path>` / `C<path>` (names may
    /// hold newlines).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (tag, list) in [
            (b'L', &self.lookups),
            (b'D', &self.dirs),
            (b'C', &self.contents),
        ] {
            for p in list {
                out.push(tag);
                out.extend_from_slice(p.as_os_str().as_bytes());
                out.push(0);
            }
        }
        out
    }

    /// Parse `to_bytes` output; anything that is not a plain relative path
    /// is dropped (a damaged file only costs prefetching).
    pub fn from_bytes(buf: &[u8]) -> WorkingSet {
        let mut ws = WorkingSet::default();
        for rec in buf.split(|&b| b == 0) {
            let Some((&tag, path)) = rec.split_first() else {
                continue;
            };
            let p = PathBuf::from(OsStr::from_bytes(path));
            let plain = p
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            match tag {
                b'L' if plain && !path.is_empty() => ws.lookups.push(p),
                b'D' if plain => ws.dirs.push(p),
                b'C' if plain && !path.is_empty() => ws.contents.push(p),
                _ => {}
            }
        }
        ws
    }

    /// Add `other`'s paths (a run that touched little must not shrink the
    /// set a heavier run recorded), keeping at most `MAX_ENTRIES` of each.
    pub fn merge(&mut self, other: WorkingSet) {
        for (mine, theirs) in [
            (&mut self.lookups, other.lookups),
            (&mut self.dirs, other.dirs),
        ] {
            mine.extend(theirs);
            mine.sort();
            mine.dedup();
            mine.truncate(MAX_ENTRIES);
        }
        first_of_each(&mut self.contents, other.contents);
    }

    /// The files to decode ahead, in the order they are likely needed:
    /// the contents asked for, then any other file looked up.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        let contents: std::collections::HashSet<&PathBuf> = self.contents.iter().collect();
        self.contents
            .iter()
            .chain(self.lookups.iter().filter(move |p| !contents.contains(p)))
    }

    /// Remember what a run or mount touched, added to what was recorded
    /// before, so the next cold tree is replayed warm. Nothing is written
    /// when it adds nothing new.
    pub fn record(self, previous: Option<&WorkingSet>, path: &Path) {
        let mut ws = previous.cloned().unwrap_or_default();
        ws.merge(self);
        if ws.is_empty() || previous == Some(&ws) {
            return;
        }
        if let Err(e) = ws.save(path) {
            tracing::debug!("working set not saved: {e}");
        }
    }

    pub fn load(path: &Path) -> Option<WorkingSet> {
        std::fs::read(path).ok().map(|b| WorkingSet::from_bytes(&b))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            crate::paths::mkdir_all(dir, 0o750)?;
        }
        crate::paths::write_atomic(path, &self.to_bytes(), 0o666)
    }

    /// Stat every path and list every directory under `mountpoint` from
    /// `threads` threads, so the kernel caches the answers.
    pub fn prefetch(&self, mountpoint: &Path, threads: usize) -> Prefetched {
        let t0 = Instant::now();
        let threads = threads.clamp(1, 16);
        std::thread::scope(|s| {
            for t in 0..threads {
                s.spawn(move || {
                    for p in self.dirs.iter().skip(t).step_by(threads) {
                        if let Ok(rd) = std::fs::read_dir(mountpoint.join(p)) {
                            rd.for_each(drop);
                        }
                    }
                    for p in self.lookups.iter().skip(t).step_by(threads) {
                        let _ = std::fs::symlink_metadata(mountpoint.join(p));
                    }
                });
            }
        });
        Prefetched {
            paths: self.lookups.len(),
            dirs: self.dirs.len(),
            elapsed: t0.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_hostile_records() {
        let ws = WorkingSet {
            lookups: vec!["a/b".into(), "new\nline".into()],
            dirs: vec!["".into(), "lib".into()],
            contents: vec!["z/first".into(), "a/b".into()],
        };
        assert_eq!(WorkingSet::from_bytes(&ws.to_bytes()), ws);
        let bad = WorkingSet::from_bytes(b"L../etc\0L/abs\0Lok\0Xzz\0D\0C../x\0Cm/later\0");
        assert_eq!(bad.lookups, vec![PathBuf::from("ok")]);
        assert_eq!(bad.dirs, vec![PathBuf::from("")]);
        assert_eq!(bad.contents, vec![PathBuf::from("m/later")]);
        let mut m = ws.clone();
        m.merge(bad);
        // Contents keep the order they were first asked in; files() puts
        // them before the other names looked up.
        assert_eq!(m.contents, ["z/first", "a/b", "m/later"].map(PathBuf::from));
        let files: Vec<&PathBuf> = m.files().collect();
        assert_eq!(files[..3], [&m.contents[0], &m.contents[1], &m.contents[2]]);
        assert_eq!(files.len(), 5, "{files:?}");
        let t = Tree::from_catalog(&Default::default(), Path::new("/lib/catalog/k")).unwrap();
        let one = WorkingSet::path_for_commands(&Home::new("/h"), &t, &[vec!["true"]]);
        let two = WorkingSet::path_for_commands(&Home::new("/h"), &t, &[vec!["tr", "ue"]]);
        assert!(
            one.starts_with("/h/workset") && one != two,
            "{one:?} {two:?}"
        );
        assert!(
            one.to_string_lossy().starts_with("/h/workset/k."),
            "{one:?}"
        );
        assert_eq!(m.lookups.len(), 3);
        assert_eq!(m.dirs, ws.dirs);
    }
}
