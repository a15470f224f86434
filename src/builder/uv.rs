//! uv for a build's pip layer: which uv (`VHRUN_UV`, the spec's `uv=` pin,
//! rcc's and vhrun's caches of uv binaries, PATH, or one bootstrapped from
//! the package index with the chosen CPython's pip), the pip settings it is
//! given, `uv pip install` into the staged interpreter, and its failures
//! turned into errors that name the spec line.
//!
//! Decisions: `--link-mode copy` (real files: the stage is lifted into the
//! hololib and relocated, so nothing may point into uv's cache); uv's cache
//! is rcc's (`$ROBOCORP_HOME/uvcache`), so a package either tool fetched
//! once is local for both; as rcc does, `UV_*` variables and uv's own config
//! files are ignored (`UV_NO_CONFIG`), and what the user configured for pip
//! (index, extra indexes, find-links, trusted hosts, certificate: env
//! `PIP_*` and pip.conf) is passed on, so a machine set up for pip needs
//! nothing more.

use super::pip::{run_logged, shorten, NETWORK_MARKERS};
use super::progress::Phase;
use super::python::output_with_timeout;
use super::spec::{BuildSpec, Requirement};
use super::version::{Constraint, Version};
use crate::error::{Error, Result};
use crate::hololib::Locations;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `VHRUN_UV`: how the builder picks its pip installer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Choice {
    /// uv where one can be found or bootstrapped, else pip.
    #[default]
    Auto,
    /// `VHRUN_UV=off`: pip, always.
    Off,
    /// `VHRUN_UV=/path/to/uv`: that binary.
    Binary(PathBuf),
}

impl Choice {
    /// `VHRUN_UV`'s value (`commands::switches` reads it).
    pub fn parse(value: Option<&std::ffi::OsStr>) -> Choice {
        match value {
            None => Choice::Auto,
            Some(v) => match v.to_string_lossy().as_ref() {
                "" | "auto" => Choice::Auto,
                "off" | "0" | "no" | "false" | "pip" => Choice::Off,
                _ => Choice::Binary(PathBuf::from(v)),
            },
        }
    }
}

/// A uv binary the build uses.
#[derive(Debug, Clone)]
pub struct Uv {
    pub path: PathBuf,
    pub version: Version,
    /// Where it was found, for the build's messages.
    pub found: &'static str,
}

impl Uv {
    pub fn describe(&self) -> String {
        format!(
            "uv {} ({}, {})",
            self.version,
            self.path.display(),
            self.found
        )
    }
}

/// `uv --version` -> `uv 0.9.22 (...)`.
pub fn version_of(path: &Path) -> Option<Version> {
    let (code, out) =
        output_with_timeout(Command::new(path).arg("--version"), Duration::from_secs(10)).ok()?;
    let v = out.split_whitespace().nth(1)?;
    (code == 0 && out.starts_with("uv ")).then(|| Version::parse(v))?
}

/// The uv binaries this machine has, in the order a build considers
/// them: PATH's (the user's own), then rcc's `$ROBOCORP_HOME/uv/<version>/uv`
/// and vhrun's `$VHRUN_HOME/uv/<version>/uv`, each highest version first.
fn binaries(locations: &Locations) -> Vec<Uv> {
    let mut out = Vec::new();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(path) = std::env::split_paths(&path)
        .map(|d| d.join("uv"))
        .find(|p| crate::paths::is_executable(p))
    {
        if let Some(version) = version_of(&path) {
            out.push(Uv {
                path,
                version,
                found: "PATH",
            });
        }
    }
    for (root, found) in [
        (locations.robocorp_home.join("uv"), "rcc's cache"),
        (locations.home.uv(), "vhrun's cache"),
    ] {
        let Ok(rd) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut cached: Vec<Uv> = rd
            .flatten()
            .filter_map(|e| {
                let version = Version::parse(e.file_name().to_str()?)?;
                let path = e.path().join("uv");
                path.is_file().then_some(Uv {
                    path,
                    version,
                    found,
                })
            })
            .collect();
        cached.sort_by(|a, b| b.version.cmp(&a.version));
        out.extend(cached);
    }
    out
}

/// A uv this machine has now, without bootstrapping one (`vhrun doctor`).
pub fn at_hand(locations: &Locations) -> Option<Uv> {
    binaries(locations).into_iter().next()
}

/// The uv a build of `spec` installs its pip layer with; `None`: pip.
/// `python` is the interpreter whose pip bootstraps uv when no binary is
/// at hand. A spec that pins `uv=` gets a uv of that version or an error;
/// otherwise a uv that cannot be had means pip, with a note.
pub fn find(
    choice: &Choice,
    spec: &BuildSpec,
    locations: &Locations,
    python: &Path,
    phase: &Phase,
) -> Result<Option<Uv>> {
    let wanted = &spec.uv_constraint;
    match choice {
        Choice::Off => return Ok(None),
        Choice::Binary(path) => {
            let version = version_of(path).ok_or_else(|| {
                Error::unavailable(
                    format!("VHRUN_UV={}: not a uv binary", path.display()),
                    "point VHRUN_UV at uv, or unset it (VHRUN_UV=off: pip)",
                )
            })?;
            return Ok(Some(Uv {
                path: path.clone(),
                version,
                found: "VHRUN_UV",
            }));
        }
        Choice::Auto => {}
    }
    // The spec's pin, or any version.
    if let Some(uv) = binaries(locations)
        .into_iter()
        .find(|uv| wanted.matches(&uv.version))
    {
        return Ok(Some(uv));
    }
    phase.set_message("bootstrapping uv from the package index");
    match bootstrap(python, wanted, &locations.home.uv()) {
        Ok(uv) => Ok(Some(uv)),
        Err(why) => match &spec.uv_entry {
            Some(entry) => Err(Error::unavailable(
                format!(
                    "{}: {}: no uv of that version on this machine, and none could be bootstrapped",
                    spec.file.display(),
                    entry.at()
                ),
                format!("{why}; put one on PATH or name it with VHRUN_UV"),
            )),
            None => {
                tracing::info!("no uv ({why}): the pip layer is installed with pip");
                Ok(None)
            }
        },
    }
}

/// `pip download uv<wanted>` with `python`'s pip (the user's pip settings
/// apply), and the binary out of the wheel into `<root>/<version>/uv`.
fn bootstrap(python: &Path, wanted: &Constraint, root: &Path) -> std::result::Result<Uv, String> {
    let dl = tempfile::Builder::new()
        .prefix("vhrun-uv")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let req = wanted.to_pip("uv")?;
    let mut cmd = super::pip::python_command(python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        "-d",
    ])
    .arg(dl.path())
    .arg(&req);
    let out = cmd
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`pip download {req}` with {} failed: {}",
            python.display(),
            shorten(err.trim().lines().last().unwrap_or(""), 300)
        ));
    }
    let wheel = std::fs::read_dir(dl.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("pip downloaded no wheel")?;
    let name = wheel.file_name().unwrap_or_default().to_string_lossy();
    let version = name
        .split('-')
        .nth(1)
        .and_then(Version::parse)
        .ok_or_else(|| format!("{name}: no version in the wheel's name"))?;
    let file = std::fs::File::open(&wheel).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("{name}: {e}"))?;
    let inner = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with(".data/scripts/uv"))
        .map(|n| n.to_string())
        .ok_or_else(|| format!("{name}: no uv binary in the wheel"))?;
    let mut bytes = Vec::new();
    zip.by_name(&inner)
        .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
        .map_err(|e| format!("{name}: {inner}: {e}"))?;
    let dir = root.join(version.to_string());
    crate::paths::mkdir_all(&dir, 0o755).map_err(|e| e.to_string())?;
    // A concurrent build sees a whole binary or none.
    let dest = dir.join("uv");
    crate::paths::write_atomic(&dest, &bytes, 0o755).map_err(|e| e.to_string())?;
    Ok(Uv {
        path: dest,
        version,
        found: "bootstrapped from the package index",
    })
}

/// What the user configured for pip (pip's own precedence: config files
/// from system to user, `PIP_CONFIG_FILE`, then `PIP_*` variables; the
/// `[install]` section over `[global]`), for uv.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PipSettings {
    pub index_url: Option<String>,
    pub extra_index_urls: Vec<String>,
    pub find_links: Vec<String>,
    pub trusted_hosts: Vec<String>,
    pub cert: Option<String>,
}

impl PipSettings {
    pub fn from_env() -> PipSettings {
        let mut files: Vec<PathBuf> = vec!["/etc/xdg/pip/pip.conf".into(), "/etc/pip.conf".into()];
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
            files.push(home.join(".pip/pip.conf"));
            let xdg = std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".config"));
            files.push(xdg.join("pip/pip.conf"));
        }
        if let Some(f) = std::env::var_os("PIP_CONFIG_FILE") {
            files.push(f.into());
        }
        let mut s = PipSettings::default();
        for f in files {
            if let Ok(text) = std::fs::read_to_string(&f) {
                s.apply_ini(&text);
            }
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        s.apply(|key| env(&format!("PIP_{}", key.to_uppercase().replace('-', "_"))));
        s
    }

    fn apply_ini(&mut self, text: &str) {
        for section in ["global", "install"] {
            let values = ini_section(text, section);
            self.apply(|key| {
                values
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.clone())
            });
        }
    }

    fn apply(&mut self, get: impl Fn(&str) -> Option<String>) {
        let list = |v: String| v.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        if let Some(v) = get("index-url") {
            self.index_url = Some(v.trim().to_string());
        }
        if let Some(v) = get("extra-index-url") {
            self.extra_index_urls = list(v);
        }
        if let Some(v) = get("find-links") {
            self.find_links = list(v);
        }
        if let Some(v) = get("trusted-host") {
            self.trusted_hosts = list(v);
        }
        if let Some(v) = get("cert") {
            self.cert = Some(v.trim().to_string());
        }
    }

    /// uv's arguments (and `SSL_CERT_FILE`) for these settings.
    fn arguments(&self, cmd: &mut Command) {
        if let Some(u) = &self.index_url {
            cmd.args(["--index-url", u]);
        }
        for u in &self.extra_index_urls {
            cmd.args(["--extra-index-url", u]);
        }
        for l in &self.find_links {
            cmd.args(["--find-links", l]);
        }
        for h in &self.trusted_hosts {
            cmd.args(["--allow-insecure-host", h]);
        }
        if let Some(c) = &self.cert {
            cmd.env("SSL_CERT_FILE", c);
        }
    }
}

/// `key = value` pairs of one `[section]` of an INI file; continuation
/// lines (indented) extend the value, as pip's configparser reads them.
fn ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') && t.ends_with(']') {
            inside = t[1..t.len() - 1].trim() == section;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push('\n');
                last.1.push_str(t);
            }
            continue;
        }
        if let Some((k, v)) = t.split_once(['=', ':']) {
            out.push((
                k.trim().replace('_', "-").to_lowercase(),
                v.trim().to_string(),
            ));
        }
    }
    out
}

/// The environment every uv command of a build runs with: the caller's,
/// without `UV_*` (as rcc) or anything that points Python elsewhere.
fn command(uv: &Uv) -> Command {
    let mut c = Command::new(&uv.path);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("UV_") {
            c.env_remove(k);
        }
    }
    for var in super::pip::FOREIGN_PYTHON_SETUP {
        c.env_remove(var);
    }
    c.env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .stdin(std::process::Stdio::null());
    c
}

/// `uv pip install` of `lines` into the staged interpreter `py` (with
/// `find_links` as more local wheels); returns how many packages uv
/// installed.
pub fn install(
    uv: &Uv,
    py: &Path,
    locations: &Locations,
    spec: &BuildSpec,
    (lines, find_links): (&[String], &[PathBuf]),
    phase: &Phase,
) -> Result<usize> {
    let (_dir, reqs) = super::pip::requirements_file(lines)?;
    let settings = PipSettings::from_env();
    // rcc's local wheels, as its own uv runs are given them.
    let wheels = locations.robocorp_home.join("wheels");
    let install = |offline: bool| {
        let mut cmd = command(uv);
        cmd.args(["pip", "install", "--python"])
            .arg(py)
            .args(["--link-mode", "copy", "--color", "never", "--no-progress"])
            .arg("--cache-dir")
            .arg(locations.robocorp_home.join("uvcache"));
        settings.arguments(&mut cmd);
        for dir in find_links
            .iter()
            .chain(Some(&wheels).filter(|w| w.is_dir()))
        {
            cmd.arg("--find-links").arg(dir);
        }
        if offline {
            cmd.arg("--offline");
        }
        cmd.arg("--requirement").arg(&reqs);
        run_logged(cmd, phase)
    };
    // uv's cache first: when it holds every package (a second build of a
    // spec, or a robot whose packages another build fetched), the index is
    // not asked again. Otherwise uv says so before it installs anything,
    // and the same install runs online.
    let (code, log) = install(true)?;
    if code == 0 {
        return Ok(installed(&log));
    }
    tracing::info!("not everything is in uv's cache: resolving with the index");
    let (code, log) = install(false)?;
    if code != 0 {
        return Err(classify_failure(&log, spec, lines));
    }
    Ok(installed(&log))
}

/// `uv pip list --format freeze` of the staged interpreter.
pub fn list_command(uv: &Uv, py: &Path) -> Command {
    let mut c = command(uv);
    c.args([
        "pip", "list", "--format", "freeze", "--color", "never", "--python",
    ])
    .arg(py);
    c
}

/// `Installed 12 packages in 30ms` -> 12.
fn installed(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix("Installed "))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// `uv python install X.Y.Z` into rcc's uv Python cache
/// (`$ROBOCORP_HOME/uvpython`, where rcc's uv-native builds look): what
/// uv can provide of an exact interpreter the machine lacks.
pub fn python_install(uv: &Uv, version: &str, dir: &Path) -> std::result::Result<(), String> {
    let mut cmd = command(uv);
    cmd.args([
        "python",
        "install",
        version,
        "--color",
        "never",
        "--no-progress",
    ])
    .env("UV_PYTHON_INSTALL_DIR", dir)
    .env("UV_PYTHON_DOWNLOADS", "manual")
    // A machine that drops connections to the download host fails this in
    // seconds, not minutes; a slow download still completes.
    .env("UV_HTTP_RETRIES", "1")
    .env("UV_HTTP_TIMEOUT", "15");
    let (code, out) =
        output_with_timeout(&mut cmd, Duration::from_secs(300)).map_err(|e| e.to_string())?;
    match code {
        0 => Ok(()),
        _ => Err(format!(
            "`uv python install {version}` exited with {code} {}",
            out.trim()
        )),
    }
}

/// uv's `error:` line and its last `cause:`, for messages.
fn uv_errors(log: &str) -> String {
    let error = log.lines().find(|l| l.starts_with("error:")).map(str::trim);
    let both: Vec<&str> = error.into_iter().chain(last_cause(log)).collect();
    shorten(&both.join(": "), 600)
}

/// The requirement a uv resolver message says is not there: `Because X
/// was not found in the package registry`, `there is no version of X==1.0`.
fn missing(log: &str) -> Option<&str> {
    log.lines().find_map(|line| {
        if let Some(rest) = line.split("there is no version of ").nth(1) {
            return rest.split_whitespace().next();
        }
        let (before, _) = line.split_once(" was not found in the package registry")?;
        before.rsplit(' ').next()
    })
}

/// uv's last `cause:` line, without the word.
fn last_cause(log: &str) -> Option<&str> {
    log.lines()
        .rfind(|l| l.trim_start().starts_with("cause:"))
        .map(|l| l.trim().trim_start_matches("cause:").trim())
}

/// Map uv's output to an error naming the spec line (uv's counterpart of
/// `pip::classify_failure`: same error kinds, same exit codes).
pub fn classify_failure(log: &str, spec: &BuildSpec, lines: &[String]) -> Error {
    let file = &spec.file;
    let errors = uv_errors(log);
    let line_at = |r: Option<&Requirement>| {
        r.map(|r| format!("pip requirement {}", r.at()))
            .unwrap_or_else(|| spec.pip_section_at())
    };
    if log.contains("Couldn't parse requirement") || log.contains("Failed to parse") {
        // uv shows the offending line under the message.
        let bad = lines
            .iter()
            .find(|l| log.lines().any(|g| g.trim() == l.trim()))
            .and_then(|t| spec.pip.iter().find(|r| &r.text == t));
        return Error::bad_input(
            file,
            format!("{}: not a valid pip requirement ({errors})", line_at(bad)),
        );
    }
    if log
        .lines()
        .any(|l| NETWORK_MARKERS.iter().any(|m| l.contains(m)))
    {
        // `Failed to fetch: https://index/simple/<name>/`
        let name = log
            .lines()
            .find_map(|l| l.split("/simple/").nth(1))
            .and_then(|r| r.split('/').next());
        let at = line_at(name.and_then(|n| spec.pip_requirement_for(n)));
        return Error::unavailable(
            format!("{}: {at}: network failure while uv downloaded it", file.display()),
            format!(
                "check the connection to the package index (PIP_INDEX_URL, HTTPS_PROXY, PIP_CERT); uv said: {}",
                shorten(last_cause(log).unwrap_or(""), 300)
            ),
        );
    }
    if log.contains("No solution found") {
        if let Some(name) = missing(log) {
            let at = line_at(spec.pip_requirement_for(name));
            return Error::bad_input(
                file,
                format!("{at}: no such package or version on the package index ({errors})"),
            );
        }
        return Error::bad_input(
            file,
            format!(
                "{}: the pip requirements conflict ({errors})",
                spec.pip_section_at()
            ),
        );
    }
    Error::bad_input(
        file,
        format!(
            "{}: uv pip install failed ({errors})",
            spec.pip_section_at()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::pip::tests::spec;

    // The messages below are uv 0.13.9's own, captured with `--color never`.

    #[test]
    fn missing_package_names_its_line() {
        let log = "Using Python 3.11.7 environment at: uvt\nerror: No solution found when resolving dependencies\n  cause: Because vhrun-no-such-package-xyz was not found in the package registry and you require vhrun-no-such-package-xyz==1.0, we can conclude that your requirements are unsatisfiable.\n";
        let e = classify_failure(log, &spec(), &[]);
        let m = e.to_string();
        assert!(
            m.starts_with("/r/conda.yaml: pip requirement line 6: `vhrun-no-such-package-xyz==1.0`: no such package"),
            "{m}"
        );
        assert_eq!(e.exit_code(), crate::error::exit::BAD_INPUT);
        let log = "error: No solution found when resolving dependencies\n  cause: Because there is no version of six==99.1 and you require six==99.1, we can conclude that your requirements are unsatisfiable.\n";
        let raw = "dependencies:\n- python=3.11\n- pip:\n  - six==99.1\n";
        let s = BuildSpec::parse(Path::new("/r/conda.yaml"), raw).unwrap();
        let m = classify_failure(log, &s, &[]).to_string();
        assert!(
            m.contains("pip requirement line 4: `six==99.1`: no such package or version"),
            "{m}"
        );
    }

    #[test]
    fn network_failure() {
        let log = "Using Python 3.11.7 environment at: uvt\nerror: Request failed after 3 retries in 6.4s\n  cause: Failed to fetch: http://127.0.0.1:9/simple/six/\n  cause: error sending request for url (http://127.0.0.1:9/simple/six/)\n  cause: client error (Connect)\n  cause: tcp connect error\n  cause: Connection refused (os error 111)\n";
        let e = classify_failure(log, &spec(), &[]);
        let m = e.to_string();
        assert!(
            m.contains("line 5: `six==1.17.0`: network failure while uv"),
            "{m}"
        );
        assert!(m.contains("Connection refused"), "{m}");
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE);
    }

    #[test]
    fn conflicts_and_bad_lines() {
        let log = "error: No solution found when resolving dependencies\n  cause: Because requests==2.32.3 depends on urllib3>=1.21.1,<3 and you require requests==2.32.3, we can conclude that you require urllib3>=1.21.1,<3.\n         And because you require urllib3==1.0, we can conclude that your requirements are unsatisfiable.\n";
        let m = classify_failure(log, &spec(), &[]).to_string();
        assert!(m.contains("the pip requirements conflict"), "{m}");
        let raw = "dependencies:\n- python=3.11\n- pip:\n  - six==1.17.0\n  - x y z\n";
        let s = BuildSpec::parse(Path::new("/r/conda.yaml"), raw).unwrap();
        let lines = vec!["six==1.17.0".to_string(), "x y z".to_string()];
        let log = "error: Couldn't parse requirement in `r4.txt` at position 12\n  cause: Expected one of `@`, `(`, `<`, `=`, `>`, `~`, `!`, `;`, found `y`\n         x y z\n           ^\n";
        let m = classify_failure(log, &s, &lines).to_string();
        assert!(
            m.contains("line 5: `x y z`: not a valid pip requirement"),
            "{m}"
        );
    }

    #[test]
    fn pip_settings_follow_pips_precedence() {
        let mut s = PipSettings::default();
        s.apply_ini("[global]\nindex-url = https://a/simple\nfind-links =\n    /w1\n    /w2\ntrusted_host: a\n[install]\nindex-url = https://b/simple\n[other]\ncert = /x\n");
        assert_eq!(s.index_url.as_deref(), Some("https://b/simple"));
        assert_eq!(s.find_links, ["/w1", "/w2"]);
        assert_eq!(s.trusted_hosts, ["a"]);
        assert_eq!(s.cert, None);
        s.apply(|k| (k == "extra-index-url").then(|| "https://c/ https://d/".to_string()));
        assert_eq!(s.extra_index_urls, ["https://c/", "https://d/"]);
        assert_eq!(
            installed("Resolved 5 packages in 1s\nInstalled 4 packages in 3ms\n"),
            4
        );
    }
}
