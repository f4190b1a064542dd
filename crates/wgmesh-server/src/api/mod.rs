//! The REST API under `/api/v1`, plus `/healthz`. (Metrics have a
//! listener of their own: [`crate::metrics::app`].)
//!
//! [`app`] builds the router from the service; [`ROUTES`] lists every
//! route with who may call it, and is the one source of both the OpenAPI
//! document ([`openapi`]) and the table-driven authorization tests.

pub mod auth;
pub mod error;
pub mod openapi;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use wgmesh_core::control::{
    AuditEntry, CreateNetwork, CreateRelay, CreateSetupKey, EndpointReport, EnrollChallenge,
    EnrollRequest, EnrollResponse, NetworkInfo, NodeInfo, RelayCreated, RelayInfo, RelayMembers,
    SetupKeyCreated, SetupKeyInfo, UpdateNode,
};
use wgmesh_core::netmap::NetworkMap;
use wgmesh_core::netmap::policy::Policy;

use self::auth::{Admin, NodeAuth, RelayAuth};
use self::error::ApiError;
use crate::service::Service;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (the enrol route checks the setup key in its body).
    Public,
    Node,
    Admin,
    /// A relay's token (`wgr_…`).
    Relay,
}

/// A route: method, path (axum syntax), access, one-line summary.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    /// Request and response body schema names (control.rs types).
    pub request: Option<&'static str>,
    pub response: Option<&'static str>,
}

const fn r(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
    request: Option<&'static str>,
    response: Option<&'static str>,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        access,
        summary,
        request,
        response,
    }
}

use Access::{Admin as A, Node as N, Public as P, Relay as R};

pub const ROUTES: &[RouteDoc] = &[
    r(
        "GET",
        "/api/v1/openapi.json",
        P,
        "This document.",
        None,
        None,
    ),
    r(
        "POST",
        "/api/v1/enroll/challenge",
        P,
        "A one-use challenge an enrolment answers to prove it holds its key.",
        None,
        Some("EnrollChallenge"),
    ),
    r(
        "POST",
        "/api/v1/enroll",
        P,
        "Enrol a node with a setup key and its public key.",
        Some("EnrollRequest"),
        Some("EnrollResponse"),
    ),
    r(
        "GET",
        "/api/v1/node/map",
        N,
        "The calling node's full network map.",
        None,
        Some("NetworkMap"),
    ),
    r(
        "GET",
        "/api/v1/node/map/stream",
        N,
        "Server-sent events: `map` events, each a MapUpdate (a full map, then deltas).",
        None,
        Some("MapUpdate"),
    ),
    r(
        "POST",
        "/api/v1/node/endpoints",
        N,
        "Report the calling node's underlay endpoints.",
        Some("EndpointReport"),
        None,
    ),
    r(
        "GET",
        "/api/v1/networks",
        A,
        "List networks.",
        None,
        Some("NetworkInfo[]"),
    ),
    r(
        "POST",
        "/api/v1/networks",
        A,
        "Create a network.",
        Some("CreateNetwork"),
        Some("NetworkInfo"),
    ),
    r(
        "GET",
        "/api/v1/networks/{network}",
        A,
        "One network.",
        None,
        Some("NetworkInfo"),
    ),
    r(
        "GET",
        "/api/v1/networks/{network}/policy",
        A,
        "A network's access policy.",
        None,
        Some("Policy"),
    ),
    r(
        "PUT",
        "/api/v1/networks/{network}/policy",
        A,
        "Replace a network's access policy.",
        Some("Policy"),
        Some("Policy"),
    ),
    r(
        "GET",
        "/api/v1/nodes",
        A,
        "List nodes (`?network=NAME` to filter).",
        None,
        Some("NodeInfo[]"),
    ),
    r(
        "GET",
        "/api/v1/nodes/{id}",
        A,
        "One node.",
        None,
        Some("NodeInfo"),
    ),
    r(
        "PATCH",
        "/api/v1/nodes/{id}",
        A,
        "Change a node's groups or hub role.",
        Some("UpdateNode"),
        Some("NodeInfo"),
    ),
    r(
        "DELETE",
        "/api/v1/nodes/{id}",
        A,
        "Remove a node: every peer drops it at once.",
        None,
        Some("NodeInfo"),
    ),
    r(
        "GET",
        "/api/v1/setup-keys",
        A,
        "List setup keys (never the secrets).",
        None,
        Some("SetupKeyInfo[]"),
    ),
    r(
        "POST",
        "/api/v1/setup-keys",
        A,
        "Create a setup key; the secret is shown once.",
        Some("CreateSetupKey"),
        Some("SetupKeyCreated"),
    ),
    r(
        "DELETE",
        "/api/v1/setup-keys/{id}",
        A,
        "Revoke a setup key.",
        None,
        Some("SetupKeyInfo"),
    ),
    r(
        "GET",
        "/api/v1/audit",
        A,
        "Audit log entries after `?after=ID`, at most `?limit=N` (≤ 1000).",
        None,
        Some("AuditEntry[]"),
    ),
    r(
        "POST",
        "/api/v1/admin-tokens",
        A,
        "Create another admin API token; shown once.",
        Some("CreateAdminToken"),
        Some("AdminTokenCreated"),
    ),
    r(
        "GET",
        "/api/v1/relays",
        A,
        "List relays (never their tokens).",
        None,
        Some("RelayInfo[]"),
    ),
    r(
        "POST",
        "/api/v1/relays",
        A,
        "Register a relay (server-wide); its token is shown once. Every connected node gets a full map listing it.",
        Some("CreateRelay"),
        Some("RelayCreated"),
    ),
    r(
        "DELETE",
        "/api/v1/relays/{id}",
        A,
        "Remove a relay: its token stops working, every map drops it.",
        None,
        Some("RelayInfo"),
    ),
    r(
        "GET",
        "/api/v1/relay/members",
        R,
        "The public keys of every enrolled node, for the calling relay.",
        None,
        Some("RelayMembers"),
    ),
    r("GET", "/healthz", P, "Liveness.", None, None),
];

/// The whole HTTP app.
pub fn app(svc: Arc<Service>) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_doc))
        .route("/api/v1/enroll/challenge", post(enroll_challenge))
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/node/map", get(node_map))
        .route("/api/v1/node/map/stream", get(node_map_stream))
        .route("/api/v1/node/endpoints", post(node_endpoints))
        .route("/api/v1/networks", get(list_networks).post(create_network))
        .route("/api/v1/networks/{network}", get(get_network))
        .route(
            "/api/v1/networks/{network}/policy",
            get(get_policy).put(put_policy),
        )
        .route("/api/v1/nodes", get(list_nodes))
        .route(
            "/api/v1/nodes/{id}",
            get(get_node).patch(patch_node).delete(delete_node),
        )
        .route(
            "/api/v1/setup-keys",
            get(list_setup_keys).post(create_setup_key),
        )
        .route("/api/v1/setup-keys/{id}", delete(revoke_setup_key))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/admin-tokens", post(create_admin_token))
        .route("/api/v1/relays", get(list_relays).post(create_relay))
        .route("/api/v1/relays/{id}", delete(delete_relay))
        .route("/api/v1/relay/members", get(relay_members))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async {
            ApiError::Service(crate::service::ServiceError::NotFound("route".into()))
        })
        .layer(middleware::from_fn_with_state(svc.clone(), observe))
        .with_state(svc)
}

/// Records each request's latency by method, route template and status
/// class; [`crate::metrics`] bounds each label.
async fn observe(State(svc): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let start = Instant::now();
    let response = next.run(req).await;
    svc.metrics.observe(
        &method,
        route.as_ref().map(MatchedPath::as_str),
        response.status(),
        start.elapsed(),
    );
    response
}

type ApiResult<T> = Result<Json<T>, ApiError>;

async fn openapi_doc() -> Json<serde_json::Value> {
    Json(openapi::document())
}

async fn enroll_challenge(State(svc): State<Arc<Service>>) -> ApiResult<EnrollChallenge> {
    Ok(Json(svc.enroll_challenge()?))
}

async fn enroll(
    State(svc): State<Arc<Service>>,
    body: Result<Json<EnrollRequest>, JsonRejection>,
) -> ApiResult<EnrollResponse> {
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => {
            svc.metrics.enrolment_failed();
            return Err(e.into());
        }
    };
    Ok(Json(svc.enroll(body).await?))
}

async fn node_map(State(svc): State<Arc<Service>>, node: NodeAuth) -> ApiResult<NetworkMap> {
    Ok(Json(svc.node_map(node.node_id).await?))
}

async fn node_map_stream(
    State(svc): State<Arc<Service>>,
    node: NodeAuth,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let rx = svc.subscribe(node.node_id).await?;
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        let update = rx.recv().await?;
        let data =
            serde_json::to_string(&update).expect("invariant: map updates serialise to JSON");
        Some((Ok(Event::default().event("map").data(data)), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn node_endpoints(
    State(svc): State<Arc<Service>>,
    node: NodeAuth,
    body: Result<Json<EndpointReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(report) = body?;
    svc.report_endpoints(node.node_id, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_networks(State(svc): State<Arc<Service>>, _: Admin) -> ApiResult<Vec<NetworkInfo>> {
    Ok(Json(svc.networks().await))
}

async fn create_network(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    body: Result<Json<CreateNetwork>, JsonRejection>,
) -> Result<(StatusCode, Json<NetworkInfo>), ApiError> {
    let Json(req) = body?;
    let info = svc.create_network(&admin.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

async fn get_network(
    State(svc): State<Arc<Service>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<NetworkInfo> {
    let Path(name) = path?;
    Ok(Json(svc.network(&name).await?))
}

async fn get_policy(
    State(svc): State<Arc<Service>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Policy> {
    let Path(name) = path?;
    Ok(Json(svc.policy(&name).await?))
}

async fn put_policy(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<Policy>, JsonRejection>,
) -> ApiResult<Policy> {
    let Path(name) = path?;
    let Json(policy) = body?;
    Ok(Json(svc.set_policy(&admin.actor(), &name, policy).await?))
}

#[derive(Debug, Deserialize)]
struct NodesQuery {
    network: Option<String>,
}

async fn list_nodes(
    State(svc): State<Arc<Service>>,
    _: Admin,
    query: Result<Query<NodesQuery>, QueryRejection>,
) -> ApiResult<Vec<NodeInfo>> {
    let Query(q) = query?;
    Ok(Json(svc.nodes(q.network.as_deref()).await?))
}

async fn get_node(
    State(svc): State<Arc<Service>>,
    _: Admin,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<NodeInfo> {
    let Path(id) = path?;
    Ok(Json(svc.node(id).await?))
}

async fn patch_node(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Json<UpdateNode>, JsonRejection>,
) -> ApiResult<NodeInfo> {
    let Path(id) = path?;
    let Json(req) = body?;
    Ok(Json(svc.update_node(&admin.actor(), id, req).await?))
}

async fn delete_node(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<NodeInfo> {
    let Path(id) = path?;
    Ok(Json(svc.delete_node(&admin.actor(), id).await?))
}

async fn list_setup_keys(
    State(svc): State<Arc<Service>>,
    _: Admin,
) -> ApiResult<Vec<SetupKeyInfo>> {
    Ok(Json(svc.setup_keys().await))
}

async fn create_setup_key(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    body: Result<Json<CreateSetupKey>, JsonRejection>,
) -> Result<(StatusCode, Json<SetupKeyCreated>), ApiError> {
    let Json(req) = body?;
    let created = svc.create_setup_key(&admin.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn revoke_setup_key(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<SetupKeyInfo> {
    let Path(id) = path?;
    Ok(Json(svc.revoke_setup_key(&admin.actor(), id).await?))
}

#[derive(Debug, Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

async fn audit(
    State(svc): State<Arc<Service>>,
    _: Admin,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Vec<AuditEntry>> {
    let Query(q) = query?;
    Ok(Json(svc.audit_log(q.after, q.limit).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAdminToken {
    name: String,
}

async fn create_admin_token(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    body: Result<Json<CreateAdminToken>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(req) = body?;
    let token = svc.create_admin_token(&admin.actor(), &req.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": req.name, "token": token })),
    ))
}

async fn list_relays(State(svc): State<Arc<Service>>, _: Admin) -> ApiResult<Vec<RelayInfo>> {
    Ok(Json(svc.relays().await))
}

async fn create_relay(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    body: Result<Json<CreateRelay>, JsonRejection>,
) -> Result<(StatusCode, Json<RelayCreated>), ApiError> {
    let Json(req) = body?;
    let created = svc.create_relay(&admin.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn delete_relay(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<RelayInfo> {
    let Path(id) = path?;
    Ok(Json(svc.delete_relay(&admin.actor(), id).await?))
}

async fn relay_members(State(svc): State<Arc<Service>>, _: RelayAuth) -> ApiResult<RelayMembers> {
    Ok(Json(svc.relay_members().await))
}
