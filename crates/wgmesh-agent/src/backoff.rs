//! Reconnection delays: exponential from 1 s to 30 s, each drawn at
//! random between half and all of the current step ("equal jitter"), so
//! that agents cut off together by a server restart do not all come back
//! in the same second.

use std::time::Duration;

pub const FIRST: Duration = Duration::from_secs(1);
pub const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { step: FIRST }
    }
}

impl Backoff {
    /// After a success: the next failure waits about [`FIRST`] again.
    pub fn reset(&mut self) {
        self.step = FIRST;
    }

    /// The delay before the next attempt, given a random 32-bit value.
    pub fn next_with(&mut self, random: u32) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(MAX);
        let half = step / 2;
        half + half.mul_f64(f64::from(random) / f64::from(u32::MAX))
    }

    /// [`Backoff::next_with`] with the OS's randomness (none: no jitter).
    pub fn next_delay(&mut self) -> Duration {
        let mut b = [0u8; 4];
        let r = getrandom::fill(&mut b).map_or(u32::MAX, |()| u32::from_le_bytes(b));
        self.next_with(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let top: Vec<u64> = (0..8)
            .map(|_| b.next_with(u32::MAX).as_millis() as u64)
            .collect();
        assert_eq!(top, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        b.reset();
        assert_eq!(b.next_with(0), Duration::from_millis(500));
        assert_eq!(b.next_with(0), Duration::from_millis(1000));
    }
}
