//! The lab's plumbing: public hosts reach each other, a LAN host reaches the
//! internet through its router, and nothing is left behind after a drop.

use std::time::Duration;

use wgmesh_lab::{Hairpin, Lab, NatKind};

#[test]
fn public_and_natted_hosts_reach_the_internet() {
    let Some(mut lab) = Lab::for_test("public_and_natted_hosts_reach_the_internet") else {
        return;
    };
    lab.add_public_host("nyc", "203.0.113.10".parse().expect("ip"))
        .expect("nyc");
    lab.add_public_host("lax", "198.51.100.20".parse().expect("ip"))
        .expect("lax");
    lab.add_router(
        "home",
        "192.0.2.100".parse().expect("ip"),
        "10.1.0.0/24".parse().expect("net"),
        NatKind::PortRestricted,
        Hairpin::Off,
    )
    .expect("home");
    lab.add_lan_host("lab", "home").expect("lab");
    let t = Duration::from_secs(5);
    lab.ping_until("nyc", "198.51.100.20".parse().expect("ip"), t)
        .expect("nyc → lax across TEST-NETs");
    lab.ping_until("lab", "203.0.113.10".parse().expect("ip"), t)
        .expect("lab → nyc through NAT");
    // Nothing on the internet can reach into the LAN, even with a route to
    // it through the router: the router's filter stops it, not a missing route.
    lab.exec(
        "nyc",
        &["ip", "route", "add", "10.1.0.0/24", "via", "192.0.2.100"],
    )
    .expect("route to the LAN via home's WAN");
    let out = lab
        .exec("nyc", &["ping", "-c", "1", "-W", "1", "10.1.0.2"])
        .expect_err("the LAN is private");
    drop(out);
    let namespaces = lab.namespaces();
    drop(lab);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let left = String::from_utf8_lossy(&left.stdout);
    for ns in namespaces {
        assert!(!left.contains(&ns), "{ns} survived the lab");
    }
}

/// A TOML topology with impairment on a link: the delay shows in the RTT.
#[test]
fn toml_topology_with_link_impairment() {
    let Some(mut lab) = Lab::for_test("toml_topology_with_link_impairment") else {
        return;
    };
    let topology = wgmesh_lab::Topology::parse(
        "[lab]\nname = \"x\"\n\
         [[router]]\nname = \"r\"\nwan = \"192.0.2.50\"\nlan = \"10.9.0.0/24\"\nnat = \"symmetric\"\n\
         [[host]]\nname = \"a\"\naddress = \"203.0.113.5\"\nlink = { latency_ms = 30, loss_percent = 0 }\n\
         [[host]]\nname = \"b\"\nbehind = \"r\"\n",
    )
    .expect("valid topology");
    topology.build_into(&mut lab).expect("builds");
    assert_eq!(
        lab.impairment("a").expect("a").delay,
        Duration::from_millis(30)
    );
    lab.ping_until(
        "b",
        "203.0.113.5".parse().expect("ip"),
        Duration::from_secs(5),
    )
    .expect("b → a through the symmetric NAT");
    let out = lab
        .exec("b", &["ping", "-c", "3", "-i", "0.2", "-q", "203.0.113.5"])
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    // "rtt min/avg/max/mdev = 60.1/60.3/…": both directions of a's link delay.
    let min: f64 = text
        .split(" = ")
        .nth(1)
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rtt in {text}"));
    assert!(
        (55.0..200.0).contains(&min),
        "min RTT {min} ms, expected about 60:\n{text}"
    );

    let bad = wgmesh_lab::Topology::parse(
        "[lab]\nname = \"x\"\n[[host]]\nname = \"a\"\naddress = \"203.0.113.5\"\nlink = { latency = 3 }\n",
    );
    assert!(bad.is_err(), "unknown link fields are refused");
}

/// Optional IPv6 on the internet segment: usable at once (no DAD wait),
/// on-link across 2001:db8::/32, a router's WAN may have one too, and what
/// cannot work is refused: a non-documentation address, one taken already,
/// a LAN host.
#[test]
fn ipv6_on_the_internet_segment() {
    let Some(mut lab) = Lab::for_test("ipv6_on_the_internet_segment") else {
        return;
    };
    lab.add_public_host("a", "203.0.113.1".parse().expect("ip"))
        .expect("a");
    lab.add_public_host("b", "192.0.2.2".parse().expect("ip"))
        .expect("b");
    lab.add_router(
        "r",
        "198.51.100.1".parse().expect("ip"),
        "10.1.0.0/24".parse().expect("net"),
        NatKind::PortRestricted,
        Hairpin::Off,
    )
    .expect("r");
    lab.add_lan_host("l", "r").expect("l");
    lab.add_ipv6("a", "2001:db8::1".parse().expect("ip"))
        .expect("a's IPv6");
    lab.add_ipv6("b", "2001:db8:1::2".parse().expect("ip"))
        .expect("b's IPv6");
    lab.add_ipv6("r", "2001:db8::100".parse().expect("ip"))
        .expect("r's WAN IPv6");
    let t = Duration::from_secs(5);
    lab.ping_until("a", "2001:db8:1::2".parse().expect("ip"), t)
        .expect("a → b over IPv6");
    lab.ping_until("b", "2001:db8::100".parse().expect("ip"), t)
        .expect("b → r's WAN over IPv6");
    // IPv4 is as it was.
    lab.ping_until("a", "192.0.2.2".parse().expect("ip"), t)
        .expect("a → b over IPv4");
    for (host, addr, why) in [
        ("b", "2001:db9::2", "outside 2001:db8::/32"),
        ("b", "2001:db8::1", "a's already"),
        ("l", "2001:db8::3", "a LAN host"),
        ("nobody", "2001:db8::4", "no such host"),
    ] {
        assert!(
            lab.add_ipv6(host, addr.parse().expect("ip")).is_err(),
            "{host} {addr}: {why} must be refused"
        );
    }
}
