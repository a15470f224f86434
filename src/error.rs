//! The library's error type. Every variant names what it is about (a file,
//! a digest, a catalog), so `main` can print one line and pick an exit code.

use std::path::{Path, PathBuf};

/// Exit codes of vhrun's own failures (a task's own code passes through).
/// Documented in README.md ("Exit codes"); keep both in step.
pub mod exit {
    /// Bad command-line usage (clap uses 2 as well).
    pub const USAGE: i32 = 2;
    /// Bad input: a robot.yaml, conda.yaml, env.json, zip or catalog that
    /// cannot be used as it is.
    pub const BAD_INPUT: i32 = 65;
    /// A file or directory the command was pointed at does not exist.
    pub const NOT_FOUND: i32 = 66;
    /// No catalog for the robot's blueprint in any hololib.
    pub const ENV_MISSING: i32 = 67;
    /// The task name is not in robot.yaml.
    pub const UNKNOWN_TASK: i32 = 68;
    /// The kernel or the machine lacks what the sandbox needs (FUSE, user
    /// namespaces, overlayfs, permissions).
    pub const UNAVAILABLE: i32 = 69;
    /// A bug in vhrun.
    pub const INTERNAL: i32 = 70;
    /// Reading or writing the store or a target failed.
    pub const IO: i32 = 74;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not found", path.display())]
    NotFound { path: PathBuf },

    /// A user-supplied file (robot.yaml, conda.yaml, env.json, zip) is malformed.
    #[error("{}: {msg}", path.display())]
    BadInput { path: PathBuf, msg: String },

    /// A catalog file cannot be decoded or fails validation.
    #[error("catalog {}: {msg}", path.display())]
    Catalog { path: PathBuf, msg: String },

    /// A blob is missing, unreadable or fails its digest.
    #[error("blob {digest} ({}): {msg}", path.display())]
    Blob {
        digest: String,
        path: PathBuf,
        msg: String,
    },

    #[error("no catalog for blueprint {blueprint} (from {}) in {searched}; {hint}", file.display())]
    CatalogMissing {
        blueprint: String,
        file: PathBuf,
        searched: String,
        hint: String,
    },

    /// Building a missing environment failed (the build said why).
    #[error("building the environment for blueprint {blueprint} failed (exit {code})")]
    EnvBuildFailed { blueprint: String, code: i32 },

    #[error("no catalog matches {key:?} in {searched}")]
    NoSuchCatalog { key: String, searched: String },

    #[error("{}: unknown task {task:?}; tasks: {available}", file.display())]
    UnknownTask {
        file: PathBuf,
        task: String,
        available: String,
    },

    /// The kernel or machine cannot do what is needed; `hint` says how to fix it.
    #[error("{what}: {hint}")]
    Unavailable { what: String, hint: String },

    #[error("{0}")]
    Usage(String),

    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } | Error::Blob { .. } => exit::IO,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::BadInput { .. } | Error::Catalog { .. } => exit::BAD_INPUT,
            Error::CatalogMissing { .. } | Error::NoSuchCatalog { .. } => exit::ENV_MISSING,
            Error::EnvBuildFailed { code, .. } => *code,
            Error::UnknownTask { .. } => exit::UNKNOWN_TASK,
            Error::Unavailable { .. } => exit::UNAVAILABLE,
            Error::Usage(_) => exit::USAGE,
            Error::Internal(_) => exit::INTERNAL,
        }
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound { path };
        }
        Error::Io { path, source }
    }

    pub fn bad_input(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::BadInput {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn catalog(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Catalog {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn blob(digest: &str, path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Blob {
            digest: digest.to_string(),
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    pub fn unavailable(what: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Unavailable {
            what: what.into(),
            hint: hint.into(),
        }
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
