//! The commands a run executes, prepared before the fork, and vhrun's side
//! of the run: spawn the reaper, forward signals, wait, decode the result.

use super::command::PreparedCommand;
use super::reaper::{self, CompanionPlan, Plan, Record, Stage, RECORD_LEN};
use crate::error::{Error, Result};
use crate::sys;
use crate::sys::exec::CStringArray;
use crate::sys::wait::ExitKind;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

/// How the run ended: the status of the last command that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: ExitKind,
    /// Index in `SandboxSpec::commands` of the command that ended the run
    /// (the first that failed, or the last one).
    pub command: usize,
    /// When vhrun saw the last command exec (`None` if it never did).
    pub exec_at: Option<Instant>,
    /// When vhrun saw the run end (the reaper exited).
    pub ended_at: Instant,
    /// What the run wrote to the overlay (with `SandboxSpec::measure_upper`).
    pub upper: Option<super::overlay::UpperUsage>,
    /// Bytes the companion wrote on its fd 4 (`super::Companion`).
    pub companion_reported: u64,
}

impl RunOutcome {
    /// The task's exit code, or 128+N if it died of signal N.
    pub fn code(&self) -> i32 {
        self.status.code()
    }
}

/// The signals vhrun forwards, plus SIGCHLD; blocked in every thread and
/// read from a signalfd.
pub fn supervised_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    set
}

/// The pipes between vhrun and the reaper.
struct Pipes {
    report_r: OwnedFd,
    report_w: OwnedFd,
    exec_r: OwnedFd,
    exec_w: OwnedFd,
    alive_r: OwnedFd,
    alive_w: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))
}

impl Pipes {
    fn new() -> Result<Pipes> {
        let (report_r, report_w) = pipe()?;
        nix::fcntl::fcntl(&report_r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| Error::sys("fcntl(O_NONBLOCK)", e))?;
        let (exec_r, exec_w) = pipe()?;
        let (alive_r, alive_w) = pipe()?;
        Ok(Pipes {
            report_r,
            report_w,
            exec_r,
            exec_w,
            alive_r,
            alive_w,
        })
    }
}

/// What the parent needs to spawn and supervise the reaper.
pub struct Supervision<'a> {
    pub commands: &'a [PreparedCommand],
    pub envp: &'a CStringArray,
    pub cwd: &'a CString,
    pub pid_ns: bool,
    /// The task's own mount namespace, with `isolation` applied.
    pub mount_ns: bool,
    pub isolation: &'a super::isolation::Prepared,
    pub caps: Option<&'a super::capabilities::CapDrop>,
    pub task_mask: SigSet,
    pub stdio: [Option<&'a OwnedFd>; 3],
    pub signals: &'a SignalFd,
    pub started: Instant,
    /// `namespaces::step_out` right after the reaper is cloned.
    pub step_out: Option<(&'a OwnedFd, &'a std::path::Path)>,
    /// Started beside the commands: its command, its fd 3, fd 4 and
    /// stdio (`super::Companion`).
    pub companion: Option<(&'a PreparedCommand, &'a OwnedFd, &'a OwnedFd, &'a OwnedFd)>,
}

/// Fork the reaper, forward signals to it until it exits, and decode how
/// the run ended. A post-fork setup failure becomes an `Error`.
pub fn spawn_and_supervise(s: &Supervision) -> Result<RunOutcome> {
    let pipes = Pipes::new()?;
    if !s.pid_ns {
        // Orphans of a reaper that dies (second Ctrl-C) come to vhrun,
        // which kills them after the run.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::sys("prctl(PR_SET_CHILD_SUBREAPER)", e))?;
    }
    let plan = Plan {
        commands: s.commands,
        envp: s.envp,
        cwd: s.cwd,
        pid_ns: s.pid_ns,
        mount_ns: s.mount_ns,
        isolation: s.isolation,
        caps: s.caps,
        task_mask: s.task_mask,
        stdio: s.stdio.map(|o| o.map(|fd| fd.as_fd())),
        report: pipes.report_w.as_fd(),
        exec_marker: pipes.exec_w.as_raw_fd(),
        alive_r: pipes.alive_r.as_fd(),
        alive_w: pipes.alive_w.as_raw_fd(),
        companion: s
            .companion
            .map(|(command, input, report, null)| CompanionPlan {
                command,
                input: input.as_raw_fd(),
                report: report.as_raw_fd(),
                null: null.as_raw_fd(),
            }),
    };
    let pid = sys::fork::clone_child(s.pid_ns, || reaper::reaper_main(&plan)).map_err(|e| {
        let what = if s.pid_ns {
            "clone(CLONE_NEWPID) of the run's reaper"
        } else {
            "fork of the run's reaper"
        };
        // Out of processes or memory: not a refusal of the machine.
        if matches!(e, Errno::EAGAIN | Errno::ENOMEM) {
            return Error::sys(what, e);
        }
        Error::unavailable(what, e.desc())
    })?;
    if let Some((home, cwd)) = s.step_out {
        // Failing, vhrun stays in the run's namespace: nothing it does
        // from here on needs the host's view.
        if let Err(e) = super::namespaces::step_out(home, cwd) {
            tracing::debug!("{e}");
        }
    }
    // The lower tree's server (threads of this process) holds a descriptor
    // for each file the task has open: allow it the hard limit, now that
    // the reaper (and so the task) has forked with the caller's limits.
    crate::sys::rlimit::raise_nofile_limit();
    let Pipes {
        report_r,
        report_w,
        exec_r,
        exec_w,
        alive_r,
        alive_w,
    } = pipes;
    drop((report_w, exec_w, alive_r));
    let result = supervise(s, pid, &report_r, exec_r);
    // Held until the reaper is gone: its EOF would tell the reaper vhrun died.
    drop(alive_w);
    if !s.pid_ns {
        kill_leftover_children();
    }
    result
}

fn supervise(s: &Supervision, pid: Pid, report_r: &OwnedFd, exec_r: OwnedFd) -> Result<RunOutcome> {
    let mut exec_r = Some(exec_r);
    let mut exec_at = None;
    let mut report_open = true;
    let mut records: Vec<Record> = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut interrupts = 0;
    let reaper_status = loop {
        // Pipes at EOF leave the set: poll would report their HUP forever.
        let mut fds = vec![PollFd::new(s.signals.as_fd(), PollFlags::POLLIN)];
        if report_open {
            fds.push(PollFd::new(report_r.as_fd(), PollFlags::POLLIN));
        }
        if let Some(e) = &exec_r {
            fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
        }
        // SIGCHLD reaches the signalfd only if every thread blocks it; a
        // thread that does not (started before the mask was set) takes it
        // silently. Looking at the reaper every 250 ms bounds that loss.
        match poll(&mut fds, PollTimeout::from(250u8)) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("poll", e)),
        }
        let mut ready = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()));
        let sig_ready = ready.next().unwrap_or(false);
        let report_ready = report_open && ready.next().unwrap_or(false);
        let exec_ready = exec_r.is_some() && ready.next().unwrap_or(false);
        drop(fds);
        if report_ready && report_open {
            report_open = !read_records(report_r, &mut pending, &mut records);
        }
        if exec_ready {
            // Only EOF ever arrives here: every holder closed it by exec.
            exec_r = None;
            exec_at = Some(Instant::now());
            tracing::info!(
                "activation: {:.2} ms from sandbox start to the last command's exec",
                s.started.elapsed().as_secs_f64() * 1e3
            );
        }
        if sig_ready {
            while let Ok(Some(info)) = s.signals.read_signal() {
                let signo = info.ssi_signo as i32;
                let from_tty = info.ssi_code == sys::signal::SI_KERNEL;
                if signo == libc::SIGCHLD {
                    continue;
                }
                if signo == libc::SIGINT {
                    interrupts += 1;
                    if interrupts >= 2 {
                        tracing::warn!("second interrupt: killing the run");
                        let _ = sys::signal::kill(pid, libc::SIGKILL);
                        continue;
                    }
                }
                // The terminal already signalled the whole foreground
                // process group, the task included.
                if !from_tty {
                    let _ = sys::signal::kill(pid, signo);
                }
            }
        }
        if s.step_out.is_some() && records.iter().any(|r| r.stage == Stage::Finished) {
            // Every process of the run is gone; the reaper's exit, which
            // tears down the run's mounts (some 0.3 ms), happens in a
            // namespace vhrun has left and nobody else sees. Its zombie
            // goes to whoever inherits it when vhrun exits. The run's
            // status is in the records; `Exited` only says the reaper
            // was not killed.
            tracing::debug!(
                "every process of the run is gone; its namespace's teardown is the reaper's"
            );
            break ExitKind::Exited(0);
        }
        match sys::wait::wait(Some(pid), true) {
            Ok(Some((_, kind))) => break kind,
            Ok(None) => {}
            Err(e) => return Err(Error::sys("waitpid(reaper)", e)),
        }
    };
    // The last records may still sit in the pipe.
    if report_open {
        read_records(report_r, &mut pending, &mut records);
    }
    let ended_at = Instant::now();
    let mut outcome = decode_outcome(&records, reaper_status, s, ended_at)?;
    outcome.exec_at = exec_at;
    Ok(outcome)
}

/// Read what the pipe holds into `out`; true at EOF.
fn read_records(fd: &OwnedFd, pending: &mut Vec<u8>, out: &mut Vec<Record>) -> bool {
    let mut buf = [0u8; RECORD_LEN * 16];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                while pending.len() >= RECORD_LEN {
                    let rec: [u8; RECORD_LEN] = pending[..RECORD_LEN].try_into().unwrap_or([0; 12]);
                    pending.drain(..RECORD_LEN);
                    if let Some(r) = Record::decode(&rec) {
                        out.push(r);
                    }
                }
            }
            Err(Errno::EINTR) => continue,
            // EAGAIN: drained (the read end is non-blocking).
            Err(_) => break,
        }
    }
    false
}

fn decode_outcome(
    records: &[Record],
    reaper: ExitKind,
    s: &Supervision,
    ended_at: Instant,
) -> Result<RunOutcome> {
    let command_name = |i: u32| {
        s.commands
            .get(i as usize)
            .map(|c| c.display.clone())
            .unwrap_or_else(|| format!("command #{i}"))
    };
    for r in records {
        let errno = Errno::from_raw(r.value);
        let err = match r.stage {
            Stage::Exited | Stage::Signaled | Stage::Finished => continue,
            Stage::Exec => {
                let c = &s.commands[(r.index as usize).min(s.commands.len() - 1)];
                let path = PathBuf::from(OsStr::from_bytes(c.path.as_bytes()));
                Error::user_path(path, std::io::Error::from_raw_os_error(r.value))
            }
            Stage::Chdir => Error::user_path(
                PathBuf::from(OsStr::from_bytes(s.cwd.as_bytes())),
                std::io::Error::from_raw_os_error(r.value),
            ),
            Stage::Isolation => s.isolation.error(r.index as usize, errno),
            Stage::MountProc => Error::unavailable(
                "mounting /proc for the run's PID namespace",
                format!(
                    "{}; use --share-pids to run without a PID namespace",
                    errno.desc()
                ),
            ),
            stage => Error::unavailable(
                format!("sandbox setup ({stage:?}) for {}", command_name(r.index)),
                errno.desc(),
            ),
        };
        return Err(err);
    }
    let last = records
        .iter()
        .rev()
        .find(|r| matches!(r.stage, Stage::Exited | Stage::Signaled));
    Ok(match last {
        Some(r) if matches!(reaper, ExitKind::Exited(_)) => RunOutcome {
            status: if r.stage == Stage::Exited {
                ExitKind::Exited(r.value)
            } else {
                ExitKind::Signaled(r.value)
            },
            command: r.index as usize,
            exec_at: None,
            ended_at,
            upper: None,
            companion_reported: 0,
        },
        // The reaper itself was killed (second Ctrl-C, OOM, kill -9).
        _ => RunOutcome {
            status: reaper,
            command: s.commands.len().saturating_sub(1),
            exec_at: None,
            ended_at,
            upper: None,
            companion_reported: 0,
        },
    })
}

/// Kill and reap every child vhrun has left (orphans that came to it as
/// a subreaper). vhrun's own threads may each have children.
pub fn kill_leftover_children() {
    for _ in 0..1000 {
        let mut pids = Vec::new();
        if let Ok(rd) = std::fs::read_dir("/proc/self/task") {
            for t in rd.flatten() {
                if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                    pids.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
                }
            }
        }
        for p in &pids {
            let _ = sys::signal::kill(Pid::from_raw(*p), libc::SIGKILL);
        }
        match sys::wait::wait(None, true) {
            Err(_) => return,
            Ok(Some(_)) => {}
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(1)),
        }
    }
    tracing::warn!("children of the run are still alive after 1000 kill rounds");
}
