//! Blueprints, robot.yaml and task environments: `vhrun hash`, `vhrun vars`
//! and the library they stand on, against rcc's own vectors and the real
//! linux fixture export.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use vhrun::blueprint::{blueprint_of_file, blueprint_of_files, environment_of_files, Environment};
use vhrun::error::Error;
use vhrun::hololib::layout::space_name;
use vhrun::robot::{host_goos_goarch, Robot, TaskForm};

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run vhrun with a clean environment: only the variables given (HOME,
/// ROBOCORP_HOME and VHRUN_HOME always point into `sandbox`).
fn vhrun(sandbox: &Path, cwd: &Path, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vhrun"));
    cmd.env_clear()
        .current_dir(cwd)
        .env("HOME", sandbox.join("home"))
        .env("ROBOCORP_HOME", sandbox.join("rh"))
        .env("VHRUN_HOME", sandbox.join("vh"))
        .env("VHRUN_IMAGE", "off")
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .args(args);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("vhrun runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

// rcc's conda/testdata (Apache-2.0), the inputs of its unit vectors.
const LAYERS_YAML: &str = "channels:\n- conda-forge\ndependencies:\n- python=3.9.13\n- pip=22.1.2\n- pip:\n  - rpaframework==22.5.3\nrccPostInstall:\n- python3 -m pip --version\n";
const CONDA_YAML: &str = "channels:\n  - conda-forge\n  - defaults\ndependencies:\n  - python=3.9.13\n  - pip\n  - robotframework=3.1\n  - robotframework-seleniumlibrary\n  - pip:\n    - webdrivermanager\n";
const OTHER_YAML: &str = "channels:\n  - defaults\ndependencies:\n  - python=3.9.13\n  - pip\n  - robotframework=3.2\n  - robotframework-seleniumlibrary\n  - pip:\n    - webdrivermanager\n";
const THIRD_YAML: &str = "channels:\n  - conda-forge\n  - defaults\ndependencies:\n  - python=3.9.13\n  - pip\n  - robotframework=3.2\n  - robotframework-seleniumlibrary\n  - pip:\n    - webdrivermanager\n";
const PACKAGE_DEV_YAML: &str = "name: RCC testing package\ndescription: Just for testing rcc.\nversion: 0.0.1\n\ndocumentation: https://github.com/joshyorko/rcc/\n\ndependencies:\n  conda-forge:\n    - python=3.10.12\n    - uv=0.9.22\n  pypi:\n    - robocorp=1.6.2\n    - robocorp-actions=0.0.7\n\ndev-dependencies:\n  conda-forge:\n    - pytest=8.3.3\n  pypi:\n    - ruff=0.7.0\n";
const ROBOT_YAML: &str = "tasks:\n  task form name:\n    robotTaskName: Simplest Case Possible\n  shell form name:\n    shell: python -m robot -d output --logtitle \"Task log\" tasks/shilling.robot\n  old command form name:\n    command:\n      - python\n      - -m\n      - robot\n      - --report\n      - NONE\n      - --outputdir\n      - output\n      - --logtitle\n      - Task log\n      - tasks/fancy.robot\n\ncondaConfigFile: config/conda.yaml\nignoreFiles:\n    - .gitignore\nartifactsDir: output\nPATH:\n  - bin\nPYTHONPATH:\n  - variables\n  - libraries\n  - resources\n";

// ---------------------------------------------------------------------------
// blueprints

#[test]
fn hash_of_the_public_vector() {
    let t = tempfile::tempdir().unwrap();
    let out = vhrun(
        t.path(),
        &common::fixtures_dir(),
        &["hash", "simple.yaml"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!(out.stdout, @"c34ed96c2d8a459a  simple.yaml");
    let bp = blueprint_of_file(&common::fixture("simple.yaml"), false, t.path()).unwrap();
    assert_eq!(
        bp.text,
        "channels:\n- conda-forge\ndependencies:\n- ca-certificates"
    );
}

#[test]
fn rcc_layer_vectors() {
    let t = tempfile::tempdir().unwrap();
    let file = write(&t.path().join("layers.yaml"), LAYERS_YAML);
    let env = Environment::load(&file, false, t.path()).unwrap();
    let layers = env.layers();
    let hashes: Vec<&str> = layers.iter().map(|b| b.hash.as_str()).collect();
    assert_eq!(
        hashes,
        ["0d8cc85130420984", "5be3e197c8c2c67d", "d310697aca0840a1"]
    );
    assert!(
        layers[0].text.len() < layers[1].text.len() && layers[1].text.len() < layers[2].text.len()
    );
    // the full layer is the file's blueprint, and the file was already normalised
    assert_eq!(
        layers[2],
        blueprint_of_file(&file, false, t.path()).unwrap()
    );
    assert_eq!(layers[2].text, LAYERS_YAML.trim());
}

/// Hashes that rcc's own acceptance tests (robot_tests/*.robot,
/// robot_tests/expected/) expect for files of its repository.
#[test]
fn rcc_acceptance_vectors() {
    let t = tempfile::tempdir().unwrap();
    let extended = "channels:\n  # Define conda channels here. \n  - conda-forge\n\ndependencies:\n  # Define conda packages here. \n  # If available, always prefer the conda version of a package, installation will be faster and more efficient.\n  # https://anaconda.org/search  \n  - python=3.9.13\n\n  - pip=22.1.2\n  - pip:\n    # Define pip packages here. \n    # https://pypi.org/\n    - rpaframework==15.6.0 # https://rpaframework.org/releasenotes.html\n";
    let spellbug = "channels:\n- conda-forge\ndependencies:\n- python=3.9.13\n- pip=22.1.2\n- pip:\n  - pyspellchecker==0.6.2\n";
    let tests_conda = "channels:\n- conda-forge\ndependencies:\n- python=3.7.8\n";
    for (name, text, hash) in [
        ("conda.yaml", CONDA_YAML, "786fd9dca1e1f1db"),
        ("extended/conda.yaml", extended, "1cdd0b852854fe5b"),
        ("spellbug/conda.yaml", spellbug, "8b2083d262262cbd"),
        ("robot_tests/conda.yaml", tests_conda, "79ba58276b645f09"),
        (
            "bare_action/package.yaml",
            PACKAGE_DEV_YAML,
            "00db64afd9c178e7",
        ),
    ] {
        let file = write(&t.path().join(name), text);
        assert_eq!(
            blueprint_of_file(&file, false, t.path()).unwrap().hash,
            hash,
            "{name}"
        );
    }
    let package = t.path().join("bare_action/package.yaml");
    assert_eq!(
        blueprint_of_file(&package, true, t.path()).unwrap().hash,
        "d43926661d3dae1f"
    );
    // `rcc holotree vars third.yaml other.yaml`
    let third = write(&t.path().join("third.yaml"), THIRD_YAML);
    let other = write(&t.path().join("other.yaml"), OTHER_YAML);
    assert_eq!(
        blueprint_of_files(&[third, other], false, t.path())
            .unwrap()
            .hash,
        "ffd32af1fdf0f253"
    );
    // and its space name for `--controller citests` (`4e67cd8_9fcd2534`)
    assert!(space_name("59acff1", "citests", "user").ends_with("_4e67cd8_9fcd2534"));
}

#[test]
fn rcc_read_and_merge_cases() {
    let t = tempfile::tempdir().unwrap();
    let conda = write(&t.path().join("conda.yaml"), CONDA_YAML);
    let env = Environment::load(&conda, false, t.path()).unwrap();
    assert_eq!(
        (env.channels.len(), env.conda.len(), env.pip.len()),
        (2, 4, 1)
    );
    let third = write(&t.path().join("third.yaml"), THIRD_YAML);
    let other = write(&t.path().join("other.yaml"), OTHER_YAML);
    let merged = environment_of_files(&[third.clone(), other.clone()], false, t.path()).unwrap();
    assert_eq!(
        (merged.channels.len(), merged.conda.len(), merged.pip.len()),
        (2, 4, 1)
    );
    // robotframework=3.1 vs =3.2: rcc refuses to merge
    let err = blueprint_of_files(&[conda, other.clone()], false, t.path()).unwrap_err();
    assert!(
        matches!(&err, Error::BadInput { path, .. } if path == &other),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("robotframework=3.1 vs. robotframework=3.2"),
        "{err}"
    );
}

#[test]
fn package_yaml_and_devdeps() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("work");
    write(&dir.join("package.yaml"), PACKAGE_DEV_YAML);
    write(&dir.join("conda.yaml"), LAYERS_YAML);
    let out = vhrun(
        t.path(),
        &dir,
        &["hash", "--json", "package.yaml", "conda.yaml"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("hash_json", out.stdout);
    let dev = vhrun(t.path(), &dir, &["hash", "--devdeps", "package.yaml"], &[]);
    assert_eq!(dev.code, 0, "{}", dev.stderr);
    let dev_bp = blueprint_of_file(&dir.join("package.yaml"), true, t.path()).unwrap();
    assert_eq!(dev.stdout, format!("{}  package.yaml\n", dev_bp.hash));
    assert!(dev_bp.text.contains("- pytest=8.3.3\n") && dev_bp.text.ends_with("  - ruff==0.7.0"));
    // --devdeps is an error for anything but package.yaml, naming the file
    let bad = vhrun(
        t.path(),
        &dir,
        &["hash", "--devdeps", "package.yaml", "conda.yaml"],
        &[],
    );
    assert_eq!(bad.code, 65);
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("conda.yaml") && bad.stderr.contains("--devdeps"),
        "{}",
        bad.stderr
    );
    assert!(bad.stdout.is_empty());
}

#[test]
fn local_channel_is_first() {
    let t = tempfile::tempdir().unwrap();
    let rh = t.path().join("rh");
    write(&rh.join("channel/channeldata.json"), "{}");
    let out = vhrun(
        t.path(),
        &common::fixtures_dir(),
        &["hash", "--json", "simple.yaml"],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let text = json[0]["blueprint"].as_str().unwrap();
    assert_eq!(
        text,
        format!(
            "channels:\n- {}\n- conda-forge\ndependencies:\n- ca-certificates",
            rh.join("channel").display()
        )
    );
    assert_ne!(json[0]["hash"], "c34ed96c2d8a459a");
}

#[test]
fn bad_environment_files() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("work");
    write(
        &dir.join("broken.yaml"),
        "channels: [conda-forge\ndependencies:\n- x\n",
    );
    write(&dir.join("typed.yaml"), "channels: conda-forge\n");
    for (file, needle) in [("broken.yaml", "line"), ("typed.yaml", "channels")] {
        let out = vhrun(t.path(), &dir, &["hash", file], &[]);
        assert_eq!(out.code, 65, "{file}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(
            out.stderr.contains(file) && out.stderr.contains(needle),
            "{}",
            out.stderr
        );
    }
    let dir_arg = vhrun(t.path(), &dir, &["hash", "."], &[]);
    assert_eq!(dir_arg.code, 65, "{}", dir_arg.stderr);
    let missing = vhrun(t.path(), &dir, &["hash", "nope.yaml"], &[]);
    assert_eq!(missing.code, 66, "{}", missing.stderr);
    assert!(missing.stderr.contains("nope.yaml"));
}

// ---------------------------------------------------------------------------
// robot.yaml

#[test]
fn rcc_robot_yaml() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("robot");
    write(&root.join("robot.yaml"), ROBOT_YAML);
    let robot = Robot::load(&root.join("robot.yaml")).unwrap();
    robot.validate().unwrap();
    assert_eq!(robot.root(), root);
    assert_eq!(robot.available_tasks(false).len(), 3);
    assert!(matches!(
        robot.task(None, false),
        Err(Error::UnknownTask { .. })
    ));
    assert!(matches!(
        robot.task(Some("missing task"), false),
        Err(Error::UnknownTask { .. })
    ));
    let shell = robot.task(Some("Shell Form Name"), false).unwrap();
    assert_eq!(shell.name, "shell form name");
    let argv = shell.argv().unwrap();
    assert_eq!(argv.len(), 8);
    assert_eq!(argv[6], "Task log");
    assert_eq!(argv[7], "tasks/shilling.robot");
    let task = robot.task(Some("task form name"), false).unwrap();
    assert_eq!(
        task.argv().unwrap(),
        [
            "python",
            "-m",
            "robot",
            "--report",
            "NONE",
            "--outputdir",
            "output",
            "--logtitle",
            "Task log",
            "--task",
            "Simplest Case Possible",
            "."
        ]
    );
    let old = robot.task(Some("  Old command form name "), false).unwrap();
    assert!(matches!(old.form, TaskForm::Command(ref c) if c.len() == 10));
    assert!(robot.task(Some("\"task form name\""), false).is_ok());
    assert_eq!(robot.path_entries(), [root.join("bin")]);
    assert_eq!(
        robot.pythonpath_entries(),
        [
            root.join("variables"),
            root.join("libraries"),
            root.join("resources")
        ]
    );
    assert_eq!(
        robot.conda_config().unwrap(),
        root.join("config/conda.yaml")
    );
    assert_eq!(robot.artifacts_dir(), root.join("output"));
    assert_eq!(robot.ignore_files(), [root.join(".gitignore")]);
    // the error lists the tasks
    let err = robot.task(Some("nope"), false).unwrap_err();
    assert_eq!(err.exit_code(), 68);
    assert!(err.to_string().contains("\"shell form name\""), "{err}");
}

#[test]
fn environment_configs_follow_the_platform() {
    let (goos, goarch) = host_goos_goarch();
    let other_arch = if goarch == "amd64" { "arm64" } else { "amd64" };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("robot");
    for f in [
        "conda_windows.yaml".to_string(),
        format!("conda_{other_arch}.yaml"),
        "conda_a_b_c_d.yaml".into(),
        "conda_freeze.yaml".into(),
        format!("environment_{goos}_{goarch}_freeze.yaml"),
        format!("conda_{}.yaml", goos.to_uppercase()),
        "conda.yaml".into(),
    ] {
        write(&root.join(f), "dependencies: []\n");
    }
    let configs = format!(
        "[conda_windows.yaml, conda_{other_arch}.yaml, conda_a_b_c_d.yaml, conda_freeze.yaml, missing.yaml, \
         conda_{}.yaml, environment_{goos}_{goarch}_freeze.yaml, conda.yaml]",
        goos.to_uppercase()
    );
    let robot_yaml = write(
        &root.join("robot.yaml"),
        &format!("tasks: {{a: {{shell: x}}}}\nartifactsDir: out\nenvironmentConfigs: {configs}\ncondaConfigFile: conda.yaml\n"),
    );
    let robot = Robot::load(&robot_yaml).unwrap();
    assert_eq!(
        robot.conda_config().unwrap(),
        root.join(format!("environment_{goos}_{goarch}_freeze.yaml"))
    );
    // nothing suitable: condaConfigFile, even when it does not exist
    write(&robot_yaml, "tasks: {a: {shell: x}}\nartifactsDir: out\nenvironmentConfigs: [conda_windows.yaml]\ncondaConfigFile: nope.yaml\n");
    assert_eq!(
        Robot::load(&robot_yaml).unwrap().conda_config().unwrap(),
        root.join("nope.yaml")
    );
    // neither: a shell robot
    write(&robot_yaml, "tasks: {a: {shell: x}}\nartifactsDir: out\n");
    assert!(Robot::load(&robot_yaml).unwrap().conda_config().is_none());
}

#[test]
fn robot_validation_and_pre_run_scripts() {
    let (_, goarch) = host_goos_goarch();
    let other_arch = if goarch == "amd64" { "arm64" } else { "amd64" };
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("robot.yaml");
    let cases = [
        ("artifactsDir: out\n", "'tasks:' is required"),
        ("tasks: {}\nartifactsDir: out\n", "at least one task"),
        ("tasks: {a: {shell: x}}\n", "'artifactsDir:' is required"),
        (
            "tasks: {a: {shell: x, command: [y]}}\nartifactsDir: out\n",
            "exactly one of",
        ),
        ("tasks: {a: {}}\nartifactsDir: out\n", "exactly one of"),
        ("tasks: {a: }\nartifactsDir: out\n", "exactly one of"),
    ];
    for (text, msg) in cases {
        write(&file, text);
        let err = Robot::load(&file)
            .unwrap()
            .task(Some("a"), false)
            .unwrap_err();
        assert!(
            matches!(&err, Error::BadInput { path, .. } if path == &file),
            "{err}"
        );
        assert!(err.to_string().contains(msg), "{text:?}: {err}");
    }
    write(&file, "tasks: [a, b]\n");
    let err = Robot::load(&file).unwrap_err();
    assert!(
        err.to_string().contains("robot.yaml") && err.to_string().contains("line 1"),
        "{err}"
    );

    write(
        &file,
        &format!(
            "tasks: {{a: {{shell: \"unclosed 'quote\"}}, b: {{shell: '# only a comment'}}}}\n\
             devTasks: {{dev: {{command: [python, dev.py]}}}}\nartifactsDir: out\n\
             preRunScripts:\n- echo \"hello world\" x\n- script_{other_arch}.sh\n- setup_windows.bat\n- ./setup.sh --flag\n"
        ),
    );
    let robot = Robot::load(&file).unwrap();
    assert_eq!(
        robot.pre_run_scripts().unwrap(),
        [
            vec!["echo", "hello world", "x"],
            vec!["./setup.sh", "--flag"]
        ]
    );
    let err = robot.task(Some("a"), false).unwrap().argv().unwrap_err();
    assert!(err.to_string().contains("closing quote"), "{err}");
    let err = robot.task(Some("b"), false).unwrap().argv().unwrap_err();
    assert!(err.to_string().contains("empty command"), "{err}");
    // --dev: the only dev task is the default
    assert_eq!(
        robot.task(None, true).unwrap().argv().unwrap(),
        ["python", "dev.py"]
    );
}

// ---------------------------------------------------------------------------
// vars over the imported linux fixture

/// A ROBOCORP_HOME holding the fixture export, unzipped as `rcc holotree
/// import` does, and a robot whose environment is simple.yaml.
struct VarsFixture {
    dir: tempfile::TempDir,
}

impl VarsFixture {
    fn new(robot_yaml: &str) -> VarsFixture {
        let dir = tempfile::tempdir().unwrap();
        let hololib = dir.path().join("rh/hololib");
        std::fs::create_dir_all(&hololib).unwrap();
        common::extract_fixture("simple_linux.zip", &hololib);
        // a fixed installation id, as rcc keeps it in rcc.yaml
        write(
            &dir.path().join("rh/rcc.yaml"),
            "tracking:\n  identity: 0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9\n",
        );
        let robot = dir.path().join("robot");
        write(&robot.join("robot.yaml"), robot_yaml);
        std::fs::copy(common::fixture("simple.yaml"), robot.join("conda.yaml")).unwrap();
        write(
            &robot.join("env.json"),
            "{\"FROM_ENV_JSON\": \"yes\", \"NUMBER\": 1.50}\n",
        );
        VarsFixture { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn vars(&self, args: &[&str]) -> Output {
        self.vars_logged(args, "")
    }

    /// `vars` with `VHRUN_LOG` set (empty: unset).
    fn vars_logged(&self, args: &[&str], log: &str) -> Output {
        let mut all = vec!["vars", "-r", "robot/robot.yaml"];
        all.extend_from_slice(args);
        // HOME=/home/user: the user-home identity of the catalog's builder
        let mut env = vec![
            ("HOME", "/home/user"),
            (
                "PATH",
                "/usr/local/bin:/opt/conda/bin:/usr/bin:/usr/bin:relative",
            ),
            ("PYTHONDONTWRITEBYTECODE", "1"),
        ];
        if !log.is_empty() {
            env.push(("VHRUN_LOG", log));
        }
        vhrun(self.root(), self.root(), &all, &env)
    }

    /// Output with the run's random parts replaced.
    fn normalise(&self, text: &str) -> String {
        let mut s = text.replace(&self.root().display().to_string(), "[TMP]");
        s = s.replace(env!("CARGO_BIN_EXE_vhrun"), "[VHRUN]");
        let marker = "[TMP]/rh/temp/";
        let mut from = 0;
        while let Some(at) = s[from..].find(marker) {
            let start = from + at + marker.len();
            if s.len() >= start + 16 {
                s.replace_range(start..start + 16, "[RANDOM16HEX]");
            }
            from = start;
        }
        s
    }

    fn hololib_listing(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.root().join("rh/hololib")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }
}

const FIXTURE_ROBOT: &str = "tasks:\n  Run:\n    shell: sh -c \"exit 3\"\ncondaConfigFile: conda.yaml\nartifactsDir: output\nPATH: [bin]\nPYTHONPATH: [libs, .]\n";

#[test]
fn vars_of_the_fixture_robot() {
    let fx = VarsFixture::new(FIXTURE_ROBOT);
    let before = fx.hololib_listing();
    let out = fx.vars(&["--json", "-e", "robot/env.json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    insta::assert_snapshot!("vars_json", fx.normalise(&out.stdout));

    let entries: Vec<(String, String)> =
        serde_json::from_str::<Vec<serde_json::Value>>(&out.stdout)
            .unwrap()
            .into_iter()
            .map(|e| {
                (
                    e["key"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
    let get = |k: &str| {
        entries
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let space = format!(
        "/home/user/.robocorp/holotree/{}",
        space_name("59acff1", "user", "user")
    );
    assert_eq!(get("CONDA_PREFIX").unwrap(), space);
    assert_eq!(get("RCC_HOLOTREE_SPACE_ROOT").unwrap(), space);
    assert_eq!(get("RCC_ENVIRONMENT_HASH").unwrap(), "c34ed96c2d8a459a");
    assert_eq!(
        get("RCC_INSTALLATION_ID").unwrap(),
        "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
    );
    // from rcc_activate.json in the catalog; its PS1 is dropped as rcc does
    assert_eq!(get("MAMBA_ROOT_PREFIX").unwrap(), "/home/user/.robocorp");
    assert_eq!(get("SHLVL").unwrap(), "2");
    assert!(get("PS1").is_none());
    // no bin/python in this environment, no venv
    assert!(get("PYTHON_EXE").is_none() && get("VIRTUAL_ENV").is_none());
    // vhrun's bytecode cache, not rcc's flag
    assert!(get("PYTHONDONTWRITEBYTECODE").is_none());
    let pycache = get("PYTHONPYCACHEPREFIX").unwrap();
    assert!(
        pycache.starts_with(&format!(
            "{}/vh/pycache/c34ed96c2d8a459av12.linux_amd64/",
            fx.root().display()
        )),
        "{pycache}"
    );
    // PATH twice: rcc's, then the robot's in front of it
    let paths: Vec<&String> = entries
        .iter()
        .filter(|(k, _)| k == "PATH")
        .map(|(_, v)| v)
        .collect();
    let cwd = fx.root().display().to_string();
    assert_eq!(paths.len(), 2);
    assert_eq!(
        *paths[0],
        format!("{space}/bin:/usr/local/bin:/usr/bin:{cwd}/relative")
    );
    assert_eq!(
        *paths[1],
        format!("{cwd}/robot/bin:{space}/bin:/usr/local/bin:/usr/bin:{cwd}/relative")
    );
    assert_eq!(
        get("PYTHONPATH").unwrap(),
        format!("{cwd}/robot/libs:{cwd}/robot")
    );
    assert_eq!(
        get("ROBOT_ARTIFACTS").unwrap(),
        format!("{cwd}/robot/output")
    );
    assert_eq!(get("FROM_ENV_JSON").unwrap(), "yes");
    assert_eq!(get("NUMBER").unwrap(), "1.50");
    // TEMP exists (as rcc's does) and is marked for rcc's recycler
    let temp = PathBuf::from(get("TEMP").unwrap());
    assert!(temp.join("recycle.now").is_file());
    assert!(temp.starts_with(fx.root().join("rh/temp")));
    // read only: the hololib is byte for byte the same, no space was made
    assert_eq!(fx.hololib_listing(), before);
    assert!(!fx.root().join("rh/holotree").exists());
}

#[test]
fn vars_rcc_env_and_text_output() {
    let fx = VarsFixture::new(FIXTURE_ROBOT);
    let out = fx.vars(&["--rcc-env", "--space", "ci", "--controller", "GitHub"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = fx.normalise(&out.stdout);
    insta::assert_snapshot!("vars_rcc_env_text", text);
    let space = format!(
        "/home/user/.robocorp/holotree/{}",
        space_name("59acff1", "github", "ci")
    );
    assert!(
        text.contains(&format!("export CONDA_PREFIX={space}\n")),
        "{text}"
    );
    assert!(text.contains("export PYTHONDONTWRITEBYTECODE=x\n"));
    assert!(text.contains("export PYTHONPYCACHEPREFIX=[TMP]/rh/temp/[RANDOM16HEX]\n"));
    // text output keeps the trailing space JSON output trims
    assert!(text.contains("export CONDA_PROMPT_MODIFIER=(rcc) \n"));
}

/// rcc's network variables from ROBOCORP_HOME's settings.yaml, piprc and
/// ca-bundle.pem come after the activation variables, right before the
/// robot's PATH; `-w` adds RC_WORKSPACE_ID last, with a warning that the
/// Control Room hosts and tokens are not fetched. A malformed settings.yaml
/// is one line naming it.
#[test]
fn vars_with_settings_yaml_profile_files_and_workspace() {
    let fx = VarsFixture::new(FIXTURE_ROBOT);
    let rh = fx.root().join("rh");
    write(
        &rh.join("settings.yaml"),
        "certificates:\n  verify-ssl: false\n  ssl-no-revoke: true\n\
         network:\n  https-proxy: http://proxy.corp:8443\n  no-proxy: localhost,.corp\n",
    );
    write(&rh.join("ca-bundle.pem"), "-----BEGIN CERTIFICATE-----\n");
    write(&rh.join("piprc"), "[global]\n");
    let out = fx.vars(&["-w", "1234"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let entries: Vec<(&str, &str)> = out
        .stdout
        .lines()
        .map(|l| l.strip_prefix("export ").unwrap().split_once('=').unwrap())
        .collect();
    let keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
    let robot_path = keys.iter().rposition(|k| *k == "PATH").unwrap();
    let network = [
        "MAMBA_SSL_NO_REVOKE",
        "MAMBA_SSL_VERIFY",
        "RC_DISABLE_SSL",
        "WDM_SSL_VERIFY",
        "NODE_TLS_REJECT_UNAUTHORIZED",
        "https_proxy",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
        "PIP_CONFIG_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "SSL_CERT_FILE",
        "NODE_EXTRA_CA_CERTS",
    ];
    assert_eq!(keys[robot_path - network.len()..robot_path], network);
    // the activation variables come right before them
    assert_eq!(keys[robot_path - network.len() - 1], "SHLVL");
    let get = |k: &str| entries.iter().rev().find(|(key, _)| *key == k).unwrap().1;
    let bundle = rh.join("ca-bundle.pem").display().to_string();
    assert_eq!(get("SSL_CERT_FILE"), bundle);
    assert_eq!(get("NODE_EXTRA_CA_CERTS"), bundle);
    assert_eq!(
        get("PIP_CONFIG_FILE"),
        rh.join("piprc").display().to_string()
    );
    assert_eq!(get("HTTPS_PROXY"), "http://proxy.corp:8443");
    assert_eq!(get("no_proxy"), "localhost,.corp");
    assert_eq!(get("MAMBA_SSL_VERIFY"), "false");
    assert_eq!(entries.last().unwrap(), &("RC_WORKSPACE_ID", "1234"));
    assert!(!keys.iter().any(|k| k.starts_with("RC_API_")));
    assert!(
        out.stderr.contains("--workspace") && out.stderr.contains("RC_API_SECRET_TOKEN"),
        "{}",
        out.stderr
    );
    // without -w: no workspace variable, no warning
    let out = fx.vars(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("RC_WORKSPACE_ID"));
    assert!(out.stderr.is_empty(), "{}", out.stderr);

    write(
        &rh.join("settings.yaml"),
        "certificates:\n  verify-ssl: maybe\n",
    );
    let out = fx.vars(&[]);
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&rh.join("settings.yaml").display().to_string())
            && out.stderr.contains("verify-ssl"),
        "{}",
        out.stderr
    );
}

#[test]
fn vars_without_a_catalog_says_what_to_do() {
    let fx = VarsFixture::new(FIXTURE_ROBOT);
    write(
        &fx.root().join("robot/conda.yaml"),
        "channels: [conda-forge]\ndependencies: [python=3.12]\n",
    );
    let out = fx.vars(&[]);
    assert_eq!(out.code, 67, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let bp = blueprint_of_file(
        &fx.root().join("robot/conda.yaml"),
        false,
        Path::new("/nonexistent"),
    )
    .unwrap();
    for needle in [bp.hash.as_str(), "robot/conda.yaml", "vhrun import", "rcc"] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
}

#[test]
fn vars_of_a_shell_robot_and_bad_inputs() {
    let fx = VarsFixture::new("tasks: {a: {shell: x}}\nartifactsDir: out\nPATH: [bin]\n");
    let out = fx.vars(&[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let cwd = fx.root().display();
    // shell robots keep python/conda directories on PATH (no word filter)
    assert_eq!(
        out.stdout,
        format!(
            "export PATH={cwd}/robot/bin:/usr/local/bin:/opt/conda/bin:/usr/bin:{cwd}/relative\n"
        )
    );

    let fx = VarsFixture::new(FIXTURE_ROBOT);
    write(&fx.root().join("robot/env.json"), "{\"A\": [1, 2]}");
    let out = fx.vars(&["-e", "robot/env.json"]);
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(out.stderr.contains("env.json"), "{}", out.stderr);
    write(&fx.root().join("robot/robot.yaml"), "tasks: {a: [x]}\n");
    let out = fx.vars(&[]);
    assert_eq!(out.code, 65, "{}", out.stderr);
    assert!(out.stderr.contains("robot.yaml"), "{}", out.stderr);
    let out = vhrun(
        fx.root(),
        fx.root(),
        &["vars", "-r", "nope/robot.yaml"],
        &[],
    );
    assert_eq!(out.code, 66, "{}", out.stderr);
}

/// The summary a run reads instead of the catalog's tree gives the same
/// variables, and is not trusted once damaged or once the catalog changed.
#[test]
fn the_catalog_summary_stands_for_the_tree_until_the_catalog_changes() {
    let fx = VarsFixture::new(FIXTURE_ROBOT);
    let summaries = || -> Vec<PathBuf> {
        std::fs::read_dir(fx.root().join("vh/index"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sum2"))
            .collect()
    };
    let first = fx.vars(&["--json"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let made = summaries();
    assert_eq!(made.len(), 1, "{made:?}");
    let want = fx.normalise(&first.stdout);
    let read = "catalog summary read";
    let loaded = "tree.load";
    let run = |what: &str| {
        let out = fx.vars_logged(&["--json"], "vhrun=debug");
        assert_eq!(out.code, 0, "{what}: {}", out.stderr);
        assert_eq!(fx.normalise(&out.stdout), want, "{what}");
        out.stderr
    };

    let log = run("from the summary");
    assert!(log.contains(read) && !log.contains(loaded), "{log}");

    // damaged: ignored, the tree is loaded, and the summary written anew
    let path = &made[0];
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::remove_file(path).unwrap();
    std::fs::write(path, &bytes).unwrap();
    let log = run("damaged summary");
    assert!(!log.contains(read) && log.contains(loaded), "{log}");
    let log = run("rewritten summary");
    assert!(log.contains(read), "{log}");

    // the catalog replaced (same bytes, another file): not this summary's
    let catalog = std::fs::read_dir(fx.root().join("rh/hololib/catalog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_none_or(|x| x != "info"))
        .unwrap();
    let copy = catalog.with_extension("new");
    std::fs::copy(&catalog, &copy).unwrap();
    std::fs::rename(&copy, &catalog).unwrap();
    let log = run("replaced catalog");
    assert!(!log.contains(read) && log.contains(loaded), "{log}");
    assert_eq!(summaries().len(), 2);
}
