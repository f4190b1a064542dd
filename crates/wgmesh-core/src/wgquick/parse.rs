//! Reading a wg-quick file, line by line, collecting every error with its
//! line number rather than stopping at the first.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

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
    #[error("AllowedIPs {net} overlaps {other} of the peer at line {other_line}")]
    OverlappingAllowedIps {
        net: IpNet,
        other: IpNet,
        other_line: usize,
    },
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

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let mut err = |kind| errors.push(LineError { line, kind });
        let trimmed = raw.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            last_comment = Some(comment.trim().to_owned());
            continue;
        }
        let comment_above = last_comment.take();
        // wg-quick: everything from the first '#' on is a comment.
        let content = match trimmed.split_once('#') {
            Some((before, _)) => before.trim(),
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
        let key = key.trim();
        let value = value.trim();
        let result = match section {
            Section::None => Err(LineErrorKind::OutsideSection(key.to_owned())),
            Section::Interface => interface_line(&mut config.interface, key, value),
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
        "listenport" => iface.listen_port = Some(number("ListenPort", value)?),
        "fwmark" => {
            iface.fwmark = Some(if value.eq_ignore_ascii_case("off") {
                0
            } else {
                parse_u32_c(value).ok_or_else(|| bad("FwMark", value, "a number or off"))?
            })
        }
        "address" => {
            for item in list("Address", value)? {
                iface.addresses.push(cidr("Address", item)?);
            }
        }
        "dns" => {
            for item in list("DNS", value)? {
                iface.dns.push(match item.parse::<IpAddr>() {
                    Ok(ip) => Dns::Server(ip),
                    Err(_) if super::is_host_name(item) => Dns::Search(item.to_owned()),
                    Err(_) => {
                        return Err(bad("DNS", item, "an IP address or a search domain"));
                    }
                });
            }
        }
        "mtu" => iface.mtu = Some(number("MTU", value)?),
        "table" => {
            iface.table = Some(match value.to_ascii_lowercase().as_str() {
                "" => return Err(LineErrorKind::EmptyValue { key: "Table" }),
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
        "preup" => iface.pre_up.push(hook("PreUp", value)?),
        "postup" => iface.post_up.push(hook("PostUp", value)?),
        "predown" => iface.pre_down.push(hook("PreDown", value)?),
        "postdown" => iface.post_down.push(hook("PostDown", value)?),
        "saveconfig" => {
            iface.save_config = Some(match value.to_ascii_lowercase().as_str() {
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
            for item in list("AllowedIPs", value)? {
                peer.allowed_ips.push(cidr("AllowedIPs", item)?);
                lines.allowed_ips.push(line);
            }
        }
        "endpoint" => {
            if value.is_empty() {
                return Err(LineErrorKind::EmptyValue { key: "Endpoint" });
            }
            peer.endpoint =
                Some(
                    value
                        .parse::<Endpoint>()
                        .map_err(|reason| LineErrorKind::BadEndpoint {
                            value: value.to_owned(),
                            reason,
                        })?,
                );
        }
        "persistentkeepalive" => {
            peer.persistent_keepalive = Some(if value.eq_ignore_ascii_case("off") {
                0
            } else {
                number("PersistentKeepalive", value)?
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

/// The checks across peers: one key per peer, no peer with our own key, no
/// address routed to two peers (WireGuard would silently give it to the last).
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

/// C's `strtoul(s, NULL, 0)` as wg(8) reads FwMark: decimal, 0x hex or 0 octal.
fn parse_u32_c(value: &str) -> Option<u32> {
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        u32::from_str_radix(hex, 16).ok()
    } else if value.len() > 1 && value.starts_with('0') {
        u32::from_str_radix(&value[1..], 8).ok()
    } else {
        value.parse().ok()
    }
}

fn list<'a>(key: &'static str, value: &'a str) -> Result<Vec<&'a str>, LineErrorKind> {
    if value.is_empty() {
        return Err(LineErrorKind::EmptyValue { key });
    }
    Ok(value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect())
}

fn hook(key: &'static str, value: &str) -> Result<String, LineErrorKind> {
    if value.is_empty() {
        Err(LineErrorKind::EmptyValue { key })
    } else {
        Ok(value.to_owned())
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
    if value.is_empty() {
        return Err(LineErrorKind::EmptyValue { key });
    }
    if value.starts_with('<') && value.ends_with('>') {
        return Err(LineErrorKind::PlaceholderKey {
            key,
            value: value.to_owned(),
        });
    }
    value
        .parse()
        .map_err(|reason| LineErrorKind::BadKey { key, reason })
}
