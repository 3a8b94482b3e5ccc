//! `cargo xtask bench`: the criterion micro benchmarks of dispatch-core, then the macro
//! benchmark: the project's load generator against `echo-server` on each backend and against
//! peer echo servers (tokio, monoio, compio), interleaved, medians over rounds. Benchmarks
//! report; they never pass or fail a build (a macro run whose echoes came back wrong is
//! reported as FAILED, and the command then exits non-zero: the harness, not a number, is
//! broken).
//!
//! `docs/BENCHMARKS.md` says what each number means. The files:
//! `bench_plan.rs` (scenarios, servers, CPUs, filter), `bench_run.rs` (one run: processes,
//! `/proc`, `perf`), `bench_report.rs` (medians, table, JSON), `bench_chart.rs` (the SVG).

#[path = "bench_chart.rs"]
mod chart;
#[path = "bench_plan.rs"]
mod plan;
#[path = "bench_report.rs"]
mod report;
#[path = "bench_run.rs"]
mod run;

use std::time::Instant;

use clap::Args;

use crate::cmd::Cmd;

/// `cargo xtask bench`'s options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Every macro scenario briefly, once, against echo-server and tokio: a smoke test of
    /// the harness (what `cargo xtask test` runs); its numbers are not to be judged
    #[arg(long)]
    pub quick: bool,
    /// Only the criterion micro benchmarks
    #[arg(long, conflicts_with_all = ["macro_only", "quick"])]
    pub micro_only: bool,
    /// Only the macro benchmark (load generator against echo servers)
    #[arg(long)]
    pub macro_only: bool,
    /// Macro runs whose scenario or server contains one of these words, comma-separated
    /// (`--filter d16,tokio,uring`: scenarios matching a word, each with the servers
    /// matching a word; where no word names a scenario, every scenario, likewise servers);
    /// only the macro benchmark runs then
    #[arg(long, value_delimiter = ',', conflicts_with = "micro_only")]
    pub filter: Vec<String>,
    /// Rounds: each scenario runs every server once per round, interleaved (default 3;
    /// 1 with --quick)
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seconds measured per run (default 3; 0.3 with --quick)
    #[arg(long)]
    pub duration: Option<f64>,
    /// CPUs the server is pinned to, as taskset takes them (`0`, `0-3`, `0,2`); default: CPU
    /// 0 (on a one-CPU machine, no pinning)
    #[arg(long)]
    pub server_cpus: Option<String>,
    /// CPUs the load generator is pinned to (one client thread per CPU); default: every CPU
    /// but the server's
    #[arg(long)]
    pub client_cpus: Option<String>,
    /// echo-server's threads (SO_REUSEPORT, a loop each); the peers always run one, so
    /// more than 1 compares echo-server with itself across thread counts, not with peers
    #[arg(long, default_value_t = 1)]
    pub server_threads: u32,
    /// Arguments for criterion after `--`: a group filter, `--measurement-time 6`, ...
    /// (default `--warm-up-time 1 --measurement-time 2`); given, only the micro benchmarks
    /// run
    #[arg(
        last = true,
        value_name = "CRITERION",
        conflicts_with_all = ["macro_only", "quick", "filter"]
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
    } else if !args.macro_only && args.filter.is_empty() {
        micro(&args.criterion_args)?;
    }
    if micro_only {
        return Ok(());
    }
    if !cfg!(target_os = "linux") {
        eprintln!(
            "bench: the macro benchmark is Linux only (it reads /proc, pins with taskset and \
             counts syscalls with perf): left out"
        );
        return Ok(());
    }
    let failed = macro_bench(args)?;
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
    if failed > 0 {
        return Err(format!(
            "{failed} run(s) FAILED (wrong or missing echoes, or a process that did not start \
             or stop): see the table and target/bench/logs/"
        ));
    }
    Ok(())
}

/// The macro benchmark: builds, runs, reports; returns how many runs failed.
fn macro_bench(args: &BenchArgs) -> Result<usize, String> {
    let plan = plan::Plan::from_args(args)?;
    let binaries = plan::build(&plan)?;
    let runs = run::run_all(&plan, &binaries)?;
    let medians = report::medians(&plan, &runs);
    report::write(&plan, &runs, &medians)?;
    chart::draw(&plan, &medians)?;
    Ok(runs.iter().filter(|run| run.failure.is_some()).count())
}

/// The criterion micro benchmarks, with short times unless `criterion_args` says otherwise.
fn micro(criterion_args: &[String]) -> Result<(), String> {
    let mut args: Vec<&str> = criterion_args.iter().map(String::as_str).collect();
    if args.is_empty() {
        args = vec!["--warm-up-time", "1", "--measurement-time", "2"];
    }
    Cmd::cargo(&["bench", "-p", "dispatch-core", "--bench", "dispatch", "--"])
        .args(&args)
        .run()
}
