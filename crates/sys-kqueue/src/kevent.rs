//! The one seam to the `kevent` syscall: the [`Kevent`] trait, its real implementation
//! [`System`] over rustix (kqueue targets only), and [`Notifier`], which triggers a user event
//! from any thread.
#![allow(unsafe_code)]

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::filter::{Change, Event};

/// `kevent(2)`: apply `changes`, then wait up to `timeout` (`None`: forever) for events.
///
/// Contract every implementation keeps, and the kqueue backend relies on:
/// - changes are applied in order; a failed change is reported as an event with
///   `Flags::ERROR` and the errno in `data`, and the call then returns without waiting;
/// - a `ONESHOT` registration is removed once its event is reported;
/// - `udata` comes back unchanged;
/// - `EINTR` is not an error: the changes count as applied and no event is reported.
pub trait Kevent {
    /// Applies `changes` and harvests at most `events.len()` events into `events`; returns
    /// how many.
    ///
    /// # Errors
    /// The syscall's own errors (`EBADF` for a closed kqueue, `ENOMEM`), or a change's errno
    /// when `events` has no room for its error event.
    fn kevent(
        &mut self,
        changes: &[Change],
        events: &mut [Event],
        timeout: Option<Duration>,
    ) -> io::Result<usize>;

    /// A handle that triggers the user event `ident` (registered with `Filter::User`) from
    /// any thread.
    fn notifier(&self, ident: usize) -> Notifier;
}

/// Triggers one user event from any thread. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    pub(crate) inner: NotifierInner,
}

#[derive(Clone)]
pub(crate) enum NotifierInner {
    #[cfg(kqueue)]
    System {
        kq: Arc<std::os::fd::OwnedFd>,
        ident: usize,
    },
    #[cfg(any(test, feature = "fake"))]
    Fake {
        shared: Arc<crate::fake::Shared>,
        ident: usize,
    },
    /// Never constructed; keeps the enum inhabited on targets with neither variant.
    #[allow(dead_code)]
    None(std::marker::PhantomData<Arc<()>>),
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Notifier>();
};

impl Notifier {
    /// Triggers the user event. A notifier may outlive its kqueue harmlessly: it keeps the
    /// real kqueue open (the double: its wake pipe, both ends), so a late `notify` returns
    /// `Ok` and wakes nobody.
    ///
    /// # Errors
    /// The `kevent` (or, for the double, `write`) call's error.
    pub fn notify(&self) -> io::Result<()> {
        match &self.inner {
            #[cfg(kqueue)]
            NotifierInner::System { kq, ident } => system::trigger(kq, *ident),
            #[cfg(any(test, feature = "fake"))]
            NotifierInner::Fake { shared, ident } => shared.trigger(*ident),
            NotifierInner::None(_) => unreachable!("no notifier on this target"),
        }
    }
}

#[cfg(kqueue)]
pub use system::System;

#[cfg(kqueue)]
mod system {
    use std::io;
    use std::mem::MaybeUninit;
    use std::os::fd::{AsFd, OwnedFd, RawFd};
    use std::sync::Arc;
    use std::time::Duration;

    use rustix::event::kqueue::{self, EventFilter, EventFlags, UserDefinedFlags, UserFlags};

    use super::{Kevent, Notifier, NotifierInner};
    use crate::filter::{Change, Event, Filter, Flags};

    /// The real kqueue, over rustix.
    ///
    /// # References
    /// - [FreeBSD](https://man.freebsd.org/cgi/man.cgi?query=kevent&sektion=2)
    /// - [Apple](https://developer.apple.com/library/archive/documentation/System/Conceptual/ManPages_iPhoneOS/man2/kevent.2.html)
    pub struct System {
        kq: Arc<OwnedFd>,
        changes: Vec<kqueue::Event>,
        events: Vec<kqueue::Event>,
    }

    impl std::fmt::Debug for System {
        /// The kqueue descriptor and the buffers' capacities.
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("System")
                .field("kq", &self.kq)
                .field("changes_max", &self.changes.capacity())
                .field("events_max", &self.events.capacity())
                .finish()
        }
    }

    impl System {
        /// `kqueue()`—a new kqueue whose calls take up to `changes_max` changes and return
        /// up to `events_max` events. Allocates its buffers here only.
        ///
        /// # Errors
        /// `kqueue(2)`'s (`EMFILE`, `ENOMEM`).
        pub fn new(changes_max: usize, events_max: usize) -> io::Result<System> {
            let kq = Arc::new(kqueue::kqueue()?);
            Ok(System {
                kq,
                changes: Vec::with_capacity(changes_max),
                events: Vec::with_capacity(events_max),
            })
        }
    }

    fn to_rustix(change: &Change) -> kqueue::Event {
        let mut flags = EventFlags::empty();
        for (ours, theirs) in [
            (Flags::ADD, EventFlags::ADD),
            (Flags::DELETE, EventFlags::DELETE),
            (Flags::ONESHOT, EventFlags::ONESHOT),
            (Flags::CLEAR, EventFlags::CLEAR),
        ] {
            if change.flags.contains(ours) {
                flags |= theirs;
            }
        }
        let filter = match change.filter {
            Filter::Read => EventFilter::Read(change.ident as RawFd),
            Filter::Write => EventFilter::Write(change.ident as RawFd),
            Filter::User => EventFilter::User {
                ident: change.ident as _,
                flags: if change.flags.contains(Flags::TRIGGER) {
                    UserFlags::TRIGGER
                } else {
                    UserFlags::empty()
                },
                user_flags: UserDefinedFlags::new(0),
            },
        };
        kqueue::Event::new(filter, flags, change.udata as usize as *mut _)
    }

    fn from_rustix(event: &kqueue::Event) -> Event {
        let (ident, filter) = match event.filter() {
            EventFilter::Read(fd) => (fd as usize, Filter::Read),
            EventFilter::Write(fd) => (fd as usize, Filter::Write),
            EventFilter::User { ident, .. } => (ident as usize, Filter::User),
            _ => unreachable!("only read, write and user filters are registered"),
        };
        let mut flags = Flags::NONE;
        if event.flags().contains(EventFlags::EOF) {
            flags |= Flags::EOF;
        }
        if event.flags().contains(EventFlags::ERROR) {
            flags |= Flags::ERROR;
        }
        Event {
            ident,
            filter,
            flags,
            data: event.data(),
            udata: event.udata() as usize as u64,
        }
    }

    impl Kevent for System {
        fn kevent(
            &mut self,
            changes: &[Change],
            events: &mut [Event],
            timeout: Option<Duration>,
        ) -> io::Result<usize> {
            assert!(
                changes.len() <= self.changes.capacity(),
                "changelist over capacity"
            );
            self.changes.clear();
            self.changes.extend(changes.iter().map(to_rustix));
            self.events.clear();
            let room = events.len().min(self.events.capacity());
            let spare: &mut [MaybeUninit<kqueue::Event>] =
                &mut self.events.spare_capacity_mut()[..room];
            // SAFETY: the descriptors in the changelist are the caller's, kept open while
            // registered; kqueue drops a registration when its descriptor closes, so no event
            // names a closed descriptor.
            let result = unsafe { kqueue::kevent(self.kq.as_fd(), &self.changes, spare, timeout) };
            let harvested = match result {
                Ok((harvested, _)) => harvested,
                // EINTR: the changes count as applied (as mio does); no events this time.
                Err(rustix::io::Errno::INTR) => return Ok(0),
                Err(errno) => return Err(errno.into()),
            };
            for (out, event) in events.iter_mut().zip(harvested.iter()) {
                *out = from_rustix(event);
            }
            Ok(harvested.len())
        }

        fn notifier(&self, ident: usize) -> Notifier {
            Notifier {
                inner: NotifierInner::System {
                    kq: Arc::clone(&self.kq),
                    ident,
                },
            }
        }
    }

    /// `kevent(kq, [EVFILT_USER ident NOTE_TRIGGER], [], 0)`—triggers a user event.
    pub(super) fn trigger(kq: &OwnedFd, ident: usize) -> io::Result<()> {
        let change = to_rustix(&Change::new(ident, Filter::User, Flags::TRIGGER, 0));
        let mut none: [MaybeUninit<kqueue::Event>; 0] = [];
        // SAFETY: a user event names no descriptor.
        let result =
            unsafe { kqueue::kevent(kq.as_fd(), &[change], &mut none[..], Some(Duration::ZERO)) };
        result.map(|_| ()).map_err(io::Error::from)
    }
}
