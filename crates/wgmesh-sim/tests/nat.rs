//! Every NAT kind against RFC 4787, with the scenarios of
//! `crates/wgmesh-lab/tests/nat.rs` (which runs them on nftables routers):
//!
//! * mapping (§4.1): one inside socket asks reflectors on A:7000, A:7001 and
//!   B:7000 what source they see; then x2 from the same inside port.
//! * filtering (§5): after x1 has sent to A:8000, who else gets in?
//! * an unsolicited datagram before the mapping exists leaves no state.
//! * mapping refresh and expiry (§4.3).
//! * hairpinning (§6) on and off, for every kind that passes UDP.
//! * UDP blocked: nothing in or out, hairpinning or not.
//! * double NAT: a LAN behind a LAN.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{A, B, WAN, World, drain, ep, probe, pump, world};
use wgmesh_sim::{
    DropReason, Hairpin, NatConfig, NatKind, RFC4787_MIN_MAPPING_TIMEOUT, Sim, TraceKind,
};

fn wan_ip(e: SocketAddr) -> bool {
    e.ip() == WAN
}

fn all_distinct(seen: &[SocketAddr]) -> bool {
    seen.iter()
        .enumerate()
        .all(|(i, s)| seen[i + 1..].iter().all(|t| t.port() != s.port()))
}

fn reflectors(w: &mut World) -> Vec<wgmesh_sim::HostId> {
    for h in [w.a, w.b] {
        w.sim.bind(h, 7000).expect("7000 free");
        w.sim.bind(h, 7001).expect("7001 free");
    }
    vec![w.a, w.b]
}

fn mappings(
    w: &mut World,
    kind: NatKind,
    host: wgmesh_sim::HostId,
    dests: &[SocketAddr],
) -> Vec<SocketAddr> {
    let refl = [w.a, w.b];
    let seen: Vec<SocketAddr> = probe(&mut w.sim, host, 5000, dests, &refl)
        .into_iter()
        .map(|s| s.unwrap_or_else(|| panic!("{kind:?}: a reflector did not answer")))
        .collect();
    assert!(seen.iter().all(|s| wan_ip(*s)), "{kind:?}: {seen:?}");
    seen
}

/// §4.1, as the lab's `check_mapping`.
#[test]
fn mapping_follows_the_kind() {
    for kind in [
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
    ] {
        // The lab's REQ-5 timer, so that the "outlives" check below holds.
        let mut w = world(
            1,
            NatConfig::kind(kind).mapping_timeout(RFC4787_MIN_MAPPING_TIMEOUT),
        );
        reflectors(&mut w);
        let x1 = w.x1;
        let x2 = w.x2;
        let m1 = mappings(&mut w, kind, x1, &[ep(A, 7000), ep(A, 7001), ep(B, 7000)]);
        let m2 = mappings(&mut w, kind, x2, &[ep(B, 7001), ep(A, 7000), ep(B, 7000)]);
        if kind.endpoint_independent_mapping() {
            assert!(m1.iter().all(|s| s.port() == 5000), "{kind:?}: {m1:?}");
            assert!(
                m2.iter().all(|s| *s == m2[0]) && m2[0].port() != 5000,
                "{kind:?}: x2:5000 needs its own outside port, the same for all: {m2:?}"
            );
            // REQ-5: the mapping outlives a minute of silence.
            w.sim.advance_by(Duration::from_secs(60));
            let again = mappings(&mut w, kind, x2, &[ep(A, 7001)]);
            assert_eq!(again, [m2[0]], "{kind:?}: x2 keeps its mapping");
        } else {
            assert!(
                all_distinct(&m1) && all_distinct(&m2),
                "{kind:?}: a port per destination: {m1:?} {m2:?}"
            );
        }
        assert_eq!(w.sim.counters().dropped(), 0, "{kind:?}");
    }
}

/// §5, as the lab's `check_filtering`.
#[test]
fn filtering_follows_the_kind() {
    for (kind, same_addr, other_addr) in [
        (NatKind::FullCone, true, true),
        (NatKind::AddressRestricted, true, false),
        (NatKind::PortRestricted, false, false),
        (NatKind::Symmetric, false, false),
    ] {
        let mut w = world(2, kind);
        w.sim.bind(w.a, 8000).unwrap();
        w.sim.bind(w.a, 8001).unwrap();
        w.sim.bind(w.b, 8000).unwrap();
        let (a, b, x1) = (w.a, w.b, w.x1);
        let mapped = probe(&mut w.sim, x1, 5001, &[ep(A, 8000)], &[a])[0]
            .unwrap_or_else(|| panic!("{kind:?}: A:8000 did not answer"));
        assert!(wan_ip(mapped), "{kind:?}: mapped to {mapped}");
        w.sim.send(a, 8001, mapped, "a-other-port").unwrap();
        w.sim.send(b, 8000, mapped, "b").unwrap();
        w.sim.send(a, 8000, mapped, "marker").unwrap();
        pump(&mut w.sim, &[]);
        let got = drain(&mut w.sim, x1);
        let from = |text: &str| got.iter().find(|(_, t)| t == text).map(|(f, _)| *f);
        // The NAT rewrites only the destination of inbound datagrams.
        assert_eq!(from("marker"), Some(ep(A, 8000)), "{kind:?}");
        assert_eq!(
            from("a-other-port"),
            same_addr.then(|| ep(A, 8001)),
            "{kind:?}: A:8001 → mapped port"
        );
        assert_eq!(
            from("b"),
            other_addr.then(|| ep(B, 8000)),
            "{kind:?}: B:8000"
        );
        let filtered = u64::from(!same_addr) + u64::from(!other_addr);
        assert_eq!(w.sim.counters().dropped_filtered, filtered, "{kind:?}");
    }
}

/// Hole punching: B's datagram reaches the router before x1 has sent to B.
/// It is dropped and leaves nothing behind that would push x1's mapping
/// off port 5002.
#[test]
fn early_unsolicited_datagram_leaves_no_state() {
    let mut w = world(3, NatKind::PortRestricted);
    w.sim.bind(w.b, 9000).unwrap();
    w.sim.send(w.b, 9000, ep(WAN, 5002), "early").unwrap();
    pump(&mut w.sim, &[]);
    assert_eq!(w.sim.counters().dropped_no_mapping, 1);
    let (b, x1) = (w.b, w.x1);
    let seen = probe(&mut w.sim, x1, 5002, &[ep(B, 9000)], &[b]);
    assert_eq!(seen, [Some(ep(WAN, 5002))]);
}

/// §4.3: a mapping lives its timeout after the last outbound datagram;
/// outbound keepalives keep it; inbound traffic does not.
#[test]
fn mappings_expire_after_the_timeout_unless_refreshed() {
    let timeout = Duration::from_secs(30);
    let mut w = world(
        4,
        NatConfig::kind(NatKind::FullCone).mapping_timeout(timeout),
    );
    w.sim.bind(w.a, 8000).unwrap();
    w.sim.bind(w.b, 8000).unwrap();
    let (a, b, x1, r) = (w.a, w.b, w.x1, w.r);
    let mapped = probe(&mut w.sim, x1, 5000, &[ep(A, 8000)], &[a])[0].unwrap();
    // Keepalives every 20 s for 100 s, B knocking just before each.
    for _ in 0..5 {
        w.sim.advance_by(Duration::from_secs(20));
        w.sim.send(b, 8000, mapped, "knock").unwrap();
        pump(&mut w.sim, &[]);
        w.sim.send(x1, 5000, ep(A, 8000), "keepalive").unwrap();
        pump(&mut w.sim, &[]);
    }
    assert_eq!(drain(&mut w.sim, x1).len(), 5, "every knock got in");
    assert_eq!(w.sim.counters().nat_mappings_created, 1);
    // Silence, and B knocking the whole time: inbound refreshes nothing.
    for _ in 0..3 {
        w.sim.advance_by(Duration::from_secs(10));
        w.sim.send(b, 8000, mapped, "knock").unwrap();
        pump(&mut w.sim, &[]);
    }
    // 10 s and 20 s after the last keepalive got in, 30 s did not.
    assert_eq!(drain(&mut w.sim, x1).len(), 2);
    assert_eq!(w.sim.counters().dropped_no_mapping, 1);
    assert_eq!(w.sim.counters().nat_mappings_expired, 1);
    assert!(w.sim.nat_mappings(r).unwrap().is_empty());
    // A new datagram makes a new mapping (the port is free again).
    let again = probe(&mut w.sim, x1, 5000, &[ep(A, 8000)], &[a])[0].unwrap();
    assert_eq!(again, mapped);
    assert_eq!(w.sim.counters().nat_mappings_created, 2);
}

/// A router that forgets its mappings (the lab's `conntrack -F` and map
/// flush): the old outside endpoint stops working until the inside host
/// sends again.
#[test]
fn a_flushed_nat_forgets_its_mappings() {
    let mut w = world(8, NatKind::PortRestricted);
    w.sim.bind(w.a, 8000).expect("free");
    let (a, x1, r) = (w.a, w.x1, w.r);
    let mapped = probe(&mut w.sim, x1, 5000, &[ep(A, 8000)], &[a])[0].expect("answer");
    w.sim.flush_nat(r).expect("router r");
    assert!(w.sim.nat_mappings(r).expect("router r").is_empty());
    w.sim.send(a, 8000, mapped, "after flush").expect("bound");
    pump(&mut w.sim, &[]);
    assert!(drain(&mut w.sim, x1).is_empty());
    assert_eq!(w.sim.counters().dropped_no_mapping, 1);
    let again = probe(&mut w.sim, x1, 5000, &[ep(A, 8000)], &[a])[0].expect("answer");
    assert_eq!(again, mapped, "port preservation gives the same port back");
}

/// §6, as the lab's `hairpin`: x2 has a mapping (towards A:7000), x1 sends
/// to it.
fn hairpin(kind: NatKind, hairpin: Hairpin) {
    let mut w = world(5, NatConfig::kind(kind).hairpin(hairpin));
    w.sim.bind(w.a, 7000).expect("7000 free");
    w.sim.bind(w.a, 7001).expect("7001 free");
    let (a, x1, x2) = (w.a, w.x1, w.x2);
    let m2 = probe(&mut w.sim, x2, 5000, &[ep(A, 7000)], &[a])[0].expect("A:7000 answers x2");
    assert!(wan_ip(m2), "{kind:?}: x2 mapped to {m2}");
    match hairpin {
        Hairpin::On => {
            let seen = probe(&mut w.sim, x1, 6000, &[ep(A, 7001), m2], &[a, x2]);
            let m1 = seen[0].expect("A:7001 answers x1");
            let via = seen[1].unwrap_or_else(|| panic!("{kind:?}: x1 → {m2} got no answer"));
            // REQ-9a: the outside source address and port, not 10.1.0.x.
            assert!(wan_ip(via), "{kind:?}: x2 saw {via}");
            if kind.endpoint_independent_mapping() {
                assert_eq!(via, m1, "{kind:?}: x1's one mapping, also for hairpinning");
            } else {
                assert_ne!(via, m1, "{kind:?}: a new mapping towards m2");
            }
        }
        Hairpin::Off => {
            w.sim.bind(x1, 6000).expect("6000 free");
            w.sim.send(x1, 6000, m2, "hairpin").expect("bound");
            w.sim.send(a, 7000, m2, "marker").expect("bound");
            pump(&mut w.sim, &[]);
            let got = drain(&mut w.sim, x2);
            assert_eq!(got, [(ep(A, 7000), "marker".to_owned())], "{kind:?}");
            assert_eq!(w.sim.counters().dropped_hairpin_off, 1, "{kind:?}");
        }
    }
}

#[test]
fn hairpin_on_and_off_for_every_kind_that_passes_udp() {
    for kind in NatKind::ALL.into_iter().filter(|k| k.passes_udp()) {
        hairpin(kind, Hairpin::On);
        hairpin(kind, Hairpin::Off);
    }
}

/// No UDP out, none in, no hairpinning either (asked for or not).
#[test]
fn udp_blocked_drops_everything() {
    let mut w = world(6, NatConfig::kind(NatKind::UdpBlocked).hairpin(Hairpin::On));
    w.sim.bind(w.a, 7000).unwrap();
    let (a, x1, x2) = (w.a, w.x1, w.x2);
    let seen = probe(&mut w.sim, x1, 5000, &[ep(A, 7000)], &[a]);
    assert_eq!(seen, [None], "no UDP out");
    w.sim.bind(x2, 5000).unwrap();
    w.sim.send(a, 7000, ep(WAN, 5000), "in").unwrap();
    w.sim.send(x1, 5000, ep(WAN, 5000), "hairpin").unwrap();
    pump(&mut w.sim, &[]);
    assert!(drain(&mut w.sim, x2).is_empty());
    assert!(drain(&mut w.sim, a).is_empty());
    let c = w.sim.counters();
    assert_eq!((c.sent, c.delivered), (3, 0));
    assert_eq!(c.dropped_udp_blocked, 3);
    assert_eq!(c.nat_mappings_created, 0);
}

/// A host behind two NATs: a port-restricted home router behind a
/// full-cone carrier NAT. The reflector sees the outer router's address;
/// the inner router's filtering still keeps strangers out.
#[test]
fn double_nat() {
    let mut sim = Sim::with_config(wgmesh_sim::SimConfig {
        trace_capacity: 1000,
        ..wgmesh_sim::SimConfig::seed(7)
    });
    let a = sim.add_public_host("a", A).unwrap();
    let b = sim.add_public_host("b", B).unwrap();
    let cgn = sim
        .add_router(
            "cgn",
            WAN,
            "100.64.0.0/24".parse().unwrap(),
            NatKind::FullCone,
        )
        .unwrap();
    let home = sim
        .add_router_behind(
            "home",
            cgn,
            "10.1.0.0/24".parse().unwrap(),
            NatKind::PortRestricted,
        )
        .unwrap();
    let x = sim.add_lan_host("x", home).unwrap();
    assert_eq!(
        sim.router_wan(home).unwrap(),
        "100.64.0.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
    sim.bind(a, 7000).unwrap();
    sim.bind(b, 7000).unwrap();
    let seen = probe(&mut sim, x, 5000, &[ep(A, 7000)], &[a]);
    assert_eq!(seen, [Some(ep(WAN, 5000))]);
    // Two translations on the way out, two on the way back.
    let forwarded = sim
        .trace()
        .filter(|e| e.kind == TraceKind::Forwarded)
        .count();
    assert_eq!(forwarded, 4);
    sim.send(b, 7000, ep(WAN, 5000), "stranger").unwrap();
    pump(&mut sim, &[]);
    assert!(drain(&mut sim, x).is_empty());
    let last = sim.trace().last().unwrap();
    assert_eq!(last.kind, TraceKind::Dropped(DropReason::Filtered));
    assert_eq!(last.node, wgmesh_sim::NodeRef::Router(home));
}
