//! Listening and connecting sockets, set up the way a server on the loop wants them, on a
//! real network or on a simulated one (`dispatch_loop::sim`).

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

#[cfg(feature = "sim")]
use dispatch_loop::sim::SimListener;
use dispatch_loop::{Io, OpId, ScheduleError, Tag, UnitCallback};
use rustix::net::{sockopt, AddressFamily, SocketType};

/// What [`crate::serve`] accepts connections from: a TCP listener (from [`listen`], or any
/// `std::net::TcpListener`), or a listener on a simulated network (from
/// `dispatch_loop::sim::Sim::listen`), for a loop on that simulation. Both convert with
/// `into()`, so `serve(ctx, io, listener)` takes either. Non-exhaustive: the `Sim` variant
/// exists only with the `sim` feature.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A real TCP listening socket.
    Tcp(TcpListener),
    /// A simulated one (feature `sim`).
    #[cfg(feature = "sim")]
    Sim(SimListener),
}

impl Listener {
    /// The address it listens on.
    ///
    /// # Errors
    /// `getsockname(2)`'s, for a TCP listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr(),
            #[cfg(feature = "sim")]
            Listener::Sim(listener) => Ok(listener.local_addr()),
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(listener) => listener.as_raw_fd(),
            #[cfg(feature = "sim")]
            Listener::Sim(listener) => listener.as_raw_fd(),
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Listener {
        Listener::Tcp(listener)
    }
}

#[cfg(feature = "sim")]
impl From<SimListener> for Listener {
    fn from(listener: SimListener) -> Listener {
        Listener::Sim(listener)
    }
}

/// How [`listen`] sets up a listening socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// The accept queue's length (`listen(2)`'s backlog; the kernel caps it at
    /// `net.core.somaxconn`, 4096 by default since Linux 5.4). std and tokio use 128, which
    /// a burst of a few hundred connects overflows (the kernel then drops SYNs and clients
    /// wait a second for the retry); nginx uses 511. [`ListenOptions::new`] picks 1024.
    pub backlog: u32,
    /// `SO_REUSEPORT`: several sockets (one per thread) listen on one address and the kernel
    /// spreads connections over them.
    pub reuse_port: bool,
}

impl ListenOptions {
    /// A backlog of 1024 and `SO_REUSEPORT`.
    pub const fn new() -> ListenOptions {
        ListenOptions {
            backlog: 1024,
            reuse_port: true,
        }
    }
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions::new()
    }
}

/// A TCP socket listening on `addr` (`SO_REUSEADDR`, `SO_REUSEPORT` as asked, close-on-exec).
///
/// # Errors
/// The OS error, with the address in its message (`cannot listen on 127.0.0.1:7878: Address
/// already in use`), kind preserved.
pub fn listen(addr: SocketAddr, options: &ListenOptions) -> io::Result<TcpListener> {
    let context = |error: io::Error| {
        io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
    };
    let socket = new_socket(addr, SocketType::STREAM).map_err(context)?;
    sockopt::set_socket_reuseaddr(&socket, true).map_err(|e| context(e.into()))?;
    if options.reuse_port {
        sockopt::set_socket_reuseport(&socket, true).map_err(|e| context(e.into()))?;
    }
    rustix::net::bind(&socket, &addr).map_err(|e| context(e.into()))?;
    let backlog = i32::try_from(options.backlog).unwrap_or(i32::MAX);
    rustix::net::listen(&socket, backlog).map_err(|e| context(e.into()))?;
    Ok(TcpListener::from(socket))
}

/// A UDP socket bound to `addr` (`SO_REUSEADDR`, `SO_REUSEPORT` as `options.reuse_port`
/// asks, close-on-exec), for [`crate::serve_udp`]; `options.backlog` does not apply. With
/// `SO_REUSEPORT`, several sockets (one per thread) bind one address and the kernel spreads
/// the datagrams over them by their source address and port.
///
/// # Errors
/// The OS error, with the address in its message (`cannot bind UDP on 127.0.0.1:7878:
/// Address already in use`), kind preserved.
pub fn bind_udp(addr: SocketAddr, options: &ListenOptions) -> io::Result<UdpSocket> {
    let context = |error: io::Error| {
        io::Error::new(error.kind(), format!("cannot bind UDP on {addr}: {error}"))
    };
    let socket = new_socket(addr, SocketType::DGRAM).map_err(context)?;
    sockopt::set_socket_reuseaddr(&socket, true).map_err(|e| context(e.into()))?;
    if options.reuse_port {
        sockopt::set_socket_reuseport(&socket, true).map_err(|e| context(e.into()))?;
    }
    rustix::net::bind(&socket, &addr).map_err(|e| context(e.into()))?;
    Ok(UdpSocket::from(socket))
}

/// A new close-on-exec socket of `addr`'s family and type `kind` (stream or datagram).
fn new_socket(addr: SocketAddr, kind: SocketType) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    #[cfg(not(target_vendor = "apple"))]
    let socket = rustix::net::socket_with(family, kind, rustix::net::SocketFlags::CLOEXEC, None)?;
    #[cfg(target_vendor = "apple")]
    let socket = {
        let socket = rustix::net::socket(family, kind, None)?;
        rustix::io::fcntl_setfd(&socket, rustix::io::FdFlags::CLOEXEC)?;
        socket
    };
    Ok(socket)
}

/// Connects a new socket to `addr` through the loop, giving up with `ETIMEDOUT` after
/// `timeout_ns` (0: no deadline). Returns the socket, which the caller keeps open until the
/// callback has run, and the connect's id. On a loop that runs on a simulation (`Io::sim`,
/// with the `sim` feature), the socket is the simulation's and `addr` an address on its
/// network.
///
/// # Errors
/// Creating the socket failed, or the loop has no free slot (the socket is then closed).
pub fn connect<C>(
    io: &mut Io<C>,
    tag: Tag,
    addr: SocketAddr,
    timeout_ns: u64,
    callback: UnitCallback<C>,
) -> io::Result<(OwnedFd, OpId)> {
    #[cfg(feature = "sim")]
    let socket = match io.sim() {
        Some(sim) => sim.socket()?,
        None => new_socket(addr, SocketType::STREAM)?,
    };
    #[cfg(not(feature = "sim"))]
    let socket = new_socket(addr, SocketType::STREAM)?;
    let id = io
        .connect(tag, socket.as_raw_fd(), addr, callback)
        .map_err(|error: ScheduleError<()>| io::Error::other(error.to_string()))?;
    if timeout_ns > 0 {
        io.set_deadline(id, timeout_ns)
            .expect("a connect just scheduled is in flight");
    }
    Ok((socket, id))
}
