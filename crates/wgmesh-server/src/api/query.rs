//! The query strings of the routes that take one (their own module so
//! that `params(query::…)` in the handlers' OpenAPI attributes names
//! them by path).

use serde::Deserialize;
use utoipa::IntoParams;
use wgmesh_core::control::AUDIT_PAGE_DEFAULT;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NodesQuery {
    /// Only the nodes of this network.
    #[param(value_type = Option<wgmesh_core::schema::NameText>)]
    pub network: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries with ids above this one (0: from the start).
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    pub after: i64,
    /// At most this many entries (1–1000).
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: i64,
}

fn default_limit() -> i64 {
    AUDIT_PAGE_DEFAULT
}
