//! `dispatch-net`: TCP (and UDP) helpers on `dispatch-loop` that every server on the loop would
//! otherwise rewrite: listening sockets ([`listen`], `SO_REUSEPORT`, a backlog chosen on
//! purpose), connect with a deadline ([`connect`]), a fixed connection table with
//! generation-checked handles ([`Table`], [`ConnId`]), and a server ([`serve`]) whose accept
//! loop survives running out of descriptors (it pauses, never spins, and logs once per
//! episode), whose connections are read from pooled buffers (an idle connection pins none),
//! answer with replies of any shape ([`send`]: owned, static or pooled bytes, queued in
//! order and gathered into one vectored send), get no new data while a reply is being sent,
//! stop being read once a few arrivals wait for it (backpressure: see [`PENDING_MAX`]),
//! finish short writes, time out when nothing moves either way, and close after a
//! half-close once their replies are out. Misconfiguration is an error from [`serve`] that
//! names the option, never a panic in a callback.
//!
//! The program's loop context implements [`Handler`]: `net()` hands this layer its own
//! state, and `on_data` receives the bytes. A request/response server in a few lines (an
//! uppercasing echo):
//!
//! ```
//! use std::net::TcpListener;
//! use dispatch_loop::{Io, Options, PoolBuf, PoolOptions};
//! use dispatch_net::{listen, send, serve, ConnId, Handler, ListenOptions, Net, NetOptions};
//!
//! struct Upper { net: Net }
//!
//! impl Handler for Upper {
//!     fn net(&mut self) -> &mut Net { &mut self.net }
//!     fn on_data(&mut self, io: &mut Io<Self>, conn: ConnId, mut data: PoolBuf) {
//!         data.make_ascii_uppercase();
//!         let _ = send(self, io, conn, data); // Err: the connection is gone
//!     }
//! }
//!
//! let net_options = NetOptions::new(100);
//! let mut options = Options::new(net_options.ops_max());
//! options.pool = PoolOptions::new(64, 4096);
//! let mut io: Io<Upper> = Io::new(&options).expect("a backend");
//! let listener = listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
//! let addr = listener.local_addr().unwrap();
//! let mut server = Upper { net: Net::new(&net_options) };
//! serve(&mut server, &mut io, listener).unwrap();
//!
//! let mut client = std::net::TcpStream::connect(addr).unwrap();
//! std::io::Write::write_all(&mut client, b"hello").unwrap();
//! let mut reply = [0; 5];
//! while server.net.stats().bytes_sent < 5 {
//!     io.run_for_ns(&mut server, 1_000_000).unwrap();
//! }
//! std::io::Read::read_exact(&mut client, &mut reply).unwrap();
//! assert_eq!(&reply, b"HELLO");
//! ```
//!
//! UDP has a server of its own ([`serve_udp`]): a bound socket ([`bind_udp`]) read by one
//! multishot receive into the loop's pool (on io_uring one submission for many datagrams),
//! each datagram copied into one of a small fixed set of messages ([`UdpOptions`]; nothing
//! allocated per datagram), handed to [`UdpHandler::on_datagram`] with its sender, and the
//! [`Reply`] sent from that message. Truncated datagrams, failed sends (an ICMP port unreachable, a
//! reply too large) and failed receives are counted in [`UdpStats`], and serving goes on. A
//! program serving TCP and UDP implements both traits on its one context. A UDP client
//! ([`UdpClient`], [`request`]) sends a request and waits for the response with a deadline,
//! sending again up to [`RequestOptions::tries_max`] times. An uppercasing UDP echo:
//!
//! ```
//! use std::net::{SocketAddr, UdpSocket};
//! use dispatch_loop::{Io, Msg, Options, PoolOptions};
//! use dispatch_net::{bind_udp, serve_udp, ListenOptions, Reply, Udp, UdpHandler, UdpOptions};
//!
//! struct Upper { udp: Udp }
//!
//! impl UdpHandler for Upper {
//!     fn udp(&mut self) -> &mut Udp { &mut self.udp }
//!     fn on_datagram(&mut self, _: &mut Io<Self>, msg: &mut Msg, from: SocketAddr) -> Reply {
//!         msg.bufs_mut()[0].make_ascii_uppercase();
//!         Reply::SendTo(from) // the same message goes back, then receives again
//!     }
//! }
//!
//! let udp_options = UdpOptions::new(8, 1500); // 8 messages of 1,500 bytes
//! let mut options = Options::new(udp_options.ops_max());
//! // The receive's pool: buffers that hold a datagram and the sender the kernel writes.
//! options.pool = PoolOptions::new(16, udp_options.pool_buffer_size());
//! let mut io: Io<Upper> = Io::new(&options).expect("a backend");
//! let socket = bind_udp("127.0.0.1:0".parse().unwrap(), &ListenOptions::new()).unwrap();
//! let addr = socket.local_addr().unwrap();
//! let mut server = Upper { udp: Udp::new(&udp_options) };
//! serve_udp(&mut server, &mut io, socket).unwrap();
//!
//! let client = UdpSocket::bind("127.0.0.1:0").unwrap();
//! client.send_to(b"hello", addr).unwrap();
//! while server.udp.stats().sent < 1 {
//!     io.run_for_ns(&mut server, 1_000_000).unwrap();
//! }
//! let mut reply = [0; 16];
//! let (n, from) = client.recv_from(&mut reply).unwrap();
//! assert_eq!((&reply[..n], from), (&b"HELLO"[..], addr));
//! ```
//!
//! A whole HTTP/1.1 server on this layer (keep-alive, pipelining, chunked bodies, limits, a
//! request deadline swept by one timer) is `examples/http.rs` in the repository.
//!
//! Why a trait with an accessor, of the ways a library layer can reach its own state from a
//! callback that only gets `&mut C`: it costs nothing (static dispatch, no lens to store,
//! no second context parameter threaded through every callback), one program can run a
//! server and its own timers and files on one loop (its other callbacks simply ignore the
//! `Net`), and the same handler runs unchanged on any backend, the simulator included. See
//! `docs/ARCHITECTURE.md`.
//!
//! # Features
//!
//! - `sim` (off by default; turns on `dispatch-loop/sim`): `Listener::Sim` (a listener on
//!   dispatch-loop's simulated network, which [`serve`] accepts from) and [`connect`] on a
//!   loop that runs on a simulation. Meant for tests, as a dev-dependency with
//!   `features = ["sim"]`.
#![forbid(unsafe_code)]

mod listen;
mod send;
mod server;
mod table;
mod udp;
mod udp_client;

pub use crate::listen::{bind_udp, connect, listen, ListenOptions, Listener};
pub use crate::send::{send, SendError, SendErrorKind, SEND_QUEUE_MAX};
pub use crate::server::{
    close, close_gracefully, serve, stop, Handler, Net, NetOptions, NetStats, LINGER_BYTES_MAX,
    PENDING_MAX,
};
pub use crate::table::{ConnId, Table};
pub use crate::udp::{serve_udp, stop_udp, Reply, Udp, UdpHandler, UdpOptions, UdpStats};
pub use crate::udp_client::{
    request, request_by_id, RequestError, RequestOptions, UdpClient, UdpClientHandler,
    UdpClientStats, STRAYS_PER_TRY_MAX,
};

// `SendErrorKind` is `Error + Send + Sync + 'static` (C-GOOD-ERR): it boxes into
// `Box<dyn Error + Send + Sync>`. `SendError` is not `Send`: it hands back the bytes, which
// may be a pool buffer of its thread's loop.
const _: () = {
    const fn assert_error<E: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<SendErrorKind>();
};
