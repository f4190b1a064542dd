//! The lab: hosts (namespaces), the internet segment, NAT routers and their
//! LANs, and the processes running in them.
//!
//! The internet is one L2 segment: a bridge in its own namespace (`inet`),
//! with every public host and every router's WAN side plugged into it. Its
//! addresses come from the three TEST-NETs (RFC 5737); each of them is
//! on-link everywhere, so hosts in 192.0.2.0/24 and 203.0.113.0/24 reach
//! each other without a router. A NAT router owns its LAN: a bridge `lan0`
//! in the router's namespace, the router at .1 of the LAN prefix and its
//! hosts after it, with a default route through the router.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::command::run_args;
use crate::names::LabId;
use crate::nat::{self, Hairpin, NatKind};
use crate::{LabError, LabProcess, Netns};

/// The RFC 5737 documentation prefixes: the lab's "public" addresses.
pub const TEST_NETS: [&str; 3] = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];

/// The RFC 3849 documentation prefix: the lab's optional public IPv6
/// addresses. Like the TEST-NETs it is on-link on the internet segment.
pub const DOC_NET6: &str = "2001:db8::/32";

/// The name of the internet switch's namespace within a lab.
const SWITCH: &str = "inet";
const BRIDGE: &str = "br0";

/// What a host is in the lab's world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum Role {
    /// On the internet segment, with a public address.
    Public,
    /// A NAT router between the internet and its LAN.
    Router {
        lan: Ipv4Net,
        nat: NatKind,
        hairpin: Hairpin,
    },
    /// On a router's LAN, behind its NAT.
    Lan { router: String },
}

/// One host of the lab.
#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub netns: Netns,
    pub role: Role,
    /// The public address (public hosts, routers' WAN) or the LAN address.
    pub addr: Ipv4Addr,
    /// The host's interface towards its segment: `eth0`, or `wan0` on a router.
    pub uplink: String,
}

impl Host {
    pub fn ns(&self) -> &str {
        self.netns.name()
    }
}

/// A veth (or TAP) link between a host and the segment it is plugged into.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Link {
    /// The host this is the uplink of.
    pub host: String,
    pub host_ns: String,
    pub host_if: String,
    /// The switch's or router's side.
    pub peer_ns: String,
    pub peer_if: String,
}

/// A whole lab. Dropping it kills its processes and removes its namespaces.
#[derive(Debug)]
pub struct Lab {
    // Field order is drop order: processes end before their namespaces go.
    pub(crate) processes: Vec<LabProcess>,
    hosts: Vec<Host>,
    switch: Option<Netns>,
    links: Vec<Link>,
    id: LabId,
    log_dir: PathBuf,
    keep_logs: bool,
    next_port: u32,
    /// Files removed when the lab goes, whatever killed their owner (a
    /// SIGKILLed wireguard-go leaves its UAPI socket behind).
    cleanup_files: Vec<PathBuf>,
    /// Each host's link impairment (impair.rs).
    pub(crate) impairments: std::collections::BTreeMap<String, crate::impair::Impairment>,
}

impl Lab {
    /// A new, empty lab with a unique id.
    pub fn new() -> Result<Self, LabError> {
        Self::with_id(LabId::unique())
    }

    /// A new lab for a test. Where no lab can run (not root, no network
    /// namespaces) it panics saying why, unless `WGMESH_SKIP_LAB=1` is set:
    /// then it prints a skip line and returns `None`. CI never sets it.
    pub fn for_test(test: &str) -> Option<Self> {
        match Self::new() {
            Ok(lab) => Some(lab),
            // Only a missing precondition may be skipped; any other failure
            // is a real one.
            Err(e @ LabError::Unavailable(_))
                if std::env::var("WGMESH_SKIP_LAB").as_deref() == Ok("1") =>
            {
                println!("SKIP {test}: {e} (WGMESH_SKIP_LAB=1)");
                None
            }
            Err(e) => panic!(
                "{test}: {e}. Run the tests as root where network namespaces work \
                 (scripts/test.sh), or set WGMESH_SKIP_LAB=1 to skip the lab tests."
            ),
        }
    }

    /// A new lab with the given id; fails if its namespaces already exist.
    pub fn with_id(id: LabId) -> Result<Self, LabError> {
        check_available()?;
        let prefix = id.netns("");
        // `wgl-<id>.` names every namespace of this lab and no other.
        if crate::netns::list()?.iter().any(|n| n.starts_with(&prefix)) {
            return Err(LabError::Topology(format!(
                "a lab named {:?} is up already (namespaces {prefix}*); take it down first",
                id.as_str()
            )));
        }
        // A fresh directory only we can enter (0700, unpredictable name):
        // stripped configs with private keys pass through it.
        let log_dir = tempfile::Builder::new()
            .prefix(&format!("wgmesh-lab-{}-", id.as_str()))
            .tempdir()
            .map_err(|source| LabError::Io {
                path: std::env::temp_dir(),
                source,
            })?
            .keep();
        Ok(Self {
            processes: Vec::new(),
            hosts: Vec::new(),
            switch: None,
            links: Vec::new(),
            id,
            log_dir,
            keep_logs: false,
            next_port: 0,
            cleanup_files: Vec::new(),
            impairments: Default::default(),
        })
    }

    pub fn id(&self) -> &LabId {
        &self.id
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> Result<&Host, LabError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| LabError::Topology(format!("no host {name:?} in the lab")))
    }

    /// The uplink of host `name`.
    pub fn link(&self, name: &str) -> Result<&Link, LabError> {
        self.links
            .iter()
            .find(|l| l.host == name)
            .ok_or_else(|| LabError::Topology(format!("host {name:?} has no uplink")))
    }

    fn check_new_name(&self, name: &str) -> Result<(), LabError> {
        let ok = !name.is_empty()
            && name.len() <= 20
            && name != SWITCH
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(LabError::Topology(format!(
                "host name {name:?}: use 1 to 20 lowercase letters, digits or '-' (not {SWITCH:?})"
            )));
        }
        if self.hosts.iter().any(|h| h.name == name) {
            return Err(LabError::Topology(format!("host {name:?} exists already")));
        }
        Ok(())
    }

    /// The internet switch, made on first use.
    fn switch(&mut self) -> Result<&Netns, LabError> {
        if self.switch.is_none() {
            let ns = Netns::add(&self.id.netns(SWITCH))?;
            ns.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
            ns.ip(&["link", "set", BRIDGE, "up"])?;
            self.switch = Some(ns);
        }
        Ok(self.switch.as_ref().expect("made just above"))
    }

    /// Plugs `host_ns` into the internet with interface `host_if` at `addr`.
    fn plug_into_internet(
        &mut self,
        host: &str,
        host_ns: &Netns,
        host_if: &str,
        addr: Ipv4Addr,
    ) -> Result<(), LabError> {
        let net = TEST_NETS
            .iter()
            .map(|n| n.parse::<Ipv4Net>().expect("TEST-NETs are valid prefixes"))
            .find(|n| n.contains(&addr))
            .ok_or_else(|| {
                LabError::Topology(format!(
                    "{host}: public address {addr} is not in a TEST-NET (192.0.2.0/24, \
                     198.51.100.0/24, 203.0.113.0/24)"
                ))
            })?;
        let switch = self.switch()?.name().to_owned();
        let port = self.plug(&switch, BRIDGE, "p", host_ns, host_if)?;
        host_ns.ip(&[
            "addr",
            "add",
            &format!("{addr}/{}", net.prefix_len()),
            "dev",
            host_if,
        ])?;
        host_ns.ip(&["link", "set", host_if, "up"])?;
        for other in TEST_NETS.iter().filter(|n| **n != net.to_string()) {
            host_ns.ip(&["route", "add", other, "dev", host_if])?;
        }
        self.links.push(Link {
            host: host.to_owned(),
            host_ns: host_ns.name().to_owned(),
            host_if: host_if.to_owned(),
            peer_ns: switch,
            peer_if: port,
        });
        Ok(())
    }

    /// A veth pair from a port on `bridge` in namespace `peer_ns` to
    /// `host_if` in `host_ns`; returns the port's name.
    fn plug(
        &mut self,
        peer_ns: &str,
        bridge: &str,
        port_prefix: &str,
        host_ns: &Netns,
        host_if: &str,
    ) -> Result<String, LabError> {
        self.next_port += 1;
        let port = format!("{port_prefix}{}", self.next_port);
        run_args(
            "ip",
            &[
                "-n",
                peer_ns,
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                host_if,
                "netns",
                host_ns.name(),
            ],
        )?;
        run_args(
            "ip",
            &["-n", peer_ns, "link", "set", &port, "master", bridge, "up"],
        )?;
        Ok(port)
    }

    /// A host on the internet at `addr` (a TEST-NET address).
    pub fn add_public_host(&mut self, name: &str, addr: Ipv4Addr) -> Result<&Host, LabError> {
        self.check_new_name(name)?;
        let ns = Netns::add(&self.id.netns(name))?;
        self.plug_into_internet(name, &ns, "eth0", addr)?;
        self.hosts.push(Host {
            name: name.to_owned(),
            netns: ns,
            role: Role::Public,
            addr,
            uplink: "eth0".into(),
        });
        Ok(self.hosts.last().expect("pushed just above"))
    }

    /// Gives a host on the internet (a public host, or a router's WAN) the
    /// IPv6 address `addr` from 2001:db8::/32 (RFC 3849) on its uplink, next
    /// to its IPv4 one; the whole /32 is on-link, as the TEST-NETs are.
    ///
    /// `nodad`: an address held by another lab host is refused here, so duplicate address
    /// detection (RFC 4862 §5.4) would only hold the address "tentative"
    /// (unusable) for a second. It returns once no address on the uplink,
    /// link-local included, is tentative any more.
    pub fn add_ipv6(&self, host: &str, addr: Ipv6Addr) -> Result<(), LabError> {
        let net: Ipv6Net = DOC_NET6.parse().expect("RFC 3849 prefix is valid");
        if !net.contains(&addr) {
            return Err(LabError::Topology(format!(
                "{host}: public IPv6 address {addr} is not in {DOC_NET6} (RFC 3849)"
            )));
        }
        let h = self.host(host)?;
        if matches!(h.role, Role::Lan { .. }) {
            return Err(LabError::Topology(format!(
                "{host}: IPv6 goes on the internet segment; {host} is on a LAN"
            )));
        }
        // An address the kernel would refuse anyway; say who holds it.
        if let Some(other) = self.hosts.iter().find(|o| {
            o.netns
                .try_exec(&[
                    "ip",
                    "-6",
                    "-o",
                    "addr",
                    "show",
                    "to",
                    &format!("{addr}/128"),
                ])
                .is_ok_and(|out| !out.stdout.is_empty())
        }) {
            return Err(LabError::Topology(format!(
                "{host}: {addr} is {}'s already",
                other.name
            )));
        }
        let uplink = h.uplink.clone();
        // A namespace may start with IPv6 off (net.ipv6.conf.default.disable_ipv6).
        h.netns.exec(&[
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv6.conf.{uplink}.disable_ipv6=0"),
        ])?;
        h.netns.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{addr}/{}", net.prefix_len()),
            "dev",
            &uplink,
            "nodad",
        ])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = h
                .netns
                .ip(&["-6", "addr", "show", "dev", &uplink, "tentative"])?;
            if out.stdout.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout(format!(
                    "{host}: IPv6 addresses on {uplink} still tentative: {}",
                    String::from_utf8_lossy(&out.stdout)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A NAT router with WAN address `wan` and LAN `lan` (it takes the first
    /// host address of `lan`).
    pub fn add_router(
        &mut self,
        name: &str,
        wan: Ipv4Addr,
        lan: Ipv4Net,
        kind: NatKind,
        hairpin: Hairpin,
    ) -> Result<&Host, LabError> {
        self.check_new_name(name)?;
        let lan = lan.trunc();
        let lan_addr = lan.hosts().next().ok_or_else(|| {
            LabError::Topology(format!("{name}: LAN {lan} has no host addresses"))
        })?;
        let ns = Netns::add(&self.id.netns(name))?;
        self.plug_into_internet(name, &ns, "wan0", wan)?;
        ns.ip(&["link", "add", "lan0", "type", "bridge"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{lan_addr}/{}", lan.prefix_len()),
            "dev",
            "lan0",
        ])?;
        ns.ip(&["link", "set", "lan0", "up"])?;
        ns.exec(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        let rules = nat::ruleset(&nat::RouterParams {
            kind,
            hairpin,
            wan_if: "wan0",
            wan_addr: wan,
            lan_if: "lan0",
            lan,
        });
        crate::command::nft_script(Some(ns.name()), &rules)?;
        self.hosts.push(Host {
            name: name.to_owned(),
            netns: ns,
            role: Role::Router {
                lan,
                nat: kind,
                hairpin,
            },
            addr: wan,
            uplink: "wan0".into(),
        });
        Ok(self.hosts.last().expect("pushed just above"))
    }

    /// A host on `router`'s LAN, at the next free address.
    pub fn add_lan_host(&mut self, name: &str, router: &str) -> Result<&Host, LabError> {
        self.check_new_name(name)?;
        let r = self.host(router)?;
        let Role::Router { lan, .. } = r.role else {
            return Err(LabError::Topology(format!("{router:?} is not a router")));
        };
        let router_ns = r.ns().to_owned();
        let gateway = lan
            .hosts()
            .next()
            .expect("checked when the router was made");
        let used = self
            .hosts
            .iter()
            .filter(|h| matches!(&h.role, Role::Lan { router: r } if r == router))
            .count();
        let addr = lan
            .hosts()
            .nth(used + 1)
            .ok_or_else(|| LabError::Topology(format!("{router}'s LAN {lan} is full")))?;
        let ns = Netns::add(&self.id.netns(name))?;
        let port = self.plug(&router_ns, "lan0", "l", &ns, "eth0")?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{addr}/{}", lan.prefix_len()),
            "dev",
            "eth0",
        ])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        ns.ip(&["route", "add", "default", "via", &gateway.to_string()])?;
        self.links.push(Link {
            host: name.to_owned(),
            host_ns: ns.name().to_owned(),
            host_if: "eth0".into(),
            peer_ns: router_ns,
            peer_if: port,
        });
        self.hosts.push(Host {
            name: name.to_owned(),
            netns: ns,
            role: Role::Lan {
                router: router.to_owned(),
            },
            addr,
            uplink: "eth0".into(),
        });
        Ok(self.hosts.last().expect("pushed just above"))
    }

    /// Runs `args` in host `host`; a non-zero exit is an error.
    pub fn exec<S: AsRef<std::ffi::OsStr>>(
        &self,
        host: &str,
        args: &[S],
    ) -> Result<Output, LabError> {
        self.host(host)?.netns.exec(args)
    }

    /// Starts a long-running process in `host`, its output logged to
    /// `<log dir>/<label>.log`. The lab kills it (by PID) when dropped.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(
        &mut self,
        host: &str,
        label: &str,
        args: &[S],
    ) -> Result<&mut LabProcess, LabError> {
        let ns = self.host(host)?.ns().to_owned();
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &ns]).args(args);
        let log = self.log_dir.join(format!("{label}.log"));
        self.processes.push(LabProcess::spawn(label, cmd, &log)?);
        Ok(self.processes.last_mut().expect("pushed just above"))
    }

    /// Ends the process `label` (SIGTERM by PID, SIGKILL after 5 s) and
    /// forgets it.
    pub fn stop(&mut self, label: &str) {
        if let Some(i) = self.processes.iter().position(|p| p.label() == label) {
            let mut p = self.processes.remove(i);
            p.terminate(Duration::from_secs(5));
        }
    }

    /// The processes started with [`Lab::spawn`].
    pub fn processes(&mut self) -> &mut [LabProcess] {
        &mut self.processes
    }

    /// Every process's label and log, for a test to print when it fails.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.processes {
            out.push_str(&format!(
                "---- {} (pid {}) ----\n{}\n",
                p.label(),
                p.pid(),
                p.log_text()
            ));
        }
        out
    }

    /// Removes `path` (if it still exists) when the lab is dropped.
    pub fn remove_on_drop(&mut self, path: PathBuf) {
        self.cleanup_files.push(path);
    }

    /// Keeps the log directory after the lab is dropped.
    pub fn keep_logs(&mut self) {
        self.keep_logs = true;
    }

    /// Pings `to` from `host` until one reply comes or `timeout` passes.
    pub fn ping_until(&self, host: &str, to: IpAddr, timeout: Duration) -> Result<(), LabError> {
        let ns = self.host(host)?;
        let deadline = Instant::now() + timeout;
        loop {
            let out = ns
                .netns
                .try_exec(&["ping", "-c", "1", "-W", "1", "-q", &to.to_string()])
                .map_err(|source| LabError::Spawn {
                    command: "ping".into(),
                    source,
                })?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout(format!(
                    "{host} → {to}: no ping reply within {timeout:?}"
                )));
            }
            // An unreachable destination fails at once: don't spin.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Names of every namespace this lab made, switch included.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.hosts.iter().map(|h| h.ns().to_owned()).collect();
        if let Some(s) = &self.switch {
            v.push(s.name().to_owned());
        }
        v
    }

    /// Leaves everything running for `wgmesh lab down` (or `lab clean`) to
    /// remove later; returns the namespaces and PIDs left behind.
    pub fn detach(mut self) -> Detached {
        let detached = Detached {
            id: self.id.as_str().to_owned(),
            namespaces: self.namespaces(),
            pids: self
                .processes
                .iter()
                .filter_map(|p| Some((p.pid(), crate::process::start_time(p.pid())?)))
                .collect(),
            hosts: self
                .hosts
                .iter()
                .map(|h| (h.name.clone(), h.ns().to_owned()))
                .collect(),
            log_dir: self.log_dir.clone(),
        };
        for p in self.processes.drain(..) {
            p.leave_running();
        }
        for h in self.hosts.drain(..) {
            std::mem::forget(h.netns);
        }
        if let Some(s) = self.switch.take() {
            std::mem::forget(s);
        }
        self.keep_logs = true;
        self.cleanup_files.clear();
        detached
    }
}

/// What a detached lab left running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Detached {
    pub id: String,
    pub namespaces: Vec<String>,
    /// (PID, start time in clock ticks since boot): `lab down` kills a PID
    /// only if it is still the process that was recorded.
    pub pids: Vec<(u32, u64)>,
    /// (host name, namespace)
    pub hosts: Vec<(String, String)>,
    pub log_dir: PathBuf,
}

impl Detached {
    /// The record of a lab that has nothing yet.
    pub fn empty(id: &LabId) -> Self {
        Self {
            id: id.as_str().to_owned(),
            namespaces: Vec::new(),
            pids: Vec::new(),
            hosts: Vec::new(),
            log_dir: PathBuf::new(),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A failing test's evidence: print every log, and keep them.
        if std::thread::panicking() && !self.processes.is_empty() {
            eprintln!(
                "lab {} dropped while panicking; logs kept in {}:\n{}",
                self.id.as_str(),
                self.log_dir.display(),
                self.logs()
            );
            self.keep_logs = true;
        }
        // Processes first (by PID), then namespaces, which takes their links.
        self.processes.clear();
        self.hosts.clear();
        self.switch = None;
        for f in &self.cleanup_files {
            let _ = std::fs::remove_file(f);
        }
        if !self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// Root and `ip netns` are needed; say which is missing.
pub fn check_available() -> Result<(), LabError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1));
    if euid != Some("0") {
        return Err(LabError::Unavailable("not running as root".into()));
    }
    run_args("ip", &["netns", "list"])
        .map(|_| ())
        .map_err(|e| LabError::Unavailable(format!("`ip netns` does not work: {e}")))
}
