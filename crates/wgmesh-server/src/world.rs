//! The server's in-memory copy of everything in the database, and the
//! map bookkeeping on top of it.
//!
//! The database is the record; the world is loaded from it at start and
//! changed only after the transaction that changed the database commits
//! ([`crate::service`]). Maps are not stored: a node's full map is
//! computed when its stream opens (O(N)), and a change to one node turns
//! into one delta entry for each other node of its network (O(N)), by
//! comparing that node's entry before and after (see
//! `wgmesh_core::netmap::compile`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tokio::sync::mpsc;
use wgmesh_core::control::{EndpointReport, NetworkInfo, NodeInfo, SetupKeyInfo, Topology};
use wgmesh_core::key::PublicKey;
use wgmesh_core::netmap::compile::{NetworkView, NodeView, full_map, peer_entry};
use wgmesh_core::netmap::policy::Policy;
use wgmesh_core::netmap::{MapDelta, MapPeer, MapUpdate, NetworkMap};

/// How many updates may wait for a slow agent before its stream is cut
/// (it reconnects and gets a full map).
pub const STREAM_QUEUE: usize = 64;

#[derive(Debug, Clone)]
pub struct Network {
    pub id: i64,
    pub name: String,
    pub overlay: IpNet,
    pub topology: Topology,
    pub policy: Policy,
    pub created_at: i64,
}

#[derive(Debug)]
pub struct Node {
    pub id: i64,
    pub network_id: i64,
    pub name: String,
    pub public_key: PublicKey,
    pub address: IpAddr,
    pub groups: Vec<String>,
    pub hub: bool,
    pub via_hub: bool,
    pub endpoints: EndpointReport,
    pub credential_hash: String,
    pub last_seen: Option<i64>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    /// Map version of this node's stream(s).
    pub version: u64,
    pub streams: Vec<mpsc::Sender<MapUpdate>>,
    /// `endpoints` best first, for the compiler.
    endpoint_list: Vec<SocketAddr>,
}

impl Node {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: i64,
        network_id: i64,
        name: String,
        public_key: PublicKey,
        address: IpAddr,
        groups: Vec<String>,
        hub: bool,
        endpoints: EndpointReport,
        credential_hash: String,
        created_at: i64,
    ) -> Self {
        let mut node = Self {
            id,
            network_id,
            name,
            public_key,
            address,
            groups,
            hub,
            via_hub: false,
            endpoints: EndpointReport::default(),
            credential_hash,
            last_seen: None,
            created_at,
            expires_at: None,
            version: 0,
            streams: Vec::new(),
            endpoint_list: Vec::new(),
        };
        node.set_endpoints(endpoints);
        node
    }

    pub fn set_endpoints(&mut self, endpoints: EndpointReport) {
        let mut list: Vec<SocketAddr> = endpoints.reflexive.into_iter().collect();
        for a in &endpoints.local {
            if !list.contains(a) {
                list.push(*a);
            }
        }
        self.endpoint_list = list;
        self.endpoints = endpoints;
    }

    /// No NAT in front: the STUN server saw one of the node's own
    /// addresses.
    pub fn reachable(&self) -> bool {
        self.endpoints
            .reflexive
            .is_some_and(|r| self.endpoints.local.contains(&r))
    }

    pub fn online(&self) -> bool {
        self.streams.iter().any(|s| !s.is_closed())
    }

    pub fn view(&self) -> NodeView<'_> {
        NodeView {
            name: &self.name,
            public_key: self.public_key,
            address: self.address,
            groups: &self.groups,
            endpoints: &self.endpoint_list,
            reachable: self.reachable(),
            hub: self.hub,
            via_hub: self.via_hub,
        }
    }

    pub fn info(&self, network: &str) -> NodeInfo {
        NodeInfo {
            id: self.id,
            network: network.to_owned(),
            name: self.name.clone(),
            public_key: self.public_key,
            address: self.address,
            groups: self.groups.clone(),
            hub: self.hub,
            via_hub: self.via_hub,
            endpoints: self.endpoints.clone(),
            reachable: self.reachable(),
            online: self.online(),
            last_seen: self.last_seen,
            created_at: self.created_at,
            expires_at: self.expires_at,
        }
    }

    /// Sends `update` to every open stream; a stream whose queue is full
    /// is cut (the agent reconnects and gets a full map). Returns how many
    /// got it.
    fn push(&mut self, update: &MapUpdate) -> usize {
        self.streams.retain(|s| s.try_send(update.clone()).is_ok());
        self.streams.len()
    }
}

#[derive(Debug, Clone)]
pub struct SetupKey {
    pub id: i64,
    pub network_id: i64,
    pub key_hash: String,
    pub prefix: String,
    pub reusable: bool,
    pub expires_at: Option<i64>,
    pub usage_limit: Option<i64>,
    pub used: i64,
    pub groups: Vec<String>,
    pub hub: bool,
    pub via_hub: bool,
    pub revoked: bool,
    pub created_at: i64,
}

impl SetupKey {
    pub fn info(&self, network: &str) -> SetupKeyInfo {
        SetupKeyInfo {
            id: self.id,
            network: network.to_owned(),
            prefix: self.prefix.clone(),
            reusable: self.reusable,
            expires_at: self.expires_at,
            usage_limit: self.usage_limit,
            used: self.used,
            groups: self.groups.clone(),
            hub: self.hub,
            via_hub: self.via_hub,
            revoked: self.revoked,
            created_at: self.created_at,
        }
    }

    /// Why this key cannot enrol one more node at `now`, if it cannot.
    pub fn refusal(&self, now: i64) -> Option<&'static str> {
        if self.revoked {
            Some("setup key revoked")
        } else if self.expires_at.is_some_and(|e| now >= e) {
            Some("setup key expired")
        } else if !self.reusable && self.used >= 1 {
            Some("one-off setup key already used")
        } else if self.usage_limit.is_some_and(|l| self.used >= l) {
            Some("setup key usage limit reached")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminToken {
    pub id: i64,
    pub name: String,
}

/// Everything, in memory.
#[derive(Debug, Default)]
pub struct World {
    pub networks: BTreeMap<i64, Network>,
    pub nodes: BTreeMap<i64, Node>,
    pub setup_keys: BTreeMap<i64, SetupKey>,
    /// token hash → token
    pub admin_tokens: HashMap<String, AdminToken>,
    /// (network, address) → released at (unix s)
    pub released: HashMap<(i64, IpAddr), i64>,
}

impl World {
    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.name == name)
    }

    pub fn node_by_credential(&self, hash: &str) -> Option<&Node> {
        self.nodes.values().find(|n| n.credential_hash == hash)
    }

    pub fn setup_key_by_hash(&self, hash: &str) -> Option<&SetupKey> {
        self.setup_keys.values().find(|k| k.key_hash == hash)
    }

    pub fn nodes_of(&self, network_id: i64) -> impl Iterator<Item = &Node> {
        self.nodes
            .values()
            .filter(move |n| n.network_id == network_id)
    }

    pub fn network_info(&self, net: &Network) -> NetworkInfo {
        NetworkInfo {
            name: net.name.clone(),
            overlay: net.overlay,
            topology: net.topology,
            nodes: self.nodes_of(net.id).count() as u64,
            created_at: net.created_at,
        }
    }

    /// The first hub by name: it carries the overlay route of nodes that
    /// cannot reach each other directly.
    pub fn primary_hub(&self, network_id: i64) -> Option<PublicKey> {
        self.nodes_of(network_id)
            .filter(|n| n.hub)
            .min_by(|a, b| a.name.cmp(&b.name))
            .map(|n| n.public_key)
    }

    fn view<'a>(&self, net: &'a Network, primary_hub: Option<PublicKey>) -> NetworkView<'a> {
        NetworkView {
            name: &net.name,
            overlay: net.overlay,
            policy: &net.policy,
            primary_hub,
            hub_and_spoke: net.topology == Topology::HubAndSpoke,
        }
    }

    /// `node`'s whole map now.
    pub fn full_map(&self, node: &Node) -> Option<NetworkMap> {
        let net = self.networks.get(&node.network_id)?;
        let view = self.view(net, self.primary_hub(net.id));
        let others: Vec<NodeView<'_>> = self.nodes_of(net.id).map(Node::view).collect();
        Some(full_map(&node.view(), others.iter(), &view, node.version))
    }

    /// Opens a stream for `node_id`: its first message is the full map.
    pub fn subscribe(&mut self, node_id: i64) -> Option<mpsc::Receiver<MapUpdate>> {
        let map = self.full_map(self.nodes.get(&node_id)?)?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tx.try_send(MapUpdate::Full(map))
            .expect("invariant: a fresh channel has room for one message");
        self.nodes.get_mut(&node_id)?.streams.push(tx);
        Some(rx)
    }
}

/// The entries one node's change affects, taken before the change, so
/// that [`World::push_changes`] can send only what differs.
#[derive(Debug)]
pub struct Before {
    network_id: i64,
    changed: Option<i64>,
    primary_hub: Option<PublicKey>,
    /// Per receiving node, its entry for the changed node (a removed node
    /// or one not yet enrolled has none); with no single changed node,
    /// all its entries.
    entries: HashMap<i64, Vec<MapPeer>>,
}

impl World {
    /// Snapshot before changing node `changed` (or, with `None`, the
    /// whole network's policy or node set at once).
    pub fn before(&self, network_id: i64, changed: Option<i64>) -> Before {
        let mut entries: HashMap<i64, Vec<MapPeer>> = HashMap::new();
        if let Some(net) = self.networks.get(&network_id) {
            let view = self.view(net, self.primary_hub(network_id));
            for me in self.nodes_of(network_id) {
                let list = self.entries_for(me, changed, &view);
                entries.insert(me.id, list);
            }
        }
        Before {
            network_id,
            changed,
            primary_hub: self.primary_hub(network_id),
            entries,
        }
    }

    /// `me`'s entries for `changed` (or all of its entries).
    fn entries_for(&self, me: &Node, changed: Option<i64>, view: &NetworkView<'_>) -> Vec<MapPeer> {
        let others: Box<dyn Iterator<Item = &Node>> = match changed {
            Some(id) => Box::new(self.nodes.get(&id).into_iter()),
            None => Box::new(self.nodes_of(me.network_id)),
        };
        others
            .filter(|o| o.id != me.id && o.network_id == me.network_id)
            .filter_map(|o| peer_entry(&me.view(), &o.view(), view))
            .collect()
    }

    /// After the change: sends each node of the network the delta between
    /// `before` and now (a full map to the changed node itself, and to
    /// everyone when the primary hub moved). Returns the number of
    /// messages queued.
    pub fn push_changes(&mut self, before: Before) -> usize {
        let Some(net) = self.networks.get(&before.network_id).cloned() else {
            return 0;
        };
        let hub = self.primary_hub(net.id);
        let everyone_full = hub != before.primary_hub;
        let view = self.view(&net, hub);
        let mut updates: Vec<(i64, MapUpdate)> = Vec::new();
        let ids: Vec<i64> = self.nodes_of(net.id).map(|n| n.id).collect();
        for id in ids {
            let me = &self.nodes[&id];
            if me.streams.is_empty() {
                continue;
            }
            // The changed node's own attributes shape all of its entries.
            let full = everyone_full || before.changed == Some(id);
            if full || !before.entries.contains_key(&id) {
                let mut map = self
                    .full_map(me)
                    .expect("invariant: the node's network exists");
                map.version += 1;
                updates.push((id, MapUpdate::Full(map)));
                continue;
            }
            let old = &before.entries[&id];
            let new = self.entries_for(me, before.changed, &view);
            let upsert: Vec<MapPeer> = new.iter().filter(|e| !old.contains(e)).cloned().collect();
            let remove: Vec<PublicKey> = old
                .iter()
                .filter(|o| !new.iter().any(|n| n.public_key == o.public_key))
                .map(|o| o.public_key)
                .collect();
            if upsert.is_empty() && remove.is_empty() {
                continue;
            }
            updates.push((
                id,
                MapUpdate::Delta(MapDelta {
                    from_version: me.version,
                    version: me.version + 1,
                    upsert,
                    remove,
                }),
            ));
        }
        let mut sent = 0;
        for (id, update) in updates {
            let node = self
                .nodes
                .get_mut(&id)
                .expect("invariant: collected from nodes above");
            node.version += 1;
            sent += node.push(&update);
        }
        sent
    }

    /// Cuts every stream of a node (it was removed).
    pub fn close_streams(&mut self, node_id: i64) {
        if let Some(n) = self.nodes.get_mut(&node_id) {
            n.streams.clear();
        }
    }
}
