//! Network maps: what the coordination server tells each agent, and the
//! policy that decides it.
//!
//! - [`policy`]: groups, ACL rules and the per-network default, as an
//!   operator writes them (`wgmesh admin policy set FILE`), and the
//!   first-match evaluation both the server and the agent's packet filter
//!   use;
//! - [`compile`]: one node's view of another ([`MapPeer`]), computed from
//!   the two nodes and the policy alone, so that a change to one node
//!   costs O(N) entries, never O(N²);
//! - the wire types below: a node's [`NetworkMap`] and the
//!   [`MapUpdate`]s (a full map, then deltas) the server streams to it.
//!
//! The server and the agent share these types; they are serialised as
//! JSON on the control stream (DESIGN.md "Protocols: Control").

pub mod compile;
pub mod policy;

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::key::PublicKey;
pub use policy::{Action, FilterRule, PortRange, Proto};

/// Everything one node needs to run its part of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkMap {
    /// The network's name.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub network: String,
    /// Grows by one with every change to this node's map; deltas name the
    /// version they apply to.
    pub version: u64,
    /// The overlay prefix of the network (also the prefix length of
    /// `node.address`).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::IpNetText))]
    pub overlay: IpNet,
    pub node: SelfNode,
    /// The other nodes this node may reach after policy and topology,
    /// sorted by public key.
    pub peers: Vec<MapPeer>,
    /// What the inbound filter does with a packet no rule of its sender
    /// matches: the network's default.
    pub default_action: Action,
    /// The relays this node may use when no direct path works (server-wide,
    /// sorted by name). Absent from maps of servers that predate relays.
    #[serde(default)]
    pub relays: Vec<MapRelay>,
}

/// A relay, as a node needs it to register and send through it
/// (docs/relay.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MapRelay {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    /// The relay's static X25519 key: the node's hello is sealed to it.
    pub public_key: PublicKey,
    /// Relay frames over UDP (the same port answers STUN).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::SocketAddrText))]
    pub udp: SocketAddr,
    /// WebSocket over TLS, for networks that block UDP.
    pub ws_url: Option<String>,
}

/// The receiving node itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SelfNode {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    pub public_key: PublicKey,
    /// Its overlay address, with the network's prefix length.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::IpNetText))]
    pub address: IpNet,
    /// A hub forwards between nodes that cannot reach each other directly;
    /// its agent turns IP forwarding on.
    pub hub: bool,
}

/// How packets for a peer leave this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Route {
    /// A WireGuard peer of this node. `keepalive` is set when this side is
    /// behind NAT and the other is not: this side dials, and keeps its
    /// NAT mapping open.
    Direct { keepalive: Option<u16> },
    /// Not a WireGuard peer: its packets go through the hub with this key
    /// (whose AllowedIPs cover the whole overlay); listed for the packet
    /// filter and for `wgmesh status`.
    ViaHub { hub: PublicKey },
}

/// Another node, as the receiving node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MapPeer {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    pub public_key: PublicKey,
    /// Its overlay address.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::IpAddrText))]
    pub address: IpAddr,
    /// The WireGuard AllowedIPs for this peer (empty for [`Route::ViaHub`]).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::IpNetText>))]
    pub allowed_ips: Vec<IpNet>,
    /// Its known underlay endpoints, best first: public ones it reported
    /// or the server observed.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::SocketAddrText>))]
    pub endpoints: Vec<SocketAddr>,
    pub route: Route,
    /// How its NAT maps, as it reported (for `wgmesh status`'s reasons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<crate::control::NatType>,
    /// Inbound rules for packets whose source is this peer's address, in
    /// order; the first that matches decides, else `default_action`.
    pub inbound: Vec<FilterRule>,
}

/// One message of the control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum MapUpdate {
    /// The whole map: the first message of every stream, and whenever the
    /// node itself, the network's settings or the server's relays change.
    Full(NetworkMap),
    /// Changes to the peers of the map at `from_version`.
    Delta(MapDelta),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MapDelta {
    pub from_version: u64,
    pub version: u64,
    /// New or changed peers (replace any entry with the same key).
    pub upsert: Vec<MapPeer>,
    /// Keys of peers to drop.
    pub remove: Vec<PublicKey>,
}

/// Why a delta could not be applied; the agent then waits for (or asks
/// for) a full map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    #[error("delta is for version {delta}, the map is at {have}")]
    VersionMismatch { have: u64, delta: u64 },
}

impl NetworkMap {
    /// Applies `delta` in place, keeping `peers` sorted by key.
    pub fn apply(&mut self, delta: &MapDelta) -> Result<(), ApplyError> {
        if delta.from_version != self.version {
            return Err(ApplyError::VersionMismatch {
                have: self.version,
                delta: delta.from_version,
            });
        }
        self.peers.retain(|p| {
            !delta.remove.contains(&p.public_key)
                && !delta.upsert.iter().any(|u| u.public_key == p.public_key)
        });
        self.peers.extend(delta.upsert.iter().cloned());
        self.peers.sort_by_key(|p| p.public_key);
        self.version = delta.version;
        Ok(())
    }

    /// The inbound rules for packets from `source` (an overlay address),
    /// or `None` when no node of the map has that address.
    pub fn rules_for(&self, source: IpAddr) -> Option<&[FilterRule]> {
        self.peers
            .iter()
            .find(|p| p.address == source)
            .map(|p| p.inbound.as_slice())
    }
}

#[cfg(test)]
mod tests;
