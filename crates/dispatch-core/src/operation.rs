//! Operations: their arguments as the loop stores them, the callback shapes, the results
//! callbacks receive, and the error returned when an operation cannot be scheduled.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};

use crate::io::Io;
use crate::outbuf::OutBuf;
use crate::pool::PoolBuf;

/// The caller's word about an operation, handed back to its callback unchanged: a connection
/// index, a request id, whatever tells the callback which part of the context it is about.
pub type Tag = u64;

/// Names one scheduled operation, for [`Io::cancel`] and [`Io::set_deadline`]. Stale ids
/// (the operation already completed) are detected by a 64-bit generation count, which never
/// wraps in the life of a loop, and cancel nothing. An id belongs to the loop that returned
/// it: given to another loop, it may name an unrelated operation there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId {
    pub(crate) idx: u32,
    pub(crate) generation: u64,
}

impl OpId {
    /// The `user_data` the kernel carries for this operation: the generation's low 32 bits
    /// above, the slot below. The kernel only needs to tell apart the operations it holds at
    /// once (one per slot); the low bits catch a completion for a recycled slot in the
    /// loop's assertions, and the full generation lives in the slot.
    pub(crate) fn user_data(self) -> u64 {
        (u64::from(self.generation as u32) << 32) | u64::from(self.idx)
    }

    /// The slot index a `user_data` names.
    pub(crate) fn idx_of_user_data(user_data: u64) -> u32 {
        user_data as u32
    }
}

/// A byte count and the buffer, handed back whatever happened: the loop owned the buffer
/// while the kernel could touch it and returns it with the result.
pub type BufResult = (io::Result<usize>, Vec<u8>);

/// Callback of an operation that yields a new file descriptor (accept, openat). The
/// descriptor is owned: dropping it closes it, so none leaks.
pub type FdCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<OwnedFd>);
/// Callback of an operation on a buffer (recv, send, read, write).
pub type BufCallback<C> = fn(&mut C, &mut Io<C>, Tag, BufResult);
/// Callback of an operation with no value (connect, shutdown, close, fsync, timeout, cancel,
/// nop).
pub type UnitCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<()>);
/// Callback of a wake-up wait: how many wake-ups it coalesced.
pub type CountCallback<C> = fn(&mut C, &mut Io<C>, Tag, io::Result<u64>);
/// Callback of a pooled receive ([`Io::recv_pooled`], [`Io::recv_multishot`]): the bytes in a
/// pool buffer (empty at end of stream), and whether more completions follow.
pub type PooledCallback<C> = fn(&mut C, &mut Io<C>, Tag, Shot<PoolBuf>);
/// Callback of a multishot accept ([`Io::accept_multishot`]): one accepted socket per call,
/// and whether more follow.
pub type AcceptCallback<C> = fn(&mut C, &mut Io<C>, Tag, Shot<OwnedFd>);
/// Callback of a send from a pool buffer ([`Io::send_pooled`]): the byte count sent (possibly
/// short) and the buffer, whose view is unchanged.
pub type PoolSendCallback<C> = fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, PoolBuf));
/// Callback of a vectored send ([`Io::send_vectored`]): the byte count sent (possibly short)
/// and the buffers, unchanged ([`OutBuf::consume`] drops what was sent).
pub type VectoredCallback<C> = fn(&mut C, &mut Io<C>, Tag, (io::Result<usize>, Vec<OutBuf>));

/// One completion of an operation that may complete several times (multishot).
#[derive(Debug)]
pub struct Shot<T> {
    /// This completion's result.
    pub result: io::Result<T>,
    /// `true`: the operation goes on and its callback will run again; `false`: this is its
    /// final completion (its slot is free, its id stale).
    pub more: bool,
}

impl<T> Shot<T> {
    /// An operation's final completion.
    pub(crate) fn last(result: io::Result<T>) -> Shot<T> {
        Shot {
            result,
            more: false,
        }
    }
}

/// A callback, stored in the operation's slot: a plain function pointer, no allocation.
pub(crate) enum Callback<C> {
    None,
    Fd(FdCallback<C>),
    Buf(BufCallback<C>),
    Unit(UnitCallback<C>),
    Count(CountCallback<C>),
    Pooled(PooledCallback<C>),
    Accepted(AcceptCallback<C>),
    PoolSend(PoolSendCallback<C>),
    Vectored(VectoredCallback<C>),
    /// The loop's own operation (the cancel of an operation whose deadline passed): its
    /// result is dropped, no callback runs and it is not counted as completed.
    Internal,
}

// Function pointers are `Copy` whatever `C` is; a derive would ask `C: Copy`.
impl<C> Clone for Callback<C> {
    fn clone(&self) -> Callback<C> {
        *self
    }
}

impl<C> Copy for Callback<C> {}

/// Why an operation could not be scheduled. Nothing is lost: the error carries back the value
/// the operation would have consumed (its buffer or descriptor).
pub struct ScheduleError<T> {
    /// What went wrong.
    pub kind: ScheduleErrorKind,
    /// The buffer, descriptor or path given to the operation, returned unused.
    pub value: T,
}

/// The reasons an operation cannot be scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleErrorKind {
    /// All `ops_max` slots hold operations in flight; complete some first, or raise
    /// `Options::ops_max`.
    SlotsExhausted {
        /// The configured limit.
        ops_max: u32,
    },
    /// A recv or read buffer has no spare capacity (`len == capacity`), so it could only ever
    /// read 0 bytes, which would look like end of file.
    NoSpareCapacity,
    /// A pooled receive on a loop without a pool (`Options::pool.buffers == 0`).
    NoPool,
}

impl<T> ScheduleError<T> {
    /// Drops the returned value, keeping the reason.
    pub fn into_kind(self) -> ScheduleErrorKind {
        self.kind
    }
}

impl<T> fmt::Debug for ScheduleError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduleError")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for ScheduleError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl<T> std::error::Error for ScheduleError<T> {}

/// The reason alone, as an error that is `Send + Sync` whatever the operation's value (a
/// `ScheduleError<PoolBuf>` is not: the buffer belongs to its thread's loop).
impl fmt::Display for ScheduleErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ScheduleErrorKind::SlotsExhausted { ops_max } => write!(
                f,
                "all {ops_max} operation slots are in flight (raise Options::ops_max)"
            ),
            ScheduleErrorKind::NoSpareCapacity => {
                f.write_str("the buffer has no spare capacity to receive into")
            }
            ScheduleErrorKind::NoPool => {
                f.write_str("pooled receives need a pool (set Options::pool.buffers)")
            }
        }
    }
}

impl std::error::Error for ScheduleErrorKind {}

/// An operation's arguments, in the argument table beside its slot. Everything the kernel may
/// read or write lives here (or on the heap behind it) and does not move until the completion
/// is reaped: the table is allocated once and never resized.
pub(crate) enum Args {
    /// A free slot.
    Empty,
    /// Accepts one connection, or (`multishot`) every connection until cancelled.
    Accept {
        fd: RawFd,
        multishot: bool,
    },
    /// Receives into a pool buffer picked when data arrives; once, or (`multishot`) until end
    /// of stream, an error, or a cancel.
    RecvPooled {
        fd: RawFd,
        multishot: bool,
    },
    /// Sends a pool buffer's view.
    SendPooled {
        fd: RawFd,
        buf: PoolBuf,
    },
    Connect {
        fd: RawFd,
        addr: SocketAddr,
    },
    /// Receives into `buf[len..capacity]`.
    Recv {
        fd: RawFd,
        buf: Vec<u8>,
    },
    /// Sends `buf[..]`.
    Send {
        fd: RawFd,
        buf: Vec<u8>,
    },
    /// Sends the first `GATHER_MAX` buffers of `bufs`, in order, as one message.
    SendVectored {
        fd: RawFd,
        bufs: Vec<OutBuf>,
    },
    /// Reads into `buf[len..capacity]` at file `offset`.
    Read {
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
    },
    /// Writes `buf[..]` at file `offset`.
    Write {
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
    },
    Shutdown {
        fd: RawFd,
        how: i32,
    },
    /// The descriptor is owned by the operation: closed by the kernel, or by the loop if the
    /// operation never reaches the kernel.
    Close {
        fd: OwnedFd,
    },
    Fsync {
        fd: RawFd,
    },
    Openat {
        dir: RawFd,
        path: CString,
        flags: i32,
        mode: u32,
    },
    Timeout {
        timeout_ns: u64,
    },
    Cancel {
        target: OpId,
    },
    /// Does nothing; completes on the next turn.
    Nop,
    /// Waits for the loop's waker. The result is the number of wake-ups it coalesced (at most
    /// `i32::MAX`): nothing the kernel writes lives in the argument table itself.
    Wakeup,
}

impl Args {
    /// Whether the operation may complete more than once.
    pub(crate) fn is_multishot(&self) -> bool {
        matches!(
            self,
            Args::Accept {
                multishot: true,
                ..
            } | Args::RecvPooled {
                multishot: true,
                ..
            }
        )
    }

    /// A short label for logs and assertion messages.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Args::Empty => "empty",
            Args::Accept { .. } => "accept",
            Args::RecvPooled { .. } => "recv_pooled",
            Args::SendPooled { .. } => "send_pooled",
            Args::Connect { .. } => "connect",
            Args::Recv { .. } => "recv",
            Args::Send { .. } => "send",
            Args::SendVectored { .. } => "send_vectored",
            Args::Read { .. } => "read",
            Args::Write { .. } => "write",
            Args::Shutdown { .. } => "shutdown",
            Args::Close { .. } => "close",
            Args::Fsync { .. } => "fsync",
            Args::Openat { .. } => "openat",
            Args::Timeout { .. } => "timeout",
            Args::Cancel { .. } => "cancel",
            Args::Nop => "nop",
            Args::Wakeup => "wakeup",
        }
    }
}
