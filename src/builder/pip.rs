//! pip inside the staged interpreter: bootstrap it from the interpreter's
//! own ensurepip (offline), install the spec's pip section, and turn pip's
//! failures into errors that name the spec line.
//!
//! Decisions: `--prefer-binary` (wheels whenever any exist, sdists only for
//! packages that ship nothing else, so more robots build than with
//! `--only-binary=:all:`), `--no-compile` (the store drops bytecode), the
//! user's pip configuration (index, proxy, cert, cache) is honoured.

use super::progress::Phase;
use super::spec::BuildSpec;
use super::version::Version;
use crate::error::{Error, IoContext, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The staged interpreter: `bin/pythonX.Y`, else `bin/python3`.
pub fn staged_python(stage: &Path, version: &Version) -> PathBuf {
    let (ma, mi) = version.minor();
    let exact = stage.join(format!("bin/python{ma}.{mi}"));
    if exact.exists() {
        exact
    } else {
        stage.join("bin/python3")
    }
}

/// The caller's variables that would point an install elsewhere (another
/// prefix, a virtualenv, the user site): removed for pip and uv alike.
pub(crate) const FOREIGN_PYTHON_SETUP: [&str; 10] = [
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "VIRTUAL_ENV",
    "CONDA_PREFIX",
    "PIP_USER",
    "PIP_REQUIRE_VIRTUALENV",
    "PIP_TARGET",
    "PIP_PREFIX",
];

/// A command for the staged interpreter, isolated from the caller's
/// Python setup (no user site, no PYTHONPATH, no active virtualenv).
pub fn python_command(py: &Path) -> Command {
    let mut c = Command::new(py);
    for var in FOREIGN_PYTHON_SETUP {
        c.env_remove(var);
    }
    c.env("PYTHONNOUSERSITE", "1")
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .stdin(Stdio::null());
    c
}

/// Run `cmd`, showing its last output line on the phase's spinner; returns
/// the exit code and the combined output.
pub fn run_logged(mut cmd: Command, phase: &Phase) -> Result<(i32, String)> {
    let prog = PathBuf::from(cmd.get_program());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(&prog, e))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let mut log = String::new();
    // Both pipes are drained by scoped threads that end with the child's
    // output, so no thread outlives this call (the sandbox needs a
    // single-threaded process later).
    std::thread::scope(|s| {
        for pipe in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            s.spawn(move || {
                for line in std::io::BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for line in rx {
            let shown = line.trim();
            if !shown.is_empty() {
                phase.set_message(shown);
            }
            log.push_str(&line);
            log.push('\n');
        }
    });
    let status = child.wait().map_err(|e| Error::io(&prog, e))?;
    Ok((status.code().unwrap_or(-1), log))
}

/// `sys.prefix` of the staged interpreter must be the stage itself, or
/// the copy is not self-contained.
pub fn check_prefix(py: &Path, stage: &Path) -> Result<()> {
    let out = python_command(py)
        .args(["-I", "-c", "import sys; print(sys.prefix)"])
        .output()
        .map_err(|e| Error::io(py, e))?;
    let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || Path::new(&prefix) != stage {
        return Err(Error::unavailable(
            format!(
                "the copied interpreter {} does not run from its copy",
                py.display()
            ),
            format!(
                "sys.prefix {prefix:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Install pip from the interpreter's bundled wheel (no network).
pub fn bootstrap(py: &Path, spec: &BuildSpec, phase: &Phase) -> Result<()> {
    let mut cmd = python_command(py);
    cmd.args(["-m", "ensurepip", "--default-pip"]);
    let (code, log) = run_logged(cmd, phase)?;
    if code != 0 {
        return Err(Error::unavailable(
            format!(
                "{}: cannot install pip into the environment: ensurepip failed",
                spec.file.display()
            ),
            format!(
                "use a CPython that ships ensurepip (pyenv and uv ones do); {}",
                last_lines(&log, 3)
            ),
        ));
    }
    Ok(())
}

/// The pip requirement that brings pip `have` (the bundled one) to the
/// spec's `pip=` entry, or `None` when it already satisfies it.
fn pip_pin(spec: &BuildSpec, have: Option<&Version>) -> Result<Option<String>> {
    if spec.pip_constraint.is_any() || have.is_some_and(|v| spec.pip_constraint.matches(v)) {
        return Ok(None);
    }
    spec.pip_constraint.to_pip("pip").map(Some).map_err(|e| {
        let at = spec.pip_entry.as_ref().map(|r| r.at()).unwrap_or_default();
        Error::bad_input(&spec.file, format!("{at}: {e}"))
    })
}

/// What `ensurepip` would install into the stage, as requirements for uv:
/// the interpreter's bundled wheels (pip, and setuptools before 3.12)
/// pinned to their versions, found in the returned directory (as named
/// requirements, not wheel paths, so nothing records a direct URL), with
/// the bundled pip replaced by the spec's pin when it does not satisfy its
/// `pip=` entry (as [`install`] pins it after ensurepip).
pub fn bundled_wheels(
    stage: &Path,
    interp: &super::Interpreter,
    spec: &BuildSpec,
) -> Result<(Vec<String>, PathBuf)> {
    let bundled = stage.join(&interp.stdlib).join("ensurepip/_bundled");
    let mut wheels: Vec<PathBuf> = std::fs::read_dir(&bundled)
        .at(&bundled)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    wheels.sort();
    let mut lines = Vec::new();
    for w in wheels {
        let name = w
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut parts = name.split('-');
        let (project, version) = (parts.next().unwrap_or(""), parts.next());
        let Some(version) = version else { continue };
        if project == "pip" {
            if let Some(pin) = pip_pin(spec, Version::parse(version).as_ref())? {
                lines.push(pin);
                continue;
            }
        }
        lines.push(format!("{project}=={version}"));
    }
    if lines.is_empty() {
        return Err(Error::unavailable(
            format!(
                "{}: no pip wheel bundled with {}",
                spec.file.display(),
                interp.describe()
            ),
            "use a CPython that ships ensurepip (pyenv and uv ones do)",
        ));
    }
    Ok((lines, bundled))
}

/// The version `python -m pip --version` reports.
pub fn pip_version(py: &Path) -> Option<Version> {
    let out = python_command(py)
        .args(["-m", "pip", "--version"])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    Version::parse(s.split_whitespace().nth(1)?)
}

/// `pip install` the requirements (plus a pip pin if the bundled pip does
/// not satisfy the spec's `pip=` entry); returns how many were asked for.
pub fn install(py: &Path, spec: &BuildSpec, phase: &Phase) -> Result<usize> {
    let mut lines: Vec<String> = Vec::new();
    if spec.pip_entry.is_some() {
        lines.extend(pip_pin(spec, pip_version(py).as_ref())?);
    }
    lines.extend(spec.pip.iter().map(|r| r.text.clone()));
    if lines.is_empty() {
        return Ok(0);
    }
    let (_dir, reqs) = requirements_file(&lines)?;
    let mut cmd = python_command(py);
    cmd.args([
        "-m",
        "pip",
        "install",
        "--no-input",
        "--disable-pip-version-check",
        "--no-warn-script-location",
        "--prefer-binary",
        "--no-compile",
        "-r",
    ])
    .arg(&reqs);
    let (code, log) = run_logged(cmd, phase)?;
    if code != 0 {
        return Err(classify_failure(&log, spec, &lines));
    }
    Ok(lines.len())
}

/// `lines` as a requirements file in a temporary directory (removed when
/// the returned guard is dropped), for pip and uv.
pub(crate) fn requirements_file(lines: &[String]) -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix("vhrun-reqs")
        .tempdir()
        .map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let reqs = dir.path().join("requirements.txt");
    std::fs::write(&reqs, lines.join("\n") + "\n").at(&reqs)?;
    Ok((dir, reqs))
}

/// Lines of pip's (and uv's) output that mean the index was not reached.
pub(crate) const NETWORK_MARKERS: &[&str] = &[
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ProxyError",
    "SSLError",
    "Network is unreachable",
    "Connection refused",
    "connection broken by",
    // uv
    "error sending request",
    "tcp connect error",
    "dns error",
];

/// The requirement text pip complains about in `line`, if any.
fn complained_requirement(line: &str) -> Option<&str> {
    for marker in [
        "No matching distribution found for ",
        "Could not find a version that satisfies the requirement ",
        "Failed building wheel for ",
        "Failed to build ",
    ] {
        if let Some(rest) = line.split(marker).nth(1) {
            return rest.split_whitespace().next();
        }
    }
    None
}

/// Map pip's output to an error naming the spec line.
pub fn classify_failure(log: &str, spec: &BuildSpec, lines: &[String]) -> Error {
    let file = &spec.file;
    let errors = last_error_lines(log);
    // `Invalid requirement: 'x' (from line N of requirements.txt)`: N is our
    // line index into `lines`, which maps back to the spec entry.
    if let Some(l) = log.lines().find(|l| l.contains("Invalid requirement")) {
        let n = l
            .split("(from line ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<usize>().ok());
        let req = n
            .and_then(|n| lines.get(n - 1))
            .and_then(|t| spec.pip.iter().find(|r| &r.text == t));
        let at = req.map(|r| r.at()).unwrap_or_else(|| spec.pip_section_at());
        return Error::bad_input(
            file,
            format!("{at}: not a valid pip requirement ({})", l.trim()),
        );
    }
    let network = log
        .lines()
        .find(|l| NETWORK_MARKERS.iter().any(|m| l.contains(m)));
    let culprit = log.lines().rev().find_map(complained_requirement);
    let at = culprit
        .and_then(|c| spec.pip_requirement_for(c))
        .map(|r| format!("pip requirement {}", r.at()))
        .or_else(|| culprit.map(|c| format!("{} (`{c}`)", spec.pip_section_at())))
        .unwrap_or_else(|| spec.pip_section_at());
    if let Some(net) = network {
        return Error::unavailable(
            format!("{}: {at}: network failure while pip downloaded it", file.display()),
            format!(
                "check the connection to the package index (PIP_INDEX_URL, HTTPS_PROXY, PIP_CERT); pip said: {}",
                shorten(net.trim(), 300)
            ),
        );
    }
    if log.contains("No matching distribution found") {
        return Error::bad_input(
            file,
            format!("{at}: no such package or version on the package index ({errors})"),
        );
    }
    if log.contains("ResolutionImpossible") || log.contains("conflicting dependencies") {
        return Error::bad_input(
            file,
            format!(
                "{}: the pip requirements conflict ({errors})",
                spec.pip_section_at()
            ),
        );
    }
    Error::bad_input(file, format!("{at}: pip install failed ({errors})"))
}

pub(crate) fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn last_error_lines(log: &str) -> String {
    let errs: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("ERROR:") || l.starts_with("error:"))
        .map(str::trim)
        .collect();
    if errs.is_empty() {
        last_lines(log, 3)
    } else {
        shorten(&errs[errs.len().saturating_sub(2)..].join(" / "), 600)
    }
}

fn last_lines(log: &str, n: usize) -> String {
    let v: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    shorten(&v[v.len().saturating_sub(n)..].join(" / "), 600)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec with a pip pin and a package that does not exist (line 6),
    /// for the failure tests of pip and uv.
    pub(crate) fn spec() -> BuildSpec {
        let raw = "dependencies:\n- python=3.11\n- pip=23.2.1\n- pip:\n  - six==1.17.0\n  - vhrun-no-such-package-xyz==1.0\n";
        BuildSpec::parse(Path::new("/r/conda.yaml"), raw).unwrap()
    }

    #[test]
    fn missing_package_names_its_line() {
        let s = spec();
        let log = "Looking in links: /opt/wheels\nERROR: Could not find a version that satisfies the requirement vhrun-no-such-package-xyz==1.0 (from versions: none)\nERROR: No matching distribution found for vhrun-no-such-package-xyz==1.0\n";
        let e = classify_failure(log, &s, &[]);
        let m = e.to_string();
        assert!(
            m.starts_with(
                "/r/conda.yaml: pip requirement line 6: `vhrun-no-such-package-xyz==1.0`"
            ),
            "{m}"
        );
        assert_eq!(e.exit_code(), crate::error::exit::BAD_INPUT);
    }

    #[test]
    fn network_failure() {
        let s = spec();
        let log = "WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(... Connection refused)': /simple/six/\nERROR: Could not find a version that satisfies the requirement six==1.17.0 (from versions: none)\nERROR: No matching distribution found for six==1.17.0\n";
        let e = classify_failure(log, &s, &[]);
        let m = e.to_string();
        assert!(m.contains("line 5: `six==1.17.0`"), "{m}");
        assert!(m.contains("network failure"), "{m}");
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE);
    }

    #[test]
    fn invalid_requirement() {
        let s = spec();
        let lines = vec![
            "six==1.17.0".to_string(),
            "vhrun-no-such-package-xyz==1.0".to_string(),
        ];
        let log = "ERROR: Invalid requirement: 'x y' (from line 2 of /tmp/requirements.txt)\n";
        let m = classify_failure(log, &s, &lines).to_string();
        assert!(m.contains("line 6:"), "{m}");
    }
}
