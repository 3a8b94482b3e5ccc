//! One storage run: fio with the scenario's job, its JSON read with serde_json (IOPS, total
//! latency percentiles, `usr_cpu`/`sys_cpu` over the job's runtime), or the loop's storage
//! program with `DISPATCH_BACKEND` set, its one `result` line read (it measures its own
//! window, latencies and CPU time: see `examples/storage_bench.rs`). Every wait is bounded; a
//! process that fails, or a loop that ran another backend than asked (a fallback), fails the
//! run.

use std::fs::File;
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::run::Proc;
use super::storage::{EngineKind, Kind, Plan, Scenario, Setup, BLOCK};
use crate::project_root;

/// What one run measured; `failure` set means no number of it may be used.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The engine's name.
    pub engine: &'static str,
    /// 1-based.
    pub round: u32,
    /// Why the run failed.
    pub failure: Option<String>,
    /// Operations (records, for appends) completed in the measured window.
    pub ops: u64,
    /// Per second.
    pub ops_per_s: f64,
    /// Latency percentiles, µs: schedule to callback for the program, fio's total latency
    /// (submission and completion) for fio; `None` where fio times a record's write and its
    /// `fdatasync` apart (appends).
    pub p50_us: Option<f64>,
    /// 99th.
    pub p99_us: Option<f64>,
    /// User CPU per operation, µs.
    pub user_us: f64,
    /// System CPU per operation, µs.
    pub sys_us: f64,
    /// A group commit's mean records per commit.
    pub records_per_commit: Option<f64>,
    /// fio's append: the median `fdatasync` latency, µs, timed apart from the write.
    pub sync_p50_us: Option<f64>,
    /// The loop's syscalls per operation (`Stats::syscalls`); `None` for fio.
    pub syscalls_per_op: Option<f64>,
}

/// Runs the plan, printing progress on stderr; engines that cannot run here (fio missing,
/// the program not built) are left out of the runs (the report names them).
pub fn run_all(plan: &Plan, setup: &Setup) -> Result<Vec<RunResult>, String> {
    let logs = project_root().join("target/bench/logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let runs: Vec<_> = plan
        .runs()
        .into_iter()
        .filter(|(_, engine, _)| {
            if engine.is_fio() {
                setup.fio.is_ok()
            } else {
                setup.program.is_ok()
            }
        })
        .collect();
    let mut results = Vec::new();
    for (n, &(scenario, engine, round)) in runs.iter().enumerate() {
        let left_s = (plan.warmup_s + plan.duration_s + 0.5) * (runs.len() - n) as f64;
        eprintln!(
            "bench storage [{}/{}] {} {} round {}/{}, about {left_s:.0} s left",
            n + 1,
            runs.len(),
            scenario.name,
            engine.name,
            round,
            plan.rounds,
        );
        let log = logs.join(format!("{}-{}-{round}.log", scenario.name, engine.name));
        let mut result = run_one(plan, setup, scenario, engine.kind, &log);
        result.scenario = scenario.name;
        result.engine = engine.name;
        result.round = round;
        if let Some(failure) = &result.failure {
            eprintln!("bench: FAILED: {failure} (log: {})", log.display());
        }
        results.push(result);
    }
    Ok(results)
}

fn run_one(
    plan: &Plan,
    setup: &Setup,
    scenario: Scenario,
    kind: EngineKind,
    log: &std::path::Path,
) -> RunResult {
    let measured = File::create(log)
        .map_err(|e| format!("{}: {e}", log.display()))
        .and_then(|log| match kind {
            EngineKind::FioUring | EngineKind::FioPsync => fio(plan, setup, scenario, kind, log),
            EngineKind::Loop { backend, workers } => {
                program(plan, setup, scenario, (backend, workers), false, log)
            }
            EngineKind::Group { backend, workers } => {
                program(plan, setup, scenario, (backend, workers), true, log)
            }
        });
    measured.unwrap_or_else(|failure| RunResult {
        failure: Some(failure),
        ..RunResult::default()
    })
}

/// Runs `args` (its stderr and, once it ended, its stdout appended to `log`) within the
/// run's time and 30 s more; returns its stdout, or why it failed.
fn finish(plan: &Plan, args: Command, mut log: File) -> Result<String, String> {
    let _ = writeln!(log, "$ {args:?}");
    let clone = log.try_clone().map_err(|e| e.to_string())?;
    let mut proc = Proc::spawn(args, clone, false)?;
    let timeout = Duration::from_secs_f64(plan.warmup_s + plan.duration_s + 30.0);
    let (lines, status) = proc.finish(timeout)?;
    let stdout = lines.join("\n");
    let _ = writeln!(log, "{stdout}");
    if !status.success() {
        return Err(format!("{status}: see the log"));
    }
    Ok(stdout)
}

/// fio's command line for the scenario.
fn fio_args(plan: &Plan, setup: &Setup, scenario: Scenario, kind: EngineKind) -> Vec<String> {
    let ms = |s: f64| format!("{}ms", (s * 1000.0).round() as u64);
    let mut args = vec![
        format!("--name={}", scenario.name),
        format!("--filename={}", setup.file.display()),
        "--direct=1".into(),
        format!("--bs={BLOCK}"),
        format!("--runtime={}", ms(plan.duration_s)),
        format!("--ramp_time={}", ms(plan.warmup_s)),
        "--time_based".into(),
        "--group_reporting".into(),
        "--lat_percentiles=1".into(),
        "--output-format=json".into(),
    ];
    let jobs = match (scenario.kind, kind) {
        (Kind::Append, _) => scenario.depth,
        _ => 1,
    };
    // Each append job writes a region of its own, as each caller of a log would write its
    // own records: --size is per job.
    let size = plan.file_bytes / u64::from(jobs) / BLOCK * BLOCK;
    args.push(format!("--size={size}"));
    args.push(format!("--numjobs={jobs}"));
    if jobs > 1 {
        args.push(format!("--offset_increment={size}"));
    }
    match scenario.kind {
        Kind::RandRead => args.extend(["--rw=randread".into(), "--norandommap".into()]),
        Kind::RandWrite => args.extend(["--rw=randwrite".into(), "--norandommap".into()]),
        Kind::Append => args.extend(["--rw=write".into(), "--fdatasync=1".into()]),
    }
    match kind {
        EngineKind::FioUring => {
            args.push("--ioengine=io_uring".into());
            args.push(format!("--iodepth={}", scenario.depth));
        }
        _ => args.push("--ioengine=psync".into()),
    }
    args
}

fn fio(
    plan: &Plan,
    setup: &Setup,
    scenario: Scenario,
    kind: EngineKind,
    log: File,
) -> Result<RunResult, String> {
    let mut command = Command::new("fio");
    command.args(fio_args(plan, setup, scenario, kind));
    let stdout = finish(plan, command, log)?;
    parse_fio(&stdout, scenario.kind)
}

/// fio's figures from its JSON (`--group_reporting`: one job entry for all jobs). fio may
/// print a notice before the JSON; it starts at the first `{`.
fn parse_fio(stdout: &str, kind: Kind) -> Result<RunResult, String> {
    let start = stdout.find('{').ok_or("fio printed no JSON")?;
    let json: Value =
        serde_json::from_str(&stdout[start..]).map_err(|e| format!("fio's JSON: {e}"))?;
    let job = &json["jobs"][0];
    if job["error"].as_i64() != Some(0) {
        return Err(format!("fio's job failed: error {}", job["error"]));
    }
    let side = if kind == Kind::RandRead {
        "read"
    } else {
        "write"
    };
    let io = &job[side];
    let number = |v: &Value, what: &str| v.as_f64().ok_or(format!("fio's JSON: no {what}"));
    let ops = io["total_ios"].as_u64().ok_or("fio's JSON: no total_ios")?;
    if ops == 0 {
        return Err("fio counted no operation".into());
    }
    // usr_cpu and sys_cpu are percentages of job_runtime (ms, summed over the jobs).
    let runtime_us = number(&job["job_runtime"], "job_runtime")? * 1000.0;
    let per_op = |percent: f64| percent / 100.0 * runtime_us / ops as f64;
    let percentile = |lat: &Value, p: &str| lat["percentile"][p].as_f64().map(|ns| ns / 1e3);
    let (p50_us, p99_us) = if kind == Kind::Append {
        (None, None)
    } else {
        let lat = &io["lat_ns"];
        (percentile(lat, "50.000000"), percentile(lat, "99.000000"))
    };
    Ok(RunResult {
        ops,
        ops_per_s: number(&io["iops"], "iops")?,
        p50_us,
        p99_us,
        user_us: per_op(number(&job["usr_cpu"], "usr_cpu")?),
        sys_us: per_op(number(&job["sys_cpu"], "sys_cpu")?),
        sync_p50_us: percentile(&job["sync"]["lat_ns"], "50.000000"),
        ..RunResult::default()
    })
}

fn program(
    plan: &Plan,
    setup: &Setup,
    scenario: Scenario,
    (backend, workers): (&str, u32),
    group: bool,
    log: File,
) -> Result<RunResult, String> {
    let binary = setup.program.as_ref().map_err(String::clone)?;
    let mode = match (scenario.kind, group) {
        (Kind::RandRead, _) => "randread",
        (Kind::RandWrite, _) => "randwrite",
        (Kind::Append, false) => "append",
        (Kind::Append, true) => "group",
    };
    let mut command = Command::new(binary);
    command
        .arg(format!("--file={}", setup.file.display()))
        .arg(format!("--mode={mode}"))
        .arg(format!("--depth={}", scenario.depth))
        .arg(format!("--seconds={}", plan.duration_s))
        .arg(format!("--warmup={}", plan.warmup_s))
        .arg(format!("--workers={workers}"))
        .env("DISPATCH_BACKEND", backend);
    let stdout = finish(plan, command, log)?;
    parse_program(&stdout, backend)
}

/// The program's `result` line (`key=value` pairs).
fn parse_program(stdout: &str, backend: &str) -> Result<RunResult, String> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("result "))
        .ok_or("the program printed no `result` line")?;
    let field = |key: &str| -> Result<f64, String> {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("no {key} in `{line}`"))
    };
    let ran = line
        .split_whitespace()
        .find_map(|pair| pair.strip_prefix("backend="))
        .unwrap_or("?");
    if ran != backend {
        return Err(format!(
            "asked for {backend}, the loop ran {ran} (a fallback)"
        ));
    }
    let ops = field("ops")?;
    if ops < 1.0 {
        return Err("the program counted no operation".into());
    }
    let cpu_ns = field("cpu_ns")?;
    let user_ns = field("user_ns")?;
    let commits = field("commits")?;
    Ok(RunResult {
        ops: ops as u64,
        ops_per_s: ops / field("window_ns")? * 1e9,
        p50_us: Some(field("p50_ns")? / 1e3),
        p99_us: Some(field("p99_ns")? / 1e3),
        user_us: user_ns / ops / 1e3,
        sys_us: (cpu_ns - user_ns) / ops / 1e3,
        records_per_commit: (commits > 0.0).then(|| ops / commits),
        syscalls_per_op: Some(field("syscalls")? / ops),
        ..RunResult::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIO: &str = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "randread-d32", "error" : 0, "job_runtime" : 1000,
      "usr_cpu" : 5.0, "sys_cpu" : 45.0,
      "read" : { "total_ios" : 80000, "iops" : 80000.0,
                 "lat_ns" : { "percentile" : { "50.000000" : 350208,
                                               "99.000000" : 489472 } } },
      "write" : { "total_ios" : 0, "iops" : 0.0 },
      "sync" : { "total_ios" : 0, "lat_ns" : { "min" : 0 } }
    }
  ]
}"#;

    #[test]
    fn fio_json_is_read() {
        let run = parse_fio(FIO, Kind::RandRead).unwrap();
        assert_eq!(run.ops, 80000);
        assert_eq!(run.ops_per_s, 80000.0);
        assert_eq!(run.p50_us, Some(350.208));
        assert_eq!(run.p99_us, Some(489.472));
        // 5 % of 1 s over 80,000 operations.
        assert!((run.user_us - 0.625).abs() < 1e-9, "{}", run.user_us);
        assert!((run.sys_us - 5.625).abs() < 1e-9, "{}", run.sys_us);
        assert!(parse_fio(FIO, Kind::RandWrite).is_err(), "no write counted");
        let failed = FIO.replace("\"error\" : 0", "\"error\" : 5");
        assert!(parse_fio(&failed, Kind::RandRead).is_err());
        assert!(parse_fio("fio: file not found", Kind::RandRead).is_err());
    }

    #[test]
    fn program_line_is_read() {
        let line = "result backend=io_uring mode=group depth=4 ops=3000 window_ns=1000000000 \
                    p50_ns=400000 p99_ns=900000 cpu_ns=30000000 user_ns=6000000 commits=750 \
                    syscalls=1500";
        let run = parse_program(line, "io_uring").unwrap();
        assert_eq!(run.ops, 3000);
        assert_eq!(run.ops_per_s, 3000.0);
        assert_eq!(run.p50_us, Some(400.0));
        assert_eq!(run.user_us, 2.0);
        assert_eq!(run.sys_us, 8.0);
        assert_eq!(run.records_per_commit, Some(4.0));
        assert_eq!(run.syscalls_per_op, Some(0.5));
        let fallback = parse_program(line, "epoll").unwrap_err();
        assert!(fallback.contains("fallback"), "{fallback}");
        assert!(parse_program("nothing", "epoll").is_err());
    }
}
