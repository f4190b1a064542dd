//! Bad input against a live `wgmesh wg up` interface (issue 4, "Bad
//! input"): forged and truncated datagrams, a handshake from a key the
//! interface does not know, and a flood of handshake initiations, all sent
//! from another lab host with a plain UDP socket, while wireguard-go is the
//! interface's legitimate peer on that same host. Each must be dropped (or,
//! under load, answered with a cookie reply) and counted in the counters an
//! operator reads with `wgmesh wg stats`, and the peer must keep getting
//! through.
//!
//! The sans-IO side of the same cases is in wgmesh-proto's device tests;
//! this file owns what only a live interface shows: the counters as an
//! operator sees them, cookie replies on the wire, and a real peer under
//! the flood. The interop harness proper (both directions, transfers,
//! roaming) is engine_interop.rs.

mod support;

use std::collections::HashMap;
use std::io::Read as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wgmesh_core::key::{PrivateKey, PublicKey};
use wgmesh_lab::Lab;
use wgmesh_lab::wgnode::{self, WgNode};
use wgmesh_proto::device::{Device, Output};
use wgmesh_proto::uapi::{PeerChange, SetCommand};

const WGMESH: &str = env!("CARGO_BIN_EXE_wgmesh");
const WG_LABEL: &str = "wgmesh-a";

const A_ADDR: &str = "203.0.113.1";
const B_ADDR: &str = "203.0.113.2";
const A_V4: &str = "10.77.0.1";
const B_V4: &str = "10.77.0.2";

/// The first ping may wait for a handshake and its retry (REKEY_TIMEOUT is
/// 5 s); under the flood, wireguard-go's first initiation may be answered
/// with a cookie reply, and only its retry carries a valid mac2.
const PING_TIMEOUT: Duration = Duration::from_secs(20);
const UP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long counters may take to show what was sent.
const COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// wgmesh's handshake rate limit per source IP and second
/// (`DEFAULT_HANDSHAKE_RATE_LIMIT`), above which cookie replies kick in.
const RATE_LIMIT: u64 = wgmesh_proto::device::DEFAULT_HANDSHAKE_RATE_LIMIT;

/// WireGuard message sizes and offsets (paper §5.4.2–§5.4.7).
const INITIATION_LEN: usize = 148;
const COOKIE_REPLY_LEN: usize = 64;
/// mac1 of an initiation: after type, sender, ephemeral, static, timestamp.
const INITIATION_MAC1: std::ops::Range<usize> = 116..132;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b
}

fn random_key() -> PrivateKey {
    PrivateKey::from_random(random_bytes())
}

fn write_conf(lab: &Lab, name: &str, text: &str) -> PathBuf {
    let path = lab.log_dir().join(name);
    support::write_secret(&path, text);
    path
}

/// wgmesh on host a, wireguard-go on host b; wgmesh knows b's endpoint.
struct Setup {
    lab: Lab,
    a_key: PrivateKey,
    b_key: PrivateKey,
    a_iface: String,
    b: WgNode,
}

impl Drop for Setup {
    fn drop(&mut self) {
        // SIGTERM, so that wgmesh removes its socket and PID file.
        let running = self
            .lab
            .processes()
            .iter_mut()
            .any(|p| p.label() == WG_LABEL && p.exited().is_none());
        if running {
            self.lab.stop(WG_LABEL);
        }
        let _ = wgnode::down(&mut self.lab, &self.b);
        for iface in [&self.a_iface, &self.b.iface] {
            let _ = std::fs::remove_file(format!("/run/wgmesh/{iface}.pid"));
            let _ = std::fs::remove_file(format!("/run/wgmesh/{iface}.log"));
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{iface}.sock"));
        }
    }
}

fn setup(test: &str) -> Option<Setup> {
    let mut lab = Lab::for_test(test)?;
    lab.add_public_host("a", A_ADDR.parse().expect("ip"))
        .expect("host a");
    lab.add_public_host("b", B_ADDR.parse().expect("ip"))
        .expect("host b");
    let a_key = random_key();
    let b_key = random_key();
    let a_iface = lab.id().wg_iface(0);
    let b_iface = lab.id().wg_iface(1);
    let b_conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = {B_V4}/24\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {A_V4}/32\n",
        b_key.to_base64().as_str(),
        a_key.public_key(),
    );
    let b = wgnode::up(&mut lab, "b", &b_iface, &b_conf)
        .unwrap_or_else(|e| panic!("wireguard-go: {e}\n{}", lab.logs()));
    let a_conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = {A_V4}/24\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {B_V4}/32\nEndpoint = {B_ADDR}:51820\n",
        a_key.to_base64().as_str(),
        b_key.public_key(),
    );
    let conf = write_conf(&lab, "a.conf", &a_conf);
    let mut setup = Setup {
        lab,
        a_key,
        b_key,
        a_iface,
        b,
    };
    start_wgmesh(&mut setup.lab, &conf, &setup.a_iface);
    Some(setup)
}

/// `wgmesh wg up --foreground` in host a, waited for until its PID file
/// says it is up.
fn start_wgmesh(lab: &mut Lab, conf: &Path, iface: &str) {
    support::wgmesh_wg_up(lab, "a", WG_LABEL, conf, iface, &[], UP_TIMEOUT);
}

/// wgmesh is still serving: bad input must never take it down.
fn assert_running(lab: &mut Lab) {
    let proc = lab
        .processes()
        .iter_mut()
        .find(|p| p.label() == WG_LABEL)
        .expect("spawned");
    if let Some(status) = proc.exited() {
        panic!("wgmesh exited ({status}):\n{}", proc.log_text());
    }
}

impl Setup {
    fn ping(&self, from: &str, to: &str) {
        self.lab
            .ping_until(from, to.parse().expect("ip"), PING_TIMEOUT)
            .unwrap_or_else(|e| panic!("ping {from} → {to}: {e}\n{}", self.lab.logs()));
    }

    fn exec(&self, host: &str, args: &[&str]) -> String {
        let out = self
            .lab
            .exec(host, args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", self.lab.logs()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The interface's counters, as an operator reads them: `wgmesh wg
    /// stats IFACE --json`, run in host a.
    fn stats(&self) -> HashMap<String, u64> {
        let json = self.exec("a", &[WGMESH, "wg", "stats", &self.a_iface, "--json"]);
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("stats JSON: {e}: {json}"))
    }

    /// Polls the counters until `done` holds for their change since
    /// `before`; returns that change.
    fn wait_counters(
        &self,
        before: &HashMap<String, u64>,
        what: &str,
        done: impl Fn(&Delta) -> bool,
    ) -> Delta {
        let deadline = Instant::now() + COUNT_TIMEOUT;
        loop {
            let delta = Delta::between(before, &self.stats());
            if done(&delta) {
                return delta;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: counters after {COUNT_TIMEOUT:?}: {delta:?}\n{}",
                self.lab.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How much each counter moved.
struct Delta(HashMap<String, u64>);

impl std::fmt::Debug for Delta {
    /// The counters that moved, by name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut moved: Vec<_> = self.0.iter().filter(|(_, v)| **v != 0).collect();
        moved.sort();
        f.debug_map().entries(moved).finish()
    }
}

impl Delta {
    fn between(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> Self {
        Self(
            after
                .iter()
                .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> u64 {
        *self
            .0
            .get(name)
            .unwrap_or_else(|| panic!("no counter {name} in {:?}", self.0))
    }
}

/// A UDP socket bound to `bind` inside the network namespace `netns`.
fn socket_in(netns: &str, bind: SocketAddr) -> UdpSocket {
    support::udp_socket_in(netns, bind).unwrap_or_else(|e| panic!("bind {bind} in {netns}: {e}"))
}

/// A real, well-formed handshake initiation (valid mac1) for the
/// interface whose public key is `to`, made by wgmesh-proto's device for
/// a fresh key that interface does not know.
fn initiation_from_unknown_key(to: PublicKey) -> Vec<u8> {
    let now = Instant::now();
    let mut mallory = Device::new();
    let mut peer = PeerChange::new(to);
    peer.endpoint = Some(format!("{A_ADDR}:51820").parse().expect("addr"));
    peer.allowed_ips = vec![format!("{A_V4}/32").parse().expect("net")];
    let cmd = SetCommand {
        private_key: Some(Some(random_key())),
        peers: vec![peer],
        ..SetCommand::default()
    };
    mallory.apply(now, &cmd).expect("mallory's config");
    // Any packet for the peer starts a handshake.
    let mut packet = vec![0u8; 20];
    packet[0] = 0x45;
    packet[3] = 20;
    packet[8] = 64;
    packet[12..16].copy_from_slice(&[10, 99, 0, 1]);
    packet[16..20].copy_from_slice(&[10, 77, 0, 1]);
    let mut out = Vec::new();
    mallory
        .handle_tun(now, &packet, &mut out)
        .expect("a handshake starts");
    match out.as_slice() {
        [Output::Network { bytes, .. }] if bytes.len() == INITIATION_LEN && bytes[0] == 1 => {
            bytes.clone()
        }
        other => panic!("expected one initiation, got {other:?}"),
    }
}

/// Truncated and forged datagrams, and handshakes from unknown keys: each
/// dropped and counted under its own reason, nothing answered, the peer
/// unaffected. Then a flood of initiations from wireguard-go's own address,
/// above the rate limit: cookie replies (type 3) come back on the wire, as
/// many as the counter says, the rest of the flood is dropped as unknown
/// peer; and wireguard-go, made to handshake afresh in the middle of the
/// flood, still gets through.
#[test]
fn bad_input_is_dropped_counted_and_the_flood_gets_cookies() {
    let Some(mut s) = setup("bad_input_is_dropped_counted_and_the_flood_gets_cookies") else {
        return;
    };
    s.ping("a", B_V4);
    let a_pub = s.a_key.public_key();
    let netns = s.lab.host("b").expect("b").netns.name().to_owned();
    let attacker = socket_in(&netns, format!("{B_ADDR}:40000").parse().expect("addr"));
    let target: SocketAddr = format!("{A_ADDR}:51820").parse().expect("addr");
    let send = |bytes: &[u8]| {
        let n = attacker.send_to(bytes, target).expect("send");
        assert_eq!(n, bytes.len());
    };

    // (a) Truncated and forged datagrams.
    let before = s.stats();
    let text = s.exec("a", &[WGMESH, "wg", "stats", &s.a_iface]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("dropped_malformed") && l.split_whitespace().count() == 2),
        "`wg stats` prints `name value` lines: {text}"
    );
    let genuine = initiation_from_unknown_key(a_pub);
    for i in 0..10u8 {
        // Random bytes. The first byte is neither a WireGuard type nor
        // STUN's (whose top two bits are zero), so the device must judge it.
        let mut junk = random_bytes::<200>().to_vec();
        junk[0] = 0xf0 | (i & 0x0f);
        junk.truncate(1 + usize::from(i) * 19);
        send(&junk);
    }
    for _ in 0..5 {
        // An initiation cut short, and a data header without its tag.
        send(&genuine[..100]);
        let mut short_data = random_bytes::<20>();
        short_data[..4].copy_from_slice(&[4, 0, 0, 0]);
        send(&short_data);
    }
    for _ in 0..10 {
        // A data message for a receiver index wgmesh never gave out.
        let mut data = random_bytes::<96>();
        data[..4].copy_from_slice(&[4, 0, 0, 0]);
        send(&data);
    }
    for i in 0..10 {
        // Initiations whose mac1 is not for wgmesh's key: random bytes
        // with the right type and length, and a real one with mac1 flipped.
        let mut bad = if i % 2 == 0 {
            random_bytes::<INITIATION_LEN>().to_vec()
        } else {
            genuine.clone()
        };
        bad[..4].copy_from_slice(&[1, 0, 0, 0]);
        bad[INITIATION_MAC1.start] ^= 0x01;
        send(&bad);
    }
    let d = s.wait_counters(&before, "forged datagrams", |d| {
        d.get("dropped_malformed") >= 20
            && d.get("dropped_unknown_index") >= 10
            && d.get("dropped_invalid_mac") >= 10
    });
    println!("forged: {d:?}");
    assert_eq!(d.get("dropped_malformed"), 20, "{d:?}");
    assert_eq!(d.get("dropped_unknown_index"), 10, "{d:?}");
    assert_eq!(d.get("dropped_invalid_mac"), 10, "{d:?}");
    assert_eq!(d.get("dropped_unknown_peer"), 0, "{d:?}");
    assert_eq!(d.get("cookie_replies_sent"), 0, "{d:?}");
    assert_running(&mut s.lab);

    // (b) Well-formed initiations (valid mac1) from keys wgmesh does not know.
    let before = s.stats();
    for _ in 0..5 {
        send(&initiation_from_unknown_key(a_pub));
    }
    let d = s.wait_counters(&before, "unknown keys", |d| {
        d.get("dropped_unknown_peer") >= 5
    });
    println!("unknown keys: {d:?}");
    assert_eq!(d.get("dropped_unknown_peer"), 5, "{d:?}");
    assert_eq!(d.get("handshake_responses_sent"), 0, "{d:?}");
    assert_eq!(d.get("cookie_replies_sent"), 0, "{d:?}");
    s.ping("a", B_V4);

    // (c) The flood: one valid-looking initiation, sent ~1,000 times a
    // second from b's address (the same source IP as wireguard-go). The
    // first RATE_LIMIT each second are judged (unknown peer); the rest get
    // a cookie reply (paper §5.3). Whatever comes back is read as it comes.
    let flood = initiation_from_unknown_key(a_pub);
    let flood_sender = u32::from_le_bytes(flood[4..8].try_into().expect("4 bytes"));
    let before = s.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_receiver = Arc::new(AtomicBool::new(false));
    let cookies = Arc::new(AtomicU64::new(0));
    let other_replies = Arc::new(AtomicU64::new(0));
    let receiver = {
        let sock = attacker.try_clone().expect("clone");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let (stop, cookies, other) = (
            Arc::clone(&stop_receiver),
            Arc::clone(&cookies),
            Arc::clone(&other_replies),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // Until stopped and drained (a read times out).
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let reply = &buf[..n];
                        let is_cookie = n == COOKIE_REPLY_LEN
                            && reply[..4] == [3, 0, 0, 0]
                            && reply[4..8] == flood_sender.to_le_bytes()
                            && from == target;
                        if is_cookie {
                            cookies.fetch_add(1, Ordering::Relaxed);
                        } else {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) if stop.load(Ordering::Acquire) => return,
                    Err(_) => {}
                }
            }
        })
    };
    let flooder = {
        let sock = attacker.try_clone().expect("clone");
        let (stop, flood) = (Arc::clone(&stop), flood.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Acquire) {
                for _ in 0..10 {
                    if sock.send_to(&flood, target).is_ok() {
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (sent, started.elapsed())
        })
    };
    // The flood is on once cookie replies come back.
    let deadline = Instant::now() + COUNT_TIMEOUT;
    while cookies.load(Ordering::Relaxed) < 100 {
        assert!(
            Instant::now() < deadline,
            "no cookie replies under the flood\n{}",
            s.lab.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The existing session carries on: data is not rate-limited.
    s.ping("a", B_V4);
    // wireguard-go forgets wgmesh and must handshake afresh, from the
    // flooded address, in the middle of the flood: its initiations count
    // towards the same limit, so it may be answered with a cookie reply
    // first, and then retry with mac2 (REKEY_TIMEOUT later).
    let b_iface = s.b.iface.clone();
    let a_pub_s = a_pub.to_string();
    s.exec("b", &["wg", "set", &b_iface, "peer", &a_pub_s, "remove"]);
    s.exec(
        "b",
        &[
            "wg",
            "set",
            &b_iface,
            "peer",
            &a_pub_s,
            "allowed-ips",
            &format!("{A_V4}/32"),
            "endpoint",
            &format!("{A_ADDR}:51820"),
        ],
    );
    let handshake_at = Instant::now();
    s.ping("b", A_V4);
    let through_after = handshake_at.elapsed();
    stop.store(true, Ordering::Release);
    let (sent, flooded_for) = flooder.join().expect("flooder");
    // Every initiation sent is judged or answered, and the answers arrive.
    let d = s.wait_counters(&before, "the flood", |d| {
        d.get("dropped_unknown_peer") + cookies.load(Ordering::Relaxed) >= sent
    });
    stop_receiver.store(true, Ordering::Release);
    receiver.join().expect("receiver");
    let cookies = cookies.load(Ordering::Relaxed);
    let other_replies = other_replies.load(Ordering::Relaxed);
    println!(
        "flood: {sent} initiations in {flooded_for:?}, {cookies} cookie replies received, \
         wireguard-go through after {through_after:?}; counters: {d:?}"
    );
    assert_eq!(other_replies, 0, "only cookie replies come back");
    assert!(
        cookies > sent / 2,
        "most of the flood is over the limit: {cookies} of {sent}"
    );
    // Every flood initiation was either judged (below the limit: an
    // unknown key) or answered with a cookie, and every cookie reply
    // counted reached the attacker, but those to wireguard-go.
    assert_eq!(
        d.get("dropped_unknown_peer") + cookies,
        sent,
        "judged + cookies = sent: {d:?}"
    );
    let to_wireguard_go = d.get("cookie_replies_sent") - cookies;
    println!("cookie replies to wireguard-go: {to_wireguard_go}");
    assert!(to_wireguard_go <= 5, "{d:?}");
    // Judged: at most RATE_LIMIT per second of flooding (plus one window
    // the flood only partly covered).
    let secs = flooded_for.as_secs() + 2;
    assert!(
        d.get("dropped_unknown_peer") <= RATE_LIMIT * secs,
        "{d:?} over ~{secs} s"
    );
    assert!(d.get("handshakes_completed") >= 1, "{d:?}");
    assert_eq!(d.get("dropped_invalid_mac"), 0, "{d:?}");
    assert_eq!(d.get("dropped_malformed"), 0, "{d:?}");

    // After the flood: both ways, `wg show` still reads the interface.
    s.ping("a", B_V4);
    s.ping("b", A_V4);
    let show = s.exec("a", &["wg", "show", &s.a_iface]);
    assert!(
        show.contains(&format!("peer: {}", s.b_key.public_key())),
        "{show}"
    );
    assert_running(&mut s.lab);
}
