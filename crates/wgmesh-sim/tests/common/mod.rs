//! Shared pieces of the integration tests: the lab's world (public hosts A
//! and B, router r with LAN hosts x1 and x2, the same addresses as
//! `crates/wgmesh-lab/tests/nat.rs`), and a STUN-like reflector that answers
//! every datagram with the source endpoint it saw, as text.

#![allow(dead_code)] // each test binary uses its own subset

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use wgmesh_sim::{HostId, NatConfig, RouterId, Sim};

pub const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
pub const WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

pub fn ep(addr: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddrV4::new(addr, port).into()
}

#[derive(Debug)]
pub struct World {
    pub sim: Sim,
    pub a: HostId,
    pub b: HostId,
    pub r: RouterId,
    pub x1: HostId,
    pub x2: HostId,
}

/// Public hosts `a` and `b`, router `r` (`nat`) with LAN hosts `x1`, `x2`.
pub fn world(seed: u64, nat: impl Into<NatConfig>) -> World {
    let mut sim = Sim::new(seed);
    let a = sim.add_public_host("a", A).expect("host a");
    let b = sim.add_public_host("b", B).expect("host b");
    let r = sim
        .add_router("r", WAN, "10.1.0.0/24".parse().expect("a prefix"), nat)
        .expect("router r");
    let x1 = sim.add_lan_host("x1", r).expect("host x1");
    let x2 = sim.add_lan_host("x2", r).expect("host x2");
    World {
        sim,
        a,
        b,
        r,
        x1,
        x2,
    }
}

/// Runs the network until nothing is in flight; every datagram that reaches
/// a host in `reflectors` is answered, from the port it came to, with the
/// source it showed (`"203.0.113.10:7000"`). Datagrams that reach other
/// hosts stay in their queues.
pub fn pump(sim: &mut Sim, reflectors: &[HostId]) {
    while let Some(t) = sim.next_event_time() {
        sim.advance_to(t);
        for &h in reflectors {
            while let Some(d) = sim.poll_received(h) {
                sim.send(h, d.local.port(), d.from, d.from.to_string())
                    .expect("a reflector's port is bound");
            }
        }
    }
}

/// Every datagram waiting at `host`: (source, text).
pub fn drain(sim: &mut Sim, host: HostId) -> Vec<(SocketAddr, String)> {
    std::iter::from_fn(|| sim.poll_received(host))
        .map(|d| {
            (
                d.from,
                String::from_utf8(d.bytes).expect("test datagrams are text"),
            )
        })
        .collect()
}

/// `host` sends "probe" from `port` (bound here if it is not yet) to each
/// of `to`; what each reflector answered it saw, None where nothing came
/// back (the lab's `wgl-udp probe`).
pub fn probe(
    sim: &mut Sim,
    host: HostId,
    port: u16,
    to: &[SocketAddr],
    reflectors: &[HostId],
) -> Vec<Option<SocketAddr>> {
    let _ = sim.bind(host, port);
    for &dst in to {
        sim.send(host, port, dst, "probe")
            .expect("the probe port is bound");
    }
    pump(sim, reflectors);
    let got = drain(sim, host);
    to.iter()
        .map(|dst| {
            got.iter()
                .find(|(from, _)| from == dst)
                .map(|(_, seen)| seen.parse().expect("a reflector answers an endpoint"))
        })
        .collect()
}
