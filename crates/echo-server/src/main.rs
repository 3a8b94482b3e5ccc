//! `echo-server`: a thread-per-core TCP echo server on `dispatch-net`. One loop and one
//! `SO_REUSEPORT` listener per thread; every byte echoed in order; a client that does not
//! read stops being read; idle connections time out; SIGINT or SIGTERM stops it with a
//! summary. With `--udp`, each thread also echoes datagrams on a UDP socket of its own
//! (`SO_REUSEPORT`) bound to the same port number.
//!
//! ```text
//! cargo run --release -p dispatch-echo -- --listen 127.0.0.1:7878 --udp
//! nc 127.0.0.1 7878
//! nc -u 127.0.0.1 7878
//! ```
#![forbid(unsafe_code)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use dispatch_echo::{ThreadOptions, ThreadSummary};
use dispatch_loop::BackendKind;
use dispatch_net::ListenOptions;
use signal_hook::consts::{SIGINT, SIGTERM};

/// A TCP echo server on io_uring, epoll or kqueue: every byte a client sends comes back, in
/// order. Stops on SIGINT or SIGTERM, printing a summary.
#[derive(Debug, Parser)]
#[command(name = "echo-server", version)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Threads, each with its own loop and listener (SO_REUSEPORT); default: available cores.
    #[arg(long)]
    threads: Option<usize>,
    /// The I/O backend: auto picks io_uring and falls back to epoll where io_uring is
    /// blocked or missing (Linux), kqueue on FreeBSD and macOS.
    #[arg(long, value_enum, default_value = "auto")]
    backend: Backend,
    /// Connections open at once (all threads together); more are closed at once, counted.
    #[arg(long, default_value_t = 10_000)]
    max_connections: u32,
    /// Bytes per receive buffer: the most one receive takes in. Buffers come from a pool
    /// per thread and are held only while data is being echoed.
    #[arg(long, default_value_t = 16 * 1024)]
    buffer_size: u32,
    /// Seconds without progress after which a connection is closed; 0 for never.
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
    /// io_uring features to do without, comma-separated (pbuf-ring, multishot, ext-arg):
    /// for testing the fallbacks older kernels get.
    #[arg(long, value_delimiter = ',')]
    uring_mask: Vec<UringFeature>,
    /// io_uring batch wait: a turn with nothing to do waits up to this many microseconds
    /// for --batch-events completions (Linux 6.12+; elsewhere it waits for the first one
    /// only), so that one syscall serves many messages. A wait that gathers no more than one
    /// arrival is not tried again for a while, so a lone client's round trips are not held
    /// up. 0 turns it off (docs/BENCHMARKS.md has both).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    batch_wait_us: u32,
    /// io_uring batch wait: how many completions a waiting turn gathers at most (at least 1).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    batch_events: u32,
    /// Also echo UDP on the same port number: each datagram goes back to its sender. One
    /// longer than --buffer-size is counted as truncated and not echoed.
    #[arg(long)]
    udp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    Auto,
    IoUring,
    Epoll,
    Kqueue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum UringFeature {
    PbufRing,
    Multishot,
    ExtArg,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo-server: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let threads = match cli.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(threads) => threads,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if cli.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let backend = match cli.backend {
        Backend::Auto => None,
        Backend::IoUring => Some(BackendKind::IoUring),
        Backend::Epoll => Some(BackendKind::Epoll),
        Backend::Kqueue => Some(BackendKind::Kqueue),
    };
    let (listeners, udp_sockets) = bind(cli.listen, threads, cli.udp)?;
    let local = listeners[0]
        .local_addr()
        .context("reading the bound address")?;
    // Each thread's table has a quarter more than its share: the kernel's spread over the
    // SO_REUSEPORT listeners is uneven, and a count shared by the threads keeps the total to
    // --max-connections exactly.
    let share = cli.max_connections.div_ceil(threads as u32);
    // Small limits get the whole limit in every table (cheap, and no spread can refuse
    // early).
    let per_thread = share
        .saturating_add(share / 4)
        .max(cli.max_connections.min(64))
        .min(cli.max_connections);
    let options: Vec<ThreadOptions> = (0..threads)
        .map(|index| ThreadOptions {
            index,
            backend,
            connections_max: per_thread,
            open_max: cli.max_connections,
            buffer_size: cli.buffer_size,
            idle_timeout_ns: cli.idle_timeout.saturating_mul(1_000_000_000),
            mask_pbuf_ring: cli.uring_mask.contains(&UringFeature::PbufRing),
            mask_multishot: cli.uring_mask.contains(&UringFeature::Multishot),
            mask_ext_arg: cli.uring_mask.contains(&UringFeature::ExtArg),
            batch_events: cli.batch_events,
            batch_wait_us: cli.batch_wait_us,
            udp: cli.udp,
        })
        .collect();
    let summaries = serve_threads(options, listeners, udp_sockets, local)?;
    print_summary(&summaries, cli.udp);
    Ok(())
}

/// Binds a port taken for TCP again this many times when UDP finds it taken, where the
/// port was left to the kernel (port 0): the kernel picks TCP and UDP ports apart.
const BIND_TRIES: u32 = 16;

/// One listener per thread on `addr` (the first picks the port when `addr`'s is 0), and
/// with `udp` one UDP socket per thread on the same port number.
fn bind(
    addr: SocketAddr,
    threads: usize,
    udp: bool,
) -> anyhow::Result<(Vec<TcpListener>, Vec<UdpSocket>)> {
    let mut tries = 0;
    loop {
        tries += 1;
        let listeners = bind_tcp(addr, threads)?;
        if !udp {
            return Ok((listeners, Vec::new()));
        }
        let local = listeners[0].local_addr()?;
        match bind_udp(local, threads) {
            Ok(sockets) => return Ok((listeners, sockets)),
            Err(error)
                if addr.port() == 0
                    && tries < BIND_TRIES
                    && error.kind() == std::io::ErrorKind::AddrInUse => {}
            Err(error) => return Err(error.into()),
        }
    }
}

fn bind_tcp(addr: SocketAddr, threads: usize) -> anyhow::Result<Vec<TcpListener>> {
    let first = dispatch_net::listen(addr, &ListenOptions::new())?;
    let local = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(dispatch_net::listen(local, &ListenOptions::new())?);
    }
    Ok(listeners)
}

fn bind_udp(addr: SocketAddr, threads: usize) -> std::io::Result<Vec<UdpSocket>> {
    (0..threads)
        .map(|_| dispatch_net::bind_udp(addr, &ListenOptions::new()))
        .collect()
}

/// Starts a thread per listener, prints `listening on ADDR` once every loop runs, waits for
/// SIGINT or SIGTERM, stops the loops and collects their summaries.
fn serve_threads(
    options: Vec<ThreadOptions>,
    listeners: Vec<TcpListener>,
    udp_sockets: Vec<UdpSocket>,
    local: SocketAddr,
) -> anyhow::Result<Vec<ThreadSummary>> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing the SIGINT and SIGTERM handlers")?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    let open = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut udp_sockets = udp_sockets.into_iter();
    for (thread, listener) in options.into_iter().zip(listeners) {
        let udp = udp_sockets.next();
        let ready = ready_tx.clone();
        let open = std::sync::Arc::clone(&open);
        handles.push(std::thread::spawn(move || {
            let (mut io, mut echo) = match dispatch_echo::new_loop(&thread, open) {
                Ok(pair) => pair,
                Err(error) => {
                    let _ = ready.send(Err(format!("thread {}: {error}", thread.index)));
                    return None;
                }
            };
            let _ = ready.send(Ok(dispatch_echo::stopper(&io)));
            match dispatch_echo::serve(&mut io, &mut echo, listener, udp, 800_000_000) {
                Ok(summary) => Some(summary),
                Err(error) => {
                    eprintln!("echo-server: thread {}: {error}", thread.index);
                    None
                }
            }
        }));
    }
    drop(ready_tx);
    let mut wakers = Vec::new();
    let mut failure = None;
    // One message a thread: its waker, or why its loop could not start.
    for ready in ready_rx.iter().take(handles.len()) {
        match ready {
            Ok(waker) => wakers.push(waker),
            Err(error) => failure = Some(error),
        }
    }
    if failure.is_none() {
        println!("listening on {local}");
        // Flushed at once: a supervisor or test reads it to know the server is up.
        std::io::Write::flush(&mut std::io::stdout())?;
        signals.forever().next();
    }
    for waker in &wakers {
        waker.wake().context("stopping a loop")?;
    }
    let mut summaries = Vec::new();
    for handle in handles {
        if let Some(summary) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a thread panicked"))?
        {
            summaries.push(summary);
        }
    }
    if let Some(error) = failure {
        bail!("{error}");
    }
    Ok(summaries)
}

fn print_summary(summaries: &[ThreadSummary], udp: bool) {
    let sum = |f: fn(&ThreadSummary) -> u64| summaries.iter().map(f).sum::<u64>();
    let messages = sum(|s| s.net.messages);
    let syscalls = sum(|s| s.io.syscalls);
    let per_message = if messages == 0 {
        0.0
    } else {
        syscalls as f64 / messages as f64
    };
    let refused_shared = sum(|s| s.refused);
    println!("connections: {}", sum(|s| s.net.accepted) - refused_shared);
    println!("refused: {}", sum(|s| s.net.refused) + refused_shared);
    println!("bytes: {}", sum(|s| s.net.bytes_sent));
    println!("messages: {messages}");
    println!("syscalls: {syscalls}");
    println!("syscalls per message: {per_message:.3}");
    println!("pool waits: {}", sum(|s| s.io.pool_waits));
    println!("idle timeouts: {}", sum(|s| s.net.idle_timeouts));
    if udp {
        // Datagrams apart from the TCP counts above.
        println!("udp datagrams: {}", sum(|s| s.udp.received));
        println!("udp echoed: {}", sum(|s| s.udp.sent));
        println!("udp truncated: {}", sum(|s| s.udp.truncated));
        println!("udp waited for a message: {}", sum(|s| s.udp.waited));
        let errors = sum(|s| s.udp.send_errors + s.udp.recv_errors + s.udp.slot_shortages);
        println!("udp errors: {errors}");
    }
}
