//! Replies: [`send`] queues bytes of any origin on a connection ([`OutBuf`]: a `Vec<u8>`, a
//! `String`, `&'static` bytes, a pool buffer), and the queue goes out in order, gathered into
//! one vectored send at a time, short sends finished.
//!
//! Sends made while the server runs one of the connection's handler callbacks (`on_open`,
//! `on_data`, `on_drained`) wait for the callback to return and go out together, so that a
//! header and a body, or the replies to pipelined requests, cost one syscall; a send made
//! anywhere else (a timer of the program's, another connection's callback) starts at once.

use std::error::Error;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;

use dispatch_loop::{Io, OutBuf, ScheduleErrorKind, Tag};

use crate::server::{close, fail, handle, progress, pump, shortage, shut_write, Conn, Handler};
use crate::table::ConnId;

/// Buffers that may wait to be sent on one connection, counting those in the send in flight:
/// a [`send`] past it fails with [`SendErrorKind::QueueFull`]. A handler that has more to
/// say keeps the rest and says it from [`Handler::on_drained`].
pub const SEND_QUEUE_MAX: usize = 64;

/// Why [`send`] could not queue the bytes, which it hands back.
pub struct SendError {
    kind: SendErrorKind,
    data: OutBuf,
}

/// The reasons a [`send`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SendErrorKind {
    /// The connection is closed (a stale id) or being closed (gracefully too).
    Closed,
    /// [`SEND_QUEUE_MAX`] buffers already wait to be sent on the connection.
    QueueFull,
}

impl SendError {
    /// Why the send failed.
    pub fn kind(&self) -> SendErrorKind {
        self.kind
    }

    /// The bytes that were not queued.
    pub fn into_data(self) -> OutBuf {
        self.data
    }
}

impl fmt::Debug for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("kind", &self.kind)
            .field("len", &self.data.len())
            .finish()
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl Error for SendError {}

/// The reason alone, as an error that is `Send + Sync` (a `SendError` is not: the bytes it
/// hands back may be a pool buffer, which belongs to its thread's loop).
impl fmt::Display for SendErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SendErrorKind::Closed => f.write_str("the connection is closed or closing"),
            SendErrorKind::QueueFull => write!(
                f,
                "{SEND_QUEUE_MAX} buffers already wait to be sent on this connection \
                 (send the rest from Handler::on_drained)"
            ),
        }
    }
}

impl Error for SendErrorKind {}

/// Queues `data` to be sent on `conn`, after everything queued before it; it goes out once
/// the sends ahead of it are done, gathered with the buffers queued beside it into one
/// vectored send ([`Io::send_vectored`]), short sends finished. A send may be made at any
/// time: a greeting from `on_open`, several replies from one `on_data`, a push from a timer.
///
/// While anything is queued or being sent on `conn`, [`Handler::on_data`] is not called for
/// it: what arrives waits (see [`crate::PENDING_MAX`]). [`Handler::on_drained`] says when the
/// queue is empty again.
///
/// ```
/// # use dispatch_loop::{Io, PoolBuf};
/// # use dispatch_net::{send, ConnId, Handler, Net};
/// # struct Hello { net: Net }
/// impl Handler for Hello {
///     # fn net(&mut self) -> &mut Net { &mut self.net }
///     fn on_open(&mut self, io: &mut Io<Self>, conn: ConnId) {
///         let _ = send(self, io, conn, "hello\n"); // static bytes: no copy
///     }
///     fn on_data(&mut self, io: &mut Io<Self>, conn: ConnId, data: PoolBuf) {
///         let header = format!("{} bytes: ", data.len());
///         let _ = send(self, io, conn, header); // an owned String
///         let _ = send(self, io, conn, data); // the pool buffer itself
///     }
/// }
/// ```
///
/// # Errors
/// Hands `data` back when `conn` is closed or closing ([`SendErrorKind::Closed`]), or when
/// [`SEND_QUEUE_MAX`] buffers already wait on it ([`SendErrorKind::QueueFull`]).
pub fn send<H: Handler>(
    ctx: &mut H,
    io: &mut Io<H>,
    conn: ConnId,
    data: impl Into<OutBuf>,
) -> Result<(), SendError> {
    let data = data.into();
    let net = ctx.net();
    let handling = net.handling;
    let open = |entry: &&mut Conn| !entry.closing && !entry.lingering;
    let Some(entry) = net.conns.get_mut(conn).filter(open) else {
        let kind = SendErrorKind::Closed;
        return Err(SendError { kind, data });
    };
    if entry.sending + entry.queue.len() >= SEND_QUEUE_MAX {
        let kind = SendErrorKind::QueueFull;
        return Err(SendError { kind, data });
    }
    entry.queue.push(data);
    if handling != Some(conn) {
        flush(ctx, io, conn);
    }
    Ok(())
}

/// Starts the send of everything queued on `id`, unless a send is in flight (its completion
/// sends the queue on).
pub(crate) fn flush<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId) {
    let Some(conn) = ctx.net().conns.get_mut(id) else {
        return;
    };
    if conn.send.is_some() || conn.queue.is_empty() || conn.closing {
        return;
    }
    let spare = std::mem::take(&mut conn.spare);
    let bufs = std::mem::replace(&mut conn.queue, spare);
    start(ctx, io, id, bufs);
}

/// Schedules the vectored send of `bufs` on `id`, with the idle deadline; no free slot (the
/// program used more operations than the loop was sized for) closes the connection.
fn start<H: Handler>(ctx: &mut H, io: &mut Io<H>, id: ConnId, bufs: Vec<OutBuf>) {
    let net = ctx.net();
    let idle = net.options.idle_timeout_ns;
    let conn = net.conns.get_mut(id).expect("an open connection");
    assert!(conn.send.is_none(), "one send in flight per connection");
    let count = bufs.len();
    let fd = conn.socket.as_raw_fd();
    match io.send_vectored(id.to_tag(), fd, bufs, on_sent::<H>) {
        Ok(op) => {
            if idle > 0 {
                io.set_deadline(op, idle).expect("just scheduled");
            }
            conn.send = Some(op);
            conn.sending = count;
            net.stats.sends += 1;
            conn.send_revived = false;
        }
        Err(error) => {
            assert!(matches!(
                error.kind,
                ScheduleErrorKind::SlotsExhausted { .. }
            ));
            drop(error.value);
            shortage(net, "a send");
            close(ctx, io, id);
        }
    }
}

fn on_sent<H: Handler>(
    ctx: &mut H,
    io: &mut Io<H>,
    tag: Tag,
    (sent, mut bufs): (io::Result<usize>, Vec<OutBuf>),
) {
    let id = ConnId::from_tag(tag);
    let net = ctx.net();
    net.handling = None;
    let idle = net.options.idle_timeout_ns;
    let conn = net
        .conns
        .get_mut(id)
        .expect("a connection with a send is open");
    conn.send = None;
    conn.sending = 0;
    let n = match sent {
        // Nothing sent of something to send: the connection can take no more.
        Ok(0) if bufs.iter().any(|buf| !buf.is_empty()) => return close(ctx, io, id),
        Ok(n) => n,
        // The idle deadline fired in the turn that brought progress: nothing was sent, and
        // the connection is not idle.
        Err(error) if error.raw_os_error() == Some(libc::ETIMEDOUT) && conn.send_revived => 0,
        Err(error) => return fail(ctx, io, id, &error),
    };
    net.stats.bytes_sent += n as u64;
    OutBuf::consume(&mut bufs, n);
    if conn.closing {
        drop(bufs);
        return pump(ctx, io, id);
    }
    if n > 0 {
        progress(io, conn, idle);
    }
    // What is left of this send goes first, then what was queued behind it.
    bufs.append(&mut conn.queue);
    if !bufs.is_empty() {
        return start(ctx, io, id, bufs);
    }
    conn.spare = bufs;
    if conn.lingering {
        return shut_write(ctx, io, id);
    }
    handle(ctx, io, id, |ctx, io| ctx.on_drained(io, id));
    pump(ctx, io, id);
}
