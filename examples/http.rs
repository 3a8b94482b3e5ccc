//! An HTTP/1.1 server on `dispatch-net`: one loop on one thread, keep-alive, pipelining,
//! request bodies (`Content-Length` and chunked), and the limits a server facing the open
//! internet needs (head and body sizes, an idle timeout, a request deadline).
//!
//! ```text
//! cargo run --release -p examples --example http -- --listen 127.0.0.1:8080
//! curl http://127.0.0.1:8080/plaintext
//! ```
//!
//! Routes: `GET /plaintext` (`Hello, World!`), `GET /json` (`{"message":"Hello, World!"}`),
//! `POST /count` (how many body bytes came, after decoding a chunked body), anything else
//! `404`. `DISPATCH_BACKEND` picks the backend (`io_uring`, `epoll`, `kqueue-fake`;
//! automatic when unset); the one in use is said on stderr. Once it listens, the server
//! prints `listening on ADDR` on stdout (port 0 picks a free port); SIGINT or SIGTERM closes
//! every connection and exits 0.
//!
//! # How it works
//! `dispatch-net` accepts, reads into pool buffers and sends; this program is its
//! [`Handler`]. `on_data` gets whatever bytes arrived: `httparse` parses them in place
//! (`request.rs` walks heads, bodies and chunks), and each complete request is answered at
//! once with [`dispatch_net::send`]. Every request answered in one `on_data` goes out in one
//! vectored send, so ten pipelined requests in one arrival cost one syscall for their ten
//! replies. Fixed replies are `&'static` bytes made at start-up: a request to them allocates
//! nothing. Bytes that end in the middle of a request are copied into the connection's input
//! buffer (at most [`INPUT_MAX`] bytes, allocated once per table entry) until the rest comes.
//! A request body is counted and dropped as it arrives, never buffered.
//!
//! `on_data` is not called again for a connection until its replies are out, which is how a
//! client that sends without reading is slowed down. The send queue holds
//! [`SEND_QUEUE_MAX`] replies: when an arrival has more requests than that, parsing stops, the
//! rest is kept, and `on_drained` (everything sent is out) goes on from there.
//!
//! # Limits
//! A head over 8 KiB or with more than 64 headers is answered `431`, a body over 1 MiB `413`,
//! a request that cannot be parsed (or lacks a `Host`, or whose framing is ambiguous: both
//! `Content-Length` and `Transfer-Encoding`) `400`, and each of these closes the connection.
//! An idle connection is closed after `--idle-timeout-ms` (`dispatch-net`'s idle timeout).
//! But any byte received is progress, so a slowloris client dripping one header byte every
//! few seconds is never idle: a request must also be complete within `--request-timeout-ms`
//! of its first byte, or it is answered `408` and closed. One periodic timer (a sweep) checks
//! every connection's deadline; `NetOptions::ops_max` keeps one operation slot for the
//! program (the wake-up wait that stops the loop), so the loop gets one more for the sweep.
//!
//! A connection that ends (a refusal, or `Connection: close`) is closed with
//! `dispatch_net::close_gracefully`, not as soon as the reply is out: closing a socket with
//! unread bytes in its receive buffer sends a reset, and a reset can destroy the reply before
//! the client reads it. The graceful close sends the replies, shuts down the write side, and
//! drops whatever still arrives until the client closes (or the idle timeout).
//!
//! Not done: a `Date` header (a per-second string in a reply made of static bytes would need
//! a buffer per reply), `HEAD`, and more than one thread (see `echo-server` for one loop per
//! core over `SO_REUSEPORT`).
#![forbid(unsafe_code)]

#[path = "http/request.rs"]
mod request;

use std::error::Error;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use dispatch_loop::{Io, Options, OutBuf, PoolBuf, PoolOptions, Tag, Waker};
use dispatch_net::{
    ConnId, Handler, ListenOptions, Net, NetOptions, SendErrorKind, SEND_QUEUE_MAX,
};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::request::{Event, Persist, Phase, Refusal, Request, Route, HEAD_MAX};

/// An HTTP/1.1 server on dispatch-net: GET /plaintext, GET /json, POST /count; keep-alive,
/// pipelining, chunked bodies. Stops on SIGINT or SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "http")]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Connections open at once; more are closed as soon as they are accepted.
    #[arg(long, default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    connections: u32,
    /// Milliseconds without progress either way after which a connection is closed; 0 for
    /// never.
    #[arg(long, default_value_t = 10_000)]
    idle_timeout_ms: u64,
    /// Milliseconds from a request's first byte by which it must have come whole (head and
    /// body), or it is answered 408 and the connection closed.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    request_timeout_ms: u64,
}

/// Bytes per receive buffer of the loop's pool: the most one arrival holds.
const BUFFER_SIZE: u32 = 16 * 1024;
/// The most a connection's input buffer holds: a partial head (under [`HEAD_MAX`]) and one
/// arrival after it.
const INPUT_MAX: usize = HEAD_MAX + BUFFER_SIZE as usize;
/// Sends one request may take: a `100 Continue`, then the reply.
const SENDS_PER_REQUEST: usize = 2;
/// How long the stop waits for connections to close.
const DRAIN: Duration = Duration::from_secs(1);
/// Tags of the program's own operations (connections' operations are tagged by
/// `dispatch-net`, and only its callbacks see them).
const STOP_TAG: Tag = 1;
const SWEEP_TAG: Tag = 2;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The fixed replies, whole (status line, headers, body), made once at start-up and kept
/// for the life of the process, so that they go out as `&'static` bytes: no copy, no count.
/// Indexed by [`Persist`] where the connection may stay open.
struct Replies {
    plaintext: [&'static [u8]; 3],
    json: [&'static [u8]; 3],
    not_found: [&'static [u8]; 3],
    bad_request: &'static [u8],
    timeout: &'static [u8],
    body_too_large: &'static [u8],
    head_too_large: &'static [u8],
}

const PERSISTS: [Persist; 3] = [Persist::KeepAlive, Persist::KeepAlive10, Persist::Close];

impl Replies {
    fn new() -> Replies {
        let each = |status, content_type, body| {
            PERSISTS.map(|persist| leak(reply(status, content_type, body, persist)))
        };
        let refusal = |status, body| leak(reply(status, "text/plain", body, Persist::Close));
        Replies {
            plaintext: each("200 OK", "text/plain", "Hello, World!"),
            json: each(
                "200 OK",
                "application/json",
                r#"{"message":"Hello, World!"}"#,
            ),
            not_found: each("404 Not Found", "text/plain", "Not Found\n"),
            bad_request: refusal("400 Bad Request", "Bad Request\n"),
            timeout: refusal("408 Request Timeout", "Request Timeout\n"),
            body_too_large: refusal("413 Content Too Large", "Content Too Large\n"),
            head_too_large: refusal(
                "431 Request Header Fields Too Large",
                "Request Header Fields Too Large\n",
            ),
        }
    }

    fn refusal(&self, refusal: Refusal) -> &'static [u8] {
        match refusal {
            Refusal::BadRequest => self.bad_request,
            Refusal::Timeout => self.timeout,
            Refusal::BodyTooLarge => self.body_too_large,
            Refusal::HeadTooLarge => self.head_too_large,
        }
    }
}

/// A whole reply: status line, headers, body.
fn reply(status: &str, content_type: &str, body: &str, persist: Persist) -> String {
    let connection = match persist {
        Persist::KeepAlive => "",
        Persist::KeepAlive10 => "Connection: keep-alive\r\n",
        Persist::Close => "Connection: close\r\n",
    };
    format!(
        "HTTP/1.1 {status}\r\nServer: dispatch\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\n{connection}\r\n{body}",
        body.len()
    )
}

/// Start-up only: the fixed replies live as long as the process.
fn leak(reply: String) -> &'static [u8] {
    Box::leak(reply.into_bytes().into_boxed_slice())
}

/// One connection's HTTP state, one per table entry: the entry's next connection reuses it,
/// input buffer included.
struct Conn {
    /// The connection using the entry; `None` while it is free.
    id: Option<ConnId>,
    phase: Phase,
    /// Bytes that end in the middle of a request, or requests waiting for room in the send
    /// queue (`stalled`); at most [`INPUT_MAX`].
    input: Vec<u8>,
    /// When the first byte of the request being received was handled; `None` between
    /// requests.
    started: Option<Instant>,
    /// Sends queued since the send queue was last empty (the count `dispatch-net` holds to
    /// [`SEND_QUEUE_MAX`]).
    queued: usize,
    /// Parsing stopped for want of room in the send queue: `on_drained` goes on.
    stalled: bool,
    /// The last reply is queued and the connection closes gracefully: what arrives from
    /// now on is dropped.
    closing: bool,
}

impl Conn {
    fn free() -> Conn {
        Conn {
            id: None,
            phase: Phase::Head,
            input: Vec::new(),
            started: None,
            queued: 0,
            stalled: false,
            closing: false,
        }
    }

    /// Makes the entry ready for `id` (or free, for `None`), keeping the input's capacity.
    fn reset(&mut self, id: Option<ConnId>) {
        let mut input = std::mem::take(&mut self.input);
        input.clear();
        *self = Conn {
            id,
            input,
            ..Conn::free()
        };
    }
}

/// Counters, said on stderr at exit.
#[derive(Debug, Default)]
struct Counts {
    requests: u64,
    refused: u64,
    timeouts: u64,
    /// Parses stopped for want of room in the send queue (and resumed by `on_drained`).
    stalls: u64,
}

/// The program's state: the loop's context.
struct Http {
    net: Net,
    conns: Vec<Conn>,
    replies: Replies,
    request_timeout: Duration,
    sweep_ns: u64,
    counts: Counts,
}

impl Http {
    fn new(net: &NetOptions, request_timeout: Duration) -> Http {
        // The sweep runs a few times per request timeout.
        let sweep = (request_timeout / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
        Http {
            net: Net::new(net),
            conns: (0..net.connections_max).map(|_| Conn::free()).collect(),
            replies: Replies::new(),
            request_timeout,
            sweep_ns: sweep.as_nanos() as u64,
            counts: Counts::default(),
        }
    }

    fn conn(&mut self, id: ConnId) -> &mut Conn {
        let conn = &mut self.conns[id.index() as usize];
        assert_eq!(conn.id, Some(id), "a live connection's entry");
        conn
    }

    /// Answers the requests in `bytes` in order, as far as the send queue has room. Returns
    /// how many bytes it used; the rest (part of a request, or requests waiting for room)
    /// is the caller's to keep.
    fn process(&mut self, io: &mut Io<Http>, id: ConnId, bytes: &[u8], now: Instant) -> usize {
        let mut used = 0;
        loop {
            let conn = self.conn(id);
            if conn.closing {
                return bytes.len();
            }
            let rest = &bytes[used..];
            if conn.phase == Phase::Head && !rest.is_empty() {
                if conn.queued + SENDS_PER_REQUEST > SEND_QUEUE_MAX {
                    conn.stalled = true;
                    self.counts.stalls += 1;
                    return used;
                }
                conn.started.get_or_insert(now);
            }
            match request::step(&mut conn.phase, rest) {
                Event::Used(n) => used += n,
                Event::More => return used,
                Event::Continue(n) => {
                    used += n;
                    self.reply(io, id, CONTINUE);
                }
                Event::Complete(n, request) => {
                    used += n;
                    self.answer(io, id, request);
                }
                Event::Refuse(refusal) => {
                    self.refuse(io, id, refusal);
                    return bytes.len();
                }
            }
        }
    }

    /// Answers a complete request (bytes after one that asked for a close are dropped, and
    /// the connection closes gracefully once the reply is out).
    fn answer(&mut self, io: &mut Io<Http>, id: ConnId, request: Request) {
        self.counts.requests += 1;
        self.conn(id).started = None;
        let persist = request.persist as usize;
        match request.route {
            Route::Plaintext => self.reply(io, id, self.replies.plaintext[persist]),
            Route::Json => self.reply(io, id, self.replies.json[persist]),
            Route::NotFound => self.reply(io, id, self.replies.not_found[persist]),
            Route::Count => {
                let body = format!("received {} bytes\n", request.body_len);
                let reply = reply("200 OK", "text/plain", &body, request.persist);
                self.reply(io, id, reply);
            }
        }
        if request.persist == Persist::Close {
            self.close(io, id);
        }
    }

    /// Closes `id` once its replies are out, without a reset that could destroy them.
    fn close(&mut self, io: &mut Io<Http>, id: ConnId) {
        self.conn(id).closing = true;
        dispatch_net::close_gracefully(self, io, id);
    }

    /// Answers a refused request, then closes the connection gracefully.
    fn refuse(&mut self, io: &mut Io<Http>, id: ConnId, refusal: Refusal) {
        self.counts.refused += 1;
        let conn = self.conn(id);
        conn.started = None;
        conn.input.clear();
        self.reply(io, id, self.replies.refusal(refusal));
        self.close(io, id);
    }

    fn reply(&mut self, io: &mut Io<Http>, id: ConnId, reply: impl Into<OutBuf>) {
        self.conn(id).queued += 1;
        if let Err(error) = dispatch_net::send(self, io, id, reply) {
            // Room was counted (`SENDS_PER_REQUEST`); a connection being closed (the stop)
            // takes no reply.
            assert_eq!(error.kind(), SendErrorKind::Closed, "{error}");
        }
    }

    /// Keeps the bytes of `id` that `process` left, in the entry's input buffer.
    fn keep(&mut self, id: ConnId, rest: &[u8]) {
        let conn = self.conn(id);
        if rest.is_empty() || conn.closing {
            return;
        }
        assert!(conn.input.is_empty());
        assert!(rest.len() <= BUFFER_SIZE as usize, "one arrival at most");
        // Once per table entry: the next connections on the entry reuse it.
        conn.input.reserve_exact(INPUT_MAX);
        conn.input.extend_from_slice(rest);
    }

    /// Parses the entry's input buffer (with `arrival` appended), keeping what is left.
    fn process_input(&mut self, io: &mut Io<Http>, id: ConnId, arrival: &[u8], now: Instant) {
        let mut input = std::mem::take(&mut self.conn(id).input);
        assert!(
            input.len() + arrival.len() <= INPUT_MAX,
            "the input buffer is bounded"
        );
        input.extend_from_slice(arrival);
        let used = self.process(io, id, &input, now);
        input.drain(..used);
        // The connection is still open: its callbacks run (and a close ends) after this one.
        self.conn(id).input = input;
    }
}

impl Handler for Http {
    fn net(&mut self) -> &mut Net {
        &mut self.net
    }

    fn on_open(&mut self, _: &mut Io<Self>, id: ConnId) {
        let conn = &mut self.conns[id.index() as usize];
        assert_eq!(conn.id, None, "an entry serves one connection at a time");
        conn.reset(Some(id));
    }

    fn on_data(&mut self, io: &mut Io<Self>, id: ConnId, data: PoolBuf) {
        let now = Instant::now();
        let conn = self.conn(id);
        // on_data comes once every reply is out: on_drained resumed a stalled parse first.
        assert!(!conn.stalled, "a stalled connection gets no data");
        conn.queued = 0;
        if conn.closing {
            return; // Dropped: the buffer goes back to the pool.
        }
        if conn.input.is_empty() {
            // Parsed in place, from the pool buffer.
            let used = self.process(io, id, &data, now);
            self.keep(id, &data[used..]);
        } else {
            assert!(
                conn.input.len() < HEAD_MAX,
                "only part of a request waits here"
            );
            self.process_input(io, id, &data, now);
        }
    }

    fn on_drained(&mut self, io: &mut Io<Self>, id: ConnId) {
        let now = Instant::now();
        let conn = self.conn(id);
        conn.queued = 0;
        if std::mem::take(&mut conn.stalled) {
            self.process_input(io, id, &[], now);
        }
    }

    fn on_close(&mut self, _: &mut Io<Self>, id: ConnId) {
        self.conn(id).reset(None);
    }
}

/// The periodic sweep: answers `408` to requests past their deadline.
fn on_sweep(http: &mut Http, io: &mut Io<Http>, _: Tag, _: io::Result<()>) {
    if http.net.is_stopping() {
        return;
    }
    let now = Instant::now();
    for idx in 0..http.conns.len() {
        sweep(http, io, idx, now);
    }
    // The slot this timer held is free again while its callback runs.
    io.timeout(SWEEP_TAG, http.sweep_ns, on_sweep)
        .expect("the sweep's slot (Options::ops_max counts it)");
}

fn sweep(http: &mut Http, io: &mut Io<Http>, idx: usize, now: Instant) {
    let conn = &http.conns[idx];
    let Some(id) = conn.id else {
        return;
    };
    let late = conn
        .started
        .is_some_and(|started| now.saturating_duration_since(started) >= http.request_timeout);
    if late && !conn.closing {
        http.counts.timeouts += 1;
        http.refuse(io, id, Refusal::Timeout);
    }
}

fn on_stop(http: &mut Http, io: &mut Io<Http>, _: Tag, _: io::Result<u64>) {
    dispatch_net::stop(http, io);
    io.stop();
}

/// The loop's options: `NetOptions::ops_max` keeps one operation slot for the program (the
/// wake-up wait that stops the loop); the sweep timer takes one more.
fn loop_options(net: &NetOptions) -> Options {
    let mut options = Options::new(net.ops_max() + 1);
    options.pool = PoolOptions::new(net.connections_max.clamp(64, 1024), BUFFER_SIZE);
    options
}

/// Wakes the loop on SIGINT or SIGTERM, from a thread of its own (the loop's stays the only
/// one serving).
fn watch_signals(waker: Waker) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            if let Err(error) = waker.wake() {
                eprintln!("http: cannot wake the loop to stop: {error}");
            }
        }
    });
    Ok(())
}

fn run(cli: &Cli) -> Result<(), Box<dyn Error>> {
    let mut net_options = NetOptions::new(cli.connections);
    net_options.idle_timeout_ns = cli.idle_timeout_ms.saturating_mul(1_000_000);
    let mut io: Io<Http> = Io::new(&loop_options(&net_options))?;
    let stats = io.stats();
    match stats.fallback {
        Some(fallback) => eprintln!("http: backend {} ({fallback})", stats.backend),
        None => eprintln!("http: backend {}", stats.backend),
    }
    let listener = dispatch_net::listen(cli.listen, &ListenOptions::new())?;
    let local = listener.local_addr()?;
    let request_timeout = Duration::from_millis(cli.request_timeout_ms);
    let mut http = Http::new(&net_options, request_timeout);
    io.wait_wakeup(STOP_TAG, on_stop)?;
    io.timeout(SWEEP_TAG, http.sweep_ns, on_sweep)?;
    dispatch_net::serve(&mut http, &mut io, listener)?;
    watch_signals(io.waker())?;
    println!("listening on {local}");
    // Flushed at once: a supervisor or a test reads it to know the server is up.
    io::stdout().flush()?;
    // Returns when on_stop calls Io::stop.
    io.run_for_ns(&mut http, u64::MAX)?;
    let deadline = Instant::now() + DRAIN;
    while http.net.connections() > 0 && Instant::now() < deadline {
        io.run_for_ns(&mut http, 10_000_000)?;
    }
    // The closes scheduled last finish here.
    io.run_for_ns(&mut http, 0)?;
    let counts = &http.counts;
    eprintln!(
        "http: stopped: {} connections, {} requests, {} refused ({} timed out), {} stalls",
        http.net.stats().accepted,
        counts.requests,
        counts.refused,
        counts.timeouts,
        counts.stalls
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("http: {error}");
            ExitCode::FAILURE
        }
    }
}
