//! Ending connections: the lingering close that keeps replies ([`close_gracefully`]), the
//! plain close, the last step once nothing is in flight (`finish`), and stopping the server.

use std::io;
use std::os::fd::AsRawFd;

use dispatch_loop::{Io, Tag};

use super::{fail, pump, shortage, Handler, ACCEPT_TAG};
use crate::table::ConnId;

/// The most bytes a lingering connection ([`close_gracefully`]) reads and drops before it is
/// closed at once.
pub const LINGER_BYTES_MAX: u64 = 1 << 20;

/// Closes `conn` without losing its replies: what is queued goes out first, then the write
/// side is shut down (the peer reads every reply, then the end of the stream), and what the
/// peer still sends is read and dropped until it closes its side; then the connection
/// closes. Arrivals are no longer handed to the program, and [`crate::send`] refuses.
///
/// A plain [`close`] with bytes from the peer still unread makes the kernel reset the
/// connection, and a reset discards the replies not yet delivered: an HTTP server answering
/// a bad request with `400` and closing loses its answer that way, whenever the client sent
/// more behind the bad request. Reading on until the peer's end of stream ("lingering
/// close") is the remedy. The linger is bounded: by the idle timeout (what arrives is not
/// progress; with no timeout, only the peer's close ends it) and by [`LINGER_BYTES_MAX`]
/// bytes dropped, past which the connection is closed at once. Nothing happens for a stale
/// id or a connection already closing.
pub fn close_gracefully<H: Handler>(ctx: &mut H, io: &mut Io<H>, conn: ConnId) {
    let Some(entry) = ctx.net().conns.get_mut(conn) else {
        return;
    };
    if entry.closing || entry.lingering {
        return;
    }
    entry.lingering = true;
    entry.pending.clear();
    if !entry.busy() {
        shut_write(ctx, io, conn);
    }
}

/// Shuts down the write side of a lingering connection whose sends are out: the shutdown
/// takes the send's place (a close cancels it, `finish` waits for it).
pub(crate) fn shut_write<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId) {
    let net = ctx.net();
    let conn = net.conns.get_mut(id).expect("an open connection");
    assert!(
        conn.lingering && !conn.busy(),
        "shut down only once the sends are out"
    );
    let fd = conn.socket.as_raw_fd();
    match io.shutdown(id.to_tag(), fd, std::net::Shutdown::Write, on_shut::<H>) {
        Ok(op) => conn.send = Some(op),
        Err(_) => {
            shortage(net, "a shutdown");
            close(ctx, io, id);
        }
    }
}

fn on_shut<H: Handler>(ctx: &mut H, io: &mut Io<H>, tag: Tag, result: io::Result<()>) {
    let id = ConnId::from_tag(tag);
    ctx.net().handling = None;
    let conn = ctx
        .net()
        .conns
        .get_mut(id)
        .expect("a connection shutting down is open");
    conn.send = None;
    match result {
        Ok(()) => pump(ctx, io, id),
        Err(error) => fail(ctx, io, id, &error),
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
pub(super) fn finish<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId) {
    let net = ctx.net();
    let conn = net.conns.get(id).expect("an open connection");
    if conn.recv.is_some() || conn.send.is_some() {
        return;
    }
    let done =
        conn.closing || (conn.read_closed && conn.pending.is_empty() && conn.queue.is_empty());
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
