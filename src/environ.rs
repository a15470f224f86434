//! The environment variables of a task, built the way rcc builds them
//! (`conda/robocorp.go` `CondaExecutionEnvironment`, `robot/robot.go`
//! `RobotExecutionEnvironment`, `pathlib/targetpath.go`), from explicit
//! inputs only: no global state is read here.
//!
//! The result is an ordered list in which a key may repeat (rcc emits PATH
//! twice for robots); the last occurrence wins when it is executed.
//!
//! Deliberate differences from rcc, all documented for users:
//! - bytecode: by default a persistent per-catalog `PYTHONPYCACHEPREFIX`
//!   and no `PYTHONDONTWRITEBYTECODE` (an inherited one is removed, or the
//!   cache would never fill); `Bytecode::Rcc` gives rcc's exact variables;
//! - `RCC_EXE` is the running vhrun and `RCC_VERSION` is `vhrun-<version>`;
//! - `RCC_INSTALLATION_ID` comes from rcc's `rcc.yaml` when it has one;
//!   otherwise it is derived from the machine id and ROBOCORP_HOME (stable,
//!   and nothing is written: rcc would generate one and save it);
//! - `-w` workspace: only `RC_WORKSPACE_ID`; rcc's `RC_API_SECRET_HOST`,
//!   `RC_API_WORKITEM_HOST` and their tokens come from authorizing with
//!   Control Room, which vhrun does not do;
//! - env.json and rcc_activate.json keep their file order (rcc iterates Go
//!   maps, i.e. a random order).

use crate::error::{Error, IoContext, Result};
use crate::robot::OrderedMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// An ordered environment: later duplicates win.
pub type EnvList = Vec<(OsString, OsString)>;

/// rcc's `ignoredPaths`: inherited PATH entries containing any of these
/// (lower-cased) are dropped, so no foreign Python shadows the environment.
const IGNORED_PATH_WORDS: &[&str] = &[
    "python",
    "conda",
    "pyenv",
    "venv",
    "pypoetry",
    ".poetry",
    "virtualenv",
];

/// How Python bytecode is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bytecode {
    /// rcc's variables: `PYTHONDONTWRITEBYTECODE=x` and
    /// `PYTHONPYCACHEPREFIX=<temp dir>` (`--rcc-env`).
    Rcc,
    /// vhrun's default: `PYTHONPYCACHEPREFIX=<dir>`, a persistent cache per
    /// catalog; `PYTHONDONTWRITEBYTECODE` is not set and an inherited one is
    /// removed.
    Cache(PathBuf),
}

/// What the builder needs to know about the space's contents. The caller
/// answers from a real directory (`from_dir`) or from the catalog without
/// mounting it (`resolve::space_facts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpaceFacts {
    /// `bin/python3`, else `bin/python`, when present (rcc's `FindPython`):
    /// the file name inside `bin/`.
    pub python: Option<String>,
    /// `pyvenv.cfg` exists: a venv, not a conda environment.
    pub pyvenv_cfg: bool,
    /// The variables of `rcc_activate.json` (empty when missing or not a
    /// flat JSON object of strings, as rcc ignores it then).
    pub activation: Vec<(String, String)>,
}

impl SpaceFacts {
    /// Look at a space that exists as a directory (a restored copy).
    pub fn from_dir(space: &Path) -> SpaceFacts {
        let bin = space.join("bin");
        let python = if bin.is_dir() {
            ["python3", "python"]
                .into_iter()
                .find(|n| std::fs::metadata(bin.join(n)).is_ok_and(|m| !m.is_dir()))
                .map(str::to_string)
        } else {
            None
        };
        SpaceFacts {
            python,
            pyvenv_cfg: std::fs::metadata(space.join("pyvenv.cfg")).is_ok_and(|m| !m.is_dir()),
            activation: std::fs::read(space.join("rcc_activate.json"))
                .map(|b| parse_activation(&b))
                .unwrap_or_default(),
        }
    }
}

/// rcc's `LoadActivationEnvironment`: a JSON object of strings (null reads
/// as ""); anything else yields nothing.
pub fn parse_activation(json: &[u8]) -> Vec<(String, String)> {
    match serde_json::from_slice::<OrderedMap<Option<String>>>(json) {
        Ok(m) => {
            m.0.into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect()
        }
        Err(_) => Vec::new(),
    }
}

/// The robot.yaml part of a task's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RobotEnv {
    /// robot.yaml `PATH`, absolute.
    pub paths: Vec<PathBuf>,
    /// robot.yaml `PYTHONPATH`, absolute.
    pub pythonpaths: Vec<PathBuf>,
    /// `ROBOT_ROOT`: the directory of robot.yaml.
    pub root: PathBuf,
    /// `ROBOT_ARTIFACTS`: Root/artifactsDir.
    pub artifacts: PathBuf,
}

impl From<&crate::robot::Robot> for RobotEnv {
    fn from(r: &crate::robot::Robot) -> Self {
        RobotEnv {
            paths: r.path_entries(),
            pythonpaths: r.pythonpath_entries(),
            root: r.root().to_path_buf(),
            artifacts: r.artifacts_dir(),
        }
    }
}

/// Everything the environment of a holotree task depends on.
#[derive(Debug, Clone)]
pub struct EnvInputs {
    /// vhrun's own environment (`std::env::vars_os()`): its PATH is always
    /// the base of the task's PATH; the rest is included only when `full`.
    pub inherited: EnvList,
    /// `true` for a run (inherited variables first, `VIRTUAL_ENV` removed);
    /// `false` for `vars` (only rcc's own variables, `PS1` dropped).
    pub full: bool,
    /// Relative PATH entries are made absolute against this (rcc's cwd).
    pub cwd: PathBuf,
    /// rcc's user-home identity (7 hex): PATH entries of old spaces of this
    /// user are dropped.
    pub user_home_identity: String,
    /// `-e env.json` variables.
    pub extra: Vec<(String, String)>,
    /// Where the space is (mounted or restored).
    pub space: PathBuf,
    pub facts: SpaceFacts,
    pub blueprint_hash: String,
    pub robocorp_home: PathBuf,
    pub installation_id: String,
    pub rcc_exe: PathBuf,
    pub rcc_version: String,
    /// `TEMP`/`TMP` (rcc: `<home>/temp/<random16hex>`).
    pub temp_dir: PathBuf,
    pub bytecode: Bytecode,
    /// The robot's PATH, PYTHONPATH, ROBOT_ROOT, ROBOT_ARTIFACTS; `None`
    /// when only environment files were given.
    pub robot: Option<RobotEnv>,
    /// The network and CA variables of rcc's settings.yaml and profile
    /// files (`settings::NetworkSettings::variables`).
    pub network: Vec<(String, String)>,
    /// `-w`: the Control Room workspace id.
    pub workspace: Option<String>,
}

/// `RCC_VERSION` as vhrun reports it.
pub fn rcc_version() -> String {
    format!("vhrun-{}", env!("CARGO_PKG_VERSION"))
}

/// The task environment, in rcc's order.
pub fn build(inp: &EnvInputs) -> EnvList {
    let mut env: EnvList = Vec::with_capacity(inp.inherited.len() + 40);
    let lookup = |key: &str| inherited_value(&inp.inherited, key);
    let pyc_managed = lookup("RCC_NO_PYC_MANAGEMENT").is_none_or(|v| v.is_empty());
    let temp_managed = lookup("RCC_NO_TEMP_MANAGEMENT").is_none_or(|v| v.is_empty());
    if inp.full {
        for (k, v) in &inp.inherited {
            let k_str = k.to_string_lossy();
            if k_str.trim().eq_ignore_ascii_case("VIRTUAL_ENV") {
                continue;
            }
            if pyc_managed
                && matches!(inp.bytecode, Bytecode::Cache(_))
                && k_str == "PYTHONDONTWRITEBYTECODE"
            {
                continue;
            }
            env.push((k.clone(), v.clone()));
        }
    }
    let mut push = |k: &str, v: &OsStr| env.push((OsString::from(k), v.to_os_string()));
    for (k, v) in &inp.extra {
        push(k, OsStr::new(v));
    }
    let bin = inp.space.join("bin");
    if let Some(python) = &inp.facts.python {
        push("PYTHON_EXE", bin.join(python).as_os_str());
    }
    if pyc_managed {
        match &inp.bytecode {
            Bytecode::Rcc => {
                push("PYTHONDONTWRITEBYTECODE", OsStr::new("x"));
                push("PYTHONPYCACHEPREFIX", inp.temp_dir.as_os_str());
            }
            Bytecode::Cache(dir) => push("PYTHONPYCACHEPREFIX", dir.as_os_str()),
        }
    }
    if temp_managed {
        push("TEMP", inp.temp_dir.as_os_str());
        push("TMP", inp.temp_dir.as_os_str());
    }
    if inp.facts.pyvenv_cfg {
        push("VIRTUAL_ENV", inp.space.as_os_str());
    } else {
        push("CONDA_DEFAULT_ENV", OsStr::new("rcc"));
        push("CONDA_PREFIX", inp.space.as_os_str());
        push("CONDA_PROMPT_MODIFIER", OsStr::new("(rcc) "));
        push("CONDA_SHLVL", OsStr::new("1"));
    }
    push("PYTHONHOME", OsStr::new(""));
    push("PYTHONSTARTUP", OsStr::new(""));
    push("PYTHONEXECUTABLE", OsStr::new(""));
    push("PYTHONNOUSERSITE", OsStr::new("1"));
    push("ROBOCORP_HOME", inp.robocorp_home.as_os_str());
    push("RCC_ENVIRONMENT_HASH", OsStr::new(&inp.blueprint_hash));
    push("RCC_INSTALLATION_ID", OsStr::new(&inp.installation_id));
    push("RCC_HOLOTREE_SPACE_ROOT", inp.space.as_os_str());
    push("RCC_TRACKING_ALLOWED", OsStr::new("false"));
    push("RCC_EXE", inp.rcc_exe.as_os_str());
    push("RCC_VERSION", OsStr::new(&inp.rcc_version));
    let inherited_path = lookup("PATH").unwrap_or_default();
    let conda_path = find_path(&inp.space, &inherited_path, &inp.user_home_identity);
    push("PATH", &join_absolute(&conda_path, &inp.cwd));
    for (k, v) in &inp.facts.activation {
        push(k, OsStr::new(v));
    }
    for (k, v) in &inp.network {
        push(k, OsStr::new(v));
    }
    if let Some(robot) = &inp.robot {
        let mut search = robot.paths.clone();
        search.extend(conda_path);
        push("PATH", &join_absolute(&search, &inp.cwd));
        push("PYTHONPATH", &join_absolute(&robot.pythonpaths, &inp.cwd));
        push("ROBOT_ROOT", robot.root.as_os_str());
        push("ROBOT_ARTIFACTS", robot.artifacts.as_os_str());
    }
    if let Some(id) = &inp.workspace {
        push("RC_WORKSPACE_ID", OsStr::new(id));
    }
    if !inp.full {
        env.retain(|(k, _)| k != "PS1");
    }
    env
}

/// The environment of a shell robot (no conda config; rcc's
/// `ExecuteSimpleTask`): the inherited variables (when `full`) plus one
/// PATH of the robot's entries and the inherited PATH de-duplicated and
/// without old spaces (no python/conda word filter here).
pub fn build_shell(
    inherited: &EnvList,
    full: bool,
    cwd: &Path,
    user_home_identity: &str,
    robot_paths: &[PathBuf],
) -> EnvList {
    let mut env: EnvList = if full { inherited.clone() } else { Vec::new() };
    let path = inherited_value(inherited, "PATH").unwrap_or_default();
    let mut search = robot_paths.to_vec();
    search.extend(target_path(&path, user_home_identity));
    env.push(("PATH".into(), join_absolute(&search, cwd)));
    env
}

/// The directories a task's argv[0] is looked up in, in order (rcc's
/// `SearchPath`: robot PATH, space `bin`, filtered inherited PATH), made
/// absolute against `cwd` as rcc's lookup does. `robot_paths` is empty for
/// `vhrun exec --catalog`.
pub fn search_path(inp: &EnvInputs) -> Vec<PathBuf> {
    let inherited_path = inherited_value(&inp.inherited, "PATH").unwrap_or_default();
    let mut search: Vec<PathBuf> = inp
        .robot
        .as_ref()
        .map(|r| r.paths.clone())
        .unwrap_or_default();
    search.extend(find_path(
        &inp.space,
        &inherited_path,
        &inp.user_home_identity,
    ));
    search.iter().map(|p| absolute_from(p, &inp.cwd)).collect()
}

/// rcc's `PathParts.Which`: an absolute existing file as is, else the first
/// `dir/name` that exists and is no directory, trying only directories
/// that exist. Note rcc joins even a relative `./x` to each directory; it
/// never looks in the working directory unless it is on the path.
pub fn which(search: &[PathBuf], name: &str) -> Option<PathBuf> {
    let is_file = |p: &Path| std::fs::metadata(p).is_ok_and(|m| !m.is_dir());
    let n = Path::new(name);
    if n.is_absolute() && is_file(n) {
        return Some(n.to_path_buf());
    }
    search
        .iter()
        .filter(|d| d.is_dir())
        .map(|d| crate::paths::clean(&PathBuf::from(format!("{}/{name}", d.display()))))
        .find(|p| is_file(p))
}

/// Go's `os.Getenv` over a process environment: the first mention wins.
fn inherited_value(env: &EnvList, key: &str) -> Option<OsString> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// What the task really receives: Go's `exec.Cmd` de-duplicates the list,
/// keeping each key's last value at the position of its last mention.
pub fn dedup_for_exec(env: &EnvList) -> EnvList {
    last_of_each(env).into_iter().cloned().collect()
}

/// The entries of `env` whose name is not given again later, in order: a
/// name given twice takes its last value, as Go's exec does.
pub fn last_of_each(env: &[(OsString, OsString)]) -> Vec<&(OsString, OsString)> {
    // Sorting indices by name (stable: the last of equal names last) costs
    // a few hundred comparisons; hashing every name costs more, on every
    // run's start.
    let mut order: Vec<usize> = (0..env.len()).collect();
    order.sort_by(|&a, &b| env[a].0.cmp(&env[b].0));
    let mut keep = vec![false; env.len()];
    for (n, &i) in order.iter().enumerate() {
        keep[i] = order.get(n + 1).is_none_or(|&j| env[j].0 != env[i].0);
    }
    env.iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(e, _)| e)
        .collect()
}

/// rcc's `FindPath`: `<space>/bin`, then the inherited PATH de-duplicated,
/// without old spaces and without python/conda/venv directories.
fn find_path(space: &Path, inherited_path: &OsStr, uhi: &str) -> Vec<PathBuf> {
    let mut out = vec![space.join("bin")];
    out.extend(target_path(inherited_path, uhi).into_iter().filter(|p| {
        let lower = p.as_os_str().as_bytes().to_ascii_lowercase();
        !IGNORED_PATH_WORDS
            .iter()
            .any(|w| contains(&lower, w.as_bytes()))
    }));
    out
}

/// rcc's `TargetPath`: the PATH entries, exact duplicates removed (first
/// kept), then every entry naming an old holotree space of this user.
fn target_path(path: &OsStr, uhi: &str) -> Vec<PathBuf> {
    let bytes = path.as_bytes();
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::new();
    bytes
        .split(|b| *b == b':')
        .filter(|part| seen.insert(part.to_vec()))
        .filter(|part| !names_old_space(part, uhi))
        .map(|part| PathBuf::from(OsString::from_vec(part.to_vec())))
        .collect()
}

/// `\b(?:<uhi>|UNMNGED)_[0-9a-f]{7}_[0-9a-f]{8}\b` with RE2's ASCII `\b`.
pub fn names_old_space(entry: &[u8], uhi: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    for prefix in [uhi.as_bytes(), b"UNMNGED".as_slice()] {
        let len = prefix.len() + 1 + 7 + 1 + 8;
        for i in 0..entry.len() {
            let Some(cand) = entry.get(i..i + len) else {
                break;
            };
            let (p, rest) = cand.split_at(prefix.len());
            if p == prefix
                && rest[0] == b'_'
                && hex(&rest[1..8])
                && rest[8] == b'_'
                && hex(&rest[9..17])
                && (i == 0 || !word(entry[i - 1]) || !word(prefix[0]))
                && entry.get(i + len).is_none_or(|c| !word(*c))
            {
                return true;
            }
        }
    }
    false
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Go `filepath.Abs`: join to cwd (an empty entry is cwd) and clean.
fn absolute_from(p: &Path, cwd: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    crate::paths::clean(&joined)
}

/// rcc's `PathParts.AsEnvironmental`: each entry absolute, joined by `:`.
fn join_absolute(parts: &[PathBuf], cwd: &Path) -> OsString {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        out.extend_from_slice(absolute_from(p, cwd).as_os_str().as_bytes());
    }
    OsString::from_vec(out)
}

/// `-e env.json`: read as YAML (JSON is YAML) into a flat map of strings,
/// as rcc's `LoadEnvironmentSetup`; a number or bool keeps its text, null
/// is "", anything nested is an error naming the file.
pub fn load_env_json(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read(path).at_user(path)?;
    let text =
        String::from_utf8(text).map_err(|_| Error::bad_input(path, "not valid UTF-8 text"))?;
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let map: OrderedMap<Option<String>> = serde_yaml::from_str(&text)
        .map_err(|e| Error::bad_input(path, format!("not a flat map of strings: {e}")))?;
    Ok(map
        .0
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// `RCC_INSTALLATION_ID`: rcc's `tracking.identity` from `<home>/rcc.yaml`
/// when present; otherwise a stable id in rcc's GUID shape derived from the
/// machine id and ROBOCORP_HOME. Nothing is written.
pub fn installation_id(robocorp_home: &Path) -> String {
    if let Some(id) = rcc_tracking_identity(&robocorp_home.join("rcc.yaml")) {
        return id;
    }
    let machine = std::fs::read("/etc/machine-id").unwrap_or_default();
    let mut seed = b"vhrun installation id\0".to_vec();
    seed.extend_from_slice(&machine);
    seed.push(0);
    seed.extend_from_slice(robocorp_home.as_os_str().as_bytes());
    // siphash128, not SHA-256: SHA's first use detects the CPU's SHA
    // extensions with CPUID, which traps to the hypervisor on a VM, and
    // this runs on every run's start.
    let digest = crate::digest::DigestKind::Sip128.digest(&seed);
    // rcc's AsGuid: 4-2-2-2-6 bytes
    [
        &digest[0..8],
        &digest[8..12],
        &digest[12..16],
        &digest[16..20],
        &digest[20..32],
    ]
    .join("-")
}

/// viper keys are case-insensitive: `tracking.identity`.
fn rcc_tracking_identity(rcc_yaml: &Path) -> Option<String> {
    let text = std::fs::read_to_string(rcc_yaml).ok()?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
    let get = |v: &serde_yaml::Value, key: &str| -> Option<serde_yaml::Value> {
        v.as_mapping()?
            .iter()
            .find(|(k, _)| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case(key)))
            .map(|(_, v)| v.clone())
    };
    let id = get(&get(&doc, "tracking")?, "identity")?;
    id.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

/// A fresh `<home>/temp/<random16hex>` name as rcc makes one per process.
pub fn rcc_temp_dir(robocorp_home: &Path) -> PathBuf {
    let mut seed = Vec::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    seed.extend_from_slice(&now.as_nanos().to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    seed.extend_from_slice(
        &CALLS
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    let hex = crate::digest::DigestKind::Sha256.digest(&seed);
    robocorp_home.join("temp").join(&hex[..16])
}

/// Render as `ht vars` does: `export K=V` lines.
pub fn render_exports(env: &EnvList) -> String {
    let mut out = String::new();
    for (k, v) in env {
        out.push_str(&format!(
            "export {}={}\n",
            k.to_string_lossy(),
            v.to_string_lossy()
        ));
    }
    out
}

/// Render as `ht vars --json`: a 2-space pretty JSON array of
/// `{"key": K, "value": V}` (Go's escaping). As rcc, each `K=V` line is
/// trimmed before it is split at the first `=` (so `CONDA_PROMPT_MODIFIER`
/// loses its trailing space here) and lines with an empty key are skipped.
pub fn render_json(env: &EnvList) -> String {
    #[derive(serde::Serialize)]
    struct Entry {
        key: String,
        value: String,
    }
    let entries: Vec<Entry> = env
        .iter()
        .filter_map(|(k, v)| {
            let line = format!("{}={}", k.to_string_lossy(), v.to_string_lossy());
            let (key, value) = line.trim().split_once('=')?;
            (!key.is_empty()).then(|| Entry {
                key: key.to_string(),
                value: value.to_string(),
            })
        })
        .collect();
    let mut s =
        String::from_utf8(crate::hololib::catalog::go_json(&entries)).expect("JSON is UTF-8");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(pairs: &[(&str, &str)]) -> EnvList {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn inputs(inherited: EnvList, full: bool, bytecode: Bytecode) -> EnvInputs {
        EnvInputs {
            inherited,
            full,
            cwd: "/cwd".into(),
            user_home_identity: "59acff1".into(),
            extra: vec![("FROM_JSON".into(), "1".into())],
            space: "/h/holotree/59acff1_1234567_89abcdef".into(),
            facts: SpaceFacts {
                python: Some("python3".into()),
                pyvenv_cfg: false,
                activation: vec![("PS1".into(), "".into()), ("SHLVL".into(), "2".into())],
            },
            blueprint_hash: "c34ed96c2d8a459a".into(),
            robocorp_home: "/h".into(),
            installation_id: "id".into(),
            rcc_exe: "/bin/vhrun".into(),
            rcc_version: "vhrun-0".into(),
            temp_dir: "/h/temp/0123456789abcdef".into(),
            bytecode,
            robot: Some(RobotEnv {
                paths: vec!["/robot/bin".into()],
                pythonpaths: vec!["/robot/libs".into(), "/robot".into()],
                root: "/robot".into(),
                artifacts: "/robot/output".into(),
            }),
            network: Vec::new(),
            workspace: None,
        }
    }

    fn keys(env: &EnvList) -> Vec<String> {
        env.iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    fn get(env: &EnvList, key: &str) -> Option<String> {
        env.iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    }

    #[test]
    fn vars_order_is_rccs() {
        let inherited = os(&[("PATH", "/usr/bin:/bin"), ("HOME", "/home/u")]);
        let env = build(&inputs(inherited, false, Bytecode::Rcc));
        assert_eq!(
            keys(&env),
            [
                "FROM_JSON",
                "PYTHON_EXE",
                "PYTHONDONTWRITEBYTECODE",
                "PYTHONPYCACHEPREFIX",
                "TEMP",
                "TMP",
                "CONDA_DEFAULT_ENV",
                "CONDA_PREFIX",
                "CONDA_PROMPT_MODIFIER",
                "CONDA_SHLVL",
                "PYTHONHOME",
                "PYTHONSTARTUP",
                "PYTHONEXECUTABLE",
                "PYTHONNOUSERSITE",
                "ROBOCORP_HOME",
                "RCC_ENVIRONMENT_HASH",
                "RCC_INSTALLATION_ID",
                "RCC_HOLOTREE_SPACE_ROOT",
                "RCC_TRACKING_ALLOWED",
                "RCC_EXE",
                "RCC_VERSION",
                "PATH",
                "SHLVL",
                "PATH",
                "PYTHONPATH",
                "ROBOT_ROOT",
                "ROBOT_ARTIFACTS"
            ]
        );
        let space = "/h/holotree/59acff1_1234567_89abcdef";
        assert_eq!(
            get(&env, "PYTHON_EXE").unwrap(),
            format!("{space}/bin/python3")
        );
        assert_eq!(
            env[21].1,
            OsString::from(format!("{space}/bin:/usr/bin:/bin"))
        );
        assert_eq!(
            get(&env, "PATH").unwrap(),
            format!("/robot/bin:{space}/bin:/usr/bin:/bin")
        );
        assert_eq!(get(&env, "PYTHONPATH").unwrap(), "/robot/libs:/robot");
        assert_eq!(get(&env, "CONDA_PROMPT_MODIFIER").unwrap(), "(rcc) ");
        assert_eq!(
            get(&env, "PYTHONPYCACHEPREFIX").unwrap(),
            "/h/temp/0123456789abcdef"
        );
    }

    #[test]
    fn network_after_activation_and_workspace_last() {
        let mut inp = inputs(os(&[("PATH", "/usr/bin")]), false, Bytecode::Rcc);
        inp.network = vec![
            ("HTTPS_PROXY".into(), "http://p".into()),
            ("SSL_CERT_FILE".into(), "/h/ca-bundle.pem".into()),
        ];
        inp.workspace = Some("1234".into());
        let env = build(&inp);
        let k = keys(&env);
        let at = |key: &str| k.iter().position(|x| x == key).unwrap();
        assert_eq!(at("HTTPS_PROXY"), at("SHLVL") + 1);
        assert_eq!(at("SSL_CERT_FILE"), at("SHLVL") + 2);
        assert_eq!(k[at("SSL_CERT_FILE") + 1], "PATH");
        assert_eq!(k.last().unwrap(), "RC_WORKSPACE_ID");
        assert_eq!(get(&env, "RC_WORKSPACE_ID").unwrap(), "1234");
        // without a robot too
        inp.robot = None;
        let env = build(&inp);
        assert_eq!(keys(&env).last().unwrap(), "RC_WORKSPACE_ID");
        assert_eq!(get(&env, "HTTPS_PROXY").unwrap(), "http://p");
    }

    #[test]
    fn run_environment_keeps_inherited_and_drops_virtual_env() {
        let inherited = os(&[
            ("PATH", "/usr/bin"),
            ("virtual_env", "/old"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PS1", "$ "),
            ("PYTHONPATH", "/inherited"),
        ]);
        let env = build(&inputs(
            inherited.clone(),
            true,
            Bytecode::Cache("/v/pycache/k".into()),
        ));
        assert_eq!(keys(&env)[..3], ["PATH", "PS1", "PYTHONPATH"]);
        assert!(get(&env, "PYTHONDONTWRITEBYTECODE").is_none());
        assert_eq!(get(&env, "PYTHONPYCACHEPREFIX").unwrap(), "/v/pycache/k");
        // inherited PYTHONPATH is replaced by robot.yaml's
        assert_eq!(get(&env, "PYTHONPATH").unwrap(), "/robot/libs:/robot");
        // rcc mode keeps the inherited one and sets its own after it
        let env = build(&inputs(inherited, true, Bytecode::Rcc));
        assert_eq!(get(&env, "PYTHONDONTWRITEBYTECODE").unwrap(), "x");
        assert_eq!(
            env.iter()
                .filter(|(k, _)| k == "PYTHONDONTWRITEBYTECODE")
                .count(),
            2
        );
    }

    #[test]
    fn management_switches_and_venv() {
        let inherited = os(&[
            ("RCC_NO_PYC_MANAGEMENT", "1"),
            ("RCC_NO_TEMP_MANAGEMENT", "yes"),
        ]);
        let mut inp = inputs(inherited, false, Bytecode::Rcc);
        inp.facts.pyvenv_cfg = true;
        inp.facts.python = None;
        inp.robot = None;
        let env = build(&inp);
        let k = keys(&env);
        for absent in [
            "PYTHONPYCACHEPREFIX",
            "PYTHONDONTWRITEBYTECODE",
            "TEMP",
            "TMP",
            "CONDA_PREFIX",
            "PYTHON_EXE",
            "PYTHONPATH",
        ] {
            assert!(!k.contains(&absent.to_string()), "{absent}");
        }
        assert_eq!(
            get(&env, "VIRTUAL_ENV").unwrap(),
            "/h/holotree/59acff1_1234567_89abcdef"
        );
        // no inherited PATH: only the space's bin
        assert_eq!(
            get(&env, "PATH").unwrap(),
            "/h/holotree/59acff1_1234567_89abcdef/bin"
        );
    }

    #[test]
    fn path_filtering() {
        let path = "/usr/bin:/usr/bin:/opt/conda/bin:/home/u/.pyenv/shims:rel:/home/u/.robocorp/holotree/59acff1_0123456_0123abcd/bin\
                    ::/x/UNMNGED_abcdef0_01234567/bin:/x/x59acff1_0123456_0123abcd:/opt/VirtualEnvs/bin:/home/u/.poetry/bin:/sbin";
        let mut inp = inputs(os(&[("PATH", path)]), false, Bytecode::Rcc);
        inp.robot = None;
        let env = build(&inp);
        assert_eq!(
            get(&env, "PATH").unwrap(),
            "/h/holotree/59acff1_1234567_89abcdef/bin:/usr/bin:/cwd/rel:/cwd:/x/x59acff1_0123456_0123abcd:/sbin"
        );
        // the shell robot keeps python/conda directories
        let shell = build_shell(
            &os(&[("PATH", path), ("A", "b")]),
            true,
            Path::new("/cwd"),
            "59acff1",
            &["/r/bin".into()],
        );
        assert_eq!(keys(&shell), ["PATH", "A", "PATH"]);
        assert_eq!(
            get(&shell, "PATH").unwrap(),
            "/r/bin:/usr/bin:/opt/conda/bin:/home/u/.pyenv/shims:/cwd/rel:/cwd:/x/x59acff1_0123456_0123abcd:/opt/VirtualEnvs/bin:/home/u/.poetry/bin:/sbin"
        );
    }

    #[test]
    fn exec_sees_the_last_value_of_each_key() {
        let env = build(&inputs(
            os(&[("PATH", "/usr/bin"), ("PYTHONPATH", "/x")]),
            true,
            Bytecode::Rcc,
        ));
        let exec = dedup_for_exec(&env);
        let k = keys(&exec);
        assert_eq!(k.iter().filter(|k| *k == "PATH").count(), 1);
        assert_eq!(k.last().unwrap(), "ROBOT_ARTIFACTS");
        assert_eq!(k[k.len() - 4], "PATH");
        assert_eq!(get(&exec, "PATH"), get(&env, "PATH"));
        assert_eq!(get(&exec, "PYTHONPATH").unwrap(), "/robot/libs:/robot");
        assert_eq!(
            dedup_for_exec(&os(&[("A", "1"), ("B", "2"), ("A", "3")])),
            os(&[("B", "2"), ("A", "3")])
        );
    }

    #[test]
    fn old_space_pattern() {
        assert!(names_old_space(b"/h/59acff1_0123456_0123abcd", "59acff1"));
        assert!(names_old_space(b"59acff1_0123456_0123abcd/bin", "59acff1"));
        assert!(names_old_space(b"-UNMNGED_0123456_0123abcd-", "59acff1"));
        assert!(!names_old_space(b"/h/59acff1_0123456_0123abcde", "59acff1"));
        assert!(!names_old_space(b"/h/_59acff1_0123456_0123abcd", "59acff1"));
        assert!(!names_old_space(b"/h/59acff1_0123456_0123ABCD", "59acff1"));
        assert!(!names_old_space(b"/h/aaaaaaa_0123456_0123abcd", "59acff1"));
    }

    #[test]
    fn activation_json() {
        assert_eq!(
            parse_activation(br#"{"A": "1", "PS1": "", "N": null, "A": "2"}"#),
            [
                ("A".to_string(), "2".to_string()),
                ("PS1".into(), "".into()),
                ("N".into(), "".into())
            ]
        );
        assert!(parse_activation(br#"{"A": 1}"#).is_empty());
        assert!(parse_activation(b"[]").is_empty());
    }

    #[test]
    fn env_json_and_installation_id() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("env.json");
        std::fs::write(&f, r#"{"A": "x", "N": 1.50, "B": true, "Z": null}"#).unwrap();
        assert_eq!(
            load_env_json(&f).unwrap(),
            [
                ("A".to_string(), "x".to_string()),
                ("N".into(), "1.50".into()),
                ("B".into(), "true".into()),
                ("Z".into(), "".into())
            ]
        );
        std::fs::write(&f, r#"{"A": {"nested": 1}}"#).unwrap();
        let e = load_env_json(&f).unwrap_err();
        assert!(
            matches!(e, Error::BadInput { .. }) && e.to_string().contains("env.json"),
            "{e}"
        );
        std::fs::write(&f, "").unwrap();
        assert!(load_env_json(&f).unwrap().is_empty());

        let home = t.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let derived = installation_id(&home);
        assert_eq!(derived, installation_id(&home));
        assert_eq!(
            derived.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(!home.join("rcc.yaml").exists(), "nothing written");
        std::fs::write(
            home.join("rcc.yaml"),
            "Tracking:\n  Identity: 01234567-89ab-cdef-0123-456789abcdef\n",
        )
        .unwrap();
        assert_eq!(
            installation_id(&home),
            "01234567-89ab-cdef-0123-456789abcdef"
        );
    }

    #[test]
    fn rendering() {
        let env = os(&[("A", "1 "), ("", "x"), ("B", "<&>")]);
        assert_eq!(
            render_exports(&env),
            "export A=1 \nexport =x\nexport B=<&>\n"
        );
        assert_eq!(
            render_json(&env),
            "[\n  {\n    \"key\": \"A\",\n    \"value\": \"1\"\n  },\n  {\n    \"key\": \"B\",\n    \"value\": \"\\u003c\\u0026\\u003e\"\n  }\n]\n"
        );
        assert_eq!(render_json(&Vec::new()), "[]\n");
    }
}
