//! The mesh planner: a declarative mesh file in, every node's wg-quick file
//! (and host setup script) out, for a full mesh or a hub-and-spoke network.
//!
//! [`MeshSpec::parse`] checks the file, [`compile`] decides addresses and
//! peers and proves that every node reaches every other (see [`routes`]),
//! and [`Plan::render_config`] writes one node's file with the keys the
//! caller loaded or generated.

mod compile;
mod mesh_file;
mod render;
pub mod routes;
mod setup_script;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::key::{PrivateKey, PublicKey};
use crate::wgquick::Endpoint;

pub use compile::compile;
pub use mesh_file::{MIN_TUNNEL_MTU, MeshSpec, NodeSpec, Topology, WIREGUARD_OVERHEAD};
pub use render::RenderOptions;

/// Why a mesh cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The file is not valid TOML or does not have the mesh file's shape.
    #[error("{0}")]
    Syntax(String),
    /// A field is wrong on its own or against another.
    #[error("{0}")]
    Invalid(String),
    /// The nodes cannot all reach each other with this topology.
    #[error("cannot route: {0}")]
    Unroutable(String),
    #[error("no key for node {0:?}")]
    MissingKey(String),
}

/// Every node's part in the mesh. Holds no private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub name: String,
    pub cidr: IpNet,
    pub topology: Topology,
    pub interface: String,
    pub hubs: Vec<String>,
    pub nodes: Vec<NodePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePlan {
    pub name: String,
    pub address: IpAddr,
    pub endpoint: Option<Endpoint>,
    pub listen_port: u16,
    pub mtu: u16,
    /// Known when the mesh file gives it; otherwise it comes with the keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<PublicKey>,
    /// Hubs forward between their peers.
    pub is_hub: bool,
    pub peers: Vec<PeerPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerPlan {
    /// The peer node's name.
    pub node: String,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<Endpoint>,
    pub keepalive: Option<u16>,
    /// Nodes reached through this peer (it is their hub), in AllowedIPs order.
    pub via: Vec<String>,
}

impl Plan {
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// [`Plan::node`], as an error when there is no such node.
    pub fn existing_node(&self, name: &str) -> Result<&NodePlan, PlanError> {
        self.node(name)
            .ok_or_else(|| PlanError::Invalid(format!("no node {name:?}")))
    }

    /// Tunnels in the plan: each peering counted once.
    pub fn tunnels(&self) -> usize {
        self.nodes.iter().map(|n| n.peers.len()).sum::<usize>() / 2
    }

    /// N·(N−1)/2: the tunnels of a complete full mesh of these nodes.
    pub fn full_mesh_tunnels(&self) -> usize {
        let n = self.nodes.len();
        n * n.saturating_sub(1) / 2
    }
}

/// A node's key as the renderer gets it.
#[derive(Debug, Clone)]
pub enum NodeKey {
    /// Made by the planner; goes into the node's file (or its key file).
    Private(PrivateKey),
    /// Made on the node and never left it: the file gets a placeholder.
    PublicOnly(PublicKey),
}

impl NodeKey {
    pub fn public_key(&self) -> PublicKey {
        match self {
            NodeKey::Private(k) => k.public_key(),
            NodeKey::PublicOnly(p) => *p,
        }
    }
}

#[cfg(test)]
mod tests;
