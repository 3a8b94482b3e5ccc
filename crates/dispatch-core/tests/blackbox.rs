//! Black-box tests of dispatch-loop, written from its public documentation only.
//!
//! Every test runs on the backend `DISPATCH_BACKEND` selects (run the binary once per
//! backend), and on io_uring also with the provided-buffer ring, multishot and `EXT_ARG`
//! masked, and on epoll also with `epoll_pwait2` off. Waits are bounded by scheduled
//! timeouts or `run_for_ns`, never by wall-clock upper bounds.

use std::ffi::CString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dispatch_loop::{
    BackendKind, DeadlineError, InitError, Io, OpId, Options, PoolBuf, PoolOptions,
    ScheduleErrorKind, Shot, Tag, AT_FDCWD, BACKEND_ENV,
};

const MS: u64 = 1_000_000;
/// Bounds a test that fails: a sentinel timer that should never fire in a passing run.
const LONG: u64 = 5_000_000_000;

type Answer = Result<(), i32>;

fn answer<T>(r: &io::Result<T>) -> Answer {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e.raw_os_error().unwrap_or(-1)),
    }
}

fn backend() -> BackendKind {
    static B: OnceLock<BackendKind> = OnceLock::new();
    *B.get_or_init(|| {
        let io: Io<()> = Io::new(&Options::new(1)).expect("a backend");
        io.stats().backend
    })
}

/// The options to test with: `base`, plus the fallbacks of the backend in use.
fn variants(base: Options) -> Vec<(&'static str, Options)> {
    let mut v = vec![("default", base)];
    match backend() {
        BackendKind::IoUring => {
            let mut m = base;
            m.uring.pbuf_ring = false;
            m.uring.multishot = false;
            v.push(("uring: pbuf_ring=false multishot=false", m));
            let mut e = base;
            e.uring.ext_arg = false;
            v.push(("uring: ext_arg=false", e));
        }
        BackendKind::Epoll => {
            let mut m = base;
            m.epoll_pwait2 = false;
            v.push(("epoll: epoll_pwait2=false", m));
        }
        _ => {}
    }
    v
}

fn pooled(ops_max: u32, buffers: u32, buffer_size: u32) -> Options {
    let mut o = Options::new(ops_max);
    o.pool = PoolOptions::new(buffers, buffer_size);
    o
}

fn new<C>(name: &str, o: &Options) -> Io<C> {
    Io::new(o).unwrap_or_else(|e| panic!("[{name}] Io::new: {e}"))
}

fn temp_path(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "dispatch-blackbox-{}-{}-{}-{}",
        std::process::id(),
        backend().name(),
        what,
        n
    ))
}

fn is_nonblocking<F: AsFd>(fd: F) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .unwrap()
        .contains(rustix::fs::OFlags::NONBLOCK)
}

fn is_cloexec<F: AsFd>(fd: F) -> bool {
    rustix::io::fcntl_getfd(fd)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC)
}

type Log = Vec<(Tag, Answer)>;

fn log_unit(log: &mut Log, _: &mut Io<Log>, tag: Tag, r: io::Result<()>) {
    log.push((tag, answer(&r)));
}

fn answers(log: &Log, tag: Tag) -> Vec<Answer> {
    log.iter()
        .filter(|(t, _)| *t == tag)
        .map(|(_, a)| *a)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Io::cancel answers
// ---------------------------------------------------------------------------------------

/// Io::cancel: "Ok(()) when the target was cancelled"; the target's callback runs once with
/// ECANCELED (Io::timeout: "or with ECANCELED if cancelled first").
#[test]
fn cancel_of_pending_timeout_answers_ok_and_target_gets_ecanceled() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let target = io.timeout(1, LONG, log_unit).unwrap();
        io.cancel(100, target, log_unit).unwrap();
        assert_eq!(io.in_flight(), 2, "[{name}] cancels count in in_flight");
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(answers(&log, 100), vec![Ok(())], "[{name}]");
        assert_eq!(io.in_flight(), 0, "[{name}]");
        assert_eq!(io.stats().ops_completed, 2, "[{name}]");
    }
}

/// Io::cancel: "ENOENT when there was nothing to cancel (the target completed, or a stale id)".
#[test]
fn cancel_of_completed_operation_answers_enoent() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let nop = io.nop(1, log_unit).unwrap();
        let timer = io.timeout(2, MS, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        io.cancel(100, nop, log_unit).unwrap();
        io.cancel(101, timer, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Ok(())], "[{name}]");
        assert_eq!(answers(&log, 2), vec![Ok(())], "[{name}]");
        assert_eq!(answers(&log, 100), vec![Err(libc::ENOENT)], "[{name}]");
        assert_eq!(answers(&log, 101), vec![Err(libc::ENOENT)], "[{name}]");
    }
}

/// OpId: "Stale ids (the operation already completed) are detected by a 64-bit generation
/// count ... and cancel nothing", even when the slot was reused by a newer operation.
#[test]
fn cancel_of_stale_id_does_not_cancel_the_slots_new_operation() {
    for (name, o) in variants(Options::new(1)) {
        let mut io: Io<Log> = new(name, &o);
        let old = io.timeout(1, 0, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        // ops_max == 1: the new timer must reuse the only slot.
        let new_id = io.timeout(2, 20 * MS, log_unit).unwrap();
        assert_ne!(old, new_id, "[{name}] a reused slot gets a new id");
        io.cancel(100, old, log_unit).unwrap();
        assert_eq!(
            io.set_deadline(old, MS),
            Err(DeadlineError::NotInFlight),
            "[{name}]"
        );
        assert_eq!(
            io.clear_deadline(old),
            Err(DeadlineError::NotInFlight),
            "[{name}]"
        );
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 100), vec![Err(libc::ENOENT)], "[{name}]");
        assert_eq!(
            answers(&log, 2),
            vec![Ok(())],
            "[{name}] the new timer is untouched"
        );
    }
}

/// Io::cancel: "EALREADY when the target is a close (which cannot be stopped)";
/// Io::close: "A close cannot be cancelled (a cancel of it answers EALREADY)".
#[test]
fn cancel_of_close_answers_ealready_and_the_close_happens() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let (ours, mut peer) = UnixStream::pair().unwrap();
        let close = io.close(1, OwnedFd::from(ours), log_unit).unwrap();
        io.cancel(100, close, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 100), vec![Err(libc::EALREADY)], "[{name}]");
        assert_eq!(answers(&log, 1), vec![Ok(())], "[{name}]");
        let mut b = [0u8; 4];
        assert_eq!(
            peer.read(&mut b).unwrap(),
            0,
            "[{name}] the close really closed"
        );
    }
}

/// Io::cancel: "EALREADY when ... a cancel of the same target is already in flight".
#[test]
fn second_cancel_of_same_target_answers_ealready() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let target = io.timeout(1, LONG, log_unit).unwrap();
        io.cancel(100, target, log_unit).unwrap();
        io.cancel(101, target, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(answers(&log, 100), vec![Ok(())], "[{name}]");
        assert_eq!(answers(&log, 101), vec![Err(libc::EALREADY)], "[{name}]");
    }
}

/// Io::cancel: a cancel of the same target after the first cancel's callback ran is a cancel
/// of a completed operation: ENOENT.
#[test]
fn cancel_after_cancel_completed_answers_enoent() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let target = io.timeout(1, LONG, log_unit).unwrap();
        io.cancel(100, target, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        io.cancel(101, target, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 101), vec![Err(libc::ENOENT)], "[{name}]");
    }
}

/// Io::cancel: "The target's callback still runs exactly once: with ECANCELED, or with its
/// real result if it completed first"; the cancel answers Ok or ENOENT accordingly.
#[test]
fn cancel_racing_a_completing_target_runs_target_once() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        let nop = io.nop(1, log_unit).unwrap();
        io.cancel(100, nop, log_unit).unwrap();
        let t0 = io.timeout(2, 0, log_unit).unwrap();
        io.cancel(101, t0, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        for (target, cancel) in [(1, 100), (2, 101)] {
            let t = answers(&log, target);
            let c = answers(&log, cancel);
            assert_eq!(t.len(), 1, "[{name}] target runs exactly once: {log:?}");
            assert_eq!(c.len(), 1, "[{name}] cancel runs exactly once: {log:?}");
            match c[0] {
                Ok(()) => assert!(
                    t[0] == Err(libc::ECANCELED) || t[0] == Ok(()),
                    "[{name}] {log:?}"
                ),
                Err(libc::ENOENT) => assert_eq!(t[0], Ok(()), "[{name}] {log:?}"),
                other => panic!("[{name}] unexpected cancel answer {other:?}"),
            }
        }
    }
}

/// Io::cancel from a callback, and of a pending receive: the buffer comes back with the
/// ECANCELED result (BufResult: "handed back whatever happened").
#[test]
fn cancel_of_pending_recv_from_a_callback_returns_the_buffer() {
    struct C {
        recv: Option<OpId>,
        got: Vec<(Answer, Vec<u8>)>,
        log: Vec<(Tag, Answer)>,
    }
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<C> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(b"ab");
        let recv = io
            .recv(7, sock.as_raw_fd(), buf, |c, _, tag, (r, buf)| {
                assert_eq!(tag, 7);
                c.got.push((answer(&r), buf));
            })
            .unwrap();
        io.timeout(1, MS, |c, io, _, r| {
            r.unwrap();
            let target = c.recv.unwrap();
            io.cancel(100, target, |c, _, t, r| c.log.push((t, answer(&r))))
                .unwrap();
        })
        .unwrap();
        let mut c = C {
            recv: Some(recv),
            got: vec![],
            log: vec![],
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.log, vec![(100, Ok(()))], "[{name}]");
        assert_eq!(c.got.len(), 1, "[{name}]");
        assert_eq!(c.got[0].0, Err(libc::ECANCELED), "[{name}]");
        assert_eq!(
            c.got[0].1, b"ab",
            "[{name}] the buffer comes back unchanged"
        );
        assert_eq!(c.got[0].1.capacity(), 64, "[{name}] the same buffer");
    }
}

/// Io::cancel of a wait_wakeup: Ok, and the wait gets ECANCELED.
#[test]
fn cancel_of_wait_wakeup() {
    struct C {
        wait: Vec<Answer>,
        log: Log,
    }
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<C> = new(name, &o);
        let wait = io
            .wait_wakeup(1, |c, _, _, r| c.wait.push(answer(&r)))
            .unwrap();
        io.cancel(100, wait, |c, _, t, r| c.log.push((t, answer(&r))))
            .unwrap();
        let mut c = C {
            wait: vec![],
            log: vec![],
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.wait, vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(c.log, vec![(100, Ok(()))], "[{name}]");
    }
}

// ---------------------------------------------------------------------------------------
// Slot and cancel budgets
// ---------------------------------------------------------------------------------------

/// Options::ops_max: "Scheduling past it returns SlotsExhausted"; Io::cancel: "Cancels have a
/// budget of their own ... so a loop whose every operation slot is in use can still cancel
/// each of its operations"; "SlotsExhausted when ops_max cancels are already in flight".
#[test]
fn full_loop_can_cancel_each_operation_and_no_more() {
    for (name, o) in variants(Options::new(3)) {
        let mut io: Io<Log> = new(name, &o);
        let ids: Vec<OpId> = (0..3)
            .map(|i| io.timeout(i, LONG, log_unit).unwrap())
            .collect();
        let err = io.timeout(9, LONG, log_unit).unwrap_err();
        assert_eq!(
            err.kind,
            ScheduleErrorKind::SlotsExhausted { ops_max: 3 },
            "[{name}]"
        );
        let err = io.nop(9, log_unit).unwrap_err();
        assert_eq!(
            err.into_kind(),
            ScheduleErrorKind::SlotsExhausted { ops_max: 3 }
        );
        for (i, id) in ids.iter().enumerate() {
            io.cancel(100 + i as u64, *id, log_unit)
                .unwrap_or_else(|e| panic!("[{name}] cancel {i} of a full loop: {e}"));
        }
        let err = io.cancel(199, ids[0], log_unit).unwrap_err();
        assert_eq!(
            err.kind,
            ScheduleErrorKind::SlotsExhausted { ops_max: 3 },
            "[{name}]"
        );
        assert_eq!(io.in_flight(), 6, "[{name}]");
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        for i in 0..3 {
            assert_eq!(answers(&log, i), vec![Err(libc::ECANCELED)], "[{name}]");
            assert_eq!(answers(&log, 100 + i), vec![Ok(())], "[{name}]");
        }
        assert!(
            answers(&log, 9).is_empty() && answers(&log, 199).is_empty(),
            "[{name}]"
        );
        // Both budgets are free again.
        for i in 0..3 {
            io.nop(200 + i, log_unit).unwrap();
        }
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(io.stats().ops_completed, 9, "[{name}]");
    }
}

/// Options::ops_max counts "each from its scheduling until its callback has started": a
/// callback may schedule into its own slot, and from a full loop still cancel everything.
#[test]
fn callback_of_full_loop_can_reschedule_and_cancel_everything() {
    struct C {
        ids: Vec<OpId>,
        log: Log,
        full: Option<ScheduleErrorKind>,
    }
    fn on_short(c: &mut C, io: &mut Io<C>, _: Tag, r: io::Result<()>) {
        r.unwrap();
        let long2 = io
            .timeout(3, LONG, |c, _, t, r| c.log.push((t, answer(&r))))
            .expect("the callback's own slot is free once it started");
        c.full = io
            .timeout(4, LONG, |c, _, t, r| c.log.push((t, answer(&r))))
            .err()
            .map(|e| e.kind);
        c.ids.push(long2);
        for (i, id) in c.ids.clone().into_iter().enumerate() {
            io.cancel(100 + i as u64, id, |c, _, t, r| c.log.push((t, answer(&r))))
                .expect("a full loop can cancel each operation");
        }
    }
    for (name, o) in variants(Options::new(2)) {
        let mut io: Io<C> = new(name, &o);
        let long1 = io
            .timeout(1, LONG, |c, _, t, r| c.log.push((t, answer(&r))))
            .unwrap();
        io.timeout(2, MS, on_short).unwrap();
        let mut c = C {
            ids: vec![long1],
            log: vec![],
            full: None,
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(
            c.full,
            Some(ScheduleErrorKind::SlotsExhausted { ops_max: 2 }),
            "[{name}]"
        );
        assert_eq!(answers(&c.log, 1), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(answers(&c.log, 3), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(answers(&c.log, 100), vec![Ok(())], "[{name}]");
        assert_eq!(answers(&c.log, 101), vec![Ok(())], "[{name}]");
    }
}

/// ScheduleError: "Nothing is lost: the error carries back the value the operation would
/// have consumed (its buffer or descriptor)"; Io::close: "the error returns fd, still open".
#[test]
fn schedule_errors_return_their_values() {
    for (name, o) in variants(pooled(1, 2, 64)) {
        let mut io: Io<Log> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        // Get a PoolBuf first, while the slot is free.
        struct P(Option<PoolBuf>);
        let mut pio: Io<P> = new(name, &o);
        peer.write_all(b"pooled").unwrap();
        pio.recv_pooled(0, sock.as_raw_fd(), |p, _, _, shot| {
            p.0 = Some(shot.result.unwrap());
        })
        .unwrap();
        let mut p = P(None);
        pio.run_until_idle(&mut p).unwrap();
        let pbuf = p.0.take().unwrap();
        assert_eq!(&pbuf[..], b"pooled");
        pio.timeout(0, LONG, |_, _, _, _| {}).unwrap();
        let err = pio
            .send_pooled(0, sock.as_raw_fd(), pbuf, |_, _, _, _| {})
            .unwrap_err();
        assert_eq!(
            err.kind,
            ScheduleErrorKind::SlotsExhausted { ops_max: 1 },
            "[{name}]"
        );
        assert_eq!(
            &err.value[..],
            b"pooled",
            "[{name}] send_pooled returns its PoolBuf"
        );
        drop(err);
        every_operation_returns_its_value(name, &mut io, &sock);
        // Display of the error is not empty.
        let err = io.nop(1, log_unit).unwrap_err();
        assert!(!err.to_string().is_empty());
    }
}

/// The second half of `schedule_errors_return_their_values`: with the loop's one slot
/// taken, each operation hands back what it was given.
fn every_operation_returns_its_value(name: &str, io: &mut Io<Log>, sock: &UnixStream) {
    io.timeout(0, LONG, log_unit).unwrap();
    let mut buf = Vec::with_capacity(16);
    buf.extend_from_slice(b"xyz");
    let err = io
        .recv(1, sock.as_raw_fd(), buf, |_, _, _, _| {})
        .unwrap_err();
    assert_eq!(err.kind, ScheduleErrorKind::SlotsExhausted { ops_max: 1 });
    assert_eq!(err.value, b"xyz");
    assert_eq!(err.value.capacity(), 16);
    let err = io
        .send(1, sock.as_raw_fd(), b"abc".to_vec(), |_, _, _, _| {})
        .unwrap_err();
    assert_eq!(err.value, b"abc");
    let err = io
        .read(
            1,
            sock.as_raw_fd(),
            Vec::with_capacity(3),
            0,
            |_, _, _, _| {},
        )
        .unwrap_err();
    assert_eq!(err.value.capacity(), 3);
    let err = io
        .write(1, sock.as_raw_fd(), b"w".to_vec(), 0, |_, _, _, _| {})
        .unwrap_err();
    assert_eq!(err.value, b"w");
    let path = CString::new("/dev/null").unwrap();
    let err = io
        .openat(
            1,
            AT_FDCWD,
            path.clone(),
            libc::O_RDONLY,
            0,
            |_, _, _, _| {},
        )
        .unwrap_err();
    assert_eq!(err.value, path);
    let (closing, mut closing_peer) = UnixStream::pair().unwrap();
    let err = io.close(1, OwnedFd::from(closing), log_unit).unwrap_err();
    assert_eq!(err.kind, ScheduleErrorKind::SlotsExhausted { ops_max: 1 });
    let mut still_open = UnixStream::from(err.value);
    still_open.write_all(b"open").unwrap();
    let mut got = [0u8; 4];
    closing_peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"open", "[{name}] the descriptor came back open");
    let fd = sock.as_raw_fd();
    assert!(io.recv_pooled(1, fd, |_, _, _, _| {}).is_err());
    assert!(io.recv_multishot(1, fd, |_, _, _, _| {}).is_err());
    assert!(io.accept(1, sock.as_raw_fd(), |_, _, _, _| {}).is_err());
    assert!(io
        .accept_multishot(1, sock.as_raw_fd(), |_, _, _, _| {})
        .is_err());
    assert!(io.wait_wakeup(1, |_, _, _, _| {}).is_err());
    assert!(io.fsync(1, sock.as_raw_fd(), log_unit).is_err());
    assert!(io
        .shutdown(1, sock.as_raw_fd(), std::net::Shutdown::Both, log_unit)
        .is_err());
    assert!(io
        .connect(
            1,
            sock.as_raw_fd(),
            "127.0.0.1:1".parse().unwrap(),
            log_unit
        )
        .is_err());
}

/// ScheduleErrorKind::NoSpareCapacity: "A recv or read buffer has no spare capacity".
#[test]
fn recv_and_read_refuse_a_full_buffer() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<()> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        let mut full = Vec::with_capacity(4);
        full.extend_from_slice(&[1, 2, 3, 4]);
        full.shrink_to_fit();
        assert_eq!(full.len(), full.capacity());
        let err = io
            .recv(0, sock.as_raw_fd(), full, |_, _, _, _| {})
            .unwrap_err();
        assert_eq!(err.kind, ScheduleErrorKind::NoSpareCapacity, "[{name}]");
        assert_eq!(err.value, [1, 2, 3, 4]);
        let err = io
            .read(0, sock.as_raw_fd(), Vec::new(), 0, |_, _, _, _| {})
            .unwrap_err();
        assert_eq!(err.kind, ScheduleErrorKind::NoSpareCapacity, "[{name}]");
        assert_eq!(io.in_flight(), 0);
    }
}

// ---------------------------------------------------------------------------------------
// Io::stop
// ---------------------------------------------------------------------------------------

/// Io::stop: "Ends the run ... once the callbacks of the current turn have run ...
/// Operations in flight stay in flight; run the loop again to complete them."
#[test]
fn stop_from_a_callback_ends_the_run_after_the_turn() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        for tag in [1, 2] {
            io.nop(tag, |log, io, tag, r| {
                log.push((tag, answer(&r)));
                io.stop();
            })
            .unwrap();
        }
        let sentinel = io.timeout(3, LONG, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Ok(())], "[{name}] {log:?}");
        assert_eq!(
            answers(&log, 2),
            vec![Ok(())],
            "[{name}] the whole turn runs: {log:?}"
        );
        assert!(
            answers(&log, 3).is_empty(),
            "[{name}] stop ended the run early"
        );
        assert_eq!(io.in_flight(), 1, "[{name}]");
        // The same with run_for_ns.
        io.nop(4, |log, io, tag, r| {
            log.push((tag, answer(&r)));
            io.stop();
        })
        .unwrap();
        io.run_for_ns(&mut log, u64::MAX).unwrap();
        assert_eq!(answers(&log, 4), vec![Ok(())], "[{name}]");
        assert!(
            answers(&log, 3).is_empty(),
            "[{name}] run_for_ns ended by stop"
        );
        // Run again: what was in flight completes.
        io.cancel(5, sentinel, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 3), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(io.in_flight(), 0);
    }
}

/// Io::stop: "Called outside a run, it ends the next run after one turn that does not wait:
/// that turn submits what is scheduled, reaps what is ready and runs those callbacks".
#[test]
fn stop_outside_a_run_ends_the_next_run_after_one_turn() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        io.stop();
        io.nop(1, log_unit).unwrap();
        let sentinel = io.timeout(2, LONG, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(
            answers(&log, 1),
            vec![Ok(())],
            "[{name}] the first turn ran"
        );
        assert!(answers(&log, 2).is_empty(), "[{name}] the run stopped");
        // The stop is used up: the next run goes on until idle.
        io.cancel(3, sentinel, log_unit).unwrap();
        io.timeout(4, 10 * MS, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(io.in_flight(), 0, "[{name}] a stop ends one run only");
        assert_eq!(answers(&log, 4), vec![Ok(())]);
    }
}

/// Io::stop: "a Io::tick, being one turn, answers it".
#[test]
fn tick_answers_a_pending_stop() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        let mut log = Log::new();
        io.stop();
        io.tick(&mut log).unwrap();
        io.timeout(1, 10 * MS, log_unit).unwrap();
        io.nop(2, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(io.in_flight(), 0, "[{name}] the tick consumed the stop");
        assert_eq!(answers(&log, 1), vec![Ok(())], "[{name}]");
        // A stop asked by a callback during tick is answered by that tick too.
        io.nop(3, |log, io, tag, r| {
            log.push((tag, answer(&r)));
            io.stop();
        })
        .unwrap();
        io.tick(&mut log).unwrap();
        assert_eq!(
            answers(&log, 3),
            vec![Ok(())],
            "[{name}] a nop completes on the next turn"
        );
        io.timeout(5, 10 * MS, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(
            io.in_flight(),
            0,
            "[{name}] the tick consumed the callback's stop"
        );
    }
}

/// Io::stop: "From another thread ... keep a Io::wait_wakeup pending whose callback calls
/// stop, and call Waker::wake: the wake-up ends the wait in the kernel at once".
#[test]
fn stop_from_another_thread_through_wait_wakeup() {
    #[derive(Default)]
    struct C {
        woke: Vec<u64>,
        sentinel: bool,
    }
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<C> = new(name, &o);
        io.wait_wakeup(1, |c, io, _, n| {
            c.woke.push(n.expect("wait_wakeup"));
            io.stop();
        })
        .unwrap();
        let sentinel = io
            .timeout(2, LONG, |c, io, _, r| {
                if r.is_ok() {
                    c.sentinel = true;
                    io.stop();
                }
            })
            .unwrap();
        let waker = io.waker();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50)); // let the loop block first
            waker.wake().expect("wake");
        });
        let mut c = C::default();
        io.run_for_ns(&mut c, u64::MAX).unwrap();
        thread.join().unwrap();
        assert!(!c.sentinel, "[{name}] the wake-up did not end the wait");
        assert_eq!(c.woke, vec![1], "[{name}]");
        io.cancel(3, sentinel, |_, _, _, r| r.unwrap()).unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert!(!c.sentinel);
    }
}

/// Io::stop: "A stop asked for by a callback whose run a panic ended is forgotten."
#[test]
fn stop_asked_by_a_panicking_callback_is_forgotten() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        io.nop(1, |log, io, tag, _| {
            log.push((tag, Ok(())));
            io.stop();
            panic!("callback panics after stop");
        })
        .unwrap();
        let mut log = Log::new();
        let r = catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut log)));
        assert!(r.is_err(), "[{name}] the panic propagates out of the run");
        io.timeout(2, 10 * MS, log_unit).unwrap();
        io.nop(3, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(io.in_flight(), 0, "[{name}] the stop was forgotten");
        assert_eq!(answers(&log, 2), vec![Ok(())]);
        assert_eq!(answers(&log, 1).len(), 1, "[{name}] not run twice");
    }
}

// ---------------------------------------------------------------------------------------
// Panicking callbacks
// ---------------------------------------------------------------------------------------

/// Io::tick: "If a callback panics, the panic propagates out of tick (and run_*); the loop
/// stays usable: the callbacks of the rest of that turn's completions run on the next turn,
/// none is lost or run twice".
#[test]
fn panicking_callback_rest_of_batch_runs_once_on_next_turn() {
    fn cb(log: &mut Log, _: &mut Io<Log>, tag: Tag, r: io::Result<()>) {
        log.push((tag, answer(&r)));
        if tag == 2 {
            panic!("callback 2 panics");
        }
    }
    for (name, o) in variants(Options::new(8)) {
        for drive_with_tick in [true, false] {
            let mut io: Io<Log> = new(name, &o);
            for tag in 0..5 {
                io.nop(tag, cb).unwrap();
            }
            let mut log = Log::new();
            let r = if drive_with_tick {
                // The nops complete on the first turn; tick until the panic.
                catch_unwind(AssertUnwindSafe(|| {
                    for _ in 0..1000 {
                        io.tick(&mut log).unwrap();
                    }
                }))
            } else {
                catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut log).unwrap()))
            };
            assert!(r.is_err(), "[{name}] the panic propagates");
            io.tick(&mut log).unwrap();
            for tag in 0..5 {
                assert_eq!(
                    answers(&log, tag),
                    vec![Ok(())],
                    "[{name}] tag {tag} runs exactly once, on the turn after the panic: {log:?}"
                );
            }
            assert_eq!(io.in_flight(), 0, "[{name}]");
            // Still usable.
            io.timeout(9, MS, log_unit).unwrap();
            io.run_until_idle(&mut log).unwrap();
            assert_eq!(answers(&log, 9), vec![Ok(())]);
        }
    }
}

/// Io::tick: "dropping the loop instead releases everything exactly once" (and Drop runs no
/// callbacks).
#[test]
fn panicking_callback_then_drop_runs_no_more_callbacks() {
    fn cb(log: &mut Log, _: &mut Io<Log>, tag: Tag, r: io::Result<()>) {
        log.push((tag, answer(&r)));
        if log.len() == 1 {
            panic!("the first callback panics");
        }
    }
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        for tag in 0..4 {
            io.nop(tag, cb).unwrap();
        }
        io.recv(10, sock.as_raw_fd(), Vec::with_capacity(8), |_, _, _, _| {
            panic!("a dropped loop runs no callback")
        })
        .unwrap();
        let mut log = Log::new();
        assert!(catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut log))).is_err());
        assert_eq!(log.len(), 1, "[{name}]");
        drop(io);
        assert_eq!(log.len(), 1, "[{name}] drop ran no callback");
    }
}

/// Io::tick "# Panics: When called from a callback"; the loop stays usable.
#[test]
fn driving_the_loop_from_a_callback_panics() {
    for (name, o) in variants(Options::new(8)) {
        for which in 0..3u64 {
            let mut io: Io<Log> = new(name, &o);
            io.nop(which, |log, io, tag, _| match tag {
                0 => {
                    let _ = io.tick(log);
                }
                1 => {
                    let _ = io.run_for_ns(log, 0);
                }
                _ => {
                    let _ = io.run_until_idle(log);
                }
            })
            .unwrap();
            let mut log = Log::new();
            let r = catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut log)));
            assert!(
                r.is_err(),
                "[{name}] driving from callback {which} must panic"
            );
            io.timeout(5, MS, log_unit).unwrap();
            io.run_until_idle(&mut log).unwrap();
            assert_eq!(answers(&log, 5), vec![Ok(())], "[{name}] usable afterwards");
        }
    }
}

/// A PoolBuf handed to a panicking callback goes back to the pool during the unwind.
#[test]
fn panicking_pooled_callback_returns_its_buffer() {
    for (name, o) in variants(pooled(4, 1, 64)) {
        let mut io: Io<u32> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"boom").unwrap();
        io.recv_pooled(0, sock.as_raw_fd(), |_, _, _, shot| {
            let _buf = shot.result.unwrap();
            panic!("pooled callback panics");
        })
        .unwrap();
        let mut n = 0;
        assert!(catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut n))).is_err());
        io.run_for_ns(&mut n, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}]");
        // The single buffer is usable again.
        peer.write_all(b"again").unwrap();
        io.recv_pooled(0, sock.as_raw_fd(), |n, _, _, shot| {
            assert_eq!(&shot.result.unwrap()[..], b"again");
            *n += 1;
        })
        .unwrap();
        let deadline_guard = Instant::now();
        while n == 0 {
            io.run_for_ns(&mut n, 10 * MS).unwrap();
            assert!(
                deadline_guard.elapsed() < Duration::from_secs(5),
                "[{name}] pooled receive never completed"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Timed {
    start: Option<Instant>,
    ends: Vec<(Tag, Answer, Duration)>,
}

fn timed_buf(c: &mut Timed, _: &mut Io<Timed>, tag: Tag, (r, _): dispatch_loop::BufResult) {
    c.ends.push((tag, answer(&r), c.start.unwrap().elapsed()));
}
fn timed_unit(c: &mut Timed, _: &mut Io<Timed>, tag: Tag, r: io::Result<()>) {
    c.ends.push((tag, answer(&r), c.start.unwrap().elapsed()));
}

/// Io::set_deadline: "its callback gets ETIMEDOUT ... Never early: the operation ends at or
/// after its deadline"; Stats::deadlines_expired counts it.
#[test]
fn deadline_times_out_a_recv_never_early() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Timed> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        let mut c = Timed {
            start: Some(Instant::now()),
            ..Default::default()
        };
        let recv = io
            .recv(1, sock.as_raw_fd(), Vec::with_capacity(8), timed_buf)
            .unwrap();
        io.set_deadline(recv, 15 * MS).unwrap();
        let wait = io
            .wait_wakeup(2, |c, _, t, r| {
                c.ends.push((t, answer(&r), c.start.unwrap().elapsed()))
            })
            .unwrap();
        io.set_deadline(wait, 7 * MS).unwrap();
        let timer = io.timeout(3, LONG, timed_unit).unwrap();
        io.set_deadline(timer, 3 * MS).unwrap();
        io.run_until_idle(&mut c).unwrap();
        let want = [(1, 15), (2, 7), (3, 3)];
        for (tag, ms) in want {
            let e: Vec<_> = c.ends.iter().filter(|e| e.0 == tag).collect();
            assert_eq!(e.len(), 1, "[{name}] {tag}");
            assert_eq!(e[0].1, Err(libc::ETIMEDOUT), "[{name}] tag {tag}");
            assert!(
                e[0].2 >= Duration::from_millis(ms),
                "[{name}] tag {tag} ended early: {:?} < {ms} ms",
                e[0].2
            );
        }
        assert_eq!(io.stats().deadlines_expired, 3, "[{name}]");
    }
}

/// Io::set_deadline: "(replacing any deadline it had)" and never early for the new one.
#[test]
fn set_deadline_again_replaces_the_deadline() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Timed> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        let mut c = Timed {
            start: Some(Instant::now()),
            ..Default::default()
        };
        let recv = io
            .recv(1, sock.as_raw_fd(), Vec::with_capacity(8), timed_buf)
            .unwrap();
        io.set_deadline(recv, 5 * MS).unwrap();
        io.set_deadline(recv, 40 * MS).unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.ends.len(), 1);
        assert_eq!(c.ends[0].1, Err(libc::ETIMEDOUT), "[{name}]");
        assert!(
            c.ends[0].2 >= Duration::from_millis(40),
            "[{name}] {:?}",
            c.ends[0].2
        );
        assert_eq!(io.stats().deadlines_expired, 1);
    }
}

/// Io::set_deadline: "(or its real result, if it completed first)"; no expiry counted.
#[test]
fn deadline_after_completion_leaves_the_real_result() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let t = io.timeout(1, 2 * MS, log_unit).unwrap();
        io.set_deadline(t, 30 * MS).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Ok(())], "[{name}]");
        assert_eq!(io.stats().deadlines_expired, 0, "[{name}]");
        // Let the old deadline pass: nothing happens to anything else.
        io.timeout(2, 50 * MS, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 2), vec![Ok(())], "[{name}]");
        assert_eq!(io.stats().deadlines_expired, 0, "[{name}]");
    }
}

/// Io::set_deadline "# Errors: NotInFlight when id has completed (or is stale);
/// NotCancellable for a close or a cancel."
#[test]
fn set_deadline_errors() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let nop = io.nop(1, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(
            io.set_deadline(nop, MS),
            Err(DeadlineError::NotInFlight),
            "[{name}]"
        );
        assert_eq!(
            io.clear_deadline(nop),
            Err(DeadlineError::NotInFlight),
            "[{name}]"
        );

        let (a, _b) = UnixStream::pair().unwrap();
        let close = io.close(2, OwnedFd::from(a), log_unit).unwrap();
        assert_eq!(
            io.set_deadline(close, MS),
            Err(DeadlineError::NotCancellable),
            "[{name}] close"
        );
        let target = io.timeout(3, LONG, log_unit).unwrap();
        let cancel = io.cancel(4, target, log_unit).unwrap();
        assert_eq!(
            io.set_deadline(cancel, MS),
            Err(DeadlineError::NotCancellable),
            "[{name}] cancel"
        );
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 2), vec![Ok(())]);
        assert_eq!(answers(&log, 3), vec![Err(libc::ECANCELED)]);
        assert_eq!(answers(&log, 4), vec![Ok(())]);
        assert_eq!(io.stats().deadlines_expired, 0);
        for e in [DeadlineError::NotInFlight, DeadlineError::NotCancellable] {
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Io::clear_deadline: "Removes the deadline of the operation id; Ok(true) if it had one."
#[test]
fn clear_deadline_removes_it() {
    struct C {
        recv: Vec<Answer>,
        target: Option<OpId>,
    }
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<C> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        let recv = io
            .recv(
                1,
                sock.as_raw_fd(),
                Vec::with_capacity(8),
                |c, _, _, (r, _)| c.recv.push(answer(&r)),
            )
            .unwrap();
        assert_eq!(
            io.clear_deadline(recv),
            Ok(false),
            "[{name}] no deadline yet"
        );
        io.set_deadline(recv, 5 * MS).unwrap();
        assert_eq!(io.clear_deadline(recv), Ok(true), "[{name}]");
        assert_eq!(io.clear_deadline(recv), Ok(false), "[{name}]");
        // After 40 ms the receive is still pending; then cancel it.
        io.timeout(2, 40 * MS, |c, io, _, r| {
            r.unwrap();
            assert!(c.recv.is_empty(), "a cleared deadline fired");
            io.cancel(3, c.target.unwrap(), |_, _, _, r| r.unwrap())
                .unwrap();
        })
        .unwrap();
        let mut c = C {
            recv: vec![],
            target: Some(recv),
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.recv, vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(io.stats().deadlines_expired, 0, "[{name}]");
    }
}

/// Io::set_deadline: "A Io::cancel of an operation whose deadline has fired but which has
/// not completed yet answers EALREADY." Whatever the timing, the answers must agree: a cancel
/// answered Ok means the target got ECANCELED; a target that got ETIMEDOUT means the cancel
/// answered EALREADY or ENOENT.
#[test]
fn cancel_racing_a_deadline_answers_consistently() {
    #[derive(Default)]
    struct C {
        target: Option<OpId>,
        target_done: Vec<Answer>,
        cancel: Vec<Answer>,
        cancel_sent: bool,
        deadline_at: Option<Instant>,
    }
    fn spin(c: &mut C, io: &mut Io<C>, _: Tag, _: io::Result<()>) {
        if !c.cancel_sent && Instant::now() >= c.deadline_at.unwrap() {
            c.cancel_sent = true;
            io.cancel(2, c.target.unwrap(), |c, _, _, r| c.cancel.push(answer(&r)))
                .unwrap();
        }
        if c.target_done.is_empty() || !c.cancel_sent {
            io.nop(3, spin).unwrap();
        }
    }
    for (name, o) in variants(Options::new(8)) {
        for _ in 0..5 {
            let mut io: Io<C> = new(name, &o);
            let (sock, _peer) = UnixStream::pair().unwrap();
            let recv = io
                .recv(
                    1,
                    sock.as_raw_fd(),
                    Vec::with_capacity(8),
                    |c, _, _, (r, _)| c.target_done.push(answer(&r)),
                )
                .unwrap();
            io.set_deadline(recv, 2 * MS).unwrap();
            let mut c = C {
                target: Some(recv),
                deadline_at: Some(Instant::now() + Duration::from_millis(2)),
                ..Default::default()
            };
            io.nop(3, spin).unwrap();
            // Bound: run in slices until both answers are in.
            let start = Instant::now();
            while c.target_done.is_empty() || c.cancel.is_empty() {
                io.run_for_ns(&mut c, 5 * MS).unwrap();
                assert!(start.elapsed() < Duration::from_secs(5), "[{name}] hang");
            }
            assert_eq!(c.target_done.len(), 1, "[{name}]");
            assert_eq!(c.cancel.len(), 1, "[{name}]");
            match (c.target_done[0], c.cancel[0]) {
                (Err(libc::ECANCELED), Ok(())) => {}
                (Err(libc::ETIMEDOUT), Err(libc::EALREADY)) => {}
                (Err(libc::ETIMEDOUT), Err(libc::ENOENT)) => {}
                other => panic!("[{name}] inconsistent (target, cancel) answers {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pooled receives and sends
// ---------------------------------------------------------------------------------------

/// PoolOptions: "buffers == 0: no pool (pooled receives are refused with NoPool)";
/// Io::pool_buffers_lent: "0 without a pool".
#[test]
fn pooled_receives_without_pool_are_refused() {
    for (name, o) in variants(Options::new(4)) {
        let mut o = o;
        o.pool = PoolOptions::new(0, 4096);
        let mut io: Io<()> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        let e = io
            .recv_pooled(0, sock.as_raw_fd(), |_, _, _, _| {})
            .unwrap_err();
        assert_eq!(e.kind, ScheduleErrorKind::NoPool, "[{name}]");
        let e = io
            .recv_multishot(0, sock.as_raw_fd(), |_, _, _, _| {})
            .unwrap_err();
        assert_eq!(e.kind, ScheduleErrorKind::NoPool, "[{name}]");
        assert_eq!(io.pool_buffers_lent(), 0);
        assert_eq!(io.in_flight(), 0);
    }
}

/// One pooled completion: tag, answer, bytes, more, buffer id.
type PoolShot = (Tag, Answer, Vec<u8>, bool, Option<u16>);

#[derive(Default)]
struct PoolCtx {
    shots: Vec<PoolShot>,
    held: Vec<PoolBuf>,
    hold: bool,
    lent_seen: Vec<u32>,
}

fn on_pooled(c: &mut PoolCtx, io: &mut Io<PoolCtx>, tag: Tag, shot: Shot<PoolBuf>) {
    c.lent_seen.push(io.pool_buffers_lent());
    match shot.result {
        Ok(buf) => {
            c.shots
                .push((tag, Ok(()), buf.to_vec(), shot.more, buf.buffer_id()));
            if c.hold {
                c.held.push(buf);
            }
        }
        Err(e) => c.shots.push((
            tag,
            Err(e.raw_os_error().unwrap_or(-1)),
            vec![],
            shot.more,
            None,
        )),
    }
}

/// Io::recv_pooled: the callback gets the bytes as a PoolBuf, once (more == false), and the
/// buffer goes back when dropped; end of stream is an empty handle holding no buffer.
#[test]
fn recv_pooled_delivers_and_returns_buffers() {
    for (name, o) in variants(pooled(4, 2, 64)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"hello").unwrap();
        io.recv_pooled(5, sock.as_raw_fd(), on_pooled).unwrap();
        let mut c = PoolCtx {
            hold: true,
            ..Default::default()
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.shots.len(), 1, "[{name}]");
        let (tag, r, bytes, more, id) = c.shots[0].clone();
        assert_eq!(
            (tag, r, &bytes[..], more),
            (5, Ok(()), &b"hello"[..], false),
            "[{name}]"
        );
        assert!(id.is_some(), "[{name}] a data handle names its buffer");
        assert_eq!(io.pool_buffers_lent(), 1, "[{name}] held by the PoolBuf");
        let mut held = c.held.pop().unwrap();
        assert_eq!(held.len(), 5);
        assert!(!held.is_empty());
        held[0] = b'J'; // DerefMut
        assert_eq!(&held[..], b"Jello");
        held.advance(2);
        assert_eq!(&held[..], b"llo");
        held.advance(3);
        assert!(held.is_empty(), "[{name}] everything advanced over");
        assert!(
            held.buffer_id().is_some(),
            "[{name}] still holds its buffer"
        );
        assert_eq!(io.pool_buffers_lent(), 1);
        drop(held);
        // "A dropped handle's buffer counts until the next turn takes it back."
        assert_eq!(
            io.pool_buffers_lent(),
            1,
            "[{name}] counts until the next turn"
        );
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}] back after a turn");
        // End of stream.
        drop(peer);
        io.recv_pooled(6, sock.as_raw_fd(), on_pooled).unwrap();
        io.run_until_idle(&mut c).unwrap();
        let (tag, r, bytes, more, id) = c.shots[1].clone();
        assert_eq!(
            (tag, r, bytes.len(), more, id),
            (6, Ok(()), 0, false, None),
            "[{name}]"
        );
        let eos = c.held.pop().unwrap();
        assert!(eos.is_empty() && eos.buffer_id().is_none());
        assert_eq!(
            io.pool_buffers_lent(),
            0,
            "[{name}] an EOS handle holds no buffer"
        );
    }
}

/// PoolBuf::advance "# Panics: When n exceeds PoolBuf::len."
#[test]
fn poolbuf_advance_past_len_panics() {
    for (name, o) in variants(pooled(4, 2, 64)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"abc").unwrap();
        io.recv_pooled(0, sock.as_raw_fd(), on_pooled).unwrap();
        let mut c = PoolCtx {
            hold: true,
            ..Default::default()
        };
        io.run_until_idle(&mut c).unwrap();
        let mut buf = c.held.pop().unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| buf.advance(4)));
        assert!(r.is_err(), "[{name}] advance(4) of 3 bytes must panic");
        drop(buf);
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}]");
    }
}

/// PoolOptions::buffer_size: "the most one receive delivers"; recv_multishot: "Bytes arrive
/// in stream order", "exactly one final callback (more == false) carrying the end of stream".
#[test]
fn recv_multishot_small_buffers_stream_order_and_final_eos() {
    for (name, o) in variants(pooled(4, 3, 7)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let (sock, peer) = UnixStream::pair().unwrap();
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let data = data.clone();
            let mut peer = peer;
            std::thread::spawn(move || {
                for chunk in data.chunks(100) {
                    peer.write_all(chunk).unwrap();
                }
            })
        };
        let id = io.recv_multishot(3, sock.as_raw_fd(), on_pooled).unwrap();
        let mut c = PoolCtx::default();
        io.run_until_idle(&mut c).unwrap();
        writer.join().unwrap();
        let got: Vec<u8> = c.shots.iter().flat_map(|s| s.2.clone()).collect();
        assert_eq!(got.len(), data.len(), "[{name}]");
        assert!(got == data, "[{name}] bytes out of order");
        assert!(
            c.shots
                .iter()
                .all(|s| s.0 == 3 && s.1 == Ok(()) && s.2.len() <= 7),
            "[{name}]"
        );
        let (last, rest) = c.shots.split_last().unwrap();
        assert!(!last.3 && last.2.is_empty(), "[{name}] final EOS: {last:?}");
        assert!(
            rest.iter().all(|s| s.3 && !s.2.is_empty()),
            "[{name}] more=true before"
        );
        // Shot::more false: "its slot is free, its id stale".
        assert_eq!(
            io.set_deadline(id, MS),
            Err(DeadlineError::NotInFlight),
            "[{name}]"
        );
        assert_eq!(io.in_flight(), 0);
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}]");
    }
}

/// Io::recv_pooled / recv_multishot: "When the pool is empty, a receive with something to
/// read waits for a buffer to come back (counted once per wait in Stats::pool_waits); it does
/// not fail."
#[test]
fn empty_pool_makes_receives_wait_not_fail() {
    for (name, o) in variants(pooled(8, 1, 64)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let (s1, mut p1) = UnixStream::pair().unwrap();
        let (s2, mut p2) = UnixStream::pair().unwrap();
        p1.write_all(b"first").unwrap();
        io.recv_pooled(1, s1.as_raw_fd(), on_pooled).unwrap();
        let mut c = PoolCtx {
            hold: true,
            ..Default::default()
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(io.pool_buffers_lent(), 1);
        assert_eq!(io.stats().pool_waits, 0, "[{name}]");
        p2.write_all(b"second").unwrap();
        io.recv_pooled(2, s2.as_raw_fd(), on_pooled).unwrap();
        io.run_for_ns(&mut c, 30 * MS).unwrap();
        assert_eq!(
            c.shots.len(),
            1,
            "[{name}] the second receive waits: {:?}",
            c.shots
        );
        assert!(io.stats().pool_waits >= 1, "[{name}] {:?}", io.stats());
        assert_eq!(io.in_flight(), 1, "[{name}]");
        c.hold = false;
        c.held.clear();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.shots.len(), 2, "[{name}]");
        assert_eq!(
            (c.shots[1].0, c.shots[1].1, &c.shots[1].2[..]),
            (2, Ok(()), &b"second"[..])
        );
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0);

        // The same for a multishot receive that holds every buffer.
        let waits = io.stats().pool_waits;
        c.shots.clear();
        c.hold = true;
        p1.write_all(b"abc").unwrap();
        let ms = io.recv_multishot(3, s1.as_raw_fd(), on_pooled).unwrap();
        io.run_for_ns(&mut c, 20 * MS).unwrap();
        assert_eq!(c.shots.len(), 1, "[{name}] {:?}", c.shots);
        p1.write_all(b"def").unwrap();
        io.run_for_ns(&mut c, 30 * MS).unwrap();
        assert_eq!(c.shots.len(), 1, "[{name}] no buffer, no callback");
        assert!(
            io.stats().pool_waits > waits,
            "[{name}] the multishot wait is counted"
        );
        c.hold = false;
        c.held.clear();
        io.run_for_ns(&mut c, 30 * MS).unwrap();
        let got: Vec<u8> = c.shots.iter().flat_map(|s| s.2.clone()).collect();
        assert_eq!(got, b"abcdef", "[{name}]");
        assert!(c.shots.iter().all(|s| s.3), "[{name}] still running");
        io.cancel(4, ms, |_, _, _, r| r.unwrap()).unwrap();
        io.run_until_idle(&mut c).unwrap();
        let last = c.shots.last().unwrap();
        assert_eq!((last.1, last.3), (Err(libc::ECANCELED), false), "[{name}]");
    }
}

/// Io::recv_multishot: final callback "ECANCELED" after a cancel; a deadline ends it with
/// ETIMEDOUT, and "An idle timeout is a deadline moved on every callback".
#[test]
fn recv_multishot_cancel_and_idle_deadline() {
    struct C {
        id: Option<OpId>,
        shots: Vec<(Answer, usize, bool)>,
    }
    fn on(c: &mut C, io: &mut Io<C>, _: Tag, shot: Shot<PoolBuf>) {
        let n = shot.result.as_ref().map(|b| b.len()).unwrap_or(0);
        c.shots.push((answer(&shot.result), n, shot.more));
        if shot.more {
            io.set_deadline(c.id.unwrap(), 200 * MS)
                .expect("a multishot with more=true is in flight");
        }
    }
    for (name, o) in variants(pooled(4, 4, 64)) {
        let mut io: Io<C> = new(name, &o);
        // Cancel.
        let (sock, mut peer) = UnixStream::pair().unwrap();
        let id = io.recv_multishot(0, sock.as_raw_fd(), on).unwrap();
        let mut c = C {
            id: Some(id),
            shots: vec![],
        };
        io.set_deadline(id, LONG).unwrap();
        peer.write_all(b"x").unwrap();
        io.run_for_ns(&mut c, 20 * MS).unwrap();
        assert_eq!(c.shots, vec![(Ok(()), 1, true)], "[{name}]");
        io.cancel(1, id, |_, _, _, r| r.unwrap()).unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.shots.len(), 2);
        assert_eq!(c.shots[1].0, Err(libc::ECANCELED), "[{name}]");
        assert!(!c.shots[1].2);
        // Idle deadline moved by each callback: 10 messages 30 ms apart (300 ms in all)
        // outlive a 200 ms deadline only because it moves.
        let (sock, peer) = UnixStream::pair().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            let mut peer = peer;
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(30));
                peer.write_all(b"m").unwrap();
            }
            let _ = done_rx.recv(); // keep the peer open until the test ends
        });
        let id = io.recv_multishot(2, sock.as_raw_fd(), on).unwrap();
        io.set_deadline(id, 200 * MS).unwrap();
        c = C {
            id: Some(id),
            shots: vec![],
        };
        let start = Instant::now();
        io.run_until_idle(&mut c).unwrap();
        let elapsed = start.elapsed();
        done_tx.send(()).unwrap();
        writer.join().unwrap();
        let bytes: usize = c.shots.iter().map(|s| s.1).sum();
        assert_eq!(bytes, 10, "[{name}] {:?}", c.shots);
        let last = c.shots.last().unwrap();
        assert_eq!((last.0, last.2), (Err(libc::ETIMEDOUT), false), "[{name}]");
        assert!(elapsed >= Duration::from_millis(200 + 30 * 10 - 30));
        assert_eq!(
            c.shots.iter().filter(|s| !s.2).count(),
            1,
            "[{name}] one final"
        );
    }
}

/// Io::send_pooled: sends the PoolBuf's view; the callback gets the count and the buffer,
/// "whose view is unchanged"; Io::pool_buffers_lent counts "pooled sends in flight".
#[test]
fn send_pooled_echo_with_advance() {
    #[derive(Default)]
    struct C {
        fd: RawFd,
        sent: Vec<(Answer, usize, Vec<u8>)>,
        lent_after_schedule: Vec<u32>,
    }
    fn on_recv(c: &mut C, io: &mut Io<C>, _: Tag, shot: Shot<PoolBuf>) {
        let mut buf = shot.result.unwrap();
        assert_eq!(&buf[..], b"hello world");
        buf.advance(6);
        buf.make_ascii_uppercase();
        io.send_pooled(1, c.fd, buf, |c, _, _, (r, buf)| {
            c.sent
                .push((answer(&r), *r.as_ref().unwrap_or(&0), buf.to_vec()));
        })
        .unwrap();
        c.lent_after_schedule.push(io.pool_buffers_lent());
    }
    for (name, o) in variants(pooled(4, 2, 64)) {
        let mut io: Io<C> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"hello world").unwrap();
        io.recv_pooled(0, sock.as_raw_fd(), on_recv).unwrap();
        let mut c = C {
            fd: sock.as_raw_fd(),
            ..Default::default()
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(
            c.lent_after_schedule,
            vec![1],
            "[{name}] a pooled send holds its buffer"
        );
        assert_eq!(c.sent, vec![(Ok(()), 5, b"WORLD".to_vec())], "[{name}]");
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"WORLD");
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}]");
    }
}

/// PoolOptions::buffers "(at most 32768)": any count up to it works, not only powers of two.
#[test]
fn pool_of_odd_and_maximal_sizes_works() {
    for (buffers, size) in [(1u32, 1u32), (3, 5), (32768, 1), (1, 16 << 20)] {
        for (name, o) in variants(pooled(4, buffers, size)) {
            let mut io: Io<PoolCtx> = new(name, &o);
            let (sock, mut peer) = UnixStream::pair().unwrap();
            peer.write_all(b"0123456789").unwrap();
            drop(peer);
            io.recv_multishot(0, sock.as_raw_fd(), on_pooled).unwrap();
            let mut c = PoolCtx::default();
            io.run_until_idle(&mut c).unwrap();
            let got: Vec<u8> = c.shots.iter().flat_map(|s| s.2.clone()).collect();
            assert_eq!(got, b"0123456789", "[{name}] pool {buffers} x {size}");
            assert!(c.shots.iter().all(|s| s.2.len() <= size as usize));
        }
    }
}

/// Io::recv_pooled on a descriptor that fails: an error result, no buffer lent.
#[test]
fn recv_pooled_error_lends_no_buffer() {
    for (name, o) in variants(pooled(4, 2, 64)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let (r, _w) = std::io::pipe().unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A UDP socket that nobody sends to: cancel it; a pipe: ENOTSOCK.
        io.recv_pooled(1, r.as_raw_fd(), on_pooled).unwrap();
        let udp_id = io.recv_pooled(2, udp.as_raw_fd(), on_pooled).unwrap();
        io.cancel(3, udp_id, |_, _, _, _| {}).unwrap();
        let mut c = PoolCtx::default();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.shots.len(), 2, "[{name}]");
        for s in &c.shots {
            assert!(s.1.is_err(), "[{name}] {s:?}");
            assert!(!s.3, "[{name}] final");
        }
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}]");
    }
}

/// A PoolBuf that outlives its loop stays readable and can be dropped safely.
#[test]
fn poolbuf_outliving_the_loop() {
    for (name, o) in variants(pooled(4, 2, 64)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"survivor").unwrap();
        io.recv_pooled(0, sock.as_raw_fd(), on_pooled).unwrap();
        let mut c = PoolCtx {
            hold: true,
            ..Default::default()
        };
        io.run_until_idle(&mut c).unwrap();
        drop(io);
        // Allocate some memory that would reuse a freed pool.
        let noise: Vec<Vec<u8>> = (0..64).map(|_| vec![0xAA; 128]).collect();
        assert_eq!(&c.held[0][..], b"survivor", "[{name}]");
        drop(noise);
        drop(c);
    }
}

// ---------------------------------------------------------------------------------------
// accept and accept_multishot
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct AcceptCtx {
    shots: Vec<(Answer, bool, bool, bool)>,
    fds: Vec<OwnedFd>,
}

fn on_accept(c: &mut AcceptCtx, _: &mut Io<AcceptCtx>, _: Tag, shot: Shot<OwnedFd>) {
    match shot.result {
        Ok(fd) => {
            c.shots
                .push((Ok(()), shot.more, is_nonblocking(&fd), is_cloexec(&fd)));
            c.fds.push(fd);
        }
        Err(e) => c
            .shots
            .push((Err(e.raw_os_error().unwrap_or(-1)), shot.more, false, false)),
    }
}

/// Io::accept_multishot: one callback per connection with more == true, each socket
/// non-blocking and close-on-exec, then a final callback ECANCELED after Io::cancel.
#[test]
fn accept_multishot_then_cancel() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<AcceptCtx> = new(name, &o);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let id = io
            .accept_multishot(4, listener.as_raw_fd(), on_accept)
            .unwrap();
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut c = AcceptCtx::default();
        let start = Instant::now();
        while c.shots.len() < 3 {
            io.run_for_ns(&mut c, 10 * MS).unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "[{name}] {:?}",
                c.shots
            );
        }
        assert_eq!(c.shots, vec![(Ok(()), true, true, true); 3], "[{name}]");
        // The sockets are the connections.
        for (fd, mut client) in c.fds.drain(..).zip(clients) {
            let mut s = TcpStream::from(fd);
            client.write_all(b"hi").unwrap();
            let mut b = [0u8; 2];
            s.set_nonblocking(false).unwrap();
            s.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"hi");
        }
        let mut log = vec![];
        io.cancel(5, id, |_, _, _, r| r.unwrap()).unwrap();
        io.run_until_idle(&mut c).unwrap();
        log.extend(c.shots.iter().skip(3).cloned());
        assert_eq!(
            log,
            vec![(Err(libc::ECANCELED), false, false, false)],
            "[{name}]"
        );
        assert_eq!(io.in_flight(), 0);
    }
}

/// Io::accept_multishot: "until cancelled (or until an error ends it)": a final callback with
/// the error and more == false.
#[test]
fn accept_multishot_error_ends_it() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<AcceptCtx> = new(name, &o);
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let id = io.accept_multishot(0, udp.as_raw_fd(), on_accept).unwrap();
        io.set_deadline(id, LONG).unwrap();
        let mut c = AcceptCtx::default();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.shots.len(), 1, "[{name}] {:?}", c.shots);
        let (r, more, _, _) = c.shots[0];
        assert!(r.is_err() && r != Err(libc::ETIMEDOUT), "[{name}] {r:?}");
        assert!(!more, "[{name}]");
    }
}

/// Io::accept_multishot with a deadline: the final callback is ETIMEDOUT.
#[test]
fn accept_multishot_deadline() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<AcceptCtx> = new(name, &o);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let id = io
            .accept_multishot(0, listener.as_raw_fd(), on_accept)
            .unwrap();
        io.set_deadline(id, 10 * MS).unwrap();
        let mut c = AcceptCtx::default();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(
            c.shots,
            vec![(Err(libc::ETIMEDOUT), false, false, false)],
            "[{name}]"
        );
        assert_eq!(io.stats().deadlines_expired, 1);
    }
}

/// Io::accept: "The new socket is non-blocking and close-on-exec on every backend"; connect,
/// send, recv and shutdown over 127.0.0.1.
#[test]
fn accept_connect_send_recv_shutdown() {
    #[derive(Default)]
    struct C {
        accepted: Option<OwnedFd>,
        flags: Option<(bool, bool)>,
        log: Log,
        got: Vec<u8>,
    }
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<C> = new(name, &o);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        io.accept(1, listener.as_raw_fd(), |c, _, _, r| {
            let fd = r.expect("accept");
            c.flags = Some((is_nonblocking(&fd), is_cloexec(&fd)));
            c.accepted = Some(fd);
        })
        .unwrap();
        let (family, kind) = (
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
        );
        let client = rustix::net::socket(family, kind, None).unwrap();
        io.connect(2, client.as_raw_fd(), addr, |c, _, t, r| {
            c.log.push((t, answer(&r)))
        })
        .unwrap();
        let mut c = C::default();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.flags, Some((true, true)), "[{name}]");
        assert_eq!(answers(&c.log, 2), vec![Ok(())], "[{name}]");
        let server = c.accepted.take().unwrap();
        io.send(
            3,
            client.as_raw_fd(),
            b"ping".to_vec(),
            |c, _, t, (r, buf)| {
                assert_eq!(buf, b"ping", "send hands the buffer back unchanged");
                assert_eq!(*r.as_ref().unwrap(), 4);
                c.log.push((t, answer(&r)));
            },
        )
        .unwrap();
        io.shutdown(
            4,
            client.as_raw_fd(),
            std::net::Shutdown::Write,
            |c, _, t, r| c.log.push((t, answer(&r))),
        )
        .unwrap();
        io.run_until_idle(&mut c).unwrap();
        fn on_recv(c: &mut C, io: &mut Io<C>, _: Tag, (r, buf): dispatch_loop::BufResult) {
            let n = r.expect("recv");
            c.got = buf;
            if n > 0 {
                let fd = c.accepted.as_ref().unwrap().as_raw_fd();
                let buf = std::mem::take(&mut c.got);
                let mut buf = buf;
                buf.reserve(16);
                io.recv(5, fd, buf, on_recv).unwrap();
            }
        }
        let fd = server.as_raw_fd();
        c.accepted = Some(server);
        io.recv(5, fd, Vec::with_capacity(2), on_recv).unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.got, b"ping", "[{name}] then end of stream after shutdown");
        assert_eq!(answers(&c.log, 4), vec![Ok(())]);
    }
}

/// Io::connect to a closed port: ECONNREFUSED; Io::send to a reset peer: "an error result
/// (EPIPE, ECONNRESET), never a signal".
#[test]
fn connect_refused_and_send_to_closed_peer() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        let addr: SocketAddr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let client = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap();
        io.connect(1, client.as_raw_fd(), addr, log_unit).unwrap();
        let (sock, peer) = UnixStream::pair().unwrap();
        drop(peer);
        io.send(2, sock.as_raw_fd(), b"x".to_vec(), |log, _, t, (r, _)| {
            log.push((t, answer(&r)))
        })
        .unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Err(libc::ECONNREFUSED)], "[{name}]");
        let s = answers(&log, 2);
        assert!(
            s == vec![Err(libc::EPIPE)] || s == vec![Err(libc::ECONNRESET)],
            "[{name}] {s:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// read / write at offsets, fsync, openat, close
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct FileCtx {
    res: Vec<(Tag, Answer, usize, Vec<u8>)>,
}
fn on_file(c: &mut FileCtx, _: &mut Io<FileCtx>, tag: Tag, (r, buf): dispatch_loop::BufResult) {
    let n = *r.as_ref().unwrap_or(&0);
    c.res.push((tag, answer(&r), n, buf));
}
fn one(c: &FileCtx, tag: Tag) -> (Answer, usize, Vec<u8>) {
    let v: Vec<_> = c.res.iter().filter(|r| r.0 == tag).collect();
    assert_eq!(v.len(), 1, "tag {tag}: {:?}", c.res);
    (v[0].1, v[0].2, v[0].3.clone())
}

/// Io::read / Io::write: "offset u64::MAX reads [writes] at the file's current position and
/// advances it, on every backend"; other offsets are positional; 0 at end of file.
#[test]
fn read_write_at_current_position_and_at_offsets() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<FileCtx> = new(name, &o);
        let path = temp_path("rw");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let fd = file.as_raw_fd();
        let mut c = FileCtx::default();
        io.write(1, fd, b"hello".to_vec(), u64::MAX, on_file)
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        io.write(2, fd, b" world".to_vec(), u64::MAX, on_file)
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c, 1).1, 5, "[{name}]");
        assert_eq!(one(&c, 2).1, 6, "[{name}]");
        assert_eq!(
            file.stream_position().unwrap(),
            11,
            "[{name}] u64::MAX advances"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world", "[{name}]");
        // Positional write and read leave the position alone.
        io.write(3, fd, b"W".to_vec(), 6, on_file).unwrap();
        let mut pre = Vec::with_capacity(16);
        pre.extend_from_slice(b">>");
        io.run_until_idle(&mut c).unwrap();
        io.read(4, fd, pre, 6, on_file).unwrap();
        io.read(5, fd, Vec::with_capacity(4), 11, on_file).unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c, 4), (Ok(()), 5, b">>World".to_vec()), "[{name}]");
        assert_eq!(one(&c, 5), (Ok(()), 0, vec![]), "[{name}] 0 at end of file");
        assert_eq!(file.stream_position().unwrap(), 11, "[{name}]");
        // Reads at the current position advance it.
        file.seek(SeekFrom::Start(0)).unwrap();
        io.read(6, fd, Vec::with_capacity(5), u64::MAX, on_file)
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        io.read(7, fd, Vec::with_capacity(3), u64::MAX, on_file)
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c, 6).2, b"hello", "[{name}]");
        assert_eq!(one(&c, 7).2, b" Wo", "[{name}]");
        assert_eq!(file.stream_position().unwrap(), 8, "[{name}]");
        // fsync.
        io.fsync(8, fd, |c, _, t, r| c.res.push((t, answer(&r), 0, vec![])))
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c, 8).0, Ok(()), "[{name}]");
        let mut rest = String::new();
        file.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "rld");
        drop(file);
        std::fs::remove_file(&path).unwrap();
    }
}

/// Io::read / Io::write on a pipe: "at u64::MAX every backend reads [writes] the pipe"; at
/// another offset io_uring ignores it and reads, epoll and kqueue fail with ESPIPE.
#[test]
fn read_write_pipe_offsets() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<FileCtx> = new(name, &o);
        let (mut r, mut w) = std::io::pipe().unwrap();
        let mut c = FileCtx::default();
        w.write_all(b"abc").unwrap();
        io.read(1, r.as_raw_fd(), Vec::with_capacity(8), u64::MAX, on_file)
            .unwrap();
        io.write(2, w.as_raw_fd(), b"xyz".to_vec(), u64::MAX, on_file)
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c, 1), (Ok(()), 3, b"abc".to_vec()), "[{name}]");
        assert_eq!(one(&c, 2).1, 3, "[{name}]");
        let mut b = [0u8; 3];
        r.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"xyz");
        w.write_all(b"def").unwrap();
        io.read(3, r.as_raw_fd(), Vec::with_capacity(8), 0, on_file)
            .unwrap();
        io.write(4, w.as_raw_fd(), b"uvw".to_vec(), 5, on_file)
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        match backend() {
            BackendKind::IoUring => {
                assert_eq!(one(&c, 3), (Ok(()), 3, b"def".to_vec()), "[{name}]");
                assert_eq!(one(&c, 4).1, 3, "[{name}]");
            }
            _ => {
                assert_eq!(one(&c, 3).0, Err(libc::ESPIPE), "[{name}]");
                assert_eq!(one(&c, 4).0, Err(libc::ESPIPE), "[{name}]");
            }
        }
    }
}

#[derive(Default)]
struct OpenCtx {
    res: Vec<(Tag, Answer, bool)>,
    fds: Vec<OwnedFd>,
}
fn on_open(c: &mut OpenCtx, _: &mut Io<OpenCtx>, tag: Tag, r: io::Result<OwnedFd>) {
    match r {
        Ok(fd) => {
            c.res.push((tag, Ok(()), is_cloexec(&fd)));
            c.fds.push(fd);
        }
        Err(e) => c
            .res
            .push((tag, Err(e.raw_os_error().unwrap_or(-1)), false)),
    }
}
fn open_answer(c: &OpenCtx, tag: Tag) -> (Answer, bool) {
    let v: Vec<_> = c.res.iter().filter(|r| r.0 == tag).collect();
    assert_eq!(v.len(), 1, "tag {tag}: {:?}", c.res);
    (v[0].1, v[0].2)
}

/// Io::openat: dir is "ignored, as by openat(2), when path is absolute"; "O_CLOEXEC is always
/// added"; relative to a directory descriptor or AT_FDCWD; mode for O_CREAT.
#[test]
fn openat_absolute_relative_and_errors() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<OpenCtx> = new(name, &o);
        let dir = temp_path("dir");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("existing"), b"content").unwrap();
        let dirfd = std::fs::File::open(&dir).unwrap();
        let abs = CString::new(dir.join("existing").to_str().unwrap()).unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let fd = dirfd.as_raw_fd();
        let mut open = |tag, dir, path: CString, flags, mode| {
            io.openat(tag, dir, path, flags, mode, on_open).unwrap();
        };
        open(1, -1, abs.clone(), libc::O_RDONLY, 0);
        open(2, fd, abs, libc::O_RDONLY, 0);
        open(3, fd, c("existing"), libc::O_RDONLY, 0);
        open(4, -1, c("existing"), libc::O_RDONLY, 0);
        open(5, fd, c("missing"), libc::O_RDONLY, 0);
        open(
            6,
            fd,
            c("created"),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        );
        open(7, AT_FDCWD, c("/dev/null"), libc::O_WRONLY, 0);
        open(8, -1, c("/dev/null"), libc::O_RDONLY, 0);
        let mut ctx = OpenCtx::default();
        io.run_until_idle(&mut ctx).unwrap();
        assert_eq!(
            open_answer(&ctx, 1),
            (Ok(()), true),
            "[{name}] absolute, dir -1"
        );
        assert_eq!(
            open_answer(&ctx, 2),
            (Ok(()), true),
            "[{name}] absolute, dir fd"
        );
        assert_eq!(
            open_answer(&ctx, 3),
            (Ok(()), true),
            "[{name}] relative to dir fd"
        );
        assert_eq!(
            open_answer(&ctx, 4).0,
            Err(libc::EBADF),
            "[{name}] relative, dir -1"
        );
        assert_eq!(open_answer(&ctx, 5).0, Err(libc::ENOENT), "[{name}]");
        assert_eq!(open_answer(&ctx, 6), (Ok(()), true), "[{name}] O_CREAT");
        assert_eq!(open_answer(&ctx, 7), (Ok(()), true), "[{name}] AT_FDCWD");
        assert_eq!(
            open_answer(&ctx, 8),
            (Ok(()), true),
            "[{name}] /dev/null, dir -1"
        );
        let mode = std::fs::metadata(dir.join("created"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "[{name}]");
        drop(ctx);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Io::openat: "Open FIFOs with O_NONBLOCK to get the same answer on every backend".
#[test]
fn openat_fifo_nonblocking_same_everywhere() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<OpenCtx> = new(name, &o);
        let path = temp_path("fifo");
        make_fifo(&path);
        let p = CString::new(path.to_str().unwrap()).unwrap();
        io.openat(
            1,
            -1,
            p.clone(),
            libc::O_WRONLY | libc::O_NONBLOCK,
            0,
            on_open,
        )
        .unwrap();
        io.run_until_idle(&mut io_ctx_new()).unwrap();
        let mut ctx = OpenCtx::default();
        io.openat(
            2,
            AT_FDCWD,
            p.clone(),
            libc::O_WRONLY | libc::O_NONBLOCK,
            0,
            on_open,
        )
        .unwrap();
        io.openat(
            3,
            AT_FDCWD,
            p,
            libc::O_RDONLY | libc::O_NONBLOCK,
            0,
            on_open,
        )
        .unwrap();
        io.run_until_idle(&mut ctx).unwrap();
        assert_eq!(open_answer(&ctx, 2).0, Err(libc::ENXIO), "[{name}]");
        assert_eq!(open_answer(&ctx, 3), (Ok(()), true), "[{name}]");
        drop(ctx);
        std::fs::remove_file(&path).unwrap();
    }
}

fn io_ctx_new() -> OpenCtx {
    OpenCtx::default()
}

/// Io::close takes the descriptor over and closes it; Drop: "parked operations are dropped
/// (... a parked close's descriptor closed)", without running callbacks.
#[test]
fn close_and_drop_of_a_parked_close() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let (a, mut peer) = UnixStream::pair().unwrap();
        io.close(1, OwnedFd::from(a), log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Ok(())], "[{name}]");
        let mut b = [0u8; 1];
        assert_eq!(peer.read(&mut b).unwrap(), 0, "[{name}] closed");

        let (a, mut peer) = UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        io.close(2, OwnedFd::from(a), |_, _, _, _| {
            panic!("a dropped loop runs no callback")
        })
        .unwrap();
        drop(io);
        assert_eq!(
            peer.read(&mut b).unwrap(),
            0,
            "[{name}] drop closed the parked close's fd"
        );
    }
}

/// Drop with operations in flight never hangs and runs no callback.
#[test]
fn drop_with_everything_in_flight() {
    for (name, o) in variants(pooled(16, 4, 64)) {
        let mut io: Io<()> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        let (sock2, mut peer2) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        io.recv(0, sock.as_raw_fd(), Vec::with_capacity(8), |_, _, _, _| {
            panic!("ran")
        })
        .unwrap();
        io.recv_pooled(0, sock.as_raw_fd(), |_, _, _, _| panic!("ran"))
            .unwrap();
        io.recv_multishot(0, sock2.as_raw_fd(), |_, _, _, _| panic!("ran"))
            .unwrap();
        io.accept_multishot(0, listener.as_raw_fd(), |_, _, _, _| panic!("ran"))
            .unwrap();
        io.accept(0, listener.as_raw_fd(), |_, _, _, _| panic!("ran"))
            .unwrap();
        io.wait_wakeup(0, |_, _, _, _| panic!("ran")).unwrap();
        let t = io.timeout(0, LONG, |_, _, _, _| panic!("ran")).unwrap();
        io.set_deadline(t, LONG).unwrap();
        io.run_for_ns(&mut (), 0).unwrap();
        peer2.write_all(b"data").unwrap();
        let _c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        io.cancel(0, t, |_, _, _, _| panic!("ran")).unwrap();
        io.nop(0, |_, _, _, _| panic!("ran")).unwrap();
        drop(io);
    }
}

// ---------------------------------------------------------------------------------------
// Waker
// ---------------------------------------------------------------------------------------

/// Waker: "wake-ups that arrive before the loop waits are counted, not lost, and several
/// coalesce into one completion of Io::wait_wakeup" (with "the number of wake-ups it
/// coalesced").
#[test]
fn wakeups_before_the_wait_are_counted_and_coalesce() {
    #[derive(Default)]
    struct C {
        counts: Vec<Answer>,
        n: Vec<u64>,
    }
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<C> = new(name, &o);
        let waker = io.waker();
        let clone = waker.clone();
        waker.wake().unwrap();
        clone.wake().unwrap();
        waker.wake().unwrap();
        io.wait_wakeup(1, |c, _, _, r| {
            c.counts.push(answer(&r));
            c.n.push(r.unwrap_or(0));
        })
        .unwrap();
        let mut c = C::default();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(
            c.n,
            vec![3],
            "[{name}] three wake-ups coalesced into one completion"
        );
        // None is pending now: a new wait waits (cancelled after 20 ms).
        let wait = io
            .wait_wakeup(2, |c, _, _, r| c.counts.push(answer(&r)))
            .unwrap();
        io.set_deadline(wait, 20 * MS).unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(
            c.counts[1],
            Err(libc::ETIMEDOUT),
            "[{name}] no stale wake-up"
        );
        // From other threads, the wait completes once.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = io.waker();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        w.wake().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        c.n.clear();
        io.wait_wakeup(3, |c, _, _, r| c.n.push(r.unwrap()))
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.n, vec![200], "[{name}] 200 wake-ups counted");
    }
}

/// Waker after its loop was dropped: waking must not panic and must not write into an
/// unrelated descriptor that reused the loop's number.
#[test]
fn waker_after_the_loop_is_dropped() {
    for (name, o) in variants(Options::new(4)) {
        let io: Io<()> = new(name, &o);
        let waker = io.waker();
        drop(io);
        let pipes: Vec<_> = (0..8).map(|_| std::io::pipe().unwrap()).collect();
        let socks: Vec<_> = (0..8).map(|_| UnixStream::pair().unwrap()).collect();
        let r = catch_unwind(AssertUnwindSafe(|| {
            let _ = waker.wake();
            let _ = waker.clone().wake();
        }));
        assert!(r.is_ok(), "[{name}] wake after drop panicked");
        for (r, _w) in &pipes {
            rustix::fs::fcntl_setfl(r, rustix::fs::OFlags::NONBLOCK).unwrap();
            let mut b = [0u8; 16];
            let got = (&*r).read(&mut b);
            assert!(
                matches!(&got, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
                "[{name}] a wake after drop wrote into an unrelated pipe: {got:?}"
            );
        }
        for (a, b) in &socks {
            for s in [a, b] {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 16];
                let got = (&*s).read(&mut buf);
                assert!(
                    matches!(&got, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
                    "[{name}] a wake after drop wrote into an unrelated socket: {got:?}"
                );
            }
        }
    }
}

/// Io::wait_wakeup: "Keeps the loop busy until then, so run_until_idle will not return while it
/// is pending."
#[test]
fn wait_wakeup_keeps_run_until_idle_busy() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Vec<u64>> = new(name, &o);
        io.wait_wakeup(0, |v, _, _, r| v.push(r.unwrap())).unwrap();
        let waker = io.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            waker.wake().unwrap();
        });
        let mut v = vec![];
        io.run_until_idle(&mut v).unwrap();
        t.join().unwrap();
        assert_eq!(v, vec![1], "[{name}]");
    }
}

// ---------------------------------------------------------------------------------------
// Options validation and backend selection
// ---------------------------------------------------------------------------------------

fn invalid(o: &Options) -> String {
    match Io::<()>::new(o) {
        Err(InitError::InvalidOptions(msg)) => msg.to_string(),
        Err(e) => panic!("expected InvalidOptions for {o:?}, got {e}"),
        Ok(_) => panic!("expected InvalidOptions for {o:?}, got a loop"),
    }
}

/// Io::new "# Errors: InitError::InvalidOptions: a limit is broken; the message names the
/// field", with the limits of Options::ops_max and PoolOptions.
#[test]
fn invalid_options_are_refused_naming_the_field() {
    let o = Options::new(0);
    assert!(invalid(&o).contains("ops_max"), "{}", invalid(&o));
    let o = Options::new(1 << 24);
    assert!(invalid(&o).contains("ops_max"), "{}", invalid(&o));
    let o = pooled(4, 32769, 64);
    assert!(invalid(&o).contains("buffers"), "{}", invalid(&o));
    let o = pooled(4, 4, 0);
    assert!(invalid(&o).contains("buffer_size"), "{}", invalid(&o));
    let o = pooled(4, 4, (16 << 20) + 1);
    assert!(invalid(&o).contains("buffer_size"), "{}", invalid(&o));
    // The same with the fallback options.
    for (name, base) in variants(Options::new(0)) {
        let msg = invalid(&base);
        assert!(msg.contains("ops_max"), "[{name}] {msg}");
    }
    // InitError's Display is not empty.
    let e = Io::<()>::new(&Options::new(0)).err().unwrap();
    assert!(!e.to_string().is_empty());
}

/// Limits that are in range are accepted.
#[test]
fn limits_in_range_are_accepted() {
    for o in [
        Options::new(1),
        pooled(1, 32768, 1),
        pooled(1, 1, 16 << 20),
        pooled(1, 0, 0),
    ] {
        for (name, o) in variants(o) {
            let io: Io<()> = new(name, &o);
            assert_eq!(io.pool_buffers_lent(), 0);
        }
    }
}

/// UringOptions::sq_entries: "At least 1"; defer_taskrun "(requires single_issuer)".
#[test]
fn uring_options_validation() {
    if backend() != BackendKind::IoUring {
        return;
    }
    let mut o = Options::new(4);
    o.uring.sq_entries = 0;
    assert!(invalid(&o).contains("sq_entries"), "{}", invalid(&o));
    let mut o = Options::new(4);
    o.uring.single_issuer = false;
    o.uring.defer_taskrun = true;
    assert!(
        Io::<()>::new(&o).is_err(),
        "defer_taskrun without single_issuer"
    );
}

/// UringOptions::sq_entries: "Operations scheduled past it wait in the overflow queue for the
/// next batch"; Stats::overflow_parked and overflow_len_max count them.
#[test]
fn overflow_queue_on_io_uring() {
    if backend() != BackendKind::IoUring {
        return;
    }
    for (name, mut o) in variants(Options::new(16)) {
        o.uring.sq_entries = 4;
        let mut io: Io<Log> = new(name, &o);
        for tag in 0..10 {
            io.nop(tag, log_unit).unwrap();
        }
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(log.len(), 10, "[{name}] nothing is dropped");
        let s = io.stats();
        assert!(s.overflow_parked >= 6, "[{name}] {s:?}");
        assert!(s.overflow_len_max >= 6, "[{name}] {s:?}");
        assert!(
            s.batch_max <= 4,
            "[{name}] one enter submits at most sq_entries: {s:?}"
        );
    }
}

/// Options::backend: explicit choice overrides DISPATCH_BACKEND; UnsupportedBackend for kqueue
/// on Linux; Stats::fallback is None when nothing fell back.
#[test]
fn explicit_backends() {
    for kind in [
        BackendKind::Epoll,
        BackendKind::KqueueFake,
        BackendKind::IoUring,
    ] {
        let mut o = Options::new(4);
        o.backend = Some(kind);
        let mut io: Io<Log> = match Io::new(&o) {
            Ok(io) => io,
            #[cfg(target_os = "linux")]
            Err(InitError::Unavailable(e)) if kind == BackendKind::IoUring => {
                eprintln!("io_uring unavailable: {e}");
                continue;
            }
            Err(e) => panic!("{kind:?}: {e}"),
        };
        let s = io.stats();
        assert_eq!(s.backend, kind);
        assert_eq!(s.fallback, None, "{kind:?}");
        io.timeout(1, MS, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(log, vec![(1, Ok(()))]);
    }
    if cfg!(target_os = "linux") {
        let mut o = Options::new(4);
        o.backend = Some(BackendKind::Kqueue);
        match Io::<()>::new(&o) {
            Err(InitError::UnsupportedBackend(BackendKind::Kqueue)) => {}
            Err(e) => panic!("kqueue on Linux: {e}"),
            Ok(_) => panic!("kqueue on Linux must be unsupported"),
        }
    }
}

/// BackendKind::from_name / name / ALL.
#[test]
fn backend_names() {
    assert_eq!(
        BackendKind::from_name("io_uring"),
        Some(BackendKind::IoUring)
    );
    assert_eq!(
        BackendKind::from_name("io-uring"),
        Some(BackendKind::IoUring)
    );
    assert_eq!(BackendKind::from_name("epoll"), Some(BackendKind::Epoll));
    assert_eq!(BackendKind::from_name("kqueue"), Some(BackendKind::Kqueue));
    assert_eq!(
        BackendKind::from_name("kqueue-fake"),
        Some(BackendKind::KqueueFake)
    );
    assert_eq!(BackendKind::from_name("nonesuch"), None);
    assert_eq!(BackendKind::ALL.len(), 5);
    for k in BackendKind::ALL {
        assert_eq!(BackendKind::from_name(k.name()), Some(k));
    }
    assert_eq!(BACKEND_ENV, "DISPATCH_BACKEND");
}

/// DISPATCH_BACKEND selects the backend when Options::backend is None.
#[test]
fn environment_selects_the_backend() {
    if let Ok(v) = std::env::var(BACKEND_ENV) {
        let want = BackendKind::from_name(&v).expect("a valid DISPATCH_BACKEND");
        assert_eq!(backend(), want);
        let io: Io<()> = Io::new(&Options::new(1)).unwrap();
        assert_eq!(
            io.stats().fallback,
            None,
            "a forced backend did not fall back"
        );
    }
}

/// InitError::UnknownBackend: "DISPATCH_BACKEND names no backend" (run in a child process,
/// since the environment is global).
#[test]
fn unknown_backend_in_environment() {
    if std::env::var_os("BLACKBOX_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_unknown_backend",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BLACKBOX_CHILD", "1")
        .env(BACKEND_ENV, "nonesuch")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"));
}

#[test]
fn child_unknown_backend() {
    if std::env::var_os("BLACKBOX_CHILD").is_none() {
        return;
    }
    match Io::<()>::new(&Options::new(1)) {
        Err(InitError::UnknownBackend(name)) => assert_eq!(name, "nonesuch"),
        Err(e) => panic!("expected UnknownBackend, got {e}"),
        Ok(io) => panic!("expected UnknownBackend, got {:?}", io.stats().backend),
    }
    // An explicit backend ignores the environment.
    let mut o = Options::new(1);
    o.backend = Some(BackendKind::Epoll);
    assert_eq!(
        Io::<()>::new(&o).unwrap().stats().backend,
        BackendKind::Epoll
    );
}

// ---------------------------------------------------------------------------------------
// Stats, timeouts, nop, turns
// ---------------------------------------------------------------------------------------

/// Stats: counters since Io::new; syscalls_per_op "0 before any"; batch_max "The most
/// operations submitted by one syscall (io_uring), or started in one turn".
#[test]
fn stats_fields() {
    for (name, o) in variants(Options::new(32)) {
        let mut io: Io<Log> = new(name, &o);
        let s = io.stats();
        assert_eq!(s.backend, backend());
        assert_eq!(
            (
                s.ops_completed,
                s.deadlines_expired,
                s.pool_waits,
                s.overflow_parked
            ),
            (0, 0, 0, 0),
            "[{name}]"
        );
        assert_eq!(s.syscalls_per_op(), 0.0, "[{name}]");
        for tag in 0..8 {
            io.nop(tag, log_unit).unwrap();
        }
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        let s = io.stats();
        assert_eq!(s.ops_completed, 8, "[{name}]");
        assert!(s.batch_max >= 8, "[{name}] eight nops in one batch: {s:?}");
        // A timeout makes the loop wait: at least one syscall on every backend.
        io.timeout(9, MS, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        let s = io.stats();
        assert_eq!(s.ops_completed, 9, "[{name}]");
        assert!(s.syscalls >= 1, "[{name}] {s:?}");
        assert!(s.syscalls_per_op() > 0.0);
        assert_eq!(
            s.syscalls_per_op(),
            s.syscalls as f64 / s.ops_completed as f64
        );
        assert_eq!(s.overflow_parked, 0, "[{name}] {s:?}");
        assert_eq!(s.cq_overflows, 0, "[{name}] {s:?}");
        let copy = s;
        assert_eq!(
            copy,
            io.stats(),
            "[{name}] an idle loop's stats do not move"
        );
        assert!(!format!("{:?}", io).is_empty());
    }
}

/// Io::timeout: "Completes with Ok(()) after timeout_ns nanoseconds (never earlier)"; the
/// crate example: timeouts fire in deadline order.
#[test]
fn timeouts_never_early_and_in_order() {
    #[derive(Default)]
    struct C {
        start: Option<Instant>,
        fired: Vec<(Tag, Duration)>,
    }
    for (name, o) in variants(Options::new(16)) {
        let mut io: Io<C> = new(name, &o);
        let mut c = C {
            start: Some(Instant::now()),
            ..Default::default()
        };
        for ns in [7_300_000u64, 1_500_000, 300_000, 12_000_000, 4_000_001, 1] {
            io.timeout(ns, ns, |c, _, tag, r| {
                r.unwrap();
                c.fired.push((tag, c.start.unwrap().elapsed()));
            })
            .unwrap();
        }
        io.run_until_idle(&mut c).unwrap();
        let tags: Vec<u64> = c.fired.iter().map(|f| f.0).collect();
        assert_eq!(
            tags,
            vec![1, 300_000, 1_500_000, 4_000_001, 7_300_000, 12_000_000],
            "[{name}]"
        );
        for (ns, at) in &c.fired {
            assert!(
                *at >= Duration::from_nanos(*ns),
                "[{name}] {ns} ns fired at {at:?}"
            );
        }
    }
}

/// Io::run_for_ns: "Returns at the deadline (an idle loop sleeps ...)"; "ns == 0 is one
/// non-blocking turn".
#[test]
fn run_for_ns_returns_at_its_deadline() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        let start = Instant::now();
        io.run_for_ns(&mut Log::new(), 20 * MS).unwrap();
        assert!(
            start.elapsed() >= Duration::from_millis(20),
            "[{name}] returned early"
        );
        let t = io.timeout(1, LONG, log_unit).unwrap();
        let start = Instant::now();
        let mut log = Log::new();
        io.run_for_ns(&mut log, 15 * MS).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(15), "[{name}]");
        assert!(log.is_empty());
        io.run_for_ns(&mut log, 0).unwrap();
        assert!(log.is_empty());
        io.cancel(2, t, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Err(libc::ECANCELED)]);
    }
}

/// Io::nop: "completes with Ok(()) on the next turn"; Io::tick: "Operations the callbacks
/// schedule go out with the next turn."
#[test]
fn nop_and_callback_scheduling_by_turns() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        io.nop(u64::MAX, |log, io, tag, r| {
            log.push((tag, answer(&r)));
            io.nop(2, log_unit).unwrap();
        })
        .unwrap();
        let mut log = Log::new();
        io.tick(&mut log).unwrap();
        assert_eq!(
            log,
            vec![(u64::MAX, Ok(()))],
            "[{name}] the tag comes back unchanged"
        );
        assert_eq!(
            io.in_flight(),
            1,
            "[{name}] scheduled from the callback, not yet run"
        );
        io.tick(&mut log).unwrap();
        assert_eq!(
            answers(&log, 2),
            vec![Ok(())],
            "[{name}] ran on the next turn"
        );
        assert_eq!(io.in_flight(), 0);
    }
}

/// Io::in_flight: "Operations (cancels included) scheduled whose callbacks have not run yet".
#[test]
fn in_flight_counts() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Log> = new(name, &o);
        assert_eq!(io.in_flight(), 0);
        let a = io.timeout(1, LONG, log_unit).unwrap();
        let b = io.timeout(2, LONG, log_unit).unwrap();
        assert_eq!(io.in_flight(), 2);
        io.cancel(3, a, log_unit).unwrap();
        io.cancel(4, b, log_unit).unwrap();
        assert_eq!(io.in_flight(), 4, "[{name}]");
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(io.in_flight(), 0, "[{name}]");
        assert_eq!(log.len(), 4);
    }
}

/// Io::recv: "the callback gets the byte count (0 at end of stream) and buf with its length
/// extended by it" (receiving into the spare capacity only).
#[test]
fn recv_appends_to_the_buffer_and_reports_eof() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<FileCtx> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"0123456789").unwrap();
        let mut buf = Vec::with_capacity(6);
        buf.extend_from_slice(b"ab");
        io.recv(1, sock.as_raw_fd(), buf, on_file).unwrap();
        let mut c = FileCtx::default();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c, 1), (Ok(()), 4, b"ab0123".to_vec()), "[{name}]");
        drop(peer);
        io.recv(2, sock.as_raw_fd(), Vec::with_capacity(64), on_file)
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c, 2), (Ok(()), 6, b"456789".to_vec()), "[{name}]");
        io.recv(3, sock.as_raw_fd(), Vec::with_capacity(64), on_file)
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c, 3), (Ok(()), 0, vec![]), "[{name}] end of stream");
    }
}

// ---------------------------------------------------------------------------------------
// Harder cases
// ---------------------------------------------------------------------------------------

/// A cancel of a cancel is not among the documented answers (the docs list only closes and
/// cancels of the same target for EALREADY); at least it must not disturb the first cancel,
/// and it must not answer Ok (a cancel "cannot be stopped": DeadlineError::NotCancellable).
#[test]
fn cancel_of_a_cancel_does_not_disturb_it() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        let t = io.timeout(1, LONG, log_unit).unwrap();
        let c1 = io.cancel(2, t, log_unit).unwrap();
        io.cancel(3, c1, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(answers(&log, 2), vec![Ok(())], "[{name}]");
        let a = answers(&log, 3);
        assert_eq!(a.len(), 1);
        assert!(
            a[0] == Err(libc::ENOENT) || a[0] == Err(libc::EALREADY),
            "[{name}] {a:?}"
        );
    }
}

/// Two operations completing in the same turn cancel each other from their callbacks: each
/// runs exactly once with its real result, and each cancel answers Ok or ENOENT.
#[test]
fn cancel_of_an_operation_completed_in_the_same_turn() {
    #[derive(Default)]
    struct C {
        ids: Vec<OpId>,
        log: Log,
    }
    fn cb(c: &mut C, io: &mut Io<C>, tag: Tag, r: io::Result<()>) {
        c.log.push((tag, answer(&r)));
        let other = c.ids[(1 - tag) as usize];
        io.cancel(10 + tag, other, |c, _, t, r| c.log.push((t, answer(&r))))
            .unwrap();
    }
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<C> = new(name, &o);
        let a = io.nop(0, cb).unwrap();
        let b = io.nop(1, cb).unwrap();
        let mut c = C {
            ids: vec![a, b],
            log: vec![],
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(answers(&c.log, 0), vec![Ok(())], "[{name}] {:?}", c.log);
        assert_eq!(answers(&c.log, 1), vec![Ok(())], "[{name}] {:?}", c.log);
        for t in [10, 11] {
            let a = answers(&c.log, t);
            assert_eq!(a.len(), 1, "[{name}]");
            assert!(
                a[0] == Ok(()) || a[0] == Err(libc::ENOENT),
                "[{name}] {a:?}"
            );
        }
    }
}

/// A single-shot operation cancelling itself from its own callback: it has completed, so
/// ENOENT; a multishot cancelling itself while more == true: Ok, then a final ECANCELED.
#[test]
fn self_cancel_from_callback() {
    #[derive(Default)]
    struct C {
        id: Option<OpId>,
        shots: Vec<(Answer, bool)>,
        log: Log,
    }
    for (name, o) in variants(pooled(8, 4, 64)) {
        let mut io: Io<C> = new(name, &o);
        let id = io
            .timeout(1, 0, |c, io, _, r| {
                c.log.push((1, answer(&r)));
                io.cancel(2, c.id.unwrap(), |c, _, t, r| c.log.push((t, answer(&r))))
                    .unwrap();
            })
            .unwrap();
        let mut c = C {
            id: Some(id),
            ..Default::default()
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.log, vec![(1, Ok(())), (2, Err(libc::ENOENT))], "[{name}]");

        let (sock, mut peer) = UnixStream::pair().unwrap();
        let id = io
            .recv_multishot(3, sock.as_raw_fd(), |c, io, _, shot| {
                c.shots.push((answer(&shot.result), shot.more));
                if shot.more {
                    io.cancel(4, c.id.unwrap(), |c, _, t, r| c.log.push((t, answer(&r))))
                        .unwrap();
                }
            })
            .unwrap();
        c = C {
            id: Some(id),
            ..Default::default()
        };
        peer.write_all(b"x").unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.shots[0], (Ok(()), true), "[{name}] {:?}", c.shots);
        assert_eq!(
            c.shots.last().unwrap(),
            &(Err(libc::ECANCELED), false),
            "[{name}] {:?}",
            c.shots
        );
        assert_eq!(c.shots.iter().filter(|s| !s.1).count(), 1, "[{name}]");
        assert_eq!(c.log, vec![(4, Ok(()))], "[{name}]");
    }
}

/// Huge durations: timeout and deadline of u64::MAX nanoseconds are accepted and cancelable
/// (no overflow), and a deadline of 0 fires on the next turn.
#[test]
fn extreme_durations() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        let t = io.timeout(1, u64::MAX, log_unit).unwrap();
        let (sock, _peer) = UnixStream::pair().unwrap();
        let r = io
            .recv(
                2,
                sock.as_raw_fd(),
                Vec::with_capacity(4),
                |l, _, t, (r, _)| l.push((t, answer(&r))),
            )
            .unwrap();
        io.set_deadline(r, u64::MAX).unwrap();
        let t3 = io.timeout(3, u64::MAX - 1, log_unit).unwrap();
        io.set_deadline(t3, 0).unwrap();
        let mut log = Log::new();
        io.run_for_ns(&mut log, 20 * MS).unwrap();
        assert_eq!(
            answers(&log, 3),
            vec![Err(libc::ETIMEDOUT)],
            "[{name}] {log:?}"
        );
        assert!(
            answers(&log, 1).is_empty() && answers(&log, 2).is_empty(),
            "[{name}]"
        );
        io.cancel(4, t, log_unit).unwrap();
        io.cancel(5, r, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(answers(&log, 2), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(io.stats().deadlines_expired, 1);
    }
}

/// A user cancel of an operation with a deadline: ECANCELED, not ETIMEDOUT, nothing expired.
#[test]
fn cancel_before_deadline_is_ecanceled() {
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        let t = io.timeout(1, LONG, log_unit).unwrap();
        io.set_deadline(t, 30 * MS).unwrap();
        io.cancel(2, t, log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1), vec![Err(libc::ECANCELED)], "[{name}]");
        assert_eq!(answers(&log, 2), vec![Ok(())], "[{name}]");
        // The old deadline passes without effect.
        io.timeout(3, 50 * MS, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(io.stats().deadlines_expired, 0, "[{name}]");
    }
}

/// Deadline and cancel of pooled receives, including one that waits for an empty pool and,
/// with the provided-buffer ring masked, one that holds a buffer while pending: the buffer goes
/// back and the pool serves the next receive.
#[test]
fn pooled_receive_deadline_and_cancel_return_buffers() {
    for (name, o) in variants(pooled(8, 1, 64)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let (s1, _p1) = UnixStream::pair().unwrap();
        let id = io.recv_pooled(1, s1.as_raw_fd(), on_pooled).unwrap();
        io.set_deadline(id, 10 * MS).unwrap();
        let mut c = PoolCtx {
            hold: true,
            ..Default::default()
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(
            (c.shots[0].1, c.shots[0].3),
            (Err(libc::ETIMEDOUT), false),
            "[{name}]"
        );
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}]");
        // The single buffer still works; hold it.
        let (s2, mut p2) = UnixStream::pair().unwrap();
        p2.write_all(b"held").unwrap();
        io.recv_pooled(2, s2.as_raw_fd(), on_pooled).unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(&c.shots[1].2[..], b"held", "[{name}]");
        // Now the pool is empty: a receive with data waits; a deadline ends it.
        let (s3, mut p3) = UnixStream::pair().unwrap();
        p3.write_all(b"starved").unwrap();
        let id = io.recv_pooled(3, s3.as_raw_fd(), on_pooled).unwrap();
        io.set_deadline(id, 20 * MS).unwrap();
        let (s4, mut p4) = UnixStream::pair().unwrap();
        p4.write_all(b"starved too").unwrap();
        io.recv_multishot(4, s4.as_raw_fd(), on_pooled).unwrap();
        let start = Instant::now();
        while c.shots.len() < 3 {
            io.run_for_ns(&mut c, 5 * MS).unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "[{name}] {:?}",
                c.shots
            );
        }
        io.run_for_ns(&mut c, 10 * MS).unwrap();
        assert_eq!(c.shots.len(), 3, "[{name}] {:?}", c.shots);
        assert_eq!(
            (c.shots[2].0, c.shots[2].1),
            (3, Err(libc::ETIMEDOUT)),
            "[{name}]"
        );
        assert!(io.stats().pool_waits >= 1, "[{name}]");
        c.held.clear();
        c.hold = false;
        drop(p4);
        io.run_until_idle(&mut c).unwrap();
        let got: Vec<u8> = c
            .shots
            .iter()
            .filter(|s| s.0 == 4)
            .flat_map(|s| s.2.clone())
            .collect();
        assert_eq!(got, b"starved too", "[{name}]");
        let last = c.shots.last().unwrap();
        assert_eq!(
            (last.0, last.1, last.2.len(), last.3),
            (4, Ok(()), 0, false),
            "[{name}]"
        );
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}]");
    }
}

/// Io::recv_pooled where the ring is masked: "receives beyond the pool's size wait for one
/// even if their data has arrived" — and every one completes once buffers come back.
#[test]
fn more_pooled_receives_than_buffers_all_complete() {
    for (name, o) in variants(pooled(32, 2, 64)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let pairs: Vec<_> = (0..12).map(|_| UnixStream::pair().unwrap()).collect();
        for (i, (s, p)) in pairs.iter().enumerate() {
            (&*p).write_all(format!("m{i}").as_bytes()).unwrap();
            io.recv_pooled(i as u64, s.as_raw_fd(), on_pooled).unwrap();
        }
        let mut c = PoolCtx::default();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.shots.len(), 12, "[{name}]");
        for (tag, r, bytes, more, _) in &c.shots {
            assert_eq!((*r, *more), (Ok(()), false));
            assert_eq!(bytes, format!("m{tag}").as_bytes(), "[{name}]");
        }
        assert!(
            c.lent_seen.iter().all(|&n| n <= 2),
            "[{name}] {:?}",
            c.lent_seen
        );
    }
}

/// A panic in a multishot callback with more == true: the multishot goes on, nothing is lost
/// or delivered twice.
#[test]
fn panic_in_multishot_callback_keeps_the_stream() {
    fn cb(c: &mut PoolCtx, io: &mut Io<PoolCtx>, tag: Tag, shot: Shot<PoolBuf>) {
        let first = c.shots.is_empty();
        on_pooled(c, io, tag, shot);
        if first {
            panic!("first shot panics");
        }
    }
    for (name, o) in variants(pooled(8, 4, 64)) {
        let mut io: Io<PoolCtx> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        io.recv_multishot(0, sock.as_raw_fd(), cb).unwrap();
        peer.write_all(b"one").unwrap();
        let mut c = PoolCtx::default();
        let r = catch_unwind(AssertUnwindSafe(|| io.run_until_idle(&mut c)));
        assert!(r.is_err(), "[{name}]");
        peer.write_all(b"two").unwrap();
        drop(peer);
        io.run_until_idle(&mut c).unwrap();
        let got: Vec<u8> = c.shots.iter().flat_map(|s| s.2.clone()).collect();
        assert_eq!(got, b"onetwo", "[{name}] {:?}", c.shots);
        assert_eq!(c.shots.iter().filter(|s| !s.3).count(), 1, "[{name}]");
        io.run_for_ns(&mut c, 0).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "[{name}]");
    }
}

/// accept_multishot cancelled while connections keep arriving: every connection accepted is
/// delivered exactly once (never leaked), and exactly one final callback.
#[test]
fn accept_multishot_cancel_race_leaks_nothing() {
    #[derive(Default)]
    struct C {
        id: Option<OpId>,
        accepted: usize,
        finals: usize,
        cancel: Vec<Answer>,
    }
    fn cb(c: &mut C, io: &mut Io<C>, _: Tag, shot: Shot<OwnedFd>) {
        if shot.result.is_ok() {
            c.accepted += 1;
        }
        if !shot.more {
            c.finals += 1;
        } else if c.accepted == 2 && c.cancel.is_empty() {
            io.cancel(9, c.id.unwrap(), |c, _, _, r| c.cancel.push(answer(&r)))
                .unwrap();
        }
    }
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<C> = new(name, &o);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let id = io.accept_multishot(0, listener.as_raw_fd(), cb).unwrap();
        let clients: Vec<TcpStream> = (0..6).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut c = C {
            id: Some(id),
            ..Default::default()
        };
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.finals, 1, "[{name}]");
        assert_eq!(c.cancel.len(), 1, "[{name}]");
        // What the loop did not accept is still in the backlog.
        listener.set_nonblocking(true).unwrap();
        let mut rest = 0;
        while listener.accept().is_ok() {
            rest += 1;
        }
        assert_eq!(
            c.accepted + rest,
            clients.len(),
            "[{name}] accepted {}",
            c.accepted
        );
    }
}

/// Overflow queue (io_uring): operations parked in it can be cancelled and given deadlines,
/// and a loop dropped with parked operations releases them.
#[test]
fn parked_operations_cancel_deadline_and_drop() {
    if backend() != BackendKind::IoUring {
        return;
    }
    for (name, mut o) in variants(Options::new(16)) {
        o.uring.sq_entries = 1;
        let mut io: Io<Log> = new(name, &o);
        let ids: Vec<OpId> = (0..4)
            .map(|t| io.timeout(t, LONG, log_unit).unwrap())
            .collect();
        io.set_deadline(ids[3], 10 * MS).unwrap();
        io.cancel(10, ids[2], log_unit).unwrap();
        io.cancel(11, ids[1], log_unit).unwrap();
        io.cancel(12, ids[0], log_unit).unwrap();
        let mut log = Log::new();
        io.run_until_idle(&mut log).unwrap();
        for t in 0..3 {
            assert_eq!(
                answers(&log, t),
                vec![Err(libc::ECANCELED)],
                "[{name}] {log:?}"
            );
            assert_eq!(answers(&log, 10 + t), vec![Ok(())], "[{name}] {log:?}");
        }
        assert_eq!(answers(&log, 3), vec![Err(libc::ETIMEDOUT)], "[{name}]");
        assert!(io.stats().overflow_parked >= 1, "[{name}]");
        let (a, mut peer) = UnixStream::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        for t in 0..3 {
            io.timeout(t, LONG, log_unit).unwrap();
        }
        io.close(20, OwnedFd::from(a), log_unit).unwrap();
        drop(io);
        let mut b = [0u8; 1];
        assert_eq!(
            peer.read(&mut b).unwrap(),
            0,
            "[{name}] the parked close closed on drop"
        );
    }
}

/// Two loops in one thread: each waker wakes only its own loop.
#[test]
fn wakers_are_per_loop() {
    for (name, o) in variants(Options::new(4)) {
        let mut a: Io<Log> = new(name, &o);
        let mut b: Io<Log> = new(name, &o);
        let wa = a
            .wait_wakeup(1, |l, _, t, r| l.push((t, answer(&r))))
            .unwrap();
        b.wait_wakeup(2, |l, _, t, r| l.push((t, answer(&r))))
            .unwrap();
        b.waker().wake().unwrap();
        let mut log = Log::new();
        a.run_for_ns(&mut log, 20 * MS).unwrap();
        assert!(log.is_empty(), "[{name}] b's waker woke a");
        b.run_until_idle(&mut log).unwrap();
        assert_eq!(log, vec![(2, Ok(()))]);
        a.cancel(3, wa, |_, _, _, r| r.unwrap()).unwrap();
        a.run_until_idle(&mut log).unwrap();
    }
}

/// A wake-up from inside a callback completes the wait on a later turn of the same run.
#[test]
fn wake_from_a_callback() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<Vec<u64>> = new(name, &o);
        io.wait_wakeup(0, |v, _, _, r| v.push(r.unwrap())).unwrap();
        io.nop(1, |_, io, _, _| io.waker().wake().unwrap()).unwrap();
        let mut v = vec![];
        io.run_until_idle(&mut v).unwrap();
        assert_eq!(v, vec![1], "[{name}]");
    }
}

/// Io::write at u64::MAX on an O_APPEND file appends; reads at u64::MAX on a file opened by
/// Io::openat share its position.
#[test]
fn openat_then_read_write_at_current_position() {
    #[derive(Default)]
    struct C {
        fd: Option<OwnedFd>,
        f: FileCtx,
    }
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<C> = new(name, &o);
        let path = temp_path("append");
        std::fs::write(&path, b"start-").unwrap();
        let p = CString::new(path.to_str().unwrap()).unwrap();
        io.openat(0, -1, p, libc::O_RDWR | libc::O_APPEND, 0, |c, _, _, r| {
            c.fd = Some(r.unwrap())
        })
        .unwrap();
        let mut c = C::default();
        io.run_until_idle(&mut c).unwrap();
        let fd = c.fd.as_ref().unwrap().as_raw_fd();
        io.write(1, fd, b"end".to_vec(), u64::MAX, |c, _, t, (r, b)| {
            c.f.res.push((t, answer(&r), *r.as_ref().unwrap_or(&0), b))
        })
        .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"start-end", "[{name}]");
        io.read(2, fd, Vec::with_capacity(16), 0, |c, _, t, (r, b)| {
            c.f.res.push((t, answer(&r), *r.as_ref().unwrap_or(&0), b))
        })
        .unwrap();
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(one(&c.f, 2).2, b"start-end", "[{name}]");
        io.close(3, c.fd.take().unwrap(), |_, _, _, r| r.unwrap())
            .unwrap();
        io.run_until_idle(&mut c).unwrap();
        std::fs::remove_file(&path).unwrap();
    }
}

/// Many timeouts, a third of them cancelled: each callback runs exactly once, never early,
/// and the cancelled ones get ECANCELED.
#[test]
fn timer_stress_with_cancels() {
    #[derive(Default)]
    struct C {
        start: Option<Instant>,
        fired: Vec<(Tag, Answer, Duration)>,
    }
    for (name, o) in variants(Options::new(256)) {
        let mut io: Io<C> = new(name, &o);
        let mut c = C {
            start: Some(Instant::now()),
            ..Default::default()
        };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut ids = vec![];
        for tag in 0..200u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ns = x % (30 * MS);
            let id = io
                .timeout(tag, ns, |c, _, t, r| {
                    c.fired.push((t, answer(&r), c.start.unwrap().elapsed()))
                })
                .unwrap();
            ids.push((tag, ns, id));
        }
        for (tag, _, id) in ids.iter().filter(|(t, _, _)| t % 3 == 0) {
            io.cancel(1000 + tag, *id, |_, _, _, r| assert_eq!(answer(&r), Ok(())))
                .unwrap();
        }
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.fired.len(), 200, "[{name}]");
        for (tag, ns, _) in &ids {
            let f: Vec<_> = c.fired.iter().filter(|f| f.0 == *tag).collect();
            assert_eq!(f.len(), 1, "[{name}] tag {tag}");
            if tag % 3 == 0 {
                assert_eq!(f[0].1, Err(libc::ECANCELED), "[{name}] tag {tag}");
            } else {
                assert_eq!(f[0].1, Ok(()), "[{name}] tag {tag}");
                assert!(
                    f[0].2 >= Duration::from_nanos(*ns),
                    "[{name}] tag {tag} early"
                );
            }
        }
    }
}

/// Many receives with deadlines set, moved and cleared: each one with a deadline ends with
/// ETIMEDOUT at or after its last deadline; cleared ones stay pending.
#[test]
fn deadline_stress() {
    #[derive(Default)]
    struct C {
        start: Option<Instant>,
        ends: Vec<(Tag, Answer, Duration)>,
    }
    for (name, o) in variants(Options::new(128)) {
        let mut io: Io<C> = new(name, &o);
        let pairs: Vec<_> = (0..60).map(|_| UnixStream::pair().unwrap()).collect();
        let mut c = C {
            start: Some(Instant::now()),
            ..Default::default()
        };
        let mut plan = vec![];
        for (i, (s, _)) in pairs.iter().enumerate() {
            let tag = i as u64;
            let id = io
                .recv(
                    tag,
                    s.as_raw_fd(),
                    Vec::with_capacity(4),
                    |c, _, t, (r, _)| c.ends.push((t, answer(&r), c.start.unwrap().elapsed())),
                )
                .unwrap();
            io.set_deadline(id, (i as u64 % 7) * MS).unwrap();
            let last = match i % 3 {
                0 => {
                    io.set_deadline(id, (5 + i as u64 % 11) * MS).unwrap();
                    Some(5 + i as u64 % 11)
                }
                1 => {
                    assert_eq!(io.clear_deadline(id), Ok(true));
                    None
                }
                _ => Some(i as u64 % 7),
            };
            plan.push((tag, id, last));
        }
        let start = Instant::now();
        let expected = plan.iter().filter(|p| p.2.is_some()).count();
        while c.ends.len() < expected {
            io.run_for_ns(&mut c, 5 * MS).unwrap();
            assert!(start.elapsed() < Duration::from_secs(5), "[{name}]");
        }
        io.run_for_ns(&mut c, 20 * MS).unwrap();
        assert_eq!(c.ends.len(), expected, "[{name}] a cleared deadline fired");
        for (tag, id, last) in &plan {
            match last {
                Some(ms) => {
                    let e: Vec<_> = c.ends.iter().filter(|e| e.0 == *tag).collect();
                    assert_eq!(e.len(), 1);
                    assert_eq!(e[0].1, Err(libc::ETIMEDOUT), "[{name}]");
                    assert!(e[0].2 >= Duration::from_millis(*ms), "[{name}] early");
                }
                None => {
                    io.cancel(0, *id, |_, _, _, r| r.unwrap()).unwrap();
                }
            }
        }
        io.run_until_idle(&mut c).unwrap();
        assert_eq!(c.ends.len(), 60);
        assert_eq!(io.stats().deadlines_expired, expected as u64, "[{name}]");
    }
}

/// OpId: the generation count detects every stale id over many reuses of one slot.
#[test]
fn stale_ids_over_many_reuses() {
    for (name, o) in variants(Options::new(1)) {
        let mut io: Io<Log> = new(name, &o);
        let mut log = Log::new();
        let mut prev = io.nop(0, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        for i in 1..300u64 {
            let id = io.timeout(i, 0, log_unit).unwrap();
            assert_ne!(id, prev);
            assert_eq!(
                io.set_deadline(prev, MS),
                Err(DeadlineError::NotInFlight),
                "[{name}]"
            );
            prev = id;
            io.run_until_idle(&mut log).unwrap();
        }
        assert_eq!(log.len(), 300);
        assert!(log.iter().all(|l| l.1 == Ok(())), "[{name}]");
    }
}

/// Io::read: "on an empty non-blocking pipe it fails with EAGAIN [epoll, kqueue]; io_uring
/// waits for the data without blocking the loop".
#[test]
fn read_of_empty_nonblocking_pipe() {
    for (name, o) in variants(Options::new(4)) {
        let mut io: Io<FileCtx> = new(name, &o);
        let (r, w) = std::io::pipe().unwrap();
        rustix::fs::fcntl_setfl(&r, rustix::fs::OFlags::NONBLOCK).unwrap();
        let id = io
            .read(1, r.as_raw_fd(), Vec::with_capacity(8), u64::MAX, on_file)
            .unwrap();
        let mut c = FileCtx::default();
        io.run_for_ns(&mut c, 20 * MS).unwrap();
        if backend() == BackendKind::IoUring {
            assert!(c.res.is_empty(), "[{name}] io_uring waits: {:?}", c.res);
            (&w).write_all(b"late").unwrap();
            io.set_deadline(id, LONG).unwrap();
            io.run_until_idle(&mut c).unwrap();
            assert_eq!(one(&c, 1), (Ok(()), 4, b"late".to_vec()), "[{name}]");
        } else {
            assert_eq!(one(&c, 1).0, Err(libc::EAGAIN), "[{name}]");
        }
    }
}

/// Io::openat on io_uring, FIFO without peer: "O_RDONLY opens at once, O_WRONLY fails at once
/// with ENXIO, and with O_CREAT ... the open waits in a kernel worker ... (and can be
/// cancelled)".
#[test]
fn openat_fifo_on_io_uring() {
    if backend() != BackendKind::IoUring {
        return;
    }
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<OpenCtx> = new(name, &o);
        let path = temp_path("ufifo");
        make_fifo(&path);
        let p = CString::new(path.to_str().unwrap()).unwrap();
        let mut ctx = OpenCtx::default();
        io.openat(2, -1, p.clone(), libc::O_WRONLY, 0, on_open)
            .unwrap();
        io.run_until_idle(&mut ctx).unwrap();
        io.openat(1, -1, p.clone(), libc::O_RDONLY, 0, on_open)
            .unwrap();
        io.run_until_idle(&mut ctx).unwrap();
        assert_eq!(open_answer(&ctx, 1), (Ok(()), true), "[{name}]");
        assert_eq!(open_answer(&ctx, 2).0, Err(libc::ENXIO), "[{name}]");
        ctx.fds.clear();
        let id = io
            .openat(3, -1, p, libc::O_WRONLY | libc::O_CREAT, 0o600, on_open)
            .unwrap();
        io.run_for_ns(&mut ctx, 20 * MS).unwrap();
        assert!(
            ctx.res.iter().all(|r| r.0 != 3),
            "[{name}] waits for a peer"
        );
        io.cancel(4, id, |_, _, _, r| assert_eq!(answer(&r), Ok(())))
            .unwrap();
        io.run_until_idle(&mut ctx).unwrap();
        assert_eq!(open_answer(&ctx, 3).0, Err(libc::ECANCELED), "[{name}]");
        std::fs::remove_file(&path).unwrap();
    }
}

/// Portability: "Several sends in flight on one stream socket are served in order on
/// readiness backends".
#[test]
fn sends_in_flight_keep_order_on_readiness_backends() {
    if backend() == BackendKind::IoUring {
        return;
    }
    for (name, o) in variants(Options::new(64)) {
        let mut io: Io<Vec<usize>> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut all = vec![];
            peer.read_to_end(&mut all).unwrap();
            all
        });
        let mut expect = vec![];
        for i in 0..40u8 {
            let chunk = vec![i; 16 * 1024];
            expect.extend_from_slice(&chunk);
            io.send(i as u64, sock.as_raw_fd(), chunk, |v, _, _, (r, b)| {
                assert_eq!(r.unwrap(), b.len(), "a short send");
                v.push(b.len());
            })
            .unwrap();
        }
        let mut v = vec![];
        io.run_until_idle(&mut v).unwrap();
        drop(sock);
        let all = reader.join().unwrap();
        assert!(all == expect, "[{name}] out of order");
    }
}

/// Io (Descriptors): closing a descriptor early is a bug, but "the loop still answers every
/// operation exactly once when it is cancelled, and never hangs on cancel or drop"; "a later
/// operation on the same number fails". Runs in a child process, alone, so that no other
/// test reuses the descriptor number.
#[test]
fn early_close_is_answered_once() {
    if std::env::var_os("BLACKBOX_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_early_close",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BLACKBOX_CHILD", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child failed: {text}"
    );
}

#[test]
fn child_early_close() {
    if std::env::var_os("BLACKBOX_CHILD").is_none() {
        return;
    }
    for (name, o) in variants(Options::new(8)) {
        let mut io: Io<Log> = new(name, &o);
        let (sock, _peer) = UnixStream::pair().unwrap();
        let fd = sock.as_raw_fd();
        let id = io
            .recv(1, fd, Vec::with_capacity(8), |l, _, t, (r, _)| {
                l.push((t, answer(&r)))
            })
            .unwrap();
        let mut log = Log::new();
        io.run_for_ns(&mut log, 5 * MS).unwrap();
        drop(sock); // the bug
        io.run_for_ns(&mut log, 5 * MS).unwrap();
        io.cancel(2, id, log_unit).unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 1).len(), 1, "[{name}] {log:?}");
        // A later operation on the same (now free) number fails.
        io.recv(3, fd, Vec::with_capacity(8), |l, _, t, (r, _)| {
            l.push((t, answer(&r)))
        })
        .unwrap();
        io.run_until_idle(&mut log).unwrap();
        assert_eq!(answers(&log, 3), vec![Err(libc::EBADF)], "[{name}] {log:?}");
        // And a loop dropped with an operation on a closed descriptor does not hang.
        let (sock, _peer) = UnixStream::pair().unwrap();
        io.recv(4, sock.as_raw_fd(), Vec::with_capacity(8), |_, _, _, _| {
            panic!("ran")
        })
        .unwrap();
        io.run_for_ns(&mut log, 5 * MS).unwrap();
        drop(sock);
        drop(io);
    }
}

/// Shot::more: "false: this is its final completion (its slot is free, its id stale)" — in the
/// final callback a loop of one slot can schedule again; while more == true it cannot.
#[test]
fn multishot_slot_is_free_only_in_the_final_callback() {
    #[derive(Default)]
    struct C {
        seen: Vec<(bool, bool)>,
    }
    for (name, o) in variants(pooled(1, 2, 64)) {
        let mut io: Io<C> = new(name, &o);
        let (sock, mut peer) = UnixStream::pair().unwrap();
        peer.write_all(b"data").unwrap();
        drop(peer);
        io.recv_multishot(0, sock.as_raw_fd(), |c, io, _, shot| {
            let scheduled = io.nop(1, |_, _, _, _| {}).is_ok();
            c.seen.push((shot.more, scheduled));
        })
        .unwrap();
        let mut c = C::default();
        io.run_until_idle(&mut c).unwrap();
        let (last, rest) = c.seen.split_last().unwrap();
        assert_eq!(*last, (false, true), "[{name}] {:?}", c.seen);
        assert!(
            !rest.is_empty() && rest.iter().all(|s| *s == (true, false)),
            "[{name}] {:?}",
            c.seen
        );
        assert_eq!(io.in_flight(), 0);
    }
}

/// Io::run_until_idle with nothing in flight returns at once; so does run_for_ns(0).
#[test]
fn idle_runs_return() {
    for (name, o) in variants(Options::new(1)) {
        let mut io: Io<()> = new(name, &o);
        io.run_until_idle(&mut ()).unwrap();
        io.run_for_ns(&mut (), 0).unwrap();
        io.tick(&mut ()).unwrap();
        assert_eq!(io.stats().ops_completed, 0, "[{name}]");
    }
}

/// A FIFO at `path` (mode 0600), made with mkfifo(1), which every target has.
fn make_fifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}
