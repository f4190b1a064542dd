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

/// A lab with the coordination server on nyc (`port`), one network and a
/// reusable setup key; relays and agents are added to it.
struct World {
    lab: Lab,
    token: String,
    port: u16,
    setup_key: String,
    agents: Vec<String>,
}

impl World {
    /// Starts the server on nyc (which the caller added) on `port`, and
    /// makes the network `m` with `overlay`.
    fn start(mut lab: Lab, port: u16, overlay: &str) -> World {
        let db = format!("sqlite://{}/server.db", lab.log_dir().display());
        let init = lab
            .exec("nyc", &[WGMESH, "server", "init", "--database", &db])
            .unwrap();
        let token = last_line(&String::from_utf8_lossy(&init.stdout));
        let listen = format!("0.0.0.0:{port}");
        lab.spawn(
            "nyc",
            "server",
            &[
                WGMESH,
                "server",
                "--listen",
                &listen,
                "--database",
                &db,
                "--insecure-http",
            ],
        )
        .unwrap();
        let mut w = World {
            lab,
            token,
            port,
            setup_key: String::new(),
            agents: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while w.try_admin(&["networks", "list"]).is_none() {
            assert!(Instant::now() < deadline, "server down:\n{}", w.lab.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        w.admin(&["networks", "create", "m", "--overlay", overlay]);
        w.setup_key = last_line(&w.admin(&["setup-keys", "create", "--reusable"]));
        w
    }

    fn sh(&self, host: &str, args: &[&str]) -> String {
        let out = self
            .lab
            .exec(host, args)
            .unwrap_or_else(|e| panic!("{host}: {args:?}: {e}\n{}", self.lab.logs()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_admin(&self, args: &[&str]) -> Option<String> {
        let tok = format!("WGMESH_TOKEN={}", self.token);
        let url = format!("http://127.0.0.1:{}", self.port);
        let mut argv = vec!["env", &tok, WGMESH, "admin", "--server", &url];
        argv.extend_from_slice(args);
        let out = self.lab.exec("nyc", &argv).ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn admin(&self, args: &[&str]) -> String {
        self.try_admin(args)
            .unwrap_or_else(|| panic!("wgmesh admin {args:?} failed\n{}", self.lab.logs()))
    }

    /// Registers relay `name` on `host` (UDP at `addr`:[`RELAY_PORT`], and
    /// a plain WebSocket on port 443 if `ws`) and starts it.
    fn add_relay(&mut self, host: &str, name: &str, addr: &str, ws: bool) {
        let dir = self.lab.log_dir().join(name).to_string_lossy().into_owned();
        let key = self
            .sh(host, &[WGMESH, "relay", "pubkey", "--state-dir", &dir])
            .trim()
            .to_owned();
        let udp = format!("{addr}:{RELAY_PORT}");
        let ws_url = format!("ws://{addr}:443/relay");
        let mut create = vec![
            "relays",
            "create",
            name,
            "--public-key",
            &key,
            "--udp",
            &udp,
        ];
        if ws {
            create.extend(["--ws-url", &ws_url]);
        }
        let token_file = format!("{dir}/token");
        std::fs::write(&token_file, last_line(&self.admin(&create))).unwrap();
        std::fs::set_permissions(
            &token_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let listen = format!("0.0.0.0:{RELAY_PORT}");
        let server = format!("http://{SERVER}:{}", self.port);
        let mut argv = vec![
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
        ];
        if ws {
            argv.extend(["--listen-ws", "0.0.0.0:443", "--insecure-ws"]);
        }
        self.lab.spawn(host, name, &argv).unwrap();
    }

    /// Starts an agent on `host`, enrolled with the network's setup key.
    fn start_agent(&mut self, host: &str) {
        let env = format!("WGMESH_SETUP_KEY={}", self.setup_key);
        let iface = self.lab.id().wg_iface(self.agents.len());
        // A killed agent (a failed test) leaves its UAPI socket.
        self.lab
            .remove_on_drop(format!("/var/run/wireguard/{iface}.sock").into());
        let state = self.state(host);
        let server = format!("http://{SERVER}:{}", self.port);
        let label = format!("agent-{host}");
        self.lab
            .spawn(
                host,
                &label,
                &[
                    "env",
                    &env,
                    WGMESH,
                    "up",
                    "--server",
                    &server,
                    "--name",
                    host,
                    "--state-dir",
                    &state,
                    "--interface",
                    &iface,
                ],
            )
            .unwrap();
        self.agents.push(label);
    }

    /// SIGTERM to every agent: each takes its interface down.
    fn stop_agents(mut self) {
        for label in std::mem::take(&mut self.agents) {
            self.lab.stop(&label);
        }
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

    /// Polls until `ok` holds, or panics with `what` after [`FORM`].
    fn wait(&self, what: &str, ok: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + FORM;
        while !ok(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {FORM:?}\n{}",
                self.lab.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .last()
        .expect("a line of output")
        .trim()
        .to_owned()
}

/// A lab for a test, or `None` where the lab cannot run (see `lab_ready`).
fn lab(test: &str) -> Option<Lab> {
    if !lab_ready(test, true, &["ping", "nft"]) {
        return None;
    }
    let mut lab = Lab::for_test(test)?;
    lab.add_public_host("nyc", SERVER.parse().unwrap()).unwrap();
    Some(lab)
}

/// Every NAT kind of [`NODES`], one agent behind each, and a relay on nyc.
fn build() -> Option<World> {
    let mut lab = lab("nat_matrix")?;
    for (i, (name, kind, wan)) in NODES.iter().enumerate() {
        let router = format!("r-{name}");
        let lan = format!("10.{}.0.0/24", i + 1).parse().unwrap();
        lab.add_router(&router, wan.parse().unwrap(), lan, *kind, Hairpin::Off)
            .unwrap();
        lab.add_lan_host(name, &router).unwrap();
    }
    let mut w = World::start(lab, 8080, "100.90.0.0/24");
    w.add_relay("nyc", "r1", SERVER, false);
    for (name, _, _) in NODES {
        w.start_agent(name);
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

    w.stop_agents();
}

/// A node behind a firewall that lets only TCP to port 443 out: it reaches
/// the server (on 443) and the relay's WebSocket (on 443), and every byte
/// to its peer goes through the relay over TCP; its status says why.
#[test]
fn a_udp_blocked_node_goes_through_the_relays_websocket() {
    let Some(w) = udp_blocked_world("udp_blocked") else {
        return;
    };
    let (blk, pr) = (w.address("blk"), w.address("pr"));
    w.lab
        .ping_until("blk", pr, FORM)
        .unwrap_or_else(|e| panic!("blk → pr: {e}\n{}", w.lab.logs()));
    w.lab
        .ping_until("pr", blk, FORM)
        .unwrap_or_else(|e| panic!("pr → blk: {e}\n{}", w.lab.logs()));
    w.stop_agents();
}

/// The server on nyc (port 443), a relay with a WebSocket on its own
/// host, blk behind a firewall that lets only TCP to 443 out and pr
/// behind a port-restricted NAT; waits until blk ↔ pr is relayed and
/// blk says why.
fn udp_blocked_world(test: &str) -> Option<World> {
    let mut lab = lab(test)?;
    lab.add_public_host("relay", "203.0.113.20".parse().unwrap())
        .unwrap();
    for (i, (host, kind)) in [
        ("blk", NatKind::UdpBlocked),
        ("pr", NatKind::PortRestricted),
    ]
    .into_iter()
    .enumerate()
    {
        let router = format!("r-{host}");
        let wan = format!("198.51.100.{}", 21 + i).parse().unwrap();
        let lan = format!("10.{}.0.0/24", 5 + i).parse().unwrap();
        lab.add_router(&router, wan, lan, kind, Hairpin::Off)
            .unwrap();
        lab.add_lan_host(host, &router).unwrap();
    }
    // Port 443: the only way out of the UDP-blocking firewall.
    let mut w = World::start(lab, 443, "100.91.0.0/24");
    w.add_relay("relay", "r1", "203.0.113.20", true);
    w.start_agent("blk");
    w.start_agent("pr");
    // The reason comes once blk's STUN probes have failed and been reported.
    let relayed = |r: Option<String>| r.is_some_and(|r| r.starts_with("relayed via r1"));
    w.wait("blk ↔ pr relayed, blk saying why", |w| {
        relayed(w.route("pr", "blk"))
            && w.route("blk", "pr")
                .is_some_and(|r| r.starts_with("relayed via r1: UDP blocked at blk"))
    });
    Some(w)
}

/// `promtool check metrics` (Prometheus' own parser and linter) on what
/// every role exposes, after real traffic: the server's and the relay's
/// metrics listeners at their defaults (127.0.0.1:9090 and :9091 in their
/// hosts), and `wgmesh status --metrics` of both agents. Any finding
/// fails. Before issue 10 the relay had no metrics and the server's were
/// on its API port, which now answers 404.
#[test]
fn every_roles_metrics_pass_promtool() {
    if !lab_ready("metrics_promtool", true, &["curl", "promtool"]) {
        return;
    }
    let Some(w) = udp_blocked_world("metrics_promtool") else {
        return;
    };
    let (blk, pr) = (w.address("blk"), w.address("pr"));
    for (from, to) in [("blk", pr), ("pr", blk)] {
        w.lab
            .ping_until(from, to, FORM)
            .unwrap_or_else(|e| panic!("{from} → {to}: {e}\n{}", w.lab.logs()));
    }
    let curl = |host: &str, url: &str| w.sh(host, &["curl", "-sSf", "--max-time", "10", url]);
    let server = curl("nyc", "http://127.0.0.1:9090/metrics");
    let relay = curl("relay", "http://127.0.0.1:9091/metrics");
    let api_status = w.sh(
        "nyc",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "http://127.0.0.1:443/metrics",
        ],
    );
    assert_eq!(api_status, "404", "/metrics on the API port");
    let agent = |host: &str| {
        w.sh(
            host,
            &[WGMESH, "status", "--metrics", "--state-dir", &w.state(host)],
        )
    };
    let scrapes = [
        ("server", server),
        ("relay", relay),
        ("agent blk", agent("blk")),
        ("agent pr", agent("pr")),
    ];
    for (role, text) in &scrapes {
        match wgmesh_lab::third_party::promtool_check_metrics(text) {
            Ok(_) => eprintln!("promtool check metrics on the {role}: no findings"),
            Err(e) => panic!("promtool on the {role}'s metrics: {e}\n{text}"),
        }
    }
    let value = |text: &str, series: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    };
    let (server, relay) = (&scrapes[0].1, &scrapes[1].1);
    assert_eq!(value(server, "wgmesh_nodes"), 2);
    assert_eq!(value(relay, "wgmesh_relay_registrations"), 2);
    // blk's side goes over the WebSocket, pr's over UDP.
    for transport in ["udp", "ws"] {
        let series = format!("wgmesh_relay_forwarded_packets_total{{transport=\"{transport}\"}}");
        assert!(value(relay, &series) > 0, "{series}\n{relay}");
    }
    eprintln!("the relay's metrics:\n{relay}");
    w.stop_agents();
}

/// With two relays, the agent uses the one that answers first: here the
/// second in the map's order, the first being 150 ms further away.
#[test]
fn the_nearest_of_two_relays_is_used() {
    let Some(mut lab) = lab("two_relays") else {
        return;
    };
    lab.add_public_host("far", "203.0.113.30".parse().unwrap())
        .unwrap();
    lab.add_public_host("near", "203.0.113.31".parse().unwrap())
        .unwrap();
    lab.add_public_host("a", "192.0.2.41".parse().unwrap())
        .unwrap();
    lab.set_latency("far", Duration::from_millis(150), Duration::ZERO)
        .unwrap();
    let mut w = World::start(lab, 8080, "100.92.0.0/24");
    w.add_relay("far", "r-far", "203.0.113.30", false);
    w.add_relay("near", "r-near", "203.0.113.31", false);
    w.start_agent("a");
    w.wait("a relay registered", |w| {
        w.status("a")
            .is_some_and(|s| s["paths"]["relay_registered"] == true)
    });
    let st = w.status("a").unwrap();
    assert_eq!(
        st["paths"]["relay"], "r-near",
        "the nearer relay should win"
    );
    w.stop_agents();
}
