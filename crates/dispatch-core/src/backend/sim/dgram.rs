//! Message operations on the simulated world: `sendmsg` and `recvmsg` on its datagram
//! sockets (`udp.rs`: each message one datagram, to and from an address) and on its stream
//! sockets (the buffers gathered and scattered as a vectored send or receive would). Unix
//! pairs are `unix.rs`'s, which passes descriptors; here a message with descriptors is
//! `EOPNOTSUPP`; a stream message with a
//! peer address is `EISCONN` (as on a connected TCP socket), a datagram one without
//! `EDESTADDRREQ` (the simulator's datagram sockets are never connected).

use std::net::SocketAddr;

use super::net::Recv;
use super::udp::Got;
use super::world::{Obj, World};
use super::Tried;
use crate::msg::{Msg, MSG_IOV_MAX};
use crate::operation::Args;

/// Performs a `sendmsg` or `recvmsg` on the world, if it can complete now.
pub(super) fn msg_op(world: &mut World, args: &mut Args) -> Tried {
    let (Args::SendMsg { fd, .. } | Args::RecvMsg { fd, .. }) = *args else {
        unreachable!("{} is not a message operation", args.label())
    };
    if let Some(tried) = super::unix::msg_op(world, args) {
        return tried;
    }
    let obj = match world.obj(fd) {
        Some(obj @ (Obj::Stream(_) | Obj::Datagram(_))) => obj,
        None => return Some((-libc::EBADF, 0)),
        Some(Obj::File(_)) => return Some((-libc::ENOTSOCK, 0)),
        Some(Obj::Dead) => return Some((-libc::EIO, 0)),
        Some(_) => return Some((-libc::ENOTCONN, 0)),
    };
    match (args, obj) {
        (Args::SendMsg { msg, .. }, _) if !msg.fds().is_empty() => Some((-libc::EOPNOTSUPP, 0)),
        (Args::SendMsg { msg, .. }, Obj::Stream(endpoint)) => send(world, endpoint, msg),
        (Args::SendMsg { msg, .. }, Obj::Datagram(id)) => send_datagram(world, id, msg),
        (Args::RecvMsg { msg, .. }, Obj::Datagram(id)) => recv_datagram(world, id, msg),
        (Args::RecvMsg { msg, .. }, Obj::Stream(endpoint)) => recv(world, endpoint, msg),
        _ => unreachable!("a message operation on a socket"),
    }
}

pub(super) fn send(world: &mut World, endpoint: u32, msg: &Msg) -> Tried {
    if msg.peer().is_some() {
        return Some((-libc::EISCONN, 0));
    }
    let mut sent = 0;
    for buf in msg.send_bufs().iter().filter(|buf| !buf.is_empty()) {
        let bytes = &buf[..buf.len().min(i32::MAX as usize - sent)];
        match world.send(endpoint, bytes) {
            Ok(Some(n)) => {
                sent += n;
                if n < bytes.len() {
                    break;
                }
            }
            Ok(None) if sent == 0 => return None,
            Err(errno) if sent == 0 => return Some((errno, 0)),
            Ok(None) | Err(_) => break,
        }
    }
    Some((i32::try_from(sent).expect("bounded above"), 0))
}

/// One datagram of every buffer's bytes. A datagram socket never blocks a send.
fn send_datagram(world: &mut World, id: u32, msg: &Msg) -> Tried {
    let Some(to) = msg.peer() else {
        return Some((-libc::EDESTADDRREQ, 0));
    };
    let from = world.udp_addr(id);
    if from.is_ipv4() != to.is_ipv4() {
        return Some((-libc::EAFNOSUPPORT, 0));
    }
    let bytes: Vec<u8> = msg.send_bufs().concat();
    if bytes.len() > 65_507 {
        return Some((-libc::EMSGSIZE, 0));
    }
    world.udp_send(id, to, &bytes);
    Some((i32::try_from(bytes.len()).expect("below 64 KiB"), 0))
}

/// The spare capacities of `msg`'s buffers (as many as a receive fills) and their count.
pub(super) fn spare_lens(msg: &Msg) -> ([usize; MSG_IOV_MAX], usize) {
    let mut lens = [0; MSG_IOV_MAX];
    let mut n_bufs = 0;
    for (len, spare) in lens.iter_mut().zip(msg.spare_lens()) {
        *len = spare;
        n_bufs += 1;
    }
    (lens, n_bufs)
}

/// Copies `bytes` into the spare capacities of `msg`'s buffers, from buffer `*buf_idx` at
/// `*at` on.
pub(super) fn scatter(
    msg: &mut Msg,
    lens: &[usize],
    buf_idx: &mut usize,
    at: &mut usize,
    mut bytes: &[u8],
) {
    while !bytes.is_empty() && *buf_idx < lens.len() {
        let spare = &mut msg.spare_mut(*buf_idx)[*at..];
        let n = spare.len().min(bytes.len());
        for (slot, &byte) in spare[..n].iter_mut().zip(&bytes[..n]) {
            slot.write(byte);
        }
        bytes = &bytes[n..];
        *at += n;
        if *at == lens[*buf_idx] {
            (*buf_idx, *at) = (*buf_idx + 1, 0);
        }
    }
}

fn recv_datagram(world: &mut World, id: u32, msg: &mut Msg) -> Tried {
    msg.prepare_recv();
    let (lens, n_bufs) = spare_lens(msg);
    let total: usize = lens.iter().sum::<usize>().min(i32::MAX as usize);
    let (mut buf_idx, mut at) = (0, 0);
    let got = world.udp_recv(id, total, &mut |bytes| {
        scatter(msg, &lens[..n_bufs], &mut buf_idx, &mut at, bytes);
    });
    match got {
        Got::Datagram(n, whole, from) => {
            msg.sim_received(Some(from), n < whole);
            Some((i32::try_from(n).expect("bounded by the buffers"), 0))
        }
        Got::Wait => None,
    }
}

fn recv(world: &mut World, endpoint: u32, msg: &mut Msg) -> Tried {
    msg.prepare_recv();
    let (lens, n_bufs) = spare_lens(msg);
    let total: usize = lens.iter().sum::<usize>().min(i32::MAX as usize);
    let (mut buf_idx, mut at) = (0, 0);
    let got = world.recv(endpoint, total, &mut |bytes| {
        scatter(msg, &lens[..n_bufs], &mut buf_idx, &mut at, bytes);
    });
    msg.sim_received(None::<SocketAddr>, false);
    match got {
        Recv::Bytes(n) => Some((i32::try_from(n).expect("bounded by the buffers"), 0)),
        Recv::Eof => Some((0, 0)),
        Recv::Wait => None,
        Recv::Error(errno) => Some((errno, 0)),
    }
}
