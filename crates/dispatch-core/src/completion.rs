//! Turning a kernel result (`>= 0` or `-errno`) and the operation's arguments back into the
//! value its callback receives. Shared by every backend: they all report results this way.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use crate::operation::{Args, BufResult};

/// What a callback receives, before the callback's type is matched against it.
pub(crate) enum Outcome {
    Fd(io::Result<OwnedFd>),
    Buf(BufResult),
    Unit(io::Result<()>),
    Count(io::Result<u64>),
}

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

/// Converts `result` for the operation `args`. Consumes the arguments: a buffer moves into
/// the outcome, a descriptor the kernel created becomes an `OwnedFd` (closed if dropped).
pub(crate) fn outcome(args: Args, result: i32) -> Outcome {
    match args {
        Args::Empty => unreachable!("a free slot completed"),
        Args::Accept { .. } | Args::Openat { .. } => Outcome::Fd(match result {
            fd if fd >= 0 => {
                // SAFETY: on success accept and openat return a new descriptor that nothing
                // else owns; this `OwnedFd` is its only owner.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
            _ => Err(error(result)),
        }),
        Args::Recv { buf, .. } | Args::Read { buf, .. } => Outcome::Buf(filled(buf, result)),
        Args::Send { buf, .. } | Args::Write { buf, .. } => Outcome::Buf((count(result), buf)),
        Args::Close { fd } => {
            // The kernel performed the close (whatever its result, Linux releases the
            // descriptor), so the `OwnedFd` must not close it again.
            let _ = fd.into_raw_fd();
            Outcome::Unit(unit(result))
        }
        Args::Connect { .. } | Args::Shutdown { .. } | Args::Fsync { .. } => {
            Outcome::Unit(unit(result))
        }
        Args::Cancel { .. } | Args::Nop => Outcome::Unit(unit(result)),
        Args::Timeout { .. } => Outcome::Unit(match result {
            // A timeout that expired reports ETIME: for the caller that is success.
            r if r == -libc::ETIME => Ok(()),
            r => unit(r),
        }),
        Args::Wakeup { count: wakeups, .. } => Outcome::Count(match result {
            8 => Ok(wakeups),
            r if r < 0 => Err(error(r)),
            r => panic!("eventfd read returned {r} bytes, not 8"),
        }),
    }
}
