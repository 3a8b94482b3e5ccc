//! Each operation's success path and its error paths.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use dispatch_loop::{BufResult, Io, Options, ScheduleErrorKind, Tag, AT_FDCWD};

use crate::check;

/// Every result a test's callbacks saw, in order.
#[derive(Default)]
struct Seen {
    fds: Vec<io::Result<OwnedFd>>,
    bufs: Vec<(io::Result<usize>, Vec<u8>)>,
    units: Vec<io::Result<()>>,
}

fn on_fd(seen: &mut Seen, _: &mut Io<Seen>, _: Tag, result: io::Result<OwnedFd>) {
    seen.fds.push(result);
}

fn on_buf(seen: &mut Seen, _: &mut Io<Seen>, _: Tag, result: BufResult) {
    seen.bufs.push(result);
}

fn on_unit(seen: &mut Seen, _: &mut Io<Seen>, _: Tag, result: io::Result<()>) {
    seen.units.push(result);
}

fn errno<T: std::fmt::Debug>(result: &io::Result<T>) -> i32 {
    result
        .as_ref()
        .expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

fn run(io: &mut Io<Seen>) -> Seen {
    let mut seen = Seen::default();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(io.in_flight(), 0);
    seen
}

#[test]
fn open_write_read_close_round_trip() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let path = check::temp_path("round-trip");
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    io.openat(
        1,
        AT_FDCWD,
        c_path,
        libc::O_CREAT | libc::O_RDWR | libc::O_TRUNC,
        0o600,
        on_fd,
    )
    .unwrap();
    let fd = run(&mut io).fds.pop().unwrap().unwrap();

    io.write(2, check::fd(&fd), b"hello, ring".to_vec(), 0, on_buf)
        .unwrap();
    let (written, _) = run(&mut io).bufs.pop().unwrap();
    assert_eq!(written.unwrap(), 11);

    io.fsync(3, check::fd(&fd), on_unit).unwrap();
    run(&mut io).units.pop().unwrap().unwrap();

    io.read(4, check::fd(&fd), Vec::with_capacity(64), 7, on_buf)
        .unwrap();
    let (read, buf) = run(&mut io).bufs.pop().unwrap();
    assert_eq!(read.unwrap(), 4);
    assert_eq!(buf, b"ring");

    io.close(5, fd, on_unit).unwrap();
    run(&mut io).units.pop().unwrap().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn file_errors_reach_the_callback_with_their_errno() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let missing = CString::new("/nonexistent/dispatch-loop/file").unwrap();
    io.openat(1, AT_FDCWD, missing, libc::O_RDONLY, 0, on_fd)
        .unwrap();
    // Not a descriptor. (A number closed here could be reused at once by a test running
    // beside this one, so a closed-descriptor number is not deterministic.)
    let closed = -1;
    io.read(2, closed, Vec::with_capacity(8), 0, on_buf)
        .unwrap();
    io.fsync(3, closed, on_unit).unwrap();
    let seen = run(&mut io);
    assert_eq!(errno(&seen.fds[0]), libc::ENOENT);
    assert_eq!(errno(&seen.bufs[0].0), libc::EBADF);
    assert_eq!(
        seen.bufs[0].1.capacity(),
        8,
        "the buffer comes back on error"
    );
    assert_eq!(errno(&seen.units[0]), libc::EBADF);
}

#[test]
fn accept_connect_send_recv() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = check::tcp_socket();
    io.accept(1, check::fd(&listener), on_fd).unwrap();
    io.connect(
        2,
        check::fd(&client),
        listener.local_addr().unwrap(),
        on_unit,
    )
    .unwrap();
    let mut seen = run(&mut io);
    seen.units.pop().unwrap().unwrap();
    let server = seen.fds.pop().unwrap().unwrap();
    // The same on every backend: non-blocking and close-on-exec.
    let flags = rustix::fs::fcntl_getfl(&server).unwrap();
    assert!(flags.contains(rustix::fs::OFlags::NONBLOCK));
    let fd_flags = rustix::io::fcntl_getfd(&server).unwrap();
    assert!(fd_flags.contains(rustix::io::FdFlags::CLOEXEC));

    io.send(3, check::fd(&client), b"ping".to_vec(), on_buf)
        .unwrap();
    io.recv(4, check::fd(&server), Vec::with_capacity(16), on_buf)
        .unwrap();
    let seen = run(&mut io);
    assert_eq!(seen.bufs.len(), 2);
    let (sent, _) = &seen.bufs[0];
    assert_eq!(*sent.as_ref().unwrap(), 4);
    let (received, buf) = &seen.bufs[1];
    assert_eq!(*received.as_ref().unwrap(), 4);
    assert_eq!(buf, b"ping");
}

#[test]
fn connect_refused() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let socket = check::tcp_socket();
    io.connect(1, check::fd(&socket), addr, on_unit).unwrap();
    assert_eq!(errno(&run(&mut io).units[0]), libc::ECONNREFUSED);
}

#[test]
fn reset_peer_fails_recv_and_send_without_a_signal() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let (client, server) = check::tcp_pair();
    check::reset(client);
    io.recv(1, check::fd(&server), Vec::with_capacity(8), on_buf)
        .unwrap();
    let seen = run(&mut io);
    assert_eq!(errno(&seen.bufs[0].0), libc::ECONNRESET);
    // After the reset, sending fails with EPIPE (MSG_NOSIGNAL: no SIGPIPE kills the test;
    // some BSDs say ECONNRESET).
    io.send(2, check::fd(&server), vec![1; 4], on_buf).unwrap();
    let seen = run(&mut io);
    let send_errno = errno(&seen.bufs[0].0);
    assert!(
        matches!(send_errno, libc::EPIPE | libc::ECONNRESET),
        "{send_errno}"
    );
}

#[test]
fn shutdown_write_is_seen_as_end_of_stream_and_the_other_half_still_works() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let (mut client, server) = check::tcp_pair();
    io.shutdown(1, check::fd(&server), Shutdown::Write, on_unit)
        .unwrap();
    run(&mut io).units.pop().unwrap().unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    client.write_all(b"still open").unwrap();
    drop(client);
    io.recv(2, check::fd(&server), Vec::with_capacity(32), on_buf)
        .unwrap();
    let (received, buf) = run(&mut io).bufs.pop().unwrap();
    assert_eq!(received.unwrap(), 10);
    assert_eq!(buf, b"still open");
    io.recv(3, check::fd(&server), buf, on_buf).unwrap();
    let (received, _) = run(&mut io).bufs.pop().unwrap();
    assert_eq!(received.unwrap(), 0, "end of stream after the peer closed");
    io.shutdown(4, -1, Shutdown::Both, on_unit).unwrap();
    assert_eq!(errno(&run(&mut io).units[0]), libc::EBADF);
}

#[test]
fn misuse_and_full_tables_are_typed_errors_that_return_the_value() {
    let Some(mut io) = check::io::<Seen>(&Options::new(2)) else {
        return;
    };
    let (_client, server) = check::tcp_pair();
    let full = vec![0_u8; 4];
    let error = io.recv(1, check::fd(&server), full, on_buf).unwrap_err();
    assert_eq!(error.kind, ScheduleErrorKind::NoSpareCapacity);
    assert_eq!(error.value.len(), 4);

    io.timeout(1, 1_000_000, on_unit).unwrap();
    io.timeout(2, 1_000_000, on_unit).unwrap();
    let error = io
        .send(3, check::fd(&server), vec![7; 3], on_buf)
        .unwrap_err();
    assert_eq!(error.kind, ScheduleErrorKind::SlotsExhausted { ops_max: 2 });
    assert_eq!(error.value, vec![7; 3]);
    assert!(error.to_string().contains("ops_max"));
    let file = std::fs::File::open("/dev/null").unwrap();
    let error = io.close(4, file.into(), on_unit).unwrap_err();
    drop(error.value);
    assert_eq!(run(&mut io).units.len(), 2);
}

#[test]
fn invalid_options_are_rejected_with_the_field_named() {
    let mut options = Options::new(8);
    options.ops_max = 0;
    let error = Io::<()>::new(&options).unwrap_err();
    assert!(error.to_string().contains("ops_max"), "{error}");
    let mut options = Options::new(8);
    options.uring.single_issuer = false;
    let error = Io::<()>::new(&options).unwrap_err();
    assert!(error.to_string().contains("defer_taskrun"), "{error}");
}

#[test]
fn every_ring_flag_combination_runs_the_same_work() {
    for mask in 0..16_u32 {
        let mut options = Options::new(8);
        options.uring.single_issuer = mask & 1 != 0;
        options.uring.defer_taskrun = mask & 3 == 3;
        options.uring.coop_taskrun = mask & 4 != 0;
        options.uring.submit_all = mask & 8 != 0;
        let Some(mut io) = check::io::<Seen>(&options) else {
            return;
        };
        let (client, server) = check::tcp_pair();
        io.send(1, check::fd(&client), b"flags".to_vec(), on_buf)
            .unwrap();
        io.recv(2, check::fd(&server), Vec::with_capacity(8), on_buf)
            .unwrap();
        let seen = run(&mut io);
        assert_eq!(seen.bufs[1].1, b"flags", "options {options:?}");
    }
}

#[test]
fn nops_complete_in_one_turn() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    for tag in 0..8 {
        io.nop(tag, on_unit).unwrap();
    }
    let mut seen = Seen::default();
    io.tick(&mut seen).unwrap();
    assert_eq!(seen.units.len(), 8);
    assert!(seen.units.iter().all(Result::is_ok));
    // One io_uring_enter; none at all where nops never leave userspace.
    assert!(io.stats().syscalls <= 1, "{:?}", io.stats());
    assert_eq!(io.in_flight(), 0);
}

#[test]
fn accept_on_a_socket_that_is_not_listening_and_write_to_a_read_only_file_fail() {
    let Some(mut io) = check::io::<Seen>(&Options::new(8)) else {
        return;
    };
    let socket = check::tcp_socket();
    io.accept(1, check::fd(&socket), on_fd).unwrap();
    let read_only = std::fs::File::open("/dev/null").unwrap();
    io.write(2, check::fd(&read_only), b"nope".to_vec(), 0, on_buf)
        .unwrap();
    let seen = run(&mut io);
    assert_eq!(errno(&seen.fds[0]), libc::EINVAL);
    assert_eq!(errno(&seen.bufs[0].0), libc::EBADF);
    assert_eq!(seen.bufs[0].1, b"nope", "the buffer comes back unchanged");
}
