//! Where an operation waits between being scheduled and the backend: the SQ (or the
//! readiness engine's list), the overflow queue when it is full, the list of pooled receives
//! waiting for buffers; and completing one without the backend.
// One unsafe block: handing slot arguments to the backend, whose contract the slot table keeps.
#![allow(unsafe_code)]

use super::{Io, PushError};
use crate::operation::OpId;
use crate::slots::{Done, State};

impl<C> Io<C> {
    /// Takes back the buffers of dropped handles; if any came back, or buffers are free in
    /// the loop's hands (a receive that took one found nothing and put it back), the
    /// receives waiting for buffers go to the backend again (those that still find none wait
    /// again).
    pub(super) fn recycle_buffers(&mut self) {
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        if !self.buffer_wait.is_empty() {
            self.backend.pool_starved(pool);
        }
        let recycled = self.backend.recycle(pool);
        assert!(recycled <= self.pool_lent, "more buffers back than lent");
        self.pool_lent -= recycled;
        // Not only buffers that came back now: a receive can find the pool empty in a turn
        // after the one that refilled it, and must not wait for the next return.
        if recycled == 0 && !self.backend.buffers_available(pool) {
            return;
        }
        while let Some(idx) = self.buffer_wait.pop(self.slots.as_mut_slice()) {
            assert_eq!(self.slots[idx].state, State::BufferWait);
            self.slots[idx].state = State::Overflow;
            self.overflow.push(self.slots.as_mut_slice(), idx);
        }
    }

    /// Moves parked operations into the SQ while it has room, oldest first.
    pub(super) fn refill(&mut self) {
        while let Some(idx) = self.overflow.peek() {
            assert_eq!(self.slots[idx].state, State::Overflow);
            match self.push(idx) {
                Ok(()) => {
                    let popped = self.overflow.pop(self.slots.as_mut_slice());
                    assert_eq!(popped, Some(idx));
                }
                Err(PushError::SqFull) => return,
                Err(PushError::NoBuffer) => {
                    let popped = self.overflow.pop(self.slots.as_mut_slice());
                    assert_eq!(popped, Some(idx));
                    self.wait_for_buffer(idx);
                }
            }
        }
    }

    /// Hands slot `idx` to the backend. Inlined into scheduling, where the slot and its
    /// arguments were just reached (out of line, it cost 25 instructions more per nop):
    /// the one call a plain schedule makes is io_uring's push, which builds the SQE.
    #[inline(always)]
    pub(super) fn push(&mut self, idx: u32) -> Result<(), PushError> {
        // The slot is held across the backend's push, not reached again after it.
        let (slot, args) = self.slots.slot_and_args(idx);
        let user_data = OpId::user_data_of(idx, slot.generation);
        // SAFETY: the argument table is allocated once and never moved or resized, and a
        // slot's arguments are only taken out after the backend reports its completion
        // (`reap` then `dispatch`), or in `Drop` after every operation the kernel held has
        // completed.
        unsafe { self.backend.push(idx, user_data, args, &mut self.pool) }?;
        slot.state = State::Kernel;
        self.in_kernel += 1;
        self.stats.ops_submitted += 1;
        Ok(())
    }

    /// Sends a new operation to the SQ, or parks it behind any already parked.
    #[inline]
    pub(super) fn enqueue(&mut self, idx: u32) {
        if self.overflow.is_empty() {
            match self.push(idx) {
                Ok(()) => return,
                Err(PushError::NoBuffer) => return self.wait_for_buffer(idx),
                Err(PushError::SqFull) => {}
            }
        }
        self.park(idx);
    }

    pub(super) fn park(&mut self, idx: u32) {
        self.slots[idx].state = State::Overflow;
        self.overflow.push(self.slots.as_mut_slice(), idx);
        self.stats.overflow_parked += 1;
        self.stats.overflow_len_max = self.stats.overflow_len_max.max(self.overflow.len());
    }

    /// Parks a pooled receive, which has data to read, until buffers come back.
    pub(super) fn wait_for_buffer(&mut self, idx: u32) {
        self.slots[idx].state = State::BufferWait;
        self.buffer_wait.push(self.slots.as_mut_slice(), idx);
        let slot = &mut self.slots[idx];
        slot.special = true;
        self.stats.pool_waits += u64::from(!std::mem::replace(&mut slot.pool_waiting, true));
    }

    /// Completes slot `idx` with `result` without the kernel (it never reached it).
    pub(super) fn complete_now(&mut self, idx: u32, result: i32) {
        let slot = &mut self.slots[idx];
        assert!(matches!(
            slot.state,
            State::Free | State::Overflow | State::BufferWait | State::Again
        ));
        slot.state = State::Completed;
        self.completed.push(Done {
            idx,
            result,
            flags: 0,
        });
    }

    /// Removes a slot waiting in the loop (overflow or buffer wait) from its list.
    pub(super) fn unlink_waiting(&mut self, idx: u32) {
        let list = match self.slots[idx].state {
            State::Overflow => &mut self.overflow,
            State::BufferWait => &mut self.buffer_wait,
            State::Again => &mut self.again,
            state => unreachable!("slot {idx} is not waiting in the loop but {state:?}"),
        };
        let removed = list.remove(self.slots.as_mut_slice(), idx);
        assert!(removed, "slot {idx} is not on its list");
    }
}
