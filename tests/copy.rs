//! Copy mode on machines that refuse the virtual holotree, each refusal
//! made for real: an unprivileged user with `/dev/fuse` at 0600, a user
//! namespace whose `max_user_namespaces` is 0, an overlay upper layer on a
//! filesystem overlayfs will not take, a seccomp filter refusing unshare
//! and mount (Docker's default) for root. In each case the robot runs from a
//! restored copy (real Python from the space), with the exit code,
//! artifacts and variables of a virtual run; the hololib is unchanged, no
//! mount and no process is left, the second run reuses the space and a
//! dirtied space is repaired.
//!
//! Needs root (CI is root): it builds a Python environment once (vhrun's
//! own builder, from a local CPython), and drops to uid 4321 with setpriv.

mod common;
use common::{chown_tree, stderr, stdout, DevFuseOpen};

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

const USER: u32 = 4321;
const CONDA: &str = "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip=23.2.1\n";

/// The robot's tasks. `work` writes an artifact, leaves a process behind
/// (a new session, so only a subreaper finds it) and exits 3.
const ROBOT: &str = r#"tasks:
  work:
    shell: python task.py
  env:
    shell: python -c "import os, json; print(json.dumps(dict(os.environ), sort_keys=True))"
  wait:
    shell: python wait.py
  count:
    shell: python -c "import os; print(sum(len(f) for _, _, f in os.walk(os.environ['CONDA_PREFIX'])))"
condaConfigFile: conda.yaml
artifactsDir: output
"#;

const TASK: &str = r#"import os, subprocess, sys
marker = sys.argv[1]
out = os.environ["ROBOT_ARTIFACTS"]
with open(os.path.join(out, "done.txt"), "w") as f:
    f.write(sys.prefix + "\n" + os.environ["CONDA_PREFIX"] + "\n")
subprocess.Popen(["sh", "-c", 'exec -a "$0" sleep 300', marker], start_new_session=True)
sys.exit(3)
"#;

/// Exits 42 on SIGTERM.
const WAIT: &str = r#"import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))
print("ready", flush=True)
time.sleep(60)
"#;

struct Lab {
    root: PathBuf,
}

/// One lab for the file: a Python environment built once by root, then
/// the whole lab handed to the unprivileged user (its spaces included).
fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        common::require_root();
        common::require_tool("setpriv", "util-linux");
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("copy-lab");
        match fs::remove_dir_all(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", root.display()),
        }
        let lab = Lab { root };
        for uid in [Some(USER), None] {
            let dir = lab.robot(uid);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("conda.yaml"), CONDA).unwrap();
            fs::write(dir.join("robot.yaml"), ROBOT).unwrap();
            fs::write(dir.join("task.py"), TASK).unwrap();
            fs::write(dir.join("wait.py"), WAIT).unwrap();
        }
        fs::copy(env!("CARGO_BIN_EXE_vhrun"), lab.vhrun()).unwrap();
        let out = Command::new(lab.vhrun())
            .args(["build", "-r"])
            .arg(lab.robot(Some(USER)).join("robot.yaml"))
            .envs(lab.vars(Some(USER)))
            .env("VHRUN_RCC", "")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "build: {}", stderr(&out));
        fs::create_dir_all(lab.rh().join("temp")).unwrap();
        chown_tree(&lab.root, USER);
        chown_tree(&lab.robot(None), 0);
        fs::set_permissions(&lab.root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(lab.root.join("rh-root")).unwrap();
        std::os::unix::fs::symlink(
            lab.rh().join("vhrun/hololib"),
            lab.root.join("rh-root/hololib"),
        )
        .unwrap();
        lab
    })
}

/// One test at a time: `/dev/fuse`'s mode is machine-wide.
fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lab {
    /// The user's robot, and root's (artifacts root writes, the user
    /// could not overwrite).
    fn robot(&self, uid: Option<u32>) -> PathBuf {
        match uid {
            Some(_) => self.root.join("robot"),
            None => self.root.join("robot-root"),
        }
    }
    fn vhrun(&self) -> PathBuf {
        self.root.join("vhrun")
    }
    fn rh(&self) -> PathBuf {
        self.root.join("rh")
    }
    /// The user's homes hold the environment; root's runs get homes of
    /// their own (whatever root creates there, the user could not write)
    /// with the user's store as rcc's hololib. Both restore into the same
    /// holotree directory, where the catalog was built.
    fn vars(&self, uid: Option<u32>) -> Vec<(&'static str, PathBuf)> {
        let (rh, vh) = match uid {
            Some(_) => (self.rh(), self.rh().join("vhrun")),
            None => (self.root.join("rh-root"), self.root.join("vh-root")),
        };
        vec![
            ("HOME", self.root.clone()),
            ("ROBOCORP_HOME", rh),
            ("VHRUN_HOME", vh),
            ("VHRUN_IMAGE", PathBuf::from("off")),
        ]
    }

    /// `vhrun run -r robot.yaml --space SPACE ARGS`, as `uid` (root: None).
    fn run(&self, uid: Option<u32>, space: &str, args: &[&str]) -> Command {
        let mut c = match uid {
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg(self.vhrun());
                c
            }
            None => Command::new(self.vhrun()),
        };
        c.arg("run")
            .arg("-r")
            .arg(self.robot(uid).join("robot.yaml"))
            .args(["--space", space])
            .args(args)
            .envs(self.vars(uid))
            .env_remove("VHRUN_LOG")
            .env_remove("VHRUN_MODE")
            .stdin(Stdio::null());
        c
    }

    fn stats(&self, name: &str) -> PathBuf {
        self.root.join(format!("stats-{name}.json"))
    }

    /// The `count` task in `space` with `args`, through `wrap`, as `uid`:
    /// it must succeed; its `--stats-json` (in `stats(space)`).
    fn count(
        &self,
        wrap: impl Fn(Command) -> Command,
        uid: Option<u32>,
        space: &str,
        args: &[&str],
        what: &str,
    ) -> serde_json::Value {
        let stats = self.stats(space);
        let mut c = self.run(uid, space, &["-t", "count", "--stats-json"]);
        c.arg(&stats).args(args);
        let out = output(wrap(c));
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        json(&stats)
    }
}

fn output(mut c: Command) -> Output {
    c.output().unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Path -> sha256 (files) or "-> text" (symlinks) of everything below root.
fn tree_hash(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if m.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&p).unwrap().display()));
            } else if m.is_dir() {
                out.insert(rel, "dir".into());
                stack.push(p);
            } else {
                let mode = m.mode() & 0o7777;
                let hash = common::sha256_hex(&fs::read(&p).unwrap());
                out.insert(rel, format!("{hash} {mode:o}"));
            }
        }
    }
    out
}

/// Mounts of vhrun's (or in the lab), but for the tests' own overlay home.
fn vhrun_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains("vhrun") || l.contains("copy-lab"))
        .filter(|l| !l.contains("copy-lab/ovl-home/m "))
        .map(str::to_string)
        .collect()
}

fn alive_with(marker: &str) -> Vec<i32> {
    common::processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with(marker.as_bytes()))
        .map(|(pid, _)| pid)
        .collect()
}

/// The `work` task from a copy, as `uid`: exit 3, the artifact, nothing
/// left running, the hololib untouched; the warning names `refusal`.
/// Returns the space path.
fn work_runs_from_a_copy(
    wrap: impl Fn(Command) -> Command,
    uid: Option<u32>,
    space: &str,
    refusal: &str,
) -> PathBuf {
    let lab = lab();
    let hololib = tree_hash(&lab.rh().join("vhrun/hololib"));
    let marker = format!("vhrun-copy-{space}-{}", std::process::id());
    let stats = lab.stats(space);
    let _ = fs::remove_file(lab.robot(uid).join("output/done.txt"));
    let mut c = lab.run(uid, space, &["-t", "work", "--stats-json"]);
    c.arg(&stats).args(["--", &marker]);
    let out = output(wrap(c));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning line: {err}");
    assert!(
        warnings[0].contains(refusal) && warnings[0].contains("running from a copy"),
        "{err}"
    );
    let s = json(&stats);
    assert_eq!(s["mode"], "copy", "{s}");
    assert_eq!(s["exit_code"], 3);
    let env = PathBuf::from(s["environment"].as_str().unwrap());
    let done = fs::read_to_string(lab.robot(uid).join("output/done.txt")).unwrap();
    let prefix = format!("{}\n{}\n", env.display(), env.display());
    assert_eq!(done, prefix, "the task's Python ran from the space");
    assert!(
        alive_with(&marker).is_empty(),
        "the task's process was left running"
    );
    assert!(vhrun_mounts().is_empty(), "{:?}", vhrun_mounts());
    assert_eq!(tree_hash(&lab.rh().join("vhrun/hololib")), hololib);
    env
}

/// A second run reuses the space; one after the space was dirtied (a
/// same-size edit with the mtime set back, a deleted file, added entries)
/// repairs exactly that.
fn reuse_and_repair(wrap: impl Fn(Command) -> Command, uid: Option<u32>, space: &str) {
    let lab = lab();
    let stats = lab.stats(space);
    let env = PathBuf::from(json(&stats)["environment"].as_str().unwrap());
    let pristine = tree_hash(&env);
    let count = |what: &str| lab.count(&wrap, uid, space, &[], what)["copy"].clone();
    let again = count("second run");
    assert_eq!(again["state"], "reused", "{again}");
    assert_eq!(again["restored"], 0);
    assert_eq!(again["bytes_written"], 0);
    assert_eq!(tree_hash(&env), pristine);

    let os_py = env.join("lib/python3.11/os.py");
    let mut data = fs::read(&os_py).unwrap();
    data[0] ^= 0x20;
    fs::write(&os_py, &data).unwrap();
    let t = fs::FileTimes::new()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_610_000_000));
    fs::File::options()
        .write(true)
        .open(&os_py)
        .unwrap()
        .set_times(t)
        .unwrap();
    fs::remove_file(env.join("lib/python3.11/json/decoder.py")).unwrap();
    fs::write(env.join("extra.txt"), "added\n").unwrap();
    fs::create_dir_all(env.join("extra_dir/sub")).unwrap();
    // The dirt is the run's user's, as a task of theirs would leave it.
    for p in ["extra.txt", "extra_dir"] {
        chown_tree(&env.join(p), uid.unwrap_or(0));
    }
    let fixed = count("dirtied");
    assert_eq!(fixed["state"], "repaired", "{fixed}");
    assert_eq!(fixed["repaired"], 1, "{fixed}");
    assert_eq!(fixed["restored"], 1, "{fixed}");
    assert_eq!(fixed["removed"], 2, "{fixed}");
    assert_eq!(
        tree_hash(&env),
        pristine,
        "the space is the catalog's again"
    );
    let clean = count("after the repair");
    assert_eq!(clean["state"], "reused", "{clean}");
}

#[test]
fn unprivileged_user_without_dev_fuse_runs_from_a_copy() {
    let _s = serial();
    let lab = lab();
    let _fuse = DevFuseOpen::with_mode(0o600);
    let id = |c| c;
    work_runs_from_a_copy(id, Some(USER), "nofuse", "no usable /dev/fuse");
    reuse_and_repair(id, Some(USER), "nofuse");
    // --mode virtual refuses instead, with one line naming /dev/fuse.
    let out = output(lab.run(Some(USER), "nofuse", &["-t", "count", "--mode", "virtual"]));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("/dev/fuse") && !err.contains("copy"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // doctor says which mode this machine gets, and why.
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg("--clear-groups")
        .arg(lab.vhrun())
        .arg("doctor")
        .envs(lab.vars(Some(USER)));
    let doctor = stdout(&output(c));
    assert!(
        doctor.contains("mode: copy (no usable /dev/fuse"),
        "{doctor}"
    );
}

/// `cmd` inside a user namespace (ids 0-65535 mapped to themselves) whose
/// `max_user_namespaces` is 0: the kernel refuses any user namespace below
/// it. The maps are written by root from outside (no newuidmap here): the
/// child waits on a fifo until they are there.
fn output_in_userns_without_userns(cmd: Command) -> Output {
    let fifo = lab().root.join(format!("fifo-{}", std::process::id()));
    let _ = fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--user", "--mount", "--", "sh", "-c"])
        // sh runs as an unmapped uid until the maps exist, and exec drops
        // its capabilities: exec again (as root of the namespace) first.
        .arg(r#"read _ < "$0" && exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"' sh "$@""#)
        .arg(&fifo);
    let mut c = common::wrapped(unshare, &cmd);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let own = fs::read_link("/proc/self/ns/user").unwrap();
    common::wait_until(
        "the child's user namespace",
        std::time::Duration::from_secs(10),
        || fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|ns| ns != own),
    );
    fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536").unwrap();
    fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536").unwrap();
    fs::write(&fifo, "go\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let _ = fs::remove_file(&fifo);
    out
}

#[test]
fn user_namespaces_refused_runs_from_a_copy() {
    let _s = serial();
    // /dev/fuse usable: only the user namespace is refused.
    let _fuse = DevFuseOpen::new();
    let lab = lab();
    let space = "nouserns";
    let marker = format!("vhrun-copy-{space}-{}", std::process::id());
    let stats = lab.stats(space);
    let hololib = tree_hash(&lab.rh().join("vhrun/hololib"));
    let mut c = lab.run(Some(USER), space, &["-t", "work", "--stats-json"]);
    c.arg(&stats).args(["--", &marker]);
    let out = output_in_userns_without_userns(c);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(warnings[0].contains("user namespaces refused"), "{err}");
    let s = json(&stats);
    assert_eq!(s["copy"]["refused"], "user_namespace", "{s}");
    assert!(alive_with(&marker).is_empty());
    assert!(vhrun_mounts().is_empty(), "{:?}", vhrun_mounts());
    assert_eq!(tree_hash(&lab.rh().join("vhrun/hololib")), hololib);
    // A repair, in the same kind of namespace.
    let env = PathBuf::from(s["environment"].as_str().unwrap());
    let pristine = tree_hash(&env);
    fs::remove_file(env.join("lib/python3.11/json/decoder.py")).unwrap();
    let mut c = lab.run(Some(USER), space, &["-t", "count", "--stats-json"]);
    c.arg(&stats);
    let out = output_in_userns_without_userns(c);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let copy = json(&stats)["copy"].clone();
    assert_eq!(copy["state"], "repaired", "{copy}");
    assert_eq!(copy["restored"], 1, "{copy}");
    assert_eq!(tree_hash(&env), pristine);
}

/// An overlay mount holding VHRUN_HOME: overlayfs refuses an upper layer
/// on another overlay ("not supported as upperdir", EINVAL).
struct OverlayHome {
    dir: PathBuf,
}

impl OverlayHome {
    fn new(name: &str) -> OverlayHome {
        let dir = lab().root.join(name);
        for d in ["l", "u", "w", "m"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        let opts = format!("lowerdir={0}/l,upperdir={0}/u,workdir={0}/w", dir.display());
        nix::mount::mount(
            Some("overlay"),
            &dir.join("m"),
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap();
        OverlayHome { dir }
    }
    fn home(&self) -> PathBuf {
        self.dir.join("m")
    }
}

impl Drop for OverlayHome {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.home(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_home_on_overlayfs_runs_virtually_and_refuses_a_kept_overlay_there() {
    let _s = serial();
    let ovl = OverlayHome::new("ovl-home");
    let home = ovl.home();
    let lab = lab();
    // The write layer lives on the run's own tmpfs, which overlayfs takes:
    // once this machine's runs all went to a copy.
    let stats = lab.stats("noovl");
    let _ = fs::remove_file(lab.robot(None).join("output/done.txt"));
    let mut c = lab.run(None, "noovl", &["-t", "work", "--stats-json"]);
    c.arg(&stats)
        .args(["--", "marker"])
        .env("VHRUN_HOME", &home)
        .env("VHRUN_SERVER", "off");
    let out = output(c);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(json(&stats)["mode"], "virtual", "{}", stderr(&out));
    assert!(lab.robot(None).join("output/done.txt").exists());
    // A write layer kept on disk meets the refusal, and says it.
    let keep = lab.root.join("ovl-keep");
    let _ = fs::remove_dir_all(&keep);
    let mut c = lab.run(None, "noovl", &["-t", "work", "--mode", "virtual"]);
    c.arg("--keep-overlay")
        .arg(&keep)
        .args(["--", "marker"])
        .env("VHRUN_HOME", &home)
        .env("VHRUN_SERVER", "off");
    let out = output(c);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("mounting overlayfs") && err.contains("upper layer"),
        "{err}"
    );
    drop(ovl);
    assert!(vhrun_mounts().is_empty(), "{:?}", vhrun_mounts());
}

#[test]
fn copy_and_virtual_runs_see_the_same_variables() {
    let _s = serial();
    let lab = lab();
    let env_of = |mode: &str| {
        let out = output(lab.run(None, "same", &["-t", "env", "--mode", mode]));
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", stderr(&out));
        let mut vars: BTreeMap<String, String> = serde_json::from_str(&stdout(&out)).unwrap();
        // rcc's per-run temporary directory differs between any two runs.
        for k in ["TEMP", "TMP"] {
            assert!(vars.remove(k).is_some(), "{k} missing");
        }
        vars
    };
    let copy = env_of("copy");
    let virt = env_of("virtual");
    assert_eq!(copy, virt);
    assert!(copy["CONDA_PREFIX"].contains("/holotree/"), "{copy:?}");
}

#[test]
fn concurrent_runs_never_see_a_half_restored_space() {
    let _s = serial();
    let lab = lab();
    let spawn = || {
        lab.run(None, "together", &["-t", "count", "--mode", "copy"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    }
    let after = output(lab.run(None, "together", &["-t", "count", "--mode", "copy"]));
    let n = stdout(&after);
    assert!(n.trim().parse::<u64>().unwrap() > 1000, "{n}");
    assert_eq!(stdout(&a), n, "{}", stderr(&a));
    assert_eq!(stdout(&b), n, "{}", stderr(&b));
}

#[test]
fn signals_reach_the_task_of_a_copy() {
    let _s = serial();
    let lab = lab();
    let mut c = lab.run(None, "signals", &["-t", "wait", "--mode", "copy"]);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "the task's SIGTERM handler ran");
}

#[test]
fn seccomp_refusing_unshare_and_mount_runs_root_from_a_copy() {
    let _s = serial();
    common::require_tool("python3", "python3");
    let filter = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/no-mounts.py");
    // Root, as in a default Docker container: the warm server, the
    // per-run mount and the image path all need unshare or mount.
    let wrap = |c: Command| {
        let mut python = Command::new("python3");
        python.arg(&filter);
        let mut w = common::wrapped(python, &c);
        w.stdin(Stdio::null());
        w
    };
    work_runs_from_a_copy(wrap, None, "seccomp", "mount namespaces refused");
    reuse_and_repair(wrap, None, "seccomp");
}

/// A space copy mode restored is clean for rcc (its restore finds nothing
/// to do: vhrun wrote rcc's `.meta`), and rcc's visit leaves it reusable.
#[test]
#[ignore = "interop: needs the real rcc in ../shared/tools/rcc"]
fn rcc_finds_a_space_copy_mode_restored_clean() {
    let _s = serial();
    let lab = lab();
    let rcc = common::shared_tool("rcc");
    let space = "withrcc";
    let first = |what: &str| {
        let s = lab.count(|c| c, None, space, &["--mode", "copy"], what);
        s["copy"]["state"].as_str().unwrap().to_string()
    };
    assert_eq!(first("restore"), "restored");
    // rcc gets a home of its own with a copy of the hololib: it touches
    // catalogs and writes hololib/used.
    let rh = lab.root.join("rh-rcc");
    let _ = fs::remove_dir_all(&rh);
    fs::create_dir_all(&rh).unwrap();
    let cp = Command::new("cp")
        .arg("-a")
        .arg(lab.rh().join("vhrun/hololib"))
        .arg(rh.join("hololib"))
        .status()
        .unwrap();
    assert!(cp.success());
    let out = Command::new(&rcc)
        .args([
            "holotree",
            "variables",
            "--bundled",
            "--debug",
            "--space",
            space,
            "--json",
        ])
        .arg(lab.robot(None).join("conda.yaml"))
        .env("HOME", &lab.root)
        .env("ROBOCORP_HOME", &rh)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "rcc: {err}");
    let dirty = err
        .lines()
        .find_map(|l| l.split("Holotree dirty workload: ").nth(1))
        .unwrap_or_else(|| panic!("no dirty workload line from rcc: {err}"));
    assert!(dirty.trim().starts_with("0/"), "rcc rewrote files: {dirty}");
    assert_eq!(first("after rcc"), "reused");
    let _ = fs::remove_dir_all(&rh);
}

/// vhrun killed (SIGKILL) in the middle of a restore: the next run finds
/// the half-written space and makes it exactly what a clean restore makes.
#[test]
fn a_restore_killed_half_way_is_finished_by_the_next_run() {
    let _s = serial();
    let lab = lab();
    let space = "killed";
    let run = || {
        let s = lab.count(|c| c, None, space, &["--mode", "copy"], "copy run");
        (
            PathBuf::from(s["environment"].as_str().unwrap()),
            s["copy"]["state"].as_str().unwrap().to_string(),
        )
    };
    let (env, _) = run();
    let wipe = |env: &Path| {
        let _ = fs::remove_dir_all(env);
        for ext in [".meta", ".meta.info", ".vhrun", ".use", ".lck"] {
            let mut p = env.as_os_str().to_owned();
            p.push(ext);
            let _ = fs::remove_file(PathBuf::from(p));
        }
    };
    wipe(&env);
    let clean = {
        run();
        tree_hash(&env)
    };
    wipe(&env);
    // Kill it once the restore has written some of the space's files.
    let mut child = lab
        .run(None, space, &["-t", "count", "--mode", "copy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let python = env.join("lib/python3.11");
    common::wait_until(
        "the restore to start",
        std::time::Duration::from_secs(30),
        || fs::read_dir(&python).is_ok_and(|mut d| d.next().is_some()),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let mut stamp = env.as_os_str().to_owned();
    stamp.push(".vhrun");
    assert!(
        !PathBuf::from(stamp).exists(),
        "the restore finished before the kill: the test proves nothing"
    );
    let (_, state) = run();
    assert_eq!(
        state, "restored",
        "no stamp: the space is written whole again"
    );
    assert_eq!(tree_hash(&env), clean);
    assert_eq!(run().1, "reused");
}
