//! What loadgen prints: a line per mark under `--control`, and the final line of `key=value`
//! pairs (messages, messages per second, latency percentiles, errors, datagrams lost) that
//! the benchmark harness parses.

/// The counts at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    /// Messages verified since the start (connections, under churn).
    pub messages: u64,
    /// Datagrams counted lost since the start (always 0 over TCP).
    pub lost: u64,
    /// Threads stopped by an error so far.
    pub errors: u64,
    /// Nanoseconds since the threads started.
    pub ns: u64,
}

/// The measured window: its first and last marks.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Where it opened.
    pub start: Mark,
    /// Where it closed.
    pub end: Mark,
}

/// What the threads brought back.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Round trips that completed inside the window, in nanoseconds, in no order.
    pub latencies_ns: Vec<u64>,
    /// Each failed thread's reason.
    pub errors: Vec<String>,
}

/// `mark messages=N errors=E lost=L ns=T`, flushed at once: the harness is waiting for it.
pub fn print_mark(mark: &Mark) {
    println!(
        "mark messages={} errors={} lost={} ns={}",
        mark.messages, mark.errors, mark.lost, mark.ns
    );
}

/// The final line; says `FAILED` and returns false when any thread failed (each reason goes
/// to stderr): a run with errors is not a number.
pub fn print(window: &Window, mut outcome: Outcome) -> bool {
    for error in &outcome.errors {
        eprintln!("loadgen: error: {error}");
    }
    let messages = window.end.messages - window.start.messages;
    let lost = window.end.lost - window.start.lost;
    let seconds = (window.end.ns - window.start.ns) as f64 / 1e9;
    let rate = if seconds > 0.0 {
        messages as f64 / seconds
    } else {
        0.0
    };
    outcome.latencies_ns.sort_unstable();
    let lat = &outcome.latencies_ns;
    let errors = outcome.errors.len();
    let status = if errors == 0 { "ok" } else { "FAILED" };
    println!(
        "status={status} messages={messages} seconds={seconds:.3} msgs_per_s={rate:.0} \
         p50_us={:.1} p99_us={:.1} p999_us={:.1} errors={errors} lost={lost}",
        percentile_us(lat, 0.50),
        percentile_us(lat, 0.99),
        percentile_us(lat, 0.999),
    );
    errors == 0
}

/// The `p` quantile of sorted nanoseconds, in microseconds (nearest rank; 0 when empty).
pub fn percentile_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let rank = (sorted_ns.len() as f64 * p).ceil() as usize;
    sorted_ns[rank.clamp(1, sorted_ns.len()) - 1] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::percentile_us;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let ns: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_us(&ns, 0.50), 500.0);
        assert_eq!(percentile_us(&ns, 0.99), 990.0);
        assert_eq!(percentile_us(&ns, 0.999), 999.0);
        assert_eq!(percentile_us(&[], 0.5), 0.0);
        assert_eq!(percentile_us(&[7000], 0.999), 7.0);
    }
}
