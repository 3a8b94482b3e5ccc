//! A TCP server's connection handling on one loop: an accept loop that survives running out
//! of descriptors, a fixed table of connections, multishot pooled receives with backpressure
//! (data is not handed to the program while a send to its connection is in flight, and a
//! connection with [`PENDING_MAX`] arrivals waiting is not read), idle timeouts, half-close,
//! and a stop that closes everything. Sends are in `send.rs`.
//!
//! The program's state `H` implements [`Handler`]: [`Handler::net`] gives this layer its own
//! state (the composition answer: one accessor, resolved at compile time), and the
//! `on_*` methods receive the connection's events.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_loop::{Io, OpId, OutBuf, PoolBuf, Shot, Tag};

use crate::listen::Listener;
use crate::send::flush;
use crate::table::{ConnId, Table};

mod accept;
mod close;

use self::accept::{arm_accept, check_quiet, close_unserved};
use self::close::finish;
pub(crate) use self::close::shut_write;
pub use self::close::{close, close_gracefully, stop, LINGER_BYTES_MAX};

/// The tag of the accept operation and of its back-off timer; connections use their id.
const ACCEPT_TAG: Tag = u64::MAX;
/// The tag of the timer that decides whether an episode of accept failures is over.
const QUIET_TAG: Tag = u64::MAX - 1;

/// Limits and timeouts of a [`Net`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetOptions {
    /// Connections open at once; one more is accepted and closed at once (counted in
    /// [`NetStats::refused`]).
    pub connections_max: u32,
    /// A connection on which nothing moved either way for this long is closed (counted in
    /// [`NetStats::idle_timeouts`]); 0: never. Progress is bytes received while the
    /// connection is read, or bytes sent while replies wait to go out: a peer that keeps
    /// sending keeps a stuck reply alive while it is read, but once it has sent so much that
    /// reading stops ([`PENDING_MAX`]), only bytes sent count, and a peer that reads nothing
    /// is closed after the timeout.
    pub idle_timeout_ns: u64,
    /// How long accepting pauses after the process or system ran out of descriptors or
    /// memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), before it tries again.
    pub accept_pause_ns: u64,
}

impl NetOptions {
    /// `connections_max` connections, a 60 s idle timeout, a 100 ms accept pause.
    pub const fn new(connections_max: u32) -> NetOptions {
        NetOptions {
            connections_max,
            idle_timeout_ns: 60_000_000_000,
            accept_pause_ns: 100_000_000,
        }
    }

    /// The `Options::ops_max` a loop serving these connections needs: per connection a
    /// receive and a send (a handler may send to a connection that is being read, a greeting
    /// from `on_open` say), plus a close that may still be in flight while its table entry
    /// already serves a new connection; plus the accept (or its back-off timer), the timer
    /// that ends an episode of accept failures, and one operation of the program's own (a
    /// wake-up wait for a stop, say).
    pub const fn ops_max(&self) -> u32 {
        self.connections_max * 3 + 3
    }
}

/// What a [`Net`] did, since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetStats {
    /// Connections accepted into the table.
    pub accepted: u64,
    /// Connections accepted and closed at once because the table was full.
    pub refused: u64,
    /// Connections closed (by the peer, an error, an idle timeout, or a stop).
    pub closed: u64,
    /// Receives that returned bytes.
    pub messages: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Sends started: each one vectored send of everything queued on a connection (one
    /// syscall on epoll and kqueue, one submission on io_uring). The send that finishes a
    /// short one counts again (it is another syscall), so `sends` over messages is the
    /// syscall cost of the replies.
    pub sends: u64,
    /// Connections closed for their idle timeout.
    pub idle_timeouts: u64,
    /// Times accepting paused for want of descriptors or memory (each episode once).
    pub accept_pauses: u64,
    /// Operations the server could not schedule for want of a free slot of the loop (the
    /// program's own operations took more than the one [`NetOptions::ops_max`] keeps for
    /// them): a connection that could not be read or sent to was closed, an accept that
    /// could not be re-armed paused. Logged once; 0 in a loop sized as documented.
    pub slot_shortages: u64,
}

/// Arrivals a connection keeps while a send to it is in flight before it stops being read
/// (one once more than half the loop's pool is lent out).
///
/// A connection is read by a multishot receive (one submission for many arrivals) while
/// its socket keeps up; once `PENDING_MAX` arrivals wait for a send to finish, that receive
/// is cancelled and the connection is read one buffer at a time, and only while nothing is
/// being sent, until a receive finds the socket drained (a short read). A peer that sends
/// without reading therefore pins the buffer being sent, the arrivals waiting, and those
/// that came in before the cancel took effect (what the kernel had in the socket's buffers
/// in one go; 1 to 5 buffers in all measured here). Size the pool for the peers that may
/// stall at once: a few buffers each.
pub const PENDING_MAX: usize = 4;

/// One connection.
pub(crate) struct Conn {
    pub(crate) socket: OwnedFd,
    /// The receive, while armed (for a multishot, until its final callback).
    recv: Option<OpId>,
    /// The armed receive is a multishot one.
    recv_multishot: bool,
    /// The next receive armed is a multishot one (the socket was drained when last read).
    next_multishot: bool,
    /// The receive was cancelled to stop reading (backpressure), not to close.
    pausing: bool,
    /// Progress came after the receive's idle deadline had fired: its `ETIMEDOUT` is not
    /// idleness, and the connection reads on.
    revived: bool,
    /// Arrivals waiting for the sends to finish, in stream order.
    pub(crate) pending: VecDeque<PoolBuf>,
    /// The vectored send in flight: one at a time, with every buffer queued when it began.
    pub(crate) send: Option<OpId>,
    /// Buffers in the send in flight.
    pub(crate) sending: usize,
    /// Progress came after the send's idle deadline had fired (see `revived`).
    pub(crate) send_revived: bool,
    /// Buffers queued behind the send in flight, in order.
    pub(crate) queue: Vec<OutBuf>,
    /// An empty list kept for its capacity: the next send's (no allocation per send).
    pub(crate) spare: Vec<OutBuf>,
    /// The peer finished sending (end of stream): close once the sends are done.
    read_closed: bool,
    /// Being closed: no new operations; closed once none is in flight.
    pub(crate) closing: bool,
    /// Closing gracefully ([`close_gracefully`]): arrivals are dropped, and once the sends
    /// are out the write side is shut down.
    pub(crate) lingering: bool,
    /// Bytes dropped while lingering.
    dropped: u64,
}

/// The server's own state: the listener, the accept loop, the connection table, stats.
///
/// Its `Debug` shows the listener, whether an accept is in flight or paused, the number of
/// open connections and the stats.
pub struct Net {
    listener: Option<Listener>,
    accept: Option<OpId>,
    /// Accepting is paused: the back-off timer re-arms it.
    accept_paused: bool,
    /// An episode of accept failures is under way (logged once): it ends when accepts have
    /// gone a whole pause without failing.
    episode: bool,
    /// Accept failures so far, and their count when the quiet timer was started.
    accept_failures: u64,
    quiet_mark: Option<u64>,
    stopping: bool,
    /// The connection whose handler callback runs now: its sends wait for it to return and
    /// go out together (see `handle`).
    pub(crate) handling: Option<ConnId>,
    /// A slot shortage was logged.
    shortage_logged: bool,
    pub(crate) conns: Table<Conn>,
    pub(crate) options: NetOptions,
    pub(crate) stats: NetStats,
}

/// A program on top of a [`Net`]: the loop's context type implements it.
pub trait Handler: Sized + 'static {
    /// This layer's state inside the program's.
    fn net(&mut self) -> &mut Net;

    /// A connection was accepted; it is being read. A greeting [`crate::send`] from here
    /// goes out before any reply.
    fn on_open(&mut self, io: &mut Io<Self>, conn: ConnId) {
        let _ = (io, conn);
    }

    /// Bytes arrived on `conn`, in stream order (a message may come in parts, and several
    /// in one: framing is the program's). Reply with [`crate::send`], as many times as the
    /// reply has parts (they go out together once this returns), keep `data`, or drop it to
    /// give the buffer back. `on_data` is not called for `conn` again until everything sent
    /// is out; what arrives meanwhile waits, and a connection with [`PENDING_MAX`] arrivals
    /// waiting stops being read.
    fn on_data(&mut self, io: &mut Io<Self>, conn: ConnId, data: PoolBuf);

    /// Everything sent on `conn` is out (the kernel took the last byte): the moment to send
    /// what did not fit in the queue ([`crate::SEND_QUEUE_MAX`]). Waiting arrivals are handed
    /// to `on_data` after this returns, unless this sent more.
    fn on_drained(&mut self, io: &mut Io<Self>, conn: ConnId) {
        let _ = (io, conn);
    }

    /// `conn` is closed (its descriptor's close is under way); its id is stale from now on.
    fn on_close(&mut self, io: &mut Io<Self>, conn: ConnId) {
        let _ = (io, conn);
    }
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("listener", &self.listener)
            .field("accept", &self.accept)
            .field("accept_paused", &self.accept_paused)
            .field("stopping", &self.stopping)
            .field("connections", &self.conns.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Net {
    /// A server with no listener yet; see [`serve`].
    ///
    /// # Panics
    /// When `options.connections_max` is 0 (a server that could take no connection).
    pub fn new(options: &NetOptions) -> Net {
        assert!(options.connections_max > 0, "a server takes connections");
        Net {
            listener: None,
            accept: None,
            accept_paused: false,
            episode: false,
            accept_failures: 0,
            quiet_mark: None,
            stopping: false,
            handling: None,
            shortage_logged: false,
            conns: Table::with_capacity(options.connections_max),
            options: *options,
            stats: NetStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Connections open now.
    pub fn connections(&self) -> u32 {
        self.conns.len()
    }

    /// Whether [`stop`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping
    }
}

/// Starts serving `listener` (a `std::net::TcpListener`, or a simulated listener for a loop
/// on a simulation: see [`Listener`]) on `io`: accepts connections until [`stop`].
///
/// # Errors
/// `InvalidInput`, naming the option to change, when the loop cannot serve this `Net`: it
/// has no pool (`Options::pool.buffers` is 0: connections are read into pool buffers), or
/// fewer operation slots than [`NetOptions::ops_max`] asks (`Options::ops_max`).
/// `AlreadyExists` when this `Net` was served before. An error from scheduling the accept
/// (no free slot: the program's own operations hold them).
pub fn serve<H: Handler>(
    ctx: &mut H,
    io: &mut Io<H>,
    listener: impl Into<Listener>,
) -> io::Result<()> {
    let net = ctx.net();
    if net.listener.is_some() || net.accept.is_some() || net.stopping {
        let message = "serve was called before on this Net: a Net serves one listener";
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, message));
    }
    if io.pool_buffers() == 0 {
        let message = "dispatch-net reads connections into the loop's pool, and this loop has \
                       none: set Options::pool (its buffers are 0)";
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    let needed = net.options.ops_max();
    if io.ops_max() < needed {
        let message = format!(
            "serving {} connections needs Options::ops_max of at least {needed} \
             (NetOptions::ops_max()), and the loop has {}",
            net.options.connections_max,
            io.ops_max()
        );
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    net.listener = Some(listener.into());
    let result = arm_accept(ctx, io);
    if result.is_err() {
        ctx.net().listener = None;
    }
    result
}

/// The loop had no free slot for an operation of the server's: counted, and logged once.
pub(crate) fn shortage(net: &mut Net, what: &str) {
    net.stats.slot_shortages += 1;
    if !net.shortage_logged {
        net.shortage_logged = true;
        eprintln!(
            "dispatch-net: no free operation slot for {what}: the program's own operations \
             use more than NetOptions::ops_max() keeps for them; raise Options::ops_max"
        );
    }
}

fn open<H: Handler>(ctx: &mut H, io: &mut Io<H>, socket: OwnedFd) {
    let net = ctx.net();
    if net.stopping {
        close_unserved(io, socket);
        return;
    }
    check_quiet(net, io);
    let conn = Conn {
        socket,
        recv: None,
        recv_multishot: false,
        next_multishot: true,
        pausing: false,
        revived: false,
        pending: VecDeque::new(),
        send: None,
        sending: 0,
        send_revived: false,
        queue: Vec::new(),
        spare: Vec::new(),
        read_closed: false,
        closing: false,
        lingering: false,
        dropped: 0,
    };
    let id = match net.conns.insert(conn) {
        Ok(id) => id,
        Err(refused) => {
            // The table is full: the connection is closed at once.
            net.stats.refused += 1;
            close_unserved(io, refused.socket);
            return;
        }
    };
    net.stats.accepted += 1;
    if !arm_recv(ctx, io, id) {
        return;
    }
    handle(ctx, io, id, |ctx, io| ctx.on_open(io, id));
}

/// Arms the receive of `id`; without a free slot, closes the connection and says `false`.
fn arm_recv<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId) -> bool {
    let net = ctx.net();
    let idle = net.options.idle_timeout_ns;
    let conn = net.conns.get_mut(id).expect("an open connection");
    assert!(conn.recv.is_none(), "one receive at a time");
    let fd = conn.socket.as_raw_fd();
    let scheduled = match conn.next_multishot {
        true => io.recv_multishot(id.to_tag(), fd, on_recv::<H>),
        false => io.recv_pooled(id.to_tag(), fd, on_recv::<H>),
    };
    let Ok(recv) = scheduled else {
        shortage(net, "a receive");
        close(ctx, io, id);
        return false;
    };
    conn.recv_multishot = conn.next_multishot;
    conn.revived = false;
    if idle > 0 {
        io.set_deadline(recv, idle).expect("just scheduled");
    }
    conn.recv = Some(recv);
    true
}

/// Progress on a connection, either way: the idle deadlines of its receive and of its send
/// start again.
pub(crate) fn progress<H>(io: &mut Io<H>, conn: &mut Conn, idle: u64) {
    if idle == 0 {
        return;
    }
    // Refused once the operation's final result is decided: if that is its deadline (it
    // fired in the turn that brought this progress), the connection was not idle.
    if let Some(recv) = conn.recv {
        if io.set_deadline(recv, idle).is_err() {
            conn.revived = true;
        }
    }
    if let Some(send) = conn.send {
        if io.set_deadline(send, idle).is_err() {
            conn.send_revived = true;
        }
    }
}

fn on_recv<H: Handler>(ctx: &mut H, io: &mut Io<H>, tag: Tag, shot: Shot<PoolBuf>) {
    let id = ConnId::from_tag(tag);
    let net = ctx.net();
    net.handling = None;
    let idle = net.options.idle_timeout_ns;
    let conn = net
        .conns
        .get_mut(id)
        .expect("a connection with a receive is open");
    if !shot.more {
        conn.recv = None;
    }
    match shot.result {
        Ok(data) if !data.is_empty() => {
            net.stats.messages += 1;
            net.stats.bytes_received += data.len() as u64;
            if !conn.recv_multishot {
                // Read one buffer at a time until the socket is found drained.
                conn.next_multishot = data.len() < data.capacity();
            }
            if conn.lingering {
                // Dropped, and no progress: the idle timeout bounds the linger.
                conn.dropped += data.len() as u64;
                if conn.dropped > LINGER_BYTES_MAX {
                    return close(ctx, io, id);
                }
            } else if conn.closing {
                // Dropped: the buffer goes back to the pool.
            } else if !conn.busy() && conn.pending.is_empty() {
                progress(io, conn, idle);
                deliver(ctx, io, id, data);
            } else {
                progress(io, conn, idle);
                conn.pending.push_back(data);
            }
        }
        // End of stream: finish sending, then close.
        Ok(_) => conn.read_closed = true,
        // The receive was cancelled to stop reading until the sends catch up, or its idle
        // deadline fired in the turn that brought progress: read on.
        Err(error) if error.raw_os_error() == Some(libc::ECANCELED) && conn.pausing => {}
        Err(error) if error.raw_os_error() == Some(libc::ETIMEDOUT) && conn.revived => {}
        Err(error) => return fail(ctx, io, id, &error),
    }
    pump(ctx, io, id);
}

impl Conn {
    /// Something is being sent, or waits to be.
    fn busy(&self) -> bool {
        self.send.is_some() || !self.queue.is_empty()
    }
}

/// Hands `data` to the program; what it sends meanwhile goes out together afterwards.
fn deliver<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId, data: PoolBuf) {
    handle(ctx, io, id, |ctx, io| ctx.on_data(io, id, data));
}

/// Runs one of `id`'s handler callbacks (`on_open`, `on_data`, `on_drained`), then sends
/// what it queued, together. Handler callbacks never nest (none is called from a call the
/// program makes), so `handling` is set and cleared, not saved. A callback that panics
/// leaves it set: each of this layer's loop callbacks clears it on entry, and `pump` sends
/// what the panicking callback queued, so the connection's next event moves it on.
pub(crate) fn handle<H: Handler>(
    ctx: &mut H,
    io: &mut Io<H>,
    id: ConnId,
    callback: impl FnOnce(&mut H, &mut Io<H>),
) {
    ctx.net().handling = Some(id);
    callback(ctx, io);
    ctx.net().handling = None;
    flush(ctx, io, id);
}

/// Moves `id` on after an event: hands waiting arrivals to the program while nothing is
/// being sent, reads again or stops reading as the waiting arrivals allow, and closes the
/// connection once nothing is left to do.
pub(crate) fn pump<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId) {
    // What a handler callback that panicked queued (see `handle`); nothing otherwise.
    flush(ctx, io, id);
    loop {
        // The handler may have closed the connection (then it may be gone already).
        let Some(conn) = ctx.net().conns.get_mut(id) else {
            return;
        };
        if conn.closing || conn.busy() {
            break;
        }
        let Some(data) = conn.pending.pop_front() else {
            break;
        };
        deliver(ctx, io, id, data);
    }
    let conn = ctx.net().conns.get_mut(id).expect("checked above");
    if conn.closing || conn.read_closed {
        return finish(ctx, io, id);
    }
    // With the pool more than half lent, the first arrival that has to wait stops reading.
    let limit = match io.pool_buffers_lent() * 2 > io.pool_buffers() {
        true => 1,
        false => PENDING_MAX,
    };
    let backlog = conn.pending.len() >= limit;
    match conn.recv {
        // Its final callback (ECANCELED, or a last result) comes through `on_recv`. No slot
        // for the cancel: the next arrival tries again.
        Some(recv)
            if conn.recv_multishot
                && backlog
                && !conn.pausing
                && io.cancel(id.to_tag(), recv, |_, _, _, _| {}).is_ok() =>
        {
            conn.pausing = true;
            conn.next_multishot = false;
        }
        // A multishot receive reads on while a send is in flight (up to the backlog); one
        // buffer at a time, only once everything received has been sent.
        None if (conn.next_multishot && !backlog) || (!conn.busy() && conn.pending.is_empty()) => {
            conn.pausing = false;
            arm_recv(ctx, io, id);
        }
        _ => {}
    }
}

/// A receive or send on `id` failed: the connection is closed (an `ETIMEDOUT` is its idle
/// deadline, and is counted once: the receive's and the send's may fire together).
pub(crate) fn fail<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId, error: &io::Error) {
    let net = ctx.net();
    let closing = net.conns.get(id).is_some_and(|conn| conn.closing);
    if error.raw_os_error() == Some(libc::ETIMEDOUT) && !closing {
        net.stats.idle_timeouts += 1;
    }
    close(ctx, io, id);
}
