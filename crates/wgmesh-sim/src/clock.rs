//! The virtual clock: `std::time::Instant`s handed out as a fixed origin plus
//! simulated elapsed time.
//!
//! wgmesh-proto takes `now: Instant` in every `handle_*`; a clock that hands
//! out `base + elapsed` is therefore driveable without adapters. Everything
//! the simulation decides or records (event order, traces, NAT timers) is in
//! `Duration`s since the origin, so the origin's value never changes a run.
//! This module owns the time arithmetic only; the event queue is `net`'s.

use std::time::{Duration, Instant};

/// Simulated time: `base` is an arbitrary origin, `elapsed` only ever grows.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    elapsed: Duration,
}

impl Clock {
    /// A clock standing at `base`.
    pub fn new(base: Instant) -> Self {
        Self {
            base,
            elapsed: Duration::ZERO,
        }
    }

    /// The current simulated instant.
    pub fn now(&self) -> Instant {
        self.at(self.elapsed)
    }

    /// Simulated time since the origin.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// The origin every `Instant` of this clock is measured from.
    pub fn base(&self) -> Instant {
        self.base
    }

    /// The instant `offset` after the origin.
    pub fn at(&self, offset: Duration) -> Instant {
        self.base + offset
    }

    /// `t` as an offset from the origin; instants before it count as zero.
    pub fn offset_of(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.base)
    }

    /// Moves the clock forward to `offset`; never backwards.
    pub(crate) fn advance_to(&mut self, offset: Duration) {
        self.elapsed = self.elapsed.max(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_base_plus_elapsed_and_never_goes_back() {
        let base = Instant::now();
        let mut c = Clock::new(base);
        assert_eq!(c.now(), base);
        c.advance_to(Duration::from_millis(250));
        assert_eq!(c.now(), base + Duration::from_millis(250));
        c.advance_to(Duration::from_millis(100));
        assert_eq!(c.elapsed(), Duration::from_millis(250));
        assert_eq!(
            c.offset_of(base + Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(c.offset_of(c.now()), c.elapsed());
    }
}
