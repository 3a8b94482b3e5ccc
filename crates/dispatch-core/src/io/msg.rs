//! The message operations of `Io`: `sendmsg` and `recvmsg` with a [`Msg`] (vectored
//! buffers, a peer address, descriptors passed with `SCM_RIGHTS`), and the datagram
//! conveniences `send_to` and `recv_from` over them; `recv_from_multishot`, datagrams
//! received into pool buffers until cancelled.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::{Callback, DatagramCallback, Io, MsgCallback};
use crate::msg::{Msg, MSG_FDS_MAX};
use crate::operation::{Args, OpId, ScheduleError, Tag};

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
    /// simulator (with the `sim` feature): on its datagram sockets (`Sim::udp_bind`: one
    /// datagram to the address, never waiting; no descriptors, `EOPNOTSUPP`), on its Unix
    /// pairs (`Sim::unix_pair`: descriptors passed, no address) and on its other stream
    /// sockets (the bytes only: descriptors are `EOPNOTSUPP`).
    ///
    /// # Errors
    /// When every slot is in flight (the message comes back).
    ///
    /// # Panics
    /// If the message holds more than [`crate::MSG_FDS_MAX`] descriptors.
    ///
    /// # Examples
    /// Two buffers as one datagram on a connected UDP socket:
    /// ```
    /// use std::net::UdpSocket;
    /// use std::os::fd::AsRawFd;
    /// use dispatch_loop::{Io, Msg, Options};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let (a, b) = (UdpSocket::bind("127.0.0.1:0")?, UdpSocket::bind("127.0.0.1:0")?);
    /// a.connect(b.local_addr()?)?;
    /// let mut io: Io<()> = Io::new(&Options::new(4)).unwrap();
    /// let msg = Msg::vectored(vec![b"head ".to_vec(), b"body".to_vec()]);
    /// io.sendmsg(0, a.as_raw_fd(), msg, |_, _, _, (sent, _msg)| {
    ///     assert_eq!(sent.unwrap(), 9);
    /// })
    /// .unwrap();
    /// io.run_until_idle(&mut ())?;
    /// let mut datagram = [0; 16];
    /// let n = b.recv(&mut datagram)?;
    /// assert_eq!(&datagram[..n], b"head body");
    /// # Ok(())
    /// # }
    /// ```
    pub fn sendmsg(
        &mut self,
        tag: Tag,
        fd: RawFd,
        msg: Msg,
        callback: MsgCallback<C>,
    ) -> Result<OpId, ScheduleError<Msg>> {
        let fds = msg.fds().len();
        assert!(fds <= MSG_FDS_MAX, "{fds} descriptors in one message");
        let args = |msg| Args::SendMsg { fd, msg };
        self.schedule_owned(tag, msg, args, Callback::Msg(callback))
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
    /// OS has `MSG_CMSG_CLOEXEC` (not macOS). The simulator: on its datagram sockets
    /// (`Sim::udp_bind`, with the sender), on its Unix pairs (with the descriptors passed;
    /// no sender) and on its other stream sockets.
    ///
    /// # Errors
    /// When every slot is in flight (the message comes back).
    ///
    /// # Examples
    /// A descriptor passed over a Unix datagram socket (`SCM_RIGHTS`):
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::{UnixDatagram, UnixStream};
    /// use dispatch_loop::{Io, Msg, Options};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let (a, b) = UnixDatagram::pair()?;
    /// let (mut kept, passed) = UnixStream::pair()?;
    /// let mut out = Msg::new(b"fd".to_vec()).with_fds(1);
    /// out.fds_mut().push(passed.into());
    /// let mut io: Io<Option<Msg>> = Io::new(&Options::new(4)).unwrap();
    /// io.sendmsg(0, a.as_raw_fd(), out, |_, _, _, (sent, _)| assert_eq!(sent.unwrap(), 2))
    ///     .unwrap();
    /// let room = Msg::new(Vec::with_capacity(8)).with_fds(1);
    /// io.recvmsg(1, b.as_raw_fd(), room, |got, _, _, (n, msg)| {
    ///     assert_eq!(n.unwrap(), 2);
    ///     *got = Some(msg);
    /// })
    /// .unwrap();
    /// let mut got = None;
    /// io.run_until_idle(&mut got)?;
    /// let mut msg = got.unwrap();
    /// assert!(!msg.control_truncated());
    /// let mut stream = UnixStream::from(msg.fds_mut().pop().expect("the descriptor"));
    /// stream.write_all(b"hi")?;
    /// let mut hi = [0; 2];
    /// kept.read_exact(&mut hi)?;
    /// assert_eq!(&hi, b"hi");
    /// # Ok(())
    /// # }
    /// ```
    pub fn recvmsg(
        &mut self,
        tag: Tag,
        fd: RawFd,
        msg: Msg,
        callback: MsgCallback<C>,
    ) -> Result<OpId, ScheduleError<Msg>> {
        let args = |msg| Args::RecvMsg { fd, msg };
        self.schedule_owned(tag, msg, args, Callback::Msg(callback))
    }

    /// Sends `msg` as one datagram to `peer` ([`Io::sendmsg`] with [`Msg::set_peer`]).
    ///
    /// # Errors
    /// When every slot is in flight (the message comes back).
    ///
    /// # Panics
    /// As [`Io::sendmsg`].
    ///
    /// # Examples
    /// A UDP echo round trip: the echo socket sends what it received back to its sender.
    /// ```
    /// use std::io;
    /// use std::net::UdpSocket;
    /// use std::os::fd::AsRawFd;
    /// use dispatch_loop::{Io, Msg, Options, Tag};
    ///
    /// fn echo(fd: &mut i32, io: &mut Io<i32>, _: Tag, (n, msg): (io::Result<usize>, Msg)) {
    ///     n.unwrap();
    ///     let sender = msg.peer().unwrap();
    ///     io.send_to(0, *fd, msg, sender, |_, _, _, (sent, _)| assert_eq!(sent.unwrap(), 4))
    ///         .unwrap();
    /// }
    ///
    /// # fn main() -> io::Result<()> {
    /// let (client, server) = (UdpSocket::bind("127.0.0.1:0")?, UdpSocket::bind("127.0.0.1:0")?);
    /// let mut io: Io<i32> = Io::new(&Options::new(4)).unwrap();
    /// let mut fd = server.as_raw_fd();
    /// io.recv_from(0, fd, Msg::new(Vec::with_capacity(64)), echo).unwrap();
    /// client.send_to(b"ping", server.local_addr()?)?;
    /// io.run_until_idle(&mut fd)?;
    /// let mut reply = [0; 8];
    /// let (n, from) = client.recv_from(&mut reply)?;
    /// assert_eq!((&reply[..n], from), (&b"ping"[..], server.local_addr()?));
    /// # Ok(())
    /// # }
    /// ```
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
    /// ```
    /// use std::net::UdpSocket;
    /// use std::os::fd::AsRawFd;
    /// use dispatch_loop::{Io, Msg, Options};
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let (a, b) = (UdpSocket::bind("127.0.0.1:0")?, UdpSocket::bind("127.0.0.1:0")?);
    /// a.send_to(b"0123456789", b.local_addr()?)?;
    /// let mut io: Io<Option<Msg>> = Io::new(&Options::new(4)).unwrap();
    /// let small = Msg::new(Vec::with_capacity(4));
    /// io.recv_from(0, b.as_raw_fd(), small, |got, _, _, (n, msg)| {
    ///     assert_eq!(n.unwrap(), 4);
    ///     *got = Some(msg);
    /// })
    /// .unwrap();
    /// let mut got = None;
    /// io.run_until_idle(&mut got)?;
    /// let msg = got.unwrap();
    /// assert_eq!(msg.bufs()[0], b"0123");
    /// assert!(msg.truncated(), "the other 6 bytes are lost, and said to be");
    /// assert_eq!(msg.peer(), Some(a.local_addr()?));
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_from(
        &mut self,
        tag: Tag,
        fd: RawFd,
        msg: Msg,
        callback: MsgCallback<C>,
    ) -> Result<OpId, ScheduleError<Msg>> {
        self.recvmsg(tag, fd, msg, callback)
    }

    /// Receives datagrams on the socket `fd` into buffers of the loop's pool
    /// (`Options::pool`) until an error or a cancel: one submission, one callback per
    /// datagram with [`crate::Shot::more`] `true`, then exactly one final callback
    /// (`more == false`) carrying the error, `ECANCELED` (`ETIMEDOUT` for a deadline,
    /// [`Io::set_deadline`]), or, when a cancel or deadline met a datagram on its way, that
    /// datagram.
    ///
    /// Each [`crate::Datagram`] holds the payload as a [`crate::PoolBuf`] (back in the pool
    /// when dropped), the sender (`peer`: an IP address; `None` on a Unix socket) and
    /// whether the datagram was `truncated`: one longer than a buffer's room (the pool's
    /// buffer size less 44 bytes, where the kernel puts a header and the sender) is cut,
    /// and said to be, with its true length (`len`) where the OS reports it. An empty
    /// datagram is a callback with an empty buffer, not an end: datagram sockets have none.
    /// So it is for datagram sockets only (UDP, Unix `SOCK_DGRAM`): on a stream socket the
    /// real backends would hand its end of stream over as empty datagrams, turn after turn,
    /// until cancelled ([`Io::recv_multishot`] is the stream's receive; the simulator
    /// answers `EINVAL`).
    /// As for [`Io::recv_multishot`], a buffer is picked when a datagram arrives, and an
    /// empty pool makes the receive wait (`Stats::pool_waits`), not fail: the datagrams wait
    /// in the socket meanwhile.
    ///
    /// # Portability
    /// io_uring: `IORING_OP_RECVMSG` with `IORING_RECV_MULTISHOT` on the provided-buffer ring
    /// (6.0; not masked by `UringOptions::multishot` or `pbuf_ring`), one SQE for as many
    /// datagrams as the pool holds; the kernel ends it when the pool runs dry (the loop
    /// waits for buffers and re-arms it) or after an empty datagram (re-armed). epoll and
    /// kqueue: `recvmsg` tried at once and after each readiness, taking a burst like the
    /// kernel's multishot (up to 32 datagrams a try, while buffers last), then parking on
    /// `EAGAIN` (a datagram never says the socket is drained). Elsewhere the loop re-arms a
    /// single-shot receive after each datagram, for the next turn: on io_uring without the
    /// kernel's multishot a `RECVMSG` (from the ring, its payload then moved behind the
    /// header; or, without a ring, into a buffer picked at once, polling first when nothing
    /// waits), on the simulator its datagram sockets (`Sim::udp_bind`, with the `sim`
    /// feature), with their loss, duplication and reorder faults (its Unix pairs take no
    /// pooled receive: the final callback is `EINVAL`). An empty datagram taken from the
    /// ring without the kernel's multishot comes without its sender when no pool buffer is
    /// outside the ring (the kernel hands back no buffer for 0 bytes).
    ///
    /// # Errors
    /// When every slot is in flight, the loop has no pool (`ScheduleErrorKind::NoPool`), or
    /// its buffers hold 44 bytes or fewer (`ScheduleErrorKind::PoolBuffersTooSmall`).
    ///
    /// # Examples
    /// Datagrams from two senders, each with its sender:
    /// ```
    /// use std::net::{SocketAddr, UdpSocket};
    /// use std::os::fd::AsRawFd;
    /// use dispatch_loop::{Datagram, Io, Options, PoolOptions, Shot, Tag};
    ///
    /// type Got = Vec<(Vec<u8>, Option<SocketAddr>)>;
    ///
    /// fn on_datagram(got: &mut Got, _: &mut Io<Got>, _: Tag, shot: Shot<Datagram>) {
    ///     let datagram = shot.result.expect("a datagram");
    ///     assert!(shot.more && !datagram.truncated);
    ///     got.push((datagram.buf.to_vec(), datagram.peer)); // the buffer goes back on drop
    /// }
    ///
    /// # fn main() -> std::io::Result<()> {
    /// let server = UdpSocket::bind("127.0.0.1:0")?;
    /// let (a, b) = (UdpSocket::bind("127.0.0.1:0")?, UdpSocket::bind("127.0.0.1:0")?);
    /// let mut options = Options::new(8);
    /// options.pool = PoolOptions::new(8, 2048);
    /// let mut io: Io<Got> = Io::new(&options).unwrap();
    /// io.recv_from_multishot(0, server.as_raw_fd(), on_datagram).expect("a free slot");
    /// a.send_to(b"from a", server.local_addr()?)?;
    /// b.send_to(b"from b", server.local_addr()?)?;
    /// let mut got = Got::new();
    /// while got.len() < 2 {
    ///     io.run_for_ns(&mut got, 10_000_000)?;
    /// }
    /// got.sort();
    /// assert_eq!(got[0], (b"from a".to_vec(), Some(a.local_addr()?)));
    /// assert_eq!(got[1], (b"from b".to_vec(), Some(b.local_addr()?)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn recv_from_multishot(
        &mut self,
        tag: Tag,
        fd: RawFd,
        callback: DatagramCallback<C>,
    ) -> Result<OpId, ScheduleError<()>> {
        self.schedule_datagrams(tag, fd, callback)
    }
}
