//! `wgmesh wg up|down`: a userspace WireGuard interface driven by a
//! wg-quick file, set up and torn down in wg-quick(8)'s order.
//!
//! `up` (foreground): PreUp, create the interface (TUN, UDP socket, UAPI
//! socket: wgmesh-dataplane), apply PrivateKey/ListenPort/FwMark/peers as
//! one UAPI-style `set`, addresses, link up, host routes that keep the
//! endpoints reachable, a route per AllowedIPs prefix, DNS, PostUp; then
//! serve until SIGTERM/SIGINT (or `wgmesh wg down`), and tear down: PreDown,
//! undo routes and DNS, remove the TUN device and the socket, PostDown.
//! How full tunnels (`0.0.0.0/0`) are routed is in `wgmesh_dataplane::netconf`.
//!
//! `up` without `--foreground` starts itself again with it, detached into
//! its own process group and logging to `/run/wgmesh/IFACE.log`, waits
//! until the interface is fully up, prints its name and exits. The serving
//! process records its PID in `/run/wgmesh/IFACE.pid` once up, which is
//! how `down` finds it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use wgmesh_core::wgquick::{self, Config, Endpoint};
use wgmesh_dataplane::netconf::{self, Undo};
use wgmesh_dataplane::uapi_server;
use wgmesh_dataplane::{Interface, InterfaceConfig};
use wgmesh_proto::uapi::{PeerChange, SetCommand};

/// Where the serving process keeps its PID file and, when started in the
/// background, its log.
pub const RUN_DIR: &str = "/run/wgmesh";

/// wg-quick's default MTU: 1500 minus the 80 bytes of the largest
/// (IPv6) WireGuard overhead. wg-quick derives it from the endpoints'
/// routes instead; set `MTU =` where the path is smaller.
pub(crate) const DEFAULT_MTU: u16 = 1420;

/// How long `up` waits for the background process to be up, hooks included.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long `down` waits for the serving process to finish its teardown.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Test-only, off-spec: shortens REKEY_AFTER_TIME (120 s, WireGuard paper
/// §6.1) to this many seconds, so a lab test can watch a real rekey with
/// wireguard-go while traffic flows. Never set it in production.
pub const DANGEROUS_REKEY_AFTER_ENV: &str = "WGMESH_DANGEROUS_REKEY_AFTER_SECS";

/// The timers [`DANGEROUS_REKEY_AFTER_ENV`] asks for, read once at `up`,
/// with a loud warning; `None` (the paper's timers) when it is unset.
///
/// Only REKEY_AFTER_TIME is shortened. The other timers keep their spec
/// values, and the relations WireGuard needs still hold for any value
/// allowed here: the initiator rekeys well before a session is rejected
/// (REJECT_AFTER_TIME, 180 s, is fixed in gotatun and in the peer) and
/// before the receive-side fallback at REJECT_AFTER_TIME − KEEPALIVE_TIMEOUT
/// − REKEY_TIMEOUT (165 s). A rekey handshake's retry (REKEY_TIMEOUT, 5 s)
/// may outlast a short REKEY_AFTER_TIME; the old session carries the data
/// meanwhile, as it does at 120 s.
fn dangerous_timer_params() -> Result<Option<wgmesh_proto::device::TimerParams>> {
    let Some(raw) = std::env::var_os(DANGEROUS_REKEY_AFTER_ENV) else {
        return Ok(None);
    };
    let after = rekey_after(&raw)?;
    let secs = after.as_secs();
    eprintln!(
        "wgmesh: WARNING: {DANGEROUS_REKEY_AFTER_ENV}={secs}: REKEY_AFTER_TIME is {secs} s \
         instead of 120 s. This is OFF-SPEC and meant ONLY for tests; unset it in production."
    );
    Ok(Some(wgmesh_proto::device::TimerParams {
        rekey_after_time: after..=after,
        ..wgmesh_proto::device::TimerParams::default()
    }))
}

/// [`DANGEROUS_REKEY_AFTER_ENV`]'s value: whole seconds, 1 to 119 (it only
/// ever shortens the 120 s of the spec).
fn rekey_after(raw: &std::ffi::OsStr) -> Result<Duration> {
    raw.to_str()
        .and_then(|s| s.trim().parse().ok())
        .filter(|s| (1..120).contains(s))
        .map(Duration::from_secs)
        .with_context(|| {
            format!("{DANGEROUS_REKEY_AFTER_ENV} must be whole seconds from 1 to 119, not {raw:?}")
        })
}

pub(crate) fn pid_path(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.pid"))
}

fn log_path(iface: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{iface}.log"))
}

pub(crate) fn uapi_path(iface: &str) -> PathBuf {
    uapi_server::socket_path(Path::new(uapi_server::SOCKET_DIR), iface)
}

/// wg-quick's rule for interface names: `^[a-zA-Z0-9_=+.-]{1,15}$`.
pub(crate) fn check_iface_name(name: &str) -> Result<()> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=+.-".contains(&b));
    if !ok {
        bail!("{name:?} is not a valid interface name: 1 to 15 of a-z A-Z 0-9 _ = + . -");
    }
    Ok(())
}

/// `wgmesh wg up FILE [--name IFACE] [--foreground]`.
pub fn up(file: &Path, name: Option<&str>, foreground: bool) -> Result<()> {
    let iface = match name {
        Some(n) => n.to_owned(),
        None => file
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_owned)
            .with_context(|| {
                format!("{}: cannot take an interface name from it", file.display())
            })?,
    };
    check_iface_name(&iface)?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    if let Ok(meta) = std::fs::metadata(file)
        && meta.permissions().mode() & 0o007 != 0
    {
        eprintln!(
            "wgmesh: warning: {} is world accessible (it may hold a private key)",
            file.display()
        );
    }
    let config = wgquick::parse(&text).with_context(|| format!("{}", file.display()))?;
    if uapi_server::is_up(&uapi_path(&iface)) {
        bail!(
            "{iface} is up already ({} answers)",
            uapi_path(&iface).display()
        );
    }
    if foreground {
        serve(&iface, &config)
    } else {
        start_background(file, &iface)
    }
}

/// Starts `wgmesh wg up FILE --name IFACE --foreground` detached, and waits
/// until it is up (its PID file names it and its UAPI socket answers).
fn start_background(file: &Path, iface: &str) -> Result<()> {
    let file = std::fs::canonicalize(file)
        .with_context(|| format!("cannot resolve {}", file.display()))?;
    let mut args: Vec<std::ffi::OsString> = vec!["wg".into(), "up".into(), file.into()];
    args.extend(["--name", iface, "--foreground"].map(Into::into));
    start_detached(iface, &args)?;
    println!("{iface}");
    Ok(())
}

/// Starts this executable again with `args` (a `--foreground` command
/// that serves `iface`), detached into its own process group with its
/// output in `/run/wgmesh/IFACE.log`, and waits until it is up: its PID
/// file names it and its UAPI socket answers. If it dies first, the error
/// carries the end of its log.
pub(crate) fn start_detached(iface: &str, args: &[std::ffi::OsString]) -> Result<()> {
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot create {RUN_DIR}"))?;
    let log = log_path(iface);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let exe = std::env::current_exe().context("cannot find the wgmesh executable")?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().context("log file")?)
        .stderr(out)
        // Its own process group: a Ctrl-C meant for the shell that ran
        // `up` does not reach the interface.
        .process_group(0)
        .spawn()
        .context("cannot start the background process")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child
            .try_wait()
            .context("waiting for the background process")?
        {
            bail!(
                "{iface} did not come up ({status}); the end of {}:\n{}",
                log.display(),
                log_tail(&log, 30)
            );
        }
        let recorded = read_pid(iface).is_some_and(|pid| pid == child.id());
        if recorded && uapi_server::is_up(&uapi_path(iface)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = signal(child.id(), nix::sys::signal::Signal::SIGTERM);
            bail!(
                "{iface} not up after {START_TIMEOUT:?}; stopped it. The end of {}:\n{}",
                log.display(),
                log_tail(&log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Why the serving process stops.
pub(crate) enum Stop {
    Signal(i32),
    Fatal(String),
}

/// Where a serving process learns that it must stop: SIGTERM and SIGINT,
/// and the interface's `on_fatal` (the sender, for [`on_fatal`]). Taken
/// first: a SIGTERM during setup is kept until setup is over, and then
/// tears down what was set up.
pub(crate) fn stop_channel() -> Result<(mpsc::Sender<Stop>, mpsc::Receiver<Stop>)> {
    let (tx, rx) = mpsc::channel::<Stop>();
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("cannot handle signals")?;
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if tx.send(Stop::Signal(sig)).is_err() {
                    return;
                }
            }
        });
    }
    Ok((tx, rx))
}

/// The interface's `on_fatal`: a [`Stop::Fatal`] into the stop channel.
pub(crate) fn on_fatal(tx: &mpsc::Sender<Stop>) -> wgmesh_dataplane::interface::OnFatal {
    let tx = std::sync::Mutex::new(tx.clone());
    Arc::new(move |why: &str| {
        let _ = tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Stop::Fatal(why.to_owned()));
    })
}

/// Brings the interface up, serves it until told to stop, tears it down.
fn serve(iface: &str, config: &Config) -> Result<()> {
    let (tx, rx) = stop_channel()?;
    if netconf::ip(&["link", "show", "dev", iface]).is_ok() {
        bail!("a network interface called {iface} exists already");
    }
    std::fs::create_dir_all(RUN_DIR).with_context(|| format!("cannot create {RUN_DIR}"))?;
    if config.interface.save_config == Some(true) {
        eprintln!("wgmesh: SaveConfig = true is not supported; the file is never written back");
    }
    let ifc = &config.interface;
    for hook in &ifc.pre_up {
        netconf::run_hook(hook, iface)?;
    }
    let mut undo = Undo::default();
    let interface = match bring_up(iface, config, &mut undo, on_fatal(&tx)) {
        Ok(i) => i,
        Err(e) => {
            // wg-quick's del_if on a failed add_if: no Down hooks.
            undo.run();
            return Err(e);
        }
    };
    let pid = pid_path(iface);
    netconf::write_atomic(&pid, &format!("{}\n", std::process::id()))?;
    eprintln!(
        "wgmesh: {iface} is up (UDP port {}, pid {})",
        interface.listen_port(),
        std::process::id()
    );

    let why = rx.recv().unwrap_or(Stop::Signal(SIGTERM));
    let failed = match why {
        Stop::Signal(sig) => {
            eprintln!("wgmesh: {iface}: signal {sig}, taking the interface down");
            None
        }
        Stop::Fatal(why) if interface.device_gone() => {
            // `ip link del` (wg-quick down's way), or the namespace went:
            // the operator's doing, so a clean stop, as for wireguard-go.
            eprintln!("wgmesh: {iface}: the interface was deleted ({why}); stopping");
            None
        }
        Stop::Fatal(why) => {
            eprintln!("wgmesh: {iface}: {why}; taking the interface down");
            Some(why)
        }
    };
    for hook in &ifc.pre_down {
        if let Err(e) = netconf::run_hook(hook, iface) {
            eprintln!("wgmesh: PreDown: {e}");
        }
    }
    undo.run();
    interface.shutdown();
    let _ = std::fs::remove_file(&pid);
    for hook in &ifc.post_down {
        if let Err(e) = netconf::run_hook(hook, iface) {
            eprintln!("wgmesh: PostDown: {e}");
        }
    }
    eprintln!("wgmesh: {iface} is down");
    match failed {
        Some(why) => bail!("{iface} failed: {why}"),
        None => Ok(()),
    }
}

/// `ip ARGS…`, echoed as wg-quick echoes its commands.
fn ip(args: &[&str]) -> Result<()> {
    eprintln!("[#] ip {}", args.join(" "));
    netconf::ip(args)?;
    Ok(())
}

/// Everything between PreUp and PostUp (PostUp included).
fn bring_up(
    iface: &str,
    config: &Config,
    undo: &mut Undo,
    on_fatal: wgmesh_dataplane::interface::OnFatal,
) -> Result<Interface> {
    let ifc = &config.interface;
    let cmd = set_command(config)?;
    let mut icfg = InterfaceConfig::new(iface);
    icfg.mtu = ifc.mtu.unwrap_or(DEFAULT_MTU);
    icfg.listen_port = ifc.listen_port.unwrap_or(0);
    // Up only after `addrgenmode none` below.
    icfg.link_up = false;
    icfg.on_fatal = Some(on_fatal);
    icfg.dangerous_timer_params = dangerous_timer_params()?;
    let interface = Interface::start(icfg)?;
    interface
        .apply(&cmd)
        .context("the configuration was refused")?;
    for addr in &ifc.addresses {
        ip(&[
            netconf::family(addr.addr()),
            "address",
            "add",
            &addr.to_string(),
            "dev",
            iface,
        ])?;
    }
    // No IPv6 link-local address, as the kernel's WireGuard devices have
    // none: it would only send router solicitations no peer routes.
    if let Err(e) = ip(&["link", "set", "dev", iface, "addrgenmode", "none"]) {
        eprintln!("wgmesh: {e}");
    }
    ip(&["link", "set", "up", "dev", iface])?;
    if let Some(table) = netconf::table(config) {
        let routes = netconf::routes(config);
        if table == "main" {
            let endpoints: Vec<IpAddr> = cmd
                .peers
                .iter()
                .filter_map(|p| p.endpoint.map(|e| e.ip()))
                .collect();
            for (ep, path) in netconf::endpoint_routes(&endpoints, &routes, iface)? {
                netconf::add_endpoint_route(ep, &path, undo);
            }
        }
        for net in &routes {
            let net_s = net.to_string();
            let mut args = vec![
                netconf::family(net.addr()),
                "route",
                "replace",
                net_s.as_str(),
                "dev",
                iface,
            ];
            if table != "main" {
                args.extend(["table", table.as_str()]);
            }
            ip(&args)?;
            args[2] = "del";
            undo.push("ip", &args);
        }
    }
    netconf::apply_dns(&ifc.dns, iface, undo);
    for hook in &ifc.post_up {
        netconf::run_hook(hook, iface)?;
    }
    Ok(interface)
}

/// The wg(8) part of the file as one `set`: what `wg setconf` would send.
fn set_command(config: &Config) -> Result<SetCommand> {
    let ifc = &config.interface;
    let mut peers = Vec::new();
    for p in &config.peers {
        let mut change = PeerChange::new(p.public_key);
        change.preshared_key = p.preshared_key.clone().map(Some);
        change.endpoint = match &p.endpoint {
            None => None,
            Some(e) => Some(resolve(e)?),
        };
        change.persistent_keepalive = p.persistent_keepalive;
        change.replace_allowed_ips = true;
        change.allowed_ips = p.allowed_ips.clone();
        peers.push(change);
    }
    Ok(SetCommand {
        private_key: ifc.private_key.clone().map(Some),
        listen_port: ifc.listen_port,
        fwmark: ifc.fwmark,
        replace_peers: true,
        peers,
    })
}

/// An endpoint's address; a host name is resolved once, now, as wg(8)
/// resolves it when it loads a file.
fn resolve(e: &Endpoint) -> Result<SocketAddr> {
    match e {
        Endpoint::Addr(a) => Ok(*a),
        Endpoint::Host { host, port } => (host.as_str(), *port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve endpoint {host}"))?
            .next()
            .with_context(|| format!("endpoint {host} has no address")),
    }
}

pub(crate) fn read_pid(iface: &str) -> Option<u32> {
    std::fs::read_to_string(pid_path(iface))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` runs (a zombie does not count) and is a wgmesh.
fn is_wgmesh(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if matches!(state, Some("Z" | "X") | None) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0).next().is_some_and(|argv0| {
                argv0.ends_with(b"wgmesh") || argv0.ends_with(crate::go_cmd::PROGRAM.as_bytes())
            })
        })
        .unwrap_or(false)
}

pub(crate) fn signal(pid: u32, sig: nix::sys::signal::Signal) -> Result<()> {
    let pid = i32::try_from(pid).context("PID out of range")?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
        .with_context(|| format!("cannot signal process {pid}"))
}

/// `wgmesh wg down IFACE`: SIGTERM to the process serving IFACE, then wait
/// for it to finish its teardown (PreDown, routes, TUN, PostDown).
pub fn down(iface: &str) -> Result<()> {
    check_iface_name(iface)?;
    let Some(pid) = read_pid(iface) else {
        if uapi_server::is_up(&uapi_path(iface)) {
            bail!(
                "{iface} is up but not served by wgmesh (no {}); stop the process that serves it",
                pid_path(iface).display()
            );
        }
        bail!("{iface} is not up");
    };
    if !is_wgmesh(pid) {
        let _ = std::fs::remove_file(pid_path(iface));
        bail!("{iface} is not up (its PID file named process {pid}, which is gone)");
    }
    signal(pid, nix::sys::signal::Signal::SIGTERM)?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while is_wgmesh(pid) {
        if Instant::now() >= deadline {
            bail!("process {pid} serving {iface} has not ended after {STOP_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("wgmesh: {iface} is down");
    Ok(())
}

/// How long `stats` waits for the serving process to answer.
const STATS_TIMEOUT: Duration = Duration::from_secs(5);

/// `wgmesh wg stats IFACE [--json]`: the running interface's counters
/// (packets, handshakes, cookie replies, and drops by reason), asked for
/// over its UAPI socket with wgmesh's one extra request
/// ([`wgmesh_dataplane::interface::STATS_REQUEST`]). One `name value` line
/// each, or one JSON object.
pub fn stats(iface: &str, json: bool) -> Result<()> {
    check_iface_name(iface)?;
    let path = uapi_path(iface);
    let reply = uapi_server::request(
        &path,
        wgmesh_dataplane::interface::STATS_REQUEST,
        STATS_TIMEOUT,
    )
    .with_context(|| format!("{iface}: cannot ask {}", path.display()))?;
    let counters = parse_stats(&reply).with_context(|| {
        format!("{iface}: no wgmesh counters in the reply (is it a wgmesh interface?)")
    })?;
    if json {
        let object: serde_json::Map<String, serde_json::Value> = counters
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::from(v)))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&object).expect("invariant: a map of numbers serialises")
        );
    } else {
        let width = counters.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (name, value) in counters {
            println!("{name:width$}  {value}");
        }
    }
    Ok(())
}

/// The `name=value` lines of a stats reply, in order, without `errno`;
/// an error unless it ends in `errno=0`.
fn parse_stats(reply: &str) -> Result<Vec<(String, u64)>> {
    match uapi_server::reply_errno(reply) {
        Some(0) => {}
        Some(errno) => bail!("refused with errno {errno}"),
        None => bail!("no errno in {reply:?}"),
    }
    let mut counters = Vec::new();
    for line in reply.lines().filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once('=')
            .with_context(|| format!("not name=value: {line:?}"))?;
        if name == "errno" {
            continue;
        }
        let value = value
            .parse()
            .with_context(|| format!("not a number: {line:?}"))?;
        counters.push((name.to_owned(), value));
    }
    if counters.is_empty() {
        bail!("no counters");
    }
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_replies_parse_in_order_and_refusals_fail() {
        let got = parse_stats("rx_data_packets=3\ndropped_malformed=12\nerrno=0\n\n").unwrap();
        assert_eq!(
            got,
            [
                ("rx_data_packets".to_owned(), 3),
                ("dropped_malformed".to_owned(), 12)
            ]
        );
        // wireguard-go: an unknown operation.
        assert!(parse_stats("errno=-71\n\n").is_err());
        assert!(parse_stats("errno=0\n\n").is_err());
        assert!(parse_stats("x=y\nerrno=0\n\n").is_err());
    }

    #[test]
    fn dangerous_rekey_after_only_shortens() {
        let ok = |s: &str| rekey_after(std::ffi::OsStr::new(s)).ok();
        assert_eq!(ok("3"), Some(Duration::from_secs(3)));
        assert_eq!(ok(" 119 "), Some(Duration::from_secs(119)));
        for bad in ["0", "120", "600", "-1", "1.5", "", "three"] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn interface_names() {
        for ok in ["wg0", "a", "wg-home.1", "x_=+.-123456789"] {
            check_iface_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", "sixteen-chars-xx", "wg 0", "wg/0", "wg0\n"] {
            assert!(check_iface_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_file_becomes_one_set() {
        let text = "[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\
                    ListenPort = 51820\nFwMark = 0x10\nAddress = 10.0.0.1/24\n\
                    [Peer]\nPublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
                    PresharedKey = FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=\n\
                    Endpoint = 192.0.2.1:51820\nAllowedIPs = 10.0.0.2/32, fd00::2/128\n\
                    PersistentKeepalive = 25\n";
        let config = wgquick::parse(text).expect("valid");
        let cmd = set_command(&config).expect("builds");
        assert!(cmd.replace_peers);
        assert_eq!(cmd.listen_port, Some(51820));
        assert_eq!(cmd.fwmark, Some(16));
        assert!(matches!(cmd.private_key, Some(Some(_))));
        let [p] = &cmd.peers[..] else {
            panic!("one peer: {:?}", cmd.peers)
        };
        assert_eq!(p.endpoint, Some("192.0.2.1:51820".parse().expect("addr")));
        assert!(matches!(p.preshared_key, Some(Some(_))));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert!(p.replace_allowed_ips);
        assert_eq!(p.allowed_ips.len(), 2);
    }
}
