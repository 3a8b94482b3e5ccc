//! Backends: the one place a backend is selected, and the contract each one meets.
//!
//! A backend takes operations whose arguments live in the loop's slot table, gets them to the
//! kernel with as few syscalls as it can, and reports each one's result as `(user_data,
//! result)` with `result` either `>= 0` or `-errno`. The loop owns everything else: slots,
//! the overflow and completed queues, callbacks, cancellation bookkeeping and stats.
//!
//! The contract, which every backend file implements under the same names:
//! - `push(idx, user_data, &mut Args) -> Result<(), SqFull>`: queue one operation for the next
//!   flush. The caller guarantees `Args` does not move and is not touched until the backend
//!   reports `user_data`'s result. `SqFull` means "flush first"; nothing is lost.
//! - `flush(Wait, in_kernel, &mut Stats) -> io::Result<()>`: one syscall that submits
//!   everything pushed and, for `Wait::Until`/`Wait::Forever`, waits for at least one
//!   completion. `Wait::Poll` never blocks. A wait is never unbounded unless the loop asked
//!   for `Forever` with operations in flight. `EINTR` and CQ back-pressure are absorbed
//!   (the loop turns again).
//! - `reap(FnMut(user_data, result))`: copies out every ready completion, no syscall, and
//!   never runs a callback.
//! - `cancel_for_drop(user_data)`: best-effort cancel used by `Io`'s drop, which then reaps
//!   until every operation the kernel holds has completed.
//!
//! Today the loop runs on io_uring; the readiness backends (epoll, kqueue) and the simulator
//! implement the same contract behind this module.

#[cfg(target_os = "linux")]
pub(crate) mod io_uring;

#[cfg(target_os = "linux")]
pub(crate) use self::io_uring::IoUringBackend as Driver;

#[cfg(not(target_os = "linux"))]
compile_error!("dispatch-core has only its io_uring backend so far; kqueue comes next");

use std::time::Instant;

/// How long a flush may block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Submit and reap; never block.
    Poll,
    /// Block until at least one completion or the deadline.
    Until(Instant),
    /// Block until at least one completion.
    Forever,
}

/// `user_data` values the backend uses for itself; no slot's `user_data` can equal them,
/// since slot indices are below 2^24 (`OPS_MAX_LIMIT`).
pub(crate) const USER_DATA_WAIT_TIMEOUT: u64 = u64::MAX;
/// The `user_data` of cancellations issued by `Io`'s drop.
pub(crate) const USER_DATA_DROP_CANCEL: u64 = u64::MAX - 1;

const _: () = assert!(crate::options::OPS_MAX_LIMIT <= 1 << 24);
