//! What vhrun prints around a task: `--stats` / `--stats-json` (what a
//! run cost, checked against the fixture catalog and what the task did),
//! and the output conventions CI relies on: the task's stdout untouched,
//! logs on stderr, no colour codes off a terminal or with NO_COLOR, `-q`,
//! `-v`, `VHRUN_LOG`.
//!
//! Runs over the fixture environment (simple_linux.zip) with shell tasks.
//! Needs root (FUSE mounts, namespaces); CI runs as root.

mod common;

use common::{stderr, stdout, FixtureRobot};
use serde_json::Value;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Output, Stdio};

const KEY: &str = "c34ed96c2d8a459av12.linux_amd64";

/// `Work` reads one file of the environment, writes a 1000-byte file and
/// a directory into it and deletes another file; `Fail` exits 4 after
/// writing; `Talk` prints a line on each stream.
const TASKS: &str = r#"tasks:
  Work:
    shell: sh -c 'wc -c < "$CONDA_PREFIX/identity.yaml" > "$ROBOT_ARTIFACTS/size" && head -c 1000 /dev/zero > "$CONDA_PREFIX/new.bin" && mkdir "$CONDA_PREFIX/newdir" && rm "$CONDA_PREFIX/golden-ee.yaml" && echo "task output"'
  Fail:
    shell: sh -c 'head -c 1000 /dev/zero > "$CONDA_PREFIX/new.bin"; exit 4'
  Talk:
    shell: sh -c 'echo "out line"; echo "err line" >&2'
"#;

fn run(fx: &FixtureRobot, args: &[&str]) -> Output {
    fx.vhrun().arg("run").args(args).output().unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// (regular files, bytes) of the catalog, counted in a restored copy.
fn restored_totals(fx: &FixtureRobot) -> (u64, u64) {
    let out = fx.vhrun().args(["catalogs", "--json"]).output().unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let identity = rows[0]["identity"].as_str().unwrap();
    let target = fx.tmp.path().join("restored").join(identity);
    let out = fx
        .vhrun()
        .args(["restore", "--no-meta", "--catalog", KEY])
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (mut files, mut bytes) = (0, 0);
    let mut stack = vec![target];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                files += 1;
                bytes += m.len();
            }
        }
    }
    (files, bytes)
}

#[test]
fn stats_report_what_the_run_cost() {
    let fx = FixtureRobot::new(TASKS);
    let (files, bytes) = restored_totals(&fx);
    let json_path = fx.tmp.path().join("stats.json");
    let out = run(
        &fx,
        &[
            "-t",
            "Work",
            "--stats",
            "--stats-json",
            json_path.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "task output\n");
    let err = stderr(&out);
    assert!(
        err.starts_with(&format!("vhrun stats: {KEY} (exit 0)\n")),
        "{err}"
    );
    for label in ["time", "opened", "blobs", "overlay", "fuse"] {
        assert!(
            err.contains(&format!("\n  {label} ")),
            "no {label} line: {err}"
        );
    }

    let s = json(&json_path);
    assert_eq!(s["schema"], 1);
    assert_eq!(s["catalog"], KEY);
    assert!(s["environment"]
        .as_str()
        .unwrap()
        .starts_with("/home/user/.robocorp/holotree/"));
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["files"]["total"], files);
    assert_eq!(s["bytes"]["total"], bytes);
    // The task opened one file of the environment: identity.yaml.
    let size: u64 = fs::read_to_string(fx.dir.join("output/size"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(s["files"]["opened"], 1, "{s:#}");
    assert_eq!(s["bytes"]["opened"], size, "{s:#}");
    // A fresh VHRUN_HOME: its blob was decompressed, not found in the cache.
    assert_eq!(s["blobs"]["decompressed"], 1, "{s:#}");
    assert_eq!(s["blobs"]["from_cache"], 0, "{s:#}");
    assert_eq!(s["blobs"]["cache_bytes_written"], size, "{s:#}");
    assert_eq!(s["blobs"]["failures"], 0);
    // What the task wrote: the overlay's upper directory.
    let o = &s["overlay"];
    assert_eq!(
        (&o["files"], &o["dirs"], &o["whiteouts"], &o["bytes"]),
        (
            &Value::from(1),
            &Value::from(1),
            &Value::from(1),
            &Value::from(1000)
        ),
        "{s:#}"
    );
    assert!(o["disk_bytes"].as_u64().unwrap() >= 1000);
    assert_eq!(o["kept"], Value::Null);
    let f = &s["fuse"];
    assert!(["passthrough", "served"].contains(&f["read_mode"].as_str().unwrap()));
    assert!(f["open"].as_u64().unwrap() >= 1 && f["lookup"].as_u64().unwrap() >= 1);
    let kinds = [
        "lookup",
        "getattr",
        "readlink",
        "open",
        "opendir",
        "readdir",
        "readdirplus",
        "read",
        "release",
        "flush",
        "statfs",
        "access",
        "rejected_writes",
    ];
    let sum: u64 = kinds.iter().map(|k| f[k].as_u64().unwrap()).sum();
    assert_eq!(f["requests"], sum);
    let t = &s["time_ms"];
    let (act, task, total) = (
        t["activation"].as_f64().unwrap(),
        t["task"].as_f64().unwrap(),
        t["total"].as_f64().unwrap(),
    );
    assert!(act > 0.0 && task > 0.0 && total >= act + task, "{t}");

    // Second run: the blob comes from the cache.
    let out = run(
        &fx,
        &["-t", "Work", "--stats-json", json_path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // --stats-json alone prints nothing beyond the task's output.
    assert_eq!(stderr(&out), "");
    let s = json(&json_path);
    assert_eq!(s["blobs"]["decompressed"], 0, "{s:#}");
    assert_eq!(s["blobs"]["from_cache"], 1, "{s:#}");
    assert_eq!(s["blobs"]["cache_bytes_written"], 0, "{s:#}");
}

#[test]
fn stats_of_a_failed_task_with_a_kept_overlay() {
    let fx = FixtureRobot::new(TASKS);
    let json_path = fx.tmp.path().join("stats.json");
    let kept = fx.tmp.path().join("kept");
    let out = fx
        .vhrun()
        .args(["exec", "-r", "robot.yaml", "--keep-overlay"])
        .arg(&kept)
        .arg("--stats-json")
        .arg(&json_path)
        .args(["--", "sh", "-c", "echo x > \"$CONDA_PREFIX/w\"; exit 4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let s = json(&json_path);
    assert_eq!(s["exit_code"], 4);
    assert_eq!(s["overlay"]["kept"], kept.to_str().unwrap());
    assert_eq!(s["overlay"]["files"], 1);
    assert_eq!(s["overlay"]["bytes"], 2);
    assert_eq!(fs::read_to_string(kept.join("w")).unwrap(), "x\n");
    assert_eq!(s["files"]["opened"], 0, "{s:#}");

    // A stats file that cannot be written is an error line; the task's
    // exit code stays what vhrun exits with.
    let out = run(
        &fx,
        &["-t", "Fail", "--stats-json", "/nonexistent/dir/s.json"],
    );
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(
        err.contains("--stats-json") && err.contains("/nonexistent/dir"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn verbose_run_keeps_stdout_to_the_task_and_stderr_plain() {
    let fx = FixtureRobot::new(TASKS);
    // Pipes, not a terminal: whatever TERM says, no escapes.
    let out = fx
        .vhrun()
        .args(["-v", "run", "-t", "Talk"])
        .env("TERM", "xterm-256color")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out line\n");
    let err = stderr(&out);
    assert!(err.lines().any(|l| l == "err line"), "{err}");
    assert!(err.contains("INFO") && err.contains("activation"), "{err}");
    assert!(!out.stderr.contains(&0x1b), "escape codes in: {err}");

    // -q: nothing but the task's own stderr.
    let out = fx
        .vhrun()
        .args(["-q", "run", "-t", "Talk"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "out line\n");
    assert_eq!(stderr(&out), "err line\n");
    // Without flags: no logs either for a clean run.
    let out = run(&fx, &["-t", "Talk"]);
    assert_eq!(stderr(&out), "err line\n");
    // VHRUN_LOG takes a tracing filter.
    let out = fx
        .vhrun()
        .args(["run", "-t", "Talk"])
        .env("VHRUN_LOG", "vhrun=debug")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "out line\n");
    assert!(stderr(&out).contains("DEBUG"), "{}", stderr(&out));
}

/// stderr on a pseudo-terminal: colour there, unless NO_COLOR or TERM=dumb.
fn stderr_on_a_terminal(fx: &FixtureRobot, env: &[(&str, &str)]) -> (Output, Vec<u8>) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut master = fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        // EIO once the last writer (the child) has closed the terminal.
        let _ = master.read_to_end(&mut buf);
        buf
    });
    let mut c = fx.vhrun();
    c.args(["-v", "run", "-t", "Talk"])
        .env("TERM", "xterm-256color")
        .stderr(Stdio::from(pty.slave));
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    drop(c);
    (out, reader.join().unwrap())
}

#[test]
fn a_terminal_gets_colour_unless_no_color_or_a_dumb_terminal() {
    let fx = FixtureRobot::new(TASKS);
    let (out, tty) = stderr_on_a_terminal(&fx, &[]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "out line\n");
    let text = String::from_utf8_lossy(&tty);
    assert!(
        text.contains("err line") && text.contains("activation"),
        "{text}"
    );
    assert!(tty.contains(&0x1b), "no colour on a terminal: {text}");
    for env in [[("NO_COLOR", "1")], [("TERM", "dumb")]] {
        let (out, tty) = stderr_on_a_terminal(&fx, &env);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&tty);
        assert!(text.contains("activation"), "{env:?}: {text}");
        assert!(!tty.contains(&0x1b), "{env:?}: escape codes in {text}");
    }
}

/// vhrun starts without std's runtime (src/main.rs) and ignores SIGPIPE
/// itself: output to a pipe nobody reads is an error it survives, never a
/// death by signal or a panic.
#[test]
fn vhrun_writing_to_a_dead_pipe_is_not_killed_by_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    for args in [&["--help"][..], &["--version"], &["catalogs", "--help"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vhrun"))
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), None, "{args:?}: {out:?}");
        assert_ne!(
            out.status.code(),
            Some(101),
            "{args:?} panicked: {}",
            stderr(&out)
        );
    }
}
