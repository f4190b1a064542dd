//! `wgmesh up` (the node agent, in the foreground until SIGTERM/SIGINT)
//! and `wgmesh status` (what the running agent reports on its status
//! socket). The agent itself is wgmesh-agent's.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use clap::Args;
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use wgmesh_agent::run::{DEFAULT_INTERFACE, DEFAULT_LISTEN_PORT, UpConfig};
use wgmesh_agent::state::DEFAULT_STATE_DIR;
use wgmesh_agent::status::{self, Status};
use zeroize::Zeroizing;

/// Read when `--setup-key` is not given, so that the key need not be on
/// the command line (where `ps` shows it).
pub const SETUP_KEY_ENV: &str = "WGMESH_SETUP_KEY";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The coordination server, e.g. https://mesh.example.com
    #[arg(long, value_name = "URL")]
    server: String,
    /// The setup key, needed the first time only (or set WGMESH_SETUP_KEY).
    #[arg(long, value_name = "KEY")]
    setup_key: Option<String>,
    /// The node's name in the network (default: the host name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where the node key, credential and cached map are kept.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Also trust the CA certificates in this PEM file for the server.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The WireGuard interface's name.
    #[arg(long, value_name = "IFACE", default_value = DEFAULT_INTERFACE)]
    interface: String,
    /// The engine's UDP port.
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_LISTEN_PORT)]
    listen_port: u16,
    /// The STUN server (default: the server's host, port 3478).
    #[arg(long, value_name = "HOST:PORT")]
    stun: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The running agent's state directory (its status socket is there).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Print the JSON the agent reports instead of a table.
    #[arg(long, conflicts_with = "metrics")]
    json: bool,
    /// Print Prometheus metrics (path counts, hole punching, time to
    /// direct) instead of a table.
    #[arg(long)]
    metrics: bool,
}

pub fn up(args: UpArgs) -> Result<()> {
    let setup_key = args
        .setup_key
        .or_else(|| std::env::var(SETUP_KEY_ENV).ok())
        .filter(|k| !k.is_empty())
        .map(Zeroizing::new);
    let mut cfg = UpConfig::new(&args.server);
    cfg.setup_key = setup_key;
    cfg.name = args.name;
    cfg.state_dir = args.state_dir;
    cfg.ca_file = args.ca_file;
    cfg.interface = args.interface;
    cfg.listen_port = args.listen_port;
    cfg.stun = args.stun;
    wgmesh_agent::up(cfg)?;
    Ok(())
}

pub fn status(args: StatusArgs) -> Result<()> {
    let st = status::query(&args.state_dir)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&st).context("status as JSON")?
        );
        return Ok(());
    }
    if args.metrics {
        print!("{}", metrics(&st));
        return Ok(());
    }
    print!("{}", render(&st, now_secs()));
    Ok(())
}

/// The path metrics in Prometheus' text format.
fn metrics(st: &Status) -> String {
    let p = &st.paths;
    let mut out = String::new();
    out.push_str(
        "# HELP wgmesh_peers Peers by the path their traffic takes.\n# TYPE wgmesh_peers gauge\n",
    );
    for (path, n) in [
        ("direct", p.direct),
        ("relayed", p.relayed),
        ("unreachable", p.unreachable),
    ] {
        out.push_str(&format!("wgmesh_peers{{path=\"{path}\"}} {n}\n"));
    }
    out.push_str(&format!(
        "# HELP wgmesh_disco_pings_total Disco pings sent (hole-punch attempts and heartbeats).\n# TYPE wgmesh_disco_pings_total counter\nwgmesh_disco_pings_total {}\n",
        p.pings_sent
    ));
    out.push_str(&format!(
        "# HELP wgmesh_direct_established_total Times a peer's traffic went direct.\n# TYPE wgmesh_direct_established_total counter\nwgmesh_direct_established_total {}\n",
        p.direct_established
    ));
    let sum: u64 = p.time_to_direct_ms.iter().sum();
    out.push_str(&format!(
        "# HELP wgmesh_time_to_direct_seconds From a peer joining the map to its first direct path.\n# TYPE wgmesh_time_to_direct_seconds summary\nwgmesh_time_to_direct_seconds_sum {}\nwgmesh_time_to_direct_seconds_count {}\n",
        sum as f64 / 1000.0,
        p.time_to_direct_ms.len()
    ));
    out.push_str(&format!(
        "# HELP wgmesh_relay_registered Whether the relay in use registered this node.\n# TYPE wgmesh_relay_registered gauge\nwgmesh_relay_registered {}\n",
        u8::from(p.relay_registered)
    ));
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// "12 s ago", "3 min ago", "never".
fn ago(then: Option<u64>, now: u64) -> String {
    match then {
        None => "never".into(),
        Some(t) => {
            let d = now.saturating_sub(t);
            if d < 120 {
                format!("{d} s ago")
            } else if d < 7200 {
                format!("{} min ago", d / 60)
            } else {
                format!("{} h ago", d / 3600)
            }
        }
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn render(st: &Status, now: u64) -> String {
    let mut out = String::new();
    match &st.node {
        Some(n) => out.push_str(&format!(
            "node {} ({}{}) in network {}, interface {} port {}\n",
            n.name,
            n.address,
            if n.hub { ", hub" } else { "" },
            n.network,
            st.interface,
            st.listen_port
        )),
        None => out.push_str(&format!("interface {} (no map yet)\n", st.interface)),
    }
    out.push_str(&format!(
        "server {}: {}{}\n",
        st.server,
        if st.connected {
            "connected"
        } else {
            "NOT connected"
        },
        st.map_version
            .map(|v| format!(", map version {v}"))
            .unwrap_or_default()
    ));
    if let Some(e) = &st.last_error
        && !st.connected
    {
        out.push_str(&format!("last error: {e}\n"));
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED);
    table.set_header([
        "peer",
        "address",
        "route",
        "endpoint",
        "handshake",
        "rx",
        "tx",
    ]);
    for p in &st.peers {
        table.add_row([
            p.name.clone(),
            p.address.to_string(),
            p.route.clone(),
            p.endpoint.map_or_else(|| "-".into(), |e| e.to_string()),
            ago(p.last_handshake, now),
            bytes(p.rx_bytes),
            bytes(p.tx_bytes),
        ]);
    }
    out.push_str(&format!("{table}\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgmesh_agent::status::{NodeStatus, PeerStatus};

    #[test]
    fn a_status_table() {
        let st = Status {
            node: Some(NodeStatus {
                name: "nyc".into(),
                network: "net".into(),
                public_key: "k".into(),
                address: "100.64.0.1/10".parse().unwrap(),
                hub: true,
            }),
            interface: "wgmesh0".into(),
            listen_port: 51820,
            server: "http://192.0.2.1:8080".into(),
            connected: false,
            last_error: Some("connection refused".into()),
            map_version: Some(7),
            endpoints: Default::default(),
            peers: vec![PeerStatus {
                name: "lax".into(),
                public_key: "p".into(),
                address: "100.64.0.2".parse().unwrap(),
                route: "direct".into(),
                endpoint: Some("192.0.2.2:51820".parse().unwrap()),
                last_handshake: Some(1000),
                rx_bytes: 2048,
                tx_bytes: 10,
            }],
            paths: Default::default(),
        };
        let text = render(&st, 1030);
        assert!(
            text.contains("node nyc (100.64.0.1/10, hub) in network net"),
            "{text}"
        );
        assert!(text.contains("NOT connected, map version 7"), "{text}");
        assert!(text.contains("last error: connection refused"), "{text}");
        for cell in [
            "lax",
            "100.64.0.2",
            "192.0.2.2:51820",
            "30 s ago",
            "2.0 KiB",
            "10 B",
        ] {
            assert!(text.contains(cell), "{cell} in {text}");
        }
    }
}
