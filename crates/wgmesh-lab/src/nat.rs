//! NAT routers built with nftables, one per RFC 4787 behaviour.
//!
//! RFC 4787 separates how a NAT *maps* an inside endpoint (address, port) to
//! an outside one (§4.1) from how it *filters* unsolicited inbound packets
//! (§5), and asks for hairpinning (§6). Linux has none of these as a switch:
//! masquerade plus conntrack gives "port-restricted cone" on a good day, and
//! nothing at all keeps a mapping once conntrack forgets it. So each router
//! keeps its own NAT state in nftables dynamic maps, written by every
//! outbound packet after translation:
//!
//! * `mappings`: outside port → inside endpoint. The inbound rules (filtering
//!   and hairpinning) DNAT through it.
//! * `endpoints`: inside endpoint → outside endpoint, the mapping table of
//!   the endpoint-independent kinds. A new conntrack from an inside endpoint
//!   that already has a mapping is SNATed to exactly that mapping, whatever
//!   its destination (§4.1, REQ-1).
//! * `contacted`: (outside port, remote address) pairs, the state of
//!   address-dependent filtering (§5).
//!
//! Entries live 120 s, the shortest UDP mapping timer §4.3 REQ-5 allows,
//! and only outbound packets refresh them (REQ-6). Conntrack keeps its own
//! (shorter, sysctl-driven) timers; it still decides the address-and-port-
//! dependent filtering of [`NatKind::PortRestricted`] and
//! [`NatKind::Symmetric`], which is exactly "only replies to what went out".
//! To make a router forget everything at once: `conntrack -F` and
//! `nft flush map ip wgl_nat mappings` (and `endpoints`, `contacted`).
//!
//! What each kind adds:
//!
//! | kind              | mapping (§4.1)          | filtering (§5)          |
//! |-------------------|-------------------------|-------------------------|
//! | FullCone          | endpoint-independent    | endpoint-independent    |
//! | AddressRestricted | endpoint-independent    | address-dependent       |
//! | PortRestricted    | endpoint-independent    | address+port-dependent  |
//! | Symmetric         | address+port-dependent  | address+port-dependent  |
//! | UdpBlocked        | no UDP at all; TCP only to port 443, NATed        |

use std::fmt::Write as _;
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

    /// Whether one inside endpoint keeps one outside endpoint for every
    /// destination (RFC 4787 §4.1 "endpoint-independent mapping").
    pub fn endpoint_independent_mapping(self) -> bool {
        matches!(
            self,
            NatKind::FullCone | NatKind::AddressRestricted | NatKind::PortRestricted
        )
    }

    /// Whether UDP crosses this router at all.
    pub fn passes_udp(self) -> bool {
        self != NatKind::UdpBlocked
    }
}

/// Whether hosts on the LAN can reach each other through the router's
/// public address (RFC 4787 §6, REQ-9). [`NatKind::UdpBlocked`] has no UDP
/// mappings, so there it changes nothing.
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

/// How long a mapping (and address-dependent filter state) outlives the
/// last outbound packet: RFC 4787 §4.3 REQ-5's minimum of two minutes.
pub const MAPPING_TIMEOUT_SECS: u32 = 120;

/// The nftables table every router's rules live in.
pub const TABLE: &str = "wgl_nat";

/// The router's whole nftables ruleset, for `nft -f -` in its namespace.
pub fn ruleset(p: &RouterParams<'_>) -> String {
    let RouterParams {
        kind,
        hairpin,
        wan_if,
        wan_addr: wan,
        lan_if,
        lan,
    } = *p;
    let hairpin = hairpin == Hairpin::On && kind.passes_udp();
    let eim = kind.endpoint_independent_mapping();
    let timeout = MAPPING_TIMEOUT_SECS;
    let wan_if = format!("\"{wan_if}\"");
    let lan_if = format!("\"{lan_if}\"");

    let mut sets = String::new();
    let mut prerouting = String::new();
    let mut forward = String::new();
    let mut postrouting = String::new();
    let mut record = String::new();
    let dynamic = format!("flags dynamic,timeout; timeout {timeout}s;");

    if kind.passes_udp() {
        // Outside port → inside endpoint: whom an inbound packet to a mapped
        // port is for. Symmetric routers need it only to hairpin.
        let _ = writeln!(
            sets,
            "\tmap mappings {{ type inet_service : ipv4_addr . inet_service; {dynamic} }}"
        );
        // Kept after translation (see the `record` chain's priority), so
        // `udp sport` is the outside port and conntrack's original (or, for
        // inbound-initiated flows, reply) tuple still names the inside
        // endpoint. Router-local traffic has neither NAT status bit.
        let _ = writeln!(
            record,
            "\t\tip saddr {wan} meta l4proto udp ct direction original ct status snat \
             update @mappings {{ udp sport : ct original ip saddr . ct original proto-src }}"
        );
        let _ = writeln!(
            record,
            "\t\tip saddr {wan} meta l4proto udp ct direction reply ct status dnat \
             update @mappings {{ udp sport : ct reply ip saddr . ct reply proto-src }}"
        );
    }
    if eim {
        // Inside endpoint → outside endpoint: RFC 4787 §4.1 REQ-1. Linux
        // would keep the source port only while no other conntrack holds the
        // same outside tuple, and forget it with the conntrack; this map pins
        // the mapping for every destination for as long as it is in use.
        let _ = writeln!(
            sets,
            "\tmap endpoints {{ type ipv4_addr . inet_service : ipv4_addr . inet_service; \
             {dynamic} }}"
        );
        let _ = writeln!(
            record,
            "\t\tip saddr {wan} meta l4proto udp ct direction original ct status snat \
             update @endpoints {{ ct original ip saddr . ct original proto-src : \
             ip saddr . udp sport }}"
        );
        let _ = writeln!(
            record,
            "\t\tip saddr {wan} meta l4proto udp ct direction reply ct status dnat \
             update @endpoints {{ ct reply ip saddr . ct reply proto-src : \
             ip saddr . udp sport }}"
        );
    }

    // Filtering of unsolicited inbound UDP (§5). Replies to what went out
    // are conntrack's (the forward chain's `established`); what is written
    // here lets in *new* flows, by DNATing them to the mapping's owner.
    match kind {
        NatKind::FullCone => {
            // Endpoint-independent filtering: anyone may use a live mapping.
            let _ = writeln!(
                prerouting,
                "\t\tiifname {wan_if} ip daddr {wan} dnat ip to udp dport map @mappings"
            );
        }
        NatKind::AddressRestricted => {
            // Address-dependent filtering: only from addresses the inside
            // endpoint has sent to, from any of their ports.
            let _ = writeln!(
                sets,
                "\tset contacted {{ type inet_service . ipv4_addr; {dynamic} }}"
            );
            let _ = writeln!(
                record,
                "\t\toifname {wan_if} ip saddr {wan} meta l4proto udp \
                 update @contacted {{ udp sport . ip daddr }}"
            );
            let _ = writeln!(
                prerouting,
                "\t\tiifname {wan_if} ip daddr {wan} udp dport . ip saddr @contacted \
                 dnat ip to udp dport map @mappings"
            );
        }
        // Address-and-port-dependent filtering: a new flow from outside is
        // never let in; conntrack lets in the replies.
        NatKind::PortRestricted | NatKind::Symmetric | NatKind::UdpBlocked => {}
    }
    if hairpin {
        // §6: a packet from the LAN to the router's outside address and a
        // mapped port goes to the mapping's owner, whatever the kind's
        // filtering (the RFC defines hairpinning by "an active mapping").
        let _ = writeln!(
            prerouting,
            "\t\tiifname {lan_if} ip daddr {wan} dnat ip to udp dport map @mappings"
        );
    }

    // Source translation (§4.1): towards the internet, and for hairpinned
    // packets back onto the LAN, which REQ-9a wants to carry the sender's
    // outside address and port, not its inside one.
    let mut outs = vec![format!("oifname {wan_if} ip saddr {lan}")];
    if hairpin {
        // No `iifname` here: postrouting has no input interface. A LAN
        // source, a LAN output and a DNAT are only ever a hairpinned flow
        // (flows DNATed in from the WAN have outside sources; LAN-to-LAN
        // traffic that br_netfilter shows us is not DNATed).
        outs.push(format!("oifname {lan_if} ip saddr {lan} ct status dnat"));
    }
    for out in &outs {
        match kind {
            NatKind::FullCone | NatKind::AddressRestricted | NatKind::PortRestricted => {
                // Endpoint-independent mapping: an inside endpoint with a
                // mapping keeps it; a new one keeps its own port (§4.2.1 port
                // preservation) unless another inside endpoint owns that
                // outside port already, which would make one outside port
                // two endpoints' mapping. (`random` draws among ports free
                // in conntrack; one held only by a mapping whose conntrack
                // has expired can, rarely, be drawn and taken over.)
                let _ = writeln!(
                    postrouting,
                    "\t\t{out} snat ip to ip saddr . udp sport map @endpoints"
                );
                let _ = writeln!(
                    postrouting,
                    "\t\t{out} udp sport @mappings snat ip to {wan} random"
                );
                let _ = writeln!(postrouting, "\t\t{out} snat ip to {wan}");
            }
            NatKind::Symmetric => {
                // Address-and-port-dependent mapping: every new flow (a new
                // destination address or port) gets a fresh random port.
                let _ = writeln!(postrouting, "\t\t{out} snat ip to {wan} fully-random");
            }
            NatKind::UdpBlocked => {
                let _ = writeln!(postrouting, "\t\t{out} snat ip to {wan}");
            }
        }
    }

    if kind == NatKind::UdpBlocked {
        // The "UDP blocked" network of classic STUN (RFC 3489 §10.1), where
        // only HTTPS gets out: what TURN over TLS on 443 exists for. Not a
        // NAT behaviour RFC 4787 describes; outbound TCP is still NATed.
        let _ = writeln!(
            forward,
            "\t\tiifname {lan_if} oifname {wan_if} tcp dport 443 accept"
        );
        let _ = writeln!(forward, "\t\tiifname {lan_if} oifname {wan_if} drop");
    }

    format!(
        "table ip {TABLE} {{\n\
         {sets}\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         {prerouting}\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\t# An unsolicited packet to an unmapped port must leave no conntrack\n\
         \t\t# entry behind: its reply tuple would block the SNAT of a later\n\
         \t\t# mapping towards the same remote endpoint (hole punching).\n\
         \t\tiifname {wan_if} meta l4proto udp ct state new drop\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\
         {forward}\
         \t\tiifname {wan_if} ct status dnat accept\n\
         \t\tiifname {wan_if} drop\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         {postrouting}\
         \t}}\n\
         \tchain record {{\n\
         \t\t# After srcnat: sees packets as they leave, translated.\n\
         \t\ttype filter hook postrouting priority srcnat + 1; policy accept;\n\
         {record}\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(kind: NatKind, hairpin: Hairpin) -> String {
        ruleset(&RouterParams {
            kind,
            hairpin,
            wan_if: "wan0",
            wan_addr: Ipv4Addr::new(192, 0, 2, 1),
            lan_if: "lan0",
            lan: "10.1.0.0/24".parse().expect("valid prefix"),
        })
    }

    #[test]
    fn only_the_cones_let_new_flows_in_from_outside() {
        let inbound = |k| {
            rules(k, Hairpin::Off)
                .lines()
                .any(|l| l.contains("iifname \"wan0\"") && l.contains("dnat ip to"))
        };
        assert!(inbound(NatKind::FullCone));
        assert!(inbound(NatKind::AddressRestricted));
        assert!(!inbound(NatKind::PortRestricted));
        assert!(!inbound(NatKind::Symmetric));
        assert!(!inbound(NatKind::UdpBlocked));
    }

    #[test]
    fn hairpin_is_a_lan_side_dnat_and_snat_to_the_wan_address() {
        for kind in NatKind::ALL {
            let on = rules(kind, Hairpin::On);
            let off = rules(kind, Hairpin::Off);
            let lan_dnat = |r: &str| {
                r.lines()
                    .any(|l| l.contains("iifname \"lan0\" ip daddr") && l.contains("dnat ip to"))
            };
            assert_eq!(lan_dnat(&on), kind.passes_udp(), "{kind:?}");
            assert!(!lan_dnat(&off), "{kind:?}");
            assert!(!off.contains("oifname \"lan0\""), "{kind:?}");
            assert_eq!(
                on.contains("oifname \"lan0\""),
                kind.passes_udp(),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn mapping_follows_the_kind() {
        let sym = rules(NatKind::Symmetric, Hairpin::Off);
        assert!(sym.contains("fully-random"));
        assert!(!sym.contains("@endpoints"));
        for kind in [
            NatKind::FullCone,
            NatKind::AddressRestricted,
            NatKind::PortRestricted,
        ] {
            let r = rules(kind, Hairpin::Off);
            assert!(r.contains("snat ip to ip saddr . udp sport map @endpoints"));
            assert!(!r.contains("fully-random"));
        }
        let blocked = rules(NatKind::UdpBlocked, Hairpin::On);
        assert!(blocked.contains("tcp dport 443 accept"));
        assert!(!blocked.contains("@mappings"));
    }
}
