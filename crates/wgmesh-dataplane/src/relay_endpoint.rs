//! Relay endpoints: the addresses WireGuard is given for a peer whose
//! traffic goes through a relay.
//!
//! WireGuard sends each peer's datagrams to the peer's endpoint. For a
//! relayed peer the agent sets the endpoint to an address in 240.0.0.0/4
//! (IPv4's reserved class E, RFC 1112 §4: never a real host); the engine
//! hands datagrams for such an address to [`crate::InterfaceConfig::on_divert`]
//! instead of the socket, and the agent wraps them for the relay. Datagrams
//! the relay brings from that peer are injected with the same address as
//! their source ([`crate::Interface::inject`]), so WireGuard's roaming
//! keeps the endpoint where it is. `wg show` displays it, which tells an
//! operator the peer is relayed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The port every relay endpoint carries (any fixed one would do).
pub const RELAY_ENDPOINT_PORT: u16 = 1;

/// How many distinct relay endpoints there are (the 28 bits of 240/4).
pub const RELAY_ENDPOINTS: u32 = 1 << 28;

/// The relay endpoint number `index` (< [`RELAY_ENDPOINTS`]; wraps).
pub fn relay_endpoint(index: u32) -> SocketAddr {
    let ip = Ipv4Addr::from(0xF000_0000 | (index & (RELAY_ENDPOINTS - 1)));
    SocketAddr::new(IpAddr::V4(ip), RELAY_ENDPOINT_PORT)
}

/// Is `addr` a relay endpoint (also as an IPv4-mapped IPv6 address)?
pub fn is_relay_endpoint(addr: SocketAddr) -> bool {
    let v4 = match addr.ip() {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return false,
        },
    };
    v4.octets()[0] & 0xF0 == 0xF0 && v4 != Ipv4Addr::BROADCAST
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_endpoints_are_class_e_and_recognised() {
        assert_eq!(relay_endpoint(0).to_string(), "240.0.0.0:1");
        assert_eq!(relay_endpoint(258).to_string(), "240.0.1.2:1");
        assert_eq!(relay_endpoint(RELAY_ENDPOINTS + 5), relay_endpoint(5));
        for i in [0, 1, 77, RELAY_ENDPOINTS - 2] {
            assert!(is_relay_endpoint(relay_endpoint(i)));
        }
        let mapped: SocketAddr = "[::ffff:240.0.0.9]:1".parse().unwrap();
        assert!(is_relay_endpoint(mapped));
        for real in [
            "192.0.2.1:51820",
            "239.255.255.255:1",
            "255.255.255.255:1",
            "[2001:db8::1]:1",
        ] {
            assert!(!is_relay_endpoint(real.parse().unwrap()), "{real}");
        }
    }
}
