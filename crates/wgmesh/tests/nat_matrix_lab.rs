//! Issue 6's matrix, for real: agents behind nftables NAT routers of four
//! RFC 4787 kinds (full cone, address-restricted, port-restricted,
//! symmetric), with the server and a relay on a public host. Every pair of
//! them (six) ends up direct exactly where the NAT kinds allow it and
//! relayed otherwise, `wgmesh status` says which and why, and every pair
//! pings. Then the direct path of one pair is cut at its NAT router: the
//! pair moves to the relay within 3 s and keeps pinging, and goes direct
//! again once the path is back.
//!
//! And a node behind a firewall that blocks UDP reaches its peer through
//! the relay's WebSocket (TCP 443), its status saying why.

#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use support::lab_ready;
use wgmesh_lab::{Hairpin, Lab, NatKind};

const WGMESH: &str = env!("CARGO_BIN_EXE_wgmesh");
const SERVER: &str = "203.0.113.10";
const RELAY_PORT: u16 = 3340;
const FORM: Duration = Duration::from_secs(60);

/// (node, its NAT, the router's WAN address)
const NODES: [(&str, NatKind, &str); 4] = [
    ("fc", NatKind::FullCone, "198.51.100.11"),
    ("ar", NatKind::AddressRestricted, "198.51.100.12"),
    ("pr", NatKind::PortRestricted, "198.51.100.13"),
    ("sym", NatKind::Symmetric, "198.51.100.14"),
];

/// By RFC 4787: no direct path when one side's mapping depends on the
/// destination and the other filters by port.
fn direct_possible(a: NatKind, b: NatKind) -> bool {
    let strict = |k| matches!(k, NatKind::PortRestricted | NatKind::Symmetric);
    !((a == NatKind::Symmetric && strict(b)) || (b == NatKind::Symmetric && strict(a)))
}

struct World {
    lab: Lab,
    token: String,
}

impl World {
    fn sh(&self, host: &str, args: &[&str]) -> String {
        let out = self
            .lab
            .exec(host, args)
            .unwrap_or_else(|e| panic!("{host}: {args:?}: {e}\n{}", self.lab.logs()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn admin(&self, args: &[&str]) -> String {
        let tok = format!("WGMESH_TOKEN={}", self.token);
        let mut argv = vec![
            "env",
            &tok,
            WGMESH,
            "admin",
            "--server",
            "http://127.0.0.1:8080",
        ];
        argv.extend_from_slice(args);
        self.sh("nyc", &argv)
    }

    fn state(&self, host: &str) -> String {
        self.lab
            .log_dir()
            .join(format!("state-{host}"))
            .to_string_lossy()
            .into_owned()
    }

    fn status(&self, host: &str) -> Option<serde_json::Value> {
        let out = self
            .lab
            .exec(
                host,
                &[WGMESH, "status", "--json", "--state-dir", &self.state(host)],
            )
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `host`'s route to `peer` as its status shows it.
    fn route(&self, host: &str, peer: &str) -> Option<String> {
        let st = self.status(host)?;
        st["peers"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == peer)
            .and_then(|p| p["route"].as_str().map(str::to_owned))
    }

    fn address(&self, host: &str) -> IpAddr {
        let st = self.status(host).expect("status");
        let net: ipnet::IpNet = st["node"]["address"]
            .as_str()
            .expect("address")
            .parse()
            .expect("net");
        net.addr()
    }
}

fn build() -> Option<World> {
    if !lab_ready("nat_matrix", true, &["ping", "nft"]) {
        return None;
    }
    let mut lab = Lab::for_test("nat_matrix")?;
    lab.add_public_host("nyc", SERVER.parse().unwrap()).unwrap();
    for (i, (name, kind, wan)) in NODES.iter().enumerate() {
        let router = format!("r-{name}");
        lab.add_router(
            &router,
            wan.parse().unwrap(),
            format!("10.{}.0.0/24", i + 1).parse().unwrap(),
            *kind,
            Hairpin::Off,
        )
        .unwrap();
        lab.add_lan_host(name, &router).unwrap();
    }
    let db = format!("sqlite://{}/server.db", lab.log_dir().display());
    let init = lab
        .exec("nyc", &[WGMESH, "server", "init", "--database", &db])
        .unwrap();
    let token = String::from_utf8_lossy(&init.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    lab.spawn(
        "nyc",
        "server",
        &[
            WGMESH,
            "server",
            "--listen",
            "0.0.0.0:8080",
            "--database",
            &db,
            "--insecure-http",
        ],
    )
    .unwrap();
    let mut w = World { lab, token };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tok = format!("WGMESH_TOKEN={}", w.token);
        if w.lab
            .exec(
                "nyc",
                &[
                    "env",
                    &tok,
                    WGMESH,
                    "admin",
                    "--server",
                    "http://127.0.0.1:8080",
                    "networks",
                    "list",
                ],
            )
            .is_ok()
        {
            break;
        }
        assert!(Instant::now() < deadline, "server down:\n{}", w.lab.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    w.admin(&["networks", "create", "m", "--overlay", "100.90.0.0/24"]);
    let key = w
        .admin(&["setup-keys", "create", "--reusable"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let relay_dir = w.lab.log_dir().join("relay").to_string_lossy().into_owned();
    let relay_key = w
        .sh(
            "nyc",
            &[WGMESH, "relay", "pubkey", "--state-dir", &relay_dir],
        )
        .trim()
        .to_owned();
    let udp = format!("{SERVER}:{RELAY_PORT}");
    let relay_token = w.admin(&[
        "relays",
        "create",
        "r1",
        "--public-key",
        &relay_key,
        "--udp",
        &udp,
    ]);
    let relay_token = relay_token.lines().last().unwrap().trim().to_owned();
    let token_file = format!("{relay_dir}/token");
    std::fs::write(&token_file, relay_token).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let listen = format!("0.0.0.0:{RELAY_PORT}");
    w.lab
        .spawn(
            "nyc",
            "relay",
            &[
                WGMESH,
                "relay",
                "--listen-udp",
                &listen,
                "--server",
                "http://127.0.0.1:8080",
                "--token-file",
                &token_file,
                "--members-interval-secs",
                "1",
                "--state-dir",
                &relay_dir,
            ],
        )
        .unwrap();
    let server = format!("http://{SERVER}:8080");
    for (i, (name, _, _)) in NODES.iter().enumerate() {
        let env = format!("WGMESH_SETUP_KEY={key}");
        let iface = w.lab.id().wg_iface(i);
        // A killed agent (a failed test) leaves its UAPI socket.
        w.lab
            .remove_on_drop(format!("/var/run/wireguard/{iface}.sock").into());
        let state = w.state(name);
        w.lab
            .spawn(
                name,
                &format!("agent-{name}"),
                &[
                    "env",
                    &env,
                    WGMESH,
                    "up",
                    "--server",
                    &server,
                    "--name",
                    name,
                    "--state-dir",
                    &state,
                    "--interface",
                    &iface,
                ],
            )
            .unwrap();
    }
    Some(w)
}

/// Waits until every ordered pair's route is what the NAT kinds allow.
fn wait_for_paths(w: &World) {
    let deadline = Instant::now() + FORM;
    loop {
        let mut wrong = Vec::new();
        for (a, ka, _) in NODES {
            for (b, kb, _) in NODES.iter().filter(|n| n.0 != a) {
                let route = w.route(a, b);
                let want_direct = direct_possible(ka, *kb);
                let ok = match &route {
                    Some(r) if want_direct => r == "direct",
                    Some(r) => r.starts_with("relayed via r1"),
                    None => false,
                };
                if !ok {
                    wrong.push(format!(
                        "{a} → {b}: {route:?}, want {}",
                        if want_direct { "direct" } else { "relayed" }
                    ));
                }
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "paths not as expected after {FORM:?}:\n{}\n{}",
            wrong.join("\n"),
            w.lab.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn nat_kinds_pairwise_direct_where_possible_relayed_otherwise_and_failover() {
    let Some(w) = build() else {
        return;
    };
    wait_for_paths(&w);
    // The reason the symmetric/port-restricted pair is relayed.
    let why = w.route("pr", "sym").unwrap();
    assert!(why.contains("sym behind a symmetric NAT"), "{why}");
    // The path metrics: pr has two direct peers (fc, ar) and one relayed
    // (sym), found by hole punching.
    let metrics = w.sh(
        "pr",
        &[WGMESH, "status", "--metrics", "--state-dir", &w.state("pr")],
    );
    for line in [
        "wgmesh_peers{path=\"direct\"} 2",
        "wgmesh_peers{path=\"relayed\"} 1",
        "wgmesh_relay_registered 1",
        "wgmesh_time_to_direct_seconds_count 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} not in\n{metrics}"
        );
    }
    eprintln!("pr's metrics:\n{metrics}");
    let addrs: Vec<IpAddr> = NODES.iter().map(|n| w.address(n.0)).collect();
    for (i, (a, _, _)) in NODES.iter().enumerate() {
        for (j, to) in addrs.iter().enumerate() {
            if i != j {
                w.lab
                    .ping_until(a, *to, FORM)
                    .unwrap_or_else(|e| panic!("{a} → {to}: {e}\n{}", w.lab.logs()));
            }
        }
    }

    // Cut the direct path between pr and fc at pr's router (both ways),
    // leaving the relay reachable.
    let fc_wan = NODES[0].2;
    for cmd in [
        "add table inet cut".to_owned(),
        "add chain inet cut block { type filter hook forward priority -50 ; }".to_owned(),
        format!("add rule inet cut block ip saddr {fc_wan} drop"),
        format!("add rule inet cut block ip daddr {fc_wan} drop"),
    ] {
        let argv: Vec<&str> = std::iter::once("nft").chain(cmd.split(' ')).collect();
        w.sh("r-pr", &argv);
    }
    let cut = Instant::now();
    loop {
        if w.route("pr", "fc")
            .is_some_and(|r| r.starts_with("relayed"))
        {
            break;
        }
        assert!(
            cut.elapsed() < Duration::from_secs(3),
            "pr → fc still {:?} 3 s after the cut",
            w.route("pr", "fc")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = cut.elapsed();
    eprintln!("pr → fc moved to the relay {took:?} after the cut");
    w.lab
        .ping_until("pr", addrs[0], Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("pr → fc through the relay: {e}"));
    // The path comes back: direct again.
    w.sh("r-pr", &["nft", "delete", "table", "inet", "cut"]);
    let back = Instant::now();
    loop {
        if w.route("pr", "fc").as_deref() == Some("direct") {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "pr → fc not direct again: {:?}",
            w.route("pr", "fc")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "pr → fc direct again {:?} after the path returned",
        back.elapsed()
    );

    let mut w = w;
    for (name, _, _) in NODES {
        w.lab.stop(&format!("agent-{name}"));
    }
}

/// A node behind a firewall that lets only TCP to port 443 out: it reaches
/// the server (on 443) and the relay's WebSocket (on 443), and every byte
/// to its peer goes through the relay over TCP; its status says why.
#[test]
fn a_udp_blocked_node_goes_through_the_relays_websocket() {
    if !lab_ready("udp_blocked", true, &["ping", "nft"]) {
        return;
    }
    let Some(mut lab) = Lab::for_test("udp_blocked") else {
        return;
    };
    lab.add_public_host("nyc", SERVER.parse().unwrap()).unwrap();
    lab.add_public_host("relay", "203.0.113.20".parse().unwrap())
        .unwrap();
    lab.add_router(
        "r-blk",
        "198.51.100.21".parse().unwrap(),
        "10.5.0.0/24".parse().unwrap(),
        NatKind::UdpBlocked,
        Hairpin::Off,
    )
    .unwrap();
    lab.add_lan_host("blk", "r-blk").unwrap();
    lab.add_router(
        "r-pr",
        "198.51.100.22".parse().unwrap(),
        "10.6.0.0/24".parse().unwrap(),
        NatKind::PortRestricted,
        Hairpin::Off,
    )
    .unwrap();
    lab.add_lan_host("pr", "r-pr").unwrap();
    let db = format!("sqlite://{}/server.db", lab.log_dir().display());
    let init = lab
        .exec("nyc", &[WGMESH, "server", "init", "--database", &db])
        .unwrap();
    let token = String::from_utf8_lossy(&init.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    // Port 443: the only way out of the UDP-blocking firewall.
    lab.spawn(
        "nyc",
        "server",
        &[
            WGMESH,
            "server",
            "--listen",
            "0.0.0.0:443",
            "--database",
            &db,
            "--insecure-http",
        ],
    )
    .unwrap();
    let w = World { lab, token };
    let admin_url = "http://127.0.0.1:443";
    let admin = |args: &[&str]| -> Option<String> {
        let tok = format!("WGMESH_TOKEN={}", w.token);
        let mut argv = vec!["env", &tok, WGMESH, "admin", "--server", admin_url];
        argv.extend_from_slice(args);
        w.lab
            .exec("nyc", &argv)
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin(&["networks", "list"]).is_none() {
        assert!(Instant::now() < deadline, "server down:\n{}", w.lab.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    admin(&["networks", "create", "m", "--overlay", "100.91.0.0/24"]).unwrap();
    let key = admin(&["setup-keys", "create", "--reusable"])
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let relay_dir = w.lab.log_dir().join("relay").to_string_lossy().into_owned();
    let relay_key = w
        .sh(
            "relay",
            &[WGMESH, "relay", "pubkey", "--state-dir", &relay_dir],
        )
        .trim()
        .to_owned();
    let created = admin(&[
        "relays",
        "create",
        "r1",
        "--public-key",
        &relay_key,
        "--udp",
        "203.0.113.20:3340",
        "--ws-url",
        "ws://203.0.113.20:443/relay",
    ])
    .unwrap();
    let token_file = format!("{relay_dir}/token");
    std::fs::write(&token_file, created.lines().last().unwrap().trim()).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut w = w;
    w.lab
        .spawn(
            "relay",
            "relay",
            &[
                WGMESH,
                "relay",
                "--listen-udp",
                "0.0.0.0:3340",
                "--listen-ws",
                "0.0.0.0:443",
                "--insecure-ws",
                "--server",
                &format!("http://{SERVER}:443"),
                "--token-file",
                &token_file,
                "--members-interval-secs",
                "1",
                "--state-dir",
                &relay_dir,
            ],
        )
        .unwrap();
    let server = format!("http://{SERVER}:443");
    for (i, name) in ["blk", "pr"].iter().enumerate() {
        let env = format!("WGMESH_SETUP_KEY={key}");
        let iface = w.lab.id().wg_iface(i);
        // A killed agent (a failed test) leaves its UAPI socket.
        w.lab
            .remove_on_drop(format!("/var/run/wireguard/{iface}.sock").into());
        let state = w.state(name);
        w.lab
            .spawn(
                name,
                &format!("agent-{name}"),
                &[
                    "env",
                    &env,
                    WGMESH,
                    "up",
                    "--server",
                    &server,
                    "--name",
                    name,
                    "--state-dir",
                    &state,
                    "--interface",
                    &iface,
                ],
            )
            .unwrap();
    }
    let deadline = Instant::now() + FORM;
    loop {
        let a = w.route("blk", "pr");
        let b = w.route("pr", "blk");
        // The reason comes once blk's STUN probes have failed and been
        // reported.
        let relayed = |r: &Option<String>| {
            r.as_deref()
                .is_some_and(|r| r.starts_with("relayed via r1"))
        };
        if relayed(&a)
            && relayed(&b)
            && a.as_deref()
                .is_some_and(|r| r.contains("UDP blocked at blk"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "blk ↔ pr not relayed: {a:?} / {b:?}\n{}",
            w.lab.logs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let (blk, pr) = (w.address("blk"), w.address("pr"));
    w.lab
        .ping_until("blk", pr, FORM)
        .unwrap_or_else(|e| panic!("blk → pr: {e}\n{}", w.lab.logs()));
    w.lab
        .ping_until("pr", blk, FORM)
        .unwrap_or_else(|e| panic!("pr → blk: {e}\n{}", w.lab.logs()));
    for name in ["blk", "pr"] {
        w.lab.stop(&format!("agent-{name}"));
    }
}

/// With two relays, the agent uses the one that answers first: here the
/// second in the map's order, the first being 150 ms further away.
#[test]
fn the_nearest_of_two_relays_is_used() {
    if !lab_ready("two_relays", true, &["ping"]) {
        return;
    }
    let Some(mut lab) = Lab::for_test("two_relays") else {
        return;
    };
    lab.add_public_host("nyc", SERVER.parse().unwrap()).unwrap();
    lab.add_public_host("far", "203.0.113.30".parse().unwrap())
        .unwrap();
    lab.add_public_host("near", "203.0.113.31".parse().unwrap())
        .unwrap();
    lab.add_public_host("a", "192.0.2.41".parse().unwrap())
        .unwrap();
    lab.set_latency("far", Duration::from_millis(150), Duration::ZERO)
        .unwrap();
    let db = format!("sqlite://{}/server.db", lab.log_dir().display());
    let init = lab
        .exec("nyc", &[WGMESH, "server", "init", "--database", &db])
        .unwrap();
    let token = String::from_utf8_lossy(&init.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    lab.spawn(
        "nyc",
        "server",
        &[
            WGMESH,
            "server",
            "--listen",
            "0.0.0.0:8080",
            "--database",
            &db,
            "--insecure-http",
        ],
    )
    .unwrap();
    let mut w = World { lab, token };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let tok = format!("WGMESH_TOKEN={}", w.token);
        let argv = [
            "env",
            &tok,
            WGMESH,
            "admin",
            "--server",
            "http://127.0.0.1:8080",
            "networks",
            "list",
        ];
        if w.lab.exec("nyc", &argv).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "server down:\n{}", w.lab.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    w.admin(&["networks", "create", "m", "--overlay", "100.92.0.0/24"]);
    let key = w
        .admin(&["setup-keys", "create", "--reusable"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    for (host, name, addr) in [
        ("far", "r-far", "203.0.113.30"),
        ("near", "r-near", "203.0.113.31"),
    ] {
        let dir = w.lab.log_dir().join(name).to_string_lossy().into_owned();
        let relay_key = w
            .sh(host, &[WGMESH, "relay", "pubkey", "--state-dir", &dir])
            .trim()
            .to_owned();
        let udp = format!("{addr}:{RELAY_PORT}");
        let created = w.admin(&[
            "relays",
            "create",
            name,
            "--public-key",
            &relay_key,
            "--udp",
            &udp,
        ]);
        let token_file = format!("{dir}/token");
        std::fs::write(&token_file, created.lines().last().unwrap().trim()).unwrap();
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let listen = format!("0.0.0.0:{RELAY_PORT}");
        let server = format!("http://{SERVER}:8080");
        w.lab
            .spawn(
                host,
                name,
                &[
                    WGMESH,
                    "relay",
                    "--listen-udp",
                    &listen,
                    "--server",
                    &server,
                    "--token-file",
                    &token_file,
                    "--members-interval-secs",
                    "1",
                    "--state-dir",
                    &dir,
                ],
            )
            .unwrap();
    }
    let env = format!("WGMESH_SETUP_KEY={key}");
    let iface = w.lab.id().wg_iface(0);
    // A killed agent (a failed test) leaves its UAPI socket.
    w.lab
        .remove_on_drop(format!("/var/run/wireguard/{iface}.sock").into());
    let state = w.state("a");
    let server = format!("http://{SERVER}:8080");
    w.lab
        .spawn(
            "a",
            "agent-a",
            &[
                "env",
                &env,
                WGMESH,
                "up",
                "--server",
                &server,
                "--name",
                "a",
                "--state-dir",
                &state,
                "--interface",
                &iface,
            ],
        )
        .unwrap();
    let deadline = Instant::now() + FORM;
    loop {
        let st = w.status("a");
        let relay = st.as_ref().map(|s| {
            (
                s["paths"]["relay"].clone(),
                s["paths"]["relay_registered"].clone(),
            )
        });
        if let Some((name, serde_json::Value::Bool(true))) = &relay {
            assert_eq!(name, "r-near", "the nearer relay should win");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no relay registered: {relay:?}\n{}",
            w.lab.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    w.lab.stop("agent-a");
}
