//! The kernel-only data path (DESIGN.md step 3): a catalog as an EROFS
//! metadata image whose files redirect into the decompressed blob cache,
//! mounted under the run's overlay with the cache as a data-only layer.
//! No process serves anything: lookups, stats and reads are the kernel's,
//! so a warm run costs what overlayfs over a plain directory costs.
//!
//! `$VHRUN_HOME/images/<key>/` holds
//! - `image.erofs`: directories, symlinks and attributes exactly as the
//!   FUSE tree reports them (`tree.rs`), every file a metacopy inode with a
//!   `trusted.overlay.redirect` to `/<d[0:2]>/<cache name>`;
//! - `data/<d[0:2]>/<cache name>`: hard links to the blob cache entries the
//!   catalog uses, so the image keeps its bytes even when `vhrun gc` or a
//!   user empties the cache (no space is used twice);
//! - `image.json`: which catalog it is, and the hololib library when raw
//!   (`compress.no`) blobs are served in place from it (a second data-only
//!   layer: vhrun never links or touches the hololib's files).
//!
//! The directory appears by rename once complete, so a run either finds a
//! whole image or none. The key is the catalog's content fingerprint, the
//! environment's directory name (relocated files differ per name) and the
//! owner the files are reported as.
//!
//! Root only: overlayfs refuses `metacopy` with `userxattr`, and an EROFS
//! image cannot be mounted in a user namespace. Linux >= 6.12 mounts the
//! image file directly (EROFS file-backed mounts); where that fails the run
//! falls back to the FUSE tree.

use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use crate::lower::blobcache::{BlobCache, Source};
use crate::lower::erofs::{self, Body, Entry};
use crate::tree::summary::Facts;
use crate::tree::{Kind, Tree, MTIME, ROOT};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

const IMAGE: &str = "image.erofs";
const META: &str = "image.json";
const DATA: &str = "data";

/// `image.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// The catalog the image was built from (for `vhrun gc` and people).
    pub catalog: PathBuf,
    /// Library of raw blobs the image redirects into, if any.
    pub library: Option<PathBuf>,
    pub files: u64,
    pub bytes: u64,
    /// Blobs decoded into the cache while building (0: all were cached).
    pub decoded: u64,
    pub build_ms: u64,
}

/// Whether this kernel mounts EROFS images from a file (and so, being
/// Linux >= 6.12, has overlayfs data-only layers): a one-directory image
/// mounted in a throwaway child's namespace. Root only.
pub fn probe_kernel() -> std::result::Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("vhrun-erofs-probe")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let root = Entry {
        perm: 0o755,
        uid: 0,
        gid: 0,
        body: Body::Dir(Vec::new()),
    };
    let img = erofs::write(&[root], MTIME).map_err(|e| e.to_string())?;
    let file = dir.path().join("probe.erofs");
    std::fs::write(&file, img).map_err(|e| format!("{}: {e}", file.display()))?;
    crate::sys::nsprobe::try_mount(&file, dir.path(), "erofs")
        .map_err(|e| format!("mounting an EROFS image file fails: {}", e.desc()))
}

impl Meta {
    /// `image.json` of the image directory `dir`, if it is complete.
    pub fn load(dir: &Path) -> Option<Meta> {
        let raw = std::fs::read(dir.join(META)).ok()?;
        serde_json::from_slice(&raw).ok()
    }
}

/// A complete image directory.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub meta: Meta,
}

/// Who the files are reported as, and where the environment lives.
#[derive(Debug, Clone, Copy)]
pub struct For<'a> {
    pub target_name: &'a str,
    pub uid: u32,
    pub gid: u32,
}

/// The image directory name for `tree` seen as `who`.
pub fn key(tree: &impl Facts, who: For<'_>) -> String {
    format!(
        "{:016x}.{}.{}-{}",
        tree.fingerprint(),
        who.target_name,
        who.uid,
        who.gid
    )
}

impl Image {
    /// The finished image for `tree`, if one was built.
    pub fn find(home: &Home, tree: &impl Facts, who: For<'_>) -> Option<Image> {
        if tree.fingerprint() == 0 {
            return None;
        }
        let dir = home.images().join(key(tree, who));
        let meta = Meta::load(&dir)?;
        let image = Image { dir, meta };
        // A hololib moved away would fail the overlay mount, after the
        // point where a run can still fall back to FUSE.
        let layers = image.data_layers();
        layers.iter().all(|l| l.is_dir()).then_some(image)
    }

    /// Note a use (`vhrun gc` removes images unused for --days). At most
    /// once an hour, like relatime: not a metadata write on every run's
    /// start.
    pub fn touch(&self) {
        let path = self.dir.join(META);
        let now = std::time::SystemTime::now();
        let fresh = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d.as_secs() < 3600));
        if fresh {
            return;
        }
        let done = std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(now));
        if let Err(e) = done {
            tracing::debug!("{}: {e}", path.display());
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(IMAGE)
    }

    /// The overlay's data-only layers, in lookup order.
    pub fn data_layers(&self) -> Vec<PathBuf> {
        let mut v = vec![self.dir.join(DATA)];
        v.extend(self.meta.library.clone());
        v
    }

    /// Mount the image read-only at `mountpoint` (in the run's namespace).
    pub fn mount(&self, mountpoint: &Path) -> Result<()> {
        use nix::mount::{mount, MsFlags};
        let file = self.file();
        let _s = tracing::info_span!("image.mount").entered();
        mount(
            Some(&file),
            mountpoint,
            Some("erofs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(|e| {
            Error::unavailable(
                format!("mounting the EROFS image {}", file.display()),
                format!(
                    "{} (mounting an image file needs Linux >= 6.12 with EROFS)",
                    e.desc()
                ),
            )
        })
    }

    /// Check that this kernel mounts the image, in a throwaway child's
    /// mount namespace (nothing is mounted here).
    pub fn probe(&self) -> Result<()> {
        let at = self.dir.join(".probe");
        crate::paths::mkdir_all(&at, 0o700)?;
        let tried = crate::sys::nsprobe::try_mount(&self.file(), &at, "erofs");
        let _ = std::fs::remove_dir(&at);
        tried.map_err(|e| {
            Error::unavailable(
                format!("mounting the EROFS image {}", self.file().display()),
                format!(
                    "{} (mounting an image file needs Linux >= 6.12 with EROFS)",
                    e.desc()
                ),
            )
        })
    }

    /// Remove the image (runs fall back to the FUSE tree).
    pub fn remove(self) -> Result<()> {
        std::fs::remove_dir_all(&self.dir).at(&self.dir)
    }

    /// Build (or find) the image of `tree`: every blob the catalog uses is
    /// decoded into `blobs` first (digests checked), then linked and
    /// described. Costs one full decompression of the catalog the first
    /// time; later builds over a warm cache take a fraction of a second.
    pub fn build(home: &Home, tree: &Tree, blobs: &BlobCache, who: For<'_>) -> Result<Image> {
        if let Some(found) = Image::find(home, tree, who) {
            return Ok(found);
        }
        if tree.fingerprint() == 0 {
            return Err(Error::Internal(
                "image of a tree without fingerprint".into(),
            ));
        }
        let _s =
            tracing::info_span!("image.build", catalog = %tree.catalog_path().display()).entered();
        let t0 = std::time::Instant::now();
        let root = home.images();
        crate::paths::mkdir_all(&root, 0o750)?;
        let name = key(tree, who);
        let tmp = root.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let built = write_into(&tmp, tree, blobs, who, t0);
        let meta = match built {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let dir = root.join(&name);
        let mut renamed = std::fs::rename(&tmp, &dir);
        if renamed.is_err() {
            // Another builder got there first: theirs is as good.
            if let Some(found) = Image::find(home, tree, who) {
                let _ = std::fs::remove_dir_all(&tmp);
                return Ok(found);
            }
            // One `find` refuses (its hololib moved, no image.json): moved
            // aside rather than deleted, as a run may still read through
            // it; gc removes it with the other temp directories.
            let aside = root.join(format!(".{name}.stale.{}.tmp", std::process::id()));
            if std::fs::rename(&dir, &aside).is_ok() {
                renamed = std::fs::rename(&tmp, &dir);
            }
        }
        if let Err(e) = renamed {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io(&dir, e));
        }
        tracing::info!(
            files = meta.files,
            decoded = meta.decoded,
            ms = meta.build_ms,
            "image built at {}",
            dir.display()
        );
        Ok(Image { dir, meta })
    }
}

/// What [`Image::prepare`] achieved.
#[derive(Debug)]
pub enum Prepared {
    /// Built (or found), and it mounts.
    Ready(Image),
    /// This kernel cannot use it (why); runs keep the FUSE tree.
    Unsupported(String),
}

impl Image {
    /// Everything needed before runs use an image: the kernel checked
    /// first (no catalog decoded for nothing), the image built or found,
    /// then mounted once in a throwaway namespace (removed if it fails).
    pub fn prepare(home: &Home, tree: &Tree, blobs: &BlobCache, who: For<'_>) -> Result<Prepared> {
        if let Err(e) = probe_kernel() {
            return Ok(Prepared::Unsupported(e));
        }
        let img = Image::build(home, tree, blobs, who)?;
        match img.probe() {
            Ok(()) => Ok(Prepared::Ready(img)),
            Err(e) => {
                img.remove()?;
                Ok(Prepared::Unsupported(format!("{e}; image removed")))
            }
        }
    }
}

fn write_into(
    tmp: &Path,
    tree: &Tree,
    blobs: &BlobCache,
    who: For<'_>,
    t0: std::time::Instant,
) -> Result<Meta> {
    let data_dir = tmp.join(DATA);
    crate::paths::mkdir_all(&data_dir, 0o750)?;
    let library = blobs.hololib().library_dir();

    let files: Vec<u64> = (ROOT..=tree.len() as u64)
        .filter(|&ino| {
            tree.get(ino)
                .is_some_and(|n| n.kind() == Kind::File && n.size() > 0)
        })
        .collect();
    // The FUSE tree answers EIO for such a file; an image cannot, so such
    // a catalog keeps the FUSE tree (checked before decoding anything).
    for ino in ROOT..=tree.len() as u64 {
        if let Some(d) = tree.get(ino).and_then(|n| n.defect()) {
            return Err(Error::catalog(
                tree.catalog_path(),
                format!("{}: {}", tree.path(ino).display(), d.describe()),
            ));
        }
    }
    // Decode what the cache lacks, on every core: the cold cost.
    // Workers only decode: a small allocation kept by a worker thread
    // between its big temporary buffers pins glibc arena memory (the
    // build's RSS was 10x its heap), so the paths are made afterwards.
    let sources: Vec<Source> = files
        .par_iter()
        .map(|&ino| {
            let n = tree.get(ino).expect("inode from the tree");
            let digest = n.digest().unwrap_or_default();
            let (_file, source) = blobs.open(digest, n.size(), n.rewrite(), who.target_name)?;
            Ok(source)
        })
        .collect::<Result<_>>()?;
    let mut entries: Vec<Entry> = Vec::with_capacity(tree.len());
    for ino in ROOT..=tree.len() as u64 {
        let n = tree.get(ino).expect("inode from the tree");
        let body = match n.kind() {
            Kind::Dir => Body::Dir(
                n.children()
                    .map(|c| {
                        let child = tree.get(c).expect("child inode");
                        (child.name().to_vec(), (c - ROOT) as usize)
                    })
                    .collect(),
            ),
            Kind::File => Body::File {
                size: n.size(),
                redirect: Vec::new(),
            },
            Kind::Symlink => Body::Symlink(n.symlink_target().unwrap_or_default().to_vec()),
        };
        entries.push(Entry {
            perm: n.perm(),
            uid: who.uid,
            gid: who.gid,
            body,
        });
    }
    let mut decoded = 0;
    let mut subdirs = std::collections::HashSet::new();
    let mut uses_library = false;
    for (&ino, source) in files.iter().zip(sources) {
        let n = tree.get(ino).expect("inode from the tree");
        let digest = n.digest().unwrap_or_default();
        if matches!(source, Source::Decoded | Source::Relocated) {
            decoded += 1;
        }
        let redirect = if source == Source::Raw {
            let p = blobs.hololib().blob_path(digest);
            let rel = p.strip_prefix(&library).map_err(|_| {
                Error::Internal(format!("{} is outside {}", p.display(), library.display()))
            })?;
            uses_library = true;
            format!("/{}", rel.to_string_lossy())
        } else {
            let relocated = !n.rewrite().is_empty();
            let from = blobs.entry_path(digest, relocated.then_some(who.target_name));
            let name = from
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sub = &digest[..2];
            let dir = data_dir.join(sub);
            if subdirs.insert(sub.to_string()) {
                crate::paths::mkdir_all(&dir, 0o750)?;
            }
            let to = dir.join(&name);
            match std::fs::hard_link(&from, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::unavailable(
                        format!("linking {} to {}", from.display(), to.display()),
                        format!("{e} (the image and the blob cache must share a filesystem)"),
                    ))
                }
            }
            format!("/{sub}/{name}")
        };
        if let Body::File { redirect: r, .. } = &mut entries[(ino - ROOT) as usize].body {
            *r = redirect.into_bytes();
        }
    }

    let img = erofs::write(&entries, MTIME).map_err(|e| {
        Error::Internal(format!(
            "EROFS image of {}: {e}",
            tree.catalog_path().display()
        ))
    })?;
    let img_path = tmp.join(IMAGE);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&img_path).at(&img_path)?;
        f.write_all(&img).at(&img_path)?;
        // A torn image after a crash must not be found complete.
        f.sync_all().at(&img_path)?;
    }
    let (files, bytes) = tree.totals();
    let meta = Meta {
        catalog: tree.catalog_path().to_path_buf(),
        library: uses_library.then_some(library),
        files,
        bytes,
        decoded,
        build_ms: t0.elapsed().as_millis() as u64,
    };
    let meta_path = tmp.join(META);
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&meta_path, json).at(&meta_path)?;
    Ok(meta)
}
