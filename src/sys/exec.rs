//! `execve` over arrays built before forking, and the descriptors a child
//! places before it.

use nix::errno::Errno;
use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::os::raw::c_char;

/// A NULL-terminated array of C strings (argv or envp), owned.
pub struct CStringArray {
    // Owns the bytes `ptrs` points into; never mutated after `new`.
    strings: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStringArray {
    pub fn new(strings: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        CStringArray { strings, ptrs }
    }
    pub fn len(&self) -> usize {
        self.strings.len()
    }
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
    pub fn get(&self, i: usize) -> Option<&CStr> {
        self.strings.get(i).map(|s| s.as_c_str())
    }
}

impl std::fmt::Debug for CStringArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.strings.iter()).finish()
    }
}

/// Replace the process image; returns only on failure, with the errno.
/// Allocation-free: safe to call in a forked child.
pub fn execve(path: &CStr, argv: &CStringArray, envp: &CStringArray) -> Errno {
    // SAFETY: every pointer is a NUL-terminated string owned by `argv` /
    // `envp` / `path`, both arrays end with NULL, and all outlive the call.
    unsafe {
        libc::execve(path.as_ptr(), argv.ptrs.as_ptr(), envp.ptrs.as_ptr());
    }
    Errno::last()
}

/// Put descriptor `from` at number `to` for each pair, open across exec,
/// whatever numbers the sources have now (one may sit at another's
/// target). Allocation-free: for a forked child before its exec.
pub fn place_fds(pairs: &[(RawFd, RawFd)]) -> Result<(), Errno> {
    const MAX: usize = 8;
    const HIGH: RawFd = 64;
    if pairs.len() > MAX {
        return Err(Errno::EINVAL);
    }
    // First out of every target's way, then each to its place.
    let mut moved = [-1 as RawFd; MAX];
    for (i, &(from, _)) in pairs.iter().enumerate() {
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor number touches no
        // memory; a bad number is an error, not undefined behaviour.
        let fd = unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, HIGH) };
        if fd < 0 {
            return Err(Errno::last());
        }
        moved[i] = fd;
    }
    for (i, &(_, to)) in pairs.iter().enumerate() {
        // SAFETY: as above; dup2 leaves the new descriptor without
        // close-on-exec.
        if unsafe { libc::dup2(moved[i], to) } < 0 {
            return Err(Errno::last());
        }
        // SAFETY: `moved[i]` is ours (duplicated above) and closed once.
        unsafe { libc::close(moved[i]) };
    }
    Ok(())
}
