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
    let noreplace = libc::RENAME_NOREPLACE;
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
    options.backend = Some(BackendKind::Epoll);
    let error = Io::<()>::new(&options)
        .err()
        .expect("65 workers are refused");
    assert!(error.to_string().contains("file_workers"), "{error}");
}
