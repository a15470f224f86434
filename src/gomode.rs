//! Go `io/fs.FileMode`, the mode encoding rcc stores in catalogs.
//!
//! The low 9 bits are POSIX permissions; type and special bits live in the
//! high bits, unlike `st_mode`. Conversions go both ways so that a lift
//! records exactly what Go's `os.Stat(...).Mode()` would.

pub const MODE_DIR: u32 = 1 << 31;
pub const MODE_APPEND: u32 = 1 << 30;
pub const MODE_EXCLUSIVE: u32 = 1 << 29;
pub const MODE_TEMPORARY: u32 = 1 << 28;
pub const MODE_SYMLINK: u32 = 1 << 27;
pub const MODE_DEVICE: u32 = 1 << 26;
pub const MODE_NAMED_PIPE: u32 = 1 << 25;
pub const MODE_SOCKET: u32 = 1 << 24;
pub const MODE_SETUID: u32 = 1 << 23;
pub const MODE_SETGID: u32 = 1 << 22;
pub const MODE_CHAR_DEVICE: u32 = 1 << 21;
pub const MODE_STICKY: u32 = 1 << 20;
pub const MODE_IRREGULAR: u32 = 1 << 19;
pub const MODE_PERM: u32 = 0o777;

/// `st_mode` (as from `stat(2)`) to the Go FileMode that `os.Stat` reports.
pub fn from_posix(st_mode: u32) -> u32 {
    let mut mode = st_mode & MODE_PERM;
    match st_mode & libc::S_IFMT {
        libc::S_IFDIR => mode |= MODE_DIR,
        libc::S_IFLNK => mode |= MODE_SYMLINK,
        libc::S_IFIFO => mode |= MODE_NAMED_PIPE,
        libc::S_IFSOCK => mode |= MODE_SOCKET,
        libc::S_IFBLK => mode |= MODE_DEVICE,
        libc::S_IFCHR => mode |= MODE_DEVICE | MODE_CHAR_DEVICE,
        _ => {}
    }
    if st_mode & libc::S_ISUID != 0 {
        mode |= MODE_SETUID;
    }
    if st_mode & libc::S_ISGID != 0 {
        mode |= MODE_SETGID;
    }
    if st_mode & libc::S_ISVTX != 0 {
        mode |= MODE_STICKY;
    }
    mode
}

/// The permission bits Go's `os.Chmod` passes to the kernel for a FileMode:
/// rwx plus setuid/setgid/sticky (Go's `syscallMode`).
pub fn to_chmod(go_mode: u32) -> u32 {
    let mut mode = go_mode & MODE_PERM;
    if go_mode & MODE_SETUID != 0 {
        mode |= libc::S_ISUID;
    }
    if go_mode & MODE_SETGID != 0 {
        mode |= libc::S_ISGID;
    }
    if go_mode & MODE_STICKY != 0 {
        mode |= libc::S_ISVTX;
    }
    mode
}

pub fn is_dir(go_mode: u32) -> bool {
    go_mode & MODE_DIR != 0
}

pub fn is_symlink(go_mode: u32) -> bool {
    go_mode & MODE_SYMLINK != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_values() {
        assert_eq!(from_posix(libc::S_IFDIR | 0o755), 2147484141);
        assert_eq!(from_posix(libc::S_IFREG | 0o644), 420);
        assert_eq!(from_posix(libc::S_IFREG | 0o755), 493);
        assert_eq!(from_posix(libc::S_IFREG | 0o4755), MODE_SETUID | 0o755);
        assert_eq!(to_chmod(MODE_DIR | MODE_STICKY | 0o777), 0o1777);
        assert_eq!(to_chmod(from_posix(libc::S_IFREG | 0o6711)), 0o6711);
    }
}
