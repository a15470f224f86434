//! What a test needs of the machine. README's test command (`scripts/test`)
//! runs the suite as root and installs the tools; a test that finds one
//! missing fails saying what to do, never skips and never fails with a
//! bare ENOENT.

use std::path::Path;

/// Panics unless the test runs as root (FUSE mounts, overlayfs, mount and
/// PID namespaces): the suite runs as root (README "Tests"; CI is root).
#[track_caller]
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (FUSE mounts, overlayfs, namespaces): run the suite as root \
         (`sudo scripts/test`, README \"Tests\"; CI runs as root)"
    );
}

/// `require_root` and `/dev/fuse`.
#[track_caller]
pub fn require_fuse() {
    require_root();
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: `modprobe fuse` (and install fuse3); the FUSE tests need it"
    );
}

/// Panics unless `tool` (a name looked up on PATH, or a path) can be run,
/// naming the package that provides it.
#[track_caller]
pub fn require_tool(tool: &str, package: &str) {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if tool.contains('/') {
        runnable(Path::new(tool))
    } else {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| runnable(&d.join(tool))))
    };
    assert!(
        found,
        "`{tool}` is not on PATH: install the package {package} \
         (`apt-get install {package}`; README's test command `scripts/test` installs it)"
    );
}
