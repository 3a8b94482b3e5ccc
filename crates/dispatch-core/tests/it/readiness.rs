//! Where a readiness backend once answered differently from io_uring, and must not. Each
//! test runs on the backend `DISPATCH_BACKEND` selects (the suite is rerun per backend):
//! - waits longer than `epoll_wait` can express (`i32::MAX` ms), also on epoll forced with
//!   `epoll_pwait2` blocked, as on kernels before 5.11;
//! - `openat` of an absolute path with any `dir`;
//! - offset `u64::MAX`, the file position (and offsets on pipes, which still differ);
//! - a waker that outlives its loop.

use std::ffi::CString;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc;
use std::time::Duration;

use dispatch_loop::{BufResult, Io, OpId, Options, Tag, Waker};

use crate::check;

/// Thirty days: past `i32::MAX` milliseconds (24.8 days), the longest `epoll_wait` timeout.
const THIRTY_DAYS_NS: u64 = 30 * 24 * 3600 * 1_000_000_000;

/// How long a test waits for a report from a loop thread before calling it hung. A guard
/// against hanging the suite, not a timing threshold: reports come within milliseconds.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// What a loop running on a thread of its own tells the test.
enum Report {
    /// The loop was built; wake it through this.
    Ready(Waker),
    /// The backend cannot run here (`check::io` said why).
    Skipped,
    /// The loop's first turn ran: it waits in the kernel from now on.
    Started,
    /// A wake-up completed, coalescing this many.
    Woken(u64),
    /// `run_for_ns` or `run_until_idle` returned.
    Returned(io::Result<()>),
}

/// How the loop thread runs its loop.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// `run_for_ns(ns)`, which the second wake-up ends with `Io::stop`.
    ForNs(u64),
    /// `run_until_idle` with a timer of `ns` pending, which the second wake-up cancels.
    UntilIdleWithTimer(u64),
}

/// The loop thread's context.
struct Remote {
    reports: mpsc::Sender<Report>,
    wakes_left: u32,
    timer: Option<OpId>,
}

fn on_started(remote: &mut Remote, _: &mut Io<Remote>, _: Tag, result: io::Result<()>) {
    result.unwrap();
    remote.reports.send(Report::Started).unwrap();
}

fn on_woken(remote: &mut Remote, io: &mut Io<Remote>, tag: Tag, result: io::Result<u64>) {
    assert!(remote.wakes_left > 0);
    remote.wakes_left -= 1;
    if remote.wakes_left > 0 {
        io.wait_wakeup(tag, on_woken).unwrap();
    } else if let Some(timer) = remote.timer.take() {
        io.cancel(tag, timer, on_cancel).unwrap();
    } else {
        io.stop();
    }
    remote.reports.send(Report::Woken(result.unwrap())).unwrap();
}

fn on_cancel(_: &mut Remote, _: &mut Io<Remote>, _: Tag, result: io::Result<()>) {
    result.unwrap();
}

fn on_timer(_: &mut Remote, _: &mut Io<Remote>, _: Tag, result: io::Result<()>) {
    let errno = result.expect_err("cancelled, long before it expires");
    assert_eq!(errno.raw_os_error(), Some(libc::ECANCELED));
}

/// Starts a loop for `options` on a thread of its own (where `block_pwait2` first makes
/// `epoll_pwait2` fail with ENOSYS, for that thread only) and runs it as `run` says, with a
/// wake-up wait pending that lasts for two wake-ups.
fn spawn_loop(
    options: Options,
    block_pwait2: bool,
    run: Run,
) -> (mpsc::Receiver<Report>, std::thread::JoinHandle<()>) {
    let (reports, received) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        if block_pwait2 {
            #[cfg(target_os = "linux")]
            check::deny_with_enosys(libc::SYS_epoll_pwait2);
        }
        let Some(mut io) = check::io::<Remote>(&options) else {
            reports.send(Report::Skipped).unwrap();
            return;
        };
        reports.send(Report::Ready(io.waker())).unwrap();
        let mut remote = Remote {
            reports,
            wakes_left: 2,
            timer: None,
        };
        io.nop(1, on_started).unwrap();
        io.wait_wakeup(2, on_woken).unwrap();
        let result = match run {
            Run::ForNs(ns) => io.run_for_ns(&mut remote, ns),
            Run::UntilIdleWithTimer(ns) => {
                remote.timer = Some(io.timeout(3, ns, on_timer).unwrap());
                io.run_until_idle(&mut remote)
            }
        };
        remote.reports.send(Report::Returned(result)).unwrap();
    });
    (received, thread)
}

fn next(reports: &mpsc::Receiver<Report>) -> Report {
    reports
        .recv_timeout(HANG_GUARD)
        .expect("the loop thread reports")
}

/// Wakes the loop twice, after its first turn, and checks that each wake-up completed: the
/// loop was waiting in the kernel with the long timeout, not failing at once. `false` if
/// the backend cannot run here.
fn wakes_a_long_wait_twice(reports: &mpsc::Receiver<Report>, run: Run) -> bool {
    let waker = match next(reports) {
        Report::Ready(waker) => waker,
        Report::Skipped => return false,
        _ => panic!("the loop thread reports Ready or Skipped first"),
    };
    // From the second turn on, the only bound on the wait is the long one.
    assert!(matches!(next(reports), Report::Started));
    for wake in 0..2 {
        waker.wake().unwrap();
        match next(reports) {
            Report::Woken(count) => assert!(count >= 1),
            Report::Returned(result) => {
                panic!("{run:?} returned before wake-up {wake}: {result:?}")
            }
            _ => panic!("an unexpected report"),
        }
    }
    true
}

/// The loop configurations a long wait is checked on: the selected backend, and (on Linux)
/// epoll forced with `epoll_pwait2` blocked, as on kernels before 5.11.
fn long_wait_configurations() -> Vec<(&'static str, Options, bool)> {
    let mut configurations = vec![("selected backend", Options::new(4), false)];
    if cfg!(target_os = "linux") {
        let mut epoll = Options::new(4);
        epoll.backend = Some(dispatch_loop::BackendKind::Epoll);
        configurations.push(("epoll without epoll_pwait2", epoll, true));
    }
    configurations
}

/// Runs the loop as `run` says, in each configuration, and checks that it waited in the
/// kernel across two wake-ups and then returned `Ok`.
fn waits_across_wake_ups_then_returns(run: Run) {
    for (name, options, block_pwait2) in long_wait_configurations() {
        let (reports, thread) = spawn_loop(options, block_pwait2, run);
        if !wakes_a_long_wait_twice(&reports, run) {
            continue;
        }
        // The second wake-up stopped the loop, or cancelled the timer so that it went idle.
        match next(&reports) {
            Report::Returned(result) => {
                result.unwrap_or_else(|error| panic!("{name}: {run:?}: {error}"));
            }
            _ => panic!("{name}: {run:?}: an unexpected report"),
        }
        thread.join().unwrap();
    }
}

#[test]
fn run_for_ns_of_u64_max_waits_without_epoll_pwait2() {
    waits_across_wake_ups_then_returns(Run::ForNs(u64::MAX));
}

#[test]
fn run_for_ns_of_30_days_waits_without_epoll_pwait2() {
    waits_across_wake_ups_then_returns(Run::ForNs(THIRTY_DAYS_NS));
}

#[test]
fn run_until_idle_with_a_30_day_timer_waits_without_epoll_pwait2() {
    waits_across_wake_ups_then_returns(Run::UntilIdleWithTimer(THIRTY_DAYS_NS));
}

/// Every result a test's callbacks saw, in order.
#[derive(Default)]
struct Seen {
    fds: Vec<io::Result<OwnedFd>>,
    bufs: Vec<BufResult>,
}

fn on_fd(seen: &mut Seen, _: &mut Io<Seen>, _: Tag, result: io::Result<OwnedFd>) {
    seen.fds.push(result);
}

fn on_buf(seen: &mut Seen, _: &mut Io<Seen>, _: Tag, result: BufResult) {
    seen.bufs.push(result);
}

fn run(io: &mut Io<Seen>) -> Seen {
    let mut seen = Seen::default();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(io.in_flight(), 0);
    seen
}

/// Opens `path` from `dir` through the loop.
fn open(io: &mut Io<Seen>, dir: i32, path: &[u8]) -> io::Result<OwnedFd> {
    let path = CString::new(path).unwrap();
    io.openat(1, dir, path, libc::O_RDONLY, 0, on_fd).unwrap();
    let mut seen = run(io);
    assert_eq!(seen.fds.len(), 1);
    seen.fds.pop().unwrap()
}

#[test]
fn openat_ignores_dir_for_an_absolute_path() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let path = check::temp_path("absolute");
    std::fs::write(&path, b"absolute").unwrap();
    let absolute = path.as_os_str().as_bytes();
    assert_eq!(absolute.first(), Some(&b'/'));
    // openat(2) ignores `dir` for an absolute path, whatever it holds.
    for dir in [-1, -2, i32::MIN] {
        let fd = open(&mut io, dir, absolute).unwrap_or_else(|e| panic!("dir {dir}: {e}"));
        let mut contents = String::new();
        std::fs::File::from(fd)
            .read_to_string(&mut contents)
            .unwrap();
        assert_eq!(contents, "absolute");
    }
    // A relative path needs a real directory: a negative one (not AT_FDCWD) is EBADF.
    let name = path.file_name().unwrap().as_bytes();
    for dir in [-1, -2] {
        let error = open(&mut io, dir, name).expect_err("no directory");
        assert_eq!(error.raw_os_error(), Some(libc::EBADF), "dir {dir}");
    }
    std::fs::remove_file(path).unwrap();
}

/// The file position of `file`.
fn position(file: &mut std::fs::File) -> u64 {
    file.stream_position().unwrap()
}

#[test]
fn offset_u64_max_writes_and_reads_at_the_file_position() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let path = check::temp_path("position");
    let mut file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let fd = file.as_raw_fd();
    // Two writes at the position: appended in turn, the position advanced past both.
    for part in [&b"abc"[..], b"defg"] {
        io.write(1, fd, part.to_vec(), u64::MAX, on_buf).unwrap();
        let (written, _) = run(&mut io).bufs.pop().unwrap();
        assert_eq!(written.unwrap(), part.len());
    }
    assert_eq!(position(&mut file), 7);
    assert_eq!(std::fs::read(&path).unwrap(), b"abcdefg");
    // Reads at the position go on from where the last one stopped; an offset does not move
    // the position.
    file.seek(SeekFrom::Start(1)).unwrap();
    let mut reads = Vec::new();
    for offset in [u64::MAX, 0, u64::MAX, u64::MAX] {
        io.read(2, fd, Vec::with_capacity(3), offset, on_buf)
            .unwrap();
        let (read, buf) = run(&mut io).bufs.pop().unwrap();
        assert_eq!(read.unwrap(), buf.len());
        reads.push(buf);
    }
    assert_eq!(reads, [&b"bcd"[..], b"abc", b"efg", b""]);
    assert_eq!(position(&mut file), 7);
    drop(file);
    std::fs::remove_file(path).unwrap();
}

/// A pipe: (read end, write end).
fn pipe() -> (std::fs::File, std::fs::File) {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    (reader.into(), writer.into())
}

/// Reads or writes `fd` through the loop at `offset`; the result and the buffer.
fn transfer(io: &mut Io<Seen>, read: bool, fd: i32, offset: u64) -> BufResult {
    if read {
        io.read(1, fd, Vec::with_capacity(64), offset, on_buf)
            .unwrap();
    } else {
        io.write(2, fd, b"w".to_vec(), offset, on_buf).unwrap();
    }
    let mut seen = run(io);
    assert_eq!(seen.bufs.len(), 1);
    seen.bufs.pop().unwrap()
}

#[test]
fn an_offset_on_a_pipe_is_espipe_on_readiness_backends_and_ignored_on_io_uring() {
    let Some(mut io) = check::io::<Seen>(&Options::new(4)) else {
        return;
    };
    let (reader, mut writer) = pipe();
    for offset in [0, 2] {
        writer.write_all(b"p").unwrap();
        let (read, buf) = transfer(&mut io, true, reader.as_raw_fd(), offset);
        let (written, _) = transfer(&mut io, false, writer.as_raw_fd(), offset);
        if check::on_io_uring(&io) {
            assert_eq!((read.unwrap(), buf), (1, b"p".to_vec()), "offset {offset}");
            assert_eq!(written.unwrap(), 1, "offset {offset}");
            transfer(&mut io, true, reader.as_raw_fd(), offset)
                .0
                .unwrap();
        } else {
            assert_eq!(read.unwrap_err().raw_os_error(), Some(libc::ESPIPE));
            assert_eq!(written.unwrap_err().raw_os_error(), Some(libc::ESPIPE));
            transfer(&mut io, true, reader.as_raw_fd(), u64::MAX)
                .0
                .unwrap();
        }
    }
    // At offset u64::MAX (the file position, which a pipe does not have) they agree.
    writer.write_all(b"p").unwrap();
    let (written, _) = transfer(&mut io, false, writer.as_raw_fd(), u64::MAX);
    assert_eq!(written.unwrap(), 1);
    let (read, buf) = transfer(&mut io, true, reader.as_raw_fd(), u64::MAX);
    assert_eq!((read.unwrap(), buf), (2, b"pw".to_vec()));
}

#[test]
fn a_waker_outliving_its_loop_is_harmless() {
    let Some(io) = check::io::<()>(&Options::new(4)) else {
        return;
    };
    let waker = io.waker();
    waker.wake().unwrap();
    drop(io);
    // More than a pipe holds (64 KiB on Linux), for backends that wake through one.
    for _ in 0..(1 << 17) {
        waker.wake().unwrap();
    }
}
