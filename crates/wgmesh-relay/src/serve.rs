//! Running the relay: its UDP socket (relay frames and STUN), its
//! WebSocket listener, its membership source, its metrics listener, and
//! the one loop that owns the [`RelayCore`] and turns what arrives into
//! what is sent.
//!
//! One task owns the core, so there is no lock on the hot path; the UDP
//! socket is read there too. WebSocket connections run as tasks of their
//! own ([`crate::ws`]) and talk to the loop over channels.
//!
//! It does not own the protocol (wgmesh-proto's relay module) or the CLI
//! (crates/wgmesh/src/relay_cmd.rs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use wgmesh_core::key::{PrivateKey, PublicKey};
use wgmesh_proto::relay::core::Unregistered;
use wgmesh_proto::relay::{RelayConfig, RelayCore, RelayCounters, RelayEvent, SessionId};
use wgmesh_proto::stun;

use crate::members::{self, Members, ServerSource};
use crate::ws::{self, WsIn};

/// A WebSocket connection must register within this, or is closed.
const WS_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle registrations and unregistered connections are swept.
const TICK: Duration = Duration::from_millis(500);

/// The WebSocket listener.
#[derive(Debug, Clone)]
pub struct WsListen {
    pub listen: SocketAddr,
    /// The certificate chain and key (PEM); `None` serves plain ws, for
    /// use behind a TLS-terminating proxy only (`--insecure-ws`).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Where the membership comes from.
#[derive(Debug, Clone)]
pub enum MembersSource {
    /// One base64 key per line, re-read when it changes.
    File(PathBuf),
    /// `GET {url}/api/v1/relay/members` with the relay token, every
    /// `interval`.
    Server {
        url: String,
        token: String,
        ca_file: Option<PathBuf>,
        interval: Duration,
    },
}

#[derive(Debug)]
pub struct RelayServerConfig {
    pub listen_udp: SocketAddr,
    pub ws: Option<WsListen>,
    pub members: MembersSource,
    /// The relay's static key.
    pub key: PrivateKey,
    pub core: RelayConfig,
    /// The metrics listener's TCP address (plain HTTP, `GET /metrics`);
    /// `None` to run none.
    pub metrics_listen: Option<SocketAddr>,
}

/// What the relay has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub core: RelayCounters,
    pub members: usize,
    pub registered: usize,
    pub stun_answered: u64,
    /// Of those, by kind: [`crate::metrics::stun_index`].
    pub stun_responses: [u64; 4],
    /// UDP datagrams that were neither relay frames nor STUN requests.
    pub udp_ignored: u64,
    pub ws_connections: u64,
    /// Frames for a WebSocket whose queue was full.
    pub ws_queue_full: u64,
}

impl Stats {
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.core.named().to_vec();
        v.extend([
            ("members", self.members as u64),
            ("registered", self.registered as u64),
            ("stun_answered", self.stun_answered),
            ("udp_ignored", self.udp_ignored),
            ("ws_connections", self.ws_connections),
            ("ws_queue_full", self.ws_queue_full),
        ]);
        v
    }
}

#[derive(Debug)]
pub(crate) enum Cmd {
    Stats(oneshot::Sender<Stats>),
}

/// Asks the loop for its [`Stats`].
pub(crate) async fn stats(cmd: &mpsc::Sender<Cmd>) -> anyhow::Result<Stats> {
    let (tx, rx) = oneshot::channel();
    cmd.send(Cmd::Stats(tx))
        .await
        .context("the relay loop has stopped")?;
    rx.await.context("the relay loop has stopped")
}

/// A relay started by [`start`].
#[derive(Debug)]
pub struct Running {
    pub udp: SocketAddr,
    pub ws: Option<SocketAddr>,
    pub public_key: PublicKey,
    /// Where the metrics listener is, if there is one.
    pub metrics: Option<SocketAddr>,
    cmd: mpsc::Sender<Cmd>,
    core_task: JoinHandle<()>,
    side_tasks: Vec<JoinHandle<()>>,
}

impl Running {
    pub async fn stats(&self) -> anyhow::Result<Stats> {
        stats(&self.cmd).await
    }

    /// Stops the loop and the listeners; open connections are closed.
    pub async fn stop(self) {
        for t in &self.side_tasks {
            t.abort();
        }
        drop(self.cmd);
        let _ = self.core_task.await;
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Binds the sockets (port 0 picks one), starts the membership source and
/// the loop, in the background.
pub async fn start(config: RelayServerConfig) -> anyhow::Result<Running> {
    let udp = UdpSocket::bind(config.listen_udp)
        .await
        .with_context(|| format!("binding the relay to UDP {}", config.listen_udp))?;
    let udp_addr = udp.local_addr()?;
    let mut side_tasks = Vec::new();
    let (ws_tx, ws_rx) = mpsc::channel::<WsIn>(4096);
    let ws_addr = match &config.ws {
        Some(ws_listen) => {
            let acceptor = match &ws_listen.tls {
                Some((cert, key)) => Some(ws::acceptor(crate::tls::server_config(cert, key)?)),
                None => None,
            };
            let listener = TcpListener::bind(ws_listen.listen).await.with_context(|| {
                format!("binding the WebSocket listener to TCP {}", ws_listen.listen)
            })?;
            let addr = listener.local_addr()?;
            side_tasks.push(tokio::spawn(ws::accept_loop(
                listener,
                acceptor,
                ws_tx.clone(),
            )));
            Some(addr)
        }
        None => None,
    };
    let (members_tx, members_rx) = watch::channel::<Members>(Arc::default());
    match config.members {
        MembersSource::File(path) => {
            side_tasks.push(tokio::spawn(members::follow_file(path, members_tx)));
        }
        MembersSource::Server {
            url,
            token,
            ca_file,
            interval,
        } => {
            let source = ServerSource::new(&url, token, ca_file.as_deref())?;
            side_tasks.push(tokio::spawn(source.follow(interval, members_tx)));
        }
    }
    let core = RelayCore::new(config.key, config.core);
    let public_key = core.public_key();
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "binding the metrics listener to TCP {addr} (--metrics-listen off for none)"
                )
            })?;
            let local = listener.local_addr()?;
            side_tasks.push(tokio::spawn(crate::metrics::serve(
                listener,
                cmd_tx.clone(),
            )));
            Some(local)
        }
        None => None,
    };
    let core_task = tokio::spawn(
        Loop {
            core,
            udp,
            conns: HashMap::new(),
            stats: Stats::default(),
            ws_tx_keepalive: ws_tx,
        }
        .run(ws_rx, members_rx, cmd_rx),
    );
    Ok(Running {
        udp: udp_addr,
        ws: ws_addr,
        public_key,
        metrics,
        cmd: cmd_tx,
        core_task,
        side_tasks,
    })
}

/// `wgmesh relay`: serves until SIGTERM or SIGINT, with a line of
/// counters every minute when they changed.
pub async fn run(config: RelayServerConfig) -> anyhow::Result<()> {
    let running = start(config).await?;
    eprintln!("wgmesh relay: public key {}", running.public_key);
    eprintln!("wgmesh relay: UDP (frames and STUN) on {}", running.udp);
    if let Some(ws) = running.ws {
        eprintln!("wgmesh relay: WebSocket on {ws}{}", ws::WS_PATH);
    }
    if let Some(m) = running.metrics {
        eprintln!("wgmesh relay: metrics on http://{m}/metrics");
    }
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await;
    let mut last = Stats::default();
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = every.tick() => {
                let stats = running.stats().await?;
                if stats != last {
                    let line: Vec<String> =
                        stats.named().iter().map(|(k, v)| format!("{k}={v}")).collect();
                    eprintln!("wgmesh relay: {}", line.join(" "));
                    last = stats;
                }
            }
        }
    }
    eprintln!("wgmesh relay: stopping");
    running.stop().await;
    Ok(())
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
        () = term => {}
    }
}

#[derive(Debug)]
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    opened: Instant,
    registered: bool,
}

struct Loop {
    core: RelayCore,
    udp: UdpSocket,
    conns: HashMap<u64, Conn>,
    stats: Stats,
    /// Keeps the WebSocket channel open when there is no listener, so
    /// its branch just waits.
    ws_tx_keepalive: mpsc::Sender<WsIn>,
}

impl Loop {
    async fn run(
        mut self,
        mut ws_rx: mpsc::Receiver<WsIn>,
        mut members: watch::Receiver<Members>,
        mut cmd_rx: mpsc::Receiver<Cmd>,
    ) {
        let mut buf = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut members_open = true;
        loop {
            tokio::select! {
                r = self.udp.recv_from(&mut buf) => {
                    // An error here is Linux reporting an ICMP error from
                    // an earlier send; nothing to do about it.
                    if let Ok((n, from)) = r {
                        self.on_udp(&buf[..n], from).await;
                    }
                }
                Some(msg) = ws_rx.recv() => self.on_ws(msg),
                r = members.changed(), if members_open => match r {
                    Ok(()) => {
                        let set = members.borrow_and_update().clone();
                        self.core.set_members(set.iter().copied());
                    }
                    Err(_) => members_open = false,
                },
                _ = tick.tick() => self.on_tick(),
                cmd = cmd_rx.recv() => match cmd {
                    Some(Cmd::Stats(tx)) => {
                        let mut s = self.stats;
                        s.core = self.core.counters();
                        s.members = self.core.members();
                        s.registered = self.core.registered();
                        let _ = tx.send(s);
                    }
                    None => break,
                },
            }
            self.flush().await;
        }
        drop(self.ws_tx_keepalive);
    }

    async fn on_udp(&mut self, datagram: &[u8], from: SocketAddr) {
        if wgmesh_proto::relay::is_relay(datagram) {
            self.core
                .handle_frame(Instant::now(), unix_ms(), SessionId::Udp(from), datagram);
        } else if let Some(resp) = stun::respond(datagram, from) {
            self.stats.stun_answered += 1;
            self.stats.stun_responses[crate::metrics::stun_index(resp.kind, resp.rfc3489)] += 1;
            let _ = self.udp.send_to(&resp.bytes, from).await;
        } else {
            self.stats.udp_ignored += 1;
        }
    }

    fn on_ws(&mut self, msg: WsIn) {
        match msg {
            WsIn::Opened { id, tx } => {
                self.stats.ws_connections += 1;
                self.conns.insert(
                    id,
                    Conn {
                        tx,
                        opened: Instant::now(),
                        registered: false,
                    },
                );
            }
            WsIn::Frame { id, bytes } => {
                if self.conns.contains_key(&id) {
                    self.core
                        .handle_frame(Instant::now(), unix_ms(), SessionId::Conn(id), &bytes);
                }
            }
            WsIn::Closed { id } => {
                self.conns.remove(&id);
                self.core.handle_session_closed(SessionId::Conn(id));
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.core.handle_timeout(now);
        // Connections that never registered hold a socket for nothing.
        self.conns
            .retain(|_, c| c.registered || now.duration_since(c.opened) < WS_HELLO_TIMEOUT);
    }

    async fn flush(&mut self) {
        while let Some((to, bytes)) = self.core.poll_transmit() {
            match to {
                SessionId::Udp(addr) => {
                    let _ = self.udp.send_to(&bytes, addr).await;
                }
                SessionId::Conn(id) => {
                    if let Some(c) = self.conns.get(&id)
                        && c.tx.try_send(bytes).is_err()
                    {
                        self.stats.ws_queue_full += 1;
                    }
                }
            }
        }
        while let Some(ev) = self.core.poll_event() {
            match ev {
                RelayEvent::Registered {
                    session: SessionId::Conn(id),
                    ..
                } => {
                    if let Some(c) = self.conns.get_mut(&id) {
                        c.registered = true;
                    }
                }
                RelayEvent::Unregistered {
                    session: SessionId::Conn(id),
                    why: Unregistered::Idle | Unregistered::NotMember | Unregistered::Replaced,
                    ..
                } => {
                    // Dropping the sender closes the connection once what
                    // is queued (a refusal) has gone out.
                    self.conns.remove(&id);
                }
                _ => {}
            }
        }
    }
}
