//! The material in examples/ works when copied:
//!
//! - examples/github-actions.yml and examples/gitlab-ci.yml are read and
//!   their jobs run here, twice each, the way the CI service would: the
//!   `run:` steps / `before_script` + `script` lines with bash in a fresh
//!   checkout, expressions and variables expanded, the cache emulated from
//!   the paths and keys the files declare (saved after the first job,
//!   restored into the second, which starts from a wiped checkout and home),
//!   and the artifact paths collected. The first job must build robots/hello's
//!   environment, the second must get it from the cache alone; both must
//!   leave hello.txt and vhrun-stats.json in the artifacts. Steps that set up
//!   tools this machine already has (checkout, setup-python, the Rust
//!   toolchain) are the only ones not run. vhrun is installed the
//!   release-artifact way (`VHRUN_BIN`, the binary under test), not by
//!   compiling it again; README's quickstart covers `cargo install --path`.
//! - examples/serve_catalog.rs (built by `cargo test`) serves the fixture
//!   catalog and exits 0.
//!
//! Needs root (FUSE, namespaces), a CPython 3.11 and patchelf (the builder),
//! as tests/run.rs does.

mod common;

use serde_yaml::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Copy or restore `paths` (absolute) between the job and a cache entry.
fn copy_paths(paths: &[PathBuf], from_root: &Path, to_root: &Path) {
    for p in paths {
        let rel = p.strip_prefix("/").unwrap();
        let src = from_root.join(rel);
        if src.is_dir() {
            common::copy_robot(&src, &to_root.join(rel));
        }
    }
}

/// One emulated CI machine: a checkout directory that survives between
/// jobs only through the cache.
struct Ci {
    tmp: tempfile::TempDir,
    /// Cache entries by key: a directory mirroring the absolute paths.
    cache: BTreeMap<String, PathBuf>,
}

struct JobResult {
    log: String,
    artifacts: PathBuf,
}

impl Ci {
    fn new() -> Ci {
        common::require_root();
        Ci {
            tmp: tempfile::Builder::new()
                .prefix("vhrun-ci-")
                .tempdir()
                .unwrap(),
            cache: BTreeMap::new(),
        }
    }

    fn checkout(&self) -> PathBuf {
        self.tmp.path().join("build/project")
    }

    /// A fresh machine: wiped checkout (and everything in it) and home.
    fn fresh_checkout(&self) -> PathBuf {
        let co = self.checkout();
        let home = self.tmp.path().join("home");
        for d in [&co, &home] {
            if d.exists() {
                fs::remove_dir_all(d).unwrap();
            }
        }
        fs::create_dir_all(&home).unwrap();
        common::copy_robot(&repo().join("examples"), &co.join("examples"));
        common::copy_robot(&repo().join("robots"), &co.join("robots"));
        co
    }

    /// The environment every job starts from: this machine's tools (PATH,
    /// pyenv), a private HOME, nothing of vhrun's settings, the binary
    /// under test as the "release artifact".
    fn base_env(&self) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| {
                !(k.starts_with("VHRUN_")
                    || k.starts_with("CARGO")
                    || k == "ROBOCORP_HOME"
                    || k == "NO_COLOR"
                    || k.starts_with("GITHUB_")
                    || k.starts_with("CI"))
            })
            .collect();
        env.insert(
            "HOME".into(),
            self.tmp.path().join("home").display().to_string(),
        );
        env.insert("VHRUN_BIN".into(), env!("CARGO_BIN_EXE_vhrun").into());
        env
    }

    fn store(&mut self, key: &str, paths: &[PathBuf]) {
        let dir = self.tmp.path().join("cache").join(key);
        assert!(!dir.exists(), "cache entry {key} saved twice");
        copy_paths(paths, Path::new("/"), &dir);
        self.cache.insert(key.to_string(), dir);
    }

    fn restore(&self, key: &str, paths: &[PathBuf]) -> bool {
        match self.cache.get(key) {
            Some(dir) => {
                copy_paths(paths, dir, Path::new("/"));
                true
            }
            None => false,
        }
    }

    fn collect(&self, job: usize, name: &str, paths: &[PathBuf]) -> PathBuf {
        let out = self.tmp.path().join(format!("artifacts-{job}")).join(name);
        for p in paths {
            assert!(
                p.is_dir() && fs::read_dir(p).unwrap().next().is_some(),
                "artifact path {} is missing or empty",
                p.display()
            );
            common::copy_robot(p, &out);
        }
        out
    }
}

fn bash(script: &str, cwd: &Path, env: &BTreeMap<String, String>, flags: &[&str]) -> Output {
    let out = Command::new("bash")
        .args(flags)
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env_clear()
        .envs(env)
        // A job's warm server would build a kernel image in the background
        // after the job, while the next "fresh machine" wipes its home.
        .env("VHRUN_IMAGE", "off")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "step failed ({:?}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn log_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v:?}"))
}

// ---- GitHub Actions ---------------------------------------------------

/// Expand `${{ ... }}` with the contexts the workflow uses; any other
/// expression fails the test (so this emulation keeps up with the file).
fn gh_expand(
    s: &str,
    workspace: &Path,
    env: &BTreeMap<String, String>,
    outputs: &BTreeMap<String, BTreeMap<String, String>>,
) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${{") {
        out.push_str(&rest[..i]);
        let j = rest[i..].find("}}").expect("unclosed ${{") + i;
        let expr = rest[i + 3..j].trim();
        let value = if expr == "github.workspace" {
            workspace.display().to_string()
        } else if expr == "runner.os" {
            "Linux".to_string()
        } else if let Some(k) = expr.strip_prefix("env.") {
            env.get(k).unwrap_or_else(|| panic!("no env {k}")).clone()
        } else if let Some(r) = expr.strip_prefix("steps.") {
            let (id, key) = r.split_once(".outputs.").expect("steps.<id>.outputs.<key>");
            outputs
                .get(id)
                .and_then(|o| o.get(key))
                .unwrap_or_else(|| panic!("no output {expr}"))
                .clone()
        } else {
            panic!("expression not emulated: {expr}")
        };
        out.push_str(&value);
        rest = &rest[j + 2..];
    }
    out.push_str(rest);
    out
}

fn run_github_job(ci: &mut Ci, n: usize) -> JobResult {
    let wf: Value = serde_yaml::from_str(
        &fs::read_to_string(repo().join("examples/github-actions.yml")).unwrap(),
    )
    .unwrap();
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    assert_eq!(jobs.len(), 1, "one job expected");
    let job = jobs.values().next().unwrap();
    let co = ci.fresh_checkout();
    let mut env = ci.base_env();
    let no_outputs = BTreeMap::new();
    // Job-level env (may refer to github.* only).
    if let Some(m) = job["env"].as_mapping() {
        let base = env.clone();
        for (k, v) in m {
            let v = gh_expand(str_of(v, "env"), &co, &base, &no_outputs);
            env.insert(str_of(k, "env key").to_string(), v);
        }
    }
    let files = ci.tmp.path().join(format!("gh-{n}"));
    fs::create_dir_all(&files).unwrap();
    let (gh_output, gh_path) = (files.join("output"), files.join("path"));
    env.insert("GITHUB_WORKSPACE".into(), co.display().to_string());
    env.insert("GITHUB_PATH".into(), gh_path.display().to_string());
    env.insert("RUNNER_OS".into(), "Linux".into());
    let base_path = env["PATH"].clone();

    let mut outputs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut save: Option<(String, Vec<PathBuf>)> = None;
    let mut log = String::new();
    let mut artifacts = None;
    for step in job["steps"].as_sequence().expect("steps") {
        let with = |k: &str| gh_expand(str_of(&step["with"][k], k), &co, &env, &outputs);
        if let Some(uses) = step["uses"].as_str() {
            let action = uses.split('@').next().unwrap();
            match action {
                // This machine has them (the test's own checkout, pyenv, cargo).
                "actions/checkout" | "actions/setup-python" | "dtolnay/rust-toolchain" => {}
                "actions/cache" => {
                    let key = with("key");
                    let paths: Vec<PathBuf> = with("path")
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(PathBuf::from)
                        .collect();
                    assert!(paths.iter().all(|p| p.is_absolute()), "{paths:?}");
                    if !ci.restore(&key, &paths) {
                        save = Some((key, paths));
                    }
                }
                "actions/upload-artifact" => {
                    let path = PathBuf::from(with("path"));
                    let path = if path.is_absolute() {
                        path
                    } else {
                        co.join(path)
                    };
                    artifacts = Some(ci.collect(n, &with("name"), &[path]));
                }
                other => panic!("action not emulated: {other}"),
            }
            continue;
        }
        let script = gh_expand(str_of(&step["run"], "run"), &co, &env, &outputs);
        // GITHUB_PATH entries come first on PATH in later steps.
        let added: Vec<String> = fs::read_to_string(&gh_path)
            .unwrap_or_default()
            .lines()
            .rev()
            .map(str::to_string)
            .collect();
        let mut step_env = env.clone();
        step_env.insert(
            "PATH".into(),
            added
                .into_iter()
                .chain([base_path.clone()])
                .collect::<Vec<_>>()
                .join(":"),
        );
        fs::write(&gh_output, "").unwrap();
        step_env.insert("GITHUB_OUTPUT".into(), gh_output.display().to_string());
        // GitHub's default shell: bash --noprofile --norc -eo pipefail {0}.
        let out = bash(
            &script,
            &co,
            &step_env,
            &["--noprofile", "--norc", "-eo", "pipefail"],
        );
        log += &log_of(&out);
        if let Some(id) = step["id"].as_str() {
            let kv = fs::read_to_string(&gh_output).unwrap();
            let map = kv
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            outputs.insert(id.to_string(), map);
        }
    }
    // actions/cache saves in its post step, after a successful job.
    if let Some((key, paths)) = save {
        ci.store(&key, &paths);
    }
    JobResult {
        log,
        artifacts: artifacts.expect("the workflow uploads artifacts"),
    }
}

// ---- GitLab CI ----------------------------------------------------------

/// `$VAR` / `${VAR}` as GitLab expands them in `variables:`.
fn gl_expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if braced {
            assert_eq!(chars.next(), Some('}'));
        }
        out.push_str(
            vars.get(&name)
                .unwrap_or_else(|| panic!("no variable {name}")),
        );
    }
    out
}

fn run_gitlab_job(ci: &mut Ci, n: usize) -> JobResult {
    use sha2::{Digest, Sha256};
    let doc: Value =
        serde_yaml::from_str(&fs::read_to_string(repo().join("examples/gitlab-ci.yml")).unwrap())
            .unwrap();
    let jobs: Vec<&Value> = doc
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(k, v)| !str_of(k, "key").starts_with('.') && v["script"].is_sequence())
        .map(|(_, v)| v)
        .collect();
    assert_eq!(jobs.len(), 1, "one job expected");
    let job = jobs[0];
    let co = ci.fresh_checkout();
    let mut env = ci.base_env();
    // The rust image: CARGO_HOME's bin on PATH.
    let cargo_home = ci.tmp.path().join("home/cargo");
    env.insert("CARGO_HOME".into(), cargo_home.display().to_string());
    let path = format!("{}/bin:{}", cargo_home.display(), env["PATH"]);
    env.insert("PATH".into(), path);
    env.insert("CI".into(), "true".into());
    env.insert("CI_PROJECT_DIR".into(), co.display().to_string());
    if let Some(m) = job["variables"].as_mapping() {
        for (k, v) in m {
            let v = gl_expand(str_of(v, "variable"), &env);
            env.insert(str_of(k, "variable name").to_string(), v);
        }
    }

    let cache = &job["cache"];
    let key = {
        let k = &cache["key"];
        let mut h = Sha256::new();
        for f in k["files"].as_sequence().expect("cache:key:files") {
            h.update(fs::read(co.join(str_of(f, "file"))).unwrap());
        }
        format!("{}-{:x}", str_of(&k["prefix"], "prefix"), h.finalize())
    };
    let cache_paths: Vec<PathBuf> = cache["paths"]
        .as_sequence()
        .expect("cache:paths")
        .iter()
        .map(|p| co.join(str_of(p, "path")))
        .collect();
    let hit = ci.restore(&key, &cache_paths);

    let lines: Vec<String> = ["before_script", "script"]
        .iter()
        .flat_map(|k| job[*k].as_sequence().cloned().unwrap_or_default())
        .map(|l| str_of(&l, "script line").to_string())
        .collect();
    // GitLab runs the lines in one shell and stops at the first failure.
    let script = format!("set -eo pipefail\n{}\n", lines.join("\n"));
    let out = bash(&script, &co, &env, &[]);
    if !hit {
        ci.store(&key, &cache_paths);
    }
    let paths: Vec<PathBuf> = job["artifacts"]["paths"]
        .as_sequence()
        .expect("artifacts:paths")
        .iter()
        .map(|p| co.join(str_of(p, "path")))
        .collect();
    JobResult {
        log: log_of(&out),
        artifacts: ci.collect(n, "artifacts", &paths),
    }
}

// ---- the checks ---------------------------------------------------------

fn check_jobs(first: &JobResult, second: &JobResult) {
    assert!(
        first.log.contains("building environment"),
        "the first job did not build: {}",
        first.log
    );
    assert!(
        !second.log.contains("building environment") && second.log.contains("already built"),
        "the second job did not get its environment from the cache: {}",
        second.log
    );
    for job in [first, second] {
        let hello = fs::read_to_string(job.artifacts.join("hello.txt"))
            .unwrap_or_else(|e| panic!("hello.txt: {e}; log: {}", job.log));
        assert!(hello.contains("python=CPython 3.11"), "{hello}");
        assert!(job.log.contains("Hello from a robot!"), "{}", job.log);
        assert!(job.log.contains("vhrun stats:"), "{}", job.log);
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(job.artifacts.join("vhrun-stats.json")).unwrap())
                .unwrap();
        assert_eq!(stats["schema"], 1);
        assert_eq!(stats["exit_code"], 0);
        assert!(stats["files"]["opened"].as_u64().unwrap() > 0, "{stats}");
    }
}

#[test]
fn github_actions_workflow_runs_here() {
    let mut ci = Ci::new();
    let first = run_github_job(&mut ci, 1);
    let installed = ci.tmp.path().join("home/.cargo/bin/vhrun");
    assert_eq!(
        fs::read(&installed).unwrap().len(),
        fs::read(env!("CARGO_BIN_EXE_vhrun")).unwrap().len()
    );
    assert_eq!(ci.cache.len(), 1);
    let second = run_github_job(&mut ci, 2);
    check_jobs(&first, &second);
}

#[test]
fn gitlab_ci_job_runs_here() {
    let mut ci = Ci::new();
    let first = run_gitlab_job(&mut ci, 1);
    assert!(ci.tmp.path().join("home/cargo/bin/vhrun").is_file());
    assert_eq!(ci.cache.len(), 1);
    let second = run_gitlab_job(&mut ci, 2);
    check_jobs(&first, &second);
}

#[test]
fn serve_catalog_example_serves_the_fixture() {
    common::require_root();
    let exe = Path::new(env!("CARGO_BIN_EXE_vhrun"))
        .parent()
        .unwrap()
        .join("examples/serve_catalog");
    assert!(
        exe.is_file(),
        "{} is not built: `cargo test` builds examples (or run `cargo build --examples`)",
        exe.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let zip = common::fixture("simple_linux.zip");
    let out = Command::new(&exe)
        .arg("--import")
        .arg(&zip)
        .env("ROBOCORP_HOME", tmp.path().join("rh"))
        .env("VHRUN_HOME", tmp.path().join("rh/vhrun"))
        .env("VHRUN_IMAGE", "off")
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "imported c34ed96c2d8a459av12.linux_amd64",
        "1 catalog(s)",
        "serving c34ed96c2d8a459av12.linux_amd64 at ",
        "  identity.yaml",
        "read ",
        "unmounted after ",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    assert!(text.ends_with("ok\n"), "{text}");
    // The decoded blob landed in VHRUN_HOME's cache; the hololib is rcc's.
    assert!(tmp.path().join("rh/vhrun/blobs").is_dir());
    assert!(tmp.path().join("rh/hololib/catalog").is_dir());
    // A bad argument is a usage error.
    let out = Command::new(&exe).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
