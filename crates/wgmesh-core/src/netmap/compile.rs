//! One node's view of another, from the two nodes and the network alone.
//!
//! The topology rules are the planner's (docs/mesh-file.md), restated for
//! nodes whose reachability the server learns at run time:
//! - a node is *reachable* when its STUN-reflexive address is one of its
//!   own addresses (no NAT in front of it);
//! - a hub peers with every node, with that node's address as AllowedIPs;
//! - every node peers with the hubs; its *primary* hub (the first by name)
//!   gets the whole overlay as AllowedIPs, so anything without a more
//!   specific route goes through it (longest prefix wins);
//! - two nodes peer directly when at least one is reachable; the one
//!   behind NAT dials and sends keepalives;
//! - in a hub-and-spoke network, two nodes that are not hubs always go
//!   through the primary hub, and so does a node marked `via_hub` (when
//!   there is a hub) with every node that is not a hub;
//! - two nodes both behind NAT, when the network has a relay, are given
//!   each other's endpoints and keepalives ([`Route::Direct`]): the agent's
//!   disco then finds a direct path through the NATs that allow one
//!   (RFC 4787 endpoint-independent mapping) and falls back to the relay
//!   for the others, which beats a detour through a hub on both counts;
//! - with no relay they go through the primary hub when there is one
//!   ([`Route::ViaHub`]); with neither they are given each other's
//!   reflexive endpoints and keepalives, which works through the NATs that
//!   allow it.
//!
//! `via_hub` nodes and hub-and-spoke networks go through the hub whether
//! or not there is a relay: the operator asked for it.
//!
//! Policy decides visibility: a pair with no packet allowed either way is
//! left out of both maps, except hubs, which stay for routing (the
//! receiving node's filter still applies).
//!
//! Because [`peer_entry`] reads only `me`, `other` and the network, a
//! change to one node changes one entry in each other map: O(N) work.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::policy::{NodeFacts, Policy, allows_any};
use super::{MapPeer, NetworkMap, Route, SelfNode};
use crate::key::PublicKey;

/// WireGuard keepalive for a node behind NAT, as wg-quick users set it:
/// below the shortest common UDP mapping timeout (30 s).
pub const NAT_KEEPALIVE: u16 = 25;

/// What the compiler reads of a node.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub public_key: PublicKey,
    pub address: IpAddr,
    pub groups: &'a [String],
    /// Underlay endpoints, best first (reflexive before local).
    pub endpoints: &'a [SocketAddr],
    pub reachable: bool,
    /// How its NAT maps, as it reported.
    pub nat: Option<crate::control::NatType>,
    pub hub: bool,
    /// Reaches the nodes that are not hubs only through the primary hub
    /// (the planner's `via_hub`), even where a direct tunnel could work.
    pub via_hub: bool,
}

impl NodeView<'_> {
    fn facts(&self) -> NodeFacts<'_> {
        NodeFacts {
            name: self.name,
            groups: self.groups,
        }
    }
}

/// What the compiler reads of the network.
#[derive(Debug, Clone, Copy)]
pub struct NetworkView<'a> {
    pub name: &'a str,
    pub overlay: IpNet,
    pub policy: &'a Policy,
    /// The primary hub's key, if the network has a hub.
    pub primary_hub: Option<PublicKey>,
    /// Nodes that are not hubs never peer with each other: everything
    /// between them goes through the primary hub.
    pub hub_and_spoke: bool,
    /// The server knows at least one relay: two nodes both behind NAT peer
    /// "directly" (disco finds a path or falls back to a relay) instead of
    /// going through the hub.
    pub relays: bool,
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// How `me` sees `other`, or `None` if `other` is not in `me`'s map.
pub fn peer_entry(
    me: &NodeView<'_>,
    other: &NodeView<'_>,
    net: &NetworkView<'_>,
) -> Option<MapPeer> {
    let default = net.policy.default;
    let inbound = net.policy.rules_between(&other.facts(), &me.facts());
    let outbound = net.policy.rules_between(&me.facts(), &other.facts());
    let hubs_involved = me.hub || other.hub;
    if !hubs_involved && !allows_any(&inbound, default) && !allows_any(&outbound, default) {
        return None;
    }
    let keepalive = (!me.reachable && other.reachable).then_some(NAT_KEEPALIVE);
    // The operator's choice: these pairs go through the hub even where a
    // direct path could work.
    let hub_forced =
        net.hub_and_spoke || (net.primary_hub.is_some() && (me.via_hub || other.via_hub));
    let (route, allowed_ips) = if me.hub {
        (Route::Direct { keepalive }, vec![host(other.address)])
    } else if other.hub {
        let allowed = if net.primary_hub == Some(other.public_key) {
            vec![net.overlay.trunc()]
        } else {
            vec![host(other.address)]
        };
        (Route::Direct { keepalive }, allowed)
    } else if !hub_forced && (me.reachable || other.reachable) {
        (Route::Direct { keepalive }, vec![host(other.address)])
    } else if !hub_forced && net.relays {
        // Both behind NAT: both dial and keep their mappings open; the
        // agents' disco punches through or falls back to a relay.
        let keepalive = Some(NAT_KEEPALIVE);
        (Route::Direct { keepalive }, vec![host(other.address)])
    } else if let Some(hub) = net.primary_hub {
        (Route::ViaHub { hub }, Vec::new())
    } else if net.hub_and_spoke {
        // Spokes with no hub to go through cannot reach each other.
        return None;
    } else {
        let keepalive = Some(NAT_KEEPALIVE);
        (Route::Direct { keepalive }, vec![host(other.address)])
    };
    Some(MapPeer {
        name: other.name.to_owned(),
        public_key: other.public_key,
        address: other.address,
        allowed_ips,
        endpoints: other.endpoints.to_vec(),
        route,
        nat: other.nat,
        inbound,
    })
}

/// `me`'s whole map at `version`, with no relays: the caller lists those
/// (they are server-wide, not a property of the network's nodes).
pub fn full_map<'a>(
    me: &NodeView<'_>,
    others: impl IntoIterator<Item = &'a NodeView<'a>>,
    net: &NetworkView<'_>,
    version: u64,
) -> NetworkMap {
    let mut peers: Vec<MapPeer> = others
        .into_iter()
        .filter(|o| o.public_key != me.public_key)
        .filter_map(|o| peer_entry(me, o, net))
        .collect();
    peers.sort_by_key(|p| p.public_key);
    NetworkMap {
        network: net.name.to_owned(),
        version,
        overlay: net.overlay.trunc(),
        node: SelfNode {
            name: me.name.to_owned(),
            public_key: me.public_key,
            address: IpNet::new(me.address, net.overlay.prefix_len())
                .expect("invariant: the overlay's prefix length fits its own family"),
            hub: me.hub,
        },
        peers,
        default_action: net.policy.default,
        relays: Vec::new(),
    }
}
