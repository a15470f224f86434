//! Passing file descriptors over a Unix socket (`SCM_RIGHTS`).
//!
//! nix hands received descriptors out as raw numbers; taking ownership of
//! them is the one unsafe step, kept here.

use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Most descriptors one message carries.
pub const MAX_FDS: usize = 8;

/// A connected pair of `SOCK_SEQPACKET` Unix sockets (close-on-exec):
/// each message arrives whole, with its descriptors.
pub fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
}

/// Send `bytes` with `fds` attached, in one message.
pub fn send(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsgs = if raw.is_empty() {
        Vec::new()
    } else {
        vec![ControlMessage::ScmRights(&raw)]
    };
    let iov = [IoSlice::new(bytes)];
    let sent = sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent != bytes.len() {
        return Err(Errno::EMSGSIZE);
    }
    Ok(())
}

/// Receive one message into `buf`: its length and the descriptors it
/// carried (close-on-exec). A length of 0 means the peer closed.
pub fn recv(sock: &UnixStream, buf: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), Errno> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed this descriptor in our
                // table for this message; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    let len = msg.bytes;
    if truncated {
        return Err(Errno::EMSGSIZE);
    }
    Ok((len, fds))
}

/// Close every descriptor above stderr this process inherited: a detached
/// server must not keep its starter's pipes or terminal open for its
/// whole life (the starter's caller would wait for their EOF). Call it
/// first thing, before anything of ours is open.
pub fn close_inherited() {
    // SAFETY: nothing in this process owns a descriptor above 2 yet (the
    // caller's contract); close_range only closes, it touches no memory.
    // By number: musl's libc has no wrapper for it.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, 0) };
    if r != 0 {
        // Before Linux 5.9: close them one by one.
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse().ok())
                    .filter(|&fd| fd > 2)
                    .collect()
            })
            .unwrap_or_default();
        for fd in fds {
            // SAFETY: as above; the read_dir's own descriptor is closed by now.
            unsafe { libc::close(fd) };
        }
    }
}
