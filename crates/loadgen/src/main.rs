//! `loadgen`: drives an echo server over `--connections` TCP connections, each sending
//! `--size`-byte messages with `--depth` of them in flight, for `--duration` seconds after a
//! `--warmup`, and verifies every echoed byte (a wrong byte is an error, and a run with errors
//! ends as failed, never as a number). Reports messages per second and round-trip latency
//! percentiles (p50, p99, p99.9) as one line of `key=value` pairs on stdout. `--churn`
//! measures connections per second instead: connect, one message echoed and checked, close.
//!
//! Plain threads with blocking sockets, the connections split over `--threads`: each thread
//! visits its connections in turn, reads what has come back (at least one whole message),
//! checks it, and sends as many new messages as it took in, in one write, so every
//! connection keeps `depth` messages in flight and a message costs the generator at most one
//! read and one write. Simple enough not to be the bottleneck of a one-core server.
//!
//! With `--control`, the benchmark harness (`cargo xtask bench`) times the phases itself
//! through standard input, one command a line; each is answered on stdout at once, so the
//! harness can sample the server's CPU time at the same instants:
//! - `mark`: `mark messages=N errors=E ns=T` (messages verified since the start, and the
//!   nanoseconds since the start);
//! - `start` / `end`: the same answer, and latencies are recorded between them;
//! - `stop` (or end of input): the threads stop and the final line is printed.
//!
//! `--duration` still bounds the run then: past it the threads stop on their own.
//!
//! `--udp` drives a UDP echo server instead: `--connections` client sockets, each connected
//! to the server with `--depth` datagrams of `--size` bytes in flight, every echo checked
//! (its flow, its number, every byte; see `datagram.rs`). A datagram not echoed within
//! `--loss-timeout-ms` is counted in `lost=` (marks and the final line) and replaced; loss
//! does not fail the run, a wrong echo does.
#![forbid(unsafe_code)]

mod datagram;
mod drive;
mod report;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::drive::{Load, Shared};
use crate::report::Window;

/// Echo load: messages/s and latency, every byte checked.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Cli {
    /// The echo server's address (loopback only: this is a benchmark's generator).
    #[arg(long)]
    addr: SocketAddr,
    /// Connections, opened before the run (ignored with --churn).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Seconds measured (with --control: the most the whole run may last).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds run before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Client threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Connect/close churn: each thread connects, has one message echoed, closes, again;
    /// reports connections per second (`msgs_per_s` then counts connections).
    #[arg(long, conflicts_with = "udp")]
    churn: bool,
    /// UDP: each connection is a connected UDP socket, each message a datagram (--size from
    /// 16 to 65507: a flow id and a sequence number open each); loss is counted, not fatal.
    #[arg(long)]
    udp: bool,
    /// With --udp: milliseconds after which a datagram not echoed is counted lost.
    #[arg(long, default_value_t = 200)]
    loss_timeout_ms: u64,
    /// Phases timed by commands on standard input (see the crate's docs).
    #[arg(long)]
    control: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the load; `Ok(false)` when any message came back wrong or not at all.
fn run(cli: &Cli) -> Result<bool, String> {
    if cli.connections == 0 || cli.size == 0 || cli.depth == 0 || cli.threads == 0 {
        return Err("--connections, --size, --depth and --threads must be at least 1".into());
    }
    if !cli.addr.ip().is_loopback() {
        return Err(format!("{}: only loopback addresses are driven", cli.addr));
    }
    let udp_sizes = datagram::HEADER_LEN..=datagram::SIZE_MAX;
    if cli.udp && !udp_sizes.contains(&cli.size) {
        return Err(format!(
            "--udp takes --size from {} to {}",
            udp_sizes.start(),
            udp_sizes.end()
        ));
    }
    if cli.udp && cli.loss_timeout_ms == 0 {
        return Err("--loss-timeout-ms must be at least 1".into());
    }
    if !(cli.duration > 0.0 && cli.duration < 3600.0 && cli.warmup >= 0.0) {
        return Err("--duration must be in (0, 3600) seconds, --warmup not negative".into());
    }
    let load = Load {
        addr: cli.addr,
        size: cli.size,
        depth: cli.depth,
        churn: cli.churn,
        udp: cli.udp,
        loss_timeout: Duration::from_millis(cli.loss_timeout_ms),
        deadline: Instant::now() + Duration::from_secs_f64(cli.duration + cli.warmup + 30.0),
    };
    let connections = if cli.churn { 0 } else { cli.connections };
    let shared = Shared::start(&load, connections, cli.threads)?;
    println!("connected");
    let window = if cli.control {
        controlled(&shared, Duration::from_secs_f64(cli.duration))
    } else {
        std::thread::sleep(Duration::from_secs_f64(cli.warmup));
        let start = shared.mark(true);
        std::thread::sleep(Duration::from_secs_f64(cli.duration));
        let end = shared.mark(false);
        Window { start, end }
    };
    let outcome = shared.finish()?;
    Ok(report::print(&window, outcome))
}

/// Follows the harness's commands until `stop`, end of input, or `limit` (then the window
/// closes where it stands).
fn controlled(shared: &Shared, limit: Duration) -> Window {
    let started = Instant::now();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    // A thread reads standard input so that the time limit still holds when no line comes.
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut start = shared.mark(false);
    let mut end = None;
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let line = match lines_rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => break,
        };
        let mark = match line.trim() {
            "mark" => shared.mark_keep(),
            "start" => {
                start = shared.mark(true);
                start
            }
            "end" => {
                let mark = shared.mark(false);
                end = Some(mark);
                mark
            }
            "stop" => break,
            other => {
                eprintln!("loadgen: unknown command {other:?} (mark, start, end, stop)");
                continue;
            }
        };
        report::print_mark(&mark);
    }
    let end = end.unwrap_or_else(|| shared.mark(false));
    Window { start, end }
}
