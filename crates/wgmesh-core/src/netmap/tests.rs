#![allow(clippy::unwrap_used)] // test helpers: a panic names the line that failed

use std::net::{IpAddr, SocketAddr};

use super::compile::{NAT_KEEPALIVE, NetworkView, NodeView, full_map, peer_entry};
use super::policy::{Action, FilterRule, Policy, PolicyError, Proto, decide};
use super::*;
use crate::key::PrivateKey;

fn key(n: u8) -> PublicKey {
    PrivateKey::from_bytes([n; 32]).public_key()
}

struct N {
    name: &'static str,
    key: PublicKey,
    addr: IpAddr,
    groups: Vec<String>,
    eps: Vec<SocketAddr>,
    reachable: bool,
    hub: bool,
    via_hub: bool,
}

impl N {
    fn new(n: u8, name: &'static str, reachable: bool, hub: bool) -> Self {
        Self {
            name,
            key: key(n),
            addr: format!("100.64.0.{n}").parse().unwrap(),
            groups: vec!["all".into()],
            eps: vec![format!("192.0.2.{n}:51820").parse().unwrap()],
            reachable,
            hub,
            via_hub: false,
        }
    }
    fn view(&self) -> NodeView<'_> {
        NodeView {
            name: self.name,
            public_key: self.key,
            address: self.addr,
            groups: &self.groups,
            endpoints: &self.eps,
            reachable: self.reachable,
            nat: None,
            hub: self.hub,
            via_hub: self.via_hub,
        }
    }
}

fn net<'a>(policy: &'a Policy, hub: Option<PublicKey>) -> NetworkView<'a> {
    NetworkView {
        name: "seed",
        overlay: "100.64.0.0/24".parse().unwrap(),
        policy,
        primary_hub: hub,
        hub_and_spoke: false,
        relays: false,
    }
}

#[test]
fn seed_topology_routes_natted_pairs_through_the_hub() {
    let p = Policy::default();
    let nyc = N::new(1, "nyc", true, true);
    let lax = N::new(2, "lax", true, false);
    let lab = N::new(3, "lab", false, false);
    let home = N::new(4, "home", false, false);
    let n = net(&p, Some(nyc.key));

    // lab (NAT) → nyc (primary hub): the whole overlay, lab dials.
    let e = peer_entry(&lab.view(), &nyc.view(), &n).unwrap();
    assert_eq!(
        e.allowed_ips,
        vec!["100.64.0.0/24".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        e.route,
        Route::Direct {
            keepalive: Some(NAT_KEEPALIVE)
        }
    );
    // lab → lax: direct, lab dials lax's public endpoint.
    let e = peer_entry(&lab.view(), &lax.view(), &n).unwrap();
    assert_eq!(
        e.allowed_ips,
        vec!["100.64.0.2/32".parse::<IpNet>().unwrap()]
    );
    assert_eq!(
        e.route,
        Route::Direct {
            keepalive: Some(NAT_KEEPALIVE)
        }
    );
    // lax → lab: direct, no keepalive (lab dials).
    let e = peer_entry(&lax.view(), &lab.view(), &n).unwrap();
    assert_eq!(e.route, Route::Direct { keepalive: None });
    // lab → home: both behind NAT, through nyc.
    let e = peer_entry(&lab.view(), &home.view(), &n).unwrap();
    assert_eq!(e.route, Route::ViaHub { hub: nyc.key });
    assert!(e.allowed_ips.is_empty());
    // nyc (hub) → lab: /32.
    let e = peer_entry(&nyc.view(), &lab.view(), &n).unwrap();
    assert_eq!(
        e.allowed_ips,
        vec!["100.64.0.3/32".parse::<IpNet>().unwrap()]
    );

    let nodes = [nyc.view(), lax.view(), lab.view(), home.view()];
    let m = full_map(&lab.view(), nodes.iter(), &n, 7);
    assert_eq!(m.version, 7);
    assert_eq!(m.peers.len(), 3);
    assert_eq!(m.node.address.to_string(), "100.64.0.3/24");
    assert!(
        m.peers
            .windows(2)
            .all(|w| w[0].public_key < w[1].public_key)
    );
}

#[test]
fn natted_pair_without_a_hub_gets_endpoints_and_keepalive() {
    let p = Policy::default();
    let a = N::new(1, "a", false, false);
    let b = N::new(2, "b", false, false);
    let e = peer_entry(&a.view(), &b.view(), &net(&p, None)).unwrap();
    assert_eq!(
        e.route,
        Route::Direct {
            keepalive: Some(NAT_KEEPALIVE)
        }
    );
    assert_eq!(e.endpoints, b.eps);
}

#[test]
fn policy_hides_pairs_with_nothing_allowed_but_keeps_hubs() {
    let p = Policy::from_toml(
        r#"
default = "deny"
[[rule]]
action = "allow"
from = ["node:a"]
to = ["group:web"]
proto = "tcp"
ports = ["443"]
"#,
    )
    .unwrap();
    let a = N::new(1, "a", true, false);
    let mut b = N::new(2, "b", true, false);
    let c = N::new(3, "c", true, false);
    let hub = N::new(4, "hub", true, true);
    b.groups = vec!["web".into()];
    let n = net(&p, Some(hub.key));
    // a → b allowed on tcp/443: both see each other (b needs a to reply).
    let ab = peer_entry(&a.view(), &b.view(), &n).unwrap();
    assert!(
        ab.inbound.is_empty(),
        "nothing b sends to a is allowed by a rule"
    );
    let ba = peer_entry(&b.view(), &a.view(), &n).unwrap();
    assert_eq!(
        ba.inbound,
        vec![FilterRule {
            action: Action::Allow,
            proto: Proto::Tcp,
            ports: Some("443".parse().unwrap())
        }]
    );
    // a and c: nothing allowed either way.
    assert!(peer_entry(&a.view(), &c.view(), &n).is_none());
    assert!(peer_entry(&c.view(), &a.view(), &n).is_none());
    // The hub stays in everyone's map, and everyone in the hub's.
    assert!(peer_entry(&c.view(), &hub.view(), &n).is_some());
    assert!(peer_entry(&hub.view(), &c.view(), &n).is_some());
}

#[test]
fn first_matching_rule_decides() {
    let p = Policy::from_toml(
        r#"
default = "allow"
[[rule]]
action = "deny"
from = ["node:lab"]
to = ["node:lax"]
proto = "tcp"
ports = ["22"]
"#,
    )
    .unwrap();
    let lab = N::new(3, "lab", false, false);
    let lax = N::new(2, "lax", true, false);
    let rules = p.rules_between(&lab.view_facts(), &lax.view_facts());
    assert_eq!(
        decide(&rules, p.default, Proto::TCP, Some(22)),
        Action::Deny
    );
    assert_eq!(
        decide(&rules, p.default, Proto::TCP, Some(23)),
        Action::Allow
    );
    assert_eq!(
        decide(&rules, p.default, Proto::UDP, Some(22)),
        Action::Allow
    );
    assert_eq!(decide(&rules, p.default, Proto::ICMP, None), Action::Allow);
    // The other direction has no rule.
    assert!(
        p.rules_between(&lax.view_facts(), &lab.view_facts())
            .is_empty()
    );
}

impl N {
    fn view_facts(&self) -> policy::NodeFacts<'_> {
        policy::NodeFacts {
            name: self.name,
            groups: &self.groups,
        }
    }
}

#[test]
fn bad_policies_are_refused_with_the_reason() {
    type Check = fn(&PolicyError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("default = \"maybe\"", |e| matches!(e, PolicyError::Toml(_))),
        (
            "default = \"allow\"\n[[rule]]\naction = \"deny\"\nfrom = [\"lab\"]\nto = [\"*\"]",
            |e| matches!(e, PolicyError::Toml(m) if m.contains("node:NAME")),
        ),
        (
            "default = \"allow\"\n[[rule]]\naction = \"deny\"\nfrom = [\"*\"]\nto = [\"*\"]\nproto = \"icmp\"\nports = [\"22\"]",
            |e| matches!(e, PolicyError::PortsWithoutTransport { index: 1 }),
        ),
        (
            "default = \"allow\"\n[[rule]]\naction = \"deny\"\nfrom = []\nto = [\"*\"]",
            |e| matches!(e, PolicyError::EmptySide { index: 1 }),
        ),
        (
            "default = \"allow\"\n[[rule]]\naction = \"deny\"\nfrom = [\"*\"]\nto = [\"*\"]\nproto = \"tcp\"\nports = [\"30-20\"]",
            |e| matches!(e, PolicyError::Toml(m) if m.contains("port range")),
        ),
        ("default = \"allow\"\nextra = 1", |e| {
            matches!(e, PolicyError::Toml(_))
        }),
    ];
    for (text, ok) in cases {
        let e = Policy::from_toml(text).unwrap_err();
        assert!(ok(&e), "{text:?} gave {e:?}");
    }
}

#[test]
fn policy_round_trips_through_toml() {
    let text = "default = \"deny\"\n[[rule]]\naction = \"allow\"\nfrom = [\"group:ops\", \"node:a\"]\nto = [\"*\"]\nproto = \"udp\"\nports = [\"53\", \"8000-8099\"]\n";
    let p = Policy::from_toml(text).unwrap();
    assert_eq!(Policy::from_toml(&p.to_toml()).unwrap(), p);
}

#[test]
fn deltas_apply_in_order_and_refuse_the_wrong_version() {
    let p = Policy::default();
    let a = N::new(1, "a", true, false);
    let b = N::new(2, "b", true, false);
    let c = N::new(3, "c", true, false);
    let n = net(&p, None);
    let nodes = [a.view(), b.view()];
    let mut m = full_map(&a.view(), nodes.iter(), &n, 1);
    let delta = MapDelta {
        from_version: 1,
        version: 2,
        upsert: vec![peer_entry(&a.view(), &c.view(), &n).unwrap()],
        remove: vec![b.key],
    };
    m.apply(&delta).unwrap();
    assert_eq!(m.version, 2);
    assert_eq!(
        m.peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["c"]
    );
    assert_eq!(
        m.apply(&delta),
        Err(ApplyError::VersionMismatch { have: 2, delta: 1 })
    );
    let json = serde_json::to_string(&MapUpdate::Delta(delta.clone())).unwrap();
    assert_eq!(
        serde_json::from_str::<MapUpdate>(&json).unwrap(),
        MapUpdate::Delta(delta)
    );
}

#[test]
fn hub_and_spoke_sends_spoke_pairs_through_the_hub() {
    let p = Policy::default();
    let hub = N::new(1, "hub", true, true);
    let a = N::new(2, "a", true, false);
    let b = N::new(3, "b", true, false);
    let mut n = net(&p, Some(hub.key));
    n.hub_and_spoke = true;
    let e = peer_entry(&a.view(), &b.view(), &n).unwrap();
    assert_eq!(e.route, Route::ViaHub { hub: hub.key });
    n.primary_hub = None;
    assert!(peer_entry(&a.view(), &b.view(), &n).is_none());
}

#[test]
fn a_via_hub_node_reaches_non_hubs_through_the_hub() {
    let p = Policy::default();
    let nyc = N::new(1, "nyc", true, true);
    let lax = N::new(2, "lax", true, false);
    let mut lab = N::new(3, "lab", false, false);
    lab.via_hub = true;
    let n = net(&p, Some(nyc.key));
    // The seed plan: lax reaches lab through nyc, and lab lax.
    assert_eq!(
        peer_entry(&lax.view(), &lab.view(), &n).unwrap().route,
        Route::ViaHub { hub: nyc.key }
    );
    assert_eq!(
        peer_entry(&lab.view(), &lax.view(), &n).unwrap().route,
        Route::ViaHub { hub: nyc.key }
    );
    // … and peers with the hub directly.
    assert!(matches!(
        peer_entry(&lab.view(), &nyc.view(), &n).unwrap().route,
        Route::Direct { .. }
    ));
    assert!(matches!(
        peer_entry(&nyc.view(), &lab.view(), &n).unwrap().route,
        Route::Direct { .. }
    ));
    // With no hub, via_hub cannot apply: direct where possible.
    let n = net(&p, None);
    assert!(matches!(
        peer_entry(&lax.view(), &lab.view(), &n).unwrap().route,
        Route::Direct { .. }
    ));
}

#[test]
fn with_a_relay_natted_pairs_peer_directly_except_through_forced_hubs() {
    let p = Policy::default();
    let nyc = N::new(1, "nyc", true, true);
    let lax = N::new(2, "lax", true, false);
    let lab = N::new(3, "lab", false, false);
    let home = N::new(4, "home", false, false);
    let mut n = net(&p, Some(nyc.key));
    n.relays = true;

    // Both behind NAT: each other's endpoints, both send keepalives, and
    // the host route (not through the hub).
    for (me, other) in [(&lab, &home), (&home, &lab)] {
        let e = peer_entry(&me.view(), &other.view(), &n).unwrap();
        assert_eq!(
            e.route,
            Route::Direct {
                keepalive: Some(NAT_KEEPALIVE)
            }
        );
        assert_eq!(e.allowed_ips, vec![IpNet::from(other.addr)]);
        assert_eq!(e.endpoints, other.eps);
    }
    // Pairs with a reachable side and with the hub are as without relays.
    let without = net(&p, Some(nyc.key));
    for (me, other) in [(&lab, &lax), (&lax, &lab), (&lab, &nyc), (&nyc, &lab)] {
        assert_eq!(
            peer_entry(&me.view(), &other.view(), &n),
            peer_entry(&me.view(), &other.view(), &without)
        );
    }
    // Without a relay the same pair goes through the hub.
    assert_eq!(
        peer_entry(&lab.view(), &home.view(), &without)
            .unwrap()
            .route,
        Route::ViaHub { hub: nyc.key }
    );
    // A full map lists no relays of its own: the server adds them.
    let nodes = [nyc.view(), lax.view(), lab.view(), home.view()];
    assert!(full_map(&lab.view(), nodes.iter(), &n, 1).relays.is_empty());

    // A via_hub node still goes through the hub, relay or not.
    let mut lab_via = N::new(3, "lab", false, false);
    lab_via.via_hub = true;
    for (me, other) in [(&lab_via, &home), (&home, &lab_via)] {
        assert_eq!(
            peer_entry(&me.view(), &other.view(), &n).unwrap().route,
            Route::ViaHub { hub: nyc.key }
        );
    }
    // So do spokes of a hub-and-spoke network; with no hub they have no
    // path at all, relay or not.
    let mut hs = n;
    hs.hub_and_spoke = true;
    assert_eq!(
        peer_entry(&lab.view(), &home.view(), &hs).unwrap().route,
        Route::ViaHub { hub: nyc.key }
    );
    hs.primary_hub = None;
    assert!(peer_entry(&lab.view(), &home.view(), &hs).is_none());

    // With a relay and no hub: direct with keepalives, as before.
    let mut no_hub = net(&p, None);
    no_hub.relays = true;
    assert_eq!(
        peer_entry(&lab.view(), &home.view(), &no_hub)
            .unwrap()
            .route,
        Route::Direct {
            keepalive: Some(NAT_KEEPALIVE)
        }
    );
}

#[test]
fn maps_carry_relays_and_old_maps_without_them_still_parse() {
    let p = Policy::default();
    let a = N::new(1, "a", true, false);
    let mut m = full_map(&a.view(), [a.view()].iter(), &net(&p, None), 1);
    m.relays.push(MapRelay {
        name: "r1".into(),
        public_key: key(9),
        udp: "192.0.2.50:3478".parse().unwrap(),
        ws_url: Some("wss://relay.example/relay".into()),
    });
    let json = serde_json::to_value(&m).unwrap();
    assert_eq!(json["relays"][0]["udp"], "192.0.2.50:3478");
    assert_eq!(
        serde_json::from_value::<NetworkMap>(json.clone()).unwrap(),
        m
    );
    let mut old = json;
    old.as_object_mut().unwrap().remove("relays");
    assert!(
        serde_json::from_value::<NetworkMap>(old)
            .unwrap()
            .relays
            .is_empty()
    );
}
