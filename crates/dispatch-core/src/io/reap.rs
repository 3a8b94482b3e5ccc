//! What each result the backend reports means for its slot, decided while reaping (no
//! callback runs here): final, intermediate (a multishot goes on), or no result at all
//! (submit again after `EINTR`; wait for buffers after `ENOBUFS`).

use super::Callback;
use crate::completion::{F_MORE, TIMEOUT_EXPIRED};
use crate::operation::Args;
use crate::slots::{Completed, Done, Fifo, Slots, State, NO_SLOT};
use crate::stats::Stats;

/// The parts of `Io` that `reap` updates while the backend hands over results.
pub(super) struct Reaper<'io, C> {
    pub(super) slots: &'io mut Slots<Callback<C>>,
    pub(super) completed: &'io mut Completed,
    pub(super) again: &'io mut Fifo,
    pub(super) buffer_wait: &'io mut Fifo,
    /// Targets still in flight whose cancel answered "not found" (held, `hold_answer`) or
    /// "already running" in this reap: the kernel may have lost the cancel, so the loop
    /// times resends (`Io::time_resends`).
    pub(super) resend: &'io mut Fifo,
    pub(super) in_kernel: &'io mut u32,
    pub(super) stats: &'io mut Stats,
    /// Final results equal to an expired timeout's (`ETIME`) in this reap: with two or more,
    /// the loop puts the timeouts among them in deadline order.
    pub(super) expired: u32,
}

impl<C> Reaper<'_, C> {
    /// Takes one result from the backend. The common case, a final result (`>= 0`) of a
    /// plain operation (not `Slot::special`: no multishot, pooled receive, cancel or held
    /// cancel's answer), is decided here: `settle` would return it unchanged, and nothing
    /// goes on after it. Everything else (errors, intermediate results, special operations)
    /// takes the full path, out of line, so that plain operations do not pay for what only
    /// those need.
    #[inline]
    pub(super) fn result(&mut self, user_data: u64, result: i32, flags: u32) {
        let idx = self.slots.kernel_slot(user_data);
        let slot = &mut self.slots[idx];
        if flags & F_MORE == 0 && result >= 0 && !slot.special {
            // Derivable from `special` being clear (O(1), but debug-only on this path).
            debug_assert_eq!(slot.held_cancel, NO_SLOT);
            debug_assert!(!slot.pool_waiting);
            assert!(*self.in_kernel > 0);
            *self.in_kernel -= 1;
            slot.state = State::Completed;
            self.completed.push(Done { idx, result, flags });
            return;
        }
        self.result_special(idx, result, flags);
    }

    /// [`Reaper::result`] for every result but the common case. Out of line, not cold: a
    /// server's multishot receive comes this way for every arrival.
    #[inline(never)]
    fn result_special(&mut self, idx: u32, result: i32, flags: u32) {
        if result != -libc::ENOBUFS {
            // A pooled receive that waited for a buffer has had one (or ended): its wait is
            // over.
            self.slots[idx].pool_waiting = false;
        }
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
        if self.hold_answer(idx, result) {
            return;
        }
        let args = self.slots.args(idx);
        let slot = &self.slots[idx];
        // A multishot the kernel ended (or one the loop drives single-shot) after a result
        // that is not its last: re-armed with the next turn, unless a cancel is under way.
        // (Not in this turn: a receive tried again before this turn's callbacks have sent
        // their replies finds nothing, and costs the readiness engine a receive, an arm and a
        // wake-up that the next turn's try avoids; the price is that a burst the kernel's
        // multishot reaps in one turn takes the loop's emulation several.)
        let goes_on = goes_on(args, result);
        if goes_on && !slot.cancelling {
            self.completed.push(Done {
                idx,
                result,
                flags: flags | F_MORE,
            });
            return self.again(idx);
        }
        // The target of a cancel (which is in flight, so the target's final callback had
        // not run when it was scheduled) completed before the kernel found it: the cancel
        // still answers `Ok`, and the target's callback says how it ended.
        let result = match args {
            Args::Cancel { .. } if result == -libc::ENOENT => 0,
            _ => result,
        };
        self.slots[idx].state = State::Completed;
        self.completed.push(Done { idx, result, flags });
        self.expired += u32::from(result == TIMEOUT_EXPIRED);
        // A cancel whose answer waited for this result gets it now: `Ok`, as above.
        let held = std::mem::replace(&mut self.slots[idx].held_cancel, NO_SLOT);
        if held < self.slots.capacity() {
            assert_eq!(self.slots[held].state, State::Held);
            self.slots[held].state = State::Completed;
            self.completed.push(Done {
                idx: held,
                result: 0,
                flags: 0,
            });
        }
    }

    /// Holds the answer of a cancel that found nothing while its target is still in the
    /// kernel (the kernel can post that before the target's own `ECANCELED`, or have missed
    /// the target): it comes after the target's result, and the cancel is resent until
    /// then. `true` when held.
    fn hold_answer(&mut self, idx: u32, result: i32) -> bool {
        let Args::Cancel { target } = *self.slots.args(idx) else {
            return false;
        };
        if result != -libc::ENOENT {
            return false;
        }
        let Some(target_idx) = self.slots.lookup(target) else {
            return false;
        };
        let target_slot = &self.slots[target_idx];
        if target_slot.state != State::Kernel || target_slot.cancel_by != idx {
            return false;
        }
        self.slots[target_idx].held_cancel = idx;
        self.slots[target_idx].special = true;
        self.slots[idx].state = State::Held;
        self.arm_resend(target_idx);
        true
    }

    /// Has the loop time resends of the cancel of the target in slot `idx` (once: a target
    /// already resending keeps its schedule).
    fn arm_resend(&mut self, idx: u32) {
        if !self.slots[idx].resending() {
            self.resend.push(self.slots.as_mut_slice(), idx);
        }
    }

    /// The cancel in slot `idx` found its target running, and the kernel interrupts it; but
    /// kernels with the io-wq race (see `io/deadline.rs`) can lose that interruption, so a
    /// target still in flight gets its cancel sent again until it ends.
    fn resend_if_in_flight(&mut self, idx: u32) {
        let Args::Cancel { target } = *self.slots.args(idx) else {
            unreachable!("a cancel's arguments");
        };
        let Some(target_idx) = self.slots.lookup(target) else {
            return;
        };
        let slot = &self.slots[target_idx];
        if slot.state == State::Kernel && slot.cancelling && slot.cancel_by == idx {
            self.arm_resend(target_idx);
        }
    }

    /// What a final result from the backend means: the result the callback gets, or `None`
    /// when the operation goes on instead (submitted again, or waiting for buffers).
    fn settle(&mut self, idx: u32, result: i32) -> Option<i32> {
        let args = self.slots.args(idx);
        let slot = &self.slots[idx];
        let (cancelling, timed_out) = (slot.cancelling, slot.timed_out);
        let pooled = matches!(args, Args::RecvPooled { .. });
        let is_close = matches!(args, Args::Close { .. });
        let is_cancel = matches!(args, Args::Cancel { .. });
        // The kernel-internal restart errnos (ERESTARTSYS and its family, 512 to 516) reach
        // user space when an operation blocked in an io_uring worker is interrupted: for the
        // loop that is a cancel, except for a close, which has released the descriptor
        // whatever it returns (closing the number again could close someone else's). A
        // close is never retried after EINTR either, for the same reason.
        if is_close && (result == -libc::EINTR || (-516..=-512).contains(&result)) {
            return Some(0);
        }
        let interrupted = (-516..=-512).contains(&result);
        if is_cancel {
            let answer = match result {
                // io_uring: the target is being performed and will complete on its own; the
                // cancel was requested, as on readiness backends, and the target's callback
                // tells the outcome.
                _ if result == -libc::EALREADY => 0,
                _ if interrupted => -libc::ECANCELED,
                _ => result,
            };
            if result == -libc::EALREADY {
                self.resend_if_in_flight(idx);
            }
            return Some(answer);
        }
        // EINTR never escapes the layer: the operation goes out again (so does a pooled
        // receive between its steps where io_uring has no provided-buffer ring). The pool is
        // empty: the receive waits for buffers, it does not fail.
        let again = result == -libc::EINTR;
        let dry = pooled && result == -libc::ENOBUFS;
        if again && !cancelling {
            self.again(idx);
            return None;
        }
        if dry && !cancelling {
            self.slots[idx].state = State::BufferWait;
            self.buffer_wait.push(self.slots.as_mut_slice(), idx);
            // Once per wait, however often the receive is tried again in vain.
            let slot = &mut self.slots[idx];
            slot.special = true;
            self.stats.pool_waits += u64::from(!std::mem::replace(&mut slot.pool_waiting, true));
            return None;
        }
        // ... but one being cancelled ends there, cancelled (a deadline's: timed out): its
        // cancel, in flight, may find nothing in the kernel, and still answers `Ok`.
        let cancelled = again || dry || interrupted || result == -libc::ECANCELED;
        Some(match (cancelled, timed_out) {
            (true, true) => -libc::ETIMEDOUT,
            (true, false) => -libc::ECANCELED,
            (false, _) => result,
        })
    }

    /// Sends the operation in slot `idx` to the backend again with the next flush.
    fn again(&mut self, idx: u32) {
        self.slots[idx].state = State::Again;
        self.again.push(self.slots.as_mut_slice(), idx);
    }
}

/// Whether a multishot's final result from the backend is one the loop re-arms after: a
/// receive's bytes, an accepted socket, a poll's events (an error or the end of stream ends
/// it).
fn goes_on(args: &Args, result: i32) -> bool {
    match args {
        // A datagram, even an empty one (which io_uring's fallback from the ring may report
        // as 0 without a buffer), is no end: datagram sockets have none.
        Args::RecvPooled {
            multishot: true,
            datagram: true,
            ..
        } => result >= 0,
        Args::RecvPooled {
            multishot: true, ..
        } => result > 0,
        Args::Accept {
            multishot: true, ..
        } => result >= 0,
        Args::Poll {
            multishot: true, ..
        } => result > 0,
        _ => false,
    }
}
