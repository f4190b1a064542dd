//! The wg-quick(8) configuration file: a typed model, a parser that checks
//! everything wg(8) and wg-quick(8) would refuse (and a little more), and a
//! renderer, such that `parse(render(c)) == c`.
//!
//! Key names and section headers match case-insensitively, as in wg(8)'s
//! `config.c`; list keys (`Address`, `DNS`, `AllowedIPs`, the hooks) may be
//! repeated, `AllowedIPs` takes a comma list and `Address` and `DNS` lists
//! separated by commas or blanks, and a repeated scalar key takes its last
//! value, all as in wg and wg-quick. Values are read with wg's and wg-quick's
//! whitespace rules (see the `parse` module). A comment line directly above a
//! `[Peer]` is kept as that peer's name. Other comments are not kept.

mod parse;
mod render;

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::key::{PresharedKey, PrivateKey, PublicKey};

pub use parse::{ConfError, LineError, LineErrorKind, overlaps, parse};
pub use render::{render, render_stripped};

/// A whole wg-quick file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub interface: Interface,
    pub peers: Vec<Peer>,
}

/// The `[Interface]` section. The first block of fields is wg(8)'s; the rest
/// are wg-quick's own and never reach `wg setconf` (see [`render_stripped`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub private_key: Option<PrivateKey>,
    pub listen_port: Option<u16>,
    /// `FwMark`; `off` is 0.
    pub fwmark: Option<u32>,

    /// `Address`: the interface's own addresses, with prefix (a bare address
    /// reads as /32 or /128, as `ip address add` takes it).
    pub addresses: Vec<IpNet>,
    pub dns: Vec<Dns>,
    pub mtu: Option<u16>,
    pub table: Option<Table>,
    pub pre_up: Vec<String>,
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub post_down: Vec<String>,
    pub save_config: Option<bool>,
}

/// A `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The comment line directly above `[Peer]`, without the `#`.
    pub name: Option<String>,
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub allowed_ips: Vec<IpNet>,
    pub endpoint: Option<Endpoint>,
    /// Seconds; `off` is 0.
    pub persistent_keepalive: Option<u16>,
}

impl Peer {
    /// A peer with only its key set.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            name: None,
            public_key,
            preshared_key: None,
            allowed_ips: Vec::new(),
            endpoint: None,
            persistent_keepalive: None,
        }
    }
}

/// One `DNS` entry: wg-quick treats an IP address as a resolver and anything
/// else as a search domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    Server(IpAddr),
    Search(String),
}

impl fmt::Display for Dns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dns::Server(ip) => ip.fmt(f),
            Dns::Search(domain) => f.write_str(domain),
        }
    }
}

/// wg-quick's `Table`: which routing table gets the AllowedIPs routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// No routes at all.
    Off,
    /// The main table (the default).
    Auto,
    Id(u32),
    /// A name from /etc/iproute2/rt_tables.
    Name(String),
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Table::Off => f.write_str("off"),
            Table::Auto => f.write_str("auto"),
            Table::Id(id) => id.fmt(f),
            Table::Name(name) => f.write_str(name),
        }
    }
}

/// A peer's `Endpoint`: an address, or a host name that wg(8) resolves when
/// it loads the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Addr(SocketAddr),
    Host { host: String, port: u16 },
}

/// Why an endpoint's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    #[error("an endpoint is HOST:PORT or [IPv6]:PORT")]
    MissingPort,
    #[error("bad port {0:?}")]
    BadPort(String),
    #[error("bad host name {0:?}")]
    BadHost(String),
    #[error("bad IPv6 address {0:?}")]
    BadIpv6(String),
}

/// Read as wg(8)'s `parse_endpoint` splits it: after `[...]` when the text
/// starts with `[`, else at the last `:`. So an IPv6 address needs no
/// brackets (`2001:db8::1:51820` is `[2001:db8::1]:51820`), and brackets may
/// hold an IPv4 address too (`[192.0.2.1]:51820`). Stricter than wg: a host
/// name in brackets is refused, and the port must be a number from 0 to
/// 65535 (wg also takes service names, and wraps larger numbers).
impl std::str::FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, EndpointError> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Endpoint::Addr(addr));
        }
        let (host, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (inside, after) = rest.split_once(']').ok_or(EndpointError::MissingPort)?;
                let port = after.strip_prefix(':').ok_or(EndpointError::MissingPort)?;
                (inside, port)
            }
            None => s.rsplit_once(':').ok_or(EndpointError::MissingPort)?,
        };
        if port.is_empty() {
            return Err(EndpointError::MissingPort);
        }
        let port: u16 = port
            .parse()
            .map_err(|_| EndpointError::BadPort(port.to_owned()))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Endpoint::Addr(SocketAddr::new(ip, port)));
        }
        if s.starts_with('[') {
            return Err(EndpointError::BadIpv6(host.to_owned()));
        }
        if !is_host_name(host) {
            return Err(EndpointError::BadHost(host.to_owned()));
        }
        Ok(Endpoint::Host {
            host: host.to_owned(),
            port,
        })
    }
}

/// RFC 1123 host name: dot-separated labels of letters, digits and inner
/// hyphens, at most 253 characters.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(addr) => addr.fmt(f),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests;
