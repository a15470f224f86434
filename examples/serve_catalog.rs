//! vhrun as a library: open the hololibs, list their catalogs, and serve
//! one catalog read-only with FUSE for the lifetime of a closure.
//!
//! ```sh
//! cargo run --example serve_catalog -- [--import ZIP]... [CATALOG]
//! ```
//!
//! It reads `ROBOCORP_HOME` / `VHRUN_HOME` as vhrun does (point them at a
//! temporary directory to leave your own untouched); `--import` first adds
//! `rcc holotree export` zips to that hololib. CATALOG is a catalog name,
//! blueprint hash or unique part of one (default: the first catalog).
//! Needs /dev/fuse and root or unprivileged user namespaces. CI runs it on
//! the fixture export:
//!
//! ```sh
//! ROBOCORP_HOME=$(mktemp -d) cargo run --example serve_catalog -- \
//!     --import tests/fixtures/rcc/simple_linux.zip
//! ```

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vhrun::hololib::{lock, zipio, Locations};
use vhrun::lower::blobcache::BlobCache;
use vhrun::lower::fuse::{self, MountOptions};
use vhrun::sandbox::namespaces::{self, Identity};
use vhrun::tree::Tree;
use vhrun::{Error, Result};

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve_catalog: {e}");
            ExitCode::from(e.exit_code().clamp(1, 255) as u8)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<()> {
    let mut zips: Vec<PathBuf> = Vec::new();
    let mut key: Option<String> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--import") => zips.push(
                it.next()
                    .ok_or_else(|| Error::Usage("--import needs a zip".into()))?
                    .into(),
            ),
            Some(s) if s.starts_with('-') => {
                return Err(Error::Usage(format!(
                    "unknown option {s}; usage: serve_catalog [--import ZIP]... [CATALOG]"
                )))
            }
            _ => key = Some(a.to_string_lossy().into_owned()),
        }
    }

    // A private mount namespace, entered while the process has one thread:
    // the mount is invisible to other processes and goes away with this
    // one, even if it is killed before it unmounts.
    namespaces::enter(&Identity::current())?;

    let locations = Locations::from_env();
    if !zips.is_empty() {
        let _lock = lock::holotree_lock(&locations.holotree)?;
        for zip in &zips {
            for name in zipio::import_zip(&locations.hololib, zip)?.catalogs {
                println!("imported {name} from {}", zip.display());
            }
        }
    }

    let rows = vhrun::commands::catalogs::list(&locations.hololibs(), |e| {
        eprintln!("serve_catalog: skipping a catalog: {e}")
    });
    println!("{} catalog(s) in {}:", rows.len(), locations.searched());
    for r in &rows {
        println!(
            "  {}  {} files, {} bytes  ({})",
            r.key, r.files, r.bytes, r.hololib
        );
    }
    let key = match key.or_else(|| rows.first().map(|r| r.key.clone())) {
        Some(k) => k,
        None => {
            return Err(Error::Usage(
                "no catalog to serve: pass --import ZIP".into(),
            ))
        }
    };

    let (hololib, name) = locations.find_catalog(&key)?;
    let tree = Arc::new(Tree::load(&hololib.catalog_path(&name))?);
    // Compressed blobs are decoded on first open into VHRUN_HOME/blobs.
    let cache = BlobCache::at_home(hololib, &locations.home);
    // Mounted under the catalog's own identity, files read exactly as a
    // restore of it would have written them.
    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mountpoint = dir.path().join(tree.identity());
    std::fs::create_dir(&mountpoint).map_err(|e| Error::io(&mountpoint, e))?;
    let opts = MountOptions::for_caller(tree.identity());

    println!("serving {name} at {}", mountpoint.display());
    let (seen, stats) = fuse::serve_while(tree, cache, &mountpoint, &opts, |m| {
        let root = m.mountpoint();
        let mut names: Vec<String> = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(root, e))?;
        names.sort();
        for n in names.iter().take(5) {
            println!("  {n}");
        }
        if names.len() > 5 {
            println!("  ... {} more", names.len() - 5);
        }
        // Read the first regular file at the top, through the mount.
        let first = names.iter().map(|n| root.join(n)).find(|p| p.is_file());
        if let Some(p) = &first {
            let mut bytes = Vec::new();
            std::fs::File::open(p)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .map_err(|e| Error::io(p, e))?;
            println!("read {} bytes from {}", bytes.len(), p.display());
        }
        Ok::<usize, Error>(names.len())
    })?;
    let seen = seen?;
    println!(
        "unmounted after {} requests ({} lookups, {} opens); {} entries at the top",
        stats.requests(),
        stats.lookup,
        stats.open,
        seen
    );
    // The mount point is a plain empty directory again.
    let left = std::fs::read_dir(&mountpoint)
        .map_err(|e| Error::io(&mountpoint, e))?
        .count();
    if left != 0 {
        return Err(Error::Internal(format!(
            "{} still lists {left} entries after unmounting",
            mountpoint.display()
        )));
    }
    println!("ok");
    Ok(())
}
