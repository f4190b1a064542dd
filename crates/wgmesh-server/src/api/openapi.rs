//! The OpenAPI 3.1 document at `/api/v1/openapi.json`.
//!
//! Nothing in it is written by hand twice: each handler's
//! `#[utoipa::path]` says its method, path, parameters, body and every
//! status it answers, and `utoipa_axum::routes!` registers the handler in
//! the router and its operation in the document from that one attribute
//! ([`super::api_router`]), so the two cannot disagree. The schemas are
//! derived from the Rust types themselves (`wgmesh_core`'s `openapi`
//! feature), with the text forms of keys, addresses and names as patterns
//! ([`wgmesh_core::schema`]).
//!
//! Errors have one body, [`ApiErrorBody`]; the marker types below are the
//! error responses handlers list (one per kind of refusal), each with the
//! `error` codes [`super::error`] gives it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};
use wgmesh_core::control::ApiErrorBody;
use wgmesh_core::netmap::MapUpdate;

/// The security schemes, by the names handlers' `security(...)` use.
#[derive(Debug)]
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (ADMIN, "wga_… admin API token"),
            (NODE, "wgn_… node credential from enrolment"),
            (RELAY, "wgr_… relay token from POST /api/v1/relays"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// The security scheme names (the `security(...)` of each handler).
pub const ADMIN: &str = "adminToken";
pub const NODE: &str = "nodeCredential";
pub const RELAY: &str = "relayToken";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wgmesh coordination server",
        description = "Enrolment, network maps, and the admin API of a wgmesh server. \
            Every error is an ApiErrorBody."
    ),
    components(schemas(ApiErrorBody, MapUpdate)),
    modifiers(&SecuritySchemes)
)]
struct Base;

/// The whole document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, doc) = super::api_router(Base::openapi()).split_for_parts();
        doc
    })
}

/// The document as served.
pub fn json() -> &'static serde_json::Value {
    static JSON: OnceLock<serde_json::Value> = OnceLock::new();
    JSON.get_or_init(|| {
        serde_json::to_value(document()).expect("invariant: the OpenAPI document serialises")
    })
}

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ApiErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Error responses a handler lists in `responses(...)`.
macro_rules! errors {
    ($($(#[$doc:meta])* $name:ident { $($status:literal => $desc:literal),+ $(,)? })+) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([$(($status.to_owned(), error($desc))),+])
            }
        }
    )+};
}

errors! {
    /// Any route behind a credential.
    Denied {
        "401" => "`unauthorized`: no bearer credential, or one the server does not know.",
        "403" => "`forbidden`: a valid credential of another kind (an admin token on a node route, …).",
    }
    /// A body, path or query the route cannot read or the server refuses.
    Invalid {
        "400" => "`bad_request`: the body is not a JSON object of the documented schema \
            (unknown fields, wrong types, values off their pattern or range), \
            or a path or query parameter is invalid. Nothing changed.",
    }
    /// What the path or body names does not exist.
    Missing {
        "404" => "`not_found`: the network, node, setup key or relay named does not exist.",
    }
    /// The change collides with what exists.
    Taken {
        "409" => "`conflict`: the name (or key, or overlay) is taken by another object. Nothing changed.",
    }
    /// The enrolment's credential part was refused.
    EnrollRefused {
        "403" => "`setup_key_refused` (unknown, revoked, expired or used up) or \
            `proof_refused` (unknown, used or expired challenge, or a proof that does not \
            show the private key).",
    }
    /// Too many enrolments at once.
    Busy {
        "429" => "`busy`: too many enrolment challenges are pending; try again shortly.",
    }
    /// A route that reads or writes the database.
    Storage {
        "500" => "`internal`: an unexpected error; `request_id` names the server's log line. \
            A write that fails changes nothing.",
        "503" => "`unavailable`: the database cannot be used now (full, read-only, \
            connection lost); retry later. Nothing changed.",
    }
    /// A route that uses no database, but randomness.
    Internal {
        "500" => "`internal`: an unexpected error (e.g. no randomness); `request_id` names \
            the server's log line.",
    }
}
