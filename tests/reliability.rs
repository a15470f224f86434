//! Reliability and security of the whole product path: `vhrun run` /
//! `vhrun exec` serving a real rcc hololib through FUSE + overlayfs in
//! private namespaces, attacked the way an unattended CI fleet attacks it:
//! SIGKILLs at any moment, corrupt and hostile stores, concurrent runs and
//! gc, exhausted resources, an unprivileged task trying to escape, and the
//! debris of older crashes.
//!
//! Everything is real (the kernel's FUSE, overlayfs, namespaces, tmpfs),
//! so these tests need root (CI is root) and fail, never skip, without it.
//! The fixture hololib (`tests/fixtures/rcc/simple_linux.zip`) is
//! imported into a temp ROBOCORP_HOME; HOME is `/home/user`, the home the
//! catalog was built under, so its space mountpoint is
//! `/home/user/.robocorp/holotree/<space>` (created empty by design, as a
//! restore would; every mount on it lives in the run's namespace).
//!
//! `VHRUN_LONG_TESTS=1` makes the kill-anywhere suite run 100 rounds
//! instead of 10 (`VHRUN_KILL_ROUNDS=N` sets any number,
//! `VHRUN_KILL_SEED=N` replays a sequence). Each suite prints its figures
//! (`--nocapture` shows them).

mod common;
use common::{chown_tree, gunzip, wait_until, DevFuseOpen, Rng};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
use vhrun::digest::DigestKind;
use vhrun::hololib::Catalog;

const KEY: &str = "c34ed96c2d8a459a";
const CATALOG: &str = "c34ed96c2d8a459av12.linux_amd64";
const HOME: &str = "/home/user";
const HOLOTREE: &str = "/home/user/.robocorp/holotree";
/// identity.yaml of the fixture: the file the corrupt-blob cases damage.
const ID_YAML: &str = "79da03038007fc3bde076bac4f23177d8c18f9356ca0bda56611d7112d4b9edf";
const UNPRIVILEGED: u32 = 4321;
/// Longest any single vhrun may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(60);

fn long() -> bool {
    std::env::var("VHRUN_LONG_TESTS").as_deref() == Ok("1")
}

// ---------------------------------------------------------------------
// A lab: a temp ROBOCORP_HOME with the fixture imported, a VHRUN_HOME, a
// robot whose conda.yaml has the fixture's blueprint.

struct Lab {
    dir: tempfile::TempDir,
    vhrun_home: PathBuf,
}

const ROBOT_YAML: &str = "tasks:\n  Task:\n    command: [sh, task.sh]\ncondaConfigFile: conda.yaml\nartifactsDir: output\n";

impl Lab {
    fn new() -> Lab {
        common::require_fuse();
        let dir = tempfile::Builder::new()
            .prefix("vhrun-rel")
            .tempdir_in("/tmp")
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let lab = Lab {
            vhrun_home: dir.path().join("vh"),
            dir,
        };
        for d in ["rh", "vh", "robot"] {
            fs::create_dir_all(lab.root().join(d)).unwrap();
        }
        let zip = common::fixture("simple_linux.zip");
        let out = lab.command().arg("import").arg(&zip).output().unwrap();
        assert!(out.status.success(), "import: {}", text(&out.stderr));
        fs::write(lab.robot().join("robot.yaml"), ROBOT_YAML).unwrap();
        fs::copy(
            common::fixture("simple.yaml"),
            lab.robot().join("conda.yaml"),
        )
        .unwrap();
        lab
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }
    fn rh(&self) -> PathBuf {
        self.root().join("rh")
    }
    fn vh(&self) -> &Path {
        &self.vhrun_home
    }
    fn hololib(&self) -> PathBuf {
        self.rh().join("hololib")
    }
    fn robot(&self) -> PathBuf {
        self.root().join("robot")
    }
    fn catalog_path(&self, name: &str) -> PathBuf {
        self.hololib().join("catalog").join(name)
    }
    fn blob(&self, digest: &str) -> PathBuf {
        self.hololib()
            .join("library")
            .join(&digest[..2])
            .join(&digest[2..4])
            .join(&digest[4..6])
            .join(digest)
    }
    fn catalogs(&self) -> Vec<Catalog> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.hololib().join("catalog")).unwrap() {
            let p = e.unwrap().path();
            if !p.to_string_lossy().ends_with(".info") {
                if let Ok(c) = Catalog::load(&p) {
                    out.push(c);
                }
            }
        }
        out
    }

    fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vhrun"));
        c.env("HOME", HOME)
            .env("ROBOCORP_HOME", self.rh())
            .env("VHRUN_HOME", self.vh())
            .env("VHRUN_IMAGE", "off")
            .env("LAB", self.root())
            .env_remove("VHRUN_LOG")
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .current_dir(self.root())
            .stdin(Stdio::null());
        c
    }

    /// `vhrun exec --catalog KEY -- sh -c SCRIPT`
    fn exec(&self, key: &str, script: &str) -> Command {
        let mut c = self.command();
        c.args(["exec", "--catalog", key, "--", "sh", "-c", script]);
        c
    }

    /// `vhrun run -r robot.yaml`, whose task is `sh task.sh` = SCRIPT.
    fn run_task(&self, script: &str) -> Command {
        fs::write(self.robot().join("task.sh"), script).unwrap();
        let mut c = self.command();
        c.arg("run").arg("-r").arg(self.robot().join("robot.yaml"));
        c
    }

    /// Lift a directory made by `fill` into the lab's hololib; its key.
    /// The directory's name (the catalog's identity) has the 24 bytes of
    /// an rcc space name, as every catalog rcc lifts.
    fn lift(&self, name: &str, fill: impl FnOnce(&Path)) -> String {
        let dir = self.root().join("envs").join(format!("{name:x<24}"));
        fs::create_dir_all(&dir).unwrap();
        fill(&dir);
        let conda = self.root().join("envs").join(format!("{name}.yaml"));
        fs::write(
            &conda,
            format!("channels:\n- conda-forge\ndependencies:\n- {name}=1.0\n"),
        )
        .unwrap();
        let out = self
            .command()
            .arg("lift")
            .arg(&dir)
            .arg("--blueprint")
            .arg(&conda)
            .output()
            .unwrap();
        assert!(out.status.success(), "lift: {}", text(&out.stderr));
        let key = text(&out.stdout).trim().to_string();
        assert!(key.ends_with(".linux_amd64"), "{key}");
        key[..16].to_string()
    }

    fn edit_catalog(&self, edit: impl FnOnce(&mut Catalog)) {
        let path = self.catalog_path(CATALOG);
        let mut c = Catalog::load(&path).unwrap();
        edit(&mut c);
        c.save(&path).unwrap();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// How a vhrun process ended, with its output.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ran {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "vhrun failed: {self:?}");
        self
    }
}

/// Readers of a child's pipes, so it never blocks on a full pipe.
fn drain(child: &mut Child) -> [std::thread::JoinHandle<String>; 2] {
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    [
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(o) = out.as_mut() {
                let mut b = Vec::new();
                let _ = o.read_to_end(&mut b);
                s = text(&b);
            }
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(e) = err.as_mut() {
                let mut b = Vec::new();
                let _ = e.read_to_end(&mut b);
                s = text(&b);
            }
            s
        }),
    ]
}

/// Wait for `child` at most `limit`; a hang kills it and fails the test.
fn finish(mut child: Child, started: Instant, limit: Duration, what: &str) -> Ran {
    let readers = drain(&mut child);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (hang)");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let took = started.elapsed();
    let [o, e] = readers;
    let ran = Ran {
        code: status.code(),
        signal: std::os::unix::process::ExitStatusExt::signal(&status),
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
        took,
    };
    assert!(
        !ran.stderr.contains("panicked"),
        "{what}: vhrun panicked: {}",
        ran.stderr
    );
    ran
}

fn run(mut c: Command, what: &str) -> Ran {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    finish(c.spawn().unwrap(), started, HANG, what)
}

// ---------------------------------------------------------------------
// What "nothing left behind, nothing damaged" means, as checks.

fn mount_table() -> BTreeSet<String> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Host mount lines added since `before` that belong to vhrun runs of
/// `lab` (other programs may mount meanwhile).
fn new_mounts(before: &BTreeSet<String>, lab: &Path) -> Vec<String> {
    let lab = lab.to_string_lossy().into_owned();
    mount_table()
        .into_iter()
        .filter(|l| !before.contains(l))
        .filter(|l| l.contains(&lab) || l.contains(HOLOTREE))
        .collect()
}

/// (pid, start time): a process identity that survives pid reuse.
type ProcId = (i32, u64);

fn proc_id(pid: i32) -> Option<ProcId> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    Some((pid, fields.get(19)?.parse().ok()?))
}

fn alive(p: &ProcId) -> bool {
    proc_id(p.0) == Some(*p)
}

/// Children of every thread of `pid`.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out
}

fn descendants(pid: i32, out: &mut BTreeSet<ProcId>) {
    for c in children(pid) {
        if let Some(id) = proc_id(c) {
            if out.insert(id) {
                descendants(c, out);
            }
        }
    }
}

/// Live processes whose command line contains `marker`.
fn marked(marker: &str) -> Vec<i32> {
    common::processes()
        .into_iter()
        .filter(|(pid, cmd)| text(cmd).contains(marker) && proc_id(*pid).is_some())
        .map(|(pid, _)| pid)
        .collect()
}

fn sha256(data: &[u8]) -> String {
    DigestKind::Sha256.digest(data)
}

/// A hash of every path, type, mode, size, owner and content under
/// `root`: the hololib must never change.
fn tree_hash(root: &Path) -> String {
    fn walk(base: &Path, dir: &Path, acc: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let content = if m.is_file() {
                // An unreadable file is hashed by its metadata only.
                fs::read(&p).map(|b| sha256(&b)).unwrap_or_default()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            acc.push(format!(
                "{rel} {:o} {} {}:{} {content}",
                m.mode(),
                m.len() * u64::from(!m.is_dir()),
                m.uid(),
                m.gid()
            ));
            if m.is_dir() {
                walk(base, &p, acc);
            }
        }
    }
    let mut acc = Vec::new();
    walk(root, root, &mut acc);
    sha256(acc.join("\n").as_bytes())
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') || name.contains(".tmp") || name.contains(".part#")
}

#[derive(Debug, Default, Clone, Copy)]
struct CacheReport {
    verified: usize,
    temps: usize,
}

/// Every blob-cache file at a final name holds exactly the bytes its name
/// promises: `<digest>` the decoded blob (its own digest, recomputed here),
/// `<digest>.<target>` the decoded blob with `target` at the catalog's
/// rewrite offsets (rebuilt here from the hololib's gzip). Temp files
/// (never served) are counted.
fn verify_cache(lab: &Lab) -> CacheReport {
    let mut relocations: BTreeMap<String, (Vec<i64>, String)> = BTreeMap::new();
    for c in lab.catalogs() {
        c.walk_files(|_, f, _| {
            if !f.rewrite.is_empty() {
                relocations.insert(f.digest.clone(), (f.rewrite.clone(), c.identity.clone()));
            }
        });
    }
    let mut report = CacheReport::default();
    let mut files = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), out);
                } else {
                    out.push(e.path());
                }
            }
        }
    }
    walk(&lab.vh().join("blobs"), &mut files);
    for p in files {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            report.temps += 1;
            continue;
        }
        let m = fs::symlink_metadata(&p).unwrap();
        assert!(m.is_file(), "{}: not a regular file", p.display());
        let content = fs::read(&p).unwrap();
        let (digest, target) = match name.split_once('.') {
            Some((d, t)) => (d.to_string(), Some(t.to_string())),
            None => (name.clone(), None),
        };
        match target {
            None => {
                let kind = DigestKind::from_hex_len(digest.len())
                    .unwrap_or_else(|| panic!("{}: not a digest name", p.display()));
                assert_eq!(
                    kind.digest(&content),
                    digest,
                    "torn or wrong cache file {} ({} bytes)",
                    p.display(),
                    content.len()
                );
            }
            Some(target) => {
                let (offsets, identity) = relocations
                    .get(&digest)
                    .unwrap_or_else(|| panic!("{}: no catalog relocates it", p.display()));
                let mut want = gunzip(&fs::read(lab.blob(&digest)).unwrap());
                assert_eq!(identity.len(), target.len());
                for &o in offsets {
                    want[o as usize..o as usize + target.len()].copy_from_slice(target.as_bytes());
                }
                assert!(
                    content == want,
                    "torn or wrong relocated cache file {}",
                    p.display()
                );
            }
        }
        report.verified += 1;
    }
    report
}

/// Prints `sha256  ./path` for every file of the environment (through
/// the mount, in the task's sandbox).
const LIST_SUMS: &str = r#"cd "$CONDA_PREFIX" && find . -type f | LC_ALL=C sort | xargs sha256sum"#;

/// The files of a `LIST_SUMS` output whose catalog entry has no rewrite
/// must hash to their catalog digest: an oracle independent of vhrun.
fn check_sums_against_catalog(sums: &str, catalog: &Catalog) -> usize {
    let mut want = BTreeMap::new();
    catalog.walk_files(|path, f, shadowed| {
        if !shadowed && f.symlink.is_empty() && f.rewrite.is_empty() && f.digest.len() == 64 {
            want.insert(format!("./{path}"), f.digest.clone());
        }
    });
    let mut checked = 0;
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        if let Some(d) = want.get(path) {
            assert_eq!(sum, d, "{path}: wrong bytes served");
            checked += 1;
        }
    }
    assert_eq!(checked, want.len(), "files missing from {sums}");
    checked
}

fn pseudo_random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(&r.next().to_le_bytes());
    }
    v.truncate(n);
    v
}

// ---------------------------------------------------------------------
// 1. Kill anywhere.

#[derive(Default, Debug)]
struct KillTally {
    tried: u32,
    survived: u32,
    vhrun: u32,
    reaper: u32,
    task: u32,
    finished_first: u32,
    temps_left: usize,
    cache_files_verified: usize,
}

/// N runs of a robot over the FUSE tree (`vhrun run` of the fixture robot
/// and `vhrun exec` of a lifted catalog with an 8 MiB file, alternately;
/// the blob cache emptied every third round so kills land in decodes),
/// each SIGKILLed at a random moment between start and exit: vhrun, its
/// reaper (pid 1 of the run) or the task, at random. After each: no new
/// host mount, no process of the run, the hololib unchanged bit for bit,
/// every cache file correct, and the next run serves the right bytes.
#[test]
fn kill_anywhere_leaves_nothing_and_loses_nothing() {
    let lab = Lab::new();
    let big = lab.lift("bigenv", |d| {
        fs::create_dir_all(d.join("data")).unwrap();
        fs::write(d.join("data/big.bin"), pseudo_random_bytes(8 << 20, 7)).unwrap();
        for i in 0..50 {
            fs::write(d.join(format!("data/small{i}.txt")), format!("small {i}\n")).unwrap();
        }
    });
    let rounds: u32 = std::env::var("VHRUN_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if long() { 100 } else { 10 });
    let seed = std::env::var("VHRUN_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill-anywhere: {rounds} rounds, VHRUN_KILL_SEED={seed}");
    let mut rng = Rng::new(seed);
    let catalogs = lab.catalogs();
    let fixture = catalogs
        .iter()
        .find(|c| c.blueprint == KEY)
        .unwrap()
        .clone();
    let big_catalog = catalogs
        .iter()
        .find(|c| c.blueprint == big)
        .unwrap()
        .clone();
    let before_mounts = mount_table();
    let hololib_hash = tree_hash(&lab.hololib());

    // The robot: reads through the tree, leaves a background process,
    // writes into the overlay.
    let task = |m: &str| {
        format!(
            r#"sleep 1000.{m} &
            cat "$CONDA_PREFIX"/ssl/cacert.pem > /dev/null
            echo written > "$CONDA_PREFIX/written.{m}"
            find "$CONDA_PREFIX" -type f -exec cat {{}} + > /dev/null
            sleep 0.1
            exit 0"#
        )
    };
    let start_run = |big_round: bool, script: &str| {
        let mut c = if big_round {
            lab.exec(&big, script)
        } else {
            lab.run_task(script)
        };
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        c
    };
    // Reference sums, and how long an unkilled run takes from a cold and
    // from a warm cache: the range the kill moments are drawn from.
    let mut span = [[Duration::ZERO; 2]; 2];
    let mut reference = [String::new(), String::new()];
    for (i, big_round) in [false, true].into_iter().enumerate() {
        let _ = fs::remove_dir_all(lab.vh().join("blobs"));
        for cold in [1, 0] {
            let ran = run(start_run(big_round, &task("1")), "calibration run");
            assert_eq!(ran.code, Some(0), "{}", ran.stderr);
            span[i][cold] = ran.took;
        }
        let sums = if big_round {
            run(lab.exec(&big, LIST_SUMS), "sums").ok().stdout.clone()
        } else {
            run(lab.run_task(LIST_SUMS), "sums").ok().stdout.clone()
        };
        check_sums_against_catalog(&sums, if big_round { &big_catalog } else { &fixture });
        reference[i] = sums;
    }
    wait_until("calibration processes gone", Duration::from_secs(5), || {
        marked("sleep 1000.1").is_empty()
    });
    eprintln!(
        "kill-anywhere: an unkilled run takes {:?} cold / {:?} warm (fixture, vhrun run), \
         {:?} / {:?} (8 MiB catalog, vhrun exec)",
        span[0][1], span[0][0], span[1][1], span[1][0]
    );

    let mut tally = KillTally::default();
    for round in 0..rounds {
        // Digits only: `sleep 1000.<m>` must be a valid duration.
        let m = format!("{}{round:03}", std::process::id());
        let big_round = round % 2 == 1;
        let cold = round % 3 == 0;
        if cold {
            let _ = fs::remove_dir_all(lab.vh().join("blobs"));
        }
        let range = span[big_round as usize][cold as usize];
        let delay = Duration::from_micros(rng.below(range.as_micros() as u64));
        let want = rng.below(3);
        let started = Instant::now();
        let mut child = start_run(big_round, &task(&m)).spawn().unwrap();
        let vhrun_pid = child.id() as i32;
        let vhrun_id = proc_id(vhrun_pid);
        let mut seen = BTreeSet::new();
        seen.extend(vhrun_id);
        while started.elapsed() < delay {
            descendants(vhrun_pid, &mut seen);
            std::thread::sleep(Duration::from_micros(300));
        }
        // The victim: vhrun, pid 1 of the run, or the task (its child);
        // one that does not exist yet falls back towards vhrun.
        let reaper = children(vhrun_pid).first().copied();
        let task_pid = reaper.and_then(|r| children(r).first().copied());
        let (victim, kind) = match (want, reaper, task_pid) {
            (2, _, Some(t)) => (t, 2),
            (1 | 2, Some(r), _) => (r, 1),
            _ => (vhrun_pid, 0),
        };
        descendants(vhrun_pid, &mut seen);
        let mut killed = false;
        if child.try_wait().unwrap().is_some() {
            tally.finished_first += 1;
        } else if nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok()
        {
            killed = true;
            tally.tried += 1;
            match kind {
                0 => tally.vhrun += 1,
                1 => tally.reaper += 1,
                _ => tally.task += 1,
            }
        }
        let victim_name = ["vhrun", "reaper", "task"][kind];
        let what =
            format!("round {round} (seed {seed}, kill of the {victim_name} after {delay:?})");
        let ran = finish(child, started, HANG, &what);
        if !killed {
            // An unkilled run is a fresh sample of the whole run: narrow
            // the range (the calibration may have run on a busier machine).
            let r = &mut span[big_round as usize][cold as usize];
            *r = (*r).min(ran.took);
        }
        eprintln!(
            "  round {round:3}: {} {}, {} cache, SIGKILL to the {victim_name} at {:>7.1} ms -> {}",
            if big_round { "exec" } else { "run " },
            if big_round {
                "8 MiB catalog"
            } else {
                "fixture robot"
            },
            if cold { "cold" } else { "warm" },
            delay.as_secs_f64() * 1e3,
            match (killed, ran.code, ran.signal) {
                (false, _, _) => "ended before the kill".to_string(),
                (_, Some(c), _) => format!("vhrun exit {c}"),
                (_, None, Some(s)) => format!("vhrun killed by signal {s}"),
                _ => "?".to_string(),
            }
        );
        let ok_status = ran.code == Some(0) || ran.code == Some(137) || ran.signal == Some(9);
        assert!(ok_status, "{what}: unexpected end {ran:?}");
        wait_until(
            &format!("{what}: processes of the run still alive"),
            Duration::from_secs(10),
            || !seen.iter().any(alive) && marked(&format!("1000.{m}")).is_empty(),
        );
        assert_eq!(
            new_mounts(&before_mounts, lab.root()),
            Vec::<String>::new(),
            "{what}"
        );
        assert_eq!(
            tree_hash(&lab.hololib()),
            hololib_hash,
            "{what}: hololib changed"
        );
        let cache = verify_cache(&lab);
        tally.cache_files_verified += cache.verified;
        tally.temps_left = cache.temps;
        // The next run serves the right bytes.
        let sums = if big_round {
            run(lab.exec(&big, LIST_SUMS), &what)
        } else {
            run(lab.run_task(LIST_SUMS), &what)
        };
        assert_eq!(
            sums.code,
            Some(0),
            "{what}: next run failed: {}",
            sums.stderr
        );
        assert_eq!(
            sums.stdout, reference[big_round as usize],
            "{what}: next run"
        );
        tally.survived += u32::from(killed);
    }
    // Nothing of the crashed runs stays once a later run has cleaned up
    // (a `.new-*` directory waits 2 s before it counts as stale).
    std::thread::sleep(Duration::from_millis(2100));
    run(lab.exec(KEY, "true"), "final run").ok();
    // A slot's lock goes with the last process holding its descriptor, a
    // few milliseconds after vhrun's own exit at times (seen: free again
    // 200 ms later, no holder left in /proc/locks).
    let t0 = Instant::now();
    let mut runs_left = common::leftover_runs(&lab.vh().join("runs"));
    while !runs_left.is_empty() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        runs_left = common::leftover_runs(&lab.vh().join("runs"));
    }
    assert!(runs_left.is_empty(), "run directories left: {runs_left:?}");
    assert!(
        fs::read_dir(format!("{HOLOTREE}/59acff1_5a1fac3_9fcd2534"))
            .map(|mut rd| rd.next().is_none())
            .unwrap_or(true),
        "files written on the host's space mountpoint"
    );
    eprintln!(
        "kill-anywhere: survived {}/{} SIGKILLs (vhrun {}, reaper {}, task {}; {} runs ended before their kill); \
         hololib unchanged (0 bytes lost); {} cache files verified after kills, {} stale temp files left (never served)",
        tally.survived,
        tally.tried,
        tally.vhrun,
        tally.reaper,
        tally.task,
        tally.finished_first,
        tally.cache_files_verified,
        tally.temps_left
    );
    assert!(tally.tried >= rounds / 2, "too few kills landed: {tally:?}");
}

/// vhrun itself reads its tree before the task starts (the working-set
/// prefetch, the overlay mount, the PATH lookup of the command). A SIGKILL
/// while one of its threads waits for an answer of its own, now dead,
/// FUSE server must not leave that thread waiting forever (the process
/// stuck in D state with its namespace): SIGKILLs aimed at the prefetch
/// of a 3,000-entry working set, each run must end within seconds.
#[test]
fn sigkill_while_vhrun_reads_its_own_tree_never_hangs() {
    let lab = Lab::new();
    let key = lab.lift("wide", |d| {
        for i in 0..300 {
            let sub = d.join(format!("pkg{i}"));
            fs::create_dir_all(&sub).unwrap();
            for j in 0..10 {
                fs::write(sub.join(format!("m{j}.py")), format!("X = {i}{j}\n")).unwrap();
            }
        }
    });
    // Records the working set (every directory listed, every file found).
    let walk = r#"find "$CONDA_PREFIX" -type f | wc -l"#;
    let ran = run(lab.exec(&key, walk), "record the working set");
    assert_eq!(ran.stdout.trim(), "3001", "{ran:?}");
    let span = run(lab.exec(&key, "true"), "a prefetching run").ok().took;
    // Without the fix about 1 kill in 30 hung.
    let rounds = if long() { 200 } else { 40 };
    let mut rng = Rng::new(span.as_nanos() as u64);
    let before = mount_table();
    for round in 0..rounds {
        let mut c = lab.exec(&key, "sleep 5");
        c.stdout(Stdio::null()).stderr(Stdio::null());
        let started = Instant::now();
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rng.below(span.as_micros() as u64)));
        let at = started.elapsed();
        let _ = child.kill();
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "round {round}: vhrun still not gone 15 s after SIGKILL at {at:?} \
                 (a thread of it waits for its own dead FUSE server)"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(new_mounts(&before, lab.root()), Vec::<String>::new());
    eprintln!(
        "kill during prefetch: {rounds} SIGKILLs within the first {span:?} of a run \
         (3,000-entry working-set prefetch): vhrun always gone"
    );
}

// ---------------------------------------------------------------------
// 2. Corrupt and hostile stores through `vhrun exec`.

/// Reads three files through the environment, twice each; exits 7.
const READ_THREE: &str = r#"cd "$CONDA_PREFIX"
for f in identity.yaml identity.yaml ssl/cacert.pem rcc_activate.sh; do
  err=$(cat "$f" 2>&1 >/dev/null) && echo "$f: ok" || echo "$f: ${err##*: }"
done
exit 7"#;

/// A damaged blob: the file answers EIO (every time), the others serve,
/// the task's exit code passes through, one log line names the file in
/// the environment and the blob, and nothing bad reaches the cache.
fn expect_eio(lab: &Lab, case: &str, why: &str) -> String {
    let mut line = String::new();
    for via_run in [false, true] {
        let cmd = if via_run {
            lab.run_task(READ_THREE)
        } else {
            lab.exec(KEY, READ_THREE)
        };
        let case = format!(
            "{case} ({})",
            if via_run { "vhrun run" } else { "vhrun exec" }
        );
        line = expect_eio_once(lab, &case, why, cmd);
    }
    line
}

fn expect_eio_once(lab: &Lab, case: &str, why: &str, cmd: Command) -> String {
    let ran = run(cmd, case);
    assert_eq!(ran.code, Some(7), "{case}: {ran:?}");
    assert_eq!(
        ran.stdout,
        "identity.yaml: Input/output error\nidentity.yaml: Input/output error\nssl/cacert.pem: ok\nrcc_activate.sh: ok\n",
        "{case}: {}",
        ran.stderr
    );
    let lines: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| l.contains("/identity.yaml: blob"))
        .collect();
    assert_eq!(lines.len(), 1, "{case}: {}", ran.stderr);
    let line = lines[0];
    assert!(
        line.contains(&format!("{HOLOTREE}/")) && line.contains(ID_YAML) && line.contains(why),
        "{case}: {line}"
    );
    let cache = verify_cache(lab);
    assert_eq!(cache.temps, 0, "{case}: temp files left");
    line.to_string()
}

/// A catalog vhrun must refuse before any namespace exists: the exit code,
/// one `vhrun:` line naming the catalog (and `words`), nothing mounted.
fn expect_refusal(lab: &Lab, case: &str, code: i32, words: &[&str]) -> String {
    // `vhrun run` of the robot too, except where the catalog is missing
    // (run would then build the environment).
    if code != 67 {
        let case = format!("{case} (vhrun run)");
        expect_refusal_once(lab, &case, code, words, lab.run_task("echo TASK RAN"));
    }
    expect_refusal_once(lab, case, code, words, lab.exec(KEY, "echo TASK RAN"))
}

fn expect_refusal_once(lab: &Lab, case: &str, code: i32, words: &[&str], cmd: Command) -> String {
    let before = mount_table();
    let ran = run(cmd, case);
    assert_eq!(ran.code, Some(code), "{case}: {ran:?}");
    assert!(!ran.stdout.contains("TASK RAN"), "{case}");
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{case}: not one line: {}", ran.stderr);
    for w in words {
        assert!(lines[0].contains(w), "{case}: {:?} lacks {w:?}", lines[0]);
    }
    assert!(lines[0].starts_with("vhrun: "), "{case}: {}", lines[0]);
    assert_eq!(
        new_mounts(&before, lab.root()),
        Vec::<String>::new(),
        "{case}"
    );
    lines[0].to_string()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    vhrun::hololib::catalog::gzip_bytes(data)
}

/// Every damaged blob of the list, each in a fresh lab.
#[test]
fn corrupt_blobs_answer_eio_naming_file_and_blob() {
    let good = gzip(&gunzip(&fs::read(Lab::new().blob(ID_YAML)).unwrap()));
    type Damage = Box<dyn Fn(&Lab, &Path)>;
    let cases: Vec<(&str, &str, Damage)> = vec![
        (
            "truncated gzip",
            "cannot decode",
            Box::new(|_, b| {
                let d = fs::read(b).unwrap();
                fs::write(b, &d[..d.len() / 2]).unwrap();
            }),
        ),
        (
            "flipped byte",
            "",
            Box::new(|_, b| {
                let mut d = fs::read(b).unwrap();
                let i = d.len() / 2;
                d[i] ^= 0x10;
                fs::write(b, d).unwrap();
            }),
        ),
        (
            "flipped byte in the gzip trailer",
            "",
            Box::new(|_, b| {
                let mut d = fs::read(b).unwrap();
                let i = d.len() - 6;
                d[i] ^= 0x01;
                fs::write(b, d).unwrap();
            }),
        ),
        (
            "zero-length blob",
            "0 bytes",
            Box::new(|_, b| fs::write(b, b"").unwrap()),
        ),
        (
            "missing blob",
            "missing",
            Box::new(|_, b| fs::remove_file(b).unwrap()),
        ),
        (
            "blob replaced by a symlink to a good copy",
            "symlink",
            Box::new(|lab, b| {
                let copy = lab.root().join("good-copy");
                fs::copy(b, &copy).unwrap();
                fs::remove_file(b).unwrap();
                std::os::unix::fs::symlink(&copy, b).unwrap();
            }),
        ),
        (
            "blob replaced by a directory",
            "not a regular file",
            Box::new(|_, b| {
                fs::remove_file(b).unwrap();
                fs::create_dir(b).unwrap();
            }),
        ),
        (
            "blob replaced by a FIFO",
            "not a regular file",
            Box::new(|_, b| {
                fs::remove_file(b).unwrap();
                nix::unistd::mkfifo(b, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
            }),
        ),
        (
            "blob replaced by /dev/zero's device node",
            "not a regular file",
            Box::new(|_, b| {
                fs::remove_file(b).unwrap();
                nix::sys::stat::mknod(
                    b,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o644),
                    nix::sys::stat::makedev(1, 5),
                )
                .unwrap();
            }),
        ),
        (
            "well-formed gzip of other content",
            "hashes to",
            Box::new(|_, b| fs::write(b, gzip(b"evil: yes\n".repeat(5).as_slice())).unwrap()),
        ),
        (
            "right content, plus trailing garbage",
            "",
            Box::new(move |_, b| {
                let mut d = good.clone();
                d.extend_from_slice(b"garbage after the stream");
                fs::write(b, d).unwrap();
            }),
        ),
        (
            "zstd frame header then garbage",
            "",
            Box::new(|_, b| {
                fs::write(b, [0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff, 0xff, 0xff]).unwrap()
            }),
        ),
    ];
    let mut table = Vec::new();
    for (case, why, damage) in &cases {
        let lab = Lab::new();
        let hash_before = {
            damage(&lab, &lab.blob(ID_YAML));
            tree_hash(&lab.hololib())
        };
        let line = expect_eio(&lab, case, why);
        assert_eq!(
            tree_hash(&lab.hololib()),
            hash_before,
            "{case}: hololib changed"
        );
        table.push(format!(
            "  {case}: EIO; {}",
            line.split("): ").last().unwrap()
        ));
    }
    eprintln!(
        "corrupt blobs: {} damaged blobs tried, each EIO for its file only:\n{}",
        cases.len(),
        table.join("\n")
    );
}

/// Damaged and hostile catalogs: refused at load time with exit 65 and a
/// line naming the catalog, or (missing/unlisted) 67.
#[test]
fn corrupt_catalogs_are_refused_before_anything_is_mounted() {
    fn cat(lab: &Lab) -> PathBuf {
        lab.catalog_path(CATALOG)
    }
    fn json(lab: &Lab) -> Vec<u8> {
        gunzip(&fs::read(cat(lab)).unwrap())
    }
    type Damage = Box<dyn Fn(&Lab)>;
    let raw =
        |bytes: Vec<u8>| -> Damage { Box::new(move |lab| fs::write(cat(lab), &bytes).unwrap()) };
    let catalog_json = |s: &'static str| -> Damage {
        Box::new(move |lab| fs::write(cat(lab), gzip(s.as_bytes())).unwrap())
    };
    let cases: Vec<(&str, i32, &[&str], Damage)> = vec![
        (
            "catalog that is not gzip",
            65,
            &["not a catalog"],
            raw(pseudo_random_bytes(4000, 3)),
        ),
        (
            "empty catalog file",
            65,
            &["not a catalog"],
            raw(Vec::new()),
        ),
        (
            "truncated catalog",
            65,
            &[],
            Box::new(move |lab| {
                let d = fs::read(cat(lab)).unwrap();
                fs::write(cat(lab), &d[..d.len() / 2]).unwrap();
            }),
        ),
        (
            "catalog with a flipped byte",
            65,
            &[],
            Box::new(move |lab| {
                let mut d = fs::read(cat(lab)).unwrap();
                let i = d.len() / 3;
                d[i] ^= 0x04;
                fs::write(cat(lab), d).unwrap();
            }),
        ),
        ("JSON array", 65, &["not a catalog"], catalog_json("[1, 2]")),
        ("JSON null", 65, &["not a catalog"], catalog_json("null")),
        (
            "JSON string",
            65,
            &["not a catalog"],
            catalog_json("\"tree\""),
        ),
        (
            "no tree",
            65,
            &["missing field `tree`"],
            catalog_json("{\"identity\": \"x\"}"),
        ),
        (
            "tree is a number",
            65,
            &["not a catalog"],
            catalog_json("{\"tree\": 5}"),
        ),
        (
            "files is a list",
            65,
            &["not a catalog"],
            catalog_json("{\"tree\": {\"files\": [1]}}"),
        ),
        (
            "subdir is a string",
            65,
            &["not a catalog"],
            catalog_json("{\"tree\": {\"subdirs\": {\"a\": \"x\"}}}"),
        ),
        (
            "size is a string",
            65,
            &["not a catalog"],
            catalog_json("{\"tree\": {\"files\": {\"a\": {\"size\": \"big\"}}}}"),
        ),
        (
            "mode beyond 32 bits",
            65,
            &["not a catalog"],
            catalog_json("{\"tree\": {\"files\": {\"a\": {\"mode\": 4294967296}}}}"),
        ),
        (
            "nesting beyond the decoder's depth",
            65,
            &["recursion limit"],
            Box::new(move |lab| {
                let mut s = String::from("{\"tree\":");
                for _ in 0..3000 {
                    s.push_str("{\"subdirs\":{\"d\":");
                }
                fs::write(cat(lab), gzip(s.as_bytes())).unwrap();
            }),
        ),
        (
            "a name twice in one directory",
            65,
            &["\"ssl\" appears twice"],
            Box::new(move |lab| {
                let text = text(&json(lab));
                // Repeat the "ssl" directory entry inside the root's subdirs.
                let at = text.find("\"ssl\": {").unwrap();
                let dup =
                    text.replacen("\"ssl\": {", "\"ssl\": {\"name\": \"ssl\"}, \"ssl\": {", 1);
                assert!(dup.len() > text.len() && at > 0);
                fs::write(cat(lab), gzip(dup.as_bytes())).unwrap();
            }),
        ),
        (
            "a file and a directory of one name",
            65,
            &["\"ssl\" is both a file and a directory"],
            Box::new(move |lab| {
                let mut c = Catalog::load(&cat(lab)).unwrap();
                let f = c.tree.files.values().next().unwrap().clone();
                c.tree.files.insert(
                    "ssl".into(),
                    vhrun::hololib::File {
                        name: "ssl".into(),
                        ..f
                    },
                );
                c.save(&cat(lab)).unwrap();
            }),
        ),
    ];
    let mut cases = cases;
    for (label, name) in [
        ("entry name with '/'", "a/b"),
        ("entry name '..'", ".."),
        ("entry name '.'", "."),
        ("entry name with NUL", "a\0b"),
        ("empty entry name", ""),
        ("entry name of 256 bytes", "n".repeat(256).leak()),
    ] {
        cases.push((
            label,
            65,
            &["entry \"ssl/"],
            Box::new(move |lab: &Lab| {
                let mut c = Catalog::load(&cat(lab)).unwrap();
                let ssl = c.tree.dirs.get_mut("ssl").unwrap();
                let f = ssl.files.values().next().unwrap().clone();
                ssl.files.insert(
                    name.to_string(),
                    vhrun::hololib::File {
                        name: String::new(),
                        ..f
                    },
                );
                c.save(&cat(lab)).unwrap();
            }),
        ));
    }
    cases.push((
        "catalog replaced by a FIFO",
        67,
        &["no catalog matches"],
        Box::new(move |lab: &Lab| {
            fs::remove_file(cat(lab)).unwrap();
            nix::unistd::mkfifo(&cat(lab), nix::sys::stat::Mode::from_bits_truncate(0o644))
                .unwrap();
        }),
    ));
    cases.push((
        "catalog replaced by a directory",
        67,
        &["no catalog matches"],
        Box::new(move |lab: &Lab| {
            fs::remove_file(cat(lab)).unwrap();
            fs::create_dir(cat(lab)).unwrap();
        }),
    ));
    let mut table = Vec::new();
    for (case, code, words, damage) in &cases {
        let lab = Lab::new();
        damage(&lab);
        let mut words = words.to_vec();
        let path = cat(&lab).display().to_string();
        if *code == 65 {
            words.push(&path);
        }
        let line = expect_refusal(&lab, case, *code, &words);
        table.push(format!(
            "  {case}: exit {code}: {}",
            line.replace(&path, "<catalog>")
        ));
    }
    eprintln!(
        "corrupt catalogs: {} damaged or hostile catalogs tried, each refused before mounting:\n{}",
        cases.len(),
        table.join("\n")
    );
}

/// Hostile but loadable entries: served exactly as a restore would give
/// them, never honoured (setuid, devices), never followed by vhrun
/// (symlinks out of the tree), EIO where the catalog cannot be right.
#[test]
fn hostile_entries_are_served_inert() {
    use vhrun::gomode::{MODE_DIR, MODE_SETUID, MODE_SYMLINK};
    let lab = Lab::new();
    let outside = lab.root().join("outside-secret");
    fs::write(&outside, "host file\n").unwrap();
    lab.edit_catalog(|c| {
        let template = c.tree.files["identity.yaml"].clone();
        let mut put = |name: &str, f: vhrun::hololib::File| {
            c.tree.files.insert(
                name.into(),
                vhrun::hololib::File {
                    name: name.into(),
                    ..f
                },
            );
        };
        let link = |target: &str| vhrun::hololib::File {
            symlink: target.into(),
            mode: MODE_SYMLINK | 0o777,
            digest: String::new(),
            size: target.len() as i64,
            ..template.clone()
        };
        put("out-rel", link("../../../../../../../etc/passwd"));
        put("out-abs", link(&outside.display().to_string()));
        put(
            "out-hololib",
            link(&lab.blob(ID_YAML).display().to_string()),
        );
        // Go mode bits: setuid+setgid, a character device, a named pipe,
        // every bit but the symlink one.
        put(
            "suid",
            vhrun::hololib::File {
                mode: MODE_SETUID | (1 << 22) | 0o6755,
                ..template.clone()
            },
        );
        put(
            "chardev",
            vhrun::hololib::File {
                mode: (1 << 26) | (1 << 21) | 0o644,
                ..template.clone()
            },
        );
        put(
            "fifo",
            vhrun::hololib::File {
                mode: (1 << 25) | 0o644,
                ..template.clone()
            },
        );
        put(
            "allbits",
            vhrun::hololib::File {
                mode: !MODE_SYMLINK,
                ..template.clone()
            },
        );
        put(
            "huge",
            vhrun::hololib::File {
                size: 1 << 40,
                ..template.clone()
            },
        );
        put(
            "maxsize",
            vhrun::hololib::File {
                size: i64::MAX,
                ..template.clone()
            },
        );
        put(
            "negative",
            vhrun::hololib::File {
                size: -5,
                ..template.clone()
            },
        );
        put(
            "shrunk",
            vhrun::hololib::File {
                size: 3,
                ..template.clone()
            },
        );
        put(
            "badrewrite",
            vhrun::hololib::File {
                rewrite: vec![1_000_000],
                ..template.clone()
            },
        );
        put(
            "baddigest",
            vhrun::hololib::File {
                digest: "../../../../etc/passwd".into(),
                ..template.clone()
            },
        );
        let mut d = c.tree.dirs["ssl"].clone();
        d.symlink = "/".into();
        d.name = "rootlink".into();
        d.mode |= MODE_DIR;
        c.tree.dirs.insert("rootlink".into(), d);
    });
    let hololib_hash = tree_hash(&lab.hololib());
    let script = r#"cd "$CONDA_PREFIX"
for f in out-rel out-abs out-hololib rootlink; do echo "$f -> $(readlink "$f") $(stat -c %F "$f")"; done
for f in suid chardev fifo allbits; do echo "$f $(stat -c '%F %a' "$f") $(sha256sum < "$f" | cut -c1-12)"; done
for f in huge maxsize negative shrunk badrewrite baddigest; do
  err=$(cat "$f" 2>&1 >/dev/null) && echo "$f: read" || echo "$f: ${err##*: } (size $(stat -c %s "$f"))"
done
grep " $CONDA_PREFIX " /proc/self/mounts | cut -d' ' -f3,4
grep fuse.vhrun /proc/self/mounts | cut -d' ' -f3,4"#;
    let ran = run(lab.exec(KEY, script), "hostile entries");
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let idsum = &sha256(&gunzip(&fs::read(lab.blob(ID_YAML)).unwrap()))[..12];
    let out: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(
        &out[..4],
        &[
            "out-rel -> ../../../../../../../etc/passwd symbolic link",
            &format!("out-abs -> {} symbolic link", outside.display()),
            &format!(
                "out-hololib -> {} symbolic link",
                lab.blob(ID_YAML).display()
            ),
            "rootlink -> / symbolic link",
        ],
        "{}",
        ran.stdout
    );
    assert_eq!(
        &out[4..8],
        &[
            format!("suid regular file 755 {idsum}"),
            format!("chardev regular file 644 {idsum}"),
            format!("fifo regular file 644 {idsum}"),
            format!("allbits regular file 1777 {idsum}"),
        ],
        "{}",
        ran.stdout
    );
    assert_eq!(
        &out[8..14],
        &[
            "huge: Input/output error (size 1099511627776)",
            "maxsize: Input/output error (size 9223372036854775807)",
            "negative: Input/output error (size 0)",
            "shrunk: Input/output error (size 3)",
            "badrewrite: Input/output error (size 56)",
            "baddigest: Input/output error (size 56)",
        ],
        "{}",
        ran.stdout
    );
    // The tree and the overlay above it: nosuid, nodev.
    for l in &out[14..] {
        let opts = l.split(' ').nth(1).unwrap();
        assert!(opts.contains("nosuid") && opts.contains("nodev"), "{l}");
    }
    assert!(out.len() >= 16, "{}", ran.stdout);
    // One line per EIO, naming the file and what is wrong.
    for (file, why) in [
        ("huge", "the catalog says 1099511627776"),
        ("shrunk", "the catalog says 3"),
        ("negative", "negative size"),
        ("badrewrite", "rewrite offset"),
        ("baddigest", "digest is not a"),
    ] {
        let line = ran
            .stderr
            .lines()
            .find(|l| l.contains(&format!("/{file}: ")))
            .unwrap_or_else(|| panic!("no line for {file}: {}", ran.stderr));
        assert!(line.contains(why), "{line}");
    }
    assert_eq!(tree_hash(&lab.hololib()), hololib_hash);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "host file\n");
    verify_cache(&lab);
}

// ---------------------------------------------------------------------
// 4. Concurrency.

/// A task that waits until `n` tasks have arrived (files in $LAB/gate),
/// then lists its environment's sums.
fn gated(n: usize, tag: &str) -> String {
    format!(
        r#"touch "$LAB/gate/{tag}.$$"
        i=0; while [ "$(ls "$LAB/gate" | wc -l)" -lt {n} ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
        {LIST_SUMS}"#
    )
}

#[test]
fn eight_runs_of_one_catalog_fill_an_empty_cache_right() {
    let lab = Lab::new();
    fs::create_dir_all(lab.root().join("gate")).unwrap();
    let fixture = lab.catalogs().pop().unwrap();
    let children: Vec<Child> = (0..8)
        .map(|i| {
            let mut c = lab.exec(KEY, &gated(8, &format!("r{i}")));
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let started = Instant::now();
    let outs: Vec<Ran> = children
        .into_iter()
        .map(|c| finish(c, started, HANG, "concurrent run"))
        .collect();
    for o in &outs {
        assert_eq!(o.code, Some(0), "{o:?}");
        assert_eq!(o.stdout, outs[0].stdout);
    }
    let checked = check_sums_against_catalog(&outs[0].stdout, &fixture);
    let cache = verify_cache(&lab);
    assert_eq!(cache.temps, 0);
    eprintln!(
        "concurrency: 8 simultaneous runs of one catalog on an empty cache: all succeeded, \
         {checked} files match their catalog digest in every run, {} cache files verified",
        cache.verified
    );
}

/// 4 runs each of two catalogs at once, and `vhrun gc --days 0` while
/// they are live: gc removes only what no live run serves, the runs all
/// succeed, the cache ends consistent.
#[test]
fn runs_of_two_catalogs_and_gc_during_them() {
    let lab = Lab::new();
    let second = lab.lift("second", |d| {
        fs::create_dir_all(d.join("lib")).unwrap();
        fs::write(d.join("lib/blob.bin"), pseudo_random_bytes(3 << 20, 11)).unwrap();
        for i in 0..40 {
            fs::write(d.join(format!("lib/mod{i}.py")), format!("X = {i}\n")).unwrap();
        }
    });
    let third = lab.lift("third", |d| {
        fs::write(d.join("only-here.txt"), "third catalog\n").unwrap();
    });
    let catalogs = lab.catalogs();
    let by_key = |k: &str| catalogs.iter().find(|c| c.blueprint == k).unwrap().clone();
    // Warm the cache with the third catalog: no live run will serve it,
    // and its warm server is stopped (a live server keeps its blobs).
    run(lab.exec(&third, LIST_SUMS), "third").ok();
    let stopped = run(
        {
            let mut c = lab.command();
            c.args(["servers", "--stop"]);
            c
        },
        "stop the third catalog's server",
    );
    assert_eq!(stopped.code, Some(0), "{stopped:?}");
    fs::create_dir_all(lab.root().join("gate")).unwrap();
    fs::create_dir_all(lab.root().join("gc")).unwrap();
    // Each run reads everything, then waits for gc to finish, then reads
    // everything again (possibly re-decoding what gc removed).
    let script = |tag: &str| {
        format!(
            r#"{LIST_SUMS} > /dev/null
            touch "$LAB/gate/{tag}.$$"
            i=0; while [ ! -e "$LAB/gc/done" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
            {LIST_SUMS}"#
        )
    };
    let mut children = Vec::new();
    for i in 0..4 {
        for key in [KEY, second.as_str()] {
            let mut c = lab.exec(key, &script(&format!("{key}-{i}")));
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            children.push((key.to_string(), c.spawn().unwrap()));
        }
    }
    let started = Instant::now();
    wait_until("all 8 runs live", HANG, || {
        fs::read_dir(lab.root().join("gate")).unwrap().count() == 8
    });
    let gc = run(
        {
            let mut c = lab.command();
            c.args(["gc", "--days", "0", "--json"]);
            c
        },
        "gc during runs",
    );
    assert_eq!(gc.code, Some(0), "{gc:?}");
    fs::write(lab.root().join("gc/done"), "").unwrap();
    let report: serde_json::Value = serde_json::from_str(&gc.stdout).unwrap();
    assert_eq!(report["live_runs"], 8, "{}", gc.stdout);
    let mut live_digests = BTreeSet::new();
    for k in [KEY, second.as_str()] {
        by_key(k).walk_files(|_, f, _| {
            live_digests.insert(f.digest.clone());
        });
    }
    let removed: Vec<String> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    for p in &removed {
        let name = Path::new(p)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let digest = name.split('.').next().unwrap();
        assert!(
            !live_digests.contains(digest),
            "gc removed {p}, used by a live run"
        );
    }
    let third_digest = &by_key(&third).tree.files["only-here.txt"].digest;
    assert!(
        removed.iter().any(|p| p.contains(third_digest.as_str())),
        "gc removed nothing of the idle catalog: {}",
        gc.stdout
    );
    let mut held = 0;
    for (key, child) in children {
        let o = finish(child, started, HANG, "run during gc");
        assert_eq!(o.code, Some(0), "{o:?}");
        check_sums_against_catalog(&o.stdout, &by_key(&key));
        held += 1;
    }
    let cache = verify_cache(&lab);
    assert_eq!(cache.temps, 0);
    eprintln!(
        "concurrency: {held} simultaneous runs of two catalogs held through `vhrun gc --days 0` \
         (which removed {} idle entries, none a live run used); {} cache files verified after",
        removed.len(),
        cache.verified
    );
}

// ---------------------------------------------------------------------
// 5. Resource limits.

/// A tmpfs mounted by the test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("vhrun-test-tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap();
        Tmpfs(at.to_path_buf())
    }
    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.0).unwrap();
        (s.blocks() - s.blocks_free()) * s.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_overlay_gives_the_task_enospc_and_vhrun_cleans_up() {
    let mut lab = Lab::new();
    let small = Tmpfs::mount(&lab.root().join("small"), "2m");
    lab.vhrun_home = small.0.join("vh");
    // First run: fills the blob cache, index and working set on the tmpfs.
    run(lab.exec(KEY, LIST_SUMS), "warm-up").ok();
    let used_before = small.used();
    let before = mount_table();
    // The write layer is in memory, bounded by VHRUN_OVERLAY_SIZE (by
    // default half of RAM, which this test would take a minute to fill).
    let fill = r#"python3 - <<'EOF'
import errno, os, sys
path = os.environ["CONDA_PREFIX"] + "/fill"
written = 0
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    while True:
        written += os.write(fd, b"\0" * 65536)
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno), written >> 20)
    sys.exit(42 if e.errno == errno.ENOSPC else 1)
EOF"#;
    let mut bounded = lab.exec(KEY, fill);
    bounded.env("VHRUN_OVERLAY_SIZE", "16m");
    let ran = run(bounded, "fill the overlay");
    assert_eq!(ran.code, Some(42), "{ran:?}");
    // 16 MiB less the run's directories and the file's own blocks.
    assert!(
        ["ENOSPC 15\n", "ENOSPC 16\n"].contains(&ran.stdout.as_str()),
        "{ran:?}"
    );
    let mut unusable = lab.exec(KEY, "true");
    unusable.env("VHRUN_OVERLAY_SIZE", "lots");
    let ran = run(unusable, "a bad VHRUN_OVERLAY_SIZE");
    assert_eq!(ran.code, Some(2), "{ran:?}");
    assert_eq!(ran.stderr.lines().count(), 1, "{ran:?}");
    assert!(
        ran.stderr
            .contains("VHRUN_OVERLAY_SIZE=\"lots\": expected a size such as 512m"),
        "{ran:?}"
    );
    assert_eq!(new_mounts(&before, lab.root()), Vec::<String>::new());
    assert_eq!(
        common::leftover_runs(&lab.vh().join("runs")),
        Vec::<PathBuf>::new()
    );
    let used_after = small.used();
    assert!(
        used_after <= used_before + 64 * 1024,
        "the full write layer was not removed: {used_before} -> {used_after} bytes used"
    );
    // And the next run works.
    let ran = run(lab.exec(KEY, LIST_SUMS), "after ENOSPC");
    ran.ok();
    check_sums_against_catalog(&ran.stdout, &lab.catalogs()[0]);
    verify_cache(&lab);
    // VHRUN_HOME itself full before the run (the blob cache cannot be
    // filled): a clean one-line refusal or EIO for the files, never a
    // hang, a panic or a mount left.
    let _ = fs::remove_dir_all(lab.vh().join("blobs"));
    let filler = small.0.join("filler");
    let mut f = fs::File::create(&filler).unwrap();
    while std::io::Write::write_all(&mut f, &[0u8; 65536]).is_ok() {}
    drop(f);
    let ran = run(lab.exec(KEY, READ_THREE), "VHRUN_HOME full");
    match ran.code {
        Some(7) => assert!(ran.stdout.contains("Input/output error"), "{ran:?}"),
        Some(74) => {
            let lines: Vec<&str> = ran.stderr.lines().collect();
            assert!(
                lines.len() == 1 && lines[0].contains("No space left on device"),
                "{ran:?}"
            );
        }
        _ => panic!("VHRUN_HOME full: {ran:?}"),
    }
    assert_eq!(new_mounts(&before, lab.root()), Vec::<String>::new());
    fs::remove_file(&filler).unwrap();
    run(lab.exec(KEY, LIST_SUMS), "after the disk was freed").ok();
    verify_cache(&lab);
    eprintln!(
        "resources: a 16 MiB write layer filled by the task: task got ENOSPC, vhrun exited with its code 42, \
         write layer removed ({used_before} -> {used_after} bytes used); VHRUN_HOME full before a run: {}",
        match ran.code {
            Some(7) => "EIO for the files that needed the cache".to_string(),
            c => format!("refused with exit {c:?}: {}", ran.stderr.trim()),
        }
    );
}

/// The task holds 10,000 files of the environment open (2,500 distinct),
/// with vhrun started under the usual soft limit of 1,024 descriptors
/// (fewer files if the hard limit is lower: it cannot be raised here
/// without CAP_SYS_RESOURCE).
#[test]
fn ten_thousand_open_files() {
    let lab = Lab::new();
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let n = 10_000u64.min(hard.saturating_sub(200));
    assert!(
        n >= 2_600,
        "the hard RLIMIT_NOFILE ({hard}) is too low for this test"
    );
    let key = lab.lift("many", |d| {
        fs::create_dir_all(d.join("d")).unwrap();
        for i in 0..2500 {
            fs::write(d.join(format!("d/f{i}")), format!("file {i}\n")).unwrap();
        }
    });
    let script = format!(
        r#"python3 - <<'EOF'
import os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
print("task soft limit", soft)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
d = os.environ["CONDA_PREFIX"] + "/d/"
files = [open(d + "f%d" % (i % 2500)) for i in range({n})]
bad = [i for i, f in enumerate(files) if f.read() != "file %d\n" % (i % 2500)]
print(len(files), "open,", len(bad), "wrong")
EOF"#
    );
    let mut c = lab.exec(&key, &script);
    unsafe {
        c.pre_exec(|| {
            use nix::sys::resource::{getrlimit, setrlimit, Resource};
            let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
            setrlimit(Resource::RLIMIT_NOFILE, 1024, hard)?;
            Ok(())
        });
    }
    let ran = run(c, "10,000 open files");
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(
        ran.stdout,
        format!("task soft limit 1024\n{n} open, 0 wrong\n"),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("ERROR"), "{}", ran.stderr);
    eprintln!("resources: {n} files open at once in the task (2,500 distinct inodes), vhrun started with 1,024: all read right");
}

#[test]
fn closed_stdio_in_the_task_or_in_vhrun() {
    let lab = Lab::new();
    let hololib_hash = tree_hash(&lab.hololib());
    // The task closes its own stdin, stdout and stderr.
    let ran = run(
        lab.exec(
            KEY,
            r#"exec 0<&- 1>&- 2>&-; cat "$CONDA_PREFIX/ssl/cacert.pem" > "$LAB/copy"; exit 3"#,
        ),
        "task closes stdio",
    );
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert_eq!(fs::read(lab.root().join("copy")).unwrap().len(), 265_969);
    // vhrun itself started with fds 0 and 1 closed: it puts /dev/null
    // there first (sys::startup, as std's start did), so /dev/fuse or a
    // cache file cannot take those numbers; the task must still run.
    let mut c = lab.exec(
        KEY,
        r#"cat "$CONDA_PREFIX/identity.yaml" > "$LAB/id" 2>"$LAB/id.err"; echo to-closed-stdout; exit 0"#,
    );
    let _ = fs::remove_dir_all(lab.vh().join("blobs"));
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    unsafe {
        c.pre_exec(|| {
            libc::close(0);
            libc::close(1);
            Ok(())
        });
    }
    let started = Instant::now();
    let ran = finish(
        c.spawn().unwrap(),
        started,
        HANG,
        "vhrun with fds 0 and 1 closed",
    );
    assert!(ran.code.is_some(), "{ran:?}");
    assert_eq!(
        fs::read(lab.root().join("id")).unwrap(),
        gunzip(&fs::read(lab.blob(ID_YAML)).unwrap()),
        "{}",
        fs::read_to_string(lab.root().join("id.err")).unwrap_or_default()
    );
    assert_eq!(tree_hash(&lab.hololib()), hololib_hash);
    verify_cache(&lab);
    // stdout a pipe nobody reads: the task gets SIGPIPE, vhrun passes 141 on.
    let mut c = lab.exec(KEY, "sleep 0.2; echo hello; echo again; exit 0");
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let ran = finish(child, Instant::now(), HANG, "stdout pipe closed");
    assert_eq!(ran.code, Some(141), "{ran:?}");
    eprintln!("resources: task closing its stdio, vhrun started with fds 0/1 closed, stdout a dead pipe: all handled");
}

#[test]
fn five_hundred_children() {
    let lab = Lab::new();
    let m = format!("{}9", std::process::id());
    let script = format!(
        r#"for i in $(seq 500); do (cat "$CONDA_PREFIX/ssl/cert.pem" > /dev/null; exec sleep 1000.{m}) & done
        sleep 1; ls /proc | grep -c '^[0-9]'; exit 0"#
    );
    let ran = run(lab.exec(KEY, &script), "500 children");
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let seen: u32 = ran.stdout.trim().parse().unwrap();
    assert!(seen > 500, "only {seen} processes in the run");
    wait_until("the 500 children are gone", Duration::from_secs(10), || {
        marked(&format!("1000.{m}")).is_empty()
    });
    eprintln!("resources: a task forking 500 children (each reading through the tree): exit 0, all 500 reaped");
}

// ---------------------------------------------------------------------
// 6. Isolation as an unprivileged user.

/// /dev/fuse opened to everyone for the test, its mode restored after.
static DEV_FUSE: Mutex<()> = Mutex::new(());

/// `vhrun exec` as uid 4321 (setpriv; no passwd entry needed), from a copy
/// of the binary that user can execute. The lab (hololib included) belongs
/// to that user, so only the sandbox keeps the task from writing it.
fn as_user(lab: &Lab, key: &str, script: &str) -> Command {
    common::require_tool("setpriv", "util-linux");
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={UNPRIVILEGED}"))
        .arg(format!("--regid={UNPRIVILEGED}"))
        .arg("--clear-groups")
        .arg(lab.root().join("bin/vhrun"))
        .args(["exec", "--catalog", key, "--", "sh", "-c", script])
        .env("HOME", HOME)
        .env("ROBOCORP_HOME", lab.rh())
        .env("VHRUN_HOME", lab.vh())
        .env("VHRUN_IMAGE", "off")
        .env("LAB", lab.root())
        .env_remove("VHRUN_LOG")
        .current_dir(lab.root())
        .stdin(Stdio::null());
    c
}

#[test]
fn unprivileged_task_cannot_write_the_store_see_other_runs_or_unmount() {
    let _serial = DEV_FUSE.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::new();
    fs::create_dir_all(lab.root().join("bin")).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_vhrun"), lab.root().join("bin/vhrun")).unwrap();
    fs::set_permissions(
        lab.root().join("bin/vhrun"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // A root run first fills the cache; then everything goes to the user.
    run(lab.exec(KEY, LIST_SUMS), "root warm-up").ok();
    chown_tree(lab.root(), UNPRIVILEGED);
    // The space mountpoint exists, empty, as after any earlier run.
    fs::create_dir_all(format!("{HOLOTREE}/59acff1_5a1fac3_9fcd2534")).unwrap();
    let _fuse = DevFuseOpen::new();
    let hololib_hash = tree_hash(&lab.hololib());
    let blob_file = lab.blob(ID_YAML);
    let cache_file = fs::read_dir(lab.vh().join("blobs/79"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    // Run A: writes a secret into its overlay and stays.
    fs::create_dir_all(lab.root().join("gate")).unwrap();
    chown_tree(&lab.root().join("gate"), UNPRIVILEGED);
    let mut a = as_user(
        &lab,
        KEY,
        r#"echo secret > "$CONDA_PREFIX/secret-of-A"; touch "$LAB/gate/a-ready"
        i=0; while [ ! -e "$LAB/gate/b-done" ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done
        cat "$CONDA_PREFIX/secret-of-A""#,
    );
    a.stdout(Stdio::piped()).stderr(Stdio::piped());
    let a_started = Instant::now();
    let a = a.spawn().unwrap();
    wait_until("run A ready", HANG, || {
        lab.root().join("gate/a-ready").exists()
    });

    let script = format!(
        r#"id -u
        grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status
        cat "$CONDA_PREFIX/identity.yaml" > /dev/null && echo reads-ok
        touch "$ROBOCORP_HOME/hololib/new" 2>/dev/null && echo WROTE-HOLOLIB
        echo x >> "{blob}" 2>/dev/null && echo WROTE-BLOB
        rm -f "{blob}" 2>/dev/null; test -e "{blob}" || echo REMOVED-BLOB
        chmod 777 "{blob}" 2>/dev/null && echo CHMOD-BLOB
        echo x >> "{cache}" 2>/dev/null && echo WROTE-CACHE
        touch "$VHRUN_HOME/blobs/new" 2>/dev/null && echo WROTE-CACHE-DIR
        echo "runs visible: $(ls -A "$VHRUN_HOME/runs" | wc -l)"
        test -e "$CONDA_PREFIX/secret-of-A" && echo SEES-A
        find "$VHRUN_HOME" "$LAB" -xdev -name 'secret-of-A' 2>/dev/null | grep -q . && echo FOUND-A
        echo "processes: $(ls /proc | grep -c '^[0-9]')"
        umount "$CONDA_PREFIX" 2>/dev/null && echo UNMOUNTED-ENV
        umount -l "$ROBOCORP_HOME/hololib" 2>/dev/null && echo UNMOUNTED-HOLOLIB
        mount -o remount,rw "$ROBOCORP_HOME/hololib" 2>/dev/null && echo REMOUNTED
        unshare -Urm sh -c 'umount -l "$ROBOCORP_HOME/hololib" 2>/dev/null && echo NESTED-UNMOUNT; mount -o remount,bind,rw "$ROBOCORP_HOME/hololib" 2>/dev/null && echo NESTED-REMOUNT; touch "$ROBOCORP_HOME/hololib/nested" 2>/dev/null && echo NESTED-WROTE; umount -l "$CONDA_PREFIX" 2>/dev/null && ls "$CONDA_PREFIX" | grep -q . && echo NESTED-ESCAPE'
        grep " $CONDA_PREFIX " /proc/self/mounts | grep -c overlay
        exit 5"#,
        blob = blob_file.display(),
        cache = cache_file.display()
    );
    let b = run(as_user(&lab, KEY, &script), "unprivileged run B");
    fs::write(lab.root().join("gate/b-done"), "").unwrap();
    let a = finish(a, a_started, HANG, "unprivileged run A");
    assert_eq!(a.code, Some(0), "{a:?}");
    assert_eq!(a.stdout, "secret\n");
    assert_eq!(b.code, Some(5), "{b:?}");
    let lines: Vec<&str> = b.stdout.lines().collect();
    assert_eq!(lines[0], UNPRIVILEGED.to_string(), "{}", b.stdout);
    for l in &lines[1..6] {
        let (name, value) = l.split_once(':').unwrap();
        assert_eq!(value.trim(), "0000000000000000", "{name}: {}", b.stdout);
    }
    assert_eq!(lines[6], "reads-ok", "{}{}", b.stdout, b.stderr);
    assert_eq!(lines[7], "runs visible: 0", "{}", b.stdout);
    let procs: u32 = lines[8].trim_start_matches("processes: ").parse().unwrap();
    assert!(procs < 10, "the task sees {procs} processes: {}", b.stdout);
    assert_eq!(&lines[9..], &["1"], "{}", b.stdout);
    assert_eq!(tree_hash(&lab.hololib()), hololib_hash, "hololib changed");
    assert!(!lab.hololib().join("new").exists() && !lab.hololib().join("nested").exists());
    verify_cache(&lab);

    // An unreadable blob (owned by root, mode 000, in the user's store):
    // EIO for that file, a line naming it and the blob.
    let _ = fs::remove_dir_all(lab.vh().join("blobs"));
    nix::unistd::chown(&blob_file, Some(0.into()), Some(0.into())).unwrap();
    fs::set_permissions(&blob_file, fs::Permissions::from_mode(0o000)).unwrap();
    // A tree of its own: the warm server's kernel cache still holds the
    // bytes it verified before (served without asking it, and right).
    let mut fresh = as_user(&lab, KEY, READ_THREE);
    fresh.env("VHRUN_SERVER", "off");
    let ran = run(fresh, "unreadable blob");
    assert_eq!(ran.code, Some(7), "{ran:?}");
    assert!(
        ran.stdout
            .starts_with("identity.yaml: Input/output error\n"),
        "{ran:?}"
    );
    assert!(
        ran.stdout
            .ends_with("ssl/cacert.pem: ok\nrcc_activate.sh: ok\n"),
        "{ran:?}"
    );
    let line = ran
        .stderr
        .lines()
        .find(|l| l.contains("/identity.yaml: blob"))
        .unwrap();
    assert!(
        line.contains(ID_YAML) && line.contains("Permission denied"),
        "{line}"
    );
    eprintln!(
        "isolation: unprivileged task has no capability, cannot write the hololib or the blob cache, \
         cannot see another run's overlay or runs/, cannot unmount or remount (nested namespaces included); \
         an unreadable blob answers EIO"
    );
}

// ---------------------------------------------------------------------
// 7. Stale state from older crashes.

fn set_mtime(p: &Path, ago: Duration) {
    let t = SystemTime::now() - ago;
    let ts = nix::sys::time::TimeSpec::from(t.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

#[test]
fn stale_state_is_cleaned_and_never_trusted() {
    let lab = Lab::new();
    // A first run writes the tree index and working set, garbled below.
    run(lab.exec(KEY, "true"), "index").ok();
    for d in ["index", "workset"] {
        for e in fs::read_dir(lab.vh().join(d)).unwrap() {
            fs::write(e.unwrap().path(), pseudo_random_bytes(300, 5)).unwrap();
        }
    }
    let content = gunzip(&fs::read(lab.blob(ID_YAML)).unwrap());
    let evil = b"evil".repeat(content.len() / 4 + 1)[..content.len()].to_vec();
    let dir = lab.vh().join("blobs").join(&ID_YAML[..2]);
    fs::create_dir_all(&dir).unwrap();
    // Temp files of killed writers, of the right size, with wrong bytes.
    let fresh_tmp = dir.join(format!(".{ID_YAML}.4242.0.tmp"));
    let old_tmp = dir.join(format!(".{ID_YAML}.4243.0.tmp"));
    let part = dir.join(format!("{ID_YAML}.part#3"));
    for p in [&fresh_tmp, &old_tmp, &part] {
        fs::write(p, &evil).unwrap();
    }
    set_mtime(&old_tmp, Duration::from_secs(2 * 3600));
    set_mtime(&part, Duration::from_secs(2 * 3600));
    // A cache entry at its final name that is a symlink to wrong bytes.
    let evil_file = lab.root().join("evil");
    fs::write(&evil_file, &evil).unwrap();
    std::os::unix::fs::symlink(&evil_file, dir.join(ID_YAML)).unwrap();
    // Run directories of crashed runs: unlocked, half removed, a .new-*.
    let runs = lab.vh().join("runs");
    let stale = runs.join("18aa0000-111");
    fs::create_dir_all(stale.join("upper/dir")).unwrap();
    fs::create_dir_all(stale.join("work/work")).unwrap();
    fs::create_dir_all(stale.join("lower")).unwrap();
    fs::write(stale.join("upper/dir/f"), "x").unwrap();
    fs::write(stale.join("lock"), "").unwrap();
    fs::write(
        stale.join("catalog"),
        lab.catalog_path(CATALOG).display().to_string(),
    )
    .unwrap();
    fs::set_permissions(stale.join("work/work"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(stale.join("upper/dir"), fs::Permissions::from_mode(0o500)).unwrap();
    let half = runs.join("18aa0000-222");
    fs::create_dir_all(half.join("upper")).unwrap();
    let new = runs.join(".new-18aa0000-333");
    fs::create_dir_all(new.join("upper")).unwrap();
    set_mtime(&new, Duration::from_secs(60));
    // A stale lock file of rcc's holotree lock, nobody holding it.
    fs::create_dir_all(lab.rh().join("holotree")).unwrap();
    fs::write(lab.rh().join("holotree/global.lck"), "").unwrap();

    let ran = run(
        lab.exec(KEY, r#"sha256sum < "$CONDA_PREFIX/identity.yaml""#),
        "run over stale state",
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout.starts_with(ID_YAML),
        "stale bytes served: {ran:?}"
    );
    assert!(
        !stale.exists() && !half.exists() && !new.exists(),
        "stale run dirs kept"
    );
    assert!(
        fs::symlink_metadata(dir.join(ID_YAML)).unwrap().is_file(),
        "the planted link was not replaced"
    );
    // gc: temp files older than an hour go, fresh ones (a live writer's) stay.
    let gc = run(
        {
            let mut c = lab.command();
            c.args(["gc", "--json"]);
            c
        },
        "gc",
    );
    assert_eq!(gc.code, Some(0), "{gc:?}");
    assert!(!old_tmp.exists() && !part.exists(), "{}", gc.stdout);
    assert!(fresh_tmp.exists());
    // An old run directory left by a crash is removed by gc as well.
    let crashed = runs.join("18aa0000-444");
    fs::create_dir_all(crashed.join("upper")).unwrap();
    fs::write(crashed.join("lock"), "").unwrap();
    set_mtime(&crashed, Duration::from_secs(40 * 86_400));
    let gc = run(
        {
            let mut c = lab.command();
            c.args(["gc", "--json"]);
            c
        },
        "gc of an old run dir",
    );
    assert_eq!(gc.code, Some(0), "{gc:?}");
    assert!(!crashed.exists(), "{}", gc.stdout);
    // rcc's lock file does not block a lift.
    lab.lift("afterlock", |d| fs::write(d.join("x"), "x").unwrap());
    let cache = verify_cache(&lab);
    eprintln!(
        "stale state: crashed run dirs (unlocked, half-removed, .new-*), temp blob files, a planted cache symlink, \
         garbage index and working set, a stale lock: cleaned or ignored, never served ({} cache files verified)",
        cache.verified
    );
}
