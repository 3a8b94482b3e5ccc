//! Unit tests of the readiness engine over the kevent double and epoll: registration,
//! remembered readiness and the edge-triggered races.

use std::os::fd::{AsRawFd, RawFd};

use super::kqueue::KqueuePoller;
use super::*;
use crate::stats::BackendKind;

/// When the kernel refuses the interest an operation would wait on (here: the kevent
/// double's registration table is full, ENOMEM), the operation fails with that errno
/// instead of waiting forever.
#[test]
fn a_refused_registration_fails_its_waiters() {
    // Room for the wake-up user event only.
    let kq = sys_kqueue::Fake::new(1).unwrap();
    let poller = KqueuePoller::new(kq, 4).unwrap();
    let mut engine = Engine::new(poller, 4, 0).unwrap();
    let mut stats = Stats::new(BackendKind::KqueueFake, None);
    let (_client, server) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut args: Vec<Args> = (0..4).map(|_| Args::Empty).collect();
    args[0] = Args::Recv {
        fd: server.as_raw_fd(),
        buf: Vec::with_capacity(8),
    };
    let user_data = OpId {
        idx: 0,
        generation: 7,
    }
    .user_data();
    engine.push(0, user_data);
    engine
        .flush(Wait::Poll, &mut args, None, &mut stats)
        .unwrap();
    let mut results = Vec::new();
    engine.reap(u32::MAX, |user_data, result, _| {
        results.push((user_data, result))
    });
    assert_eq!(results, vec![(user_data, -libc::ENOMEM)]);
}

/// An engine over a poller, driven by hand: receives on a descriptor, turns, results.
struct Rig<P> {
    engine: Engine<P>,
    args: Vec<Args>,
    stats: Stats,
    generation: u64,
}

impl<P: Poller> Rig<P> {
    fn new(poller: P, kind: BackendKind) -> Rig<P> {
        Rig {
            engine: Engine::new(poller, 4, 0).unwrap(),
            args: (0..4).map(|_| Args::Empty).collect(),
            stats: Stats::new(kind, None),
            generation: 0,
        }
    }

    /// Schedules a receive of up to `capacity` bytes on `fd` in slot `idx`.
    fn recv(&mut self, idx: u32, fd: RawFd, capacity: usize) {
        self.generation += 1;
        self.args[idx as usize] = Args::Recv {
            fd,
            buf: Vec::with_capacity(capacity),
        };
        let id = OpId {
            idx,
            generation: self.generation,
        };
        self.engine.push(idx, id.user_data());
    }

    /// One turn: `Poll`, or a wait bounded by 5 s (a hang guard: the event is there).
    fn turn(&mut self, wait: bool) -> Vec<i32> {
        let wait = if wait {
            Wait::Within(5_000_000_000)
        } else {
            Wait::Poll
        };
        let args = &mut self.args;
        self.engine
            .flush(wait, args, None, &mut self.stats)
            .unwrap();
        let mut results = Vec::new();
        self.engine
            .reap(u32::MAX, |_, result, _| results.push(result));
        results
    }
}

/// Ten messages through one registration, a receive always parked on the socket (as a
/// multishot receive is): each round queues the next receive behind the parked one, and
/// the peer's message is an edge that completes the head. The first receive is tried and
/// parks; the short reads after it say the socket is drained, so no later one is tried in
/// vain. Returns the syscalls of the rounds.
fn ten_rounds<P: Poller>(rig: &mut Rig<P>) -> u64 {
    use std::io::Write;
    let (local, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let before = rig.stats.syscalls;
    rig.recv(0, local.as_raw_fd(), 16);
    assert!(rig.turn(false).is_empty(), "nothing to read yet");
    for round in 0..10 {
        rig.recv((round + 1) % 2, local.as_raw_fd(), 16);
        peer.write_all(b"ping").unwrap();
        assert_eq!(rig.turn(true), vec![4], "round {round}");
    }
    rig.stats.syscalls - before
}

/// On the kevent double: the descriptor is registered once (one change: `EVFILT_READ` with
/// `EV_CLEAR`; the write filter only when a send would wait), and each turn is one `kevent`
/// call, the change riding in it: the syscall structure of the kqueue backend.
#[test]
fn kqueue_registers_once_and_pays_one_kevent_per_turn() {
    let kq = sys_kqueue::Fake::new(64).unwrap();
    let mut rig = Rig::new(KqueuePoller::new(kq, 4).unwrap(), BackendKind::KqueueFake);
    let kq = rig.engine.poller.kq();
    let (calls, changes) = (kq.calls(), kq.changes());
    let syscalls = ten_rounds(&mut rig);
    let kq = rig.engine.poller.kq();
    assert_eq!(kq.calls() - calls, 11, "one kevent a turn");
    assert_eq!(kq.changes() - changes, 1, "registered once");
    // The receives (the first one's failed try, then one per message), the kevents, and
    // the one `getsockopt(SO_TYPE)` the first short read asks (stream or not).
    assert_eq!(syscalls, 11 + 11 + 1);
}

/// On epoll, the same rounds cost one `epoll_ctl` in all (the registration), then per
/// message its receive and the wait: two syscalls, where one-shot interest cost three.
#[test]
fn epoll_registers_once_and_pays_a_receive_and_a_wait_per_message() {
    let poller = super::epoll::EpollPoller::new(true).unwrap();
    let mut rig = Rig::new(poller, BackendKind::Epoll);
    let syscalls = ten_rounds(&mut rig);
    // The first receive's try, its registration, the first poll, the one `SO_TYPE` query;
    // then two a round.
    assert_eq!(syscalls, 4 + 10 * 2);
}
