//! What std's runtime does before `main` that vhrun needs.

use std::ffi::{c_char, c_int, CStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::sync::OnceLock;

static ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

/// std's start: the arguments are kept for [`args_os`], the allocator is
/// tuned ([`super::arena::tune`]), stdio descriptors that are closed are
/// opened on /dev/null (so no file vhrun opens lands on 0-2), and SIGPIPE
/// is ignored.
///
/// # Safety
/// `argv` holds `argc` pointers to NUL-terminated strings, as C's `main`
/// receives them.
pub unsafe fn as_std_does(argc: c_int, argv: *const *const c_char) {
    let args = (0..usize::try_from(argc).unwrap_or(0))
        // SAFETY: the caller's contract: argc valid pointers to C strings.
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
        .map(|arg| OsString::from_vec(arg.to_bytes().to_vec()))
        .collect();
    let _ = ARGS.set(args);
    super::arena::tune();
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll reads and writes only the three pollfd structs given.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if polled > 0 {
        for p in fds {
            if p.revents & libc::POLLNVAL != 0 {
                // SAFETY: open with a static NUL-terminated path; the lowest
                // free descriptor is the closed one.
                unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
            }
        }
    }
    let _ = super::signal::ignore(libc::SIGPIPE);
}

/// The process's arguments, its name first. std's `args_os` is empty
/// without std's runtime setup on musl, whose start (unlike glibc's) does
/// not hand them to std's initialiser.
pub fn args_os() -> Vec<OsString> {
    ARGS.get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().collect())
}
