//! Verify a hololib without touching it: every blob a catalog needs must
//! exist, decode, hash to its name and have the size the catalog records.
//!
//! rcc's `holotree check` deletes what fails (blobs and whole catalogs);
//! vhrun only reports, with the catalog, the path inside the environment and
//! the blob, because it never modifies a hololib it did not write.

use crate::hololib::{blob, Catalog, Hololib};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Problem {
    pub hololib: PathBuf,
    /// Catalog file name.
    pub catalog: String,
    /// Path inside the environment ("" for a problem of the catalog itself).
    pub path: String,
    pub digest: String,
    /// The blob (or, for a catalog problem, the catalog file).
    pub blob: PathBuf,
    pub problem: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub hololibs: u64,
    pub catalogs: u64,
    /// Distinct blobs verified.
    pub blobs: u64,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check every catalog of every hololib given (missing ones are skipped).
pub fn check(libs: &[Hololib]) -> CheckReport {
    let mut report = CheckReport::default();
    for lib in libs {
        if lib.catalog_dir().is_dir() {
            check_hololib(lib, &mut report);
        }
    }
    report
}

/// One referencing file: (catalog, path inside it, recorded size).
type Users = Vec<(String, String, i64)>;

pub fn check_hololib(lib: &Hololib, report: &mut CheckReport) {
    let _span = tracing::info_span!("check", hololib = %lib.root.display()).entered();
    report.hololibs += 1;
    let mut users: BTreeMap<String, Users> = BTreeMap::new();
    for key in lib.catalogs() {
        report.catalogs += 1;
        let path = lib.catalog_path(&key);
        let catalog_problem = |msg: String| Problem {
            hololib: lib.root.clone(),
            catalog: key.clone(),
            path: String::new(),
            digest: String::new(),
            blob: path.clone(),
            problem: msg,
        };
        let catalog = match Catalog::load(&path) {
            Ok(c) => c,
            Err(e) => {
                report.problems.push(catalog_problem(e.to_string()));
                continue;
            }
        };
        if let Err(m) = catalog.validate_names() {
            report.problems.push(catalog_problem(m));
            continue;
        }
        catalog.walk_files(|p, f, shadow| {
            if !shadow && f.symlink.is_empty() {
                users.entry(f.digest.clone()).or_default().push((
                    key.clone(),
                    p.to_string(),
                    f.size,
                ));
            }
        });
    }
    report.blobs += users.len() as u64;
    let verdicts: Vec<(String, Result<u64, String>)> = users
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|digest| {
            let r = if crate::digest::is_hex_digest(&digest) {
                blob::copy_verified(&lib.blob_path(&digest), &digest, &mut std::io::sink()).map_err(
                    |e| match e {
                        crate::error::Error::Blob { msg, .. } => msg,
                        other => other.to_string(),
                    },
                )
            } else {
                Err("catalog digest is not a sha256 or siphash128 hex digest".to_string())
            };
            (digest, r)
        })
        .collect();
    for (digest, verdict) in verdicts {
        let blob_path = lib.blob_path(&digest);
        for (catalog, path, size) in &users[&digest] {
            let problem = match &verdict {
                Err(msg) => msg.clone(),
                Ok(n) if *n as i64 != *size => {
                    format!("content has {n} bytes, the catalog says {size}")
                }
                Ok(_) => continue,
            };
            report.problems.push(Problem {
                hololib: lib.root.clone(),
                catalog: catalog.clone(),
                path: path.clone(),
                digest: digest.clone(),
                blob: blob_path.clone(),
                problem,
            });
        }
    }
}
