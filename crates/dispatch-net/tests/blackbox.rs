//! Black-box tests of dispatch-net's sends, drains, graceful close, idle timeouts and
//! `serve`'s errors, and of dispatch-loop's vectored sends, `OutBuf`, multishot cancels,
//! `stop` before a run and `Stats::pool_waits`, written from the documentation alone.
//! Real sockets on 127.0.0.1, every wait bounded.

#![allow(
    clippy::type_complexity,
    clippy::field_reassign_with_default,
    clippy::unnecessary_map_or,
    clippy::manual_repeat_n
)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dispatch_loop::{Io, OpId, Options, OutBuf, PoolBuf, PoolOptions, Shot, Tag, GATHER_MAX};
use dispatch_net::{
    close_gracefully, listen, send, serve, ConnId, Handler, ListenOptions, Net, NetOptions,
    SendErrorKind, LINGER_BYTES_MAX, SEND_QUEUE_MAX,
};

const BOUND: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Open(ConnId),
    Data(ConnId, Vec<u8>),
    Drained(ConnId),
    Close(ConnId),
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Echo,
    Shapes,
    Greet,
    QueueFull,
    BigFirst,
    Graceful,
    BigOnOpen,
    Sink,
    GracefulOnOpen,
    BigGraceful,
}

const BIG: usize = 32 << 20;

struct Srv {
    net: Net,
    mode: Mode,
    events: Vec<Ev>,
    send_errors: Vec<(SendErrorKind, Vec<u8>)>,
    backlog: Vec<Vec<u8>>,
    first_done: bool,
}

impl Srv {
    fn closes(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Ev::Close(_)))
            .count()
    }
    fn datas(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Ev::Data(..)))
            .count()
    }
}

impl Handler for Srv {
    fn net(&mut self) -> &mut Net {
        &mut self.net
    }

    fn on_open(&mut self, io: &mut Io<Self>, conn: ConnId) {
        self.events.push(Ev::Open(conn));
        match self.mode {
            Mode::Greet => {
                send(self, io, conn, "hello\n").expect("greeting queued");
            }
            Mode::BigOnOpen => {
                send(self, io, conn, vec![b'x'; BIG]).expect("big reply queued");
            }
            Mode::GracefulOnOpen => {
                send(self, io, conn, "busy\n").expect("queued");
                close_gracefully(self, io, conn);
            }
            _ => {}
        }
    }

    fn on_data(&mut self, io: &mut Io<Self>, conn: ConnId, data: PoolBuf) {
        self.events.push(Ev::Data(conn, data.to_vec()));
        match self.mode {
            Mode::Echo | Mode::Greet => {
                send(self, io, conn, data).expect("echo queued");
            }
            Mode::Shapes => {
                static SLICE: &[u8] = b"slice,";
                send(self, io, conn, b"vec,".to_vec()).expect("vec");
                send(self, io, conn, String::from("string,")).expect("string");
                send(self, io, conn, "str,").expect("str");
                send(self, io, conn, b"arr,").expect("array");
                send(self, io, conn, SLICE).expect("slice");
                send(self, io, conn, data).expect("poolbuf");
            }
            Mode::QueueFull => {
                if self.first_done {
                    send(self, io, conn, data).expect("echo queued");
                    return;
                }
                self.first_done = true;
                for i in 0..100 {
                    let item = format!("{i:03},").into_bytes();
                    if !self.backlog.is_empty() {
                        self.backlog.push(item);
                        continue;
                    }
                    if let Err(e) = send(self, io, conn, item) {
                        let kind = e.kind();
                        let back = e.into_data().into_vec().expect("a Vec comes back as a Vec");
                        self.send_errors.push((kind, back.clone()));
                        self.backlog.push(back);
                    }
                }
            }
            Mode::BigFirst => {
                if self.first_done {
                    send(self, io, conn, data).expect("echo queued");
                } else {
                    self.first_done = true;
                    send(self, io, conn, vec![b'x'; BIG]).expect("big queued");
                }
            }
            Mode::Graceful => {
                send(self, io, conn, "400\n").expect("400 queued");
                close_gracefully(self, io, conn);
                if let Err(e) = send(self, io, conn, "late") {
                    self.send_errors.push((e.kind(), e.into_data().to_vec()));
                } else {
                    self.send_errors
                        .push((SendErrorKind::QueueFull, b"ACCEPTED".to_vec()));
                }
            }
            Mode::BigOnOpen | Mode::Sink | Mode::GracefulOnOpen => {}
            Mode::BigGraceful => {
                send(self, io, conn, vec![b'y'; BIG]).expect("big");
                for _ in 0..8 {
                    send(self, io, conn, "tail").expect("tail");
                }
                close_gracefully(self, io, conn);
            }
        }
    }

    fn on_drained(&mut self, io: &mut Io<Self>, conn: ConnId) {
        self.events.push(Ev::Drained(conn));
        if self.mode == Mode::QueueFull && !self.backlog.is_empty() {
            let rest = std::mem::take(&mut self.backlog);
            let mut it = rest.into_iter();
            for item in it.by_ref() {
                if let Err(e) = send(self, io, conn, item) {
                    self.backlog.push(e.into_data().into_vec().unwrap());
                    break;
                }
            }
            self.backlog.extend(it);
        }
    }

    fn on_close(&mut self, _: &mut Io<Self>, conn: ConnId) {
        self.events.push(Ev::Close(conn));
    }
}

fn start(mode: Mode, net_options: NetOptions) -> (Io<Srv>, Srv, SocketAddr) {
    let mut options = Options::new(net_options.ops_max());
    options.pool = PoolOptions::new(64, 4096);
    let mut io: Io<Srv> = Io::new(&options).expect("a backend");
    let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut srv = Srv {
        net: Net::new(&net_options),
        mode,
        events: Vec::new(),
        send_errors: Vec::new(),
        backlog: Vec::new(),
        first_done: false,
    };
    serve(&mut srv, &mut io, listener).expect("serve");
    (io, srv, addr)
}

/// Runs the loop in 1 ms turns until `done` or the bound; returns whether `done` held.
fn run_until(io: &mut Io<Srv>, srv: &mut Srv, mut done: impl FnMut(&Srv) -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < BOUND {
        if done(srv) {
            return true;
        }
        io.run_for_ns(srv, 1_000_000).unwrap();
    }
    done(srv)
}

/// Runs the loop until the client thread finishes (bounded), then joins it.
fn drive<T: Send + 'static>(io: &mut Io<Srv>, srv: &mut Srv, client: thread::JoinHandle<T>) -> T {
    let start = Instant::now();
    while !client.is_finished() {
        assert!(
            start.elapsed() < BOUND,
            "client did not finish within the bound"
        );
        io.run_for_ns(srv, 1_000_000).unwrap();
    }
    client.join().expect("client thread")
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    s
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    s.read_exact(&mut v).unwrap();
    v
}

// ---------------------------------------------------------------- send shapes & gathering

#[test]
fn send_accepts_every_outbuf_shape_in_order() {
    let (mut io, mut srv, addr) = start(Mode::Shapes, NetOptions::new(4));
    let expected = b"vec,string,str,arr,slice,ping".to_vec();
    let n = expected.len();
    let got = drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"ping").unwrap();
            read_n(&mut c, n)
        }),
    );
    assert_eq!(got, expected);
    assert_eq!(srv.net.stats().slot_shortages, 0);
}

#[test]
fn sends_of_one_callback_are_gathered_into_one_send() {
    let (mut io, mut srv, addr) = start(Mode::Shapes, NetOptions::new(4));
    let n = b"vec,string,str,arr,slice,ping".len();
    drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"ping").unwrap();
            read_n(&mut c, n)
        }),
    );
    assert!(run_until(&mut io, &mut srv, |s| s
        .events
        .iter()
        .any(|e| matches!(e, Ev::Drained(_)))));
    let stats = srv.net.stats();
    assert_eq!(srv.datas(), 1, "one arrival");
    assert_eq!(
        stats.sends, 1,
        "six sends from one on_data: one vectored send; {stats:?}"
    );
    assert_eq!(stats.bytes_sent, n as u64);
}

#[test]
fn greeting_from_on_open_goes_out_before_any_reply() {
    let (mut io, mut srv, addr) = start(Mode::Greet, NetOptions::new(4));
    let got = drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"ping").unwrap();
            read_n(&mut c, 10)
        }),
    );
    assert_eq!(got, b"hello\nping");
    assert_eq!(srv.net.stats().slot_shortages, 0);
}

// ---------------------------------------------------------------- queue limit & on_drained

#[test]
fn send_queue_max_then_rest_from_on_drained() {
    assert_eq!(SEND_QUEUE_MAX, 64);
    let (mut io, mut srv, addr) = start(Mode::QueueFull, NetOptions::new(4));
    let expected: Vec<u8> = (0..100)
        .flat_map(|i| format!("{i:03},").into_bytes())
        .collect();
    let n = expected.len();
    let got = drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"go").unwrap();
            let got = read_n(&mut c, n);
            c.write_all(b"again").unwrap();
            let again = read_n(&mut c, 5);
            (got, again)
        }),
    );
    assert_eq!(got.0, expected, "every item, in order");
    assert_eq!(got.1, b"again");
    assert_eq!(
        srv.send_errors.len(),
        1,
        "exactly the 65th send fails in on_data"
    );
    assert_eq!(srv.send_errors[0].0, SendErrorKind::QueueFull);
    assert_eq!(srv.send_errors[0].1, b"064,", "the refused bytes come back");
    assert!(srv.backlog.is_empty());
    assert_eq!(srv.net.stats().slot_shortages, 0);
}

#[test]
fn send_error_kind_is_send_sync_error() {
    fn is_err<E: std::error::Error + Send + Sync + 'static>() {}
    is_err::<SendErrorKind>();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(SendErrorKind::Closed);
    assert!(!boxed.to_string().is_empty());
}

#[test]
fn no_on_data_while_a_send_is_out_and_drained_comes_first() {
    let (mut io, mut srv, addr) = start(Mode::BigFirst, NetOptions::new(4));
    let got = drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"first").unwrap();
            let one = read_n(&mut c, 1); // the big reply started
            c.write_all(b"second").unwrap();
            let rest = read_n(&mut c, BIG - 1);
            let echo = read_n(&mut c, 6);
            (one, rest.iter().all(|&b| b == b'x'), echo)
        }),
    );
    assert_eq!(got.0, b"x");
    assert!(got.1);
    assert_eq!(got.2, b"second");
    let kinds: Vec<&str> = srv
        .events
        .iter()
        .map(|e| match e {
            Ev::Open(_) => "open",
            Ev::Data(..) => "data",
            Ev::Drained(_) => "drained",
            Ev::Close(_) => "close",
        })
        .collect();
    let second = srv
        .events
        .iter()
        .position(|e| matches!(e, Ev::Data(_, d) if d.ends_with(b"second") || d == b"second"))
        .expect("second data");
    let drained = srv
        .events
        .iter()
        .position(|e| matches!(e, Ev::Drained(_)))
        .expect("drained");
    assert!(
        drained < second,
        "on_drained before the waiting arrival: {kinds:?}"
    );
    assert_eq!(srv.net.stats().slot_shortages, 0);
}

#[test]
fn send_to_stale_id_is_closed() {
    let (mut io, mut srv, addr) = start(Mode::Echo, NetOptions::new(4));
    drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"x").unwrap();
            read_n(&mut c, 1);
        }),
    );
    assert!(run_until(&mut io, &mut srv, |s| s.closes() == 1));
    let Ev::Open(conn) = srv.events[0] else {
        panic!("{:?}", srv.events)
    };
    let err = send(&mut srv, &mut io, conn, b"zz".to_vec()).expect_err("stale id");
    assert_eq!(err.kind(), SendErrorKind::Closed);
    assert_eq!(err.into_data().into_vec().unwrap(), b"zz");
}

// ---------------------------------------------------------------- close_gracefully

#[test]
fn close_gracefully_delivers_reply_despite_unread_bytes() {
    let (mut io, mut srv, addr) = start(Mode::Graceful, NetOptions::new(4));
    let got = drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            let mut req = b"bad\n".to_vec();
            req.extend(std::iter::repeat(b'j').take(100_000));
            let _ = c.write_all(&req);
            let mut all = Vec::new();
            let r = c.read_to_end(&mut all);
            (all, r.map_err(|e| e.kind()))
        }),
    );
    assert_eq!(got.0, b"400\n", "the reply, then the end of stream");
    assert!(got.1.is_ok(), "no reset: {:?}", got.1);
    assert!(
        run_until(&mut io, &mut srv, |s| s.closes() == 1),
        "closed after the peer closed"
    );
    assert_eq!(
        srv.datas(),
        1,
        "arrivals after close_gracefully are not handed over"
    );
    assert_eq!(srv.send_errors.len(), 1);
    assert_eq!(
        srv.send_errors[0].0,
        SendErrorKind::Closed,
        "send refuses once closing gracefully"
    );
    assert_eq!(srv.send_errors[0].1, b"late");
    assert_eq!(srv.net.stats().slot_shortages, 0);
}

#[test]
fn close_gracefully_closes_after_linger_bytes_max() {
    let mut opts = NetOptions::new(4);
    opts.idle_timeout_ns = 0;
    let (mut io, mut srv, addr) = start(Mode::Graceful, opts);
    let (tx, rx) = mpsc::channel::<()>();
    let client = thread::spawn(move || {
        let mut c = client(addr);
        c.write_all(b"bad\n").unwrap();
        let reply = read_n(&mut c, 4);
        let junk = vec![b'j'; 64 * 1024];
        let mut written = 0u64;
        while written < 3 * LINGER_BYTES_MAX {
            match c.write(&junk) {
                Ok(n) => written += n as u64,
                Err(_) => break,
            }
        }
        let _ = rx.recv_timeout(BOUND); // keep the socket open until told
        reply
    });
    let closed = run_until(&mut io, &mut srv, |s| s.closes() == 1);
    tx.send(()).ok();
    let reply = drive(&mut io, &mut srv, client);
    assert_eq!(reply, b"400\n");
    assert!(
        closed,
        "more than LINGER_BYTES_MAX dropped closes at once, peer still open"
    );
}

#[test]
fn close_gracefully_stale_id_does_nothing() {
    let (mut io, mut srv, addr) = start(Mode::Echo, NetOptions::new(4));
    drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"x").unwrap();
            read_n(&mut c, 1);
        }),
    );
    assert!(run_until(&mut io, &mut srv, |s| s.closes() == 1));
    let Ev::Open(conn) = srv.events[0] else {
        panic!()
    };
    close_gracefully(&mut srv, &mut io, conn);
    io.run_for_ns(&mut srv, 5_000_000).unwrap();
    assert_eq!(srv.closes(), 1);
}

// ---------------------------------------------------------------- serve's errors

fn bare_srv(net_options: &NetOptions) -> Srv {
    Srv {
        net: Net::new(net_options),
        mode: Mode::Echo,
        events: Vec::new(),
        send_errors: Vec::new(),
        backlog: Vec::new(),
        first_done: false,
    }
}

#[test]
fn serve_without_pool_is_invalid_input() {
    let net_options = NetOptions::new(4);
    let mut io: Io<Srv> = Io::new(&Options::new(net_options.ops_max())).unwrap();
    let mut srv = bare_srv(&net_options);
    let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    let err = serve(&mut srv, &mut io, listener).expect_err("no pool");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("pool"), "{err}");
}

#[test]
fn serve_with_too_few_slots_is_invalid_input() {
    let net_options = NetOptions::new(4);
    let mut options = Options::new(net_options.ops_max() - 1);
    options.pool = PoolOptions::new(16, 1024);
    let mut io: Io<Srv> = Io::new(&options).unwrap();
    let mut srv = bare_srv(&net_options);
    let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    let err = serve(&mut srv, &mut io, listener).expect_err("too few slots");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("ops_max"), "{err}");
}

#[test]
fn serve_twice_is_already_exists() {
    let (mut io, mut srv, _addr) = start(Mode::Echo, NetOptions::new(4));
    let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    let err = serve(&mut srv, &mut io, listener).expect_err("second serve");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
}

#[test]
fn serve_after_a_failed_serve_works() {
    // A failed serve (no pool) did not serve: the same Net serves on a proper loop.
    let net_options = NetOptions::new(4);
    let mut srv = bare_srv(&net_options);
    {
        let mut io: Io<Srv> = Io::new(&Options::new(net_options.ops_max())).unwrap();
        let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
        serve(&mut srv, &mut io, listener).expect_err("no pool");
    }
    let mut options = Options::new(net_options.ops_max());
    options.pool = PoolOptions::new(16, 1024);
    let mut io: Io<Srv> = Io::new(&options).unwrap();
    let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    serve(&mut srv, &mut io, listener).expect("serve after a refused serve");
}

// ---------------------------------------------------------------- idle timeouts

fn idle_opts(ns: u64) -> NetOptions {
    let mut o = NetOptions::new(4);
    o.idle_timeout_ns = ns;
    o
}

#[test]
fn idle_connection_is_closed_after_timeout() {
    let (mut io, mut srv, addr) = start(Mode::Echo, idle_opts(100_000_000));
    let mut c = client(addr);
    assert!(
        run_until(&mut io, &mut srv, |s| s.closes() == 1),
        "idle connection closed"
    );
    let stats = srv.net.stats();
    assert_eq!(stats.idle_timeouts, 1, "{stats:?}");
    let mut b = [0; 1];
    assert_eq!(c.read(&mut b).unwrap_or(0), 0);
}

#[test]
fn peer_that_reads_nothing_is_closed_after_timeout() {
    let (mut io, mut srv, addr) = start(Mode::BigOnOpen, idle_opts(100_000_000));
    let _c = client(addr);
    assert!(
        run_until(&mut io, &mut srv, |s| s.closes() == 1),
        "stuck reply closed"
    );
    assert_eq!(srv.net.stats().idle_timeouts, 1);
    assert_eq!(srv.net.stats().slot_shortages, 0);
}

#[test]
fn peer_that_keeps_sending_but_never_reads_is_closed_once_reading_stops() {
    let (mut io, mut srv, addr) = start(Mode::BigOnOpen, idle_opts(200_000_000));
    let (tx, rx) = mpsc::channel::<()>();
    let client = thread::spawn(move || {
        let mut c = client(addr);
        c.set_write_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let start = Instant::now();
        while rx.try_recv().is_err() && start.elapsed() < BOUND {
            if c.write(b"k").is_err() {
                // a full buffer (timeout) is fine, a reset ends it
                if c.peer_addr().is_err() {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(2));
        }
    });
    let closed = run_until(&mut io, &mut srv, |s| s.closes() == 1);
    tx.send(()).ok();
    drive(&mut io, &mut srv, client);
    assert!(closed, "closed after the timeout once reading stopped");
    assert_eq!(srv.net.stats().idle_timeouts, 1);
}

#[test]
fn slow_reader_is_kept_alive_by_bytes_sent() {
    let (mut io, mut srv, addr) = start(Mode::BigOnOpen, idle_opts(1_000_000_000));
    let client = thread::spawn(move || {
        let mut c = client(addr);
        let mut buf = vec![0; 1 << 20];
        let mut total = 0;
        while total < BIG {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
            thread::sleep(Duration::from_millis(2));
        }
        total
    });
    let total = drive(&mut io, &mut srv, client);
    assert_eq!(total, BIG, "a reader that keeps reading is not timed out");
    assert_eq!(srv.net.stats().idle_timeouts, 0);
}

// ---------------------------------------------------------------- dispatch-loop: OutBuf

#[test]
fn outbuf_shapes_and_into_vec() {
    let mut v = OutBuf::from(b"hello".to_vec());
    v.advance(2);
    assert_eq!(&v[..], b"llo");
    assert_eq!(v.len(), 3);
    assert_eq!(v.into_vec().unwrap(), b"llo");
    assert!(OutBuf::from("static").into_vec().is_none());
    assert!(OutBuf::from(&b"arr"[..]).into_vec().is_none());
    assert_eq!(OutBuf::from(String::from("s")).into_vec().unwrap(), b"s");
    let e = OutBuf::from(Vec::new());
    assert!(e.is_empty());
    let mut list = vec![OutBuf::from("ab"), OutBuf::from("cd"), OutBuf::from("ef")];
    OutBuf::consume(&mut list, 3);
    assert_eq!(list.len(), 2);
    assert_eq!(&list[0][..], b"d");
    OutBuf::consume(&mut list, 3);
    assert!(list.is_empty());
}

#[test]
#[should_panic]
fn outbuf_advance_past_len_panics() {
    let mut b = OutBuf::from("ab");
    b.advance(3);
}

#[test]
#[should_panic]
fn outbuf_consume_past_len_panics() {
    let mut list = vec![OutBuf::from("ab")];
    OutBuf::consume(&mut list, 3);
}

// ---------------------------------------------------------------- dispatch-loop: send_vectored

type Sent = (io::Result<usize>, Vec<OutBuf>);

#[derive(Default)]
struct VCtx {
    done: Option<(io::Result<usize>, usize)>,
}

fn on_sent(ctx: &mut VCtx, _: &mut Io<VCtx>, _: Tag, (r, bufs): Sent) {
    ctx.done = Some((r, bufs.len()));
}

fn run_vec(io: &mut Io<VCtx>, ctx: &mut VCtx) {
    let start = Instant::now();
    while ctx.done.is_none() && start.elapsed() < BOUND {
        io.run_for_ns(ctx, 1_000_000).unwrap();
    }
}

#[test]
fn send_vectored_sends_at_most_gather_max() {
    let mut io: Io<VCtx> = Io::new(&Options::new(8)).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let bufs: Vec<OutBuf> = (0..GATHER_MAX + 36)
        .map(|i| OutBuf::from(vec![i as u8]))
        .collect();
    io.send_vectored(0, a.as_raw_fd(), bufs, on_sent).unwrap();
    let mut ctx = VCtx::default();
    run_vec(&mut io, &mut ctx);
    let (r, len) = ctx.done.take().expect("completed");
    assert_eq!(
        r.unwrap(),
        GATHER_MAX,
        "the count covers the first GATHER_MAX buffers"
    );
    assert_eq!(len, GATHER_MAX + 36, "the list comes back unchanged");
    let got = {
        let mut v = vec![0; GATHER_MAX];
        b.read_exact(&mut v).unwrap();
        v
    };
    assert_eq!(got, (0..GATHER_MAX).map(|i| i as u8).collect::<Vec<_>>());
}

#[test]
fn send_vectored_empty_list_completes_with_zero() {
    let mut io: Io<VCtx> = Io::new(&Options::new(8)).unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    io.send_vectored(0, a.as_raw_fd(), Vec::new(), on_sent)
        .unwrap();
    let mut ctx = VCtx::default();
    run_vec(&mut io, &mut ctx);
    let (r, _) = ctx.done.take().expect("completed");
    assert_eq!(r.unwrap(), 0);
}

#[test]
fn send_vectored_with_empty_buffers() {
    let mut io: Io<VCtx> = Io::new(&Options::new(8)).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let bufs = vec![
        OutBuf::from(Vec::new()),
        OutBuf::from("ab"),
        OutBuf::from(""),
        OutBuf::from(b"cd".to_vec()),
    ];
    io.send_vectored(0, a.as_raw_fd(), bufs, on_sent).unwrap();
    let mut ctx = VCtx::default();
    run_vec(&mut io, &mut ctx);
    let (r, len) = ctx.done.take().expect("completed");
    assert_eq!(r.unwrap(), 4);
    assert_eq!(len, 4);
    let mut got = [0; 4];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"abcd");
}

#[test]
fn send_vectored_only_empty_buffers_completes_with_zero() {
    let mut io: Io<VCtx> = Io::new(&Options::new(8)).unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let bufs = vec![OutBuf::from(""), OutBuf::from(Vec::new())];
    io.send_vectored(0, a.as_raw_fd(), bufs, on_sent).unwrap();
    let mut ctx = VCtx::default();
    run_vec(&mut io, &mut ctx);
    let (r, _) = ctx.done.take().expect("completed");
    assert_eq!(r.unwrap(), 0);
}

#[test]
fn send_vectored_to_reset_peer_is_an_error_not_a_signal() {
    let mut io: Io<VCtx> = Io::new(&Options::new(8)).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    drop(b);
    let bufs = vec![OutBuf::from("ab"), OutBuf::from("cd")];
    io.send_vectored(0, a.as_raw_fd(), bufs, on_sent).unwrap();
    let mut ctx = VCtx::default();
    run_vec(&mut io, &mut ctx);
    let (r, _) = ctx.done.take().expect("completed");
    assert!(r.is_err());
}

// ---------------------------------------------------------------- dispatch-loop: stop before a run

#[derive(Default)]
struct StopCtx {
    fired: bool,
}

fn fire_and_stop(ctx: &mut StopCtx, io: &mut Io<StopCtx>, _: Tag, _: io::Result<()>) {
    ctx.fired = true;
    io.stop();
}

#[test]
fn stop_before_run_for_ns_ends_it_after_one_turn() {
    let mut io: Io<StopCtx> = Io::new(&Options::new(4)).unwrap();
    io.timeout(0, 2_000_000_000, fire_and_stop).unwrap();
    io.stop();
    let mut ctx = StopCtx::default();
    io.run_for_ns(&mut ctx, u64::MAX).unwrap();
    assert!(
        !ctx.fired,
        "the run ended on the earlier stop, not on the timer"
    );
    assert_eq!(io.in_flight(), 1, "operations stay in flight");
    io.run_for_ns(&mut ctx, 5_000_000_000).unwrap();
    assert!(ctx.fired, "the next run is not stopped");
}

#[test]
fn stop_before_run_until_idle_ends_it_after_one_turn() {
    let mut io: Io<StopCtx> = Io::new(&Options::new(4)).unwrap();
    io.timeout(0, 2_000_000_000, fire_and_stop).unwrap();
    io.stop();
    let mut ctx = StopCtx::default();
    io.run_until_idle(&mut ctx).unwrap();
    assert!(!ctx.fired);
    assert_eq!(io.in_flight(), 1);
}

fn set_fired(ctx: &mut StopCtx, _: &mut Io<StopCtx>, _: Tag, _: io::Result<()>) {
    ctx.fired = true;
}

#[test]
fn stop_before_run_still_runs_ready_callbacks_in_its_turn() {
    let mut io: Io<StopCtx> = Io::new(&Options::new(4)).unwrap();
    io.timeout(0, 0, set_fired).unwrap();
    io.timeout(1, 2_000_000_000, fire_and_stop).unwrap();
    io.stop();
    let mut ctx = StopCtx::default();
    // The turn submits the zero timeout; it may or may not be ready in that turn, but the
    // run must return before the 2 s timer.
    let start = Instant::now();
    io.run_for_ns(&mut ctx, u64::MAX).unwrap();
    assert!(io.in_flight() >= 1, "the 2 s timer is still in flight");
    assert!(start.elapsed() < Duration::from_millis(1900));
}

#[test]
fn tick_answers_an_earlier_stop() {
    let mut io: Io<StopCtx> = Io::new(&Options::new(4)).unwrap();
    io.stop();
    let mut ctx = StopCtx::default();
    io.tick(&mut ctx).unwrap();
    io.timeout(0, 200_000_000, fire_and_stop).unwrap();
    io.run_for_ns(&mut ctx, u64::MAX).unwrap();
    assert!(
        ctx.fired,
        "the stop was answered by the tick, so this run ran to the timer"
    );
}

// ---------------------------------------------------------------- dispatch-loop: multishot cancel

#[derive(Default)]
struct McCtx {
    id: Option<OpId>,
    shots: Vec<(Result<Vec<u8>, Option<i32>>, bool)>,
    cancel_answers: Vec<Result<(), Option<i32>>>,
}

fn mc_cancelled(ctx: &mut McCtx, _: &mut Io<McCtx>, _: Tag, r: io::Result<()>) {
    ctx.cancel_answers.push(r.map_err(|e| e.raw_os_error()));
}

fn mc_recv(ctx: &mut McCtx, io: &mut Io<McCtx>, _: Tag, shot: Shot<PoolBuf>) {
    let first = ctx.shots.is_empty();
    ctx.shots.push((
        shot.result
            .map(|b| b.to_vec())
            .map_err(|e| e.raw_os_error()),
        shot.more,
    ));
    if first && shot.more {
        io.cancel(1, ctx.id.unwrap(), mc_cancelled)
            .expect("a cancel slot");
    }
}

#[test]
fn cancel_multishot_from_its_own_callback_loses_no_bytes() {
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(8, 16);
    let mut io: Io<McCtx> = Io::new(&options).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let sent: Vec<u8> = (0..100u8).collect();
    b.write_all(&sent).unwrap();
    let mut ctx = McCtx::default();
    ctx.id = Some(io.recv_multishot(0, a.as_raw_fd(), mc_recv).unwrap());
    let start = Instant::now();
    while (ctx.shots.last().map_or(true, |s| s.1) || ctx.cancel_answers.is_empty())
        && start.elapsed() < BOUND
    {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(
        ctx.cancel_answers,
        vec![Ok(())],
        "a cancel before the final callback: Ok"
    );
    let finals = ctx.shots.iter().filter(|s| !s.1).count();
    assert_eq!(finals, 1, "exactly one final callback: {:?}", ctx.shots);
    assert!(
        !ctx.shots.last().unwrap().1,
        "the last callback is the final one"
    );
    let last = &ctx.shots.last().unwrap().0;
    assert!(
        matches!(last, Err(Some(libc::ECANCELED))) || matches!(last, Ok(v) if !v.is_empty()),
        "final: ECANCELED or bytes: {last:?}"
    );
    let mut got: Vec<u8> = ctx
        .shots
        .iter()
        .filter_map(|s| s.0.as_ref().ok())
        .flatten()
        .copied()
        .collect();
    a.set_nonblocking(true).unwrap();
    let mut rest = [0; 256];
    let mut a2 = &a;
    if let Ok(n) = a2.read(&mut rest) {
        got.extend_from_slice(&rest[..n]);
    }
    assert_eq!(got, sent, "bytes received in order, none lost");
    // Now the id is stale.
    io.cancel(2, ctx.id.unwrap(), mc_cancelled).unwrap();
    let start = Instant::now();
    while ctx.cancel_answers.len() < 2 && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.cancel_answers[1], Err(Some(libc::ENOENT)));
}

// ---------------------------------------------------------------- dispatch-loop: pool_waits

#[derive(Default)]
struct PwCtx {
    held: Vec<PoolBuf>,
    got: Vec<Vec<u8>>,
}

fn pw_keep(ctx: &mut PwCtx, _: &mut Io<PwCtx>, _: Tag, shot: Shot<PoolBuf>) {
    let b = shot.result.expect("recv");
    ctx.got.push(b.to_vec());
    ctx.held.push(b);
}

fn pw_drop(ctx: &mut PwCtx, _: &mut Io<PwCtx>, _: Tag, shot: Shot<PoolBuf>) {
    let b = shot.result.expect("recv");
    ctx.got.push(b.to_vec());
}

#[test]
fn pool_waits_counts_a_receive_with_data_on_an_empty_pool_once() {
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(1, 64);
    let mut io: Io<PwCtx> = Io::new(&options).unwrap();
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    let (b, mut b_peer) = UnixStream::pair().unwrap();
    let mut ctx = PwCtx::default();
    a_peer.write_all(b"A").unwrap();
    io.recv_pooled(0, a.as_raw_fd(), pw_keep).unwrap();
    let start = Instant::now();
    while ctx.got.is_empty() && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.got, vec![b"A".to_vec()]);
    assert_eq!(io.pool_buffers_lent(), 1);
    // An idle receive on the empty pool: no wait counted.
    io.recv_pooled(1, b.as_raw_fd(), pw_drop).unwrap();
    for _ in 0..20 {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(io.stats().pool_waits, 0, "an idle receive never counts");
    b_peer.write_all(b"B").unwrap();
    for _ in 0..50 {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(
        ctx.got.len(),
        1,
        "the receive waits for a buffer, it does not fail"
    );
    assert_eq!(io.stats().pool_waits, 1, "one wait, counted once");
    ctx.held.clear();
    let start = Instant::now();
    while ctx.got.len() < 2 && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.got[1], b"B");
    assert_eq!(io.stats().pool_waits, 1);
}

// ---------------------------------------------------------------- more probes

fn open_conn(srv: &Srv) -> ConnId {
    srv.events
        .iter()
        .find_map(|e| if let Ev::Open(c) = e { Some(*c) } else { None })
        .expect("open")
}

#[test]
fn send_queue_max_counts_outside_callbacks_too() {
    let (mut io, mut srv, addr) = start(Mode::Sink, NetOptions::new(4));
    let mut c = client(addr);
    assert!(run_until(&mut io, &mut srv, |s| !s.events.is_empty()));
    let conn = open_conn(&srv);
    for i in 0..SEND_QUEUE_MAX {
        send(&mut srv, &mut io, conn, vec![b'a' + (i % 26) as u8])
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
    }
    let err = send(&mut srv, &mut io, conn, "over").expect_err("65th");
    assert_eq!(err.kind(), SendErrorKind::QueueFull);
    assert!(run_until(&mut io, &mut srv, |s| s
        .events
        .iter()
        .any(|e| matches!(e, Ev::Drained(_)))));
    let got = read_n(&mut c, SEND_QUEUE_MAX);
    let want: Vec<u8> = (0..SEND_QUEUE_MAX).map(|i| b'a' + (i % 26) as u8).collect();
    assert_eq!(got, want);
    let drains = srv
        .events
        .iter()
        .filter(|e| matches!(e, Ev::Drained(_)))
        .count();
    assert_eq!(
        drains,
        1,
        "{:?}",
        srv.events
            .iter()
            .filter(|e| !matches!(e, Ev::Data(..)))
            .collect::<Vec<_>>()
    );
    assert_eq!(srv.net.stats().slot_shortages, 0);
}

#[test]
fn on_drained_sending_more_defers_waiting_arrivals() {
    let (mut io, mut srv, addr) = start(Mode::QueueFull, NetOptions::new(4));
    let n = (0..100).map(|i| format!("{i:03},").len()).sum::<usize>();
    drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"go").unwrap();
            let _ = read_n(&mut c, 1);
            c.write_all(b"again").unwrap();
            let _ = read_n(&mut c, n - 1);
            read_n(&mut c, 5)
        }),
    );
    assert!(run_until(&mut io, &mut srv, |s| s
        .events
        .iter()
        .filter(|e| matches!(e, Ev::Drained(_)))
        .count()
        >= 3));
    let shape: Vec<String> = srv
        .events
        .iter()
        .map(|e| match e {
            Ev::Open(_) => "open".into(),
            Ev::Data(_, d) => format!("data({})", String::from_utf8_lossy(d)),
            Ev::Drained(_) => "drained".into(),
            Ev::Close(_) => "close".into(),
        })
        .filter(|s| s != "close") // the client closes after its last read
        .collect();
    assert_eq!(
        srv.net.stats().sends,
        3,
        "one vectored send per callback's sends"
    );
    assert_eq!(
        shape,
        [
            "open",
            "data(go)",
            "drained",
            "drained",
            "data(again)",
            "drained"
        ],
        "{shape:?}"
    );
}

#[test]
fn close_gracefully_sends_everything_queued_first() {
    let (mut io, mut srv, addr) = start(Mode::BigGraceful, NetOptions::new(4));
    let got = drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"req").unwrap();
            let mut all = Vec::new();
            let r = c.read_to_end(&mut all).map_err(|e| e.kind());
            (all.len(), all.ends_with(b"tailtail"), r)
        }),
    );
    assert_eq!(got.0, BIG + 32);
    assert!(got.1);
    assert!(got.2.is_ok(), "{:?}", got.2);
    assert!(run_until(&mut io, &mut srv, |s| s.closes() == 1));
}

#[test]
fn close_gracefully_from_outside_a_callback() {
    let (mut io, mut srv, addr) = start(Mode::Echo, NetOptions::new(4));
    let mut c = client(addr);
    assert!(run_until(&mut io, &mut srv, |s| !s.events.is_empty()));
    let conn = open_conn(&srv);
    send(&mut srv, &mut io, conn, "bye\n").unwrap();
    close_gracefully(&mut srv, &mut io, conn);
    let err = send(&mut srv, &mut io, conn, "x").expect_err("closing");
    assert_eq!(err.kind(), SendErrorKind::Closed);
    let client = thread::spawn(move || {
        let mut all = Vec::new();
        let r = c.read_to_end(&mut all).map_err(|e| e.kind());
        (all, r)
    });
    let (all, r) = drive(&mut io, &mut srv, client);
    assert_eq!(all, b"bye\n");
    assert!(r.is_ok());
    assert!(run_until(&mut io, &mut srv, |s| s.closes() == 1));
}

#[test]
fn close_gracefully_linger_is_bounded_by_idle_timeout() {
    let (mut io, mut srv, addr) = start(Mode::Graceful, idle_opts(200_000_000));
    let (tx, rx) = mpsc::channel::<()>();
    let client = thread::spawn(move || {
        let mut c = client(addr);
        c.write_all(b"bad\n").unwrap();
        let reply = read_n(&mut c, 4);
        let start = Instant::now();
        while rx.try_recv().is_err() && start.elapsed() < BOUND {
            if c.write(b"k").is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        reply
    });
    let closed = run_until(&mut io, &mut srv, |s| s.closes() == 1);
    tx.send(()).ok();
    let reply = drive(&mut io, &mut srv, client);
    assert_eq!(reply, b"400\n");
    assert!(closed, "what arrives while lingering is not progress");
    assert_eq!(srv.net.stats().idle_timeouts, 1);
}

#[test]
fn peer_that_keeps_sending_to_a_sink_is_not_idle() {
    let (mut io, mut srv, addr) = start(Mode::Sink, idle_opts(300_000_000));
    let client = thread::spawn(move || {
        let mut c = client(addr);
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(1200) {
            c.write_all(b"k").unwrap();
            thread::sleep(Duration::from_millis(3));
        }
        c // kept open until the checks
    });
    let _c = drive(&mut io, &mut srv, client);
    assert_eq!(srv.closes(), 0, "bytes received are progress");
    assert_eq!(srv.net.stats().idle_timeouts, 0);
}

fn nop(_: &mut Srv, _: &mut Io<Srv>, _: Tag, _: io::Result<()>) {}

#[test]
fn serve_with_every_slot_taken_is_an_error_not_a_panic() {
    let net_options = NetOptions::new(1);
    let mut options = Options::new(net_options.ops_max());
    options.pool = PoolOptions::new(4, 1024);
    let mut io: Io<Srv> = Io::new(&options).unwrap();
    for i in 0..net_options.ops_max() {
        io.timeout(u64::from(i) + 1000, 10_000_000_000, nop)
            .unwrap();
    }
    let mut srv = bare_srv(&net_options);
    let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
    assert!(serve(&mut srv, &mut io, listener).is_err());
}

#[derive(Default)]
struct PsCtx {
    buf: Option<PoolBuf>,
    sent: Option<usize>,
}

fn ps_recv(ctx: &mut PsCtx, _: &mut Io<PsCtx>, _: Tag, shot: Shot<PoolBuf>) {
    ctx.buf = Some(shot.result.unwrap());
}

fn ps_sent(ctx: &mut PsCtx, _: &mut Io<PsCtx>, _: Tag, (r, _bufs): Sent) {
    ctx.sent = Some(r.unwrap());
}

#[test]
fn send_vectored_of_pool_buffer_gives_it_back() {
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(2, 64);
    let mut io: Io<PsCtx> = Io::new(&options).unwrap();
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    a_peer.write_all(b"echo").unwrap();
    let mut ctx = PsCtx::default();
    io.recv_pooled(0, a.as_raw_fd(), ps_recv).unwrap();
    let start = Instant::now();
    while ctx.buf.is_none() && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    let buf = ctx.buf.take().unwrap();
    assert_eq!(io.pool_buffers_lent(), 1);
    io.send_vectored(
        1,
        a.as_raw_fd(),
        vec![OutBuf::from("<"), OutBuf::from(buf), OutBuf::from(">")],
        ps_sent,
    )
    .unwrap();
    while ctx.sent.is_none() && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.sent, Some(6));
    io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    assert_eq!(
        io.pool_buffers_lent(),
        0,
        "the list was dropped: its pool buffer is back"
    );
    let mut got = [0; 6];
    a_peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"<echo>");
}

#[test]
fn half_close_gets_replies_then_end_of_stream() {
    let (mut io, mut srv, addr) = start(Mode::Echo, NetOptions::new(4));
    let got = drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            c.write_all(b"ping").unwrap();
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut all = Vec::new();
            let r = c.read_to_end(&mut all).map_err(|e| e.kind());
            (all, r)
        }),
    );
    assert_eq!(got.0, b"ping");
    assert!(got.1.is_ok());
    assert!(run_until(&mut io, &mut srv, |s| s.closes() == 1));
    assert_eq!(srv.net.connections(), 0);
}

#[test]
fn close_gracefully_from_on_open() {
    let (mut io, mut srv, addr) = start(Mode::GracefulOnOpen, NetOptions::new(4));
    let got = drive(
        &mut io,
        &mut srv,
        thread::spawn(move || {
            let mut c = client(addr);
            let _ = c.write_all(&vec![b'q'; 50_000]);
            let mut all = Vec::new();
            let r = c.read_to_end(&mut all).map_err(|e| e.kind());
            (all, r)
        }),
    );
    assert_eq!(got.0, b"busy\n");
    assert!(got.1.is_ok(), "{:?}", got.1);
    assert!(run_until(&mut io, &mut srv, |s| s.closes() == 1));
    assert_eq!(srv.datas(), 0);
}

#[test]
fn pool_waits_counts_each_waiting_receive() {
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(1, 64);
    let mut io: Io<PwCtx> = Io::new(&options).unwrap();
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    let (b, mut b_peer) = UnixStream::pair().unwrap();
    let (c, mut c_peer) = UnixStream::pair().unwrap();
    let mut ctx = PwCtx::default();
    a_peer.write_all(b"A").unwrap();
    io.recv_pooled(0, a.as_raw_fd(), pw_keep).unwrap();
    let start = Instant::now();
    while ctx.got.is_empty() && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    io.recv_pooled(1, b.as_raw_fd(), pw_keep).unwrap();
    io.recv_pooled(2, c.as_raw_fd(), pw_keep).unwrap();
    for _ in 0..10 {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    b_peer.write_all(b"B").unwrap();
    c_peer.write_all(b"C").unwrap();
    for _ in 0..50 {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.got.len(), 1);
    assert_eq!(io.stats().pool_waits, 2, "two receives waited");
    ctx.held.clear();
    while ctx.got.len() < 2 && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    ctx.held.clear();
    while ctx.got.len() < 3 && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.got.len(), 3);
    assert_eq!(io.stats().pool_waits, 2, "each wait once");
}

#[test]
fn close_gracefully_drops_an_arrival_already_waiting() {
    let (mut io, mut srv, addr) = start(Mode::BigFirst, NetOptions::new(4));
    let (tx, rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let client = thread::spawn(move || {
        let mut c = client(addr);
        c.write_all(b"first").unwrap();
        let _ = read_n(&mut c, 1);
        c.write_all(b"second").unwrap();
        tx.send(()).unwrap();
        let _ = go_rx.recv_timeout(BOUND); // read the rest only after close_gracefully
        let mut all = Vec::new();
        let r = c.read_to_end(&mut all).map_err(|e| e.kind());
        (all.len(), r)
    });
    let start = Instant::now();
    while rx.try_recv().is_err() {
        assert!(start.elapsed() < BOUND);
        io.run_for_ns(&mut srv, 1_000_000).unwrap();
    }
    for _ in 0..20 {
        io.run_for_ns(&mut srv, 1_000_000).unwrap();
    }
    let conn = open_conn(&srv);
    let marker = srv.events.len();
    let received_before = srv.net.stats().bytes_received;
    let datas_before = srv.datas();
    close_gracefully(&mut srv, &mut io, conn);
    go_tx.send(()).unwrap();
    let (len, r) = drive(&mut io, &mut srv, client);
    assert_eq!(
        datas_before, 1,
        "the big reply was stuck: second still waiting"
    );
    assert!(run_until(&mut io, &mut srv, |s| s.closes() == 1));
    let late: Vec<String> = srv.events[marker..]
        .iter()
        .map(|e| match e {
            Ev::Data(_, d) => format!("data({})", String::from_utf8_lossy(d)),
            other => format!("{:?}", std::mem::discriminant(other)),
        })
        .collect();
    assert_eq!(
        srv.datas(),
        1,
        "no arrival handed over after close_gracefully (bytes received before it: \
         {received_before}); events after it: {late:?}"
    );
    assert_eq!(len + 1, BIG, "the reply in full, then the end of stream");
    assert!(r.is_ok(), "{r:?}");
}

fn masked_options(buffers: u32, size: u32) -> Options {
    let mut options = Options::new(8);
    options.pool = PoolOptions::new(buffers, size);
    options.uring.pbuf_ring = false;
    options.uring.multishot = false;
    options
}

#[test]
fn cancel_multishot_masked_uring_loses_no_bytes() {
    let mut io: Io<McCtx> = Io::new(&masked_options(8, 16)).unwrap();
    let (a, mut b) = UnixStream::pair().unwrap();
    let sent: Vec<u8> = (0..100u8).collect();
    b.write_all(&sent).unwrap();
    let mut ctx = McCtx::default();
    ctx.id = Some(io.recv_multishot(0, a.as_raw_fd(), mc_recv).unwrap());
    let start = Instant::now();
    while (ctx.shots.last().map_or(true, |s| s.1) || ctx.cancel_answers.is_empty())
        && start.elapsed() < BOUND
    {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.cancel_answers, vec![Ok(())]);
    assert_eq!(
        ctx.shots.iter().filter(|s| !s.1).count(),
        1,
        "{:?}",
        ctx.shots
    );
    let mut got: Vec<u8> = ctx
        .shots
        .iter()
        .filter_map(|s| s.0.as_ref().ok())
        .flatten()
        .copied()
        .collect();
    a.set_nonblocking(true).unwrap();
    let mut rest = [0; 256];
    if let Ok(n) = (&a).read(&mut rest) {
        got.extend_from_slice(&rest[..n]);
    }
    assert_eq!(got, sent);
}

#[test]
fn pool_waits_masked_uring() {
    let mut io: Io<PwCtx> = Io::new(&masked_options(1, 64)).unwrap();
    let (a, mut a_peer) = UnixStream::pair().unwrap();
    let (b, mut b_peer) = UnixStream::pair().unwrap();
    let mut ctx = PwCtx::default();
    a_peer.write_all(b"A").unwrap();
    io.recv_pooled(0, a.as_raw_fd(), pw_keep).unwrap();
    let start = Instant::now();
    while ctx.got.is_empty() && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    io.recv_pooled(1, b.as_raw_fd(), pw_drop).unwrap();
    for _ in 0..20 {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(io.stats().pool_waits, 0, "an idle receive never counts");
    b_peer.write_all(b"B").unwrap();
    for _ in 0..50 {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.got.len(), 1);
    assert_eq!(io.stats().pool_waits, 1);
    ctx.held.clear();
    while ctx.got.len() < 2 && start.elapsed() < BOUND {
        io.run_for_ns(&mut ctx, 1_000_000).unwrap();
    }
    assert_eq!(ctx.got[1], b"B");
    assert_eq!(io.stats().pool_waits, 1);
}

#[test]
fn stop_before_run_for_zero_ns() {
    let mut io: Io<StopCtx> = Io::new(&Options::new(4)).unwrap();
    io.stop();
    let mut ctx = StopCtx::default();
    io.run_for_ns(&mut ctx, 0).unwrap();
    io.timeout(0, 200_000_000, fire_and_stop).unwrap();
    io.run_for_ns(&mut ctx, u64::MAX).unwrap();
    assert!(
        ctx.fired,
        "a 0 ns run is a turn, which answers the earlier stop"
    );
}
