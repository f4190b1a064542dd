//! Rendered meshes, proved end to end: every node's planned wg-quick file is
//! brought up on wireguard-go in a lab host, and every ordered pair of nodes
//! pings over the overlay. The naive hand-written seed configs, which the
//! planner exists to prevent, fail where expected.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::IpAddr;
use std::time::Duration;

use wgmesh_core::key::PrivateKey;
use wgmesh_core::plan::{self, MeshSpec, NodeKey, Plan, RenderOptions};
use wgmesh_lab::wgnode::{self, WgNode};
use wgmesh_lab::{Hairpin, Lab, NatKind, Topology};

const SEED_MESH: &str = include_str!("../../../examples/seed-mesh.toml");
const SEED_WORLD: &str = include_str!("../../../examples/lab/seed.toml");

/// How long a pair may take to ping for the first time: handshakes through
/// a hub need the NATed side's first keepalive, sent when it comes up.
const FIRST_PING: Duration = Duration::from_secs(15);

fn random_key() -> PrivateKey {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    PrivateKey::from_random(b)
}

/// Plans `mesh`, brings every node up in the lab host of the same name.
fn bring_up(lab: &mut Lab, mesh: &str) -> (Plan, Vec<WgNode>) {
    let spec = MeshSpec::parse(mesh).expect("valid mesh");
    let plan = plan::compile(&spec, &BTreeMap::new()).expect("routable mesh");
    let keys: BTreeMap<String, NodeKey> = plan
        .nodes
        .iter()
        .map(|n| (n.name.clone(), NodeKey::Private(random_key())))
        .collect();
    let mut nodes = Vec::new();
    for (i, n) in plan.nodes.iter().enumerate() {
        let conf = plan
            .render_config(&n.name, &keys, RenderOptions::default())
            .expect("renders");
        let iface = lab.id().wg_iface(i);
        let node = wgnode::up(lab, &n.name, &iface, &conf)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", n.name, lab.logs()));
        nodes.push(node);
    }
    (plan, nodes)
}

/// Pings every node's overlay address from every other node.
fn ping_every_pair(lab: &Lab, plan: &Plan) {
    for a in &plan.nodes {
        for b in &plan.nodes {
            if a.name != b.name {
                lab.ping_until(&a.name, b.address, FIRST_PING)
                    .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
            }
        }
    }
}

fn take_down(lab: &mut Lab, nodes: &[WgNode]) {
    for n in nodes {
        wgnode::down(lab, n).expect("down runs PreDown/PostDown");
    }
}

#[test]
fn seed_mesh_every_pair_pings() {
    let Some(mut lab) = Lab::for_test("seed_mesh_every_pair_pings") else {
        return;
    };
    Topology::parse(SEED_WORLD)
        .expect("valid world")
        .build_into(&mut lab)
        .expect("builds");
    let (plan, nodes) = bring_up(&mut lab, SEED_MESH);
    ping_every_pair(&lab, &plan);
    // nyc really forwards for lax ↔ lab: its PostUp turned forwarding on.
    let fwd = lab
        .exec("nyc", &["sysctl", "-n", "net.ipv4.ip_forward"])
        .expect("sysctl");
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
    take_down(&mut lab, &nodes);
    let fwd = lab
        .exec("nyc", &["sysctl", "-n", "net.ipv4.ip_forward"])
        .expect("sysctl");
    assert_eq!(
        String::from_utf8_lossy(&fwd.stdout).trim(),
        "0",
        "PostDown puts forwarding back"
    );
}

/// Six nodes, four public and two behind NAT (behind different routers),
/// so that one pair is NATed on both sides and meets at the hub.
#[test]
fn six_node_full_mesh_with_two_natted_nodes() {
    let Some(mut lab) = Lab::for_test("six_node_full_mesh_with_two_natted_nodes") else {
        return;
    };
    for (name, addr) in [
        ("a", "203.0.113.1"),
        ("b", "203.0.113.2"),
        ("c", "198.51.100.3"),
        ("d", "192.0.2.4"),
    ] {
        lab.add_public_host(name, addr.parse().expect("ip"))
            .expect("host");
    }
    lab.add_router(
        "r1",
        "198.51.100.101".parse().expect("ip"),
        "10.1.0.0/24".parse().expect("net"),
        NatKind::PortRestricted,
        Hairpin::Off,
    )
    .expect("r1");
    lab.add_router(
        "r2",
        "192.0.2.102".parse().expect("ip"),
        "10.2.0.0/24".parse().expect("net"),
        NatKind::Symmetric,
        Hairpin::Off,
    )
    .expect("r2");
    lab.add_lan_host("e", "r1").expect("e");
    lab.add_lan_host("f", "r2").expect("f");
    let mesh = "[network]\nname = \"six\"\ncidr = \"10.20.0.0/24\"\nhubs = [\"a\"]\n\
                [[node]]\nname = \"a\"\nendpoint = \"203.0.113.1\"\n\
                [[node]]\nname = \"b\"\nendpoint = \"203.0.113.2\"\n\
                [[node]]\nname = \"c\"\nendpoint = \"198.51.100.3\"\n\
                [[node]]\nname = \"d\"\nendpoint = \"192.0.2.4\"\n\
                [[node]]\nname = \"e\"\n\
                [[node]]\nname = \"f\"\n";
    let (plan, nodes) = bring_up(&mut lab, mesh);
    assert_eq!(plan.tunnels(), 14, "15 pairs, one of them through the hub");
    ping_every_pair(&lab, &plan);
    // e and f went through a, and directly everywhere else.
    assert_eq!(
        plan::routes::path(&plan, "e", "f").expect("path"),
        ["e", "a", "f"]
    );
    take_down(&mut lab, &nodes);
}

/// One hub; spokes on the internet and two behind one NAT router.
#[test]
fn five_node_hub_and_spoke() {
    let Some(mut lab) = Lab::for_test("five_node_hub_and_spoke") else {
        return;
    };
    lab.add_public_host("hub", "203.0.113.50".parse().expect("ip"))
        .expect("hub");
    lab.add_public_host("s1", "198.51.100.51".parse().expect("ip"))
        .expect("s1");
    lab.add_public_host("s2", "192.0.2.52".parse().expect("ip"))
        .expect("s2");
    lab.add_router(
        "home",
        "198.51.100.60".parse().expect("ip"),
        "10.3.0.0/24".parse().expect("net"),
        NatKind::PortRestricted,
        Hairpin::Off,
    )
    .expect("home");
    lab.add_lan_host("s3", "home").expect("s3");
    lab.add_lan_host("s4", "home").expect("s4");
    let mesh = "[network]\nname = \"hs\"\ncidr = \"10.30.0.0/24\"\ntopology = \"hub-and-spoke\"\nhubs = [\"hub\"]\n\
                [[node]]\nname = \"hub\"\nendpoint = \"203.0.113.50\"\n\
                [[node]]\nname = \"s1\"\nendpoint = \"198.51.100.51\"\n\
                [[node]]\nname = \"s2\"\nendpoint = \"192.0.2.52\"\n\
                [[node]]\nname = \"s3\"\n\
                [[node]]\nname = \"s4\"\n";
    let (plan, nodes) = bring_up(&mut lab, mesh);
    assert_eq!(plan.tunnels(), 4);
    ping_every_pair(&lab, &plan);
    take_down(&mut lab, &nodes);
}

/// The hand-built seed mesh: lax has a `[Peer] lab` with no endpoint (lab is
/// behind NAT, nobody can know one) and AllowedIPs 10.10.0.3/32; lab dials
/// nyc with a keepalive and has a plain `[Peer] lax`. lax → lab then works
/// only while lab's NAT still holds the mapping lab opened towards lax: once
/// it expires, lax has no way to reach lab. The home router's UDP mappings
/// are made to expire after 3 s here, as a real router's do after 30–180 s.
#[test]
fn naive_seed_configs_fail_lax_to_lab() {
    let Some(mut lab) = Lab::for_test("naive_seed_configs_fail_lax_to_lab") else {
        return;
    };
    Topology::parse(SEED_WORLD)
        .expect("valid world")
        .build_into(&mut lab)
        .expect("builds");
    for key in [
        "nf_conntrack_udp_timeout",
        "nf_conntrack_udp_timeout_stream",
    ] {
        lab.exec(
            "home",
            &["sysctl", "-q", "-w", &format!("net.netfilter.{key}=3")],
        )
        .expect("short NAT timeouts");
    }
    let keys: BTreeMap<&str, PrivateKey> = ["nyc", "lax", "lab"]
        .into_iter()
        .map(|n| (n, random_key()))
        .collect();
    let public = |n: &str| keys[n].public_key().to_string();
    let private = |n: &str| keys[n].to_base64();
    let confs = [
        (
            "nyc",
            format!(
                "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = 10.10.0.1/24\n\
                 [Peer]\nPublicKey = {}\nAllowedIPs = 10.10.0.2/32\nEndpoint = 203.0.113.20:51820\n\
                 [Peer]\nPublicKey = {}\nAllowedIPs = 10.10.0.3/32\n",
                private("nyc").as_str(),
                public("lax"),
                public("lab")
            ),
        ),
        (
            "lax",
            format!(
                "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = 10.10.0.2/24\n\
                 [Peer]\nPublicKey = {}\nAllowedIPs = 10.10.0.1/32\nEndpoint = 203.0.113.10:51820\n\
                 [Peer]\nPublicKey = {}\nAllowedIPs = 10.10.0.3/32\n",
                private("lax").as_str(),
                public("nyc"),
                public("lab")
            ),
        ),
        (
            "lab",
            format!(
                "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = 10.10.0.3/24\n\
                 [Peer]\nPublicKey = {}\nAllowedIPs = 10.10.0.1/32\nEndpoint = 203.0.113.10:51820\nPersistentKeepalive = 1\n\
                 [Peer]\nPublicKey = {}\nAllowedIPs = 10.10.0.2/32\nEndpoint = 203.0.113.20:51820\n",
                private("lab").as_str(),
                public("nyc"),
                public("lax")
            ),
        ),
    ];
    let mut nodes = Vec::new();
    for (i, (host, conf)) in confs.iter().enumerate() {
        let iface = lab.id().wg_iface(i);
        nodes.push(wgnode::up(&mut lab, host, &iface, conf).expect("up"));
    }
    let lab_addr: IpAddr = "10.10.0.3".parse().expect("ip");
    let nyc_addr: IpAddr = "10.10.0.1".parse().expect("ip");
    lab.ping_until("nyc", lab_addr, FIRST_PING)
        .expect("nyc → lab");
    // Positive control: once lab has talked to lax, lax → lab works (over
    // the mapping lab's packets opened in the home NAT).
    lab.ping_until("lab", "10.10.0.2".parse().expect("ip"), FIRST_PING)
        .expect("lab → lax");
    lab.ping_until("lax", lab_addr, FIRST_PING)
        .expect("lax → lab while the mapping lives");
    let mapped = lab
        .exec(
            "home",
            &["conntrack", "-L", "-p", "udp", "-d", "203.0.113.20"],
        )
        .expect("conntrack -L");
    assert!(
        !String::from_utf8_lossy(&mapped.stdout).trim().is_empty(),
        "the home router holds a mapping lab → lax"
    );

    // Wait, without touching the path, until the home router has forgotten
    // the mapping lab opened towards lax (lab's passive keepalive may renew
    // it once, 10 s after the last data).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let out = lab
            .exec(
                "home",
                &["conntrack", "-L", "-p", "udp", "-d", "203.0.113.20"],
            )
            .expect("conntrack -L");
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the home router still maps lab → lax after 40 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Now lax → lab fails: lax's packets hit a NAT that no longer knows them.
    let out = lab
        .host("lax")
        .expect("lax")
        .netns
        .try_exec(&["ping", "-c", "3", "-W", "1", "10.10.0.3"])
        .expect("ping runs");
    assert!(
        !out.status.success(),
        "lax → lab must fail with the naive configs"
    );
    // Meanwhile lab ↔ nyc, kept open by keepalives, still works.
    lab.ping_until("nyc", lab_addr, FIRST_PING)
        .expect("nyc → lab");
    lab.ping_until("lab", nyc_addr, FIRST_PING)
        .expect("lab → nyc");
    take_down(&mut lab, &nodes);
}
