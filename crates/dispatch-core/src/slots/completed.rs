//! The completed queue: results waiting for their callbacks, in completion order, in two
//! buffers allocated once.

/// One result waiting for its callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Done {
    pub(crate) idx: u32,
    /// `>= 0`, or `-errno`.
    pub(crate) result: i32,
    /// `F_BUFFER` and its buffer id, `F_MORE` when the operation goes on (its slot stays).
    pub(crate) flags: u32,
}

/// Results waiting for their callbacks, in completion order: two buffers allocated once.
/// `filling` takes new results; `draining` holds the batch whose callbacks run, read through
/// `cursor`. A batch is only replaced once every entry has been handed out, so when a
/// callback panics the rest of its batch stays here and runs on a later turn: nothing is
/// lost or run twice. Results that callbacks cause wait in `filling` for the next batch, so
/// a turn always ends. The loop reaps no more than there is room for.
pub(crate) struct Completed {
    filling: Vec<Done>,
    draining: Vec<Done>,
    cursor: usize,
}

impl Completed {
    pub(crate) fn new(capacity: u32) -> Completed {
        Completed {
            filling: Vec::with_capacity(capacity as usize),
            draining: Vec::with_capacity(capacity as usize),
            cursor: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, done: Done) {
        assert!(
            self.filling.len() < self.filling.capacity(),
            "completed queue never grows"
        );
        self.filling.push(done);
    }

    /// How many more results fit.
    pub(crate) fn room(&self) -> u32 {
        (self.filling.capacity() - self.filling.len()) as u32
    }

    /// Whether no callback is waiting to run.
    pub(crate) fn is_empty(&self) -> bool {
        self.filling.is_empty() && self.cursor == self.draining.len()
    }

    /// How many results wait for the next batch.
    pub(crate) fn filled(&self) -> usize {
        self.filling.len()
    }

    /// Reorders the results added since `start` (see [`Completed::filled`]) that `order`
    /// gives a key, in place, by increasing key, stably: a keyed result moves before keyed
    /// ones with greater keys, never past a [`Order::Fence`], and results that
    /// [`Order::Stay`] keep their places. An insertion sort over the keyed results: for the
    /// few expired timeouts of one turn, not for a whole batch.
    pub(crate) fn order_from(&mut self, start: usize, order: impl Fn(&Done) -> Order) {
        let done = &mut self.filling;
        assert!(start <= done.len());
        for at in start..done.len() {
            let Order::At(at_key) = order(&done[at]) else {
                continue;
            };
            let mut hole = at;
            let mut before = at;
            while before > start {
                before -= 1;
                match order(&done[before]) {
                    Order::Stay => {}
                    Order::At(before_key) if before_key > at_key => {
                        done.swap(before, hole);
                        hole = before;
                    }
                    Order::At(_) | Order::Fence => break,
                }
            }
        }
    }

    /// Starts a batch: everything completed so far, unless the previous batch was cut short
    /// (a callback panicked), whose rest then runs first.
    pub(crate) fn start_batch(&mut self) {
        if self.cursor < self.draining.len() {
            return;
        }
        self.draining.clear();
        self.cursor = 0;
        std::mem::swap(&mut self.filling, &mut self.draining);
        assert!(self.filling.is_empty());
    }

    /// The next result of the current batch, consumed before its callback runs.
    pub(crate) fn next_in_batch(&mut self) -> Option<Done> {
        let done = *self.draining.get(self.cursor)?;
        self.cursor += 1;
        Some(done)
    }

    /// Empties the queue, handing each result to `f` (for `Io`'s drop).
    pub(crate) fn drain(&mut self, mut f: impl FnMut(Done)) {
        for &done in &self.draining[self.cursor..] {
            f(done);
        }
        self.draining.clear();
        self.cursor = 0;
        self.filling.drain(..).for_each(f);
    }
}

/// Where [`Completed::order_from`] may put a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Keeps its place; keyed results move past it.
    Stay,
    /// Keeps its place, and no keyed result moves past it.
    Fence,
    /// Sorted among the others with a key.
    At(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ordering the keyed results of a reap (expired timeouts, keyed by deadline) leaves the
    /// others in their places, keeps equal keys in their order, and never touches results
    /// from before the reap.
    #[test]
    fn order_from_sorts_only_keyed_results_after_the_start() {
        let mut completed = Completed::new(16);
        // idx: a key below 100 is a timeout's deadline; 100 and above are other results.
        let keys = [7_u32, 100, 9, 3, 101, 5, 3, 102, 1];
        for idx in keys {
            completed.push(Done {
                idx,
                result: 0,
                flags: 0,
            });
        }
        let key = |done: &Done| match done.idx {
            idx if idx < 100 => Order::At(u64::from(idx)),
            _ => Order::Stay,
        };
        completed.order_from(1, key);
        let order: Vec<u32> = completed.filling.iter().map(|done| done.idx).collect();
        assert_eq!(order, [7, 100, 1, 3, 101, 3, 5, 102, 9]);
        completed.order_from(completed.filled(), key);
        let again: Vec<u32> = completed.filling.iter().map(|done| done.idx).collect();
        assert_eq!(again, order, "an empty range changes nothing");
        // 101 as a fence: nothing moves past it.
        let fenced = |done: &Done| match done.idx {
            101 => Order::Fence,
            _ => key(done),
        };
        let mut completed = Completed::new(16);
        for idx in [7_u32, 5, 101, 3, 1] {
            completed.push(Done {
                idx,
                result: 0,
                flags: 0,
            });
        }
        completed.order_from(0, fenced);
        let order: Vec<u32> = completed.filling.iter().map(|done| done.idx).collect();
        assert_eq!(order, [5, 7, 101, 1, 3]);
    }

    /// A batch cut short (a callback panicked) keeps its rest, which runs before anything
    /// completed since; nothing is handed out twice.
    #[test]
    fn a_batch_cut_short_resumes_before_newer_completions() {
        let done = |idx| Done {
            idx,
            result: 0,
            flags: 0,
        };
        let mut completed = Completed::new(8);
        for idx in [1, 2, 3] {
            completed.push(done(idx));
        }
        completed.start_batch();
        assert_eq!(completed.next_in_batch(), Some(done(1)));
        // The callback for 1 panics here; a completion arrives before the next turn.
        completed.push(done(7));
        assert!(!completed.is_empty());
        completed.start_batch();
        let mut order = Vec::new();
        while let Some(entry) = completed.next_in_batch() {
            order.push(entry.idx);
        }
        completed.start_batch();
        while let Some(entry) = completed.next_in_batch() {
            order.push(entry.idx);
        }
        assert_eq!(order, vec![2, 3, 7]);
        assert!(completed.is_empty());
        completed.push(done(4));
        completed.start_batch();
        let mut drained = Vec::new();
        completed.push(done(5));
        completed.drain(|entry| drained.push(entry.idx));
        assert_eq!(drained, vec![4, 5]);
        assert!(completed.is_empty());
    }
}
