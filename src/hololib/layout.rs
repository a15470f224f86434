//! Where things live: ROBOCORP_HOME, the shared holotree, a hololib's
//! `catalog/` and `library/`, VHRUN_HOME; and rcc's names for stages and
//! spaces (identity, space name), which decide where an environment sits.

use crate::digest::{self, siphash64, sipit, textual, DigestKind};
use crate::error::{Error, Result};
use crate::home::Home;
use crate::paths::{absolute, expand_env, mkdir_all};
use std::path::{Path, PathBuf};

/// rcc's `HoloLocation` on Linux (not configurable in rcc).
pub const SHARED_HOLOTREE: &str = "/opt/robocorp/ht";

/// One hololib directory (`.../hololib` or `<shared>/lib`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hololib {
    pub root: PathBuf,
}

impl Hololib {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Hololib { root: root.into() }
    }
    pub fn catalog_dir(&self) -> PathBuf {
        self.root.join("catalog")
    }
    pub fn library_dir(&self) -> PathBuf {
        self.root.join("library")
    }
    pub fn catalog_path(&self, key: &str) -> PathBuf {
        self.catalog_dir().join(key)
    }
    /// `library/<d[0:2]>/<d[2:4]>/<d[4:6]>/<d>`
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let d = digest;
        if d.len() < 6 || !d.is_ascii() {
            // Never index outside the library: a hostile digest gets a path
            // that cannot exist.
            return self.library_dir().join("invalid-digest");
        }
        self.library_dir()
            .join(&d[0..2])
            .join(&d[2..4])
            .join(&d[4..6])
            .join(d)
    }
    /// rcc's `Compress()`: true unless `catalog/compress.no` is a regular file.
    pub fn compress(&self) -> bool {
        !self.catalog_dir().join("compress.no").is_file()
    }
    pub fn digest_kind(&self) -> DigestKind {
        if self.compress() {
            DigestKind::Sha256
        } else {
            DigestKind::Sip128
        }
    }
    /// Catalog file names (`[0-9a-f]*v12.*`, not `.info`), sorted.
    pub fn catalogs(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.catalog_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_catalog_name(n))
            .collect();
        out.sort();
        out
    }
    /// Create `catalog/` and `library/` (0750 as rcc does in private mode).
    pub fn ensure_dirs(&self) -> Result<()> {
        for d in [self.catalog_dir(), self.library_dir()] {
            mkdir_all(&d, 0o750)?;
        }
        Ok(())
    }
}

/// A catalog file name as rcc globs them: `[0-9a-f]*v12.*`, not `*.info`.
pub fn is_catalog_name(name: &str) -> bool {
    name.as_bytes()
        .first()
        .is_some_and(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        && name.contains(crate::hololib::catalog::CATALOG_VERSION)
        && name.contains('.')
        && !name.ends_with(".info")
        && !name.contains(".part#")
        && !name.starts_with('.')
}

/// Every location vhrun reads or writes, resolved once from the environment.
#[derive(Debug, Clone)]
pub struct Locations {
    /// `$ROBOCORP_HOME` (default `$HOME/.robocorp`), absolute.
    pub robocorp_home: PathBuf,
    /// rcc's shared-holotree mode is on for this user.
    pub shared: bool,
    /// Where spaces live: `<home>/holotree`, or the shared location.
    pub holotree: PathBuf,
    /// rcc's hololib for this user (shared or private).
    pub hololib: Hololib,
    /// `$VHRUN_HOME` (default `$ROBOCORP_HOME/vhrun`): vhrun's own state.
    pub home: Home,
    /// The user's home directory (for rcc's user-home identity).
    pub user_home: Option<PathBuf>,
}

impl Locations {
    pub fn from_env() -> Locations {
        let user_home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let robocorp_home = match std::env::var_os("ROBOCORP_HOME").filter(|v| !v.is_empty()) {
            Some(v) => absolute(&PathBuf::from(expand_env(&v.to_string_lossy()))),
            None => user_home
                .clone()
                .unwrap_or_else(|| PathBuf::from("/"))
                .join(".robocorp"),
        };
        let vhrun_home = match std::env::var_os("VHRUN_HOME").filter(|v| !v.is_empty()) {
            Some(v) => absolute(&PathBuf::from(v)),
            None => robocorp_home.join("vhrun"),
        };
        Self::resolve(
            robocorp_home,
            Home::new(vhrun_home),
            user_home,
            Path::new(SHARED_HOLOTREE),
        )
    }

    /// The same resolution with every input explicit (tests).
    pub fn resolve(
        robocorp_home: PathBuf,
        home: Home,
        user_home: Option<PathBuf>,
        shared_root: &Path,
    ) -> Locations {
        let uhi = user_home_identity(user_home.as_deref());
        let shared = shared_root.join("lib/catalog/init").join(&uhi).is_file();
        let (holotree, hololib) = if shared {
            (
                shared_root.to_path_buf(),
                Hololib::new(shared_root.join("lib")),
            )
        } else {
            (
                robocorp_home.join("holotree"),
                Hololib::new(robocorp_home.join("hololib")),
            )
        };
        Locations {
            robocorp_home,
            shared,
            holotree,
            hololib,
            home,
            user_home,
        }
    }

    /// vhrun's own hololib, for environments vhrun built itself (never rcc's).
    pub fn own_hololib(&self) -> Hololib {
        Hololib::new(self.home.hololib())
    }

    /// Hololibs in lookup order: rcc's (shared or private), then vhrun's own.
    /// Where shared mode is on, rcc's private hololib is searched too.
    pub fn hololibs(&self) -> Vec<Hololib> {
        let mut v = vec![self.hololib.clone()];
        let private = Hololib::new(self.robocorp_home.join("hololib"));
        if !v.contains(&private) {
            v.push(private);
        }
        v.push(self.own_hololib());
        v
    }

    /// Find a catalog by exact file name, by blueprint hash, or by a unique
    /// substring (as `rcc holotree export` matches), in lookup order.
    pub fn find_catalog(&self, key: &str) -> Result<(Hololib, String)> {
        let platform = crate::hololib::catalog::host_platform();
        let mut partial = Vec::new();
        for lib in self.hololibs() {
            let names = lib.catalogs();
            if names.iter().any(|n| n == key) {
                return Ok((lib, key.to_string()));
            }
            let exact = crate::hololib::catalog::catalog_name(key, platform);
            if names.contains(&exact) {
                return Ok((lib, exact));
            }
            for n in names.into_iter().filter(|n| n.contains(key)) {
                partial.push((lib.clone(), n));
            }
        }
        match partial.len() {
            1 => Ok(partial.pop().unwrap()),
            _ => Err(Error::NoSuchCatalog {
                key: key.to_string(),
                searched: self.searched(),
            }),
        }
    }

    pub fn searched(&self) -> String {
        self.hololibs()
            .iter()
            .map(|h| h.root.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// rcc's `ControllerSpaceName` for `--controller` and `--space`.
    pub fn space_name(&self, controller: &str, space: &str) -> String {
        space_name(
            &user_home_identity(self.user_home.as_deref()),
            controller,
            space,
        )
    }

    /// Where rcc would restore `catalog` for this controller and space, and
    /// so where vhrun serves it: next to the catalog's recorded `path`
    /// (relocation only rewrites the basename, so the parent must match).
    pub fn space_path(&self, recorded_path: &str, controller: &str, space: &str) -> PathBuf {
        let recorded = Path::new(recorded_path);
        let parent = recorded
            .parent()
            .filter(|p| p.is_absolute())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.holotree.clone());
        parent.join(self.space_name(controller, space))
    }

    /// rcc's stage identity for this machine and user.
    pub fn stage_identity(&self) -> String {
        stage_identity(
            &user_home_identity(self.user_home.as_deref()),
            crate::hololib::catalog::host_platform(),
        )
    }
}

/// rcc's `UserHomeIdentity`: the first 7 hex digits of the siphash of the
/// home dir, `badcafe` if unknown. rcc formats the hash with `%02x`, not
/// `Textual`'s `%016x`: a hash below 2^60 loses its leading zeros before
/// the cut (`/tmp/uhi/h40` is `d24a32a` for the real rcc, not `0d24a32`),
/// and every space name of that user with it.
pub fn user_home_identity(home: Option<&Path>) -> String {
    match home {
        Some(h) => {
            let hash = siphash64(
                digest::HOME_K0,
                digest::HOME_K1,
                h.as_os_str().as_encoded_bytes(),
            );
            let mut hex = format!("{hash:02x}");
            hex.truncate(7);
            hex
        }
        None => "badcafe".to_string(),
    }
}

/// `uhi + "_" + Textual(Sipit("rcc."+lower(controller)),7) + "_" + Textual(Sipit(space),8)`.
pub fn space_name(uhi: &str, controller: &str, space: &str) -> String {
    let controller = format!("rcc.{}", controller.to_lowercase());
    format!(
        "{uhi}_{}_{}",
        textual(sipit(controller.as_bytes()), 7),
        textual(sipit(space.as_bytes()), 8)
    )
}

/// `"h" + uhi + "_" + Textual(Sipit(lower("linux amd64")),14) + "t"`.
pub fn stage_identity(uhi: &str, platform: &str) -> String {
    let goos_goarch = platform.replace('_', " ").to_lowercase();
    format!("h{uhi}_{}t", textual(sipit(goos_goarch.as_bytes()), 14))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcc_names() {
        let uhi = user_home_identity(Some(Path::new("/home/user")));
        assert_eq!(uhi, "59acff1");
        // The real rcc (`rcc configuration diagnostics`: holotree-user-id)
        // for a home whose hash starts with a zero nibble.
        assert_eq!(
            user_home_identity(Some(Path::new("/tmp/uhi/h40"))),
            "d24a32a"
        );
        assert_eq!(
            stage_identity(&uhi, "linux_amd64"),
            "h59acff1_493f813dad24d3t"
        );
        let s = space_name(&uhi, "user", "user");
        assert_eq!(s.len(), 24);
        assert!(s.starts_with("59acff1_"));
    }

    #[test]
    fn shared_mode_marker() {
        let t = tempfile::tempdir().unwrap();
        let home = t.path().join("rh");
        let shared = t.path().join("ht");
        let user = Some(PathBuf::from("/home/user"));
        let l = Locations::resolve(
            home.clone(),
            Home::new(home.join("vhrun")),
            user.clone(),
            &shared,
        );
        assert!(!l.shared);
        assert_eq!(l.hololib.root, home.join("hololib"));
        assert_eq!(l.holotree, home.join("holotree"));
        std::fs::create_dir_all(shared.join("lib/catalog/init")).unwrap();
        std::fs::write(shared.join("lib/catalog/init/59acff1"), "").unwrap();
        let l = Locations::resolve(home.clone(), Home::new(home.join("vhrun")), user, &shared);
        assert!(l.shared);
        assert_eq!(l.hololib.root, shared.join("lib"));
        assert_eq!(l.holotree, shared);
        assert_eq!(l.hololibs().len(), 3);
    }

    #[test]
    fn blob_paths() {
        let h = Hololib::new("/x");
        assert_eq!(
            h.blob_path("abcdef12"),
            PathBuf::from("/x/library/ab/cd/ef/abcdef12")
        );
        assert_eq!(
            h.blob_path("../"),
            PathBuf::from("/x/library/invalid-digest")
        );
    }
}
