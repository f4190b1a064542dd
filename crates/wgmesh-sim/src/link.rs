//! Link impairment: one-way latency, jitter and loss of a node's attachment.
//!
//! Every host, and every router's outside interface, has one [`Link`] to the
//! segment (the internet or a router's LAN) it sits on. A datagram from A to
//! B on one segment crosses A's link and then B's, so the one-way delay is
//! the sum of both and the round trip twice that. A router's LAN side is
//! ideal (a home router's switch). The counterpart in the real lab is
//! `wgmesh-lab`'s impairment (netem-like delay element on a veth).
//!
//! Jitter is drawn uniformly in `[0, jitter]` per datagram and added to the
//! latency, so jitter can reorder datagrams as it does on real paths.

use std::time::Duration;

use crate::rng::SimRng;

/// One direction's impairment of an attachment; the same in both directions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Extra delay, uniform in `[0, jitter]` per datagram.
    pub jitter: Duration,
    /// Probability that a datagram is lost crossing this link, in [0, 1]
    /// (values outside are clamped; NaN means no loss).
    pub loss: f64,
}

impl Link {
    /// No delay, no loss.
    pub const IDEAL: Link = Link {
        latency: Duration::ZERO,
        jitter: Duration::ZERO,
        loss: 0.0,
    };

    /// A loss-free link with a fixed one-way `latency`.
    pub fn with_latency(latency: Duration) -> Self {
        Link {
            latency,
            ..Link::IDEAL
        }
    }

    /// This link with jitter `jitter`.
    pub fn jitter(self, jitter: Duration) -> Self {
        Link { jitter, ..self }
    }

    /// This link with loss probability `loss`.
    pub fn loss(self, loss: f64) -> Self {
        Link { loss, ..self }
    }

    /// A datagram's fate on this link: its delay, or `None` when it is lost.
    pub(crate) fn sample(&self, rng: &mut SimRng) -> Option<Duration> {
        if rng.chance(self.loss) {
            return None;
        }
        Some(self.latency + rng.duration_upto(self.jitter))
    }
}

impl Default for Link {
    fn default() -> Self {
        Link::IDEAL
    }
}
