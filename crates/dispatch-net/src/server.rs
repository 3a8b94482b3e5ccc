//! A TCP server's connection handling on one loop: an accept loop that survives running out
//! of descriptors, a fixed table of connections, pooled receives with backpressure (a
//! connection is not read while a send to it is in flight), sends that finish short writes,
//! idle timeouts, half-close, and a stop that closes everything.
//!
//! The program's state `H` implements [`Handler`]: [`Handler::net`] gives this layer its own
//! state (the composition answer: one accessor, resolved at compile time), and the
//! `on_*` methods receive the connection's events.

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

/// One connection.
struct Conn {
    socket: OwnedFd,
    recv: Option<OpId>,
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

    /// Bytes arrived on `conn`. Reply with [`send`] (one send in flight per connection: the
    /// connection is read again once it is done), or drop `data` to give the buffer back.
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

fn open<H: Handler>(ctx: &mut H, io: &mut Io<H>, socket: OwnedFd) {
    let net = ctx.net();
    if net.stopping {
        return;
    }
    check_quiet(net, io);
    let conn = Conn {
        socket,
        recv: None,
        send: None,
        read_closed: false,
        closing: false,
    };
    let Ok(id) = net.conns.insert(conn) else {
        // The table is full: the connection is closed at once (the rejected value drops).
        net.stats.refused += 1;
        return;
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
    let recv = io
        .recv_pooled(id.to_tag(), fd, on_recv::<H>)
        .expect("a slot is kept for each connection");
    if idle > 0 {
        io.set_deadline(recv, idle).expect("just scheduled");
    }
    conn.recv = Some(recv);
}

fn on_recv<H: Handler>(ctx: &mut H, io: &mut Io<H>, tag: Tag, shot: Shot<PoolBuf>) {
    let id = ConnId::from_tag(tag);
    let net = ctx.net();
    let conn = net
        .conns
        .get_mut(id)
        .expect("a connection with a receive is open");
    conn.recv = None;
    match shot.result {
        Ok(data) if !data.is_empty() => {
            net.stats.messages += 1;
            net.stats.bytes_received += data.len() as u64;
            if conn.closing {
                return finish(ctx, io, id);
            }
            ctx.on_data(io, id, data);
            // The handler may have sent (the connection is read again once that is done),
            // or closed it (then it may be gone already).
            let Some(conn) = ctx.net().conns.get_mut(id) else {
                return;
            };
            if conn.closing {
                finish(ctx, io, id);
            } else if conn.send.is_none() {
                arm_recv(ctx, io, id);
            }
        }
        // End of stream: finish sending, then close.
        Ok(_) => {
            conn.read_closed = true;
            finish(ctx, io, id);
        }
        Err(error) => {
            if error.raw_os_error() == Some(libc::ETIMEDOUT) {
                net.stats.idle_timeouts += 1;
            }
            close(ctx, io, id);
        }
    }
}

/// Sends `data` on `conn`, finishing short writes; a connection that was being read when
/// its data came is read again once the whole buffer is sent (a send may also be made to a
/// connection that is being read, as a greeting from `on_open`).
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
                return;
            }
            if conn.closing || conn.read_closed {
                return finish(ctx, io, id);
            }
            // Read again unless a receive is already armed (a send made while it was).
            if conn.recv.is_none() {
                arm_recv(ctx, io, id);
            }
        }
        Err(error) => {
            if error.raw_os_error() == Some(libc::ETIMEDOUT) {
                net.stats.idle_timeouts += 1;
            }
            close(ctx, io, id);
        }
    }
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
    if !conn.closing && !conn.read_closed {
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
