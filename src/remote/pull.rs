//! `rcc holotree pull` (`operations/pull.go`): ask the origin for the
//! catalog's parts, request the missing ones, and import the zip it answers
//! into rcc's hololib under rcc's lock.
//!
//! Stricter than rcc: the zip is imported into a staging hololib beside
//! the real one first (every entry name checked, every blob hashed against
//! its digest, the catalog checked to need only blobs that are there), and
//! only then are its blobs renamed into the hololib and, last, the catalog.
//! A corrupt, partial or foreign download leaves the hololib as it was.

use crate::error::{Error, Result};
use crate::hololib::lock::holotree_lock;
use crate::hololib::part::write_via_part;
use crate::hololib::{zipio, Hololib, Locations};
use crate::paths::mkdir_all;
use crate::remote::origin::Origin;

/// What a pull did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullStats {
    pub catalog: String,
    /// Digests the origin listed for the catalog.
    pub parts: u64,
    /// Of those, the ones asked for (missing here, or all with `--force`).
    pub requested: u64,
    /// Bytes of the delta zip downloaded.
    pub bytes: u64,
    /// Blobs placed into the hololib.
    pub new_blobs: u64,
}

/// Pull `catalog` (`<hash>v12.<platform>`) from `origin` into rcc's hololib
/// of `locations`. `progress`: draw a bar on stderr (callers pass whether
/// it is a terminal).
pub fn pull(
    locations: &Locations,
    origin: &Origin,
    catalog: &str,
    force: bool,
    progress: bool,
) -> Result<PullStats> {
    let _span = tracing::info_span!("pull", origin = %origin.url, catalog).entered();
    let data_err = |msg: String| Error::RemoteData {
        origin: origin.url.clone(),
        catalog: catalog.to_string(),
        msg,
    };
    if !matches!(
        zipio::classify(&format!("catalog/{catalog}")),
        Ok(zipio::EntryKind::Catalog(_))
    ) {
        return Err(Error::Usage(format!(
            "{catalog:?} is not a catalog name (<16 hex>v12.<os>_<arch>)"
        )));
    }
    let lib = &locations.hololib;

    let parts = parts(origin, catalog)?;
    let wanted: Vec<&String> = parts
        .iter()
        .filter(|d| force || !lib.blob_path(d).is_file())
        .collect();
    let mut stats = PullStats {
        catalog: catalog.to_string(),
        parts: parts.len() as u64,
        requested: wanted.len() as u64,
        ..Default::default()
    };
    tracing::info!(
        "{catalog}: {} parts at {}, {} requested",
        parts.len(),
        origin.url,
        wanted.len()
    );

    // The staging hololib lives in the hololib's directory (same
    // filesystem: its blobs are renamed into place).
    mkdir_all(&lib.root, 0o750)?;
    remove_stale_stages(&lib.root);
    let stage_dir = tempfile::Builder::new()
        .prefix(STAGE_PREFIX)
        .tempdir_in(&lib.root)
        .map_err(|e| Error::io(&lib.root, e))?;
    let zip_path = stage_dir.path().join("delta.zip");
    // rccremote caches answers by the list asked for, not by the catalog:
    // a list asked for another catalog before (the empty one, when every
    // blob is here) brings that one's zip. Then the list is made this
    // catalog's own with a part or two of it.
    let mut asked: Vec<&String> = wanted.clone();
    let mut own = Vec::new();
    for round in 0.. {
        stats.bytes += download(origin, catalog, &asked, &zip_path, progress)?;
        let held = zipio::catalog_names(&zip_path).map_err(|e| match e {
            Error::BadInput { msg, .. } => data_err(msg),
            other => other,
        })?;
        if held == [catalog] {
            break;
        }
        let held = format!(
            "the delta zip holds catalogs [{}], not {catalog}",
            held.join(", ")
        );
        if round == 2 {
            return Err(data_err(held));
        }
        tracing::info!("{}: {held}: asking with other blobs", origin.url);
        if own.is_empty() {
            own = own_parts(catalog, parts.clone());
        }
        asked = wanted.clone();
        asked.extend(own.iter().take(round + 1).filter(|d| !wanted.contains(d)));
    }

    let _lock = holotree_lock(&locations.holotree)?;
    let stage = Hololib::new(stage_dir.path().join("lib"));
    stage.ensure_dirs()?;
    lib.ensure_dirs()?;
    if !lib.compress() {
        write_via_part(&stage.catalog_dir().join("compress.no"), b"", 0o644)?;
    }
    let imported = zipio::import_zip_over(&stage, &[lib], &zip_path).map_err(|e| match e {
        Error::BadInput { msg, .. } => data_err(msg),
        other => other,
    })?;
    if imported.catalogs != [catalog] {
        return Err(data_err(format!(
            "the delta zip holds catalogs [{}], not {catalog}",
            imported.catalogs.join(", ")
        )));
    }
    stats.new_blobs = move_blobs(&stage, lib)?;
    // Last, atomically: the catalog (a rename within the hololib's filesystem).
    let from = stage.catalog_path(catalog);
    let to = lib.catalog_path(catalog);
    std::fs::rename(&from, &to).map_err(|e| Error::io(&to, e))?;
    tracing::info!(
        "pulled {catalog} from {}: {} bytes, {} new blobs",
        origin.url,
        stats.bytes,
        stats.new_blobs
    );
    Ok(stats)
}

/// `POST /delta/<catalog>` for `asked`, into `zip_path` (a bar on a
/// terminal when `progress`): the bytes downloaded.
fn download(
    origin: &Origin,
    catalog: &str,
    asked: &[&String],
    zip_path: &std::path::Path,
    progress: bool,
) -> Result<u64> {
    let body = asked
        .iter()
        .map(|d| d.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let mut file = std::fs::File::create(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let bar = progress.then(|| download_bar(catalog));
    let mut on_bytes = |n: u64, len: Option<u64>| {
        if let Some(b) = &bar {
            if let Some(l) = len {
                b.set_length(l);
            }
            b.set_position(n);
        }
    };
    let got = origin.post_to(
        &format!("/delta/{catalog}"),
        &body,
        crate::remote::origin::Patience::DOWNLOAD,
        &mut file,
        &mut on_bytes,
    );
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let got = got?;
    file.sync_all().map_err(|e| Error::io(zip_path, e))?;
    Ok(got)
}

/// `parts` in an order keyed by `catalog`: its first few make a `/delta`
/// list that another catalog's fetch is unlikely to have asked with.
pub fn own_parts(catalog: &str, mut parts: Vec<String>) -> Vec<String> {
    let key =
        |d: &String| crate::digest::DigestKind::Sha256.digest(format!("{catalog}\n{d}").as_bytes());
    parts.sort_by_cached_key(key);
    parts.truncate(2);
    parts
}

/// `GET /parts/<catalog>`: the digests of the catalog's blobs at `origin`.
pub fn parts(origin: &Origin, catalog: &str) -> Result<Vec<String>> {
    let data_err = |msg: String| Error::RemoteData {
        origin: origin.url.clone(),
        catalog: catalog.to_string(),
        msg,
    };
    let answer = origin.get(&format!("/parts/{catalog}"))?;
    if answer.status != 200 {
        return Err(Error::Remote {
            origin: origin.url.clone(),
            msg: format!(
                "GET /parts/{catalog}: HTTP {}{}",
                answer.status,
                if answer.status == 404 {
                    " (the origin has no such catalog)"
                } else {
                    ""
                }
            ),
        });
    }
    let mut parts = Vec::new();
    for line in answer.body.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !crate::digest::is_hex_digest(line) {
            return Err(data_err(format!(
                "/parts lists {:?}, which is not a blob digest",
                line.chars().take(80).collect::<String>()
            )));
        }
        parts.push(line.to_string());
    }
    Ok(parts)
}

/// Staging directories a killed pull left (older than a day: a running
/// pull's is younger).
fn remove_stale_stages(root: &std::path::Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let day = std::time::Duration::from_secs(24 * 3600);
    for e in rd.filter_map(|e| e.ok()) {
        let stale = e.file_name().to_string_lossy().starts_with(STAGE_PREFIX)
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > day);
        if stale {
            tracing::info!("removing {} (left by a killed pull)", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

const STAGE_PREFIX: &str = ".vhrun-pull.";

/// Rename every blob of `stage` into `lib` (keeping those `lib` already has).
fn move_blobs(stage: &Hololib, lib: &Hololib) -> Result<u64> {
    let mut moved = 0;
    let mut stack = vec![stage.library_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !crate::digest::is_hex_digest(name) {
                continue;
            }
            let sink = lib.blob_path(name);
            if sink.is_file() {
                continue;
            }
            mkdir_all(sink.parent().expect("blob has a parent"), 0o750)?;
            std::fs::rename(&path, &sink).map_err(|e| Error::io(&sink, e))?;
            moved += 1;
        }
    }
    Ok(moved)
}

fn download_bar(catalog: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "vhrun: pulling {msg} {bar:20} {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // the blueprint hash: the line fits 80 columns
    bar.set_message(catalog.split("v12.").next().unwrap_or(catalog).to_string());
    bar
}

/// The pull a command makes before it builds: when `RCC_REMOTE_ORIGIN` is
/// set and `catalog` is missing. `Ok(true)` when the catalog was pulled;
/// `Ok(false)` when no origin is set or the pull failed (one warning line
/// with the reason: the caller builds, or fails, as before).
pub fn pull_before_build(locations: &Locations, catalog: &str) -> bool {
    let Some(url) = crate::remote::origin::origin_from_env() else {
        return false;
    };
    let attempt = || -> Result<PullStats> {
        let settings = crate::settings::NetworkSettings::load(&locations.robocorp_home)?;
        let origin = Origin::new(&url, &settings)?;
        pull(
            locations,
            &origin,
            catalog,
            false,
            crate::logging::decorations() && !crate::logging::quiet(),
        )
    };
    match attempt() {
        Ok(stats) => {
            if !crate::logging::quiet() {
                eprintln!(
                    "vhrun: pulled {catalog} from {url} ({} of {} blobs, {} bytes)",
                    stats.new_blobs, stats.parts, stats.bytes
                );
            }
            true
        }
        Err(e) => {
            eprintln!("vhrun: warning: cannot pull {catalog}: {e}");
            false
        }
    }
}

/// A catalog name from a `--catalog` key: a blueprint hash (16 hex) gets
/// this platform's name; anything else is taken as the name.
pub fn catalog_key(key: &str) -> String {
    let hex16 = key.len() == 16 && key.bytes().all(|b| b.is_ascii_hexdigit());
    if hex16 {
        crate::hololib::catalog::catalog_name(key, crate::hololib::catalog::host_platform())
    } else {
        key.to_string()
    }
}
