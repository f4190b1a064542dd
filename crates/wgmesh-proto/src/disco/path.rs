//! The path manager: for each peer, which path packets take — a direct
//! UDP path found by disco, or the relay — and the disco traffic that
//! finds, measures and keeps those paths (DESIGN.md "Disco").
//!
//! Sans-IO, quinn-proto style: [`PathManager::handle_disco`] and
//! [`PathManager::handle_timeout`] take the time; [`PathManager::poll_transmit`],
//! [`PathManager::poll_event`] and [`PathManager::poll_timeout`] say what
//! to send, what changed and when to call again. Randomness is a seed
//! given once (nonces and transaction ids come from it, so a simulation is
//! deterministic and production seeds it from the OS).
//!
//! How a direct path is found (the technique of Tailscale's magicsock and
//! of ICE, RFC 8445, reduced to what a mesh of known peers needs):
//! - candidates are the peer's endpoints from the network map (its local
//!   addresses and its STUN-reflexive one), the sources of its pings, and
//!   what its call-me-maybes list;
//! - a discovery round pings every candidate and sends the peer a
//!   call-me-maybe through the relay with our own endpoints, so that it
//!   pings us back at the same moment: each side's outgoing ping opens its
//!   own NAT for the other's (hole punching, RFC 4787 §4.3 filtering);
//! - a ping is answered by a pong to its source; a pong that answers one
//!   of our pings (its transaction id, used once) from the very address
//!   we pinged confirms that path and measures its RTT;
//! - the best confirmed path (lowest RTT) carries traffic; it gets a
//!   heartbeat ping every [`HEARTBEAT`] and is dropped when no pong has
//!   come for [`TRUST`]: traffic then falls back to the relay, and
//!   discovery runs again — [`QUICK_ROUNDS`] rounds [`PROBE_QUICK`] apart
//!   after a trigger (new peer, lost path, call-me-maybe,
//!   [`PathManager::note_loss`]), then every [`PROBE_FAST`] until
//!   [`FAST_WINDOW`] has passed, then every [`PROBE_SLOW`], so a path that
//!   comes back is found again;
//! - the addresses peers saw our pings come from (in their pongs) join our
//!   own endpoints, which call-me-maybes carry.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use blake2::{Blake2s256, Digest};
use wgmesh_core::key::{PrivateKey, PublicKey};

use super::seal::{DiscoError, DiscoKeys};
use super::wire::{MAX_ENDPOINTS, Message};

/// Ping interval on the path in use.
pub const HEARTBEAT: Duration = Duration::from_millis(1000);
/// A path with no pong for this long is no longer used: with one
/// heartbeat a second, two lost in a row (or the path dying) moves the
/// peer to the relay within [`TRUST`] + one tick, inside issue 6's 3 s.
pub const TRUST: Duration = Duration::from_millis(2200);
/// The first [`QUICK_ROUNDS`] discovery rounds after a trigger come this
/// often (a lost ping costs a quarter second, not a whole one) …
pub const PROBE_QUICK: Duration = Duration::from_millis(250);
pub const QUICK_ROUNDS: u32 = 4;
/// … then this often while looking hard for a path …
pub const PROBE_FAST: Duration = Duration::from_millis(1000);
/// … for this long after a trigger …
pub const FAST_WINDOW: Duration = Duration::from_secs(10);
/// … then this often, while there is no direct path.
pub const PROBE_SLOW: Duration = Duration::from_secs(10);
/// With a direct path, how often the other candidates are probed (a
/// better path may have appeared).
pub const PROBE_DIRECT: Duration = Duration::from_secs(30);
/// An unanswered ping is forgotten after this.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Most candidates kept per peer (map endpoints first).
pub const MAX_CANDIDATES: usize = 32;

/// Which way a disco packet goes or came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// Straight over UDP, to or from this address.
    Direct(SocketAddr),
    /// Through the relay (or the control stream).
    Relay,
}

/// A disco datagram to send to `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub peer: PublicKey,
    pub via: Via,
    pub bytes: Vec<u8>,
}

/// The path a peer's traffic takes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Direct {
        addr: SocketAddr,
        rtt: Duration,
    },
    Relay,
    /// No confirmed direct path and no relay.
    Unreachable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathEvent {
    Changed { peer: PublicKey, path: Path },
}

/// Running totals, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathStats {
    pub pings_sent: u64,
    pub pongs_received: u64,
    pub call_me_maybes_sent: u64,
    /// Disco packets refused (forged, replayed, stale, unknown sender,
    /// malformed, or a pong for no ping of ours).
    pub rejected: u64,
    /// Times a peer went from relay/unreachable to direct.
    pub direct_established: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Map,
    Learned,
}

#[derive(Debug, Clone)]
struct Candidate {
    addr: SocketAddr,
    origin: Origin,
    last_pong: Option<Instant>,
    rtt: Option<Duration>,
}

#[derive(Debug)]
struct PeerPaths {
    candidates: Vec<Candidate>,
    best: Option<SocketAddr>,
    path: Path,
    next_probe: Instant,
    fast_until: Instant,
    /// Discovery rounds since the last trigger.
    rounds: u32,
    next_heartbeat: Option<Instant>,
}

impl PeerPaths {
    /// Something happened that calls for looking again, fast.
    fn trigger(&mut self, now: Instant) {
        self.next_probe = now;
        self.fast_until = now + FAST_WINDOW;
        self.rounds = 0;
    }
}

#[derive(Debug)]
struct Pending {
    peer: PublicKey,
    to: SocketAddr,
    sent: Instant,
}

/// One node's path manager.
#[derive(Debug)]
pub struct PathManager {
    keys: DiscoKeys,
    seed: [u8; 32],
    counter: u64,
    /// Wall-clock milliseconds at `epoch` (pings carry the wall clock).
    epoch: Instant,
    epoch_ms: u64,
    local: Vec<SocketAddr>,
    relay: bool,
    peers: HashMap<PublicKey, PeerPaths>,
    pending: HashMap<[u8; 12], Pending>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<PathEvent>,
    stats: PathStats,
}

impl PathManager {
    /// `seed`: 32 random bytes (OS randomness in production, a test's
    /// seed in simulation). `now_ms`: the wall clock at `now`.
    pub fn new(private: PrivateKey, seed: [u8; 32], now: Instant, now_ms: u64) -> Self {
        Self {
            keys: DiscoKeys::new(private),
            seed,
            counter: 0,
            epoch: now,
            epoch_ms: now_ms,
            local: Vec::new(),
            relay: false,
            peers: HashMap::new(),
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: PathStats::default(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    pub fn stats(&self) -> PathStats {
        self.stats
    }

    /// This node's own endpoints (local and reflexive), sent in
    /// call-me-maybes.
    pub fn set_local_endpoints(&mut self, endpoints: Vec<SocketAddr>) {
        self.local = endpoints;
    }

    /// Whether a relay carries traffic (and call-me-maybes) for us.
    pub fn set_relay(&mut self, now: Instant, available: bool) {
        if self.relay == available {
            return;
        }
        self.relay = available;
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.reassess(now, k);
        }
    }

    /// Adds a peer or replaces its endpoints from the map. A new peer, or
    /// new endpoints, start a discovery round now.
    pub fn upsert_peer(&mut self, now: Instant, peer: PublicKey, endpoints: &[SocketAddr]) {
        let relay = self.relay;
        let p = self.peers.entry(peer).or_insert_with(|| PeerPaths {
            candidates: Vec::new(),
            best: None,
            path: if relay {
                Path::Relay
            } else {
                Path::Unreachable
            },
            next_probe: now,
            fast_until: now + FAST_WINDOW,
            rounds: 0,
            next_heartbeat: None,
        });
        let mut changed = false;
        for e in endpoints {
            if !p.candidates.iter().any(|c| c.addr == *e) && p.candidates.len() < MAX_CANDIDATES {
                p.candidates.push(Candidate {
                    addr: *e,
                    origin: Origin::Map,
                    last_pong: None,
                    rtt: None,
                });
                changed = true;
            }
        }
        // Map endpoints that are gone, unless they carry traffic now.
        let best = p.best;
        let before = p.candidates.len();
        p.candidates.retain(|c| {
            c.origin != Origin::Map || endpoints.contains(&c.addr) || Some(c.addr) == best
        });
        changed |= p.candidates.len() != before;
        if changed {
            p.trigger(now);
        }
    }

    pub fn remove_peer(&mut self, peer: &PublicKey) {
        self.peers.remove(peer);
        self.pending.retain(|_, p| p.peer != *peer);
        self.keys.forget(peer);
    }

    /// The path `peer`'s traffic takes now.
    pub fn path(&self, peer: &PublicKey) -> Option<Path> {
        self.peers.get(peer).map(|p| p.path)
    }

    /// Something suggests the path in use lost packets (e.g. WireGuard
    /// retried a handshake): look again, fast.
    pub fn note_loss(&mut self, now: Instant, peer: &PublicKey) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.trigger(now);
        }
    }

    fn wall_ms(&self, now: Instant) -> u64 {
        self.epoch_ms + now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    /// 24 + 12 fresh bytes from the seed: a nonce (unique: the counter
    /// never repeats for this seed) and a transaction id.
    fn fresh(&mut self) -> ([u8; 24], [u8; 12]) {
        self.counter += 1;
        let mut h = Blake2s256::new();
        h.update(self.seed);
        h.update(self.counter.to_le_bytes());
        let d: [u8; 32] = h.finalize().into();
        let mut nonce = [0u8; 24];
        nonce[..16].copy_from_slice(&d[..16]);
        nonce[16..].copy_from_slice(&self.counter.to_le_bytes());
        let mut tx = [0u8; 12];
        tx.copy_from_slice(&d[16..28]);
        (nonce, tx)
    }

    fn send(&mut self, peer: PublicKey, via: Via, msg: &Message, nonce: [u8; 24]) {
        // Only a peer with a low-order key fails here; it gets nothing.
        if let Ok(bytes) = self.keys.seal(&peer, msg, nonce) {
            self.transmits.push_back(Transmit { peer, via, bytes });
        }
    }

    fn ping(&mut self, now: Instant, peer: PublicKey, to: SocketAddr) {
        let (nonce, tx) = self.fresh();
        let msg = Message::Ping {
            tx,
            sent_at_ms: self.wall_ms(now),
        };
        self.pending.insert(
            tx,
            Pending {
                peer,
                to,
                sent: now,
            },
        );
        self.stats.pings_sent += 1;
        self.send(peer, Via::Direct(to), &msg, nonce);
    }

    fn discovery_round(&mut self, now: Instant, peer: PublicKey) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let targets: Vec<SocketAddr> = p.candidates.iter().map(|c| c.addr).collect();
        for to in targets {
            self.ping(now, peer, to);
        }
        if self.relay && !self.local.is_empty() {
            let (nonce, _) = self.fresh();
            let msg = Message::CallMeMaybe {
                sent_at_ms: self.wall_ms(now),
                endpoints: self.local.iter().take(MAX_ENDPOINTS).copied().collect(),
            };
            self.stats.call_me_maybes_sent += 1;
            self.send(peer, Via::Relay, &msg, nonce);
        }
    }

    /// A disco datagram that came `via` (a UDP source, or the relay).
    pub fn handle_disco(
        &mut self,
        now: Instant,
        via: Via,
        datagram: &[u8],
    ) -> Result<(), DiscoError> {
        let now_ms = self.wall_ms(now);
        let peers = &self.peers;
        let opened = match self.keys.open(now_ms, datagram, |k| peers.contains_key(k)) {
            Ok(o) => o,
            Err(e) => {
                self.stats.rejected += 1;
                return Err(e);
            }
        };
        let peer = opened.from;
        match opened.message {
            Message::Ping { tx, .. } => {
                let (nonce, _) = self.fresh();
                match via {
                    Via::Direct(from) => {
                        self.send(peer, via, &Message::Pong { tx, observed: from }, nonce);
                        // Its source is a candidate; ping it back at once:
                        // that opens our NAT toward it (the punch).
                        let p = self
                            .peers
                            .get_mut(&peer)
                            .expect("invariant: checked by open");
                        let known = p.candidates.iter().any(|c| c.addr == from);
                        if !known && p.candidates.len() < MAX_CANDIDATES {
                            p.candidates.push(Candidate {
                                addr: from,
                                origin: Origin::Learned,
                                last_pong: None,
                                rtt: None,
                            });
                        }
                        if p.best != Some(from) {
                            self.ping(now, peer, from);
                        }
                    }
                    Via::Relay => {
                        let pong = Message::Pong {
                            tx,
                            observed: SocketAddr::from(([0, 0, 0, 0], 0)),
                        };
                        self.send(peer, via, &pong, nonce);
                    }
                }
            }
            Message::Pong { tx, observed } => {
                // Where the peer saw our ping come from is one of our own
                // endpoints (as STUN would tell): worth telling others.
                if matches!(via, Via::Direct(_))
                    && !self.local.contains(&observed)
                    && self.local.len() < MAX_ENDPOINTS
                {
                    self.local.push(observed);
                }
                let Some(pending) = self.pending.remove(&tx) else {
                    self.stats.rejected += 1;
                    return Err(DiscoError::Replayed);
                };
                if pending.peer != peer || via != Via::Direct(pending.to) {
                    // Answered from elsewhere than we pinged: not this path.
                    self.stats.rejected += 1;
                    return Ok(());
                }
                self.stats.pongs_received += 1;
                let rtt = now.saturating_duration_since(pending.sent);
                let p = self
                    .peers
                    .get_mut(&peer)
                    .expect("invariant: checked by open");
                if let Some(c) = p.candidates.iter_mut().find(|c| c.addr == pending.to) {
                    c.last_pong = Some(now);
                    c.rtt = Some(rtt);
                }
                self.reassess(now, peer);
            }
            Message::CallMeMaybe { endpoints, .. } => {
                let p = self
                    .peers
                    .get_mut(&peer)
                    .expect("invariant: checked by open");
                let mut targets = Vec::new();
                for e in endpoints {
                    if !p.candidates.iter().any(|c| c.addr == e)
                        && p.candidates.len() < MAX_CANDIDATES
                    {
                        p.candidates.push(Candidate {
                            addr: e,
                            origin: Origin::Learned,
                            last_pong: None,
                            rtt: None,
                        });
                    }
                    targets.push(e);
                }
                p.fast_until = now + FAST_WINDOW;
                p.rounds = 0;
                if p.best.is_none() {
                    for to in targets {
                        self.ping(now, peer, to);
                    }
                }
            }
        }
        Ok(())
    }

    /// Picks the path for `peer` from what is confirmed now, with a little
    /// hysteresis (a new path must be clearly faster to replace a working
    /// one), and reports a change.
    fn reassess(&mut self, now: Instant, peer: PublicKey) {
        let relay = self.relay;
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let alive = |c: &&Candidate| {
            c.last_pong
                .is_some_and(|t| now.saturating_duration_since(t) < TRUST)
        };
        let fastest = p
            .candidates
            .iter()
            .filter(alive)
            .min_by_key(|c| c.rtt)
            .map(|c| (c.addr, c.rtt.unwrap_or_default()));
        let current = p
            .best
            .and_then(|b| p.candidates.iter().filter(alive).find(|c| c.addr == b))
            .map(|c| (c.addr, c.rtt.unwrap_or_default()));
        let chosen = match (current, fastest) {
            (Some(cur), Some(fast)) if fast.1 * 10 < cur.1 * 8 => Some(fast),
            (Some(cur), _) => Some(cur),
            (None, fast) => fast,
        };
        let path = match chosen {
            Some((addr, rtt)) => Path::Direct { addr, rtt },
            None if relay => Path::Relay,
            None => Path::Unreachable,
        };
        let was_direct = matches!(p.path, Path::Direct { .. });
        p.best = chosen.map(|c| c.0);
        match (chosen, p.next_heartbeat) {
            (Some(_), None) => p.next_heartbeat = Some(now + HEARTBEAT),
            (None, Some(_)) => {
                p.next_heartbeat = None;
                // Lost the path: look again, fast.
                p.trigger(now);
            }
            _ => {}
        }
        let moved = match (p.path, path) {
            (Path::Direct { addr: a, .. }, Path::Direct { addr: b, .. }) => a != b,
            (a, b) => a != b,
        };
        // The RTT is refreshed silently; only a different path is news.
        p.path = path;
        if moved {
            if !was_direct && matches!(path, Path::Direct { .. }) {
                self.stats.direct_established += 1;
            }
            self.events.push_back(PathEvent::Changed { peer, path });
        }
    }

    /// Runs what is due at `now`: heartbeats, discovery rounds, trust
    /// expiry, forgotten pings.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pending
            .retain(|_, p| now.saturating_duration_since(p.sent) < PING_TIMEOUT);
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for peer in keys {
            self.reassess(now, peer);
            let p = &self.peers[&peer];
            if let (Some(at), Some(best)) = (p.next_heartbeat, p.best)
                && now >= at
            {
                self.ping(now, peer, best);
                let p = self
                    .peers
                    .get_mut(&peer)
                    .expect("invariant: iterating keys");
                p.next_heartbeat = Some(now + HEARTBEAT);
            }
            let p = &self.peers[&peer];
            if now >= p.next_probe {
                self.discovery_round(now, peer);
                let p = self
                    .peers
                    .get_mut(&peer)
                    .expect("invariant: iterating keys");
                p.rounds = p.rounds.saturating_add(1);
                p.next_probe = now
                    + if p.best.is_some() {
                        PROBE_DIRECT
                    } else if p.rounds < QUICK_ROUNDS {
                        PROBE_QUICK
                    } else if now < p.fast_until {
                        PROBE_FAST
                    } else {
                        PROBE_SLOW
                    };
            }
        }
    }

    /// When [`PathManager::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut at = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for p in self.peers.values() {
            at(p.next_probe);
            if let Some(h) = p.next_heartbeat {
                at(h);
            }
            if let Some(t) = p
                .best
                .and_then(|best| p.candidates.iter().find(|c| c.addr == best))
                .and_then(|c| c.last_pong)
            {
                at(t + TRUST);
            }
        }
        for p in self.pending.values() {
            at(p.sent + PING_TIMEOUT);
        }
        next
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<PathEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
