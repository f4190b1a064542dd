//! The relay's WebSocket listener: TCP, TLS (unless `--insecure-ws`), the
//! WebSocket handshake on [`WS_PATH`], then one session per connection
//! whose binary messages are frames. Each connection is a reader that
//! hands frames to the relay's loop and a writer fed by a bounded channel
//! the loop holds; the loop closes a connection by dropping its sender.
//!
//! It does not own the relay's state: frames go to the loop in
//! [`crate::serve`].

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wgmesh_proto::relay::wire::MAX_FRAME_LEN;

/// The path the WebSocket is served on (`wss://relay:443/relay`).
pub const WS_PATH: &str = "/relay";
/// TLS and WebSocket handshakes must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames queued for one connection before more are dropped (as a full
/// UDP socket buffer would).
pub(crate) const CONN_QUEUE: usize = 512;

/// What a connection tells the relay's loop.
#[derive(Debug)]
pub(crate) enum WsIn {
    Opened { id: u64, tx: mpsc::Sender<Vec<u8>> },
    Frame { id: u64, bytes: Vec<u8> },
    Closed { id: u64 },
}

pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_FRAME_LEN))
        .max_frame_size(Some(MAX_FRAME_LEN))
}

/// Accepts connections until the task is aborted.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    to_core: mpsc::Sender<WsIn>,
) {
    let mut next_id = 0u64;
    loop {
        let (tcp, _peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                eprintln!("wgmesh relay: accepting a WebSocket connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let tls = tls.clone();
        let to_core = to_core.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tls {
                Some(acceptor) => {
                    let accepted =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                    if let Ok(Ok(stream)) = accepted {
                        serve_conn(stream, id, to_core).await;
                    }
                }
                None => serve_conn::<TcpStream>(tcp, id, to_core).await,
            }
        });
    }
}

#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn check_path(req: &Request, resp: Response) -> Result<Response, ErrorResponse> {
    if req.uri().path() == WS_PATH {
        Ok(resp)
    } else {
        let mut err = ErrorResponse::new(Some("not found".to_owned()));
        *err.status_mut() = StatusCode::NOT_FOUND;
        Err(err)
    }
}

async fn serve_conn<S>(stream: S, id: u64, to_core: mpsc::Sender<WsIn>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(ws_config())),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(_)) | Err(_) => return,
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONN_QUEUE);
    if to_core.send(WsIn::Opened { id, tx }).await.is_err() {
        return;
    }
    let writer = async {
        while let Some(bytes) = rx.recv().await {
            if sink.send(Message::Binary(bytes.into())).await.is_err() {
                return;
            }
        }
        // The loop dropped us: unregistered, idle, or not a member.
        let _ = sink.close().await;
    };
    let reader = async {
        while let Some(msg) = stream.next().await {
            match msg {
                Ok(Message::Binary(bytes)) => {
                    let frame = WsIn::Frame {
                        id,
                        bytes: bytes.to_vec(),
                    };
                    if to_core.send(frame).await.is_err() {
                        return;
                    }
                }
                // Pings are answered by tungstenite; pongs need nothing.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                // Text is not our protocol; close ends it.
                Ok(Message::Text(_) | Message::Close(_)) | Err(_) => return,
            }
        }
    };
    tokio::select! {
        () = writer => {}
        () = reader => {}
    }
    let _ = to_core.send(WsIn::Closed { id }).await;
}

/// The TLS acceptor for the listener.
pub(crate) fn acceptor(config: Arc<rustls::ServerConfig>) -> tokio_rustls::TlsAcceptor {
    tokio_rustls::TlsAcceptor::from(config)
}
