//! NAT behaviour as RFC 4787 ("NAT Behavioral Requirements for Unicast
//! UDP") describes it, for the simulated routers.
//!
//! RFC 4787 splits a NAT's UDP behaviour into independent parts, and so does
//! [`NatConfig`]:
//!
//! * mapping (§4.1): which outside endpoint an inside endpoint gets:
//!   one for every destination ([`MappingBehaviour::EndpointIndependent`],
//!   REQ-1), one per destination address, or one per destination address and
//!   port ("symmetric");
//! * port assignment (§4.2): keep the inside port when it is free ("port
//!   preservation", §4.2.1), otherwise pick another (here: at random in
//!   1024–65535, REQ-3's range for inside ports above 1023);
//! * mapping refresh (§4.3): a mapping lives `mapping_timeout` after the last
//!   *outbound* datagram (REQ-6); inbound traffic does not refresh it, as in
//!   the lab's routers;
//! * filtering (§5): which unsolicited inbound datagrams a mapping lets in:
//!   from anyone ([`FilteringBehaviour::EndpointIndependent`]), from
//!   addresses the inside endpoint has sent to, or from exact endpoints it
//!   has sent to. Each such permission lives `mapping_timeout` after the last
//!   datagram sent to it;
//! * hairpinning (§6, REQ-9): a LAN host reaching another LAN host through
//!   the router's outside address, seeing the sender's outside endpoint
//!   (REQ-9a);
//! * and, outside RFC 4787, the "UDP blocked" firewall of classic STUN
//!   (RFC 3489 §10.1): no UDP crosses at all.
//!
//! [`NatKind`] names the same five behaviours as `wgmesh-lab`'s nftables
//! routers (`crates/wgmesh-lab/src/nat.rs`), so one test matrix runs in both.
//!
//! This module owns the translation table and its decisions; moving
//! datagrams between nodes is `net`'s.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use crate::rng::SimRng;

/// The NAT behaviours, named as in `wgmesh-lab`.
///
/// | kind              | mapping (§4.1)          | filtering (§5)          |
/// |-------------------|-------------------------|-------------------------|
/// | FullCone          | endpoint-independent    | endpoint-independent    |
/// | AddressRestricted | endpoint-independent    | address-dependent       |
/// | PortRestricted    | endpoint-independent    | address+port-dependent  |
/// | Symmetric         | address+port-dependent  | address+port-dependent  |
/// | UdpBlocked        | no UDP crosses at all (RFC 3489 §10.1)            |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering ("full cone").
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    AddressRestricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted,
    /// Address-and-port-dependent mapping and filtering ("symmetric"), a
    /// random outside port for every new destination (the lab's
    /// `fully-random`).
    Symmetric,
    /// No UDP in or out.
    UdpBlocked,
}

impl NatKind {
    pub const ALL: [NatKind; 5] = [
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
        NatKind::UdpBlocked,
    ];

    /// Whether one inside endpoint keeps one outside endpoint for every
    /// destination (RFC 4787 §4.1 "endpoint-independent mapping").
    pub fn endpoint_independent_mapping(self) -> bool {
        matches!(
            self,
            NatKind::FullCone | NatKind::AddressRestricted | NatKind::PortRestricted
        )
    }

    /// Whether UDP crosses this router at all.
    pub fn passes_udp(self) -> bool {
        self != NatKind::UdpBlocked
    }

    /// The kebab-case name the lab uses (`full-cone`, …).
    pub fn name(self) -> &'static str {
        match self {
            NatKind::FullCone => "full-cone",
            NatKind::AddressRestricted => "address-restricted",
            NatKind::PortRestricted => "port-restricted",
            NatKind::Symmetric => "symmetric",
            NatKind::UdpBlocked => "udp-blocked",
        }
    }
}

/// Whether LAN hosts reach each other through the outside address (RFC 4787
/// §6). Changes nothing on [`NatKind::UdpBlocked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hairpin {
    On,
    #[default]
    Off,
}

/// RFC 4787 §4.1: what an outside endpoint is shared across.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MappingBehaviour {
    /// One mapping per inside endpoint, whatever the destination (REQ-1).
    EndpointIndependent,
    /// One mapping per inside endpoint and destination address.
    AddressDependent,
    /// One mapping per inside endpoint and destination endpoint.
    AddressAndPortDependent,
}

/// RFC 4787 §5: which inbound datagrams a live mapping lets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilteringBehaviour {
    /// Anyone's.
    EndpointIndependent,
    /// Those from an address the inside endpoint has sent to (any port).
    AddressDependent,
    /// Those from an endpoint the inside endpoint has sent to.
    AddressAndPortDependent,
}

/// The shortest mapping timer RFC 4787 §4.3 REQ-5 allows (two minutes),
/// which the lab's routers use: pass it to [`NatConfig::mapping_timeout()`]
/// to mirror the lab exactly.
pub const RFC4787_MIN_MAPPING_TIMEOUT: Duration = Duration::from_secs(120);

/// The default mapping timeout: 30 s, shorter than REQ-5 on purpose. Many
/// deployed NATs forget an idle UDP mapping after about that long, and
/// keepalives (WireGuard's persistent keepalive is 25 s) must survive them.
pub const DEFAULT_MAPPING_TIMEOUT: Duration = Duration::from_secs(30);

/// A router's complete UDP behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatConfig {
    pub mapping: MappingBehaviour,
    pub filtering: FilteringBehaviour,
    /// §4.2.1: keep the inside port as the outside one when it is free.
    pub port_preservation: bool,
    /// §6.
    pub hairpin: Hairpin,
    /// §4.3: how long a mapping (and each filter permission) outlives the
    /// last outbound datagram that used it.
    pub mapping_timeout: Duration,
    /// Drop all UDP (not an RFC 4787 NAT; RFC 3489 §10.1's firewall).
    pub udp_blocked: bool,
}

impl NatConfig {
    /// The behaviour of `kind`, hairpinning off, the default timeout.
    pub fn kind(kind: NatKind) -> Self {
        use FilteringBehaviour as F;
        use MappingBehaviour as M;
        let (mapping, filtering) = match kind {
            NatKind::FullCone => (M::EndpointIndependent, F::EndpointIndependent),
            NatKind::AddressRestricted => (M::EndpointIndependent, F::AddressDependent),
            NatKind::PortRestricted | NatKind::UdpBlocked => {
                (M::EndpointIndependent, F::AddressAndPortDependent)
            }
            NatKind::Symmetric => (M::AddressAndPortDependent, F::AddressAndPortDependent),
        };
        NatConfig {
            mapping,
            filtering,
            port_preservation: kind != NatKind::Symmetric,
            hairpin: Hairpin::Off,
            mapping_timeout: DEFAULT_MAPPING_TIMEOUT,
            udp_blocked: kind == NatKind::UdpBlocked,
        }
    }

    /// This configuration with hairpinning `hairpin`.
    pub fn hairpin(self, hairpin: Hairpin) -> Self {
        NatConfig { hairpin, ..self }
    }

    /// This configuration with mapping timeout `timeout`.
    pub fn mapping_timeout(self, timeout: Duration) -> Self {
        NatConfig {
            mapping_timeout: timeout,
            ..self
        }
    }
}

impl From<NatKind> for NatConfig {
    fn from(kind: NatKind) -> Self {
        NatConfig::kind(kind)
    }
}

/// Why the NAT refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatRefusal {
    /// UDP is blocked.
    Blocked,
    /// Inbound to an outside port with no live mapping.
    NoMapping,
    /// Inbound that the mapping's filtering does not let in.
    Filtered,
    /// Every outside port is taken by a live mapping.
    PortsExhausted,
}

/// One mapping: an inside endpoint's outside port, and whom it has sent to.
#[derive(Debug, Clone)]
struct Binding {
    internal: SocketAddrV4,
    last_outbound: Duration,
    /// Destination endpoint → last outbound datagram to it (§5's state).
    sent_to: BTreeMap<SocketAddrV4, Duration>,
}

/// The lowest outside port picked when the inside port cannot be kept
/// (RFC 4787 REQ-3: not the well-known range for inside ports above 1023).
const FIRST_DYNAMIC_PORT: u16 = 1024;

/// A router's translation table. BTreeMaps throughout: nothing here may
/// depend on hash order, so that a seed replays a run.
#[derive(Debug, Clone)]
pub(crate) struct NatTable {
    config: NatConfig,
    wan: Ipv4Addr,
    /// (inside endpoint, scope) → outside port.
    by_key: BTreeMap<(SocketAddrV4, Option<SocketAddrV4>), u16>,
    /// Outside port → mapping.
    by_port: BTreeMap<u16, Binding>,
    pub(crate) created: u64,
    pub(crate) expired: u64,
}

impl NatTable {
    pub(crate) fn new(config: NatConfig, wan: Ipv4Addr) -> Self {
        Self {
            config,
            wan,
            by_key: BTreeMap::new(),
            by_port: BTreeMap::new(),
            created: 0,
            expired: 0,
        }
    }

    pub(crate) fn config(&self) -> &NatConfig {
        &self.config
    }

    fn live(&self, last: Duration, now: Duration) -> bool {
        now.saturating_sub(last) < self.config.mapping_timeout
    }

    /// Removes the mapping on `port` if it has timed out; whether a live
    /// one remains.
    fn expire_port(&mut self, port: u16, now: Duration) -> bool {
        let Some(b) = self.by_port.get(&port) else {
            return false;
        };
        if self.live(b.last_outbound, now) {
            return true;
        }
        self.by_port.remove(&port);
        // Several keys can name one port (see `hairpin_target`).
        self.by_key.retain(|_, p| *p != port);
        self.expired += 1;
        false
    }

    /// Translates an outbound datagram from `internal` to `remote`: the
    /// outside endpoint it leaves with. Creates or refreshes the mapping
    /// and the filter permission for `remote` (§4.3 REQ-6, §5).
    pub(crate) fn outbound(
        &mut self,
        now: Duration,
        internal: SocketAddrV4,
        remote: SocketAddrV4,
        rng: &mut SimRng,
    ) -> Result<SocketAddrV4, NatRefusal> {
        if self.config.udp_blocked {
            return Err(NatRefusal::Blocked);
        }
        let scope = self.scope(remote);
        let key = (internal, scope);
        let existing = self
            .by_key
            .get(&key)
            .copied()
            .filter(|&p| self.expire_port(p, now));
        let port = match existing {
            Some(port) => port,
            None => {
                let port = self.allocate(now, internal.port(), rng)?;
                self.by_key.insert(key, port);
                self.by_port.insert(
                    port,
                    Binding {
                        internal,
                        last_outbound: now,
                        sent_to: BTreeMap::new(),
                    },
                );
                self.created += 1;
                port
            }
        };
        let timeout = self.config.mapping_timeout;
        let b = self
            .by_port
            .get_mut(&port)
            .expect("invariant: by_key and by_port name the same mappings");
        b.last_outbound = now;
        b.sent_to.retain(|_, t| now.saturating_sub(*t) < timeout);
        b.sent_to.insert(remote, now);
        Ok(SocketAddrV4::new(self.wan, port))
    }

    /// §4.2: the inside port when preserving and free, else a random free
    /// one.
    fn allocate(
        &mut self,
        now: Duration,
        inside: u16,
        rng: &mut SimRng,
    ) -> Result<u16, NatRefusal> {
        if self.config.port_preservation && inside != 0 && !self.expire_port(inside, now) {
            return Ok(inside);
        }
        let span = u64::from(u16::MAX - FIRST_DYNAMIC_PORT) + 1;
        // Random probes first (what real NATs do); a full scan settles it
        // when the table is nearly full.
        for _ in 0..64 {
            let port = FIRST_DYNAMIC_PORT + rng.below(span) as u16;
            if !self.expire_port(port, now) {
                return Ok(port);
            }
        }
        (FIRST_DYNAMIC_PORT..=u16::MAX)
            .find(|&p| !self.expire_port(p, now))
            .ok_or(NatRefusal::PortsExhausted)
    }

    /// Whom an inbound datagram from `remote` to outside port `port` is for,
    /// if the mapping exists and its filtering (§5) lets `remote` in.
    pub(crate) fn inbound(
        &mut self,
        now: Duration,
        port: u16,
        remote: SocketAddrV4,
    ) -> Result<SocketAddrV4, NatRefusal> {
        if self.config.udp_blocked {
            return Err(NatRefusal::Blocked);
        }
        if !self.expire_port(port, now) {
            return Err(NatRefusal::NoMapping);
        }
        let timeout = self.config.mapping_timeout;
        let b = &self.by_port[&port];
        let fresh = |t: &Duration| now.saturating_sub(*t) < timeout;
        let allowed = match self.config.filtering {
            FilteringBehaviour::EndpointIndependent => true,
            FilteringBehaviour::AddressDependent => b
                .sent_to
                .iter()
                .any(|(ep, t)| ep.ip() == remote.ip() && fresh(t)),
            FilteringBehaviour::AddressAndPortDependent => {
                b.sent_to.get(&remote).is_some_and(fresh)
            }
        };
        if allowed {
            Ok(b.internal)
        } else {
            Err(NatRefusal::Filtered)
        }
    }

    /// §6: the inside owner of outside port `port`, for a hairpinned
    /// datagram from outside endpoint `from`. As in the lab, a live mapping
    /// is enough, whatever the filtering (the RFC defines hairpinning by "an
    /// active mapping").
    ///
    /// The owner's answer to `from` must leave from `port` again, or the
    /// sender would see it come from elsewhere: Linux's conntrack treats it
    /// as the reply of the hairpinned flow and un-NATs it so. With
    /// endpoint-independent mapping that is the owner's one mapping anyway;
    /// otherwise `from`'s key is pointed at `port` here.
    pub(crate) fn hairpin_target(
        &mut self,
        now: Duration,
        port: u16,
        from: SocketAddrV4,
    ) -> Result<SocketAddrV4, NatRefusal> {
        if self.config.udp_blocked {
            return Err(NatRefusal::Blocked);
        }
        if !self.expire_port(port, now) {
            return Err(NatRefusal::NoMapping);
        }
        let scope = self.scope(from);
        let b = self
            .by_port
            .get_mut(&port)
            .expect("invariant: expire_port just found it live");
        let internal = b.internal;
        if scope.is_some() {
            b.sent_to.insert(from, now);
            let key = (internal, scope);
            let live = match self.by_key.get(&key).copied() {
                Some(p) => p == port || self.expire_port(p, now),
                None => false,
            };
            if !live {
                self.by_key.insert(key, port);
            }
        }
        Ok(internal)
    }

    /// The destination part of a mapping's key (§4.1).
    fn scope(&self, remote: SocketAddrV4) -> Option<SocketAddrV4> {
        match self.config.mapping {
            MappingBehaviour::EndpointIndependent => None,
            MappingBehaviour::AddressDependent => Some(SocketAddrV4::new(*remote.ip(), 0)),
            MappingBehaviour::AddressAndPortDependent => Some(remote),
        }
    }

    /// Forgets every mapping at once (a router reboot; the lab's
    /// `conntrack -F` plus flushing its nftables maps).
    pub(crate) fn flush(&mut self) {
        self.by_key.clear();
        self.by_port.clear();
    }

    /// The live mappings, inside endpoint → outside endpoint, in port order.
    pub(crate) fn mappings(&self, now: Duration) -> Vec<(SocketAddrV4, SocketAddrV4)> {
        self.by_port
            .iter()
            .filter(|(_, b)| self.live(b.last_outbound, now))
            .map(|(&p, b)| (b.internal, SocketAddrV4::new(self.wan, p)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    fn ep(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn endpoint_independent_mapping_preserves_the_port_and_shares_it() {
        let mut rng = SimRng::new(1);
        let mut t = NatTable::new(NatKind::PortRestricted.into(), WAN);
        let x1 = ep([10, 1, 0, 2], 5000);
        let x2 = ep([10, 1, 0, 3], 5000);
        let a = ep([203, 0, 113, 10], 7000);
        let b = ep([198, 51, 100, 20], 7000);
        let m = t.outbound(s(0), x1, a, &mut rng).unwrap();
        assert_eq!(m, SocketAddrV4::new(WAN, 5000));
        assert_eq!(t.outbound(s(0), x1, b, &mut rng).unwrap(), m);
        let m2 = t.outbound(s(0), x2, a, &mut rng).unwrap();
        assert_ne!(m2.port(), 5000, "W:5000 is x1's");
        assert!(m2.port() >= FIRST_DYNAMIC_PORT);
        assert_eq!(t.created, 2);
    }

    #[test]
    fn symmetric_maps_per_destination_and_filters_per_endpoint() {
        let mut rng = SimRng::new(1);
        let mut t = NatTable::new(NatKind::Symmetric.into(), WAN);
        let x = ep([10, 1, 0, 2], 5000);
        let a = ep([203, 0, 113, 10], 7000);
        let a2 = ep([203, 0, 113, 10], 7001);
        let ma = t.outbound(s(0), x, a, &mut rng).unwrap();
        let ma2 = t.outbound(s(0), x, a2, &mut rng).unwrap();
        assert_ne!(ma.port(), ma2.port());
        assert_eq!(t.inbound(s(1), ma.port(), a), Ok(x));
        assert_eq!(t.inbound(s(1), ma.port(), a2), Err(NatRefusal::Filtered));
    }

    #[test]
    fn address_dependent_mapping_shares_a_port_per_remote_address() {
        let mut rng = SimRng::new(1);
        let cfg = NatConfig {
            mapping: MappingBehaviour::AddressDependent,
            filtering: FilteringBehaviour::AddressDependent,
            ..NatConfig::kind(NatKind::FullCone)
        };
        let mut t = NatTable::new(cfg, WAN);
        let x = ep([10, 1, 0, 2], 5000);
        let a1 = t
            .outbound(s(0), x, ep([203, 0, 113, 10], 1), &mut rng)
            .unwrap();
        let a2 = t
            .outbound(s(0), x, ep([203, 0, 113, 10], 2), &mut rng)
            .unwrap();
        let b = t
            .outbound(s(0), x, ep([198, 51, 100, 20], 1), &mut rng)
            .unwrap();
        assert_eq!(a1, a2, "one mapping per remote address");
        assert_eq!(a1.port(), 5000, "the first keeps the inside port");
        assert_ne!(b, a1);
        // Address-dependent filtering: another port of a contacted address.
        assert_eq!(t.inbound(s(1), a1.port(), ep([203, 0, 113, 10], 3)), Ok(x));
        assert_eq!(
            t.inbound(s(1), a1.port(), ep([198, 51, 100, 20], 1)),
            Err(NatRefusal::Filtered),
            "B was contacted, but through the other mapping"
        );
    }

    #[test]
    fn filtering_follows_the_kind() {
        let x = ep([10, 1, 0, 2], 5000);
        let a = ep([203, 0, 113, 10], 8000);
        let a_other_port = ep([203, 0, 113, 10], 8001);
        let b = ep([198, 51, 100, 20], 8000);
        for (kind, same_addr, other_addr) in [
            (NatKind::FullCone, true, true),
            (NatKind::AddressRestricted, true, false),
            (NatKind::PortRestricted, false, false),
            (NatKind::Symmetric, false, false),
        ] {
            let mut rng = SimRng::new(1);
            let mut t = NatTable::new(kind.into(), WAN);
            let m = t.outbound(s(0), x, a, &mut rng).unwrap();
            assert_eq!(t.inbound(s(0), m.port(), a), Ok(x), "{kind:?}");
            assert_eq!(
                t.inbound(s(0), m.port(), a_other_port).is_ok(),
                same_addr,
                "{kind:?}"
            );
            assert_eq!(t.inbound(s(0), m.port(), b).is_ok(), other_addr, "{kind:?}");
        }
    }

    #[test]
    fn mappings_expire_unless_outbound_traffic_refreshes_them() {
        let mut rng = SimRng::new(1);
        let cfg = NatConfig::kind(NatKind::FullCone).mapping_timeout(s(30));
        let mut t = NatTable::new(cfg, WAN);
        let x = ep([10, 1, 0, 2], 5000);
        let a = ep([203, 0, 113, 10], 8000);
        t.outbound(s(0), x, a, &mut rng).unwrap();
        // Inbound does not refresh (REQ-6 asks only for outbound).
        assert!(t.inbound(s(29), 5000, a).is_ok());
        assert_eq!(t.inbound(s(30), 5000, a), Err(NatRefusal::NoMapping));
        assert_eq!(t.expired, 1);
        t.outbound(s(40), x, a, &mut rng).unwrap();
        t.outbound(s(60), x, a, &mut rng).unwrap();
        assert!(t.inbound(s(89), 5000, a).is_ok());
        assert_eq!(t.mappings(s(89)), [(x, SocketAddrV4::new(WAN, 5000))]);
    }

    #[test]
    fn udp_blocked_refuses_both_ways() {
        let mut rng = SimRng::new(1);
        let mut t = NatTable::new(NatKind::UdpBlocked.into(), WAN);
        let x = ep([10, 1, 0, 2], 5000);
        let a = ep([203, 0, 113, 10], 8000);
        assert_eq!(t.outbound(s(0), x, a, &mut rng), Err(NatRefusal::Blocked));
        assert_eq!(t.inbound(s(0), 5000, a), Err(NatRefusal::Blocked));
    }
}
