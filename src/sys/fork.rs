//! Child processes created with a raw `clone(2)`.
//!
//! The C library's `fork()` cannot create a PID namespace, and `unshare(CLONE_NEWPID)`
//! would forbid the parent to create threads afterwards (kernel-facts.md), so
//! the sandbox calls `clone(SIGCHLD | CLONE_NEWPID)` itself: the child
//! continues on a copy-on-write copy of the calling thread's stack, exactly
//! like after `fork`. No atfork handlers run, so the child must not
//! allocate or take locks (see the module doc of `sys`).

use nix::errno::Errno;
use nix::unistd::Pid;

/// Number of threads of this process (entries of `/proc/self/task`): a
/// fork that must not inherit another thread's lock, or an `unshare` that
/// must move the whole process, needs it to be 1. Listing the directory
/// costs a third of reading `/proc/self/status`, and runs check it on
/// every start.
pub fn thread_count() -> std::io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Run `child` in a new process (the child exits with its return value;
/// a panic exits 70) and return the child's pid in the caller.
///
/// `new_pid_ns` puts the child in a new PID namespace, where it is pid 1.
/// The closure runs in a single-threaded copy of the calling process: it
/// must only use memory prepared before the call and async-signal-safe
/// system calls (no allocation, no locks, no `tracing`).
pub fn clone_child<F: FnOnce() -> i32>(new_pid_ns: bool, child: F) -> Result<Pid, Errno> {
    let mut flags = libc::SIGCHLD as libc::c_ulong;
    if new_pid_ns {
        flags |= libc::CLONE_NEWPID as libc::c_ulong;
    }
    // SAFETY: clone without CLONE_VM and with a null stack pointer is fork:
    // the child gets a copy of the address space and resumes here on its
    // own copy of this thread's stack. No pointer arguments are passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match ret {
        -1 => Err(Errno::last()),
        0 => {
            // Never unwind back into the parent's code path in the child.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(70);
            // The parent's state copied into this child is left untouched.
            exit_now(code)
        }
        pid => Ok(Pid::from_raw(pid as libc::pid_t)),
    }
}

/// End the process at once: no atexit handler, no destructor, no flush.
/// For a forked child, and for a process whose other threads may hold
/// locks an exit handler would wait for.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only ends the process; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}
