//! From network maps to WireGuard configuration: the one `set` that takes
//! the device from what the previous map configured to what the new map
//! says, touching only the peers that changed.
//!
//! A peer left alone keeps its sessions (no new handshake) and the
//! endpoint WireGuard learned by roaming (WireGuard paper §2.1: a peer's
//! endpoint follows the source of its authenticated packets). So:
//! - a peer with [`Route::Direct`] in the new map and not (or not
//!   directly) in the old one is added: AllowedIPs, the first endpoint of
//!   its list (best first), its persistent keepalive;
//! - one that stays direct gets only the fields that changed: its
//!   AllowedIPs replaced if the list changed, its endpoint set only if the
//!   map's endpoint list changed (and has one), the keepalive if it changed;
//! - one that is gone, or now goes [`Route::ViaHub`], is removed (a peer
//!   reached through a hub is not a WireGuard peer of this node);
//! - removals come first, so that AllowedIPs a removed peer held are free
//!   for the peers added after it.
//!
//! Pure: no IO. The private key and listen port are set once when the
//! engine starts ([`crate::run`]), not here.

use std::collections::BTreeMap;

use wgmesh_core::key::PublicKey;
use wgmesh_core::netmap::{MapPeer, NetworkMap, Route};
use wgmesh_proto::uapi::{PeerChange, SetCommand};

/// The WireGuard-relevant part of a map peer.
#[derive(Debug, PartialEq, Eq)]
struct Wg<'a> {
    allowed_ips: &'a [ipnet::IpNet],
    endpoints: &'a [std::net::SocketAddr],
    keepalive: u16,
}

fn wg_view(p: &MapPeer) -> Option<Wg<'_>> {
    match p.route {
        Route::Direct { keepalive } => Some(Wg {
            allowed_ips: &p.allowed_ips,
            endpoints: &p.endpoints,
            keepalive: keepalive.unwrap_or(0),
        }),
        Route::ViaHub { .. } => None,
    }
}

fn direct_peers(map: Option<&NetworkMap>) -> BTreeMap<PublicKey, Wg<'_>> {
    map.map(|m| {
        m.peers
            .iter()
            .filter_map(|p| wg_view(p).map(|w| (p.public_key, w)))
            .collect()
    })
    .unwrap_or_default()
}

/// The `set` that takes a device configured from `old` (or with no peers,
/// for `None`) to `new`. Empty (`peers` empty) when nothing changed.
pub fn diff(old: Option<&NetworkMap>, new: &NetworkMap) -> SetCommand {
    let before = direct_peers(old);
    let after = direct_peers(Some(new));
    let mut peers = Vec::new();
    for key in before.keys().filter(|k| !after.contains_key(k)) {
        let mut change = PeerChange::new(*key);
        change.remove = true;
        peers.push(change);
    }
    for (key, want) in &after {
        let mut change = PeerChange::new(*key);
        match before.get(key) {
            None => {
                change.endpoint = want.endpoints.first().copied();
                if want.keepalive != 0 {
                    change.persistent_keepalive = Some(want.keepalive);
                }
                change.replace_allowed_ips = true;
                change.allowed_ips = want.allowed_ips.to_vec();
            }
            Some(had) if had == want => continue,
            Some(had) => {
                if had.endpoints != want.endpoints {
                    change.endpoint = want.endpoints.first().copied();
                }
                if had.keepalive != want.keepalive {
                    change.persistent_keepalive = Some(want.keepalive);
                }
                if had.allowed_ips != want.allowed_ips {
                    change.replace_allowed_ips = true;
                    change.allowed_ips = want.allowed_ips.to_vec();
                }
                // Only the endpoint list changed, and it is now empty:
                // nothing to tell WireGuard (it keeps what it learned).
                if change == PeerChange::new(*key) {
                    continue;
                }
            }
        }
        peers.push(change);
    }
    SetCommand {
        peers,
        ..SetCommand::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::{Instant, SystemTime};

    use ipnet::IpNet;
    use proptest::prelude::*;
    use wgmesh_core::key::PrivateKey;
    use wgmesh_core::netmap::{Action, SelfNode};
    use wgmesh_proto::device::Device;

    use super::*;

    pub(crate) fn key(i: u8) -> PublicKey {
        PrivateKey::from_bytes([i.max(1); 32]).public_key()
    }

    fn addr(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(100, 64, 0, i))
    }

    pub(crate) fn peer(i: u8) -> MapPeer {
        MapPeer {
            name: format!("n{i}"),
            public_key: key(i),
            address: addr(i),
            allowed_ips: vec![IpNet::from(addr(i))],
            endpoints: vec![SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, i)),
                51820,
            )],
            route: Route::Direct { keepalive: None },
            nat: None,
            inbound: Vec::new(),
        }
    }

    /// A map at `version` for node 0 with the peers `ids`.
    pub(crate) fn map(version: u64, ids: &[u8]) -> NetworkMap {
        let mut peers: Vec<MapPeer> = ids.iter().map(|&i| peer(i)).collect();
        peers.sort_by_key(|p| p.public_key);
        NetworkMap {
            network: "net".into(),
            version,
            overlay: "100.64.0.0/10".parse().unwrap(),
            node: SelfNode {
                name: "me".into(),
                public_key: key(200),
                address: "100.64.0.200/10".parse().unwrap(),
                hub: false,
            },
            peers,
            default_action: Action::Allow,
            relays: Vec::new(),
        }
    }

    fn with(mut m: NetworkMap, i: u8, f: impl FnOnce(&mut MapPeer)) -> NetworkMap {
        let p = m.peers.iter_mut().find(|p| p.public_key == key(i)).unwrap();
        f(p);
        m
    }

    #[test]
    fn fresh_map_adds_every_direct_peer() {
        let m = with(map(1, &[1, 2, 3]), 3, |p| {
            p.route = Route::ViaHub { hub: key(1) };
            p.allowed_ips.clear();
        });
        let m = with(m, 2, |p| {
            p.route = Route::Direct {
                keepalive: Some(25),
            }
        });
        let cmd = diff(None, &m);
        assert!(!cmd.replace_peers);
        assert!(cmd.private_key.is_none() && cmd.listen_port.is_none());
        let mut keys: Vec<_> = cmd.peers.iter().map(|c| c.public_key).collect();
        keys.sort();
        let mut want = vec![key(1), key(2)];
        want.sort();
        assert_eq!(keys, want);
        let p2 = cmd.peers.iter().find(|c| c.public_key == key(2)).unwrap();
        assert_eq!(p2.persistent_keepalive, Some(25));
        assert_eq!(p2.endpoint, Some("192.0.2.2:51820".parse().unwrap()));
        assert!(p2.replace_allowed_ips);
        assert_eq!(
            p2.allowed_ips,
            vec!["100.64.0.2/32".parse::<IpNet>().unwrap()]
        );
        let p1 = cmd.peers.iter().find(|c| c.public_key == key(1)).unwrap();
        assert_eq!(p1.persistent_keepalive, None);
    }

    #[test]
    fn same_map_changes_nothing() {
        let m = map(1, &[1, 2, 3]);
        let mut later = with(m.clone(), 1, |p| p.name = "renamed".into());
        later.version = 9;
        assert!(diff(Some(&m), &later).peers.is_empty());
    }

    #[test]
    fn only_changed_fields_are_sent() {
        let old = map(1, &[1, 2, 3, 4]);
        // 1: new endpoint list; 2: new keepalive; 3: new AllowedIPs;
        // 4: only its name and filter rules changed.
        let new = with(old.clone(), 1, |p| {
            p.endpoints.insert(0, "203.0.113.1:4000".parse().unwrap());
        });
        let new = with(new, 2, |p| {
            p.route = Route::Direct {
                keepalive: Some(25),
            }
        });
        let new = with(new, 3, |p| {
            p.allowed_ips.push("10.9.0.0/16".parse().unwrap())
        });
        let new = with(new, 4, |p| p.name = "renamed".into());
        let cmd = diff(Some(&old), &new);
        assert_eq!(cmd.peers.len(), 3, "{cmd:?}");
        let get = |i| cmd.peers.iter().find(|c| c.public_key == key(i)).unwrap();
        let c1 = get(1);
        assert_eq!(c1.endpoint, Some("203.0.113.1:4000".parse().unwrap()));
        assert!(!c1.replace_allowed_ips && c1.persistent_keepalive.is_none());
        let c2 = get(2);
        assert_eq!(c2.persistent_keepalive, Some(25));
        assert!(c2.endpoint.is_none() && !c2.replace_allowed_ips);
        let c3 = get(3);
        assert!(c3.replace_allowed_ips && c3.endpoint.is_none());
        assert_eq!(c3.allowed_ips.len(), 2);
        // Keepalive turned off again is sent as 0.
        let off = diff(Some(&new), &old);
        assert_eq!(
            off.peers
                .iter()
                .find(|c| c.public_key == key(2))
                .unwrap()
                .persistent_keepalive,
            Some(0)
        );
    }

    #[test]
    fn gone_and_via_hub_peers_are_removed_first() {
        let old = map(1, &[1, 2, 3]);
        let mut new = with(old.clone(), 2, |p| {
            p.route = Route::ViaHub { hub: key(1) };
            p.allowed_ips.clear();
        });
        new.peers.retain(|p| p.public_key != key(3));
        new.peers.push(peer(4));
        new.peers.sort_by_key(|p| p.public_key);
        let cmd = diff(Some(&old), &new);
        let removed: Vec<_> = cmd
            .peers
            .iter()
            .take_while(|c| c.remove)
            .map(|c| c.public_key)
            .collect();
        assert_eq!(removed.len(), 2);
        assert!(removed.contains(&key(2)) && removed.contains(&key(3)));
        assert_eq!(cmd.peers.len(), 3);
        assert_eq!(cmd.peers[2].public_key, key(4));
        assert!(!cmd.peers[2].remove);
    }

    #[test]
    fn an_emptied_endpoint_list_leaves_the_endpoint_alone() {
        let old = map(1, &[1]);
        let new = with(old.clone(), 1, |p| p.endpoints.clear());
        assert!(diff(Some(&old), &new).peers.is_empty());
    }

    /// The device's view of its peers, in a comparable form.
    fn peers_of(dev: &Device) -> Vec<(PublicKey, Option<SocketAddr>, u16, Vec<IpNet>)> {
        let snap = dev.snapshot(Instant::now(), SystemTime::now());
        let mut v: Vec<_> = snap
            .peers
            .into_iter()
            .map(|p| {
                let mut ips = p.allowed_ips;
                ips.sort();
                (p.public_key, p.endpoint, p.persistent_keepalive, ips)
            })
            .collect();
        v.sort_by_key(|p| p.0);
        v
    }

    /// A map from a list of (peer id, variant) choices: ids in 1..8,
    /// each with one of a few routes, AllowedIPs and endpoint lists.
    fn arb_map() -> impl Strategy<Value = NetworkMap> {
        proptest::collection::btree_map(1u8..8, (0u8..3, 0u8..3, 0u8..3, 0u8..3), 0..7).prop_map(
            |choices| {
                let mut m = map(0, &[]);
                for (id, (route, ka, ips, eps)) in choices {
                    let mut p = peer(id);
                    p.route = match route {
                        0 => Route::Direct { keepalive: None },
                        1 => Route::Direct {
                            keepalive: Some(25 + u16::from(ka)),
                        },
                        _ => Route::ViaHub { hub: key(1) },
                    };
                    if ips == 1 {
                        p.allowed_ips
                            .push(format!("10.{id}.0.0/16").parse().unwrap());
                    } else if ips == 2 {
                        p.allowed_ips = vec![format!("10.{id}.{id}.0/24").parse().unwrap()];
                    }
                    match eps {
                        0 => {}
                        1 => p.endpoints.insert(
                            0,
                            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, id)), 1000),
                        ),
                        // Never empty: an emptied list keeps the old endpoint by design.
                        _ => p.endpoints.reverse(),
                    }
                    if matches!(p.route, Route::ViaHub { .. }) {
                        p.allowed_ips.clear();
                    }
                    m.peers.push(p);
                }
                m.peers.sort_by_key(|p| p.public_key);
                m
            },
        )
    }

    proptest! {
        /// Applying the diffs of a sequence of maps one after another
        /// leaves the device exactly as applying the last map fresh.
        #[test]
        fn diffs_in_sequence_equal_the_last_map_fresh(maps in proptest::collection::vec(arb_map(), 1..6)) {
            let now = Instant::now();
            let mut dev = Device::new();
            let mut prev: Option<&NetworkMap> = None;
            for m in &maps {
                dev.apply(now, &diff(prev, m)).unwrap();
                prev = Some(m);
            }
            let last = maps.last().unwrap();
            let mut fresh = Device::new();
            fresh.apply(now, &diff(None, last)).unwrap();
            prop_assert_eq!(peers_of(&dev), peers_of(&fresh));
            // And that is what the map says.
            let want: Vec<_> = {
                let mut v: Vec<_> = last.peers.iter().filter_map(|p| match p.route {
                    Route::Direct { keepalive } => {
                        let mut ips: Vec<IpNet> = p.allowed_ips.iter().map(IpNet::trunc).collect();
                        ips.sort();
                        Some((p.public_key, p.endpoints.first().copied(), keepalive.unwrap_or(0), ips))
                    }
                    Route::ViaHub { .. } => None,
                }).collect();
                v.sort_by_key(|p| p.0);
                v
            };
            prop_assert_eq!(peers_of(&fresh), want);
            // And re-applying the last map changes nothing.
            prop_assert!(diff(Some(last), last).peers.is_empty());
        }
    }
}
