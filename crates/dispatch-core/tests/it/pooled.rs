//! Pooled receives (single and multishot), multishot accept and pooled sends, on every
//! backend, each twice on io_uring: with the kernel's provided-buffer ring and multishot,
//! and with both masked (`UringOptions::pbuf_ring`, `multishot`), so that the loop's own
//! fallbacks (buffer picked at submission, single-shot re-arming) run here too.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use dispatch_loop::{Io, Options, PoolBuf, ScheduleErrorKind, Shot, Tag};

use crate::check;

/// What the callbacks saw.
#[derive(Default)]
struct Got {
    bytes: Vec<u8>,
    /// Buffers the test keeps instead of dropping (to run the pool dry).
    held: Vec<PoolBuf>,
    hold: bool,
    /// `(tag, more, errno)` per callback; errno 0 for success.
    shots: Vec<(Tag, bool, i32)>,
    sockets: Vec<OwnedFd>,
}

impl Got {
    fn finals(&self, tag: Tag) -> Vec<i32> {
        self.shots
            .iter()
            .filter(|(t, more, _)| *t == tag && !more)
            .map(|&(_, _, errno)| errno)
            .collect()
    }
}

fn errno<T>(result: &std::io::Result<T>) -> i32 {
    result
        .as_ref()
        .map_or_else(|error| error.raw_os_error().expect("an OS error"), |_| 0)
}

fn on_data(got: &mut Got, _: &mut Io<Got>, tag: Tag, shot: Shot<PoolBuf>) {
    got.shots.push((tag, shot.more, errno(&shot.result)));
    if let Ok(buf) = shot.result {
        got.bytes.extend_from_slice(&buf);
        if got.hold {
            got.held.push(buf);
        }
    }
}

fn on_accept(got: &mut Got, _: &mut Io<Got>, tag: Tag, shot: Shot<OwnedFd>) {
    got.shots.push((tag, shot.more, errno(&shot.result)));
    if let Ok(socket) = shot.result {
        got.sockets.push(socket);
    }
}

fn on_cancel(got: &mut Got, _: &mut Io<Got>, tag: Tag, result: std::io::Result<()>) {
    got.shots.push((tag, false, errno(&result)));
}

const SINGLE: Tag = 100;

/// The loops each test runs on: the backend under test, and on io_uring the same with the
/// provided-buffer ring and multishot masked.
fn loops(buffers: u32, buffer_size: u32) -> Vec<Io<Got>> {
    check::pool_loops(buffers, buffer_size, &[(true, true), (false, false)])
}

/// Runs until `done` holds, at most 200 turns of up to 10 ms (bounded: a lost wake-up fails
/// the test instead of hanging it).
fn run_until(io: &mut Io<Got>, got: &mut Got, done: impl Fn(&Got) -> bool) {
    for _ in 0..200 {
        if done(got) {
            return;
        }
        io.run_for_ns(got, 10_000_000).unwrap();
    }
    assert!(done(got), "not done after 200 turns");
}

#[test]
fn a_pooled_recv_gets_its_bytes_in_a_pool_buffer() {
    for mut io in loops(4, 64) {
        let mut got = Got::default();
        let (socket, mut peer) = UnixStream::pair().unwrap();
        io.recv_pooled(SINGLE, socket.as_raw_fd(), on_data).unwrap();
        io.tick(&mut got).unwrap();
        assert_eq!(
            io.pool_buffers_lent(),
            0,
            "a pending receive is not a lent buffer"
        );
        peer.write_all(b"pooled").unwrap();
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.bytes, b"pooled");
        assert_eq!(got.finals(SINGLE), vec![0]);
        assert_eq!(io.pool_buffers_lent(), 1, "taken back at the next turn");
        io.tick(&mut got).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0);
    }
}

#[test]
fn a_multishot_recv_delivers_a_stream_in_order_then_one_final_callback() {
    for (kernel_multishot, mut io) in loops(4, 16).into_iter().enumerate().map(|(i, io)| {
        // The first loop on io_uring uses the kernel's multishot where the kernel has it
        // (6.0+) and the suite does not mask it: `Stats::uring` says which.
        let kernel = i == 0 && io.stats().uring.is_some_and(|uring| uring.multishot);
        if i == 0 && check::on_io_uring(&io) && !check::uring_extras_masked() && !kernel {
            eprintln!("note: this kernel has no multishot receive; the loop re-arms");
        }
        (kernel, io)
    }) {
        let mut got = Got::default();
        let (socket, mut peer) = UnixStream::pair().unwrap();
        io.recv_multishot(1, socket.as_raw_fd(), on_data).unwrap();
        let mut sent = Vec::new();
        for round in 0..20_u8 {
            let chunk = [round; 24];
            peer.write_all(&chunk).unwrap();
            sent.extend_from_slice(&chunk);
            io.run_for_ns(&mut got, 1_000_000).unwrap();
        }
        drop(peer);
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.bytes, sent, "every byte, in order");
        assert_eq!(
            got.finals(1),
            vec![0],
            "one final callback: the end of stream"
        );
        assert!(got.shots.iter().filter(|shot| shot.1).count() >= 2);
        let submitted = io.stats().ops_submitted;
        if kernel_multishot {
            assert_eq!(submitted, 1, "one submission, many completions");
        } else {
            assert!(
                submitted > 2,
                "re-armed by the loop: {submitted} submissions"
            );
        }
        io.tick(&mut got).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "every buffer back");
    }
}

/// Two buffers of 8 bytes, 64 bytes sent, every buffer held by the program: the receive
/// waits (it does not fail), and completes in order once the buffers come back.
#[test]
fn a_dry_pool_makes_receives_wait_not_fail() {
    for mut io in loops(2, 8) {
        let mut got = Got {
            hold: true,
            ..Got::default()
        };
        let (socket, mut peer) = UnixStream::pair().unwrap();
        io.recv_multishot(1, socket.as_raw_fd(), on_data).unwrap();
        let sent: Vec<u8> = (0..64).collect();
        peer.write_all(&sent).unwrap();
        run_until(&mut io, &mut got, |got| got.held.len() == 2);
        io.run_for_ns(&mut got, 5_000_000).unwrap();
        assert_eq!(
            got.bytes.len(),
            16,
            "two buffers' worth, then the pool is dry"
        );
        assert!(io.stats().pool_waits > 0);
        assert_eq!(io.pool_buffers_lent(), 2);
        got.hold = false;
        got.held.clear();
        run_until(&mut io, &mut got, |got| got.bytes.len() == 64);
        assert_eq!(got.bytes, sent, "nothing lost or reordered");
        assert!(got.finals(1).is_empty(), "still receiving");
        drop(peer);
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.finals(1), vec![0]);
    }
}

/// Cancel at each stage: before any data, between completions, and racing data that
/// arrives in the same turn. Exactly one final callback each time, and every buffer back.
#[test]
fn cancelling_a_multishot_recv_ends_it_with_one_final_callback() {
    for mut io in loops(4, 16) {
        let mut got = Got::default();
        let (socket, mut peer) = UnixStream::pair().unwrap();
        let fd = socket.as_raw_fd();
        // Before data.
        let before = io.recv_multishot(1, fd, on_data).unwrap();
        io.tick(&mut got).unwrap();
        io.cancel(11, before, on_cancel).unwrap();
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.finals(1), vec![libc::ECANCELED]);
        // Between completions.
        let between = io.recv_multishot(2, fd, on_data).unwrap();
        peer.write_all(b"first").unwrap();
        run_until(&mut io, &mut got, |got| got.bytes.len() == 5);
        io.cancel(12, between, on_cancel).unwrap();
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.finals(2), vec![libc::ECANCELED]);
        // Racing data: written, then cancelled before the loop turns.
        let racing = io.recv_multishot(3, fd, on_data).unwrap();
        io.tick(&mut got).unwrap();
        peer.write_all(b"second").unwrap();
        io.cancel(13, racing, on_cancel).unwrap();
        io.run_until_idle(&mut got).unwrap();
        let finals = got.finals(3);
        assert_eq!(finals.len(), 1, "exactly one final callback: {finals:?}");
        // The racing bytes were delivered, or are still in the socket for the next receive.
        drop(peer);
        io.recv_multishot(4, fd, on_data).unwrap();
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.finals(4), vec![0]);
        assert_eq!(got.bytes, b"firstsecond");
        io.tick(&mut got).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0, "every buffer back");
    }
}

#[test]
fn a_reset_peer_ends_a_multishot_recv_with_an_error() {
    for mut io in loops(4, 64) {
        let mut got = Got::default();
        let (client, server) = check::tcp_pair();
        io.recv_multishot(1, server.as_raw_fd(), on_data).unwrap();
        (&client).write_all(b"before the reset").unwrap();
        run_until(&mut io, &mut got, |got| got.bytes.len() == 16);
        check::reset(client);
        io.run_until_idle(&mut got).unwrap();
        let finals = got.finals(1);
        assert_eq!(finals.len(), 1);
        assert!(
            finals[0] == libc::ECONNRESET || finals[0] == 0,
            "final: errno {}",
            finals[0]
        );
    }
}

#[test]
fn dropping_the_loop_with_multishots_in_flight_is_clean() {
    for mut io in loops(4, 64) {
        let mut got = Got {
            hold: true,
            ..Got::default()
        };
        let (socket, mut peer) = UnixStream::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        io.recv_multishot(1, socket.as_raw_fd(), on_data).unwrap();
        io.accept_multishot(2, listener.as_raw_fd(), on_accept)
            .unwrap();
        peer.write_all(b"held past the drop").unwrap();
        run_until(&mut io, &mut got, |got| !got.held.is_empty());
        peer.write_all(b"in flight").unwrap();
        drop(io);
        // Handles outlive the loop: their memory stays until they go.
        assert_eq!(&*got.held[0], &got.bytes[..got.held[0].len()]);
        got.held.clear();
    }
}

#[test]
fn a_multishot_accept_accepts_until_cancelled() {
    for mut io in loops(4, 64) {
        let mut got = Got::default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = io
            .accept_multishot(1, listener.as_raw_fd(), on_accept)
            .unwrap();
        let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        run_until(&mut io, &mut got, |got| got.sockets.len() == 3);
        assert!(got.shots.iter().all(|&(_, more, errno)| more && errno == 0));
        io.cancel(2, accept, on_cancel).unwrap();
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.finals(1), vec![libc::ECANCELED]);
        // The accepted sockets work.
        for (client, socket) in clients.iter().zip(&got.sockets) {
            let (mut client, socket) = (client, socket);
            client.write_all(b"x").unwrap();
            let mut byte = [0];
            let n = rustix::net::recv(socket, &mut byte, rustix::net::RecvFlags::empty()).unwrap();
            assert_eq!(n.0, 1);
        }
    }
}

/// An echo without a copy: the received buffer is sent back as it is.
#[test]
fn a_pool_buffer_is_sent_back_as_it_is() {
    fn on_recv(got: &mut Got, io: &mut Io<Got>, tag: Tag, shot: Shot<PoolBuf>) {
        let buf = shot.result.expect("recv");
        got.bytes.extend_from_slice(&buf);
        let fd = got.sockets[0].as_raw_fd();
        io.send_pooled(tag, fd, buf, |got: &mut Got, _, tag, (sent, buf)| {
            assert_eq!(sent.expect("send"), buf.len());
            got.shots.push((tag, false, 0));
        })
        .unwrap();
    }
    for mut io in loops(4, 64) {
        let (socket, mut peer) = UnixStream::pair().unwrap();
        let mut got = Got {
            sockets: vec![OwnedFd::from(socket)],
            ..Got::default()
        };
        io.recv_pooled(1, got.sockets[0].as_raw_fd(), on_recv)
            .unwrap();
        peer.write_all(b"echo me").unwrap();
        io.run_until_idle(&mut got).unwrap();
        let mut echoed = [0; 7];
        peer.read_exact(&mut echoed).unwrap();
        assert_eq!(&echoed, b"echo me");
        io.tick(&mut got).unwrap();
        assert_eq!(io.pool_buffers_lent(), 0);
    }
}

/// An idle timeout on a multishot receive: a deadline moved on every callback.
#[test]
fn an_idle_multishot_recv_times_out() {
    fn on_recv(got: &mut Got, io: &mut Io<Got>, tag: Tag, shot: Shot<PoolBuf>) {
        on_data(got, io, tag, shot);
    }
    for mut io in loops(4, 64) {
        let mut got = Got::default();
        let (socket, mut peer) = UnixStream::pair().unwrap();
        let recv = io.recv_multishot(1, socket.as_raw_fd(), on_recv).unwrap();
        io.set_deadline(recv, 30_000_000).unwrap();
        peer.write_all(b"alive").unwrap();
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.bytes, b"alive");
        assert_eq!(got.finals(1), vec![libc::ETIMEDOUT]);
    }
}

#[test]
fn pooled_receives_need_a_pool() {
    let Some(mut io) = check::io::<Got>(&Options::new(4)) else {
        return;
    };
    let error = io.recv_pooled(1, 0, on_data).unwrap_err();
    assert_eq!(error.kind, ScheduleErrorKind::NoPool);
    let error = io.recv_multishot(1, 0, on_data).unwrap_err();
    assert_eq!(error.kind, ScheduleErrorKind::NoPool);
}
