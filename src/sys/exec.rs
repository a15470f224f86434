//! `execve` over arrays built before forking.

use nix::errno::Errno;
use std::ffi::{CStr, CString};
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
