//! `wgmesh server init`, `wgmesh server` and `wgmesh admin …` as an
//! operator runs them, with exactly the flags the docs show.
#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wgmesh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wgmesh"))
}

/// A plain HTTP/1.1 GET: the status line and the body.
fn http_get(addr: &str, path: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

fn admin(url: &str, token: &str, args: &[&str]) -> String {
    let out = wgmesh()
        .arg("admin")
        .args(args)
        .env("WGMESH_SERVER", url)
        .env("WGMESH_TOKEN", token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wgmesh admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn init_serve_and_administer_from_the_shell() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/server.db", dir.path().display());

    // init: the token is the last line, printed once.
    let out = wgmesh()
        .args(["server", "init", "--database", &database])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let token = stdout.lines().last().unwrap().to_owned();
    assert!(token.starts_with("wga_"), "{stdout}");

    // Without a transport flag the server refuses to start.
    let out = wgmesh()
        .args(["server", "--listen", "127.0.0.1:0", "--database", &database])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--insecure-http"));

    let mut child = wgmesh()
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--database",
            &database,
            "--insecure-http",
            "--stun-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server { child };
    // The server says where it listens; wait for those lines (deadline).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            for prefix in ["wgmesh server: metrics on ", "wgmesh server: listening on "] {
                if let Some(addr) = line.strip_prefix(prefix) {
                    let _ = tx.send((prefix, addr.split(' ').next().unwrap().to_owned()));
                }
            }
        }
    });
    let (first, metrics) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server did not start");
    assert_eq!(first, "wgmesh server: metrics on ", "{metrics}");
    let (_, url) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server did not start");

    // Metrics on their own listener, not on the API's port.
    let metrics = metrics
        .strip_prefix("http://")
        .and_then(|m| m.strip_suffix("/metrics"))
        .unwrap()
        .to_owned();
    let (status, body) = http_get(&metrics, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains("# TYPE wgmesh_nodes gauge"), "{body}");
    let api = url.strip_prefix("http://").unwrap();
    let (status, _) = http_get(api, "/metrics");
    assert!(status.contains(" 404 "), "{status}");

    let out = admin(
        &url,
        &token,
        &["networks", "create", "seed", "--overlay", "100.64.0.0/24"],
    );
    assert!(out.contains("100.64.0.0/24"), "{out}");
    let out = admin(
        &url,
        &token,
        &["setup-keys", "create", "--reusable", "--groups", "ops,web"],
    );
    let key = out.lines().last().unwrap();
    assert!(key.starts_with("wgs_"), "{out}");
    let keys: serde_json::Value =
        serde_json::from_str(&admin(&url, &token, &["setup-keys", "list", "--json"])).unwrap();
    assert_eq!(keys[0]["groups"], serde_json::json!(["ops", "web"]));
    assert!(!keys.to_string().contains(key), "listing shows the secret");

    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "default = \"allow\"\n[[rule]]\naction = \"deny\"\nfrom = [\"group:web\"]\nto = [\"group:ops\"]\nproto = \"tcp\"\nports = [\"22\"]\n",
    )
    .unwrap();
    admin(&url, &token, &["policy", "set", policy.to_str().unwrap()]);
    let shown = admin(&url, &token, &["policy", "show"]);
    assert!(
        shown.contains("group:web") && shown.contains("\"22\""),
        "{shown}"
    );

    // A bad policy file is refused with the reason, and changes nothing.
    std::fs::write(
        &policy,
        "default = \"allow\"\n[[rule]]\naction = \"deny\"\nfrom = [\"web\"]\nto = [\"*\"]\n",
    )
    .unwrap();
    let out = wgmesh()
        .args(["admin", "policy", "set", policy.to_str().unwrap()])
        .env("WGMESH_SERVER", &url)
        .env("WGMESH_TOKEN", &token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node:NAME"));
    assert_eq!(admin(&url, &token, &["policy", "show"]), shown);

    // A wrong token gets the server's refusal, plainly.
    let out = wgmesh()
        .args(["admin", "nodes", "list"])
        .env("WGMESH_SERVER", &url)
        .env("WGMESH_TOKEN", "wga_wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing or invalid bearer token"));

    let audit: serde_json::Value =
        serde_json::from_str(&admin(&url, &token, &["audit", "tail", "--json"])).unwrap();
    assert_eq!(audit["truncated"], false, "{audit}");
    let actions: Vec<&str> = audit["entries"]
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
            "policy.set"
        ]
    );
    // A capped page says so, and where the next one starts.
    let out = wgmesh()
        .args(["admin", "audit", "tail", "--limit", "2"])
        .env("WGMESH_SERVER", &url)
        .env("WGMESH_TOKEN", &token)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("more entries follow"), "{stderr}");
    let next = audit["entries"][1]["id"].as_i64().unwrap();
    assert!(stderr.contains(&format!("--after {next}")), "{stderr}");
    drop(server);
}
