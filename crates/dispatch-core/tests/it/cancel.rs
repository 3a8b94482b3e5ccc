//! Cancellation: the target's callback runs exactly once, with ECANCELED or its real result.

use std::collections::BTreeMap;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use dispatch_loop::{BufResult, Io, OpId, Options, Tag};

use crate::check;

/// Results by tag, each an errno (0 for success).
#[derive(Default)]
struct Results {
    by_tag: BTreeMap<Tag, i32>,
    fds: Vec<OwnedFd>,
    bufs: Vec<Vec<u8>>,
}

fn code<T>(result: &io::Result<T>) -> i32 {
    result
        .as_ref()
        .err()
        .map_or(0, |error| error.raw_os_error().expect("OS error"))
}

fn record(results: &mut Results, tag: Tag, errno: i32) {
    let previous = results.by_tag.insert(tag, errno);
    assert!(previous.is_none(), "callback for tag {tag} ran twice");
}

fn on_unit(results: &mut Results, _: &mut Io<Results>, tag: Tag, result: io::Result<()>) {
    record(results, tag, code(&result));
}

fn on_buf(results: &mut Results, _: &mut Io<Results>, tag: Tag, (result, buf): BufResult) {
    record(results, tag, code(&result));
    results.bufs.push(buf);
}

fn on_fd(results: &mut Results, _: &mut Io<Results>, tag: Tag, result: io::Result<OwnedFd>) {
    record(results, tag, code(&result));
    results.fds.extend(result.ok());
}

fn run(io: &mut Io<Results>) -> Results {
    let mut results = Results::default();
    io.run_until_idle(&mut results).unwrap();
    results
}

/// Schedules `target`'s cancel after the target has reached the kernel.
fn cancel_in_kernel(io: &mut Io<Results>, target: OpId) -> Results {
    let mut results = Results::default();
    io.tick(&mut results).unwrap();
    assert!(
        results.by_tag.is_empty(),
        "the target must still be pending"
    );
    io.cancel(100, target, on_unit).unwrap();
    io.run_until_idle(&mut results).unwrap();
    results
}

/// Schedules a recv on `server` (tag 1) with a buffer of `capacity`, which must wait, and
/// cancels it once it is in the kernel.
fn cancel_pending_recv(io: &mut Io<Results>, server: &TcpStream, capacity: usize) -> Results {
    let buf = Vec::with_capacity(capacity);
    let target = io.recv(1, check::fd(server), buf, on_buf).unwrap();
    cancel_in_kernel(io, target)
}

#[test]
fn cancel_a_pending_recv_returns_its_buffer() {
    let Some(mut io) = check::io::<Results>(&Options::new(8)) else {
        return;
    };
    let (_client, server) = check::tcp_pair();
    let results = cancel_pending_recv(&mut io, &server, 77);
    assert_eq!(results.by_tag[&1], libc::ECANCELED);
    assert_eq!(results.by_tag[&100], 0);
    assert_eq!(results.bufs[0].capacity(), 77);
}

#[test]
fn cancel_a_pending_accept() {
    let Some(mut io) = check::io::<Results>(&Options::new(8)) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = io.accept(1, check::fd(&listener), on_fd).unwrap();
    let results = cancel_in_kernel(&mut io, target);
    assert_eq!(results.by_tag[&1], libc::ECANCELED);
    assert_eq!(results.by_tag[&100], 0);
    assert!(results.fds.is_empty());
}

#[test]
fn an_accept_that_wins_the_race_delivers_its_socket() {
    let Some(mut io) = check::io::<Results>(&Options::new(8)) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    // The connection is queued before the accept is issued, so the accept completes while it
    // is submitted, ahead of the cancel in the same batch.
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let target = io.accept(1, check::fd(&listener), on_fd).unwrap();
    io.cancel(100, target, on_unit).unwrap();
    let results = run(&mut io);
    assert_eq!(results.by_tag[&1], 0);
    assert_eq!(
        results.fds.len(),
        1,
        "the accepted socket reaches its callback"
    );
    // The accept's callback had not run when the cancel was scheduled.
    assert_eq!(results.by_tag[&100], 0, "the cancel answers Ok");
}

#[test]
fn cancel_of_a_completed_or_stale_operation_finds_nothing() {
    let Some(mut io) = check::io::<Results>(&Options::new(8)) else {
        return;
    };
    let target = io.timeout(1, 0, on_unit).unwrap();
    run(&mut io);
    let syscalls = io.stats().syscalls;
    io.cancel(100, target, on_unit).unwrap();
    let results = run(&mut io);
    assert_eq!(results.by_tag[&100], libc::ENOENT);
    assert_eq!(
        io.stats().syscalls,
        syscalls,
        "a stale cancel never reaches the kernel"
    );
}

#[test]
fn cancel_of_a_parked_operation_completes_without_the_kernel() {
    let mut options = Options::new(8);
    options.uring.sq_entries = 1;
    let Some(mut io) = check::io::<Results>(&options) else {
        return;
    };
    io.timeout(1, 1_000_000, on_unit).unwrap();
    let parked = io.timeout(2, 60_000_000_000, on_unit).unwrap();
    // Only io_uring has a submission queue to overflow; elsewhere this is an ordinary cancel.
    let uring = check::on_io_uring(&io);
    assert_eq!(io.stats().overflow_parked, u64::from(uring));
    io.cancel(100, parked, on_unit).unwrap();
    let results = run(&mut io);
    assert_eq!(results.by_tag[&1], 0);
    assert_eq!(results.by_tag[&2], libc::ECANCELED);
    assert_eq!(results.by_tag[&100], 0);
    if uring {
        let submitted = io.stats().ops_submitted;
        assert_eq!(submitted, 1, "the parked timeout never reached the kernel");
    }
}

#[test]
fn a_parked_close_cannot_be_cancelled_and_still_closes() {
    let mut options = Options::new(8);
    options.uring.sq_entries = 1;
    let Some(mut io) = check::io::<Results>(&options) else {
        return;
    };
    io.timeout(1, 0, on_unit).unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    let close = io.close(2, file.into(), on_unit).unwrap();
    io.cancel(100, close, on_unit).unwrap();
    let results = run(&mut io);
    assert_eq!(results.by_tag[&2], 0);
    // A close cannot be stopped, wherever it waits: the same answer on every backend.
    assert_eq!(results.by_tag[&100], libc::EALREADY);
}

#[test]
fn cancel_a_timeout() {
    let Some(mut io) = check::io::<Results>(&Options::new(8)) else {
        return;
    };
    let target = io.timeout(1, 60_000_000_000, on_unit).unwrap();
    let results = cancel_in_kernel(&mut io, target);
    assert_eq!(results.by_tag[&1], libc::ECANCELED);
    assert_eq!(results.by_tag[&100], 0);
}

#[test]
fn a_peer_that_hangs_up_after_a_cancel_does_not_wake_an_idle_loop() {
    let Some(mut io) = check::io::<Results>(&Options::new(8)) else {
        return;
    };
    let (client, server) = check::tcp_pair();
    let results = cancel_pending_recv(&mut io, &server, 8);
    assert_eq!(results.by_tag[&1], libc::ECANCELED);
    // The peer resets (EPOLLHUP and EPOLLERR, which epoll reports even for an empty
    // interest): nobody waits on the socket any more, so the idle loop must sleep through it
    // rather than be woken again and again.
    check::reset(client);
    let before = io.stats().syscalls;
    let mut results = Results::default();
    io.run_for_ns(&mut results, 30_000_000).unwrap();
    let spent = io.stats().syscalls - before;
    assert!(
        spent <= 3,
        "the idle loop woke {spent} times: {:?}",
        io.stats()
    );
}
