//! Fuzz target: the bytes a node's WireGuard port takes from anyone that
//! are not WireGuard — disco messages (`wgmesh_proto::disco`: opened by
//! the path manager) and relay frames (`wgmesh_proto::relay`: parsed by
//! the node's relay session and by the relay itself). Never panics; a
//! frame that parses emits back to the same bytes' length; the path
//! manager accepts nothing from a stranger's key, whatever the bytes.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use wgmesh_core::key::PrivateKey;
use wgmesh_proto::disco::path::{PathManager, Via};
use wgmesh_proto::relay::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::parse(data) {
        assert_eq!(frame.buffer_len(), data.len(), "a parsed frame re-emits to its length");
    }
    let _ = wgmesh_proto::disco::wire::Message::parse(data);
    let now = Instant::now();
    let mut pm = PathManager::new(PrivateKey::from_random([1; 32]), [2; 32], now, 1_800_000_000_000);
    let peer = PrivateKey::from_random([3; 32]).public_key();
    pm.upsert_peer(now, peer, &["192.0.2.1:51820".parse().expect("invariant: a valid literal")]);
    let via = if data.first().is_some_and(|b| b & 1 == 0) {
        Via::Relay
    } else {
        Via::Direct("192.0.2.1:51820".parse().expect("invariant: a valid literal"))
    };
    // Random bytes never carry a valid tag for this pair's key.
    assert!(pm.handle_disco(now, via, data).is_err());
});
