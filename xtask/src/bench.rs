//! `cargo xtask bench`: the criterion micro benchmarks of dispatch-loop, then the macro
//! benchmarks: the project's load generator against `echo-server` on each backend and against
//! peer echo servers (tokio, monoio, compio; over UDP, `udp-64B`, tokio's UDP peer and
//! `echo-server --udp` where it has that option), then wrk against the project's HTTP example on
//! each backend and against a hyper server, then the storage program on io_uring and epoll
//! against fio on a file on the disk; interleaved, medians over rounds (and for the echo
//! servers, ratios to tokio paired by round). Benchmarks
//! report; they never pass or fail a build (a macro run whose echoes or responses came back
//! wrong is reported as FAILED, and the command then exits non-zero: the harness, not a
//! number, is broken).
//!
//! `docs/BENCHMARKS.md` says what each number means. The files:
//! `bench_plan.rs` (scenarios, servers, CPUs, filter), `bench_run.rs` (one run: windows,
//! `perf`), `bench_proc.rs` (the processes and what `/proc` says of them, for every
//! benchmark), `bench_report.rs` (medians, table, JSON), `bench_paired.rs` (per-round ratios
//! to a baseline, their median, spread and verdicts), `bench_verdicts.rs` (the paired table
//! and the verdicts against issues 19 and 20), `bench_chart.rs` (the SVG);
//! the HTTP benchmark's `bench_http.rs` (scenarios, servers, build), `bench_http_run.rs` (one
//! run under wrk), `bench_http_check.rs` (each server's answers checked byte by byte before
//! wrk runs) and `bench_http_report.rs` (medians, ratios to hyper, table, JSON); the storage
//! benchmark's `bench_storage.rs` (scenarios, engines, the bench file, fio),
//! `bench_storage_run.rs` (one run of fio or of the program) and `bench_storage_report.rs`
//! (medians, verdicts against the targets, table, JSON); `bench_cost.rs`, the loop's own
//! cost per nop under callgrind.

#[path = "bench_chart.rs"]
mod chart;
#[path = "bench_cost.rs"]
mod cost;
#[path = "bench_http.rs"]
mod http;
#[path = "bench_http_check.rs"]
mod http_check;
#[path = "bench_http_report.rs"]
mod http_report;
#[path = "bench_http_run.rs"]
mod http_run;
#[path = "bench_paired.rs"]
mod paired;
#[path = "bench_plan.rs"]
mod plan;
#[path = "bench_proc.rs"]
mod proc;
#[path = "bench_report.rs"]
mod report;
#[path = "bench_run.rs"]
mod run;
#[path = "bench_storage.rs"]
mod storage;
#[path = "bench_storage_report.rs"]
mod storage_report;
#[path = "bench_storage_run.rs"]
mod storage_run;
#[path = "bench_verdicts.rs"]
mod verdicts;

use std::time::Instant;

use clap::Args;

use crate::cmd::Cmd;

/// `cargo xtask bench`'s options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Every echo scenario briefly, once, against echo-server and tokio, one HTTP scenario
    /// (1 s) against the HTTP example and hyper, and one storage scenario (0.3 s, a 64 MiB
    /// file) against fio: a smoke test of the harness (what `cargo xtask test` runs); its
    /// numbers are not to be judged
    #[arg(long)]
    pub quick: bool,
    /// Only the criterion micro benchmarks
    #[arg(long, conflicts_with_all = ["macro_only", "quick"])]
    pub micro_only: bool,
    /// Only the macro benchmarks (load generator against echo servers, wrk against HTTP
    /// servers)
    #[arg(long)]
    pub macro_only: bool,
    /// Only the HTTP benchmark: wrk against the HTTP example (io_uring, epoll) and hyper
    #[arg(long, conflicts_with_all = ["micro_only", "no_http", "storage_only"])]
    pub http_only: bool,
    /// Leave out the HTTP benchmark (wrk)
    #[arg(long, conflicts_with = "micro_only")]
    pub no_http: bool,
    /// Only the storage benchmark: the storage program (io_uring, epoll) against fio on a
    /// file on the disk
    #[arg(long, conflicts_with_all = ["micro_only", "no_storage"])]
    pub storage_only: bool,
    /// Leave out the storage benchmark (fio)
    #[arg(long, conflicts_with = "micro_only")]
    pub no_storage: bool,
    /// Macro runs whose scenario or server contains one of these words, comma-separated
    /// (`--filter d16,tokio,uring`: scenarios matching a word, each with the servers
    /// matching a word; where no word names a scenario, every scenario, likewise servers;
    /// the echo and HTTP benchmarks share the filter: `--filter plaintext` runs the HTTP
    /// scenarios alone, `--filter hyper` the hyper server alone, `--filter udp` the UDP echo
    /// scenario alone); only the macro benchmarks run then
    #[arg(long, value_delimiter = ',', conflicts_with = "micro_only")]
    pub filter: Vec<String>,
    /// Rounds: each scenario runs every server once per round, interleaved (echo: default
    /// 8, so that the paired ratios can decide a verdict; HTTP and storage: 3; 1 with
    /// --quick)
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seconds measured per run (default 3; 0.3 with --quick); wrk takes whole seconds, so
    /// an HTTP run measures this rounded, at least 1
    #[arg(long)]
    pub duration: Option<f64>,
    /// CPUs the server is pinned to, as taskset takes them (`0`, `0-3`, `0,2`); default: CPU
    /// 0 (on a one-CPU machine, no pinning)
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// CPUs the load generator and wrk are pinned to (one client thread per CPU); default:
    /// every CPU but the server's
    #[arg(long)]
    pub client_cpus: Option<String>,
    /// echo-server's threads (SO_REUSEPORT, a loop each); the peers always run one, so
    /// more than 1 compares echo-server with itself across thread counts, not with peers
    /// (the HTTP servers always run one)
    #[arg(long, default_value_t = 1)]
    pub server_threads: u32,
    /// Arguments for criterion after `--`: a group filter, `--measurement-time 6`, ...
    /// (default `--warm-up-time 1 --measurement-time 2`); given, only the micro benchmarks
    /// run
    #[arg(
        last = true,
        value_name = "CRITERION",
        conflicts_with_all = [
            "macro_only",
            "quick",
            "filter",
            "http_only",
            "no_http",
            "storage_only",
            "no_storage"
        ]
    )]
    pub criterion_args: Vec<String>,
}

/// Runs what `args` asks for: micro, then macro.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    let started = Instant::now();
    let micro_only = args.micro_only || !args.criterion_args.is_empty();
    if args.quick {
        eprintln!(
            "bench --quick: the criterion micro benchmarks are left out (they take minutes; \
             `cargo xtask bench --micro-only` runs them)"
        );
    } else if !args.macro_only && args.filter.is_empty() && !args.http_only && !args.storage_only {
        micro(&args.criterion_args)?;
    }
    if micro_only {
        return Ok(());
    }
    if !cfg!(target_os = "linux") {
        eprintln!(
            "bench: the macro benchmarks are Linux only (they read /proc, pin with taskset \
             and count syscalls with perf): left out"
        );
        return Ok(());
    }
    let failed = macro_bench(args)?;
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    if failed > 0 {
        return Err(format!(
            "{failed} run(s) FAILED (wrong or missing echoes or responses, a process that did \
             not start or stop, or a storage run that failed): see the tables and \
             target/bench/logs/"
        ));
    }
    Ok(())
}

/// The macro benchmarks, echo, HTTP, then storage: each builds, runs, reports; returns how
/// many runs failed.
fn macro_bench(args: &BenchArgs) -> Result<usize, String> {
    let plan = plan::Plan::from_args(args)?;
    let http_plan = http::Plan::from_args(args, &plan);
    let storage_plan = storage::Plan::from_args(args, &plan);
    if plan.is_empty() && http_plan.is_empty() && storage_plan.is_empty() {
        return Err(format!(
            "--filter {} leaves no scenario or no server; scenarios: {}, {}, {}; servers: \
             {}, {}, {}",
            args.filter.join(","),
            plan::names(&plan::SCENARIOS, |s| s.name),
            plan::names(&http::SCENARIOS, |s| s.name),
            plan::names(&storage::SCENARIOS, |s| s.name),
            plan::names(&plan::SERVERS, |s| s.name),
            plan::names(&http::SERVERS, |s| s.name),
            plan::names(&storage::ENGINES, |e| e.name),
        ));
    }
    let mut failed = 0;
    // The loop's own cost under callgrind, beside the full macro run and `--quick` (not
    // when a filter, `--http-only` or `--storage-only` narrows the run).
    if args.filter.is_empty() && !args.http_only && !args.storage_only {
        cost::bench(args.quick)?;
    }
    if !plan.is_empty() {
        let binaries = plan::build(&plan)?;
        let plan = plan::Plan {
            absent: plan::absent(&plan, &binaries),
            ..plan
        };
        let runs = run::run_all(&plan, &binaries)?;
        let medians = report::medians(&plan, &runs);
        report::write(&plan, &runs, &medians)?;
        chart::draw(&plan, &runs, &medians)?;
        failed += runs.iter().filter(|run| run.failure.is_some()).count();
    }
    if !http_plan.is_empty() {
        failed += http::bench(&http_plan)?;
    }
    if !storage_plan.is_empty() {
        failed += storage::bench(&storage_plan)?;
    }
    Ok(failed)
}

/// The criterion micro benchmarks, with short times unless `criterion_args` says otherwise.
fn micro(criterion_args: &[String]) -> Result<(), String> {
    let mut args: Vec<&str> = criterion_args.iter().map(String::as_str).collect();
    if args.is_empty() {
        args = vec!["--warm-up-time", "1", "--measurement-time", "2"];
    }
    Cmd::cargo(&["bench", "-p", "dispatch-loop", "--bench", "dispatch", "--"])
        .args(&args)
        .run()
}
