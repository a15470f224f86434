//! `$VHRUN_HOME` (default `$ROBOCORP_HOME/vhrun`): vhrun's own state, and
//! the one place that knows its layout. Every path under it is joined
//! here; `admin::gc` walks it from here; README's storage table lists the
//! same entries.
//!
//! ```text
//! $VHRUN_HOME/
//!   hololib/                  environments vhrun's builder made (rcc's format)
//!   blobs/<d[0:2]>/<name>     decompressed (and relocated) blob cache
//!   index/                    binary indexes of catalogs (`tree::index`)
//!   pycache/<catalog>/<fp>/   the persistent bytecode cache
//!   workset/<name>            what a command opened last time (replayed)
//!   runs/<id>/                a live run's overlay dirs, lock, catalog note
//!   servers/                  warm servers: <key>.{sock,lock,log}, <id>/
//!   images/<key>/             kernel images: image.erofs, data/, image.json
//!   locks/<blueprint>.lck     one build per blueprint at a time
//!   locks/lazy-<catalog>.lck  one fetch from the origin per catalog at a time
//!   lazy/<catalog>            catalogs served lazily from an rccremote origin
//!   uv/<version>/uv           uv binaries the builder bootstrapped from the package index
//! ```
//!
//! Everything but `hololib/` can be removed when nothing runs: it is
//! rebuilt on demand.

use std::path::{Path, PathBuf};

/// `$VHRUN_HOME`, absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// vhrun's own hololib, for environments vhrun built itself (rcc never
    /// reads it).
    pub fn hololib(&self) -> PathBuf {
        self.root.join("hololib")
    }

    /// The decompressed blob cache (`lower::blobcache`).
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }

    /// Binary indexes of catalogs, one per catalog content (`tree::index`).
    pub fn index(&self) -> PathBuf {
        self.root.join("index")
    }

    /// Bytecode caches, one per catalog key and content.
    pub fn pycache(&self) -> PathBuf {
        self.root.join("pycache")
    }

    /// Recorded working sets (`lower::fuse::workset`).
    pub fn worksets(&self) -> PathBuf {
        self.root.join("workset")
    }

    /// Run directories (`sandbox::rundir`).
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Warm servers' sockets, locks, logs and run directories
    /// (`lower::server`).
    pub fn servers(&self) -> PathBuf {
        self.root.join("servers")
    }

    /// Kernel images (`lower::image`).
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Catalogs fetched for lazy runs (`remote::lazy`): kept apart from
    /// every hololib until all their blobs are there, because rcc would
    /// take a catalog in its hololib for a whole environment.
    pub fn lazy(&self) -> PathBuf {
        self.root.join("lazy")
    }

    /// uv binaries bootstrapped by the builder (`builder::uv`), one per
    /// version, as rcc keeps its own downloads in `$ROBOCORP_HOME/uv/`.
    pub fn uv(&self) -> PathBuf {
        self.root.join("uv")
    }

    /// Build locks (`builder::lock`) and lazy fetch locks (`remote::lazy`).
    pub fn locks(&self) -> PathBuf {
        self.root.join("locks")
    }
}

impl AsRef<Path> for Home {
    fn as_ref(&self) -> &Path {
        &self.root
    }
}
