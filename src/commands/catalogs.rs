use crate::cli::CatalogsArgs;
use crate::error::Result;
use crate::hololib::{Catalog, Hololib, Locations};
use std::time::SystemTime;

/// One catalog as `vhrun catalogs` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CatalogRow {
    /// Catalog file name (`<blueprint>v12.<platform>`).
    pub key: String,
    pub blueprint: String,
    pub platform: String,
    pub identity: String,
    /// Directory the environment was lifted from (`path` in the catalog).
    pub path: String,
    /// File entries (symlinks included).
    pub files: u64,
    /// Total uncompressed bytes of those entries.
    pub bytes: u64,
    pub hololib: String,
    /// The catalog file's mtime, RFC 3339 UTC (rcc touches it on restore).
    pub lifted_at: String,
    /// The `rcc` field: who wrote the catalog ("" in old rcc catalogs).
    pub rcc: String,
}

/// Every readable catalog of `libs`, in lookup order; unreadable ones are
/// reported through `warn` and skipped (`vhrun check` explains them).
pub fn list(libs: &[Hololib], mut warn: impl FnMut(crate::error::Error)) -> Vec<CatalogRow> {
    let mut rows = Vec::new();
    for lib in libs {
        for key in lib.catalogs() {
            let path = lib.catalog_path(&key);
            let catalog = match Catalog::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    warn(e);
                    continue;
                }
            };
            let (files, bytes) = catalog.totals();
            let lifted_at = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(rfc3339)
                .unwrap_or_default();
            rows.push(CatalogRow {
                key,
                blueprint: catalog.blueprint,
                platform: catalog.platform,
                identity: catalog.identity,
                path: catalog.path,
                files,
                bytes,
                hololib: lib.root.display().to_string(),
                lifted_at,
                rcc: catalog.rcc_version,
            });
        }
    }
    rows
}

pub fn run(args: &CatalogsArgs) -> Result<i32> {
    let locs = Locations::from_env();
    let rows = list(&locs.hololibs(), |e| eprintln!("vhrun: warning: {e}"));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialise")
        );
        return Ok(0);
    }
    print!("{}", table(&rows));
    Ok(0)
}

/// Aligned plain-text table, one catalog per line.
pub fn table(rows: &[CatalogRow]) -> String {
    let header = [
        "BLUEPRINT",
        "PLATFORM",
        "FILES",
        "BYTES",
        "LIFTED",
        "IDENTITY",
        "PATH",
        "HOLOLIB",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                r.blueprint.clone(),
                r.platform.clone(),
                r.files.to_string(),
                r.bytes.to_string(),
                r.lifted_at.clone(),
                r.identity.clone(),
                r.path.clone(),
                r.hololib.clone(),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let numeric = [false, false, true, true, false, false, false, false];
    let mut out = String::new();
    let mut line = |row: &[String]| {
        let mut l = String::new();
        for (i, c) in row.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i + 1 == row.len() {
                l.push_str(c);
            } else if numeric[i] {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
                l.push_str("  ");
            } else {
                l.push_str(c);
                l.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &cells {
        line(row);
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        let at = |s| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_610_000_000), "2021-01-07T06:13:20Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
