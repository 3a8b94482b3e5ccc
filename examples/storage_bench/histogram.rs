//! The storage benchmark's latency histogram (`examples/storage_bench.rs`), in a file of its
//! own so that its unit test runs under `cargo test` (`examples/tests/storage_histogram.rs`)
//! while the example stays a plain binary that the runnable test starts.

/// Sub-buckets per power of two in the latency histogram: 2^6, so a percentile is off by at
/// most 1/64 of its value (fio's histogram has the same resolution).
pub const SUB_BITS: u32 = 6;

/// Latencies in nanoseconds: a log-linear histogram (2^SUB_BITS buckets per power of two),
/// allocated once.
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; (64 << SUB_BITS) as usize],
            total: 0,
        }
    }

    pub fn bucket(value: u64) -> usize {
        if value < (1 << SUB_BITS) {
            return value as usize;
        }
        let power = 63 - value.leading_zeros();
        let sub = (value >> (power - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (((power - SUB_BITS + 1) << SUB_BITS) as u64 + sub) as usize
    }

    /// The middle of bucket `index`'s range.
    pub fn value(index: usize) -> u64 {
        let index = index as u64;
        if index < (1 << SUB_BITS) {
            return index;
        }
        let power = (index >> SUB_BITS) + u64::from(SUB_BITS) - 1;
        let sub = index & ((1 << SUB_BITS) - 1);
        let low = (1 << power) | (sub << (power - u64::from(SUB_BITS)));
        low + (1 << (power - u64::from(SUB_BITS))) / 2
    }

    pub fn record(&mut self, value: u64) {
        self.counts[Histogram::bucket(value)] += 1;
        self.total += 1;
    }

    /// The `p`-th percentile (0 < p ≤ 100); 0 for an empty histogram.
    pub fn percentile(&self, p: f64) -> u64 {
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if rank <= seen {
                return Histogram::value(index);
            }
        }
        0
    }
}
