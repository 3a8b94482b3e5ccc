//! The HTTP benchmark's results: the median of each (scenario, server) over its rounds as a
//! markdown table, then each server's ratios to hyper's medians with a verdict against the
//! targets (CPU per request at most 0.8x hyper's, requests/s at least 1.0x), on stdout and in
//! `target/bench/http.md`; every run and median as JSON in `target/bench/http.json`. A
//! (scenario, server) with a failed round shows FAILED, never a number. Verdicts are printed,
//! never asserted.

use std::fmt::Write as _;

use super::http::{Plan, BASELINE, PATH};
use super::http_run::RunResult;
use super::report::{machine, median, number, quoted};
use crate::project_root;

/// CPU per request the project's server is to spend, at most, as a share of hyper's.
const CPU_RATIO_TARGET: f64 = 0.8;
/// Requests per second it is to serve, at least, as a share of hyper's.
const RATE_RATIO_TARGET: f64 = 1.0;

/// The medians of one (scenario, server) over its rounds.
#[derive(Debug, Clone, Default)]
pub struct Median {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The server's name.
    pub server: &'static str,
    /// Rounds run.
    pub rounds: u32,
    /// The first failure among them: then no number below is shown.
    pub failure: Option<String>,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Latency percentiles, µs (`None` under pipelining).
    pub p50_us: Option<f64>,
    /// 99th.
    pub p99_us: Option<f64>,
    /// Server CPU (user + system) per request, µs: the median of each run's sum.
    pub cpu_us: f64,
    /// Of which user, µs (median on its own).
    pub user_us: f64,
    /// Of which system, µs (median on its own).
    pub sys_us: f64,
    /// Peak RSS, KiB.
    pub rss_kib: Option<u64>,
}

/// The medians, in the plan's order (scenario, then server).
pub fn medians(plan: &Plan, runs: &[RunResult]) -> Vec<Median> {
    let mut medians = Vec::new();
    for scenario in &plan.scenarios {
        for server in &plan.servers {
            let mine: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.scenario == scenario.name && r.server == server.name)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let of = |f: fn(&RunResult) -> f64| median(mine.iter().map(|r| f(r)).collect());
            let of_opt = |f: fn(&RunResult) -> Option<f64>| {
                let values: Option<Vec<f64>> = mine.iter().map(|r| f(r)).collect();
                values.map(median)
            };
            medians.push(Median {
                scenario: scenario.name,
                server: server.name,
                rounds: mine.len() as u32,
                failure: mine.iter().find_map(|r| r.failure.clone()),
                requests_per_s: of(|r| r.requests_per_s),
                p50_us: of_opt(|r| r.p50_us),
                p99_us: of_opt(|r| r.p99_us),
                cpu_us: of(|r| r.user_us + r.sys_us),
                user_us: of(|r| r.user_us),
                sys_us: of(|r| r.sys_us),
                rss_kib: of_opt(|r| r.rss_kib.map(|kib| kib as f64)).map(|kib| kib as u64),
            });
        }
    }
    medians
}

/// Prints the tables and writes the markdown and JSON files; `left_out` says which servers
/// did not run, and why.
pub fn write(
    plan: &Plan,
    wrk: &str,
    runs: &[RunResult],
    medians: &[Median],
    left_out: &[String],
) -> Result<(), String> {
    let dir = project_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut text = format!("{}\n{}", table(plan, wrk, medians), ratios(medians));
    for line in left_out {
        let _ = writeln!(text, "\nLeft out: {line}.");
    }
    println!("{text}");
    let files = [
        (dir.join("http.md"), text),
        (dir.join("http.json"), json(plan, wrk, runs, medians)),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// How the runs were made, in one line.
fn conditions(plan: &Plan, wrk: &str) -> String {
    let cpus = |c: &Option<String>| c.clone().unwrap_or_else(|| "unpinned".into());
    format!(
        "{} round(s), {} s warm-up (a wrk run of its own), {} s measured; server CPUs {}, wrk \
         CPUs {} ({} thread(s)); every server 1 thread; {wrk}, GET {PATH}, keep-alive, \
         pipelined scenarios through bench/wrk/pipeline.lua",
        plan.rounds,
        plan.warmup_s,
        plan.duration_s,
        cpus(&plan.server_cpus),
        cpus(&plan.client_cpus),
        plan.client_threads,
    )
}

fn table(plan: &Plan, wrk: &str, medians: &[Median]) -> String {
    let mut out = String::from("HTTP benchmark (wrk)  \n");
    let _ = writeln!(out, "Machine: {}  ", machine());
    let _ = writeln!(out, "Runs: {}  ", conditions(plan, wrk));
    if plan.quick {
        out.push_str("**--quick: a smoke test of the harness; do not judge these numbers.**  \n");
    }
    out.push_str(
        "Medians over rounds; latency n/a under pipelining (wrk's percentiles are not \
         meaningful there: docs/BENCHMARKS.md).\n\n",
    );
    out.push_str(
        "| scenario | server | requests/s | p50 µs | p99 µs | CPU µs/request (user+sys) \
         | peak RSS MiB |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|\n");
    let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.1}"));
    for m in medians {
        if let Some(failure) = &m.failure {
            let _ = writeln!(
                out,
                "| {} | {} | FAILED: {failure} ||||| ",
                m.scenario, m.server
            );
            continue;
        }
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {} | {} | {:.3} ({:.3}+{:.3}) | {} |",
            m.scenario,
            m.server,
            m.requests_per_s,
            opt(m.p50_us),
            opt(m.p99_us),
            m.cpu_us,
            m.user_us,
            m.sys_us,
            opt(m.rss_kib.map(|kib| kib as f64 / 1024.0)),
        );
    }
    out
}

/// Each server against hyper in the same scenario, with a verdict on each target.
fn ratios(medians: &[Median]) -> String {
    if medians.iter().all(|m| m.server == BASELINE) {
        return format!("No ratio: no server but {BASELINE} ran.\n");
    }
    let mut out = format!(
        "| scenario | server | requests/s vs {BASELINE} (target ≥ {RATE_RATIO_TARGET:.1}x) \
         | CPU/request vs {BASELINE} (target ≤ {CPU_RATIO_TARGET:.1}x) |\n|---|---|---|---|\n"
    );
    for m in medians.iter().filter(|m| m.server != BASELINE) {
        let baseline = medians
            .iter()
            .find(|b| b.scenario == m.scenario && b.server == BASELINE);
        let (rate, cpu) = match baseline {
            _ if m.failure.is_some() => ("n/a (FAILED)".into(), "n/a (FAILED)".into()),
            Some(b) if b.failure.is_none() => (
                verdict(m.requests_per_s / b.requests_per_s, |r| {
                    RATE_RATIO_TARGET <= r
                }),
                verdict(m.cpu_us / b.cpu_us, |r| r <= CPU_RATIO_TARGET),
            ),
            _ => {
                let none = format!("n/a (no {BASELINE} figure)");
                (none.clone(), none)
            }
        };
        let _ = writeln!(out, "| {} | {} | {rate} | {cpu} |", m.scenario, m.server);
    }
    out
}

/// `0.93x: met` or `1.12x: not met`; n/a where the ratio is not a number. The ratio is judged
/// as printed, to two decimals, so that `1.00x: not met` never appears.
fn verdict(ratio: f64, met: fn(f64) -> bool) -> String {
    if !ratio.is_finite() {
        return "n/a".into();
    }
    let shown = (ratio * 100.0).round() / 100.0;
    let word = if met(shown) { "met" } else { "not met" };
    format!("{shown:.2}x: {word}")
}

/// The fields every run and every median share, as JSON members.
fn fields(
    scenario: &str,
    server: &str,
    failure: &Option<String>,
    rate: f64,
    latency: [Option<f64>; 2],
    cpu: [f64; 2],
    rss_kib: Option<u64>,
) -> String {
    format!(
        "\"scenario\": {}, \"server\": {}, \"failed\": {}, \"failure\": {}, \
         \"requests_per_s\": {}, \"p50_us\": {}, \"p99_us\": {}, \"user_us_per_request\": {}, \
         \"sys_us_per_request\": {}, \"peak_rss_kib\": {}",
        quoted(scenario),
        quoted(server),
        failure.is_some(),
        failure.as_deref().map_or("null".into(), quoted),
        number(Some(rate)),
        number(latency[0]),
        number(latency[1]),
        number(Some(cpu[0])),
        number(Some(cpu[1])),
        number(rss_kib.map(|k| k as f64)),
    )
}

fn json(plan: &Plan, wrk: &str, runs: &[RunResult], medians: &[Median]) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"machine\": {},", quoted(&machine()));
    let _ = writeln!(out, "  \"conditions\": {},", quoted(&conditions(plan, wrk)));
    let _ = writeln!(out, "  \"quick\": {},", plan.quick);
    out.push_str("  \"runs\": [\n");
    let lines: Vec<String> = runs
        .iter()
        .map(|r| {
            let latency = [r.p50_us, r.p99_us];
            let cpu = [r.user_us, r.sys_us];
            let common = fields(
                r.scenario,
                r.server,
                &r.failure,
                r.requests_per_s,
                latency,
                cpu,
                r.rss_kib,
            );
            format!(
                "    {{\"round\": {}, \"requests\": {}, {common}}}",
                r.round, r.requests
            )
        })
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ],\n  \"medians\": [\n");
    let lines: Vec<String> = medians
        .iter()
        .map(|m| {
            let latency = [m.p50_us, m.p99_us];
            let cpu = [m.user_us, m.sys_us];
            let common = fields(
                m.scenario,
                m.server,
                &m.failure,
                m.requests_per_s,
                latency,
                cpu,
                m.rss_kib,
            );
            let cpu_us = number(Some(m.cpu_us));
            format!(
                "    {{\"rounds\": {}, \"cpu_us_per_request\": {cpu_us}, {common}}}",
                m.rounds
            )
        })
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn median_of(server: &'static str, requests_per_s: f64, cpu_us: f64) -> Median {
        Median {
            scenario: "plaintext-c100",
            server,
            requests_per_s,
            cpu_us,
            ..Median::default()
        }
    }

    #[test]
    fn ratios_give_a_verdict_per_target() {
        let medians = [
            median_of("http-uring", 110_000.0, 3.0),
            median_of("http-epoll", 90_000.0, 5.0),
            median_of(BASELINE, 100_000.0, 5.0),
        ];
        let table = ratios(&medians);
        assert!(
            table.contains("| http-uring | 1.10x: met | 0.60x: met |"),
            "{table}"
        );
        assert!(
            table.contains("| http-epoll | 0.90x: not met | 1.00x: not met |"),
            "{table}"
        );
        assert_eq!(verdict(0.9986, |r| RATE_RATIO_TARGET <= r), "1.00x: met");
        assert_eq!(verdict(0.8049, |r| r <= CPU_RATIO_TARGET), "0.80x: met");
        assert_eq!(verdict(f64::NAN, |r| r <= CPU_RATIO_TARGET), "n/a");
        let alone = ratios(&medians[..1]);
        assert!(alone.contains("n/a (no hyper figure)"), "{alone}");
    }
}
