//! A stock WireGuard node in the lab: a wg-quick-alike on wireguard-go.
//!
//! wg-quick(8) needs the kernel module, which this machine lacks, so the lab
//! does its steps itself, in the same order, with wireguard-go as the data
//! plane: PreUp, create the interface (`wireguard-go -f`), `wg setconf` with
//! the stripped file, addresses, MTU, link up, a route for every AllowedIPs
//! prefix, PostUp (with `%i` replaced by the interface name, run by bash as
//! wg-quick does). The stripped file holds the private key, so it goes to
//! `wg setconf` on a pipe, never into a file.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use wgmesh_core::wgquick::{self, Config, Table};

use crate::{Lab, LabError};

/// How long wireguard-go gets to create its interface and UAPI socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A WireGuard interface brought up in a lab host.
#[derive(Debug, Clone)]
pub struct WgNode {
    pub host: String,
    pub iface: String,
    /// The label of its wireguard-go process in the lab.
    pub process: String,
    pub config: Config,
}

/// Brings `conf` (a wg-quick file's text) up as `iface` in `host`.
pub fn up(lab: &mut Lab, host: &str, iface: &str, conf: &str) -> Result<WgNode, LabError> {
    let config = wgquick::parse(conf)
        .map_err(|e| LabError::Topology(format!("{host}: the wg-quick file is not valid:\n{e}")))?;
    if config.interface.private_key.is_none() {
        return Err(LabError::Topology(format!(
            "{host}: the wg-quick file has no PrivateKey (the lab does not read key files)"
        )));
    }
    let hooks = |lab: &Lab, list: &[String]| -> Result<(), LabError> {
        for hook in list {
            let cmd = hook.replace("%i", iface);
            lab.exec(host, &["bash", "-c", &cmd])?;
        }
        Ok(())
    };
    hooks(lab, &config.interface.pre_up)?;

    let label = format!("wireguard-go-{host}-{iface}");
    lab.spawn(host, &label, &["wireguard-go", "-f", iface])?;
    wait_for_uapi(lab, host, iface, &label)?;

    // wireguard-go leaves its socket behind when killed; the lab removes it.
    lab.remove_on_drop(format!("/var/run/wireguard/{iface}.sock").into());
    setconf(lab, host, iface, &config)?;

    let ns = lab.host(host)?;
    for addr in &config.interface.addresses {
        ns.netns
            .ip(&["address", "add", &addr.to_string(), "dev", iface])?;
    }
    if let Some(mtu) = config.interface.mtu {
        ns.netns
            .ip(&["link", "set", "mtu", &mtu.to_string(), "dev", iface])?;
    }
    ns.netns.ip(&["link", "set", iface, "up"])?;
    if config.interface.table != Some(Table::Off) {
        let mut routes = BTreeSet::new();
        for peer in &config.peers {
            for net in &peer.allowed_ips {
                if net.prefix_len() == 0 {
                    return Err(LabError::Topology(format!(
                        "{host}: a default route in AllowedIPs needs wg-quick's policy \
                         routing, which the lab does not do"
                    )));
                }
                routes.insert(net.trunc());
            }
        }
        for net in routes {
            let family = if matches!(net, IpNet::V6(_)) {
                "-6"
            } else {
                "-4"
            };
            // `replace`, not `add`: the Address's own prefix route may exist already.
            ns.netns
                .ip(&[family, "route", "replace", &net.to_string(), "dev", iface])?;
        }
    }
    hooks(lab, &config.interface.post_up)?;
    Ok(WgNode {
        host: host.to_owned(),
        iface: iface.to_owned(),
        process: label,
        config,
    })
}

/// `wg setconf IFACE /dev/stdin`, the stripped file on a pipe: the private
/// key is never written to a file.
fn setconf(lab: &Lab, host: &str, iface: &str, config: &Config) -> Result<(), LabError> {
    use std::io::Write as _;
    use std::process::Stdio;
    let text = zeroize::Zeroizing::new(wgquick::render_stripped(config));
    let command = format!("wg setconf {iface} /dev/stdin (in {host})");
    let spawn_err = |source| LabError::Spawn {
        command: command.clone(),
        source,
    };
    let mut child = lab
        .host(host)?
        .netns
        .command("wg")
        .args(["setconf", iface, "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    child
        .stdin
        .take()
        .expect("stdin was piped above")
        .write_all(text.as_bytes())
        .map_err(spawn_err)?;
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Waits until `wg show IFACE` answers, or fails with wireguard-go's output.
fn wait_for_uapi(lab: &mut Lab, host: &str, iface: &str, label: &str) -> Result<(), LabError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let ready = lab
            .host(host)?
            .netns
            .try_exec(&["wg", "show", iface])
            .is_ok_and(|o| o.status.success());
        if ready {
            return Ok(());
        }
        let proc = lab
            .processes()
            .iter_mut()
            .find(|p| p.label() == label)
            .expect("spawned just before");
        if let Some(status) = proc.exited() {
            return Err(LabError::Timeout(format!(
                "wireguard-go for {iface} in {host} exited ({status}):\n{}",
                proc.log_text()
            )));
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout(format!(
                "wireguard-go for {iface} in {host} not up after {START_TIMEOUT:?}:\n{}",
                proc.log_text()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Takes the node down as wg-quick does: PreDown, remove the interface, PostDown.
pub fn down(lab: &mut Lab, node: &WgNode) -> Result<(), LabError> {
    let run = |lab: &Lab, list: &[String]| -> Result<(), LabError> {
        for hook in list {
            lab.exec(
                &node.host,
                &["bash", "-c", &hook.replace("%i", &node.iface)],
            )?;
        }
        Ok(())
    };
    run(lab, &node.config.interface.pre_down)?;
    lab.stop(&node.process);
    run(lab, &node.config.interface.post_down)
}
