//! The one error type of the API: a status code and an
//! [`ApiErrorBody`], never internals (database messages are logged on the
//! server, the client sees "internal error").

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wgmesh_core::control::ApiErrorBody;

use crate::service::ServiceError;

#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// No credential, or one the server does not know.
    Unauthorized,
    /// A valid credential of the wrong kind for this route.
    Forbidden,
    BadRequest(String),
    Service(ServiceError),
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError::Service(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::BadRequest(e.body_text())
    }
}

/// An ID for one failed request, quoted in the reply and in the log line
/// that holds the cause.
fn request_id() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        b = N
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut field = None;
        let mut request = None;
        let (status, code, message) = match self {
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or invalid bearer token".to_owned(),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this credential may not use this route".to_owned(),
            ),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Service(e) => match e {
                ServiceError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
                ServiceError::NotFound(what) => (
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("{what} not found"),
                ),
                ServiceError::Conflict { field: f, message } => {
                    field = f;
                    (StatusCode::CONFLICT, "conflict", message)
                }
                ServiceError::ProofRefused(why) => {
                    (StatusCode::FORBIDDEN, "proof_refused", why.to_owned())
                }
                ServiceError::Busy => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "busy",
                    "too many enrolments at once; try again shortly".to_owned(),
                ),
                ServiceError::SetupKeyRefused(why) => {
                    (StatusCode::FORBIDDEN, "setup_key_refused", why.to_owned())
                }
                ServiceError::Unavailable { reason, source } => {
                    let id = request_id();
                    eprintln!("wgmesh server: request {id}: unavailable: {reason}: {source}");
                    request = Some(id);
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("{reason}; nothing was changed, try again later"),
                    )
                }
                other => {
                    let id = request_id();
                    eprintln!("wgmesh server: request {id}: internal error: {other}");
                    request = Some(id);
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "internal error".to_owned(),
                    )
                }
            },
        };
        let retry = (status == StatusCode::SERVICE_UNAVAILABLE).then_some([("retry-after", "5")]);
        let body = ApiErrorBody {
            error: code.to_owned(),
            message,
            field,
            request_id: request,
        };
        (status, retry, Json(body)).into_response()
    }
}
