//! From a checked [`MeshSpec`] to a [`Plan`]: addresses, then who peers with
//! whom and which addresses each peer carries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::mesh_file::{MeshSpec, Topology};
use super::{NodePlan, PeerPlan, Plan, PlanError};

/// Whether `addr` may be given to a node: inside `cidr` and neither its
/// network address nor (IPv4, prefix < 31) its broadcast address.
pub(crate) fn is_host_address(cidr: &IpNet, addr: IpAddr) -> bool {
    if !cidr.contains(&addr) || addr == cidr.network() {
        return false;
    }
    match cidr {
        IpNet::V4(v4) if v4.prefix_len() < 31 => addr != IpAddr::V4(v4.broadcast()),
        _ => true,
    }
}

/// `from`'s entry for peer `to`: its address, its endpoint, and a keepalive
/// where `from` is behind NAT and dials `to` (so that `to` can answer at any
/// time through `from`'s NAT mapping).
fn peer_entry(from: &NodePlan, to: &NodePlan, keepalive: Option<u16>) -> PeerPlan {
    PeerPlan {
        node: to.name.clone(),
        allowed_ips: vec![IpNet::from(to.address)],
        endpoint: to.endpoint.clone(),
        keepalive: keepalive.filter(|_| from.endpoint.is_none() && to.endpoint.is_some()),
        via: Vec::new(),
    }
}

/// A direct tunnel between nodes `a` and `b`.
fn link(nodes: &mut [NodePlan], a: usize, b: usize, keepalive: Option<u16>) {
    let (to_b, to_a) = (
        peer_entry(&nodes[a], &nodes[b], keepalive),
        peer_entry(&nodes[b], &nodes[a], keepalive),
    );
    nodes[a].peers.push(to_b);
    nodes[b].peers.push(to_a);
}

/// Makes `from` reach node `to` through its peer `hub`.
fn route_via(nodes: &mut [NodePlan], from: usize, hub: usize, to: usize) {
    let (hub_name, to_name, to_addr) = (
        nodes[hub].name.clone(),
        nodes[to].name.clone(),
        nodes[to].address,
    );
    let peer = nodes[from]
        .peers
        .iter_mut()
        .find(|p| p.node == hub_name)
        .expect("a node peers directly with every hub it routes through");
    peer.allowed_ips.push(IpNet::from(to_addr));
    peer.via.push(to_name);
}

/// Gives every node an address: its own if the file gives one, else the one
/// it had before (`previous`, so that re-rendering after an edit does not
/// renumber the mesh), else the lowest free one.
fn allocate(
    spec: &MeshSpec,
    previous: &BTreeMap<String, IpAddr>,
) -> Result<Vec<IpAddr>, PlanError> {
    let mut taken: BTreeSet<IpAddr> = spec.nodes.iter().filter_map(|n| n.address).collect();
    let mut out: Vec<Option<IpAddr>> = spec.nodes.iter().map(|n| n.address).collect();
    for (slot, node) in out.iter_mut().zip(&spec.nodes) {
        if slot.is_none()
            && let Some(&prev) = previous.get(&node.name)
            && is_host_address(&spec.cidr, prev)
            && taken.insert(prev)
        {
            *slot = Some(prev);
        }
    }
    let mut candidates = host_candidates(spec.cidr);
    for (slot, node) in out.iter_mut().zip(&spec.nodes) {
        if slot.is_none() {
            let free = candidates.find(|a| !taken.contains(a)).ok_or_else(|| {
                PlanError::Invalid(format!(
                    "network.cidr {} has no free address left for node {:?}",
                    spec.cidr, node.name
                ))
            })?;
            taken.insert(free);
            *slot = Some(free);
        }
    }
    Ok(out
        .into_iter()
        .map(|a| a.expect("every slot was filled above"))
        .collect())
}

/// The host addresses of `cidr`, lowest first, lazily (an IPv6 /64 is big).
fn host_candidates(cidr: IpNet) -> impl Iterator<Item = IpAddr> {
    let (base, bits): (u128, u32) = match cidr.network() {
        IpAddr::V4(a) => (u32::from(a).into(), 32),
        IpAddr::V6(a) => (a.into(), 128),
    };
    let host_bits = bits - u32::from(cidr.prefix_len());
    let size: u128 = if host_bits >= 128 {
        u128::MAX
    } else {
        1u128 << host_bits
    };
    (0..size)
        .map(move |offset| {
            let raw = base + offset;
            if bits == 32 {
                IpAddr::V4(
                    u32::try_from(raw)
                        .expect("offset stays inside an IPv4 prefix")
                        .into(),
                )
            } else {
                IpAddr::V6(raw.into())
            }
        })
        .filter(move |a| is_host_address(&cidr, *a))
}

/// Builds the plan. `previous` holds addresses from an earlier render.
pub fn compile(spec: &MeshSpec, previous: &BTreeMap<String, IpAddr>) -> Result<Plan, PlanError> {
    let addresses = allocate(spec, previous)?;
    let index: BTreeMap<&str, usize> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.as_str(), i))
        .collect();
    let hub_ix: Vec<usize> = spec.hubs.iter().map(|h| index[h.as_str()]).collect();
    let home_hub = |i: usize| -> Option<usize> {
        spec.nodes[i]
            .hub
            .as_deref()
            .map(|h| index[h])
            .or_else(|| hub_ix.first().copied())
    };

    let mut nodes: Vec<NodePlan> = spec
        .nodes
        .iter()
        .zip(&addresses)
        .map(|(n, &address)| NodePlan {
            name: n.name.clone(),
            address,
            endpoint: n.endpoint.clone(),
            listen_port: n.listen_port,
            mtu: n.mtu,
            public_key: n.public_key,
            is_hub: spec.hubs.contains(&n.name),
            peers: Vec::new(),
        })
        .collect();

    let keepalive = (spec.keepalive > 0).then_some(spec.keepalive);
    let n = spec.nodes.len();
    match spec.topology {
        Topology::FullMesh => {
            let mut relayed: Vec<(usize, usize, usize)> = Vec::new(); // (a, b, hub)
            for a in 0..n {
                for b in a + 1..n {
                    let either_hub = nodes[a].is_hub || nodes[b].is_hub;
                    let either_via_hub = spec.nodes[a].via_hub || spec.nodes[b].via_hub;
                    let one_dials = nodes[a].endpoint.is_some() || nodes[b].endpoint.is_some();
                    if either_hub || (one_dials && !either_via_hub) {
                        link(&mut nodes, a, b, keepalive);
                        continue;
                    }
                    // Both behind NAT (neither can dial the other), or one
                    // asked to be reached only through a hub: they meet at a
                    // hub both dial. One hub per pair, the same in both
                    // directions, or WireGuard's source check on the
                    // receiving side would drop what arrives via the other.
                    let hub = match (home_hub(a), home_hub(b)) {
                        (Some(ha), Some(hb)) if ha == hb => ha,
                        _ => *hub_ix.first().ok_or_else(|| unroutable_pair(spec, a, b))?,
                    };
                    relayed.push((a, b, hub));
                }
            }
            for (a, b, hub) in relayed {
                route_via(&mut nodes, a, hub, b);
                route_via(&mut nodes, b, hub, a);
            }
        }
        Topology::HubAndSpoke => {
            if hub_ix.is_empty() {
                return Err(PlanError::Unroutable(
                    "a hub-and-spoke mesh needs at least one hub in network.hubs".into(),
                ));
            }
            for (i, &a) in hub_ix.iter().enumerate() {
                for &b in &hub_ix[i + 1..] {
                    link(&mut nodes, a, b, keepalive);
                }
            }
            // Each spoke has one peer, its hub, carrying the whole overlay;
            // the other hubs reach the spoke through that hub.
            for s in (0..n).filter(|i| !hub_ix.contains(i)) {
                let hub = home_hub(s).expect("hubs is not empty");
                link(&mut nodes, s, hub, keepalive);
                nodes[s]
                    .peers
                    .last_mut()
                    .expect("link added the hub peer")
                    .allowed_ips = vec![spec.cidr];
                for &other in hub_ix.iter().filter(|&&h| h != hub) {
                    route_via(&mut nodes, other, hub, s);
                }
            }
        }
    }

    let plan = Plan {
        name: spec.name.clone(),
        cidr: spec.cidr,
        topology: spec.topology,
        interface: spec.interface.clone(),
        hubs: spec.hubs.clone(),
        nodes,
    };
    super::routes::check(&plan)?;
    Ok(plan)
}

fn unroutable_pair(spec: &MeshSpec, a: usize, b: usize) -> PlanError {
    let public: Vec<&str> = spec
        .nodes
        .iter()
        .filter(|n| n.endpoint.is_some())
        .map(|n| n.name.as_str())
        .collect();
    let hint = match public.first() {
        Some(p) => format!("add a public node to network.hubs, e.g. hubs = [{p:?}]"),
        None => "give at least one node a public endpoint and list it in network.hubs".into(),
    };
    PlanError::Unroutable(format!(
        "{:?} and {:?} are both behind NAT (no endpoint) and there is no hub to relay \
         between them: {hint}",
        spec.nodes[a].name, spec.nodes[b].name
    ))
}
