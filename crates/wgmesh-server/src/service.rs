//! Every change the server makes, as one function each: check, write the
//! change and its audit entry in one database transaction, commit, then
//! update the in-memory world and push the resulting map changes.
//!
//! The world's mutex is held from the check to the push, so changes are
//! applied one at a time in commit order and the world never runs ahead
//! of, or behind, the database.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;
use sqlx::Row;
use tokio::sync::{Mutex, MutexGuard, mpsc};
use wgmesh_core::control::{
    self, AuditEntry, AuditPage, CreateNetwork, CreateRelay, CreateSetupKey, EndpointReport,
    EnrollChallenge, EnrollRequest, EnrollResponse, NetworkInfo, NodeInfo, RelayCreated, RelayInfo,
    RelayMembers, SetupKeyCreated, SetupKeyInfo, Topology, UpdateNode,
};
use wgmesh_core::key::PrivateKey;
use wgmesh_core::netmap::policy::Policy;
use wgmesh_core::netmap::{MapUpdate, NetworkMap};

use crate::clock::{unix_millis, unix_secs};
use crate::db::{Db, DbError, Fault, WriteTx};
use crate::metrics::Metrics;
use crate::secrets;
use crate::world::{AdminToken, Network, Node, Relay, SetupKey, World};

/// Why a request was refused. The API turns each into a status code and
/// a message that never carries internals ([`crate::api::error`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness clash; `field` names the request field where known.
    #[error("{message}")]
    Conflict {
        field: Option<String>,
        message: String,
    },
    /// A setup key that does not exist, is revoked, expired or used up.
    #[error("{0}")]
    SetupKeyRefused(&'static str),
    /// The enrolment did not prove it holds the key it enrols.
    #[error("{0}")]
    ProofRefused(&'static str),
    /// Too many enrolment challenges pending; try again shortly.
    #[error("too many enrolments at once; try again shortly")]
    Busy,
    /// The database cannot take the request now (disk full, read-only,
    /// connection lost, busy): 503 until it passes.
    #[error("{reason}")]
    Unavailable {
        reason: &'static str,
        source: DbError,
    },
    #[error(transparent)]
    Db(DbError),
    #[error("randomness unavailable: {0}")]
    Random(getrandom::Error),
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        match crate::db::fault(&e) {
            Fault::Unavailable(reason) => ServiceError::Unavailable {
                reason,
                source: DbError::Sql(e),
            },
            Fault::Unique { field } => ServiceError::Conflict {
                message: match &field {
                    Some(f) => format!("another record has this {f}"),
                    None => "another record has these values".to_owned(),
                },
                field,
            },
            Fault::Other => ServiceError::Db(DbError::Sql(e)),
        }
    }
}

impl From<DbError> for ServiceError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sql(e) => e.into(),
            other => ServiceError::Db(other),
        }
    }
}

impl ServiceError {
    /// A uniqueness clash on `field`.
    fn conflict(field: &str, message: String) -> Self {
        ServiceError::Conflict {
            field: Some(field.to_owned()),
            message,
        }
    }
}

/// Who made a change, for the audit log.
#[derive(Debug, Clone)]
pub enum Actor {
    Admin {
        token_id: i64,
    },
    Node {
        id: i64,
    },
    SetupKey {
        id: i64,
    },
    /// `wgmesh server init` on the server host itself.
    Console,
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Admin { token_id } => write!(f, "admin:{token_id}"),
            Actor::Node { id } => write!(f, "node:{id}"),
            Actor::SetupKey { id } => write!(f, "setup-key:{id}"),
            Actor::Console => f.write_str("console"),
        }
    }
}

/// Settings that are not in the database.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// A removed node's address is not given to another node for this
    /// long (seconds), so stale firewall rules and caches elsewhere do
    /// not grant its rights to a newcomer.
    pub address_grace: i64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            address_grace: 24 * 3600,
        }
    }
}

#[derive(Debug)]
pub struct Service {
    db: Db,
    world: Mutex<World>,
    pub metrics: Metrics,
    config: ServiceConfig,
    /// Pending enrolment challenges: id → (the challenge's private key,
    /// when it was made). Each answers one enrolment.
    challenges: std::sync::Mutex<HashMap<String, (PrivateKey, std::time::Instant)>>,
}

/// Most enrolment challenges pending at once (each is 32 bytes and lives
/// a minute).
const MAX_CHALLENGES: usize = 100_000;

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("invariant: control types serialise to JSON")
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, ServiceError> {
    serde_json::from_str(text)
        .map_err(|e| ServiceError::BadRequest(format!("stored {what} is unreadable: {e}")))
}

async fn audit(
    tx: &mut WriteTx,
    actor: &Actor,
    action: &str,
    target: &str,
    before: Option<String>,
    after: Option<String>,
) -> Result<(), ServiceError> {
    let id: i64 = sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(unix_millis())
    .bind(actor.to_string())
    .bind(action)
    .bind(target)
    .bind(before)
    .bind(after)
    .fetch_one(&mut **tx)
    .await?
    .try_get("id")?;
    tx.set_audit_id(id);
    Ok(())
}

/// A DNS label: what node, network and group names may be.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !name.starts_with('-')
}

fn check_groups(groups: &[String]) -> Result<(), ServiceError> {
    match groups.iter().find(|g| !valid_name(g)) {
        Some(g) => Err(ServiceError::BadRequest(format!(
            "invalid group name {g:?}: letters, digits, '-' and '_', at most 63"
        ))),
        None => Ok(()),
    }
}

fn bool_i64(b: bool) -> i64 {
    i64::from(b)
}

impl Service {
    /// Loads the world from `db`.
    pub async fn load(db: Db, config: ServiceConfig) -> Result<Arc<Self>, ServiceError> {
        let mut world = World::default();
        for r in sqlx::query("SELECT id, name, overlay, topology, policy, created_at FROM networks")
            .fetch_all(&db.pool)
            .await?
        {
            let overlay: String = r.try_get("overlay")?;
            let topology: String = r.try_get("topology")?;
            let policy: String = r.try_get("policy")?;
            let net = Network {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                overlay: overlay
                    .parse()
                    .map_err(|_| ServiceError::BadRequest(format!("stored overlay {overlay:?}")))?,
                topology: parse_json(&format!("\"{topology}\""), "topology")?,
                policy: parse_json(&policy, "policy")?,
                created_at: r.try_get("created_at")?,
            };
            world.networks.insert(net.id, net);
        }
        for r in sqlx::query(
            "SELECT id, network_id, name, public_key, address, groups_json, hub, via_hub, endpoints_json, credential_hash, last_seen, created_at, expires_at FROM nodes",
        )
        .fetch_all(&db.pool)
        .await?
        {
            let key: String = r.try_get("public_key")?;
            let address: String = r.try_get("address")?;
            let mut node = Node::new(
                r.try_get("id")?,
                r.try_get("network_id")?,
                r.try_get("name")?,
                key.parse()
                    .map_err(|_| ServiceError::BadRequest(format!("stored key {key:?}")))?,
                address
                    .parse()
                    .map_err(|_| ServiceError::BadRequest(format!("stored address {address:?}")))?,
                parse_json(&r.try_get::<String, _>("groups_json")?, "groups")?,
                r.try_get::<i64, _>("hub")? != 0,
                parse_json(&r.try_get::<String, _>("endpoints_json")?, "endpoints")?,
                r.try_get("credential_hash")?,
                r.try_get("created_at")?,
            );
            node.via_hub = r.try_get::<i64, _>("via_hub")? != 0;
            node.last_seen = r.try_get("last_seen")?;
            node.expires_at = r.try_get("expires_at")?;
            world.nodes.insert(node.id, node);
        }
        for r in sqlx::query(
            "SELECT id, network_id, key_hash, prefix, reusable, expires_at, usage_limit, used, groups_json, hub, via_hub, revoked, created_at FROM setup_keys",
        )
        .fetch_all(&db.pool)
        .await?
        {
            let k = SetupKey {
                id: r.try_get("id")?,
                network_id: r.try_get("network_id")?,
                key_hash: r.try_get("key_hash")?,
                prefix: r.try_get("prefix")?,
                reusable: r.try_get::<i64, _>("reusable")? != 0,
                expires_at: r.try_get("expires_at")?,
                usage_limit: r.try_get("usage_limit")?,
                used: r.try_get("used")?,
                groups: parse_json(&r.try_get::<String, _>("groups_json")?, "groups")?,
                hub: r.try_get::<i64, _>("hub")? != 0,
                via_hub: r.try_get::<i64, _>("via_hub")? != 0,
                revoked: r.try_get::<i64, _>("revoked")? != 0,
                created_at: r.try_get("created_at")?,
            };
            world.setup_keys.insert(k.id, k);
        }
        for r in sqlx::query("SELECT id, name, token_hash FROM admin_tokens WHERE revoked = 0")
            .fetch_all(&db.pool)
            .await?
        {
            world.admin_tokens.insert(
                r.try_get("token_hash")?,
                AdminToken {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                },
            );
        }
        for r in sqlx::query("SELECT network_id, address, released_at FROM released_addresses")
            .fetch_all(&db.pool)
            .await?
        {
            let address: String = r.try_get("address")?;
            if let Ok(ip) = address.parse::<IpAddr>() {
                world
                    .released
                    .insert((r.try_get("network_id")?, ip), r.try_get("released_at")?);
            }
        }
        for r in sqlx::query(
            "SELECT id, name, token_hash, public_key, udp, ws_url, created_at FROM relays",
        )
        .fetch_all(&db.pool)
        .await?
        {
            let key: String = r.try_get("public_key")?;
            let udp: String = r.try_get("udp")?;
            let relay = Relay {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                token_hash: r.try_get("token_hash")?,
                public_key: key
                    .parse()
                    .map_err(|_| ServiceError::BadRequest(format!("stored key {key:?}")))?,
                udp: udp
                    .parse()
                    .map_err(|_| ServiceError::BadRequest(format!("stored address {udp:?}")))?,
                ws_url: r.try_get("ws_url")?,
                created_at: r.try_get("created_at")?,
            };
            world.relays.insert(relay.id, relay);
        }
        world.reindex();
        world.start_versions_at(u64::try_from(unix_millis()).unwrap_or(0));
        let metrics = Metrics::default();
        Ok(Arc::new(Self {
            db,
            world: Mutex::new(world),
            metrics,
            config,
            challenges: std::sync::Mutex::default(),
        }))
    }

    pub async fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().await
    }

    /// Creates an admin token (`wgmesh server init`, or an admin asking
    /// for another) and returns the secret, which is not stored.
    pub async fn create_admin_token(
        &self,
        actor: &Actor,
        name: &str,
    ) -> Result<String, ServiceError> {
        if !valid_name(name) {
            return Err(ServiceError::BadRequest(format!(
                "invalid admin token name {name:?}: letters, digits, '-' and '_', at most 63"
            )));
        }
        let mut world = self.world.lock().await;
        let secret =
            secrets::generate(control::ADMIN_TOKEN_PREFIX).map_err(ServiceError::Random)?;
        let hash = secrets::hash(&secret);
        let mut tx = self.db.begin_write().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO admin_tokens (name, token_hash, created_at, revoked) VALUES ($1, $2, $3, 0) RETURNING id",
        )
        .bind(name)
        .bind(&hash)
        .bind(unix_secs())
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        audit(
            &mut tx,
            actor,
            "admin_token.create",
            &format!("admin_token:{id}"),
            None,
            Some(json(&serde_json::json!({ "id": id, "name": name }))),
        )
        .await?;
        tx.commit(&self.db).await?;
        world.admin_tokens.insert(
            hash,
            AdminToken {
                id,
                name: name.to_owned(),
            },
        );
        Ok(secret)
    }

    pub async fn admin_by_token(&self, secret: &str) -> Option<AdminToken> {
        self.world
            .lock()
            .await
            .admin_tokens
            .get(&secrets::hash(secret))
            .cloned()
    }

    /// The node a credential belongs to, if it is valid now.
    pub async fn node_by_credential(&self, secret: &str) -> Option<i64> {
        let world = self.world.lock().await;
        let node = world.node_by_credential(&secrets::hash(secret))?;
        if node.expires_at.is_some_and(|e| unix_secs() >= e) {
            return None;
        }
        Some(node.id)
    }

    /// The relay a token belongs to.
    pub async fn relay_by_token(&self, secret: &str) -> Option<i64> {
        let world = self.world.lock().await;
        world
            .relay_by_token_hash(&secrets::hash(secret))
            .map(|r| r.id)
    }

    /// Registers a relay and returns its token, which is not stored. Every
    /// connected node gets a full map listing it.
    pub async fn create_relay(
        &self,
        actor: &Actor,
        req: CreateRelay,
    ) -> Result<RelayCreated, ServiceError> {
        if !valid_name(&req.name) {
            return Err(ServiceError::BadRequest(format!(
                "invalid relay name {:?}: letters, digits, '-' and '_', at most 63",
                req.name
            )));
        }
        if req.udp.port() == 0 || req.udp.ip().is_unspecified() || req.udp.ip().is_multicast() {
            return Err(ServiceError::BadRequest(format!(
                "relay UDP address {} is not one nodes can send to",
                req.udp
            )));
        }
        if let Some(url) = req
            .ws_url
            .as_deref()
            .filter(|u| !crate::validate::ws_url_ok(u))
        {
            return Err(ServiceError::BadRequest(format!(
                "relay WebSocket URL {url:?} must be ws:// or wss:// and printable ASCII, at most 2048"
            )));
        }
        let mut world = self.world.lock().await;
        if world.relays.values().any(|r| r.name == req.name) {
            return Err(ServiceError::conflict(
                "name",
                format!("relay {:?} already exists", req.name),
            ));
        }
        if world
            .relays
            .values()
            .any(|r| r.public_key == req.public_key)
        {
            return Err(ServiceError::conflict(
                "public_key",
                format!("another relay has the key {}", req.public_key),
            ));
        }
        let secret =
            secrets::generate(control::RELAY_TOKEN_PREFIX).map_err(ServiceError::Random)?;
        let mut relay = Relay {
            id: 0,
            name: req.name,
            token_hash: secrets::hash(&secret),
            public_key: req.public_key,
            udp: req.udp,
            ws_url: req.ws_url,
            created_at: unix_secs(),
        };
        let mut tx = self.db.begin_write().await?;
        relay.id = sqlx::query(
            "INSERT INTO relays (name, token_hash, public_key, udp, ws_url, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(&relay.name)
        .bind(&relay.token_hash)
        .bind(relay.public_key.to_string())
        .bind(relay.udp.to_string())
        .bind(relay.ws_url.clone())
        .bind(relay.created_at)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        let info = relay.info();
        audit(
            &mut tx,
            actor,
            "relay.create",
            &format!("relay:{}", relay.id),
            None,
            Some(json(&info)),
        )
        .await?;
        tx.commit(&self.db).await?;
        world.relays.insert(relay.id, relay);
        let sent = world.push_full_maps();
        self.metrics.map_pushes(sent);
        Ok(RelayCreated {
            info,
            token: secret,
        })
    }

    pub async fn relays(&self) -> Vec<RelayInfo> {
        let world = self.world.lock().await;
        world.relays.values().map(Relay::info).collect()
    }

    /// Removes a relay: its token stops working at once, and every
    /// connected node gets a full map without it.
    pub async fn delete_relay(&self, actor: &Actor, id: i64) -> Result<RelayInfo, ServiceError> {
        let mut world = self.world.lock().await;
        let info = world
            .relays
            .get(&id)
            .ok_or_else(|| ServiceError::NotFound(format!("relay {id}")))?
            .info();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM relays WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            "relay.delete",
            &format!("relay:{id}"),
            Some(json(&info)),
            None,
        )
        .await?;
        tx.commit(&self.db).await?;
        world.relays.remove(&id);
        let sent = world.push_full_maps();
        self.metrics.map_pushes(sent);
        Ok(info)
    }

    /// What a relay serves: the public key of every enrolled node, of
    /// every network, sorted and without repeats (one key may be enrolled
    /// in two networks). An expired node is left out, as its credential is.
    pub async fn relay_members(&self) -> RelayMembers {
        let world = self.world.lock().await;
        let now = unix_secs();
        let mut public_keys: Vec<_> = world
            .nodes
            .values()
            .filter(|n| n.expires_at.is_none_or(|e| now < e))
            .map(|n| n.public_key)
            .collect();
        public_keys.sort();
        public_keys.dedup();
        RelayMembers { public_keys }
    }

    pub async fn create_network(
        &self,
        actor: &Actor,
        req: CreateNetwork,
    ) -> Result<NetworkInfo, ServiceError> {
        if !valid_name(&req.name) {
            return Err(ServiceError::BadRequest(format!(
                "invalid network name {:?}: letters, digits, '-' and '_', at most 63",
                req.name
            )));
        }
        let overlay = req.overlay.trunc();
        let room = match overlay {
            IpNet::V4(n) => 32 - u32::from(n.prefix_len()),
            IpNet::V6(n) => 128 - u32::from(n.prefix_len()),
        };
        if room < 2 {
            return Err(ServiceError::BadRequest(format!(
                "overlay {overlay} is too small for a network"
            )));
        }
        if let Some(why) = crate::validate::overlay_refusal(&overlay) {
            return Err(ServiceError::BadRequest(why));
        }
        let mut world = self.world.lock().await;
        if world.network_by_name(&req.name).is_some() {
            return Err(ServiceError::conflict(
                "name",
                format!("network {:?} already exists", req.name),
            ));
        }
        // Two networks on one host (one key may join both) would route
        // the shared addresses two ways.
        if let Some(other) = world
            .networks
            .values()
            .find(|n| crate::validate::overlap(&n.overlay, &overlay))
        {
            return Err(ServiceError::conflict(
                "overlay",
                format!(
                    "overlay {overlay} overlaps network {:?} ({})",
                    other.name, other.overlay
                ),
            ));
        }
        let policy = Policy::default();
        let created_at = unix_secs();
        let topology = topology_text(req.topology);
        let mut tx = self.db.begin_write().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO networks (name, overlay, topology, policy, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&req.name)
        .bind(overlay.to_string())
        .bind(topology)
        .bind(json(&policy))
        .bind(created_at)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        let net = Network {
            id,
            name: req.name.clone(),
            overlay,
            topology: req.topology,
            policy,
            created_at,
        };
        let info = world.network_info(&net);
        audit(
            &mut tx,
            actor,
            "network.create",
            &format!("network:{}", req.name),
            None,
            Some(json(&info)),
        )
        .await?;
        tx.commit(&self.db).await?;
        world.networks.insert(id, net);
        Ok(info)
    }

    pub async fn networks(&self) -> Vec<NetworkInfo> {
        let world = self.world.lock().await;
        world
            .networks
            .values()
            .map(|n| world.network_info(n))
            .collect()
    }

    pub async fn network(&self, name: &str) -> Result<NetworkInfo, ServiceError> {
        let world = self.world.lock().await;
        let net = world
            .network_by_name(name)
            .ok_or_else(|| ServiceError::NotFound(format!("network {name:?}")))?;
        Ok(world.network_info(net))
    }

    pub async fn policy(&self, network: &str) -> Result<Policy, ServiceError> {
        let world = self.world.lock().await;
        let net = world
            .network_by_name(network)
            .ok_or_else(|| ServiceError::NotFound(format!("network {network:?}")))?;
        Ok(net.policy.clone())
    }

    pub async fn set_policy(
        &self,
        actor: &Actor,
        network: &str,
        policy: Policy,
    ) -> Result<Policy, ServiceError> {
        policy
            .check()
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        let mut world = self.world.lock().await;
        let net = world
            .network_by_name(network)
            .ok_or_else(|| ServiceError::NotFound(format!("network {network:?}")))?
            .clone();
        unknown_names(&world, net.id, &policy)?;
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE networks SET policy = $1 WHERE id = $2")
            .bind(json(&policy))
            .bind(net.id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            actor,
            "policy.set",
            &format!("network:{network}"),
            Some(json(&net.policy)),
            Some(json(&policy)),
        )
        .await?;
        tx.commit(&self.db).await?;
        let before = world.before(net.id, None);
        world
            .networks
            .get_mut(&net.id)
            .expect("invariant: found above under the same lock")
            .policy = policy.clone();
        let sent = world.push_changes(before);
        self.metrics.map_pushes(sent);
        Ok(policy)
    }

    pub async fn create_setup_key(
        &self,
        actor: &Actor,
        req: CreateSetupKey,
    ) -> Result<SetupKeyCreated, ServiceError> {
        check_groups(&req.groups)?;
        if req.usage_limit.is_some_and(|l| l < 1) {
            return Err(ServiceError::BadRequest(
                "usage_limit must be at least 1".into(),
            ));
        }
        if req.expires_in.is_some_and(|s| s < 1) {
            return Err(ServiceError::BadRequest(
                "expires_in must be at least 1 second".into(),
            ));
        }
        let mut world = self.world.lock().await;
        let network_id = world
            .network_by_name(&req.network)
            .ok_or_else(|| ServiceError::NotFound(format!("network {:?}", req.network)))?
            .id;
        let secret = secrets::generate(control::SETUP_KEY_PREFIX).map_err(ServiceError::Random)?;
        let now = unix_secs();
        let mut key = SetupKey {
            id: 0,
            network_id,
            key_hash: secrets::hash(&secret),
            prefix: secrets::display_prefix(&secret),
            reusable: req.reusable,
            expires_at: req.expires_in.map(|s| now.saturating_add(s)),
            usage_limit: req.usage_limit,
            used: 0,
            groups: req.groups.clone(),
            hub: req.hub,
            via_hub: req.via_hub,
            revoked: false,
            created_at: now,
        };
        let mut tx = self.db.begin_write().await?;
        key.id = sqlx::query(
            "INSERT INTO setup_keys (network_id, key_hash, prefix, reusable, expires_at, usage_limit, used, groups_json, hub, via_hub, revoked, created_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7, $8, $9, 0, $10) RETURNING id",
        )
        .bind(network_id)
        .bind(&key.key_hash)
        .bind(&key.prefix)
        .bind(bool_i64(key.reusable))
        .bind(key.expires_at)
        .bind(key.usage_limit)
        .bind(json(&key.groups))
        .bind(bool_i64(key.hub))
        .bind(bool_i64(key.via_hub))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        let info = key.info(&req.network);
        audit(
            &mut tx,
            actor,
            "setup_key.create",
            &format!("setup_key:{}", key.id),
            None,
            Some(json(&info)),
        )
        .await?;
        tx.commit(&self.db).await?;
        world.setup_keys.insert(key.id, key);
        Ok(SetupKeyCreated { info, key: secret })
    }

    pub async fn setup_keys(&self) -> Vec<SetupKeyInfo> {
        let world = self.world.lock().await;
        world
            .setup_keys
            .values()
            .map(|k| k.info(&world.networks[&k.network_id].name))
            .collect()
    }

    pub async fn revoke_setup_key(
        &self,
        actor: &Actor,
        id: i64,
    ) -> Result<SetupKeyInfo, ServiceError> {
        let mut world = self.world.lock().await;
        let key = world
            .setup_keys
            .get(&id)
            .ok_or_else(|| ServiceError::NotFound(format!("setup key {id}")))?;
        let network = world.networks[&key.network_id].name.clone();
        let before = key.info(&network);
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE setup_keys SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let mut after = before.clone();
        after.revoked = true;
        audit(
            &mut tx,
            actor,
            "setup_key.revoke",
            &format!("setup_key:{id}"),
            Some(json(&before)),
            Some(json(&after)),
        )
        .await?;
        tx.commit(&self.db).await?;
        world
            .setup_keys
            .get_mut(&id)
            .expect("invariant: found above under the same lock")
            .revoked = true;
        Ok(after)
    }

    /// The lowest free host address of the overlay, skipping addresses
    /// still in their grace period.
    fn allocate(&self, world: &World, net: &Network) -> Option<IpAddr> {
        let now = unix_secs();
        let free = |ip: &IpAddr| {
            !world.address_in_use(net.id, *ip)
                && world
                    .released
                    .get(&(net.id, *ip))
                    .is_none_or(|at| now - at >= self.config.address_grace)
        };
        match net.overlay {
            IpNet::V4(n) => n.hosts().map(IpAddr::V4).find(free),
            // The subnet-router anycast address (all zeros) is not a host.
            IpNet::V6(n) => n.hosts().skip(1).map(IpAddr::V6).find(free),
        }
    }

    /// Enrols a node, or re-enrols the same key (same node and address, a
    /// new credential; the old one stops working).
    pub async fn enroll(&self, req: EnrollRequest) -> Result<EnrollResponse, ServiceError> {
        let result = self.enroll_inner(req).await;
        if result.is_err() {
            self.metrics.enrolment_failed();
        }
        result
    }

    /// A challenge an enrolment must answer ([`control::enroll_proof`]).
    pub fn enroll_challenge(&self) -> Result<EnrollChallenge, ServiceError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(ServiceError::Random)?;
        let key = PrivateKey::from_random(bytes);
        getrandom::fill(&mut bytes[..16]).map_err(ServiceError::Random)?;
        let id: String = bytes[..16].iter().map(|b| format!("{b:02x}")).collect();
        let challenge = EnrollChallenge {
            id: id.clone(),
            server_key: key.public_key(),
        };
        let mut pending = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        let ttl = std::time::Duration::from_secs(control::ENROLL_CHALLENGE_SECS);
        pending.retain(|_, (_, at)| at.elapsed() < ttl);
        if pending.len() >= MAX_CHALLENGES {
            return Err(ServiceError::Busy);
        }
        pending.insert(id, (key, std::time::Instant::now()));
        Ok(challenge)
    }

    /// Takes the request's challenge (once) and checks its proof.
    fn check_proof(&self, req: &EnrollRequest) -> Result<(), ServiceError> {
        let taken = self
            .challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&req.challenge);
        let ttl = std::time::Duration::from_secs(control::ENROLL_CHALLENGE_SECS);
        let Some((key, _)) = taken.filter(|(_, at)| at.elapsed() < ttl) else {
            return Err(ServiceError::ProofRefused(
                "unknown, used or expired enrolment challenge",
            ));
        };
        if !control::verify_enroll_proof(&key, &req.challenge, req) {
            return Err(ServiceError::ProofRefused(
                "the proof does not show the private key of this public key",
            ));
        }
        Ok(())
    }

    async fn enroll_inner(&self, req: EnrollRequest) -> Result<EnrollResponse, ServiceError> {
        if !valid_name(&req.name) {
            return Err(ServiceError::BadRequest(format!(
                "invalid node name {:?}: letters, digits, '-' and '_', at most 63",
                req.name
            )));
        }
        self.check_proof(&req)?;
        let mut world = self.world.lock().await;
        let now = unix_secs();
        let key = world
            .setup_key_by_hash(&secrets::hash(&req.setup_key))
            .ok_or(ServiceError::SetupKeyRefused("unknown setup key"))?
            .clone();
        let net = world.networks[&key.network_id].clone();
        let existing = world.node_by_key(net.id, &req.public_key).map(|n| n.id);
        if existing.is_none() {
            if let Some(why) = key.refusal(now) {
                return Err(ServiceError::SetupKeyRefused(why));
            }
        } else if key.revoked || key.expires_at.is_some_and(|e| now >= e) {
            return Err(ServiceError::SetupKeyRefused(
                "setup key revoked or expired",
            ));
        }
        if world
            .nodes_named(net.id, &req.name)
            .any(|n| Some(n.id) != existing)
        {
            return Err(ServiceError::conflict(
                "name",
                format!("another node of {:?} is named {:?}", net.name, req.name),
            ));
        }
        let credential =
            secrets::generate(control::NODE_CREDENTIAL_PREFIX).map_err(ServiceError::Random)?;
        let credential_hash = secrets::hash(&credential);
        let actor = Actor::SetupKey { id: key.id };
        let mut tx = self.db.begin_write().await?;
        let (id, before_info) = match existing {
            Some(id) => {
                let before = world.nodes[&id].info(&net.name);
                sqlx::query(
                    "UPDATE nodes SET credential_hash = $1, name = $2, endpoints_json = $3, last_seen = $4 WHERE id = $5",
                )
                .bind(&credential_hash)
                .bind(&req.name)
                .bind(json(&req.endpoints))
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                (id, Some(before))
            }
            None => {
                let address =
                    self.allocate(&world, &net)
                        .ok_or_else(|| ServiceError::Conflict {
                            field: None,
                            message: format!("overlay {} has no free address", net.overlay),
                        })?;
                let id: i64 = sqlx::query(
                    "INSERT INTO nodes (network_id, name, public_key, address, groups_json, hub, via_hub, endpoints_json, credential_hash, last_seen, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL) RETURNING id",
                )
                .bind(net.id)
                .bind(&req.name)
                .bind(req.public_key.to_string())
                .bind(address.to_string())
                .bind(json(&key.groups))
                .bind(bool_i64(key.hub))
                .bind(bool_i64(key.via_hub))
                .bind(json(&req.endpoints))
                .bind(&credential_hash)
                .bind(now)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?
                .try_get("id")?;
                sqlx::query("UPDATE setup_keys SET used = used + 1 WHERE id = $1")
                    .bind(key.id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "DELETE FROM released_addresses WHERE network_id = $1 AND address = $2",
                )
                .bind(net.id)
                .bind(address.to_string())
                .execute(&mut *tx)
                .await?;
                let mut node = Node::new(
                    id,
                    net.id,
                    req.name.clone(),
                    req.public_key,
                    address,
                    key.groups.clone(),
                    key.hub,
                    req.endpoints.clone(),
                    credential_hash.clone(),
                    now,
                );
                node.via_hub = key.via_hub;
                // Inserted after the commit, below; kept here to build
                // the audit record.
                let info = node.info(&net.name);
                audit(
                    &mut tx,
                    &actor,
                    "node.enroll",
                    &format!("node:{id}"),
                    None,
                    Some(json(&info)),
                )
                .await?;
                tx.commit(&self.db).await?;
                let before = world.before(net.id, Some(id));
                world.nodes.insert(id, node);
                world.released.remove(&(net.id, address));
                if let Some(k) = world.setup_keys.get_mut(&key.id) {
                    k.used += 1;
                }
                return self.finish_enroll(&mut world, before, id, credential);
            }
        };
        let mut after = before_info
            .clone()
            .expect("invariant: set for an existing node");
        after.name = req.name.clone();
        after.endpoints = req.endpoints.clone();
        audit(
            &mut tx,
            &actor,
            "node.reenroll",
            &format!("node:{id}"),
            before_info.as_ref().map(json),
            Some(json(&after)),
        )
        .await?;
        tx.commit(&self.db).await?;
        let before = world.before(net.id, Some(id));
        {
            let node = world.nodes.get_mut(&id).expect("invariant: found above");
            node.credential_hash = credential_hash;
            node.name = req.name.clone();
            node.set_endpoints(req.endpoints.clone());
            node.last_seen = Some(now);
            // The old credential's streams end with it.
            node.streams.clear();
        }
        self.finish_enroll(&mut world, before, id, credential)
    }

    fn finish_enroll(
        &self,
        world: &mut World,
        before: crate::world::Before,
        id: i64,
        credential: String,
    ) -> Result<EnrollResponse, ServiceError> {
        let sent = world.push_changes(before);
        self.metrics.map_pushes(sent);
        let node = &world.nodes[&id];
        let network = world.networks[&node.network_id].name.clone();
        let map = world
            .full_map(node)
            .expect("invariant: the node's network exists");
        Ok(EnrollResponse {
            node: node.info(&network),
            credential,
            map,
        })
    }

    pub async fn node_map(&self, node_id: i64) -> Result<NetworkMap, ServiceError> {
        let world = self.world.lock().await;
        let node = world
            .nodes
            .get(&node_id)
            .ok_or_else(|| ServiceError::NotFound(format!("node {node_id}")))?;
        Ok(world
            .full_map(node)
            .expect("invariant: the node's network exists"))
    }

    /// Opens a map stream for a node: a full map, then deltas.
    pub async fn subscribe(&self, node_id: i64) -> Result<mpsc::Receiver<MapUpdate>, ServiceError> {
        let mut world = self.world.lock().await;
        let rx = world
            .subscribe(node_id)
            .ok_or_else(|| ServiceError::NotFound(format!("node {node_id}")))?;
        if let Some(n) = world.nodes.get_mut(&node_id) {
            n.last_seen = Some(unix_secs());
        }
        self.metrics.map_pushes(1);
        Ok(rx)
    }

    pub async fn report_endpoints(
        &self,
        node_id: i64,
        report: EndpointReport,
    ) -> Result<(), ServiceError> {
        if report.local.len() > 64 {
            return Err(ServiceError::BadRequest(
                "at most 64 local endpoints".into(),
            ));
        }
        let mut world = self.world.lock().await;
        let node = world
            .nodes
            .get(&node_id)
            .ok_or_else(|| ServiceError::NotFound(format!("node {node_id}")))?;
        let network_id = node.network_id;
        let now = unix_secs();
        let changed = node.endpoints != report;
        sqlx::query("UPDATE nodes SET endpoints_json = $1, last_seen = $2 WHERE id = $3")
            .bind(json(&report))
            .bind(now)
            .bind(node_id)
            .execute(&self.db.pool)
            .await?;
        if !changed {
            if let Some(n) = world.nodes.get_mut(&node_id) {
                n.last_seen = Some(now);
            }
            return Ok(());
        }
        let before = world.before(network_id, Some(node_id));
        {
            let n = world
                .nodes
                .get_mut(&node_id)
                .expect("invariant: found above");
            n.set_endpoints(report);
            n.last_seen = Some(now);
        }
        let sent = world.push_changes(before);
        self.metrics.map_pushes(sent);
        Ok(())
    }

    pub async fn nodes(&self, network: Option<&str>) -> Result<Vec<NodeInfo>, ServiceError> {
        let world = self.world.lock().await;
        let filter = match network {
            Some(name) => Some(
                world
                    .network_by_name(name)
                    .ok_or_else(|| ServiceError::NotFound(format!("network {name:?}")))?
                    .id,
            ),
            None => None,
        };
        Ok(world
            .nodes
            .values()
            .filter(|n| filter.is_none_or(|f| n.network_id == f))
            .map(|n| n.info(&world.networks[&n.network_id].name))
            .collect())
    }

    pub async fn node(&self, id: i64) -> Result<NodeInfo, ServiceError> {
        let world = self.world.lock().await;
        let n = world
            .nodes
            .get(&id)
            .ok_or_else(|| ServiceError::NotFound(format!("node {id}")))?;
        Ok(n.info(&world.networks[&n.network_id].name))
    }

    pub async fn update_node(
        &self,
        actor: &Actor,
        id: i64,
        req: UpdateNode,
    ) -> Result<NodeInfo, ServiceError> {
        if let Some(g) = &req.groups {
            check_groups(g)?;
        }
        let mut world = self.world.lock().await;
        let n = world
            .nodes
            .get(&id)
            .ok_or_else(|| ServiceError::NotFound(format!("node {id}")))?;
        let network = world.networks[&n.network_id].name.clone();
        let network_id = n.network_id;
        let before_info = n.info(&network);
        let hub = req.hub.unwrap_or(n.hub);
        let via_hub = req.via_hub.unwrap_or(n.via_hub);
        let groups = req.groups.clone().unwrap_or_else(|| n.groups.clone());
        let mut tx = self.db.begin_write().await?;
        sqlx::query("UPDATE nodes SET hub = $1, via_hub = $2, groups_json = $3 WHERE id = $4")
            .bind(bool_i64(hub))
            .bind(bool_i64(via_hub))
            .bind(json(&groups))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let mut after = before_info.clone();
        after.hub = hub;
        after.via_hub = via_hub;
        after.groups = groups.clone();
        audit(
            &mut tx,
            actor,
            "node.update",
            &format!("node:{id}"),
            Some(json(&before_info)),
            Some(json(&after)),
        )
        .await?;
        tx.commit(&self.db).await?;
        let before = world.before(network_id, Some(id));
        {
            let n = world.nodes.get_mut(&id).expect("invariant: found above");
            n.hub = hub;
            n.via_hub = via_hub;
            n.groups = groups;
        }
        let sent = world.push_changes(before);
        self.metrics.map_pushes(sent);
        Ok(after)
    }

    /// Removes a node: every other node drops it from its map at once, its
    /// credential stops working, and its address rests for the grace
    /// period.
    pub async fn delete_node(&self, actor: &Actor, id: i64) -> Result<NodeInfo, ServiceError> {
        let mut world = self.world.lock().await;
        let n = world
            .nodes
            .get(&id)
            .ok_or_else(|| ServiceError::NotFound(format!("node {id}")))?;
        let network_id = n.network_id;
        let address = n.address;
        let info = n.info(&world.networks[&network_id].name);
        let now = unix_secs();
        let mut tx = self.db.begin_write().await?;
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM released_addresses WHERE network_id = $1 AND address = $2")
            .bind(network_id)
            .bind(address.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO released_addresses (network_id, address, released_at) VALUES ($1, $2, $3)",
        )
        .bind(network_id)
        .bind(address.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            actor,
            "node.delete",
            &format!("node:{id}"),
            Some(json(&info)),
            None,
        )
        .await?;
        tx.commit(&self.db).await?;
        let before = world.before(network_id, Some(id));
        world.close_streams(id);
        world.nodes.remove(&id);
        world.released.insert((network_id, address), now);
        let sent = world.push_changes(before);
        self.metrics.map_pushes(sent);
        Ok(info)
    }

    /// A page of the audit log: at most `limit` (1 to
    /// [`control::AUDIT_PAGE_MAX`]) entries after `after`, and whether
    /// more follow.
    pub async fn audit_log(&self, after: i64, limit: i64) -> Result<AuditPage, ServiceError> {
        if after < 0 || !(1..=control::AUDIT_PAGE_MAX).contains(&limit) {
            return Err(ServiceError::BadRequest(format!(
                "after must be 0 or more and limit 1 to {}",
                control::AUDIT_PAGE_MAX
            )));
        }
        // One row more than the page, to tell whether it was capped.
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, before_json, after_json FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&self.db.pool)
        .await?;
        let truncated = rows.len() as i64 > limit;
        let value = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        let entries = rows
            .into_iter()
            .take(limit as usize)
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    before: value(r.try_get("before_json")?),
                    after: value(r.try_get("after_json")?),
                })
            })
            .collect::<Result<Vec<AuditEntry>, ServiceError>>()?;
        let next_after = entries.last().map_or(after, |e| e.id);
        Ok(AuditPage {
            entries,
            truncated,
            next_after,
        })
    }

    /// For metrics: (nodes, online nodes).
    pub async fn node_counts(&self) -> (usize, usize) {
        let world = self.world.lock().await;
        let online = world.nodes.values().filter(|n| n.online()).count();
        (world.nodes.len(), online)
    }
}

fn topology_text(t: Topology) -> &'static str {
    match t {
        Topology::FullMesh => "full-mesh",
        Topology::HubAndSpoke => "hub-and-spoke",
    }
}

/// Refuses a policy that names a node or group the network does not have:
/// a typo such as `node:labb` would otherwise silently match nothing and
/// replace a working rule. Known groups are those of the network's nodes
/// and of its setup keys (a key's groups are what its nodes will get, so a
/// policy may name them before the first node enrols). Every unknown name
/// is listed, so one attempt shows them all.
fn unknown_names(world: &World, network_id: i64, policy: &Policy) -> Result<(), ServiceError> {
    use std::collections::BTreeSet;
    use wgmesh_core::netmap::policy::Selector;
    let nodes: BTreeSet<&str> = world
        .nodes
        .values()
        .filter(|n| n.network_id == network_id)
        .map(|n| n.name.as_str())
        .collect();
    let groups: BTreeSet<&str> = world
        .nodes
        .values()
        .filter(|n| n.network_id == network_id)
        .flat_map(|n| n.groups.iter())
        .chain(
            world
                .setup_keys
                .values()
                .filter(|k| k.network_id == network_id && !k.revoked)
                .flat_map(|k| k.groups.iter()),
        )
        .map(String::as_str)
        .collect();
    let mut unknown = BTreeSet::new();
    for rule in &policy.rules {
        for sel in rule.from.iter().chain(&rule.to) {
            let known = match sel {
                Selector::All => true,
                Selector::Node(n) => nodes.contains(n.as_str()),
                Selector::Group(g) => groups.contains(g.as_str()),
            };
            if !known {
                unknown.insert(sel.to_string());
            }
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unknown.into_iter().collect();
    Err(ServiceError::BadRequest(format!(
        "rules: unknown in this network: {}",
        list.join(", ")
    )))
}
