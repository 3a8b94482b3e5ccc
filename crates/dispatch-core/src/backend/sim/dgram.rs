//! Message operations on the simulated world: `sendmsg` and `recvmsg` on its stream sockets,
//! scattering and gathering the message's buffers as a vectored send or receive would. The
//! world has no datagram sockets and no descriptor passing yet: a message with a peer
//! address is `EISCONN` (as on a connected TCP socket), one with descriptors `EOPNOTSUPP`.

use super::net::Recv;
use super::world::{Obj, World};
use super::Tried;
use crate::msg::{Msg, MSG_IOV_MAX};
use crate::operation::Args;

/// Performs a `sendmsg` or `recvmsg` on the world, if it can complete now.
pub(super) fn msg_op(world: &mut World, args: &mut Args) -> Tried {
    let (Args::SendMsg { fd, .. } | Args::RecvMsg { fd, .. }) = *args else {
        unreachable!("{} is not a message operation", args.label())
    };
    let Some(Obj::Stream(endpoint)) = world.obj(fd) else {
        let errno = match world.obj(fd) {
            None => -libc::EBADF,
            Some(Obj::File(_)) => -libc::ENOTSOCK,
            Some(_) => -libc::ENOTCONN,
        };
        return Some((errno, 0));
    };
    match args {
        Args::SendMsg { msg, .. } => send(world, endpoint, msg),
        _ => recv(world, endpoint, msg_mut(args)),
    }
}

fn msg_mut(args: &mut Args) -> &mut Msg {
    let Args::RecvMsg { msg, .. } = args else {
        unreachable!("a receive")
    };
    msg
}

fn send(world: &mut World, endpoint: u32, msg: &Msg) -> Tried {
    if msg.peer().is_some() {
        return Some((-libc::EISCONN, 0));
    }
    if !msg.fds().is_empty() {
        return Some((-libc::EOPNOTSUPP, 0));
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

fn recv(world: &mut World, endpoint: u32, msg: &mut Msg) -> Tried {
    msg.prepare_recv();
    let mut lens = [0; MSG_IOV_MAX];
    let mut n_bufs = 0;
    for (len, spare) in lens.iter_mut().zip(msg.spare_lens()) {
        *len = spare;
        n_bufs += 1;
    }
    let total: usize = lens.iter().sum::<usize>().min(i32::MAX as usize);
    let (mut buf_idx, mut at) = (0, 0);
    let got = world.recv(endpoint, total, &mut |mut bytes| {
        while !bytes.is_empty() && buf_idx < n_bufs {
            let spare = &mut msg.spare_mut(buf_idx)[at..];
            let n = spare.len().min(bytes.len());
            for (slot, &byte) in spare[..n].iter_mut().zip(&bytes[..n]) {
                slot.write(byte);
            }
            bytes = &bytes[n..];
            at += n;
            if at == lens[buf_idx] {
                (buf_idx, at) = (buf_idx + 1, 0);
            }
        }
    });
    msg.sim_received();
    match got {
        Recv::Bytes(n) => Some((i32::try_from(n).expect("bounded by the buffers"), 0)),
        Recv::Eof => Some((0, 0)),
        Recv::Wait => None,
        Recv::Error(errno) => Some((errno, 0)),
    }
}
