//! Turning a kernel result (`>= 0` or `-errno`) and the operation's arguments back into the
//! value its callback receives. Shared by every backend: they all report results this way.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use crate::operation::{Args, BufResult};

/// The result with which a backend reports an expired timeout: io_uring's `-ETIME` on Linux;
/// the readiness engine uses the same value (`-ETIMEDOUT` where there is no `ETIME`).
#[cfg(target_os = "linux")]
pub(crate) const TIMEOUT_EXPIRED: i32 = -libc::ETIME;
#[cfg(not(target_os = "linux"))]
pub(crate) const TIMEOUT_EXPIRED: i32 = -libc::ETIMEDOUT;

fn error(result: i32) -> io::Error {
    assert!(result < 0, "not an error result: {result}");
    io::Error::from_raw_os_error(-result)
}

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
    match count(result) {
        Ok(n) => {
            let len = buf.len();
            assert!(
                n <= buf.capacity() - len,
                "kernel wrote past the spare capacity"
            );
            // SAFETY: the kernel reported writing `n` bytes to `buf[len..len + n]`, which lies
            // within the capacity (asserted above); the completion has been reaped, so no one
            // else writes there any more.
            unsafe { buf.set_len(len + n) };
            (Ok(n), buf)
        }
        Err(error) => (Err(error), buf),
    }
}

/// The value for a descriptor callback (accept, openat): a new descriptor becomes an
/// `OwnedFd`, closed if dropped.
pub(crate) fn fd_value(args: Args, result: i32) -> io::Result<OwnedFd> {
    assert!(
        matches!(args, Args::Accept { .. } | Args::Openat { .. }),
        "{}",
        args.label()
    );
    if result < 0 {
        return Err(error(result));
    }
    // SAFETY: on success accept and openat return a new descriptor that nothing else owns;
    // this `OwnedFd` is its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(result) })
}

/// The value for a buffer callback (recv, read, send, write): the buffer moves out with the
/// byte count.
pub(crate) fn buf_value(args: Args, result: i32) -> BufResult {
    match args {
        Args::Recv { buf, .. } | Args::Read { buf, .. } => filled(buf, result),
        Args::Send { buf, .. } | Args::Write { buf, .. } => (count(result), buf),
        other => unreachable!("{} is not a buffer operation", other.label()),
    }
}

/// The value for a unit callback.
pub(crate) fn unit_value(args: Args, result: i32) -> io::Result<()> {
    if let Args::Close { fd } = args {
        if result == -libc::ECANCELED {
            // Cancelled before it was performed (only `Io`'s drop does that): the descriptor
            // is still open and still ours, and dropping the `OwnedFd` closes it.
            drop(fd);
        } else {
            // The close was performed (whatever its result, Linux and the BSDs release the
            // descriptor), so the `OwnedFd` must not close it again.
            let _ = fd.into_raw_fd();
        }
        return unit(result);
    }
    let value = match &args {
        // A timeout that expired reports ETIME: for the caller that is success.
        Args::Timeout { .. } if result == TIMEOUT_EXPIRED => Ok(()),
        Args::Timeout { .. }
        | Args::Connect { .. }
        | Args::Shutdown { .. }
        | Args::Fsync { .. }
        | Args::Cancel { .. }
        | Args::Nop => unit(result),
        other => unreachable!("{} is not a unit operation", other.label()),
    };
    // The variants above own nothing: forgetting skips a call to drop glue on the hot path.
    std::mem::forget(args);
    value
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
/// being dropped): descriptors the kernel created are closed, buffers freed.
pub(crate) fn discard(args: Args, result: i32) {
    match args {
        Args::Empty => {}
        Args::Accept { .. } | Args::Openat { .. } => drop(fd_value(args, result)),
        Args::Recv { .. } | Args::Read { .. } | Args::Send { .. } | Args::Write { .. } => {
            drop(buf_value(args, result))
        }
        Args::Wakeup => drop(count_value(args, result)),
        _ => drop(unit_value(args, result)),
    }
}
