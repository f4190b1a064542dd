//! wgmesh-lab: the real network on one machine, for tests and the demo.
//!
//! A [`Lab`] owns network namespaces ("hosts"), the veth links and bridges
//! that join them into an "internet" segment and NATed LANs, the nftables NAT
//! routers between them, link impairment, and the processes started inside
//! hosts. Dropping the `Lab` (also while a test panics) removes all of it.
//!
//! For tests of HTTPS and WebSocket/TLS it also makes a private CA
//! ([`test_ca`]), and it runs the third-party tools tests check wgmesh's
//! output with ([`third_party`]: promtool, an RFC 3489 STUN client).
//!
//! It does not own what runs over the network: WireGuard configs come from
//! wgmesh-core's planner, and [`wgnode`] brings one up on wireguard-go.
//!
//! Everything here shells out to iproute2, nftables and tc, so it needs root.
//! Every namespace the lab makes is named `wgl-<lab id>.<host>`; that prefix
//! is how [`clean`] finds what a crashed run left behind, and nothing else.

mod command;
mod error;
pub mod impair;
pub mod lab;
pub mod names;
pub mod nat;
pub mod netns;
pub mod process;
pub mod state;
pub mod test_ca;
pub mod third_party;
pub mod topology;
pub mod wgnode;

pub use error::LabError;
pub use impair::Impairment;
pub use lab::{Host, Lab};
pub use nat::{Hairpin, NatKind};
pub use netns::Netns;
pub use process::LabProcess;
pub use topology::Topology;
