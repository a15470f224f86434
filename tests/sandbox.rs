//! The sandbox end to end through the CLI (`vhrun exec --lower-dir DIR
//! --env-path PATH -- CMD`): real namespaces, overlayfs, PID namespace and
//! signals. The sandbox must start in a single-threaded process, so it is
//! never called from this (multi-threaded) harness directly.
//!
//! These tests need root (CI is root); the rootless ones drop to uid 4321
//! with `setpriv` and need unprivileged user namespaces.

mod common;
use common::{chown_tree, stderr, stdout};

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const UNPRIVILEGED: u32 = 4321;

/// A unique number per call, for markers in process names.
fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}{:03}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

struct Fx {
    dir: tempfile::TempDir,
    uid: Option<u32>,
}

impl Fx {
    fn new() -> Fx {
        common::require_root();
        let dir = tempfile::Builder::new()
            .prefix("vhrun-sbx")
            .tempdir()
            .unwrap();
        let fx = Fx { dir, uid: None };
        let lower = fx.lower();
        fs::create_dir_all(lower.join("bin")).unwrap();
        fs::create_dir_all(lower.join("lib/sub")).unwrap();
        fs::write(lower.join("lib/a.txt"), "alpha\n").unwrap();
        fs::write(lower.join("lib/sub/b.txt"), "beta\n").unwrap();
        fs::write(lower.join("doomed.txt"), "to be deleted\n").unwrap();
        fs::write(lower.join("bin/tool"), "#!/bin/sh\necho tool ran\n").unwrap();
        fs::set_permissions(lower.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(fx.home()).unwrap();
        fs::create_dir_all(fx.root().join("ro")).unwrap();
        fx
    }

    /// The same, owned by an unprivileged user who runs vhrun from a copy
    /// of the binary it can execute.
    fn unprivileged() -> Fx {
        let mut fx = Fx::new();
        fs::copy(env!("CARGO_BIN_EXE_vhrun"), fx.root().join("vhrun")).unwrap();
        fs::set_permissions(fx.root().join("vhrun"), fs::Permissions::from_mode(0o755)).unwrap();
        chown_tree(fx.root(), UNPRIVILEGED);
        fs::set_permissions(fx.root(), fs::Permissions::from_mode(0o755)).unwrap();
        fx.uid = Some(UNPRIVILEGED);
        fx
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn lower(&self) -> PathBuf {
        self.root().join("lower")
    }
    fn env(&self) -> PathBuf {
        self.root().join("robocorp/holotree/space")
    }
    fn home(&self) -> PathBuf {
        self.root().join("vhrun-home")
    }
    fn runs(&self) -> PathBuf {
        self.home().join("runs")
    }
    fn ready(&self) -> PathBuf {
        self.root().join("ready")
    }

    /// `vhrun exec --lower-dir ... --env-path ... [extra] -- sh -c script`
    fn cmd(&self, extra: &[&str], script: &str) -> Command {
        self.cmd_argv(extra, &["sh", "-c", script])
    }

    fn cmd_argv(&self, extra: &[&str], argv: &[&str]) -> Command {
        let mut c = match self.uid {
            None => Command::new(env!("CARGO_BIN_EXE_vhrun")),
            Some(uid) => {
                common::require_tool("setpriv", "util-linux");
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(self.root().join("vhrun"));
                c
            }
        };
        c.arg("exec")
            .arg("--lower-dir")
            .arg(self.lower())
            .arg("--env-path")
            .arg(self.env())
            .args(extra)
            .arg("--")
            .args(argv)
            .env("HOME", self.root())
            .env("ROBOCORP_HOME", self.root().join("robocorp"))
            .env("VHRUN_HOME", self.home())
            .env("VHRUN_IMAGE", "off")
            .env("ENV", self.env())
            .env("FX", self.root())
            .env_remove("VHRUN_LOG")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, extra: &[&str], script: &str) -> Output {
        let out = self.cmd(extra, script).output().unwrap();
        self.assert_clean();
        out
    }

    /// Nothing of the run is left: no mount mentioning the fixture, no run
    /// directory, an empty mountpoint.
    fn assert_clean(&self) {
        assert_eq!(
            mounts_under(self.root()),
            Vec::<String>::new(),
            "mounts left"
        );
        let left = common::leftover_runs(&self.runs());
        assert!(left.is_empty(), "run directories left: {left:?}");
        if let Ok(rd) = fs::read_dir(self.env()) {
            let left: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "host mountpoint not empty: {left:?}");
        }
    }

    fn wait_ready(&self, child: &mut Child) {
        let start = Instant::now();
        while !self.ready().exists() {
            if let Some(st) = child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).unwrap();
                }
                panic!("vhrun exited before the task was ready: {st}; {err}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "task never got ready"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A spawned vhrun, SIGKILLed if the test fails before waiting for it.
struct Running(Option<Child>);

impl Running {
    fn output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Running {
    /// Wait at most 20 s: a run that does not end is a failure, not a hang.
    fn finish(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "vhrun did not exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().unwrap()
    }
}

fn spawn(mut c: Command) -> Running {
    Running(Some(c.stderr(Stdio::piped()).spawn().unwrap()))
}

/// Lines of the host's mount table that mention `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().to_string();
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(String::from)
        .collect()
}

/// Pids of `sleep` processes whose arguments contain `marker` (vhrun's own
/// command line holds the task's script, marker included: not counted).
fn processes_with(marker: &str) -> Vec<i32> {
    common::processes()
        .into_iter()
        .filter(|(_, cmdline)| {
            let cmdline = String::from_utf8_lossy(cmdline).replace('\0', " ");
            cmdline.starts_with("sleep ") && cmdline.contains(marker)
        })
        .map(|(pid, _)| pid)
        .collect()
}

fn wait_gone(marker: &str) {
    let start = Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        if start.elapsed() > Duration::from_secs(5) {
            // Do not leak them into the rest of the suite.
            for p in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("processes of the run still alive: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// path -> (mode, contents or link target) of every entry below `dir`.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().to_string();
            let content = if m.is_file() {
                fs::read(&p).unwrap()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            out.insert(rel, (m.mode(), content));
            if m.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn cap_line(status: &str, name: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

// ---------------------------------------------------------------------

#[test]
fn exit_codes_are_the_tasks() {
    let fx = Fx::new();
    for (script, code) in [
        ("true", 0),
        ("exit 3", 3),
        ("kill -9 $$", 128 + 9),
        ("kill -TERM $$", 128 + 15),
    ] {
        let out = fx.run(&[], script);
        assert_eq!(out.status.code(), Some(code), "{script}: {}", stderr(&out));
    }
}

#[test]
fn task_runs_in_the_environment_with_a_fresh_pid_namespace() {
    let fx = Fx::new();
    let out = fx.run(
        &[],
        r#"cd "$ENV" && ./bin/tool && cat lib/a.txt && echo "pid=$$" && readlink /proc/self/ns/pid && ls /proc | grep -E '^[0-9]+$' | wc -l"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..3], &["tool ran", "alpha", "pid=2"], "{text}");
    // pid 1 is the reaper, the task is pid 2, in a PID namespace of its
    // own whose /proc shows only the run (reaper, sh, ls, grep, wc).
    assert_ne!(lines[3], host_pid_ns(), "{text}");
    let visible: usize = lines[4].trim().parse().unwrap();
    assert!(visible <= 5, "{text}");
}

fn host_pid_ns() -> String {
    fs::read_link("/proc/self/ns/pid")
        .unwrap()
        .to_string_lossy()
        .to_string()
}

#[test]
fn writes_land_in_the_overlay_and_vanish() {
    let fx = Fx::new();
    let before = snapshot(&fx.lower());
    let out = fx.run(
        &[],
        r#"set -e; cd "$ENV"
           echo changed > lib/a.txt; echo new > new.txt; rm doomed.txt; mkdir -p made/deep
           chmod 500 made; cat lib/a.txt new.txt; test ! -e doomed.txt; echo ok"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "changed\nnew\nok\n");
    assert_eq!(snapshot(&fx.lower()), before, "the lower directory changed");
    // A second run sees the pristine tree again.
    let out = fx.run(
        &[],
        r#"cd "$ENV"; cat lib/a.txt doomed.txt; test ! -e new.txt"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alpha\nto be deleted\n");
}

#[test]
fn keep_overlay_keeps_the_writes() {
    let fx = Fx::new();
    let keep = fx.root().join("kept");
    let before = snapshot(&fx.lower());
    let out = fx.run(
        &["--keep-overlay", keep.to_str().unwrap()],
        r#"cd "$ENV"; echo changed > lib/a.txt; echo new > new.txt; rm doomed.txt"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(keep.join("new.txt")).unwrap(), "new\n");
    assert_eq!(
        fs::read_to_string(keep.join("lib/a.txt")).unwrap(),
        "changed\n"
    );
    assert!(
        !keep.join("lib/sub").exists(),
        "untouched files were copied up"
    );
    let whiteout = fs::symlink_metadata(keep.join("doomed.txt")).unwrap();
    assert!(
        whiteout.file_type().is_char_device(),
        "deletion kept as a whiteout"
    );
    assert_eq!(snapshot(&fx.lower()), before);

    // A non-empty destination is refused before anything runs.
    let out = fx.run(&["--keep-overlay", keep.to_str().unwrap()], "touch $FX/ran");
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert!(!fx.root().join("ran").exists());
}

#[test]
fn no_mount_is_visible_on_the_host_during_or_after_the_run() {
    let fx = Fx::new();
    // The overlay's line would name its mountpoint and run directory, both
    // below the fixture: none may appear, during the run or after it.
    assert_eq!(mounts_under(fx.root()), Vec::<String>::new());
    let mut child = spawn(fx.cmd(
        &[],
        r#"grep -q " $ENV overlay " /proc/self/mounts && touch "$FX/ready"; while [ ! -e "$FX/go" ]; do sleep 0.02; done"#,
    ));
    fx.wait_ready(&mut child);
    assert_eq!(
        mounts_under(fx.root()),
        Vec::<String>::new(),
        "mounts visible during the run"
    );
    fs::write(fx.root().join("go"), "").unwrap();
    assert!(child.finish().success());
    fx.assert_clean();
}

#[test]
fn background_processes_die_with_the_task() {
    for share in [false, true] {
        let fx = Fx::new();
        let m = unique();
        let extra: &[&str] = if share { &["--share-pids"] } else { &[] };
        let out = fx.run(
            extra,
            &format!(
                "n=/dev/null; sleep 1000.{m}1 >$n 2>&1 & sleep 1000.{m}2 >$n 2>&1 & \
                 setsid sleep 1000.{m}3 >$n 2>&1 & (sleep 1000.{m}4 >$n 2>&1 &); \
                 sleep 0.2; echo started"
            ),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "started\n");
        wait_gone(&format!("1000.{m}"));
    }
}

#[test]
fn share_pids_runs_in_the_callers_pid_namespace() {
    let fx = Fx::new();
    let out = fx.run(&["--share-pids"], "readlink /proc/self/ns/pid");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), host_pid_ns());
    let out = fx.run(&["--share-pids"], "exit 42");
    assert_eq!(out.status.code(), Some(42));
}

#[test]
fn sigterm_is_forwarded_to_the_task() {
    let fx = Fx::new();
    // With threads running in vhrun, as FUSE workers will be.
    let mut child = spawn(fx.cmd(
        &["--busy-threads", "2"],
        r#"trap 'exit 7' TERM; touch "$FX/ready"; while :; do sleep 0.02; done"#,
    ));
    fx.wait_ready(&mut child);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(child.finish().code(), Some(7));
    fx.assert_clean();

    // A task without a handler dies of it: 128+15.
    let m = unique();
    let mut child = spawn(fx.cmd_argv(&[], &["sleep", &format!("1000.{m}")]));
    let start = Instant::now();
    while processes_with(&format!("1000.{m}")).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(child.finish().code(), Some(143));
    fx.assert_clean();
}

/// `cmd` with SIGINT and SIGQUIT back to their default disposition
/// (coreutils' `env --default-signal`). A shell started in the background
/// of a non-interactive script (a CI runner's, `nohup ... &`) ignores
/// them, every process below inherits that through exec, as vhrun's task
/// does and should, and a non-interactive `sh` cannot trap a signal it was
/// started with ignored.
fn with_default_sigint(cmd: Command) -> Command {
    let mut env = Command::new("env");
    env.arg("--default-signal=INT,QUIT");
    common::wrapped(env, &cmd)
}

#[test]
fn second_sigint_kills_the_whole_run() {
    let fx = Fx::new();
    let m = unique();
    let script = format!(
        r#"trap 'echo interrupted >> "$FX/log"' INT; sleep 1000.{m} & touch "$FX/ready"
           while :; do sleep 0.02; done"#
    );
    let mut child = spawn(with_default_sigint(fx.cmd(&[], &script)));
    fx.wait_ready(&mut child);
    signal(&child, nix::sys::signal::Signal::SIGINT);
    let start = Instant::now();
    while !fx.root().join("log").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "first SIGINT not forwarded"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the task traps SIGINT and goes on"
    );
    signal(&child, nix::sys::signal::Signal::SIGINT);
    assert_eq!(child.finish().code(), Some(128 + 9));
    wait_gone(&format!("1000.{m}"));
    fx.assert_clean();
}

#[test]
fn sigkill_of_vhrun_leaves_no_process_and_no_mount() {
    let fx = Fx::new();
    let m = unique();
    let script = format!(
        r#"sleep 1000.{m}1 & cd "$ENV"; echo x > written; touch "$FX/ready"; exec sleep 1000.{m}2"#
    );
    let mut child = spawn(fx.cmd(&[], &script));
    fx.wait_ready(&mut child);
    // `ready` is touched before the `exec sleep`: under load the second
    // sleep may not be there yet.
    common::wait_until("both sleeps", Duration::from_secs(10), || {
        processes_with(&format!("1000.{m}")).len() == 2
    });
    assert_eq!(fs::read_dir(fx.runs()).unwrap().count(), 1);
    child.kill().unwrap(); // SIGKILL
    child.finish();
    wait_gone(&format!("1000.{m}"));
    assert_eq!(mounts_under(fx.root()), Vec::<String>::new());
    // The crash left its run directory; the next run removes it.
    let stale: Vec<_> = fs::read_dir(fx.runs()).unwrap().flatten().collect();
    assert_eq!(stale.len(), 1);
    let out = fx.run(&[], "test ! -e \"$ENV/written\"");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn stale_run_directories_are_removed_unless_locked() {
    let fx = Fx::new();
    let stale = fx.runs().join("deadbeef-1");
    fs::create_dir_all(stale.join("upper/dir")).unwrap();
    fs::create_dir_all(stale.join("work/work")).unwrap();
    fs::create_dir_all(stale.join("lower")).unwrap();
    fs::write(stale.join("upper/dir/f"), "x").unwrap();
    fs::write(stale.join("lock"), "").unwrap();
    fs::set_permissions(stale.join("work/work"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(stale.join("upper/dir"), fs::Permissions::from_mode(0o500)).unwrap();
    let live = fx.runs().join("cafe-2");
    fs::create_dir_all(live.join("upper")).unwrap();
    let lock = fs::File::create(live.join("lock")).unwrap();
    lock.try_lock().unwrap();

    let out = fx.cmd(&[], "true").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stale.exists(), "stale run directory kept");
    assert!(
        live.join("upper").exists(),
        "a locked run directory was removed"
    );
    drop(lock);
    let out = fx.run(&[], "true");
    assert!(out.status.success());
    assert!(!live.exists());
}

#[test]
fn readonly_paths_and_other_runs_are_out_of_reach() {
    let fx = Fx::new();
    let ro = fx.root().join("ro");
    fs::create_dir_all(ro.join("w")).unwrap();
    fs::create_dir_all(fx.root().join("rw")).unwrap();
    // Another run, live (its lock is held): on the host, not for the task.
    let other = fx.runs().join("other-1");
    fs::create_dir_all(other.join("upper")).unwrap();
    fs::write(other.join("upper/secret"), "x").unwrap();
    let lock = fs::File::create(other.join("lock")).unwrap();
    lock.try_lock().unwrap();
    let out = fx.cmd(
        &[
            "--ro-path",
            ro.to_str().unwrap(),
            "--rw-path",
            ro.join("w").to_str().unwrap(),
            "--rw-path",
            fx.root().join("rw").to_str().unwrap(),
        ],
        // A writable path below a read-only one is mounted again; one that
        // nothing read-only contains is left as it is (no mount of its own).
        r#"touch "$FX/ro/x" 2>/dev/null && echo WROTE; ls -A "$VHRUN_HOME/runs" | wc -l
           touch "$FX/ro/w/y" && echo below-ok; touch "$FX/rw/z" && echo outside-ok
           awk -v a="$FX/ro/w" -v b="$FX/rw" '$5 == a {n++} $5 == b {m++} END {print n+0, m+0}' /proc/self/mountinfo"#,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "0\nbelow-ok\noutside-ok\n1 0\n");
    assert!(!ro.join("x").exists());
    assert!(ro.join("w/y").exists() && fx.root().join("rw/z").exists());
    assert!(other.join("upper/secret").exists());
    drop(lock);
}

#[test]
fn pre_commands_run_first_in_the_same_sandbox() {
    let fx = Fx::new();
    let out = fx.run(
        &[
            "--pre-sh",
            r#"echo pre1 > "$ENV/from-pre""#,
            "--pre-sh",
            "echo pre2",
        ],
        r#"cat "$ENV/from-pre""#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "pre2\npre1\n");
    let out = fx.run(&["--pre-sh", "exit 4"], r#"touch "$FX/task-ran""#);
    assert_eq!(out.status.code(), Some(4));
    assert!(!fx.root().join("task-ran").exists());
}

#[test]
fn unusable_commands_are_clear_errors() {
    let fx = Fx::new();
    let out = fx.cmd_argv(&[], &["no-such-command-xyz"]).output().unwrap();
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no-such-command-xyz"),
        "{}",
        stderr(&out)
    );
    fx.assert_clean();
    let out = fx.cmd_argv(&[], &["/nonexistent/prog"]).output().unwrap();
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/nonexistent/prog"),
        "{}",
        stderr(&out)
    );
    fx.assert_clean();
    let out = fx
        .cmd_argv(&[], &[fx.root().join("lower/lib/a.txt").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    fx.assert_clean();
}

#[test]
fn odd_characters_in_vhrun_home() {
    let fx = Fx::new();
    let home = fx.root().join("ho,me:x\\y");
    let out = fx
        .cmd(&[], r#"cat "$ENV/lib/a.txt""#)
        .env("VHRUN_HOME", &home)
        .env("VHRUN_IMAGE", "off")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "alpha\n");
    assert_eq!(
        common::leftover_runs(&home.join("runs")),
        Vec::<PathBuf>::new()
    );
    fx.assert_clean();
}

#[test]
fn root_keeps_its_capabilities() {
    let fx = Fx::new();
    let ours = fs::read_to_string("/proc/self/status").unwrap();
    let out = fx.run(&[], "cat /proc/self/status");
    assert!(out.status.success());
    let theirs = stdout(&out);
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        assert_eq!(cap_line(&theirs, set), cap_line(&ours, set), "{set}");
    }
}

#[test]
fn rootless_run() {
    let fx = Fx::unprivileged();
    let before = snapshot(&fx.lower());
    let m = unique();
    let ro = fx.root().join("ro");
    let script = format!(
        r#"id -u; id -g; cat "$ENV/lib/a.txt"
           echo changed > "$ENV/lib/a.txt"; echo new > "$ENV/new"; stat -c %u "$ENV/new"
           grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status
           touch "$FX/ro/x" 2>/dev/null && echo WROTE-RO
           ls -A "$VHRUN_HOME/runs" | wc -l
           unshare -Urm sh -c 'mount -o remount,bind,rw "$FX/ro" 2>/dev/null && echo REMOUNTED; umount "$FX/ro" 2>/dev/null && echo UNMOUNTED; touch "$FX/ro/y" 2>/dev/null && echo WROTE-RO2'
           sleep 1000.{m} &
           exit 5"#
    );
    let out = fx.run(&["--ro-path", ro.to_str().unwrap()], &script);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let uid = UNPRIVILEGED.to_string();
    assert_eq!(
        &lines[..4],
        &[uid.as_str(), uid.as_str(), "alpha", uid.as_str()],
        "{text}"
    );
    for l in &lines[4..9] {
        let (name, value) = l.split_once(':').unwrap();
        assert_eq!(value.trim(), "0000000000000000", "{name} not empty: {text}");
    }
    assert_eq!(&lines[9..], &["0"], "{text}");
    assert!(!ro.join("x").exists() && !ro.join("y").exists());
    assert_eq!(snapshot(&fx.lower()), before);
    wait_gone(&format!("1000.{m}"));
}

#[test]
fn rootless_share_pids_and_keep_overlay() {
    let fx = Fx::unprivileged();
    let keep = fx.root().join("kept");
    let out = fx.run(
        &["--share-pids", "--keep-overlay", keep.to_str().unwrap()],
        r#"echo new > "$ENV/new"; grep CapEff /proc/self/status"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "CapEff:\t0000000000000000\n");
    let kept = fs::metadata(keep.join("new")).unwrap();
    assert_eq!(kept.uid(), UNPRIVILEGED);
}

#[test]
fn concurrent_runs_of_one_environment_each_see_their_own_overlay() {
    let fx = Fx::new();
    let runs: Vec<Running> = (0..6)
        .map(|i| {
            let mut c = fx.cmd(
                &[],
                &format!(r#"echo {i} > "$ENV/me"; sleep 0.3; cat "$ENV/me""#),
            );
            c.stdout(Stdio::piped());
            spawn(c)
        })
        .collect();
    for (i, r) in runs.into_iter().enumerate() {
        let out = r.output();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), format!("{i}\n"));
    }
    fx.assert_clean();
}

/// SIGKILL vhrun, its reaper or the task at moments spread over the run's
/// start (a bounded version of the kill-anywhere suite).
#[test]
fn kills_at_any_moment_leave_nothing() {
    let fx = Fx::new();
    for i in 0..15u64 {
        let m = unique();
        let mut child = spawn(fx.cmd(
            &["--busy-threads", "2"],
            &format!(r#"sleep 1000.{m}1 & echo x > "$ENV/f"; sleep 1000.{m}2"#),
        ));
        std::thread::sleep(Duration::from_micros(i * 700));
        let children = |pid: u32| -> Vec<u32> {
            fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        };
        let mut victim = child.id();
        if i % 3 >= 1 {
            if let Some(&reaper) = children(victim).first() {
                victim = reaper;
                if i % 3 == 2 {
                    victim = children(reaper).first().copied().unwrap_or(reaper);
                }
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let status = child.finish();
        assert!(
            status.code() == Some(137) || status.code().is_none(),
            "round {i}: {status}"
        );
        wait_gone(&format!("1000.{m}"));
        assert_eq!(mounts_under(fx.root()), Vec::<String>::new(), "round {i}");
    }
    std::thread::sleep(Duration::from_millis(2100)); // past the .new-* grace
    let out = fx.run(&[], r#"test ! -e "$ENV/f""#);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The reaper is forked while other threads allocate: its post-fork code
/// must never need a lock one of them held (it would hang forever).
#[test]
fn forking_next_to_busy_threads_never_hangs() {
    let fx = Fx::new();
    for i in 0..40 {
        let mut child = spawn(fx.cmd(&["--busy-threads", "3"], "exit 9"));
        assert_eq!(child.finish().code(), Some(9), "run {i}");
    }
    fx.assert_clean();
}
