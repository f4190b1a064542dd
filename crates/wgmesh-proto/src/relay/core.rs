//! The relay's state, with no IO: who is registered on which session,
//! who may be, how fast each node may send, and what each incoming frame
//! turns into.
//!
//! A session is where frames come from and go back to: a UDP source
//! address or a connection (a WebSocket) the IO shell numbered. A session
//! registers one node key with a verified hello ([`super::hello`]); the
//! newest registration of a key wins (a node that roams, or reconnects
//! over WebSocket, takes its key along). A registration lapses after
//! [`RelayConfig::idle_timeout`] without a frame from its session, and at
//! once when its key leaves the membership.
//!
//! Sends are forwarded by destination key as recv frames carrying the
//! sender's key and the payload bytes unchanged; the relay reads nothing
//! past the 33-byte header. Each node has a token bucket of payload bytes.
//!
//! It does not own sockets, the clock, the membership source or the
//! relay's key file: the IO shell (wgmesh-relay) feeds them in.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wgmesh_core::key::{PrivateKey, PublicKey};

use super::hello::{HelloError, HelloVerifier};
use super::wire::{Frame, RefuseReason, VERSION};

/// Where a frame came from, and where answers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionId {
    /// A UDP source address.
    Udp(SocketAddr),
    /// A stream connection (WebSocket), numbered by the IO shell.
    Conn(u64),
}

/// A per-node rate: a token bucket of payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Bytes added per second.
    pub bytes_per_sec: u64,
    /// The most the bucket holds (a burst allowed after a pause).
    pub burst_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    /// A registration lapses after this long without a frame from its
    /// session (clients send keepalives more often).
    pub idle_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            rate_limit: None,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// What happened, for the IO shell (to close a connection) and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEvent {
    Registered {
        session: SessionId,
        node: PublicKey,
    },
    /// The session no longer carries `node`; a WebSocket session should be
    /// closed.
    Unregistered {
        session: SessionId,
        node: PublicKey,
        why: Unregistered,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unregistered {
    /// No frame within the idle timeout.
    Idle,
    /// The key left the membership.
    NotMember,
    /// The key registered again from another session.
    Replaced,
    /// The session registered another key.
    OtherKey,
    /// The IO shell closed the session.
    Closed,
}

/// Counts of what the relay did, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounters {
    pub hellos_accepted: u64,
    pub frames_forwarded: u64,
    pub bytes_forwarded: u64,
    /// Of those, the frames and payload bytes forwarded to a stream
    /// (WebSocket) session; the rest went out over UDP.
    pub frames_forwarded_stream: u64,
    pub bytes_forwarded_stream: u64,
    pub keepalives: u64,
    pub peer_gone_sent: u64,
    /// Hellos from keys that are not members.
    pub dropped_not_member: u64,
    /// Hellos whose proof failed, or that were replayed or stale.
    pub dropped_bad_hello: u64,
    /// Frames from sessions that have not registered.
    pub dropped_not_registered: u64,
    /// Sends to keys with no registration.
    pub dropped_no_destination: u64,
    /// Sends over the sender's rate.
    pub dropped_rate_limited: u64,
    /// Bytes that are not a frame, or a frame only the relay sends.
    pub dropped_malformed: u64,
    pub registrations_expired: u64,
    pub registrations_removed: u64,
}

impl RelayCounters {
    pub fn named(&self) -> [(&'static str, u64); 15] {
        let Self {
            hellos_accepted,
            frames_forwarded,
            bytes_forwarded,
            frames_forwarded_stream,
            bytes_forwarded_stream,
            keepalives,
            peer_gone_sent,
            dropped_not_member,
            dropped_bad_hello,
            dropped_not_registered,
            dropped_no_destination,
            dropped_rate_limited,
            dropped_malformed,
            registrations_expired,
            registrations_removed,
        } = *self;
        [
            ("hellos_accepted", hellos_accepted),
            ("frames_forwarded", frames_forwarded),
            ("bytes_forwarded", bytes_forwarded),
            ("frames_forwarded_stream", frames_forwarded_stream),
            ("bytes_forwarded_stream", bytes_forwarded_stream),
            ("keepalives", keepalives),
            ("peer_gone_sent", peer_gone_sent),
            ("dropped_not_member", dropped_not_member),
            ("dropped_bad_hello", dropped_bad_hello),
            ("dropped_not_registered", dropped_not_registered),
            ("dropped_no_destination", dropped_no_destination),
            ("dropped_rate_limited", dropped_rate_limited),
            ("dropped_malformed", dropped_malformed),
            ("registrations_expired", registrations_expired),
            ("registrations_removed", registrations_removed),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
struct Registration {
    node: PublicKey,
    last_seen: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u64,
    at: Instant,
}

impl Bucket {
    /// Takes `n` bytes if the bucket (refilled to `now`) holds them.
    fn take(&mut self, now: Instant, n: u64, rate: RateLimit) -> bool {
        let elapsed = now.saturating_duration_since(self.at);
        // Whole bytes only; the remainder carries over by not moving `at`
        // past the time those bytes account for.
        let add = u128::from(rate.bytes_per_sec) * elapsed.as_nanos() / 1_000_000_000;
        if add > 0 {
            let add = u64::try_from(add).unwrap_or(u64::MAX);
            self.tokens = self.tokens.saturating_add(add).min(rate.burst_bytes);
            self.at = now;
        }
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The relay's state machine.
#[derive(Debug)]
pub struct RelayCore {
    config: RelayConfig,
    hello: HelloVerifier,
    members: HashSet<PublicKey>,
    sessions: HashMap<SessionId, Registration>,
    by_key: HashMap<PublicKey, SessionId>,
    buckets: HashMap<PublicKey, Bucket>,
    transmits: VecDeque<(SessionId, Vec<u8>)>,
    events: VecDeque<RelayEvent>,
    counters: RelayCounters,
}

impl RelayCore {
    /// A relay with its static key and no members yet.
    pub fn new(private: PrivateKey, config: RelayConfig) -> Self {
        Self {
            config,
            hello: HelloVerifier::new(private),
            members: HashSet::new(),
            sessions: HashMap::new(),
            by_key: HashMap::new(),
            buckets: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: RelayCounters::default(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.hello.public_key()
    }

    pub fn counters(&self) -> RelayCounters {
        self.counters
    }

    pub fn is_member(&self, key: &PublicKey) -> bool {
        self.members.contains(key)
    }

    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// How many keys are registered.
    pub fn registered(&self) -> usize {
        self.by_key.len()
    }

    /// The session `key` is registered on.
    pub fn session_of(&self, key: &PublicKey) -> Option<SessionId> {
        self.by_key.get(key).copied()
    }

    /// Replaces the membership. Registrations of keys that left are
    /// dropped at once, and their sessions told (refused: not a member).
    pub fn set_members(&mut self, members: impl IntoIterator<Item = PublicKey>) {
        self.members = members.into_iter().collect();
        let gone: Vec<PublicKey> = self
            .by_key
            .keys()
            .filter(|k| !self.members.contains(k))
            .copied()
            .collect();
        for key in gone {
            if let Some(session) = self.by_key.get(&key).copied() {
                self.unregister(session, Unregistered::NotMember);
                self.counters.registrations_removed += 1;
                self.refuse(session, RefuseReason::NotMember);
            }
        }
        let members = &self.members;
        self.buckets.retain(|k, _| members.contains(k));
    }

    /// One frame from `from`, at monotonic `now` and wall-clock `unix_ms`
    /// (for the hello's clock check).
    pub fn handle_frame(&mut self, now: Instant, unix_ms: u64, from: SessionId, bytes: &[u8]) {
        let frame = match Frame::parse(bytes) {
            Ok(f) => f,
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return;
            }
        };
        match frame {
            Frame::ClientHello(h) => {
                if !self.members.contains(&h.node) {
                    self.counters.dropped_not_member += 1;
                    self.refuse(from, RefuseReason::NotMember);
                    return;
                }
                if let Err(e) = self.hello.verify(unix_ms, &h) {
                    self.counters.dropped_bad_hello += 1;
                    let reason = match e {
                        HelloError::Replayed => RefuseReason::Replayed,
                        HelloError::ClockSkew { .. } => RefuseReason::ClockSkew,
                        HelloError::Version(_) => RefuseReason::Version,
                        HelloError::BadProof | HelloError::WeakKey => RefuseReason::BadProof,
                    };
                    self.refuse(from, reason);
                    return;
                }
                self.register(now, from, h.node);
                self.counters.hellos_accepted += 1;
                self.transmit(from, Frame::ServerHello { version: VERSION });
            }
            Frame::Send { to, payload } => {
                let Some(reg) = self.sessions.get_mut(&from) else {
                    self.counters.dropped_not_registered += 1;
                    self.refuse(from, RefuseReason::NotRegistered);
                    return;
                };
                reg.last_seen = now;
                let sender = reg.node;
                if let Some(rate) = self.config.rate_limit {
                    let bucket = self.buckets.entry(sender).or_insert(Bucket {
                        tokens: rate.burst_bytes,
                        at: now,
                    });
                    let n = u64::try_from(payload.len()).unwrap_or(u64::MAX);
                    if !bucket.take(now, n, rate) {
                        self.counters.dropped_rate_limited += 1;
                        return;
                    }
                }
                let Some(dest) = self.by_key.get(&to).copied() else {
                    self.counters.dropped_no_destination += 1;
                    self.counters.peer_gone_sent += 1;
                    self.transmit(from, Frame::PeerGone(to));
                    return;
                };
                let n = u64::try_from(payload.len()).unwrap_or(0);
                self.counters.frames_forwarded += 1;
                self.counters.bytes_forwarded += n;
                if let SessionId::Conn(_) = dest {
                    self.counters.frames_forwarded_stream += 1;
                    self.counters.bytes_forwarded_stream += n;
                }
                self.transmit(
                    dest,
                    Frame::Recv {
                        from: sender,
                        payload,
                    },
                );
            }
            Frame::Keepalive => {
                let Some(reg) = self.sessions.get_mut(&from) else {
                    self.counters.dropped_not_registered += 1;
                    self.refuse(from, RefuseReason::NotRegistered);
                    return;
                };
                reg.last_seen = now;
                self.counters.keepalives += 1;
                // Answered, so the client knows the relay still has it
                // (and measures the round trip).
                self.transmit(from, Frame::Keepalive);
            }
            Frame::ServerHello { .. }
            | Frame::Refused(_)
            | Frame::Recv { .. }
            | Frame::PeerGone(_) => {
                // Frames only the relay sends.
                self.counters.dropped_malformed += 1;
            }
        }
    }

    /// The IO shell closed `session` (a WebSocket went away).
    pub fn handle_session_closed(&mut self, session: SessionId) {
        if self.sessions.contains_key(&session) {
            self.unregister(session, Unregistered::Closed);
        }
    }

    /// Drops registrations idle for longer than the idle timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.config.idle_timeout;
        let lapsed: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.last_seen) > idle)
            .map(|(s, _)| *s)
            .collect();
        for s in lapsed {
            self.unregister(s, Unregistered::Idle);
            self.counters.registrations_expired += 1;
        }
    }

    /// When [`RelayCore::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sessions
            .values()
            .map(|r| r.last_seen + self.config.idle_timeout)
            .min()
    }

    /// A frame to send, and the session to send it on.
    pub fn poll_transmit(&mut self) -> Option<(SessionId, Vec<u8>)> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    fn register(&mut self, now: Instant, session: SessionId, node: PublicKey) {
        if let Some(old) = self.sessions.get(&session).copied() {
            if old.node == node {
                self.sessions.insert(
                    session,
                    Registration {
                        node,
                        last_seen: now,
                    },
                );
                return;
            }
            self.unregister(session, Unregistered::OtherKey);
        }
        if let Some(old_session) = self.by_key.get(&node).copied() {
            self.unregister(old_session, Unregistered::Replaced);
        }
        self.sessions.insert(
            session,
            Registration {
                node,
                last_seen: now,
            },
        );
        self.by_key.insert(node, session);
        self.events
            .push_back(RelayEvent::Registered { session, node });
    }

    fn unregister(&mut self, session: SessionId, why: Unregistered) {
        if let Some(reg) = self.sessions.remove(&session) {
            if self.by_key.get(&reg.node) == Some(&session) {
                self.by_key.remove(&reg.node);
            }
            if why == Unregistered::NotMember {
                self.hello.forget(&reg.node);
            }
            self.events.push_back(RelayEvent::Unregistered {
                session,
                node: reg.node,
                why,
            });
        }
    }

    fn refuse(&mut self, to: SessionId, reason: RefuseReason) {
        self.transmit(to, Frame::Refused(reason));
    }

    fn transmit(&mut self, to: SessionId, frame: Frame<'_>) {
        let mut out = Vec::with_capacity(frame.buffer_len());
        frame.emit(&mut out);
        self.transmits.push_back((to, out));
    }
}

#[cfg(test)]
mod tests;
