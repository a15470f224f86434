//! The code that runs after the fork: the reaper and the task's last steps
//! before exec.
//!
//! The reaper is forked (raw clone) from vhrun's main thread after the
//! FUSE server threads exist, so everything here follows the rule of
//! `crate::sys`: system calls on memory prepared before the fork, no
//! allocation, no logging. Failures are reported to vhrun as fixed-size
//! records on the report pipe (see [`Record`]).
//!
//! The reaper:
//! 1. dies with vhrun (PR_SET_PDEATHSIG = SIGKILL; PDEATHSIG fires when the
//!    *thread* that forked exits, hence the main thread), and checks the
//!    race where vhrun died before that with a pipe (in a new PID namespace
//!    `getppid()` is 0 and proves nothing);
//! 2. blocks every signal and takes them with `sigwaitinfo`, the only way a
//!    PID namespace's init receives signals with default dispositions;
//! 3. unshares the task's own mount namespace and applies the isolation
//!    mounts (unless vhrun applied them in the run's namespace and left it
//!    to the reaper: `Plan::mount_ns` false), then mounts a fresh /proc
//!    for its PID namespace;
//! 4. forks each command in turn (pre-run commands, then the task); the
//!    child resets its signal mask, chdirs, drops capabilities and execs;
//! 5. forwards every signal it receives to the running command, except the
//!    ones the kernel sent to the whole process group (Ctrl-C on a
//!    terminal: the task got its own copy), reaps every orphan, and exits
//!    with the last command's status (code, or 128+N). As pid 1 it first
//!    closes its copies of the run's output (whoever reads it to its end
//!    sees the end now), kills and reaps whatever the task left running
//!    and says so
//!    ([`Stage::Finished`]): from then on only its own exit is left, whose
//!    teardown of the run's mounts vhrun need not wait for once it has
//!    stepped out of them. Without a PID namespace (`--share-pids`) it is
//!    a child subreaper and kills the leftovers itself.

use super::capabilities::CapDrop;
use super::command::PreparedCommand;
use super::isolation;
use crate::sys;
use crate::sys::exec::CStringArray;
use crate::sys::wait::ExitKind;
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// Where a post-fork step failed, or how the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    /// Final record: command `index` exited with code `value`.
    Exited = 0,
    /// Final record: command `index` was killed by signal `value`.
    Signaled = 1,
    Pdeathsig = 2,
    UnshareMountNs = 3,
    /// `index` is the failing isolation mount.
    Isolation = 4,
    MountProc = 5,
    Subreaper = 6,
    Fork = 7,
    Stdio = 8,
    SignalMask = 9,
    Chdir = 10,
    Capabilities = 11,
    Exec = 12,
    Wait = 13,
    /// After the final record, in a PID namespace: every other process of
    /// the run is dead and reaped; what is left is the reaper's own exit,
    /// which tears the run's namespaces down.
    Finished = 14,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        [
            Exited,
            Signaled,
            Pdeathsig,
            UnshareMountNs,
            Isolation,
            MountProc,
            Subreaper,
            Fork,
            Stdio,
            SignalMask,
            Chdir,
            Capabilities,
            Exec,
            Wait,
            Finished,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }
}

/// One report: 12 bytes, written with a single write(2) (atomic on a pipe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub stage: Stage,
    pub index: u32,
    /// Exit code, signal number or errno, by stage.
    pub value: i32,
}

pub const RECORD_LEN: usize = 12;

impl Record {
    fn encode(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..4].copy_from_slice(&(self.stage as u32).to_ne_bytes());
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.value.to_ne_bytes());
        b
    }
    pub fn decode(b: &[u8; RECORD_LEN]) -> Option<Record> {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Some(Record {
            stage: Stage::from_u32(u32::from_ne_bytes(word(0)))?,
            index: u32::from_ne_bytes(word(4)),
            value: i32::from_ne_bytes(word(8)),
        })
    }
}

/// Everything the reaper and the task need, prepared before the fork.
pub struct Plan<'a> {
    pub commands: &'a [PreparedCommand],
    pub envp: &'a CStringArray,
    pub cwd: &'a CStr,
    /// pid 1 of a new PID namespace (else: a subreaper in vhrun's).
    pub pid_ns: bool,
    /// Unshare the task's mount namespace and apply `isolation` (not in
    /// copy mode, where the machine allows no namespace).
    pub mount_ns: bool,
    pub isolation: &'a isolation::Prepared,
    pub caps: Option<&'a CapDrop>,
    /// The signal mask vhrun was started with, restored for the task.
    pub task_mask: SigSet,
    pub stdio: [Option<BorrowedFd<'a>>; 3],
    /// Report pipe, write end (records for vhrun).
    pub report: BorrowedFd<'a>,
    /// Exec pipe, write end: CLOEXEC, closed by every exec; its EOF tells
    /// vhrun the last command started.
    pub exec_marker: RawFd,
    /// Life pipe: vhrun holds the write end (`alive_w`, closed here) and
    /// never writes; EOF on `alive_r` means vhrun is gone.
    pub alive_r: BorrowedFd<'a>,
    pub alive_w: RawFd,
    /// Started before the first command, beside them (`super::Companion`).
    pub companion: Option<CompanionPlan<'a>>,
}

/// The companion's command and descriptors, prepared before the fork.
pub struct CompanionPlan<'a> {
    pub command: &'a PreparedCommand,
    /// Its fd 3.
    pub input: RawFd,
    /// Its fd 4.
    pub report: RawFd,
    /// Its stdin, stdout and stderr.
    pub null: RawFd,
}

/// How much nicer than the commands the companion runs: it takes an idle
/// core, and yields to the task and to the server of its tree.
const COMPANION_NICE: i32 = 10;

const EXIT_SETUP_FAILED: i32 = 70;
const EXIT_EXEC_FAILED: i32 = 127;

impl Plan<'_> {
    fn report(&self, stage: Stage, index: usize, value: i32) {
        let rec = Record {
            stage,
            index: index as u32,
            value,
        };
        // Nothing to do if vhrun is gone.
        let _ = nix::unistd::write(self.report, &rec.encode());
    }

    fn fail(&self, stage: Stage, index: usize, e: Errno) -> i32 {
        self.report(stage, index, e as i32);
        EXIT_SETUP_FAILED
    }
}

/// pid 1 of the run (or its subreaper with `--share-pids`). Returns the
/// process's exit code.
pub fn reaper_main(plan: &Plan) -> i32 {
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return plan.fail(Stage::Pdeathsig, 0, e);
    }
    let _ = nix::unistd::close(plan.alive_w);
    if parent_gone(plan.alive_r) {
        return EXIT_SETUP_FAILED;
    }
    // Everything blocked and taken by sigwaitinfo: handlers would run
    // vhrun's code, and pid 1 ignores unblocked default-action signals.
    if let Err(e) = SigSet::all().thread_set_mask() {
        return plan.fail(Stage::SignalMask, 0, e);
    }
    let _ = sys::signal::set_default(libc::SIGCHLD);

    if plan.mount_ns {
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
            return plan.fail(Stage::UnshareMountNs, 0, e);
        }
        if let Err((i, e)) = plan.isolation.apply() {
            return plan.fail(Stage::Isolation, i, e);
        }
    }
    if plan.pid_ns {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if let Err(e) = mount(Some(c"proc"), c"/proc", Some(c"proc"), flags, None::<&CStr>) {
            return plan.fail(Stage::MountProc, 0, e);
        }
    } else if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        return plan.fail(Stage::Subreaper, 0, e);
    }

    if let Some(c) = &plan.companion {
        // Its exit is reaped with the orphans; it gets no signal, and the
        // end of the run kills it with whatever else is left.
        let _ = sys::fork::clone_child(false, || companion_main(plan, c));
    }
    let last = plan.commands.len().saturating_sub(1);
    let mut outcome = (0usize, ExitKind::Exited(EXIT_SETUP_FAILED));
    for i in 0..plan.commands.len() {
        let pid = match sys::fork::clone_child(false, || task_main(plan, i)) {
            Ok(pid) => pid,
            Err(e) => {
                plan.report(Stage::Fork, i, e as i32);
                break;
            }
        };
        if i == last {
            let _ = nix::unistd::close(plan.exec_marker);
        }
        let status = match wait_forwarding(pid) {
            Ok(s) => s,
            Err(e) => {
                plan.report(Stage::Wait, i, e as i32);
                break;
            }
        };
        outcome = (i, status);
        if status != ExitKind::Exited(0) {
            break;
        }
    }
    let (index, status) = outcome;
    match status {
        ExitKind::Exited(c) => plan.report(Stage::Exited, index, c),
        ExitKind::Signaled(s) => plan.report(Stage::Signaled, index, s),
    }
    if plan.pid_ns {
        // A caller reading vhrun's output to its end must not wait for
        // the teardown either: the reaper's copies of it go first.
        for fd in [0, 1, 2]
            .into_iter()
            .chain(plan.stdio.iter().flatten().map(|fd| fd.as_raw_fd()))
        {
            let _ = nix::unistd::close(fd);
        }
        // What the kernel would do at our exit, done first, so that the
        // run is over before the namespaces' teardown (the exit itself).
        let _ = sys::signal::kill(Pid::from_raw(-1), libc::SIGKILL);
        while let Ok(Some(_)) = sys::wait::wait(None, false) {}
        plan.report(Stage::Finished, index, 0);
    } else {
        kill_descendants();
    }
    status.code()
}

/// The command's side of the fork: returns only if exec failed.
fn task_main(plan: &Plan, index: usize) -> i32 {
    // Dies with the reaper, which matters without a PID namespace.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    for (n, fd) in plan.stdio.iter().enumerate() {
        if let Some(fd) = fd {
            let r = match n {
                0 => nix::unistd::dup2_stdin(fd),
                1 => nix::unistd::dup2_stdout(fd),
                _ => nix::unistd::dup2_stderr(fd),
            };
            if let Err(e) = r {
                plan.report(Stage::Stdio, index, e as i32);
                return EXIT_EXEC_FAILED;
            }
        }
    }
    // vhrun ignores SIGPIPE (`sys::startup`); a task must not inherit that.
    let _ = sys::signal::set_default(libc::SIGPIPE);
    if let Err(e) = plan.task_mask.thread_set_mask() {
        plan.report(Stage::SignalMask, index, e as i32);
        return EXIT_EXEC_FAILED;
    }
    if let Err(e) = nix::unistd::chdir(plan.cwd) {
        plan.report(Stage::Chdir, index, e as i32);
        return EXIT_EXEC_FAILED;
    }
    if let Some(caps) = plan.caps {
        if let Err(e) = caps.apply() {
            plan.report(Stage::Capabilities, index, e as i32);
            return EXIT_EXEC_FAILED;
        }
    }
    let cmd = &plan.commands[index];
    let e = sys::exec::execve(&cmd.path, &cmd.argv, plan.envp);
    plan.report(Stage::Exec, index, e as i32);
    EXIT_EXEC_FAILED
}

/// The companion's side of its fork: the commands' confinement, its own
/// descriptors, a lower priority. Returns only if a step failed; it
/// reports nothing (the run does not depend on it).
fn companion_main(plan: &Plan, c: &CompanionPlan) -> i32 {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let fds = [
        (c.null, 0),
        (c.null, 1),
        (c.null, 2),
        (c.input, 3),
        (c.report, 4),
    ];
    if sys::exec::place_fds(&fds).is_err() {
        return EXIT_EXEC_FAILED;
    }
    let _ = sys::signal::set_default(libc::SIGPIPE);
    if plan.task_mask.thread_set_mask().is_err() || nix::unistd::chdir(plan.cwd).is_err() {
        return EXIT_EXEC_FAILED;
    }
    if let Some(caps) = plan.caps {
        if caps.apply().is_err() {
            return EXIT_EXEC_FAILED;
        }
    }
    sys::priority::nice_this_thread_to(COMPANION_NICE);
    let _ = sys::exec::execve(&c.command.path, &c.command.argv, plan.envp);
    EXIT_EXEC_FAILED
}

/// EOF (or an error) on the life pipe: vhrun has exited.
fn parent_gone(alive_r: BorrowedFd) -> bool {
    let mut fds = [PollFd::new(alive_r.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => false,
        Ok(_) => true,
        Err(_) => true,
    }
}

/// Wait for `pid`, forwarding signals to it and reaping orphans meanwhile.
fn wait_forwarding(pid: Pid) -> Result<ExitKind, Errno> {
    let all = SigSet::all();
    loop {
        let (signo, code) = sys::signal::wait_info(&all)?;
        if signo == libc::SIGCHLD {
            loop {
                match sys::wait::wait(None, true) {
                    Ok(Some((p, kind))) if p == pid => return Ok(kind),
                    Ok(Some(_)) => continue,
                    Ok(None) => break,
                    Err(e) => return Err(e),
                }
            }
        } else if code != sys::signal::SI_KERNEL {
            let _ = sys::signal::kill(pid, signo);
        }
    }
}

/// Kill and reap every child until none is left (orphans keep arriving
/// while their parents die, hence the loop). Allocation-free.
fn kill_descendants() {
    loop {
        let killed = kill_children_listed();
        match sys::wait::wait(None, true) {
            Err(_) => return, // ECHILD: nothing left
            Ok(Some(_)) => continue,
            Ok(None) => {
                if killed == 0 {
                    // Children exist but none is listed yet: give them a moment.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }
}

/// SIGKILL every pid in /proc/thread-self/children; returns how many.
fn kill_children_listed() -> usize {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::Mode;
    let Ok(fd) = open(
        c"/proc/thread-self/children",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return 0;
    };
    let mut buf = [0u8; 512];
    let mut pid: i32 = 0;
    let mut in_number = false;
    let mut killed = 0;
    loop {
        let n = match nix::unistd::read(&fd, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b.is_ascii_digit() {
                pid = pid.saturating_mul(10).saturating_add(i32::from(b - b'0'));
                in_number = true;
            } else if in_number {
                let _ = sys::signal::kill(Pid::from_raw(pid), libc::SIGKILL);
                killed += 1;
                pid = 0;
                in_number = false;
            }
        }
    }
    if in_number {
        let _ = sys::signal::kill(Pid::from_raw(pid), libc::SIGKILL);
        killed += 1;
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = Record {
            stage: Stage::Isolation,
            index: 3,
            value: -5,
        };
        assert_eq!(Record::decode(&r.encode()), Some(r));
        let mut bad = r.encode();
        bad[0] = 200;
        assert_eq!(Record::decode(&bad), None);
    }
}
