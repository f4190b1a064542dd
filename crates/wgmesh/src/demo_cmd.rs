//! `wgmesh demo`: the seed's world, live, in network namespaces (root).
//!
//! nyc and lax on public addresses, lab behind a home NAT router
//! (port-restricted, RFC 4787), and roam behind a symmetric NAT. The
//! coordination server and a relay run on nyc, and an agent on every node:
//! each pair goes direct where the NATs allow it (disco finds the path)
//! and through the relay where they do not (lab ↔ roam); the demo
//! shows, for every ordered pair of nodes, the path its traffic takes, the
//! round-trip time (one overlay ping per refresh) and the bytes moved, as
//! the mesh forms. Ctrl-C tears it all down (the lab removes its
//! namespaces and processes when dropped).
//!
//! `--check` runs the same without the live view: it prints the final
//! table and exits 0 once every pair pings and every path is what it
//! should be, or exits non-zero with the reasons after `--timeout`.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use wgmesh_agent::status::Status;
use wgmesh_lab::{Hairpin, Lab, NatKind};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// No live view: exit 0 once the mesh is as it should be, non-zero
    /// with the reasons after --timeout.
    #[arg(long)]
    check: bool,
    /// Seconds --check waits for the mesh.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

const SERVER_ADDR: &str = "203.0.113.10";
const OVERLAY: &str = "10.10.0.0/24";
const RELAY_PORT: u16 = 3340;

/// The demo's nodes: name, and whether traffic between two of them may
/// take a direct path (both behind NAT, one of them symmetric: it may not).
const NODES: [&str; 4] = ["nyc", "lax", "lab", "roam"];

fn direct_expected(a: &str, b: &str) -> bool {
    let natted = |n: &str| n == "lab" || n == "roam";
    !(natted(a) && natted(b))
}

struct Demo {
    lab: Lab,
    wgmesh: String,
    token: String,
}

impl Demo {
    /// Stops the agents with SIGTERM, so each takes its interface and
    /// UAPI socket down, then the relay and the server; dropping the lab
    /// then removes the namespaces (and would SIGKILL what is left).
    fn teardown(mut self) {
        for host in NODES {
            self.lab.stop(&format!("agent-{host}"));
        }
        self.lab.stop("relay");
        self.lab.stop("server");
    }

    fn state_dir(&self, host: &str) -> String {
        self.lab
            .log_dir()
            .join(format!("state-{host}"))
            .to_string_lossy()
            .into_owned()
    }

    fn admin(&self, args: &[&str]) -> Result<String> {
        let tok = format!("WGMESH_TOKEN={}", self.token);
        let mut argv = vec![
            "env",
            &tok,
            &self.wgmesh,
            "admin",
            "--server",
            "http://127.0.0.1:8080",
        ];
        argv.extend_from_slice(args);
        let out = self.lab.exec("nyc", &argv)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn status(&self, host: &str) -> Option<Status> {
        let out = self
            .lab
            .exec(
                host,
                &[
                    &self.wgmesh,
                    "status",
                    "--json",
                    "--state-dir",
                    &self.state_dir(host),
                ],
            )
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }
}

fn build(stop: &AtomicBool) -> Result<Demo> {
    let wgmesh = std::env::current_exe()
        .context("finding the wgmesh binary")?
        .to_string_lossy()
        .into_owned();
    let mut lab = Lab::new().context("the demo needs root and network namespaces")?;
    eprintln!(
        "building the world in namespaces (lab {})…",
        lab.id().as_str()
    );
    lab.add_public_host("nyc", SERVER_ADDR.parse()?)?;
    lab.add_public_host("lax", "198.51.100.20".parse()?)?;
    lab.add_router(
        "home",
        "198.51.100.10".parse()?,
        "10.1.0.0/24".parse()?,
        NatKind::PortRestricted,
        Hairpin::Off,
    )?;
    lab.add_lan_host("lab", "home")?;
    lab.add_router(
        "cafe",
        "192.0.2.30".parse()?,
        "10.2.0.0/24".parse()?,
        NatKind::Symmetric,
        Hairpin::Off,
    )?;
    lab.add_lan_host("roam", "cafe")?;

    let db = format!("sqlite://{}/server.db", lab.log_dir().display());
    let init = lab.exec("nyc", &[&wgmesh, "server", "init", "--database", &db])?;
    let token = String::from_utf8_lossy(&init.stdout)
        .lines()
        .last()
        .context("server init printed no token")?
        .trim()
        .to_owned();
    lab.spawn(
        "nyc",
        "server",
        &[
            &wgmesh,
            "server",
            "--listen",
            "0.0.0.0:8080",
            "--database",
            &db,
            "--insecure-http",
        ],
    )?;
    let demo = Demo { lab, wgmesh, token };
    let deadline = Instant::now() + Duration::from_secs(30);
    while demo.admin(&["networks", "list"]).is_err() {
        if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
            bail!("the server did not answer:\n{}", demo.lab.logs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    demo.admin(&["networks", "create", "seed", "--overlay", OVERLAY])?;
    let key = |args: &[&str]| -> Result<String> {
        let mut argv = vec!["setup-keys", "create"];
        argv.extend_from_slice(args);
        Ok(demo
            .admin(&argv)?
            .lines()
            .last()
            .context("no setup key printed")?
            .trim()
            .to_owned())
    };
    let hub_key = key(&["--hub"])?;
    let node_key = key(&["--reusable"])?;
    let mut demo = demo;
    // The relay on nyc: its key, its registration (a relay token), then
    // the relay itself, which learns the members from the server.
    let relay_dir = demo.lab.log_dir().join("relay");
    let relay_dir = relay_dir.to_string_lossy().into_owned();
    let relay_key = demo.lab.exec(
        "nyc",
        &[&demo.wgmesh, "relay", "pubkey", "--state-dir", &relay_dir],
    )?;
    let relay_key = String::from_utf8_lossy(&relay_key.stdout).trim().to_owned();
    let relay_udp = format!("{SERVER_ADDR}:{RELAY_PORT}");
    let created = demo.admin(&[
        "relays",
        "create",
        "nyc-relay",
        "--public-key",
        &relay_key,
        "--udp",
        &relay_udp,
    ])?;
    let token = created
        .lines()
        .last()
        .context("no relay token printed")?
        .trim()
        .to_owned();
    let token_file = format!("{relay_dir}/token");
    crate::secret_file::write(
        std::path::Path::new(&token_file),
        token.as_bytes(),
        0o600,
        false,
    )
    .context("writing the relay token")?;
    let wgmesh = demo.wgmesh.clone();
    demo.lab.spawn(
        "nyc",
        "relay",
        &[
            &wgmesh,
            "relay",
            "--listen-udp",
            &format!("0.0.0.0:{RELAY_PORT}"),
            "--server",
            "http://127.0.0.1:8080",
            "--token-file",
            &token_file,
            "--members-interval-secs",
            "1",
            "--state-dir",
            &relay_dir,
        ],
    )?;
    for (i, host) in NODES.iter().enumerate() {
        let k = if *host == "nyc" { &hub_key } else { &node_key };
        let env = format!("WGMESH_SETUP_KEY={k}");
        let iface = demo.lab.id().wg_iface(i);
        // A killed agent (a failed test) leaves its UAPI socket.
        demo.lab
            .remove_on_drop(format!("/var/run/wireguard/{iface}.sock").into());
        let state = demo.state_dir(host);
        let server = format!("http://{SERVER_ADDR}:8080");
        let wgmesh = demo.wgmesh.clone();
        demo.lab.spawn(
            host,
            &format!("agent-{host}"),
            &[
                "env",
                &env,
                &wgmesh,
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
        )?;
    }
    Ok(demo)
}

/// One row per ordered pair.
struct Row {
    from: &'static str,
    to: &'static str,
    route: Option<String>,
    rtt: Option<Duration>,
    rx: u64,
    tx: u64,
}

/// One ping over the overlay; its RTT.
fn ping(lab: &Lab, from: &str, to: IpAddr) -> Option<Duration> {
    let out = lab
        .exec(from, &["ping", "-c", "1", "-W", "1", &to.to_string()])
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ms: f64 = text
        .split("time=")
        .nth(1)?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(ms / 1000.0))
}

fn snapshot(demo: &Demo) -> (Vec<Row>, Vec<Option<Status>>) {
    let statuses: Vec<Option<Status>> = NODES.iter().map(|h| demo.status(h)).collect();
    let address = |name: &str| -> Option<IpAddr> {
        let i = NODES.iter().position(|n| *n == name)?;
        Some(statuses[i].as_ref()?.node.as_ref()?.address.addr())
    };
    let mut rows: Vec<Row> = Vec::new();
    for (i, from) in NODES.iter().enumerate() {
        for to in NODES.iter().filter(|t| *t != from) {
            let peer = statuses[i]
                .as_ref()
                .and_then(|s| s.peers.iter().find(|p| p.name == *to));
            rows.push(Row {
                from,
                to,
                route: peer.map(|p| p.route.clone()),
                rtt: None,
                rx: peer.map_or(0, |p| p.rx_bytes),
                tx: peer.map_or(0, |p| p.tx_bytes),
            });
        }
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .iter()
            .map(|r| {
                let to = address(r.to);
                let lab = &demo.lab;
                let from = r.from;
                s.spawn(move || to.and_then(|to| ping(lab, from, to)))
            })
            .collect();
        for (r, h) in rows.iter_mut().zip(handles) {
            r.rtt = h.join().ok().flatten();
        }
    });
    (rows, statuses)
}

fn table(rows: &[Row]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(["from", "to", "path", "RTT", "rx", "tx"]);
    for r in rows {
        t.add_row([
            r.from.to_owned(),
            r.to.to_owned(),
            r.route.clone().unwrap_or_else(|| "-".into()),
            r.rtt.map_or_else(
                || "no reply".into(),
                |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
            ),
            r.rx.to_string(),
            r.tx.to_string(),
        ]);
    }
    t
}

/// What is still wrong, if anything.
fn problems(rows: &[Row], statuses: &[Option<Status>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in statuses.iter().enumerate() {
        match s {
            None => out.push(format!("{}: agent not answering yet", NODES[i])),
            Some(s) if !s.connected => {
                out.push(format!("{}: not connected to the server", NODES[i]))
            }
            Some(_) => {}
        }
    }
    for r in rows {
        if r.rtt.is_none() {
            out.push(format!("{} → {}: no ping reply", r.from, r.to));
        }
        let direct = r.route.as_deref() == Some("direct");
        match (direct_expected(r.from, r.to), &r.route) {
            (_, None) => out.push(format!("{} → {}: not in the map yet", r.from, r.to)),
            (true, Some(route)) if !direct => {
                out.push(format!("{} → {}: {route}, expected direct", r.from, r.to))
            }
            (false, Some(route)) if !route.starts_with("relayed") => out.push(format!(
                "{} → {}: {route}, expected relayed (both behind NAT, one symmetric)",
                r.from, r.to
            )),
            _ => {}
        }
    }
    out
}

pub fn run(args: DemoArgs) -> Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let demo = build(&stop)?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.timeout);
    let mut formed_at: Option<Duration> = None;
    loop {
        let (rows, statuses) = snapshot(&demo);
        let issues = problems(&rows, &statuses);
        if issues.is_empty() && formed_at.is_none() {
            formed_at = Some(start.elapsed());
        }
        if args.check {
            if issues.is_empty() {
                println!("{}", table(&rows));
                println!(
                    "mesh formed in {:.1} s: every pair pings, every path as expected",
                    start.elapsed().as_secs_f64()
                );
                demo.teardown();
                return Ok(ExitCode::SUCCESS);
            }
            if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
                println!("{}", table(&rows));
                eprintln!("the mesh did not form within {} s:", args.timeout);
                for i in &issues {
                    eprintln!("  {i}");
                }
                demo.teardown();
                return Ok(ExitCode::FAILURE);
            }
        } else {
            // Clear the screen and draw from the top.
            print!("\x1b[2J\x1b[H");
            println!(
                "wgmesh demo: nyc, lax (public), lab (behind a port-restricted NAT), roam (behind a symmetric NAT)\nserver on nyc · overlay {OVERLAY} · {:.0} s · Ctrl-C to tear down\n",
                start.elapsed().as_secs_f64()
            );
            println!("{}", table(&rows));
            match formed_at {
                Some(t) if issues.is_empty() => {
                    println!("mesh formed after {:.1} s", t.as_secs_f64())
                }
                _ => {
                    println!("forming…");
                    for i in issues.iter().take(6) {
                        println!("  {i}");
                    }
                }
            }
        }
        let next = Instant::now() + Duration::from_secs(1);
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                eprintln!("tearing down…");
                demo.teardown();
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
