//! Per-operation deadlines (`Io::set_deadline`): an operation that has not finished by its
//! deadline completes with `ETIMEDOUT`, never before the deadline; one that finishes first
//! keeps its result; deadlines move, clear, and refuse what cannot time out.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use dispatch_loop::{BufResult, DeadlineError, Io, Options, Tag};

use crate::check;

#[derive(Default)]
struct Seen {
    results: Vec<(Tag, i32, Instant)>,
    bufs: Vec<Vec<u8>>,
}

fn errno<T>(result: &io::Result<T>) -> i32 {
    result
        .as_ref()
        .map_or_else(|error| error.raw_os_error().expect("an OS error"), |_| 0)
}

fn on_buf(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, (result, buf): BufResult) {
    seen.results.push((tag, errno(&result), Instant::now()));
    seen.bufs.push(buf);
}

fn on_unit(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: io::Result<()>) {
    seen.results.push((tag, errno(&result), Instant::now()));
}

fn result_of(seen: &Seen, tag: Tag) -> (i32, Instant) {
    let mut found = seen.results.iter().filter(|(t, ..)| *t == tag);
    let &(_, errno, at) = found
        .next()
        .unwrap_or_else(|| panic!("no callback for {tag}"));
    assert!(found.next().is_none(), "two callbacks for {tag}");
    (errno, at)
}

const MS: u64 = 1_000_000;

#[test]
fn a_recv_past_its_deadline_times_out_never_early_and_returns_its_buffer() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let (socket, _peer) = UnixStream::pair().unwrap();
    let recv = io
        .recv(1, socket.as_raw_fd(), Vec::with_capacity(64), on_buf)
        .unwrap();
    let set_at = Instant::now();
    io.set_deadline(recv, 20 * MS).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (errno, at) = result_of(&seen, 1);
    assert_eq!(errno, libc::ETIMEDOUT);
    assert!(
        at - set_at >= Duration::from_millis(20),
        "early: {:?}",
        at - set_at
    );
    assert_eq!(seen.bufs[0].capacity(), 64, "the buffer comes back");
    assert_eq!(io.stats().deadlines_expired, 1);
    assert_eq!(
        io.stats().ops_completed,
        1,
        "the loop's own cancel is not counted"
    );
}

#[test]
fn an_operation_that_finishes_first_keeps_its_result() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let (socket, peer) = UnixStream::pair().unwrap();
    let recv = io
        .recv(1, socket.as_raw_fd(), Vec::with_capacity(64), on_buf)
        .unwrap();
    io.set_deadline(recv, 30 * MS).unwrap();
    std::io::Write::write_all(&mut &peer, b"in time").unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 1).0, 0);
    assert_eq!(seen.bufs[0], b"in time");
    // Past the old deadline, nothing more happens; the id is stale.
    io.run_for_ns(&mut seen, 40 * MS).unwrap();
    assert_eq!(seen.results.len(), 1);
    assert_eq!(io.stats().deadlines_expired, 0);
    assert_eq!(io.set_deadline(recv, MS), Err(DeadlineError::NotInFlight));
    assert_eq!(io.clear_deadline(recv), Err(DeadlineError::NotInFlight));
}

/// An idle timeout pushed back: the operation times out after the last deadline set, not
/// the first.
#[test]
fn a_moved_deadline_replaces_the_old_one() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let (socket, _peer) = UnixStream::pair().unwrap();
    let recv = io
        .recv(1, socket.as_raw_fd(), Vec::with_capacity(8), on_buf)
        .unwrap();
    io.set_deadline(recv, 10 * MS).unwrap();
    let moved_at = Instant::now();
    io.set_deadline(recv, 40 * MS).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (errno, at) = result_of(&seen, 1);
    assert_eq!(errno, libc::ETIMEDOUT);
    assert!(
        at - moved_at >= Duration::from_millis(40),
        "early: {:?}",
        at - moved_at
    );
}

/// Deadlines moved later wait beside their first place in the loop's heap; one moved back
/// earlier again, and one moved earlier than the first, still fire when last set: neither
/// early nor at a deadline replaced.
#[test]
fn a_deadline_moved_later_then_earlier_fires_at_the_last_one_set() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let (socket, _peer) = UnixStream::pair().unwrap();
    let (other, _other_peer) = UnixStream::pair().unwrap();
    let back = io
        .recv(1, socket.as_raw_fd(), Vec::with_capacity(8), on_buf)
        .unwrap();
    let sooner = io
        .recv(2, other.as_raw_fd(), Vec::with_capacity(8), on_buf)
        .unwrap();
    let set_at = Instant::now();
    io.set_deadline(back, 10 * MS).unwrap();
    io.set_deadline(back, 60_000 * MS).unwrap();
    io.set_deadline(back, 40 * MS).unwrap();
    io.set_deadline(sooner, 60_000 * MS).unwrap();
    io.set_deadline(sooner, 20 * MS).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (errno, back_at) = result_of(&seen, 1);
    assert_eq!(errno, libc::ETIMEDOUT);
    let waited = back_at - set_at;
    assert!(waited >= Duration::from_millis(40), "early: {waited:?}");
    assert!(
        waited < Duration::from_secs(30),
        "at a replaced deadline: {waited:?}"
    );
    let (errno, sooner_at) = result_of(&seen, 2);
    assert_eq!(errno, libc::ETIMEDOUT);
    let waited = sooner_at - set_at;
    assert!(waited >= Duration::from_millis(20), "early: {waited:?}");
    assert!(sooner_at <= back_at, "the sooner deadline fires first");
}

#[test]
fn a_cleared_deadline_never_fires() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let (socket, _peer) = UnixStream::pair().unwrap();
    let recv = io
        .recv(1, socket.as_raw_fd(), Vec::with_capacity(8), on_buf)
        .unwrap();
    io.set_deadline(recv, 5 * MS).unwrap();
    assert_eq!(io.clear_deadline(recv), Ok(true));
    assert_eq!(io.clear_deadline(recv), Ok(false));
    io.run_for_ns(&mut seen, 30 * MS).unwrap();
    assert!(seen.results.is_empty(), "still waiting for data");
    io.cancel(2, recv, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 1).0, libc::ECANCELED);
    assert_eq!(io.stats().deadlines_expired, 0);
}

/// A user's cancel decides the result when it comes first; once the deadline fired and the
/// loop's own cancel went through, the id is stale.
#[test]
fn cancel_and_deadline_each_answer_once() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let first = io.timeout(1, 60_000 * MS, on_unit).unwrap();
    // Long enough that the cancel surely comes first, even on a slow emulated machine.
    io.set_deadline(first, 10_000 * MS).unwrap();
    io.tick(&mut seen).unwrap();
    io.cancel(2, first, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 1).0, libc::ECANCELED);
    assert_eq!(result_of(&seen, 2).0, 0);

    let second = io.timeout(3, 60_000 * MS, on_unit).unwrap();
    io.set_deadline(second, MS).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 3).0, libc::ETIMEDOUT);
    io.cancel(4, second, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 4).0, libc::ENOENT);
}

/// A deadline on an operation still parked in the overflow queue (io_uring with a one-entry
/// SQ) completes it without the kernel.
#[test]
fn a_parked_operation_times_out_too() {
    let mut options = Options::new(8);
    options.uring.sq_entries = 1;
    let Some(mut io) = check::io::<Seen>(&options) else {
        return;
    };
    let mut seen = Seen::default();
    let (socket, _peer) = UnixStream::pair().unwrap();
    io.timeout(1, 0, on_unit).unwrap();
    let parked = io
        .recv(2, socket.as_raw_fd(), Vec::with_capacity(8), on_buf)
        .unwrap();
    io.set_deadline(parked, 0).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 1).0, 0);
    assert_eq!(result_of(&seen, 2).0, libc::ETIMEDOUT);
}

#[test]
fn closes_and_cancels_cannot_have_deadlines() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let file = std::fs::File::open("/dev/null").unwrap();
    let close = io.close(1, file.into(), on_unit).unwrap();
    assert_eq!(
        io.set_deadline(close, MS),
        Err(DeadlineError::NotCancellable)
    );
    let timeout = io.timeout(2, 0, on_unit).unwrap();
    let cancel = io.cancel(3, timeout, on_unit).unwrap();
    assert_eq!(
        io.set_deadline(cancel, MS),
        Err(DeadlineError::NotCancellable)
    );
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 1).0, 0);
}

/// A listener whose accept queue is full and never drained: on Linux the kernel drops
/// further SYNs, so a connect to it hangs (retransmitting) until something gives up.
fn unresponsive_listener() -> (TcpListener, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the queue with connections nobody accepts (non-blocking connects, so the ones the
    // kernel drops do not hang this thread).
    let fillers = (0..4)
        .map(|_| {
            let socket = check::tcp_socket();
            rustix::fs::fcntl_setfl(&socket, rustix::fs::OFlags::NONBLOCK).unwrap();
            let _ = rustix::net::connect(&socket, &addr);
            TcpStream::from(socket)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    (listener, fillers)
}

#[test]
fn a_connect_with_a_deadline_gives_up_on_an_unresponsive_peer() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let (listener, _fillers) = unresponsive_listener();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let socket = check::tcp_socket();
    let connect = io.connect(1, socket.as_raw_fd(), addr, on_unit).unwrap();
    let set_at = Instant::now();
    io.set_deadline(connect, 50 * MS).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (errno, at) = result_of(&seen, 1);
    assert_eq!(
        errno,
        libc::ETIMEDOUT,
        "the connect should hang until its deadline"
    );
    assert!(at - set_at >= Duration::from_millis(50));
}
