//! wgmesh-proto: the protocol logic of a WireGuard interface, with no IO.
//!
//! It owns the per-peer WireGuard sessions (gotatun's `noise::Tunn`: Noise
//! IKpsk2, transport data, timers, cookies, replay window), cryptokey routing
//! (AllowedIPs, both directions), roaming, and the cross-platform UAPI text
//! protocol that `wg(8)` speaks; and the STUN Binding codec (RFC 8489) a
//! node learns its reflexive address with ([`stun`]); disco, the sealed
//! ping/pong/call-me-maybe that find direct paths ([`disco`]); and the inbound
//! packet filter a mesh node enforces its network's policy with
//! ([`filter`]: rules per source, a flow table for replies); the relay's
//! frames, its state machine and a node's relay session ([`relay`]). Callers feed it
//! packets and the time (`handle_*`), and drain what it wants sent
//! (`poll_*`); it never touches a socket, a TUN device or a file.
//!
//! It does not own the TUN device, the UDP socket, the UAPI socket or the
//! event loop: that is wgmesh-dataplane.
//!
//! One caveat on time: gotatun's sessions read the monotonic clock
//! themselves (its `sleepyinstant`), so the `now` passed in here drives
//! wgmesh's own decisions (and tests), while gotatun's timers follow the
//! real clock.

pub mod allowed_ips;
pub mod device;
pub mod disco;
pub mod filter;
pub mod relay;
pub mod stun;
pub mod uapi;

pub use device::{Counters, Device, DeviceError, Output};
pub use filter::{PacketFilter, Verdict};
