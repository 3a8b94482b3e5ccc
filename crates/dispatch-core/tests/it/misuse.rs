//! Safe code that misbehaves, and the loop's answers: a callback that panics, a descriptor
//! closed under a pending operation, cancels on a full loop or twice in a turn, a push that
//! fails for want of SQ room, a stop requested from a callback or another thread. Each test
//! here reproduces a bug an independent review found; each runs on every backend.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};

use dispatch_loop::{BufResult, Io, OpId, Options, Tag, AT_FDCWD};

use crate::check;
use crate::drop_in_flight::open_fds;

/// What the callbacks saw, by tag: the errno (0 for success) or, for descriptors, the value.
#[derive(Default)]
struct Seen {
    results: Vec<(Tag, i32)>,
    fds: Vec<OwnedFd>,
    bufs: Vec<Vec<u8>>,
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

fn on_count(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: io::Result<u64>) {
    seen.results.push((tag, code(&result)));
}

fn on_buf(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, (result, buf): BufResult) {
    seen.results.push((tag, code(&result)));
    seen.bufs.push(buf);
}

fn on_fd(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: io::Result<OwnedFd>) {
    seen.results.push((tag, code(&result)));
    if let Ok(fd) = result {
        seen.fds.push(fd);
    }
}

fn on_panic(_: &mut Seen, _: &mut Io<Seen>, _: Tag, _: io::Result<()>) {
    panic!("a planted panic in a callback");
}

fn result_of(seen: &Seen, tag: Tag) -> i32 {
    let mut found = seen.results.iter().filter(|(t, _)| *t == tag);
    let (_, errno) = found
        .next()
        .unwrap_or_else(|| panic!("no callback for tag {tag}"));
    assert!(found.next().is_none(), "two callbacks for tag {tag}");
    *errno
}

/// The io_uring backend recorded a wake-up wait's side state before a push that failed for
/// want of SQ room; once that slot was reused, a nop made `reap` panic ("eventfd read of 0
/// bytes"), a recv reported a false end of stream. Every operation must report its own
/// result, whatever failed pushes came before in its slot.
#[test]
fn a_failed_push_leaves_nothing_behind_in_its_slot() {
    let mut options = Options::new(8);
    options.uring.sq_entries = 1;
    let Some(mut io) = check::io::<Seen>(&options) else {
        return;
    };
    let mut seen = Seen::default();
    io.nop(1, on_unit).unwrap();
    // The SQ (one entry) is full: on io_uring this wait is parked.
    let wait = io.wait_wakeup(2, on_count).unwrap();
    io.cancel(3, wait, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 2), libc::ECANCELED);
    // Every slot the wait could have used now serves a recv of 8 bytes that arrive.
    let (socket, peer) = UnixStream::pair().unwrap();
    for tag in 10..18 {
        io.recv(tag, socket.as_raw_fd(), Vec::with_capacity(8), on_buf)
            .unwrap();
    }
    for _ in 0..8 {
        std::io::Write::write_all(&mut &peer, b"12345678").unwrap();
    }
    io.run_until_idle(&mut seen).unwrap();
    for tag in 10..18 {
        assert_eq!(result_of(&seen, tag), 0);
    }
    assert!(seen.bufs.iter().all(|buf| buf == b"12345678"));
    // And nops in those slots, which the kernel answers with 0.
    for tag in 20..28 {
        io.nop(tag, on_unit).unwrap();
    }
    io.run_until_idle(&mut seen).unwrap();
    assert!((20..28).all(|tag| result_of(&seen, tag) == 0));
}

/// A callback that panics in the middle of a batch: the panic reaches the caller, the rest
/// of the batch runs on the next turn (exactly once), the loop keeps working, and no
/// descriptor is closed twice or leaked, whether the loop runs again or is dropped.
fn panic_in_a_batch(run_again: bool) {
    let before = open_fds();
    let victim;
    {
        let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
            return;
        };
        let mut seen = Seen::default();
        let closed = std::fs::File::open("/dev/null").unwrap();
        io.nop(1, on_panic).unwrap();
        io.close(2, closed.into(), on_unit).unwrap();
        let path = CString::new("/dev/null").unwrap();
        io.openat(3, AT_FDCWD, path, libc::O_RDONLY, 0, on_fd)
            .unwrap();
        io.nop(4, on_unit).unwrap();
        let outcome = catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut seen)));
        assert!(outcome.is_err(), "the planted panic reaches the caller");
        if run_again {
            // Not "driven re-entrantly": the loop is usable after the panic.
            io.run_until_idle(&mut seen).unwrap();
            assert_eq!(io.in_flight(), 0);
            for tag in [2, 3, 4] {
                assert_eq!(result_of(&seen, tag), 0, "tag {tag}");
            }
            assert!(!seen.results.iter().any(|(tag, _)| *tag == 1));
            assert_eq!(seen.fds.len(), 1, "the opened file reached its callback");
            seen.fds.clear();
        }
        // A descriptor opened now may get the number the close released; the drop must not
        // close it again.
        victim = std::fs::File::open("/dev/zero").unwrap();
        drop(io);
    }
    assert!(
        rustix::io::fcntl_getfd(&victim).is_ok(),
        "the loop's drop closed a descriptor it did not own"
    );
    drop(victim);
    assert_eq!(open_fds(), before, "a descriptor leaked");
}

#[test]
fn a_panicking_callback_loses_nothing_and_closes_nothing_twice() {
    match check::child_role().as_deref() {
        Some("panic-run") => return panic_in_a_batch(true),
        Some("panic-drop") => return panic_in_a_batch(false),
        Some(_) => return,
        None => {}
    }
    let test = "misuse::a_panicking_callback_loses_nothing_and_closes_nothing_twice";
    let backend = std::env::var(dispatch_loop::BACKEND_ENV).ok();
    check::in_child(test, "panic-run", backend.as_deref());
    check::in_child(test, "panic-drop", backend.as_deref());
}

/// The caller closes a descriptor under a pending recv (its bug), then cancels the recv:
/// both callbacks run, the loop goes idle, and the drop neither panics nor waits for the
/// kernel. Without the cancel, the drop is just as prompt.
fn close_under_a_pending_recv(cancel: bool) {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let mut seen = Seen::default();
    let (socket, _peer) = UnixStream::pair().unwrap();
    let recv = io
        .recv(1, socket.as_raw_fd(), Vec::with_capacity(8), on_buf)
        .unwrap();
    io.tick(&mut seen).unwrap();
    assert_eq!(io.in_flight(), 1, "the recv waits for data");
    drop(socket);
    if cancel {
        io.cancel(2, recv, on_unit).unwrap();
        // Bounded: a loop that lost the recv would return here with it still in flight.
        io.run_for_ns(&mut seen, 2_000_000_000).unwrap();
        assert_eq!(io.in_flight(), 0, "every callback ran");
        let recv_errno = result_of(&seen, 1);
        assert!(
            recv_errno == libc::ECANCELED || recv_errno == libc::EBADF,
            "recv: errno {recv_errno}"
        );
        let cancel_errno = result_of(&seen, 2);
        assert!(
            cancel_errno == 0 || cancel_errno == libc::ENOENT,
            "cancel: errno {cancel_errno}"
        );
    }
    drop(io);
}

#[test]
fn a_descriptor_closed_under_a_pending_recv_is_an_error_never_a_hang() {
    match check::child_role().as_deref() {
        Some("close-cancel") => return close_under_a_pending_recv(true),
        Some("close-drop") => return close_under_a_pending_recv(false),
        Some(_) => return,
        None => {}
    }
    let test = "misuse::a_descriptor_closed_under_a_pending_recv_is_an_error_never_a_hang";
    let backend = std::env::var(dispatch_loop::BACKEND_ENV).ok();
    for role in ["close-cancel", "close-drop"] {
        let output = check::in_child(test, role, backend.as_deref());
        assert!(
            check::loop_complaints(&output).is_empty(),
            "the loop complained ({role}):\n{output}"
        );
    }
}

/// Every operation slot in use: cancels have a budget of their own, so each operation can
/// still be cancelled.
#[test]
fn a_full_loop_can_cancel_every_operation() {
    let Some(mut io) = check::io::<Seen>(&Options::new(2)) else {
        return;
    };
    let mut seen = Seen::default();
    let a = io.timeout(1, 60_000_000_000, on_unit).unwrap();
    let b = io.timeout(2, 60_000_000_000, on_unit).unwrap();
    let full = io.nop(9, on_unit).unwrap_err();
    assert_eq!(
        full.kind,
        dispatch_loop::ScheduleErrorKind::SlotsExhausted { ops_max: 2 }
    );
    io.tick(&mut seen).unwrap();
    io.cancel(3, a, on_unit).unwrap();
    io.cancel(4, b, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 1), libc::ECANCELED);
    assert_eq!(result_of(&seen, 2), libc::ECANCELED);
    assert_eq!(result_of(&seen, 3), 0);
    assert_eq!(result_of(&seen, 4), 0);
}

/// Two cancels of one operation in one turn: the first cancels it, the second is told a
/// cancel is already under way, on every backend alike.
#[test]
fn a_second_cancel_of_one_operation_is_already_under_way() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let target = io.timeout(1, 60_000_000_000, on_unit).unwrap();
    io.tick(&mut seen).unwrap();
    io.cancel(2, target, on_unit).unwrap();
    io.cancel(3, target, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 1), libc::ECANCELED);
    assert_eq!(result_of(&seen, 2), 0);
    assert_eq!(result_of(&seen, 3), libc::EALREADY);
    // Once the target completed, its id is stale.
    io.cancel(4, target, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(result_of(&seen, 4), libc::ENOENT);
}

/// `stop` from a callback ends `run_for_ns(u64::MAX)` and `run_until_idle` after that turn,
/// leaving the other operations in flight.
#[test]
fn stop_from_a_callback_ends_the_run() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let pending = io.timeout(1, 60_000_000_000, on_unit).unwrap();
    io.timeout(2, 1_000_000, |seen: &mut Seen, io, tag, result| {
        on_unit(seen, io, tag, result);
        io.stop();
    })
    .unwrap();
    io.run_for_ns(&mut seen, u64::MAX).unwrap();
    assert_eq!(seen.results, vec![(2, 0)]);
    assert_eq!(io.in_flight(), 1, "the long timeout is still pending");
    io.nop(3, |seen: &mut Seen, io, tag, result| {
        on_unit(seen, io, tag, result);
        io.stop();
    })
    .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(io.in_flight(), 1, "stopped before idle");
    cancel_and_finish(&mut io, &mut seen, pending);
}

fn cancel_and_finish(io: &mut Io<Seen>, seen: &mut Seen, target: OpId) {
    io.cancel(99, target, on_unit).unwrap();
    io.run_until_idle(seen).unwrap();
    assert_eq!(io.in_flight(), 0);
}

/// Another thread stops a loop blocked in the kernel with nothing else to do: a pending
/// wake-up wait whose callback calls `stop`, and a wake.
#[test]
fn stop_from_another_thread_ends_a_blocked_run() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let mut seen = Seen::default();
    let pending = io.timeout(1, 60_000_000_000, on_unit).unwrap();
    io.wait_wakeup(2, |seen: &mut Seen, io, tag, count| {
        on_count(seen, io, tag, count);
        io.stop();
    })
    .unwrap();
    let waker = io.waker();
    let thread = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        waker.wake().unwrap();
    });
    io.run_for_ns(&mut seen, u64::MAX).unwrap();
    thread.join().unwrap();
    assert_eq!(seen.results, vec![(2, 0)]);
    cancel_and_finish(&mut io, &mut seen, pending);
}

/// An openat blocked in a kernel worker (a FIFO with no writer) and cancelled: the target
/// gets the documented `ECANCELED`, not the kernel-internal `ERESTARTSYS` (512). Only
/// io_uring performs openat off the loop's thread; readiness backends run it inline, where
/// it would block the loop (documented on `Io::openat`), so they skip this test.
#[test]
fn a_cancelled_openat_in_a_kernel_worker_reports_ecanceled() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    if !check::on_io_uring(&io) {
        eprintln!("skipped: readiness backends perform openat inline");
        return;
    }
    let mut seen = Seen::default();
    let path = check::temp_path("fifo");
    let _ = std::fs::remove_file(&path);
    let c_path = CString::new(path.to_str().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
    let open = io
        .openat(
            1,
            AT_FDCWD,
            c_path,
            libc::O_RDONLY | libc::O_CREAT,
            0o600,
            on_fd,
        )
        .unwrap();
    // Let the open reach its worker and block there.
    io.run_for_ns(&mut seen, 20_000_000).unwrap();
    assert!(
        seen.results.is_empty(),
        "the open blocks until a writer comes"
    );
    io.cancel(2, open, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(result_of(&seen, 1), libc::ECANCELED);
}
