//! The control client: HTTPS + JSON to the coordination server
//! (routes and bodies in [`wgmesh_core::control`]).
//!
//! [`Client`] owns the HTTP connection pool (reqwest on rustls with the
//! ring provider) and the server's base URL. Its bearer-authenticated JSON
//! helpers ([`Client::get`], [`Client::post`], [`Client::put`],
//! [`Client::patch`], [`Client::delete`]) are public so that the admin CLI
//! uses them with an admin token; the node calls ([`Client::enroll`],
//! [`Client::fetch_map`], [`Client::stream_maps`],
//! [`Client::report_endpoints`]) are built on them.
//!
//! `http://` URLs are followed as given (the server refuses plain HTTP
//! unless it was started with `--insecure-http`). An error reply's
//! [`ApiErrorBody`] message is surfaced as is. It owns no retry policy:
//! that is [`crate::run`]'s.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use wgmesh_core::control::{
    ApiErrorBody, EndpointReport, EnrollChallenge, EnrollRequest, EnrollResponse,
};
use wgmesh_core::netmap::{MapUpdate, NetworkMap};

use crate::sse::{Event, SseError, SseParser};

/// How long to wait for a TCP/TLS connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordinary request may take (not the map stream).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("bad server URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    /// Could not talk to the server at all (DNS, connect, TLS, timeout).
    /// The message carries reqwest's whole cause chain ("connection
    /// refused" is three levels down), so it is not a `source`.
    #[error("{request}: {}", chain(error))]
    Transport {
        /// `METHOD URL`.
        request: String,
        error: reqwest::Error,
    },
    /// The server answered with an error: its `message` for a person.
    #[error("{request}: {status}: {message}")]
    Api {
        request: String,
        status: StatusCode,
        /// The machine-readable code (`unauthorized`, `not_found`, …);
        /// empty when the body was not an [`ApiErrorBody`].
        error: String,
        message: String,
    },
    /// The server's reply was not what the route returns.
    #[error("{request}: unexpected reply: {reason}")]
    Decode { request: String, reason: String },
    /// The map stream broke mid-way or sent something unreadable.
    #[error("map stream: {0}")]
    Stream(String),
}

/// An error and its causes, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let next = c.to_string();
        // Some layers repeat their cause's text.
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cur = c.source();
    }
    text
}

impl ClientError {
    /// The HTTP status of an error reply.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying again later may help (the server was unreachable or
    /// failed), as opposed to a refusal that will not change by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Stream(_) | Self::Decode { .. } => true,
            Self::Api { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            Self::Url { .. } | Self::CaFile { .. } => false,
        }
    }
}

/// A connection to one coordination server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// With a trailing slash, so that relative routes append to it.
    base: Url,
}

impl Client {
    /// A client for the server at `server` (`https://host[:port][/prefix]`
    /// or `http://…`), trusting the system's roots and, if given, the
    /// PEM certificates in `ca_file` as well.
    pub fn new(server: &str, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::Url {
            url: server.to_owned(),
            reason,
        };
        let mut base = Url::parse(server).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "https" | "http") {
            return Err(bad("the scheme must be https or http".into()));
        }
        if base.host_str().is_none() {
            return Err(bad("no host".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("wgmesh/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let ca_err = |reason: String| ClientError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in it".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http, base })
    }

    /// The server's base URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// `route` (e.g. `api/v1/nodes`, no leading slash) under the base URL.
    pub fn url(&self, route: &str) -> Result<Url, ClientError> {
        self.base
            .join(route.trim_start_matches('/'))
            .map_err(|e| ClientError::Url {
                url: route.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Sends `method route` with an optional bearer token and JSON body,
    /// and reads a JSON reply into `T`. An empty reply (204) reads as JSON
    /// `null`, so `T = ()` or `Option<…>` fits it.
    pub async fn request<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = self.url(route)?;
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .timeout(REQUEST_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let request = format!("{method} {url}");
        let resp = req.send().await.map_err(|error| ClientError::Transport {
            request: request.clone(),
            error,
        })?;
        let resp = check(&request, resp).await?;
        let bytes = resp.bytes().await.map_err(|error| ClientError::Transport {
            request: request.clone(),
            error,
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &bytes
        };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Decode {
            request,
            reason: e.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        route: &str,
        token: &str,
    ) -> Result<T, ClientError> {
        self.request::<(), T>(Method::GET, route, Some(token), None)
            .await
    }

    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        route: &str,
        token: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.request(Method::POST, route, Some(token), Some(body))
            .await
    }

    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        route: &str,
        token: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.request(Method::PUT, route, Some(token), Some(body))
            .await
    }

    pub async fn patch<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        route: &str,
        token: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.request(Method::PATCH, route, Some(token), Some(body))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(
        &self,
        route: &str,
        token: &str,
    ) -> Result<T, ClientError> {
        self.request::<(), T>(Method::DELETE, route, Some(token), None)
            .await
    }

    /// `POST /api/v1/enroll/challenge`: what an enrolment must answer to
    /// prove it holds its private key.
    pub async fn enroll_challenge(&self) -> Result<EnrollChallenge, ClientError> {
        self.request::<(), _>(Method::POST, "api/v1/enroll/challenge", None, None)
            .await
    }

    /// `POST /api/v1/enroll`: the setup key is in the body, no token.
    pub async fn enroll(&self, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        self.request(Method::POST, "api/v1/enroll", None, Some(req))
            .await
    }

    /// `GET /api/v1/node/map`.
    pub async fn fetch_map(&self, credential: &str) -> Result<NetworkMap, ClientError> {
        self.get("api/v1/node/map", credential).await
    }

    /// `POST /api/v1/node/endpoints` → 204.
    pub async fn report_endpoints(
        &self,
        credential: &str,
        report: &EndpointReport,
    ) -> Result<(), ClientError> {
        self.post("api/v1/node/endpoints", credential, report).await
    }

    /// `GET /api/v1/node/map/stream`: opens the stream; read it with
    /// [`MapStream::next`].
    pub async fn stream_maps(&self, credential: &str) -> Result<MapStream, ClientError> {
        let url = self.url("api/v1/node/map/stream")?;
        let request = format!("GET {url}");
        let resp = self
            .http
            .get(url.clone())
            .bearer_auth(credential)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|error| ClientError::Transport {
                request: request.clone(),
                error,
            })?;
        let resp = check(&request, resp).await?;
        Ok(MapStream {
            body: Box::pin(resp.bytes_stream().map(|r| r.map(|b| b.to_vec()))),
            parser: SseParser::new(),
            pending: std::collections::VecDeque::new(),
        })
    }
}

/// Turns an error status into [`ClientError::Api`] with the server's message.
async fn check(request: &str, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let text = resp.text().await.unwrap_or_default();
    let (error, message) = match serde_json::from_str::<ApiErrorBody>(&text) {
        Ok(body) => (body.error, body.message),
        Err(_) => {
            let text = text.trim();
            let shown: String = text.chars().take(200).collect();
            let message = if shown.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                shown
            };
            (String::new(), message)
        }
    };
    Err(ClientError::Api {
        request: request.to_owned(),
        status,
        error,
        message,
    })
}

type BodyStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>;

/// An open map stream.
pub struct MapStream {
    body: BodyStream,
    parser: SseParser,
    pending: std::collections::VecDeque<Event>,
}

impl std::fmt::Debug for MapStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapStream").finish_non_exhaustive()
    }
}

/// What [`MapStream::next`] read.
#[derive(Debug)]
pub enum StreamItem {
    Update(Box<MapUpdate>),
    /// A heartbeat comment or an event of another kind: the server is alive.
    Alive,
}

impl MapStream {
    /// The next update, or `Alive` for anything else the server sent;
    /// `Ok(None)` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<StreamItem>, ClientError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                if ev.event != "map" {
                    return Ok(Some(StreamItem::Alive));
                }
                let update: MapUpdate = serde_json::from_str(&ev.data).map_err(|e| {
                    ClientError::Stream(format!("a map event that does not parse: {e}"))
                })?;
                return Ok(Some(StreamItem::Update(Box::new(update))));
            }
            let Some(chunk) = self.body.next().await else {
                return Ok(None);
            };
            let chunk = chunk.map_err(|e| ClientError::Stream(e.to_string()))?;
            let comments = self.parser.comments();
            let mut out = Vec::new();
            self.parser
                .feed(&chunk, &mut out)
                .map_err(|e: SseError| ClientError::Stream(e.to_string()))?;
            self.pending.extend(out);
            if self.pending.is_empty() && self.parser.comments() != comments {
                return Ok(Some(StreamItem::Alive));
            }
        }
    }
}
