//! `<node>.setup.sh` runs for real: in its own network namespace (real
//! nftables, real sysctls) and its own mount namespace (tmpfs over
//! /etc/wireguard and /etc/sysctl.d, a copy of /etc/nftables.conf), with
//! `systemctl` replaced by a recorder. It installs the config 0600, turns on
//! forwarding on hubs only, opens the WireGuard port and keeps SSH open, and
//! a second run adds nothing.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use support::{Netns, assert_success, lab_ready, unique_names};

const SEED: &str = include_str!("../../../examples/seed-mesh.toml");

/// A host whose firewall drops everything not explicitly accepted.
const DROP_ALL: &str = "table inet filter {\n\
    chain input { type filter hook input priority filter; policy drop; }\n\
    chain forward { type filter hook forward priority filter; policy drop; }\n\
}\n";

struct Run {
    installed_conf: String,
    installed_mode: String,
    ip_forward: String,
    input_chain: String,
    forward_chain: String,
    nftables_conf: String,
    systemctl_calls: String,
}

fn run_setup(dir: &Path, node: &str, ns: &Netns, scratch: &Path) -> Run {
    let fake_bin = scratch.join("bin");
    fs::create_dir_all(&fake_bin).expect("mkdir");
    let systemctl = fake_bin.join("systemctl");
    fs::write(
        &systemctl,
        // Records its calls; the unit is never active yet (`is-active` fails).
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\n[ \"$1\" != is-active ]\n",
            scratch.join("systemctl.log").display()
        ),
    )
    .expect("write fake systemctl");
    fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).expect("chmod");
    let nft_conf = scratch.join("nftables.conf");
    if !nft_conf.exists() {
        fs::write(
            &nft_conf,
            format!("#!/usr/sbin/nft -f\nflush ruleset\n{DROP_ALL}"),
        )
        .expect("write nftables.conf");
    }
    let out_dir = scratch.join("out");
    fs::create_dir_all(&out_dir).expect("mkdir");
    // Inside a private mount namespace: the host's /etc is never touched.
    let inner = format!(
        "set -e\n\
         mount -t tmpfs none /etc/wireguard\n\
         mount -t tmpfs none /etc/sysctl.d\n\
         mount -t tmpfs none /run\n\
         mount --bind {nft} /etc/nftables.conf\n\
         PATH={bin}:$PATH sh {dir}/{node}.setup.sh\n\
         cp /etc/wireguard/wg0.conf {out}/installed.conf\n\
         stat -c %a /etc/wireguard/wg0.conf > {out}/mode\n",
        nft = nft_conf.display(),
        bin = fake_bin.display(),
        dir = dir.display(),
        out = out_dir.display(),
    );
    let out = ns
        .command("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &inner])
        .output()
        .expect("run unshare");
    assert_success(&format!("{node}.setup.sh"), &out);
    let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
    let chain = ns
        .command("nft")
        .args(["list", "chain", "inet", "filter", "input"])
        .output()
        .expect("nft list");
    let forward = ns
        .command("nft")
        .args(["list", "chain", "inet", "filter", "forward"])
        .output()
        .expect("nft list");
    let fwd = ns
        .command("cat")
        .arg("/proc/sys/net/ipv4/ip_forward")
        .output()
        .expect("cat");
    Run {
        installed_conf: read(&out_dir.join("installed.conf")),
        installed_mode: read(&out_dir.join("mode")).trim().to_owned(),
        ip_forward: String::from_utf8_lossy(&fwd.stdout).trim().to_owned(),
        input_chain: String::from_utf8_lossy(&chain.stdout).into_owned(),
        forward_chain: String::from_utf8_lossy(&forward.stdout).into_owned(),
        nftables_conf: read(&nft_conf),
        systemctl_calls: read(&scratch.join("systemctl.log")),
    }
}

#[test]
fn setup_script_installs_opens_the_port_and_keeps_ssh() {
    if !lab_ready(
        "setup_script_installs_opens_the_port_and_keeps_ssh",
        true,
        &["nft", "unshare", "wg", "iptables"],
    ) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mesh = tmp.path().join("mesh.toml");
    fs::write(&mesh, SEED).expect("write mesh");
    let dir = tmp.path().join("render");
    let out = Command::new(env!("CARGO_BIN_EXE_wgmesh"))
        .args(["plan", "render"])
        .arg(&mesh)
        .arg("--out")
        .arg(&dir)
        .output()
        .expect("run wgmesh");
    assert_success("wgmesh plan render", &out);

    for (node, hub) in [("nyc", true), ("lab", false)] {
        let (ns_name, _) = unique_names();
        let ns = Netns::add(&ns_name);
        let load = ns
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin
                    .take()
                    .expect("piped")
                    .write_all(DROP_ALL.as_bytes())?;
                c.wait_with_output()
            })
            .expect("nft -f");
        assert_success("load the drop-all ruleset", &load);
        let scratch = tmp.path().join(format!("scratch-{node}"));

        let first = run_setup(&dir, node, &ns, &scratch);
        let conf = fs::read_to_string(dir.join(format!("{node}.conf"))).expect("conf");
        assert_eq!(first.installed_conf, conf);
        assert_eq!(first.installed_mode, "600");
        assert_eq!(first.ip_forward, if hub { "1" } else { "0" }, "{node}");
        assert!(
            first.input_chain.contains("tcp dport 22 accept"),
            "{}",
            first.input_chain
        );
        assert!(
            first.input_chain.contains("udp dport 51820 accept"),
            "{}",
            first.input_chain
        );
        assert!(
            first
                .nftables_conf
                .contains("udp dport 51820 accept comment \"wgmesh wg0 udp 51820\""),
            "{}",
            first.nftables_conf
        );
        assert_eq!(
            first
                .forward_chain
                .contains("iifname \"wg0\" oifname \"wg0\" accept"),
            hub,
            "{node}: only a hub forwards:\n{}",
            first.forward_chain
        );
        assert_eq!(
            first.systemctl_calls,
            "enable wg-quick@wg0\nis-active --quiet wg-quick@wg0\nstart wg-quick@wg0\n"
        );

        // Again: nothing is added twice.
        let second = run_setup(&dir, node, &ns, &scratch);
        assert_eq!(second.input_chain, first.input_chain);
        assert_eq!(second.forward_chain, first.forward_chain);
        assert_eq!(second.nftables_conf, first.nftables_conf);
        // The persisted file still loads.
        let check = ns
            .command("nft")
            .args(["-c", "-f"])
            .arg(scratch.join("nftables.conf"))
            .output()
            .expect("nft -c");
        assert_success("nft -c -f nftables.conf", &check);
    }
}
