//! `wgmesh up`: the agent's life, from enrolment to teardown.
//!
//! 1. Open the state directory; generate the node key the first time.
//! 2. Get a credential and a map: from the state directory (a restart:
//!    the mesh comes up from the cached map before the server answers),
//!    else by enrolling with the setup key (`POST /api/v1/enroll`), else
//!    by fetching the map; retried with backoff while the server is away.
//! 3. Bring the engine up ([`Interface`]: TUN `--interface`, UDP
//!    `--listen-port`, the node key), the packet filter from the map
//!    (before any peer exists, so nothing passes unfiltered), the overlay
//!    address with the network's prefix length on the TUN (which gives the
//!    overlay route), MTU 1420, and IP forwarding if the node is a hub.
//! 4. Follow the map stream: a `Full` replaces the map, a `Delta` is
//!    applied to it (on a version mismatch the full map is fetched); each
//!    new map becomes the minimal WireGuard `set` ([`crate::apply`]) and
//!    new filter rules, and is cached. A stream that breaks, or is silent
//!    for three heartbeats, is reopened with backoff (1 s → 30 s, jitter);
//!    meanwhile the mesh runs on from the last map.
//! 5. Beside it: endpoint reports (local addresses and the STUN-reflexive
//!    address of the engine's socket) at start, every minute and when the
//!    local addresses change; the status socket.
//! 6. SIGTERM/SIGINT (or a fatal engine error): forwarding restored, the
//!    interface removed (its addresses and routes go with it), the status
//!    socket removed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use wgmesh_core::control::{EndpointReport, EnrollRequest, NatType, enroll_proof};
use wgmesh_core::key::PrivateKey;
use wgmesh_core::netmap::{NetworkMap, Route};
use wgmesh_dataplane::netconf;
use wgmesh_dataplane::{Interface, InterfaceConfig};
use wgmesh_proto::filter::PacketFilter;
use wgmesh_proto::stun;
use wgmesh_proto::uapi::SetCommand;
use zeroize::Zeroizing;

use crate::AgentError;
use crate::apply::diff;
use crate::backoff::Backoff;
use crate::client::{Client, ClientError, StreamItem};
use crate::endpoints;
use crate::forwarding::Forwarding;
use crate::paths;
use crate::state::StateDir;
use crate::status::{self, NodeStatus, PeerStatus, Status};
use crate::update::{Next, after_refetch, next_map};
use wgmesh_proto::disco::path::Path;

/// The interface name when `--interface` is not given.
pub const DEFAULT_INTERFACE: &str = "wgmesh0";
/// WireGuard's customary port.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// 1500 minus the 80 bytes of WireGuard over IPv6, as wg-quick defaults.
pub const MTU: u16 = 1420;
/// The server sends a heartbeat every 15 s; three missed mean the
/// connection is dead even if TCP has not noticed.
const STREAM_SILENCE: Duration = Duration::from_secs(45);
/// How often the host's addresses are looked at.
const ENDPOINT_CHECK: Duration = Duration::from_secs(10);
/// How often endpoints are reported when nothing changed.
const ENDPOINT_REPORT: Duration = Duration::from_secs(60);

/// What `wgmesh up` was asked to do.
#[derive(Clone)]
pub struct UpConfig {
    /// The coordination server's URL.
    pub server: String,
    /// Needed only until the node has enrolled (and when the server has
    /// forgotten its credential).
    pub setup_key: Option<Zeroizing<String>>,
    /// The node's name; the host name when not given.
    pub name: Option<String>,
    pub state_dir: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub interface: String,
    pub listen_port: u16,
    /// `HOST:PORT` of the STUN server; the server URL's host, port 3478,
    /// when not given.
    pub stun: Option<String>,
}

impl std::fmt::Debug for UpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpConfig")
            .field("server", &self.server)
            .field("setup_key", &self.setup_key.as_ref().map(|_| "…"))
            .field("name", &self.name)
            .field("state_dir", &self.state_dir)
            .field("ca_file", &self.ca_file)
            .field("interface", &self.interface)
            .field("listen_port", &self.listen_port)
            .field("stun", &self.stun)
            .finish()
    }
}

impl UpConfig {
    pub fn new(server: &str) -> Self {
        Self {
            server: server.to_owned(),
            setup_key: None,
            name: None,
            state_dir: PathBuf::from(crate::state::DEFAULT_STATE_DIR),
            ca_file: None,
            interface: DEFAULT_INTERFACE.to_owned(),
            listen_port: DEFAULT_LISTEN_PORT,
            stun: None,
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT, on a runtime of its own.
pub fn up(config: UpConfig) -> Result<(), AgentError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AgentError::Config(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(run(config))
}

/// Why the agent stops.
#[derive(Debug)]
enum Stop {
    Signal(&'static str),
    Fatal(String),
    /// The server refused the credential (401): the node was removed.
    Refused(String),
}

struct Shutdown {
    term: Signal,
    int: Signal,
    fatal: mpsc::UnboundedReceiver<String>,
}

impl Shutdown {
    async fn wait(&mut self) -> Stop {
        tokio::select! {
            _ = self.term.recv() => Stop::Signal("SIGTERM"),
            _ = self.int.recv() => Stop::Signal("SIGINT"),
            why = self.fatal.recv() => Stop::Fatal(why.unwrap_or_else(|| "the engine stopped".into())),
        }
    }
}

/// What the agent knows, shared with the status socket and the
/// endpoint reporter.
#[derive(Debug, Default)]
struct View {
    map: Option<NetworkMap>,
    connected: bool,
    last_error: Option<String>,
    endpoints: EndpointReport,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Agent {
    /// To the disco/relay task ([`crate::paths`]).
    paths: mpsc::Sender<paths::Input>,
    path_view: Shared<paths::PathView>,
    cfg: UpConfig,
    name: String,
    state: StateDir,
    client: Client,
    key: PrivateKey,
    credential: Shared<Zeroizing<String>>,
    view: Shared<View>,
}

/// The agent's whole life; see the module doc.
pub async fn run(cfg: UpConfig) -> Result<(), AgentError> {
    check_iface_name(&cfg.interface)?;
    let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
    let sig =
        |kind| signal(kind).map_err(|e| AgentError::Config(format!("cannot handle signals: {e}")));
    let mut shutdown = Shutdown {
        term: sig(SignalKind::terminate())?,
        int: sig(SignalKind::interrupt())?,
        fatal: fatal_rx,
    };
    let state = StateDir::open(&cfg.state_dir)?;
    // One agent per state directory: two would share a key and a
    // credential, and fight over the status socket.
    if std::os::unix::net::UnixStream::connect(state.status_socket()).is_ok() {
        return Err(AgentError::Config(format!(
            "another agent runs with the state directory {} (its status socket answers)",
            state.path().display()
        )));
    }
    if netconf::ip(&["link", "show", "dev", &cfg.interface]).is_ok() {
        return Err(AgentError::Config(format!(
            "a network interface called {} exists already",
            cfg.interface
        )));
    }
    let (key, made) = state.load_or_create_key()?;
    eprintln!(
        "wgmesh: node public key {} ({})",
        key.public_key(),
        if made {
            "new"
        } else {
            "from the state directory"
        }
    );
    let client = Client::new(&cfg.server, cfg.ca_file.as_deref())?;
    let name = match &cfg.name {
        Some(n) => n.clone(),
        None => host_name()?,
    };
    let cached = match state.cached_map() {
        Ok(Some(m)) if m.node.public_key == key.public_key() => Some(m),
        Ok(Some(_)) => {
            eprintln!("wgmesh: the cached map is for another key; ignoring it");
            None
        }
        Ok(None) => None,
        Err(e) => {
            eprintln!("wgmesh: ignoring the cached map: {e}");
            None
        }
    };
    let (paths_tx, paths_rx) = mpsc::channel(1024);
    let mut agent = Agent {
        paths: paths_tx.clone(),
        path_view: Arc::default(),
        name,
        state,
        client,
        key,
        credential: Arc::new(Mutex::new(Zeroizing::new(String::new()))),
        view: Arc::default(),
        cfg,
    };
    let mut backoff = Backoff::default();
    let credential = agent.state.credential()?;
    if credential.is_none() && agent.cfg.setup_key.is_none() {
        return Err(AgentError::Refused(format!(
            "this node has no credential (never enrolled, or removed) in {}: give --setup-key KEY \
             (or WGMESH_SETUP_KEY)",
            agent.state.path().display()
        )));
    }
    let map = match (credential, cached) {
        (Some(cred), Some(map)) => {
            eprintln!(
                "wgmesh: starting from the cached map (version {}) while the server is asked",
                map.version
            );
            *lock(&agent.credential) = cred;
            map
        }
        (cred, _) => {
            let have_cred = cred.is_some();
            if let Some(c) = cred {
                *lock(&agent.credential) = c;
            }
            match agent.obtain(have_cred, &mut backoff, &mut shutdown).await? {
                Some(map) => map,
                None => return Ok(()),
            }
        }
    };

    // The engine.
    let (stun_tx, stun_rx) = mpsc::channel(64);
    let mut icfg = InterfaceConfig::new(&agent.cfg.interface);
    icfg.mtu = MTU;
    icfg.listen_port = agent.cfg.listen_port;
    icfg.on_fatal = Some(Arc::new(move |why: &str| {
        let _ = fatal_tx.send(why.to_owned());
    }));
    let foreign_paths = paths_tx.clone();
    icfg.on_foreign = Some(Arc::new(move |from: SocketAddr, bytes: &[u8]| {
        if stun::is_stun(bytes) {
            // Full: the reporter is not waiting; an answer nobody asked
            // for now is dropped.
            let _ = stun_tx.try_send((from, bytes.to_vec()));
        } else {
            // Disco or relay. Full: dropped, as a congested link would.
            let _ = foreign_paths.try_send(paths::Input::Foreign(from, bytes.to_vec()));
        }
    }));
    let ws_inputs = paths_tx.clone();
    let divert_paths = paths_tx;
    icfg.on_divert = Some(Arc::new(move |to: SocketAddr, bytes: &[u8]| {
        let _ = divert_paths.try_send(paths::Input::Diverted(to, bytes.to_vec()));
    }));
    let iface = Arc::new(Interface::start(icfg)?);
    // TLS for relays' WebSockets: the system's roots and --ca-file.
    let relay_tls = match wgmesh_relay::tls::client_config(agent.cfg.ca_file.as_deref()) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("wgmesh: no TLS for relay WebSockets: {e:#}");
            None
        }
    };
    let paths_task = tokio::spawn(paths::run(
        Arc::clone(&iface),
        agent.key.clone(),
        ws_inputs,
        paths_rx,
        Arc::clone(&agent.path_view),
        relay_tls,
    ));
    let mut forwarding = Forwarding::default();
    let result = async {
        iface.apply(&SetCommand {
            private_key: Some(Some(agent.key.clone())),
            ..SetCommand::default()
        })?;
        // The filter before any peer: nothing gets in unfiltered.
        iface.with_device(|d| d.set_filter(Some(PacketFilter::from_map(&map))));
        let tun = agent.cfg.interface.clone();
        // No IPv6 link-local address, as kernel WireGuard devices have none
        // (first: it would only send router solicitations no peer routes).
        if let Err(e) = ip(&["link", "set", "dev", &tun, "addrgenmode", "none"]) {
            eprintln!("wgmesh: {e}");
        }
        ip(&[
            netconf::family(map.node.address.addr()),
            "address",
            "add",
            &map.node.address.to_string(),
            "dev",
            &tun,
        ])?;
        ip(&["link", "set", "up", "dev", &tun])?;
        agent.install(&iface, &mut forwarding, map, true);
        Ok::<(), AgentError>(())
    }
    .await;
    let stop = match result {
        Err(e) => Err(e),
        Ok(()) => Ok(agent
            .serve(
                &iface,
                &mut forwarding,
                stun_rx,
                &mut backoff,
                &mut shutdown,
            )
            .await),
    };
    // Teardown, whatever happened.
    paths_task.abort();
    let _ = paths_task.await;
    forwarding.restore();
    match Arc::try_unwrap(iface) {
        Ok(i) => i.shutdown(),
        Err(i) => {
            eprintln!("wgmesh: the interface is still in use at teardown; dropping it");
            drop(i);
        }
    }
    let _ = std::fs::remove_file(agent.state.status_socket());
    eprintln!("wgmesh: {} is down", agent.cfg.interface);
    match stop? {
        Stop::Signal(_) => Ok(()),
        Stop::Fatal(why) => Err(AgentError::Config(format!("the engine failed: {why}"))),
        Stop::Refused(why) => {
            // The credential is dead: forget it so that a restart with
            // --setup-key enrols anew. The key stays (same identity).
            if let Err(e) = agent.state.remove_credential() {
                eprintln!("wgmesh: {e}");
            }
            Err(AgentError::Refused(format!(
                "{why}; restart with --setup-key KEY to enrol again"
            )))
        }
    }
}

impl Agent {
    fn credential(&self) -> Zeroizing<String> {
        lock(&self.credential).clone()
    }

    fn set_error(&self, e: &ClientError) {
        let mut v = lock(&self.view);
        v.connected = false;
        v.last_error = Some(e.to_string());
    }

    /// Enrols (without a credential) or fetches the map (with one), until
    /// it works, the server refuses for good, or a signal comes (`None`).
    async fn obtain(
        &mut self,
        mut have_cred: bool,
        backoff: &mut Backoff,
        shutdown: &mut Shutdown,
    ) -> Result<Option<NetworkMap>, AgentError> {
        loop {
            let attempt = async {
                if have_cred {
                    self.client.fetch_map(&self.credential()).await
                } else {
                    self.enroll().await
                }
            };
            let r = tokio::select! {
                stop = shutdown.wait() => {
                    eprintln!("wgmesh: {stop:?} before the mesh was up");
                    return Ok(None);
                }
                r = attempt => r,
            };
            match r {
                Ok(map) => {
                    backoff.reset();
                    return Ok(Some(map));
                }
                Err(e) if have_cred && self.forgotten(&e) => {
                    eprintln!("wgmesh: the server refused the credential ({e}); enrolling again");
                    have_cred = false;
                    continue;
                }
                Err(e) if e.is_transient() => {
                    let wait = backoff.next_delay();
                    eprintln!("wgmesh: {e}; retrying in {:.1} s", wait.as_secs_f32());
                    tokio::select! {
                        stop = shutdown.wait() => {
                            eprintln!("wgmesh: {stop:?} before the mesh was up");
                            return Ok(None);
                        }
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Err(e) if is_refusal(&e) => return Err(AgentError::Refused(e.to_string())),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether `e` says the credential is unknown, and a setup key could
    /// get a new one (re-enrolling with the same key is idempotent).
    fn forgotten(&self, e: &ClientError) -> bool {
        e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) && self.cfg.setup_key.is_some()
    }

    async fn enroll(&self) -> Result<NetworkMap, ClientError> {
        let Some(setup_key) = &self.cfg.setup_key else {
            return Err(ClientError::Url {
                url: self.cfg.server.clone(),
                reason: "not enrolled yet, and no --setup-key given".into(),
            });
        };
        let local = endpoints::local_endpoints(&self.cfg.interface, self.cfg.listen_port).await;
        // Proof that this node holds its key: the private key itself never
        // leaves it.
        let challenge = self.client.enroll_challenge().await?;
        let proof =
            enroll_proof(&self.key, &challenge, setup_key, &self.name).ok_or_else(|| {
                ClientError::Stream("the server's enrolment challenge key is unusable".into())
            })?;
        let req = EnrollRequest {
            setup_key: setup_key.as_str().to_owned(),
            public_key: self.key.public_key(),
            challenge: challenge.id,
            proof,
            name: self.name.clone(),
            endpoints: EndpointReport {
                local,
                reflexive: None,
                nat: None,
            },
        };
        let resp = self.client.enroll(&req).await?;
        eprintln!(
            "wgmesh: enrolled as {} ({}) in network {}",
            resp.node.name, resp.node.address, resp.node.network
        );
        if let Err(e) = self.state.save_credential(&resp.credential) {
            eprintln!("wgmesh: the credential is NOT saved, the next start enrols again: {e}");
        }
        *lock(&self.credential) = Zeroizing::new(resp.credential);
        Ok(resp.map)
    }

    /// Makes `new` the map in force: peers, filter, address, forwarding,
    /// cache. Never fails: what cannot be applied is reported, and the
    /// next map tries again.
    fn install(
        &self,
        iface: &Interface,
        forwarding: &mut Forwarding,
        new: NetworkMap,
        first: bool,
    ) {
        if new.node.public_key != self.key.public_key() {
            eprintln!(
                "wgmesh: ignoring a map for another key ({})",
                new.node.public_key
            );
            return;
        }
        let old = lock(&self.view).map.clone();
        let old = if first { None } else { old };
        let cmd = diff(old.as_ref(), &new);
        iface.with_device(|d| match d.filter_mut() {
            Some(f) => f.apply_map(&new),
            None => d.set_filter(Some(PacketFilter::from_map(&new))),
        });
        if !cmd.peers.is_empty() {
            let (removed, changed) =
                cmd.peers.iter().fold(
                    (0, 0),
                    |(r, c), p| {
                        if p.remove { (r + 1, c) } else { (r, c + 1) }
                    },
                );
            eprintln!(
                "wgmesh: map version {}: {} peers added or changed, {} removed",
                new.version, changed, removed
            );
            if let Err(e) = iface.apply(&cmd) {
                // The device's state is now unknown: set every peer afresh.
                eprintln!(
                    "wgmesh: applying map version {} failed ({e}); replacing every peer",
                    new.version
                );
                let mut all = diff(None, &new);
                all.replace_peers = true;
                if let Err(e) = iface.apply(&all) {
                    eprintln!("wgmesh: map version {} NOT applied: {e}", new.version);
                }
            }
        }
        if let Some(old) = &old
            && old.node.address != new.node.address
        {
            let tun = &self.cfg.interface;
            let fam = netconf::family(new.node.address.addr());
            let _ = ip(&[
                netconf::family(old.node.address.addr()),
                "address",
                "del",
                &old.node.address.to_string(),
                "dev",
                tun,
            ]);
            if let Err(e) = ip(&[
                fam,
                "address",
                "add",
                &new.node.address.to_string(),
                "dev",
                tun,
            ]) {
                eprintln!("wgmesh: {e}");
            }
        }
        if new.node.hub {
            forwarding.enable();
        } else if forwarding.is_on() {
            forwarding.restore();
        }
        if let Err(e) = self.state.save_map(&new) {
            eprintln!("wgmesh: the map is not cached: {e}");
        }
        if self
            .paths
            .try_send(paths::Input::Map(Box::new(new.clone())))
            .is_err()
        {
            eprintln!("wgmesh: the path task is behind; it gets the next map");
        }
        lock(&self.view).map = Some(new);
    }

    /// Serves until a signal or a fatal engine error: the status socket,
    /// the endpoint reporter, and the map stream with reconnects.
    async fn serve(
        &mut self,
        iface: &Arc<Interface>,
        forwarding: &mut Forwarding,
        stun_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        backoff: &mut Backoff,
        shutdown: &mut Shutdown,
    ) -> Stop {
        let status_task = {
            let view = Arc::clone(&self.view);
            let iface = Arc::clone(iface);
            let server = self.cfg.server.clone();
            let name = self.cfg.interface.clone();
            let path_view = Arc::clone(&self.path_view);
            let f: status::StatusFn =
                Arc::new(move || build_status(&view, &path_view, &iface, &server, &name));
            let path = self.state.status_socket();
            tokio::spawn(async move {
                if let Err(e) = status::serve(path, f).await {
                    eprintln!("wgmesh: no status socket: {e}");
                }
            })
        };
        let reporter = tokio::spawn(report_endpoints(
            self.client.clone(),
            Arc::clone(&self.credential),
            Arc::clone(&self.view),
            Arc::clone(iface),
            self.cfg.clone(),
            stun_rx,
            self.paths.clone(),
        ));
        let stop = loop {
            let r = tokio::select! {
                stop = shutdown.wait() => break stop,
                r = self.session(iface, forwarding, backoff) => r,
            };
            let e = match r {
                Ok(()) => ClientError::Stream("the server ended the stream".into()),
                Err(e) => e,
            };
            self.set_error(&e);
            if e.status() == Some(reqwest::StatusCode::UNAUTHORIZED) {
                // Not re-enrolled behind the operator's back: a node an
                // admin removed must stay out. A 401 for a credential the
                // server issued is permanent (it is only ever answered for
                // an unknown or expired one), so the agent stops rather
                // than loop on it (docs/agent.md, "Exit codes").
                break Stop::Refused(format!(
                    "the server does not accept this node's credential (removed?): {e}"
                ));
            }
            let wait = backoff.next_delay();
            eprintln!(
                "wgmesh: control stream: {e}; retrying in {:.1} s",
                wait.as_secs_f32()
            );
            tokio::select! {
                stop = shutdown.wait() => break stop,
                () = tokio::time::sleep(wait) => {}
            }
        };
        match &stop {
            Stop::Signal(sig) => eprintln!("wgmesh: {sig}, taking {} down", self.cfg.interface),
            Stop::Fatal(why) | Stop::Refused(why) => {
                eprintln!("wgmesh: {why}; taking {} down", self.cfg.interface)
            }
        }
        for task in [status_task, reporter] {
            task.abort();
            let _ = task.await;
        }
        stop
    }

    /// One map stream, until it breaks.
    async fn session(
        &self,
        iface: &Interface,
        forwarding: &mut Forwarding,
        backoff: &mut Backoff,
    ) -> Result<(), ClientError> {
        let mut stream = self.client.stream_maps(&self.credential()).await?;
        let mut first = true;
        loop {
            let item = tokio::time::timeout(STREAM_SILENCE, stream.next())
                .await
                .map_err(|_| {
                    ClientError::Stream(format!("nothing from the server in {STREAM_SILENCE:?}"))
                })??;
            let update = match item {
                None => return Ok(()),
                Some(StreamItem::Alive) => continue,
                Some(StreamItem::Update(u)) => *u,
            };
            if first {
                first = false;
                backoff.reset();
                let mut v = lock(&self.view);
                v.connected = true;
                v.last_error = None;
                eprintln!("wgmesh: connected to {}", self.cfg.server);
            }
            let current = lock(&self.view).map.clone();
            let new = match next_map(current.as_ref(), update) {
                Next::Map(m) => m,
                Next::Refetch(delta) => {
                    eprintln!(
                        "wgmesh: a delta from version {} does not follow map version {:?}; \
                         fetching the whole map",
                        delta.from_version,
                        current.as_ref().map(|m| m.version)
                    );
                    after_refetch(self.client.fetch_map(&self.credential()).await?, &delta)
                }
            };
            self.install(iface, forwarding, new, false);
        }
    }
}

/// Whether `e` is the server refusing this node (401 unknown or expired
/// credential, 403 setup key refused), not a failure to reach it.
fn is_refusal(e: &ClientError) -> bool {
    matches!(
        e.status(),
        Some(reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN)
    )
}

/// Reports this node's endpoints at start, every [`ENDPOINT_REPORT`], and
/// when the local addresses change.
async fn report_endpoints(
    client: Client,
    credential: Shared<Zeroizing<String>>,
    view: Shared<View>,
    iface: Arc<Interface>,
    cfg: UpConfig,
    mut stun_rx: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
    paths_tx: mpsc::Sender<paths::Input>,
) {
    let mut last: Option<(EndpointReport, Instant)> = None;
    loop {
        let port = iface.listen_port();
        let local = endpoints::local_endpoints(&cfg.interface, port).await;
        let due = match &last {
            None => true,
            Some((report, at)) => at.elapsed() >= ENDPOINT_REPORT || report.local != local,
        };
        if due {
            let reflexive = match stun_server(&cfg).await {
                Some(server) => {
                    // Drop answers to earlier, timed-out requests.
                    while stun_rx.try_recv().is_ok() {}
                    endpoints::reflexive(&iface, server, &mut stun_rx).await
                }
                None => None,
            };
            // A second STUN server (the relay answers STUN on its port)
            // tells whether the NAT's mapping depends on the destination.
            let relay = lock(&view)
                .map
                .as_ref()
                .and_then(|m| m.relays.first().map(|r| r.udp));
            let nat = match relay {
                Some(relay) => {
                    while stun_rx.try_recv().is_ok() {}
                    let second = endpoints::reflexive(&iface, relay, &mut stun_rx).await;
                    NatType::classify(&local, reflexive, second)
                }
                None => None,
            };
            let report = EndpointReport {
                local,
                reflexive,
                nat,
            };
            // Disco's call-me-maybes carry them, reflexive first.
            let own: Vec<SocketAddr> = report
                .reflexive
                .into_iter()
                .chain(report.local.iter().copied())
                .collect();
            let _ = paths_tx.try_send(paths::Input::Endpoints(own));
            let cred = lock(&credential).clone();
            match client.report_endpoints(&cred, &report).await {
                Ok(()) => {
                    if last.as_ref().is_none_or(|(r, _)| *r != report) {
                        eprintln!(
                            "wgmesh: endpoints reported: local {:?}, reflexive {:?}",
                            report.local, report.reflexive
                        );
                    }
                    lock(&view).endpoints = report.clone();
                    last = Some((report, Instant::now()));
                }
                Err(e) => eprintln!("wgmesh: endpoint report failed: {e}"),
            }
        }
        tokio::time::sleep(ENDPOINT_CHECK).await;
    }
}

/// The STUN server to ask: `--stun`, else the control server's host on
/// port 3478.
async fn stun_server(cfg: &UpConfig) -> Option<SocketAddr> {
    let target = match &cfg.stun {
        Some(s) => s.clone(),
        None => {
            // An IPv6 host comes bracketed, as `HOST:PORT` wants it.
            let url = reqwest::Url::parse(&cfg.server).ok()?;
            format!("{}:{}", url.host_str()?, endpoints::STUN_PORT)
        }
    };
    match tokio::net::lookup_host(&target).await {
        Ok(mut addrs) => addrs.next(),
        Err(e) => {
            eprintln!("wgmesh: STUN server {target}: {e}");
            None
        }
    }
}

fn build_status(
    view: &Mutex<View>,
    path_view: &Mutex<paths::PathView>,
    iface: &Interface,
    server: &str,
    tun: &str,
) -> Status {
    let snapshot = iface.with_device(|d| d.snapshot(Instant::now(), SystemTime::now()));
    let pv = lock(path_view).clone();
    let count = |f: fn(&Path) -> bool| pv.paths.values().filter(|p| f(p)).count() as u64;
    let v = lock(view);
    let map = v.map.as_ref();
    let peers = map
        .map(|m| {
            m.peers
                .iter()
                .map(|p| {
                    let snap = snapshot.peers.iter().find(|s| s.public_key == p.public_key);
                    let route = match p.route {
                        Route::Direct { .. } => match pv.paths.get(&p.public_key) {
                            Some(Path::Relay) => {
                                relayed_why(&pv, (&m.node.name, v.endpoints.nat), (&p.name, p.nat))
                            }
                            Some(Path::Unreachable) => {
                                "unreachable: no direct path, no relay".to_owned()
                            }
                            Some(Path::Direct { .. }) => "direct".to_owned(),
                            None => "direct (no path checked yet)".to_owned(),
                        },
                        Route::ViaHub { hub } => {
                            let name = m
                                .peers
                                .iter()
                                .find(|h| h.public_key == hub)
                                .map_or_else(|| hub.to_string(), |h| h.name.clone());
                            format!("via {name}")
                        }
                    };
                    PeerStatus {
                        name: p.name.clone(),
                        public_key: p.public_key.to_string(),
                        address: p.address,
                        route,
                        endpoint: snap.and_then(|s| s.endpoint),
                        last_handshake: snap.and_then(|s| s.last_handshake).map(|(secs, _)| secs),
                        rx_bytes: snap.map_or(0, |s| s.rx_bytes),
                        tx_bytes: snap.map_or(0, |s| s.tx_bytes),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Status {
        node: map.map(|m| NodeStatus {
            name: m.node.name.clone(),
            network: m.network.clone(),
            public_key: m.node.public_key.to_string(),
            address: m.node.address,
            hub: m.node.hub,
        }),
        interface: tun.to_owned(),
        listen_port: snapshot.listen_port,
        server: server.to_owned(),
        connected: v.connected,
        last_error: v.last_error.clone(),
        map_version: map.map(|m| m.version),
        endpoints: v.endpoints.clone(),
        peers,
        paths: status::PathSummary {
            direct: count(|p| matches!(p, Path::Direct { .. })),
            relayed: count(|p| matches!(p, Path::Relay)),
            unreachable: count(|p| matches!(p, Path::Unreachable)),
            pings_sent: pv.pings_sent,
            direct_established: pv.direct_established,
            time_to_direct_ms: pv
                .time_to_direct
                .iter()
                .map(|d| d.as_millis() as u64)
                .collect(),
            relay: pv.relay.as_ref().map(|r| r.0.clone()),
            relay_registered: pv.relay.as_ref().is_some_and(|r| r.1),
        },
    }
}

/// Why a peer is relayed, as far as this node can tell from the two NATs'
/// mapping behaviours (its own STUN probes, the peer's report).
fn relayed_why(
    pv: &paths::PathView,
    me: (&str, Option<NatType>),
    peer: (&str, Option<NatType>),
) -> String {
    let relay = match &pv.relay {
        Some((name, true)) => format!("relayed via {name}"),
        Some((name, false)) => return format!("relayed via {name} (not registered yet)"),
        None => "relayed".to_owned(),
    };
    use NatType::{EndpointDependent as Sym, NoUdp};
    let why = match (me.1, peer.1) {
        (Some(Sym), Some(Sym)) => "both sides behind symmetric NAT".to_owned(),
        (Some(NoUdp), _) => format!("UDP blocked at {}", me.0),
        (_, Some(NoUdp)) => format!("UDP blocked at {}", peer.0),
        (Some(Sym), _) => format!("{} behind a symmetric NAT, no direct path answered", me.0),
        (_, Some(Sym)) => format!("{} behind a symmetric NAT, no direct path answered", peer.0),
        _ => "no direct path answered".to_owned(),
    };
    format!("{relay}: {why}")
}

/// `ip ARGS…`, echoed as wg-quick echoes its commands.
fn ip(args: &[&str]) -> Result<(), AgentError> {
    eprintln!("[#] ip {}", args.join(" "));
    netconf::ip(args)?;
    Ok(())
}

/// The host name as a node name: its first label, lowercased.
fn host_name() -> Result<String, AgentError> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| AgentError::io("/proc/sys/kernel/hostname", e))?;
    let label = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if label.is_empty() {
        return Err(AgentError::Config(
            "the host has no name; give --name".into(),
        ));
    }
    Ok(label)
}

/// wg-quick's rule for interface names: `^[a-zA-Z0-9_=+.-]{1,15}$`.
fn check_iface_name(name: &str) -> Result<(), AgentError> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AgentError::Config(format!(
            "{name:?} is not a valid interface name: 1 to 15 of a-z A-Z 0-9 _ = + . -"
        )))
    }
}
