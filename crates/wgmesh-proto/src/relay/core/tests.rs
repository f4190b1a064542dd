//! RelayCore and ClientSession together, on a made-up clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wgmesh_core::key::{PrivateKey, PublicKey};

use super::*;
use crate::relay::client::{ClientEvent, ClientSession, ClientState, KEEPALIVE_INTERVAL};
use crate::relay::hello::{HelloSealer, MAX_SKEW_MS};
use crate::relay::wire::{Frame, RefuseReason};

const T: u64 = 1_764_000_000_000;

fn key(b: u8) -> PrivateKey {
    PrivateKey::from_random([b; 32])
}

fn udp(port: u16) -> SessionId {
    SessionId::Udp(SocketAddr::from(([192, 0, 2, 1], port)))
}

struct World {
    now: Instant,
    relay: RelayCore,
    relay_key: PublicKey,
}

impl World {
    fn new(config: RelayConfig, members: &[&PrivateKey]) -> Self {
        let rk = key(100);
        let relay_key = rk.public_key();
        let mut relay = RelayCore::new(rk, config);
        relay.set_members(members.iter().map(|k| k.public_key()));
        Self {
            now: Instant::now(),
            relay,
            relay_key,
        }
    }

    fn unix(&self) -> u64 {
        T
    }

    fn hello(
        &mut self,
        from: SessionId,
        node: &PrivateKey,
        nonce: u8,
    ) -> Vec<(SessionId, Vec<u8>)> {
        let h = HelloSealer::new(node, &self.relay_key)
            .unwrap()
            .hello(self.unix(), [nonce; 24]);
        let bytes = Frame::ClientHello(h).to_vec().unwrap();
        self.feed(from, &bytes)
    }

    fn feed(&mut self, from: SessionId, bytes: &[u8]) -> Vec<(SessionId, Vec<u8>)> {
        let unix = self.unix();
        self.relay.handle_frame(self.now, unix, from, bytes);
        std::iter::from_fn(|| self.relay.poll_transmit()).collect()
    }

    fn send(
        &mut self,
        from: SessionId,
        to: &PrivateKey,
        payload: &[u8],
    ) -> Vec<(SessionId, Vec<u8>)> {
        let bytes = Frame::Send {
            to: to.public_key(),
            payload,
        }
        .to_vec()
        .unwrap();
        self.feed(from, &bytes)
    }
}

fn refused(r: RefuseReason) -> Vec<u8> {
    Frame::Refused(r).to_vec().unwrap()
}

#[test]
fn members_register_and_exchange_both_ways() {
    let (a, b) = (key(1), key(2));
    let mut w = World::new(RelayConfig::default(), &[&a, &b]);
    assert_eq!(w.hello(udp(1), &a, 1), vec![(udp(1), vec![0xE2, 1])]);
    assert_eq!(
        w.hello(SessionId::Conn(7), &b, 2),
        vec![(SessionId::Conn(7), vec![0xE2, 1])]
    );
    assert_eq!(w.relay.registered(), 2);
    let out = w.send(udp(1), &b, b"ciphertext a->b");
    assert_eq!(
        out,
        vec![(
            SessionId::Conn(7),
            Frame::Recv {
                from: a.public_key(),
                payload: b"ciphertext a->b"
            }
            .to_vec()
            .unwrap()
        )]
    );
    let out = w.send(SessionId::Conn(7), &a, b"b->a");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, udp(1));
    assert_eq!(
        Frame::parse(&out[0].1).unwrap(),
        Frame::Recv {
            from: b.public_key(),
            payload: b"b->a"
        }
    );
    let c = w.relay.counters();
    assert_eq!(c.frames_forwarded, 2);
    assert_eq!(c.bytes_forwarded, 15 + 4);
    // By where they went: a→b to b's WebSocket, b→a over UDP.
    assert_eq!(c.frames_forwarded_stream, 1);
    assert_eq!(c.bytes_forwarded_stream, 15);
    assert_eq!(c.hellos_accepted, 2);
    let events: Vec<_> = std::iter::from_fn(|| w.relay.poll_event()).collect();
    assert_eq!(events.len(), 2);
}

#[test]
fn non_members_are_refused_and_never_forwarded() {
    let (a, b, m) = (key(1), key(2), key(3));
    let mut w = World::new(RelayConfig::default(), &[&a, &b]);
    w.hello(udp(2), &b, 1);
    assert_eq!(
        w.hello(udp(3), &m, 2),
        vec![(udp(3), refused(RefuseReason::NotMember))]
    );
    assert_eq!(
        w.send(udp(3), &b, b"x"),
        vec![(udp(3), refused(RefuseReason::NotRegistered))]
    );
    let c = w.relay.counters();
    assert_eq!(c.dropped_not_member, 1);
    assert_eq!(c.dropped_not_registered, 1);
    assert_eq!(c.frames_forwarded, 0);
}

#[test]
fn forged_replayed_and_stale_hellos_are_refused() {
    let (a, b) = (key(1), key(2));
    let mut w = World::new(RelayConfig::default(), &[&a, &b]);
    // b's key claimed with a's proof.
    let mut h = HelloSealer::new(&a, &w.relay_key)
        .unwrap()
        .hello(T, [1; 24]);
    h.node = b.public_key();
    let bytes = Frame::ClientHello(h).to_vec().unwrap();
    assert_eq!(
        w.feed(udp(9), &bytes),
        vec![(udp(9), refused(RefuseReason::BadProof))]
    );
    // A replay of a good hello, from elsewhere.
    w.hello(udp(1), &a, 5);
    assert_eq!(
        w.hello(udp(9), &a, 5),
        vec![(udp(9), refused(RefuseReason::Replayed))]
    );
    assert_eq!(w.relay.session_of(&a.public_key()), Some(udp(1)));
    // A stale one.
    let h = HelloSealer::new(&a, &w.relay_key)
        .unwrap()
        .hello(T - MAX_SKEW_MS - 1, [6; 24]);
    let bytes = Frame::ClientHello(h).to_vec().unwrap();
    assert_eq!(
        w.feed(udp(9), &bytes),
        vec![(udp(9), refused(RefuseReason::ClockSkew))]
    );
    assert_eq!(w.relay.counters().dropped_bad_hello, 3);
    assert_eq!(w.relay.registered(), 1);
}

#[test]
fn unknown_destination_gets_peer_gone() {
    let (a, b) = (key(1), key(2));
    let mut w = World::new(RelayConfig::default(), &[&a, &b]);
    w.hello(udp(1), &a, 1);
    assert_eq!(
        w.send(udp(1), &b, b"hi"),
        vec![(udp(1), Frame::PeerGone(b.public_key()).to_vec().unwrap())]
    );
    assert_eq!(w.relay.counters().dropped_no_destination, 1);
}

#[test]
fn malformed_and_relay_only_frames_are_counted() {
    let a = key(1);
    let mut w = World::new(RelayConfig::default(), &[&a]);
    assert!(w.feed(udp(1), &[]).is_empty());
    assert!(w.feed(udp(1), &[1, 0, 0, 0]).is_empty());
    assert!(w.feed(udp(1), &[0xE2, 1]).is_empty());
    let recv = Frame::Recv {
        from: a.public_key(),
        payload: b"x",
    }
    .to_vec()
    .unwrap();
    assert!(w.feed(udp(1), &recv).is_empty());
    assert_eq!(w.relay.counters().dropped_malformed, 4);
}

#[test]
fn rate_limit_drops_and_counts_excess() {
    let (a, b) = (key(1), key(2));
    let config = RelayConfig {
        rate_limit: Some(RateLimit {
            bytes_per_sec: 1000,
            burst_bytes: 2000,
        }),
        ..RelayConfig::default()
    };
    let mut w = World::new(config, &[&a, &b]);
    w.hello(udp(1), &a, 1);
    w.hello(udp(2), &b, 2);
    let payload = [7u8; 500];
    let mut delivered = 0;
    for _ in 0..10 {
        delivered += w.send(udp(1), &b, &payload).len();
    }
    assert_eq!(delivered, 4, "the 2000-byte burst");
    assert_eq!(w.relay.counters().dropped_rate_limited, 6);
    // Half a second refills 500 bytes: one more.
    w.now += Duration::from_millis(500);
    assert_eq!(w.send(udp(1), &b, &payload).len(), 1);
    assert_eq!(w.send(udp(1), &b, &payload).len(), 0);
    // b's own bucket is untouched.
    assert_eq!(w.send(udp(2), &a, &payload).len(), 1);
    // A long pause refills only up to the burst.
    w.now += Duration::from_secs(3600);
    let mut delivered = 0;
    for _ in 0..10 {
        delivered += w.send(udp(1), &b, &payload).len();
    }
    assert_eq!(delivered, 4);
}

#[test]
fn idle_registrations_expire_and_keepalives_keep_them() {
    let (a, b) = (key(1), key(2));
    let mut w = World::new(RelayConfig::default(), &[&a, &b]);
    w.hello(udp(1), &a, 1);
    w.hello(udp(2), &b, 2);
    assert_eq!(
        w.relay.poll_timeout(),
        Some(w.now + Duration::from_secs(60))
    );
    w.now += Duration::from_secs(40);
    assert_eq!(w.feed(udp(1), &[0xE6]), vec![(udp(1), vec![0xE6])]);
    w.now += Duration::from_secs(30);
    w.relay.handle_timeout(w.now);
    assert_eq!(w.relay.session_of(&a.public_key()), Some(udp(1)));
    assert_eq!(w.relay.session_of(&b.public_key()), None);
    assert_eq!(w.relay.counters().registrations_expired, 1);
    assert_eq!(
        w.feed(udp(2), &[0xE6]),
        vec![(udp(2), refused(RefuseReason::NotRegistered))]
    );
}

#[test]
fn leaving_the_membership_drops_the_registration_at_once() {
    let (a, b) = (key(1), key(2));
    let mut w = World::new(RelayConfig::default(), &[&a, &b]);
    w.hello(SessionId::Conn(1), &a, 1);
    w.hello(udp(2), &b, 2);
    while w.relay.poll_event().is_some() {}
    w.relay.set_members([a.public_key()]);
    assert_eq!(
        w.relay.poll_transmit(),
        Some((udp(2), refused(RefuseReason::NotMember)))
    );
    assert_eq!(
        w.relay.poll_event(),
        Some(RelayEvent::Unregistered {
            session: udp(2),
            node: b.public_key(),
            why: Unregistered::NotMember
        })
    );
    assert_eq!(w.relay.registered(), 1);
    assert_eq!(
        w.send(udp(2), &a, b"x"),
        vec![(udp(2), refused(RefuseReason::NotRegistered))]
    );
    // a's sends to b now find no one.
    assert_eq!(
        w.send(SessionId::Conn(1), &b, b"x"),
        vec![(
            SessionId::Conn(1),
            Frame::PeerGone(b.public_key()).to_vec().unwrap()
        )]
    );
    assert_eq!(w.relay.counters().registrations_removed, 1);
}

#[test]
fn the_newest_registration_of_a_key_wins() {
    let (a, b) = (key(1), key(2));
    let mut w = World::new(RelayConfig::default(), &[&a, &b]);
    w.hello(SessionId::Conn(1), &a, 1);
    w.hello(udp(2), &b, 2);
    w.hello(udp(5), &a, 3);
    let events: Vec<_> = std::iter::from_fn(|| w.relay.poll_event()).collect();
    assert!(events.contains(&RelayEvent::Unregistered {
        session: SessionId::Conn(1),
        node: a.public_key(),
        why: Unregistered::Replaced
    }));
    let out = w.send(udp(2), &a, b"roamed");
    assert_eq!(out[0].0, udp(5));
    assert_eq!(
        w.send(SessionId::Conn(1), &b, b"x"),
        vec![(SessionId::Conn(1), refused(RefuseReason::NotRegistered))]
    );
    w.relay.handle_session_closed(udp(5));
    assert_eq!(w.relay.session_of(&a.public_key()), None);
}

#[test]
fn client_sessions_through_the_core() {
    let (a, b) = (key(1), key(2));
    let mut w = World::new(RelayConfig::default(), &[&a, &b]);
    let mut ca = ClientSession::new(&a, w.relay_key).unwrap();
    let mut cb = ClientSession::new(&b, w.relay_key).unwrap();
    assert!(ca.wants_hello_now());
    // Runs each client's transmits through the relay and delivers the
    // relay's transmits back.
    fn pump(
        w: &mut World,
        c: &mut ClientSession,
        me: SessionId,
        other: &mut ClientSession,
        them: SessionId,
    ) {
        while let Some(bytes) = c.poll_transmit() {
            for (to, out) in w.feed(me, &bytes) {
                let target = if to == me {
                    &mut *c
                } else {
                    assert_eq!(to, them);
                    &mut *other
                };
                target.handle_frame(w.now, &out).unwrap();
            }
        }
    }
    ca.handle_timeout(w.now, T, [1; 24]);
    cb.handle_timeout(w.now, T, [2; 24]);
    pump(&mut w, &mut ca, udp(1), &mut cb, udp(2));
    pump(&mut w, &mut cb, udp(2), &mut ca, udp(1));
    assert_eq!(ca.poll_event(), Some(ClientEvent::Registered));
    assert_eq!(cb.poll_event(), Some(ClientEvent::Registered));
    ca.send(b.public_key(), b"\x04\0\0\0opaque").unwrap();
    pump(&mut w, &mut ca, udp(1), &mut cb, udp(2));
    assert_eq!(
        cb.poll_event(),
        Some(ClientEvent::Received {
            from: a.public_key(),
            payload: b"\x04\0\0\0opaque".to_vec()
        })
    );
    // Keepalives while registered, answered by the relay.
    assert_eq!(ca.poll_timeout(), Some(w.now + KEEPALIVE_INTERVAL));
    w.now += KEEPALIVE_INTERVAL;
    ca.handle_timeout(w.now, T, [3; 24]);
    assert_eq!(ca.poll_transmit(), Some(vec![0xE6]));
    // The relay restarts and forgets a: the next send is refused, and a
    // says hello again at once.
    w.relay = RelayCore::new(key(100), RelayConfig::default());
    w.relay.set_members([a.public_key(), b.public_key()]);
    ca.send(b.public_key(), b"x").unwrap();
    pump(&mut w, &mut ca, udp(1), &mut cb, udp(2));
    assert_eq!(
        ca.poll_event(),
        Some(ClientEvent::Refused(RefuseReason::NotRegistered))
    );
    assert_eq!(ca.state(), ClientState::Connecting);
    ca.handle_timeout(w.now, T, [4; 24]);
    pump(&mut w, &mut ca, udp(1), &mut cb, udp(2));
    assert_eq!(ca.poll_event(), Some(ClientEvent::Registered));
}

#[test]
fn a_refused_client_retries_slowly_and_a_silent_relay_is_lost() {
    let (a, m) = (key(1), key(3));
    let mut w = World::new(RelayConfig::default(), &[&a]);
    let mut cm = ClientSession::new(&m, w.relay_key).unwrap();
    cm.handle_timeout(w.now, T, [1; 24]);
    let hello = cm.poll_transmit().unwrap();
    for (_, out) in w.feed(udp(3), &hello) {
        cm.handle_frame(w.now, &out).unwrap();
    }
    assert_eq!(cm.state(), ClientState::Refused(RefuseReason::NotMember));
    assert_eq!(
        cm.poll_timeout(),
        Some(w.now + crate::relay::client::REFUSED_RETRY)
    );

    let mut ca = ClientSession::new(&a, w.relay_key).unwrap();
    ca.handle_timeout(w.now, T, [2; 24]);
    let hello = ca.poll_transmit().unwrap();
    for (_, out) in w.feed(udp(1), &hello) {
        ca.handle_frame(w.now, &out).unwrap();
    }
    assert!(ca.is_registered());
    // Keepalives go unanswered for the silence timeout.
    let start = w.now;
    while w.now < start + crate::relay::client::SILENCE_TIMEOUT {
        w.now += Duration::from_secs(5);
        ca.handle_timeout(w.now, T, [9; 24]);
    }
    assert!(std::iter::from_fn(|| ca.poll_event()).any(|e| e == ClientEvent::Lost));
    assert_eq!(ca.state(), ClientState::Connecting);
    // A hello is queued right away.
    let last = std::iter::from_fn(|| ca.poll_transmit()).last().unwrap();
    assert_eq!(last[0], crate::relay::wire::CLIENT_HELLO);
}

proptest::proptest! {
    #[test]
    fn random_frames_never_panic_the_core(frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120), 0..20), first in 0xE0u8..0xE8) {
        let a = key(1);
        let mut w = World::new(RelayConfig { rate_limit: Some(RateLimit { bytes_per_sec: 10, burst_bytes: 100 }), ..RelayConfig::default() }, &[&a]);
        w.hello(udp(1), &a, 1);
        for mut f in frames {
            if let Some(b) = f.first_mut() { *b = first; }
            w.feed(udp(1), &f);
            w.feed(udp(2), &f);
        }
    }
}
