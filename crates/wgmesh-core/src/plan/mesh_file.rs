//! The mesh file (TOML, documented in docs/mesh-file.md), read into a
//! [`MeshSpec`] whose every field has been checked: after this, the
//! compiler only has topology to think about.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use super::PlanError;
use crate::key::PublicKey;
use crate::wgquick::Endpoint;

/// IPv4 UDP (28 bytes) + WireGuard data header (16) + Poly1305 tag (16) = 60,
/// plus 20 more so the same MTU also fits an IPv6 underlay (40-byte header):
/// 80 in all, which is why 1500 gives 1420.
pub const WIREGUARD_OVERHEAD: u16 = 80;
/// The smallest MTU IPv6 allows (RFC 8200 §5); below it an IPv6 overlay breaks.
pub const MIN_TUNNEL_MTU: u16 = 1280;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    FullMesh,
    HubAndSpoke,
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Topology::FullMesh => "full-mesh",
            Topology::HubAndSpoke => "hub-and-spoke",
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeshFile {
    network: NetworkSection,
    #[serde(default, rename = "node")]
    nodes: Vec<NodeSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    name: String,
    cidr: IpNet,
    #[serde(default = "default_listen_port")]
    listen_port: u16,
    #[serde(default = "default_mtu")]
    mtu: u16,
    #[serde(default = "default_keepalive")]
    keepalive: u16,
    #[serde(default = "default_topology")]
    topology: Topology,
    #[serde(default)]
    hubs: Vec<String>,
    #[serde(default = "default_interface")]
    interface: String,
}

fn default_listen_port() -> u16 {
    51820
}
fn default_mtu() -> u16 {
    1500 - WIREGUARD_OVERHEAD
}
fn default_keepalive() -> u16 {
    25
}
fn default_topology() -> Topology {
    Topology::FullMesh
}
fn default_interface() -> String {
    "wg0".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSection {
    name: String,
    endpoint: Option<String>,
    address: Option<IpAddr>,
    public_key: Option<PublicKey>,
    listen_port: Option<u16>,
    underlay_mtu: Option<u16>,
    hub: Option<String>,
    #[serde(default)]
    via_hub: bool,
}

/// A checked mesh file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSpec {
    pub name: String,
    pub cidr: IpNet,
    pub keepalive: u16,
    pub topology: Topology,
    /// In the order given; the first is the default hub.
    pub hubs: Vec<String>,
    pub interface: String,
    pub nodes: Vec<NodeSpec>,
}

/// A checked `[[node]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// `None`: the node sits behind NAT and nobody can dial it.
    pub endpoint: Option<Endpoint>,
    pub address: Option<IpAddr>,
    pub public_key: Option<PublicKey>,
    pub listen_port: u16,
    /// The tunnel MTU: the network's, or `underlay_mtu - 80`.
    pub mtu: u16,
    /// The hub this node goes through, if it chose one.
    pub hub: Option<String>,
    /// Peer only with the hubs; every other node reaches it through one.
    pub via_hub: bool,
}

impl MeshSpec {
    /// Reads and checks a mesh file.
    pub fn parse(text: &str) -> Result<Self, PlanError> {
        let file: MeshFile = toml::from_str(text).map_err(|e| PlanError::Syntax(e.to_string()))?;
        let net = file.network;
        if net.name.is_empty() {
            return Err(PlanError::Invalid("network.name is empty".into()));
        }
        check_interface_name(&net.interface)?;
        if net.mtu < MIN_TUNNEL_MTU {
            return Err(PlanError::Invalid(format!(
                "network.mtu {} is below {MIN_TUNNEL_MTU}, the least IPv6 allows",
                net.mtu
            )));
        }
        if net.cidr != net.cidr.trunc() {
            return Err(PlanError::Invalid(format!(
                "network.cidr {} has host bits set; did you mean {}?",
                net.cidr,
                net.cidr.trunc()
            )));
        }

        let mut names = HashSet::new();
        let mut keys: BTreeMap<PublicKey, &str> = BTreeMap::new();
        let mut nodes = Vec::with_capacity(file.nodes.len());
        for n in &file.nodes {
            check_node_name(&n.name)?;
            if !names.insert(n.name.as_str()) {
                return Err(PlanError::Invalid(format!(
                    "node {:?} is defined twice",
                    n.name
                )));
            }
            if let Some(key) = n.public_key
                && let Some(other) = keys.insert(key, &n.name)
            {
                return Err(PlanError::Invalid(format!(
                    "nodes {other:?} and {:?} have the same public_key",
                    n.name
                )));
            }
            let listen_port = n.listen_port.unwrap_or(net.listen_port);
            let endpoint = n
                .endpoint
                .as_deref()
                .map(|e| parse_endpoint(&n.name, e, listen_port))
                .transpose()?;
            let mtu = match n.underlay_mtu {
                None => net.mtu,
                Some(u) if u >= MIN_TUNNEL_MTU + WIREGUARD_OVERHEAD => u - WIREGUARD_OVERHEAD,
                Some(u) => {
                    return Err(PlanError::Invalid(format!(
                        "node {:?}: underlay_mtu {u} leaves less than {MIN_TUNNEL_MTU} \
                         inside the tunnel (WireGuard takes {WIREGUARD_OVERHEAD})",
                        n.name
                    )));
                }
            };
            if let Some(addr) = n.address {
                if !net.cidr.contains(&addr) {
                    return Err(PlanError::Invalid(format!(
                        "node {:?}: address {addr} is outside network.cidr {}",
                        n.name, net.cidr
                    )));
                }
                if !super::compile::is_host_address(&net.cidr, addr) {
                    return Err(PlanError::Invalid(format!(
                        "node {:?}: address {addr} is the network or broadcast address of {}",
                        n.name, net.cidr
                    )));
                }
            }
            nodes.push(NodeSpec {
                name: n.name.clone(),
                endpoint,
                address: n.address,
                public_key: n.public_key,
                listen_port,
                mtu,
                hub: n.hub.clone(),
                via_hub: n.via_hub,
            });
        }
        if nodes.is_empty() {
            return Err(PlanError::Invalid("the mesh has no [[node]]".into()));
        }

        let mut seen_hubs = HashSet::new();
        for hub in &net.hubs {
            let node = nodes.iter().find(|n| &n.name == hub).ok_or_else(|| {
                PlanError::Invalid(format!("network.hubs names {hub:?}, which is not a node"))
            })?;
            if !seen_hubs.insert(hub) {
                return Err(PlanError::Invalid(format!(
                    "network.hubs names {hub:?} twice"
                )));
            }
            if node.endpoint.is_none() {
                return Err(PlanError::Invalid(format!(
                    "hub {hub:?} has no endpoint: nodes behind NAT could not reach it"
                )));
            }
        }
        for n in &nodes {
            if n.via_hub && net.hubs.contains(&n.name) {
                return Err(PlanError::Invalid(format!(
                    "node {:?} is a hub and cannot also be via_hub",
                    n.name
                )));
            }
            if n.via_hub && net.hubs.is_empty() {
                return Err(PlanError::Unroutable(format!(
                    "node {:?} is via_hub but network.hubs is empty",
                    n.name
                )));
            }
            if let Some(hub) = &n.hub
                && !net.hubs.contains(hub)
            {
                return Err(PlanError::Invalid(format!(
                    "node {:?}: hub {hub:?} is not in network.hubs",
                    n.name
                )));
            }
        }
        let mut used = HashSet::new();
        for n in &nodes {
            if let Some(addr) = n.address
                && !used.insert(addr)
            {
                return Err(PlanError::Invalid(format!(
                    "address {addr} is given to two nodes"
                )));
            }
        }

        Ok(MeshSpec {
            name: net.name,
            cidr: net.cidr,
            keepalive: net.keepalive,
            topology: net.topology,
            hubs: net.hubs,
            interface: net.interface,
            nodes,
        })
    }
}

/// Node names become file names (`<node>.conf`, `keys/<node>.key`) and
/// appear in shell scripts, so they are kept to a safe alphabet.
fn check_node_name(name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(PlanError::Invalid(format!(
            "node name {name:?}: use 1 to 63 letters, digits, '-' or '_', not starting with '-'"
        )))
    }
}

/// Linux interface names: at most 15 bytes, no '/', no whitespace.
fn check_interface_name(name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(PlanError::Invalid(format!(
            "network.interface {name:?}: use 1 to 15 letters, digits, '-', '_' or '.'"
        )))
    }
}

/// `HOST:PORT`, `[IPv6]:PORT`, or a bare address or host that takes the
/// node's listen port.
fn parse_endpoint(node: &str, text: &str, listen_port: u16) -> Result<Endpoint, PlanError> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Endpoint::Addr((ip, listen_port).into()));
    }
    match text.parse::<Endpoint>() {
        Ok(e) => Ok(e),
        Err(first) => format!("{text}:{listen_port}")
            .parse()
            .map_err(|_| PlanError::Invalid(format!("node {node:?}: endpoint {text:?}: {first}"))),
    }
}
