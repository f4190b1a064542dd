//! Link impairment: rate limits, loss, cuts, latency and jitter on a host's
//! uplink, both directions alike, changeable while a test runs.
//!
//! - Rate: a tbf qdisc on the egress of both ends of the link.
//! - Loss and cuts: an nftables netdev-family ingress chain on both ends
//!   (`numgen random` for loss, a bare `drop` for a cut). Frames vanish
//!   silently, as on a wire: nothing returns EPERM to the sender, and the
//!   link, its addresses and its routes stay as they are.
//! - Latency and jitter: this kernel has no netem, so [`Lab::set_latency`]
//!   puts a userspace element in the link: `wgl-delay` (src/bin), which
//!   forwards frames between two TAP devices after holding them. The host's
//!   veth pair is swapped for the TAP pair under the same names, MACs, MTUs,
//!   bridge and addresses/routes, so the rest of the lab does not notice.
//!
//! The lab remembers each host's [`Impairment`], so a swap can re-apply the
//! rate and filters to the new devices and `restore` can return to the loss
//! in force before a cut.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::command::{nft_script, run_args};
use crate::lab::Link;
use crate::{Lab, LabError, LabProcess};

/// Names the binary; an override for where it lives.
const DELAY_BIN: &str = "wgl-delay";
const DELAY_ENV: &str = "WGMESH_LAB_DELAY";
/// How long wgl-delay gets to make its TAPs or apply new settings.
const DELAY_START: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);
/// nftables priority of the loss/cut chains: before anything else at ingress.
const FILTER_PRIORITY: i32 = -500;

/// What is done to a host's uplink, in each direction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    /// Bits per second, each way; `None` is unlimited.
    pub rate: Option<u64>,
    /// Percent of frames dropped, each way independently (so a round trip
    /// is lost with probability 1 − (1 − loss/100)²).
    pub loss: f64,
    /// Every frame dropped, until [`Lab::restore`].
    pub cut: bool,
    /// Added to every frame's one-way trip, each way.
    pub delay: Duration,
    /// Each frame's delay is `delay ± jitter`, uniformly.
    pub jitter: Duration,
}

impl Lab {
    /// What is currently done to `host`'s uplink.
    pub fn impairment(&self, host: &str) -> Result<Impairment, LabError> {
        self.link(host)?;
        Ok(self.impairments.get(host).cloned().unwrap_or_default())
    }

    /// Limits `host`'s uplink to `bits_per_sec` in each direction (tbf on
    /// both ends).
    pub fn set_rate(&mut self, host: &str, bits_per_sec: u64) -> Result<(), LabError> {
        if bits_per_sec < 8_000 {
            return Err(LabError::Topology(format!(
                "{host}: rate {bits_per_sec} bit/s is below tbf's useful range (8 kbit/s)"
            )));
        }
        self.update(host, |i| i.rate = Some(bits_per_sec))
    }

    /// Lifts the rate limit of `host`'s uplink.
    pub fn clear_rate(&mut self, host: &str) -> Result<(), LabError> {
        self.update(host, |i| i.rate = None)
    }

    /// Drops `percent` (0 to 100) of the frames on `host`'s uplink, in each
    /// direction independently; 0 ends the loss.
    pub fn set_loss(&mut self, host: &str, percent: f64) -> Result<(), LabError> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(LabError::Topology(format!(
                "{host}: loss {percent}% is not between 0 and 100"
            )));
        }
        self.update(host, |i| i.loss = percent)
    }

    /// Cuts `host`'s uplink: every frame is dropped both ways, while the
    /// interfaces, addresses and routes stay (so sockets and WireGuard
    /// notice only silence).
    pub fn cut(&mut self, host: &str) -> Result<(), LabError> {
        self.update(host, |i| i.cut = true)
    }

    /// Ends a [`Lab::cut`]; any loss set before stays in force.
    pub fn restore(&mut self, host: &str) -> Result<(), LabError> {
        self.update(host, |i| i.cut = false)
    }

    /// Adds `delay ± jitter` (uniform) to every frame's trip over `host`'s
    /// uplink, in each direction, so a round trip through it grows by about
    /// twice `delay`. Frames keep their order.
    ///
    /// The first call swaps the host's veth uplink for a TAP pair joined by
    /// `wgl-delay`: the interfaces keep their names, MACs and MTUs, the host
    /// keeps its addresses and routes, the peer end rejoins its bridge. A
    /// swap takes the old interfaces down, so do it before traffic starts:
    /// a NAT router's masquerade mappings, for one, are forgotten when its
    /// WAN goes down. Later calls (a zero delay included) only retune the
    /// running element; it stays in the link until the lab is dropped.
    pub fn set_latency(
        &mut self,
        host: &str,
        delay: Duration,
        jitter: Duration,
    ) -> Result<(), LabError> {
        if jitter > delay {
            return Err(LabError::Topology(format!(
                "{host}: jitter {jitter:?} is larger than delay {delay:?}; \
                 delays would be cut off at zero and the mean would shift"
            )));
        }
        let link = self.link(host)?.clone();
        let label = delay_label(host);
        if self.processes.iter().any(|p| p.label() == label) {
            self.tune_delay(host, delay, jitter)?;
        } else if !delay.is_zero() {
            self.insert_delay(&link, delay, jitter)?;
        }
        let imp = self.impairments.entry(host.to_owned()).or_default();
        imp.delay = delay;
        imp.jitter = jitter;
        Ok(())
    }

    /// Ends every impairment of `host`'s uplink. A delay element already in
    /// the link stays, forwarding at once (see [`Lab::set_latency`]).
    pub fn clear_impairment(&mut self, host: &str) -> Result<(), LabError> {
        self.set_latency(host, Duration::ZERO, Duration::ZERO)?;
        self.update(host, |i| *i = Impairment::default())
    }

    /// Changes `host`'s impairment with `f` and applies the rate and filter
    /// parts (latency is [`Lab::set_latency`]'s).
    fn update(&mut self, host: &str, f: impl FnOnce(&mut Impairment)) -> Result<(), LabError> {
        let link = self.link(host)?.clone();
        let old = self.impairments.get(host).cloned().unwrap_or_default();
        let mut new = old.clone();
        f(&mut new);
        if new.rate != old.rate {
            apply_rate(&link, old.rate.is_some(), new.rate)?;
        }
        if (new.cut, new.loss) != (old.cut, old.loss) {
            apply_filters(&link, &new)?;
        }
        // Latency stays what set_latency made it.
        new.delay = old.delay;
        new.jitter = old.jitter;
        self.impairments.insert(host.to_owned(), new);
        Ok(())
    }

    /// Puts a wgl-delay element into `link` in place of its veth pair.
    fn insert_delay(
        &mut self,
        link: &Link,
        delay: Duration,
        jitter: Duration,
    ) -> Result<(), LabError> {
        // Everything the new interfaces must look like, read before the old
        // ones go.
        let host_end = End::read(&link.host_ns, &link.host_if)?;
        let peer_end = End::read(&link.peer_ns, &link.peer_if)?;

        // The TAPs are born in the root namespace, shared by every lab and
        // the machine itself, hence names from the lab id.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 0x100;
        let tap_host = format!("wd{}h{n:x}", self.id().as_str());
        let tap_peer = format!("wd{}p{n:x}", self.id().as_str());
        if tap_host.len() > 15 {
            return Err(LabError::Topology(format!(
                "TAP name {tap_host} is longer than IFNAMSIZ allows; use a shorter lab id"
            )));
        }

        let label = delay_label(&link.host);
        let control = self.log_dir().join(format!("{label}.ctl"));
        let generation = write_control(&control, delay, jitter)?;
        let mut cmd = Command::new(delay_binary()?);
        cmd.arg("--tap")
            .arg(&tap_host)
            .arg("--tap")
            .arg(&tap_peer)
            .arg("--control")
            .arg(&control);
        let log = self.log_dir().join(format!("{label}.log"));
        // Pushed at once so that the lab kills it (and so its TAPs) on drop,
        // whatever fails below.
        self.processes.push(LabProcess::spawn(&label, cmd, &log)?);
        if let Err(e) = self.wait_delay_line(&link.host, &format!("ready {generation}")) {
            // Not left behind to be mistaken for a working element later.
            self.stop(&label);
            return Err(e);
        }

        // Deleting one end of a veth deletes both. Its routes go with it.
        run_args(
            "ip",
            &["-n", &link.host_ns, "link", "del", "dev", &link.host_if],
        )?;
        host_end.become_of(&tap_host, &link.host_ns, &link.host_if)?;
        peer_end.become_of(&tap_peer, &link.peer_ns, &link.peer_if)?;

        // The old devices took their qdiscs and netdev chains with them.
        let imp = self
            .impairments
            .get(&link.host)
            .cloned()
            .unwrap_or_default();
        apply_rate(link, false, imp.rate)?;
        apply_filters(link, &imp)?;
        Ok(())
    }

    /// Tells `host`'s running wgl-delay the new settings and waits until it
    /// uses them.
    fn tune_delay(
        &mut self,
        host: &str,
        delay: Duration,
        jitter: Duration,
    ) -> Result<(), LabError> {
        let control = self.log_dir().join(format!("{}.ctl", delay_label(host)));
        let generation = write_control(&control, delay, jitter)?;
        self.wait_delay_line(host, &format!("applied {generation}"))
    }

    /// Polls `host`'s wgl-delay log for the line `want`.
    fn wait_delay_line(&mut self, host: &str, want: &str) -> Result<(), LabError> {
        let label = delay_label(host);
        let deadline = Instant::now() + DELAY_START;
        loop {
            let p = self
                .processes
                .iter_mut()
                .find(|p| p.label() == label)
                .ok_or_else(|| LabError::Topology(format!("{label} is not running")))?;
            let text = p.log_text();
            if text.lines().any(|l| l == want) {
                return Ok(());
            }
            if let Some(status) = p.exited() {
                return Err(LabError::Command {
                    command: label,
                    status: status.to_string(),
                    stderr: text,
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout(format!(
                    "{label} did not print {want:?} within {DELAY_START:?}; its log:\n{text}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }
}

fn delay_label(host: &str) -> String {
    format!("{DELAY_BIN}-{host}")
}

/// Writes wgl-delay's control file (whole, by rename) with a fresh
/// generation, and returns the generation.
fn write_control(
    path: &std::path::Path,
    delay: Duration,
    jitter: Duration,
) -> Result<u64, LabError> {
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension("ctl.tmp");
    let text = format!(
        "{generation} {} {}\n",
        delay.as_micros(),
        jitter.as_micros()
    );
    let io = |source| LabError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(generation)
}

/// The wgl-delay binary: `$WGMESH_LAB_DELAY`, else next to this program or
/// in its parent directory (tests run from target/*/deps, binaries live in
/// target/*), else on `PATH`.
pub fn delay_binary() -> Result<PathBuf, LabError> {
    let not_found = |msg: String| LabError::Spawn {
        command: DELAY_BIN.into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, msg),
    };
    if let Some(p) = std::env::var_os(DELAY_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(not_found(format!(
                "{DELAY_ENV}={} is not a file",
                p.display()
            )))
        };
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        let dirs = exe
            .parent()
            .into_iter()
            .chain(exe.parent().and_then(|d| d.parent()));
        for dir in dirs {
            let candidate = dir.join(DELAY_BIN);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(dir.display().to_string());
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(DELAY_BIN);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        tried.push("$PATH".into());
    }
    Err(not_found(format!(
        "not found in {}; build it (`cargo build -p wgmesh-lab --bin {DELAY_BIN}`) \
         or point {DELAY_ENV} at it",
        tried.join(", ")
    )))
}

/// tbf on the egress of both ends: each end limits what it sends, so each
/// direction is limited once. `had_rate` says whether a tbf is there to
/// remove when `rate` is `None`.
fn apply_rate(link: &Link, had_rate: bool, rate: Option<u64>) -> Result<(), LabError> {
    for (ns, dev) in ends(link) {
        match rate {
            Some(bits) => {
                // The bucket holds 10 ms of traffic, and never less than a
                // few full frames (tbf drops frames larger than its bucket).
                let burst = (bits / 8 / 100).max(4 * 1514);
                run_args(
                    "tc",
                    &[
                        "-n",
                        ns,
                        "qdisc",
                        "replace",
                        "dev",
                        dev,
                        "root",
                        "tbf",
                        "rate",
                        &format!("{bits}bit"),
                        "burst",
                        &burst.to_string(),
                        "latency",
                        "100ms",
                    ],
                )?;
            }
            None if had_rate => {
                run_args("tc", &["-n", ns, "qdisc", "del", "dev", dev, "root"])?;
            }
            None => {}
        }
    }
    Ok(())
}

/// The loss/cut chain at ingress of both ends (so each direction is
/// filtered once), or none; one table per interface, replaced whole.
fn apply_filters(link: &Link, imp: &Impairment) -> Result<(), LabError> {
    let rule = if imp.cut {
        Some("drop".to_owned())
    } else if imp.loss > 0.0 {
        // In hundredths of a percent.
        let n = (imp.loss * 100.0).round() as u32;
        Some(format!("numgen random mod 10000 < {n} drop"))
    } else {
        None
    };
    for (ns, dev) in ends(link) {
        let table = format!("wgl_impair_{}", dev.replace('-', "_"));
        // Declaring the table first makes the delete succeed when there
        // was none; the file is applied as one transaction.
        let mut script = format!("table netdev {table} {{}}\ndelete table netdev {table}\n");
        if let Some(rule) = &rule {
            script.push_str(&format!(
                "table netdev {table} {{\n\
                 \tchain ingress {{\n\
                 \t\ttype filter hook ingress device \"{dev}\" priority {FILTER_PRIORITY}; policy accept;\n\
                 \t\t{rule}\n\
                 \t}}\n\
                 }}\n"
            ));
        }
        nft_script(Some(ns), &script)?;
    }
    Ok(())
}

fn ends(link: &Link) -> [(&str, &str); 2] {
    [
        (&link.host_ns, &link.host_if),
        (&link.peer_ns, &link.peer_if),
    ]
}

/// One end of a link as configured: what a replacement must copy.
#[derive(Debug)]
struct End {
    mac: String,
    mtu: u64,
    master: Option<String>,
    /// `ip addr add` arguments, without `dev`.
    addrs: Vec<Vec<String>>,
    /// `ip route add` arguments, without `dev`; those via a gateway last,
    /// as the gateway must be reachable first.
    routes: Vec<Vec<String>>,
}

fn ip_json(ns: &str, args: &[&str]) -> Result<Vec<Value>, LabError> {
    let mut full = vec!["-n", ns, "-j"];
    full.extend_from_slice(args);
    let out = run_args("ip", &full)?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| LabError::Topology(format!("`ip {}` printed no JSON: {e}", full.join(" "))))?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl End {
    fn read(ns: &str, dev: &str) -> Result<Self, LabError> {
        let links = ip_json(ns, &["addr", "show", "dev", dev])?;
        let link = links
            .first()
            .ok_or_else(|| LabError::Topology(format!("{ns}: no interface {dev}")))?;
        let mac = str_field(link, "address")
            .ok_or_else(|| LabError::Topology(format!("{ns}: {dev} has no MAC")))?
            .to_owned();
        let mtu = link.get("mtu").and_then(Value::as_u64).unwrap_or(1500);
        let master = str_field(link, "master").map(str::to_owned);

        let mut addrs = Vec::new();
        for a in link
            .get("addr_info")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // Link-local addresses come back by themselves.
            if str_field(a, "scope") == Some("link") && str_field(a, "family") == Some("inet6") {
                continue;
            }
            let (Some(local), Some(len)) = (
                str_field(a, "local"),
                a.get("prefixlen").and_then(Value::as_u64),
            ) else {
                continue;
            };
            let mut args = match str_field(a, "address") {
                // A point-to-point address: the prefix belongs to the peer.
                Some(peer) => vec![local.to_owned(), "peer".into(), format!("{peer}/{len}")],
                None => vec![format!("{local}/{len}")],
            };
            if let Some(b) = str_field(a, "broadcast") {
                args.extend(["broadcast".into(), b.to_owned()]);
            }
            if let Some(s) = str_field(a, "scope") {
                args.extend(["scope".into(), s.to_owned()]);
            }
            addrs.push(args);
        }

        let mut direct = Vec::new();
        let mut via = Vec::new();
        for family in ["-4", "-6"] {
            for r in ip_json(ns, &[family, "route", "show", "table", "all", "dev", dev])? {
                // The kernel's own routes (prefix, local, broadcast,
                // link-local) come back with the addresses.
                let kind = str_field(&r, "type").unwrap_or("unicast");
                if str_field(&r, "protocol") == Some("kernel")
                    || str_field(&r, "table") == Some("local")
                    || kind != "unicast"
                {
                    continue;
                }
                let Some(dst) = str_field(&r, "dst") else {
                    continue;
                };
                let mut args = vec![family.to_owned(), "route".into(), "add".into(), dst.into()];
                let gateway = str_field(&r, "gateway");
                if let Some(gw) = gateway {
                    args.extend(["via".into(), gw.to_owned()]);
                }
                for (key, word) in [
                    ("table", "table"),
                    ("protocol", "proto"),
                    ("scope", "scope"),
                    ("prefsrc", "src"),
                ] {
                    if let Some(v) = str_field(&r, key) {
                        args.extend([word.to_owned(), v.to_owned()]);
                    }
                }
                if let Some(m) = r.get("metric").and_then(Value::as_u64) {
                    args.extend(["metric".into(), m.to_string()]);
                }
                let onlink = r
                    .get("flags")
                    .and_then(Value::as_array)
                    .is_some_and(|f| f.iter().any(|x| x.as_str() == Some("onlink")));
                if onlink {
                    args.push("onlink".into());
                }
                if gateway.is_some() {
                    &mut via
                } else {
                    &mut direct
                }
                .push(args);
            }
        }
        direct.extend(via);
        Ok(Self {
            mac,
            mtu,
            master,
            addrs,
            routes: direct,
        })
    }

    /// Moves `tap` (in the root namespace) into `ns` as `dev`, configured
    /// like this end was.
    fn become_of(&self, tap: &str, ns: &str, dev: &str) -> Result<(), LabError> {
        run_args("ip", &["link", "set", "dev", tap, "netns", ns])?;
        let ip = |args: &[&str]| -> Result<(), LabError> {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            run_args("ip", &full).map(|_| ())
        };
        ip(&["link", "set", "dev", tap, "name", dev])?;
        ip(&[
            "link",
            "set",
            "dev",
            dev,
            "address",
            &self.mac,
            "mtu",
            &self.mtu.to_string(),
        ])?;
        if let Some(master) = &self.master {
            ip(&["link", "set", "dev", dev, "master", master])?;
        }
        ip(&["link", "set", "dev", dev, "up"])?;
        for a in &self.addrs {
            let mut args = vec!["addr", "add"];
            args.extend(a.iter().map(String::as_str));
            args.extend(["dev", dev]);
            ip(&args)?;
        }
        for r in &self.routes {
            let mut args: Vec<&str> = r.iter().map(String::as_str).collect();
            args.extend(["dev", dev]);
            ip(&args)?;
        }
        Ok(())
    }
}
