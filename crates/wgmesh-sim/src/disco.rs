//! Two nodes running wgmesh-proto's disco path manager on the simulated
//! network: each behind a NAT of a given kind (or on a public address),
//! with a STUN server on the internet and a relay, and a stream of
//! application packets each way that takes whatever path the manager
//! chose at the moment it is sent.
//!
//! The relay is modelled as a stream (WebSocket over TCP, as DERP is): it
//! reaches every node whatever its NAT or UDP filtering, with a one-way
//! delay of half the RTT plus [`RELAY_EXTRA`] and the same end-to-end loss
//! as the direct path. The control plane (the coordination server handing
//! each node the other's endpoints) is a fixed delay, [`CONTROL_DELAY`],
//! after both nodes have asked the STUN server for their reflexive
//! address.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use wgmesh_core::key::PrivateKey;
use wgmesh_proto::disco::path::{Path, PathEvent, PathManager, Via};
use wgmesh_proto::{disco, stun};

use crate::{HostId, Link, NatConfig, NatKind, Sim};

/// The WireGuard port every node binds.
pub const PORT: u16 = 51820;
const STUN_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const STUN_PORT: u16 = 3478;
/// The relay's extra one-way delay over the direct path.
pub const RELAY_EXTRA: Duration = Duration::from_millis(10);
/// From the last STUN answer (or [`STUN_WAIT`]) to both nodes holding
/// each other's endpoints.
pub const CONTROL_DELAY: Duration = Duration::from_millis(50);
/// How long a node waits for its STUN answer (behind a UDP-blocking NAT
/// none comes), asking again every [`STUN_RETRY`] as the agent does.
pub const STUN_WAIT: Duration = Duration::from_millis(300);
pub const STUN_RETRY: Duration = Duration::from_millis(100);
/// How often each node sends an application packet.
pub const DATA_INTERVAL: Duration = Duration::from_millis(20);
/// The wall clock at the start of every run.
const T0_MS: u64 = 1_800_000_000_000;
const DATA: &[u8] = b"APPDATA";

/// One cell of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Each node's NAT, or `None` for a public address.
    pub nat: [Option<NatKind>; 2],
    /// Round-trip time of the direct path between the two nodes.
    pub rtt: Duration,
    /// End-to-end loss of a one-way trip, each way, in [0, 1).
    pub loss: f64,
    pub seed: u64,
}

/// How one node fared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeOutcome {
    /// The path its manager holds at the end.
    pub path: Path,
    /// Its reflexive address, if STUN answered.
    pub reflexive: Option<SocketAddr>,
    /// When (since the start) the first application packet from the other
    /// node arrived over a direct path, and over the relay.
    pub first_direct: Option<Duration>,
    pub first_relayed: Option<Duration>,
    pub direct_established: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub nodes: [NodeOutcome; 2],
    /// Every path change: when (since the start), which node, the new path.
    pub changes: Vec<(Duration, usize, Path)>,
}

/// Can two nodes behind these NATs have a direct path, by the RFC 4787
/// behaviours? Not if UDP is blocked on either side, nor if one side's
/// mapping depends on the destination (symmetric) while the other side's
/// filter wants the exact port it sent to (port-restricted or symmetric):
/// the port the symmetric side will use cannot be known in advance.
pub fn direct_possible(a: Option<NatKind>, b: Option<NatKind>) -> bool {
    use NatKind::*;
    let strict_filter = |k: Option<NatKind>| matches!(k, Some(PortRestricted | Symmetric));
    let blocked = |k: Option<NatKind>| k == Some(UdpBlocked);
    if blocked(a) || blocked(b) {
        return false;
    }
    !((a == Some(Symmetric) && strict_filter(b)) || (b == Some(Symmetric) && strict_filter(a)))
}

/// Where a run is: waiting for STUN, for the control plane, or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Stun,
    Control(Instant),
    Running,
}

struct Node {
    host: HostId,
    local: SocketAddr,
    pm: PathManager,
    stun_tx: stun::TransactionId,
    reflexive: Option<SocketAddr>,
    stun_done: bool,
    first_direct: Option<Duration>,
    first_relayed: Option<Duration>,
}

/// Runs `s` for `duration` of virtual time.
pub fn run(s: &Scenario, duration: Duration) -> Outcome {
    let mut sim = Sim::new(s.seed);
    let start = sim.now();
    // Loss per attachment such that a one-way trip (two attachments) loses
    // `s.loss`.
    let per_link = 1.0 - (1.0 - s.loss).sqrt();
    let link = Link::with_latency(s.rtt / 4).loss(per_link);
    let stun_host = sim
        .add_public_host("stun", STUN_ADDR)
        .expect("invariant: a fresh sim takes a host");
    sim.bind(stun_host, STUN_PORT)
        .expect("invariant: a free port");
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..2u8 {
        let name = ["a", "b"][usize::from(i)];
        let host = match s.nat[usize::from(i)] {
            None => {
                let h = sim
                    .add_public_host(name, Ipv4Addr::new(192, 0, 2, 10 + i))
                    .expect("invariant: a fresh address");
                sim.set_host_link(h, link)
                    .expect("invariant: the host exists");
                h
            }
            Some(kind) => {
                let r = sim
                    .add_router(
                        &format!("nat-{name}"),
                        Ipv4Addr::new(198, 51, 100, 10 + i),
                        format!("10.{}.0.0/24", i + 1)
                            .parse()
                            .expect("invariant: a valid net"),
                        NatConfig::kind(kind),
                    )
                    .expect("invariant: a fresh router");
                sim.set_router_link(r, link)
                    .expect("invariant: the router exists");
                sim.add_lan_host(name, r)
                    .expect("invariant: the LAN has room")
            }
        };
        sim.bind(host, PORT).expect("invariant: a free port");
        let local = SocketAddr::new(sim.host_addr(host).expect("invariant: exists").into(), PORT);
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&s.seed.to_le_bytes());
        seed[8] = i;
        let pm = PathManager::new(PrivateKey::from_random([i + 1; 32]), seed, start, T0_MS);
        let stun_tx = stun::TransactionId([i + 1; 12]);
        sim.send(
            host,
            PORT,
            SocketAddr::new(STUN_ADDR.into(), STUN_PORT),
            stun::binding_request(stun_tx),
        )
        .expect("invariant: bound above");
        nodes.push(Node {
            host,
            local,
            pm,
            stun_tx,
            reflexive: None,
            stun_done: false,
            first_direct: None,
            first_relayed: None,
        });
    }
    let keys = [nodes[0].pm.public_key(), nodes[1].pm.public_key()];
    let relay_delay = s.rtt / 2 + RELAY_EXTRA;
    let mut relay_rng = crate::rng::SimRng::new(s.seed ^ 0x5EED);
    // (deliver at, to node, bytes)
    let mut relay: Vec<(Instant, usize, Vec<u8>)> = Vec::new();
    let mut phase = Phase::Stun;
    let mut changes = Vec::new();
    let mut next_data = start;
    let end = start + duration;
    let stun_deadline = start + STUN_WAIT;
    let mut next_stun = start + STUN_RETRY;
    loop {
        // Everything due now.
        let now = sim.now();
        while let Some(r) = sim.poll_received(stun_host) {
            if let Some(reply) = stun::answer(&r.bytes, r.from) {
                let _ = sim.send(stun_host, STUN_PORT, r.from, reply);
            }
        }
        for n in nodes.iter_mut() {
            while let Some(r) = sim.poll_received(n.host) {
                if disco::is_disco(&r.bytes) {
                    let _ = n.pm.handle_disco(now, Via::Direct(r.from), &r.bytes);
                } else if stun::is_stun(&r.bytes) {
                    if let Ok((tx, mapped)) = stun::parse_binding_response(&r.bytes)
                        && tx == n.stun_tx
                    {
                        n.reflexive = Some(mapped);
                        n.stun_done = true;
                    }
                } else if r.bytes.starts_with(DATA) && n.first_direct.is_none() {
                    n.first_direct = Some(now - start);
                }
            }
        }
        let (due, rest): (Vec<_>, Vec<_>) = relay.drain(..).partition(|r| r.0 <= now);
        relay = rest;
        for (_, to, bytes) in due {
            let n = &mut nodes[to];
            if disco::is_disco(&bytes) {
                let _ = n.pm.handle_disco(now, Via::Relay, &bytes);
            } else if bytes.starts_with(DATA) && n.first_relayed.is_none() {
                n.first_relayed = Some(now - start);
            }
        }
        // The control plane hands out endpoints once STUN is done.
        if phase == Phase::Stun && now >= next_stun {
            for n in nodes.iter().filter(|n| !n.stun_done) {
                let to = SocketAddr::new(STUN_ADDR.into(), STUN_PORT);
                let _ = sim.send(n.host, PORT, to, stun::binding_request(n.stun_tx));
            }
            next_stun = now + STUN_RETRY;
        }
        if phase == Phase::Stun && (nodes.iter().all(|n| n.stun_done) || now >= stun_deadline) {
            phase = Phase::Control(now + CONTROL_DELAY);
        }
        if matches!(phase, Phase::Control(t) if now >= t) {
            for i in 0..2 {
                let own: Vec<SocketAddr> = nodes[i]
                    .reflexive
                    .into_iter()
                    .chain([nodes[i].local])
                    .collect();
                let other: Vec<SocketAddr> = nodes[1 - i]
                    .reflexive
                    .into_iter()
                    .chain([nodes[1 - i].local])
                    .collect();
                nodes[i].pm.set_local_endpoints(own);
                nodes[i].pm.set_relay(now, true);
                nodes[i].pm.upsert_peer(now, keys[1 - i], &other);
            }
            phase = Phase::Running;
            next_data = now;
        }
        let data_on = phase == Phase::Running;
        // What the nodes send now: (from host, to node, way, bytes).
        let mut out: Vec<(HostId, usize, Via, Vec<u8>)> = Vec::new();
        let send_data = data_on && now >= next_data;
        if send_data {
            next_data = now + DATA_INTERVAL;
        }
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.pm.poll_timeout().is_some_and(|t| t <= now) {
                n.pm.handle_timeout(now);
            }
            if send_data {
                match n.pm.path(&keys[1 - i]) {
                    Some(Path::Direct { addr, .. }) => {
                        out.push((n.host, 1 - i, Via::Direct(addr), DATA.to_vec()));
                    }
                    Some(Path::Relay) => out.push((n.host, 1 - i, Via::Relay, DATA.to_vec())),
                    _ => {}
                }
            }
            while let Some(PathEvent::Changed { path, .. }) = n.pm.poll_event() {
                changes.push((now - start, i, path));
            }
            while let Some(t) = n.pm.poll_transmit() {
                out.push((n.host, 1 - i, t.via, t.bytes));
            }
        }
        for (host, to, via, bytes) in out {
            match via {
                Via::Direct(addr) => {
                    let _ = sim.send(host, PORT, addr, bytes);
                }
                // The relay loses what the direct path would.
                Via::Relay if !relay_rng.chance(s.loss) => {
                    relay.push((now + relay_delay, to, bytes));
                }
                Via::Relay => {}
            }
        }
        // The next thing to happen.
        let mut next = end;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = next.min(t.max(now));
            }
        };
        consider(sim.next_event_time());
        consider(relay.iter().map(|r| r.0).min());
        for n in &nodes {
            consider(n.pm.poll_timeout());
        }
        consider(Some(match phase {
            Phase::Stun => stun_deadline.min(next_stun),
            Phase::Control(t) => t,
            Phase::Running => next_data,
        }));
        if now >= end {
            break;
        }
        // Never stand still: a due timer that set nothing new moves on.
        let next = if next <= now {
            now + Duration::from_micros(100)
        } else {
            next
        };
        sim.advance_to(next);
    }
    let outcome = |i: usize| NodeOutcome {
        path: nodes[i].pm.path(&keys[1 - i]).unwrap_or(Path::Unreachable),
        reflexive: nodes[i].reflexive,
        first_direct: nodes[i].first_direct,
        first_relayed: nodes[i].first_relayed,
        direct_established: nodes[i].pm.stats().direct_established,
    };
    Outcome {
        nodes: [outcome(0), outcome(1)],
        changes,
    }
}
