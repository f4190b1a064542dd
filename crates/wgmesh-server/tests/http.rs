//! The server over real sockets: HTTPS with a certificate the client must
//! verify, plain HTTP only with --insecure-http, the map stream as
//! server-sent events, and the STUN responder.
#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::UdpSocket;
use wgmesh_core::control::{EnrollChallenge, enroll_proof};
use wgmesh_core::key::PrivateKey;
use wgmesh_proto::stun;
use wgmesh_server::serve::{self, ServerConfig, Transport};
use wgmesh_server::service::{Actor, ServiceConfig};

fn config(url: &str, transport: Transport) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: url.to_owned(),
        transport,
        stun_listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: None,
        service: ServiceConfig::default(),
    }
}

fn new_key() -> PrivateKey {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    PrivateKey::from_random(b)
}

/// An enrolment body as an agent makes it, answering `challenge`.
fn enrol_body(challenge: &Value, setup_key: &str, name: &str) -> Value {
    let key = new_key();
    let ch: EnrollChallenge = serde_json::from_value(challenge.clone()).unwrap();
    let proof = enroll_proof(&key, &ch, setup_key, name).unwrap();
    json!({ "setup_key": setup_key, "public_key": key.public_key(), "name": name,
            "challenge": ch.id, "proof": proof })
}

#[tokio::test]
async fn https_is_verified_against_the_given_ca_and_streams_maps() {
    let db = support::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let wgmesh_lab::test_ca::TestCa { ca, cert, key } =
        wgmesh_lab::test_ca::make(dir.path(), &["127.0.0.1".parse().unwrap()]).unwrap();
    support::create_schema(&db).await;
    let running = serve::start(config(db.url(), Transport::Tls { cert, key }))
        .await
        .unwrap();
    let base = format!("https://{}", running.http);
    let svc = running.service.clone();
    let admin = svc.create_admin_token(&Actor::Console, "t").await.unwrap();

    // Without the CA the client refuses the server.
    let untrusting = reqwest::Client::builder().build().unwrap();
    let err = untrusting
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").to_lowercase().contains("certificate"),
        "{err:?}"
    );

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let post = |path: &'static str, token: Option<String>, body: Value| {
        let mut r = client.post(format!("{base}{path}")).json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let resp = r.send().await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            resp.json::<Value>().await.unwrap()
        }
    };
    post(
        "/api/v1/networks",
        Some(admin.clone()),
        json!({ "name": "seed", "overlay": "100.64.0.0/24" }),
    )
    .await;
    let sk = post(
        "/api/v1/setup-keys",
        Some(admin.clone()),
        json!({ "network": "seed", "reusable": true }),
    )
    .await;
    let sk = sk["key"].as_str().unwrap();
    let ch = post("/api/v1/enroll/challenge", None, Value::Null).await;
    let a = post("/api/v1/enroll", None, enrol_body(&ch, sk, "a")).await;
    let cred = a["credential"].as_str().unwrap();

    // The stream: `event: map` with a full map first …
    let resp = client
        .get(format!("{base}/api/v1/node/map/stream"))
        .bearer_auth(cred)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut next_event = async || -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                    assert!(event.contains("event: map"), "{event}");
                    return serde_json::from_str(data).unwrap();
                }
                continue; // a heartbeat comment
            }
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .expect("no map event within 2 s")
                .unwrap()
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    };
    let first = next_event().await;
    assert_eq!(first["type"], "full");
    assert_eq!(first["node"]["name"], "a");
    // … then a delta when another node joins.
    let ch = post("/api/v1/enroll/challenge", None, Value::Null).await;
    post("/api/v1/enroll", None, enrol_body(&ch, sk, "b")).await;
    let delta = next_event().await;
    assert_eq!(delta["type"], "delta", "{delta}");
    assert_eq!(delta["upsert"][0]["name"], "b");
    let (_, online) = svc.node_counts().await;
    assert_eq!(online, 1);

    // STUN: a Binding request gets our own address back.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let txid = stun::TransactionId([7; 12]);
    sock.send_to(&stun::binding_request(txid), running.stun.unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .expect("no STUN response within 2 s")
        .unwrap();
    let (got_txid, mapped) = stun::parse_binding_response(&buf[..n]).unwrap();
    assert_eq!(got_txid, txid);
    assert_eq!(mapped, sock.local_addr().unwrap());

    drop(body);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn plain_http_only_with_the_explicit_flag() {
    assert!(
        serve::transport(false, None, None)
            .unwrap_err()
            .to_string()
            .contains("--insecure-http")
    );
    assert!(serve::transport(true, Some("c".into()), Some("k".into())).is_err());
    assert!(serve::transport(false, Some("c".into()), None).is_err());
    let db = support::sqlite();
    support::create_schema(&db).await;
    let running = serve::start(config(
        db.url(),
        serve::transport(true, None, None).unwrap(),
    ))
    .await
    .unwrap();
    let addr: SocketAddr = running.http;
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    running.stop().await.unwrap();
}
