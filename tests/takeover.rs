//! A warm server that dies (SIGKILL at any moment) or is replaced by a
//! newer vhrun loses no run: its keeper hands the FUSE connection to a
//! successor, which answers what was waiting (`lower::server::keeper`).
//!
//! The task is a real Python process over the mounted environment: it
//! imports modules from it and reads its files in a loop, checking each
//! against the digest recorded when the environment was made, and says
//! the longest pause between two reads. Root (CI); one test drops to uid
//! 4321 with setpriv.
//!
//! `VHRUN_LONG_TESTS=1` (or `VHRUN_TAKEOVER_ROUNDS=N`) runs the kill loop
//! 100 (N) times instead of 8; it prints the figures of README's
//! reliability table.

mod common;

use common::{stderr, wait_until, DevFuseOpen, Rng};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const HOME: &str = "/home/user";
const UNPRIVILEGED: u32 = 4321;
/// Longer than any run here takes: a run past it hangs.
const HANG: Duration = Duration::from_secs(60);

/// /dev/fuse's mode is machine-wide: the rootless test changes it.
static DEV_FUSE: Mutex<()> = Mutex::new(());

/// The task: `loop.py GATE SECONDS` imports every module of the
/// environment afresh and reads every data file, again and again, checking
/// each against MANIFEST; it touches GATE/started first.
const LOOP_PY: &str = r#"
import hashlib, importlib.util, os, sys, time
sys.dont_write_bytecode = True
root = os.environ["CONDA_PREFIX"]
gate, seconds = sys.argv[1], float(sys.argv[2])
entries = [l.split(" ", 2) for l in open(os.path.join(root, "MANIFEST")).read().splitlines()]
open(os.path.join(gate, "started"), "w").close()
end = time.monotonic() + seconds
reads = imports = 0
worst = 0.0
last = time.monotonic()
while time.monotonic() < end:
    for kind, want, path in entries:
        full = os.path.join(root, path)
        if kind == "mod":
            spec = importlib.util.spec_from_file_location("m%d" % imports, full)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            got = mod.VALUE
            imports += 1
        else:
            got = hashlib.sha256(open(full, "rb").read()).hexdigest()
            reads += 1
        if got != want:
            print("WRONG", path, got, want, flush=True)
            sys.exit(3)
        now = time.monotonic()
        worst = max(worst, now - last)
        last = now
print("ok reads=%d imports=%d pause_ms=%.1f" % (reads, imports, worst * 1000))
"#;

/// `hold.py GATE`: holds files open (five of them mapped), waits for
/// GATE/go, then reads the held files, opens them again, and writes to
/// three (a copy-up into the overlay).
const HOLD_PY: &str = r#"
import hashlib, mmap, os, sys, time
root = os.environ["CONDA_PREFIX"]; gate = sys.argv[1]
entries = [l.split(" ", 2) for l in open(os.path.join(root, "MANIFEST")).read().splitlines()]
files = [(w, p) for k, w, p in entries if k == "bin"][:20]
held = [open(os.path.join(root, p), "rb") for _, p in files]
maps = [mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) for f in held[:5]]
open(os.path.join(gate, "started"), "w").close()
while not os.path.exists(os.path.join(gate, "go")):
    time.sleep(0.01)
sha = lambda b: hashlib.sha256(b).hexdigest()
bad = []
for (want, p), f in zip(files, held):
    if sha(f.read()) != want: bad.append("held " + p)
    if sha(open(os.path.join(root, p), "rb").read()) != want: bad.append("reopened " + p)
for (want, p), m in zip(files, maps):
    if sha(m[:]) != want: bad.append("mapped " + p)
for want, p in files[:3]:
    with open(os.path.join(root, p), "r+b") as w:
        w.seek(0, 2); w.write(b"!")
    b = open(os.path.join(root, p), "rb").read()
    if sha(b[:-1]) != want or b[-1:] != b"!": bad.append("copied up " + p)
print("bad", bad)
sys.exit(1 if bad else 0)
"#;

struct Lab {
    dir: tempfile::TempDir,
    key: String,
}

impl Lab {
    /// An environment of 10 packages, each with 4 modules and 8 data
    /// files, lifted into a fresh ROBOCORP_HOME.
    fn new() -> Lab {
        common::require_fuse();
        let dir = tempfile::Builder::new()
            .prefix("vhrun-takeover")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let env = dir
            .path()
            .join("env")
            .join("takeover".to_string() + &"x".repeat(16));
        let mut rng = Rng::new(17);
        let mut manifest = String::new();
        for p in 0..10 {
            let pkg = env.join(format!("pkg{p}"));
            fs::create_dir_all(&pkg).unwrap();
            for m in 0..4 {
                let value = format!("{:016x}{:016x}", rng.next(), rng.next());
                fs::write(
                    pkg.join(format!("mod{m}.py")),
                    format!("VALUE = {value:?}\n"),
                )
                .unwrap();
                manifest += &format!("mod {value} pkg{p}/mod{m}.py\n");
            }
            for f in 0..8 {
                let n = 1000 + rng.below(60_000) as usize;
                let data: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                fs::write(pkg.join(format!("data{f}.bin")), &data).unwrap();
                manifest += &format!("bin {} pkg{p}/data{f}.bin\n", common::sha256_hex(&data));
            }
        }
        fs::write(env.join("MANIFEST"), manifest).unwrap();
        fs::write(dir.path().join("loop.py"), LOOP_PY).unwrap();
        fs::write(dir.path().join("hold.py"), HOLD_PY).unwrap();
        let blueprint = dir.path().join("env/takeover.yaml");
        fs::write(
            &blueprint,
            "channels:\n- conda-forge\ndependencies:\n- takeover=1.0\n",
        )
        .unwrap();
        for d in ["rh", "vh", "gates"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let mut lab = Lab {
            dir,
            key: String::new(),
        };
        let out = lab
            .command(env!("CARGO_BIN_EXE_vhrun"))
            .arg("lift")
            .arg(&env)
            .arg("--blueprint")
            .arg(&blueprint)
            .output()
            .unwrap();
        assert!(out.status.success(), "lift: {}", stderr(&out));
        lab.key = String::from_utf8_lossy(&out.stdout).trim()[..16].to_string();
        lab
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn vh(&self) -> PathBuf {
        self.root().join("vh")
    }

    fn command(&self, vhrun: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(vhrun);
        c.env("HOME", HOME)
            .env("ROBOCORP_HOME", self.root().join("rh"))
            .env("VHRUN_HOME", self.vh())
            .env("VHRUN_IMAGE", "off")
            .env("VHRUN_SERVER_IDLE", "30")
            .env_remove("VHRUN_LOG")
            .env_remove("VHRUN_TAKEOVER")
            .current_dir(self.root())
            .stdin(Stdio::null());
        c
    }

    /// A fresh gate directory for one run.
    fn gate(&self, name: &str) -> PathBuf {
        let g = self.root().join("gates").join(name);
        fs::create_dir_all(&g).unwrap();
        fs::set_permissions(&g, fs::Permissions::from_mode(0o777)).unwrap();
        g
    }

    /// `vhrun exec --catalog KEY --stats-json GATE/stats.json -- python3 SCRIPT GATE ARGS`.
    fn task(&self, vhrun: &Path, script: &str, gate: &Path, args: &[&str]) -> Command {
        let mut c = self.command(vhrun);
        c.args(["exec", "--catalog", &self.key, "--stats-json"])
            .arg(gate.join("stats.json"))
            .args(["--", "python3"])
            .arg(self.root().join(script))
            .arg(gate)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// `n` runs of `loop.py` for `seconds`, once each task has started.
    fn loops(&self, vhrun: &Path, n: usize, seconds: &str) -> Vec<(Child, PathBuf)> {
        let runs: Vec<(Child, PathBuf)> = (0..n)
            .map(|i| {
                let gate = self.gate(&format!("loop{i}"));
                let child = self
                    .task(vhrun, "loop.py", &gate, &[seconds])
                    .spawn()
                    .unwrap();
                (child, gate)
            })
            .collect();
        for (_, gate) in &runs {
            wait_until("every task starts", HANG, || gate.join("started").exists());
        }
        runs
    }

    /// One run of `script` (gate `name`), once its task has started.
    fn started(&self, vhrun: &Path, script: &str, name: &str, args: &[&str]) -> (Child, PathBuf) {
        let gate = self.gate(name);
        let child = self.task(vhrun, script, &gate, args).spawn().unwrap();
        wait_until("the task starts", HANG, || gate.join("started").exists());
        (child, gate)
    }

    /// A short run of `loop.py` that must succeed.
    fn short_run(&self, vhrun: &Path, name: &str) {
        let gate = self.gate(name);
        let out = finish(
            self.task(vhrun, "loop.py", &gate, &["0.2"])
                .spawn()
                .unwrap(),
            name,
        );
        looped(&out, &gate);
    }

    fn servers(&self) -> Vec<u32> {
        common::vhrun_processes(&self.vh(), "__serve")
    }

    fn keepers(&self) -> Vec<u32> {
        common::vhrun_processes(&self.vh(), "__keep")
    }

    /// The one server, once it and its keeper are up.
    fn server(&self) -> u32 {
        wait_until("one server and its keeper", HANG, || {
            self.servers().len() == 1 && self.keepers().len() == 1
        });
        self.servers()[0]
    }

    /// `child`'s environment is gone for good: it fails soon with vhrun's
    /// line, and no server or keeper is left.
    #[track_caller]
    fn assert_lost(&self, child: Child, what: &str) {
        let t0 = Instant::now();
        let out = finish(child, what);
        assert!(t0.elapsed() < Duration::from_secs(25), "{what}: went on");
        assert!(!out.status.success(), "{what}: read a vanished tree");
        let err = stderr(&out);
        assert!(err.contains("warm server") && err.contains("gone"), "{err}");
        wait_until("no server or keeper left", HANG, || {
            self.servers().is_empty() && self.keepers().is_empty()
        });
    }

    fn stop_servers(&self) {
        let out = self
            .command(env!("CARGO_BIN_EXE_vhrun"))
            .args(["servers", "--stop"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        wait_until("servers and keepers exit", HANG, || {
            self.servers().is_empty() && self.keepers().is_empty()
        });
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn kill9(pid: u32) {
    signal(pid, nix::sys::signal::Signal::SIGKILL);
}

fn alive(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// Wait for `child`, failing the test if it takes longer than [`HANG`].
fn finish(mut child: Child, what: &str) -> Output {
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t0.elapsed() > HANG {
            let _ = child.kill();
            panic!("{what}: still running after {HANG:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A loop run's figures, from its output line.
struct Looped {
    reads: u64,
    pause_ms: f64,
    takeovers: u64,
}

#[track_caller]
fn looped(out: &Output, gate: &Path) -> Looped {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the run failed: {}\nstdout: {text}\nstderr: {}",
        out.status,
        stderr(out)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("ok "))
        .unwrap_or_else(|| {
            panic!("no result line: {text}");
        });
    let field = |k: &str| {
        line.split(' ')
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(gate.join("stats.json")).unwrap()).unwrap();
    Looped {
        reads: field("reads").parse().unwrap(),
        pause_ms: field("pause_ms").parse().unwrap(),
        takeovers: stats["server"]["takeovers"].as_u64().unwrap_or(0),
    }
}

fn rounds() -> u32 {
    std::env::var("VHRUN_TAKEOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var("VHRUN_LONG_TESTS").as_deref() == Ok("1") {
            100
        } else {
            8
        })
}

#[test]
fn sigkill_of_the_server_at_a_random_moment_loses_no_run() {
    let lab = Lab::new();
    let vhrun = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let before = common::host_mounts();
    let rounds = rounds();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng::new(seed);
    let (mut survived, mut worst, mut reads) = (0, 0.0f64, 0);
    for round in 0..rounds {
        let gate = lab.gate(&format!("r{round}"));
        let child = lab.task(vhrun, "loop.py", &gate, &["1.5"]).spawn().unwrap();
        wait_until("the task starts", HANG, || gate.join("started").exists());
        let server = lab.server();
        std::thread::sleep(Duration::from_millis(rng.below(1200)));
        kill9(server);
        let out = finish(child, "a run whose server was killed");
        let l = looped(&out, &gate);
        assert!(!alive(server));
        // A kill after the task's last read may leave nothing to take
        // over before the run ends: the figure counts what was.
        if l.takeovers > 0 {
            survived += 1;
        }
        worst = worst.max(l.pause_ms);
        reads += l.reads;
    }
    eprintln!(
        "takeover: {rounds} rounds (seed {seed}), {survived} kills taken over mid-run, \
         0 runs lost, longest pause a task saw {worst:.1} ms, {reads} reads verified, 0 wrong"
    );
    assert!(
        survived * 2 >= rounds,
        "only {survived} of {rounds} kills happened mid-run"
    );
    lab.stop_servers();
    assert_eq!(common::host_mounts(), before, "a mount reached the host");
}

#[test]
fn eight_runs_in_flight_survive_one_kill() {
    let lab = Lab::new();
    let vhrun = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let runs = lab.loops(vhrun, 8, "3");
    let server = lab.server();
    kill9(server);
    for (child, gate) in runs {
        let l = looped(&finish(child, "one of 8 runs"), &gate);
        assert_eq!(l.takeovers, 1, "the run's stats say the takeover");
        assert!(l.reads > 0);
    }
    let now = lab.servers();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], server);
    let out = lab
        .command(vhrun)
        .args(["servers", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["hello"]["pid"], now[0], "{listed}");
    assert_eq!(listed[0]["hello"]["stats"]["takeovers"], 1, "{listed}");
    lab.stop_servers();
}

#[test]
fn files_held_open_and_mapped_across_a_takeover_keep_working() {
    let lab = Lab::new();
    let vhrun = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let (child, gate) = lab.started(vhrun, "hold.py", "hold", &[]);
    let server = lab.server();
    kill9(server);
    wait_until("a successor serves", HANG, || {
        lab.servers().iter().any(|&p| p != server)
    });
    fs::write(gate.join("go"), "").unwrap();
    let out = finish(child, "the run holding files");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    lab.stop_servers();
}

#[test]
fn successors_killed_in_the_middle_of_their_takeover_are_followed_by_others() {
    let lab = Lab::new();
    let vhrun = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let (child, gate) = lab.started(vhrun, "loop.py", "mid", &["3"]);
    let mut killed = vec![lab.server()];
    kill9(killed[0]);
    // Each successor dies as soon as it shows, before or after it has
    // retired the keeper that started it.
    for _ in 0..2 {
        let mut next = None;
        wait_until("a successor", HANG, || {
            next = lab.servers().into_iter().find(|p| !killed.contains(p));
            next.is_some()
        });
        let next = next.unwrap();
        kill9(next);
        killed.push(next);
    }
    let l = looped(&finish(child, "the run"), &gate);
    assert!(l.takeovers >= 1, "{}", l.takeovers);
    let now = lab.server();
    assert!(!killed.contains(&now));
    lab.stop_servers();
}

#[test]
fn a_dead_keeper_is_replaced_and_the_next_kill_is_still_survived() {
    let lab = Lab::new();
    let vhrun = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let (child, gate) = lab.started(vhrun, "loop.py", "k", &["3"]);
    let server = lab.server();
    let keeper = lab.keepers()[0];
    kill9(keeper);
    wait_until("a new keeper", HANG, || {
        lab.keepers().iter().any(|&k| k != keeper)
    });
    kill9(server);
    let l = looped(&finish(child, "the run"), &gate);
    assert_eq!(l.takeovers, 1);
    lab.stop_servers();
}

#[test]
fn the_keeper_and_the_server_killed_together_fail_the_run_loudly_and_leave_nothing() {
    let lab = Lab::new();
    let vhrun = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let before = common::host_mounts();
    let (child, _) = lab.started(vhrun, "loop.py", "both", &["30"]);
    let server = lab.server();
    let keeper = lab.keepers()[0];
    // Together: the server stopped first cannot replace its keeper.
    signal(server, nix::sys::signal::Signal::SIGSTOP);
    kill9(keeper);
    wait_until("the keeper is gone", HANG, || !alive(keeper));
    kill9(server);
    lab.assert_lost(child, "the run that lost its environment");
    assert_eq!(common::host_mounts(), before, "a mount reached the host");
    // The next run starts afresh.
    lab.short_run(vhrun, "after");
    lab.stop_servers();
}

#[test]
fn successors_that_cannot_serve_end_the_connection_after_three_tries_never_a_hang() {
    let lab = Lab::new();
    let vhrun = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let (child, _) = lab.started(vhrun, "loop.py", "fail", &["30"]);
    let server = lab.server();
    // A successor loads the catalog first: without it, none can serve.
    let catalogs = lab.root().join("rh/hololib/catalog");
    let catalog = fs::read_dir(&catalogs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.to_string_lossy().ends_with(".info"))
        .unwrap();
    let aside = lab.root().join("catalog.aside");
    fs::rename(&catalog, &aside).unwrap();
    kill9(server);
    lab.assert_lost(child, "a run whose server has no successor");
    let log = fs::read_dir(lab.vh().join("servers"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(log.contains("3 successors failed"), "{log}");
    fs::rename(&aside, &catalog).unwrap();
    lab.short_run(vhrun, "after");
    lab.stop_servers();
}

/// A rebuilt vhrun: the same program under another file (another inode
/// and mtime: another identity for the servers).
fn another_vhrun(lab: &Lab) -> PathBuf {
    let copy = lab.root().join("vhrun-new");
    fs::copy(env!("CARGO_BIN_EXE_vhrun"), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

fn exe_of(pid: u32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

#[test]
fn servers_restart_hands_the_servers_to_the_new_vhrun_under_live_runs() {
    let lab = Lab::new();
    let old = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let runs = lab.loops(old, 3, "3");
    let server = lab.server();
    let new = another_vhrun(&lab);
    let out = lab
        .command(&new)
        .args(["servers", "--restart"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("pid {server} -> ")),
        "{}",
        stderr(&out)
    );
    for (child, gate) in runs {
        let l = looped(&finish(child, "a run during the upgrade"), &gate);
        assert_eq!(l.takeovers, 1);
    }
    let now = lab.server();
    assert_ne!(now, server);
    assert_eq!(exe_of(now), new, "the server runs the new vhrun");
    assert_eq!(exe_of(lab.keepers()[0]), new, "and so does its keeper");
    // A run of the new vhrun uses it as it is.
    lab.short_run(&new, "after");
    assert_eq!(lab.servers(), vec![now]);
    lab.stop_servers();
}

#[test]
fn a_run_of_a_newer_vhrun_has_the_server_hand_over_to_it() {
    let lab = Lab::new();
    let old = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let (long, gate) = lab.started(old, "loop.py", "old", &["3"]);
    let server = lab.server();
    let new = another_vhrun(&lab);
    lab.short_run(&new, "new");
    let now = lab.server();
    assert_ne!(now, server);
    assert_eq!(exe_of(now), new);
    assert_eq!(looped(&finish(long, "the old run"), &gate).takeovers, 1);
    lab.stop_servers();
}

/// `inner` as the unprivileged user.
fn as_user(inner: &Command) -> Command {
    common::require_tool("setpriv", "util-linux");
    let id = UNPRIVILEGED.to_string();
    let mut outer = Command::new("setpriv");
    outer.args(["--reuid", &id, "--regid", &id, "--clear-groups"]);
    common::wrapped(outer, inner)
}

#[test]
fn a_rootless_server_is_taken_over_too() {
    let _serial = DEV_FUSE.lock().unwrap_or_else(|p| p.into_inner());
    let _open = DevFuseOpen::new();
    let lab = Lab::new();
    common::chown_tree(lab.root(), UNPRIVILEGED);
    let vhrun = Path::new(env!("CARGO_BIN_EXE_vhrun"));
    let gate = lab.gate("rootless");
    let mut c = as_user(&lab.task(vhrun, "loop.py", &gate, &["3"]));
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let child = c.spawn().unwrap();
    wait_until("the task starts", HANG, || gate.join("started").exists());
    let server = lab.server();
    kill9(server);
    let l = looped(&finish(child, "the rootless run"), &gate);
    assert_eq!(l.takeovers, 1);
    let stats: serde_json::Value =
        serde_json::from_slice(&fs::read(gate.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["fuse"]["read_mode"], "served", "{stats}");
    let now = lab.servers();
    assert_eq!(now.len(), 1);
    let uid = fs::read_to_string(format!("/proc/{}/status", now[0]))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(uid.contains(&UNPRIVILEGED.to_string()), "{uid}");
    // Stopped by its user (a socket of another user is refused).
    let mut stop = lab.command(vhrun);
    stop.args(["servers", "--stop"]);
    let out = as_user(&stop).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the rootless server exits", HANG, || {
        lab.servers().is_empty() && lab.keepers().is_empty()
    });
}
