//! The simulated network: stream connections between endpoints, listeners by address, and
//! segments in flight with a latency. Each direction of a connection is a FIFO (a segment is
//! never delivered before one sent earlier on the same stream), and a receiver's buffer plus
//! what is in flight toward it is bounded by `SimOptions::socket_buffer_bytes`, so a reader
//! that stops reading stops its writer (backpressure).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use super::world::{Event, Fault, World};

/// Where a connection stands, from one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Its first packet is on the way to the listener.
    Connecting,
    Established,
    /// Nobody listened (or the refused fault fired).
    Refused,
}

/// A reset seen by an endpoint: reported once as `ECONNRESET`, then as end of stream
/// (recv) or `EPIPE` (send), as Linux does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    No,
    Pending,
    Reported,
}

/// Bytes (or the end of the stream, or a reset) on their way to an endpoint.
struct Segment {
    at_ns: u64,
    bytes: Vec<u8>,
    fin: bool,
    rst: bool,
}

/// One end of a connection.
pub(crate) struct Endpoint {
    pub(crate) peer: u32,
    pub(crate) state: State,
    /// The address a connecting client's first packet goes to (server side).
    target: Option<SocketAddr>,
    /// Delivered bytes, not read yet.
    rx: VecDeque<u8>,
    inflight: VecDeque<Segment>,
    inflight_bytes: usize,
    /// When the last segment toward this endpoint arrives: later ones arrive no earlier.
    last_at_ns: u64,
    /// The peer's end of stream was delivered.
    rx_eof: bool,
    pub(crate) reset: Reset,
    write_shut: bool,
    read_shut: bool,
    /// A descriptor (or a peer handle) still holds it.
    pub(crate) open: bool,
    /// The refused fault fired for this connection (server side).
    refuse: bool,
    /// One end of a Unix stream pair (`unix.rs`): no reset fault, descriptors may be passed.
    pub(crate) unix: bool,
    /// Bytes this end has sent, and received: the stream offsets that descriptors passed
    /// over a Unix stream are attached to (`unix.rs`).
    pub(crate) sent_bytes: u64,
    pub(crate) received_bytes: u64,
}

impl Endpoint {
    fn new(peer: u32, state: State) -> Endpoint {
        Endpoint {
            peer,
            state,
            target: None,
            rx: VecDeque::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            last_at_ns: 0,
            rx_eof: false,
            reset: Reset::No,
            write_shut: false,
            read_shut: false,
            open: true,
            refuse: false,
            unix: false,
            sent_bytes: 0,
            received_bytes: 0,
        }
    }
}

/// A listening socket.
pub(crate) struct Listener {
    pub(crate) addr: SocketAddr,
    backlog: VecDeque<u32>,
    backlog_max: u32,
    open: bool,
}

/// The network's state.
#[derive(Default)]
pub(crate) struct Net {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) listeners: Vec<Listener>,
    by_addr: BTreeMap<SocketAddr, u32>,
    next_port: u16,
}

/// What a receive found.
pub(crate) enum Recv {
    /// Bytes were copied: how many.
    Bytes(usize),
    /// End of stream.
    Eof,
    /// Nothing yet.
    Wait,
    /// `-errno`.
    Error(i32),
}

impl World {
    pub(super) fn latency_ns(&mut self) -> u64 {
        let (low, high) = (self.options.latency_min_ns, self.options.latency_max_ns);
        let mut latency = self.rng.between(low, high.max(low));
        if self.rng.chance(self.faults.latency) {
            self.fault(Fault::Latency);
            latency += self.rng.between(0, self.faults.latency_max_ns);
        }
        latency
    }

    fn new_pair(&mut self, state: State) -> (u32, u32) {
        let a = self.net.endpoints.len() as u32;
        self.net.endpoints.push(Endpoint::new(a + 1, state));
        self.net.endpoints.push(Endpoint::new(a, state));
        self.stats.connections += 1;
        (a, a + 1)
    }

    /// A connected pair (a socket pair): both ends established at once.
    pub(crate) fn pair(&mut self) -> (u32, u32) {
        self.new_pair(State::Established)
    }

    /// A listener on `addr` (port 0: one picked from 40000 up).
    pub(crate) fn listen(&mut self, mut addr: SocketAddr, backlog: u32) -> Result<u32, i32> {
        if addr.port() == 0 {
            loop {
                self.net.next_port = self.net.next_port.wrapping_add(1);
                addr.set_port(40_000 + self.net.next_port % 20_000);
                if !self.net.by_addr.contains_key(&addr) {
                    break;
                }
            }
        }
        if self.net.by_addr.contains_key(&addr) {
            return Err(libc::EADDRINUSE);
        }
        let id = self.net.listeners.len() as u32;
        self.net.listeners.push(Listener {
            addr,
            backlog: VecDeque::new(),
            backlog_max: backlog.max(1),
            open: true,
        });
        self.net.by_addr.insert(addr, id);
        Ok(id)
    }

    pub(crate) fn close_listener(&mut self, id: u32) {
        let listener = &mut self.net.listeners[id as usize];
        if !listener.open {
            return;
        }
        listener.open = false;
        let addr = listener.addr;
        let waiting: Vec<u32> = listener.backlog.drain(..).collect();
        self.net.by_addr.remove(&addr);
        for server in waiting {
            self.reset_connection(server);
            self.net.endpoints[server as usize].open = false;
        }
    }

    /// Starts a connection to `addr`: the client endpoint, connecting.
    pub(crate) fn connect(&mut self, addr: SocketAddr) -> u32 {
        let (client, server) = self.new_pair(State::Connecting);
        self.net.endpoints[server as usize].target = Some(addr);
        if self.rng.chance(self.faults.refused) {
            self.fault(Fault::Refused);
            self.net.endpoints[server as usize].refuse = true;
        }
        let at_ns = self.now_ns() + self.latency_ns();
        self.at(at_ns, Event::Arrive(server));
        client
    }

    /// A connection's first packet reaches (or misses) its listener.
    pub(crate) fn arrive(&mut self, server: u32) {
        let endpoint = &self.net.endpoints[server as usize];
        let (client, mut refuse) = (endpoint.peer, endpoint.refuse);
        // A client that gave up (closed) before its first packet arrived: nothing to accept.
        refuse |= !self.net.endpoints[client as usize].open;
        let target = endpoint
            .target
            .expect("a connecting server end has a target");
        let listener = self.net.by_addr.get(&target).copied();
        let accepted = match listener {
            Some(id) if !refuse => {
                let listener = &mut self.net.listeners[id as usize];
                let room = listener.backlog.len() < listener.backlog_max as usize;
                if room {
                    listener.backlog.push_back(server);
                }
                room
            }
            _ => false,
        };
        let state = if accepted {
            State::Established
        } else {
            State::Refused
        };
        self.net.endpoints[server as usize].state = state;
        self.net.endpoints[client as usize].state = state;
        if !accepted {
            self.net.endpoints[server as usize].open = false;
        }
        let now_ns = self.now_ns();
        self.trace
            .add(&[0xa7, u64::from(server), u64::from(accepted), now_ns]);
    }

    /// Takes the next connection a listener holds, if any.
    pub(crate) fn accept(&mut self, listener: u32) -> Option<u32> {
        self.net.listeners[listener as usize].backlog.pop_front()
    }

    /// Whether a listener holds a connection.
    pub(crate) fn can_accept(&self, listener: u32) -> bool {
        !self.net.listeners[listener as usize].backlog.is_empty()
    }

    /// Segments due at `endpoint` are delivered.
    pub(crate) fn deliver(&mut self, endpoint: u32) {
        let now_ns = self.now_ns();
        let to = &mut self.net.endpoints[endpoint as usize];
        while to.inflight.front().is_some_and(|s| s.at_ns <= now_ns) {
            let segment = to.inflight.pop_front().expect("checked");
            to.inflight_bytes -= segment.bytes.len();
            if segment.rst {
                to.rx.clear();
                to.inflight.clear();
                to.inflight_bytes = 0;
                to.reset = Reset::Pending;
                break;
            }
            to.rx.extend(segment.bytes.iter());
            to.rx_eof |= segment.fin;
        }
    }

    fn push_segment(&mut self, to: u32, bytes: Vec<u8>, fin: bool, rst: bool) {
        let latency = self.latency_ns();
        let endpoint = &mut self.net.endpoints[to as usize];
        let at_ns = (self.now.get() + latency).max(endpoint.last_at_ns);
        endpoint.last_at_ns = at_ns;
        endpoint.inflight_bytes += bytes.len();
        endpoint.inflight.push_back(Segment {
            at_ns,
            bytes,
            fin,
            rst,
        });
        self.at(at_ns, Event::Deliver(to));
    }

    /// Resets the connection of `endpoint`: it sees `ECONNRESET` now, its peer when the
    /// reset arrives. Data in flight either way is lost.
    pub(crate) fn reset_connection(&mut self, endpoint: u32) {
        let this = &mut self.net.endpoints[endpoint as usize];
        if this.reset != Reset::No {
            return;
        }
        let peer = this.peer;
        this.reset = Reset::Pending;
        this.rx.clear();
        this.inflight.clear();
        this.inflight_bytes = 0;
        if self.net.endpoints[peer as usize].open {
            self.push_segment(peer, Vec::new(), false, true);
        }
    }

    /// The descriptor of `endpoint` is closed: its peer gets the end of the stream, or a
    /// reset if bytes it sent were never read (as TCP and Unix sockets do).
    pub(crate) fn close_endpoint(&mut self, endpoint: u32) {
        let this = &mut self.net.endpoints[endpoint as usize];
        if !this.open {
            return;
        }
        this.open = false;
        let unread = !this.rx.is_empty() || this.inflight_bytes > 0;
        let (peer, write_shut) = (this.peer, this.write_shut);
        if this.state != State::Established || this.reset != Reset::No {
            return;
        }
        if unread {
            self.reset_connection(endpoint);
        } else if !write_shut {
            self.net.endpoints[endpoint as usize].write_shut = true;
            self.push_segment(peer, Vec::new(), true, false);
        }
    }

    /// `shutdown(2)`: `SHUT_RD`, `SHUT_WR` or `SHUT_RDWR`.
    pub(crate) fn shutdown(&mut self, endpoint: u32, how: i32) -> i32 {
        let this = &mut self.net.endpoints[endpoint as usize];
        if this.state != State::Established {
            return -libc::ENOTCONN;
        }
        if how != libc::SHUT_RD && how != libc::SHUT_WR && how != libc::SHUT_RDWR {
            return -libc::EINVAL;
        }
        if how != libc::SHUT_WR {
            this.read_shut = true;
        }
        if how != libc::SHUT_RD && !this.write_shut && this.reset == Reset::No {
            this.write_shut = true;
            let peer = this.peer;
            self.push_segment(peer, Vec::new(), true, false);
        }
        0
    }

    /// Receives up to `max` bytes into `sink` (which gets them in order, in up to two
    /// slices).
    pub(crate) fn recv(&mut self, endpoint: u32, max: usize, sink: &mut dyn FnMut(&[u8])) -> Recv {
        let this = &mut self.net.endpoints[endpoint as usize];
        match (this.state, this.reset) {
            (_, Reset::Pending) => {
                this.reset = Reset::Reported;
                return Recv::Error(-libc::ECONNRESET);
            }
            (_, Reset::Reported) => return Recv::Eof,
            (State::Connecting, _) => return Recv::Wait,
            (State::Refused, _) => return Recv::Error(-libc::ENOTCONN),
            (State::Established, _) => {}
        }
        if this.rx.is_empty() {
            return if this.rx_eof || this.read_shut {
                Recv::Eof
            } else {
                Recv::Wait
            };
        }
        let mut n = this.rx.len().min(max);
        if n > 1 && self.rng.chance(self.faults.short_io) {
            n = self.rng.between(1, n as u64 - 1) as usize;
            self.fault(Fault::ShortIo);
            if self.faults.planted_bug && self.rng.chance(500) {
                // The planted bug (tests only): one byte vanishes on a rare short read.
                self.fault(Fault::Planted);
                self.net.endpoints[endpoint as usize].rx.pop_front();
                n -= 1;
            }
        }
        let this = &mut self.net.endpoints[endpoint as usize];
        let (a, b) = this.rx.as_slices();
        let from_a = a.len().min(n);
        sink(&a[..from_a]);
        if from_a < n {
            sink(&b[..n - from_a]);
        }
        this.rx.drain(..n);
        this.received_bytes += n as u64;
        self.stats.bytes_received += n as u64;
        if n == 0 {
            return Recv::Wait;
        }
        Recv::Bytes(n)
    }

    /// Sends `bytes` (some of them, as room allows): the count, `None` to wait for room, or
    /// `-errno`.
    pub(crate) fn send(&mut self, endpoint: u32, bytes: &[u8]) -> Result<Option<usize>, i32> {
        let this = &mut self.net.endpoints[endpoint as usize];
        match (this.state, this.reset) {
            (_, Reset::Pending) => {
                this.reset = Reset::Reported;
                return Err(-libc::ECONNRESET);
            }
            (_, Reset::Reported) => return Err(-libc::EPIPE),
            (State::Connecting, _) => return Ok(None),
            (State::Refused, _) => return Err(-libc::ENOTCONN),
            (State::Established, _) => {}
        }
        let peer = this.peer;
        if this.write_shut || !self.net.endpoints[peer as usize].open {
            return Err(-libc::EPIPE);
        }
        if bytes.is_empty() {
            return Ok(Some(0));
        }
        // A Unix stream is never reset by the network: there is none.
        let unix = self.net.endpoints[endpoint as usize].unix;
        if !unix && self.rng.chance(self.faults.reset) {
            self.fault(Fault::Reset);
            self.reset_connection(endpoint);
            self.net.endpoints[endpoint as usize].reset = Reset::Reported;
            return Err(-libc::ECONNRESET);
        }
        let to = &self.net.endpoints[peer as usize];
        let used = to.rx.len() + to.inflight_bytes;
        let room = (self.options.socket_buffer_bytes as usize).saturating_sub(used);
        if room == 0 {
            self.stats.sends_blocked += 1;
            return Ok(None);
        }
        let mut n = bytes.len().min(room);
        if n > 1 && self.rng.chance(self.faults.short_io) {
            self.fault(Fault::ShortIo);
            n = self.rng.between(1, n as u64 - 1) as usize;
        }
        self.push_segment(peer, bytes[..n].to_vec(), false, false);
        self.net.endpoints[endpoint as usize].sent_bytes += n as u64;
        self.stats.bytes_sent += n as u64;
        Ok(Some(n))
    }

    /// Whether `emfile` fires for an accept.
    pub(crate) fn accept_fault(&mut self) -> bool {
        let fired = self.rng.chance(self.faults.emfile);
        if fired {
            self.fault(Fault::Emfile);
        }
        fired
    }

    /// Whether bytes wait to be received at `endpoint` (and no reset to report first).
    pub(crate) fn has_bytes(&self, endpoint: u32) -> bool {
        let this = &self.net.endpoints[endpoint as usize];
        this.reset == Reset::No && this.state == State::Established && !this.rx.is_empty()
    }

    /// `poll(2)`'s bits for `endpoint` now (`poll.rs`): readable (bytes, the end of stream,
    /// a reset to report), writable (room toward the peer, or a send that fails at once),
    /// hung up (the peer's end of stream, a reset), in error (a reset not reported yet).
    pub(crate) fn poll_endpoint(&self, endpoint: u32) -> i16 {
        let this = &self.net.endpoints[endpoint as usize];
        let (rw, hup) = (libc::POLLIN | libc::POLLOUT, libc::POLLHUP);
        match (this.state, this.reset) {
            (_, Reset::Pending) => return rw | hup | libc::POLLERR,
            (_, Reset::Reported) => return rw | hup,
            (State::Connecting, _) => return 0,
            (State::Refused, _) => return libc::POLLOUT | hup | libc::POLLERR,
            (State::Established, _) => {}
        }
        let mut bits = 0;
        if !this.rx.is_empty() || this.rx_eof || this.read_shut {
            bits |= libc::POLLIN;
        }
        if this.rx_eof {
            bits |= hup;
        }
        let to = &self.net.endpoints[this.peer as usize];
        let used = to.rx.len() + to.inflight_bytes;
        let room = (self.options.socket_buffer_bytes as usize) > used;
        if room || this.write_shut || !to.open {
            bits |= libc::POLLOUT;
        }
        bits
    }

    /// Endpoint `endpoint`.
    pub(crate) fn endpoint(&self, endpoint: u32) -> &Endpoint {
        &self.net.endpoints[endpoint as usize]
    }
}
