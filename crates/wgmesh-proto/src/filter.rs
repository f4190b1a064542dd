//! The inbound packet filter: a node drops whatever its network's policy
//! does not let a peer send it, whatever that peer sends (as Nebula does),
//! and lets in the replies to flows it opened itself (as conntrack does).
//!
//! [`PacketFilter`] is sans-IO like the rest of this crate: the caller
//! hands it every packet the node sends ([`PacketFilter::outbound`], to
//! record flows) and every decrypted packet it receives
//! ([`PacketFilter::inbound`], for a [`Verdict`]), with the time. The
//! [`Device`](crate::Device) does both when it has one
//! ([`Device::set_filter`](crate::Device::set_filter)).
//!
//! It owns the flow table and the per-source rules the server compiled
//! ([`wgmesh_core::netmap::MapPeer::inbound`], evaluated with
//! [`policy::decide`]). It does not own the policy, its compilation (the
//! server's, wgmesh-core `netmap`), nor the AllowedIPs source check that
//! makes a packet's source address trustworthy (the device's, done first).
//! Reading headers is `filter/packet.rs`'s.
//!
//! An inbound packet, in order:
//! 1. not a readable IPv4/IPv6 packet (or a TCP/UDP/ICMP header cut
//!    short) → denied;
//! 2. destination not this node's (a hub forwarding between nodes) →
//!    allowed: the destination node enforces its own policy. Multicast and
//!    broadcast destinations count as this node's;
//! 3. a reply to a flow this node opened (TCP/UDP by addresses and ports,
//!    ICMP echo by identifier, an ICMP error quoting such a flow's packet),
//!    or a later fragment of a packet whose first fragment was let in →
//!    allowed;
//! 4. a source that is no node of the map → denied;
//! 5. else the source's rules, first match wins, with the TCP/UDP
//!    destination port (none for ICMP, other protocols and later
//!    fragments, which port rules therefore never match), else the
//!    network's default.
//!
//! Established flows outlive a policy change until they time out, as with
//! conntrack: replacing the rules keeps the flow table.
//!
//! Allocation: none per packet; the flow and fragment tables grow (and
//! then reuse their memory) up to their bounds.

mod packet;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use wgmesh_core::netmap::{Action, FilterRule, NetworkMap, Proto, policy};

use packet::{FlowKey, Ip, Mode, TCP_FIN, TCP_RST, Transport, parse_ip};

/// Flows remembered at most; then the expired ones go, and if that is not
/// enough, the eighth that would expire soonest.
pub const DEFAULT_FLOW_CAPACITY: usize = 65_536;

/// Fragment trains remembered at most (their first fragment was let in).
pub const DEFAULT_FRAGMENT_CAPACITY: usize = 4_096;

/// An established TCP flow's idle timeout (nf_conntrack's is 5 days; a
/// mesh node's peers come and go, and a silent TCP flow that outlives it
/// is re-admitted by the rules or by this node's next packet).
pub const TCP_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A TCP flow after a FIN or RST either way (nf_conntrack's TIME_WAIT is
/// 2 minutes; the rest of a close takes well under this).
pub const TCP_CLOSING_TIMEOUT: Duration = Duration::from_secs(10);
/// nf_conntrack's `udp_timeout_stream`.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(2 * 60);
/// nf_conntrack's `icmp_timeout`; also for other protocols.
pub const ICMP_TIMEOUT: Duration = Duration::from_secs(30);
/// Linux's `ipfrag_time`: how long the host waits for a train's fragments.
pub const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What to do with a received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(DenyReason),
}

/// Why a received packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// Not a readable IP packet, or its transport header is cut short.
    Malformed,
    /// Its source is no node of the map.
    UnknownSource,
    /// The source's rules (or the default) deny it.
    Policy {
        /// IPv4 protocol / IPv6 upper-layer next header.
        proto: u8,
        /// TCP/UDP destination port.
        port: Option<u16>,
    },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::Malformed => f.write_str("malformed packet"),
            DenyReason::UnknownSource => f.write_str("source is not a node of the network"),
            DenyReason::Policy { proto, port } => {
                f.write_str("policy denies ")?;
                match *proto {
                    Proto::TCP => f.write_str("tcp")?,
                    Proto::UDP => f.write_str("udp")?,
                    Proto::ICMP => f.write_str("icmp")?,
                    Proto::ICMPV6 => f.write_str("icmpv6")?,
                    other => write!(f, "protocol {other}")?,
                }
                match port {
                    Some(p) => write!(f, "/{p}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Running totals of the filter's decisions, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FilterCounters {
    /// Allowed: for another node (forwarded).
    pub allowed_forwarded: u64,
    /// Allowed: a reply to one of this node's flows, or a later fragment.
    pub allowed_established: u64,
    /// Allowed by the source's rules or the default.
    pub allowed_by_policy: u64,
    pub denied_malformed: u64,
    pub denied_unknown_source: u64,
    pub denied_by_policy: u64,
    /// Live flows dropped to make room.
    pub flows_evicted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    expires: Instant,
    /// TCP: a FIN or RST was seen either way.
    closing: bool,
}

/// A fragment train: (source, destination, protocol, identification).
type TrainKey = (IpAddr, IpAddr, u8, u32);

/// The inbound filter of one node. See the module docs.
#[derive(Debug)]
pub struct PacketFilter {
    local: Vec<IpAddr>,
    default: Action,
    sources: HashMap<IpAddr, Vec<FilterRule>>,
    flows: HashMap<FlowKey, Flow>,
    flow_capacity: usize,
    trains: HashMap<TrainKey, Instant>,
    train_capacity: usize,
    /// Reused by eviction, so that it allocates only once.
    scratch: Vec<Instant>,
    counters: FilterCounters,
}

impl PacketFilter {
    /// A filter for a node with these overlay addresses; it knows no
    /// source yet, so it denies every packet to them until
    /// [`PacketFilter::set_sources`].
    pub fn new(local: Vec<IpAddr>, default: Action) -> Self {
        Self {
            local,
            default,
            sources: HashMap::new(),
            flows: HashMap::new(),
            flow_capacity: DEFAULT_FLOW_CAPACITY,
            trains: HashMap::new(),
            train_capacity: DEFAULT_FRAGMENT_CAPACITY,
            scratch: Vec::new(),
            counters: FilterCounters::default(),
        }
    }

    /// The filter a node's map asks for.
    pub fn from_map(map: &NetworkMap) -> Self {
        let mut filter = Self::new(Vec::new(), map.default_action);
        filter.apply_map(map);
        filter
    }

    /// Takes the addresses, default and rules of a new version of the map,
    /// keeping the flows.
    pub fn apply_map(&mut self, map: &NetworkMap) {
        self.set_local(vec![map.node.address.addr()]);
        self.set_default(map.default_action);
        self.set_sources(map.peers.iter().map(|p| (p.address, p.inbound.clone())));
    }

    pub fn set_local(&mut self, local: Vec<IpAddr>) {
        self.local = local;
    }

    pub fn set_default(&mut self, default: Action) {
        self.default = default;
    }

    /// Replaces every source's rules (a source listed twice keeps its last
    /// rules); sources not listed are unknown from now on. Flows stay.
    pub fn set_sources(&mut self, sources: impl IntoIterator<Item = (IpAddr, Vec<FilterRule>)>) {
        self.sources.clear();
        self.sources.extend(sources);
    }

    /// The most flows remembered (at least 8).
    pub fn set_flow_capacity(&mut self, capacity: usize) {
        self.flow_capacity = capacity.max(8);
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    pub fn counters(&self) -> &FilterCounters {
        &self.counters
    }

    fn is_local(&self, dst: IpAddr) -> bool {
        let group = match dst {
            IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
            IpAddr::V6(a) => a.is_multicast(),
        };
        group || self.local.contains(&dst)
    }

    /// A packet this node sends: records (or refreshes) its flow, so that
    /// replies pass whatever the rules say. Packets this node forwards
    /// (their source is not this node's) and unreadable ones are ignored.
    pub fn outbound(&mut self, now: Instant, packet: &[u8]) {
        let Ok(ip) = parse_ip(packet, Mode::Whole) else {
            return;
        };
        if !self.local.contains(&ip.src) {
            return;
        }
        let Ok(t) = ip.transport(Mode::Whole) else {
            return;
        };
        let Some(key) = FlowKey::outbound(&ip, t) else {
            return;
        };
        let closing = tcp_closes(ip.proto, t);
        if let Some(flow) = self.flows.get_mut(&key) {
            flow.closing |= closing;
            flow.expires = now + timeout(key.proto, flow.closing);
            return;
        }
        if self.flows.len() >= self.flow_capacity {
            self.make_room(now);
        }
        self.flows.insert(
            key,
            Flow {
                expires: now + timeout(key.proto, closing),
                closing,
            },
        );
    }

    /// A packet received from a peer (its source already checked against
    /// that peer's AllowedIPs): may it reach this node?
    pub fn inbound(&mut self, now: Instant, packet: &[u8]) -> Verdict {
        let verdict = self.decide(now, packet);
        let c = &mut self.counters;
        match verdict {
            Verdict::Deny(DenyReason::Malformed) => c.denied_malformed += 1,
            Verdict::Deny(DenyReason::UnknownSource) => c.denied_unknown_source += 1,
            Verdict::Deny(DenyReason::Policy { .. }) => c.denied_by_policy += 1,
            Verdict::Allow => {}
        }
        verdict
    }

    fn decide(&mut self, now: Instant, packet: &[u8]) -> Verdict {
        let Ok(ip) = parse_ip(packet, Mode::Whole) else {
            return Verdict::Deny(DenyReason::Malformed);
        };
        if !self.is_local(ip.dst) {
            self.counters.allowed_forwarded += 1;
            return Verdict::Allow;
        }
        let Ok(t) = ip.transport(Mode::Whole) else {
            return Verdict::Deny(DenyReason::Malformed);
        };
        if self.established(now, &ip, t) {
            self.counters.allowed_established += 1;
            self.remember_train(now, &ip);
            return Verdict::Allow;
        }
        let Some(rules) = self.sources.get(&ip.src) else {
            return Verdict::Deny(DenyReason::UnknownSource);
        };
        let port = t.dst_port();
        match policy::decide(rules, self.default, ip.proto, port) {
            Action::Allow => {
                self.counters.allowed_by_policy += 1;
                self.remember_train(now, &ip);
                Verdict::Allow
            }
            Action::Deny => Verdict::Deny(DenyReason::Policy {
                proto: ip.proto,
                port,
            }),
        }
    }

    /// A reply to a live flow (refreshing it), or a later fragment of a
    /// train let in.
    fn established(&mut self, now: Instant, ip: &Ip<'_>, t: Transport) -> bool {
        if t == Transport::LaterFragment {
            let Some(f) = ip.fragment else {
                return false;
            };
            return self
                .trains
                .get(&(ip.src, ip.dst, ip.proto, f.id))
                .is_some_and(|&expires| now < expires);
        }
        let Some(key) = FlowKey::inbound(ip, t) else {
            return false;
        };
        let Some(flow) = self.flows.get_mut(&key) else {
            return false;
        };
        if now >= flow.expires {
            self.flows.remove(&key);
            return false;
        }
        // An ICMP error does not keep its flow alive; a reply does.
        if !matches!(t, Transport::Error { .. }) {
            flow.closing |= tcp_closes(ip.proto, t);
            flow.expires = now + timeout(key.proto, flow.closing);
        }
        true
    }

    /// A first fragment let in: its train's later fragments (which carry no
    /// ports) follow it.
    fn remember_train(&mut self, now: Instant, ip: &Ip<'_>) {
        let Some(f) = ip.fragment.filter(|f| f.first) else {
            return;
        };
        if self.trains.len() >= self.train_capacity {
            self.trains.retain(|_, expires| now < *expires);
            if self.trains.len() >= self.train_capacity {
                // Only hosts sending many large datagrams at once get here;
                // their oldest trains' later fragments are judged alone.
                self.trains.clear();
            }
        }
        self.trains
            .insert((ip.src, ip.dst, ip.proto, f.id), now + FRAGMENT_TIMEOUT);
    }

    /// Frees at least one slot of the flow table: the expired flows go,
    /// and if none has, the eighth of the flows that would expire soonest
    /// (amortised: one O(n) pass per n/8 new flows).
    fn make_room(&mut self, now: Instant) {
        self.flows.retain(|_, f| now < f.expires);
        if self.flows.len() < self.flow_capacity {
            return;
        }
        self.scratch.clear();
        self.scratch.extend(self.flows.values().map(|f| f.expires));
        let nth = self.scratch.len() / 8;
        let (_, &mut threshold, _) = self.scratch.select_nth_unstable(nth);
        let before = self.flows.len();
        self.flows.retain(|_, f| f.expires > threshold);
        self.counters.flows_evicted += (before - self.flows.len()) as u64;
    }
}

fn tcp_closes(proto: u8, t: Transport) -> bool {
    proto == Proto::TCP
        && matches!(t, Transport::Ports { tcp_flags, .. } if tcp_flags & (TCP_FIN | TCP_RST) != 0)
}

fn timeout(proto: u8, closing: bool) -> Duration {
    match proto {
        Proto::TCP if closing => TCP_CLOSING_TIMEOUT,
        Proto::TCP => TCP_TIMEOUT,
        Proto::UDP => UDP_TIMEOUT,
        _ => ICMP_TIMEOUT,
    }
}

#[cfg(test)]
mod tests;
