//! The kqueue poller, over `sys-kqueue`'s `Kevent` seam: interest changes accumulate in a
//! changelist (`EV_ADD | EV_ONESHOT` per descriptor and filter, `udata` = the descriptor) and
//! go to the kernel with the next wait, in the same `kevent` call. Wake-ups are an
//! `EVFILT_USER` event with `EV_CLEAR`. On FreeBSD and macOS `K` is the real syscall; on
//! Linux the backend runs over the `sys_kqueue::Fake` double.

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

/// The changelist's capacity: each operation started or cancelled in a turn changes at most
/// one filter, and each harvested event re-arms at most two.
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

    /// Appends a change for the next wait. The changelist is sized so that it cannot fill
    /// within one turn: each operation started or cancelled changes at most one filter, and
    /// each harvested event re-arms at most two.
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
    const EVENT_DISARMS_ALL: bool = false;

    fn set_interest(
        &mut self,
        fd: RawFd,
        old: Dirs,
        new: Dirs,
        _stats: &mut Stats,
    ) -> io::Result<()> {
        if fd == WAKE_FD {
            // The user event stays registered (EV_CLEAR); nothing to arm.
            return Ok(());
        }
        assert!(fd >= 0);
        for dir in Dir::BOTH {
            let flags = match (old.contains(dir), new.contains(dir)) {
                (false, true) => Flags::ADD | Flags::ONESHOT,
                (true, false) => Flags::DELETE,
                _ => continue,
            };
            self.push_change(Change::new(fd as usize, filter(dir), flags, fd as u64));
        }
        Ok(())
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
                // Named, ignored errors of changes:
                // - ENOENT from EV_DELETE: the one-shot already fired or the descriptor was
                //   closed, which removes its registrations (mio does the same).
                if errno == libc::ENOENT {
                    continue;
                }
                Some(errno)
            } else {
                None
            };
            assert!(ready.len() < ready.capacity(), "ready list never grows");
            ready.push(Readiness {
                fd: event.udata as RawFd,
                dirs: Dirs::NONE.with(dir),
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
