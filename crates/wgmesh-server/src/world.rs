//! The server's in-memory copy of everything in the database, and the
//! map bookkeeping on top of it.
//!
//! The database is the record; the world is loaded from it at start and
//! changed only after the transaction that changed the database commits
//! ([`crate::service`]). Maps are not stored: a node's full map is
//! computed when its stream opens, and a change to one node turns into
//! one delta entry for each node whose entry for it changed, by comparing
//! that entry before and after (see `wgmesh_core::netmap::compile`).
//!
//! Indexes (credential, network, group, name, hubs → nodes) keep this
//! proportional to the nodes concerned rather than to the network: under
//! a default of "deny" a node's map can only hold the hubs and the nodes
//! its allow rules name, so only those are compiled, each against the
//! few rules naming the node (a policy change costs O(N × peers), not
//! O(N² × rules)). Under "allow" every pair is a candidate, as it must be.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use tokio::sync::mpsc;
use wgmesh_core::control::{
    EndpointReport, NetworkInfo, NodeInfo, RelayInfo, SetupKeyInfo, Topology,
};
use wgmesh_core::key::PublicKey;
use wgmesh_core::netmap::compile::{NetworkView, NodeView, full_map, peer_entry};
use wgmesh_core::netmap::policy::{Action, NodeFacts, Policy, Selector};
use wgmesh_core::netmap::{MapDelta, MapPeer, MapRelay, MapUpdate, NetworkMap};

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
    /// The version last sent on this node's stream(s).
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
            nat: self.endpoints.nat,
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
    fn push(&mut self, update: MapUpdate) -> usize {
        // The last stream takes the update itself: at 10,000 nodes a copy
        // per node is a few hundred megabytes in flight.
        let mut update = Some(update);
        let n = self.streams.len();
        let mut i = 0;
        self.streams.retain(|s| {
            i += 1;
            let u = if i == n {
                update.take()
            } else {
                update.clone()
            };
            u.is_some_and(|u| s.try_send(u).is_ok())
        });
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

/// A relay nodes may use (server-wide: every network's).
#[derive(Debug, Clone)]
pub struct Relay {
    pub id: i64,
    pub name: String,
    pub token_hash: String,
    pub public_key: PublicKey,
    pub udp: SocketAddr,
    pub ws_url: Option<String>,
    pub created_at: i64,
}

impl Relay {
    pub fn info(&self) -> RelayInfo {
        RelayInfo {
            id: self.id,
            name: self.name.clone(),
            public_key: self.public_key,
            udp: self.udp,
            ws_url: self.ws_url.clone(),
            created_at: self.created_at,
        }
    }

    fn map_entry(&self) -> MapRelay {
        MapRelay {
            name: self.name.clone(),
            public_key: self.public_key,
            udp: self.udp,
            ws_url: self.ws_url.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminToken {
    pub id: i64,
    pub name: String,
}

/// Everything, in memory.
///
/// `nodes` is public for reading; a node is added, removed, or has its
/// name, groups, hub role or credential changed only between
/// [`World::before`] and [`World::push_changes`] (which keeps the
/// indexes up to date), or followed by [`World::reindex`] (as after
/// loading).
#[derive(Debug, Default)]
pub struct World {
    pub networks: BTreeMap<i64, Network>,
    pub nodes: BTreeMap<i64, Node>,
    pub setup_keys: BTreeMap<i64, SetupKey>,
    /// token hash → token
    pub admin_tokens: HashMap<String, AdminToken>,
    /// (network, address) → released at (unix s)
    pub released: HashMap<(i64, IpAddr), i64>,
    /// Relays by id (few: a scan finds one by token). Changed only
    /// followed by [`World::push_full_maps`], since every map lists them.
    pub relays: BTreeMap<i64, Relay>,
    /// The version of the newest map: one step per change, for the whole
    /// world. A full map carries the current one, a delta the step it
    /// brings its node to, so versions only grow and a version names one
    /// map of a node. It starts at the load's wall clock in milliseconds
    /// ([`World::start_versions_at`]), so a restarted server's maps do not
    /// go back to versions agents have seen.
    pub epoch: u64,
    index: NodeIndex,
}

/// Lookups over `World::nodes`, so that finding a node by credential, the
/// nodes of a network, group or name, and a network's hubs cost no scan.
/// Sets are ordered by node id, the order of `World::nodes`, so that
/// everything computed from them comes out as before the index existed.
#[derive(Debug, Default, PartialEq, Eq)]
struct NodeIndex {
    /// credential hash → node
    by_credential: HashMap<String, i64>,
    by_network: HashMap<i64, BTreeSet<i64>>,
    /// (network, group) → nodes
    by_group: HashMap<(i64, String), BTreeSet<i64>>,
    /// (network, name) → nodes (one, but a set costs nothing and never
    /// loses a node if two ever share a name)
    by_name: HashMap<(i64, String), BTreeSet<i64>>,
    /// network → its hubs
    hubs: HashMap<i64, BTreeSet<i64>>,
    /// (network, public key) → node: enrolment's "is this key known?"
    by_key: HashMap<(i64, PublicKey), i64>,
    /// (network, overlay address) → node: the address allocator's "is it
    /// taken?"
    by_address: HashMap<(i64, IpAddr), i64>,
}

/// What the index holds of one node, kept in [`Before`] so that the old
/// entries can be dropped after the node changed.
#[derive(Debug, Clone)]
struct Indexed {
    network_id: i64,
    name: String,
    groups: Vec<String>,
    hub: bool,
    credential_hash: String,
    public_key: PublicKey,
    address: IpAddr,
}

impl Indexed {
    fn of(node: &Node) -> Self {
        Self {
            network_id: node.network_id,
            name: node.name.clone(),
            groups: node.groups.clone(),
            hub: node.hub,
            credential_hash: node.credential_hash.clone(),
            public_key: node.public_key,
            address: node.address,
        }
    }
}

impl NodeIndex {
    fn add(&mut self, id: i64, n: &Indexed) {
        self.by_credential.insert(n.credential_hash.clone(), id);
        self.by_key.insert((n.network_id, n.public_key), id);
        self.by_address.insert((n.network_id, n.address), id);
        self.by_network.entry(n.network_id).or_default().insert(id);
        for g in &n.groups {
            self.by_group
                .entry((n.network_id, g.clone()))
                .or_default()
                .insert(id);
        }
        self.by_name
            .entry((n.network_id, n.name.clone()))
            .or_default()
            .insert(id);
        if n.hub {
            self.hubs.entry(n.network_id).or_default().insert(id);
        }
    }

    fn remove(&mut self, id: i64, n: &Indexed) {
        if self.by_credential.get(&n.credential_hash) == Some(&id) {
            self.by_credential.remove(&n.credential_hash);
        }
        if self.by_key.get(&(n.network_id, n.public_key)) == Some(&id) {
            self.by_key.remove(&(n.network_id, n.public_key));
        }
        if self.by_address.get(&(n.network_id, n.address)) == Some(&id) {
            self.by_address.remove(&(n.network_id, n.address));
        }
        fn drop_from<K: std::hash::Hash + Eq>(
            map: &mut HashMap<K, BTreeSet<i64>>,
            key: K,
            id: i64,
        ) {
            if let Some(set) = map.get_mut(&key) {
                set.remove(&id);
                if set.is_empty() {
                    map.remove(&key);
                }
            }
        }
        drop_from(&mut self.by_network, n.network_id, id);
        for g in &n.groups {
            drop_from(&mut self.by_group, (n.network_id, g.clone()), id);
        }
        drop_from(&mut self.by_name, (n.network_id, n.name.clone()), id);
        drop_from(&mut self.hubs, n.network_id, id);
    }
}

/// The rules of `policy` that name `node` on either side, in order, under
/// the same default. [`Policy::rules_between`] for a pair that includes
/// `node` can only return these, so compiling `node`'s entries (either
/// way) against this short policy gives what the whole policy gives, at
/// the cost of a handful of rules instead of one per group.
fn rules_naming(policy: &Policy, node: &Node) -> Policy {
    let facts = NodeFacts {
        name: &node.name,
        groups: &node.groups,
    };
    Policy {
        default: policy.default,
        rules: policy
            .rules
            .iter()
            .filter(|r| {
                r.from.iter().any(|s| s.matches(&facts)) || r.to.iter().any(|s| s.matches(&facts))
            })
            .cloned()
            .collect(),
    }
}

impl World {
    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.networks.values().find(|n| n.name == name)
    }

    pub fn node_by_credential(&self, hash: &str) -> Option<&Node> {
        let id = self.index.by_credential.get(hash)?;
        self.nodes.get(id).filter(|n| n.credential_hash == hash)
    }

    /// The node of a network with this public key.
    pub fn node_by_key(&self, network_id: i64, key: &PublicKey) -> Option<&Node> {
        let id = self.index.by_key.get(&(network_id, *key))?;
        self.nodes.get(id)
    }

    /// The nodes of a network with this name (at most one, as enrolment
    /// keeps it).
    pub fn nodes_named(&self, network_id: i64, name: &str) -> impl Iterator<Item = &Node> {
        self.index
            .by_name
            .get(&(network_id, name.to_owned()))
            .into_iter()
            .flatten()
            .filter_map(|id| self.nodes.get(id))
    }

    /// Whether a node of the network has this overlay address.
    pub fn address_in_use(&self, network_id: i64, address: IpAddr) -> bool {
        self.index.by_address.contains_key(&(network_id, address))
    }

    /// A scan: setup keys are few (one per group or role, not per node)
    /// and are added by the service directly.
    pub fn setup_key_by_hash(&self, hash: &str) -> Option<&SetupKey> {
        self.setup_keys.values().find(|k| k.key_hash == hash)
    }

    /// The nodes of a network, by id.
    pub fn nodes_of(&self, network_id: i64) -> impl Iterator<Item = &Node> {
        let ids = self.index.by_network.get(&network_id);
        // One network holding every node is the common case: walking the
        // map itself is several times cheaper than a lookup per id.
        let all = ids.is_some_and(|ids| ids.len() == self.nodes.len());
        let walk = all.then(|| self.nodes.values()).into_iter().flatten();
        let indexed = ids
            .filter(|_| !all)
            .into_iter()
            .flatten()
            .filter_map(|id| self.nodes.get(id));
        walk.chain(indexed)
    }

    /// Rebuilds the indexes from `nodes` (after loading, or after changing
    /// nodes outside [`World::before`] … [`World::push_changes`]).
    pub fn reindex(&mut self) {
        let mut index = NodeIndex::default();
        for (id, n) in &self.nodes {
            index.add(*id, &Indexed::of(n));
        }
        self.index = index;
    }

    /// Brings the index up to date for one node that was added, changed
    /// or removed since `old` was taken.
    fn reindex_node(&mut self, id: i64, old: Option<&Indexed>) {
        if let Some(old) = old {
            self.index.remove(id, old);
        }
        if let Some(n) = self.nodes.get(&id) {
            let now = Indexed::of(n);
            self.index.add(id, &now);
        }
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
        self.index
            .hubs
            .get(&network_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.nodes.get(id))
            .min_by(|a, b| a.name.cmp(&b.name))
            .map(|n| n.public_key)
    }

    fn view<'a>(
        &self,
        net: &'a Network,
        policy: &'a Policy,
        primary_hub: Option<PublicKey>,
    ) -> NetworkView<'a> {
        NetworkView {
            name: &net.name,
            overlay: net.overlay,
            policy,
            primary_hub,
            hub_and_spoke: net.topology == Topology::HubAndSpoke,
            relays: !self.relays.is_empty(),
        }
    }

    /// The other nodes of `node`'s network that may be in its map (and it
    /// in theirs), by id; `mine` is [`rules_naming`] for `node`.
    ///
    /// [`peer_entry`] leaves a pair out when neither is a hub and no
    /// packet is allowed either way. Under a default of "deny", a packet
    /// is allowed only by an allow rule, so the candidates are the hubs
    /// and the nodes on the other side of `node`'s allow rules. Under
    /// "allow", or for a hub, it is everyone.
    fn candidates(&self, node: &Node, mine: &Policy) -> BTreeSet<i64> {
        let net = node.network_id;
        let everyone = || -> BTreeSet<i64> {
            let mut all = self.index.by_network.get(&net).cloned().unwrap_or_default();
            all.remove(&node.id);
            all
        };
        if mine.default == Action::Allow || node.hub {
            return everyone();
        }
        let facts = NodeFacts {
            name: &node.name,
            groups: &node.groups,
        };
        let mut out: BTreeSet<i64> = self.index.hubs.get(&net).cloned().unwrap_or_default();
        for rule in mine.rules.iter().filter(|r| r.action == Action::Allow) {
            let mut sides: Vec<&Selector> = Vec::new();
            if rule.from.iter().any(|s| s.matches(&facts)) {
                sides.extend(&rule.to);
            }
            if rule.to.iter().any(|s| s.matches(&facts)) {
                sides.extend(&rule.from);
            }
            for s in sides {
                let set = match s {
                    Selector::All => return everyone(),
                    Selector::Group(g) => self.index.by_group.get(&(net, g.clone())),
                    Selector::Node(n) => self.index.by_name.get(&(net, n.clone())),
                };
                out.extend(set.into_iter().flatten());
            }
        }
        out.remove(&node.id);
        out
    }

    /// `me`'s entries for the nodes `others` (ascending ids), compiled
    /// against `mine` ([`rules_naming`] for `me`).
    fn entries_for(
        &self,
        me: &Node,
        others: &BTreeSet<i64>,
        net: &Network,
        mine: &Policy,
        primary_hub: Option<PublicKey>,
    ) -> Vec<MapPeer> {
        let view = self.view(net, mine, primary_hub);
        let me_view = me.view();
        others
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter_map(|o| peer_entry(&me_view, &o.view(), &view))
            .collect()
    }

    /// Each candidate's entry for `changed` (an empty list where it has
    /// none), compiled against the rules naming `changed`.
    fn entries_about(
        &self,
        changed: &Node,
        net: &Network,
        primary_hub: Option<PublicKey>,
    ) -> HashMap<i64, Vec<MapPeer>> {
        let theirs = rules_naming(&net.policy, changed);
        let view = self.view(net, &theirs, primary_hub);
        let changed_view = changed.view();
        self.candidates(changed, &theirs)
            .into_iter()
            .filter_map(|id| self.nodes.get(&id))
            .map(|me| {
                let entry = peer_entry(&me.view(), &changed_view, &view);
                (me.id, entry.into_iter().collect())
            })
            .collect()
    }

    /// `node`'s whole map now: O(its candidates), not O(N).
    pub fn full_map(&self, node: &Node) -> Option<NetworkMap> {
        let net = self.networks.get(&node.network_id)?;
        let mine = rules_naming(&net.policy, node);
        let view = self.view(net, &mine, self.primary_hub(net.id));
        let others: Vec<NodeView<'_>> = self
            .candidates(node, &mine)
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .map(Node::view)
            .collect();
        let mut map = full_map(&node.view(), others.iter(), &view, self.epoch);
        map.relays = self.relay_entries();
        Some(map)
    }

    /// Opens a stream for `node_id`: its first message is the full map.
    pub fn subscribe(&mut self, node_id: i64) -> Option<mpsc::Receiver<MapUpdate>> {
        let map = self.full_map(self.nodes.get(&node_id)?)?;
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tx.try_send(MapUpdate::Full(map))
            .expect("invariant: a fresh channel has room for one message");
        let epoch = self.epoch;
        let node = self.nodes.get_mut(&node_id)?;
        node.streams.push(tx);
        node.version = epoch;
        Some(rx)
    }
}

/// The entries one node's change affects, taken before the change, so
/// that [`World::push_changes`] can send only what differs.
#[derive(Debug)]
pub struct Before {
    network_id: i64,
    changed: Option<i64>,
    /// What the index held of the changed node (none when it is new).
    indexed: Option<Indexed>,
    primary_hub: Option<PublicKey>,
    /// The policy's default: a delta cannot carry a new one.
    default_action: Option<Action>,
    /// Per receiving node, its entry for the changed node (only nodes
    /// that had one or could have: the others' entry is nothing before and
    /// after); with no single changed node, per node of the network, all
    /// its entries.
    entries: HashMap<i64, Vec<MapPeer>>,
}

impl World {
    /// Snapshot before changing node `changed` (or, with `None`, the
    /// whole network's policy or node set at once).
    pub fn before(&self, network_id: i64, changed: Option<i64>) -> Before {
        let primary_hub = self.primary_hub(network_id);
        let mut entries: HashMap<i64, Vec<MapPeer>> = HashMap::new();
        if let Some(net) = self.networks.get(&network_id) {
            match changed {
                Some(id) => {
                    if let Some(c) = self.nodes.get(&id) {
                        entries = self.entries_about(c, net, primary_hub);
                    }
                }
                None => {
                    for me in self.nodes_of(network_id) {
                        let mine = rules_naming(&net.policy, me);
                        let others = self.candidates(me, &mine);
                        let list = self.entries_for(me, &others, net, &mine, primary_hub);
                        entries.insert(me.id, list);
                    }
                }
            }
        }
        Before {
            network_id,
            changed,
            indexed: changed.and_then(|id| self.nodes.get(&id)).map(Indexed::of),
            primary_hub,
            default_action: self.networks.get(&network_id).map(|n| n.policy.default),
            entries,
        }
    }

    /// After the change: sends each node of the network the delta between
    /// `before` and now (a full map to the changed node itself, and to
    /// everyone when the primary hub moved or the policy's default
    /// changed). Returns the number of
    /// messages queued.
    pub fn push_changes(&mut self, before: Before) -> usize {
        match before.changed {
            Some(id) => self.reindex_node(id, before.indexed.as_ref()),
            None => self.reindex(),
        }
        self.epoch += 1;
        let epoch = self.epoch;
        let mut sent = 0;
        for (id, update) in self.updates_after(before) {
            let node = self
                .nodes
                .get_mut(&id)
                .expect("invariant: collected from nodes above");
            node.version = epoch;
            sent += node.push(update);
        }
        sent
    }

    /// Sets the first version after a load: the wall clock in
    /// milliseconds, or on from the highest version already given out.
    pub fn start_versions_at(&mut self, unix_ms: u64) {
        self.epoch = self.epoch.max(unix_ms);
    }

    /// What [`World::push_changes`] sends, per node, computed without
    /// changing anything (so the network is borrowed, not copied with its
    /// policy for every change).
    /// `before`'s entries are dropped as they are used, so that old and
    /// new entries of the whole network are not held at once.
    fn updates_after(&self, mut before: Before) -> Vec<(i64, MapUpdate)> {
        let Some(net) = self.networks.get(&before.network_id) else {
            return Vec::new();
        };
        let hub = self.primary_hub(net.id);
        // Deltas carry peers only: a new primary hub (every node's overlay
        // route) or a new default action goes out as full maps.
        let everyone_full =
            hub != before.primary_hub || before.default_action != Some(net.policy.default);
        let mut updates: Vec<(i64, MapUpdate)> = Vec::new();
        let full = |world: &World, me: &Node, updates: &mut Vec<(i64, MapUpdate)>| {
            let map = world
                .full_map(me)
                .expect("invariant: the node's network exists");
            updates.push((me.id, MapUpdate::Full(map)));
        };
        match before.changed {
            _ if everyone_full => {
                for me in self.nodes_of(net.id).filter(|n| !n.streams.is_empty()) {
                    full(self, me, &mut updates);
                }
            }
            Some(changed) => {
                // The changed node's own attributes shape all of its
                // entries: it gets a full map.
                if let Some(c) = self.nodes.get(&changed)
                    && !c.streams.is_empty()
                {
                    full(self, c, &mut updates);
                }
                let mut now = match self.nodes.get(&changed) {
                    Some(c) => self.entries_about(c, net, hub),
                    None => HashMap::new(),
                };
                let ids: BTreeSet<i64> = before
                    .entries
                    .keys()
                    .chain(now.keys())
                    .copied()
                    .filter(|id| *id != changed)
                    .collect();
                for id in ids {
                    let Some(me) = self.nodes.get(&id) else {
                        continue;
                    };
                    let old = before.entries.remove(&id).unwrap_or_default();
                    let new = now.remove(&id).unwrap_or_default();
                    updates.extend(Self::delta(me, &old, new, self.epoch).map(|u| (id, u)));
                }
            }
            None => {
                for me in self.nodes_of(net.id).filter(|n| !n.streams.is_empty()) {
                    let Some(old) = before.entries.remove(&me.id) else {
                        full(self, me, &mut updates);
                        continue;
                    };
                    let mine = rules_naming(&net.policy, me);
                    let others = self.candidates(me, &mine);
                    let new = self.entries_for(me, &others, net, &mine, hub);
                    updates.extend(Self::delta(me, &old, new, self.epoch).map(|u| (me.id, u)));
                }
            }
        }
        updates
    }

    /// The delta that takes `me` from `old` entries to `new` ones, at
    /// version `epoch`, if they differ and it has a stream to send it on.
    fn delta(me: &Node, old: &[MapPeer], new: Vec<MapPeer>, epoch: u64) -> Option<MapUpdate> {
        if me.streams.is_empty() {
            return None;
        }
        let old_by_key: HashMap<PublicKey, &MapPeer> =
            old.iter().map(|e| (e.public_key, e)).collect();
        let new_keys: HashSet<PublicKey> = new.iter().map(|e| e.public_key).collect();
        let remove: Vec<PublicKey> = old
            .iter()
            .filter(|o| !new_keys.contains(&o.public_key))
            .map(|o| o.public_key)
            .collect();
        let upsert: Vec<MapPeer> = new
            .into_iter()
            .filter(|e| old_by_key.get(&e.public_key) != Some(&e))
            .collect();
        if upsert.is_empty() && remove.is_empty() {
            return None;
        }
        Some(MapUpdate::Delta(MapDelta {
            from_version: me.version,
            version: epoch,
            upsert,
            remove,
        }))
    }

    /// Every relay as maps list it, by name.
    fn relay_entries(&self) -> Vec<MapRelay> {
        let mut list: Vec<MapRelay> = self.relays.values().map(Relay::map_entry).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// A scan: relays are a handful per server.
    pub fn relay_by_token_hash(&self, hash: &str) -> Option<&Relay> {
        self.relays.values().find(|r| r.token_hash == hash)
    }

    /// Sends every connected node of every network a full map (after a
    /// relay came or went: every map lists the relays, and whether there
    /// is one decides how NATed pairs peer). Returns the number of
    /// messages queued.
    pub fn push_full_maps(&mut self) -> usize {
        self.epoch += 1;
        let epoch = self.epoch;
        let updates: Vec<(i64, MapUpdate)> = self
            .nodes
            .values()
            .filter(|n| !n.streams.is_empty())
            .filter_map(|me| Some((me.id, MapUpdate::Full(self.full_map(me)?))))
            .collect();
        let mut sent = 0;
        for (id, update) in updates {
            let node = self
                .nodes
                .get_mut(&id)
                .expect("invariant: collected from nodes above");
            node.version = epoch;
            sent += node.push(update);
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

#[cfg(test)]
mod tests {
    //! The indexed, candidate-only computation against the plain one: every
    //! full map equal to compiling against every node and the whole policy,
    //! the index equal to one rebuilt from scratch, and the deltas a stream
    //! receives adding up to the full map, through policy, group, hub and
    //! membership changes.

    use super::*;

    fn key(i: i64) -> PublicKey {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&i.to_be_bytes());
        // Not in id order, so that key order and id order differ.
        b[8] = (i as u8).wrapping_mul(37);
        b.reverse();
        PublicKey::from_bytes(b)
    }

    fn policy(toml: &str) -> Policy {
        Policy::from_toml(toml).unwrap()
    }

    /// Per group, allow within it; plus rules that exercise node and `*`
    /// selectors without an allow for everyone.
    const GROUPS: &str = r#"
        default = "deny"
        [[rule]]
        action = "allow"
        from = ["group:g0"]
        to = ["group:g0"]
        [[rule]]
        action = "allow"
        from = ["group:g1"]
        to = ["group:g1", "node:n2"]
        [[rule]]
        action = "allow"
        from = ["group:g2"]
        to = ["group:g2"]
        proto = "tcp"
        ports = ["80"]
        [[rule]]
        action = "deny"
        from = ["*"]
        to = ["group:g0"]
        proto = "udp"
    "#;

    fn node(id: i64, groups: &[&str], hub: bool, reachable: bool) -> Node {
        let ep: SocketAddr = format!("198.51.100.{}:51820", id % 250).parse().unwrap();
        let endpoints = EndpointReport {
            local: vec![ep],
            reflexive: Some(if reachable {
                ep
            } else {
                format!("203.0.113.{}:4000", id % 250).parse().unwrap()
            }),
            nat: None,
        };
        Node::new(
            id,
            1,
            format!("n{id}"),
            key(id),
            format!("100.64.0.{id}").parse().unwrap(),
            groups.iter().map(|g| (*g).to_owned()).collect(),
            hub,
            endpoints,
            format!("cred{id}"),
            0,
        )
    }

    fn world(policy_text: &str) -> World {
        let mut w = World::default();
        w.networks.insert(
            1,
            Network {
                id: 1,
                name: "net".into(),
                overlay: "100.64.0.0/24".parse().unwrap(),
                topology: Topology::FullMesh,
                policy: policy(policy_text),
                created_at: 0,
            },
        );
        for id in 1..=24 {
            let g = format!("g{}", id % 4);
            let mut groups = vec![g.as_str()];
            if id % 7 == 0 {
                groups.push("g1");
            }
            let mut n = node(id, &groups, false, id % 3 == 0);
            n.via_hub = id % 5 == 0;
            w.nodes.insert(id, n);
        }
        w.reindex();
        w
    }

    /// The map as compiled before the index: every node, the whole policy.
    fn reference(w: &World, me: &Node, version: u64) -> NetworkMap {
        let net = &w.networks[&me.network_id];
        let view = w.view(net, &net.policy, w.primary_hub(net.id));
        let others: Vec<NodeView<'_>> = w
            .nodes
            .values()
            .filter(|n| n.network_id == me.network_id)
            .map(Node::view)
            .collect();
        full_map(&me.view(), others.iter(), &view, version)
    }

    fn check_full_maps(w: &World) {
        for n in w.nodes.values() {
            assert_eq!(
                w.full_map(n).unwrap(),
                reference(w, n, w.epoch),
                "node {}",
                n.name
            );
        }
    }

    fn check_index(w: &World) {
        let mut fresh = World::default();
        for (id, n) in &w.nodes {
            fresh.index.add(*id, &Indexed::of(n));
        }
        assert_eq!(w.index, fresh.index);
    }

    #[test]
    fn full_maps_match_the_unindexed_compilation() {
        let allow_all = "default = \"allow\"\n[[rule]]\naction = \"deny\"\nfrom = [\"group:g2\"]\nto = [\"group:g3\"]\n";
        let star = "default = \"deny\"\n[[rule]]\naction = \"allow\"\nfrom = [\"node:n1\"]\nto = [\"*\"]\nproto = \"icmp\"\n";
        for text in [GROUPS, allow_all, star, "default = \"deny\"\n"] {
            let mut w = world(text);
            check_full_maps(&w);
            // With hubs: everyone sees them, they see everyone.
            for id in [3, 10] {
                let before = w.before(1, Some(id));
                w.nodes.get_mut(&id).unwrap().hub = true;
                w.push_changes(before);
            }
            check_full_maps(&w);
            check_index(&w);
        }
    }

    #[test]
    fn lookups_use_the_index_and_follow_changes() {
        let mut w = world(GROUPS);
        assert_eq!(w.node_by_credential("cred5").unwrap().id, 5);
        assert!(w.node_by_credential("nope").is_none());
        assert_eq!(w.node_by_key(1, &key(7)).unwrap().id, 7);
        assert!(w.node_by_key(2, &key(7)).is_none());
        assert_eq!(
            w.nodes_named(1, "n7").map(|n| n.id).collect::<Vec<_>>(),
            [7]
        );
        assert_eq!(w.nodes_named(1, "n99").count(), 0);
        assert!(w.address_in_use(1, "100.64.0.7".parse().unwrap()));
        assert!(!w.address_in_use(1, "100.64.0.99".parse().unwrap()));
        assert_eq!(w.nodes_of(1).count(), 24);
        assert_eq!(w.nodes_of(2).count(), 0);
        assert_eq!(w.primary_hub(1), None);

        // A new credential, a hub, new groups, a removal, an addition.
        let before = w.before(1, Some(5));
        w.nodes.get_mut(&5).unwrap().credential_hash = "cred5b".into();
        w.push_changes(before);
        assert!(w.node_by_credential("cred5").is_none());
        assert_eq!(w.node_by_credential("cred5b").unwrap().id, 5);

        for (id, hub) in [(9, true), (4, true)] {
            let before = w.before(1, Some(id));
            w.nodes.get_mut(&id).unwrap().hub = hub;
            w.push_changes(before);
        }
        // The first by name: n4 < n9.
        assert_eq!(w.primary_hub(1), Some(key(4)));

        let before = w.before(1, Some(6));
        w.nodes.get_mut(&6).unwrap().groups = vec!["g0".into(), "g3".into()];
        w.push_changes(before);

        let before = w.before(1, Some(4));
        w.close_streams(4);
        w.nodes.remove(&4);
        w.push_changes(before);
        assert_eq!(w.primary_hub(1), Some(key(9)));
        assert!(w.node_by_key(1, &key(4)).is_none());
        assert!(!w.address_in_use(1, "100.64.0.4".parse().unwrap()));

        let before = w.before(1, Some(7));
        w.nodes.get_mut(&7).unwrap().name = "seven".into();
        w.push_changes(before);
        assert_eq!(w.nodes_named(1, "n7").count(), 0);
        assert_eq!(w.nodes_named(1, "seven").next().unwrap().id, 7);

        let before = w.before(1, Some(30));
        w.nodes.insert(30, node(30, &["g2"], false, true));
        w.push_changes(before);
        assert_eq!(w.nodes_of(1).count(), 24);
        check_index(&w);
        check_full_maps(&w);

        // A second network: its nodes are apart from the first's.
        let mut other = w.networks[&1].clone();
        other.id = 2;
        other.name = "other".into();
        w.networks.insert(2, other);
        let before = w.before(2, Some(50));
        let mut n = node(50, &["g0"], false, true);
        n.network_id = 2;
        w.nodes.insert(50, n);
        w.push_changes(before);
        assert_eq!(w.nodes_of(1).count(), 24);
        assert_eq!(w.nodes_of(2).map(|n| n.id).collect::<Vec<_>>(), [50]);
        assert!(w.full_map(&w.nodes[&50]).unwrap().peers.is_empty());
        check_index(&w);
        check_full_maps(&w);
    }

    /// Reads everything queued on each stream into that node's map.
    fn drain(maps: &mut BTreeMap<i64, (mpsc::Receiver<MapUpdate>, Option<NetworkMap>)>) {
        for (id, (rx, map)) in maps.iter_mut() {
            while let Ok(update) = rx.try_recv() {
                match update {
                    MapUpdate::Full(m) => *map = Some(m),
                    MapUpdate::Delta(d) => map
                        .as_mut()
                        .unwrap_or_else(|| panic!("node {id}: a delta before a full map"))
                        .apply(&d)
                        .unwrap_or_else(|e| panic!("node {id}: {e}")),
                }
            }
        }
    }

    fn check_streams(
        w: &World,
        maps: &BTreeMap<i64, (mpsc::Receiver<MapUpdate>, Option<NetworkMap>)>,
    ) {
        for (id, (_, map)) in maps {
            let Some(n) = w.nodes.get(id) else { continue };
            // A node holds its map at the version last sent to it.
            assert_eq!(
                map.as_ref().unwrap(),
                &reference(w, n, n.version),
                "node {}",
                n.name
            );
        }
    }

    #[test]
    fn every_stream_of_a_node_gets_the_update() {
        let mut w = world(GROUPS);
        let mut a = w.subscribe(4).unwrap();
        let mut b = w.subscribe(4).unwrap();
        let full = a.try_recv().unwrap();
        assert_eq!(b.try_recv().unwrap(), full);
        // n8 shares g0 with n4; moving it out changes n4's map.
        let before = w.before(1, Some(8));
        w.nodes.get_mut(&8).unwrap().groups = vec!["g3".into()];
        assert_eq!(w.push_changes(before), 2);
        let delta = a.try_recv().unwrap();
        assert!(matches!(&delta, MapUpdate::Delta(d) if d.remove == [key(8)]));
        assert_eq!(b.try_recv().unwrap(), delta);
    }

    #[test]
    fn deltas_add_up_to_the_full_map() {
        let mut w = world(GROUPS);
        let mut maps = BTreeMap::new();
        for id in 1..=24 {
            maps.insert(id, (w.subscribe(id).unwrap(), None));
        }
        drain(&mut maps);
        check_streams(&w, &maps);

        // The policy change the benchmark makes: no SSH inside g0 and g1.
        let mut changed = w.networks[&1].policy.clone();
        let mut no_ssh = policy(
            "default = \"deny\"\n[[rule]]\naction = \"deny\"\nfrom = [\"group:g0\"]\nto = [\"group:g0\"]\nproto = \"tcp\"\nports = [\"22\"]\n[[rule]]\naction = \"deny\"\nfrom = [\"group:g1\"]\nto = [\"group:g1\"]\nproto = \"tcp\"\nports = [\"22\"]\n",
        )
        .rules;
        no_ssh.append(&mut changed.rules);
        changed.rules = no_ssh;
        let before = w.before(1, None);
        w.networks.get_mut(&1).unwrap().policy = changed;
        assert!(w.push_changes(before) > 0);
        drain(&mut maps);
        check_streams(&w, &maps);

        // Groups move, a hub appears, a node goes, one arrives.
        let before = w.before(1, Some(6));
        w.nodes.get_mut(&6).unwrap().groups = vec!["g1".into()];
        w.push_changes(before);
        drain(&mut maps);
        check_streams(&w, &maps);

        let before = w.before(1, Some(8));
        w.nodes.get_mut(&8).unwrap().hub = true;
        w.push_changes(before);
        drain(&mut maps);
        check_streams(&w, &maps);

        let before = w.before(1, Some(13));
        w.close_streams(13);
        w.nodes.remove(&13);
        w.push_changes(before);
        maps.remove(&13);
        drain(&mut maps);
        check_streams(&w, &maps);

        let before = w.before(1, Some(40));
        w.nodes.insert(40, node(40, &["g0"], false, false));
        w.push_changes(before);
        maps.insert(40, (w.subscribe(40).unwrap(), None));
        drain(&mut maps);
        check_streams(&w, &maps);

        // Back to "allow": every pair at once.
        let before = w.before(1, None);
        w.networks.get_mut(&1).unwrap().policy = Policy::default();
        w.push_changes(before);
        drain(&mut maps);
        check_streams(&w, &maps);
        check_index(&w);
    }
}
