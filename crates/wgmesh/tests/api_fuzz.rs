//! Schemathesis (pinned in tests/api/requirements.txt, installed by
//! scripts/test.sh) against the real `wgmesh server --insecure-http` on a
//! fresh SQLite database and on a fresh PostgreSQL one, driven by the
//! server's own OpenAPI document: once with the admin token, once with no
//! credential, a bounded number of cases per operation and a fixed seed.
//!
//! It checks that no request gets a 5xx, that every response matches its
//! documented schema, status and content type, and that every request the
//! schema rejects is refused (`negative_data_rejection`). Any failure
//! fails the test with Schemathesis's report (each with a `curl` line).
#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::ServerProcess as Server;

/// Cases per operation and phase: enough to reach every validation
/// branch, few enough for the four runs to take about two minutes here.
/// Without a credential every protected route answers 401 whatever the
/// input, so that run needs fewer.
const MAX_EXAMPLES: &str = "30";
const MAX_EXAMPLES_ANONYMOUS: &str = "15";
const SEED: &str = "20260";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
    response_schema_conformance,negative_data_rejection";

/// A tool of the pinned venv; missing, the test fails and says how to
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

/// `wgmesh server init`, then `wgmesh server` on a free loopback port;
/// the admin token and the running server.
fn start(database: &str) -> (String, Server) {
    let token = support::server_init(database);
    (token, Server::start(database))
}

/// One Schemathesis run; the number of cases it generated.
fn schemathesis(server: &Server, token: Option<&str>, what: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(api_tool("schemathesis"));
    cmd.current_dir(dir.path())
        .args(["--no-color", "run"])
        .arg(format!("{}/api/v1/openapi.json", server.url))
        .args(["--checks", CHECKS])
        .args(["--mode", "all"])
        .args([
            "--max-examples",
            if token.is_some() {
                MAX_EXAMPLES
            } else {
                MAX_EXAMPLES_ANONYMOUS
            },
        ])
        .args(["--seed", SEED])
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        // Not a server-side check: hypothesis's own speed warnings.
        .args(["--suppress-health-check", "too_slow"]);
    if let Some(t) = token {
        cmd.args(["--header", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis {what} found failures:\n{report}\nserver log:\n{}",
        server.log_text()
    );
    // "Test cases:\n  1363 generated, 1363 passed"
    let generated = report
        .lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(' ')?;
            rest.starts_with("generated")
                .then(|| n.parse::<u64>().ok())?
        })
        .unwrap_or_else(|| panic!("no case count in the report:\n{report}"));
    assert!(
        report.contains(&format!("{generated} generated, {generated} passed")),
        "{what}: not every case passed:\n{report}"
    );
    eprintln!("schemathesis {what}: {generated} cases, all passed");
    generated
}

fn fuzz(database: &str, backend: &str) {
    let (token, server) = start(database);
    let admin = schemathesis(&server, Some(&token), &format!("{backend}, admin token"));
    let anonymous = schemathesis(&server, None, &format!("{backend}, no credential"));
    // Bounded, and not trivially small: every operation got its cases.
    for n in [admin, anonymous] {
        assert!((24 * 10..=24 * 200).contains(&n), "{backend}: {n} cases");
    }
    let log = server.log_text();
    assert!(!log.contains("internal error"), "{backend}: {log}");
}

#[test]
fn schemathesis_finds_nothing_on_sqlite_and_postgresql() {
    let test = "schemathesis_finds_nothing_on_sqlite_and_postgresql";
    api_tool("schemathesis");
    let dir = tempfile::tempdir().unwrap();
    fuzz(
        &format!("sqlite://{}/server.db", dir.path().display()),
        "SQLite",
    );
    if let Some(pg) = support::PgDatabase::create(test) {
        fuzz(&pg.url, "PostgreSQL");
    }
}
