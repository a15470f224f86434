//! The virtual holotree on real /dev/fuse mounts: `vhrun mount` as a child
//! process, compared against the independent Python restore oracle
//! (`tests/oracles/restore-store.py`).
//!
//! These tests mount FUSE on the host, so they need root and /dev/fuse; they
//! fail (never skip) without them. The two Python-environment tests are
//! heavy (they build an environment with tests/oracles/make-env.sh, PyPI
//! access on first run): `#[ignore]`d, run with `-- --ignored` (CI runs
//! them); they fail loudly if the environment cannot be built.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const FIXTURE_KEY: &str = "c34ed96c2d8a459av12.linux_amd64";
const RCC_EPOCH: i64 = 1_610_000_000;

fn vhrun() -> &'static str {
    env!("CARGO_BIN_EXE_vhrun")
}

fn python() -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    common::require_tool(&python, "python3");
    python
}

/// A temp world: ROBOCORP_HOME with the fixture hololib, VHRUN_HOME, HOME.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("vhrun-fuse")
            .tempdir()
            .unwrap();
        for d in ["rh/hololib", "vh", "home"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        World { dir }
    }

    fn with_fixture() -> World {
        let w = World::new();
        common::extract_fixture("simple_linux.zip", &w.hololib());
        w
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn hololib(&self) -> PathBuf {
        self.path().join("rh/hololib")
    }
    fn vhrun_home(&self) -> PathBuf {
        self.path().join("vh")
    }

    fn command(&self) -> Command {
        let mut c = Command::new(vhrun());
        c.env("ROBOCORP_HOME", self.path().join("rh"))
            .env("VHRUN_HOME", self.vhrun_home())
            .env("VHRUN_IMAGE", "off")
            .env("HOME", self.path().join("home"))
            .env_remove("VHRUN_LOG");
        c
    }

    /// Start `vhrun mount ARGS MOUNTPOINT` and wait until it is mounted.
    fn mount(&self, catalog: &str, mountpoint: &Path, extra: &[&str]) -> Server {
        let mut c = self.command();
        c.arg("mount").arg("--stats").arg("--catalog").arg(catalog);
        c.args(extra).arg(mountpoint);
        Server::start(c, mountpoint, self.path())
    }

    /// The fixture's tree, a fresh mountpoint named after `tag` and the
    /// options of an in-process mount that serves the reads itself.
    fn in_process(
        &self,
        tag: &str,
    ) -> (
        std::sync::Arc<vhrun::tree::Tree>,
        PathBuf,
        vhrun::lower::fuse::MountOptions,
    ) {
        let catalog = self.hololib().join("catalog").join(FIXTURE_KEY);
        let index = self.vhrun_home().join("index");
        let tree = std::sync::Arc::new(vhrun::tree::Tree::load_indexed(&catalog, &index).unwrap());
        let name = name24(tag);
        let mp = self.path().join(&name);
        fs::create_dir(&mp).unwrap();
        let mut opts = vhrun::lower::fuse::MountOptions::for_caller(name);
        opts.passthrough = vhrun::lower::fuse::PassthroughMode::Off;
        (tree, mp, opts)
    }

    /// The blob cache of this world's homes.
    fn blob_cache(&self) -> vhrun::lower::blobcache::BlobCache {
        vhrun::lower::blobcache::BlobCache::at_home(
            vhrun::hololib::Hololib::new(self.hololib()),
            &vhrun::home::Home::new(self.vhrun_home()),
        )
    }

    /// Restore `key` with the Python oracle into `target`.
    fn oracle_restore(&self, hololib: &Path, key: &str, target: &Path) {
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        let out = Command::new(python())
            .arg(common::oracle("restore-store.py"))
            .arg(hololib)
            .arg(key)
            .arg(target)
            .arg("--no-meta")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore-store.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn is_mounted(mountpoint: &Path) -> bool {
    let text = fs::read("/proc/self/mounts").unwrap();
    let want = mountpoint.as_os_str().as_bytes();
    text.split(|&b| b == b'\n').any(|line| {
        let mut f = line.split(|&b| b == b' ');
        let (_src, mp, ty) = (f.next(), f.next(), f.next());
        mp == Some(want) && ty == Some(b"fuse.vhrun")
    })
}

/// Processes whose command line mentions `path` (the server and its
/// watchdog carry the mount point there).
fn processes_mentioning(path: &Path) -> Vec<String> {
    let needle = path.as_os_str().as_bytes();
    common::processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.windows(needle.len()).any(|w| w == needle))
        .map(|(pid, _)| pid.to_string())
        .collect()
}

/// A running `vhrun mount`; killed and unmounted on drop whatever happens.
struct Server {
    child: Option<Child>,
    mountpoint: PathBuf,
    out: PathBuf,
    err: PathBuf,
    ready: Duration,
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Server {
    fn start(mut c: Command, mountpoint: &Path, logs: &Path) -> Server {
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let out = logs.join(format!("mount{n}.out"));
        let err = logs.join(format!("mount{n}.err"));
        c.stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap());
        let t0 = Instant::now();
        let child = c.spawn().unwrap();
        let mut s = Server {
            child: Some(child),
            mountpoint: mountpoint.to_path_buf(),
            out,
            err,
            ready: Duration::ZERO,
        };
        loop {
            if is_mounted(mountpoint) {
                s.ready = t0.elapsed();
                return s;
            }
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                s.child = None;
                panic!("vhrun mount exited ({st}) before mounting: {}", s.stderr());
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "mount never appeared"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Send `sig`, wait for the exit; returns (status, stdout, stderr).
    fn stop(mut self, sig: nix::sys::signal::Signal) -> (ExitStatus, String, String) {
        self.signal(sig);
        let st = wait_timeout(self.child.as_mut().unwrap(), Duration::from_secs(10));
        self.child = None;
        (st, fs::read_to_string(&self.out).unwrap(), self.stderr())
    }

    fn stats(stdout: &str) -> serde_json::Value {
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("stats {stdout:?}: {e}"))
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            panic!("vhrun mount did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Never leave a mount on the test machine, even after a failure.
        let t0 = Instant::now();
        while is_mounted(&self.mountpoint) && t0.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if is_mounted(&self.mountpoint) {
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Walk `root` into relative path -> description; directories' children
/// compared by the map itself.
fn walk(root: &Path) -> BTreeMap<PathBuf, fs::Metadata> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        if m.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
        out.insert(rel, m);
    }
    out
}

/// Compare a mounted tree with a restored copy of the same catalog: the
/// same names, types, modes (minus setuid/setgid, which the mount never
/// serves), sizes, bytes and link texts; and the mount's own invariants.
fn assert_same_tree(mount: &Path, restored: &Path) -> usize {
    let a = walk(mount);
    let b = walk(restored);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "different entries");
    let uid = nix::unistd::getuid().as_raw();
    for (rel, ma) in &a {
        let mb = &b[rel];
        let what = rel.display();
        assert_eq!(ma.file_type(), mb.file_type(), "{what}: type");
        assert_eq!(ma.mtime(), RCC_EPOCH, "{what}: mtime");
        assert_eq!(ma.uid(), uid, "{what}: owner");
        if ma.is_symlink() {
            assert_eq!(
                fs::read_link(mount.join(rel)).unwrap(),
                fs::read_link(restored.join(rel)).unwrap(),
                "{what}: link text"
            );
            assert_eq!(ma.len(), mb.len(), "{what}: link size");
            continue;
        }
        assert_eq!(ma.mode() & 0o1777, mb.mode() & 0o1777, "{what}: mode");
        assert_eq!(ma.mode() & 0o6000, 0, "{what}: setuid/setgid served");
        if ma.is_dir() {
            let subdirs = a
                .iter()
                .filter(|(r, m)| {
                    r.parent() == Some(rel.as_path()) && !r.as_os_str().is_empty() && m.is_dir()
                })
                .count() as u64;
            assert_eq!(ma.nlink(), 2 + subdirs, "{what}: dir nlink");
            assert_eq!(ma.nlink(), mb.nlink(), "{what}: dir nlink vs restore");
            continue;
        }
        assert_eq!(ma.nlink(), 1, "{what}: nlink");
        assert_eq!(ma.len(), mb.len(), "{what}: size");
        let bytes = ma.blocks() * 512;
        assert!(
            bytes >= ma.len() && bytes < ma.len() + 4096,
            "{what}: st_blocks {} for {} bytes",
            ma.blocks(),
            ma.len()
        );
        assert_eq!(ma.mtime(), mb.mtime(), "{what}: mtime vs restore");
        let (x, y) = (
            fs::read(mount.join(rel)).unwrap(),
            fs::read(restored.join(rel)).unwrap(),
        );
        assert!(x == y, "{what}: contents differ");
    }
    a.len()
}

fn name24(tag: &str) -> String {
    let n = format!("h{:07}_{tag}", std::process::id() % 10_000_000);
    let s: String = format!("{n}{}", "x".repeat(24)).chars().take(23).collect();
    format!("{s}t")
}

#[test]
fn fixture_mount_equals_restore_and_stops_cleanly() {
    common::require_fuse();
    let w = World::with_fixture();
    let name = name24("fixture");
    let mountpoint = w.path().join("spaces").join(&name);
    fs::create_dir_all(mountpoint.parent().unwrap()).unwrap();
    let server = w.mount(FIXTURE_KEY, &mountpoint, &[]);
    let restored = w.path().join("oracle").join(&name);
    w.oracle_restore(&w.hololib(), FIXTURE_KEY, &restored);

    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    let want = format!(
        "vhrun:{} {} fuse.vhrun ro,nosuid,nodev",
        server.pid(),
        mountpoint.display()
    );
    assert!(
        mounts.lines().any(|l| l.starts_with(&want)),
        "{want} in {mounts}"
    );
    let n = assert_same_tree(&mountpoint, &restored);
    assert_eq!(n, 12, "fixture entries (root included)");
    // Relocation: the mount's name sits at each rewrite offset.
    let act = fs::read_to_string(mountpoint.join("rcc_activate.sh")).unwrap();
    assert!(act.contains(&format!("/holotree/{name}")), "{act}");
    // Negative lookups are cached by the kernel: five stats, one request.
    for _ in 0..5 {
        assert!(fs::symlink_metadata(mountpoint.join("ssl/no-such-file")).is_err());
    }
    let (st, out, err) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(st.success(), "exit {st}: {err}");
    let stats = Server::stats(&out);
    assert_eq!(stats["lookup_negative"], 1, "{stats}");
    assert_eq!(stats["eio"], 0, "{stats}");
    assert!(!is_mounted(&mountpoint), "mount left behind");
    assert_eq!(processes_mentioning(&mountpoint), Vec::<String>::new());
    let ws = fs::read(w.vhrun_home().join("workset").join(FIXTURE_KEY)).unwrap();
    assert!(
        ws.windows(16).any(|x| x == b"ssl/no-such-file"),
        "working set saved"
    );
    assert!(
        !mountpoint.exists(),
        "vhrun created the mount point and must remove it"
    );
}

#[test]
fn writes_fail_with_erofs() {
    common::require_fuse();
    let w = World::with_fixture();
    let mountpoint = w.path().join(name24("erofs"));
    fs::create_dir(&mountpoint).unwrap();
    let server = w.mount(FIXTURE_KEY, &mountpoint, &[]);
    let erofs = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
    };
    let f = mountpoint.join("identity.yaml");
    erofs(
        fs::OpenOptions::new().write(true).open(&f).map(drop),
        "open for write",
    );
    erofs(
        fs::OpenOptions::new().append(true).open(&f).map(drop),
        "open for append",
    );
    erofs(fs::File::create(mountpoint.join("new")).map(drop), "create");
    erofs(fs::create_dir(mountpoint.join("newdir")), "mkdir");
    erofs(fs::remove_file(&f), "unlink");
    erofs(fs::remove_dir(mountpoint.join("ssl")), "rmdir");
    erofs(fs::rename(&f, mountpoint.join("moved")), "rename");
    erofs(
        fs::set_permissions(&f, fs::Permissions::from_mode(0o777)),
        "chmod",
    );
    erofs(
        std::os::unix::fs::symlink("x", mountpoint.join("l")),
        "symlink",
    );
    erofs(fs::hard_link(&f, mountpoint.join("h")), "link");
    assert_eq!(fs::read(&f).unwrap().len(), 56, "still readable");
    let (st, _, err) = server.stop(nix::sys::signal::Signal::SIGINT);
    assert!(st.success(), "exit {st}: {err}");
    assert!(!is_mounted(&mountpoint));
    assert!(
        mountpoint.is_dir(),
        "a mount point vhrun did not create stays"
    );
}

/// Copy a directory tree (the hololib) so it can be damaged.
fn copy_tree(from: &Path, to: &Path) {
    for (rel, m) in walk(from) {
        let (src, dst) = (from.join(&rel), to.join(&rel));
        if m.is_dir() {
            fs::create_dir_all(&dst).unwrap();
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

fn blob_path(hololib: &Path, digest: &str) -> PathBuf {
    hololib
        .join("library")
        .join(&digest[..2])
        .join(&digest[2..4])
        .join(&digest[4..6])
        .join(digest)
}

#[test]
fn damaged_blobs_give_eio_for_their_files_only() {
    damaged_blobs_give_eio(&[]);
}

/// Served reads (no passthrough) open files without asking the server
/// (FUSE_NO_OPEN_SUPPORT): a damaged blob fails at its READ instead, with
/// the same EIO and the same one line.
#[test]
fn damaged_blobs_give_eio_for_their_files_only_when_reads_are_served() {
    damaged_blobs_give_eio(&["--no-passthrough"]);
}

fn damaged_blobs_give_eio(extra: &[&str]) {
    common::require_fuse();
    let w = World::with_fixture();
    // Damage a copy, never the fixture: the mount reads from ROBOCORP_HOME.
    let pristine = w.path().join("pristine");
    copy_tree(&w.hololib(), &pristine);
    // identity.yaml: one byte flipped in the stored gzip stream.
    let b = blob_path(
        &w.hololib(),
        "79da03038007fc3bde076bac4f23177d8c18f9356ca0bda56611d7112d4b9edf",
    );
    let mut bytes = fs::read(&b).unwrap();
    bytes[20] ^= 0x55;
    fs::write(&b, bytes).unwrap();
    // golden-ee.yaml: a well-formed blob with other content (digest mismatch).
    let g = "57bbcd014d6be30fdbc6405281c470f244a78baeeb8771b1417f4a090417cb68";
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &[b'x'; 67]).unwrap();
    fs::write(blob_path(&w.hololib(), g), enc.finish().unwrap()).unwrap();
    // rcc_activate.json: blob missing.
    let j = "bb00860b004d68a427150a0d521fbfa8f5dc12dfe641b9538b570358dfbf7aff";
    fs::remove_file(blob_path(&w.hololib(), j)).unwrap();

    let name = name24("eio");
    let mountpoint = w.path().join(&name);
    let server = w.mount(FIXTURE_KEY, &mountpoint, extra);
    let restored = w.path().join("oracle").join(&name);
    w.oracle_restore(&pristine, FIXTURE_KEY, &restored);
    for bad in ["identity.yaml", "golden-ee.yaml", "rcc_activate.json"] {
        for _ in 0..2 {
            let e = fs::read(mountpoint.join(bad)).expect_err(bad);
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{bad}: {e}");
        }
    }
    for good in [
        "rcc_activate.sh",
        "rcc_plan.log",
        "ssl/cacert.pem",
        "ssl/cert.pem",
        "conda-meta/history",
    ] {
        assert_eq!(
            fs::read(mountpoint.join(good)).unwrap(),
            fs::read(restored.join(good)).unwrap(),
            "{good}"
        );
    }
    // Listing and stat still work for the damaged files.
    assert_eq!(
        fs::metadata(mountpoint.join("golden-ee.yaml"))
            .unwrap()
            .len(),
        67
    );
    let (st, out, err) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(st.success(), "{err}");
    // Two reads of each: an open (passthrough) or a READ (and the
    // kernel's retry of a failed readahead) that failed.
    let eio = Server::stats(&out)["eio"].as_u64().unwrap();
    assert!((6..=12).contains(&eio), "{eio}");
    // One line per damaged file, naming the file in the environment and the blob.
    for (file, digest, why) in [
        ("identity.yaml", "79da0303", ""),
        ("golden-ee.yaml", g, "hashes to"),
        ("rcc_activate.json", j, "missing"),
    ] {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{name}/{file}:")))
            .unwrap_or_else(|| panic!("no log line for {file}: {err}"));
        assert!(line.contains(digest) && line.contains(why), "{line}");
        assert_eq!(err.matches(&format!("{name}/{file}:")).count(), 1, "{err}");
    }
    // Nothing damaged reached the cache.
    assert!(!blob_path(&w.vhrun_home(), g).exists());
    let cached: Vec<_> = walk(&w.vhrun_home().join("blobs"))
        .into_keys()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert!(
        !cached
            .iter()
            .any(|n| n.starts_with("79da") || n.starts_with("57bb") || n.starts_with('.')),
        "{cached:?}"
    );
}

#[test]
fn sigkill_of_the_server_leaves_no_mount() {
    common::require_fuse();
    let w = World::with_fixture();
    let mountpoint = w.path().join(name24("kill"));
    let server = w.mount(FIXTURE_KEY, &mountpoint, &[]);
    // Keep a file open across the kill, as a task would.
    let open = fs::File::open(mountpoint.join("rcc_plan.log")).unwrap();
    server.signal(nix::sys::signal::Signal::SIGKILL);
    common::wait_until("the watchdog to unmount", Duration::from_secs(5), || {
        !is_mounted(&mountpoint)
    });
    common::wait_until(
        "the mount point to be removed",
        Duration::from_secs(5),
        || !mountpoint.exists(),
    );
    drop(open);
    let err = server.stderr();
    assert!(err.contains("the server died; unmounted"), "{err}");
    common::wait_until(
        "no server or watchdog process left",
        Duration::from_secs(5),
        || processes_mentioning(&mountpoint).is_empty(),
    );
    drop(server);
}

#[test]
fn outside_umount_ends_the_server_with_exit_0() {
    common::require_fuse();
    let w = World::with_fixture();
    // Any mount point name works with an explicit target name.
    let mountpoint = w.path().join("any-name");
    let target = "h59acff1_0123456789abcdz";
    let args = ["--no-passthrough", "--target-name", target];
    let mut server = w.mount(FIXTURE_KEY, &mountpoint, &args);
    let act = fs::read_to_string(mountpoint.join("rcc_activate.sh")).unwrap();
    assert!(act.contains(&format!("/holotree/{target})")), "{act}");
    nix::mount::umount2(&mountpoint, nix::mount::MntFlags::empty()).unwrap();
    let st = wait_timeout(server.child.as_mut().unwrap(), Duration::from_secs(10));
    server.child = None;
    assert!(st.success(), "exit {st}: {}", server.stderr());
    let stats = Server::stats(&fs::read_to_string(&server.out).unwrap());
    assert_eq!(stats["read_mode"], "served");
    assert!(stats["read"].as_u64().unwrap() >= 1, "{stats}");
    assert!(!mountpoint.exists());
}

#[test]
fn bad_invocations_are_refused_before_mounting() {
    let w = World::with_fixture();
    let out = w
        .command()
        .args(["mount", "--catalog", "nope"])
        .arg(w.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(67),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Relocation needs a target name of the identity's length.
    let out = w
        .command()
        .args(["mount", "--catalog", FIXTURE_KEY])
        .arg(w.path().join("short"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("h59acff1_493f813dad24d3t"), "{err}");
    assert!(
        !w.path().join("short").exists(),
        "no mount point left behind"
    );
    // A non-empty directory is not hidden.
    let full = w.path().join(name24("full"));
    fs::create_dir(&full).unwrap();
    fs::write(full.join("keep"), "x").unwrap();
    let out = w
        .command()
        .args(["mount", "--catalog", FIXTURE_KEY])
        .arg(&full)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = w
        .command()
        .args(["mount", "-r", "/nonexistent/robot.yaml"])
        .arg(&full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/robot.yaml"));
}

/// Identity of the generated stage: 24 bytes, its last byte unique in it
/// (rcc's relocation scanner keys on the last byte).
const GEN_STAGE: &str = "h1234567_0123456789abcdt";
/// Basename every generated mount and the oracle restore use.
const GEN_NAME: &str = "h7654321_fedcba98765432t";
const BIG: u64 = 101 << 20;

struct Generated {
    hololib: PathBuf,
    key: String,
    restored: PathBuf,
}

/// Bump when `build_odd_tree` changes (the built catalog is cached).
const GEN_VERSION: &str = "odd1";

/// A catalog with the odd cases (lifted by `tests/oracles/pack-store.py`)
/// and its oracle restore; built once into /tmp/vhrun-testgen/<version + script
/// hash>/ (reused by later runs, like the heavy environment) and only read.
fn generated() -> &'static Generated {
    static G: std::sync::OnceLock<Generated> = std::sync::OnceLock::new();
    G.get_or_init(|| {
        let scripts = [
            common::oracle("pack-store.py"),
            common::oracle("restore-store.py"),
            common::oracle("hololib.py"),
        ];
        let base = PathBuf::from("/tmp/vhrun-testgen")
            .join(format!("{GEN_VERSION}-{}", short_hash(&scripts)));
        fs::create_dir_all(&base).unwrap();
        let lock = fs::File::create(base.join(".lock")).unwrap();
        let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
        let hololib = base.join("hololib");
        let restored = base.join("oracle").join(GEN_NAME);
        let key_file = base.join("key.txt");
        if !key_file.exists() {
            for d in ["stage", "hololib", "oracle"] {
                let _ = fs::remove_dir_all(base.join(d));
            }
            let stage = base.join("stage").join(GEN_STAGE);
            build_odd_tree(&stage);
            let blueprint = base.join("blueprint.yaml");
            fs::write(
                &blueprint,
                "channels:\n- conda-forge\ndependencies:\n- vhrun-odd-cases\n",
            )
            .unwrap();
            let out = Command::new(python())
                .arg(&scripts[0])
                .arg(&stage)
                .arg(&hololib)
                .arg("--blueprint-file")
                .arg(&blueprint)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "pack-store.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(
                summary["files_with_rewrite"].as_u64().unwrap() >= 1,
                "{summary}"
            );
            let key = summary["catalog_key"].as_str().unwrap().to_string();
            fs::create_dir_all(restored.parent().unwrap()).unwrap();
            let out = Command::new(python())
                .arg(&scripts[1])
                .args([hololib.as_os_str(), key.as_ref(), restored.as_os_str()])
                .arg("--no-meta")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "restore-store.py: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The stage is only input (its 101 MiB file is sparse anyway).
            fs::remove_dir_all(base.join("stage")).unwrap();
            fs::write(&key_file, &key).unwrap();
        }
        Generated {
            hololib,
            key: fs::read_to_string(&key_file).unwrap(),
            restored,
        }
    })
}

fn build_odd_tree(stage: &Path) {
    use std::os::unix::fs::symlink;
    let w = |rel: &str, data: &[u8], mode: u32| {
        let p = stage.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    };
    let s = stage.display();
    w(
        "bin/tool",
        format!("#!{s}/bin/python\necho {s} {s}\n").as_bytes(),
        0o755,
    );
    symlink("tool", stage.join("bin/link")).unwrap();
    w("bin/suid", b"setuid program\n", 0o4755);
    w("empty", b"", 0o644);
    w("dup1", b"same\n", 0o644);
    w("dup2", b"same\n", 0o600);
    w("ro", b"read only\n", 0o444);
    w("x700", b"#!/bin/sh\n", 0o700);
    let lib: Vec<u8> = (0..10_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    w("lib/libx.so", &lib, 0o755);
    symlink("lib", stage.join("lib64")).unwrap();
    symlink("nowhere/at/all", stage.join("dangling")).unwrap();
    symlink("/etc/hostname", stage.join("abs_link")).unwrap();
    let big = fs::File::create(stage.join("big.bin")).unwrap();
    big.set_len(BIG).unwrap();
    for off in [0, 50 << 20, BIG - 10] {
        std::os::unix::fs::FileExt::write_all_at(
            &big,
            format!("at {off} in {s}").as_bytes().get(..10).unwrap(),
            off,
        )
        .unwrap();
    }
    for i in 0..3000 {
        w(
            &format!("many/f{i:04}"),
            format!("file {i}\n").as_bytes(),
            0o644,
        );
    }
    let deep: String = (0..40).map(|i| format!("d{i:02}/")).collect();
    w(&format!("deep/{deep}leaf.txt"), b"deep leaf\n", 0o644);
    fs::create_dir_all(stage.join("nested")).unwrap();
    symlink("../deep/d00", stage.join("nested/link_to_deep")).unwrap();
    w("ünïcödé/日本語.txt", "こんにちは\n".as_bytes(), 0o644);
    w("with space/a b.txt", b"spaces\n", 0o644);
    fs::create_dir_all(stage.join("emptydir")).unwrap();
}

/// A world whose ROBOCORP_HOME/hololib is the generated (shared) hololib.
fn generated_world() -> (World, &'static Generated) {
    let g = generated();
    let w = World::new();
    fs::remove_dir(w.hololib()).unwrap();
    std::os::unix::fs::symlink(&g.hololib, w.hololib()).unwrap();
    (w, g)
}

#[test]
fn odd_cases_equal_restore_with_and_without_passthrough() {
    common::require_fuse();
    let (w, g) = generated_world();
    for (i, extra) in [&[][..], &["--no-passthrough"][..]].into_iter().enumerate() {
        let mountpoint = w.path().join(format!("m{i}")).join(GEN_NAME);
        fs::create_dir_all(&mountpoint).unwrap();
        let server = w.mount(&g.key, &mountpoint, extra);
        let n = assert_same_tree(&mountpoint, &g.restored);
        assert!(n > 3050, "{n} entries");
        let suid = fs::metadata(mountpoint.join("bin/suid")).unwrap();
        assert_eq!(suid.mode() & 0o7777, 0o755, "setuid stripped");
        assert_eq!(fs::read_dir(mountpoint.join("many")).unwrap().count(), 3000);
        assert!(fs::metadata(mountpoint.join("dangling")).is_err());
        assert_eq!(
            fs::read_link(mountpoint.join("lib64")).unwrap(),
            Path::new("lib")
        );
        let tool = fs::read_to_string(mountpoint.join("bin/tool")).unwrap();
        assert_eq!(tool.matches(GEN_NAME).count(), 3, "{tool}");
        let (st, out, err) = server.stop(nix::sys::signal::Signal::SIGTERM);
        assert!(st.success(), "{err}");
        let stats = Server::stats(&out);
        let served = i == 1;
        assert_eq!(
            stats["read_mode"],
            if served { "served" } else { "passthrough" },
            "{stats}"
        );
        assert_eq!(stats["read"].as_u64().unwrap() > 0, served, "{stats}");
        // The second mount finds every blob decoded by the first.
        if served {
            assert_eq!(stats["cache"]["decoded"], 0, "{stats}");
            assert_eq!(stats["cache"]["relocated"], 0, "{stats}");
        }
    }
}

fn regular_files(root: &Path) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(p, _)| p)
        .collect()
}

#[test]
fn sixteen_threads_reading_at_random_offsets_agree_with_restore() {
    common::require_fuse();
    let (w, g) = generated_world();
    let files = regular_files(&g.restored);
    for extra in [&["--no-passthrough", "--threads", "4"][..], &[][..]] {
        let mountpoint = w.path().join(format!("r{}", extra.len())).join(GEN_NAME);
        fs::create_dir_all(&mountpoint).unwrap();
        let server = w.mount(&g.key, &mountpoint, extra);
        std::thread::scope(|s| {
            for t in 0..16u64 {
                let (files, mp) = (&files, &mountpoint);
                s.spawn(move || {
                    let mut rng = common::Rng::new(0x9e37_79b9_7f4a_7c15 ^ ((t + 1) * 7919));
                    for _ in 0..300 {
                        let rel = if rng.next().is_multiple_of(8) {
                            Path::new("big.bin")
                        } else {
                            files[(rng.next() % files.len() as u64) as usize].as_path()
                        };
                        let (a, b) = (
                            fs::File::open(mp.join(rel)).unwrap(),
                            fs::File::open(g.restored.join(rel)).unwrap(),
                        );
                        let size = b.metadata().unwrap().len();
                        let off = rng.next() % (size + 1);
                        let len = (rng.next() % 300_000) as usize;
                        let (mut x, mut y) = (vec![0u8; len], vec![0u8; len]);
                        let nx = read_full(&a, &mut x, off);
                        let ny = read_full(&b, &mut y, off);
                        assert_eq!(nx, ny, "{}: short read at {off}", rel.display());
                        assert!(
                            x[..nx] == y[..ny],
                            "{}: bytes differ at {off}",
                            rel.display()
                        );
                    }
                });
            }
        });
        let (st, _, err) = server.stop(nix::sys::signal::Signal::SIGTERM);
        assert!(st.success(), "{err}");
    }
}

fn read_full(f: &fs::File, buf: &mut [u8], off: u64) -> usize {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

#[test]
fn two_servers_racing_on_an_empty_cache_fill_it_right() {
    common::require_fuse();
    let (w, g) = generated_world();
    let files = regular_files(&g.restored);
    let mps: Vec<PathBuf> = (0..2)
        .map(|i| w.path().join(format!("race{i}")).join(GEN_NAME))
        .collect();
    let servers: Vec<Server> = mps
        .iter()
        .map(|mp| {
            fs::create_dir_all(mp).unwrap();
            w.mount(&g.key, mp, &["--threads", "4"])
        })
        .collect();
    let barrier = std::sync::Barrier::new(4);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (files, mp, barrier) = (&files, &mps[t % 2], &barrier);
            s.spawn(move || {
                barrier.wait();
                // Two readers per mount, walking the list from both ends.
                let order: Vec<_> = if t < 2 {
                    files.iter().collect()
                } else {
                    files.iter().rev().collect()
                };
                for rel in order {
                    let got = fs::read(mp.join(rel)).unwrap();
                    assert!(
                        got == fs::read(g.restored.join(rel)).unwrap(),
                        "{}",
                        rel.display()
                    );
                }
            });
        }
    });
    let mut decoded = 0;
    for server in servers {
        let (st, out, err) = server.stop(nix::sys::signal::Signal::SIGTERM);
        assert!(st.success(), "{err}");
        let stats = Server::stats(&out);
        decoded += stats["cache"]["decoded"].as_u64().unwrap()
            + stats["cache"]["relocated"].as_u64().unwrap();
    }
    // Every cache file is complete, read-only, named after its content
    // (or content + target name); no temp file is left.
    let blobs = w.vhrun_home().join("blobs");
    let entries: Vec<_> = walk(&blobs)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .collect();
    let mut distinct = std::collections::HashSet::new();
    for (rel, m) in &entries {
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "temp file left: {name}");
        assert_eq!(m.mode() & 0o777, 0o444, "{name}");
        let (digest, target) = name
            .split_once('.')
            .map_or((name.as_str(), None), |(d, t)| (d, Some(t)));
        let data = fs::read(blobs.join(rel)).unwrap();
        match target {
            None => assert_eq!(common::sha256_hex(&data), digest, "{name}"),
            Some(t) => assert_eq!(t, GEN_NAME),
        }
        distinct.insert(name);
    }
    assert_eq!(distinct.len(), entries.len());
    assert!(
        decoded >= entries.len() as u64,
        "{decoded} fills for {} entries",
        entries.len()
    );
}

/// Interpreter whose prefix make-env.sh copies (CPython 3.11, as its pins need).
fn heavy_python() -> PathBuf {
    let p = std::env::var_os("VHRUN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv/versions/3.11.7/bin/python3.11"));
    assert!(
        p.is_file(),
        "{}: no CPython 3.11 for make-env.sh (set VHRUN_TEST_PYTHON)",
        p.display()
    );
    p
}

fn short_hash(files: &[PathBuf]) -> String {
    let mut all = Vec::new();
    for f in files {
        all.extend(fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    common::sha256_hex(&all)[..16].to_string()
}

/// Stage name of the heavy environment (24 bytes, last byte unique in it).
const HEAVY_STAGE: &str = "h0000000_vhrunenvcore11t";

/// The make-env.sh environment, cached under /tmp/vhrun-testenv/<hash of
/// make-env.sh>/ (building takes minutes the first time). Returns (cache
/// dir, environment dir).
fn heavy_env() -> (PathBuf, PathBuf) {
    let make_env = common::oracle("make-env.sh");
    let base =
        PathBuf::from("/tmp/vhrun-testenv").join(short_hash(std::slice::from_ref(&make_env)));
    fs::create_dir_all(&base).unwrap();
    let lock = fs::File::create(base.join(".lock")).unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let env = base.join(HEAVY_STAGE);
    if !base.join("env.ok").exists() {
        if env.exists() {
            fs::remove_dir_all(&env).unwrap();
        }
        eprintln!(
            "building {} with make-env.sh (minutes the first time)",
            env.display()
        );
        let out = Command::new("bash")
            .arg(&make_env)
            .arg(&env)
            .env("MAKE_ENV_CORE_ONLY", "1")
            .env("PYTHON", heavy_python())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make-env.sh failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(base.join("env.ok"), "").unwrap();
    }
    (base, env)
}

/// `vhrun lift` of the heavy environment into `hololib`: the catalog key.
fn lift_heavy(base: &Path, env: &Path, hololib: &Path) -> String {
    let blueprint = base.join("blueprint.yaml");
    fs::write(
        &blueprint,
        "channels:\n- conda-forge\ndependencies:\n- python=3.11\n- pip:\n  - pandas\n",
    )
    .unwrap();
    let out = Command::new(vhrun())
        .arg("lift")
        .arg(env)
        .arg("--blueprint")
        .arg(&blueprint)
        .arg("--hololib")
        .arg(hololib)
        .arg("--no-identity-yaml")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "vhrun lift: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
#[ignore = "heavy: builds a CPython 3.11 environment with pandas (tests/oracles/make-env.sh, minutes and PyPI the first time); run with scripts/test --test fuse -- --ignored"]
fn python_environment_imports_from_the_mount() {
    common::require_fuse();
    let (base, env) = heavy_env();
    let w = World::new();
    let key = lift_heavy(&base, &env, &w.hololib());
    // A sibling of the lifted stage: relocation rewrites only the basename.
    let mountpoint = base.join(format!(
        "m{:07}_vhrunenvcore11t",
        std::process::id() % 10_000_000
    ));
    for extra in [&[][..], &["--no-passthrough"][..]] {
        let server = w.mount(&key, &mountpoint, extra);
        let t0 = Instant::now();
        let out = Command::new(mountpoint.join("bin/python3"))
            .args([
                "-c",
                "import pandas, numpy, sqlalchemy, sys; print(numpy.__file__); print(sys.prefix)",
            ])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONNOUSERSITE", "1")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONHOME")
            .env_remove("PYTHONPYCACHEPREFIX")
            .output()
            .unwrap();
        let took = t0.elapsed();
        let ready = server.ready;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "python from the mount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mp = mountpoint.display().to_string();
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines[0].starts_with(&mp) && lines[1] == mp, "{stdout}");
        let (st, out, err) = server.stop(nix::sys::signal::Signal::SIGTERM);
        assert!(st.success(), "{err}");
        let stats = Server::stats(&out);
        assert_eq!(stats["eio"], 0, "{stats}");
        eprintln!(
            "{extra:?}: mount ready {:?}, import {took:?}, read mode {}, opens {}, blobs decoded {}",
            ready,
            stats["read_mode"],
            stats["open"],
            stats["cache"]["decoded"]
        );
        assert!(!is_mounted(&mountpoint) && !mountpoint.exists());
    }
}

/// The heavy environment through the kernel image (`vhrun prepare`, then
/// runs with no FUSE at all): the import works, and every entry (mode,
/// size, owner, mtime, sha256 of the content, link text) is what the FUSE
/// tree shows.
#[test]
#[ignore = "heavy: builds a CPython 3.11 environment with pandas (tests/oracles/make-env.sh, minutes and PyPI the first time); run with scripts/test --test fuse -- --ignored"]
fn python_environment_imports_from_the_kernel_image() {
    common::require_fuse();
    let (base, env) = heavy_env();
    let w = World::new();
    let key = lift_heavy(&base, &env, &w.hololib());
    let with_image = |c: &mut Command| {
        c.env_remove("VHRUN_IMAGE");
    };
    let mut prepare = w.command();
    with_image(&mut prepare);
    let out = prepare
        .args(["prepare", "--catalog", &key])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("image ready"), "{err}");

    let walk = "import hashlib, os, stat, sys\n\
        root = sys.prefix\n\
        for dp, dns, fns in os.walk(root):\n\
        \x20   dns.sort()\n\
        \x20   for n in sorted(dns + fns):\n\
        \x20       p = os.path.join(dp, n); st = os.lstat(p)\n\
        \x20       x = os.readlink(p) if stat.S_ISLNK(st.st_mode) else (hashlib.sha256(open(p, 'rb').read()).hexdigest() if stat.S_ISREG(st.st_mode) else st.st_nlink)\n\
        \x20       print(os.path.relpath(p, root), oct(st.st_mode), st.st_size if not stat.S_ISDIR(st.st_mode) else '-', st.st_uid, int(st.st_mtime), x)\n";
    let run = |image: bool, code: &str| {
        let mut c = w.command();
        if image {
            with_image(&mut c);
        } else {
            c.env("VHRUN_SERVER", "off");
        }
        let stats = w.path().join("stats.json");
        let out = c
            .args(["exec", "--catalog", &key, "--stats-json"])
            .arg(&stats)
            .args(["--", "python3", "-c", code])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "image={image}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats: serde_json::Value = serde_json::from_slice(&fs::read(&stats).unwrap()).unwrap();
        assert_eq!(stats["image"].is_string(), image, "{stats}");
        String::from_utf8(out.stdout).unwrap()
    };
    let imported = run(
        true,
        "import pandas, numpy, sqlalchemy, sys; print(numpy.__file__)",
    );
    assert!(imported.contains("site-packages/numpy"), "{imported}");
    let by_image = run(true, walk);
    let by_fuse = run(false, walk);
    assert!(
        by_image.lines().count() > 5_000,
        "{}",
        by_image.lines().count()
    );
    assert!(
        by_image.lines().any(|l| l.contains(" 0o120777 ")),
        "no symlink"
    );
    if by_image != by_fuse {
        let diff: Vec<_> = by_image
            .lines()
            .zip(by_fuse.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .collect();
        panic!("image and FUSE trees differ: {diff:?}");
    }
}

/// The machine's CPython prefix, trimmed to the interpreter and its
/// standard library, lifted and run from the mount (always runs: no
/// network, a few seconds).
#[test]
fn small_python_prefix_runs_from_the_mount() {
    common::require_fuse();
    let out = Command::new(python())
        .args([
            "-c",
            "import sys; print(sys.base_prefix); print('%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no python3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (prefix, ver) = text.trim().split_once('\n').unwrap();
    let prefix = PathBuf::from(prefix);
    let w = World::new();
    let stage = w.path().join("stage").join("h2222222_vhrunpyprefix0t");
    let skip = [
        "site-packages",
        "test",
        "__pycache__",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
    ];
    let stdlib = prefix.join(format!("lib/python{ver}"));
    for (rel, m) in walk(&stdlib) {
        let first = rel
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        if rel
            .components()
            .any(|c| skip.contains(&c.as_os_str().to_str().unwrap_or("")))
            || first.is_some_and(|f| f.starts_with("config-"))
        {
            continue;
        }
        let dst = stage.join(format!("lib/python{ver}")).join(&rel);
        if m.is_dir() {
            fs::create_dir_all(&dst).unwrap();
        } else if m.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(stdlib.join(&rel)).unwrap(), &dst).unwrap();
        } else {
            fs::copy(stdlib.join(&rel), &dst).unwrap();
        }
    }
    fs::create_dir_all(stage.join("bin")).unwrap();
    fs::copy(
        prefix.join(format!("bin/python{ver}")),
        stage.join(format!("bin/python{ver}")),
    )
    .unwrap();
    std::os::unix::fs::symlink(format!("python{ver}"), stage.join("bin/python3")).unwrap();
    let blueprint = w.path().join("blueprint.yaml");
    fs::write(&blueprint, format!("dependencies:\n- python={ver}\n")).unwrap();
    let out = Command::new(python())
        .arg(common::oracle("pack-store.py"))
        .arg(&stage)
        .arg(w.hololib())
        .arg("--blueprint-file")
        .arg(&blueprint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pack-store.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = summary["catalog_key"].as_str().unwrap();
    // Remove the stage: whatever runs must come from the mount.
    fs::remove_dir_all(&stage).unwrap();
    let mountpoint = w.path().join("stage").join("h3333333_vhrunpyprefix0t");
    let server = w.mount(key, &mountpoint, &[]);
    let out = Command::new(mountpoint.join("bin/python3"))
        .args([
            "-c",
            "import sys, json, decimal, sqlite3, ssl, email.parser; print(sys.prefix); print(json.__file__)",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONNOUSERSITE", "1")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env_remove("PYTHONPYCACHEPREFIX")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python from the mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mp = mountpoint.display().to_string();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], mp, "{stdout}");
    assert!(
        lines[1].starts_with(&format!("{mp}/lib/python{ver}/json/")),
        "{stdout}"
    );
    let (st, _, err) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(st.success(), "{err}");
}

#[test]
fn catalog_defects_give_eio_and_hostile_names_refuse_the_mount() {
    common::require_fuse();
    use vhrun::hololib::Catalog;
    let w = World::with_fixture();
    let cat = Catalog::load(&w.hololib().join("catalog").join(FIXTURE_KEY)).unwrap();
    let mut odd = cat.clone();
    odd.tree.files.get_mut("rcc_plan.log").unwrap().size = -1;
    odd.tree.files.get_mut("identity.yaml").unwrap().digest = "../../../etc/passwd".into();
    odd.tree.files.get_mut("golden-ee.yaml").unwrap().rewrite = vec![60];
    let odd_key = "0000000000000001v12.linux_amd64";
    odd.save(&w.hololib().join("catalog").join(odd_key))
        .unwrap();
    let name = name24("defects");
    let mountpoint = w.path().join(&name);
    let server = w.mount(odd_key, &mountpoint, &[]);
    for bad in ["rcc_plan.log", "identity.yaml", "golden-ee.yaml"] {
        let e = fs::read(mountpoint.join(bad)).expect_err(bad);
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{bad}");
    }
    assert_eq!(
        fs::metadata(mountpoint.join("rcc_plan.log")).unwrap().len(),
        0
    );
    assert_eq!(
        fs::read(mountpoint.join("ssl/cert.pem")).unwrap().len(),
        265969
    );
    let (st, _, err) = server.stop(nix::sys::signal::Signal::SIGTERM);
    assert!(st.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{name}/rcc_plan.log: catalog records a negative size"
        )),
        "{err}"
    );

    let mut evil = cat;
    let f = evil.tree.files.remove("identity.yaml").unwrap();
    evil.tree
        .dirs
        .get_mut("ssl")
        .unwrap()
        .files
        .insert("../../escape".into(), f);
    let evil_key = "0000000000000002v12.linux_amd64";
    evil.save(&w.hololib().join("catalog").join(evil_key))
        .unwrap();
    let mountpoint = w.path().join(name24("evil"));
    let out = w
        .command()
        .args(["mount", "--catalog", evil_key])
        .arg(&mountpoint)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains(evil_key) && err.contains("ssl/../../escape"),
        "{err}"
    );
    assert!(!is_mounted(&mountpoint) && !mountpoint.exists());
}

/// The library API the sandbox calls: mount in-process, record the working
/// set, prefetch it into a fresh mount, unmount on drop.
#[test]
fn library_mount_records_and_prefetches_the_working_set() {
    common::require_fuse();
    let w = World::with_fixture();
    let (tree, mp, opts) = w.in_process("library");
    let touch = |mp: &Path| {
        assert_eq!(fs::read(mp.join("ssl/cacert.pem")).unwrap().len(), 265969);
        assert!(fs::symlink_metadata(mp.join("conda-meta/missing")).is_err());
        assert_eq!(fs::read_dir(mp.join("ssl")).unwrap().count(), 2);
    };
    let cache = || w.blob_cache();
    let m = vhrun::lower::fuse::mount(tree.clone(), cache(), &mp, &opts).unwrap();
    assert!(is_mounted(&mp) && m.is_serving());
    touch(&mp);
    let ws = m.working_set();
    for p in ["ssl", "ssl/cacert.pem", "conda-meta", "conda-meta/missing"] {
        assert!(ws.lookups.contains(&PathBuf::from(p)), "{p} in {ws:?}");
    }
    assert!(ws.dirs.contains(&PathBuf::from("ssl")), "{ws:?}");
    let stats = m.unmount().unwrap();
    assert_eq!(stats.read_mode, vhrun::lower::fuse::ReadMode::Served);
    assert!(stats.bytes_read >= 265969, "{stats:?}");
    assert!(!is_mounted(&mp));

    let m = vhrun::lower::fuse::mount(tree, cache(), &mp, &opts).unwrap();
    let p = m.prefetch(&ws, 4);
    assert_eq!(p.paths, ws.lookups.len());
    let before = m.stats();
    touch(&mp);
    let after = m.stats();
    assert_eq!(after.lookup, before.lookup, "prefetched lookups are cached");
    assert_eq!(
        after.readdirplus + after.readdir,
        before.readdirplus + before.readdir
    );
    drop(m);
    assert!(!is_mounted(&mp), "drop unmounts");
}

/// Where vhrun serves the reads, the kernel stops sending OPEN after the
/// first one (FUSE_NO_OPEN_SUPPORT), FLUSH after the first close, and
/// keeps each file's page cache across opens: a file opened and read
/// again costs the server nothing.
#[test]
fn served_reads_cost_one_open_per_mount_and_keep_the_page_cache() {
    common::require_fuse();
    let w = World::with_fixture();
    let (tree, mp, opts) = w.in_process("noopen");
    let restored = w.path().join("oracle").join(mp.file_name().unwrap());
    w.oracle_restore(&w.hololib(), FIXTURE_KEY, &restored);
    let m = vhrun::lower::fuse::mount(tree, w.blob_cache(), &mp, &opts).unwrap();
    let files = ["ssl/cacert.pem", "ssl/cert.pem", "rcc_activate.sh"];
    let read_all = || {
        for f in files {
            assert_eq!(
                fs::read(mp.join(f)).unwrap(),
                fs::read(restored.join(f)).unwrap(),
                "{f}"
            );
        }
    };
    read_all();
    let first = m.stats();
    assert_eq!(first.read_mode, vhrun::lower::fuse::ReadMode::Served);
    assert_eq!((first.open, first.release), (1, 0), "{first:?}");
    assert_eq!(first.files_opened, files.len() as u64, "{first:?}");
    assert!(first.read >= files.len() as u64, "{first:?}");
    read_all();
    let again = m.stats();
    assert_eq!((again.open, again.read), (1, first.read), "{again:?}");
    // Likewise FLUSH: the first close sends one, answered ENOSYS, and the
    // kernel sends no more (six closes so far).
    assert_eq!((first.flush, again.flush), (1, 1), "{again:?}");
    // Writes are still refused, with or without an OPEN.
    let e = fs::OpenOptions::new()
        .append(true)
        .open(mp.join(files[0]))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    drop(m);
    assert!(!is_mounted(&mp));
}

/// Killed at any moment of its start (before, during or right after the
/// mount), the server leaves neither a mount nor the mount point it created.
#[test]
fn sigkill_at_any_moment_leaves_nothing() {
    common::require_fuse();
    let w = World::with_fixture();
    let mountpoint = w.path().join(name24("anytime"));
    for i in 0..12u64 {
        let mut c = w.command();
        c.args(["mount", "--catalog", FIXTURE_KEY])
            .arg(&mountpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(i * 700));
        child.kill().unwrap();
        child.wait().unwrap();
        common::wait_until(
            "no mount and no mount point",
            Duration::from_secs(5),
            || !is_mounted(&mountpoint) && !mountpoint.exists(),
        );
    }
    common::wait_until("no watchdog left", Duration::from_secs(5), || {
        processes_mentioning(&mountpoint).is_empty()
    });
}
