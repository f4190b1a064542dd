//! The control client against a real HTTP server on loopback: bearer
//! tokens and JSON bodies go out, replies and the server's error messages
//! come back, 204 reads as `()`, and a map stream written in small,
//! delayed fragments (chunked transfer) yields its heartbeats and updates.

#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use wgmesh_agent::client::{Client, ClientError, StreamItem};
use wgmesh_core::control::EndpointReport;
use wgmesh_core::netmap::MapUpdate;

/// One request as the server saw it: the head (request line and headers,
/// lowercased names) and the body.
#[derive(Debug)]
struct Seen {
    head: String,
    body: String,
}

/// Reads one HTTP/1.1 request (Content-Length bodies only).
async fn read_request(conn: &mut TcpStream) -> Seen {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before a full request");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    Seen {
        head,
        body: String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned(),
    }
}

/// Serves one connection with a fixed reply; reports what it saw.
async fn one_shot(reply: &'static str) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let seen = read_request(&mut conn).await;
        conn.write_all(reply.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
        tx.send(seen).await.unwrap();
    });
    (addr, rx)
}

#[tokio::test]
async fn bearer_json_out_json_in() {
    let (addr, mut seen) = one_shot(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\
         connection: close\r\n\r\n{\"a\": [1]}\n",
    )
    .await;
    // A path prefix on the server URL is kept.
    let client = Client::new(&format!("http://{addr}/prefix"), None).unwrap();
    let got: serde_json::Value = client
        .post("api/v1/things", "wga_token", &serde_json::json!({"x": 1}))
        .await
        .unwrap();
    assert_eq!(got, serde_json::json!({"a": [1]}));
    let seen = seen.recv().await.unwrap();
    assert!(
        seen.head
            .starts_with("POST /prefix/api/v1/things HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    assert!(
        seen.head
            .to_ascii_lowercase()
            .contains("authorization: bearer wga_token\r\n"),
        "{}",
        seen.head
    );
    assert_eq!(seen.body, "{\"x\":1}");
}

#[tokio::test]
async fn no_content_reads_as_unit() {
    let (addr, mut seen) = one_shot("HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
    let client = Client::new(&format!("http://{addr}"), None).unwrap();
    let report = EndpointReport {
        local: vec!["192.0.2.1:51820".parse().unwrap()],
        reflexive: None,
        nat: None,
    };
    client.report_endpoints("wgn_cred", &report).await.unwrap();
    let seen = seen.recv().await.unwrap();
    assert!(
        seen.head.starts_with("POST /api/v1/node/endpoints "),
        "{}",
        seen.head
    );
    let body: EndpointReport = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body, report);
}

#[tokio::test]
async fn the_servers_error_message_is_surfaced() {
    let body = r#"{"error":"unauthorized","message":"unknown or revoked credential"}"#;
    let reply: &'static str = Box::leak(
        format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let (addr, _seen) = one_shot(reply).await;
    let client = Client::new(&format!("http://{addr}"), None).unwrap();
    let e = client.fetch_map("wgn_bad").await.unwrap_err();
    match &e {
        ClientError::Api {
            status,
            error,
            message,
            ..
        } => {
            assert_eq!(status.as_u16(), 401);
            assert_eq!(error, "unauthorized");
            assert_eq!(message, "unknown or revoked credential");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().contains("unknown or revoked credential"),
        "{e}"
    );
    assert!(!e.is_transient());

    let (addr, _seen) = one_shot(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 11\r\nconnection: close\r\n\r\nproxy said\n",
    )
    .await;
    let client = Client::new(&format!("http://{addr}"), None).unwrap();
    let e = client.fetch_map("wgn").await.unwrap_err();
    assert!(e.is_transient());
    assert!(e.to_string().contains("proxy said"), "{e}");
}

#[tokio::test]
async fn unreachable_server_is_transient() {
    // Bound then dropped: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let client = Client::new(&format!("http://{addr}"), None).unwrap();
    let e = client.fetch_map("wgn").await.unwrap_err();
    assert!(matches!(e, ClientError::Transport { .. }), "{e:?}");
    assert!(e.is_transient());
    // The cause, from deep in reqwest's chain, is in the message.
    assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
}

#[tokio::test]
async fn bad_urls_and_ca_files_are_refused() {
    assert!(matches!(
        Client::new("ftp://x", None),
        Err(ClientError::Url { .. })
    ));
    assert!(matches!(
        Client::new("not a url", None),
        Err(ClientError::Url { .. })
    ));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "no certificate here").unwrap();
    assert!(matches!(
        Client::new("https://example.com", Some(&ca)),
        Err(ClientError::CaFile { .. })
    ));
}

const FULL: &str = r#"{"type":"full","network":"net","version":3,"overlay":"100.64.0.0/24","node":{"name":"me","public_key":"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=","address":"100.64.0.1/24","hub":false},"peers":[],"default_action":"allow"}"#;
const DELTA: &str = r#"{"type":"delta","from_version":3,"version":4,"upsert":[],"remove":[]}"#;

#[tokio::test]
async fn a_fragmented_event_stream() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let seen = read_request(&mut conn).await;
        assert!(
            seen.head.starts_with("GET /api/v1/node/map/stream "),
            "{}",
            seen.head
        );
        conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
              transfer-encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
        let text =
            format!(": hi\n\nevent: map\ndata: {FULL}\n\n:\n\nevent: map\r\ndata: {DELTA}\r\n\r\n");
        // Seven-byte chunks, each flushed on its own, a little apart.
        for piece in text.as_bytes().chunks(7) {
            let mut frame = format!("{:x}\r\n", piece.len()).into_bytes();
            frame.extend_from_slice(piece);
            frame.extend_from_slice(b"\r\n");
            conn.write_all(&frame).await.unwrap();
            conn.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        conn.write_all(b"0\r\n\r\n").await.unwrap();
    });
    let client = Client::new(&format!("http://{addr}"), None).unwrap();
    let mut stream = client.stream_maps("wgn_cred").await.unwrap();
    let mut got = Vec::new();
    while let Some(item) = stream.next().await.unwrap() {
        got.push(item);
    }
    let alive = got
        .iter()
        .filter(|i| matches!(i, StreamItem::Alive))
        .count();
    let updates: Vec<&MapUpdate> = got
        .iter()
        .filter_map(|i| match i {
            StreamItem::Update(u) => Some(&**u),
            StreamItem::Alive => None,
        })
        .collect();
    // A heartbeat read with an event in the same chunk is not reported on
    // its own: the event shows the server is alive.
    assert!((1..=2).contains(&alive), "{got:?}");
    assert!(
        matches!(&updates[..], [MapUpdate::Full(m), MapUpdate::Delta(d)] if m.version == 3 && d.version == 4),
        "{updates:?}"
    );
}
