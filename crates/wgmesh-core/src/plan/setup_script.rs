//! `<node>.setup.sh`: the host baseline for one node, a POSIX shell script
//! run as root on the node from the directory `wgmesh plan render` wrote.
//! Running it again is safe and applies a changed render.

use super::render::{SAVED_FORWARDING, forwarding_knobs, key_file_path};
use super::{NodeKey, Plan, PlanError, RenderOptions};

impl Plan {
    /// The setup script for `node`, whose key is `key`.
    pub fn render_setup_script(
        &self,
        node: &str,
        key: &NodeKey,
        options: RenderOptions,
    ) -> Result<String, PlanError> {
        let me = self.existing_node(node)?;
        let iface = &self.interface;
        let port = me.listen_port;
        let mut s = format!(
            "#!/bin/sh\n\
             # wgmesh host baseline for node {node} of mesh {mesh:?}.\n\
             # Run as root on {node}, from the directory `wgmesh plan render` wrote:\n\
             #   sudo sh {node}.setup.sh\n\
             # It installs {node}.conf as /etc/wireguard/{iface}.conf,{fwd} opens UDP port\n\
             # {port} (keeping SSH open), and enables wg-quick@{iface}. Running it again is\n\
             # safe, and applies a newer render.\n\
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
        );
        let key_path = key_file_path(node);
        match (options.key_files, key) {
            (true, NodeKey::Private(_)) => s.push_str(&format!(
                "if [ -f keys/{node}.key ] && [ ! -f {key_path} ]; then install -m 600 keys/{node}.key {key_path}; fi\n"
            )),
            // The node made its own key: never bring one from elsewhere.
            (true, NodeKey::PublicOnly(_)) => {}
            (false, _) => s.push_str(&format!(
                "if grep -q '^PrivateKey = <' \"/etc/wireguard/$IFACE.conf\"; then\n\
                 \x20 echo \"{node}.setup.sh: /etc/wireguard/$IFACE.conf still has the private key placeholder; fill it in first\" >&2; exit 1\n\
                 fi\n"
            )),
        }
        if options.key_files {
            s.push_str(&format!(
                "if [ ! -f {key_path} ]; then\n\
                 \x20 echo \"{node}.setup.sh: no {key_path}: put {node}'s private key there (mode 600)\" >&2; exit 1\n\
                 fi\n"
            ));
        }
        if me.is_hub {
            let (sysctl, tables) = forwarding_knobs(&self.cidr);
            let saved = SAVED_FORWARDING.replace("%i", "$IFACE");
            s.push_str(&format!(
                "\n# 2. Forwarding: this node is a hub and relays between its peers. Turn it on\n\
                 # now, saving what it was: {iface}'s PostUp turns it on at every boot, and\n\
                 # its PostDown puts the saved value back.\n\
                 [ -f \"{saved}\" ] || sysctl -n {sysctl} > \"{saved}\"\n\
                 sysctl -q -w {sysctl}=1\n\
                 # PostUp adds a FORWARD rule with {tables}.\n\
                 if ! command -v {tables} >/dev/null 2>&1; then\n\
                 \x20 if command -v apt-get >/dev/null 2>&1; then apt-get install -y iptables; else echo \"install {tables}: the hub's PostUp needs it\" >&2; exit 1; fi\n\
                 fi\n"
            ));
        }
        s.push_str(
            "\n# 3. Firewall: open the WireGuard port, and make sure SSH stays open so\n\
             # that enabling a firewall never locks the operator out.\n\
             if command -v ufw >/dev/null 2>&1 && ufw status | grep -q '^Status: active'; then\n\
             \x20 ufw allow 22/tcp\n\
             \x20 ufw allow \"$PORT/udp\" comment \"wgmesh $IFACE\"\n",
        );
        if me.is_hub {
            s.push_str("  ufw route allow in on \"$IFACE\" out on \"$IFACE\"\n");
        }
        s.push_str(
            "elif command -v nft >/dev/null 2>&1 && nft list chain inet filter input >/dev/null 2>&1; then\n\
             \x20 # Debian's /etc/nftables.conf has an `inet filter` table. Accept rules go\n\
             \x20 # first in its chains, and into the file so that they survive a reboot.\n\
             \x20 nft_rule() { # CHAIN COMMENT RULE...\n\
             \x20   chain=$1 comment=$2; shift 2\n\
             \x20   nft list chain inet filter \"$chain\" >/dev/null 2>&1 || return 0\n\
             \x20   nft list chain inet filter \"$chain\" | grep -qF \"comment \\\"$comment\\\"\" ||\n\
             \x20     nft insert rule inet filter \"$chain\" \"$@\" comment \"\\\"$comment\\\"\"\n\
             \x20   if [ -f /etc/nftables.conf ] && ! grep -qF \"comment \\\"$comment\\\"\" /etc/nftables.conf; then\n\
             \x20     echo \"insert rule inet filter $chain $* comment \\\"$comment\\\"\" >> /etc/nftables.conf\n\
             \x20   fi\n\
             \x20 }\n\
             \x20 nft_rule input \"wgmesh ssh\" tcp dport 22 accept\n\
             \x20 nft_rule input \"wgmesh $IFACE udp $PORT\" udp dport \"$PORT\" accept\n",
        );
        if me.is_hub {
            s.push_str(
                "  nft_rule forward \"wgmesh $IFACE forward\" iifname \"$IFACE\" oifname \"$IFACE\" accept\n",
            );
        }
        s.push_str(
            "else\n\
             \x20 echo \"no active ufw and no nftables filter table: nothing blocks UDP $PORT\"\n\
             fi\n\
             \n\
             # 4. Bring the interface up now and at every boot; if it is up already,\n\
             # load the new peers without dropping the tunnels that stay.\n\
             if command -v systemctl >/dev/null 2>&1; then\n\
             \x20 systemctl enable \"wg-quick@$IFACE\"\n\
             \x20 if systemctl is-active --quiet \"wg-quick@$IFACE\"; then\n\
             \x20   stripped=$(mktemp)\n\
             \x20   wg-quick strip \"$IFACE\" > \"$stripped\"\n\
             \x20   wg syncconf \"$IFACE\" \"$stripped\"\n\
             \x20   rm -f \"$stripped\"\n\
             \x20   echo \"wg-quick@$IFACE was running: peers updated (restart it to apply address or MTU changes)\"\n\
             \x20 else\n\
             \x20   systemctl start \"wg-quick@$IFACE\"\n\
             \x20 fi\n\
             else\n\
             \x20 echo \"no systemd: start it with: wg-quick up $IFACE\"\n\
             fi\n",
        );
        Ok(s)
    }
}
