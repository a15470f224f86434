//! Background work that must not slow the runs: the calling thread (and
//! the threads it starts, which inherit both) at nice 19 and in the idle
//! I/O class.

/// Lower the calling thread's CPU priority only (nice 19): work that may
/// take idle cores but must read the disk as soon as the task does.
/// Best effort.
pub fn nice_this_thread() {
    nice_this_thread_to(19);
}

/// Lower the calling thread's CPU priority to `nice` (a forked child
/// before its exec: the program inherits it). Best effort.
pub fn nice_this_thread_to(nice: i32) {
    // SAFETY: a plain syscall with integer arguments naming the calling
    // thread (Linux keeps nice per thread).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice);
    }
}

/// Lower the calling thread's CPU and I/O priority. Best effort.
pub fn background_this_thread() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: plain syscalls with integer arguments; 0 names the calling
    // thread for both (Linux keeps nice and I/O priority per thread).
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        );
    }
}
