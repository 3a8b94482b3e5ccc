//! File operations on worker threads (`Options::file_workers`) on the readiness backends:
//! the same results as inline, a blocked file operation that does not stall the sockets,
//! cancels and deadlines of queued and running operations, a panicking callback, and a drop
//! with operations in flight. Each test picks its backends itself (epoll and kqueue over the
//! kevent double on Linux, kqueue elsewhere), so `DISPATCH_BACKEND` changes nothing here.
//!
//! A file operation that blocks for as long as a test wants is a blocking `write` of 1 MiB
//! to a pipe nobody reads: the worker fills the pipe (which the test sees, `FIONREAD`), then
//! waits inside the syscall until the test drains the pipe. Standing in for a slow `fsync`,
//! it lets the tests know, without timing anything, that a worker is performing it.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use dispatch_loop::{BackendKind, BufResult, FileStat, Io, OpId, Options, Tag, AT_FDCWD};

use crate::check;

/// The readiness backends of this platform.
fn backends() -> Vec<BackendKind> {
    if cfg!(target_os = "linux") {
        vec![BackendKind::Epoll, BackendKind::KqueueFake]
    } else {
        vec![BackendKind::Kqueue]
    }
}

/// A loop on `backend` with `workers` file workers.
fn io_on<C>(backend: BackendKind, workers: u32) -> Io<C> {
    let mut options = Options::new(16);
    options.backend = Some(backend);
    options.file_workers = workers;
    let io = Io::new(&options).unwrap_or_else(|error| panic!("{backend}: {error}"));
    assert_eq!(io.stats().file_workers, workers);
    io
}

fn cstring(path: &Path) -> CString {
    CString::new(path.to_str().unwrap()).unwrap()
}

/// What a program's callbacks saw, in order, and the descriptor an open gave it.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    fd: Option<OwnedFd>,
}

fn errno(error: &std::io::Error) -> String {
    format!("errno {}", error.raw_os_error().unwrap_or(-1))
}

fn on_unit(log: &mut Log, _: &mut Io<Log>, tag: Tag, result: std::io::Result<()>) {
    let line = result.map_or_else(|e| errno(&e), |()| "ok".to_owned());
    log.lines.push(format!("{tag}: {line}"));
}

fn on_fd(log: &mut Log, _: &mut Io<Log>, tag: Tag, result: std::io::Result<OwnedFd>) {
    let line = match result {
        Ok(fd) => {
            log.fd = Some(fd);
            "fd".to_owned()
        }
        Err(error) => errno(&error),
    };
    log.lines.push(format!("{tag}: {line}"));
}

fn on_buf(log: &mut Log, _: &mut Io<Log>, tag: Tag, (result, buf): BufResult) {
    let line = result.map_or_else(|e| errno(&e), |n| n.to_string());
    log.lines
        .push(format!("{tag}: {line} {:?}", String::from_utf8_lossy(&buf)));
}

fn on_bufs(
    log: &mut Log,
    _: &mut Io<Log>,
    tag: Tag,
    (result, bufs): (std::io::Result<usize>, Vec<Vec<u8>>),
) {
    let line = result.map_or_else(|e| errno(&e), |n| n.to_string());
    let bufs: Vec<_> = bufs
        .iter()
        .map(|buf| String::from_utf8_lossy(buf).into_owned())
        .collect();
    log.lines.push(format!("{tag}: {line} {bufs:?}"));
}

fn on_stat(log: &mut Log, _: &mut Io<Log>, tag: Tag, result: std::io::Result<FileStat>) {
    let line = result.map_or_else(
        |e| errno(&e),
        |stat| {
            format!(
                "size {} file {} dir {}",
                stat.size,
                stat.is_file(),
                stat.is_dir()
            )
        },
    );
    log.lines.push(format!("{tag}: {line}"));
}

/// Schedules one operation with `schedule`, runs it to completion, and returns the log.
fn step(io: &mut Io<Log>, log: &mut Log, schedule: impl FnOnce(&mut Io<Log>, RawFd)) {
    let fd = log.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    schedule(io, fd);
    io.run_until_idle(log).unwrap();
}

/// Every file operation, with its error cases, one at a time, in `dir` (made and removed
/// here); what the callbacks saw.
fn every_file_operation(io: &mut Io<Log>, dir: &Path) -> Vec<String> {
    let mut log = Log::default();
    let file = dir.join("f");
    let rw = libc::O_CREAT | libc::O_RDWR;
    step(io, &mut log, |io, _| {
        drop(io.mkdirat(1, AT_FDCWD, cstring(dir), 0o755, on_unit))
    });
    step(io, &mut log, |io, _| {
        drop(io.mkdirat(2, AT_FDCWD, cstring(dir), 0o755, on_unit))
    });
    let missing = dir.join("missing");
    step(io, &mut log, |io, _| {
        drop(io.openat(3, AT_FDCWD, cstring(&missing), 0, 0, on_fd))
    });
    step(io, &mut log, |io, _| {
        drop(io.openat(4, AT_FDCWD, cstring(&file), rw, 0o644, on_fd))
    });
    step(io, &mut log, |io, fd| {
        drop(io.write(5, fd, b"hello world".to_vec(), 0, on_buf))
    });
    let bufs = vec![b"abc".to_vec(), b"def".to_vec()];
    step(io, &mut log, |io, fd| {
        drop(io.write_vectored(6, fd, bufs, 100, 0, on_bufs))
    });
    step(io, &mut log, |io, fd| {
        drop(io.read(7, fd, Vec::with_capacity(64), 0, on_buf))
    });
    let bufs = vec![Vec::with_capacity(2), Vec::with_capacity(3)];
    step(io, &mut log, |io, fd| {
        drop(io.read_vectored(8, fd, bufs, 100, 0, on_bufs))
    });
    step(io, &mut log, |io, fd| drop(io.fsync(9, fd, on_unit)));
    step(io, &mut log, |io, fd| drop(io.fdatasync(10, fd, on_unit)));
    step(io, &mut log, |io, fd| {
        drop(io.fallocate(11, fd, 0, 0, 8192, on_unit))
    });
    step(io, &mut log, |io, _| {
        drop(io.statx(12, AT_FDCWD, cstring(&file), 0, on_stat))
    });
    step(io, &mut log, |io, fd| {
        drop(io.ftruncate(13, fd, 5, on_unit))
    });
    step(io, &mut log, |io, _| {
        drop(io.statx(14, AT_FDCWD, cstring(&file), 0, on_stat))
    });
    step(io, &mut log, |io, fd| {
        drop(io.read(15, fd, Vec::with_capacity(8), 1000, on_buf))
    });
    more_file_operations(io, &mut log, dir);
    log.lines
}

/// The metadata steps and the errors of bad descriptors, after `every_file_operation`.
fn more_file_operations(io: &mut Io<Log>, log: &mut Log, dir: &Path) {
    let (file, moved) = (dir.join("f"), dir.join("g"));
    let noreplace = dispatch_loop::RENAME_NOREPLACE;
    let (f, g) = (cstring(&file), cstring(&moved));
    step(io, log, |io, _| {
        drop(io.renameat(16, AT_FDCWD, f, AT_FDCWD, g, noreplace, on_unit))
    });
    let (f, g) = (cstring(&file), cstring(&moved));
    step(io, log, |io, _| {
        drop(io.renameat(17, AT_FDCWD, f, AT_FDCWD, g, noreplace, on_unit))
    });
    step(io, log, |io, _| {
        drop(io.unlinkat(18, AT_FDCWD, cstring(&moved), 0, on_unit))
    });
    step(io, log, |io, _| {
        drop(io.unlinkat(19, AT_FDCWD, cstring(&moved), 0, on_unit))
    });
    step(io, log, |io, _| {
        drop(io.read(20, -1, Vec::with_capacity(8), 0, on_buf))
    });
    step(io, log, |io, _| {
        drop(io.write(21, -1, b"x".to_vec(), 0, on_buf))
    });
    step(io, log, |io, _| drop(io.fsync(22, -1, on_unit)));
    let removedir = libc::AT_REMOVEDIR;
    step(io, log, |io, _| {
        drop(io.unlinkat(23, AT_FDCWD, cstring(dir), removedir, on_unit))
    });
    step(io, log, |io, _| {
        drop(io.statx(24, AT_FDCWD, cstring(dir), 0, on_stat))
    });
}

/// Every file operation gives the same results through workers as inline, on every
/// readiness backend, and the workers did the syscalls.
#[test]
fn every_file_operation_gives_the_same_results_through_workers_as_inline() {
    let mut seen: Vec<(String, Vec<String>)> = Vec::new();
    for backend in backends() {
        for workers in [0, 2] {
            let mut io = io_on::<Log>(backend, workers);
            let dir = check::temp_path(&format!("workers-{backend}-{workers}"));
            let lines = every_file_operation(&mut io, &dir);
            let stats = io.stats();
            assert_eq!(stats.file_workers, workers);
            assert_eq!(stats.worker_syscalls > 0, workers > 0, "{stats:?}");
            seen.push((format!("{backend} with {workers} workers"), lines));
        }
    }
    let (first, expected) = &seen[0];
    let landmarks = [
        "5: 11 \"hello world\"",
        "8: 5 [\"ab\", \"cde\"]",
        "14: size 5 file true dir false",
    ];
    for line in landmarks {
        assert!(
            expected.iter().any(|seen| seen == line),
            "{line} in {expected:#?}"
        );
    }
    for (name, lines) in &seen[1..] {
        assert_eq!(lines, expected, "{name} against {first}");
    }
}

/// io_uring ignores `file_workers` (the kernel performs file operations), and so does the
/// simulator: neither starts a thread.
#[test]
fn io_uring_and_the_simulator_ignore_file_workers() {
    let mut options = Options::new(4);
    options.file_workers = 2;
    for backend in [BackendKind::IoUring, BackendKind::Sim] {
        options.backend = Some(backend);
        let Some(io) = check::io::<()>(&options) else {
            continue;
        };
        assert_eq!(io.stats().file_workers, 0, "{backend}");
    }
    options.file_workers = 65;
    options.backend = Some(backends()[0]);
    let Err(error) = Io::<()>::new(&options) else {
        panic!("65 workers are refused");
    };
    assert!(error.to_string().contains("file_workers"), "{error}");
}

/// What the callbacks of the blocked-worker tests saw: `(tag, result)` in order, and the
/// echo's progress over a socket pair.
#[derive(Default)]
struct Seen {
    results: Vec<(Tag, String)>,
    pair: Option<(RawFd, RawFd)>,
    echoes: u32,
}

impl Seen {
    fn result(&self, tag: Tag) -> Option<&str> {
        let mut found = self.results.iter().filter(|(t, _)| *t == tag);
        let first = found.next().map(|(_, result)| result.as_str());
        assert!(
            found.next().is_none(),
            "tag {tag} completed twice: {:?}",
            self.results
        );
        first
    }
}

fn seen_buf(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, (result, _): BufResult) {
    let line = result.map_or_else(|e| errno(&e), |n| n.to_string());
    seen.results.push((tag, line));
}

fn seen_unit(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, result: std::io::Result<()>) {
    let line = result.map_or_else(|e| errno(&e), |()| "ok".to_owned());
    seen.results.push((tag, line));
}

const BLOCKED: Tag = 100;
const MIB: usize = 1 << 20;

/// A worker blocked in a 1 MiB write to the pipe `writer` until the test drains `reader`.
struct Blocked {
    reader: std::io::PipeReader,
    _writer: std::io::PipeWriter,
    id: OpId,
}

/// Bytes waiting in the pipe `fd`.
fn pipe_bytes(fd: RawFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int, here a local that outlives the call.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n
}

/// Schedules the blocking write and turns the loop until a worker is inside it.
fn block_a_worker(io: &mut Io<Seen>, seen: &mut Seen) -> Blocked {
    let (reader, writer) = std::io::pipe().unwrap();
    let buf = vec![1; MIB];
    let id = io
        .write(BLOCKED, writer.as_raw_fd(), buf, u64::MAX, seen_buf)
        .unwrap();
    for _ in 0..10_000 {
        io.tick(seen).unwrap();
        if pipe_bytes(reader.as_raw_fd()) > 0 {
            return Blocked {
                reader,
                _writer: writer,
                id,
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!("no worker started the write in 10,000 turns");
}

impl Blocked {
    /// Reads the whole write from another thread, which lets the worker finish it.
    fn drain(mut self) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            let mut all = vec![0; MIB];
            self.reader.read_exact(&mut all).unwrap();
            assert!(all.iter().all(|&byte| byte == 1));
        })
    }
}

/// A scratch file for operations that queue behind the blocked one.
fn scratch(name: &str) -> std::fs::File {
    let path = check::temp_path(name);
    let file = std::fs::File::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}

fn on_echo_recv(seen: &mut Seen, io: &mut Io<Seen>, _: Tag, (result, mut buf): BufResult) {
    assert_eq!(result.unwrap(), 4);
    seen.echoes += 1;
    let (a, _) = seen.pair.unwrap();
    buf.clear();
    buf.extend_from_slice(b"ping");
    if seen.echoes < 100 {
        io.send(1, a, buf, on_echo_sent).unwrap();
    }
}

fn on_echo_sent(seen: &mut Seen, io: &mut Io<Seen>, _: Tag, (result, mut buf): BufResult) {
    assert_eq!(result.unwrap(), 4);
    let (_, b) = seen.pair.unwrap();
    buf.clear();
    io.recv(2, b, buf, on_echo_recv).unwrap();
}

/// The point of the workers: while one is stuck in a file operation (a stand-in for a slow
/// fsync), the loop goes on serving its sockets. Inline, this program would never finish.
#[test]
fn a_file_operation_stuck_in_a_worker_does_not_stall_the_sockets() {
    for backend in backends() {
        let mut io = io_on::<Seen>(backend, 1);
        let mut seen = Seen::default();
        let blocked = block_a_worker(&mut io, &mut seen);
        let (a, b) = UnixStream::pair().unwrap();
        seen.pair = Some((a.as_raw_fd(), b.as_raw_fd()));
        io.send(1, a.as_raw_fd(), b"ping".to_vec(), on_echo_sent)
            .unwrap();
        for _ in 0..10_000 {
            if seen.echoes == 100 {
                break;
            }
            io.run_for_ns(&mut seen, 1_000_000).unwrap();
        }
        assert_eq!(seen.echoes, 100, "{backend}: the echo went on");
        assert_eq!(seen.result(BLOCKED), None, "{backend}: still stuck");
        let drained = blocked.drain();
        io.run_until_idle(&mut seen).unwrap();
        drained.join().unwrap();
        assert_eq!(seen.result(BLOCKED), Some("1048576"), "{backend}");
    }
}

const QUEUED: Tag = 200;
const CANCEL_QUEUED: Tag = 201;
const CANCEL_BLOCKED: Tag = 202;
const AFTER: Tag = 300;

/// A cancel takes back an operation no worker has started (`ECANCELED`, as for any parked
/// operation) and answers `Ok` for one a worker is performing, which then ends with its real
/// result, as an operation in the kernel does on io_uring.
#[test]
fn a_queued_operation_is_cancelled_and_a_running_one_ends_with_its_real_result() {
    for backend in backends() {
        let mut io = io_on::<Seen>(backend, 1);
        let mut seen = Seen::default();
        let blocked = block_a_worker(&mut io, &mut seen);
        let file = scratch(&format!("cancel-{backend}"));
        let queued = io.fsync(QUEUED, file.as_raw_fd(), seen_unit).unwrap();
        io.tick(&mut seen).unwrap();
        io.cancel(CANCEL_QUEUED, queued, seen_unit).unwrap();
        io.cancel(CANCEL_BLOCKED, blocked.id, seen_unit).unwrap();
        io.run_for_ns(&mut seen, 20_000_000).unwrap();
        assert_eq!(
            seen.result(QUEUED),
            Some("errno 125"),
            "{backend}: ECANCELED"
        );
        assert_eq!(seen.result(CANCEL_QUEUED), Some("ok"), "{backend}");
        assert_eq!(seen.result(CANCEL_BLOCKED), Some("ok"), "{backend}");
        assert_eq!(seen.result(BLOCKED), None, "{backend}: still running");
        assert_eq!(io.in_flight(), 1, "{backend}");
        let drained = blocked.drain();
        io.run_until_idle(&mut seen).unwrap();
        drained.join().unwrap();
        assert_eq!(
            seen.result(BLOCKED),
            Some("1048576"),
            "{backend}: its real result"
        );
        // The worker is free again: a new file operation runs.
        io.fsync(AFTER, file.as_raw_fd(), seen_unit).unwrap();
        io.run_until_idle(&mut seen).unwrap();
        assert_eq!(seen.result(AFTER), Some("ok"), "{backend}");
    }
}

/// A deadline works as a cancel does: a queued operation ends `ETIMEDOUT`; one a worker is
/// performing ends with its real result.
#[test]
fn deadlines_of_queued_and_running_file_operations() {
    for backend in backends() {
        let mut io = io_on::<Seen>(backend, 1);
        let mut seen = Seen::default();
        let blocked = block_a_worker(&mut io, &mut seen);
        let file = scratch(&format!("deadline-{backend}"));
        let queued = io.fdatasync(QUEUED, file.as_raw_fd(), seen_unit).unwrap();
        io.set_deadline(queued, 1_000_000).unwrap();
        io.set_deadline(blocked.id, 1_000_000).unwrap();
        io.run_for_ns(&mut seen, 20_000_000).unwrap();
        assert_eq!(
            seen.result(QUEUED),
            Some("errno 110"),
            "{backend}: ETIMEDOUT"
        );
        assert_eq!(seen.result(BLOCKED), None, "{backend}: still running");
        assert!(io.stats().deadlines_expired >= 1, "{backend}");
        let drained = blocked.drain();
        io.run_until_idle(&mut seen).unwrap();
        drained.join().unwrap();
        assert_eq!(
            seen.result(BLOCKED),
            Some("1048576"),
            "{backend}: its real result"
        );
    }
}

fn seen_unit_panics(seen: &mut Seen, io: &mut Io<Seen>, tag: Tag, result: std::io::Result<()>) {
    seen_unit(seen, io, tag, result);
    panic!("a callback of a file operation panics");
}

/// A callback of a file operation that panics: the panic leaves the run, and the loop goes
/// on with the other results and new operations, as for any operation.
#[test]
fn a_panicking_file_callback_leaves_the_loop_usable() {
    for backend in backends() {
        let mut io = io_on::<Seen>(backend, 2);
        let mut seen = Seen::default();
        let file = scratch(&format!("panic-{backend}"));
        let fd = file.as_raw_fd();
        io.fsync(1, fd, seen_unit_panics).unwrap();
        io.fdatasync(2, fd, seen_unit).unwrap();
        io.write(3, fd, b"after".to_vec(), 0, seen_buf).unwrap();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            io.run_until_idle(&mut seen)
        }));
        assert!(run.is_err(), "{backend}: the panic leaves the run");
        io.run_until_idle(&mut seen).unwrap();
        io.fsync(4, fd, seen_unit).unwrap();
        io.run_until_idle(&mut seen).unwrap();
        for (tag, result) in [(1, "ok"), (2, "ok"), (3, "5"), (4, "ok")] {
            assert_eq!(
                seen.result(tag),
                Some(result),
                "{backend}: {:?}",
                seen.results
            );
        }
        assert_eq!(io.in_flight(), 0);
    }
}

/// File worker threads of this process (Linux's `/proc/self/task`); `None` where there is
/// no such directory.
fn threads() -> Option<usize> {
    // The file workers only (`dispatch-file-N`): io_uring's kernel workers (`iou-wrk-*`) are
    // threads of the process too, and on Linux 6.1 one could outlive an earlier loop here.
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let named = |task: std::fs::DirEntry| std::fs::read_to_string(task.path().join("comm"));
    let workers = tasks
        .flatten()
        .filter_map(|task| named(task).ok())
        .filter(|name| name.starts_with("dispatch-file"))
        .count();
    Some(workers)
}

fn drop_with_a_running_and_queued_operations(backend: BackendKind) {
    let (fds_before, threads_before) = (crate::drop_in_flight::open_fds(), threads());
    let file = scratch(&format!("drop-{backend}"));
    let mut io = io_on::<Seen>(backend, 1);
    let mut seen = Seen::default();
    let blocked = block_a_worker(&mut io, &mut seen);
    for tag in 0..4 {
        let buf = vec![2; 4096];
        io.write(tag, file.as_raw_fd(), buf, tag * 4096, seen_buf)
            .unwrap();
    }
    io.tick(&mut seen).unwrap();
    let (go, went) = std::sync::mpsc::channel();
    let drainer = std::thread::spawn(move || {
        went.recv().unwrap();
        // Give the drop time to start waiting; should it not have, nothing is lost but the
        // test's point.
        std::thread::sleep(std::time::Duration::from_millis(50));
        blocked.drain().join().unwrap();
    });
    go.send(()).unwrap();
    drop(io);
    drainer.join().unwrap();
    assert!(
        seen.results.is_empty(),
        "no callback runs on drop: {:?}",
        seen.results
    );
    // The queued writes were cancelled, never performed.
    assert_eq!(file.metadata().unwrap().len(), 0);
    drop(file);
    assert_eq!(
        crate::drop_in_flight::open_fds(),
        fds_before,
        "{backend}: descriptors"
    );
    assert_eq!(
        threads(),
        threads_before,
        "{backend}: the worker was joined"
    );
}

/// Dropping the loop while a worker performs an operation and others wait for one: the
/// drop waits for the running one (its buffer is never freed under it: run it under
/// `cargo xtask sanitize`), drops the queued ones unperformed, joins the worker, and
/// leaves no descriptor or thread behind. Re-run alone in a child, which counts both.
#[test]
fn drop_with_file_operations_in_workers_waits_and_leaks_nothing() {
    if let Some(role) = check::child_role() {
        let backend = BackendKind::from_name(&role).expect("a backend name");
        return drop_with_a_running_and_queued_operations(backend);
    }
    let test = "workers::drop_with_file_operations_in_workers_waits_and_leaks_nothing";
    for backend in backends() {
        let output = check::in_child(test, backend.name(), None);
        assert!(
            check::loop_complaints(&output).is_empty(),
            "{backend}: {output}"
        );
    }
}

/// The environment variable that lets the slow tests run (they are skipped, saying so,
/// without it).
const SLOW_ENV: &str = "DISPATCH_CORE_TEST_SLOW";

fn drop_past_its_wait(backend: BackendKind) {
    let threads_before = threads();
    let mut io = io_on::<Seen>(backend, 1);
    let mut seen = Seen::default();
    let blocked = block_a_worker(&mut io, &mut seen);
    // Waits 10 s for the worker, then gives up and leaves it to finish alone.
    drop(io);
    // The worker finishes the write from the buffer it owns, then exits.
    blocked.drain().join().unwrap();
    for _ in 0..10_000 {
        if threads() == threads_before {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(threads(), threads_before, "{backend}: the worker exited");
}

/// Dropping the loop while a worker is stuck in a syscall for longer than the drop waits
/// (10 s): the drop says so and returns, the worker finishes later from the buffer it owns
/// (no use-after-free: run it under `cargo xtask sanitize`) and exits. Slow: runs only with
/// `DISPATCH_CORE_TEST_SLOW=1`, alone in a child.
#[test]
fn a_worker_stuck_past_the_drop_finishes_alone() {
    if let Some(role) = check::child_role() {
        let backend = BackendKind::from_name(&role).expect("a backend name");
        return drop_past_its_wait(backend);
    }
    if std::env::var_os(SLOW_ENV).is_none() {
        eprintln!("skipped: a_worker_stuck_past_the_drop_finishes_alone takes 10 s ({SLOW_ENV}=1)");
        return;
    }
    let test = "workers::a_worker_stuck_past_the_drop_finishes_alone";
    let backend = backends()[0];
    let output = check::in_child(test, backend.name(), None);
    let complaints = check::loop_complaints(&output);
    assert!(
        complaints
            .iter()
            .any(|line| line.contains("leaving their threads to finish")),
        "{output}"
    );
}
