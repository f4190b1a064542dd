//! Where this node can be reached: the host's own addresses (local
//! candidates) and what a STUN server sees as the source of the engine's
//! socket (the reflexive candidate, RFC 8489 §6 Binding), for the
//! [`EndpointReport`](wgmesh_core::control::EndpointReport) the server
//! turns into the other nodes' endpoint lists.
//!
//! Local addresses come from `ip -j address show` (iproute2's JSON):
//! global-scope addresses of every interface but loopback and the mesh's
//! own TUN. The STUN exchange goes through the engine's UDP socket
//! ([`Interface::send_foreign`], answers arriving through
//! `InterfaceConfig::on_foreign`), so the reflexive address is that of the
//! NAT mapping WireGuard's own packets use. Sending, waiting and retrying
//! are here; the STUN codec is `wgmesh_proto::stun`'s.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::mpsc;
use wgmesh_dataplane::Interface;
use wgmesh_proto::stun::{self, TransactionId};

/// The STUN port (RFC 8489 §18.6), where the coordination server answers.
pub const STUN_PORT: u16 = 3478;

/// How long one Binding request waits for its response, and how many are
/// sent (RFC 8489 §6.2.1 retransmits over ~40 s; an agent that reports
/// every minute only needs a quick answer or none).
const STUN_WAIT: Duration = Duration::from_millis(1500);
const STUN_TRIES: usize = 3;

#[derive(Debug, Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Debug, Deserialize)]
struct IpAddrInfo {
    local: Option<IpAddr>,
    #[serde(default)]
    scope: String,
}

/// The global-scope addresses in `ip -j address show`'s output, leaving
/// out loopback and `exclude` (the mesh's TUN). Output that does not parse
/// gives none.
pub fn parse_ip_addr_json(json: &str, exclude: &str) -> Vec<IpAddr> {
    let Ok(links) = serde_json::from_str::<Vec<IpLink>>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for link in links {
        if link.ifname == "lo" || link.ifname == exclude {
            continue;
        }
        for info in link.addr_info {
            let Some(ip) = info.local else { continue };
            // Link-local addresses need a scope id no peer knows;
            // host-scope ones are not reachable from elsewhere.
            if info.scope != "global" || ip.is_loopback() || ip.is_unspecified() {
                continue;
            }
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
    }
    out
}

/// This host's local candidates: its addresses with the engine's port.
pub async fn local_endpoints(tun: &str, port: u16) -> Vec<SocketAddr> {
    let tun = tun.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        wgmesh_dataplane::netconf::ip(&["-j", "address", "show"])
            .map(|json| parse_ip_addr_json(&json, &tun))
    })
    .await;
    match out {
        Ok(Ok(ips)) => ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect(),
        Ok(Err(e)) => {
            eprintln!("wgmesh: cannot list the host's addresses: {e}");
            Vec::new()
        }
        Err(e) => {
            eprintln!("wgmesh: cannot list the host's addresses: {e}");
            Vec::new()
        }
    }
}

/// Plain IPv4 for an IPv4-mapped IPv6 address.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// Asks the STUN server at `server` for the engine socket's reflexive
/// address; `None` if no valid answer came. `replies` carries what the
/// engine's `on_foreign` handler received; stale ones are skipped.
pub async fn reflexive(
    iface: &Interface,
    server: SocketAddr,
    replies: &mut mpsc::Receiver<(SocketAddr, Vec<u8>)>,
) -> Option<SocketAddr> {
    for _ in 0..STUN_TRIES {
        let mut id = [0u8; 12];
        if let Err(e) = getrandom::fill(&mut id) {
            eprintln!("wgmesh: STUN: no randomness for a transaction id: {e}");
            return None;
        }
        let txid = TransactionId(id);
        if let Err(e) = iface.send_foreign(server, &stun::binding_request(txid)) {
            eprintln!("wgmesh: STUN request to {server} not sent: {e}");
            return None;
        }
        let deadline = tokio::time::Instant::now() + STUN_WAIT;
        loop {
            let got = tokio::time::timeout_at(deadline, replies.recv()).await;
            let (from, bytes) = match got {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(_) => break,
            };
            if canonical(from) != canonical(server) {
                continue;
            }
            match stun::parse_binding_response(&bytes) {
                Ok((t, mapped)) if t == txid => return Some(canonical(mapped)),
                Ok(_) => {}
                Err(e) => eprintln!("wgmesh: STUN reply from {from} dropped: {e}"),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_J: &str = r#"[
      {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"addr_info":[
        {"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"},
        {"family":"inet6","local":"::1","prefixlen":128,"scope":"host"}]},
      {"ifindex":2,"ifname":"eth0","addr_info":[
        {"family":"inet","local":"192.0.2.10","prefixlen":24,"scope":"global"},
        {"family":"inet6","local":"2001:db8::10","prefixlen":64,"scope":"global"},
        {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]},
      {"ifindex":3,"ifname":"wgmesh0","addr_info":[
        {"family":"inet","local":"100.64.0.1","prefixlen":10,"scope":"global"}]},
      {"ifindex":4,"ifname":"eth1"}
    ]"#;

    #[test]
    fn global_addresses_but_loopback_and_the_tun() {
        let ips = parse_ip_addr_json(IP_J, "wgmesh0");
        let want: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        assert_eq!(ips, want);
        assert!(parse_ip_addr_json("not json", "wgmesh0").is_empty());
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let a: SocketAddr = "[::ffff:192.0.2.1]:5".parse().unwrap();
        assert_eq!(canonical(a), "192.0.2.1:5".parse::<SocketAddr>().unwrap());
        let b: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        assert_eq!(canonical(b), b);
    }
}
