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
    // Nothing on the internet can reach into the LAN.
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
