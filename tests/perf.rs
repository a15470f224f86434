//! The warm path of `vhrun exec` / `vhrun vars` through the CLI: the tree
//! index is found without reading the catalog, the catalog's JSON is
//! decoded only on the first run, the environment facts and variables are
//! the same either way, working sets are kept per command, and the hidden
//! benchmark switches work. A real lift, real FUSE + overlay runs: needs
//! root (CI is root).
//!
//! Prefetch and working sets are the per-run mount's mechanics, so these
//! runs mount a tree each (`VHRUN_SERVER=off`); a warm server replays a
//! working set only for its first run (tests/server.rs covers it).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A 24-byte rcc-shaped identity, so a space name can replace it in place.
const IDENTITY: &str = "h1234567_89abcdef012345t";

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        common::require_root();
        let fx = Fx {
            dir: tempfile::Builder::new()
                .prefix("vhrun-perf")
                .tempdir()
                .unwrap(),
        };
        let env = fx.env_dir();
        fs::create_dir_all(env.join("bin")).unwrap();
        fs::create_dir_all(env.join("lib")).unwrap();
        // The script embeds the build path: lifted with a rewrite offset.
        fs::write(
            env.join("bin/python3.11"),
            format!(
                "#!/bin/sh\n# built in {}\necho fake python\n",
                env.display()
            ),
        )
        .unwrap();
        fs::set_permissions(
            env.join("bin/python3.11"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        // As in a real env: python3 is a link, which the catalog records as
        // a file (its target's mode and digest); `vars` must still find it.
        std::os::unix::fs::symlink("python3.11", env.join("bin/python3")).unwrap();
        fs::write(env.join("lib/data.txt"), "served through the tree\n").unwrap();
        fs::write(env.join("pyvenv.cfg"), "home = /nowhere\n").unwrap();
        fs::create_dir_all(fx.home()).unwrap();
        let robot = fx.robot_dir();
        fs::create_dir_all(&robot).unwrap();
        fs::write(
            robot.join("conda.yaml"),
            "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip:\n  - vhrun-perf-test==1.0\n",
        )
        .unwrap();
        fs::write(
            robot.join("robot.yaml"),
            "tasks:\n  t:\n    shell: true\ncondaConfigFile: conda.yaml\nartifactsDir: output\n",
        )
        .unwrap();
        let out = fx
            .vhrun()
            .args(["lift", "--no-identity-yaml", "--hololib"])
            .arg(fx.root().join("rh/hololib"))
            .arg("--blueprint")
            .arg(robot.join("conda.yaml"))
            .arg(&env)
            .output()
            .unwrap();
        assert!(out.status.success(), "lift: {}", text(&out.stderr));
        fx
    }
    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn env_dir(&self) -> PathBuf {
        self.root().join("holotree").join(IDENTITY)
    }
    fn home(&self) -> PathBuf {
        self.root().join("home")
    }
    fn robot_dir(&self) -> PathBuf {
        self.root().join("robot")
    }
    fn vhrun_home(&self) -> PathBuf {
        self.root().join("vh")
    }
    fn vhrun(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vhrun"));
        c.env("HOME", self.home())
            .env("ROBOCORP_HOME", self.root().join("rh"))
            .env("VHRUN_HOME", self.vhrun_home())
            .env("VHRUN_IMAGE", "off")
            .env("VHRUN_SERVER", "off")
            .env_remove("VHRUN_PASSTHROUGH")
            .env_remove("VHRUN_PREFETCH")
            .current_dir(self.root());
        c
    }
    /// `vhrun -v exec --catalog <blueprint> -- ARGS`, asserting success.
    fn exec(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let out = self
            .vhrun()
            .args(["-v", "exec", "--catalog", &self.key(), "--"])
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "exec {args:?}: {}\n{}",
            text(&out.stderr),
            text(&out.stdout)
        );
        out
    }
    fn key(&self) -> String {
        let out = self
            .vhrun()
            .args(["hash"])
            .arg(self.robot_dir().join("conda.yaml"))
            .output()
            .unwrap();
        text(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
    /// `vhrun vars` without the per-call TEMP/TMP lines.
    fn vars(&self) -> String {
        let out = self
            .vhrun()
            .args(["vars", "-r"])
            .arg(self.robot_dir().join("robot.yaml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "vars: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("export TEMP=") && !l.starts_with("export TMP="))
            .map(|l| format!("{l}\n"))
            .collect()
    }
    fn index_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.vhrun_home().join("index"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
    fn worksets(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(self.vhrun_home().join("workset"))
            .map(|rd| rd.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn warm_runs_use_the_index_through_the_stat_link() {
    let fx = Fx::new();
    let first = text(&fx.exec(&["true"], &[]).stderr);
    assert!(first.contains("catalog decoded (index written)"), "{first}");
    let entries = fx.index_entries();
    // The tree by content, its summary and the stat link to the tree, both
    // keyed by the catalog file's stat.
    assert_eq!(entries.len(), 3, "index, summary, stat link: {entries:?}");
    assert!(
        entries[1].starts_with("s-") && entries[1].ends_with(".sum2"),
        "{entries:?}"
    );
    let link = fx.vhrun_home().join("index").join(&entries[2]);
    assert!(entries[2].starts_with("s-"), "{entries:?}");
    assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from(&entries[0]));

    let space_cat = fx.exec(
        &[
            "sh",
            "-c",
            "cat \"$(dirname \"$(dirname \"$(command -v python3)\")\")/lib/data.txt\"",
        ],
        &[],
    );
    assert_eq!(text(&space_cat.stdout), "served through the tree\n");
    let warm = text(&space_cat.stderr);
    assert!(
        warm.contains("catalog loaded from index") && warm.contains("/s-"),
        "{warm}"
    );
    assert!(
        !warm.contains("catalog decoded"),
        "no JSON decode on the warm path: {warm}"
    );
    assert_eq!(fx.index_entries(), entries, "a warm run writes no index");

    // The catalog replaced by a new file (what rcc and vhrun do): the stat
    // link no longer matches, the index is found by content again.
    let cat = fx
        .root()
        .join("rh/hololib/catalog")
        .join(format!("{}v12.linux_amd64", fx.key()));
    let bytes = fs::read(&cat).unwrap();
    let tmp = cat.with_extension("tmp");
    fs::write(&tmp, &bytes).unwrap();
    fs::rename(&tmp, &cat).unwrap();
    let again = text(&fx.exec(&["true"], &[]).stderr);
    assert!(again.contains("catalog loaded from index"), "{again}");
    assert!(!again.contains("/s-"), "stale stat link not used: {again}");
    assert!(
        !again.contains("catalog decoded"),
        "same bytes, same index: {again}"
    );
}

#[test]
fn vars_are_the_same_from_the_index_and_from_the_json() {
    let fx = Fx::new();
    let cold = fx.vars();
    assert!(fx.index_entries().len() == 3, "vars writes the index too");
    let warm = fx.vars();
    assert_eq!(cold, warm);
    fs::remove_dir_all(fx.vhrun_home().join("index")).unwrap();
    assert_eq!(fx.vars(), cold);
    // The space facts read from the tree: python found (a symlink recorded
    // as a file counts), pyvenv.cfg seen, bytecode cache keyed by the
    // catalog's Sipit.
    assert!(cold.contains("PYTHON_EXE="), "{cold}");
    assert!(cold.contains("/bin/python3"), "{cold}");
    let prefix = cold
        .lines()
        .find(|l| l.contains("PYTHONPYCACHEPREFIX="))
        .unwrap_or_else(|| panic!("{cold}"));
    let version = prefix
        .trim_end_matches(['"', '\''])
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(version.len(), 16, "{prefix}");
    assert!(version.chars().all(|c| c.is_ascii_hexdigit()), "{prefix}");
}

#[test]
fn working_sets_are_per_command_and_not_rewritten_when_unchanged() {
    let fx = Fx::new();
    fx.exec(&["true"], &[]);
    fx.exec(
        &[
            "sh",
            "-c",
            "ls \"$(dirname \"$(command -v python3)\")\" >/dev/null",
        ],
        &[],
    );
    let sets = fx.worksets();
    assert_eq!(sets.len(), 2, "one set per command line: {sets:?}");
    let before: Vec<_> = sets
        .iter()
        .map(|p| fs::metadata(p).unwrap().ino())
        .collect();
    fx.exec(&["true"], &[]);
    let out = text(
        &fx.exec(
            &[
                "sh",
                "-c",
                "ls \"$(dirname \"$(command -v python3)\")\" >/dev/null",
            ],
            &[],
        )
        .stderr,
    );
    assert!(
        out.contains("working set replayed"),
        "the second run replays its set: {out}"
    );
    let after: Vec<_> = fx
        .worksets()
        .iter()
        .map(|p| fs::metadata(p).unwrap().ino())
        .collect();
    assert_eq!(
        before, after,
        "nothing new touched: the sets are not rewritten"
    );
}

#[test]
fn hidden_switches_turn_passthrough_and_prefetch_off() {
    let fx = Fx::new();
    fx.exec(&["cat", "/dev/null"], &[]);
    let off = text(
        &fx.exec(
            &["cat", "/dev/null"],
            &[("VHRUN_PASSTHROUGH", "off"), ("VHRUN_PREFETCH", "off")],
        )
        .stderr,
    );
    assert!(off.contains("passthrough turned off"), "{off}");
    assert!(
        !off.contains("replayed") && !off.contains("fuse.prefetch"),
        "{off}"
    );
    let sync = text(
        &fx.exec(&["cat", "/dev/null"], &[("VHRUN_PREFETCH", "sync")])
            .stderr,
    );
    assert!(
        sync.contains("fuse.prefetch"),
        "replayed before the task: {sync}"
    );
    let on = text(&fx.exec(&["cat", "/dev/null"], &[]).stderr);
    assert!(!on.contains("passthrough turned off"), "{on}");
    assert!(
        on.contains("working set replayed"),
        "replayed alongside the task: {on}"
    );
}
