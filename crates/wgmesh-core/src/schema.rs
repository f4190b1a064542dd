//! The text forms of the control API's values, as JSON Schema patterns,
//! for the server's OpenAPI document (the `openapi` feature derives
//! `utoipa::ToSchema` on the control and map types).
//!
//! Each pattern is exactly the set of strings serde accepts for its type
//! and emits from it (the tests below check both directions against the
//! parsers): a client that follows the document is never refused for the
//! form of a value, and a fuzzer that breaks a pattern is always refused.
//! Patterns are ECMA-262 regular expressions (JSON Schema 2020-12 §6.3.3,
//! which OpenAPI 3.1 uses), anchored, since `pattern` is not.
//! The one thing a pattern cannot say is a port range's order
//! (`FIRST <= LAST`): the server refuses `9-8` with 400.

/// An IPv4 address as `Ipv4Addr::from_str` reads it (RFC 791 dotted
/// quad, no leading zeros: std refuses them, they would read as octal
/// elsewhere).
macro_rules! ipv4 {
    () => {
        r"((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
    };
}

/// An IPv6 address as `Ipv6Addr::from_str` reads it (RFC 4291 §2.2: eight
/// groups of 1–4 hex digits, one `::` for one or more zero groups, and
/// the last two groups optionally as an IPv4 address).
macro_rules! ipv6 {
    () => {
        concat!(
            "(",
            "([0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
            "|([0-9A-Fa-f]{1,4}:){1,7}:",
            "|([0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}",
            "|([0-9A-Fa-f]{1,4}:){1,5}(:[0-9A-Fa-f]{1,4}){1,2}",
            "|([0-9A-Fa-f]{1,4}:){1,4}(:[0-9A-Fa-f]{1,4}){1,3}",
            "|([0-9A-Fa-f]{1,4}:){1,3}(:[0-9A-Fa-f]{1,4}){1,4}",
            "|([0-9A-Fa-f]{1,4}:){1,2}(:[0-9A-Fa-f]{1,4}){1,5}",
            "|[0-9A-Fa-f]{1,4}:(:[0-9A-Fa-f]{1,4}){1,6}",
            "|:((:[0-9A-Fa-f]{1,4}){1,7}|:)",
            "|([0-9A-Fa-f]{1,4}:){6}",
            ipv4!(),
            "|::([0-9A-Fa-f]{1,4}:){0,5}",
            ipv4!(),
            "|([0-9A-Fa-f]{1,4}:){1}:([0-9A-Fa-f]{1,4}:){0,4}",
            ipv4!(),
            "|([0-9A-Fa-f]{1,4}:){2}:([0-9A-Fa-f]{1,4}:){0,3}",
            ipv4!(),
            "|([0-9A-Fa-f]{1,4}:){3}:([0-9A-Fa-f]{1,4}:){0,2}",
            ipv4!(),
            "|([0-9A-Fa-f]{1,4}:){4}:([0-9A-Fa-f]{1,4}:){0,1}",
            ipv4!(),
            "|([0-9A-Fa-f]{1,4}:){5}:",
            ipv4!(),
            ")"
        )
    };
}

/// A port, 0–65535, as std's socket address parser reads it (which
/// takes leading zeros).
macro_rules! port {
    () => {
        r"0*([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
    };
}

/// A u32 (an IPv6 scope id), 0–4294967295, leading zeros allowed as
/// std's parser allows them.
macro_rules! u32_decimal {
    () => {
        concat!(
            "0*([0-9]{1,9}|[1-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}",
            "|4294[0-8][0-9]{5}|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}",
            "|42949672[0-8][0-9]|429496729[0-5])"
        )
    };
}

/// `IpAddr`: an IPv4 or IPv6 address.
pub const IP_ADDR: &str = concat!("^(", ipv4!(), "|", ipv6!(), ")$");

/// `IpNet`: an address and a prefix length (`100.64.0.0/24`,
/// `fd00::/64`); the address may have host bits set. What
/// [`parse_ip_net`] reads (request bodies) and `IpNet`'s `Display` writes.
pub const IP_NET: &str = concat!(
    "^(",
    ipv4!(),
    "/(3[0-2]|[12]?[0-9])|",
    ipv6!(),
    "/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))$"
);

/// `SocketAddr`: `192.0.2.1:51820` or `[2001:db8::1]:51820` (with an
/// optional numeric scope, `[fe80::1%2]:51820`).
pub const SOCKET_ADDR: &str = concat!(
    "^(",
    ipv4!(),
    ":",
    port!(),
    r"|\[",
    ipv6!(),
    "(%",
    u32_decimal!(),
    r")?\]:",
    port!(),
    ")$"
);

/// A WireGuard public key: 32 bytes in standard base64, 44 characters
/// with one `=`, the unused low bits of the last character zero — exactly
/// as strict as wg(8) ([`crate::key`]).
pub const PUBLIC_KEY: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

/// A node, network, group or relay name: a DNS label of letters, digits,
/// `-` and `_`, 1–63 characters, not starting with `-`.
pub const NAME: &str = "^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$";

/// A policy selector: `*`, `node:NAME` or `group:NAME` (these names may
/// also hold `.`, [`crate::netmap::policy`]).
pub const SELECTOR: &str = r"^(\*|(node|group):[A-Za-z0-9_.-]{1,63})$";

/// A destination port range: `PORT` or `FIRST-LAST`, 1–65535, without
/// leading zeros.
pub const PORT_RANGE: &str = concat!(
    "^",
    "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])",
    "(-([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    "$"
);

/// A relay's WebSocket URL: `ws://` or `wss://` and at least one more
/// printable ASCII character (no spaces), at most 2048 in all.
pub const WS_URL: &str = "^wss?://[!-~]+$";
pub const WS_URL_MAX: usize = 2048;

/// An IP prefix as the API reads it: std's address parser (not ipnet's,
/// which also takes `010.0.0.0/8` and a `::` that stands for no group),
/// `/`, and a length without leading zeros.
pub fn parse_ip_net(text: &str) -> Option<ipnet::IpNet> {
    let (addr, len) = text.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let canonical = !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && (len == "0" || !len.starts_with('0'));
    if !canonical || len.len() > 3 {
        return None;
    }
    ipnet::IpNet::new(addr, len.parse().ok()?).ok()
}

/// `#[serde(deserialize_with)]` for an `IpNet` in a request body.
pub fn deserialize_ip_net<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<ipnet::IpNet, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    parse_ip_net(&text).ok_or_else(|| {
        serde::de::Error::custom(format!("{text:?} is not an IP prefix (ADDRESS/LENGTH)"))
    })
}

#[cfg(feature = "openapi")]
pub use self::openapi::{IpAddrText, IpNetText, NameText, SocketAddrText, WsUrlText};

#[cfg(feature = "openapi")]
mod openapi {
    use std::borrow::Cow;

    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::{PartialSchema, ToSchema};

    fn text(pattern: &str, description: &str, example: &str) -> RefOr<Schema> {
        let max_length = (pattern == super::WS_URL).then_some(super::WS_URL_MAX);
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .max_length(max_length)
            .description(Some(description))
            .examples([serde_json::Value::from(example)])
            .into()
    }

    /// A schema-only stand-in: `#[schema(value_type = …)]` on fields of
    /// types from other crates (std's addresses, ipnet) or of plain
    /// `String`s that hold names.
    macro_rules! text_schema {
        ($(#[$doc:meta])* $ty:ident, $name:literal, $pattern:expr, $desc:literal, $example:literal) => {
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $ty;
            impl PartialSchema for $ty {
                fn schema() -> RefOr<Schema> {
                    text($pattern, $desc, $example)
                }
            }
            impl ToSchema for $ty {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed($name)
                }
            }
        };
    }

    text_schema!(
        /// `std::net::IpAddr`.
        IpAddrText,
        "IpAddr",
        super::IP_ADDR,
        "An IPv4 or IPv6 address.",
        "100.64.0.1"
    );
    text_schema!(
        /// `ipnet::IpNet`.
        IpNetText,
        "IpNet",
        super::IP_NET,
        "An IP prefix: address/length.",
        "100.64.0.0/24"
    );
    text_schema!(
        /// `std::net::SocketAddr`.
        SocketAddrText,
        "SocketAddr",
        super::SOCKET_ADDR,
        "An IP address and UDP port; IPv6 in brackets.",
        "192.0.2.1:51820"
    );
    text_schema!(
        /// A name (a DNS label).
        NameText,
        "Name",
        super::NAME,
        "A DNS label: letters, digits, '-' and '_', 1-63 characters, not starting with '-'.",
        "lab"
    );

    text_schema!(
        /// A relay's WebSocket URL.
        WsUrlText,
        "WsUrl",
        super::WS_URL,
        "A ws:// or wss:// URL, at most 2048 characters.",
        "wss://relay.example/relay"
    );

    impl PartialSchema for crate::key::PublicKey {
        fn schema() -> RefOr<Schema> {
            text(
                super::PUBLIC_KEY,
                "A WireGuard public key: 32 bytes in base64 (as wg(8) prints it).",
                "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
            )
        }
    }
    impl ToSchema for crate::key::PublicKey {}

    impl PartialSchema for crate::netmap::policy::Selector {
        fn schema() -> RefOr<Schema> {
            text(
                super::SELECTOR,
                "Which nodes a rule names: \"*\", \"node:NAME\" or \"group:NAME\".",
                "group:servers",
            )
        }
    }
    impl ToSchema for crate::netmap::policy::Selector {}

    impl PartialSchema for crate::netmap::policy::PortRange {
        fn schema() -> RefOr<Schema> {
            text(
                super::PORT_RANGE,
                "Destination ports: PORT or FIRST-LAST (FIRST <= LAST), 1-65535.",
                "8000-8099",
            )
        }
    }
    impl ToSchema for crate::netmap::policy::PortRange {}
}

#[cfg(test)]
mod tests;
