//! `Fake`: an in-memory double of `kevent` with kqueue's semantics, over `poll(2)`.
//!
//! How it works: registrations live in a fixed table keyed by (`ident`, filter). Each call
//! applies the changelist in order (failed changes become `ERROR` events and the call returns
//! at once, as FreeBSD's does), then polls the registered descriptors, plus a pipe that
//! [`Notifier`]s write to, with the caller's timeout at nanosecond precision (`ppoll`).
//! Readiness becomes events carrying each registration's `udata`; `POLLHUP`/`POLLRDHUP` become
//! `EOF`; a descriptor that was closed (`POLLNVAL`) loses its registration silently, as kqueue
//! drops registrations on close; `ONESHOT` registrations are removed once reported.
//! `CLEAR` read and write registrations (Linux) are edge-triggered as kqueue's are: reported
//! once per change of state, not while the state lasts (`clear.rs` says how).
//! `Event::data` is always 0 for read and write events (kqueue reports byte counts; the loop
//! does not use them).
#![allow(unsafe_code)]

#[cfg(any(target_os = "linux", target_os = "android"))]
mod clear;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

use crate::filter::{Change, Event, Filter, Flags};
use crate::kevent::{Kevent, Notifier, NotifierInner};

/// User events that other threads can trigger have identifiers below this.
pub const USER_IDENTS_MAX: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Registration {
    ident: usize,
    filter: Filter,
    oneshot: bool,
    clear: bool,
    udata: u64,
    /// User events: triggered and not yet cleared. `CLEAR` read and write registrations:
    /// an edge arrived and was not reported yet.
    triggered: bool,
    /// `CLEAR` read and write registrations: the edge's `EV_EOF`.
    eof: bool,
    /// `CLEAR` read and write registrations: the key of their inner epoll item, and the
    /// file the number named when registered (Linux only: elsewhere the double refuses
    /// them).
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    serial: u64,
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    identity: (u64, u64),
}

impl Registration {
    /// Read or write, edge-triggered: watched by the inner epoll instances, not by `poll`.
    fn edged(&self) -> bool {
        self.clear && self.filter != Filter::User
    }
}

/// State shared with [`Notifier`]s on other threads.
///
/// Both ends of the wake pipe live here, so that the pipe keeps a reader as long as any
/// notifier can write to it: a notifier that outlives its `Fake` (a loop's waker kept after
/// the loop is dropped) then writes into a pipe nobody drains, which fills and answers
/// `EAGAIN`, never `EPIPE` and its `SIGPIPE`, as a real kqueue's notifier keeps its kqueue
/// open.
pub(crate) struct Shared {
    wake_read: OwnedFd,
    wake_write: OwnedFd,
    triggered: [AtomicBool; USER_IDENTS_MAX],
}

impl Shared {
    pub(crate) fn trigger(&self, ident: usize) -> io::Result<()> {
        assert!(
            ident < USER_IDENTS_MAX,
            "the double supports user idents below 8"
        );
        // Release: the flag is visible to the waiter that reads the pipe byte written after.
        self.triggered[ident].store(true, Ordering::Release);
        match rustix::io::write(&self.wake_write, &[1]) {
            // A full pipe already guarantees a wake-up (or, once the `Fake` is gone, the pipe
            // only fills: its reader lives here, so the write is never EPIPE).
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }
}

/// The kevent double. See the module documentation for what it models.
pub struct Fake {
    registrations: Vec<Registration>,
    shared: Arc<Shared>,
    /// Scratch for each call: the pollfds and which registration each belongs to.
    pollfds: Vec<PollFd<'static>>,
    owners: Vec<usize>,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    edges: clear::Edges,
    /// The last serial handed to a watched registration.
    #[cfg_attr(not(any(target_os = "linux", target_os = "android")), allow(dead_code))]
    serials: u64,
    calls: u64,
    changes: u64,
}

impl std::fmt::Debug for Fake {
    /// The registrations (the scratch buffers are left out).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fake")
            .field("registrations", &self.registrations.len())
            .finish_non_exhaustive()
    }
}

impl Fake {
    /// A double that holds up to `registrations_max` registrations.
    ///
    /// # Errors
    /// Creating its internal pipe failed.
    pub fn new(registrations_max: usize) -> io::Result<Fake> {
        let (wake_read, wake_write) = wake_pipe()?;
        let shared = Arc::new(Shared {
            wake_read,
            wake_write,
            triggered: std::array::from_fn(|_| AtomicBool::new(false)),
        });
        Ok(Fake {
            registrations: Vec::with_capacity(registrations_max),
            shared,
            pollfds: Vec::with_capacity(registrations_max + 3),
            owners: Vec::with_capacity(registrations_max + 3),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            edges: clear::Edges::new(registrations_max)?,
            serials: 0,
            calls: 0,
            changes: 0,
        })
    }

    /// How many `kevent` calls the double has answered: what the real syscall would cost.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// How many changes the calls carried (applied or failed).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Starts watching a `CLEAR` read or write registration's edges.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn watch(&mut self, change: &Change) -> Result<(u64, (u64, u64)), rustix::io::Errno> {
        let identity = clear::identity(change.ident)?;
        self.serials += 1;
        self.edges
            .watch(change.filter, change.ident, self.serials)?;
        Ok((self.serials, identity))
    }

    /// Elsewhere the real kqueue is there to test against: the double refuses.
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn watch(&mut self, _change: &Change) -> Result<(u64, (u64, u64)), rustix::io::Errno> {
        Err(rustix::io::Errno::INVAL)
    }

    /// Stops watching `registration`'s edges, if it was watched.
    fn unwatch(&self, registration: &Registration) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if registration.edged() {
            self.edges.unwatch(registration.filter, registration.ident);
        }
        let _ = registration;
    }

    /// Drops the edge-triggered registrations whose number was closed, or names another
    /// file now: kqueue removes a descriptor's registrations when the number is closed.
    fn drop_closed(&mut self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        self.registrations.retain(|registration| {
            !registration.edged()
                || clear::identity(registration.ident) == Ok(registration.identity)
        });
    }

    /// Marks the registrations whose edges the inner instances hold.
    fn take_edges(&mut self) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let registrations = &mut self.registrations;
            self.edges.take(|edge| {
                let found = registrations.iter_mut().find(|registration| {
                    registration.edged()
                        && registration.serial == edge.serial
                        && registration.filter == edge.filter
                });
                // No registration carries the serial: a stale item (see `clear.rs`).
                if let Some(registration) = found {
                    registration.triggered = true;
                    registration.eof |= edge.eof;
                }
            })?;
        }
        Ok(())
    }

    fn find(&self, ident: usize, filter: Filter) -> Option<usize> {
        self.registrations
            .iter()
            .position(|r| r.ident == ident && r.filter == filter)
    }

    /// Applies one change; `Err(errno)` when it fails.
    fn apply(&mut self, change: &Change) -> Result<(), rustix::io::Errno> {
        let found = self.find(change.ident, change.filter);
        if change.flags.contains(Flags::DELETE) {
            let idx = found.ok_or(rustix::io::Errno::NOENT)?;
            let registration = self.registrations.swap_remove(idx);
            self.unwatch(&registration);
            return Ok(());
        }
        if change.flags.contains(Flags::ADD) {
            if change.filter != Filter::User {
                check_open(change.ident)?;
            }
            if found.is_none() && self.registrations.len() == self.registrations.capacity() {
                return Err(rustix::io::Errno::NOMEM);
            }
            if let Some(idx) = found {
                let old = self.registrations[idx];
                self.unwatch(&old);
            }
            let clear = change.flags.contains(Flags::CLEAR);
            let (serial, identity) = if clear && change.filter != Filter::User {
                self.watch(change)?
            } else {
                (0, (0, 0))
            };
            let registration = Registration {
                ident: change.ident,
                filter: change.filter,
                oneshot: change.flags.contains(Flags::ONESHOT),
                clear,
                udata: change.udata,
                // A user event keeps its trigger; a watched filter's state is reported
                // afresh by the new watch.
                triggered: found.is_some_and(|idx| {
                    change.filter == Filter::User && self.registrations[idx].triggered
                }),
                eof: false,
                serial,
                identity,
            };
            match found {
                Some(idx) => self.registrations[idx] = registration,
                None if self.registrations.len() == self.registrations.capacity() => {
                    return Err(rustix::io::Errno::NOMEM)
                }
                None => self.registrations.push(registration),
            }
        }
        if change.flags.contains(Flags::TRIGGER) {
            assert_eq!(change.filter, Filter::User, "TRIGGER is for user events");
            let idx = self
                .find(change.ident, Filter::User)
                .ok_or(rustix::io::Errno::NOENT)?;
            self.registrations[idx].triggered = true;
        }
        Ok(())
    }

    /// Moves triggers made by other threads onto their registrations.
    fn take_remote_triggers(&mut self) {
        for (ident, flag) in self.shared.triggered.iter().enumerate() {
            // Acquire: pairs with the Release store in `Shared::trigger`.
            if flag.swap(false, Ordering::Acquire) {
                if let Some(idx) = self.find(ident, Filter::User) {
                    self.registrations[idx].triggered = true;
                }
            }
        }
    }

    fn drain_wake_pipe(&mut self) {
        let mut sink = [0_u8; 64];
        while let Ok(n) = rustix::io::read(&self.shared.wake_read, &mut sink) {
            if n < sink.len() {
                break;
            }
        }
    }

    /// Builds the pollfds for every read and write registration, plus the wake pipe (last).
    fn build_pollfds(&mut self) {
        self.pollfds.clear();
        self.owners.clear();
        for (idx, registration) in self.registrations.iter().enumerate() {
            let flags = match registration.filter {
                _ if registration.edged() => continue,
                Filter::Read => PollFlags::IN | rdhup(),
                Filter::Write => PollFlags::OUT,
                Filter::User => continue,
            };
            // SAFETY: the caller keeps registered descriptors open (the `Kevent` contract); a
            // descriptor closed anyway is reported by poll as POLLNVAL and unregistered. The
            // 'static borrow never outlives this call: `pollfds` is cleared at the next one.
            let fd = unsafe { BorrowedFd::borrow_raw(registration.ident as i32) };
            self.pollfds.push(PollFd::from_borrowed_fd(fd, flags));
            self.owners.push(idx);
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        for instance in self.edges.fds() {
            // SAFETY: the instances live as long as `self`; the borrow is dropped at the next
            // call's `clear`, before `self` can be dropped.
            let fd = unsafe { BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&instance)) };
            self.pollfds
                .push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
        }
        // SAFETY: `wake_read` lives as long as `self.shared`, which `self` holds, and the
        // borrow is dropped at the next call's `clear`, before `self` can be dropped.
        let wake = unsafe {
            BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&self.shared.wake_read))
        };
        self.pollfds
            .push(PollFd::from_borrowed_fd(wake, PollFlags::IN));
    }

    /// Reports ready registrations into `events`; returns how many, removing one-shots.
    fn harvest(&mut self, events: &mut [Event]) -> usize {
        let mut count = 0;
        let mut idx = 0;
        let mut poll_idx = 0;
        // Registrations removed while harvesting are marked (ident = usize::MAX) and dropped
        // after the scan, so that indices stay aligned with `pollfds`.
        let mut removals = 0_usize;
        while idx < self.registrations.len() {
            let registration = self.registrations[idx];
            let ready = match registration.filter {
                Filter::User => registration.triggered.then_some(Flags::NONE),
                _ if registration.edged() => {
                    registration.triggered.then_some(if registration.eof {
                        Flags::EOF
                    } else {
                        Flags::NONE
                    })
                }
                Filter::Read | Filter::Write => {
                    assert_eq!(self.owners[poll_idx], idx);
                    let revents = self.pollfds[poll_idx].revents();
                    poll_idx += 1;
                    if revents.contains(PollFlags::NVAL) {
                        // Closed descriptor: kqueue drops the registration on close.
                        self.registrations[idx].ident = usize::MAX;
                        removals += 1;
                        idx += 1;
                        continue;
                    }
                    readiness(registration.filter, revents)
                }
            };
            if let Some(flags) = ready {
                if count == events.len() {
                    break;
                }
                events[count] = Event {
                    ident: registration.ident,
                    filter: registration.filter,
                    flags,
                    data: 0,
                    udata: registration.udata,
                };
                count += 1;
                if registration.clear {
                    // EV_CLEAR: reported once, then reset until the next change of state.
                    self.registrations[idx].triggered = false;
                    self.registrations[idx].eof = false;
                }
                if registration.oneshot {
                    self.unwatch(&registration);
                    self.registrations[idx].ident = usize::MAX;
                    removals += 1;
                }
            }
            idx += 1;
        }
        if removals > 0 {
            self.registrations.retain(|r| r.ident != usize::MAX);
        }
        count
    }
}

/// The flags of a ready event for `filter` given poll's `revents`, or `None` if not ready.
fn readiness(filter: Filter, revents: PollFlags) -> Option<Flags> {
    let hangup = revents.intersects(PollFlags::HUP | PollFlags::ERR | rdhup());
    let ready = match filter {
        Filter::Read => revents.intersects(PollFlags::IN) || hangup,
        Filter::Write => revents.intersects(PollFlags::OUT) || hangup,
        Filter::User => unreachable!(),
    };
    if !ready {
        return None;
    }
    Some(if hangup { Flags::EOF } else { Flags::NONE })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn rdhup() -> PollFlags {
    PollFlags::RDHUP
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn rdhup() -> PollFlags {
    PollFlags::empty()
}

/// A non-blocking, close-on-exec pipe (set with `fcntl`: macOS has no `pipe2`).
fn wake_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe()?;
    for end in [&read, &write] {
        rustix::io::fcntl_setfd(end, rustix::io::FdFlags::CLOEXEC)?;
        let flags = rustix::fs::fcntl_getfl(end)?;
        rustix::fs::fcntl_setfl(end, flags | rustix::fs::OFlags::NONBLOCK)?;
    }
    Ok((read, write))
}

/// `EBADF` unless `fd` is an open descriptor (`fcntl(F_GETFD)`).
fn check_open(fd: usize) -> Result<(), rustix::io::Errno> {
    let fd = i32::try_from(fd).map_err(|_| rustix::io::Errno::BADF)?;
    if fd < 0 {
        return Err(rustix::io::Errno::BADF);
    }
    // SAFETY: the borrow lasts for this one `fcntl`, which only asks whether `fd` is open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(borrowed).map(|_| ())
}

impl Kevent for Fake {
    fn kevent(
        &mut self,
        changes: &[Change],
        events: &mut [Event],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        self.calls += 1;
        self.changes += changes.len() as u64;
        self.drop_closed();
        let mut errors = 0;
        for change in changes {
            if let Err(errno) = self.apply(change) {
                if errors == events.len() {
                    return Err(errno.into());
                }
                events[errors] = Event {
                    ident: change.ident,
                    filter: change.filter,
                    flags: Flags::ERROR,
                    data: i64::from(errno.raw_os_error()),
                    udata: change.udata,
                };
                errors += 1;
            }
        }
        if errors > 0 {
            return Ok(errors);
        }
        self.take_remote_triggers();
        self.take_edges()?;
        let triggered = self.registrations.iter().any(|r| r.triggered);
        let timeout = if triggered {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        self.build_pollfds();
        let timespec = timeout.map(|t| rustix::event::Timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        match rustix::event::poll(&mut self.pollfds, timespec.as_ref()) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(0),
            Err(errno) => return Err(errno.into()),
        }
        let wake = self
            .pollfds
            .last()
            .expect("the wake pipe is always polled")
            .revents();
        if wake.contains(PollFlags::IN) {
            self.drain_wake_pipe();
            self.take_remote_triggers();
        }
        self.take_edges()?;
        Ok(self.harvest(events))
    }

    fn notifier(&self, ident: usize) -> Notifier {
        assert!(
            ident < USER_IDENTS_MAX,
            "the double supports user idents below 8"
        );
        Notifier {
            inner: NotifierInner::Fake {
                shared: Arc::clone(&self.shared),
                ident,
            },
        }
    }
}
