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

/// The forwarding switch and packet filter tool of the overlay's family.
pub(crate) fn forwarding_knobs(cidr: &IpNet) -> (&'static str, &'static str) {
    match cidr {
        IpNet::V4(_) => ("net.ipv4.ip_forward", "iptables"),
        IpNet::V6(_) => ("net.ipv6.conf.all.forwarding", "ip6tables"),
    }
}

/// Where a hub keeps the forwarding setting it found before it turned
/// forwarding on, so that down (or a reboot, /run being tmpfs) puts it back.
pub(crate) const SAVED_FORWARDING: &str = "/run/wgmesh-%i.forwarding";

/// The hooks that make a hub forward between its peers (in and out on the
/// WireGuard interface only: a hub does not route the overlay into its LAN),
/// and put everything back as it was before on down.
fn forwarding_hooks(cidr: &IpNet) -> (Vec<String>, Vec<String>) {
    let (sysctl, tables) = forwarding_knobs(cidr);
    let saved = SAVED_FORWARDING;
    let up = vec![
        // Keep the first saved value: setup.sh may have saved it already.
        format!("[ -f {saved} ] || sysctl -n {sysctl} > {saved}; sysctl -q -w {sysctl}=1"),
        format!("{tables} -A FORWARD -i %i -o %i -j ACCEPT"),
    ];
    let down = vec![
        format!("{tables} -D FORWARD -i %i -o %i -j ACCEPT"),
        format!("sysctl -q -w {sysctl}=$(cat {saved} 2>/dev/null || echo 0); rm -f {saved}"),
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
        let me = self.existing_node(node)?;
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
                 #   (umask 077; awk -v f={path} 'BEGIN {{ getline k < f }} {{ sub(\"{placeholder}\", k) }} 1' \\\n\
                 #     {node}.conf > {node}.conf.new) && mv {node}.conf.new {node}.conf\n\
                 # (the key never appears on a command line),\n\
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
}

/// The comment above a `[Peer]`: the peer's name, and whom it relays to.
fn peer_comment(p: &super::PeerPlan) -> String {
    if p.via.is_empty() {
        p.node.clone()
    } else {
        format!("{} (hub for {})", p.node, p.via.join(", "))
    }
}
