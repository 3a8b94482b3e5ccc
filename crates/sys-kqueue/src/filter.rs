//! Portable records of `struct kevent`: the filters and flags an I/O loop uses.

use std::ops::{BitOr, BitOrAssign};

/// The kqueue filters this crate supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `EVFILT_READ`: the descriptor `ident` is readable (or at end of file).
    Read,
    /// `EVFILT_WRITE`: the descriptor `ident` is writable.
    Write,
    /// `EVFILT_USER`: a user event, triggered with [`Flags::TRIGGER`]-carrying changes or a
    /// [`crate::Notifier`].
    User,
}

/// `EV_*` flags of a change or an event, plus `NOTE_TRIGGER` for user events (kept here, not
/// in `fflags`, because it is the only note this crate uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// `EV_ADD`: add or modify the registration of (`ident`, `filter`).
    pub const ADD: Flags = Flags(1 << 0);
    /// `EV_DELETE`: remove the registration.
    pub const DELETE: Flags = Flags(1 << 1);
    /// `EV_ONESHOT`: remove the registration after its first event.
    pub const ONESHOT: Flags = Flags(1 << 2);
    /// `EV_CLEAR`: reset the state after the event is retrieved (user events).
    pub const CLEAR: Flags = Flags(1 << 3);
    /// `EV_EOF` (events only): the peer closed, or the descriptor hit end of file.
    pub const EOF: Flags = Flags(1 << 4);
    /// `EV_ERROR` (events only): the change failed; `Event::data` holds the errno.
    pub const ERROR: Flags = Flags(1 << 5);
    /// `NOTE_TRIGGER` (user filter changes only): trigger the user event.
    pub const TRIGGER: Flags = Flags(1 << 6);

    /// Whether every flag in `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl BitOrAssign for Flags {
    fn bitor_assign(&mut self, other: Flags) {
        self.0 |= other.0;
    }
}

/// One change for the changelist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// The descriptor (read, write) or the user event's identifier.
    pub ident: usize,
    /// The filter.
    pub filter: Filter,
    /// `ADD`, `DELETE`, `ONESHOT`, `CLEAR`, `TRIGGER`.
    pub flags: Flags,
    /// Returned unchanged in every event of this registration.
    pub udata: u64,
}

impl Change {
    /// A change of (`ident`, `filter`) with `flags`, carrying `udata`.
    pub const fn new(ident: usize, filter: Filter, flags: Flags, udata: u64) -> Change {
        Change {
            ident,
            filter,
            flags,
            udata,
        }
    }
}

/// One event harvested by a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// As registered.
    pub ident: usize,
    /// As registered.
    pub filter: Filter,
    /// `EOF` and `ERROR` as reported.
    pub flags: Flags,
    /// For `ERROR`, the errno; for read/write, the bytes available or the buffer space.
    pub data: i64,
    /// As registered.
    pub udata: u64,
}

impl Event {
    /// A placeholder for event buffers.
    pub const EMPTY: Event = Event {
        ident: 0,
        filter: Filter::User,
        flags: Flags::NONE,
        data: 0,
        udata: 0,
    };
}
