//! Per-operation deadlines, on every backend alike: a heap of deadlines in the loop, which
//! bounds each wait in the kernel and, once a deadline passes, cancels the operation and
//! reports its `ECANCELED` as `ETIMEDOUT`.
//!
//! Why a loop timer and not io_uring's linked timeouts (`IOSQE_IO_LINK` + `LINK_TIMEOUT`):
//! a deadline that does not fire, the common case (a connect that succeeds, a connection
//! that talks), then costs no SQE, no kernel timer and no syscall: only a heap entry. A
//! linked timeout costs an SQE and an hrtimer per operation (about 19% in a published echo
//! benchmark), cannot follow an idle timeout that is pushed back on every message, and
//! cannot be attached after the operation's SQE is in the ring. The price: an expired
//! operation is cancelled at the next turn, so it ends at or after its deadline, never
//! before.
//!
//! The same heap times the resends of cancels. A cancel that finds its target running in
//! one of io_uring's kernel workers answers `EALREADY` and interrupts it; the target then
//! ends with `EINTR` (`ERESTARTSYS` on some kernels), and on Linux 6.1 and 6.12 that came
//! turns after the cancel's answer. The target therefore stays `cancelling` until it ends,
//! so that its `EINTR` means "cancelled" (the loop once took it for a spurious `EINTR` and
//! submitted the `openat` of a FIFO again, which then blocked for good). The kernel can
//! also miss a target a worker is just taking up (by the kernel's source: a request is off
//! the queue before it is the worker's current work, and the worker runs task work, which
//! clears the interrupting signal, after a cancel can already see it), answering `ENOENT`,
//! or `EALREADY` with nothing interrupted. So when a cancel answers either while its target
//! is still in the kernel, the target goes into the heap under its own slot, marked
//! as resending (so that the entry is not taken for a deadline: a target whose cancel was
//! answered has no use for one), and each time the entry comes due the loop has the backend
//! cancel it again (1 ms, then 2, 4, ... at most a second apart) until its result arrives.
//! An `ENOENT` answer is also held (`Held`) until the target's result comes, then answered
//! `Ok` (see `Io::cancel`).

use super::{Callback, Io};
use crate::error::DeadlineError;
use crate::operation::{Args, OpId};
use crate::slots::{Budget, State};
use crate::timer::TimerHeap;

/// How long a cancel that may be lost waits for its target before the loop sends it again,
/// the first time; each resend doubles it, up to `CANCEL_RESEND_MAX_NS`.
const CANCEL_RESEND_NS: u64 = 1_000_000;
/// The longest wait between two resends of a cancel: one second.
const CANCEL_RESEND_MAX_NS: u64 = 1_000_000_000;

/// The deadlines of operations in flight, by slot, in nanoseconds on the loop's clock.
///
/// A deadline moved later (an idle timeout pushed back on every message, the common case)
/// does not move in the heap: the slot's entry stays where it was, earlier, and the new
/// deadline waits in `later`. When the entry comes due, the loop finds the later deadline
/// and files the entry again there. So a busy connection's idle timeout costs one store per
/// message instead of a removal and an insertion in the heap, and at most one early wake-up
/// of the loop per timeout period; a deadline still fires at or after the last one set,
/// never before. Moving a deadline earlier goes through the heap, at once.
///
/// Nor does setting a deadline read the clock: it records the timeout (`pending`), and the
/// next turn, which reads the clock once anyway, files every deadline set since from that
/// reading (`stamp`). The reading comes after the call, so a deadline is never early; it
/// is late by what was left of the turn's callbacks, microseconds. A clock read per message
/// was 1.2% of echo-server's CPU (`clock_gettime` in the vDSO, `perf`).
pub(super) struct Deadlines {
    heap: TimerHeap,
    /// Per slot: a deadline later than the slot's heap entry, which replaces it when the
    /// entry comes due; 0 for none. Non-zero only while the slot has a heap entry. Zeroed
    /// at allocation, so its pages are backed only as far as deadlines reach.
    later: Box<[u64]>,
    /// Per slot: a timeout set since the last turn's clock reading, plus one; 0 for none.
    pending: Box<[u64]>,
    /// The slots whose `pending` was set, in order (a slot may be listed twice if it was
    /// forgotten and set again; `pending` decides). Never grows: full, a deadline is filed
    /// from a clock read of its own.
    stamp: Vec<u32>,
}

impl Deadlines {
    pub(super) fn new(slots_max: u32) -> Deadlines {
        Deadlines {
            heap: TimerHeap::new(slots_max),
            later: vec![0; slots_max as usize].into_boxed_slice(),
            pending: vec![0; slots_max as usize].into_boxed_slice(),
            stamp: Vec::with_capacity(slots_max as usize),
        }
    }

    /// Records slot `idx`'s deadline as `timeout_ns` from the next clock reading; `false`
    /// when the list of such slots is full (the caller reads the clock itself).
    fn defer(&mut self, idx: u32, timeout_ns: u64) -> bool {
        if self.pending[idx as usize] == 0 {
            if self.stamp.len() == self.stamp.capacity() {
                return false;
            }
            self.stamp.push(idx);
        }
        self.pending[idx as usize] = timeout_ns.saturating_add(1);
        true
    }

    /// Files every deadline set since the last reading, from `now_ns`.
    fn stamp_all(&mut self, now_ns: u64) {
        for at in 0..self.stamp.len() {
            let idx = self.stamp[at];
            let timeout = std::mem::take(&mut self.pending[idx as usize]);
            if timeout > 0 {
                self.set(idx, now_ns.saturating_add(timeout - 1));
            }
        }
        self.stamp.clear();
    }

    /// Whether slot `idx` has a deadline, filed or not yet.
    fn has(&self, idx: u32) -> bool {
        self.heap.contains(idx) || self.pending[idx as usize] != 0
    }

    /// Files slot `idx`'s deadline at `deadline_ns`, replacing any it had: in place when it
    /// moves later (see the type's docs), in the heap otherwise.
    fn set(&mut self, idx: u32, deadline_ns: u64) {
        if self.heap.contains(idx) && self.heap.deadline_of(idx) <= deadline_ns {
            self.later[idx as usize] = deadline_ns;
            return;
        }
        self.forget(idx);
        self.heap.insert(idx, deadline_ns);
    }

    /// The next slot whose deadline has passed at `now_ns`; an entry that comes due with a
    /// later deadline waiting is filed again there instead.
    fn pop_expired(&mut self, now_ns: u64) -> Option<u32> {
        while let Some(idx) = self.heap.pop_expired(now_ns) {
            let later = std::mem::take(&mut self.later[idx as usize]);
            if later <= now_ns {
                return Some(idx);
            }
            self.heap.insert(idx, later);
        }
        None
    }

    /// The earliest deadline, in nanoseconds on the loop's clock.
    /// Only after `stamp_all`: deadlines set since are not filed yet.
    pub(super) fn earliest_ns(&self) -> Option<u64> {
        assert!(self.stamp.is_empty(), "deadlines wait to be filed");
        self.heap.peek_deadline_ns()
    }

    /// Forgets slot `idx`'s deadline, if it has one (its operation completed).
    #[inline]
    pub(super) fn forget(&mut self, idx: u32) {
        self.pending[idx as usize] = 0;
        if self.heap.contains(idx) {
            self.heap.remove(idx);
            self.later[idx as usize] = 0;
        }
    }
}

impl<C> Io<C> {
    /// Gives the operation `id` a deadline `timeout_ns` nanoseconds from now (replacing any
    /// deadline it had): if it has not completed by then, the loop cancels it and its
    /// callback gets `ETIMEDOUT` (or its real result, if it completed first). Never early:
    /// the operation ends at or after its deadline, on the turn after it passes. The loop
    /// measures the timeout from its next clock reading, at the start of its next turn (it
    /// reads no clock per call), so the deadline may fall later than `timeout_ns` after the
    /// call by what is left of the current turn's callbacks, never earlier.
    ///
    /// Call it right after scheduling (a connect with a deadline), or again whenever the
    /// deadline should move (an idle timeout pushed back on every message). Deadlines cost
    /// no syscall unless they fire. A [`Io::cancel`] of an operation whose deadline has fired
    /// but which has not completed yet answers `EALREADY`. Once a cancel of the operation has
    /// been answered while the operation goes on (the loop then sends the cancel again until
    /// it ends: see [`Io::cancel`]), the cancel decides how it ends: `set_deadline` is
    /// accepted and changes nothing, and [`Io::clear_deadline`] answers `false`.
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// use std::os::unix::net::UnixStream;
    /// use dispatch_loop::{BufResult, Io, Options, Tag};
    ///
    /// fn on_recv(timed_out: &mut bool, _: &mut Io<bool>, _: Tag, (result, _buf): BufResult) {
    ///     let error = result.expect_err("nothing was sent");
    ///     *timed_out = error.raw_os_error() == Some(libc::ETIMEDOUT);
    /// }
    ///
    /// let (socket, _silent_peer) = UnixStream::pair().unwrap();
    /// let mut io: Io<bool> = Io::new(&Options::new(4)).expect("a backend");
    /// let recv = io.recv(0, socket.as_raw_fd(), Vec::with_capacity(64), on_recv).unwrap();
    /// io.set_deadline(recv, 10_000_000).expect("in flight"); // 10 ms
    /// let mut timed_out = false;
    /// io.run_until_idle(&mut timed_out).expect("run");
    /// assert!(timed_out);
    /// assert_eq!(io.stats().deadlines_expired, 1);
    /// ```
    ///
    /// # Errors
    /// [`DeadlineError::NotInFlight`] when `id` has completed (or is stale);
    /// [`DeadlineError::NotCancellable`] for a close or a cancel.
    pub fn set_deadline(&mut self, id: OpId, timeout_ns: u64) -> Result<(), DeadlineError> {
        let idx = self.live(id)?;
        if matches!(
            self.slots.args(idx),
            Args::Close { .. } | Args::Cancel { .. }
        ) {
            return Err(DeadlineError::NotCancellable);
        }
        if self.slots[idx].resending() {
            // Cancelled already, and its entry times the cancel's resend: the cancel decides
            // how it ends, and the resends must go on.
            return Ok(());
        }
        self.slots[idx].special = true;
        if !self.deadlines.defer(idx, timeout_ns) {
            let deadline_ns = self.clock.now_ns().saturating_add(timeout_ns);
            self.deadlines.set(idx, deadline_ns);
        }
        Ok(())
    }

    /// Removes the deadline of the operation `id`; `Ok(true)` if it had one.
    ///
    /// # Errors
    /// [`DeadlineError::NotInFlight`] when `id` has completed (or is stale).
    pub fn clear_deadline(&mut self, id: OpId) -> Result<bool, DeadlineError> {
        let idx = self.live(id)?;
        if matches!(
            self.slots.args(idx),
            Args::Close { .. } | Args::Cancel { .. }
        ) {
            // Never had one: `set_deadline` refuses them.
            return Ok(false);
        }
        if self.slots[idx].resending() {
            // The entry times its cancel's resend, not a deadline: it stays.
            return Ok(false);
        }
        let had = self.deadlines.has(idx);
        self.deadlines.forget(idx);
        Ok(had)
    }

    /// The slot of `id` if its operation can still be timed out.
    fn live(&self, id: OpId) -> Result<u32, DeadlineError> {
        let idx = self.slots.lookup(id).ok_or(DeadlineError::NotInFlight)?;
        let slot = &self.slots[idx];
        if slot.state == State::Completed || slot.timed_out {
            return Err(DeadlineError::NotInFlight);
        }
        Ok(idx)
    }

    /// Times the first resend of the cancel of each target the reap just done found
    /// unanswered (see the module's docs on why), replacing any deadline it had.
    #[cold]
    pub(super) fn time_resends(&mut self) {
        let now_ns = self.clock.now_ns();
        while let Some(idx) = self.resend.pop(self.slots.as_mut_slice()) {
            // Its result may have come in the same reap; a resend may be timed already.
            let slot = &mut self.slots[idx];
            if slot.state == State::Kernel && !slot.resending() {
                slot.resends = 1;
                self.deadlines.forget(idx);
                self.deadlines.heap.insert(idx, now_ns + CANCEL_RESEND_NS);
            }
        }
    }

    /// Has the backend cancel the operation in slot `idx` (being cancelled, still in the
    /// kernel) again, with no slot (a loop whose every cancel slot is in flight must still
    /// resend), and times the next resend. The cancel in flight keeps deciding the answer.
    fn resend_cancel(&mut self, idx: u32, now_ns: u64) {
        let target = self.slots.id(idx);
        // A full SQ (io_uring): sent at the next resend instead.
        if self
            .backend
            .resend_cancel(target.user_data(), &mut self.stats)
        {
            self.stats.cancels_resent += 1;
        }
        let slot = &mut self.slots[idx];
        let wait_ns = CANCEL_RESEND_NS << slot.resends.min(10);
        let wait_ns = wait_ns.min(CANCEL_RESEND_MAX_NS);
        slot.resends = slot.resends.saturating_add(1);
        self.deadlines.heap.insert(idx, now_ns + wait_ns);
    }

    /// Cancels every operation whose deadline has passed: a parked one completes at once
    /// with `ETIMEDOUT`; one the kernel holds gets an internal cancel, sent with this turn.
    pub(super) fn expire_deadlines(&mut self) {
        // Only operations with deadlines (or resent cancels) pay for reading the clock.
        if self.deadlines.stamp.is_empty() && self.deadlines.heap.peek_deadline_ns().is_none() {
            return;
        }
        let now_ns = self.clock.now_ns();
        self.deadlines.stamp_all(now_ns);
        while let Some(idx) = self.deadlines.pop_expired(now_ns) {
            let slot = &self.slots[idx];
            match slot.state {
                // Its result is known: the deadline no longer matters.
                State::Completed | State::Held => continue,
                // Not a deadline: its cancel may have been lost (see the module's docs), and
                // goes out again.
                State::Kernel if slot.resending() => {
                    self.resend_cancel(idx, now_ns);
                    continue;
                }
                // Already being cancelled: that cancel decides the result.
                State::Kernel if slot.cancelling => continue,
                State::Overflow | State::BufferWait | State::Again => {
                    self.unlink_waiting(idx);
                    self.slots[idx].timed_out = true;
                    self.complete_now(idx, -libc::ETIMEDOUT);
                }
                State::Kernel => {
                    let Some(cancel) = self.slots.alloc(Budget::Cancel) else {
                        // Every cancel slot is in flight; cancels complete within a turn or
                        // two, so try again on the next one.
                        self.deadlines.heap.insert(idx, now_ns);
                        return;
                    };
                    let target = self.slots.id(idx);
                    let slot = &mut self.slots[idx];
                    slot.timed_out = true;
                    slot.cancelling = true;
                    slot.cancel_by = cancel;
                    self.slots[cancel].callback = Callback::Internal;
                    self.slots.build_args(cancel, || Args::Cancel { target });
                    self.enqueue(cancel);
                }
                State::Free => unreachable!("slot {idx} has a deadline but is free"),
            }
            self.stats.deadlines_expired += 1;
        }
    }
}
