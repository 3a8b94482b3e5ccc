//! `--udp`: each connection is a UDP socket of its own, connected to the server, keeping
//! `depth` datagrams in flight. Datagram `n` of flow `id` carries `id` and `n` (little
//! endian, 8 bytes each) and then the same byte pattern as the TCP messages, so every echo is
//! checked whole: its length, that it belongs to this flow, that it was sent and is still
//! awaited, and every byte. A wrong echo stops the thread with an error, as over TCP.
//!
//! Loss is counted, not fatal: a datagram whose echo has not come back `loss_timeout` after it
//! left is counted lost and replaced by a new one, so the flow keeps its depth. An echo that
//! arrives after its datagram was counted lost is checked like any other, then dropped: it
//! was sent, so it is no error, and it was counted already.
//!
//! The visit is the TCP one: each thread takes its flows in turn, blocks on the flow until one
//! echo comes back (or the oldest datagram's time runs out), and sends one new datagram for
//! each echoed or lost, so a datagram costs the generator one receive and one send.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::drive::{matches_from, pattern, Flags, Load, Tally, IO_TIMEOUT};

/// The flow id and the sequence number that open every datagram.
pub const HEADER_LEN: usize = 16;

/// The largest UDP payload over IPv4.
pub const SIZE_MAX: usize = 65_507;

/// One client socket: its id, the next sequence number, and the datagrams awaited, oldest
/// first, with when each left.
pub struct Flow {
    id: u64,
    socket: UdpSocket,
    next: u64,
    in_flight: VecDeque<(u64, Instant)>,
}

/// What one receive took in.
struct Took {
    echoed: u64,
    lost: u64,
}

impl Flow {
    /// A socket bound to an ephemeral loopback port and connected to the server, so that the
    /// kernel delivers to it only what the server sends back.
    pub fn open(load: &Load, id: usize) -> Result<Flow, String> {
        assert!(HEADER_LEN <= load.size && load.size <= SIZE_MAX);
        let local: SocketAddr = if load.addr.is_ipv4() {
            "127.0.0.1:0".parse().expect("an address")
        } else {
            "[::1]:0".parse().expect("an address")
        };
        let what = |e: std::io::Error| format!("flow {id}: {e}");
        let socket = UdpSocket::bind(local).map_err(what)?;
        socket.connect(load.addr).map_err(what)?;
        socket
            .set_read_timeout(Some(load.loss_timeout))
            .map_err(what)?;
        socket.set_write_timeout(Some(IO_TIMEOUT)).map_err(what)?;
        Ok(Flow {
            id: id as u64,
            socket,
            next: 0,
            in_flight: VecDeque::with_capacity(load.depth),
        })
    }

    /// Sends the flow's next datagram and notes when it left.
    fn send(&mut self, datagram: &mut [u8]) -> Result<(), String> {
        fill(datagram, self.id, self.next);
        let now = Instant::now();
        let sent = self
            .socket
            .send(datagram)
            .map_err(|e| format!("flow {}: send: {e}", self.id))?;
        if sent != datagram.len() {
            return Err(format!(
                "flow {}: sent {sent} of {} bytes",
                self.id,
                datagram.len()
            ));
        }
        self.in_flight.push_back((self.next, now));
        self.next += 1;
        Ok(())
    }

    /// Waits for one awaited echo, checks it, records its latency if `measuring`; counts
    /// lost every datagram awaited longer than `load.loss_timeout`. Returns once at least one
    /// datagram was echoed or lost.
    fn receive(
        &mut self,
        inbox: &mut [u8],
        load: &Load,
        measuring: bool,
        tally: &mut Tally,
    ) -> Result<Took, String> {
        // One byte more than a datagram, so that a longer echo shows as longer.
        assert!(load.size < inbox.len());
        loop {
            let echoed = match self.socket.recv(inbox) {
                Ok(n) => self.check(&inbox[..n], load.size)?,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
                Err(e) => return Err(format!("flow {}: receive: {e}", self.id)),
            };
            let now = Instant::now();
            let mut took = Took { echoed: 0, lost: 0 };
            if let Some(sent) = echoed {
                if measuring {
                    tally.latencies_ns.push((now - sent).as_nanos() as u64);
                }
                took.echoed = 1;
            }
            while let Some(&(_, sent)) = self.in_flight.front() {
                if now.duration_since(sent) < load.loss_timeout {
                    break;
                }
                self.in_flight.pop_front();
                took.lost += 1;
            }
            if 0 < took.echoed + took.lost {
                return Ok(took);
            }
        }
    }

    /// Checks an echo; returns when its datagram left, or `None` for a late echo of one
    /// already counted lost.
    fn check(&mut self, echo: &[u8], size: usize) -> Result<Option<Instant>, String> {
        let id = self.id;
        if echo.len() != size {
            return Err(format!(
                "flow {id}: an echo of {} bytes, not {size}",
                echo.len()
            ));
        }
        let word = |at: usize| u64::from_le_bytes(echo[at..at + 8].try_into().expect("8 bytes"));
        let (flow, n) = (word(0), word(8));
        if flow != id {
            return Err(format!("flow {id}: an echo of flow {flow}'s datagram {n}"));
        }
        if self.next <= n {
            return Err(format!("flow {id}: an echo of datagram {n}, never sent"));
        }
        if !matches_from(echo, HEADER_LEN, id, n) {
            return Err(format!("flow {id}: a wrong byte in datagram {n}"));
        }
        match self.in_flight.iter().position(|&(awaited, _)| awaited == n) {
            Some(k) => Ok(self.in_flight.remove(k).map(|(_, sent)| sent)),
            None => Ok(None),
        }
    }
}

/// Datagram `n` of flow `id`: the header, then the TCP messages' pattern.
fn fill(datagram: &mut [u8], id: u64, n: u64) {
    datagram[..8].copy_from_slice(&id.to_le_bytes());
    datagram[8..HEADER_LEN].copy_from_slice(&n.to_le_bytes());
    for (k, byte) in datagram.iter_mut().enumerate().skip(HEADER_LEN) {
        *byte = pattern(id, n, k);
    }
}

/// One thread's flows, visited in turn: each visit takes in one echo (or counts losses) and
/// sends as many new datagrams.
pub fn echo(
    mut flows: Vec<Flow>,
    load: &Load,
    thread: usize,
    flags: &Flags,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut datagram = vec![0_u8; load.size];
    let mut inbox = vec![0_u8; load.size + 1];
    for flow in &mut flows {
        for _ in 0..load.depth {
            flow.send(&mut datagram)?;
        }
    }
    let counter = &flags.counters[thread];
    while !flags.stop.load(Ordering::Relaxed) {
        for flow in &mut flows {
            let measuring = flags.measuring.load(Ordering::Relaxed);
            let took = flow.receive(&mut inbox, load, measuring, tally)?;
            counter.messages.fetch_add(took.echoed, Ordering::Relaxed);
            counter.lost.fetch_add(took.lost, Ordering::Relaxed);
            for _ in 0..took.echoed + took.lost {
                flow.send(&mut datagram)?;
            }
            debug_assert_eq!(flow.in_flight.len(), load.depth);
        }
        if Instant::now() > load.deadline {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_names_its_flow_and_number() {
        let mut datagram = vec![0_u8; 64];
        fill(&mut datagram, 7, 300);
        assert_eq!(u64::from_le_bytes(datagram[..8].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(datagram[8..16].try_into().unwrap()), 300);
        assert!(matches_from(&datagram, HEADER_LEN, 7, 300));
        assert!(!matches_from(&datagram, HEADER_LEN, 7, 301));
        datagram[40] ^= 1;
        assert!(!matches_from(&datagram, HEADER_LEN, 7, 300));
    }
}
