//! The message operations of `Io`: `sendmsg` and `recvmsg` with a [`Msg`] (vectored
//! buffers, a peer address, descriptors passed with `SCM_RIGHTS`), and the datagram
//! conveniences `send_to` and `recv_from` over them.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::{Callback, Io, MsgCallback};
use crate::msg::Msg;
use crate::operation::{Args, OpId, ScheduleError, Tag};
use crate::slots::Budget;

impl<C> Io<C> {
    /// Sends `msg` on the socket `fd` (`sendmsg(2)`): the bytes of its buffers, in order, as
    /// one message (one datagram on a datagram socket), to [`Msg::peer`] (none: the
    /// connected peer), with the descriptors in [`Msg::fds`] as `SCM_RIGHTS` (they stay open
    /// in the message). The callback gets the count sent and the message back.
    ///
    /// Errors come as the OS reports them: `ECONNREFUSED` on a connected UDP socket whose
    /// peer's port answered an earlier datagram with ICMP, `EAFNOSUPPORT`/`EINVAL` for an
    /// address of the wrong family, `EMSGSIZE` for a datagram too large, `EPIPE` (never
    /// `SIGPIPE`) on a stream whose peer closed.
    ///
    /// # Portability
    /// io_uring: `IORING_OP_SENDMSG` (5.3, which the loop requires anyway). epoll and
    /// kqueue: `sendmsg` tried at once, and again when the socket is writable. The
    /// simulator: on its stream sockets only, without address or descriptors
    /// (`EOPNOTSUPP`).
    ///
    /// # Errors
    /// When every slot is in flight (the message comes back).
    ///
    /// # Examples
    /// See [`Msg`] for a datagram round trip; [`Io::send_to`] sets the peer for you.
    pub fn sendmsg(
        &mut self,
        tag: Tag,
        fd: RawFd,
        msg: Msg,
        callback: MsgCallback<C>,
    ) -> Result<OpId, ScheduleError<Msg>> {
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(msg));
        };
        let args = Args::SendMsg { fd, msg };
        Ok(self.start(idx, tag, args, Callback::Msg(callback)))
    }

    /// Receives one message on the socket `fd` (`recvmsg(2)`) into the spare capacity of
    /// `msg`'s buffers, in order. The callback gets the count received and the message: its
    /// buffers extended over the bytes, [`Msg::peer`] the sender, [`Msg::truncated`] set if
    /// the datagram was longer than the buffers (`MSG_TRUNC`: the rest is lost, and
    /// reported), and, if [`Msg::with_fds`] made room, the descriptors that came as owned
    /// [`Msg::fds`]. Descriptors that did not fit are closed, never leaked, and
    /// [`Msg::control_truncated`] says so; so are those of a receive whose result no
    /// callback sees (the loop dropped with it in flight). Descriptors the message held
    /// before are closed when the receive starts.
    ///
    /// Unlike [`Io::recv`], a message with no spare capacity is allowed: a datagram socket
    /// may carry empty datagrams, or only descriptors. On a stream socket, 0 is end of
    /// stream as usual.
    ///
    /// # Portability
    /// io_uring: `IORING_OP_RECVMSG` (5.3). epoll and kqueue: `recvmsg` tried at once, and
    /// again when the socket is readable; a short datagram never counts as "drained" (the
    /// engine's rule for stream sockets). Received descriptors are close-on-exec where the
    /// OS has `MSG_CMSG_CLOEXEC` (not macOS). The simulator: on its stream sockets only.
    ///
    /// # Errors
    /// When every slot is in flight (the message comes back).
    ///
    /// # Examples
    /// See [`Msg`].
    pub fn recvmsg(
        &mut self,
        tag: Tag,
        fd: RawFd,
        msg: Msg,
        callback: MsgCallback<C>,
    ) -> Result<OpId, ScheduleError<Msg>> {
        let Some(idx) = self.slots.alloc(Budget::Op) else {
            return Err(self.exhausted(msg));
        };
        let args = Args::RecvMsg { fd, msg };
        Ok(self.start(idx, tag, args, Callback::Msg(callback)))
    }

    /// Sends `msg` as one datagram to `peer` ([`Io::sendmsg`] with [`Msg::set_peer`]).
    ///
    /// # Errors
    /// When every slot is in flight (the message comes back).
    ///
    /// # Examples
    /// See [`Msg`].
    pub fn send_to(
        &mut self,
        tag: Tag,
        fd: RawFd,
        mut msg: Msg,
        peer: SocketAddr,
        callback: MsgCallback<C>,
    ) -> Result<OpId, ScheduleError<Msg>> {
        msg.set_peer(Some(peer));
        self.sendmsg(tag, fd, msg, callback)
    }

    /// Receives one datagram and its sender ([`Io::recvmsg`]; the sender is
    /// [`Msg::peer`], the count the callback's).
    ///
    /// # Errors
    /// When every slot is in flight (the message comes back).
    ///
    /// # Examples
    /// See [`Msg`].
    pub fn recv_from(
        &mut self,
        tag: Tag,
        fd: RawFd,
        msg: Msg,
        callback: MsgCallback<C>,
    ) -> Result<OpId, ScheduleError<Msg>> {
        self.recvmsg(tag, fd, msg, callback)
    }
}
