//! robot.yaml as rcc reads it (`robot/robot.go`): tasks and their command
//! lines, the environment file for this platform, PATH / PYTHONPATH,
//! artifacts, pre-run scripts. Every relative entry is joined to the
//! directory holding robot.yaml, which is also the tasks' working directory.

pub mod shlex;

use crate::error::{Error, IoContext, Result};
use crate::paths::{absolute, clean};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::path::{Path, PathBuf};

/// A loaded robot.yaml.
#[derive(Debug, Clone)]
pub struct Robot {
    /// Absolute path of robot.yaml (errors name it).
    file: PathBuf,
    root: PathBuf,
    raw: RawRobot,
}

/// One task, ready to give its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// The name as written in robot.yaml.
    pub name: String,
    pub form: TaskForm,
    /// `artifactsDir` as written (rcc passes it to robot's `--outputdir`).
    artifacts_dir: String,
    robot_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskForm {
    /// `robotTaskName: X`
    RobotTask(String),
    /// `shell: ...`, split with rcc's shlex rules.
    Shell(String),
    /// `command: [...]`, used as is.
    Command(Vec<String>),
}

impl Robot {
    /// Read robot.yaml; parse errors name the file, line and field.
    pub fn load(path: &Path) -> Result<Robot> {
        let file = absolute(path);
        let text = std::fs::read(&file).at_user(&file)?;
        let text =
            String::from_utf8(text).map_err(|_| Error::bad_input(&file, "not valid UTF-8 text"))?;
        let raw: RawRobot = serde_yaml::from_str(&text)
            .map_err(|e| Error::bad_input(&file, format!("not a valid robot.yaml: {e}")))?;
        let root = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        Ok(Robot { file, root, raw })
    }

    /// The robot.yaml file (absolute).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The directory of robot.yaml: working directory of every task.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// rcc's `Validate`: `tasks` non-empty, `artifactsDir` set, each task
    /// exactly one of robotTaskName / shell / command.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::bad_input(&self.file, msg));
        let Some(tasks) = &self.raw.tasks else {
            return bad("'tasks:' is required".into());
        };
        if tasks.0.is_empty() {
            return bad("'tasks:' must have at least one task defined".into());
        }
        if self.raw.artifacts_dir.as_deref().unwrap_or("").is_empty() {
            return bad("'artifactsDir:' is required".into());
        }
        for (name, spec) in &tasks.0 {
            let forms = spec.as_ref().map_or(0, RawTask::form_count);
            if forms != 1 {
                return bad(format!(
                    "task {name:?} needs exactly one of robotTaskName/shell/command"
                ));
            }
        }
        Ok(())
    }

    /// Task names (of `devTasks` with `dev`), quoted and sorted as rcc lists them.
    pub fn available_tasks(&self, dev: bool) -> Vec<String> {
        let mut names: Vec<String> = self
            .task_map(dev)
            .iter()
            .map(|(n, _)| format!("{n:?}"))
            .collect();
        names.sort();
        names
    }

    /// rcc's `TaskByName` / `DefaultTask`: no name picks the only task;
    /// otherwise the name with `\t\r\n"' ` trimmed, exactly, then ignoring
    /// case. `dev` uses `devTasks`. Validates robot.yaml first, as `rcc run`.
    pub fn task(&self, name: Option<&str>, dev: bool) -> Result<Task> {
        self.validate()?;
        let map = self.task_map(dev);
        let unknown = |task: &str, hint: &str| Error::UnknownTask {
            file: self.file.clone(),
            task: task.to_string(),
            available: format!("{}{hint}", self.available_tasks(dev).join(", ")),
        };
        let found = match name.filter(|n| !n.is_empty()) {
            None => match map {
                [only] => only,
                _ => return Err(unknown("", " (choose one with --task)")),
            },
            Some(name) => {
                let key = name.trim_matches(|c| "\t\r\n\"' ".contains(c));
                let caseless = key.to_lowercase();
                map.iter()
                    .find(|(n, _)| n == key)
                    .or_else(|| {
                        map.iter()
                            .find(|(n, _)| n.trim().to_lowercase() == caseless)
                    })
                    .ok_or_else(|| unknown(name, ""))?
            }
        };
        let (task_name, spec) = found;
        let spec = spec
            .as_ref()
            .ok_or_else(|| Error::bad_input(&self.file, format!("task {task_name:?} is empty")))?;
        // rcc's Commandline: the first form that is set
        let form = if let Some(t) = spec.robot_task_name.as_ref().filter(|t| !t.is_empty()) {
            TaskForm::RobotTask(t.clone())
        } else if let Some(s) = spec.shell.as_ref().filter(|s| !s.is_empty()) {
            TaskForm::Shell(s.clone())
        } else {
            TaskForm::Command(strings(&spec.command))
        };
        Ok(Task {
            name: task_name.clone(),
            form,
            artifacts_dir: self.raw.artifacts_dir.clone().unwrap_or_default(),
            robot_file: self.file.clone(),
        })
    }

    fn task_map(&self, dev: bool) -> &[(String, Option<RawTask>)] {
        let map = if dev {
            &self.raw.dev_tasks
        } else {
            &self.raw.tasks
        };
        map.as_ref().map_or(&[], |m| m.0.as_slice())
    }

    /// rcc's `resolveCondaConfigFile`: the first `environmentConfigs` entry
    /// for this platform that exists, else `condaConfigFile`; `None` for a
    /// shell robot (rcc's `UsesConda()` is false).
    pub fn conda_config(&self) -> Option<PathBuf> {
        let (goos, goarch) = host_goos_goarch();
        let platform = format!("{goos}_{goarch}");
        let available = self
            .raw
            .environment_configs
            .iter()
            .flatten()
            .flatten()
            .find(|part| {
                let underscored = part.matches('_').count() > 2;
                let frozen = part.to_lowercase().contains("freeze");
                if (underscored || frozen) && !part.contains(&platform) {
                    return false;
                }
                platform_acceptable(goarch, goos, part) && is_file(&go_join(&self.root, part))
            });
        if let Some(part) = available {
            return Some(go_join(&self.root, part));
        }
        let conda = self.raw.conda_config_file.as_deref().unwrap_or("");
        (!conda.is_empty()).then(|| go_join(&self.root, conda))
    }

    /// `Root/artifactsDir`.
    pub fn artifacts_dir(&self) -> PathBuf {
        go_join(&self.root, self.raw.artifacts_dir.as_deref().unwrap_or(""))
    }

    /// robot.yaml `PATH`, absolute (rcc's `Paths`).
    pub fn path_entries(&self) -> Vec<PathBuf> {
        path_builder(&self.root, &strings(&self.raw.path))
    }

    /// robot.yaml `PYTHONPATH`, absolute (rcc's `PythonPaths`).
    pub fn pythonpath_entries(&self) -> Vec<PathBuf> {
        path_builder(&self.root, &strings(&self.raw.pythonpath))
    }

    /// `ignoreFiles`, joined to Root (blank entries skipped).
    pub fn ignore_files(&self) -> Vec<PathBuf> {
        strings(&self.raw.ignore_files)
            .iter()
            .filter(|e| !e.trim().is_empty())
            .map(|e| go_join(&self.root, e))
            .collect()
    }

    /// `preRunScripts` for this platform, each split with rcc's shlex rules.
    /// rcc runs them (not with `--dev`) in order before the task; argv[0]
    /// is still to be looked up on the task's PATH.
    pub fn pre_run_scripts(&self) -> Result<Vec<Vec<String>>> {
        let (goos, goarch) = host_goos_goarch();
        let mut out = Vec::new();
        for script in strings(&self.raw.pre_run_scripts) {
            if !platform_acceptable(goarch, goos, &script) {
                continue;
            }
            let argv = shlex::split(&script).map_err(|e| {
                Error::bad_input(
                    &self.file,
                    format!("preRunScripts: cannot split {script:?}: {e}"),
                )
            })?;
            if argv.is_empty() {
                return Err(Error::bad_input(
                    &self.file,
                    format!("preRunScripts: {script:?} has no command"),
                ));
            }
            out.push(argv);
        }
        Ok(out)
    }

    /// `hololib.zip` next to robot.yaml, which rcc restores from instead of
    /// the hololib.
    pub fn holozip(&self) -> Option<PathBuf> {
        let zip = self.root.join("hololib.zip");
        is_file(&zip).then_some(zip)
    }
}

impl Task {
    /// The command line rcc runs (before argv[0] is looked up on PATH).
    pub fn argv(&self) -> Result<Vec<String>> {
        let argv = match &self.form {
            TaskForm::RobotTask(name) => [
                "python",
                "-m",
                "robot",
                "--report",
                "NONE",
                "--outputdir",
                &self.artifacts_dir,
                "--logtitle",
                "Task log",
                "--task",
                name,
                ".",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            TaskForm::Shell(line) => shlex::split(line).map_err(|e| {
                Error::bad_input(
                    &self.robot_file,
                    format!("task {:?}: cannot split shell: {e}", self.name),
                )
            })?,
            TaskForm::Command(argv) => argv.clone(),
        };
        if argv.is_empty() {
            return Err(Error::bad_input(
                &self.robot_file,
                format!("task {:?} has an empty command", self.name),
            ));
        }
        Ok(argv)
    }
}

/// This machine as Go names it (`runtime.GOOS`, `runtime.GOARCH`).
pub fn host_goos_goarch() -> (&'static str, &'static str) {
    let platform = crate::hololib::catalog::host_platform();
    platform.split_once('_').unwrap_or(("linux", "amd64"))
}

/// rcc's `PlatformAcceptableFile`: the first OS name (`windows|darwin|linux`)
/// and the first arch name (`amd64|arm64`) in `name`, found ignoring case,
/// must each be absent or spelled exactly as this platform's.
pub fn platform_acceptable(goarch: &str, goos: &str, name: &str) -> bool {
    first_match_is(name, &["windows", "darwin", "linux"], goos)
        && first_match_is(name, &["amd64", "arm64"], goarch)
}

fn first_match_is(text: &str, words: &[&str], expected: &str) -> bool {
    let b = text.as_bytes();
    for i in 0..b.len() {
        for w in words {
            if let Some(window) = b.get(i..i + w.len()) {
                if window.eq_ignore_ascii_case(w.as_bytes()) {
                    return window == expected.as_bytes();
                }
            }
        }
    }
    true
}

/// Go `filepath.Join(root, part)`: concatenates even an absolute `part`, then cleans.
pub fn go_join(root: &Path, part: &str) -> PathBuf {
    if part.is_empty() {
        return clean(root);
    }
    clean(&PathBuf::from(format!("{}/{part}", root.display())))
}

/// rcc's `pathBuilder`: an absolute existing directory as is, anything
/// else joined to Root.
fn path_builder(root: &Path, parts: &[String]) -> Vec<PathBuf> {
    parts
        .iter()
        .map(|part| {
            let p = Path::new(part);
            if p.is_absolute() && p.is_dir() {
                p.to_path_buf()
            } else {
                go_join(root, part)
            }
        })
        .collect()
}

/// rcc's `pathlib.IsFile`: exists and is not a directory.
fn is_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| !m.is_dir())
}

/// yaml.v2 decodes a null item of a `[]string` as "".
fn strings(items: &Option<Vec<Option<String>>>) -> Vec<String> {
    items
        .iter()
        .flatten()
        .map(|s| s.clone().unwrap_or_default())
        .collect()
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
struct RawRobot {
    tasks: Option<OrderedMap<Option<RawTask>>>,
    #[serde(rename = "devTasks")]
    dev_tasks: Option<OrderedMap<Option<RawTask>>>,
    #[serde(rename = "condaConfigFile")]
    conda_config_file: Option<String>,
    #[serde(rename = "preRunScripts")]
    pre_run_scripts: Option<Vec<Option<String>>>,
    #[serde(rename = "environmentConfigs")]
    environment_configs: Option<Vec<Option<String>>>,
    #[serde(rename = "ignoreFiles")]
    ignore_files: Option<Vec<Option<String>>>,
    #[serde(rename = "artifactsDir")]
    artifacts_dir: Option<String>,
    #[serde(rename = "PATH")]
    path: Option<Vec<Option<String>>>,
    #[serde(rename = "PYTHONPATH")]
    pythonpath: Option<Vec<Option<String>>>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
struct RawTask {
    #[serde(rename = "robotTaskName")]
    robot_task_name: Option<String>,
    shell: Option<String>,
    command: Option<Vec<Option<String>>>,
}

impl RawTask {
    fn form_count(&self) -> usize {
        usize::from(self.robot_task_name.as_ref().is_some_and(|s| !s.is_empty()))
            + usize::from(self.shell.as_ref().is_some_and(|s| !s.is_empty()))
            + usize::from(self.command.as_ref().is_some_and(|c| !c.is_empty()))
    }
}

/// A YAML mapping with string keys, in file order; a repeated key keeps
/// its first position and its last value (as a Go map would hold it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        OrderedMap(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V_<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for V_<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E>(self) -> std::result::Result<Self::Value, E> {
                Ok(OrderedMap::default())
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                let mut out: Vec<(String, V)> = Vec::new();
                // Position of each key: a linear search per key made a
                // large (hostile) robot.yaml quadratic.
                let mut at: std::collections::HashMap<String, usize> = Default::default();
                while let Some((k, v)) = m.next_entry::<String, V>()? {
                    match at.get(&k) {
                        Some(&i) => out[i].1 = v,
                        None => {
                            at.insert(k.clone(), out.len());
                            out.push((k, v));
                        }
                    }
                }
                Ok(OrderedMap(out))
            }
        }
        d.deserialize_map(V_(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_file_rules_as_rcc_tests_them() {
        for f in ["anyscript", "anyscript.bat", "anyscript.cmd"] {
            for (arch, os) in [
                ("amd64", "linux"),
                ("amd64", "windows"),
                ("arm64", "darwin"),
            ] {
                assert!(platform_acceptable(arch, os, f));
            }
        }
        for f in ["any.sh", "at_linux.sh", "at_arm64.sh", "at_arm64_linux.sh"] {
            assert!(platform_acceptable("arm64", "linux", f), "{f}");
        }
        for f in [
            "at_arm64.sh",
            "at_windows.bat",
            "at_darwin.sh",
            "at_arm64_linux.sh",
        ] {
            assert!(!platform_acceptable("amd64", "linux", f), "{f}");
        }
        for f in [
            "at_linux.sh",
            "at_arm64.sh",
            "at_amd64_darwin.sh",
            "at_amd64_linux.sh",
            "at_arm64_windows.sh",
        ] {
            assert!(!platform_acceptable("amd64", "windows", f), "{f}");
        }
        // matched ignoring case, compared exactly
        assert!(!platform_acceptable("amd64", "linux", "conda_LINUX.yaml"));
        // only the first OS name counts
        assert!(platform_acceptable(
            "amd64",
            "linux",
            "linux_then_windows.yaml"
        ));
    }

    #[test]
    fn go_join_concatenates_absolute_parts() {
        assert_eq!(
            go_join(Path::new("/r"), "/abs/x"),
            PathBuf::from("/r/abs/x")
        );
        assert_eq!(go_join(Path::new("/r"), "a/../b/"), PathBuf::from("/r/b"));
        assert_eq!(go_join(Path::new("/r"), ""), PathBuf::from("/r"));
        assert_eq!(go_join(Path::new("/r"), "../.."), PathBuf::from("/"));
    }
}
