//! The store commands (import, export, catalogs, lift, restore, check)
//! through the CLI binary, against rcc's real export fixtures and the
//! independent Python oracles of tests/oracles (pack-store.py,
//! restore-store.py). Every test has its own ROBOCORP_HOME, VHRUN_HOME and
//! HOME under a tempdir.

mod common;
use common::{fixture, gunzip, sha256_hex};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LINUX_KEY: &str = "c34ed96c2d8a459av12.linux_amd64";
const FIXTURE_IDENTITY: &str = "h59acff1_493f813dad24d3t";
/// A space-like name with the identity's length (rcc: 7hex_7hex_8hex).
const SPACE: &str = "0123456_0123456_01234567";
/// simple.yaml as rcc normalises it (the blueprint hashed to c34ed96c2d8a459a).
const BLUEPRINT: &str = "channels:\n- conda-forge\ndependencies:\n- ca-certificates";
/// An rcc-shaped stage identity: its last byte `t` occurs only once.
const ID: &str = "hbe7c0de_0123456789abcdt";
const MOTHER_TIME: i64 = 1_610_000_000;

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    robocorp: PathBuf,
    vhrun_home: PathBuf,
    home: PathBuf,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let env = Env {
            robocorp: root.join("robocorp"),
            vhrun_home: root.join("vhrun"),
            home: root.join("home"),
            root,
            _tmp: tmp,
        };
        std::fs::create_dir_all(&env.home).unwrap();
        env
    }

    fn hololib(&self) -> PathBuf {
        self.robocorp.join("hololib")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vhrun"))
            .args(args)
            .env("ROBOCORP_HOME", &self.robocorp)
            .env("VHRUN_HOME", &self.vhrun_home)
            .env("VHRUN_IMAGE", "off")
            .env("HOME", &self.home)
            .env_remove("VHRUN_LOG")
            .current_dir(&self.root)
            .output()
            .expect("run vhrun")
    }

    /// Run, expect success, return stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "vhrun {args:?} exited {:?}: {stderr}",
            out.status.code()
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Run, expect exit `code` and exactly one `vhrun: ...` line on stderr;
    /// return that line.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "vhrun {args:?}: stderr {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        // warnings may precede it; the error itself is one line
        let lines: Vec<&str> = stderr
            .trim_end()
            .lines()
            .filter(|l| !l.trim_start().starts_with("WARN "))
            .collect();
        assert_eq!(lines.len(), 1, "one-line error expected: {stderr}");
        assert!(lines[0].starts_with("vhrun: "), "{stderr}");
        lines[0].to_string()
    }

    fn import_fixture(&self, name: &str) {
        let zip = fixture(name);
        self.ok(&["import", zip.to_str().unwrap()]);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gzip stream of `mib` MiB of `{` (~1000x smaller on disk): what a
/// catalog must never be decoded in full.
fn gzip_bomb(mib: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b'{'; 1 << 20];
    for _ in 0..mib {
        e.write_all(&chunk).unwrap();
    }
    e.finish().unwrap()
}

/// Zip entries by name (`\` normalised to `/`), raw bytes, in zip order.
fn zip_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            (f.name().unwrap().replace('\\', "/"), v)
        })
        .collect()
}

fn fixture_catalog(zip: &str, key: &str) -> serde_json::Value {
    let entries = zip_entries(&fixture(zip));
    let (_, raw) = entries
        .iter()
        .find(|(n, _)| n == &format!("catalog/{key}"))
        .unwrap();
    serde_json::from_slice(&gunzip(raw)).unwrap()
}

fn catalog_text(path: &Path) -> String {
    String::from_utf8(gunzip(&std::fs::read(path).unwrap())).unwrap()
}

/// Every file entry of a catalog JSON: (path, entry), depth first.
fn catalog_files(v: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    fn go(d: &serde_json::Value, prefix: &str, out: &mut Vec<(String, serde_json::Value)>) {
        for (name, f) in d["files"].as_object().unwrap() {
            out.push((format!("{prefix}{name}"), f.clone()));
        }
        for (name, sub) in d["subdirs"].as_object().unwrap() {
            go(sub, &format!("{prefix}{name}/"), out);
        }
    }
    let mut out = Vec::new();
    go(&v["tree"], "", &mut out);
    out
}

#[derive(Debug, PartialEq)]
enum Node {
    Dir {
        mode: u32,
    },
    File {
        mode: u32,
        mtime: i64,
        content: Vec<u8>,
    },
    Link(PathBuf),
}

/// A tree as lstat sees it (symlinks not followed); dir mtimes are left out
/// (a dir that receives files gets the current time, in rcc too).
fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn go(dir: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let rel = format!("{rel}{name}");
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_symlink() {
                out.insert(rel, Node::Link(std::fs::read_link(e.path()).unwrap()));
            } else if m.is_dir() {
                out.insert(rel.clone(), Node::Dir { mode: m.mode() });
                go(&e.path(), &format!("{rel}/"), out);
            } else {
                out.insert(
                    rel,
                    Node::File {
                        mode: m.mode(),
                        mtime: m.mtime(),
                        content: std::fs::read(e.path()).unwrap(),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, "", &mut out);
    out
}

/// This process's umask, read without changing it (/proc/self/status).
fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).unwrap()
}

fn write_file(path: &Path, content: &[u8], mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with the odd cases rcc's lift has rules for.
fn build_rich_tree(dir: &Path) {
    let id = ID.as_bytes();
    std::fs::create_dir_all(dir).unwrap();
    let full = dir.to_str().unwrap();
    write_file(
        &dir.join("bin/tool"),
        format!("#!/bin/sh\nexec {full}/bin/python3 \"$@\"\n").as_bytes(),
        0o755,
    );
    write_file(&dir.join("bin/suid"), b"setuid program\n", 0o4755);
    write_file(&dir.join("bin/sgid"), b"setgid program\n", 0o2750);
    write_file(&dir.join("empty"), b"", 0o644);
    write_file(&dir.join("dup1"), b"same content\n", 0o644);
    write_file(&dir.join("dup2"), b"same content\n", 0o600);
    write_file(&dir.join("lib/dup3"), b"same content\n", 0o644);
    // identity ending exactly on the first 32 KiB write boundary (listed
    // twice by rcc), after a `t` on the second (once), and spanning the third
    let mut big: Vec<u8> = (0..3 * 32768 + 1000)
        .map(|i| b"_0123456789abcdefx/"[i % 19])
        .collect();
    big[32768 - 24..32768].copy_from_slice(id);
    big[65536 - 24..65536].copy_from_slice(id);
    big[65536 - 25] = b't';
    big[98304 - 10..98304 + 14].copy_from_slice(id);
    write_file(&dir.join("lib/boundary.bin"), &big, 0o644);
    write_file(
        &dir.join("lib/tail_after_t"),
        &[b"xyzt", id].concat(),
        0o644,
    );
    write_file(&dir.join("lib/tail_clean"), &[b"xyz/", id].concat(), 0o644);
    write_file(&dir.join("lib/whole"), id, 0o644);
    write_file(
        &dir.join("lib/many.pc"),
        format!("prefix={full}\nlibdir={full}/lib\n{ID}{ID}\n").as_bytes(),
        0o644,
    );
    write_file(
        &dir.join("ünïcødé/日本語 名前.txt"),
        "unicode ✓\n".as_bytes(),
        0o644,
    );
    write_file(&dir.join("a<b>&c"), b"go escapes these names\n", 0o644);
    write_file(&dir.join("deep/a/b/c/d/e/f/g/h/i/j/leaf"), b"deep\n", 0o644);
    std::fs::create_dir_all(dir.join("emptydir/inner")).unwrap();
    // symlinks: to a file, to a directory (with contents), dangling
    std::os::unix::fs::symlink("tool", dir.join("bin/python3")).unwrap();
    write_file(
        &dir.join("lib/real/x.txt"),
        format!("in a linked dir {ID}\n").as_bytes(),
        0o644,
    );
    write_file(
        &dir.join("lib/real/sub/y"),
        b"only reachable via real\n",
        0o755,
    );
    std::os::unix::fs::symlink("real", dir.join("lib/current")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", dir.join("broken")).unwrap();
    // killfile: skipped by name and by Go's Ext()
    write_file(
        &dir.join("__pycache__/m.cpython-311.pyc"),
        b"bytecode",
        0o644,
    );
    write_file(&dir.join("lib/mod.pyc"), b"bytecode", 0o644);
    write_file(&dir.join(".git/config"), b"[core]\n", 0o644);
    write_file(&dir.join("lib/x.git"), b"ext .git\n", 0o644);
    write_file(&dir.join(".gitignore"), b"*\n", 0o644);
    write_file(&dir.join("__MACOSX/f"), b"mac\n", 0o644);
    write_file(&dir.join("lib/.svn/entries"), b"svn\n", 0o644);
    write_file(&dir.join("lib/keep.pyc.txt"), b"kept\n", 0o644);
}

fn python(args: &[&str]) -> String {
    common::require_tool("python3", "python3");
    let out = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs the bench oracles");
    assert!(
        out.status.success(),
        "python3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn blob_names(hololib: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for a in std::fs::read_dir(hololib.join("library")).unwrap() {
        for b in std::fs::read_dir(a.unwrap().path()).unwrap() {
            for c in std::fs::read_dir(b.unwrap().path()).unwrap() {
                for f in std::fs::read_dir(c.unwrap().path()).unwrap() {
                    let f = f.unwrap();
                    out.insert(
                        f.file_name().into_string().unwrap(),
                        std::fs::read(f.path()).unwrap(),
                    );
                }
            }
        }
    }
    out
}

fn no_part_files(dir: &Path) {
    fn go(d: &Path) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            assert!(
                !name.contains(".part#"),
                "left behind: {}",
                e.path().display()
            );
            if e.file_type().unwrap().is_dir() {
                go(&e.path());
            }
        }
    }
    if dir.exists() {
        go(dir)
    }
}

// ---------------------------------------------------------------- import

#[test]
fn imports_all_fixtures_and_lists_them() {
    let env = Env::new();
    for z in [
        "simple_linux.zip",
        "simple_darwin.zip",
        "simple_windows.zip",
    ] {
        let out = env.ok(&["import", s(&fixture(z))]);
        assert!(out.trim().starts_with("c34ed96c2d8a459av12."), "{out}");
    }
    // every blob of every fixture is in place, under its sha256
    for z in [
        "simple_linux.zip",
        "simple_darwin.zip",
        "simple_windows.zip",
    ] {
        for (name, raw) in zip_entries(&fixture(z)) {
            let placed = std::fs::read(env.hololib().join(&name)).unwrap();
            assert_eq!(placed, raw, "{name}");
            if name.starts_with("library/") {
                assert_eq!(sha256_hex(&gunzip(&raw)), name.rsplit('/').next().unwrap());
            }
        }
    }
    let rows: serde_json::Value = serde_json::from_str(&env.ok(&["catalogs", "--json"])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for (z, platform) in [
        ("simple_darwin.zip", "darwin_amd64"),
        ("simple_linux.zip", "linux_amd64"),
        ("simple_windows.zip", "windows_amd64"),
    ] {
        let key = format!("c34ed96c2d8a459av12.{platform}");
        let row = rows.iter().find(|r| r["key"] == key.as_str()).unwrap();
        let cat = fixture_catalog(z, &key);
        let files = catalog_files(&cat);
        let bytes: i64 = files.iter().map(|(_, f)| f["size"].as_i64().unwrap()).sum();
        assert_eq!(row["blueprint"], "c34ed96c2d8a459a");
        assert_eq!(row["platform"], platform);
        assert_eq!(row["files"], files.len());
        assert_eq!(row["bytes"], bytes);
        assert_eq!(row["identity"], cat["identity"]);
        assert_eq!(row["path"], cat["path"]);
        assert_eq!(row["hololib"], s(&env.hololib()));
    }
    let mut redacted = serde_json::Value::Array(rows.clone());
    for r in redacted.as_array_mut().unwrap() {
        r["hololib"] = "[hololib]".into();
        r["lifted_at"] = "[mtime]".into();
    }
    insta::assert_json_snapshot!("catalogs_json_of_fixtures", redacted);

    let table = env.ok(&["catalogs"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("BLUEPRINT"));
    // aligned: the platform column starts at the same offset on every line
    let col = lines[0].find("PLATFORM").unwrap();
    for l in &lines[1..] {
        assert!(l.starts_with("c34ed96c2d8a459a"), "{l}");
        assert!(
            ["darwin_", "linux_", "windows_"]
                .iter()
                .any(|p| l[col..].starts_with(p)),
            "{table}"
        );
    }

    // importing again changes nothing and still succeeds
    let before = blob_names(&env.hololib());
    env.import_fixture("simple_linux.zip");
    assert_eq!(blob_names(&env.hololib()), before);
    assert!(env.ok(&["check"]).is_empty());
}

// ---------------------------------------------------------------- restore

#[test]
fn restore_of_the_darwin_fixture_equals_the_python_oracle() {
    // the darwin export has a real symlink (ssl/cert.pem -> cacert.pem)
    let env = Env::new();
    env.import_fixture("simple_darwin.zip");
    let key = "c34ed96c2d8a459av12.darwin_amd64";
    let ours = env.root.join("ours").join(SPACE);
    let theirs = env.root.join("theirs").join(SPACE);
    std::fs::create_dir_all(ours.parent().unwrap()).unwrap();
    env.ok(&["restore", "--no-meta", "--catalog", key, s(&ours)]);
    python(&[
        s(&common::oracle("restore-store.py")),
        s(&env.hololib()),
        key,
        s(&theirs),
        "--no-meta",
    ]);
    let (a, b) = (snapshot(&ours), snapshot(&theirs));
    assert_eq!(a, b);
    assert_eq!(a["ssl/cert.pem"], Node::Link("cacert.pem".into()));
}

#[test]
fn restore_equals_the_python_oracle_and_relocates() {
    let env = Env::new();
    env.import_fixture("simple_linux.zip");
    let ours = env.root.join("ours").join(SPACE);
    let theirs = env.root.join("theirs").join(SPACE);
    std::fs::create_dir_all(ours.parent().unwrap()).unwrap();
    std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
    let out = env.ok(&["restore", "--catalog", LINUX_KEY, s(&ours)]);
    assert_eq!(out.trim(), s(&ours));
    python(&[
        s(&common::oracle("restore-store.py")),
        s(&env.hololib()),
        LINUX_KEY,
        s(&theirs),
        "--no-meta",
    ]);
    let a = snapshot(&ours);
    let b = snapshot(&theirs);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, v) in &a {
        assert_eq!(v, &b[k], "{k}");
    }

    // independently: each file's content, with the identity put back at its
    // rewrite offsets, hashes to its digest; the offsets hold the target name
    let cat = fixture_catalog("simple_linux.zip", LINUX_KEY);
    let mut relocated = 0;
    for (path, f) in catalog_files(&cat) {
        let mut content = std::fs::read(ours.join(&path)).unwrap();
        let meta = std::fs::metadata(ours.join(&path)).unwrap();
        assert_eq!(meta.len() as i64, f["size"].as_i64().unwrap(), "{path}");
        assert_eq!(
            meta.mode() & 0o7777,
            f["mode"].as_u64().unwrap() as u32 & 0o777
        );
        assert_eq!(meta.mtime(), MOTHER_TIME, "{path}");
        for off in f["rewrite"].as_array().unwrap() {
            let o = off.as_u64().unwrap() as usize;
            assert_eq!(&content[o..o + 24], SPACE.as_bytes(), "{path}@{o}");
            content[o..o + 24].copy_from_slice(FIXTURE_IDENTITY.as_bytes());
            relocated += 1;
        }
        assert_eq!(
            sha256_hex(&content),
            f["digest"].as_str().unwrap(),
            "{path}"
        );
    }
    assert_eq!(relocated, 3);
    assert!(std::fs::read_to_string(ours.join("rcc_activate.sh"))
        .unwrap()
        .contains(SPACE));

    // rcc's record of the space: the relocated catalog, plus its lock file
    let meta: serde_json::Value = serde_json::from_slice(&gunzip(
        &std::fs::read(format!("{}.meta", ours.display())).unwrap(),
    ))
    .unwrap();
    assert_eq!(meta["identity"], SPACE);
    assert_eq!(meta["path"], s(&ours));
    assert_eq!(meta["tree"], cat["tree"]);
    assert!(Path::new(&format!("{}.meta.info", ours.display())).is_file());

    // restoring over an existing space removes extras and repairs files
    std::fs::write(ours.join("extra"), b"x").unwrap();
    std::fs::create_dir(ours.join("extradir")).unwrap();
    std::fs::write(ours.join("rcc_plan.log"), b"damaged").unwrap();
    std::fs::remove_file(ours.join("ssl/cert.pem")).unwrap();
    env.ok(&[
        "restore",
        "--no-meta",
        "--catalog",
        "c34ed96c2d8a459a",
        s(&ours),
    ]);
    assert_eq!(snapshot(&ours), b);
    no_part_files(&ours);
}

// ---------------------------------------------------------------- lift

#[test]
fn lift_of_the_restored_fixture_reproduces_its_catalog() {
    let env = Env::new();
    env.import_fixture("simple_linux.zip");
    let stage = env.root.join("stage").join(FIXTURE_IDENTITY);
    std::fs::create_dir_all(stage.parent().unwrap()).unwrap();
    env.ok(&["restore", "--no-meta", "--catalog", LINUX_KEY, s(&stage)]);
    // rcc's build left 0755 dirs; a restore makes them 0750 (minus umask)
    for d in ["", "conda-meta", "ssl"] {
        std::fs::set_permissions(stage.join(d), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let bp = env.root.join("conda.yaml");
    std::fs::write(&bp, format!("{BLUEPRINT}\n")).unwrap();
    let lib2 = env.root.join("lib2");
    let key = env.ok(&[
        "lift",
        s(&stage),
        "--blueprint",
        s(&bp),
        "--hololib",
        s(&lib2),
    ]);
    assert_eq!(key.trim(), LINUX_KEY);

    let fixture = fixture_catalog("simple_linux.zip", LINUX_KEY);
    let ours: serde_json::Value =
        serde_json::from_str(&catalog_text(&lib2.join("catalog").join(LINUX_KEY))).unwrap();
    assert_eq!(ours["tree"], fixture["tree"]);
    assert_eq!(ours["identity"], FIXTURE_IDENTITY);
    assert_eq!(ours["path"], s(&stage));
    assert_eq!(ours["blueprint"], "c34ed96c2d8a459a");
    assert_eq!(ours["platform"], "linux_amd64");
    assert_eq!(ours["controller"], "");
    assert_eq!(ours["space"], "");
    assert_eq!(ours["lifted"], true);
    // same blobs (names and contents; the gzip bytes may differ)
    let fixture_blobs: BTreeMap<String, Vec<u8>> = zip_entries(&crate::fixture("simple_linux.zip"))
        .into_iter()
        .filter(|(n, _)| n.starts_with("library/"))
        .map(|(n, raw)| (n.rsplit('/').next().unwrap().to_string(), gunzip(&raw)))
        .collect();
    let blobs = blob_names(&lib2);
    assert_eq!(
        blobs.keys().collect::<Vec<_>>(),
        fixture_blobs.keys().collect::<Vec<_>>()
    );
    for (d, raw) in &blobs {
        assert_eq!(
            &raw[..10],
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff",
            "Go's gzip header"
        );
        assert_eq!(&gunzip(raw), &fixture_blobs[d]);
    }
    // the .info sidecar holds the Info part
    let info: serde_json::Value = serde_json::from_slice(
        &std::fs::read(lib2.join("catalog").join(format!("{LINUX_KEY}.info"))).unwrap(),
    )
    .unwrap();
    assert_eq!(info["identity"], FIXTURE_IDENTITY);
    assert!(info.get("tree").is_none());

    // a small lifted catalog, exactly as written (Go's field order and layout)
    let text = catalog_text(&lib2.join("catalog").join(LINUX_KEY));
    insta::assert_snapshot!("lifted_fixture_catalog", text.replace(s(&stage), "[stage]"));
}

#[test]
fn lift_equals_pack_store_on_a_tree_of_odd_cases() {
    for raw in [false, true] {
        let env = Env::new();
        let dir = env.root.join("holotree").join(ID);
        build_rich_tree(&dir);
        let bp = env.root.join("conda.yaml");
        std::fs::write(&bp, format!("{BLUEPRINT}\n")).unwrap();
        let ours = env.root.join("ours");
        let theirs = env.root.join("theirs");
        let mut args = vec![
            "lift",
            s(&dir),
            "--blueprint",
            s(&bp),
            "--hololib",
            s(&ours),
        ];
        if raw {
            args.push("--no-compress");
        }
        let key = env.ok(&args);
        let key = key.trim();
        assert_eq!(key, LINUX_KEY);
        let writer = format!("vhrun-v{}", env!("CARGO_PKG_VERSION"));
        let pack_store = common::oracle("pack-store.py");
        let mut py = vec![
            s(&pack_store),
            s(&dir),
            s(&theirs),
            "--blueprint-file",
            s(&bp),
            "--rcc-version",
            &writer,
            "--workers",
            "1",
        ];
        if raw {
            py.push("--no-compress");
        }
        python(&py);

        // byte-identical catalog JSON (Go's MarshalIndent on both sides) and .info
        let a = catalog_text(&ours.join("catalog").join(key));
        let b = catalog_text(&theirs.join("catalog").join(key));
        assert_eq!(a, b, "catalogs differ (raw={raw})");
        assert_eq!(
            std::fs::read(ours.join("catalog").join(format!("{key}.info"))).unwrap(),
            std::fs::read(theirs.join("catalog").join(format!("{key}.info"))).unwrap()
        );
        assert_eq!(ours.join("catalog/compress.no").is_file(), raw);
        let (mine, py_blobs) = (blob_names(&ours), blob_names(&theirs));
        assert_eq!(
            mine.keys().collect::<Vec<_>>(),
            py_blobs.keys().collect::<Vec<_>>()
        );
        for (d, content) in &mine {
            if raw {
                assert_eq!(d.len(), 32);
                assert_eq!(content, &py_blobs[d], "raw blob {d}");
            } else {
                assert_eq!(gunzip(content), gunzip(&py_blobs[d]), "blob {d}");
            }
        }

        // the quirks and rules, spelled out
        let cat: serde_json::Value = serde_json::from_str(&a).unwrap();
        let files: BTreeMap<String, serde_json::Value> = catalog_files(&cat).into_iter().collect();
        let rw = |p: &str| files[p]["rewrite"].clone();
        assert_eq!(
            rw("lib/boundary.bin"),
            serde_json::json!([32744, 32744, 65512, 98294])
        );
        assert_eq!(rw("lib/tail_after_t"), serde_json::json!([]));
        assert_eq!(rw("lib/tail_clean"), serde_json::json!([4]));
        assert_eq!(rw("lib/whole"), serde_json::json!([]));
        assert_eq!(rw("lib/many.pc").as_array().unwrap().len(), 4);
        assert_eq!(files["bin/suid"]["mode"], (1u64 << 23) | 0o755);
        assert_eq!(files["bin/sgid"]["mode"], (1u64 << 22) | 0o750);
        assert_eq!(files["bin/python3"]["symlink"], "tool");
        assert_eq!(files["bin/python3"]["digest"], files["bin/tool"]["digest"]);
        assert_eq!(files["broken"]["digest"], "N/A");
        assert_eq!(files["broken"]["mode"], (1u64 << 27) | 0o777);
        assert_eq!(
            cat["tree"]["subdirs"]["lib"]["subdirs"]["current"]["symlink"],
            "real"
        );
        assert_eq!(
            cat["tree"]["subdirs"]["lib"]["subdirs"]["current"]["subdirs"]["sub"]["shadow"],
            true
        );
        assert!(files.contains_key("lib/current/x.txt"));
        assert!(files.contains_key("lib/keep.pyc.txt"));
        assert!(files.contains_key("identity.yaml"));
        for gone in [
            "lib/mod.pyc",
            "lib/x.git",
            ".gitignore",
            "lib/.svn/entries",
            ".git/config",
        ] {
            assert!(!files.contains_key(gone), "{gone}");
        }
        for gone in ["__pycache__", ".git", "__MACOSX"] {
            assert!(cat["tree"]["subdirs"].get(gone).is_none(), "{gone}");
        }
        assert_eq!(
            std::fs::read_to_string(dir.join("identity.yaml")).unwrap(),
            format!("{BLUEPRINT}\n")
        );
    }
}

// ------------------------------------------------------- lift -> restore

#[test]
fn lift_then_restore_round_trips_byte_for_byte() {
    for raw in [false, true] {
        let env = Env::new();
        let dir = env.root.join("build").join(ID);
        build_rich_tree(&dir);
        let bp = env.root.join("conda.yaml");
        std::fs::write(&bp, format!("{BLUEPRINT}\n")).unwrap();
        let mut args = vec!["lift", s(&dir), "--blueprint", s(&bp)];
        if raw {
            args.push("--no-compress");
        }
        env.ok(&args);
        assert_eq!(env.hololib().join("catalog/compress.no").is_file(), raw);
        assert!(env.ok(&["check"]).is_empty());

        // same basename elsewhere: identical to the source, minus the killfile
        let same = env.root.join("again").join(ID);
        std::fs::create_dir_all(same.parent().unwrap()).unwrap();
        env.ok(&["restore", "--catalog", LINUX_KEY, s(&same)]);
        let mut src = snapshot(&dir);
        src.retain(|k, _| {
            ![
                "__pycache__",
                ".git",
                "__MACOSX",
                ".gitignore",
                "lib/mod.pyc",
                "lib/x.git",
                "lib/.svn",
            ]
            .iter()
            .any(|g| k == g || k.starts_with(&format!("{g}/")))
        });
        let got = snapshot(&same);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            src.keys().collect::<Vec<_>>()
        );
        for (k, v) in &got {
            match (v, &src[k]) {
                (Node::Dir { mode }, Node::Dir { .. }) => {
                    assert_eq!(mode & 0o7777, 0o750 & !umask(), "{k}")
                }
                (
                    Node::File {
                        mode,
                        mtime,
                        content,
                    },
                    Node::File {
                        mode: m2,
                        content: c2,
                        ..
                    },
                ) => {
                    assert_eq!(mode, m2, "{k}");
                    assert_eq!(*mtime, MOTHER_TIME, "{k}");
                    assert!(content == c2, "{k} differs");
                }
                (a, b) => assert_eq!(a, b, "{k}"),
            }
        }

        // another name of the same length: the name sits at every offset the
        // catalog lists, everything else is the source's bytes
        let other = env.root.join("again").join(SPACE);
        env.ok(&["restore", "--catalog", LINUX_KEY, s(&other)]);
        let cat: serde_json::Value = serde_json::from_str(&catalog_text(
            &env.hololib().join("catalog").join(LINUX_KEY),
        ))
        .unwrap();
        for (path, f) in catalog_files(&cat) {
            if !f["symlink"].is_null() || path.starts_with("lib/current/") {
                continue;
            }
            let mut expected = std::fs::read(dir.join(&path)).unwrap();
            for off in f["rewrite"].as_array().unwrap() {
                let o = off.as_u64().unwrap() as usize;
                expected[o..o + 24].copy_from_slice(SPACE.as_bytes());
            }
            assert!(
                std::fs::read(other.join(&path)).unwrap() == expected,
                "{path}"
            );
        }
        let tail = std::fs::read(other.join("lib/tail_after_t")).unwrap();
        assert!(
            tail.ends_with(ID.as_bytes()),
            "rcc misses this one, so do we"
        );

        // and the Python oracle restores the same bytes, modes and links
        // (symlinked dir, dangling link, setuid/setgid, unicode, empty dirs)
        let oracle = env.root.join("oracle").join(SPACE);
        std::fs::create_dir_all(oracle.parent().unwrap()).unwrap();
        python(&[
            s(&common::oracle("restore-store.py")),
            s(&env.hololib()),
            LINUX_KEY,
            s(&oracle),
            "--no-meta",
        ]);
        let (a, b) = (snapshot(&other), snapshot(&oracle));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (k, v) in &a {
            assert_eq!(v, &b[k], "{k}");
        }
    }
}

// ---------------------------------------------------------------- export

#[test]
fn export_round_trips_through_import() {
    for (z, platform) in [
        ("simple_linux.zip", "linux_amd64"),
        ("simple_windows.zip", "windows_amd64"),
    ] {
        let env = Env::new();
        env.import_fixture(z);
        let key = format!("c34ed96c2d8a459av12.{platform}");
        let out = env.root.join("export.zip");
        env.ok(&["export", &key, "-o", s(&out)]);

        // rcc's layout: Deflate, no directory entries, 1980 timestamps, blobs then catalog
        let mut archive = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
        let mut names = Vec::new();
        for i in 0..archive.len() {
            let f = archive.by_index_raw(i).unwrap();
            assert_eq!(f.compression(), zip::CompressionMethod::Deflated);
            assert!(!f.is_dir());
            assert_eq!(f.last_modified().map(|t| t.year()), Some(1980));
            names.push(f.name().unwrap().to_string());
        }
        assert_eq!(names.last().unwrap(), &format!("catalog/{key}"));
        assert!(names[..names.len() - 1]
            .iter()
            .all(|n| n.starts_with("library/")));

        let mut ours = zip_entries(&out);
        let mut theirs = zip_entries(&fixture(z));
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);

        // and it imports into a fresh home
        let env2 = Env::new();
        let imported = env2.ok(&["import", s(&out)]);
        assert_eq!(imported.trim(), key);
        assert!(env2.ok(&["check"]).is_empty());
    }
}

// ---------------------------------------------------------------- check

#[test]
fn check_reports_missing_and_corrupt_blobs_read_only() {
    let env = Env::new();
    env.import_fixture("simple_linux.zip");
    let cat = fixture_catalog("simple_linux.zip", LINUX_KEY);
    let digest_of = |path: &str| {
        catalog_files(&cat)
            .into_iter()
            .find(|(p, _)| p == path)
            .map(|(_, f)| f["digest"].as_str().unwrap().to_string())
            .unwrap()
    };
    let cacert = &digest_of("ssl/cacert.pem");
    let history = &digest_of("conda-meta/history");
    let blob = |d: &str| {
        env.hololib()
            .join("library")
            .join(&d[0..2])
            .join(&d[2..4])
            .join(&d[4..6])
            .join(d)
    };
    std::fs::write(blob(cacert), gzip(b"not the certificates")).unwrap();
    std::fs::remove_file(blob(history)).unwrap();
    let before = snapshot(&env.hololib());

    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(74));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // cacert.pem and cert.pem share the corrupt blob
    assert!(
        stdout.contains(&format!(
            "{LINUX_KEY}: ssl/cacert.pem: blob {}: content hashes to",
            blob(cacert).display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{LINUX_KEY}: ssl/cert.pem: blob {}",
            blob(cacert).display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{LINUX_KEY}: conda-meta/history: blob {}: missing",
            blob(history).display()
        )),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), 3, "{stdout}");

    let out = env.run(&["check", "--json"]);
    assert_eq!(out.status.code(), Some(74));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"].as_array().unwrap().len(), 3);
    assert_eq!(report["catalogs"], 1);
    assert_eq!(report["blobs"], 8);
    // read only: nothing removed or repaired
    assert_eq!(snapshot(&env.hololib()), before);

    // restore refuses the corrupt blob and leaves no part file behind
    let target = env.root.join(SPACE);
    let line = env.fails(
        &["restore", "--no-meta", "--catalog", LINUX_KEY, s(&target)],
        74,
    );
    assert!(
        line.contains("blob ") && line.contains(s(&target)),
        "{line}"
    );
    no_part_files(&target);
    // export refuses a missing blob and writes no zip
    let zip = env.root.join("x.zip");
    let line = env.fails(&["export", LINUX_KEY, "-o", s(&zip)], 74);
    assert!(line.contains(history) && line.contains("missing"), "{line}");
    assert!(!zip.exists());
    no_part_files(&env.root);
}

// ---------------------------------------------------------------- bad input

/// A copy of the linux fixture with `edit` applied to its entry list.
fn doctored_zip(path: &Path, edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) {
    let mut entries: Vec<(String, Vec<u8>)> = {
        let mut z = zip::ZipArchive::new(std::fs::File::open(fixture("simple_linux.zip")).unwrap())
            .unwrap();
        (0..z.len())
            .map(|i| {
                let mut f = z.by_index(i).unwrap();
                let mut v = Vec::new();
                f.read_to_end(&mut v).unwrap();
                (f.name().unwrap().to_string(), v)
            })
            .collect()
    };
    edit(&mut entries);
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data) in entries {
        if let Some(name) = name.strip_prefix("SYMLINK:") {
            w.add_symlink(
                name,
                "/etc/passwd",
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            continue;
        }
        w.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(&data).unwrap();
    }
    w.finish().unwrap();
}

fn hololib_is_empty(env: &Env) {
    let lib = env.hololib();
    let catalogs: Vec<_> = std::fs::read_dir(lib.join("catalog"))
        .map(|r| r.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(catalogs.is_empty(), "{catalogs:?}");
    no_part_files(&lib);
}

#[test]
fn bad_zips_are_refused_before_anything_is_placed() {
    let env = Env::new();
    let bad = env.root.join("bad.zip");
    type Edit = Box<dyn Fn(&mut Vec<(String, Vec<u8>)>)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "traversal",
            Box::new(|e| e.push(("../evil".into(), b"x".to_vec()))),
            "\"../evil\"",
        ),
        (
            "traversal inside",
            Box::new(|e| e.push(("library/../../evil".into(), b"x".to_vec()))),
            "relative path component",
        ),
        (
            "absolute",
            Box::new(|e| e.push(("/etc/evil".into(), b"x".to_vec()))),
            "absolute name",
        ),
        (
            "symlink",
            Box::new(|e| {
                let blob = e.iter_mut().find(|(n, _)| n.contains("fa883829")).unwrap();
                blob.0 = format!("SYMLINK:{}", blob.0);
            }),
            "is a symlink",
        ),
        (
            "corrupt blob",
            Box::new(|e| {
                let blob = e.iter_mut().find(|(n, _)| n.contains("fa883829")).unwrap();
                blob.1 = gzip(b"evil certificates");
            }),
            "content hashes to",
        ),
        (
            "truncated gzip",
            Box::new(|e| {
                let blob = e.iter_mut().find(|(n, _)| n.contains("fa883829")).unwrap();
                blob.1.truncate(blob.1.len() / 2);
            }),
            "cannot decode",
        ),
        (
            "blob missing from zip",
            Box::new(|e| e.retain(|(n, _)| !n.contains("fa883829"))),
            "neither in the zip nor in",
        ),
        (
            "malformed catalog",
            Box::new(|e| {
                let c = e
                    .iter_mut()
                    .find(|(n, _)| n.starts_with("catalog/"))
                    .unwrap();
                c.1 = gzip(b"{\"tree\": [1, 2");
            }),
            "not a catalog",
        ),
        (
            "catalog with ..",
            Box::new(|e| {
                let c = e
                    .iter_mut()
                    .find(|(n, _)| n.starts_with("catalog/"))
                    .unwrap();
                let text = String::from_utf8(gunzip(&c.1)).unwrap();
                c.1 = gzip(text.replace("\"ssl\": {", "\"..\": {").as_bytes());
            }),
            "invalid entry name",
        ),
        (
            "catalog bomb",
            Box::new(|e| {
                let c = e
                    .iter_mut()
                    .find(|(n, _)| n.starts_with("catalog/"))
                    .unwrap();
                c.1 = gzip_bomb(100);
            }),
            "compression bomb",
        ),
    ];
    for (what, edit, needle) in cases {
        doctored_zip(&bad, edit);
        let line = env.fails(&["import", s(&bad)], 65);
        assert!(line.contains(s(&bad)), "{what}: {line}");
        assert!(line.contains(needle), "{what}: {line}");
        hololib_is_empty(&env);
    }
    std::fs::write(&bad, b"PK not really").unwrap();
    let line = env.fails(&["import", s(&bad)], 65);
    assert!(line.contains("not a readable zip"), "{line}");
    env.fails(&["import", s(&env.root.join("nope.zip"))], 66);
}

/// A catalog that decompresses without end (100 MiB of JSON-ish bytes
/// from ~100 KB) is refused with a line naming it, not decoded in full:
/// by the run's path (`exec --catalog` loads the tree), restore and check.
#[test]
fn a_catalog_bomb_is_one_line_naming_the_file() {
    let env = Env::new();
    let catalog = env
        .hololib()
        .join("catalog")
        .join("0123456789abcdefv12.linux_amd64");
    std::fs::create_dir_all(catalog.parent().unwrap()).unwrap();
    let bomb = gzip_bomb(100);
    assert!(bomb.len() < 200 << 10, "{}", bomb.len());
    std::fs::write(&catalog, &bomb).unwrap();
    let target = env.root.join("restored");
    for args in [
        vec!["exec", "--catalog", "0123456789abcdef", "--", "true"],
        vec![
            "restore",
            "--no-meta",
            "--catalog",
            "0123456789abcdef",
            s(&target),
        ],
    ] {
        let line = env.fails(&args, 65);
        assert!(line.contains(s(&catalog)), "{args:?}: {line}");
        assert!(
            line.contains("decompresses to more than 64 MiB"),
            "{args:?}: {line}"
        );
    }
    assert!(!target.exists());
    // check reports it as a broken catalog (and exits non-zero) without
    // decoding it in full
    let out = env.run(&["check"]);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("compression bomb"), "{text}");
}

#[test]
fn bad_restore_and_lift_inputs_fail_cleanly() {
    let env = Env::new();
    env.import_fixture("simple_linux.zip");

    // unknown catalog key
    let line = env.fails(
        &[
            "restore",
            "--catalog",
            "0000000000000000",
            s(&env.root.join(SPACE)),
        ],
        67,
    );
    assert!(line.contains("0000000000000000"), "{line}");
    env.fails(&["export", "nope", "-o", s(&env.root.join("x.zip"))], 67);

    // target basename of the wrong length: nothing created
    let short = env.root.join("short");
    let line = env.fails(&["restore", "--catalog", LINUX_KEY, s(&short)], 2);
    assert!(
        line.contains("identity") && line.contains(FIXTURE_IDENTITY),
        "{line}"
    );
    assert!(!short.exists());
    assert!(!env.root.join("short.lck").exists());

    // malformed catalog in the hololib: restore refuses, catalogs warns and
    // lists the rest, check reports it
    let broken = env
        .hololib()
        .join("catalog/1111111111111111v12.linux_amd64");
    std::fs::write(&broken, b"this is not gzip json").unwrap();
    let line = env.fails(
        &[
            "restore",
            "--catalog",
            "1111111111111111",
            s(&env.root.join(SPACE)),
        ],
        65,
    );
    assert!(line.contains(s(&broken)), "{line}");
    let out = env.run(&["catalogs", "--json"]);
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1111111111111111"));
    let out = env.run(&["check"]);
    assert_eq!(out.status.code(), Some(74));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1111111111111111v12.linux_amd64: catalog")
    );
    std::fs::remove_file(&broken).unwrap();

    // a catalog whose entry names escape the tree is refused before any write
    let evil = env
        .hololib()
        .join("catalog/2222222222222222v12.linux_amd64");
    let text = catalog_text(&env.hololib().join("catalog").join(LINUX_KEY))
        .replace("\"ssl\": {", "\"..\": {");
    std::fs::write(&evil, gzip(text.as_bytes())).unwrap();
    let target = env.root.join("t").join(SPACE);
    let line = env.fails(
        &["restore", "--catalog", "2222222222222222", s(&target)],
        65,
    );
    assert!(line.contains("invalid entry name \"..\""), "{line}");
    assert!(!target.exists());
    std::fs::remove_file(&evil).unwrap();

    // lift: missing dir, missing blueprint, a fifo, raw into a gzip hololib
    let bp = env.root.join("conda.yaml");
    std::fs::write(&bp, BLUEPRINT).unwrap();
    env.fails(
        &["lift", s(&env.root.join("nope")), "--blueprint", s(&bp)],
        66,
    );
    let dir = env.root.join("b").join(ID);
    std::fs::create_dir_all(&dir).unwrap();
    env.fails(
        &[
            "lift",
            s(&dir),
            "--blueprint",
            s(&env.root.join("nope.yaml")),
        ],
        66,
    );
    let fifo = dir.join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let line = env.fails(&["lift", s(&dir), "--blueprint", s(&bp)], 65);
    assert!(line.contains("pipe") && line.contains("fifo"), "{line}");
    // a failed walk leaves a fresh hololib untouched (no compress.no either)
    let fresh = env.root.join("fresh");
    env.fails(
        &[
            "lift",
            s(&dir),
            "--blueprint",
            s(&bp),
            "--no-compress",
            "--hololib",
            s(&fresh),
        ],
        65,
    );
    assert!(!fresh.exists());
    std::fs::remove_file(&fifo).unwrap();
    let line = env.fails(
        &["lift", s(&dir), "--blueprint", s(&bp), "--no-compress"],
        65,
    );
    assert!(line.contains("compress.no"), "{line}");
    assert!(!env.hololib().join("catalog/compress.no").exists());
    // a symlinked directory that contains itself
    std::os::unix::fs::symlink(".", dir.join("loop")).unwrap();
    let line = env.fails(&["lift", s(&dir), "--blueprint", s(&bp)], 65);
    assert!(line.contains("symlink loop"), "{line}");
}
