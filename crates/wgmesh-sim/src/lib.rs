//! wgmesh-sim: a deterministic virtual network with a virtual clock, on
//! which wgmesh's sans-IO protocol code is driven to test NAT traversal
//! across every NAT kind in milliseconds.
//!
//! It owns the network: a virtual [`Clock`] handing out `std::time::Instant`s
//! (what wgmesh-proto's `handle_*(now, …)` take), public hosts and NAT
//! routers with LANs behind them (also nested, for double NAT), links with
//! latency, jitter and loss ([`Link`]), UDP datagrams between bound ports,
//! and NAT routers that behave as RFC 4787 describes ([`NatKind`],
//! [`NatConfig`]): the same five kinds, with the same names and meaning, as
//! `wgmesh-lab`'s nftables routers, so one test matrix runs in both. All
//! randomness comes from one seeded ChaCha8 stream and events run in a total
//! order, so a seed replays a run exactly ([`Sim::trace`]).
//!
//! It owns no protocol: no WireGuard, no disco, no STUN codec. Those are
//! wgmesh-proto's, driven on top of this network ([`disco`]: two nodes
//! finding a path through every pair of NAT kinds) by a loop over
//! [`Sim::next_event_time`], [`Sim::advance_to`], [`Sim::poll_received`]
//! and [`Sim::send`] (see [`Sim`]). It does no IO, starts no threads and
//! reads the real clock at most once (the origin, see [`SimConfig::base`]).
//! TCP is not simulated.

mod clock;
pub mod disco;
mod error;
mod link;
mod nat;
mod net;
mod rng;
mod stats;

pub use clock::Clock;
pub use error::SimError;
pub use link::Link;
pub use nat::{
    DEFAULT_MAPPING_TIMEOUT, FilteringBehaviour, Hairpin, MappingBehaviour, NatConfig, NatKind,
    RFC4787_MIN_MAPPING_TIMEOUT,
};
pub use net::{HostId, Received, RouterId, Sim, SimConfig};
pub use stats::{Counters, DropReason, NodeRef, TraceEntry, TraceKind};
