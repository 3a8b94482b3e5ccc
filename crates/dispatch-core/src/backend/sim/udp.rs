//! Datagram sockets on the simulated world: bound to an address ([`Sim::udp_bind`]), each
//! datagram sent to an address travels alone, with its own latency, and is lost
//! (`Faults::datagram_loss`), delivered twice (`Faults::datagram_duplicate`) or held back
//! for later ones to overtake (`Faults::datagram_reorder`) at the seed's choice. Without
//! the reorder fault the datagrams toward one socket arrive in the order they were sent:
//! reordering is a fault of its own, so that a test can turn it on and off. A datagram to an
//! address nobody bound is dropped, as UDP does without an ICMP answer. Receives take the
//! earliest datagram due; a datagram longer than the buffers is cut and reported
//! (`MSG_TRUNC`). Every choice goes into the trace, so one seed gives one run.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use super::world::{Event, Fault, Obj, World};
use super::Sim;

/// The first port an unspecified port (0) is given, counting up.
const EPHEMERAL_PORT_MIN: u16 = 40_000;

/// The datagram sockets of a world.
#[derive(Default)]
pub(crate) struct Udp {
    sockets: Vec<Socket>,
    bound: BTreeMap<SocketAddr, u32>,
    ports_given: u16,
    /// Datagrams sent so far: each one's number orders those due at the same moment.
    sent: u64,
}

struct Socket {
    addr: SocketAddr,
    /// Datagrams on their way or arrived, in order of arrival (then of sending).
    queue: Vec<Datagram>,
    /// When the last datagram not held back by the reorder fault arrives: the next one
    /// arrives no earlier (FIFO toward this socket).
    last_at_ns: u64,
}

struct Datagram {
    at_ns: u64,
    seq: u64,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// What a datagram receive found.
pub(crate) enum Got {
    /// `(count copied, whole length, sender)`.
    Datagram(usize, usize, SocketAddr),
    /// Nothing due yet.
    Wait,
}

impl World {
    /// Binds a datagram socket to `addr` (port 0: the next free port from 40,000).
    fn udp_bind(&mut self, mut addr: SocketAddr) -> Result<u32, i32> {
        if addr.port() == 0 {
            let udp = &mut self.udp;
            loop {
                let port = EPHEMERAL_PORT_MIN.checked_add(udp.ports_given);
                udp.ports_given += 1;
                addr.set_port(port.ok_or(libc::EADDRINUSE)?);
                if !udp.bound.contains_key(&addr) {
                    break;
                }
            }
        }
        if self.udp.bound.contains_key(&addr) {
            return Err(libc::EADDRINUSE);
        }
        let id = self.udp.sockets.len() as u32;
        self.udp.sockets.push(Socket {
            addr,
            queue: Vec::new(),
            last_at_ns: 0,
        });
        self.udp.bound.insert(addr, id);
        Ok(id)
    }

    /// Closes datagram socket `id`: its address is free again, its queue dropped.
    pub(crate) fn udp_close(&mut self, id: u32) {
        let socket = &mut self.udp.sockets[id as usize];
        socket.queue = Vec::new();
        let addr = socket.addr;
        self.udp.bound.remove(&addr);
    }

    /// The address socket `id` is bound to.
    pub(crate) fn udp_addr(&self, id: u32) -> SocketAddr {
        self.udp.sockets[id as usize].addr
    }

    /// Sends `bytes` from socket `id` to `to`: lost, delivered once or twice, each copy
    /// after a latency of its own. Always "sent", as UDP says.
    pub(crate) fn udp_send(&mut self, id: u32, to: SocketAddr, bytes: &[u8]) {
        let from = self.udp_addr(id);
        self.udp.sent += 1;
        let seq = self.udp.sent;
        self.trace.add(&[0xd6, seq, bytes.len() as u64]);
        self.stats.bytes_sent += bytes.len() as u64;
        let Some(&dest) = self.udp.bound.get(&to) else {
            return;
        };
        if self.rng.chance(self.faults.datagram_loss) {
            self.fault(Fault::DatagramLoss);
            return;
        }
        let copies = if self.rng.chance(self.faults.datagram_duplicate) {
            self.fault(Fault::DatagramDuplicate);
            2
        } else {
            1
        };
        for _ in 0..copies {
            let at_ns = self.datagram_at_ns(dest);
            let queue = &mut self.udp.sockets[dest as usize].queue;
            let at = queue.partition_point(|d| (d.at_ns, d.seq) <= (at_ns, seq));
            let bytes = bytes.to_vec();
            queue.insert(
                at,
                Datagram {
                    at_ns,
                    seq,
                    from,
                    bytes,
                },
            );
            self.at(at_ns, Event::Wake);
        }
    }

    /// When a datagram sent now reaches socket `dest`: after a latency, and no earlier than
    /// the one before (FIFO), unless the reorder fault holds it back, up to
    /// `SimOptions::latency_max_ns` more, without holding back those after it.
    fn datagram_at_ns(&mut self, dest: u32) -> u64 {
        let at_ns = self.now_ns() + self.latency_ns();
        if self.rng.chance(self.faults.datagram_reorder) {
            self.fault(Fault::DatagramReorder);
            let held_ns = self.rng.between(1, self.options.latency_max_ns.max(1));
            return at_ns + held_ns;
        }
        let socket = &mut self.udp.sockets[dest as usize];
        let at_ns = at_ns.max(socket.last_at_ns);
        socket.last_at_ns = at_ns;
        at_ns
    }

    /// Whether a datagram is due on socket `id`: what a receive would take now.
    pub(crate) fn udp_readable(&self, id: u32) -> bool {
        let now_ns = self.now_ns();
        let queue = &self.udp.sockets[id as usize].queue;
        queue.first().is_some_and(|d| d.at_ns <= now_ns)
    }

    /// Receives the earliest datagram due on socket `id`, copying at most `max` bytes of
    /// it through `sink`.
    pub(crate) fn udp_recv(&mut self, id: u32, max: usize, sink: &mut dyn FnMut(&[u8])) -> Got {
        let now_ns = self.now_ns();
        let queue = &mut self.udp.sockets[id as usize].queue;
        if queue.first().is_none_or(|d| d.at_ns > now_ns) {
            return Got::Wait;
        }
        let datagram = queue.remove(0);
        let n = datagram.bytes.len().min(max);
        sink(&datagram.bytes[..n]);
        self.trace.add(&[0xd7, datagram.seq, n as u64]);
        self.stats.bytes_received += n as u64;
        Got::Datagram(n, datagram.bytes.len(), datagram.from)
    }
}

impl Sim {
    /// A datagram socket bound to `addr` (port 0: a free port is chosen), and its address:
    /// [`crate::Io::send_to`], [`crate::Io::recv_from`], [`crate::Io::sendmsg`] and
    /// [`crate::Io::recvmsg`] work on it as on a UDP socket (no `connect`, no descriptor
    /// passing). Each datagram has its own latency, never arriving before one sent earlier to
    /// the same socket; [`crate::sim::Faults`]`::datagram_loss`, `datagram_duplicate` and
    /// `datagram_reorder` lose, repeat or hold back some.
    ///
    /// # Errors
    /// `EADDRINUSE` if `addr` is bound; `EMFILE` past `SimOptions::descriptors_max`.
    pub fn udp_bind(&self, addr: SocketAddr) -> io::Result<(OwnedFd, SocketAddr)> {
        let mut world = self.world.borrow_mut();
        let id = world.udp_bind(addr).map_err(io::Error::from_raw_os_error)?;
        let bound = world.udp_addr(id);
        match world.new_fd(Obj::Datagram(id)) {
            Ok(fd) => Ok((fd, bound)),
            Err(errno) => {
                world.udp_close(id);
                Err(io::Error::from_raw_os_error(errno))
            }
        }
    }
}
