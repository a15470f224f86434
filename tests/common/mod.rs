#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

/// The shared fixtures directory: `$VHRUN_SHARED` if set, else
/// `<repo>/../shared`.
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VHRUN_SHARED").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
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

/// A temporary ROBOCORP_HOME holding the fixture export simple_linux.zip
/// (imported with `vhrun import`), and a robot directory whose conda.yaml
/// is a copy of simple.yaml, so its environment is the fixture catalog.
///
/// The catalog records `/home/user/.robocorp/holotree/...`: commands run
/// with HOME=/home/user, so the space (and the mountpoint vhrun creates on
/// the host, as rcc's restore would) is under /home/user/.robocorp.
pub struct FixtureRobot {
    pub tmp: tempfile::TempDir,
    pub robocorp_home: PathBuf,
    pub vhrun_home: PathBuf,
    /// The robot directory (robot.yaml, conda.yaml).
    pub dir: PathBuf,
}

pub const FIXTURE_HOME: &str = "/home/user";

impl FixtureRobot {
    /// `tasks` is the robot.yaml text before `condaConfigFile` (the tasks).
    pub fn new(tasks: &str) -> FixtureRobot {
        let fx = FixtureRobot::without_import(tasks);
        let fixtures = shared_dir().join("fixtures/rcc");
        let out = fx
            .vhrun()
            .arg("import")
            .arg(fixtures.join("simple_linux.zip"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vhrun import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fx
    }

    /// The same robot over an empty ROBOCORP_HOME (nothing imported).
    pub fn without_import(tasks: &str) -> FixtureRobot {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (FUSE mounts, namespaces); CI runs as root"
        );
        let tmp = tempfile::Builder::new()
            .prefix("vhrun-fx-")
            .tempdir()
            .unwrap();
        let fx = FixtureRobot {
            robocorp_home: tmp.path().join("rh"),
            vhrun_home: tmp.path().join("rh/vhrun"),
            dir: tmp.path().join("robot"),
            tmp,
        };
        let fixtures = shared_dir().join("fixtures/rcc");
        std::fs::create_dir_all(&fx.dir).unwrap();
        std::fs::copy(fixtures.join("simple.yaml"), fx.dir.join("conda.yaml")).unwrap();
        std::fs::write(
            fx.dir.join("robot.yaml"),
            format!("{tasks}condaConfigFile: conda.yaml\nartifactsDir: output\n"),
        )
        .unwrap();
        fx
    }

    pub fn robot_yaml(&self) -> PathBuf {
        self.dir.join("robot.yaml")
    }

    /// A command with this fixture's environment (no inherited logging or
    /// colour settings, stdin closed, in the robot directory).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        c.env("ROBOCORP_HOME", &self.robocorp_home)
            .env("VHRUN_HOME", &self.vhrun_home)
            .env("VHRUN_IMAGE", "off")
            .env("HOME", FIXTURE_HOME)
            .env("VHRUN_RCC", "")
            .env_remove("VHRUN_LOG")
            .env_remove("NO_COLOR")
            .current_dir(&self.dir)
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn vhrun(&self) -> std::process::Command {
        self.cmd(env!("CARGO_BIN_EXE_vhrun"))
    }
}

/// `/dev/fuse` opened to everyone while it lives (it is 0600 on this
/// machine; distributions ship 0666), for tests that run as a user.
/// Serialise its users: the mode is machine-wide.
pub struct DevFuseOpen(u32);

impl DevFuseOpen {
    pub fn new() -> DevFuseOpen {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = std::fs::metadata("/dev/fuse").unwrap().mode() & 0o7777;
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666)).unwrap();
        DevFuseOpen(mode)
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
