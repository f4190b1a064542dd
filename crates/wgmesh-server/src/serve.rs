//! Running the server: `wgmesh server init` and `wgmesh server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::UdpSocket;

use crate::db::Db;
use crate::lock::DbLock;
use crate::service::{Actor, Service, ServiceConfig};

/// How the HTTP side is served.
#[derive(Debug, Clone)]
pub enum Transport {
    /// HTTPS with this certificate chain and key (PEM).
    Tls { cert: PathBuf, key: PathBuf },
    /// Plain HTTP, for use behind a TLS-terminating proxy; only with the
    /// operator's explicit `--insecure-http`.
    InsecureHttp,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub database: String,
    pub transport: Transport,
    /// The STUN responder's UDP address; `None` to run none.
    pub stun_listen: Option<SocketAddr>,
    /// The metrics listener's TCP address (plain HTTP, `GET /metrics`);
    /// `None` to run none.
    pub metrics_listen: Option<SocketAddr>,
    pub service: ServiceConfig,
}

/// Takes the SQLite database's lock ([`DbLock`]); `None` for PostgreSQL.
/// `init` makes a missing directory (0700) first.
fn lock(database: &str, holder: &str, init: bool) -> anyhow::Result<Option<DbLock>> {
    let Some(path) = crate::db::sqlite_path(database)? else {
        return Ok(None);
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        if !init {
            return Err(crate::db::DbError::NoDirectory(dir.to_owned()).into());
        }
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the directory {}", dir.display()))?;
    }
    Ok(Some(DbLock::acquire(&path, holder)?))
}

/// `wgmesh server init`: creates the database (a SQLite file 0600 in a
/// 0700 directory), or brings its schema up to date, and makes an admin
/// token, returned for printing once. A database that has an admin token
/// already is refused unless `force` (which adds another: the way back
/// in after losing every token).
pub async fn init(database: &str, force: bool) -> anyhow::Result<String> {
    let _lock = lock(database, "running `wgmesh server init`", true)?;
    let db = Db::create(database).await?;
    let svc = Service::load(db, ServiceConfig::default()).await?;
    let tokens = svc.world().await.admin_tokens.len();
    if tokens > 0 && !force {
        bail!(
            "the database already has {tokens} admin token(s); `wgmesh server init --force` adds another"
        );
    }
    let token = svc
        .create_admin_token(&Actor::Console, "initial")
        .await
        .context("creating the first admin token")?;
    Ok(token)
}

/// A server started by [`start`]: where it listens, and how to stop it.
#[derive(Debug)]
pub struct Running {
    pub http: SocketAddr,
    pub stun: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub service: Arc<Service>,
    handle: axum_server::Handle,
    /// Held until the process ends (SQLite only).
    _lock: Option<DbLock>,
    http_task: tokio::task::JoinHandle<std::io::Result<()>>,
    stun_task: Option<tokio::task::JoinHandle<()>>,
    metrics_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// Stops taking requests, gives open ones 5 s, and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.handle
            .graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        if let Some(t) = self.stun_task {
            t.abort();
        }
        // A scrape is one short response: nothing to drain.
        if let Some(t) = self.metrics_task {
            t.abort();
        }
        self.http_task
            .await
            .context("the HTTP task panicked")?
            .with_context(|| format!("serving on {}", self.http))
    }
}

/// Opens the database, binds the sockets (port 0 picks one) and starts
/// serving in the background.
pub async fn start(config: ServerConfig) -> anyhow::Result<Running> {
    // Before anything else: a second server on the same file must be
    // told so, not fail later on a busy port or split the data.
    let mut lock = lock(
        &config.database,
        &format!("`wgmesh server --listen {}` starting", config.listen),
        false,
    )?;
    let db = Db::open(&config.database).await?;
    let svc = Service::load(db, config.service.clone()).await?;
    let (stun, stun_task) = match config.stun_listen {
        Some(addr) => {
            let sock = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding the STUN responder to UDP {addr}"))?;
            let local = sock.local_addr()?;
            eprintln!("wgmesh server: STUN on udp://{local}");
            let task = tokio::spawn(crate::stun_server::serve(sock, svc.clone()));
            (Some(local), Some(task))
        }
        None => (None, None),
    };
    let (metrics, metrics_task) = match config.metrics_listen {
        Some(addr) => {
            let listener = std::net::TcpListener::bind(addr).with_context(|| {
                format!(
                    "binding the metrics listener to TCP {addr} (--metrics-listen off for none)"
                )
            })?;
            listener.set_nonblocking(true)?;
            let local = listener.local_addr()?;
            eprintln!("wgmesh server: metrics on http://{local}/metrics");
            let app = crate::metrics::app(svc.clone()).into_make_service();
            let server = axum_server::from_tcp(listener);
            (
                Some(local),
                Some(tokio::spawn(async move { server.serve(app).await })),
            )
        }
        None => (None, None),
    };
    let listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding the API to TCP {}", config.listen))?;
    listener.set_nonblocking(true)?;
    let http = listener.local_addr()?;
    if let Some(lock) = &mut lock {
        lock.describe(&format!("`wgmesh server` listening on {http}"))?;
    }
    let app = crate::api::app(svc.clone()).into_make_service();
    let handle = axum_server::Handle::new();
    let http_task = match &config.transport {
        Transport::Tls { cert, key } => {
            // One crypto provider for the process: ring (as gotatun's).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "loading the TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            eprintln!("wgmesh server: listening on https://{http}");
            let server = axum_server::from_tcp_rustls(listener, tls).handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
        Transport::InsecureHttp => {
            eprintln!("wgmesh server: listening on http://{http} (plain HTTP: --insecure-http)");
            let server = axum_server::from_tcp(listener).handle(handle.clone());
            tokio::spawn(async move { server.serve(app).await })
        }
    };
    Ok(Running {
        http,
        stun,
        metrics,
        service: svc,
        handle,
        _lock: lock,
        http_task,
        stun_task,
        metrics_task,
    })
}

/// `wgmesh server`: serves until SIGTERM or SIGINT.
pub async fn run(config: ServerConfig) -> anyhow::Result<()> {
    let running = start(config).await?;
    shutdown_signal().await;
    running.stop().await
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    eprintln!("wgmesh server: stopping");
}

/// Checks the flag combination the CLI was given.
pub fn transport(
    insecure_http: bool,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
) -> anyhow::Result<Transport> {
    match (insecure_http, tls_cert, tls_key) {
        (true, None, None) => Ok(Transport::InsecureHttp),
        (false, Some(cert), Some(key)) => Ok(Transport::Tls { cert, key }),
        (true, _, _) => bail!("--insecure-http and --tls-cert/--tls-key exclude each other"),
        (false, None, None) => bail!(
            "the server needs --tls-cert FILE --tls-key FILE, or --insecure-http to serve plain HTTP behind a TLS proxy"
        ),
        (false, _, _) => bail!("--tls-cert and --tls-key go together"),
    }
}
