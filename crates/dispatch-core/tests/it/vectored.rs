//! Vectored sends (`Io::send_vectored`) on the backend under test and on the simulator:
//! buffers of every origin go out in order as one message, a short send is finished by
//! consuming what went and sending again, the gather limit, and the error paths.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use dispatch_loop::sim::{Faults, Sim, SimOptions};
use dispatch_loop::{
    Io, Options, OutBuf, PoolBuf, PoolOptions, ScheduleErrorKind, Shot, Tag, GATHER_MAX,
};

use crate::check;

/// What the callbacks saw.
#[derive(Default)]
struct Sent {
    /// Per completed send: the byte count (or errno, negated) and the buffers left.
    results: Vec<(io::Result<usize>, Vec<OutBuf>)>,
    /// Pool buffers received, to be sent on.
    received: Vec<PoolBuf>,
    /// Bytes a plain receive got.
    bytes: Vec<u8>,
}

fn on_sent(sent: &mut Sent, _: &mut Io<Sent>, _: Tag, result: (io::Result<usize>, Vec<OutBuf>)) {
    sent.results.push(result);
}

fn on_received(sent: &mut Sent, _: &mut Io<Sent>, _: Tag, shot: Shot<PoolBuf>) {
    sent.received.push(shot.result.expect("a pooled receive"));
}

fn options() -> Options {
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(4, 4096);
    options
}

#[test]
fn buffers_of_every_origin_go_out_in_order_as_one_send() {
    let Some(mut io) = check::io::<Sent>(&options()) else {
        return;
    };
    let mut sent = Sent::default();
    // A pool buffer, as a server has one: received from a peer.
    let (inbound, mut sender) = UnixStream::pair().unwrap();
    sender.write_all(b"<echo>").unwrap();
    io.recv_pooled(0, inbound.as_raw_fd(), on_received).unwrap();
    io.run_until_idle(&mut sent).unwrap();
    let echo = sent.received.pop().expect("one arrival");

    let (socket, mut peer) = UnixStream::pair().unwrap();
    let mut owned = OutBuf::from(b"xxowned ".to_vec());
    owned.advance(2);
    let bufs = vec![
        OutBuf::from("static "),
        owned,
        OutBuf::from(""),
        OutBuf::from(echo),
        OutBuf::from(String::from(" end")),
    ];
    io.send_vectored(1, socket.as_raw_fd(), bufs, on_sent)
        .unwrap();
    io.run_until_idle(&mut sent).unwrap();
    let (count, bufs) = sent.results.pop().expect("a result");
    assert_eq!(count.unwrap(), 23);
    assert_eq!(bufs.len(), 5, "the buffers come back unchanged");
    drop(bufs);
    io.tick(&mut sent).unwrap();
    assert_eq!(io.pool_buffers_lent(), 0, "the pool buffer went back");
    let mut got = [0; 23];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"static owned <echo> end");
}

#[test]
fn a_short_send_is_finished_by_consuming_what_went_and_sending_again() {
    let Some(mut io) = check::io::<Sent>(&options()) else {
        return;
    };
    let (socket, mut peer) = UnixStream::pair().unwrap();
    // Far more than a socket buffer: the first send is short.
    let chunks: Vec<Vec<u8>> = (0..16_u8).map(|i| vec![i; 256 * 1024]).collect();
    let expected: Vec<u8> = chunks.concat();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    });
    let mut bufs: Vec<OutBuf> = chunks.into_iter().map(OutBuf::from).collect();
    let mut sent = Sent::default();
    let mut sends = 0;
    while !bufs.is_empty() {
        io.send_vectored(0, socket.as_raw_fd(), bufs, on_sent)
            .unwrap();
        io.run_until_idle(&mut sent).unwrap();
        let (count, mut left) = sent.results.pop().expect("a result");
        OutBuf::consume(&mut left, count.expect("send"));
        bufs = left;
        sends += 1;
    }
    drop(socket);
    assert!(
        sends > 1,
        "4 MiB went out in one send: the test proves nothing"
    );
    assert!(reader.join().unwrap() == expected, "every byte, in order");
}

#[test]
fn at_most_gather_max_buffers_go_out_per_send() {
    let Some(mut io) = check::io::<Sent>(&options()) else {
        return;
    };
    let (socket, mut peer) = UnixStream::pair().unwrap();
    let bufs: Vec<OutBuf> = (0..GATHER_MAX + 10).map(|_| OutBuf::from("x")).collect();
    io.send_vectored(0, socket.as_raw_fd(), bufs, on_sent)
        .unwrap();
    let mut sent = Sent::default();
    io.run_until_idle(&mut sent).unwrap();
    let (count, mut left) = sent.results.pop().expect("a result");
    assert_eq!(count.unwrap(), GATHER_MAX);
    OutBuf::consume(&mut left, GATHER_MAX);
    assert_eq!(left.len(), 10);
    let mut got = vec![0; GATHER_MAX];
    peer.read_exact(&mut got).unwrap();
}

#[test]
fn an_empty_list_sends_nothing_and_completes() {
    let Some(mut io) = check::io::<Sent>(&options()) else {
        return;
    };
    let (socket, _peer) = UnixStream::pair().unwrap();
    io.send_vectored(0, socket.as_raw_fd(), Vec::new(), on_sent)
        .unwrap();
    let mut sent = Sent::default();
    io.run_until_idle(&mut sent).unwrap();
    assert_eq!(sent.results.pop().unwrap().0.unwrap(), 0);
}

#[test]
fn a_bad_descriptor_and_a_closed_peer_are_error_results() {
    let Some(mut io) = check::io::<Sent>(&options()) else {
        return;
    };
    io.send_vectored(0, -1, vec![OutBuf::from("x")], on_sent)
        .unwrap();
    let (socket, peer) = UnixStream::pair().unwrap();
    drop(peer);
    io.send_vectored(1, socket.as_raw_fd(), vec![OutBuf::from("x")], on_sent)
        .unwrap();
    let mut sent = Sent::default();
    io.run_until_idle(&mut sent).unwrap();
    let errnos: Vec<i32> = sent
        .results
        .iter()
        .map(|(count, bufs)| {
            assert_eq!(bufs.len(), 1, "the buffers come back with the error");
            count.as_ref().unwrap_err().raw_os_error().unwrap()
        })
        .collect();
    assert!(errnos.contains(&libc::EBADF), "{errnos:?}");
    assert!(
        errnos.contains(&libc::EPIPE) || errnos.contains(&libc::ECONNRESET),
        "a closed peer is EPIPE, never a signal: {errnos:?}"
    );
}

#[test]
fn a_send_past_the_slots_hands_the_buffers_back() {
    let Some(mut io) = check::io::<Sent>(&Options::new(1)) else {
        return;
    };
    let (socket, _peer) = UnixStream::pair().unwrap();
    io.send_vectored(0, socket.as_raw_fd(), vec![OutBuf::from("a")], on_sent)
        .unwrap();
    let error = io
        .send_vectored(0, socket.as_raw_fd(), vec![OutBuf::from("b")], on_sent)
        .unwrap_err();
    assert!(matches!(
        error.kind,
        ScheduleErrorKind::SlotsExhausted { ops_max: 1 }
    ));
    assert_eq!(&error.value[0][..], b"b");
    io.run_until_idle(&mut Sent::default()).unwrap();
}

#[test]
fn the_simulator_gathers_and_stops_at_a_full_peer() {
    let mut sim_options = SimOptions::new(7);
    sim_options.faults = Faults::NONE;
    let sim = Sim::new(&sim_options).unwrap();
    let mut io: Io<Sent> = Io::new_sim(&options(), &sim).unwrap();
    let (a, b) = sim.socket_pair().unwrap();
    let big: Vec<OutBuf> = (0..4).map(|_| OutBuf::from(vec![1; 1 << 20])).collect();
    io.send_vectored(0, a.as_raw_fd(), big, on_sent).unwrap();
    let mut sent = Sent::default();
    io.run_for_ns(&mut sent, 1_000_000).unwrap();
    let (count, left) = sent.results.pop().expect("a short send, not a wait");
    let count = count.unwrap();
    assert!(count > 0 && count < 4 << 20, "{count}");
    drop((left, a, b));
    io.run_until_idle(&mut sent).unwrap();

    let (a, b) = sim.socket_pair().unwrap();
    let bufs = vec![OutBuf::from("one "), OutBuf::from(b"two".to_vec())];
    io.send_vectored(1, a.as_raw_fd(), bufs, on_sent).unwrap();
    let fd = b.as_raw_fd();
    io.recv(fd as Tag, fd, Vec::with_capacity(16), on_recv)
        .unwrap();
    io.run_until_idle(&mut sent).unwrap();
    assert_eq!(sent.bytes, b"one two");
    assert_eq!(sent.results.pop().unwrap().0.unwrap(), 7);
}

/// Receives until 7 bytes are in (a stream may hand them over in parts).
fn on_recv(sent: &mut Sent, io: &mut Io<Sent>, fd: Tag, (n, buf): dispatch_loop::BufResult) {
    assert!(n.expect("recv") > 0, "no end of stream before 7 bytes");
    if buf.len() < 7 {
        io.recv(fd, fd as i32, buf, on_recv).unwrap();
    } else {
        sent.bytes = buf;
    }
}
