//! What the OpenAPI document says a request may be, the server holds to:
//! input the schema rejects is refused with 400 and changes nothing
//! (bodies that are not objects, empty names, overlays no network can
//! have, audit limits out of range), and an audit page says when it was
//! capped. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

mod support;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{TestDb, backends, call, service};
use wgmesh_core::control::{EnrollChallenge, enroll_proof};
use wgmesh_core::key::PrivateKey;
use wgmesh_server::api::{Access, routes};
use wgmesh_server::service::{Actor, Service, ServiceConfig};

struct Fixture {
    svc: Arc<Service>,
    admin: String,
    /// A node's credential.
    node: String,
}

fn new_node_key() -> PrivateKey {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    PrivateKey::from_random(b)
}

async fn fixture(db: &TestDb) -> Fixture {
    let svc = service(db, ServiceConfig::default()).await;
    let admin = svc
        .create_admin_token(&Actor::Console, "test")
        .await
        .unwrap();
    let (s, v) = call(
        &svc,
        "POST",
        "/api/v1/networks",
        Some(&admin),
        Some(json!({ "name": "seed", "overlay": "100.64.0.0/24" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = call(
        &svc,
        "POST",
        "/api/v1/setup-keys",
        Some(&admin),
        Some(json!({ "network": "seed" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let setup_key = v["key"].as_str().unwrap().to_owned();
    let (_, ch) = call(&svc, "POST", "/api/v1/enroll/challenge", None, None).await;
    let ch: EnrollChallenge = serde_json::from_value(ch).unwrap();
    let key = new_node_key();
    let proof = enroll_proof(&key, &ch, &setup_key, "a").unwrap();
    let (s, v) = call(
        &svc,
        "POST",
        "/api/v1/enroll",
        None,
        Some(
            json!({ "setup_key": setup_key, "public_key": key.public_key(), "name": "a",
                     "challenge": ch.id, "proof": proof }),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let node = v["credential"].as_str().unwrap().to_owned();
    Fixture { svc, admin, node }
}

/// Everything a refused request must leave as it was: the audit log
/// holds every change (each in the same transaction as the change), and
/// the lists show what is in memory.
async fn state(f: &Fixture) -> Value {
    let mut out = serde_json::Map::new();
    for path in [
        "/api/v1/audit?limit=1000",
        "/api/v1/networks",
        "/api/v1/setup-keys",
        "/api/v1/relays",
        "/api/v1/networks/seed/policy",
    ] {
        let (s, v) = call(&f.svc, "GET", path, Some(&f.admin), None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        out.insert(path.to_owned(), v);
    }
    let (_, nodes) = call(&f.svc, "GET", "/api/v1/nodes", Some(&f.admin), None).await;
    let names: Vec<Value> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| json!([n["id"], n["name"], n["groups"], n["hub"], n["endpoints"]]))
        .collect();
    out.insert("nodes".into(), Value::from(names));
    Value::Object(out)
}

/// Sends `body`; it must be refused with 400 `bad_request`.
async fn refused(f: &Fixture, method: &str, path: &str, token: &str, body: Value) -> Value {
    let (s, v) = call(&f.svc, method, path, Some(token), Some(body.clone())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{method} {path} {body}: {v}");
    assert_eq!(v["error"], "bad_request", "{v}");
    v
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_refused_and_change_nothing() {
    for db in backends().await {
        let f = fixture(&db).await;
        let before = state(&f).await;
        let doc = wgmesh_server::api::openapi::json();
        let mut checked = 0;
        for route in routes() {
            let op = &doc["paths"][&route.path][route.method.to_ascii_lowercase()];
            if op.get("requestBody").is_none() {
                continue;
            }
            let token = match route.access {
                Access::Node => f.node.as_str(),
                _ => f.admin.as_str(),
            };
            let path = route.path.replace("{network}", "seed").replace("{id}", "1");
            // serde reads a struct from an array of its fields in order:
            // `[""]` was a CreateAdminToken named "".
            for body in [
                json!([""]),
                json!(["x"]),
                json!(["evil", "10.9.0.0/24"]),
                json!(["wgs_x", "x", "x", "x", "evil"]),
                json!([]),
                json!("x"),
                json!(1),
                json!(null),
                json!(true),
            ] {
                let v = refused(&f, &route.method, &path, token, body).await;
                assert!(
                    v["message"].as_str().unwrap().contains("JSON object"),
                    "{v}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 8 * 9, "eight routes take a body");
        // Unknown fields are refused too, as `additionalProperties: false` says.
        refused(
            &f,
            "POST",
            "/api/v1/admin-tokens",
            &f.admin,
            json!({ "name": "x", "admin": true }),
        )
        .await;
        assert_eq!(state(&f).await, before, "a refused body changed something");
    }
}

#[tokio::test]
async fn names_are_never_empty() {
    for db in backends().await {
        let f = fixture(&db).await;
        let before = state(&f).await;
        let key = new_node_key().public_key().to_string();
        for (method, path, body) in [
            ("POST", "/api/v1/admin-tokens", json!({ "name": "" })),
            (
                "POST",
                "/api/v1/admin-tokens",
                json!({ "name": "two words" }),
            ),
            ("POST", "/api/v1/admin-tokens", json!({ "name": "-x" })),
            (
                "POST",
                "/api/v1/admin-tokens",
                json!({ "name": "x".repeat(64) }),
            ),
            (
                "POST",
                "/api/v1/networks",
                json!({ "name": "", "overlay": "10.9.0.0/24" }),
            ),
            (
                "POST",
                "/api/v1/relays",
                json!({ "name": "", "public_key": key, "udp": "192.0.2.1:3478" }),
            ),
            (
                "POST",
                "/api/v1/setup-keys",
                json!({ "network": "seed", "groups": [""] }),
            ),
            ("PATCH", "/api/v1/nodes/1", json!({ "groups": [""] })),
        ] {
            refused(&f, method, path, &f.admin, body).await;
        }
        // The longest name is taken.
        let (s, v) = call(
            &f.svc,
            "POST",
            "/api/v1/admin-tokens",
            Some(&f.admin),
            Some(json!({ "name": "x".repeat(63) })),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (_, after) = call(
            &f.svc,
            "GET",
            "/api/v1/audit?limit=1000",
            Some(&f.admin),
            None,
        )
        .await;
        let before_entries = before["/api/v1/audit?limit=1000"]["entries"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(
            after["entries"].as_array().unwrap().len(),
            before_entries + 1,
            "only the valid name made a change: {after}"
        );
    }
}

#[tokio::test]
async fn overlays_no_network_can_have_are_refused() {
    for db in backends().await {
        let f = fixture(&db).await;
        let before = state(&f).await;
        let create = |name: &str, overlay: &str| json!({ "name": name, "overlay": overlay });
        for overlay in [
            "0.0.0.0/0",
            "::/0",
            "0.0.0.0/8",
            "127.0.0.0/24",
            "224.0.0.0/24",
            "ff02::/64",
            // Spellings ipnet's parser takes, the documented pattern does not.
            "100.065.0.0/24",
            "10.9.0.0/024",
        ] {
            let v = refused(
                &f,
                "POST",
                "/api/v1/networks",
                &f.admin,
                create("x", overlay),
            )
            .await;
            assert!(v["message"].as_str().unwrap().contains("overlay"), "{v}");
        }
        // Overlapping the seed network's 100.64.0.0/24, from either side.
        for overlay in ["100.64.0.0/16", "100.64.0.128/25", "100.64.0.0/24"] {
            let (s, v) = call(
                &f.svc,
                "POST",
                "/api/v1/networks",
                Some(&f.admin),
                Some(create("x", overlay)),
            )
            .await;
            assert_eq!(s, StatusCode::CONFLICT, "{overlay}: {v}");
            assert_eq!(v["error"], "conflict", "{v}");
            assert!(v["message"].as_str().unwrap().contains("seed"), "{v}");
        }
        assert_eq!(
            state(&f).await,
            before,
            "a refused overlay changed something"
        );
        // A neighbour that does not overlap is fine.
        let (s, v) = call(
            &f.svc,
            "POST",
            "/api/v1/networks",
            Some(&f.admin),
            Some(create("next", "100.64.1.0/24")),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
}

#[tokio::test]
async fn audit_pages_say_when_they_are_capped_and_refuse_bad_limits() {
    for db in backends().await {
        let f = fixture(&db).await;
        for i in 0..3 {
            let (s, _) = call(
                &f.svc,
                "POST",
                "/api/v1/admin-tokens",
                Some(&f.admin),
                Some(json!({ "name": format!("t{i}") })),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED);
        }
        let get = |q: String| {
            let svc = f.svc.clone();
            let admin = f.admin.clone();
            async move {
                call(
                    &svc,
                    "GET",
                    &format!("/api/v1/audit{q}"),
                    Some(&admin),
                    None,
                )
                .await
            }
        };
        let (s, all) = get(String::new()).await;
        assert_eq!(s, StatusCode::OK);
        let ids: Vec<i64> = all["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        // Admin token, network, setup key, enrolment, three tokens.
        assert_eq!(ids.len(), 7, "{all}");
        assert_eq!(all["truncated"], false);
        assert_eq!(all["next_after"], ids[6]);

        // Page through two at a time: each page but the last says so.
        let mut after = 0;
        let mut seen = Vec::new();
        loop {
            let (s, page) = get(format!("?after={after}&limit=2")).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            let entries = page["entries"].as_array().unwrap();
            seen.extend(entries.iter().map(|e| e["id"].as_i64().unwrap()));
            after = page["next_after"].as_i64().unwrap();
            if page["truncated"] == false {
                break;
            }
            assert_eq!(entries.len(), 2, "{page}");
        }
        assert_eq!(seen, ids);
        // A full page that happens to end the log is not capped.
        let (_, page) = get(format!("?after={}&limit=1", ids[5])).await;
        assert_eq!(page["truncated"], false, "{page}");
        // Past the end: empty, and the next page starts where this asked.
        let (_, page) = get(format!("?after={}", ids[6])).await;
        assert_eq!(
            page,
            json!({ "entries": [], "truncated": false, "next_after": ids[6] })
        );

        for q in [
            "?limit=-1",
            "?limit=0",
            "?limit=1001",
            "?after=-1",
            "?limit=abc",
            "?after=1.5",
        ] {
            let (s, v) = get(q.to_owned()).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {v}");
            assert_eq!(v["error"], "bad_request", "{v}");
        }
        let (s, page) = get("?limit=1000".to_owned()).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(page["entries"].as_array().unwrap().len(), 7);
    }
}
