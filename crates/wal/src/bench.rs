//! The log's benchmark hook: `callers` callers on one loop, each appending a record
//! (4 KiB by default) and appending the next as soon as the previous is acknowledged, for
//! `seconds`, on a real file (direct I/O by default). Reports records per second, groups
//! (one write and one `fdatasync` each) and the acknowledgement latency. One caller is the
//! baseline of one `fdatasync` per record; more callers show what group commit buys.
//!
//! The storage benchmark (`cargo xtask bench`) runs it through the `wal-bench` binary
//! (`--json` prints one JSON object); a program can call [`run`].

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dispatch_loop::{Io, Options, Tag};

use crate::wal::{Wal, WalHost, WalOptions};

/// What to run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BenchOptions {
    /// A directory on the disk to measure (not tmpfs: before Linux 6.6 it refuses
    /// `O_DIRECT`, and its flush costs nothing; [`BenchReport::memory_fs`] says so); the
    /// log is `wal-bench.log` in it, removed before and after.
    pub dir: PathBuf,
    /// Callers appending at once.
    pub callers: u32,
    /// Each record's size.
    pub record_bytes: usize,
    /// How long to append.
    pub seconds: f64,
    /// Direct I/O (`O_DIRECT`).
    pub direct: bool,
}

impl BenchOptions {
    /// `callers` callers appending 4 KiB records for `seconds` in `dir`, direct I/O.
    pub fn new(dir: impl Into<PathBuf>, callers: u32, seconds: f64) -> BenchOptions {
        BenchOptions {
            dir: dir.into(),
            callers,
            record_bytes: 4096,
            seconds,
            direct: true,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BenchReport {
    /// The loop's backend.
    pub backend: String,
    /// Callers.
    pub callers: u32,
    /// Record size.
    pub record_bytes: usize,
    /// Records acknowledged.
    pub records: u64,
    /// Wall-clock seconds from the first append to the last acknowledgement.
    pub seconds: f64,
    /// `records / seconds`.
    pub records_per_s: f64,
    /// Groups written (each one write and one `fdatasync`).
    pub groups: u64,
    /// Acknowledgement latency percentiles, microseconds.
    pub p50_us: f64,
    /// See `p50_us`.
    pub p99_us: f64,
    /// The directory is on a memory file system (tmpfs, ramfs): no disk was measured.
    pub memory_fs: bool,
}

/// Whether `dir` is on a file system in memory (Linux's tmpfs or ramfs), where a flush
/// costs nothing and the figures say nothing about a disk.
fn memory_fs(dir: &std::path::Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        const RAMFS_MAGIC: u64 = 0x8584_58f6;
        let Ok(found) = rustix::fs::statfs(dir) else {
            return false;
        };
        let kind = found.f_type as u64;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}

impl BenchReport {
    /// One JSON object.
    pub fn json(&self) -> String {
        format!(
            "{{\"backend\":\"{}\",\"callers\":{},\"record_bytes\":{},\"records\":{},\
             \"seconds\":{:.3},\"records_per_s\":{:.1},\"groups\":{},\"records_per_group\":{:.2},\
             \"p50_us\":{:.1},\"p99_us\":{:.1},\"memory_fs\":{}}}",
            self.backend,
            self.callers,
            self.record_bytes,
            self.records,
            self.seconds,
            self.records_per_s,
            self.groups,
            self.records as f64 / self.groups.max(1) as f64,
            self.p50_us,
            self.p99_us,
            self.memory_fs
        )
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wal-bench {}: {} callers x {} B records: {} records in {:.2} s = {:.0} records/s, \
             {} groups ({:.1} records per write+fdatasync), ack p50 {:.0} us, p99 {:.0} us",
            self.backend,
            self.callers,
            self.record_bytes,
            self.records,
            self.seconds,
            self.records_per_s,
            self.groups,
            self.records as f64 / self.groups.max(1) as f64,
            self.p50_us,
            self.p99_us
        )?;
        if self.memory_fs {
            write!(f, " (a file system in memory: no disk was measured)")?;
        }
        Ok(())
    }
}

struct Bench {
    wal: Wal<Bench>,
    record: Vec<u8>,
    /// When each caller's record in flight was appended.
    appended_at: Vec<Instant>,
    latencies_ns: Vec<u64>,
    deadline: Instant,
    outstanding: u32,
    error: Option<io::Error>,
}

impl WalHost for Bench {
    fn wal(&mut self) -> &mut Wal<Bench> {
        &mut self.wal
    }
}

fn append(bench: &mut Bench, io: &mut Io<Bench>, caller: Tag) {
    bench.appended_at[caller as usize] = Instant::now();
    let record = std::mem::take(&mut bench.record);
    match bench.wal.append(io, caller, &record, on_durable) {
        Ok(_) => bench.outstanding += 1,
        Err(error) => {
            let message = format!("append: {error:?}");
            bench.error.get_or_insert(io::Error::other(message));
        }
    }
    bench.record = record;
}

fn on_durable(bench: &mut Bench, io: &mut Io<Bench>, caller: Tag, lsn: io::Result<u64>) {
    bench.outstanding -= 1;
    let now = Instant::now();
    match lsn {
        Ok(_) => {
            let latency = now - bench.appended_at[caller as usize];
            bench.latencies_ns.push(latency.as_nanos() as u64);
            if now < bench.deadline && bench.error.is_none() {
                append(bench, io, caller);
            }
        }
        Err(error) => {
            bench.error.get_or_insert(error);
        }
    }
}

fn on_open(bench: &mut Bench, io: &mut Io<Bench>, recovered: io::Result<Vec<Vec<u8>>>) {
    if let Err(error) = recovered {
        bench.error = Some(error);
        return;
    }
    for caller in 0..bench.appended_at.len() {
        append(bench, io, caller as Tag);
    }
}

/// The `p`th percentile of sorted `values`, in microseconds.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at] as f64 / 1_000.0
}

/// Runs the benchmark (see the module's docs).
///
/// # Errors
/// The loop could not start, the log could not open (`EINVAL` for `O_DIRECT` on tmpfs), or
/// an append or flush failed.
pub fn run(options: &BenchOptions) -> io::Result<BenchReport> {
    let callers = options.callers.max(1);
    let path = options.dir.join("wal-bench.log");
    let _ = std::fs::remove_file(&path);
    let dir = options
        .dir
        .to_str()
        .ok_or_else(|| io::Error::other("a UTF-8 path"))?;
    let mut wal_options = WalOptions::new(dir, "wal-bench.log");
    wal_options.direct = options.direct;
    let group = crate::format::group_size(vec![options.record_bytes; callers as usize]);
    wal_options.group_bytes_max = group.max(1 << 20);
    let mut io: Io<Bench> = Io::new(&Options::new(64)).map_err(io::Error::other)?;
    let mut bench = Bench {
        wal: Wal::new(&wal_options)?,
        record: vec![0x5a; options.record_bytes],
        appended_at: vec![Instant::now(); callers as usize],
        latencies_ns: Vec::with_capacity(1 << 20),
        deadline: Instant::now(),
        outstanding: 0,
        error: None,
    };
    bench.deadline = Instant::now() + Duration::from_secs_f64(options.seconds);
    let started = Instant::now();
    bench
        .wal
        .open(&mut io, on_open)
        .map_err(|e| io::Error::other(format!("{e:?}")))?;
    while !bench.wal.is_ready() && bench.error.is_none() {
        io.run_for_ns(&mut bench, 10_000_000)?;
    }
    while bench.outstanding > 0 {
        io.run_for_ns(&mut bench, 10_000_000)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let backend = format!("{:?}", io.stats().backend);
    bench.wal.close(&mut io);
    io.run_until_idle(&mut bench)?;
    let _ = std::fs::remove_file(&path);
    if let Some(error) = bench.error.take() {
        return Err(error);
    }
    bench.latencies_ns.sort_unstable();
    let records = bench.latencies_ns.len() as u64;
    Ok(BenchReport {
        backend,
        callers,
        record_bytes: options.record_bytes,
        records,
        seconds,
        records_per_s: records as f64 / seconds,
        groups: bench.wal.stats().groups,
        p50_us: percentile_us(&bench.latencies_ns, 0.50),
        p99_us: percentile_us(&bench.latencies_ns, 0.99),
        memory_fs: memory_fs(&options.dir),
    })
}
