use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::key::{PresharedKey, PrivateKey, PublicKey};

const K1: &str = "sHp/p7VT4tGYRUb2BjD7RjdXX6zhlV0pbHZKo4RuPFU=";
/// K1's public key, as `wg pubkey` prints it.
const P1: &str = "DArYwUz2QsVHmWjxy6ijBcgNu26sOyRACZt1vkYmIAs=";
const P2: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
const P3: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

fn errors(text: &str) -> Vec<(usize, LineErrorKind)> {
    parse(text)
        .expect_err("the text is bad")
        .errors
        .into_iter()
        .map(|e| (e.line, e.kind))
        .collect()
}

#[test]
fn parses_every_key() {
    let text = format!(
        "# a comment that is not a peer name\n\
         [Interface]\n\
         PrivateKey = {K1}\n\
         ListenPort = 51820\n\
         FwMark = 0x10\n\
         Address = 10.10.0.1/24, fd00::1/64\n\
         Address = 10.20.0.1\n\
         DNS = 10.10.0.53, corp.example\n\
         MTU = 1420\n\
         Table = off\n\
         PreUp = echo pre-up\n\
         PostUp = iptables -A FORWARD -i %i -j ACCEPT\n\
         PostUp = echo second\n\
         PreDown = echo pre-down\n\
         PostDown = echo post-down # trailing comment, cut as wg-quick does\n\
         SaveConfig = false\n\
         \n\
         # lax\n\
         [Peer]\n\
         PublicKey = {P2}\n\
         PresharedKey = {K1}\n\
         AllowedIPs = 10.10.0.2/32\n\
         AllowedIPs = fd00::2/128,10.30.0.0/16\n\
         Endpoint = [2001:db8::1]:51820\n\
         PersistentKeepalive = 25\n\
         \n\
         [peer]\n\
         publickey={P3}\n\
         endpoint = nyc.example.net:51820\n\
         persistentkeepalive = off\n"
    );
    let c = parse(&text).expect("valid file");
    let i = &c.interface;
    assert_eq!(i.private_key, Some(K1.parse().expect("key")));
    assert_eq!(i.listen_port, Some(51820));
    assert_eq!(i.fwmark, Some(16));
    assert_eq!(
        i.addresses,
        vec![
            "10.10.0.1/24".parse::<IpNet>().expect("net"),
            "fd00::1/64".parse().expect("net"),
            "10.20.0.1/32".parse().expect("net"),
        ]
    );
    assert_eq!(
        i.dns,
        vec![
            Dns::Server(IpAddr::V4(Ipv4Addr::new(10, 10, 0, 53))),
            Dns::Search("corp.example".into())
        ]
    );
    assert_eq!(i.mtu, Some(1420));
    assert_eq!(i.table, Some(Table::Off));
    assert_eq!(i.pre_up, ["echo pre-up"]);
    assert_eq!(
        i.post_up,
        ["iptables -A FORWARD -i %i -j ACCEPT", "echo second"]
    );
    assert_eq!(i.post_down, ["echo post-down"]);
    assert_eq!(i.save_config, Some(false));

    assert_eq!(c.peers.len(), 2);
    let lax = &c.peers[0];
    assert_eq!(lax.name.as_deref(), Some("lax"));
    assert_eq!(lax.public_key, P2.parse().expect("key"));
    assert!(lax.preshared_key.is_some());
    assert_eq!(lax.allowed_ips.len(), 3);
    assert_eq!(
        lax.endpoint,
        Some(Endpoint::Addr(SocketAddr::new(
            "2001:db8::1".parse::<Ipv6Addr>().expect("ip").into(),
            51820
        )))
    );
    assert_eq!(lax.persistent_keepalive, Some(25));
    let other = &c.peers[1];
    assert_eq!(other.name, None, "a blank line separates the comment");
    assert_eq!(
        other.endpoint,
        Some(Endpoint::Host {
            host: "nyc.example.net".into(),
            port: 51820
        })
    );
    assert_eq!(other.persistent_keepalive, Some(0));
}

#[test]
fn scalar_repeats_take_the_last_value() {
    let c = parse("[Interface]\nListenPort = 1\nListenPort = 2\nMTU = 1400\nMTU = 1280\n")
        .expect("valid");
    assert_eq!(c.interface.listen_port, Some(2));
    assert_eq!(c.interface.mtu, Some(1280));
}

#[test]
fn errors_carry_line_and_reason() {
    let text = format!(
        "[Interface]\n\
         PrivateKey = {K1}x\n\
         Bogus = 1\n\
         Address = 10.0.0.300/24\n\
         [Peer]\n\
         PublicKey = {P2}\n\
         AllowedIPs = 10.0.0.0/24\n\
         [Peer]\n\
         PublicKey = {P2}\n\
         AllowedIPs = 10.0.0.7/32\n\
         Endpoint = nohost\n\
         [Peer]\n\
         AllowedIPs = 10.9.0.0/16\n\
         [Wat]\n"
    );
    let errs = errors(&text);
    let lines: Vec<usize> = errs.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [2, 3, 4, 9, 10, 11, 12, 14], "{errs:#?}");
    assert!(matches!(
        errs[0].1,
        LineErrorKind::BadKey {
            key: "PrivateKey",
            reason: crate::key::KeyError::TrailingData
        }
    ));
    assert!(matches!(&errs[1].1, LineErrorKind::UnknownKey { key, .. } if key == "Bogus"));
    assert!(matches!(&errs[2].1, LineErrorKind::BadCidr { value, .. } if value == "10.0.0.300/24"));
    assert!(matches!(
        errs[3].1,
        LineErrorKind::DuplicatePublicKey { first_line: 6, .. }
    ));
    assert!(matches!(
        errs[4].1,
        LineErrorKind::OverlappingAllowedIps { other_line: 7, .. }
    ));
    assert!(matches!(errs[5].1, LineErrorKind::BadEndpoint { .. }));
    assert!(matches!(errs[6].1, LineErrorKind::MissingPublicKey));
    assert!(matches!(errs[7].1, LineErrorKind::UnknownSection(_)));
    // The message an operator sees names the line.
    let shown = parse(&text).expect_err("bad").to_string();
    assert!(
        shown.contains("line 3: unknown key \"Bogus\" in [Interface]"),
        "{shown}"
    );
}

#[test]
fn placeholder_and_own_key_are_named() {
    let errs = errors("[Interface]\nPrivateKey = <private key of lab>\n");
    assert!(matches!(errs[0], (2, LineErrorKind::PlaceholderKey { .. })));
    let errs = errors(&format!(
        "[Interface]\nPrivateKey = {K1}\n[Peer]\nPublicKey = {P1}\n"
    ));
    assert!(matches!(errs[0], (4, LineErrorKind::OwnPublicKey(_))));
}

#[test]
fn overlap_includes_containment_and_default_routes() {
    let errs = errors(&format!(
        "[Peer]\nPublicKey = {P2}\nAllowedIPs = 0.0.0.0/0\n[Peer]\nPublicKey = {P3}\nAllowedIPs = 192.0.2.0/24\n"
    ));
    assert!(matches!(
        errs[0],
        (6, LineErrorKind::OverlappingAllowedIps { .. })
    ));
    // Different families never overlap.
    parse(&format!(
        "[Peer]\nPublicKey = {P2}\nAllowedIPs = 0.0.0.0/0\n[Peer]\nPublicKey = {P3}\nAllowedIPs = ::/0\n"
    ))
    .expect("v4 and v6 default routes are disjoint");
}

#[test]
fn endpoints() {
    for bad in [
        "1.2.3.4",
        "[::1]",
        "host:99999",
        "bad_host:1",
        "[zz]:1",
        ":1",
    ] {
        assert!(bad.parse::<Endpoint>().is_err(), "{bad} must be refused");
    }
    assert_eq!(
        "203.0.113.10:51820".parse::<Endpoint>(),
        Ok(Endpoint::Addr("203.0.113.10:51820".parse().expect("addr")))
    );
}

#[test]
fn stripped_has_only_wg_keys() {
    let text = format!(
        "[Interface]\nPrivateKey = {K1}\nListenPort = 51820\nAddress = 10.0.0.1/24\nDNS = 1.1.1.1\nMTU = 1420\nTable = off\nPostUp = true\nSaveConfig = true\n\
         # peer\n[Peer]\nPublicKey = {P2}\nAllowedIPs = 10.0.0.2/32\n"
    );
    let stripped = render_stripped(&parse(&text).expect("valid"));
    for gone in ["Address", "DNS", "MTU", "Table", "PostUp", "SaveConfig"] {
        assert!(!stripped.contains(gone), "{gone} in:\n{stripped}");
    }
    for kept in ["PrivateKey", "ListenPort", "PublicKey", "AllowedIPs"] {
        assert!(stripped.contains(kept), "{kept} missing:\n{stripped}");
    }
}

/// The interface of a file holding just `line` under `[Interface]`.
fn iface_of(line: &str) -> Result<Interface, ConfError> {
    parse(&format!("[Interface]\n{line}\n")).map(|c| c.interface)
}

/// The one peer of a file holding `line` under a `[Peer]` with key P2.
fn peer_of(line: &str) -> Result<Peer, ConfError> {
    parse(&format!("[Peer]\nPublicKey = {P2}\n{line}\n")).map(|mut c| c.peers.remove(0))
}

#[test]
fn fwmark_reads_like_wg() {
    // Each case checked against `wg setconf` (wireguard-tools v1.0.20210914).
    let cases: &[(&str, Option<u32>)] = &[
        ("off", Some(0)),
        ("OFF", Some(0)),
        ("0", Some(0)),
        ("010", Some(10)), // decimal, not octal
        ("0x10", Some(16)),
        ("0xFF", Some(255)),
        ("0x000000000000ffffffff", Some(u32::MAX)),
        ("4294967295", Some(u32::MAX)),
        ("1 0", Some(10)), // wg deletes the blank
        ("0x 1f", Some(31)),
        ("0X10", None), // only a lowercase 0x makes hex
        ("0x", None),
        ("4294967296", None),
        ("0x100000000", None),
        ("99999999999999999999999", None),
        ("+5", None),
        ("0x-1", None),
        ("00x10", None),
        ("0x0x5", None),
        ("1e", None),
        ("0o7", None),
        ("", None),
    ];
    for &(value, want) in cases {
        let got = iface_of(&format!("FwMark = {value}")).map(|i| i.fwmark);
        match want {
            Some(mark) => assert_eq!(got, Ok(Some(mark)), "FwMark = {value}"),
            None => assert!(
                got.is_err(),
                "FwMark = {value} must be refused, got {got:?}"
            ),
        }
    }
}

#[test]
fn wg_keys_lose_all_inner_whitespace() {
    let i = iface_of(&format!(
        "PrivateKey = {} {}\nListenPort = 51 820\nFwMark = 0x 10",
        &K1[..20],
        &K1[20..]
    ))
    .expect("valid");
    assert_eq!(i.private_key, Some(K1.parse().expect("key")));
    assert_eq!(i.listen_port, Some(51820));
    assert_eq!(i.fwmark, Some(16));

    let text = format!(
        "[Peer]\nPublicKey = {}\t{}\nPresharedKey = {} {}\nAllowedIPs = 10.0.0.1 /32, 10.0.1.0 / 24\n\
         Endpoint = 192.0.2.1 : 51820\nPersistentKeepalive = 0 25\n",
        &P2[..10],
        &P2[10..],
        &K1[..5],
        &K1[5..]
    );
    let c = parse(&text).expect("valid");
    let p = &c.peers[0];
    assert_eq!(p.public_key, P2.parse().expect("key"));
    assert_eq!(p.preshared_key, Some(K1.parse().expect("key")));
    assert_eq!(
        p.allowed_ips,
        [
            "10.0.0.1/32".parse::<IpNet>().expect("net"),
            "10.0.1.0/24".parse().expect("net")
        ]
    );
    assert_eq!(
        p.endpoint,
        Some(Endpoint::Addr("192.0.2.1:51820".parse().expect("addr")))
    );
    assert_eq!(p.persistent_keepalive, Some(25));
    // Only ASCII whitespace: wg keeps a no-break space, so the key is bad.
    assert!(peer_of(&format!("PresharedKey = {K1}\u{a0}")).is_err());
    assert!(parse(&format!("[Peer]\u{a0}\nPublicKey = {P2}\n")).is_err());
}

#[test]
fn allowed_ips_read_like_wg() {
    let nets = |line: &str| peer_of(line).map(|p| p.allowed_ips);
    assert_eq!(
        nets("AllowedIPs = 10.0.0.0/08, fd00::1"),
        Ok(vec![
            "10.0.0.0/8".parse::<IpNet>().expect("net"),
            "fd00::1/128".parse().expect("net")
        ])
    );
    for bad in [
        "AllowedIPs = 10.0.0.1/32,", // wg: "Unable to parse IP address: `'"
        "AllowedIPs = ,10.0.0.1/32",
        "AllowedIPs = 10.0.0.1/32,,10.0.0.2/32",
        "AllowedIPs = 10.0.0.1/32 10.0.0.2/32", // wg reads 10.0.0.1/3210.0.0.2/32
        "AllowedIPs = 10.0.0.0/+8",
        "AllowedIPs = 10.0.0.0/",
        "AllowedIPs = 10.0.0.1/33",
        "AllowedIPs = 010.0.0.1/32",
        "AllowedIPs =",
    ] {
        assert!(nets(bad).is_err(), "{bad} must be refused");
    }
}

#[test]
fn address_and_dns_split_on_commas_and_blanks() {
    let i = iface_of("Address = 10.0.0.1/24 fd00::1/64,10.0.1.1/24 ,\tfd01::1\nDNS = 1.1.1.1 9.9.9.9,corp.example")
        .expect("valid");
    assert_eq!(
        i.addresses,
        [
            "10.0.0.1/24".parse::<IpNet>().expect("net"),
            "fd00::1/64".parse().expect("net"),
            "10.0.1.1/24".parse().expect("net"),
            "fd01::1/128".parse().expect("net"),
        ]
    );
    assert_eq!(
        i.dns,
        [
            Dns::Server(IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1))),
            Dns::Server(IpAddr::V4(Ipv4Addr::new(9, 9, 9, 9))),
            Dns::Search("corp.example".into()),
        ]
    );
}

#[test]
fn empty_values_where_wg_quick_takes_them() {
    // wg-quick adds nothing for an empty Address, DNS or hook, and an empty
    // MTU or Table unsets what an earlier line set.
    let i = iface_of(
        "Address =\nDNS =\nPreUp =\nPostUp =\nPreDown =\nPostDown =\n\
         MTU = 1400\nMTU =\nTable = off\nTable =",
    )
    .expect("valid");
    assert_eq!(i, Interface::default());
    // wg-quick dies on an empty SaveConfig; wg refuses every empty wg key.
    assert!(iface_of("SaveConfig =").is_err());
    for key in ["PrivateKey", "ListenPort", "FwMark"] {
        let errs = errors(&format!("[Interface]\n{key} =   \n"));
        assert!(
            matches!(errs[..], [(2, LineErrorKind::EmptyValue { .. })]),
            "{key}: {errs:?}"
        );
    }
    for key in [
        "PresharedKey",
        "AllowedIPs",
        "Endpoint",
        "PersistentKeepalive",
    ] {
        assert!(peer_of(&format!("{key} =")).is_err(), "{key}");
    }
}

/// What `ip` and the kernel would refuse at `wgmesh wg up` (or wg-quick
/// up) is refused here, at its line: MTUs outside Linux's TUN range,
/// IPv6 below its minimum MTU, addresses the kernel will not assign, and
/// an address given twice (EEXIST). The same cases run against a live
/// `wgmesh wg up` in crates/wgmesh/tests/conf_check_matches_up.rs.
#[test]
fn what_the_kernel_refuses_is_refused_at_its_line() {
    let bad_mtu = |v: &str| {
        let errs = errors(&format!("[Interface]\nMTU = {v}\n"));
        assert!(
            matches!(&errs[..], [(2, LineErrorKind::BadValue { key: "MTU", .. })]),
            "MTU = {v}: {errs:?}"
        );
    };
    for v in ["0", "1", "67", "65536", "-1"] {
        bad_mtu(v);
    }
    for v in [68, 576, 1280, 1420, 9000, 65535] {
        assert_eq!(iface_of(&format!("MTU = {v}")).expect("valid").mtu, Some(v));
    }

    // IPv6 needs 1280, whether for an address or for a routed AllowedIPs.
    let text = "[Interface]\nMTU = 1279\nAddress = 10.0.0.1/24\nAddress = fd00::1/64\n";
    assert_eq!(
        errors(text),
        [(
            2,
            LineErrorKind::MtuTooSmallForIpv6 {
                mtu: 1279,
                what: "IPv6 Address",
                ipv6_line: 4
            }
        )]
    );
    let text = format!(
        "[Interface]\nMTU = 1000\nAddress = 10.0.0.1/24\n[Peer]\nPublicKey = {P2}\n\
         AllowedIPs = 10.0.0.2/32\nAllowedIPs = fd00::2/128\n"
    );
    assert!(
        matches!(
            &errors(&text)[..],
            [(2, LineErrorKind::MtuTooSmallForIpv6 { ipv6_line: 7, .. })]
        ),
        "{:?}",
        errors(&text)
    );
    // No route, no IPv6 on the interface: fine. So is IPv4 alone.
    assert!(parse(&format!("{text}\n[Interface]\nTable = off\n")).is_ok());
    assert!(parse("[Interface]\nMTU = 68\nAddress = 10.0.0.1/24\n").is_ok());
    // A later empty MTU is automatic (1420): fine too.
    assert!(parse("[Interface]\nMTU = 1000\nMTU =\nAddress = fd00::1/64\n").is_ok());

    for (addr, why) in [
        ("::/0", "unspecified"),
        ("::1", "loopback"),
        ("ff02::5/128", "multicast"),
    ] {
        let errs = errors(&format!("[Interface]\nAddress = 10.0.0.1/24, {addr}\n"));
        let [
            (
                2,
                LineErrorKind::BadValue {
                    key: "Address",
                    expected,
                    ..
                },
            ),
        ] = &errs[..]
        else {
            panic!("{addr}: {errs:?}");
        };
        assert!(expected.contains(why), "{addr}: {expected}");
    }
    // IPv4 takes any address, as Linux does.
    assert!(parse("[Interface]\nAddress = 0.0.0.0/0, 224.0.0.5, 127.0.0.2/8\n").is_ok());

    // Twice: IPv4 the same address and prefix, IPv6 the same address.
    let text = "[Interface]\nAddress = 10.0.0.1/24\nAddress = 10.0.0.1/16, fd00::1/64\n\
                Address = 10.0.0.1/24\nAddress = fd00::1/48\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(matches!(
        errs[0],
        (4, LineErrorKind::DuplicateAddress { first_line: 2, .. })
    ));
    assert!(matches!(
        errs[1],
        (5, LineErrorKind::DuplicateAddress { first_line: 3, .. })
    ));
    assert!(
        errs[1].1.to_string().contains("whatever its prefix"),
        "{}",
        errs[1].1
    );
    // A bare address is its /32.
    assert!(parse("[Interface]\nAddress = 10.0.0.1, 10.0.0.1/32\n").is_err());
}

#[test]
fn persistent_keepalive_reads_like_wg() {
    let keepalive =
        |v: &str| peer_of(&format!("PersistentKeepalive = {v}")).map(|p| p.persistent_keepalive);
    assert_eq!(keepalive("Off"), Ok(Some(0)));
    assert_eq!(keepalive("025"), Ok(Some(25)));
    assert_eq!(keepalive("65535"), Ok(Some(65535)));
    for bad in ["+5", "65536", "-1", "25s"] {
        assert!(keepalive(bad).is_err(), "{bad} must be refused");
    }
}

#[test]
fn endpoints_split_like_wg() {
    let v6 =
        |ip: &str, port| Endpoint::Addr(SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), port));
    // Without brackets wg splits at the last colon.
    assert_eq!("2001:db8::1:51820".parse(), Ok(v6("2001:db8::1", 51820)));
    assert_eq!("::1:5".parse(), Ok(v6("::1", 5)));
    assert_eq!("::ffff:1.2.3.4:5".parse(), Ok(v6("::ffff:1.2.3.4", 5)));
    // Brackets may hold any address.
    assert_eq!("[192.0.2.1]:5".parse(), Ok(v6("192.0.2.1", 5)));
    assert_eq!("[::1]:05".parse(), Ok(v6("::1", 5)));
    // No port: the text after the last colon is not a port of a valid host.
    assert!("2001:db8::1".parse::<Endpoint>().is_err());
    assert!("[2001:db8::1]:".parse::<Endpoint>().is_err());
    assert!("[2001:db8:::1]:5".parse::<Endpoint>().is_err());
    // In a file, also with blanks, and rendered back with brackets.
    let p = peer_of("Endpoint = 2001:db8::1 : 51820").expect("valid");
    assert_eq!(p.endpoint, Some(v6("2001:db8::1", 51820)));
    assert!(
        render(&Config {
            interface: Interface::default(),
            peers: vec![p]
        })
        .contains("Endpoint = [2001:db8::1]:51820")
    );
}

// ---- parse(render(x)) == x ----

fn key32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn ipnet() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, p)| IpNet::new(Ipv4Addr::from(a).into(), p).expect("prefix in range")),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, p)| IpNet::new(Ipv6Addr::from(a).into(), p).expect("prefix in range")),
    ]
}

/// An interface address Linux assigns (see `unassignable`).
fn address() -> impl Strategy<Value = IpNet> {
    ipnet().prop_filter("an assignable address", |n| match n.addr() {
        IpAddr::V4(_) => true,
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_loopback() || a.is_multicast()),
    })
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9]{0,8}){0,3}"
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(a, p)| Endpoint::Addr(SocketAddr::new(Ipv4Addr::from(a).into(), p))),
        (any::<u128>(), any::<u16>())
            .prop_map(|(a, p)| Endpoint::Addr(SocketAddr::new(Ipv6Addr::from(a).into(), p))),
        // An all-digit host would read back as something else; real names have a letter.
        (host_name(), any::<u16>()).prop_map(|(host, port)| Endpoint::Host { host, port }),
    ]
}

/// Text that survives a line: no '#', no line break, no edge whitespace.
fn hook_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9%/_.;'\"]([a-zA-Z0-9%/_.=;:,'\"<> -]{0,40}[a-zA-Z0-9%/_.;'\"])?"
}

fn dns() -> impl Strategy<Value = Dns> {
    prop_oneof![
        any::<u32>().prop_map(|a| Dns::Server(Ipv4Addr::from(a).into())),
        any::<u128>().prop_map(|a| Dns::Server(Ipv6Addr::from(a).into())),
        host_name().prop_map(Dns::Search),
    ]
}

fn table() -> impl Strategy<Value = Table> {
    prop_oneof![
        Just(Table::Off),
        Just(Table::Auto),
        any::<u32>().prop_map(Table::Id),
        "[a-z_][a-z0-9_]{0,10}"
            .prop_filter("names that are not keywords", |s| s != "off" && s != "auto")
            .prop_map(Table::Name),
    ]
}

prop_compose! {
    fn interface()(
        private_key in proptest::option::of(key32()),
        listen_port in proptest::option::of(any::<u16>()),
        fwmark in proptest::option::of(any::<u32>()),
        addresses in proptest::collection::vec(address(), 0..3),
        dns in proptest::collection::vec(dns(), 0..3),
        // Enough for IPv6 (addresses and routes of either family).
        mtu in proptest::option::of(1280u16..),
        table in proptest::option::of(table()),
        pre_up in proptest::collection::vec(hook_text(), 0..2),
        post_up in proptest::collection::vec(hook_text(), 0..3),
        pre_down in proptest::collection::vec(hook_text(), 0..2),
        post_down in proptest::collection::vec(hook_text(), 0..3),
        save_config in proptest::option::of(any::<bool>()),
    ) -> Interface {
        Interface {
            private_key: private_key.map(PrivateKey::from_bytes),
            listen_port, fwmark, addresses, dns, mtu, table,
            pre_up, post_up, pre_down, post_down, save_config,
        }
    }
}

prop_compose! {
    fn peer(index: u8)(
        name in proptest::option::of("[a-zA-Z0-9][a-zA-Z0-9 _.-]{0,20}[a-zA-Z0-9]"),
        key in key32(),
        preshared in proptest::option::of(key32()),
        hosts in proptest::collection::btree_set(any::<u16>(), 0..4),
        endpoint in proptest::option::of(endpoint()),
        keepalive in proptest::option::of(any::<u16>()),
    ) -> Peer {
        // Disjoint AllowedIPs per peer: each peer owns 10.<index>.0.0/16.
        let allowed_ips = hosts.into_iter().map(|h| {
            IpNet::new(Ipv4Addr::new(10, index, (h >> 8) as u8, h as u8).into(), 32)
                .expect("/32 is a valid prefix")
        }).collect();
        let mut key = key;
        key[0] = index; // distinct public keys
        Peer {
            name,
            public_key: PublicKey::from_bytes(key),
            preshared_key: preshared.map(PresharedKey::from_random),
            allowed_ips,
            endpoint,
            persistent_keepalive: keepalive,
        }
    }
}

fn config() -> impl Strategy<Value = Config> {
    (interface(), 0u8..5)
        .prop_flat_map(|(interface, n)| {
            let peers: Vec<_> = (0..n).map(peer).collect();
            (Just(interface), peers)
        })
        .prop_filter("no address twice", |(i, _)| {
            i.addresses.iter().enumerate().all(|(n, a)| {
                i.addresses[..n].iter().all(|b| match (a, b) {
                    (IpNet::V6(a), IpNet::V6(b)) => a.addr() != b.addr(),
                    _ => a != b,
                })
            })
        })
        .prop_filter("no peer carries the interface's own key", |(i, peers)| {
            let own = i.private_key.as_ref().map(PrivateKey::public_key);
            peers.iter().all(|p| Some(p.public_key) != own)
        })
        .prop_map(|(interface, peers)| Config { interface, peers })
}

proptest! {
    #[test]
    fn parse_render_round_trip(c in config()) {
        let text = render(&c);
        let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n---\n{text}")))?;
        prop_assert_eq!(back, c);
    }

    #[test]
    fn parser_never_panics(text in "(\\[(Interface|Peer)\\]\n|[A-Za-z]{1,12} ?= ?[ -~]{0,50}\n|#[ -~]{0,10}\n){0,12}") {
        let _ = parse(&text);
    }
}
