//! The storage benchmark: the loop's storage program (`cargo build --release -p examples
//! --example storage_bench`) beside fio, the tool storage people trust, on one file on the
//! real disk (never tmpfs, which is memory), in one run: 4 KiB random direct reads at queue
//! depth 1 and 32, 4 KiB random direct writes at depth 32, and log appends (4 KiB records,
//! each made durable by an `fdatasync`) at 1, 4, 16 and 64 callers. Rounds interleave the
//! engines, as the echo benchmark's do. This file holds the scenarios, the engines, the plan,
//! the bench file and fio's discovery; `bench_storage_run.rs` runs, `bench_storage_report.rs`
//! reports.
//!
//! Where fio is missing and cannot be installed (`apt-get install fio` on a root Debian
//! host), its engines are reported as skipped, with how to install it, and every ratio to
//! fio reads n/a: nothing passes for want of fio. Where the program does not build, fio runs
//! alone and the table says why.

use std::path::{Path, PathBuf};

use super::plan::{filtered, target_dir, Plan as EchoPlan};
use super::{storage_report, storage_run, BenchArgs};
use crate::cmd::Cmd;
use crate::project_root;

/// Bytes per operation and per record.
pub const BLOCK: u64 = 4096;

/// What a scenario does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 4 KiB direct reads at random blocks, `depth` in flight.
    RandRead,
    /// 4 KiB direct writes at random blocks, `depth` in flight.
    RandWrite,
    /// 4 KiB records, each durable (`fdatasync`) before it counts, from `depth` callers.
    Append,
}

/// One load.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Short name, used by `--filter`, in the table and in the JSON.
    pub name: &'static str,
    /// What it does.
    pub kind: Kind,
    /// Operations in flight (random) or callers (append).
    pub depth: u32,
}

/// The scenarios, in the order they run.
pub const SCENARIOS: [Scenario; 7] = [
    scenario("randread-d1", Kind::RandRead, 1),
    scenario("randread-d32", Kind::RandRead, 32),
    scenario("randwrite-d32", Kind::RandWrite, 32),
    scenario("append-c1", Kind::Append, 1),
    scenario("append-c4", Kind::Append, 4),
    scenario("append-c16", Kind::Append, 16),
    scenario("append-c64", Kind::Append, 64),
];

const fn scenario(name: &'static str, kind: Kind, depth: u32) -> Scenario {
    Scenario { name, kind, depth }
}

/// The one scenario `--quick` runs.
const QUICK_SCENARIO: &str = "randread-d32";

/// How an engine runs a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// fio with `--ioengine=io_uring --iodepth=depth`, one job.
    FioUring,
    /// fio with `--ioengine=psync`: one job for a random scenario (the thread count of the
    /// loop on epoll, whose file operations run inline), `depth` jobs for appends (one per
    /// caller, each syncing its own records).
    FioPsync,
    /// The program, one record per `fdatasync` for appends, on `backend`, with `workers`
    /// file worker threads (`Options::file_workers`; epoll only, 0: inline).
    Loop {
        backend: &'static str,
        workers: u32,
        /// From the loop's registered buffers (`--registered`).
        registered: bool,
    },
    /// The program's group commit (appends only), on `backend`, with `workers`.
    Group { backend: &'static str, workers: u32 },
}

/// An engine measured.
#[derive(Debug, Clone, Copy)]
pub struct Engine {
    /// Short name, used by `--filter`, in the table and in the JSON.
    pub name: &'static str,
    /// How it runs.
    pub kind: EngineKind,
}

/// fio's io_uring engine: the figure the loop on io_uring is held to.
pub const FIO_URING: &str = "fio-uring";
/// fio's psync engine: the figure the loop on epoll is held to.
pub const FIO_PSYNC: &str = "fio-psync";

/// Every engine, in the order each round runs them.
pub const ENGINES: [Engine; 8] = [
    engine(FIO_URING, EngineKind::FioUring),
    engine(FIO_PSYNC, EngineKind::FioPsync),
    engine(
        "loop-uring",
        EngineKind::Loop {
            backend: "io_uring",
            workers: 0,
            registered: false,
        },
    ),
    engine(
        "loop-uring-fixed",
        EngineKind::Loop {
            backend: "io_uring",
            workers: 0,
            registered: true,
        },
    ),
    engine(
        "loop-epoll",
        EngineKind::Loop {
            backend: "epoll",
            workers: 0,
            registered: false,
        },
    ),
    engine(
        "loop-epoll-w1",
        EngineKind::Loop {
            backend: "epoll",
            workers: 1,
            registered: false,
        },
    ),
    engine(
        "group-uring",
        EngineKind::Group {
            backend: "io_uring",
            workers: 0,
        },
    ),
    engine(
        "group-epoll",
        EngineKind::Group {
            backend: "epoll",
            workers: 1,
        },
    ),
];

const fn engine(name: &'static str, kind: EngineKind) -> Engine {
    Engine { name, kind }
}

impl Engine {
    /// Whether this engine runs `scenario`: fio's io_uring engine and the loop on epoll run the
    /// random scenarios (the loop on epoll would serialise its appends' syncs, as one caller),
    /// the group commits the appends; fio's psync engine and the loop on io_uring run both.
    pub fn runs(&self, scenario: &Scenario) -> bool {
        let append = scenario.kind == Kind::Append;
        match self.kind {
            EngineKind::FioUring => !append,
            EngineKind::FioPsync => true,
            EngineKind::Loop {
                backend,
                registered,
                ..
            } => !append || (backend == "io_uring" && !registered),
            EngineKind::Group { .. } => append,
        }
    }

    /// Whether fio runs it.
    pub fn is_fio(&self) -> bool {
        matches!(self.kind, EngineKind::FioUring | EngineKind::FioPsync)
    }
}

/// Everything a storage benchmark run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The scenarios run, in order.
    pub scenarios: Vec<Scenario>,
    /// The engines, in order (each runs only the scenarios it `runs`).
    pub engines: Vec<Engine>,
    /// Rounds; each runs every (scenario, engine) once.
    pub rounds: u32,
    /// Seconds run before each measured window (fio's `--ramp_time`).
    pub warmup_s: f64,
    /// Seconds measured.
    pub duration_s: f64,
    /// The bench file's size in bytes.
    pub file_bytes: u64,
    /// Whether this is `--quick`.
    pub quick: bool,
}

impl Plan {
    /// The plan `args` asks for, with `--rounds` (default 3) and the echo plan's duration;
    /// empty where the filter names only the other benchmarks' scenarios or servers, or
    /// `--no-storage`, or `--http-only`.
    pub fn from_args(args: &BenchArgs, echo: &EchoPlan) -> Plan {
        let others = other_names();
        let mut scenarios = filtered(&SCENARIOS, &args.filter, |s| s.name, &others.0);
        let engines = filtered(&ENGINES, &args.filter, |e| e.name, &others.1);
        if args.no_storage || args.http_only {
            scenarios.clear();
        }
        if echo.quick && scenarios.len() > 1 {
            let quick = scenarios.iter().position(|s| s.name == QUICK_SCENARIO);
            scenarios = vec![scenarios[quick.unwrap_or(0)]];
            eprintln!(
                "bench --quick: the storage benchmark runs {} alone, {} s, on a 64 MiB file",
                scenarios[0].name, echo.duration_s
            );
        }
        Plan {
            scenarios,
            engines,
            rounds: super::plan::rounds(args, super::plan::OTHER_ROUNDS),
            warmup_s: if echo.quick { 0.1 } else { 1.0 },
            duration_s: echo.duration_s,
            file_bytes: if echo.quick { 64 << 20 } else { 1 << 30 },
            quick: echo.quick,
        }
    }

    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.runs().is_empty()
    }

    /// The runs, in order: scenario by scenario, and within one, round by round through every
    /// engine that runs it (A B C A B C), so that a drift of the disk touches each alike.
    pub fn runs(&self) -> Vec<(Scenario, Engine, u32)> {
        let mut runs = Vec::new();
        for &scenario in &self.scenarios {
            for round in 1..=self.rounds {
                for &engine in self.engines.iter().filter(|e| e.runs(&scenario)) {
                    runs.push((scenario, engine, round));
                }
            }
        }
        runs
    }
}

/// The echo and HTTP benchmarks' scenario names and server names, which `--filter` may name
/// instead of this benchmark's.
fn other_names() -> (Vec<&'static str>, Vec<&'static str>) {
    let mut scenarios: Vec<&str> = super::plan::SCENARIOS.iter().map(|s| s.name).collect();
    scenarios.extend(super::http::SCENARIOS.iter().map(|s| s.name));
    let mut servers: Vec<&str> = super::plan::SERVERS.iter().map(|s| s.name).collect();
    servers.extend(super::http::SERVERS.iter().map(|s| s.name));
    (scenarios, servers)
}

/// This benchmark's scenario and engine names, for the other benchmarks' filters.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
    names.extend(ENGINES.iter().map(|e| e.name));
    names
}

/// What the runs share: where things are, and what fio is.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The bench file.
    pub file: PathBuf,
    /// Its filesystem and device, as `stat -f` and `df` name them.
    pub disk: String,
    /// `fio-3.33`, or why fio is not there (then its engines are skipped).
    pub fio: Result<String, String>,
    /// The program, where it built; else why not.
    pub program: Result<PathBuf, String>,
}

/// Runs the storage benchmark: fio found (or installed), the program built, the file written,
/// runs, report; returns how many runs failed.
pub fn bench(plan: &Plan) -> Result<usize, String> {
    let dir = project_root().join("target/bench/storage");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let disk = disk_backed(&dir)?;
    let file = dir.join(format!("bench-{}MiB.file", plan.file_bytes >> 20));
    prepare_file(&file, plan.file_bytes)?;
    let setup = Setup {
        file,
        disk,
        fio: fio_version(),
        program: build(),
    };
    if let Err(why) = &setup.fio {
        eprintln!("bench: SKIPPED fio's engines: {why}");
    }
    let runs = storage_run::run_all(plan, &setup)?;
    let medians = storage_report::medians(plan, &runs);
    storage_report::write(plan, &setup, &runs, &medians)?;
    Ok(runs.iter().filter(|run| run.failure.is_some()).count())
}

/// Refuses a directory on a filesystem that is memory (tmpfs, ramfs): a direct read there
/// measures RAM, or fails. Returns the filesystem type and the device, for the report.
fn disk_backed(dir: &Path) -> Result<String, String> {
    let path = dir.to_string_lossy();
    let fs = Cmd::new("stat", &["-f", "-c", "%T", &path])
        .query()
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| format!("stat -f {path} failed"))?;
    if fs == "tmpfs" || fs == "ramfs" {
        return Err(format!(
            "{path} is on {fs}, which is memory: the storage benchmark needs a disk-backed \
             filesystem (run it from a checkout on one, or pass --no-storage)"
        ));
    }
    let device = Cmd::new("df", &["--output=source", &path])
        .query()
        .and_then(|out| out.lines().nth(1).map(|l| l.trim().to_owned()))
        .unwrap_or_else(|| "an unknown device".into());
    Ok(format!("{fs} on {device}"))
}

/// Writes the bench file (`bytes` of a pseudo-random pattern, then `fsync`), unless it already
/// has that size: so that no block read is a hole, nor a write an unwritten extent's first
/// (an extent conversion, a metadata update), for fio and the program alike.
fn prepare_file(file: &Path, bytes: u64) -> Result<(), String> {
    use std::io::Write as _;
    let what = |e: std::io::Error| format!("{}: {e}", file.display());
    if std::fs::metadata(file).is_ok_and(|m| m.len() == bytes) {
        return Ok(());
    }
    eprintln!(
        "bench: writing the storage bench file, {} MiB: {}",
        bytes >> 20,
        file.display()
    );
    let mut chunk = vec![0u8; 1 << 20];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for word in chunk.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes());
    }
    let mut out = std::fs::File::create(file).map_err(what)?;
    for _ in 0..bytes / chunk.len() as u64 {
        out.write_all(&chunk).map_err(what)?;
    }
    out.sync_all().map_err(what)
}

/// fio's version (`fio-3.33`); where fio is missing, installs it on a root Debian host, else
/// says how.
fn fio_version() -> Result<String, String> {
    let version = || {
        Cmd::new("fio", &["--version"])
            .query()
            .map(|v| v.trim().to_owned())
    };
    if let Some(version) = version() {
        return Ok(version);
    }
    let howto = "install fio (Debian and Ubuntu: `sudo apt-get install fio`; Fedora: `sudo dnf \
                 install fio`) and run `cargo xtask bench --storage-only`";
    if let Err(error) = crate::kernel_host::install_packages(&["fio"], howto) {
        return Err(format!("fio not found: {error}"));
    }
    version().ok_or_else(|| format!("fio not found after installing it: {howto}"))
}

/// Builds the storage program (release); where it does not build, says why.
fn build() -> Result<PathBuf, String> {
    let args = [
        "build",
        "--release",
        "-p",
        "examples",
        "--example",
        "storage_bench",
    ];
    match Cmd::cargo(&args).run() {
        Ok(()) => Ok(target_dir().join("release/examples/storage_bench")),
        Err(error) => {
            eprintln!("bench: the storage program does not build here ({error}): fio runs alone");
            Err(format!("the storage program does not build here: {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_fio_and_the_loop() {
        for scenario in &SCENARIOS {
            let engines: Vec<&str> = ENGINES
                .iter()
                .filter(|e| e.runs(scenario))
                .map(|e| e.name)
                .collect();
            assert!(engines.contains(&FIO_PSYNC), "{}", scenario.name);
            assert!(engines.contains(&"loop-uring"), "{}", scenario.name);
        }
        assert!(SCENARIOS.iter().any(|s| s.name == QUICK_SCENARIO));
    }
}
