//! Issue 6's matrix, on the simulated network: every pair of NAT kinds
//! (full cone, address-restricted, port-restricted, symmetric, UDP
//! blocked), crossed with loss of 0 and 5 % and RTT of 1 and 100 ms. The
//! path must end up direct exactly where the NAT kinds allow it and
//! relayed otherwise; the first packet must arrive within 1 s of virtual
//! time on a direct path, within 2 s on a relayed one.

use std::time::Duration;

use wgmesh_proto::disco::path::Path;
use wgmesh_sim::NatKind;
use wgmesh_sim::disco::{Scenario, direct_possible, run};

/// Each cell runs with this many seeds (loss and NAT port choice differ).
const SEEDS: u64 = 4;

#[test]
fn every_pair_of_nat_kinds_goes_direct_exactly_where_it_can() {
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut cells = 0;
    for (i, a) in NatKind::ALL.iter().enumerate() {
        for b in &NatKind::ALL[i..] {
            for loss in [0.0, 0.05] {
                for rtt_ms in [1, 100] {
                    for seed in 0..SEEDS {
                        cells += 1;
                        let s = Scenario {
                            nat: [Some(*a), Some(*b)],
                            rtt: Duration::from_millis(rtt_ms),
                            loss,
                            seed: 1000 + cells * 7 + seed,
                        };
                        let o = run(&s, Duration::from_secs(12));
                        let direct = direct_possible(s.nat[0], s.nat[1]);
                        let cell =
                            format!("{} × {}, loss {loss}, rtt {rtt_ms} ms", a.name(), b.name());
                        for (n, node) in o.nodes.iter().enumerate() {
                            let is_direct = matches!(node.path, Path::Direct { .. });
                            if is_direct != direct {
                                failures.push(format!(
                                    "{cell} (seed {}): node {n} ended {:?}, expected {}; changes {:?}",
                                    s.seed,
                                    node.path,
                                    if direct { "direct" } else { "relayed" },
                                    o.changes
                                ));
                            }
                            if !direct && node.path != Path::Relay {
                                failures.push(format!(
                                    "{cell}: node {n} ended {:?}, expected the relay",
                                    node.path
                                ));
                            }
                            let first = if direct {
                                node.first_direct
                            } else {
                                node.first_relayed
                            };
                            let limit = Duration::from_secs(if direct { 1 } else { 2 });
                            match first {
                                Some(t) if t <= limit => {}
                                other => failures.push(format!(
                                    "{cell}: node {n}: first packet {other:?}, limit {limit:?}"
                                )),
                            }
                            if !direct && node.first_direct.is_some() {
                                failures.push(format!("{cell}: node {n}: a packet went direct where no direct path can exist"));
                            }
                        }
                        report.push(format!(
                            "{cell}: {} / {}; first packet {:?} / {:?}",
                            path_name(o.nodes[0].path),
                            path_name(o.nodes[1].path),
                            if direct {
                                o.nodes[0].first_direct
                            } else {
                                o.nodes[0].first_relayed
                            },
                            if direct {
                                o.nodes[1].first_direct
                            } else {
                                o.nodes[1].first_relayed
                            },
                        ));
                    }
                }
            }
        }
    }
    println!("{}", report.join("\n"));
    assert_eq!(cells, 60 * SEEDS);
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn path_name(p: Path) -> &'static str {
    match p {
        Path::Direct { .. } => "direct",
        Path::Relay => "relayed",
        Path::Unreachable => "unreachable",
    }
}

#[test]
fn a_public_node_and_every_nat_kind() {
    for kind in NatKind::ALL {
        let s = Scenario {
            nat: [None, Some(kind)],
            rtt: Duration::from_millis(50),
            loss: 0.0,
            seed: 7,
        };
        let o = run(&s, Duration::from_secs(10));
        let direct = kind != NatKind::UdpBlocked;
        for node in &o.nodes {
            assert_eq!(
                matches!(node.path, Path::Direct { .. }),
                direct,
                "{kind:?}: {node:?}"
            );
        }
    }
}

#[test]
fn runs_replay_exactly_from_their_seed() {
    let s = Scenario {
        nat: [
            Some(NatKind::PortRestricted),
            Some(NatKind::AddressRestricted),
        ],
        rtt: Duration::from_millis(100),
        loss: 0.05,
        seed: 42,
    };
    assert_eq!(
        run(&s, Duration::from_secs(5)),
        run(&s, Duration::from_secs(5))
    );
}
