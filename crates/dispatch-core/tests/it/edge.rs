//! Edge-triggered registration on the readiness backends (issue 19): each test runs on epoll
//! and on kqueue over the kevent double, whatever `DISPATCH_BACKEND` says, through one
//! `check` helper. What they pin down are the classic ways edge-triggered I/O hangs or lies:
//! an edge arriving right after the failed try, several operations sharing one edge, the
//! peer's close and errors with or without data, a number closed and reused while its
//! registration is still in the kernel, `dup`, cancel and deadlines of parked operations,
//! and the loop dropped with registrations alive.

use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use dispatch_loop::{BackendKind, BufResult, Io, Options, Tag};

/// What the callbacks saw, in order: the tag and the result (bytes, or the errno).
#[derive(Default)]
struct Seen {
    results: Vec<(Tag, Result<Vec<u8>, i32>)>,
}

fn on_recv(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, (result, buf): BufResult) {
    let result = match result {
        Ok(n) => Ok(buf[..n].to_vec()),
        Err(error) => Err(error.raw_os_error().unwrap_or(-1)),
    };
    seen.results.push((tag, result));
}

fn on_unit(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: io::Result<()>) {
    let result = result.map(|()| Vec::new());
    seen.results
        .push((tag, result.map_err(|e| e.raw_os_error().unwrap_or(-1))));
}

/// Runs `body` on a fresh loop of each readiness backend this host has.
fn check(body: impl Fn(&mut Io<Seen>, &mut Seen)) {
    for backend in [BackendKind::Epoll, BackendKind::KqueueFake] {
        let mut options = Options::new(16);
        options.backend = Some(backend);
        let mut io: Io<Seen> = Io::new(&options).expect("epoll and the kevent double run here");
        let mut seen = Seen::default();
        eprintln!("backend {}", backend.name());
        body(&mut io, &mut seen);
    }
}

/// Turns the loop until `seen` holds `count` results (a hang guard of 2,000 turns of up to
/// 10 ms, not a timing threshold: each result comes within a turn or two).
fn run_until(io: &mut Io<Seen>, seen: &mut Seen, count: usize) {
    for _ in 0..2000 {
        if seen.results.len() >= count {
            return;
        }
        io.run_for_ns(seen, 10_000_000).unwrap();
    }
    panic!(
        "{} results after 2,000 turns, not {count}",
        seen.results.len()
    );
}

fn recv(io: &mut Io<Seen>, tag: Tag, fd: RawFd, capacity: usize) -> dispatch_loop::OpId {
    io.recv(tag, fd, Vec::with_capacity(capacity), on_recv)
        .unwrap()
}

fn bytes(data: &[u8]) -> Result<Vec<u8>, i32> {
    Ok(data.to_vec())
}

#[test]
fn an_edge_right_after_the_failed_try_wakes_the_parked_receive() {
    check(|io, seen| {
        let (local, mut peer) = UnixStream::pair().unwrap();
        recv(io, 1, local.as_raw_fd(), 16);
        // The receive is tried (EAGAIN) and parked; the data comes after that try.
        io.tick(seen).unwrap();
        assert!(seen.results.is_empty());
        peer.write_all(b"late").unwrap();
        run_until(io, seen, 1);
        // A short read marks the stream drained: the next receive parks without a try, and
        // the next arrival is a new edge that wakes it.
        recv(io, 2, local.as_raw_fd(), 16);
        io.tick(seen).unwrap();
        peer.write_all(b"again").unwrap();
        run_until(io, seen, 2);
        assert_eq!(
            seen.results,
            vec![(1, bytes(b"late")), (2, bytes(b"again"))]
        );
    });
}

#[test]
fn several_receives_queued_in_one_direction_share_one_edge() {
    check(|io, seen| {
        let (local, mut peer) = UnixStream::pair().unwrap();
        for tag in 0..3 {
            recv(io, tag, local.as_raw_fd(), 4);
        }
        io.tick(seen).unwrap();
        peer.write_all(b"abcdefghijkl").unwrap();
        run_until(io, seen, 3);
        let want = [b"abcd", b"efgh", b"ijkl"];
        let want: Vec<_> = (0..3).map(|tag| (tag, bytes(want[tag as usize]))).collect();
        assert_eq!(seen.results, want);
    });
}

#[test]
fn the_peers_close_ends_receives_with_and_without_data() {
    check(|io, seen| {
        // With data: the bytes, then the end of stream, though the read of the bytes was
        // short (the close is final, so it does not count as drained).
        let (local, mut peer) = UnixStream::pair().unwrap();
        recv(io, 1, local.as_raw_fd(), 16);
        io.tick(seen).unwrap();
        peer.write_all(b"xy").unwrap();
        drop(peer);
        run_until(io, seen, 1);
        recv(io, 2, local.as_raw_fd(), 16);
        run_until(io, seen, 2);
        // Without data: the end of stream wakes a parked receive.
        let (other, other_peer) = UnixStream::pair().unwrap();
        recv(io, 3, other.as_raw_fd(), 16);
        io.tick(seen).unwrap();
        drop(other_peer);
        run_until(io, seen, 3);
        let want = vec![(1, bytes(b"xy")), (2, bytes(b"")), (3, bytes(b""))];
        assert_eq!(seen.results, want);
    });
}

/// A connected TCP pair whose peer end resets the connection when dropped.
fn tcp_pair_resetting() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (local, _) = listener.accept().unwrap();
    rustix::net::sockopt::set_socket_linger(&peer, Some(std::time::Duration::ZERO)).unwrap();
    (local, peer)
}

#[test]
fn a_reset_ends_receives_and_sends_with_and_without_data() {
    check(|io, seen| {
        // Without data: a parked receive sees the reset.
        let (local, peer) = tcp_pair_resetting();
        recv(io, 1, local.as_raw_fd(), 16);
        io.tick(seen).unwrap();
        drop(peer);
        run_until(io, seen, 1);
        assert_eq!(seen.results[0], (1, Err(libc::ECONNRESET)));
        // With data unread on the peer's side when it resets: the receive gets the bytes
        // or the reset, and whatever comes next ends too (never a hang).
        let (local, mut peer) = tcp_pair_resetting();
        peer.write_all(b"data").unwrap();
        drop(peer);
        recv(io, 2, local.as_raw_fd(), 16);
        run_until(io, seen, 2);
        recv(io, 3, local.as_raw_fd(), 16);
        run_until(io, seen, 3);
        assert!(matches!(seen.results[1].1, Ok(_) | Err(libc::ECONNRESET)));
        assert!(matches!(seen.results[2].1, Ok(_) | Err(libc::ECONNRESET)));
        // A send after the reset fails rather than waits.
        io.send(4, local.as_raw_fd(), b"late".to_vec(), on_recv)
            .unwrap();
        run_until(io, seen, 4);
        assert!(seen.results[3].1.is_err(), "{:?}", seen.results[3]);
    });
}

/// Makes `fd` name `file` (`dup2`), closing what it named: a number reused behind the
/// loop's back.
#[allow(unsafe_code)]
fn reuse_number(fd: RawFd, file: &UnixStream) {
    // SAFETY: both are open descriptors; `fd`'s old file is closed by dup2 on purpose, and
    // nothing else in the test reads through it.
    let duped = unsafe { libc::dup2(file.as_raw_fd(), fd) };
    assert_eq!(duped, fd);
}

#[test]
fn a_number_closed_and_reused_while_registered_is_registered_anew() {
    check(|io, seen| {
        let (first, mut first_peer) = UnixStream::pair().unwrap();
        let fd = first.as_raw_fd();
        // Registered: the receive parked once.
        recv(io, 1, fd, 16);
        io.tick(seen).unwrap();
        first_peer.write_all(b"one").unwrap();
        run_until(io, seen, 1);
        // The program puts another socket under the number, behind the loop's back.
        let (second, mut second_peer) = UnixStream::pair().unwrap();
        reuse_number(fd, &second);
        drop(second);
        recv(io, 2, fd, 16);
        io.tick(seen).unwrap();
        second_peer.write_all(b"two").unwrap();
        // The first socket's file is gone; writes to its peer fail or go nowhere.
        let _ = first_peer.write_all(b"stale");
        run_until(io, seen, 2);
        assert_eq!(seen.results, vec![(1, bytes(b"one")), (2, bytes(b"two"))]);
        // `first` owns the number, which names the second socket now: closed once.
        drop(first);
    });
}

/// The callback of the first receive reuses the number and schedules the next receive in
/// the same turn.
fn on_recv_then_reuse(seen: &mut Seen, io: &mut Io<Seen>, tag: Tag, result: BufResult) {
    let fd = tag as RawFd;
    on_recv(seen, io, 0, result);
    let (second, mut second_peer) = UnixStream::pair().unwrap();
    reuse_number(fd, &second);
    second_peer.write_all(b"two").unwrap();
    std::mem::forget(second_peer);
    recv(io, 1, fd, 16);
}

#[test]
#[allow(unsafe_code)]
fn a_number_reused_within_one_turn_is_registered_anew() {
    check(|io, seen| {
        let (first, mut first_peer) = UnixStream::pair().unwrap();
        let fd = first.as_raw_fd();
        io.recv(fd as Tag, fd, Vec::with_capacity(16), on_recv_then_reuse)
            .unwrap();
        io.tick(seen).unwrap();
        first_peer.write_all(b"one").unwrap();
        run_until(io, seen, 2);
        assert_eq!(seen.results, vec![(0, bytes(b"one")), (1, bytes(b"two"))]);
        std::mem::forget(first);
        // SAFETY: `fd` names the second socket now, which nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    });
}

#[test]
fn a_dup_is_its_own_registration_and_outlives_the_original_closed_by_the_loop() {
    check(|io, seen| {
        let (local, mut peer) = UnixStream::pair().unwrap();
        let dup = local.try_clone().unwrap();
        recv(io, 1, local.as_raw_fd(), 16);
        recv(io, 2, dup.as_raw_fd(), 16);
        io.tick(seen).unwrap();
        peer.write_all(b"a").unwrap();
        run_until(io, seen, 1);
        peer.write_all(b"b").unwrap();
        run_until(io, seen, 2);
        let mut got: Vec<_> = seen.results.iter().map(|(_, r)| r.clone()).collect();
        got.sort();
        assert_eq!(got, vec![bytes(b"a"), bytes(b"b")]);
        // The loop closes the original (deregistering it first); the dup goes on.
        io.close(3, OwnedFd::from(local), on_unit).unwrap();
        run_until(io, seen, 3);
        assert_eq!(seen.results[2], (3, Ok(Vec::new())));
        recv(io, 4, dup.as_raw_fd(), 16);
        io.tick(seen).unwrap();
        peer.write_all(b"c").unwrap();
        run_until(io, seen, 4);
        assert_eq!(seen.results[3], (4, bytes(b"c")));
    });
}

#[test]
fn cancel_and_deadlines_of_parked_receives_leave_the_data_to_the_next() {
    check(|io, seen| {
        let (local, mut peer) = UnixStream::pair().unwrap();
        let cancelled = recv(io, 1, local.as_raw_fd(), 16);
        let timed = recv(io, 2, local.as_raw_fd(), 16);
        io.tick(seen).unwrap();
        io.cancel(3, cancelled, on_unit).unwrap();
        io.set_deadline(timed, 1_000_000).unwrap();
        run_until(io, seen, 3);
        let mut ends: Vec<_> = seen.results.clone();
        ends.sort();
        assert_eq!(
            ends,
            vec![
                (1, Err(libc::ECANCELED)),
                (2, Err(libc::ETIMEDOUT)),
                (3, Ok(Vec::new()))
            ]
        );
        recv(io, 4, local.as_raw_fd(), 16);
        io.tick(seen).unwrap();
        peer.write_all(b"kept").unwrap();
        run_until(io, seen, 4);
        assert_eq!(seen.results[3], (4, bytes(b"kept")));
    });
}

#[test]
fn a_loop_dropped_with_registrations_alive_leaves_the_descriptor_to_the_next() {
    for backend in [BackendKind::Epoll, BackendKind::KqueueFake] {
        let mut options = Options::new(16);
        options.backend = Some(backend);
        let (local, mut peer) = UnixStream::pair().unwrap();
        let mut seen = Seen::default();
        {
            let mut io: Io<Seen> = Io::new(&options).unwrap();
            recv(&mut io, 1, local.as_raw_fd(), 16);
            io.tick(&mut seen).unwrap();
            // Dropped with the receive parked and the descriptor registered.
        }
        // Whatever the drop answered the parked receive, it ran no callback.
        assert!(seen.results.is_empty());
        let mut io: Io<Seen> = Io::new(&options).unwrap();
        recv(&mut io, 2, local.as_raw_fd(), 16);
        io.tick(&mut seen).unwrap();
        peer.write_all(b"next").unwrap();
        run_until(&mut io, &mut seen, 1);
        assert_eq!(seen.results, vec![(2, bytes(b"next"))]);
    }
}
