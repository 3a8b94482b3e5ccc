//! `loadgen`: drives an echo server over `--connections` TCP connections, each sending
//! `--size`-byte messages with `--depth` of them in flight, for `--duration` seconds after a
//! `--warmup`, and verifies every echoed byte (a wrong byte ends the run as failed, never as
//! a number). Reports messages per second and round-trip latency percentiles, as one line of
//! `key=value` pairs on stdout.
//!
//! Plain threads with blocking sockets, the connections split over `--threads`: each thread
//! writes the next message on each of its connections, then reads each echo back, so every
//! connection has `depth` messages in flight. Simple enough not to be the bottleneck of a
//! one-core server on the other cores.
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

/// Echo load: messages/s and latency, every byte checked.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Cli {
    /// The echo server's address.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections, opened before the run.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// What one thread measured.
#[derive(Default)]
struct Tally {
    messages: u64,
    latencies_ns: Vec<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), String> {
    if cli.connections == 0 || cli.size == 0 || cli.depth == 0 || cli.threads == 0 {
        return Err("--connections, --size, --depth and --threads must be at least 1".into());
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for thread in 0..cli.threads {
        let count = (thread..cli.connections).step_by(cli.threads).count();
        let mut streams = Vec::with_capacity(count);
        for _ in 0..count {
            let stream =
                TcpStream::connect(cli.addr).map_err(|e| format!("connect {}: {e}", cli.addr))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            streams.push(stream);
        }
        let (size, depth) = (cli.size, cli.depth);
        let (measuring, stop) = (Arc::clone(&measuring), Arc::clone(&stop));
        handles.push(std::thread::spawn(move || {
            drive(streams, size, depth, &measuring, &stop)
        }));
    }
    std::thread::sleep(Duration::from_secs_f64(cli.warmup));
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(cli.duration));
    stop.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed().as_secs_f64();
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle.join().map_err(|_| "a client thread panicked")??;
        total.messages += tally.messages;
        total.latencies_ns.extend(tally.latencies_ns);
    }
    total.latencies_ns.sort_unstable();
    let percentile = |p: f64| -> f64 {
        let lat = &total.latencies_ns;
        if lat.is_empty() {
            return 0.0;
        }
        let at = ((lat.len() as f64 * p) as usize).min(lat.len() - 1);
        lat[at] as f64 / 1000.0
    };
    println!(
        "messages={} msgs_per_s={:.0} p50_us={:.1} p99_us={:.1} p999_us={:.1} errors=0",
        total.messages,
        total.messages as f64 / elapsed,
        percentile(0.50),
        percentile(0.99),
        percentile(0.999),
    );
    Ok(())
}

/// One thread's connections, in lockstep: each round writes the next message on every
/// connection, then reads every echo back and checks it.
fn drive(
    mut streams: Vec<TcpStream>,
    size: usize,
    depth: usize,
    measuring: &AtomicBool,
    stop: &AtomicBool,
) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let mut sent: Vec<u64> = vec![0; streams.len()];
    let mut message = vec![0_u8; size];
    let mut echoed = vec![0_u8; size];
    let mut started: Vec<Vec<Instant>> = vec![Vec::with_capacity(depth); streams.len()];
    // Fill the pipelines.
    for (i, stream) in streams.iter_mut().enumerate() {
        for _ in 0..depth {
            send_next(stream, &mut message, i, &mut sent[i], &mut started[i])?;
        }
    }
    let mut received: Vec<u64> = vec![0; streams.len()];
    while !stop.load(Ordering::Relaxed) {
        for (i, stream) in streams.iter_mut().enumerate() {
            stream
                .read_exact(&mut echoed)
                .map_err(|e| format!("receive: {e}"))?;
            fill(&mut message, i, received[i]);
            if echoed != message {
                return Err(format!(
                    "connection {i}: a wrong byte in message {}",
                    received[i]
                ));
            }
            received[i] += 1;
            let began = started[i].remove(0);
            if measuring.load(Ordering::Relaxed) {
                tally.messages += 1;
                tally.latencies_ns.push(began.elapsed().as_nanos() as u64);
            }
            send_next(stream, &mut message, i, &mut sent[i], &mut started[i])?;
        }
    }
    Ok(tally)
}

/// Sends connection `conn`'s next message and notes when it left.
fn send_next(
    stream: &mut TcpStream,
    message: &mut [u8],
    conn: usize,
    sent: &mut u64,
    started: &mut Vec<Instant>,
) -> Result<(), String> {
    fill(message, conn, *sent);
    stream
        .write_all(message)
        .map_err(|e| format!("send: {e}"))?;
    started.push(Instant::now());
    *sent += 1;
    Ok(())
}

/// Message `n` of connection `conn`: bytes that differ between connections and messages.
fn fill(message: &mut [u8], conn: usize, n: u64) {
    for (k, byte) in message.iter_mut().enumerate() {
        *byte = (conn as u64 * 31 + n * 7 + k as u64) as u8;
    }
}
