//! vhrun's environment builder, `vhrun build`, `vhrun gc` and `vhrun doctor`
//! against real interpreters, real pip, real files and locks.
//!
//! Needs a local CPython 3.11 (PATH, pyenv or uv) and patchelf; the pip
//! tests need the package index (PyPI or PIP_INDEX_URL). Missing tools make
//! the tests fail with a message saying what to install, never skip.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use vhrun::builder::{self, BuildOutcome, Progress};
use vhrun::hololib::Locations;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A private ROBOCORP_HOME / VHRUN_HOME / HOME under one tempdir.
struct Homes {
    tmp: tempfile::TempDir,
}

impl Homes {
    fn new() -> Homes {
        Homes {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn robocorp(&self) -> PathBuf {
        self.tmp.path().join("robocorp")
    }
    fn vhrun(&self) -> PathBuf {
        self.tmp.path().join("vhrun")
    }
    fn home(&self) -> PathBuf {
        self.tmp.path().join("home")
    }
    fn locations(&self) -> Locations {
        Locations::resolve(
            self.robocorp(),
            vhrun::home::Home::new(self.vhrun()),
            Some(self.home()),
            &self.tmp.path().join("no-shared-holotree"),
        )
    }
    /// Entries of the directory where stages and spaces live.
    fn holotree_entries(&self) -> Vec<String> {
        match std::fs::read_dir(self.locations().holotree) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        }
    }
    /// Nothing left beside the spaces: no stage, no space.
    #[track_caller]
    fn assert_no_stage(&self) {
        let left = self.holotree_entries();
        assert!(left.is_empty(), "{left:?}");
    }
    /// The CLI with only these homes (pyenv's root kept, so interpreters
    /// installed there are still found).
    fn vhrun_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vhrun"));
        c.args(args)
            .env("ROBOCORP_HOME", self.robocorp())
            .env("VHRUN_HOME", self.vhrun())
            .env("VHRUN_IMAGE", "off")
            .env("HOME", self.home())
            .env("PYENV_ROOT", pyenv_root())
            .env("NO_COLOR", "1")
            .env_remove("VHRUN_RCC");
        c
    }
}

fn pyenv_root() -> PathBuf {
    std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".pyenv"))
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A robot directory with this conda.yaml.
fn robot(dir: &Path, conda: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("robot.yaml"),
        "tasks:\n  t:\n    shell: python -c pass\ncondaConfigFile: conda.yaml\nartifactsDir: output\n",
    )
    .unwrap();
    std::fs::write(dir.join("conda.yaml"), conda).unwrap();
    dir.join("robot.yaml")
}

fn require_python311() {
    let (found, _) = builder::python::discover(None, &[]);
    assert!(
        found
            .iter()
            .any(|i| i.unusable.is_none() && i.version.minor() == (3, 11)),
        "these tests need a copyable CPython 3.11 (`pyenv install 3.11` or `uv python install 3.11`); found {:?}",
        found.iter().map(|i| i.version.to_string()).collect::<Vec<_>>()
    );
    common::require_tool("patchelf", "patchelf");
}

/// `builder::build_own` as a first build: default options, no catalog
/// found meanwhile, no progress shown; `lift` gets the staged environment.
fn build(
    locations: &vhrun::hololib::Locations,
    conda: &Path,
    bp: &vhrun::blueprint::Blueprint,
    lift: &dyn Fn(&Path, &Path) -> vhrun::Result<String>,
) -> vhrun::Result<builder::BuildOutcome> {
    builder::build_own(
        locations,
        conda,
        bp,
        &builder::OwnBuild::default(),
        &Progress::hidden(),
        &|| None,
        lift,
    )
}

fn run<C: std::borrow::BorrowMut<Command>>(mut cmd: C) -> Output {
    cmd.borrow_mut().output().expect("process starts")
}

fn is_elf(p: &Path) -> bool {
    std::fs::read(p)
        .map(|d| d.starts_with(b"\x7fELF"))
        .unwrap_or(false)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What the lift seam saw of the staged directory.
#[derive(Debug, Default)]
struct Seen {
    dir: PathBuf,
    blueprint_file: PathBuf,
}

#[test]
fn hello_environment_is_a_relocated_copy_that_runs() {
    require_python311();
    let h = Homes::new();
    let locations = h.locations();
    let conda = repo().join("robots/hello/conda.yaml");
    let bp = builder::blueprint_of(&conda).unwrap();
    let seen = RefCell::new(Seen::default());
    let outcome = build(&locations, &conda, &bp, &|dir, file| {
        inspect_stage(dir, &locations, &bp);
        *seen.borrow_mut() = Seen {
            dir: dir.to_path_buf(),
            blueprint_file: file.to_path_buf(),
        };
        Ok("lifted-key".to_string())
    })
    .unwrap();
    let BuildOutcome::Built {
        key, interpreter, ..
    } = outcome
    else {
        panic!("not built: {outcome:?}")
    };
    assert_eq!(key, "lifted-key");
    assert_eq!(interpreter.version.minor(), (3, 11));
    let seen = seen.into_inner();
    assert_eq!(seen.blueprint_file, conda);
    assert!(!seen.dir.exists(), "staging directory left behind");
    h.assert_no_stage();
}

/// Everything the store will receive, checked while it still exists.
fn inspect_stage(dir: &Path, locations: &Locations, bp: &builder::Blueprint) {
    // Beside the spaces, with an identity-length name.
    assert_eq!(dir.parent().unwrap(), locations.holotree);
    assert_eq!(
        dir.file_name().unwrap().len(),
        locations.stage_identity().len()
    );
    let history = std::fs::read_to_string(dir.join("conda-meta/history")).unwrap();
    let base = history
        .lines()
        .find_map(|l| l.strip_prefix("# base: "))
        .and_then(|l| l.split(" (CPython").next())
        .expect("history names the base interpreter");
    assert!(Path::new(base).is_dir(), "{history}");
    assert_eq!(
        std::fs::read_to_string(dir.join("identity.yaml")).unwrap(),
        bp.text
    );

    // The copy runs from itself, extension modules included.
    let py = dir.join("bin/python3");
    let out = run(Command::new(&py).env("PYTHONDONTWRITEBYTECODE", "1").args([
        "-I",
        "-B",
        "-c",
        "import sys, ssl, sqlite3, ctypes, json; print(sys.prefix); print(sys.base_prefix); print(open('/proc/self/maps').read())",
    ]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let mut lines = stdout.lines();
    assert_eq!(lines.next().unwrap(), dir.to_str().unwrap());
    assert_eq!(lines.next().unwrap(), dir.to_str().unwrap());
    for mapped in stdout.lines().filter(|l| l.contains("libpython")) {
        assert!(
            mapped.contains(dir.to_str().unwrap()),
            "libpython mapped from outside the stage: {mapped}"
        );
    }
    // pip came from ensurepip, into the stage's own site-packages.
    let out = run(Command::new(&py).env("PYTHONDONTWRITEBYTECODE", "1").args([
        "-I",
        "-B",
        "-m",
        "pip",
        "--version",
    ]));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("pip 23.2.1 from "), "{stdout}");
    assert!(stdout.contains(dir.to_str().unwrap()), "{stdout}");

    // Relocation: no text file names the source prefix any more, some name
    // the stage; every RUNPATH into the prefix became $ORIGIN-relative.
    let mut files = Vec::new();
    walk(dir, &mut files);
    let (mut relocated, mut runpaths) = (0, 0);
    for f in &files {
        if f.ends_with("conda-meta/history") {
            continue;
        }
        let data = std::fs::read(f).unwrap();
        if is_elf(f) {
            let rp = run(Command::new("patchelf").arg("--print-rpath").arg(f));
            let rp = String::from_utf8_lossy(&rp.stdout).trim().to_string();
            assert!(!rp.contains(base), "{}: RUNPATH {rp}", f.display());
            if rp.contains("$ORIGIN") {
                runpaths += 1;
            }
        } else if !data.contains(&0) {
            assert!(
                !contains(&data, base.as_bytes()),
                "{} still names {base}",
                f.display()
            );
            if contains(&data, dir.as_os_str().as_encoded_bytes()) {
                relocated += 1;
            }
        }
        let name = f.file_name().unwrap().to_string_lossy();
        assert!(
            !name.ends_with(".pyc") && !f.to_string_lossy().contains("__pycache__"),
            "bytecode in the stage: {}",
            f.display()
        );
    }
    assert!(relocated >= 3, "only {relocated} relocated text files");
    assert!(runpaths >= 1, "no $ORIGIN RUNPATH");
    let exe_rp = run(Command::new("patchelf")
        .arg("--print-rpath")
        .arg(dir.join("bin/python3.11")));
    let exe_rp = String::from_utf8_lossy(&exe_rp.stdout).trim().to_string();
    assert!(
        exe_rp.is_empty() || exe_rp.starts_with("$ORIGIN"),
        "python3.11 RUNPATH {exe_rp}"
    );

    // Only CPython's own files: no third-party scripts or packages of the
    // source, no test suite.
    for entry in std::fs::read_dir(dir.join("bin")).unwrap().flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        assert!(
            ["python", "pydoc", "idle", "2to3", "pip"]
                .iter()
                .any(|p| n.starts_with(p)),
            "unexpected script bin/{n}"
        );
    }
    let site = dir.join("lib/python3.11/site-packages");
    for entry in std::fs::read_dir(&site).unwrap().flatten() {
        let n = entry.file_name().to_string_lossy().to_lowercase();
        assert!(
            n.starts_with("pip")
                || n.starts_with("setuptools")
                || n.starts_with("_distutils_hack")
                || n.starts_with("distutils-precedence")
                || n.starts_with("pkg_resources"),
            "site-packages holds {n}, not from ensurepip"
        );
    }
    assert!(!dir.join("lib/python3.11/test").exists());
}

/// `vhrun: copying CPython: 1312 files, 57.6 MB (0.4s)`: a finished
/// build phase, as printed off a terminal.
fn is_phase_line(l: &str) -> bool {
    l.rsplit_once(" (").is_some_and(|(_, t)| {
        t.strip_suffix("s)")
            .is_some_and(|secs| secs.parse::<f64>().is_ok())
    })
}

fn expect_failure(o: &Output, code: i32) -> String {
    let (stdout, stderr) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("vhrun: ")
                && !l.starts_with("vhrun: building")
                && !is_phase_line(l))
            .count(),
        1,
        "one error line expected: {stderr}"
    );
    stderr
}

#[test]
fn unsatisfiable_python_names_the_spec_line_and_the_interpreters() {
    let h = Homes::new();
    let r = robot(
        &h.tmp.path().join("bot"),
        "channels:\n- conda-forge\ndependencies:\n- pip=23.2.1\n- python=3.99\n",
    );
    let o = run(h.vhrun_cmd(&["build", "-r", r.to_str().unwrap()]));
    let err = expect_failure(&o, 65);
    assert!(
        err.contains("conda.yaml: line 5: `python=3.99`: no local CPython satisfies it"),
        "{err}"
    );
    assert!(err.contains("found 3."), "{err}");
    assert!(err.contains("pyenv install 3.99"), "{err}");
    assert!(h.holotree_entries().is_empty());
}

#[test]
fn explicit_python_that_does_not_fit_is_refused() {
    require_python311();
    let h = Homes::new();
    let r = robot(&h.tmp.path().join("bot"), "dependencies:\n- python=3.10\n");
    let (found, _) = builder::python::discover(None, &[]);
    let py311 = found.iter().find(|i| i.version.minor() == (3, 11)).unwrap();
    let o = run(h.vhrun_cmd(&[
        "build",
        "-r",
        r.to_str().unwrap(),
        "--python",
        py311.executable.to_str().unwrap(),
    ]));
    let err = expect_failure(&o, 65);
    assert!(err.contains("line 2: `python=3.10`"), "{err}");
    assert!(err.contains(&format!("found {} (", py311.version)), "{err}");
}

#[test]
fn missing_pip_package_names_its_line_and_leaves_nothing() {
    require_python311();
    let h = Homes::new();
    let r = robot(
        &h.tmp.path().join("bot"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip=23.2.1\n- pip:\n  - vhrun-no-such-package-xyz==1.0\n",
    );
    let o = run(h.vhrun_cmd(&["build", "-r", r.to_str().unwrap()]));
    let err = expect_failure(&o, 65);
    assert!(
        err.contains("conda.yaml: pip requirement line 7: `vhrun-no-such-package-xyz==1.0`: no such package or version"),
        "{err}"
    );
    h.assert_no_stage();
    assert!(h.locations().own_hololib().catalogs().is_empty());
}

#[test]
fn pip_network_failure_names_its_line_and_leaves_nothing() {
    require_python311();
    let h = Homes::new();
    let r = robot(
        &h.tmp.path().join("bot"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip=23.2.1\n- pip:\n  - six==1.17.0\n",
    );
    // Nothing listens on port 9: the index is unreachable.
    let o = run(h
        .vhrun_cmd(&["build", "-r", r.to_str().unwrap()])
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_RETRIES", "1")
        .env("PIP_NO_CACHE_DIR", "1")
        .env_remove("PIP_FIND_LINKS"));
    let err = expect_failure(&o, 69);
    assert!(
        err.contains("pip requirement line 7: `six==1.17.0`: network failure"),
        "{err}"
    );
    h.assert_no_stage();
}

#[test]
fn staging_directory_is_removed_when_lifting_fails() {
    require_python311();
    let h = Homes::new();
    let locations = h.locations();
    let r = robot(&h.tmp.path().join("bot"), "dependencies:\n- python=3.11\n");
    let conda = r.with_file_name("conda.yaml");
    let bp = builder::blueprint_of(&conda).unwrap();
    let staged = RefCell::new(PathBuf::new());
    let e = build(&locations, &conda, &bp, &|dir, _| {
        assert!(dir.join("bin/python3").exists());
        *staged.borrow_mut() = dir.to_path_buf();
        Err(vhrun::Error::Internal("store full".into()))
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "store full");
    assert!(!staged.borrow().as_os_str().is_empty());
    assert!(!staged.borrow().exists());
    assert!(h.holotree_entries().is_empty());

    // A stage left by a killed build is replaced, not reused.
    let name = staged.borrow().file_name().unwrap().to_owned();
    let leftover = locations.holotree.join(&name);
    std::fs::create_dir_all(leftover.join("junk")).unwrap();
    let _ = build(&locations, &conda, &bp, &|dir, _| {
        assert!(!dir.join("junk").exists());
        Ok("k".into())
    })
    .unwrap();
    assert!(!leftover.exists());
}

#[test]
fn conda_packages_beyond_python_and_pip_need_rcc() {
    let h = Homes::new();
    let r = robot(
        &h.tmp.path().join("bot"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- nodejs=18.17\n- pip:\n  - six==1.17.0\n",
    );
    let o = run(h
        .vhrun_cmd(&["build", "-r", r.to_str().unwrap()])
        .env("VHRUN_RCC", ""));
    let err = expect_failure(&o, 67);
    assert!(err.contains("line 5: `nodejs=18.17`"), "{err}");
    assert!(err.contains("need rcc"), "{err}");
    assert!(
        err.contains("releases/latest/download/rcc-linux64"),
        "{err}"
    );
}

#[test]
fn concurrent_build_waits_and_reuses_the_catalog() {
    let h = Homes::new();
    let locations = h.locations();
    let conda = repo().join("robots/hello/conda.yaml");
    let bp = builder::blueprint_of(&conda).unwrap();
    let first =
        builder::lock::acquire(&locations.home, &bp.hash, || panic!("nobody else holds it"))
            .unwrap();
    let catalog = h.tmp.path().join("catalog-appeared");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let outcome = builder::build_own(
                &locations,
                &conda,
                &bp,
                &builder::OwnBuild::default(),
                &Progress::hidden(),
                &|| catalog.exists().then(|| "built-by-the-first".to_string()),
                &|_, _| panic!("the second build must not build"),
            );
            tx.send(outcome).unwrap();
        });
        // Still waiting while the first build holds the lock.
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
        std::fs::write(&catalog, "").unwrap();
        drop(first);
        let outcome = rx.recv_timeout(Duration::from_secs(30)).unwrap().unwrap();
        assert!(
            matches!(&outcome, BuildOutcome::Existing { key } if key == "built-by-the-first"),
            "{outcome:?}"
        );
    });
    assert!(h.holotree_entries().is_empty());
}

/// A stand-in `rcc` that records its arguments, checks them, and writes the
/// catalog rcc would have written.
fn fake_rcc(bin: &Path, log: &Path, catalog: Option<&Path>, exit: i32) {
    std::fs::create_dir_all(bin).unwrap();
    let make = catalog
        .map(|c| {
            format!(
                "mkdir -p '{}' && : > '{}'\n",
                c.parent().unwrap().display(),
                c.display()
            )
        })
        .unwrap_or_default();
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n[ \"$1 $2\" = 'holotree variables' ] || exit 99\n{make}echo '[{{\"key\": \"PATH\", \"value\": \"/x\"}}]'\necho 'rcc: building' >&2\nexit {exit}\n",
        log.display()
    );
    let p = bin.join("rcc");
    std::fs::write(&p, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn rcc_on_path_builds_with_holotree_variables() {
    let h = Homes::new();
    let robot_yaml = repo().join("robots/hello/robot.yaml");
    let bp = builder::blueprint_of(&repo().join("robots/hello/conda.yaml")).unwrap();
    let key = format!("{}v12.linux_amd64", bp.hash);
    let catalog = h.robocorp().join("hololib/catalog").join(&key);
    let bin = h.tmp.path().join("bin");
    let log = h.tmp.path().join("rcc-args");
    fake_rcc(&bin, &log, Some(&catalog), 0);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let o = run(h
        .vhrun_cmd(&[
            "build",
            "-r",
            robot_yaml.to_str().unwrap(),
            "-s",
            "ci",
            "--controller",
            "gh",
        ])
        .env("PATH", &path));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), key);
    let args = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        [
            "holotree",
            "variables",
            "--robot",
            robot_yaml.to_str().unwrap(),
            "--space",
            "ci",
            "--controller",
            "gh",
            "--json",
            "--silent"
        ]
    );

    // Now the catalog exists: nothing is built again.
    std::fs::remove_file(&log).unwrap();
    let o = run(h
        .vhrun_cmd(&["build", "-r", robot_yaml.to_str().unwrap()])
        .env("PATH", &path));
    assert!(o.status.success());
    assert_eq!(text(&o).0.trim(), key);
    assert!(!log.exists(), "rcc ran although the catalog exists");
}

#[test]
fn rcc_failures_are_reported() {
    let h = Homes::new();
    let robot_yaml = repo().join("robots/hello/robot.yaml");
    let bin = h.tmp.path().join("bin");
    let log = h.tmp.path().join("rcc-args");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    fake_rcc(&bin, &log, None, 4);
    let o = run(h
        .vhrun_cmd(&["build", "-r", robot_yaml.to_str().unwrap()])
        .env("PATH", &path));
    let err = expect_failure(&o, 69);
    assert!(err.contains("rcc could not build the environment"), "{err}");
    assert!(err.contains("exited with 4"), "{err}");
    assert!(err.contains("rcc: building"), "{err}");

    fake_rcc(&bin, &log, None, 0);
    let o = run(h
        .vhrun_cmd(&["build", "-r", robot_yaml.to_str().unwrap()])
        .env("PATH", &path));
    let err = expect_failure(&o, 67);
    assert!(err.contains("finished but wrote no catalog"), "{err}");
}

/// The JSON shape of a value: keys kept, leaves replaced by their type.
fn shape(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::String(_) => Value::String("string".into()),
        Value::Number(_) => Value::String("number".into()),
        Value::Bool(_) => Value::String("bool".into()),
        Value::Null => Value::String("null".into()),
    }
}

#[test]
fn doctor_json_reports_every_capability() {
    let h = Homes::new();
    let o = run(h.vhrun_cmd(&["doctor", "--json"]));
    let (stdout, stderr) = text(&o);
    let v: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    let ok = v["ok"].as_bool().unwrap();
    assert_eq!(o.status.code(), Some(if ok { 0 } else { 69 }), "{stdout}");
    let checks = v["checks"].as_array().unwrap();
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "missing"].contains(&status), "{c}");
        // a hint exactly when something is not ok
        assert_eq!(c["hint"].is_string(), status != "ok", "{c}");
    }
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(v["store"]["robocorp_home"], h.robocorp().to_str().unwrap());
    assert_eq!(v["store"]["vhrun_home"], h.vhrun().to_str().unwrap());
    // Keys and check names are the interface; values are the machine's.
    let mut s = shape(&v);
    for (i, c) in s["checks"].as_array_mut().unwrap().iter_mut().enumerate() {
        c["name"] = names[i].into();
        c["hint"] = "string or null".into();
    }
    // virtual (nulls) or copy (strings) is the machine's
    for k in ["detail", "fix", "refused"] {
        s["mode"][k] = "string or null".into();
    }
    // how many hololibs depends on rcc's shared mode: one shows the keys
    let first = s["store"]["hololibs"][0].clone();
    s["store"]["hololibs"] = serde_json::Value::Array(vec![first]);
    insta::assert_json_snapshot!("doctor_json_shape", s);
}

#[test]
fn doctor_text_names_what_is_missing() {
    let h = Homes::new();
    let o = run(h.vhrun_cmd(&["doctor"]).env("PATH", "/nonexistent"));
    let (stdout, _) = text(&o);
    assert!(stdout.contains("rcc"), "{stdout}");
    let rcc = stdout.lines().find(|l| l.contains(" rcc ")).unwrap();
    assert!(rcc.starts_with("WARN"), "{stdout}");
    let patchelf = stdout.lines().find(|l| l.contains(" patchelf ")).unwrap();
    assert!(
        patchelf.starts_with("WARN") && patchelf.contains("not on PATH"),
        "{stdout}"
    );
    assert!(stdout.contains("-> install rcc"), "{stdout}");
}

// ---------------------------------------------------------------- gc ----

/// The fixture's catalog installed into rcc's hololib under `h`; returns
/// the digests it references.
fn install_fixture_catalog(h: &Homes) -> Vec<String> {
    let f = std::fs::File::open(common::fixture("simple_linux.zip")).unwrap();
    let mut z = zip::ZipArchive::new(f).unwrap();
    let name = "catalog/c34ed96c2d8a459av12.linux_amd64";
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut z.by_name(name).unwrap(), &mut raw).unwrap();
    let dest = h.robocorp().join("hololib").join(name);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, &raw).unwrap();
    let c = vhrun::hololib::Catalog::load(&dest).unwrap();
    let mut d = Vec::new();
    c.walk_files(|_, f, _| d.push(f.digest.clone()));
    d.sort();
    d.dedup();
    d
}

fn cache_entry(h: &Homes, name: &str, days_old: u64) -> PathBuf {
    let p = h.vhrun().join("blobs").join(&name[..2]).join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, vec![7u8; 1000]).unwrap();
    age(&p, days_old);
    p
}

fn age(p: &Path, days_old: u64) {
    if days_old > 0 {
        let t = nix::sys::time::TimeVal::new(
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                - days_old * 86_400) as i64,
            0,
        );
        nix::sys::stat::utimes(p, &t, &t).unwrap();
    }
}

/// Every file under `dir` with its content, to prove it untouched.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let d = std::fs::read(&f).unwrap();
            (f, d)
        })
        .collect()
}

fn run_dir(h: &Homes, id: &str, days_old: u64, catalog: Option<&Path>) -> PathBuf {
    let d = h.vhrun().join("runs").join(id);
    std::fs::create_dir_all(d.join("upper/work")).unwrap();
    std::fs::write(d.join("upper/file"), "written by the task").unwrap();
    std::fs::write(d.join("lock"), "").unwrap();
    if let Some(c) = catalog {
        std::fs::write(d.join("catalog"), c.to_str().unwrap()).unwrap();
    }
    age(&d, days_old);
    d
}

fn hold_lock(run: &Path) -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(run.join("lock"))
        .unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap()
}

#[test]
fn gc_never_removes_what_a_live_run_or_a_catalog_uses() {
    let h = Homes::new();
    let digests = install_fixture_catalog(&h);
    let hololib_before = snapshot(&h.robocorp().join("hololib"));

    // A catalog only a live run serves (not in any hololib).
    let live_catalog = h.tmp.path().join("live.catalog");
    let live_digest = "d".repeat(64);
    let mut c = vhrun::hololib::Catalog::default();
    c.tree.files.insert(
        "f".into(),
        vhrun::hololib::File {
            name: "f".into(),
            digest: live_digest.clone(),
            ..Default::default()
        },
    );
    c.save(&live_catalog).unwrap();

    let referenced_fresh = cache_entry(&h, &digests[0], 0);
    let referenced_relocated =
        cache_entry(&h, &format!("{}.59acff1_1234567_89abcdef", digests[1]), 0);
    let referenced_old = cache_entry(&h, &digests[2], 40);
    let unreferenced = cache_entry(&h, &"e".repeat(64), 0);
    let live_only = cache_entry(&h, &live_digest, 40);
    let temp_fresh = cache_entry(&h, &format!("{}.tmp123", "f".repeat(64)), 0);
    let temp_old = cache_entry(&h, &format!("{}.part#2", "a".repeat(64)), 1);
    let foreign = cache_entry(&h, "README", 40);

    let live = run_dir(&h, "live", 40, Some(&live_catalog));
    let dead_old = run_dir(&h, "dead-old", 40, None);
    let dead_young = run_dir(&h, "dead-young", 0, None);
    let _guard = hold_lock(&live);

    let gone = |p: &Path| !p.exists();
    // --dry-run reports but keeps everything.
    let o = run(h.vhrun_cmd(&["gc", "--days", "30", "--dry-run"]));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("would remove"), "{stdout}");
    assert!(dead_old.exists() && unreferenced.exists() && temp_old.exists());

    let o = run(h.vhrun_cmd(&["gc", "--days", "30", "--json"]));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["live_runs"], 1);
    let removed: Vec<PathBuf> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| PathBuf::from(r["path"].as_str().unwrap()))
        .collect();
    let expected_gone = [&dead_old, &referenced_old, &unreferenced, &temp_old];
    for p in expected_gone {
        assert!(gone(p), "{} should be removed", p.display());
        assert!(
            removed.contains(p),
            "{} not reported: {stdout}",
            p.display()
        );
    }
    for p in [
        &live,
        &dead_young,
        &referenced_fresh,
        &referenced_relocated,
        &live_only,
        &temp_fresh,
        &foreign,
    ] {
        assert!(p.exists(), "{} must stay", p.display());
    }
    assert!(live.join("upper/file").exists());
    assert_eq!(removed.len(), 4, "{stdout}");
    let bytes: u64 = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(report["bytes"].as_u64().unwrap(), bytes);
    assert!(bytes >= 3000, "{stdout}");
    assert_eq!(snapshot(&h.robocorp().join("hololib")), hololib_before);

    // Once the run has ended (lock released), its old directory goes too.
    drop(_guard);
    let o = run(h.vhrun_cmd(&["gc", "--days", "30"]));
    let (stdout, _) = text(&o);
    assert!(gone(&live), "{stdout}");
    assert!(
        stdout.contains("removed ") && stdout.contains("freed"),
        "{stdout}"
    );
    // ... and the blob only it used is now unreferenced.
    assert!(gone(&live_only), "{stdout}");
    assert!(referenced_fresh.exists());
    assert_eq!(snapshot(&h.robocorp().join("hololib")), hololib_before);
}

#[test]
fn gc_leaves_the_cache_alone_when_a_live_run_is_unknown() {
    let h = Homes::new();
    install_fixture_catalog(&h);
    let unreferenced = cache_entry(&h, &"e".repeat(64), 40);
    let live = run_dir(&h, "live", 0, None);
    let _guard = hold_lock(&live);
    let o = run(h.vhrun_cmd(&["gc", "--days", "0"]));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(unreferenced.exists(), "{stdout}");
    assert!(live.exists());
    assert!(stderr.contains("blob cache is left alone"), "{stderr}");
}

#[test]
fn post_install_runs_in_the_stage_and_its_failure_names_the_line() {
    require_python311();
    let h = Homes::new();
    let locations = h.locations();
    let r = robot(
        &h.tmp.path().join("bot"),
        "dependencies:\n- python=3.11\nrccPostInstall:\n- python -c \"open('made-by-post-install', 'w').write('x')\"\n",
    );
    let conda = r.with_file_name("conda.yaml");
    let bp = builder::blueprint_of(&conda).unwrap();
    build(&locations, &conda, &bp, &|dir, _| {
        assert!(dir.join("made-by-post-install").is_file());
        Ok("k".into())
    })
    .unwrap();

    std::fs::write(
        &conda,
        "dependencies:\n- python=3.11\nrccPostInstall:\n- python -c pass\n- sh -c 'echo broken >&2; exit 3'\n",
    )
    .unwrap();
    let bp = builder::blueprint_of(&conda).unwrap();
    let e = build(&locations, &conda, &bp, &|_, _| {
        panic!("must not lift a failed build")
    })
    .unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains(
            "conda.yaml: post-install line 5: `sh -c 'echo broken >&2; exit 3'`: exited with 3"
        ),
        "{m}"
    );
    assert!(m.contains("broken"), "{m}");
    assert!(h.holotree_entries().is_empty());
}

#[test]
fn gc_does_not_reach_into_a_mount_inside_a_run_dir() {
    // Needs root (mount) — CI runs as root; fail loudly otherwise.
    common::require_root();
    common::require_tool("unshare", "util-linux");
    let h = Homes::new();
    let run_old = run_dir(&h, "mounted", 40, None);
    let mnt = run_old.join("upper/work");
    // A private mount namespace (util-linux unshare): the tmpfs vanishes
    // with the shell, whatever happens.
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs vhrun-gc-test '{m}' && echo precious > '{m}/file' && '{vhrun}' gc --days 1; rc=$?; cat '{m}/file'; exit $rc",
        m = mnt.display(),
        vhrun = env!("CARGO_BIN_EXE_vhrun"),
    );
    let o = run(Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .env("ROBOCORP_HOME", h.robocorp())
        .env("VHRUN_HOME", h.vhrun())
        .env("VHRUN_IMAGE", "off")
        .env("HOME", h.home()));
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("precious"), "{stdout}");
    assert!(stderr.contains("mounted inside; left alone"), "{stderr}");
    assert!(run_old.exists());
}

// ---------------------------------------------------------------- uv ----

/// `name==version` of every distribution installed in a staged
/// environment's site-packages (its `*.dist-info` directories), sorted.
fn installed(stage: &Path) -> Vec<String> {
    let site = stage.join("lib/python3.11/site-packages");
    let mut out: Vec<String> = std::fs::read_dir(&site)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let stem = n.strip_suffix(".dist-info")?;
            let (name, version) = stem.rsplit_once('-')?;
            Some(format!(
                "{}=={version}",
                name.to_lowercase().replace(['_', '.'], "-")
            ))
        })
        .collect();
    out.sort();
    out
}

/// No file of the stage is a hard link (uv's cache would be its other
/// name) and no symlink leads out of it.
fn assert_self_contained(stage: &Path) {
    use std::os::unix::fs::MetadataExt;
    fn walk_all(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                walk_all(&e.path(), out);
            }
        }
    }
    let mut all = Vec::new();
    walk_all(stage, &mut all);
    for p in all {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            let resolved = p.parent().unwrap().join(&t);
            assert!(
                t.is_relative() && vhrun::paths::clean(&resolved).starts_with(stage),
                "{} -> {} leaves the environment",
                p.display(),
                t.display()
            );
        } else if m.is_file() {
            assert_eq!(m.nlink(), 1, "{} is hard-linked", p.display());
        }
    }
}

/// Build `conda` in-process with `uv`, returning the packages the stage
/// held (checked self-contained when `uv` may use uv).
fn build_listing(h: &Homes, conda: &Path, uv: builder::uv::Choice) -> Vec<String> {
    let locations = h.locations();
    let bp = builder::blueprint_of(conda).unwrap();
    let seen = RefCell::new(Vec::new());
    let own = builder::OwnBuild {
        uv: uv.clone(),
        ..Default::default()
    };
    builder::build_own(
        &locations,
        conda,
        &bp,
        &own,
        &Progress::hidden(),
        &|| None,
        &|dir, _| {
            if uv != builder::uv::Choice::Off {
                assert_self_contained(dir);
            }
            *seen.borrow_mut() = installed(dir);
            Ok("lifted-key".into())
        },
    )
    .unwrap();
    seen.into_inner()
}

#[test]
fn uv_and_pip_install_the_same_packages() {
    require_python311();
    let h = Homes::new();
    // Pins and a resolved tree (requests' four dependencies are unpinned),
    // a C extension, a console script, and pip itself from the spec.
    let r = robot(
        &h.tmp.path().join("bot"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip=23.2.1\n- pip:\n  - requests==2.32.3\n  - markupsafe==3.0.2\n  - wheel==0.45.1\n",
    );
    let conda = r.parent().unwrap().join("conda.yaml");
    let with_pip = build_listing(&h, &conda, builder::uv::Choice::Off);
    let with_uv = build_listing(&h, &conda, builder::uv::Choice::Auto);
    assert!(
        with_pip.iter().any(|p| p == "pip==23.2.1")
            && with_pip.iter().any(|p| p == "requests==2.32.3"),
        "{with_pip:?}"
    );
    assert!(with_pip.len() >= 9, "{with_pip:?}");
    assert_eq!(with_uv, with_pip);
    // The uv it used was bootstrapped into vhrun's home, once.
    let uvs: Vec<_> = std::fs::read_dir(h.vhrun().join("uv"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("uv"))
        .collect();
    assert_eq!(uvs.len(), 1, "{uvs:?}");
    assert!(vhrun::paths::is_executable(&uvs[0]));
    h.assert_no_stage();
}

#[test]
fn uv_failures_name_the_spec_line_as_pips_do() {
    require_python311();
    let h = Homes::new();
    let r = robot(
        &h.tmp.path().join("bot"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip:\n  - six==1.17.0\n  - vhrun-no-such-package-xyz==1.0\n",
    );
    for uv in ["off", "auto"] {
        let o = run(h
            .vhrun_cmd(&["build", "-r", r.to_str().unwrap()])
            .env("VHRUN_UV", uv));
        let err = expect_failure(&o, 65);
        assert!(
            err.contains("conda.yaml: pip requirement line 7: `vhrun-no-such-package-xyz==1.0`: no such package or version"),
            "VHRUN_UV={uv}: {err}"
        );
        let installer = if uv == "off" {
            "pip layer with pip"
        } else {
            "pip layer with uv "
        };
        assert!(err.contains(installer), "VHRUN_UV={uv}: {err}");
        h.assert_no_stage();
    }
    // A uv the spec pins that cannot be had is an error naming the line.
    let r = robot(
        &h.tmp.path().join("pinned"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- uv=0.0.0\n- pip:\n  - six==1.17.0\n",
    );
    let o = run(h.vhrun_cmd(&["build", "-r", r.to_str().unwrap()]));
    let err = expect_failure(&o, 69);
    assert!(
        err.contains("line 5: `uv=0.0.0`: no uv of that version"),
        "{err}"
    );
    assert!(h.locations().own_hololib().catalogs().is_empty());
}

/// The task of the uv-native robot: the environment is the space, its C
/// extension loads, its console script's shebang was relocated, it was
/// built as rcc's uv-native builds are (marker, no pip).
const UV_NATIVE_CHECK: &str = r#"import importlib.util, os, subprocess, sys
import markupsafe._speedups
assert os.path.isfile(os.path.join(sys.prefix, ".rcc_uv_prefix")), "no uv-native marker"
assert importlib.util.find_spec("pip") is None, "uv-native environments have no pip"
wheel = subprocess.run(["wheel", "version"], capture_output=True, text=True, check=True).stdout.strip()
print("prefix", sys.prefix, "executable", sys.executable, "wheel", wheel)
"#;

#[test]
fn a_uv_native_robot_builds_without_rcc_and_runs_from_the_tree_the_image_and_a_copy() {
    require_python311();
    let h = Homes::new();
    let (found, _) = builder::python::discover(None, &[]);
    let py = found
        .iter()
        .filter(|i| i.unusable.is_none() && i.version.minor() == (3, 11))
        .map(|i| i.version.to_string())
        .max()
        .unwrap();
    let dir = h.tmp.path().join("native");
    let r = robot(
        &dir,
        &format!("dependencies:\n- python={py}\n- uv=0.9.22\n- pip:\n  - markupsafe==3.0.2\n  - wheel==0.45.1\n"),
    );
    std::fs::write(dir.join("check.py"), UV_NATIVE_CHECK).unwrap();
    std::fs::write(
        dir.join("robot.yaml"),
        "tasks:\n  t:\n    shell: python check.py\ncondaConfigFile: conda.yaml\nartifactsDir: output\n",
    )
    .unwrap();
    // No rcc anywhere: not named, not on PATH.
    let path = "/usr/local/bin:/usr/bin:/bin";
    for d in std::env::split_paths(path) {
        assert!(!d.join("rcc").exists(), "{} has an rcc", d.display());
    }
    let robot_arg = r.to_str().unwrap();
    let vh = |args: &[&str]| {
        let mut c = h.vhrun_cmd(args);
        c.env("PATH", path).env("VHRUN_RCC", "");
        c
    };
    // The blueprint is rcc's: the same text, so the same hash rcc computes
    // (tests/blueprint.rs holds the interop check against the real rcc).
    let bp = builder::blueprint_of(&dir.join("conda.yaml")).unwrap();
    assert!(bp.text.contains("uv="), "{}", bp.text);

    let stats = h.tmp.path().join("stats.json");
    let read_stats = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap()
    };
    // First run: builds (uv-native, pip layer with uv 0.9.22), then runs
    // over the FUSE tree (VHRUN_IMAGE=off in these homes).
    let o = run(vh(&[
        "run",
        "-r",
        robot_arg,
        "-t",
        "t",
        "--stats-json",
        stats.to_str().unwrap(),
    ]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("(rcc's uv-native mode)"), "{err}");
    assert!(err.contains("pip layer with uv 0.9.22"), "{err}");
    for phase in [
        "finding CPython:",
        "copying CPython:",
        "uv pip install:",
        "lifting:",
    ] {
        assert!(
            err.contains(&format!("vhrun: {phase}")),
            "no line for {phase}: {err}"
        );
    }
    let space_line = |out: &str| -> String {
        let l = out
            .lines()
            .find(|l| l.starts_with("prefix "))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(l.ends_with("wheel 0.45.1"), "{l}");
        l.to_string()
    };
    let first = space_line(&out);
    assert!(read_stats()["image"].is_null(), "{}", read_stats());

    // The kernel image (root only: rootless runs never use one).
    if nix::unistd::geteuid().is_root() {
        let o = run(vh(&["prepare", "-r", robot_arg]).env_remove("VHRUN_IMAGE"));
        assert!(o.status.success(), "{:?}", text(&o));
        let o = run(vh(&[
            "run",
            "-r",
            robot_arg,
            "-t",
            "t",
            "--stats-json",
            stats.to_str().unwrap(),
        ])
        .env_remove("VHRUN_IMAGE"));
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}\n{err}");
        assert_eq!(space_line(&out), first);
        assert!(read_stats()["image"].is_string(), "{}", read_stats());
    }

    // A restored copy (relocated for real: shebangs, RPATHs).
    let o = run(vh(&[
        "run",
        "--mode",
        "copy",
        "-r",
        robot_arg,
        "-t",
        "t",
        "--stats-json",
        stats.to_str().unwrap(),
    ]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(space_line(&out), first);
    assert_eq!(read_stats()["mode"], "copy", "{}", read_stats());
}

/// The blueprint hash of a uv-native and a uv-with-channels conda.yaml is
/// the one the real rcc computes: vhrun's build lands under rcc's name.
#[test]
#[ignore = "interop: needs the real rcc in ../shared/tools/rcc"]
fn uv_specs_hash_as_the_real_rcc_hashes_them() {
    let rcc = common::shared_tool("rcc");
    let h = Homes::new();
    for (name, conda) in [
        (
            "native",
            "dependencies:\n- python=3.12.8\n- uv=0.9.22\n- pip:\n  - requests==2.32.3\n",
        ),
        (
            "channels",
            "channels:\n- conda-forge\ndependencies:\n- python=3.12\n- uv=0.9.22\n- pip:\n  - requests==2.32.3\n",
        ),
    ] {
        let r = robot(&h.tmp.path().join(name), conda);
        let conda = r.parent().unwrap().join("conda.yaml");
        let ours = builder::blueprint_of(&conda).unwrap();
        let out = run(Command::new(&rcc)
            .args(["holotree", "hash", "--bundled", "--json"])
            .arg(&conda)
            .env("ROBOCORP_HOME", h.robocorp())
            .env("HOME", h.home()));
        assert!(out.status.success(), "{:?}", text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["hash"].as_str(), Some(ours.hash.as_str()), "{name}");
    }
}

/// Two first runs of one new robot at once: one builds, the other waits
/// for it and reuses its catalog.
#[test]
fn concurrent_first_builds_of_a_new_robot_build_once() {
    require_python311();
    let h = Homes::new();
    let r = robot(
        &h.tmp.path().join("bot"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip:\n  - six==1.17.0\n",
    );
    let robot_arg = r.to_str().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            h.vhrun_cmd(&["build", "-r", robot_arg])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outs {
        assert!(o.status.success(), "{:?}", text(o));
    }
    let keys: Vec<String> = outs.iter().map(|o| text(o).0.trim().to_string()).collect();
    assert_eq!(keys[0], keys[1]);
    let built = outs
        .iter()
        .filter(|o| text(o).1.contains("vhrun: building environment"))
        .count();
    assert_eq!(built, 1, "{:?}", outs.iter().map(text).collect::<Vec<_>>());
    assert_eq!(h.locations().own_hololib().catalogs(), [keys[0].clone()]);
    h.assert_no_stage();
}

/// `vhrun build` stages in RAM: a tmpfs on the staging directory, seen by
/// the build's own processes only (post-install reports the stage's file
/// system), gone with the build.
#[test]
fn vhrun_build_stages_in_memory_and_leaves_no_mount() {
    require_python311();
    let h = Homes::new();
    let report = h.tmp.path().join("stage-fs");
    let r = robot(
        &h.tmp.path().join("bot"),
        &format!(
            "dependencies:\n- python=3.11\nrccPostInstall:\n- sh -c 'stat -f -c %T . > {}'\n",
            report.display()
        ),
    );
    let o = run(h.vhrun_cmd(&["build", "-r", r.to_str().unwrap()]));
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(std::fs::read_to_string(&report).unwrap().trim(), "tmpfs");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("vhrun-stage"), "{mounts}");
    h.assert_no_stage();
    assert_eq!(h.locations().own_hololib().catalogs().len(), 1);
}

/// A spec whose packages uv's cache holds builds without the index: the
/// second build (a new VHRUN_HOME, the same uv cache) succeeds with the
/// network gone (every connection through a proxy that is not there).
#[test]
fn a_build_whose_packages_are_in_uvs_cache_needs_no_index() {
    require_python311();
    let h = Homes::new();
    let r = robot(
        &h.tmp.path().join("bot"),
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip:\n  - six==1.17.0\n",
    );
    let o = run(h.vhrun_cmd(&["build", "-r", r.to_str().unwrap()]));
    assert!(o.status.success(), "{:?}", text(&o));
    let uv = std::fs::read_dir(h.vhrun().join("uv"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
        .join("uv");
    let other = h.tmp.path().join("vhrun-2");
    let o = run(h
        .vhrun_cmd(&["build", "-r", r.to_str().unwrap()])
        .env("VHRUN_HOME", &other)
        .env("VHRUN_UV", &uv)
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9"));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("uv pip install: 1 packages"), "{err}");
    assert_eq!(
        vhrun::hololib::Hololib::new(other.join("hololib"))
            .catalogs()
            .len(),
        1
    );
}

/// A build staged on disk hands its unrelocated files to the blob cache
/// (hard links made read-only): the first run decodes nothing of them.
#[test]
fn a_build_staged_on_disk_seeds_the_blob_cache() {
    use std::os::unix::fs::MetadataExt;
    require_python311();
    let h = Homes::new();
    let locations = h.locations();
    let conda = repo().join("robots/hello/conda.yaml");
    let bp = builder::blueprint_of(&conda).unwrap();
    let own = locations.own_hololib();
    let blobs = locations.home.blobs();
    let outcome = build(&locations, &conda, &bp, &|dir, file| {
        builder::lift_staged(dir, file, &own, &blobs)
    })
    .unwrap();
    let key = outcome.key().to_string();
    let catalog = vhrun::hololib::catalog::Catalog::load(&own.catalog_path(&key)).unwrap();
    let (mut plain, mut seeded) = (0, 0);
    fn walk(d: &vhrun::hololib::catalog::Dir, out: &mut Vec<vhrun::hololib::catalog::File>) {
        out.extend(d.files.values().cloned());
        for s in d.dirs.values() {
            walk(s, out);
        }
    }
    let mut files = Vec::new();
    walk(&catalog.tree, &mut files);
    for f in files.iter().filter(|f| f.symlink.is_empty() && f.size > 0) {
        let entry = blobs.join(&f.digest[..2]).join(&f.digest);
        if f.rewrite.is_empty() {
            plain += 1;
            let m =
                std::fs::metadata(&entry).unwrap_or_else(|e| panic!("{}: {e}", entry.display()));
            assert_eq!(m.len(), f.size as u64);
            assert_eq!(m.mode() & 0o777, 0o444);
            seeded += 1;
        } else {
            assert!(
                !entry.exists(),
                "a relocated file is cached per target only"
            );
        }
    }
    assert!(plain > 1000 && seeded == plain, "{seeded} of {plain}");
    // The entries hold the blobs' bytes.
    let f = files.iter().find(|f| f.name == "os.py").unwrap();
    let cached = std::fs::read(blobs.join(&f.digest[..2]).join(&f.digest)).unwrap();
    let stored = std::fs::read(own.blob_path(&f.digest)).unwrap();
    assert_eq!(vhrun::hololib::blob::decode_all(&stored).unwrap(), cached);
}
