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
//! | admin | `GET /audit?after=ID&limit=N` | → [`AuditPage`] of [`AuditEntry`]s |
//! | admin | `GET,POST /relays`, `DELETE /relays/{id}` | [`CreateRelay`] → [`RelayCreated`] / [`RelayInfo`] |
//! | relay | `GET /relay/members` | → [`RelayMembers`] |
//!
//! "node" routes take `Authorization: Bearer <node credential>` (from
//! enrolment), "admin" routes an admin API token, "relay" routes a relay
//! token (from `POST /relays`). Errors are
//! [`ApiErrorBody`] with 4xx/5xx.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateNetwork {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::IpNetText))]
    #[serde(deserialize_with = "crate::schema::deserialize_ip_net")]
    pub overlay: IpNet,
    #[serde(default)]
    pub topology: Topology,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NetworkInfo {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::IpNetText))]
    pub overlay: IpNet,
    pub topology: Topology,
    pub nodes: u64,
    pub created_at: i64,
}

/// `POST /enroll/challenge`: a one-use challenge, valid for
/// [`ENROLL_CHALLENGE_SECS`], that an enrolment must answer to prove it
/// holds the private key of the public key it enrols.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollChallenge {
    pub id: String,
    /// A fresh X25519 key of the server's for this challenge only.
    pub server_key: PublicKey,
}

/// How long a challenge can be answered.
pub const ENROLL_CHALLENGE_SECS: u64 = 60;

/// The proof of key possession an enrolment carries: a keyed BLAKE2s MAC,
/// under BLAKE2s("wgmesh enroll v1" ‖ X25519(node, challenge key)), of
/// the challenge id, the setup key, the public key and the name. Only the
/// holder of the node's private key (or of the challenge's) can make it,
/// and it binds everything the enrolment asks for. `None` for a
/// challenge key that gives no shared secret.
pub fn enroll_proof(
    node: &crate::key::PrivateKey,
    challenge: &EnrollChallenge,
    setup_key: &str,
    name: &str,
) -> Option<String> {
    let secret = x25519_dalek::StaticSecret::from(*node.as_bytes());
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(
        *challenge.server_key.as_bytes(),
    ));
    if !shared.was_contributory() {
        return None;
    }
    let mac = proof_mac(
        shared.as_bytes(),
        &challenge.id,
        setup_key,
        &node.public_key(),
        name,
    );
    Some(base64::engine::general_purpose::STANDARD.encode(mac))
}

/// Checks a proof with the challenge's private key (the server's side).
pub fn verify_enroll_proof(
    challenge_key: &crate::key::PrivateKey,
    challenge_id: &str,
    req: &EnrollRequest,
) -> bool {
    let secret = x25519_dalek::StaticSecret::from(*challenge_key.as_bytes());
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*req.public_key.as_bytes()));
    if !shared.was_contributory() {
        return false;
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(&req.proof) else {
        return false;
    };
    let want = proof_mac(
        shared.as_bytes(),
        challenge_id,
        &req.setup_key,
        &req.public_key,
        &req.name,
    );
    // Constant time: the comparison must not tell how much matched.
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn proof_mac(
    shared: &[u8; 32],
    id: &str,
    setup_key: &str,
    key: &PublicKey,
    name: &str,
) -> [u8; 32] {
    use blake2::Digest;
    use blake2::digest::{KeyInit, Mac};
    let k: [u8; 32] = blake2::Blake2s256::new()
        .chain_update(b"wgmesh enroll v1")
        .chain_update(shared)
        .finalize()
        .into();
    let mut mac = <blake2::Blake2sMac256 as KeyInit>::new_from_slice(&k)
        .expect("invariant: 32 bytes is a valid BLAKE2s key length");
    // Length-prefixed, so that no two different requests make one message.
    for part in [
        id.as_bytes(),
        setup_key.as_bytes(),
        key.as_bytes(),
        name.as_bytes(),
    ] {
        mac.update(&(part.len() as u32).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    pub setup_key: String,
    pub public_key: PublicKey,
    /// The id of the challenge answered ([`EnrollChallenge`]).
    pub challenge: String,
    /// [`enroll_proof`] for that challenge.
    pub proof: String,
    /// The node's name in the network (a DNS label); the server refuses a
    /// name another key holds.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    #[serde(default)]
    pub endpoints: EndpointReport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    pub node: NodeInfo,
    /// Shown once: the node's bearer secret for the node routes.
    pub credential: String,
    pub map: NetworkMap,
}

/// Where a node can be reached on the underlay.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EndpointReport {
    /// Its interface addresses with the engine's UDP port.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::SocketAddrText>, max_items = 64))]
    pub local: Vec<SocketAddr>,
    /// What a STUN server saw as the source of the engine's socket.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::SocketAddrText>))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeInfo {
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub network: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    pub public_key: PublicKey,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::IpAddrText))]
    pub address: IpAddr,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::NameText>))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateNode {
    #[serde(default)]
    pub hub: Option<bool>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Vec<crate::schema::NameText>>))]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub via_hub: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSetupKey {
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub network: String,
    /// Usable by any number of nodes (up to `usage_limit`) rather than one.
    #[serde(default)]
    pub reusable: bool,
    /// Seconds from now; none for no expiry.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub expires_in: Option<i64>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub usage_limit: Option<i64>,
    /// Groups every node enrolled with it joins.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::NameText>))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetupKeyInfo {
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub network: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    pub reusable: bool,
    pub expires_at: Option<i64>,
    pub usage_limit: Option<i64>,
    pub used: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::NameText>))]
    pub groups: Vec<String>,
    pub hub: bool,
    #[serde(default)]
    pub via_hub: bool,
    pub revoked: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetupKeyCreated {
    pub info: SetupKeyInfo,
    /// Shown once.
    pub key: String,
}

/// A relay to register with the server (server-wide: every network's
/// nodes may use it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateRelay {
    /// A DNS label, unique among the relays.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    /// The relay's static X25519 key (`wgmesh relay pubkey`).
    pub public_key: PublicKey,
    /// Where nodes send relay frames over UDP (the same port answers STUN).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::SocketAddrText))]
    pub udp: SocketAddr,
    /// The WebSocket URL for networks that block UDP, e.g.
    /// `wss://relay.example/relay`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::WsUrlText>))]
    pub ws_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayInfo {
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::NameText))]
    pub name: String,
    pub public_key: PublicKey,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::SocketAddrText))]
    pub udp: SocketAddr,
    pub ws_url: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayCreated {
    pub info: RelayInfo,
    /// Shown once: the relay's bearer secret for `GET /relay/members`.
    pub token: String,
}

/// The nodes a relay serves: every enrolled node's public key (the relay's
/// `--server` poll, docs/relay.md "The members contract").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RelayMembers {
    pub public_keys: Vec<PublicKey>,
}

/// `GET /audit`: a page of the audit log, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// At most `limit` entries with ids above `after`, by id.
    pub entries: Vec<AuditEntry>,
    /// More entries follow this page: ask again with `after=next_after`.
    pub truncated: bool,
    /// The `after` for the next page: the last entry's id (the request's
    /// `after` when the page is empty).
    pub next_after: i64,
}

/// Most audit entries one page holds, and the default.
pub const AUDIT_PAGE_MAX: i64 = 1000;
pub const AUDIT_PAGE_DEFAULT: i64 = 100;

/// One audited change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    /// Machine-readable, e.g. `unauthorized`, `not_found`, `conflict`.
    pub error: String,
    /// For a person.
    pub message: String,
    /// The request field a `bad_request` or `conflict` is about, where
    /// there is one (e.g. `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Set on `internal` (500) and `unavailable` (503) errors: the same
    /// ID is in the server's log line with the cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
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

#[cfg(test)]
mod proof_tests {
    use super::*;
    use crate::key::PrivateKey;

    #[test]
    fn a_proof_verifies_only_for_its_key_challenge_and_request() {
        let node = PrivateKey::from_random([1; 32]);
        let server = PrivateKey::from_random([2; 32]);
        let ch = EnrollChallenge {
            id: "c1".into(),
            server_key: server.public_key(),
        };
        let proof = enroll_proof(&node, &ch, "wgs_k", "lab").unwrap();
        let req = EnrollRequest {
            setup_key: "wgs_k".into(),
            public_key: node.public_key(),
            challenge: "c1".into(),
            proof: proof.clone(),
            name: "lab".into(),
            endpoints: EndpointReport::default(),
        };
        assert!(verify_enroll_proof(&server, "c1", &req));
        // Another challenge key, id, name, setup key or public key: no.
        assert!(!verify_enroll_proof(
            &PrivateKey::from_random([3; 32]),
            "c1",
            &req
        ));
        assert!(!verify_enroll_proof(&server, "c2", &req));
        for change in [
            |r: &mut EnrollRequest| r.name = "lax".into(),
            |r: &mut EnrollRequest| r.setup_key = "wgs_other".into(),
            |r: &mut EnrollRequest| r.public_key = PrivateKey::from_random([4; 32]).public_key(),
            |r: &mut EnrollRequest| r.proof = "not base64!".into(),
            |r: &mut EnrollRequest| r.proof = String::new(),
        ] {
            let mut r = req.clone();
            change(&mut r);
            assert!(!verify_enroll_proof(&server, "c1", &r), "{r:?}");
        }
        // A low-order challenge key gives no proof.
        let weak = EnrollChallenge {
            id: "c".into(),
            server_key: PublicKey::from_bytes([0; 32]),
        };
        assert_eq!(enroll_proof(&node, &weak, "k", "n"), None);
    }
}
