//! The kernel image data path (`src/image.rs`), as root on the real kernel:
//! `vhrun prepare` writes an EROFS image that `fsck.erofs` accepts, runs
//! mount it under their overlay with the blob cache as a data-only layer,
//! and what the task sees is exactly what the FUSE tree shows; writes stay
//! in the run; the warm server builds the image once a catalog is run
//! again; a broken image falls back to FUSE; gc removes images of catalogs
//! that are gone.

mod common;

use common::FixtureRobot;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Walks a tree and prints one line per entry: path, mode, size, owner,
/// mtime, and the content's sha256 or the link text.
const MANIFEST: &str = r#"
import hashlib, os, stat, sys
root = sys.argv[1]
for dp, dns, fns in os.walk(root):
    dns.sort()
    for n in sorted(dns + fns):
        p = os.path.join(dp, n)
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            extra = os.readlink(p)
        elif stat.S_ISREG(st.st_mode):
            extra = hashlib.sha256(open(p, "rb").read()).hexdigest()
        else:
            extra = "nlink=%d" % st.st_nlink
        size = "-" if stat.S_ISDIR(st.st_mode) else st.st_size
        print(os.path.relpath(p, root), oct(st.st_mode), size, st.st_uid, st.st_gid, int(st.st_mtime), extra)
"#;

fn fixture() -> FixtureRobot {
    FixtureRobot::new("tasks:\n  t:\n    shell: \"true\"\n")
}

/// vhrun with the kernel image allowed (the fixture switches it off).
fn vhrun(fx: &FixtureRobot) -> Command {
    let mut c = fx.vhrun();
    c.env_remove("VHRUN_IMAGE");
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn prepare(fx: &FixtureRobot) -> PathBuf {
    let out = ok(vhrun(fx)
        .args(["prepare", "-r"])
        .arg(fx.robot_yaml())
        .output()
        .unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image ready"), "{err}");
    the_image(fx).expect("prepare left an image")
}

/// `fsck.erofs IMAGE` succeeds (its complaint otherwise).
fn fsck_accepts(image: &Path) -> Result<(), String> {
    common::require_tool("fsck.erofs", "erofs-utils");
    let out = Command::new("fsck.erofs")
        .arg(image)
        .output()
        .expect("fsck.erofs (apt install erofs-utils) checks the images vhrun writes");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "fsck.erofs: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn the_image(fx: &FixtureRobot) -> Option<PathBuf> {
    let dir = fx.vhrun_home.join("images");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("image.json").is_file())
        .collect();
    assert!(found.len() <= 1, "{found:?}");
    found.pop()
}

/// Run `sh -c script` in the robot's environment; returns stdout and the
/// run's `--stats-json`.
fn exec(fx: &FixtureRobot, env: &[(&str, &str)], script: &str) -> (String, serde_json::Value) {
    let stats = fx.tmp.path().join("stats.json");
    let mut c = vhrun(fx);
    c.args(["exec", "-r"])
        .arg(fx.robot_yaml())
        .arg("--stats-json")
        .arg(&stats)
        .args(["--", "sh", "-c", script]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = ok(c.output().unwrap());
    let json = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    (String::from_utf8(out.stdout).unwrap(), json)
}

fn manifest(fx: &FixtureRobot, env: &[(&str, &str)]) -> (String, serde_json::Value) {
    let script = fx.tmp.path().join("manifest.py");
    std::fs::write(&script, MANIFEST).unwrap();
    exec(
        fx,
        env,
        &format!("/usr/bin/python3 {} \"$CONDA_PREFIX\"", script.display()),
    )
}

const FUSE: &[(&str, &str)] = &[("VHRUN_IMAGE", "off"), ("VHRUN_SERVER", "off")];

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let md = e.path().symlink_metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap(), md.mode()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_image_shows_exactly_the_fuse_tree_and_fsck_accepts_it() {
    let fx = fixture();
    let image = prepare(&fx);
    fsck_accepts(&image.join("image.erofs")).unwrap();

    let (by_image, stats) = manifest(&fx, &[]);
    assert_eq!(
        stats["image"].as_str().map(PathBuf::from),
        Some(image.clone()),
        "{stats}"
    );
    assert_eq!(stats["server"], serde_json::Value::Null);
    assert_eq!(stats["fuse"]["requests"], 0);
    let (by_fuse, stats) = manifest(&fx, FUSE);
    assert_eq!(stats["image"], serde_json::Value::Null);
    assert!(stats["fuse"]["requests"].as_u64().unwrap() > 0, "{stats}");
    assert!(by_fuse.lines().count() > 5, "{by_fuse}");
    assert_eq!(by_image, by_fuse);
}

/// A robot whose environment is a lifted directory with what the fixture
/// lacks: symlinks (relative, dangling, to a directory), empty and large
/// files, odd modes, a file holding the environment's own path (relocated
/// per space), a directory spanning several EROFS blocks, a 255-byte name.
/// `raw`: a `compress.no` hololib, served in place.
fn lifted(raw: bool) -> FixtureRobot {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let fx = FixtureRobot::without_import("tasks:\n  t:\n    shell: \"true\"\n");
    // 24 bytes, as an rcc space name: the catalog's identity.
    let dir = fx.tmp.path().join("envs").join("lifted_env_for_images_24");
    let sub = dir.join("lib/pkg");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("__init__.py"), b"print('hello')\n").unwrap();
    std::fs::write(sub.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(sub.join("big.bin"), &big).unwrap();
    std::fs::write(
        dir.join("prefix.txt"),
        format!("prefix={}\nagain {}/bin\n", dir.display(), dir.display()),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("bin/tool"), b"#!/bin/sh\necho tool ran\n").unwrap();
    let mode = |p: PathBuf, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(dir.join("bin/tool"), 0o755);
    std::fs::write(dir.join("secret"), b"only me").unwrap();
    mode(dir.join("secret"), 0o600);
    symlink("tool", dir.join("bin/tool-link")).unwrap();
    symlink("../lib/pkg", dir.join("bin/pkg-dir")).unwrap();
    symlink("nowhere", dir.join("dangling")).unwrap();
    let many = dir.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..700 {
        let name = format!("entry-{i:04}-{}", "x".repeat(i % 40));
        std::fs::write(many.join(name), i.to_string()).unwrap();
    }
    std::fs::write(dir.join("n".repeat(255)), b"long name").unwrap();
    let mut lift = fx.vhrun();
    lift.arg("lift")
        .arg(&dir)
        .arg("--blueprint")
        .arg(fx.dir.join("conda.yaml"));
    if raw {
        lift.arg("--no-compress");
    }
    ok(lift.output().unwrap());
    fx
}

#[test]
fn lifted_environments_gzip_and_raw_look_the_same_through_image_and_fuse() {
    for raw in [false, true] {
        let fx = lifted(raw);
        let image = prepare(&fx);
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(image.join("image.json")).unwrap()).unwrap();
        // Raw blobs are read from the hololib's library, never linked.
        assert_eq!(meta["library"].is_string(), raw, "{meta}");
        fsck_accepts(&image.join("image.erofs")).unwrap();
        let (by_image, stats) = manifest(&fx, &[]);
        assert!(stats["image"].is_string(), "{stats}");
        let (by_fuse, _) = manifest(&fx, FUSE);
        assert_eq!(by_image, by_fuse, "raw={raw}");
        let want = [
            "bin/tool-link",
            "dangling",
            "many/entry-0699",
            "0o100600",
            "0o100755",
        ];
        for w in want {
            assert!(by_image.contains(w), "{w} missing (raw={raw}):\n{by_image}");
        }
        let entries = by_image.lines().filter(|l| l.starts_with("many/"));
        assert_eq!(entries.count(), 700);
        // Relocated to the space's path; the tool runs through its link.
        let (out, _) = exec(
            &fx,
            &[],
            "cat \"$CONDA_PREFIX/prefix.txt\" && \"$CONDA_PREFIX/bin/tool-link\" && \
             cat \"$CONDA_PREFIX/bin/pkg-dir/__init__.py\"",
        );
        let space = stats["environment"].as_str().unwrap();
        assert_eq!(
            out,
            format!("prefix={space}\nagain {space}/bin\ntool ran\nprint('hello')\n"),
            "raw={raw}"
        );
    }
}

#[test]
fn writes_stay_in_the_run_and_never_reach_the_cache_or_the_image() {
    let fx = fixture();
    let image = prepare(&fx);
    let before_data = snapshot(&image);
    let before_blobs = snapshot(&fx.vhrun_home.join("blobs"));
    // The first regular file of the environment, written through, chmodded
    // and deleted, and a new file beside it.
    let pick = "f=$(find \"$CONDA_PREFIX\" -type f -size +0 | sort | head -n1)";
    let (out, stats) = exec(
        &fx,
        &[],
        &format!(
            "{pick}; cat \"$f\" | sha256sum; printf '\\nchanged\\n' >> \"$f\" && chmod 600 \"$f\" && \
             tail -n1 \"$f\" && stat -c %a \"$f\" && rm \"$f\" && test ! -e \"$f\" && \
             echo new > \"$CONDA_PREFIX/new-file\" && cat \"$CONDA_PREFIX/new-file\""
        ),
    );
    assert_eq!(
        stats["image"].as_str().map(PathBuf::from),
        Some(image.clone())
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(&lines[1..], ["changed", "600", "new"], "{out}");
    // The next run sees the environment as it was.
    let (again, _) = exec(
        &fx,
        &[],
        &format!(
            "{pick}; cat \"$f\" | sha256sum; test ! -e \"$CONDA_PREFIX/new-file\" && echo clean"
        ),
    );
    assert_eq!(again.lines().collect::<Vec<_>>(), [lines[0], "clean"]);
    // Nor through the image's own directory: its data/ links are cache files.
    let (denied, _) = exec(
        &fx,
        &[],
        &format!(
            "f=$(find {} -type f | head -n1); test -n \"$f\" && \
             if echo x >> \"$f\"; then echo wrote; else echo refused; fi",
            image.join("data").display()
        ),
    );
    assert_eq!(denied.trim(), "refused");
    assert_eq!(snapshot(&image), before_data);
    assert_eq!(snapshot(&fx.vhrun_home.join("blobs")), before_blobs);
}

#[test]
fn the_warm_server_builds_the_image_once_the_environment_is_run_again() {
    let fx = fixture();
    let env = [("VHRUN_SERVER_IDLE", "30")];
    let (_, first) = exec(&fx, &env, "true");
    assert_eq!(first["image"], serde_json::Value::Null);
    assert_eq!(first["server"]["runs_before"], 0, "{first}");
    // A one-off run leaves no background work behind (a fixture image
    // takes ~50 ms to build).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(the_image(&fx).is_none(), "built after a single run");
    let (_, second) = exec(&fx, &env, "true");
    assert_eq!(second["server"]["runs_before"], 1, "{second}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let image = loop {
        if let Some(i) = the_image(&fx) {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no image within 60 s; server logs in {}",
            fx.vhrun_home.join("servers").display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (_, third) = exec(&fx, &env, "true");
    assert_eq!(third["image"].as_str().map(PathBuf::from), Some(image));
    assert_eq!(third["server"], serde_json::Value::Null);
    ok(vhrun(&fx).args(["servers", "--stop"]).output().unwrap());
}

#[test]
fn a_broken_image_falls_back_to_fuse_and_the_run_succeeds() {
    let fx = fixture();
    let image = prepare(&fx);
    std::fs::write(image.join("image.erofs"), vec![0x5a; 8192]).unwrap();
    let stats = fx.tmp.path().join("stats.json");
    let out = ok(vhrun(&fx)
        .env("VHRUN_SERVER", "off")
        .args(["exec", "-r"])
        .arg(fx.robot_yaml())
        .arg("--stats-json")
        .arg(&stats)
        .args(["--", "sh", "-c", "ls \"$CONDA_PREFIX\" | head -n1"])
        .output()
        .unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serving the tree with FUSE instead"), "{err}");
    assert!(err.contains("image.erofs"), "{err}");
    assert!(!out.stdout.is_empty());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    assert_eq!(json["image"], serde_json::Value::Null);
    assert!(json["fuse"]["requests"].as_u64().unwrap() > 0);

    // A directory runs no longer trust (no image.json) is replaced by
    // the next prepare, and runs use the new image.
    std::fs::remove_file(image.join("image.json")).unwrap();
    assert_eq!(prepare(&fx), image);
    let (_, json) = exec(&fx, &[], "true");
    assert_eq!(json["image"].as_str().map(PathBuf::from), Some(image));
}

#[test]
fn gc_keeps_used_images_and_removes_those_of_a_gone_catalog() {
    let fx = fixture();
    let image = prepare(&fx);
    let gc = |fx: &FixtureRobot| {
        let out = ok(vhrun(fx)
            .args(["gc", "--days", "30", "--json"])
            .output()
            .unwrap());
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    gc(&fx);
    assert!(image.is_dir(), "a fresh image of a present catalog is kept");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("image.json")).unwrap()).unwrap();
    let catalog = PathBuf::from(meta["catalog"].as_str().unwrap());
    std::fs::remove_file(&catalog).unwrap();
    let report = gc(&fx);
    assert!(!image.exists(), "{report}");
    assert!(
        report["removed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["reason"] == "image of a catalog that is gone"),
        "{report}"
    );
}

#[test]
fn prepare_as_a_user_says_runs_use_fuse() {
    let fx = fixture();
    common::chown_tree(fx.tmp.path(), 4321);
    let out = vhrun(&fx)
        .args(["prepare", "-r"])
        .arg(fx.robot_yaml())
        .uid(4321)
        .gid(4321)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("the kernel image needs root"), "{err}");
    assert!(the_image(&fx).is_none());
}

use std::os::unix::process::CommandExt;

/// Over the image vhrun returns without waiting for the teardown of the
/// run's mounts: whatever the task left running must still be gone by
/// then, not some moments later, and the exit code is the task's.
#[test]
fn what_the_task_left_running_is_gone_when_the_run_returns() {
    let fx = fixture();
    prepare(&fx);
    let lock = fx.tmp.path().join("leftover.lock");
    let ready = fx.tmp.path().join("leftover.ready");
    // The leftover holds a lock until its very end, and dies slowly: its
    // exit frees 512 MiB first. A vhrun that returned before the leftover
    // was reaped would leave the lock taken.
    let leftover = format!(
        "import fcntl, time; f = open('{}', 'w'); fcntl.flock(f, fcntl.LOCK_EX); \
         b = bytearray(b'x') * (512 << 20); open('{}', 'w').close(); time.sleep(300)",
        lock.display(),
        ready.display()
    );
    for round in 0..3 {
        let _ = std::fs::remove_file(&ready);
        // No --stats: a run that measures its overlay waits for the
        // teardown, and this is about the one that does not.
        let out = vhrun(&fx)
            .env("VHRUN_LOG", "vhrun=debug")
            .args(["exec", "-r"])
            .arg(fx.robot_yaml())
            .args(["--", "sh", "-c"])
            .arg(format!(
                "grep -c ' - erofs ' /proc/self/mountinfo; \
                 (/usr/bin/python3 -c \"{leftover}\" </dev/null >/dev/null 2>&1 &) ; \
                 while [ ! -e {} ]; do sleep 0.01; done; exit 5",
                ready.display()
            ))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "round {round}: {err}");
        // Over the image, and vhrun did not wait for the reaper's exit.
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "1",
            "round {round}"
        );
        assert!(
            err.contains("its namespace's teardown is the reaper's"),
            "round {round}: {err}"
        );
        let f = std::fs::File::open(&lock).unwrap();
        assert!(
            nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok(),
            "round {round}: the task's leftover process still holds its lock"
        );
    }
}

/// vhrun SIGKILLed while its task runs over the image: the task goes with
/// it, nothing stays mounted, and the next run mounts the image again.
#[test]
fn a_killed_run_leaves_no_mount_and_the_image_serves_the_next() {
    let fx = fixture();
    let image = prepare(&fx);
    let mounts = || std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let before = mounts();
    let started = fx.tmp.path().join("started");
    let pidfile = fx.tmp.path().join("task.pid");
    let mut child = vhrun(&fx)
        .args(["exec", "-r"])
        .arg(fx.robot_yaml())
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo $$ > {}; ls \"$CONDA_PREFIX\" > {}; exec sleep 60",
            pidfile.display(),
            started.display()
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read(&started).is_ok_and(|b| !b.is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the task never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    // The task's pid is its PID namespace's view: find it by its start
    // marker instead, i.e. wait until no `sleep 60` of ours is left.
    let image_path = image.join("image.erofs").display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sleeping = std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0060\x00")
                && std::fs::read_link(p.path().join("cwd")).is_ok_and(|d| d == fx.dir)
        });
        if !sleeping {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the task outlived vhrun"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let after = mounts();
    assert!(!after.contains(&image_path), "{after}");
    assert_eq!(
        before.lines().count(),
        after.lines().count(),
        "host mounts changed"
    );
    let (out, stats) = exec(&fx, &[], "ls \"$CONDA_PREFIX\"");
    assert_eq!(stats["image"].as_str().map(PathBuf::from), Some(image));
    assert_eq!(out, std::fs::read_to_string(&started).unwrap());
}

mod writer {
    //! `vhrun::lower::erofs::write` against independent readers: random trees
    //! (odd and 255-byte names, empty and multi-block directories, files
    //! of many sizes and modes, long symlink texts) become images that
    //! vhrun's own reader parses back as exactly the tree described,
    //! attribute by attribute, xattrs included; that `fsck.erofs` accepts;
    //! and that the kernel mounts as the same tree (`fsck.erofs --extract`
    //! cannot be the oracle: it leaves all-hole files empty).

    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;
    use vhrun::lower::erofs::format::{CHUNK_BASED, FLAT_PLAIN, S_IFDIR, S_IFLNK, S_IFREG};
    use vhrun::lower::erofs::reader::{Image, Node as Seen};
    use vhrun::lower::erofs::{self, Body, Entry};

    #[derive(Debug, Clone)]
    enum Node {
        Dir(BTreeMap<Vec<u8>, Node>),
        File {
            size: u64,
            perm: u16,
            redirect: Vec<u8>,
        },
        Link(Vec<u8>),
    }

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-zA-Z0-9._ ~+=,-]{1,12}",
            "[a-z]{250,255}",
            "[\u{e9}\u{4e2d}\u{1f600}a]{1,20}",
        ]
        .prop_filter("not . or ..", |s| s != "." && s != "..")
        .prop_map(String::into_bytes)
    }

    fn leaf() -> impl Strategy<Value = Node> {
        prop_oneof![
            4 => (prop_oneof![Just(0u64), 1u64..5000, 4090u64..4100, 60_000u64..70_000],
                  prop_oneof![Just(0o644u16), Just(0o755), Just(0o600), Just(0o4755), Just(0o000)],
                  "/[0-9a-f]{2}/[a-z0-9._-]{1,90}")
                .prop_map(|(size, perm, r)| Node::File { size, perm, redirect: r.into_bytes() }),
            1 => prop_oneof!["[a-z./]{1,30}", "[a-z]{3900,4095}"]
                .prop_map(|t| Node::Link(t.into_bytes())),
        ]
    }

    fn tree() -> impl Strategy<Value = Node> {
        let wide = prop::collection::btree_map(name(), leaf(), 300..700).prop_map(Node::Dir);
        let deep = leaf().prop_recursive(4, 64, 8, |inner| {
            prop::collection::btree_map(name(), inner, 0..8).prop_map(Node::Dir)
        });
        prop_oneof![1 => wide, 3 => prop::collection::btree_map(name(), deep, 0..8).prop_map(Node::Dir)]
    }

    /// Who every entry belongs to (one owner per image, as `image.rs`
    /// writes them), 32-bit ids included.
    fn owner() -> impl Strategy<Value = (u32, u32)> {
        prop_oneof![
            Just((0, 0)),
            Just((1000, 1000)),
            Just((4321, 100)),
            Just((65534, 65534)),
            Just((3_000_000_000, 70_000)),
        ]
    }

    /// The entry list for `node` (root first), as `image.rs` builds one.
    fn entries(root: &Node, owner: (u32, u32)) -> Vec<Entry> {
        let mut out = Vec::new();
        push(root, owner, &mut out);
        out
    }

    fn push(node: &Node, (uid, gid): (u32, u32), out: &mut Vec<Entry>) -> usize {
        let at = out.len();
        out.push(Entry {
            perm: 0o750,
            uid,
            gid,
            body: Body::Dir(Vec::new()),
        });
        let (perm, body) = match node {
            Node::Dir(children) => {
                let mut kids = Vec::new();
                for (n, c) in children {
                    kids.push((n.clone(), push(c, (uid, gid), out)));
                }
                (0o750, Body::Dir(kids))
            }
            Node::File {
                size,
                perm,
                redirect,
            } => (
                *perm,
                Body::File {
                    size: *size,
                    redirect: redirect.clone(),
                },
            ),
            Node::Link(t) => (0o777, Body::Symlink(t.clone())),
        };
        out[at].perm = perm;
        out[at].body = body;
        at
    }

    fn show(b: &[u8]) -> String {
        String::from_utf8(b.to_vec()).unwrap_or_else(|e| format!("{:?}", e.into_bytes()))
    }

    /// One line per entry of what the reader must find, depth first in
    /// byte order of names (a `BTreeMap`'s order, and the reader's).
    fn described(node: &Node, rel: &[u8], owner: (u32, u32), out: &mut Vec<String>) {
        let mtime = vhrun::tree::MTIME;
        let mut line = |mode: u16, size: String, nlink: u32, rest: String| {
            out.push(format!(
                "{:?} mode={mode:o} size={size} owner={owner:?} mtime={mtime} nlink={nlink} {rest}",
                show(rel)
            ));
        };
        match node {
            Node::Dir(children) => {
                let subdirs = children
                    .values()
                    .filter(|c| matches!(c, Node::Dir(_)))
                    .count() as u32;
                line(S_IFDIR | 0o750, "-".into(), 2 + subdirs, String::new());
                for (n, c) in children {
                    let mut p = rel.to_vec();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(n);
                    described(c, &p, owner, out);
                }
            }
            Node::File {
                size: 0, perm: p, ..
            } => line(S_IFREG | p, "0".into(), 1, "flat, no xattrs".into()),
            Node::File {
                size,
                perm,
                redirect,
            } => line(
                S_IFREG | perm,
                size.to_string(),
                1,
                format!(
                    "xattrs=[(\"trusted.overlay.metacopy\", \"\"), \
                     (\"trusted.overlay.redirect\", {:?})] one hole chunk",
                    show(redirect)
                ),
            ),
            Node::Link(t) => line(
                S_IFLNK | 0o777,
                t.len().to_string(),
                1,
                format!("-> {:?}", show(t)),
            ),
        }
    }

    /// The same lines from what the reader found.
    fn seen(n: &Seen) -> String {
        let i = &n.inode;
        let size = if i.is_dir() {
            "-".to_string()
        } else {
            i.size.to_string()
        };
        let rest = match (&n.link, &n.chunks) {
            (Some(t), _) => format!("-> {:?}", show(t)),
            (None, Some(c)) => {
                let xattrs: Vec<(String, String)> = i
                    .xattrs
                    .iter()
                    .map(|x| (show(&x.name), show(&x.value)))
                    .collect();
                // One chunk as small as holds the file (down to a block),
                // all hole: the bytes are the redirect's.
                let one = c.blocks == [None]
                    && c.chunk_size >= i.size
                    && (c.chunk_size == 4096 || c.chunk_size / 2 < i.size)
                    && i.datalayout == CHUNK_BASED;
                let chunks = if one {
                    "one hole chunk".to_string()
                } else {
                    format!("layout {} chunks {c:?}", i.datalayout)
                };
                format!("xattrs={xattrs:?} {chunks}")
            }
            (None, None) if i.is_dir() && i.xattrs.is_empty() => String::new(),
            (None, None) if i.xattrs.is_empty() && i.datalayout == FLAT_PLAIN => {
                "flat, no xattrs".into()
            }
            (None, None) => format!("layout {} xattrs {:?}", i.datalayout, i.xattrs),
        };
        let mtime = if i.mtime_nsec == 0 && i.extended {
            i.mtime.to_string()
        } else {
            format!("{}.{} extended={}", i.mtime, i.mtime_nsec, i.extended)
        };
        format!(
            "{:?} mode={:o} size={size} owner={:?} mtime={mtime} nlink={} {rest}",
            show(&n.path),
            i.mode,
            (i.uid, i.gid),
            i.nlink
        )
    }

    /// `find -printf` lines the kernel should show for `node` under `rel`.
    fn expect(node: &Node, rel: &[u8], (uid, gid): (u32, u32), out: &mut Vec<Vec<u8>>) {
        let mut line = |kind: &str, size: Option<u64>, perm: u32, extra: &[u8]| {
            let mut l = rel.to_vec();
            let size = size.map_or("-".to_string(), |s| s.to_string());
            l.extend(
                format!(
                    "\t{kind}\t{size}\t{perm:o}\t{uid}\t{gid}\t{}\t",
                    vhrun::tree::MTIME
                )
                .bytes(),
            );
            l.extend_from_slice(extra);
            out.push(l);
        };
        match node {
            Node::Dir(children) => {
                if !rel.is_empty() {
                    line("d", None, 0o750, b"");
                }
                for (n, c) in children {
                    let mut p = rel.to_vec();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(n);
                    expect(c, &p, (uid, gid), out);
                }
            }
            Node::File { size, perm, .. } => line("f", Some(*size), *perm as u32, b""),
            Node::Link(t) => line("l", Some(t.len() as u64), 0o777, t),
        }
    }

    /// What the kernel shows of the image: mounted in a throwaway mount
    /// namespace (`unshare -m`), listed with `find -printf`.
    fn kernel_listing(image: &Path, mnt: &Path) -> Vec<Vec<u8>> {
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t erofs -o ro \"$1\" \"$2\" && find \"$2\" -mindepth 1 \
                 -printf '%P\\t%y\\t%s\\t%m\\t%U\\t%G\\t%T@\\t%l\\n'",
            )
            .arg("sh")
            .arg(image)
            .arg(mnt)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines: Vec<Vec<u8>> = out
            .stdout
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                // Directory sizes are the filesystem's; mtimes come as
                // `secs.fraction`.
                let mut f: Vec<Vec<u8>> = l.split(|&b| b == b'\t').map(<[u8]>::to_vec).collect();
                if f[1] == b"d" {
                    f[2] = b"-".to_vec();
                }
                if let Some(dot) = f[6].iter().position(|&b| b == b'.') {
                    f[6].truncate(dot);
                }
                f.join(&b'\t')
            })
            .collect();
        lines.sort();
        lines
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: if std::env::var("VHRUN_LONG_TESTS").as_deref() == Ok("1") { 256 } else { 24 },
            ..ProptestConfig::default()
        })]
        #[test]
        fn images_unpack_to_the_tree_they_describe(root in tree(), owner in owner()) {
            let entries = entries(&root, owner);
            let img = erofs::write(&entries, vhrun::tree::MTIME).unwrap();

            let image = Image::open(&img).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let nodes = image.walk().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut want = Vec::new();
            described(&root, b"", owner, &mut want);
            let got: Vec<String> = nodes.iter().map(seen).collect();
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!(g, w);
            }
            prop_assert_eq!(image.superblock.inos.get(), entries.len() as u64);
            prop_assert_eq!(image.superblock.blocks.get() as usize * 4096, img.len());

            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("t.erofs");
            std::fs::write(&file, &img).unwrap();
            let fsck = super::fsck_accepts(&file);
            prop_assert!(fsck.is_ok(), "{:?}", fsck);
            let mnt = dir.path().join("m");
            std::fs::create_dir(&mnt).unwrap();
            let mut want = Vec::new();
            expect(&root, b"", owner, &mut want);
            want.sort();
            let got = kernel_listing(&file, &mnt);
            prop_assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!(
                    String::from_utf8_lossy(g),
                    String::from_utf8_lossy(w)
                );
            }
        }
    }
}

mod reader {
    //! `vhrun::lower::erofs::reader` against an independent writer:
    //! `mkfs.erofs` images of a real directory (compact and extended
    //! inodes, inline tails, shared xattrs: what vhrun's writer never
    //! emits) read back as that directory, bytes included.

    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::process::Command;
    use vhrun::lower::erofs::reader::Image;

    /// The xattrs `sample_dir` sets (the host may add `security.*`).
    const XATTRS: &[(&str, &str, &str)] = &[
        ("a", "user.note", "hi there"),
        ("big", "user.note", "hi there"),
        ("d", "user.note", "hi there"),
        ("d/e", "trusted.x", ""),
    ];

    fn sample_dir(dir: &Path) {
        std::fs::create_dir_all(dir.join("d/e")).unwrap();
        std::fs::write(dir.join("a"), b"hello\n").unwrap();
        let big: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("big"), big).unwrap();
        std::fs::write(dir.join("empty"), b"").unwrap();
        std::fs::write(dir.join("block"), vec![b'b'; 4096]).unwrap();
        symlink("a", dir.join("l")).unwrap();
        symlink("x".repeat(3000), dir.join("longlink")).unwrap();
        for i in 0..400 {
            std::fs::write(dir.join(format!("d/f{i:04}")), i.to_string().repeat(i)).unwrap();
        }
        std::fs::set_permissions(dir.join("a"), std::fs::Permissions::from_mode(0o4751)).unwrap();
        std::os::unix::fs::chown(dir.join("big"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(dir.join("l"), Some(70_000), Some(3)).unwrap();
        // Three alike, which mkfs.erofs stores once as a shared xattr.
        let mut py = String::from("import os, sys\n");
        for (p, n, v) in XATTRS {
            py += &format!("os.setxattr(os.path.join(sys.argv[1], '{p}'), '{n}', b'{v}')\n");
        }
        let out = Command::new("python3")
            .args(["-c", &py])
            .arg(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    fn digest(b: &[u8]) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(b)[..8]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    }

    /// The attributes both sides are compared on, as one line.
    #[allow(clippy::too_many_arguments)]
    fn line(
        path: &[u8],
        mode: u32,
        owner: (u32, u32),
        size: u64,
        mtime: (i64, i64),
        nlink: u64,
        content: &[u8],
        xattrs: Vec<(String, String)>,
    ) -> String {
        format!(
            "{:?} mode={mode:o} owner={owner:?} size={size} mtime={mtime:?} nlink={nlink} \
             sha={} xattrs={xattrs:?}",
            String::from_utf8_lossy(path),
            digest(content)
        )
    }

    /// What the host shows of `rel` under `root` (mtime `fixed` if given).
    fn host(root: &Path, rel: &[u8], fixed: Option<i64>) -> String {
        let p = root.join(std::ffi::OsStr::from_bytes(rel));
        let md = std::fs::symlink_metadata(&p).unwrap();
        let content = if md.file_type().is_symlink() {
            std::fs::read_link(&p).unwrap().into_os_string().into_vec()
        } else if md.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        let xattrs = XATTRS
            .iter()
            .filter(|(q, ..)| q.as_bytes() == rel)
            .map(|(_, n, v)| (n.to_string(), v.to_string()))
            .collect();
        let (size, nlink) = if md.is_dir() {
            // EROFS's own directory size; nlink as on the host.
            (0, md.nlink())
        } else {
            (md.size(), md.nlink())
        };
        let mtime = fixed.map_or((md.mtime(), md.mtime_nsec()), |t| (t, 0));
        line(
            rel,
            md.mode(),
            (md.uid(), md.gid()),
            size,
            mtime,
            nlink,
            &content,
            xattrs,
        )
    }

    #[test]
    fn mkfs_erofs_images_read_back_as_their_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        sample_dir(&src);
        // -T: compact inodes (their mtime the build time); without it,
        // extended ones keeping the files' nanosecond mtimes.
        for fixed in [Some(1_600_000_000i64), None] {
            let img_path = tmp.path().join("i.erofs");
            let mut mkfs = Command::new("mkfs.erofs");
            if let Some(t) = fixed {
                mkfs.arg(format!("-T{t}"));
            }
            let out = mkfs
                .arg(&img_path)
                .arg(&src)
                .output()
                .expect("mkfs.erofs (apt install erofs-utils)");
            assert!(out.status.success(), "{out:?}");
            let img = std::fs::read(&img_path).unwrap();
            let image = Image::open(&img).unwrap();
            let nodes = image.walk().unwrap();
            assert_eq!(nodes.len(), 1 + 7 + 1 + 400, "fixed={fixed:?}");
            let mut compact = 0;
            for n in &nodes {
                let i = &n.inode;
                compact += !i.extended as usize;
                let content = match &n.link {
                    Some(t) => t.clone(),
                    None if i.is_dir() => Vec::new(),
                    None => image.data(i).unwrap(),
                };
                let xattrs = i
                    .xattrs
                    .iter()
                    .filter(|x| !x.name.starts_with(b"security."))
                    .map(|x| {
                        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                        (s(&x.name), s(&x.value))
                    })
                    .collect();
                let got = line(
                    &n.path,
                    u32::from(i.mode),
                    (i.uid, i.gid),
                    if i.is_dir() { 0 } else { i.size },
                    (i.mtime as i64, i64::from(i.mtime_nsec)),
                    u64::from(i.nlink),
                    &content,
                    xattrs,
                );
                assert_eq!(got, host(&src, &n.path, fixed), "fixed={fixed:?}");
            }
            if fixed.is_some() {
                // All but `l`, whose owner needs 32 bits.
                assert_eq!(compact, nodes.len() - 1);
            } else {
                assert!(compact < nodes.len());
            }
        }
    }
}
