//! The minimal TCP echo server on `dispatch-core` alone.
//!
//! ```text
//! cargo run --release -p examples --example echo_minimal -- 127.0.0.1:7878
//! nc 127.0.0.1 7878
//! ```
//!
//! One loop, one listener, a fixed table of connections. Every step is a callback that
//! schedules the next: accept → recv → send → recv … → close. The loop batches everything
//! scheduled during a turn into one `io_uring_enter`, and the buffer of each connection
//! travels with its operations, so the steady state allocates nothing.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use dispatch_core::{BufResult, Io, Options, Tag};

const CONNECTIONS_MAX: usize = 1024;
const BUFFER_SIZE: usize = 4096;
/// The tag of the accept (and of its back-off timer); connections use their table index.
const ACCEPT: Tag = u64::MAX;

struct Server {
    listener: TcpListener,
    connections: Vec<Option<OwnedFd>>,
}

impl Server {
    fn fd(&self, tag: Tag) -> RawFd {
        self.connections[tag as usize]
            .as_ref()
            .expect("open connection")
            .as_raw_fd()
    }
}

fn accept(server: &mut Server, io: &mut Io<Server>) {
    io.accept(ACCEPT, server.listener.as_raw_fd(), on_accept)
        .expect("a slot is kept for it");
}

fn on_accept(server: &mut Server, io: &mut Io<Server>, _: Tag, result: io::Result<OwnedFd>) {
    match result {
        Ok(socket) => match server.connections.iter().position(Option::is_none) {
            Some(idx) => {
                let fd = socket.as_raw_fd();
                server.connections[idx] = Some(socket);
                let buf = Vec::with_capacity(BUFFER_SIZE);
                io.recv(idx as Tag, fd, buf, on_recv)
                    .expect("one slot per connection");
            }
            None => eprintln!("connection table full: dropping (closing) the new connection"),
        },
        // Out of descriptors: back off for 100 ms rather than spin on the error.
        Err(error) if matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            let resume: fn(&mut Server, &mut Io<Server>, Tag, io::Result<()>) =
                |server, io, _, _| accept(server, io);
            io.timeout(ACCEPT, 100_000_000, resume)
                .expect("a slot is kept for it");
            return;
        }
        Err(error) => eprintln!("accept: {error}"),
    }
    accept(server, io);
}

fn on_recv(server: &mut Server, io: &mut Io<Server>, tag: Tag, (result, buf): BufResult) {
    match result {
        Ok(n) if n > 0 => {
            io.send(tag, server.fd(tag), buf, on_send)
                .expect("one slot per connection");
        }
        // End of stream, or an error such as a reset peer.
        _ => close(server, io, tag),
    }
}

fn on_send(server: &mut Server, io: &mut Io<Server>, tag: Tag, (result, mut buf): BufResult) {
    match result {
        Ok(n) if n == buf.len() => {
            buf.clear();
            io.recv(tag, server.fd(tag), buf, on_recv)
                .expect("one slot per connection");
        }
        Ok(n) => {
            buf.drain(..n);
            io.send(tag, server.fd(tag), buf, on_send)
                .expect("one slot per connection");
        }
        Err(_) => close(server, io, tag),
    }
}

fn close(server: &mut Server, io: &mut Io<Server>, tag: Tag) {
    let socket = server.connections[tag as usize]
        .take()
        .expect("open connection");
    io.close(tag, socket, |_, _, _, _| ())
        .expect("one slot per connection");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".to_owned());
    let listener = TcpListener::bind(&addr)?;
    println!("echo_minimal listening on {}", listener.local_addr()?);
    // One operation per connection, plus the accept (or its back-off timer).
    let mut io: Io<Server> = Io::new(&Options::new(CONNECTIONS_MAX as u32 + 1))?;
    let mut server = Server {
        listener,
        connections: (0..CONNECTIONS_MAX).map(|_| None).collect(),
    };
    accept(&mut server, &mut io);
    loop {
        io.run_for_ns(&mut server, 1_000_000_000)?;
    }
}
