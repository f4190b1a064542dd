//! `wgmesh lab up|exec|down|clean` as an operator uses them, and `lab clean`
//! removing a crashed run's leftovers while leaving labs in use, and every
//! namespace that is not the lab's, alone.

mod support;

use std::fs;
use std::process::{Command, Output};

use support::{Netns, lab_ready};

fn wgmesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(args)
        .output()
        .expect("wgmesh runs")
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Takes the named lab down if the test fails half-way.
struct LabUp(String);

impl Drop for LabUp {
    fn drop(&mut self) {
        let _ = wgmesh(&["lab", "down", &self.0]);
    }
}

#[test]
fn up_exec_down() {
    if !lab_ready("up_exec_down", true, &["ping"]) {
        return;
    }
    let name = format!("c{:x}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("lab.toml");
    fs::write(
        &file,
        fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/lab/seed.toml"
        ))
        .expect("seed world")
        .replace("name = \"seed\"", &format!("name = \"{name}\"")),
    )
    .expect("write");
    let out = wgmesh(&["lab", "up", file.to_str().expect("utf-8")]);
    let _guard = LabUp(name.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains(&format!("wgl-{name}.lab")), "{shown}");

    // lab, behind home's NAT, reaches nyc on the internet.
    let out = wgmesh(&[
        "lab",
        "exec",
        "--lab",
        &name,
        "lab",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        "203.0.113.10",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The command's exit status is passed through.
    let out = wgmesh(&[
        "lab", "exec", "--lab", &name, "nyc", "--", "sh", "-c", "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    let out = wgmesh(&["lab", "exec", "--lab", &name, "nowhere", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no host \"nowhere\""));
    // The same lab cannot come up twice.
    let out = wgmesh(&["lab", "up", file.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is up already"));

    let out = wgmesh(&["lab", "down", &name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let prefix = format!("wgl-{name}.");
    assert!(!namespaces().iter().any(|n| n.starts_with(&prefix)));
    assert!(!std::path::Path::new(&format!("/run/wgmesh-lab/{name}.json")).exists());
}

#[test]
fn clean_removes_only_leftovers() {
    if !lab_ready("clean_removes_only_leftovers", true, &[]) {
        return;
    }
    // A crashed test run: its namespaces carry the PID of a process now gone.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let pid = std::process::id();
    let crashed = [
        format!("wgl-{dead:x}-0.nyc"),
        format!("wgl-{dead:x}-0.inet"),
    ];
    // A `lab up` that died before recording itself.
    let unrecorded = format!("wgl-u{pid:x}.lab");
    let mut guards: Vec<Netns> = Vec::new();
    for name in crashed.iter().chain([&unrecorded]) {
        guards.push(Netns::add(name));
    }
    // A lab in use (this process made it), and a namespace that is not the lab's.
    let live = wgmesh_lab::Lab::new().expect("lab");
    let mut live = live;
    live.add_public_host("a", "192.0.2.7".parse().expect("ip"))
        .expect("host");
    let live_ns = live.namespaces();
    let foreign = format!("wgmkeep-{pid}");
    let _foreign = Netns::add(&foreign);

    let out = wgmesh(&["lab", "clean"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stdout);
    let left = namespaces();
    for name in crashed.iter().chain([&unrecorded]) {
        assert!(!left.contains(name), "{name} should be gone");
        assert!(report.contains(&format!("removed {name}")), "{report}");
    }
    for name in live_ns.iter().chain([&foreign]) {
        assert!(left.contains(name), "{name} must survive `lab clean`");
    }
    // The guards of the removed namespaces have nothing left to delete.
    for g in guards {
        std::mem::forget(g);
    }
}
