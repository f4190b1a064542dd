//! Shared setup for the `packet_path` fuzz target and its seed generator:
//! fixed keys (so recorded seeds stay valid across runs), the device under
//! test ("B") with two peers, an honest peer device ("A") that can complete
//! real handshakes with it, and the input framing.

use std::net::SocketAddr;
use std::time::Instant;

use wgmesh_core::key::{PresharedKey, PrivateKey};
use wgmesh_proto::Device;
use wgmesh_proto::uapi::{PeerChange, SetCommand};

/// Device under test.
pub const B_ADDR: &str = "192.0.2.2:51820";
/// The honest peer, which shares a preshared key with B.
pub const A_ADDR: &str = "192.0.2.1:51820";
/// A second configured peer (no PSK, IPv6 endpoint) whose key nobody in
/// the harness holds: B must never deliver anything "from" it.
pub const C_ADDR: &str = "[2001:db8::3]:51820";
/// Not a configured endpoint.
pub const STRANGER_ADDR: &str = "198.51.100.7:4242";

/// Input framing: `[op][len: u16 LE][len bytes]`, repeated; a short final
/// chunk is taken as it is.
pub const OPS: u8 = 8;
pub const OP_UDP_FROM_A: u8 = 0;
pub const OP_UDP_FROM_STRANGER: u8 = 1;
pub const OP_B_TUN: u8 = 2;
pub const OP_A_TUN_RAW: u8 = 3;
pub const OP_A_TUN_WRAPPED: u8 = 4;
pub const OP_DELIVER: u8 = 5;
pub const OP_MUTATE_LAST: u8 = 6;
pub const OP_REPLAY_LAST_AND_TIMERS: u8 = 7;

fn key(fill: u8) -> PrivateKey {
    // from_random clamps, as `wg genkey` does.
    PrivateKey::from_random([fill; 32])
}

pub fn sock(s: &str) -> SocketAddr {
    s.parse().expect("invariant: constant socket address")
}

fn psk() -> PresharedKey {
    PresharedKey::from_random([0x5a; 32])
}

fn peer(
    key: &PrivateKey,
    endpoint: &str,
    psk: Option<PresharedKey>,
    allowed: &[&str],
) -> PeerChange {
    let mut p = PeerChange::new(key.public_key());
    p.endpoint = Some(sock(endpoint));
    p.preshared_key = psk.map(Some);
    p.allowed_ips = allowed
        .iter()
        .map(|s| s.parse().expect("invariant: constant prefix"))
        .collect();
    p
}

fn device(now: Instant, own: &PrivateKey, port: u16, peers: Vec<PeerChange>) -> Device {
    let mut dev = Device::new();
    dev.apply(
        now,
        &SetCommand {
            private_key: Some(Some(own.clone())),
            listen_port: Some(port),
            peers,
            ..SetCommand::default()
        },
    )
    .expect("invariant: valid fixed configuration");
    dev
}

/// B: peers A (10.0.0.1, fd00::1, PSK) and C (10.0.0.3, fd00::3, no PSK).
pub fn device_b(now: Instant) -> Device {
    device(
        now,
        &key(0xb0),
        51820,
        vec![
            peer(
                &key(0xa0),
                A_ADDR,
                Some(psk()),
                &["10.0.0.1/32", "fd00::1/128"],
            ),
            peer(&key(0xc0), C_ADDR, None, &["10.0.0.3/32", "fd00::3/128"]),
        ],
    )
}

/// A: routes everything to B, so the fuzzer chooses the inner source
/// addresses B must check.
pub fn device_a(now: Instant) -> Device {
    device(
        now,
        &key(0xa0),
        51820,
        vec![peer(
            &key(0xb0),
            B_ADDR,
            Some(psk()),
            &["0.0.0.0/0", "::/0"],
        )],
    )
}

/// Splits the input into (op, chunk) frames.
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&op, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [lo, hi, rest @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (chunk, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        Some((op % OPS, chunk))
    })
}

/// Appends one frame in the format [`frames`] reads.
pub fn push_frame(input: &mut Vec<u8>, op: u8, chunk: &[u8]) {
    input.push(op);
    let len = u16::try_from(chunk.len()).expect("invariant: chunk fits a frame");
    input.extend(len.to_le_bytes());
    input.extend(chunk);
}

/// An IPv4 (or, if `v6`, IPv6) UDP-protocol packet from A's overlay
/// address to B's, carrying `payload`. The checksum is left zero: the
/// device does not check it (the receiving kernel does).
pub fn wrap(v6: bool, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(1200)];
    let len = u16::try_from(payload.len()).expect("invariant: capped above");
    let mut p;
    if v6 {
        p = vec![0x60, 0, 0, 0];
        p.extend(len.to_be_bytes());
        p.extend([17, 64]);
        p.extend(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
        p.extend(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
    } else {
        p = vec![0x45, 0];
        p.extend((len + 20).to_be_bytes());
        p.extend([0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend([10, 0, 0, 1, 10, 0, 0, 2]);
    }
    p.extend(payload);
    p
}
