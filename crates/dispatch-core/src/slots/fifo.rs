//! A FIFO of slot indices threaded through the slot table (`Slot::next`): the overflow queue,
//! the buffer waits and the re-arms, without an allocation.

use super::{Slot, NONE};

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
