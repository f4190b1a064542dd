//! Proof that a plan routes: follow a packet from every node to every other
//! node's overlay address, hop by hop, the way WireGuard's cryptokey routing
//! would (WireGuard paper §2: the outgoing peer is the longest AllowedIPs
//! match for the destination; an incoming packet is accepted only if its
//! source's longest match is the peer it came from).

use std::net::IpAddr;

use super::{NodePlan, PeerPlan, Plan, PlanError};
use crate::wgquick::overlaps;

/// The hops a packet takes from one node to another (names, source first).
pub fn path(plan: &Plan, from: &str, to: &str) -> Result<Vec<String>, PlanError> {
    let node = |name: &str| plan.existing_node(name);
    let src = node(from)?;
    let dst = node(to)?;
    let mut hops = vec![src.name.clone()];
    let mut cur = src;
    while cur.name != dst.name {
        let fail = |why: String| {
            PlanError::Unroutable(format!(
                "{} → {}: at {}, {why}",
                src.name, dst.name, cur.name
            ))
        };
        let out = lookup(cur, dst.address)
            .ok_or_else(|| fail(format!("no peer's AllowedIPs holds {}", dst.address)))?;
        let next = node(&out.node)?;
        let back = next
            .peers
            .iter()
            .find(|p| p.node == cur.name)
            .ok_or_else(|| fail(format!("{} has no peer {}", next.name, cur.name)))?;
        if out.endpoint.is_none() && back.endpoint.is_none() {
            return Err(fail(format!(
                "neither {} nor {} knows the other's endpoint",
                cur.name, next.name
            )));
        }
        // Only one side can dial: the other can answer only while the
        // dialler's NAT mapping stays open, which keepalive ensures.
        let dialler_keeps_alive = match (out.endpoint.is_some(), back.endpoint.is_some()) {
            (true, false) => out.keepalive.is_some() || cur.endpoint.is_some(),
            (false, true) => back.keepalive.is_some() || next.endpoint.is_some(),
            _ => true,
        };
        if !dialler_keeps_alive {
            return Err(fail(format!(
                "the tunnel {}–{} has no PersistentKeepalive on the side behind NAT",
                cur.name, next.name
            )));
        }
        match lookup(next, src.address) {
            Some(p) if p.node == cur.name => {}
            _ => {
                return Err(fail(format!(
                    "{} would drop the packet: source {} is not in its AllowedIPs for {}",
                    next.name, src.address, cur.name
                )));
            }
        }
        if next.name != dst.name && !next.is_hub {
            return Err(fail(format!(
                "{} would have to forward but is no hub",
                next.name
            )));
        }
        hops.push(next.name.clone());
        if hops.len() > plan.nodes.len() {
            return Err(fail(format!("routing loop: {}", hops.join(" → "))));
        }
        cur = next;
    }
    Ok(hops)
}

/// WireGuard's outgoing lookup: the peer with the longest matching prefix.
fn lookup(node: &NodePlan, addr: IpAddr) -> Option<&PeerPlan> {
    node.peers
        .iter()
        .flat_map(|p| p.allowed_ips.iter().map(move |net| (net, p)))
        .filter(|(net, _)| net.contains(&addr))
        .max_by_key(|(net, _)| net.prefix_len())
        .map(|(_, p)| p)
}

/// Checks every ordered pair of nodes, and that no node gives one address to
/// two peers.
pub fn check(plan: &Plan) -> Result<(), PlanError> {
    for node in &plan.nodes {
        for (i, a) in node.peers.iter().enumerate() {
            for b in &node.peers[..i] {
                for x in &a.allowed_ips {
                    if let Some(y) = b.allowed_ips.iter().find(|y| overlaps(x, y)) {
                        return Err(PlanError::Unroutable(format!(
                            "{}: peers {} ({x}) and {} ({y}) overlap",
                            node.name, a.node, b.node
                        )));
                    }
                }
            }
        }
    }
    for a in &plan.nodes {
        for b in &plan.nodes {
            if a.name != b.name {
                path(plan, &a.name, &b.name)?;
            }
        }
    }
    Ok(())
}
