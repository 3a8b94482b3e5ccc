//! Socket operations on the simulated world: accept, connect, receives (plain and pooled),
//! sends (plain, pooled, vectored), shutdown and close, each performed at once or left
//! waiting (`None`), as a readiness backend would find it.
// Two unsafe blocks: a pooled receive writes into the pool buffer it was lent, and a close
// releases the real descriptor standing for the simulated object, which the operation owns.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use super::net::{self, Recv};
use super::udp::Got;
use super::world::{Obj, World};
use super::Tried;
use crate::completion::buffer_flags;
use crate::datagram;
use crate::operation::Args;
use crate::outbuf::{OutBuf, GATHER_MAX};
use crate::pool::Pool;

/// Performs one socket operation (accept, connect, receives, sends, shutdown, close) on the
/// world, if it can complete now.
pub(super) fn socket_op(world: &mut World, args: &mut Args, pool: Option<&mut Pool>) -> Tried {
    if let Some(tried) = super::unix::socket_op(world, args) {
        return tried;
    }
    let done = |result: i32| Some((result, 0));
    match args {
        Args::Accept { fd, .. } => accept(world, *fd),
        Args::Connect { fd, addr } => connect(world, *fd, *addr),
        Args::Recv { fd, buf } => {
            let Some(endpoint) = stream(world, *fd) else {
                return done(bad(world, *fd));
            };
            let spare = buf.spare_capacity_mut();
            let mut at = 0;
            let got = world.recv(endpoint, spare.len(), &mut |bytes| {
                for (slot, &byte) in spare[at..].iter_mut().zip(bytes) {
                    slot.write(byte);
                }
                at += bytes.len();
            });
            recv_result(got)
        }
        Args::RecvPooled { fd, datagram, .. } => {
            let pool = pool.expect("a pooled receive has a pool");
            if *datagram {
                return recv_datagram(world, *fd, pool);
            }
            recv_pooled(world, *fd, pool)
        }
        Args::Send { fd, buf } => send(world, *fd, buf),
        Args::SendPooled { fd, buf } => send(world, *fd, buf),
        Args::SendVectored { fd, bufs } => send_vectored(world, *fd, bufs),
        Args::Shutdown { fd, how } => match stream(world, *fd) {
            Some(endpoint) => done(world.shutdown(endpoint, *how)),
            None => done(bad(world, *fd)),
        },
        Args::Close { fd } => done(close(world, fd.as_raw_fd())),
        _ => unreachable!("{} is no socket operation", args.label()),
    }
}

/// The descriptor and direction (`true`: write) an operation waits on, if any.
pub(super) fn direction(args: &Args) -> Option<(RawFd, bool)> {
    match *args {
        Args::Accept { fd, .. } | Args::Recv { fd, .. } | Args::RecvPooled { fd, .. } => {
            Some((fd, false))
        }
        Args::RecvMsg { fd, .. } => Some((fd, false)),
        Args::SendMsg { fd, .. } => Some((fd, true)),
        Args::Connect { fd, .. }
        | Args::Send { fd, .. }
        | Args::SendPooled { fd, .. }
        | Args::SendVectored { fd, .. } => Some((fd, true)),
        _ => None,
    }
}

/// `-errno` for an operation on `fd` that is not what the operation needs.
pub(super) fn bad(world: &World, fd: RawFd) -> i32 {
    match world.obj(fd) {
        None => -libc::EBADF,
        Some(Obj::Dead) => -libc::EIO,
        Some(Obj::Unbound(_)) => -libc::ENOTCONN,
        Some(Obj::File(_)) => -libc::ENOTSOCK,
        Some(Obj::Stream(_) | Obj::Listener(_) | Obj::Datagram(_) | Obj::UnixDgram(_)) => {
            -libc::EINVAL
        }
    }
}

/// The connection `fd` names, if it names one (otherwise answer with `bad`).
fn stream(world: &World, fd: RawFd) -> Option<u32> {
    match world.obj(fd) {
        Some(Obj::Stream(endpoint)) => Some(endpoint),
        _ => None,
    }
}

fn recv_result(got: Recv) -> Tried {
    match got {
        Recv::Bytes(n) => Some((i32::try_from(n).expect("bounded by the buffer"), 0)),
        Recv::Eof => Some((0, 0)),
        Recv::Wait => None,
        Recv::Error(errno) => Some((errno, 0)),
    }
}

fn accept(world: &mut World, fd: RawFd) -> Tried {
    let Some(Obj::Listener(listener)) = world.obj(fd) else {
        return Some((bad(world, fd), 0));
    };
    if !world.can_accept(listener) {
        return None;
    }
    if world.accept_fault() {
        return Some((-libc::EMFILE, 0));
    }
    // Out of descriptors: the connection stays in the backlog for a later accept.
    let placeholder = world.unbound();
    match world.new_fd(placeholder) {
        Ok(socket) => {
            let endpoint = world.accept(listener).expect("checked");
            world.fds.insert(socket.as_raw_fd(), Obj::Stream(endpoint));
            Some((socket.into_raw_fd(), 0))
        }
        Err(errno) => Some((-errno, 0)),
    }
}

fn connect(world: &mut World, fd: RawFd, addr: std::net::SocketAddr) -> Tried {
    match world.obj(fd) {
        Some(Obj::Unbound(_)) => {
            let endpoint = world.connect(addr);
            world.fds.insert(fd, Obj::Stream(endpoint));
            None
        }
        Some(Obj::Stream(endpoint)) => match world.endpoint(endpoint).state {
            net::State::Connecting => None,
            net::State::Established => Some((0, 0)),
            net::State::Refused => Some((-libc::ECONNREFUSED, 0)),
        },
        _ => Some((bad(world, fd), 0)),
    }
}

fn recv_pooled(world: &mut World, fd: RawFd, pool: &mut Pool) -> Tried {
    let Some(endpoint) = stream(world, fd) else {
        return Some((bad(world, fd), 0));
    };
    if !world.has_bytes(endpoint) {
        // Nothing to receive: the end of the stream, an error, or a wait, without a buffer.
        return recv_result(world.recv(endpoint, 0, &mut |_| {}));
    }
    let Some(bid) = pool.take_free() else {
        return Some((-libc::ENOBUFS, 0));
    };
    let len = pool.buffer_size() as usize;
    // SAFETY: buffer `bid` was free: nobody else reads or writes it until it is lent out
    // with this completion or put back below; it holds `buffer_size` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(pool.buffer_ptr(bid), len) };
    let mut at = 0;
    let got = world.recv(endpoint, len, &mut |bytes| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    });
    match got {
        Recv::Bytes(n) => Some((
            i32::try_from(n).expect("a buffer's size"),
            buffer_flags(bid),
        )),
        other => {
            pool.put_free(bid);
            recv_result(other)
        }
    }
}

/// A datagram into a pool buffer, in `datagram.rs`'s layout (as io_uring's multishot
/// `RECVMSG` writes it), from one of the world's datagram sockets.
fn recv_datagram(world: &mut World, fd: RawFd, pool: &mut Pool) -> Tried {
    let Some(Obj::Datagram(id)) = world.obj(fd) else {
        return Some((bad(world, fd), 0));
    };
    if !world.udp_readable(id) {
        return None;
    }
    let Some(bid) = pool.take_free() else {
        return Some((-libc::ENOBUFS, 0));
    };
    let size = pool.buffer_size() as usize;
    // SAFETY: buffer `bid` was free: nobody else reads or writes it until it is lent out
    // with this completion; it holds `size` bytes.
    let buf = unsafe { std::slice::from_raw_parts_mut(pool.buffer_ptr(bid), size) };
    let (head, payload) = buf.split_at_mut(datagram::PAYLOAD_AT);
    let got = world.udp_recv(id, payload.len(), &mut |bytes| {
        payload[..bytes.len()].copy_from_slice(bytes);
    });
    let Got::Datagram(kept, whole, from) = got else {
        unreachable!("a datagram was due");
    };
    let namelen = datagram::write_name(&mut head[datagram::HEADER_LEN..], from);
    let header = datagram::Header {
        namelen,
        payloadlen: u32::try_from(whole).expect("below 64 KiB"),
        flags: if kept < whole {
            libc::MSG_TRUNC as u32
        } else {
            0
        },
    };
    header.write(head);
    Some((datagram::buffer_result(kept, size), buffer_flags(bid)))
}

fn send(world: &mut World, fd: RawFd, bytes: &[u8]) -> Tried {
    let Some(endpoint) = stream(world, fd) else {
        return Some((bad(world, fd), 0));
    };
    let bytes = &bytes[..bytes.len().min(i32::MAX as usize)];
    match world.send(endpoint, bytes) {
        Ok(Some(n)) => Some((i32::try_from(n).expect("bounded above"), 0)),
        Ok(None) => None,
        Err(errno) => Some((errno, 0)),
    }
}

/// A vectored send: the buffers in order, as one send would take them (up to the first that
/// the connection takes only in part, or not at all).
fn send_vectored(world: &mut World, fd: RawFd, bufs: &[OutBuf]) -> Tried {
    let Some(endpoint) = stream(world, fd) else {
        return Some((bad(world, fd), 0));
    };
    let mut sent = 0;
    for buf in bufs.iter().take(GATHER_MAX).filter(|buf| !buf.is_empty()) {
        let bytes = &buf[..buf.len().min(i32::MAX as usize - sent)];
        match world.send(endpoint, bytes) {
            Ok(Some(n)) => {
                sent += n;
                if n < bytes.len() {
                    break;
                }
            }
            // Nothing taken: the send waits, or fails, only if nothing went out before.
            Ok(None) if sent == 0 => return None,
            Err(errno) if sent == 0 => return Some((errno, 0)),
            Ok(None) | Err(_) => break,
        }
    }
    Some((i32::try_from(sent).expect("bounded above"), 0))
}

/// A close: the simulated object goes, then the real descriptor standing for it.
fn close(world: &mut World, fd: RawFd) -> i32 {
    world.close_fd(fd);
    // SAFETY: the operation owns this descriptor (it was an `OwnedFd`); the completion
    // forgets the `OwnedFd` without closing it again, as on every backend.
    unsafe { libc::close(fd) };
    0
}
