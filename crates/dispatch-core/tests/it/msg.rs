//! Message operations (`Io::sendmsg`, `Io::recvmsg`, `Io::send_to`, `Io::recv_from`) on the
//! backend under test: UDP round trips with the peer's address, vectored buffers,
//! truncation reported, the error cases (a refused port, a bad address family, a closed
//! peer), descriptors passed over Unix sockets (`SCM_RIGHTS`) and never leaked (a control
//! buffer too small, a cancel, a drop with a receive in flight); and on the simulator, its
//! streams and its datagram sockets, whose loss, duplication and reordering follow the seed.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};

use dispatch_loop::sim::{Sim, SimOptions};
use dispatch_loop::{Io, Msg, Options, PollEvents, Tag};

use crate::check;
use crate::drop_in_flight::open_fds;

/// What the callbacks saw, by tag.
#[derive(Default)]
struct Seen {
    results: Vec<(Tag, io::Result<usize>, Msg)>,
}

impl Seen {
    /// The result of the operation tagged `tag`.
    fn take(&mut self, tag: Tag) -> (io::Result<usize>, Msg) {
        let at = self.results.iter().position(|(t, ..)| *t == tag);
        let (_, result, msg) = self.results.remove(at.expect("the operation completed"));
        (result, msg)
    }
}

fn on_msg(seen: &mut Seen, _: &mut Io<Seen>, tag: Tag, (result, msg): (io::Result<usize>, Msg)) {
    seen.results.push((tag, result, msg));
}

fn on_unit(_: &mut Seen, _: &mut Io<Seen>, _: Tag, result: io::Result<()>) {
    result.unwrap();
}

fn loop_for_test() -> Option<Io<Seen>> {
    check::io(&Options::new(16))
}

fn udp() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
}

fn errno(result: &io::Result<usize>) -> i32 {
    match result {
        Ok(n) => panic!("{n} bytes where an error was expected"),
        Err(error) => error.raw_os_error().expect("an OS error"),
    }
}

#[test]
fn a_datagram_goes_both_ways_with_its_sender() {
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let (a, b) = (udp(), udp());
    let mut seen = Seen::default();
    // A receive waiting first (parked on readiness backends), then the datagram.
    let halves = vec![Vec::with_capacity(3), Vec::with_capacity(64)];
    io.recv_from(1, b.as_raw_fd(), Msg::vectored(halves), on_msg)
        .unwrap();
    io.tick(&mut seen).unwrap();
    let parts = vec![b"hel".to_vec(), b"lo".to_vec(), Vec::new()];
    let to = b.local_addr().unwrap();
    io.send_to(2, a.as_raw_fd(), Msg::vectored(parts), to, on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (sent, _) = seen.take(2);
    assert_eq!(sent.unwrap(), 5);
    let (got, msg) = seen.take(1);
    assert_eq!(got.unwrap(), 5);
    assert_eq!(msg.bufs()[0], b"hel", "the first buffer filled first");
    assert_eq!(msg.bufs()[1], b"lo");
    assert_eq!(msg.peer(), Some(a.local_addr().unwrap()));
    assert!(!msg.truncated() && !msg.control_truncated());

    // The echo: the message goes back to its sender as it came, buffers and address.
    let back = msg.peer().unwrap();
    io.send_to(3, b.as_raw_fd(), msg, back, on_msg).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(seen.take(3).0.unwrap(), 5);
    // The send completing does not mean the datagram is in `a`'s queue yet: on Linux 5.10
    // under QEMU loopback delivery came after it (the kernel matrix saw `EAGAIN` here once),
    // so this read waits for it, bounded.
    a.set_nonblocking(false).unwrap();
    a.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut echoed = [0; 16];
    let (n, from) = a.recv_from(&mut echoed).unwrap();
    assert_eq!(
        (&echoed[..n], from),
        (&b"hello"[..], b.local_addr().unwrap())
    );
}

#[test]
fn datagrams_queued_together_are_all_received() {
    // A short datagram says nothing of what else is queued: three receives, three datagrams
    // already waiting, each receive gets one (the readiness engine must not think the socket
    // drained after the first short one).
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let (a, b) = (udp(), udp());
    let mut seen = Seen::default();
    for tag in 0..3 {
        io.recv_from(tag, b.as_raw_fd(), Msg::new(Vec::with_capacity(64)), on_msg)
            .unwrap();
    }
    io.tick(&mut seen).unwrap();
    for text in ["one", "two", "three"] {
        a.send_to(text.as_bytes(), b.local_addr().unwrap()).unwrap();
    }
    io.run_until_idle(&mut seen).unwrap();
    let mut got: Vec<Vec<u8>> = (0..3)
        .map(|tag| seen.take(tag).1.into_bufs().remove(0))
        .collect();
    got.sort();
    assert_eq!(got, [&b"one"[..], b"three", b"two"]);
}

#[test]
fn a_truncated_datagram_is_reported() {
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let (a, b) = (udp(), udp());
    let mut seen = Seen::default();
    a.send_to(b"0123456789", b.local_addr().unwrap()).unwrap();
    io.recv_from(1, b.as_raw_fd(), Msg::new(Vec::with_capacity(4)), on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (got, msg) = seen.take(1);
    assert_eq!(got.unwrap(), 4, "the count is what was kept");
    assert_eq!(msg.bufs()[0], b"0123");
    assert!(msg.truncated(), "MSG_TRUNC reported, never silent");

    // The message is reused: the next receive clears the flag.
    let mut msg = msg;
    msg.bufs_mut()[0].clear();
    a.send_to(b"ok", b.local_addr().unwrap()).unwrap();
    io.recv_from(2, b.as_raw_fd(), msg, on_msg).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (got, msg) = seen.take(2);
    assert_eq!((got.unwrap(), msg.truncated()), (2, false));
}

#[test]
fn a_connected_datagram_socket_learns_its_peer_refused() {
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let mut seen = Seen::default();
    // The kernel rate-limits ICMP errors machine-wide (loopback included), and a port just
    // closed may be bound again by anyone: an attempt whose answer does not come within its
    // deadline is made again, on a fresh port.
    for attempt in 0..20 {
        // A port nobody listens on: bound, then closed.
        let gone = udp().local_addr().unwrap();
        let a = udp();
        a.connect(gone).unwrap();
        io.sendmsg(1, a.as_raw_fd(), Msg::new(b"anyone?".to_vec()), on_msg)
            .unwrap();
        io.run_until_idle(&mut seen).unwrap();
        assert_eq!(seen.take(1).0.unwrap(), 7, "the send itself succeeds");
        // The ICMP port-unreachable comes back as the socket's error, to its next operation.
        let id = io
            .recvmsg(2, a.as_raw_fd(), Msg::new(Vec::with_capacity(16)), on_msg)
            .unwrap();
        io.set_deadline(id, 500_000_000).unwrap();
        io.run_until_idle(&mut seen).unwrap();
        match errno(&seen.take(2).0) {
            libc::ECONNREFUSED => return,
            libc::ETIMEDOUT => eprintln!("attempt {attempt}: no ICMP answer, again"),
            other => panic!("errno {other} where ECONNREFUSED was expected"),
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no ECONNREFUSED in 20 attempts");
}

#[test]
fn an_address_of_the_wrong_family_is_an_error() {
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let a = udp();
    let mut seen = Seen::default();
    let v6: SocketAddr = "[::1]:9".parse().unwrap();
    io.send_to(1, a.as_raw_fd(), Msg::new(b"x".to_vec()), v6, on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (result, msg) = seen.take(1);
    assert!(
        matches!(errno(&result), libc::EAFNOSUPPORT | libc::EINVAL),
        "{result:?}"
    );
    assert_eq!(msg.bufs()[0], b"x", "the message comes back whole");
}

#[test]
fn a_closed_peer_ends_the_stream_and_refuses_sends() {
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let (a, b) = UnixStream::pair().unwrap();
    // Shut down rather than closed: a child process another test forks at this moment
    // holds `b` open until it execs, and a close would then take effect too late (the send
    // queued, then reset when the child lets go).
    b.shutdown(std::net::Shutdown::Both).unwrap();
    let mut seen = Seen::default();
    io.recvmsg(1, a.as_raw_fd(), Msg::new(Vec::with_capacity(8)), on_msg)
        .unwrap();
    io.sendmsg(2, a.as_raw_fd(), Msg::new(b"late".to_vec()), on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(seen.take(1).0.unwrap(), 0, "end of stream");
    assert_eq!(errno(&seen.take(2).0), libc::EPIPE, "EPIPE, never SIGPIPE");
}

/// A pipe whose write end is sent: the test reads through the read end what the receiver
/// writes through the descriptor it got.
fn pipe() -> (std::io::PipeReader, OwnedFd) {
    // Close-on-exec: a child process another test starts must not hold the write end open
    // (the reader waits for every write end to close).
    let (read, write) = std::io::pipe().unwrap();
    (read, OwnedFd::from(write))
}

#[test]
fn descriptors_pass_over_a_unix_socket() {
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let (a, b) = UnixDatagram::pair().unwrap();
    let mut seen = Seen::default();
    let (mut reader, writer) = pipe();
    let mut msg = Msg::new(b"fd".to_vec()).with_fds(2);
    msg.fds_mut().push(writer);
    io.sendmsg(1, a.as_raw_fd(), msg, on_msg).unwrap();
    io.recvmsg(
        2,
        b.as_raw_fd(),
        Msg::new(Vec::with_capacity(8)).with_fds(2),
        on_msg,
    )
    .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (sent, msg) = seen.take(1);
    assert_eq!(sent.unwrap(), 2);
    assert_eq!(msg.fds().len(), 1, "the sender keeps its descriptor");
    drop(msg);
    let (got, mut msg) = seen.take(2);
    assert_eq!(got.unwrap(), 2);
    assert_eq!(msg.peer(), None, "a Unix peer has no IP address");
    assert_eq!(msg.peer_path(), None, "a socket pair's peer has no name");
    assert!(!msg.control_truncated());
    let received = msg.fds_mut().pop().expect("one descriptor came");
    let mut through = std::fs::File::from(received);
    through.write_all(b"through").unwrap();
    drop(through);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(
        text, "through",
        "the descriptor names the pipe, and no copy is left open"
    );
}

/// Sends three descriptors to a receive with room for `room`, in a child process (it counts
/// the process's descriptors): the receive reports the control data cut short, and
/// nothing is left open afterwards.
fn too_many_descriptors(room: usize) {
    let before = open_fds();
    {
        let Some(mut io) = loop_for_test() else {
            return;
        };
        let (a, b) = UnixDatagram::pair().unwrap();
        let mut out = Msg::new(b"3".to_vec()).with_fds(3);
        for _ in 0..3 {
            out.fds_mut().push(pipe().1);
        }
        let mut seen = Seen::default();
        io.sendmsg(1, a.as_raw_fd(), out, on_msg).unwrap();
        let msg = Msg::new(Vec::with_capacity(8)).with_fds(room);
        io.recvmsg(2, b.as_raw_fd(), msg, on_msg).unwrap();
        io.run_until_idle(&mut seen).unwrap();
        assert_eq!(seen.take(1).0.unwrap(), 1);
        let (got, msg) = seen.take(2);
        assert_eq!(got.unwrap(), 1);
        assert!(msg.control_truncated(), "MSG_CTRUNC reported");
        assert!(msg.fds().is_empty(), "what arrived is closed, not kept");
    }
    assert_eq!(open_fds(), before, "descriptors leaked");
}

#[test]
fn a_control_buffer_too_small_leaks_no_descriptor() {
    if let Some(role) = check::child_role() {
        return too_many_descriptors(role.parse().unwrap());
    }
    let test = "msg::a_control_buffer_too_small_leaks_no_descriptor";
    let backend = std::env::var(dispatch_loop::BACKEND_ENV).ok();
    check::in_child(test, "1", backend.as_deref());
    check::in_child(test, "0", backend.as_deref());
}

#[test]
fn a_cancelled_receive_gives_its_message_back() {
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let b = udp();
    let mut seen = Seen::default();
    let id = io
        .recv_from(1, b.as_raw_fd(), Msg::new(Vec::with_capacity(8)), on_msg)
        .unwrap();
    io.tick(&mut seen).unwrap();
    io.cancel(2, id, on_unit).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (result, msg) = seen.take(1);
    assert_eq!(errno(&result), libc::ECANCELED);
    assert_eq!(msg.bufs()[0].capacity(), 8, "the buffer comes back");
}

/// Drops a loop whose receive of two descriptors is in flight (the datagram already
/// waiting, so io_uring may complete it while the drop reaps: its result is discarded, the
/// descriptors closed), before any turn or after one (`tick`), in a child process: no
/// descriptor is left open.
fn drop_with_a_receive_in_flight(tick: bool) {
    let before = open_fds();
    {
        let Some(mut io) = loop_for_test() else {
            return;
        };
        let (a, b) = UnixDatagram::pair().unwrap();
        let mut out = Msg::new(b"2".to_vec()).with_fds(2);
        out.fds_mut().extend([pipe().1, pipe().1]);
        let mut seen = Seen::default();
        io.sendmsg(1, a.as_raw_fd(), out, on_msg).unwrap();
        io.run_until_idle(&mut seen).unwrap();
        let msg = Msg::new(Vec::with_capacity(8)).with_fds(2);
        io.recvmsg(2, b.as_raw_fd(), msg, on_msg).unwrap();
        // An idle receive beside it, which only the drop's cancel ends.
        let (c, _d) = UnixDatagram::pair().unwrap();
        let idle = Msg::new(Vec::with_capacity(8)).with_fds(2);
        io.recvmsg(3, c.as_raw_fd(), idle, on_msg).unwrap();
        if tick {
            io.tick(&mut seen).unwrap();
        }
        drop(io);
        drop(seen);
    }
    assert_eq!(open_fds(), before, "descriptors leaked by the drop");
}

#[test]
fn dropping_the_loop_with_a_receive_in_flight_leaks_no_descriptor() {
    if let Some(role) = check::child_role() {
        return drop_with_a_receive_in_flight(role == "tick");
    }
    let test = "msg::dropping_the_loop_with_a_receive_in_flight_leaks_no_descriptor";
    let backend = std::env::var(dispatch_loop::BACKEND_ENV).ok();
    check::in_child(test, "drop", backend.as_deref());
    check::in_child(test, "tick", backend.as_deref());
}

#[test]
fn messages_cross_a_simulated_stream() {
    let sim = Sim::new(&SimOptions::new(7)).unwrap();
    let mut io: Io<Seen> = Io::new_sim(&Options::new(8), &sim).unwrap();
    let (a, b) = sim.socket_pair().unwrap();
    let mut seen = Seen::default();
    let halves = vec![Vec::with_capacity(2), Vec::with_capacity(8)];
    io.recvmsg(1, b.as_raw_fd(), Msg::vectored(halves), on_msg)
        .unwrap();
    let parts = vec![b"ab".to_vec(), b"cde".to_vec()];
    io.sendmsg(2, a.as_raw_fd(), Msg::vectored(parts), on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(seen.take(2).0.unwrap(), 5);
    let (got, msg) = seen.take(1);
    assert_eq!(got.unwrap(), 5);
    assert_eq!(
        (&msg.bufs()[0][..], &msg.bufs()[1][..]),
        (&b"ab"[..], &b"cde"[..])
    );
    assert_eq!(msg.peer(), None);
    // No datagrams or descriptor passing on the simulator yet: said, not faked.
    let to: SocketAddr = "10.0.0.1:53".parse().unwrap();
    io.send_to(3, a.as_raw_fd(), Msg::new(b"q".to_vec()), to, on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(errno(&seen.take(3).0), libc::EISCONN);
}

#[test]
fn datagrams_cross_the_simulated_network() {
    let sim = Sim::new(&SimOptions::new(11)).unwrap();
    let mut io: Io<Seen> = Io::new_sim(&Options::new(8), &sim).unwrap();
    let (a, a_addr) = sim.udp_bind("10.0.0.1:0".parse().unwrap()).unwrap();
    let (b, b_addr) = sim.udp_bind("10.0.0.2:53".parse().unwrap()).unwrap();
    assert_eq!(b_addr.port(), 53);
    assert_ne!(a_addr.port(), 0, "port 0 is given a free port");
    let taken = sim.udp_bind(b_addr).unwrap_err();
    assert_eq!(taken.raw_os_error(), Some(libc::EADDRINUSE));
    let mut seen = Seen::default();
    let halves = vec![Vec::with_capacity(2), Vec::with_capacity(2)];
    io.recv_from(1, b.as_raw_fd(), Msg::vectored(halves), on_msg)
        .unwrap();
    io.send_to(
        2,
        a.as_raw_fd(),
        Msg::new(b"query".to_vec()),
        b_addr,
        on_msg,
    )
    .unwrap();
    // No address: the simulator's datagram sockets are never connected.
    io.sendmsg(3, a.as_raw_fd(), Msg::new(b"?".to_vec()), on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(seen.take(2).0.unwrap(), 5);
    assert_eq!(errno(&seen.take(3).0), libc::EDESTADDRREQ);
    let (got, msg) = seen.take(1);
    assert_eq!(
        got.unwrap(),
        4,
        "what fits of a 5-byte datagram in 2 + 2 bytes"
    );
    assert_eq!(
        (&msg.bufs()[0][..], &msg.bufs()[1][..]),
        (&b"qu"[..], &b"er"[..])
    );
    assert!(msg.truncated(), "MSG_TRUNC on the simulator too");
    assert_eq!(msg.peer(), Some(a_addr));
}

/// A receiver that counts datagrams numbered by their first byte pair.
#[derive(Default)]
struct Counted {
    fd: i32,
    numbers: Vec<u16>,
}

fn on_counted(
    c: &mut Counted,
    io: &mut Io<Counted>,
    _: Tag,
    (n, mut msg): (io::Result<usize>, Msg),
) {
    assert_eq!(n.unwrap(), 2);
    let buf = &mut msg.bufs_mut()[0];
    c.numbers.push(u16::from_be_bytes([buf[0], buf[1]]));
    buf.clear();
    io.recv_from(0, c.fd, msg, on_counted).unwrap();
}

fn on_sent(_: &mut Counted, _: &mut Io<Counted>, _: Tag, (n, _): (io::Result<usize>, Msg)) {
    assert_eq!(n.unwrap(), 2, "a datagram is always sent whole");
}

/// Sends 200 numbered datagrams on a world with `seed` and datagram faults on; the numbers
/// received, in order, and the trace hash.
fn lossy_run(seed: u64) -> (Vec<u16>, u64, dispatch_loop::sim::SimStats) {
    let mut options = SimOptions::new(seed);
    options.faults.datagram_loss = 100_000;
    options.faults.datagram_duplicate = 100_000;
    options.faults.datagram_reorder = 100_000;
    options.latency_max_ns = 1_000_000;
    let sim = Sim::new(&options).unwrap();
    let mut io: Io<Counted> = Io::new_sim(&Options::new(256), &sim).unwrap();
    let (a, _) = sim.udp_bind("10.0.0.1:0".parse().unwrap()).unwrap();
    let (b, b_addr) = sim.udp_bind("10.0.0.2:0".parse().unwrap()).unwrap();
    let mut counted = Counted {
        fd: b.as_raw_fd(),
        numbers: Vec::new(),
    };
    let msg = Msg::new(Vec::with_capacity(2));
    io.recv_from(0, b.as_raw_fd(), msg, on_counted).unwrap();
    for number in 0..200_u16 {
        let msg = Msg::new(number.to_be_bytes().to_vec());
        io.send_to(1, a.as_raw_fd(), msg, b_addr, on_sent).unwrap();
    }
    // 100 ms of virtual time: every datagram not lost has arrived (latency up to 1 ms).
    io.run_for_ns(&mut counted, 100_000_000).unwrap();
    let stats = sim.stats();
    (counted.numbers, sim.trace_hash(), stats)
}

#[test]
fn simulated_datagrams_are_lost_duplicated_and_reordered_by_the_seed() {
    for seed in 0..8 {
        let (numbers, hash, stats) = lossy_run(seed);
        let lost = stats.faults.datagram_loss;
        let doubled = stats.faults.datagram_duplicate;
        eprintln!(
            "seed {seed}: {} received, {lost} lost, {doubled} doubled",
            numbers.len()
        );
        assert_eq!(numbers.len() as u64, 200 - lost + doubled, "seed {seed}");
        assert!(
            numbers.iter().all(|&n| n < 200),
            "seed {seed}: only what was sent"
        );
        assert!(lost > 0 && doubled > 0, "seed {seed}: both faults met");
        assert!(
            numbers.windows(2).any(|w| w[0] > w[1]),
            "seed {seed}: out of order"
        );
        let (again, hash_again, _) = lossy_run(seed);
        assert_eq!(
            (numbers, hash),
            (again, hash_again),
            "seed {seed}: one seed, one run"
        );
    }
    assert_ne!(lossy_run(1).1, lossy_run(2).1, "two seeds, two runs");
}

#[test]
fn unix_datagrams_name_their_sender_by_path() {
    let Some(mut io) = loop_for_test() else {
        return;
    };
    let (a_path, b_path) = (
        check::temp_path("msg-a.sock"),
        check::temp_path("msg-b.sock"),
    );
    let _ = (std::fs::remove_file(&a_path), std::fs::remove_file(&b_path));
    let a = UnixDatagram::bind(&a_path).unwrap();
    let b = UnixDatagram::bind(&b_path).unwrap();
    let mut seen = Seen::default();
    let mut msg = Msg::new(b"to b".to_vec());
    msg.set_peer_path(&b_path).unwrap();
    assert_eq!(msg.peer_path(), Some(b_path.as_path()));
    io.sendmsg(1, a.as_raw_fd(), msg, on_msg).unwrap();
    io.recvmsg(2, b.as_raw_fd(), Msg::new(Vec::with_capacity(8)), on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(seen.take(1).0.unwrap(), 4);
    let (got, msg) = seen.take(2);
    assert_eq!(got.unwrap(), 4);
    assert_eq!(
        (msg.peer(), msg.peer_path()),
        (None, Some(a_path.as_path()))
    );
    // Sent as it came, it goes back to its sender.
    io.sendmsg(3, b.as_raw_fd(), msg, on_msg).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(seen.take(3).0.unwrap(), 4);
    let mut back = [0; 8];
    let (n, from) = a.recv_from(&mut back).unwrap();
    assert_eq!(
        (&back[..n], from.as_pathname()),
        (&b"to b"[..], Some(b_path.as_path()))
    );
    // From an unnamed socket (a pair's), sent back: to the connected peer.
    let (c, d) = UnixDatagram::pair().unwrap();
    c.send(b"pair").unwrap();
    io.recvmsg(4, d.as_raw_fd(), Msg::new(Vec::with_capacity(8)), on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    let (got, msg) = seen.take(4);
    assert_eq!((got.unwrap(), msg.peer_path()), (4, None));
    io.sendmsg(5, d.as_raw_fd(), msg, on_msg).unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(seen.take(5).0.unwrap(), 4);
    assert_eq!(c.recv(&mut back).unwrap(), 4);
    // A datagram socket whose peer shut down (not closed: see the closed-peer test):
    // refused.
    d.shutdown(std::net::Shutdown::Both).unwrap();
    io.sendmsg(6, c.as_raw_fd(), Msg::new(b"x".to_vec()), on_msg)
        .unwrap();
    io.run_until_idle(&mut seen).unwrap();
    assert_eq!(errno(&seen.take(6).0), libc::EPIPE);
    let too_long = std::path::PathBuf::from("/".repeat(200));
    let mut msg = Msg::new(Vec::new());
    let error = msg.set_peer_path(&too_long).unwrap_err();
    assert_eq!(error.raw_os_error(), Some(libc::ENAMETOOLONG));
    let _ = (std::fs::remove_file(&a_path), std::fs::remove_file(&b_path));
}

/// What the polls of `a_simulated_datagram_socket_polls_writable_then_readable` saw.
type Polled = Vec<(Tag, PollEvents)>;

fn on_polled(polled: &mut Polled, _: &mut Io<Polled>, tag: Tag, result: io::Result<PollEvents>) {
    polled.push((tag, result.expect("a poll of a live socket")));
}

fn on_datagram_sent(_: &mut Polled, _: &mut Io<Polled>, _: Tag, (n, _): (io::Result<usize>, Msg)) {
    assert_eq!(n.unwrap(), 1);
}

/// A simulated datagram socket polls as a UDP socket does: writable at once, readable only
/// once a datagram has arrived (a poll waits for it).
#[test]
fn a_simulated_datagram_socket_polls_writable_then_readable() {
    let sim = Sim::new(&SimOptions::new(12)).unwrap();
    let mut io: Io<Polled> = Io::new_sim(&Options::new(8), &sim).unwrap();
    let (a, _) = sim.udp_bind("10.0.0.1:0".parse().unwrap()).unwrap();
    let (b, b_addr) = sim.udp_bind("10.0.0.2:0".parse().unwrap()).unwrap();
    let mut polled = Polled::new();
    let both = PollEvents::READABLE | PollEvents::WRITABLE;
    io.poll(1, b.as_raw_fd(), both, on_polled).unwrap();
    io.run_until_idle(&mut polled).unwrap();
    assert_eq!(
        polled,
        vec![(1, PollEvents::WRITABLE)],
        "nothing to read yet"
    );
    io.poll(2, b.as_raw_fd(), PollEvents::READABLE, on_polled)
        .unwrap();
    io.send_to(
        3,
        a.as_raw_fd(),
        Msg::new(b"x".to_vec()),
        b_addr,
        on_datagram_sent,
    )
    .unwrap();
    io.run_until_idle(&mut polled).unwrap();
    assert_eq!(polled[1], (2, PollEvents::READABLE), "the datagram arrived");
}
