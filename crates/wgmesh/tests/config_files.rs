//! `wgmesh server --config FILE --print-config`: the file, WGMESH_*
//! variables over it, flags over those, unknown keys refused.
#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

use std::process::{Command, Output};

fn wgmesh() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wgmesh"));
    // Never the host's /etc/wgmesh, nor the caller's variables.
    for v in ["WGMESH_CONFIG", "WGMESH_LISTEN", "WGMESH_DATABASE"] {
        c.env_remove(v);
    }
    c.env("WGMESH_CONFIG_DIR", "/nonexistent-wgmesh-config-dir");
    c
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn server_file() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        f.path(),
        "listen = \"127.0.0.1:7000\"\ndatabase = \"sqlite:///srv.db\"\nmetrics_listen = \"off\"\n",
    )
    .unwrap();
    f
}

#[test]
fn server_print_config_from_file_env_and_flag() {
    let f = server_file();
    let from_file = stdout(
        &wgmesh()
            .args(["server", "--print-config", "--config"])
            .arg(f.path())
            .output()
            .unwrap(),
    );
    assert!(
        from_file.contains("listen = \"127.0.0.1:7000\"\n"),
        "{from_file}"
    );
    assert!(
        from_file.contains("database = \"sqlite:///srv.db\"\n"),
        "{from_file}"
    );
    assert!(
        from_file.contains("metrics_listen = \"off\"\n"),
        "{from_file}"
    );
    // A key the file leaves out takes its default.
    assert!(
        from_file.contains("address_grace_secs = 86400\n"),
        "{from_file}"
    );

    let env_over_file = stdout(
        &wgmesh()
            .args(["server", "--print-config", "--config"])
            .arg(f.path())
            .env("WGMESH_LISTEN", "127.0.0.1:7001")
            .output()
            .unwrap(),
    );
    assert!(
        env_over_file.contains("listen = \"127.0.0.1:7001\"\n"),
        "{env_over_file}"
    );
    assert!(env_over_file.contains("database = \"sqlite:///srv.db\"\n"));

    let flag_over_env = stdout(
        &wgmesh()
            .args(["server", "--print-config", "--listen", "127.0.0.1:7002"])
            .env("WGMESH_CONFIG", f.path())
            .env("WGMESH_LISTEN", "127.0.0.1:7001")
            .output()
            .unwrap(),
    );
    assert!(
        flag_over_env.contains("listen = \"127.0.0.1:7002\"\n"),
        "{flag_over_env}"
    );
    assert!(flag_over_env.contains("metrics_listen = \"off\"\n"));
}

#[test]
fn server_default_file_is_read_from_the_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("server.toml"),
        "listen = \"127.0.0.1:7003\"\n",
    )
    .unwrap();
    let out = stdout(
        &wgmesh()
            .args(["server", "--print-config"])
            .env("WGMESH_CONFIG_DIR", dir.path())
            .output()
            .unwrap(),
    );
    assert!(out.contains("listen = \"127.0.0.1:7003\"\n"), "{out}");
}

#[test]
fn server_refuses_an_unknown_key_with_its_line() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), "listen = \"127.0.0.1:7000\"\nlisen = \"x\"\n").unwrap();
    let out = wgmesh()
        .args(["server", "--print-config", "--config"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&f.path().display().to_string()), "{err}");
    assert!(err.contains("line 2"), "{err}");
    assert!(err.contains("unknown field `lisen`"), "{err}");
}

#[test]
fn server_missing_config_file_is_an_error() {
    let out = wgmesh()
        .args([
            "server",
            "--print-config",
            "--config",
            "/nonexistent/server.toml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/server.toml"), "{err}");
}

/// `wgmesh admin`'s --ca-file is read wherever it stands and from
/// WGMESH_CA_FILE: a CA file that does not exist is reported by its name
/// before any connection (the server's address is a closed loopback port).
#[test]
fn admin_ca_file_in_any_position_and_from_env() {
    let admin = |args: &[&str], env_ca: Option<&str>| {
        let mut c = wgmesh();
        c.env_remove("WGMESH_CA_FILE")
            .env("WGMESH_TOKEN", "t")
            .env("WGMESH_SERVER", "https://127.0.0.1:1")
            .arg("admin")
            .args(args);
        if let Some(ca) = env_ca {
            c.env("WGMESH_CA_FILE", ca);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let before = admin(
        &["--ca-file", "/nonexistent/a.pem", "networks", "list"],
        None,
    );
    assert!(before.contains("/nonexistent/a.pem"), "{before}");
    let after = admin(
        &["networks", "list", "--ca-file", "/nonexistent/b.pem"],
        None,
    );
    assert!(after.contains("/nonexistent/b.pem"), "{after}");
    let env = admin(&["networks", "list"], Some("/nonexistent/c.pem"));
    assert!(env.contains("/nonexistent/c.pem"), "{env}");
}
