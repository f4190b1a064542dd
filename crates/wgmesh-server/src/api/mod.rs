//! The REST API under `/api/v1`, plus `/healthz`. (Metrics have a
//! listener of their own: [`crate::metrics::app`].)
//!
//! [`api_router`] registers every route and its OpenAPI operation from
//! the handler's `#[utoipa::path]` at once ([`openapi`]); [`app`] serves
//! it. [`routes`] lists the documented routes with who may call them (from
//! each operation's `security`), for the table-driven authorization
//! tests.

pub mod auth;
pub mod body;
pub mod error;
pub mod openapi;
mod query;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::{Json, Router};
use futures_util::Stream;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use wgmesh_core::control::{
    AUDIT_PAGE_MAX, AuditPage, CreateNetwork, CreateRelay, CreateSetupKey, EndpointReport,
    EnrollChallenge, EnrollRequest, EnrollResponse, NetworkInfo, NodeInfo, RelayCreated, RelayInfo,
    RelayMembers, SetupKeyCreated, SetupKeyInfo, UpdateNode,
};
use wgmesh_core::netmap::NetworkMap;
use wgmesh_core::netmap::policy::Policy;

use self::auth::{Admin, NodeAuth, RelayAuth};
use self::body::Body;
use self::error::ApiError;
use self::openapi::{Busy, Denied, EnrollRefused, Internal, Invalid, Missing, Storage, Taken};
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

/// A documented route: method (upper case), path (OpenAPI and axum
/// syntax, `{id}`), who may call it, its summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDoc {
    pub method: String,
    pub path: String,
    pub access: Access,
    pub summary: String,
}

/// Every operation of the document, read back from it.
pub fn routes() -> Vec<RouteDoc> {
    let doc = openapi::json();
    let mut out = Vec::new();
    let paths = doc["paths"]
        .as_object()
        .expect("invariant: the document has paths");
    for (path, item) in paths {
        let item = item
            .as_object()
            .expect("invariant: a path item is an object");
        for (method, op) in item {
            let scheme = op["security"][0]
                .as_object()
                .and_then(|s| s.keys().next().cloned());
            let access = match scheme.as_deref() {
                None => Access::Public,
                Some(openapi::ADMIN) => Access::Admin,
                Some(openapi::NODE) => Access::Node,
                Some(openapi::RELAY) => Access::Relay,
                Some(other) => panic!("invariant: known security scheme, not {other}"),
            };
            out.push(RouteDoc {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                access,
                summary: op["summary"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    out
}

/// Every documented route, in the router and in `base`'s paths at once.
pub fn api_router(base: utoipa::openapi::OpenApi) -> OpenApiRouter<Arc<Service>> {
    OpenApiRouter::with_openapi(base)
        .routes(routes!(openapi_doc))
        .routes(routes!(enroll_challenge))
        .routes(routes!(enroll))
        .routes(routes!(node_map))
        .routes(routes!(node_map_stream))
        .routes(routes!(node_endpoints))
        .routes(routes!(list_networks, create_network))
        .routes(routes!(get_network))
        .routes(routes!(get_policy, put_policy))
        .routes(routes!(list_nodes))
        .routes(routes!(get_node, patch_node, delete_node))
        .routes(routes!(list_setup_keys, create_setup_key))
        .routes(routes!(revoke_setup_key))
        .routes(routes!(audit))
        .routes(routes!(create_admin_token))
        .routes(routes!(list_relays, create_relay))
        .routes(routes!(delete_relay))
        .routes(routes!(relay_members))
        .routes(routes!(healthz))
}

/// The whole HTTP app.
pub fn app(svc: Arc<Service>) -> Router {
    let (router, _) = api_router(utoipa::openapi::OpenApi::default()).split_for_parts();
    router
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

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json",
    responses((status = 200, description = "The OpenAPI 3.1 document.", body = Object)))]
async fn openapi_doc() -> Json<serde_json::Value> {
    Json(openapi::json().clone())
}

/// Liveness.
#[utoipa::path(get, path = "/healthz",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// A one-use challenge an enrolment answers to prove it holds its key.
#[utoipa::path(post, path = "/api/v1/enroll/challenge",
    responses((status = 200, description = "Valid for 60 s, for one enrolment.", body = EnrollChallenge),
        Busy, Internal))]
async fn enroll_challenge(State(svc): State<Arc<Service>>) -> ApiResult<EnrollChallenge> {
    Ok(Json(svc.enroll_challenge()?))
}

/// Enrol a node with a setup key and its public key.
///
/// Re-enrolling the same key gives the same node a new credential.
#[utoipa::path(post, path = "/api/v1/enroll", request_body = EnrollRequest,
    responses((status = 200, description = "The node, its credential (shown once) and its map.", body = EnrollResponse),
        Invalid, EnrollRefused, Taken, Storage))]
async fn enroll(
    State(svc): State<Arc<Service>>,
    body: Result<Body<EnrollRequest>, ApiError>,
) -> ApiResult<EnrollResponse> {
    let body = match body {
        Ok(Body(b)) => b,
        Err(e) => {
            svc.metrics.enrolment_failed();
            return Err(e);
        }
    };
    Ok(Json(svc.enroll(body).await?))
}

/// The calling node's full network map.
#[utoipa::path(get, path = "/api/v1/node/map", security(("nodeCredential" = [])),
    responses((status = 200, description = "The map.", body = NetworkMap), Denied))]
async fn node_map(State(svc): State<Arc<Service>>, node: NodeAuth) -> ApiResult<NetworkMap> {
    Ok(Json(svc.node_map(node.node_id).await?))
}

/// The calling node's map as server-sent events.
///
/// Each `map` event's data is a `MapUpdate` (JSON): a full map first, then
/// deltas; a comment every 15 s keeps the stream open.
#[utoipa::path(get, path = "/api/v1/node/map/stream", security(("nodeCredential" = [])),
    responses((status = 200, description = "`text/event-stream` of `map` events, each a MapUpdate.",
        body = String, content_type = "text/event-stream"), Denied))]
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

/// Report the calling node's underlay endpoints.
#[utoipa::path(post, path = "/api/v1/node/endpoints", security(("nodeCredential" = [])),
    request_body = EndpointReport,
    responses((status = 204, description = "Recorded."), Invalid, Denied, Storage))]
async fn node_endpoints(
    State(svc): State<Arc<Service>>,
    node: NodeAuth,
    Body(report): Body<EndpointReport>,
) -> Result<StatusCode, ApiError> {
    svc.report_endpoints(node.node_id, report).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List networks.
#[utoipa::path(get, path = "/api/v1/networks", security(("adminToken" = [])),
    responses((status = 200, description = "Every network.", body = Vec<NetworkInfo>), Denied))]
async fn list_networks(State(svc): State<Arc<Service>>, _: Admin) -> ApiResult<Vec<NetworkInfo>> {
    Ok(Json(svc.networks().await))
}

/// Create a network.
///
/// Its overlay must not overlap another network's, nor hold addresses no
/// node can have (0.0.0.0/8, loopback, multicast, …).
#[utoipa::path(post, path = "/api/v1/networks", security(("adminToken" = [])),
    request_body = CreateNetwork,
    responses((status = 201, description = "Created.", body = NetworkInfo),
        Invalid, Denied, Taken, Storage))]
async fn create_network(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    Body(req): Body<CreateNetwork>,
) -> Result<(StatusCode, Json<NetworkInfo>), ApiError> {
    let info = svc.create_network(&admin.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// One network.
#[utoipa::path(get, path = "/api/v1/networks/{network}", security(("adminToken" = [])),
    params(("network" = wgmesh_core::schema::NameText, Path, description = "The network's name.")),
    responses((status = 200, description = "The network.", body = NetworkInfo),
        Invalid, Denied, Missing))]
async fn get_network(
    State(svc): State<Arc<Service>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<NetworkInfo> {
    let Path(name) = path?;
    Ok(Json(svc.network(&name).await?))
}

/// A network's access policy.
#[utoipa::path(get, path = "/api/v1/networks/{network}/policy", security(("adminToken" = [])),
    params(("network" = wgmesh_core::schema::NameText, Path, description = "The network's name.")),
    responses((status = 200, description = "The policy.", body = Policy),
        Invalid, Denied, Missing))]
async fn get_policy(
    State(svc): State<Arc<Service>>,
    _: Admin,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Policy> {
    let Path(name) = path?;
    Ok(Json(svc.policy(&name).await?))
}

/// Replace a network's access policy.
#[utoipa::path(put, path = "/api/v1/networks/{network}/policy", security(("adminToken" = [])),
    params(("network" = wgmesh_core::schema::NameText, Path, description = "The network's name.")),
    request_body = Policy,
    responses((status = 200, description = "The policy now in force.", body = Policy),
        Invalid, Denied, Missing, Storage))]
async fn put_policy(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<String>, PathRejection>,
    Body(policy): Body<Policy>,
) -> ApiResult<Policy> {
    let Path(name) = path?;
    Ok(Json(svc.set_policy(&admin.actor(), &name, policy).await?))
}

/// List nodes.
#[utoipa::path(get, path = "/api/v1/nodes", security(("adminToken" = [])), params(query::NodesQuery),
    responses((status = 200, description = "The nodes.", body = Vec<NodeInfo>),
        Invalid, Denied, Missing))]
async fn list_nodes(
    State(svc): State<Arc<Service>>,
    _: Admin,
    query: Result<Query<query::NodesQuery>, QueryRejection>,
) -> ApiResult<Vec<NodeInfo>> {
    let Query(q) = query?;
    Ok(Json(svc.nodes(q.network.as_deref()).await?))
}

/// One node.
#[utoipa::path(get, path = "/api/v1/nodes/{id}", security(("adminToken" = [])),
    params(("id" = i64, Path, description = "The node's id.")),
    responses((status = 200, description = "The node.", body = NodeInfo), Invalid, Denied, Missing))]
async fn get_node(
    State(svc): State<Arc<Service>>,
    _: Admin,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<NodeInfo> {
    let Path(id) = path?;
    Ok(Json(svc.node(id).await?))
}

/// Change a node's groups or hub role.
#[utoipa::path(patch, path = "/api/v1/nodes/{id}", security(("adminToken" = [])),
    params(("id" = i64, Path, description = "The node's id.")),
    request_body = UpdateNode,
    responses((status = 200, description = "The node as changed.", body = NodeInfo),
        Invalid, Denied, Missing, Storage))]
async fn patch_node(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<i64>, PathRejection>,
    Body(req): Body<UpdateNode>,
) -> ApiResult<NodeInfo> {
    let Path(id) = path?;
    Ok(Json(svc.update_node(&admin.actor(), id, req).await?))
}

/// Remove a node: every peer drops it at once.
#[utoipa::path(delete, path = "/api/v1/nodes/{id}", security(("adminToken" = [])),
    params(("id" = i64, Path, description = "The node's id.")),
    responses((status = 200, description = "The node removed.", body = NodeInfo),
        Invalid, Denied, Missing, Storage))]
async fn delete_node(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<NodeInfo> {
    let Path(id) = path?;
    Ok(Json(svc.delete_node(&admin.actor(), id).await?))
}

/// List setup keys (never the secrets).
#[utoipa::path(get, path = "/api/v1/setup-keys", security(("adminToken" = [])),
    responses((status = 200, description = "Every setup key.", body = Vec<SetupKeyInfo>), Denied))]
async fn list_setup_keys(
    State(svc): State<Arc<Service>>,
    _: Admin,
) -> ApiResult<Vec<SetupKeyInfo>> {
    Ok(Json(svc.setup_keys().await))
}

/// Create a setup key; the secret is shown once.
#[utoipa::path(post, path = "/api/v1/setup-keys", security(("adminToken" = [])),
    request_body = CreateSetupKey,
    responses((status = 201, description = "Created; `key` is shown only now.", body = SetupKeyCreated),
        Invalid, Denied, Missing, Storage))]
async fn create_setup_key(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    Body(req): Body<CreateSetupKey>,
) -> Result<(StatusCode, Json<SetupKeyCreated>), ApiError> {
    let created = svc.create_setup_key(&admin.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Revoke a setup key.
#[utoipa::path(delete, path = "/api/v1/setup-keys/{id}", security(("adminToken" = [])),
    params(("id" = i64, Path, description = "The setup key's id.")),
    responses((status = 200, description = "The key, revoked.", body = SetupKeyInfo),
        Invalid, Denied, Missing, Storage))]
async fn revoke_setup_key(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<SetupKeyInfo> {
    let Path(id) = path?;
    Ok(Json(svc.revoke_setup_key(&admin.actor(), id).await?))
}

/// Audit log entries after `after`, at most `limit` of them.
///
/// `truncated` says more follow; ask again with `after=next_after`.
#[utoipa::path(get, path = "/api/v1/audit", security(("adminToken" = [])), params(query::AuditQuery),
    responses((status = 200, description = "A page of the log, oldest first.", body = AuditPage),
        Invalid, Denied, Storage))]
async fn audit(
    State(svc): State<Arc<Service>>,
    _: Admin,
    query: Result<Query<query::AuditQuery>, QueryRejection>,
) -> ApiResult<AuditPage> {
    let Query(q) = query?;
    if q.after < 0 {
        return Err(ApiError::BadRequest(format!(
            "after must be 0 or more, not {}",
            q.after
        )));
    }
    if !(1..=AUDIT_PAGE_MAX).contains(&q.limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {AUDIT_PAGE_MAX}, not {}",
            q.limit
        )));
    }
    Ok(Json(svc.audit_log(q.after, q.limit).await?))
}

/// `POST /admin-tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAdminToken {
    #[schema(value_type = wgmesh_core::schema::NameText)]
    name: String,
}

/// An admin token, shown once.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct AdminTokenCreated {
    #[schema(value_type = wgmesh_core::schema::NameText)]
    name: String,
    /// The bearer secret (`wga_…`); only its hash is stored.
    token: String,
}

/// Create another admin API token; shown once.
#[utoipa::path(post, path = "/api/v1/admin-tokens", security(("adminToken" = [])),
    request_body = CreateAdminToken,
    responses((status = 201, description = "Created; `token` is shown only now.", body = AdminTokenCreated),
        Invalid, Denied, Storage))]
async fn create_admin_token(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    Body(req): Body<CreateAdminToken>,
) -> Result<(StatusCode, Json<AdminTokenCreated>), ApiError> {
    let token = svc.create_admin_token(&admin.actor(), &req.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(AdminTokenCreated {
            name: req.name,
            token,
        }),
    ))
}

/// List relays (never their tokens).
#[utoipa::path(get, path = "/api/v1/relays", security(("adminToken" = [])),
    responses((status = 200, description = "Every relay.", body = Vec<RelayInfo>), Denied))]
async fn list_relays(State(svc): State<Arc<Service>>, _: Admin) -> ApiResult<Vec<RelayInfo>> {
    Ok(Json(svc.relays().await))
}

/// Register a relay (server-wide); its token is shown once.
///
/// Every connected node gets a full map listing it.
#[utoipa::path(post, path = "/api/v1/relays", security(("adminToken" = [])),
    request_body = CreateRelay,
    responses((status = 201, description = "Registered; `token` is shown only now.", body = RelayCreated),
        Invalid, Denied, Taken, Storage))]
async fn create_relay(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    Body(req): Body<CreateRelay>,
) -> Result<(StatusCode, Json<RelayCreated>), ApiError> {
    let created = svc.create_relay(&admin.actor(), req).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Remove a relay: its token stops working, every map drops it.
#[utoipa::path(delete, path = "/api/v1/relays/{id}", security(("adminToken" = [])),
    params(("id" = i64, Path, description = "The relay's id.")),
    responses((status = 200, description = "The relay removed.", body = RelayInfo),
        Invalid, Denied, Missing, Storage))]
async fn delete_relay(
    State(svc): State<Arc<Service>>,
    admin: Admin,
    path: Result<Path<i64>, PathRejection>,
) -> ApiResult<RelayInfo> {
    let Path(id) = path?;
    Ok(Json(svc.delete_relay(&admin.actor(), id).await?))
}

/// The public keys of every enrolled node, for the calling relay.
#[utoipa::path(get, path = "/api/v1/relay/members", security(("relayToken" = [])),
    responses((status = 200, description = "The members.", body = RelayMembers), Denied))]
async fn relay_members(State(svc): State<Arc<Service>>, _: RelayAuth) -> ApiResult<RelayMembers> {
    Ok(Json(svc.relay_members().await))
}
