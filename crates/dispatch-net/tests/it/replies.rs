//! Replies of any shape through `send`: a greeting from `on_open`, parts of every origin in
//! order and gathered into one send, the queue's limit and `on_drained`, a send to a closed
//! connection, `serve`'s checks of the loop it is given, and the idle-timeout rule for a
//! reply that is stuck while the peer keeps sending.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use dispatch_loop::sim::{Sim, SimOptions};
use dispatch_loop::{Io, Options, OutBuf, PoolBuf, PoolOptions};
use dispatch_net::{
    close, listen, send, serve, ConnId, Handler, ListenOptions, Net, NetOptions, SendErrorKind,
    SEND_QUEUE_MAX,
};

/// How the handler answers an arrival.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `[`, the bytes uppercased (a `Vec`), the bytes themselves (the pool buffer), `]\n`.
    Shapes,
    /// `SEND_QUEUE_MAX + 10` numbered parts; those refused go out from `on_drained`.
    Many,
    /// 64 MiB for a peer that does not read, on the first arrival; nothing after.
    Stuck,
    /// 256 KiB on the first arrival, then a graceful close.
    Refuse,
    /// A reply, then a panic, on the first arrival; echoes after.
    Panic,
}

struct Replier {
    net: Net,
    mode: Mode,
    /// Parts refused with `QueueFull`, sent from `on_drained`.
    later: Vec<OutBuf>,
    refused: Vec<SendErrorKind>,
    drained: u32,
    closed: u32,
    stuck: bool,
    opened: Option<ConnId>,
}

impl Handler for Replier {
    fn net(&mut self) -> &mut Net {
        &mut self.net
    }

    fn on_open(&mut self, io: &mut Io<Self>, conn: ConnId) {
        self.opened = Some(conn);
        send(self, io, conn, "hello\n").expect("a greeting");
    }

    fn on_data(&mut self, io: &mut Io<Self>, conn: ConnId, data: PoolBuf) {
        match self.mode {
            Mode::Shapes => {
                let upper = data.to_ascii_uppercase();
                for part in [OutBuf::from("["), upper.into(), data.into(), "]\n".into()] {
                    send(self, io, conn, part).expect("room in the queue");
                }
            }
            Mode::Many => {
                for i in 0..SEND_QUEUE_MAX + 10 {
                    if let Err(error) = send(self, io, conn, format!("{i},")) {
                        self.refused.push(error.kind());
                        self.later.push(error.into_data());
                    }
                }
            }
            Mode::Stuck if !self.stuck => {
                self.stuck = true;
                send(self, io, conn, vec![b'z'; 64 << 20]).unwrap();
            }
            Mode::Stuck => {}
            Mode::Panic if !self.stuck => {
                self.stuck = true;
                send(self, io, conn, "reply,").unwrap();
                panic!("a handler bug");
            }
            Mode::Panic => {
                let _ = send(self, io, conn, data);
            }
            Mode::Refuse => {
                send(self, io, conn, vec![b'r'; REFUSAL]).unwrap();
                dispatch_net::close_gracefully(self, io, conn);
                let refused = send(self, io, conn, "more").unwrap_err();
                assert_eq!(refused.kind(), SendErrorKind::Closed, "lingering");
            }
        }
    }

    fn on_drained(&mut self, io: &mut Io<Self>, conn: ConnId) {
        self.drained += 1;
        for part in std::mem::take(&mut self.later) {
            send(self, io, conn, part).expect("the queue is empty again");
        }
    }

    fn on_close(&mut self, io: &mut Io<Self>, conn: ConnId) {
        self.closed += 1;
        let refused = send(self, io, conn, "late").unwrap_err();
        assert_eq!(refused.kind(), SendErrorKind::Closed);
        assert_eq!(&refused.into_data()[..], b"late", "the bytes come back");
    }
}

/// The reply before a graceful close.
const REFUSAL: usize = 256 * 1024;

fn replier(net: &NetOptions, mode: Mode) -> Replier {
    Replier {
        net: Net::new(net),
        mode,
        later: Vec::new(),
        refused: Vec::new(),
        drained: 0,
        closed: 0,
        stuck: false,
        opened: None,
    }
}

fn loop_options(net: &NetOptions) -> Options {
    let mut options = Options::new(net.ops_max());
    options.pool = PoolOptions::new(32, 1024);
    options
}

/// A `Replier` in `mode` served on 127.0.0.1:0, and its address.
fn server(net: NetOptions, mode: Mode) -> (Io<Replier>, Replier, SocketAddr) {
    let mut io = Io::new(&loop_options(&net)).expect("a backend");
    let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut replier = replier(&net, mode);
    serve(&mut replier, &mut io, listener).unwrap();
    (io, replier, addr)
}

/// Runs the loop until the thread `peer` finishes (3,000 turns of 10 ms at most).
fn run_until_joined<T>(
    io: &mut Io<Replier>,
    replier: &mut Replier,
    peer: std::thread::JoinHandle<T>,
) -> T {
    for _ in 0..3000 {
        if peer.is_finished() {
            break;
        }
        io.run_for_ns(replier, 10_000_000).unwrap();
    }
    assert!(peer.is_finished(), "the peer still waits after 3,000 turns");
    peer.join().unwrap()
}

/// A client that sends `message`, half-closes, and returns everything it got back.
fn client(addr: SocketAddr, message: &'static [u8]) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut greeting = [0; 6];
        stream.read_exact(&mut greeting).unwrap();
        assert_eq!(&greeting, b"hello\n", "the greeting comes first");
        stream.write_all(message).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        got
    })
}

#[test]
fn a_greeting_then_replies_of_every_shape_go_out_in_order_one_send_per_arrival() {
    let (mut io, mut replier, addr) = server(NetOptions::new(4), Mode::Shapes);
    let got = run_until_joined(&mut io, &mut replier, client(addr, b"abc"));
    assert_eq!(got, b"[ABCabc]\n");
    let stats = replier.net.stats();
    assert_eq!(stats.bytes_sent, 6 + 9);
    assert_eq!(
        stats.sends, 2,
        "the greeting, then four parts gathered into one send"
    );
}

#[test]
fn a_send_past_the_queue_is_refused_and_the_rest_goes_out_from_on_drained() {
    let (mut io, mut replier, addr) = server(NetOptions::new(4), Mode::Many);
    let got = run_until_joined(&mut io, &mut replier, client(addr, b"go"));
    let expected: String = (0..SEND_QUEUE_MAX + 10).map(|i| format!("{i},")).collect();
    assert_eq!(
        String::from_utf8(got).unwrap(),
        expected,
        "every part, in order"
    );
    // The greeting holds one place in the queue until it is out.
    assert!(replier.refused.len() >= 10, "{}", replier.refused.len());
    assert!(replier
        .refused
        .iter()
        .all(|kind| *kind == SendErrorKind::QueueFull));
    assert!(
        replier.drained >= 2,
        "the greeting, the first batch, the rest"
    );
}

#[test]
fn a_send_to_a_closed_connection_hands_the_bytes_back() {
    let (mut io, mut replier, addr) = server(NetOptions::new(4), Mode::Shapes);
    let stream = TcpStream::connect(addr).unwrap();
    while replier.net.stats().accepted == 0 {
        io.run_for_ns(&mut replier, 10_000_000).unwrap();
    }
    let conn = replier.opened.expect("opened");
    close(&mut replier, &mut io, conn);
    // `on_close` checked that a send after the close is refused with its bytes.
    io.run_for_ns(&mut replier, 10_000_000).unwrap();
    assert_eq!(replier.closed, 1);
    drop(stream);
}

#[test]
fn serve_names_the_option_a_loop_lacks_and_refuses_a_second_call() {
    let net = NetOptions::new(10);
    let listener = || TcpListener::bind("127.0.0.1:0").unwrap();
    let mut no_pool: Io<Replier> = Io::new(&Options::new(net.ops_max())).unwrap();
    let error = serve(&mut replier(&net, Mode::Shapes), &mut no_pool, listener()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("Options::pool"), "{error}");

    let mut options = loop_options(&net);
    options.ops_max = net.ops_max() - 1;
    let mut few_slots: Io<Replier> = Io::new(&options).unwrap();
    let error = serve(&mut replier(&net, Mode::Shapes), &mut few_slots, listener()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(
        error
            .to_string()
            .contains("Options::ops_max of at least 33"),
        "{error}"
    );

    let mut io: Io<Replier> = Io::new(&loop_options(&net)).unwrap();
    let mut served = replier(&net, Mode::Shapes);
    serve(&mut served, &mut io, listener()).unwrap();
    let error = serve(&mut served, &mut io, listener()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
    dispatch_net::stop(&mut served, &mut io);
    io.run_until_idle(&mut served).unwrap();
}

/// The idle rule on the simulator, in virtual time: a peer that reads nothing gets a 64 MiB
/// reply, which sticks; while it keeps sending (every 100 ms) and is read, the connection
/// lives past the 300 ms timeout; once it has sent so much that reading stops, nothing moves
/// either way and the timeout closes it.
#[test]
fn a_stuck_reply_lives_while_the_peer_is_read_and_is_closed_once_nothing_moves() {
    let sim = Sim::new(&SimOptions::new(11)).unwrap();
    let mut net = NetOptions::new(4);
    net.idle_timeout_ns = 300_000_000;
    let mut io = Io::new_sim(&loop_options(&net), &sim).unwrap();
    let listener = sim.listen("10.2.0.1:80".parse().unwrap(), 8).unwrap();
    let addr = listener.local_addr();
    let mut replier = replier(&net, Mode::Stuck);
    serve(&mut replier, &mut io, listener).unwrap();
    let peer = sim.peer_connect(addr);
    let mut open_at = Vec::new();
    for step in 0..30 {
        // The peer sends until the simulated network takes no more (reading has stopped).
        let _ = sim.peer_send(&peer, &[step as u8; 100]);
        io.run_for_ns(&mut replier, 100_000_000).unwrap();
        if replier.net.connections() == 1 {
            open_at.push(step);
        }
    }
    assert!(
        open_at.len() >= 5,
        "open for 500 ms of arrivals at least, past the 300 ms timeout: {open_at:?}"
    );
    assert_eq!(replier.net.connections(), 0, "closed once nothing moved");
    assert_eq!(replier.net.stats().idle_timeouts, 1);
    sim.peer_close(peer);
    dispatch_net::stop(&mut replier, &mut io);
    io.run_until_idle(&mut replier).unwrap();
}

/// The idle rule on the backend under test, in real time with wide margins (no timing is
/// judged but the order of events): a reply sticks at once; arrivals every 500 ms (fewer
/// than `PENDING_MAX`, so the connection is still read) keep it open past its 2 s timeout;
/// once they stop, the timeout closes it.
#[test]
fn arrivals_keep_a_connection_with_a_stuck_reply_open_on_this_backend() {
    let mut net = NetOptions::new(4);
    net.idle_timeout_ns = 2_000_000_000;
    let (mut io, mut replier, addr) = server(net, Mode::Stuck);
    let mut peer = TcpStream::connect(addr).unwrap();
    let started = std::time::Instant::now();
    let mut arrivals = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let due = Duration::from_millis(500) * (arrivals + 1);
        if arrivals < 3 && started.elapsed() >= due {
            peer.write_all(b"more").unwrap();
            arrivals += 1;
        }
        io.run_for_ns(&mut replier, 10_000_000).unwrap();
    }
    assert!(replier.stuck, "the reply was sent");
    assert_eq!(
        replier.net.connections(),
        1,
        "open 2.5 s after the reply stuck: arrivals 1 s ago were progress"
    );
    for _ in 0..600 {
        if replier.net.connections() == 0 {
            break;
        }
        io.run_for_ns(&mut replier, 10_000_000).unwrap();
    }
    assert_eq!(replier.net.stats().idle_timeouts, 1, "then closed as idle");
}

/// A graceful close delivers every reply even when the peer sent more behind the request
/// and reads late through a small receive buffer (a plain close would reset the connection
/// with those bytes unread, discarding the reply): the peer reads the whole reply, then the
/// end of the stream, and the server drops what it sent meanwhile.
#[test]
fn a_graceful_close_delivers_the_reply_to_a_peer_that_sent_more() {
    let (mut io, mut replier, addr) = server(NetOptions::new(4), Mode::Refuse);
    let peer = std::thread::spawn(move || {
        let socket = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&socket, 4096).unwrap();
        rustix::net::connect(&socket, &addr).unwrap();
        let mut stream = TcpStream::from(socket);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut greeting = [0; 6];
        stream.read_exact(&mut greeting).unwrap();
        stream.write_all(b"bad request").unwrap();
        // More behind it, arriving after the server decided to close.
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(2));
            stream.write_all(&[b'm'; 1024]).unwrap();
        }
        let mut got = Vec::new();
        let end = stream.read_to_end(&mut got);
        (end.map_err(|error| error.kind()), got.len())
    });
    let (end, len) = run_until_joined(&mut io, &mut replier, peer);
    assert_eq!(
        end,
        Ok(REFUSAL),
        "every byte of the reply, then the end, no reset"
    );
    assert_eq!(len, REFUSAL);
    for _ in 0..300 {
        if replier.closed == 1 {
            break;
        }
        io.run_for_ns(&mut replier, 10_000_000).unwrap();
    }
    assert_eq!(replier.closed, 1, "closed after the peer's end of stream");
}

/// A handler that panics after queueing a reply leaves no connection stalled: the reply goes
/// out with the connection's next event, and the connection is served on (the panic's
/// sends were only queued, the callback never returning to flush them).
#[test]
fn a_reply_queued_before_a_handler_panicked_goes_out_with_the_next_event() {
    let (mut io, mut replier, addr) = server(NetOptions::new(4), Mode::Panic);
    let mut client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = [0; 6];
    let reader = std::thread::spawn(move || {
        client.read_exact(&mut greeting).unwrap();
        client.write_all(b"first").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        client.write_all(b"then").unwrap();
        let mut got = [0; 10];
        client.read_exact(&mut got).map(|()| got)
    });
    let mut panicked = false;
    for _ in 0..3000 {
        if reader.is_finished() {
            break;
        }
        let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            io.run_for_ns(&mut replier, 10_000_000)
        }));
        panicked |= turn.is_err();
    }
    assert!(panicked, "the handler panicked");
    let got = reader.join().unwrap().expect("the reply, then the echo");
    assert_eq!(&got, b"reply,then");
}
