//! A storage benchmark on the loop: 4 KiB direct (`O_DIRECT`) random reads or writes with a
//! fixed number in flight, or log appends with one `fdatasync` per record or a group commit;
//! what `cargo xtask bench` runs beside fio (docs/BENCHMARKS.md).
//!
//! ```text
//! cargo run --release -p examples --example storage_bench -- \
//!     --file /path/on/a/disk/bench.file --mode randread --depth 32 --seconds 3 --warmup 1
//! ```
//!
//! The file must exist and hold at least one 4 KiB block (the harness writes it first, so
//! that no block is a hole or an unwritten extent); its size, rounded down to 4 KiB, is the
//! range the operations cover. `DISPATCH_BACKEND` picks the backend (`io_uring`, `epoll`,
//! `kqueue-fake`; automatic when unset). The program runs `--warmup` seconds unmeasured, then
//! the measured window of `--seconds`, lets what is in flight finish, and prints one line:
//!
//! ```text
//! result backend=io_uring mode=randread depth=32 ops=262144 window_ns=3000000000
//!        p50_ns=351000 p99_ns=480000 cpu_ns=1200000000 user_ns=100000000 commits=0
//!        syscalls=20000
//! ```
//!
//! (on one line). `ops` counts the operations (records, for the log modes) whose callback
//! ran inside the window; `p50_ns`/`p99_ns` are their latencies, from the moment the program
//! scheduled the operation (or queued the record) to the moment its callback ran (the
//! callback of the `fdatasync` that made the record durable, for the log modes); `cpu_ns` is
//! the process's CPU time over the window, user and system, every thread counted
//! (`CLOCK_PROCESS_CPUTIME_ID`), of which `user_ns` is the user part (split by the ratio of
//! `/proc/self/stat`'s user and system ticks); `commits` counts a group commit's writes;
//! `syscalls` is the loop's count over the window (`Stats::syscalls`: on io_uring its
//! `io_uring_enter` calls; on epoll its waits and every file operation run inline).
//!
//! # Modes
//! - `randread`, `randwrite`: `--depth` operations always in flight, each a 4 KiB read or
//!   write at a block picked at random (xorshift, uniform) over the file.
//! - `append`: `--depth` callers, each writing a 4 KiB record at the log's tail and then
//!   calling `fdatasync`, one after the other: one `fdatasync` per record, fio's
//!   `--fdatasync=1`. On io_uring the callers' writes and syncs overlap in the kernel.
//! - `group`: `--depth` callers whose records go through a group commit: the log writes
//!   every record queued while its previous commit was in flight (the callers acknowledged
//!   by that commit queue their next records in its callback, so those join too) as one
//!   write of k × 4 KiB at its tail, then one `fdatasync`, and only then acknowledges them.
//!   One commit is in flight at a time.
//!
//! The log modes write over the same preallocated file from its start, wrapping at its end,
//! as a log with preallocated segments does: an `fdatasync` then flushes data, never a new
//! size. A short read or write, or any error, ends the run with a message and exit status 1:
//! its figures are not printed.
//!
//! `--workers N` sets `Options::file_workers` (epoll and kqueue: file operations on `N`
//! worker threads; 0, this program's default, runs them inline; io_uring ignores it), and
//! `syscalls` then counts the workers' too (`Stats::worker_syscalls`).
#![forbid(unsafe_code)]

#[path = "storage_bench/histogram.rs"]
mod histogram;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use dispatch_loop::{AlignedBuf, Io, Options, Tag, AT_FDCWD};
use rustix::time::{clock_gettime, ClockId};

use histogram::Histogram;

/// Bytes per operation and per record, and the alignment of every buffer and offset.
const BLOCK: usize = 4096;
/// The most operations in flight, or callers.
const DEPTH_MAX: u32 = 1024;
/// The tag of the group commit's write and `fdatasync` (callers use 0..depth).
const COMMIT: Tag = DEPTH_MAX as Tag;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Randread,
    Randwrite,
    Append,
    Group,
}

/// What to run.
#[derive(Debug, Parser)]
#[command(about = "4 KiB direct I/O and log appends on the loop, as fio measures them")]
struct Args {
    /// The file: it exists, on a disk-backed filesystem, at least 4 KiB.
    #[arg(long)]
    file: PathBuf,
    /// What to do.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Operations in flight (randread, randwrite) or callers (append, group).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=DEPTH_MAX as i64))]
    depth: u32,
    /// Seconds measured.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds run before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// File worker threads on epoll (0: file operations inline).
    #[arg(long, default_value_t = 0)]
    workers: u32,
}

/// The benchmark's state: the loop's context.
struct Bench {
    fd: RawFd,
    mode: Mode,
    /// 4 KiB blocks in the file.
    blocks: u64,
    /// xorshift64 state.
    rng: u64,
    window_start: Instant,
    window_end: Instant,
    /// Operations or records completed inside the window.
    ops: u64,
    latency: Histogram,
    /// When each caller (tag) scheduled its operation or queued its record.
    issued: Vec<Instant>,
    /// Each caller's buffer while it is not in flight.
    bufs: Vec<Option<AlignedBuf>>,
    log: Log,
    /// The first error; the loop is stopped and nothing more is scheduled.
    error: Option<String>,
}

/// The log of the `append` and `group` modes.
struct Log {
    /// The next record's offset.
    tail: u64,
    /// The group commit's buffer while no commit is in flight.
    buf: Option<AlignedBuf>,
    /// Callers whose records wait for the next commit.
    queued: Vec<u32>,
    /// Callers whose records the commit in flight carries.
    committing: Vec<u32>,
    /// Whether a commit is in flight.
    busy: bool,
    /// Commits completed inside the window.
    commits: u64,
}

impl Bench {
    /// Whether the measured window is over: then nothing more is scheduled.
    fn ended(&self, now: Instant) -> bool {
        self.window_end <= now
    }

    /// Counts one operation that took `since..now`, if it ended inside the window.
    fn count(&mut self, since: Instant, now: Instant) {
        if self.window_start <= now && now < self.window_end {
            self.ops += 1;
            self.latency
                .record(now.duration_since(since).as_nanos() as u64);
        }
    }

    /// Records the first error and stops the loop.
    fn fail(&mut self, io: &mut Io<Bench>, what: &str, error: impl std::fmt::Display) {
        self.error.get_or_insert_with(|| format!("{what}: {error}"));
        io.stop();
    }

    /// A random block's offset.
    fn random_offset(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % self.blocks) * BLOCK as u64
    }

    /// Reserves `len` bytes at the log's tail, wrapping to the start where they do not fit.
    fn reserve(&mut self, len: u64) -> u64 {
        let size = self.blocks * BLOCK as u64;
        if size < self.log.tail + len {
            self.log.tail = 0;
        }
        let offset = self.log.tail;
        self.log.tail += len;
        offset
    }
}

/// Starts caller `tag`'s next operation (or record).
fn start(bench: &mut Bench, io: &mut Io<Bench>, tag: Tag) {
    let now = Instant::now();
    if bench.error.is_some() || bench.ended(now) {
        return;
    }
    bench.issued[tag as usize] = now;
    match bench.mode {
        Mode::Randread | Mode::Randwrite => random(bench, io, tag),
        Mode::Append => append(bench, io, tag),
        Mode::Group => {
            bench.log.queued.push(tag as u32);
            if !bench.log.busy {
                commit(bench, io);
            }
        }
    }
}

/// One random read or write.
fn random(bench: &mut Bench, io: &mut Io<Bench>, tag: Tag) {
    let offset = bench.random_offset();
    let mut buf = bench.bufs[tag as usize].take().expect("not in flight");
    let scheduled = if bench.mode == Mode::Randread {
        buf.clear();
        io.read(tag, bench.fd, buf, offset, on_random)
    } else {
        io.write(tag, bench.fd, buf, offset, on_random)
    };
    if let Err(error) = scheduled {
        bench.fail(io, "schedule", error);
    }
}

fn on_random(
    bench: &mut Bench,
    io: &mut Io<Bench>,
    tag: Tag,
    done: (io::Result<usize>, AlignedBuf),
) {
    let (result, buf) = done;
    bench.bufs[tag as usize] = Some(buf);
    match result {
        Ok(BLOCK) => {
            bench.count(bench.issued[tag as usize], Instant::now());
            start(bench, io, tag);
        }
        Ok(n) => bench.fail(io, "short read or write", format!("{n} of {BLOCK} bytes")),
        Err(error) => bench.fail(io, "read or write", error),
    }
}

/// One record of the `append` mode: its write, then its `fdatasync`.
fn append(bench: &mut Bench, io: &mut Io<Bench>, tag: Tag) {
    let offset = bench.reserve(BLOCK as u64);
    let buf = bench.bufs[tag as usize].take().expect("not in flight");
    if let Err(error) = io.write(tag, bench.fd, buf, offset, on_record_written) {
        bench.fail(io, "schedule", error);
    }
}

fn on_record_written(
    bench: &mut Bench,
    io: &mut Io<Bench>,
    tag: Tag,
    (result, buf): (io::Result<usize>, AlignedBuf),
) {
    bench.bufs[tag as usize] = Some(buf);
    match result {
        Ok(BLOCK) => {
            if let Err(error) = io.fdatasync(tag, bench.fd, on_record_synced) {
                bench.fail(io, "schedule", error);
            }
        }
        Ok(n) => bench.fail(io, "short write", format!("{n} of {BLOCK} bytes")),
        Err(error) => bench.fail(io, "write", error),
    }
}

fn on_record_synced(bench: &mut Bench, io: &mut Io<Bench>, tag: Tag, result: io::Result<()>) {
    match result {
        Ok(()) => {
            bench.count(bench.issued[tag as usize], Instant::now());
            start(bench, io, tag);
        }
        Err(error) => bench.fail(io, "fdatasync", error),
    }
}

/// Writes every queued record as one write at the log's tail.
fn commit(bench: &mut Bench, io: &mut Io<Bench>) {
    assert!(!bench.log.busy);
    assert!(bench.log.committing.is_empty());
    let log = &mut bench.log;
    std::mem::swap(&mut log.queued, &mut log.committing);
    let records = log.committing.len();
    let mut buf = log.buf.take().expect("no commit in flight");
    buf.clear();
    buf.resize(records * BLOCK, 0xa5);
    // Each record names its caller, so that the bytes differ from record to record.
    for (i, &caller) in log.committing.iter().enumerate() {
        buf[i * BLOCK..i * BLOCK + 4].copy_from_slice(&caller.to_le_bytes());
    }
    log.busy = true;
    let offset = bench.reserve((records * BLOCK) as u64);
    if let Err(error) = io.write(COMMIT, bench.fd, buf, offset, on_commit_written) {
        bench.fail(io, "schedule", error);
    }
}

fn on_commit_written(
    bench: &mut Bench,
    io: &mut Io<Bench>,
    _tag: Tag,
    (result, buf): (io::Result<usize>, AlignedBuf),
) {
    let len = buf.len();
    bench.log.buf = Some(buf);
    match result {
        Ok(n) if n == len => {
            if let Err(error) = io.fdatasync(COMMIT, bench.fd, on_commit_synced) {
                bench.fail(io, "schedule", error);
            }
        }
        Ok(n) => bench.fail(io, "short write", format!("{n} of {len} bytes")),
        Err(error) => bench.fail(io, "write", error),
    }
}

/// The commit is durable: acknowledges its records (each caller queues its next one), then
/// commits what is queued.
fn on_commit_synced(bench: &mut Bench, io: &mut Io<Bench>, _tag: Tag, result: io::Result<()>) {
    if let Err(error) = result {
        bench.fail(io, "fdatasync", error);
        return;
    }
    let now = Instant::now();
    if bench.window_start <= now && now < bench.window_end {
        bench.log.commits += 1;
    }
    // Taken out (no allocation: the vector is put back) so that `start` may queue. The log
    // stays busy meanwhile, so every caller acknowledged here queues for the next commit.
    let mut acked = std::mem::take(&mut bench.log.committing);
    for &caller in &acked {
        bench.count(bench.issued[caller as usize], now);
        start(bench, io, Tag::from(caller));
    }
    acked.clear();
    bench.log.committing = acked;
    bench.log.busy = false;
    if !bench.log.queued.is_empty() {
        commit(bench, io);
    }
}

/// The process's CPU time, all threads, user and system together, and its user and system
/// clock ticks (`/proc/self/stat` fields 14 and 15).
fn cpu_now() -> Result<(u64, u64, u64), String> {
    let total = clock_gettime(ClockId::ProcessCPUTime);
    let ns = total.tv_sec as u64 * 1_000_000_000 + total.tv_nsec as u64;
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| e.to_string())?;
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok((ns, user, system)),
        _ => Err("/proc/self/stat: no utime and stime".into()),
    }
}

/// Opens the file for direct I/O and says how many 4 KiB blocks it holds.
fn open(path: &PathBuf) -> Result<(OwnedFd, u64), String> {
    let what = |e: io::Error| format!("{}: {e}", path.display());
    let blocks = std::fs::metadata(path).map_err(what)?.len() / BLOCK as u64;
    if blocks == 0 {
        return Err(format!("{}: smaller than 4 KiB", path.display()));
    }
    let mut io: Io<Option<io::Result<OwnedFd>>> =
        Io::new(&Options::new(1)).map_err(|e| e.to_string())?;
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let flags = libc::O_RDWR | libc::O_DIRECT;
    io.openat(
        0,
        AT_FDCWD,
        c_path,
        flags,
        0,
        |opened, _io, _tag, result| {
            *opened = Some(result);
        },
    )
    .map_err(|e| e.to_string())?;
    let mut opened = None;
    io.run_until_idle(&mut opened).map_err(|e| e.to_string())?;
    let file = opened.expect("the open completed").map_err(what)?;
    Ok((file, blocks))
}

fn bench_for(args: &Args, fd: RawFd, blocks: u64) -> Result<Bench, String> {
    let depth = args.depth as usize;
    let mut bufs = Vec::with_capacity(depth);
    for caller in 0..depth {
        let mut buf = AlignedBuf::zeroed(BLOCK, BLOCK).map_err(|e| e.to_string())?;
        buf[..4].copy_from_slice(&(caller as u32).to_le_bytes());
        bufs.push(Some(buf));
    }
    let group = AlignedBuf::new(depth * BLOCK, BLOCK).map_err(|e| e.to_string())?;
    let now = Instant::now();
    let window_start = now + Duration::from_secs_f64(args.warmup);
    Ok(Bench {
        fd,
        mode: args.mode,
        blocks,
        rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()),
        window_start,
        window_end: window_start + Duration::from_secs_f64(args.seconds),
        ops: 0,
        latency: Histogram::new(),
        issued: vec![now; depth],
        bufs,
        log: Log {
            tail: 0,
            buf: Some(group),
            queued: Vec::with_capacity(depth),
            committing: Vec::with_capacity(depth),
            busy: false,
            commits: 0,
        },
        error: None,
    })
}

/// Runs the loop until `until` (or an error).
fn run_until(io: &mut Io<Bench>, bench: &mut Bench, until: Instant) -> Result<(), String> {
    loop {
        let now = Instant::now();
        if bench.error.is_some() || until <= now {
            return Ok(());
        }
        let ns = until.duration_since(now).as_nanos() as u64;
        io.run_for_ns(bench, ns).map_err(|e| format!("run: {e}"))?;
    }
}

fn run(args: &Args) -> Result<String, String> {
    if !(args.seconds > 0.0 && args.warmup >= 0.0) {
        return Err("--seconds must be above 0 and --warmup at least 0".into());
    }
    let (file, blocks) = open(&args.file)?;
    let mut options = Options::new(args.depth + 1);
    options.file_workers = args.workers;
    let mut io: Io<Bench> = Io::new(&options).map_err(|e| e.to_string())?;
    let mut bench = bench_for(args, file.as_raw_fd(), blocks)?;
    for tag in 0..Tag::from(args.depth) {
        start(&mut bench, &mut io, tag);
    }
    let window_start = bench.window_start;
    run_until(&mut io, &mut bench, window_start)?;
    let cpu_start = cpu_now()?;
    let syscalls_start = io.stats().syscalls + io.stats().worker_syscalls;
    let window_end = bench.window_end;
    run_until(&mut io, &mut bench, window_end)?;
    let cpu_end = cpu_now()?;
    let syscalls = io.stats().syscalls + io.stats().worker_syscalls - syscalls_start;
    // What is in flight ends now (nothing more is scheduled past the window).
    if bench.error.is_none() {
        io.run_until_idle(&mut bench)
            .map_err(|e| format!("run: {e}"))?;
    }
    if let Some(error) = bench.error {
        return Err(error);
    }
    let cpu = [cpu_start, cpu_end];
    Ok(result_line(args, &io, &bench, cpu, syscalls))
}

fn result_line(
    args: &Args,
    io: &Io<Bench>,
    bench: &Bench,
    [cpu_start, cpu_end]: [(u64, u64, u64); 2],
    syscalls: u64,
) -> String {
    let cpu_ns = cpu_end.0.saturating_sub(cpu_start.0);
    let user_ticks = cpu_end.1.saturating_sub(cpu_start.1);
    let sys_ticks = cpu_end.2.saturating_sub(cpu_start.2);
    let ticks = (user_ticks + sys_ticks).max(1);
    let user_ns = (cpu_ns as u128 * u128::from(user_ticks) / u128::from(ticks)) as u64;
    let window_ns = bench
        .window_end
        .duration_since(bench.window_start)
        .as_nanos();
    format!(
        "result backend={} mode={:?} depth={} ops={} window_ns={window_ns} p50_ns={} \
         p99_ns={} cpu_ns={cpu_ns} user_ns={user_ns} commits={} syscalls={syscalls}",
        io.stats().backend,
        args.mode,
        args.depth,
        bench.ops,
        bench.latency.percentile(50.0),
        bench.latency.percentile(99.0),
        bench.log.commits,
    )
    .to_lowercase()
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("storage_bench: {error}");
            ExitCode::FAILURE
        }
    }
}
