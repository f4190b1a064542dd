//! What a test can observe of the network: counters of every datagram's
//! fate, and an optional, capped trace of each hop.
//!
//! The trace records simulated offsets (not `Instant`s) and ids, so two runs
//! from one seed produce equal traces, which is what the replay test checks.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::Duration;

use crate::net::{HostId, RouterId};

/// Why the network dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Lost on a link (its `loss` probability).
    Loss,
    /// A NAT's filtering (RFC 4787 §5) refused an unsolicited datagram.
    Filtered,
    /// Sent to a NAT's outside port that has no live mapping.
    NoMapping,
    /// Arrived at a host on a port nothing is bound to.
    NoListener,
    /// No node owns the destination address.
    NoRoute,
    /// A UDP-blocked router.
    UdpBlocked,
    /// Sent to the router's own outside address from its LAN, with
    /// hairpinning off (RFC 4787 §6).
    HairpinOff,
    /// The NAT had no outside port left.
    PortsExhausted,
}

/// Counts of what happened to datagrams, over the whole simulation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams handed to [`crate::Sim::send`].
    pub sent: u64,
    /// Datagrams put in a host's receive queue.
    pub delivered: u64,
    /// Datagrams a NAT router translated and passed on (each router counts).
    pub forwarded: u64,
    pub dropped_loss: u64,
    pub dropped_filtered: u64,
    pub dropped_no_mapping: u64,
    pub dropped_no_listener: u64,
    pub dropped_no_route: u64,
    pub dropped_udp_blocked: u64,
    pub dropped_hairpin_off: u64,
    pub dropped_ports_exhausted: u64,
    /// NAT mappings made, over all routers.
    pub nat_mappings_created: u64,
    /// NAT mappings found timed out and removed, over all routers.
    pub nat_mappings_expired: u64,
}

impl Counters {
    /// Datagrams dropped, for every reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_loss
            + self.dropped_filtered
            + self.dropped_no_mapping
            + self.dropped_no_listener
            + self.dropped_no_route
            + self.dropped_udp_blocked
            + self.dropped_hairpin_off
            + self.dropped_ports_exhausted
    }

    /// The counter for drops of `reason`.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Loss => self.dropped_loss,
            DropReason::Filtered => self.dropped_filtered,
            DropReason::NoMapping => self.dropped_no_mapping,
            DropReason::NoListener => self.dropped_no_listener,
            DropReason::NoRoute => self.dropped_no_route,
            DropReason::UdpBlocked => self.dropped_udp_blocked,
            DropReason::HairpinOff => self.dropped_hairpin_off,
            DropReason::PortsExhausted => self.dropped_ports_exhausted,
        }
    }

    pub(crate) fn record_drop(&mut self, reason: DropReason) {
        *match reason {
            DropReason::Loss => &mut self.dropped_loss,
            DropReason::Filtered => &mut self.dropped_filtered,
            DropReason::NoMapping => &mut self.dropped_no_mapping,
            DropReason::NoListener => &mut self.dropped_no_listener,
            DropReason::NoRoute => &mut self.dropped_no_route,
            DropReason::UdpBlocked => &mut self.dropped_udp_blocked,
            DropReason::HairpinOff => &mut self.dropped_hairpin_off,
            DropReason::PortsExhausted => &mut self.dropped_ports_exhausted,
        } += 1;
    }

    /// Every counter with its field name, in declaration order (the
    /// destructuring is exhaustive, so a new counter cannot be left out).
    pub fn named(&self) -> [(&'static str, u64); 14] {
        let Self {
            sent,
            delivered,
            forwarded,
            dropped_loss,
            dropped_filtered,
            dropped_no_mapping,
            dropped_no_listener,
            dropped_no_route,
            dropped_udp_blocked,
            dropped_hairpin_off,
            dropped_ports_exhausted,
            nat_mappings_created,
            nat_mappings_expired,
        } = *self;
        [
            ("sent", sent),
            ("delivered", delivered),
            ("forwarded", forwarded),
            ("dropped", self.dropped()),
            ("dropped_loss", dropped_loss),
            ("dropped_filtered", dropped_filtered),
            ("dropped_no_mapping", dropped_no_mapping),
            ("dropped_no_listener", dropped_no_listener),
            ("dropped_no_route", dropped_no_route),
            ("dropped_udp_blocked", dropped_udp_blocked),
            ("dropped_hairpin_off", dropped_hairpin_off),
            ("dropped_ports_exhausted", dropped_ports_exhausted),
            ("nat_mappings_created", nat_mappings_created),
            ("nat_mappings_expired", nat_mappings_expired),
        ]
    }
}

/// A node, as the trace names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeRef {
    Host(HostId),
    Router(RouterId),
}

/// What happened to a datagram at a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceKind {
    /// A host sent it.
    Sent,
    /// A router translated it and passed it on (src/dst as they left).
    Forwarded,
    /// A host received it.
    Delivered,
    /// It was dropped here.
    Dropped(DropReason),
}

/// One hop of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Simulated time since the start.
    pub at: Duration,
    /// The datagram's number, in send order (follows it across hops).
    pub packet: u64,
    pub node: NodeRef,
    pub kind: TraceKind,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub len: usize,
}

/// The last `capacity` trace entries (0: tracing off).
#[derive(Debug, Clone, Default)]
pub(crate) struct Trace {
    capacity: usize,
    entries: VecDeque<TraceEntry>,
}

impl Trace {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: VecDeque::new(),
        }
    }

    pub(crate) fn push(&mut self, entry: TraceEntry) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &TraceEntry> {
        self.entries.iter()
    }
}
