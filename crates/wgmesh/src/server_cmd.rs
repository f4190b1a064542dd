//! `wgmesh server init` and `wgmesh server`: the coordination server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use wgmesh_server::serve::{self, ServerConfig};
use wgmesh_server::service::ServiceConfig;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ServerArgs {
    #[command(subcommand)]
    init: Option<ServerInit>,
    /// Where the REST API listens.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// sqlite:///path/to/file.db (created on first start) or postgres://…
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Serve plain HTTP (behind a TLS-terminating proxy only).
    #[arg(long)]
    insecure_http: bool,
    /// The HTTPS certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The HTTPS private key (PEM).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// The STUN responder's UDP address (default: the --listen address
    /// on port 3478); "off" for none.
    #[arg(long, value_name = "ADDR:PORT|off")]
    stun_listen: Option<String>,
    /// Where Prometheus scrapes `GET /metrics` (plain HTTP); "off" for
    /// none. Not on the API's port.
    #[arg(long, value_name = "ADDR:PORT|off", default_value = "127.0.0.1:9090")]
    metrics_listen: String,
    /// Seconds a removed node's address waits before it is given out again.
    #[arg(long, value_name = "SECS", default_value_t = 86_400)]
    address_grace_secs: i64,
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
    let listen = args.listen.context("--listen ADDR:PORT is required")?;
    let database = args.database.context("--database URL is required")?;
    let transport = serve::transport(args.insecure_http, args.tls_cert, args.tls_key)?;
    let stun_listen = match args.stun_listen.as_deref() {
        Some("off") => None,
        Some(addr) => Some(
            addr.parse()
                .with_context(|| format!("--stun-listen {addr:?} is not ADDR:PORT or off"))?,
        ),
        None => Some(SocketAddr::new(listen.ip(), 3478)),
    };
    let metrics_listen = crate::listen_flag::parse("--metrics-listen", &args.metrics_listen)?;
    let config = ServerConfig {
        listen,
        database,
        transport,
        stun_listen,
        metrics_listen,
        service: ServiceConfig {
            address_grace: args.address_grace_secs,
        },
    };
    runtime()?.block_on(serve::run(config))
}
