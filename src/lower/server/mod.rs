//! The warm server: one FUSE mount per catalog, shared by the runs that
//! follow each other, so the kernel's dentry, attribute and page caches
//! of the tree outlive a single run (DESIGN.md, "Warm runs", step 2).
//!
//! A run asks [`connect_or_spawn`] for the server of its catalog. The
//! server (`vhrun __serve`, started on first use, detached) lives in a
//! mount namespace of its own (plus a user namespace when rootless) with
//! the tree mounted at a private mountpoint; it is never mounted in the
//! host's namespace. Over a Unix socket in `$VHRUN_HOME/servers/` it hands
//! each run descriptors of its namespaces; the run `setns`-es into them
//! and unshares a private mount namespace of its own for its overlay
//! (`sandbox::namespaces::join`). Nothing a run mounts reaches the server.
//!
//! Lifetime: a run keeps its connection open until it ends; the server
//! exits when no run has been connected for the idle time
//! (`lower::Options::server_idle`, `VHRUN_SERVER_IDLE`; default [`DEFAULT_IDLE`] s), and with it
//! its namespace and mount. If it dies, its [`keeper`] has a successor
//! take the live connection over and runs in flight see a pause; only
//! when the keeper dies with it does a run see its environment vanish
//! (`ENOTCONN`), and vhrun says so; the next run starts a new server.
//! `VHRUN_SERVER=off` mounts a tree per run instead.
//!
//! A server is keyed by everything that shapes what it serves or where it
//! is seen: the catalog's content fingerprint, the hololib and blob cache,
//! the target name and environment path, the caller's ids, passthrough,
//! the vhrun executable, and the caller's mount table (a run must see the
//! filesystems it would see without the server).
//!
//! Wire protocol (local, same user only, checked with `SO_PEERCRED` on
//! both sides): requests are lines, answers length-prefixed frames. A run
//! sends `run\n` and gets a JSON [`Hello`] carrying the namespace
//! descriptors (`SCM_RIGHTS`); it may then send `stats\n`, `workset\n`,
//! `entry WORDS\n` (what its command imports, for a lazily served tree to
//! fetch ahead; answered `ok`), or `compile\n` (answered `ok` with the read
//! end of a feed of the modules a lazily served tree predicts,
//! `remote::compile`, or `none`).
//! `info\n` gets the [`Hello`] alone (`vhrun servers`), and does not count
//! as a run. `upgrade PATH\n` (a run of another vhrun, `vhrun servers
//! --restart`) gets `ok` when the server has a keeper; the server then
//! exits for `PATH` to take over.

pub mod daemon;
pub mod keeper;

use crate::error::{Error, IoContext, Result};
use crate::home::Home;
use crate::lower::blobcache::BlobCache;
use crate::lower::fuse::{PassthroughMode, Stats, WorkingSet};
use crate::paths::mkdir_all;
use crate::sandbox::namespaces::{Identity, Joined};
use crate::tree::summary::{Facts, TreeRef};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The longest `entry` request a run sends.
const ENTRY_LINE: usize = 3 << 10;

/// Seconds a server waits for the next run after the last one ended.
pub const DEFAULT_IDLE: u64 = 60;

/// How long a run waits for a server to answer or to become ready before
/// mounting the tree itself.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest answer accepted from a server (a working set of a big run is a
/// few hundred KiB).
const MAX_ANSWER: usize = 64 << 20;

/// What a run wants served.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub home: &'a Home,
    pub tree: &'a TreeRef,
    /// Its hololib is the one served.
    pub blobs: &'a BlobCache,
    /// Basename written at relocation offsets.
    pub target_name: &'a str,
    /// The environment's path (above the overlay), for messages.
    pub shown_as: &'a Path,
    pub passthrough: PassthroughMode,
    /// How long a server started for this run waits for the next one.
    pub idle: Duration,
    pub identity: Identity,
}

/// The server's greeting.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub pid: u32,
    /// Where the tree is mounted in the server's namespace.
    pub lower: PathBuf,
    /// Runs connected before this one, over the server's life.
    pub served: u64,
    pub userns: bool,
    /// The server's counters when this run connected.
    pub stats: Stats,
    pub catalog: PathBuf,
    /// The environment's path the tree is relocated for.
    pub environment: PathBuf,
    /// Seconds it waits for a run before exiting.
    pub idle_s: f64,
    /// The number of the next error notice (`fuse::notices`).
    pub notice_seq: u64,
    /// Which vhrun executable serves ([`exe_identity`]).
    #[serde(default)]
    pub exe: String,
}

/// This process's executable, as a run and its server compare them: a
/// rebuilt or reinstalled vhrun is another one.
pub fn exe_identity() -> String {
    std::fs::metadata("/proc/self/exe")
        .map(|m| {
            format!(
                "{}:{}:{}:{}.{}",
                m.dev(),
                m.ino(),
                m.size(),
                m.mtime(),
                m.mtime_nsec()
            )
        })
        .unwrap_or_default()
}

/// The warm server behind a run, as `--stats` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServerInfo {
    pub pid: u32,
    /// Runs it served before this one (0: started for this run).
    pub runs_before: u64,
    /// Times a new server took its connection over during the run (the
    /// run's files stayed; its counters restarted).
    pub takeovers: u64,
}

/// A run's connection to its server; the server stays while it is open.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    pub hello: Hello,
    joined: Option<Joined>,
    /// Where to ask again: the servers' directory, the socket, the uid.
    redial: Option<(PathBuf, String, u32)>,
}

impl Connection {
    /// The first run of this server: its caches are cold.
    pub fn fresh(&self) -> bool {
        self.hello.served == 0
    }

    /// The namespaces to join (once).
    pub fn take_namespaces(&mut self) -> Option<Joined> {
        self.joined.take()
    }

    /// The server's counters now.
    pub fn stats(&mut self) -> Result<Stats> {
        let bytes = self.ask("stats")?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("warm server: bad stats answer: {e}")))
    }

    /// The read errors the server met since this run connected, once per
    /// file (what a per-run mount would have printed).
    pub fn notices(&mut self) -> Result<Vec<String>> {
        let bytes = self.ask(&format!("notices {}", self.hello.notice_seq))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Internal(format!("warm server: bad notices answer: {e}")))
    }

    /// What the server's tree has been asked for so far.
    pub fn working_set(&mut self) -> Result<WorkingSet> {
        Ok(WorkingSet::from_bytes(&self.ask("workset")?))
    }

    /// Tell the server's lazily served tree what this run's command
    /// imports (a head start: a server that does not answer is let be).
    pub fn entry_imports(&mut self, found: &[crate::remote::imports::Import]) {
        let mut line = String::from("entry");
        for word in found.iter().map(crate::remote::imports::encode) {
            // The server reads requests of up to 4 KiB.
            if line.len() + word.len() + 1 > ENTRY_LINE {
                break;
            }
            line.push(' ');
            line.push_str(&word);
        }
        if let Err(e) = self.ask(&line) {
            tracing::debug!("{e}");
        }
    }

    /// The server's feed of the modules its lazily served tree predicts
    /// (`remote::compile`); `None` when it predicts nothing or does not
    /// answer (compiling ahead is a head start, never a condition).
    pub fn compile_feed(&mut self) -> Option<OwnedFd> {
        self.stream.write_all(b"compile\n").ok()?;
        let (answer, mut fds) = read_frame_with_fds(&self.stream)
            .map_err(|e| tracing::debug!("warm server: no feed to compile ahead: {e}"))
            .ok()?;
        (answer == b"ok").then(|| fds.pop()).flatten()
    }

    fn ask(&mut self, what: &str) -> Result<Vec<u8>> {
        let line = format!("{what}\n");
        let first = self
            .stream
            .write_all(line.as_bytes())
            .and_then(|_| read_frame(&mut self.stream));
        let e = match first {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        // A server that died with the question read and unanswered: its
        // successor (`keeper`) answers on a new connection.
        if let Some(again) = self.redial.as_ref().and_then(|(dir, name, uid)| {
            let mut s = dial(dir, name, *uid).ok()?;
            s.write_all(line.as_bytes()).ok()?;
            let answer = read_frame(&mut s).ok()?;
            Some((s, answer))
        }) {
            self.stream = again.0;
            return Ok(again.1);
        }
        Err(Error::unavailable(
            format!("the warm server (pid {}) is gone", self.hello.pid),
            e.to_string(),
        ))
    }
}

/// The key of the server for `req`: equal keys serve identical trees at
/// identical paths to the same user.
pub fn key(req: &Request) -> String {
    let mut parts: Vec<Vec<u8>> = vec![
        b"vhrun-server-2".to_vec(),
        req.tree.fingerprint().to_le_bytes().to_vec(),
        req.tree
            .catalog_path()
            .as_os_str()
            .as_encoded_bytes()
            .to_vec(),
        req.blobs
            .hololib()
            .root
            .as_os_str()
            .as_encoded_bytes()
            .to_vec(),
        req.blobs.root().as_os_str().as_encoded_bytes().to_vec(),
        // A lazily served tree's server fetches from its origin.
        req.blobs
            .remote()
            .map(|r| format!("{} {}", r.url(), r.batching().as_str()))
            .unwrap_or_default()
            .into_bytes(),
        req.target_name.as_bytes().to_vec(),
        req.shown_as.as_os_str().as_encoded_bytes().to_vec(),
        format!(
            "{} {} {} {:?}",
            req.identity.uid, req.identity.gid, req.identity.rootless, req.passthrough
        )
        .into_bytes(),
    ];
    // Not the vhrun executable: a run of another vhrun has the server
    // hand over to it (`connect`), so a rebuilt or upgraded vhrun gets
    // servers running its own code without breaking runs in flight.
    // The server's namespace is a copy of the mount table it started with.
    parts.push(crate::sys::mountinfo::read_raw().unwrap_or_default());
    let mut all = Vec::new();
    for p in parts {
        all.extend_from_slice(&(p.len() as u64).to_le_bytes());
        all.extend_from_slice(&p);
    }
    format!("{:016x}", crate::digest::sipit(&all))
}

/// Connect to the warm server of `req`, starting it if none answers.
/// The catalog's server, if one is running and answers.
pub fn connect_running(req: &Request) -> Option<Connection> {
    let _s = tracing::info_span!("server.connect").entered();
    let paths = Paths::new(&req.home.servers(), &key(req));
    connect(&paths, req).ok()
}

pub fn connect_or_spawn(req: &Request) -> Result<Connection> {
    let _s = tracing::info_span!("server.connect").entered();
    let dir = req.home.servers();
    mkdir_all(&dir, 0o700)?;
    let key = key(req);
    let paths = Paths::new(&dir, &key);
    if let Ok(c) = connect(&paths, req) {
        tracing::debug!(
            pid = c.hello.pid,
            served = c.hello.served,
            "warm server answered"
        );
        return Ok(c);
    }
    // One starter per key; whoever waited behind it finds it running.
    let spawn_lock = std::fs::File::create(&paths.spawn_lock).at(&paths.spawn_lock)?;
    let _guard = Flock::lock(spawn_lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(&paths.spawn_lock, e.into()))?;
    if let Ok(c) = connect(&paths, req) {
        return Ok(c);
    }
    spawn(req, &key, &paths)?;
    connect(&paths, req)
}

/// The files of one server key.
struct Paths {
    dir: PathBuf,
    socket_name: String,
    spawn_lock: PathBuf,
    log: PathBuf,
}

impl Paths {
    fn new(dir: &Path, key: &str) -> Paths {
        Paths {
            dir: dir.to_path_buf(),
            socket_name: format!("{key}.sock"),
            spawn_lock: dir.join(format!("{key}.spawn")),
            log: dir.join(format!("{key}.log")),
        }
    }
}

/// A socket address is limited to 108 bytes; `$VHRUN_HOME` may be longer.
/// The directory is reached through a descriptor instead.
fn short_socket_path(dir: &std::fs::File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Connect to a socket of `dir`, checking that the same user serves it.
fn dial(dir: &Path, socket_name: &str, uid: u32) -> Result<UnixStream> {
    let dirf = std::fs::File::open(dir).at(dir)?;
    let path = short_socket_path(&dirf, socket_name);
    let sock_path = dir.join(socket_name);
    let stream = UnixStream::connect(&path).at(&sock_path)?;
    drop(dirf);
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .at(&sock_path)?;
    let peer = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Error::io(&sock_path, e.into()))?;
    if peer.uid() != uid {
        return Err(Error::bad_input(
            &sock_path,
            format!(
                "the server socket belongs to uid {}, not to this user",
                peer.uid()
            ),
        ));
    }
    Ok(stream)
}

fn connect(paths: &Paths, req: &Request) -> Result<Connection> {
    let c = try_connect(paths, req)?;
    let mine = exe_identity();
    if c.hello.exe == mine || mine.is_empty() {
        return Ok(c);
    }
    // Another vhrun serves: it hands over to this one, and the runs in
    // flight on it keep their environment.
    let old = c.hello.pid;
    match upgraded(paths, req, c) {
        Some(c) => Ok(c),
        None => {
            tracing::debug!(
                pid = old,
                "the warm server of another vhrun did not hand over"
            );
            try_connect(paths, req)
        }
    }
}

/// Ask the server of `c` to hand over to this vhrun, then connect to its
/// successor; `None` when it cannot (no keeper, too slow).
fn upgraded(paths: &Paths, req: &Request, c: Connection) -> Option<Connection> {
    let old = c.hello.pid;
    let _s = tracing::info_span!("server.upgrade", pid = old).entered();
    let mut stream = c.stream;
    let exe = std::env::current_exe().ok()?;
    let mut line = b"upgrade ".to_vec();
    line.extend_from_slice(exe.as_os_str().as_encoded_bytes());
    line.push(b'\n');
    stream.write_all(&line).ok()?;
    if read_frame(&mut stream).ok()? != b"ok" {
        return None;
    }
    drop(stream);
    // A successor serves within milliseconds; past this, use whoever serves.
    let deadline = std::time::Instant::now() + HANDSHAKE_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if let Ok(c) = try_connect(paths, req) {
            if c.hello.pid != old {
                tracing::info!(old, new = c.hello.pid, "warm server upgraded");
                return Some(c);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn try_connect(paths: &Paths, req: &Request) -> Result<Connection> {
    let sock_path = paths.dir.join(&paths.socket_name);
    let stream = dial(&paths.dir, &paths.socket_name, req.identity.uid)?;
    (&stream).write_all(b"run\n").at(&sock_path)?;
    let (hello, fds) = read_hello(&stream).at(&sock_path)?;
    connected(paths, req, stream, hello, fds)
}

fn connected(
    paths: &Paths,
    req: &Request,
    stream: UnixStream,
    hello: Hello,
    mut fds: Vec<OwnedFd>,
) -> Result<Connection> {
    let sock_path = paths.dir.join(&paths.socket_name);
    let mntns = fds
        .pop()
        .ok_or_else(|| Error::bad_input(&sock_path, "the server sent no mount namespace"))?;
    let userns = if hello.userns { fds.pop() } else { None };
    if hello.userns && userns.is_none() {
        return Err(Error::bad_input(
            &sock_path,
            "the server sent no user namespace",
        ));
    }
    // Questions at the end of the run get the same patience: a server
    // that stopped answering must not hold the run's exit.
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .at(&sock_path)?;
    let joined = Joined {
        userns,
        mntns,
        lower: hello.lower.clone(),
    };
    Ok(Connection {
        stream,
        hello,
        joined: Some(joined),
        redial: Some((
            paths.dir.clone(),
            paths.socket_name.clone(),
            req.identity.uid,
        )),
    })
}

/// The greeting: a frame of JSON whose first bytes bring the
/// descriptors (user namespace first).
fn read_hello(stream: &UnixStream) -> std::io::Result<(Hello, Vec<OwnedFd>)> {
    let (json, fds) = read_frame_with_fds(stream)?;
    let hello = serde_json::from_slice(&json).map_err(std::io::Error::other)?;
    Ok((hello, fds))
}

/// A frame (a 4-byte little-endian length, then the payload) and the
/// descriptors that came with its first bytes.
fn read_frame_with_fds(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 << 10];
    let (n, fds) = crate::sys::fdpass::recv(stream, &mut buf)?;
    if n < 4 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection (it is exiting)",
        ));
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > buf.len() - 4 {
        return Err(std::io::Error::other("oversized frame"));
    }
    let mut have = n - 4;
    let mut s = stream;
    while have < len {
        let m = s.read(&mut buf[4 + have..4 + len])?;
        if m == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += m;
    }
    buf.truncate(4 + len);
    buf.drain(..4);
    Ok((buf, fds))
}

fn read_frame(stream: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_ANSWER {
        return Err(std::io::Error::other("oversized answer"));
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Start the server for `key` and wait until it serves (or says why not).
fn spawn(req: &Request, key: &str, paths: &Paths) -> Result<()> {
    let _s = tracing::info_span!("server.spawn", key).entered();
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let log = std::fs::File::create(&paths.log).at(&paths.log)?;
    let mut cmd = Command::new(exe);
    cmd.arg("__serve")
        .args(crate::logging::verbosity_args())
        .arg("--key")
        .arg(key)
        .args(
            crate::lower::TreePaths::of(req.tree.catalog_path(), req.blobs, req.target_name).argv(),
        )
        .arg("--shown-as")
        .arg(req.shown_as)
        .arg("--idle")
        .arg(req.idle.as_secs_f64().to_string())
        .env("VHRUN_HOME", req.home.root())
        // Its own output would keep a caller's pipe open for its whole
        // life: only its log.
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    if req.passthrough == PassthroughMode::Off {
        cmd.arg("--no-passthrough");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::spawn("the warm server", e))?;
    let stdout = child.stdout.take();
    // The direct child only detaches the server and exits at once.
    let status = child
        .wait()
        .map_err(|e| Error::spawn("the warm server (waiting for its starter)", e))?;
    let failed = |why: String| {
        let log = std::fs::read_to_string(&paths.log).unwrap_or_default();
        let last = log
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Error::unavailable(
            format!("the warm server did not start ({why})"),
            format!("{last} (log: {})", paths.log.display()),
        )
    };
    if !status.success() {
        return Err(failed(format!("exit {}", status.code().unwrap_or(-1))));
    }
    let Some(stdout) = stdout else {
        return Err(failed("no pipe".into()));
    };
    let fd = OwnedFd::from(stdout);
    let mut pfd = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&fd),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = START_TIMEOUT.as_millis() as u16;
    match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
        Ok(0) => return Err(failed("no answer in time".into())),
        Ok(_) => {}
        Err(e) => return Err(failed(e.desc().to_string())),
    }
    let mut line = [0u8; 64];
    let n = nix::unistd::read(&fd, &mut line).unwrap_or(0);
    if !line[..n].starts_with(b"ready") {
        return Err(failed("it exited".into()));
    }
    Ok(())
}

/// A live server, as `vhrun servers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub key: String,
    pub hello: Hello,
}

/// The servers of `home` that answer (sockets of dead ones are left
/// to the next server of their key).
pub fn list(home: &Home) -> Vec<Listed> {
    let dir = home.servers();
    let uid = nix::unistd::geteuid().as_raw();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".sock") && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let Ok(mut stream) = dial(&dir, &name, uid) else {
            continue;
        };
        let hello = stream
            .write_all(b"info\n")
            .and_then(|_| read_frame(&mut stream))
            .ok()
            .and_then(|b| serde_json::from_slice::<Hello>(&b).ok());
        if let Some(hello) = hello {
            // Its own word, not the socket's peer pid: that names the
            // server that made the socket, which a successor took over.
            let key = name.trim_end_matches(".sock").to_string();
            out.push(Listed { key, hello });
        }
    }
    out
}

/// Have every server of `home` hand its connection over to this vhrun
/// (a hot upgrade: `vhrun servers --restart`); their runs in flight keep
/// their environment. Each server asked, with the pid that serves its key
/// now (`None`: it did not hand over).
pub fn restart(home: &Home) -> Vec<(Listed, Option<u32>)> {
    let dir = home.servers();
    let uid = nix::unistd::geteuid().as_raw();
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let mut line = b"upgrade ".to_vec();
    line.extend_from_slice(exe.as_os_str().as_encoded_bytes());
    line.push(b'\n');
    let serving = |name: &str| -> Option<u32> {
        let mut s = dial(&dir, name, uid).ok()?;
        s.write_all(b"info\n").ok()?;
        let hello = serde_json::from_slice::<Hello>(&read_frame(&mut s).ok()?).ok()?;
        Some(hello.pid)
    };
    let mut out = Vec::new();
    for l in list(home) {
        let name = format!("{}.sock", l.key);
        let asked = dial(&dir, &name, uid).ok().and_then(|mut s| {
            s.write_all(&line).ok()?;
            (read_frame(&mut s).ok()? == b"ok").then_some(())
        });
        let mut now = None;
        if asked.is_some() {
            let deadline = std::time::Instant::now() + START_TIMEOUT;
            while now.is_none() && std::time::Instant::now() < deadline {
                now = serving(&name).filter(|&pid| pid != l.hello.pid);
                if now.is_none() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        out.push((l, now));
    }
    out
}

/// Ask every server of `home` to exit (SIGTERM: no new run, exit
/// once the runs in flight end) and wait up to 10 s for them; the ones
/// asked.
pub fn stop(home: &Home) -> Vec<Listed> {
    let listed = list(home);
    for l in &listed {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(l.hello.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for l in &listed {
        let proc_dir = PathBuf::from(format!("/proc/{}", l.hello.pid));
        while std::fs::read(proc_dir.join("cmdline")).is_ok_and(|c| !c.is_empty())
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    listed
}

/// Write one answer frame.
pub(crate) fn write_frame(stream: &mut UnixStream, payload: &[u8]) -> std::io::Result<()> {
    stream.write_all(&frame(payload))
}
