//! Devices talking to each other entirely in memory: a tiny network that
//! carries `Output::Network` datagrams to the device bound at the
//! destination address, and records what each device writes to its TUN.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::uapi::{PeerChange, SetCommand};
use wgmesh_core::netmap::{Action, FilterRule, PortRange, Proto};

fn random_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("OS randomness");
    b
}

fn random_key() -> PrivateKey {
    PrivateKey::from_random(random_bytes())
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

fn ipv4(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    ipv4_proto(src, dst, 17, payload)
}

/// IPv4 with this protocol number (`ipv4` says UDP).
fn ipv4_proto(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    let src: Ipv4Addr = src.parse().expect("test address");
    let dst: Ipv4Addr = dst.parse().expect("test address");
    let total = u16::try_from(20 + payload.len()).expect("small packet");
    let mut p = vec![0x45, 0];
    p.extend(total.to_be_bytes());
    p.extend([0, 0, 0x40, 0, 64, proto, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    let sum = p
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let checksum = !u16::try_from((sum & 0xffff) + (sum >> 16)).expect("folded");
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p.extend(payload);
    p
}

fn ipv6(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let src: Ipv6Addr = src.parse().expect("test address");
    let dst: Ipv6Addr = dst.parse().expect("test address");
    let len = u16::try_from(payload.len()).expect("small packet");
    let mut p = vec![0x60, 0, 0, 0];
    p.extend(len.to_be_bytes());
    p.extend([17, 64]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(payload);
    p
}

struct Node {
    dev: Device,
    key: PrivateKey,
    /// Where the node's datagrams come from, and where it receives.
    addr: SocketAddr,
    /// What the device wrote to its TUN.
    tun: Vec<Vec<u8>>,
}

impl Node {
    fn public(&self) -> PublicKey {
        self.key.public_key()
    }
}

/// A network of devices on a virtual clock (`now`; gotatun's own timers
/// still read the real clock).
struct Net {
    nodes: Vec<Node>,
    now: Instant,
    /// Every datagram sent: (sender, destination, bytes).
    wire: Vec<(usize, SocketAddr, Vec<u8>)>,
}

const A: usize = 0;
const B: usize = 1;

impl Net {
    fn new() -> Self {
        Self {
            nodes: Vec::new(),
            now: Instant::now(),
            wire: Vec::new(),
        }
    }

    fn add_node(&mut self, addr: &str) -> usize {
        let key = random_key();
        let mut dev = Device::new();
        let addr = sock(addr);
        dev.apply(
            self.now,
            &SetCommand {
                private_key: Some(Some(key.clone())),
                listen_port: Some(addr.port()),
                ..SetCommand::default()
            },
        )
        .expect("set key");
        self.nodes.push(Node {
            dev,
            key,
            addr,
            tun: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Tell `node` about `other`: its allowed IPs, and its endpoint if
    /// `with_endpoint` (otherwise `node` learns it from `other`'s packets).
    fn add_peer(
        &mut self,
        node: usize,
        other: usize,
        allowed: &[&str],
        with_endpoint: bool,
        psk: Option<PresharedKey>,
    ) {
        let mut change = PeerChange::new(self.nodes[other].public());
        change.allowed_ips = allowed.iter().map(|s| net(s)).collect();
        change.endpoint = with_endpoint.then_some(self.nodes[other].addr);
        change.preshared_key = psk.map(Some);
        self.apply(node, change);
    }

    fn apply(&mut self, node: usize, change: PeerChange) {
        let cmd = SetCommand {
            peers: vec![change],
            ..SetCommand::default()
        };
        self.nodes[node].dev.apply(self.now, &cmd).expect("apply");
    }

    /// Carries `outs` (produced by `from`) and everything they cause, until
    /// the network is quiet. Datagrams to an address nobody has are lost.
    fn deliver(&mut self, from: usize, outs: Vec<Output>) {
        let mut queue: VecDeque<(usize, Output)> = outs.into_iter().map(|o| (from, o)).collect();
        let mut steps = 0;
        while let Some((src, output)) = queue.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "the devices never went quiet");
            match output {
                Output::Tunnel(packet) => self.nodes[src].tun.push(packet),
                Output::Network { to, bytes } => {
                    self.wire.push((src, to, bytes.clone()));
                    let Some(dst) = self.nodes.iter().position(|n| n.addr == to) else {
                        continue;
                    };
                    let from_addr = self.nodes[src].addr;
                    let mut out = Vec::new();
                    // Errors are counted by the device; tests look there.
                    let _ = self.nodes[dst]
                        .dev
                        .handle_udp(self.now, from_addr, &bytes, &mut out);
                    queue.extend(out.into_iter().map(|o| (dst, o)));
                }
            }
        }
    }

    fn send(&mut self, node: usize, packet: &[u8]) -> Result<(), DeviceError> {
        let mut out = Vec::new();
        let result = self.nodes[node].dev.handle_tun(self.now, packet, &mut out);
        self.deliver(node, out);
        result
    }

    fn tick(&mut self, node: usize) {
        let mut out = Vec::new();
        self.nodes[node].dev.handle_timers(self.now, &mut out);
        self.deliver(node, out);
    }

    fn counters(&self, node: usize) -> Counters {
        self.nodes[node].dev.counters().clone()
    }

    fn peer(&self, node: usize, other: usize) -> PeerSnapshot {
        let key = self.nodes[other].public();
        self.nodes[node]
            .dev
            .snapshot(self.now, SystemTime::now())
            .peers
            .into_iter()
            .find(|p| p.public_key == key)
            .expect("peer configured")
    }
}

/// A (10.0.0.1, fd00::1) knows B's endpoint; B (10.0.0.2, fd00::2) does
/// not know A's and must learn it from A's authenticated packets.
fn pair(outside_v6: bool, psk: bool) -> Net {
    let mut n = Net::new();
    if outside_v6 {
        n.add_node("[2001:db8::1]:51820");
        n.add_node("[2001:db8::2]:51821");
    } else {
        n.add_node("192.0.2.1:51820");
        n.add_node("192.0.2.2:51821");
    }
    let psk = psk.then(|| PresharedKey::from_random(random_bytes()));
    n.add_peer(A, B, &["10.0.0.2/32", "fd00::2/128"], true, psk.clone());
    n.add_peer(B, A, &["10.0.0.1/32", "fd00::1/128"], false, psk);
    n
}

/// Sends one packet each way and checks it arrives intact and alone.
fn exchange(n: &mut Net, a_to_b: &[u8], b_to_a: &[u8]) {
    let (a_before, b_before) = (n.nodes[A].tun.len(), n.nodes[B].tun.len());
    n.send(A, a_to_b).expect("A sends");
    assert_eq!(n.nodes[B].tun.len(), b_before + 1, "B received one packet");
    assert_eq!(n.nodes[B].tun.last().map(Vec::as_slice), Some(a_to_b));
    n.send(B, b_to_a).expect("B sends");
    assert_eq!(n.nodes[A].tun.len(), a_before + 1, "A received one packet");
    assert_eq!(n.nodes[A].tun.last().map(Vec::as_slice), Some(b_to_a));
}

fn assert_no_drops(n: &Net) {
    for (i, node) in n.nodes.iter().enumerate() {
        assert_eq!(
            node.dev.counters().dropped(),
            0,
            "node {i}: {:?}",
            node.dev.counters()
        );
    }
}

/// A data packet `node` encrypts for its peer, captured instead of sent.
fn fresh_data_packet(n: &mut Net, node: usize, packet: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    n.nodes[node]
        .dev
        .handle_tun(n.now, packet, &mut out)
        .expect("encrypts");
    match out.as_slice() {
        [Output::Network { bytes, .. }] if bytes[0] == 4 => bytes.clone(),
        other => panic!("expected one data packet: {other:?}"),
    }
}

/// The receiver index a data packet is addressed to.
fn receiver_index(datagram: &[u8]) -> u32 {
    u32::from_le_bytes(datagram[4..8].try_into().expect("4 bytes"))
}

fn data_packets_from(n: &Net, node: usize) -> Vec<Vec<u8>> {
    n.wire
        .iter()
        .filter(|(src, _, b)| *src == node && b[0] == 4 && b.len() > 32)
        .map(|(_, _, b)| b.clone())
        .collect()
}

#[test]
fn handshake_and_data_both_ways_ipv4() {
    let mut n = pair(false, false);
    let ping = ipv4("10.0.0.1", "10.0.0.2", b"ping over wireguard");
    let pong = ipv4("10.0.0.2", "10.0.0.1", b"pong");
    exchange(&mut n, &ping, &pong);
    exchange(&mut n, &ping, &pong);
    for node in [A, B] {
        let c = n.counters(node);
        assert_eq!(c.handshakes_completed, 1, "node {node}: {c:?}");
        assert_eq!(c.rx_data_packets, 2);
        assert_eq!(c.tx_data_packets, 2);
    }
    assert_eq!(n.counters(A).handshake_initiations_sent, 1);
    assert_eq!(n.counters(B).handshake_responses_sent, 1);
    assert_no_drops(&n);
    // B learnt A's endpoint from the authenticated initiation.
    let a_seen_by_b = n.peer(B, A);
    assert_eq!(a_seen_by_b.endpoint, Some(n.nodes[A].addr));
    assert!(a_seen_by_b.last_handshake.is_some());
    assert!(a_seen_by_b.rx_bytes > 0 && a_seen_by_b.tx_bytes > 0);
    // Data is padded to a multiple of 16 on the wire (paper §5.4.6) and
    // the padding is gone on the TUN.
    for packet in data_packets_from(&n, A) {
        assert_eq!((packet.len() - 32) % 16, 0);
    }
}

#[test]
fn queued_packets_go_out_after_the_handshake() {
    let mut n = pair(false, false);
    // Three packets before any session: the first starts the handshake,
    // all three wait in the queue and leave when it completes.
    let mut out = Vec::new();
    for i in 0..3u8 {
        let p = ipv4("10.0.0.1", "10.0.0.2", &[i; 10]);
        n.nodes[A]
            .dev
            .handle_tun(n.now, &p, &mut out)
            .expect("queued");
    }
    assert_eq!(out.len(), 1, "one initiation, the packets wait");
    n.deliver(A, out);
    let got: Vec<u8> = n.nodes[B].tun.iter().map(|p| p[20]).collect();
    assert_eq!(got, [0, 1, 2]);
    assert_no_drops(&n);
}

#[test]
fn preshared_key_on_both_sides_works() {
    let mut n = pair(false, true);
    exchange(
        &mut n,
        &ipv4("10.0.0.1", "10.0.0.2", b"with psk"),
        &ipv4("10.0.0.2", "10.0.0.1", b"with psk"),
    );
    assert!(n.peer(A, B).preshared_key.is_some());
    assert_no_drops(&n);
}

#[test]
fn mismatched_preshared_key_fails_the_handshake_and_is_counted() {
    let mut n = pair(false, false);
    let mut change = PeerChange::new(n.nodes[A].public());
    change.preshared_key = Some(Some(PresharedKey::from_random(random_bytes())));
    n.apply(B, change);
    n.send(A, &ipv4("10.0.0.1", "10.0.0.2", b"x"))
        .expect("queued");
    assert!(n.nodes[B].tun.is_empty());
    // The PSK enters the handshake at the response (paper §5.4.3): B
    // answers, A cannot authenticate the answer, and neither counts a
    // handshake (B waits for data on the new session that never comes).
    assert_eq!(
        n.counters(A).dropped_unauthenticated,
        1,
        "{:?}",
        n.counters(A)
    );
    assert_eq!(n.counters(B).handshake_responses_sent, 1);
    assert_eq!(n.counters(A).handshakes_completed, 0);
    assert_eq!(n.counters(B).handshakes_completed, 0);
    assert_eq!(n.peer(B, A).last_handshake, None);
    assert_eq!(n.counters(B).dropped(), 0);
}

#[test]
fn ipv6_inside_and_outside() {
    let mut n = pair(true, false);
    exchange(
        &mut n,
        &ipv6("fd00::1", "fd00::2", b"six in six"),
        &ipv6("fd00::2", "fd00::1", b"six back"),
    );
    // IPv4 inside an IPv6 outer path too.
    exchange(
        &mut n,
        &ipv4("10.0.0.1", "10.0.0.2", b"four in six"),
        &ipv4("10.0.0.2", "10.0.0.1", b"four back"),
    );
    assert!(n.wire.iter().all(|(_, to, _)| to.is_ipv6()));
    assert_eq!(n.peer(B, A).endpoint, Some(sock("[2001:db8::1]:51820")));
    assert_no_drops(&n);
}

#[test]
fn keepalives_are_not_written_to_the_tun() {
    let mut n = pair(false, false);
    let ping = ipv4("10.0.0.1", "10.0.0.2", b"x");
    n.send(A, &ping).expect("sent");
    // The initiator confirms the new session with a keepalive (paper §5.4.3
    // note), which B accepts without writing anything.
    assert_eq!(n.counters(B).rx_keepalives, 1);
    assert_eq!(n.nodes[B].tun, std::slice::from_ref(&ping));

    // Persistent keepalive, switched on: one is due at the next tick.
    let mut change = PeerChange::new(n.nodes[B].public());
    change.persistent_keepalive = Some(25);
    n.apply(A, change);
    n.tick(A);
    assert_eq!(n.counters(A).tx_keepalives, 2, "{:?}", n.counters(A));
    assert_eq!(n.counters(B).rx_keepalives, 2);
    assert_eq!(n.nodes[B].tun, [ping], "keepalives never reach the TUN");
    assert_eq!(n.peer(A, B).persistent_keepalive, 25);
    assert_no_drops(&n);
}

/// Whether `node` holds session state (a gotatun `Tunn`) for `other`.
fn has_session_state(n: &Net, node: usize, other: usize) -> bool {
    let key = n.nodes[other].public();
    n.nodes[node]
        .dev
        .peers
        .values()
        .find(|p| p.public_key == key)
        .expect("peer configured")
        .tunn
        .is_some()
}

#[test]
fn session_state_is_made_on_first_use_and_works_as_before() {
    let mut n = pair(false, false);
    let c = n.add_node("192.0.2.3:51822");
    let d = n.add_node("192.0.2.4:51823");
    // C: configured with an endpoint, but nobody sends to it.
    n.add_peer(A, c, &["10.0.0.3/32"], true, None);
    // D: persistent keepalive on, but no endpoint to send it to yet.
    n.add_peer(A, d, &["10.0.0.4/32"], false, None);
    let mut change = PeerChange::new(n.nodes[d].public());
    change.persistent_keepalive = Some(25);
    n.apply(A, change);

    // Configured, silent peers hold no session state, and their timers
    // have nothing to send.
    n.tick(A);
    n.tick(B);
    for (node, other) in [(A, B), (B, A), (A, c), (A, d)] {
        assert!(!has_session_state(&n, node, other), "{node} → {other}");
    }
    assert!(n.wire.is_empty(), "nothing on the wire: {:?}", n.wire);

    // The first packet makes A's; B makes its own for A's initiation.
    let ping = ipv4("10.0.0.1", "10.0.0.2", b"ping");
    let pong = ipv4("10.0.0.2", "10.0.0.1", b"pong");
    exchange(&mut n, &ping, &pong);
    exchange(&mut n, &ping, &pong);
    assert!(has_session_state(&n, A, B) && has_session_state(&n, B, A));
    for node in [A, B] {
        let counters = n.counters(node);
        assert_eq!(counters.handshakes_completed, 1, "{node}: {counters:?}");
        assert_eq!(counters.rx_data_packets, 2);
    }
    assert!(!has_session_state(&n, A, c), "C still silent");
    assert!(!has_session_state(&n, A, d), "D still has no endpoint");

    // D's persistent keepalive goes out at the first tick after its
    // endpoint is known, and starts the handshake, as an eager session's
    // would: D (which knows A) answers and the session is up.
    n.add_peer(d, A, &["10.0.0.1/32"], false, None);
    let mut change = PeerChange::new(n.nodes[d].public());
    change.endpoint = Some(n.nodes[d].addr);
    n.apply(A, change);
    let initiations = n.counters(A).handshake_initiations_sent;
    n.tick(A);
    assert!(has_session_state(&n, A, d));
    assert_eq!(n.counters(A).handshake_initiations_sent, initiations + 1);
    assert_eq!(n.counters(d).handshake_responses_sent, 1);
    assert_eq!(n.counters(A).handshakes_completed, 2);
    assert!(n.counters(d).rx_keepalives >= 1, "{:?}", n.counters(d));
    assert_eq!(n.peer(d, A).endpoint, Some(n.nodes[A].addr));

    assert!(!has_session_state(&n, A, c));
    assert_no_drops(&n);

    // A new private key resets the sessions that exist and makes none.
    let cmd = SetCommand {
        private_key: Some(Some(random_key())),
        ..SetCommand::default()
    };
    n.nodes[A].dev.apply(n.now, &cmd).expect("new key");
    assert!(has_session_state(&n, A, B) && has_session_state(&n, A, d));
    assert!(!has_session_state(&n, A, c));
}

#[test]
fn forged_truncated_and_replayed_packets_are_dropped_and_counted() {
    let mut n = pair(false, false);
    exchange(
        &mut n,
        &ipv4("10.0.0.1", "10.0.0.2", b"genuine"),
        &ipv4("10.0.0.2", "10.0.0.1", b"genuine"),
    );
    // A packet B has not seen yet (the replay check comes before the
    // tag check, so forgeries of an old packet would count as replays).
    let genuine = fresh_data_packet(&mut n, A, &ipv4("10.0.0.1", "10.0.0.2", b"fresh"));
    let a = n.nodes[A].addr;
    let dev = &mut n.nodes[B].dev;
    let mut out = Vec::new();
    let before = dev.counters().clone();

    // Shorter than a data header and tag.
    assert_eq!(
        dev.handle_udp(n.now, a, &genuine[..31], &mut out),
        Err(DeviceError::Malformed)
    );
    // One byte short: the tag no longer matches.
    assert!(matches!(
        dev.handle_udp(n.now, a, &genuine[..genuine.len() - 1], &mut out),
        Err(DeviceError::Unauthenticated { .. })
    ));
    // One bit flipped in the ciphertext.
    let mut forged = genuine.clone();
    forged[40] ^= 1;
    assert!(matches!(
        dev.handle_udp(n.now, a, &forged, &mut out),
        Err(DeviceError::Unauthenticated { .. })
    ));
    // The forgeries did not burn the counter: the genuine packet passes …
    dev.handle_udp(n.now, a, &genuine, &mut out)
        .expect("genuine packet");
    assert!(matches!(out.as_slice(), [Output::Tunnel(_)]), "{out:?}");
    out.clear();
    // … once: the replay window catches it the second time.
    assert_eq!(
        dev.handle_udp(n.now, a, &genuine, &mut out),
        Err(DeviceError::Replay)
    );
    // Nonzero reserved bytes in the type word.
    let mut reserved = genuine.clone();
    reserved[1] = 1;
    assert_eq!(
        dev.handle_udp(n.now, a, &reserved, &mut out),
        Err(DeviceError::Malformed)
    );
    // An initiation-shaped datagram whose mac1 is not for us.
    let mut init = vec![0u8; 148];
    init[0] = 1;
    assert_eq!(
        dev.handle_udp(n.now, a, &init, &mut out),
        Err(DeviceError::InvalidMac)
    );
    // A data packet for an index that was never ours.
    let mut stray = genuine.clone();
    let unused = receiver_index(&genuine).wrapping_add(1);
    stray[4..8].copy_from_slice(&unused.to_le_bytes());
    assert_eq!(
        dev.handle_udp(n.now, a, &stray, &mut out),
        Err(DeviceError::UnknownIndex(unused))
    );
    // Garbage from the TUN side.
    assert_eq!(
        dev.handle_tun(n.now, b"\x45garbage", &mut out),
        Err(DeviceError::InvalidIpPacket)
    );

    assert!(out.is_empty(), "nothing answers a bad packet: {out:?}");
    let c = dev.counters();
    assert_eq!(c.dropped_malformed - before.dropped_malformed, 2);
    assert_eq!(
        c.dropped_unauthenticated - before.dropped_unauthenticated,
        2
    );
    assert_eq!(c.dropped_replay - before.dropped_replay, 1);
    assert_eq!(c.dropped_invalid_mac - before.dropped_invalid_mac, 1);
    assert_eq!(c.dropped_unknown_index - before.dropped_unknown_index, 1);
    assert_eq!(
        c.dropped_invalid_ip_packet - before.dropped_invalid_ip_packet,
        1
    );
    assert_eq!(c.dropped() - before.dropped(), 8);
    assert_eq!(
        n.nodes[B].tun.len(),
        1,
        "written by exchange(); the rest went to `out`"
    );
}

#[test]
fn initiation_from_an_unknown_key_is_dropped_and_counted() {
    let mut n = pair(false, false);
    let c = n.add_node("192.0.2.3:51822");
    // C knows B; B has never heard of C.
    n.add_peer(c, B, &["10.0.0.2/32"], true, None);
    n.send(c, &ipv4("10.0.0.3", "10.0.0.2", b"let me in"))
        .expect("queued");
    let counters = n.counters(B);
    assert_eq!(counters.dropped_unknown_peer, 1);
    assert_eq!(counters.handshake_responses_sent, 0);
    assert!(n.nodes[B].tun.is_empty());
    assert!(
        n.wire.iter().all(|(src, _, _)| *src == c),
        "B stayed silent"
    );
}

#[test]
fn inbound_source_must_belong_to_the_sending_peer() {
    let mut n = pair(false, false);
    // A routes 10.0.0.3 to another peer, C.
    let mut c = PeerChange::new(random_key().public_key());
    c.allowed_ips = vec![net("10.0.0.3/32")];
    n.apply(A, c);
    // B (which routes everything for 10.0.0.1 to A) sends packets whose
    // sources are C's address and nobody's address.
    let mut b_routes_more = PeerChange::new(n.nodes[A].public());
    b_routes_more.allowed_ips = vec![net("10.0.0.0/24")];
    n.apply(B, b_routes_more);
    n.send(A, &ipv4("10.0.0.1", "10.0.0.2", b"hello"))
        .expect("sent");
    n.send(B, &ipv4("10.0.0.3", "10.0.0.1", b"spoofed as C"))
        .expect("sent");
    n.send(B, &ipv4("10.9.9.9", "10.0.0.1", b"spoofed as nobody"))
        .expect("sent");
    assert!(n.nodes[A].tun.is_empty(), "{:?}", n.nodes[A].tun);
    assert_eq!(n.counters(A).dropped_source_not_allowed, 2);
    // B's own address still gets through.
    n.send(B, &ipv4("10.0.0.2", "10.0.0.1", b"honest"))
        .expect("sent");
    assert_eq!(n.nodes[A].tun.len(), 1);
}

#[test]
fn roaming_follows_authenticated_packets() {
    let mut n = pair(false, false);
    exchange(
        &mut n,
        &ipv4("10.0.0.1", "10.0.0.2", b"before"),
        &ipv4("10.0.0.2", "10.0.0.1", b"before"),
    );
    // B moves (new address and port, as behind a NAT rebinding).
    let moved = sock("198.51.100.7:40000");
    n.nodes[B].addr = moved;
    n.send(B, &ipv4("10.0.0.2", "10.0.0.1", b"from afar"))
        .expect("sent");
    assert_eq!(n.peer(A, B).endpoint, Some(moved));
    // A's answer reaches B at its new address.
    let before = n.nodes[B].tun.len();
    n.send(A, &ipv4("10.0.0.1", "10.0.0.2", b"found you"))
        .expect("sent");
    assert_eq!(n.nodes[B].tun.len(), before + 1);
    assert_eq!(n.wire.last().map(|(_, to, _)| *to), Some(moved));

    // A forged packet from yet another address does not move it.
    let mut forged = fresh_data_packet(&mut n, B, &ipv4("10.0.0.2", "10.0.0.1", b"forge me"));
    forged[40] ^= 0x80;
    let mut out = Vec::new();
    let _ = n.nodes[A]
        .dev
        .handle_udp(n.now, sock("203.0.113.66:666"), &forged, &mut out);
    assert_eq!(n.peer(A, B).endpoint, Some(moved));
    assert_no_drops_except_unauthenticated(&n);
}

fn assert_no_drops_except_unauthenticated(n: &Net) {
    let c = n.counters(A);
    assert_eq!(c.dropped(), c.dropped_unauthenticated, "{c:?}");
}

#[test]
fn a_flood_of_initiations_gets_cookie_replies_and_mac2_gets_through() {
    let mut n = pair(false, false);
    n.nodes[B].dev.set_handshake_rate_limit(3);
    // A retries its initiation after 100 ms instead of 5 s.
    n.nodes[A].dev.dangerously_set_timer_params(TimerParams {
        rekey_timeout: Duration::from_millis(100)..=Duration::from_millis(100),
        ..TimerParams::default()
    });
    let a = n.nodes[A].addr;
    let mut out = Vec::new();
    n.nodes[A]
        .dev
        .handle_tun(n.now, &ipv4("10.0.0.1", "10.0.0.2", b"x"), &mut out)
        .expect("queued");
    let [Output::Network { bytes: init, .. }] = out.as_slice() else {
        panic!("expected one initiation: {out:?}");
    };
    let init = init.clone();

    // The same initiation, again and again from A's address (an attacker
    // replaying it). Three are within the limit: the first is answered,
    // the replays are refused by their timestamp.
    let mut replies = Vec::new();
    for _ in 0..3 {
        let _ = n.nodes[B].dev.handle_udp(n.now, a, &init, &mut replies);
    }
    assert_eq!(replies.len(), 1, "one response");
    assert_eq!(n.counters(B).dropped_unauthenticated, 2);
    // Beyond the limit: under load, no mac2 → a cookie reply, no work.
    let mut cookie = Vec::new();
    for _ in 0..5 {
        n.nodes[B]
            .dev
            .handle_udp(n.now, a, &init, &mut cookie)
            .expect("a cookie reply is not an error");
    }
    assert_eq!(n.counters(B).cookie_replies_sent, 5);
    assert_eq!(cookie.len(), 5);
    for o in &cookie {
        let Output::Network { to, bytes } = o else {
            panic!("{o:?}");
        };
        assert_eq!((*to, bytes[0], bytes.len()), (a, 3, 64));
    }
    assert_eq!(n.counters(B).handshake_responses_sent, 1);

    // A takes the cookie; its retry carries mac2 and gets through though
    // B is still under load.
    n.deliver(B, cookie.split_off(4));
    assert_eq!(n.counters(A).cookie_replies_received, 1);
    let deadline = Instant::now() + Duration::from_secs(3);
    while n.counters(A).handshakes_completed == 0 {
        assert!(
            Instant::now() < deadline,
            "no handshake: {:?}",
            n.counters(A)
        );
        std::thread::sleep(Duration::from_millis(20));
        n.now = Instant::now();
        n.tick(A);
    }
    let retry = n
        .wire
        .iter()
        .rev()
        .find(|(src, _, b)| *src == A && b[0] == 1)
        .map(|(_, _, b)| b.clone())
        .expect("a retried initiation");
    assert_ne!(&retry[132..148], &[0u8; 16], "mac2 is set");
    assert_eq!(n.counters(B).cookie_replies_sent, 5);
    assert_eq!(n.nodes[B].tun.len(), 1, "the queued packet arrived");
}

#[test]
fn rekey_with_shortened_timers() {
    let mut n = pair(false, false);
    // REKEY_AFTER_TIME (120 s in the paper) shortened to 300 ms for the
    // initiator; gotatun's clock is real, so this test takes that long.
    n.nodes[A].dev.dangerously_set_timer_params(TimerParams {
        rekey_after_time: Duration::from_millis(300)..=Duration::from_millis(300),
        ..TimerParams::default()
    });
    let ping = ipv4("10.0.0.1", "10.0.0.2", b"ping");
    let pong = ipv4("10.0.0.2", "10.0.0.1", b"pong");
    exchange(&mut n, &ping, &pong);
    let first_index = receiver_index(&data_packets_from(&n, A)[0]);

    let start = Instant::now();
    let deadline = start + Duration::from_secs(3);
    while n.counters(A).handshakes_completed < 2 {
        assert!(Instant::now() < deadline, "no rekey: {:?}", n.counters(A));
        std::thread::sleep(Duration::from_millis(20));
        n.now = Instant::now();
        // Traffic keeps flowing through the rekey.
        exchange(&mut n, &ping, &pong);
        n.tick(A);
        n.tick(B);
    }
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(n.counters(A).handshake_initiations_sent, 2);
    exchange(&mut n, &ping, &pong);
    let last_index = receiver_index(&data_packets_from(&n, A).pop().expect("data"));
    assert_ne!(first_index, last_index, "data moved to the new session");
    assert_no_drops(&n);
}

#[test]
fn no_route_and_no_endpoint_are_counted() {
    let mut n = pair(false, false);
    let mut out = Vec::new();
    assert_eq!(
        n.nodes[A]
            .dev
            .handle_tun(n.now, &ipv4("10.0.0.1", "10.7.7.7", b"?"), &mut out),
        Err(DeviceError::NoRoute("10.7.7.7".parse().expect("ip")))
    );
    // B has no endpoint for A until A calls.
    let a_key = n.nodes[A].public();
    assert_eq!(
        n.nodes[B]
            .dev
            .handle_tun(n.now, &ipv4("10.0.0.2", "10.0.0.1", b"?"), &mut out),
        Err(DeviceError::NoEndpoint(a_key))
    );
    assert!(out.is_empty());
    assert_eq!(n.counters(A).dropped_no_route, 1);
    assert_eq!(n.counters(B).dropped_no_endpoint, 1);
}

#[test]
fn snapshot_shows_last_handshake_as_wall_time() {
    let mut n = pair(false, false);
    let t0 = n.now;
    exchange(
        &mut n,
        &ipv4("10.0.0.1", "10.0.0.2", b"x"),
        &ipv4("10.0.0.2", "10.0.0.1", b"y"),
    );
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let snap = n.nodes[A].dev.snapshot(t0 + Duration::from_secs(10), wall);
    assert_eq!(snap.listen_port, 51820);
    assert_eq!(snap.private_key.as_ref(), Some(&n.nodes[A].key));
    let peer = &snap.peers[0];
    assert_eq!(peer.last_handshake, Some((999_990, 0)));
    assert_eq!(peer.allowed_ips, [net("10.0.0.2/32"), net("fd00::2/128")]);
    assert_eq!(peer.endpoint, Some(n.nodes[B].addr));
    let (_, tx, rx, _, _) = n.nodes[A].dev.peers[&0]
        .tunn
        .as_ref()
        .expect("tunn")
        .stats();
    assert_eq!((peer.rx_bytes, peer.tx_bytes), (rx as u64, tx as u64));
    assert!(peer.tx_bytes >= 148 + 32, "initiation and data at least");
}

#[test]
fn a_new_private_key_drops_sessions_and_the_peer_must_learn_it() {
    let mut n = pair(false, false);
    let ping = ipv4("10.0.0.1", "10.0.0.2", b"ping");
    let pong = ipv4("10.0.0.2", "10.0.0.1", b"pong");
    exchange(&mut n, &ping, &pong);
    let old_public = n.nodes[A].public();

    let new_key = random_key();
    let cmd = SetCommand {
        private_key: Some(Some(new_key.clone())),
        ..SetCommand::default()
    };
    n.nodes[A].dev.apply(n.now, &cmd).expect("new key");
    n.nodes[A].key = new_key;
    // The session is gone: the next packet starts a handshake with the
    // new key, which B does not know.
    n.send(A, &ping).expect("queued");
    assert_eq!(n.counters(A).handshake_initiations_sent, 2);
    assert_eq!(n.counters(B).dropped_unknown_peer, 1);
    assert_eq!(n.nodes[B].tun.len(), 1);

    // B learns the new key; the queued packet and new ones get through.
    let mut remove = PeerChange::new(old_public);
    remove.remove = true;
    n.apply(B, remove);
    n.add_peer(B, A, &["10.0.0.1/32"], true, None);
    n.tick(A); // not yet due: gotatun waits REKEY_TIMEOUT before retrying
    n.send(B, &pong).expect("B starts the handshake now");
    assert_eq!(n.nodes[A].tun.len(), 2);
    assert_eq!(n.nodes[B].tun.len(), 2, "A's queued ping followed");
}

#[test]
fn apply_follows_uapi_set_semantics() {
    let now = Instant::now();
    let mut d = Device::new();
    let own = random_key();
    let (k1, k2, k3) = (random_key(), random_key(), random_key());
    let (p1, p2, p3) = (k1.public_key(), k2.public_key(), k3.public_key());
    let psk = PresharedKey::from_random(random_bytes());

    let mut c1 = PeerChange::new(p1);
    c1.allowed_ips = vec![net("10.0.0.9/24"), net("fd00::/64")];
    c1.endpoint = Some(sock("192.0.2.1:1"));
    c1.preshared_key = Some(Some(psk.clone()));
    c1.persistent_keepalive = Some(25);
    let mut c2 = PeerChange::new(p2);
    c2.allowed_ips = vec![net("10.0.1.0/24")];
    let mut mine = PeerChange::new(own.public_key());
    mine.allowed_ips = vec![net("10.9.0.0/16")];
    d.apply(
        now,
        &SetCommand {
            private_key: Some(Some(own.clone())),
            listen_port: Some(51820),
            fwmark: Some(7),
            replace_peers: false,
            peers: vec![c1, c2, mine],
        },
    )
    .expect("apply");
    let snap = d.snapshot(now, SystemTime::now());
    assert_eq!((snap.listen_port, snap.fwmark), (51820, 7));
    assert_eq!((d.listen_port(), d.fwmark()), (51820, 7));
    let keys: Vec<_> = snap.peers.iter().map(|p| p.public_key).collect();
    assert_eq!(keys, [p1, p2], "insertion order; our own key ignored");
    assert_eq!(
        snap.peers[0].allowed_ips,
        [net("10.0.0.0/24"), net("fd00::/64")],
        "host bits cleared"
    );
    assert_eq!(snap.peers[0].preshared_key.as_ref(), Some(&psk));
    assert_eq!(snap.peers[0].persistent_keepalive, 25);
    assert_eq!(snap.peers[0].last_handshake, None);

    // An allowed IP moves from p1 to p2; p1 replaces its list and drops
    // its PSK; update_only does not create p3.
    let mut c2 = PeerChange::new(p2);
    c2.allowed_ips = vec![net("10.0.0.0/24")];
    let mut c1 = PeerChange::new(p1);
    c1.replace_allowed_ips = true;
    c1.allowed_ips = vec![net("fd00:1::/64")];
    c1.preshared_key = Some(None);
    c1.update_only = true;
    let mut c3 = PeerChange::new(p3);
    c3.update_only = true;
    c3.allowed_ips = vec![net("10.3.0.0/16")];
    d.apply(
        now,
        &SetCommand {
            peers: vec![c2, c1, c3],
            ..SetCommand::default()
        },
    )
    .expect("apply");
    let snap = d.snapshot(now, SystemTime::now());
    assert_eq!(snap.peers.len(), 2);
    assert_eq!(snap.peers[0].allowed_ips, [net("fd00:1::/64")]);
    assert_eq!(snap.peers[0].preshared_key, None);
    assert_eq!(snap.peers[0].endpoint, Some(sock("192.0.2.1:1")), "kept");
    assert_eq!(
        snap.peers[1].allowed_ips,
        [net("10.0.0.0/24"), net("10.0.1.0/24")]
    );

    // Removing p2 removes its routes.
    let mut c2 = PeerChange::new(p2);
    c2.remove = true;
    d.apply(
        now,
        &SetCommand {
            peers: vec![c2],
            ..SetCommand::default()
        },
    )
    .expect("apply");
    let mut out = Vec::new();
    assert_eq!(
        d.handle_tun(now, &ipv4("10.0.0.1", "10.0.1.1", b""), &mut out),
        Err(DeviceError::NoRoute("10.0.1.1".parse().expect("ip")))
    );

    // replace_peers: only the peers named remain, created afresh.
    let mut c3 = PeerChange::new(p3);
    c3.allowed_ips = vec![net("10.3.0.0/16")];
    d.apply(
        now,
        &SetCommand {
            replace_peers: true,
            peers: vec![c3],
            ..SetCommand::default()
        },
    )
    .expect("apply");
    let snap = d.snapshot(now, SystemTime::now());
    assert_eq!(snap.peers.len(), 1);
    assert_eq!(snap.peers[0].public_key, p3);
    assert_eq!(d.peer_count(), 1);

    // Taking p3's private key as ours removes p3, as the kernel does.
    d.apply(
        now,
        &SetCommand {
            private_key: Some(Some(k3.clone())),
            ..SetCommand::default()
        },
    )
    .expect("apply");
    assert_eq!(d.public_key(), Some(p3));
    assert_eq!(d.peer_count(), 0);
    assert!(d.snapshot(now, SystemTime::now()).peers.is_empty());

    // Removing the key: the device can no longer send.
    let mut c1 = PeerChange::new(p1);
    c1.allowed_ips = vec![net("10.1.0.0/16")];
    c1.endpoint = Some(sock("192.0.2.1:1"));
    d.apply(
        now,
        &SetCommand {
            private_key: Some(None),
            peers: vec![c1],
            ..SetCommand::default()
        },
    )
    .expect("apply");
    assert_eq!(d.snapshot(now, SystemTime::now()).private_key, None);
    assert_eq!(
        d.handle_tun(now, &ipv4("10.0.0.1", "10.1.0.1", b""), &mut out),
        Err(DeviceError::NoPrivateKey)
    );
    assert_eq!(
        d.handle_udp(
            now,
            sock("192.0.2.1:1"),
            &[
                4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 0
            ],
            &mut out
        ),
        Err(DeviceError::NoPrivateKey)
    );
    // And with a key again, the peer gets a session state back.
    d.apply(
        now,
        &SetCommand {
            private_key: Some(Some(own)),
            ..SetCommand::default()
        },
    )
    .expect("apply");
    d.handle_tun(now, &ipv4("10.0.0.1", "10.1.0.1", b""), &mut out)
        .expect("handshake starts");
    assert!(matches!(out.as_slice(), [Output::Network { bytes, .. }] if bytes[0] == 1));
}

#[test]
fn a_refused_set_changes_nothing() {
    let now = Instant::now();
    let mut d = Device::new();
    d.set_peer_limit(2);
    let (k1, k2, k3) = (random_key(), random_key(), random_key());
    let mut c1 = PeerChange::new(k1.public_key());
    c1.allowed_ips = vec![net("10.0.0.0/24")];
    d.apply(
        now,
        &SetCommand {
            private_key: Some(Some(random_key())),
            listen_port: Some(1000),
            peers: vec![c1],
            ..SetCommand::default()
        },
    )
    .expect("apply");
    let wall = SystemTime::now();
    let before = d.snapshot(now, wall);

    // Changes everything, then adds two peers: one too many.
    let mut c1 = PeerChange::new(k1.public_key());
    c1.allowed_ips = vec![net("10.5.0.0/16")];
    c1.replace_allowed_ips = true;
    c1.preshared_key = Some(Some(PresharedKey::from_random(random_bytes())));
    let mut c2 = PeerChange::new(k2.public_key());
    c2.allowed_ips = vec![net("10.0.0.0/24")];
    let bad = SetCommand {
        private_key: Some(Some(random_key())),
        listen_port: Some(2000),
        fwmark: Some(9),
        replace_peers: false,
        peers: vec![c1, c2, PeerChange::new(k3.public_key())],
    };
    assert_eq!(
        d.apply(now, &bad),
        Err(DeviceError::TooManyPeers { limit: 2 })
    );
    assert_eq!(d.snapshot(now, wall), before);
    assert_eq!(d.counters().refused_sets, 1);

    // Removing one first keeps the peak within the limit.
    let mut r1 = PeerChange::new(k1.public_key());
    r1.remove = true;
    let ok = SetCommand {
        peers: vec![
            r1,
            PeerChange::new(k2.public_key()),
            PeerChange::new(k3.public_key()),
        ],
        ..SetCommand::default()
    };
    d.apply(now, &ok).expect("within the limit");
    assert_eq!(d.peer_count(), 2);
}

#[test]
fn debug_never_shows_secret_keys() {
    let n = pair(false, true);
    let text = format!("{:?}", n.nodes[A].dev);
    assert!(
        !text.contains(n.nodes[A].key.to_base64().as_str()),
        "{text}"
    );
    let psk = n.peer(A, B).preshared_key.expect("psk").to_base64();
    assert!(!text.contains(psk.as_str()));
    assert!(text.contains(&n.nodes[A].public().to_string()));
}

/// Datagrams to throw at a device: anything, and things shaped like each
/// WireGuard message (right type word and length) with random contents,
/// some addressed to the live session's receiver index.
fn datagram_strategy() -> impl Strategy<Value = (Vec<u8>, bool)> {
    let shaped = (
        1u8..=4,
        proptest::collection::vec(any::<u8>(), 0..200),
        any::<bool>(),
    )
        .prop_map(|(t, body, live_index)| {
            let len = match t {
                1 => 148,
                2 => 92,
                3 => 64,
                _ => 32 + body.len(),
            };
            let mut d = vec![t, 0, 0, 0];
            d.extend(body.iter().cycle().take(len - 4));
            d.resize(len, 0);
            (d, live_index)
        });
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|d| (d, false)),
        shaped,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_datagrams_are_dropped_and_counted_never_panic(
        cases in proptest::collection::vec(datagram_strategy(), 1..8)
    ) {
        let mut n = pair(false, false);
        exchange(
            &mut n,
            &ipv4("10.0.0.1", "10.0.0.2", b"x"),
            &ipv4("10.0.0.2", "10.0.0.1", b"y"),
        );
        let live = data_packets_from(&n, A)[0][4..8].to_vec();
        let a = n.nodes[A].addr;
        for (mut datagram, live_index) in cases {
            if live_index && datagram.len() >= 8 {
                datagram[4..8].copy_from_slice(&live);
            }
            let dev = &mut n.nodes[B].dev;
            let before = dev.counters().dropped();
            let mut out = Vec::new();
            let result = dev.handle_udp(n.now, a, &datagram, &mut out);
            prop_assert!(result.is_err(), "{:?}", result);
            prop_assert_eq!(dev.counters().dropped(), before + 1);
            prop_assert!(out.is_empty());
        }
        // The session survived the onslaught.
        exchange(
            &mut n,
            &ipv4("10.0.0.1", "10.0.0.2", b"still"),
            &ipv4("10.0.0.2", "10.0.0.1", b"here"),
        );
    }

    #[test]
    fn random_tun_packets_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..100)) {
        let mut n = pair(false, false);
        let mut out = Vec::new();
        let before = n.counters(A);
        match n.nodes[A].dev.handle_tun(n.now, &packet, &mut out) {
            Ok(()) => prop_assert_eq!(n.counters(A).dropped(), before.dropped()),
            Err(_) => prop_assert_eq!(n.counters(A).dropped(), before.dropped() + 1),
        }
    }
}

#[test]
fn device_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Device>();
    assert_send::<Output>();
    assert_send::<DeviceError>();
}

/// A TCP header (no options) from `sport` to `dport`.
fn tcp_header(sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(sport.to_be_bytes());
    t.extend(dport.to_be_bytes());
    t.extend([0; 8]);
    t.extend([0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// A UDP header and 4 bytes of data.
fn udp_datagram(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend(sport.to_be_bytes());
    u.extend(dport.to_be_bytes());
    u.extend([0, 12, 0, 0]);
    u.extend(b"data");
    u
}

/// B (10.0.0.2, fd00::2) filters what A (10.0.0.1, fd00::1) sends it.
fn filtering_pair(default: Action, a_rules: Vec<FilterRule>) -> Net {
    let mut n = pair(false, false);
    let mut filter = PacketFilter::new(
        vec![
            "10.0.0.2".parse().expect("ip"),
            "fd00::2".parse().expect("ip"),
        ],
        default,
    );
    filter.set_sources([
        ("10.0.0.1".parse().expect("ip"), a_rules.clone()),
        ("fd00::1".parse().expect("ip"), a_rules),
    ]);
    n.nodes[B].dev.set_filter(Some(filter));
    n
}

#[test]
fn the_filter_drops_and_counts_what_the_policy_denies() {
    // The case: A may not reach B on TCP/22; ping and TCP/80 pass.
    let ssh_denied = FilterRule {
        action: Action::Deny,
        proto: Proto::Tcp,
        ports: Some(PortRange::new(22, 22).expect("port")),
    };
    let mut n = filtering_pair(Action::Allow, vec![ssh_denied]);
    let ssh = ipv4_proto("10.0.0.1", "10.0.0.2", 6, &tcp_header(40000, 22));
    let http = ipv4_proto("10.0.0.1", "10.0.0.2", 6, &tcp_header(40000, 80));
    let ping = ipv4_proto("10.0.0.1", "10.0.0.2", 1, &[8, 0, 0, 0, 0, 1, 0, 1]);

    n.send(A, &ssh).expect("A sends");
    assert!(n.nodes[B].tun.is_empty(), "{:?}", n.nodes[B].tun);
    let c = n.counters(B);
    assert_eq!(c.dropped_filtered, 1, "{c:?}");
    assert_eq!(c.dropped(), 1);
    assert_eq!(c.rx_data_packets, 0);
    assert_eq!(c.handshakes_completed, 1, "the handshake is not filtered");
    let filter = n.nodes[B].dev.filter().expect("filter set");
    assert_eq!(filter.counters().denied_by_policy, 1);

    n.send(A, &http).expect("A sends");
    n.send(A, &ping).expect("A sends");
    assert_eq!(n.nodes[B].tun, vec![http.clone(), ping]);
    assert_eq!(n.counters(B).rx_data_packets, 2);
    assert_eq!(n.counters(B).dropped_filtered, 1);

    // The error says why, for logs.
    let mut out = Vec::new();
    let datagram = fresh_data_packet(&mut n, A, &ssh);
    let (now, from) = (n.now, n.nodes[A].addr);
    assert_eq!(
        n.nodes[B].dev.handle_udp(now, from, &datagram, &mut out),
        Err(DeviceError::Filtered {
            src: "10.0.0.1".parse().expect("ip"),
            reason: DenyReason::Policy {
                proto: 6,
                port: Some(22)
            },
        })
    );
    assert!(out.is_empty());
    assert_eq!(n.counters(B).dropped_filtered, 2);

    // Without the filter, B is a plain WireGuard interface again.
    n.nodes[B].dev.set_filter(None);
    n.send(A, &ssh).expect("A sends");
    assert_eq!(n.nodes[B].tun.last(), Some(&ssh));
}

#[test]
fn the_filter_lets_in_replies_to_what_the_node_sent() {
    // Default deny, no rule for A: only replies to B's own flows pass.
    let mut n = filtering_pair(Action::Deny, Vec::new());
    let to_b = ipv4_proto("10.0.0.1", "10.0.0.2", 17, &udp_datagram(53, 5353));
    n.send(A, &to_b).expect("A sends");
    assert!(n.nodes[B].tun.is_empty());
    assert_eq!(n.counters(B).dropped_filtered, 1);

    // B asks; A (unfiltered) hears it and answers; B hears the answer.
    let query = ipv4_proto("10.0.0.2", "10.0.0.1", 17, &udp_datagram(5353, 53));
    n.send(B, &query).expect("B sends");
    assert_eq!(n.nodes[A].tun, vec![query]);
    assert_eq!(n.nodes[B].dev.filter().expect("set").flow_count(), 1);
    n.send(A, &to_b).expect("A answers");
    assert_eq!(n.nodes[B].tun, vec![to_b]);
    assert_eq!(n.counters(B).dropped_filtered, 1);

    // A rule change (a new map) keeps the flow.
    n.nodes[B]
        .dev
        .filter_mut()
        .expect("set")
        .set_sources([("10.0.0.1".parse().expect("ip"), Vec::new())]);
    let again = ipv4_proto("10.0.0.1", "10.0.0.2", 17, &udp_datagram(53, 5353));
    n.send(A, &again).expect("A answers");
    assert_eq!(n.nodes[B].tun.len(), 2);
    let other_port = ipv4_proto("10.0.0.1", "10.0.0.2", 17, &udp_datagram(53, 5354));
    n.send(A, &other_port).expect("A sends");
    assert_eq!(n.nodes[B].tun.len(), 2);
    assert_eq!(n.counters(B).dropped_filtered, 2);
}

/// `Counters::named` (what `wgmesh wg stats` prints): every name once, each
/// drop kind under its own name, and `dropped` their sum.
#[test]
fn named_counters_are_unique_and_follow_the_drops() {
    let mut c = Counters::default();
    c.record(&DeviceError::Malformed);
    c.record(&DeviceError::Malformed);
    c.record(&DeviceError::UnknownPeer);
    c.record(&DeviceError::InvalidMac);
    c.cookie_replies_sent = 7;
    let named = c.named();
    let names: HashSet<&str> = named.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), named.len(), "{named:?}");
    let get = |name: &str| {
        named
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .expect("named")
    };
    assert_eq!(get("dropped_malformed"), 2);
    assert_eq!(get("dropped_unknown_peer"), 1);
    assert_eq!(get("dropped_invalid_mac"), 1);
    assert_eq!(get("cookie_replies_sent"), 7);
    assert_eq!(get("dropped"), 4);
    assert_eq!(get("rx_data_packets"), 0);
}

/// The hot path's buffers: a pooled buffer comes back for the next packet
/// (no allocation), with room for the padding; a buffer gotatun allocated
/// alone becomes the output `Vec` without a copy; a pooled one is copied,
/// and its buffer still returns to the pool.
#[test]
fn pooled_buffers_are_reused_and_outputs_taken_without_a_copy() {
    let pool = PacketBufPool::<POOL_BUFFER>::new(1);
    let first = pooled(&pool, &[7u8; 1419]);
    assert_eq!(first.as_ref(), &[7u8; 1419][..]);
    let at = first.as_ref().as_ptr();
    drop(first);
    let mut again = pooled(&pool, b"short");
    assert_eq!(again.as_ref(), b"short");
    assert_eq!(again.as_ref().as_ptr(), at, "the pool's buffer is reused");
    // Padding to 16 (gotatun's pad_to_x16) fits without reallocating.
    again.buf_mut().resize(16, 0);
    assert_eq!(again.as_ref().as_ptr(), at);
    let copied = into_vec(again);
    assert_eq!(copied, b"short\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(
        pooled(&pool, b"x").as_ref().as_ptr(),
        at,
        "back in the pool"
    );

    let own = Packet::copy_from(&[1u8, 2, 3][..]);
    let at = own.as_ref().as_ptr();
    let v = into_vec(own);
    assert_eq!(v, [1, 2, 3]);
    assert_eq!(v.as_ptr(), at, "taken as it is");
}
