//! The storage benchmark's latency histogram (`examples/storage_bench/histogram.rs`): its
//! buckets and percentiles stay within a sixty-fourth of the values recorded.
#![forbid(unsafe_code)]

#[path = "../storage_bench/histogram.rs"]
mod histogram;

use histogram::Histogram;

#[test]
fn histogram_buckets_round_trip_within_a_sixty_fourth() {
    for value in [0, 1, 63, 64, 65, 100, 4096, 350_000, 1 << 40, u64::MAX >> 1] {
        let back = Histogram::value(Histogram::bucket(value));
        let error = back.abs_diff(value) as f64;
        assert!(error <= value as f64 / 64.0, "{value} -> {back}");
    }
    let mut histogram = Histogram::new();
    for value in 1..=100 {
        histogram.record(value * 1000);
    }
    let p50 = histogram.percentile(50.0) as f64;
    assert!((p50 - 50_000.0).abs() <= 50_000.0 / 64.0, "{p50}");
    let p99 = histogram.percentile(99.0) as f64;
    assert!((p99 - 99_000.0).abs() <= 99_000.0 / 64.0, "{p99}");
}
