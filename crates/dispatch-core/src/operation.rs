//! Operations: their arguments as the loop stores them, the callback shapes, the results
//! callbacks receive, and the error returned when an operation cannot be scheduled.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};

use crate::filebuf::{Bytes, BytesList};
use crate::msg::Msg;
use crate::outbuf::OutBuf;
use crate::pool::PoolBuf;

/// The caller's word about an operation, handed back to its callback unchanged: a connection
/// index, a request id, whatever tells the callback which part of the context it is about.
pub type Tag = u64;

/// Names one scheduled operation, for [`crate::Io::cancel`] and
/// [`crate::Io::set_deadline`]. Stale ids (the operation already completed) are detected by
/// a 64-bit generation count, which never wraps in the life of a loop, and cancel nothing.
/// An id belongs to the loop that returned it: given to another loop, it may name an
/// unrelated operation there.
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
        OpId::user_data_of(self.idx, self.generation)
    }

    /// [`OpId::user_data`] of the operation in slot `idx` at `generation`.
    pub(crate) fn user_data_of(idx: u32, generation: u64) -> u64 {
        (u64::from(generation as u32) << 32) | u64::from(idx)
    }

    /// The slot index a `user_data` names.
    pub(crate) fn idx_of_user_data(user_data: u64) -> u32 {
        user_data as u32
    }

    /// The low 32 bits of the generation a `user_data` carries.
    pub(crate) fn generation_of_user_data(user_data: u64) -> u32 {
        (user_data >> 32) as u32
    }
}

/// A byte count and the buffer, handed back whatever happened: the loop owned the buffer
/// while the kernel could touch it and returns it with the result.
pub type BufResult = (io::Result<usize>, Vec<u8>);

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
    /// A datagram receive into pool buffers too small to hold the header and sender the
    /// kernel writes before the payload (`Options::pool.buffer_size` below `size_min`).
    PoolBuffersTooSmall {
        /// The smallest buffer size that works.
        size_min: u32,
    },
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
            ScheduleErrorKind::PoolBuffersTooSmall { size_min } => write!(
                f,
                "datagram receives need pool buffers of at least {size_min} bytes"
            ),
        }
    }
}

impl std::error::Error for ScheduleErrorKind {}

/// What `statx(2)` fills in (on Linux); `stat` elsewhere, which `fstatat(2)` fills in.
#[cfg(target_os = "linux")]
pub(crate) type RawStat = libc::statx;
#[cfg(not(target_os = "linux"))]
pub(crate) type RawStat = libc::stat;

/// A fresh, zeroed [`RawStat`] for an operation to fill in.
#[allow(unsafe_code)]
pub(crate) fn raw_stat() -> Box<RawStat> {
    // SAFETY: `statx` and `stat` are plain C structs of integers, for which all-zero bytes
    // are a valid value.
    Box::new(unsafe { std::mem::zeroed() })
}

/// What [`crate::Io::statx`] reports about a file: the fields every backend fills in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// File type and permissions (`st_mode`: `libc::S_IFMT` masks the type).
    pub mode: u32,
    /// Inode number.
    pub ino: u64,
    /// Hard links.
    pub nlink: u64,
    /// Space allocated, in 512-byte units (what `fallocate` reserves shows here).
    pub blocks: u64,
    /// The preferred block size for I/O.
    pub block_size: u32,
    /// Direct I/O: the alignment a buffer's address needs (`STATX_DIOALIGN`, Linux 6.1
    /// and later, on file systems that report it); 0 where the kernel does not say (then
    /// the logical block size of the device, usually 512 or 4096, is the safe choice).
    pub dio_mem_align: u32,
    /// Direct I/O: the alignment file offsets and lengths need; 0 where not reported.
    pub dio_offset_align: u32,
}

// The file type bits of `st_mode`, the same on Linux, FreeBSD and macOS (whose `mode_t`
// widths differ, hence constants of one type).
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;

impl FileStat {
    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
}

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
    /// of stream, an error, or a cancel. A `datagram` receive is a `recvmsg` that writes the
    /// sender and flags into the buffer before the payload (`datagram.rs`'s layout); it
    /// ends on an error or a cancel only (an empty datagram is no end of stream).
    RecvPooled {
        fd: RawFd,
        multishot: bool,
        datagram: bool,
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
    /// `sendmsg`: the message's buffers, peer and descriptors (`msg.rs`).
    SendMsg {
        fd: RawFd,
        msg: Msg,
    },
    /// `recvmsg` into the message's buffers, address and control storage (`msg.rs`).
    RecvMsg {
        fd: RawFd,
        msg: Msg,
    },
    /// Reads into `buf[len..capacity]` at file `offset`.
    Read {
        fd: RawFd,
        buf: Bytes,
        offset: u64,
    },
    /// Writes `buf[..]` at file `offset`.
    Write {
        fd: RawFd,
        buf: Bytes,
        offset: u64,
    },
    /// Reads into the spare capacities of the first `GATHER_MAX` of `bufs`, in order, at
    /// `offset`, with `RWF_*` `flags`.
    ReadV {
        fd: RawFd,
        bufs: BytesList,
        offset: u64,
        flags: i32,
    },
    /// Writes the first `GATHER_MAX` of `bufs`, in order, at `offset`, with `RWF_*` `flags`.
    WriteV {
        fd: RawFd,
        bufs: BytesList,
        offset: u64,
        flags: i32,
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
    /// `fsync`, or `fdatasync` when `datasync`.
    Fsync {
        fd: RawFd,
        datasync: bool,
    },
    Fallocate {
        fd: RawFd,
        mode: i32,
        offset: u64,
        len: u64,
    },
    Ftruncate {
        fd: RawFd,
        len: u64,
    },
    /// `statx` (`fstatat` off Linux) into `out`, boxed so that it stays put while the
    /// kernel writes it.
    Statx {
        dir: RawFd,
        path: CString,
        flags: i32,
        out: Box<RawStat>,
    },
    Renameat {
        old_dir: RawFd,
        old_path: CString,
        new_dir: RawFd,
        new_path: CString,
        flags: u32,
    },
    Unlinkat {
        dir: RawFd,
        path: CString,
        flags: i32,
    },
    Mkdirat {
        dir: RawFd,
        path: CString,
        mode: u32,
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
    /// Waits until `fd` reports one of the `poll(2)` `events` (or a hang-up or error);
    /// once, or (`multishot`) until cancelled or an error (`io/poll.rs`).
    Poll {
        fd: RawFd,
        events: u32,
        multishot: bool,
    },
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
            } | Args::Poll {
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
            Args::RecvPooled { datagram: true, .. } => "recv_from_multishot",
            Args::RecvPooled { .. } => "recv_pooled",
            Args::SendPooled { .. } => "send_pooled",
            Args::Connect { .. } => "connect",
            Args::Recv { .. } => "recv",
            Args::Send { .. } => "send",
            Args::SendVectored { .. } => "send_vectored",
            Args::SendMsg { .. } => "sendmsg",
            Args::RecvMsg { .. } => "recvmsg",
            Args::Read { .. } => "read",
            Args::Write { .. } => "write",
            Args::Shutdown { .. } => "shutdown",
            Args::Close { .. } => "close",
            Args::ReadV { .. } => "read_vectored",
            Args::WriteV { .. } => "write_vectored",
            Args::Fsync {
                datasync: false, ..
            } => "fsync",
            Args::Fsync { datasync: true, .. } => "fdatasync",
            Args::Fallocate { .. } => "fallocate",
            Args::Ftruncate { .. } => "ftruncate",
            Args::Statx { .. } => "statx",
            Args::Renameat { .. } => "renameat",
            Args::Unlinkat { .. } => "unlinkat",
            Args::Mkdirat { .. } => "mkdirat",
            Args::Openat { .. } => "openat",
            Args::Timeout { .. } => "timeout",
            Args::Cancel { .. } => "cancel",
            Args::Nop => "nop",
            Args::Wakeup => "wakeup",
            Args::Poll { .. } => "poll",
        }
    }
}
