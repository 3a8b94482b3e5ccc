//! Paired ratios: the echo benchmark's way of comparing two servers on a noisy machine. A
//! single round of a server moves by ±15–20% with whatever else the machine does, but the
//! rounds interleave (every server once per round, back to back), so two servers in the
//! same round share most of that drift. So each round gives one ratio, the server's figure
//! over the baseline's in that round, and the comparison is the median of those ratios,
//! with its spread.
//!
//! A verdict against a target is decided on the median, but only where the median's
//! confidence interval (order statistics, the sign test's: with 8 rounds the 2nd lowest to
//! the 2nd highest ratio, 93%) lies wholly on one side of the target; where it straddles
//! the target the verdict is "undecided", and below 5 rounds no interval reaches 90%, so
//! every verdict is undecided. Rounds where either side failed, did not run, or measured
//! nothing (a zero or non-finite figure) are left out of the pairing, and the count says so.

use super::run::RunResult;

/// A figure of one run that a paired ratio compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Server CPU (user + system) per message, µs.
    Cpu,
    /// Messages (connections, under churn) per second.
    Rate,
    /// 99th percentile latency, µs.
    P99,
    /// Syscalls per message, counted by `perf`.
    Syscalls,
}

impl Figure {
    /// Every figure, in the order the tables show them.
    pub const ALL: [Figure; 4] = [Figure::Cpu, Figure::Rate, Figure::P99, Figure::Syscalls];

    /// The name in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Figure::Cpu => "cpu_us_per_msg",
            Figure::Rate => "msgs_per_s",
            Figure::P99 => "p99_us",
            Figure::Syscalls => "syscalls_per_msg_perf",
        }
    }

    /// The name in the tables.
    pub fn label(self) -> &'static str {
        match self {
            Figure::Cpu => "CPU/msg",
            Figure::Rate => "msgs/s",
            Figure::P99 => "p99",
            Figure::Syscalls => "syscalls/msg",
        }
    }

    /// The figure of `run`; none where the run failed or the figure was not measured.
    pub fn of(self, run: &RunResult) -> Option<f64> {
        if run.failure.is_some() {
            return None;
        }
        let value = match self {
            Figure::Cpu => run.user_us + run.sys_us,
            Figure::Rate => run.msgs_per_s,
            Figure::P99 => run.p99_us,
            Figure::Syscalls => run.syscalls_perf?,
        };
        value.is_finite().then_some(value)
    }
}

/// One round's value of a paired series: the ratio (or, without a baseline, the figure).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundValue {
    /// 1-based round.
    pub round: u32,
    /// The server's figure over the baseline's in this round.
    pub value: f64,
}

/// For each round in which both `server` and `baseline` ran in `scenario` without failing,
/// with a finite figure and a baseline figure above zero: the server's figure over the
/// baseline's. Without a baseline, the server's figure itself in each round. In round order.
pub fn series(
    runs: &[RunResult],
    scenario: &str,
    server: &str,
    baseline: Option<&str>,
    figure: Figure,
) -> Vec<RoundValue> {
    let find = |name: &str, round: u32| {
        runs.iter()
            .find(|r| r.scenario == scenario && r.server == name && r.round == round)
            .and_then(|r| figure.of(r))
    };
    let mut rounds: Vec<u32> = runs
        .iter()
        .filter(|r| r.scenario == scenario && r.server == server)
        .map(|r| r.round)
        .collect();
    rounds.sort_unstable();
    rounds.dedup();
    let mut out = Vec::with_capacity(rounds.len());
    for round in rounds {
        let Some(value) = find(server, round) else {
            continue;
        };
        let denominator = match baseline {
            None => 1.0,
            Some(baseline) => match find(baseline, round) {
                Some(d) if 0.0 < d => d,
                _ => continue,
            },
        };
        let ratio = value / denominator;
        debug_assert!(ratio.is_finite());
        out.push(RoundValue {
            round,
            value: ratio,
        });
    }
    out
}

/// The median of a series, its range and the median's confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Values in the series.
    pub n: u32,
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The lowest value.
    pub min: f64,
    /// The highest value.
    pub max: f64,
    /// The median's confidence interval, low end: the k-th lowest value.
    pub low: f64,
    /// High end: the k-th highest value.
    pub high: f64,
    /// The interval's confidence, 0 to 1 (below 0.9 nothing is decided).
    pub confidence: f64,
}

/// The confidence below which an interval decides nothing.
pub const CONFIDENCE_MIN: f64 = 0.9;

impl Spread {
    /// The spread of `values`; none for an empty series.
    pub fn of(values: &[RoundValue]) -> Option<Spread> {
        let mut sorted: Vec<f64> = values.iter().map(|v| v.value).collect();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        let (k, confidence) = interval_rank(n as u32);
        let k = k as usize;
        assert!(1 <= k && k <= n.div_ceil(2));
        Some(Spread {
            n: n as u32,
            median: super::report::median(sorted.clone()),
            min: sorted[0],
            max: sorted[n - 1],
            low: sorted[k - 1],
            high: sorted[n - k],
            confidence,
        })
    }
}

/// The rank k (1-based) such that the k-th lowest to the k-th highest of n values is the
/// narrowest interval that holds the median with at least 90% confidence (the sign test:
/// 1 − 2·P(Binomial(n, ½) < k)), and that confidence; k = 1 (min–max) with its lower
/// confidence where no k reaches 90% (n < 5).
pub fn interval_rank(n: u32) -> (u32, f64) {
    assert!(0 < n);
    assert!(n <= 1000, "2^n would overflow the confidence sum");
    let coverage = |k: u32| {
        // P(X < k) for X ~ Binomial(n, 1/2), summed in f64: C(n, i) / 2^n.
        let mut term = 0.5f64.powi(n as i32);
        let mut below = 0.0;
        for i in 0..k {
            below += term;
            term *= f64::from(n - i) / f64::from(i + 1);
        }
        (1.0 - 2.0 * below).max(0.0)
    };
    let mut best = (1, coverage(1));
    let mut k = 2;
    while k <= n.div_ceil(2) && CONFIDENCE_MIN <= coverage(k) {
        best = (k, coverage(k));
        k += 1;
    }
    best
}

/// Which side of a target is met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// Met at or below.
    AtMost(f64),
    /// Met at or above.
    AtLeast(f64),
}

impl Bound {
    /// Whether `value` meets the bound, judged as printed (to `decimals`), so that a
    /// `1.00x` never reads "not met" against a 1.00x target.
    pub fn met(self, value: f64, decimals: i32) -> bool {
        let scale = 10f64.powi(decimals);
        let shown = (value * scale).round() / scale;
        match self {
            Bound::AtMost(target) => shown <= target,
            Bound::AtLeast(target) => target <= shown,
        }
    }

    /// `≤ 0.85` or `≥ 1.00`.
    pub fn text(self) -> String {
        match self {
            Bound::AtMost(target) => format!("≤ {target:.2}"),
            Bound::AtLeast(target) => format!("≥ {target:.2}"),
        }
    }
}

/// A target's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The whole confidence interval meets the target.
    Met,
    /// The whole interval misses it.
    NotMet,
    /// The interval straddles the target (or is below 90% confidence); `median_met` says
    /// which side the median is on.
    Undecided { median_met: bool },
    /// Nothing to judge: no round paired.
    NoData,
}

impl Verdict {
    /// The verdict of a spread against a bound, its values judged as printed to `decimals`.
    pub fn of(spread: Option<Spread>, bound: Bound, decimals: i32) -> Verdict {
        let Some(spread) = spread else {
            return Verdict::NoData;
        };
        let median_met = bound.met(spread.median, decimals);
        if spread.confidence < CONFIDENCE_MIN {
            return Verdict::Undecided { median_met };
        }
        match (
            bound.met(spread.low, decimals),
            bound.met(spread.high, decimals),
        ) {
            (true, true) => Verdict::Met,
            (false, false) => Verdict::NotMet,
            _ => Verdict::Undecided { median_met },
        }
    }

    /// The verdict of a target met only where it is met against every baseline: not met
    /// where any is not met, met where all are, else undecided (the median side: met where
    /// every median meets it).
    pub fn all(verdicts: &[Verdict]) -> Verdict {
        if verdicts.is_empty() || verdicts.contains(&Verdict::NoData) {
            return Verdict::NoData;
        }
        if verdicts.contains(&Verdict::NotMet) {
            return Verdict::NotMet;
        }
        if verdicts.iter().all(|v| *v == Verdict::Met) {
            return Verdict::Met;
        }
        let median_met = verdicts
            .iter()
            .all(|v| matches!(v, Verdict::Met | Verdict::Undecided { median_met: true }));
        Verdict::Undecided { median_met }
    }

    /// `met`, `not met`, `undecided (the median meets it)`, `n/a`.
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "not met",
            Verdict::Undecided { median_met: true } => "undecided (the median meets it)",
            Verdict::Undecided { median_met: false } => "undecided (the median misses it)",
            Verdict::NoData => "n/a",
        }
    }
}

/// `0.91x (0.86–0.97)`: the median ratio and its range; `n/a` for none.
pub fn ratio_cell(spread: Option<Spread>) -> String {
    match spread {
        Some(s) => format!("{:.2}x ({:.2}–{:.2})", s.median, s.min, s.max),
        None => "n/a".into(),
    }
}

#[cfg(test)]
#[path = "bench_paired_tests.rs"]
mod tests;
