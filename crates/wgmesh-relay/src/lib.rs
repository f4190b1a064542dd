//! wgmesh-relay: the relay server (`wgmesh relay`) and the client a node
//! uses to reach it (DESIGN.md "Relay").
//!
//! The relay forwards opaque WireGuard and disco datagrams between enrolled
//! nodes that cannot reach each other directly, addressed by destination
//! public key, over UDP and over WebSocket on TLS (TCP) for networks that
//! block UDP. It lets in only the network's members (polled from the
//! coordination server, or read from a file), rate-limits each node, sees
//! ciphertext only, and answers STUN Binding requests on its UDP port
//! (RFC 8489, and RFC 3489 clients as RFC 8489 §11 asks).
//!
//! This crate is the IO shell: sockets, TLS, the clock, randomness, the key
//! file and the membership source. The protocol (frames, the hello proof,
//! registrations, rate limits, a node's session) is sans-IO in
//! [`wgmesh_proto::relay`].
//!
//! - [`serve`]: the server: `start` / `run`, its configuration and stats;
//! - [`members`]: where the membership comes from (server poll or file);
//! - [`metrics`]: Prometheus metrics on their own listener;
//! - [`key_file`]: the relay's static key in its state directory;
//! - [`tls`]: rustls configurations (ring provider) from PEM files;
//! - [`client`]: [`client::RelayClient`], an async node-side client over
//!   UDP or WebSocket.

pub mod client;
pub mod key_file;
pub mod members;
pub mod metrics;
pub mod serve;
pub mod tls;
mod ws;

pub use client::{RelayClient, RelayClientError};
pub use serve::{MembersSource, RelayServerConfig, Running, Stats, WsListen};
