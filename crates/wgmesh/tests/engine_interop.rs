//! The userspace engine against the real thing: `wgmesh wg up` in one lab
//! host, wireguard-go (brought up wg-quick style by the lab) in another,
//! real TUN devices, real UDP, and `wg(8)` talking to wgmesh's UAPI socket.
//!
//! Every test builds its own lab; interface names come from the lab id, so
//! tests run in parallel without clashing in /var/run/wireguard.

mod support;

use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wgmesh_core::key::{PresharedKey, PrivateKey, PublicKey};
use wgmesh_dataplane::uapi_server;
use wgmesh_lab::wgnode::{self, WgNode};
use wgmesh_lab::{Hairpin, Lab, NatKind};

const WGMESH: &str = env!("CARGO_BIN_EXE_wgmesh");

/// The first ping may wait for a handshake (and its retry: REKEY_TIMEOUT is 5 s).
const FIRST_PING: Duration = Duration::from_secs(15);
/// How long wgmesh may take to come up.
const UP_TIMEOUT: Duration = Duration::from_secs(20);

const A_ADDR: &str = "203.0.113.1";
const B_ADDR: &str = "203.0.113.2";
const A_V4: &str = "10.77.0.1";
const B_V4: &str = "10.77.0.2";
const A_V6: &str = "fd00::1";
const B_V6: &str = "fd00::2";
const WG_LABEL: &str = "wgmesh-a";

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b
}

/// Who sends the first handshake: only that side gets the other's Endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Initiator {
    Wgmesh,
    WireguardGo,
}

struct Keys {
    a: PrivateKey,
    b: PrivateKey,
    psk: Option<PresharedKey>,
}

impl Keys {
    fn new(psk: bool) -> Self {
        Self {
            a: PrivateKey::from_random(random32()),
            b: PrivateKey::from_random(random32()),
            psk: psk.then(|| PresharedKey::from_random(random32())),
        }
    }
}

/// The wgmesh side's file (host a).
fn conf_a(keys: &Keys, initiator: Initiator, extra_interface: &str) -> String {
    let mut s = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = {A_V4}/24, {A_V6}/64\n{extra_interface}\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {B_V4}/32, {B_V6}/128\n",
        keys.a.to_base64().as_str(),
        keys.b.public_key(),
    );
    if let Some(psk) = &keys.psk {
        s.push_str(&format!("PresharedKey = {}\n", psk.to_base64().as_str()));
    }
    if initiator == Initiator::Wgmesh {
        s.push_str(&format!("Endpoint = {B_ADDR}:51820\n"));
    }
    s
}

/// The wireguard-go side's file (host b).
fn conf_b(keys: &Keys, initiator: Initiator) -> String {
    let mut s = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = {B_V4}/24, {B_V6}/64\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {A_V4}/32, {A_V6}/128\n",
        keys.b.to_base64().as_str(),
        keys.a.public_key(),
    );
    if let Some(psk) = &keys.psk {
        s.push_str(&format!("PresharedKey = {}\n", psk.to_base64().as_str()));
    }
    if initiator == Initiator::WireguardGo {
        s.push_str(&format!("Endpoint = {A_ADDR}:51820\n"));
    }
    s
}

/// Writes a secret file (0600) into the lab's log directory.
fn write_conf(lab: &Lab, name: &str, text: &str) -> PathBuf {
    let path = lab.log_dir().join(name);
    support::write_secret(&path, text);
    path
}

fn pid_file(iface: &str) -> PathBuf {
    PathBuf::from(format!("/run/wgmesh/{iface}.pid"))
}

fn socket_file(iface: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{iface}.sock"))
}

/// Starts `wgmesh wg up --foreground` in host `host` and waits until it
/// says it is up (its PID file appears).
fn start_wgmesh(lab: &mut Lab, host: &str, conf: &Path, iface: &str) {
    start_wgmesh_with_env(lab, host, conf, iface, &[]);
}

/// [`start_wgmesh`] with extra environment variables (`NAME=value`) for
/// wgmesh alone.
fn start_wgmesh_with_env(lab: &mut Lab, host: &str, conf: &Path, iface: &str, env: &[&str]) {
    support::wgmesh_wg_up(lab, host, WG_LABEL, conf, iface, env, UP_TIMEOUT);
}
/// Two public hosts: wgmesh on a, wireguard-go on b.
struct Pair {
    lab: Lab,
    keys: Keys,
    a_iface: String,
    b: WgNode,
}

fn pair(test: &str, psk: bool, initiator: Initiator, extra_a: &str) -> Option<Pair> {
    pair_with_env(test, psk, initiator, extra_a, &[])
}

/// [`pair`], wgmesh started with the extra environment `env` (`NAME=value`).
fn pair_with_env(
    test: &str,
    psk: bool,
    initiator: Initiator,
    extra_a: &str,
    env: &[&str],
) -> Option<Pair> {
    let mut lab = Lab::for_test(test)?;
    lab.add_public_host("a", A_ADDR.parse().expect("ip"))
        .expect("host a");
    lab.add_public_host("b", B_ADDR.parse().expect("ip"))
        .expect("host b");
    let keys = Keys::new(psk);
    let a_iface = lab.id().wg_iface(0);
    let b_iface = lab.id().wg_iface(1);
    let b = wgnode::up(&mut lab, "b", &b_iface, &conf_b(&keys, initiator))
        .unwrap_or_else(|e| panic!("wireguard-go: {e}\n{}", lab.logs()));
    let extra_a = extra_a.replace("{dir}", &lab.log_dir().to_string_lossy());
    let conf = write_conf(&lab, "a.conf", &conf_a(&keys, initiator, &extra_a));
    start_wgmesh_with_env(&mut lab, "a", &conf, &a_iface, env);
    Some(Pair {
        lab,
        keys,
        a_iface,
        b,
    })
}

impl Pair {
    fn ping(&self, from: &str, to: &str) {
        let to: IpAddr = to.parse().expect("ip");
        self.lab
            .ping_until(from, to, FIRST_PING)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.lab.logs()));
    }

    fn exec(&self, host: &str, args: &[&str]) -> String {
        let out = self
            .lab
            .exec(host, args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}\n{}", self.lab.logs()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn b_pub(&self) -> PublicKey {
        self.keys.b.public_key()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Both sides end as their operators would end them (SIGTERM), so
        // they remove their sockets; the lab would SIGKILL them.
        let running = self
            .lab
            .processes()
            .iter_mut()
            .any(|p| p.label() == WG_LABEL && p.exited().is_none());
        if running {
            self.lab.stop(WG_LABEL);
        }
        let _ = wgnode::down(&mut self.lab, &self.b);
        remove_leftovers(&[&self.a_iface, &self.b.iface]);
    }
}

/// Removes what a killed (not terminated) engine leaves: its PID file, log
/// and UAPI socket. Interface names are unique to a lab, so these are ours.
fn remove_leftovers(ifaces: &[&str]) {
    for iface in ifaces {
        let _ = std::fs::remove_file(pid_file(iface));
        let _ = std::fs::remove_file(format!("/run/wgmesh/{iface}.log"));
        let _ = std::fs::remove_file(socket_file(iface));
    }
}

/// Calls [`remove_leftovers`] when dropped, also when a test panics.
struct Leftovers(Vec<String>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let names: Vec<&str> = self.0.iter().map(String::as_str).collect();
        remove_leftovers(&names);
    }
}

/// Both sides initiate, with and without a preshared key, over IPv4 and
/// IPv6 overlay addresses; a fresh lab for each case.
#[test]
fn each_side_initiates_with_and_without_psk() {
    for initiator in [Initiator::Wgmesh, Initiator::WireguardGo] {
        for psk in [false, true] {
            let Some(p) = pair(
                "each_side_initiates_with_and_without_psk",
                psk,
                initiator,
                "",
            ) else {
                return;
            };
            let case = format!("{initiator:?} initiates, psk {psk}");
            println!("{case}");
            // The initiator's side pings first: only it knows an endpoint.
            let (first, second) = match initiator {
                Initiator::Wgmesh => (("a", B_V4), ("b", A_V4)),
                Initiator::WireguardGo => (("b", A_V4), ("a", B_V4)),
            };
            p.ping(first.0, first.1);
            p.ping(second.0, second.1);
            p.ping("a", B_V6);
            p.ping("b", A_V6);
            // wgmesh learned (or kept) b's endpoint from its packets.
            let show = p.exec("a", &["wg", "show", &p.a_iface, "endpoints"]);
            assert!(
                show.contains(&format!("{}\t{B_ADDR}:51820", p.b_pub())),
                "{case}: {show}"
            );
            let psk_line = p.exec("a", &["wg", "show", &p.a_iface, "preshared-keys"]);
            assert_eq!(psk_line.contains("(none)"), !psk, "{case}: {psk_line}");
        }
    }
}

/// `wg show` on the wgmesh interface: peer, endpoint, latest handshake and
/// transfer counters, as for any WireGuard interface.
#[test]
fn wg_show_lists_peer_endpoint_handshake_and_transfer() {
    let Some(p) = pair(
        "wg_show_lists_peer_endpoint_handshake_and_transfer",
        false,
        Initiator::Wgmesh,
        "",
    ) else {
        return;
    };
    p.ping("a", B_V4);
    let show = p.exec("a", &["wg", "show", &p.a_iface]);
    println!("{show}");
    for want in [
        format!("interface: {}", p.a_iface),
        format!("public key: {}", p.keys.a.public_key()),
        "listening port: 51820".to_owned(),
        format!("peer: {}", p.b_pub()),
        format!("endpoint: {B_ADDR}:51820"),
        format!("allowed ips: {B_V4}/32, {B_V6}/128"),
        "latest handshake: ".to_owned(),
        "transfer: ".to_owned(),
    ] {
        assert!(show.contains(&want), "missing {want:?} in:\n{show}");
    }
    // The machine-readable form: a handshake time and both counters non-zero.
    let dump = p.exec("a", &["wg", "show", &p.a_iface, "dump"]);
    let peer: Vec<&str> = dump
        .lines()
        .nth(1)
        .expect("a peer line")
        .split('\t')
        .collect();
    assert_eq!(peer[0], p.b_pub().to_string());
    let num = |i: usize| peer[i].parse::<u64>().expect("a number");
    assert!(num(4) > 0, "latest handshake: {dump}");
    assert!(num(5) > 0 && num(6) > 0, "rx/tx bytes: {dump}");
    // `wg showconf` reads it back in wg's own format.
    let conf = p.exec("a", &["wg", "showconf", &p.a_iface]);
    assert!(
        conf.contains(&format!("PublicKey = {}", p.b_pub())),
        "{conf}"
    );
    // …and `wg syncconf` takes it back (a get, then a set of the difference).
    let path = write_conf(&p.lab, "showconf.conf", &conf);
    p.exec(
        "a",
        &["wg", "syncconf", &p.a_iface, &path.to_string_lossy()],
    );
    p.ping("a", B_V4);
}

/// `wg set` removes the peer (traffic stops) and adds it back (traffic
/// resumes); a new listen port rebinds the socket.
#[test]
fn wg_set_removes_and_readds_a_peer_and_moves_the_port() {
    let Some(p) = pair(
        "wg_set_removes_and_readds_a_peer_and_moves_the_port",
        true,
        Initiator::Wgmesh,
        "",
    ) else {
        return;
    };
    p.ping("a", B_V4);
    let b_pub = p.b_pub().to_string();
    p.exec("a", &["wg", "set", &p.a_iface, "peer", &b_pub, "remove"]);
    assert_eq!(p.exec("a", &["wg", "show", &p.a_iface, "peers"]).trim(), "");
    let lost = p
        .lab
        .host("a")
        .expect("a")
        .netns
        .try_exec(&["ping", "-c", "3", "-i", "0.3", "-W", "1", "-q", B_V4])
        .expect("ping runs");
    assert!(!lost.status.success(), "traffic must stop without the peer");

    let psk = write_conf(
        &p.lab,
        "psk",
        p.keys.psk.as_ref().expect("psk").to_base64().as_str(),
    );
    p.exec(
        "a",
        &[
            "wg",
            "set",
            &p.a_iface,
            "peer",
            &b_pub,
            "preshared-key",
            &psk.to_string_lossy(),
            "allowed-ips",
            &format!("{B_V4}/32,{B_V6}/128"),
            "endpoint",
            &format!("{B_ADDR}:51820"),
        ],
    );
    p.ping("a", B_V4);
    p.ping("b", A_V6);

    // A new listen port: the socket moves, and b follows it.
    p.exec("a", &["wg", "set", &p.a_iface, "listen-port", "51999"]);
    assert_eq!(
        p.exec("a", &["wg", "show", &p.a_iface, "listen-port"])
            .trim(),
        "51999"
    );
    // The old socket closes once the reader's blocked recv on it returns.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sockets = p.exec("a", &["ss", "-uln"]);
        assert!(sockets.contains(":51999"), "{sockets}");
        if !sockets.contains(":51820") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old socket stays open: {sockets}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let a_pub = p.keys.a.public_key().to_string();
    p.exec(
        "b",
        &[
            "wg",
            "set",
            &p.b.iface,
            "peer",
            &a_pub,
            "endpoint",
            &format!("{A_ADDR}:51999"),
        ],
    );
    p.ping("b", A_V4);
    p.ping("a", B_V4);
}

/// Malformed UAPI requests get an errno back, and the server goes on
/// serving (wg still works, traffic still flows).
#[test]
fn malformed_uapi_requests_get_errno_and_serving_goes_on() {
    let Some(p) = pair(
        "malformed_uapi_requests_get_errno_and_serving_goes_on",
        false,
        Initiator::Wgmesh,
        "",
    ) else {
        return;
    };
    p.ping("a", B_V4);
    let sock = socket_file(&p.a_iface);
    let t = Duration::from_secs(5);
    let cases: [(&[u8], i32); 5] = [
        (b"bogus=1\n\n", -71),
        (b"set=1\nlisten_port=notaport\n\n", -22),
        (b"set=1\nprivate_key=zz\n\n", -22),
        (b"set=1\npublic_key=00\nendpoint=nowhere\n\n", -22),
        (b"get=1\ntrailing\n\n", -22),
    ];
    for (req, errno) in cases {
        let reply = uapi_server::request(&sock, req, t)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(req)));
        assert_eq!(
            uapi_server::reply_errno(&reply),
            Some(errno),
            "{:?} → {reply:?}",
            String::from_utf8_lossy(req)
        );
    }
    // Binary garbage, then a client that hangs up mid-request.
    let _ = uapi_server::request(&sock, &[0xff, 0x00, 0x13, b'\n', b'\n'], t);
    {
        use std::io::Write as _;
        let mut c = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
        c.write_all(b"set=1\nlisten_po").expect("write");
    }
    let reply = uapi_server::request(&sock, b"get=1\n\n", t).expect("get still answered");
    assert!(reply.contains("listen_port=51820\n"), "{reply}");
    assert_eq!(uapi_server::reply_errno(&reply), Some(0));
    assert!(p.exec("a", &["wg", "show", &p.a_iface]).contains("peer: "));
    p.ping("b", A_V4);
}

/// Hooks run in wg-quick's order, and SIGTERM takes everything away:
/// the interface, its routes, the UAPI socket and the PID file.
#[test]
fn sigterm_runs_down_hooks_and_removes_everything() {
    let hooks = "PreUp = echo preup-%i >> {dir}/hooks\n\
                 PostUp = echo postup-%i >> {dir}/hooks\n\
                 PreDown = echo predown-%i >> {dir}/hooks\n\
                 PostDown = echo postdown-%i >> {dir}/hooks";
    let Some(mut p) = pair(
        "sigterm_runs_down_hooks_and_removes_everything",
        false,
        Initiator::Wgmesh,
        hooks,
    ) else {
        return;
    };
    p.ping("a", B_V4);
    let iface = p.a_iface.clone();
    let routes = p.exec("a", &["ip", "route", "show", "dev", &iface]);
    assert!(routes.contains(&format!("{B_V4} ")), "{routes}");
    assert!(socket_file(&iface).exists());

    let proc = p
        .lab
        .processes()
        .iter_mut()
        .find(|x| x.label() == WG_LABEL)
        .expect("spawned");
    let status = proc
        .terminate(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("wgmesh did not end on SIGTERM:\n{}", proc.log_text()));
    let log = proc.log_text();
    assert!(status.success(), "{status}:\n{log}");

    let link = p
        .lab
        .host("a")
        .expect("a")
        .netns
        .try_exec(&["ip", "link", "show", "dev", &iface])
        .expect("ip runs");
    assert!(!link.status.success(), "the TUN device is gone:\n{log}");
    let routes = p.exec("a", &["ip", "-4", "route", "show"]);
    assert!(!routes.contains("10.77."), "routes gone: {routes}");
    assert!(!socket_file(&iface).exists(), "socket removed:\n{log}");
    assert!(!pid_file(&iface).exists(), "PID file removed:\n{log}");
    let ran = std::fs::read_to_string(p.lab.log_dir().join("hooks")).expect("hooks ran");
    assert_eq!(
        ran,
        format!("preup-{iface}\npostup-{iface}\npredown-{iface}\npostdown-{iface}\n"),
        "{log}"
    );
}

/// Without --foreground, `wg up` returns once the interface is up and
/// prints its name; `wg down` ends it.
#[test]
fn background_up_and_wg_down() {
    let Some(mut lab) = Lab::for_test("background_up_and_wg_down") else {
        return;
    };
    lab.add_public_host("a", A_ADDR.parse().expect("ip"))
        .expect("a");
    lab.add_public_host("b", B_ADDR.parse().expect("ip"))
        .expect("b");
    let keys = Keys::new(false);
    let a_iface = lab.id().wg_iface(0);
    let b_iface = lab.id().wg_iface(1);
    let _leftovers = Leftovers(vec![a_iface.clone(), b_iface.clone()]);
    let b = wgnode::up(&mut lab, "b", &b_iface, &conf_b(&keys, Initiator::Wgmesh))
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let conf = write_conf(&lab, "a.conf", &conf_a(&keys, Initiator::Wgmesh, ""));
    let conf = conf.to_string_lossy().into_owned();
    let log = PathBuf::from(format!("/run/wgmesh/{a_iface}.log"));
    let up = lab
        .host("a")
        .expect("a")
        .netns
        .try_exec(&[WGMESH, "wg", "up", &conf, "--name", &a_iface])
        .expect("runs");
    let bg_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        up.status.success(),
        "{}\n{bg_log}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), a_iface);
    lab.ping_until("a", B_V4.parse().expect("ip"), FIRST_PING)
        .unwrap_or_else(|e| panic!("{e}\n{bg_log}"));
    // A second `up` is refused while the first serves.
    let again = lab
        .host("a")
        .expect("a")
        .netns
        .try_exec(&[WGMESH, "wg", "up", &conf, "--name", &a_iface])
        .expect("runs");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("up already"));

    let pid: u32 = std::fs::read_to_string(pid_file(&a_iface))
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    let down = std::process::Command::new(WGMESH)
        .args(["wg", "down", &a_iface])
        .output()
        .expect("runs");
    let bg_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        down.status.success(),
        "{}\n{bg_log}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(!running(pid), "process gone");
    assert!(!socket_file(&a_iface).exists());
    assert!(!pid_file(&a_iface).exists());
    let link = lab
        .host("a")
        .expect("a")
        .netns
        .try_exec(&["ip", "link", "show", "dev", &a_iface])
        .expect("ip runs");
    assert!(!link.status.success(), "interface removed:\n{bg_log}");
    let again = std::process::Command::new(WGMESH)
        .args(["wg", "down", &a_iface])
        .output()
        .expect("runs");
    assert!(!again.status.success(), "down twice fails");
    wgnode::down(&mut lab, &b).expect("wireguard-go down");
}

/// A full tunnel (AllowedIPs = 0.0.0.0/0) from behind a NAT router: the
/// host keeps reaching the peer's endpoint through its old gateway, every
/// other destination goes into the tunnel, and down restores the table.
#[test]
fn full_tunnel_keeps_the_endpoint_reachable() {
    let Some(mut lab) = Lab::for_test("full_tunnel_keeps_the_endpoint_reachable") else {
        return;
    };
    lab.add_public_host("b", B_ADDR.parse().expect("ip"))
        .expect("b");
    lab.add_router(
        "r",
        "198.51.100.1".parse().expect("ip"),
        "10.1.0.0/24".parse().expect("net"),
        NatKind::PortRestricted,
        Hairpin::Off,
    )
    .expect("router");
    lab.add_lan_host("a", "r").expect("a");
    let keys = Keys::new(false);
    let a_iface = lab.id().wg_iface(0);
    let b_iface = lab.id().wg_iface(1);
    let _leftovers = Leftovers(vec![a_iface.clone(), b_iface.clone()]);
    let b_conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nAddress = {B_V4}/24\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = {A_V4}/32\n",
        keys.b.to_base64().as_str(),
        keys.a.public_key()
    );
    let b = wgnode::up(&mut lab, "b", &b_iface, &b_conf)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let a_conf = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {A_V4}/24\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0\nEndpoint = {B_ADDR}:51820\n\
         PersistentKeepalive = 5\n",
        keys.a.to_base64().as_str(),
        keys.b.public_key()
    );
    let conf = write_conf(&lab, "a.conf", &a_conf);
    let before = String::from_utf8_lossy(
        &lab.exec("a", &["ip", "-4", "route", "show"])
            .expect("routes")
            .stdout,
    )
    .into_owned();
    start_wgmesh(&mut lab, "a", &conf, &a_iface);
    lab.ping_until("a", B_V4.parse().expect("ip"), FIRST_PING)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()));
    let get = |dst: &str| {
        String::from_utf8_lossy(
            &lab.exec("a", &["ip", "route", "get", dst])
                .expect("route get")
                .stdout,
        )
        .into_owned()
    };
    let to_endpoint = get(B_ADDR);
    assert!(
        to_endpoint.contains("via 10.1.0.1 dev eth0"),
        "the endpoint stays outside the tunnel: {to_endpoint}"
    );
    let elsewhere = get("192.0.2.99");
    assert!(
        elsewhere.contains(&format!("dev {a_iface}")),
        "everything else goes into the tunnel: {elsewhere}"
    );
    lab.stop(WG_LABEL);
    let after = String::from_utf8_lossy(
        &lab.exec("a", &["ip", "-4", "route", "show"])
            .expect("routes")
            .stdout,
    )
    .into_owned();
    assert_eq!(after, before, "down restores the routing table");
    wgnode::down(&mut lab, &b).expect("wireguard-go down");
}

/// 100 MB each way over TCP through the tunnel, checksums compared.
#[test]
fn tcp_100mb_each_way_checksums_match() {
    let Some(mut p) = pair(
        "tcp_100mb_each_way_checksums_match",
        true,
        Initiator::Wgmesh,
        "",
    ) else {
        return;
    };
    p.ping("a", B_V4);
    transfer_100mb(
        &mut p,
        "v4",
        &[
            ("a", "b", format!("{B_V4}:5001"), "wgmesh→wireguard-go"),
            ("b", "a", format!("{A_V4}:5001"), "wireguard-go→wgmesh"),
        ],
    );
    let dump = p.exec("a", &["wg", "show", &p.a_iface, "transfer"]);
    println!("wgmesh transfer counters: {}", dump.trim());
}

/// Whether `pid` runs: a zombie waiting for init to reap it does not.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X"))
    })
}

/// Waits for a line containing `what` in a lab process's log; returns it.
fn wait_for_log(lab: &mut Lab, label: &str, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let proc = lab
            .processes()
            .iter_mut()
            .find(|p| p.label() == label)
            .expect("spawned");
        let text = proc.log_text();
        if let Some(line) = text.lines().find(|l| l.contains(what)) {
            return line.to_owned();
        }
        if let Some(status) = proc.exited() {
            let text = proc.log_text();
            if let Some(line) = text.lines().find(|l| l.contains(what)) {
                return line.to_owned();
            }
            panic!("{label} exited ({status}) without {what:?}:\n{text}");
        }
        assert!(
            Instant::now() < deadline,
            "{label}: no {what:?}:\n{}",
            lab.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Roaming (WireGuard paper §2.1): in the middle of a 100 MB transfer, the
/// wireguard-go side, which sends, moves to a new address and a new port;
/// wgmesh follows its authenticated packets there (its TCP ACKs go to the
/// new endpoint), and the transfer completes intact.
///
/// The roaming side sends: that is what roaming needs. Had it only
/// received, nothing authenticated would come from its new address until
/// its own timers sent something, as with any WireGuard.
///
/// wgmesh initiated the session here; [`roaming_initiator_moves_mid_transfer`]
/// has wireguard-go initiate it.
#[test]
fn roaming_peer_moves_mid_transfer() {
    roam_mid_transfer("roaming_peer_moves_mid_transfer", Initiator::Wgmesh);
}

/// Roaming with the other side initiating (issue 4: "each side
/// initiating"): wireguard-go alone knows an endpoint, so wgmesh learnt
/// wireguard-go's from its handshake; wireguard-go then moves to a new
/// address and port mid-transfer, and wgmesh follows it there just the same.
#[test]
fn roaming_initiator_moves_mid_transfer() {
    roam_mid_transfer(
        "roaming_initiator_moves_mid_transfer",
        Initiator::WireguardGo,
    );
}

/// wireguard-go (host b) sends 100 MB to wgmesh (host a) over TCP and, once
/// 5 % has arrived, moves to a new address and listen port; the transfer
/// must complete with its checksum, and wgmesh's endpoint must be the new one.
fn roam_mid_transfer(test: &str, initiator: Initiator) {
    let Some(mut p) = pair(test, false, initiator, "") else {
        return;
    };
    let tool = Path::new(WGMESH).with_file_name("wgl-udp");
    assert!(tool.is_file(), "{} is missing", tool.display());
    let tool = tool.to_string_lossy().into_owned();
    // The initiator pings first: only it knows an endpoint.
    match initiator {
        Initiator::Wgmesh => p.ping("a", B_V4),
        Initiator::WireguardGo => {
            p.ping("b", A_V4);
            let endpoints = p.exec("a", &["wg", "show", &p.a_iface, "endpoints"]);
            assert!(
                endpoints.contains(&format!("{B_ADDR}:51820")),
                "wgmesh learnt wireguard-go's endpoint from its handshake: {endpoints}"
            );
        }
    }
    let dir = p.lab.log_dir().to_owned();
    let src = dir.join("random.bin");
    {
        let mut f = std::fs::File::create(&src).expect("create");
        let mut rnd = std::fs::File::open("/dev/urandom").expect("urandom");
        std::io::copy(&mut (&mut rnd).take(100_000_000), &mut f).expect("fill");
    }
    let out = dir.join("received.bin");
    let bind = format!("{A_V4}:5001");
    p.lab
        .spawn(
            "a",
            "sink",
            &[
                &tool,
                "tcp-sink",
                "--bind",
                &bind,
                "--out",
                &out.to_string_lossy(),
            ],
        )
        .expect("sink");
    wait_for_log(&mut p.lab, "sink", "ready");
    p.lab
        .spawn(
            "b",
            "source",
            &[
                &tool,
                "tcp-source",
                "--to",
                &bind,
                "--file",
                &src.to_string_lossy(),
            ],
        )
        .expect("source");
    // Wait until 5 % has come through wgmesh, then move b.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let transfer = p.exec("a", &["wg", "show", &p.a_iface, "transfer"]);
        let rx: u64 = transfer
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        if rx > 5_000_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {transfer}\n{}",
            p.lab.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let new_addr = "203.0.113.12";
    p.exec(
        "b",
        &[
            "ip",
            "address",
            "add",
            &format!("{new_addr}/24"),
            "dev",
            "eth0",
        ],
    );
    p.exec(
        "b",
        &[
            "ip",
            "route",
            "replace",
            &format!("{A_ADDR}/32"),
            "dev",
            "eth0",
            "src",
            new_addr,
        ],
    );
    // wireguard-go keeps sending from the address a wrote to (a sticky
    // source), so the old address has to go for the source to change; the
    // new one is promoted in its place rather than removed with it.
    p.exec(
        "b",
        &[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.conf.eth0.promote_secondaries=1",
        ],
    );
    p.exec(
        "b",
        &[
            "ip",
            "address",
            "del",
            &format!("{B_ADDR}/24"),
            "dev",
            "eth0",
        ],
    );
    p.exec("b", &["wg", "set", &p.b.iface, "listen-port", "51888"]);
    let sink_log = p
        .lab
        .processes()
        .iter_mut()
        .find(|x| x.label() == "sink")
        .expect("sink")
        .log_text();
    assert!(
        !sink_log.contains("received "),
        "the move must happen mid-transfer: {sink_log}"
    );
    let received = wait_for_log(&mut p.lab, "sink", "received ");
    assert!(received.contains("received 100000000 bytes"), "{received}");
    let sha = |path: &Path| -> String {
        let out = std::process::Command::new("sha256sum")
            .arg(path)
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("a digest")
            .to_owned()
    };
    assert_eq!(sha(&out), sha(&src), "checksum after roaming");
    let endpoints = p.exec("a", &["wg", "show", &p.a_iface, "endpoints"]);
    assert!(
        endpoints.contains(&format!("{new_addr}:51888")),
        "wgmesh follows the peer: {endpoints}"
    );
    println!("roamed ({initiator:?} initiated): {}", received.trim());
}

/// The other corner of the bulk-transfer matrix from
/// [`tcp_100mb_each_way_checksums_match`] (wgmesh initiates, PSK on, IPv4):
/// wireguard-go initiates, there is no preshared key, and the TCP streams
/// run between the IPv6 overlay addresses. 100 MB each way, compared by
/// SHA-256.
#[test]
fn tcp_100mb_wireguard_go_initiates_no_psk_over_ipv6() {
    let Some(mut p) = pair(
        "tcp_100mb_wireguard_go_initiates_no_psk_over_ipv6",
        false,
        Initiator::WireguardGo,
        "",
    ) else {
        return;
    };
    // Only wireguard-go knows an endpoint, so this ping is its handshake.
    p.ping("b", A_V6);
    let endpoints = p.exec("a", &["wg", "show", &p.a_iface, "endpoints"]);
    assert!(
        endpoints.contains(B_ADDR),
        "wgmesh learnt no endpoint from wireguard-go's handshake: {endpoints}"
    );
    transfer_100mb(
        &mut p,
        "v6",
        &[
            (
                "b",
                "a",
                format!("[{A_V6}]:5001"),
                "wireguard-go→wgmesh (v6)",
            ),
            (
                "a",
                "b",
                format!("[{B_V6}]:5001"),
                "wgmesh→wireguard-go (v6)",
            ),
        ],
    );
    let dump = p.exec("a", &["wg", "show", &p.a_iface, "transfer"]);
    println!("wgmesh transfer counters: {}", dump.trim());
}

/// IPv6 outside the tunnel too (issue 4): both hosts get RFC 3849 addresses
/// on the lab's internet, wgmesh's peer Endpoint is wireguard-go's IPv6
/// address, and both overlay families cross the tunnel both ways. wgmesh's
/// UDP socket is one dual-stack `[::]` socket, so the same socket serves it.
#[test]
fn ipv6_endpoints_carry_both_overlay_families() {
    const A_PUB6: &str = "2001:db8::1";
    const B_PUB6: &str = "2001:db8::2";
    let Some(mut lab) = Lab::for_test("ipv6_endpoints_carry_both_overlay_families") else {
        return;
    };
    lab.add_public_host("a", A_ADDR.parse().expect("ip"))
        .expect("host a");
    lab.add_public_host("b", B_ADDR.parse().expect("ip"))
        .expect("host b");
    lab.add_ipv6("a", A_PUB6.parse().expect("ip"))
        .expect("a's IPv6");
    lab.add_ipv6("b", B_PUB6.parse().expect("ip"))
        .expect("b's IPv6");
    // The underlay first: a failure here is the lab's, not the engine's.
    lab.ping_until("a", B_PUB6.parse().expect("ip"), Duration::from_secs(5))
        .expect("a → b over the IPv6 internet");
    let keys = Keys::new(false);
    let a_iface = lab.id().wg_iface(0);
    let b_iface = lab.id().wg_iface(1);
    let _leftovers = Leftovers(vec![a_iface.clone(), b_iface.clone()]);
    // Only wgmesh has an endpoint, so its first handshake goes over IPv6.
    let b = wgnode::up(&mut lab, "b", &b_iface, &conf_b(&keys, Initiator::Wgmesh))
        .unwrap_or_else(|e| panic!("wireguard-go: {e}\n{}", lab.logs()));
    let a_conf =
        conf_a(&keys, Initiator::WireguardGo, "") + &format!("Endpoint = [{B_PUB6}]:51820\n");
    let conf = write_conf(&lab, "a.conf", &a_conf);
    start_wgmesh(&mut lab, "a", &conf, &a_iface);
    let p = Pair {
        lab,
        keys,
        a_iface,
        b,
    };
    p.ping("a", B_V4);
    p.ping("b", A_V4);
    p.ping("a", B_V6);
    p.ping("b", A_V6);
    let endpoints = p.exec("a", &["wg", "show", &p.a_iface, "endpoints"]);
    assert!(
        endpoints.contains(&format!("{}\t[{B_PUB6}]:51820", p.b_pub())),
        "wgmesh's endpoint for wireguard-go: {endpoints}"
    );
    // wireguard-go learnt wgmesh's IPv6 address from its handshake.
    let theirs = p.exec("b", &["wg", "show", &p.b.iface, "endpoints"]);
    assert!(
        theirs.contains(&format!("[{A_PUB6}]:51820")),
        "wireguard-go's endpoint for wgmesh: {theirs}"
    );
}

/// Sends 100 MB of random bytes over TCP for each (from, to, sink address,
/// label), with wgl-udp's tcp-source/tcp-sink, and compares SHA-256 at the
/// far end.
fn transfer_100mb(p: &mut Pair, tag: &str, directions: &[(&str, &str, String, &str)]) {
    const SIZE: u64 = 100_000_000;
    let tool = Path::new(WGMESH).with_file_name("wgl-udp");
    assert!(
        tool.is_file(),
        "{} is missing: `cargo build -p wgmesh-lab --bin wgl-udp` (cargo test --workspace builds it)",
        tool.display()
    );
    let tool = tool.to_string_lossy().into_owned();
    let dir = p.lab.log_dir().to_owned();
    let src = dir.join(format!("random-{tag}.bin"));
    {
        let mut f = std::fs::File::create(&src).expect("create");
        let mut rnd = std::fs::File::open("/dev/urandom").expect("urandom");
        let n = std::io::copy(&mut (&mut rnd).take(SIZE), &mut f).expect("fill");
        assert_eq!(n, SIZE);
    }
    let sha = |path: &Path| -> String {
        let out = std::process::Command::new("sha256sum")
            .arg(path)
            .output()
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .expect("a digest")
            .to_owned()
    };
    let want = sha(&src);
    for (from, to, bind, label) in directions {
        let out = dir.join(format!("received-{tag}-{to}.bin"));
        let sink_label = format!("sink-{tag}-{to}");
        let out_s = out.to_string_lossy().into_owned();
        p.lab
            .spawn(
                to,
                &sink_label,
                &[tool.as_str(), "tcp-sink", "--bind", bind, "--out", &out_s],
            )
            .expect("sink");
        wait_for_log(&mut p.lab, &sink_label, "ready");
        let start = Instant::now();
        let sent = p.exec(
            from,
            &[
                &tool,
                "tcp-source",
                "--to",
                bind,
                "--file",
                &src.to_string_lossy(),
            ],
        );
        let received = wait_for_log(&mut p.lab, &sink_label, "received ");
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{label}: 100 MB in {secs:.2} s ({:.0} Mbit/s); {}; {}",
            800.0 / secs,
            sent.trim(),
            received.trim()
        );
        assert!(
            received.contains(&format!("received {SIZE} bytes")),
            "{received}"
        );
        assert_eq!(sha(&out), want, "{label}: checksum");
        let _ = std::fs::remove_file(&out);
    }
    let _ = std::fs::remove_file(&src);
}

/// A real rekey with wireguard-go while traffic flows (WireGuard paper
/// §6.1): wgmesh initiates with REKEY_AFTER_TIME shortened to 3 s (the
/// test-only `WGMESH_DANGEROUS_REKEY_AFTER_SECS`), a ping runs for 10 s,
/// and wgmesh's latest handshake moves on at least twice while no more
/// than one ping of 50 is lost.
#[test]
fn rekey_with_wireguard_go_while_pinging() {
    let Some(mut p) = pair_with_env(
        "rekey_with_wireguard_go_while_pinging",
        false,
        Initiator::Wgmesh,
        "",
        &["WGMESH_DANGEROUS_REKEY_AFTER_SECS=3"],
    ) else {
        return;
    };
    p.ping("a", B_V4);
    let warned = wait_for_log(&mut p.lab, WG_LABEL, "WARNING");
    assert!(warned.contains("OFF-SPEC"), "{warned}");
    let latest = |p: &Pair| -> u64 {
        let out = p.exec("a", &["wg", "show", &p.a_iface, "latest-handshakes"]);
        out.split_whitespace()
            .nth(1)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("latest-handshakes: {out:?}"))
    };
    let first = latest(&p);
    assert_ne!(first, 0, "the first ping made a handshake");
    let started = Instant::now();
    // 50 pings, 200 ms apart: 10 s of traffic, three rekey periods.
    p.lab
        .spawn(
            "a",
            "ping",
            &["ping", "-n", "-c", "50", "-i", "0.2", "-W", "2", B_V4],
        )
        .expect("spawn ping");
    let mut seen = vec![first];
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let t = latest(&p);
        if seen.last() != Some(&t) {
            seen.push(t);
        }
        let proc = p
            .lab
            .processes()
            .iter_mut()
            .find(|q| q.label() == "ping")
            .expect("spawned");
        if let Some(status) = proc.exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ping still running\n{}",
            p.lab.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = p
        .lab
        .processes()
        .iter_mut()
        .find(|q| q.label() == "ping")
        .expect("spawned")
        .log_text();
    let received: u32 = log
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary:\n{log}"));
    println!(
        "ping ({status}) for {:?}: {received}/50 answered; handshakes at {seen:?}",
        started.elapsed()
    );
    assert!(received >= 49, "{received}/50 pings answered:\n{log}");
    assert!(
        seen.len() >= 3,
        "fewer than two rekeys in {:?}: handshakes at {seen:?}\n{}",
        started.elapsed(),
        p.lab.logs()
    );
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "handshake times go forward: {seen:?}"
    );
}
