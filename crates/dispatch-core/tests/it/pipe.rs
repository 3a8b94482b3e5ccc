//! Streams: 1 MiB over loopback with partial sends and receives chained from callbacks, and a
//! pending recv completed by a send from outside the loop.

use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

use dispatch_loop::{BufResult, Io, Options, Tag};

use crate::check;

const TOTAL: usize = 1 << 20;

struct Pipe {
    client: TcpStream,
    server: TcpStream,
    sent: usize,
    received: Vec<u8>,
    short_sends: u32,
    recvs: u32,
}

/// The byte at stream position `i`: a pattern that catches reordering and loss.
fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

fn schedule_send(pipe: &mut Pipe, io: &mut Io<Pipe>, mut buf: Vec<u8>) {
    let len = (TOTAL - pipe.sent).min(256 * 1024);
    buf.clear();
    buf.extend((pipe.sent..pipe.sent + len).map(byte));
    io.send(0, pipe.client.as_raw_fd(), buf, on_sent).unwrap();
}

fn on_sent(pipe: &mut Pipe, io: &mut Io<Pipe>, _: Tag, (result, buf): BufResult) {
    let n = result.unwrap();
    assert!(n > 0);
    if n < buf.len() {
        pipe.short_sends += 1;
    }
    pipe.sent += n;
    if pipe.sent < TOTAL {
        schedule_send(pipe, io, buf);
    }
}

fn on_received(pipe: &mut Pipe, io: &mut Io<Pipe>, _: Tag, (result, mut buf): BufResult) {
    let n = result.unwrap();
    assert!(n > 0, "end of stream before all bytes arrived");
    pipe.recvs += 1;
    pipe.received.extend_from_slice(&buf);
    if pipe.received.len() < TOTAL {
        buf.clear();
        io.recv(1, pipe.server.as_raw_fd(), buf, on_received)
            .unwrap();
    }
}

#[test]
fn one_mebibyte_over_loopback_in_order() {
    let Some(mut io) = check::io::<Pipe>(&Options::new(8)) else {
        return;
    };
    let (client, server) = check::tcp_pair();
    // Small kernel buffers force short sends and many receives.
    rustix::net::sockopt::set_socket_send_buffer_size(&client, 16 * 1024).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&server, 16 * 1024).unwrap();
    let mut pipe = Pipe {
        client,
        server,
        sent: 0,
        received: Vec::new(),
        short_sends: 0,
        recvs: 0,
    };
    schedule_send(&mut pipe, &mut io, Vec::with_capacity(256 * 1024));
    io.recv(
        1,
        pipe.server.as_raw_fd(),
        Vec::with_capacity(8 * 1024),
        on_received,
    )
    .unwrap();
    // Some turns by run_for_ns, the rest until idle.
    for _ in 0..5 {
        io.run_for_ns(&mut pipe, 1_000_000).unwrap();
    }
    io.run_until_idle(&mut pipe).unwrap();
    assert_eq!(pipe.sent, TOTAL);
    assert_eq!(pipe.received.len(), TOTAL);
    assert!(
        pipe.received.iter().enumerate().all(|(i, &b)| b == byte(i)),
        "bytes out of order"
    );
    assert!(pipe.recvs > 16, "8 KiB receives: {}", pipe.recvs);
    eprintln!(
        "short sends: {}, receives: {}",
        pipe.short_sends, pipe.recvs
    );
}

struct Pending {
    got: Option<Vec<u8>>,
}

fn on_pending(pending: &mut Pending, _: &mut Io<Pending>, _: Tag, (result, buf): BufResult) {
    assert_eq!(result.unwrap(), 5);
    pending.got = Some(buf);
}

/// A recv that must wait (nothing sent yet) completes once data is sent from outside the loop.
fn a_pending_recv_completes(server_nonblocking: bool) {
    let Some(mut io) = check::io::<Pending>(&Options::new(4)) else {
        return;
    };
    let (mut client, server) = check::tcp_pair();
    server.set_nonblocking(server_nonblocking).unwrap();
    let mut pending = Pending { got: None };
    io.recv(1, server.as_raw_fd(), Vec::with_capacity(16), on_pending)
        .unwrap();
    io.run_for_ns(&mut pending, 5_000_000).unwrap();
    assert!(pending.got.is_none(), "nothing was sent yet");
    client.write_all(b"hello").unwrap();
    io.run_until_idle(&mut pending).unwrap();
    assert_eq!(pending.got.as_deref(), Some(&b"hello"[..]));
}

#[test]
fn a_pending_recv_is_completed_by_a_send_from_outside_the_loop() {
    a_pending_recv_completes(false);
}

#[test]
fn a_non_blocking_socket_waits_like_a_blocking_one() {
    a_pending_recv_completes(true);
}

struct Concurrent {
    sent: Vec<(Tag, usize)>,
}

fn on_concurrent_send(c: &mut Concurrent, _: &mut Io<Concurrent>, tag: Tag, (r, _): BufResult) {
    c.sent.push((tag, r.unwrap()));
}

#[test]
fn concurrent_sends_on_one_socket_lose_no_write() {
    const SENDS: u8 = 8;
    const EACH: usize = 16 * 1024;
    let Some(mut io) = check::io::<Concurrent>(&Options::new(16)) else {
        return;
    };
    let (client, mut server) = check::tcp_pair();
    // A small send buffer: most sends wait for room, queued on the same socket.
    rustix::net::sockopt::set_socket_send_buffer_size(&client, 8 * 1024).unwrap();
    rustix::net::sockopt::set_socket_recv_buffer_size(&server, 8 * 1024).unwrap();
    let reader = std::thread::spawn(move || {
        // Start late, so that the sends fill the buffers and wait.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut received = Vec::new();
        std::io::Read::read_to_end(&mut server, &mut received).unwrap();
        received
    });
    for tag in 0..SENDS {
        io.send(
            Tag::from(tag),
            client.as_raw_fd(),
            vec![tag; EACH],
            on_concurrent_send,
        )
        .unwrap();
    }
    let mut c = Concurrent { sent: Vec::new() };
    io.run_until_idle(&mut c).unwrap();
    drop(client);
    let received = reader.join().unwrap();
    assert_eq!(c.sent.len(), usize::from(SENDS), "every send completed");
    let total: usize = c.sent.iter().map(|&(_, n)| n).sum();
    assert_eq!(
        received.len(),
        total,
        "what the sends reported is exactly what arrived"
    );
    if !check::on_io_uring(&io) {
        // More syscalls than sends: some sends waited for room (the case under test).
        assert!(io.stats().syscalls > u64::from(SENDS), "{:?}", io.stats());
        // Readiness backends serve one socket's sends in the order they were scheduled.
        // (io_uring retries sends that waited for room in no promised order.)
        let order: Vec<Tag> = c.sent.iter().map(|&(tag, _)| tag).collect();
        assert_eq!(order, (0..Tag::from(SENDS)).collect::<Vec<_>>());
        let mut at = 0;
        for &(tag, n) in &c.sent {
            assert!(
                received[at..at + n].iter().all(|&b| u64::from(b) == tag),
                "send {tag}"
            );
            at += n;
        }
    }
}
