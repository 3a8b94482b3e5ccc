//! Pooled receives and sends for the readiness backends: a pooled receive takes a pool
//! buffer only for the syscall that fills it, so one that would block gives the buffer back
//! at once and waits for readability holding none; an empty pool is `ENOBUFS`, as io_uring
//! answers (the loop then parks the receive until buffers come back), but only for a socket
//! with something to read: an idle receive on an empty pool waits for readability, as one
//! on a full pool does.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use rustix::io::Errno;
use rustix::net::RecvFlags;

use super::ops::{self, retry, Step};
use super::table::Dir;
use crate::completion::{buffer_flags, F_MORE};
use crate::datagram::{self, Header};
use crate::pool::{Pool, PoolBuf};
use crate::stats::Stats;

/// Borrows a caller's descriptor number for one syscall.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    assert!(fd >= 0);
    // SAFETY: the borrow only carries the number into one syscall; a closed descriptor is
    // EBADF. Nothing is read through it in userspace.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// One `recv(MSG_DONTWAIT)` into a free pool buffer: the step, and the completion's flags
/// (the buffer, when bytes arrived).
pub(crate) fn recv(fd: RawFd, pool: &mut Pool, stats: &mut Stats) -> (Step, u32) {
    if fd < 0 {
        return (Step::Done(-libc::EBADF), 0);
    }
    let Some(bid) = pool.take_free() else {
        return (readable_or_wait(borrow(fd), stats), 0);
    };
    let len = pool.buffer_size().min(i32::MAX as u32) as usize;
    // SAFETY: buffer `bid` was free: nobody else reads or writes it until it is lent out
    // with this completion or put back below; it holds `buffer_size` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(pool.buffer_ptr(bid), len) };
    let fd = borrow(fd);
    let received = retry(stats, || {
        rustix::net::recv(fd, &mut *buf, RecvFlags::DONTWAIT)
    });
    match received {
        Ok((n, _)) if n > 0 => (
            Step::Done(i32::try_from(n).expect("at most i32::MAX bytes")),
            buffer_flags(bid),
        ),
        result => {
            pool.put_free(bid);
            match result {
                Ok(_) => (Step::Done(0), 0),
                Err(Errno::AGAIN) => (Step::Wait(fd.as_raw_fd(), Dir::Read), 0),
                Err(errno) => (Step::Done(-errno.raw_os_error()), 0),
            }
        }
    }
}

/// `recv` for a datagram (`Io::recv_from_multishot`): one receive (`MSG_DONTWAIT`) into a
/// free pool buffer in `datagram.rs`'s layout (the header written after it, the sender and
/// payload by the kernel where the layout wants them). An empty datagram is a datagram.
pub(crate) fn recv_datagram(fd: RawFd, pool: &mut Pool, stats: &mut Stats) -> (Step, u32) {
    if fd < 0 {
        return (Step::Done(-libc::EBADF), 0);
    }
    let Some(bid) = pool.take_free() else {
        return (readable_or_wait(borrow(fd), stats), 0);
    };
    let size = pool.buffer_size() as usize;
    let base = pool.buffer_ptr(bid);
    let received = loop {
        stats.syscalls += 1;
        // SAFETY: buffer `bid` was free: nobody else reads or writes it until it is lent out
        // with this completion or put back below; the receive writes only into it, within
        // its `size` bytes (`datagram::point`'s areas).
        match unsafe { receive(fd, base, size) } {
            Ok(received) => break Ok(received),
            Err(libc::EINTR) => continue,
            Err(errno) => break Err(errno),
        }
    };
    match received {
        Ok(header) => {
            let kept = (header.payloadlen as usize).min(size - datagram::PAYLOAD_AT);
            // SAFETY: as above; the syscall is over, so this is the only reference.
            let buf = unsafe { std::slice::from_raw_parts_mut(base, size) };
            header.write(buf);
            let result = datagram::buffer_result(kept, size);
            (Step::Done(result), buffer_flags(bid))
        }
        Err(errno) => {
            pool.put_free(bid);
            match errno {
                libc::EAGAIN => (Step::Wait(fd, Dir::Read), 0),
                errno => (Step::Done(-errno), 0),
            }
        }
    }
}

/// `recvfrom(MSG_DONTWAIT | MSG_TRUNC)` into the layout's sender and payload areas of the
/// `size`-byte buffer at `base`: Linux then returns a cut datagram's true length, which
/// says it was cut, so no `msghdr` is needed (the kernel copies none in: less work than a
/// `recvmsg`). The header to write, or the errno.
///
/// # Safety
/// `base` points at `size` bytes (more than `datagram::PAYLOAD_AT`) that nothing else
/// reads or writes during the call.
#[cfg(any(target_os = "linux", target_os = "android"))]
unsafe fn receive(fd: RawFd, base: *mut u8, size: usize) -> Result<Header, i32> {
    let room = size - datagram::PAYLOAD_AT;
    let mut namelen = datagram::NAME_LEN as libc::socklen_t;
    let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC;
    // SAFETY: the caller's contract: the payload area (`room` bytes at `PAYLOAD_AT`) and the
    // name area (`NAME_LEN` bytes at `HEADER_LEN`) lie within the buffer; `namelen` lives
    // for the call.
    let n = unsafe {
        let name = base.add(datagram::HEADER_LEN).cast::<libc::sockaddr>();
        libc::recvfrom(
            fd,
            base.add(datagram::PAYLOAD_AT).cast(),
            room,
            flags,
            name,
            &mut namelen,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    let len = n.unsigned_abs();
    Ok(Header {
        namelen,
        payloadlen: u32::try_from(len).unwrap_or(u32::MAX),
        flags: if len > room {
            libc::MSG_TRUNC as u32
        } else {
            0
        },
    })
}

/// `recvmsg(MSG_DONTWAIT)` into the layout's sender and payload areas of the `size`-byte
/// buffer at `base`: FreeBSD and macOS take no `MSG_TRUNC` on input, so a cut datagram is
/// known by `msg_flags` only (and its true length is not reported). The header to write,
/// or the errno.
///
/// # Safety
/// As the Linux `receive`.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
unsafe fn receive(fd: RawFd, base: *mut u8, size: usize) -> Result<Header, i32> {
    let mut hdr = datagram::zeroed_msghdr();
    let mut iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    datagram::point(&mut hdr, &mut iov, base, size);
    // SAFETY: `hdr` points into the buffer (the caller's contract) and at `iov`, both alive
    // for the call.
    let n = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(Header {
        namelen: hdr.msg_namelen,
        payloadlen: u32::try_from(n.unsigned_abs()).unwrap_or(u32::MAX),
        flags: hdr.msg_flags as u32,
    })
}

/// Intermediate results datagram multishots may leave unreaped (the engine's `shots`).
pub(crate) const SHOTS_MAX: usize = 256;
/// An intermediate result as the engine keeps it: `(user_data, result, flags)`.
pub(crate) type Shot = (u64, i32, u32);
/// Datagrams one try of a datagram multishot takes at most.
const BURST_MAX: u32 = 32;

/// `recv_datagram` for a datagram receive; a multishot's (`burst`: its `user_data` and the
/// engine's intermediate results) takes a burst, as io_uring's kernel multishot does: each
/// datagram but the last it takes goes to `shots` as an intermediate result (`F_MORE`),
/// and it goes on while datagrams come, buffers are free, there is room in `shots` and
/// the burst is under `BURST_MAX`. The step returned is the last try's: a wait (the
/// receive parks, as after any `EAGAIN`), an error, or a datagram, after which the loop
/// re-arms it. One datagram a turn (the loop's re-arm alone) cost epoll a wait for every
/// other datagram.
pub(crate) fn recv_datagrams(
    fd: RawFd,
    pool: &mut Pool,
    stats: &mut Stats,
    mut burst: Option<(u64, &mut Vec<Shot>)>,
) -> (Step, u32) {
    let mut taken = 0;
    loop {
        let (step, flags) = recv_datagram(fd, pool, stats);
        let Some((user_data, shots)) = burst.as_mut() else {
            return (step, flags);
        };
        let goes_on = taken + 1 < BURST_MAX && pool.has_free() && shots.len() < SHOTS_MAX;
        match step {
            Step::Done(result) if result >= 0 && goes_on => {
                assert!(shots.len() < shots.capacity(), "the shots list never grows");
                shots.push((*user_data, result, flags | F_MORE));
                taken += 1;
            }
            step => return (step, flags),
        }
    }
}

/// With the pool empty: `ENOBUFS` (wait for a buffer) if the socket has bytes or the end of
/// stream to read, a wait for readability if it has nothing; one `recv(MSG_PEEK)` of a byte
/// says which. An error is the receive's result at once: on Linux a peek takes the socket's
/// pending error (`ECONNRESET`), and the recv after it would see only the end of stream.
fn readable_or_wait(fd: BorrowedFd<'_>, stats: &mut Stats) -> Step {
    let mut byte = [0_u8; 1];
    let peek = RecvFlags::PEEK | RecvFlags::DONTWAIT;
    let peeked = retry(stats, || rustix::net::recv(fd, &mut byte, peek));
    match peeked {
        Ok(_) => Step::Done(-libc::ENOBUFS),
        Err(Errno::AGAIN) => Step::Wait(fd.as_raw_fd(), Dir::Read),
        Err(errno) => Step::Done(-errno.raw_os_error()),
    }
}

/// One non-blocking send of a pool buffer's view: a plain send (`ops::send`).
pub(crate) fn send(fd: RawFd, buf: &PoolBuf, stats: &mut Stats) -> Step {
    if fd < 0 {
        return Step::Done(-libc::EBADF);
    }
    ops::send(borrow(fd), buf, stats)
}
