//! The control API's request and response bodies, shared by the
//! coordination server, the agent and the admin CLI (JSON over HTTPS).
//!
//! Routes (all under `/api/v1`; the server's OpenAPI document at
//! `/api/v1/openapi.json` is the reference):
//!
//! | who   | route | body → reply |
//! |-------|-------|--------------|
//! | agent | `POST /enroll` (setup key in the body) | [`EnrollRequest`] → [`EnrollResponse`] |
//! | node  | `GET /node/map` | → [`crate::netmap::NetworkMap`] |
//! | node  | `GET /node/map/stream` | server-sent events, each `data:` a [`crate::netmap::MapUpdate`] |
//! | node  | `POST /node/endpoints` | [`EndpointReport`] → 204 |
//! | admin | `GET,POST /networks`, `GET /networks/{network}` | [`CreateNetwork`] → [`NetworkInfo`] |
//! | admin | `GET,PUT /networks/{network}/policy` | [`crate::netmap::policy::Policy`] |
//! | admin | `GET /nodes`, `GET,PATCH,DELETE /nodes/{id}` | [`UpdateNode`] → [`NodeInfo`] |
//! | admin | `GET,POST /setup-keys`, `DELETE /setup-keys/{id}` | [`CreateSetupKey`] → [`SetupKeyCreated`] / [`SetupKeyInfo`] |
//! | admin | `GET /audit?after=ID&limit=N` | → [`AuditEntry`]s |
//! | admin | `GET,POST /relays`, `DELETE /relays/{id}` | [`CreateRelay`] → [`RelayCreated`] / [`RelayInfo`] |
//! | relay | `GET /relay/members` | → [`RelayMembers`] |
//!
//! "node" routes take `Authorization: Bearer <node credential>` (from
//! enrolment), "admin" routes an admin API token, "relay" routes a relay
//! token (from `POST /relays`). Errors are
//! [`ApiErrorBody`] with 4xx/5xx.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::key::PublicKey;
use crate::netmap::NetworkMap;

/// Prefixes that tell the kinds of bearer secret apart at a glance (and
/// in secret scanners).
pub const ADMIN_TOKEN_PREFIX: &str = "wga_";
pub const NODE_CREDENTIAL_PREFIX: &str = "wgn_";
pub const SETUP_KEY_PREFIX: &str = "wgs_";
pub const RELAY_TOKEN_PREFIX: &str = "wgr_";

/// How a network's nodes connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// Every pair directly where one side is reachable, through a hub
    /// where both are behind NAT.
    #[default]
    FullMesh,
    /// Nodes that are not hubs reach each other only through a hub.
    HubAndSpoke,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    pub name: String,
    pub overlay: IpNet,
    #[serde(default)]
    pub topology: Topology,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub overlay: IpNet,
    pub topology: Topology,
    pub nodes: u64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub setup_key: String,
    pub public_key: PublicKey,
    /// The node's name in the network (a DNS label); the server refuses a
    /// name another key holds.
    pub name: String,
    #[serde(default)]
    pub endpoints: EndpointReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub node: NodeInfo,
    /// Shown once: the node's bearer secret for the node routes.
    pub credential: String,
    pub map: NetworkMap,
}

/// Where a node can be reached on the underlay.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointReport {
    /// Its interface addresses with the engine's UDP port.
    #[serde(default)]
    pub local: Vec<SocketAddr>,
    /// What a STUN server saw as the source of the engine's socket.
    #[serde(default)]
    pub reflexive: Option<SocketAddr>,
    /// How the node's NAT maps, from asking two STUN servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatType>,
}

/// What a node learns of its NAT by asking two STUN servers (at different
/// addresses or ports) from the engine's socket (RFC 4787 §4.1, the
/// mapping half; filtering cannot be seen this way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatType {
    /// No NAT: the reflexive address is one of the node's own.
    Open,
    /// Both servers saw the same address: the mapping does not depend on
    /// the destination (full cone, address- or port-restricted).
    EndpointIndependent,
    /// Each server saw another port: the mapping depends on the
    /// destination ("symmetric"); hole punching fails against a peer that
    /// filters by port.
    EndpointDependent,
    /// Neither server answered: UDP seems blocked.
    NoUdp,
}

impl NatType {
    /// From the node's own addresses and what two STUN servers saw
    /// (`None`: no answer); `None` when it cannot be told.
    pub fn classify(
        local: &[SocketAddr],
        first: Option<SocketAddr>,
        second: Option<SocketAddr>,
    ) -> Option<NatType> {
        match (first, second) {
            (None, None) => Some(NatType::NoUdp),
            (Some(a), _) | (None, Some(a)) if local.contains(&a) => Some(NatType::Open),
            (Some(a), Some(b)) if a == b => Some(NatType::EndpointIndependent),
            (Some(_), Some(_)) => Some(NatType::EndpointDependent),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: i64,
    pub network: String,
    pub name: String,
    pub public_key: PublicKey,
    pub address: IpAddr,
    pub groups: Vec<String>,
    pub hub: bool,
    /// Reaches the other non-hub nodes only through the primary hub.
    #[serde(default)]
    pub via_hub: bool,
    pub endpoints: EndpointReport,
    /// No NAT in front of it: its reflexive address is one of its own.
    pub reachable: bool,
    /// Holds a map stream open now.
    pub online: bool,
    /// Unix seconds.
    pub last_seen: Option<i64>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateNode {
    #[serde(default)]
    pub hub: Option<bool>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub via_hub: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSetupKey {
    pub network: String,
    /// Usable by any number of nodes (up to `usage_limit`) rather than one.
    #[serde(default)]
    pub reusable: bool,
    /// Seconds from now; none for no expiry.
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub usage_limit: Option<i64>,
    /// Groups every node enrolled with it joins.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Enrolled nodes become hubs.
    #[serde(default)]
    pub hub: bool,
    /// Enrolled nodes reach the other non-hub nodes only through the
    /// primary hub (as the planner's `via_hub`).
    #[serde(default)]
    pub via_hub: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupKeyInfo {
    pub id: i64,
    pub network: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub reusable: bool,
    pub expires_at: Option<i64>,
    pub usage_limit: Option<i64>,
    pub used: i64,
    pub groups: Vec<String>,
    pub hub: bool,
    #[serde(default)]
    pub via_hub: bool,
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupKeyCreated {
    pub info: SetupKeyInfo,
    /// Shown once.
    pub key: String,
}

/// A relay to register with the server (server-wide: every network's
/// nodes may use it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRelay {
    /// A DNS label, unique among the relays.
    pub name: String,
    /// The relay's static X25519 key (`wgmesh relay pubkey`).
    pub public_key: PublicKey,
    /// Where nodes send relay frames over UDP (the same port answers STUN).
    pub udp: SocketAddr,
    /// The WebSocket URL for networks that block UDP, e.g.
    /// `wss://relay.example/relay`.
    #[serde(default)]
    pub ws_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayInfo {
    pub id: i64,
    pub name: String,
    pub public_key: PublicKey,
    pub udp: SocketAddr,
    pub ws_url: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayCreated {
    pub info: RelayInfo,
    /// Shown once: the relay's bearer secret for `GET /relay/members`.
    pub token: String,
}

/// The nodes a relay serves: every enrolled node's public key (the relay's
/// `--server` poll, docs/relay.md "The members contract").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RelayMembers {
    pub public_keys: Vec<PublicKey>,
}

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    /// `admin:<token id>`, `node:<id>`, `setup-key:<id>` or `console`.
    pub actor: String,
    /// e.g. `node.enroll`, `policy.set`, `setup_key.revoke`.
    pub action: String,
    /// What was changed, e.g. `node:4`.
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// The body of every error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// Machine-readable, e.g. `unauthorized`, `not_found`, `conflict`.
    pub error: String,
    /// For a person.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_types_from_two_stun_answers() {
        let own: SocketAddr = "192.0.2.5:51820".parse().unwrap();
        let a: SocketAddr = "198.51.100.10:51820".parse().unwrap();
        let b: SocketAddr = "198.51.100.10:40001".parse().unwrap();
        let c = NatType::classify;
        assert_eq!(c(&[own], Some(own), Some(own)), Some(NatType::Open));
        assert_eq!(c(&[own], Some(own), None), Some(NatType::Open));
        assert_eq!(
            c(&[own], Some(a), Some(a)),
            Some(NatType::EndpointIndependent)
        );
        assert_eq!(
            c(&[own], Some(a), Some(b)),
            Some(NatType::EndpointDependent)
        );
        assert_eq!(c(&[own], None, None), Some(NatType::NoUdp));
        // One answer from behind a NAT says nothing about the mapping.
        assert_eq!(c(&[own], Some(a), None), None);
        assert_eq!(c(&[own], None, Some(a)), None);
        // The report carries it only when known.
        let r = EndpointReport::default();
        assert!(!serde_json::to_string(&r).unwrap().contains("nat"));
    }
}
