//! Test databases: a SQLite file in a temp dir, and a fresh PostgreSQL
//! database (created on the server named by WGMESH_TEST_POSTGRES, dropped
//! at the end, also on panic). Every API test runs on both.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use sqlx::Connection;
use tower::ServiceExt;
use wgmesh_server::db::Db;
use wgmesh_server::service::{Service, ServiceConfig};

pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // A runtime of its own: drop may run inside the test's.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut c)
                                .await;
                    }
                });
            })
            .join();
        }
    }
}

static N: AtomicU32 = AtomicU32::new(0);

pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/wgmesh.db", dir.path().display());
    TestDb::Sqlite { _dir: dir, url }
}

/// A fresh database on the PostgreSQL server of WGMESH_TEST_POSTGRES
/// (a URL to an existing database, e.g.
/// postgres://root@localhost/postgres?host=/var/run/postgresql).
/// Without it the test fails, unless WGMESH_SKIP_POSTGRES=1 says to skip.
pub async fn postgres() -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("WGMESH_TEST_POSTGRES") else {
        if std::env::var("WGMESH_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("skipping PostgreSQL: WGMESH_SKIP_POSTGRES=1");
            return None;
        }
        panic!(
            "set WGMESH_TEST_POSTGRES to a PostgreSQL URL (scripts/test.sh does), or WGMESH_SKIP_POSTGRES=1"
        );
    };
    let name = format!(
        "wgmesh_t_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut c)
        .await
        .unwrap();
    let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
    let base = &base[..base.rfind('/').unwrap()];
    let url = if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    };
    Some(TestDb::Postgres {
        admin_url,
        name,
        url,
    })
}

/// Both backends (PostgreSQL only when configured, see [`postgres`]).
pub async fn backends() -> Vec<TestDb> {
    let mut v = vec![sqlite()];
    v.extend(postgres().await);
    v
}

pub async fn service(db: &TestDb, config: ServiceConfig) -> Arc<Service> {
    Service::load(Db::create(db.url()).await.unwrap(), config)
        .await
        .unwrap()
}

/// One request through the app (no network), returning status and JSON.
pub async fn call(
    svc: &Arc<Service>,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    let resp = wgmesh_server::app(svc.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Makes the schema, as `wgmesh server init` does, so that
/// `serve::start` (which refuses an uninitialised database) can open it.
pub async fn create_schema(db: &TestDb) {
    Db::create(db.url()).await.unwrap().pool.close().await;
}
