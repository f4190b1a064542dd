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
use wgmesh_proto::relay::{ClientEvent, ClientSession};
use wgmesh_proto::uapi::{PeerChange, SetCommand};
use wgmesh_proto::{disco, relay};

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
}

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
    session: ClientSession,
}

struct Task {
    iface: Arc<Interface>,
    key: PrivateKey,
    pm: PathManager,
    relay: Option<RelayLink>,
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
        let want = map.relays.first().cloned();
        let same = match (&self.relay, &want) {
            (Some(have), Some(want)) => have.info == *want,
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.relay =
                want.and_then(
                    |info| match ClientSession::new(&self.key, info.public_key) {
                        Ok(session) => {
                            eprintln!("wgmesh: relay {} at {}", info.name, info.udp);
                            Some(RelayLink { info, session })
                        }
                        Err(e) => {
                            eprintln!("wgmesh: relay {} unusable: {e}", info.name);
                            None
                        }
                    },
                );
            self.pm.set_relay(now, false);
            let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
            v.relay = self.relay.as_ref().map(|r| (r.info.name.clone(), false));
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
        let Some(link) = &mut self.relay else {
            return;
        };
        if !relay::is_relay(bytes) || from != link.info.udp {
            return;
        }
        if let Err(e) = link.session.handle_frame(now, bytes) {
            eprintln!("wgmesh: relay frame dropped: {e}");
        }
    }

    fn on_diverted(&mut self, to: SocketAddr, bytes: &[u8]) {
        let (Some(peer), Some(link)) = (self.peer_at.get(&to), &mut self.relay) else {
            return;
        };
        let _ = link.session.send(*peer, bytes);
    }

    /// Carries out what the state machines want.
    fn flush(&mut self, now: Instant) {
        let mut relay_events = Vec::new();
        if let Some(link) = &mut self.relay {
            while let Some(e) = link.session.poll_event() {
                relay_events.push(e);
            }
        }
        for e in relay_events {
            match e {
                ClientEvent::Registered => {
                    eprintln!("wgmesh: registered with the relay");
                    self.pm.set_relay(now, true);
                    self.set_relay_view(true);
                }
                ClientEvent::Lost | ClientEvent::Refused(_) => {
                    self.pm.set_relay(now, false);
                    self.set_relay_view(false);
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
        while let Some(t) = self.pm.poll_transmit() {
            match t.via {
                Via::Direct(addr) => {
                    let _ = self.iface.send_foreign(addr, &t.bytes);
                }
                Via::Relay => {
                    if let Some(link) = &mut self.relay {
                        let _ = link.session.send(t.peer, &t.bytes);
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
        if let Some(link) = &mut self.relay {
            while let Some(frame) = link.session.poll_transmit() {
                let _ = self.iface.send_foreign(link.info.udp, &frame);
            }
        }
        let stats = self.pm.stats();
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        v.pings_sent = stats.pings_sent;
        v.direct_established = stats.direct_established;
    }

    fn set_relay_view(&self, registered: bool) {
        let mut v = self.view.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &mut v.relay {
            r.1 = registered;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let a = self.pm.poll_timeout();
        let b = self.relay.as_ref().and_then(|r| r.session.poll_timeout());
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.pm.handle_timeout(now);
        if let Some(link) = &mut self.relay {
            link.session.handle_timeout(now, unix_ms(), random());
        }
    }
}

/// Runs until the channel closes.
pub async fn run(
    iface: Arc<Interface>,
    key: PrivateKey,
    mut rx: mpsc::Receiver<Input>,
    view: Arc<Mutex<PathView>>,
) {
    let now = Instant::now();
    let pm = PathManager::new(key.clone(), random(), now, unix_ms());
    let mut task = Task {
        iface,
        key,
        pm,
        relay: None,
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
            None => {}
        }
        if task.next_deadline().is_some_and(|t| t <= now) {
            task.on_timeout(now);
        }
        task.flush(now);
    }
}
