//! Copy mode: the environment restored into the space directory itself, as
//! rcc does, on a machine that refuses FUSE, namespaces or overlayfs.
//!
//! The space is where a virtual run would mount it (`dirname(catalog
//! path)/<space name>`, rcc's own space), relocated the same way, so the
//! task sees the same paths and variables. Before every run vhrun checks
//! the space against the catalog and repairs what differs, so each run
//! starts from the catalog's exact content, as rcc guarantees:
//!
//! - rcc decides per file by name, size and Go mode, plus the digest its
//!   `<space>.meta` recorded for the path (htfs `RestoreDirectory`,
//!   `File.Match`): a file a task rewrote with the same size and mode
//!   stays as the task left it. vhrun also demands the restore's mtime
//!   (rcc's `motherTime`, 1610000000) and a ctime older than the moment
//!   the space was last found clean ([`Stamp`], `<space>.vhrun`): ctime
//!   moves on every write, chmod, rename or link and no unprivileged
//!   process can set it back, so any change since is seen without reading
//!   a byte of content.
//! - entries the catalog does not have are removed, missing ones restored,
//!   symlinks with another text relinked (as rcc).
//! - a space without a stamp for this catalog (new, restored by rcc, or
//!   holding another blueprint) has every file rewritten once.
//!
//! Locking: rcc's `<space>.lck`, shared during the check and the task,
//! exclusive during a repair ([`SpaceLock`]). After a restore vhrun writes
//! rcc's `<space>.meta`, so rcc sees what the space holds.
//!
//! Differences from rcc, on purpose: setuid/setgid bits are not restored
//! (the virtual tree never serves them either), and directories keep the
//! restore's mtime after a repair (as the virtual tree shows them).

use crate::error::{Error, IoContext, Result};
use crate::hololib::lock::SpaceLock;
use crate::hololib::{restore, Catalog, File, Hololib};
use crate::paths::{mkdir_all, write_atomic};
use crate::tree::{Kind, NodeRef, Tree, MTIME, ROOT};
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a copy-mode run restores, and where.
#[derive(Debug, Clone, Copy)]
pub struct CopySource<'a> {
    pub hololib: &'a Hololib,
    pub tree: &'a Tree,
    /// The space directory (rcc's space path).
    pub space: &'a Path,
    /// Its basename, written at the catalog's relocation offsets.
    pub target_name: &'a str,
    /// rcc's controller and space, recorded in `<space>.meta`.
    pub controller: &'a str,
    pub space_label: &'a str,
}

/// What the space needed before this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpaceState {
    /// Restored whole: it was new, or not known to hold this catalog.
    #[default]
    Restored,
    /// Found exactly as the catalog has it.
    Reused,
    /// Something had changed; the differences were restored.
    Repaired,
}

/// A copy-mode space's share of a run, for `--stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    pub state: SpaceState,
    /// Regular files of the catalog, and how many were kept as found.
    pub files: u64,
    pub reused: u64,
    /// Files written because they were missing (or not known good).
    pub restored: u64,
    /// Files rewritten because they had changed.
    pub repaired: u64,
    /// Entries the catalog does not have, removed.
    pub removed: u64,
    /// Symlinks (re)made.
    pub relinked: u64,
    /// Content bytes written.
    pub bytes: u64,
    /// Checking the space against the catalog (the walk), and the whole
    /// preparation (lock, check, repair).
    pub check: Duration,
    pub total: Duration,
}

/// A prepared space: the lock is held (shared) until this is dropped,
/// after the task.
pub struct CopiedSpace {
    _lock: SpaceLock,
    pub report: CopyReport,
}

/// `<space>.vhrun`: the catalog the space held when vhrun last found it
/// clean, and a time no file's ctime had reached then.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub catalog: PathBuf,
    /// `Tree::fingerprint` of that catalog, hex.
    pub fingerprint: String,
    /// (seconds, nanoseconds): every file written before the stamp has an
    /// older ctime; anything changed later has this one or a newer one.
    pub clean_before: (i64, i64),
}

fn sibling(space: &Path, ext: &str) -> PathBuf {
    let mut s = space.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

impl Stamp {
    pub fn path(space: &Path) -> PathBuf {
        sibling(space, ".vhrun")
    }

    /// The stamp, if it is for this catalog.
    fn load(space: &Path, tree: &Tree) -> Option<Stamp> {
        let raw = std::fs::read(Self::path(space)).ok()?;
        let stamp: Stamp = serde_json::from_slice(&raw).ok()?;
        (stamp.fingerprint == fingerprint(tree)).then_some(stamp)
    }

    fn save(&self, space: &Path) -> Result<()> {
        let json =
            serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(format!("stamp: {e}")))?;
        write_atomic(&Self::path(space), &json, 0o644)
    }
}

fn fingerprint(tree: &Tree) -> String {
    format!("{:016x}", tree.fingerprint())
}

/// Make `src.space` hold exactly the catalog, and hold its lock (shared)
/// for the task.
pub fn prepare(src: &CopySource) -> Result<CopiedSpace> {
    let _s = tracing::info_span!("copy.prepare", space = %src.space.display()).entered();
    let started = Instant::now();
    let mut lock = SpaceLock::shared(&sibling(src.space, ".lck"))?;
    let mut report = CopyReport {
        files: src.tree.totals().0,
        ..CopyReport::default()
    };
    let stamp = Stamp::load(src.space, src.tree);
    let (fixes, check) = timed_scan(src, stamp.as_ref())?;
    report.check = check;
    if fixes.is_empty() {
        report.state = SpaceState::Reused;
        report.reused = report.files;
        report.total = started.elapsed();
        tracing::info!(
            "space {} unchanged: reused (checked in {:.1} ms)",
            src.space.display(),
            check.as_secs_f64() * 1e3
        );
        append_use(src.space);
        return Ok(CopiedSpace {
            _lock: lock,
            report,
        });
    }
    lock.exclusive()?;
    // Whoever held the lock before may have repaired it, or changed it.
    let stamp = Stamp::load(src.space, src.tree);
    let (fixes, _) = timed_scan(src, stamp.as_ref())?;
    report.state = if stamp.is_none() {
        SpaceState::Restored
    } else if fixes.is_empty() {
        SpaceState::Reused
    } else {
        SpaceState::Repaired
    };
    if !fixes.is_empty() {
        let _s = tracing::info_span!("copy.repair", fixes = fixes.len()).entered();
        apply(src, &fixes, &mut report)?;
        let clean_before = tick_past_writes(src.space)?;
        if stamp.is_none() {
            let catalog = Catalog::load(src.tree.catalog_path())?;
            restore::write_meta(&catalog, src.space, src.controller, src.space_label)?;
        }
        Stamp {
            catalog: src.tree.catalog_path().to_path_buf(),
            fingerprint: fingerprint(src.tree),
            clean_before,
        }
        .save(src.space)?;
    }
    report.reused = report
        .files
        .saturating_sub(report.restored + report.repaired);
    lock.share()?;
    report.total = started.elapsed();
    tracing::info!(
        "space {} {:?}: {} files restored, {} repaired, {} removed, {} bytes, in {:.1} ms",
        src.space.display(),
        report.state,
        report.restored,
        report.repaired,
        report.removed,
        report.bytes,
        report.total.as_secs_f64() * 1e3
    );
    append_use(src.space);
    Ok(CopiedSpace {
        _lock: lock,
        report,
    })
}

/// rcc counts every use of a space with one byte in `<space>.use`
/// (`holotree list` shows it).
fn append_use(space: &Path) {
    use std::io::Write;
    let path = sibling(space, ".use");
    let r = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| f.write_all(b"."));
    if let Err(e) = r {
        tracing::debug!("{}: {e}", path.display());
    }
}

/// What the space needs to match the catalog.
#[derive(Debug)]
enum Fix {
    /// An entry the catalog does not have (or of the wrong type).
    Remove(PathBuf),
    /// A directory to make; everything below it follows as fixes.
    Dir(PathBuf),
    /// A file to write: missing, or `changed`.
    File {
        ino: u64,
        path: PathBuf,
        changed: bool,
    },
    Link {
        ino: u64,
        path: PathBuf,
    },
}

fn timed_scan(src: &CopySource, stamp: Option<&Stamp>) -> Result<(Vec<Fix>, Duration)> {
    let _s = tracing::info_span!("copy.check").entered();
    let t = Instant::now();
    let fixes = scan_space(src.tree, src.space, stamp.map(|s| s.clean_before))?;
    Ok((fixes, t.elapsed()))
}

/// Walk the space against the tree. Reads directories and inodes only.
fn scan_space(tree: &Tree, space: &Path, clean_before: Option<(i64, i64)>) -> Result<Vec<Fix>> {
    let root = tree
        .get(ROOT)
        .ok_or_else(|| Error::catalog(tree.catalog_path(), "empty tree"))?;
    let mut fixes = Vec::new();
    match std::fs::symlink_metadata(space) {
        Ok(m) if m.is_dir() => fixes = scan_dir(tree, root, space, clean_before)?,
        Ok(_) => {
            fixes.push(Fix::Remove(space.to_path_buf()));
            missing(tree, root, space, &mut fixes);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            missing(tree, root, space, &mut fixes)
        }
        Err(e) => return Err(Error::io(space, e)),
    }
    Ok(fixes)
}

fn scan_dir(
    tree: &Tree,
    dir: NodeRef,
    path: &Path,
    clean_before: Option<(i64, i64)>,
) -> Result<Vec<Fix>> {
    let kids = dir.children();
    let mut seen = vec![false; (kids.end - kids.start) as usize];
    let mut fixes = Vec::new();
    let mut subdirs = Vec::new();
    for entry in std::fs::read_dir(path).at(path)? {
        let entry = entry.at(path)?;
        let name = entry.file_name();
        let full = path.join(&name);
        let Some(node) = tree.lookup(dir.ino(), name.as_bytes()) else {
            fixes.push(Fix::Remove(full));
            continue;
        };
        seen[(node.ino() - kids.start) as usize] = true;
        let ft = entry.file_type().at(&full)?;
        match node.kind() {
            Kind::Dir if ft.is_dir() => subdirs.push((node, full)),
            Kind::Dir => {
                fixes.push(Fix::Remove(full.clone()));
                missing(tree, node, &full, &mut fixes);
            }
            Kind::Symlink => {
                let same = ft.is_symlink()
                    && std::fs::read_link(&full)
                        .is_ok_and(|t| Some(t.as_os_str().as_bytes()) == node.symlink_target());
                if !same {
                    fixes.push(Fix::Link {
                        ino: node.ino(),
                        path: full,
                    });
                }
            }
            Kind::File if ft.is_file() => {
                // fstatat on the directory's descriptor: no path walk per file.
                let m = entry.metadata().at(&full)?;
                if !unchanged(&m, node, clean_before) {
                    fixes.push(Fix::File {
                        ino: node.ino(),
                        path: full,
                        changed: clean_before.is_some(),
                    });
                }
            }
            Kind::File => {
                fixes.push(Fix::Remove(full.clone()));
                fixes.push(Fix::File {
                    ino: node.ino(),
                    path: full,
                    changed: true,
                });
            }
        }
    }
    for (i, was_seen) in seen.iter().enumerate() {
        if !was_seen {
            if let Some(node) = tree.get(kids.start + i as u64) {
                missing(
                    tree,
                    node,
                    &path.join(OsStr::from_bytes(node.name())),
                    &mut fixes,
                );
            }
        }
    }
    let below = subdirs
        .par_iter()
        .map(|(node, full)| scan_dir(tree, *node, full, clean_before))
        .collect::<Result<Vec<_>>>()?;
    fixes.extend(below.into_iter().flatten());
    Ok(fixes)
}

/// A file is as restored if nothing touched it since the space was last
/// found clean: same type, size, permissions, the restore's mtime, and a
/// ctime from before the stamp.
fn unchanged(m: &std::fs::Metadata, node: NodeRef, clean_before: Option<(i64, i64)>) -> bool {
    let Some(stamp) = clean_before else {
        return false;
    };
    m.file_type().is_file()
        && m.len() == node.size()
        && (m.mode() & 0o7777) == u32::from(node.perm())
        && m.mtime() == MTIME as i64
        && m.mtime_nsec() == 0
        && (m.ctime(), m.ctime_nsec()) < stamp
}

/// `node` (at `path`) and everything below it is missing.
fn missing(tree: &Tree, node: NodeRef, path: &Path, fixes: &mut Vec<Fix>) {
    match node.kind() {
        Kind::Dir => {
            fixes.push(Fix::Dir(path.to_path_buf()));
            for ino in node.children() {
                if let Some(kid) = tree.get(ino) {
                    missing(tree, kid, &path.join(OsStr::from_bytes(kid.name())), fixes);
                }
            }
        }
        Kind::File => fixes.push(Fix::File {
            ino: node.ino(),
            path: path.to_path_buf(),
            changed: false,
        }),
        Kind::Symlink => fixes.push(Fix::Link {
            ino: node.ino(),
            path: path.to_path_buf(),
        }),
    }
}

/// Remove, make directories, write files and links, in that order; then
/// give every directory that changed the restore's mtime again.
fn apply(src: &CopySource, fixes: &[Fix], report: &mut CopyReport) -> Result<()> {
    let mut touched_dirs = BTreeSet::new();
    let note_parent = |dirs: &mut BTreeSet<PathBuf>, p: &Path| {
        if let Some(parent) = p.parent() {
            dirs.insert(parent.to_path_buf());
        }
    };
    for fix in fixes {
        if let Fix::Remove(p) = fix {
            let m = match std::fs::symlink_metadata(p) {
                Ok(m) => m,
                // Gone since the check (a process outside vhrun's lock).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(p, e)),
            };
            if m.is_dir() {
                std::fs::remove_dir_all(p).at(p)?;
            } else {
                std::fs::remove_file(p).at(p)?;
            }
            report.removed += 1;
            note_parent(&mut touched_dirs, p);
        }
    }
    for fix in fixes {
        if let Fix::Dir(p) = fix {
            mkdir_all(p, 0o750)?;
            touched_dirs.insert(p.clone());
            note_parent(&mut touched_dirs, p);
        }
    }
    let files: Vec<(&Path, File, bool)> = fixes
        .iter()
        .filter_map(|f| match f {
            Fix::File { ino, path, changed } => {
                Some((path.as_path(), catalog_file(src.tree, *ino)?, *changed))
            }
            _ => None,
        })
        .collect();
    let lib = src.hololib;
    let name = src.target_name.as_bytes();
    let written = files
        .par_iter()
        .map(|(path, f, changed)| {
            restore::drop_file(lib, path, f, name, restore::IN_MEMORY_LIMIT)
                .map(|(bytes, _)| (bytes, *changed))
        })
        .collect::<Result<Vec<_>>>()?;
    for ((path, _, _), (bytes, changed)) in files.iter().zip(written) {
        report.bytes += bytes;
        if changed {
            report.repaired += 1;
        } else {
            report.restored += 1;
        }
        note_parent(&mut touched_dirs, path);
    }
    for fix in fixes {
        if let Fix::Link { ino, path } = fix {
            let text = src
                .tree
                .get(*ino)
                .and_then(|n| n.symlink_target())
                .unwrap_or_default();
            restore::restore_symlink(&String::from_utf8_lossy(text), path)?;
            report.relinked += 1;
            note_parent(&mut touched_dirs, path);
        }
    }
    for dir in touched_dirs.iter().rev() {
        if dir.starts_with(src.space) {
            restore::set_dir_times(dir)?;
        }
    }
    Ok(())
}

/// The catalog entry a restore writes for file `ino` (permissions as the
/// tree serves them).
fn catalog_file(tree: &Tree, ino: u64) -> Option<File> {
    let n = tree.get(ino)?;
    Some(File {
        name: String::from_utf8_lossy(n.name()).into_owned(),
        size: n.size() as i64,
        mode: u32::from(n.perm()),
        digest: n.digest()?.to_string(),
        rewrite: n.rewrite().iter().map(|&o| o as i64).collect(),
        ..File::default()
    })
}

/// A ctime no file written so far has, and every later change will reach:
/// the filesystem's clock (coarse, a few ms per tick) read from a probe
/// file beside the space until it moves past what the last write got.
fn tick_past_writes(space: &Path) -> Result<(i64, i64)> {
    let probe = sibling(space, ".vhrun.tick");
    let touch = || -> Result<(i64, i64)> {
        std::fs::write(&probe, b"").at(&probe)?;
        let m = std::fs::symlink_metadata(&probe).at(&probe)?;
        Ok((m.ctime(), m.ctime_nsec()))
    };
    let first = touch()?;
    let deadline = Instant::now() + Duration::from_millis(100);
    let mut now = touch()?;
    while now <= first && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(500));
        now = touch()?;
    }
    let _ = std::fs::remove_file(&probe);
    Ok(now)
}
