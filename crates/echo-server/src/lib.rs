//! The echo server's connection logic and one server thread, apart from the command line so
//! that the same code runs in the binary, its tests, and (later) the simulator.
#![forbid(unsafe_code)]

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dispatch_loop::{BackendKind, Io, Msg, Options, PoolBuf, PoolOptions, Stats, Tag, Waker};
use dispatch_net::{
    ConnId, Handler, Net, NetOptions, NetStats, Reply, Udp, UdpHandler, UdpOptions, UdpStats,
};

/// Messages each thread's UDP socket keeps receiving (`--udp`): datagrams taken in per turn
/// at most, and echoes in flight at once.
pub const UDP_RECVS_MAX: u32 = 32;

/// The echo: every byte received goes back on the same connection, in order, from the pool
/// buffer it arrived in (no copy). One reply in flight per connection: a client that does
/// not read stops being read.
pub struct Echo {
    net: Net,
    /// The UDP echo (`--udp`); never served otherwise.
    udp: Udp,
    /// Connections open across all threads, against `open_max`: the kernel spreads
    /// connections over the threads' listeners unevenly, so each thread's table has room to
    /// spare and this count keeps the total exact.
    open: Arc<AtomicU32>,
    open_max: u32,
    /// Per table entry: whether its connection counts in `open` (refused ones do not).
    counted: Vec<bool>,
    /// Connections closed at once because all threads together were at `open_max`.
    refused: u64,
}

impl std::fmt::Debug for Echo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Echo")
            .field("net", &self.net)
            .field("open_max", &self.open_max)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl Echo {
    /// An echo server with `net`'s limits, sharing `open` (of at most `open_max`) with the
    /// other threads.
    pub fn new(options: &NetOptions, open: Arc<AtomicU32>, open_max: u32) -> Echo {
        Echo {
            net: Net::new(options),
            udp: Udp::new(&UdpOptions::new(1, 1)),
            open,
            open_max,
            counted: vec![false; options.connections_max as usize],
            refused: 0,
        }
    }
}

impl Handler for Echo {
    fn net(&mut self) -> &mut Net {
        &mut self.net
    }

    fn on_open(&mut self, io: &mut Io<Self>, conn: ConnId) {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.open_max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            self.refused += 1;
            return dispatch_net::close(self, io, conn);
        }
        self.counted[conn.index() as usize] = true;
    }

    fn on_data(&mut self, io: &mut Io<Self>, conn: ConnId, data: PoolBuf) {
        // Err: the connection is closing; dropping the buffer gives it back.
        let _ = dispatch_net::send(self, io, conn, data);
    }

    fn on_close(&mut self, _: &mut Io<Self>, conn: ConnId) {
        if std::mem::take(&mut self.counted[conn.index() as usize]) {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The UDP echo: every datagram goes back to its sender, in the message it arrived in (no
/// copy). One longer than `--buffer-size` is counted as truncated and not echoed.
impl UdpHandler for Echo {
    fn udp(&mut self) -> &mut Udp {
        &mut self.udp
    }

    fn on_datagram(&mut self, _: &mut Io<Self>, _: &mut Msg, from: SocketAddr) -> Reply {
        Reply::SendTo(from)
    }
}

/// What one server thread needs.
#[derive(Debug, Clone, Copy)]
pub struct ThreadOptions {
    /// The thread's number, for its log lines.
    pub index: usize,
    /// The backend to force, or `None` for automatic selection.
    pub backend: Option<BackendKind>,
    /// Connections this thread's table holds at once (room to spare: see `open_max`).
    pub connections_max: u32,
    /// Connections open at once across all threads (`--max-connections`).
    pub open_max: u32,
    /// Bytes per receive buffer.
    pub buffer_size: u32,
    /// Idle timeout; 0 for none.
    pub idle_timeout_ns: u64,
    /// io_uring features to do without (to test the fallbacks): provided-buffer rings,
    /// multishot, `EXT_ARG`.
    pub mask_pbuf_ring: bool,
    /// See `mask_pbuf_ring`.
    pub mask_multishot: bool,
    /// See `mask_pbuf_ring`.
    pub mask_ext_arg: bool,
    /// `UringOptions::batch_events`: completions a blocking turn waits for (io_uring).
    pub batch_events: u32,
    /// `UringOptions::batch_wait_us`: how long at most (io_uring on Linux 6.12+; 0: none).
    pub batch_wait_us: u32,
    /// Whether the thread serves UDP too (`--udp`), with [`udp_options`].
    pub udp: bool,
}

/// A thread's totals, for the summary.
#[derive(Debug, Clone, Copy)]
pub struct ThreadSummary {
    /// The connection layer's counters.
    pub net: NetStats,
    /// Connections refused because all threads together were at the limit (beyond those
    /// the thread's own table refused, in `net.refused`).
    pub refused: u64,
    /// The UDP echo's counters (all 0 without `--udp`).
    pub udp: UdpStats,
    /// The loop's counters.
    pub io: Stats,
}

/// The UDP echo's limits for a thread: [`UDP_RECVS_MAX`] messages of `buffer_size` bytes.
pub fn udp_options(thread: &ThreadOptions) -> UdpOptions {
    UdpOptions::new(UDP_RECVS_MAX, thread.buffer_size)
}

/// The loop's options for a thread: slots for every connection, a pool of receive buffers
/// (up to 1024 per thread: receives wait for a buffer beyond that, they do not fail; pool
/// memory a loop never touches costs no RSS).
pub fn loop_options(thread: &ThreadOptions, net: &NetOptions) -> Options {
    let udp_ops = match thread.udp {
        true => udp_options(thread).ops_max(),
        false => 0,
    };
    let mut options = Options::new(net.ops_max() + udp_ops);
    options.backend = thread.backend;
    // With `--udp` the buffers also hold a datagram of `buffer_size` bytes after the header
    // and sender its receive writes first (`UdpOptions::pool_buffer_size`), so a TCP
    // receive may then take up to that many more bytes.
    let buffer_size = match thread.udp {
        true => udp_options(thread).pool_buffer_size(),
        false => thread.buffer_size,
    };
    options.pool = PoolOptions::new(thread.connections_max.clamp(16, 1024), buffer_size);
    options.uring.pbuf_ring = !thread.mask_pbuf_ring;
    options.uring.multishot = !thread.mask_multishot;
    options.uring.ext_arg = !thread.mask_ext_arg;
    options.uring.batch_events = thread.batch_events;
    options.uring.batch_wait_us = thread.batch_wait_us;
    options
}

const STOP_TAG: Tag = u64::MAX - 1;

/// A loop for one thread, created on that thread (a loop is not `Send`); its waker, for the
/// stop; says which backend runs (and why, after a fallback) on stderr.
///
/// # Errors
/// The loop cannot be created (the error says why).
pub fn new_loop(
    thread: &ThreadOptions,
    open: Arc<AtomicU32>,
) -> Result<(Io<Echo>, Echo), dispatch_loop::InitError> {
    let mut net = NetOptions::new(thread.connections_max);
    net.idle_timeout_ns = thread.idle_timeout_ns;
    let io: Io<Echo> = Io::new(&loop_options(thread, &net))?;
    let stats = io.stats();
    let masked: Vec<&str> = [
        (thread.mask_pbuf_ring, "pbuf-ring"),
        (thread.mask_multishot, "multishot"),
        (thread.mask_ext_arg, "ext-arg"),
    ]
    .into_iter()
    .filter_map(|(masked, name)| masked.then_some(name))
    .collect();
    let mut line = format!("thread {}: backend {}", thread.index, stats.backend);
    if let Some(fallback) = stats.fallback {
        line += &format!(" ({fallback})");
    }
    if stats.backend == BackendKind::IoUring && !masked.is_empty() {
        line += &format!(" (without {})", masked.join(", "));
    }
    match (stats.batch_wait_us, thread.batch_wait_us) {
        _ if stats.backend != BackendKind::IoUring => {}
        (0, 0) => {}
        (0, _) => line += " (no batch wait: it needs io_uring with EXT_ARG, Linux 6.12+)",
        (us, _) => line += &format!(" (batch wait {us} µs, {} events)", thread.batch_events),
    }
    eprintln!("{line}");
    let mut echo = Echo::new(&net, open, thread.open_max);
    if thread.udp {
        echo.udp = Udp::new(&udp_options(thread));
    }
    Ok((io, echo))
}

/// Serves `listener` (and `udp`, a UDP socket for `--udp`, on a loop made with
/// `ThreadOptions::udp`) on `io` until `waker` is woken (the stop), then stops accepting
/// and receiving, closes every connection and the UDP socket (waiting at most `drain_ns`
/// for the closes), and returns the totals.
///
/// # Errors
/// An error from the loop's syscalls.
pub fn serve(
    io: &mut Io<Echo>,
    echo: &mut Echo,
    listener: TcpListener,
    udp: Option<UdpSocket>,
    drain_ns: u64,
) -> io::Result<ThreadSummary> {
    io.wait_wakeup(STOP_TAG, on_stop)
        .map_err(|error| io::Error::other(error.to_string()))?;
    dispatch_net::serve(echo, io, listener)?;
    if let Some(socket) = udp {
        dispatch_net::serve_udp(echo, io, socket)?;
    }
    // Returns when on_stop calls Io::stop.
    io.run_for_ns(echo, u64::MAX)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_nanos(drain_ns);
    let busy = |echo: &Echo| echo.net.connections() > 0 || !echo.udp.is_closed();
    while busy(echo) && std::time::Instant::now() < deadline {
        io.run_for_ns(echo, 10_000_000)?;
    }
    // The closes scheduled last, and the cancelled accept, finish here.
    io.run_for_ns(echo, 0)?;
    Ok(ThreadSummary {
        refused: echo.refused,
        net: echo.net.stats(),
        udp: echo.udp.stats(),
        io: io.stats(),
    })
}

fn on_stop(echo: &mut Echo, io: &mut Io<Echo>, _: Tag, _: io::Result<u64>) {
    dispatch_net::stop(echo, io);
    dispatch_net::stop_udp(echo, io);
    io.stop();
}

/// The loop's waker, which ends [`serve`].
pub fn stopper(io: &Io<Echo>) -> Waker {
    io.waker()
}
