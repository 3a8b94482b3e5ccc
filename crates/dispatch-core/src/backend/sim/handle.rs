//! [`Sim`], the program's handle on a simulated world, and [`SimListener`]: what a test (or
//! a program under test) uses to make listeners, sockets and peers, crash the disk, and read
//! the trace hash.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use super::net::{Recv, Reset, State};
use super::options::{SimOptions, SimStats};
use super::world::{Obj, World};

/// A simulated world: a virtual clock, a network of listeners and connections, a disk, a
/// seeded generator and the trace. Cloning the handle shares the world. Not `Send`: a world
/// lives on one thread, with the loop that runs on it.
///
/// Descriptors a simulated world hands out ([`Sim::socket`], accepted connections, opened
/// files) are real descriptors (duplicates of `/dev/null`), so that every `OwnedFd` stays
/// sound; the simulator maps their numbers to its own objects and never lets the numbers
/// into the trace. Close them with [`Io::close`](crate::Io::close): an `OwnedFd` merely
/// dropped closes the real descriptor but not the simulated socket (its peer sees nothing,
/// as if the process still held it), until the number is handed out again; then it counts
/// in [`SimStats::dropped_descriptors`].
///
/// Peers ([`Sim::peer_connect`] and the `peer_*` methods) are simulated hosts that the
/// test drives directly, without a loop: many clients for a server under test.
#[derive(Clone)]
pub struct Sim {
    pub(crate) world: Rc<RefCell<World>>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let world = self.world.borrow();
        f.debug_struct("Sim")
            .field("seed", &world.options.seed)
            .field("now_ns", &world.now_ns())
            .field("trace_hash", &world.trace.hash())
            .finish_non_exhaustive()
    }
}

/// A simulated host that a test drives directly: one end of a connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Peer(u32);

fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl Sim {
    /// A new world with `options`.
    ///
    /// # Errors
    /// Opening `/dev/null`, which the world duplicates for its descriptors, failed.
    pub fn new(options: &SimOptions) -> io::Result<Sim> {
        Ok(Sim {
            world: Rc::new(RefCell::new(World::new(options)?)),
        })
    }

    /// The seed the world was created with.
    pub fn seed(&self) -> u64 {
        self.world.borrow().options.seed
    }

    /// Virtual nanoseconds since the world was created.
    pub fn now_ns(&self) -> u64 {
        self.world.borrow().now_ns()
    }

    /// The hash of everything observable so far: every completion (its time, operation id,
    /// result and flags), every fault, connection and crash, every peer operation. Two runs
    /// of one program with one seed give the same hash.
    pub fn trace_hash(&self) -> u64 {
        self.world.borrow().trace.hash()
    }

    /// How many events the trace holds.
    pub fn trace_events(&self) -> u64 {
        self.world.borrow().trace.events()
    }

    /// Counters since creation.
    pub fn stats(&self) -> SimStats {
        self.world.borrow().stats
    }

    /// Simulated descriptors open (sockets, listeners, files): 0 at the end of a run that
    /// closed everything.
    pub fn open_descriptors(&self) -> u32 {
        self.world.borrow().open_descriptors()
    }

    /// A listening socket on `addr` (port 0: the world picks one), with a backlog of
    /// `backlog` connections; connections beyond it are refused.
    ///
    /// # Errors
    /// `EADDRINUSE`; `EMFILE` past `SimOptions::descriptors_max`.
    pub fn listen(&self, addr: SocketAddr, backlog: u32) -> io::Result<SimListener> {
        let mut world = self.world.borrow_mut();
        let id = world.listen(addr, backlog).map_err(os_error)?;
        let addr = world.net.listeners[id as usize].addr;
        match world.new_fd(Obj::Listener(id)) {
            Ok(fd) => Ok(SimListener {
                sim: self.clone(),
                fd: Some(fd),
                addr,
            }),
            Err(errno) => {
                world.close_listener(id);
                Err(os_error(errno))
            }
        }
    }

    /// A stream socket, not connected: connect it with [`Io::connect`](crate::Io::connect).
    ///
    /// # Errors
    /// `EMFILE` past `SimOptions::descriptors_max`.
    pub fn socket(&self) -> io::Result<OwnedFd> {
        let mut world = self.world.borrow_mut();
        let obj = world.unbound();
        world.new_fd(obj).map_err(os_error)
    }

    /// A connected pair of stream sockets, like `socketpair(2)`.
    ///
    /// # Errors
    /// `EMFILE` past `SimOptions::descriptors_max`.
    pub fn socket_pair(&self) -> io::Result<(OwnedFd, OwnedFd)> {
        let mut world = self.world.borrow_mut();
        let (a, b) = world.pair();
        let first = world.new_fd(Obj::Stream(a)).map_err(os_error)?;
        match world.new_fd(Obj::Stream(b)) {
            Ok(second) => Ok((first, second)),
            Err(errno) => {
                world.close_fd(first.as_raw_fd());
                Err(os_error(errno))
            }
        }
    }

    /// A simulated power loss: every file keeps what was flushed (`fsync`, `fdatasync`,
    /// `RWF_DSYNC`), and each change since is kept, lost or torn at random
    /// (`Faults::torn_write`); every directory keeps the names its `fsync` made durable,
    /// and each change of names since is kept or undone at random (see "The disk, and what
    /// a crash keeps" in [`crate::sim`]). Every descriptor dies (operations on it fail with
    /// `EIO`, closing it succeeds) and connections are reset. Drop the loop and start a new
    /// one on the same world to play the restart.
    pub fn crash(&self) {
        self.world.borrow_mut().crash();
    }

    /// What the file at the absolute `path` holds now, if it exists and is a file (for
    /// checks after a crash).
    pub fn file_contents(&self, path: &str) -> Option<Vec<u8>> {
        let world = self.world.borrow();
        world.disk.contents(path.as_bytes()).map(<[u8]>::to_vec)
    }

    /// A simulated client connecting to `addr`. It is connected once
    /// [`Sim::peer_connected`] says so; sends before that wait (`WouldBlock`).
    pub fn peer_connect(&self, addr: SocketAddr) -> Peer {
        let mut world = self.world.borrow_mut();
        let endpoint = world.connect(addr);
        let now_ns = world.now_ns();
        world.trace.add(&[0xc0, u64::from(endpoint), now_ns]);
        Peer(endpoint)
    }

    /// `Ok(true)` once connected, `Ok(false)` while connecting.
    ///
    /// # Errors
    /// `ECONNREFUSED`: nobody listened, the backlog was full, or the fault fired.
    pub fn peer_connected(&self, peer: &Peer) -> io::Result<bool> {
        match self.world.borrow().endpoint(peer.0).state {
            State::Connecting => Ok(false),
            State::Established => Ok(true),
            State::Refused => Err(os_error(libc::ECONNREFUSED)),
        }
    }

    /// Sends what room allows of `bytes`: the count.
    ///
    /// # Errors
    /// `WouldBlock` when there is no room (or still connecting); `ECONNRESET`, `EPIPE`,
    /// `ENOTCONN` as a socket would say.
    pub fn peer_send(&self, peer: &Peer, bytes: &[u8]) -> io::Result<usize> {
        let mut world = self.world.borrow_mut();
        let result = world.send(peer.0, bytes);
        let code = match result {
            Ok(Some(n)) => n as u64,
            Ok(None) => u64::MAX,
            Err(errno) => errno as u64,
        };
        let now_ns = world.now_ns();
        world.trace.add(&[0x5e, u64::from(peer.0), code, now_ns]);
        match result {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
            Err(errno) => Err(os_error(-errno)),
        }
    }

    /// Receives into `buf`: the count, 0 at end of stream.
    ///
    /// # Errors
    /// `WouldBlock` when nothing has arrived; `ECONNRESET` (once; end of stream after).
    pub fn peer_recv(&self, peer: &Peer, buf: &mut [u8]) -> io::Result<usize> {
        let mut world = self.world.borrow_mut();
        let mut at = 0;
        let result = world.recv(peer.0, buf.len(), &mut |bytes| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        });
        let (code, value) = match result {
            Recv::Bytes(n) => (n as u64, Ok(n)),
            Recv::Eof => (0, Ok(0)),
            Recv::Wait => (u64::MAX, Err(io::ErrorKind::WouldBlock.into())),
            Recv::Error(errno) => (errno as u64, Err(os_error(-errno))),
        };
        let now_ns = world.now_ns();
        world.trace.add(&[0x4e, u64::from(peer.0), code, now_ns]);
        value
    }

    /// Half-closes the peer's sending side (`shutdown(SHUT_WR)`).
    pub fn peer_shutdown(&self, peer: &Peer) {
        let mut world = self.world.borrow_mut();
        if world.endpoint(peer.0).state == State::Established {
            world.shutdown(peer.0, libc::SHUT_WR);
        }
        let now_ns = world.now_ns();
        world.trace.add(&[0x5d, u64::from(peer.0), now_ns]);
    }

    /// Closes the peer's socket (a reset if it left bytes unread).
    pub fn peer_close(&self, peer: Peer) {
        let mut world = self.world.borrow_mut();
        world.close_endpoint(peer.0);
        let now_ns = world.now_ns();
        world.trace.add(&[0xc1, u64::from(peer.0), now_ns]);
    }

    /// Resets the peer's connection and closes its socket.
    pub fn peer_reset(&self, peer: Peer) {
        let mut world = self.world.borrow_mut();
        if world.endpoint(peer.0).state == State::Established {
            world.reset_connection(peer.0);
            world.net.endpoints[peer.0 as usize].reset = Reset::Reported;
        }
        world.close_endpoint(peer.0);
        let now_ns = world.now_ns();
        world.trace.add(&[0x7e, u64::from(peer.0), now_ns]);
    }
}

/// A simulated listening socket (from [`Sim::listen`]): its descriptor is what
/// [`Io::accept`](crate::Io::accept) takes. Dropping it stops the listening (connections
/// waiting in its backlog are reset).
pub struct SimListener {
    sim: Sim,
    fd: Option<OwnedFd>,
    addr: SocketAddr,
}

impl SimListener {
    /// The address it listens on (with the port the world picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The world it belongs to.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }
}

impl fmt::Debug for SimListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimListener")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AsRawFd for SimListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_ref().expect("open until dropped").as_raw_fd()
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let fd = self.fd.take().expect("dropped once");
        self.sim.world.borrow_mut().close_fd(fd.as_raw_fd());
    }
}
