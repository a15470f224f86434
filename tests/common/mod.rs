#![allow(dead_code, unused_imports)]
//! Helpers shared by the integration tests: every `tests/*.rs` has
//! `mod common;` and takes what it needs from here, so each helper is
//! written once.
//!
//! - `fixtures`: the in-repo fixtures and oracles (`tests/fixtures`,
//!   `tests/oracles`) and `FixtureRobot`, a robot over the rcc fixture export;
//! - `require`: what a test needs of the machine (root, /dev/fuse, a tool
//!   on PATH), failing with a message that says what to do, never skipping;
//! - `rng`: deterministic test randomness; `wait`: polling with a deadline.

mod fixtures;
mod require;
mod rng;
mod wait;

pub use fixtures::{
    extract_fixture, fixture, fixtures_dir, oracle, shared_tool, FixtureRobot, FIXTURE_HOME,
};
pub use require::{require_fuse, require_root, require_tool};
pub use rng::Rng;
pub use wait::wait_until;

use std::path::Path;
use std::process::{Command, Output};

/// `inner` run under `outer` (a wrapper such as `env`, `unshare`, a
/// seccomp filter): `outer`'s arguments, then `inner`'s program and
/// arguments, with `inner`'s environment changes.
pub fn wrapped(mut outer: Command, inner: &Command) -> Command {
    outer.arg(inner.get_program()).args(inner.get_args());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => outer.env(k, v),
            None => outer.env_remove(k),
        };
    }
    outer
}

/// A process's stdout, lossily decoded.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A process's stderr, lossily decoded.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// All members of a (multi-member) gzip stream, decompressed.
pub fn gunzip(raw: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Copy a directory tree (regular files and directories), leaving out
/// `output` and `__pycache__` (what a robot run leaves in a robot dir).
pub fn copy_robot(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if name == "output" || name == "__pycache__" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_robot(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// Every live process /proc shows, with its command line (the arguments,
/// each NUL-terminated; empty for kernel threads and zombies).
pub fn processes() -> Vec<(i32, Vec<u8>)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, cmdline))
        })
        .collect()
}

/// The host's mount table, a line per mount (mount point, root, fs
/// type): what a test compares before and after to see a leaked mount.
pub fn host_mounts() -> std::collections::BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').skip(3).take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// The pids of vhrun's own processes `subcommand` (`__serve`, `__keep`)
/// serving `vhrun_home` (their environment names it).
pub fn vhrun_processes(vhrun_home: &Path, subcommand: &str) -> Vec<u32> {
    let want = format!("VHRUN_HOME={}", vhrun_home.display());
    processes()
        .into_iter()
        .filter(|(pid, cmdline)| {
            let environ = || std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            cmdline
                .split(|&b| b == 0)
                .any(|a| a == subcommand.as_bytes())
                && environ().split(|&b| b == 0).any(|v| v == want.as_bytes())
        })
        .map(|(pid, _)| pid as u32)
        .collect()
}

/// `/dev/fuse` opened to everyone while it lives (it is 0600 on this
/// machine; distributions ship 0666), for tests that run as a user.
/// Serialise its users: the mode is machine-wide.
pub struct DevFuseOpen(u32);

impl DevFuseOpen {
    pub fn new() -> DevFuseOpen {
        DevFuseOpen::with_mode(0o666)
    }

    /// `/dev/fuse` at `mode` while it lives (0600: unusable by users, as on
    /// this machine and in many containers).
    pub fn with_mode(mode: u32) -> DevFuseOpen {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let was = std::fs::metadata("/dev/fuse").unwrap().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode)).unwrap();
        DevFuseOpen(was)
    }
}

impl Drop for DevFuseOpen {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(self.0));
    }
}

/// `chown -hR uid:uid p`.
pub fn chown_tree(p: &Path, uid: u32) {
    let id = Some(nix::unistd::Uid::from_raw(uid));
    let gid = Some(nix::unistd::Gid::from_raw(uid));
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        p,
        id,
        gid,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// What runs left under a `runs/` directory: every entry but the slots
/// (`slot-<n>.run`), which outlive their runs by design, and then only
/// while no run holds them.
pub fn leftover_runs(runs: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            let slot = name.starts_with("slot-") && name.ends_with(".run");
            let free = || std::fs::File::open(p).is_ok_and(|f| f.try_lock().is_ok());
            !(slot && free())
        })
        .collect()
}
