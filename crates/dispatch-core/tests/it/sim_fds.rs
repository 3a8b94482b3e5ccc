//! Descriptors passed over the simulator's Unix pairs: a simulated socket passed names the
//! same simulated object at both ends and stays open until every copy is closed; a real
//! descriptor passed is a real duplicate; and none leaks whichever way its message ends (a
//! control buffer too small, a plain receive, the receiving socket closed, a cancelled
//! receive, the loop dropped with the message undelivered, a crash). Also: a Unix stream
//! pair takes the world's stream operations (pooled and multishot receives, shutdown,
//! polls), and the network's reset fault never fires on it.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use dispatch_loop::sim::{Faults, Sim, SimOptions, UnixKind};
use dispatch_loop::{Io, Msg, Options, PollEvents, PoolOptions, Shot, Tag};

use crate::sim_unix::{close, on_buf, on_msg, on_unit, recv, send, settle, Log};

fn world(seed: u64) -> (Sim, Io<Log>) {
    let sim = Sim::new(&SimOptions::new(seed)).unwrap();
    let mut options = Options::new(16);
    options.pool = PoolOptions::new(4, 64);
    let io = Io::new_sim(&options, &sim).unwrap();
    (sim, io)
}

fn with_fds(bytes: &[u8], fds: Vec<OwnedFd>) -> Msg {
    let mut msg = Msg::new(bytes.to_vec()).with_fds(fds.len());
    msg.fds_mut().extend(fds);
    msg
}

/// Sends `msg` on `fd`, then closes, through the loop, the descriptors it passed (the
/// sender's own, which come back in the message): the send's result.
fn send_closing(io: &mut Io<Log>, log: &mut Log, fd: i32, msg: Msg) -> Result<usize, i32> {
    io.sendmsg(93, fd, msg, on_msg).unwrap();
    settle(io, log);
    let mut ended = log.take(93);
    let msg = ended.msg.as_mut().expect("a message");
    for fd in std::mem::take(msg.fds_mut()) {
        close(io, log, fd);
    }
    ended.result
}

/// Whether `fd`'s peer has closed for good: a receive on it ends the stream (0) now.
fn sees_end(io: &mut Io<Log>, log: &mut Log, fd: &OwnedFd) -> bool {
    recv(io, log, fd.as_raw_fd(), 8, 0).result == Ok(0)
}

#[test]
fn a_passed_simulated_socket_stays_open_until_every_copy_is_closed() {
    for kind in [UnixKind::Datagram, UnixKind::Stream] {
        let (sim, mut io) = world(1);
        let mut log = Log::default();
        let (a, b) = sim.unix_pair(kind).unwrap();
        let (x, y) = sim.socket_pair().unwrap();
        let x_copy = io.sendmsg(1, a.as_raw_fd(), with_fds(b"x", vec![x]), on_msg);
        x_copy.unwrap();
        settle(&mut io, &mut log);
        let mut sent = log.take(1).msg.unwrap();
        assert_eq!(sent.fds().len(), 1, "the sender keeps its descriptor");
        let mut got = recv(&mut io, &mut log, b.as_raw_fd(), 8, 1);
        assert_eq!(got.result, Ok(1));
        let x2 = got
            .msg
            .as_mut()
            .unwrap()
            .fds_mut()
            .pop()
            .expect("one passed");
        assert_eq!(sim.open_descriptors(), 5, "a, b, x, y and x's copy");
        close(&mut io, &mut log, sent.fds_mut().pop().unwrap());
        assert!(
            !sees_end(&mut io, &mut log, &y),
            "{kind:?}: the copy holds x open"
        );
        io.send(2, x2.as_raw_fd(), b"hi".to_vec(), on_buf).unwrap();
        settle(&mut io, &mut log);
        assert_eq!(log.take(2).result, Ok(2));
        let heard = recv(&mut io, &mut log, y.as_raw_fd(), 8, 0);
        assert_eq!(heard.msg.unwrap().bufs()[0], b"hi");
        close(&mut io, &mut log, x2);
        assert!(
            sees_end(&mut io, &mut log, &y),
            "{kind:?}: the last copy closed x"
        );
        for fd in [a, b, y] {
            close(&mut io, &mut log, fd);
        }
        assert_eq!(sim.open_descriptors(), 0);
    }
}

#[test]
fn a_passed_real_descriptor_is_a_working_duplicate() {
    let (sim, mut io) = world(2);
    let mut log = Log::default();
    let (a, b) = sim.unix_pair(UnixKind::Stream).unwrap();
    let (r, w) = std::io::pipe().unwrap();
    let sent = send(
        &mut io,
        &mut log,
        a.as_raw_fd(),
        with_fds(b"w", vec![w.into()]),
    );
    assert_eq!(sent, Ok(1));
    let mut got = recv(&mut io, &mut log, b.as_raw_fd(), 8, 1);
    let w2 = got
        .msg
        .as_mut()
        .unwrap()
        .fds_mut()
        .pop()
        .expect("the pipe's end");
    let mut w2 = std::fs::File::from(w2);
    w2.write_all(b"through the pipe").unwrap();
    drop(w2);
    let mut read = String::new();
    let mut r = r;
    r.read_to_string(&mut read).unwrap();
    assert_eq!(
        read, "through the pipe",
        "every write end closed: the sender's too"
    );
    close(&mut io, &mut log, a);
    close(&mut io, &mut log, b);
    assert_eq!(sim.open_descriptors(), 0);
}

/// What a test does with the pair `a`, `b` a message with a descriptor was sent over: the
/// descriptors it leaves to close.
type End = fn(&Sim, &mut Io<Log>, &mut Log, OwnedFd, OwnedFd) -> Vec<OwnedFd>;

/// Passes `x` (whose peer is `y`) over a fresh pair of `kind`, the sender's descriptor
/// closed after the send: what `end` does with the message must close x's last copy, which
/// `y` then sees as the end of its stream, on a new loop (`end` may leave its loop broken).
fn check_closed(kind: UnixKind, end: End) {
    let (sim, mut io) = world(3);
    let mut log = Log::default();
    let (a, b) = sim.unix_pair(kind).unwrap();
    let (x, y) = sim.socket_pair().unwrap();
    io.sendmsg(1, a.as_raw_fd(), with_fds(b"xy", vec![x]), on_msg)
        .unwrap();
    settle(&mut io, &mut log);
    let mut sent = log.take(1).msg.unwrap();
    close(&mut io, &mut log, sent.fds_mut().pop().unwrap());
    assert!(!sees_end(&mut io, &mut log, &y), "x in flight is open");
    let left = end(&sim, &mut io, &mut log, a, b);
    drop(io);
    let mut io = Io::new_sim(&Options::new(8), &sim).unwrap();
    assert!(
        sees_end(&mut io, &mut log, &y),
        "{kind:?}: x's last copy closed"
    );
    for fd in left.into_iter().chain([y]) {
        close(&mut io, &mut log, fd);
    }
    assert_eq!(sim.open_descriptors(), 0, "{kind:?}: nothing leaks");
}

#[test]
fn a_control_buffer_too_small_closes_what_was_passed() {
    for kind in [UnixKind::Datagram, UnixKind::Stream] {
        check_closed(kind, |_, io, log, a, b| {
            let got = recv(io, log, b.as_raw_fd(), 8, 0);
            let msg = got.msg.unwrap();
            assert!(msg.control_truncated() && msg.fds().is_empty());
            vec![a, b]
        });
    }
}

#[test]
fn closing_the_receiver_with_the_message_unread_closes_what_was_passed() {
    for kind in [UnixKind::Datagram, UnixKind::Stream] {
        check_closed(kind, |_, io, log, a, b| {
            close(io, log, b);
            vec![a]
        });
    }
}

#[test]
fn a_plain_receive_of_the_bytes_closes_what_came_with_them() {
    check_closed(UnixKind::Stream, |_, io, log, a, b| {
        io.recv(2, b.as_raw_fd(), Vec::with_capacity(1), on_buf)
            .unwrap();
        io.run_until_idle(log).unwrap();
        assert_eq!(log.take(2).buf, b"x");
        // The next receive, of the byte after, finds the descriptor's first byte taken.
        let got = recv(io, log, b.as_raw_fd(), 8, 4);
        assert_eq!((got.result, got.msg.unwrap().fds().len()), (Ok(1), 0));
        vec![a, b]
    });
}

#[test]
fn a_cancelled_receive_leaves_the_message_for_the_next() {
    check_closed(UnixKind::Datagram, |_, io, log, a, b| {
        // Take the message out of the way first: a receive that waits, cancelled.
        let got = recv(io, log, b.as_raw_fd(), 8, 1);
        let mut msg = got.msg.unwrap();
        let passed = msg.fds_mut().pop().expect("x's copy");
        let op = io.recvmsg(3, b.as_raw_fd(), Msg::new(Vec::with_capacity(8)), on_msg);
        let op = op.unwrap();
        io.cancel(4, op, on_unit).unwrap();
        io.run_until_idle(log).unwrap();
        assert_eq!(log.take(3).result, Err(libc::ECANCELED));
        assert!(log.has(4));
        // Passed again, received by the next receive, closed.
        let sent = send_closing(io, log, a.as_raw_fd(), with_fds(b"again", vec![passed]));
        assert_eq!(sent, Ok(5));
        let mut got = recv(io, log, b.as_raw_fd(), 8, 1);
        let copy = got
            .msg
            .as_mut()
            .unwrap()
            .fds_mut()
            .pop()
            .expect("passed again");
        close(io, log, copy);
        vec![a, b]
    });
}

#[test]
fn dropping_the_loop_with_a_message_undelivered_closes_what_it_brought() {
    fn panics(_: &mut Log, _: &mut Io<Log>, _: Tag, _: io::Result<()>) {
        panic!("planted");
    }
    check_closed(UnixKind::Datagram, |_, io, log, a, b| {
        io.nop(1, panics).unwrap();
        io.recvmsg(
            2,
            b.as_raw_fd(),
            Msg::new(Vec::with_capacity(8)).with_fds(1),
            on_msg,
        )
        .unwrap();
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            io.run_for_ns(log, 1_000_000)
        }));
        assert!(ran.is_err(), "the nop's callback panics");
        assert!(!log.has(2), "the receive's result is undelivered");
        // `check_closed` drops this loop before it looks.
        vec![a, b]
    });
}

#[test]
fn a_crash_kills_what_is_in_flight_and_leaks_nothing() {
    for kind in [UnixKind::Datagram, UnixKind::Stream] {
        let (sim, mut io) = world(5);
        let mut log = Log::default();
        let (a, b) = sim.unix_pair(kind).unwrap();
        let (x, y) = sim.socket_pair().unwrap();
        let sent = send_closing(&mut io, &mut log, a.as_raw_fd(), with_fds(b"x", vec![x]));
        assert_eq!(sent, Ok(1));
        sim.crash();
        drop(io);
        let mut io = Io::new_sim(&Options::new(8), &sim).unwrap();
        let got = recv(&mut io, &mut log, b.as_raw_fd(), 8, 1);
        assert_eq!(
            got.result,
            Err(libc::EIO),
            "{kind:?}: every descriptor died"
        );
        for fd in [a, b, y] {
            close(&mut io, &mut log, fd);
        }
        assert_eq!(sim.open_descriptors(), 0, "{kind:?}");
    }
}

fn on_shot(log: &mut Log, io: &mut Io<Log>, tag: Tag, shot: Shot<dispatch_loop::PoolBuf>) {
    let buf = shot.result.as_ref().map_or(Vec::new(), |buf| buf.to_vec());
    let result = shot.result.map(|buf| buf.len());
    on_buf(log, io, tag, (result, buf));
}

#[test]
fn a_unix_stream_takes_the_stream_operations_and_is_never_reset() {
    let mut options = SimOptions::new(4);
    options.faults = Faults::NONE;
    options.faults.reset = 1_000_000;
    let sim = Sim::new(&options).unwrap();
    let mut loop_options = Options::new(16);
    loop_options.pool = PoolOptions::new(4, 64);
    let mut io: Io<Log> = Io::new_sim(&loop_options, &sim).unwrap();
    let mut log = Log::default();
    let (a, b) = sim.unix_pair(UnixKind::Stream).unwrap();
    io.poll(
        1,
        b.as_raw_fd(),
        PollEvents::READABLE,
        |log, io, tag, events| {
            on_unit(
                log,
                io,
                tag,
                events.map(|events| assert!(events.is_readable())),
            );
        },
    )
    .unwrap();
    io.recv_multishot(2, b.as_raw_fd(), on_shot).unwrap();
    // Every send would reset a TCP-like stream under this fault; a Unix one never is.
    for (tag, bytes) in [(3, &b"one"[..]), (4, b"two")] {
        io.send(tag, a.as_raw_fd(), bytes.to_vec(), on_buf).unwrap();
        // Not `settle`: the multishot receive waits on, which `run_until_idle` would call
        // a deadlock.
        io.run_for_ns(&mut log, 10_000_000).unwrap();
        assert_eq!(log.take(tag).result, Ok(bytes.len()));
        assert_eq!(log.take(2).buf, bytes, "a multishot receive's callback");
    }
    assert_eq!(log.take(1).result, Ok(0), "the poll saw it readable");
    assert_eq!(sim.stats().faults.reset, 0);
    io.shutdown(5, a.as_raw_fd(), std::net::Shutdown::Write, on_unit)
        .unwrap();
    io.run_until_idle(&mut log).unwrap();
    assert_eq!(log.take(5).result, Ok(0));
    assert_eq!(
        log.take(2).result,
        Ok(0),
        "the multishot ends with the stream"
    );
    io.recv_pooled(6, a.as_raw_fd(), on_shot).unwrap();
    io.send(7, b.as_raw_fd(), b"back".to_vec(), on_buf).unwrap();
    io.run_until_idle(&mut log).unwrap();
    assert_eq!(log.take(6).buf, b"back", "a pooled receive");
    assert_eq!(log.take(7).result, Ok(4));
    close(&mut io, &mut log, a);
    close(&mut io, &mut log, b);
    assert_eq!((io.in_flight(), io.pool_buffers_lent()), (0, 0));
    assert_eq!(sim.open_descriptors(), 0);
}

/// Passing descriptors under every fault, twice with one seed: one trace.
#[test]
fn passing_is_deterministic_per_seed() {
    let run = |seed| {
        let mut options = SimOptions::new(seed);
        options.faults = Faults::standard();
        options.faults.reset = 0;
        let sim = Sim::new(&options).unwrap();
        let mut io: Io<Log> = Io::new_sim(&Options::new(16), &sim).unwrap();
        let mut log = Log::default();
        let (a, b) = sim.unix_pair(UnixKind::Datagram).unwrap();
        for round in 0..20_u8 {
            let (x, y) = sim.unix_pair(UnixKind::Stream).unwrap();
            let msg = with_fds(&[round], vec![x]);
            let sent = send_closing(&mut io, &mut log, a.as_raw_fd(), msg);
            assert_eq!(sent, Ok(1));
            let mut got = recv(&mut io, &mut log, b.as_raw_fd(), 8, 1);
            let mut sent_back = got.msg.take().unwrap();
            for fd in std::mem::take(sent_back.fds_mut()).into_iter().chain([y]) {
                close(&mut io, &mut log, fd);
            }
        }
        close(&mut io, &mut log, a);
        close(&mut io, &mut log, b);
        assert_eq!(sim.open_descriptors(), 0);
        sim.trace_hash()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

/// A Unix datagram pair's polls and backpressure: readable with a message due, writable
/// while the receiver has room; a send to a full receiver waits until it reads.
#[test]
fn a_unix_datagram_pair_polls_and_pushes_back() {
    fn on_poll(log: &mut Log, io: &mut Io<Log>, tag: Tag, events: io::Result<PollEvents>) {
        let bits = events.map(|e| usize::from(e.is_readable()) | usize::from(e.is_writable()) << 1);
        on_unit(log, io, tag, Ok(()));
        log.take(tag);
        log.push(
            tag,
            bits.map_err(|e| e.raw_os_error().expect("an OS error")),
        );
    }
    let poll = |io: &mut Io<Log>, log: &mut Log, fd: &OwnedFd| {
        let both = PollEvents::READABLE | PollEvents::WRITABLE;
        let op = io.poll(8, fd.as_raw_fd(), both, on_poll).unwrap();
        io.set_deadline(op, 1_000_000).unwrap();
        io.run_until_idle(log).unwrap();
        log.take(8).result
    };
    let mut options = SimOptions::new(6);
    options.socket_buffer_bytes = 8;
    let sim = Sim::new(&options).unwrap();
    let mut io: Io<Log> = Io::new_sim(&Options::new(16), &sim).unwrap();
    let mut log = Log::default();
    let (a, b) = sim.unix_pair(UnixKind::Datagram).unwrap();
    assert_eq!(
        poll(&mut io, &mut log, &b),
        Ok(2),
        "writable, nothing to read"
    );
    let sent = send(
        &mut io,
        &mut log,
        a.as_raw_fd(),
        Msg::new(b"12345678".to_vec()),
    );
    assert_eq!(sent, Ok(8));
    assert_eq!(poll(&mut io, &mut log, &b), Ok(3), "a message due");
    let full = poll(&mut io, &mut log, &a);
    assert_eq!(
        full,
        Err(libc::ETIMEDOUT),
        "the receiver is full: a poll waits"
    );
    // A send to the full receiver waits until it reads.
    let msg = Msg::new(b"9".to_vec());
    io.sendmsg(1, a.as_raw_fd(), msg, on_msg).unwrap();
    io.run_for_ns(&mut log, 10_000_000).unwrap();
    assert!(!log.has(1), "the send waits for room");
    let got = recv(&mut io, &mut log, b.as_raw_fd(), 16, 0);
    assert_eq!(got.msg.unwrap().bufs()[0], b"12345678");
    io.run_until_idle(&mut log).unwrap();
    assert_eq!(log.take(1).result, Ok(1), "room made, the send goes");
    let msg = Msg::new(vec![0; 9]);
    assert_eq!(
        send(&mut io, &mut log, a.as_raw_fd(), msg),
        Err(libc::EMSGSIZE)
    );
    close(&mut io, &mut log, a);
    close(&mut io, &mut log, b);
    assert_eq!(sim.open_descriptors(), 0);
}

/// Plain receives and sends on a Unix datagram pair, as on a connected datagram socket: one
/// message each, a receive keeping what fits and closing the descriptors that came.
#[test]
fn plain_receives_and_sends_on_a_unix_datagram_pair() {
    check_closed(UnixKind::Datagram, |_, io, log, a, b| {
        io.recv(2, b.as_raw_fd(), Vec::with_capacity(1), on_buf)
            .unwrap();
        io.run_until_idle(log).unwrap();
        assert_eq!(log.take(2).buf, b"x", "the rest of the message is lost");
        io.send(3, a.as_raw_fd(), b"one".to_vec(), on_buf).unwrap();
        let parts = vec![b"tw".to_vec().into(), b"o".to_vec().into()];
        io.send_vectored(4, a.as_raw_fd(), parts, |log, io, tag, (n, _)| {
            on_unit(log, io, tag, n.map(|n| assert_eq!(n, 3)));
        })
        .unwrap();
        settle(io, log);
        for (tag, want) in [(5, &b"one"[..]), (6, b"two")] {
            io.recv(tag, b.as_raw_fd(), Vec::with_capacity(8), on_buf)
                .unwrap();
            io.run_until_idle(log).unwrap();
            assert_eq!(log.take(tag).buf, want, "one message a receive");
        }
        assert_eq!(log.take(3).result, Ok(3));
        assert_eq!(log.take(4).result, Ok(0));
        vec![a, b]
    });
}
