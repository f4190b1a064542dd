//! Run last, after the whole suite (scripts/test.sh runs it explicitly with
//! `--ignored`): no lab namespace, TAP device, wireguard-go socket or lab
//! process may have survived the tests.

use std::fs;
use std::process::Command;

/// Programs the tests start; none may still run when the suite is over.
const TEST_PROGRAMS: [&str; 7] = [
    "wireguard-go",
    "wgl-delay",
    "wgl-udp",
    "iperf3",
    "wgmesh",
    "wgmesh-go",
    "boringtun-cli",
];

#[test]
#[ignore = "run by scripts/test.sh after every other test"]
fn nothing_survives_the_suite() {
    let mut leaks = Vec::new();

    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    for ns in String::from_utf8_lossy(&out.stdout).lines() {
        let name = ns.split_whitespace().next().unwrap_or_default();
        if name.starts_with("wgl-") || name.starts_with("wgm-") {
            leaks.push(format!("network namespace {name}"));
        }
    }

    // The delay element's TAPs start as `wd<lab id>…` in this namespace.
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip link");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split(": ").nth(1).unwrap_or_default();
        let name = name.split('@').next().unwrap_or_default();
        if name.starts_with("wd") || name.starts_with("wgm") {
            leaks.push(format!("interface {name} in the root namespace"));
        }
    }

    // Any socket nobody answers on is a leftover (a killed wireguard-go or
    // wgmesh never removed it), whatever its name.
    if let Ok(entries) = fs::read_dir("/var/run/wireguard") {
        for e in entries.flatten() {
            let path = e.path();
            if let Err(err) = std::os::unix::net::UnixStream::connect(&path) {
                leaks.push(format!("dead UAPI socket {} ({err})", path.display()));
            }
        }
    }

    // The lab's log directories (stripped configs went through them) and
    // records of detached labs.
    for (dir, prefix) in [
        (std::env::temp_dir(), "wgmesh-lab-"),
        ("/run/wgmesh-lab".into(), ""),
    ] {
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix) {
                    leaks.push(format!("{}", e.path().display()));
                }
            }
        }
    }

    // `wgmesh wg up` records the process serving an interface here (lab
    // interfaces are named like the lab's wireguard-go ones).
    if let Ok(entries) = fs::read_dir("/run/wgmesh") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("wg") && name.contains('-') && name.ends_with(".pid") {
                leaks.push(format!("wgmesh PID file /run/wgmesh/{name}"));
            }
        }
    }

    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        if TEST_PROGRAMS.contains(&comm) {
            let cmdline = fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ");
            leaks.push(format!("process {pid}: {}", cmdline.trim()));
        }
    }

    assert!(
        leaks.is_empty(),
        "left behind by the tests:\n{}",
        leaks.join("\n")
    );
}
