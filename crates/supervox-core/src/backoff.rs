//! Exponential backoff with full jitter, so a crowd of clients that lost the
//! same supernode does not reconnect in lockstep (the 2007/2010 failure mode).

use rand::Rng;

/// Backoff state: the delay doubles per failure up to a cap; the actual wait
/// is drawn uniformly from [base/2, delay] so waves spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_ms: u64,
    max_ms: u64,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base_ms`, never above `max_ms`.
    pub fn new(base_ms: u64, max_ms: u64) -> Self {
        Self { base_ms, max_ms, failures: 0 }
    }

    /// Record a failure and return how long to wait before the next try.
    pub fn next_delay<R: Rng>(&mut self, rng: &mut R) -> u64 {
        let exp = self.base_ms.saturating_mul(1u64 << self.failures.min(20));
        let cap = exp.min(self.max_ms).max(1);
        self.failures = self.failures.saturating_add(1);
        rng.gen_range(cap / 2..=cap)
    }

    /// Forget failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grows_caps_and_resets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut b = Backoff::new(100, 5_000);
        let first = b.next_delay(&mut rng);
        assert!((50..=100).contains(&first));
        for _ in 0..30 {
            assert!(b.next_delay(&mut rng) <= 5_000);
        }
        assert!(b.next_delay(&mut rng) >= 2_500);
        b.reset();
        assert!(b.next_delay(&mut rng) <= 100);
    }
}
