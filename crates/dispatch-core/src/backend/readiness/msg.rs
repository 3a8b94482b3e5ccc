//! Message operations on the readiness backends: `sendmsg` and `recvmsg` with
//! `MSG_DONTWAIT`, tried at once and again when the socket is ready, through the header the
//! message keeps in its own heap block (`Msg`). A receive parks on `EAGAIN` like any other;
//! its result never says "drained" (`edge.rs` knows only stream transfers), since a short
//! datagram says nothing of what else is queued.
#![allow(unsafe_code)]

use super::ops::Step;
use super::table::Dir;
use crate::operation::Args;
use crate::stats::Stats;

#[cfg(not(target_vendor = "apple"))]
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
// macOS has no MSG_NOSIGNAL; sockets the loop accepts or connects get SO_NOSIGPIPE.
#[cfg(target_vendor = "apple")]
const SEND_FLAGS: i32 = libc::MSG_DONTWAIT;

#[cfg(not(target_vendor = "apple"))]
const RECV_FLAGS: i32 = libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
// macOS has no MSG_CMSG_CLOEXEC: received descriptors are not close-on-exec there.
#[cfg(target_vendor = "apple")]
const RECV_FLAGS: i32 = libc::MSG_DONTWAIT;

/// Tries a `sendmsg` or `recvmsg` once (repeating only on `EINTR`).
pub(super) fn perform(args: &mut Args, stats: &mut Stats) -> Step {
    let (fd, dir) = match args {
        Args::SendMsg { fd, .. } => (*fd, Dir::Write),
        Args::RecvMsg { fd, .. } => (*fd, Dir::Read),
        _ => unreachable!("{} is not a message operation", args.label()),
    };
    if fd < 0 {
        return Step::Done(-libc::EBADF);
    }
    loop {
        stats.syscalls += 1;
        let result = match args {
            Args::SendMsg { msg, .. } => {
                let hdr = msg.prepare_send();
                // SAFETY: `hdr` points into the message's heap block and its buffers, all
                // alive and unmoved for this call; the kernel only reads through it.
                let hdr = unsafe { &*hdr };
                if hdr.msg_iovlen <= 1 && hdr.msg_controllen == 0 {
                    // One buffer and no descriptors: the same send as `sendto`, which spares
                    // the kernel copying in and checking the header and its iovec array (a
                    // UDP echo's every reply).
                    let (ptr, len) = match hdr.msg_iovlen {
                        0 => (std::ptr::null(), 0),
                        // SAFETY: `msg_iov` points at the header's one iovec (as above).
                        _ => unsafe {
                            ((*hdr.msg_iov).iov_base.cast_const(), (*hdr.msg_iov).iov_len)
                        },
                    };
                    // SAFETY: `ptr` and `len` are the message's buffer, the name and its
                    // length the header's own (null and 0 for none), all alive for the call;
                    // the kernel only reads them.
                    unsafe {
                        libc::sendto(
                            fd,
                            ptr,
                            len,
                            SEND_FLAGS,
                            hdr.msg_name.cast_const().cast(),
                            hdr.msg_namelen,
                        )
                    }
                } else {
                    // SAFETY: as above.
                    unsafe { libc::sendmsg(fd, hdr, SEND_FLAGS) }
                }
            }
            Args::RecvMsg { msg, .. } => {
                let hdr = msg.prepare_recv();
                // SAFETY: as above; the kernel writes at most the lengths the header gives
                // (the buffers' spare capacities, the address and control storage).
                unsafe { libc::recvmsg(fd, hdr, RECV_FLAGS) }
            }
            _ => unreachable!("matched above"),
        };
        if result >= 0 {
            return Step::Done(i32::try_from(result).unwrap_or(i32::MAX));
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Step::Wait(fd, dir),
            Some(errno) => return Step::Done(-errno),
            None => return Step::Done(-libc::EIO),
        }
    }
}
