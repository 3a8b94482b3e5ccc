//! UDP serving: a bound datagram socket read by a small fixed set of messages
//! ([`UdpOptions::recvs_max`], each a `dispatch_loop::Msg` made once at [`serve_udp`]), each
//! datagram handed to the program's [`UdpHandler`] with its sender, the reply sent back with
//! `Io::send_to` from the same message, which then receives again. Nothing is allocated
//! per datagram, and nothing the network does panics: truncated datagrams, failed sends
//! (an ICMP port unreachable reported as `ECONNREFUSED`, `EMSGSIZE`, `ENOBUFS`) and failed
//! receives are counted in [`UdpStats`] and serving goes on.
//!
//! Why a reply is a return value ([`Reply`]) rather than a call like TCP's [`crate::send`]:
//! the message the datagram arrived in is the one the reply goes out in and the next
//! receive lands in, so the set of messages stays fixed and none can be lost by a handler
//! that keeps one; a program that must answer later copies what it needs.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_loop::{Io, Msg, OpId, Tag};

/// The tag of the socket's close after a stop; messages use their index.
const CLOSE_TAG: Tag = u64::MAX;

/// Limits of a [`Udp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpOptions {
    /// Messages, each receiving or sending at any time: datagrams taken in per turn at
    /// most, and replies in flight at once.
    pub recvs_max: u32,
    /// The largest datagram handed to the handler, in bytes (each message's buffer): a
    /// longer one is truncated by the kernel (`MSG_TRUNC`), counted in
    /// [`UdpStats::truncated`] and dropped, never handed on cut short.
    pub datagram_size_max: u32,
}

impl UdpOptions {
    /// `recvs_max` messages of `datagram_size_max` bytes.
    pub const fn new(recvs_max: u32, datagram_size_max: u32) -> UdpOptions {
        UdpOptions {
            recvs_max,
            datagram_size_max,
        }
    }

    /// The `Options::ops_max` serving these messages needs (add it to the rest of the
    /// program's, a TCP [`crate::NetOptions::ops_max`] say): one per message, and the
    /// socket's close after a stop.
    pub const fn ops_max(&self) -> u32 {
        self.recvs_max + 1
    }
}

/// What a [`Udp`] did, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpStats {
    /// Datagrams handed to the handler.
    pub received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Replies sent.
    pub sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Datagrams longer than [`UdpOptions::datagram_size_max`]: dropped.
    pub truncated: u64,
    /// Replies that failed (`ECONNREFUSED` after an ICMP port unreachable, `EMSGSIZE`,
    /// `ENOBUFS`, ...): dropped.
    pub send_errors: u64,
    /// Receives that failed; the message receives again, unless the error says the socket
    /// cannot be read at all (`EBADF`, `ENOTSOCK`, `EINVAL`, `EOPNOTSUPP`).
    pub recv_errors: u64,
    /// Receives the loop had no free slot for (the program used more operations than
    /// [`UdpOptions::ops_max`] leaves it): that message stops receiving. Logged once.
    pub slot_shortages: u64,
}

/// What the handler does with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Nothing: the message receives the next datagram.
    Nothing,
    /// Send the message's buffers (as the handler left them) as one datagram to this
    /// address (the sender, for a reply); then it receives again.
    SendTo(SocketAddr),
}

/// A program serving UDP: the loop's context type implements it (beside [`crate::Handler`]
/// if it serves TCP too).
pub trait UdpHandler: Sized + 'static {
    /// This layer's state inside the program's.
    fn udp(&mut self) -> &mut Udp;

    /// A datagram of `msg.bufs()[0].len()` bytes arrived from `from` (never truncated).
    /// Rewrite the message's buffers in place for a reply (a buffer grown past
    /// [`UdpOptions::datagram_size_max`] is replaced before the next receive) and say
    /// where it goes.
    fn on_datagram(&mut self, io: &mut Io<Self>, msg: &mut Msg, from: SocketAddr) -> Reply;
}

/// The UDP server's own state: the socket, its messages, stats.
pub struct Udp {
    socket: Option<OwnedFd>,
    /// Per message: the receive or send it is in.
    ops: Vec<Option<OpId>>,
    /// Per message: whether that operation is a receive (a stop cancels those).
    receiving: Vec<bool>,
    /// Messages not in flight (before serving, after a stop or a shortage).
    spare: Vec<Msg>,
    in_flight: u32,
    stopping: bool,
    closed: bool,
    logged: bool,
    options: UdpOptions,
    stats: UdpStats,
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp")
            .field("socket", &self.socket)
            .field("in_flight", &self.in_flight)
            .field("stopping", &self.stopping)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Udp {
    /// A UDP server with no socket yet; see [`serve_udp`]. Its messages are made there.
    ///
    /// # Panics
    /// When `options.recvs_max` or `options.datagram_size_max` is 0.
    pub fn new(options: &UdpOptions) -> Udp {
        assert!(options.recvs_max > 0, "a UDP server receives");
        assert!(options.datagram_size_max > 0, "a UDP server takes bytes");
        Udp {
            socket: None,
            ops: Vec::new(),
            receiving: Vec::new(),
            spare: Vec::new(),
            in_flight: 0,
            stopping: false,
            closed: false,
            logged: false,
            options: *options,
            stats: UdpStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// Whether [`stop_udp`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Whether a stopped server is done: every message back, the socket closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn fd(&self) -> i32 {
        self.socket.as_ref().expect("a served socket").as_raw_fd()
    }

    fn log_once(&mut self, what: &str, error: &io::Error) {
        if !self.logged {
            self.logged = true;
            eprintln!("dispatch-net: udp: {what}: {error} (counted in UdpStats; logged once)");
        }
    }
}

/// Starts serving datagrams on `socket` (a `std::net::UdpSocket` from [`crate::bind_udp`],
/// or a simulated one from `Sim::udp_bind`) on `io`, until [`stop_udp`].
///
/// # Errors
/// `AlreadyExists` when this `Udp` was served before; `InvalidInput`, naming the option,
/// when the loop has fewer slots than [`UdpOptions::ops_max`]. No free slot for the
/// receives is not an error: it is counted in [`UdpStats::slot_shortages`].
pub fn serve_udp<H: UdpHandler>(
    ctx: &mut H,
    io: &mut Io<H>,
    socket: impl Into<OwnedFd>,
) -> io::Result<()> {
    let udp = ctx.udp();
    if udp.socket.is_some() || udp.stopping {
        let message = "serve_udp was called before on this Udp: a Udp serves one socket";
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, message));
    }
    let needed = udp.options.ops_max();
    if io.ops_max() < needed {
        let message = format!(
            "serving UDP with {} messages needs Options::ops_max of at least {needed} \
             (UdpOptions::ops_max()), and the loop has {}",
            udp.options.recvs_max,
            io.ops_max()
        );
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    udp.socket = Some(socket.into());
    let n = udp.options.recvs_max as usize;
    udp.ops = vec![None; n];
    udp.receiving = vec![false; n];
    let size = udp.options.datagram_size_max as usize;
    for idx in 0..n {
        let msg = Msg::new(Vec::with_capacity(size));
        arm_recv(ctx, io, idx, msg);
    }
    Ok(())
}

/// Stops serving: the receives are cancelled, replies in flight finish, then the socket is
/// closed ([`Udp::is_closed`]). Nothing happens if it was stopped already.
pub fn stop_udp<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>) {
    let udp = ctx.udp();
    if udp.stopping {
        return;
    }
    udp.stopping = true;
    for idx in 0..udp.ops.len() {
        if let (Some(op), true) = (udp.ops[idx], udp.receiving[idx]) {
            // No cancel slot: the receive ends with its datagram, or with the loop.
            let _ = io.cancel(idx as Tag, op, |_, _, _, _| {});
        }
    }
    close_if_done(ctx, io);
}

/// Readies `msg`'s one buffer for a datagram and receives into it; without a free slot,
/// counts a shortage and keeps the message aside.
fn arm_recv<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>, idx: usize, mut msg: Msg) {
    let udp = ctx.udp();
    assert!(udp.ops[idx].is_none(), "one operation per message");
    let size = udp.options.datagram_size_max as usize;
    let bufs = msg.bufs_mut();
    bufs.truncate(1);
    if bufs.is_empty() || bufs[0].capacity() != size {
        // The handler replaced or grew the buffer: a receive takes `size` bytes, no more.
        bufs.clear();
        bufs.push(Vec::with_capacity(size));
    }
    bufs[0].clear();
    match io.recv_from(idx as Tag, udp.fd(), msg, on_recv::<H>) {
        Ok(op) => {
            udp.ops[idx] = Some(op);
            udp.receiving[idx] = true;
            udp.in_flight += 1;
        }
        Err(error) => {
            udp.stats.slot_shortages += 1;
            udp.spare.push(error.value);
            let error = io::Error::other(error.kind.to_string());
            udp.log_once(
                "no free operation slot for a receive; raise Options::ops_max",
                &error,
            );
        }
    }
}

/// One message's operation ended: not in flight any more.
fn landed(udp: &mut Udp, idx: usize) {
    assert!(udp.ops[idx].is_some(), "a message's operation ends once");
    assert!(udp.in_flight > 0);
    udp.ops[idx] = None;
    udp.in_flight -= 1;
}

fn on_recv<H: UdpHandler>(
    ctx: &mut H,
    io: &mut Io<H>,
    tag: Tag,
    (result, mut msg): (io::Result<usize>, Msg),
) {
    let idx = tag as usize;
    let udp = ctx.udp();
    landed(udp, idx);
    if udp.stopping {
        udp.spare.push(msg);
        return close_if_done(ctx, io);
    }
    match result {
        Ok(_) if msg.truncated() => udp.stats.truncated += 1,
        Ok(n) => match msg.peer() {
            Some(from) => {
                udp.stats.received += 1;
                udp.stats.bytes_received += n as u64;
                let reply = ctx.on_datagram(io, &mut msg, from);
                return after_handler(ctx, io, idx, msg, reply);
            }
            // Not an IP sender (a socket of another family): nothing to answer.
            None => udp.stats.recv_errors += 1,
        },
        Err(error) => {
            udp.stats.recv_errors += 1;
            udp.log_once("receive", &error);
            let fatal = [libc::EBADF, libc::ENOTSOCK, libc::EINVAL, libc::EOPNOTSUPP];
            if error
                .raw_os_error()
                .is_some_and(|errno| fatal.contains(&errno))
            {
                // The socket cannot be read: this message stops, rather than spin.
                udp.spare.push(msg);
                return;
            }
        }
    }
    arm_recv(ctx, io, idx, msg);
}

/// Sends the handler's reply, or receives again; a stop from the handler keeps the message.
fn after_handler<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>, idx: usize, msg: Msg, reply: Reply) {
    let udp = ctx.udp();
    if udp.stopping {
        udp.spare.push(msg);
        return close_if_done(ctx, io);
    }
    let Reply::SendTo(to) = reply else {
        return arm_recv(ctx, io, idx, msg);
    };
    match io.send_to(idx as Tag, udp.fd(), msg, to, on_sent::<H>) {
        Ok(op) => {
            udp.ops[idx] = Some(op);
            udp.receiving[idx] = false;
            udp.in_flight += 1;
        }
        // The receive this message came from freed a slot a moment ago; the handler's
        // own operations took it: the reply is dropped, and the message receives again.
        Err(error) => {
            udp.stats.slot_shortages += 1;
            arm_recv(ctx, io, idx, error.value);
        }
    }
}

fn on_sent<H: UdpHandler>(
    ctx: &mut H,
    io: &mut Io<H>,
    tag: Tag,
    (result, msg): (io::Result<usize>, Msg),
) {
    let idx = tag as usize;
    let udp = ctx.udp();
    landed(udp, idx);
    match result {
        Ok(n) => {
            udp.stats.sent += 1;
            udp.stats.bytes_sent += n as u64;
        }
        Err(error) => {
            udp.stats.send_errors += 1;
            udp.log_once("send", &error);
        }
    }
    if udp.stopping {
        udp.spare.push(msg);
        return close_if_done(ctx, io);
    }
    arm_recv(ctx, io, idx, msg);
}

/// After a stop, once every message is back: closes the socket through the loop (so that
/// on the simulator its simulated socket closes too), or at once without a free slot.
fn close_if_done<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>) {
    let udp = ctx.udp();
    if !udp.stopping || udp.in_flight > 0 {
        return;
    }
    let Some(socket) = udp.socket.take() else {
        // Never served, or closed already.
        udp.closed = udp.ops.is_empty() || udp.closed;
        return;
    };
    let closed = io.close(CLOSE_TAG, socket, |ctx: &mut H, _, _, _| {
        ctx.udp().closed = true
    });
    if let Err(error) = closed {
        drop(error.value);
        udp.closed = true;
    }
}
