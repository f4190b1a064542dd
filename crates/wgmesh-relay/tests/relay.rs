//! The relay over real sockets on loopback: clients over UDP and over
//! WebSocket/TLS (a CA-signed certificate made with openssl) exchange
//! frames both ways; non-members, forged and replayed hellos are refused;
//! the rate limit drops and counts; the metrics listener tells all that
//! in a form promtool accepts; STUN is answered, also to a third-party
//! RFC 3489 client; a node removed from the members file is cut off
//! within 2 s. Waits poll to deadlines.
#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use wgmesh_core::key::{PrivateKey, PublicKey};
use wgmesh_proto::relay::hello::HelloSealer;
use wgmesh_proto::relay::{ClientEvent, Frame, RateLimit, RefuseReason, RelayConfig};
use wgmesh_proto::stun;
use wgmesh_relay::serve::{self, MembersSource, RelayServerConfig, Running, Stats, WsListen};
use wgmesh_relay::{RelayClient, RelayClientError};

const DEADLINE: Duration = Duration::from_secs(5);

fn new_key() -> PrivateKey {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    PrivateKey::from_random(b)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    b
}

fn unix_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

struct Relay {
    dir: tempfile::TempDir,
    running: Running,
    ca: PathBuf,
    members_file: PathBuf,
}

impl Relay {
    async fn start(members: &[&PrivateKey], rate_limit: Option<RateLimit>, tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let wgmesh_lab::test_ca::TestCa { ca, cert, key } =
            wgmesh_lab::test_ca::make(dir.path(), &["127.0.0.1".parse().unwrap()]).unwrap();
        let members_file = dir.path().join("members");
        write_members(&members_file, members);
        let running = serve::start(RelayServerConfig {
            listen_udp: "127.0.0.1:0".parse().unwrap(),
            ws: Some(WsListen {
                listen: "127.0.0.1:0".parse().unwrap(),
                tls: tls.then_some((cert, key)),
            }),
            members: MembersSource::File(members_file.clone()),
            key: new_key(),
            core: RelayConfig {
                rate_limit,
                ..RelayConfig::default()
            },
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        })
        .await
        .unwrap();
        let relay = Self {
            dir,
            running,
            ca,
            members_file,
        };
        let n = members.len();
        relay
            .wait_stats("the members file to load", |s| s.members == n)
            .await;
        relay
    }

    fn key(&self) -> PublicKey {
        self.running.public_key
    }

    fn wss_url(&self) -> String {
        format!("wss://{}/relay", self.running.ws.unwrap())
    }

    async fn stats(&self) -> Stats {
        self.running.stats().await.unwrap()
    }

    /// `GET /metrics` on the metrics listener, checked by promtool.
    async fn scrape(&self) -> String {
        let url = format!("http://{}/metrics", self.running.metrics.unwrap());
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        let text = r.text().await.unwrap();
        let t = text.clone();
        tokio::task::spawn_blocking(move || wgmesh_lab::third_party::promtool_check_metrics(&t))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("promtool on the relay's metrics: {e}\n{text}"));
        text
    }

    async fn wait_stats(&self, what: &str, cond: impl Fn(&Stats) -> bool) -> Stats {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.stats().await;
            if cond(&s) {
                return s;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn udp_client(&self, node: &PrivateKey) -> Result<RelayClient, RelayClientError> {
        RelayClient::connect_udp(self.running.udp, self.key(), node).await
    }

    async fn wss_client(&self, node: &PrivateKey) -> Result<RelayClient, RelayClientError> {
        let tls = wgmesh_relay::tls::client_config(Some(&self.ca)).unwrap();
        RelayClient::connect_ws(&self.wss_url(), self.key(), node, Some(tls)).await
    }
}

fn write_members(path: &Path, members: &[&PrivateKey]) {
    let text: String = members
        .iter()
        .map(|k| format!("{}\n", k.public_key()))
        .collect();
    // Whole or not at all: the relay polls the file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The next payload `c` receives, skipping other events, within the deadline.
async fn next_payload(c: &mut RelayClient) -> (PublicKey, Vec<u8>) {
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(end, c.recv()).await {
            Ok(Some(ClientEvent::Received { from, payload })) => return (from, payload),
            Ok(Some(_)) => {}
            Ok(None) => panic!("the relay client closed"),
            Err(_) => panic!("no payload within {DEADLINE:?}"),
        }
    }
}

/// The next event `c` gets that `pick` accepts, within `deadline`.
async fn next_event(
    c: &mut RelayClient,
    deadline: Duration,
    pick: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(end, c.recv()).await {
            Ok(Some(e)) if pick(&e) => return e,
            Ok(Some(_)) => {}
            Ok(None) => panic!("the relay client closed"),
            Err(_) => panic!("no matching event within {deadline:?}"),
        }
    }
}

/// A bare UDP socket that speaks frames by hand.
async fn raw_socket(relay: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(relay).await.unwrap();
    s
}

async fn raw_recv(s: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(DEADLINE, s.recv(&mut buf))
        .await
        .expect("an answer from the relay")
        .unwrap();
    buf.truncate(n);
    buf
}

fn refused(r: RefuseReason) -> Vec<u8> {
    Frame::Refused(r).to_vec().unwrap()
}

#[tokio::test]
async fn udp_and_wss_clients_exchange_frames_both_ways_unchanged() {
    let (a, b, c) = (new_key(), new_key(), new_key());
    let relay = Relay::start(&[&a, &b, &c], None, true).await;
    let mut ca = relay.udp_client(&a).await.unwrap();
    let mut cb = relay.wss_client(&b).await.unwrap();
    let cc = relay.wss_client(&c).await.unwrap();
    // Random bytes of many sizes, up to a jumbo datagram: the relay
    // copies the payload and never looks inside.
    let mut sent = 0u64;
    for size in [1usize, 4, 33, 148, 1420, 9000, 60_000] {
        let p = random_bytes(size);
        ca.send(b.public_key(), &p).await.unwrap();
        assert_eq!(next_payload(&mut cb).await, (a.public_key(), p));
        let p = random_bytes(size);
        cb.send(a.public_key(), &p).await.unwrap();
        assert_eq!(next_payload(&mut ca).await, (b.public_key(), p));
        // WebSocket to WebSocket too.
        let p = random_bytes(size);
        cc.send(b.public_key(), &p).await.unwrap();
        assert_eq!(next_payload(&mut cb).await, (c.public_key(), p));
        sent += 3 * size as u64;
    }
    let s = relay.stats().await;
    assert_eq!(s.core.frames_forwarded, 21);
    assert_eq!(s.core.bytes_forwarded, sent);
    assert_eq!(s.core.hellos_accepted, 3);
    assert_eq!(s.registered, 3);
    assert_eq!(s.ws_connections, 2);
    // The metrics, by the transport each frame went out on: to b's
    // WebSocket from a and from c, to a over UDP from b.
    let m = relay.scrape().await;
    for line in [
        "wgmesh_relay_members 3".to_owned(),
        "wgmesh_relay_registrations 3".to_owned(),
        "wgmesh_relay_forwarded_packets_total{transport=\"ws\"} 14".to_owned(),
        "wgmesh_relay_forwarded_packets_total{transport=\"udp\"} 7".to_owned(),
        format!(
            "wgmesh_relay_forwarded_bytes_total{{transport=\"ws\"}} {}",
            sent / 3 * 2
        ),
        format!(
            "wgmesh_relay_forwarded_bytes_total{{transport=\"udp\"}} {}",
            sent / 3
        ),
        "wgmesh_relay_ws_connections_total 2".to_owned(),
    ] {
        assert!(m.lines().any(|l| l == line), "{line:?} not in\n{m}");
    }
    // Only /metrics is served there.
    let other = format!("http://{}/", relay.running.metrics.unwrap());
    assert_eq!(
        reqwest::get(&other).await.unwrap().status(),
        reqwest::StatusCode::NOT_FOUND
    );
    // A send to a key with no registration comes back as peer gone.
    let nobody = new_key().public_key();
    ca.send(nobody, b"x").await.unwrap();
    assert_eq!(
        next_event(&mut ca, DEADLINE, |e| matches!(e, ClientEvent::PeerGone(_))).await,
        ClientEvent::PeerGone(nobody)
    );
    relay.running.stop().await;
    drop(relay.dir);
}

#[tokio::test]
async fn plain_ws_only_when_asked_for() {
    let (a, b) = (new_key(), new_key());
    let relay = Relay::start(&[&a, &b], None, false).await;
    let url = format!("ws://{}/relay", relay.running.ws.unwrap());
    let mut ca = RelayClient::connect_ws(&url, relay.key(), &a, None)
        .await
        .unwrap();
    let cb = relay.udp_client(&b).await.unwrap();
    cb.send(a.public_key(), b"over plain ws").await.unwrap();
    assert_eq!(
        next_payload(&mut ca).await,
        (b.public_key(), b"over plain ws".to_vec())
    );
    // The wrong path is refused at the handshake.
    let wrong = format!("ws://{}/other", relay.running.ws.unwrap());
    assert!(matches!(
        RelayClient::connect_ws(&wrong, relay.key(), &a, None).await,
        Err(RelayClientError::WebSocket(_))
    ));
    relay.running.stop().await;
}

#[tokio::test]
async fn wss_needs_a_trusted_certificate() {
    let a = new_key();
    let relay = Relay::start(&[&a], None, true).await;
    // Without the private CA the certificate does not verify.
    let tls = wgmesh_relay::tls::client_config(None).unwrap();
    assert!(
        RelayClient::connect_ws(&relay.wss_url(), relay.key(), &a, Some(tls))
            .await
            .is_err()
    );
    assert!(relay.wss_client(&a).await.is_ok());
    relay.running.stop().await;
}

#[tokio::test]
async fn non_members_are_refused_and_their_frames_never_delivered() {
    let (a, b, m) = (new_key(), new_key(), new_key());
    let relay = Relay::start(&[&a, &b], None, true).await;
    let ca = relay.udp_client(&a).await.unwrap();
    let mut cb = relay.wss_client(&b).await.unwrap();
    assert!(matches!(
        relay.udp_client(&m).await,
        Err(RelayClientError::Refused(RefuseReason::NotMember))
    ));
    assert!(matches!(
        relay.wss_client(&m).await,
        Err(RelayClientError::Refused(RefuseReason::NotMember))
    ));
    // Frames straight at b without a hello, and after a refused hello.
    let raw = raw_socket(relay.running.udp).await;
    let hello = HelloSealer::new(&m, &relay.key())
        .unwrap()
        .hello(unix_ms(), random_bytes(24).try_into().unwrap());
    raw.send(&Frame::ClientHello(hello).to_vec().unwrap())
        .await
        .unwrap();
    assert_eq!(raw_recv(&raw).await, refused(RefuseReason::NotMember));
    for _ in 0..10 {
        let f = Frame::Send {
            to: b.public_key(),
            payload: b"from a stranger",
        };
        raw.send(&f.to_vec().unwrap()).await.unwrap();
        assert_eq!(raw_recv(&raw).await, refused(RefuseReason::NotRegistered));
    }
    // b's next payload is a's marker: nothing of the stranger's came first.
    ca.send(b.public_key(), b"marker").await.unwrap();
    assert_eq!(
        next_payload(&mut cb).await,
        (a.public_key(), b"marker".to_vec())
    );
    let s = relay.stats().await;
    assert_eq!(s.core.dropped_not_member, 3);
    assert_eq!(s.core.dropped_not_registered, 10);
    assert_eq!(s.core.frames_forwarded, 1);
    relay.running.stop().await;
}

#[tokio::test]
async fn forged_and_replayed_hellos_are_refused() {
    let (a, b, m) = (new_key(), new_key(), new_key());
    let relay = Relay::start(&[&a, &b], None, true).await;
    let cb = relay.udp_client(&b).await.unwrap();
    // m claims a's key with a proof made with m's own key.
    let forger = raw_socket(relay.running.udp).await;
    let mut forged = HelloSealer::new(&m, &relay.key())
        .unwrap()
        .hello(unix_ms(), random_bytes(24).try_into().unwrap());
    forged.node = a.public_key();
    forger
        .send(&Frame::ClientHello(forged).to_vec().unwrap())
        .await
        .unwrap();
    assert_eq!(raw_recv(&forger).await, refused(RefuseReason::BadProof));
    // a's real hello, by hand, is accepted once ...
    let real = raw_socket(relay.running.udp).await;
    let hello = HelloSealer::new(&a, &relay.key())
        .unwrap()
        .hello(unix_ms(), random_bytes(24).try_into().unwrap());
    let hello = Frame::ClientHello(hello).to_vec().unwrap();
    real.send(&hello).await.unwrap();
    assert_eq!(raw_recv(&real).await, vec![0xE2, 1]);
    // ... and replayed by someone who saw it, refused.
    forger.send(&hello).await.unwrap();
    assert_eq!(raw_recv(&forger).await, refused(RefuseReason::Replayed));
    // a's registration stayed where it was: b's frames reach `real`.
    cb.send(a.public_key(), b"to the real a").await.unwrap();
    assert_eq!(
        Frame::parse(&raw_recv(&real).await).unwrap(),
        Frame::Recv {
            from: b.public_key(),
            payload: b"to the real a"
        }
    );
    let s = relay.stats().await;
    assert_eq!(s.core.dropped_bad_hello, 2);
    relay.running.stop().await;
}

#[tokio::test]
async fn the_rate_limit_drops_and_counts_excess() {
    let (a, b) = (new_key(), new_key());
    let rate = RateLimit {
        bytes_per_sec: 10_000,
        burst_bytes: 20_000,
    };
    let relay = Relay::start(&[&a, &b], Some(rate), true).await;
    let ca = relay.udp_client(&a).await.unwrap();
    let mut cb = relay.wss_client(&b).await.unwrap();
    let started = Instant::now();
    for _ in 0..100 {
        ca.send(b.public_key(), &[7u8; 1000]).await.unwrap();
    }
    let s = relay
        .wait_stats("all 100 sends to be handled", |s| {
            s.core.frames_forwarded + s.core.dropped_rate_limited == 100
        })
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    // The burst, plus what the rate refilled meanwhile.
    let allowed = 20 + (elapsed * 10.0).ceil() as u64;
    assert!(
        s.core.frames_forwarded >= 20 && s.core.frames_forwarded <= allowed,
        "forwarded {} in {elapsed:.2} s",
        s.core.frames_forwarded
    );
    assert!(s.core.dropped_rate_limited >= 100 - allowed);
    let m = relay.scrape().await;
    let line = format!(
        "wgmesh_relay_dropped_total{{reason=\"rate_limited\"}} {}",
        s.core.dropped_rate_limited
    );
    assert!(m.lines().any(|l| l == line), "{line:?} not in\n{m}");
    // b gets exactly what was forwarded.
    for _ in 0..s.core.frames_forwarded {
        assert_eq!(next_payload(&mut cb).await.1, vec![7u8; 1000]);
    }
    relay.running.stop().await;
}

#[tokio::test]
async fn stun_is_answered_on_the_relay_port() {
    let a = new_key();
    let relay = Relay::start(&[&a], None, true).await;
    let s = raw_socket(relay.running.udp).await;
    let txid = stun::TransactionId(random_bytes(12).try_into().unwrap());
    s.send(&stun::binding_request(txid)).await.unwrap();
    let (got, mapped) = stun::parse_binding_response(&raw_recv(&s).await).unwrap();
    assert_eq!(got, txid);
    assert_eq!(mapped, s.local_addr().unwrap());
    assert_eq!(relay.stats().await.stun_answered, 1);
    // A comprehension-required attribute the relay does not know
    // (PRIORITY, 0x0024): a 420 listing it (RFC 8489 §6.3.1.1).
    let mut req = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&txid.0);
    req.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff]);
    s.send(&req).await.unwrap();
    let resp = raw_recv(&s).await;
    assert_eq!(
        stun::parse_binding_response(&resp).unwrap_err(),
        stun::StunError::ErrorResponse { code: Some(420) }
    );
    // Debian's RFC 3489 client (no magic cookie): before issue 10 the
    // relay counted it as ignored and said nothing.
    let udp = relay.running.udp;
    let got = tokio::task::spawn_blocking(move || {
        wgmesh_lab::third_party::stun_client_binding(udp, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("the RFC 3489 client against the relay's STUN: {e}"));
    assert_eq!(
        got.mapped,
        SocketAddr::new("127.0.0.1".parse().unwrap(), got.local_port)
    );
    let m = relay.scrape().await;
    for line in [
        "wgmesh_relay_stun_responses_total{result=\"success\",version=\"rfc8489\"} 1",
        "wgmesh_relay_stun_responses_total{result=\"error\",version=\"rfc8489\"} 1",
        "wgmesh_relay_udp_ignored_total 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line:?} not in\n{m}");
    }
    assert!(
        !m.lines()
            .any(|l| l
                == "wgmesh_relay_stun_responses_total{result=\"success\",version=\"rfc3489\"} 0"),
        "{m}"
    );
    relay.running.stop().await;
}

#[tokio::test]
async fn removal_from_the_members_file_cuts_a_node_off_within_2_s() {
    let (a, b, c, d) = (new_key(), new_key(), new_key(), new_key());
    let relay = Relay::start(&[&a, &b, &c, &d], None, true).await;
    let mut ca = relay.udp_client(&a).await.unwrap();
    let mut cb = relay.wss_client(&b).await.unwrap();
    let mut cc = relay.udp_client(&c).await.unwrap();
    let mut cd = relay.udp_client(&d).await.unwrap();
    cb.send(a.public_key(), b"before").await.unwrap();
    assert_eq!(next_payload(&mut ca).await.1, b"before");
    cd.send(a.public_key(), b"before").await.unwrap();
    assert_eq!(next_payload(&mut ca).await.1, b"before");

    let removed_at = Instant::now();
    write_members(&relay.members_file, &[&a, &c]);
    // b (WebSocket) and d (UDP) are told at once.
    let not_member = |e: &ClientEvent| matches!(e, ClientEvent::Refused(_) | ClientEvent::Lost);
    assert_eq!(
        next_event(&mut cb, Duration::from_secs(2), not_member).await,
        ClientEvent::Refused(RefuseReason::NotMember)
    );
    assert_eq!(
        next_event(&mut cd, Duration::from_secs(2), not_member).await,
        ClientEvent::Refused(RefuseReason::NotMember)
    );
    let cut = removed_at.elapsed();
    assert!(cut < Duration::from_secs(2), "cut off after {cut:?}");
    // b's WebSocket is closed by the relay.
    assert_eq!(
        next_event(&mut cb, DEADLINE, |e| *e == ClientEvent::Lost).await,
        ClientEvent::Lost
    );
    // a's sends to b and d now find no one; d's sends are refused.
    for gone in [b.public_key(), d.public_key()] {
        ca.send(gone, b"after").await.unwrap();
        assert_eq!(
            next_event(&mut ca, DEADLINE, |e| matches!(e, ClientEvent::PeerGone(_))).await,
            ClientEvent::PeerGone(gone)
        );
    }
    cd.send(a.public_key(), b"after").await.unwrap();
    assert_eq!(
        next_event(&mut cd, DEADLINE, |e| matches!(e, ClientEvent::Refused(_))).await,
        ClientEvent::Refused(RefuseReason::NotRegistered)
    );
    let s = relay.stats().await;
    assert_eq!(s.core.registrations_removed, 2);
    assert_eq!(s.registered, 2);
    // The others are untouched.
    ca.send(c.public_key(), b"still here").await.unwrap();
    assert_eq!(
        next_payload(&mut cc).await,
        (a.public_key(), b"still here".to_vec())
    );
    relay.running.stop().await;
}

/// A one-route HTTP server standing in for the coordination server's
/// `GET /api/v1/relay/members`: 401 without the bearer token, else the
/// JSON `body` holds at the time.
async fn fake_server(
    token: &'static str,
    body: std::sync::Arc<std::sync::Mutex<String>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                let req = String::from_utf8_lossy(&req).to_lowercase();
                let (status, text) = if !req.starts_with("get /api/v1/relay/members ") {
                    ("404 Not Found", String::new())
                } else if !req.contains(&format!("authorization: bearer {token}\r\n")) {
                    ("401 Unauthorized", String::new())
                } else {
                    ("200 OK", body.lock().unwrap().clone())
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = conn.write_all(resp.as_bytes()).await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn members_come_from_the_server_with_the_relay_token() {
    let (a, b) = (new_key(), new_key());
    let body = std::sync::Arc::new(std::sync::Mutex::new(format!(
        r#"{{"public_keys": ["{}", "{}"]}}"#,
        a.public_key(),
        b.public_key()
    )));
    let (server, server_task) = fake_server("relay-token", body.clone()).await;
    let start = |token: &str| {
        serve::start(RelayServerConfig {
            listen_udp: "127.0.0.1:0".parse().unwrap(),
            ws: None,
            members: MembersSource::Server {
                url: format!("http://{server}"),
                token: token.to_owned(),
                ca_file: None,
                interval: Duration::from_millis(200),
            },
            key: new_key(),
            core: RelayConfig::default(),
            metrics_listen: None,
        })
    };
    // The wrong token gets nothing: no members, everyone refused.
    let wrong = start("not-the-token").await.unwrap();
    assert!(matches!(
        RelayClient::connect_udp(wrong.udp, wrong.public_key, &a).await,
        Err(RelayClientError::Refused(RefuseReason::NotMember))
    ));
    assert_eq!(wrong.stats().await.unwrap().members, 0);
    wrong.stop().await;

    let running = start("relay-token").await.unwrap();
    let end = Instant::now() + DEADLINE;
    while running.stats().await.unwrap().members != 2 {
        assert!(Instant::now() < end, "the members never came");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ca = RelayClient::connect_udp(running.udp, running.public_key, &a)
        .await
        .unwrap();
    let mut cb = RelayClient::connect_udp(running.udp, running.public_key, &b)
        .await
        .unwrap();
    ca.send(b.public_key(), b"via the server's members")
        .await
        .unwrap();
    assert_eq!(next_payload(&mut cb).await.1, b"via the server's members");
    // The server drops b: cut off at the next poll.
    *body.lock().unwrap() = format!(r#"{{"public_keys": ["{}"]}}"#, a.public_key());
    assert_eq!(
        next_event(&mut cb, Duration::from_secs(2), |e| matches!(
            e,
            ClientEvent::Refused(_)
        ))
        .await,
        ClientEvent::Refused(RefuseReason::NotMember)
    );
    server_task.abort();
    running.stop().await;
}
