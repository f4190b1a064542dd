//! Fuzz target: the device's packet path (`Device::handle_udp` and
//! `Device::handle_tun`) on attacker-chosen bytes, interleaved with real
//! traffic from an honest peer so the fuzzer gets past the handshake to
//! transport data, replays and corrupted-but-well-framed messages (see
//! `wgmesh_fuzz` for the input framing and the ops).
//!
//! Beyond "never panics" it checks what the shell and metrics rely on:
//! every counter is a running total (never decreases); a call that returned
//! an error counted exactly one drop and a call that succeeded none; B only
//! sends well-framed WireGuard messages; and B only writes to its TUN
//! packets whose source is an allowed IP of a configured peer (cryptokey
//! routing, inbound, WireGuard paper §2).
#![no_main]

use std::net::IpAddr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use wgmesh_fuzz::*;
use wgmesh_proto::{Counters, Device, DeviceError, Output};

fn totals(c: &Counters) -> [u64; 22] {
    [
        c.rx_data_packets,
        c.rx_keepalives,
        c.tx_data_packets,
        c.tx_keepalives,
        c.handshake_initiations_sent,
        c.handshake_responses_sent,
        c.handshakes_completed,
        c.cookie_replies_sent,
        c.cookie_replies_received,
        c.dropped_invalid_ip_packet,
        c.dropped_no_route,
        c.dropped_no_endpoint,
        c.dropped_no_private_key,
        c.dropped_malformed,
        c.dropped_invalid_mac,
        c.dropped_unknown_peer,
        c.dropped_unknown_index,
        c.dropped_unauthenticated,
        c.dropped_replay,
        c.dropped_source_not_allowed,
        c.dropped_invalid_inner_packet,
        c.refused_sets,
    ]
}

fn source(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => {
            let o: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            Some(IpAddr::from(o))
        }
        6 => {
            let o: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            Some(IpAddr::from(o))
        }
        _ => None,
    }
}

/// Runs one call on B and checks the invariants around it; returns B's
/// datagrams for A.
fn on_b(
    b: &mut Device,
    call: impl FnOnce(&mut Device, &mut Vec<Output>) -> Result<(), DeviceError>,
) -> Vec<Vec<u8>> {
    let before = b.counters().clone();
    let mut out = Vec::new();
    let result = call(b, &mut out);
    let after = b.counters();
    for (was, is) in totals(&before).iter().zip(totals(after)) {
        assert!(
            is >= *was,
            "a counter went backwards: {before:?} -> {after:?}"
        );
    }
    let drops = after.dropped() - before.dropped();
    match &result {
        Err(e) => assert_eq!(drops, 1, "{e} counted {drops} drops"),
        Ok(()) => assert_eq!(drops, 0, "success counted {drops} drops"),
    }
    let allowed = [
        "10.0.0.1", "fd00::1", // A
        "10.0.0.3", "fd00::3", // C
    ];
    let mut to_a = Vec::new();
    for o in out {
        match o {
            Output::Tunnel(p) => {
                let src = source(&p).expect("B wrote a non-IP packet to its TUN");
                assert!(
                    allowed
                        .iter()
                        .any(|a| a.parse::<IpAddr>().ok() == Some(src)),
                    "B delivered a packet from {src}, not an allowed IP"
                );
            }
            Output::Network { to, bytes } => {
                let ok = match (bytes.get(..4), bytes.len()) {
                    (Some([1, 0, 0, 0]), 148)
                    | (Some([2, 0, 0, 0]), 92)
                    | (Some([3, 0, 0, 0]), 64) => true,
                    (Some([4, 0, 0, 0]), len) => len >= 32,
                    _ => false,
                };
                assert!(ok, "B sent a malformed message to {to}: {bytes:02x?}");
                if to == sock(A_ADDR) {
                    to_a.push(bytes);
                }
            }
        }
    }
    to_a
}

/// A is honest: its errors are expected (e.g. B's replies to garbage) and
/// only its datagrams to B matter.
fn on_a(a: &mut Device, now: Instant, from_b: &[Vec<u8>], to_b: &mut Vec<Vec<u8>>) {
    let mut out = Vec::new();
    for d in from_b {
        let _ = a.handle_udp(now, sock(B_ADDR), d, &mut out);
    }
    collect(out, to_b);
}

fn collect(out: Vec<Output>, to_b: &mut Vec<Vec<u8>>) {
    for o in out {
        if let Output::Network { to, bytes } = o
            && to == sock(B_ADDR)
        {
            to_b.push(bytes);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut b = device_b(now);
    let mut a = device_a(now);
    // A's datagrams not yet delivered to B, and the last one delivered.
    let mut to_b: Vec<Vec<u8>> = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    let from_a = sock(A_ADDR);

    for (op, chunk) in frames(data) {
        match op {
            OP_UDP_FROM_A => {
                on_b(&mut b, |b, out| b.handle_udp(now, from_a, chunk, out));
            }
            OP_UDP_FROM_STRANGER => {
                let from = if chunk.first().is_some_and(|x| x & 1 == 1) {
                    sock(C_ADDR)
                } else {
                    sock(STRANGER_ADDR)
                };
                on_b(&mut b, |b, out| b.handle_udp(now, from, chunk, out));
            }
            OP_B_TUN => {
                let replies = on_b(&mut b, |b, out| b.handle_tun(now, chunk, out));
                on_a(&mut a, now, &replies, &mut to_b);
            }
            OP_A_TUN_RAW | OP_A_TUN_WRAPPED => {
                let packet = if op == OP_A_TUN_RAW {
                    chunk.to_vec()
                } else {
                    wrap(chunk.first().is_some_and(|x| x & 1 == 1), chunk)
                };
                let mut out = Vec::new();
                let _ = a.handle_tun(now, &packet, &mut out);
                collect(out, &mut to_b);
            }
            OP_DELIVER => {
                // One round trip: everything A queued goes to B, B's
                // answers go to A, and A's answers wait for the next round.
                for d in std::mem::take(&mut to_b) {
                    let replies = on_b(&mut b, |b, out| b.handle_udp(now, from_a, &d, out));
                    on_a(&mut a, now, &replies, &mut to_b);
                    last = Some(d);
                }
            }
            OP_MUTATE_LAST => {
                // A real message with some bytes flipped: well framed, so
                // it gets past the length checks to the cryptography.
                let Some(mut d) = last.clone() else { continue };
                let at = chunk.first().map_or(0, |x| usize::from(*x));
                for (i, x) in chunk.iter().skip(1).enumerate() {
                    let n = d.len();
                    d[(at + i) % n] ^= x;
                }
                let replies = on_b(&mut b, |b, out| b.handle_udp(now, from_a, &d, out));
                on_a(&mut a, now, &replies, &mut to_b);
            }
            OP_REPLAY_LAST_AND_TIMERS => {
                if let Some(d) = &last {
                    on_b(&mut b, |b, out| b.handle_udp(now, from_a, d, out));
                }
                let replies = on_b(&mut b, |b, out| {
                    b.handle_timers(now, out);
                    Ok(())
                });
                on_a(&mut a, now, &replies, &mut to_b);
                let mut out = Vec::new();
                a.handle_timers(now, &mut out);
                collect(out, &mut to_b);
            }
            _ => unreachable!("frames() reduces op modulo OPS"),
        }
    }
});
