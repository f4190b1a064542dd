//! The filter on hand-built packets and a fake clock.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use wgmesh_core::key::PublicKey;
use wgmesh_core::netmap::{MapPeer, PortRange, Route, SelfNode};

use super::*;

const ME: &str = "10.0.0.2";
const LAB: &str = "10.0.0.3";
const ME6: &str = "fd00::2";
const LAB6: &str = "fd00::3";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn rule(action: Action, proto: Proto, port: Option<u16>) -> FilterRule {
    FilterRule {
        action,
        proto,
        ports: port.map(|p| PortRange::new(p, p).expect("valid port")),
    }
}

/// IPv4 with Identification `id` and the given flags/fragment offset word.
fn ipv4_frag(src: &str, dst: &str, proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let src: Ipv4Addr = src.parse().expect("v4");
    let dst: Ipv4Addr = dst.parse().expect("v4");
    let total = u16::try_from(20 + payload.len()).expect("small");
    let mut p = vec![0x45, 0];
    p.extend(total.to_be_bytes());
    p.extend(id.to_be_bytes());
    p.extend(frag.to_be_bytes());
    p.extend([64, proto, 0, 0]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(payload);
    p
}

fn ipv4(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_frag(src, dst, proto, 0, 0x4000, payload)
}

/// IPv6 whose `headers` (next-header, bytes) come before the payload.
fn ipv6_ext(src: &str, dst: &str, chain: &[(u8, Vec<u8>)], proto: u8, payload: &[u8]) -> Vec<u8> {
    let src: Ipv6Addr = src.parse().expect("v6");
    let dst: Ipv6Addr = dst.parse().expect("v6");
    let mut body = Vec::new();
    let first = chain.first().map_or(proto, |(n, _)| *n);
    for (i, (_, h)) in chain.iter().enumerate() {
        let next = chain.get(i + 1).map_or(proto, |(n, _)| *n);
        let mut h = h.clone();
        h[0] = next;
        body.extend(h);
    }
    body.extend(payload);
    let len = u16::try_from(body.len()).expect("small");
    let mut p = vec![0x60, 0, 0, 0];
    p.extend(len.to_be_bytes());
    p.extend([first, 64]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(body);
    p
}

fn ipv6(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv6_ext(src, dst, &[], proto, payload)
}

/// An 8-octet options header (Hop-by-Hop or Destination Options): PadN.
fn options_header() -> Vec<u8> {
    vec![0, 0, 1, 4, 0, 0, 0, 0]
}

/// An IPv6 Fragment header.
fn fragment_header(offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![0, 0];
    h.extend((offset_units << 3 | u16::from(more)).to_be_bytes());
    h.extend(id.to_be_bytes());
    h
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(sport.to_be_bytes());
    t.extend(dport.to_be_bytes());
    t.extend([0; 8]);
    t.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend(sport.to_be_bytes());
    u.extend(dport.to_be_bytes());
    u.extend([0, 12, 0, 0]);
    u.extend(b"data");
    u
}

fn echo(kind: u8, id: u16) -> Vec<u8> {
    let mut e = vec![kind, 0, 0, 0];
    e.extend(id.to_be_bytes());
    e.extend([0, 1]);
    e.extend(b"ping");
    e
}

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const ECHO6_REQUEST: u8 = 128;
const ECHO6_REPLY: u8 = 129;

/// This node (ME, ME6) knows LAB (LAB, LAB6) with these rules.
fn filter(default: Action, lab_rules: Vec<FilterRule>) -> PacketFilter {
    let mut f = PacketFilter::new(vec![ip(ME), ip(ME6)], default);
    f.set_sources([(ip(LAB), lab_rules.clone()), (ip(LAB6), lab_rules)]);
    f
}

fn denied_by_policy(proto: u8, port: Option<u16>) -> Verdict {
    Verdict::Deny(DenyReason::Policy { proto, port })
}

#[test]
fn acl_denies_ssh_from_lab_while_ping_and_http_pass() {
    // The case: a rule forbids lab → lax TCP/22; ping still works.
    let mut f = filter(
        Action::Allow,
        vec![rule(Action::Deny, Proto::Tcp, Some(22))],
    );
    let now = Instant::now();
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(40000, 22, SYN))),
        denied_by_policy(6, Some(22))
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 1, &echo(ECHO_REQUEST, 1))),
        Verdict::Allow
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(40000, 80, SYN))),
        Verdict::Allow
    );
    // UDP/22 is not TCP/22.
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 17, &udp(40000, 22))),
        Verdict::Allow
    );
    let c = f.counters();
    assert_eq!((c.denied_by_policy, c.allowed_by_policy), (1, 3));
    assert_eq!(
        denied_by_policy(6, Some(22)),
        Verdict::Deny(DenyReason::Policy {
            proto: 6,
            port: Some(22)
        })
    );
    assert_eq!(
        DenyReason::Policy {
            proto: 6,
            port: Some(22)
        }
        .to_string(),
        "policy denies tcp/22"
    );
}

#[test]
fn default_deny_lets_only_the_allowed_through() {
    let mut f = filter(
        Action::Deny,
        vec![rule(Action::Allow, Proto::Tcp, Some(80))],
    );
    let now = Instant::now();
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(40000, 80, SYN))),
        Verdict::Allow
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(40000, 22, SYN))),
        denied_by_policy(6, Some(22))
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 17, &udp(40000, 80))),
        denied_by_policy(17, Some(80))
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 1, &echo(ECHO_REQUEST, 1))),
        denied_by_policy(1, None)
    );
    // Another protocol (GRE) has no ports: only the default applies.
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 47, &[0; 8])),
        denied_by_policy(47, None)
    );
}

#[test]
fn replies_to_our_flows_pass_under_default_deny() {
    let mut f = filter(Action::Deny, Vec::new());
    let now = Instant::now();
    // TCP: we connect to LAB:443.
    f.outbound(now, &ipv4(ME, LAB, 6, &tcp(40000, 443, SYN)));
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(443, 40000, SYN | ACK))),
        Verdict::Allow
    );
    // Not our port, not their port, or the wrong protocol: not a reply.
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(443, 40001, ACK))),
        denied_by_policy(6, Some(40001))
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(444, 40000, ACK))),
        denied_by_policy(6, Some(40000))
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 17, &udp(443, 40000))),
        denied_by_policy(17, Some(40000))
    );
    // UDP.
    f.outbound(now, &ipv4(ME, LAB, 17, &udp(5353, 53)));
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 17, &udp(53, 5353))),
        Verdict::Allow
    );
    // ICMP echo: the reply with our identifier passes; a request with it
    // is no reply.
    f.outbound(now, &ipv4(ME, LAB, 1, &echo(ECHO_REQUEST, 7)));
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 1, &echo(ECHO_REPLY, 7))),
        Verdict::Allow
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 1, &echo(ECHO_REPLY, 8))),
        denied_by_policy(1, None)
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 1, &echo(ECHO_REQUEST, 7))),
        denied_by_policy(1, None)
    );
    assert_eq!(f.counters().allowed_established, 3);
    assert_eq!(f.flow_count(), 3);
}

#[test]
fn a_reply_must_come_from_the_flows_peer() {
    // Unknown to the map, then known but denied: neither gets in through
    // a flow opened to LAB.
    let mut f = filter(Action::Deny, Vec::new());
    let other = "10.0.0.4";
    f.set_sources([(ip(LAB), Vec::new()), (ip(other), Vec::new())]);
    let now = Instant::now();
    f.outbound(now, &ipv4(ME, LAB, 17, &udp(5000, 6000)));
    assert_eq!(
        f.inbound(now, &ipv4(other, ME, 17, &udp(6000, 5000))),
        denied_by_policy(17, Some(5000))
    );
    assert_eq!(
        f.inbound(now, &ipv4("10.0.0.5", ME, 17, &udp(6000, 5000))),
        Verdict::Deny(DenyReason::UnknownSource)
    );
}

#[test]
fn flows_expire_on_a_fake_clock() {
    let mut f = filter(Action::Deny, Vec::new());
    let t0 = Instant::now();
    let udp_reply = ipv4(LAB, ME, 17, &udp(53, 5353));
    f.outbound(t0, &ipv4(ME, LAB, 17, &udp(5353, 53)));
    // Replies keep the flow alive…
    let t1 = t0 + UDP_TIMEOUT - Duration::from_secs(1);
    assert_eq!(f.inbound(t1, &udp_reply), Verdict::Allow);
    let t2 = t1 + UDP_TIMEOUT - Duration::from_secs(1);
    assert_eq!(f.inbound(t2, &udp_reply), Verdict::Allow);
    // …and silence ends it.
    assert_eq!(
        f.inbound(t2 + UDP_TIMEOUT, &udp_reply),
        denied_by_policy(17, Some(5353))
    );
    assert_eq!(f.flow_count(), 0, "the expired flow was dropped");

    // ICMP: 30 s.
    f.outbound(t0, &ipv4(ME, LAB, 1, &echo(ECHO_REQUEST, 9)));
    let reply = ipv4(LAB, ME, 1, &echo(ECHO_REPLY, 9));
    assert_eq!(
        f.inbound(t0 + ICMP_TIMEOUT, &reply),
        denied_by_policy(1, None)
    );

    // TCP: 5 minutes open, 10 s once a FIN or RST was seen.
    let tcp_reply = ipv4(LAB, ME, 6, &tcp(22, 40000, ACK));
    f.outbound(t0, &ipv4(ME, LAB, 6, &tcp(40000, 22, SYN)));
    let t3 = t0 + TCP_TIMEOUT - Duration::from_secs(1);
    assert_eq!(f.inbound(t3, &tcp_reply), Verdict::Allow);
    f.outbound(t3, &ipv4(ME, LAB, 6, &tcp(40000, 22, ACK | TCP_FIN)));
    assert_eq!(
        f.inbound(
            t3 + TCP_CLOSING_TIMEOUT - Duration::from_secs(1),
            &tcp_reply
        ),
        Verdict::Allow
    );
    let t4 = t3 + TCP_CLOSING_TIMEOUT - Duration::from_secs(1);
    assert_eq!(
        f.inbound(t4 + TCP_CLOSING_TIMEOUT, &tcp_reply),
        denied_by_policy(6, Some(40000))
    );
    // An RST from the peer shortens it too.
    f.outbound(t0, &ipv4(ME, LAB, 6, &tcp(40001, 22, SYN)));
    let rst = ipv4(LAB, ME, 6, &tcp(22, 40001, TCP_RST));
    assert_eq!(f.inbound(t0, &rst), Verdict::Allow);
    assert_eq!(
        f.inbound(t0 + TCP_CLOSING_TIMEOUT, &rst),
        denied_by_policy(6, Some(40001))
    );
}

#[test]
fn forwarded_packets_pass_and_are_not_our_flows() {
    // A hub: packets between two other nodes are theirs to filter.
    let mut f = filter(Action::Deny, Vec::new());
    let now = Instant::now();
    assert_eq!(
        f.inbound(now, &ipv4("10.0.0.9", "10.0.0.8", 6, &tcp(1, 22, SYN))),
        Verdict::Allow
    );
    assert_eq!(f.counters().allowed_forwarded, 1);
    // Even a packet whose transport header is cut short.
    assert_eq!(
        f.inbound(now, &ipv4("10.0.0.9", "10.0.0.8", 6, &[0; 3])),
        Verdict::Allow
    );
    // The hub sending on another node's behalf records no flow.
    f.outbound(now, &ipv4("10.0.0.9", LAB, 17, &udp(5000, 6000)));
    assert_eq!(f.flow_count(), 0);
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 17, &udp(6000, 5000))),
        denied_by_policy(17, Some(5000))
    );
}

#[test]
fn multicast_and_broadcast_count_as_ours() {
    let mut f = filter(Action::Deny, Vec::new());
    let now = Instant::now();
    for dst in ["224.0.0.251", "255.255.255.255"] {
        assert_eq!(
            f.inbound(now, &ipv4(LAB, dst, 17, &udp(5353, 5353))),
            denied_by_policy(17, Some(5353))
        );
    }
    assert_eq!(
        f.inbound(now, &ipv6(LAB6, "ff02::fb", 17, &udp(5353, 5353))),
        denied_by_policy(17, Some(5353))
    );
}

#[test]
fn unknown_sources_are_denied() {
    let mut f = filter(Action::Allow, Vec::new());
    let now = Instant::now();
    assert_eq!(
        f.inbound(now, &ipv4("10.0.0.77", ME, 1, &echo(ECHO_REQUEST, 1))),
        Verdict::Deny(DenyReason::UnknownSource)
    );
    // A filter that was never given its sources knows nobody.
    let mut empty = PacketFilter::new(vec![ip(ME)], Action::Allow);
    assert_eq!(
        empty.inbound(now, &ipv4(LAB, ME, 1, &echo(ECHO_REQUEST, 1))),
        Verdict::Deny(DenyReason::UnknownSource)
    );
    assert_eq!(f.counters().denied_unknown_source, 1);
}

#[test]
fn replacing_the_rules_keeps_the_flows() {
    let mut f = filter(Action::Allow, Vec::new());
    let now = Instant::now();
    f.outbound(now, &ipv4(ME, LAB, 6, &tcp(40000, 22, SYN)));
    f.set_sources([(ip(LAB), vec![rule(Action::Deny, Proto::Any, None)])]);
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(22, 40000, ACK))),
        Verdict::Allow
    );
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 6, &tcp(22, 40001, ACK))),
        denied_by_policy(6, Some(40001))
    );
    // A source left out is unknown from now on.
    assert_eq!(
        f.inbound(now, &ipv6(LAB6, ME6, 58, &echo(ECHO6_REQUEST, 1))),
        Verdict::Deny(DenyReason::UnknownSource)
    );
}

#[test]
fn ipv6_extension_headers_are_walked_to_the_transport() {
    let mut f = filter(
        Action::Allow,
        vec![rule(Action::Deny, Proto::Tcp, Some(22))],
    );
    let now = Instant::now();
    let chain = [
        (0, options_header()),
        (60, options_header()),
        (43, vec![0, 0, 0, 0, 0, 0, 0, 0]),
    ];
    assert_eq!(
        f.inbound(now, &ipv6_ext(LAB6, ME6, &chain, 6, &tcp(40000, 22, SYN))),
        denied_by_policy(6, Some(22))
    );
    assert_eq!(
        f.inbound(now, &ipv6_ext(LAB6, ME6, &chain, 6, &tcp(40000, 80, SYN))),
        Verdict::Allow
    );
    assert_eq!(
        f.inbound(now, &ipv6(LAB6, ME6, 58, &echo(ECHO6_REQUEST, 1))),
        Verdict::Allow
    );
    // A header chain longer than the packet.
    let mut cut = ipv6_ext(LAB6, ME6, &chain, 6, &[]);
    cut.truncate(cut.len() - 4);
    cut[5] -= 4;
    assert_eq!(f.inbound(now, &cut), Verdict::Deny(DenyReason::Malformed));
}

#[test]
fn ipv6_replies_under_default_deny() {
    let mut f = filter(Action::Deny, Vec::new());
    let now = Instant::now();
    f.outbound(now, &ipv6(ME6, LAB6, 58, &echo(ECHO6_REQUEST, 3)));
    assert_eq!(
        f.inbound(now, &ipv6(LAB6, ME6, 58, &echo(ECHO6_REPLY, 3))),
        Verdict::Allow
    );
    f.outbound(
        now,
        &ipv6_ext(
            ME6,
            LAB6,
            &[(60, options_header())],
            6,
            &tcp(40000, 443, SYN),
        ),
    );
    assert_eq!(
        f.inbound(now, &ipv6(LAB6, ME6, 6, &tcp(443, 40000, SYN | ACK))),
        Verdict::Allow
    );
}

#[test]
fn later_fragments_have_no_ports() {
    // Only TCP/80 is allowed: a later fragment on its own cannot show it
    // is for port 80, so port rules never match it…
    let mut f = filter(
        Action::Deny,
        vec![rule(Action::Allow, Proto::Tcp, Some(80))],
    );
    let now = Instant::now();
    let later4 = ipv4_frag(LAB, ME, 6, 99, 185, &[0; 16]);
    assert_eq!(f.inbound(now, &later4), denied_by_policy(6, None));
    let later6 = ipv6_ext(
        LAB6,
        ME6,
        &[(44, fragment_header(185, false, 99))],
        6,
        &[0; 16],
    );
    assert_eq!(f.inbound(now, &later6), denied_by_policy(6, None));
    // …but it follows a first fragment that was let in.
    let first4 = ipv4_frag(LAB, ME, 6, 99, 0x2000, &tcp(40000, 80, ACK));
    assert_eq!(f.inbound(now, &first4), Verdict::Allow);
    assert_eq!(f.inbound(now, &later4), Verdict::Allow);
    let first6 = ipv6_ext(
        LAB6,
        ME6,
        &[(44, fragment_header(0, true, 99))],
        6,
        &tcp(40000, 80, ACK),
    );
    assert_eq!(f.inbound(now, &first6), Verdict::Allow);
    assert_eq!(f.inbound(now, &later6), Verdict::Allow);
    // Not for long, and not another train's.
    assert_eq!(
        f.inbound(now + FRAGMENT_TIMEOUT, &later4),
        denied_by_policy(6, None)
    );
    let other_train = ipv4_frag(LAB, ME, 6, 100, 185, &[0; 16]);
    assert_eq!(f.inbound(now, &other_train), denied_by_policy(6, None));
    // A first fragment too short for its TCP header is refused (RFC 1858).
    let tiny = ipv4_frag(LAB, ME, 6, 101, 0x2000, &tcp(40000, 80, ACK)[..8]);
    assert_eq!(f.inbound(now, &tiny), Verdict::Deny(DenyReason::Malformed));
    // A rule without ports does match it.
    let mut any_tcp = filter(Action::Deny, vec![rule(Action::Allow, Proto::Tcp, None)]);
    assert_eq!(any_tcp.inbound(now, &later4), Verdict::Allow);
}

#[test]
fn icmp_errors_about_our_flows_pass() {
    let mut f = filter(Action::Deny, Vec::new());
    let now = Instant::now();
    let sent = ipv4(ME, LAB, 17, &udp(5000, 6000));
    f.outbound(now, &sent);
    // Port unreachable, quoting the IP header and 8 bytes (RFC 792).
    let mut unreachable = vec![3, 3, 0, 0, 0, 0, 0, 0];
    unreachable.extend(&sent[..28]);
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 1, &unreachable)),
        Verdict::Allow
    );
    // An error quoting a packet of no flow of ours is judged by the rules.
    let mut stray = vec![3, 3, 0, 0, 0, 0, 0, 0];
    stray.extend(&ipv4(ME, LAB, 17, &udp(5001, 6000))[..28]);
    assert_eq!(
        f.inbound(now, &ipv4(LAB, ME, 1, &stray)),
        denied_by_policy(1, None)
    );
    // ICMPv6 Packet Too Big about a TCP flow of ours (RFC 4443 §3.2).
    let sent6 = ipv6(ME6, LAB6, 6, &tcp(40000, 443, ACK));
    f.outbound(now, &sent6);
    let mut too_big = vec![2, 0, 0, 0, 0, 0, 5, 0];
    too_big.extend(&sent6);
    assert_eq!(
        f.inbound(now, &ipv6(LAB6, ME6, 58, &too_big)),
        Verdict::Allow
    );
}

#[test]
fn malformed_packets_are_denied_and_counted() {
    let mut f = filter(Action::Allow, Vec::new());
    let now = Instant::now();
    let cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x45],
        vec![0x12; 40],
        // TCP header cut short.
        ipv4(LAB, ME, 6, &[0; 10]),
        // UDP header cut short.
        ipv6(LAB6, ME6, 17, &[0; 4]),
        // ICMP cut short.
        ipv4(LAB, ME, 1, &[8, 0]),
        // Total length beyond the buffer.
        {
            let mut p = ipv4(LAB, ME, 17, &udp(1, 2));
            p[3] += 1;
            p
        },
        // Header length below 20.
        {
            let mut p = ipv4(LAB, ME, 17, &udp(1, 2));
            p[0] = 0x44;
            p
        },
    ];
    for p in &cases {
        assert_eq!(
            f.inbound(now, p),
            Verdict::Deny(DenyReason::Malformed),
            "{p:?}"
        );
        f.outbound(now, p);
    }
    assert_eq!(f.counters().denied_malformed, cases.len() as u64);
    assert_eq!(f.flow_count(), 0);
}

#[test]
fn the_flow_table_is_bounded() {
    let mut f = filter(Action::Deny, Vec::new());
    f.set_flow_capacity(64);
    let t0 = Instant::now();
    for port in 0..1000u16 {
        let at = t0 + Duration::from_millis(u64::from(port));
        f.outbound(at, &ipv4(ME, LAB, 17, &udp(10_000 + port, 53)));
        assert!(f.flow_count() <= 64);
    }
    assert!(f.counters().flows_evicted > 0);
    // The newest flows survive; the oldest went.
    let at = t0 + Duration::from_secs(1);
    assert_eq!(
        f.inbound(at, &ipv4(LAB, ME, 17, &udp(53, 10_999))),
        Verdict::Allow
    );
    assert_eq!(
        f.inbound(at, &ipv4(LAB, ME, 17, &udp(53, 10_000))),
        denied_by_policy(17, Some(10_000))
    );
    // Expired flows make room before live ones are evicted.
    let evicted = f.counters().flows_evicted;
    let later = at + UDP_TIMEOUT * 2;
    for port in 0..64u16 {
        f.outbound(later, &ipv4(ME, LAB, 17, &udp(20_000 + port, 53)));
    }
    assert_eq!(f.counters().flows_evicted, evicted);
}

#[test]
fn built_from_a_network_map() {
    let key = |b: u8| PublicKey::from_bytes([b; 32]);
    let peer = |name: &str, address: &str, inbound: Vec<FilterRule>, b: u8| MapPeer {
        name: name.to_owned(),
        public_key: key(b),
        address: ip(address),
        allowed_ips: Vec::new(),
        endpoints: Vec::new(),
        route: Route::Direct { keepalive: None },
        nat: None,
        inbound,
    };
    let mut map = NetworkMap {
        network: "lab".to_owned(),
        version: 1,
        overlay: "10.0.0.0/24".parse().expect("prefix"),
        node: SelfNode {
            name: "lax".to_owned(),
            public_key: key(2),
            address: "10.0.0.2/24".parse().expect("prefix"),
            hub: false,
        },
        peers: vec![peer(
            "lab",
            LAB,
            vec![rule(Action::Deny, Proto::Tcp, Some(22))],
            3,
        )],
        default_action: Action::Allow,
        relays: Vec::new(),
    };
    let now = Instant::now();
    let mut f = PacketFilter::from_map(&map);
    let ssh = ipv4(LAB, ME, 6, &tcp(40000, 22, SYN));
    assert_eq!(f.inbound(now, &ssh), denied_by_policy(6, Some(22)));
    map.peers[0].inbound.clear();
    map.peers.push(peer("new", "10.0.0.5", Vec::new(), 5));
    f.apply_map(&map);
    assert_eq!(f.inbound(now, &ssh), Verdict::Allow);
    assert_eq!(
        f.inbound(now, &ipv4("10.0.0.5", ME, 6, &tcp(1, 2, SYN))),
        Verdict::Allow
    );
}

/// A valid packet of each kind, to mutate.
fn seeds() -> Vec<Vec<u8>> {
    vec![
        ipv4(LAB, ME, 6, &tcp(40000, 22, SYN)),
        ipv4(LAB, ME, 1, &{
            let mut e = vec![3, 3, 0, 0, 0, 0, 0, 0];
            e.extend(&ipv4(ME, LAB, 17, &udp(5000, 6000))[..28]);
            e
        }),
        ipv6_ext(
            LAB6,
            ME6,
            &[(0, options_header()), (44, fragment_header(0, true, 1))],
            17,
            &udp(1, 2),
        ),
        ipv6(LAB6, ME6, 58, &{
            let mut e = vec![1, 0, 0, 0, 0, 0, 0, 0];
            e.extend(ipv6(ME6, LAB6, 58, &echo(ECHO6_REQUEST, 1)));
            e
        }),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut f = filter(Action::Deny, vec![rule(Action::Allow, Proto::Tcp, Some(80))]);
        let now = Instant::now();
        f.outbound(now, &bytes);
        let _ = f.inbound(now, &bytes);
    }

    #[test]
    fn mutated_packets_never_panic(
        seed in 0usize..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut p = seeds()[seed].clone();
        for (at, b) in edits {
            let at = at % p.len();
            p[at] = b;
        }
        p.truncate(cut % (p.len() + 1));
        let mut f = filter(Action::Deny, Vec::new());
        let now = Instant::now();
        f.outbound(now, &p);
        let _ = f.inbound(now, &p);
    }
}
