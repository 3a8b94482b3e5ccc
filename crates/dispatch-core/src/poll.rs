//! [`PollEvents`]: what [`crate::Io::poll`] waits for and what it reports, and its
//! translation to and from `poll(2)`'s bits, which every backend reports a poll's result in
//! (io_uring's `POLL_ADD` answers the kernel's `revents`; the readiness engine asks
//! `poll(2)` itself; the simulator builds the same bits from its own objects).

use std::fmt;
use std::io;
use std::ops::{BitOr, BitOrAssign};

/// A set of readiness events: what a poll asks for ([`crate::Io::poll`]'s `interest`) and
/// what fired (its callback's value).
///
/// - [`PollEvents::READABLE`]: a read would not block (data, a connection to accept, or the
///   end of stream: a reader sees `0` bytes).
/// - [`PollEvents::WRITABLE`]: a write would not block.
/// - [`PollEvents::HANGUP`]: the peer hung up (`POLLHUP`; on Linux also `POLLRDHUP`, the
///   peer shut its writing side, as a TCP `FIN` or a closed Unix-socket peer does). Always
///   reported when it holds, whatever the interest.
/// - [`PollEvents::ERROR`]: an error is pending on the descriptor (`POLLERR`; the next
///   operation, or `SO_ERROR`, says which). Always reported when it holds.
///
/// An interest of [`PollEvents::NONE`] waits for a hang-up or an error only.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PollEvents(u8);

impl PollEvents {
    /// No event.
    pub const NONE: PollEvents = PollEvents(0);
    /// Reading would not block.
    pub const READABLE: PollEvents = PollEvents(1);
    /// Writing would not block.
    pub const WRITABLE: PollEvents = PollEvents(2);
    /// The peer hung up (or shut its writing side, on Linux).
    pub const HANGUP: PollEvents = PollEvents(4);
    /// An error is pending.
    pub const ERROR: PollEvents = PollEvents(8);

    /// Whether every event of `other` is in `self`.
    pub fn contains(self, other: PollEvents) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share an event.
    pub fn intersects(self, other: PollEvents) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// [`PollEvents::READABLE`] is in the set.
    pub fn is_readable(self) -> bool {
        self.contains(PollEvents::READABLE)
    }

    /// [`PollEvents::WRITABLE`] is in the set.
    pub fn is_writable(self) -> bool {
        self.contains(PollEvents::WRITABLE)
    }

    /// [`PollEvents::HANGUP`] is in the set.
    pub fn is_hangup(self) -> bool {
        self.contains(PollEvents::HANGUP)
    }

    /// [`PollEvents::ERROR`] is in the set.
    pub fn is_error(self) -> bool {
        self.contains(PollEvents::ERROR)
    }
}

impl BitOr for PollEvents {
    type Output = PollEvents;

    fn bitor(self, other: PollEvents) -> PollEvents {
        PollEvents(self.0 | other.0)
    }
}

impl BitOrAssign for PollEvents {
    fn bitor_assign(&mut self, other: PollEvents) {
        self.0 |= other.0;
    }
}

impl fmt::Debug for PollEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(PollEvents, &str); 4] = [
            (PollEvents::READABLE, "READABLE"),
            (PollEvents::WRITABLE, "WRITABLE"),
            (PollEvents::HANGUP, "HANGUP"),
            (PollEvents::ERROR, "ERROR"),
        ];
        if self.is_empty() {
            return f.write_str("NONE");
        }
        let mut first = true;
        for (event, name) in NAMES {
            if self.contains(event) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

/// `POLLRDHUP` where the platform has it (Linux); nothing elsewhere.
#[cfg(any(target_os = "linux", target_os = "android"))]
const RDHUP: i16 = libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const RDHUP: i16 = 0;

/// The `poll(2)` events to ask the kernel for, for `interest` (`POLLHUP` and `POLLERR` are
/// always reported; `POLLRDHUP` is asked for too where it exists).
pub(crate) fn native_interest(interest: PollEvents) -> u32 {
    let mut events = RDHUP;
    if interest.is_readable() {
        events |= libc::POLLIN;
    }
    if interest.is_writable() {
        events |= libc::POLLOUT;
    }
    u32::from(events as u16)
}

/// The events `revents` (`poll(2)`'s bits) reports, within `native` (what was asked, plus
/// hang-up and error).
pub(crate) fn from_native(revents: u32) -> PollEvents {
    let revents = revents as u16 as i16;
    let mut events = PollEvents::NONE;
    if revents & libc::POLLIN != 0 {
        events |= PollEvents::READABLE;
    }
    if revents & libc::POLLOUT != 0 {
        events |= PollEvents::WRITABLE;
    }
    if revents & (libc::POLLHUP | RDHUP) != 0 {
        events |= PollEvents::HANGUP;
    }
    if revents & libc::POLLERR != 0 {
        events |= PollEvents::ERROR;
    }
    events
}

/// The result a backend reports for a poll whose `poll(2)` check found `revents` among the
/// asked-for `native` events: `> 0`, the bits that fired; `-EBADF` for an invalid
/// descriptor (`POLLNVAL`, as io_uring answers); `None` when nothing fired (wait).
pub(crate) fn native_result(native: u32, revents: i16) -> Option<i32> {
    if revents & libc::POLLNVAL != 0 {
        return Some(-libc::EBADF);
    }
    let always = libc::POLLHUP | libc::POLLERR;
    let fired = (revents as u16 as u32) & (native | always as u16 as u32);
    (fired != 0).then(|| i32::try_from(fired).expect("poll bits fit i32"))
}

/// The value for a poll's callback: the events that fired, or the error.
pub(crate) fn poll_value(result: i32) -> io::Result<PollEvents> {
    if result < 0 {
        return Err(io::Error::from_raw_os_error(-result));
    }
    assert!(result > 0, "a poll completes with the events that fired");
    Ok(from_native(result as u32))
}

#[cfg(test)]
mod tests {
    use super::{from_native, native_interest, native_result, PollEvents};

    #[test]
    fn events_round_trip_through_poll_bits() {
        let both = PollEvents::READABLE | PollEvents::WRITABLE;
        let native = native_interest(both);
        assert!(from_native(native).contains(both));
        assert_eq!(native_result(native, 0), None);
        let hup = native_result(0, libc::POLLHUP).expect("hang-up always fires");
        assert_eq!(from_native(hup as u32), PollEvents::HANGUP);
        assert_eq!(native_result(native, libc::POLLNVAL), Some(-libc::EBADF));
        assert_eq!(format!("{:?}", both), "READABLE | WRITABLE");
        assert_eq!(format!("{:?}", PollEvents::NONE), "NONE");
    }
}
