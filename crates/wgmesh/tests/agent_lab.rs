//! The agent end to end, in the lab: a coordination server and an agent on
//! a public host (nyc), an agent on another public host (lax) and one on a
//! host behind a port-restricted NAT (lab).
//!
//! - The seed mesh, on SQLite and on PostgreSQL: nyc enrols as the hub,
//!   lax as a plain node, lab with a `via_hub` key; each follows its map,
//!   reports its endpoints (STUN through the engine socket), and every
//!   ordered pair pings over the overlay, lab ↔ lax through nyc;
//!   `wgmesh status` shows the handshakes. An ACL (lab → lax TCP/22)
//!   takes effect within 2 s while ping still works. With the
//!   server gone, a restarted agent comes back from
//!   its state directory alone (key, credential, cached map) and the mesh
//!   works; when the server returns, the agent reconnects by itself.
//!   Removing lab cuts it off everywhere within 2 s. SIGTERM removes each
//!   interface.
//! - Hub and spoke, over HTTPS with a private CA (`--ca-file`): nyc
//!   enrols with a hub key, turns IP forwarding on, and
//!   carries lax ↔ lab; SIGTERM puts forwarding back.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use support::{PgDatabase, lab_ready};
use wgmesh_lab::{Hairpin, Lab, NatKind, test_ca};

const WGMESH: &str = env!("CARGO_BIN_EXE_wgmesh");
const SERVER_ADDR: &str = "203.0.113.10";
const HOSTS: [&str; 3] = ["nyc", "lax", "lab"];
/// Enrolment, the first endpoint reports (which decide who dials whom),
/// the handshakes they lead to, and a reconnect after backoff.
const MESH_UP: Duration = Duration::from_secs(60);

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn last_line(out: &Output) -> String {
    stdout(out)
        .lines()
        .last()
        .expect("a line of output")
        .trim()
        .to_owned()
}

/// nyc, lax (public) and lab (behind home's port-restricted NAT).
fn world(test: &str) -> Option<Lab> {
    if !lab_ready(test, true, &["ping"]) {
        return None;
    }
    let mut lab = Lab::for_test(test)?;
    lab.add_public_host("nyc", SERVER_ADDR.parse().expect("ip"))
        .expect("nyc");
    lab.add_public_host("lax", "198.51.100.20".parse().expect("ip"))
        .expect("lax");
    lab.add_router(
        "home",
        "198.51.100.10".parse().expect("ip"),
        "10.1.0.0/24".parse().expect("net"),
        NatKind::PortRestricted,
        Hairpin::Off,
    )
    .expect("home");
    lab.add_lan_host("lab", "home").expect("lab");
    Some(lab)
}

fn sqlite_url(lab: &Lab) -> String {
    format!("sqlite://{}/server.db", lab.log_dir().display())
}

/// How the test reaches the server: the admin token, and with TLS the
/// CA, certificate and key files.
struct Ctl {
    database: String,
    token: String,
    tls: Option<Tls>,
}

struct Tls {
    ca: String,
    cert: String,
    key: String,
}

impl From<test_ca::TestCa> for Tls {
    fn from(t: test_ca::TestCa) -> Self {
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        Tls {
            ca: s(t.ca),
            cert: s(t.cert),
            key: s(t.key),
        }
    }
}

impl Ctl {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// `--ca-file CA` with TLS.
    fn ca_args(&self) -> Vec<&str> {
        match &self.tls {
            Some(t) => vec!["--ca-file", &t.ca],
            None => Vec::new(),
        }
    }
}

/// `wgmesh server init` in nyc; returns the admin token.
fn init_server(lab: &Lab, database: &str) -> String {
    let init = lab
        .exec("nyc", &[WGMESH, "server", "init", "--database", database])
        .unwrap_or_else(|e| panic!("server init: {e}"));
    last_line(&init)
}

/// Starts the server in nyc (HTTPS with `ctl.tls`, else plain HTTP, on
/// 8080; STUN on 3478) under `label` and waits until it answers.
fn start_server(lab: &mut Lab, label: &str, ctl: &Ctl) {
    let db = ctl.database.clone();
    let mut argv = vec![
        WGMESH,
        "server",
        "--listen",
        "0.0.0.0:8080",
        "--database",
        &db,
    ];
    match &ctl.tls {
        Some(t) => argv.extend(["--tls-cert", &t.cert, "--tls-key", &t.key]),
        None => argv.push("--insecure-http"),
    }
    lab.spawn("nyc", label, &argv).expect("spawn server");
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin(lab, ctl, &["networks", "list"]).is_err() {
        assert!(
            Instant::now() < deadline,
            "server not answering:\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `wgmesh admin --server URL ARGS…` in nyc, with the token.
fn admin(lab: &Lab, ctl: &Ctl, args: &[&str]) -> Result<Output, wgmesh_lab::LabError> {
    let tok = format!("WGMESH_TOKEN={}", ctl.token);
    let url = format!("{}://127.0.0.1:8080", ctl.scheme());
    let mut argv = vec!["env", &tok, WGMESH, "admin", "--server", &url];
    argv.extend(ctl.ca_args());
    argv.extend_from_slice(args);
    lab.exec("nyc", &argv)
}

fn state_dir(lab: &Lab, host: &str) -> PathBuf {
    lab.log_dir().join(format!("state-{host}"))
}

/// Starts `wgmesh up` in `host` under `label`; the setup key, if any,
/// through the environment.
fn start_agent(
    lab: &mut Lab,
    ctl: &Ctl,
    host: &str,
    label: &str,
    iface: &str,
    setup_key: Option<&str>,
) {
    let server = format!("{}://{SERVER_ADDR}:8080", ctl.scheme());
    let state = state_dir(lab, host).to_string_lossy().into_owned();
    let env = setup_key.map(|k| format!("WGMESH_SETUP_KEY={k}"));
    let mut argv: Vec<&str> = vec!["env"];
    if let Some(e) = &env {
        argv.push(e);
    }
    argv.extend_from_slice(&[
        WGMESH,
        "up",
        "--server",
        &server,
        "--name",
        host,
        "--state-dir",
        &state,
        "--interface",
        iface,
    ]);
    argv.extend(ctl.ca_args());
    lab.spawn(host, label, &argv).expect("spawn agent");
    // A killed agent (a failed test) leaves its UAPI socket.
    lab.remove_on_drop(format!("/var/run/wireguard/{iface}.sock").into());
}

/// The agent's status as JSON, once its status socket answers.
fn status(lab: &Lab, host: &str, state: &Path) -> Option<serde_json::Value> {
    let out = lab
        .exec(
            host,
            &[
                WGMESH,
                "status",
                "--json",
                "--state-dir",
                &state.to_string_lossy(),
            ],
        )
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `host`'s status until `ok` holds.
fn wait_status(
    lab: &Lab,
    host: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let state = state_dir(lab, host);
    let deadline = Instant::now() + MESH_UP;
    loop {
        if let Some(st) = status(lab, host, &state)
            && ok(&st)
        {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "{host}: {what} not reached within {MESH_UP:?}; status {:?}\n{}",
            status(lab, host, &state),
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn connected_with(n: usize) -> impl Fn(&serde_json::Value) -> bool {
    move |st| st["connected"] == true && st["peers"].as_array().is_some_and(|p| p.len() == n)
}

fn overlay_address(st: &serde_json::Value) -> IpAddr {
    let net: ipnet::IpNet = st["node"]["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("an address");
    net.addr()
}

fn ping_every_pair(lab: &Lab, addrs: &[IpAddr]) {
    for (a, host) in HOSTS.iter().enumerate() {
        for (b, to) in addrs.iter().enumerate() {
            if a != b {
                lab.ping_until(host, *to, MESH_UP)
                    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
            }
        }
    }
}

/// One ping, one second to answer.
fn ping_once(lab: &Lab, host: &str, to: IpAddr) -> bool {
    lab.exec(host, &["ping", "-c", "1", "-W", "1", "-q", &to.to_string()])
        .is_ok()
}

fn forwarding(lab: &Lab, host: &str) -> String {
    let out = lab
        .exec(host, &["cat", "/proc/sys/net/ipv4/ip_forward"])
        .expect("read ip_forward");
    stdout(&out).trim().to_owned()
}

#[test]
fn seed_mesh_on_sqlite() {
    let test = "seed_mesh_on_sqlite";
    if let Some(lab) = world(test) {
        let database = sqlite_url(&lab);
        seed_mesh(lab, database);
    }
}

#[test]
fn seed_mesh_on_postgres() {
    let test = "seed_mesh_on_postgres";
    let Some(lab) = world(test) else {
        return;
    };
    if let Some(pg) = PgDatabase::create(test) {
        seed_mesh(lab, pg.url.clone());
        drop(pg);
    }
}

/// The proof, on one database: server on nyc; agents on nyc (the
/// hub), lax and lab (behind NAT, reaching lax through nyc as the seed
/// plan's `via_hub` does).
fn seed_mesh(mut lab: Lab, database: String) {
    let ctl = Ctl {
        token: init_server(&lab, &database),
        database,
        tls: None,
    };
    start_server(&mut lab, "server", &ctl);
    admin(
        &lab,
        &ctl,
        &["networks", "create", "mesh", "--overlay", "100.80.0.0/24"],
    )
    .unwrap_or_else(|e| panic!("network: {e}\n{}", lab.logs()));
    let key = |args: &[&str]| {
        let mut argv = vec!["setup-keys", "create"];
        argv.extend_from_slice(args);
        admin(&lab, &ctl, &argv)
            .map(|o| last_line(&o))
            .unwrap_or_else(|e| panic!("setup key: {e}\n{}", lab.logs()))
    };
    // One key per role: a hub, a plain node, a node that goes via the hub.
    let keys = [key(&["--hub"]), key(&["--reusable"]), key(&["--via-hub"])];

    let ifaces: Vec<String> = (0..HOSTS.len()).map(|i| lab.id().wg_iface(i)).collect();
    let mut labels: Vec<String> = HOSTS.iter().map(|h| format!("agent-{h}")).collect();
    for (i, host) in HOSTS.iter().enumerate() {
        start_agent(&mut lab, &ctl, host, &labels[i], &ifaces[i], Some(&keys[i]));
    }
    let mut addrs = Vec::new();
    for host in HOSTS {
        let st = wait_status(&lab, host, "connected with two peers", connected_with(2));
        addrs.push(overlay_address(&st));
        // The key was made on the node and stays there, 0600.
        let key_file = state_dir(&lab, host).join("private.key");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key_file)
                .expect("key file")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
    ping_every_pair(&lab, &addrs);
    // lab and lax talk through nyc, which forwards.
    for (host, other) in [("lab", "lax"), ("lax", "lab")] {
        wait_status(&lab, host, "the other through nyc", |st| {
            st["peers"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["name"] == other && p["route"] == "via nyc")
            })
        });
    }
    assert_eq!(forwarding(&lab, "nyc"), "1");

    // The status table names the peers and their handshakes.
    let state = state_dir(&lab, "lab").to_string_lossy().into_owned();
    let table = lab
        .exec("lab", &[WGMESH, "status", "--state-dir", &state])
        .expect("status");
    let text = stdout(&table);
    assert!(text.contains(": connected"), "{text}");
    assert!(text.contains("nyc") && text.contains("lax"), "{text}");
    assert!(text.contains("s ago"), "a handshake happened: {text}");

    // The ACL: lab may not open TCP/22 on lax. Within 2 s of the
    // change lab's connection attempts fail, while ping still works; nyc
    // (not named by the rule) still connects.
    lab.spawn("lax", "sshd-stand-in", &["iperf3", "-s", "-p", "22"])
        .expect("listener on lax:22");
    let lax_22 = format!("exec 3<>/dev/tcp/{}/22", addrs[1]);
    let tcp_22 = |from: &str| {
        lab.exec(from, &["timeout", "1", "bash", "-c", &lax_22])
            .is_ok()
    };
    let deadline = Instant::now() + MESH_UP;
    while !(tcp_22("lab") && tcp_22("nyc")) {
        assert!(
            Instant::now() < deadline,
            "lax:22 never reachable:\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let policy = lab.log_dir().join("policy.toml");
    let policy_s = policy.to_string_lossy().into_owned();
    std::fs::write(
        &policy,
        "default = \"allow\"\n[[rule]]\naction = \"deny\"\nfrom = [\"node:lab\"]\nto = [\"node:lax\"]\nproto = \"tcp\"\nports = [\"22\"]\n",
    )
    .expect("write policy");
    admin(&lab, &ctl, &["policy", "set", &policy_s])
        .unwrap_or_else(|e| panic!("policy: {e}\n{}", lab.logs()));
    let changed = Instant::now();
    loop {
        let tried = Instant::now();
        if !tcp_22("lab") {
            let took = tried.duration_since(changed);
            assert!(took < Duration::from_secs(2), "the ACL took {took:?}");
            eprintln!("ACL in effect {took:?} after the change");
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(2),
            "lab → lax:22 still open after 2 s:\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ping_once(&lab, "lab", addrs[1]),
        "ping lab → lax must still work"
    );
    assert!(tcp_22("nyc"), "nyc → lax:22 is not denied");
    assert!(!tcp_22("lab"), "lab → lax:22 stays denied");
    std::fs::write(&policy, "default = \"allow\"\n").expect("write policy");
    admin(&lab, &ctl, &["policy", "set", &policy_s])
        .unwrap_or_else(|e| panic!("policy: {e}\n{}", lab.logs()));
    let deadline = Instant::now() + MESH_UP;
    while !tcp_22("lab") {
        assert!(
            Instant::now() < deadline,
            "lab → lax:22 never allowed again:\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    lab.stop("sshd-stand-in");

    // The server goes away; lax restarts with no setup key: it comes back
    // from its state directory and the mesh works without the server.
    lab.stop("server");
    lab.stop(&labels[1]);
    labels[1] = "agent-lax-again".into();
    start_agent(&mut lab, &ctl, "lax", &labels[1], &ifaces[1], None);
    let st = wait_status(&lab, "lax", "up from the cache", |st| {
        st["connected"] == false && st["peers"].as_array().is_some_and(|p| p.len() == 2)
    });
    assert_eq!(overlay_address(&st), addrs[1], "the same node again");
    for (a, b) in [(1, 0), (1, 2), (2, 1), (0, 1)] {
        lab.ping_until(HOSTS[a], addrs[b], MESH_UP)
            .unwrap_or_else(|e| panic!("server down: {e}\n{}", lab.logs()));
    }
    // The server comes back: the agents reconnect by themselves.
    start_server(&mut lab, "server-again", &ctl);
    for host in HOSTS {
        wait_status(&lab, host, "reconnected", connected_with(2));
    }

    // Removing lab cuts it off everywhere within 2 s: nyc and lax drop it
    // from their maps (and their WireGuard peers) as soon as it is removed.
    ping_every_pair(&lab, &addrs);
    let nodes = admin(&lab, &ctl, &["nodes", "list", "--json"])
        .unwrap_or_else(|e| panic!("nodes: {e}\n{}", lab.logs()));
    let nodes: serde_json::Value = serde_json::from_slice(&nodes.stdout).expect("json");
    let lab_id = nodes
        .as_array()
        .expect("a list")
        .iter()
        .find(|n| n["name"] == "lab")
        .expect("lab is a node")["id"]
        .to_string();
    admin(&lab, &ctl, &["nodes", "remove", &lab_id])
        .unwrap_or_else(|e| panic!("remove: {e}\n{}", lab.logs()));
    let removed = Instant::now();
    std::thread::scope(|scope| {
        for (from, to) in [
            ("nyc", addrs[2]),
            ("lax", addrs[2]),
            ("lab", addrs[0]),
            ("lab", addrs[1]),
        ] {
            let lab = &lab;
            scope.spawn(move || {
                loop {
                    let tried = Instant::now();
                    if !ping_once(lab, from, to) {
                        let took = tried.duration_since(removed);
                        assert!(
                            took < Duration::from_secs(2),
                            "{from} → {to} cut after {took:?}"
                        );
                        break;
                    }
                    assert!(
                        removed.elapsed() < Duration::from_secs(2),
                        "{from} → {to} still works 2 s after the removal"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
    });
    for host in ["nyc", "lax"] {
        wait_status(&lab, host, "lab gone from the map", connected_with(1));
    }
    assert!(!ping_once(&lab, "lab", addrs[0]), "lab stays cut off");

    // The removed node's agent does not loop on 401: it takes its
    // interface down and exits 3 ("refused", docs/agent.md), forgetting the
    // dead credential but keeping its key.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let p = lab
            .processes()
            .iter_mut()
            .find(|p| p.label() == labels[2])
            .expect("the lab agent was spawned");
        if let Some(st) = p.exited() {
            break st.code();
        }
        assert!(
            Instant::now() < deadline,
            "the removed agent still runs 10 s after the removal\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        code,
        Some(3),
        "exit code of the removed agent\n{}",
        lab.logs()
    );
    assert!(
        lab.exec("lab", &["ip", "link", "show", "dev", &ifaces[2]])
            .is_err(),
        "the removed agent left {} up",
        ifaces[2]
    );
    let lab_state = state_dir(&lab, "lab");
    assert!(
        !lab_state.join("credential").exists(),
        "dead credential kept"
    );
    assert!(lab_state.join("private.key").exists(), "key lost");
    // A restart with a setup key enrols anew and joins the mesh again.
    labels[2] = "agent-lab-again".into();
    start_agent(
        &mut lab,
        &ctl,
        "lab",
        &labels[2],
        &ifaces[2],
        Some(&keys[1]),
    );
    let st = wait_status(&lab, "lab", "enrolled again", connected_with(2));
    addrs[2] = overlay_address(&st);
    lab.ping_until("lab", addrs[0], MESH_UP)
        .unwrap_or_else(|e| panic!("re-enrolled lab → nyc: {e}\n{}", lab.logs()));

    // SIGTERM takes each interface down.
    for (i, host) in HOSTS.iter().enumerate() {
        lab.stop(&labels[i]);
        assert!(
            lab.exec(host, &["ip", "link", "show", "dev", &ifaces[i]])
                .is_err(),
            "{host}: {} still exists after SIGTERM",
            ifaces[i]
        );
    }
}

#[test]
fn hub_forwards_between_spokes() {
    let Some(mut lab) = world("hub_forwards_between_spokes") else {
        return;
    };
    // Over HTTPS this time, the server's certificate from a private CA
    // the agents trust through --ca-file.
    let ctl = Ctl {
        token: init_server(&lab, &sqlite_url(&lab)),
        database: sqlite_url(&lab),
        // The server's address, and 127.0.0.1 for the admin CLI in nyc.
        tls: Some(Tls::from(
            test_ca::make(
                lab.log_dir(),
                &[
                    SERVER_ADDR.parse().expect("ip"),
                    "127.0.0.1".parse().expect("ip"),
                ],
            )
            .expect("a test CA"),
        )),
    };
    start_server(&mut lab, "server", &ctl);
    // Without --ca-file, the system's roots alone: refused.
    let tok = format!("WGMESH_TOKEN={}", ctl.token);
    let plain = lab
        .host("nyc")
        .expect("nyc")
        .netns
        .try_exec(&[
            "env",
            &tok,
            WGMESH,
            "admin",
            "--server",
            "https://127.0.0.1:8080",
            "networks",
            "list",
        ])
        .expect("admin runs");
    assert!(!plain.status.success(), "an unknown CA is not trusted");
    let err = String::from_utf8_lossy(&plain.stderr).to_lowercase();
    assert!(err.contains("certificate"), "{err}");
    admin(
        &lab,
        &ctl,
        &[
            "networks",
            "create",
            "hs",
            "--overlay",
            "100.81.0.0/24",
            "--topology",
            "hub-and-spoke",
        ],
    )
    .unwrap_or_else(|e| panic!("network: {e}\n{}", lab.logs()));
    let hub_key = admin(&lab, &ctl, &["setup-keys", "create", "--hub"])
        .map(|o| last_line(&o))
        .unwrap_or_else(|e| panic!("setup key: {e}\n{}", lab.logs()));
    let spoke_key = admin(&lab, &ctl, &["setup-keys", "create", "--reusable"])
        .map(|o| last_line(&o))
        .unwrap_or_else(|e| panic!("setup key: {e}\n{}", lab.logs()));
    assert_eq!(forwarding(&lab, "nyc"), "0", "a fresh namespace");

    let ifaces: Vec<String> = (0..HOSTS.len()).map(|i| lab.id().wg_iface(i)).collect();
    for (i, host) in HOSTS.iter().enumerate() {
        let key = if i == 0 { &hub_key } else { &spoke_key };
        start_agent(
            &mut lab,
            &ctl,
            host,
            &format!("agent-{host}"),
            &ifaces[i],
            Some(key),
        );
    }
    let mut addrs = Vec::new();
    for host in HOSTS {
        let st = wait_status(&lab, host, "connected with two peers", connected_with(2));
        addrs.push(overlay_address(&st));
    }
    let st = wait_status(&lab, "lab", "lax via nyc", |st| {
        st["peers"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["name"] == "lax" && p["route"] == "via nyc")
        })
    });
    assert_eq!(st["node"]["hub"], false);
    assert_eq!(forwarding(&lab, "nyc"), "1", "the hub forwards");
    ping_every_pair(&lab, &addrs);

    lab.stop("agent-nyc");
    assert_eq!(forwarding(&lab, "nyc"), "0", "forwarding put back");
    for host in ["lax", "lab"] {
        lab.stop(&format!("agent-{host}"));
    }
}
