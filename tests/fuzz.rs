//! Hostile inputs: property-based fuzzing (proptest) of everything vhrun
//! parses from files it did not write: robot.yaml, conda.yaml,
//! package.yaml, the catalog decoder and tree builder, and the binary tree
//! index. Each target feeds arbitrary bytes, token soup and structured
//! mutations of the seed corpus (`tests/corpus/`), and asks of every input:
//! no panic (proptest catches and shrinks one), an answer in bounded time
//! (a case over `CASE_LIMIT` fails; a watchdog aborts the binary if a case
//! hangs), and, for what is accepted, the invariants the FUSE server relies
//! on.
//!
//! Cases per target: 1,000 by default (CI), 20,000 with
//! `VHRUN_LONG_TESTS=1`, or exactly `VHRUN_FUZZ_CASES`. `VHRUN_FUZZ_SEED`
//! (a number) pins the random seed. Each target prints its executions,
//! time and the process's peak RSS (run with `--nocapture` to see them).

mod common;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};
use vhrun::blueprint::Environment;
use vhrun::gomode;
use vhrun::hololib::catalog::gzip_bytes;
use vhrun::hololib::{Catalog, Dir, File};
use vhrun::robot::Robot;
use vhrun::tree::{Kind, Tree};

/// Longest a single input may take (debug build, shared 2-core machine).
const CASE_LIMIT: Duration = Duration::from_secs(5);
/// A case still running after this is a hang: abort the whole binary.
const HANG_LIMIT: Duration = Duration::from_secs(120);

fn cases() -> u32 {
    if let Some(n) = std::env::var("VHRUN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if std::env::var("VHRUN_LONG_TESTS").as_deref() == Ok("1") {
        20_000
    } else {
        1_000
    }
}

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

// ---------------------------------------------------------------------
// The harness: a runner with a count, a clock and a hang watchdog.

/// Milliseconds since the epoch at which the current case of each running
/// target started (0 = idle), for the watchdog.
static BUSY: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static SLOT: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn start_watchdog() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            for b in &BUSY {
                let t = b.load(Ordering::Relaxed);
                if t != 0 && now_ms().saturating_sub(t) > HANG_LIMIT.as_millis() as u64 {
                    eprintln!("fuzz: a case has run for more than {HANG_LIMIT:?}: hang");
                    std::process::abort();
                }
            }
        });
    });
}

fn peak_rss_mib() -> f64 {
    let ru = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    ru.max_rss() as f64 / 1024.0
}

/// Run `check` on `cases()` inputs of `strategy`, report the figures.
fn fuzz<S: Strategy>(target: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), String>)
where
    S::Value: std::fmt::Debug,
{
    start_watchdog();
    let slot = &BUSY[SLOT.fetch_add(1, Ordering::Relaxed) as usize % BUSY.len()];
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    };
    let mut runner = match std::env::var("VHRUN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&seed.to_le_bytes());
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
        }
        None => TestRunner::new(config),
    };
    let executed = AtomicU64::new(0);
    let slowest = AtomicU64::new(0);
    let started = Instant::now();
    let result = runner.run(&strategy, |input| {
        executed.fetch_add(1, Ordering::Relaxed);
        slot.store(now_ms(), Ordering::Relaxed);
        let t = Instant::now();
        let r = check(input);
        let took = t.elapsed();
        slot.store(0, Ordering::Relaxed);
        slowest.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        r.map_err(TestCaseError::fail)?;
        if took > CASE_LIMIT {
            return Err(TestCaseError::fail(format!("took {took:?}")));
        }
        Ok(())
    });
    eprintln!(
        "fuzz {target}: {} executions in {:.2} s (slowest input {:.1} ms), peak RSS {:.0} MiB",
        executed.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        slowest.load(Ordering::Relaxed) as f64 / 1e3,
        peak_rss_mib()
    );
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
}

// ---------------------------------------------------------------------
// Input shapes shared by the targets.

#[derive(Debug, Clone)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Duplicate(prop::sample::Index, usize, prop::sample::Index),
    Token(prop::sample::Index, &'static str),
    Truncate(prop::sample::Index),
}

fn mutation(tokens: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    let idx = any::<prop::sample::Index>;
    prop_oneof![
        3 => (idx(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (idx(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        2 => (idx(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (idx(), 1usize..64, idx()).prop_map(|(i, n, j)| Mutation::Duplicate(i, n, j)),
        4 => (idx(), prop::sample::select(tokens)).prop_map(|(i, t)| Mutation::Token(i, t)),
        1 => idx().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = data.len();
        let at = |i: &prop::sample::Index| if len == 0 { 0 } else { i.index(len + 1) };
        match m {
            Mutation::Flip(i, bit) if len > 0 => data[i.index(len)] ^= 1 << bit,
            Mutation::Flip(..) => {}
            Mutation::Insert(i, bytes) => {
                let p = at(i);
                data.splice(p..p, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let p = at(i);
                let end = (p + n).min(len);
                data.drain(p..end);
            }
            Mutation::Duplicate(i, n, j) => {
                let p = at(i);
                let end = (p + n).min(len);
                let chunk = data[p..end].to_vec();
                let q = at(j).min(data.len());
                data.splice(q..q, chunk);
            }
            Mutation::Token(i, t) => {
                let p = at(i);
                data.splice(p..p, t.bytes());
            }
            Mutation::Truncate(i) => data.truncate(at(i)),
        }
    }
    data
}

/// Arbitrary bytes, token soup, or a mutated seed.
fn input(seeds: Vec<Vec<u8>>, tokens: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..1024),
        2 => prop::collection::vec(prop::sample::select(tokens), 0..80).prop_map(|t| t.concat().into_bytes()),
        1 => ".{0,300}".prop_map(String::into_bytes),
        6 => (prop::sample::select(seeds), prop::collection::vec(mutation(tokens), 1..10))
            .prop_map(|(seed, muts)| apply(seed, &muts)),
    ]
}

const YAML_TOKENS: &[&str] = &[
    "tasks:",
    "devTasks:",
    "shell:",
    "command:",
    "robotTaskName:",
    "condaConfigFile:",
    "environmentConfigs:",
    "artifactsDir:",
    "PATH:",
    "PYTHONPATH:",
    "preRunScripts:",
    "ignoreFiles:",
    "dependencies:",
    "dev-dependencies:",
    "channels:",
    "conda-forge:",
    "pypi:",
    "pip:",
    "post-install:",
    "rccPostInstall:",
    "name:",
    "prefix:",
    "\n",
    "\n  ",
    "\n- ",
    "  - ",
    "- ",
    ": ",
    ":",
    "&a ",
    "*a",
    "&b [*a,*a,*a,*a]",
    "<<: *a",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "~",
    "null",
    "true",
    "0x1f",
    "1e400",
    "-.inf",
    "'",
    "''",
    "\"",
    "\\",
    "\\u0000",
    "#",
    "---\n",
    "...\n",
    "!!str ",
    "!!binary ",
    "!!map ",
    "!!python/object ",
    "? ",
    "|\n  ",
    ">-\n  ",
    "\t",
    "\0",
    "\u{feff}",
    "☃",
    "python=3.10",
    "pip=23",
    "numpy==1.0",
    ">=",
    "<",
    "==",
    "=",
    "@ https://x/y.whl",
    "-e .",
    "conda-forge",
    "defaults",
    "a b c",
    "'unterminated",
    "\"quoted \\\" arg\"",
    "x_linux_amd64.yaml",
    "freeze",
    "windows",
    "darwin",
    "arm64",
    "../../",
    "/abs/path",
    "%",
    "@",
    "`",
    "\r\n",
];

// ---------------------------------------------------------------------
// robot.yaml

/// Everything a run or `vhrun vars` asks of a robot.
fn exercise_robot(path: &Path) -> Result<(), String> {
    let robot = match Robot::load(path) {
        Ok(r) => r,
        Err(e) => return expect_bad_input(e, path),
    };
    let _ = robot.validate();
    for dev in [false, true] {
        let mut names: Vec<Option<String>> = vec![None, Some("x".into()), Some("".into())];
        names.extend(
            robot
                .available_tasks(dev)
                .iter()
                .filter_map(|q| serde_json::from_str::<String>(q).ok())
                .map(Some),
        );
        for name in names {
            if let Ok(task) = robot.task(name.as_deref(), dev) {
                if let Ok(argv) = task.argv() {
                    if argv.is_empty() {
                        return Err("task.argv() returned an empty command".into());
                    }
                }
            }
        }
    }
    let _ = robot.conda_config();
    let _ = robot.artifacts_dir();
    let _ = robot.path_entries();
    let _ = robot.pythonpath_entries();
    let _ = robot.ignore_files();
    if let Ok(scripts) = robot.pre_run_scripts() {
        if scripts.iter().any(|s| s.is_empty()) {
            return Err("a pre-run script with no command".into());
        }
    }
    let _ = robot.holozip();
    Ok(())
}

/// A refused file names itself and maps to a documented exit code.
fn expect_bad_input(e: vhrun::Error, path: &Path) -> Result<(), String> {
    let msg = e.to_string();
    if !msg.contains(&path.display().to_string()) || msg.contains('\n') && msg.len() > 4000 {
        return Err(format!("error does not name {}: {msg}", path.display()));
    }
    match e.exit_code() {
        65 | 66 | 74 => Ok(()),
        c => Err(format!("unexpected exit code {c} for {msg}")),
    }
}

#[test]
fn fuzz_robot_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("robot.yaml");
    // Files a robot may point at, so the lookups find something.
    std::fs::write(
        dir.path().join("conda.yaml"),
        "dependencies: [python=3.10]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("x_linux_amd64.yaml"), "dependencies: []\n").unwrap();
    fuzz("robot.yaml", input(corpus("robot"), YAML_TOKENS), |bytes| {
        std::fs::write(&file, &bytes).unwrap();
        exercise_robot(&file)
    });
}

// ---------------------------------------------------------------------
// conda.yaml and package.yaml

fn exercise_env(env: &Environment) -> Result<(), String> {
    let bp = env.blueprint();
    if bp.hash.len() != 16 || !bp.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("blueprint hash {:?}", bp.hash));
    }
    // The blueprint text is what rcc hashes: it must be stable.
    if env.blueprint() != bp {
        return Err("blueprint not deterministic".into());
    }
    let _ = env.layers();
    let _ = env.merge(env);
    let _ = env.merge(&Environment::default());
    Ok(())
}

#[test]
fn fuzz_conda_yaml() {
    fuzz("conda.yaml", input(corpus("conda"), YAML_TOKENS), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        for channel in [None, Some("/home/x/channel")] {
            if let Ok((env, _warnings)) = Environment::from_conda_yaml(&text, channel) {
                exercise_env(&env)?;
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_package_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("package.yaml");
    fuzz(
        "package.yaml",
        input(corpus("package"), YAML_TOKENS),
        |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            for devdeps in [false, true] {
                if let Ok((env, _warnings)) = Environment::from_package_yaml(&text, devdeps) {
                    exercise_env(&env)?;
                }
            }
            // Through the file, as `vhrun hash` reads it (names it on error).
            std::fs::write(&file, &bytes).unwrap();
            match Environment::load(&file, true, dir.path()) {
                Ok(env) => exercise_env(&env),
                Err(e) => expect_bad_input(e, &file),
            }
        },
    );
}

// ---------------------------------------------------------------------
// Catalogs: decoder, tree builder, tree index.

const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "false",
    "0",
    "-1",
    "1e999",
    "9223372036854775807",
    "18446744073709551616",
    "4294967295",
    "-9223372036854775808",
    "\"subdirs\":",
    "\"files\":",
    "\"name\":",
    "\"symlink\":",
    "\"mode\":",
    "\"size\":",
    "\"digest\":",
    "\"rewrite\":",
    "\"tree\":",
    "\"identity\":",
    "\"path\":",
    "\"shadow\":true",
    "\"..\"",
    "\".\"",
    "\"\"",
    "\"a/b\"",
    "\"a\\u0000b\"",
    "\"\\ud800\"",
    "\"/etc/passwd\"",
    "\"../../../../etc\"",
    "\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
    "\"00112233445566778899aabbccddeeff\"",
    "[0,6]",
    "[-1]",
    "2147484141",
    "134218239",
    "8389101",
    "69206016",
    " ",
    "\n",
    "\\",
    "\\u0041",
];

/// Walk every node the way the FUSE server can reach it; for a tree built
/// from a catalog (`strict`) also check the invariants lookups rely on.
fn exercise_tree(t: &Tree, strict: bool) -> Result<(), String> {
    let n = t.len() as u64;
    if n == 0 {
        return Err("empty tree".into());
    }
    let root = t.get(1).ok_or("no root")?;
    if root.kind() != Kind::Dir {
        return Err("root is not a directory".into());
    }
    for ino in 1..=n {
        let node = t.get(ino).ok_or("hole in the arena")?;
        let path = t.path(ino);
        let _ = (node.st_mode(), node.size(), node.nlink(), node.perm());
        let _ = (
            node.digest(),
            node.rewrite(),
            node.defect(),
            node.symlink_target(),
        );
        if node.st_mode() & 0o6000 != 0 {
            return Err(format!("{}: setuid/setgid served", path.display()));
        }
        for c in node.children() {
            let Some(child) = t.get(c) else {
                if strict {
                    return Err(format!("{}: child {c} out of the arena", path.display()));
                }
                continue;
            };
            let found = t.lookup(ino, child.name()).map(|f| f.ino());
            if strict {
                if child.parent() != ino || found != Some(c) {
                    return Err(format!(
                        "{}: lookup of child {c} gave {found:?}",
                        path.display()
                    ));
                }
                if t.resolve(&t.path(c)).map(|r| r.ino()) != Some(c) {
                    return Err(format!("{}: does not resolve", t.path(c).display()));
                }
            }
        }
        if strict && node.kind() == Kind::File && node.defect().is_none() {
            let size = node.size();
            let id = t.identity().len() as u64;
            if node.rewrite().iter().any(|&o| o + id > size) {
                return Err(format!(
                    "{}: rewrite offset outside the file",
                    path.display()
                ));
            }
        }
    }
    let _ = (
        t.get(0),
        t.get(n + 1),
        t.lookup(1, b""),
        t.lookup(n + 5, b"x"),
    );
    let _ = t.resolve(Path::new("a/../b/./c"));
    let _ = t.totals();
    Ok(())
}

/// Decode, build, and check that a refusal names the catalog.
fn exercise_catalog_bytes(bytes: &[u8]) -> Result<Option<Tree>, String> {
    let catalog = match Catalog::from_bytes(bytes) {
        Ok(c) => c,
        Err(msg) => {
            if msg.is_empty() {
                return Err("empty decode error".into());
            }
            return Ok(None);
        }
    };
    let _ = catalog.totals();
    let mut n = 0;
    catalog.walk_files(|_, _, _| n += 1);
    let source = Path::new("/hololib/catalog/fuzzed");
    match Tree::from_catalog(&catalog, source) {
        Ok(t) => {
            exercise_tree(&t, true)?;
            Ok(Some(t))
        }
        Err(e) => {
            let msg = e.to_string();
            if !matches!(e, vhrun::Error::Catalog { .. })
                || !msg.starts_with("catalog /hololib/catalog/fuzzed: ")
            {
                return Err(format!("refusal does not name the catalog: {msg}"));
            }
            Ok(None)
        }
    }
}

#[test]
fn fuzz_catalog_decoder_and_tree() {
    let seeds: Vec<Vec<u8>> = corpus("catalog")
        .into_iter()
        .flat_map(|s| [gzip_bytes(&s), s])
        .collect();
    let accepted = AtomicU64::new(0);
    let strategy = prop_oneof![
        // Mutated JSON, and mutated gzip streams (the checksum catches most).
        4 => input(seeds.clone(), JSON_TOKENS),
        // Valid gzip around mutated JSON: reaches the JSON decoder.
        4 => (prop::sample::select(corpus("catalog")), prop::collection::vec(mutation(JSON_TOKENS), 1..8))
            .prop_map(|(s, m)| gzip_bytes(&apply(s, &m))),
    ];
    fuzz("catalog bytes", strategy, |bytes| {
        if exercise_catalog_bytes(&bytes)?.is_some() {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    eprintln!(
        "fuzz catalog bytes: {} inputs built a tree",
        accepted.load(Ordering::Relaxed)
    );
}

// Structured catalogs: valid JSON, hostile content.

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => "[a-z0-9_.-]{1,10}",
        1 => Just(String::new()),
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => "[a-z]{0,3}/[a-z]{0,3}",
        1 => "[a-z]{0,3}\0[a-z]{0,3}",
        1 => Just("n".repeat(255)),
        1 => Just("n".repeat(256)),
        1 => "\\PC{1,6}",
    ]
}

fn digest() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9a-f]{64}",
        2 => "[0-9a-f]{32}",
        1 => "[0-9A-F]{64}",
        1 => "[ -~]{0,70}",
        1 => Just("../../../../etc/passwd".to_string()),
        1 => Just(String::new()),
    ]
}

fn file() -> impl Strategy<Value = File> {
    let size =
        prop_oneof![4 => 0i64..100_000, 1 => any::<i64>(), 1 => Just(i64::MAX), 1 => Just(-1i64)];
    let mode = prop_oneof![
        3 => prop::sample::select(vec![0o644u32, 0o755, 0o600, 0o777]),
        1 => Just(gomode::MODE_SETUID | 0o4755),
        1 => Just(gomode::MODE_SYMLINK | 0o777),
        1 => any::<u32>(),
    ];
    let symlink = prop_oneof![
        6 => Just(String::new()),
        1 => "[ -~]{1,20}",
        1 => Just("../../../../../etc/shadow".to_string()),
        1 => Just("/etc/passwd".to_string()),
    ];
    let rewrite = prop::collection::vec(prop_oneof![4 => 0i64..2_000, 1 => any::<i64>()], 0..4);
    (
        size,
        mode,
        symlink,
        digest(),
        rewrite,
        prop::option::weighted(0.05, name()),
    )
        .prop_map(|(size, mode, symlink, digest, rewrite, odd_name)| File {
            name: odd_name.unwrap_or_default(),
            symlink,
            size,
            mode,
            digest,
            rewrite,
        })
}

fn dir() -> impl Strategy<Value = Dir> {
    let leaf = prop::collection::btree_map(name(), file(), 0..6).prop_map(|files| Dir {
        mode: gomode::MODE_DIR | 0o755,
        files,
        ..Default::default()
    });
    leaf.prop_recursive(4, 64, 6, |inner| {
        (
            prop::collection::btree_map(name(), file(), 0..6),
            prop::collection::btree_map(name(), inner, 0..4),
            prop_oneof![8 => Just(String::new()), 1 => "[a-z./]{1,12}"],
            any::<u32>(),
        )
            .prop_map(|(files, dirs, symlink, mode)| Dir {
                symlink,
                mode,
                dirs,
                files,
                ..Default::default()
            })
    })
}

fn catalog() -> impl Strategy<Value = Catalog> {
    let identity = prop_oneof![
        4 => Just("h59acff1_493f813dad24d3t".to_string()),
        1 => Just(String::new()),
        1 => "[ -~]{0,40}",
    ];
    (identity, dir()).prop_map(|(identity, tree)| Catalog {
        path: format!("/home/user/.robocorp/holotree/{identity}"),
        identity,
        platform: "linux_amd64".into(),
        tree,
        ..Default::default()
    })
}

/// Name fields that contradict their keys and file/dir name clashes are
/// what make a catalog refused; everything else must build a tree.
fn must_build(d: &Dir) -> bool {
    fn ok_name(n: &str) -> bool {
        !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\0']) && n.len() <= 255
    }
    // A file marked as a symlink needs a target.
    let ok_link = |f: &File| !f.symlink.is_empty() || !gomode::is_symlink(f.mode);
    d.files
        .iter()
        .all(|(k, f)| ok_name(k) && (f.name.is_empty() || f.name == *k) && ok_link(f))
        && d.dirs.iter().all(|(k, s)| {
            ok_name(k)
                && (s.name.is_empty() || s.name == *k)
                && !d.files.contains_key(k)
                && (!s.symlink.is_empty() || must_build(s))
        })
}

#[test]
fn fuzz_structured_catalogs_and_index_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let cat_path = dir.path().join("catalog");
    let built = AtomicU64::new(0);
    fuzz("structured catalogs", catalog(), |c| {
        // The Go-exact JSON decodes back to the same catalog.
        let gz = gzip_bytes(&c.to_json());
        let back = Catalog::from_bytes(&gz).map_err(|e| format!("own JSON refused: {e}"))?;
        if back != c {
            return Err("JSON round trip changed the catalog".into());
        }
        let tree = exercise_catalog_bytes(&gz)?;
        // A root that is a symlink is refused too.
        let expected = c.tree.symlink.is_empty() && must_build(&c.tree);
        if tree.is_some() != expected {
            return Err(format!("built: {}, expected {expected}", tree.is_some()));
        }
        let Some(tree) = tree else { return Ok(()) };
        built.fetch_add(1, Ordering::Relaxed);
        // The binary index gives back the same tree.
        std::fs::write(&cat_path, &gz).unwrap();
        let _ = std::fs::remove_dir_all(&index_dir);
        let first = Tree::load_indexed(&cat_path, &index_dir).map_err(|e| e.to_string())?;
        let second = Tree::load_indexed(&cat_path, &index_dir).map_err(|e| e.to_string())?;
        for t in [&first, &second] {
            if t.describe() != tree.describe() {
                return Err("index round trip changed the tree".into());
            }
        }
        Ok(())
    });
    eprintln!(
        "fuzz structured catalogs: {} built a tree",
        built.load(Ordering::Relaxed)
    );
}

/// Mutations of a valid index whose checksum is then recomputed, so they
/// reach the structural checks: a damaged or forged index is either
/// rebuilt from the catalog or gives a tree that can be walked (no panic,
/// no endless parent chain).
#[test]
fn fuzz_tree_index_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let cat_path = dir.path().join("catalog");
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/catalog/small_odd.json"),
    )
    .unwrap();
    let gz = gzip_bytes(&seed);
    std::fs::write(&cat_path, &gz).unwrap();
    let reference = Tree::load_indexed(&cat_path, &index_dir).unwrap();
    let index_file = vhrun::tree::index::index_path(&index_dir, &gz);
    let valid = std::fs::read(&index_file).expect("the first load writes the index");
    let kept = AtomicU64::new(0);
    let strategy = (
        prop::collection::vec(
            mutation(&["\0\0\0\0", "\u{1}\0\0\0", "\u{ff}\u{ff}\u{ff}\u{ff}"]),
            1..6,
        ),
        any::<bool>(),
    );
    fuzz("tree index", strategy, |(muts, fix_checksum)| {
        let mut bytes = apply(valid.clone(), &muts);
        if fix_checksum && bytes.len() >= HEADER {
            forge_checksum(&mut bytes);
        }
        std::fs::write(&index_file, &bytes).unwrap();
        let t = Tree::load_indexed(&cat_path, &index_dir).map_err(|e| e.to_string())?;
        let trusted = std::fs::read(&index_file).unwrap() == bytes;
        if trusted && bytes != valid {
            kept.fetch_add(1, Ordering::Relaxed);
        }
        if !trusted && t.describe() != reference.describe() {
            return Err("a rebuilt index differs from the catalog".into());
        }
        exercise_tree(&t, false)
    });
    eprintln!(
        "fuzz tree index: {} altered indexes were accepted (checksum forged) and walked",
        kept.load(Ordering::Relaxed)
    );
}

/// Index layout (src/tree/index.rs, format 4): magic, five u32 counts,
/// three u64 totals, then the u64 checksum over everything else.
const HEADER: usize = 60;
const SUM_AT: usize = HEADER - 8;

fn forge_checksum(bytes: &mut [u8]) {
    let mut crc = flate2::Crc::new();
    crc.update(&bytes[..SUM_AT]);
    crc.update(&bytes[HEADER..]);
    bytes[SUM_AT..HEADER].copy_from_slice(&(crc.sum() as u64).to_le_bytes());
}

/// An index forged with a valid checksum whose parent links form a cycle
/// (or point at a later node) is rebuilt from the catalog: trusting it
/// would make every walk towards the root (error messages, `Tree::path`)
/// spin forever.
#[test]
fn forged_index_with_a_parent_cycle_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let cat_path = dir.path().join("catalog");
    let seed = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/catalog/small_odd.json"),
    )
    .unwrap();
    let gz = gzip_bytes(&seed);
    std::fs::write(&cat_path, &gz).unwrap();
    let reference = Tree::load_indexed(&cat_path, &index_dir)
        .unwrap()
        .describe();
    let index_file = vhrun::tree::index::index_path(&index_dir, &gz);
    let valid = std::fs::read(&index_file).unwrap();
    let n_id = u32::from_le_bytes(valid[20..24].try_into().unwrap()) as usize;
    let n_path = u32::from_le_bytes(valid[24..28].try_into().unwrap()) as usize;
    let record = |ino: usize| HEADER + n_id + n_path + (ino - 1) * 44;
    for (a, b) in [(2u32, 3u32), (3, 3), (4, 5)] {
        let mut forged = valid.clone();
        // node a's parent := b, node b's parent := a
        forged[record(a as usize) + 8..][..4].copy_from_slice(&b.to_le_bytes());
        forged[record(b as usize) + 8..][..4].copy_from_slice(&a.to_le_bytes());
        forge_checksum(&mut forged);
        std::fs::write(&index_file, &forged).unwrap();
        let t = Tree::load_indexed(&cat_path, &index_dir).unwrap();
        assert_eq!(t.describe(), reference, "cycle {a}<->{b}");
        assert_eq!(
            std::fs::read(&index_file).unwrap(),
            valid,
            "index not rebuilt"
        );
    }
}

/// Sizes that break naive code: a robot with many tasks, a conda.yaml with
/// many dependencies, a wide and a deep catalog, in bounded time.
#[test]
fn large_inputs_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let limit = Duration::from_secs(10);
    let mut text = String::from("artifactsDir: out\ntasks:\n");
    for i in 0..40_000 {
        text.push_str(&format!("  t{i}: {{shell: run {i}}}\n"));
    }
    let file = dir.path().join("robot.yaml");
    std::fs::write(&file, &text).unwrap();
    let t = Instant::now();
    let robot = Robot::load(&file).unwrap();
    assert_eq!(
        robot.task(Some("t19999"), false).unwrap().argv().unwrap(),
        ["run", "19999"]
    );
    assert!(robot.task(None, false).is_err());
    let _ = (
        robot.available_tasks(false),
        robot.conda_config(),
        robot.pre_run_scripts(),
    );
    assert!(
        t.elapsed() < limit,
        "robot.yaml with 40k tasks: {:?}",
        t.elapsed()
    );

    let mut text = String::from("dependencies:\n");
    for i in 0..5_000 {
        text.push_str(&format!("- pkg{i}=1.{i}\n"));
    }
    text.push_str("- pip:\n");
    for i in 0..5_000 {
        text.push_str(&format!("  - py{i}=={i}\n"));
    }
    let t = Instant::now();
    let (env, _) = Environment::from_conda_yaml(&text, None).unwrap();
    exercise_env(&env).unwrap();
    assert!(
        t.elapsed() < limit,
        "conda.yaml with 10k deps: {:?}",
        t.elapsed()
    );

    let mut wide = Dir::default();
    for i in 0..50_000 {
        wide.files.insert(
            format!("f{i}"),
            File {
                size: i64::MAX,
                digest: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
                ..Default::default()
            },
        );
    }
    let mut deep = Dir::default();
    for _ in 0..50 {
        let mut d = Dir::default();
        d.dirs.insert("d".into(), deep);
        deep = d;
    }
    wide.dirs.insert("deep".into(), deep);
    let c = Catalog {
        identity: "h59acff1_493f813dad24d3t".into(),
        tree: wide,
        ..Default::default()
    };
    let t = Instant::now();
    let tree = exercise_catalog_bytes(&gzip_bytes(&c.to_json()))
        .unwrap()
        .expect("builds");
    assert_eq!(tree.len(), 1 + 50_000 + 51);
    assert!(t.elapsed() < limit, "50k-file catalog: {:?}", t.elapsed());

    // Nested deeper than the JSON decoder's recursion limit: refused with
    // a message, no stack overflow.
    let mut json = String::new();
    for _ in 0..5_000 {
        json.push_str("{\"subdirs\":{\"d\":");
    }
    let err = Catalog::from_bytes(format!("{{\"tree\":{json}").as_bytes()).unwrap_err();
    assert!(err.contains("recursion limit"), "{err}");
}

#[test]
fn corpus_is_handled() {
    for f in corpus("catalog") {
        exercise_catalog_bytes(&f).unwrap();
        exercise_catalog_bytes(&gzip_bytes(&f)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("robot.yaml");
    for seed in corpus("robot") {
        std::fs::write(&file, &seed).unwrap();
        exercise_robot(&file).unwrap();
    }
    for seed in corpus("conda") {
        if let Ok((env, _)) = Environment::from_conda_yaml(&String::from_utf8_lossy(&seed), None) {
            exercise_env(&env).unwrap();
        }
    }
    for seed in corpus("package") {
        if let Ok((env, _)) = Environment::from_package_yaml(&String::from_utf8_lossy(&seed), true)
        {
            exercise_env(&env).unwrap();
        }
    }
    // The hand-made catalog seeds: refused or built, as documented.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/catalog");
    for (seed, builds) in [
        ("simple_linux.json", true),
        ("small_odd.json", true),
        ("hostile_names.json", false),
        ("dup_keys.json", false),
        ("wrong_shape.json", false),
        ("deep.json", false),
    ] {
        let bytes = std::fs::read(dir.join(seed)).unwrap();
        let built = exercise_catalog_bytes(&bytes).unwrap().is_some();
        assert_eq!(built, builds, "{seed}");
    }
}
