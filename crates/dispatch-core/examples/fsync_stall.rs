//! How long a slow disk stalls the network on one loop: an echo client's latency while the
//! same loop writes hundreds of MiB to a file without syncing, then fsyncs it, with file
//! operations inline (`--workers 0`) or on worker threads (`Options::file_workers`). The
//! measurement behind `Options::file_workers`' default (docs/BENCHMARKS.md):
//!
//! ```text
//! cargo run --release -p dispatch-loop --example fsync_stall -- --backend epoll --workers 0
//! cargo run --release -p dispatch-loop --example fsync_stall -- --backend epoll --workers 2
//! ```
//!
//! The loop serves an echo over loopback TCP. A client thread sends a 64-byte ping every
//! `--interval-us` (1000) on a fixed schedule and times each reply from the moment the ping
//! was due, not from when it could be sent (a stalled loop delays every ping due during the
//! stall: the schedule keeps coordinated omission out of the figures). The loop idles for a
//! second (the baseline), then writes `--mib` (400) MiB in 1 MiB writes, one at a time,
//! then one `fsync`, then idles half a second more. Each ping is counted in the phase it
//! was due in. The file (`--file`, default `fsync-stall.tmp` in the working directory: run
//! it on the disk to measure, not on tmpfs) is synced before the run, so that no earlier
//! dirty pages join in, and removed after.
//!
//! Then the other side of the trade: what a hand-off to a worker costs a fast operation,
//! `--reads` (20,000) 4 KiB reads of a cached file, one at a time, timed per read.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dispatch_loop::{BackendKind, BufResult, Io, Options, Tag};

const PHASES: [&str; 4] = ["baseline", "writing", "fsync", "after"];
const MIB: usize = 1 << 20;

struct Args {
    backend: BackendKind,
    workers: u32,
    mib: u64,
    interval_us: u64,
    file: String,
    reads: u32,
}

fn parse_args() -> Args {
    let mut args = Args {
        backend: BackendKind::Epoll,
        workers: 0,
        mib: 400,
        interval_us: 1000,
        file: "fsync-stall.tmp".to_owned(),
        reads: 20_000,
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => args.backend = BackendKind::from_name(&value).expect("a backend"),
            "--workers" => args.workers = value.parse().expect("--workers N"),
            "--mib" => args.mib = value.parse().expect("--mib N"),
            "--interval-us" => args.interval_us = value.parse().expect("--interval-us N"),
            "--file" => args.file = value,
            "--reads" => args.reads = value.parse().expect("--reads N"),
            other => {
                panic!("unknown flag {other} (--backend --workers --mib --interval-us --file)")
            }
        }
    }
    args
}

/// What the loop's callbacks share.
struct Ctx {
    server: TcpStream,
    file: Option<OwnedFd>,
    mib_left: u64,
    offset: u64,
    started: Instant,
    /// When writing started, when the fsync started, when it ended.
    marks: [Option<Instant>; 3],
    echo_done: bool,
}

fn on_recv(ctx: &mut Ctx, io: &mut Io<Ctx>, _: Tag, (result, buf): BufResult) {
    match result {
        Ok(0) => ctx.echo_done = true,
        Ok(_) => drop(io.send(0, ctx.server.as_raw_fd(), buf, on_send).unwrap()),
        Err(error) => panic!("echo recv: {error}"),
    }
}

fn on_send(ctx: &mut Ctx, io: &mut Io<Ctx>, _: Tag, (result, mut buf): BufResult) {
    result.expect("echo send");
    buf.clear();
    io.recv(0, ctx.server.as_raw_fd(), buf, on_recv).unwrap();
}

fn on_baseline_over(ctx: &mut Ctx, io: &mut Io<Ctx>, _: Tag, result: std::io::Result<()>) {
    result.expect("timeout");
    ctx.marks[0] = Some(Instant::now());
    write_next(ctx, io, vec![0x5a; MIB]);
}

fn write_next(ctx: &mut Ctx, io: &mut Io<Ctx>, buf: Vec<u8>) {
    let fd = ctx.file.as_ref().expect("open").as_raw_fd();
    if ctx.mib_left == 0 {
        ctx.marks[1] = Some(Instant::now());
        io.fsync(0, fd, on_fsync).unwrap();
        return;
    }
    io.write(0, fd, buf, ctx.offset, on_write).unwrap();
}

fn on_write(
    ctx: &mut Ctx,
    io: &mut Io<Ctx>,
    _: Tag,
    (result, buf): (std::io::Result<usize>, Vec<u8>),
) {
    let n = result.expect("write");
    assert_eq!(n, MIB, "a 1 MiB write to a regular file is whole");
    ctx.offset += n as u64;
    ctx.mib_left -= 1;
    write_next(ctx, io, buf);
}

fn on_fsync(ctx: &mut Ctx, io: &mut Io<Ctx>, _: Tag, result: std::io::Result<()>) {
    result.expect("fsync");
    ctx.marks[2] = Some(Instant::now());
    let _ = io;
}

/// The client: a ping due every `interval`, each timed from when it was due; `(due,
/// latency)` per ping until `stop`.
fn client(
    mut stream: TcpStream,
    interval: Duration,
    stop: &AtomicBool,
) -> Vec<(Instant, Duration)> {
    let mut samples = Vec::with_capacity(1 << 20);
    let ping = [7_u8; 64];
    let mut pong = [0_u8; 64];
    let start = Instant::now();
    for n in 0_u32.. {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let due = start + interval * n;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        stream.write_all(&ping).unwrap();
        stream.read_exact(&mut pong).unwrap();
        samples.push((due, due.elapsed()));
    }
    samples
}

fn main() {
    let args = parse_args();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client_stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client_stream.set_nodelay(true).unwrap();
    let (server, _) = listener.accept().unwrap();
    server.set_nodelay(true).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&args.file)
        .expect("the file");
    // No dirty pages from earlier runs (or anything else) join in.
    rustix::fs::sync();
    let mut options = Options::new(8);
    options.backend = Some(args.backend);
    options.file_workers = args.workers;
    let mut io: Io<Ctx> = Io::new(&options).expect("the backend");
    let stop = Arc::new(AtomicBool::new(false));
    let interval = Duration::from_micros(args.interval_us);
    let thread = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || client(client_stream, interval, &stop)
    });
    let mut ctx = Ctx {
        server,
        file: Some(file.into()),
        mib_left: args.mib,
        offset: 0,
        started: Instant::now(),
        marks: [None; 3],
        echo_done: false,
    };
    io.recv(0, ctx.server.as_raw_fd(), Vec::with_capacity(64), on_recv)
        .unwrap();
    io.timeout(0, 1_000_000_000, on_baseline_over).unwrap();
    run(&mut io, &mut ctx, &stop);
    let samples = thread.join().unwrap();
    report(&args, &io, &ctx, &samples);
    let file = std::fs::File::open(&args.file).expect("the file");
    read_cost(&args, &options, &file);
    std::fs::remove_file(&args.file).expect("remove the file");
}

/// Cached 4 KiB reads, one at a time: what one read costs, inline or through a worker.
struct Reads {
    fd: std::os::fd::RawFd,
    left: u32,
}

fn on_read(r: &mut Reads, io: &mut Io<Reads>, _: Tag, (result, mut buf): BufResult) {
    assert_eq!(result.expect("read"), 4096);
    r.left -= 1;
    if r.left > 0 {
        buf.clear();
        let offset = u64::from(r.left % 256) * 4096;
        io.read(0, r.fd, buf, offset, on_read).unwrap();
    }
}

fn read_cost(args: &Args, options: &Options, file: &std::fs::File) {
    let mut io: Io<Reads> = Io::new(options).expect("the backend");
    let mut reads = Reads {
        fd: file.as_raw_fd(),
        left: args.reads,
    };
    let started = Instant::now();
    io.read(0, reads.fd, Vec::with_capacity(4096), 0, on_read)
        .unwrap();
    io.run_until_idle(&mut reads).unwrap();
    let per_read = started.elapsed() / args.reads;
    let stats = io.stats();
    println!(
        "cached 4 KiB reads, one at a time: {:.1} us each ({:.2} loop syscalls per read)",
        per_read.as_secs_f64() * 1e6,
        stats.syscalls as f64 / f64::from(args.reads),
    );
}

/// Runs the loop until the fsync is done and half a second has passed, then stops the
/// client and runs until its end of stream.
fn run(io: &mut Io<Ctx>, ctx: &mut Ctx, stop: &AtomicBool) {
    while ctx.marks[2].is_none_or(|end| end.elapsed() < Duration::from_millis(500)) {
        io.run_for_ns(ctx, 10_000_000).unwrap();
    }
    stop.store(true, Ordering::Release);
    // The client stops after its ping in flight; shutting our side ends its read if needed.
    let shut = ctx.server.try_clone().unwrap();
    while !ctx.echo_done {
        io.run_for_ns(ctx, 10_000_000).unwrap();
        if ctx.started.elapsed() > Duration::from_secs(600) {
            shut.shutdown(std::net::Shutdown::Both).unwrap();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[at - 1]
}

fn report(args: &Args, io: &Io<Ctx>, ctx: &Ctx, samples: &[(Instant, Duration)]) {
    let [write_start, fsync_start, fsync_end] =
        ctx.marks.map(|mark| mark.expect("every phase ran"));
    // The phase a ping was due in.
    let phase_of = |due: Instant| {
        [write_start, fsync_start, fsync_end]
            .iter()
            .filter(|&&mark| mark <= due)
            .count()
    };
    let stats = io.stats();
    println!(
        "backend {} file_workers {} ({} MiB, ping every {} us): writes {:.0} ms, fsync {:.0} ms",
        stats.backend,
        stats.file_workers,
        args.mib,
        args.interval_us,
        (fsync_start - write_start).as_secs_f64() * 1e3,
        (fsync_end - fsync_start).as_secs_f64() * 1e3,
    );
    println!("| phase | pings | p50 µs | p99 µs | p99.9 µs | max µs |");
    println!("|---|---|---|---|---|---|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // Each phase, then the writes and the fsync together (the file work's whole window).
    let rows: [(&str, &[usize]); 5] = [
        (PHASES[0], &[0]),
        (PHASES[1], &[1]),
        (PHASES[2], &[2]),
        (PHASES[3], &[3]),
        ("writing+fsync", &[1, 2]),
    ];
    for (name, phases) in rows {
        let mut phase: Vec<Duration> = samples
            .iter()
            .filter(|(due, _)| phases.contains(&phase_of(*due)))
            .map(|(_, d)| *d)
            .collect();
        if phase.is_empty() {
            println!("| {name} | 0 | | | | |");
            continue;
        }
        phase.sort();
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            phase.len(),
            us(percentile(&phase, 0.50)),
            us(percentile(&phase, 0.99)),
            us(percentile(&phase, 0.999)),
            us(*phase.last().unwrap()),
        );
    }
    println!(
        "syscalls {} (loop), {} (workers); ops {}",
        stats.syscalls, stats.worker_syscalls, stats.ops_completed
    );
}
