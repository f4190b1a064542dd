//! `wgmesh demo --check`: the README's main job, end to end (root).

mod support;

use std::process::Command;

#[test]
fn demo_check_forms_the_mesh_and_exits_0() {
    if !support::lab_ready("demo_check_forms_the_mesh_and_exits_0", true, &["ping"]) {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(["demo", "--check", "--timeout", "90"])
        .output()
        .expect("wgmesh demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo --check failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("every pair pings, every path as expected"),
        "{stdout}"
    );
    // lab (port-restricted NAT) ↔ roam (symmetric NAT) cannot go direct:
    // the relay carries it; everything else goes direct.
    for pair in [
        "│ lab  ┆ roam ┆ relayed via nyc-relay",
        "│ roam ┆ lab  ┆ relayed via nyc-relay",
        "│ lab  ┆ lax  ┆ direct",
        "│ roam ┆ lax  ┆ direct",
    ] {
        assert!(stdout.contains(pair), "missing {pair:?} in\n{stdout}");
    }
}
