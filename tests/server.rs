//! The warm server: runs of one environment share one FUSE mount kept in
//! a namespace of its own, so the second run finds the kernel's caches
//! warm; it never shows on the host, ends after its idle time, and a run
//! survives its absence (a new one starts) but not its death mid-run.
//!
//! These tests need root (CI is root); the rootless one drops to uid 4321
//! with setpriv.

mod common;

use common::{chown_tree, stderr, wait_until, DevFuseOpen, FixtureRobot};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

const TASKS: &str =
    "tasks:\n  Read:\n    shell: sh -c \"cat $CONDA_PREFIX/identity.yaml | head -c 8; echo\"\n";

const UNPRIVILEGED: u32 = 4321;

/// /dev/fuse's mode is machine-wide: the rootless test changes it.
static DEV_FUSE: Mutex<()> = Mutex::new(());

/// A run of the robot's task with `--stats-json`: its output and stats.
fn run(fx: &FixtureRobot, env: &[(&str, &str)], name: &str) -> (Output, serde_json::Value) {
    let json = fx.tmp.path().join(format!("{name}.json"));
    let mut c = fx.vhrun();
    c.args(["run", "-r"])
        .arg(fx.robot_yaml())
        .arg("--stats-json")
        .arg(&json);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let stats = fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    (out, stats)
}

/// Warm servers serving `vhrun_home`.
fn server_pids(vhrun_home: &Path) -> Vec<u32> {
    common::vhrun_processes(vhrun_home, "__serve")
}

/// How long `wait_until` waits for a server or task to get somewhere.
const WAIT: Duration = Duration::from_secs(15);

fn alive(pid: u32) -> bool {
    // A zombie has no cmdline.
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

fn sockets(vhrun_home: &Path) -> Vec<PathBuf> {
    fs::read_dir(vhrun_home.join("servers"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default()
}

/// A robot whose task waits for `$GATE/go` (after touching
/// `$GATE/started`), then prints the first 8 bytes of identity.yaml.
const WAIT_TASKS: &str = "tasks:\n  Wait:\n    shell: sh -c \"touch $GATE/started; while [ ! -e $GATE/go ]; do sleep 0.02; done; head -c 8 $CONDA_PREFIX/identity.yaml\"\n";

/// A run of the WAIT_TASKS robot in the background, its server kept for
/// `idle` seconds.
fn start_waiting_run(
    fx: &FixtureRobot,
    gate: &Path,
    idle: &str,
    env: &[(&str, &str)],
) -> std::process::Child {
    fs::create_dir_all(gate).unwrap();
    let mut c = fx.vhrun();
    c.args(["run", "-r"])
        .arg(fx.robot_yaml())
        .env("GATE", gate)
        .env("VHRUN_SERVER_IDLE", idle)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
}

#[test]
fn the_second_run_finds_the_tree_warm_and_the_host_sees_no_mount() {
    let fx = FixtureRobot::new(TASKS);
    let before = common::host_mounts();
    let idle = [("VHRUN_SERVER_IDLE", "60")];

    let (first, s1) = run(&fx, &idle, "first");
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(String::from_utf8_lossy(&first.stdout), "channels\n");
    let pid = s1["server"]["pid"]
        .as_u64()
        .expect("served by a warm server") as u32;
    assert_eq!(s1["server"]["runs_before"], 0, "{s1}");
    assert!(s1["fuse"]["lookup"].as_u64().unwrap() > 0, "{s1}");

    // The server lives on, with the tree mounted in its own namespace only.
    assert_eq!(server_pids(&fx.vhrun_home), vec![pid]);
    assert_eq!(
        common::host_mounts(),
        before,
        "a mount appeared on the host"
    );
    let its = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert!(its.contains(" fuse.vhrun "), "{its}");
    // It keeps no directory of the caller busy, and none of its fds.
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    for fd in 0..3 {
        let target = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert!(
            !target.to_string_lossy().starts_with("pipe:"),
            "fd {fd} of the server is a pipe of its starter: {}",
            target.display()
        );
    }

    // The second run: no lookup reaches the server, the kernel has them all.
    let (second, s2) = run(&fx, &idle, "second");
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(first.stdout, second.stdout);
    assert_eq!(s2["server"]["pid"].as_u64(), Some(pid as u64), "{s2}");
    assert_eq!(s2["server"]["runs_before"], 1, "{s2}");
    assert_eq!(s2["fuse"]["lookup"], 0, "{s2}");
    assert_eq!(s2["fuse"]["readdirplus"], 0, "{s2}");

    // gc sees the server's catalog in use and spares its blobs.
    let cached = || {
        let mut n = 0;
        let mut stack = vec![fx.vhrun_home.join("blobs")];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                } else {
                    n += 1;
                }
            }
        }
        n
    };
    assert!(cached() > 0);
    let gc = fx.vhrun().args(["gc", "--days", "0"]).output().unwrap();
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(cached() > 0, "gc removed the live server's blobs");

    // `vhrun servers` lists it; `--stop` makes it unmount, remove its
    // socket and directory, and go.
    let listed = fx.vhrun().args(["servers", "--json"]).output().unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(
        listed[0]["hello"]["pid"].as_u64(),
        Some(pid as u64),
        "{listed}"
    );
    assert_eq!(
        listed[0]["hello"]["served"], 2,
        "listing is not a run: {listed}"
    );
    let stop = fx.vhrun().args(["servers", "--stop"]).output().unwrap();
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(
        !alive(pid),
        "servers --stop returned before the server exited"
    );
    assert!(sockets(&fx.vhrun_home).is_empty());
    let dirs: Vec<_> = fs::read_dir(fx.vhrun_home.join("servers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.path())
        .collect();
    assert!(dirs.is_empty(), "server directories left: {dirs:?}");
    assert_eq!(common::host_mounts(), before);
    // Its log goes with gc; its lock file stays.
    let logs = || {
        fs::read_dir(fx.vhrun_home.join("servers"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .count()
    };
    assert_eq!(logs(), 1);
    let gc = fx.vhrun().args(["gc", "--days", "0"]).output().unwrap();
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert_eq!(logs(), 0);

    // Switched off: the tree is mounted for the run, no server starts.
    let (third, s3) = run(&fx, &[("VHRUN_SERVER", "off")], "third");
    assert!(third.status.success(), "{}", stderr(&third));
    assert_eq!(s3["server"], serde_json::Value::Null, "{s3}");
    assert!(server_pids(&fx.vhrun_home).is_empty());
}

#[test]
fn the_server_exits_after_its_idle_time() {
    let fx = FixtureRobot::new(TASKS);
    let (out, stats) = run(&fx, &[("VHRUN_SERVER_IDLE", "0.3")], "idle");
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = stats["server"]["pid"].as_u64().unwrap() as u32;
    wait_until("the idle server exits", WAIT, || !alive(pid));
    assert!(sockets(&fx.vhrun_home).is_empty());
    // The next run starts a new one.
    let (again, stats) = run(&fx, &[("VHRUN_SERVER_IDLE", "0.3")], "again");
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(stats["server"]["runs_before"], 0, "{stats}");
    assert_ne!(stats["server"]["pid"].as_u64(), Some(pid as u64));
}

/// Without a keeper (`VHRUN_TAKEOVER=off`; tests/takeover.rs has the
/// keeper's side), a killed server ends its runs, loudly.
#[test]
fn a_killed_server_without_a_keeper_fails_the_run_in_flight_loudly_and_the_next_run_starts_another()
{
    let fx = FixtureRobot::new(WAIT_TASKS);
    let gate = fx.tmp.path().join("gate");
    let child = start_waiting_run(&fx, &gate, "60", &[("VHRUN_TAKEOVER", "off")]);
    wait_until("the task starts", WAIT, || gate.join("started").exists());
    let pids = server_pids(&fx.vhrun_home);
    assert_eq!(pids.len(), 1, "{pids:?}");
    kill(pids[0], nix::sys::signal::Signal::SIGKILL);
    wait_until("the server is gone", WAIT, || !alive(pids[0]));
    fs::write(gate.join("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "the run read a vanished tree");
    let err = stderr(&out);
    assert!(err.contains("warm server") && err.contains("gone"), "{err}");

    fs::remove_file(gate.join("started")).unwrap();
    let (next, stats) = run(&fx, &[("GATE", gate.to_str().unwrap())], "next");
    assert!(next.status.success(), "{}", stderr(&next));
    assert_eq!(stats["server"]["runs_before"], 0, "{stats}");
    let new = server_pids(&fx.vhrun_home);
    assert_eq!(new.len(), 1);
    assert_ne!(new[0], pids[0]);
    kill(new[0], nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn concurrent_first_runs_start_one_server() {
    let fx = FixtureRobot::new(TASKS);
    let children: Vec<_> = (0..4)
        .map(|i| {
            let json = fx.tmp.path().join(format!("c{i}.json"));
            let mut c = fx.vhrun();
            c.args(["run", "-r"])
                .arg(fx.robot_yaml())
                .arg("--stats-json")
                .arg(&json)
                .env("VHRUN_SERVER_IDLE", "2")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            (c.spawn().unwrap(), json)
        })
        .collect();
    let mut pids = BTreeSet::new();
    let mut first_runs = 0;
    for (child, json) in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "channels\n");
        let stats: serde_json::Value = serde_json::from_slice(&fs::read(json).unwrap()).unwrap();
        pids.insert(stats["server"]["pid"].as_u64().unwrap());
        if stats["server"]["runs_before"] == 0 {
            first_runs += 1;
        }
    }
    assert_eq!(pids.len(), 1, "several servers: {pids:?}");
    assert_eq!(first_runs, 1);
}

#[test]
fn rootless_runs_share_a_rootless_server() {
    let _serial = DEV_FUSE.lock().unwrap_or_else(|p| p.into_inner());
    let fx = FixtureRobot::new(TASKS);
    // As root first: creates the space's mountpoint (as rcc's restore
    // would) and fills the blob cache; its own server is told to go.
    let (warm, s) = run(&fx, &[("VHRUN_SERVER_IDLE", "0")], "root");
    assert!(warm.status.success(), "{}", stderr(&warm));
    let root_server = s["server"]["pid"].as_u64().unwrap() as u32;
    wait_until("the root server exits", WAIT, || !alive(root_server));

    let bin = fx.tmp.path().join("bin/vhrun");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_vhrun"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(fx.tmp.path(), UNPRIVILEGED);
    fs::set_permissions(fx.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let _fuse = DevFuseOpen::new();
    common::require_tool("setpriv", "util-linux");
    let as_user = |name: &str| {
        let json = fx.tmp.path().join(format!("{name}.json"));
        let mut c = fx.cmd("setpriv");
        c.arg(format!("--reuid={UNPRIVILEGED}"))
            .arg(format!("--regid={UNPRIVILEGED}"))
            .arg("--clear-groups")
            .arg(&bin)
            .args(["run", "-r"])
            .arg(fx.robot_yaml())
            .arg("--stats-json")
            .arg(&json)
            .env("VHRUN_SERVER_IDLE", "30");
        let out = c.output().unwrap();
        let stats: serde_json::Value =
            serde_json::from_slice(&fs::read(&json).unwrap_or_default()).unwrap_or_default();
        (out, stats)
    };
    let (one, s1) = as_user("u1");
    assert!(one.status.success(), "{}", stderr(&one));
    assert_eq!(String::from_utf8_lossy(&one.stdout), "channels\n");
    let (two, s2) = as_user("u2");
    assert!(two.status.success(), "{}", stderr(&two));
    assert_eq!(s1["server"]["pid"], s2["server"]["pid"], "{s1} {s2}");
    assert_eq!(s2["server"]["runs_before"], 1, "{s2}");
    assert_eq!(s2["fuse"]["lookup"], 0, "{s2}");
    let pid = s2["server"]["pid"].as_u64().unwrap() as u32;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains(&UNPRIVILEGED.to_string()), "{uid_line}");
    // The server runs in a user namespace of its own.
    assert_ne!(
        fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        fs::read_link("/proc/self/ns/user").unwrap()
    );
    kill(pid, nix::sys::signal::Signal::SIGTERM);
    wait_until("the rootless server exits", WAIT, || !alive(pid));
}

#[test]
fn stopping_a_server_lets_the_run_in_flight_finish() {
    let fx = FixtureRobot::new(WAIT_TASKS);
    let gate = fx.tmp.path().join("gate");
    let child = start_waiting_run(&fx, &gate, "60", &[]);
    wait_until("the task starts", WAIT, || gate.join("started").exists());
    let pid = server_pids(&fx.vhrun_home)[0];
    let stopper = fx
        .vhrun()
        .args(["servers", "--stop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Draining: no new run gets it (its socket is gone), the old one lives,
    // and a run started now gets a new server at once.
    wait_until("the socket is withdrawn", WAIT, || {
        sockets(&fx.vhrun_home).is_empty()
    });
    assert!(alive(pid));
    let newcomer = start_waiting_run(&fx, &gate, "0", &[]);
    // Its socket appears while the first server still holds a run: the
    // key was let go when draining began.
    wait_until("a second server serves the newcomer", WAIT, || {
        sockets(&fx.vhrun_home).len() == 1 && server_pids(&fx.vhrun_home).len() == 2
    });
    assert!(alive(pid));
    fs::write(gate.join("go"), "").unwrap();
    for child in [child, newcomer] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "channels");
    }
    let stopped = stopper.wait_with_output().unwrap();
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    wait_until("the drained server exits", WAIT, || !alive(pid));
}

/// A cold tree decodes ahead what the same command looked up last time,
/// on the cores the task leaves idle: a task that only stats two files
/// finds their blobs decoded all the same, where its first run (nothing
/// recorded yet) decoded nothing. The task then idles for a second:
/// decoding ahead runs at nice 19 and stops when the run ends, so beside
/// the other tests of this file a task of a few milliseconds could end
/// before it was scheduled at all (seen once in CI).
#[test]
fn a_cold_tree_decodes_the_recorded_working_set_ahead() {
    let tasks = "tasks:\n  Stat:\n    shell: sh -c \"stat -c %s $CONDA_PREFIX/ssl/cacert.pem $CONDA_PREFIX/rcc_activate.sh; sleep 1\"\n";
    let fx = FixtureRobot::new(tasks);
    let env = [("VHRUN_IMAGE", "off")];
    let cached = || {
        walk_files(&fx.vhrun_home.join("blobs"))
            .into_iter()
            .filter(|p| !p.to_string_lossy().contains(".tmp"))
            .count()
    };
    let cold_server = || {
        let out = fx.vhrun().args(["servers", "--stop"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        wait_until("the server gone", Duration::from_secs(10), || {
            server_pids(&fx.vhrun_home).is_empty()
        });
        let _ = fs::remove_dir_all(fx.vhrun_home.join("blobs"));
    };
    let (first, _) = run(&fx, &env, "first");
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        String::from_utf8_lossy(&first.stdout).starts_with("265969\n"),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let before = cached();
    cold_server();
    let (second, _) = run(&fx, &env, "second");
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(first.stdout, second.stdout);
    assert!(
        cached() >= before + 2,
        "decoded ahead: {} cache files, {before} after the first run",
        cached()
    );
    // Off with the rest of the prefetch.
    cold_server();
    let (third, _) = run(
        &fx,
        &[("VHRUN_IMAGE", "off"), ("VHRUN_PREFETCH", "off")],
        "third",
    );
    assert!(third.status.success(), "{}", stderr(&third));
    assert_eq!(cached(), before);
}

/// Files a task reads without looking each up by name (a directory read
/// gave the kernel their entries) are in the working set too, and a cold
/// tree decodes them ahead: here the second run reads nothing itself (the
/// same command, its marker gone), and their blobs are decoded anyway.
#[test]
fn files_read_after_a_directory_listing_are_decoded_ahead() {
    // Without the marker the task waits instead of reading: decoding ahead
    // stops when the run ends.
    let tasks = "tasks:\n  Read:\n    shell: sh -c \"if test -e reading; then cat $CONDA_PREFIX/ssl/* >/dev/null; else sleep 1; fi; ls $CONDA_PREFIX/ssl\"\n";
    let fx = FixtureRobot::new(tasks);
    let env = [("VHRUN_IMAGE", "off")];
    fs::write(fx.dir.join("reading"), "").unwrap();
    let (first, _) = run(&fx, &env, "reads");
    assert!(first.status.success(), "{}", stderr(&first));
    let saved = fs::read_dir(fx.vhrun_home.join("workset"))
        .unwrap()
        .flatten()
        .map(|e| fs::read(e.path()).unwrap())
        .collect::<Vec<_>>()
        .concat();
    assert!(
        saved
            .split(|&b| b == 0)
            .any(|r| r.starts_with(b"C") && r.ends_with(b"ssl/cacert.pem")),
        "no content record: {}",
        String::from_utf8_lossy(&saved)
    );
    let out = fx.vhrun().args(["servers", "--stop"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the server gone", Duration::from_secs(10), || {
        server_pids(&fx.vhrun_home).is_empty()
    });
    fs::remove_dir_all(fx.vhrun_home.join("blobs")).unwrap();
    fs::remove_file(fx.dir.join("reading")).unwrap();
    let (second, _) = run(&fx, &env, "lists");
    assert!(second.status.success(), "{}", stderr(&second));
    assert_eq!(first.stdout, second.stdout);
    let cached = walk_files(&fx.vhrun_home.join("blobs"));
    assert!(
        cached
            .iter()
            .any(|p| fs::metadata(p).unwrap().len() == 265969),
        "cacert.pem not decoded ahead: {cached:?}"
    );
}

/// A run that mounts its own tree decodes its working set ahead in the
/// same process as the tree's server threads, through a cache of its own,
/// and both may fill the same entry at once; the task reads right every
/// time (the bench's cold per-run rows once failed with EEXIST and EIO
/// there; blobcache's `two_caches_of_one_process_fill_the_same_entry`
/// forces that race).
#[test]
fn a_tree_of_its_own_decodes_ahead_beside_its_server_threads() {
    let tasks = "tasks:\n  Read:\n    shell: sh -c \"cat $CONDA_PREFIX/ssl/cacert.pem $CONDA_PREFIX/rcc_activate.sh | wc -c\"\n";
    let fx = FixtureRobot::new(tasks);
    let env = [("VHRUN_IMAGE", "off"), ("VHRUN_SERVER", "off")];
    let (first, _) = run(&fx, &env, "record");
    assert!(first.status.success(), "{}", stderr(&first));
    for round in 0..5 {
        let _ = fs::remove_dir_all(fx.vhrun_home.join("blobs"));
        let (out, _) = run(&fx, &env, &format!("cold-{round}"));
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        assert_eq!(out.stdout, first.stdout, "round {round}");
    }
}

/// A cold run decodes its working set ahead in its own process while its
/// warm server decodes what the task opens: each blob is decoded once, by
/// one or the other (they used to decode the biggest ones side by side),
/// no open waits for a lock a forked process inherited, and no lock or
/// ahead file is left. Checked in the `blob.decode` spans both write at
/// debug level.
#[test]
fn a_cold_run_and_its_server_decode_each_blob_once() {
    let tasks = "tasks:\n  t:\n    shell: \"true\"\n";
    let fx = FixtureRobot::without_import(tasks);
    // 24 bytes, as an rcc space name: the catalog's identity.
    let dir = fx.tmp.path().join("envs").join("cold_decode_env_________");
    fs::create_dir_all(&dir).unwrap();
    let mut x = 7u32;
    for i in 0..4 {
        // Compressible but not trivially: decoding takes a while.
        let big: Vec<u8> = (0..6_000_000u32)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                b"abcdefghijklmnop"[(x >> 28) as usize]
            })
            .collect();
        fs::write(dir.join(format!("big{i}.bin")), big).unwrap();
    }
    let lift = fx
        .vhrun()
        .arg("lift")
        .arg(&dir)
        .arg("--blueprint")
        .arg(fx.dir.join("conda.yaml"))
        .output()
        .unwrap();
    assert!(lift.status.success(), "{}", stderr(&lift));
    let read = |verbose: bool| {
        let mut c = fx.vhrun();
        if verbose {
            c.arg("-vv").env("VHRUN_LOG", "vhrun=debug");
        }
        let out = c
            .args(["exec", "-r"])
            .arg(fx.robot_yaml())
            .args(["--", "sh", "-c", "cat $CONDA_PREFIX/big*.bin | wc -c"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "24000000");
        out
    };
    read(false); // records the working set
    let out = fx.vhrun().args(["servers", "--stop"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the server gone", Duration::from_secs(10), || {
        server_pids(&fx.vhrun_home).is_empty()
    });
    fs::remove_dir_all(fx.vhrun_home.join("blobs")).unwrap();
    let _ = fs::remove_dir_all(fx.vhrun_home.join("servers"));
    let client = String::from_utf8_lossy(&read(true).stderr).into_owned();
    let server: String = fs::read_dir(fx.vhrun_home.join("servers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect();
    let decoded = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| l.split("blob.decode{digest=\"").nth(1))
            .map(|rest| rest[..12].to_string())
            .collect()
    };
    let (ahead, served) = (decoded(&client), decoded(&server));
    assert!(
        ahead.len() + served.len() >= 4,
        "ahead {ahead:?}, server {served:?}\n{client}\n{server}"
    );
    for d in &served {
        // Decoding ahead may have started it, then given way.
        let gave_way = client
            .lines()
            .any(|l| l.contains("left to a task") && l.contains(d.as_str()));
        assert!(
            !ahead.contains(d) || gave_way,
            "{d} decoded by both: ahead {ahead:?}, server {served:?}"
        );
    }
    assert!(!server.contains("waited"), "{server}");
    let left: Vec<_> = walk_files(&fx.vhrun_home.join("blobs"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
