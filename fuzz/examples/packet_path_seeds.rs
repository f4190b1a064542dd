//! Writes the `packet_path` seed inputs to `seeds/packet_path/`: a real
//! handshake initiation from A recorded as raw bytes, and op sequences that
//! drive A and B through a complete handshake and data in both directions.
//! Run from `fuzz/`: `cargo run --example packet_path_seeds`.

use std::time::Instant;

use wgmesh_fuzz::*;
use wgmesh_proto::Output;

fn main() {
    let dir = std::path::Path::new("seeds/packet_path");
    std::fs::create_dir_all(dir).expect("create seeds/packet_path");
    let write = |name: &str, input: &[u8]| {
        std::fs::write(dir.join(name), input).expect("write seed");
    };

    // A real initiation, as bytes: what A sends when it first has a packet
    // for B.
    let now = Instant::now();
    let mut a = device_a(now);
    let mut out = Vec::new();
    a.handle_tun(now, &wrap(false, b"hello"), &mut out)
        .expect("A queues the packet and initiates");
    let init = out
        .iter()
        .find_map(|o| match o {
            Output::Network { bytes, .. } if bytes.first() == Some(&1) => Some(bytes.clone()),
            _ => None,
        })
        .expect("A sent an initiation");
    let mut input = Vec::new();
    push_frame(&mut input, OP_UDP_FROM_A, &init);
    write("recorded_initiation", &input);

    // A initiates over IPv4; handshake, data, then tampering and replay.
    let mut input = Vec::new();
    push_frame(&mut input, OP_A_TUN_WRAPPED, b"\x00 first packet, IPv4");
    push_frame(&mut input, OP_DELIVER, &[]);
    push_frame(&mut input, OP_DELIVER, &[]);
    push_frame(&mut input, OP_A_TUN_WRAPPED, b"\x01 second packet, IPv6");
    push_frame(&mut input, OP_DELIVER, &[]);
    push_frame(&mut input, OP_REPLAY_LAST_AND_TIMERS, &[]);
    push_frame(&mut input, OP_MUTATE_LAST, &[40, 0xff]);
    write("a_initiates_data_replay_tamper", &input);

    // A sends an inner packet whose source B does not allow for A.
    let mut spoofed = wrap(false, b"spoofed");
    spoofed[12..16].copy_from_slice(&[10, 0, 0, 3]);
    let mut input = Vec::new();
    push_frame(&mut input, OP_A_TUN_RAW, &spoofed);
    push_frame(&mut input, OP_DELIVER, &[]);
    push_frame(&mut input, OP_DELIVER, &[]);
    write("a_spoofs_source", &input);

    // B initiates (a TUN packet to A's address), then A answers.
    let mut to_a = wrap(false, b"to A");
    to_a[12..20].copy_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
    let mut input = Vec::new();
    push_frame(&mut input, OP_B_TUN, &to_a);
    push_frame(&mut input, OP_DELIVER, &[]);
    push_frame(&mut input, OP_B_TUN, &to_a);
    push_frame(&mut input, OP_DELIVER, &[]);
    write("b_initiates", &input);

    // Garbage of each message type's length, from a stranger.
    let mut input = Vec::new();
    for (ty, len) in [(1u8, 148usize), (2, 92), (3, 64), (4, 32)] {
        let mut d = vec![0u8; len];
        d[0] = ty;
        push_frame(&mut input, OP_UDP_FROM_STRANGER, &d);
    }
    write("typed_garbage", &input);
    println!("wrote seeds to {}", dir.display());
}
