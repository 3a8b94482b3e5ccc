//! What each result the backend reports means for its slot, decided while reaping (no
//! callback runs here): final, intermediate (a multishot goes on), or no result at all
//! (submit again after `EINTR`; wait for buffers after `ENOBUFS`).

use crate::completion::F_MORE;
use crate::operation::Args;
use crate::slots::{Completed, Done, Fifo, Slots, State};
use crate::stats::Stats;

/// The parts of `Io` that `reap` updates while the backend hands over results.
pub(super) struct Reaper<'io, C> {
    pub(super) slots: &'io mut Slots<C>,
    pub(super) completed: &'io mut Completed,
    pub(super) again: &'io mut Fifo,
    pub(super) buffer_wait: &'io mut Fifo,
    pub(super) in_kernel: &'io mut u32,
    pub(super) stats: &'io mut Stats,
}

impl<C> Reaper<'_, C> {
    pub(super) fn result(&mut self, user_data: u64, result: i32, flags: u32) {
        let idx = self.slots.kernel_slot(user_data);
        let args = self.slots.args(idx);
        if flags & F_MORE != 0 {
            // The kernel's multishot goes on; the slot stays in the kernel.
            assert!(args.is_multishot(), "F_MORE for a {}", args.label());
            self.completed.push(Done { idx, result, flags });
            return;
        }
        assert!(*self.in_kernel > 0);
        *self.in_kernel -= 1;
        let Some(result) = self.settle(idx, result) else {
            return;
        };
        let args = self.slots.args(idx);
        let slot = &self.slots[idx];
        // A multishot the kernel ended (or one the loop drives single-shot) after a result
        // that is not its last: re-armed, unless a cancel is under way.
        let goes_on = match args {
            Args::RecvPooled {
                multishot: true, ..
            } => result > 0,
            Args::Accept {
                multishot: true, ..
            } => result >= 0,
            _ => false,
        };
        if goes_on && !slot.cancelling {
            self.completed.push(Done {
                idx,
                result,
                flags: flags | F_MORE,
            });
            return self.again(idx);
        }
        self.slots[idx].state = State::Completed;
        self.completed.push(Done { idx, result, flags });
    }

    /// What a final result from the backend means: the result the callback gets, or `None`
    /// when the operation goes on instead (submitted again, or waiting for buffers).
    fn settle(&mut self, idx: u32, result: i32) -> Option<i32> {
        let args = self.slots.args(idx);
        let slot = &self.slots[idx];
        let pooled = matches!(args, Args::RecvPooled { .. });
        // The kernel-internal restart errnos (ERESTARTSYS and its family, 512 to 516) reach
        // user space when an operation blocked in an io_uring worker is interrupted: for the
        // loop that is a cancel, except for a close, which has released the descriptor
        // whatever it returns (closing the number again could close someone else's).
        let result = match (result, args) {
            (-516..=-512, Args::Close { .. }) => 0,
            (-516..=-512, _) => -libc::ECANCELED,
            (result, _) => result,
        };
        let result = match (result, args) {
            // A close is never retried: the descriptor is released whatever close
            // returned, and its number may already belong to someone else.
            (result, Args::Close { .. }) if result == -libc::EINTR => 0,
            // io_uring: the target is being performed and will complete on its own; the
            // cancel was requested, as on readiness backends, and the target's callback
            // tells the outcome.
            (result, Args::Cancel { .. }) if result == -libc::EALREADY => 0,
            // EINTR never escapes the layer: the operation goes out again (so does a pooled
            // receive between its two steps where io_uring has no provided-buffer ring). The
            // pool is empty: the receive waits for buffers, it does not fail.
            (result, _) if result == -libc::EINTR && !slot.cancelling => {
                self.again(idx);
                return None;
            }
            (result, _) if result == -libc::ENOBUFS && pooled && !slot.cancelling => {
                self.slots[idx].state = State::BufferWait;
                self.buffer_wait.push(self.slots.as_mut_slice(), idx);
                self.stats.pool_waits += 1;
                return None;
            }
            // ... but one being cancelled ends there, cancelled (a deadline's: timed out):
            // its cancel, in flight, may find nothing in the kernel.
            (result, _) if result == -libc::EINTR || pooled && result == -libc::ENOBUFS => {
                if slot.timed_out {
                    -libc::ETIMEDOUT
                } else {
                    -libc::ECANCELED
                }
            }
            // The loop cancelled it because its deadline passed.
            (result, _) if result == -libc::ECANCELED && slot.timed_out => -libc::ETIMEDOUT,
            (result, _) => result,
        };
        Some(result)
    }

    /// Sends the operation in slot `idx` to the backend again with the next flush.
    fn again(&mut self, idx: u32) {
        self.slots[idx].state = State::Again;
        self.again.push(self.slots.as_mut_slice(), idx);
    }
}
