//! The one extractor for request bodies: a JSON object, read into `T`.
//!
//! serde's derived `Deserialize` also reads a struct from a JSON array
//! (its fields in order), so `[""]` was a valid `CreateAdminToken`; every
//! body of this API is documented as an object, so anything else is
//! refused here, in one place, before a handler runs (400, nothing
//! changes). Unknown fields are refused by the types themselves
//! (`#[serde(deny_unknown_fields)]`, `additionalProperties: false` in the
//! document).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A request body that is a JSON object of type `T`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Body<T>(pub T);

/// `application/json` or a `+json` type (RFC 6839 §3.1), as axum's
/// `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Does the JSON text hold an object at its top level? Its first byte
/// after JSON whitespace (RFC 8259 §2) says.
fn is_object(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        == Some(&b'{')
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::BadRequest(
                "expected a request with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        if !is_object(&bytes) {
            return Err(ApiError::BadRequest(
                "the request body must be a JSON object".into(),
            ));
        }
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        Ok(Body(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_and_json_types_pass() {
        assert!(is_object(b"{}"));
        assert!(is_object(b" \r\n\t{\"name\":\"a\"}"));
        for not in [
            &b"[\"\"]"[..],
            b"\"x\"",
            b"1",
            b"null",
            b"",
            b"  ",
            b"\x0c{}",
        ] {
            assert!(!is_object(not), "{not:?}");
        }
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/json", false),
            ("application/jsonx", false),
            ("text/plain", false),
        ] {
            h.insert(CONTENT_TYPE, value.parse().expect("a header value"));
            assert_eq!(is_json(&h), ok, "{value}");
        }
    }
}
