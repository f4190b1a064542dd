//! Access policy: who may send what to whom inside one network.
//!
//! An operator writes it as TOML (`wgmesh admin policy set FILE`):
//!
//! ```toml
//! default = "allow"            # or "deny": what no rule matches
//!
//! [[rule]]
//! action = "deny"
//! from = ["node:lab"]          # "*", "node:NAME" or "group:NAME"
//! to = ["group:servers"]
//! proto = "tcp"                # "any" (the default), "tcp", "udp", "icmp"
//! ports = ["22", "8000-8099"]  # destination ports; only with tcp or udp
//! ```
//!
//! Rules are read top to bottom and the first one that matches a packet
//! decides, as in an nftables chain. They are enforced by the receiving
//! node on what it receives (as Nebula does): the server compiles, for each
//! ordered pair of nodes, the rules that can match packets from one to the
//! other ([`Policy::rules_between`]), and the agent's filter evaluates them
//! ([`decide`]). Replies to a flow the receiving node opened are let
//! through by the agent's flow table whatever the rules say.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Action {
    Allow,
    Deny,
}

/// The transport a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Proto {
    #[default]
    Any,
    Tcp,
    Udp,
    /// ICMP and ICMPv6.
    Icmp,
}

impl Proto {
    /// IANA protocol numbers (IPv4 protocol / IPv6 next header).
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMP: u8 = 1;
    pub const ICMPV6: u8 = 58;

    /// Does a packet with this IP protocol number match?
    pub fn matches(self, ip_proto: u8) -> bool {
        match self {
            Proto::Any => true,
            Proto::Tcp => ip_proto == Self::TCP,
            Proto::Udp => ip_proto == Self::UDP,
            Proto::Icmp => ip_proto == Self::ICMP || ip_proto == Self::ICMPV6,
        }
    }
}

/// An inclusive range of destination ports, written `22` or `8000-8099`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub fn new(first: u16, last: u16) -> Result<Self, PolicyError> {
        if first == 0 || first > last {
            return Err(PolicyError::BadPorts(format!("{first}-{last}")));
        }
        Ok(Self { first, last })
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let bad = || PolicyError::BadPorts(s.to_owned());
        // Decimal digits without a sign, spaces or leading zeros: one
        // spelling per range, the one the API documents
        // ([`crate::schema::PORT_RANGE`]) and [`fmt::Display`] writes.
        let port = |t: &str| {
            let canonical =
                !t.is_empty() && !t.starts_with('0') && t.bytes().all(|b| b.is_ascii_digit());
            canonical.then(|| t.parse::<u16>().ok()).flatten()
        };
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first = port(a).ok_or_else(bad)?;
        let last = port(b).ok_or_else(bad)?;
        Self::new(first, last).map_err(|_| bad())
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which nodes a rule's `from` or `to` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// Every node of the network.
    All,
    Node(String),
    Group(String),
}

impl Selector {
    pub fn matches(&self, node: &NodeFacts<'_>) -> bool {
        match self {
            Selector::All => true,
            Selector::Node(n) => n == node.name,
            Selector::Group(g) => node.groups.iter().any(|x| x == g),
        }
    }
}

impl FromStr for Selector {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        let valid = |n: &str| {
            !n.is_empty()
                && n.len() <= 63
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        };
        match s.split_once(':') {
            None if s == "*" => Ok(Selector::All),
            Some(("node", n)) if valid(n) => Ok(Selector::Node(n.to_owned())),
            Some(("group", g)) if valid(g) => Ok(Selector::Group(g.to_owned())),
            _ => Err(PolicyError::BadSelector(s.to_owned())),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("*"),
            Selector::Node(n) => write!(f, "node:{n}"),
            Selector::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One rule as the operator writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rule {
    pub action: Action,
    /// At least one ([`Policy::check`]).
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub from: Vec<Selector>,
    #[cfg_attr(feature = "openapi", schema(min_items = 1))]
    pub to: Vec<Selector>,
    #[serde(default)]
    pub proto: Proto,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortRange>,
}

/// A network's whole policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Policy {
    pub default: Action,
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

impl Default for Policy {
    /// A new network lets every node reach every other.
    fn default() -> Self {
        Self {
            default: Action::Allow,
            rules: Vec::new(),
        }
    }
}

/// A compiled rule: one that can match packets between one ordered pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FilterRule {
    pub action: Action,
    pub proto: Proto,
    /// Destination ports; `None` for any (and for ICMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

impl FilterRule {
    pub fn matches(&self, ip_proto: u8, dst_port: Option<u16>) -> bool {
        self.proto.matches(ip_proto)
            && match self.ports {
                None => true,
                Some(r) => dst_port.is_some_and(|p| r.contains(p)),
            }
    }
}

/// What a node knows of another to match selectors.
#[derive(Debug, Clone, Copy)]
pub struct NodeFacts<'a> {
    pub name: &'a str,
    pub groups: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("invalid policy: {0}")]
    Toml(String),
    #[error("invalid selector {0:?}: write \"*\", \"node:NAME\" or \"group:NAME\"")]
    BadSelector(String),
    #[error("invalid port range {0:?}: write PORT or FIRST-LAST, 1-65535")]
    BadPorts(String),
    #[error("rule {index}: ports only apply to proto \"tcp\" or \"udp\"")]
    PortsWithoutTransport { index: usize },
    #[error("rule {index}: `from` and `to` must each name at least one node or group")]
    EmptySide { index: usize },
}

impl Policy {
    /// Parses and checks a policy file.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Toml(e.to_string()))?;
        policy.check()?;
        Ok(policy)
    }

    /// What [`Policy::from_toml`] checks beyond the syntax; also for
    /// policies that arrive as JSON.
    pub fn check(&self) -> Result<(), PolicyError> {
        for (i, r) in self.rules.iter().enumerate() {
            let index = i + 1;
            if r.from.is_empty() || r.to.is_empty() {
                return Err(PolicyError::EmptySide { index });
            }
            if !r.ports.is_empty() && !matches!(r.proto, Proto::Tcp | Proto::Udp) {
                return Err(PolicyError::PortsWithoutTransport { index });
            }
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("invariant: a Policy is always representable in TOML")
    }

    /// The rules that can match packets from `src` to `dst`, in order,
    /// one per port range.
    pub fn rules_between(&self, src: &NodeFacts<'_>, dst: &NodeFacts<'_>) -> Vec<FilterRule> {
        let mut out = Vec::new();
        for r in &self.rules {
            if !(r.from.iter().any(|s| s.matches(src)) && r.to.iter().any(|s| s.matches(dst))) {
                continue;
            }
            if r.ports.is_empty() {
                out.push(FilterRule {
                    action: r.action,
                    proto: r.proto,
                    ports: None,
                });
            }
            for p in &r.ports {
                out.push(FilterRule {
                    action: r.action,
                    proto: r.proto,
                    ports: Some(*p),
                });
            }
        }
        out
    }
}

/// First match wins; `default` when none matches.
pub fn decide(
    rules: &[FilterRule],
    default: Action,
    ip_proto: u8,
    dst_port: Option<u16>,
) -> Action {
    rules
        .iter()
        .find(|r| r.matches(ip_proto, dst_port))
        .map_or(default, |r| r.action)
}

/// Could any packet pass? A rule that denies everything shadows the rest.
/// (It may say yes for a pair whose allow rules are all shadowed by
/// narrower denies; the filter then drops what it must.)
pub fn allows_any(rules: &[FilterRule], default: Action) -> bool {
    for r in rules {
        match (r.action, r.proto, r.ports) {
            (Action::Allow, _, _) => return true,
            (Action::Deny, Proto::Any, None) => return false,
            (Action::Deny, _, _) => {}
        }
    }
    default == Action::Allow
}
