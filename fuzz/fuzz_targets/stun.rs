//! Fuzz target: the STUN codec (`wgmesh_proto::stun`) on arbitrary bytes, as
//! anyone on the internet can send them to a node's WireGuard port or to the
//! server's STUN responder. Beyond "never panics" it checks what the socket
//! demux and the responder rely on: `parse_binding_response` accepts only
//! what `is_stun` accepts; a WireGuard-framed message is never STUN; an
//! answer to an RFC 8489 request is itself STUN, echoes the request's
//! transaction id and tells the sender its address or is a 420; an answer
//! to an RFC 3489 request (no cookie) echoes its 16 bytes of id; and the
//! same request is never both answered and taken for a response.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use wgmesh_proto::stun::{
    Packet, ResponseKind, StunError, answer, is_stun, parse_binding_response, respond,
};

fuzz_target!(|data: &[u8]| {
    let stun = is_stun(data);
    if data.len() >= 4 && (1..=4).contains(&data[0]) && data[1..4] == [0, 0, 0] && data.len() != 20
    {
        assert!(!stun, "a WireGuard-framed message was taken for STUN");
    }
    let parsed = parse_binding_response(data);
    if parsed.is_ok() {
        assert!(stun);
    }
    // Alternate between an IPv4 and an IPv6 sender, chosen by the input.
    let from: SocketAddr = if data.first().is_some_and(|b| b & 1 == 0) {
        "192.0.2.1:32853"
            .parse()
            .expect("invariant: a valid literal")
    } else {
        "[2001:db8::1]:51820"
            .parse()
            .expect("invariant: a valid literal")
    };
    if let Some(resp) = respond(data, from) {
        assert!(parsed.is_err(), "a request is not a response");
        assert_eq!(answer(&resp.bytes, from), None);
        assert_eq!(resp.bytes[4..20], data[4..20], "cookie and id echoed");
        if resp.rfc3489 {
            assert!(!stun && !is_stun(&resp.bytes));
            return;
        }
        assert!(stun);
        let request_id = Packet::new_checked(data)
            .expect("invariant: answered with a cookie, so a checked packet")
            .transaction_id();
        match resp.kind {
            ResponseKind::Success => {
                assert_eq!(parse_binding_response(&resp.bytes), Ok((request_id, from)));
            }
            _ => assert_eq!(
                parse_binding_response(&resp.bytes),
                Err(StunError::ErrorResponse { code: Some(420) })
            ),
        }
    }
});
