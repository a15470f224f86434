//! conda.yaml / package.yaml -> rcc's normalised environment -> blueprint
//! text -> blueprint hash (rcc `conda/condayaml.go`, `conda/packageyaml.go`,
//! `htfs/commands.go` `ComposeFinalBlueprint`).
//!
//! The hash names the catalog of an environment, so every quirk of rcc's
//! normalisation that changes the text is reproduced, including the ones
//! that look like bugs:
//! - within one file, a dependency that conflicts with an earlier one (two
//!   different exact versions) silently ends the list: rcc ignores the
//!   error and drops that dependency and every later one of the same kind;
//!   vhrun does the same (and logs a warning) to find rcc's catalogs;
//! - merging files keeps no `prefix` and names the result `left+right`;
//! - a package.yaml never gets the local channel, a conda.yaml does.
//!
//! The YAML is read with serde_yaml. yaml.v2 reads YAML 1.1, so a plain
//! `yes`, `0777` or `1_000` in a `dependencies:` list is no string for rcc
//! and is dropped; serde_yaml cannot say whether such a string was quoted,
//! so vhrun drops it whether it was quoted or not (rcc keeps a quoted one).

pub mod yamlv2;

use crate::error::{Error, IoContext, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use yamlv2::Node;

/// A normalised environment text and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blueprint {
    /// The yaml.v2 text, trimmed: exactly the bytes rcc hashes.
    pub text: String,
    /// rcc's `BlueprintHash` of `text`: 16 lowercase hex chars.
    pub hash: String,
}

impl Blueprint {
    pub fn of_text(text: String) -> Blueprint {
        let hash = crate::digest::blueprint_hash(text.as_bytes());
        Blueprint { text, hash }
    }
}

/// One conda/pip requirement as rcc splits it (`AsDependency`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The whole trimmed text; this is what goes back into the blueprint.
    pub original: String,
    pub name: String,
    pub qualifier: String,
    pub versions: String,
}

impl Dependency {
    /// rcc's `AsDependency`: the trimmed text matched against
    /// `^([^<=~!> ]+)\s*(?:([<=~!>]*)\s*(\S+.*?))?$` with Go's leftmost-first
    /// submatch rules; `None` when it does not match (rcc drops those).
    pub fn parse(value: &str) -> Option<Dependency> {
        let s = value.trim();
        let name_run = s
            .char_indices()
            .find(|(_, c)| "<=~!> ".contains(*c))
            .map_or(s.len(), |(i, _)| i);
        // group 1 is greedy: try its longest form first, then shorter ones
        let mut ends: Vec<usize> = s[..name_run]
            .char_indices()
            .map(|(i, c)| i + c.len_utf8())
            .collect();
        ends.reverse();
        for end in ends {
            if let Some((qualifier, versions)) = match_tail(&s[end..]) {
                return Some(Dependency {
                    original: s.to_string(),
                    name: s[..end].to_string(),
                    qualifier: qualifier.to_string(),
                    versions: versions.to_string(),
                });
            }
        }
        None
    }

    pub fn is_exact(&self) -> bool {
        !self.qualifier.is_empty() || !self.versions.is_empty()
    }

    /// Case-sensitive, and never for names starting with `-` (pip options).
    pub fn same_as(&self, other: &Dependency) -> bool {
        !self.name.starts_with('-') && self.name == other.name
    }

    fn exactly_same(&self, other: &Dependency) -> bool {
        self.name == other.name
            && self.qualifier == other.qualifier
            && self.versions == other.versions
    }

    /// rcc's `ChooseSpecific`: an exact version wins over a bare name; two
    /// different exact versions are an error.
    pub fn choose_specific(&self, other: &Dependency) -> std::result::Result<Dependency, String> {
        if !self.same_as(other) {
            return Err(format!(
                "Not same component: {} vs. {}",
                self.name, other.name
            ));
        }
        if self.is_exact() && !other.is_exact() {
            return Ok(self.clone());
        }
        if !self.is_exact() && other.is_exact() {
            return Ok(other.clone());
        }
        if self.exactly_same(other) {
            return Ok(self.clone());
        }
        Err(format!(
            "Wont choose between dependencies: {} vs. {}",
            self.original, other.original
        ))
    }
}

/// Go RE2's `\s`: ASCII only, and no vertical tab.
fn re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

fn leading(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.char_indices()
        .find(|(_, c)| !pred(*c))
        .map_or(s.len(), |(i, _)| i)
}

/// `\s*(?:([<=~!>]*)\s*(\S+.*?))?$` at the start of `t`, greedy choices
/// first as a backtracking matcher would try them. `.` and `\S` never match
/// a newline, so group 3 is the whole rest when it starts with a non-space
/// and holds no newline.
fn match_tail(t: &str) -> Option<(&str, &str)> {
    let spaces = leading(t, re_space);
    for k in (0..=spaces).rev() {
        let r = &t[k..];
        let quals = leading(r, |c| "<=~!>".contains(c));
        for q in (0..=quals).rev() {
            let r2 = &r[q..];
            let ws = leading(r2, re_space);
            for w in (0..=ws).rev() {
                let r3 = &r2[w..];
                if r3.chars().next().is_some_and(|c| !re_space(c)) && !r3.contains('\n') {
                    return Some((&r[..q], r3));
                }
            }
        }
        if r.is_empty() {
            return Some(("", ""));
        }
    }
    None
}

/// rcc's `Environment`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    pub name: String,
    pub prefix: String,
    pub channels: Vec<String>,
    pub conda: Vec<Dependency>,
    pub pip: Vec<Dependency>,
    pub post_install: Vec<String>,
}

impl Environment {
    /// Read a conda.yaml or (by its name) a package.yaml. `devdeps` adds a
    /// package.yaml's dev-dependencies and is an error for any other file.
    /// `robocorp_home` is where rcc's optional local channel lives.
    pub fn load(path: &Path, devdeps: bool, robocorp_home: &Path) -> Result<Environment> {
        let is_package = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().to_lowercase() == "package.yaml");
        if devdeps && !is_package {
            return Err(Error::bad_input(
                path,
                "--devdeps is only valid for a package.yaml file",
            ));
        }
        if path.is_dir() {
            return Err(Error::bad_input(
                path,
                "is a directory, not a conda.yaml or package.yaml",
            ));
        }
        let content = std::fs::read(path).at_user(path)?;
        let content = String::from_utf8(content)
            .map_err(|_| Error::bad_input(path, "not valid UTF-8 text"))?;
        let (env, warnings) = if is_package {
            Self::from_package_yaml(&content, devdeps)
        } else {
            Self::from_conda_yaml(&content, local_channel(robocorp_home).as_deref())
        }
        .map_err(|msg| Error::bad_input(path, msg))?;
        for w in warnings {
            tracing::warn!(
                "{}: {w}; rcc ignores this and drops the rest of that list, and so does vhrun (same blueprint)",
                path.display()
            );
        }
        Ok(env)
    }

    /// rcc's `CondaYamlFrom` + `AsEnvironment`. Returns the environment and
    /// the conflicts rcc silently swallowed.
    pub fn from_conda_yaml(
        content: &str,
        local_channel: Option<&str>,
    ) -> std::result::Result<(Environment, Vec<String>), String> {
        let raw: CondaYaml =
            serde_yaml::from_str(content).map_err(|e| format!("not a valid conda.yaml: {e}"))?;
        let mut env = Environment {
            name: raw.name.unwrap_or_default(),
            prefix: raw.prefix.unwrap_or_default(),
            ..Default::default()
        };
        env.post_install = dedupe(strings(raw.post_install));
        let mut channels = Vec::new();
        if let Some(c) = local_channel {
            channels.push(c.to_string());
        }
        channels.extend(strings(raw.channels));
        env.channels = dedupe(channels);
        let (conda, pip) = split_dependencies(raw.dependencies.unwrap_or_default());
        let mut warnings = Vec::new();
        if let Err(e) = env.push_conda(conda) {
            warnings.push(e);
        }
        if let Err(e) = env.push_pip(pip) {
            warnings.push(e);
        }
        if let Err(e) = env.pip_promote() {
            warnings.push(e);
        }
        Ok((env, warnings))
    }

    /// rcc's `packageYamlFrom`: `dependencies.conda-forge` and `.pypi`
    /// (`name=ver` becomes `name==ver`), `post-install`, channel
    /// `conda-forge`; `dev-dependencies` appended when `devdeps`.
    pub fn from_package_yaml(
        content: &str,
        devdeps: bool,
    ) -> std::result::Result<(Environment, Vec<String>), String> {
        let raw: PackageYaml =
            serde_yaml::from_str(content).map_err(|e| format!("not a valid package.yaml: {e}"))?;
        let mut env = Environment {
            channels: vec!["conda-forge".to_string()],
            post_install: dedupe(strings(raw.post_install)),
            ..Default::default()
        };
        let mut warnings = Vec::new();
        let mut sections = vec![raw.dependencies];
        if devdeps {
            sections.push(raw.dev_dependencies);
        }
        for section in sections {
            let section = section.unwrap_or_default();
            let conda = strings(section.conda_forge)
                .iter()
                .filter_map(|s| Dependency::parse(s))
                .collect();
            let pip = strings(section.pypi)
                .iter()
                .filter_map(|s| Dependency::parse(s))
                .map(fix_pip_dependency)
                .collect();
            if let Err(e) = env.push_conda(conda) {
                warnings.push(e);
            }
            if let Err(e) = env.push_pip(pip) {
                warnings.push(e);
            }
        }
        if let Err(e) = env.pip_promote() {
            warnings.push(e);
        }
        Ok((env, warnings))
    }

    /// rcc's `Merge`: `self` then `right`; a conflict is an error here.
    pub fn merge(&self, right: &Environment) -> std::result::Result<Environment, String> {
        let mut result = Environment::default();
        if !self.name.is_empty() || !right.name.is_empty() {
            result.name = format!("{}+{}", self.name, right.name);
        }
        result.channels = dedupe(
            self.channels
                .iter()
                .chain(&right.channels)
                .cloned()
                .collect(),
        );
        result.post_install = dedupe(
            self.post_install
                .iter()
                .chain(&right.post_install)
                .cloned()
                .collect(),
        );
        result.push_conda(self.conda.clone())?;
        result.push_conda(right.conda.clone())?;
        result.push_pip(self.pip.clone())?;
        result.push_pip(right.pip.clone())?;
        result.pip_promote()?;
        Ok(result)
    }

    /// rcc's `pushConda`: stops at the first conflict.
    fn push_conda(&mut self, deps: Vec<Dependency>) -> std::result::Result<(), String> {
        for d in deps {
            semi_smart_push(&mut self.conda, d)?;
        }
        Ok(())
    }

    fn push_pip(&mut self, deps: Vec<Dependency>) -> std::result::Result<(), String> {
        for d in deps {
            semi_smart_push(&mut self.pip, d)?;
        }
        Ok(())
    }

    /// rcc's `pipPromote`: a pip dependency that is also a conda one is
    /// merged into the conda entry and removed from pip. On a conflict the
    /// conda entries already merged stay merged and nothing leaves pip.
    fn pip_promote(&mut self) -> std::result::Result<(), String> {
        let mut removed = Vec::new();
        for p in 0..self.pip.len() {
            for c in 0..self.conda.len() {
                if self.pip[p].same_as(&self.conda[c]) {
                    removed.push(p);
                    self.conda[c] = self.conda[c].choose_specific(&self.pip[p])?;
                }
            }
        }
        for (shift, index) in removed.into_iter().enumerate() {
            self.pip.remove(index - shift);
        }
        Ok(())
    }

    /// Only the conda dependencies (rcc's first layer).
    pub fn as_pure_conda(&self) -> Environment {
        Environment {
            pip: Vec::new(),
            post_install: Vec::new(),
            ..self.clone()
        }
    }

    pub fn without_post_install(&self) -> Environment {
        Environment {
            post_install: Vec::new(),
            ..self.clone()
        }
    }

    /// rcc's `AsYaml`: yaml.v2 `Marshal` of `internalEnvironment`.
    pub fn as_yaml(&self) -> String {
        let mut doc = Vec::new();
        if !self.name.is_empty() {
            doc.push(("name".to_string(), Node::Scalar(self.name.clone())));
        }
        let scalars = |v: &[String]| {
            v.iter()
                .map(|s| Node::Scalar(s.clone()))
                .collect::<Vec<_>>()
        };
        doc.push(("channels".to_string(), Node::Seq(scalars(&self.channels))));
        let mut deps: Vec<Node> = self
            .conda
            .iter()
            .map(|d| Node::Scalar(d.original.clone()))
            .collect();
        if !self.pip.is_empty() {
            let pip = self
                .pip
                .iter()
                .map(|d| Node::Scalar(d.original.clone()))
                .collect();
            deps.push(Node::Map(vec![("pip".to_string(), Node::Seq(pip))]));
        }
        doc.push(("dependencies".to_string(), Node::Seq(deps)));
        if !self.prefix.is_empty() {
            doc.push(("prefix".to_string(), Node::Scalar(self.prefix.clone())));
        }
        let post = dedupe(self.post_install.clone());
        if !post.is_empty() {
            doc.push(("rccPostInstall".to_string(), Node::Seq(scalars(&post))));
        }
        yamlv2::marshal(&Node::Map(doc))
    }

    /// `BlueprintFromEnvironment`: the trimmed YAML and its hash.
    pub fn blueprint(&self) -> Blueprint {
        Blueprint::of_text(self.as_yaml().trim().to_string())
    }

    /// rcc's `AsLayers`: [conda only, without post-install, full], the
    /// partial builds rcc reuses.
    pub fn layers(&self) -> [Blueprint; 3] {
        [
            self.as_pure_conda().blueprint(),
            self.without_post_install().blueprint(),
            self.blueprint(),
        ]
    }
}

/// Read and merge `files` left to right (rcc's `ComposeFinalBlueprint`).
pub fn environment_of_files(
    files: &[PathBuf],
    devdeps: bool,
    robocorp_home: &Path,
) -> Result<Environment> {
    let mut merged: Option<Environment> = None;
    for file in files {
        let env = Environment::load(file, devdeps, robocorp_home)?;
        merged = Some(match merged {
            None => env,
            Some(left) => left.merge(&env).map_err(|e| {
                Error::bad_input(file, format!("cannot merge with the files before it: {e}"))
            })?,
        });
    }
    merged.ok_or_else(|| Error::Usage("no environment file given".into()))
}

/// The blueprint rcc computes for these files, merged left to right.
pub fn blueprint_of_files(
    files: &[PathBuf],
    devdeps: bool,
    robocorp_home: &Path,
) -> Result<Blueprint> {
    Ok(environment_of_files(files, devdeps, robocorp_home)?.blueprint())
}

/// The blueprint of one conda.yaml or package.yaml.
pub fn blueprint_of_file(file: &Path, devdeps: bool, robocorp_home: &Path) -> Result<Blueprint> {
    blueprint_of_files(&[file.to_path_buf()], devdeps, robocorp_home)
}

/// rcc's `LocalChannel`: `<home>/channel` when `channeldata.json` in it
/// exists and is not a directory.
pub fn local_channel(robocorp_home: &Path) -> Option<String> {
    let dir = crate::paths::clean(&robocorp_home.join("channel"));
    match std::fs::metadata(dir.join("channeldata.json")) {
        Ok(m) if !m.is_dir() => Some(dir.to_string_lossy().into_owned()),
        _ => None,
    }
}

fn semi_smart_push(
    target: &mut Vec<Dependency>,
    candidate: Dependency,
) -> std::result::Result<(), String> {
    for existing in target.iter_mut() {
        if existing.same_as(&candidate) {
            *existing = existing.choose_specific(&candidate)?;
            return Ok(());
        }
    }
    target.push(candidate);
    Ok(())
}

/// Order-preserving de-duplication (rcc's `addItem`).
fn dedupe(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|s| seen.insert(s.clone()))
        .collect()
}

/// yaml.v2 decodes a null list item of a `[]string` as "".
fn strings(items: Option<Vec<Option<String>>>) -> Vec<String> {
    items
        .unwrap_or_default()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

/// package.yaml pip deps: `name=ver` is pip's `name==ver`.
fn fix_pip_dependency(mut d: Dependency) -> Dependency {
    if d.qualifier == "=" {
        d.original = format!("{}=={}", d.name, d.versions);
        d.qualifier = "==".to_string();
    }
    d
}

/// `dependencies:` items: strings are conda deps, a map's `pip` list holds
/// pip deps, anything else is dropped (as rcc's type switches do).
fn split_dependencies(items: Vec<serde_yaml::Value>) -> (Vec<Dependency>, Vec<Dependency>) {
    use serde_yaml::Value;
    let (mut conda, mut pip) = (Vec::new(), Vec::new());
    for item in items {
        match item {
            Value::String(s) => {
                if let Some(d) = go_string(&s).and_then(Dependency::parse) {
                    conda.push(d);
                }
            }
            Value::Mapping(map) => {
                for (key, value) in map {
                    if key.as_str() != Some("pip") {
                        continue;
                    }
                    if let Value::Sequence(list) = value {
                        for entry in list {
                            if let Value::String(s) = entry {
                                if let Some(d) = go_string(&s).and_then(Dependency::parse) {
                                    pip.push(d);
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    (conda, pip)
}

/// Would yaml.v2 have decoded this serde_yaml string into a Go `string`
/// inside an `interface{}`? Not when it is YAML 1.1 for a bool, number or
/// null and serde_yaml (YAML 1.2) reads the same plain text as a string:
/// then it was plain in the file, and rcc did not see a string.
fn go_string(s: &str) -> Option<&str> {
    let v2_string = yamlv2::resolves_to_str(s) || yamlv2::is_timestamp(s);
    if v2_string {
        return Some(s);
    }
    let plain_reads_as_string = matches!(
        serde_yaml::from_str::<serde_yaml::Value>(s),
        Ok(serde_yaml::Value::String(_))
    );
    if plain_reads_as_string {
        None
    } else {
        Some(s)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CondaYaml {
    name: Option<String>,
    channels: Option<Vec<Option<String>>>,
    dependencies: Option<Vec<serde_yaml::Value>>,
    prefix: Option<String>,
    #[serde(rename = "rccPostInstall")]
    post_install: Option<Vec<Option<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PackageSection {
    #[serde(rename = "conda-forge")]
    conda_forge: Option<Vec<Option<String>>>,
    pypi: Option<Vec<Option<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PackageYaml {
    dependencies: Option<PackageSection>,
    #[serde(rename = "dev-dependencies")]
    dev_dependencies: Option<PackageSection>,
    #[serde(rename = "post-install")]
    post_install: Option<Vec<Option<String>>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(s: &str) -> (String, String, String, String) {
        let d = Dependency::parse(s).unwrap();
        (d.original, d.name, d.qualifier, d.versions)
    }

    fn t(a: &str, b: &str, c: &str, d: &str) -> (String, String, String, String) {
        (a.into(), b.into(), c.into(), d.into())
    }

    #[test]
    fn dependency_parsing_as_rcc_tests_it() {
        assert!(Dependency::parse("").is_none());
        assert_eq!(dep("python"), t("python", "python", "", ""));
        assert_eq!(
            dep("python=3.7.4"),
            t("python=3.7.4", "python", "=", "3.7.4")
        );
        assert_eq!(dep("kamalia 1.8").3, "1.8");
        assert_eq!(
            dep("  numpy >= 1.2, <2 "),
            t("numpy >= 1.2, <2", "numpy", ">=", "1.2, <2")
        );
        assert_eq!(dep("pkg==1.0"), t("pkg==1.0", "pkg", "==", "1.0"));
        assert_eq!(dep("a="), t("a=", "a", "", "="));
        assert_eq!(dep("a b c"), t("a b c", "a", "", "b c"));
        assert!(Dependency::parse("=3.7").is_none());
        assert!(Dependency::parse(">=1").is_none());
        // a newline can only be eaten by the name class or by \s*
        assert_eq!(dep("x\ny=1"), t("x\ny=1", "x\ny", "=", "1"));
        assert!(Dependency::parse("x =1\n=2").is_none());
    }

    #[test]
    fn choosing_between_dependencies() {
        let first = Dependency::parse("python").unwrap();
        let second = Dependency::parse("python=3.7.7").unwrap();
        let third = Dependency::parse("python=3.9.13").unwrap();
        let fourth = Dependency::parse("robotframework=3.2").unwrap();
        assert!(!first.is_exact() && second.is_exact());
        assert!(first.same_as(&second) && !third.same_as(&fourth));
        assert_eq!(first.choose_specific(&second).unwrap(), second);
        assert_eq!(third.choose_specific(&first).unwrap(), third);
        assert_eq!(
            first.choose_specific(&fourth).unwrap_err(),
            "Not same component: python vs. robotframework"
        );
        assert_eq!(
            second.choose_specific(&third).unwrap_err(),
            "Wont choose between dependencies: python=3.7.7 vs. python=3.9.13"
        );
        let dash = Dependency::parse("--use-feature=truststore").unwrap();
        assert!(!dash.same_as(&dash));
    }

    fn conda(text: &str) -> Environment {
        Environment::from_conda_yaml(text, None).unwrap().0
    }

    #[test]
    fn empty_and_minimal_files() {
        let env = conda("");
        assert_eq!(env, Environment::default());
        assert_eq!(env.blueprint().text, "channels: []\ndependencies: []");
        assert_eq!(
            conda("# nothing\n").blueprint().text,
            "channels: []\ndependencies: []"
        );
    }

    #[test]
    fn public_vector() {
        let env = conda("channels:\n    - conda-forge\ndependencies:\n    - ca-certificates\n");
        let b = env.blueprint();
        assert_eq!(
            b.text,
            "channels:\n- conda-forge\ndependencies:\n- ca-certificates"
        );
        assert_eq!(b.hash, "c34ed96c2d8a459a");
    }

    #[test]
    fn normalisation_rules() {
        let env = conda(
            "name: robot\nchannels: [conda-forge, defaults, conda-forge]\nprefix: /x\n\
             dependencies:\n- python\n- python=3.9.13\n- pip\n- 1.0\n- yes\n- '1.0'\n\
             - pip:\n  - numpy==1.0\n  - PIP==23\n  - python\n  - robocorp\n  - robocorp\n\
             rccPostInstall: [a, b, a]\n",
        );
        assert_eq!(env.channels, ["conda-forge", "defaults"]);
        let originals: Vec<_> = env.conda.iter().map(|d| d.original.as_str()).collect();
        // "1.0" and yes are no strings for yaml.v2; '1.0' is
        assert_eq!(originals, ["python=3.9.13", "pip", "1.0"]);
        let pips: Vec<_> = env.pip.iter().map(|d| d.original.as_str()).collect();
        // python promoted into conda; names compare case-sensitively
        assert_eq!(pips, ["numpy==1.0", "PIP==23", "robocorp"]);
        assert_eq!(env.post_install, ["a", "b"]);
        assert_eq!(
            env.blueprint().text,
            "name: robot\nchannels:\n- conda-forge\n- defaults\ndependencies:\n- python=3.9.13\n- pip\n- \"1.0\"\n\
             - pip:\n  - numpy==1.0\n  - PIP==23\n  - robocorp\nprefix: /x\nrccPostInstall:\n- a\n- b"
        );
    }

    #[test]
    fn pip_exact_version_moves_into_conda() {
        let env = conda("dependencies:\n- numpy\n- pip:\n  - numpy==1.2\n  - other\n");
        let originals: Vec<_> = env.conda.iter().map(|d| d.original.as_str()).collect();
        assert_eq!(originals, ["numpy==1.2"]);
        assert_eq!(env.pip.len(), 1);
    }

    #[test]
    fn conflicts_within_one_file_truncate_like_rcc() {
        let (env, warnings) = Environment::from_conda_yaml(
            "dependencies:\n- python=3.7\n- pip\n- python=3.8\n- later\n- pip:\n  - a\n",
            None,
        )
        .unwrap();
        let originals: Vec<_> = env.conda.iter().map(|d| d.original.as_str()).collect();
        assert_eq!(originals, ["python=3.7", "pip"]);
        assert_eq!(env.pip.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("python=3.7 vs. python=3.8"));
        // a pip conflict stops pipPromote before anything leaves pip
        let (env, warnings) = Environment::from_conda_yaml(
            "dependencies:\n- a=1\n- b\n- pip:\n  - b==2\n  - a==3\n",
            None,
        )
        .unwrap();
        let originals: Vec<_> = env.conda.iter().map(|d| d.original.as_str()).collect();
        assert_eq!(originals, ["a=1", "b==2"]);
        let pips: Vec<_> = env.pip.iter().map(|d| d.original.as_str()).collect();
        assert_eq!(pips, ["b==2", "a==3"]);
        assert_eq!(warnings.len(), 1);
    }

    #[test]
    fn merging_files() {
        let third = conda(
            "channels: [conda-forge, defaults]\ndependencies:\n- python=3.9.13\n- pip\n- robotframework=3.2\n\
             - robotframework-seleniumlibrary\n- pip:\n  - webdrivermanager\n",
        );
        let other = conda(
            "channels: [defaults]\ndependencies:\n- python=3.9.13\n- pip\n- robotframework=3.2\n\
             - robotframework-seleniumlibrary\n- pip:\n  - webdrivermanager\n",
        );
        let merged = third.merge(&other).unwrap();
        assert_eq!(merged.name, "");
        assert_eq!(merged.channels.len(), 2);
        assert_eq!(merged.conda.len(), 4);
        assert_eq!(merged.pip.len(), 1);
        assert!(merged.as_yaml().len() > 100);
        assert!(merged.as_yaml().len() > merged.as_pure_conda().as_yaml().len());

        let named = conda("name: a\nprefix: /p\ndependencies: [x=1]\n");
        let other = conda("dependencies: [x=2]\n");
        assert_eq!(
            named.merge(&other).unwrap_err(),
            "Wont choose between dependencies: x=1 vs. x=2"
        );
        let m = named.merge(&conda("dependencies: [x]")).unwrap();
        assert_eq!(m.name, "a+");
        assert_eq!(m.prefix, "", "rcc's Merge keeps no prefix");
    }

    #[test]
    fn package_yaml() {
        let text = "name: RCC testing package\ndescription: Just for testing rcc.\nversion: 0.0.1\n\n\
                    documentation: https://github.com/joshyorko/rcc/\n\ndependencies:\n  conda-forge:\n\
                    \x20   - python=3.10.12\n    - uv=0.9.22\n  pypi:\n    - robocorp=1.6.2\n\
                    \x20   - robocorp-actions=0.0.7\n\ndev-dependencies:\n  conda-forge:\n    - pytest=8.3.3\n\
                    \x20 pypi:\n    - ruff=0.7.0\n";
        let (env, _) = Environment::from_package_yaml(text, false).unwrap();
        assert_eq!((env.conda.len(), env.pip.len()), (2, 2));
        assert_eq!(
            env.blueprint().text,
            "channels:\n- conda-forge\ndependencies:\n- python=3.10.12\n- uv=0.9.22\n- pip:\n\
             \x20 - robocorp==1.6.2\n  - robocorp-actions==0.0.7"
        );
        let (dev, _) = Environment::from_package_yaml(text, true).unwrap();
        assert_eq!((dev.conda.len(), dev.pip.len()), (3, 3));
        assert_eq!(
            dev.blueprint().text,
            "channels:\n- conda-forge\ndependencies:\n- python=3.10.12\n- uv=0.9.22\n- pytest=8.3.3\n- pip:\n\
             \x20 - robocorp==1.6.2\n  - robocorp-actions==0.0.7\n  - ruff==0.7.0"
        );
        // no dev section: same as without --devdeps
        let plain = text.split("dev-dependencies").next().unwrap();
        assert_eq!(
            Environment::from_package_yaml(plain, true).unwrap().0,
            Environment::from_package_yaml(plain, false).unwrap().0
        );
        let (env, _) = Environment::from_package_yaml(
            "dependencies:\n  pypi: [\"a = 1\", b>=2, c==3, ~]\npost-install: [x, x, y]\n",
            false,
        )
        .unwrap();
        let pips: Vec<_> = env.pip.iter().map(|d| d.original.as_str()).collect();
        assert_eq!(pips, ["a==1", "b>=2", "c==3"]);
        assert_eq!(env.post_install, ["x", "y"]);
        assert_eq!(env.channels, ["conda-forge"]);
    }

    #[test]
    fn long_values_fold_at_column_80_and_read_back() {
        let post = "python -m pip install --no-deps --upgrade aaaaaaaaaa bbbbbbbbbb cccccccccc dddddddddd eeeeeeeeee ffff";
        let pip = "somepackage @ https://github.com/someorg/somepackage/archive/refs/tags/v1.26.8-final.zip ; python_version >= \"3.8\"";
        let text =
            format!("dependencies:\n- python\n- pip:\n  - '{pip}'\nrccPostInstall:\n- {post}\n");
        let env = conda(&text);
        let bp = env.blueprint();
        assert_eq!(
            bp.text,
            "channels: []\ndependencies:\n- python\n- pip:\n\
             \x20 - somepackage @ https://github.com/someorg/somepackage/archive/refs/tags/v1.26.8-final.zip\n\
             \x20   ; python_version >= \"3.8\"\nrccPostInstall:\n\
             - python -m pip install --no-deps --upgrade aaaaaaaaaa bbbbbbbbbb cccccccccc dddddddddd\n\
             \x20 eeeeeeeeee ffff"
        );
        // what rcc hashes reads back as the same environment
        assert_eq!(conda(&bp.text), env);
    }

    #[test]
    fn local_channel_comes_first_for_conda_yaml_only() {
        let (env, _) =
            Environment::from_conda_yaml("channels: [conda-forge]", Some("/h/channel")).unwrap();
        assert_eq!(env.channels, ["/h/channel", "conda-forge"]);
    }

    #[test]
    fn type_errors_are_reported() {
        assert!(Environment::from_conda_yaml("channels: conda-forge", None).is_err());
        assert!(Environment::from_conda_yaml("- a", None).is_err());
        assert!(Environment::from_conda_yaml("name: [a]", None).is_err());
        assert!(Environment::from_package_yaml("dependencies: [a]", false).is_err());
    }
}
