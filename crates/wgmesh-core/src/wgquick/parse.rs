//! Reading a wg-quick file, line by line, collecting every error with its
//! line number rather than stopping at the first.
//!
//! Values are read as leniently as the tools that read them, no more:
//! - wg(8)'s keys (`PrivateKey`, `ListenPort`, `FwMark`, `PublicKey`,
//!   `PresharedKey`, `AllowedIPs`, `Endpoint`, `PersistentKeepalive`): wg
//!   deletes every whitespace character of the line before it reads it
//!   (`config_read_line` in config.c), so `AllowedIPs = 10.0.0.1 /32` is
//!   `10.0.0.1/32`;
//! - wg-quick(8)'s `Address` and `DNS` are split on commas and blanks
//!   (`${value//,/ }` and word splitting), and may be empty, as may the
//!   hooks (an empty hook runs nothing), `MTU` and `Table` (both then mean
//!   "automatic", as if absent).
//!
//! Whitespace is what wg and wg-quick take for it: ASCII tab, line feed,
//! vertical tab, form feed, carriage return and space, never a Unicode space.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use zeroize::Zeroizing;

use super::{Config, Dns, Endpoint, EndpointError, Interface, Peer, Table};
use crate::key::{KeyError, PublicKey};

/// Everything wrong with a file, in line order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfError {
    pub errors: Vec<LineError>,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            e.fmt(f)?;
        }
        Ok(())
    }
}

/// One problem, at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct LineError {
    pub line: usize,
    pub kind: LineErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineErrorKind {
    #[error("unknown section {0:?} (expected [Interface] or [Peer])")]
    UnknownSection(String),
    #[error("{0:?} is outside any section")]
    OutsideSection(String),
    #[error("expected `Key = Value`")]
    NotKeyValue,
    #[error("unknown key {key:?} in [{section}]")]
    UnknownKey { section: &'static str, key: String },
    #[error("{key} is empty")]
    EmptyValue { key: &'static str },
    #[error("bad key in {key}: {reason}")]
    BadKey { key: &'static str, reason: KeyError },
    #[error("{key} is a placeholder ({value}), not a key: put the node's own private key here")]
    PlaceholderKey { key: &'static str, value: String },
    #[error("bad CIDR {value:?} in {key}")]
    BadCidr { key: &'static str, value: String },
    #[error("bad {key} {value:?}: {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("bad Endpoint {value:?}: {reason}")]
    BadEndpoint {
        value: String,
        reason: EndpointError,
    },
    #[error("[Peer] has no PublicKey")]
    MissingPublicKey,
    #[error("public key {key} is already the key of the peer at line {first_line}")]
    DuplicatePublicKey { key: PublicKey, first_line: usize },
    #[error("public key {0} is this interface's own key")]
    OwnPublicKey(PublicKey),
    #[error("Address {addr} is already the interface's, at line {first_line}{}", if addr.addr().is_ipv6() { " (IPv6 takes an address once, whatever its prefix)" } else { "" })]
    DuplicateAddress { addr: IpNet, first_line: usize },
    #[error(
        "MTU {mtu} is below 1280, the least IPv6 allows (RFC 8200 §5), and the {what} at \
         line {ipv6_line} needs IPv6 on the interface (Linux refuses it, EINVAL)"
    )]
    MtuTooSmallForIpv6 {
        mtu: u16,
        what: &'static str,
        ipv6_line: usize,
    },
    #[error("AllowedIPs {net} overlaps {other} of the peer at line {other_line}")]
    OverlappingAllowedIps {
        net: IpNet,
        other: IpNet,
        other_line: usize,
    },
}

/// Where the `[Interface]` values that other lines constrain were.
#[derive(Default)]
struct InterfaceLines {
    /// The line of the `MTU` in force (the last one).
    mtu: Option<usize>,
    /// One line per entry of [`Interface::addresses`].
    addresses: Vec<usize>,
}

/// Where each peer's parts were, for the checks that relate peers.
struct PeerLines {
    header: usize,
    /// `None` until the `PublicKey` line is read.
    public_key: Option<usize>,
    allowed_ips: Vec<usize>,
}

enum Section {
    None,
    Interface,
    Peer,
}

/// Parses and checks a wg-quick file.
pub fn parse(text: &str) -> Result<Config, ConfError> {
    let mut errors = Vec::new();
    let mut config = Config::default();
    let mut peers: Vec<(Peer, PeerLines)> = Vec::new();
    let mut section = Section::None;
    let mut last_comment: Option<String> = None;
    let mut iface_lines = InterfaceLines::default();

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let mut err = |kind| errors.push(LineError { line, kind });
        let trimmed = trim(raw);
        if let Some(comment) = trimmed.strip_prefix('#') {
            last_comment = Some(comment.trim().to_owned());
            continue;
        }
        let comment_above = last_comment.take();
        // wg-quick: everything from the first '#' on is a comment.
        let content = match trimmed.split_once('#') {
            Some((before, _)) => trim(before),
            None => trimmed,
        };
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') {
            if content.eq_ignore_ascii_case("[Interface]") {
                section = Section::Interface;
            } else if content.eq_ignore_ascii_case("[Peer]") {
                section = Section::Peer;
                // The key is unknown until its line; `PeerLines::public_key`
                // tells whether it came.
                let mut peer = Peer::new(PublicKey::from_bytes([0; 32]));
                peer.name = comment_above.filter(|c| !c.is_empty());
                peers.push((
                    peer,
                    PeerLines {
                        header: line,
                        public_key: None,
                        allowed_ips: Vec::new(),
                    },
                ));
            } else {
                err(LineErrorKind::UnknownSection(content.to_owned()));
                section = Section::None;
            }
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            err(LineErrorKind::NotKeyValue);
            continue;
        };
        let key = trim(key);
        let value = trim(value);
        let result = match section {
            Section::None => Err(LineErrorKind::OutsideSection(key.to_owned())),
            Section::Interface => {
                let r = interface_line(&mut config.interface, key, value);
                let iface = &config.interface;
                iface_lines.addresses.resize(iface.addresses.len(), line);
                if key.eq_ignore_ascii_case("mtu") {
                    iface_lines.mtu = iface.mtu.map(|_| line);
                }
                r
            }
            Section::Peer => {
                let (peer, lines) = peers.last_mut().expect("in [Peer] after pushing one");
                peer_line(peer, lines, line, key, value)
            }
        };
        if let Err(kind) = result {
            err(kind);
        }
    }

    peers.retain(|(_, lines)| {
        if lines.public_key.is_none() {
            errors.push(LineError {
                line: lines.header,
                kind: LineErrorKind::MissingPublicKey,
            });
        }
        lines.public_key.is_some()
    });
    check_peers(&config.interface, &peers, &mut errors);
    check_interface(&config.interface, &iface_lines, &peers, &mut errors);
    config.peers = peers.into_iter().map(|(p, _)| p).collect();

    if errors.is_empty() {
        Ok(config)
    } else {
        errors.sort_by_key(|e| e.line);
        Err(ConfError { errors })
    }
}

fn interface_line(iface: &mut Interface, key: &str, value: &str) -> Result<(), LineErrorKind> {
    let k = key.to_ascii_lowercase();
    match k.as_str() {
        "privatekey" => {
            iface.private_key = Some(parse_key("PrivateKey", value)?);
        }
        "listenport" => {
            let value = wg_value("ListenPort", value)?;
            iface.listen_port = Some(number("ListenPort", &value)?);
        }
        "fwmark" => {
            let value = wg_value("FwMark", value)?;
            iface.fwmark = Some(parse_fwmark(&value).ok_or_else(|| {
                bad(
                    "FwMark",
                    &value,
                    "off, or 0 to 4294967295 in decimal or with 0x in hex",
                )
            })?)
        }
        "address" => {
            for item in words(value) {
                let addr = cidr("Address", item)?;
                if let Some(why) = unassignable(addr.addr()) {
                    return Err(bad("Address", item, why));
                }
                iface.addresses.push(addr);
            }
        }
        "dns" => {
            for item in words(value) {
                iface.dns.push(match item.parse::<IpAddr>() {
                    Ok(ip) => Dns::Server(ip),
                    Err(_) if super::is_host_name(item) => Dns::Search(item.to_owned()),
                    Err(_) => {
                        return Err(bad("DNS", item, "an IP address or a search domain"));
                    }
                });
            }
        }
        // wg-quick keeps an empty MTU or Table as unset: automatic.
        "mtu" if value.is_empty() => iface.mtu = None,
        "mtu" => {
            let mtu: u16 = number("MTU", value)?;
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(bad(
                    "MTU",
                    value,
                    "68 to 65535, the MTUs Linux takes for a TUN device",
                ));
            }
            iface.mtu = Some(mtu);
        }
        "table" if value.is_empty() => iface.table = None,
        "table" => {
            iface.table = Some(match value.to_ascii_lowercase().as_str() {
                "off" => Table::Off,
                "auto" => Table::Auto,
                _ => match value.parse::<u32>() {
                    Ok(id) => Table::Id(id),
                    Err(_)
                        if value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                    {
                        Table::Name(value.to_owned())
                    }
                    Err(_) => return Err(bad("Table", value, "off, auto, a number or a name")),
                },
            })
        }
        "preup" => hook(&mut iface.pre_up, value),
        "postup" => hook(&mut iface.post_up, value),
        "predown" => hook(&mut iface.pre_down, value),
        "postdown" => hook(&mut iface.post_down, value),
        "saveconfig" => {
            iface.save_config = Some(match value.to_ascii_lowercase().as_str() {
                // wg-quick dies on anything else, an empty value included.
                "true" => true,
                "false" => false,
                _ => return Err(bad("SaveConfig", value, "true or false")),
            })
        }
        _ => {
            return Err(LineErrorKind::UnknownKey {
                section: "Interface",
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

fn peer_line(
    peer: &mut Peer,
    lines: &mut PeerLines,
    line: usize,
    key: &str,
    value: &str,
) -> Result<(), LineErrorKind> {
    match key.to_ascii_lowercase().as_str() {
        "publickey" => {
            peer.public_key = parse_key("PublicKey", value)?;
            lines.public_key = Some(line);
        }
        "presharedkey" => peer.preshared_key = Some(parse_key("PresharedKey", value)?),
        "allowedips" => {
            // wg: comma-separated, and an empty entry (`a,,b`, a trailing
            // comma) is an unparsable address.
            for item in wg_value("AllowedIPs", value)?.split(',') {
                peer.allowed_ips.push(allowed_ip(item)?);
                lines.allowed_ips.push(line);
            }
        }
        "endpoint" => {
            let value = wg_value("Endpoint", value)?;
            peer.endpoint =
                Some(
                    value
                        .parse::<Endpoint>()
                        .map_err(|reason| LineErrorKind::BadEndpoint {
                            value: value.to_string(),
                            reason,
                        })?,
                );
        }
        "persistentkeepalive" => {
            let value = wg_value("PersistentKeepalive", value)?;
            peer.persistent_keepalive = Some(if value.eq_ignore_ascii_case("off") {
                0
            } else {
                decimal(&value).ok_or_else(|| {
                    bad("PersistentKeepalive", &value, "off or 0 to 65535 seconds")
                })?
            })
        }
        _ => {
            return Err(LineErrorKind::UnknownKey {
                section: "Peer",
                key: key.to_owned(),
            });
        }
    }
    Ok(())
}

/// The checks across peers: one key per peer, no peer with our own key, and
/// no two peers with overlapping AllowedIPs. WireGuard itself takes overlaps:
/// a prefix listed by two peers belongs to the last one that lists it (the
/// earlier peer silently loses it), and different prefixes that overlap
/// coexist, the longest match winning. We refuse both, because in a mesh two
/// peers claiming the same addresses is almost always a mistake.
fn check_peers(iface: &Interface, peers: &[(Peer, PeerLines)], errors: &mut Vec<LineError>) {
    let own = iface.private_key.as_ref().map(|k| k.public_key());
    let mut seen: std::collections::HashMap<PublicKey, usize> = Default::default();
    for (peer, lines) in peers {
        let key_line = lines.public_key.unwrap_or(lines.header);
        if Some(peer.public_key) == own {
            errors.push(LineError {
                line: key_line,
                kind: LineErrorKind::OwnPublicKey(peer.public_key),
            });
        }
        if let Some(&first_line) = seen.get(&peer.public_key) {
            errors.push(LineError {
                line: key_line,
                kind: LineErrorKind::DuplicatePublicKey {
                    key: peer.public_key,
                    first_line,
                },
            });
        } else {
            seen.insert(peer.public_key, key_line);
        }
    }
    for (i, (a, a_lines)) in peers.iter().enumerate() {
        for (b, b_lines) in &peers[..i] {
            for (net, &line) in a.allowed_ips.iter().zip(&a_lines.allowed_ips) {
                if let Some((other, &other_line)) = b
                    .allowed_ips
                    .iter()
                    .zip(&b_lines.allowed_ips)
                    .find(|(other, _)| overlaps(net, other))
                {
                    errors.push(LineError {
                        line,
                        kind: LineErrorKind::OverlappingAllowedIps {
                            net: *net,
                            other: *other,
                            other_line,
                        },
                    });
                }
            }
        }
    }
}

/// Linux's MTU range for a TUN device (`MIN_MTU` in drivers/net/tun.c is
/// 68, RFC 791's least IPv4 MTU; `MAX_MTU` 65535): `ip link` and TUN
/// creation refuse anything else with EINVAL, so wg-quick's `ip link set
/// mtu` and `wgmesh wg up` fail on it.
const MIN_MTU: u16 = 68;
const MAX_MTU: u16 = 65535;

/// IPv6's least link MTU (RFC 8200 §5). Below it Linux turns IPv6 off on
/// the device: `ip -6 address add` fails with EINVAL, `ip -6 route` with
/// ENODEV.
const IPV6_MIN_MTU: u16 = 1280;

/// Why the kernel refuses `addr` as an interface address, if it does:
/// IPv6's unspecified, loopback and multicast addresses (`ipv6_add_addr`
/// in net/ipv6/addrconf.c: EADDRNOTAVAIL or EINVAL). IPv4 takes any.
fn unassignable(addr: IpAddr) -> Option<&'static str> {
    let IpAddr::V6(v6) = addr else {
        return None;
    };
    if v6.is_unspecified() {
        Some("an address, not :: (the unspecified address)")
    } else if v6.is_loopback() {
        Some("an address other than ::1, which only the loopback device may have")
    } else if v6.is_multicast() {
        Some("a unicast address, not a multicast one (ff00::/8)")
    } else {
        None
    }
}

/// The checks within `[Interface]` that `wgmesh wg up` (and wg-quick,
/// through `ip`) would otherwise fail on halfway: an address given twice
/// (`ip address add` answers EEXIST: for IPv4 the same address and prefix,
/// for IPv6 the same address whatever the prefix), and an MTU too small
/// for the IPv6 the interface needs (an IPv6 Address, or an IPv6 AllowedIPs
/// prefix that gets a route).
fn check_interface(
    iface: &Interface,
    lines: &InterfaceLines,
    peers: &[(Peer, PeerLines)],
    errors: &mut Vec<LineError>,
) {
    for (i, (addr, &line)) in iface.addresses.iter().zip(&lines.addresses).enumerate() {
        let same = |other: &IpNet| match (addr, other) {
            (IpNet::V6(a), IpNet::V6(b)) => a.addr() == b.addr(),
            _ => addr == other,
        };
        if let Some((_, &first_line)) = iface.addresses[..i]
            .iter()
            .zip(&lines.addresses)
            .find(|(other, _)| same(other))
        {
            errors.push(LineError {
                line,
                kind: LineErrorKind::DuplicateAddress {
                    addr: *addr,
                    first_line,
                },
            });
        }
    }
    let (Some(mtu), Some(mtu_line)) = (iface.mtu, lines.mtu) else {
        return;
    };
    if mtu >= IPV6_MIN_MTU {
        return;
    }
    let address = iface
        .addresses
        .iter()
        .zip(&lines.addresses)
        .find(|(a, _)| a.addr().is_ipv6())
        .map(|(_, &line)| ("IPv6 Address", line));
    let routed = iface.table != Some(Table::Off);
    let route = peers
        .iter()
        .flat_map(|(p, l)| p.allowed_ips.iter().zip(&l.allowed_ips))
        .find(|(net, _)| routed && net.addr().is_ipv6())
        .map(|(_, &line)| ("IPv6 AllowedIPs (routed into the interface)", line));
    if let Some((what, ipv6_line)) = address.or(route) {
        errors.push(LineError {
            line: mtu_line,
            kind: LineErrorKind::MtuTooSmallForIpv6 {
                mtu,
                what,
                ipv6_line,
            },
        });
    }
}

/// Two prefixes overlap when one contains the other's network address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    let (a, b) = (a.trunc(), b.trunc());
    a.contains(&b.network()) || b.contains(&a.network())
}

fn bad(key: &'static str, value: &str, expected: &'static str) -> LineErrorKind {
    LineErrorKind::BadValue {
        key,
        value: value.to_owned(),
        expected,
    }
}

fn number<T: FromStr>(key: &'static str, value: &str) -> Result<T, LineErrorKind> {
    value
        .parse()
        .map_err(|_| bad(key, value, "a number in range"))
}

/// What wg(8) and wg-quick(8) take for whitespace: wg's `char_is_space`
/// (ctype.h), which is also `[[:space:]]` in the C locale.
fn is_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ')
}

fn trim(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// The value of one of wg(8)'s keys as wg reads it: with every whitespace
/// character deleted, and not empty (wg refuses `Key =` as an unknown line).
/// Wiped after use, since it may be a key.
fn wg_value(key: &'static str, value: &str) -> Result<Zeroizing<String>, LineErrorKind> {
    let mut squeezed = Zeroizing::new(String::with_capacity(value.len()));
    squeezed.extend(value.chars().filter(|&c| !is_space(c)));
    if squeezed.is_empty() {
        return Err(LineErrorKind::EmptyValue { key });
    }
    Ok(squeezed)
}

/// wg-quick's list values (`Address`, `DNS`): `${value//,/ }` split on
/// blanks, so commas and blanks both separate, and empty items vanish.
fn words(value: &str) -> impl Iterator<Item = &str> {
    value
        .split([',', ' ', '\t'])
        .filter(|item| !item.is_empty())
}

/// Digits only (no sign), as wg(8) reads PersistentKeepalive and prefix
/// lengths: leading zeros are fine, anything out of range is refused.
fn decimal<T: FromStr>(value: &str) -> Option<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// FwMark exactly as wg(8)'s `parse_fwmark` (config.c): `off` in any case, or
/// a number starting with a digit: hex after a lowercase `0x`, else decimal
/// (so `010` is ten, and `0X10` is refused), at most 0xffffffff.
fn parse_fwmark(value: &str) -> Option<u32> {
    if value.eq_ignore_ascii_case("off") {
        return Some(0);
    }
    match value.strip_prefix("0x") {
        Some(hex) if !hex.is_empty() => {
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            // Leading zeros do not count against the range.
            let digits = hex.trim_start_matches('0');
            if digits.is_empty() {
                Some(0)
            } else {
                u32::from_str_radix(digits, 16).ok()
            }
        }
        _ => decimal(value),
    }
}

/// A hook runs as wg-quick `eval`s it; an empty one runs nothing.
fn hook(hooks: &mut Vec<String>, value: &str) {
    if !value.is_empty() {
        hooks.push(value.to_owned());
    }
}

/// An AllowedIPs entry as wg(8) reads it: an address, then optionally `/`
/// and a prefix length of decimal digits only.
fn allowed_ip(value: &str) -> Result<IpNet, LineErrorKind> {
    let bad_cidr = || LineErrorKind::BadCidr {
        key: "AllowedIPs",
        value: value.to_owned(),
    };
    let (ip, prefix) = match value.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (value, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| bad_cidr())?;
    match prefix {
        None => Ok(IpNet::from(ip)),
        Some(prefix) => {
            let len: u8 = decimal(prefix).ok_or_else(bad_cidr)?;
            IpNet::new(ip, len).map_err(|_| bad_cidr())
        }
    }
}

/// A prefix, or a bare address meaning the single host (as wg(8) reads it).
fn cidr(key: &'static str, value: &str) -> Result<IpNet, LineErrorKind> {
    value
        .parse::<IpNet>()
        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| LineErrorKind::BadCidr {
            key,
            value: value.to_owned(),
        })
}

fn parse_key<K: FromStr<Err = KeyError>>(
    key: &'static str,
    value: &str,
) -> Result<K, LineErrorKind> {
    if value.starts_with('<') && value.ends_with('>') {
        return Err(LineErrorKind::PlaceholderKey {
            key,
            value: value.to_owned(),
        });
    }
    wg_value(key, value)?
        .parse()
        .map_err(|reason| LineErrorKind::BadKey { key, reason })
}
