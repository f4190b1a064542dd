//! The engine's socket demux for real: a running [`Interface`] (TUN device,
//! dual-stack UDP socket, reader threads) in a network namespace this test
//! makes, a plain UDP socket as the STUN client, loopback between them.
//!
//! The outer test creates the namespace (`ip netns add wgm-stun-<pid>`),
//! re-runs this binary inside it (`ip netns exec … --ignored`) for the inner
//! test, and deletes the namespace afterwards, also when the inner test
//! fails or hangs (it is killed by its PID at the deadline). Needs root.

use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use wgmesh_dataplane::udp::{self, BoundSocket};
use wgmesh_dataplane::{Interface, InterfaceConfig};
use wgmesh_proto::stun::{self, TransactionId};

const WAIT: Duration = Duration::from_secs(5);

/// Deletes the namespace when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn stun_through_the_engine_socket() {
    let ns = Netns(format!("wgm-stun-{}", std::process::id()));
    let added = Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap();
    assert!(
        added.success(),
        "`ip netns add` failed (this test needs root)"
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stun_through_the_engine_socket_inner",
            "--ignored",
            "--nocapture",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            // `ip netns exec` execs the test binary: same PID.
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `cond` until it holds or [`WAIT`] passes.
fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn start(
    name: &str,
    dir: &std::path::Path,
    handler: Option<wgmesh_dataplane::ForeignHandler>,
) -> Interface {
    let mut config = InterfaceConfig::new(name);
    config.uapi_dir = dir.to_owned();
    config.on_foreign = handler;
    Interface::start(config).expect("the interface starts (root, in our own namespace)")
}

#[test]
#[ignore = "run inside a fresh namespace by stun_through_the_engine_socket"]
fn stun_through_the_engine_socket_inner() {
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success());
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel::<(SocketAddr, Vec<u8>)>();
    let handler: wgmesh_dataplane::ForeignHandler = Arc::new(move |from, bytes: &[u8]| {
        let _ = tx.send((from, bytes.to_vec()));
    });
    let tag = std::process::id() % 10000;
    let iface = start(&format!("wgst{tag}"), dir.path(), Some(handler));
    let port = iface.listen_port();

    for (bind, engine) in [("127.0.0.1:0", "127.0.0.1"), ("[::1]:0", "::1")] {
        let client = UdpSocket::bind(bind).unwrap();
        client.set_read_timeout(Some(WAIT)).unwrap();
        let me = client.local_addr().unwrap();
        let engine = SocketAddr::new(engine.parse().unwrap(), port);

        // A request reaches the handler, with the client as its source
        // (plain IPv4, not the dual-stack socket's ::ffff: form).
        let txid = TransactionId([0xab; 12]);
        let request = stun::binding_request(txid);
        client.send_to(&request, engine).unwrap();
        let (from, bytes) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!(from, me);
        assert_eq!(bytes, request);

        // The answer goes out of the engine's socket and tells the client
        // its own address.
        let response = stun::answer(&bytes, from).unwrap();
        iface.send_foreign(from, &response).unwrap();
        let mut buf = [0u8; 1500];
        let (n, src) = client.recv_from(&mut buf).unwrap();
        assert_eq!(src.port(), port);
        assert_eq!(stun::parse_binding_response(&buf[..n]).unwrap(), (txid, me));

        // A Binding response (first bytes 01 01, as a WireGuard type-1
        // message's first byte) is STUN too: the agent's client gets it.
        client.send_to(&response, engine).unwrap();
        let (from, bytes) = rx.recv_timeout(WAIT).unwrap();
        assert_eq!((from, bytes), (me, response.clone()));

        // A burst of equal-sized requests, which GRO may hand over as one
        // buffer: each one reaches the handler on its own.
        let burst: Vec<Vec<u8>> = (0u8..16)
            .map(|i| stun::binding_request(TransactionId([i; 12])))
            .collect();
        for r in &burst {
            client.send_to(r, engine).unwrap();
        }
        let got: Vec<Vec<u8>> = (0..burst.len())
            .map(|_| rx.recv_timeout(WAIT).unwrap().1)
            .collect();
        assert_eq!(got, burst);

        // One GSO send of equal-sized datagrams (40 bytes for IPv4, 52 for
        // IPv6), STUN and WireGuard-framed
        // alternating, which the engine's GRO socket reads as one buffer:
        // each datagram goes its own way.
        let gso = BoundSocket::new(udp::bind_socket(0, 0).unwrap()).unwrap();
        let gso_me = SocketAddr::new(me.ip(), gso.port);
        let stun_n = |i: u8| stun::binding_response(TransactionId([i; 12]), gso_me, None);
        let size = stun_n(0).len();
        let mut wg_n = vec![0xee; size];
        wg_n[..4].copy_from_slice(&[4, 0, 0, 0]);
        let drops = iface.with_device(|d| d.counters().dropped_no_private_key);
        let run: Vec<u8> = (0u8..8)
            .flat_map(|i| [stun_n(i), wg_n.clone()])
            .flatten()
            .collect();
        gso.send_segments(&run, size, engine).unwrap();
        let got: Vec<(SocketAddr, Vec<u8>)> =
            (0..8).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
        let want: Vec<(SocketAddr, Vec<u8>)> = (0..8).map(|i| (gso_me, stun_n(i))).collect();
        assert_eq!(got, want);
        wait_for("the device to refuse the eight WireGuard datagrams", || {
            iface.with_device(|d| d.counters().dropped_no_private_key) == drops + 8
        });

        // WireGuard-framed bytes still go to the device (which refuses
        // this keepalive from no session), not to the handler.
        let drops = iface.io_stats().device_drops.load(Ordering::Relaxed);
        let mut wg = vec![0u8; 32];
        wg[0] = 4;
        client.send_to(&wg, engine).unwrap();
        wait_for("the device to drop the bogus WireGuard message", || {
            iface.io_stats().device_drops.load(Ordering::Relaxed) > drops
        });
        assert!(rx.try_recv().is_err(), "WireGuard reached the handler");
    }
    assert_eq!(iface.io_stats().foreign_dropped.load(Ordering::Relaxed), 0);
    iface.shutdown();

    // Without a handler, STUN is counted and dropped, not fed to the device.
    let iface = start(&format!("wgsu{tag}"), dir.path(), None);
    let engine = SocketAddr::new("127.0.0.1".parse().unwrap(), iface.listen_port());
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .send_to(&stun::binding_request(TransactionId([7; 12])), engine)
        .unwrap();
    wait_for("the STUN request to be counted", || {
        iface.io_stats().foreign_dropped.load(Ordering::Relaxed) == 1
    });
    // The device, which has no key, would have refused it as it refused
    // the WireGuard message above. (`device_drops` also counts the host's
    // own IPv6 router solicitations on the TUN, so it is no witness.)
    assert_eq!(
        iface.with_device(|d| d.counters().dropped_no_private_key),
        0
    );
    iface.shutdown();
}
