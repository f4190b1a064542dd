//! Writing a planned node out: its wg-quick file and its host setup script.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;

use super::{NodeKey, NodePlan, Plan, PlanError};
use crate::wgquick::{self, Config, Interface, Peer};

/// How keys reach the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderOptions {
    /// Load the private key from `/etc/wireguard/<node>.key` in PostUp
    /// instead of writing it into the file, so the file holds no secret.
    pub key_files: bool,
}

/// Where the node's private key lives on the node when `key_files` is on.
pub fn key_file_path(node: &str) -> String {
    format!("/etc/wireguard/{node}.key")
}

/// The hooks that make a hub forward between its peers (in and out on the
/// WireGuard interface only: a hub does not route the overlay into its LAN),
/// and put everything back as it was on down.
fn forwarding_hooks(cidr: &IpNet) -> (Vec<String>, Vec<String>) {
    let (sysctl, tables) = match cidr {
        IpNet::V4(_) => ("net.ipv4.ip_forward", "iptables"),
        IpNet::V6(_) => ("net.ipv6.conf.all.forwarding", "ip6tables"),
    };
    let saved = "/run/wgmesh-%i.forwarding";
    let up = vec![
        format!("sysctl -n {sysctl} > {saved} && sysctl -q -w {sysctl}=1"),
        format!("{tables} -A FORWARD -i %i -o %i -j ACCEPT"),
    ];
    let down = vec![
        format!("{tables} -D FORWARD -i %i -o %i -j ACCEPT"),
        format!("sysctl -q -w {sysctl}=$(cat {saved} 2>/dev/null || echo 0) && rm -f {saved}"),
    ];
    (up, down)
}

impl Plan {
    /// The node's wg-quick file. `keys` holds every node's key.
    pub fn render_config(
        &self,
        node: &str,
        keys: &BTreeMap<String, NodeKey>,
        options: RenderOptions,
    ) -> Result<String, PlanError> {
        let me = self
            .node(node)
            .ok_or_else(|| PlanError::Invalid(format!("no node {node:?}")))?;
        let key_of = |name: &str| {
            keys.get(name)
                .ok_or_else(|| PlanError::MissingKey(name.into()))
        };
        let my_key = key_of(node)?;

        let mut interface = Interface {
            listen_port: Some(me.listen_port),
            addresses: vec![
                IpNet::new(me.address, self.cidr.prefix_len())
                    .expect("the cidr's prefix length fits its own family"),
            ],
            mtu: Some(me.mtu),
            ..Interface::default()
        };
        let placeholder = match (my_key, options.key_files) {
            (_, true) => {
                interface
                    .post_up
                    .push(format!("wg set %i private-key {}", key_file_path(node)));
                None
            }
            (NodeKey::Private(k), false) => {
                interface.private_key = Some(k.clone());
                None
            }
            (NodeKey::PublicOnly(_), false) => Some(format!("<private key of {node}>")),
        };
        if me.is_hub {
            let (up, down) = forwarding_hooks(&self.cidr);
            interface.post_up.extend(up);
            interface.post_down.extend(down);
        }
        let peers = me
            .peers
            .iter()
            .map(|p| {
                Ok(Peer {
                    name: Some(peer_comment(p)),
                    public_key: key_of(&p.node)?.public_key(),
                    preshared_key: None,
                    allowed_ips: p.allowed_ips.clone(),
                    endpoint: p.endpoint.clone(),
                    persistent_keepalive: p.keepalive,
                })
            })
            .collect::<Result<Vec<_>, PlanError>>()?;

        let body = wgquick::render(&Config { interface, peers });
        let mut out = self.header(me);
        if let Some(placeholder) = &placeholder {
            writeln!(
                out,
                "# The private key of {node} was made on {node} and never left it. Replace\n\
                 # {placeholder} below with it before use, for example:\n\
                 #   sed -i \"s|{placeholder}|$(cat {path})|\" {node}.conf\n\
                 # or render with --key-files to read it from {path} instead.",
                path = key_file_path(node),
            )
            .expect("writing to a String cannot fail");
        }
        out.push_str(&body);
        if let Some(placeholder) = placeholder {
            out = out.replacen(
                "[Interface]\n",
                &format!("[Interface]\nPrivateKey = {placeholder}\n"),
                1,
            );
        }
        Ok(out)
    }

    fn header(&self, me: &NodePlan) -> String {
        format!(
            "# wgmesh: node {} of mesh {:?} ({}{}).\n\
             # Made by `wgmesh plan render`: change the mesh file and render again\n\
             # rather than editing this file.\n",
            me.name,
            self.name,
            self.topology,
            if me.is_hub { ", hub" } else { "" },
        )
    }

    /// `<node>.setup.sh`: the host baseline for one node. Run as root on the
    /// node, from the rendered directory.
    pub fn render_setup_script(
        &self,
        node: &str,
        options: RenderOptions,
    ) -> Result<String, PlanError> {
        let me = self
            .node(node)
            .ok_or_else(|| PlanError::Invalid(format!("no node {node:?}")))?;
        let iface = &self.interface;
        let port = me.listen_port;
        let mut s = String::new();
        let mut w = |text: &str| s.push_str(text);
        w(&format!(
            "#!/bin/sh\n\
             # wgmesh host baseline for node {node} of mesh {mesh:?}.\n\
             # Run as root on {node}, from the directory `wgmesh plan render` wrote:\n\
             #   sudo sh {node}.setup.sh\n\
             # It installs {node}.conf as /etc/wireguard/{iface}.conf,{fwd} opens UDP port\n\
             # {port} (keeping SSH open), and enables wg-quick@{iface}. Running it again is safe.\n\
             set -eu\n\
             cd \"$(dirname \"$0\")\"\n\
             IFACE={iface}\n\
             PORT={port}\n\
             \n\
             if [ \"$(id -u)\" != 0 ]; then echo \"{node}.setup.sh: run me as root\" >&2; exit 1; fi\n\
             command -v wg >/dev/null 2>&1 || {{ echo \"install wireguard-tools first (apt install wireguard-tools)\" >&2; exit 1; }}\n\
             \n\
             # 1. The configuration (and key), readable by root only.\n\
             install -d -m 700 /etc/wireguard\n\
             install -m 600 {node}.conf \"/etc/wireguard/$IFACE.conf\"\n",
            mesh = self.name,
            fwd = if me.is_hub {
                " turns on forwarding,"
            } else {
                ""
            },
        ));
        if options.key_files {
            let key = key_file_path(node);
            w(&format!(
                "if [ -f keys/{node}.key ]; then install -m 600 keys/{node}.key {key}; fi\n\
                 if [ ! -f {key} ]; then\n\
                 \x20 echo \"{node}.setup.sh: no {key}: put {node}'s private key there (mode 600)\" >&2; exit 1\n\
                 fi\n"
            ));
        } else {
            w(&format!(
                "if grep -q '^PrivateKey = <' \"/etc/wireguard/$IFACE.conf\"; then\n\
                 \x20 echo \"{node}.setup.sh: /etc/wireguard/$IFACE.conf still has the private key placeholder; fill it in first\" >&2; exit 1\n\
                 fi\n"
            ));
        }
        if me.is_hub {
            let (sysctl, tables) = match self.cidr {
                IpNet::V4(_) => ("net.ipv4.ip_forward", "iptables"),
                IpNet::V6(_) => ("net.ipv6.conf.all.forwarding", "ip6tables"),
            };
            w(&format!(
                "\n# 2. Forwarding: this node is a hub and relays between its peers.\n\
                 printf '%s = 1\\n' {sysctl} > \"/etc/sysctl.d/60-wgmesh-$IFACE.conf\"\n\
                 sysctl -q -p \"/etc/sysctl.d/60-wgmesh-$IFACE.conf\"\n\
                 # PostUp adds a FORWARD rule with {tables}.\n\
                 if ! command -v {tables} >/dev/null 2>&1; then\n\
                 \x20 if command -v apt-get >/dev/null 2>&1; then apt-get install -y iptables; else echo \"install {tables}: the hub's PostUp needs it\" >&2; exit 1; fi\n\
                 fi\n"
            ));
        }
        w(
            "\n# 3. Firewall: open the WireGuard port, and make sure SSH stays open so\n\
             # that enabling a firewall never locks the operator out.\n\
             if command -v ufw >/dev/null 2>&1; then\n\
             \x20 ufw allow 22/tcp\n\
             \x20 ufw allow \"$PORT/udp\" comment \"wgmesh $IFACE\"\n",
        );
        if me.is_hub {
            w("  ufw route allow in on \"$IFACE\" out on \"$IFACE\"\n");
        }
        w("elif command -v nft >/dev/null 2>&1; then\n\
             \x20 # Debian's /etc/nftables.conf has an `inet filter` table; accept rules go\n\
             \x20 # first in its input chain, and into the file so they survive a reboot.\n\
             \x20 if nft list chain inet filter input >/dev/null 2>&1; then\n\
             \x20   nft list chain inet filter input | grep -q \"wgmesh ssh\" ||\n\
             \x20     nft insert rule inet filter input tcp dport 22 accept comment \\\"wgmesh ssh\\\"\n\
             \x20   nft list chain inet filter input | grep -q \"wgmesh $IFACE\" ||\n\
             \x20     nft insert rule inet filter input udp dport \"$PORT\" accept comment \"\\\"wgmesh $IFACE\\\"\"\n\
             \x20   if [ -f /etc/nftables.conf ] && ! grep -q \"wgmesh $IFACE\" /etc/nftables.conf; then\n\
             \x20     printf 'insert rule inet filter input tcp dport 22 accept comment \"wgmesh ssh\"\\ninsert rule inet filter input udp dport %s accept comment \"wgmesh %s\"\\n' \"$PORT\" \"$IFACE\" >> /etc/nftables.conf\n\
             \x20   fi\n\
             \x20 else\n\
             \x20   echo \"no nftables input filter chain: nothing blocks UDP $PORT\"\n\
             \x20 fi\n\
             else\n\
             \x20 echo \"neither ufw nor nft found: open UDP $PORT in your firewall yourself\"\n\
             fi\n\
             \n\
             # 4. Bring the interface up now and at every boot.\n\
             if command -v systemctl >/dev/null 2>&1; then\n\
             \x20 systemctl enable --now \"wg-quick@$IFACE\"\n\
             else\n\
             \x20 echo \"no systemd: start it with: wg-quick up $IFACE\"\n\
             fi\n");
        Ok(s)
    }
}

/// The comment above a `[Peer]`: the peer's name, and whom it relays to.
fn peer_comment(p: &super::PeerPlan) -> String {
    if p.via.is_empty() {
        p.node.clone()
    } else {
        format!("{} (hub for {})", p.node, p.via.join(", "))
    }
}
