//! wgmesh-dataplane: the IO shell around wgmesh-proto's sans-IO WireGuard
//! device.
//!
//! It owns everything that touches the operating system for one interface:
//! the TUN device (tun-rs), the UDP socket (dual-stack, rebound when
//! `listen_port` changes), the threads that move packets between them and
//! the device, the timer tick, and the UAPI socket that `wg(8)` talks to
//! ([`Interface`]); and the host configuration wg-quick(8) would do around
//! it: addresses, routes, DNS, hooks ([`netconf`]).
//!
//! It owns no protocol logic: handshakes, sessions, cryptokey routing and
//! the UAPI text format are wgmesh-proto's.
//!
//! This first version uses blocking IO and one thread per direction; the
//! batched data path (GSO/GRO, offloads, crypto across cores) replaces the
//! threads' bodies, not this interface.

mod error;
pub mod interface;
pub mod netconf;
pub mod relay_endpoint;
pub mod uapi_server;
pub mod udp;

pub use error::DataplaneError;
pub use interface::{ForeignHandler, Interface, InterfaceConfig, IoStats};
pub use relay_endpoint::{is_relay_endpoint, relay_endpoint};
