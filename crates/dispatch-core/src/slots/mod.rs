//! The fixed slot table, allocated once at `Io::new`, and the lists beside it: the free list
//! and the intrusive FIFOs threaded through the table (`fifo.rs`: overflow queue, buffer
//! waits, re-arms), and the completed queue (`completed.rs`). No allocation after start-up.

mod completed;
mod fifo;

pub(crate) use self::completed::{Completed, Done, Order};
pub(crate) use self::fifo::Fifo;
use crate::operation::{Args, OpId, Tag};

/// Where a slot's operation is in its life. A slot is on at most one list at a time, and
/// which one follows from its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// On the free list.
    Free,
    /// Scheduled, waiting in the overflow queue for room in the submission queue.
    Overflow,
    /// Handed to the backend: the kernel may be reading or writing its arguments.
    Kernel,
    /// A pooled receive that found the pool empty, waiting in the loop for buffers to come
    /// back (then it goes to the backend again).
    BufferWait,
    /// Reaped, but not over: going to the backend again with the next turn (after `EINTR`,
    /// a multishot the loop re-arms, the next step of a pooled receive without a
    /// provided-buffer ring). Until then a cancel takes it out at once.
    Again,
    /// A cancel the kernel answered "not found" while its target was still in the kernel:
    /// its answer (`Ok`) waits for the target's result, and the cancel is resent meanwhile.
    Held,
    /// Result known, waiting on the completed queue for its callback.
    Completed,
}

/// What a slot keeps of its operation's callback (the loop's `Callback<Ctx>`), and the value
/// a free slot holds: the table knows callbacks only through this, so that it sits below the
/// loop that defines them.
pub(crate) trait Stored {
    /// A free slot's callback.
    const NONE: Self;
    /// Whether this is [`Stored::NONE`].
    fn is_none(&self) -> bool;
}

/// One operation in flight; `C` is what it keeps of its callback ([`Stored`]).
pub(crate) struct Slot<C> {
    /// Counts the slot's reuses: 64 bits never wrap in the life of a loop, so an `OpId`
    /// names one operation unambiguously.
    pub(crate) generation: u64,
    pub(crate) state: State,
    /// A cancel of this operation is in flight: a second one completes with `EALREADY`, so
    /// that every backend answers alike.
    pub(crate) cancelling: bool,
    /// The operation's deadline passed and the loop cancelled it: its `ECANCELED` is
    /// reported as `ETIMEDOUT`.
    pub(crate) timed_out: bool,
    /// The cancel in flight for this operation (its slot), while `cancelling`.
    pub(crate) cancel_by: u32,
    /// On a target's slot: its cancel (slot) whose answer is held until this result.
    pub(crate) held_cancel: u32,
    /// 0, or: a cancel of this operation may have been lost by the kernel, so its heap entry
    /// times the next resend of the cancel, not a deadline (see `io/deadline.rs`), and it has
    /// been sent again `resends - 1` times.
    pub(crate) resends: u8,
    /// A pooled receive found the pool empty with data to read, and that wait is counted in
    /// `Stats::pool_waits`: tries in vain until it gets a buffer count no more.
    pub(crate) pool_waiting: bool,
    /// This operation needs more than the plain path: it is a cancel (the loop's own among
    /// them; `alloc` marks every cancel's slot), a multishot or a pooled receive, or it has
    /// (had) a deadline, a cancel of its own, a held cancel's answer, a resend or a wait for
    /// buffers. Set by whatever makes it so, never cleared before release; while it is
    /// clear, the fields above hold their free-slot values and the budget is `Op`, so that
    /// reaping, dispatching and releasing a plain operation skip all that bookkeeping (one
    /// byte read instead).
    pub(crate) special: bool,
    /// The budget the slot was taken from, given back on release.
    budget: Budget,
    /// Next slot on whichever list this slot is on; `NONE` at the tail.
    next: u32,
    pub(crate) tag: Tag,
    /// The operation's callback, as the loop keeps it (`C`: its `Callback<Ctx>`).
    pub(crate) callback: C,
}

impl<C> Slot<C> {
    /// Whether the loop resends this operation's cancel (see `resends`).
    pub(crate) fn resending(&self) -> bool {
        self.resends > 0
    }
}

/// Asserts `ok`, an invariant about slot `idx`: a broken one panics with "slot `idx`
/// `what`". Unlike `assert!(ok, "slot {idx} ...")`, whose message borrows `idx` and so
/// made the hot paths keep it on the stack for the message (8 instructions per nop over the
/// checks of `build_args`, `kernel_slot` and `release`), the slot goes to the panic by value.
#[inline(always)]
#[track_caller]
pub(crate) fn check(ok: bool, idx: u32, what: &'static str) {
    if !ok {
        broken(idx, what);
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn broken(idx: u32, what: &'static str) -> ! {
    panic!("slot {idx} {what}")
}

const NONE: u32 = u32::MAX;
/// No slot: an empty `held_cancel` or `cancel_by`.
pub(crate) const NO_SLOT: u32 = NONE;

/// The slot table and its free list, a LIFO stack linked through `Slot::next`: the slot
/// freed last is reused first, while it is still in cache.
///
/// The table holds `ops_max` slots for operations and `ops_max` more for cancels, counted
/// apart: a loop whose every operation slot is in use can still cancel each of them.
///
/// Memory follows the load: both tables are allocated once at full capacity (address space,
/// which the kernel backs with pages only when written), and a slot is first written when
/// it is first needed, taken from the untouched end when the free stack is empty. A server
/// sized for 10,000 connections that serves 100 touches about 100 connections' worth.
/// Pushing within the reserved capacity never moves an element, so the arguments the kernel
/// (or a file worker) points into stay put, as before.
pub(crate) struct Slots<C> {
    slots: Vec<Slot<C>>,
    /// Each slot's operation arguments, in a table of their own so that backends can reach
    /// them without knowing the context type `C`. As long as `slots`, always.
    args: Vec<Args>,
    /// Every slot, touched or not: `ops_max` for operations and as many for cancels.
    count: u32,
    /// The free list's head. How many slots are free is not counted apart: it is the
    /// capacity less the two budgets' busy counts, so no counter can disagree with them.
    free_head: u32,
    ops_max: u32,
    ops_busy: u32,
    cancels_busy: u32,
}

/// Which budget a slot is taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    /// Any operation but a cancel: at most `ops_max` at once.
    Op,
    /// A cancel: at most `ops_max` at once, beside the operations.
    Cancel,
}

impl<C: Stored> Slots<C> {
    /// Allocates all slots for `ops_max` operations and as many cancels; the only
    /// allocation the table ever makes.
    pub(crate) fn new(ops_max: u32) -> Slots<C> {
        assert!(ops_max > 0);
        let count = ops_max.checked_mul(2).expect("slot count fits u32");
        assert!(count < NONE);
        Slots {
            slots: Vec::with_capacity(count as usize),
            args: Vec::with_capacity(count as usize),
            count,
            // Empty: slots come from the untouched end until one is released.
            free_head: NONE,
            ops_max,
            ops_busy: 0,
            cancels_busy: 0,
        }
    }

    /// Slots in use (not free), cancels included.
    pub(crate) fn busy(&self) -> u32 {
        self.ops_busy + self.cancels_busy
    }

    /// Every slot: `ops_max` for operations and as many for cancels.
    pub(crate) fn capacity(&self) -> u32 {
        self.count
    }

    /// The slots ever used (indices `0..touched()`): the others were never written.
    pub(crate) fn touched(&self) -> u32 {
        u32::try_from(self.slots.len()).expect("slot count fits u32")
    }

    /// A slot never used before, from the untouched end of the tables.
    fn touch(&mut self) -> u32 {
        let idx = self.touched();
        assert!(
            idx < self.count,
            "a free slot counted but none left to touch"
        );
        // Within the capacity reserved at `new`: the push never reallocates, so nothing the
        // kernel points into moves.
        assert!(self.slots.len() < self.slots.capacity() && self.args.len() < self.args.capacity());
        self.slots.push(Slot {
            generation: 0,
            state: State::Free,
            cancelling: false,
            timed_out: false,
            cancel_by: NONE,
            held_cancel: NONE,
            resends: 0,
            pool_waiting: false,
            special: false,
            budget: Budget::Op,
            next: NONE,
            tag: 0,
            callback: C::NONE,
        });
        self.args.push(Args::Empty);
        idx
    }

    /// The most operations (or cancels) in flight at once.
    pub(crate) fn ops_max(&self) -> u32 {
        self.ops_max
    }

    /// Takes a free slot from `budget`, or `None` when that budget is spent.
    #[inline(always)]
    pub(crate) fn alloc(&mut self, budget: Budget) -> Option<u32> {
        let busy = match budget {
            Budget::Op => &mut self.ops_busy,
            Budget::Cancel => &mut self.cancels_busy,
        };
        if *busy == self.ops_max {
            return None;
        }
        *busy += 1;
        // A budget with room implies a free slot: the two budgets together are the whole
        // table, so the free list has one, or the untouched end (which `touch` asserts).
        let idx = match self.free_head {
            NONE => self.touch(),
            idx => idx,
        };
        let slot = &mut self.slots[idx as usize];
        assert_eq!(slot.state, State::Free);
        slot.budget = budget;
        // A cancel is special (see `Slot::special`), so a plain slot's budget is `Op`. (The
        // callers pass a constant budget: an operation's alloc does not test it.)
        if budget == Budget::Cancel {
            slot.special = true;
        }
        // The free list's head, or a touched slot (whose `next` is `NONE`, as the empty
        // list's head is): either way the head moves on to the slot's `next`.
        self.free_head = std::mem::replace(&mut slot.next, NONE);
        Some(idx)
    }

    /// Returns a slot to the free list; its generation moves on so stale `OpId`s miss it.
    #[inline(always)]
    pub(crate) fn release(&mut self, idx: u32) {
        // The caller has just moved the arguments and the callback out, and checked the slot
        // `Completed` (the loop's one caller, `dispatch`): derivable, so these three checks
        // are debug-only.
        debug_assert!(matches!(self.args[idx as usize], Args::Empty));
        let slot = &mut self.slots[idx as usize];
        debug_assert!(slot.callback.is_none());
        debug_assert!(slot.state != State::Free, "slot {idx} released twice");
        check(slot.next == NONE, idx, "released while on a list");
        slot.state = State::Free;
        if slot.special {
            match slot.budget {
                Budget::Op => self.ops_busy -= 1,
                Budget::Cancel => self.cancels_busy -= 1,
            }
            slot.special = false;
            slot.cancelling = false;
            slot.timed_out = false;
            slot.cancel_by = NONE;
            slot.held_cancel = NONE;
            slot.resends = 0;
            slot.pool_waiting = false;
        } else {
            // Only a special operation changes these (see `Slot::special`): O(1), but they
            // are what a plain operation's release no longer writes.
            debug_assert!(!slot.cancelling && !slot.timed_out && !slot.pool_waiting);
            debug_assert!(slot.cancel_by == NONE && slot.held_cancel == NONE);
            debug_assert_eq!(slot.resends, 0);
            debug_assert_eq!(slot.budget, Budget::Op);
            self.ops_busy -= 1;
        }
        slot.generation += 1;
        slot.next = self.free_head;
        self.free_head = idx;
    }

    pub(crate) fn id(&self, idx: u32) -> OpId {
        OpId {
            idx,
            generation: self.slots[idx as usize].generation,
        }
    }

    /// The slot an `OpId` names, if it is still that operation's.
    pub(crate) fn lookup(&self, id: OpId) -> Option<u32> {
        let slot = self.slots.get(id.idx as usize)?;
        if slot.generation != id.generation || slot.state == State::Free {
            return None;
        }
        Some(id.idx)
    }

    /// The slot of a completion the backend reported (by `user_data`): it must still be that
    /// operation's and in the kernel, or an invariant broke.
    #[inline]
    pub(crate) fn kernel_slot(&self, user_data: u64) -> u32 {
        let idx = OpId::idx_of_user_data(user_data);
        let slot = &self.slots[idx as usize];
        let generation = OpId::generation_of_user_data(user_data);
        check(
            slot.generation as u32 == generation,
            idx,
            "completed, but recycled",
        );
        check(
            slot.state == State::Kernel,
            idx,
            "completed while not in the kernel",
        );
        idx
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [Slot<C>] {
        &mut self.slots
    }

    /// The argument table, indexed by slot.
    pub(crate) fn args_table(&mut self) -> &mut [Args] {
        &mut self.args
    }

    /// Slot `idx` and its arguments, borrowed together (they live in two tables).
    #[inline(always)]
    pub(crate) fn slot_and_args(&mut self, idx: u32) -> (&mut Slot<C>, &mut Args) {
        (&mut self.slots[idx as usize], &mut self.args[idx as usize])
    }

    pub(crate) fn args(&self, idx: u32) -> &Args {
        &self.args[idx as usize]
    }

    /// Moves slot `idx`'s arguments out, leaving it empty.
    pub(crate) fn take_args(&mut self, idx: u32) -> Args {
        std::mem::replace(&mut self.args[idx as usize], Args::Empty)
    }

    /// Stores the arguments `args` builds in slot `idx`, which holds none. They are built
    /// only once the checks that may panic are done, so that nothing has to be dropped while
    /// unwinding from them: that lets the compiler build them right in the table, instead of
    /// on the stack first and copying all 64 bytes (twice) into it.
    #[inline(always)]
    pub(crate) fn build_args(&mut self, idx: u32, args: impl FnOnce() -> Args) {
        let place = &mut self.args[idx as usize];
        check(matches!(place, Args::Empty), idx, "already holds arguments");
        let args = args();
        // Empty owns nothing: forgetting it skips a call to drop glue (and reading the old
        // value out) on the hot path.
        std::mem::forget(std::mem::replace(place, args));
    }

    /// Leaks the table so that memory the kernel may still write is never freed. Only for a
    /// drop that could not reap every completion.
    pub(crate) fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
        std::mem::forget(std::mem::take(&mut self.args));
        self.count = 0;
        self.free_head = NONE;
        self.ops_busy = 0;
        self.cancels_busy = 0;
    }
}

impl<C> std::ops::Index<u32> for Slots<C> {
    type Output = Slot<C>;
    fn index(&self, idx: u32) -> &Slot<C> {
        &self.slots[idx as usize]
    }
}

impl<C> std::ops::IndexMut<u32> for Slots<C> {
    fn index_mut(&mut self, idx: u32) -> &mut Slot<C> {
        &mut self.slots[idx as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Stored for () {
        const NONE: () = ();
        fn is_none(&self) -> bool {
            true
        }
    }

    /// Releases `idx` as the loop does, once its callback ran.
    fn complete_and_release(slots: &mut Slots<()>, idx: u32) {
        slots[idx].state = State::Completed;
        slots.release(idx);
    }

    /// The generation is 64 bits: after 2^32 reuses of a slot, an id from its first use no
    /// longer matches, though the low 32 bits (what the kernel carries) are the same.
    #[test]
    fn ids_stay_unambiguous_past_two_to_the_thirty_two_reuses() {
        let mut slots: Slots<()> = Slots::new(1);
        let idx = slots.alloc(Budget::Op).unwrap();
        let first = slots.id(idx);
        complete_and_release(&mut slots, idx);
        slots.slots[idx as usize].generation = u64::from(u32::MAX) + 1;
        let idx_again = slots.alloc(Budget::Op).unwrap();
        assert_eq!(idx_again, idx);
        slots[idx].state = State::Kernel;
        let now = slots.id(idx);
        assert_eq!(now.user_data() as u32, first.user_data() as u32);
        assert_eq!(now.user_data() >> 32, first.user_data() >> 32);
        assert_eq!(slots.lookup(first), None, "a stale id names nothing");
        assert_eq!(slots.lookup(now), Some(idx));
    }

    /// Operations and cancels draw on budgets of their own: a full table of operations
    /// leaves every cancel slot free, and the other way round.
    #[test]
    fn operations_and_cancels_have_separate_budgets() {
        let mut slots: Slots<()> = Slots::new(2);
        let ops: Vec<u32> = (0..2).map(|_| slots.alloc(Budget::Op).unwrap()).collect();
        assert_eq!(slots.alloc(Budget::Op), None);
        let cancels: Vec<u32> = (0..2)
            .map(|_| slots.alloc(Budget::Cancel).unwrap())
            .collect();
        assert_eq!(slots.alloc(Budget::Cancel), None);
        assert_eq!(slots.busy(), 4);
        complete_and_release(&mut slots, cancels[0]);
        assert_eq!(
            slots.alloc(Budget::Op),
            None,
            "a cancel slot is no operation slot"
        );
        complete_and_release(&mut slots, ops[1]);
        assert!(slots.alloc(Budget::Op).is_some());
    }
}
