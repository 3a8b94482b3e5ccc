//! `Io::poll` and `Io::poll_multishot` on the backend the suite runs (`cargo xtask test`
//! reruns it on epoll, kqueue over the double and masked io_uring): readability,
//! writability, hang-up, foreign descriptors, multishot, cancel, deadline, a poll beside a
//! receive on one socket, drop, and a bad descriptor. `poll_alike.rs` runs polls on every
//! backend at once, on the simulator, and counts allocations.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use dispatch_loop::{BufResult, Io, OpId, Options, PollEvents, Shot, Tag};

use crate::check;

/// What the callbacks saw, by tag: the events (or errno) of each completion, and whether
/// more followed.
#[derive(Default)]
pub(crate) struct Log {
    pub(crate) seen: Vec<(Tag, Result<PollEvents, i32>, bool)>,
    pub(crate) received: Vec<u8>,
    /// For the multishot test: the socket its callback drains, the peer that writes again,
    /// the poll's own id, and how many shots to take before cancelling.
    socket: Option<UnixStream>,
    peer: Option<UnixStream>,
    id: Option<OpId>,
    shots_max: usize,
}

pub(crate) fn errno(result: io::Result<PollEvents>) -> Result<PollEvents, i32> {
    result.map_err(|error| error.raw_os_error().expect("an OS error"))
}

pub(crate) fn on_poll(log: &mut Log, _: &mut Io<Log>, tag: Tag, result: io::Result<PollEvents>) {
    log.seen.push((tag, errno(result), false));
}

pub(crate) fn on_shot(log: &mut Log, _: &mut Io<Log>, tag: Tag, shot: Shot<PollEvents>) {
    log.seen.push((tag, errno(shot.result), shot.more));
}

pub(crate) fn on_recv(log: &mut Log, _: &mut Io<Log>, _: Tag, (result, buf): BufResult) {
    assert_eq!(result.expect("recv"), buf.len());
    log.received.extend_from_slice(&buf);
}

fn io() -> Option<Io<Log>> {
    check::io(&Options::new(16))
}

/// Runs `io` until `done` holds, for at most a second (of the loop's clock).
pub(crate) fn run_until(io: &mut Io<Log>, log: &mut Log, done: impl Fn(&Log) -> bool) {
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
