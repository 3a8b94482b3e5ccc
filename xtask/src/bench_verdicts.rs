//! The echo benchmark's paired comparisons (see `bench_paired.rs` for the method): a table of
//! every server's per-round ratios to tokio (median and min–max over rounds), then the
//! verdicts against the targets of issues 19, 20 and 21 (UDP echo), each decided on the
//! median paired ratio and its confidence interval; and both as JSON, every round's ratio
//! included. In the UDP scenario "tokio" is its UDP peer (`bench/peers/tokio-udp-echo`), so
//! the pairing is the same. A server that cannot run a scenario here (echo-server without
//! `--udp`) has `n/a: WHY` in both tables. Verdicts are printed, never asserted: a benchmark
//! does not fail a build.

use std::fmt::Write as _;

use super::paired::{interval_rank, ratio_cell, series, Bound, Figure, RoundValue, Spread};
use super::paired::{Verdict, CONFIDENCE_MIN};
use super::plan::Plan;
use super::report::{number, quoted, Median};
use super::run::RunResult;

/// The server every other is paired with in the ratio table.
pub const BASELINE: &str = "tokio";

/// What a target compares its server with.
#[derive(Debug, Clone, Copy)]
enum Against {
    /// Each of these servers, in the same round: the target holds against every one.
    Servers(&'static [&'static str]),
    /// Every other server of the scenario.
    Others,
    /// Nothing: the figure itself, round by round.
    Absolute,
}

/// A target of an issue, judged on paired rounds.
#[derive(Debug, Clone, Copy)]
struct Target {
    issue: u32,
    scenario: &'static str,
    server: &'static str,
    figure: Figure,
    against: Against,
    /// How the table names what is against (`tokio`, `the best io_uring peer`).
    against_text: &'static str,
    bound: Bound,
}

const PEERS: &[&str] = &["tokio", "monoio", "compio"];
const URING_PEERS: &[&str] = &["monoio", "compio"];

const fn target(
    issue: u32,
    scenario: &'static str,
    server: &'static str,
    figure: Figure,
    against: (Against, &'static str),
    bound: Bound,
) -> Target {
    Target {
        issue,
        scenario,
        server,
        figure,
        against: against.0,
        against_text: against.1,
        bound,
    }
}

/// The targets of issue 20 (io_uring), issue 19 (epoll) and issue 21 (UDP echo on both), in
/// the order they print.
const TARGETS: [Target; 13] = {
    use Figure::{Cpu, Rate, Syscalls, P99};
    let tokio = (Against::Servers(&["tokio"]), "tokio");
    let c100 = "c100-64B-d1";
    let c1000 = "c1000-64B-d1";
    let kib16 = "c100-16KiB-d1";
    let udp = "udp-64B";
    let uring = "echo-uring";
    let epoll = "echo-epoll";
    [
        target(20, c100, uring, Cpu, tokio, Bound::AtMost(0.85)),
        target(
            20,
            c100,
            uring,
            Cpu,
            (Against::Servers(URING_PEERS), "the best io_uring peer"),
            Bound::AtMost(0.95),
        ),
        target(
            20,
            c100,
            uring,
            Rate,
            (Against::Servers(PEERS), "every peer"),
            Bound::AtLeast(1.0),
        ),
        target(
            20,
            c100,
            uring,
            Syscalls,
            (Against::Absolute, ""),
            Bound::AtMost(0.05),
        ),
        target(
            20,
            c100,
            uring,
            P99,
            (Against::Servers(PEERS), "the best peer"),
            Bound::AtMost(1.0),
        ),
        target(
            20,
            c1000,
            uring,
            Cpu,
            (Against::Servers(&["tokio", "monoio"]), "tokio and monoio"),
            Bound::AtMost(0.95),
        ),
        target(
            20,
            kib16,
            uring,
            Cpu,
            (Against::Others, "every other server"),
            Bound::AtMost(1.0),
        ),
        target(19, c100, epoll, Cpu, tokio, Bound::AtMost(0.95)),
        target(19, c1000, epoll, Cpu, tokio, Bound::AtMost(0.95)),
        target(19, kib16, epoll, Cpu, tokio, Bound::AtMost(0.95)),
        target(21, udp, uring, Cpu, tokio, Bound::AtMost(0.9)),
        target(
            21,
            udp,
            uring,
            Syscalls,
            (Against::Absolute, ""),
            Bound::AtMost(0.1),
        ),
        target(21, udp, epoll, Cpu, tokio, Bound::AtMost(1.0)),
    ]
};

/// The ratio table and the verdicts, in markdown.
pub fn tables(plan: &Plan, runs: &[RunResult], medians: &[Median]) -> String {
    let mut out = ratio_table(runs, medians);
    out.push('\n');
    out.push_str(&verdict_table(plan, runs, medians));
    out
}

/// Whether a (scenario, server) ran, and whether a round of it failed.
fn ran(medians: &[Median], scenario: &str, server: &str) -> Option<bool> {
    medians
        .iter()
        .find(|m| m.scenario == scenario && m.server == server && m.absent.is_none())
        .map(|m| m.failure.is_some())
}

/// Why a (scenario, server) could not run here, if so.
fn absent(medians: &[Median], scenario: &str, server: &str) -> Option<&'static str> {
    medians
        .iter()
        .find(|m| m.scenario == scenario && m.server == server)
        .and_then(|m| m.absent)
}

fn ratio_table(runs: &[RunResult], medians: &[Median]) -> String {
    if !medians.iter().any(|m| m.server == BASELINE) {
        return format!("No paired ratios: {BASELINE} did not run.\n");
    }
    let mut out = format!(
        "Paired ratios to {BASELINE}: in each round, the server's figure over {BASELINE}'s in \
         the same round; the median over rounds (min–max). Lower is better but for msgs/s.\n\n\
         | scenario | server |"
    );
    for figure in Figure::ALL {
        let _ = write!(out, " {} ÷ {BASELINE} |", figure.label());
    }
    out.push_str("\n|---|---|--:|--:|--:|--:|\n");
    for m in medians.iter().filter(|m| m.server != BASELINE) {
        let _ = write!(out, "| {} | {} |", m.scenario, m.server);
        if let Some(why) = m.absent {
            let _ = writeln!(out, " n/a: {why} |||| ");
            continue;
        }
        for figure in Figure::ALL {
            let cell = match ran(medians, m.scenario, BASELINE) {
                _ if m.failure.is_some() => "FAILED".to_owned(),
                Some(true) => format!("{BASELINE} FAILED"),
                None => format!("no {BASELINE} run"),
                Some(false) => {
                    let values = series(runs, m.scenario, m.server, Some(BASELINE), figure);
                    with_count(ratio_cell(Spread::of(&values)), values.len(), m.rounds)
                }
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

/// `cell`, with `(n of N rounds)` where fewer rounds paired than ran.
fn with_count(cell: String, paired: usize, rounds: u32) -> String {
    if paired == rounds as usize || paired == 0 {
        cell
    } else {
        format!("{cell} ({paired} of {rounds} rounds)")
    }
}

/// One comparison of a target: against one baseline (or none), with its verdict.
struct Judged {
    baseline: Option<&'static str>,
    values: Vec<RoundValue>,
    spread: Option<Spread>,
    verdict: Verdict,
}

/// The baselines a target compares with, among the servers that ran its scenario.
fn baselines(target: &Target, medians: &[Median]) -> Vec<Option<&'static str>> {
    let ran_here = |name: &str| ran(medians, target.scenario, name).is_some();
    match target.against {
        Against::Absolute => vec![None],
        Against::Servers(names) => names
            .iter()
            .filter(|name| ran_here(name))
            .map(|name| Some(*name))
            .collect(),
        Against::Others => medians
            .iter()
            .filter(|m| m.scenario == target.scenario && m.server != target.server)
            .map(|m| Some(m.server))
            .collect(),
    }
}

/// Each comparison of `target`, and the verdict over all of them.
fn judge(target: &Target, runs: &[RunResult], medians: &[Median]) -> (Vec<Judged>, Verdict) {
    let judged: Vec<Judged> = baselines(target, medians)
        .into_iter()
        .map(|baseline| {
            let failed = [Some(target.server), baseline]
                .into_iter()
                .flatten()
                .any(|name| ran(medians, target.scenario, name) == Some(true));
            let values = if failed {
                Vec::new()
            } else {
                series(
                    runs,
                    target.scenario,
                    target.server,
                    baseline,
                    target.figure,
                )
            };
            let spread = Spread::of(&values);
            Judged {
                baseline,
                values,
                spread,
                verdict: Verdict::of(spread, target.bound, decimals(baseline)),
            }
        })
        .collect();
    let verdicts: Vec<Verdict> = judged.iter().map(|j| j.verdict).collect();
    (judged, Verdict::all(&verdicts))
}

/// `echo-uring CPU/msg ≤ 0.85x tokio (issue 20)`.
fn target_text(target: &Target) -> String {
    match target.against {
        Against::Absolute => format!(
            "{} {} {} (issue {})",
            target.server,
            target.figure.label(),
            target.bound.text(),
            target.issue
        ),
        _ => format!(
            "{} {} {}x {} (issue {})",
            target.server,
            target.figure.label(),
            target.bound.text(),
            target.against_text,
            target.issue
        ),
    }
}

/// The decimals a value is printed (and judged) to: 2 for a ratio, 3 for a figure alone
/// (syscalls per message).
fn decimals(baseline: Option<&str>) -> i32 {
    if baseline.is_some() {
        2
    } else {
        3
    }
}

/// `monoio 0.96x [0.90–1.01]`, `0.049 [0.045–0.052]`, `compio: FAILED`.
fn judged_text(judged: &Judged, medians: &[Median], target: &Target) -> String {
    let name = judged.baseline.map_or(String::new(), |b| format!("{b} "));
    let Some(s) = judged.spread else {
        let failed = [Some(target.server), judged.baseline]
            .into_iter()
            .flatten()
            .find(|name| ran(medians, target.scenario, name) == Some(true));
        return match failed {
            Some(failed) => format!("{name}n/a ({failed} FAILED)"),
            None => format!("{name}n/a (no round paired)"),
        };
    };
    let unit = if judged.baseline.is_some() { "x" } else { "" };
    let digits = decimals(judged.baseline) as usize;
    let mut text = format!(
        "{name}{:.digits$}{unit} [{:.digits$}–{:.digits$}]",
        s.median, s.low, s.high
    );
    if s.confidence < CONFIDENCE_MIN {
        let _ = write!(text, " ({} rounds: {:.0}%)", s.n, s.confidence * 100.0);
    }
    text
}

fn verdict_table(plan: &Plan, runs: &[RunResult], medians: &[Median]) -> String {
    let (k, confidence) = interval_rank(plan.rounds);
    let mut out = format!(
        "Verdicts: the median of the per-round ratios [its confidence interval: with {} \
         rounds {}, {:.0}%]; met or not met only where the whole \
         interval is on one side of the target, else undecided (always where the interval's \
         confidence is under {:.0}%: fewer than 5 rounds).\n\n\
         | target | scenario | paired median [interval] | verdict |\n|---|---|---|---|\n",
        plan.rounds,
        interval_text(k),
        confidence * 100.0,
        CONFIDENCE_MIN * 100.0,
    );
    let mut shown = 0;
    for target in &TARGETS {
        if let Some(why) = absent(medians, target.scenario, target.server) {
            let _ = writeln!(
                out,
                "| {} | {} | n/a: {why} | n/a |",
                target_text(target),
                target.scenario
            );
            shown += 1;
            continue;
        }
        if ran(medians, target.scenario, target.server).is_none() {
            continue;
        }
        let (judged, verdict) = judge(target, runs, medians);
        let figures: Vec<String> = judged
            .iter()
            .map(|j| judged_text(j, medians, target))
            .collect();
        let figures = if figures.is_empty() {
            let names = match target.against {
                Against::Servers(names) => names.join(", "),
                _ => "other servers".into(),
            };
            format!("n/a: none of {names} ran")
        } else {
            figures.join("; ")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {figures} | {} |",
            target_text(target),
            target.scenario,
            verdict.text()
        );
        shown += 1;
    }
    if shown == 0 {
        return "No verdicts: no target's scenario and server ran.\n".into();
    }
    out
}

/// `the lowest to the highest` for k = 1, else `the 2nd lowest to the 2nd highest`.
fn interval_text(k: u32) -> String {
    let nth = match k {
        1 => return "the lowest to the highest".into(),
        2 => "2nd".to_owned(),
        3 => "3rd".to_owned(),
        k => format!("{k}th"),
    };
    format!("the {nth} lowest to the {nth} highest")
}

/// One paired series as a JSON object: every round's ratio, the median, range and interval.
fn series_json(
    scenario: &str,
    server: &str,
    baseline: Option<&str>,
    figure: Figure,
    values: &[RoundValue],
) -> String {
    let rounds: Vec<String> = values
        .iter()
        .map(|v| {
            format!(
                "{{\"round\": {}, \"value\": {}}}",
                v.round,
                number(Some(v.value))
            )
        })
        .collect();
    let spread = Spread::of(values);
    let field = |f: fn(&Spread) -> f64| number(spread.as_ref().map(f));
    format!(
        "{{\"scenario\": {}, \"server\": {}, \"baseline\": {}, \"figure\": {}, \
         \"per_round\": [{}], \"median\": {}, \"min\": {}, \"max\": {}, \"interval_low\": {}, \
         \"interval_high\": {}, \"interval_confidence\": {}}}",
        quoted(scenario),
        quoted(server),
        baseline.map_or("null".into(), quoted),
        quoted(figure.key()),
        rounds.join(", "),
        field(|s| s.median),
        field(|s| s.min),
        field(|s| s.max),
        field(|s| s.low),
        field(|s| s.high),
        field(|s| s.confidence),
    )
}

/// The JSON members `"paired"` (every server against tokio, every figure, each round's
/// ratio) and `"verdicts"` (each target, its comparisons and its verdict), without braces.
pub fn json(runs: &[RunResult], medians: &[Median]) -> String {
    let mut paired = Vec::new();
    if medians.iter().any(|m| m.server == BASELINE) {
        for m in medians
            .iter()
            .filter(|m| m.server != BASELINE && m.absent.is_none())
        {
            for figure in Figure::ALL {
                let values = series(runs, m.scenario, m.server, Some(BASELINE), figure);
                let one = series_json(m.scenario, m.server, Some(BASELINE), figure, &values);
                paired.push(format!("    {one}"));
            }
        }
    }
    let mut verdicts = Vec::new();
    for target in &TARGETS {
        if let Some(why) = absent(medians, target.scenario, target.server) {
            verdicts.push(format!(
                "    {{\"target\": {}, \"scenario\": {}, \"verdict\": \"n/a\", \"absent\": {}, \
                 \"against\": []}}",
                quoted(&target_text(target)),
                quoted(target.scenario),
                quoted(why)
            ));
        }
    }
    for target in TARGETS
        .iter()
        .filter(|t| ran(medians, t.scenario, t.server).is_some())
    {
        let (judged, verdict) = judge(target, runs, medians);
        let against: Vec<String> = judged
            .iter()
            .map(|j| {
                let (scenario, server) = (target.scenario, target.server);
                series_json(scenario, server, j.baseline, target.figure, &j.values)
            })
            .collect();
        verdicts.push(format!(
            "    {{\"target\": {}, \"scenario\": {}, \"verdict\": {}, \"against\": [{}]}}",
            quoted(&target_text(target)),
            quoted(target.scenario),
            quoted(verdict.text()),
            against.join(", ")
        ));
    }
    format!(
        "  \"paired\": [\n{}\n  ],\n  \"verdicts\": [\n{}\n  ]",
        paired.join(",\n"),
        verdicts.join(",\n")
    )
}

#[cfg(test)]
#[path = "bench_verdicts_tests.rs"]
mod tests;
