//! Polls beyond the suite's one backend: the same program on every backend (io_uring with
//! and without its extras, epoll, kqueue over the double, the simulator), the simulator's
//! own sockets and listeners, and zero allocations per poll in steady state.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use dispatch_loop::sim::{Sim, SimOptions};
use dispatch_loop::{BufResult, Io, OpId, Options, PollEvents, Shot, Tag};

use crate::check;
use crate::poll::{on_poll, on_recv, on_shot, run_until, Log};

/// The zero-allocation ping-pong of polls: a one-shot poll scheduled again from its callback
/// and a multishot, each woken by a byte the callback reads and writes again.
struct Rounds {
    socket: UnixStream,
    peer: UnixStream,
    rounds: u32,
    rounds_max: u32,
    multishot: Option<OpId>,
}

fn next_round(r: &mut Rounds, events: PollEvents) -> bool {
    assert!(events.is_readable(), "{events:?}");
    let mut byte = [0];
    // Non-blocking: the kernel's multishot may report an arrival already read.
    if r.socket.read(&mut byte).is_ok() {
        r.rounds += 1;
        if r.rounds < r.rounds_max {
            r.peer.write_all(&byte).unwrap();
        }
    }
    r.rounds < r.rounds_max
}

fn on_round(r: &mut Rounds, io: &mut Io<Rounds>, tag: Tag, events: io::Result<PollEvents>) {
    if next_round(r, events.expect("poll")) {
        let fd = r.socket.as_raw_fd();
        io.poll(tag, fd, PollEvents::READABLE, on_round).unwrap();
    }
}

fn on_round_shot(r: &mut Rounds, io: &mut Io<Rounds>, _: Tag, shot: Shot<PollEvents>) {
    if let Some(id) = r.multishot.filter(|_| shot.more) {
        if !next_round(r, shot.result.expect("poll")) {
            io.cancel(0, id, |_, _, _, answer| answer.expect("cancel answers Ok"))
                .unwrap();
        }
    }
}

#[test]
fn ten_thousand_polls_allocate_nothing() {
    let Some(mut io) = check::io::<Rounds>(&Options::new(16)) else {
        return;
    };
    let (socket, peer) = UnixStream::pair().unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut r = Rounds {
        socket,
        peer,
        rounds: 0,
        rounds_max: 100,
        multishot: None,
    };
    crate::alloc::assert_counting();
    for multishot in [false, true] {
        // A warm-up (first registrations, the tables' first use), then the counted rounds.
        for rounds_max in [100, 10_000] {
            (r.rounds, r.rounds_max) = (0, rounds_max);
            let before = crate::alloc::allocations();
            r.peer.write_all(b"p").unwrap();
            let fd = r.socket.as_raw_fd();
            if multishot {
                let id = io.poll_multishot(1, fd, PollEvents::READABLE, on_round_shot);
                r.multishot = Some(id.unwrap());
            } else {
                io.poll(1, fd, PollEvents::READABLE, on_round).unwrap();
            }
            io.run_until_idle(&mut r).unwrap();
            assert_eq!(r.rounds, rounds_max);
            let allocated = crate::alloc::allocations() - before;
            if rounds_max > 100 {
                assert_eq!(allocated, 0, "multishot: {multishot}");
            }
        }
    }
}

/// One program of polls, a send, a receive and a close, on every backend (io_uring with and
/// without its extras, epoll, kqueue over the double, the simulator): the same events, in
/// the same order.
#[test]
fn one_program_sees_the_same_events_on_every_backend() {
    let mut seen = Vec::new();
    for on in crate::alike::backends() {
        let Some(mut rig) = on.rig::<Log>(&Options::new(16)) else {
            continue;
        };
        let (a, b) = rig.pair();
        let (a_fd, b_fd) = (a.as_raw_fd(), b.as_raw_fd());
        let (io, mut log) = (&mut rig.io, Log::default());
        io.poll(1, a_fd, PollEvents::WRITABLE, on_poll).unwrap();
        io.poll(2, b_fd, PollEvents::READABLE, on_poll).unwrap();
        run_until(io, &mut log, |log| !log.seen.is_empty());
        let sent = |_: &mut Log, _: &mut Io<Log>, _, (n, _): BufResult| assert_eq!(n.unwrap(), 5);
        io.send(0, a_fd, b"hello".to_vec(), sent).unwrap();
        run_until(io, &mut log, |log| log.seen.len() == 2);
        io.recv(3, b_fd, Vec::with_capacity(64), on_recv).unwrap();
        run_until(io, &mut log, |log| !log.received.is_empty());
        // Nothing left to read: this one waits for the peer's close.
        io.poll(4, b_fd, PollEvents::READABLE, on_poll).unwrap();
        io.run_for_ns(&mut log, 1_000_000).unwrap();
        io.close(0, a, |_, _, _, closed| closed.expect("close"))
            .unwrap();
        run_until(io, &mut log, |log| log.seen.len() == 3);
        io.close(0, b, |_, _, _, closed| closed.expect("close"))
            .unwrap();
        io.run_until_idle(&mut log).unwrap();
        seen.push((on, (log.seen, log.received)));
    }
    let (_, (first, _)) = &seen[0];
    let hangup = PollEvents::READABLE | PollEvents::HANGUP;
    assert_eq!(first[2], (4, Ok(hangup), false), "{first:?}");
    crate::alike::all_alike(&seen);
}

#[test]
fn on_the_simulator_its_own_sockets_and_listeners() {
    let sim = Sim::new(&SimOptions::new(21)).unwrap();
    let mut io: Io<Log> = Io::new_sim(&Options::new(16), &sim).unwrap();
    let mut log = Log::default();
    let (a, b) = sim.socket_pair().unwrap();
    let listener = sim.listen("10.0.0.1:80".parse().unwrap(), 8).unwrap();
    io.poll(1, a.as_raw_fd(), PollEvents::READABLE, on_poll)
        .unwrap();
    io.poll(2, b.as_raw_fd(), PollEvents::WRITABLE, on_poll)
        .unwrap();
    io.poll(3, listener.as_raw_fd(), PollEvents::READABLE, on_poll)
        .unwrap();
    io.poll(4, -1, PollEvents::READABLE, on_poll).unwrap();
    io.tick(&mut log).unwrap();
    io.tick(&mut log).unwrap();
    log.seen.sort_by_key(|seen| seen.0);
    let expected = [
        (2, Ok(PollEvents::WRITABLE), false),
        (4, Err(libc::EBADF), false),
    ];
    assert_eq!(log.seen, expected);
    log.seen.clear();
    io.send(0, b.as_raw_fd(), b"hi".to_vec(), |_, _, _, (sent, _)| {
        sent.expect("send");
    })
    .unwrap();
    let peer = sim.peer_connect(listener.local_addr());
    run_until(&mut io, &mut log, |log| log.seen.len() == 2);
    log.seen.sort_by_key(|seen| seen.0);
    let expected = [
        (1, Ok(PollEvents::READABLE), false),
        (3, Ok(PollEvents::READABLE), false),
    ];
    assert_eq!(log.seen, expected);
    log.seen.clear();
    // A hang-up: the peer closes its end of the pair.
    io.poll(5, a.as_raw_fd(), PollEvents::NONE, on_poll)
        .unwrap();
    io.close(0, b, |_, _, _, closed| closed.expect("close"))
        .unwrap();
    run_until(&mut io, &mut log, |log| log.seen.len() == 1);
    assert!(log.seen[0].1.expect("poll").is_hangup(), "{:?}", log.seen);
    sim.peer_close(peer);
    drop(a);
    // A poll with nothing coming: its deadline passes in virtual time.
    log.seen.clear();
    let (c, _d) = sim.socket_pair().unwrap();
    let id = io
        .poll(6, c.as_raw_fd(), PollEvents::READABLE, on_poll)
        .unwrap();
    io.set_deadline(id, 5_000_000).unwrap();
    let multishot = io
        .poll_multishot(7, c.as_raw_fd(), PollEvents::READABLE, on_shot)
        .unwrap();
    io.cancel(0, multishot, |_, _, _, answer| {
        answer.expect("cancel answers Ok")
    })
    .unwrap();
    run_until(&mut io, &mut log, |log| log.seen.len() == 2);
    log.seen.sort_by_key(|seen| seen.0);
    let expected = [
        (6, Err(libc::ETIMEDOUT), false),
        (7, Err(libc::ECANCELED), false),
    ];
    assert_eq!(log.seen, expected);
}
