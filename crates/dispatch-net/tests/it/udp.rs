//! `serve_udp` over loopback on whichever backend `DISPATCH_BACKEND` selects, and on the
//! simulator: replies to each sender, truncation counted and never handed on, failed sends
//! (a reply too large, an address of the wrong family) counted while serving goes on,
//! `stop_udp` closing the socket, and `serve_udp`'s errors.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use dispatch_loop::{Io, Msg, Options, PoolOptions, Tag};
use dispatch_net::{bind_udp, serve_udp, stop_udp, ListenOptions, Reply, Udp, UdpHandler};
use dispatch_net::{UdpOptions, UdpStats};

/// A loop's options for serving `udp` with `ops_max` slots: a pool whose buffers hold its
/// datagrams whole.
fn pooled(udp: &UdpOptions, ops_max: u32) -> Options {
    let mut options = Options::new(ops_max);
    options.pool = PoolOptions::new(16, udp.pool_buffer_size());
    options
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Uppercase and send back.
    Upper,
    /// Reply with 70,000 bytes: more than a UDP datagram holds (`EMSGSIZE`).
    Huge,
    /// Reply to an IPv6 address from an IPv4 socket.
    WrongFamily,
    /// No reply.
    Silent,
}

struct Server {
    udp: Udp,
    mode: Mode,
    seen: Vec<(Vec<u8>, SocketAddr)>,
    /// The simulated client's socket and what it received (the simulator test only).
    client: Option<OwnedFd>,
    got: Vec<Vec<u8>>,
}

impl UdpHandler for Server {
    fn udp(&mut self) -> &mut Udp {
        &mut self.udp
    }

    fn on_datagram(&mut self, _: &mut Io<Self>, msg: &mut Msg, from: SocketAddr) -> Reply {
        assert!(!msg.truncated(), "a truncated datagram is never handed on");
        self.seen.push((msg.bufs()[0].clone(), from));
        let buf = &mut msg.bufs_mut()[0];
        match self.mode {
            Mode::Upper => buf.make_ascii_uppercase(),
            Mode::Huge => buf.resize(70_000, b'x'),
            Mode::WrongFamily => return Reply::SendTo("[::1]:9".parse().unwrap()),
            Mode::Silent => return Reply::Nothing,
        }
        Reply::SendTo(from)
    }
}

fn context(options: &UdpOptions, mode: Mode) -> Server {
    Server {
        udp: Udp::new(options),
        mode,
        seen: Vec::new(),
        client: None,
        got: Vec::new(),
    }
}

/// A server on 127.0.0.1:0 with 4 messages of 64 bytes, and its address.
fn server(mode: Mode) -> (Io<Server>, Server, SocketAddr) {
    let options = UdpOptions::new(4, 64);
    let mut io = Io::new(&pooled(&options, options.ops_max())).expect("a backend");
    let socket = bind_udp("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    let addr = socket.local_addr().unwrap();
    let mut ctx = context(&options, mode);
    serve_udp(&mut ctx, &mut io, socket).unwrap();
    (io, ctx, addr)
}

/// Runs the loop until `done` holds: at most 3,000 turns of up to 10 ms.
fn run_until(io: &mut Io<Server>, ctx: &mut Server, done: impl Fn(&Server) -> bool) {
    for _ in 0..3000 {
        if done(ctx) {
            return;
        }
        io.run_for_ns(ctx, 10_000_000).unwrap();
    }
    assert!(done(ctx), "not done after 3,000 turns");
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

fn stats(ctx: &mut Server) -> UdpStats {
    ctx.udp.stats()
}

/// Stops the server and checks that the socket is closed and nothing is left in flight.
fn stop_and_check(io: &mut Io<Server>, ctx: &mut Server) {
    stop_udp(ctx, io);
    run_until(io, ctx, |ctx| ctx.udp.is_closed());
    io.run_until_idle(ctx).unwrap();
    assert_eq!(io.in_flight(), 0, "receives cancelled, socket closed");
}

#[test]
fn each_sender_gets_its_reply_and_a_datagram_of_the_buffer_size_fits() {
    let (mut io, mut ctx, addr) = server(Mode::Upper);
    let clients: Vec<UdpSocket> = (0..3).map(|_| client()).collect();
    for (i, socket) in clients.iter().enumerate() {
        socket
            .send_to(format!("hello {i}").as_bytes(), addr)
            .unwrap();
    }
    clients[0].send_to(&[b'a'; 64], addr).unwrap();
    run_until(&mut io, &mut ctx, |ctx| ctx.udp.stats().sent == 4);
    let mut reply = [0; 128];
    for (i, socket) in clients.iter().enumerate() {
        let (n, from) = socket.recv_from(&mut reply).unwrap();
        assert_eq!((&reply[..n], from), (format!("HELLO {i}").as_bytes(), addr));
        assert!(ctx
            .seen
            .iter()
            .any(|(_, seen)| *seen == socket.local_addr().unwrap()));
    }
    let (n, _) = clients[0].recv_from(&mut reply).unwrap();
    assert_eq!(
        &reply[..n],
        &[b'A'; 64][..],
        "64 bytes: the buffer's size, whole"
    );
    let stats = stats(&mut ctx);
    assert_eq!((stats.received, stats.bytes_received), (4, 85));
    assert_eq!(
        (stats.bytes_sent, stats.truncated, stats.send_errors),
        (85, 0, 0)
    );
    stop_and_check(&mut io, &mut ctx);
}

#[test]
fn a_datagram_longer_than_the_buffer_is_counted_and_dropped() {
    let (mut io, mut ctx, addr) = server(Mode::Upper);
    let socket = client();
    socket.send_to(&[b'x'; 65], addr).unwrap();
    socket.send_to(b"next", addr).unwrap();
    run_until(&mut io, &mut ctx, |ctx| ctx.udp.stats().sent == 1);
    assert_eq!(ctx.udp.stats().truncated, 1);
    assert_eq!(
        ctx.seen.len(),
        1,
        "only the datagram that fit was handed on"
    );
    let mut reply = [0; 128];
    let (n, _) = socket.recv_from(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"NEXT");
    stop_and_check(&mut io, &mut ctx);
}

#[test]
fn failed_replies_are_counted_and_serving_goes_on() {
    for mode in [Mode::Huge, Mode::WrongFamily] {
        let (mut io, mut ctx, addr) = server(mode);
        let socket = client();
        for _ in 0..10 {
            socket.send_to(b"boom", addr).unwrap();
        }
        run_until(&mut io, &mut ctx, |ctx| ctx.udp.stats().send_errors == 10);
        // The messages receive again (the grown buffer replaced): a reply that can go goes.
        ctx.mode = Mode::Upper;
        socket.send_to(b"fine", addr).unwrap();
        run_until(&mut io, &mut ctx, |ctx| ctx.udp.stats().sent == 1);
        let mut reply = [0; 128];
        let (n, _) = socket.recv_from(&mut reply).unwrap();
        assert_eq!(&reply[..n], b"FINE", "{mode:?}");
        stop_and_check(&mut io, &mut ctx);
    }
}

#[test]
fn no_reply_and_a_stop_from_the_handler_and_serve_errors() {
    let (mut io, mut ctx, addr) = server(Mode::Silent);
    let socket = client();
    socket.send_to(b"quiet", addr).unwrap();
    run_until(&mut io, &mut ctx, |ctx| ctx.seen.len() == 1);
    assert_eq!(ctx.udp.stats().sent, 0);
    let again = UdpSocket::bind("127.0.0.1:0").unwrap();
    let error = serve_udp(&mut ctx, &mut io, again).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
    stop_and_check(&mut io, &mut ctx);
    stop_udp(&mut ctx, &mut io); // twice: nothing happens

    let options = UdpOptions::new(8, 64);
    let mut small: Io<Server> = Io::new(&Options::new(4)).unwrap();
    let mut ctx = context(&options, Mode::Upper);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let error = serve_udp(&mut ctx, &mut small, socket).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("UdpOptions::ops_max"), "{error}");

    // Slots enough, but no pool, then buffers without room for the receive's headroom.
    for pool in [PoolOptions::new(0, 0), PoolOptions::new(4, 64)] {
        let mut options = Options::new(UdpOptions::new(8, 64).ops_max());
        options.pool = pool;
        let mut io: Io<Server> = Io::new(&options).unwrap();
        let mut ctx = context(&UdpOptions::new(8, 64), Mode::Upper);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let error = serve_udp(&mut ctx, &mut io, socket).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let text = error.to_string();
        assert!(text.contains("UdpOptions::pool_buffer_size"), "{text}");
    }
}

fn on_client_sent(_: &mut Server, _: &mut Io<Server>, _: Tag, (n, _): (io::Result<usize>, Msg)) {
    n.expect("the simulated client's send");
}

fn on_client_recv(
    ctx: &mut Server,
    io: &mut Io<Server>,
    _: Tag,
    (n, mut msg): (io::Result<usize>, Msg),
) {
    if ctx.client.is_none() {
        // Closed by the test: its receive in flight ends (EBADF on the simulator).
        return;
    }
    n.expect("the simulated client's receive");
    ctx.got.push(std::mem::take(&mut msg.bufs_mut()[0]));
    msg.bufs_mut()[0] = Vec::with_capacity(64);
    let fd = ctx.client.as_ref().unwrap().as_raw_fd();
    io.recv_from(1, fd, msg, on_client_recv).unwrap();
}

/// The same server on the simulator's datagram sockets: a simulated client on the same loop
/// gets a reply to each of its datagrams (in any order: each travels alone); the stop
/// closes the simulated socket.
#[test]
fn serve_udp_over_the_simulator() {
    use dispatch_loop::sim::{Sim, SimOptions};
    let sim = Sim::new(&SimOptions::new(11)).unwrap();
    let options = UdpOptions::new(4, 64);
    let mut io = Io::new_sim(&pooled(&options, options.ops_max() + 12), &sim).unwrap();
    let (socket, addr) = sim.udp_bind("10.2.2.2:53".parse().unwrap()).unwrap();
    let mut ctx = context(&options, Mode::Upper);
    serve_udp(&mut ctx, &mut io, socket).unwrap();
    let (client, _) = sim.udp_bind("10.2.2.3:0".parse().unwrap()).unwrap();
    let fd = client.as_raw_fd();
    ctx.client = Some(client);
    io.recv_from(1, fd, Msg::new(Vec::with_capacity(64)), on_client_recv)
        .unwrap();
    for i in 0..8 {
        let msg = Msg::new(format!("query {i}").into_bytes());
        io.send_to(0, fd, msg, addr, on_client_sent).unwrap();
    }
    run_until(&mut io, &mut ctx, |ctx| ctx.got.len() == 8);
    let mut got: Vec<String> = ctx
        .got
        .iter()
        .map(|b| String::from_utf8_lossy(b).into())
        .collect();
    got.sort();
    let want: Vec<String> = (0..8).map(|i| format!("QUERY {i}")).collect();
    assert_eq!(got, want);
    assert_eq!(ctx.udp.stats().received, 8);
    stop_udp(&mut ctx, &mut io);
    run_until(&mut io, &mut ctx, |ctx| ctx.udp.is_closed());
    assert_eq!(
        sim.open_descriptors(),
        1,
        "the served socket is closed, the client's not"
    );
    let client = ctx.client.take().unwrap();
    io.close(2, client, |_, _, _, r| r.expect("close")).unwrap();
    io.run_until_idle(&mut ctx).unwrap();
    assert_eq!(sim.open_descriptors(), 0);
}
