//! `wgmesh relay` (serve) and `wgmesh relay pubkey`: the relay's flags,
//! checked and turned into wgmesh-relay's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use wgmesh_proto::relay::{RateLimit, RelayConfig};
use wgmesh_relay::key_file;
use wgmesh_relay::serve::{self, MembersSource, RelayServerConfig, WsListen};

const DEFAULT_STATE_DIR: &str = "/var/lib/wgmesh-relay";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RelayArgs {
    #[command(subcommand)]
    sub: Option<RelaySub>,
    /// The UDP address for relay frames and STUN.
    #[arg(long, value_name = "ADDR:PORT")]
    listen_udp: Option<SocketAddr>,
    /// The TCP address for WebSocket (wss://ADDR:PORT/relay), for nodes
    /// whose networks block UDP.
    #[arg(long, value_name = "ADDR:PORT")]
    listen_ws: Option<SocketAddr>,
    /// The WebSocket listener's TLS certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The WebSocket listener's TLS private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve plain ws:// (behind a TLS-terminating proxy only).
    #[arg(long)]
    insecure_ws: bool,
    /// The coordination server to take the membership from.
    #[arg(long, value_name = "URL", requires = "token_file")]
    server: Option<String>,
    /// The relay token for --server (a file of mode 0600).
    #[arg(long, value_name = "FILE", requires = "server")]
    token_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust for --server, besides the system's.
    #[arg(long, value_name = "FILE", requires = "server")]
    ca_file: Option<PathBuf>,
    /// Seconds between membership polls of --server.
    #[arg(long, value_name = "SECS", default_value_t = 2, requires = "server")]
    members_interval_secs: u64,
    /// Take the membership from FILE instead (one base64 public key per
    /// line, re-read when it changes).
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    members_file: Option<PathBuf>,
    /// Where the relay's static key lives (made on first start).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Each node's relayed payload rate, in kilobits per second (burst: one
    /// second's worth, at least 64 KiB). Unlimited when absent.
    #[arg(long, value_name = "N")]
    rate_limit_kbps: Option<u64>,
    /// Where Prometheus scrapes `GET /metrics` (plain HTTP); "off" for
    /// none.
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "127.0.0.1:9091")]
    metrics_listen: String,
}

#[derive(Debug, Subcommand)]
enum RelaySub {
    /// Print the relay's public key (making the key first if there is none).
    Pubkey {
        #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}

/// The token bucket for `kbps`.
fn rate_limit(kbps: u64) -> anyhow::Result<RateLimit> {
    if kbps == 0 {
        bail!("--rate-limit-kbps must be at least 1");
    }
    let bytes_per_sec = kbps.saturating_mul(1000) / 8;
    Ok(RateLimit {
        bytes_per_sec,
        burst_bytes: bytes_per_sec.max(65_536),
    })
}

pub fn run(args: RelayArgs) -> anyhow::Result<()> {
    if let Some(RelaySub::Pubkey { state_dir }) = args.sub {
        let (key, made) = key_file::load_or_create(&state_dir)?;
        if made {
            eprintln!(
                "wgmesh relay: made a new key in {}",
                key_file::key_path(&state_dir).display()
            );
        }
        println!("{}", key.public_key());
        return Ok(());
    }
    let listen_udp = args
        .listen_udp
        .context("--listen-udp ADDR:PORT is required")?;
    let ws = match (
        args.listen_ws,
        args.insecure_ws,
        args.tls_cert,
        args.tls_key,
    ) {
        (None, false, None, None) => None,
        (None, _, _, _) => bail!("--tls-cert, --tls-key and --insecure-ws go with --listen-ws"),
        (Some(listen), true, None, None) => Some(WsListen { listen, tls: None }),
        (Some(listen), false, Some(cert), Some(key)) => Some(WsListen {
            listen,
            tls: Some((cert, key)),
        }),
        (Some(_), true, _, _) => bail!("--insecure-ws and --tls-cert/--tls-key exclude each other"),
        (Some(_), false, None, None) => bail!(
            "--listen-ws needs --tls-cert FILE --tls-key FILE, or --insecure-ws to serve plain ws behind a TLS proxy"
        ),
        (Some(_), false, _, _) => bail!("--tls-cert and --tls-key go together"),
    };
    let members = match (args.server, args.token_file, args.members_file) {
        (Some(url), Some(token_file), None) => {
            let token = crate::secret_file::read_private(&token_file)?
                .with_context(|| format!("{} does not exist", token_file.display()))?;
            MembersSource::Server {
                url,
                token: token.trim().to_owned(),
                ca_file: args.ca_file,
                interval: Duration::from_secs(args.members_interval_secs.max(1)),
            }
        }
        (None, None, Some(path)) => MembersSource::File(path),
        _ => bail!(
            "the relay needs its members: --server URL --token-file FILE, or --members-file FILE"
        ),
    };
    let (key, made) = key_file::load_or_create(&args.state_dir)?;
    if made {
        eprintln!(
            "wgmesh relay: made a new key in {}",
            key_file::key_path(&args.state_dir).display()
        );
    }
    let metrics_listen = crate::listen_flag::parse("--metrics-listen", &args.metrics_listen)?;
    let config = RelayServerConfig {
        listen_udp,
        ws,
        members,
        key,
        metrics_listen,
        core: RelayConfig {
            rate_limit: args.rate_limit_kbps.map(rate_limit).transpose()?,
            ..RelayConfig::default()
        },
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve::run(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kbps_to_bytes() {
        let r = rate_limit(8_000).unwrap();
        assert_eq!(r.bytes_per_sec, 1_000_000);
        assert_eq!(r.burst_bytes, 1_000_000);
        assert_eq!(rate_limit(80).unwrap().burst_bytes, 65_536);
        assert!(rate_limit(0).is_err());
    }
}
