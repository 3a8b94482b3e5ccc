//! The timer heap: slot indices ordered by a nanosecond deadline, indexed so that a cancelled
//! timer leaves it at once. The readiness engine keeps its timeouts in one; the loop keeps
//! per-operation deadlines in another, on every backend. Allocated once.

/// No position: the slot has no timer. Positions are stored plus one, so that a table
/// allocated zeroed means "no timers" and is never swept (its pages are backed only once a
/// slot's timer is written: memory follows the load).
const NONE: u32 = 0;

/// A binary min-heap of slot indices by deadline, with each slot's position kept so that a
/// cancelled timeout is removed in O(log n).
pub(crate) struct TimerHeap {
    heap: Vec<u32>,
    deadline_ns: Box<[u64]>,
    position: Box<[u32]>,
}

impl TimerHeap {
    /// A heap with room for one timer per slot.
    pub(crate) fn new(slots: u32) -> TimerHeap {
        TimerHeap {
            heap: Vec::with_capacity(slots as usize),
            deadline_ns: vec![0; slots as usize].into_boxed_slice(),
            position: vec![NONE; slots as usize].into_boxed_slice(),
        }
    }

    pub(crate) fn contains(&self, idx: u32) -> bool {
        self.position[idx as usize] != NONE
    }

    /// The deadline `idx`'s timer is ordered by (it has one).
    pub(crate) fn deadline_of(&self, idx: u32) -> u64 {
        assert!(self.contains(idx), "slot {idx} has no timer");
        self.deadline_ns[idx as usize]
    }

    /// The earliest deadline.
    pub(crate) fn peek_deadline_ns(&self) -> Option<u64> {
        self.heap.first().map(|&idx| self.deadline_ns[idx as usize])
    }

    pub(crate) fn insert(&mut self, idx: u32, deadline_ns: u64) {
        assert!(!self.contains(idx));
        assert!(
            self.heap.len() < self.heap.capacity(),
            "timer heap never grows"
        );
        self.deadline_ns[idx as usize] = deadline_ns;
        self.heap.push(idx);
        self.position[idx as usize] = self.heap.len() as u32;
        self.sift_up(self.heap.len() - 1);
    }

    /// Removes and returns the earliest timer if its deadline is at or before `now_ns`.
    pub(crate) fn pop_expired(&mut self, now_ns: u64) -> Option<u32> {
        let &idx = self.heap.first()?;
        if self.deadline_ns[idx as usize] > now_ns {
            return None;
        }
        self.remove(idx);
        Some(idx)
    }

    pub(crate) fn remove(&mut self, idx: u32) {
        let at = self.position[idx as usize];
        assert_ne!(at, NONE, "slot {idx} has no timer");
        let at = at as usize - 1;
        let last = self.heap.len() - 1;
        self.swap(at, last);
        self.heap.pop();
        self.position[idx as usize] = NONE;
        if at < self.heap.len() {
            self.sift_up(at);
            self.sift_down(at);
        }
    }

    fn less(&self, a: usize, b: usize) -> bool {
        self.deadline_ns[self.heap[a] as usize] < self.deadline_ns[self.heap[b] as usize]
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.position[self.heap[a] as usize] = a as u32 + 1;
        self.position[self.heap[b] as usize] = b as u32 + 1;
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 {
            let parent = (at - 1) / 2;
            if !self.less(at, parent) {
                break;
            }
            self.swap(at, parent);
            at = parent;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        loop {
            let (left, right) = (2 * at + 1, 2 * at + 2);
            let mut least = at;
            if left < self.heap.len() && self.less(left, least) {
                least = left;
            }
            if right < self.heap.len() && self.less(right, least) {
                least = right;
            }
            if least == at {
                return;
            }
            self.swap(at, least);
            at = least;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_heap_pops_in_deadline_order_and_removes_from_the_middle() {
        let mut heap = TimerHeap::new(8);
        for (idx, deadline) in [(0, 50), (1, 10), (2, 40), (3, 20), (4, 30)] {
            heap.insert(idx, deadline);
        }
        heap.remove(2);
        let mut order = Vec::new();
        while let Some(idx) = heap.pop_expired(u64::MAX) {
            order.push(idx);
        }
        assert_eq!(order, vec![1, 3, 4, 0]);
        assert_eq!(heap.peek_deadline_ns(), None);
        heap.insert(5, 100);
        assert_eq!(heap.pop_expired(99), None);
        assert_eq!(heap.peek_deadline_ns(), Some(100));
    }
}
