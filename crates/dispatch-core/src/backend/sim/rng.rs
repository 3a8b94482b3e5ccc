//! The simulator's seeded pseudo-random numbers (SplitMix64: tiny, fast, and a full period
//! over `u64`) and its trace hash (FNV-1a over 64-bit words). Both are the project's own, so
//! that one seed gives one trace on every machine and with every dependency version (on one
//! OS: the trace holds errno values, which differ between Linux and the BSDs).

/// A seeded generator; the same seed always gives the same sequence.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        // Multiply-shift: unbiased enough for fault injection, and no division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `low..=high`.
    pub(crate) fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high);
        match (high - low).checked_add(1) {
            Some(span) => low + self.below(span),
            None => self.next_u64(),
        }
    }

    /// `true` with probability `ppm` parts per million. Draws nothing when `ppm` is 0: with
    /// faults off, the simulation draws no random numbers for them at all.
    pub(crate) fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }
}

/// The running hash of everything observable in a simulation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trace {
    hash: u64,
    events: u64,
}

impl Trace {
    pub(crate) const fn new() -> Trace {
        Trace {
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
        }
    }

    /// Adds one event of `words`.
    pub(crate) fn add(&mut self, words: &[u64]) {
        self.events += 1;
        for &word in words {
            for byte in word.to_le_bytes() {
                self.hash ^= u64::from(byte);
                self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    pub(crate) fn events(&self) -> u64 {
        self.events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_sequence_and_bounds_hold() {
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..100).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        for _ in 0..1000 {
            assert!(a.below(10) < 10);
            let x = a.between(5, 9);
            assert!((5..=9).contains(&x));
        }
        assert!(!a.chance(0));
        assert!(a.chance(1_000_000));
    }

    #[test]
    fn trace_hash_depends_on_every_word_and_their_order() {
        let mut a = Trace::new();
        let mut b = Trace::new();
        a.add(&[1, 2]);
        b.add(&[2, 1]);
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.events(), 1);
    }
}
