//! How many heap bytes a configured peer costs a [`Device`]: the figure
//! behind "RSS under 20 MiB with 1,000 peers" (issue 4). It does what
//! `wg addconf` of the benchmark's 1,000 peers does (a /32 each, no
//! endpoint, no traffic), counting the allocator, then sends one packet to
//! a tenth of them to show what a peer with live session state costs.
//!
//! Run it with `cargo run --release -p wgmesh-proto --example peer_memory`.
//! It prints figures; it asserts nothing (sizes are not a test's business).

use std::alloc::System;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use wgmesh_core::key::PrivateKey;
use wgmesh_proto::Device;
use wgmesh_proto::uapi::{PeerChange, SetCommand};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PEERS: u32 = 1000;

/// Bytes held now, net of everything freed since `region` began.
fn live_bytes(region: &Region<'_, System>) -> i64 {
    let s = region.change();
    let alloc = i64::try_from(s.bytes_allocated).expect("fits");
    let freed = i64::try_from(s.bytes_deallocated).expect("fits");
    let realloc = i64::try_from(s.bytes_reallocated).expect("fits");
    alloc - freed + realloc
}

fn random_key() -> PrivateKey {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("OS randomness");
    PrivateKey::from_random(b)
}

/// The benchmark's 10.(100 + i / 250).(i % 250).1/32.
fn tunnel_addr(i: u32) -> Ipv4Addr {
    let third = u8::try_from(i % 250).expect("< 250");
    let second = u8::try_from(100 + i / 250).expect("small");
    Ipv4Addr::new(10, second, third, 1)
}

fn main() {
    let now = Instant::now();
    // The commands are built before counting starts: in the engine they
    // are the UAPI parser's, freed once applied.
    let own = SetCommand {
        private_key: Some(Some(random_key())),
        listen_port: Some(51820),
        ..SetCommand::default()
    };
    let peers = SetCommand {
        peers: (0..PEERS)
            .map(|i| {
                let mut change = PeerChange::new(random_key().public_key());
                change.allowed_ips = vec![IpNet::V4(
                    Ipv4Net::new(tunnel_addr(i), 32).expect("valid prefix"),
                )];
                change.endpoint = Some(SocketAddr::from(([192, 0, 2, 1], 51820)));
                change
            })
            .collect(),
        ..SetCommand::default()
    };
    let no_endpoint = SetCommand {
        peers: peers
            .peers
            .iter()
            .map(|p| PeerChange {
                endpoint: None,
                ..p.clone()
            })
            .collect(),
        ..SetCommand::default()
    };

    println!(
        "one peer's session state (gotatun's Tunn, inline): {} B",
        size_of::<gotatun::noise::Tunn>()
    );
    let region = Region::new(GLOBAL);
    let mut dev = Device::new();
    dev.apply(now, &own).expect("private key");
    let empty = live_bytes(&region);
    dev.apply(now, &no_endpoint).expect("1,000 peers");
    let configured = live_bytes(&region);
    println!("device with a key and no peers: {empty} B");
    println!(
        "{PEERS} peers configured, no traffic: {} B in all, {} B per peer",
        configured - empty,
        (configured - empty) / i64::from(PEERS)
    );

    // A packet to every tenth peer: each of those starts a handshake (and
    // queues the packet), which needs its session state.
    dev.apply(now, &peers).expect("endpoints");
    let with_endpoints = live_bytes(&region);
    let mut out = Vec::new();
    let active = PEERS / 10;
    for i in (0..PEERS).step_by(10) {
        let packet = ipv4_packet(tunnel_addr(i));
        dev.handle_tun(now, &packet, &mut out)
            .expect("routed to a peer with an endpoint");
    }
    drop(out);
    let after = live_bytes(&region);
    println!(
        "{active} of them handshaking (one packet each): {} B more, {} B per active peer",
        after - with_endpoints,
        (after - with_endpoints) / i64::from(active)
    );
}

/// A 28-byte UDP-in-IPv4 packet to `dst` (checksums are not checked).
fn ipv4_packet(dst: Ipv4Addr) -> Vec<u8> {
    let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0];
    p.extend(Ipv4Addr::new(10, 99, 0, 1).octets());
    p.extend(dst.octets());
    p.extend([0u8; 8]);
    p
}
