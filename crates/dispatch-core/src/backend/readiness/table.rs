//! Fixed-capacity structures of the readiness engine: the table of descriptors the engine holds
//! operations on (open addressing, backward-shift deletion), with what it remembers of each
//! (registration, readiness per direction), and the FIFOs of operations queued on each.
//! The FIFOs' links are allocated once; the descriptor table grows, at a new peak only, up to
//! its bound.

use std::os::fd::RawFd;

/// A direction of readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Read = 0,
    Write = 1,
}

impl Dir {
    pub(crate) const BOTH: [Dir; 2] = [Dir::Read, Dir::Write];

    pub(crate) fn bit(self) -> Dirs {
        Dirs(1 << self as u8)
    }
}

/// A set of directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Dirs(u8);

impl Dirs {
    pub(crate) const NONE: Dirs = Dirs(0);

    pub(crate) fn contains(self, dir: Dir) -> bool {
        self.0 & dir.bit().0 != 0
    }

    pub(crate) fn with(self, dir: Dir) -> Dirs {
        Dirs(self.0 | dir.bit().0)
    }

    pub(crate) fn without(self, dir: Dir) -> Dirs {
        Dirs(self.0 & !dir.bit().0)
    }

    pub(crate) fn union(self, other: Dirs) -> Dirs {
        Dirs(self.0 | other.0)
    }
}

/// Both directions.
pub(crate) const ALL: Dirs = Dirs(0b11);

/// What the engine knows of a descriptor's socket type, for the short-read rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Not asked yet.
    Unknown,
    /// `SOCK_STREAM`: a short receive or send means the socket was drained or filled.
    Yes,
    /// Anything else (datagrams, records, not a socket): a short transfer says nothing.
    No,
}

pub(crate) const NONE: u32 = u32::MAX;

/// A FIFO of slot indices linked through the engine's per-slot `next` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Queue {
    pub(crate) head: u32,
    pub(crate) tail: u32,
}

impl Queue {
    pub(crate) const EMPTY: Queue = Queue {
        head: NONE,
        tail: NONE,
    };

    pub(crate) fn is_empty(&self) -> bool {
        self.head == NONE
    }

    pub(crate) fn push(&mut self, next: &mut [u32], idx: u32) {
        assert_eq!(next[idx as usize], NONE, "slot {idx} is already queued");
        if self.tail == NONE {
            self.head = idx;
        } else {
            next[self.tail as usize] = idx;
        }
        self.tail = idx;
    }

    pub(crate) fn pop(&mut self, next: &mut [u32]) -> Option<u32> {
        if self.head == NONE {
            return None;
        }
        let idx = self.head;
        self.head = std::mem::replace(&mut next[idx as usize], NONE);
        if self.head == NONE {
            self.tail = NONE;
        }
        Some(idx)
    }

    /// Unlinks `idx`; O(length), for cancellation. Returns whether it was queued here.
    pub(crate) fn remove(&mut self, next: &mut [u32], idx: u32) -> bool {
        let mut prev = NONE;
        let mut cursor = self.head;
        while cursor != NONE {
            let after = next[cursor as usize];
            if cursor == idx {
                if prev == NONE {
                    self.head = after;
                } else {
                    next[prev as usize] = after;
                }
                if self.tail == idx {
                    self.tail = prev;
                }
                next[idx as usize] = NONE;
                return true;
            }
            prev = cursor;
            cursor = after;
        }
        false
    }
}

/// One descriptor the engine holds operations on: a queue per direction (served in order, so
/// two sends on one socket never reorder or lose a write), whether it is registered with the
/// poller (edge-triggered, both directions), and its remembered readiness.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FdEntry {
    pub(crate) fd: RawFd,
    pub(crate) queues: [Queue; 2],
    /// The polls waiting on the descriptor (`poll.rs`), checked before the queues run.
    pub(crate) polls: Queue,
    /// The directions registered with the poller by this entry (epoll registers both at
    /// once, kqueue a filter per direction; an earlier entry of the same number may have
    /// registered it too: registering again is harmless).
    pub(crate) registered: Dirs,
    /// Directions that may be ready: set by an edge, cleared by `EAGAIN` or a short transfer
    /// on a stream socket. A fresh entry is `ALL`: unknown means "try".
    pub(crate) ready: Dirs,
    /// A hang-up or error was reported: final, so a short receive does not clear `ready`.
    pub(crate) closed: bool,
    pub(crate) stream: Stream,
    /// The descriptor is known to be in non-blocking mode (an accept's listener).
    pub(crate) nonblocking: bool,
    /// Operations started on this descriptor and not yet reaped.
    pub(crate) live: u32,
}

impl FdEntry {
    /// What the engine knows of a descriptor it has just met.
    pub(crate) const fn fresh(fd: RawFd) -> FdEntry {
        FdEntry {
            fd,
            queues: [Queue::EMPTY; 2],
            polls: Queue::EMPTY,
            registered: Dirs::NONE,
            ready: ALL,
            closed: false,
            stream: Stream::Unknown,
            nonblocking: false,
            live: 0,
        }
    }
}

const EMPTY_FD: RawFd = RawFd::MIN;

/// Open-addressing table from descriptor to `FdEntry`, with linear probing. It starts small
/// and doubles when half full, up to the size its bound needs, so its memory follows the
/// most descriptors ever waited on at once, not the loop's slot count (a server sized for
/// ten thousand connections and serving a hundred touches a few KiB, not megabytes). It
/// allocates only when it grows, at a new peak.
pub(crate) struct FdTable {
    entries: Box<[FdEntry]>,
    len: u32,
    /// The most entries the table may hold: its bound.
    fds_max: u32,
}

/// The entries a table starts with.
const FD_TABLE_START: usize = 64;

impl FdTable {
    /// A table for up to `fds_max` descriptors at once (growing to twice that, a power of
    /// two). The engine keeps an entry only while an operation on the descriptor is started
    /// and not reaped, or for one turn after a multishot's result, so twice the slots plus
    /// the waker bounds it.
    pub(crate) fn new(fds_max: u32) -> FdTable {
        let most = (fds_max as usize * 2).next_power_of_two().max(8);
        FdTable {
            entries: Self::empty(most.min(FD_TABLE_START)),
            len: 0,
            fds_max,
        }
    }

    fn empty(capacity: usize) -> Box<[FdEntry]> {
        assert!(capacity.is_power_of_two());
        vec![FdEntry::fresh(EMPTY_FD); capacity].into_boxed_slice()
    }

    /// Doubles the table and places every entry again (their positions change).
    #[cold]
    fn grow(&mut self) {
        let doubled = Self::empty(self.entries.len() * 2);
        let old = std::mem::replace(&mut self.entries, doubled);
        for entry in old.iter().filter(|entry| entry.fd != EMPTY_FD) {
            let at = self.vacant(entry.fd);
            self.entries[at] = *entry;
        }
    }

    /// The first empty position on `fd`'s probe run.
    fn vacant(&self, fd: RawFd) -> usize {
        let mask = self.entries.len() - 1;
        let mut at = self.home(fd);
        while self.entries[at].fd != EMPTY_FD {
            at = (at + 1) & mask;
        }
        at
    }

    fn home(&self, fd: RawFd) -> usize {
        // Fibonacci hashing spreads consecutive descriptors.
        let hash = (fd as u32).wrapping_mul(0x9E37_79B9);
        hash as usize & (self.entries.len() - 1)
    }

    /// The slot index of `fd`'s entry, if any.
    pub(crate) fn find(&self, fd: RawFd) -> Option<usize> {
        assert_ne!(fd, EMPTY_FD);
        let mask = self.entries.len() - 1;
        let mut at = self.home(fd);
        loop {
            match self.entries[at].fd {
                EMPTY_FD => return None,
                found if found == fd => return Some(at),
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// `fd`'s entry, created empty if absent.
    pub(crate) fn find_or_insert(&mut self, fd: RawFd) -> usize {
        if let Some(at) = self.find(fd) {
            return at;
        }
        assert!(
            self.len < self.fds_max,
            "more descriptors waiting than operations in flight"
        );
        // Never more than half full: probe runs stay short and always end.
        if self.len as usize + 1 > self.entries.len() / 2 {
            self.grow();
        }
        let at = self.vacant(fd);
        self.entries[at] = FdEntry::fresh(fd);
        self.len += 1;
        at
    }

    pub(crate) fn get(&mut self, at: usize) -> &mut FdEntry {
        assert_ne!(self.entries[at].fd, EMPTY_FD);
        &mut self.entries[at]
    }

    /// Removes the entry at `at`, shifting later members of its probe run back.
    pub(crate) fn remove(&mut self, at: usize) {
        let entry = &self.entries[at];
        assert_ne!(entry.fd, EMPTY_FD);
        assert!(
            entry.queues.iter().all(Queue::is_empty),
            "removing an fd with waiters"
        );
        let mask = self.entries.len() - 1;
        let mut hole = at;
        let mut probe = (at + 1) & mask;
        while self.entries[probe].fd != EMPTY_FD {
            let home = self.home(self.entries[probe].fd);
            // Move the entry into the hole if its home does not lie cyclically in
            // (hole, probe].
            let distance_home = probe.wrapping_sub(home) & mask;
            let distance_hole = probe.wrapping_sub(hole) & mask;
            if distance_home >= distance_hole {
                self.entries[hole] = self.entries[probe];
                hole = probe;
            }
            probe = (probe + 1) & mask;
        }
        self.entries[hole].fd = EMPTY_FD;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_table_survives_removal_in_the_middle_of_probe_runs() {
        let mut table = FdTable::new(8);
        // Descriptors that collide are common; insert many, remove some, find the rest.
        let fds: Vec<RawFd> = (0..8).map(|i| i * 16).collect();
        let at: Vec<usize> = fds.iter().map(|&fd| table.find_or_insert(fd)).collect();
        table.remove(at[2]);
        table.remove(table.find(fds[5]).unwrap());
        for (i, &fd) in fds.iter().enumerate() {
            assert_eq!(table.find(fd).is_some(), i != 2 && i != 5, "fd {fd}");
        }
    }

    #[test]
    fn fd_table_grows_from_small_to_its_bound_and_keeps_every_entry() {
        let mut table = FdTable::new(1000);
        assert_eq!(table.entries.len(), FD_TABLE_START);
        for fd in 0..1000 {
            let at = table.find_or_insert(fd * 7);
            table.get(at).live = fd as u32;
            assert!(
                table.len as usize * 2 <= table.entries.len(),
                "at most half full"
            );
        }
        assert_eq!(
            table.entries.len(),
            2048,
            "grown to its bound's size, no further"
        );
        for fd in 0..1000 {
            let at = table.find(fd * 7).expect("kept across every growth");
            assert_eq!(table.get(at).live, fd as u32, "with what it knew");
        }
        assert!(table.find(3).is_none());
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            table.find_or_insert(1_000_001)
        }));
        assert!(outcome.is_err(), "past its bound is a bug, said loudly");
    }
}
