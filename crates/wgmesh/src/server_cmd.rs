//! `wgmesh server init` and `wgmesh server`: the coordination server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use wgmesh_server::serve::{self, ServerConfig};
use wgmesh_server::service::ServiceConfig;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    init: Option<ServerInit>,
    /// The config file (default: /etc/wgmesh/server.toml, if it exists).
    #[arg(long, env = "WGMESH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration (flags, WGMESH_* variables, the
    /// file, defaults) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Where the REST API listens.
    #[arg(long, env = "WGMESH_LISTEN", value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// sqlite:///path/to/file.db (created on first start) or postgres://…
    #[arg(long, env = "WGMESH_DATABASE", value_name = "URL")]
    database: Option<String>,
    /// Serve plain HTTP (behind a TLS-terminating proxy only).
    #[arg(long, env = "WGMESH_INSECURE_HTTP")]
    insecure_http: bool,
    /// The HTTPS certificate chain (PEM).
    #[arg(long, env = "WGMESH_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The HTTPS private key (PEM).
    #[arg(long, env = "WGMESH_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The STUN responder's UDP address (default: the --listen address
    /// on port 3478); "off" for none.
    #[arg(long, env = "WGMESH_STUN_LISTEN", value_name = "ADDR:PORT|off")]
    stun_listen: Option<String>,
    /// Where Prometheus scrapes `GET /metrics` (plain HTTP); "off" for
    /// none. Not on the API's port. [default: 127.0.0.1:9090]
    #[arg(long, env = "WGMESH_METRICS_LISTEN", value_name = "ADDR:PORT|off")]
    metrics_listen: Option<String>,
    /// Seconds a removed node's address waits before it is given out
    /// again. [default: 86400]
    #[arg(long, env = "WGMESH_ADDRESS_GRACE_SECS", value_name = "SECS")]
    address_grace_secs: Option<i64>,
}

/// /etc/wgmesh/server.toml: one key per flag of `wgmesh server`
/// (docs/config.md lists them).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    pub insecure_http: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub stun_listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub address_grace_secs: Option<i64>,
}

const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9090";
const DEFAULT_ADDRESS_GRACE_SECS: i64 = 86_400;

/// Flags and variables (clap's) over the file, the file over defaults.
fn effective(args: ServerArgs, file: ServerFile) -> ServerFile {
    ServerFile {
        listen: args.listen.or(file.listen),
        database: args.database.or(file.database),
        // A bare flag cannot say "false": absent, the file decides.
        insecure_http: Some(args.insecure_http || file.insecure_http.unwrap_or(false)),
        tls_cert: args.tls_cert.or(file.tls_cert),
        tls_key: args.tls_key.or(file.tls_key),
        stun_listen: args.stun_listen.or(file.stun_listen),
        metrics_listen: args
            .metrics_listen
            .or(file.metrics_listen)
            .or_else(|| Some(DEFAULT_METRICS_LISTEN.to_owned())),
        address_grace_secs: args
            .address_grace_secs
            .or(file.address_grace_secs)
            .or(Some(DEFAULT_ADDRESS_GRACE_SECS)),
    }
}

#[derive(Debug, Subcommand)]
enum ServerInit {
    /// Create the database and the first admin token, printed once as
    /// the last line of output.
    Init {
        #[arg(long, value_name = "URL")]
        database: String,
        /// Add an admin token to a database that has one already (when
        /// every token is lost).
        #[arg(long)]
        force: bool,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    if let Some(ServerInit::Init { database, force }) = args.init {
        let token = runtime()?.block_on(serve::init(&database, force))?;
        println!("database ready: {database}");
        println!("the first admin token follows; it is shown only this once:");
        println!("{token}");
        return Ok(());
    }
    let file = crate::config_file::load::<ServerFile>("server", args.config.as_deref())?;
    let print = args.print_config;
    let eff = effective(args, file);
    if print {
        // Nothing here is a secret (a postgres:// password aside, which
        // belongs in PGPASSFILE, not the URL).
        print!("{}", crate::config_file::render(&eff)?);
        return Ok(());
    }
    let listen = eff.listen.context("--listen ADDR:PORT is required")?;
    let database = eff.database.context("--database URL is required")?;
    let transport = serve::transport(
        eff.insecure_http.unwrap_or(false),
        eff.tls_cert,
        eff.tls_key,
    )?;
    let stun_listen = match eff.stun_listen.as_deref() {
        Some("off") => None,
        Some(addr) => Some(
            addr.parse()
                .with_context(|| format!("--stun-listen {addr:?} is not ADDR:PORT or off"))?,
        ),
        None => Some(SocketAddr::new(listen.ip(), 3478)),
    };
    let metrics_listen = crate::listen_flag::parse(
        "--metrics-listen",
        eff.metrics_listen
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_LISTEN),
    )?;
    let config = ServerConfig {
        listen,
        database,
        transport,
        stun_listen,
        metrics_listen,
        service: ServiceConfig {
            address_grace: eff.address_grace_secs.unwrap_or(DEFAULT_ADDRESS_GRACE_SECS),
        },
    };
    runtime()?.block_on(serve::run(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of server.toml, with its flag and variable, is in
    /// docs/config.md's table, so the two cannot drift apart.
    #[test]
    fn docs_list_every_key() {
        let all = ServerFile {
            listen: Some("127.0.0.1:1".parse().unwrap()),
            database: Some(String::new()),
            insecure_http: Some(true),
            tls_cert: Some(PathBuf::new()),
            tls_key: Some(PathBuf::new()),
            stun_listen: Some(String::new()),
            metrics_listen: Some(String::new()),
            address_grace_secs: Some(1),
        };
        let docs = include_str!("../../../docs/config.md");
        let toml = crate::config_file::render(&all).unwrap();
        let keys: Vec<&str> = toml.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(keys.len(), 8, "{toml}");
        for key in keys {
            let flag = format!("--{}", key.replace('_', "-"));
            let var = format!("WGMESH_{}", key.to_uppercase());
            let row = format!("| `{key}` ");
            let line = docs
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("docs/config.md has no row for {key}"));
            assert!(line.contains(&format!("`{flag}`")), "{line}");
            assert!(line.contains(&format!("`{var}`")), "{line}");
        }
    }
}
