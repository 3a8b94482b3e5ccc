//! Clients that misbehave: storms of resets, a client that sends without ever reading, and
//! more clients than the server has descriptors. None may crash the server, stall the
//! clients that behave, leak a descriptor, grow its memory without bound, or make it spin.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use rustix::net::sockopt;

use crate::check::{self, Backend, Options, Rng, Signal};

every_backend!(rst_storm, non_reading_client, fd_exhaustion);

/// 400 connections from two threads, each reset (`SO_LINGER` 0) after: nothing, a small
/// send, a send of up to 256 KiB (the server is mid-echo), or a full echo. Meanwhile and
/// afterwards another client is served, and the descriptor count returns to its baseline.
fn rst_storm(backend: Backend) {
    const RESETS: usize = 400;
    let Some(mut server) = check::start(&Options::new(backend)) else {
        return;
    };
    let baseline = server.settled_fd_count();
    let mut bystander = server.connect();
    let addr = server.addr();
    let threads: Vec<_> = (0..2)
        .map(|thread| std::thread::spawn(move || reset_clients(addr, thread, RESETS)))
        .collect();
    for round in 0..20 {
        check::echo(&mut bystander, format!("bystander {round}").as_bytes());
    }
    for thread in threads {
        thread.join().expect("a reset thread failed");
    }
    server.assert_alive();
    check::echo(&mut bystander, b"after the storm");
    check::echo(&mut server.connect(), b"a new client after the storm");
    drop(bystander);
    server.assert_fds_back_to(baseline);
}

/// Thread `thread` of two: connects, does what `index % 4` says, and resets.
fn reset_clients(addr: SocketAddr, thread: usize, total: usize) {
    let mut rng = Rng::new(thread as u64);
    let big = rng.bytes(256 * 1024);
    for index in (thread..total).step_by(2) {
        let mut stream = TcpStream::connect_timeout(&addr, check::IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connection {index}: connect: {e}"));
        check::set_timeouts(&stream);
        match index % 4 {
            0 => {}
            1 => stream.write_all(&big[..100]).unwrap(),
            2 => {
                // As much as fits without blocking: the server is still echoing it when the
                // reset arrives.
                stream.set_nonblocking(true).unwrap();
                let _ = stream.write(&big);
            }
            _ => check::echo(&mut stream, &big[..1000]),
        }
        sockopt::set_socket_linger(&stream, Some(Duration::ZERO)).unwrap();
        drop(stream);
    }
}

/// The most the kernel can hold of a one-way flood from a client whose own buffers are
/// 64 KiB (the server's receive and send buffers at their autotuning maxima, the client's
/// doubled by the kernel), plus the server's whole receive pool, the most it can ever buffer
/// itself (1,024 buffers of 16 KiB with the defaults and `--threads 1`): a client that does
/// not read must be stopped before it has sent more. Usually it is stopped far sooner (about
/// 9 MB sent on Linux 6.1 under QEMU); once, there, a burst of the kernel's multishot receive
/// filled more than half the pool before the loop's back-pressure cancel landed (21.6 MB sent,
/// against a bound that counted 8 MiB for the server).
fn flood_bound() -> usize {
    const POOL_BYTES: usize = 1024 * 16 * 1024;
    let max = |path: &str| -> usize {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    let kernel = max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem");
    kernel + 4 * 128 * 1024 + POOL_BYTES
}

/// A client that sends without reading stops being read: its writes block well before
/// 64 MiB (more where the kernel's buffers are larger) have gone, while another client on
/// the same loop (`--threads 1`) is echoed a 1 MiB round trip, and the server's resident
/// memory stays below 200 MiB.
fn non_reading_client(backend: Backend) {
    const RSS_MAX_KIB: u64 = 200 * 1024;
    let mut options = Options::new(backend);
    options.threads = 1;
    let Some(mut server) = check::start(&options) else {
        return;
    };
    let bound = flood_bound();
    let payload = (64usize << 20).max(bound + (16 << 20));
    let hog = connect_with_small_buffers(server.addr());
    let (sender, stalled) = mpsc::channel();
    std::thread::spawn(move || sender.send(flood(hog, payload)));
    let (hog, sent) = stalled
        .recv_timeout(Duration::from_secs(60))
        .expect("the flooding client neither stalled nor finished in 60 s");
    eprintln!("the non-reading client sent {sent} bytes before it stalled (bound {bound})");
    assert!(
        sent < payload,
        "the server read all {payload} bytes of a client that never reads"
    );
    assert!(
        sent <= bound,
        "sent {sent} bytes, more than the {bound} buffers can hold"
    );
    let mut rng = Rng::new(7);
    let data = std::sync::Arc::new(rng.bytes(1 << 20));
    let echoed = check::round_trip(server.connect(), std::sync::Arc::clone(&data));
    check::assert_same(&data, &echoed);
    let rss = server.status_kib("VmRSS");
    let peak = server.status_kib("VmHWM");
    eprintln!("server VmRSS {rss} KiB, VmHWM {peak} KiB");
    assert!(
        rss < RSS_MAX_KIB,
        "VmRSS {rss} KiB with a non-reading client"
    );
    assert!(
        peak < RSS_MAX_KIB,
        "VmHWM {peak} KiB with a non-reading client"
    );
    server.assert_alive();
    drop(hog);
    check::echo(&mut server.connect(), b"after the non-reading client left");
}

/// A client socket whose send and receive buffers are set to 64 KiB before it connects.
fn connect_with_small_buffers(addr: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_send_buffer_size(&fd, 64 * 1024).unwrap();
    sockopt::set_socket_recv_buffer_size(&fd, 64 * 1024).unwrap();
    rustix::net::connect(&fd, &addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let stream = TcpStream::from(fd);
    stream.set_nodelay(true).unwrap();
    stream
}

/// Writes up to `payload` bytes without reading, until a write makes no progress for a
/// second; returns the stream (still open) and how much was sent.
fn flood(mut stream: TcpStream, payload: usize) -> (TcpStream, usize) {
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let chunk = vec![0x5a; 64 * 1024];
    let mut sent = 0;
    while sent < payload {
        let len = chunk.len().min(payload - sent);
        match stream.write(&chunk[..len]) {
            Ok(0) => panic!("write returned 0"),
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("the flooding client's write failed after {sent} bytes: {e}"),
        }
    }
    (stream, sent)
}

/// Under `RLIMIT_NOFILE` 64, with 8 clients served and then 100 more connecting: the
/// server serves the 8 while out of descriptors, uses well under a second of CPU per second
/// (no busy accept loop), logs the episode once rather than per retry, survives, and
/// accepts again once the 100 disconnect.
fn fd_exhaustion(backend: Backend) {
    const LIMIT: u64 = 64;
    const EXTRAS: usize = 100;
    check::raise_nofile();
    let mut options = Options::new(backend);
    options.nofile = Some(LIMIT);
    let Some(mut server) = check::start(&options) else {
        return;
    };
    assert_eq!(
        server.nofile_limit(),
        LIMIT,
        "the limit did not reach the server"
    );
    let mut served: Vec<TcpStream> = (0..8).map(|_| server.connect()).collect();
    for (index, stream) in served.iter_mut().enumerate() {
        check::echo(stream, format!("served {index}").as_bytes());
    }
    let extras = flood_with_clients(&server, EXTRAS);
    let echoed = count_echoed(&extras, Duration::from_millis(1500));
    eprintln!("{echoed} of {EXTRAS} extra clients were echoed under the limit");
    assert!(
        echoed < EXTRAS,
        "all {EXTRAS} echoed: the descriptor limit did not bind"
    );
    for (index, stream) in served.iter_mut().enumerate() {
        check::echo(stream, format!("served {index} while exhausted").as_bytes());
    }
    let cpu = server.cpu_over_one_second();
    eprintln!("CPU while out of descriptors: {cpu:?} over 1 s");
    assert!(
        cpu < Duration::from_millis(250),
        "{cpu:?} of CPU in one second while out of descriptors: a busy accept loop?"
    );
    assert_logged_once_per_episode(&server, options.threads);
    server.assert_alive();
    drop(extras);
    let mut late = server.connect();
    check::echo(&mut late, b"accepted again once descriptors were free");
    for (index, stream) in served.iter_mut().enumerate() {
        check::echo(stream, format!("served {index} after").as_bytes());
    }
    drop((late, served));
    let stopped = server.stop(Signal::TERM);
    assert!(stopped.status.success(), "{stopped:?}");
}

/// One steady episode of exhaustion (no descriptor freed for 2.5 s, accepts retried on a
/// timer) is logged at most once per thread, not once per retry: at most two lines per
/// thread besides the `thread I: backend` lines.
fn assert_logged_once_per_episode(server: &check::Server, threads: u32) {
    let log = server.stderr_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| !line.starts_with("thread "))
        .collect();
    eprintln!("stderr while out of descriptors:\n{}", lines.join("\n"));
    assert!(
        lines.len() <= 2 * threads as usize,
        "{} stderr lines in one episode of descriptor exhaustion:\n{log}",
        lines.len()
    );
}

/// `count` clients that connect (the kernel completes the handshake from the backlog even
/// while the server cannot accept) and send one message; non-blocking.
fn flood_with_clients(server: &check::Server, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|index| {
            let mut stream = server.connect();
            stream
                .write_all(format!("extra {index:03}").as_bytes())
                .unwrap();
            stream.set_nonblocking(true).unwrap();
            stream
        })
        .collect()
}

/// How many of `streams` (each sent `extra NNN`) got their message back within `window`.
fn count_echoed(streams: &[TcpStream], window: Duration) -> usize {
    let mut received = vec![Vec::new(); streams.len()];
    let mut closed = vec![false; streams.len()];
    let deadline = std::time::Instant::now() + window;
    while std::time::Instant::now() < deadline {
        for ((mut stream, got), closed) in streams.iter().zip(&mut received).zip(&mut closed) {
            if *closed {
                continue;
            }
            let mut buffer = [0u8; 64];
            match stream.read(&mut buffer) {
                Ok(0) => *closed = true,
                Ok(n) => got.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => *closed = true,
                Err(e) => panic!("an extra client: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let closed = closed.iter().filter(|&&closed| closed).count();
    eprintln!("{closed} extra clients were closed by the server under the limit");
    for (index, got) in received.iter().enumerate() {
        let want = format!("extra {index:03}");
        assert!(
            got.is_empty() || got == want.as_bytes(),
            "extra {index} got {got:?}, not its own message"
        );
    }
    received.iter().filter(|got| !got.is_empty()).count()
}
