//! Checks on request values beyond their JSON form, shared by the
//! service's changes: what an overlay may cover, and what a relay's
//! WebSocket URL may be (the same rule as its documented pattern,
//! [`wgmesh_core::schema::WS_URL`]).

use ipnet::IpNet;

/// Ranges no node address may come from: an overlay that overlaps one
/// would hand out addresses the kernel treats specially (RFC 6890's
/// special-purpose registries: "this network" §2.2.2, loopback, multicast
/// RFC 5771, reserved and broadcast RFC 1112 §4; IPv6 unspecified,
/// loopback and multicast RFC 4291 §2.7). 0.0.0.0/0 and ::/0 overlap all.
const SPECIAL: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\""),
    ("127.0.0.0/8", "loopback"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved and broadcast"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("ff00::/8", "multicast"),
];

/// Do two prefixes share an address? (Prefixes nest or are disjoint.)
pub fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// Why `overlay` cannot be a network's overlay, if it cannot.
pub fn overlay_refusal(overlay: &IpNet) -> Option<String> {
    SPECIAL.iter().find_map(|(range, what)| {
        let range: IpNet = range
            .parse()
            .expect("invariant: the special ranges above are valid prefixes");
        overlap(overlay, &range)
            .then(|| format!("overlay {overlay} overlaps {range} ({what}), which nodes cannot use"))
    })
}

/// `ws://` or `wss://`, then 1 or more printable ASCII characters (no
/// spaces), at most 2048 in all.
pub fn ws_url_ok(url: &str) -> bool {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"));
    url.len() <= wgmesh_core::schema::WS_URL_MAX
        && rest.is_some_and(|r| !r.is_empty() && r.bytes().all(|b| (0x21..=0x7e).contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_that_cover_special_ranges_are_refused() {
        for bad in [
            "0.0.0.0/0",
            "0.0.0.0/8",
            "0.1.0.0/16",
            "127.0.0.0/24",
            "224.0.0.0/3",
            "255.255.255.0/24",
            "::/0",
            "::/127",
            "ff02::/16",
        ] {
            assert!(overlay_refusal(&bad.parse().unwrap()).is_some(), "{bad}");
        }
        for good in [
            "100.64.0.0/10",
            "10.0.0.0/8",
            "192.168.1.0/24",
            "fd00::/64",
            "2001:db8::/32",
        ] {
            assert_eq!(overlay_refusal(&good.parse().unwrap()), None, "{good}");
        }
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(overlap(&n("10.0.0.0/8"), &n("10.1.0.0/16")));
        assert!(overlap(&n("10.1.0.0/16"), &n("10.0.0.0/8")));
        assert!(!overlap(&n("10.0.0.0/24"), &n("10.0.1.0/24")));
        assert!(!overlap(&n("10.0.0.0/8"), &n("fd00::/8")));
    }

    #[test]
    fn websocket_urls_as_documented() {
        for ok in [
            "wss://relay.example/relay",
            "ws://192.0.2.1:8080/r",
            "ws://x",
        ] {
            assert!(ws_url_ok(ok), "{ok}");
        }
        let long = format!("wss://{}", "a".repeat(2043));
        for bad in [
            "ws://",
            "https://x/relay",
            "wss://a b",
            "wss://é",
            "wss://x\t",
            &long,
        ] {
            assert!(!ws_url_ok(bad), "{bad}");
        }
        assert!(ws_url_ok(&long[..2048]));
    }
}
