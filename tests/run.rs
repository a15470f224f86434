//! `vhrun run` / `vhrun exec` end to end: a real environment (built once by
//! vhrun's own builder from a local CPython), served by FUSE under an
//! overlay in private namespaces, with real Python tasks.
//!
//! Needs root (CI is root), /dev/fuse, a CPython 3.11 and PyPI-free pip
//! (the environment has no pip packages beyond pip itself).

mod common;
use common::{stderr, stdout};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn vhrun() -> &'static str {
    env!("CARGO_BIN_EXE_vhrun")
}

/// The conda.yaml of every test robot: the same blueprint as robots/hello.
const CONDA: &str = "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip=23.2.1\n";

struct Home {
    robocorp_home: PathBuf,
    vhrun_home: PathBuf,
}

/// One ROBOCORP_HOME for the whole file, with the environment built once.
/// A static is never dropped, so it lives at a fixed place in cargo's
/// test scratch directory, emptied when the next test process starts
/// (not a temp dir: one would be left behind by every run).
fn home() -> &'static Home {
    static HOME: OnceLock<Home> = OnceLock::new();
    HOME.get_or_init(|| {
        common::require_root();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("run-home");
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", dir.display()),
        }
        fs::create_dir_all(&dir).unwrap();
        let home = Home {
            robocorp_home: dir.join("rh"),
            vhrun_home: dir.join("rh/vhrun"),
        };
        let robot = robot_dir(&home, "build", "tasks:\n  T:\n    shell: python -c pass\n");
        let out = cmd(&home)
            .args(["build", "-r"])
            .arg(robot.join("robot.yaml"))
            .env("VHRUN_RCC", "")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the test environment failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        home
    })
}

fn cmd(home: &Home) -> Command {
    let mut c = Command::new(vhrun());
    c.env("ROBOCORP_HOME", &home.robocorp_home)
        .env("VHRUN_HOME", &home.vhrun_home)
        .env("VHRUN_IMAGE", "off")
        .env_remove("VHRUN_LOG")
        .stdin(Stdio::null());
    c
}

/// A robot directory with conda.yaml, the given robot.yaml head (tasks...)
/// and the common keys.
fn robot_dir(home: &Home, name: &str, tasks: &str) -> PathBuf {
    let dir = home
        .robocorp_home
        .parent()
        .unwrap()
        .join("robots")
        .join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("conda.yaml"), CONDA).unwrap();
    fs::write(
        dir.join("robot.yaml"),
        format!("{tasks}condaConfigFile: conda.yaml\nartifactsDir: output\nPATH:\n- .\nPYTHONPATH:\n- lib\n"),
    )
    .unwrap();
    dir
}

fn run_robot(home: &Home, dir: &Path, extra: &[&str]) -> Output {
    cmd(home)
        .arg("run")
        .arg("-r")
        .arg(dir.join("robot.yaml"))
        .args(extra)
        .output()
        .unwrap()
}

fn host_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains("vhrun") || l.contains("holotree"))
        .map(str::to_string)
        .collect()
}

/// Path -> sha256 of every file under `root` (the hololib must not change).
fn tree_hash(root: &Path) -> BTreeMap<PathBuf, String> {
    use sha2::{Digest, Sha256};
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else {
                let data = fs::read(&p).unwrap();
                out.insert(p, format!("{:x}", Sha256::digest(&data)));
            }
        }
    }
    out
}

#[test]
fn task_runs_with_rccs_environment_and_the_extra_arguments() {
    let h = home();
    let dir = robot_dir(
        h,
        "env",
        "tasks:\n  Dump:\n    shell: python dump.py fixed\n",
    );
    fs::create_dir_all(dir.join("lib")).unwrap();
    fs::write(dir.join("lib/helper.py"), "VALUE = 'from PYTHONPATH'\n").unwrap();
    fs::write(
        dir.join("dump.py"),
        "import json, os, sys, helper\n\
         json.dump({'env': dict(os.environ), 'argv': sys.argv, 'prefix': sys.prefix,\n\
                    'cwd': os.getcwd(), 'helper': helper.VALUE},\n\
                   open(os.path.join(os.environ['ROBOT_ARTIFACTS'], 'dump.json'), 'w'))\n",
    )
    .unwrap();
    fs::write(
        dir.join("env.json"),
        r#"{"FROM_ENV_JSON": "yes", "PATH": "/ignored"}"#,
    )
    .unwrap();
    let out = cmd(h)
        .args(["run", "-t", "Dump", "-e"])
        .arg(dir.join("env.json"))
        .arg("-r")
        .arg(dir.join("robot.yaml"))
        .args(["--", "extra", "two words"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("VIRTUAL_ENV", "/somewhere")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dump: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("output/dump.json")).unwrap()).unwrap();
    let env = &dump["env"];
    let space = env["CONDA_PREFIX"].as_str().unwrap();
    assert!(space.starts_with(h.robocorp_home.join("holotree/").to_str().unwrap()));
    assert_eq!(dump["prefix"], space);
    assert_eq!(
        dump["argv"],
        serde_json::json!(["dump.py", "fixed", "extra", "two words"])
    );
    assert_eq!(dump["cwd"], dir.to_str().unwrap());
    assert_eq!(dump["helper"], "from PYTHONPATH");
    assert_eq!(env["ROBOT_ROOT"], dir.to_str().unwrap());
    assert_eq!(env["ROBOT_ARTIFACTS"], dir.join("output").to_str().unwrap());
    assert_eq!(env["PYTHONPATH"], dir.join("lib").to_str().unwrap());
    assert_eq!(env["FROM_ENV_JSON"], "yes");
    assert_eq!(env["CONDA_DEFAULT_ENV"], "rcc");
    assert_eq!(env["PYTHON_EXE"], format!("{space}/bin/python3"));
    assert_eq!(env["RCC_HOLOTREE_SPACE_ROOT"], space);
    assert!(env.get("VIRTUAL_ENV").is_none());
    // vhrun's bytecode cache: persistent, writable, and not switched off by
    // an inherited PYTHONDONTWRITEBYTECODE.
    assert!(env.get("PYTHONDONTWRITEBYTECODE").is_none());
    let pycache = env["PYTHONPYCACHEPREFIX"].as_str().unwrap();
    assert!(pycache.starts_with(h.vhrun_home.join("pycache").to_str().unwrap()));
    // PATH: robot PATH first, then the space's bin, env.json's PATH ignored.
    let path: Vec<&str> = env["PATH"].as_str().unwrap().split(':').collect();
    assert_eq!(path[0], dir.to_str().unwrap());
    assert_eq!(path[1], format!("{space}/bin"));
    assert!(!path.contains(&"/ignored"));
    // The same variables as `vhrun vars` prints (rcc's ht vars).
    let vars = cmd(h)
        .args(["vars", "--json", "-r"])
        .arg(dir.join("robot.yaml"))
        .output()
        .unwrap();
    assert!(vars.status.success(), "{}", stderr(&vars));
    let vars: Vec<serde_json::Value> = serde_json::from_slice(&vars.stdout).unwrap();
    for key in [
        "CONDA_PREFIX",
        "ROBOT_ROOT",
        "PYTHON_EXE",
        "RCC_ENVIRONMENT_HASH",
    ] {
        let v = vars.iter().rev().find(|kv| kv["key"] == key).unwrap();
        assert_eq!(v["value"], env[key], "{key}");
    }
}

#[test]
fn rcc_env_reproduces_rccs_bytecode_variables() {
    let h = home();
    let dir = robot_dir(h, "rccenv", "tasks:\n  T:\n    shell: python -c \"import os; open(os.environ['TEMP'] + '/left-by-rccenv', 'w'); print(os.environ['PYTHONDONTWRITEBYTECODE'], os.environ['PYTHONPYCACHEPREFIX'])\"\n");
    let out = run_robot(h, &dir, &["--rcc-env"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let (flag, prefix) = text.trim().split_once(' ').unwrap();
    assert_eq!(flag, "x");
    assert!(prefix.starts_with(h.robocorp_home.join("temp").to_str().unwrap()));
    // What the task left in its temp directory is gone after the run; the
    // directory stays, its run slot's, for the slot's next run.
    assert!(!Path::new(prefix).join("left-by-rccenv").exists());
    assert!(Path::new(prefix).is_dir());
}

#[test]
fn exit_codes_are_the_tasks_and_signals_are_128_plus_n() {
    let h = home();
    let dir = robot_dir(
        h,
        "codes",
        "tasks:\n  Three:\n    shell: python -c \"import sys; sys.exit(3)\"\n  Killed:\n    shell: python -c \"import os, signal; os.kill(os.getpid(), signal.SIGKILL)\"\n  Ok:\n    command:\n    - python\n    - -c\n    - pass\n",
    );
    assert_eq!(run_robot(h, &dir, &["-t", "Three"]).status.code(), Some(3));
    assert_eq!(
        run_robot(h, &dir, &["-t", "Killed"]).status.code(),
        Some(137)
    );
    assert_eq!(run_robot(h, &dir, &["-t", "Ok"]).status.code(), Some(0));
    assert_eq!(
        run_robot(h, &dir, &["-t", "Three", "--rcc-exit-codes"])
            .status
            .code(),
        Some(10)
    );
    let out = run_robot(h, &dir, &["-t", "Nope"]);
    assert_eq!(out.status.code(), Some(68));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Nope") && err.contains("Three"), "{err}");
}

#[test]
fn writes_stay_in_the_run_and_teardown_leaves_nothing() {
    let h = home();
    let before_mounts = host_mounts();
    let dir = robot_dir(
        h,
        "teardown",
        "tasks:\n  Write:\n    shell: sh -c \"echo junk > $CONDA_PREFIX/junk.txt && (sleep 300 & echo $! > $ROBOT_ARTIFACTS/daemon.pid) && cat $CONDA_PREFIX/junk.txt\"\n",
    );
    let hololibs = [
        h.robocorp_home.join("hololib"),
        h.vhrun_home.join("hololib"),
    ];
    let before: Vec<_> = hololibs
        .iter()
        .filter(|p| p.exists())
        .map(|p| tree_hash(p))
        .collect();
    let out = run_robot(h, &dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "junk");
    // Nothing on the host: no mount, no process, no run directory, the
    // environment's path is an empty mountpoint, the hololib unchanged.
    assert_eq!(host_mounts(), before_mounts);
    let space = h.robocorp_home.join("holotree");
    for e in fs::read_dir(&space).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            assert!(
                !p.join("junk.txt").exists(),
                "{} leaked a write",
                p.display()
            );
        }
    }
    let runs = h.vhrun_home.join("runs");
    let live: Vec<_> = fs::read_dir(&runs)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        live.iter().all(|p| !p.join("upper/junk.txt").exists()),
        "{live:?}"
    );
    let after: Vec<_> = hololibs
        .iter()
        .filter(|p| p.exists())
        .map(|p| tree_hash(p))
        .collect();
    assert_eq!(before, after, "the hololib changed");
    // The daemon the task left behind died with the PID namespace (the
    // kernel reaps it asynchronously: allow a moment).
    let pid = fs::read_to_string(dir.join("output/daemon.pid")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{}", pid.trim())).exists()
        && fs::read_to_string(format!("/proc/{}/cmdline", pid.trim()))
            .map(|c| c.starts_with("sleep"))
            .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "daemon {pid} survived the run");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keep_overlay_keeps_the_runs_writes() {
    let h = home();
    let dir = robot_dir(
        h,
        "keep",
        "tasks:\n  Write:\n    shell: sh -c \"echo kept > $CONDA_PREFIX/kept.txt\"\n",
    );
    let keep = dir.join("overlay");
    let out = run_robot(h, &dir, &["--keep-overlay", keep.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(keep.join("kept.txt")).unwrap(), "kept\n");
}

#[test]
fn pre_run_scripts_run_first_in_the_same_sandbox() {
    let h = home();
    let dir = robot_dir(
        h,
        "prerun",
        "tasks:\n  T:\n    shell: cat pre.txt\npreRunScripts:\n- sh -c \"echo prepared > $CONDA_PREFIX/../$(basename $CONDA_PREFIX)/pre.txt\"\n- sh -c \"cp $CONDA_PREFIX/pre.txt .\"\n",
    );
    // The second script reads what the first wrote into the environment:
    // both ran in one overlay. The task then reads it from the robot dir.
    let out = run_robot(h, &dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "prepared");
    // --dev skips preRunScripts (and uses devTasks).
    let dev = robot_dir(
        h,
        "prerun-dev",
        "tasks:\n  T:\n    shell: \"true\"\ndevTasks:\n  D:\n    shell: sh -c \"test ! -e $CONDA_PREFIX/pre.txt && echo clean\"\npreRunScripts:\n- sh -c \"echo x > $CONDA_PREFIX/pre.txt\"\n",
    );
    let out = run_robot(h, &dev, &["--dev", "-t", "D"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "clean");
    // A failing preRunScript ends the run with its code; the task never runs.
    let fail = robot_dir(
        h,
        "prerun-fail",
        "tasks:\n  T:\n    shell: sh -c \"echo ran > $ROBOT_ARTIFACTS/ran\"\npreRunScripts:\n- sh -c \"exit 4\"\n",
    );
    let out = run_robot(h, &fail, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(!fail.join("output/ran").exists());
}

#[test]
fn second_run_imports_from_the_persistent_bytecode_cache() {
    let h = home();
    let dir = robot_dir(
        h,
        "pyc",
        "tasks:\n  T:\n    shell: python -c \"import json, email.mime.text, http.client, os; print(os.environ['PYTHONPYCACHEPREFIX'])\"\n",
    );
    let first = run_robot(h, &dir, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let cache = PathBuf::from(stdout(&first).trim());
    let count = |p: &Path| -> Vec<(PathBuf, std::time::SystemTime)> {
        let mut v = Vec::new();
        let mut stack = vec![p.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    v.push((e.path(), m.modified().unwrap()));
                }
            }
        }
        v.sort();
        v
    };
    let after_first = count(&cache);
    assert!(
        after_first.iter().any(
            |(p, _)| p.to_string_lossy().contains("http/__pycache__/client")
                || p.to_string_lossy().ends_with(".pyc")
        ),
        "no bytecode written to {}",
        cache.display()
    );
    let second = run_robot(h, &dir, &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    // Nothing recompiled: the same .pyc files with the same mtimes.
    assert_eq!(after_first, count(&cache));
}

#[test]
fn signals_are_forwarded_and_a_second_sigint_ends_the_run() {
    let h = home();
    let dir = robot_dir(
        h,
        "signals",
        "tasks:\n  Trap:\n    shell: python trap.py\n  Stubborn:\n    shell: python stubborn.py\n",
    );
    fs::write(
        dir.join("trap.py"),
        "import os, signal, sys, time\n\
         signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n\
         open(os.path.join(os.environ['ROBOT_ARTIFACTS'], 'ready'), 'w').close()\n\
         time.sleep(60)\n",
    )
    .unwrap();
    fs::write(
        dir.join("stubborn.py"),
        "import os, signal, time\n\
         signal.signal(signal.SIGINT, signal.SIG_IGN)\n\
         open(os.path.join(os.environ['ROBOT_ARTIFACTS'], 'ready'), 'w').close()\n\
         time.sleep(60)\n",
    )
    .unwrap();
    for (task, signals, expect) in [
        ("Trap", vec![nix::sys::signal::Signal::SIGTERM], Some(7)),
        (
            "Stubborn",
            vec![
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::Signal::SIGINT,
            ],
            None,
        ),
    ] {
        let ready = dir.join("output/ready");
        let _ = fs::remove_file(&ready);
        let mut child = cmd(h)
            .args(["run", "-t", task, "-r"])
            .arg(dir.join("robot.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "{task} never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        for s in signals {
            nix::sys::signal::kill(pid, s).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
        let started = Instant::now();
        let status = child.wait().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{task}: vhrun did not end"
        );
        match expect {
            Some(code) => assert_eq!(status.code(), Some(code), "{task}"),
            // Killed with the namespace: the task died of SIGKILL.
            None => assert_eq!(status.code(), Some(128 + 9), "{task}"),
        }
    }
}

#[test]
fn exec_runs_any_command_by_robot_or_by_catalog() {
    let h = home();
    let dir = robot_dir(h, "exec", "tasks:\n  T:\n    shell: \"true\"\n");
    let out = cmd(h)
        .args(["exec", "-r"])
        .arg(dir.join("robot.yaml"))
        .args(["--", "python", "-c", "import os, sys; print(sys.prefix == os.environ['CONDA_PREFIX'], os.environ['ROBOT_ROOT'])"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("True {}", dir.display()));
    let catalogs = cmd(h).args(["catalogs", "--json"]).output().unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_slice(&catalogs.stdout).unwrap();
    let blueprint = list[0]["blueprint"].as_str().unwrap().to_string();
    let out = cmd(h)
        .args([
            "exec",
            "--catalog",
            &blueprint,
            "--",
            "sh",
            "-c",
            "echo $RCC_ENVIRONMENT_HASH; test -z \"$ROBOT_ROOT\"",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), blueprint);
}

/// As root the task keeps root's capabilities (it had them before vhrun),
/// but the store is read-only in its view and other runs are hidden. The
/// rootless case (no capabilities, no unmount) is in tests/reliability.rs.
#[test]
fn the_task_cannot_write_the_store_or_see_other_runs() {
    let h = home();
    let dir = robot_dir(h, "isolation", "tasks:\n  T:\n    shell: sh check.sh\n");
    fs::write(
        dir.join("check.sh"),
        "for d in \"$ROBOCORP_HOME/vhrun/hololib/catalog\" \"$ROBOCORP_HOME/vhrun/blobs\"; do\n\
           if touch \"$d/intruder\" 2>/dev/null; then echo \"wrote $d\"; exit 1; fi\n\
         done\n\
         if [ -n \"$(ls -A \"$ROBOCORP_HOME/vhrun/runs\" 2>/dev/null)\" ]; then echo 'runs visible'; exit 1; fi\n\
         echo isolated\n",
    )
    .unwrap();
    let out = run_robot(h, &dir, &[]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).trim(), "isolated");
}

#[test]
fn a_missing_environment_that_needs_rcc_is_a_clear_error() {
    let h = home();
    let dir = robot_dir(h, "needs-rcc", "tasks:\n  T:\n    shell: \"true\"\n");
    fs::write(
        dir.join("conda.yaml"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- nodejs=22.11.0\n",
    )
    .unwrap();
    let before = host_mounts();
    let out = cmd(h)
        .args(["run", "-r"])
        .arg(dir.join("robot.yaml"))
        .env("VHRUN_RCC", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(67), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("nodejs"), "{err}");
    assert!(err.contains("rcc"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(host_mounts(), before);
}

#[test]
fn bad_robot_yaml_is_one_line_naming_the_file() {
    let h = home();
    let dir = robot_dir(h, "bad", "tasks: [not, a, map]\n");
    let out = run_robot(h, &dir, &[]);
    assert_eq!(out.status.code(), Some(65));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("robot.yaml"), "{err}");
    let out = cmd(h)
        .args(["run", "-r", "/nonexistent/robot.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(66));
}

/// The example robots, each from a clean ROBOCORP_HOME: `vhrun run` finds
/// no catalog, builds the environment with vhrun's own builder (pip from
/// PyPI), lifts it and runs the task over the FUSE tree; a second run
/// reuses the catalog.
#[test]
fn example_robots_build_and_run_from_a_clean_home() {
    home();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let expected: &[(&str, &[&str], &str)] = &[
        ("hello", &["hello.txt"], "Hello from a robot!"),
        (
            "report",
            &["report.html", "report.xlsx"],
            "total revenue 72,075.25",
        ),
        (
            "rpa",
            &[
                "log.html",
                "output.xml",
                "purchase-orders/po-gadget-wholesale.csv",
            ],
            "5 items to reorder, 4 purchase orders",
        ),
    ];
    for (name, artifacts, says) in expected {
        let tmp = tempfile::tempdir().unwrap();
        let h = Home {
            robocorp_home: tmp.path().join("rh"),
            vhrun_home: tmp.path().join("vh"),
        };
        let robot = h.robocorp_home.parent().unwrap().join(name);
        common::copy_robot(&repo.join("robots").join(name), &robot);
        let out = cmd(&h)
            .env("VHRUN_RCC", "")
            .args(["run", "-r"])
            .arg(robot.join("robot.yaml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains(says), "{name}: {}", stdout(&out));
        for a in *artifacts {
            let p = robot.join("output").join(a);
            assert!(
                fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false),
                "{name}: no {}",
                p.display()
            );
        }
        let again = cmd(&h)
            .env("VHRUN_RCC", "")
            .args(["run", "-r"])
            .arg(robot.join("robot.yaml"))
            .output()
            .unwrap();
        assert!(again.status.success(), "{name}: {}", stderr(&again));
        assert!(
            !stderr(&again).contains("building"),
            "{name} rebuilt: {}",
            stderr(&again)
        );
    }
}

/// `vhrun mount -r robot.yaml`: the robot's environment, resolved as a
/// run resolves it, served at a mountpoint until SIGTERM.
#[test]
fn mount_by_robot_serves_the_robots_environment() {
    let h = home();
    let dir = robot_dir(h, "mount", "tasks:\n  T:\n    shell: \"true\"\n");
    // A sibling of the environment's path, with a 24-byte name as rewrites need.
    let mountpoint = h
        .robocorp_home
        .join("holotree")
        .join("m0000000_mountbyrobot00t");
    let mut child = cmd(h)
        .args(["mount", "-r"])
        .arg(dir.join("robot.yaml"))
        .arg(&mountpoint)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let python = mountpoint.join("bin/python3");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !python.exists() {
        assert!(Instant::now() < deadline, "mount never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new(&python)
        .args(["-c", "import sys, json; print(sys.prefix)"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), mountpoint.to_str().unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!mountpoint.exists());
}

/// `--rcc-exit-codes` says which command failed, as rcc does: 12 for a
/// preRunScript, 11 for one that cannot be split into words, 10 for the
/// task. Without it the failing command's own code (65 for the script
/// that cannot be split). Over the fixture environment (shell commands)
/// and for a shell robot (no environment, no sandbox).
#[test]
fn rcc_exit_codes_tell_a_failed_pre_run_script_from_a_failed_task() {
    let fx = common::FixtureRobot::new("");
    let robot = |pre: &str, env: bool| {
        let conda = if env {
            "condaConfigFile: conda.yaml\n"
        } else {
            ""
        };
        fs::write(
            fx.robot_yaml(),
            format!(
                "tasks:\n  Ok:\n    shell: sh -c \"echo ran > output/ran\"\n  Fail:\n    shell: sh -c \"exit 3\"\n\
                 preRunScripts:\n{pre}{conda}artifactsDir: output\n"
            ),
        )
        .unwrap();
        let _ = fs::remove_file(fx.dir.join("output/ran"));
    };
    let run = |task: &str, rcc: bool| {
        let mut c = fx.vhrun();
        c.args(["run", "-t", task]);
        if rcc {
            c.arg("--rcc-exit-codes");
        }
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{err}");
        (out.status.code().unwrap(), err)
    };
    let ran = || fx.dir.join("output/ran").exists();
    for env in [true, false] {
        // a preRunScript fails: the task never runs
        robot("- \"true\"\n- sh -c \"exit 4\"\n", env);
        assert_eq!(run("Ok", false).0, 4, "env {env}");
        assert!(!ran());
        assert_eq!(run("Ok", true).0, 12, "env {env}");
        assert!(!ran());
        // the scripts pass, the task fails
        robot("- \"true\"\n", env);
        assert_eq!(run("Fail", false).0, 3, "env {env}");
        assert_eq!(run("Fail", true).0, 10, "env {env}");
        assert_eq!(run("Ok", true).0, 0, "env {env}");
        assert!(ran(), "env {env}");
        // a script that cannot be split: one line naming robot.yaml
        robot("- sh -c \"unclosed\n", env);
        for (rcc, code) in [(false, 65), (true, 11)] {
            let (got, err) = run("Ok", rcc);
            assert_eq!(got, code, "env {env}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.contains("robot.yaml") && err.contains("preRunScripts"),
                "{err}"
            );
            assert!(!ran());
        }
    }
}

/// A run's environment holds what `vhrun vars` prints, value for value
/// (TEMP/TMP aside: rcc makes one per process), settings.yaml's network
/// variables and `-w`'s RC_WORKSPACE_ID included. Control Room variables
/// the caller exports pass through to the task, and then `-w` does not
/// warn.
#[test]
fn run_environment_matches_vars_with_settings_and_workspace() {
    let fx =
        common::FixtureRobot::new("tasks:\n  Env:\n    shell: sh -c \"env -0 > output/env\"\n");
    fs::write(
        fx.robocorp_home.join("settings.yaml"),
        "certificates:\n  legacy-renegotiation-allowed: yes\n  verify-ssl: true\nnetwork:\n  http-proxy: http://proxy.corp:3128\n",
    )
    .unwrap();
    fs::write(fx.robocorp_home.join("ca-bundle.pem"), "pem\n").unwrap();
    let vars = fx.vhrun().args(["vars", "-w", "ws-1"]).output().unwrap();
    assert!(vars.status.success(), "{}", stderr(&vars));
    let mut expected = BTreeMap::new();
    for line in stdout(&vars).lines() {
        let (k, v) = line
            .strip_prefix("export ")
            .unwrap()
            .split_once('=')
            .unwrap();
        expected.insert(k.to_string(), v.to_string());
    }
    for k in [
        "RC_TLS_LEGACY_RENEGOTIATION_ALLOWED",
        "http_proxy",
        "HTTP_PROXY",
        "SSL_CERT_FILE",
        "RC_WORKSPACE_ID",
    ] {
        assert!(expected.contains_key(k), "{k}: {}", stdout(&vars));
    }
    assert!(!expected.contains_key("MAMBA_SSL_VERIFY"));
    let out = fx
        .vhrun()
        .args(["run", "-w", "ws-1"])
        .env("RC_API_SECRET_HOST", "https://cr.example")
        .env("RC_API_WORKITEM_HOST", "https://cr.example")
        .env("RC_API_SECRET_TOKEN", "secret")
        .env("RC_API_WORKITEM_TOKEN", "workitem")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("--workspace"), "{}", stderr(&out));
    let raw = fs::read(fx.dir.join("output/env")).unwrap();
    let got: BTreeMap<String, String> = raw
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (k, v) = std::str::from_utf8(e).unwrap().split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    for (k, v) in &expected {
        if k != "TEMP" && k != "TMP" {
            assert_eq!(got.get(k), Some(v), "{k}");
        }
    }
    assert_eq!(got["RC_WORKSPACE_ID"], "ws-1");
    assert_eq!(got["RC_API_SECRET_TOKEN"], "secret");
    // without them, the run says what -w does not give
    let out = fx.vhrun().args(["run", "-w", "ws-1"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("RC_API_SECRET_HOST"),
        "{}",
        stderr(&out)
    );
}

/// A robot shipped with `hololib.zip` beside robot.yaml (rcc restores from
/// it): with its catalog missing, vhrun imports the zip and runs, and the
/// next run finds the catalog without it. A zip without the robot's
/// catalog is one line naming it, and nothing is imported; with the
/// catalog present the zip is not even read.
#[test]
fn hololib_zip_beside_robot_yaml_provides_the_environment() {
    let catalog = |fx: &common::FixtureRobot| {
        fx.robocorp_home
            .join("hololib/catalog/c34ed96c2d8a459av12.linux_amd64")
    };
    let task = "tasks:\n  T:\n    shell: sh -c \"cat $CONDA_PREFIX/identity.yaml\"\n";

    let fx = common::FixtureRobot::without_import(task);
    fs::copy(
        common::fixture("simple_linux.zip"),
        fx.dir.join("hololib.zip"),
    )
    .unwrap();
    assert!(!catalog(&fx).exists());
    let out = fx.vhrun().arg("run").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ca-certificates"), "{}", stdout(&out));
    assert!(catalog(&fx).is_file());
    // imported for good: the zip is no longer needed
    fs::remove_file(fx.dir.join("hololib.zip")).unwrap();
    let out = fx.vhrun().args(["exec", "--", "true"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // another platform's export: refused before anything is imported
    let fx = common::FixtureRobot::without_import(task);
    let zip = fx.dir.join("hololib.zip");
    fs::copy(common::fixture("simple_darwin.zip"), &zip).unwrap();
    let out = fx
        .vhrun()
        .args(["run", "--rcc-exit-codes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(zip.to_str().unwrap()) && err.contains("c34ed96c2d8a459av12.linux_amd64"),
        "{err}"
    );
    assert!(!fx.robocorp_home.join("hololib/catalog").exists());

    // a broken zip is the import's error, naming it
    fs::write(&zip, b"PK not a zip").unwrap();
    let out = fx.vhrun().arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(zip.to_str().unwrap()),
        "{}",
        stderr(&out)
    );

    // the catalog is there already: the zip is left alone
    let fx = common::FixtureRobot::new(task);
    fs::write(fx.dir.join("hololib.zip"), b"PK not a zip").unwrap();
    let out = fx.vhrun().arg("run").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
