//! UDP serving: a bound datagram socket read by one multishot receive into the loop's pool
//! (`Io::recv_from_multishot`: on io_uring one submission for many datagrams), each
//! datagram copied into one of a small fixed set of messages ([`UdpOptions::recvs_max`],
//! each a `dispatch_loop::Msg` made once at [`serve_udp`]) and handed to the program's
//! [`UdpHandler`] with its sender, the reply sent back with `Io::send_to` from that message.
//! Nothing is allocated per datagram, and nothing the network does panics: truncated
//! datagrams, failed sends (an ICMP port unreachable reported as `ECONNREFUSED`,
//! `EMSGSIZE`, `ENOBUFS`) and failed receives are counted in [`UdpStats`] and serving goes
//! on.
//!
//! Why a reply is a return value ([`Reply`]) rather than a call like TCP's [`crate::send`]:
//! the message the handler rewrites is the one the reply goes out in, so the set of
//! messages stays fixed and none can be lost by a handler that keeps one; a program that
//! must answer later copies what it needs. Why a copy into a message rather than the pool
//! buffer itself: the handler may grow the reply, and `send_to` sends a `Msg`; a datagram
//! is small, and the copy costs less than the submission per datagram it replaces. While
//! every message is out (replies in flight), datagrams wait in their pool buffers, in
//! order, and the receive waits for buffers once the pool is dry: backpressure, not loss.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_loop::{Datagram, Io, Msg, OpId, PoolBuf, Shot, Tag, DATAGRAM_HEADROOM};

/// The tag of the socket's close after a stop.
const CLOSE_TAG: Tag = u64::MAX;
/// The tag of the receive, and of its cancel.
const RECV_TAG: Tag = 0;
/// The tag of a reply.
const SEND_TAG: Tag = 1;

/// Limits of a [`Udp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpOptions {
    /// Messages: replies in flight at once. (The name is older than the multishot receive,
    /// when each message received too.)
    pub recvs_max: u32,
    /// The largest datagram handed to the handler, in bytes (each message's buffer): a
    /// longer one is counted in [`UdpStats::truncated`] and dropped, never handed on cut
    /// short. The loop's pool buffers must hold it and the receive's headroom
    /// ([`UdpOptions::pool_buffer_size`]).
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
    /// program's, a TCP [`crate::NetOptions::ops_max`] say): one per message, the receive,
    /// and the socket's close after a stop.
    pub const fn ops_max(&self) -> u32 {
        self.recvs_max + 2
    }

    /// The smallest `Options::pool.buffer_size` that receives datagrams of
    /// `datagram_size_max` bytes whole: that plus `dispatch_loop::DATAGRAM_HEADROOM`.
    pub const fn pool_buffer_size(&self) -> u32 {
        self.datagram_size_max + DATAGRAM_HEADROOM
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
    /// Receives that failed, and datagrams from a sender that is not an IP address; the
    /// receive starts again, unless the error says the socket cannot be read at all
    /// (`EBADF`, `ENOTSOCK`, `EINVAL`, `EOPNOTSUPP`).
    pub recv_errors: u64,
    /// Operations the loop had no free slot for (the program used more operations than
    /// [`UdpOptions::ops_max`] leaves it): a receive that could not start (serving stops
    /// receiving), or a reply (dropped). Logged once.
    pub slot_shortages: u64,
    /// Datagrams that waited in their pool buffers for a message to come back (every
    /// message was out with a reply).
    pub waited: u64,
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
    /// [`UdpOptions::datagram_size_max`] is replaced before the next datagram) and say
    /// where it goes.
    fn on_datagram(&mut self, io: &mut Io<Self>, msg: &mut Msg, from: SocketAddr) -> Reply;
}

/// The UDP server's own state: the socket, its receive, its messages, stats.
pub struct Udp {
    socket: Option<OwnedFd>,
    /// The multishot receive, while it runs.
    receive: Option<OpId>,
    /// Messages not in flight: the next datagram's.
    spare: Vec<Msg>,
    /// Datagrams waiting for a message, oldest first, with their senders: at most one per
    /// pool buffer, the room reserved at [`serve_udp`].
    waiting: VecDeque<(PoolBuf, SocketAddr)>,
    /// The receive (while it runs) and the replies in flight.
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
            receive: None,
            spare: Vec::new(),
            waiting: VecDeque::new(),
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
/// when the loop has fewer slots than [`UdpOptions::ops_max`], or no pool, or pool buffers
/// smaller than [`UdpOptions::pool_buffer_size`]. No free slot for the receive is not an
/// error: it is counted in [`UdpStats::slot_shortages`].
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
    check_loop(&udp.options, io)?;
    udp.socket = Some(socket.into());
    let n = udp.options.recvs_max as usize;
    let size = udp.options.datagram_size_max as usize;
    udp.spare = (0..n).map(|_| Msg::new(Vec::with_capacity(size))).collect();
    udp.waiting = VecDeque::with_capacity(io.pool_buffers() as usize);
    arm_receive(ctx, io);
    Ok(())
}

/// The loop has the slots and the pool serving `options` needs.
fn check_loop<H>(options: &UdpOptions, io: &Io<H>) -> io::Result<()> {
    let needed = options.ops_max();
    let message = if io.ops_max() < needed {
        format!(
            "serving UDP with {} messages needs Options::ops_max of at least {needed} \
             (UdpOptions::ops_max()), and the loop has {}",
            options.recvs_max,
            io.ops_max()
        )
    } else if io.pool_buffer_size() < options.pool_buffer_size() {
        format!(
            "serving UDP datagrams of {} bytes needs a pool (Options::pool) of buffers of at \
             least {} bytes (UdpOptions::pool_buffer_size()), and the loop has {} buffers of {}",
            options.datagram_size_max,
            options.pool_buffer_size(),
            io.pool_buffers(),
            io.pool_buffer_size()
        )
    } else {
        return Ok(());
    };
    Err(io::Error::new(io::ErrorKind::InvalidInput, message))
}

/// Stops serving: the receive is cancelled, datagrams waiting for a message are dropped,
/// replies in flight finish, then the socket is closed ([`Udp::is_closed`]). Nothing
/// happens if it was stopped already.
pub fn stop_udp<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>) {
    let udp = ctx.udp();
    if udp.stopping {
        return;
    }
    udp.stopping = true;
    udp.waiting.clear();
    if let Some(op) = udp.receive {
        // No cancel slot: the receive ends with the loop.
        let _ = io.cancel(RECV_TAG, op, |_, _, _, _| {});
    }
    close_if_done(ctx, io);
}

/// Starts the multishot receive; without a free slot, counts a shortage (serving then
/// receives nothing more).
fn arm_receive<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>) {
    let udp = ctx.udp();
    assert!(udp.receive.is_none(), "one receive at a time");
    assert!(!udp.stopping, "no receive after a stop");
    match io.recv_from_multishot(RECV_TAG, udp.fd(), on_receive::<H>) {
        Ok(op) => {
            udp.receive = Some(op);
            udp.in_flight += 1;
        }
        Err(error) => {
            udp.stats.slot_shortages += 1;
            let error = io::Error::other(error.kind.to_string());
            udp.log_once(
                "no free operation slot for the receive; raise Options::ops_max",
                &error,
            );
        }
    }
}

/// One operation ended: not in flight any more.
fn landed(udp: &mut Udp) {
    assert!(udp.in_flight > 0, "an operation ends once");
    udp.in_flight -= 1;
}

fn on_receive<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>, _: Tag, shot: Shot<Datagram>) {
    let udp = ctx.udp();
    if !shot.more {
        assert!(udp.receive.take().is_some(), "the receive ends once");
        landed(udp);
    }
    let mut goes_on = true;
    match shot.result {
        Ok(_) if udp.stopping => {}
        Ok(datagram) => take_datagram(ctx, io, datagram),
        Err(_) if udp.stopping => {}
        Err(error) => {
            udp.stats.recv_errors += 1;
            udp.log_once("receive", &error);
            let fatal = [libc::EBADF, libc::ENOTSOCK, libc::EINVAL, libc::EOPNOTSUPP];
            // The socket cannot be read: serving stops receiving, rather than spin.
            goes_on = !error
                .raw_os_error()
                .is_some_and(|errno| fatal.contains(&errno));
        }
    }
    let udp = ctx.udp();
    if udp.stopping {
        return close_if_done(ctx, io);
    }
    if !shot.more && goes_on {
        arm_receive(ctx, io);
    }
}

/// A datagram arrived: handed on with a spare message, or waiting for one.
fn take_datagram<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>, datagram: Datagram) {
    let udp = ctx.udp();
    let too_long = datagram.buf.len() > udp.options.datagram_size_max as usize;
    let Some(from) = datagram.peer else {
        // Not an IP sender (a socket of another family): nothing to answer.
        udp.stats.recv_errors += 1;
        return;
    };
    if datagram.truncated || too_long {
        udp.stats.truncated += 1;
        return;
    }
    // Datagrams wait only while every message is out (`drain_waiting` keeps it so).
    debug_assert!(udp.waiting.is_empty() || udp.spare.is_empty());
    if udp.spare.is_empty() {
        // Every message is out with a reply: the datagram waits in its buffer, in order.
        assert!(
            udp.waiting.len() < udp.waiting.capacity(),
            "one waiting datagram per pool buffer"
        );
        udp.stats.waited += 1;
        udp.waiting.push_back((datagram.buf, from));
        return;
    }
    handle(ctx, io, &datagram.buf, from);
}

/// Copies a datagram into a spare message and runs the handler; sends its reply.
fn handle<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>, bytes: &[u8], from: SocketAddr) {
    let udp = ctx.udp();
    let mut msg = udp.spare.pop().expect("a spare message");
    let size = udp.options.datagram_size_max as usize;
    let bufs = msg.bufs_mut();
    bufs.truncate(1);
    if bufs.is_empty() || bufs[0].capacity() != size {
        // The handler replaced or grew the buffer: a datagram takes `size` bytes, no more.
        bufs.clear();
        bufs.push(Vec::with_capacity(size));
    }
    bufs[0].clear();
    bufs[0].extend_from_slice(bytes);
    udp.stats.received += 1;
    udp.stats.bytes_received += bytes.len() as u64;
    let reply = ctx.on_datagram(io, &mut msg, from);
    after_handler(ctx, io, msg, reply);
}

/// Sends the handler's reply, or keeps the message for the next datagram.
fn after_handler<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>, msg: Msg, reply: Reply) {
    let udp = ctx.udp();
    let Reply::SendTo(to) = reply else {
        return udp.spare.push(msg);
    };
    if udp.stopping {
        udp.spare.push(msg);
        return close_if_done(ctx, io);
    }
    match io.send_to(SEND_TAG, udp.fd(), msg, to, on_sent::<H>) {
        Ok(_) => udp.in_flight += 1,
        // The handler's own operations took the slots: the reply is dropped.
        Err(error) => {
            udp.stats.slot_shortages += 1;
            udp.spare.push(error.value);
        }
    }
}

fn on_sent<H: UdpHandler>(
    ctx: &mut H,
    io: &mut Io<H>,
    _: Tag,
    (result, msg): (io::Result<usize>, Msg),
) {
    let udp = ctx.udp();
    landed(udp);
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
    udp.spare.push(msg);
    if udp.stopping {
        return close_if_done(ctx, io);
    }
    drain_waiting(ctx, io);
}

/// A message is back: the datagrams that waited for one go on, oldest first, while
/// messages last (a handler that answers nothing gives its message straight back).
fn drain_waiting<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>) {
    loop {
        let udp = ctx.udp();
        if udp.stopping || udp.spare.is_empty() {
            return;
        }
        let Some((buf, from)) = udp.waiting.pop_front() else {
            return;
        };
        handle(ctx, io, &buf, from);
    }
}

/// After a stop, once every operation is back: closes the socket through the loop (so that
/// on the simulator its simulated socket closes too), or at once without a free slot.
fn close_if_done<H: UdpHandler>(ctx: &mut H, io: &mut Io<H>) {
    let udp = ctx.udp();
    if !udp.stopping || udp.in_flight > 0 {
        return;
    }
    let Some(socket) = udp.socket.take() else {
        // Never served, or closed already.
        udp.closed = udp.spare.is_empty() || udp.closed;
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
