//! The cross-platform userspace WireGuard API (UAPI), as `wg(8)` speaks it
//! over `/var/run/wireguard/IFACE.sock` (https://www.wireguard.com/xplatform/).
//!
//! A request is `get=1\n\n` or `set=1\n` followed by `key=value` lines and
//! an empty line; the reply is `key=value` lines (for `get`) and then
//! `errno=N\n\n`. This module parses requests into typed commands and
//! renders replies; it never applies anything (see [`crate::Device`]).

use std::net::SocketAddr;

use ipnet::IpNet;
use wgmesh_core::key::{PresharedKey, PrivateKey, PublicKey};

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get,
    Set(SetCommand),
}

/// `set=1`: changes to apply, in order, as one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetCommand {
    /// `private_key=`: `Some(None)` removes the key (an all-zero key in UAPI).
    pub private_key: Option<Option<PrivateKey>>,
    /// `listen_port=`.
    pub listen_port: Option<u16>,
    /// `fwmark=`: `Some(0)` removes it.
    pub fwmark: Option<u32>,
    /// `replace_peers=true`: remove every peer not named below first.
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

/// The lines that follow one `public_key=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub public_key: PublicKey,
    /// `remove=true`.
    pub remove: bool,
    /// `update_only=true`: do nothing if the peer does not exist.
    pub update_only: bool,
    /// `preshared_key=`: `Some(None)` removes it (all zero).
    pub preshared_key: Option<Option<PresharedKey>>,
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive_interval=`: `Some(0)` turns it off.
    pub persistent_keepalive: Option<u16>,
    /// `replace_allowed_ips=true`: clear the list before the additions below.
    pub replace_allowed_ips: bool,
    /// `allowed_ip=` lines, in order.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerChange {
    /// A change that names the peer and nothing else.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// What `get=1` reports: a snapshot of the device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceSnapshot {
    pub private_key: Option<PrivateKey>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerSnapshot {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Wall-clock time of the last handshake, as (seconds, nanoseconds)
    /// since the Unix epoch; `None` if there was none.
    pub last_handshake: Option<(u64, u32)>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<IpNet>,
}

/// Why a request was refused, with the errno `wg(8)` expects back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UapiError {
    /// A malformed request: unknown key, bad value, bad order (EINVAL).
    #[error("line {line}: {reason}")]
    Invalid { line: usize, reason: String },
    /// A request that is not get=1 or set=1 (EPROTO).
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
}

impl UapiError {
    /// The positive errno for the `errno=` reply line.
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::Invalid { .. } => 22,         // EINVAL
            UapiError::UnknownOperation(_) => 71,     // EPROTO
        }
    }
}
