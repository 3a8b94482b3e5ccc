//! Echo correctness under ordinary and awkward traffic: a 16 MiB round trip with half-close,
//! 2,000 concurrent connections each with its own message, connect/close churn, a client
//! that trickles one byte at a time, binary garbage in random sizes, and receive buffers
//! far smaller than the messages. Each checks every byte, and the leak-prone ones that the
//! server's descriptor count returns to its baseline.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::check::{self, Backend, Options, Rng};

every_backend!(
    round_trip_16_mib,
    two_thousand_connections,
    churn,
    trickle,
    garbage,
    small_buffers,
    batch_wait
);

/// 16 MiB written by one thread while another reads; after the half-close the server
/// finishes echoing and closes, so the reader sees every byte, in order, then end-of-file.
fn round_trip_16_mib(backend: Backend) {
    let Some(server) = check::start(&Options::new(backend)) else {
        return;
    };
    let mut rng = Rng::from_env("round_trip_16_mib");
    let data = Arc::new(rng.bytes(16 << 20));
    let echoed = check::round_trip(server.connect(), Arc::clone(&data));
    check::assert_same(&data, &echoed);
}

/// With `--batch-wait-us`, a 1 MiB round trip and 64 ping-pong rounds on a second connection
/// are echoed as without it (a lone message is never held past the wait), and each thread
/// says whether the batch wait is in effect.
fn batch_wait(backend: Backend) {
    let args = ["--batch-wait-us", "200", "--batch-events", "8"];
    let mut options = Options::new(backend);
    options.args = &args;
    let Some(server) = check::start(&options) else {
        return;
    };
    let mut rng = Rng::from_env("batch_wait");
    let data = Arc::new(rng.bytes(1 << 20));
    let echoed = check::round_trip(server.connect(), Arc::clone(&data));
    check::assert_same(&data, &echoed);
    let mut stream = server.connect();
    for round in 0..64_u32 {
        let message = round.to_le_bytes();
        stream.write_all(&message).unwrap();
        let mut back = [0; 4];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(back, message, "round {round}");
    }
    let log = server.stderr_text();
    match backend {
        Backend::IoUring => assert!(
            log.contains("(batch wait 200 µs, 8 events)")
                || log.contains("(no batch wait: it needs io_uring with EXT_ARG, Linux 6.12+)"),
            "{log}"
        ),
        Backend::IoUringMasked => assert!(log.contains("no batch wait"), "{log}"),
        // Readiness backends have no batch wait, and say nothing of it.
        Backend::Epoll | Backend::KqueueFake => assert!(!log.contains("batch wait"), "{log}"),
    }
}

/// The message connection `index` sends: its number, then bytes only it has.
fn distinct_message(index: usize) -> Vec<u8> {
    let mut rng = Rng::new(index as u64);
    let mut message = format!("connection {index:05}:").into_bytes();
    let len = rng.between(1, 600);
    message.extend(rng.bytes(len));
    message
}

/// 2,000 connections open at once (four client threads of 500), each sending a distinct
/// message and reading back exactly its own; afterwards no descriptor is left behind.
fn two_thousand_connections(backend: Backend) {
    const CONNECTIONS: usize = 2000;
    const CLIENT_THREADS: usize = 4;
    check::raise_nofile();
    let Some(server) = check::start(&Options::new(backend)) else {
        return;
    };
    let baseline = server.settled_fd_count();
    let addr = server.addr();
    let opened = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|thread| {
            let opened = Arc::clone(&opened);
            std::thread::spawn(move || {
                let indices = (thread..CONNECTIONS).step_by(CLIENT_THREADS);
                let mut streams = Vec::new();
                for index in indices.clone() {
                    let mut stream = TcpStream::connect_timeout(&addr, check::IO_TIMEOUT)
                        .unwrap_or_else(|e| panic!("connection {index}: connect: {e}"));
                    check::set_timeouts(&stream);
                    stream.write_all(&distinct_message(index)).unwrap();
                    streams.push(stream);
                }
                opened.fetch_add(streams.len(), Ordering::SeqCst);
                // All 2,000 are open before any echo is read (bounded: a failed thread
                // never counts its connections, and then the others go on after 20 s).
                let all = || opened.load(Ordering::SeqCst) == CONNECTIONS;
                check::wait_until(Duration::from_secs(20), all);
                for (index, stream) in indices.zip(&mut streams) {
                    let message = distinct_message(index);
                    let mut echoed = vec![0; message.len()];
                    stream
                        .read_exact(&mut echoed)
                        .unwrap_or_else(|e| panic!("connection {index}: receive: {e}"));
                    assert!(echoed == message, "connection {index} got another's bytes");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client thread failed");
    }
    assert_eq!(opened.load(Ordering::SeqCst), CONNECTIONS);
    server.assert_fds_back_to(baseline);
}

/// 3,000 connections opened and closed as fast as two threads can: a third closed at once,
/// a third after sending a byte (the server echoes into a closed socket), a third after a
/// full echo. The server then serves a new client and holds no extra descriptor.
fn churn(backend: Backend) {
    const CONNECTIONS: usize = 3000;
    let Some(mut server) = check::start(&Options::new(backend)) else {
        return;
    };
    let baseline = server.settled_fd_count();
    let addr = server.addr();
    let threads: Vec<_> = (0..2)
        .map(|thread| {
            std::thread::spawn(move || {
                for index in (thread..CONNECTIONS).step_by(2) {
                    let mut stream = TcpStream::connect_timeout(&addr, check::IO_TIMEOUT)
                        .unwrap_or_else(|e| panic!("connection {index}: connect: {e}"));
                    check::set_timeouts(&stream);
                    match index % 3 {
                        0 => {}
                        1 => stream.write_all(b"x").unwrap(),
                        _ => check::echo(&mut stream, format!("churn {index}").as_bytes()),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a churn thread failed");
    }
    server.assert_alive();
    check::echo(&mut server.connect(), b"still serving after the churn");
    server.assert_fds_back_to(baseline);
}

/// One byte at a time, 2 ms apart, each read back before the next is sent (the server
/// echoes what it has without waiting for more), while another client is served; then the
/// half-close ends the connection.
fn trickle(backend: Backend) {
    let Some(server) = check::start(&Options::new(backend)) else {
        return;
    };
    let mut other = server.connect();
    let mut stream = server.connect();
    for byte in 0..200u8 {
        stream.write_all(&[byte]).unwrap();
        let mut echoed = [0u8; 1];
        stream
            .read_exact(&mut echoed)
            .unwrap_or_else(|e| panic!("the echo of byte {byte}: {e}"));
        assert_eq!(echoed[0], byte);
        if byte % 20 == 0 {
            check::echo(&mut other, format!("the other client at {byte}").as_bytes());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .expect("end-of-file after the half-close");
    assert!(
        rest.is_empty(),
        "{} unexpected bytes after the trickle",
        rest.len()
    );
}

/// Binary garbage: first all 256 byte values in order, then 40 messages of random sizes
/// (1 byte to 70 KiB, larger than the default buffer) of random bytes, each holding every
/// byte value somewhere, sent in random-sized writes, and read back whole after the
/// half-close.
fn garbage(backend: Backend) {
    let Some(server) = check::start(&Options::new(backend)) else {
        return;
    };
    let mut rng = Rng::from_env("garbage");
    let mut stream = server.connect();
    let every_byte: Vec<u8> = (0..=255u8).collect();
    check::echo(&mut stream, &every_byte);
    let mut data = Vec::new();
    for _ in 0..40 {
        let len = rng.between(1, 70 * 1024);
        let mut message = rng.bytes(len);
        if len >= 256 {
            let at = rng.between(0, len - 256);
            message[at..at + 256].copy_from_slice(&every_byte);
        }
        data.extend(message);
    }
    let data = Arc::new(data);
    let writes = Arc::clone(&data);
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut sent = 0;
        while sent < writes.len() {
            let len = rng.between(1, 9000).min(writes.len() - sent);
            writer.write_all(&writes[sent..sent + len]).unwrap();
            sent += len;
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut echoed = Vec::new();
    let result = stream.read_to_end(&mut echoed);
    sender.join().expect("the writer thread");
    result.unwrap_or_else(|e| panic!("receive after {} bytes: {e}", echoed.len()));
    check::assert_same(&data, &echoed);
}

/// `--buffer-size 7`: every receive takes at most 7 bytes, so each message is echoed in
/// many pieces, from a pool of tiny buffers; a 256 KiB round trip still comes back whole.
fn small_buffers(backend: Backend) {
    let mut options = Options::new(backend);
    options.threads = 1;
    options.args = &["--buffer-size", "7"];
    let Some(server) = check::start(&options) else {
        return;
    };
    let mut rng = Rng::from_env("small_buffers");
    check::echo(&mut server.connect(), b"longer than seven bytes");
    let data = Arc::new(rng.bytes(256 * 1024));
    let echoed = check::round_trip(server.connect(), Arc::clone(&data));
    check::assert_same(&data, &echoed);
}
