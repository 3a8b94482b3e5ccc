//! `Changelist`: interest changes accumulated between waits, submitted with the next one.

use crate::filter::Change;

/// The changelist is at capacity: submit it (a `kevent` call with a zero timeout), then push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangelistFull;

impl std::fmt::Display for ChangelistFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("kqueue changelist is full")
    }
}

impl std::error::Error for ChangelistFull {}

/// A fixed-capacity list of changes; allocates only in [`Changelist::with_capacity`].
#[derive(Debug)]
pub struct Changelist {
    changes: Vec<Change>,
}

impl Changelist {
    /// A changelist that holds up to `capacity` changes.
    pub fn with_capacity(capacity: usize) -> Changelist {
        assert!(capacity > 0);
        Changelist {
            changes: Vec::with_capacity(capacity),
        }
    }

    /// Appends a change, or says the list is full (it never grows).
    pub fn push(&mut self, change: Change) -> Result<(), ChangelistFull> {
        if self.changes.len() == self.changes.capacity() {
            return Err(ChangelistFull);
        }
        self.changes.push(change);
        Ok(())
    }

    /// The changes, oldest first.
    pub fn as_slice(&self) -> &[Change] {
        &self.changes
    }

    /// Keeps only the changes for which `keep` is true, in order.
    pub fn retain(&mut self, keep: impl FnMut(&Change) -> bool) {
        self.changes.retain(keep);
    }

    /// Forgets every change (after they were submitted).
    pub fn clear(&mut self) {
        self.changes.clear();
    }

    /// Number of changes waiting.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether no change is waiting.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The most changes the list holds.
    pub fn capacity(&self) -> usize {
        self.changes.capacity()
    }
}
