//! Proves that the real wg(8) (on wireguard-go) accepts every config `wgmesh plan render` writes for the seed mesh, and that wgmesh's keys agree with wg's byte for byte.

mod support;

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{Netns, WireguardGo, assert_success, lab_ready, unique_names};

const WGMESH: &str = env!("CARGO_BIN_EXE_wgmesh");
const SEED_MESH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/seed-mesh.toml");

/// How many keys to check in each direction.
const KEY_ROUNDS: usize = 20;

#[test]
fn wg_setconf_accepts_every_rendered_config() {
    if !lab_ready(
        "wg_setconf_accepts_every_rendered_config",
        true,
        &["wireguard-go", "wg"],
    ) {
        return;
    }

    let out_dir = tempfile::tempdir().expect("create the render output dir");
    let render = Command::new(WGMESH)
        .args(["plan", "render"])
        .arg(SEED_MESH)
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .expect("run `wgmesh plan render`");
    assert_success(&format!("wgmesh plan render {SEED_MESH}"), &render);

    let confs = conf_files(out_dir.path());
    assert!(
        !confs.is_empty(),
        "wgmesh plan render wrote no *.conf into {}",
        out_dir.path().display()
    );
    for conf in &confs {
        check_wg_accepts(conf);
    }
}

/// Feeds the wg(8) part of one rendered wg-quick file to `wg setconf` on a
/// wireguard-go interface in its own namespace, and reads it back.
fn check_wg_accepts(conf: &Path) {
    println!("checking {}", conf.display());
    let strip = Command::new(WGMESH)
        .args(["conf", "strip"])
        .arg(conf)
        .output()
        .expect("run `wgmesh conf strip`");
    assert_success(&format!("wgmesh conf strip {}", conf.display()), &strip);
    let stripped = String::from_utf8(strip.stdout).expect("stripped config is UTF-8");
    let expected = WgConf::parse(&stripped);

    let work = tempfile::tempdir().expect("create a work dir");
    let stripped_path = work.path().join("wg.conf");
    fs::write(&stripped_path, &stripped).expect("write the stripped config");
    let stripped_arg = stripped_path.to_str().expect("temp path is UTF-8");

    let (netns_name, iface) = unique_names();
    // Declared in this order so the device is dropped (killed) before the
    // namespace is deleted, also when an assertion below panics.
    let netns = Netns::add(&netns_name);
    let dev = WireguardGo::start(&netns, &iface, &work.path().join("wireguard-go.log"));

    let setconf = netns.wg(&["setconf", dev.iface(), stripped_arg]);
    assert!(
        setconf.status.success(),
        "wg setconf rejected the stripped {} ({})\n--- stderr ---\n{}\n--- config ---\n{}\n--- wireguard-go ---\n{}",
        conf.display(),
        setconf.status,
        String::from_utf8_lossy(&setconf.stderr),
        stripped,
        dev.log_text(),
    );

    let mut shown_peers: Vec<String> = wg_show(&netns, dev.iface(), "peers")
        .lines()
        .map(str::to_owned)
        .collect();
    shown_peers.sort();
    let mut expected_peers = expected.peers.clone();
    expected_peers.sort();
    assert_eq!(
        shown_peers,
        expected_peers,
        "peers of {} as wg shows them",
        conf.display()
    );

    let shown_key = wg_show(&netns, dev.iface(), "private-key");
    // wg prints "(none)" for an interface without a private key.
    let expected_key = expected.private_key.as_deref().unwrap_or("(none)");
    assert!(
        shown_key.trim() == expected_key,
        "the private key wg shows for {} is not the one in the config",
        conf.display()
    );

    // Without a ListenPort wireguard-go keeps the random port it chose.
    if let Some(port) = expected.listen_port {
        let shown_port = wg_show(&netns, dev.iface(), "listen-port");
        assert_eq!(
            shown_port.trim(),
            port.to_string(),
            "listen port of {} as wg shows it",
            conf.display()
        );
    }
}

/// `wg show IFACE WHAT` in `netns`; panics unless it succeeds.
fn wg_show(netns: &Netns, iface: &str, what: &str) -> String {
    let out = netns.wg(&["show", iface, what]);
    assert_success(&format!("wg show {iface} {what}"), &out);
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

/// The parts of a wg(8) config this test compares, found by simple line
/// parsing (keys match case-insensitively, as in wg).
#[derive(Debug, Default)]
struct WgConf {
    private_key: Option<String>,
    listen_port: Option<u16>,
    /// One public key per `[Peer]`.
    peers: Vec<String>,
}

impl WgConf {
    fn parse(text: &str) -> WgConf {
        enum Section {
            None,
            Interface,
            Peer,
        }
        let mut conf = WgConf::default();
        let mut section = Section::None;
        let mut peer_sections = 0;
        for raw in text.lines() {
            let line = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = match name.trim().to_ascii_lowercase().as_str() {
                    "interface" => Section::Interface,
                    "peer" => {
                        peer_sections += 1;
                        Section::Peer
                    }
                    other => panic!("unexpected section [{other}] in stripped config:\n{text}"),
                };
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                panic!("line without '=' in stripped config: {raw:?}\n{text}");
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim().to_owned();
            match (&section, key.as_str()) {
                (Section::Interface, "privatekey") => conf.private_key = Some(value),
                (Section::Interface, "listenport") => {
                    conf.listen_port = Some(value.parse().expect("ListenPort is a port number"));
                }
                (Section::Peer, "publickey") => conf.peers.push(value),
                _ => {}
            }
        }
        assert_eq!(
            conf.peers.len(),
            peer_sections,
            "every [Peer] in the stripped config has one PublicKey:\n{text}"
        );
        conf
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

#[test]
fn wgmesh_pubkey_rejects_bad_input() {
    let good = String::from_utf8(genkey(WGMESH)).expect("a key is UTF-8");
    let good = good.trim_end();
    let mut bang = good.to_owned();
    bang.replace_range(10..11, "!");

    for input in [
        "abc\n".to_owned(),
        format!("{good} junk\n"),
        format!("{bang}\n"),
    ] {
        let out = run_with_stdin(WGMESH, &["pubkey"], input.as_bytes());
        assert!(
            !out.status.success(),
            "wgmesh pubkey accepted {input:?} and printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "wgmesh pubkey printed {:?} on stdout for {input:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).trim().is_empty(),
            "wgmesh pubkey said nothing on stderr for {input:?}"
        );
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
