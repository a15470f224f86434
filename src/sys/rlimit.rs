//! Resource limits of vhrun's own processes.

/// A FUSE server keeps one descriptor per open file (passthrough backing
/// files, or the files it reads for the kernel): allow as many as the hard
/// limit does.
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
