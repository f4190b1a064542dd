//! Simultaneous open ("hole punching") between two hosts behind NATs, at
//! the packet level: the matrix issue 6's disco must reproduce, shown here
//! with plain datagrams.
//!
//! Each host learns its mapped endpoint from a STUN-like reflector, then
//! both send to the other's mapped endpoint at the same moment, every
//! 100 ms, and answer whatever reaches them at the source it came from (as
//! a disco pong does). The path is direct when each side has heard the
//! other. RFC 4787 predicts where that works: everywhere except when a side
//! blocks UDP, or a symmetric NAT (a new port per destination, §4.1) faces
//! a NAT whose filtering wants that exact port (§5): another symmetric one
//! or a port-restricted one.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::ep;
use wgmesh_sim::{HostId, Link, NatKind, Sim};

const STUN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const STUN_PORT: u16 = 3478;
const WAN_X: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const WAN_Y: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PORT: u16 = 4000;
const ROUND: Duration = Duration::from_millis(100);
const ROUNDS: u32 = 20;

/// Where direct UDP between the two kinds is possible.
fn direct_possible(p: NatKind, q: NatKind) -> bool {
    let sym_blocks = |a: NatKind, b: NatKind| {
        a == NatKind::Symmetric && matches!(b, NatKind::Symmetric | NatKind::PortRestricted)
    };
    p.passes_udp() && q.passes_udp() && !sym_blocks(p, q) && !sym_blocks(q, p)
}

#[derive(Debug)]
struct Outcome {
    /// When each side first heard the other, after punching began.
    x_heard_y: Option<Duration>,
    y_heard_x: Option<Duration>,
}

impl Outcome {
    fn direct(&self) -> bool {
        self.x_heard_y.is_some() && self.y_heard_x.is_some()
    }
}

struct Case {
    kx: NatKind,
    ky: NatKind,
    /// Per host link (each datagram between x and y crosses two).
    loss: f64,
    rtt: Duration,
    seed: u64,
}

/// Asks the reflector (retrying, for lossy links) for `h`'s mapped endpoint.
fn stun(sim: &mut Sim, h: HostId, s: HostId) -> Option<SocketAddr> {
    for _ in 0..10 {
        sim.send(h, PORT, ep(STUN, STUN_PORT), "stun")
            .expect("invariant: PORT is bound");
        common::pump(sim, &[s]);
        if let Some(d) = sim.poll_received(h) {
            let seen = String::from_utf8(d.bytes).expect("the reflector sends text");
            return Some(seen.parse().expect("the reflector sends an endpoint"));
        }
        sim.advance_by(Duration::from_secs(1));
    }
    None
}

fn run(case: &Case) -> Outcome {
    let mut sim = Sim::new(case.seed);
    let s = sim.add_public_host("stun", STUN).expect("stun host");
    let rx = sim
        .add_router("rx", WAN_X, "10.1.0.0/24".parse().expect("prefix"), case.kx)
        .expect("router rx");
    let ry = sim
        .add_router("ry", WAN_Y, "10.2.0.0/24".parse().expect("prefix"), case.ky)
        .expect("router ry");
    let x = sim.add_lan_host("x", rx).expect("host x");
    let y = sim.add_lan_host("y", ry).expect("host y");
    sim.bind(s, STUN_PORT).expect("stun port");
    sim.bind(x, PORT).expect("x port");
    sim.bind(y, PORT).expect("y port");
    let mx = stun(&mut sim, x, s);
    let my = stun(&mut sim, y, s);
    // Now the links the punch runs over: x ↔ y one way is rtt/2.
    let link = Link::with_latency(case.rtt / 4).loss(case.loss);
    sim.set_host_link(x, link).expect("x link");
    sim.set_host_link(y, link).expect("y link");

    let start = sim.elapsed();
    let mut out = Outcome {
        x_heard_y: None,
        y_heard_x: None,
    };
    let mut next_round = sim.now();
    let mut rounds = 0;
    let end = sim.now() + ROUND * (ROUNDS + 10);
    while sim.now() < end {
        // The next thing to happen: a datagram, the next round, the end.
        let wake = if rounds < ROUNDS { next_round } else { end };
        let t = sim.next_event_time().map_or(wake, |e| e.min(wake));
        sim.advance_to(t.min(end));
        if rounds < ROUNDS && sim.now() >= next_round {
            // Both at the same instant: the simultaneous open.
            if let Some(my) = my {
                sim.send(x, PORT, my, "punch").expect("x bound");
            }
            if let Some(mx) = mx {
                sim.send(y, PORT, mx, "punch").expect("y bound");
            }
            rounds += 1;
            next_round += ROUND;
        }
        for (me, heard) in [(x, &mut out.x_heard_y), (y, &mut out.y_heard_x)] {
            while let Some(d) = sim.poll_received(me) {
                heard.get_or_insert(sim.elapsed() - start);
                if d.bytes == b"punch" {
                    sim.send(me, PORT, d.from, "pong").expect("bound");
                }
            }
        }
    }
    out
}

#[test]
fn the_hole_punching_matrix_matches_rfc_4787() {
    let mut seed = 0;
    let mut table = String::new();
    for kx in NatKind::ALL {
        for ky in NatKind::ALL {
            for loss in [0.0, 0.05] {
                for rtt in [Duration::from_millis(1), Duration::from_millis(100)] {
                    seed += 1;
                    let case = Case {
                        kx,
                        ky,
                        loss,
                        rtt,
                        seed,
                    };
                    let out = run(&case);
                    let want = direct_possible(kx, ky);
                    let label = format!("{} × {} loss {loss} rtt {rtt:?}", kx.name(), ky.name());
                    table += &format!("{label}: {out:?}\n");
                    assert_eq!(out.direct(), want, "{label}: {out:?}");
                    if want {
                        // The first datagram either way within 1 s of
                        // virtual time (issue 6's bound for a direct path).
                        let slowest = out.x_heard_y.max(out.y_heard_x).expect("direct");
                        assert!(slowest < Duration::from_secs(1), "{label}: {out:?}");
                    } else {
                        // Not even one datagram gets through either way.
                        assert!(
                            out.x_heard_y.is_none() && out.y_heard_x.is_none(),
                            "{label}: {out:?}"
                        );
                    }
                }
            }
        }
    }
    println!("{table}");
}

/// The race itself: y's router is far away, so x's first punch reaches it
/// before y has sent anything and is filtered (§5); y's punch opens x's
/// side, x's second punch gets through. Port-restricted both sides.
#[test]
fn simultaneous_open_wins_the_race_behind_port_restricted_nats() {
    let mut sim = Sim::new(11);
    let s = sim.add_public_host("stun", STUN).expect("stun");
    let rx = sim
        .add_router(
            "rx",
            WAN_X,
            "10.1.0.0/24".parse().expect("prefix"),
            NatKind::PortRestricted,
        )
        .expect("rx");
    let ry = sim
        .add_router(
            "ry",
            WAN_Y,
            "10.2.0.0/24".parse().expect("prefix"),
            NatKind::PortRestricted,
        )
        .expect("ry");
    let x = sim.add_lan_host("x", rx).expect("x");
    let y = sim.add_lan_host("y", ry).expect("y");
    sim.bind(s, STUN_PORT).expect("port");
    sim.bind(x, PORT).expect("port");
    sim.bind(y, PORT).expect("port");
    let mx = stun(&mut sim, x, s).expect("x mapped");
    let my = stun(&mut sim, y, s).expect("y mapped");
    // y sits 40 ms behind its router; x's punch gets to ry first.
    sim.set_host_link(y, Link::with_latency(Duration::from_millis(40)))
        .expect("link");
    let filtered_before = sim.counters().dropped_filtered;
    sim.send(x, PORT, my, "punch 1").expect("bound");
    sim.send(y, PORT, mx, "punch 1").expect("bound");
    common::pump(&mut sim, &[]);
    assert_eq!(
        sim.counters().dropped_filtered,
        filtered_before + 1,
        "x's first punch"
    );
    let at_x = common::drain(&mut sim, x);
    assert_eq!(at_x, [(my, "punch 1".to_owned())], "y's punch got through");
    sim.send(x, PORT, my, "punch 2").expect("bound");
    common::pump(&mut sim, &[]);
    assert_eq!(common::drain(&mut sim, y), [(mx, "punch 2".to_owned())]);
}

/// Two symmetric NATs: each side's punch leaves from a new port, which the
/// other's mapping (made towards the reflector) filters. Nothing crosses.
#[test]
fn simultaneous_open_fails_behind_two_symmetric_nats() {
    let out = run(&Case {
        kx: NatKind::Symmetric,
        ky: NatKind::Symmetric,
        loss: 0.0,
        rtt: Duration::from_millis(20),
        seed: 3,
    });
    assert!(
        out.x_heard_y.is_none() && out.y_heard_x.is_none(),
        "{out:?}"
    );
}
