//! The storage benchmark's results: the median of each (scenario, engine) over its rounds as
//! a markdown table, then the verdicts against the targets of issue 18 (the loop on io_uring
//! at depth 32: IOPS at least 0.95x fio's io_uring engine, CPU per operation at most 1.1x;
//! at depth 1, p50 within 5% of fio's; the loop on epoll at least fio's psync engine at the
//! same thread count; a group commit's records/s as a multiple of one `fdatasync` per
//! record), on stdout and in `target/bench/storage.md`; every run and median as JSON in
//! `target/bench/storage.json`. A (scenario, engine) with a failed round shows FAILED; an
//! engine that could not run is listed as SKIPPED with why. Verdicts are printed, never
//! asserted.

use std::fmt::Write as _;

use super::report::{machine, median, number, quoted};
use super::storage::{Kind, Plan, Setup, FIO_PSYNC, FIO_URING};
use super::storage_run::RunResult;
use crate::project_root;

/// IOPS the loop on io_uring is to reach at depth 32, at least, as a share of fio's.
const IOPS_RATIO_TARGET: f64 = 0.95;
/// CPU per operation it may spend there, at most, as a share of fio's.
const CPU_RATIO_TARGET: f64 = 1.1;
/// Its p50 at depth 1, at most, as a share of fio's (within 5%).
const P50_RATIO_TARGET: f64 = 1.05;

/// The medians of one (scenario, engine) over its rounds.
#[derive(Debug, Clone, Default)]
pub struct Median {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The engine's name.
    pub engine: &'static str,
    /// Rounds run.
    pub rounds: u32,
    /// The first failure among them: then no number below is shown.
    pub failure: Option<String>,
    /// Operations (records) per second.
    pub ops_per_s: f64,
    /// The lowest and highest rate over the rounds: the spread a virtual disk gives.
    pub ops_range: (f64, f64),
    /// Latency percentiles, µs.
    pub p50_us: Option<f64>,
    /// 99th.
    pub p99_us: Option<f64>,
    /// CPU (user + system) per operation, µs: the median of each run's sum.
    pub cpu_us: f64,
    /// Of which user (median on its own).
    pub user_us: f64,
    /// Of which system (median on its own).
    pub sys_us: f64,
    /// A group commit's records per commit.
    pub records_per_commit: Option<f64>,
    /// fio's appends: the `fdatasync` p50, µs.
    pub sync_p50_us: Option<f64>,
    /// The loop's syscalls per operation.
    pub syscalls_per_op: Option<f64>,
}

/// The medians, in the plan's order (scenario, then engine).
pub fn medians(plan: &Plan, runs: &[RunResult]) -> Vec<Median> {
    let mut medians = Vec::new();
    for scenario in &plan.scenarios {
        for engine in &plan.engines {
            let mine: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.scenario == scenario.name && r.engine == engine.name)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let of = |f: fn(&RunResult) -> f64| median(mine.iter().map(|r| f(r)).collect());
            let of_opt = |f: fn(&RunResult) -> Option<f64>| {
                let values: Option<Vec<f64>> = mine.iter().map(|r| f(r)).collect();
                values.map(median)
            };
            let rates = mine.iter().map(|r| r.ops_per_s);
            let low = rates.clone().fold(f64::INFINITY, f64::min);
            medians.push(Median {
                scenario: scenario.name,
                engine: engine.name,
                rounds: mine.len() as u32,
                failure: mine.iter().find_map(|r| r.failure.clone()),
                ops_per_s: of(|r| r.ops_per_s),
                ops_range: (low, rates.fold(0.0, f64::max)),
                p50_us: of_opt(|r| r.p50_us),
                p99_us: of_opt(|r| r.p99_us),
                cpu_us: of(|r| r.user_us + r.sys_us),
                user_us: of(|r| r.user_us),
                sys_us: of(|r| r.sys_us),
                records_per_commit: of_opt(|r| r.records_per_commit),
                sync_p50_us: of_opt(|r| r.sync_p50_us),
                syscalls_per_op: of_opt(|r| r.syscalls_per_op),
            });
        }
    }
    medians
}

/// Prints the tables and writes the markdown and JSON files.
pub fn write(
    plan: &Plan,
    setup: &Setup,
    runs: &[RunResult],
    medians: &[Median],
) -> Result<(), String> {
    let dir = project_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut text = format!(
        "{}\n{}",
        table(plan, setup, medians),
        verdicts(plan, medians)
    );
    for line in skipped(setup) {
        let _ = writeln!(text, "\nSKIPPED: {line}.");
    }
    println!("{text}");
    let files = [
        (dir.join("storage.md"), text),
        (dir.join("storage.json"), json(plan, setup, runs, medians)),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// The engines that could not run, and why.
fn skipped(setup: &Setup) -> Vec<String> {
    let mut lines = Vec::new();
    if let Err(why) = &setup.fio {
        lines.push(format!("{FIO_URING} and {FIO_PSYNC}: {why}"));
    }
    if let Err(why) = &setup.program {
        lines.push(format!("the loop's engines: {why}"));
    }
    lines
}

/// How the runs were made, in one line.
fn conditions(plan: &Plan, setup: &Setup) -> String {
    let fio = setup.fio.as_deref().unwrap_or("fio missing");
    format!(
        "{} round(s), {} s warm-up (fio's ramp_time), {} s measured; file {} ({} MiB, \
         written before the runs; {}); 4 KiB blocks, O_DIRECT; unpinned; {fio}",
        plan.rounds,
        plan.warmup_s,
        plan.duration_s,
        setup.file.display(),
        plan.file_bytes >> 20,
        setup.disk,
    )
}

fn table(plan: &Plan, setup: &Setup, medians: &[Median]) -> String {
    let mut out = String::from("Storage benchmark (fio beside the loop)  \n");
    let _ = writeln!(out, "Machine: {}  ", machine());
    let _ = writeln!(out, "Runs: {}  ", conditions(plan, setup));
    if plan.quick {
        out.push_str("**--quick: a smoke test of the harness; do not judge these numbers.**  \n");
    }
    out.push_str(
        "Medians over rounds (min–max: the lowest and highest round). IOPS: operations, or \
         durable records for appends, per second. \
         Latency: schedule to callback (the loop), fio's total latency (fio); fio times an \
         append's write and its fdatasync apart, so its append rows show the fdatasync's p50 \
         in the last column instead.\n\n",
    );
    out.push_str(
        "| scenario | engine | IOPS | IOPS min–max | p50 µs | p99 µs | CPU µs/op (user+sys) \
         | syscalls/op | note |\n|---|---|--:|--:|--:|--:|--:|--:|---|\n",
    );
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
    for m in medians {
        if let Some(failure) = &m.failure {
            let _ = writeln!(
                out,
                "| {} | {} | FAILED: {failure} ||||||| ",
                m.scenario, m.engine
            );
            continue;
        }
        let note = match (m.records_per_commit, m.sync_p50_us) {
            (Some(records), _) => format!("{records:.1} records/commit"),
            (None, Some(sync)) => format!("fdatasync p50 {sync:.1} µs"),
            _ => String::new(),
        };
        let syscalls = m
            .syscalls_per_op
            .map_or("n/a".to_owned(), |v| format!("{v:.2}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0}–{:.0} | {} | {} | {:.2} ({:.2}+{:.2}) | {syscalls} \
             | {note} |",
            m.scenario,
            m.engine,
            m.ops_per_s,
            m.ops_range.0,
            m.ops_range.1,
            opt(m.p50_us),
            opt(m.p99_us),
            m.cpu_us,
            m.user_us,
            m.sys_us,
        );
    }
    out
}

/// The median of `engine` in `scenario`, where it ran and did not fail.
fn find<'a>(medians: &'a [Median], scenario: &str, engine: &str) -> Option<&'a Median> {
    medians
        .iter()
        .find(|m| m.scenario == scenario && m.engine == engine && m.failure.is_none())
}

/// `0.93x: met` or `1.12x: not met`, judged as printed (two decimals); `n/a (why)` where a
/// side is missing.
fn verdict(ratio: Option<f64>, met: fn(f64) -> bool) -> String {
    match ratio {
        Some(ratio) if ratio.is_finite() => {
            let shown = (ratio * 100.0).round() / 100.0;
            let word = if met(shown) { "met" } else { "not met" };
            format!("{shown:.2}x: {word}")
        }
        _ => "n/a (a figure is missing: see the table)".into(),
    }
}

/// One line per target and scenario it applies to.
fn verdicts(plan: &Plan, medians: &[Median]) -> String {
    let mut out = String::from("| target | scenario | verdict |\n|---|---|---|\n");
    let ratio = |scenario: &str, mine: &str, theirs: &str, f: fn(&Median) -> Option<f64>| {
        let mine = find(medians, scenario, mine).and_then(f)?;
        let theirs = find(medians, scenario, theirs).and_then(f)?;
        Some(mine / theirs)
    };
    for scenario in &plan.scenarios {
        let s = scenario.name;
        let mut line = |target: String, verdict: String| {
            let _ = writeln!(out, "| {target} | {s} | {verdict} |");
        };
        if scenario.kind != Kind::Append && scenario.depth == 32 {
            let iops = ratio(s, "loop-uring", FIO_URING, |m| Some(m.ops_per_s));
            let target = format!("loop-uring IOPS ≥ {IOPS_RATIO_TARGET}x {FIO_URING}");
            line(target, verdict(iops, |r| IOPS_RATIO_TARGET <= r));
            let cpu = ratio(s, "loop-uring", FIO_URING, |m| Some(m.cpu_us));
            let target = format!("loop-uring CPU/op ≤ {CPU_RATIO_TARGET}x {FIO_URING}");
            line(target, verdict(cpu, |r| r <= CPU_RATIO_TARGET));
        }
        if scenario.kind != Kind::Append && scenario.depth == 1 {
            let p50 = ratio(s, "loop-uring", FIO_URING, |m| m.p50_us);
            let target = format!("loop-uring p50 ≤ {P50_RATIO_TARGET}x {FIO_URING}");
            line(target, verdict(p50, |r| r <= P50_RATIO_TARGET));
        }
        if scenario.kind != Kind::Append {
            let iops = ratio(s, "loop-epoll", FIO_PSYNC, |m| Some(m.ops_per_s));
            let target = format!("loop-epoll (inline, 1 thread) IOPS ≥ {FIO_PSYNC} (1 job)");
            line(target, verdict(iops, |r| 1.0 <= r));
            let iops = ratio(s, "loop-epoll-w1", FIO_PSYNC, |m| Some(m.ops_per_s));
            let target = format!("loop-epoll-w1 (1 file worker) IOPS ≥ {FIO_PSYNC} (1 job)");
            line(target, verdict(iops, |r| 1.0 <= r));
            continue;
        }
        for mine in ["group-uring", "group-epoll", "loop-uring"] {
            let records = ratio(s, mine, FIO_PSYNC, |m| Some(m.ops_per_s));
            let shown = records.map_or("n/a (a figure is missing)".into(), |r| format!("{r:.2}x"));
            let target = format!(
                "{mine} records/s as a multiple of {FIO_PSYNC} (one fdatasync per record, \
                 {} job(s)); reported, no target",
                scenario.depth
            );
            line(target, shown);
        }
    }
    out
}

fn fields(m: &Median) -> String {
    format!(
        "\"scenario\": {}, \"engine\": {}, \"rounds\": {}, \"failed\": {}, \"failure\": {}, \
         \"ops_per_s\": {}, \"p50_us\": {}, \"p99_us\": {}, \"cpu_us_per_op\": {}, \
         \"user_us_per_op\": {}, \"sys_us_per_op\": {}, \"records_per_commit\": {}, \
         \"fio_fdatasync_p50_us\": {}, \"syscalls_per_op\": {}, \"ops_per_s_min\": {}, \
         \"ops_per_s_max\": {}",
        quoted(m.scenario),
        quoted(m.engine),
        m.rounds,
        m.failure.is_some(),
        m.failure.as_deref().map_or("null".into(), quoted),
        number(Some(m.ops_per_s)),
        number(m.p50_us),
        number(m.p99_us),
        number(Some(m.cpu_us)),
        number(Some(m.user_us)),
        number(Some(m.sys_us)),
        number(m.records_per_commit),
        number(m.sync_p50_us),
        number(m.syscalls_per_op),
        number(Some(m.ops_range.0)),
        number(Some(m.ops_range.1)),
    )
}

fn json(plan: &Plan, setup: &Setup, runs: &[RunResult], medians: &[Median]) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"machine\": {},", quoted(&machine()));
    let _ = writeln!(
        out,
        "  \"conditions\": {},",
        quoted(&conditions(plan, setup))
    );
    let _ = writeln!(out, "  \"quick\": {},", plan.quick);
    let skipped: Vec<String> = skipped(setup).iter().map(|s| quoted(s)).collect();
    let _ = writeln!(out, "  \"skipped\": [{}],", skipped.join(", "));
    out.push_str("  \"runs\": [\n");
    let lines: Vec<String> = runs
        .iter()
        .map(|r| {
            let as_median = Median {
                scenario: r.scenario,
                engine: r.engine,
                rounds: 1,
                failure: r.failure.clone(),
                ops_per_s: r.ops_per_s,
                ops_range: (r.ops_per_s, r.ops_per_s),
                p50_us: r.p50_us,
                p99_us: r.p99_us,
                cpu_us: r.user_us + r.sys_us,
                user_us: r.user_us,
                sys_us: r.sys_us,
                records_per_commit: r.records_per_commit,
                sync_p50_us: r.sync_p50_us,
                syscalls_per_op: r.syscalls_per_op,
            };
            let common = fields(&as_median);
            format!(
                "    {{\"round\": {}, \"ops\": {}, {common}}}",
                r.round, r.ops
            )
        })
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ],\n  \"medians\": [\n");
    let lines: Vec<String> = medians
        .iter()
        .map(|m| format!("    {{{}}}", fields(m)))
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::storage::{Scenario, ENGINES, SCENARIOS};
    use super::*;

    fn median_of(scenario: &'static str, engine: &'static str, iops: f64, cpu: f64) -> Median {
        Median {
            scenario,
            engine,
            ops_per_s: iops,
            cpu_us: cpu,
            p50_us: Some(iops / 1000.0),
            ..Median::default()
        }
    }

    fn plan(scenarios: Vec<Scenario>) -> Plan {
        Plan {
            scenarios,
            engines: ENGINES.to_vec(),
            rounds: 1,
            warmup_s: 0.0,
            duration_s: 1.0,
            file_bytes: 1 << 20,
            quick: false,
        }
    }

    #[test]
    fn verdicts_judge_each_target() {
        let d32 = SCENARIOS
            .iter()
            .copied()
            .filter(|s| s.name == "randread-d32");
        let medians = [
            median_of("randread-d32", FIO_URING, 100_000.0, 10.0),
            median_of("randread-d32", FIO_PSYNC, 5_000.0, 10.0),
            median_of("randread-d32", "loop-uring", 96_000.0, 11.2),
            median_of("randread-d32", "loop-epoll", 4_000.0, 10.0),
        ];
        let table = verdicts(&plan(d32.collect()), &medians);
        assert!(table.contains("| 0.96x: met |"), "{table}");
        assert!(table.contains("| 1.12x: not met |"), "{table}");
        assert!(table.contains("| 0.80x: not met |"), "{table}");
        let alone = verdicts(&plan(SCENARIOS[..1].to_vec()), &medians[2..]);
        assert!(alone.contains("n/a"), "{alone}");
    }

    #[test]
    fn appends_report_multiples() {
        let c4 = SCENARIOS.iter().copied().filter(|s| s.name == "append-c4");
        let medians = [
            median_of("append-c4", FIO_PSYNC, 1_000.0, 50.0),
            median_of("append-c4", "group-uring", 3_500.0, 20.0),
        ];
        let table = verdicts(&plan(c4.collect()), &medians);
        assert!(table.contains("| 3.50x |"), "{table}");
        assert!(!table.contains("met"), "{table}");
    }
}
