//! Direct paths and the relay, in the agent: wgmesh-proto's disco path
//! manager and relay client session, driven over the engine's own UDP
//! socket (docs/nat-traversal.md, docs/relay.md).
//!
//! One task owns both state machines. Its inputs come on a channel: disco
//! and relay datagrams the engine's socket received (`on_foreign`),
//! WireGuard datagrams the engine wanted sent to a relayed peer
//! (`on_divert`), each new map, and this node's endpoints. It sends disco
//! and relay frames with [`Interface::send_foreign`], hands the engine
//! what the relay brings ([`Interface::inject`]), and points each peer's
//! WireGuard endpoint at the path chosen: the direct address, or the
//! peer's relay endpoint (240.0.0.0/4, [`wgmesh_dataplane::relay_endpoint`]).
//!
//! Relays: with several in the map, the node says hello to all of them
//! over UDP and uses the first that registers it (the lowest latency, as
//! the one that answered first), keeping the others as standbys. A relay
//! that has not answered over UDP within [`WS_AFTER`] and offers a
//! WebSocket (`ws_url`) is reached over the WebSocket instead, for
//! networks that block UDP.
//!
//! Peers the map routes through a hub are not managed here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use wgmesh_core::key::{PrivateKey, PublicKey};
use wgmesh_core::netmap::{MapRelay, NetworkMap, Route};
use wgmesh_dataplane::{Interface, relay_endpoint};
use wgmesh_proto::disco::path::{Path, PathEvent, PathManager, Via};
use wgmesh_proto::relay::{ClientEvent, ClientSession, ClientState};
use wgmesh_proto::uapi::{PeerChange, SetCommand};
use wgmesh_proto::{disco, relay};
use wgmesh_relay::client::RelayClient;

/// What the task is told.
#[derive(Debug)]
pub enum Input {
    /// A disco or relay datagram from the engine's socket.
    Foreign(SocketAddr, Vec<u8>),
    /// A WireGuard datagram for a relay endpoint.
    Diverted(SocketAddr, Vec<u8>),
    Map(Box<NetworkMap>),
    /// This node's endpoints (reflexive first), for call-me-maybes.
    Endpoints(Vec<SocketAddr>),
    /// What the WebSocket to relay `relay` (by key) brought.
    Ws(PublicKey, ClientEvent),
    /// The WebSocket to that relay closed or could not be opened.
    WsDown(PublicKey, String),
}

/// Over UDP, a relay that has not registered us after this long is tried
/// over its WebSocket, if it has one.
pub const WS_AFTER: Duration = Duration::from_secs(4);
/// A failed WebSocket is tried again after this.
pub const WS_RETRY: Duration = Duration::from_secs(10);

/// What `wgmesh status` shows of the paths.
#[derive(Debug, Default, Clone)]
pub struct PathView {
    pub paths: HashMap<PublicKey, Path>,
    /// The relay in use and whether it registered us.
    pub relay: Option<(String, bool)>,
    /// Hole punches tried (discovery rounds' pings) and paths found.
    pub pings_sent: u64,
    pub direct_established: u64,
    /// Per peer that went direct, the time from joining the map to it.
    pub time_to_direct: Vec<Duration>,
}

struct RelayLink {
    info: MapRelay,
    /// The session over the engine's UDP socket.
    session: ClientSession,
    since: Instant,
    /// Frames for the WebSocket task, once there is one.
    ws: Option<mpsc::Sender<(PublicKey, Vec<u8>)>>,
    ws_registered: bool,
    /// When to try the WebSocket (again).
    ws_next: Option<Instant>,
}

impl RelayLink {
    fn registered(&self) -> bool {
        self.session.is_registered() || self.ws_registered
    }

    /// Queues `payload` for `to` on whichever transport registered us.
    fn send(&mut self, to: PublicKey, payload: &[u8]) {
        match &self.ws {
            Some(ws) if self.ws_registered => {
                let _ = ws.try_send((to, payload.to_vec()));
            }
            _ => {
                let _ = self.session.send(to, payload);
            }
        }
    }
}

struct Task {
    iface: Arc<Interface>,
    key: PrivateKey,
    pm: PathManager,
    relays: Vec<RelayLink>,
    /// The relay in use (an index into `relays`).
    active: Option<usize>,
    /// For the WebSocket tasks: the channel back to this task, and TLS.
    inputs: mpsc::Sender<Input>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Relay endpoints given out, both ways.
    endpoint_of: HashMap<PublicKey, SocketAddr>,
    peer_at: HashMap<SocketAddr, PublicKey>,
    next_index: u32,
    view: Arc<Mutex<PathView>>,
    /// When each peer joined the map, until its first direct path.
    joined: HashMap<PublicKey, Instant>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Without OS randomness the nonces would repeat: better to stop.
    getrandom::fill(&mut b).expect("invariant: the OS provides randomness");
    b
}

impl Task {
    fn endpoint_for(&mut self, peer: PublicKey) -> SocketAddr {
        if let Some(e) = self.endpoint_of.get(&peer) {
            return *e;
        }
        let e = relay_endpoint(self.next_index);
        self.next_index += 1;
        self.endpoint_of.insert(peer, e);
        self.peer_at.insert(e, peer);
        e
    }

    fn on_map(&mut self, now: Instant, map: &NetworkMap) {
        let managed: Vec<&wgmesh_core::netmap::MapPeer> = map
            .peers
            .iter()
            .filter(|p| matches!(p.route, Route::Direct { .. }))
            .collect();
        let known: Vec<PublicKey> = self.endpoint_of.keys().copied().collect();
        for k in known {
            if !managed.iter().any(|p| p.public_key == k) {
                self.pm.remove_peer(&k);
                self.joined.remove(&k);
                if let Some(e) = self.endpoint_of.remove(&k) {
                    self.peer_at.remove(&e);
                }
            }
        }
        for p in &managed {
            if !self.endpoint_of.contains_key(&p.public_key) {
                self.joined.insert(p.public_key, now);
            }
            self.endpoint_for(p.public_key);
            self.pm.upsert_peer(now, p.public_key, &p.endpoints);
        }
        {
            // A new peer starts on the relay (or unreachable) with no
            // event: the view shows where every managed peer is now.
            let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
            v.paths.clear();
            for p in &managed {
                if let Some(path) = self.pm.path(&p.public_key) {
                    v.paths.insert(p.public_key, path);
                }
            }
        }
        let same = self.relays.len() == map.relays.len()
            && self
                .relays
                .iter()
                .zip(&map.relays)
                .all(|(l, r)| l.info == *r);
        if !same {
            self.relays = map
                .relays
                .iter()
                .filter_map(
                    |info| match ClientSession::new(&self.key, info.public_key) {
                        Ok(session) => Some(RelayLink {
                            info: info.clone(),
                            session,
                            since: now,
                            ws: None,
                            ws_registered: false,
                            ws_next: None,
                        }),
                        Err(e) => {
                            eprintln!("wgmesh: relay {} unusable: {e}", info.name);
                            None
                        }
                    },
                )
                .collect();
            self.active = None;
            self.pm.set_relay(now, false);
            self.sync_relay_view();
        }
        // A new map may have set endpoints from its lists: point every
        // peer back at the path in use.
        let paths: Vec<(PublicKey, Path)> = managed
            .iter()
            .filter_map(|p| self.pm.path(&p.public_key).map(|path| (p.public_key, path)))
            .collect();
        for (peer, path) in paths {
            self.point(peer, path);
        }
    }

    /// Points `peer`'s WireGuard endpoint at `path`.
    fn point(&mut self, peer: PublicKey, path: Path) {
        let endpoint = match path {
            Path::Direct { addr, .. } => addr,
            Path::Relay => self.endpoint_for(peer),
            Path::Unreachable => return,
        };
        let mut change = PeerChange::new(peer);
        change.update_only = true;
        change.endpoint = Some(endpoint);
        let cmd = SetCommand {
            peers: vec![change],
            ..SetCommand::default()
        };
        if let Err(e) = self.iface.apply(&cmd) {
            eprintln!("wgmesh: endpoint of {peer} not set: {e}");
        }
    }

    fn on_foreign(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        if disco::is_disco(bytes) {
            let _ = self.pm.handle_disco(now, Via::Direct(from), bytes);
            return;
        }
        if !relay::is_relay(bytes) {
            return;
        }
        let Some(link) = self.relays.iter_mut().find(|l| l.info.udp == from) else {
            return;
        };
        if let Err(e) = link.session.handle_frame(now, bytes) {
            eprintln!("wgmesh: relay frame dropped: {e}");
        }
    }

    fn on_diverted(&mut self, to: SocketAddr, bytes: &[u8]) {
        let (Some(peer), Some(i)) = (self.peer_at.get(&to).copied(), self.active) else {
            return;
        };
        self.relays[i].send(peer, bytes);
    }

    /// Carries out what the state machines want.
    fn flush(&mut self, now: Instant) {
        let mut relay_events = Vec::new();
        for (i, link) in self.relays.iter_mut().enumerate() {
            while let Some(e) = link.session.poll_event() {
                relay_events.push((i, e));
            }
        }
        for (i, e) in relay_events {
            self.on_relay_event(now, i, e);
        }
        while let Some(t) = self.pm.poll_transmit() {
            match t.via {
                Via::Direct(addr) => {
                    let _ = self.iface.send_foreign(addr, &t.bytes);
                }
                Via::Relay => {
                    if let Some(i) = self.active {
                        self.relays[i].send(t.peer, &t.bytes);
                    }
                }
            }
        }
        while let Some(PathEvent::Changed { peer, path }) = self.pm.poll_event() {
            eprintln!("wgmesh: path to {peer}: {path:?}");
            self.point(peer, path);
            let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
            v.paths.insert(peer, path);
            if matches!(path, Path::Direct { .. })
                && let Some(t) = self.joined.remove(&peer)
            {
                v.time_to_direct.push(now.saturating_duration_since(t));
            }
        }
        for link in &mut self.relays {
            while let Some(frame) = link.session.poll_transmit() {
                // Over the WebSocket the UDP session idles: its hellos
                // would only be refused by a firewall anyway.
                if !link.ws_registered {
                    let _ = self.iface.send_foreign(link.info.udp, &frame);
                }
            }
        }
        let stats = self.pm.stats();
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.pings_sent = stats.pings_sent;
        v.direct_established = stats.direct_established;
    }

    /// A relay told us something (over UDP or its WebSocket).
    fn on_relay_event(&mut self, now: Instant, i: usize, e: ClientEvent) {
        match e {
            ClientEvent::Registered => {
                if self.active.is_none() {
                    let link = &self.relays[i];
                    eprintln!(
                        "wgmesh: relay {} chosen: it registered us first, {:?} after the hello",
                        link.info.name,
                        now.saturating_duration_since(link.since)
                    );
                    self.active = Some(i);
                    self.pm.set_relay(now, true);
                }
                self.sync_relay_view();
            }
            ClientEvent::Lost | ClientEvent::Refused(_) => {
                if self.active == Some(i) && !self.relays[i].registered() {
                    // Another registered relay takes over at once.
                    self.active = self.relays.iter().position(RelayLink::registered);
                    self.pm.set_relay(now, self.active.is_some());
                }
                self.sync_relay_view();
            }
            ClientEvent::Received { from, payload } => {
                if disco::is_disco(&payload) {
                    let _ = self.pm.handle_disco(now, Via::Relay, &payload);
                } else if self.endpoint_of.contains_key(&from) {
                    let at = self.endpoint_for(from);
                    self.iface.inject(at, &payload);
                }
            }
            ClientEvent::PeerGone(_) => {}
        }
    }

    fn sync_relay_view(&self) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.relay = match self.active {
            Some(i) => Some((self.relays[i].info.name.clone(), true)),
            None => self.relays.first().map(|r| (r.info.name.clone(), false)),
        };
    }

    /// Starts the WebSocket of relay `i`: a task that says hello over it
    /// and then carries frames both ways until it closes.
    fn start_ws(&mut self, now: Instant, i: usize) {
        let link = &mut self.relays[i];
        let Some(url) = link.info.ws_url.clone() else {
            return;
        };
        link.ws_next = Some(now + WS_RETRY);
        let (tx, mut rx) = mpsc::channel::<(PublicKey, Vec<u8>)>(1024);
        link.ws = Some(tx);
        let relay = link.info.public_key;
        let key = self.key.clone();
        let inputs = self.inputs.clone();
        let tls = self.tls.clone();
        eprintln!(
            "wgmesh: relay {} over UDP: no answer; trying {url}",
            link.info.name
        );
        tokio::spawn(async move {
            let mut client = match RelayClient::connect_ws(&url, relay, &key, tls).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = inputs.send(Input::WsDown(relay, e.to_string())).await;
                    return;
                }
            };
            let _ = inputs.send(Input::Ws(relay, ClientEvent::Registered)).await;
            loop {
                tokio::select! {
                    ev = client.recv() => match ev {
                        Some(ev) => {
                            if inputs.send(Input::Ws(relay, ev)).await.is_err() {
                                return;
                            }
                        }
                        None => break,
                    },
                    out = rx.recv() => match out {
                        Some((to, payload)) => {
                            let _ = client.send(to, &payload).await;
                        }
                        None => return,
                    },
                }
            }
            let _ = inputs.send(Input::WsDown(relay, "closed".into())).await;
        });
    }

    fn on_ws(&mut self, now: Instant, relay: PublicKey, e: Result<ClientEvent, String>) {
        let Some(i) = self.relays.iter().position(|l| l.info.public_key == relay) else {
            return;
        };
        match e {
            Ok(ClientEvent::Registered) => {
                self.relays[i].ws_registered = true;
                self.on_relay_event(now, i, ClientEvent::Registered);
            }
            Ok(ev) => self.on_relay_event(now, i, ev),
            Err(why) => {
                eprintln!(
                    "wgmesh: relay {} WebSocket: {why}",
                    self.relays[i].info.name
                );
                let link = &mut self.relays[i];
                link.ws = None;
                link.ws_registered = false;
                self.on_relay_event(now, i, ClientEvent::Lost);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let relays = self.relays.iter().flat_map(|r| {
            let ws = (r.ws.is_none() && r.info.ws_url.is_some() && !r.session.is_registered())
                .then(|| r.ws_next.unwrap_or(r.since + WS_AFTER));
            // Before its first hello a session wants to run at once.
            let session = if r.session.wants_hello_now() {
                Some(r.since)
            } else {
                r.session.poll_timeout()
            };
            [session, ws]
        });
        self.pm
            .poll_timeout()
            .into_iter()
            .chain(relays.flatten())
            .min()
    }

    fn on_timeout(&mut self, now: Instant) {
        self.pm.handle_timeout(now);
        let mut ws_due = Vec::new();
        for (i, link) in self.relays.iter_mut().enumerate() {
            if link.session.wants_hello_now()
                || link.session.poll_timeout().is_some_and(|t| t <= now)
            {
                link.session.handle_timeout(now, unix_ms(), random());
            }
            let due = link.ws_next.unwrap_or(link.since + WS_AFTER);
            if link.ws.is_none()
                && link.info.ws_url.is_some()
                && link.session.state() != ClientState::Registered
                && now >= due
            {
                ws_due.push(i);
            }
        }
        for i in ws_due {
            self.start_ws(now, i);
        }
    }
}

/// Runs until the channel closes.
pub async fn run(
    iface: Arc<Interface>,
    key: PrivateKey,
    inputs: mpsc::Sender<Input>,
    mut rx: mpsc::Receiver<Input>,
    view: Arc<Mutex<PathView>>,
    tls: Option<Arc<rustls::ClientConfig>>,
) {
    let now = Instant::now();
    let pm = PathManager::new(key.clone(), random(), now, unix_ms());
    let mut task = Task {
        iface,
        key,
        pm,
        relays: Vec::new(),
        active: None,
        inputs,
        tls,
        endpoint_of: HashMap::new(),
        peer_at: HashMap::new(),
        next_index: 0,
        view,
        joined: HashMap::new(),
    };
    loop {
        let deadline = task
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        let input = tokio::select! {
            i = rx.recv() => match i {
                Some(i) => Some(i),
                None => return,
            },
            () = tokio::time::sleep_until(deadline.into()) => None,
        };
        let now = Instant::now();
        match input {
            Some(Input::Foreign(from, bytes)) => task.on_foreign(now, from, &bytes),
            Some(Input::Diverted(to, bytes)) => task.on_diverted(to, &bytes),
            Some(Input::Map(map)) => task.on_map(now, &map),
            Some(Input::Endpoints(e)) => task.pm.set_local_endpoints(e),
            Some(Input::Ws(relay, ev)) => task.on_ws(now, relay, Ok(ev)),
            Some(Input::WsDown(relay, why)) => task.on_ws(now, relay, Err(why)),
            None => {}
        }
        if task.next_deadline().is_some_and(|t| t <= now) {
            task.on_timeout(now);
        }
        task.flush(now);
    }
}
