//! `vhrun install-shim`: the `rcc` wrapper end to end, over the fixture
//! environment (simple_linux.zip) and with a recording stand-in for the
//! real rcc (rcc itself cannot be installed here): `rcc run --virtual`
//! must run the task through vhrun in the mounted environment, every other
//! command must reach the stand-in with its arguments unchanged.
//!
//! Needs root (FUSE mounts, namespaces); CI runs as root.

mod common;

use common::{stderr, stdout, FixtureRobot};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

/// A task that proves where it ran: the environment is mounted (overlay
/// over FUSE) at CONDA_PREFIX, with the catalog's files in it.
const TASKS: &str = r#"tasks:
  Task:
    shell: sh -c 'test -f "$CONDA_PREFIX/identity.yaml" && grep -F " $CONDA_PREFIX " /proc/self/mountinfo | grep -q " - overlay " && echo "ran in $CONDA_PREFIX" && printf "%s\n" "$CONDA_PREFIX" "$RCC_EXE" "$@" > "$ROBOT_ARTIFACTS/marker"' task
  Fail:
    shell: sh -c 'echo failing; exit 3'
"#;

struct Setup {
    fx: FixtureRobot,
    shim_dir: PathBuf,
    real_dir: PathBuf,
    argv_file: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let fx = FixtureRobot::new(TASKS);
        let shim_dir = fx.tmp.path().join("shim");
        let real_dir = fx.tmp.path().join("real");
        let argv_file = fx.tmp.path().join("real-rcc.argv");
        fs::create_dir_all(&real_dir).unwrap();
        // The stand-in: records its arguments NUL-separated, says hello on
        // stdout and exits 7 (so the exit code is seen to pass through).
        write_exe(
            &real_dir.join("rcc"),
            &format!(
                "#!/bin/sh\nprintf '%s\\0' \"$@\" > '{}'\necho 'real rcc here'\nexit 7\n",
                argv_file.display()
            ),
        );
        let out = fx
            .vhrun()
            .arg("install-shim")
            .arg(&shim_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out).trim(), shim_dir.join("rcc").to_str().unwrap());
        Setup {
            fx,
            shim_dir,
            real_dir,
            argv_file,
        }
    }

    /// `rcc ARGS` with PATH = the given dirs, then the system's.
    fn rcc(&self, path: &[&Path], args: &[&str]) -> Output {
        let mut dirs: Vec<PathBuf> = path.iter().map(|p| p.to_path_buf()).collect();
        dirs.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(PathBuf::from));
        let path = std::env::join_paths(dirs).unwrap();
        self.fx
            .cmd("rcc")
            .env("PATH", &path)
            .args(args)
            .output()
            .unwrap()
    }

    fn recorded(&self) -> Option<Vec<String>> {
        let raw = fs::read(&self.argv_file).ok()?;
        let Some(raw) = raw.strip_suffix(&[0]) else {
            return Some(Vec::new());
        };
        Some(
            raw.split(|&b| b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
        )
    }
}

fn write_exe(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn marker(s: &Setup) -> Vec<String> {
    fs::read_to_string(s.fx.dir.join("output/marker"))
        .unwrap_or_else(|e| panic!("the task left no marker: {e}"))
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn run_virtual_goes_to_vhrun_and_everything_else_to_the_real_rcc() {
    let s = Setup::new();
    let path = [s.shim_dir.as_path(), s.real_dir.as_path()];

    let out = s.rcc(
        &path,
        &["run", "--virtual", "-r", "robot.yaml", "-t", "Task"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        s.recorded().is_none(),
        "the real rcc was called for run --virtual"
    );
    let m = marker(&s);
    let prefix = &m[0];
    assert!(
        prefix.starts_with("/home/user/.robocorp/holotree/"),
        "CONDA_PREFIX {prefix}"
    );
    assert_eq!(stdout(&out), format!("ran in {prefix}\n"));
    // A task that calls $RCC_EXE reaches rcc through the shim again.
    assert_eq!(m[1], s.shim_dir.join("rcc").to_str().unwrap());

    // Anything else: the stand-in, arguments byte for byte, its exit code.
    let args = [
        "holotree",
        "list",
        "--json",
        "two words",
        "--virtual-ish",
        "",
        "-r",
    ];
    let out = s.rcc(&path, &args);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "real rcc here\n");
    assert_eq!(s.recorded().unwrap(), args);
    // `run` without --virtual and --virtual after `--` are rcc's business.
    for args in [
        &["run", "-r", "robot.yaml", "-t", "Task"][..],
        &["task", "run", "-t", "Task", "--", "--virtual"],
    ] {
        fs::remove_file(&s.argv_file).ok();
        let out = s.rcc(&path, args);
        assert_eq!(out.status.code(), Some(7), "{args:?}: {}", stderr(&out));
        assert_eq!(s.recorded().unwrap(), args);
    }
}

#[test]
fn task_run_maps_rccs_flags_and_exit_codes() {
    let s = Setup::new();
    let path = [s.shim_dir.as_path(), s.real_dir.as_path()];
    let default = {
        let out = s.rcc(&path, &["run", "--virtual", "-t", "Task"]);
        assert!(out.status.success(), "{}", stderr(&out));
        marker(&s)[0].clone()
    };
    fs::rename(s.fx.dir.join("robot.yaml"), s.fx.dir.join("other.yaml")).unwrap();
    let out = s.rcc(
        &path,
        &[
            "--controller",
            "ci",
            "t",
            "r",
            "--robot=other.yaml",
            "--virtual",
            "-tTask",
            "-s",
            "space2",
            "-f",
            "--minutes",
            "30",
            "--interactive",
            "extra",
            "--",
            "--two words",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(s.recorded().is_none());
    let m = marker(&s);
    // Another controller and space: another space directory, as with rcc.
    assert_ne!(m[0], default);
    assert_eq!(m[2..], ["extra", "--two words"]);
    let err = stderr(&out);
    assert!(err.contains("--force: ignored"), "{err}");
    assert!(err.contains("--minutes: ignored"), "{err}");
    assert!(!err.contains("--interactive"), "{err}");

    // rcc's exit code for a failed task is 10; the task's output passes.
    let out = s.rcc(
        &path,
        &[
            "run",
            "--virtual",
            "-r",
            "other.yaml",
            "-t",
            "Fail",
            "--silent",
        ],
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert_eq!(stdout(&out), "failing\n");
    assert_eq!(stderr(&out), "");

    // An unknown flag is an error, as in rcc, and reaches nobody.
    let out = s.rcc(&path, &["run", "--virtual", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown flag --bogus"),
        "{}",
        stderr(&out)
    );
    assert!(s.recorded().is_none());
}

#[test]
fn without_a_real_rcc_only_virtual_runs_work() {
    let s = Setup::new();
    // A second shim further down PATH is skipped too.
    let other = s.fx.tmp.path().join("other-shim");
    let out =
        s.fx.vhrun()
            .arg("install-shim")
            .arg(&other)
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let path = [s.shim_dir.as_path(), other.as_path()];

    let out = s.rcc(&path, &["holotree", "list"]);
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no real rcc on PATH") && err.contains("install rcc"),
        "{err}"
    );

    let out = s.rcc(&path, &["run", "--virtual", "-t", "Task"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // With the real rcc after both shims, it is found.
    let out = s.rcc(&[&s.shim_dir, &other, &s.real_dir], &["version"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(s.recorded().unwrap(), ["version"]);
}

#[test]
fn install_never_replaces_a_real_rcc_and_upgrades_a_shim() {
    let s = Setup::new();
    let before = fs::read(s.real_dir.join("rcc")).unwrap();
    let out =
        s.fx.vhrun()
            .arg("install-shim")
            .arg(&s.real_dir)
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(s.real_dir.join("rcc").to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(s.real_dir.join("rcc")).unwrap(), before);

    // Reinstalling over a shim is an upgrade; --vhrun names the binary.
    let link = s.fx.tmp.path().join("vhrun-link");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vhrun"), &link).unwrap();
    let out =
        s.fx.vhrun()
            .arg("install-shim")
            .arg(&s.shim_dir)
            .arg("--vhrun")
            .arg(&link)
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = fs::read_to_string(s.shim_dir.join("rcc")).unwrap();
    assert!(text.contains(link.to_str().unwrap()), "{text}");
    let path = [s.shim_dir.as_path(), s.real_dir.as_path()];
    let out = s.rcc(&path, &["run", "--virtual", "-t", "Task"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The vhrun it names is gone: one clear line, exit 127.
    fs::remove_file(&link).unwrap();
    let out = s.rcc(&path, &["run", "--virtual", "-t", "Task"]);
    assert_eq!(out.status.code(), Some(127));
    let err = stderr(&out);
    assert!(
        err.contains("vhrun is no longer at") && err.contains("vhrun-link"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
