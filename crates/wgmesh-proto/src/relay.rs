//! The relay protocol (DESIGN.md "Relay"): nodes that cannot reach each
//! other directly send WireGuard and disco datagrams through a relay,
//! addressed by the destination's public key. The relay sees ciphertext
//! only: it reads a frame's header and copies the payload unchanged.
//!
//! - [`wire`]: the frames (hello, send, recv, keepalive, …) and their bytes,
//!   one per UDP datagram or WebSocket binary message;
//! - [`hello`]: the client hello's proof of key possession (X25519
//!   static-static with the relay's key, BLAKE2s, XChaCha20-Poly1305) and
//!   its replay checks;
//! - [`core`]: the relay's state machine: registrations by session,
//!   membership, per-node token buckets, counters;
//! - [`client`]: a node's session with one relay.
//!
//! No IO here: the relay server (wgmesh-relay) and the agent's engine own
//! the sockets, the clock and the randomness, and feed them in.

pub mod client;
pub mod core;
pub mod hello;
pub mod wire;

pub use self::client::{ClientEvent, ClientSession, ClientState};
pub use self::core::{RateLimit, RelayConfig, RelayCore, RelayCounters, RelayEvent, SessionId};
pub use self::wire::{Frame, FrameError, RefuseReason, is_relay};
