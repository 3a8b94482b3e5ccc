//! Tests of the paired-ratio maths: pairing by round, missing and failed rounds, zero
//! denominators, medians of odd and even counts, the confidence interval and the verdicts.

use super::*;

/// A successful run with `cpu` µs per message (all of it user time) and `rate` msgs/s.
fn run(server: &'static str, round: u32, cpu: f64, rate: f64) -> RunResult {
    RunResult {
        scenario: "c100-64B-d1",
        server,
        round,
        msgs_per_s: rate,
        user_us: cpu,
        p99_us: 100.0,
        ..RunResult::default()
    }
}

/// `server` and tokio over rounds 1..=n with the given CPU figures.
fn pairs(mine: &[f64], tokio: &[f64]) -> Vec<RunResult> {
    let mut runs = Vec::new();
    for (i, (m, t)) in mine.iter().zip(tokio).enumerate() {
        runs.push(run("echo-uring", i as u32 + 1, *m, 1000.0));
        runs.push(run("tokio", i as u32 + 1, *t, 1000.0));
    }
    runs
}

fn ratios(runs: &[RunResult]) -> Vec<(u32, f64)> {
    series(
        runs,
        "c100-64B-d1",
        "echo-uring",
        Some("tokio"),
        Figure::Cpu,
    )
    .iter()
    .map(|v| (v.round, v.value))
    .collect()
}

#[test]
fn each_round_is_paired_with_the_same_round() {
    // Round 2 is slow for both: its ratio is as good as the others'.
    let runs = pairs(&[4.0, 8.0, 4.5], &[5.0, 10.0, 5.0]);
    assert_eq!(ratios(&runs), vec![(1, 0.8), (2, 0.8), (3, 0.9)]);
    let spread = Spread::of(&series(
        &runs,
        "c100-64B-d1",
        "echo-uring",
        Some("tokio"),
        Figure::Cpu,
    ))
    .unwrap();
    assert_eq!(spread.n, 3);
    assert_eq!(spread.median, 0.8);
    assert_eq!((spread.min, spread.max), (0.8, 0.9));
    // Unpaired, the medians would say 4.5 / 5.0 = 0.9x.
}

#[test]
fn odd_and_even_counts_take_the_middle() {
    let odd = pairs(&[1.0, 3.0, 2.0, 5.0, 4.0], &[1.0; 5]);
    let s = Spread::of(&series(
        &odd,
        "c100-64B-d1",
        "echo-uring",
        Some("tokio"),
        Figure::Cpu,
    ));
    assert_eq!(s.unwrap().median, 3.0);
    let even = pairs(&[4.0, 1.0, 3.0, 2.0], &[1.0; 4]);
    let s = Spread::of(&series(
        &even,
        "c100-64B-d1",
        "echo-uring",
        Some("tokio"),
        Figure::Cpu,
    ));
    let s = s.unwrap();
    assert_eq!(s.median, 2.5);
    assert_eq!((s.min, s.max), (1.0, 4.0));
    assert_eq!(Spread::of(&[]), None);
}

#[test]
fn a_missing_or_failed_round_is_left_out_of_the_pairing() {
    let mut runs = pairs(&[4.0, 4.0, 4.0, 4.0], &[5.0, 5.0, 5.0, 5.0]);
    // Round 2 of echo-uring never ran (a crash before it reported anything).
    runs.retain(|r| !(r.server == "echo-uring" && r.round == 2));
    // Round 3 of tokio failed: its figures must not be used.
    let failed = runs
        .iter_mut()
        .find(|r| r.server == "tokio" && r.round == 3)
        .unwrap();
    failed.failure = Some("wrong byte".into());
    failed.user_us = 0.001;
    assert_eq!(ratios(&runs), vec![(1, 0.8), (4, 0.8)]);
    // A round of tokio's alone pairs with nothing.
    runs.push(run("tokio", 5, 5.0, 1000.0));
    assert_eq!(ratios(&runs).len(), 2);
}

#[test]
fn a_zero_or_unmeasured_denominator_is_left_out() {
    let mut runs = pairs(&[4.0, 4.0, 4.0], &[5.0, 0.0, 5.0]);
    runs.iter_mut()
        .find(|r| r.server == "tokio" && r.round == 3)
        .unwrap()
        .sys_us = f64::NAN;
    assert_eq!(ratios(&runs), vec![(1, 0.8)]);
    // A numerator of zero is a figure (a server that cost nothing), not a missing one.
    let runs = pairs(&[0.0], &[5.0]);
    assert_eq!(ratios(&runs), vec![(1, 0.0)]);
    // Syscalls unmeasured (no perf) pair nothing.
    let runs = pairs(&[1.0], &[1.0]);
    let s = series(
        &runs,
        "c100-64B-d1",
        "echo-uring",
        Some("tokio"),
        Figure::Syscalls,
    );
    assert!(s.is_empty());
}

#[test]
fn without_a_baseline_the_series_is_the_figure() {
    let mut runs = pairs(&[1.0, 1.0], &[1.0, 1.0]);
    runs[0].syscalls_perf = Some(0.04);
    runs[2].syscalls_perf = Some(0.06);
    let s = series(&runs, "c100-64B-d1", "echo-uring", None, Figure::Syscalls);
    assert_eq!(
        s.iter().map(|v| v.value).collect::<Vec<_>>(),
        vec![0.04, 0.06]
    );
}

#[test]
fn the_interval_is_the_sign_tests() {
    // Below 5 values no interval reaches 90%: min–max, with its lower confidence.
    assert_eq!(interval_rank(1), (1, 0.0));
    assert_eq!(interval_rank(3), (1, 0.75));
    assert_eq!(interval_rank(4), (1, 0.875));
    assert_eq!(interval_rank(5), (1, 0.9375));
    // 8 rounds: 2nd lowest to 2nd highest, 1 − 2·9/256.
    let (k, confidence) = interval_rank(8);
    assert_eq!(k, 2);
    assert!((confidence - (1.0 - 18.0 / 256.0)).abs() < 1e-12);
    assert_eq!(interval_rank(7).0, 1);
    assert_eq!(interval_rank(20).0, 6);
    for n in 1..200 {
        let (k, confidence) = interval_rank(n);
        assert!(1 <= k && k <= n.div_ceil(2));
        assert!((0.0..=1.0).contains(&confidence));
    }
}

fn spread_of(values: &[f64]) -> Option<Spread> {
    let rounds: Vec<RoundValue> = values
        .iter()
        .enumerate()
        .map(|(i, v)| RoundValue {
            round: i as u32 + 1,
            value: *v,
        })
        .collect();
    Spread::of(&rounds)
}

#[test]
fn verdicts_need_the_interval_on_one_side() {
    let target = Bound::AtMost(0.85);
    // 8 rounds; the interval is the 2nd to the 7th value.
    let met = spread_of(&[0.70, 0.95, 0.80, 0.81, 0.79, 0.82, 0.83, 0.84]);
    assert_eq!(met.unwrap().low, 0.79);
    assert_eq!(met.unwrap().high, 0.84);
    assert_eq!(Verdict::of(met, target, 2), Verdict::Met);
    let missed = spread_of(&[0.86, 0.90, 0.91, 0.93, 0.95, 0.97, 0.99, 0.70]);
    assert_eq!(Verdict::of(missed, target, 2), Verdict::NotMet);
    let straddles = spread_of(&[0.80, 0.82, 0.84, 0.84, 0.85, 0.88, 0.90, 0.91]);
    assert_eq!(
        Verdict::of(straddles, target, 2),
        Verdict::Undecided { median_met: true }
    );
    // Three rounds decide nothing, however clear they look.
    let few = spread_of(&[0.5, 0.5, 0.5]);
    assert_eq!(
        Verdict::of(few, target, 2),
        Verdict::Undecided { median_met: true }
    );
    assert_eq!(Verdict::of(None, target, 2), Verdict::NoData);
    // Judged as printed: 0.854 shows as 0.85x, which meets ≤ 0.85.
    let edge = spread_of(&[0.854; 8]);
    assert_eq!(Verdict::of(edge, target, 2), Verdict::Met);
    // An absolute figure printed to three decimals is judged to three: 0.051 > 0.05.
    let syscalls = spread_of(&[0.051; 8]);
    assert_eq!(
        Verdict::of(syscalls, Bound::AtMost(0.05), 3),
        Verdict::NotMet
    );
    assert_eq!(Verdict::of(syscalls, Bound::AtMost(0.05), 2), Verdict::Met);
    let rate = spread_of(&[0.99, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06, 1.2]);
    assert_eq!(Verdict::of(rate, Bound::AtLeast(1.0), 2), Verdict::Met);
}

#[test]
fn a_target_against_several_baselines_needs_all() {
    let undecided = Verdict::Undecided { median_met: true };
    let leaning_no = Verdict::Undecided { median_met: false };
    assert_eq!(Verdict::all(&[Verdict::Met, Verdict::Met]), Verdict::Met);
    assert_eq!(
        Verdict::all(&[Verdict::Met, Verdict::NotMet]),
        Verdict::NotMet
    );
    assert_eq!(Verdict::all(&[undecided, Verdict::NotMet]), Verdict::NotMet);
    assert_eq!(Verdict::all(&[Verdict::Met, undecided]), undecided);
    assert_eq!(Verdict::all(&[undecided, leaning_no]), leaning_no);
    assert_eq!(
        Verdict::all(&[Verdict::Met, Verdict::NoData]),
        Verdict::NoData
    );
    assert_eq!(Verdict::all(&[]), Verdict::NoData);
}

#[test]
fn cells_show_median_and_range() {
    let s = spread_of(&[0.97, 0.86, 0.91]);
    assert_eq!(ratio_cell(s), "0.91x (0.86–0.97)");
    assert_eq!(ratio_cell(None), "n/a");
}
