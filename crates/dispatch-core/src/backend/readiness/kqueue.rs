//! The kqueue poller, over `sys-kqueue`'s `Kevent` seam: a descriptor is registered once per
//! direction, the first time an operation waits in it, with `EV_ADD | EV_CLEAR` on
//! `EVFILT_READ` or `EVFILT_WRITE` (`udata` = the descriptor; a listener never gets the write
//! filter, which some kernels refuse on listening sockets), appended to a changelist that
//! goes to the kernel with the next wait, in the same `kevent` call. Closing a descriptor
//! removes its registrations (kqueue's rule), so deregistering before a close only drops
//! changes for it not yet delivered. Wake-ups are an `EVFILT_USER` event with `EV_CLEAR`.
//! On FreeBSD and macOS `K` is the real syscall; on Linux the backend runs over the
//! `sys_kqueue::Fake` double.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use sys_kqueue::{Change, Changelist, Event, Filter, Flags, Kevent};

use super::table::{Dir, Dirs};
use super::{Poller, Readiness, EVENTS_MAX, WAKE_FD, WORKERS_FD};
use crate::stats::Stats;
use crate::waker::Waker;

/// The identifier of the wake-up user event.
const WAKE_IDENT: usize = 1;

/// The identifier of the file workers' user event.
const WORKERS_IDENT: usize = 2;

/// The changelist's capacity: each operation started in a turn registers at most one filter.
pub(crate) fn changes_max(ops_max: u32) -> usize {
    ops_max as usize * 2 + EVENTS_MAX * 2 + 8
}

/// The event buffer's size: room for every change's error entry plus a batch of events.
pub(crate) fn events_max(ops_max: u32) -> usize {
    changes_max(ops_max) + EVENTS_MAX
}

/// A kqueue (real or double), its changelist, and an event buffer.
pub(crate) struct KqueuePoller<K> {
    kq: K,
    changes: Changelist,
    events: Box<[Event]>,
    waker: Waker,
    /// The file workers' user event, if the loop has workers.
    workers_signal: Option<Waker>,
}

/// Registers the user event `ident` (`EV_CLEAR`: reported once per trigger) at once, and
/// returns the waker that triggers it.
fn register_user_event<K: Kevent>(kq: &mut K, ident: usize) -> io::Result<Waker> {
    let change = Change::new(ident, Filter::User, Flags::ADD | Flags::CLEAR, ident as u64);
    let mut events = [Event::EMPTY; 1];
    let n = kq.kevent(&[change], &mut events, Some(Duration::ZERO))?;
    if n == 1 && events[0].flags.contains(Flags::ERROR) {
        return Err(io::Error::from_raw_os_error(events[0].data as i32));
    }
    Ok(Waker::with_notifier(kq.notifier(ident)))
}

impl<K: Kevent> KqueuePoller<K> {
    /// Registers the wake-up user event and sizes the changelist for `ops_max` operations
    /// (each changes at most two filters between waits).
    pub(crate) fn new(mut kq: K, ops_max: u32) -> io::Result<KqueuePoller<K>> {
        let waker = register_user_event(&mut kq, WAKE_IDENT)?;
        Ok(KqueuePoller {
            kq,
            changes: Changelist::with_capacity(changes_max(ops_max)),
            events: vec![Event::EMPTY; events_max(ops_max)].into_boxed_slice(),
            waker,
            workers_signal: None,
        })
    }

    /// The kevent layer, for tests that count its calls (over the double, on Linux).
    #[cfg(all(test, target_os = "linux"))]
    pub(crate) fn kq(&self) -> &K {
        &self.kq
    }

    /// Appends a change for the next wait. The changelist is sized so that it cannot fill
    /// within one turn: each operation started registers at most one descriptor.
    fn push_change(&mut self, change: Change) {
        self.changes
            .push(change)
            .expect("changelist sized for a whole turn");
    }
}

fn filter(dir: Dir) -> Filter {
    match dir {
        Dir::Read => Filter::Read,
        Dir::Write => Filter::Write,
    }
}

impl<K: Kevent> Poller for KqueuePoller<K> {
    fn register(
        &mut self,
        fd: RawFd,
        dir: Dir,
        _likely_registered: bool,
        _stats: &mut Stats,
    ) -> io::Result<Dirs> {
        if fd == WAKE_FD {
            // The user event stays registered (EV_CLEAR); nothing to add.
            return Ok(Dirs::NONE.with(dir));
        }
        assert!(fd >= 0);
        let flags = Flags::ADD | Flags::CLEAR;
        self.push_change(Change::new(fd as usize, filter(dir), flags, fd as u64));
        Ok(Dirs::NONE.with(dir))
    }

    fn deregister(&mut self, fd: RawFd, _stats: &mut Stats) {
        if fd == WAKE_FD {
            return;
        }
        assert!(fd >= 0);
        // The close that follows removes the registrations; an `EV_ADD` still in the
        // changelist would reach the kernel after it, for a closed (or reused) number.
        self.changes.retain(|change| change.ident != fd as usize);
    }

    fn has_pending_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ready: &mut Vec<Readiness>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        stats.syscalls += 1;
        let room = self.events.len().min(ready.capacity() - ready.len());
        let n = self
            .kq
            .kevent(self.changes.as_slice(), &mut self.events[..room], timeout)?;
        self.changes.clear();
        for event in &self.events[..n] {
            if event.filter == Filter::User {
                let fd = if event.ident == WORKERS_IDENT {
                    WORKERS_FD
                } else {
                    WAKE_FD
                };
                ready.push(Readiness {
                    fd,
                    dirs: Dirs::NONE.with(Dir::Read),
                    closed: false,
                    error: None,
                });
                continue;
            }
            let dir = if event.filter == Filter::Read {
                Dir::Read
            } else {
                Dir::Write
            };
            let error = if event.flags.contains(Flags::ERROR) {
                let errno = event.data as i32;
                // Named, ignored errors of changes: none the engine sends can fail harmlessly
                // (it sends no EV_DELETE), so every error fails the descriptor's waiters.
                Some(errno)
            } else {
                None
            };
            assert!(ready.len() < ready.capacity(), "ready list never grows");
            // EV_EOF: the peer closed (or, with a nonzero `fflags`, an error is pending);
            // final, and reported in both directions as epoll's hang-up is.
            let closed = event.flags.contains(Flags::EOF);
            let dirs = if closed {
                Dirs::NONE.with(Dir::Read).with(Dir::Write)
            } else {
                Dirs::NONE.with(dir)
            };
            ready.push(Readiness {
                fd: event.udata as RawFd,
                dirs,
                closed,
                error,
            });
        }
        Ok(())
    }

    fn wakeup_fd(&self) -> RawFd {
        WAKE_FD
    }

    fn events_max(&self) -> usize {
        self.events.len()
    }

    fn take_wakeups(&mut self, _stats: &mut Stats) -> io::Result<Option<u64>> {
        let count = self.waker.take_count();
        Ok((count > 0).then_some(count))
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }

    fn workers_signal(&mut self) -> io::Result<Waker> {
        assert!(
            self.workers_signal.is_none(),
            "one workers signal per poller"
        );
        let signal = register_user_event(&mut self.kq, WORKERS_IDENT)?;
        self.workers_signal = Some(signal.clone());
        Ok(signal)
    }

    fn take_workers_signal(&mut self, _stats: &mut Stats) -> io::Result<()> {
        // `EV_CLEAR` reset the event when it was reported; the count beside it means nothing
        // here and is only kept from growing.
        let signal = self.workers_signal.as_ref().expect("a workers signal");
        signal.take_count();
        Ok(())
    }
}
