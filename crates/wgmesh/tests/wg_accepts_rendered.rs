//! Proves, with the real wireguard-tools, that wgmesh writes and reads what
//! wg(8) and wg-quick(8) do:
//!
//! - `wg setconf` (on wireguard-go) accepts every config `wgmesh plan render`
//!   writes, stripped both by `wgmesh conf strip` and by the real `wg-quick
//!   strip`, and `wg showconf` then shows exactly the rendered settings: the
//!   seed mesh, a hub-and-spoke mesh, an IPv6 overlay, nodes with their own
//!   listen port, and a `--key-files` render;
//! - odd but valid syntax (blanks inside values, unbracketed IPv6 endpoints,
//!   decimal FwMark with a leading zero, empty wg-quick values) means to
//!   wgmesh what it means to wg, and lines wg refuses wgmesh refuses too;
//! - `wgmesh pubkey` answers every input as `wg pubkey` does, byte for byte.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{Netns, WireguardGo, assert_success, lab_ready, unique_names};

const WGMESH: &str = env!("CARGO_BIN_EXE_wgmesh");
const SEED_MESH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seed-mesh.toml");

/// How many keys to check in each direction.
const KEY_ROUNDS: usize = 20;

/// Two hubs, a spoke behind NAT and a spoke with an endpoint.
const HUB_AND_SPOKE: &str = r#"
[network]
name = "hs"
cidr = "10.20.0.0/24"
topology = "hub-and-spoke"
hubs = ["hub1", "hub2"]

[[node]]
name = "hub1"
endpoint = "198.51.100.1:51820"

[[node]]
name = "hub2"
endpoint = "198.51.100.2"

[[node]]
name = "spoke1"
hub = "hub1"

[[node]]
name = "spoke2"
hub = "hub2"
endpoint = "198.51.100.22:51820"
"#;

/// An IPv6 overlay over IPv6 endpoints, one node behind NAT.
const IPV6_OVERLAY: &str = r#"
[network]
name = "v6"
cidr = "fd10::/64"
hubs = ["a"]

[[node]]
name = "a"
endpoint = "[2001:db8::1]:51820"

[[node]]
name = "b"
endpoint = "2001:db8::2"

[[node]]
name = "c"
"#;

/// A node with its own listen port, which its peers must dial.
const OWN_LISTEN_PORT: &str = r#"
[network]
name = "ports"
cidr = "10.30.0.0/24"
listen_port = 51000

[[node]]
name = "x"
endpoint = "192.0.2.10"
listen_port = 40000

[[node]]
name = "y"
endpoint = "192.0.2.20:51000"

[[node]]
name = "z"
endpoint = "192.0.2.30"
"#;

fn seed_mesh() -> String {
    fs::read_to_string(SEED_MESH).expect("read examples/seed-mesh.toml")
}

#[test]
fn wg_accepts_the_seed_mesh() {
    check_mesh("wg_accepts_the_seed_mesh", &seed_mesh(), false);
}

#[test]
fn wg_accepts_a_hub_and_spoke_mesh() {
    check_mesh("wg_accepts_a_hub_and_spoke_mesh", HUB_AND_SPOKE, false);
}

#[test]
fn wg_accepts_an_ipv6_overlay() {
    check_mesh("wg_accepts_an_ipv6_overlay", IPV6_OVERLAY, false);
}

#[test]
fn wg_accepts_nodes_with_their_own_listen_port() {
    let Some(views) = check_mesh(
        "wg_accepts_nodes_with_their_own_listen_port",
        OWN_LISTEN_PORT,
        false,
    ) else {
        return;
    };
    assert_eq!(views["x"].listen_port, Some(40000));
    assert_eq!(views["y"].listen_port, Some(51000));
    let x_in_y = views["y"]
        .peers
        .values()
        .find(|p| {
            p.allowed_ips
                .contains(&("10.30.0.1".parse().expect("ip"), 32))
        })
        .expect("y has a peer for x");
    assert_eq!(
        x_in_y.endpoint,
        Some("192.0.2.10:40000".parse().expect("addr"))
    );
}

#[test]
fn wg_accepts_a_key_files_render() {
    let Some(views) = check_mesh("wg_accepts_a_key_files_render", &seed_mesh(), true) else {
        return;
    };
    for (node, view) in &views {
        assert_eq!(
            view.private_key, None,
            "{node}: --key-files keeps the key out"
        );
    }
}

/// Renders `mesh` (with `--key-files` if asked) and checks every `.conf`
/// against the real wg and wg-quick. Returns what wg shows for each node,
/// or `None` if the lab is missing and the test is skipped.
fn check_mesh(test: &str, mesh: &str, key_files: bool) -> Option<BTreeMap<String, WgView>> {
    if !lab_ready(test, true, &["wireguard-go", "wg", "wg-quick"]) {
        return None;
    }
    let dir = tempfile::tempdir().expect("create a temp dir");
    let mesh_path = dir.path().join("mesh.toml");
    fs::write(&mesh_path, mesh).expect("write the mesh file");
    let out_dir = dir.path().join("out");
    let mut render = Command::new(WGMESH);
    render
        .args(["plan", "render"])
        .arg(&mesh_path)
        .arg("--out")
        .arg(&out_dir);
    if key_files {
        render.arg("--key-files");
    }
    let rendered = render.output().expect("run `wgmesh plan render`");
    assert_success(&format!("wgmesh plan render ({test})"), &rendered);

    let confs = conf_files(&out_dir);
    assert!(
        confs.len() >= 3,
        "wgmesh plan render wrote {} *.conf into {}",
        confs.len(),
        out_dir.display()
    );
    let views = confs
        .iter()
        .map(|conf| {
            let node = conf
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("conf name is UTF-8");
            (node.to_owned(), check_wg_accepts(conf))
        })
        .collect();
    Some(views)
}

/// Strips one rendered wg-quick file with `wgmesh conf strip` and with
/// `wg-quick strip`, checks that both mean the same to wg, feeds each to
/// `wg setconf` on a wireguard-go interface in its own namespace, and checks
/// that `wg showconf` shows exactly the rendered settings.
fn check_wg_accepts(conf: &Path) -> WgView {
    println!("checking {}", conf.display());
    let text = fs::read_to_string(conf).expect("read the rendered config");
    let rendered = WgView::parse(&text, Syntax::WgQuick);

    let ours = run(
        WGMESH,
        &["conf".as_ref(), "strip".as_ref(), conf.as_os_str()],
    );
    let theirs = run("wg-quick", &["strip".as_ref(), conf.as_os_str()]);
    assert_eq!(
        WgView::parse(&ours, Syntax::Wg),
        rendered,
        "`wgmesh conf strip {}` changed wg's settings:\n{ours}",
        conf.display()
    );
    assert_eq!(
        WgView::parse(&theirs, Syntax::Wg),
        rendered,
        "`wg-quick strip {}` kept other wg settings than the file has:\n{theirs}",
        conf.display()
    );

    let work = tempfile::tempdir().expect("create a work dir");
    let (netns_name, iface) = unique_names();
    // Declared in this order so the device is dropped (killed) before the
    // namespace is deleted, also when an assertion below panics.
    let netns = Netns::add(&netns_name);
    let dev = WireguardGo::start(&netns, &iface, &work.path().join("wireguard-go.log"));

    let mut shown = Vec::new();
    for (stripper, stripped) in [("wg-quick strip", &theirs), ("wgmesh conf strip", &ours)] {
        let path = work.path().join("wg.conf");
        fs::write(&path, stripped).expect("write the stripped config");
        let setconf = netns.wg(&["setconf", dev.iface(), path.to_str().expect("UTF-8 path")]);
        assert!(
            setconf.status.success(),
            "wg setconf rejected `{stripper} {}` ({})\n--- stderr ---\n{}\n--- config ---\n{}\n--- wireguard-go ---\n{}",
            conf.display(),
            setconf.status,
            String::from_utf8_lossy(&setconf.stderr),
            stripped,
            dev.log_text(),
        );
        let showconf = wg_show(&netns, &["showconf", dev.iface()]);
        let mut view = WgView::parse(&showconf, Syntax::Wg);
        // Without a ListenPort wireguard-go keeps a random port.
        if rendered.listen_port.is_none() {
            view.listen_port = None;
        }
        assert_eq!(
            view,
            rendered,
            "`wg showconf` after `{stripper} {}` is not what the file says:\n{showconf}",
            conf.display()
        );
        shown.push(view);
    }
    shown.pop().expect("two strips were loaded")
}

/// `wg-quick strip` and `wgmesh conf strip` of a hand-written file full of
/// odd but valid syntax load the same settings into wg: wgmesh reads every
/// oddity as wg does. And lines that wg refuses, wgmesh refuses.
#[test]
fn wgmesh_reads_odd_syntax_as_wg_does() {
    if !lab_ready(
        "wgmesh_reads_odd_syntax_as_wg_does",
        true,
        &["wireguard-go", "wg", "wg-quick"],
    ) {
        return;
    }
    let key = String::from_utf8(genkey("wg")).expect("key is UTF-8");
    let key = key.trim_end();
    let peer_a = pubkey_text(&genkey("wg"));
    let peer_b = pubkey_text(&genkey("wg"));
    let psk = String::from_utf8(run_with_stdin("wg", &["genpsk"], b"").stdout).expect("psk");
    let psk = psk.trim_end();
    let (k1, k2) = key.split_at(17);
    let (a1, a2) = peer_a.split_at(30);
    let (s1, s2) = psk.split_at(5);
    let odd = format!(
        "[Interface]\n\
         PrivateKey = {k1} {k2}\n\
         ListenPort = 51 820\n\
         FwMark = 010\n\
         Address = 10.0.0.1/24 fd00::1/64,10.0.1.1/24 ,\n\
         DNS =\n\
         MTU =\n\
         Table =\n\
         PostUp =\n\
         \n\
         [Peer]\n\
         PublicKey = {a1}\t{a2}\n\
         PresharedKey = {s1} {s2}\n\
         AllowedIPs = 10.0.0.2 /32, fd00::/ 64\n\
         AllowedIPs = 10.9.0.0/016\n\
         Endpoint = 2001:db8::1 : 51820\n\
         PersistentKeepalive = 0 25\n\
         \n\
         [Peer]\n\
         PublicKey = {peer_b}\n\
         AllowedIPs = 10.0.0.3\n\
         Endpoint = [192.0.2.1]:05\n\
         PersistentKeepalive = Off\n"
    );
    let dir = tempfile::tempdir().expect("create a temp dir");
    // wg-quick wants a file named like an interface.
    let conf = dir.path().join("odd.conf");
    fs::write(&conf, &odd).expect("write the odd config");

    let ours = run(
        WGMESH,
        &["conf".as_ref(), "strip".as_ref(), conf.as_os_str()],
    );
    let theirs = run("wg-quick", &["strip".as_ref(), conf.as_os_str()]);

    let (netns_name, iface) = unique_names();
    let netns = Netns::add(&netns_name);
    let dev = WireguardGo::start(&netns, &iface, &dir.path().join("wireguard-go.log"));
    let load = |text: &str| {
        let path = dir.path().join("wg.conf");
        fs::write(&path, text).expect("write the config");
        let out = netns.wg(&["setconf", dev.iface(), path.to_str().expect("UTF-8 path")]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let mut shown = Vec::new();
    for (stripper, stripped) in [("wg-quick strip", &theirs), ("wgmesh conf strip", &ours)] {
        let (ok, stderr) = load(stripped);
        assert!(ok, "wg setconf rejected `{stripper}`: {stderr}\n{stripped}");
        shown.push(WgView::parse(
            &wg_show(&netns, &["showconf", dev.iface()]),
            Syntax::Wg,
        ));
    }
    assert_eq!(shown[0], shown[1], "wg and wgmesh read {odd} differently");
    let view = &shown[1];
    assert_eq!(view.private_key.as_deref(), Some(key));
    assert_eq!(view.listen_port, Some(51820));
    assert_eq!(view.fwmark, Some(10), "FwMark = 010 is decimal ten");
    assert_eq!(
        view.peers[&peer_a].endpoint,
        Some("[2001:db8::1]:51820".parse().expect("addr"))
    );
    assert_eq!(view.peers[&peer_a].persistent_keepalive, Some(25));
    assert_eq!(view.peers[&peer_a].allowed_ips.len(), 3);

    // One bad line in an otherwise good wg file: wg refuses it, and so does
    // `wgmesh conf check`.
    let base = format!("[Interface]\nPrivateKey = {key}\n[Peer]\nPublicKey = {peer_a}\n");
    let (ok, stderr) = load(&base);
    assert!(ok, "the base file must load: {stderr}");
    for bad in [
        "FwMark = 0X10".to_owned(),
        "FwMark = 0x".to_owned(),
        "FwMark = 4294967296".to_owned(),
        "FwMark = +5".to_owned(),
        "AllowedIPs = 10.0.0.1/32,".to_owned(),
        "AllowedIPs = 10.0.0.1/32 10.0.0.2/32".to_owned(),
        "AllowedIPs = 10.0.0.0/+8".to_owned(),
        "AllowedIPs =".to_owned(),
        "PersistentKeepalive = +5".to_owned(),
        "PersistentKeepalive = 65536".to_owned(),
        "Endpoint = 2001:db8::1".to_owned(),
        format!("PresharedKey = {psk}\u{a0}"),
    ] {
        // FwMark belongs to [Interface], the rest to [Peer].
        let text = if bad.starts_with("FwMark") {
            base.replacen("[Peer]", &format!("{bad}\n[Peer]"), 1)
        } else {
            format!("{base}{bad}\n")
        };
        let (wg_ok, _) = load(&text);
        assert!(
            !wg_ok,
            "wg setconf accepted {bad:?}; this test's premise is wrong"
        );
        let path = dir.path().join("bad.conf");
        fs::write(&path, &text).expect("write the bad config");
        let check = Command::new(WGMESH)
            .args(["conf", "check"])
            .arg(&path)
            .output()
            .expect("run `wgmesh conf check`");
        assert!(
            !check.status.success(),
            "wgmesh conf check accepted {bad:?}, which wg refuses"
        );
    }
}

/// Runs `program args`; panics unless it succeeds. Returns stdout.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert_success(&format!("{program} {args:?}"), &out);
    String::from_utf8(out.stdout).expect("output is UTF-8")
}

/// `wg ARGS` in `netns`; panics unless it succeeds.
fn wg_show(netns: &Netns, args: &[&str]) -> String {
    let out = netns.wg(args);
    assert_success(&format!("wg {}", args.join(" ")), &out);
    String::from_utf8(out.stdout).expect("wg output is UTF-8")
}

/// The `*.conf` files in `dir`, sorted.
fn conf_files(dir: &Path) -> Vec<PathBuf> {
    let mut confs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list the render output dir")
        .map(|entry| entry.expect("read a dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "conf"))
        .collect();
    confs.sort();
    confs
}

/// Which file a [`WgView`] is read from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// A whole wg-quick file: its own `[Interface]` keys are skipped.
    WgQuick,
    /// What `wg setconf` reads and `wg showconf` prints: wg's keys only.
    Wg,
}

/// Everything wg(8) holds for an interface, read as wg reads a config (this
/// test's own reader, independent of wgmesh's): comments cut at `#`, every
/// blank deleted, keys and section names in any case.
#[derive(Debug, Default, PartialEq, Eq)]
struct WgView {
    private_key: Option<String>,
    listen_port: Option<u16>,
    /// `None` for absent, 0 or off (wg shows none then).
    fwmark: Option<u32>,
    /// By public key: wireguard-go lists peers in no fixed order.
    peers: BTreeMap<String, PeerView>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct PeerView {
    preshared_key: Option<String>,
    /// Address and prefix length, as written (host bits would show up as a
    /// difference: wg clears them).
    allowed_ips: BTreeSet<(IpAddr, u8)>,
    endpoint: Option<SocketAddr>,
    /// `None` for absent, 0 or off (wg shows none then).
    persistent_keepalive: Option<u16>,
}

impl WgView {
    fn parse(text: &str, syntax: Syntax) -> WgView {
        enum Section {
            None,
            Interface,
            Peer(String),
        }
        let mut view = WgView::default();
        let mut section = Section::None;
        for raw in text.lines() {
            let before_comment = raw.split_once('#').map_or(raw, |(before, _)| before);
            let line: String = before_comment
                .chars()
                .filter(|c| !matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' '))
                .collect();
            if line.is_empty() {
                continue;
            }
            match line.to_ascii_lowercase().as_str() {
                "[interface]" => {
                    section = Section::Interface;
                    continue;
                }
                "[peer]" => {
                    section = Section::Peer(String::new());
                    continue;
                }
                _ => {}
            }
            let Some((key, value)) = line.split_once('=') else {
                panic!("line without '=': {raw:?} in\n{text}");
            };
            let key = key.to_ascii_lowercase();
            let unexpected = || panic!("unexpected line {raw:?} in\n{text}");
            match (&mut section, key.as_str()) {
                (Section::Interface, "privatekey") => view.private_key = Some(value.to_owned()),
                (Section::Interface, "listenport") => {
                    view.listen_port = Some(value.parse().expect("ListenPort is a number"));
                }
                (Section::Interface, "fwmark") => {
                    let mark = match value.strip_prefix("0x") {
                        _ if value.eq_ignore_ascii_case("off") => 0,
                        Some(hex) => u32::from_str_radix(hex, 16).expect("hex FwMark"),
                        None => value.parse().expect("decimal FwMark"),
                    };
                    view.fwmark = (mark != 0).then_some(mark);
                }
                (
                    Section::Interface,
                    "address" | "dns" | "mtu" | "table" | "preup" | "postup" | "predown"
                    | "postdown" | "saveconfig",
                ) if syntax == Syntax::WgQuick => {}
                (Section::Peer(current), "publickey") => {
                    assert!(current.is_empty(), "two PublicKeys in one [Peer]:\n{text}");
                    assert!(
                        !view.peers.contains_key(value),
                        "peer {value} twice in\n{text}"
                    );
                    *current = value.to_owned();
                    view.peers.insert(current.clone(), PeerView::default());
                }
                (Section::Peer(current), _) => {
                    let Some(peer) = view.peers.get_mut(current.as_str()) else {
                        panic!("[Peer] without a PublicKey first in\n{text}");
                    };
                    match key.as_str() {
                        "presharedkey" => peer.preshared_key = Some(value.to_owned()),
                        "allowedips" => {
                            for net in value.split(',') {
                                let (ip, len) = net.split_once('/').unwrap_or((net, ""));
                                let ip: IpAddr = ip.parse().expect("AllowedIPs address");
                                let len = match (len, ip) {
                                    ("", IpAddr::V4(_)) => 32,
                                    ("", IpAddr::V6(_)) => 128,
                                    (len, _) => len.parse().expect("AllowedIPs prefix"),
                                };
                                peer.allowed_ips.insert((ip, len));
                            }
                        }
                        "endpoint" => {
                            peer.endpoint = Some(value.parse().unwrap_or_else(|_| {
                                panic!("Endpoint {value:?} is not IP:PORT (no host names here)")
                            }));
                        }
                        "persistentkeepalive" => {
                            let secs = if value.eq_ignore_ascii_case("off") {
                                0
                            } else {
                                value.parse().expect("PersistentKeepalive is a number")
                            };
                            peer.persistent_keepalive = (secs != 0).then_some(secs);
                        }
                        _ => unexpected(),
                    }
                }
                _ => unexpected(),
            }
        }
        view
    }
}

#[test]
fn wgmesh_and_wg_agree_on_keys() {
    if !lab_ready("wgmesh_and_wg_agree_on_keys", false, &["wg"]) {
        return;
    }

    // wg genkey -> wg pubkey and wgmesh pubkey.
    for _ in 0..KEY_ROUNDS {
        let private = genkey("wg");
        let by_wg = pubkey("wg", &private);
        let by_wgmesh = pubkey(WGMESH, &private);
        assert_eq!(
            String::from_utf8_lossy(&by_wgmesh),
            String::from_utf8_lossy(&by_wg),
            "public keys of a wg genkey key"
        );
    }

    // wgmesh genkey -> the same two.
    for _ in 0..KEY_ROUNDS {
        let private = genkey(WGMESH);
        let by_wg = pubkey("wg", &private);
        let by_wgmesh = pubkey(WGMESH, &private);
        assert_eq!(
            String::from_utf8_lossy(&by_wgmesh),
            String::from_utf8_lossy(&by_wg),
            "public keys of a wgmesh genkey key"
        );
    }
}

/// Bad and odd stdin for `pubkey`: wg and wgmesh must both succeed with the
/// same output, or both fail with nothing on stdout.
#[test]
fn wgmesh_pubkey_answers_like_wg_pubkey() {
    if !lab_ready("wgmesh_pubkey_answers_like_wg_pubkey", false, &["wg"]) {
        return;
    }
    let line = genkey("wg");
    let good = std::str::from_utf8(&line[..44]).expect("a key is ASCII");
    const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    // The character before '=' holds 4 key bits and 2 unused bits.
    let last = B64
        .iter()
        .position(|&c| c == good.as_bytes()[42])
        .expect("base64 character");
    let low_bits = format!("{}{}=", &good[..42], B64[last | 3] as char);
    let with = |i: usize, c: &str| format!("{}{c}{}", &good[..i], &good[i + 1..]);
    let spaces = " ".repeat(5000);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("the key and a newline", format!("{good}\n").into()),
        ("the key alone", good.into()),
        ("leading space", format!(" {good}").into()),
        ("leading newline", format!("\n{good}").into()),
        ("trailing NUL", format!("{good}\0").into()),
        ("NULs and newlines", format!("{good}\0\n\0\0\n").into()),
        ("trailing U+00A0", format!("{good}\u{a0}").into()),
        ("trailing U+0085", format!("{good}\u{85}").into()),
        ("trailing tab", format!("{good}\t").into()),
        ("trailing CR LF", format!("{good}\r\n").into()),
        ("every ASCII space", format!("{good}\t\n\x0b\x0c\r ").into()),
        ("trailing 0x1c", format!("{good}\x1c").into()),
        ("two lines", format!("{good}\n{good}\n").into()),
        ("junk after blanks", format!("{good}\n\nx").into()),
        ("a long blank tail", format!("{good}{spaces}\n").into()),
        (
            "junk after a long blank tail",
            format!("{good}{spaces}x").into(),
        ),
        ("43 characters", good[..43].into()),
        (
            "43 characters and a newline",
            format!("{}\n", &good[..43]).into(),
        ),
        ("45 characters", format!("{good}A").into()),
        ("non-canonical last character", low_bits.into()),
        ("two '='", format!("{}==", &good[..42]).into()),
        ("no '='", format!("{}A", &good[..43]).into()),
        ("'!' inside", with(10, "!").into()),
        ("URL-safe '-' inside", with(10, "-").into()),
        ("URL-safe '_' inside", with(10, "_").into()),
        ("a space inside", with(10, " ").into()),
        ("a NUL inside", with(10, "\0").into()),
        ("empty", Vec::new()),
        ("only a newline", b"\n".to_vec()),
        (
            "invalid UTF-8",
            [&good.as_bytes()[..40], b"\xff\xfe\xfd\xfc"].concat(),
        ),
    ];
    for (what, input) in &cases {
        let by_wg = run_with_stdin("wg", &["pubkey"], input);
        let by_wgmesh = run_with_stdin(WGMESH, &["pubkey"], input);
        assert_eq!(
            (
                by_wgmesh.status.success(),
                String::from_utf8_lossy(&by_wgmesh.stdout)
            ),
            (
                by_wg.status.success(),
                String::from_utf8_lossy(&by_wg.stdout)
            ),
            "{what} ({:?}): wgmesh pubkey (left) and wg pubkey (right) differ; \
             wg said {:?}, wgmesh said {:?}",
            String::from_utf8_lossy(input),
            String::from_utf8_lossy(&by_wg.stderr),
            String::from_utf8_lossy(&by_wgmesh.stderr),
        );
        if !by_wgmesh.status.success() {
            assert!(
                !String::from_utf8_lossy(&by_wgmesh.stderr).trim().is_empty(),
                "{what}: wgmesh pubkey failed without saying why"
            );
        }
    }
}

/// `PROGRAM genkey`: one base64 key and a newline.
fn genkey(program: &str) -> Vec<u8> {
    let out = Command::new(program)
        .arg("genkey")
        .output()
        .expect("run genkey");
    assert_success(&format!("{program} genkey"), &out);
    check_key_line(program, "genkey", &out.stdout);
    out.stdout
}

/// `PROGRAM pubkey` fed `private` on stdin.
fn pubkey(program: &str, private: &[u8]) -> Vec<u8> {
    let out = run_with_stdin(program, &["pubkey"], private);
    assert_success(
        &format!("{program} pubkey < {:?}", String::from_utf8_lossy(private)),
        &out,
    );
    check_key_line(program, "pubkey", &out.stdout);
    out.stdout
}

/// The public key of `private` as `wg pubkey` prints it, without the newline.
fn pubkey_text(private: &[u8]) -> String {
    let line = String::from_utf8(pubkey("wg", private)).expect("a key is UTF-8");
    line.trim_end().to_owned()
}

/// A WireGuard key line: 44 base64 characters ending in '=', then '\n'.
fn check_key_line(program: &str, what: &str, line: &[u8]) {
    let ok = line.len() == 45
        && line[44] == b'\n'
        && line[43] == b'='
        && line[..43]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    assert!(
        ok,
        "{program} {what} printed {:?}, not one key line",
        String::from_utf8_lossy(line)
    );
}

fn run_with_stdin(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a key command");
    {
        let mut stdin = child.stdin.take().expect("child stdin is piped");
        // The program may reject the input and exit before reading all of
        // it; a broken pipe then is not this test's failure.
        if let Err(e) = stdin.write_all(input)
            && e.kind() != ErrorKind::BrokenPipe
        {
            panic!("write to {program}'s stdin: {e}");
        }
    }
    child.wait_with_output().expect("wait for a key command")
}
