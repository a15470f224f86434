//! What the builder needs from a conda.yaml (or package.yaml): the python
//! constraint, the pip section, and every other conda package (which only
//! rcc can install). Each entry keeps its line so errors can point at it.

use super::version::Constraint;
use crate::error::{Error, IoContext, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Conda packages whose PyPI distribution of the same name is equivalent:
/// the builder installs them with pip instead of failing.
const VIA_PIP: &[&str] = &["setuptools", "wheel"];

/// One dependency line of the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The entry as written (trimmed), e.g. `python=3.11` or `pandas==2.2.3`.
    pub text: String,
    /// 1-based line in the spec file, when it could be located.
    pub line: Option<usize>,
}

impl Requirement {
    /// `line 7: `pandas==2.2.3`` for messages.
    pub fn at(&self) -> String {
        match self.line {
            Some(n) => format!("line {n}: `{}`", self.text),
            None => format!("`{}`", self.text),
        }
    }

    /// The distribution name a pip requirement installs (PEP 503 normalised),
    /// empty for option lines such as `--extra-index-url`.
    pub fn pip_name(&self) -> String {
        normalize_name(&self.text)
    }
}

/// PEP 503 name of the requirement at the start of `text`.
pub fn normalize_name(text: &str) -> String {
    let t = text.trim();
    if t.starts_with('-') {
        return String::new();
    }
    let name: String = t
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    let mut out = String::new();
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// A conda spec reduced to what vhrun's own builder can act on.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// The conda.yaml / package.yaml this came from.
    pub file: PathBuf,
    pub channels: Vec<String>,
    /// The `python...` entry, if any.
    pub python: Option<Requirement>,
    /// Its constraint (`=3.11` -> any 3.11.x); `Constraint::any()` for a bare `python`.
    pub python_constraint: Constraint,
    /// The conda `pip` entry, if any (pip is bootstrapped from the interpreter's ensurepip).
    pub pip_entry: Option<Requirement>,
    pub pip_constraint: Constraint,
    /// pip requirements: the pip section, plus conda packages that pip installs
    /// equally well (setuptools, wheel), translated to pip specifiers.
    pub pip: Vec<Requirement>,
    /// The conda `uv` entry, if any: rcc installs the pip layer with that
    /// uv, and with no `channels:` it is rcc's uv-native mode.
    pub uv_entry: Option<Requirement>,
    pub uv_constraint: Constraint,
    /// The conda entries that became pip requirements (setuptools, wheel), as written.
    pub conda_via_pip: Vec<Requirement>,
    /// Other conda packages: only rcc (micromamba) can install them.
    pub conda_extra: Vec<Requirement>,
    /// `rccPostInstall` / package.yaml `post-install` commands.
    pub post_install: Vec<Requirement>,
}

#[derive(Debug, Deserialize)]
struct CondaYaml {
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    dependencies: Option<Vec<serde_yaml::Value>>,
    #[serde(default, rename = "rccPostInstall")]
    post_install: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct PackageYaml {
    #[serde(default)]
    dependencies: Option<PackageDeps>,
    #[serde(default, rename = "post-install")]
    post_install: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct PackageDeps {
    #[serde(default, rename = "conda-forge")]
    conda_forge: Option<Vec<String>>,
    #[serde(default)]
    pypi: Option<Vec<String>>,
}

/// rcc's dependency regex `^([^<=~!> ]+)\s*(?:([<=~!>]*)\s*(\S+.*?))?$`:
/// the name and the rest (operator + version).
pub fn split_conda_dep(dep: &str) -> (&str, &str) {
    let dep = dep.trim();
    let end = dep
        .find(['<', '=', '~', '!', '>', ' ', '\t'])
        .unwrap_or(dep.len());
    (&dep[..end], dep[end..].trim())
}

/// Finds the line of each entry in the raw text, in order, each line used once.
struct Lines<'a> {
    lines: Vec<&'a str>,
    used: Vec<bool>,
}

impl<'a> Lines<'a> {
    fn new(raw: &'a str) -> Self {
        let lines: Vec<&str> = raw.lines().collect();
        let used = vec![false; lines.len()];
        Lines { lines, used }
    }
    fn find(&mut self, entry: &str) -> Option<usize> {
        let entry = entry.trim();
        let hit = self.lines.iter().enumerate().position(|(i, l)| {
            if self.used[i] {
                return false;
            }
            let l = l.trim_start();
            let Some(item) = l.strip_prefix('-') else {
                return false;
            };
            let item = item.trim();
            let uncommented = item.split(" #").next().unwrap_or("").trim();
            [item, uncommented]
                .iter()
                .any(|c| *c == entry || unquote(c) == entry)
        })?;
        self.used[hit] = true;
        Some(hit + 1)
    }
}

impl BuildSpec {
    /// Read a conda.yaml (or package.yaml, by its file name as rcc decides).
    pub fn from_conda_yaml(path: &Path) -> Result<BuildSpec> {
        let raw = std::fs::read_to_string(path).at(path)?;
        Self::parse(path, &raw)
    }

    pub fn parse(path: &Path, raw: &str) -> Result<BuildSpec> {
        let is_package = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase() == "package.yaml")
            .unwrap_or(false);
        let bad = |e: serde_yaml::Error| {
            let at = e
                .location()
                .map(|l| format!("line {}: ", l.line()))
                .unwrap_or_default();
            Error::bad_input(path, format!("{at}{e}"))
        };
        let (channels, conda, pip, post) = if is_package {
            let p: PackageYaml = serde_yaml::from_str(raw).map_err(bad)?;
            let deps = p.dependencies.unwrap_or(PackageDeps {
                conda_forge: None,
                pypi: None,
            });
            // package.yaml's `name=ver` pip pins mean `name==ver`.
            let pypi = deps
                .pypi
                .unwrap_or_default()
                .into_iter()
                .map(|d| (d.clone(), package_pip(&d)))
                .collect::<Vec<_>>();
            (
                vec!["conda-forge".to_string()],
                deps.conda_forge.unwrap_or_default(),
                pypi,
                p.post_install.unwrap_or_default(),
            )
        } else {
            let c: CondaYaml = serde_yaml::from_str(raw).map_err(bad)?;
            let mut conda = Vec::new();
            let mut pip = Vec::new();
            for item in c.dependencies.unwrap_or_default() {
                match item {
                    serde_yaml::Value::String(s) => conda.push(s),
                    serde_yaml::Value::Mapping(m) => {
                        for (k, v) in m {
                            if k.as_str() != Some("pip") {
                                continue;
                            }
                            let serde_yaml::Value::Sequence(seq) = v else {
                                return Err(Error::bad_input(
                                    path,
                                    "the `pip:` entry of dependencies must be a list",
                                ));
                            };
                            for s in seq {
                                match s {
                                    serde_yaml::Value::String(s) => pip.push((s.clone(), s)),
                                    other => {
                                        return Err(Error::bad_input(
                                            path,
                                            format!("pip requirement {other:?} is not a string"),
                                        ))
                                    }
                                }
                            }
                        }
                    }
                    // rcc drops other items silently; so do we.
                    _ => {}
                }
            }
            (
                c.channels.unwrap_or_default(),
                conda,
                pip,
                c.post_install.unwrap_or_default(),
            )
        };

        let mut lines = Lines::new(raw);
        let mut spec = BuildSpec {
            file: path.to_path_buf(),
            channels,
            python: None,
            python_constraint: Constraint::any(),
            pip_entry: None,
            pip_constraint: Constraint::any(),
            pip: Vec::new(),
            uv_entry: None,
            uv_constraint: Constraint::any(),
            conda_via_pip: Vec::new(),
            conda_extra: Vec::new(),
            post_install: Vec::new(),
        };
        for dep in conda {
            let text = dep.trim().to_string();
            let req = Requirement {
                line: lines.find(&text),
                text,
            };
            let (name, rest) = split_conda_dep(&req.text);
            // `conda-forge::python=3.11`: the channel does not matter here.
            let name = name.rsplit("::").next().unwrap_or(name).to_lowercase();
            let constraint = |req: &Requirement| {
                Constraint::parse(rest)
                    .map_err(|e| Error::bad_input(path, format!("{}: {e}", req.at())))
            };
            match name.as_str() {
                "python" => {
                    spec.python_constraint = constraint(&req)?;
                    spec.python = Some(req);
                }
                "pip" => {
                    spec.pip_constraint = constraint(&req)?;
                    spec.pip_entry = Some(req);
                }
                "uv" => {
                    spec.uv_constraint = constraint(&req)?;
                    spec.uv_entry = Some(req);
                }
                n if VIA_PIP.contains(&n) => {
                    let pip = constraint(&req)?
                        .to_pip(n)
                        .map_err(|e| Error::bad_input(path, format!("{}: {e}", req.at())))?;
                    spec.pip.push(Requirement {
                        text: pip,
                        line: req.line,
                    });
                    spec.conda_via_pip.push(req);
                }
                _ => spec.conda_extra.push(req),
            }
        }
        for (written, text) in pip {
            spec.pip.push(Requirement {
                line: lines.find(&written),
                text: text.trim().to_string(),
            });
        }
        for cmd in post {
            spec.post_install.push(Requirement {
                line: lines.find(&cmd),
                text: cmd,
            });
        }
        Ok(spec)
    }

    /// rcc's uv-native mode (`IsUvNative`): no `channels:` at all, and both
    /// `python` and `uv` among the conda dependencies. No micromamba: the
    /// interpreter is a copied CPython, the pip layer is installed with uv.
    pub fn is_uv_native(&self) -> bool {
        self.channels.is_empty() && self.python.is_some() && self.uv_entry.is_some()
    }

    /// rcc's `ValidateUvNative`: versions for python and uv, and no other
    /// conda dependency (rcc's message, with the line).
    pub fn validate_uv_native(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::bad_input(&self.file, msg));
        if let Some(py) = &self.python {
            if self.python_constraint.is_any() {
                return bad(format!(
                    "{}: uv-native mode (no channels) requires an exact python version (e.g. python=3.12.8)",
                    py.at()
                ));
            }
        }
        if let Some(uv) = &self.uv_entry {
            if self.uv_constraint.is_any() {
                return bad(format!(
                    "{}: uv-native mode (no channels) requires a uv version (e.g. uv=0.9.22)",
                    uv.at()
                ));
            }
        }
        // setuptools / wheel conda entries became pip requirements; rcc
        // refuses them as conda dependencies all the same.
        let other = self
            .pip_entry
            .iter()
            .chain(&self.conda_via_pip)
            .chain(&self.conda_extra)
            .min_by_key(|r| r.line);
        if let Some(r) = other {
            return bad(format!(
                "{}: uv-native mode (no channels) only supports python and uv as conda dependencies; add `channels: [conda-forge]` if you need conda packages",
                r.at()
            ));
        }
        Ok(())
    }

    /// `file: line 4: `nodejs=18`, line 5: `...`` for the needs-rcc message.
    pub fn conda_extra_listing(&self) -> String {
        self.conda_extra
            .iter()
            .map(|r| r.at())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The pip requirement named like `requirement` (a pip message's text).
    pub fn pip_requirement_for(&self, requirement: &str) -> Option<&Requirement> {
        let name = normalize_name(requirement);
        if name.is_empty() {
            return None;
        }
        self.pip.iter().find(|r| r.pip_name() == name)
    }

    /// Where the pip section starts, for errors that name no single package.
    pub fn pip_section_at(&self) -> String {
        match self.pip.iter().filter_map(|r| r.line).min() {
            Some(n) => format!("pip section (line {n})"),
            None => "pip section".to_string(),
        }
    }
}

/// `"x"` or `'x'` -> `x` (a YAML scalar written quoted).
fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

fn package_pip(dep: &str) -> String {
    let (name, rest) = split_conda_dep(dep);
    match rest.strip_prefix('=') {
        Some(v) if !v.starts_with('=') => format!("{name}=={v}"),
        _ => dep.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::version::Version;

    const CONDA: &str = "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip=23.2.1\n- setuptools>=69\n- nodejs=18\n- pip:\n  - pandas==2.2.3\n  - Robot_Framework==7.1.1  # comment\nrccPostInstall:\n- rfbrowser init\n";

    #[test]
    fn conda_yaml_entries_and_lines() {
        let s = BuildSpec::parse(Path::new("/r/conda.yaml"), CONDA).unwrap();
        assert_eq!(s.channels, ["conda-forge"]);
        assert_eq!(s.python.as_ref().unwrap().line, Some(4));
        assert!(s
            .python_constraint
            .matches(&Version::parse("3.11.7").unwrap()));
        assert_eq!(s.pip_entry.as_ref().unwrap().line, Some(5));
        assert_eq!(s.conda_extra.len(), 1);
        assert_eq!(s.conda_extra_listing(), "line 7: `nodejs=18`");
        let pip: Vec<_> = s.pip.iter().map(|r| (r.text.as_str(), r.line)).collect();
        assert_eq!(
            pip,
            [
                ("setuptools>=69", Some(6)),
                ("pandas==2.2.3", Some(9)),
                ("Robot_Framework==7.1.1", Some(10))
            ]
        );
        assert_eq!(
            s.pip_requirement_for("robot-framework==7.1.1")
                .unwrap()
                .line,
            Some(10)
        );
        assert_eq!(s.post_install[0].line, Some(12));
        assert_eq!(s.pip_section_at(), "pip section (line 6)");
    }

    #[test]
    fn package_yaml() {
        let raw = "dependencies:\n  conda-forge:\n  - python=3.10.12\n  - uv=0.4\n  pypi:\n  - requests=2.32.3\n";
        let s = BuildSpec::parse(Path::new("/r/package.yaml"), raw).unwrap();
        assert_eq!(s.python.unwrap().line, Some(3));
        assert!(s.conda_extra.is_empty());
        assert_eq!(s.uv_entry.unwrap().line, Some(4));
        // package.yaml always has conda-forge: never uv-native.
        assert_eq!(s.channels, ["conda-forge"]);
        assert_eq!(s.pip[0].text, "requests==2.32.3");
        assert_eq!(s.pip[0].line, Some(6));
    }

    #[test]
    fn uv_native_is_rccs_no_channels_python_and_uv() {
        let p = Path::new("/r/conda.yaml");
        let native = "dependencies:\n- python=3.12.8\n- uv=0.9.22\n- pip:\n  - requests==2.32.3\n";
        let s = BuildSpec::parse(p, native).unwrap();
        assert!(s.is_uv_native());
        s.validate_uv_native().unwrap();
        assert!(s.conda_extra.is_empty());
        assert_eq!(s.pip.len(), 1);

        let with_channels = format!("channels:\n- conda-forge\n{native}");
        let s = BuildSpec::parse(p, &with_channels).unwrap();
        assert!(!s.is_uv_native());
        assert!(s.uv_entry.is_some() && s.conda_extra.is_empty());

        let no_uv = "dependencies:\n- python=3.12.8\n";
        assert!(!BuildSpec::parse(p, no_uv).unwrap().is_uv_native());

        let extra = "dependencies:\n- python=3.12.8\n- uv=0.9.22\n- pip=24.0\n- nodejs=18\n";
        let e = BuildSpec::parse(p, extra)
            .unwrap()
            .validate_uv_native()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("/r/conda.yaml: line 4: `pip=24.0`: uv-native"),
            "{e}"
        );
        assert!(e.contains("channels: [conda-forge]"), "{e}");

        let loose = "dependencies:\n- python\n- uv=0.9.22\n";
        let e = BuildSpec::parse(p, loose)
            .unwrap()
            .validate_uv_native()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "line 2: `python`: uv-native mode (no channels) requires an exact python version"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_specs_name_the_file() {
        let e =
            BuildSpec::parse(Path::new("/r/conda.yaml"), "dependencies: [python=abc]").unwrap_err();
        assert!(e.to_string().starts_with("/r/conda.yaml: "), "{e}");
        assert!(e.to_string().contains("python=abc"), "{e}");
        let e = BuildSpec::parse(Path::new("/r/conda.yaml"), "dependencies: {").unwrap_err();
        assert!(e.to_string().contains("/r/conda.yaml"), "{e}");
    }

    #[test]
    fn names() {
        assert_eq!(normalize_name("Robot_Framework.x==1"), "robot-framework-x");
        assert_eq!(normalize_name("--extra-index-url x"), "");
        assert_eq!(normalize_name("pandas[excel]>=2"), "pandas");
    }
}
