//! The minimal TCP echo server on `dispatch-loop` alone.
//!
//! ```text
//! cargo run --release -p examples --example echo_minimal -- 127.0.0.1:7878
//! nc 127.0.0.1 7878
//! ```
//!
//! `echo_minimal [ADDR [CONNECTIONS]]` listens on ADDR (default 127.0.0.1:7878; port 0 picks a
//! free port) and serves up to CONNECTIONS clients at once (default 1024); more wait in the
//! listen backlog until one leaves. `DISPATCH_BACKEND` forces a backend (`auto`, `io_uring`,
//! `epoll`, `kqueue`, `kqueue-fake`; case and surrounding spaces do not matter). It prints
//! the backend it runs on, and why, if io_uring was unavailable.
//!
//! One loop, one listener, a fixed table of connections. Every step is a callback that
//! schedules the next: accept → recv → send → recv … → close. The loop batches everything
//! scheduled during a turn into one `io_uring_enter`, and the buffer of each connection
//! travels with its operations, so the steady state allocates nothing.
//!
//! # Sizing the loop
//! `Options::ops_max` is the number of operations that can be in flight at once, and a
//! schedule call past it fails (`SlotsExhausted`) rather than wait. So count, for every part
//! of the program, the most operations it can have in flight at the same time, and add them:
//! - the listener: 1, the accept or, after `EMFILE`, the back-off timer that replaces it;
//! - each entry of the connection table: 1, its recv, its send or its close. An entry holds
//!   one operation at a time because each callback schedules the next step only after the
//!   previous one completed, and an entry is given to a new connection only once the close of
//!   the old one has completed, not when it was scheduled.
//!
//! Hence `ops_max = CONNECTIONS + 1`. A close still in flight counts against its entry; freeing
//! the entry when the close is scheduled (as this example once did) lets a new connection's
//! recv and the old close be in flight together, one operation more than counted. The accept
//! is scheduled only while an entry is free, so a full table never accepts a client it
//! cannot serve. Every schedule call still handles `SlotsExhausted` (by closing the connection
//! concerned, or retrying the accept when an entry frees), never by panicking.

use std::convert::Infallible;
use std::env::VarError;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use dispatch_loop::{BackendKind, BufResult, Io, Options, Tag, UnitCallback, BACKEND_ENV};

const ADDR_DEFAULT: &str = "127.0.0.1:7878";
const CONNECTIONS_DEFAULT: u32 = 1024;
const CONNECTIONS_LIMIT: u32 = 1_000_000;
const BUFFER_SIZE: usize = 4096;
/// The tag of the accept (and of its back-off timer); connections use their table index.
const ACCEPT: Tag = u64::MAX;
const BACKOFF_NS: u64 = 100_000_000;

const SHORT_USAGE: &str = "usage: echo_minimal [ADDR [CONNECTIONS]]; --help says more";
const USAGE: &str = "\
usage: echo_minimal [ADDR [CONNECTIONS]]
  ADDR         where to listen, as HOST:PORT (default 127.0.0.1:7878; port 0 picks one)
  CONNECTIONS  clients served at once, 1 to 1000000 (default 1024); more wait in the
               listen backlog
environment:
  DISPATCH_BACKEND  auto (default), io_uring, epoll, kqueue or kqueue-fake";

/// The most operations in flight at once (see the module docs): the accept or its back-off
/// timer, and one operation per connection entry (its recv, send or close).
fn ops_max(connections: u32) -> u32 {
    1 + connections
}

/// One entry of the connection table.
enum Entry {
    Free,
    /// A connection, with its one recv or send in flight.
    Open(OwnedFd),
    /// Its close is in flight: the entry is reused once that completes.
    Closing,
}

struct Server {
    listener: TcpListener,
    entries: Vec<Entry>,
    /// The accept, or its back-off timer, is in flight.
    accepting: bool,
    /// The "table full" notice was printed.
    said_full: bool,
}

impl Server {
    fn fd(&self, tag: Tag) -> RawFd {
        match &self.entries[tag as usize] {
            Entry::Open(socket) => socket.as_raw_fd(),
            _ => unreachable!("connection {tag} has an operation in flight but is not open"),
        }
    }
}

/// Schedules the accept, unless one is in flight or no entry is free to take the connection.
fn accept(server: &mut Server, io: &mut Io<Server>) {
    if server.accepting {
        return;
    }
    if !server
        .entries
        .iter()
        .any(|entry| matches!(entry, Entry::Free))
    {
        if !server.said_full {
            eprintln!(
                "echo_minimal: all {} connections in use: new clients wait until one leaves \
                 (said once)",
                server.entries.len()
            );
            server.said_full = true;
        }
        return;
    }
    match io.accept(ACCEPT, server.listener.as_raw_fd(), on_accept) {
        Ok(_) => server.accepting = true,
        // Not with ops_max counted right; retried when a connection's close completes.
        Err(error) => eprintln!("echo_minimal: cannot accept: {error}"),
    }
}

fn on_accept(server: &mut Server, io: &mut Io<Server>, _: Tag, result: io::Result<OwnedFd>) {
    server.accepting = false;
    match result {
        Ok(socket) => open(server, io, socket),
        // Out of descriptors: back off for 100 ms rather than spin on the error.
        Err(error) if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            let resume: UnitCallback<Server> = |server, io, _, _| {
                server.accepting = false;
                accept(server, io);
            };
            match io.timeout(ACCEPT, BACKOFF_NS, resume) {
                Ok(_) => server.accepting = true,
                Err(error) => eprintln!("echo_minimal: cannot back off: {error}"),
            }
            return;
        }
        Err(error) => eprintln!("echo_minimal: accept: {}", describe(&error)),
    }
    accept(server, io);
}

/// Gives `socket` a free entry (there is one: accepts are scheduled only then, and only
/// accepts fill entries) and starts receiving.
fn open(server: &mut Server, io: &mut Io<Server>, socket: OwnedFd) {
    let Some(idx) = server
        .entries
        .iter()
        .position(|entry| matches!(entry, Entry::Free))
    else {
        unreachable!("an accept completed with no free entry");
    };
    let fd = socket.as_raw_fd();
    server.entries[idx] = Entry::Open(socket);
    recv(server, io, idx as Tag, fd, Vec::with_capacity(BUFFER_SIZE));
}

fn recv(server: &mut Server, io: &mut Io<Server>, tag: Tag, fd: RawFd, buf: Vec<u8>) {
    if let Err(error) = io.recv(tag, fd, buf, on_recv) {
        eprintln!("echo_minimal: cannot receive on connection {tag}: {error}");
        close(server, io, tag);
    }
}

fn send(server: &mut Server, io: &mut Io<Server>, tag: Tag, buf: Vec<u8>) {
    if let Err(error) = io.send(tag, server.fd(tag), buf, on_send) {
        eprintln!("echo_minimal: cannot send on connection {tag}: {error}");
        close(server, io, tag);
    }
}

fn on_recv(server: &mut Server, io: &mut Io<Server>, tag: Tag, (result, buf): BufResult) {
    match result {
        Ok(n) if n > 0 => send(server, io, tag, buf),
        // End of stream, or an error such as a reset peer.
        _ => close(server, io, tag),
    }
}

fn on_send(server: &mut Server, io: &mut Io<Server>, tag: Tag, (result, mut buf): BufResult) {
    match result {
        Ok(n) if n == buf.len() => {
            buf.clear();
            recv(server, io, tag, server.fd(tag), buf);
        }
        // A short send: send the rest.
        Ok(n) => {
            buf.drain(..n);
            send(server, io, tag, buf);
        }
        Err(_) => close(server, io, tag),
    }
}

/// Closes connection `tag`; its entry stays taken until the close completes.
fn close(server: &mut Server, io: &mut Io<Server>, tag: Tag) {
    let entry = std::mem::replace(&mut server.entries[tag as usize], Entry::Closing);
    let Entry::Open(socket) = entry else {
        unreachable!("connection {tag} closed twice");
    };
    let on_close: UnitCallback<Server> = |server, io, tag, result| {
        if let Err(error) = result {
            eprintln!("echo_minimal: close: {}", describe(&error));
        }
        release(server, io, tag);
    };
    if let Err(error) = io.close(tag, socket, on_close) {
        // Out of slots: close it here, synchronously, by dropping the descriptor.
        eprintln!("echo_minimal: cannot schedule a close: {error}");
        drop(error.value);
        release(server, io, tag);
    }
}

/// Frees entry `tag`, and resumes accepting if the table was full.
fn release(server: &mut Server, io: &mut Io<Server>, tag: Tag) {
    server.entries[tag as usize] = Entry::Free;
    accept(server, io);
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "-h" || arg == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match serve(&args) {
        Ok(never) => match never {},
        Err(message) => {
            eprintln!("echo_minimal: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the loop, then listens, then serves forever; an error says what failed, in words.
/// Everything that can be checked before the loop exists is checked first.
fn serve(args: &[String]) -> Result<Infallible, String> {
    let (addr, connections) = parse_args(args)?;
    let addrs = resolve(addr)?;
    let mut options = Options::new(ops_max(connections));
    options.backend = backend_from_env()?;
    let mut io: Io<Server> =
        Io::new(&options).map_err(|error| format!("cannot start the loop: {error}"))?;
    let stats = io.stats();
    let why = match stats.fallback {
        Some(fallback) => format!(" ({fallback})"),
        None => String::new(),
    };
    println!(
        "echo_minimal: backend {}{why}; up to {connections} connections, {} operation slots",
        stats.backend, options.ops_max
    );
    let listener = TcpListener::bind(&*addrs)
        .map_err(|error| format!("cannot listen on {addr}: {}", describe(&error)))?;
    let local = listener.local_addr().map_err(|error| describe(&error))?;
    println!("echo_minimal: listening on {local}");
    let mut server = Server {
        listener,
        entries: (0..connections).map(|_| Entry::Free).collect(),
        accepting: false,
        said_full: false,
    };
    accept(&mut server, &mut io);
    loop {
        io.run_for_ns(&mut server, 1_000_000_000)
            .map_err(|error| format!("the loop failed: {}", describe(&error)))?;
    }
}

/// `[ADDR [CONNECTIONS]]`, with their defaults.
fn parse_args(args: &[String]) -> Result<(&str, u32), String> {
    if let Some(option) = args.iter().find(|arg| arg.starts_with('-')) {
        return Err(format!("unknown option {option:?} ({SHORT_USAGE})"));
    }
    if let Some(extra) = args.get(2) {
        return Err(format!("unexpected argument {extra:?} ({SHORT_USAGE})"));
    }
    let addr = args.first().map_or(ADDR_DEFAULT, String::as_str);
    let connections = match args.get(1) {
        None => CONNECTIONS_DEFAULT,
        Some(text) => match text.parse() {
            Ok(n @ 1..=CONNECTIONS_LIMIT) => n,
            _ => {
                return Err(format!(
                    "CONNECTIONS is {text:?}: expected a number from 1 to {CONNECTIONS_LIMIT}"
                ))
            }
        },
    };
    Ok((addr, connections))
}

/// The addresses `addr` (`HOST:PORT`) names.
fn resolve(addr: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(addr) = addr.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let Some((host, port)) = addr
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
    else {
        return Err(format!(
            "cannot listen on {addr:?}: expected HOST:PORT, such as {ADDR_DEFAULT}"
        ));
    };
    match (host, port).to_socket_addrs() {
        Ok(addrs) => Ok(addrs.collect()),
        Err(error) => Err(format!("cannot resolve {host:?}: {}", describe(&error))),
    }
}

/// The backend `DISPATCH_BACKEND` names, read here rather than by `dispatch-loop` so that
/// case and surrounding spaces do not matter and a wrong value is reported in full.
fn backend_from_env() -> Result<Option<BackendKind>, String> {
    let names = "use auto, io_uring, epoll, kqueue or kqueue-fake";
    let value = match std::env::var(BACKEND_ENV) {
        Ok(value) => value,
        Err(VarError::NotPresent) => return Ok(None),
        Err(VarError::NotUnicode(value)) => {
            return Err(format!("{BACKEND_ENV}={value:?} is not UTF-8: {names}"))
        }
    };
    let name = value.trim().to_ascii_lowercase();
    if name.is_empty() || name == "auto" {
        // dispatch-loop would read the variable again, spelled as it was given.
        std::env::remove_var(BACKEND_ENV);
        return Ok(None);
    }
    match BackendKind::from_name(&name).or_else(|| BackendKind::from_name(&name.replace('_', "-")))
    {
        Some(kind) => Ok(Some(kind)),
        None => Err(format!("{BACKEND_ENV}={value:?} names no backend: {names}")),
    }
}

/// An I/O error as a phrase: "address already in use", without "(os error 98)".
fn describe(error: &io::Error) -> String {
    let text = error.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
