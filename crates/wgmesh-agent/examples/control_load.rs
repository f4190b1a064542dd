//! The control-plane load generator (issue 5's benchmark; run by hand
//! through `bench/control_plane.sh`, never in CI).
//!
//! N light clients in one tokio process, each with its own random key:
//! each enrols (`POST /api/v1/enroll`, at most `--concurrency` at a time
//! together with opening its stream), then holds `GET
//! /api/v1/node/map/stream` open, applying the deltas to its map. When all
//! N hold their first full map, the admin replaces the policy, and each
//! client records when its map first reflects the new one.
//!
//! The policy: default "deny", nodes in groups of `--group-size` (one
//! reusable setup key per group), one rule per group allowing the group
//! within itself. The change puts in front of it, per group, a rule
//! denying tcp/22 within the group, so every peer entry of every map
//! changes (its inbound rules). A map reflects the change when every peer
//! has such a deny among its inbound rules.
//!
//! With `--server-pid`, it samples the server's RSS (VmRSS, VmHWM) and CPU
//! seconds (utime + stime from /proc/PID/stat) at the phase boundaries.
//! It prints progress to stderr and one `RESULT key=value …` line to
//! stdout for the script's table.
//!
//! It owns no server: the caller starts and kills it. It has no data
//! plane: no interface, no WireGuard.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::Semaphore;
use wgmesh_agent::client::{Client, StreamItem};
use wgmesh_core::control::{
    CreateNetwork, CreateSetupKey, EndpointReport, EnrollRequest, NetworkInfo, SetupKeyCreated,
    Topology, enroll_proof,
};
use wgmesh_core::key::PrivateKey;
use wgmesh_core::netmap::policy::{Action, Policy, PortRange, Proto, Rule, Selector};
use wgmesh_core::netmap::{MapUpdate, NetworkMap};

#[derive(Debug)]
struct Args {
    server: String,
    admin_token: String,
    nodes: usize,
    group_size: usize,
    concurrency: usize,
    network: String,
    server_pid: Option<u32>,
    clk_tck: f64,
    timeout: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        server: "http://127.0.0.1:8080".into(),
        admin_token: std::env::var("WGMESH_ADMIN_TOKEN").unwrap_or_default(),
        nodes: 10_000,
        group_size: 25,
        concurrency: 64,
        network: "bench".into(),
        server_pid: None,
        clk_tck: 100.0,
        timeout: Duration::from_secs(600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = value()?,
            "--admin-token" => a.admin_token = value()?,
            "--nodes" => a.nodes = value()?.parse()?,
            "--group-size" => a.group_size = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--network" => a.network = value()?,
            "--server-pid" => a.server_pid = Some(value()?.parse()?),
            "--clk-tck" => a.clk_tck = value()?.parse()?,
            "--timeout" => a.timeout = Duration::from_secs(value()?.parse()?),
            other => bail!(
                "unknown argument {other:?}; flags: --server URL --admin-token T --nodes N \
                 --group-size G --concurrency C --network NAME --server-pid PID --clk-tck HZ \
                 --timeout SECONDS"
            ),
        }
    }
    if a.admin_token.is_empty() {
        bail!("--admin-token (or WGMESH_ADMIN_TOKEN) is required");
    }
    if a.nodes == 0 || a.group_size == 0 || a.concurrency == 0 {
        bail!("--nodes, --group-size and --concurrency must be at least 1");
    }
    Ok(a)
}

/// The server's memory and CPU at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_s: f64,
}

fn sample(pid: Option<u32>, clk_tck: f64) -> Sample {
    let Some(pid) = pid else {
        return Sample::default();
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`, which may hold spaces: utime and stime
    // are fields 14 and 15 of proc(5), so 12th and 13th after it.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    Sample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_s: ticks.iter().sum::<u64>() as f64 / clk_tck,
    }
}

fn group_rule(group: &str, action: Action, ssh_only: bool) -> Rule {
    let sel = Selector::Group(group.to_owned());
    Rule {
        action,
        from: vec![sel.clone()],
        to: vec![sel],
        proto: if ssh_only { Proto::Tcp } else { Proto::Any },
        ports: if ssh_only {
            vec![PortRange::new(22, 22).expect("invariant: 22 is a valid port")]
        } else {
            Vec::new()
        },
    }
}

fn policies(groups: usize) -> (Policy, Policy) {
    let names: Vec<String> = (0..groups).map(|g| format!("g{g}")).collect();
    let allow: Vec<Rule> = names
        .iter()
        .map(|g| group_rule(g, Action::Allow, false))
        .collect();
    let before = Policy {
        default: Action::Deny,
        rules: allow.clone(),
    };
    let mut rules: Vec<Rule> = names
        .iter()
        .map(|g| group_rule(g, Action::Deny, true))
        .collect();
    rules.extend(allow);
    let after = Policy {
        default: Action::Deny,
        rules,
    };
    (before, after)
}

/// Every peer carries the new tcp/22 deny among its inbound rules.
fn reflects_change(map: &NetworkMap) -> bool {
    map.peers.iter().all(|p| {
        p.inbound.iter().any(|r| {
            r.action == Action::Deny
                && r.proto == Proto::Tcp
                && r.ports
                    .is_some_and(|pr| pr.contains(22) && !pr.contains(21))
        })
    })
}

#[derive(Debug, Default)]
struct Shared {
    enrolled: AtomicUsize,
    connected: AtomicUsize,
    reached: AtomicUsize,
    errors: AtomicUsize,
    reconnects: AtomicUsize,
    last_enrolled: Mutex<Option<Instant>>,
    /// Set just before the policy PUT.
    change_at: OnceLock<Instant>,
    /// Per client: time from `change_at` to a map reflecting the change.
    latencies: Mutex<Vec<Duration>>,
    /// Per client: peers in its map once it reflects the change.
    peer_counts: Mutex<BTreeMap<usize, usize>>,
    /// Sum over clients of their peers' JSON size once the change is in:
    /// every entry changed, so about what the change put on the wire.
    peer_json_bytes: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("invariant: never poisoned");
        if first.is_none() {
            *first = Some(what);
        }
    }
}

/// One light client: enrol, hold the stream, follow the map.
async fn agent(
    i: usize,
    client: Client,
    setup_key: String,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
) {
    let mut random = [0u8; 32];
    if let Err(e) = getrandom::fill(&mut random) {
        shared.error(format!("randomness: {e}"));
        return;
    }
    let key = PrivateKey::from_random(random);
    let name = format!("n{i}");
    let mut request = EnrollRequest {
        setup_key,
        public_key: key.public_key(),
        challenge: String::new(),
        proof: String::new(),
        name,
        endpoints: EndpointReport {
            local: vec![
                format!("10.{}.{}.{}:51820", i >> 16 & 255, i >> 8 & 255, i & 255)
                    .parse()
                    .expect("invariant: a well-formed socket address"),
            ],
            reflexive: Some(
                format!("203.0.113.{}:{}", i % 250 + 1, 20_000 + i % 40_000)
                    .parse()
                    .expect("invariant: a well-formed socket address"),
            ),
            nat: None,
        },
    };
    let permit = permits.acquire().await.expect("invariant: never closed");
    let mut attempt = 0;
    let credential = loop {
        // Each attempt answers a fresh challenge (each is used once).
        match client.enroll_challenge().await {
            Ok(ch) => {
                request.challenge = ch.id.clone();
                request.proof = enroll_proof(&key, &ch, &request.setup_key, &request.name)
                    .expect("invariant: the server's challenge key is a valid X25519 key");
            }
            Err(e) => {
                shared.error(format!("challenge n{i}: {e}"));
                return;
            }
        }
        match client.enroll(&request).await {
            Ok(r) => break r.credential,
            Err(e) if e.is_transient() && attempt < 5 => {
                attempt += 1;
                shared.error(format!("enrol n{i} (retrying): {e}"));
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e) => {
                shared.error(format!("enrol n{i}: {e}"));
                return;
            }
        }
    };
    shared.enrolled.fetch_add(1, Ordering::Relaxed);
    *shared
        .last_enrolled
        .lock()
        .expect("invariant: never poisoned") = Some(Instant::now());
    let mut permit = Some(permit);
    let mut counted = false;
    let mut reached = false;
    loop {
        let mut stream = match client.stream_maps(&credential).await {
            Ok(s) => s,
            Err(e) => {
                shared.error(format!("stream n{i}: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut map: Option<NetworkMap> = None;
        loop {
            let update = match stream.next().await {
                Ok(Some(StreamItem::Update(u))) => u,
                Ok(Some(StreamItem::Alive)) => continue,
                Ok(None) => break,
                Err(e) => {
                    shared.error(format!("stream n{i}: {e}"));
                    break;
                }
            };
            match *update {
                MapUpdate::Full(m) => map = Some(m),
                MapUpdate::Delta(d) => {
                    let Some(m) = map.as_mut() else {
                        shared.error(format!("n{i}: a delta before a full map"));
                        break;
                    };
                    if let Err(e) = m.apply(&d) {
                        shared.error(format!("n{i}: {e}"));
                        break;
                    }
                }
            }
            if !counted {
                counted = true;
                shared.connected.fetch_add(1, Ordering::Relaxed);
                // The next client may start once this one is in.
                permit.take();
            }
            if let (false, Some(t0), Some(m)) = (reached, shared.change_at.get(), map.as_ref())
                && reflects_change(m)
            {
                reached = true;
                let latency = t0.elapsed();
                shared
                    .latencies
                    .lock()
                    .expect("invariant: never poisoned")
                    .push(latency);
                *shared
                    .peer_counts
                    .lock()
                    .expect("invariant: never poisoned")
                    .entry(m.peers.len())
                    .or_default() += 1;
                let json = serde_json::to_vec(&m.peers).map_or(0, |j| j.len());
                shared.peer_json_bytes.fetch_add(json, Ordering::Relaxed);
                shared.reached.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Polls `done` every 50 ms until it holds or `deadline` passes, printing
/// `what` and the count every 5 s.
async fn wait_for(
    what: &str,
    count: impl Fn() -> usize,
    n: usize,
    deadline: Instant,
    shared: &Shared,
) -> anyhow::Result<()> {
    let mut next_report = Instant::now() + Duration::from_secs(5);
    while count() < n {
        if Instant::now() >= deadline {
            let first = shared
                .first_error
                .lock()
                .expect("invariant: never poisoned")
                .clone();
            bail!(
                "{what}: only {} of {n} before the deadline ({} errors; first: {})",
                count(),
                shared.errors.load(Ordering::Relaxed),
                first.unwrap_or_else(|| "none".into())
            );
        }
        if Instant::now() >= next_report {
            eprintln!("  {what}: {} / {n}", count());
            next_report += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let n = args.nodes;
    let groups = n.div_ceil(args.group_size);
    let client = Client::new(&args.server, None)?;
    let admin = args.admin_token.as_str();
    let deadline = Instant::now() + args.timeout;

    // The network, its policy and one setup key per group.
    let _: NetworkInfo = client
        .post(
            "api/v1/networks",
            admin,
            &CreateNetwork {
                name: args.network.clone(),
                overlay: "100.64.0.0/16".parse().expect("invariant: a valid prefix"),
                topology: Topology::FullMesh,
            },
        )
        .await?;
    let (policy, changed) = policies(groups);
    let policy_route = format!("api/v1/networks/{}/policy", args.network);
    let _: Policy = client.put(&policy_route, admin, &policy).await?;
    let mut keys = Vec::with_capacity(groups);
    for g in 0..groups {
        let created: SetupKeyCreated = client
            .post(
                "api/v1/setup-keys",
                admin,
                &CreateSetupKey {
                    network: args.network.clone(),
                    reusable: true,
                    expires_in: None,
                    usage_limit: None,
                    groups: vec![format!("g{g}")],
                    hub: false,
                    via_hub: false,
                },
            )
            .await?;
        keys.push(created.key);
    }
    eprintln!(
        "control_load: {n} agents in {groups} groups of {}, concurrency {}",
        args.group_size, args.concurrency
    );

    let shared = Arc::new(Shared::default());
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let s0 = sample(args.server_pid, args.clk_tck);
    let start = Instant::now();
    for i in 0..n {
        tokio::spawn(agent(
            i,
            client.clone(),
            keys[i / args.group_size].clone(),
            permits.clone(),
            shared.clone(),
        ));
    }
    wait_for(
        "connected",
        || shared.connected.load(Ordering::Relaxed),
        n,
        deadline,
        &shared,
    )
    .await?;
    let connected_after = start.elapsed();
    let enrol_time = shared
        .last_enrolled
        .lock()
        .expect("invariant: never poisoned")
        .map_or(connected_after, |t| t - start);
    let s1 = sample(args.server_pid, args.clk_tck);
    eprintln!(
        "  all {n} enrolled in {:.1} s, all streams holding a full map after {:.1} s",
        enrol_time.as_secs_f64(),
        connected_after.as_secs_f64()
    );

    // The change.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load1 = load.split_whitespace().next().unwrap_or("?").to_owned();
    let t0 = Instant::now();
    shared.change_at.set(t0).expect("invariant: set once, here");
    let _: Policy = client.put(&policy_route, admin, &changed).await?;
    let put_latency = t0.elapsed();
    wait_for(
        "new map",
        || shared.reached.load(Ordering::Relaxed),
        n,
        deadline,
        &shared,
    )
    .await?;
    let all = t0.elapsed();
    let s2 = sample(args.server_pid, args.clk_tck);

    let mut lat = shared
        .latencies
        .lock()
        .expect("invariant: never poisoned")
        .clone();
    lat.sort();
    let peers = shared
        .peer_counts
        .lock()
        .expect("invariant: never poisoned")
        .clone();
    let own = sample(Some(std::process::id()), args.clk_tck);
    eprintln!(
        "  policy PUT answered in {} ms; every agent held the new map after {} ms",
        ms(put_latency),
        ms(all)
    );
    eprintln!("  peers per map (count: agents): {peers:?}");
    println!(
        "RESULT nodes={n} groups={groups} group_size={} enrol_s={:.1} enrol_per_s={:.0} \
         connected_s={:.1} put_ms={} p50_ms={} p99_ms={} max_ms={} all_ms={} \
         rss_connected_mib={} rss_after_mib={} hwm_mib={} cpu_enrol_s={:.1} cpu_change_s={:.2} \
         errors={} reconnects={} loadgen_rss_mib={} loadgen_cpu_s={:.1} change_json_mib={:.1} \
         load1={}",
        args.group_size,
        enrol_time.as_secs_f64(),
        n as f64 / enrol_time.as_secs_f64(),
        connected_after.as_secs_f64(),
        ms(put_latency),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 99.0)),
        ms(lat.last().copied().unwrap_or_default()),
        ms(all),
        mib(s1.rss_kib),
        mib(s2.rss_kib),
        mib(s2.hwm_kib),
        s1.cpu_s - s0.cpu_s,
        s2.cpu_s - s1.cpu_s,
        shared.errors.load(Ordering::Relaxed),
        shared.reconnects.load(Ordering::Relaxed),
        mib(own.rss_kib),
        own.cpu_s,
        shared.peer_json_bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0),
        load1,
    );
    Ok(())
}
