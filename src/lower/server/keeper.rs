//! The keeper: a small process beside each warm server that holds
//! duplicates of everything the server's runs depend on, so that a new
//! server can take over when the server dies (SIGKILL, OOM, a bug) or is
//! replaced by a newer vhrun (`vhrun servers --restart`), and no run in
//! flight notices more than a pause.
//!
//! What it holds, and why each:
//! - the FUSE connection (`/dev/fuse`): the kernel aborts a connection
//!   when its last descriptor closes; while one is open, requests wait for
//!   a reader, and the successor's `FUSE_NOTIFY_RESEND` puts the ones the
//!   dead server had read back in the queue (`lower::fuse::resume`);
//! - the record of passthrough backing ids (a memfd, `sys::handover`);
//! - the flock'ed locks of the server's run directory (whose `lower` is
//!   the mountpoint runs join) and of its key (no second server starts
//!   for the key meanwhile);
//! - the listening socket, so runs that connect during a takeover wait in
//!   its backlog instead of being refused, and every run's connection, so
//!   a run's questions at its end reach the successor.
//!
//! Who watches whom: the server and its keeper share a `SOCK_SEQPACKET`
//! pair. When the server's end closes without a `Bye` (it died), the
//! keeper starts a successor (`vhrun __serve --takeover`, the same
//! arguments, its stdin the keeper's new pair) and hands it everything
//! over that pair. The successor starts a keeper of its own binary and
//! tells the old one to `Retire`. When the keeper dies, the server starts
//! a new one. Both dying together ends the connection: runs in flight
//! fail with ENOTCONN and vhrun says so, as before keepers existed; the
//! mounts die with their namespaces, nothing hangs.
//!
//! Found by experiment on Linux 6.18 (`tests/takeover.rs`, and by hand):
//! - with a duplicate held, a SIGKILLed server's requests wait, and
//!   `FUSE_NOTIFY_RESEND` from the successor gets them answered: 100 of
//!   100 kills at random moments, no error seen by the task;
//! - the server must read its requests from that one descriptor: with
//!   fuser's cloned descriptors (`FUSE_DEV_IOC_CLONE`, one per thread),
//!   2 of 15 kills failed a read with ECONNABORTED (the kernel ends the
//!   requests read on a descriptor that closes), so warm servers do not
//!   clone (`MountOptions::handover`);
//! - a file held open or mapped across a takeover reads right, and its
//!   inode opens and copies up again even under a new backing id; the
//!   successor still reuses the dead server's ids (`sys::handover`), as
//!   the kernel's one-backing-file-per-inode rule asks.
//!
//! Guarantees: one takeover at a time; a successor that fails to serve
//! is retried [`ATTEMPTS`] times, then the keeper exits, which ends the
//! connection (never a hang). The keeper itself never touches the mount.

use crate::error::{Error, Result};
use crate::sys::fdpass;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Successors tried in a row before the keeper gives the connection up.
pub const ATTEMPTS: u32 = 3;
/// How long a successor may take to say it serves.
const SUCCESSOR_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server and its keeper (or the keeper and a successor) say.
/// Descriptors travel with some of them, in the order their doc gives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Msg {
    /// Server -> keeper, first: what a successor needs. Descriptors: the
    /// connection, the backing record, the run directory's lock, then
    /// (while `listening`) the key's lock and the listening socket.
    Hello(State),
    /// Server -> keeper: a run's connection (one descriptor).
    Client,
    /// Server -> keeper: it no longer takes runs (drains): let the key's
    /// lock and the listening socket go.
    Withdrawn,
    /// Server -> keeper: a clean exit; the keeper exits too.
    Bye,
    /// Server -> keeper: it exits now for `exe` to take over.
    Upgrade {
        exe: PathBuf,
    },
    /// Keeper -> successor: [`Msg::Hello`]'s state and descriptors, with
    /// `generation` counted up; then a `Client` per run, then `End`.
    Takeover(State),
    End,
    /// Successor -> old keeper: a keeper of its own holds it all now.
    Retire,
}

/// A connection's state, as handed on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// `vhrun __serve` arguments (after the subcommand, no `--takeover`).
    pub argv: Vec<String>,
    /// What the kernel offered at INIT.
    pub offered: u64,
    /// Servers before the current one.
    pub generation: u64,
    pub rundir: PathBuf,
    /// The socket file's inode (a successor removes it only if it is
    /// still this one).
    pub socket_ino: u64,
    /// Whether the key's lock and the listener come with it (the
    /// sender's word, from what it holds).
    pub listening: bool,
}

/// The descriptors of a [`State`].
#[derive(Debug)]
pub struct Held {
    pub fuse: OwnedFd,
    pub record: OwnedFd,
    pub rundir_lock: OwnedFd,
    /// While listening.
    pub key_lock: Option<OwnedFd>,
    pub listener: Option<OwnedFd>,
}

impl Held {
    fn borrowed(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = vec![
            self.fuse.as_fd(),
            self.record.as_fd(),
            self.rundir_lock.as_fd(),
        ];
        if let (Some(k), Some(l)) = (&self.key_lock, &self.listener) {
            v.push(k.as_fd());
            v.push(l.as_fd());
        }
        v
    }

    fn from_fds(mut fds: Vec<OwnedFd>, listening: bool) -> Option<Held> {
        let want = if listening { 5 } else { 3 };
        if fds.len() != want {
            return None;
        }
        let listener = listening.then(|| fds.pop()).flatten();
        let key_lock = listening.then(|| fds.pop()).flatten();
        let rundir_lock = fds.pop()?;
        let record = fds.pop()?;
        let fuse = fds.pop()?;
        Some(Held {
            fuse,
            record,
            rundir_lock,
            key_lock,
            listener,
        })
    }

    fn withdraw(&mut self) {
        self.key_lock = None;
        self.listener = None;
    }
}

fn send(sock: &UnixStream, msg: &Msg, fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    let json = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    fdpass::send(sock, &json, fds).map_err(std::io::Error::from)
}

/// One message and its descriptors; `None` once the peer is gone (or
/// says something that is not a message: treated the same).
fn recv(sock: &UnixStream) -> Option<(Msg, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match fdpass::recv(sock, &mut buf) {
            Ok((0, _)) => return None,
            Ok((n, fds)) => return serde_json::from_slice(&buf[..n]).ok().map(|m| (m, fds)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

fn seqpacket_pair() -> Result<(UnixStream, OwnedFd)> {
    let (a, b) =
        fdpass::seqpacket_pair().map_err(|e| Error::sys("socketpair (the keeper's)", e))?;
    Ok((UnixStream::from(a), b))
}

/// A server's side of its keeper.
#[derive(Debug)]
pub struct Keeper {
    sock: UnixStream,
    child: Option<Child>,
}

impl Keeper {
    /// Start a keeper running this very binary and hand it `state`,
    /// `held` and the runs' connections.
    pub fn spawn(state: &State, held: &Held, clients: &[BorrowedFd<'_>]) -> Result<Keeper> {
        let (ours, theirs) = seqpacket_pair()?;
        let child = Command::new("/proc/self/exe")
            .arg("__keep")
            .args(crate::logging::verbosity_args())
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| Error::spawn("the warm server's keeper", e))?;
        let k = Keeper {
            sock: ours,
            child: Some(child),
        };
        k.hello(state, held, clients)?;
        Ok(k)
    }

    /// Tell the keeper what it keeps now: `state`, `held` and the runs'
    /// connections (all of them: it forgets the ones it had).
    pub fn hello(&self, state: &State, held: &Held, clients: &[BorrowedFd<'_>]) -> Result<()> {
        self.say(&Msg::Hello(state.clone()), &held.borrowed())?;
        for c in clients {
            self.client(*c);
        }
        Ok(())
    }

    /// The keeper that started this successor (its stdin).
    pub fn adopt(sock: UnixStream) -> Keeper {
        Keeper { sock, child: None }
    }

    fn say(&self, msg: &Msg, fds: &[BorrowedFd<'_>]) -> Result<()> {
        send(&self.sock, msg, fds)
            .map_err(|e| Error::unavailable("the warm server's keeper", e.to_string()))
    }

    /// Hand over a run's connection (best effort: a run the keeper does
    /// not hold loses only its end-of-run questions in a takeover).
    pub fn client(&self, c: BorrowedFd<'_>) {
        if let Err(e) = self.say(&Msg::Client, &[c]) {
            tracing::debug!("{e}");
        }
    }

    pub fn tell(&self, msg: &Msg) {
        if let Err(e) = self.say(msg, &[]) {
            tracing::debug!("{e}");
        }
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    pub fn stream(&self) -> &UnixStream {
        &self.sock
    }

    /// Called when its socket is readable: false once the keeper is gone
    /// (reaped if it is our child).
    pub fn alive(&mut self) -> bool {
        let mut b = [0u8; 256];
        let gone = matches!(fdpass::recv(&self.sock, &mut b), Ok((0, _)) | Err(_));
        if gone {
            if let Some(mut c) = self.child.take() {
                let _ = c.wait();
            }
        }
        !gone
    }
}

/// What a successor is handed.
#[derive(Debug)]
pub struct Handed {
    pub state: State,
    pub held: Held,
    pub clients: Vec<UnixStream>,
}

/// A successor's first step: read what the keeper on `sock` hands over.
pub fn receive(sock: &UnixStream) -> Result<Handed> {
    let bad = |why: &str| Error::unavailable("taking the warm server over", why.to_string());
    let (msg, fds) = recv(sock).ok_or_else(|| bad("the keeper sent nothing"))?;
    let Msg::Takeover(state) = msg else {
        return Err(bad("the keeper sent no takeover"));
    };
    let held = Held::from_fds(fds, state.listening).ok_or_else(|| bad("descriptors missing"))?;
    let mut clients = Vec::new();
    loop {
        match recv(sock) {
            Some((Msg::Client, mut fds)) if fds.len() == 1 => {
                clients.extend(fds.pop().map(UnixStream::from))
            }
            Some((Msg::End, _)) => break,
            _ => return Err(bad("the keeper stopped halfway")),
        }
    }
    Ok(Handed {
        state,
        held,
        clients,
    })
}

/// The socket a keeper or a successor was started with as its stdin,
/// which becomes /dev/null: the peer sees it closed when we exit alone.
pub fn peer_on_stdin() -> Result<UnixStream> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("stdin", e))?;
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    Ok(UnixStream::from(stdin))
}

/// `vhrun __keep`: keep the server on stdin, and its successors.
pub fn keep() -> Result<i32> {
    crate::sys::fdpass::close_inherited();
    let mut server = peer_on_stdin()?;
    let (first, fds) = recv(&server)
        .ok_or_else(|| Error::unavailable("the warm server's keeper", "the server said nothing"))?;
    let Msg::Hello(mut state) = first else {
        return Err(Error::unavailable("the warm server's keeper", "no hello"));
    };
    let mut held = Held::from_fds(fds, state.listening)
        .ok_or_else(|| Error::unavailable("the warm server's keeper", "descriptors missing"))?;
    let mut clients: Vec<OwnedFd> = Vec::new();
    let mut upgrade: Option<PathBuf> = None;
    // Set while a successor has not yet said it serves.
    let mut waiting: Option<(Instant, u32)> = None;
    let mut children: Vec<Child> = Vec::new();
    loop {
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        let mut fds = vec![PollFd::new(server.as_fd(), PollFlags::POLLIN)];
        // No events asked: poll still says when a run hung up.
        fds.extend(
            clients
                .iter()
                .map(|c| PollFd::new(c.as_fd(), PollFlags::empty())),
        );
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(1000u16));
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let server_ready = ready(&fds[0]);
        let hung: Vec<usize> = (0..clients.len()).filter(|&i| ready(&fds[i + 1])).collect();
        drop(fds);
        for i in hung.into_iter().rev() {
            clients.swap_remove(i);
        }
        let timed_out = waiting.is_some_and(|(since, _)| since.elapsed() > SUCCESSOR_TIMEOUT);
        if !server_ready && !timed_out {
            continue;
        }
        let msg = if timed_out { None } else { recv(&server) };
        match msg {
            Some((Msg::Client, mut fds)) if fds.len() == 1 => clients.extend(fds.pop()),
            Some((Msg::Withdrawn, _)) => {
                held.withdraw();
                state.listening = false;
            }
            Some((Msg::Upgrade { exe }, _)) => upgrade = Some(exe),
            Some((Msg::Bye, _)) => return Ok(0),
            Some((Msg::Retire, _)) => {
                tracing::info!("keeper: the new server has a keeper of its own");
                return Ok(0);
            }
            // A successor that could not start a keeper of its own keeps
            // this one: what it holds now, then its runs.
            Some((Msg::Hello(s), fds)) => {
                if let Some(h) = Held::from_fds(fds, s.listening) {
                    held = h;
                    state = s;
                    clients.clear();
                    waiting = None;
                    upgrade = None;
                }
            }
            Some(_) => {}
            None => {
                // The server (or a successor before it served) is gone.
                let attempt = waiting.map_or(1, |(_, n)| n + 1);
                if attempt > ATTEMPTS {
                    tracing::error!(
                        "keeper: {ATTEMPTS} successors failed to take the FUSE connection over; \
                         giving it up (runs in flight lose their environment)"
                    );
                    return Ok(1);
                }
                let exe = upgrade
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
                match start_successor(&exe, &state, &held, &clients) {
                    Ok((sock, child)) => {
                        tracing::info!(
                            pid = child.id(),
                            attempt,
                            "keeper: the warm server is gone; a successor takes over"
                        );
                        server = sock;
                        children.push(child);
                        waiting = Some((Instant::now(), attempt));
                    }
                    Err(e) => {
                        // The next try in 200 ms (a binary being replaced
                        // can be busy for a moment: ETXTBSY); the dead
                        // server's socket reads as gone, which is the cue.
                        tracing::error!("keeper: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                        waiting = Some((Instant::now(), attempt));
                    }
                }
            }
        }
    }
}

/// Start `exe __serve --takeover ...` and hand it the connection.
fn start_successor(
    exe: &std::path::Path,
    state: &State,
    held: &Held,
    clients: &[OwnedFd],
) -> Result<(UnixStream, Child)> {
    let (ours, theirs) = seqpacket_pair()?;
    let child = Command::new(exe)
        .arg("__serve")
        .arg("--takeover")
        .args(&state.argv)
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| Error::spawn(format!("a successor ({})", exe.display()), e))?;
    let next = State {
        generation: state.generation + 1,
        ..state.clone()
    };
    let handed = send(&ours, &Msg::Takeover(next), &held.borrowed())
        .and_then(|_| {
            clients
                .iter()
                .try_for_each(|c| send(&ours, &Msg::Client, &[c.as_fd()]))
        })
        .and_then(|_| send(&ours, &Msg::End, &[]));
    if let Err(e) = handed {
        return Err(Error::unavailable(
            "handing the connection over",
            e.to_string(),
        ));
    }
    Ok((ours, child))
}
