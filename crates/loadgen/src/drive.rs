//! The client threads: each drives its share of the connections (or churns connections)
//! until told to stop, counting verified messages in a counter of its own that the main
//! thread reads at each mark, and recording round-trip latencies while the window is open.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::datagram::{self, Flow};
use crate::report::{Mark, Outcome};

/// What every thread is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// The server.
    pub addr: SocketAddr,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub depth: usize,
    /// Connect, one message, close, again (instead of long-lived connections).
    pub churn: bool,
    /// UDP: each connection is a connected UDP socket, each message a datagram.
    pub udp: bool,
    /// UDP: a datagram whose echo has not come back after this long is counted lost.
    pub loss_timeout: Duration,
    /// The threads stop by themselves here, whatever the main thread does.
    pub deadline: Instant,
}

/// A thread's counts of verified messages and of datagrams lost, alone on their cache line
/// so that the threads never share one.
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct Counter {
    pub(crate) messages: AtomicU64,
    pub(crate) lost: AtomicU64,
}

/// What the threads share with the main thread.
pub(crate) struct Flags {
    /// Latencies are recorded while set.
    pub(crate) measuring: AtomicBool,
    /// The threads return when set.
    pub(crate) stop: AtomicBool,
    /// Threads that stopped on an error (a wrong byte, a failed read or write, a timeout).
    errors: AtomicU64,
    pub(crate) counters: Vec<Counter>,
}

/// What one thread hands back.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) latencies_ns: Vec<u64>,
    error: Option<String>,
}

/// What one thread drives.
enum Work {
    Streams(Vec<(usize, TcpStream)>),
    Datagrams(Vec<Flow>),
    Churn,
}

/// The running threads.
pub struct Shared {
    flags: Arc<Flags>,
    handles: Vec<JoinHandle<Tally>>,
    started: Instant,
}

/// How long a read or write may block before the run counts it as an error: a server that
/// stops answering fails the run instead of hanging it.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl Shared {
    /// Opens `connections` connections (none for churn), split round-robin over `threads`,
    /// and starts the threads.
    pub fn start(load: &Load, connections: usize, threads: usize) -> Result<Shared, String> {
        let flags = Arc::new(Flags {
            measuring: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            counters: (0..threads).map(|_| Counter::default()).collect(),
        });
        let mut handles = Vec::with_capacity(threads);
        for thread in 0..threads {
            let ids = (thread..connections).step_by(threads);
            let work = if load.udp {
                Work::Datagrams(
                    ids.map(|id| Flow::open(load, id))
                        .collect::<Result<_, _>>()?,
                )
            } else if load.churn {
                Work::Churn
            } else {
                let connected = ids.map(|id| Ok((id, connect(load.addr)?)));
                Work::Streams(connected.collect::<Result<_, String>>()?)
            };
            let (load, flags) = (*load, Arc::clone(&flags));
            handles.push(std::thread::spawn(move || {
                let mut tally = Tally::default();
                let result = match work {
                    Work::Churn => churn(thread, &load, &flags, &mut tally),
                    Work::Streams(streams) => echo(streams, &load, thread, &flags, &mut tally),
                    Work::Datagrams(flows) => {
                        datagram::echo(flows, &load, thread, &flags, &mut tally)
                    }
                };
                if let Err(error) = result {
                    flags.errors.fetch_add(1, Ordering::SeqCst);
                    tally.error = Some(error);
                }
                tally
            }));
        }
        Ok(Shared {
            flags,
            handles,
            started: Instant::now(),
        })
    }

    /// The counts now, with latencies recorded from now on while `measuring`.
    pub fn mark(&self, measuring: bool) -> Mark {
        self.flags.measuring.store(measuring, Ordering::SeqCst);
        self.mark_keep()
    }

    /// The counts now.
    pub fn mark_keep(&self) -> Mark {
        let counters = &self.flags.counters;
        Mark {
            messages: counters
                .iter()
                .map(|c| c.messages.load(Ordering::Relaxed))
                .sum(),
            lost: counters
                .iter()
                .map(|c| c.lost.load(Ordering::Relaxed))
                .sum(),
            errors: self.flags.errors.load(Ordering::SeqCst),
            ns: self.started.elapsed().as_nanos() as u64,
        }
    }

    /// Stops the threads and gathers their latencies and errors.
    pub fn finish(self) -> Result<Outcome, String> {
        self.flags.stop.store(true, Ordering::SeqCst);
        let mut outcome = Outcome::default();
        for handle in self.handles {
            let tally = handle.join().map_err(|_| "a client thread panicked")?;
            outcome.latencies_ns.extend(tally.latencies_ns);
            outcome.errors.extend(tally.error);
        }
        Ok(outcome)
    }
}

/// A connection with Nagle off and the run's I/O timeout.
fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// One long-lived connection: its stream, its counts, the bytes of a message not yet whole,
/// and when each message in flight left.
struct Conn {
    id: u64,
    stream: TcpStream,
    sent: u64,
    received: u64,
    inbox: Vec<u8>,
    have: usize,
    started: VecDeque<Instant>,
}

/// One thread's connections, visited in turn: each visit takes in at least one whole echo,
/// checks it, and sends as many new messages, in one write.
fn echo(
    streams: Vec<(usize, TcpStream)>,
    load: &Load,
    thread: usize,
    flags: &Flags,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut outbox = vec![0_u8; load.size * load.depth];
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .map(|(id, stream)| Conn {
            id: id as u64,
            stream,
            sent: 0,
            received: 0,
            inbox: vec![0_u8; load.size * load.depth],
            have: 0,
            started: VecDeque::with_capacity(load.depth),
        })
        .collect();
    for conn in &mut conns {
        send(conn, load.depth, load.size, &mut outbox)?;
    }
    let counter = &flags.counters[thread].messages;
    while !flags.stop.load(Ordering::Relaxed) {
        for conn in &mut conns {
            let n = receive(conn, load.size)?;
            let now = Instant::now();
            if flags.measuring.load(Ordering::Relaxed) {
                for began in conn.started.drain(..n) {
                    tally.latencies_ns.push((now - began).as_nanos() as u64);
                }
            } else {
                conn.started.drain(..n);
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
            send(conn, n, load.size, &mut outbox)?;
        }
        if Instant::now() > load.deadline {
            break;
        }
    }
    Ok(())
}

/// Reads until at least one whole echo is in, checks every whole one, keeps the rest of a
/// partial one; returns how many were whole.
fn receive(conn: &mut Conn, size: usize) -> Result<usize, String> {
    while conn.have < size {
        let n = match conn.stream.read(&mut conn.inbox[conn.have..]) {
            Ok(0) => return Err(format!("connection {}: closed by the server", conn.id)),
            Ok(n) => n,
            Err(e) => return Err(format!("connection {}: receive: {e}", conn.id)),
        };
        conn.have += n;
    }
    let whole = conn.have / size;
    if whole > conn.started.len() {
        return Err(format!("connection {}: more bytes than were sent", conn.id));
    }
    for k in 0..whole {
        let echoed = &conn.inbox[k * size..(k + 1) * size];
        if !matches(echoed, conn.id, conn.received) {
            return Err(format!(
                "connection {}: a wrong byte in message {}",
                conn.id, conn.received
            ));
        }
        conn.received += 1;
    }
    conn.inbox.copy_within(whole * size..conn.have, 0);
    conn.have -= whole * size;
    Ok(whole)
}

/// Sends the connection's next `n` messages in one write and notes when they left.
fn send(conn: &mut Conn, n: usize, size: usize, outbox: &mut [u8]) -> Result<(), String> {
    let bytes = &mut outbox[..n * size];
    for (k, message) in bytes.chunks_exact_mut(size).enumerate() {
        fill(message, conn.id, conn.sent + k as u64);
    }
    let now = Instant::now();
    conn.stream
        .write_all(bytes)
        .map_err(|e| format!("connection {}: send: {e}", conn.id))?;
    conn.started.extend(std::iter::repeat_n(now, n));
    conn.sent += n as u64;
    Ok(())
}

/// Connect, one message echoed and checked, close; again until stopped. A connection's
/// latency is the whole of it.
fn churn(thread: usize, load: &Load, flags: &Flags, tally: &mut Tally) -> Result<(), String> {
    let mut message = vec![0_u8; load.size];
    let mut echoed = vec![0_u8; load.size];
    let counter = &flags.counters[thread].messages;
    let mut n: u64 = 0;
    while !flags.stop.load(Ordering::Relaxed) && Instant::now() < load.deadline {
        let began = Instant::now();
        let mut stream = connect(load.addr)?;
        fill(&mut message, thread as u64, n);
        stream
            .write_all(&message)
            .map_err(|e| format!("churn: send: {e}"))?;
        stream
            .read_exact(&mut echoed)
            .map_err(|e| format!("churn: receive: {e}"))?;
        if !matches(&echoed, thread as u64, n) {
            return Err(format!("churn: a wrong byte in connection {n}"));
        }
        drop(stream);
        if flags.measuring.load(Ordering::Relaxed) {
            tally.latencies_ns.push(began.elapsed().as_nanos() as u64);
        }
        counter.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    Ok(())
}

/// The byte at offset `k` of message `n` of connection `conn`: bytes differ between
/// connections, messages and offsets, so a byte echoed twice, lost or misplaced is caught.
pub(crate) fn pattern(conn: u64, n: u64, k: usize) -> u8 {
    (conn.wrapping_mul(31) ^ n.wrapping_mul(7)).wrapping_add(k as u64 + (n >> 8)) as u8
}

/// Message `n` of connection `conn`.
fn fill(message: &mut [u8], conn: u64, n: u64) {
    for (k, byte) in message.iter_mut().enumerate() {
        *byte = pattern(conn, n, k);
    }
}

/// Whether `echoed` is message `n` of connection `conn`.
pub(crate) fn matches(echoed: &[u8], conn: u64, n: u64) -> bool {
    matches_from(echoed, 0, conn, n)
}

/// Whether `echoed` from offset `first` on is message `n` of connection `conn` there.
pub(crate) fn matches_from(echoed: &[u8], first: usize, conn: u64, n: u64) -> bool {
    echoed
        .iter()
        .enumerate()
        .skip(first)
        .all(|(k, &byte)| byte == pattern(conn, n, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_differ_between_connections_and_between_messages() {
        let message = |conn, n| {
            let mut m = vec![0_u8; 64];
            fill(&mut m, conn, n);
            m
        };
        assert_ne!(message(0, 0), message(1, 0));
        assert_ne!(message(0, 0), message(0, 1));
        assert_ne!(message(0, 1), message(0, 257));
        assert!(matches(&message(3, 9), 3, 9));
        let mut wrong = message(3, 9);
        wrong[63] ^= 1;
        assert!(!matches(&wrong, 3, 9));
    }
}
