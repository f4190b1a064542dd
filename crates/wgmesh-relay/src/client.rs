//! [`RelayClient`]: a node's async client for one relay, over UDP or
//! WebSocket (TLS, or plain for tests and proxies). A task drives
//! wgmesh-proto's [`ClientSession`] (hello, keepalives, re-hello) over the
//! transport; the caller sends payloads by destination key and receives
//! [`ClientEvent`]s.
//!
//! The agent's engine shares one UDP socket among WireGuard, disco, STUN
//! and relay frames, so it will drive [`ClientSession`] itself on that
//! socket; this client is for the WebSocket path and for tools and tests.
//!
//! It does not choose a relay or decide when to relay: the path manager
//! does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;
use wgmesh_core::key::{PrivateKey, PublicKey};
use wgmesh_proto::relay::client::ClientError;
use wgmesh_proto::relay::wire::MAX_PAYLOAD_LEN;
use wgmesh_proto::relay::{ClientEvent, ClientSession, RefuseReason};

/// How long [`RelayClient::connect_udp`] / [`RelayClient::connect_ws`]
/// wait for the relay to register us.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Events queued for the caller before received payloads are dropped (as
/// a full socket buffer would drop datagrams).
const EVENT_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayClientError {
    #[error("the relay refused us: {0}")]
    Refused(RefuseReason),
    #[error("no answer from the relay within {0:?}")]
    Timeout(Duration),
    #[error("connecting to the relay: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebSocket to the relay: {0}")]
    WebSocket(String),
    #[error("bad relay URL {url:?}: {why}")]
    Url { url: String, why: &'static str },
    #[error(transparent)]
    Session(#[from] ClientError),
    #[error("payload of {0} bytes: a relay frame carries 1 to {MAX_PAYLOAD_LEN}")]
    PayloadSize(usize),
    #[error("the relay connection is closed")]
    Closed,
}

/// A registered session with one relay.
#[derive(Debug)]
pub struct RelayClient {
    node: PublicKey,
    relay: PublicKey,
    local_addr: Option<SocketAddr>,
    sends: mpsc::Sender<(PublicKey, Vec<u8>)>,
    events: mpsc::Receiver<ClientEvent>,
    task: JoinHandle<()>,
}

impl Drop for RelayClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RelayClient {
    /// Says hello over UDP to `relay_addr`, whose static key is `relay`,
    /// from a new socket; returns once registered.
    pub async fn connect_udp(
        relay_addr: SocketAddr,
        relay: PublicKey,
        node: &PrivateKey,
    ) -> Result<Self, RelayClientError> {
        let bind: SocketAddr = if relay_addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(relay_addr).await?;
        let local = sock.local_addr()?;
        let link = UdpLink {
            sock,
            buf: vec![0u8; 65_536],
        };
        Self::start(link, relay, node, Some(local)).await
    }

    /// Says hello over a WebSocket to `url` (`wss://host:port/relay`, or
    /// `ws://` when `tls` is `None`: behind a TLS proxy, or in tests);
    /// returns once registered.
    pub async fn connect_ws(
        url: &str,
        relay: PublicKey,
        node: &PrivateKey,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, RelayClientError> {
        let bad = |why| RelayClientError::Url {
            url: url.to_owned(),
            why,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URI"))?;
        let secure = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(bad("the scheme is neither wss nor ws")),
        };
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        // A bracketed IPv6 literal, as URIs write it.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| RelayClientError::Timeout(CONNECT_TIMEOUT))??;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr().ok();
        let config = Some(crate::ws::ws_config());
        match (secure, tls) {
            (true, Some(tls)) => {
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| bad("the host is not a valid TLS server name"))?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await?;
                let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, config)
                    .await
                    .map_err(|e| RelayClientError::WebSocket(e.to_string()))?;
                Self::start(WsLink(ws), relay, node, local).await
            }
            (true, None) => Err(bad("wss:// needs a TLS client configuration")),
            (false, _) => {
                let (ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, config)
                    .await
                    .map_err(|e| RelayClientError::WebSocket(e.to_string()))?;
                Self::start(WsLink(ws), relay, node, local).await
            }
        }
    }

    async fn start<L: Link + Send + 'static>(
        link: L,
        relay: PublicKey,
        node: &PrivateKey,
        local_addr: Option<SocketAddr>,
    ) -> Result<Self, RelayClientError> {
        let session = ClientSession::new(node, relay)?;
        let (sends_tx, sends_rx) = mpsc::channel(EVENT_QUEUE);
        let (events_tx, mut events_rx) = mpsc::channel(EVENT_QUEUE);
        let task = tokio::spawn(drive(link, session, sends_rx, events_tx));
        let first = tokio::time::timeout(CONNECT_TIMEOUT, events_rx.recv()).await;
        let fail = |e| {
            task.abort();
            Err(e)
        };
        match first {
            Ok(Some(ClientEvent::Registered)) => Ok(Self {
                node: node.public_key(),
                relay,
                local_addr,
                sends: sends_tx,
                events: events_rx,
                task,
            }),
            Ok(Some(ClientEvent::Refused(r))) => fail(RelayClientError::Refused(r)),
            Ok(Some(_) | None) => fail(RelayClientError::Closed),
            Err(_) => fail(RelayClientError::Timeout(CONNECT_TIMEOUT)),
        }
    }

    pub fn node(&self) -> PublicKey {
        self.node
    }

    pub fn relay(&self) -> PublicKey {
        self.relay
    }

    /// The local address of the UDP socket or TCP connection.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// Sends `payload` to the node `to`, through the relay.
    pub async fn send(&self, to: PublicKey, payload: &[u8]) -> Result<(), RelayClientError> {
        if payload.is_empty() || payload.len() > MAX_PAYLOAD_LEN {
            return Err(RelayClientError::PayloadSize(payload.len()));
        }
        self.sends
            .send((to, payload.to_vec()))
            .await
            .map_err(|_| RelayClientError::Closed)
    }

    /// The next thing the relay told us: a payload, a peer gone, a
    /// refusal, a lost registration (the client then says hello again by
    /// itself). `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }
}

/// A transport that carries whole frames.
trait Link {
    /// The next frame; `None` when the transport is closed.
    fn recv(&mut self) -> impl Future<Output = Option<Vec<u8>>> + Send;
    fn send(&mut self, frame: Vec<u8>) -> impl Future<Output = std::io::Result<()>> + Send;
}

struct UdpLink {
    sock: UdpSocket,
    buf: Vec<u8>,
}

impl Link for UdpLink {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.sock.recv(&mut self.buf).await {
                Ok(n) => return Some(self.buf[..n].to_vec()),
                // ICMP port unreachable (the relay is down) surfaces as
                // ECONNREFUSED on a connected socket: keep listening, the
                // session's hellos go on.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(_) => return None,
            }
        }
    }

    async fn send(&mut self, frame: Vec<u8>) -> std::io::Result<()> {
        match self.sock.send(&frame).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            r => r.map(|_| ()),
        }
    }
}

struct WsLink<S>(WebSocketStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Link for WsLink<S> {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.0.next().await? {
                Ok(Message::Binary(b)) => return Some(b.to_vec()),
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Text(_) | Message::Close(_)) | Err(_) => return None,
            }
        }
    }

    async fn send(&mut self, frame: Vec<u8>) -> std::io::Result<()> {
        self.0
            .send(Message::Binary(frame.into()))
            .await
            .map_err(std::io::Error::other)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn nonce() -> [u8; 24] {
    let mut n = [0u8; 24];
    // Without OS randomness a hello could repeat a nonce and be refused
    // as a replay; that is all (the nonce is not secret).
    let _ = getrandom::fill(&mut n);
    n
}

async fn drive<L: Link>(
    mut link: L,
    mut session: ClientSession,
    mut sends: mpsc::Receiver<(PublicKey, Vec<u8>)>,
    events: mpsc::Sender<ClientEvent>,
) {
    loop {
        let now = Instant::now();
        if session.poll_timeout().is_none_or(|t| t <= now) {
            session.handle_timeout(now, unix_ms(), nonce());
        }
        while let Some(frame) = session.poll_transmit() {
            if link.send(frame).await.is_err() {
                let _ = events.try_send(ClientEvent::Lost);
                return;
            }
        }
        while let Some(ev) = session.poll_event() {
            if let Err(mpsc::error::TrySendError::Closed(_)) = events.try_send(ev) {
                return;
            }
        }
        let deadline = session
            .poll_timeout()
            .unwrap_or(now + Duration::from_secs(1));
        tokio::select! {
            frame = link.recv() => match frame {
                Some(bytes) => {
                    // A frame that does not parse is dropped; the relay
                    // never sends one.
                    let _ = session.handle_frame(Instant::now(), &bytes);
                }
                None => {
                    let _ = events.try_send(ClientEvent::Lost);
                    return;
                }
            },
            send = sends.recv() => match send {
                Some((to, payload)) => {
                    // Sizes were checked by `RelayClient::send`.
                    let _ = session.send(to, &payload);
                }
                None => return,
            },
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}
