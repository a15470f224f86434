//! The library's error type. Every variant names what it is about (a file,
//! a digest, a catalog, a system call), so `main` can print one line and
//! pick an exit code.

use nix::errno::Errno;
use std::path::{Path, PathBuf};

/// Exit codes of vhrun's own failures (a task's own code passes through).
/// Documented in README.md ("Exit codes"); keep both in step.
pub mod exit {
    /// Bad command-line usage (clap uses 2 as well).
    pub const USAGE: i32 = 2;
    /// Bad input: a robot.yaml, conda.yaml, env.json, zip or catalog that
    /// cannot be used as it is.
    pub const BAD_INPUT: i32 = 65;
    /// A file or directory the user named (on the command line, or in the
    /// robot.yaml they named) does not exist. Files vhrun looks for in its
    /// own stores are `IO` when missing.
    pub const NOT_FOUND: i32 = 66;
    /// No catalog for the robot's blueprint in any hololib.
    pub const ENV_MISSING: i32 = 67;
    /// The task name is not in robot.yaml.
    pub const UNKNOWN_TASK: i32 = 68;
    /// The kernel or the machine lacks what the sandbox needs (FUSE, user
    /// namespaces, overlayfs, permissions), or refuses a system call
    /// (EPERM, EACCES, ENOSYS, EOPNOTSUPP).
    pub const UNAVAILABLE: i32 = 69;
    /// A bug in vhrun: an impossible state, or a system call refusing its
    /// arguments (EBADF, EFAULT, EINVAL).
    pub const INTERNAL: i32 = 70;
    /// Reading or writing the store or a target failed, or the machine ran
    /// out of a resource: disk space or quota, memory, open files
    /// (EMFILE, ENFILE), processes (EAGAIN); any other failed system call.
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

    /// A path the user gave does not exist (see [`Error::user_path`]).
    #[error("{}: not found", path.display())]
    NotFound { path: PathBuf },

    /// A system call failed. `call` names the call and what it was applied
    /// to ("signalfd", "unmounting /x"); `reason` is the errno's text and
    /// name, and for an exhausted limit which one ([`Error::sys`]).
    #[error("{call}: {reason}")]
    Sys {
        call: String,
        errno: Errno,
        reason: String,
    },

    /// A process or thread vhrun needs could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

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

    /// The machine refuses a step of the virtual holotree (FUSE, a
    /// namespace, overlayfs): `--mode auto` runs from a copy instead.
    #[error("{detail}; {}", refusal.fix())]
    Refused { refusal: Refusal, detail: String },

    /// A remote origin (rccremote) cannot be reached or answers with an
    /// error; `msg` names the request (and the catalog).
    #[error("origin {origin}: {msg}")]
    Remote { origin: String, msg: String },

    /// A remote origin sent data that fails its checks (a blob whose
    /// digest does not match, a zip that is not a hololib delta).
    #[error("origin {origin}: catalog {catalog}: {msg}")]
    RemoteData {
        origin: String,
        catalog: String,
        msg: String,
    },

    /// A step vhrun ran as a child (a lazy fetch, a build) was ended by
    /// a signal, as from Ctrl-C: the run stops there and nothing else is
    /// tried in its place.
    #[error("{what} was ended by {}", signal_name(*signal))]
    Interrupted { what: String, signal: i32 },

    #[error("{0}")]
    Usage(String),

    /// A bug in vhrun: a state the code does not allow for.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `SIGINT`, or `signal 99` for a number with no name.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Io { .. } | Error::Blob { .. } => exit::IO,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::Sys { errno, .. } => errno_exit_code(*errno),
            Error::Spawn { source, .. } => source
                .raw_os_error()
                .map_or(exit::IO, |e| errno_exit_code(Errno::from_raw(e))),
            Error::BadInput { .. } | Error::Catalog { .. } => exit::BAD_INPUT,
            Error::CatalogMissing { .. } | Error::NoSuchCatalog { .. } => exit::ENV_MISSING,
            Error::EnvBuildFailed { code, .. } => *code,
            Error::UnknownTask { .. } => exit::UNKNOWN_TASK,
            Error::Unavailable { .. } | Error::Refused { .. } => exit::UNAVAILABLE,
            Error::Remote { .. } => exit::IO,
            Error::RemoteData { .. } => exit::BAD_INPUT,
            Error::Interrupted { signal, .. } => 128 + signal,
            Error::Usage(_) => exit::USAGE,
            Error::Internal(_) => exit::INTERNAL,
        }
    }

    /// Reading or writing `path` failed (exit 74, a missing file included:
    /// for a path the user gave, use [`Error::user_path`]).
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// Like [`Error::io`] for a path the user gave (a robot.yaml, env.json,
    /// conda.yaml, zip, directory or command): a missing one is `NotFound`
    /// (exit 66).
    pub fn user_path(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return Error::NotFound {
                path: path.as_ref().to_path_buf(),
            };
        }
        Error::io(path, source)
    }

    /// The system call described by `call` failed with `errno`.
    pub fn sys(call: impl Into<String>, errno: Errno) -> Self {
        Error::Sys {
            call: call.into(),
            errno,
            reason: errno_reason(errno),
        }
    }

    /// Starting `program` (a process or a thread) failed.
    pub fn spawn(program: impl Into<String>, source: std::io::Error) -> Self {
        Error::Spawn {
            program: program.into(),
            source,
        }
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

/// A step of the virtual holotree the machine refuses, each with the fix
/// `vhrun doctor` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// No `/dev/fuse`, or the user may not open it.
    DevFuse,
    /// Unprivileged user namespaces refused (sysctl, AppArmor, seccomp).
    UserNamespace,
    /// A mount namespace, or mounting in it, refused.
    MountNamespace,
    /// The kernel refused the FUSE mount.
    FuseMount,
    /// overlayfs refused the layers (module, upper filesystem).
    Overlay,
}

impl Refusal {
    /// What is missing, for the one warning line of a fallback.
    pub fn what(self) -> &'static str {
        match self {
            Refusal::DevFuse => "no usable /dev/fuse",
            Refusal::UserNamespace => "user namespaces refused",
            Refusal::MountNamespace => "mount namespaces refused",
            Refusal::FuseMount => "FUSE mount refused",
            Refusal::Overlay => "overlayfs refused",
        }
    }

    /// How to let vhrun run virtually.
    pub fn fix(self) -> &'static str {
        match self {
            Refusal::DevFuse => {
                "give the container /dev/fuse (--device /dev/fuse), load the fuse module (modprobe fuse), or make it usable as distributions ship it (chmod 0666 /dev/fuse)"
            }
            Refusal::UserNamespace => {
                "allow unprivileged user namespaces (sysctl user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns=0, a seccomp profile permitting unshare), or run as root"
            }
            Refusal::MountNamespace => {
                "allow unshare and mount (in a container: a seccomp profile permitting them, or --privileged)"
            }
            Refusal::FuseMount => "allow FUSE mounts (in a container: CAP_SYS_ADMIN, or user namespaces)",
            Refusal::Overlay => {
                "load overlayfs (modprobe overlay) and keep VHRUN_HOME on a filesystem overlayfs takes as upper layer (ext4, xfs, btrfs, tmpfs)"
            }
        }
    }
}

impl Error {
    /// `refusal`, for `detail` (what was tried and the kernel's answer).
    pub fn refused(refusal: Refusal, detail: impl Into<String>) -> Self {
        Error::Refused {
            refusal,
            detail: detail.into(),
        }
    }

    /// The refusal behind this error, if the machine refused a step of the
    /// virtual holotree.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            Error::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }
}

/// Where a failed system call's errno leads (README.md, "Exit codes").
fn errno_exit_code(errno: Errno) -> i32 {
    match errno {
        // The kernel or its policy refuses (privilege, seccomp, a missing
        // feature): the machine cannot do what vhrun needs.
        Errno::EPERM | Errno::EACCES | Errno::ENOSYS | Errno::EOPNOTSUPP => exit::UNAVAILABLE,
        // vhrun handed the kernel a bad descriptor, address or argument.
        Errno::EBADF | Errno::EFAULT | Errno::EINVAL => exit::INTERNAL,
        // Exhausted resources (EMFILE, ENFILE, ENOMEM, EAGAIN, ENOSPC,
        // EDQUOT), I/O errors (EIO, EROFS) and the rest.
        _ => exit::IO,
    }
}

/// "Too many open files (EMFILE: ...)": the errno's text and name, and
/// for a descriptor limit which one was reached (read as the error is
/// built, just after the failure).
fn errno_reason(errno: Errno) -> String {
    match errno {
        Errno::EMFILE => format!(
            "{} (EMFILE: the open-files limit, `ulimit -n` {}, is reached)",
            errno.desc(),
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map_or("?".into(), |(soft, _)| soft.to_string())
        ),
        Errno::ENFILE => format!(
            "{} (ENFILE: the system-wide open-files limit, fs.file-max, is reached)",
            errno.desc()
        ),
        e => format!("{} ({e:?})", e.desc()),
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    /// A failure is `Error::Io` at `path` (a missing file included).
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
    /// For a path the user gave: a missing one is `Error::NotFound`.
    fn at_user(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
    fn at_user(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::user_path(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_errors_read_as_one_line_and_map_to_documented_codes() {
        let e = Error::sys("signalfd", Errno::ENOMEM);
        assert_eq!(e.to_string(), "signalfd: Out of memory (ENOMEM)");
        assert_eq!(e.exit_code(), exit::IO);
        let e = Error::sys("pipe2", Errno::EMFILE);
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "pipe2: Too many open files (EMFILE: the open-files limit, `ulimit -n` "
            ),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        assert_eq!(e.exit_code(), exit::IO);
        for errno in [
            Errno::ENFILE,
            Errno::ENOSPC,
            Errno::EIO,
            Errno::EROFS,
            Errno::EDQUOT,
        ] {
            assert_eq!(Error::sys("x", errno).exit_code(), exit::IO, "{errno:?}");
        }
        for errno in [Errno::EPERM, Errno::EACCES, Errno::ENOSYS] {
            assert_eq!(Error::sys("x", errno).exit_code(), exit::UNAVAILABLE);
        }
        assert_eq!(Error::sys("x", Errno::EBADF).exit_code(), exit::INTERNAL);
        let e = Error::spawn(
            "vhrun build",
            std::io::Error::from_raw_os_error(libc::EAGAIN),
        );
        assert!(e.to_string().starts_with("cannot start vhrun build: "));
        assert_eq!(e.exit_code(), exit::IO);
    }

    #[test]
    fn only_user_paths_are_not_found() {
        let gone = || std::io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(Error::io("/store/blob", gone()).exit_code(), exit::IO);
        assert_eq!(
            Error::user_path("robot.yaml", gone()).exit_code(),
            exit::NOT_FOUND
        );
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(Error::user_path("robot.yaml", denied).exit_code(), exit::IO);
        let r: std::io::Result<()> = Err(gone());
        assert!(matches!(r.at_user("x.zip"), Err(Error::NotFound { .. })));
    }
}
