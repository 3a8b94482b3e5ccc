//! An independent review of issue 6's fixes: panicking callbacks, Drop in every slot state,
//! the completed queue, the cancel budget and the `cancelling` mark, the overflow queue, and
//! `Io::stop`. Each test either reproduces a bug safe code can still trigger (it fails until
//! the bug is fixed) or guards a subtle invariant. Every test runs on every backend (one
//! skips where io_uring alone applies): the overflow queue is forced on io_uring with a
//! one-entry SQ, and the readiness backends (which never park) check that the same program
//! gets the same answers there.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dispatch_loop::{BufResult, Io, Options, Tag, AT_FDCWD};

use crate::check;
use crate::drop_in_flight::open_fds;

/// A timeout that never expires within a test.
const LONG_NS: u64 = 60_000_000_000;

/// What the callbacks saw, by tag: the errno (0 for success).
#[derive(Default)]
struct Seen {
    results: Vec<(Tag, i32)>,
    fds: Vec<OwnedFd>,
}

fn code<T>(result: &io::Result<T>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(error) => error.raw_os_error().expect("an OS error"),
    }
}

fn on_unit(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: io::Result<()>) {
    seen.results.push((tag, code(&result)));
}

fn on_buf(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, (result, _): BufResult) {
    seen.results.push((tag, code(&result)));
}

fn on_fd(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: io::Result<OwnedFd>) {
    seen.results.push((tag, code(&result)));
    if let Ok(fd) = result {
        seen.fds.push(fd);
    }
}

/// Records its result, then panics.
fn on_unit_panic(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: io::Result<()>) {
    seen.results.push((tag, code(&result)));
    panic!("a planted panic in callback {tag}");
}

fn has(seen: &Seen, tag: Tag) -> bool {
    seen.results.iter().any(|(t, _)| *t == tag)
}

fn result_of(seen: &Seen, tag: Tag) -> i32 {
    let mut found = seen.results.iter().filter(|(t, _)| *t == tag);
    let (_, errno) = found
        .next()
        .unwrap_or_else(|| panic!("no callback for tag {tag}"));
    assert!(found.next().is_none(), "two callbacks for tag {tag}");
    *errno
}

/// Runs the loop in 10 ms slices until `done` holds, at most 200 slices (2 s): a loop that
/// lost an operation returns here with `done` still false, and the assertions that follow
/// say which.
fn run_until(io: &mut Io<Seen>, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    for _ in 0..200 {
        if done(seen) {
            return;
        }
        io.run_for_ns(seen, 10_000_000).unwrap();
    }
}

/// Options whose io_uring SQ has one entry, so that a second operation scheduled in a turn
/// waits in the overflow queue. Readiness backends have no SQ and ignore it.
fn parking(ops_max: u32) -> Options {
    let mut options = Options::new(ops_max);
    options.uring.sq_entries = 1;
    options
}

/// A cancel parked in the overflow queue (the SQ was full) is itself cancelled. Its target
/// must stay cancellable. Today `Io::cancel` drops the parked cancel from the queue but
/// leaves the target marked `cancelling`, so every later cancel of the target answers
/// `EALREADY` while none is in flight, and nothing can ever cancel it (io_uring: readiness
/// backends never park, and pass).
#[test]
fn cancelling_a_parked_cancel_leaves_its_target_cancellable() {
    let Some(mut io) = check::io::<Seen>(&parking(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let target = io.timeout(1, LONG_NS, on_unit).unwrap();
    io.tick(&mut seen).unwrap();
    io.nop(2, on_unit).unwrap(); // fills the one-entry SQ
    let parked_cancel = io.cancel(3, target, on_unit).unwrap(); // parked on io_uring
    io.cancel(4, parked_cancel, on_unit).unwrap();
    run_until(&mut io, &mut seen, |seen| {
        [2, 3, 4].iter().all(|&t| has(seen, t))
    });
    // io_uring: the parked cancel is removed (0); readiness backends performed it first
    // (ENOENT). Either way it is over.
    let errno = result_of(&seen, 4);
    assert!(
        errno == 0 || errno == libc::ENOENT,
        "cancel of the cancel: {errno}"
    );
    // No cancel of the target is in flight any more: a new one must reach it.
    io.cancel(5, target, on_unit).unwrap();
    run_until(&mut io, &mut seen, |seen| has(seen, 1) && has(seen, 5));
    assert_ne!(
        result_of(&seen, 5),
        libc::EALREADY,
        "EALREADY, though no other cancel of the target is in flight"
    );
    assert_eq!(
        result_of(&seen, 1),
        libc::ECANCELED,
        "the target was never cancelled"
    );
}

/// Two cancels of one operation in one turn answer `0` and `EALREADY` on every backend, and
/// on io_uring whether or not the target is parked. Today, when the target waits in the
/// overflow queue (more operations scheduled in a turn than the SQ holds), the first cancel
/// completes it at once and the second answers `ENOENT`, while epoll and kqueue answer
/// `EALREADY` to the same program.
#[test]
fn a_second_cancel_of_a_parked_operation_answers_as_on_every_backend() {
    let Some(mut io) = check::io::<Seen>(&parking(4)) else {
        return;
    };
    let mut seen = Seen::default();
    io.nop(1, on_unit).unwrap(); // fills the one-entry SQ
    let target = io.timeout(2, LONG_NS, on_unit).unwrap(); // parked on io_uring
    io.cancel(3, target, on_unit).unwrap();
    io.cancel(4, target, on_unit).unwrap();
    run_until(&mut io, &mut seen, |seen| (1..=4).all(|t| has(seen, t)));
    assert_eq!(result_of(&seen, 2), libc::ECANCELED);
    assert_eq!(result_of(&seen, 3), 0);
    assert_eq!(
        result_of(&seen, 4),
        libc::EALREADY,
        "the answer to a second cancel depends on whether the SQ was full"
    );
}

fn on_stop_then_panic(seen: &mut Seen, io: &mut Io<Seen>, tag: Tag, result: io::Result<()>) {
    io.stop();
    on_unit_panic(seen, io, tag, result);
}

/// Records its result and schedules a nop with the next tag.
fn on_unit_then_nop(seen: &mut Seen, io: &mut Io<Seen>, tag: Tag, result: io::Result<()>) {
    on_unit(seen, io, tag, result);
    io.nop(tag + 1, on_unit).unwrap();
}

/// A callback calls `stop`, then panics (or another callback of its turn panics). The panic
/// ends that run; the stop was meant for it. Today the request survives the unwind, and the
/// next `run_until_idle` (or `run_for_ns`) returns after its first turn with work in flight,
/// on every backend.
#[test]
fn a_stop_from_a_callback_that_panicked_does_not_end_the_next_run() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    io.nop(1, on_stop_then_panic).unwrap();
    let outcome = catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut seen)));
    assert!(outcome.is_err(), "the planted panic reaches the caller");
    assert_eq!(io.in_flight(), 0);
    // Two turns of work: the timeout's callback schedules a nop.
    io.timeout(2, 1_000_000, on_unit_then_nop).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(
        io.in_flight(),
        0,
        "run_until_idle returned with work in flight: a stale stop ended it"
    );
    assert_eq!(result_of(&seen, 3), 0);
}

/// Panics in consecutive turns, in the first and in the last callback of one batch: each
/// callback runs exactly once, in completion order, and the loop ends idle.
#[test]
fn panics_in_consecutive_turns_run_every_callback_once() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let mut seen = Seen::default();
    io.nop(1, on_unit_panic).unwrap();
    io.nop(2, on_unit_panic).unwrap();
    io.nop(3, on_unit).unwrap();
    io.nop(4, on_unit_panic).unwrap();
    let mut panics = 0;
    for _ in 0..10 {
        match catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut seen))) {
            Ok(result) => {
                result.unwrap();
                break;
            }
            Err(_) => panics += 1,
        }
    }
    assert_eq!(panics, 3);
    assert_eq!(io.in_flight(), 0);
    let tags: Vec<Tag> = seen.results.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(tags, vec![1, 2, 3, 4], "each callback once, in order");
}

/// Schedules a nop (tag + 1), cancels the operation in `TARGET` (tag + 2), then panics.
fn on_schedule_cancel_panic(seen: &mut Seen, io: &mut Io<Seen>, tag: Tag, result: io::Result<()>) {
    io.nop(tag + 1, on_unit).unwrap();
    let target = TARGET.with(|target| target.get().expect("the target's id"));
    io.cancel(tag + 2, target, on_unit).unwrap();
    on_unit_panic(seen, io, tag, result);
}

thread_local! {
    static TARGET: std::cell::Cell<Option<dispatch_loop::OpId>> =
        const { std::cell::Cell::new(None) };
}

/// A callback schedules an operation and cancels another, then panics: what it scheduled and
/// cancelled goes ahead on the next run, each callback exactly once; the parked and the
/// in-kernel paths both (one-entry SQ on io_uring).
#[test]
fn a_panicking_callback_keeps_what_it_scheduled_and_cancelled() {
    let Some(mut io) = check::io::<Seen>(&parking(8)) else {
        return;
    };
    let mut seen = Seen::default();
    let target = io.timeout(1, LONG_NS, on_unit).unwrap();
    TARGET.with(|cell| cell.set(Some(target)));
    io.tick(&mut seen).unwrap();
    io.nop(10, on_schedule_cancel_panic).unwrap();
    io.nop(20, on_unit).unwrap(); // completes in the same batch, after the panic
    let outcome = catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut seen)));
    assert!(outcome.is_err());
    run_until(&mut io, &mut seen, |seen| {
        [1, 11, 12, 20].iter().all(|&t| has(seen, t))
    });
    assert_eq!(result_of(&seen, 10), 0);
    assert_eq!(
        result_of(&seen, 11),
        0,
        "the nop scheduled before the panic"
    );
    assert_eq!(
        result_of(&seen, 12),
        0,
        "the cancel issued before the panic"
    );
    assert_eq!(result_of(&seen, 1), libc::ECANCELED);
    assert_eq!(result_of(&seen, 20), 0, "the rest of the batch");
    assert_eq!(io.in_flight(), 0);
}

/// A cancel parked behind a full SQ whose target completes first, and whose target's slot
/// is reused at once by the target's own callback: the cancel must reach nothing but its
/// target (ids are 64-bit; the kernel sees the low 32 bits of the generation).
#[test]
fn a_parked_cancel_whose_target_completed_cancels_nothing_else() {
    fn on_recv_then_timeout(seen: &mut Seen, io: &mut Io<Seen>, tag: Tag, result: BufResult) {
        on_buf(seen, io, tag, result);
        // The slot the recv just released is reused first (the free list is LIFO).
        io.timeout(10, LONG_NS, on_unit).unwrap();
    }
    let Some(mut io) = check::io::<Seen>(&parking(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let (socket, peer) = UnixStream::pair().unwrap();
    let recv = io
        .recv(
            1,
            socket.as_raw_fd(),
            Vec::with_capacity(8),
            on_recv_then_timeout,
        )
        .unwrap();
    io.tick(&mut seen).unwrap();
    std::io::Write::write_all(&mut &peer, b"12345678").unwrap();
    io.nop(2, on_unit).unwrap(); // fills the one-entry SQ
    io.cancel(3, recv, on_unit).unwrap(); // parked on io_uring
    run_until(&mut io, &mut seen, |seen| {
        [1, 2, 3].iter().all(|&t| has(seen, t))
    });
    let recv_errno = result_of(&seen, 1);
    assert!(
        recv_errno == 0 || recv_errno == libc::ECANCELED,
        "recv: {recv_errno}"
    );
    let cancel_errno = result_of(&seen, 3);
    assert!(
        cancel_errno == 0 || cancel_errno == libc::ENOENT,
        "cancel: {cancel_errno}"
    );
    // One more slice: a stray cancel would complete the new timeout with ECANCELED.
    io.run_for_ns(&mut seen, 10_000_000).unwrap();
    assert!(
        !has(&seen, 10),
        "the timeout in the recv's old slot was cancelled"
    );
    assert_eq!(io.in_flight(), 1);
}

/// Builds a loop holding operations in every slot state, with a panic's batch remainder,
/// then drops it: an operation in the kernel and one being cancelled there, a cancel in the
/// kernel, parked operations (a timeout, a close, a cancel of an in-kernel operation) on
/// io_uring, and the rest of a batch cut short by a panic (a performed close, an opened
/// file, a nop). Nothing is closed twice, nothing leaks, and the drop neither panics nor
/// waits for the kernel (the parent checks that it said nothing).
fn drop_in_every_state() {
    let (socket, peer) = UnixStream::pair().unwrap();
    let before = open_fds();
    let victim;
    {
        let Some(mut io) = check::io::<Seen>(&parking(8)) else {
            return;
        };
        let mut seen = Seen::default();
        let in_kernel = io.timeout(1, LONG_NS, on_unit).unwrap();
        let cancelled_in_kernel = io.timeout(2, LONG_NS, on_unit).unwrap();
        io.recv(3, socket.as_raw_fd(), Vec::with_capacity(8), on_buf)
            .unwrap();
        io.tick(&mut seen).unwrap();
        assert!(seen.results.is_empty());
        // A batch whose first callback panics; the rest stays queued.
        let closed = File::open("/dev/null").unwrap();
        io.nop(4, on_unit_panic).unwrap();
        io.close(5, closed.into(), on_unit).unwrap();
        let path = CString::new("/dev/null").unwrap();
        io.openat(6, AT_FDCWD, path, libc::O_RDONLY, 0, on_fd)
            .unwrap();
        io.nop(7, on_unit).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut seen)));
        assert!(outcome.is_err());
        // May take the number the close released: the drop must not close it.
        victim = File::open("/dev/zero").unwrap();
        let parked_before = io.stats().overflow_parked;
        // The SQ is empty after the turn: this cancel goes to the kernel, and fills it.
        io.cancel(8, cancelled_in_kernel, on_unit).unwrap();
        // Parked on io_uring.
        io.timeout(9, LONG_NS, on_unit).unwrap();
        let parked_close = File::open("/dev/null").unwrap();
        io.close(10, parked_close.into(), on_unit).unwrap();
        io.cancel(11, in_kernel, on_unit).unwrap();
        if check::on_io_uring(&io) {
            assert_eq!(
                io.stats().overflow_parked - parked_before,
                3,
                "three parked"
            );
        }
        drop(io);
        assert_eq!(seen.results, vec![(4, 0)], "no callback runs on drop");
    }
    assert!(
        rustix::io::fcntl_getfd(&victim).is_ok(),
        "the loop's drop closed a descriptor it did not own"
    );
    drop(victim);
    assert_eq!(
        open_fds(),
        before,
        "a descriptor leaked or was closed twice"
    );
    drop((socket, peer));
}

#[test]
fn drop_releases_every_slot_state_exactly_once() {
    match check::child_role().as_deref() {
        Some("drop-every-state") => return drop_in_every_state(),
        Some(_) => return,
        None => {}
    }
    let test = "review::drop_releases_every_slot_state_exactly_once";
    let backend = std::env::var(dispatch_loop::BACKEND_ENV).ok();
    let output = check::in_child(test, "drop-every-state", backend.as_deref());
    assert!(
        check::loop_complaints(&output).is_empty(),
        "the loop complained on drop:\n{output}"
    );
}

/// An open blocked in an io_uring kernel worker (a FIFO without a writer), dropped with the
/// loop: the drop's cancel interrupts it, the drop returns at once, and nothing leaks.
fn drop_with_an_open_blocked_in_a_worker() {
    let before = open_fds();
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    if !check::on_io_uring(&io) {
        eprintln!("skipped: readiness backends perform openat inline");
        return;
    }
    let mut seen = Seen::default();
    let path = check::temp_path("review-fifo");
    let _ = std::fs::remove_file(&path);
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let flags = libc::O_RDONLY | libc::O_CREAT;
    io.openat(1, AT_FDCWD, c_path, flags, 0o600, on_fd).unwrap();
    io.run_for_ns(&mut seen, 20_000_000).unwrap();
    assert!(
        seen.results.is_empty(),
        "the open blocks until a writer comes"
    );
    drop(io);
    std::fs::remove_file(&path).unwrap();
    assert!(seen.fds.is_empty());
    assert_eq!(open_fds(), before, "a descriptor leaked");
}

#[test]
fn dropping_a_loop_with_an_open_blocked_in_a_worker_is_prompt() {
    match check::child_role().as_deref() {
        Some("drop-blocked-open") => return drop_with_an_open_blocked_in_a_worker(),
        Some(_) => return,
        None => {}
    }
    let test = "review::dropping_a_loop_with_an_open_blocked_in_a_worker_is_prompt";
    let backend = std::env::var(dispatch_loop::BACKEND_ENV).ok();
    let output = check::in_child(test, "drop-blocked-open", backend.as_deref());
    assert!(
        check::loop_complaints(&output).is_empty(),
        "the loop complained on drop:\n{output}"
    );
}

#[derive(Default)]
struct Accepts {
    panicked: bool,
    stale: Option<dispatch_loop::OpId>,
    accepted: Vec<OwnedFd>,
    finals: u32,
}

/// The first connection's callback panics; each later one cancels a stale operation, a
/// cancel that completes at once (`ENOENT`).
fn on_accept_panic_then_cancel(
    ctx: &mut Accepts,
    io: &mut Io<Accepts>,
    _: Tag,
    shot: dispatch_loop::Shot<OwnedFd>,
) {
    if let Ok(fd) = shot.result {
        ctx.accepted.push(fd);
    }
    if !shot.more {
        ctx.finals += 1;
    }
    if !ctx.panicked {
        ctx.panicked = true;
        panic!("a planted panic in an accept callback");
    }
    let stale = ctx.stale.expect("a stale id");
    let _ = io.cancel(0, stale, |_, _, _, _| {});
}

/// A batch cut short by a panic keeps its rest in the completed queue, and the next turn
/// reaps as many results as the queue has room for: a multishot accept with a backlog fills
/// it. A callback of that rest then schedules a cancel that completes at once (of a stale
/// id): `complete_now` finds no room and panics ("completed queue never grows") after
/// marking the cancel's slot `Completed`, a slot no queue holds any more. That slot stays
/// in flight forever, and `Drop` panics on it (io_uring, whose kernel multishot accept
/// delivers a backlog in one turn; readiness backends accept one connection per turn).
#[test]
fn a_cancel_after_a_panic_finds_room_in_the_completed_queue() {
    const CLIENTS: usize = 24;
    let Some(mut io) = check::io::<Accepts>(&Options::new(2)) else {
        return;
    };
    let mut ctx = Accepts {
        stale: Some(io.nop(0, |_, _, _, _| {}).unwrap()),
        ..Accepts::default()
    };
    io.run_until_idle(&mut ctx).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| std::net::TcpStream::connect(address).unwrap())
        .collect();
    let accept = io
        .accept_multishot(1, listener.as_raw_fd(), on_accept_panic_then_cancel)
        .unwrap();
    let mut panics = Vec::new();
    for _ in 0..100 {
        if ctx.accepted.len() == CLIENTS {
            break;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| io.run_for_ns(&mut ctx, 10_000_000)));
        if let Err(panic) = outcome {
            panics.push(panic_message(&panic));
        }
    }
    let accepted = ctx.accepted.len();
    let _ = io.cancel(2, accept, |_, _, _, _| {});
    for _ in 0..100 {
        if io.in_flight() == 0 {
            break;
        }
        if catch_unwind(AssertUnwindSafe(|| io.run_for_ns(&mut ctx, 10_000_000))).is_err() {
            panics.push("a panic while finishing".into());
        }
    }
    let in_flight = io.in_flight();
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(io)));
    drop(clients);
    assert_eq!(
        panics,
        vec!["a planted panic in an accept callback".to_string()],
        "only the planted panic"
    );
    assert_eq!(accepted, CLIENTS);
    assert_eq!(in_flight, 0, "a slot is in flight forever");
    assert!(dropped.is_ok(), "Drop panicked");
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        return (*message).to_string();
    }
    panic
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| "?".into())
}
