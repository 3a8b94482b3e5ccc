//! The fixed slot table, allocated once at `Io::new`, and the intrusive FIFOs threaded through
//! it (free list, overflow queue, completed queue): no allocation after start-up.

use crate::operation::{Args, Callback, OpId, Tag};

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
    /// Result known, waiting on the completed queue for its callback.
    Completed,
}

/// One operation in flight.
pub(crate) struct Slot<C> {
    pub(crate) generation: u32,
    pub(crate) state: State,
    /// Next slot on whichever list this slot is on; `NONE` at the tail.
    next: u32,
    pub(crate) tag: Tag,
    pub(crate) result: i32,
    pub(crate) callback: Callback<C>,
}

const NONE: u32 = u32::MAX;

/// A FIFO of slot indices linked through `Slot::next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fifo {
    head: u32,
    tail: u32,
    len: u32,
}

impl Fifo {
    pub(crate) const EMPTY: Fifo = Fifo {
        head: NONE,
        tail: NONE,
        len: 0,
    };

    pub(crate) fn len(&self) -> u32 {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn peek(&self) -> Option<u32> {
        if self.head == NONE {
            return None;
        }
        Some(self.head)
    }

    pub(crate) fn push<C>(&mut self, slots: &mut [Slot<C>], idx: u32) {
        assert_eq!(
            slots[idx as usize].next, NONE,
            "slot {idx} is already on a list"
        );
        if self.tail == NONE {
            assert_eq!(self.head, NONE);
            self.head = idx;
        } else {
            slots[self.tail as usize].next = idx;
        }
        self.tail = idx;
        self.len += 1;
    }

    pub(crate) fn pop<C>(&mut self, slots: &mut [Slot<C>]) -> Option<u32> {
        if self.head == NONE {
            assert_eq!(self.len, 0);
            return None;
        }
        let idx = self.head;
        self.head = std::mem::replace(&mut slots[idx as usize].next, NONE);
        if self.head == NONE {
            self.tail = NONE;
        }
        self.len -= 1;
        Some(idx)
    }

    /// Unlinks `idx` from anywhere in the list; O(len), for the rare cancel of a parked
    /// operation. Returns whether it was there.
    pub(crate) fn remove<C>(&mut self, slots: &mut [Slot<C>], idx: u32) -> bool {
        let mut prev = NONE;
        let mut cursor = self.head;
        while cursor != NONE {
            let next = slots[cursor as usize].next;
            if cursor == idx {
                if prev == NONE {
                    self.head = next;
                } else {
                    slots[prev as usize].next = next;
                }
                if self.tail == idx {
                    self.tail = prev;
                }
                slots[idx as usize].next = NONE;
                self.len -= 1;
                return true;
            }
            prev = cursor;
            cursor = next;
        }
        false
    }
}

/// Slots whose results are known, in completion order, waiting for their callbacks: two
/// buffers allocated once, one filling while the other's callbacks run, so that completions
/// caused by callbacks wait for the next turn. Each slot is in it at most once, so `ops_max`
/// entries never overflow it.
pub(crate) struct Completed {
    filling: Vec<u32>,
    spare: Vec<u32>,
}

impl Completed {
    pub(crate) fn new(capacity: u32) -> Completed {
        Completed {
            filling: Vec::with_capacity(capacity as usize),
            spare: Vec::with_capacity(capacity as usize),
        }
    }

    pub(crate) fn push(&mut self, idx: u32) {
        assert!(
            self.filling.len() < self.filling.capacity(),
            "completed queue never grows"
        );
        self.filling.push(idx);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.filling.is_empty()
    }

    /// Takes everything completed so far; give the buffer back with [`Completed::restore`].
    pub(crate) fn take_batch(&mut self) -> Vec<u32> {
        let spare = std::mem::take(&mut self.spare);
        assert!(
            spare.is_empty() && spare.capacity() > 0,
            "one batch at a time"
        );
        std::mem::replace(&mut self.filling, spare)
    }

    /// Returns a dispatched batch's buffer for reuse.
    pub(crate) fn restore(&mut self, mut batch: Vec<u32>) {
        batch.clear();
        self.spare = batch;
    }

    /// Empties the queue, handing each slot to `f` (for `Io`'s drop).
    pub(crate) fn drain(&mut self, f: impl FnMut(u32)) {
        self.filling.drain(..).for_each(f);
    }
}

/// The slot table and its free list, a LIFO stack linked through `Slot::next`: the slot
/// freed last is reused first, while it is still in cache.
pub(crate) struct Slots<C> {
    slots: Box<[Slot<C>]>,
    /// Each slot's operation arguments, in a table of their own so that backends can reach
    /// them without knowing the context type `C`.
    args: Box<[Args]>,
    free_head: u32,
    free_len: u32,
}

impl<C> Slots<C> {
    /// Allocates all `count` slots; the only allocation the table ever makes.
    pub(crate) fn new(count: u32) -> Slots<C> {
        assert!(count > 0);
        assert!(count < NONE);
        let mut slots: Box<[Slot<C>]> = (0..count)
            .map(|_| Slot {
                generation: 0,
                state: State::Free,
                next: NONE,
                tag: 0,
                result: 0,
                callback: Callback::None,
            })
            .collect();
        // Link every slot into the free stack, lowest index on top.
        for idx in 0..count - 1 {
            slots[idx as usize].next = idx + 1;
        }
        let args = (0..count).map(|_| Args::Empty).collect();
        Slots {
            slots,
            args,
            free_head: 0,
            free_len: count,
        }
    }

    /// Slots in use (not free).
    pub(crate) fn busy(&self) -> u32 {
        self.capacity() - self.free_len
    }

    pub(crate) fn capacity(&self) -> u32 {
        u32::try_from(self.slots.len()).expect("slot count fits u32")
    }

    /// Takes a free slot, or `None` when all are in use.
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        if self.free_head == NONE {
            assert_eq!(self.free_len, 0);
            return None;
        }
        let idx = self.free_head;
        let slot = &mut self.slots[idx as usize];
        assert_eq!(slot.state, State::Free);
        self.free_head = std::mem::replace(&mut slot.next, NONE);
        self.free_len -= 1;
        Some(idx)
    }

    /// Returns a slot to the free list; its generation moves on so stale `OpId`s miss it.
    pub(crate) fn release(&mut self, idx: u32) {
        // The caller has just moved the arguments and the callback out: derivable, so these
        // two checks are debug-only.
        debug_assert!(matches!(self.args[idx as usize], Args::Empty));
        let slot = &mut self.slots[idx as usize];
        debug_assert!(matches!(slot.callback, Callback::None));
        assert_eq!(slot.next, NONE, "slot {idx} released while on a list");
        slot.state = State::Free;
        slot.generation = slot.generation.wrapping_add(1);
        slot.next = self.free_head;
        self.free_head = idx;
        self.free_len += 1;
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

    /// The slot of a completion the backend reported: it must still be that operation's and
    /// in the kernel, or an invariant broke.
    pub(crate) fn kernel_slot(&self, id: OpId) -> u32 {
        let slot = &self.slots[id.idx as usize];
        assert_eq!(
            slot.generation, id.generation,
            "completion for a recycled slot {}",
            id.idx
        );
        assert_eq!(
            slot.state,
            State::Kernel,
            "completion for slot {} not in the kernel",
            id.idx
        );
        id.idx
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [Slot<C>] {
        &mut self.slots
    }

    /// The argument table, indexed by slot.
    pub(crate) fn args_table(&mut self) -> &mut [Args] {
        &mut self.args
    }

    pub(crate) fn args(&self, idx: u32) -> &Args {
        &self.args[idx as usize]
    }

    /// Moves slot `idx`'s arguments out, leaving it empty.
    pub(crate) fn take_args(&mut self, idx: u32) -> Args {
        std::mem::replace(&mut self.args[idx as usize], Args::Empty)
    }

    pub(crate) fn set_args(&mut self, idx: u32, args: Args) {
        let old = std::mem::replace(&mut self.args[idx as usize], args);
        assert!(
            matches!(old, Args::Empty),
            "slot {idx} already holds arguments"
        );
        // Empty owns nothing: forgetting it skips a call to drop glue on the hot path.
        std::mem::forget(old);
    }

    /// Leaks the table so that memory the kernel may still write is never freed. Only for a
    /// drop that could not reap every completion.
    pub(crate) fn leak(&mut self) {
        let _ = Box::leak(std::mem::take(&mut self.slots));
        let _ = Box::leak(std::mem::take(&mut self.args));
        self.free_head = NONE;
        self.free_len = 0;
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
