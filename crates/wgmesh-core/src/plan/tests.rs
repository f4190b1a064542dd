use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;

use super::*;
use crate::key::PrivateKey;
use crate::wgquick;

const SEED: &str = include_str!("../../../../examples/seed-mesh.toml");

fn plan(text: &str) -> Result<Plan, PlanError> {
    compile(&MeshSpec::parse(text)?, &BTreeMap::new())
}

fn net(s: &str) -> IpNet {
    s.parse().expect("test CIDR")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn peer<'a>(plan: &'a Plan, node: &str, peer: &str) -> Option<&'a PeerPlan> {
    plan.node(node)
        .expect("node exists")
        .peers
        .iter()
        .find(|p| p.node == peer)
}

/// Keys for every node: made-up private keys, derived from the index.
fn keys(plan: &Plan) -> BTreeMap<String, NodeKey> {
    plan.nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut b = [0u8; 32];
            b[1] = i as u8 + 1;
            b[2] = (i >> 8) as u8;
            (n.name.clone(), NodeKey::Private(PrivateKey::from_random(b)))
        })
        .collect()
}

fn mesh(topology: &str, hubs: &[&str], nodes: &[(&str, bool)]) -> String {
    let mut s = format!(
        "[network]\nname = \"t\"\ncidr = \"10.20.0.0/24\"\ntopology = \"{topology}\"\nhubs = {hubs:?}\n"
    );
    for (i, (name, public)) in nodes.iter().enumerate() {
        s += &format!("[[node]]\nname = \"{name}\"\n");
        if *public {
            s += &format!("endpoint = \"192.0.2.{}:51820\"\n", i + 1);
        }
    }
    s
}

#[test]
fn seed_lax_reaches_lab_through_nyc() {
    let p = plan(SEED).expect("the seed mesh plans");
    // lab cannot receive from lax directly: there is no lax–lab tunnel.
    assert!(peer(&p, "lax", "lab").is_none());
    assert!(peer(&p, "lab", "lax").is_none());
    let via_nyc = peer(&p, "lax", "nyc").expect("lax peers with nyc");
    assert_eq!(
        via_nyc.allowed_ips,
        [net("10.10.0.1/32"), net("10.10.0.3/32")]
    );
    assert_eq!(via_nyc.keepalive, None, "both public: no keepalive");
    let lab_nyc = peer(&p, "lab", "nyc").expect("lab peers with nyc");
    assert_eq!(
        lab_nyc.allowed_ips,
        [net("10.10.0.1/32"), net("10.10.0.2/32")]
    );
    assert_eq!(lab_nyc.keepalive, Some(25));
    assert_eq!(
        peer(&p, "nyc", "lab").expect("nyc peers with lab").endpoint,
        None
    );
    assert_eq!(
        routes::path(&p, "lax", "lab").expect("routes"),
        ["lax", "nyc", "lab"]
    );
    assert_eq!(
        routes::path(&p, "lab", "lax").expect("routes"),
        ["lab", "nyc", "lax"]
    );
    assert_eq!(
        routes::path(&p, "nyc", "lab").expect("routes"),
        ["nyc", "lab"]
    );
    assert_eq!(p.tunnels(), 2);
    assert_eq!(p.full_mesh_tunnels(), 3);
}

#[test]
fn full_mesh_direct_wherever_one_side_is_public() {
    let p = plan(&mesh(
        "full-mesh",
        &["a"],
        &[
            ("a", true),
            ("b", true),
            ("c", true),
            ("d", true),
            ("e", false),
            ("f", false),
        ],
    ))
    .expect("plans");
    for a in &p.nodes {
        for b in &p.nodes {
            if a.name == b.name {
                continue;
            }
            let direct = peer(&p, &a.name, &b.name);
            if a.endpoint.is_some() || b.endpoint.is_some() {
                let d = direct.unwrap_or_else(|| panic!("{} has no tunnel to {}", a.name, b.name));
                assert_eq!(d.endpoint, b.endpoint);
                let expect_keepalive = (a.endpoint.is_none() && b.endpoint.is_some()).then_some(25);
                assert_eq!(d.keepalive, expect_keepalive, "{} → {}", a.name, b.name);
            } else {
                assert!(
                    direct.is_none(),
                    "{} and {} are both behind NAT",
                    a.name,
                    b.name
                );
            }
        }
    }
    // The NATed pair meets at the hub, in both directions.
    assert!(
        peer(&p, "e", "a")
            .expect("e–a")
            .allowed_ips
            .contains(&net("10.20.0.6/32"))
    );
    assert!(
        peer(&p, "f", "a")
            .expect("f–a")
            .allowed_ips
            .contains(&net("10.20.0.5/32"))
    );
    assert_eq!(routes::path(&p, "e", "f").expect("routes"), ["e", "a", "f"]);
    assert_eq!(p.tunnels(), 15 - 1);
}

#[test]
fn pair_of_nated_nodes_uses_their_common_hub() {
    let mut text = mesh(
        "full-mesh",
        &["a", "b"],
        &[("a", true), ("b", true), ("c", false), ("d", false)],
    );
    text = text.replace("name = \"c\"\n", "name = \"c\"\nhub = \"b\"\n");
    text = text.replace("name = \"d\"\n", "name = \"d\"\nhub = \"b\"\n");
    let p = plan(&text).expect("plans");
    assert_eq!(routes::path(&p, "c", "d").expect("routes"), ["c", "b", "d"]);
}

#[test]
fn hub_and_spoke_spokes_peer_only_with_their_hub() {
    let p = plan(&mesh(
        "hub-and-spoke",
        &["h1", "h2"],
        &[
            ("h1", true),
            ("h2", true),
            ("s1", true),
            ("s2", false),
            ("s3", false),
        ],
    ))
    .expect("plans");
    for s in ["s1", "s2", "s3"] {
        let node = p.node(s).expect("spoke");
        assert_eq!(node.peers.len(), 1, "{s}: {:?}", node.peers);
        assert_eq!(node.peers[0].node, "h1");
        assert_eq!(node.peers[0].allowed_ips, [net("10.20.0.0/24")]);
    }
    // The second hub reaches the spokes through the first.
    let h2_h1 = peer(&p, "h2", "h1").expect("hubs are meshed");
    assert_eq!(h2_h1.via, ["s1", "s2", "s3"]);
    assert_eq!(
        routes::path(&p, "s2", "s3").expect("routes"),
        ["s2", "h1", "s3"]
    );
    assert_eq!(
        routes::path(&p, "h2", "s3").expect("routes"),
        ["h2", "h1", "s3"]
    );
    assert_eq!(p.tunnels(), 4);
}

#[test]
fn unroutable_meshes_are_refused_with_the_reason() {
    let err = plan(&mesh("full-mesh", &[], &[("a", false), ("b", false)]))
        .expect_err("nobody can dial anybody");
    assert!(
        matches!(&err, PlanError::Unroutable(why) if why.contains("\"a\" and \"b\" are both behind NAT")),
        "{err}"
    );
    let err = plan(&mesh(
        "full-mesh",
        &[],
        &[("a", true), ("b", false), ("c", false)],
    ))
    .expect_err("no hub for b–c");
    assert!(err.to_string().contains("hubs = [\"a\"]"), "{err}");
    let err = plan(&mesh("hub-and-spoke", &[], &[("a", true), ("b", false)])).expect_err("no hub");
    assert!(matches!(err, PlanError::Unroutable(_)), "{err}");
    let err = plan(&mesh("full-mesh", &["b"], &[("a", true), ("b", false)]))
        .expect_err("a hub behind NAT");
    assert!(
        err.to_string().contains("hub \"b\" has no endpoint"),
        "{err}"
    );
}

#[test]
fn the_route_check_catches_a_broken_plan() {
    let mut p = plan(SEED).expect("plans");
    routes::check(&p).expect("the planned mesh routes");
    // Without 10.10.0.3 on lax's nyc peer (the hand-written mistake), lax → lab fails.
    let lax = p.nodes.iter_mut().find(|n| n.name == "lax").expect("lax");
    lax.peers
        .iter_mut()
        .find(|q| q.node == "nyc")
        .expect("nyc")
        .allowed_ips
        .retain(|n| *n != net("10.10.0.3/32"));
    let err = routes::path(&p, "lax", "lab").expect_err("no route");
    assert!(
        err.to_string()
            .contains("no peer's AllowedIPs holds 10.10.0.3"),
        "{err}"
    );
    // A hub that does not forward breaks the relayed pairs.
    let mut p = plan(SEED).expect("plans");
    p.nodes[0].is_hub = false;
    assert!(routes::path(&p, "lax", "lab").is_err());
    // lab accepting nothing from nyc for lax's address: the source check drops it.
    let mut p = plan(SEED).expect("plans");
    let lab = p.nodes.iter_mut().find(|n| n.name == "lab").expect("lab");
    lab.peers[0]
        .allowed_ips
        .retain(|n| *n != net("10.10.0.2/32"));
    let err = routes::path(&p, "lax", "lab").expect_err("dropped");
    assert!(err.to_string().contains("would drop"), "{err}");
}

#[test]
fn hub_config_forwards_and_restores_on_down() {
    let p = plan(SEED).expect("plans");
    let nyc = p
        .render_config("nyc", &keys(&p), RenderOptions::default())
        .expect("renders");
    let c = wgquick::parse(&nyc).expect("rendered file parses");
    let up = c.interface.post_up.join("\n");
    let down = c.interface.post_down.join("\n");
    assert!(up.contains("sysctl -q -w net.ipv4.ip_forward=1"), "{up}");
    assert!(
        up.contains("iptables -A FORWARD -i %i -o %i -j ACCEPT"),
        "{up}"
    );
    assert!(
        down.contains("iptables -D FORWARD -i %i -o %i -j ACCEPT"),
        "{down}"
    );
    assert!(down.contains("net.ipv4.ip_forward=$(cat"), "{down}");
    let lax = p
        .render_config("lax", &keys(&p), RenderOptions::default())
        .expect("renders");
    let c = wgquick::parse(&lax).expect("rendered file parses");
    assert!(c.interface.post_up.is_empty() && c.interface.post_down.is_empty());
    assert_eq!(c.interface.addresses, [net("10.10.0.2/24")]);
    assert_eq!(c.interface.mtu, Some(1420));
    assert_eq!(c.interface.listen_port, Some(51820));
    let names: Vec<_> = c
        .peers
        .iter()
        .map(|p| p.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names, ["nyc (hub for lab)"]);
}

#[test]
fn public_only_node_gets_a_placeholder_and_instructions() {
    let p = plan(SEED).expect("plans");
    let mut k = keys(&p);
    let lab_pub = k["lab"].public_key();
    k.insert("lab".into(), NodeKey::PublicOnly(lab_pub));
    let lab = p
        .render_config("lab", &k, RenderOptions::default())
        .expect("renders");
    assert!(lab.contains("PrivateKey = <private key of lab>\n"), "{lab}");
    assert!(lab.contains("# The private key of lab was made on lab and never left it"));
    let err = wgquick::parse(&lab).expect_err("a placeholder is not a key");
    assert!(matches!(
        err.errors[0].kind,
        wgquick::LineErrorKind::PlaceholderKey { .. }
    ));
    // Its peers know it by its public key.
    let nyc = wgquick::parse(
        &p.render_config("nyc", &k, RenderOptions::default())
            .expect("renders"),
    )
    .expect("parses");
    assert!(nyc.peers.iter().any(|q| q.public_key == lab_pub));
}

#[test]
fn key_files_keep_secrets_out_of_the_file() {
    let p = plan(SEED).expect("plans");
    let k = keys(&p);
    let text = p
        .render_config("lax", &k, RenderOptions { key_files: true })
        .expect("renders");
    let c = wgquick::parse(&text).expect("parses");
    assert_eq!(c.interface.private_key, None);
    assert_eq!(
        c.interface.post_up,
        ["wg set %i private-key /etc/wireguard/lax.key"]
    );
    let NodeKey::Private(secret) = &k["lax"] else {
        panic!("test keys are private")
    };
    assert!(!text.contains(secret.to_base64().as_str()));
}

#[test]
fn underlay_mtu_lowers_the_tunnel_mtu_by_80() {
    let text = SEED.replace("name = \"lab\"", "name = \"lab\"\nunderlay_mtu = 1400");
    let p = plan(&text).expect("plans");
    assert_eq!(p.node("lab").expect("lab").mtu, 1320);
    assert_eq!(p.node("nyc").expect("nyc").mtu, 1420);
    let err = plan(&SEED.replace("name = \"lab\"", "name = \"lab\"\nunderlay_mtu = 1300"))
        .expect_err("too small");
    assert!(err.to_string().contains("underlay_mtu 1300"), "{err}");
}

#[test]
fn addresses_explicit_then_previous_then_lowest_free() {
    let text = mesh(
        "full-mesh",
        &["a"],
        &[("a", true), ("b", true), ("c", true)],
    )
    .replace("name = \"c\"\n", "name = \"c\"\naddress = \"10.20.0.1\"\n");
    let spec = MeshSpec::parse(&text).expect("valid");
    let previous = BTreeMap::from([("b".to_string(), ip("10.20.0.9"))]);
    let p = compile(&spec, &previous).expect("plans");
    let got: Vec<_> = p.nodes.iter().map(|n| n.address).collect();
    assert_eq!(got, [ip("10.20.0.2"), ip("10.20.0.9"), ip("10.20.0.1")]);
}

#[test]
fn bad_mesh_files_say_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("name = \"nyc\"", "name = \"nyc\"\nbogus = 1"),
        ("cidr = \"10.10.0.0/24\"", "cidr = \"10.10.0.0/33\""),
        ("address = \"10.10.0.3\"", "address = \"10.10.1.3\""),
        ("address = \"10.10.0.3\"", "address = \"10.10.0.1\""),
        ("address = \"10.10.0.3\"", "address = \"10.10.0.255\""),
        ("name = \"lab\"", "name = \"../lab\""),
        ("name = \"lab\"", "name = \"nyc\""),
        ("hubs = [\"nyc\"]", "hubs = [\"nowhere\"]"),
        (
            "endpoint = \"203.0.113.10:51820\"",
            "endpoint = \"203.0.113.10:99999\"",
        ),
        ("topology = \"full-mesh\"", "topology = \"ring\""),
        (
            "cidr = \"10.10.0.0/24\"",
            "cidr = \"10.10.0.0/24\"\ninterface = \"a-very-long-interface\"",
        ),
    ];
    for (from, to) in cases {
        assert!(SEED.contains(from), "{from}");
        let text = SEED.replacen(from, to, 1);
        let err = MeshSpec::parse(&text).expect_err(to);
        assert!(!err.to_string().is_empty(), "{to}");
    }
    let err = MeshSpec::parse(&SEED.replace("address = \"10.10.0.3\"", "address = \"10.10.0.1\""))
        .expect_err("duplicate");
    assert_eq!(err.to_string(), "address 10.10.0.1 is given to two nodes");
}

#[test]
fn json_plan_has_no_private_key() {
    let p = plan(SEED).expect("plans");
    let json = serde_json::to_string(&p).expect("serializes");
    assert!(json.contains("\"address\":\"10.10.0.3\""), "{json}");
    assert!(!json.to_lowercase().contains("private"));
}

#[test]
fn ipv6_overlay() {
    let text = SEED
        .replace("10.10.0.0/24", "fd10::/64")
        .replace("10.10.0.1", "fd10::1")
        .replace("10.10.0.2", "fd10::2")
        .replace("10.10.0.3", "fd10::3");
    let p = plan(&text).expect("plans");
    let c = wgquick::parse(
        &p.render_config("nyc", &keys(&p), RenderOptions::default())
            .expect("renders"),
    )
    .expect("parses");
    assert_eq!(c.interface.addresses, [net("fd10::1/64")]);
    assert!(c.interface.post_up.iter().any(|u| u.contains("ip6tables")));
}

#[test]
fn setup_script_baseline() {
    let p = plan(SEED).expect("plans");
    let hub = p
        .render_setup_script("nyc", &keys(&p)["nyc"], RenderOptions::default())
        .expect("renders");
    let spoke = p
        .render_setup_script("lab", &keys(&p)["lab"], RenderOptions::default())
        .expect("renders");
    for s in [&hub, &spoke] {
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("ufw allow 22/tcp"));
        assert!(s.contains("tcp dport 22 accept"));
        assert!(s.contains("PORT=51820"));
        assert!(s.contains("systemctl enable \"wg-quick@$IFACE\""));
        assert!(s.contains("install -m 600 "));
    }
    assert!(hub.contains("net.ipv4.ip_forward"));
    assert!(!spoke.contains("ip_forward"));
}

// ---- random meshes: whatever plans, routes, and renders valid files ----

fn random_mesh() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(any::<bool>(), 1..10),
        any::<bool>(),
        0usize..3,
    )
        .prop_map(|(public, hub_and_spoke, n_hubs)| {
            let names: Vec<String> = (0..public.len()).map(|i| format!("n{i}")).collect();
            let hubs: Vec<&str> = names
                .iter()
                .zip(&public)
                .filter(|(_, p)| **p)
                .map(|(n, _)| n.as_str())
                .take(n_hubs)
                .collect();
            let nodes: Vec<(&str, bool)> = names
                .iter()
                .map(String::as_str)
                .zip(public.iter().copied())
                .collect();
            let topology = if hub_and_spoke {
                "hub-and-spoke"
            } else {
                "full-mesh"
            };
            mesh(topology, &hubs, &nodes)
        })
}

proptest! {
    #[test]
    fn every_plan_routes_and_renders_valid_files(text in random_mesh()) {
        let spec = MeshSpec::parse(&text).expect("generated files are well-formed");
        match compile(&spec, &BTreeMap::new()) {
            Ok(p) => {
                // compile() already ran the route check; check the files too:
                // wgquick::parse refuses overlapping AllowedIPs and duplicate keys.
                let k = keys(&p);
                for n in &p.nodes {
                    let text = p.render_config(&n.name, &k, RenderOptions::default())
                        .expect("renders");
                    let c = wgquick::parse(&text)
                        .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
                    prop_assert_eq!(c.peers.len(), n.peers.len());
                }
                routes::check(&p).expect("routes");
            }
            Err(PlanError::Unroutable(_)) => {
                // Refused only when it truly cannot route: some pair is NATed on
                // both sides with no hub, or hub-and-spoke without hubs.
                let nated = spec.nodes.iter().filter(|n| n.endpoint.is_none()).count();
                prop_assert!(spec.hubs.is_empty());
                prop_assert!(spec.topology == Topology::HubAndSpoke || nated >= 2);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
