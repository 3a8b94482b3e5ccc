//! A TCP server's connection handling on one loop: an accept loop that survives running out
//! of descriptors, a fixed table of connections, multishot pooled receives with backpressure
//! (data is not handed to the program while a send to its connection is in flight, and a
//! connection with [`PENDING_MAX`] arrivals waiting is not read), sends that finish short
//! writes, idle timeouts, half-close, and a stop that closes everything.
//!
//! The program's state `H` implements [`Handler`]: [`Handler::net`] gives this layer its own
//! state (the composition answer: one accessor, resolved at compile time), and the
//! `on_*` methods receive the connection's events.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_core::{Io, OpId, PoolBuf, Shot, Tag};

use crate::listen::Listener;
use crate::table::{ConnId, Table};

/// The tag of the accept operation and of its back-off timer; connections use their id.
const ACCEPT_TAG: Tag = u64::MAX;
/// The tag of the timer that decides whether an episode of accept failures is over.
const QUIET_TAG: Tag = u64::MAX - 1;

/// Limits and timeouts of a [`Net`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetOptions {
    /// Connections open at once; one more is accepted and closed at once (counted in
    /// [`NetStats::refused`]).
    pub connections_max: u32,
    /// A connection with no progress (nothing received while it is read, nothing sent
    /// while it waits to send) for this long is closed; 0: never.
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
    /// Connections closed for their idle timeout.
    pub idle_timeouts: u64,
    /// Times accepting paused for want of descriptors or memory (each episode once).
    pub accept_pauses: u64,
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
struct Conn {
    socket: OwnedFd,
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
    /// Arrivals waiting for the send in flight to finish, in stream order.
    pending: VecDeque<PoolBuf>,
    send: Option<OpId>,
    /// The peer finished sending (end of stream): close once the sends are done.
    read_closed: bool,
    /// Being closed: no new operations; closed once none is in flight.
    closing: bool,
}

/// The server's own state: the listener, the accept loop, the connection table, stats.
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
    conns: Table<Conn>,
    options: NetOptions,
    stats: NetStats,
}

/// A program on top of a [`Net`]: the loop's context type implements it.
pub trait Handler: Sized + 'static {
    /// This layer's state inside the program's.
    fn net(&mut self) -> &mut Net;

    /// A connection was accepted; it is being read.
    fn on_open(&mut self, io: &mut Io<Self>, conn: ConnId) {
        let _ = (io, conn);
    }

    /// Bytes arrived on `conn`, in stream order. Reply with [`send`] (one send in flight per
    /// connection: `on_data` is not called for `conn` again until that send is done; what
    /// arrives meanwhile waits, and a connection with [`PENDING_MAX`] arrivals waiting stops
    /// being read), or drop `data` to give the buffer back.
    fn on_data(&mut self, io: &mut Io<Self>, conn: ConnId, data: PoolBuf);

    /// `conn` is closed (its descriptor's close is under way); its id is stale from now on.
    fn on_close(&mut self, io: &mut Io<Self>, conn: ConnId) {
        let _ = (io, conn);
    }
}

impl Net {
    /// A server with no listener yet; see [`serve`].
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
/// When the loop has no free slot for the accept.
pub fn serve<H: Handler>(
    ctx: &mut H,
    io: &mut Io<H>,
    listener: impl Into<Listener>,
) -> io::Result<()> {
    let net = ctx.net();
    assert!(net.listener.is_none(), "serve called twice");
    net.listener = Some(listener.into());
    arm_accept(ctx, io)
}

fn arm_accept<H: Handler>(ctx: &mut H, io: &mut Io<H>) -> io::Result<()> {
    let net = ctx.net();
    let fd = net.listener.as_ref().expect("a listener").as_raw_fd();
    let id = io
        .accept_multishot(ACCEPT_TAG, fd, on_accept::<H>)
        .map_err(|error| io::Error::other(error.to_string()))?;
    net.accept = Some(id);
    net.accept_paused = false;
    Ok(())
}

fn on_accept<H: Handler>(ctx: &mut H, io: &mut Io<H>, _: Tag, shot: Shot<OwnedFd>) {
    let net = ctx.net();
    if !shot.more {
        net.accept = None;
    }
    match shot.result {
        Ok(socket) => open(ctx, io, socket),
        Err(error) => on_accept_error(ctx, io, &error),
    }
    let net = ctx.net();
    if net.accept.is_none() && !net.accept_paused && !net.stopping {
        // The kernel ended the multishot on a transient error (or with a connection): go on.
        arm_accept(ctx, io).expect("a slot is kept for the accept");
    }
    if ctx.net().stopping && ctx.net().accept.is_none() {
        ctx.net().listener = None;
    }
}

fn on_accept_error<H: Handler>(ctx: &mut H, io: &mut Io<H>, error: &io::Error) {
    let net = ctx.net();
    match error.raw_os_error() {
        // A stop cancelled it.
        Some(libc::ECANCELED) if net.stopping => {}
        // That connection is gone (aborted by its peer, refused by a firewall rule); the
        // next is not: accept on at once.
        // (ECANCELED without a stop: the accept was interrupted in a kernel worker.)
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::EINTR | libc::ECANCELED) => {}
        // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or anything else:
        // pause accepting (the connected clients keep being served, and closing them frees
        // descriptors), then try again; never spin. Logged once an episode: the episode
        // ends once accepts have gone a whole pause without failing.
        _ => {
            net.accept_failures += 1;
            if !net.episode {
                net.episode = true;
                net.stats.accept_pauses += 1;
                eprintln!(
                    "dispatch-net: accept: {error}; pausing accepts for {} ms at a time \
                     until descriptors free up",
                    net.options.accept_pause_ns / 1_000_000
                );
            }
            net.accept_paused = true;
            let pause = net.options.accept_pause_ns;
            io.timeout(ACCEPT_TAG, pause, on_accept_pause::<H>)
                .expect("a slot is kept for the accept's timer");
        }
    }
}

fn on_accept_pause<H: Handler>(ctx: &mut H, io: &mut Io<H>, _: Tag, _: io::Result<()>) {
    if ctx.net().stopping {
        ctx.net().listener = None;
        return;
    }
    arm_accept(ctx, io).expect("a slot is kept for the accept");
}

/// Starts the timer that ends an episode of accept failures if none follows for a pause.
fn check_quiet<H: Handler>(net: &mut Net, io: &mut Io<H>) {
    if !net.episode || net.quiet_mark.is_some() || net.stopping {
        return;
    }
    net.quiet_mark = Some(net.accept_failures);
    io.timeout(QUIET_TAG, net.options.accept_pause_ns, on_quiet::<H>)
        .expect("a slot is kept for the quiet timer");
}

fn on_quiet<H: Handler>(ctx: &mut H, _: &mut Io<H>, _: Tag, _: io::Result<()>) {
    let net = ctx.net();
    let mark = net.quiet_mark.take().expect("a quiet timer has a mark");
    if net.accept_failures == mark {
        net.episode = false;
    }
}

/// Closes a socket the server will not serve (accepted while stopping, or past a full
/// table) through the loop, so that on the simulator the simulated connection closes too;
/// at once (dropping the `OwnedFd`) only when no slot is free for the close.
fn close_unserved<H>(io: &mut Io<H>, socket: OwnedFd) {
    if let Err(error) = io.close(ACCEPT_TAG, socket, |_, _, _, _| {}) {
        drop(error.value);
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
        read_closed: false,
        closing: false,
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
    arm_recv(ctx, io, id);
    ctx.on_open(io, id);
}

fn arm_recv<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId) {
    let net = ctx.net();
    let idle = net.options.idle_timeout_ns;
    let conn = net.conns.get_mut(id).expect("an open connection");
    assert!(conn.recv.is_none(), "one receive at a time");
    let fd = conn.socket.as_raw_fd();
    let recv = match conn.next_multishot {
        true => io.recv_multishot(id.to_tag(), fd, on_recv::<H>),
        false => io.recv_pooled(id.to_tag(), fd, on_recv::<H>),
    }
    .expect("a slot is kept for each connection");
    conn.recv_multishot = conn.next_multishot;
    conn.revived = false;
    if idle > 0 {
        io.set_deadline(recv, idle).expect("just scheduled");
    }
    conn.recv = Some(recv);
}

/// Progress on a connection: its idle deadline (on the receive, the one operation that
/// waits on the peer's silence) starts again.
fn progress<H>(io: &mut Io<H>, conn: &mut Conn, idle: u64) {
    if let (Some(recv), true) = (conn.recv, idle > 0) {
        // Refused once the receive's final result is decided: if that is its deadline (it
        // fired in the turn that brought this progress), the connection was not idle.
        if io.set_deadline(recv, idle).is_err() {
            conn.revived = true;
        }
    }
}

fn on_recv<H: Handler>(ctx: &mut H, io: &mut Io<H>, tag: Tag, shot: Shot<PoolBuf>) {
    let id = ConnId::from_tag(tag);
    let net = ctx.net();
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
            progress(io, conn, idle);
            if !conn.recv_multishot {
                // Read one buffer at a time until the socket is found drained.
                conn.next_multishot = data.len() < data.capacity();
            }
            if conn.closing {
                // Dropped: the buffer goes back to the pool.
            } else if conn.send.is_none() && conn.pending.is_empty() {
                ctx.on_data(io, id, data);
            } else {
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

/// Moves `id` on after an event: hands waiting arrivals to the program while no send is in
/// flight, reads again or stops reading as the waiting arrivals allow, and closes the
/// connection once nothing is left to do.
fn pump<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId) {
    loop {
        // The handler may have closed the connection (then it may be gone already).
        let Some(conn) = ctx.net().conns.get_mut(id) else {
            return;
        };
        if conn.closing || conn.send.is_some() {
            break;
        }
        let Some(data) = conn.pending.pop_front() else {
            break;
        };
        ctx.on_data(io, id, data);
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
        None if (conn.next_multishot && !backlog)
            || (conn.send.is_none() && conn.pending.is_empty()) =>
        {
            conn.pausing = false;
            arm_recv(ctx, io, id);
        }
        _ => {}
    }
}

/// Sends `data` on `conn`, finishing short writes. Until the whole buffer is sent, arrivals on
/// `conn` wait for [`Handler::on_data`] (a send may be made at any time, a greeting from
/// `on_open` say).
///
/// # Errors
/// Hands `data` back when `conn` is closed or closing, or already has a send in flight (one
/// at a time: that is the backpressure).
pub fn send<H: Handler>(
    ctx: &mut H,
    io: &mut Io<H>,
    conn: ConnId,
    data: PoolBuf,
) -> Result<(), PoolBuf> {
    let net = ctx.net();
    let idle = net.options.idle_timeout_ns;
    let Some(entry) = net.conns.get_mut(conn) else {
        return Err(data);
    };
    if entry.closing || entry.send.is_some() {
        return Err(data);
    }
    let fd = entry.socket.as_raw_fd();
    let id = io
        .send_pooled(conn.to_tag(), fd, data, on_sent::<H>)
        .map_err(|error| error.value)?;
    if idle > 0 {
        io.set_deadline(id, idle).expect("just scheduled");
    }
    entry.send = Some(id);
    Ok(())
}

fn on_sent<H: Handler>(
    ctx: &mut H,
    io: &mut Io<H>,
    tag: Tag,
    (sent, mut data): (io::Result<usize>, PoolBuf),
) {
    let id = ConnId::from_tag(tag);
    let net = ctx.net();
    let idle = net.options.idle_timeout_ns;
    let conn = net
        .conns
        .get_mut(id)
        .expect("a connection with a send is open");
    conn.send = None;
    match sent {
        // Nothing sent of a non-empty buffer: the connection can take no more.
        Ok(0) if !data.is_empty() => close(ctx, io, id),
        Ok(n) => {
            net.stats.bytes_sent += n as u64;
            if n < data.len() && !conn.closing {
                data.advance(n);
                let fd = conn.socket.as_raw_fd();
                let resend = io
                    .send_pooled(tag, fd, data, on_sent::<H>)
                    .map_err(|error| error.kind)
                    .expect("the finished send's slot is free");
                if idle > 0 {
                    io.set_deadline(resend, idle).expect("just scheduled");
                }
                conn.send = Some(resend);
                progress(io, conn, idle);
                return;
            }
            progress(io, conn, idle);
            pump(ctx, io, id);
        }
        Err(error) => fail(ctx, io, id, &error),
    }
}

/// A receive or send on `id` failed: the connection is closed (an `ETIMEDOUT` is its idle
/// deadline, and is counted).
fn fail<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId, error: &io::Error) {
    if error.raw_os_error() == Some(libc::ETIMEDOUT) {
        ctx.net().stats.idle_timeouts += 1;
    }
    close(ctx, io, id);
}

/// Closes `conn`: its operations are cancelled, then its descriptor closed and
/// [`Handler::on_close`] called. Nothing happens for a stale id.
pub fn close<H: Handler>(ctx: &mut H, io: &mut Io<H>, conn: ConnId) {
    let net = ctx.net();
    let Some(entry) = net.conns.get_mut(conn) else {
        return;
    };
    entry.closing = true;
    for op in [entry.recv, entry.send].into_iter().flatten() {
        // The cancel answers through the operation's own callback, which finishes the close.
        let _ = io.cancel(conn.to_tag(), op, |_, _, _, _| {});
    }
    finish(ctx, io, conn);
}

/// Closes `conn` once nothing is in flight on it (and, unless closing, once the peer ended
/// its stream and every send is done).
fn finish<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId) {
    let net = ctx.net();
    let conn = net.conns.get(id).expect("an open connection");
    if conn.recv.is_some() || conn.send.is_some() {
        return;
    }
    let done = conn.closing || (conn.read_closed && conn.pending.is_empty());
    if !done {
        return;
    }
    let conn = net.conns.remove(id).expect("checked above");
    net.stats.closed += 1;
    if let Err(error) = io.close(id.to_tag(), conn.socket, |_, _, _, _| {}) {
        // No slot (more closes in flight than sized for): close it here, synchronously.
        drop(error.value);
    }
    ctx.on_close(io, id);
}

/// Stops the server: no more accepts, every connection closed (sends in flight are
/// cancelled). Run the loop until idle afterwards to let the closes finish.
pub fn stop<H: Handler>(ctx: &mut H, io: &mut Io<H>) {
    let net = ctx.net();
    if net.stopping {
        return;
    }
    net.stopping = true;
    if let Some(accept) = net.accept {
        let _ = io.cancel(ACCEPT_TAG, accept, |_, _, _, _| {});
    } else if !net.accept_paused {
        net.listener = None;
    }
    let ids: Vec<ConnId> = ctx.net().conns.ids().collect();
    for id in ids {
        close(ctx, io, id);
    }
}
