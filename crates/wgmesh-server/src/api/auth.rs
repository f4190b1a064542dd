//! Who is calling: an admin (API token), a node (its credential) or a
//! relay (its token), from `Authorization: Bearer …`. An extractor per
//! kind, so a handler cannot forget to check: no credential or an unknown
//! one is 401, a valid one of another kind is 403.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::service::{Actor, Service};

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What a valid secret of the wrong kind gets: 403, so that the caller
/// learns it holds a good credential for another route; anything else is
/// 401.
async fn refuse(svc: &Service, token: &str, admin: bool, node: bool, relay: bool) -> ApiError {
    let other_kind = (admin && svc.admin_by_token(token).await.is_some())
        || (node && svc.node_by_credential(token).await.is_some())
        || (relay && svc.relay_by_token(token).await.is_some());
    if other_kind {
        ApiError::Forbidden
    } else {
        ApiError::Unauthorized
    }
}

/// An admin API token.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    pub token_id: i64,
}

impl Admin {
    pub fn actor(self) -> Actor {
        Actor::Admin {
            token_id: self.token_id,
        }
    }
}

impl FromRequestParts<Arc<Service>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, svc: &Arc<Service>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if let Some(t) = svc.admin_by_token(token).await {
            return Ok(Admin { token_id: t.id });
        }
        Err(refuse(svc, token, false, true, true).await)
    }
}

/// A node's credential.
#[derive(Debug, Clone, Copy)]
pub struct NodeAuth {
    pub node_id: i64,
}

impl FromRequestParts<Arc<Service>> for NodeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, svc: &Arc<Service>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if let Some(node_id) = svc.node_by_credential(token).await {
            return Ok(NodeAuth { node_id });
        }
        Err(refuse(svc, token, true, false, true).await)
    }
}

/// A relay's token (from `POST /relays`).
#[derive(Debug, Clone, Copy)]
pub struct RelayAuth {
    pub relay_id: i64,
}

impl FromRequestParts<Arc<Service>> for RelayAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, svc: &Arc<Service>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if let Some(relay_id) = svc.relay_by_token(token).await {
            return Ok(RelayAuth { relay_id });
        }
        Err(refuse(svc, token, true, true, false).await)
    }
}
