//! What a run cost, for `--stats` (a summary on stderr after the task) and
//! `--stats-json FILE` (the same as JSON, for CI dashboards).
//!
//! Nothing here runs while the task does: the FUSE server and the blob
//! cache only bump relaxed atomic counters (`fuse::Stats`,
//! `blobcache::CacheStats`); this module reads them once the task has
//! ended, adds the timings the sandbox noted and the size of the overlay's
//! write layer (measured only when asked), and renders them.
//!
//! # JSON keys (schema 1)
//!
//! Stable: keys are only ever added, and a change of meaning bumps
//! `schema`. Times are milliseconds (floats), sizes bytes. docs/stats.md
//! has the same list with examples.
//!
//! | key | meaning |
//! | --- | --- |
//! | `schema` | `1` |
//! | `vhrun_version` | vhrun's version |
//! | `catalog` | catalog file name served (`<blueprint>v12.<platform>`) |
//! | `environment` | where the environment appeared (the space path) |
//! | `exit_code` | what vhrun exits with for this run (the task's code) |
//! | `time_ms.activation` | vhrun's start to the task's exec (`null` if it never ran) |
//! | `time_ms.task` | the task's exec to its end (`null` if it never ran) |
//! | `time_ms.teardown` | the task's end to the stats (unmounts, overlay measure) |
//! | `time_ms.total` | vhrun's start to the stats |
//! | `files.total` / `files.opened` | regular files in the catalog / distinct files the run opened |
//! | `bytes.total` / `bytes.opened` | their total size / the size of the opened ones |
//! | `blobs.decompressed` | blobs decoded into the blob cache by this run (relocated ones included) |
//! | `blobs.relocated` | of those, files relocated for this environment path |
//! | `blobs.from_cache` | opens served by an existing blob-cache entry |
//! | `blobs.raw` | opens of uncompressed blobs served from the hololib itself |
//! | `blobs.raw_verified` | raw blobs whose digest was checked (first open per run) |
//! | `blobs.cache_bytes_written` | bytes written into the blob cache |
//! | `blobs.failures` | blobs that could not be served (missing, corrupt) |
//! | `overlay.files` / `.dirs` / `.symlinks` | entries the run created or changed in the environment |
//! | `overlay.whiteouts` | entries of the environment the run deleted |
//! | `overlay.bytes` | size of the regular files written |
//! | `overlay.disk_bytes` | disk space the write layer took |
//! | `overlay.kept` | `--keep-overlay` directory, or `null` |
//! | `fuse.read_mode` | `passthrough` (the kernel reads cache files), `served` (vhrun answers reads) or `unknown` |
//! | `fuse.requests` | FUSE requests answered, all kinds |
//! | `fuse.lookup`, `lookup_negative`, `getattr`, `readlink`, `open`, `open_passthrough`, `opendir`, `readdir`, `readdirplus`, `read`, `release`, `flush`, `statfs`, `access`, `rejected_writes` | requests by kind (`lookup_negative` and `open_passthrough` are subsets) |
//! | `fuse.bytes_read` | bytes vhrun returned to READ requests (0 under passthrough) |
//! | `fuse.eio` | requests answered EIO |
//! | `server` | the warm server that served the tree (`null`: mounted for this run only) |
//! | `server.pid` | its process id |
//! | `server.runs_before` | runs it served before this one (`0`: started for this run, cold caches) |
//! | `server.takeovers` | times a new server took the tree's connection over during the run (it died or was upgraded; the run's files stayed, the `fuse` and `blobs` figures restarted) |
//! | `image` | the EROFS image directory that gave the tree (`null`: FUSE); with an image the kernel serves everything, so `fuse`, `files.opened`, `bytes.opened` and `blobs` are 0 |
//! | `mode` | `virtual` (image, server or FUSE) or `copy` (the task ran in a restored copy; `fuse`, `blobs`, `overlay`, `files.opened` and `bytes.opened` are 0) |
//! | `copy` | copy mode's work on the space before the task (`null` in virtual mode) |
//! | `copy.state` | `restored` (written whole: new, or not known to hold this catalog), `reused` (found unchanged) or `repaired` |
//! | `copy.reused` / `.restored` / `.repaired` | files kept as found / written because missing / rewritten because changed |
//! | `copy.removed` / `.relinked` | entries the catalog does not have, removed / symlinks (re)made |
//! | `copy.bytes_written` | content bytes written into the space |
//! | `copy.check_ms` / `.prepare_ms` | checking the space against the catalog / lock, check and repair |
//! | `copy.refused` | why an `auto` run used a copy: `dev_fuse`, `user_namespace`, `mount_namespace`, `fuse_mount`, `overlay`; `null` for `--mode copy` |
//! | `remote` | what a lazily served tree fetched from its rccremote origin for this run (`null`: not served lazily) |
//! | `remote.origin` | the origin's URL |
//! | `remote.requests` / `.blobs` / `.bytes` | `/delta` requests made (the catalog's included), blobs placed into the hololib, bytes downloaded |
//! | `remote.wait_ms` | time spent waiting on the network (the catalog's fetch, the working set's, and opens that waited for a fetch) |
//! | `remote.failures` | fetches that failed (each an EIO for the file that needed it) |
//! | `remote.ahead` | of `blobs`, those fetched ahead of any open, for the packages the opened modules import |
//! | `remote.compiled` | modules compiled to bytecode ahead of the task, beside it (`remote::compile`) |
//!
//! With a warm server, the `fuse`, `files.opened`, `bytes.opened` and
//! `blobs` figures are what the server did while the run was connected:
//! what earlier runs left in the kernel's caches costs no request, and
//! runs at the same time count in each other's figures.

use crate::error::{Error, Refusal, Result};
use crate::lower::copy::SpaceState;
use crate::lower::fuse::ReadMode;
use crate::lower::server::ServerInfo as Server;
use crate::lower::Report;
use crate::remote::lazy::RemoteStats;
use crate::sandbox::overlay::UpperUsage;
use crate::sandbox::RunOutcome;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// The JSON schema version.
pub const SCHEMA: u32 = 1;

static START: OnceLock<Instant> = OnceLock::new();

/// Note the process start (`main` calls it first thing), so activation
/// counts robot.yaml parsing and resolving too.
pub fn mark_start() {
    START.get_or_init(Instant::now);
}

/// The instant marked by [`mark_start`], or now if it was never called
/// (a library caller: times then start at the run).
pub fn started() -> Instant {
    *START.get_or_init(Instant::now)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStats {
    pub schema: u32,
    pub vhrun_version: String,
    pub catalog: String,
    pub environment: PathBuf,
    pub exit_code: i32,
    pub time_ms: Times,
    pub files: Share,
    pub bytes: Share,
    pub blobs: Blobs,
    pub overlay: Overlay,
    pub fuse: Fuse,
    pub server: Option<Server>,
    pub image: Option<PathBuf>,
    /// `virtual` or `copy`.
    pub mode: &'static str,
    /// A copy-mode run's space (`null` in virtual mode).
    pub copy: Option<Copy>,
    /// What a lazily served tree fetched (`null`: not lazy).
    pub remote: Option<Remote>,
}

/// What a lazy run fetched from its origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Remote {
    pub origin: String,
    pub requests: u64,
    pub blobs: u64,
    pub bytes: u64,
    pub wait_ms: f64,
    pub failures: u64,
    pub ahead: u64,
    pub compiled: u64,
}

/// What copy mode did to the space before the task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Copy {
    /// `restored` (whole), `reused` (unchanged) or `repaired`.
    pub state: SpaceState,
    pub reused: u64,
    pub restored: u64,
    pub repaired: u64,
    pub removed: u64,
    pub relinked: u64,
    pub bytes_written: u64,
    pub check_ms: f64,
    pub prepare_ms: f64,
    /// The refusal that made an `auto` run use a copy (`null`: `--mode copy`).
    pub refused: Option<Refusal>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Times {
    pub activation: Option<f64>,
    pub task: Option<f64>,
    pub teardown: f64,
    pub total: f64,
}

/// A part out of a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Share {
    pub total: u64,
    pub opened: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Blobs {
    pub decompressed: u64,
    pub relocated: u64,
    pub from_cache: u64,
    pub raw: u64,
    pub raw_verified: u64,
    pub cache_bytes_written: u64,
    pub failures: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlay {
    #[serde(flatten)]
    pub usage: UpperUsage,
    pub kept: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Fuse {
    pub read_mode: ReadMode,
    pub requests: u64,
    pub lookup: u64,
    pub lookup_negative: u64,
    pub getattr: u64,
    pub readlink: u64,
    pub open: u64,
    pub open_passthrough: u64,
    pub opendir: u64,
    pub readdir: u64,
    pub readdirplus: u64,
    pub read: u64,
    pub release: u64,
    pub flush: u64,
    pub statfs: u64,
    pub access: u64,
    pub rejected_writes: u64,
    pub bytes_read: u64,
    pub eio: u64,
}

/// What the run knew when it ended.
pub struct Inputs<'a> {
    pub started: Instant,
    pub catalog_path: &'a Path,
    pub environment: &'a Path,
    /// What the lower tree served.
    pub lower: &'a Report,
    pub outcome: &'a RunOutcome,
    pub exit_code: i32,
    pub kept: Option<&'a Path>,
    /// A lazily served tree's origin, and what was fetched before the
    /// tree was served (the catalog; added to what the tree fetched).
    pub remote: Option<(&'a str, RemoteStats)>,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl RunStats {
    pub fn collect(i: &Inputs<'_>) -> RunStats {
        let now = Instant::now();
        let f = &i.lower.fuse;
        let c = &f.cache;
        let o = i.outcome;
        RunStats {
            schema: SCHEMA,
            vhrun_version: env!("CARGO_PKG_VERSION").to_string(),
            catalog: i
                .catalog_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            environment: i.environment.to_path_buf(),
            exit_code: i.exit_code,
            time_ms: Times {
                activation: o
                    .exec_at
                    .map(|e| ms(e.saturating_duration_since(i.started))),
                task: o
                    .exec_at
                    .map(|e| ms(o.ended_at.saturating_duration_since(e))),
                teardown: ms(now.saturating_duration_since(o.ended_at)),
                total: ms(now.saturating_duration_since(i.started)),
            },
            files: Share {
                total: i.lower.totals.0,
                opened: f.files_opened,
            },
            bytes: Share {
                total: i.lower.totals.1,
                opened: f.bytes_opened,
            },
            blobs: Blobs {
                decompressed: c.decoded + c.relocated,
                relocated: c.relocated,
                from_cache: c.hits,
                raw: c.raw_opened,
                raw_verified: c.raw_verified,
                cache_bytes_written: c.bytes_written,
                failures: c.failures,
            },
            overlay: Overlay {
                usage: o.upper.unwrap_or_default(),
                kept: i.kept.map(Path::to_path_buf),
            },
            fuse: Fuse {
                read_mode: f.read_mode,
                requests: f.requests(),
                lookup: f.lookup,
                lookup_negative: f.lookup_negative,
                getattr: f.getattr,
                readlink: f.readlink,
                open: f.open,
                open_passthrough: f.open_passthrough,
                opendir: f.opendir,
                readdir: f.readdir,
                readdirplus: f.readdirplus,
                read: f.read,
                release: f.release,
                flush: f.flush,
                statfs: f.statfs,
                access: f.access,
                rejected_writes: f.rejected_writes,
                bytes_read: f.bytes_read,
                eio: f.eio,
            },
            server: i.lower.server,
            image: i.lower.image.clone(),
            mode: if i.lower.copy.is_some() {
                "copy"
            } else {
                "virtual"
            },
            copy: i.lower.copy.as_ref().map(|c| Copy {
                state: c.state,
                reused: c.reused,
                restored: c.restored,
                repaired: c.repaired,
                removed: c.removed,
                relinked: c.relinked,
                bytes_written: c.bytes,
                check_ms: ms(c.check),
                prepare_ms: ms(c.total),
                refused: i.lower.refused,
            }),
            remote: i.remote.map(|(origin, before)| {
                let r = i.lower.fuse.remote.plus(&before);
                Remote {
                    origin: origin.to_string(),
                    requests: r.requests,
                    blobs: r.blobs,
                    bytes: r.bytes,
                    wait_ms: ms(std::time::Duration::from_micros(r.wait_us)),
                    failures: r.failures,
                    ahead: r.ahead,
                    compiled: i.outcome.companion_reported,
                }
            }),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("stats serialise") + "\n"
    }

    /// Write the JSON to `path` (whole or not at all: a temp file renamed).
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
        std::io::Write::write_all(&mut tmp, self.to_json().as_bytes())
            .map_err(|e| Error::io(path, e))?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(())
    }

    /// The human summary printed on stderr by `--stats`.
    pub fn render(&self) -> String {
        let t = &self.time_ms;
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        let pct = |a: u64, b: u64| {
            if b == 0 {
                String::new()
            } else {
                format!(" ({:.1}%)", a as f64 * 100.0 / b as f64)
            }
        };
        let b = &self.blobs;
        let o = &self.overlay.usage;
        let f = &self.fuse;
        let mode = match f.read_mode {
            ReadMode::Passthrough => "passthrough",
            ReadMode::Served => "served by vhrun",
            ReadMode::Unknown => "unknown",
        };
        let kinds = [
            ("lookup", f.lookup),
            ("getattr", f.getattr),
            ("readlink", f.readlink),
            ("open", f.open),
            ("opendir", f.opendir),
            ("readdir", f.readdir),
            ("readdirplus", f.readdirplus),
            ("read", f.read),
            ("release", f.release),
            ("flush", f.flush),
            ("statfs", f.statfs),
            ("access", f.access),
            ("rejected_writes", f.rejected_writes),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
        let mut s = format!("vhrun stats: {} (exit {})\n", self.catalog, self.exit_code);
        s += &format!(
            "  time          activation {}, task {}, teardown {:.1} ms, total {:.1} ms\n",
            opt(t.activation),
            opt(t.task),
            t.teardown,
            t.total
        );
        s += &format!(
            "  opened        {} of {} files{}, {} of {}{}\n",
            self.files.opened,
            self.files.total,
            pct(self.files.opened, self.files.total),
            human(self.bytes.opened),
            human(self.bytes.total),
            pct(self.bytes.opened, self.bytes.total),
        );
        s += &format!(
            "  blobs         {} decompressed ({} relocated), {} from cache, {} raw; {} written to the cache{}\n",
            b.decompressed,
            b.relocated,
            b.from_cache,
            b.raw,
            human(b.cache_bytes_written),
            if b.failures > 0 { format!(", {} failed", b.failures) } else { String::new() },
        );
        s += &format!(
            "  overlay       {} written in {} files, {} dirs, {} symlinks; {} deleted{}\n",
            human(o.bytes),
            o.files,
            o.dirs,
            o.symlinks,
            o.whiteouts,
            match &self.overlay.kept {
                Some(k) => format!("; kept in {}", k.display()),
                None => String::new(),
            }
        );
        if let Some(r) = &self.remote {
            s += &format!(
                "  remote        {} in {} blobs from {} ({} requests, waited {:.1} ms{}){}\n",
                human(r.bytes),
                r.blobs,
                r.origin,
                r.requests,
                r.wait_ms,
                match (r.ahead, r.compiled) {
                    (0, 0) => String::new(),
                    (a, 0) => format!("; {a} blobs fetched ahead"),
                    (a, c) => format!("; {a} blobs fetched, {c} modules compiled ahead"),
                },
                if r.failures > 0 {
                    format!(", {} failed", r.failures)
                } else {
                    String::new()
                },
            );
        }
        if let Some(c) = &self.copy {
            s += &format!(
                "  copy          space {}: {} files reused, {} restored, {} repaired, {} removed; {} written; checked in {:.1} ms, ready in {:.1} ms{}\n",
                match c.state {
                    SpaceState::Restored => "restored",
                    SpaceState::Reused => "reused",
                    SpaceState::Repaired => "repaired",
                },
                c.reused,
                c.restored,
                c.repaired,
                c.removed,
                human(c.bytes_written),
                c.check_ms,
                c.prepare_ms,
                match c.refused {
                    Some(r) => format!(" (auto mode: {})", r.what()),
                    None => String::new(),
                }
            );
            return s;
        }
        if let Some(image) = &self.image {
            s += &format!(
                "  tree          EROFS image {} (the kernel serves it: no FUSE, no server)\n",
                image.display()
            );
            return s;
        }
        s += &format!(
            "  fuse          {} requests ({mode}): {}{}{}\n",
            f.requests,
            if kinds.is_empty() { "none" } else { &kinds },
            if f.lookup_negative > 0 {
                format!("; {} lookups missed", f.lookup_negative)
            } else {
                String::new()
            },
            if f.eio > 0 {
                format!("; {} EIO", f.eio)
            } else {
                String::new()
            },
        );
        s += &match self.server {
            Some(Server {
                pid,
                runs_before,
                takeovers,
            }) => {
                let how = match runs_before {
                    0 => "started for this run".to_string(),
                    n => format!("warm ({n} runs before)"),
                };
                let taken = match takeovers {
                    0 => String::new(),
                    n => format!(
                        "; taken over by a new server {n}x during the run (counters restarted)"
                    ),
                };
                format!("  server        pid {pid}, {how}{taken}\n")
            }
            None => "  server        none (tree mounted for this run only)\n".to_string(),
        };
        s
    }
}

/// `1.2 MB`-style sizes (decimal units, as `du --si`).
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Print and/or write the stats, as `--stats` / `--stats-json` ask.
pub fn report(stats: &RunStats, print: bool, json: Option<&Path>) -> Result<()> {
    if print {
        eprint!("{}", stats.render());
    }
    if let Some(path) = json {
        stats.write_json(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1500), "1.5 kB");
        assert_eq!(human(536_563), "536.6 kB");
        assert_eq!(human(2_000_000_000), "2.0 GB");
    }
}
