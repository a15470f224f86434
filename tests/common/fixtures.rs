//! The fixtures in the repository (tests/fixtures/README.md says where each
//! file came from) and a robot over the rcc fixture export.

use std::path::{Path, PathBuf};

/// `tests/fixtures/rcc`: rcc's exports of one small environment
/// (`simple.yaml`, `simple_{linux,darwin,windows}.zip`).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rcc")
}

/// A file of `tests/fixtures/rcc`.
#[track_caller]
pub fn fixture(name: &str) -> PathBuf {
    let p = fixtures_dir().join(name);
    assert!(p.is_file(), "fixture missing: {}", p.display());
    p
}

/// A script of `tests/oracles` (the independent Python oracles of the
/// hololib format, make-env.sh).
#[track_caller]
pub fn oracle(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/oracles")
        .join(name);
    assert!(p.is_file(), "oracle missing: {}", p.display());
    p
}

/// A tool of `../shared/tools/rcc` (the real `rcc`, `rccremote-serve.sh`),
/// or of `$VHRUN_SHARED/tools/rcc`. Only `#[ignore]`d interop tests may
/// call this: a clone of the repository alone has no `../shared`, and
/// `.ci/run` runs those tests explicitly, with `../shared` beside it.
#[track_caller]
pub fn shared_tool(name: &str) -> PathBuf {
    let shared = std::env::var_os("VHRUN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let p = shared.join("tools/rcc").join(name);
    assert!(
        p.is_file(),
        "{}: missing (interop tests need ../shared beside the repository, or VHRUN_SHARED)",
        p.display()
    );
    p
}

/// Unzip the fixture export `zip` (e.g. `simple_linux.zip`) into
/// `hololib`, as `rcc holotree import` lays it out (no vhrun involved).
pub fn extract_fixture(zip: &str, hololib: &Path) {
    let f = std::fs::File::open(fixture(zip)).unwrap();
    zip::ZipArchive::new(f).unwrap().extract(hololib).unwrap();
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
        let out = fx
            .vhrun()
            .arg("import")
            .arg(fixture("simple_linux.zip"))
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
        super::require_root();
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
        std::fs::create_dir_all(&fx.dir).unwrap();
        std::fs::copy(fixture("simple.yaml"), fx.dir.join("conda.yaml")).unwrap();
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
