//! Turning a kernel result (`>= 0` or `-errno`) and the operation's arguments back into the
//! value its callback receives. Shared by every backend: they all report results this way.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use crate::datagram::{sender, Datagram, Header, HEADER_LEN, PAYLOAD_AT};
use crate::filebuf::{Bytes, BytesList};
use crate::msg::Msg;
use crate::operation::{Args, BufResult, FileStat, RawStat};
use crate::outbuf::OutBuf;
use std::rc::Rc;

use crate::pool::{PoolBuf, PoolShared};

/// A completion's flags, in io_uring's encoding (every backend reports this way): the
/// result came with a pool buffer, whose id is in the upper 16 bits.
pub(crate) const F_BUFFER: u32 = 1;
/// More completions of this operation follow (multishot).
pub(crate) const F_MORE: u32 = 2;

/// The flags of a completion that carries pool buffer `bid`.
pub(crate) fn buffer_flags(bid: u16) -> u32 {
    F_BUFFER | (u32::from(bid) << 16)
}

/// The pool buffer a completion carries, if any.
pub(crate) fn flags_bid(flags: u32) -> Option<u16> {
    (flags & F_BUFFER != 0).then_some((flags >> 16) as u16)
}

/// The result with which a backend reports an expired timeout: io_uring's `-ETIME` on Linux;
/// the readiness engine uses the same value (`-ETIMEDOUT` where there is no `ETIME`).
#[cfg(target_os = "linux")]
pub(crate) const TIMEOUT_EXPIRED: i32 = -libc::ETIME;
#[cfg(not(target_os = "linux"))]
pub(crate) const TIMEOUT_EXPIRED: i32 = -libc::ETIMEDOUT;

#[cold]
fn error(result: i32) -> io::Error {
    assert!(result < 0, "not an error result: {result}");
    io::Error::from_raw_os_error(-result)
}

#[inline]
fn unit(result: i32) -> io::Result<()> {
    if result < 0 {
        return Err(error(result));
    }
    Ok(())
}

fn count(result: i32) -> io::Result<usize> {
    if result < 0 {
        return Err(error(result));
    }
    Ok(usize::try_from(result).expect("non-negative i32 fits usize"))
}

/// Extends `buf` over the `result` bytes the kernel wrote into its spare capacity.
fn filled(mut buf: Vec<u8>, result: i32) -> BufResult {
    (fill(&mut buf, result), buf)
}

/// [`filled`] on the buffer where it lies: extends it, and returns the count.
fn fill(buf: &mut Vec<u8>, result: i32) -> io::Result<usize> {
    let n = count(result)?;
    let len = buf.len();
    assert!(
        n <= buf.capacity() - len,
        "kernel wrote past the spare capacity"
    );
    // SAFETY: the kernel reported writing `n` bytes to `buf[len..len + n]`, which lies within
    // the capacity (asserted above); the completion has been reaped, so no one else writes
    // there any more.
    unsafe { buf.set_len(len + n) };
    Ok(n)
}

/// The value for a descriptor callback (accept, openat): a new descriptor becomes an
/// `OwnedFd`, closed if dropped.
pub(crate) fn fd_value(args: Args, result: i32) -> io::Result<OwnedFd> {
    assert!(
        matches!(args, Args::Accept { .. } | Args::Openat { .. }),
        "{}",
        args.label()
    );
    // An openat's path is freed here; an accept owns nothing.
    drop(args);
    new_fd(result)
}

/// A descriptor the kernel created (or its error).
pub(crate) fn new_fd(result: i32) -> io::Result<OwnedFd> {
    if result < 0 {
        return Err(error(result));
    }
    // SAFETY: on success accept and openat return a new descriptor that nothing else owns;
    // this `OwnedFd` is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(result) })
}

/// The value for a buffer callback (recv, send, and read and write of a `Vec<u8>`): the
/// buffer moves out with the byte count.
pub(crate) fn buf_value(args: Args, result: i32) -> BufResult {
    match args {
        Args::Recv { buf, .. } => filled(buf, result),
        Args::Send { buf, .. } => (count(result), buf),
        Args::Read { .. } | Args::Write { .. } => match file_value(args, result) {
            (count, Bytes::Vec(buf)) => (count, buf),
            (_, Bytes::Aligned(_)) => unreachable!("a Vec<u8> callback for an AlignedBuf"),
        },
        other => unreachable!("{} is not a buffer operation", other.label()),
    }
}

/// The value for a file read or write: the buffer, of the kind that went in, with the byte
/// count (a read's bytes taken into its length).
pub(crate) fn file_value(args: Args, result: i32) -> (io::Result<usize>, Bytes) {
    let (count, bytes): (io::Result<usize>, Bytes) = match args {
        Args::Read { mut buf, .. } => {
            let n = count(result);
            if let Ok(n) = n {
                // SAFETY: the read reported writing `n` bytes at the start of the spare
                // capacity (`grow` asserts they fit), and it is over.
                unsafe { buf.grow(n) };
            }
            (n, buf)
        }
        Args::Write { buf, .. } => (count(result), buf),
        other => unreachable!("{} is not a file read or write", other.label()),
    };
    (count, bytes)
}

/// The value for a vectored file read or write: the buffers, with the byte count (a read's
/// spread over them in order).
pub(crate) fn file_list_value(args: Args, result: i32) -> (io::Result<usize>, BytesList) {
    let (count, list): (io::Result<usize>, BytesList) = match args {
        Args::ReadV { mut bufs, .. } => {
            let n = count(result);
            if let Ok(n) = n {
                // SAFETY: the read reported writing `n` bytes over the buffers' spare
                // capacities in order (`grow` asserts they fit), and it is over.
                unsafe { bufs.grow(n) };
            }
            (n, bufs)
        }
        Args::WriteV { bufs, .. } => (count(result), bufs),
        other => unreachable!("{} is not a vectored file operation", other.label()),
    };
    (count, list)
}

/// The value for a statx: the fields of the buffer the operation filled in.
pub(crate) fn stat_value(args: Args, result: i32) -> io::Result<FileStat> {
    let Args::Statx { out, .. } = args else {
        unreachable!("{} is not a statx", args.label())
    };
    unit(result)?;
    Ok(file_stat(&out))
}

#[cfg(target_os = "linux")]
fn file_stat(raw: &RawStat) -> FileStat {
    FileStat {
        size: raw.stx_size,
        mode: u32::from(raw.stx_mode),
        ino: raw.stx_ino,
        nlink: u64::from(raw.stx_nlink),
        blocks: raw.stx_blocks,
        block_size: raw.stx_blksize,
        dio_mem_align: match raw.stx_mask & libc::STATX_DIOALIGN {
            0 => 0,
            _ => raw.stx_dio_mem_align,
        },
        dio_offset_align: match raw.stx_mask & libc::STATX_DIOALIGN {
            0 => 0,
            _ => raw.stx_dio_offset_align,
        },
    }
}

// The field types differ between FreeBSD and macOS (`ino_t`, `nlink_t`): a cast that is
// needed on one is the identity on the other.
#[cfg(not(target_os = "linux"))]
#[allow(clippy::unnecessary_cast)]
fn file_stat(raw: &RawStat) -> FileStat {
    FileStat {
        // The widths differ between FreeBSD and macOS: converted, the same code on both.
        size: u64::try_from(raw.st_size).unwrap_or(0),
        mode: u32::from(raw.st_mode),
        ino: raw.st_ino,
        #[allow(clippy::useless_conversion)]
        nlink: u64::from(raw.st_nlink),
        blocks: u64::try_from(raw.st_blocks).unwrap_or(0),
        block_size: u32::try_from(raw.st_blksize).unwrap_or(0),
        dio_mem_align: 0,
        dio_offset_align: 0,
    }
}

/// The value for a pooled receive: the bytes in the pool buffer the completion names, an
/// empty handle at end of stream, or the error (a buffer that came with an error, as some
/// kernels do, goes straight back to the pool).
pub(crate) fn pooled_value(pool: &Rc<PoolShared>, result: i32, flags: u32) -> io::Result<PoolBuf> {
    match (result, flags_bid(flags)) {
        (n, Some(bid)) if n > 0 => Ok(pool.lend(bid, n as u32)),
        (n, None) if n > 0 => unreachable!("a pooled receive of {n} bytes without a buffer"),
        (n, bid) => {
            if let Some(bid) = bid {
                drop(pool.lend(bid, 0));
            }
            if n == 0 {
                Ok(pool.end_of_stream())
            } else {
                Err(error(n))
            }
        }
    }
}

/// The value for a send from a pool buffer: the count and the buffer.
pub(crate) fn pool_send_value(args: Args, result: i32) -> (io::Result<usize>, PoolBuf) {
    let Args::SendPooled { buf, .. } = args else {
        unreachable!("{} is not a pooled send", args.label())
    };
    (count(result), buf)
}

/// The value for a vectored send: the count and the buffers.
pub(crate) fn vectored_value(args: Args, result: i32) -> (io::Result<usize>, Vec<OutBuf>) {
    let Args::SendVectored { bufs, .. } = args else {
        unreachable!("{} is not a vectored send", args.label())
    };
    (count(result), bufs)
}

/// Drops the value of one completion of a multishot operation whose callback will not run
/// (the loop is being dropped): a pool buffer goes back, an accepted socket is closed.
pub(crate) fn discard_shot(args: &Args, pool: Option<&Rc<PoolShared>>, result: i32, flags: u32) {
    if matches!(args, Args::Poll { .. }) {
        // A poll's result is the events that fired, no descriptor: nothing to close.
        return;
    }
    match (flags_bid(flags), pool) {
        (Some(bid), Some(pool)) => drop(pool.lend(bid, 0)),
        (Some(bid), None) => unreachable!("buffer {bid} without a pool"),
        (None, _) => drop(new_fd(result)),
    }
}

/// [`unit_value`] of the arguments where they lie, which it leaves `Empty`: a plain
/// operation's dispatch converts its result without moving the 64-byte arguments out (an
/// operation that owns something takes the by-value path). Always inlined: merely
/// `#[inline]`, it cost 6 instructions more per nop.
#[inline(always)]
pub(crate) fn unit_value_in(args: &mut Args, result: i32) -> io::Result<()> {
    match args {
        Args::Nop
        | Args::Connect { .. }
        | Args::Shutdown { .. }
        | Args::Fsync { .. }
        | Args::Fallocate { .. }
        | Args::Ftruncate { .. } => {
            // These own nothing: forgetting them skips drop glue and the read of the old value.
            std::mem::forget(std::mem::replace(args, Args::Empty));
            unit(result)
        }
        _ => unit_value(std::mem::replace(args, Args::Empty), result),
    }
}

/// [`buf_value`] of the arguments where they lie, which it leaves `Empty` (see
/// [`unit_value_in`]).
#[inline]
pub(crate) fn buf_value_in(args: &mut Args, result: i32) -> BufResult {
    let value = match args {
        // The received bytes counted in the buffer where it lies, then the buffer taken.
        Args::Recv { buf, .. } => (fill(buf, result), std::mem::take(buf)),
        Args::Send { buf, .. } => (count(result), std::mem::take(buf)),
        _ => return buf_value(std::mem::replace(args, Args::Empty), result),
    };
    // What is left owns nothing (the buffer taken is replaced by an empty `Vec`, which
    // holds no allocation): forgetting it skips drop glue.
    std::mem::forget(std::mem::replace(args, Args::Empty));
    value
}

/// The value for a unit callback: one match on the arguments, those that own nothing first.
#[inline(always)]
pub(crate) fn unit_value(args: Args, result: i32) -> io::Result<()> {
    match args {
        Args::Nop
        | Args::Connect { .. }
        | Args::Shutdown { .. }
        | Args::Fsync { .. }
        | Args::Fallocate { .. }
        | Args::Ftruncate { .. }
        | Args::Cancel { .. } => {
            // These own nothing: forgetting skips a call to drop glue on the hot path.
            std::mem::forget(args);
            unit(result)
        }
        Args::Timeout { .. } => {
            std::mem::forget(args);
            // A timeout that expired reports ETIME: for the caller that is success.
            match result {
                TIMEOUT_EXPIRED => Ok(()),
                _ => unit(result),
            }
        }
        Args::Close { fd } => {
            if result == -libc::ECANCELED {
                // Cancelled before it was performed (only `Io`'s drop does that): the
                // descriptor is still open and still ours, and dropping the `OwnedFd` closes
                // it.
                drop(fd);
            } else {
                // The close was performed (whatever its result, Linux and the BSDs release
                // the descriptor), so the `OwnedFd` must not close it again.
                let _ = fd.into_raw_fd();
            }
            unit(result)
        }
        // These own paths, which drop here.
        Args::Renameat { .. } | Args::Unlinkat { .. } | Args::Mkdirat { .. } => unit(result),
        other => unreachable!("{} is not a unit operation", other.label()),
    }
}

/// The value for a count callback (wake-up wait).
pub(crate) fn count_value(args: Args, result: i32) -> io::Result<u64> {
    assert!(
        matches!(args, Args::Wakeup),
        "{} is not a wake-up wait",
        args.label()
    );
    if result < 0 {
        return Err(error(result));
    }
    assert!(result > 0, "a wake-up wait completed without a wake-up");
    Ok(u64::try_from(result).expect("positive"))
}

/// Converts and drops the result of an operation whose callback will not run (the loop is
/// being dropped): descriptors the kernel created are closed, buffers freed or returned to
/// the pool.
pub(crate) fn discard(args: Args, result: i32, flags: u32, pool: Option<&Rc<PoolShared>>) {
    match args {
        Args::Empty => {}
        Args::RecvPooled { .. } => {
            let pool = pool.expect("a pooled receive has a pool");
            drop(pooled_value(pool, result, flags));
        }
        Args::SendPooled { .. } => drop(pool_send_value(args, result)),
        Args::SendVectored { .. } => drop(vectored_value(args, result)),
        // A receive's descriptors are owned, then closed, by the message's drop.
        Args::SendMsg { .. } | Args::RecvMsg { .. } => drop(msg_value(args, result)),
        Args::Accept { .. } | Args::Openat { .. } => drop(fd_value(args, result)),
        Args::Recv { .. } | Args::Send { .. } => drop(buf_value(args, result)),
        Args::Read { .. } | Args::Write { .. } => drop(file_value(args, result)),
        Args::ReadV { .. } | Args::WriteV { .. } => drop(file_list_value(args, result)),
        Args::Statx { .. } => drop(stat_value(args, result)),
        Args::Wakeup => drop(count_value(args, result)),
        // Owns nothing; its result names no descriptor.
        Args::Poll { .. } => {}
        _ => drop(unit_value(args, result)),
    }
}

/// The value for a message callback: the count and the message, finished (`Msg::finish`:
/// a receive's lengths, sender, flags and descriptors taken in).
pub(crate) fn msg_value(args: Args, result: i32) -> (io::Result<usize>, Msg) {
    let (Args::SendMsg { mut msg, .. } | Args::RecvMsg { mut msg, .. }) = args else {
        unreachable!("{} is not a message operation", args.label())
    };
    msg.finish(result);
    (count(result), msg)
}

/// The value for a datagram callback: the payload in its pool buffer, the sender and the
/// truncation, from the layout the backend wrote; an error as it came. A buffer that came
/// with an error (a cancelled kernel multishot's last completion) goes back to the pool.
pub(crate) fn datagram_value(
    pool: &Rc<PoolShared>,
    result: i32,
    flags: u32,
) -> io::Result<Datagram> {
    let bid = flags_bid(flags);
    let Some(bid) = bid.filter(|_| result >= 0) else {
        if let Some(bid) = bid {
            drop(pool.lend(bid, 0));
        }
        if result == 0 {
            // An empty datagram that found no buffer for its sender (io_uring's fallback
            // from the ring with the pool's free stack empty: `backend/io_uring/dgram.rs`).
            return Ok(Datagram {
                buf: pool.end_of_stream(),
                peer: None,
                truncated: false,
                len: 0,
            });
        }
        return Err(io::Error::from_raw_os_error(-result));
    };
    let used = usize::try_from(result).expect("checked non-negative");
    assert!(
        used >= PAYLOAD_AT,
        "a datagram result of {used} bytes has no header"
    );
    let mut buf = pool.lend(bid, u32::try_from(used).expect("within the buffer"));
    let header = Header::read(&buf[..HEADER_LEN]);
    let peer = sender(&buf[HEADER_LEN..PAYLOAD_AT], header.namelen);
    buf.advance(PAYLOAD_AT);
    let truncated = header.flags & libc::MSG_TRUNC as u32 != 0;
    let len = (header.payloadlen as usize).max(buf.len());
    Ok(Datagram {
        buf,
        peer,
        truncated,
        len,
    })
}
