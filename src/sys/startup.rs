//! What std's runtime does before `main` that vhrun needs.

/// std's start: stdio descriptors that are closed are opened on
/// /dev/null (so no file vhrun opens lands on 0-2), and SIGPIPE is ignored.
pub fn as_std_does() {
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
