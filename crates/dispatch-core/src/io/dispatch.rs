//! Taking results from the backend (`reap`, with `Reaper` settling what each means) and
//! running callbacks (`dispatch`): each final result frees its slot before its callback
//! runs, and a callback that panics leaves the rest of the batch for the next turn.

use super::callback::sealed::Sealed;
use super::reap::Reaper;
use super::{Callback, Io};
use crate::completion::{
    buf_value, buf_value_in, count_value, datagram_value, fd_value, file_list_value, file_value,
    flags_bid, msg_value, new_fd, pool_send_value, pooled_value, stat_value, unit_value,
    unit_value_in, vectored_value, F_MORE, TIMEOUT_EXPIRED,
};
use crate::operation::{Args, Shot, Tag};
use crate::poll::poll_value;
use crate::slots::{Done, Order, State};

impl<C> Io<C> {
    /// Moves the results the backend has (as many as fit) to the completed queue; runs no
    /// callback. Decides here what each result means for its slot: final (the slot waits
    /// for its callback), intermediate (a multishot goes on, re-armed by the loop where the
    /// kernel ended it), or no result at all (EINTR: submit again; a pooled receive without
    /// buffers: wait for some). Returns how many final results look like an expired
    /// timeout's (`ETIME`), for `turn` to put expiries in order.
    pub(super) fn reap(&mut self) -> u32 {
        let room = self.reap_room();
        let mut reaper = Reaper {
            slots: &mut self.slots,
            completed: &mut self.completed,
            again: &mut self.again,
            buffer_wait: &mut self.buffer_wait,
            resend: &mut self.resend,
            in_kernel: &mut self.in_kernel,
            stats: &mut self.stats,
            expired: 0,
        };
        self.backend
            .reap(room, self.pool.as_mut(), |user_data, result, flags| {
                reaper.result(user_data, result, flags)
            });
        let expired = reaper.expired;
        if !self.resend.is_empty() {
            self.time_resends();
        }
        expired
    }

    /// Puts the expired timeouts among the results reaped since `start` (this turn's) in
    /// deadline order, where the backend may report them in another: io_uring may (Linux
    /// 6.1 posted two expiries reaped together latest first). A cancel's answer is a fence
    /// no expiry moves past, so that a timeout never runs after the answer of a cancel that
    /// came too late for it.
    #[cold]
    pub(super) fn order_expired(&mut self, start: usize) {
        let (slots, backend) = (&self.slots, &self.backend);
        self.completed.order_from(start, |done| {
            if done.flags & F_MORE != 0 {
                return Order::Stay;
            }
            match slots.args(done.idx) {
                Args::Timeout { .. } if done.result == TIMEOUT_EXPIRED => {
                    backend.expiry_ns(done.idx).map_or(Order::Stay, Order::At)
                }
                Args::Cancel { .. } => Order::Fence,
                _ => Order::Stay,
            }
        });
    }

    /// How many results a reap may add: the completed queue's room less one final result per
    /// slot, kept for results the loop adds without the backend (cancels answered at once,
    /// deadlines of parked operations), which therefore always fit.
    pub(super) fn reap_room(&self) -> u32 {
        self.completed.room().saturating_sub(self.slots.capacity())
    }

    /// Runs the callbacks of everything completed so far. A final result's slot leaves the
    /// completed queue and is released before its callback runs, so a panicking callback
    /// leaves the loop consistent: the rest of the batch stays queued for the next turn.
    /// Completions that callbacks cause (cancels of parked operations) wait for the next turn,
    /// so a turn always ends.
    pub(super) fn dispatch(&mut self, ctx: &mut C) {
        self.completed.start_batch();
        while let Some(done) = self.completed.next_in_batch() {
            let idx = done.idx;
            let slot = &self.slots[idx];
            let (tag, callback) = (slot.tag, slot.callback);
            if done.flags & F_MORE != 0 {
                // A multishot goes on: its slot stays.
                assert_ne!(
                    slot.state,
                    State::Free,
                    "a multishot result for a free slot"
                );
                self.count_lent(done.flags);
                self.dispatch_shot(ctx, done, tag, callback);
                continue;
            }
            assert_eq!(slot.state, State::Completed);
            let special = slot.special;
            self.slots[idx].callback = Callback::None;
            // A pool buffer comes only with a pooled receive's result: a special operation's.
            debug_assert!(special || flags_bid(done.flags).is_none());
            if !special && self.dispatch_plain(ctx, done, tag, callback) {
                continue;
            }
            self.count_lent(done.flags);
            let args = self.slots.take_args(idx);
            if special {
                // Only a special operation (`Slot::special`) is a cancel, the loop's own
                // operation, or has a deadline.
                if let Args::Cancel { target } = args {
                    self.end_cancelling(target, idx);
                }
                self.deadlines.forget(idx);
            } else {
                debug_assert!(!matches!(args, Args::Cancel { .. }));
                debug_assert!(!matches!(callback, Callback::Internal));
            }
            self.slots.release(idx);
            if special && matches!(callback, Callback::Internal) {
                drop(unit_value(args, done.result));
                continue;
            }
            self.stats.ops_completed += 1;
            self.dispatch_final(ctx, done, tag, callback, args);
        }
    }

    /// Counts the pool buffer a result hands to its callback, if it carries one.
    fn count_lent(&mut self, flags: u32) {
        if flags_bid(flags).is_some() {
            self.pool_lent += 1;
        }
    }

    /// Runs the callback of a plain operation's final result (not `Slot::special`) whose
    /// callback takes no value or a buffer: the value is made from the arguments where they
    /// lie, then the slot is released and the callback runs. `false` (nothing done) for
    /// every other callback.
    #[inline]
    fn dispatch_plain(&mut self, ctx: &mut C, done: Done, tag: Tag, callback: Callback<C>) -> bool {
        let (idx, result) = (done.idx, done.result);
        debug_assert!(!matches!(
            self.slots.args(idx),
            Args::Cancel { .. } | Args::Empty
        ));
        let args = &mut self.slots.args_table()[idx as usize];
        match callback {
            Callback::Unit(callback) => {
                let value = unit_value_in(args, result);
                self.slots.release(idx);
                self.stats.ops_completed += 1;
                callback(ctx, self, tag, value);
            }
            Callback::Buf(callback) => {
                let value = buf_value_in(args, result);
                self.slots.release(idx);
                self.stats.ops_completed += 1;
                callback(ctx, self, tag, value);
            }
            _ => return false,
        }
        true
    }

    /// Runs the callback of an operation's final result (its slot already released).
    pub(super) fn dispatch_final(
        &mut self,
        ctx: &mut C,
        done: Done,
        tag: Tag,
        callback: Callback<C>,
        args: Args,
    ) {
        let result = done.result;
        match callback {
            Callback::Fd(callback) => callback(ctx, self, tag, fd_value(args, result)),
            Callback::Buf(callback) => callback(ctx, self, tag, buf_value(args, result)),
            Callback::Unit(callback) => callback(ctx, self, tag, unit_value(args, result)),
            Callback::Count(callback) => callback(ctx, self, tag, count_value(args, result)),
            Callback::Pooled(callback) => {
                let pool = self.pool.as_ref().expect("a pooled receive has a pool");
                let result = pooled_value(pool.shared(), result, done.flags);
                callback(ctx, self, tag, Shot::last(result));
            }
            Callback::Datagram(callback) => {
                let pool = self.pool.as_ref().expect("a datagram receive has a pool");
                let result = datagram_value(pool.shared(), result, done.flags);
                callback(ctx, self, tag, Shot::last(result));
            }
            Callback::Accepted(callback) => {
                callback(ctx, self, tag, Shot::last(fd_value(args, result)));
            }
            Callback::Poll(callback) => callback(ctx, self, tag, poll_value(result)),
            Callback::PollShot(callback) => {
                callback(ctx, self, tag, Shot::last(poll_value(result)));
            }
            Callback::PoolSend(callback) => {
                callback(ctx, self, tag, pool_send_value(args, result));
            }
            Callback::Vectored(callback) => {
                callback(ctx, self, tag, vectored_value(args, result));
            }
            Callback::Aligned(callback) => {
                let (count, buf) = file_value(args, result);
                callback(ctx, self, tag, (count, Sealed::from_bytes(buf)));
            }
            Callback::BufList(callback) => {
                let (count, bufs) = file_list_value(args, result);
                callback(ctx, self, tag, (count, Sealed::from_list(bufs)));
            }
            Callback::AlignedList(callback) => {
                let (count, bufs) = file_list_value(args, result);
                callback(ctx, self, tag, (count, Sealed::from_list(bufs)));
            }
            Callback::Stat(callback) => callback(ctx, self, tag, stat_value(args, result)),
            Callback::Msg(callback) => callback(ctx, self, tag, msg_value(args, result)),
            Callback::None | Callback::Internal => {
                let idx = done.idx;
                unreachable!("slot {idx} completed without a callback")
            }
        }
    }

    /// Runs the callback of an intermediate result of a multishot operation.
    pub(super) fn dispatch_shot(
        &mut self,
        ctx: &mut C,
        done: Done,
        tag: Tag,
        callback: Callback<C>,
    ) {
        match callback {
            Callback::Pooled(callback) => {
                let pool = self.pool.as_ref().expect("a pooled receive has a pool");
                let result = pooled_value(pool.shared(), done.result, done.flags);
                callback(ctx, self, tag, Shot { result, more: true });
            }
            Callback::Datagram(callback) => {
                let pool = self.pool.as_ref().expect("a datagram receive has a pool");
                let result = datagram_value(pool.shared(), done.result, done.flags);
                callback(ctx, self, tag, Shot { result, more: true });
            }
            Callback::Accepted(callback) => {
                let result = new_fd(done.result);
                callback(ctx, self, tag, Shot { result, more: true });
            }
            Callback::PollShot(callback) => {
                let result = poll_value(done.result);
                callback(ctx, self, tag, Shot { result, more: true });
            }
            _ => {
                let idx = done.idx;
                unreachable!("slot {idx}: only multishots have more results")
            }
        }
    }
}
