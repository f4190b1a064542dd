//! Every NAT kind of the lab, proved against RFC 4787 with plain UDP sockets
//! (the `wgl-udp` tool) rather than with WireGuard:
//!
//! * mapping (§4.1): one inside socket asks reflectors on two public hosts,
//!   one of them on two ports, what source they see. Endpoint-independent
//!   kinds show one outside endpoint to all three; Symmetric a new port per
//!   destination. A second LAN host then uses the same inside port: it gets
//!   its own outside port, again one for all destinations, and keeps it
//!   after the router's conntrack table is flushed (the mapping is the
//!   NAT's, REQ-1 and REQ-5, not an accident of port preservation).
//! * filtering (§5): after the inside socket has sent to A:8000, unsolicited
//!   datagrams to its outside endpoint come from A:8001 (same address, other
//!   port) and from B:8000 (other address); a last one from A:8000, which
//!   every kind lets in, marks the end, so nothing waits for a timeout.
//! * an unsolicited datagram that comes before the mapping exists leaves no
//!   state that would later push the mapping off its port (hole punching).
//! * hairpinning (§6): a LAN host sends to the outside endpoint of another
//!   host on the same LAN and gets its answer back (on), or does not reach
//!   it (off; a datagram from A, sent after it, marks the end).
//! * UDP blocked: no UDP out at all, TCP only to port 443.
//!
//! Each test builds its own lab, so they run in parallel.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use wgmesh_lab::{Hairpin, Lab, NatKind};

const A: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const WAN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

/// How long anything that should happen may take.
const PATIENCE: Duration = Duration::from_secs(10);

const TOOL: &str = env!("CARGO_BIN_EXE_wgl-udp");

fn ep(addr: Ipv4Addr, port: u16) -> String {
    SocketAddrV4::new(addr, port).to_string()
}

fn any(port: u16) -> String {
    ep(Ipv4Addr::UNSPECIFIED, port)
}

/// Public hosts `a` and `b`, router `r` of `kind` with LAN hosts `x1` and
/// `x2`.
fn world(test: &str, kind: NatKind, hairpin: Hairpin) -> Option<Lab> {
    let mut lab = Lab::for_test(test)?;
    lab.add_public_host("a", A).expect("host a");
    lab.add_public_host("b", B).expect("host b");
    lab.add_router(
        "r",
        WAN,
        "10.1.0.0/24".parse().expect("prefix"),
        kind,
        hairpin,
    )
    .expect("router r");
    lab.add_lan_host("x1", "r").expect("host x1");
    lab.add_lan_host("x2", "r").expect("host x2");
    Some(lab)
}

/// Runs wgl-udp in `host` to completion; its stdout.
fn tool(lab: &Lab, host: &str, args: &[&str]) -> String {
    let mut argv = vec![TOOL];
    argv.extend_from_slice(args);
    match lab.exec(host, &argv) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => panic!("{host}: wgl-udp {args:?}: {e}\n{}", lab.logs()),
    }
}

fn log_of(lab: &mut Lab, label: &str) -> String {
    lab.processes()
        .iter()
        .find(|p| p.label() == label)
        .map(|p| p.log_text())
        .unwrap_or_else(|| panic!("no process {label}"))
}

/// Polls `label`'s log until a line satisfies `pred`; that line.
fn wait_line(lab: &mut Lab, label: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(l) = log_of(lab, label).lines().find(|l| pred(l)) {
            return l.to_owned();
        }
        let exited = lab
            .processes()
            .iter_mut()
            .find(|p| p.label() == label)
            .and_then(|p| p.exited());
        // One more look: the line may have come just before the exit.
        if exited.is_some() || Instant::now() >= deadline {
            if let Some(l) = log_of(lab, label).lines().find(|l| pred(l)) {
                return l.to_owned();
            }
            panic!(
                "{label}: the awaited line never came (exited: {exited:?})\n{}",
                lab.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts wgl-udp in `host` and waits for its `ready`.
fn start(lab: &mut Lab, host: &str, label: &str, args: &[&str]) {
    let mut argv = vec![TOOL];
    argv.extend_from_slice(args);
    lab.spawn(host, label, &argv)
        .unwrap_or_else(|e| panic!("spawn {label}: {e}"));
    wait_line(lab, label, |l| l == "ready");
}

/// Waits until process `label` has ended (a `--once` reflector, whose port
/// is then free again).
fn wait_exit(lab: &mut Lab, label: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let p = lab
            .processes()
            .iter_mut()
            .find(|p| p.label() == label)
            .unwrap_or_else(|| panic!("no process {label}"));
        if p.exited().is_some() {
            return;
        }
        assert!(Instant::now() < deadline, "{label} never exited");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `probe` output: for every destination, the endpoint it saw (None: no answer).
fn probe(
    lab: &Lab,
    host: &str,
    bind: u16,
    to: &[&str],
    timeout_ms: u64,
) -> Vec<Option<SocketAddr>> {
    let mut args = vec!["probe".to_owned(), "--bind".into(), any(bind)];
    for t in to {
        args.extend(["--to".to_owned(), (*t).to_owned()]);
    }
    args.extend(["--timeout-ms".to_owned(), timeout_ms.to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool(lab, host, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), to.len(), "probe output: {out}");
    lines
        .iter()
        .zip(to)
        .map(|(l, t)| {
            let (dst, seen) = l.split_once(' ').expect("`DST SEEN` lines");
            assert_eq!(dst, *t, "probe answers in order");
            (seen != "timeout").then(|| seen.parse().expect("an endpoint"))
        })
        .collect()
}

/// The endpoint in a `mapped ADDR:PORT` or `from ADDR:PORT TEXT` line.
fn endpoint_in(line: &str) -> SocketAddr {
    line.split_whitespace()
        .nth(1)
        .and_then(|e| e.parse().ok())
        .unwrap_or_else(|| panic!("no endpoint in {line:?}"))
}

fn wan_ip(e: SocketAddr) -> bool {
    e.ip() == WAN
}

/// The outside endpoints `host`'s socket on `port` shows to `dests`.
fn mappings(lab: &Lab, kind: NatKind, host: &str, port: u16, dests: &[String]) -> Vec<SocketAddr> {
    let dests: Vec<&str> = dests.iter().map(String::as_str).collect();
    let seen: Vec<SocketAddr> = probe(lab, host, port, &dests, 3000)
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| panic!("{kind:?}: a reflector did not answer\n{}", lab.logs()))
        })
        .collect();
    assert!(seen.iter().all(|s| wan_ip(*s)), "{kind:?}: {seen:?}");
    seen
}

fn all_distinct(seen: &[SocketAddr]) -> bool {
    seen.iter()
        .enumerate()
        .all(|(i, s)| seen[i + 1..].iter().all(|t| t.port() != s.port()))
}

/// §4.1: x1 asks A:7000, A:7001 and B:7000 from one socket; then x2 from
/// the same inside port, so that it cannot keep it.
fn check_mapping(lab: &mut Lab, kind: NatKind) {
    start(
        lab,
        "a",
        "refl-a",
        &["reflect", "--bind", &any(7000), "--bind", &any(7001)],
    );
    start(
        lab,
        "b",
        "refl-b",
        &["reflect", "--bind", &any(7000), "--bind", &any(7001)],
    );
    let x1 = mappings(
        lab,
        kind,
        "x1",
        5000,
        &[ep(A, 7000), ep(A, 7001), ep(B, 7000)],
    );
    // x2's first destination is one x1 never sent to, so that plain
    // port preservation would hand it W:5000 as well.
    let x2 = mappings(
        lab,
        kind,
        "x2",
        5000,
        &[ep(B, 7001), ep(A, 7000), ep(B, 7000)],
    );
    if kind.endpoint_independent_mapping() {
        // REQ-1: one outside endpoint for every destination, and (§4.2.1)
        // the inside port kept while nobody else holds it.
        assert!(
            x1.iter().all(|s| s.port() == 5000),
            "{kind:?}: endpoint-independent mapping keeps W:5000 for all: {x1:?}"
        );
        assert!(
            x2.iter().all(|s| *s == x2[0]) && x2[0].port() != 5000,
            "{kind:?}: x2:5000 needs its own outside port, the same for all: {x2:?}"
        );
        // The mapping is the NAT's, not conntrack's (REQ-5: at least two
        // minutes): with every conntrack entry gone, x2 keeps its port,
        // although W:5000 is free again.
        lab.exec("r", &["conntrack", "-F"]).expect("conntrack -F");
        let again = mappings(lab, kind, "x2", 5000, &[ep(A, 7001)]);
        assert_eq!(again, [x2[0]], "{kind:?}: x2's mapping outlives conntrack");
    } else {
        assert!(
            all_distinct(&x1) && all_distinct(&x2),
            "{kind:?}: address-and-port-dependent mapping: a port per destination: {x1:?} {x2:?}"
        );
    }
    lab.stop("refl-a");
    lab.stop("refl-b");
}

/// §5: x1 has sent to A:8000; who else gets in?
fn check_filtering(lab: &mut Lab, kind: NatKind) {
    start(
        lab,
        "a",
        "once-a",
        &["reflect", "--bind", &any(8000), "--once"],
    );
    start(
        lab,
        "x1",
        "x1",
        &["reflect", "--bind", &any(5001), "--first", &ep(A, 8000)],
    );
    // (a) A:8000's answer came back: that is what `mapped` means.
    let mapped = endpoint_in(&wait_line(lab, "x1", |l| l.starts_with("mapped ")));
    assert!(wan_ip(mapped), "{kind:?}: mapped to {mapped}");
    let mapped = mapped.to_string();
    wait_exit(lab, "once-a");
    tool(
        lab,
        "a",
        &[
            "send",
            "--bind",
            &any(8001),
            "--to",
            &mapped,
            "--text",
            "a-other-port",
        ],
    );
    tool(
        lab,
        "b",
        &["send", "--bind", &any(8000), "--to", &mapped, "--text", "b"],
    );
    // A:8000 is let in by every kind; once it is through, so would the
    // others be (same path, sent before it).
    tool(
        lab,
        "a",
        &[
            "send",
            "--bind",
            &any(8000),
            "--to",
            &mapped,
            "--text",
            "marker",
        ],
    );
    let marker = wait_line(lab, "x1", |l| l.ends_with(" marker"));
    assert_eq!(endpoint_in(&marker), ep(A, 8000).parse().expect("endpoint"));
    let log = log_of(lab, "x1");
    let got = |text: &str, from: String| {
        let line = log.lines().find(|l| l.ends_with(&format!(" {text}")));
        if let Some(l) = line {
            // The NAT rewrites only the destination of inbound packets.
            assert_eq!(endpoint_in(l).to_string(), from, "{kind:?}: {l}");
        }
        line.is_some()
    };
    let (same_addr, other_addr) = match kind {
        NatKind::FullCone => (true, true),
        NatKind::AddressRestricted => (true, false),
        NatKind::PortRestricted | NatKind::Symmetric => (false, false),
        NatKind::UdpBlocked => unreachable!("no UDP"),
    };
    assert_eq!(
        got("a-other-port", ep(A, 8001)),
        same_addr,
        "{kind:?}: A:8001 → mapped port\n{log}"
    );
    assert_eq!(
        got("b", ep(B, 8000)),
        other_addr,
        "{kind:?}: B:8000 → mapped port\n{log}"
    );
}

fn mapping_and_filtering(test: &str, kind: NatKind) {
    let Some(mut lab) = world(test, kind, Hairpin::Off) else {
        return;
    };
    check_mapping(&mut lab, kind);
    check_filtering(&mut lab, kind);
}

#[test]
fn full_cone_maps_and_filters_endpoint_independently() {
    mapping_and_filtering(
        "full_cone_maps_and_filters_endpoint_independently",
        NatKind::FullCone,
    );
}

#[test]
fn address_restricted_filters_by_address() {
    mapping_and_filtering(
        "address_restricted_filters_by_address",
        NatKind::AddressRestricted,
    );
}

#[test]
fn port_restricted_filters_by_address_and_port() {
    mapping_and_filtering(
        "port_restricted_filters_by_address_and_port",
        NatKind::PortRestricted,
    );
}

#[test]
fn symmetric_maps_per_destination() {
    mapping_and_filtering("symmetric_maps_per_destination", NatKind::Symmetric);
}

/// Hole punching: B's packet reaches the router before x1 has sent to B.
/// It must be dropped without a trace; a conntrack entry for it would hold
/// W:5002 ↔ B:9000 and push x1's mapping towards B off port 5002 (REQ-1).
#[test]
fn early_unsolicited_packet_leaves_no_state() {
    let kind = NatKind::PortRestricted;
    let Some(mut lab) = world(
        "early_unsolicited_packet_leaves_no_state",
        kind,
        Hairpin::Off,
    ) else {
        return;
    };
    let lab = &mut lab;
    tool(
        lab,
        "b",
        &[
            "send",
            "--bind",
            &any(9000),
            "--to",
            &ep(WAN, 5002),
            "--text",
            "early",
        ],
    );
    start(lab, "b", "refl-b", &["reflect", "--bind", &any(9000)]);
    let seen = mappings(lab, kind, "x1", 5002, &[ep(B, 9000)]);
    assert_eq!(seen, [ep(WAN, 5002).parse().expect("endpoint")]);
}

/// §6: x2 has a mapping (towards A:7000); x1 sends to it.
fn hairpin(test: &str, kind: NatKind, hairpin: Hairpin) {
    let Some(mut lab) = world(test, kind, hairpin) else {
        return;
    };
    let lab = &mut lab;
    start(
        lab,
        "a",
        "once-a",
        &["reflect", "--bind", &any(7000), "--once"],
    );
    start(lab, "a", "refl-a", &["reflect", "--bind", &any(7001)]);
    start(
        lab,
        "x2",
        "x2",
        &["reflect", "--bind", &any(5000), "--first", &ep(A, 7000)],
    );
    let m2 = endpoint_in(&wait_line(lab, "x2", |l| l.starts_with("mapped ")));
    assert!(wan_ip(m2), "{kind:?}: x2 mapped to {m2}");
    let m2 = m2.to_string();
    match hairpin {
        Hairpin::On => {
            // x1 learns its own mapping, then asks x2 what it sees: x2's
            // answer makes the round trip too.
            let seen = probe(lab, "x1", 6000, &[&ep(A, 7001), &m2], 3000);
            let m1 = seen[0].expect("A:7001 answers x1");
            let via = seen[1].unwrap_or_else(|| {
                panic!(
                    "{kind:?}: hairpin on, x1 → {m2} got no answer\n{}",
                    lab.logs()
                )
            });
            // REQ-9a: the external source address and port, not 10.1.0.x.
            assert!(wan_ip(via), "{kind:?}: x2 saw {via}");
            if kind.endpoint_independent_mapping() {
                assert_eq!(via, m1, "{kind:?}: x1's one mapping, also for hairpinning");
            }
            let line = wait_line(lab, "x2", |l| l.ends_with(" probe"));
            assert_eq!(endpoint_in(&line), via);
        }
        Hairpin::Off => {
            tool(
                lab,
                "x1",
                &[
                    "send",
                    "--bind",
                    &any(6000),
                    "--to",
                    &m2,
                    "--text",
                    "hairpin",
                ],
            );
            wait_exit(lab, "once-a");
            tool(
                lab,
                "a",
                &[
                    "send",
                    "--bind",
                    &any(7000),
                    "--to",
                    &m2,
                    "--text",
                    "marker",
                ],
            );
            wait_line(lab, "x2", |l| l.ends_with(" marker"));
            let log = log_of(lab, "x2");
            assert!(
                !log.contains(" hairpin"),
                "{kind:?}: hairpin off, yet x1 reached x2 through {m2}\n{log}"
            );
        }
    }
}

#[test]
fn hairpin_on_full_cone() {
    hairpin("hairpin_on_full_cone", NatKind::FullCone, Hairpin::On);
}

#[test]
fn hairpin_off_full_cone() {
    hairpin("hairpin_off_full_cone", NatKind::FullCone, Hairpin::Off);
}

#[test]
fn hairpin_on_address_restricted() {
    hairpin(
        "hairpin_on_address_restricted",
        NatKind::AddressRestricted,
        Hairpin::On,
    );
}

#[test]
fn hairpin_off_address_restricted() {
    hairpin(
        "hairpin_off_address_restricted",
        NatKind::AddressRestricted,
        Hairpin::Off,
    );
}

#[test]
fn hairpin_on_port_restricted() {
    hairpin(
        "hairpin_on_port_restricted",
        NatKind::PortRestricted,
        Hairpin::On,
    );
}

#[test]
fn hairpin_off_port_restricted() {
    hairpin(
        "hairpin_off_port_restricted",
        NatKind::PortRestricted,
        Hairpin::Off,
    );
}

#[test]
fn hairpin_on_symmetric() {
    hairpin("hairpin_on_symmetric", NatKind::Symmetric, Hairpin::On);
}

#[test]
fn hairpin_off_symmetric() {
    hairpin("hairpin_off_symmetric", NatKind::Symmetric, Hairpin::Off);
}

/// No UDP gets out, TCP only to 443; hairpinning (asked for) changes nothing.
#[test]
fn udp_blocked_lets_only_tcp_443_out() {
    let Some(mut lab) = world(
        "udp_blocked_lets_only_tcp_443_out",
        NatKind::UdpBlocked,
        Hairpin::On,
    ) else {
        return;
    };
    let lab = &mut lab;
    start(lab, "a", "refl-a", &["reflect", "--bind", &any(7000)]);
    start(
        lab,
        "a",
        "tcp-a",
        &["tcp-listen", "--bind", &any(443), "--bind", &any(8080)],
    );
    // The allowed connection goes first, so that an empty log afterwards
    // means the others were dropped, not that A was slow.
    let out = tool(lab, "x1", &["tcp-connect", "--to", &ep(A, 443)]);
    let seen = out
        .trim()
        .strip_prefix("connected seen ")
        .unwrap_or_else(|| panic!("TCP to 443 must pass: {out}\n{}", lab.logs()));
    let seen: SocketAddr = seen.parse().expect("an endpoint");
    assert!(wan_ip(seen), "TCP is NATed: A saw {seen}");
    let out = tool(
        lab,
        "x1",
        &["tcp-connect", "--to", &ep(A, 8080), "--timeout-ms", "700"],
    );
    assert!(
        out.starts_with("failed "),
        "TCP to 8080 must not pass: {out}"
    );
    let seen = probe(lab, "x1", 5000, &[&ep(A, 7000)], 700);
    assert_eq!(seen, [None], "no UDP out");
    assert!(
        !log_of(lab, "refl-a").contains("from "),
        "A got UDP:\n{}",
        lab.logs()
    );
    let tcp = log_of(lab, "tcp-a");
    assert_eq!(
        tcp.matches("from ").count(),
        1,
        "only the 443 connection:\n{tcp}"
    );
}
