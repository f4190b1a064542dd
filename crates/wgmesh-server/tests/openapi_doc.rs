//! The served OpenAPI document passes a real validator
//! (openapi-spec-validator, pinned in tests/api/requirements.txt and
//! installed by scripts/test.sh), and says what the server does: every
//! path parameter declared, no empty schema, and on every operation the
//! statuses its kind of route answers.
#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

mod support;

use std::path::PathBuf;
use std::process::Command;

use axum::http::StatusCode;
use serde_json::Value;
use support::{call, service};
use wgmesh_server::service::ServiceConfig;

/// A tool of the pinned Python venv (WGMESH_API_VENV, or target/venv-api
/// of the workspace): never skipped, a missing one fails and says how to
/// install it.
fn api_tool(name: &str) -> PathBuf {
    let venv = std::env::var_os("WGMESH_API_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/venv-api"),
        PathBuf::from,
    );
    let tool = venv.join("bin").join(name);
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/test.sh, or: python3 -m venv target/venv-api && \
         target/venv-api/bin/pip install -r tests/api/requirements.txt \
         (or set WGMESH_API_VENV to such a venv)",
        tool.display()
    );
    tool
}

/// The document as the server serves it.
async fn served() -> Value {
    let db = support::sqlite();
    let svc = service(&db, ServiceConfig::default()).await;
    let (s, doc) = call(&svc, "GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    doc
}

#[tokio::test]
async fn the_served_document_passes_openapi_spec_validator() {
    let tool = api_tool("openapi-spec-validator");
    let doc = served().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new(&tool)
        .args(["--validation-errors", "all"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openapi-spec-validator: {text}");
    assert!(text.contains("OK"), "{text}");
}

/// `$ref`s resolved one level (the document's own components).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap();
            let kind = if r.contains("/responses/") {
                "responses"
            } else {
                "schemas"
            };
            &doc["components"][kind][name]
        }
        None => v,
    }
}

#[tokio::test]
async fn every_operation_says_what_it_takes_and_answers() {
    let doc = served().await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.len() >= 30, "{}", schemas.len());
    for (name, schema) in schemas {
        let described = schema.get("properties").is_some()
            || schema.get("oneOf").is_some()
            || schema.get("enum").is_some()
            || schema.get("pattern").is_some()
            || schema["type"] == "array";
        assert!(described, "component schema {name} says nothing: {schema}");
    }
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations += 1;
            let what = format!("{} {path}", method.to_ascii_uppercase());
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            // Every {template} of the path is a declared, required path parameter.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true),
                    "{what}: path parameter {name} undeclared"
                );
            }
            let responses = op["responses"].as_object().unwrap();
            let has = |code: &str| responses.contains_key(code);
            assert!(
                responses.keys().any(|c| c.starts_with('2')),
                "{what}: no success"
            );
            let secured = op.get("security").is_some();
            if secured {
                assert!(has("401") && has("403"), "{what}: 401/403");
            }
            if op.get("requestBody").is_some() || !params.is_empty() {
                assert!(has("400"), "{what}: takes input but documents no 400");
                if let Some(body) = op.get("requestBody") {
                    let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
                    assert_eq!(schema["type"], "object", "{what}: bodies are objects");
                    assert_eq!(
                        schema["additionalProperties"], false,
                        "{what}: unknown fields are refused"
                    );
                }
            }
            if ["post", "put", "patch", "delete"].contains(&method.as_str())
                && path != "/api/v1/enroll/challenge"
            {
                assert!(
                    has("500") && has("503"),
                    "{what}: a write documents 500 and 503"
                );
            }
            // Every error answer has the one error body.
            for (code, resp) in responses {
                if code.starts_with('4') || code.starts_with('5') {
                    let schema = &resolve(&doc, resp)["content"]["application/json"]["schema"];
                    assert_eq!(
                        schema["$ref"], "#/components/schemas/ApiErrorBody",
                        "{what} {code}"
                    );
                }
            }
        }
    }
    assert!(operations >= 24, "{operations}");
    // The query parameters are there, with their ranges.
    let audit = doc["paths"]["/api/v1/audit"]["get"]["parameters"]
        .as_array()
        .unwrap();
    let limit = audit.iter().find(|p| p["name"] == "limit").unwrap();
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["schema"]["minimum"], 1);
    assert_eq!(limit["schema"]["maximum"], 1000);
    let after = audit.iter().find(|p| p["name"] == "after").unwrap();
    assert_eq!(after["schema"]["minimum"], 0);
    let nodes = &doc["paths"]["/api/v1/nodes"]["get"]["parameters"][0];
    assert_eq!(nodes["name"], "network");
    assert_eq!(nodes["in"], "query");
}
