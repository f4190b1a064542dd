//! The host side of an interface, as wg-quick(8) sets it up: addresses,
//! routes for AllowedIPs, routes that keep endpoints reachable, DNS, and
//! the hooks. Everything goes through iproute2 (`ip`) and bash, as
//! wg-quick's own steps do, so an operator can read what happened in the
//! log and replay it by hand.
//!
//! Every change made is recorded as the command that undoes it
//! ([`Undo`]), run in reverse order at teardown.
//!
//! Full tunnels (a peer with `0.0.0.0/0` or `::/0`): wg-quick uses fwmark
//! policy routing; this module takes the older, simpler route instead:
//! - the default prefix becomes its two halves (`0.0.0.0/1` and
//!   `128.0.0.0/1`, `::/1` and `8000::/1`) in the main table, which win
//!   over the host's default route by being longer, without replacing it,
//!   so taking the interface down gives the host its default route back
//!   untouched;
//! - every peer endpoint that one of the interface's routes would capture
//!   gets a host route (`/32`, `/128`) through the gateway and device that
//!   reached it before the interface came up (`ip route get`), so that the
//!   tunnel's own packets never loop into the tunnel.
//!
//! The limits of that choice: endpoints are pinned when the interface comes
//! up; a peer that roams to a new address, an endpoint set later with
//! `wg set`, or a change of the host's default gateway is not followed
//! (wg-quick's fwmark rules would follow them). With `Table = N` the
//! default route goes into table N unsplit, as wg-quick does.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use wgmesh_core::wgquick::{Config, Dns, Table};

use crate::DataplaneError;

/// Runs `program args…`; returns its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, DataplaneError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DataplaneError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(DataplaneError::Command {
            command,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// `ip ARGS…`.
pub fn ip(args: &[&str]) -> Result<String, DataplaneError> {
    run("ip", args)
}

/// Runs a wg-quick hook as wg-quick does: `%i` replaced by the interface
/// name, through bash, its output going where ours goes.
pub fn run_hook(hook: &str, iface: &str) -> Result<(), DataplaneError> {
    let cmd = hook.replace("%i", iface);
    eprintln!("[#] {cmd}");
    let status = Command::new("bash")
        .args(["-c", &cmd])
        .stdin(Stdio::null())
        .status()
        .map_err(|e| DataplaneError::Command {
            command: cmd.clone(),
            detail: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(DataplaneError::Command {
            command: cmd,
            detail: status.to_string(),
        })
    }
}

/// The commands that undo what was set up, run newest first.
#[derive(Debug, Default)]
pub struct Undo {
    steps: Vec<Vec<String>>,
}

impl Undo {
    /// Records `program args…` to run at teardown.
    pub fn push(&mut self, program: &str, args: &[&str]) {
        let mut step = vec![program.to_owned()];
        step.extend(args.iter().map(|a| (*a).to_owned()));
        self.steps.push(step);
    }

    /// Runs every recorded step, newest first; failures are reported and
    /// skipped (the interface going away takes its own routes with it).
    pub fn run(&mut self) {
        while let Some(step) = self.steps.pop() {
            let (program, args) = step.split_first().expect("a step has a program");
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            eprintln!("[#] {program} {}", args.join(" "));
            if let Err(e) = run(program, &args) {
                eprintln!("wgmesh: teardown: {e}");
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// The routing table wg-quick's `Table` names: `None` for no routes.
pub fn table(config: &Config) -> Option<String> {
    match &config.interface.table {
        None | Some(Table::Auto) => Some("main".into()),
        Some(Table::Off) => None,
        Some(Table::Id(id)) => Some(id.to_string()),
        Some(Table::Name(name)) => Some(name.clone()),
    }
}

/// The prefixes to route into the interface: every peer's AllowedIPs,
/// truncated to their prefix and deduplicated, longest first (as wg-quick sorts them), with a default
/// prefix split in halves when it goes into the main table.
pub fn routes(config: &Config) -> Vec<IpNet> {
    let main = table(config).as_deref() == Some("main");
    let mut set = BTreeSet::new();
    for net in config.peers.iter().flat_map(|p| p.allowed_ips.iter()) {
        let net = net.trunc();
        if main && net.prefix_len() == 0 {
            set.extend(halves(&net));
        } else {
            set.insert(net);
        }
    }
    let mut v: Vec<IpNet> = set.into_iter().collect();
    v.sort_by_key(|n| std::cmp::Reverse(n.prefix_len()));
    v
}

/// The two /1 halves of a default prefix.
fn halves(net: &IpNet) -> [IpNet; 2] {
    match net {
        IpNet::V4(_) => [
            IpNet::V4(Ipv4Net::new(Ipv4Addr::new(0, 0, 0, 0), 1).expect("valid /1")),
            IpNet::V4(Ipv4Net::new(Ipv4Addr::new(128, 0, 0, 0), 1).expect("valid /1")),
        ],
        IpNet::V6(_) => [
            IpNet::V6(Ipv6Net::new(Ipv6Addr::UNSPECIFIED, 1).expect("valid /1")),
            IpNet::V6(
                Ipv6Net::new(Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0), 1).expect("valid /1"),
            ),
        ],
    }
}

/// `-4` or `-6`, for `ip`.
pub fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "-4" } else { "-6" }
}

/// Where the host sends packets for an address: `ip route get`'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTo {
    pub via: Option<IpAddr>,
    pub dev: String,
}

/// Reads `via` and `dev` from `ip route get ADDR`'s output; `None` for a
/// local address (`dev lo`) or an answer without a device.
pub fn parse_route_get(out: &str) -> Option<PathTo> {
    let words: Vec<&str> = out.split_whitespace().collect();
    let after = |key: &str| {
        words
            .windows(2)
            .find(|w| w[0] == key)
            .map(|w| w[1].to_owned())
    };
    let dev = after("dev")?;
    if dev == "lo" || words.first() == Some(&"local") {
        return None;
    }
    let via = after("via").and_then(|v| v.parse().ok());
    Some(PathTo { via, dev })
}

/// Host routes that keep each endpoint reachable outside the tunnel: for
/// every endpoint inside one of `routes`, the path the host uses for it now.
pub fn endpoint_routes(
    endpoints: &[IpAddr],
    routes: &[IpNet],
    iface: &str,
) -> Result<Vec<(IpAddr, PathTo)>, DataplaneError> {
    let mut out = Vec::new();
    let unique: BTreeSet<IpAddr> = endpoints.iter().copied().collect();
    for ep in unique {
        if !routes.iter().any(|r| r.contains(&ep)) {
            continue;
        }
        let text = ip(&[family(ep), "route", "get", &ep.to_string()])?;
        match parse_route_get(&text) {
            Some(path) if path.dev != iface => out.push((ep, path)),
            _ => eprintln!(
                "wgmesh: endpoint {ep} has no route outside {iface}; it is left to the tunnel's routes"
            ),
        }
    }
    Ok(out)
}

/// Adds the host route for `ep` along `path`; records its removal unless
/// the route was there already (then it is not ours to remove).
pub fn add_endpoint_route(ep: IpAddr, path: &PathTo, undo: &mut Undo) {
    let host = IpNet::from(ep).to_string();
    let mut args = vec![family(ep), "route", "add", host.as_str()];
    let via = path.via.map(|v| v.to_string());
    if let Some(via) = &via {
        args.extend(["via", via.as_str()]);
    }
    args.extend(["dev", path.dev.as_str()]);
    eprintln!("[#] ip {}", args.join(" "));
    match ip(&args) {
        Ok(_) => {
            let mut del = args.clone();
            del[2] = "del";
            undo.push("ip", &del);
        }
        Err(e) => eprintln!("wgmesh: endpoint route for {ep} not added: {e}"),
    }
}

/// Where resolvconf(8) is, if installed.
pub fn resolvconf() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("resolvconf"))
        .find(|p| p.is_file())
}

/// The resolv.conf lines for `DNS =`, as wg-quick hands them to resolvconf.
pub fn resolv_conf_text(dns: &[Dns]) -> String {
    let mut text = String::new();
    for d in dns {
        if let Dns::Server(ip) = d {
            text.push_str(&format!("nameserver {ip}\n"));
        }
    }
    let search: Vec<String> = dns
        .iter()
        .filter_map(|d| match d {
            Dns::Search(s) => Some(s.clone()),
            Dns::Server(_) => None,
        })
        .collect();
    if !search.is_empty() {
        text.push_str(&format!("search {}\n", search.join(" ")));
    }
    text
}

/// Applies `DNS =` through resolvconf as wg-quick does
/// (`resolvconf -a tun.IFACE -m 0 -x`), or says plainly why not.
pub fn apply_dns(dns: &[Dns], iface: &str, undo: &mut Undo) {
    if dns.is_empty() {
        return;
    }
    let list: Vec<String> = dns.iter().map(ToString::to_string).collect();
    let Some(resolvconf) = resolvconf() else {
        eprintln!(
            "wgmesh: DNS = {} is NOT applied: there is no resolvconf(8) on this host, and \
             wgmesh does not rewrite /etc/resolv.conf behind the back of whatever manages it. \
             Install resolvconf (or openresolv), or set the resolver yourself in PostUp.",
            list.join(", ")
        );
        return;
    };
    let name = format!("tun.{iface}");
    let text = resolv_conf_text(dns);
    let prog = resolvconf.to_string_lossy().into_owned();
    eprintln!("[#] {prog} -a {name} -m 0 -x");
    let fed = Command::new(&resolvconf)
        .args(["-a", &name, "-m", "0", "-x"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(text.as_bytes())?;
            }
            child.wait()
        });
    match fed {
        Ok(s) if s.success() => undo.push(&prog, &["-d", &name, "-f"]),
        Ok(s) => eprintln!(
            "wgmesh: DNS = {} not applied: resolvconf {s}",
            list.join(", ")
        ),
        Err(e) => eprintln!(
            "wgmesh: DNS = {} not applied: resolvconf: {e}",
            list.join(", ")
        ),
    }
}

/// Writes `text` to `path` atomically (a temporary file renamed into place).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), DataplaneError> {
    let err = |source| DataplaneError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgmesh_core::wgquick;

    const KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

    fn conf(extra_iface: &str, allowed: &[&str]) -> Config {
        let mut text = format!("[Interface]\n{extra_iface}\n");
        for (i, a) in allowed.iter().enumerate() {
            // Distinct keys: the last byte of the base64 text varies.
            let key = format!("{}{}=", &KEY[..42], ['A', 'E', 'I', 'M'][i]);
            text.push_str(&format!("[Peer]\nPublicKey = {key}\nAllowedIPs = {a}\n"));
        }
        wgquick::parse(&text).expect("valid conf")
    }

    #[test]
    fn routes_are_truncated_longest_first() {
        let c = conf(
            "",
            &[
                "10.0.0.2/32, 10.9.0.0/16",
                "10.0.0.3/32, fd00::/64, 10.1.2.3/16",
            ],
        );
        let r: Vec<String> = routes(&c).iter().map(ToString::to_string).collect();
        assert_eq!(
            r,
            [
                "fd00::/64",
                "10.0.0.2/32",
                "10.0.0.3/32",
                "10.1.0.0/16",
                "10.9.0.0/16"
            ]
        );
    }

    #[test]
    fn default_routes_split_in_the_main_table_only() {
        let c = conf("", &["0.0.0.0/0, ::/0"]);
        let r: Vec<String> = routes(&c).iter().map(ToString::to_string).collect();
        assert_eq!(r, ["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"]);
        let c = conf("Table = 1234", &["0.0.0.0/0"]);
        assert_eq!(table(&c).as_deref(), Some("1234"));
        let r: Vec<String> = routes(&c).iter().map(ToString::to_string).collect();
        assert_eq!(r, ["0.0.0.0/0"]);
        assert_eq!(table(&conf("Table = off", &[])), None);
    }

    #[test]
    fn route_get_output() {
        assert_eq!(
            parse_route_get("203.0.113.2 via 10.1.0.1 dev eth0 src 10.1.0.2 uid 0 \n    cache \n"),
            Some(PathTo {
                via: Some("10.1.0.1".parse().expect("ip")),
                dev: "eth0".into()
            })
        );
        assert_eq!(
            parse_route_get("203.0.113.2 dev eth0 src 192.0.2.1 uid 0 \n    cache \n"),
            Some(PathTo {
                via: None,
                dev: "eth0".into()
            })
        );
        assert_eq!(
            parse_route_get(
                "2001:db8::2 from :: via fe80::1 dev eth0 proto ra src 2001:db8::5 metric 100 pref medium\n"
            ),
            Some(PathTo {
                via: Some("fe80::1".parse().expect("ip")),
                dev: "eth0".into()
            })
        );
        assert_eq!(
            parse_route_get("local 127.0.0.1 dev lo table local src 127.0.0.1 uid 0\n"),
            None
        );
        assert_eq!(
            parse_route_get("RTNETLINK answers: Network is unreachable"),
            None
        );
    }

    #[test]
    fn resolv_conf_lines() {
        let c = wgquick::parse("[Interface]\nDNS = 10.0.0.1, example.org, fd00::1, corp\n")
            .expect("valid");
        assert_eq!(
            resolv_conf_text(&c.interface.dns),
            "nameserver 10.0.0.1\nnameserver fd00::1\nsearch example.org corp\n"
        );
    }
}
