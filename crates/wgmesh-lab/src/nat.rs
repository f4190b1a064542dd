//! NAT routers built with nftables, one per RFC 4787 behaviour.
//!
//! RFC 4787 separates how a NAT *maps* an inside (address, port) to an
//! outside port (§4.1) from how it *filters* unsolicited inbound packets
//! (§5). Linux masquerade keeps the source port and lets in only replies
//! conntrack has seen: endpoint-independent mapping with address-and-port-
//! dependent filtering ("port-restricted cone"). `fully-random` picks a new
//! port for each destination: address-and-port-dependent mapping
//! ("symmetric").

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The NAT behaviours the lab can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatKind {
    /// Endpoint-independent mapping and filtering ("full cone").
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    AddressRestricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted,
    /// Address-and-port-dependent mapping ("symmetric").
    Symmetric,
    /// A firewall that lets only TCP to port 443 out (and no UDP at all).
    UdpBlocked,
}

impl NatKind {
    pub const ALL: [NatKind; 5] = [
        NatKind::FullCone,
        NatKind::AddressRestricted,
        NatKind::PortRestricted,
        NatKind::Symmetric,
        NatKind::UdpBlocked,
    ];
}

/// Whether hosts on the LAN can reach each other through the router's
/// public address (RFC 4787 §6, REQ-9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hairpin {
    On,
    #[default]
    Off,
}

/// Everything a router's ruleset depends on.
#[derive(Debug, Clone)]
pub struct RouterParams<'a> {
    pub kind: NatKind,
    pub hairpin: Hairpin,
    pub wan_if: &'a str,
    pub wan_addr: Ipv4Addr,
    pub lan_if: &'a str,
    pub lan: Ipv4Net,
}

/// The router's whole nftables ruleset, for `nft -f -` in its namespace.
pub fn ruleset(p: &RouterParams<'_>) -> String {
    let RouterParams {
        kind,
        wan_if,
        lan_if,
        lan,
        ..
    } = *p;
    let snat = match kind {
        NatKind::Symmetric => "masquerade fully-random",
        _ => "masquerade",
    };
    let forward_filter = match kind {
        NatKind::UdpBlocked => format!(
            "iifname \"{lan_if}\" oifname \"{wan_if}\" tcp dport 443 accept\n\
             \t\tiifname \"{lan_if}\" oifname \"{wan_if}\" drop\n"
        ),
        _ => String::new(),
    };
    format!(
        "table ip wgl_nat {{\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\
         \t\t{forward_filter}\
         \t\tiifname \"{wan_if}\" ct status dnat accept\n\
         \t\tiifname \"{wan_if}\" drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\toifname \"{wan_if}\" ip saddr {lan} {snat}\n\
         \t}}\n\
         }}\n"
    )
}
