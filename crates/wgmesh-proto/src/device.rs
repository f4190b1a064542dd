//! A whole WireGuard interface's protocol state: our key, the peers, their
//! sessions, and the routing between them and the network.
//!
//! [`Device`] is what a kernel `wg0` or a wireguard-go process holds, minus
//! the IO: the shell (wgmesh-dataplane) feeds it IP packets read from the TUN
//! ([`Device::handle_tun`]), UDP datagrams ([`Device::handle_udp`]), timer
//! ticks ([`Device::handle_timers`]) and UAPI `set` commands
//! ([`Device::apply`]), and carries out the [`Output`]s it returns.
//!
//! The cryptography, per-peer timers, replay window and cookie mechanism
//! are gotatun's `noise` module (one `Tunn` per peer); this file adds what a
//! WireGuard *interface* does around them (WireGuard paper §2–§5):
//! cryptokey routing in both directions, demultiplexing received messages to
//! peers (by receiver index, or by the static key inside an initiation),
//! roaming, the device-wide rate limiter and cookie replies, and UAPI `set`
//! semantics (https://www.wireguard.com/xplatform/).
//!
//! Time: `now` drives what this file decides (handshake times for `wg show`,
//! housekeeping). gotatun's sessions read the monotonic clock themselves, so
//! their timers (rekey, keepalive, expiry) follow real time whatever `now`
//! says; see the crate docs.
//!
//! Allocation: every datagram and packet is copied into a buffer of the
//! device's [`PacketBufPool`], reused once gotatun is done with it, with
//! room for the padding to 16 bytes (paper §5.4.6) so that padding never
//! reallocates. gotatun's encryption writes into a fresh buffer of its own
//! (`Session::format_packet_data`), which becomes the `Vec<u8>` of
//! [`Output::Network`] without a copy ([`into_vec`]); a decrypted packet is
//! copied once into [`Output::Tunnel`]. So one allocation per packet is
//! left each way, inside gotatun on the way out, here on the way in.
//!
//! Filtering: with a [`PacketFilter`] set ([`Device::set_filter`]), every
//! packet sent records its flow and every decrypted packet that passed the
//! AllowedIPs check must also pass the filter (the node's network policy,
//! see `filter.rs`), or is dropped as [`DeviceError::Filtered`]. Without
//! one (`wgmesh wg up`), the device is a plain WireGuard interface.
//!
//! Memory: a peer's gotatun `Tunn` is about 19 KB (eight session slots,
//! each with an 8,192-bit replay bitmap), so it is boxed and made on first
//! use (see `Peer::ensure_tunn`): a configured peer that has had no
//! traffic costs under 0.5 KB (`examples/peer_memory.rs` measures it).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use gotatun::noise::errors::WireGuardError;
use gotatun::noise::handshake::parse_handshake_anon;
use gotatun::noise::index_table::IndexTable;
use gotatun::noise::rate_limiter::RateLimiter;
use gotatun::noise::{Tunn, TunnResult};
use gotatun::packet::{Packet, PacketBufPool, WgKind};
use gotatun::tun::MtuWatcher;
use gotatun::x25519;
use ipnet::IpNet;
use wgmesh_core::key::{PresharedKey, PrivateKey, PublicKey};

pub use gotatun::noise::TimerParams;

use crate::allowed_ips::AllowedIps;
use crate::filter::{DenyReason, PacketFilter, Verdict};
use crate::uapi::{DeviceSnapshot, PeerChange, PeerSnapshot, SetCommand};

/// Handshake messages accepted per source IP per second before the device
/// counts as under load and answers with cookie replies (paper §5.3). The
/// figure gotatun's own device uses.
pub const DEFAULT_HANDSHAKE_RATE_LIMIT: u64 = 100;

/// The kernel's `MAX_PEERS_PER_DEVICE` (drivers/net/wireguard/device.h).
pub const DEFAULT_PEER_LIMIT: usize = 1 << 20;

/// wg-quick's default interface MTU; data packets are padded up to a
/// multiple of 16 bytes without exceeding it (paper §5.4.6).
pub const DEFAULT_MTU: u16 = 1420;

/// Bytes in each buffer of the device's packet pool (gotatun's default):
/// a packet of an MTU up to ~4,000 with its WireGuard overhead. Longer
/// ones still work; they grow their buffer, which allocates, as before.
const POOL_BUFFER: usize = 4096;

/// Buffers the pool keeps for reuse. Each is back in the pool as soon as
/// gotatun has encrypted or decrypted its packet, so few are out at once
/// (more only while packets wait in a peer's queue for a handshake); more
/// than this are freed when returned. Allocated up front: 16 × 4 KiB.
const POOL_BUFFERS: usize = 16;

/// How often stale receiver indices (of sessions gotatun has dropped) are
/// swept from the index → peer map.
const INDEX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// What the shell must do after a `handle_*` call, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send a UDP datagram.
    Network { to: SocketAddr, bytes: Vec<u8> },
    /// Write a decrypted IP packet to the TUN device.
    Tunnel(Vec<u8>),
}

/// Why a packet was dropped or a `set` refused. Every error returned by a
/// `handle_*` call has also been counted in [`Counters`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// From the TUN: not a well-formed IPv4 or IPv6 packet.
    #[error("not an IPv4 or IPv6 packet")]
    InvalidIpPacket,
    /// From the TUN: no peer's AllowedIPs contain the destination.
    #[error("no peer's AllowedIPs contain {0}")]
    NoRoute(IpAddr),
    /// From the TUN: the peer has no endpoint yet (the kernel answers
    /// EDESTADDRREQ).
    #[error("peer {0} has no endpoint")]
    NoEndpoint(PublicKey),
    /// The interface has no private key: it can neither send nor receive.
    #[error("the interface has no private key")]
    NoPrivateKey,
    /// From the network: not a WireGuard message (type or length).
    #[error("not a WireGuard message")]
    Malformed,
    /// From the network: a handshake message whose mac1 is not for us.
    #[error("handshake message with an invalid mac1")]
    InvalidMac,
    /// From the network: a handshake initiation from a key that is not a
    /// peer of this interface.
    #[error("handshake initiation from a key that is not a peer")]
    UnknownPeer,
    /// From the network: no session or handshake of ours has this receiver
    /// index (a stale session, or a forgery).
    #[error("no session for receiver index {0}")]
    UnknownIndex(u32),
    /// From the network: the message failed authentication or the
    /// handshake state rejected it (bad AEAD tag, replayed handshake
    /// timestamp, wrong preshared key …).
    #[error("message rejected: {reason}")]
    Unauthenticated { reason: &'static str },
    /// From the network: a data packet's counter was already seen or is
    /// too old for the replay window (paper §5.4.6).
    #[error("replayed data packet")]
    Replay,
    /// From the network: a decrypted packet whose source address is not in
    /// the sending peer's AllowedIPs (cryptokey routing, inbound).
    #[error("source {0} is not in the sending peer's AllowedIPs")]
    SourceNotAllowed(IpAddr),
    /// From the network: a decrypted payload that is not an IP packet.
    #[error("decrypted payload is not an IPv4 or IPv6 packet")]
    InvalidInnerPacket,
    /// From the network: a decrypted packet from an allowed source that
    /// the packet filter denies (the network's policy).
    #[error("packet from {src} filtered: {reason}")]
    Filtered { src: IpAddr, reason: DenyReason },
    /// A `set` that would leave more peers than the device allows.
    #[error("too many peers (the limit is {limit})")]
    TooManyPeers { limit: usize },
}

/// Running totals, for metrics and tests. Drop counters have one field per
/// [`DeviceError`] kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Decrypted non-empty packets handed to the TUN.
    pub rx_data_packets: u64,
    /// Authenticated empty data packets (keepalives) received.
    pub rx_keepalives: u64,
    /// Data packets (not keepalives) sent.
    pub tx_data_packets: u64,
    pub tx_keepalives: u64,
    pub handshake_initiations_sent: u64,
    pub handshake_responses_sent: u64,
    /// Handshakes completed: a response authenticated (we initiated), or
    /// the first data packet on a session we derived answering an
    /// initiation (we responded), as the kernel counts them.
    pub handshakes_completed: u64,
    /// Cookie replies sent because the device was under load.
    pub cookie_replies_sent: u64,
    pub cookie_replies_received: u64,

    pub dropped_invalid_ip_packet: u64,
    pub dropped_no_route: u64,
    pub dropped_no_endpoint: u64,
    pub dropped_no_private_key: u64,
    pub dropped_malformed: u64,
    pub dropped_invalid_mac: u64,
    pub dropped_unknown_peer: u64,
    pub dropped_unknown_index: u64,
    pub dropped_unauthenticated: u64,
    pub dropped_replay: u64,
    pub dropped_source_not_allowed: u64,
    pub dropped_invalid_inner_packet: u64,
    /// Denied by the packet filter (its own counters say why).
    pub dropped_filtered: u64,
    /// `set` commands refused.
    pub refused_sets: u64,
}

impl Counters {
    /// Packets dropped, for every reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_invalid_ip_packet
            + self.dropped_no_route
            + self.dropped_no_endpoint
            + self.dropped_no_private_key
            + self.dropped_malformed
            + self.dropped_invalid_mac
            + self.dropped_unknown_peer
            + self.dropped_unknown_index
            + self.dropped_unauthenticated
            + self.dropped_replay
            + self.dropped_source_not_allowed
            + self.dropped_invalid_inner_packet
            + self.dropped_filtered
    }

    /// Every counter with its field name, in declaration order: what an
    /// operator reads (`wgmesh wg stats`). The destructuring is exhaustive,
    /// so a new counter cannot be left out of it.
    pub fn named(&self) -> [(&'static str, u64); 24] {
        let Self {
            rx_data_packets,
            rx_keepalives,
            tx_data_packets,
            tx_keepalives,
            handshake_initiations_sent,
            handshake_responses_sent,
            handshakes_completed,
            cookie_replies_sent,
            cookie_replies_received,
            dropped_invalid_ip_packet,
            dropped_no_route,
            dropped_no_endpoint,
            dropped_no_private_key,
            dropped_malformed,
            dropped_invalid_mac,
            dropped_unknown_peer,
            dropped_unknown_index,
            dropped_unauthenticated,
            dropped_replay,
            dropped_source_not_allowed,
            dropped_invalid_inner_packet,
            dropped_filtered,
            refused_sets,
        } = *self;
        [
            ("rx_data_packets", rx_data_packets),
            ("rx_keepalives", rx_keepalives),
            ("tx_data_packets", tx_data_packets),
            ("tx_keepalives", tx_keepalives),
            ("handshake_initiations_sent", handshake_initiations_sent),
            ("handshake_responses_sent", handshake_responses_sent),
            ("handshakes_completed", handshakes_completed),
            ("cookie_replies_sent", cookie_replies_sent),
            ("cookie_replies_received", cookie_replies_received),
            ("dropped", self.dropped()),
            ("dropped_invalid_ip_packet", dropped_invalid_ip_packet),
            ("dropped_no_route", dropped_no_route),
            ("dropped_no_endpoint", dropped_no_endpoint),
            ("dropped_no_private_key", dropped_no_private_key),
            ("dropped_malformed", dropped_malformed),
            ("dropped_invalid_mac", dropped_invalid_mac),
            ("dropped_unknown_peer", dropped_unknown_peer),
            ("dropped_unknown_index", dropped_unknown_index),
            ("dropped_unauthenticated", dropped_unauthenticated),
            ("dropped_replay", dropped_replay),
            ("dropped_source_not_allowed", dropped_source_not_allowed),
            ("dropped_invalid_inner_packet", dropped_invalid_inner_packet),
            ("dropped_filtered", dropped_filtered),
            ("refused_sets", refused_sets),
        ]
    }

    fn record(&mut self, error: &DeviceError) {
        let counter = match error {
            DeviceError::InvalidIpPacket => &mut self.dropped_invalid_ip_packet,
            DeviceError::NoRoute(_) => &mut self.dropped_no_route,
            DeviceError::NoEndpoint(_) => &mut self.dropped_no_endpoint,
            DeviceError::NoPrivateKey => &mut self.dropped_no_private_key,
            DeviceError::Malformed => &mut self.dropped_malformed,
            DeviceError::InvalidMac => &mut self.dropped_invalid_mac,
            DeviceError::UnknownPeer => &mut self.dropped_unknown_peer,
            DeviceError::UnknownIndex(_) => &mut self.dropped_unknown_index,
            DeviceError::Unauthenticated { .. } => &mut self.dropped_unauthenticated,
            DeviceError::Replay => &mut self.dropped_replay,
            DeviceError::SourceNotAllowed(_) => &mut self.dropped_source_not_allowed,
            DeviceError::InvalidInnerPacket => &mut self.dropped_invalid_inner_packet,
            DeviceError::Filtered { .. } => &mut self.dropped_filtered,
            DeviceError::TooManyPeers { .. } => &mut self.refused_sets,
        };
        *counter += 1;
    }
}

/// Peers are named internally by a number that is never reused, so that a
/// stale reference (a leftover receiver index) can never reach a newer peer.
type PeerId = u64;

/// Our static key pair, and what depends on it.
struct Identity {
    private: PrivateKey,
    secret: x25519::StaticSecret,
    public: x25519::PublicKey,
    public_key: PublicKey,
    /// Checks mac1/mac2 of handshake messages addressed to `public` and
    /// issues cookies when under load (paper §5.3, §5.4.4).
    rate_limiter: Arc<RateLimiter>,
}

impl Identity {
    fn new(private: PrivateKey, rate_limit: u64) -> Self {
        let secret = x25519::StaticSecret::from(*private.as_bytes());
        let public = x25519::PublicKey::from(&secret);
        Self {
            public_key: PublicKey::from_bytes(public.to_bytes()),
            rate_limiter: Arc::new(RateLimiter::new(&public, rate_limit)),
            private,
            secret,
            public,
        }
    }
}

struct Peer {
    public_key: PublicKey,
    preshared_key: Option<PresharedKey>,
    endpoint: Option<SocketAddr>,
    persistent_keepalive: u16,
    /// The Noise session state, made on first use
    /// ([`Peer::ensure_tunn`]): `None` until the peer has traffic, a
    /// handshake or a keepalive due, and always while the interface has no
    /// private key (a `Tunn` cannot exist without one). Boxed because a
    /// `Tunn` is about 19 KB inline (eight session slots of ~2.3 KB, each
    /// with its 1 KB replay bitmap): inline, every slot of the `peers` map
    /// paid for it, occupied or not, so a configured, silent peer cost
    /// ~39 KB of heap.
    tunn: Option<Box<Tunn>>,
    last_handshake: Option<Instant>,
    /// Bytes counted by `Tunn`s dropped when the private key was removed.
    rx_base: u64,
    tx_base: u64,
    /// After gotatun gave up on the handshake (REKEY_ATTEMPT_TIME) or the
    /// keys expired (REJECT_AFTER_TIME × 3), when persistent keepalive
    /// should start a new attempt, as the kernel's keepalive timer does.
    restart_at: Option<Instant>,
    /// The receiver index of the session we derived answering an
    /// initiation, until the initiator's first packet on it confirms it.
    unconfirmed: Option<u32>,
}

impl Peer {
    /// Makes the session state if this is its first use. A fresh `Tunn`
    /// is exactly what an eager one would still be for a peer that has had
    /// no traffic: gotatun's timers send nothing for it until its first
    /// packet, except the persistent keepalive due at once, and
    /// [`Device::handle_timers`] makes the `Tunn` for that. So making it
    /// late changes nothing on the wire, and configured but silent peers (a
    /// mesh's usual state) cost no session memory.
    fn ensure_tunn(
        &mut self,
        identity: &Identity,
        index_table: &IndexTable,
        timer_params: &TimerParams,
    ) {
        if self.tunn.is_none() {
            self.tunn = Some(Box::new(new_tunn(
                identity,
                index_table,
                timer_params,
                self,
            )));
        }
    }

    fn stats(&self) -> (u64, u64) {
        let (rx, tx) = self.tunn.as_ref().map_or((0, 0), |t| {
            let (_, tx, rx, _, _) = t.stats();
            (rx as u64, tx as u64)
        });
        (self.rx_base + rx, self.tx_base + tx)
    }
}

/// One WireGuard interface, sans IO. See the module docs.
pub struct Device {
    identity: Option<Identity>,
    listen_port: u16,
    fwmark: u32,
    mtu: MtuWatcher,
    mtu_value: u16,
    peers: HashMap<PeerId, Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    /// Our receiver indices (paper §5.4.1) → peer, learnt from the sender
    /// index of every handshake message we send; gotatun allocates them
    /// from `index_table`, shared by all our peers so they are unique.
    by_index: HashMap<u32, PeerId>,
    index_table: IndexTable,
    routes: AllowedIps<PeerId>,
    next_peer_id: PeerId,
    next_index_sweep: Option<Instant>,
    handshake_rate_limit: u64,
    peer_limit: usize,
    timer_params: TimerParams,
    counters: Counters,
    /// The inbound filter, when the node enforces a policy.
    filter: Option<PacketFilter>,
    /// Buffers for the `Packet`s handed to gotatun (see the module docs).
    pool: PacketBufPool<POOL_BUFFER>,
}

impl fmt::Debug for Device {
    // Public keys and endpoints only: never the private or preshared keys.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut peers: Vec<_> = self.peers.iter().collect();
        peers.sort_by_key(|(id, _)| **id);
        f.debug_struct("Device")
            .field("public_key", &self.public_key())
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .field("mtu", &self.mtu_value)
            .field(
                "peers",
                &peers
                    .iter()
                    .map(|(_, p)| (p.public_key, p.endpoint))
                    .collect::<Vec<_>>(),
            )
            .field("counters", &self.counters)
            .field("filtered", &self.filter.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Device {
    fn default() -> Self {
        Self::new()
    }
}

impl Device {
    /// An interface with no key, listen port 0 and no peers.
    pub fn new() -> Self {
        Self {
            identity: None,
            listen_port: 0,
            fwmark: 0,
            mtu: MtuWatcher::new(DEFAULT_MTU),
            mtu_value: DEFAULT_MTU,
            peers: HashMap::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            index_table: IndexTable::from_os_rng(),
            routes: AllowedIps::new(),
            next_peer_id: 0,
            next_index_sweep: None,
            handshake_rate_limit: DEFAULT_HANDSHAKE_RATE_LIMIT,
            peer_limit: DEFAULT_PEER_LIMIT,
            timer_params: TimerParams::default(),
            counters: Counters::default(),
            filter: None,
            pool: PacketBufPool::new(POOL_BUFFERS),
        }
    }

    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    pub fn fwmark(&self) -> u32 {
        self.fwmark
    }

    /// Our public key, if a private key is set.
    pub fn public_key(&self) -> Option<PublicKey> {
        self.identity.as_ref().map(|i| i.public_key)
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn mtu(&self) -> u16 {
        self.mtu_value
    }

    /// The TUN's MTU: outgoing data is padded to a multiple of 16 bytes
    /// without exceeding it (paper §5.4.6).
    pub fn set_mtu(&mut self, mtu: u16) {
        self.mtu = MtuWatcher::new(mtu);
        self.mtu_value = mtu;
    }

    /// Handshake messages accepted per source IP per second before cookie
    /// replies kick in. Takes effect at once (cookies issued before are no
    /// longer valid).
    pub fn set_handshake_rate_limit(&mut self, per_second: u64) {
        self.handshake_rate_limit = per_second;
        if let Some(identity) = &mut self.identity {
            identity.rate_limiter = Arc::new(RateLimiter::new(&identity.public, per_second));
        }
    }

    /// Sets (or, with `None`, removes) the inbound packet filter. Without
    /// one, every packet that passes cryptokey routing is delivered.
    pub fn set_filter(&mut self, filter: Option<PacketFilter>) {
        self.filter = filter;
    }

    /// The filter, to update its rules from a new map (keeping its flows).
    pub fn filter_mut(&mut self) -> Option<&mut PacketFilter> {
        self.filter.as_mut()
    }

    pub fn filter(&self) -> Option<&PacketFilter> {
        self.filter.as_ref()
    }

    /// The most peers a `set` may leave configured.
    pub fn set_peer_limit(&mut self, limit: usize) {
        self.peer_limit = limit;
    }

    /// Override WireGuard's timers (rekey, keepalive, retry) for every peer,
    /// present and future. Off-spec: for tests that must see a rekey in
    /// seconds, never for production.
    pub fn dangerously_set_timer_params(&mut self, params: TimerParams) {
        for tunn in self.peers.values_mut().filter_map(|p| p.tunn.as_mut()) {
            tunn.dangerously_set_timer_params(params.clone());
        }
        self.timer_params = params;
    }

    /// Applies a UAPI `set=1` command (https://www.wireguard.com/xplatform/)
    /// as one transaction: it is checked as a whole first, so a refused
    /// command changes nothing.
    ///
    /// As in the kernel and wireguard-go: setting the private key we already
    /// have changes nothing; a new one drops every session and removes a
    /// peer that has the new public key; a peer named with our own public
    /// key is silently ignored; `replace_peers` removes every peer (those
    /// named again are created afresh); an allowed IP given to one peer is
    /// taken from any other.
    pub fn apply(&mut self, _now: Instant, cmd: &SetCommand) -> Result<(), DeviceError> {
        if let Err(e) = self.check(cmd) {
            self.counters.record(&e);
            return Err(e);
        }
        if let Some(key) = &cmd.private_key {
            self.set_private_key(key.clone());
        }
        if let Some(port) = cmd.listen_port {
            self.listen_port = port;
        }
        if let Some(mark) = cmd.fwmark {
            self.fwmark = mark;
        }
        if cmd.replace_peers {
            self.remove_all_peers();
        }
        for change in &cmd.peers {
            self.apply_peer(change);
        }
        Ok(())
    }

    /// The checks of [`Device::apply`], without changing anything: the peer
    /// count must stay within the limit at every step of the command.
    fn check(&self, cmd: &SetCommand) -> Result<(), DeviceError> {
        // Cheap bound first: the common command cannot reach the limit.
        if self.peers.len().saturating_add(cmd.peers.len()) <= self.peer_limit {
            return Ok(());
        }
        let own = match &cmd.private_key {
            Some(Some(key)) => Some(key.public_key()),
            Some(None) => None,
            None => self.public_key(),
        };
        let mut present: HashSet<PublicKey> = if cmd.replace_peers {
            HashSet::new()
        } else {
            self.by_key.keys().copied().collect()
        };
        if let Some(own) = own {
            present.remove(&own);
        }
        let mut peak = present.len();
        for change in &cmd.peers {
            if Some(change.public_key) == own {
                continue;
            }
            if change.remove {
                present.remove(&change.public_key);
            } else if !change.update_only || present.contains(&change.public_key) {
                present.insert(change.public_key);
                peak = peak.max(present.len());
            }
        }
        if peak > self.peer_limit {
            return Err(DeviceError::TooManyPeers {
                limit: self.peer_limit,
            });
        }
        Ok(())
    }

    fn set_private_key(&mut self, key: Option<PrivateKey>) {
        if self.identity.as_ref().map(|i| &i.private) == key.as_ref() {
            return;
        }
        let Some(key) = key else {
            self.identity = None;
            for peer in self.peers.values_mut() {
                let (rx, tx) = peer.stats();
                peer.rx_base = rx;
                peer.tx_base = tx;
                peer.tunn = None;
            }
            self.by_index.clear();
            return;
        };
        let identity = Identity::new(key, self.handshake_rate_limit);
        if let Some(&id) = self.by_key.get(&identity.public_key) {
            self.remove_peer(id);
        }
        // Peers without a `Tunn` get one, with this key, on first use.
        for tunn in self.peers.values_mut().filter_map(|p| p.tunn.as_mut()) {
            // gotatun drops the sessions and in-flight handshakes.
            tunn.set_static_private(
                identity.secret.clone(),
                identity.public,
                Arc::clone(&identity.rate_limiter),
            );
        }
        self.identity = Some(identity);
    }

    fn apply_peer(&mut self, change: &PeerChange) {
        let key = change.public_key;
        if self.public_key() == Some(key) {
            // The kernel: "We silently ignore peers that have the same
            // public key as the device", so one config can serve every node.
            return;
        }
        let existing = self.by_key.get(&key).copied();
        if change.remove {
            if let Some(id) = existing {
                self.remove_peer(id);
            }
            return;
        }
        let id = match existing {
            Some(id) => id,
            None if change.update_only => return,
            None => self.add_peer(key),
        };
        let peer = self
            .peers
            .get_mut(&id)
            .expect("invariant: by_key names live peers");
        if let Some(psk) = &change.preshared_key {
            peer.preshared_key = psk.clone();
            if let Some(tunn) = &mut peer.tunn {
                // Mixed into the next handshake; the current session goes on.
                tunn.set_preshared_key(psk.as_ref().map(|k| *k.as_bytes()));
            }
        }
        if let Some(endpoint) = change.endpoint {
            peer.endpoint = Some(endpoint);
        }
        if let Some(interval) = change.persistent_keepalive {
            peer.persistent_keepalive = interval;
            peer.restart_at = None;
            if let Some(tunn) = &mut peer.tunn {
                // Turning it on makes a keepalive due at the next tick, as
                // the kernel sends one as soon as it is set.
                tunn.set_persistent_keepalive(Some(interval));
            }
        }
        if change.replace_allowed_ips {
            self.routes.remove_value(&id);
        }
        for net in &change.allowed_ips {
            self.routes.insert(net.trunc(), id);
        }
    }

    fn add_peer(&mut self, key: PublicKey) -> PeerId {
        let id = self.next_peer_id;
        self.next_peer_id += 1;
        let peer = Peer {
            public_key: key,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: 0,
            tunn: None,
            last_handshake: None,
            rx_base: 0,
            tx_base: 0,
            restart_at: None,
            unconfirmed: None,
        };
        // No `Tunn` yet: see `Peer::ensure_tunn`.
        self.peers.insert(id, peer);
        self.by_key.insert(key, id);
        id
    }

    fn remove_peer(&mut self, id: PeerId) {
        if let Some(peer) = self.peers.remove(&id) {
            self.by_key.remove(&peer.public_key);
        }
        self.routes.remove_value(&id);
        self.by_index.retain(|_, p| *p != id);
    }

    fn remove_all_peers(&mut self) {
        self.peers.clear();
        self.by_key.clear();
        self.by_index.clear();
        self.routes = AllowedIps::new();
    }

    /// What UAPI `get=1` reports. `wall` is the wall-clock time matching
    /// `now`: handshake times are kept as `Instant`s and shown as wall time.
    pub fn snapshot(&self, now: Instant, wall: SystemTime) -> DeviceSnapshot {
        let mut allowed: HashMap<PeerId, Vec<IpNet>> = HashMap::new();
        for (net, id) in self.routes.iter() {
            allowed.entry(*id).or_default().push(net);
        }
        let mut peers: Vec<(&PeerId, &Peer)> = self.peers.iter().collect();
        peers.sort_by_key(|(id, _)| **id);
        let peers = peers
            .into_iter()
            .map(|(id, peer)| {
                let mut allowed_ips = allowed.remove(id).unwrap_or_default();
                allowed_ips.sort();
                let (rx_bytes, tx_bytes) = peer.stats();
                PeerSnapshot {
                    public_key: peer.public_key,
                    preshared_key: peer.preshared_key.clone(),
                    endpoint: peer.endpoint,
                    last_handshake: peer.last_handshake.map(|at| {
                        let ago = now.saturating_duration_since(at);
                        let when = wall.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH);
                        let since_epoch = when
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .unwrap_or_default();
                        (since_epoch.as_secs(), since_epoch.subsec_nanos())
                    }),
                    rx_bytes,
                    tx_bytes,
                    persistent_keepalive: peer.persistent_keepalive,
                    allowed_ips,
                }
            })
            .collect();
        DeviceSnapshot {
            private_key: self.identity.as_ref().map(|i| i.private.clone()),
            listen_port: self.listen_port,
            fwmark: self.fwmark,
            peers,
        }
    }

    /// An IP packet read from the TUN: route it by destination to a peer
    /// (cryptokey routing, outbound) and encrypt it, or queue it and start
    /// a handshake if that peer has no session.
    pub fn handle_tun(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), DeviceError> {
        let result = self.tun_inner(now, packet, out);
        if let Err(e) = &result {
            self.counters.record(e);
        }
        result
    }

    fn tun_inner(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), DeviceError> {
        let ip = parse_ip(packet).ok_or(DeviceError::InvalidIpPacket)?;
        let id = *self
            .routes
            .lookup(ip.dst)
            .ok_or(DeviceError::NoRoute(ip.dst))?;
        let identity = self.identity.as_ref().ok_or(DeviceError::NoPrivateKey)?;
        let peer = self
            .peers
            .get_mut(&id)
            .expect("invariant: routes name live peers");
        // Checked before queueing, as the kernel does: with nowhere to send
        // the handshake, queueing would only hold the packet hostage.
        let to = peer
            .endpoint
            .ok_or(DeviceError::NoEndpoint(peer.public_key))?;
        if let Some(filter) = &mut self.filter {
            // The packet leaves: its replies may come back.
            filter.outbound(now, &packet[..ip.len]);
        }
        peer.ensure_tunn(identity, &self.index_table, &self.timer_params);
        let tunn = peer.tunn.as_mut().expect("invariant: ensured above");
        let packet = pooled(&self.pool, &packet[..ip.len]);
        if let Some(message) = tunn.handle_outgoing_packet(packet, Some(&mut self.mtu)) {
            emit(&mut self.by_index, &mut self.counters, id, to, message, out);
        }
        Ok(())
    }

    /// A UDP datagram received from `from`.
    pub fn handle_udp(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), DeviceError> {
        let result = self.udp_inner(now, from, datagram, out);
        if let Err(e) = &result {
            self.counters.record(e);
        }
        result
    }

    fn udp_inner(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<(), DeviceError> {
        // The message type is a little-endian u32 whose upper three bytes
        // are reserved zeros (paper §5.4); the kernel and wireguard-go
        // compare all four bytes, and each type has a fixed length (data:
        // at least header and tag).
        let well_formed = match (datagram.get(..4), datagram.len()) {
            (Some([1, 0, 0, 0]), 148) | (Some([2, 0, 0, 0]), 92) | (Some([3, 0, 0, 0]), 64) => true,
            (Some([4, 0, 0, 0]), len) => len >= 32,
            _ => false,
        };
        if !well_formed {
            return Err(DeviceError::Malformed);
        }
        let identity = self.identity.as_ref().ok_or(DeviceError::NoPrivateKey)?;

        // mac1 for every handshake message; under load, a valid mac2 too,
        // or the answer is a cookie reply (paper §5.3).
        let message = match identity
            .rate_limiter
            .verify_packet(from, pooled(&self.pool, datagram))
        {
            Ok(message) => message,
            Err(TunnResult::WriteToNetwork(reply)) => {
                self.counters.cookie_replies_sent += 1;
                out.push(Output::Network {
                    to: from,
                    bytes: into_vec(Packet::from(reply)),
                });
                return Ok(());
            }
            Err(TunnResult::Err(WireGuardError::InvalidMac)) => {
                return Err(DeviceError::InvalidMac);
            }
            Err(_) => return Err(DeviceError::Malformed),
        };

        let (id, index) = match &message {
            WgKind::HandshakeInit(init) => {
                // The initiator's static key is inside the initiation,
                // encrypted to ours: that is how we know who is calling.
                let half = parse_handshake_anon(&identity.secret, &identity.public, init)
                    .map_err(|e| unauthenticated(&e))?;
                let key = PublicKey::from_bytes(half.peer_static_public);
                let id = *self.by_key.get(&key).ok_or(DeviceError::UnknownPeer)?;
                (id, None)
            }
            WgKind::HandshakeResp(p) => self.peer_by_index(p.receiver_idx.get())?,
            WgKind::CookieReply(p) => self.peer_by_index(p.receiver_idx.get())?,
            WgKind::Data(p) => self.peer_by_index(p.header.receiver_idx.get())?,
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return Err(DeviceError::UnknownIndex(index.unwrap_or(0)));
        };
        // Only an initiation can reach a peer without a `Tunn`: every
        // index in `by_index` was sent by one.
        peer.ensure_tunn(identity, &self.index_table, &self.timer_params);
        let tunn = peer.tunn.as_mut().expect("invariant: ensured above");

        match tunn.handle_incoming_packet(message) {
            // Only a cookie reply ends here: we now hold a cookie for the
            // next initiation's mac2.
            TunnResult::Done => {
                self.counters.cookie_replies_received += 1;
                Ok(())
            }
            TunnResult::Err(e) => Err(map_session_error(&e, index)),
            // An authenticated initiation (we answer) or response (we send
            // the confirming keepalive): a handshake is complete.
            TunnResult::WriteToNetwork(reply) => {
                // Roaming (paper §2.1): the endpoint follows authenticated
                // packets.
                peer.endpoint = Some(from);
                peer.restart_at = None;
                match &reply {
                    // We answer an initiation. As in the kernel
                    // (receive.c), the handshake counts as complete when
                    // the initiator's first data packet arrives on the new
                    // session: only that proves it derived the same keys.
                    WgKind::HandshakeResp(r) => peer.unconfirmed = Some(r.sender_idx.get()),
                    // We authenticated a response (and send the confirming
                    // keepalive).
                    _ => {
                        peer.last_handshake = Some(now);
                        self.counters.handshakes_completed += 1;
                    }
                }
                emit(&mut self.by_index, &mut self.counters, id, from, reply, out);
                for queued in tunn.get_queued_packets(&mut self.mtu) {
                    emit(
                        &mut self.by_index,
                        &mut self.counters,
                        id,
                        from,
                        queued,
                        out,
                    );
                }
                Ok(())
            }
            TunnResult::WriteToTunnel(packet) => {
                peer.endpoint = Some(from);
                if index.is_some() && peer.unconfirmed == index {
                    peer.unconfirmed = None;
                    peer.last_handshake = Some(now);
                    self.counters.handshakes_completed += 1;
                }
                // The responder's session becomes current with its first
                // received data packet: anything queued can go now.
                for queued in tunn.get_queued_packets(&mut self.mtu) {
                    emit(
                        &mut self.by_index,
                        &mut self.counters,
                        id,
                        from,
                        queued,
                        out,
                    );
                }
                if packet.is_empty() {
                    // A keepalive: it kept the session alive, nothing to deliver.
                    self.counters.rx_keepalives += 1;
                    return Ok(());
                }
                let ip = parse_ip(&packet).ok_or(DeviceError::InvalidInnerPacket)?;
                // Cryptokey routing, inbound (paper §2): the source must be
                // an address we would route to this very peer.
                if self.routes.lookup(ip.src) != Some(&id) {
                    return Err(DeviceError::SourceNotAllowed(ip.src));
                }
                // Policy, on a source that is now known to be genuine.
                if let Some(filter) = &mut self.filter
                    && let Verdict::Deny(reason) = filter.inbound(now, &packet[..ip.len])
                {
                    return Err(DeviceError::Filtered {
                        src: ip.src,
                        reason,
                    });
                }
                self.counters.rx_data_packets += 1;
                // The length from the IP header drops the zero padding.
                out.push(Output::Tunnel(packet[..ip.len].to_vec()));
                Ok(())
            }
        }
    }

    fn peer_by_index(&self, index: u32) -> Result<(PeerId, Option<u32>), DeviceError> {
        self.by_index
            .get(&index)
            .map(|id| (*id, Some(index)))
            .ok_or(DeviceError::UnknownIndex(index))
    }

    /// The timer tick; the shell calls it every 100–250 ms. Runs every
    /// peer's WireGuard timers (paper §6: rekey, handshake retry, passive
    /// and persistent keepalive, session expiry) and sends what they ask.
    pub fn handle_timers(&mut self, now: Instant, out: &mut Vec<Output>) {
        let Some(identity) = &self.identity else {
            return;
        };
        // The per-IP handshake counts reset once a second (gotatun checks
        // the elapsed time itself); done here too so a device without peers
        // still resets them.
        identity.rate_limiter.try_reset_count();

        if self.next_index_sweep.is_none_or(|at| now >= at) {
            let table = &self.index_table;
            self.by_index.retain(|index, _| table.in_use(*index));
            self.next_index_sweep = Some(now + INDEX_SWEEP_INTERVAL);
        }

        for (&id, peer) in &mut self.peers {
            let Some(to) = peer.endpoint else {
                // Nowhere to send anything yet; the timers wait with it.
                continue;
            };
            if peer.tunn.is_none() && peer.persistent_keepalive == 0 {
                // A fresh `Tunn` would have nothing to send. With
                // persistent keepalive on, it has the keepalive due as
                // soon as it is set (and the handshake that starts), as
                // the kernel sends: so it is made for that.
                continue;
            }
            peer.ensure_tunn(identity, &self.index_table, &self.timer_params);
            let tunn = peer.tunn.as_mut().expect("invariant: ensured above");
            match tunn.update_timers() {
                Ok(Some(message)) => {
                    emit(&mut self.by_index, &mut self.counters, id, to, message, out);
                }
                Ok(None) => {}
                Err(WireGuardError::ConnectionExpired) => {
                    // gotatun gave up and stays quiet until there is
                    // something to send. With persistent keepalive on, the
                    // kernel's keepalive timer is that something: it starts
                    // a new handshake every interval.
                    if peer.persistent_keepalive == 0 {
                        continue;
                    }
                    let interval = Duration::from_secs(peer.persistent_keepalive.into());
                    match peer.restart_at {
                        None => peer.restart_at = Some(now + interval),
                        Some(at) if now >= at => {
                            peer.restart_at = None;
                            let keepalive = Packet::default();
                            if let Some(message) =
                                tunn.handle_outgoing_packet(keepalive, Some(&mut self.mtu))
                            {
                                emit(&mut self.by_index, &mut self.counters, id, to, message, out);
                            }
                        }
                        Some(_) => {}
                    }
                }
                // update_timers returns no other error today.
                Err(_) => {}
            }
        }
    }
}

fn new_tunn(
    identity: &Identity,
    index_table: &IndexTable,
    timer_params: &TimerParams,
    peer: &Peer,
) -> Tunn {
    let mut tunn = Tunn::new(
        identity.secret.clone(),
        x25519::PublicKey::from(*peer.public_key.as_bytes()),
        peer.preshared_key.as_ref().map(|k| *k.as_bytes()),
        Some(peer.persistent_keepalive).filter(|&s| s > 0),
        index_table.clone(),
        Arc::clone(&identity.rate_limiter),
    );
    if *timer_params != TimerParams::default() {
        tunn.dangerously_set_timer_params(timer_params.clone());
    }
    tunn
}

/// Queues one WireGuard message for the network, registering the sender
/// index of the handshake messages we send: data, responses and cookie
/// replies come back addressed to it.
fn emit(
    by_index: &mut HashMap<u32, PeerId>,
    counters: &mut Counters,
    id: PeerId,
    to: SocketAddr,
    message: WgKind,
    out: &mut Vec<Output>,
) {
    match &message {
        WgKind::HandshakeInit(p) => {
            by_index.insert(p.sender_idx.get(), id);
            counters.handshake_initiations_sent += 1;
        }
        WgKind::HandshakeResp(p) => {
            by_index.insert(p.sender_idx.get(), id);
            counters.handshake_responses_sent += 1;
        }
        WgKind::CookieReply(_) => counters.cookie_replies_sent += 1,
        WgKind::Data(p) if p.is_keepalive() => counters.tx_keepalives += 1,
        WgKind::Data(_) => counters.tx_data_packets += 1,
    }
    out.push(Output::Network {
        to,
        bytes: into_vec(Packet::from(message)),
    });
}

/// `bytes` in a buffer from `pool`, with room to spare for padding to a
/// multiple of 16 (gotatun pads outgoing packets in place).
fn pooled(pool: &PacketBufPool<POOL_BUFFER>, bytes: &[u8]) -> Packet {
    let mut packet = pool.get();
    let buf = packet.buf_mut();
    buf.clear();
    buf.reserve(bytes.len() + 15);
    buf.extend_from_slice(bytes);
    packet
}

/// A message's bytes as a `Vec`. A buffer gotatun allocated for it alone
/// (every encrypted data packet) becomes the `Vec` as it is, without a
/// copy (bytes' `From<BytesMut> for Vec<u8>`); a pooled one, still shared
/// with its pool, is copied.
fn into_vec(mut packet: Packet) -> Vec<u8> {
    Vec::from(std::mem::take(packet.buf_mut()))
}

fn unauthenticated(e: &WireGuardError) -> DeviceError {
    DeviceError::Unauthenticated {
        reason: match e {
            WireGuardError::InvalidAeadTag => "bad authentication tag",
            WireGuardError::InvalidMac => "bad mac",
            WireGuardError::WrongKey => "wrong key",
            WireGuardError::InvalidTai64nTimestamp => "invalid handshake timestamp",
            WireGuardError::WrongTai64nTimestamp => "replayed handshake (old timestamp)",
            WireGuardError::InvalidPacket
            | WireGuardError::IncorrectPacketLength
            | WireGuardError::WrongPacketType => "invalid message",
            WireGuardError::ConnectionExpired => "session expired",
            _ => "rejected by the session",
        },
    }
}

/// gotatun's verdict on a message routed to a peer, as a [`DeviceError`].
fn map_session_error(e: &WireGuardError, index: Option<u32>) -> DeviceError {
    match e {
        WireGuardError::DuplicateCounter | WireGuardError::InvalidCounter => DeviceError::Replay,
        // The index was ours once but names no live session or handshake
        // any more (or a response arrived for a superseded initiation).
        WireGuardError::NoCurrentSession
        | WireGuardError::WrongIndex
        | WireGuardError::UnexpectedPacket => DeviceError::UnknownIndex(index.unwrap_or(0)),
        e => unauthenticated(e),
    }
}

/// The addresses of an IP packet and its length from its own header (the
/// rest is padding). `None` unless it is a well-formed IPv4 or IPv6 header
/// whose length fits the buffer (the kernel's checks in receive.c).
struct IpMeta {
    src: IpAddr,
    dst: IpAddr,
    len: usize,
}

fn parse_ip(b: &[u8]) -> Option<IpMeta> {
    match b.first()? >> 4 {
        4 => {
            if b.len() < 20 {
                return None;
            }
            let header_len = usize::from(b[0] & 0x0f) * 4;
            let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            if header_len < 20 || len < header_len || len > b.len() {
                return None;
            }
            let addr = |at: usize| {
                let octets: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
                IpAddr::V4(Ipv4Addr::from(octets))
            };
            Some(IpMeta {
                src: addr(12),
                dst: addr(16),
                len,
            })
        }
        6 => {
            if b.len() < 40 {
                return None;
            }
            let len = 40 + usize::from(u16::from_be_bytes([b[4], b[5]]));
            if len > b.len() {
                return None;
            }
            let addr = |at: usize| {
                let octets: [u8; 16] = b[at..at + 16].try_into().expect("16 bytes");
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            Some(IpMeta {
                src: addr(8),
                dst: addr(24),
                len,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
