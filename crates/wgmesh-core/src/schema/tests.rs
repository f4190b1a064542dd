//! Each pattern against its parser, both ways: every value's text form
//! matches (what serde emits), every string the pattern generates parses
//! (what the document promises is accepted), and every edit of a valid
//! string that still parses still matches (nothing is accepted that the
//! document says is refused).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;
use std::sync::Mutex;

use ipnet::IpNet;
use proptest::prelude::*;
use regex::Regex;

use super::*;
use crate::key::PublicKey;
use crate::netmap::policy::{PortRange, Selector};

/// Compiled once per pattern: thousands of cases match against each.
fn re(pattern: &'static str) -> &'static Regex {
    static CACHE: Mutex<Vec<(&str, &Regex)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = cache.iter().find(|(p, _)| *p == pattern) {
        return r;
    }
    let r: &'static Regex = Box::leak(Box::new(
        Regex::new(pattern).expect("invariant: the schema patterns compile"),
    ));
    cache.push((pattern, r));
    r
}

/// The pattern without its anchors, for proptest's generator (which has
/// none; it generates whole strings anyway).
fn generator(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    let inner = &pattern[1..pattern.len() - 1];
    proptest::string::string_regex(inner).expect("invariant: the patterns are generator-safe")
}

fn ip_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        // Sparse IPv6 addresses, so that `::` compression and the mapped
        // IPv4 form appear often.
        (any::<u16>(), any::<u16>(), 0usize..8).prop_map(|(a, b, at)| {
            let mut g = [0u16; 8];
            g[at] = a;
            g[7] = b;
            IpAddr::V6(Ipv6Addr::from(g))
        }),
        any::<[u8; 4]>().prop_map(|b| IpAddr::V6(Ipv4Addr::from(b).to_ipv6_mapped())),
    ]
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(b, p)| SocketAddr::V4(SocketAddrV4::new(b.into(), p))),
        (
            ip_addr(),
            any::<u16>(),
            prop_oneof![Just(0u32), any::<u32>()]
        )
            .prop_map(|(ip, p, scope)| match ip {
                IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, p, 0, scope)),
                IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, p)),
            }),
    ]
}

fn ip_net() -> impl Strategy<Value = IpNet> {
    (ip_addr(), any::<u8>()).prop_map(|(ip, len)| {
        let max = if ip.is_ipv4() { 33 } else { 129 };
        IpNet::new(ip, len % max).expect("invariant: the length is in range")
    })
}

/// Single-character edits of a valid string: kept when std still parses
/// the result, which must then match the pattern too.
fn edits(valid: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    let alphabet: Vec<char> = "0123456789abcdefABCDEF:.%[]/-+ *=_gnodeup\u{2003}"
        .chars()
        .collect();
    (
        valid,
        any::<prop::sample::Index>(),
        prop::sample::select(alphabet),
        0u8..3,
    )
        .prop_map(|(s, at, c, kind)| {
            let mut chars: Vec<char> = s.chars().collect();
            let i = at.index(chars.len() + 1);
            match kind {
                0 => chars.insert(i, c),
                1 if i < chars.len() => {
                    chars.remove(i);
                }
                _ if i < chars.len() => chars[i] = c,
                _ => chars.push(c),
            }
            chars.into_iter().collect()
        })
}

fn accepted_matches<T: FromStr>(text: &str, pattern: &'static str) -> Result<(), TestCaseError> {
    if text.parse::<T>().is_ok() {
        prop_assert!(
            re(pattern).is_match(text),
            "accepted but off-pattern: {text:?}"
        );
    }
    Ok(())
}

fn serde_json_accepts<T: serde::de::DeserializeOwned>(text: &str) -> bool {
    serde_json::from_value::<T>(serde_json::Value::from(text)).is_ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn emitted_text_matches(ip in ip_addr(), sa in socket_addr(), net in ip_net(),
                            key in any::<[u8; 32]>(), a in 1u16.., b in 1u16..) {
        prop_assert!(re(IP_ADDR).is_match(&ip.to_string()), "{ip}");
        prop_assert!(re(SOCKET_ADDR).is_match(&sa.to_string()), "{sa}");
        prop_assert!(re(IP_NET).is_match(&net.to_string()), "{net}");
        prop_assert_eq!(parse_ip_net(&net.to_string()), Some(net));
        let key = PublicKey::from_bytes(key).to_string();
        prop_assert!(re(PUBLIC_KEY).is_match(&key), "{key}");
        let range = PortRange::new(a.min(b), a.max(b)).expect("invariant: ordered");
        prop_assert!(re(PORT_RANGE).is_match(&range.to_string()), "{range}");
    }

    #[test]
    fn generated_text_is_accepted(ip in generator(IP_ADDR), sa in generator(SOCKET_ADDR),
                                  net in generator(IP_NET), key in generator(PUBLIC_KEY),
                                  sel in generator(SELECTOR)) {
        prop_assert!(serde_json_accepts::<IpAddr>(&ip), "{ip:?}");
        prop_assert!(serde_json_accepts::<SocketAddr>(&sa), "{sa:?}");
        prop_assert!(parse_ip_net(&net).is_some(), "{net:?}");
        prop_assert!(serde_json_accepts::<PublicKey>(&key), "{key:?}");
        prop_assert!(serde_json_accepts::<Selector>(&sel), "{sel:?}");
    }

    #[test]
    fn generated_ports_are_accepted_in_order(a in generator(PORT_RANGE)) {
        // The one thing the pattern cannot say: FIRST <= LAST.
        let ordered = match a.split_once('-') {
            Some((x, y)) => x.parse::<u16>().ok() <= y.parse::<u16>().ok(),
            None => true,
        };
        prop_assert_eq!(serde_json_accepts::<PortRange>(&a), ordered, "{:?}", a);
    }

    #[test]
    fn nothing_off_pattern_is_accepted(
        ip in edits(ip_addr().prop_map(|x| x.to_string())),
        sa in edits(socket_addr().prop_map(|x| x.to_string())),
        net in edits(ip_net().prop_map(|x| x.to_string())),
        key in edits(any::<[u8; 32]>().prop_map(|k| PublicKey::from_bytes(k).to_string())),
        ports in edits((1u16.., 1u16..).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b)))),
        sel in edits(generator(SELECTOR)),
    ) {
        accepted_matches::<IpAddr>(&ip, IP_ADDR)?;
        accepted_matches::<SocketAddr>(&sa, SOCKET_ADDR)?;
        if parse_ip_net(&net).is_some() {
            prop_assert!(re(IP_NET).is_match(&net), "accepted but off-pattern: {net:?}");
        }
        accepted_matches::<PublicKey>(&key, PUBLIC_KEY)?;
        accepted_matches::<PortRange>(&ports, PORT_RANGE)?;
        accepted_matches::<Selector>(&sel, SELECTOR)?;
    }
}

#[test]
fn edge_forms_agree_with_std() {
    // (text, std parses it) for the forms a regex gets wrong most often.
    for (text, ok) in [
        ("::", true),
        ("::1", true),
        ("1::", true),
        ("1:2:3:4:5:6:7::", true),
        ("::2:3:4:5:6:7:8", true),
        ("1:2:3:4:5:6:7:8", true),
        ("1:2:3:4:5:6:7:8::", false),
        ("::ffff:192.0.2.1", true),
        ("1:2:3:4:5:6:192.0.2.1", true),
        ("1:2:3:4:5:6:7:192.0.2.1", false),
        ("1::2::3", false),
        ("00001::", false),
        ("192.0.2.01", false),
        ("192.0.2.256", false),
        ("192.0.2", false),
    ] {
        assert_eq!(text.parse::<IpAddr>().is_ok(), ok, "std on {text}");
        assert_eq!(re(IP_ADDR).is_match(text), ok, "pattern on {text}");
    }
    for (text, ok) in [
        ("192.0.2.1:51820", true),
        ("192.0.2.1:0", true),
        ("192.0.2.1:65535", true),
        ("192.0.2.1:65536", false),
        ("192.0.2.1:051820", true),
        ("[fe80::1%4294967295]:1", true),
        ("[fe80::1%4294967296]:1", false),
        ("[::1]:443", true),
        ("::1:443", false),
    ] {
        assert_eq!(text.parse::<SocketAddr>().is_ok(), ok, "std on {text}");
        assert_eq!(re(SOCKET_ADDR).is_match(text), ok, "pattern on {text}");
    }
    for (text, ok) in [
        ("100.64.0.0/24", true),
        ("0.0.0.0/0", true),
        ("10.0.0.0/33", false),
        ("fd00::/64", true),
        ("fd00::/129", false),
        ("10.0.0.0", false),
        // ipnet's own parser takes these; the API does not.
        ("010.0.0.0/8", false),
        ("10.0.0.0/08", false),
        ("1:2:3:4:5:6::7:8/64", false),
    ] {
        assert_eq!(parse_ip_net(text).is_some(), ok, "parse_ip_net on {text}");
        assert_eq!(re(IP_NET).is_match(text), ok, "pattern on {text}");
    }
    for (text, ok) in [
        ("22", true),
        ("8000-8099", true),
        ("65535", true),
        ("0", false),
        ("022", false),
        ("+22", false),
        (" 22", false),
        ("22 - 80", false),
        ("65536", false),
    ] {
        assert_eq!(text.parse::<PortRange>().is_ok(), ok, "parser on {text:?}");
        assert_eq!(re(PORT_RANGE).is_match(text), ok, "pattern on {text:?}");
    }
}
