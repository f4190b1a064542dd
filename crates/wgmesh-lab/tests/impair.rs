//! Link impairment, measured: the delay element adds the round trip it
//! should (on a public host, a NAT router's WAN and a LAN host), jitter
//! spreads it, loss drops about the share asked for, tbf caps a TCP
//! transfer both ways, and a cut link is silent until restored. Bounds are
//! generous: the machine running this is small and shared.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use wgmesh_lab::{Hairpin, Lab, NatKind};

const A: &str = "203.0.113.10";
const B: &str = "198.51.100.20";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a valid address literal")
}

/// Two public hosts, `a` and `b`, that reach each other.
fn two_hosts(test: &str) -> Option<Lab> {
    let mut lab = Lab::for_test(test)?;
    lab.add_public_host("a", ip(A).to_string().parse().expect("v4"))
        .expect("host a");
    lab.add_public_host("b", ip(B).to_string().parse().expect("v4"))
        .expect("host b");
    lab.ping_until("a", ip(B), Duration::from_secs(5))
        .expect("a reaches b before any impairment");
    Some(lab)
}

/// Round-trip times (ms) of `count` pings from `host` to `to`, one every
/// `interval_ms`; lost ones are left out.
fn rtts(lab: &Lab, host: &str, to: &str, count: u32, interval_ms: u32) -> Vec<f64> {
    let interval = format!("{}.{:03}", interval_ms / 1000, interval_ms % 1000);
    let out = lab
        .host(host)
        .expect("host exists")
        .netns
        .try_exec(&[
            "ping",
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            &interval,
            "-W",
            "2",
            to,
        ])
        .expect("ping runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The `p`th quantile of sorted `v`.
fn quantile(v: &[f64], p: f64) -> f64 {
    assert!(!v.is_empty(), "no ping came back");
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The percentage of `count` pings, one every 10 ms, that got no reply.
fn ping_loss(lab: &Lab, host: &str, to: &str, count: u32) -> f64 {
    let out = lab
        .host(host)
        .expect("host exists")
        .netns
        .try_exec(&[
            "ping",
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.01",
            "-W",
            "1",
            to,
        ])
        .expect("ping runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(',')
        .find_map(|part| part.trim().strip_suffix("% packet loss"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no loss summary in ping's output:\n{text}"))
}

/// Nothing of `lab` is left on the machine once it is dropped: namespaces,
/// TAPs in the root namespace, delay processes.
fn drop_and_check(mut lab: Lab) {
    let id = lab.id().as_str().to_owned();
    let namespaces = lab.namespaces();
    let delay_pids: Vec<u32> = lab
        .processes()
        .iter()
        .filter(|p| p.label().starts_with("wgl-delay"))
        .map(|p| p.pid())
        .collect();
    drop(lab);
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let netns = String::from_utf8_lossy(&netns.stdout);
    for ns in namespaces {
        assert!(!netns.contains(&ns), "{ns} survived the lab");
    }
    let links = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    let links = String::from_utf8_lossy(&links.stdout);
    let tap_prefix = format!(": wd{id}");
    assert!(
        !links.contains(&tap_prefix),
        "a TAP of lab {id} survived in the root namespace:\n{links}"
    );
    for pid in delay_pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "wgl-delay (pid {pid}) survived the lab"
        );
    }
}

#[test]
fn latency_and_jitter_add_to_the_round_trip() {
    let Some(mut lab) = two_hosts("latency_and_jitter_add_to_the_round_trip") else {
        return;
    };
    let link_before = format!("{:?}", lab.link("b").expect("b's uplink"));
    let base = rtts(&lab, "a", B, 20, 50);
    let base_median = quantile(&base, 0.5);

    lab.set_latency("b", Duration::from_millis(50), Duration::ZERO)
        .expect("50 ms on b's uplink");
    // Same names on both ends: the rest of the lab sees the same link.
    assert_eq!(
        format!("{:?}", lab.link("b").expect("b's uplink")),
        link_before
    );
    lab.ping_until("a", ip(B), Duration::from_secs(5))
        .expect("b is reachable through the delay element");
    let delayed = rtts(&lab, "a", B, 20, 50);
    let added = quantile(&delayed, 0.5) - base_median;
    println!(
        "RTT a→b: median {base_median:.3} ms without delay, {:.3} ms with 50 ms each way \
         (+{added:.1} ms); p10..p90 {:.1}..{:.1} ms",
        quantile(&delayed, 0.5),
        quantile(&delayed, 0.1),
        quantile(&delayed, 0.9)
    );
    assert!(
        (90.0..160.0).contains(&added),
        "50 ms each way should add ~100 ms to the round trip, added {added:.1} ms: {delayed:?}"
    );
    let steady_spread = quantile(&delayed, 0.9) - quantile(&delayed, 0.1);

    // Retuned in place: no second swap, the same process.
    lab.set_latency("b", Duration::from_millis(50), Duration::from_millis(20))
        .expect("jitter on b's uplink");
    let jittered = rtts(&lab, "a", B, 30, 60);
    let spread = quantile(&jittered, 0.9) - quantile(&jittered, 0.1);
    let added = quantile(&jittered, 0.5) - base_median;
    println!(
        "RTT a→b with 50±20 ms each way: median +{added:.1} ms, p10..p90 spread {spread:.1} ms \
         (was {steady_spread:.1} ms without jitter)"
    );
    // A busy machine only ever adds delay, so round trips well under the
    // 100 ms a steady element gives can only come from jitter (30 samples
    // of the sum of two ±20 ms: one below -10 ms misses with p ≈ 5e-5).
    let fastest = quantile(&jittered, 0.0) - base_median;
    assert!(
        spread > 15.0 && fastest < 90.0,
        "±20 ms each way should spread the round trips (p10..p90 {spread:.1} ms, \
         {steady_spread:.1} ms without jitter; fastest +{fastest:.1} ms): {jittered:?}"
    );
    assert!(
        (70.0..200.0).contains(&added),
        "the median should stay ~100 ms up, added {added:.1} ms: {jittered:?}"
    );

    lab.clear_impairment("b").expect("clear b");
    let cleared = rtts(&lab, "a", B, 10, 50);
    let back = quantile(&cleared, 0.5);
    println!("RTT a→b after clear_impairment: median {back:.3} ms");
    assert!(
        back < base_median + 15.0,
        "with the delay cleared the round trip is ~{base_median:.3} ms again, got {back:.3} ms"
    );
    drop_and_check(lab);
}

#[test]
fn latency_on_a_nat_router_and_a_lan_host() {
    let Some(mut lab) = Lab::for_test("latency_on_a_nat_router_and_a_lan_host") else {
        return;
    };
    lab.add_public_host("srv", ip(A).to_string().parse().expect("v4"))
        .expect("srv");
    lab.add_router(
        "home",
        "192.0.2.100".parse().expect("v4"),
        "10.1.0.0/24".parse().expect("net"),
        NatKind::PortRestricted,
        Hairpin::Off,
    )
    .expect("home");
    lab.add_lan_host("pc", "home").expect("pc");
    let t = Duration::from_secs(5);
    lab.ping_until("pc", ip(A), t).expect("pc reaches srv");
    let base = quantile(&rtts(&lab, "pc", A, 10, 50), 0.5);

    lab.set_latency("home", Duration::from_millis(20), Duration::ZERO)
        .expect("20 ms on the router's WAN");
    lab.set_latency("pc", Duration::from_millis(10), Duration::ZERO)
        .expect("10 ms on the LAN host's link");
    // Through the NAT, both delay elements, both ways.
    lab.ping_until("pc", ip(A), t)
        .expect("pc reaches srv through two delay elements and the NAT");
    let delayed = rtts(&lab, "pc", A, 10, 50);
    let added = quantile(&delayed, 0.5) - base;
    println!(
        "RTT pc→srv via NAT: median {base:.3} ms, +{added:.1} ms with 20 ms on the WAN \
         and 10 ms on the LAN link"
    );
    assert!(
        (55.0..120.0).contains(&added),
        "(20 + 10) ms each way should add ~60 ms, added {added:.1} ms: {delayed:?}"
    );
    // The LAN is still private.
    let probe = lab
        .host("srv")
        .expect("srv")
        .netns
        .try_exec(&["ping", "-c", "1", "-W", "1", "10.1.0.2"])
        .expect("ping runs");
    assert!(!probe.status.success(), "the LAN stays behind the NAT");
    drop_and_check(lab);
}

#[test]
fn loss_drops_about_the_share_asked_for() {
    let Some(mut lab) = two_hosts("loss_drops_about_the_share_asked_for") else {
        return;
    };
    lab.set_loss("b", 20.0).expect("20% loss on b");
    // 20% each way: a round trip survives with 0.8² = 64%, so ~36% is lost.
    let lost = ping_loss(&lab, "a", B, 200);
    println!("ping loss a→b with 20% each way: {lost}% (expected ~36%)");
    assert!(
        (18.0..58.0).contains(&lost),
        "20% each way should lose ~36% of round trips, lost {lost}%"
    );
    lab.set_loss("b", 0.0).expect("no loss");
    let lost = ping_loss(&lab, "a", B, 50);
    println!("ping loss a→b after set_loss(0): {lost}%");
    assert!(lost <= 10.0, "loss ended, yet {lost}% of pings were lost");
    drop_and_check(lab);
}

/// iperf3's received throughput in Mbit/s, `a` → `b` or (reverse) `b` → `a`.
///
/// Each try gets a fresh one-off server (`-s -1`) on a port of its own, so
/// no state of a previous test (a server still closing one) gets in the
/// way; a try whose client cannot even connect is made again.
fn iperf(lab: &mut Lab, reverse: bool) -> f64 {
    static PORT: AtomicU16 = AtomicU16::new(5201);
    for _ in 0..3 {
        let port = PORT.fetch_add(1, Ordering::Relaxed).to_string();
        let label = format!("iperf3-server-{port}");
        lab.spawn("b", &label, &["iperf3", "-s", "-1", "-B", B, "-p", &port])
            .expect("iperf3 server");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listening = format!(":{port} ");
        loop {
            let ss = lab.exec("b", &["ss", "-ltnH"]).expect("ss");
            if String::from_utf8_lossy(&ss.stdout).contains(&listening) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "iperf3 never listened:\n{}",
                lab.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut args = vec!["iperf3", "-c", B, "-p", &port, "-t", "2", "-J"];
        if reverse {
            args.push("-R");
        }
        let out = lab
            .host("a")
            .expect("host a")
            .netns
            .try_exec(&args)
            .expect("iperf3 runs");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("iperf3 -J prints JSON");
        if let Some(bps) = v["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e6;
        }
        let error = v["error"].as_str().unwrap_or_default();
        println!("iperf3 on port {port}: {error}; trying again");
        assert!(
            error.contains("unable to connect"),
            "iperf3 measured nothing: {v}\n{}",
            lab.logs()
        );
        lab.stop(&label);
    }
    panic!("iperf3 could not connect three times:\n{}", lab.logs());
}

#[test]
fn rate_caps_a_tcp_transfer_both_ways() {
    let Some(mut lab) = two_hosts("rate_caps_a_tcp_transfer_both_ways") else {
        return;
    };
    lab.set_rate("b", 10_000_000).expect("10 Mbit/s on b");
    let to_b = iperf(&mut lab, false);
    let from_b = iperf(&mut lab, true);
    println!("TCP over a 10 Mbit/s link: a→b {to_b:.2} Mbit/s, b→a {from_b:.2} Mbit/s");
    for (dir, mbit) in [("a→b", to_b), ("b→a", from_b)] {
        assert!(
            (3.0..15.0).contains(&mbit),
            "{dir}: {mbit:.2} Mbit/s over a 10 Mbit/s link"
        );
    }
    // The limit follows the link into a delay element's TAPs, and TCP
    // crosses the element.
    lab.set_latency("b", Duration::from_millis(5), Duration::ZERO)
        .expect("5 ms on b");
    let delayed = iperf(&mut lab, false);
    println!("TCP over the same link with 5 ms each way: a→b {delayed:.2} Mbit/s");
    assert!(
        (3.0..15.0).contains(&delayed),
        "a→b: {delayed:.2} Mbit/s over a 10 Mbit/s link with a delay element"
    );
    drop_and_check(lab);
}

/// Whether `count` pings from `a` to `b` all go unanswered.
fn silent(lab: &Lab, count: u32) -> bool {
    ping_loss(lab, "a", B, count) >= 100.0
}

#[test]
fn a_cut_link_is_silent_until_restored() {
    let Some(mut lab) = two_hosts("a_cut_link_is_silent_until_restored") else {
        return;
    };
    lab.set_loss("b", 5.0).expect("some loss first");
    lab.cut("b").expect("cut b");
    assert!(lab.impairment("b").expect("b").cut);
    assert!(silent(&lab, 20), "pings crossed a cut link");
    // The interface, its address and routes stay: only frames are dropped.
    let addr = lab
        .exec("b", &["ip", "-o", "addr", "show", "dev", "eth0"])
        .expect("b's eth0");
    assert!(String::from_utf8_lossy(&addr.stdout).contains(B));

    // A swap to a TAP link while cut keeps it cut: the filters follow.
    lab.set_latency("b", Duration::from_millis(20), Duration::ZERO)
        .expect("delay while cut");
    assert!(silent(&lab, 20), "pings crossed a cut link after the swap");

    lab.restore("b").expect("restore b");
    let restored = lab.impairment("b").expect("b");
    assert!(!restored.cut && restored.loss == 5.0, "{restored:?}");
    lab.ping_until("a", ip(B), Duration::from_secs(5))
        .expect("b answers again once restored");
    let rtt = quantile(&rtts(&lab, "a", B, 10, 20), 0.5);
    println!("after restore, RTT a→b with 20 ms each way and 5% loss: median {rtt:.1} ms");
    assert!(
        (35.0..120.0).contains(&rtt),
        "20 ms each way should make a ~40 ms round trip, got {rtt:.1} ms"
    );
    drop_and_check(lab);
}
