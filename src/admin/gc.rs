//! `vhrun gc`: reclaim vhrun's own disk space, never anything a live run
//! uses and never the hololib.
//!
//! What vhrun keeps under `$VHRUN_HOME`, and the conventions gc relies on:
//! - `blobs/**/<digest>[.<suffix>]`: decompressed (and relocated) blob
//!   cache entries, named by the digest of their content; temp files while
//!   they are written contain `.tmp` or `.part#`.
//! - `runs/slot-<n>.run`: run slots. A live run holds flock(2) on one for
//!   its whole life, with the path of the catalog it serves written in it;
//!   a slot outlives its run for the next (`crate::sandbox::rundir::Slot`).
//!   Runs that keep their write layer, and warm servers, hold
//!   `runs/<id>/lock` in a directory of their own (overlay upper/work
//!   dirs) the same way; older vhruns wrote `runs/<id>.run` and
//!   `runs/<id>/catalog`.
//! - `servers/<id>/`: the same for a warm server (`crate::lower::server`), next
//!   to its socket, lock and log files (`servers/<key>.*`): the log and
//!   socket of a server gone for longer than N days are removed.
//!
//! - `images/<key>/`: a catalog's kernel image (`crate::lower::image`), whose
//!   `data/` hard-links the cache entries it uses; runs touch its
//!   `image.json`.
//!
//! Removed: run directories and slots older than N days whose lock can be
//! taken (a slot is unlinked while held, and a run that took it then sees
//! its link count 0 and takes another);
//! images unused for N days or whose catalog is gone (unless a live run
//! serves that catalog);
//! cache entries that no catalog of any hololib references, or that were
//! last used (atime/mtime) more than N days ago, unless a live run's
//! catalog references them; temp files untouched for an hour.

use crate::error::{Error, IoContext, Result};
use crate::hololib::{Catalog, Locations};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A temp file not written for this long belongs to a writer that died.
pub const TEMP_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    pub days: u64,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub path: PathBuf,
    pub bytes: u64,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub removed: Vec<Removed>,
    pub bytes: u64,
    /// Runs found alive (their lock is held).
    pub live_runs: usize,
    /// Warm servers found alive (`crate::lower::server`).
    pub live_servers: usize,
    /// Why something was spared wholesale.
    pub notes: Vec<String>,
}

fn age(t: std::io::Result<SystemTime>, now: SystemTime) -> Duration {
    t.ok()
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or(Duration::ZERO)
}

/// Bytes under `p` (not following symlinks).
fn disk_bytes(p: &Path) -> u64 {
    let Ok(md) = p.symlink_metadata() else {
        return 0;
    };
    if md.is_dir() {
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| disk_bytes(&e.path())).sum())
            .unwrap_or(0)
    } else {
        md.len()
    }
}

/// The leading hex digest of a cache entry's name (32 or 64 chars).
pub fn digest_of(name: &str) -> Option<&str> {
    let n = name.bytes().take_while(|b| b.is_ascii_hexdigit()).count();
    let end_ok = name.len() == n || matches!(name.as_bytes()[n], b'.' | b'-' | b'_');
    (matches!(n, 32 | 64) && end_ok).then(|| &name[..n])
}

fn is_temp(name: &str) -> bool {
    name.contains(".tmp") || name.contains(".part#")
}

fn add_digests(catalog: &Catalog, into: &mut HashSet<String>) {
    catalog.walk_files(|_, f, _| {
        into.insert(f.digest.to_ascii_lowercase());
    });
}

/// A live run's catalog, from its lock file (`runs/slot-<n>.run`, `runs/<id>.run`,
/// `runs/<id>/lock`; `runs/<id>/catalog` before vhrun 0.1's in-memory
/// runs): a path, or a key to look up in the hololibs.
fn live_catalog(locations: &Locations, run: &Path) -> Option<(PathBuf, Catalog)> {
    let noted = std::fs::read_to_string(lock_file(run)).unwrap_or_default();
    let text = match noted.trim() {
        "" => std::fs::read_to_string(run.join("catalog")).ok()?,
        _ => noted,
    };
    let text = text.trim();
    let path = if Path::new(text).is_absolute() {
        PathBuf::from(text)
    } else {
        let (lib, key) = locations.find_catalog(text).ok()?;
        lib.catalog_path(&key)
    };
    let catalog = Catalog::load(&path).ok()?;
    Some((path, catalog))
}

enum RunState {
    Live,
    /// Lock taken: safe to remove while the guard is held.
    Dead(Flock<std::fs::File>),
    /// No lock file (yet): a run being set up, or a crash before it.
    Unlocked,
}

/// Mount points in this mount namespace (mountinfo's 5th field, unescaped).
fn mount_points() -> Vec<PathBuf> {
    let Ok(info) =
        crate::sys::mountinfo::read_raw().map(|t| String::from_utf8_lossy(&t).into_owned())
    else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| {
            PathBuf::from(
                p.replace("\\040", " ")
                    .replace("\\011", "\t")
                    .replace("\\012", "\n")
                    .replace("\\134", "\\"),
            )
        })
        .collect()
}

/// A run's lock: the file itself for an in-memory run, `lock` inside a
/// run directory.
fn lock_file(run: &Path) -> PathBuf {
    if run.is_file() {
        run.to_path_buf()
    } else {
        run.join("lock")
    }
}

fn run_state(run: &Path) -> Result<RunState> {
    let lock = lock_file(run);
    // Read-only is enough for flock, and works on another user's lock file.
    let f = match std::fs::File::open(&lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RunState::Unlocked),
        Err(e) => return Err(Error::io(&lock, e)),
    };
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(g) => Ok(RunState::Dead(g)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(RunState::Live),
        Err((_, e)) => Err(Error::io(&lock, e.into())),
    }
}

/// Find (and unless `dry_run`, remove) what is no longer needed.
pub fn collect(locations: &Locations, opts: &GcOptions) -> Result<GcReport> {
    let now = SystemTime::now();
    let max_age = Duration::from_secs(opts.days.saturating_mul(86_400));
    let mut report = GcReport::default();
    // One entry that cannot be removed is reported, not fatal.
    let remove = |report: &mut GcReport, path: &Path, reason: &'static str| -> Result<()> {
        let bytes = disk_bytes(path);
        if !opts.dry_run {
            let done = path.symlink_metadata().at(path).and_then(|md| {
                if md.is_dir() {
                    crate::builder::stage::remove_tree(path)
                } else {
                    std::fs::remove_file(path).at(path)
                }
            });
            if let Err(e) = done {
                report.notes.push(format!("could not remove: {e}"));
                return Ok(());
            }
        }
        report.bytes += bytes;
        report.removed.push(Removed {
            path: path.to_path_buf(),
            bytes,
            reason,
        });
        Ok(())
    };

    // Runs first: they tell which catalogs are in use right now.
    let mut live_digests = HashSet::new();
    let mut live_catalogs = HashSet::new();
    let mut live_unknown = false;
    // Warm servers keep a run directory of their own, with the same lock
    // and catalog note, among their sockets.
    let servers = locations.home.servers();
    let mut entries = Vec::new();
    for dir in [locations.home.runs(), servers.clone()] {
        match std::fs::read_dir(&dir) {
            Ok(rd) => entries.extend(rd.flatten().map(|e| e.path())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    entries.sort();
    let mounts = mount_points();
    for run in entries {
        let in_memory = run.is_file()
            && !run.starts_with(&servers)
            && file_name(&run).ends_with(crate::sandbox::rundir::LOCK_SUFFIX);
        if !in_memory && !run.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
            continue;
        }
        let old = age(run.symlink_metadata().and_then(|m| m.modified()), now) > max_age;
        // Something is mounted inside: deleting would reach into that
        // filesystem. Runs mount in private namespaces, so this is a run
        // set up some other way; leave it.
        if mounts.iter().any(|m| m.starts_with(&run)) {
            report.notes.push(format!(
                "{}: a filesystem is mounted inside; left alone",
                run.display()
            ));
            continue;
        }
        match run_state(&run)? {
            RunState::Live => {
                if run.starts_with(&servers) {
                    report.live_servers += 1;
                } else {
                    report.live_runs += 1;
                }
                match live_catalog(locations, &run) {
                    Some((path, c)) => {
                        add_digests(&c, &mut live_digests);
                        live_catalogs.insert(path);
                    }
                    None => live_unknown = true,
                }
            }
            // Removed while holding its lock: no run can take it meanwhile.
            RunState::Dead(guard) if old => {
                remove(&mut report, &run, "stale run directory")?;
                drop(guard);
            }
            RunState::Unlocked if old => remove(&mut report, &run, "stale run directory")?,
            _ => {}
        }
    }

    // Logs and sockets of servers gone for longer than --days. Their
    // `.lock`/`.spawn` files stay: removing a lock file someone may be
    // about to take could let two servers of one key start.
    if let Ok(rd) = std::fs::read_dir(&servers) {
        let mut files: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files {
            let name = file_name(&path);
            let Some((key, "log" | "sock")) = name.split_once('.') else {
                continue;
            };
            let old = age(path.symlink_metadata().and_then(|m| m.modified()), now) > max_age;
            if old && server_gone(&servers.join(format!("{key}.lock"))) {
                remove(&mut report, &path, "left by a warm server that exited")?;
            }
        }
    }

    // Images before blobs: their data links keep cache entries' space.
    if live_unknown {
        report
            .notes
            .push("a live run does not say which catalog it serves: images are left alone".into());
    } else {
        collect_images(
            locations,
            &live_catalogs,
            max_age,
            now,
            &mut report,
            &remove,
        )?;
    }

    let blobs = locations.home.blobs();
    if !blobs.is_dir() {
        return Ok(report);
    }
    if live_unknown {
        report.notes.push(
            "a live run does not say which catalog it serves: the blob cache is left alone".into(),
        );
        return Ok(report);
    }
    let mut referenced = HashSet::new();
    let mut referenced_complete = true;
    for lib in locations.hololibs() {
        for key in lib.catalogs() {
            match Catalog::load(&lib.catalog_path(&key)) {
                Ok(c) => add_digests(&c, &mut referenced),
                Err(e) => {
                    referenced_complete = false;
                    report
                        .notes
                        .push(format!("{e}: cache entries are only removed by age"));
                }
            }
        }
    }
    let mut files = Vec::new();
    walk_files(&blobs, &mut files)?;
    files.sort();
    for path in files {
        let name = file_name(&path);
        let Ok(md) = path.symlink_metadata() else {
            continue;
        };
        if is_temp(&name) {
            if age(md.modified(), now) > TEMP_GRACE {
                remove(&mut report, &path, "stale temp file")?;
            }
            continue;
        }
        // Not a cache entry vhrun wrote: not gc's to judge.
        let Some(digest) = digest_of(&name) else {
            continue;
        };
        let digest = digest.to_ascii_lowercase();
        if live_digests.contains(&digest) {
            continue;
        }
        let last_use = age(md.accessed(), now).min(age(md.modified(), now));
        if referenced_complete && !referenced.contains(&digest) {
            remove(&mut report, &path, "no catalog references it")?;
        } else if last_use > max_age {
            remove(&mut report, &path, "unused for longer than --days")?;
        }
    }
    if !opts.dry_run {
        prune_empty_dirs(&blobs, true);
    }
    Ok(report)
}

/// Kernel images (`crate::lower::image`) whose catalog is gone, or that no run
/// used for longer than --days (runs touch `image.json`), unless a live
/// run serves their catalog; builders' temp directories after an hour.
fn collect_images(
    locations: &Locations,
    live: &HashSet<PathBuf>,
    max_age: Duration,
    now: SystemTime,
    report: &mut GcReport,
    remove: &dyn Fn(&mut GcReport, &Path, &'static str) -> Result<()>,
) -> Result<()> {
    let dir = locations.home.images();
    let mut entries: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    entries.sort();
    for path in entries {
        let Ok(md) = path.symlink_metadata() else {
            continue;
        };
        let name = file_name(&path);
        if is_temp(&name) {
            if age(md.modified(), now) > TEMP_GRACE {
                remove(report, &path, "stale temp file")?;
            }
            continue;
        }
        let Some(meta) = crate::lower::image::Meta::load(&path) else {
            continue;
        };
        if live.contains(&meta.catalog) {
            continue;
        }
        let used = age(
            path.join("image.json")
                .symlink_metadata()
                .and_then(|m| m.modified()),
            now,
        );
        if !meta.catalog.is_file() {
            remove(report, &path, "image of a catalog that is gone")?;
        } else if used > max_age {
            remove(report, &path, "image unused for longer than --days")?;
        }
    }
    Ok(())
}

/// The last component of `path`, lossily as text ("" for none).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Nobody holds a server key's lock (or it does not exist).
fn server_gone(lock: &Path) -> bool {
    match std::fs::File::open(lock) {
        Ok(f) => Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let ft = e.file_type().at(e.path())?;
        if ft.is_dir() {
            walk_files(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

/// Remove empty directories below `dir` (not `dir` itself when `keep`).
fn prune_empty_dirs(dir: &Path, keep: bool) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                prune_empty_dirs(&e.path(), false);
            }
        }
    }
    if !keep {
        let _ = std::fs::remove_dir(dir); // fails, as wanted, when not empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names() {
        let d64 = "a".repeat(64);
        assert_eq!(digest_of(&d64), Some(d64.as_str()));
        let relocated = format!("{d64}.59acff1_1a2b3c4_5d6e7f80");
        assert_eq!(digest_of(&relocated), Some(d64.as_str()));
        assert_eq!(digest_of(&"b".repeat(32)), Some("b".repeat(32).as_str()));
        assert_eq!(digest_of("abc"), None);
        assert_eq!(digest_of(&format!("{d64}x")), None);
        assert!(is_temp(&format!("{d64}.part#3")));
        assert!(is_temp(".x.tmp123"));
    }
}
