//! The simulation's one source of randomness: ChaCha8 seeded from a `u64`.
//!
//! Every random choice (loss, jitter, NAT port picks) is drawn from it in
//! event order, and events are processed in a total order, so one seed gives
//! one run. It owns no policy; callers decide what the numbers mean.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

#[derive(Debug, Clone)]
pub(crate) struct SimRng(ChaCha8Rng);

impl SimRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in `0..n` (`n > 0`), by the multiply-shift method: the bias
    /// is below 2^-32 for the ranges used here, and it needs one draw.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.0.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`, clamped to [0, 1] (NaN counts as 0).
    /// Draws nothing when the answer is certain, so a loss-free link does
    /// not shift the random stream of the rest of the run.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // 53 random bits: a uniform f64 in [0, 1).
        let u = (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }

    /// Uniform in `0..=max`, at nanosecond resolution; zero draws nothing.
    pub(crate) fn duration_upto(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.below(nanos.saturating_add(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_and_ranges_hold() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        assert!(!a.chance(0.0));
        assert!(a.chance(1.0));
        assert!(!a.chance(f64::NAN));
        let hits = (0..10_000).filter(|_| a.chance(0.25)).count();
        assert!((2200..2800).contains(&hits), "{hits}");
        let d = a.duration_upto(Duration::from_millis(5));
        assert!(d <= Duration::from_millis(5));
        assert_eq!(a.duration_upto(Duration::ZERO), Duration::ZERO);
    }
}
