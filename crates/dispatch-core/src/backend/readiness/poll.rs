//! Polls ([`crate::Io::poll`]) on the readiness engine. A poll's try is a non-blocking
//! `poll(2)` of its descriptor (one syscall, exact, consuming nothing); one that finds
//! nothing waits in its descriptor entry's `polls` list, apart from the per-direction
//! queues of the engine's own operations, and is checked again, with `poll(2)`, at each
//! readiness the poller reports for the descriptor, before those queues run.
//!
//! Why apart, and why `poll(2)` rather than the engine's remembered readiness:
//! - a poll never blocks an operation queued behind it, nor waits behind one (a receive
//!   parked in the read queue must not hold up a poll for writability, or the reverse);
//! - the engine's readiness is "may be ready" (a fresh entry, or an edge not yet tried),
//!   which for its own operations costs at most a try that answers `EAGAIN`; for a poll it
//!   would be a false report. `poll(2)` says what holds now, and changes nothing, so the
//!   engine's readiness is neither read nor written by a poll, and no edge its operations
//!   need is used up;
//! - checked before the queues run, a poll sees the bytes that the receives queued on the
//!   same descriptor take right after.
//!
//! A waiting poll counts as an operation on the descriptor (`FdEntry::live`), so the
//! registration rules (`edge.rs`) hold unchanged: the descriptor is registered once,
//! edge-triggered (kqueue: the filter of each direction the poll asks for, `EVFILT_READ`
//! for a hang-up alone), and forgotten when its last operation is reaped. A multishot poll
//! is re-armed by the loop after each result, for the next turn (level-triggered), and
//! keeps the entry meanwhile, as a multishot receive does.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

use super::table::{Dir, Queue};
use super::{Engine, Place, Poller};
use crate::operation::Args;
use crate::poll::native_result;
use crate::stats::Stats;

/// `poll(2)` of `fd` for `events` with a zero timeout (`EINTR` retried): the result a poll
/// completes with (the events that fired, or `-errno`), or `None` when nothing fired.
pub(super) fn check(fd: RawFd, events: u32, stats: &mut Stats) -> Option<i32> {
    // `poll(2)` skips negative descriptors (it would wait for good): never open, as for
    // every other operation.
    if fd < 0 {
        return Some(-libc::EBADF);
    }
    let mut pollfd = libc::pollfd {
        fd,
        events: events as u16 as i16,
        revents: 0,
    };
    loop {
        stats.syscalls += 1;
        // SAFETY: `pollfd` is one initialised record on the stack and the count says one;
        // the kernel writes only its `revents`, within this call, and a zero timeout never
        // blocks.
        let n = unsafe { libc::poll(&mut pollfd, 1, 0) };
        if n >= 0 {
            break;
        }
        let errno = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return Some(-errno);
        }
    }
    native_result(events, pollfd.revents)
}

/// The directions a poll for `poll(2)` `events` waits on: writing for `POLLOUT`, reading
/// for `POLLIN` and for a hang-up alone (kqueue reports `EV_EOF` on `EVFILT_READ`).
fn poll_dirs(events: u32) -> [Option<Dir>; 2] {
    let write = events & libc::POLLOUT as u32 != 0;
    let read = events & libc::POLLIN as u32 != 0 || !write;
    [read.then_some(Dir::Read), write.then_some(Dir::Write)]
}

impl<P: Poller> Engine<P> {
    /// Starts the poll in slot `idx`: completes it if `poll(2)` finds one of its events, or
    /// parks it on its descriptor's entry, registering the descriptor where needed.
    pub(super) fn start_poll(&mut self, idx: u32, args: &mut [Args], stats: &mut Stats) {
        let i = idx as usize;
        let Args::Poll {
            fd,
            events,
            multishot,
        } = args[i]
        else {
            unreachable!("start_poll of a {}", args[i].label())
        };
        self.per.multishot[i] = multishot;
        if let Some(result) = check(fd, events, stats) {
            return self.complete(idx, result);
        }
        let at = self.fds.find_or_insert(fd);
        self.fds.get(at).live += 1;
        self.per.counted[i] = fd;
        self.per.place[i] = Place::Polling(fd);
        self.fds.get(at).polls.push(&mut self.per.next, idx);
        self.parked += 1;
        for dir in poll_dirs(events).into_iter().flatten() {
            if self.fds.get(at).registered.contains(dir) {
                continue;
            }
            let likely_registered = self.hints.get(fd);
            match self.poller.register(fd, dir, likely_registered, stats) {
                Ok(dirs) => {
                    let entry = self.fds.get(at);
                    entry.registered = entry.registered.union(dirs);
                }
                Err(error) => {
                    return self.fail_waiters(at, error.raw_os_error().unwrap_or(libc::EIO));
                }
            }
        }
    }

    /// Checks every poll waiting on the entry at `at` (the poller reported readiness for its
    /// descriptor): those whose events fired complete, in order; the others wait on.
    pub(super) fn run_polls(&mut self, at: usize, args: &[Args], stats: &mut Stats) {
        let mut polls = std::mem::replace(&mut self.fds.get(at).polls, Queue::EMPTY);
        while let Some(idx) = polls.pop(&mut self.per.next) {
            let Args::Poll { fd, events, .. } = args[idx as usize] else {
                unreachable!("a {} among the polls", args[idx as usize].label())
            };
            assert_eq!(self.per.place[idx as usize], Place::Polling(fd));
            match check(fd, events, stats) {
                Some(result) => {
                    assert!(self.parked > 0);
                    self.parked -= 1;
                    self.complete(idx, result);
                }
                None => self.fds.get(at).polls.push(&mut self.per.next, idx),
            }
        }
    }

    /// Takes the poll in slot `idx` off `fd`'s entry (a cancel); the entry stays until the
    /// poll is reaped, as for any operation.
    pub(super) fn unpark_poll(&mut self, idx: u32, fd: RawFd) {
        let at = self.fds.find(fd).expect("a waiting poll's descriptor");
        let removed = self.fds.get(at).polls.remove(&mut self.per.next, idx);
        assert!(removed, "slot {idx} waits among its descriptor's polls");
        assert!(self.parked > 0);
        self.parked -= 1;
    }

    /// Completes every poll waiting on the entry at `at` with `-errno` (a registration the
    /// kernel refused).
    pub(super) fn fail_polls(&mut self, at: usize, errno: i32) {
        assert!(errno > 0);
        while let Some(idx) = self.fds.get(at).polls.pop(&mut self.per.next) {
            assert!(self.parked > 0);
            self.parked -= 1;
            self.complete(idx, -errno);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::super::epoll::EpollPoller;
    use super::super::kqueue::KqueuePoller;
    use super::super::{Engine, Poller};
    use crate::backend::Wait;
    use crate::operation::{Args, OpId};
    use crate::poll::{native_interest, PollEvents};
    use crate::stats::{BackendKind, Stats};

    /// A receive and a poll for readability parked on one socket; the peer's bytes are one
    /// report, at which the poll is checked first and the receive then takes the bytes:
    /// both complete, in that order. Returns the engine, to look at its poller.
    fn poll_beside_a_receive<P: Poller>(poller: P, kind: BackendKind) -> Engine<P> {
        let mut engine = Engine::new(poller, 4, 0).unwrap();
        let mut stats = Stats::new(kind, None);
        let (local, mut peer) = UnixStream::pair().unwrap();
        let fd = local.as_raw_fd();
        let mut args: Vec<Args> = (0..4).map(|_| Args::Empty).collect();
        args[0] = Args::Recv {
            fd,
            buf: Vec::with_capacity(16),
        };
        args[1] = Args::Poll {
            fd,
            events: native_interest(PollEvents::READABLE),
            multishot: false,
        };
        for idx in 0..2 {
            engine.push(idx, OpId { idx, generation: 1 }.user_data());
        }
        let mut results = Vec::new();
        let mut turn = |engine: &mut Engine<P>, wait: Wait| {
            engine.flush(wait, &mut args, None, &mut stats).unwrap();
            engine.reap(u32::MAX, |user_data, result, _| {
                results.push((OpId::idx_of_user_data(user_data), result));
            });
        };
        turn(&mut engine, Wait::Poll);
        peer.write_all(b"ping").unwrap();
        turn(&mut engine, Wait::Within(5_000_000_000));
        let readable = i32::from(libc::POLLIN);
        assert_eq!(results, [(1, readable), (0, 4)]);
        engine
    }

    #[test]
    fn on_epoll_a_poll_and_a_receive_share_a_report() {
        poll_beside_a_receive(EpollPoller::new(true).unwrap(), BackendKind::Epoll);
    }

    /// On the kevent double, the poll and the receive share the descriptor's one
    /// registration: one change in all.
    #[test]
    fn on_kqueue_a_poll_and_a_receive_share_a_registration() {
        let kq = sys_kqueue::Fake::new(64).unwrap();
        let poller = KqueuePoller::new(kq, 4).unwrap();
        let changes = poller.kq().changes();
        let engine = poll_beside_a_receive(poller, BackendKind::KqueueFake);
        assert_eq!(engine.poller.kq().changes() - changes, 1, "registered once");
    }
}
