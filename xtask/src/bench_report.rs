//! The macro benchmark's results: the median of each (scenario, server) over its rounds, as a
//! markdown table on stdout (also `target/bench/macro.md`) and, with every run beside them,
//! as JSON (`target/bench/macro.json`). A (scenario, server) with a failed round shows
//! FAILED, never a number; one that cannot run here (echo-server without `--udp`) shows
//! `n/a: WHY`. The UDP scenario adds the share of datagrams lost.

use std::fmt::Write as _;

use super::plan::Plan;
use super::run::RunResult;
use crate::project_root;

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
    /// Why it could not run here (no round then, and no number).
    pub absent: Option<&'static str>,
    /// Messages (connections, under churn) per second.
    pub msgs_per_s: f64,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    /// 99th.
    pub p99_us: f64,
    /// 99.9th.
    pub p999_us: f64,
    /// Server CPU (user + system) per message, µs: the median of each run's sum.
    pub cpu_us: f64,
    /// Of which user, µs (median on its own).
    pub user_us: f64,
    /// Of which system, µs (median on its own).
    pub sys_us: f64,
    /// Syscalls per message by `perf`.
    pub syscalls_perf: Option<f64>,
    /// Syscalls per message by echo-server's own counters.
    pub syscalls_own: Option<f64>,
    /// Peak RSS, KiB.
    pub rss_kib: Option<u64>,
    /// The share of datagrams lost, UDP only.
    pub lost: Option<f64>,
}

/// The medians, in the plan's order (scenario, then server).
pub fn medians(plan: &Plan, runs: &[RunResult]) -> Vec<Median> {
    let mut medians = Vec::new();
    for scenario in &plan.scenarios {
        for server in &plan.servers {
            if let Some(why) = plan.absent_why(scenario.name, server.name) {
                medians.push(Median {
                    scenario: scenario.name,
                    server: server.name,
                    absent: Some(why),
                    ..Median::default()
                });
                continue;
            }
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
                msgs_per_s: of(|r| r.msgs_per_s),
                p50_us: of(|r| r.p50_us),
                p99_us: of(|r| r.p99_us),
                p999_us: of(|r| r.p999_us),
                cpu_us: of(|r| r.user_us + r.sys_us),
                user_us: of(|r| r.user_us),
                sys_us: of(|r| r.sys_us),
                syscalls_perf: of_opt(|r| r.syscalls_perf),
                syscalls_own: of_opt(|r| r.syscalls_own),
                rss_kib: of_opt(|r| r.rss_kib.map(|kib| kib as f64)).map(|kib| kib as u64),
                lost: of_opt(|r| r.lost),
                absent: None,
            });
        }
    }
    medians
}

/// The median (the mean of the middle two for an even count; 0 for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Prints the table and writes the markdown and JSON files.
pub fn write(plan: &Plan, runs: &[RunResult], medians: &[Median]) -> Result<(), String> {
    let dir = project_root().join("target/bench");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut table = table(plan, medians);
    table.push('\n');
    table.push_str(&super::verdicts::tables(plan, runs, medians));
    println!("{table}");
    let files = [
        (dir.join("macro.md"), table),
        (dir.join("macro.json"), json(plan, runs, medians)),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    Ok(())
}

/// What the machine is: CPU model, CPU count, kernel.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, model)| model.trim());
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{n} x {model}, Linux {}", kernel.trim())
}

/// How the runs were made, in one line.
fn conditions(plan: &Plan) -> String {
    let cpus = |c: &Option<String>| c.clone().unwrap_or_else(|| "unpinned".into());
    format!(
        "{} round(s), {} s warm-up, {} s measured, {} s syscall window; server CPUs {}, \
         generator CPUs {} ({} thread(s)); echo-server {} thread(s), peers 1",
        plan.rounds,
        plan.warmup_s,
        plan.duration_s,
        plan.syscall_window_s,
        cpus(&plan.server_cpus),
        cpus(&plan.client_cpus),
        plan.client_threads,
        plan.server_threads,
    )
}

fn table(plan: &Plan, medians: &[Median]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Machine: {}  ", machine());
    let _ = writeln!(out, "Runs: {}  ", conditions(plan));
    if plan.quick {
        let _ = writeln!(
            out,
            "**--quick: a smoke test of the harness; do not judge these numbers.**"
        );
    }
    let _ = writeln!(
        out,
        "Medians over rounds; churn's msgs/s counts connections.\n"
    );
    out.push_str(
        "| scenario | server | msgs/s | p50 µs | p99 µs | p99.9 µs | CPU µs/msg (user+sys) \
         | syscalls/msg perf | syscalls/msg own | peak RSS MiB | lost |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    for m in medians {
        if let Some(why) = m.absent {
            let _ = writeln!(
                out,
                "| {} | {} | n/a: {why} ||||||||| ",
                m.scenario, m.server
            );
            continue;
        }
        if let Some(failure) = &m.failure {
            let _ = writeln!(
                out,
                "| {} | {} | FAILED: {failure} ||||||||| ",
                m.scenario, m.server
            );
            continue;
        }
        let opt = |v: Option<f64>| v.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
            m.scenario,
            m.server,
            m.msgs_per_s,
            m.p50_us,
            m.p99_us,
            m.p999_us,
            cpu(m),
            opt(m.syscalls_perf),
            opt(m.syscalls_own),
            m.rss_kib
                .map_or("n/a".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0)),
            lost_cell(m.lost),
        );
    }
    out
}

/// `0.012%` of datagrams lost; `–` for a TCP scenario (nothing is lost there).
pub fn lost_cell(lost: Option<f64>) -> String {
    lost.map_or("–".to_owned(), |share| format!("{:.3}%", share * 100.0))
}

/// `total (user+sys)`, or n/a where a window saw no message.
fn cpu(m: &Median) -> String {
    if m.cpu_us.is_finite() {
        format!("{:.2} ({:.2}+{:.2})", m.cpu_us, m.user_us, m.sys_us)
    } else {
        "n/a".into()
    }
}

/// A JSON string literal.
pub fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number, or `null` for none (or a non-finite value).
pub fn number(value: Option<f64>) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => "null".into(),
    }
}

/// The fields every run and every median share, as JSON members.
#[allow(clippy::too_many_arguments)]
fn fields(
    scenario: &str,
    server: &str,
    failure: &Option<String>,
    rates: [f64; 4],
    cpu: [f64; 2],
    syscalls: [Option<f64>; 2],
    rss_kib: Option<u64>,
    lost: Option<f64>,
) -> String {
    format!(
        "\"scenario\": {}, \"server\": {}, \"failed\": {}, \"failure\": {}, \
         \"msgs_per_s\": {}, \"p50_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \
         \"user_us_per_msg\": {}, \"sys_us_per_msg\": {}, \"syscalls_per_msg_perf\": {}, \
         \"syscalls_per_msg_own\": {}, \"peak_rss_kib\": {}, \"lost_share\": {}",
        quoted(scenario),
        quoted(server),
        failure.is_some(),
        failure.as_deref().map_or("null".into(), quoted),
        number(Some(rates[0])),
        number(Some(rates[1])),
        number(Some(rates[2])),
        number(Some(rates[3])),
        number(Some(cpu[0])),
        number(Some(cpu[1])),
        number(syscalls[0]),
        number(syscalls[1]),
        number(rss_kib.map(|k| k as f64)),
        number(lost),
    )
}

fn json(plan: &Plan, runs: &[RunResult], medians: &[Median]) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"machine\": {},", quoted(&machine()));
    let _ = writeln!(out, "  \"conditions\": {},", quoted(&conditions(plan)));
    let _ = writeln!(out, "  \"quick\": {},", plan.quick);
    out.push_str("  \"runs\": [\n");
    let lines: Vec<String> = runs
        .iter()
        .map(|r| {
            let rates = [r.msgs_per_s, r.p50_us, r.p99_us, r.p999_us];
            let syscalls = [r.syscalls_perf, r.syscalls_own];
            let common = fields(
                r.scenario,
                r.server,
                &r.failure,
                rates,
                [r.user_us, r.sys_us],
                syscalls,
                r.rss_kib,
                r.lost,
            );
            format!("    {{\"round\": {}, {common}}}", r.round)
        })
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ],\n  \"medians\": [\n");
    let lines: Vec<String> = medians
        .iter()
        .map(|m| {
            if let Some(why) = m.absent {
                return format!(
                    "    {{\"rounds\": 0, \"scenario\": {}, \"server\": {}, \"absent\": {}}}",
                    quoted(m.scenario),
                    quoted(m.server),
                    quoted(why)
                );
            }
            let rates = [m.msgs_per_s, m.p50_us, m.p99_us, m.p999_us];
            let syscalls = [m.syscalls_perf, m.syscalls_own];
            let common = fields(
                m.scenario,
                m.server,
                &m.failure,
                rates,
                [m.user_us, m.sys_us],
                syscalls,
                m.rss_kib,
                m.lost,
            );
            format!(
                "    {{\"rounds\": {}, \"cpu_us_per_msg\": {}, {common}}}",
                m.rounds,
                number(Some(m.cpu_us))
            )
        })
        .collect();
    out.push_str(&lines.join(",\n"));
    out.push_str("\n  ],\n");
    out.push_str(&super::verdicts::json(runs, medians));
    out.push_str("\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(quoted("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
        assert_eq!(number(None), "null");
        assert_eq!(number(Some(f64::NAN)), "null");
        assert_eq!(number(Some(1.5)), "1.5");
    }
}
