//! Disco: the small authenticated messages nodes send each other to find
//! and keep a direct path through NAT (DESIGN.md "Disco").
//!
//! - [`wire`]: the messages (ping, pong, call-me-maybe) and their byte
//!   format, smoltcp-style;
//! - [`path`]: the path manager: which path (direct or relay) each peer
//!   takes, and the pings, pongs and call-me-maybes that find and keep it;
//! - [`seal`]: sealing and opening them with the nodes' WireGuard keys
//!   (X25519 static-static, XChaCha20-Poly1305), and the replay checks.
//!
//! Disco packets share the engine's UDP socket with WireGuard and STUN;
//! [`is_disco`] tells them apart by their first byte (0xD1: WireGuard's
//! message types are 1–4 and STUN's first byte is below 0x40, RFC 8489
//! §5) and magic.
//!
//! It does no IO: the agent's engine carries its transmits and hands it
//! what arrives.

pub mod path;
pub mod seal;
pub mod wire;

pub use seal::{DiscoError, DiscoKeys, Opened};
pub use wire::{MAGIC, Message};

/// Is this datagram a disco message (by its magic)?
pub fn is_disco(datagram: &[u8]) -> bool {
    datagram.len() >= MAGIC.len() && datagram[..MAGIC.len()] == MAGIC
}
