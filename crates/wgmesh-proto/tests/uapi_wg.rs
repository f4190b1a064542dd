//! Interoperability of the UAPI codec with the real `wg(8)`.
//!
//! Each test serves a unix socket at `/var/run/wireguard/NAME.sock` with
//! [`wgmesh_proto::uapi`] (a canned [`DeviceSnapshot`] for `get`, and every
//! `set` recorded), then runs `wg` against it. With no kernel interface of
//! that name, `wg` talks to the socket (wireguard-tools `ipc.c`), exactly as
//! it does to wireguard-go. The tests prove both directions: `wg` prints what
//! `render_get` wrote, and `parse_request` reads what `wg` sent, byte for
//! byte as wireguard-tools' `userspace_set_device` writes it.
//!
//! They need `wg` and a writable `/var/run/wireguard` (root); where those are
//! missing they fail saying why, unless `WGMESH_SKIP_LAB=1` (the lab tests'
//! rule), which skips them.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ipnet::IpNet;
use wgmesh_core::key::{PresharedKey, PrivateKey, PublicKey};
use wgmesh_proto::uapi::{
    DeviceSnapshot, PeerChange, PeerSnapshot, Request, SetCommand, UapiError, parse_request,
    render_errno, render_error, render_get,
};

const SOCKET_DIR: &str = "/var/run/wireguard";

/// What the fake interface saw.
#[derive(Default)]
struct Seen {
    /// Every set request, as raw text and as parsed.
    sets: Vec<(String, SetCommand)>,
    /// Requests refused, with their raw text.
    errors: Vec<(String, UapiError)>,
    gets: usize,
    /// The errno answered to a set that parsed (normally 0).
    set_errno: i32,
}

/// A UAPI socket served by the codec from a thread; removed on drop.
struct FakeInterface {
    name: String,
    path: PathBuf,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeInterface {
    /// Serves `snapshot` under a fresh name, or `None` to skip the test.
    fn start(test: &str, snapshot: DeviceSnapshot) -> Option<Self> {
        if let Err(why) = check_available() {
            if std::env::var("WGMESH_SKIP_LAB").as_deref() == Ok("1") {
                println!("SKIP {test}: {why} (WGMESH_SKIP_LAB=1)");
                return None;
            }
            panic!("{test}: {why}. Run as root with wg installed, or set WGMESH_SKIP_LAB=1.");
        }
        // Unique machine-wide (the directory is shared) and ≤ 15 bytes.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "wgu{:x}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        assert!(name.len() <= 15, "{name} is too long for an interface");
        let path = PathBuf::from(format!("{SOCKET_DIR}/{name}.sock"));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the UAPI socket");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        serve(conn, &snapshot, &seen);
                    }
                }
            })
        };
        Some(Self {
            name,
            path,
            seen,
            stop,
            thread: Some(thread),
        })
    }

    fn wg(&self, args: &[&str]) -> Output {
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "IFACE" { self.name.as_str() } else { a })
            .collect();
        let out = Command::new("wg").args(&args).output().expect("run wg");
        println!(
            "wg {args:?}: {}\nstdout:\n{}stderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn wg_ok(&self, args: &[&str]) -> String {
        let out = self.wg(args);
        assert!(out.status.success(), "wg {args:?} failed");
        String::from_utf8(out.stdout).expect("wg prints UTF-8")
    }

    fn take_sets(&self) -> Vec<(String, SetCommand)> {
        std::mem::take(&mut self.seen.lock().expect("not poisoned").sets)
    }
}

impl Drop for FakeInterface {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = UnixStream::connect(&self.path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn check_available() -> Result<(), String> {
    match Command::new("wg").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => return Err("wg(8) is not installed".into()),
    }
    std::fs::create_dir_all(SOCKET_DIR).map_err(|e| format!("cannot create {SOCKET_DIR}: {e}"))?;
    let probe = PathBuf::from(format!("{SOCKET_DIR}/.wgu-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("{SOCKET_DIR} is not writable: {e}"))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// One connection: requests in, replies out, as the dataplane's server will.
fn serve(mut conn: UnixStream, snapshot: &DeviceSnapshot, seen: &Mutex<Seen>) {
    // A stuck client must not hang the test.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        loop {
            match parse_request(&buf) {
                Ok(None) => break,
                Ok(Some((request, used))) => {
                    let raw = String::from_utf8_lossy(&buf[..used]).into_owned();
                    buf.drain(..used);
                    let reply = match request {
                        Request::Get => {
                            seen.lock().expect("not poisoned").gets += 1;
                            render_get(snapshot)
                        }
                        Request::Set(cmd) => {
                            let mut seen = seen.lock().expect("not poisoned");
                            seen.sets.push((raw, cmd));
                            render_errno(seen.set_errno)
                        }
                    };
                    if conn.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let raw = String::from_utf8_lossy(&buf).into_owned();
                    let _ = conn.write_all(render_error(&e).as_bytes());
                    seen.lock().expect("not poisoned").errors.push((raw, e));
                    return;
                }
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn key(b: u8) -> [u8; 32] {
    let mut k = [0u8; 32];
    for (i, x) in k.iter_mut().enumerate() {
        *x = b.wrapping_mul(31).wrapping_add(i as u8);
    }
    k
}
fn hex(k: &[u8; 32]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}
fn net(s: &str) -> IpNet {
    s.parse().expect("CIDR")
}
fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}
fn b64_public(k: &[u8; 32]) -> String {
    PublicKey::from_bytes(*k).to_string()
}
fn b64_secret(k: &[u8; 32]) -> String {
    PresharedKey::from_random(*k).to_base64().to_string()
}

/// A private key, as `wg genkey` makes them (clamped), so that what the
/// interface reports and what `wg` derives from it agree.
fn private() -> PrivateKey {
    PrivateKey::from_random(key(1))
}

fn snapshot() -> DeviceSnapshot {
    DeviceSnapshot {
        private_key: Some(private()),
        listen_port: 51820,
        fwmark: 0x2a,
        peers: vec![
            PeerSnapshot {
                public_key: PublicKey::from_bytes(key(2)),
                preshared_key: Some(PresharedKey::from_random(key(3))),
                endpoint: Some(addr("192.0.2.1:51820")),
                last_handshake: Some((1_700_000_000, 123_456_789)),
                rx_bytes: 1234,
                tx_bytes: 5678,
                persistent_keepalive: 25,
                allowed_ips: vec![net("10.0.0.2/32"), net("fd00::2/128")],
            },
            PeerSnapshot {
                public_key: PublicKey::from_bytes(key(4)),
                preshared_key: None,
                endpoint: Some(addr("[2001:db8::1]:51821")),
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive: 0,
                allowed_ips: Vec::new(),
            },
        ],
    }
}

/// A file `wg` reads a key from, removed on drop.
struct KeyFile(tempfile::NamedTempFile);
impl KeyFile {
    fn new(text: &str) -> Self {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write key file");
        Self(f)
    }
    fn path(&self) -> &str {
        self.0.path().to_str().expect("UTF-8 temp path")
    }
}

#[test]
fn wg_show_dump_prints_the_snapshot() {
    let Some(iface) = FakeInterface::start("wg_show_dump_prints_the_snapshot", snapshot()) else {
        return;
    };
    let private = private();
    let dump = iface.wg_ok(&["show", "IFACE", "dump"]);
    let expected = format!(
        "{priv}\t{public}\t51820\t0x2a\n\
         {pa}\t{psk}\t192.0.2.1:51820\t10.0.0.2/32,fd00::2/128\t1700000000\t1234\t5678\t25\n\
         {pb}\t(none)\t[2001:db8::1]:51821\t(none)\t0\t0\t0\toff\n",
        priv = private.to_base64().as_str(),
        public = private.public_key(),
        pa = b64_public(&key(2)),
        psk = b64_secret(&key(3)),
        pb = b64_public(&key(4)),
    );
    assert_eq!(dump, expected);
    assert_eq!(iface.seen.lock().expect("not poisoned").gets, 1);
}

#[test]
fn wg_showconf_prints_the_snapshot() {
    let Some(iface) = FakeInterface::start("wg_showconf_prints_the_snapshot", snapshot()) else {
        return;
    };
    let conf = iface.wg_ok(&["showconf", "IFACE"]);
    let expected = format!(
        "[Interface]\n\
         ListenPort = 51820\n\
         FwMark = 0x2a\n\
         PrivateKey = {priv}\n\
         \n\
         [Peer]\n\
         PublicKey = {pa}\n\
         PresharedKey = {psk}\n\
         AllowedIPs = 10.0.0.2/32, fd00::2/128\n\
         Endpoint = 192.0.2.1:51820\n\
         PersistentKeepalive = 25\n\
         \n\
         [Peer]\n\
         PublicKey = {pb}\n\
         Endpoint = [2001:db8::1]:51821\n",
        priv = private().to_base64().as_str(),
        pa = b64_public(&key(2)),
        psk = b64_secret(&key(3)),
        pb = b64_public(&key(4)),
    );
    assert_eq!(conf, expected);
}

#[test]
fn wg_set_peer_is_parsed_exactly() {
    let Some(iface) = FakeInterface::start("wg_set_peer_is_parsed_exactly", snapshot()) else {
        return;
    };
    let peer = key(9);
    let psk_file = KeyFile::new(&format!("{}\n", b64_secret(&key(10))));
    iface.wg_ok(&[
        "set",
        "IFACE",
        "peer",
        &b64_public(&peer),
        // Host bits on purpose: wg sends them, the codec masks them.
        "allowed-ips",
        "10.9.0.1/24,fd00:9::1/64",
        "endpoint",
        "198.51.100.7:4000",
        "persistent-keepalive",
        "25",
        "preshared-key",
        psk_file.path(),
    ]);
    let sets = iface.take_sets();
    assert_eq!(sets.len(), 1);
    let (raw, cmd) = &sets[0];
    // What wg sent, in wireguard-tools' userspace_set_device order.
    assert_eq!(
        raw,
        &format!(
            "set=1\n\
             public_key={}\n\
             preshared_key={}\n\
             endpoint=198.51.100.7:4000\n\
             persistent_keepalive_interval=25\n\
             replace_allowed_ips=true\n\
             allowed_ip=10.9.0.1/24\n\
             allowed_ip=fd00:9::1/64\n\n",
            hex(&peer),
            hex(&key(10))
        )
    );
    assert_eq!(
        cmd,
        &SetCommand {
            peers: vec![PeerChange {
                preshared_key: Some(Some(PresharedKey::from_random(key(10)))),
                endpoint: Some(addr("198.51.100.7:4000")),
                persistent_keepalive: Some(25),
                replace_allowed_ips: true,
                allowed_ips: vec![net("10.9.0.0/24"), net("fd00:9::/64")],
                ..PeerChange::new(PublicKey::from_bytes(peer))
            }],
            ..SetCommand::default()
        }
    );

    // Device keys, an IPv6 endpoint, "off" values and a removal.
    let key_file = KeyFile::new(&format!("{}\n", b64_secret(&key(11))));
    let zero_psk = KeyFile::new("");
    iface.wg_ok(&[
        "set",
        "IFACE",
        "listen-port",
        "0",
        "fwmark",
        "off",
        "private-key",
        key_file.path(),
        "peer",
        &b64_public(&key(12)),
        "endpoint",
        "[2001:db8::7]:51820",
        "persistent-keepalive",
        "off",
        "preshared-key",
        zero_psk.path(),
        "peer",
        &b64_public(&key(2)),
        "remove",
    ]);
    let sets = iface.take_sets();
    assert_eq!(sets.len(), 1);
    let (raw, cmd) = &sets[0];
    let zero = "0".repeat(64);
    assert_eq!(
        raw,
        &format!(
            "set=1\n\
             private_key={}\n\
             listen_port=0\n\
             fwmark=0\n\
             public_key={}\n\
             preshared_key={zero}\n\
             endpoint=[2001:db8::7]:51820\n\
             persistent_keepalive_interval=0\n\
             public_key={}\n\
             remove=true\n\n",
            hex(&key(11)),
            hex(&key(12)),
            hex(&key(2)),
        )
    );
    assert_eq!(
        cmd,
        &SetCommand {
            private_key: Some(Some(PrivateKey::from_bytes(key(11)))),
            listen_port: Some(0),
            fwmark: Some(0),
            replace_peers: false,
            peers: vec![
                PeerChange {
                    preshared_key: Some(None),
                    endpoint: Some(addr("[2001:db8::7]:51820")),
                    persistent_keepalive: Some(0),
                    ..PeerChange::new(PublicKey::from_bytes(key(12)))
                },
                PeerChange {
                    remove: true,
                    ..PeerChange::new(PublicKey::from_bytes(key(2)))
                },
            ],
        }
    );
}

/// The wg-quick style file the setconf/syncconf tests feed to `wg`.
fn conf_file() -> String {
    format!(
        "[Interface]\n\
         PrivateKey = {priv}\n\
         ListenPort = 51820\n\
         FwMark = 0x2a\n\
         \n\
         [Peer]\n\
         PublicKey = {pa}\n\
         PresharedKey = {psk}\n\
         AllowedIPs = 10.0.0.2/32, fd00::2/128\n\
         Endpoint = 192.0.2.1:51820\n\
         PersistentKeepalive = 25\n\
         \n\
         [Peer]\n\
         PublicKey = {pc}\n\
         AllowedIPs = 10.0.0.3/32\n\
         Endpoint = [2001:db8::3]:51823\n",
        priv = private().to_base64().as_str(),
        pa = b64_public(&key(2)),
        psk = b64_secret(&key(3)),
        pc = b64_public(&key(5)),
    )
}

#[test]
fn wg_setconf_is_parsed_exactly() {
    let Some(iface) = FakeInterface::start("wg_setconf_is_parsed_exactly", snapshot()) else {
        return;
    };
    let file = KeyFile::new(&conf_file());
    iface.wg_ok(&["setconf", "IFACE", file.path()]);
    let sets = iface.take_sets();
    assert_eq!(sets.len(), 1);
    let (raw, cmd) = &sets[0];
    assert_eq!(raw, &conf_request(true, None));
    assert_eq!(cmd, &expected_conf_command(true));
}

/// The request wg sends for [`conf_file`]: with `replace_peers` for
/// setconf; for syncconf without it, and with the removals first.
fn conf_request(replace_peers: bool, removed: Option<[u8; 32]>) -> String {
    let mut device = "set=1\n".to_string()
        + &format!("private_key={}\n", hex(private().as_bytes()))
        + "listen_port=51820\nfwmark=42\n";
    if replace_peers {
        device += "replace_peers=true\n";
    }
    if let Some(k) = removed {
        device += &format!("public_key={}\nremove=true\n", hex(&k));
    }
    device
        + &format!(
            "public_key={}\n\
             preshared_key={}\n\
             endpoint=192.0.2.1:51820\n\
             persistent_keepalive_interval=25\n\
             replace_allowed_ips=true\n\
             allowed_ip=10.0.0.2/32\n\
             allowed_ip=fd00::2/128\n\
             public_key={}\n\
             endpoint=[2001:db8::3]:51823\n\
             replace_allowed_ips=true\n\
             allowed_ip=10.0.0.3/32\n\n",
            hex(&key(2)),
            hex(&key(3)),
            hex(&key(5)),
        )
}

fn expected_conf_command(replace_peers: bool) -> SetCommand {
    SetCommand {
        private_key: Some(Some(private())),
        listen_port: Some(51820),
        fwmark: Some(42),
        replace_peers,
        peers: vec![
            PeerChange {
                preshared_key: Some(Some(PresharedKey::from_random(key(3)))),
                endpoint: Some(addr("192.0.2.1:51820")),
                persistent_keepalive: Some(25),
                replace_allowed_ips: true,
                allowed_ips: vec![net("10.0.0.2/32"), net("fd00::2/128")],
                ..PeerChange::new(PublicKey::from_bytes(key(2)))
            },
            PeerChange {
                endpoint: Some(addr("[2001:db8::3]:51823")),
                replace_allowed_ips: true,
                allowed_ips: vec![net("10.0.0.3/32")],
                ..PeerChange::new(PublicKey::from_bytes(key(5)))
            },
        ],
    }
}

#[test]
fn wg_syncconf_reads_then_removes_what_is_gone() {
    let Some(iface) =
        FakeInterface::start("wg_syncconf_reads_then_removes_what_is_gone", snapshot())
    else {
        return;
    };
    let file = KeyFile::new(&conf_file());
    iface.wg_ok(&["syncconf", "IFACE", file.path()]);
    // syncconf reads the interface first (our get reply), then sends the
    // file without replace_peers, after a removal of the peer (key 4) that
    // the interface has and the file does not.
    assert_eq!(iface.seen.lock().expect("not poisoned").gets, 1);
    let sets = iface.take_sets();
    assert_eq!(sets.len(), 1);
    let (raw, cmd) = &sets[0];
    assert_eq!(raw, &conf_request(false, Some(key(4))));
    let mut expected = expected_conf_command(false);
    expected.peers.insert(
        0,
        PeerChange {
            remove: true,
            ..PeerChange::new(PublicKey::from_bytes(key(4)))
        },
    );
    assert_eq!(cmd, &expected);
}

#[test]
fn wg_reports_a_refused_set_as_invalid_argument() {
    let Some(iface) =
        FakeInterface::start("wg_reports_a_refused_set_as_invalid_argument", snapshot())
    else {
        return;
    };
    // wg writes a link-local endpoint's scope as the interface's name
    // (getnameinfo), which the sans-IO codec cannot resolve: it refuses it
    // with EINVAL, and `render_error`'s negative errno makes wg say so.
    let out = iface.wg(&[
        "set",
        "IFACE",
        "peer",
        &b64_public(&key(6)),
        "endpoint",
        "[fe80::1%lo]:51820",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Unable to modify interface: Invalid argument"),
        "{stderr}"
    );
    let seen = iface.seen.lock().expect("not poisoned");
    assert!(seen.sets.is_empty());
    assert_eq!(seen.errors.len(), 1);
    let (raw, error) = &seen.errors[0];
    assert!(raw.contains("endpoint=[fe80::1%lo]:51820\n"), "{raw}");
    assert_eq!(error.errno(), 22);
}

#[test]
fn wg_reads_the_errno_of_a_set_as_wireguard_go_writes_it() {
    let Some(iface) = FakeInterface::start(
        "wg_reads_the_errno_of_a_set_as_wireguard_go_writes_it",
        snapshot(),
    ) else {
        return;
    };
    // wireguard-go answers a port in use with errno=-98 (-EADDRINUSE) ...
    iface.seen.lock().expect("not poisoned").set_errno = -98;
    let out = iface.wg(&["set", "IFACE", "listen-port", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Address already in use"), "{stderr}");
    // ... and a positive number is not what wg expects: why render_error
    // negates.
    iface.seen.lock().expect("not poisoned").set_errno = 22;
    let out = iface.wg(&["set", "IFACE", "listen-port", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unknown error -22"), "{stderr}");
}
