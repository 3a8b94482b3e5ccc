//! Performing operations with plain syscalls, for the readiness backends: each call either
//! finishes (`Step::Done(result)`, `-errno` on failure) or would block (`Step::Wait`).
//!
//! Sockets are driven without blocking whatever their mode: recv and send pass
//! `MSG_DONTWAIT`; accept and connect, which have no such flag, first put the socket in
//! non-blocking mode. File operations (`backend/file.rs`) run here, inline, when the loop
//! has no file workers (with workers the engine hands them over before they get here), and
//! so does close, always: readiness cannot wait on regular files.
#![allow(unsafe_code)]

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, RawFd};

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags};

use super::table::Dir;
use crate::backend::file;
use crate::operation::Args;
use crate::outbuf::{OutBuf, GATHER_MAX};
use crate::stats::Stats;

/// What trying an operation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Finished with this result (`>= 0`, or `-errno`).
    Done(i32),
    /// Would block: try again when `fd` is ready in `Dir`.
    Wait(RawFd, Dir),
}

/// Borrows a caller's descriptor number for one syscall.
fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    assert!(fd >= 0 || fd == libc::AT_FDCWD);
    // SAFETY: the borrow only carries the number into one syscall; if the caller closed the
    // descriptor the kernel answers EBADF. Nothing is read through it in userspace.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// `getsockopt(SO_TYPE)`: whether `fd` is a stream socket (anything else, or an error such
/// as `ENOTSOCK`, is not).
pub(crate) fn is_stream_socket(fd: RawFd, stats: &mut Stats) -> bool {
    stats.syscalls += 1;
    matches!(
        rustix::net::sockopt::socket_type(borrow(fd)),
        Ok(rustix::net::SocketType::STREAM)
    )
}

fn done(result: Result<usize, Errno>) -> Step {
    match result {
        Ok(n) => Step::Done(i32::try_from(n).expect("lengths are clamped to i32::MAX")),
        Err(errno) => Step::Done(-errno.raw_os_error()),
    }
}

pub(super) use crate::backend::file::retry;

/// Puts `fd` in non-blocking mode if it is not already (one `fcntl`, two if it changes).
fn ensure_nonblocking(fd: BorrowedFd<'_>, stats: &mut Stats) -> Result<(), Errno> {
    let flags = retry(stats, || rustix::fs::fcntl_getfl(fd))?;
    if flags.contains(rustix::fs::OFlags::NONBLOCK) {
        return Ok(());
    }
    retry(stats, || {
        rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)
    })
}

/// The spare capacity of `buf`, at most `i32::MAX` bytes so that a count fits the result.
fn spare(buf: &mut Vec<u8>) -> &mut [MaybeUninit<u8>] {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(i32::MAX as usize);
    &mut spare[..len]
}

fn filled(buf: &[u8]) -> &[u8] {
    &buf[..buf.len().min(i32::MAX as usize)]
}

#[cfg(not(target_vendor = "apple"))]
fn send_flags() -> SendFlags {
    // MSG_NOSIGNAL: a reset peer is EPIPE, never a SIGPIPE.
    SendFlags::DONTWAIT | SendFlags::NOSIGNAL
}

#[cfg(target_vendor = "apple")]
fn send_flags() -> SendFlags {
    // macOS has no MSG_NOSIGNAL; sockets the loop accepts or connects get SO_NOSIGPIPE.
    SendFlags::DONTWAIT
}

/// Tries the operation `args` once (repeating only on EINTR). `connecting` is the
/// operation's own state: whether its connect was already started.
pub(crate) fn perform(args: &mut Args, connecting: &mut bool, stats: &mut Stats) -> Step {
    match args {
        Args::Accept { fd, .. } if *fd >= 0 => accept(borrow(*fd), stats),
        Args::Connect { fd, addr } if *fd >= 0 => connect(borrow(*fd), addr, connecting, stats),
        Args::Recv { fd, buf } if *fd >= 0 => recv(borrow(*fd), buf, stats),
        Args::Send { fd, buf } if *fd >= 0 => send(borrow(*fd), buf, stats),
        Args::SendVectored { fd, bufs } if *fd >= 0 => send_vectored(borrow(*fd), bufs, stats),
        Args::Shutdown { fd, how } if *fd >= 0 => shutdown(borrow(*fd), *how, stats),
        _ if file::is_file(args) => Step::Done(file::perform(args, stats)),
        Args::Close { fd } => close(fd.as_raw_fd(), stats),
        // A negative descriptor (other than AT_FDCWD, or any with an absolute path, for
        // openat) is never open.
        Args::Accept { .. }
        | Args::Connect { .. }
        | Args::Recv { .. }
        | Args::Send { .. }
        | Args::SendVectored { .. }
        | Args::Shutdown { .. } => Step::Done(-libc::EBADF),
        Args::Empty
        | Args::Timeout { .. }
        | Args::Cancel { .. }
        | Args::Nop
        | Args::Wakeup
        | Args::Poll { .. }
        | Args::RecvPooled { .. }
        | Args::SendPooled { .. }
        | Args::SendMsg { .. }
        | Args::RecvMsg { .. }
        | Args::Read { .. }
        | Args::Write { .. }
        | Args::ReadV { .. }
        | Args::WriteV { .. }
        | Args::Fsync { .. }
        | Args::Fallocate { .. }
        | Args::Ftruncate { .. }
        | Args::Statx { .. }
        | Args::Openat { .. }
        | Args::Renameat { .. }
        | Args::Unlinkat { .. }
        | Args::Mkdirat { .. } => {
            unreachable!("{} is handled by the engine, not performed", args.label())
        }
    }
}

fn recv(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, stats: &mut Stats) -> Step {
    let recv = || {
        let ((init, _), _) = rustix::net::recv(fd, spare(buf), RecvFlags::DONTWAIT)?;
        Ok(init.len())
    };
    match retry(stats, recv) {
        Err(Errno::AGAIN) => Step::Wait(fd.as_raw_fd(), Dir::Read),
        result => done(result),
    }
}

pub(super) fn send(fd: BorrowedFd<'_>, buf: &[u8], stats: &mut Stats) -> Step {
    match retry(stats, || rustix::net::send(fd, filled(buf), send_flags())) {
        Err(Errno::AGAIN) => Step::Wait(fd.as_raw_fd(), Dir::Write),
        result => done(result),
    }
}

/// One `sendmsg` of the first `GATHER_MAX` buffers, gathered from iovecs on the stack (a
/// plain `send` for one buffer).
fn send_vectored(fd: BorrowedFd<'_>, bufs: &[OutBuf], stats: &mut Stats) -> Step {
    if let [buf] = bufs {
        return send(fd, buf, stats);
    }
    let mut slices = [IoSlice::new(&[]); GATHER_MAX];
    let n = bufs.len().min(GATHER_MAX);
    for (slice, buf) in slices.iter_mut().zip(bufs) {
        *slice = IoSlice::new(filled(buf));
    }
    let send = || {
        let mut control = SendAncillaryBuffer::default();
        rustix::net::sendmsg(fd, &slices[..n], &mut control, send_flags())
    };
    match retry(stats, send) {
        Err(Errno::AGAIN) => Step::Wait(fd.as_raw_fd(), Dir::Write),
        result => done(result),
    }
}

fn shutdown(fd: BorrowedFd<'_>, how: i32, stats: &mut Stats) -> Step {
    let how = match how {
        libc::SHUT_RD => rustix::net::Shutdown::Read,
        libc::SHUT_WR => rustix::net::Shutdown::Write,
        _ => rustix::net::Shutdown::Both,
    };
    done(retry(stats, || rustix::net::shutdown(fd, how)).map(|()| 0))
}

fn close(fd: RawFd, stats: &mut Stats) -> Step {
    stats.syscalls += 1;
    // SAFETY: the operation owns this descriptor (it was an `OwnedFd`); the completion
    // forgets the `OwnedFd` without closing it again, whatever close returned.
    let result = unsafe { libc::close(fd) };
    // EINTR from close still released the descriptor on Linux and the BSDs: never retry a
    // close.
    match result {
        0 => Step::Done(0),
        _ => match Errno::from_io_error(&std::io::Error::last_os_error()) {
            Some(Errno::INTR) | None => Step::Done(0),
            Some(errno) => Step::Done(-errno.raw_os_error()),
        },
    }
}

fn accept(fd: BorrowedFd<'_>, stats: &mut Stats) -> Step {
    if let Err(errno) = ensure_nonblocking(fd, stats) {
        return Step::Done(-errno.raw_os_error());
    }
    accept_ready(fd.as_raw_fd(), stats)
}

/// An accept on a listener already known to be in non-blocking mode (no `fcntl`).
pub(crate) fn accept_ready(fd: RawFd, stats: &mut Stats) -> Step {
    let fd = borrow(fd);
    match retry(stats, || accept_nonblocking(fd)) {
        Err(Errno::AGAIN) => Step::Wait(fd.as_raw_fd(), Dir::Read),
        Err(errno) => Step::Done(-errno.raw_os_error()),
        Ok(socket) => Step::Done(socket.into_raw_fd()),
    }
}

/// `accept4(SOCK_CLOEXEC | SOCK_NONBLOCK)`.
#[cfg(not(target_vendor = "apple"))]
fn accept_nonblocking(fd: BorrowedFd<'_>) -> Result<std::os::fd::OwnedFd, Errno> {
    use rustix::net::SocketFlags;
    rustix::net::accept_with(fd, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK)
}

/// macOS has no `accept4`: accept, then set the flags (no other thread of this loop can
/// fork in between, but another thread of the process could; a known macOS limitation).
#[cfg(target_vendor = "apple")]
fn accept_nonblocking(fd: BorrowedFd<'_>) -> Result<std::os::fd::OwnedFd, Errno> {
    let socket = rustix::net::accept(fd)?;
    rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::CLOEXEC)?;
    rustix::io::ioctl_fionbio(&socket, true)?;
    rustix::net::sockopt::set_socket_nosigpipe(&socket, true)?;
    Ok(socket)
}

fn connect(
    fd: BorrowedFd<'_>,
    addr: &std::net::SocketAddr,
    connecting: &mut bool,
    stats: &mut Stats,
) -> Step {
    if !*connecting {
        if let Err(errno) = ensure_nonblocking(fd, stats) {
            return Step::Done(-errno.raw_os_error());
        }
        #[cfg(target_vendor = "apple")]
        if let Err(errno) = rustix::net::sockopt::set_socket_nosigpipe(fd, true) {
            return Step::Done(-errno.raw_os_error());
        }
        stats.syscalls += 1;
        match rustix::net::connect(fd, addr) {
            Ok(()) => return Step::Done(0),
            // EINTR on a non-blocking connect: the connection continues asynchronously.
            Err(Errno::INPROGRESS | Errno::INTR) => {
                *connecting = true;
                return Step::Wait(fd.as_raw_fd(), Dir::Write);
            }
            Err(errno) => return Step::Done(-errno.raw_os_error()),
        }
    }
    match retry(stats, || rustix::net::sockopt::socket_error(fd)) {
        Err(errno) | Ok(Err(errno)) => Step::Done(-errno.raw_os_error()),
        // No error yet: connected, unless the wake-up was spurious and it is still pending.
        Ok(Ok(())) => match retry(stats, || rustix::net::getpeername(fd)) {
            Ok(_) => Step::Done(0),
            Err(Errno::NOTCONN) => Step::Wait(fd.as_raw_fd(), Dir::Write),
            Err(errno) => Step::Done(-errno.raw_os_error()),
        },
    }
}
