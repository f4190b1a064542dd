//! The REST API through `app().oneshot()`, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::{TestDb, backends, call, service};
use wgmesh_core::control::{EnrollChallenge, enroll_proof};
use wgmesh_core::key::PrivateKey;
use wgmesh_core::netmap::MapUpdate;
use wgmesh_server::api::{Access, routes};
use wgmesh_server::service::{Actor, Service, ServiceConfig};

fn new_key() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    PrivateKey::from_bytes(b).public_key().to_string()
}

struct Fixture {
    svc: Arc<Service>,
    admin: String,
    setup_key: String,
    /// (id, credential, public key) of nodes a and b.
    a: (i64, String, String),
    b: (i64, String, String),
}

fn new_node_key() -> PrivateKey {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    PrivateKey::from_random(b)
}

/// A challenge, as an agent asks for one before enrolling.
async fn challenge(svc: &Arc<Service>) -> EnrollChallenge {
    let (s, v) = call(svc, "POST", "/api/v1/enroll/challenge", None, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    serde_json::from_value(v).unwrap()
}

/// Enrols `key` as an agent does: a challenge, then the proof with it.
async fn enroll(
    svc: &Arc<Service>,
    setup_key: &str,
    name: &str,
    key: &PrivateKey,
) -> (StatusCode, Value) {
    let ch = challenge(svc).await;
    let proof = enroll_proof(key, &ch, setup_key, name).unwrap();
    call(
        svc,
        "POST",
        "/api/v1/enroll",
        None,
        Some(
            json!({ "setup_key": setup_key, "public_key": key.public_key(), "name": name,
                     "challenge": ch.id, "proof": proof }),
        ),
    )
    .await
}

async fn fixture(db: &TestDb) -> Fixture {
    let svc = service(db, ServiceConfig::default()).await;
    let admin = svc
        .create_admin_token(&Actor::Console, "test")
        .await
        .unwrap();
    let (s, _) = call(
        &svc,
        "POST",
        "/api/v1/networks",
        Some(&admin),
        Some(json!({ "name": "seed", "overlay": "100.64.0.0/24" })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(
        &svc,
        "POST",
        "/api/v1/setup-keys",
        Some(&admin),
        Some(json!({ "network": "seed", "reusable": true, "groups": ["ops"] })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let setup_key = v["key"].as_str().unwrap().to_owned();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        let key = new_node_key();
        let (s, v) = enroll(&svc, &setup_key, name, &key).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        nodes.push((
            v["node"]["id"].as_i64().unwrap(),
            v["credential"].as_str().unwrap().to_owned(),
            key.public_key().to_string(),
        ));
    }
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    Fixture {
        svc,
        admin,
        setup_key,
        a,
        b,
    }
}

/// Registers a relay; (id, token).
async fn create_relay(f: &Fixture, name: &str) -> (i64, String) {
    let (s, v) = call(
        &f.svc,
        "POST",
        "/api/v1/relays",
        Some(&f.admin),
        Some(json!({
            "name": name,
            "public_key": new_key(),
            "udp": "192.0.2.50:3478",
            "ws_url": "wss://relay.example/relay",
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("wgr_"), "{token}");
    (v["info"]["id"].as_i64().unwrap(), token)
}

/// Everything an unauthorised call must leave as it was.
async fn state(f: &Fixture) -> Value {
    let (_, nodes) = call(&f.svc, "GET", "/api/v1/nodes", Some(&f.admin), None).await;
    let (_, keys) = call(&f.svc, "GET", "/api/v1/setup-keys", Some(&f.admin), None).await;
    let (_, policy) = call(
        &f.svc,
        "GET",
        "/api/v1/networks/seed/policy",
        Some(&f.admin),
        None,
    )
    .await;
    let (_, audit) = call(
        &f.svc,
        "GET",
        "/api/v1/audit?limit=1000",
        Some(&f.admin),
        None,
    )
    .await;
    let (_, nets) = call(&f.svc, "GET", "/api/v1/networks", Some(&f.admin), None).await;
    let (_, relays) = call(&f.svc, "GET", "/api/v1/relays", Some(&f.admin), None).await;
    // Online flags and last_seen move with streams, not with these calls.
    json!({ "nodes": nodes.as_array().unwrap().iter().map(|n| (n["id"].clone(), n["name"].clone(), n["address"].clone(), n["groups"].clone(), n["hub"].clone(), n["endpoints"].clone())).map(|t| json!([t.0, t.1, t.2, t.3, t.4, t.5])).collect::<Vec<_>>(),
            "keys": keys, "policy": policy, "audit": audit, "nets": nets, "relays": relays })
}

/// A plausible body for each route, so that only the credential decides.
fn body_for(method: &str, path: &str, key: &str) -> Option<Value> {
    match (method, path) {
        ("POST", "/api/v1/node/endpoints") => Some(json!({ "local": ["192.0.2.9:51820"] })),
        ("POST", "/api/v1/networks") => Some(json!({ "name": "evil", "overlay": "10.9.0.0/24" })),
        ("PUT", _) => Some(json!({ "default": "deny" })),
        ("PATCH", _) => Some(json!({ "hub": true, "groups": ["evil"] })),
        ("POST", "/api/v1/setup-keys") => Some(json!({ "network": "seed", "reusable": true })),
        ("POST", "/api/v1/admin-tokens") => Some(json!({ "name": "evil" })),
        ("POST", "/api/v1/relays") => {
            Some(json!({ "name": "evil", "public_key": key, "udp": "192.0.2.66:3478" }))
        }
        ("POST", "/api/v1/enroll") => {
            Some(json!({ "setup_key": "wgs_nope", "public_key": key, "name": "evil" }))
        }
        _ => None,
    }
}

#[tokio::test]
async fn every_protected_route_refuses_missing_wrong_and_foreign_credentials() {
    for db in backends().await {
        let f = fixture(&db).await;
        let relay = create_relay(&f, "r0").await.1;
        let before = state(&f).await;
        let key = new_key();
        let mut checked = 0;
        let table = routes();
        for route in &table {
            let path = route
                .path
                .replace("{network}", "seed")
                .replace("{id}", &f.b.0.to_string());
            let body = || body_for(&route.method, &route.path, &key);
            // A valid secret of each other kind.
            let [wrong1, wrong2] = match route.access {
                Access::Public => continue,
                Access::Admin => [f.a.1.as_str(), relay.as_str()],
                Access::Node => [f.admin.as_str(), relay.as_str()],
                Access::Relay => [f.admin.as_str(), f.a.1.as_str()],
            };
            let cases: [(Option<&str>, StatusCode); 7] = [
                (None, StatusCode::UNAUTHORIZED),
                (Some("wga_forged"), StatusCode::UNAUTHORIZED),
                (Some("wgn_forged"), StatusCode::UNAUTHORIZED),
                (Some("wgr_forged"), StatusCode::UNAUTHORIZED),
                (Some(""), StatusCode::UNAUTHORIZED),
                (Some(wrong1), StatusCode::FORBIDDEN),
                (Some(wrong2), StatusCode::FORBIDDEN),
            ];
            for (token, want) in cases {
                let (got, v) = call(&f.svc, &route.method, &path, token, body()).await;
                assert_eq!(got, want, "{} {} with {token:?}: {v}", route.method, path);
                assert!(v["error"].is_string(), "error body: {v}");
                checked += 1;
            }
        }
        let protected = table.iter().filter(|r| r.access != Access::Public).count();
        assert!(protected >= 21, "the table lost routes");
        assert!(table.iter().any(|r| r.access == Access::Relay));
        assert_eq!(checked, protected * 7);
        // A refused enrolment (unknown setup key) is refused too.
        let (s, _) = enroll(&f.svc, "wgs_nope", "evil", &new_node_key()).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert_eq!(state(&f).await, before, "a refused call changed something");

        // A node's credential reads its own map, never another's.
        let (s, m) = call(&f.svc, "GET", "/api/v1/node/map", Some(&f.a.1), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(m["node"]["name"], "a");
        // A removed node's credential stops working.
        let (s, _) = call(
            &f.svc,
            "DELETE",
            &format!("/api/v1/nodes/{}", f.b.0),
            Some(&f.admin),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let (s, _) = call(&f.svc, "GET", "/api/v1/node/map", Some(&f.b.1), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn every_documented_route_is_served_and_public_ones_answer() {
    let db = support::sqlite();
    let f = fixture(&db).await;
    // The router is built from the same attributes as the document
    // (utoipa_axum::routes!), so every documented route is served; check
    // that the public ones answer without a credential.
    let table = routes();
    assert!(table.len() >= 24, "the document lost routes: {table:?}");
    for route in table.iter().filter(|r| r.access == Access::Public) {
        let (s, v) = call(
            &f.svc,
            &route.method,
            &route.path,
            None,
            body_for(&route.method, &route.path, &new_key()),
        )
        .await;
        assert_ne!(
            s,
            StatusCode::NOT_FOUND,
            "{} {}: {v}",
            route.method,
            route.path
        );
        assert_ne!(
            s,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            route.method,
            route.path
        );
    }
    // /metrics moves to its own listener: not part of the API document.
    assert!(!table.iter().any(|r| r.path == "/metrics"));
    let (s, _) = call(&f.svc, "GET", "/api/v1/nope", Some(&f.admin), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn setup_keys_past_expiry_or_usage_limit_are_refused_and_change_nothing() {
    for db in backends().await {
        let f = fixture(&db).await;
        let create = |body: Value| {
            let svc = f.svc.clone();
            let admin = f.admin.clone();
            async move {
                let (s, v) =
                    call(&svc, "POST", "/api/v1/setup-keys", Some(&admin), Some(body)).await;
                assert_eq!(s, StatusCode::CREATED, "{v}");
                (
                    v["info"]["id"].as_i64().unwrap(),
                    v["key"].as_str().unwrap().to_owned(),
                )
            }
        };
        let (_, limited) =
            create(json!({ "network": "seed", "reusable": true, "usage_limit": 2 })).await;
        let (_, once) = create(json!({ "network": "seed" })).await;
        let (revoked_id, revoked) = create(json!({ "network": "seed", "reusable": true })).await;
        let (_, expiring) =
            create(json!({ "network": "seed", "reusable": true, "expires_in": 1 })).await;
        let (s, _) = call(
            &f.svc,
            "DELETE",
            &format!("/api/v1/setup-keys/{revoked_id}"),
            Some(&f.admin),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);

        let k1 = new_node_key();
        assert_eq!(enroll(&f.svc, &limited, "l1", &k1).await.0, StatusCode::OK);
        assert_eq!(
            enroll(&f.svc, &limited, "l2", &new_node_key()).await.0,
            StatusCode::OK
        );
        // Re-enrolling the same key is idempotent: same node, same address,
        // and it does not use the key up.
        let (s, again) = enroll(&f.svc, &limited, "l1", &k1).await;
        assert_eq!(s, StatusCode::OK, "{again}");
        assert_eq!(again["node"]["address"], "100.64.0.3");
        assert_eq!(
            enroll(&f.svc, &once, "o1", &new_node_key()).await.0,
            StatusCode::OK
        );

        let before = state(&f).await;
        let (s, v) = enroll(&f.svc, &limited, "l3", &new_node_key()).await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("setup_key_refused"))
        );
        assert!(
            v["message"].as_str().unwrap().contains("usage limit"),
            "{v}"
        );
        let (s, v) = enroll(&f.svc, &once, "o2", &new_node_key()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        let (s, v) = enroll(&f.svc, &revoked, "r1", &new_node_key()).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert!(v["message"].as_str().unwrap().contains("revoked"));
        // Wait (poll, no fixed sleep) for the 1 s key to expire.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (s, v) = enroll(&f.svc, &expiring, "e1", &new_node_key()).await;
            if s == StatusCode::FORBIDDEN {
                assert!(v["message"].as_str().unwrap().contains("expired"), "{v}");
                break;
            }
            assert_eq!(s, StatusCode::OK);
            // It enrolled before expiring: remove it so the state compare holds.
            let id = v["node"]["id"].as_i64().unwrap();
            call(
                &f.svc,
                "DELETE",
                &format!("/api/v1/nodes/{id}"),
                Some(&f.admin),
                None,
            )
            .await;
            assert!(tokio::time::Instant::now() < deadline, "key never expired");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The refusals changed nothing (the expiry loop's own enrol +
        // delete, if any, leave the node list as it was).
        let after = state(&f).await;
        assert_eq!(after["policy"], before["policy"]);
        assert_eq!(after["nodes"], before["nodes"]);
        let used = |v: &Value| {
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["used"].clone())
                .collect::<Vec<_>>()
        };
        let (b, a) = (used(&before), used(&after));
        assert_eq!(a[..4], b[..4], "refused enrolments counted as uses");
        // The refusals are counted; metrics are not on the API's router
        // (they have a listener of their own).
        let m = f.svc.metrics.render(0, 0);
        assert!(
            m.lines()
                .any(|l| l.starts_with("wgmesh_enrolment_failures_total ")
                    && l != "wgmesh_enrolment_failures_total 0"),
            "{m}"
        );
        let (s, _) = call(&f.svc, "GET", "/metrics", None, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn addresses_of_removed_nodes_wait_out_the_grace_period() {
    for db in backends().await {
        let f = fixture(&db).await;
        // a = .1, b = .2; remove a: the next node must not get .1.
        call(
            &f.svc,
            "DELETE",
            &format!("/api/v1/nodes/{}", f.a.0),
            Some(&f.admin),
            None,
        )
        .await;
        let (_, v) = enroll(&f.svc, &f.setup_key, "c", &new_node_key()).await;
        assert_eq!(v["node"]["address"], "100.64.0.3");
        // A server with no grace period reuses it at once.
        drop(f.svc);
        let svc = service(&db, ServiceConfig { address_grace: 0 }).await;
        let (_, v) = enroll(&svc, &f.setup_key, "d", &new_node_key()).await;
        assert_eq!(v["node"]["address"], "100.64.0.1");
    }
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<MapUpdate>) -> MapUpdate {
    tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("no map update within 1 s")
        .expect("stream closed")
}

#[tokio::test]
async fn changes_reach_connected_nodes_as_deltas_within_a_second() {
    for db in backends().await {
        let f = fixture(&db).await;
        let mut rx = f.svc.subscribe(f.a.0).await.unwrap();
        let MapUpdate::Full(mut map) = next(&mut rx).await else {
            panic!("first message must be a full map")
        };
        assert_eq!(map.peers.len(), 1);
        // Every message's version is above the last: a version names one
        // map of this node (a reconnect gets a full map with a newer one).
        let apply = |map: &mut wgmesh_core::netmap::NetworkMap, u: MapUpdate| {
            let last = map.version;
            match u {
                MapUpdate::Delta(d) => map.apply(&d).unwrap(),
                MapUpdate::Full(m) => *map = m,
            }
            assert!(map.version > last, "version {} after {last}", map.version);
        };

        // A new node appears in a's map.
        let (_, c) = enroll(&f.svc, &f.setup_key, "c", &new_node_key()).await;
        let u = next(&mut rx).await;
        assert!(
            matches!(&u, MapUpdate::Delta(d) if d.upsert.len() == 1 && d.upsert[0].name == "c"),
            "{u:?}"
        );
        apply(&mut map, u);
        assert_eq!(map.peers.len(), 2);

        // A policy that denies c → a TCP/22 reaches a as c's inbound rules.
        let (s, v) = call(&f.svc, "PUT", "/api/v1/networks/seed/policy", Some(&f.admin), Some(json!({
            "default": "allow",
            "rule": [{ "action": "deny", "from": ["node:c"], "to": ["node:a"], "proto": "tcp", "ports": ["22"] }]
        }))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let u = next(&mut rx).await;
        apply(&mut map, u);
        let c_entry = map.peers.iter().find(|p| p.name == "c").unwrap();
        assert_eq!(c_entry.inbound.len(), 1);
        assert!(
            map.peers
                .iter()
                .find(|p| p.name == "b")
                .unwrap()
                .inbound
                .is_empty()
        );

        // Endpoints b reports show up in a's map.
        let (s, _) = call(
            &f.svc,
            "POST",
            "/api/v1/node/endpoints",
            Some(&f.b.1),
            Some(json!({ "local": ["192.0.2.2:51820"], "reflexive": "192.0.2.2:51820" })),
        )
        .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        apply(&mut map, next(&mut rx).await);
        assert_eq!(
            map.peers.iter().find(|p| p.name == "b").unwrap().endpoints,
            vec!["192.0.2.2:51820".parse().unwrap()]
        );

        // Removing c removes it from a's map.
        let c_id = c["node"]["id"].as_i64().unwrap();
        call(
            &f.svc,
            "DELETE",
            &format!("/api/v1/nodes/{c_id}"),
            Some(&f.admin),
            None,
        )
        .await;
        let u = next(&mut rx).await;
        assert!(
            matches!(&u, MapUpdate::Delta(d) if d.remove.len() == 1),
            "{u:?}"
        );
        apply(&mut map, u);
        assert_eq!(
            map.peers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );

        // What a holds equals what the server would send it fresh.
        let fresh = f.svc.node_map(f.a.0).await.unwrap();
        assert_eq!(map.peers, fresh.peers);
        assert_eq!(map.version, fresh.version);
    }
}

#[tokio::test]
async fn a_restarted_server_resumes_with_its_state() {
    for db in backends().await {
        let f = fixture(&db).await;
        call(
            &f.svc,
            "PUT",
            "/api/v1/networks/seed/policy",
            Some(&f.admin),
            Some(json!({ "default": "deny" })),
        )
        .await;
        call(
            &f.svc,
            "PATCH",
            &format!("/api/v1/nodes/{}", f.a.0),
            Some(&f.admin),
            Some(json!({ "hub": true })),
        )
        .await;
        let before = state(&f).await;
        let version_before = f.svc.node_map(f.b.0).await.unwrap().version;
        drop(f.svc);
        let svc = service(&db, ServiceConfig::default()).await;
        // Map versions never go back, across a restart too: an agent
        // holding a map of the old server is never ahead of the new one.
        let version_after = svc.node_map(f.b.0).await.unwrap().version;
        assert!(
            version_after > version_before,
            "{version_after} after {version_before}"
        );
        let g = Fixture {
            svc,
            admin: f.admin.clone(),
            setup_key: f.setup_key.clone(),
            a: f.a.clone(),
            b: f.b.clone(),
        };
        assert_eq!(state(&g).await, before);
        // Credentials and keys still work.
        let (s, m) = call(&g.svc, "GET", "/api/v1/node/map", Some(&g.b.1), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(m["default_action"], "deny");
        assert_eq!(
            enroll(&g.svc, &g.setup_key, "c", &new_node_key()).await.0,
            StatusCode::OK
        );
        // The audit log holds every change, each with its actor.
        let (_, page) = call(&g.svc, "GET", "/api/v1/audit", Some(&g.admin), None).await;
        let audit = &page["entries"];
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "admin_token.create",
                "network.create",
                "setup_key.create",
                "node.enroll",
                "node.enroll",
                "policy.set",
                "node.update",
                "node.enroll"
            ]
        );
        let set = &audit[5];
        assert_eq!(set["before"]["default"], "allow");
        assert_eq!(set["after"]["default"], "deny");
        assert!(set["actor"].as_str().unwrap().starts_with("admin:"));
    }
}

#[tokio::test]
async fn a_policy_naming_unknown_nodes_or_groups_is_refused_and_changes_nothing() {
    for db in backends().await {
        let f = fixture(&db).await;
        // A working rule: nodes a and b, group ops (the setup key's).
        let good = json!({ "default": "allow", "rule": [
            { "action": "deny", "from": ["node:b"], "to": ["node:a", "group:ops"], "proto": "tcp", "ports": ["22"] }
        ]});
        let path = "/api/v1/networks/seed/policy";
        let (s, v) = call(&f.svc, "PUT", path, Some(&f.admin), Some(good)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let before = state(&f).await;
        // A typo replacing it: refused, every unknown name listed.
        let typo = json!({ "default": "allow", "rule": [
            { "action": "deny", "from": ["node:labb", "*"], "to": ["node:a"], "proto": "tcp", "ports": ["22"] },
            { "action": "deny", "from": ["group:opz"], "to": ["node:zz", "group:ops"] }
        ]});
        let (s, v) = call(&f.svc, "PUT", path, Some(&f.admin), Some(typo)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        let m = v["message"].as_str().unwrap();
        for name in ["rules", "node:labb", "node:zz", "group:opz"] {
            assert!(m.contains(name), "{name} missing: {m}");
        }
        for known in ["node:a", "group:ops", "*"] {
            assert!(!m.contains(&format!(" {known}")), "{known} listed: {m}");
        }
        // Nothing changed: policy, audit log, maps.
        assert_eq!(state(&f).await, before);
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let db = support::sqlite();
    let f = fixture(&db).await;
    let cases = [
        (
            "POST",
            "/api/v1/networks",
            json!({ "name": "x", "overlay": "10.0.0.0/31" }),
            "too small",
        ),
        (
            "POST",
            "/api/v1/networks",
            json!({ "name": "seed", "overlay": "10.0.0.0/24" }),
            "already exists",
        ),
        (
            "POST",
            "/api/v1/networks",
            json!({ "name": "bad name", "overlay": "10.0.0.0/24" }),
            "invalid network name",
        ),
        (
            "PUT",
            "/api/v1/networks/seed/policy",
            json!({ "default": "allow", "rule": [{ "action": "deny", "from": ["*"], "to": ["*"], "proto": "icmp", "ports": ["22"] }] }),
            "ports only apply",
        ),
        (
            "PUT",
            "/api/v1/networks/seed/policy",
            json!({ "default": "maybe" }),
            "default",
        ),
        (
            "POST",
            "/api/v1/setup-keys",
            json!({ "network": "nope" }),
            "not found",
        ),
        (
            "POST",
            "/api/v1/setup-keys",
            json!({ "network": "seed", "usage_limit": 0 }),
            "usage_limit",
        ),
        (
            "PATCH",
            "/api/v1/nodes/999",
            json!({ "hub": true }),
            "not found",
        ),
        (
            "POST",
            "/api/v1/relays",
            json!({ "name": "bad name", "public_key": new_key(), "udp": "192.0.2.1:3478" }),
            "invalid relay name",
        ),
        (
            "POST",
            "/api/v1/relays",
            json!({ "name": "r", "public_key": new_key(), "udp": "0.0.0.0:3478" }),
            "not one nodes can send to",
        ),
        (
            "POST",
            "/api/v1/relays",
            json!({ "name": "r", "public_key": new_key(), "udp": "192.0.2.1:3478", "ws_url": "https://x/relay" }),
            "ws://",
        ),
        (
            "POST",
            "/api/v1/relays",
            json!({ "name": "r", "public_key": "nope", "udp": "192.0.2.1:3478" }),
            "public_key",
        ),
        ("DELETE", "/api/v1/relays/999", Value::Null, "not found"),
    ];
    for (method, path, body, needle) in cases {
        let (s, v) = call(&f.svc, method, path, Some(&f.admin), Some(body)).await;
        assert!(s.is_client_error(), "{method} {path}: {s} {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{method} {path}: {v}"
        );
    }
    // Same name, other key: refused.
    let (s, v) = enroll(&f.svc, &f.setup_key, "a", &new_node_key()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // A second relay with a taken name or key: refused.
    let key = new_key();
    let body = |name: &str| json!({ "name": name, "public_key": key, "udp": "192.0.2.1:3478" });
    let (s, _) = call(
        &f.svc,
        "POST",
        "/api/v1/relays",
        Some(&f.admin),
        Some(body("r")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    for (name, needle) in [("r", "already exists"), ("r2", "another relay")] {
        let (s, v) = call(
            &f.svc,
            "POST",
            "/api/v1/relays",
            Some(&f.admin),
            Some(body(name)),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
}

/// The relay's members, sorted as strings.
async fn members(svc: &Arc<Service>, token: &str) -> (StatusCode, Vec<String>) {
    let (s, v) = call(svc, "GET", "/api/v1/relay/members", Some(token), None).await;
    let mut keys: Vec<String> = v["public_keys"]
        .as_array()
        .map(|a| a.iter().map(|k| k.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    keys.sort();
    (s, keys)
}

#[tokio::test]
async fn relays_reach_every_map_serve_members_and_are_revoked_on_delete() {
    for db in backends().await {
        let f = fixture(&db).await;
        // c is the primary hub: a and b (both behind NAT: no endpoints)
        // reach each other through it while there is no relay.
        let (_, c) = enroll(&f.svc, &f.setup_key, "c", &new_node_key()).await;
        let c_id = c["node"]["id"].as_i64().unwrap();
        let c_key = c["node"]["public_key"].as_str().unwrap().to_owned();
        let (s, _) = call(
            &f.svc,
            "PATCH",
            &format!("/api/v1/nodes/{c_id}"),
            Some(&f.admin),
            Some(json!({ "hub": true })),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let mut rx = f.svc.subscribe(f.a.0).await.unwrap();
        let MapUpdate::Full(map) = next(&mut rx).await else {
            panic!("first message must be a full map")
        };
        assert!(map.relays.is_empty());
        let route_to_b = |map: &wgmesh_core::netmap::NetworkMap| {
            let b = map
                .peers
                .iter()
                .find(|p| p.public_key.to_string() == f.b.2)
                .unwrap();
            serde_json::to_value(b.route).unwrap()
        };
        assert_eq!(
            route_to_b(&map),
            json!({ "kind": "via_hub", "hub": c_key }),
            "without a relay a NATed pair goes through the hub"
        );

        // A relay: a connected node gets a full map listing it, and peers
        // with b directly (disco finds the path or falls back to it).
        let (relay_id, token) = create_relay(&f, "r1").await;
        let MapUpdate::Full(map) = next(&mut rx).await else {
            panic!("a relay change must arrive as a full map")
        };
        assert_eq!(map.relays.len(), 1);
        let r = &map.relays[0];
        assert_eq!(r.name, "r1");
        assert_eq!(r.udp, "192.0.2.50:3478".parse().unwrap());
        assert_eq!(r.ws_url.as_deref(), Some("wss://relay.example/relay"));
        assert_eq!(
            route_to_b(&map),
            json!({ "kind": "direct", "keepalive": 25 })
        );
        assert_eq!(f.svc.node_map(f.a.0).await.unwrap(), map);
        let (s, list) = call(&f.svc, "GET", "/api/v1/relays", Some(&f.admin), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["id"], relay_id);
        assert!(list[0].get("token").is_none(), "{list}");

        // The members: exactly the enrolled nodes' keys, as the relay
        // expects them ({"public_keys": [base64, …]}).
        let mut all = vec![f.a.2.clone(), f.b.2.clone(), c_key.clone()];
        all.sort();
        assert_eq!(members(&f.svc, &token).await, (StatusCode::OK, all));
        let (_, raw) = call(&f.svc, "GET", "/api/v1/relay/members", Some(&token), None).await;
        assert_eq!(raw.as_object().unwrap().len(), 1, "{raw}");
        assert!(
            raw["public_keys"]
                .as_array()
                .unwrap()
                .iter()
                .all(|k| k.as_str().unwrap().len() == 44)
        );

        // The relay and its token survive a restart.
        let again = service(&db, ServiceConfig::default()).await;
        let (s, list2) = call(&again, "GET", "/api/v1/relays", Some(&f.admin), None).await;
        assert_eq!((s, &list2), (StatusCode::OK, &list));
        assert_eq!(members(&again, &token).await.0, StatusCode::OK);
        assert_eq!(again.node_map(f.a.0).await.unwrap().relays, map.relays);
        drop(again);

        // Removing b drops it from the members.
        let (s, _) = call(
            &f.svc,
            "DELETE",
            &format!("/api/v1/nodes/{}", f.b.0),
            Some(&f.admin),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let mut left = vec![f.a.2.clone(), c_key.clone()];
        left.sort();
        assert_eq!(members(&f.svc, &token).await, (StatusCode::OK, left));
        let _ = next(&mut rx).await; // a's delta dropping b

        // Deleting the relay revokes its token and every map drops it.
        let (s, v) = call(
            &f.svc,
            "DELETE",
            &format!("/api/v1/relays/{relay_id}"),
            Some(&f.admin),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["name"], "r1");
        let MapUpdate::Full(map) = next(&mut rx).await else {
            panic!("a relay change must arrive as a full map")
        };
        assert!(map.relays.is_empty());
        assert_eq!(members(&f.svc, &token).await.0, StatusCode::UNAUTHORIZED);
        let (s, _) = call(
            &f.svc,
            "DELETE",
            &format!("/api/v1/relays/{relay_id}"),
            Some(&f.admin),
            None,
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (_, list) = call(&f.svc, "GET", "/api/v1/relays", Some(&f.admin), None).await;
        assert_eq!(list, json!([]));

        // Both changes are in the audit log, by the admin.
        let (_, audit) = call(
            &f.svc,
            "GET",
            "/api/v1/audit?limit=1000",
            Some(&f.admin),
            None,
        )
        .await;
        let entries: Vec<&Value> = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["target"] == format!("relay:{relay_id}"))
            .collect();
        assert_eq!(entries.len(), 2, "{audit}");
        assert_eq!(entries[0]["action"], "relay.create");
        assert_eq!(entries[0]["after"]["name"], "r1");
        assert!(entries[0]["after"].get("token").is_none());
        assert_eq!(entries[1]["action"], "relay.delete");
        assert_eq!(entries[1]["before"]["name"], "r1");
        assert!(entries[1]["after"].is_null());
        assert!(
            entries
                .iter()
                .all(|e| e["actor"].as_str().unwrap().starts_with("admin:"))
        );
    }
}

/// Enrolling needs the private key: someone with a valid setup key and a
/// node's public key (every peer's map lists it) cannot re-enrol that node
/// and take its credential; a challenge answers one enrolment only.
#[tokio::test]
async fn enrolment_proves_possession_of_the_key() {
    for db in backends().await {
        let f = fixture(&db).await;
        let before = state(&f).await;
        let victim: wgmesh_core::key::PublicKey = f.a.2.parse().unwrap();
        let attacker = new_node_key();
        let body = |ch: &EnrollChallenge, proof: String| {
            json!({ "setup_key": f.setup_key, "public_key": victim, "name": "a",
                    "challenge": ch.id, "proof": proof })
        };
        // A proof made with the attacker's own key, for the victim's.
        let ch = challenge(&f.svc).await;
        let forged = enroll_proof(&attacker, &ch, &f.setup_key, "a").unwrap();
        let (s, v) = call(
            &f.svc,
            "POST",
            "/api/v1/enroll",
            None,
            Some(body(&ch, forged)),
        )
        .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("proof_refused")),
            "{v}"
        );
        // A made-up challenge id, and a used one.
        let (s, _) = call(
            &f.svc,
            "POST",
            "/api/v1/enroll",
            None,
            Some(body(
                &EnrollChallenge {
                    id: "00".repeat(16),
                    server_key: victim,
                },
                "AAAA".into(),
            )),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = call(
            &f.svc,
            "POST",
            "/api/v1/enroll",
            None,
            Some(body(&ch, "AAAA".into())),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "a challenge answers once");
        // A proof for other parameters (another name) does not carry over.
        let mine = new_node_key();
        let ch = challenge(&f.svc).await;
        let proof = enroll_proof(&mine, &ch, &f.setup_key, "other-name").unwrap();
        let req = json!({ "setup_key": f.setup_key, "public_key": mine.public_key(), "name": "mine",
                          "challenge": ch.id, "proof": proof });
        let (s, _) = call(&f.svc, "POST", "/api/v1/enroll", None, Some(req)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // Nothing changed, and the victim's credential still works.
        assert_eq!(state(&f).await, before);
        let (s, m) = call(&f.svc, "GET", "/api/v1/node/map", Some(&f.a.1), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(m["node"]["name"], "a");
        // A missing proof is a clear 400.
        let (s, v) = call(
            &f.svc,
            "POST",
            "/api/v1/enroll",
            None,
            Some(json!({ "setup_key": f.setup_key, "public_key": victim, "name": "a" })),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["message"].as_str().unwrap().contains("challenge"), "{v}");
    }
}
