//! Links and time: loss and latency land where they are configured, jitter
//! stays in its bounds, the clock only moves when the network is advanced,
//! one seed replays one run, and bad requests get errors, not panics.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{A, B, WAN, ep, probe, pump, world};
use wgmesh_sim::{DropReason, Link, NatKind, Sim, SimConfig, SimError, TraceEntry, TraceKind};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Two public hosts, `a` with `link`, `b` ideal, both bound to 7000.
fn pair(seed: u64, link: Link) -> (Sim, wgmesh_sim::HostId, wgmesh_sim::HostId) {
    let mut sim = Sim::new(seed);
    let a = sim.add_public_host("a", A).expect("host a");
    let b = sim.add_public_host("b", B).expect("host b");
    sim.set_host_link(a, link).expect("a's link");
    sim.bind(a, 7000).expect("7000 free");
    sim.bind(b, 7000).expect("7000 free");
    (sim, a, b)
}

#[test]
fn five_percent_loss_over_ten_thousand_datagrams() {
    let (mut sim, a, b) = pair(42, Link::IDEAL.loss(0.05));
    for i in 0..10_000u32 {
        sim.send(a, 7000, ep(B, 7000), i.to_be_bytes()).unwrap();
    }
    sim.run_until_idle();
    let c = sim.counters().clone();
    assert_eq!(c.sent, 10_000);
    assert_eq!(c.delivered + c.dropped_loss, 10_000);
    assert_eq!(c.dropped(), c.dropped_loss);
    // Binomial(10 000, 0.05): mean 500, σ ≈ 22; ±150 is ~7σ.
    assert!((350..=650).contains(&c.dropped_loss), "{c:?}");
    assert_eq!(
        std::iter::from_fn(|| sim.poll_received(b)).count() as u64,
        c.delivered
    );
}

#[test]
fn a_hundred_ms_rtt_is_a_hundred_ms_of_virtual_time() {
    // a's link is 50 ms each way, b's ideal: 100 ms there and back.
    let (mut sim, a, b) = pair(1, Link::with_latency(ms(50)));
    sim.advance_by(ms(1234));
    let sent = sim.now();
    sim.send(a, 7000, ep(B, 7000), "ping").unwrap();
    assert_eq!(sim.next_event_time(), Some(sent + ms(50)));
    let arrived = sim.step().unwrap();
    let ping = sim.poll_received(b).unwrap();
    assert_eq!((ping.at, arrived), (sent + ms(50), sent + ms(50)));
    sim.send(b, 7000, ping.from, "pong").unwrap();
    pump(&mut sim, &[]);
    let pong = sim.poll_received(a).unwrap();
    assert_eq!(pong.at - sent, ms(100));
    assert_eq!(sim.now() - sent, ms(100));
    assert_eq!(sim.next_event_time(), None);
}

#[test]
fn jitter_stays_within_its_bound_and_may_reorder() {
    let (mut sim, a, b) = pair(9, Link::with_latency(ms(10)).jitter(ms(5)));
    let start = sim.now();
    for i in 0..1000u32 {
        sim.send(a, 7000, ep(B, 7000), i.to_be_bytes()).unwrap();
    }
    pump(&mut sim, &[]);
    let got: Vec<_> = std::iter::from_fn(|| sim.poll_received(b)).collect();
    assert_eq!(got.len(), 1000);
    for d in &got {
        let delay = d.at - start;
        assert!(delay >= ms(10) && delay <= ms(15), "{delay:?}");
    }
    let order: Vec<u32> = got
        .iter()
        .map(|d| u32::from_be_bytes(d.bytes[..4].try_into().unwrap()))
        .collect();
    assert!(order.windows(2).any(|w| w[0] > w[1]), "jitter reorders");
}

#[test]
fn the_clock_moves_only_when_advanced() {
    let (mut sim, a, b) = pair(1, Link::with_latency(ms(30)));
    let t0 = sim.now();
    assert_eq!(sim.elapsed(), Duration::ZERO);
    assert_eq!(sim.next_event_time(), None);
    assert_eq!(sim.step(), None);
    sim.send(a, 7000, ep(B, 7000), "x").unwrap();
    // Not yet due: nothing delivered, the clock stands where it was asked.
    sim.advance_to(t0 + ms(29));
    assert!(sim.poll_received(b).is_none());
    assert_eq!(sim.now(), t0 + ms(29));
    // The past is a no-op.
    sim.advance_to(t0);
    assert_eq!(sim.now(), t0 + ms(29));
    sim.advance_to(t0 + ms(30));
    assert!(sim.poll_received(b).is_some());
    assert_eq!(sim.clock().offset_of(sim.now()), ms(30));
}

/// A busy, lossy, jittery run through a symmetric NAT.
fn busy_run(
    seed: u64,
) -> (
    Vec<TraceEntry>,
    wgmesh_sim::Counters,
    Vec<Option<SocketAddr>>,
) {
    let mut sim = Sim::with_config(SimConfig {
        trace_capacity: 100_000,
        default_link: Link::with_latency(ms(5)).jitter(ms(20)).loss(0.1),
        ..SimConfig::seed(seed)
    });
    let a = sim.add_public_host("a", A).expect("host a");
    let r = sim
        .add_router(
            "r",
            WAN,
            "10.1.0.0/24".parse().expect("prefix"),
            NatKind::Symmetric,
        )
        .expect("router");
    let x = sim.add_lan_host("x", r).expect("host x");
    for p in 7000..7010 {
        sim.bind(a, p).expect("free");
    }
    let dests: Vec<SocketAddr> = (7000..7010).map(|p| ep(A, p)).collect();
    let mut seen = Vec::new();
    for round in 0..20u16 {
        seen.extend(probe(&mut sim, x, 5000 + round, &dests, &[a]));
        sim.advance_by(ms(100));
    }
    (sim.trace().cloned().collect(), sim.counters().clone(), seen)
}

#[test]
fn one_seed_replays_one_run() {
    let (trace, counters, seen) = busy_run(2024);
    assert!(trace.len() > 500, "{}", trace.len());
    assert!(counters.dropped_loss > 0 && counters.delivered > 0);
    assert!(
        trace
            .iter()
            .any(|e| e.kind == TraceKind::Dropped(DropReason::Loss))
    );
    assert_eq!(busy_run(2024), (trace.clone(), counters, seen));
    let (other, _, _) = busy_run(2025);
    assert_ne!(other, trace, "another seed, another run");
}

#[test]
fn the_trace_keeps_the_most_recent_entries() {
    let mut sim = Sim::with_config(SimConfig {
        trace_capacity: 3,
        ..SimConfig::seed(1)
    });
    let a = sim.add_public_host("a", A).unwrap();
    let b = sim.add_public_host("b", B).unwrap();
    sim.bind(a, 1).unwrap();
    sim.bind(b, 1).unwrap();
    for _ in 0..5 {
        sim.send(a, 1, ep(B, 1), "x").unwrap();
    }
    sim.run_until_idle();
    let kept: Vec<_> = sim.trace().map(|e| (e.packet, e.kind)).collect();
    assert_eq!(
        kept,
        [
            (2, TraceKind::Delivered),
            (3, TraceKind::Delivered),
            (4, TraceKind::Delivered)
        ]
    );
}

#[test]
fn undeliverable_datagrams_are_counted() {
    let mut w = world(1, NatKind::FullCone);
    let (a, x1) = (w.a, w.x1);
    w.sim.bind(a, 7000).unwrap();
    // To a public address nobody owns; to a closed port; to the router's
    // outside address where nothing is mapped; to a LAN address nobody has.
    w.sim
        .send(a, 7000, ep([192, 0, 2, 99].into(), 1), "x")
        .unwrap();
    w.sim.send(a, 7000, ep(B, 9), "x").unwrap();
    w.sim.send(a, 7000, ep(WAN, 9), "x").unwrap();
    w.sim.bind(x1, 5000).unwrap();
    w.sim
        .send(x1, 5000, ep([10, 1, 0, 200].into(), 1), "x")
        .unwrap();
    w.sim.run_until_idle();
    let c = w.sim.counters();
    assert_eq!(
        (
            c.dropped_no_route,
            c.dropped_no_listener,
            c.dropped_no_mapping
        ),
        (2, 1, 1)
    );
    assert_eq!(c.delivered, 0);
    let named: Vec<_> = c.named().into_iter().filter(|(_, v)| *v > 0).collect();
    assert_eq!(
        named,
        [
            ("sent", 4),
            ("dropped", 4),
            ("dropped_no_mapping", 1),
            ("dropped_no_listener", 1),
            ("dropped_no_route", 2)
        ]
    );
}

#[test]
fn bad_requests_are_errors() {
    let mut sim = Sim::new(1);
    let a = sim.add_public_host("a", A).unwrap();
    assert_eq!(
        sim.add_public_host("dup", A),
        Err(SimError::AddressInUse(A))
    );
    assert_eq!(
        sim.send(a, 7000, ep(B, 1), "x"),
        Err(SimError::NotBound {
            host: a,
            port: 7000
        })
    );
    assert_eq!(sim.bind(a, 7000), Ok(7000));
    assert_eq!(
        sim.bind(a, 7000),
        Err(SimError::PortInUse {
            host: a,
            port: 7000
        })
    );
    assert_eq!(sim.bind(a, 0), Ok(49152));
    let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
    assert_eq!(
        sim.send(a, 7000, v6, "x"),
        Err(SimError::Ipv6Unsupported(v6))
    );
    let tiny = sim
        .add_router("r", WAN, "10.9.0.0/30".parse().unwrap(), NatKind::FullCone)
        .unwrap();
    sim.add_lan_host("only", tiny).unwrap();
    assert!(matches!(
        sim.add_lan_host("one too many", tiny),
        Err(SimError::LanFull(_))
    ));
    assert!(matches!(
        sim.add_router("r2", B, "10.8.0.0/31".parse().unwrap(), NatKind::FullCone),
        Err(SimError::LanTooSmall(_))
    ));
    let ghost = wgmesh_sim::HostId(99);
    assert_eq!(sim.bind(ghost, 1), Err(SimError::UnknownHost(ghost)));
    assert!(sim.poll_received(ghost).is_none());
    assert_eq!(sim.counters().sent, 0);
}
