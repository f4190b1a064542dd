//! The virtual network: hosts, NAT routers, the segments they sit on, and
//! the time-ordered queue of datagrams in flight.
//!
//! Segments are the internet and each router's LAN. A host sits on one
//! segment; a router's outside interface sits on one (the internet, or
//! another router's LAN for double NAT) and it owns a LAN. A datagram is
//! routed hop by hop, one event per node it reaches, so a NAT decides at the
//! moment the datagram arrives (which is what makes simultaneous open a race
//! it can win or lose, as on a real network).
//!
//! Events are ordered by (time, sequence number); the sequence number is the
//! order they were scheduled in, so equal times are resolved the same way on
//! every run. This module owns topology, routing and delivery; NAT decisions
//! are `nat`'s, impairment is `link`'s.
//!
//! The shape follows what Firezone's connlib tunnel tests taught: one shared
//! virtual clock, hosts found by address in a routing table, datagrams held
//! until their delivery time and handed to the sans-IO state machine as
//! input. What is added here is the NAT in the middle, decided per hop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use crate::clock::Clock;
use crate::error::SimError;
use crate::link::Link;
use crate::nat::{NatConfig, NatRefusal, NatTable};
use crate::rng::SimRng;
use crate::stats::{Counters, DropReason, NodeRef, Trace, TraceEntry, TraceKind};

/// A host, by the order it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub usize);

/// A NAT router, by the order it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouterId(pub usize);

/// How a simulation starts.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Every random choice (loss, jitter, NAT ports) follows from it.
    pub seed: u64,
    /// The origin of the virtual clock. `None`: `Instant::now()` once, at
    /// construction; only `Instant` arithmetic depends on it, never a run.
    pub base: Option<Instant>,
    /// How many trace entries to keep (the most recent); 0 turns it off.
    pub trace_capacity: usize,
    /// The link new hosts and routers get.
    pub default_link: Link,
}

impl SimConfig {
    pub fn seed(seed: u64) -> Self {
        SimConfig {
            seed,
            base: None,
            trace_capacity: 0,
            default_link: Link::IDEAL,
        }
    }
}

/// A datagram a host received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// The host's address and bound port it arrived on.
    pub local: SocketAddr,
    /// Its source, as seen after every NAT on the way.
    pub from: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Segment {
    Internet,
    Lan(RouterId),
}

/// Where an event takes a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    Host(HostId),
    /// A router's outside interface.
    RouterWan(RouterId),
    /// A router's LAN interface.
    RouterLan(RouterId),
}

#[derive(Debug)]
struct Host {
    name: String,
    addr: Ipv4Addr,
    segment: Segment,
    link: Link,
    ports: BTreeSet<u16>,
    inbox: VecDeque<Received>,
}

#[derive(Debug)]
struct Router {
    name: String,
    wan: Ipv4Addr,
    segment: Segment,
    link: Link,
    lan: Ipv4Net,
    /// The last host index handed out in `lan` (the router is .1).
    last_host: u32,
    nat: NatTable,
}

#[derive(Debug, Clone)]
struct Datagram {
    id: u64,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    bytes: Vec<u8>,
}

/// The simulated network. Nothing happens until it is advanced
/// ([`Sim::advance_to`], [`Sim::step`]); then events are processed in time
/// order and received datagrams wait in each host's queue
/// ([`Sim::poll_received`]).
///
/// A driver for sans-IO nodes looks like:
///
/// ```text
/// while let Some(t) = earliest(sim.next_event_time(), node_timers) {
///     sim.advance_to(t);
///     for (host, node) in &mut nodes {
///         while let Some(d) = sim.poll_received(host) {
///             node.handle_datagram(sim.now(), d.local, d.from, &d.bytes);
///         }
///         node.handle_timeout(sim.now());
///         while let Some(tx) = node.poll_transmit() {
///             sim.send(host, tx.src_port, tx.dst, tx.bytes)?;
///         }
///     }
/// }
/// ```
#[derive(Debug)]
pub struct Sim {
    clock: Clock,
    rng: SimRng,
    default_link: Link,
    hosts: Vec<Host>,
    routers: Vec<Router>,
    /// Who owns each address on each segment.
    owners: BTreeMap<(Segment, Ipv4Addr), Hop>,
    events: BTreeMap<(Duration, u64), (Hop, Datagram)>,
    next_seq: u64,
    next_packet: u64,
    counters: Counters,
    trace: Trace,
}

/// The first port [`Sim::bind`] hands out for port 0 (IANA's dynamic range).
const FIRST_EPHEMERAL_PORT: u16 = 49152;

impl Sim {
    /// A simulation from `seed`, with ideal links and tracing off.
    pub fn new(seed: u64) -> Self {
        Self::with_config(SimConfig::seed(seed))
    }

    pub fn with_config(config: SimConfig) -> Self {
        Sim {
            clock: Clock::new(config.base.unwrap_or_else(Instant::now)),
            rng: SimRng::new(config.seed),
            default_link: config.default_link,
            hosts: Vec::new(),
            routers: Vec::new(),
            owners: BTreeMap::new(),
            events: BTreeMap::new(),
            next_seq: 0,
            next_packet: 0,
            counters: Counters::default(),
            trace: Trace::new(config.trace_capacity),
        }
    }

    // ---- topology -------------------------------------------------------

    /// A host on the internet at `addr` (use the TEST-NETs: 192.0.2.0/24,
    /// 198.51.100.0/24, 203.0.113.0/24).
    pub fn add_public_host(&mut self, name: &str, addr: Ipv4Addr) -> Result<HostId, SimError> {
        self.add_host(name, addr, Segment::Internet)
    }

    /// A host on `router`'s LAN, at its next free address.
    pub fn add_lan_host(&mut self, name: &str, router: RouterId) -> Result<HostId, SimError> {
        let addr = self.next_lan_addr(router)?;
        self.add_host(name, addr, Segment::Lan(router))
    }

    /// A NAT router on the internet at `wan`, owning `lan` (e.g.
    /// 10.1.0.0/24; the router takes the first address of it).
    pub fn add_router(
        &mut self,
        name: &str,
        wan: Ipv4Addr,
        lan: Ipv4Net,
        nat: impl Into<NatConfig>,
    ) -> Result<RouterId, SimError> {
        self.add_router_on(name, wan, Segment::Internet, lan, nat.into())
    }

    /// A NAT router on `parent`'s LAN (double NAT), at the parent LAN's
    /// next free address, owning `lan`.
    pub fn add_router_behind(
        &mut self,
        name: &str,
        parent: RouterId,
        lan: Ipv4Net,
        nat: impl Into<NatConfig>,
    ) -> Result<RouterId, SimError> {
        let wan = self.next_lan_addr(parent)?;
        self.add_router_on(name, wan, Segment::Lan(parent), lan, nat.into())
    }

    fn add_host(
        &mut self,
        name: &str,
        addr: Ipv4Addr,
        segment: Segment,
    ) -> Result<HostId, SimError> {
        let id = HostId(self.hosts.len());
        self.claim(segment, addr, Hop::Host(id))?;
        self.hosts.push(Host {
            name: name.to_owned(),
            addr,
            segment,
            link: self.default_link,
            ports: BTreeSet::new(),
            inbox: VecDeque::new(),
        });
        Ok(id)
    }

    fn add_router_on(
        &mut self,
        name: &str,
        wan: Ipv4Addr,
        segment: Segment,
        lan: Ipv4Net,
        nat: NatConfig,
    ) -> Result<RouterId, SimError> {
        let lan = lan.trunc();
        if lan.prefix_len() > 30 {
            return Err(SimError::LanTooSmall(lan));
        }
        let id = RouterId(self.routers.len());
        self.claim(segment, wan, Hop::RouterWan(id))?;
        self.routers.push(Router {
            name: name.to_owned(),
            wan,
            segment,
            link: self.default_link,
            lan,
            last_host: 1,
            nat: NatTable::new(nat, wan),
        });
        Ok(id)
    }

    fn claim(&mut self, segment: Segment, addr: Ipv4Addr, hop: Hop) -> Result<(), SimError> {
        if self.owners.contains_key(&(segment, addr)) {
            return Err(SimError::AddressInUse(addr));
        }
        self.owners.insert((segment, addr), hop);
        Ok(())
    }

    fn next_lan_addr(&mut self, router: RouterId) -> Result<Ipv4Addr, SimError> {
        let r = self
            .routers
            .get_mut(router.0)
            .ok_or(SimError::UnknownRouter(router))?;
        let next = r.last_host + 1;
        let addr = Ipv4Addr::from(u32::from(r.lan.network()) + next);
        if addr >= r.lan.broadcast() {
            return Err(SimError::LanFull(r.lan));
        }
        r.last_host = next;
        Ok(addr)
    }

    /// Sets `host`'s link to its segment.
    pub fn set_host_link(&mut self, host: HostId, link: Link) -> Result<(), SimError> {
        self.host_mut(host)?.link = link;
        Ok(())
    }

    /// Sets the link of `router`'s outside interface.
    pub fn set_router_link(&mut self, router: RouterId, link: Link) -> Result<(), SimError> {
        self.routers
            .get_mut(router.0)
            .ok_or(SimError::UnknownRouter(router))?
            .link = link;
        Ok(())
    }

    /// `host`'s own address (a 10.x address for a LAN host).
    pub fn host_addr(&self, host: HostId) -> Result<Ipv4Addr, SimError> {
        Ok(self.host(host)?.addr)
    }

    pub fn host_name(&self, host: HostId) -> Result<&str, SimError> {
        Ok(&self.host(host)?.name)
    }

    /// `router`'s outside address.
    pub fn router_wan(&self, router: RouterId) -> Result<Ipv4Addr, SimError> {
        Ok(self.router(router)?.wan)
    }

    pub fn router_name(&self, router: RouterId) -> Result<&str, SimError> {
        Ok(&self.router(router)?.name)
    }

    /// `router`'s NAT behaviour.
    pub fn router_nat(&self, router: RouterId) -> Result<NatConfig, SimError> {
        Ok(*self.router(router)?.nat.config())
    }

    /// `router`'s live mappings, inside → outside endpoint, by outside port.
    pub fn nat_mappings(
        &self,
        router: RouterId,
    ) -> Result<Vec<(SocketAddr, SocketAddr)>, SimError> {
        let now = self.clock.elapsed();
        Ok(self
            .router(router)?
            .nat
            .mappings(now)
            .into_iter()
            .map(|(i, o)| (i.into(), o.into()))
            .collect())
    }

    /// Makes `router` forget every mapping (as if it rebooted): what
    /// inside hosts had learned of their outside endpoints goes stale.
    pub fn flush_nat(&mut self, router: RouterId) -> Result<(), SimError> {
        self.routers
            .get_mut(router.0)
            .ok_or(SimError::UnknownRouter(router))?
            .nat
            .flush();
        Ok(())
    }

    fn host(&self, host: HostId) -> Result<&Host, SimError> {
        self.hosts.get(host.0).ok_or(SimError::UnknownHost(host))
    }

    fn host_mut(&mut self, host: HostId) -> Result<&mut Host, SimError> {
        self.hosts
            .get_mut(host.0)
            .ok_or(SimError::UnknownHost(host))
    }

    fn router(&self, router: RouterId) -> Result<&Router, SimError> {
        self.routers
            .get(router.0)
            .ok_or(SimError::UnknownRouter(router))
    }

    // ---- sockets --------------------------------------------------------

    /// Binds `port` on `host` (0: the first free port from 49152); the port.
    pub fn bind(&mut self, host: HostId, port: u16) -> Result<u16, SimError> {
        let h = self.host_mut(host)?;
        let port = if port == 0 {
            (FIRST_EPHEMERAL_PORT..=u16::MAX)
                .find(|p| !h.ports.contains(p))
                .ok_or(SimError::NoFreePort(host))?
        } else {
            port
        };
        if !h.ports.insert(port) {
            return Err(SimError::PortInUse { host, port });
        }
        Ok(port)
    }

    /// Unbinds `port`; datagrams that arrive for it later are dropped.
    pub fn unbind(&mut self, host: HostId, port: u16) -> Result<(), SimError> {
        if !self.host_mut(host)?.ports.remove(&port) {
            return Err(SimError::NotBound { host, port });
        }
        Ok(())
    }

    /// Sends `bytes` from `host`'s bound port `from_port` to `to`, now.
    pub fn send(
        &mut self,
        host: HostId,
        from_port: u16,
        to: SocketAddr,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<(), SimError> {
        let SocketAddr::V4(dst) = to else {
            return Err(SimError::Ipv6Unsupported(to));
        };
        let h = self.host(host)?;
        if !h.ports.contains(&from_port) {
            return Err(SimError::NotBound {
                host,
                port: from_port,
            });
        }
        let (segment, link) = (h.segment, h.link);
        let d = Datagram {
            id: self.next_packet,
            src: SocketAddrV4::new(h.addr, from_port),
            dst,
            bytes: bytes.into(),
        };
        self.next_packet += 1;
        self.counters.sent += 1;
        self.record(NodeRef::Host(host), TraceKind::Sent, &d);
        self.forward(NodeRef::Host(host), link, segment, d);
        Ok(())
    }

    /// The next datagram `host` received, oldest first.
    pub fn poll_received(&mut self, host: HostId) -> Option<Received> {
        self.hosts.get_mut(host.0)?.inbox.pop_front()
    }

    // ---- time -----------------------------------------------------------

    /// The current simulated instant.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// The clock (its origin, offsets).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// When the next datagram reaches a node, if any is in flight.
    pub fn next_event_time(&self) -> Option<Instant> {
        self.events
            .first_key_value()
            .map(|(&(at, _), _)| self.clock.at(at))
    }

    /// Processes every event up to and including `t`, then stands the clock
    /// at `t` (never backwards: an earlier `t` processes what is due now).
    pub fn advance_to(&mut self, t: Instant) {
        let target = self.clock.offset_of(t).max(self.clock.elapsed());
        while self
            .events
            .first_key_value()
            .is_some_and(|(&(at, _), _)| at <= target)
        {
            self.step();
        }
        self.clock.advance_to(target);
    }

    /// [`Sim::advance_to`] `d` from now.
    pub fn advance_by(&mut self, d: Duration) {
        let t = self.now() + d;
        self.advance_to(t);
    }

    /// Processes the one next event, moving the clock to it; its time, or
    /// `None` when nothing is in flight.
    pub fn step(&mut self) -> Option<Instant> {
        let ((at, _), (hop, d)) = self.events.pop_first()?;
        self.clock.advance_to(at);
        self.arrive(hop, d);
        Some(self.clock.at(at))
    }

    /// Steps until nothing is in flight; the number of events processed.
    /// Hosts do not answer by themselves, so this ends unless a caller
    /// keeps sending.
    pub fn run_until_idle(&mut self) -> usize {
        let mut n = 0;
        while self.step().is_some() {
            n += 1;
        }
        n
    }

    // ---- observation ----------------------------------------------------

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The kept trace entries, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &TraceEntry> {
        self.trace.entries()
    }

    // ---- the network ----------------------------------------------------

    fn record(&mut self, node: NodeRef, kind: TraceKind, d: &Datagram) {
        self.trace.push(TraceEntry {
            at: self.clock.elapsed(),
            packet: d.id,
            node,
            kind,
            src: d.src,
            dst: d.dst,
            len: d.bytes.len(),
        });
    }

    fn drop_at(&mut self, node: NodeRef, reason: DropReason, d: &Datagram) {
        self.counters.record_drop(reason);
        self.record(node, TraceKind::Dropped(reason), d);
    }

    /// Puts `d`, leaving `from` over `link`, onto `segment`, towards the
    /// owner of its destination address (on a LAN, by default the router).
    fn forward(&mut self, from: NodeRef, link: Link, segment: Segment, d: Datagram) {
        let to = match self.owners.get(&(segment, *d.dst.ip())) {
            Some(&hop) => hop,
            None => match segment {
                // Whatever is not on the LAN goes to its router (the
                // default route); the router itself has nowhere else to
                // put what it sends into its LAN.
                Segment::Lan(r) if from != NodeRef::Router(r) => Hop::RouterLan(r),
                _ => return self.drop_at(from, DropReason::NoRoute, &d),
            },
        };
        let rx_link = match to {
            Hop::Host(h) => self.hosts[h.0].link,
            Hop::RouterWan(r) => self.routers[r.0].link,
            Hop::RouterLan(_) => Link::IDEAL,
        };
        let (Some(out), Some(inn)) = (link.sample(&mut self.rng), rx_link.sample(&mut self.rng))
        else {
            return self.drop_at(from, DropReason::Loss, &d);
        };
        let at = self.clock.elapsed() + out + inn;
        self.events.insert((at, self.next_seq), (to, d));
        self.next_seq += 1;
    }

    fn arrive(&mut self, hop: Hop, d: Datagram) {
        match hop {
            Hop::Host(h) => self.arrive_at_host(h, d),
            Hop::RouterWan(r) => self.arrive_from_wan(r, d),
            Hop::RouterLan(r) => self.arrive_from_lan(r, d),
        }
    }

    fn arrive_at_host(&mut self, h: HostId, d: Datagram) {
        let node = NodeRef::Host(h);
        let host = &self.hosts[h.0];
        if *d.dst.ip() != host.addr || !host.ports.contains(&d.dst.port()) {
            return self.drop_at(node, DropReason::NoListener, &d);
        }
        self.counters.delivered += 1;
        self.record(node, TraceKind::Delivered, &d);
        let at = self.clock.now();
        self.hosts[h.0].inbox.push_back(Received {
            at,
            local: d.dst.into(),
            from: d.src.into(),
            bytes: d.bytes,
        });
    }

    /// Inbound at a router's outside interface: RFC 4787 §5 filtering, then
    /// translation of the destination to the mapping's inside endpoint.
    fn arrive_from_wan(&mut self, r: RouterId, mut d: Datagram) {
        let now = self.clock.elapsed();
        let result = self.routers[r.0].nat.inbound(now, d.dst.port(), d.src);
        self.sync_nat_counters();
        match result {
            Ok(inside) => {
                d.dst = inside;
                self.pass_on(r, Segment::Lan(r), Link::IDEAL, d);
            }
            Err(refusal) => self.drop_at(NodeRef::Router(r), reason(refusal), &d),
        }
    }

    /// From a router's LAN: to its own outside address is hairpinning (§6);
    /// anything else goes out, source-translated (§4.1).
    fn arrive_from_lan(&mut self, r: RouterId, mut d: Datagram) {
        let node = NodeRef::Router(r);
        let now = self.clock.elapsed();
        let router = &mut self.routers[r.0];
        if router.lan.contains(d.dst.ip()) {
            return self.drop_at(node, DropReason::NoRoute, &d);
        }
        if *d.dst.ip() == router.wan {
            if router.nat.config().udp_blocked {
                return self.drop_at(node, DropReason::UdpBlocked, &d);
            }
            if router.nat.config().hairpin == crate::nat::Hairpin::Off {
                return self.drop_at(node, DropReason::HairpinOff, &d);
            }
            // REQ-9a: the receiver sees the sender's outside endpoint, so
            // the sender's mapping is made (or refreshed) as for any
            // outbound datagram.
            let result = router
                .nat
                .outbound(now, d.src, d.dst, &mut self.rng)
                .and_then(|outside| {
                    let inside = router.nat.hairpin_target(now, d.dst.port(), outside)?;
                    Ok((outside, inside))
                });
            self.sync_nat_counters();
            return match result {
                Ok((outside, inside)) => {
                    d.src = outside;
                    d.dst = inside;
                    self.pass_on(r, Segment::Lan(r), Link::IDEAL, d);
                }
                Err(refusal) => self.drop_at(node, reason(refusal), &d),
            };
        }
        let result = router.nat.outbound(now, d.src, d.dst, &mut self.rng);
        let (segment, link) = (router.segment, router.link);
        self.sync_nat_counters();
        match result {
            Ok(outside) => {
                d.src = outside;
                self.pass_on(r, segment, link, d);
            }
            Err(refusal) => self.drop_at(node, reason(refusal), &d),
        }
    }

    fn pass_on(&mut self, r: RouterId, segment: Segment, link: Link, d: Datagram) {
        self.counters.forwarded += 1;
        self.record(NodeRef::Router(r), TraceKind::Forwarded, &d);
        self.forward(NodeRef::Router(r), link, segment, d);
    }

    fn sync_nat_counters(&mut self) {
        self.counters.nat_mappings_created = self.routers.iter().map(|r| r.nat.created).sum();
        self.counters.nat_mappings_expired = self.routers.iter().map(|r| r.nat.expired).sum();
    }
}

fn reason(refusal: NatRefusal) -> DropReason {
    match refusal {
        NatRefusal::Blocked => DropReason::UdpBlocked,
        NatRefusal::NoMapping => DropReason::NoMapping,
        NatRefusal::Filtered => DropReason::Filtered,
        NatRefusal::PortsExhausted => DropReason::PortsExhausted,
    }
}
