//! `Io::poll` and `Io::poll_multishot` on the backend the suite runs (`cargo xtask test`
//! reruns it on epoll, kqueue over the double and masked io_uring), and on the simulator for
//! its own sockets: readability, writability, hang-up, foreign descriptors, multishot,
//! cancel, deadline, a poll beside a receive on one socket, drop, and a bad descriptor.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use dispatch_loop::sim::{Sim, SimOptions};
use dispatch_loop::{BufResult, Io, OpId, Options, PollEvents, Shot, Tag};

use crate::check;

/// What the callbacks saw, by tag: the events (or errno) of each completion, and whether
/// more followed.
#[derive(Default)]
struct Log {
    seen: Vec<(Tag, Result<PollEvents, i32>, bool)>,
    received: Vec<u8>,
    /// For the multishot test: the socket its callback drains, the peer that writes again,
    /// the poll's own id, and how many shots to take before cancelling.
    socket: Option<UnixStream>,
    peer: Option<UnixStream>,
    id: Option<OpId>,
    shots_max: usize,
}

fn errno(result: io::Result<PollEvents>) -> Result<PollEvents, i32> {
    result.map_err(|error| error.raw_os_error().expect("an OS error"))
}

fn on_poll(log: &mut Log, _: &mut Io<Log>, tag: Tag, result: io::Result<PollEvents>) {
    log.seen.push((tag, errno(result), false));
}

fn on_shot(log: &mut Log, _: &mut Io<Log>, tag: Tag, shot: Shot<PollEvents>) {
    log.seen.push((tag, errno(shot.result), shot.more));
}

fn on_recv(log: &mut Log, _: &mut Io<Log>, _: Tag, (result, buf): BufResult) {
    assert_eq!(result.expect("recv"), buf.len());
    log.received.extend_from_slice(&buf);
}

fn io() -> Option<Io<Log>> {
    check::io(&Options::new(16))
}

/// Runs `io` until `done` holds, for at most a second (of the loop's clock).
fn run_until(io: &mut Io<Log>, log: &mut Log, done: impl Fn(&Log) -> bool) {
    for _ in 0..100 {
        if done(log) {
            return;
        }
        io.run_for_ns(log, 10_000_000).unwrap();
    }
    assert!(done(log), "timed out; saw {:?}", log.seen);
}

#[test]
fn a_pipe_becomes_readable() {
    let Some(mut io) = io() else { return };
    let (reader, mut writer) = io::pipe().unwrap();
    let mut log = Log::default();
    io.poll(1, reader.as_raw_fd(), PollEvents::READABLE, on_poll)
        .unwrap();
    io.run_for_ns(&mut log, 2_000_000).unwrap();
    assert!(log.seen.is_empty(), "nothing to read yet: {:?}", log.seen);
    writer.write_all(b"x").unwrap();
    run_until(&mut io, &mut log, |log| !log.seen.is_empty());
    assert_eq!(log.seen, [(1, Ok(PollEvents::READABLE), false)]);
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn a_socket_is_writable_at_once_and_reports_both_directions() {
    let Some(mut io) = io() else { return };
    let (socket, mut peer) = UnixStream::pair().unwrap();
    peer.write_all(b"hi").unwrap();
    let mut log = Log::default();
    let fd = socket.as_raw_fd();
    io.poll(1, fd, PollEvents::WRITABLE, on_poll).unwrap();
    io.poll(2, fd, PollEvents::READABLE | PollEvents::WRITABLE, on_poll)
        .unwrap();
    run_until(&mut io, &mut log, |log| log.seen.len() == 2);
    log.seen.sort_by_key(|seen| seen.0);
    let both = PollEvents::READABLE | PollEvents::WRITABLE;
    assert_eq!(log.seen[0], (1, Ok(PollEvents::WRITABLE), false));
    assert_eq!(log.seen[1], (2, Ok(both), false));
}

#[test]
fn a_hang_up_is_reported_whatever_the_interest() {
    let Some(mut io) = io() else { return };
    let (socket, peer) = UnixStream::pair().unwrap();
    let (client, server) = check::tcp_pair();
    let mut log = Log::default();
    io.poll(1, socket.as_raw_fd(), PollEvents::READABLE, on_poll)
        .unwrap();
    io.poll(2, check::fd(&server), PollEvents::NONE, on_poll)
        .unwrap();
    io.run_for_ns(&mut log, 1_000_000).unwrap();
    assert!(log.seen.is_empty(), "{:?}", log.seen);
    drop(peer);
    drop(client);
    run_until(&mut io, &mut log, |log| log.seen.len() == 2);
    log.seen.sort_by_key(|seen| seen.0);
    let events = log.seen[0].1.expect("poll");
    assert!(events.is_hangup() && events.is_readable(), "{events:?}");
    // A TCP peer's close is a hang-up through `POLLRDHUP` on Linux; elsewhere only a full
    // hang-up is, which a peer's FIN alone is not.
    let events = log.seen[1].1.expect("poll");
    if cfg!(target_os = "linux") {
        assert_eq!(
            events,
            PollEvents::HANGUP,
            "a NONE interest hears the hang-up"
        );
    }
}

#[test]
fn a_foreign_descriptor_eventfd_and_timerfd_or_a_pipe() {
    let Some(mut io) = io() else { return };
    let mut log = Log::default();
    #[cfg(target_os = "linux")]
    {
        use rustix::event::{eventfd, EventfdFlags};
        use rustix::time::{
            timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
            TimerfdTimerFlags, Timespec,
        };
        let event = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap();
        let timer = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC).unwrap();
        io.poll(1, event.as_raw_fd(), PollEvents::READABLE, on_poll)
            .unwrap();
        io.poll(2, timer.as_raw_fd(), PollEvents::READABLE, on_poll)
            .unwrap();
        io.run_for_ns(&mut log, 1_000_000).unwrap();
        assert!(log.seen.is_empty(), "{:?}", log.seen);
        rustix::io::write(&event, &1_u64.to_ne_bytes()).unwrap();
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let value = Timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: value,
        };
        timerfd_settime(&timer, TimerfdTimerFlags::empty(), &spec).unwrap();
        run_until(&mut io, &mut log, |log| log.seen.len() == 2);
        log.seen.sort_by_key(|seen| seen.0);
        assert_eq!(log.seen[0], (1, Ok(PollEvents::READABLE), false));
        assert_eq!(log.seen[1], (2, Ok(PollEvents::READABLE), false));
        log.seen.clear();
    }
    let (reader, writer) = io::pipe().unwrap();
    io.poll(3, writer.as_raw_fd(), PollEvents::WRITABLE, on_poll)
        .unwrap();
    io.poll(4, reader.as_raw_fd(), PollEvents::READABLE, on_poll)
        .unwrap();
    // Both polls reach the backend before the writer closes.
    io.tick(&mut log).unwrap();
    drop(writer);
    // The write end was writable when polled; the read end sees the writer hang up.
    run_until(&mut io, &mut log, |log| log.seen.len() == 2);
    log.seen.sort_by_key(|seen| seen.0);
    assert_eq!(log.seen[0], (3, Ok(PollEvents::WRITABLE), false));
    assert!(log.seen[1].1.expect("poll").is_hangup(), "{:?}", log.seen);
}

/// Drains the socket, then has the peer write again until `shots_max` shots came, then
/// cancels the poll.
fn on_drain_shot(log: &mut Log, io: &mut Io<Log>, tag: Tag, shot: Shot<PollEvents>) {
    let more = shot.more;
    on_shot(log, io, tag, shot);
    if !more {
        return;
    }
    let mut buf = [0; 64];
    let socket = log.socket.as_mut().expect("the socket");
    while let Ok(n) = socket.read(&mut buf) {
        log.received.extend_from_slice(&buf[..n]);
    }
    let shots = log.seen.iter().filter(|seen| seen.2).count();
    if shots < log.shots_max {
        log.peer
            .as_mut()
            .expect("the peer")
            .write_all(b"m")
            .unwrap();
    } else if shots == log.shots_max {
        let id = log.id.expect("the poll's id");
        io.cancel(9, id, |_, _, _, answer| answer.expect("cancel answers Ok"))
            .unwrap();
    }
}

fn multishot_until_cancelled(io: &mut Io<Log>, socket: UnixStream, mut peer: UnixStream) {
    socket.set_nonblocking(true).unwrap();
    peer.write_all(b"m").unwrap();
    let fd = socket.as_raw_fd();
    let mut log = Log {
        socket: Some(socket),
        peer: Some(peer),
        shots_max: 3,
        ..Log::default()
    };
    let submitted = io.stats().ops_submitted;
    let id = io
        .poll_multishot(1, fd, PollEvents::READABLE, on_drain_shot)
        .unwrap();
    log.id = Some(id);
    run_until(io, &mut log, |log| log.seen.iter().any(|seen| !seen.2));
    // The kernel's multishot is one submission, and the cancel another; the loop's re-arm is
    // one per shot but the last, whose re-arm the cancel takes back before it goes out (and
    // answers at once, submitting nothing).
    let kernel = io.stats().uring.is_some_and(|uring| uring.multishot);
    let submissions = io.stats().ops_submitted - submitted;
    let expected = if kernel { 2 } else { 3 };
    assert_eq!(submissions, expected, "kernel multishot: {kernel}");
    let readable = Ok(PollEvents::READABLE);
    let canceled = Err(libc::ECANCELED);
    let expected = [
        (1, readable, true),
        (1, readable, true),
        (1, readable, true),
        (1, canceled, false),
    ];
    assert_eq!(log.seen, expected);
    assert_eq!(log.received, b"mmm");
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn a_multishot_poll_fires_for_each_arrival_until_cancelled() {
    let Some(mut io) = io() else { return };
    let (socket, peer) = UnixStream::pair().unwrap();
    multishot_until_cancelled(&mut io, socket, peer);
}

/// Cancels the poll once it reports a hang-up, which does not end a multishot by itself.
fn on_hangup_shot(log: &mut Log, io: &mut Io<Log>, tag: Tag, shot: Shot<PollEvents>) {
    let hangup = shot.result.as_ref().is_ok_and(|events| events.is_hangup());
    let more = shot.more;
    on_shot(log, io, tag, shot);
    if more && hangup && log.seen.iter().filter(|seen| seen.2).count() == 1 {
        let id = log.id.expect("the poll's id");
        io.cancel(9, id, |_, _, _, answer| answer.expect("cancel answers Ok"))
            .unwrap();
    }
}

#[test]
fn a_multishot_poll_reports_a_hang_up_until_cancelled() {
    let Some(mut io) = io() else { return };
    let (socket, peer) = UnixStream::pair().unwrap();
    let mut log = Log::default();
    let fd = socket.as_raw_fd();
    log.id = Some(
        io.poll_multishot(1, fd, PollEvents::NONE, on_hangup_shot)
            .unwrap(),
    );
    io.run_for_ns(&mut log, 1_000_000).unwrap();
    assert!(log.seen.is_empty(), "{:?}", log.seen);
    drop(peer);
    run_until(&mut io, &mut log, |log| log.seen.iter().any(|seen| !seen.2));
    let (last, shots) = log.seen.split_last().unwrap();
    assert_eq!(*last, (1, Err(libc::ECANCELED), false));
    assert_eq!(shots.len(), 1, "cancelled from the first: {shots:?}");
    assert!(shots[0].1.expect("poll").is_hangup(), "{shots:?}");
}

#[test]
fn a_regular_file_is_always_ready() {
    let Some(mut io) = io() else { return };
    let path = check::temp_path("poll-regular-file");
    let file = std::fs::File::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut log = Log::default();
    let both = PollEvents::READABLE | PollEvents::WRITABLE;
    io.poll(1, file.as_raw_fd(), both, on_poll).unwrap();
    run_until(&mut io, &mut log, |log| !log.seen.is_empty());
    assert_eq!(log.seen, [(1, Ok(both), false)]);
}

#[test]
fn a_pending_poll_is_cancelled_or_times_out() {
    let Some(mut io) = io() else { return };
    let (reader, _writer) = io::pipe().unwrap();
    let mut log = Log::default();
    let fd = reader.as_raw_fd();
    let one = io.poll(1, fd, PollEvents::READABLE, on_poll).unwrap();
    let two = io.poll(2, fd, PollEvents::READABLE, on_poll).unwrap();
    let three = io
        .poll_multishot(3, fd, PollEvents::READABLE, on_shot)
        .unwrap();
    io.run_for_ns(&mut log, 1_000_000).unwrap();
    io.cancel(0, one, |_, _, _, answer| answer.expect("cancel answers Ok"))
        .unwrap();
    io.set_deadline(two, 1_000_000).unwrap();
    io.set_deadline(three, 2_000_000).unwrap();
    run_until(&mut io, &mut log, |log| log.seen.len() == 3);
    log.seen.sort_by_key(|seen| seen.0);
    assert_eq!(log.seen[0], (1, Err(libc::ECANCELED), false));
    assert_eq!(log.seen[1], (2, Err(libc::ETIMEDOUT), false));
    assert_eq!(log.seen[2], (3, Err(libc::ETIMEDOUT), false));
    assert_eq!(io.in_flight(), 0);
}

fn poll_beside_a_recv(poll_first: bool) {
    let Some(mut io) = io() else { return };
    let (socket, mut peer) = UnixStream::pair().unwrap();
    let fd = socket.as_raw_fd();
    let mut log = Log::default();
    let poll = |io: &mut Io<Log>| {
        io.poll(1, fd, PollEvents::READABLE, on_poll).unwrap();
    };
    if poll_first {
        poll(&mut io);
    }
    io.recv(2, fd, Vec::with_capacity(4), on_recv).unwrap();
    if !poll_first {
        poll(&mut io);
    }
    io.run_for_ns(&mut log, 1_000_000).unwrap();
    assert!(log.seen.is_empty() && log.received.is_empty());
    // More than the receive takes, so the socket stays readable after it on every backend
    // (io_uring's kernel may wake the receive before the poll: see `Io::poll`).
    peer.write_all(b"12345678").unwrap();
    run_until(&mut io, &mut log, |log| {
        !log.seen.is_empty() && !log.received.is_empty()
    });
    assert_eq!(log.seen, [(1, Ok(PollEvents::READABLE), false)]);
    assert_eq!(log.received, b"1234");
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn a_poll_and_a_recv_on_one_socket_both_complete() {
    poll_beside_a_recv(true);
    poll_beside_a_recv(false);
}

/// On epoll and kqueue a waiting poll is checked before an operation on its descriptor is
/// tried: a receive that drains the socket leaves the poll its readiness. (io_uring's kernel
/// orders the two itself; see `Io::poll`.)
#[test]
fn on_readiness_backends_a_waiting_poll_looks_before_a_receive_drains() {
    let Some(mut io) = io() else { return };
    if check::on_io_uring(&io) {
        eprintln!("skipped: io_uring's kernel orders a poll and a receive itself");
        return;
    }
    let (socket, mut peer) = UnixStream::pair().unwrap();
    let fd = socket.as_raw_fd();
    let mut log = Log::default();
    io.poll(1, fd, PollEvents::READABLE, on_poll).unwrap();
    io.run_for_ns(&mut log, 1_000_000).unwrap();
    peer.write_all(b"1234").unwrap();
    // Scheduled after the bytes came, before any wait reported them: the receive takes
    // them all in its first try.
    io.recv(2, fd, Vec::with_capacity(64), on_recv).unwrap();
    run_until(&mut io, &mut log, |log| {
        !log.seen.is_empty() && !log.received.is_empty()
    });
    assert_eq!(log.seen, [(1, Ok(PollEvents::READABLE), false)]);
    assert_eq!(log.received, b"1234");
}

#[test]
fn dropping_the_loop_with_polls_in_flight() {
    fn never(_: &mut Log, _: &mut Io<Log>, _: Tag, _: io::Result<PollEvents>) {
        panic!("no callback runs on drop");
    }
    fn never_shot(_: &mut Log, _: &mut Io<Log>, _: Tag, _: Shot<PollEvents>) {
        panic!("no callback runs on drop");
    }
    let Some(mut io) = io() else { return };
    let (reader, _writer) = io::pipe().unwrap();
    let (socket, _peer) = UnixStream::pair().unwrap();
    io.poll(1, reader.as_raw_fd(), PollEvents::READABLE, never)
        .unwrap();
    io.poll_multishot(2, socket.as_raw_fd(), PollEvents::READABLE, never_shot)
        .unwrap();
    // Submitted and not yet: both kinds of in flight.
    io.run_for_ns(&mut Log::default(), 1_000_000).unwrap();
    io.poll(3, reader.as_raw_fd(), PollEvents::NONE, never)
        .unwrap();
    assert_eq!(io.in_flight(), 3);
    drop(io);
}

/// A multishot poll's result left undelivered (a callback before it in the batch panicked)
/// is dropped with the loop as the events it is, never as a descriptor to close: its
/// `POLLIN` (1) once closed standard output.
#[test]
fn dropping_the_loop_with_a_poll_result_undelivered() {
    fn panics(_: &mut Log, _: &mut Io<Log>, _: Tag, _: io::Result<()>) {
        panic!("planted");
    }
    let Some(mut io) = io() else { return };
    let (socket, mut peer) = UnixStream::pair().unwrap();
    peer.write_all(b"x").unwrap();
    io.nop(1, panics).unwrap();
    io.poll_multishot(2, socket.as_raw_fd(), PollEvents::READABLE, on_shot)
        .unwrap();
    let mut log = Log::default();
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..10 {
            io.run_for_ns(&mut log, 1_000_000).unwrap();
        }
    }));
    assert!(ran.is_err(), "the nop's callback panics");
    assert!(log.seen.is_empty(), "{:?}", log.seen);
    drop(io);
    let stdout = std::io::stdout();
    assert!(rustix::io::fcntl_getfd(&stdout).is_ok(), "stdout is open");
    assert!(
        rustix::io::fcntl_getfd(&socket).is_ok(),
        "the socket is open"
    );
}

#[test]
fn a_bad_descriptor_is_ebadf() {
    let Some(mut io) = io() else { return };
    let mut log = Log::default();
    // Far above any descriptor limit this suite runs under: never open.
    let closed: RawFd = 1 << 20;
    io.poll(1, -1, PollEvents::READABLE, on_poll).unwrap();
    io.poll(2, closed, PollEvents::WRITABLE, on_poll).unwrap();
    io.poll_multishot(3, closed, PollEvents::READABLE, on_shot)
        .unwrap();
    run_until(&mut io, &mut log, |log| log.seen.len() == 3);
    log.seen.sort_by_key(|seen| seen.0);
    for (tag, seen) in (1..).zip(&log.seen) {
        assert_eq!(*seen, (tag, Err(libc::EBADF), false));
    }
}

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
