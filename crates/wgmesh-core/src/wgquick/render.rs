//! Writing a [`Config`] back as text, whole (for wg-quick) or stripped to the
//! keys wg(8)'s `setconf` accepts (as `wg-quick strip` does).

use std::fmt::{Display, Write as _};

use super::{Config, Interface, Peer};

/// The whole wg-quick file.
pub fn render(config: &Config) -> String {
    render_with(config, true)
}

/// Only what `wg setconf` reads: no Address, DNS, MTU, Table, hooks or
/// SaveConfig.
pub fn render_stripped(config: &Config) -> String {
    render_with(config, false)
}

fn render_with(config: &Config, wg_quick: bool) -> String {
    let mut out = String::new();
    interface(&mut out, &config.interface, wg_quick);
    for peer in &config.peers {
        out.push('\n');
        self::peer(&mut out, peer);
    }
    out
}

fn line(out: &mut String, key: &str, value: impl Display) {
    writeln!(out, "{key} = {value}").expect("writing to a String cannot fail");
}

fn list<T: Display>(out: &mut String, key: &str, items: &[T]) {
    if !items.is_empty() {
        let joined: Vec<String> = items.iter().map(ToString::to_string).collect();
        line(out, key, joined.join(", "));
    }
}

fn interface(out: &mut String, i: &Interface, wg_quick: bool) {
    out.push_str("[Interface]\n");
    if let Some(k) = &i.private_key {
        line(out, "PrivateKey", k.to_base64().as_str());
    }
    if let Some(port) = i.listen_port {
        line(out, "ListenPort", port);
    }
    if let Some(mark) = i.fwmark {
        line(out, "FwMark", format_args!("{mark:#x}"));
    }
    if !wg_quick {
        return;
    }
    list(out, "Address", &i.addresses);
    list(out, "DNS", &i.dns);
    if let Some(mtu) = i.mtu {
        line(out, "MTU", mtu);
    }
    if let Some(table) = &i.table {
        line(out, "Table", table);
    }
    for (key, hooks) in [
        ("PreUp", &i.pre_up),
        ("PostUp", &i.post_up),
        ("PreDown", &i.pre_down),
        ("PostDown", &i.post_down),
    ] {
        for hook in hooks {
            line(out, key, hook);
        }
    }
    if let Some(save) = i.save_config {
        line(out, "SaveConfig", save);
    }
}

fn peer(out: &mut String, p: &Peer) {
    if let Some(name) = &p.name {
        // A name is one comment line; a line break would end it early.
        writeln!(out, "# {}", name.replace(['\r', '\n'], " "))
            .expect("writing to a String cannot fail");
    }
    out.push_str("[Peer]\n");
    line(out, "PublicKey", p.public_key);
    if let Some(psk) = &p.preshared_key {
        line(out, "PresharedKey", psk.to_base64().as_str());
    }
    list(out, "AllowedIPs", &p.allowed_ips);
    if let Some(endpoint) = &p.endpoint {
        line(out, "Endpoint", endpoint);
    }
    if let Some(keepalive) = p.persistent_keepalive {
        line(out, "PersistentKeepalive", keepalive);
    }
}
