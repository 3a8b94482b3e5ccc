//! Datagrams received into pool buffers (`Io::recv_from_multishot`) on the backend under
//! test, three times on io_uring: the kernel's multishot `RECVMSG` on the provided-buffer
//! ring, the ring with multishot masked (single-shot `RECVMSG` from the ring, re-armed by
//! the loop), and both masked (a buffer picked at submission); and on the simulator's
//! datagram sockets, with loss and duplication. Senders and bytes, truncation, cancel,
//! deadline, a dry pool, a drop in flight, the errors of a socket that is none, and a
//! steady-state echo that allocates nothing.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;

use dispatch_loop::sim::{Sim, SimOptions};
use dispatch_loop::{
    Datagram, Io, Msg, OpId, Options, PoolBuf, PoolOptions, ScheduleErrorKind, Shot, Tag,
};

use crate::check;

/// A datagram as a callback saw it: payload, sender, truncated, true length.
type Seen = (Vec<u8>, Option<SocketAddr>, bool, usize);

/// What the callbacks saw.
#[derive(Default)]
struct Got {
    datagrams: Vec<Seen>,
    /// `(tag, more, errno)` per callback; errno 0 for a datagram.
    shots: Vec<(Tag, bool, i32)>,
    /// Buffers kept instead of dropped (to run the pool dry).
    held: Vec<PoolBuf>,
    hold: bool,
    /// Cancel the operation from the callback once this many datagrams came.
    cancel_after: Option<(usize, OpId)>,
}

impl Got {
    fn finals(&self, tag: Tag) -> Vec<i32> {
        let finals = self.shots.iter().filter(|(t, more, _)| *t == tag && !more);
        finals.map(|&(_, _, errno)| errno).collect()
    }
}

fn on_datagram(got: &mut Got, io: &mut Io<Got>, tag: Tag, shot: Shot<Datagram>) {
    let errno = shot
        .result
        .as_ref()
        .err()
        .map_or(0, |error| error.raw_os_error().expect("an OS error"));
    assert!(got.finals(tag).is_empty(), "a callback after the final one");
    got.shots.push((tag, shot.more, errno));
    if let Ok(datagram) = shot.result {
        let (bytes, peer) = (datagram.buf.to_vec(), datagram.peer);
        got.datagrams
            .push((bytes, peer, datagram.truncated, datagram.len));
        if got.hold {
            got.held.push(datagram.buf);
        }
    }
    if let Some((after, id)) = got.cancel_after {
        if got.datagrams.len() == after {
            got.cancel_after = None;
            io.cancel(999, id, |_, _, _, result| result.unwrap())
                .unwrap();
        }
    }
}

/// The loops each test runs on: the backend under test, and on io_uring also with
/// multishot masked, then with the provided-buffer ring masked too.
fn loops(buffers: u32, buffer_size: u32) -> Vec<Io<Got>> {
    check::pool_loops(
        buffers,
        buffer_size,
        &[(true, true), (true, false), (false, false)],
    )
}

/// Runs until `done` holds, at most 300 turns of up to 10 ms.
fn run_until(io: &mut Io<Got>, got: &mut Got, done: impl Fn(&Got) -> bool) {
    for _ in 0..300 {
        if done(got) {
            return;
        }
        io.run_for_ns(got, 10_000_000).unwrap();
    }
    assert!(
        done(got),
        "not done after 300 turns: {} datagrams, {:?}, {:?}",
        got.datagrams.len(),
        got.shots.last(),
        io.stats()
    );
}

fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Cancels `id` and runs until its final callback: it must be the only final one, and
/// `ECANCELED` (or a datagram the cancel met on its way).
fn cancel_and_finish(io: &mut Io<Got>, got: &mut Got, id: OpId, tag: Tag) {
    io.cancel(999, id, |_, _, _, result| result.unwrap())
        .unwrap();
    io.run_until_idle(got).unwrap();
    let finals = got.finals(tag);
    assert_eq!(finals.len(), 1, "one final callback: {finals:?}");
    assert!(matches!(finals[0], libc::ECANCELED | 0), "{finals:?}");
}

#[test]
fn datagrams_from_several_senders_arrive_with_their_senders_and_bytes() {
    for mut io in loops(16, 2048) {
        let server = udp();
        let senders: Vec<UdpSocket> = (0..4).map(|_| udp()).collect();
        let mut got = Got::default();
        let id = io
            .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        let to = server.local_addr().unwrap();
        // 4 senders × 40 datagrams, sent in bursts between turns, of lengths 1 to 40 (empty
        // ones: `an_empty_datagram_is_a_datagram_not_an_end`).
        for round in 0..4_u8 {
            for i in 0..10_u8 {
                for (s, sender) in senders.iter().enumerate() {
                    let n = round * 10 + i;
                    let payload = vec![s as u8 * 64 + n; usize::from(n) + 1];
                    sender.send_to(&payload, to).unwrap();
                }
            }
            io.run_for_ns(&mut got, 1_000_000).unwrap();
        }
        run_until(&mut io, &mut got, |got| got.datagrams.len() == 160);
        assert!(got.shots.iter().all(|&(_, more, errno)| more && errno == 0));
        for (s, sender) in senders.iter().enumerate() {
            let from = sender.local_addr().unwrap();
            let mut mine: Vec<&Vec<u8>> = got
                .datagrams
                .iter()
                .filter(|(_, peer, ..)| *peer == Some(from))
                .map(|(bytes, ..)| bytes)
                .collect();
            assert_eq!(mine.len(), 40, "sender {s}");
            // Each sender's datagrams arrive in order on loopback.
            for (n, bytes) in mine.drain(..).enumerate() {
                let expected = vec![s as u8 * 64 + n as u8; n + 1];
                assert_eq!(*bytes, expected, "sender {s}, #{n}");
            }
        }
        assert!(got.datagrams.iter().all(|d| !d.2 && d.3 == d.0.len()));
        cancel_and_finish(&mut io, &mut got, id, 1);
        assert_eq!(got.datagrams.len(), 160, "nothing more, nothing less");
        let kernel_multishot = io.stats().uring.is_some_and(|u| u.multishot && u.pbuf_ring);
        if kernel_multishot {
            // The kernel's multishot: a handful of submissions for 160 datagrams.
            assert!(io.stats().ops_submitted < 20, "{:?}", io.stats());
        }
    }
}

#[test]
fn datagrams_queued_together_arrive_in_one_burst() {
    for mut io in loops(16, 128) {
        // A Unix datagram pair, not UDP: its datagrams are queued at the receiver when the
        // send returns, on every OS, where loopback UDP may be delivered later (under QEMU,
        // Linux 6.1 delivered them across hundreds of ticks).
        let (server, sender) = UnixDatagram::pair().unwrap();
        let mut got = Got::default();
        let id = io
            .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        io.run_for_ns(&mut got, 0).unwrap();
        for n in 0..8_u8 {
            sender.send(&[n]).unwrap();
        }
        // The readiness backends take them in one burst, in one turn (a tick: one turn,
        // no wait), as io_uring's kernel multishot takes them in one completion batch;
        // io_uring's single-shot fallbacks take one a turn.
        let readiness = !check::on_io_uring(&io);
        let mut turns = 0;
        while got.datagrams.len() < 8 && turns < 1000 {
            if readiness {
                io.tick(&mut got).unwrap();
            } else {
                io.run_for_ns(&mut got, 10_000_000).unwrap();
            }
            turns += 1;
        }
        assert_eq!(got.datagrams.len(), 8);
        if readiness {
            assert_eq!(turns, 1, "one turn for 8 datagrams");
        }
        let numbers: Vec<u8> = got.datagrams.iter().map(|d| d.0[0]).collect();
        assert_eq!(numbers, (0..8).collect::<Vec<u8>>(), "in order");
        cancel_and_finish(&mut io, &mut got, id, 1);
    }
}

#[test]
fn a_datagram_longer_than_its_buffer_is_reported_truncated() {
    // 64-byte buffers: 44 for the header and sender, 20 for the payload.
    for mut io in loops(4, 64) {
        let (server, sender) = (udp(), udp());
        let mut got = Got::default();
        let id = io
            .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        let long: Vec<u8> = (0..100).collect();
        sender.send_to(&long, server.local_addr().unwrap()).unwrap();
        sender
            .send_to(b"short", server.local_addr().unwrap())
            .unwrap();
        run_until(&mut io, &mut got, |got| got.datagrams.len() == 2);
        let (bytes, peer, truncated, len) = got.datagrams[0].clone();
        assert_eq!(bytes, long[..20], "what fits");
        assert_eq!(peer, Some(sender.local_addr().unwrap()));
        assert!(truncated, "MSG_TRUNC reported");
        if cfg!(target_os = "linux") {
            assert_eq!(len, 100, "the true length, as Linux reports it");
        }
        assert_eq!(got.datagrams[1].0, b"short");
        assert!(!got.datagrams[1].2);
        cancel_and_finish(&mut io, &mut got, id, 1);
    }
}

#[test]
fn a_cancel_from_a_callback_ends_the_stream_with_one_final_callback_and_loses_nothing() {
    for mut io in loops(16, 256) {
        let (server, sender) = (udp(), udp());
        server.set_nonblocking(true).unwrap();
        let mut got = Got::default();
        let id = io
            .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        got.cancel_after = Some((3, id));
        for n in 0..10_u8 {
            sender.send_to(&[n], server.local_addr().unwrap()).unwrap();
        }
        io.run_until_idle(&mut got).unwrap();
        let finals = got.finals(1);
        assert_eq!(finals.len(), 1, "{:?}", got.shots);
        assert!(matches!(finals[0], libc::ECANCELED | 0), "{finals:?}");
        assert!(got.datagrams.len() >= 3);
        // What the loop did not take is still in the socket, in order: nothing dropped.
        let mut all: Vec<u8> = got.datagrams.iter().map(|d| d.0[0]).collect();
        let mut byte = [0; 1];
        while let Ok(1) = server.recv(&mut byte) {
            all.push(byte[0]);
        }
        assert_eq!(all, (0..10).collect::<Vec<u8>>());
    }
}

#[test]
fn an_idle_datagram_receive_times_out() {
    for mut io in loops(4, 256) {
        let server = udp();
        let mut got = Got::default();
        let id = io
            .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        io.set_deadline(id, 20_000_000).unwrap();
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.shots, vec![(1, false, libc::ETIMEDOUT)]);
    }
}

#[test]
fn a_dry_pool_makes_the_receive_wait_then_resume_without_loss() {
    for mut io in loops(4, 128) {
        let (server, sender) = (udp(), udp());
        let mut got = Got {
            hold: true,
            ..Got::default()
        };
        let id = io
            .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        for n in 0..20_u8 {
            sender
                .send_to(&[n; 3], server.local_addr().unwrap())
                .unwrap();
        }
        run_until(&mut io, &mut got, |got| got.datagrams.len() == 4);
        for _ in 0..5 {
            io.run_for_ns(&mut got, 2_000_000).unwrap();
        }
        assert_eq!(got.datagrams.len(), 4, "four buffers, four datagrams");
        assert!(got.finals(1).is_empty(), "waiting, not failed");
        assert!(io.stats().pool_waits >= 1, "{:?}", io.stats());
        got.hold = false;
        got.held.clear();
        run_until(&mut io, &mut got, |got| got.datagrams.len() == 20);
        let mut numbers: Vec<u8> = got.datagrams.iter().map(|d| d.0[0]).collect();
        numbers.sort_unstable();
        assert_eq!(
            numbers,
            (0..20).collect::<Vec<u8>>(),
            "none lost, none twice"
        );
        cancel_and_finish(&mut io, &mut got, id, 1);
    }
}

#[test]
fn an_empty_datagram_is_a_datagram_not_an_end() {
    for mut io in loops(4, 128) {
        let (server, sender) = (udp(), udp());
        let mut got = Got::default();
        let id = io
            .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        sender.send_to(b"", server.local_addr().unwrap()).unwrap();
        run_until(&mut io, &mut got, |got| got.datagrams.len() == 1);
        sender
            .send_to(b"after", server.local_addr().unwrap())
            .unwrap();
        run_until(&mut io, &mut got, |got| got.datagrams.len() == 2);
        assert_eq!(got.datagrams[0].0, b"");
        assert_eq!(got.datagrams[1].0, b"after");
        let from = Some(sender.local_addr().unwrap());
        assert_eq!(got.datagrams[1].1, from);
        // io_uring's single-shot fallback from the ring gets an empty datagram without a
        // buffer, and with every buffer in the ring has none to hold its sender.
        let uring = io.stats().uring;
        let from_ring = uring.is_some_and(|u| u.pbuf_ring && !u.multishot);
        if !from_ring {
            assert_eq!(got.datagrams[0].1, from);
        }
        assert_eq!(got.shots, vec![(1, true, 0), (1, true, 0)]);
        cancel_and_finish(&mut io, &mut got, id, 1);
    }
}

#[test]
fn a_unix_datagram_socket_has_no_sender_address() {
    for mut io in loops(4, 128) {
        let (server, sender) = UnixDatagram::pair().unwrap();
        let mut got = Got::default();
        let id = io
            .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        sender.send(b"unix").unwrap();
        run_until(&mut io, &mut got, |got| got.datagrams.len() == 1);
        assert_eq!(got.datagrams[0].0, b"unix");
        assert_eq!(got.datagrams[0].1, None);
        cancel_and_finish(&mut io, &mut got, id, 1);
    }
}

#[test]
fn dropping_the_loop_with_a_datagram_receive_in_flight_is_clean() {
    for mut io in loops(4, 128) {
        let (server, sender) = (udp(), udp());
        let mut got = Got {
            hold: true,
            ..Got::default()
        };
        io.recv_from_multishot(1, server.as_raw_fd(), on_datagram)
            .unwrap();
        sender
            .send_to(b"held", server.local_addr().unwrap())
            .unwrap();
        run_until(&mut io, &mut got, |got| got.datagrams.len() == 1);
        for _ in 0..3 {
            sender
                .send_to(b"in flight", server.local_addr().unwrap())
                .unwrap();
        }
        drop(io);
        // Handles outlive the loop: their memory stays until they go.
        assert_eq!(&*got.held[0], b"held");
        got.held.clear();
    }
}

#[test]
fn a_bad_descriptor_or_a_non_socket_ends_with_an_error() {
    for mut io in loops(4, 128) {
        let mut got = Got::default();
        let (pipe_read, _pipe_write) = rustix::pipe::pipe().unwrap();
        io.recv_from_multishot(1, -1, on_datagram).unwrap();
        io.recv_from_multishot(2, pipe_read.as_raw_fd(), on_datagram)
            .unwrap();
        io.run_until_idle(&mut got).unwrap();
        assert_eq!(got.finals(1), vec![libc::EBADF]);
        assert_eq!(got.finals(2), vec![libc::ENOTSOCK]);
        assert_eq!(got.shots.len(), 2, "{:?}", got.shots);
    }
}

#[test]
fn datagram_receives_need_a_pool_with_room_for_the_header() {
    let mut options = Options::new(4);
    let Some(mut io) = check::io::<Got>(&options) else {
        return;
    };
    let error = io.recv_from_multishot(1, 0, on_datagram).unwrap_err();
    assert_eq!(error.kind, ScheduleErrorKind::NoPool);
    options.pool = PoolOptions::new(4, 44);
    let Some(mut io) = check::io::<Got>(&options) else {
        return;
    };
    let error = io.recv_from_multishot(1, 0, on_datagram).unwrap_err();
    assert_eq!(
        error.kind,
        ScheduleErrorKind::PoolBuffersTooSmall { size_min: 45 }
    );
}

/// On the simulator: three senders' datagrams, lost and doubled as the seed says, each
/// with its sender; the same seed, the same trace.
fn simulated_run(seed: u64) -> (Vec<Seen>, u64, u64) {
    let mut sim_options = SimOptions::new(seed);
    sim_options.faults.datagram_loss = 100_000;
    sim_options.faults.datagram_duplicate = 100_000;
    let sim = Sim::new(&sim_options).unwrap();
    let mut options = Options::new(64);
    options.pool = PoolOptions::new(8, 64);
    let mut io: Io<Got> = Io::new_sim(&options, &sim).unwrap();
    let (server, to) = sim.udp_bind("10.0.0.9:53".parse().unwrap()).unwrap();
    let mut got = Got::default();
    let id = io
        .recv_from_multishot(1, server.as_raw_fd(), on_datagram)
        .unwrap();
    let mut senders = Vec::new();
    for s in 0..3_u8 {
        let (fd, _) = sim
            .udp_bind(format!("10.0.0.{}:0", s + 1).parse().unwrap())
            .unwrap();
        senders.push(fd);
    }
    for n in 0..30_u8 {
        let s = usize::from(n % 3);
        // The last one longer than a buffer's 20 bytes of room.
        let payload = if n == 29 {
            vec![n; 30]
        } else {
            vec![n; 1 + usize::from(n % 5)]
        };
        let msg = Msg::new(payload);
        io.send_to(2, senders[s].as_raw_fd(), msg, to, |_, _, _, (sent, _)| {
            sent.unwrap();
        })
        .unwrap();
    }
    io.run_for_ns(&mut got, 100_000_000).unwrap();
    io.cancel(3, id, |_, _, _, result| result.unwrap()).unwrap();
    io.run_until_idle(&mut got).unwrap();
    assert_eq!(got.finals(1).len(), 1);
    let stats = sim.stats();
    let expected = 30 - stats.faults.datagram_loss + stats.faults.datagram_duplicate;
    assert_eq!(got.datagrams.len() as u64, expected, "seed {seed}");
    for (bytes, peer, truncated, len) in &got.datagrams {
        let n = bytes[0];
        let sender = sim_addr(usize::from(n % 3));
        assert_eq!(peer.map(|p| p.ip()), Some(sender), "seed {seed}");
        assert_eq!(*truncated, n == 29);
        assert_eq!(*len, if n == 29 { 30 } else { bytes.len() });
    }
    let hash = sim.trace_hash();
    (got.datagrams, hash, stats.faults.datagram_loss)
}

fn sim_addr(s: usize) -> std::net::IpAddr {
    format!("10.0.0.{}", s + 1).parse().unwrap()
}

#[test]
fn simulated_datagrams_arrive_with_their_senders_as_the_seed_decides() {
    let mut lost = 0;
    for seed in 0..6 {
        let first = simulated_run(seed);
        let again = simulated_run(seed);
        assert_eq!(first.0, again.0, "seed {seed}: the same datagrams");
        assert_eq!(first.1, again.1, "seed {seed}: the same trace");
        lost += first.2;
    }
    assert!(lost > 0, "some seed loses a datagram");
}

/// A UDP ping-pong whose server receives with `recv_from_multishot` and answers each
/// datagram with `send_to` from a reused message; the client sends and receives with one
/// reused message.
struct Echo {
    client: UdpSocket,
    server: UdpSocket,
    reply: Option<Msg>,
    receive: Option<OpId>,
    rounds_left: u32,
    allocations_at_warm: Option<u64>,
}

const ECHO_ROUNDS: u32 = 10_000;
const ECHO_MESSAGE: usize = 64;

fn on_echo_datagram(e: &mut Echo, io: &mut Io<Echo>, _: Tag, shot: Shot<Datagram>) {
    let Ok(datagram) = shot.result else {
        assert!(!shot.more && e.rounds_left == 0, "{:?}", shot.result);
        return;
    };
    let mut reply = e.reply.take().expect("one reply in flight");
    reply.bufs_mut()[0].clear();
    reply.bufs_mut()[0].extend_from_slice(&datagram.buf);
    let to = datagram.peer.expect("a UDP sender");
    let server = e.server.as_raw_fd();
    io.send_to(2, server, reply, to, on_echo_msg).unwrap();
}

fn on_echo_msg(e: &mut Echo, io: &mut Io<Echo>, tag: Tag, (n, mut msg): (io::Result<usize>, Msg)) {
    assert_eq!(n.unwrap(), ECHO_MESSAGE);
    let (client, server) = (e.client.as_raw_fd(), e.server.local_addr().unwrap());
    match tag {
        // The client's send: receive the echo into the same message.
        1 => {
            msg.bufs_mut()[0].clear();
            io.recv_from(3, client, msg, on_echo_msg).unwrap();
        }
        // The server's reply went out.
        2 => e.reply = Some(msg),
        // The echo came back: next round, or the end.
        3 => {
            e.rounds_left -= 1;
            if e.rounds_left == ECHO_ROUNDS - 100 {
                e.allocations_at_warm = Some(crate::alloc::allocations());
            }
            if e.rounds_left > 0 {
                io.send_to(1, client, msg, server, on_echo_msg).unwrap();
            } else {
                let receive = e.receive.take().expect("the server's receive");
                io.cancel(4, receive, |_, _, _, result| result.unwrap())
                    .unwrap();
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_datagram_echo_through_the_multishot_receive_allocates_nothing() {
    crate::alloc::assert_counting();
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(16, 2048);
    let Some(mut io) = check::io::<Echo>(&options) else {
        return;
    };
    let mut e = Echo {
        client: udp(),
        server: udp(),
        reply: Some(Msg::new(Vec::with_capacity(ECHO_MESSAGE))),
        receive: None,
        rounds_left: ECHO_ROUNDS,
        allocations_at_warm: None,
    };
    let server = e.server.as_raw_fd();
    let id = io.recv_from_multishot(0, server, on_echo_datagram).unwrap();
    e.receive = Some(id);
    let msg = Msg::new(vec![7; ECHO_MESSAGE]);
    let to = e.server.local_addr().unwrap();
    io.send_to(1, e.client.as_raw_fd(), msg, to, on_echo_msg)
        .unwrap();
    io.run_until_idle(&mut e).unwrap();
    assert_eq!(e.rounds_left, 0);
    let warm = e.allocations_at_warm.expect("warm-up finished");
    let after = crate::alloc::allocations();
    assert_eq!(after - warm, 0, "allocations over {ECHO_ROUNDS} echoes");
}

#[test]
fn on_the_simulator_what_is_no_datagram_socket_ends_with_an_error() {
    use dispatch_loop::sim::UnixKind;
    let sim = Sim::new(&SimOptions::new(5)).unwrap();
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(4, 128);
    let mut io: Io<Got> = Io::new_sim(&options, &sim).unwrap();
    let (unix, _peer) = sim.unix_pair(UnixKind::Datagram).unwrap();
    let mut got = Got::default();
    io.recv_from_multishot(1, -1, on_datagram).unwrap();
    // The simulator's Unix datagram pairs take no pooled receive (ARCHITECTURE's gaps).
    io.recv_from_multishot(2, unix.as_raw_fd(), on_datagram)
        .unwrap();
    io.run_until_idle(&mut got).unwrap();
    assert_eq!(got.finals(1), vec![libc::EBADF]);
    assert_eq!(got.finals(2), vec![libc::EINVAL]);
    assert_eq!(got.shots.len(), 2, "{:?}", got.shots);
}
