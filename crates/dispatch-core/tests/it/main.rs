//! dispatch-core's integration suite: every operation over real sockets and files, through the
//! public API only. Each test builds its loop with `check::io`, which skips (saying why)
//! where the backend cannot run on this machine.

mod alloc;
mod cancel;
mod drop_in_flight;
mod model;
mod ops;
mod overflow;
mod pipe;
mod timeout;
mod wakeup;

/// Helpers every test module shares.
pub mod check {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, OwnedFd, RawFd};

    use dispatch_core::{InitError, Io, Options};

    /// A loop for `options`, or `None` (after printing why) where io_uring is unavailable.
    pub fn io<C>(options: &Options) -> Option<Io<C>> {
        match Io::new(options) {
            Ok(io) => Some(io),
            Err(InitError::Unavailable(error)) => {
                eprintln!("skipped: {error}");
                None
            }
            Err(error) => panic!("Io::new: {error}"),
        }
    }

    /// A connected loopback TCP pair: (client, server side).
    pub fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (client, server)
    }

    /// A new, unconnected, blocking IPv4 TCP socket.
    pub fn tcp_socket() -> OwnedFd {
        rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::STREAM,
            None,
        )
        .unwrap()
    }

    /// Makes `stream`'s close send a reset (`SO_LINGER` 0) and closes it.
    pub fn reset(stream: TcpStream) {
        rustix::net::sockopt::set_socket_linger(&stream, Some(std::time::Duration::ZERO)).unwrap();
        drop(stream);
    }

    /// The raw descriptor of anything that has one.
    pub fn fd(value: &impl AsRawFd) -> RawFd {
        value.as_raw_fd()
    }

    /// A fresh path in the temporary directory, unique to this process and `name`.
    pub fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("dispatch-core-it-{}-{name}", std::process::id()))
    }
}
