//! Finding a local CPython for a spec's `python` constraint: `--python PATH`
//! alone when given; otherwise every interpreter on PATH, under pyenv
//! (`$PYENV_ROOT/versions/*`) and uv (`uv python install`, and rcc's uv
//! Python cache `$ROBOCORP_HOME/uvpython`), the highest version that
//! satisfies the constraint winning (for rcc's uv-native specs, uv's own
//! interpreter of the exact version first, as rcc takes it from there).

use super::spec::BuildSpec;
use super::version::{Constraint, Version};
use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where an interpreter was found; also the tie-break order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Explicit,
    Path,
    Pyenv,
    Uv,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Explicit => "--python",
            Source::Path => "PATH",
            Source::Pyenv => "pyenv",
            Source::Uv => "uv",
        })
    }
}

/// A probed interpreter.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The path it was found at.
    pub executable: PathBuf,
    pub version: Version,
    /// `sys.base_prefix`, canonical: the prefix the builder copies.
    pub base_prefix: PathBuf,
    /// The standard library relative to the prefix (`lib/python3.11`).
    pub stdlib: PathBuf,
    pub source: Source,
    /// Why it cannot be used even if its version fits (a distribution's
    /// /usr python is split over the system and patched; it does not copy).
    pub unusable: Option<String>,
}

impl Interpreter {
    pub fn describe(&self) -> String {
        format!(
            "CPython {} ({}, {})",
            self.version,
            self.base_prefix.display(),
            self.source
        )
    }
}

/// The interpreter chosen for a spec.
#[derive(Debug, Clone)]
pub struct Selection {
    pub interpreter: Interpreter,
    /// The spec pinned a patch release this machine does not have; the
    /// highest patch of the same minor series was taken instead.
    pub relaxed: bool,
}

const PROBE: &str = r#"import json, os, sys, sysconfig
print(json.dumps({"version": "%d.%d.%d" % sys.version_info[:3],
  "level": sys.version_info.releaselevel, "serial": sys.version_info.serial,
  "impl": sys.implementation.name, "base_prefix": sys.base_prefix,
  "stdlib": sysconfig.get_path("stdlib", vars={"installed_base": sys.base_prefix, "base": sys.base_prefix})}))
"#;

#[derive(serde::Deserialize)]
struct ProbeOut {
    version: String,
    level: String,
    serial: u64,
    #[serde(rename = "impl")]
    implementation: String,
    base_prefix: PathBuf,
    stdlib: PathBuf,
}

/// Run `cmd`, collecting stdout, killing it after `timeout`.
pub(crate) fn output_with_timeout(
    cmd: &mut Command,
    timeout: Duration,
) -> std::io::Result<(i32, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = child.stdout.take().expect("piped");
    // Reading on this thread: the probe prints a few hundred bytes, far
    // below the pipe's capacity, so the child never blocks on it.
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let mut s = String::new();
            out.read_to_string(&mut s)?;
            return Ok((status.code().unwrap_or(-1), s));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Ask an interpreter what it is.
pub fn probe(exe: &Path, source: Source) -> std::result::Result<Interpreter, String> {
    let mut cmd = Command::new(exe);
    cmd.args(["-I", "-c", PROBE])
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPATH");
    let (code, out) = output_with_timeout(&mut cmd, Duration::from_secs(20))
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    if code != 0 {
        return Err(format!("{}: exited with {code}", exe.display()));
    }
    let p: ProbeOut = serde_json::from_str(out.trim())
        .map_err(|e| format!("{}: unexpected answer ({e})", exe.display()))?;
    if p.implementation != "cpython" {
        return Err(format!(
            "{}: {} is not CPython",
            exe.display(),
            p.implementation
        ));
    }
    let mut text = p.version.clone();
    if p.level != "final" {
        let tag = match p.level.as_str() {
            "alpha" => "a",
            "beta" => "b",
            "candidate" => "rc",
            other => other,
        };
        text.push_str(&format!("{tag}{}", p.serial));
    }
    let version =
        Version::parse(&text).ok_or_else(|| format!("{}: odd version {text}", exe.display()))?;
    let base_prefix = p.base_prefix.canonicalize().unwrap_or(p.base_prefix);
    let stdlib_abs = p.stdlib.canonicalize().unwrap_or(p.stdlib);
    let (stdlib, mut unusable) = match stdlib_abs.strip_prefix(&base_prefix) {
        Ok(rel) => (rel.to_path_buf(), None),
        Err(_) => (
            PathBuf::new(),
            Some(format!(
                "its standard library {} is outside its prefix",
                stdlib_abs.display()
            )),
        ),
    };
    if base_prefix == Path::new("/usr") || base_prefix == Path::new("/") {
        unusable = Some(
            "the distribution's system python (split over /usr, patched) cannot be copied".into(),
        );
    }
    Ok(Interpreter {
        executable: exe.to_path_buf(),
        version,
        base_prefix,
        stdlib,
        source,
        unusable,
    })
}

/// A script named python3 is a version-manager shim (pyenv, asdf): the
/// interpreters behind it are found directly.
fn is_shim(p: &Path) -> bool {
    let mut head = [0u8; 2];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|_| &head == b"#!")
        .unwrap_or(false)
}

fn is_python_name(name: &str) -> bool {
    match name.strip_prefix("python3") {
        Some("") => true,
        Some(rest) => rest
            .strip_prefix('.')
            .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit())),
        None => false,
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Interpreters to probe, in source order, without duplicates; `uv_roots`
/// are more directories of uv-managed interpreters (`cpython-X.Y.Z-*`).
pub fn candidates(explicit: Option<&Path>, uv_roots: &[PathBuf]) -> Vec<(PathBuf, Source)> {
    if let Some(p) = explicit {
        // A prefix directory is as good as its interpreter.
        let exe = if p.is_dir() {
            p.join("bin/python3")
        } else {
            p.to_path_buf()
        };
        return vec![(exe, Source::Explicit)];
    }
    let mut out: Vec<(PathBuf, Source)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut push = |p: PathBuf, s: Source, out: &mut Vec<(PathBuf, Source)>| {
        if !crate::paths::is_executable(&p) {
            return;
        }
        let key = p.canonicalize().unwrap_or_else(|_| p.clone());
        if seen.insert(key) {
            out.push((p, s));
        }
    };
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| is_python_name(n))
                .collect();
            names.sort();
            for n in names {
                let p = dir.join(n);
                if !is_shim(&p) {
                    push(p, Source::Path, &mut out);
                }
            }
        }
    }
    let pyenv_root = std::env::var_os("PYENV_ROOT")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".pyenv")));
    let uv_root = std::env::var_os("UV_PYTHON_INSTALL_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_DATA_HOME")
                .filter(|v| !v.is_empty())
                .map(|d| PathBuf::from(d).join("uv/python"))
        })
        .or_else(|| home().map(|h| h.join(".local/share/uv/python")));
    let roots = [
        (pyenv_root.map(|r| r.join("versions")), Source::Pyenv),
        (uv_root, Source::Uv),
    ]
    .into_iter()
    .chain(uv_roots.iter().map(|r| (Some(r.clone()), Source::Uv)));
    for (root, source) in roots {
        let Some(root) = root else { continue };
        let Ok(rd) = std::fs::read_dir(&root) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        dirs.sort();
        for d in dirs {
            push(d.join("bin/python3"), source, &mut out);
        }
    }
    out
}

/// Probe every candidate (in parallel: each is a process start).
pub fn discover(explicit: Option<&Path>, uv_roots: &[PathBuf]) -> (Vec<Interpreter>, Vec<String>) {
    let cands = candidates(explicit, uv_roots);
    let results: Vec<std::result::Result<Interpreter, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = cands
            .iter()
            .map(|(p, src)| s.spawn(move || probe(p, *src)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("probe panicked".into())))
            .collect()
    });
    let mut found: Vec<Interpreter> = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            // The same prefix reached twice (python3 and python3.11 on PATH).
            Ok(i) if found.iter().any(|f| f.base_prefix == i.base_prefix) => {}
            Ok(i) => found.push(i),
            Err(e) => failures.push(e),
        }
    }
    (found, failures)
}

fn best<'a>(found: &'a [Interpreter], c: &Constraint, prefer_uv: bool) -> Option<&'a Interpreter> {
    found
        .iter()
        .filter(|i| i.unusable.is_none() && c.matches(&i.version))
        // highest version; on a tie uv's (uv-native) or the earlier source
        .max_by(|a, b| {
            a.version
                .cmp(&b.version)
                .then_with(|| {
                    (prefer_uv && a.source == Source::Uv)
                        .cmp(&(prefer_uv && b.source == Source::Uv))
                })
                .then_with(|| b.source.cmp(&a.source))
        })
}

/// Choose the interpreter for `spec`, or say which spec line cannot be met
/// and what was found.
pub fn select(
    spec: &BuildSpec,
    explicit: Option<&Path>,
    uv_roots: &[PathBuf],
) -> Result<Selection> {
    let (found, failures) = discover(explicit, uv_roots);
    select_from(spec, &found, &failures, explicit)
}

pub fn select_from(
    spec: &BuildSpec,
    found: &[Interpreter],
    failures: &[String],
    explicit: Option<&Path>,
) -> Result<Selection> {
    let c = &spec.python_constraint;
    let prefer_uv = spec.is_uv_native();
    if let Some(i) = best(found, c, prefer_uv) {
        return Ok(Selection {
            interpreter: i.clone(),
            relaxed: false,
        });
    }
    if let Some(i) = c.relaxed().as_ref().and_then(|r| best(found, r, prefer_uv)) {
        return Ok(Selection {
            interpreter: i.clone(),
            relaxed: true,
        });
    }
    let what = match &spec.python {
        Some(r) => r.at(),
        None => "python".to_string(),
    };
    let mut sorted: Vec<&Interpreter> = found.iter().collect();
    sorted.sort_by(|a, b| b.version.cmp(&a.version));
    let mut listing: Vec<String> = sorted
        .iter()
        .map(|i| match &i.unusable {
            None => format!("{} ({})", i.version, i.executable.display()),
            Some(why) => format!("{} ({}: {why})", i.version, i.executable.display()),
        })
        .collect();
    if explicit.is_some() {
        listing.extend(failures.iter().cloned());
    }
    let found_text = if listing.is_empty() {
        "no CPython found on PATH, in pyenv or uv".to_string()
    } else {
        format!("found {}", listing.join(", "))
    };
    let minor = c.minor_hint().unwrap_or_else(|| "3.12".into());
    Err(Error::bad_input(
        &spec.file,
        format!(
            "{what}: no local CPython satisfies it; {found_text}; \
             install one (`pyenv install {minor}` or `uv python install {minor}`) or pass --python PATH"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interp(v: &str, src: Source) -> Interpreter {
        Interpreter {
            executable: PathBuf::from(format!("/x/{v}/bin/python3")),
            version: Version::parse(v).unwrap(),
            base_prefix: PathBuf::from(format!("/x/{v}")),
            stdlib: PathBuf::from("lib/python3.x"),
            source: src,
            unusable: None,
        }
    }

    fn spec(python: &str) -> BuildSpec {
        let raw = format!("dependencies:\n- {python}\n");
        BuildSpec::parse(Path::new("/r/conda.yaml"), &raw).unwrap()
    }

    #[test]
    fn picks_highest_patch_and_relaxes_pins() {
        let found = vec![
            interp("3.10.13", Source::Pyenv),
            interp("3.11.7", Source::Pyenv),
            interp("3.11.4", Source::Path),
            interp("3.13.0", Source::Uv),
        ];
        let s = select_from(&spec("python=3.11"), &found, &[], None).unwrap();
        assert_eq!(s.interpreter.version.to_string(), "3.11.7");
        assert!(!s.relaxed);
        let s = select_from(&spec("python=3.11.5"), &found, &[], None).unwrap();
        assert_eq!(s.interpreter.version.to_string(), "3.11.7");
        assert!(s.relaxed);
        let s = select_from(&spec("python"), &found, &[], None).unwrap();
        assert_eq!(s.interpreter.version.to_string(), "3.13.0");
        let e = select_from(&spec("python=3.99"), &found, &[], None).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("line 2: `python=3.99`"), "{m}");
        assert!(m.contains("3.11.7 (/x/3.11.7/bin/python3)"), "{m}");
        assert!(m.contains("pyenv install 3.99"), "{m}");
    }

    #[test]
    fn system_python_is_not_chosen() {
        let mut sys = interp("3.12.9", Source::Path);
        sys.unusable = Some("system".into());
        let found = vec![sys, interp("3.12.1", Source::Pyenv)];
        let s = select_from(&spec("python=3.12"), &found, &[], None).unwrap();
        assert_eq!(s.interpreter.version.to_string(), "3.12.1");
    }

    #[test]
    fn python_names() {
        assert!(is_python_name("python3"));
        assert!(is_python_name("python3.11"));
        assert!(!is_python_name("python3.11-config"));
        assert!(!is_python_name("python3-"));
        assert!(!is_python_name("python"));
    }
}
