//! Two path managers on a toy network with no NAT: a link that can be cut,
//! fixed latency, and a relay. (The NAT matrix runs in wgmesh-sim.)

use super::*;

const T0_MS: u64 = 1_800_000_000_000;

struct Net {
    now: Instant,
    nodes: [PathManager; 2],
    addrs: [SocketAddr; 2],
    latency: Duration,
    link_up: bool,
    relay_up: bool,
    /// (deliver at, to node, via as the receiver sees it, bytes)
    flight: Vec<(Instant, usize, Via, Vec<u8>)>,
    events: Vec<(usize, PathEvent)>,
}

impl Net {
    fn new() -> Self {
        let now = Instant::now();
        let k = |n: u8| PrivateKey::from_random([n; 32]);
        let mut nodes = [
            PathManager::new(k(1), [1; 32], now, T0_MS),
            PathManager::new(k(2), [2; 32], now, T0_MS),
        ];
        let addrs: [SocketAddr; 2] = [
            "192.0.2.1:51820".parse().unwrap(),
            "192.0.2.2:51820".parse().unwrap(),
        ];
        let keys = [nodes[0].public_key(), nodes[1].public_key()];
        for i in 0..2 {
            nodes[i].set_local_endpoints(vec![addrs[i]]);
            nodes[i].set_relay(now, true);
            nodes[i].upsert_peer(now, keys[1 - i], &[addrs[1 - i]]);
        }
        Self {
            now,
            nodes,
            addrs,
            latency: Duration::from_millis(20),
            link_up: true,
            relay_up: true,
            flight: Vec::new(),
            events: Vec::new(),
        }
    }

    fn key(&self, i: usize) -> PublicKey {
        self.nodes[i].public_key()
    }

    fn collect(&mut self) {
        for i in 0..2 {
            while let Some(t) = self.nodes[i].poll_transmit() {
                let to = 1 - i;
                match t.via {
                    Via::Direct(addr) if addr == self.addrs[to] && self.link_up => {
                        self.flight.push((
                            self.now + self.latency,
                            to,
                            Via::Direct(self.addrs[i]),
                            t.bytes,
                        ));
                    }
                    Via::Relay if self.relay_up => {
                        self.flight
                            .push((self.now + self.latency * 3, to, Via::Relay, t.bytes));
                    }
                    _ => {}
                }
            }
            while let Some(e) = self.nodes[i].poll_event() {
                self.events.push((i, e));
            }
        }
    }

    /// Runs the network until `until`, event by event.
    fn run(&mut self, until: Instant) {
        loop {
            self.collect();
            let next_timer = self
                .nodes
                .iter()
                .filter_map(PathManager::poll_timeout)
                .min();
            let next_packet = self.flight.iter().map(|f| f.0).min();
            let next = match (next_timer, next_packet) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).expect("there is always a timer"),
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next.max(self.now);
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) = self.flight.drain(..).partition(|f| f.0 <= now);
            self.flight = rest;
            for (_, to, via, bytes) in due {
                let _ = self.nodes[to].handle_disco(now, via, &bytes);
            }
            for n in &mut self.nodes {
                if n.poll_timeout().is_some_and(|t| t <= now) {
                    n.handle_timeout(now);
                }
            }
        }
    }

    fn path(&self, i: usize) -> Path {
        self.nodes[i].path(&self.key(1 - i)).unwrap()
    }
}

#[test]
fn an_open_path_is_found_within_a_round_trip_and_measured() {
    let mut net = Net::new();
    let start = net.now;
    assert_eq!(net.path(0), Path::Relay);
    net.run(start + Duration::from_millis(100));
    for i in 0..2 {
        match net.path(i) {
            Path::Direct { addr, rtt } => {
                assert_eq!(addr, net.addrs[1 - i]);
                assert_eq!(rtt, Duration::from_millis(40));
            }
            p => panic!("node {i}: {p:?}"),
        }
    }
    // Heartbeats keep it for a long time.
    net.run(start + Duration::from_secs(120));
    assert!(matches!(net.path(0), Path::Direct { .. }));
    assert_eq!(net.nodes[0].stats().direct_established, 1);
    assert_eq!(net.events.iter().filter(|(i, _)| *i == 0).count(), 1);
}

#[test]
fn a_dead_path_falls_to_the_relay_within_3_s_and_comes_back() {
    let mut net = Net::new();
    let start = net.now;
    net.run(start + Duration::from_secs(5));
    assert!(matches!(net.path(0), Path::Direct { .. }));
    net.link_up = false;
    let cut = net.now;
    // Step in 10 ms slices to see when it switched.
    let mut switched = None;
    while net.now < cut + Duration::from_secs(5) {
        let t = net.now + Duration::from_millis(10);
        net.run(t);
        if switched.is_none() && net.path(0) == Path::Relay && net.path(1) == Path::Relay {
            switched = Some(net.now - cut);
        }
    }
    let took = switched.expect("never fell back to the relay");
    assert!(took <= Duration::from_secs(3), "fell back after {took:?}");
    // The link returns: direct again within a fast probe interval or two.
    net.link_up = true;
    let back = net.now;
    net.run(back + PROBE_FAST * 2 + Duration::from_millis(100));
    assert!(
        matches!(net.path(0), Path::Direct { .. }),
        "{:?}",
        net.path(0)
    );
    assert!(matches!(net.path(1), Path::Direct { .. }));
}

#[test]
fn with_no_relay_and_no_path_the_peer_is_unreachable() {
    let mut net = Net::new();
    net.link_up = false;
    for i in 0..2 {
        let now = net.now;
        net.nodes[i].set_relay(now, false);
    }
    let t = net.now + Duration::from_secs(3);
    net.run(t);
    assert_eq!(net.path(0), Path::Unreachable);
}

#[test]
fn a_call_me_maybe_makes_the_other_side_punch_at_once() {
    let mut net = Net::new();
    // Node 1 does not know node 0's endpoint: only the call-me-maybe
    // (through the relay) tells it where to ping.
    let k0 = net.key(0);
    let now = net.now;
    net.nodes[1].remove_peer(&k0);
    net.nodes[1].upsert_peer(now, k0, &[]);
    net.link_up = true;
    let t = net.now + Duration::from_millis(200);
    net.run(t);
    assert!(
        matches!(net.path(1), Path::Direct { .. }),
        "{:?}",
        net.path(1)
    );
    assert!(net.nodes[0].stats().call_me_maybes_sent >= 1);
}

#[test]
fn forged_and_replayed_disco_is_refused_and_counted() {
    let mut net = Net::new();
    let k1 = net.key(1);
    let now = net.now;
    // A pong for a ping nobody sent, properly sealed by the real peer.
    let mut rogue = DiscoKeys::new(PrivateKey::from_random([2; 32]));
    let pong = rogue
        .seal(
            &net.key(0),
            &Message::Pong {
                tx: [9; 12],
                observed: net.addrs[0],
            },
            [7; 24],
        )
        .unwrap();
    assert_eq!(
        net.nodes[0].handle_disco(now, Via::Direct(net.addrs[1]), &pong),
        Err(DiscoError::Replayed)
    );
    // A stranger's ping.
    let mut stranger = DiscoKeys::new(PrivateKey::from_random([3; 32]));
    let ping = stranger
        .seal(
            &net.key(0),
            &Message::Ping {
                tx: [1; 12],
                sent_at_ms: T0_MS,
            },
            [8; 24],
        )
        .unwrap();
    assert_eq!(
        net.nodes[0].handle_disco(now, Via::Direct(net.addrs[1]), &ping),
        Err(DiscoError::UnknownSender)
    );
    // The same genuine ping twice: the second is a replay.
    let ping = rogue
        .seal(
            &net.key(0),
            &Message::Ping {
                tx: [2; 12],
                sent_at_ms: T0_MS,
            },
            [9; 24],
        )
        .unwrap();
    assert!(
        net.nodes[0]
            .handle_disco(now, Via::Direct(net.addrs[1]), &ping)
            .is_ok()
    );
    assert_eq!(
        net.nodes[0].handle_disco(now, Via::Direct(net.addrs[1]), &ping),
        Err(DiscoError::Replayed)
    );
    assert_eq!(net.nodes[0].stats().rejected, 3);
    assert_eq!(
        net.nodes[0].path(&k1),
        Some(Path::Relay),
        "nothing forged made a path"
    );
}
