//! One userspace WireGuard interface: a TUN device, a UDP socket, the
//! sans-IO [`Device`] between them, and the UAPI socket that configures it.
//!
//! Threads:
//! - TUN reader: packets from the host → `Device::handle_tun` → datagrams;
//! - UDP reader: datagrams from peers → `Device::handle_udp` → packets for
//!   the host, and handshake replies;
//! - timer: `Device::handle_timers` every [`TIMER_TICK`] (handshake retries,
//!   keepalives, rekey and expiry; WireGuard paper §6);
//! - UAPI: one thread accepting, one per connection (`uapi_server`).
//!
//! The data path is batched at both ends, as wireguard-go's is on Linux:
//! - the TUN device is opened with IFF_VNET_HDR and TCP segmentation
//!   offload (tun-rs `offload`), so the host's TCP stack hands over
//!   super-packets of up to 64 KiB, which tun-rs cuts into MTU-sized
//!   packets; and decrypted TCP segments of one flow are coalesced back
//!   into super-packets (tun-rs `GROTable`) before they are written;
//! - each batch of encrypted datagrams for one peer leaves in one UDP GSO
//!   `sendmsg`, and UDP GRO brings a burst of received datagrams in one
//!   `recvmsg` ([`crate::udp`]).
//!
//! The device sits behind one mutex; each thread takes it once per batch
//! to feed the inputs and collect the outputs, and does its IO after
//! letting go. The two readers run in parallel on two cores: one encrypts,
//! the other decrypts.
//!
//! The UDP socket is shared with protocols other than WireGuard, so that
//! what they learn is about the WireGuard port itself: a STUN Binding
//! request sent from it learns the NAT mapping peers must use. The UDP
//! reader demultiplexes each datagram (each one of a GRO run, too) by its
//! first bytes: WireGuard's start with the message type 1..=4 and three
//! zero bytes, which costs one comparison on the hot path; anything else
//! that [`stun::is_stun`] accepts (RFC 8489 §6.3: zero top bits, magic
//! cookie, consistent length) goes to [`InterfaceConfig::on_foreign`]
//! instead of the device, or is counted in [`IoStats::foreign_dropped`]
//! when there is no handler; the rest goes to the device, which refuses
//! it. The same goes for disco (first byte 0xD1, [`disco::is_disco`]) and
//! relay frames (0xE1..=0xE7, [`relay::is_relay`]). [`Interface::send_foreign`]
//! sends such datagrams out of the same socket (whichever is current after
//! a `listen_port` change).
//!
//! Relayed peers: a datagram the device sends to a relay endpoint
//! ([`crate::relay_endpoint`]) goes to [`InterfaceConfig::on_divert`]
//! instead of the socket, and [`Interface::inject`] feeds the device what
//! a relay brought, as if it had come from that endpoint.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use tun_rs::{
    DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, InterruptEvent, SyncDevice, VIRTIO_NET_HDR_LEN,
};
use wgmesh_proto::device::{Device, Output, TimerParams};
use wgmesh_proto::uapi::{self, Request, SetCommand};
use wgmesh_proto::{disco, relay, stun};

use crate::DataplaneError;
use crate::uapi_server::{self, Handled, UapiHandler, UapiServer};
use crate::udp::{self, BoundSocket, SocketSlot};

/// How often the device's timers run. wireguard-go and the kernel keep
/// per-peer timers; a 100 ms tick is well inside every WireGuard deadline
/// (the shortest, REKEY_TIMEOUT, is 5 s).
pub const TIMER_TICK: Duration = Duration::from_millis(100);

/// How long the UDP reader blocks before looking at the stop flag and for
/// a replaced socket.
const UDP_POLL: Duration = Duration::from_millis(250);

/// The largest read from either side: a TUN super-packet (with its virtio
/// header) or a GRO run of datagrams is at most 64 KiB.
const BUF: usize = 65536 + VIRTIO_NET_HDR_LEN;

/// Room in each per-packet buffer of a TUN batch beyond the MTU.
const PACKET_SLACK: usize = 256;

/// Called once if the interface cannot go on (its TUN device was deleted,
/// see [`Interface::device_gone`], or a thread died): the owner should
/// tear it down.
pub type OnFatal = Arc<dyn Fn(&str) + Send + Sync>;

/// Called with each datagram the engine's socket receives that is not
/// WireGuard but STUN (see the module doc), and its sender (canonical: plain
/// IPv4 for an IPv4 peer). It runs on the UDP reader thread, outside the
/// device lock: it must be quick (hand the bytes to a channel, or answer
/// with [`Interface::send_foreign`]) and must not panic, which would take
/// the interface down like any dead reader.
pub type ForeignHandler = Arc<dyn Fn(SocketAddr, &[u8]) + Send + Sync>;

/// What to create.
#[derive(Clone)]
pub struct InterfaceConfig {
    /// The TUN device's name (≤ 15 bytes).
    pub name: String,
    pub mtu: u16,
    /// Whether the link comes up with the device (tun-rs's default). A
    /// wireguard-go-style owner leaves it down: whoever configures the
    /// interface brings it up (`ip link set … up`, as wg-quick does), after
    /// `addrgenmode none`, so it gets no IPv6 link-local address.
    pub link_up: bool,
    /// The UDP port to bind first; 0 for any. A later `listen_port` from
    /// [`Interface::apply`] or UAPI rebinds.
    pub listen_port: u16,
    /// Where the UAPI socket goes ([`uapi_server::SOCKET_DIR`]).
    pub uapi_dir: PathBuf,
    pub on_fatal: Option<OnFatal>,
    /// Off-spec WireGuard timers (see
    /// [`Device::dangerously_set_timer_params`]): only for tests that must
    /// see a rekey in seconds. `None` keeps the paper's timers.
    pub dangerous_timer_params: Option<TimerParams>,
    /// Where STUN, disco and relay datagrams received on the WireGuard
    /// socket go; `None` counts and drops them.
    pub on_foreign: Option<ForeignHandler>,
    /// Where WireGuard datagrams for relay endpoints go (the same calling
    /// rules as `on_foreign`); `None` counts and drops them.
    pub on_divert: Option<ForeignHandler>,
}

impl std::fmt::Debug for InterfaceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterfaceConfig")
            .field("name", &self.name)
            .field("mtu", &self.mtu)
            .field("link_up", &self.link_up)
            .field("listen_port", &self.listen_port)
            .field("uapi_dir", &self.uapi_dir)
            .field("dangerous_timer_params", &self.dangerous_timer_params)
            .finish_non_exhaustive()
    }
}

impl InterfaceConfig {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            mtu: 1420,
            link_up: true,
            listen_port: 0,
            uapi_dir: PathBuf::from(uapi_server::SOCKET_DIR),
            on_fatal: None,
            dangerous_timer_params: None,
            on_foreign: None,
            on_divert: None,
        }
    }
}

/// Counters of what the IO shell dropped or failed to do; the device keeps
/// its own ([`Device::counters`]).
#[derive(Debug, Default)]
pub struct IoStats {
    pub tun_read_errors: AtomicU64,
    pub tun_write_errors: AtomicU64,
    pub udp_recv_errors: AtomicU64,
    pub udp_send_errors: AtomicU64,
    /// Packets or datagrams the device refused (`handle_*` errors).
    pub device_drops: AtomicU64,
    pub uapi_errors: AtomicU64,
    /// STUN datagrams received with no [`InterfaceConfig::on_foreign`]
    /// handler to take them.
    pub foreign_dropped: AtomicU64,
}

/// Logs the first of a kind of event, then at most one line per
/// [`SparseLog::EVERY`] with the count, so a flood of bad packets cannot
/// flood the log.
#[derive(Debug, Default)]
struct SparseLog {
    state: Mutex<Option<(Instant, u64)>>,
}

impl SparseLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&self, what: &str, count: &AtomicU64, detail: &dyn std::fmt::Display) {
        let total = count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match *s {
            Some((last, _)) if now.duration_since(last) < Self::EVERY => {}
            _ => {
                eprintln!("wgmesh: {what}: {detail} ({total} so far)");
                *s = Some((now, total));
            }
        }
    }
}

/// What every thread shares.
struct Shared {
    name: String,
    device: Mutex<Device>,
    udp: SocketSlot,
    /// The fwmark set on the current socket.
    fwmark: AtomicU32,
    stop: AtomicBool,
    stats: IoStats,
    log_tun: SparseLog,
    log_udp: SparseLog,
    log_device: SparseLog,
    on_fatal: Option<OnFatal>,
    fatal_sent: AtomicBool,
    /// The TUN device was deleted under us (`ip link del`, or its
    /// namespace went): the reason the interface ends, not a failure.
    tun_gone: AtomicBool,
    on_foreign: Option<ForeignHandler>,
    on_divert: Option<ForeignHandler>,
    /// Buffers for [`Interface::inject`].
    inject_writer: Mutex<Writer>,
}

impl Shared {
    fn device(&self) -> MutexGuard<'_, Device> {
        // Poisoned only by a thread that panicked holding it, which
        // `supervised` has already reported as fatal: the interface is on
        // its way down. Until then the others (a UAPI `get`, the teardown)
        // still use the device rather than panic in turn.
        self.device.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports the first reason the interface cannot go on (later ones
    /// are consequences of it) to the owner, which tears it down.
    fn fatal(&self, why: &str) {
        if self.fatal_sent.swap(true, Ordering::AcqRel) {
            return;
        }
        eprintln!("wgmesh: {}: {why}", self.name);
        if let Some(f) = &self.on_fatal {
            f(why);
        }
    }

    /// Applies `cmd` and makes the socket follow the device's
    /// `listen_port` and `fwmark`. Like wireguard-go, what was applied
    /// before an error stays applied.
    fn apply(&self, cmd: &SetCommand) -> Result<(), DataplaneError> {
        let mut dev = self.device();
        dev.apply(Instant::now(), cmd)?;
        self.follow_config(&mut dev)
    }

    fn follow_config(&self, dev: &mut Device) -> Result<(), DataplaneError> {
        let current = self.udp.get();
        let want_port = dev.listen_port();
        let mark = dev.fwmark();
        if want_port != current.port {
            let bound = udp::bind_socket(want_port, mark)
                .and_then(|s| {
                    s.set_read_timeout(Some(UDP_POLL))?;
                    BoundSocket::new(s)
                })
                .map_err(|source| DataplaneError::Bind {
                    port: want_port,
                    source,
                });
            let bound = match bound {
                Ok(b) => b,
                Err(e) => {
                    // Back to the port actually bound, so `get` tells the truth.
                    let revert = SetCommand {
                        listen_port: Some(current.port),
                        ..SetCommand::default()
                    };
                    let _ = dev.apply(Instant::now(), &revert);
                    return Err(e);
                }
            };
            if bound.port != want_port {
                // Port 0 asked for any port: the device reports the real one.
                let actual = SetCommand {
                    listen_port: Some(bound.port),
                    ..SetCommand::default()
                };
                dev.apply(Instant::now(), &actual)?;
            }
            eprintln!(
                "wgmesh: {}: listening on UDP port {}",
                self.name, bound.port
            );
            self.udp.replace(bound);
            self.fwmark.store(mark, Ordering::Release);
        } else if mark != self.fwmark.load(Ordering::Acquire) {
            udp::set_fwmark(&current.sock, mark).map_err(|source| DataplaneError::Bind {
                port: current.port,
                source,
            })?;
            self.fwmark.store(mark, Ordering::Release);
        }
        Ok(())
    }
}

/// One thread's reusable buffers for carrying out [`Output`]s: nothing is
/// allocated per packet once they have grown to a batch's size.
struct Writer {
    /// Packets for the TUN, each after [`VIRTIO_NET_HDR_LEN`] bytes of
    /// room for the virtio header; the first `tun_used` are pending.
    tun_bufs: Vec<Vec<u8>>,
    tun_used: usize,
    gro: GROTable,
    /// A run of datagrams to one peer, all of `gso_segment` bytes but the
    /// last, for one GSO send.
    gso: Vec<u8>,
    gso_to: Option<SocketAddr>,
    gso_segment: usize,
    gso_count: usize,
}

impl Writer {
    fn new() -> Self {
        Self {
            tun_bufs: Vec::new(),
            tun_used: 0,
            gro: GROTable::new(),
            gso: Vec::with_capacity(udp::GSO_MAX_BYTES),
            gso_to: None,
            gso_segment: 0,
            gso_count: 0,
        }
    }

    /// Does the IO the device asked for, batching what it can.
    fn flush(
        &mut self,
        shared: &Shared,
        out: &mut Vec<Output>,
        sock: &BoundSocket,
        tun: &SyncDevice,
    ) {
        for o in out.drain(..) {
            match o {
                Output::Network { to, bytes } if crate::is_relay_endpoint(to) => {
                    match &shared.on_divert {
                        Some(divert) => divert(to, &bytes),
                        None => {
                            shared.stats.foreign_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Output::Network { to, bytes } => {
                    let len = bytes.len();
                    let fits = self.gso_to == Some(to)
                        && len <= self.gso_segment
                        && self.gso_count < udp::GSO_MAX_SEGMENTS
                        && self.gso.len() + len <= udp::GSO_MAX_BYTES;
                    if !fits {
                        self.send_gso(shared, sock);
                        self.gso_to = Some(to);
                        self.gso_segment = len;
                    }
                    self.gso.extend_from_slice(&bytes);
                    self.gso_count += 1;
                    // Only the last datagram of a run may be shorter.
                    if len < self.gso_segment {
                        self.send_gso(shared, sock);
                    }
                }
                Output::Tunnel(bytes) => {
                    if bytes.is_empty() {
                        continue;
                    }
                    if self.tun_used == self.tun_bufs.len() {
                        // Room for a whole super-packet: tun-rs coalesces
                        // into a buffer only if it need not reallocate.
                        // Untouched capacity costs address space, not RSS.
                        self.tun_bufs
                            .push(Vec::with_capacity(BUF + 2 * VIRTIO_NET_HDR_LEN));
                    }
                    let buf = &mut self.tun_bufs[self.tun_used];
                    buf.clear();
                    buf.resize(VIRTIO_NET_HDR_LEN, 0);
                    buf.extend_from_slice(&bytes);
                    self.tun_used += 1;
                    if self.tun_used == IDEAL_BATCH_SIZE {
                        self.write_tun(shared, tun);
                    }
                }
            }
        }
        self.send_gso(shared, sock);
        self.write_tun(shared, tun);
    }

    fn send_gso(&mut self, shared: &Shared, sock: &BoundSocket) {
        let Some(to) = self.gso_to.take() else {
            return;
        };
        if let Err(e) = sock.send_segments(&self.gso, self.gso_segment, to) {
            shared.log_udp.note(
                "UDP send failed",
                &shared.stats.udp_send_errors,
                &format_args!("to {to}: {e}"),
            );
        }
        self.gso.clear();
        self.gso_count = 0;
    }

    fn write_tun(&mut self, shared: &Shared, tun: &SyncDevice) {
        if self.tun_used == 0 {
            return;
        }
        let bufs = &mut self.tun_bufs[..self.tun_used];
        // With offloads, coalesces TCP segments of one flow into
        // super-packets and writes each with its virtio header; without,
        // writes each packet after the (then unused) header room.
        if let Err(e) = tun.send_multiple(&mut self.gro, bufs, VIRTIO_NET_HDR_LEN) {
            shared
                .log_tun
                .note("TUN write failed", &shared.stats.tun_write_errors, &e);
        }
        self.tun_used = 0;
    }
}

/// wgmesh's one request beyond the UAPI protocol, on the same socket: the
/// device's [`Counters`](wgmesh_proto::device::Counters) and the shell's
/// [`IoStats`], answered as `name=value` lines and `errno=0`, like a `get`.
/// wg(8) never sends it (its operations are `get` and `set`), and the
/// `get` reply stays exactly what wg parses. On wireguard-go the same
/// request is refused as an unknown operation.
pub const STATS_REQUEST: &[u8] = b"wgmesh_stats=1\n\n";

impl IoStats {
    /// Every counter with its name, prefixed `io_` (the device's counters
    /// have names of their own).
    pub fn named(&self) -> [(&'static str, u64); 7] {
        let Self {
            tun_read_errors,
            tun_write_errors,
            udp_recv_errors,
            udp_send_errors,
            device_drops,
            uapi_errors,
            foreign_dropped,
        } = self;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("io_tun_read_errors", get(tun_read_errors)),
            ("io_tun_write_errors", get(tun_write_errors)),
            ("io_udp_recv_errors", get(udp_recv_errors)),
            ("io_udp_send_errors", get(udp_send_errors)),
            ("io_device_drops", get(device_drops)),
            ("io_uapi_errors", get(uapi_errors)),
            ("io_foreign_dropped", get(foreign_dropped)),
        ]
    }
}

impl Shared {
    /// The reply to [`STATS_REQUEST`].
    fn render_stats(&self) -> String {
        let device = self.device().counters().clone();
        let mut reply = String::new();
        for (name, value) in device.named().into_iter().chain(self.stats.named()) {
            reply.push_str(&format!("{name}={value}\n"));
        }
        reply.push_str("errno=0\n\n");
        reply
    }
}

impl UapiHandler for Shared {
    fn handle(&self, buf: &[u8]) -> Handled {
        if buf.starts_with(STATS_REQUEST) {
            return Handled::Reply {
                reply: self.render_stats(),
                consumed: STATS_REQUEST.len(),
            };
        }
        if !buf.is_empty() && STATS_REQUEST.starts_with(buf) {
            return Handled::NeedMore;
        }
        match uapi::parse_request(buf) {
            Ok(None) => Handled::NeedMore,
            Ok(Some((Request::Get, consumed))) => {
                let snapshot = self.device().snapshot(Instant::now(), SystemTime::now());
                Handled::Reply {
                    reply: uapi::render_get(&snapshot),
                    consumed,
                }
            }
            Ok(Some((Request::Set(cmd), consumed))) => {
                // Negated, as wireguard-go writes it and wg(8) reads it
                // (see `uapi::render_error`).
                let errno = match self.apply(&cmd) {
                    Ok(()) => 0,
                    Err(e) => {
                        self.stats.uapi_errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("wgmesh: {}: UAPI set refused: {e}", self.name);
                        -e.errno()
                    }
                };
                Handled::Reply {
                    reply: uapi::render_errno(errno),
                    consumed,
                }
            }
            Err(e) => {
                self.stats.uapi_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("wgmesh: {}: malformed UAPI request: {e}", self.name);
                Handled::Fail {
                    reply: uapi::render_error(&e),
                }
            }
        }
    }

    fn errno_reply(&self, errno: i32) -> String {
        uapi::render_errno(-errno)
    }
}

/// A running interface. Dropping it (or [`Interface::shutdown`]) stops its
/// threads, removes the UAPI socket and closes the TUN device, which
/// removes it from the host with its addresses and routes.
pub struct Interface {
    shared: Arc<Shared>,
    tun: Option<Arc<SyncDevice>>,
    tun_wake: Arc<InterruptEvent>,
    threads: Vec<JoinHandle<()>>,
    uapi: Option<UapiServer>,
}

impl std::fmt::Debug for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interface")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl Interface {
    /// Creates the TUN device, binds the socket, starts the threads and
    /// the UAPI socket. The device starts with no key and no peers.
    pub fn start(config: InterfaceConfig) -> Result<Self, DataplaneError> {
        let name = config.name.clone();
        // Refuse before touching anything if another process serves it.
        let uapi_path = uapi_server::socket_path(&config.uapi_dir, &name);
        if uapi_server::is_up(&uapi_path) {
            return Err(DataplaneError::InUse {
                what: format!("{name} is up already ({} answers)", uapi_path.display()),
            });
        }
        let tun = DeviceBuilder::new()
            .name(&name)
            .mtu(config.mtu)
            .enable(config.link_up)
            // IFF_NO_PI: bare IP packets, no 4-byte packet information header.
            .packet_information(false)
            // IFF_VNET_HDR with TSO4/TSO6/CSUM (and USO where the kernel
            // has it): super-packets in, super-packets out.
            .offload(true)
            .build_sync()
            .map_err(|source| DataplaneError::Tun {
                name: name.clone(),
                source,
            })?;
        let tun = Arc::new(tun);
        let bound = udp::bind_socket(config.listen_port, 0)
            .and_then(|s| {
                s.set_read_timeout(Some(UDP_POLL))?;
                BoundSocket::new(s)
            })
            .map_err(|source| DataplaneError::Bind {
                port: config.listen_port,
                source,
            })?;
        let port = bound.port;
        let mut device = Device::new();
        device.set_mtu(config.mtu);
        if let Some(params) = &config.dangerous_timer_params {
            device.dangerously_set_timer_params(params.clone());
        }
        device.apply(
            Instant::now(),
            &SetCommand {
                listen_port: Some(port),
                ..SetCommand::default()
            },
        )?;
        let shared = Arc::new(Shared {
            name: name.clone(),
            device: Mutex::new(device),
            udp: SocketSlot::new(bound),
            fwmark: AtomicU32::new(0),
            stop: AtomicBool::new(false),
            stats: IoStats::default(),
            log_tun: SparseLog::default(),
            log_udp: SparseLog::default(),
            log_device: SparseLog::default(),
            on_fatal: config.on_fatal.clone(),
            fatal_sent: AtomicBool::new(false),
            tun_gone: AtomicBool::new(false),
            on_foreign: config.on_foreign.clone(),
            on_divert: config.on_divert.clone(),
            inject_writer: Mutex::new(Writer::new()),
        });
        let tun_wake = Arc::new(InterruptEvent::new().map_err(|source| DataplaneError::Tun {
            name: name.clone(),
            source,
        })?);
        let mut iface = Self {
            shared: Arc::clone(&shared),
            tun: Some(Arc::clone(&tun)),
            tun_wake: Arc::clone(&tun_wake),
            threads: Vec::new(),
            uapi: None,
        };
        // From here on, an early return drops `iface`, which stops what started.
        let spawn = |label: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("{label}-{name}"))
                .spawn(f)
                .map_err(DataplaneError::Thread)
        };
        {
            let (s, t, w) = (Arc::clone(&shared), Arc::clone(&tun), Arc::clone(&tun_wake));
            let mtu = usize::from(config.mtu);
            iface.threads.push(spawn(
                "tun",
                Box::new(move || {
                    supervised("TUN reader", &s.stop, &|why| s.fatal(why), || {
                        tun_loop(&s, &t, &w, mtu);
                    });
                }),
            )?);
        }
        {
            let (s, t) = (Arc::clone(&shared), Arc::clone(&tun));
            iface.threads.push(spawn(
                "udp",
                Box::new(move || {
                    supervised("UDP reader", &s.stop, &|why| s.fatal(why), || {
                        udp_loop(&s, &t);
                    });
                }),
            )?);
        }
        {
            let (s, t) = (Arc::clone(&shared), Arc::clone(&tun));
            iface.threads.push(spawn(
                "timers",
                Box::new(move || {
                    supervised("timer", &s.stop, &|why| s.fatal(why), || {
                        timer_loop(&s, &t);
                    });
                }),
            )?);
        }
        let handler: Arc<dyn UapiHandler> = shared;
        iface.uapi = Some(UapiServer::start(&config.uapi_dir, &name, handler)?);
        eprintln!("wgmesh: {name}: TUN up, listening on UDP port {port}");
        Ok(iface)
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The UAPI socket's path.
    pub fn uapi_path(&self) -> Option<&Path> {
        self.uapi.as_ref().map(UapiServer::path)
    }

    /// The UDP port the socket is bound to now.
    pub fn listen_port(&self) -> u16 {
        self.shared.udp.get().port
    }

    /// Applies a configuration change, exactly as a UAPI `set` would.
    pub fn apply(&self, cmd: &SetCommand) -> Result<(), DataplaneError> {
        self.shared.apply(cmd)
    }

    /// Runs `f` on the device, under its lock.
    pub fn with_device<R>(&self, f: impl FnOnce(&mut Device) -> R) -> R {
        f(&mut self.shared.device())
    }

    /// Whether the interface ended because its TUN device was deleted
    /// (`ip link del`, `wg-quick down`, its namespace deleted) rather than
    /// by a failure; [`InterfaceConfig::on_fatal`] is called either way.
    pub fn device_gone(&self) -> bool {
        self.shared.tun_gone.load(Ordering::Acquire)
    }

    pub fn io_stats(&self) -> &IoStats {
        &self.shared.stats
    }

    /// Sends one non-WireGuard datagram (a STUN request or response) to
    /// `to` from the interface's own UDP socket, the one WireGuard uses,
    /// so that it leaves through the same NAT mapping. An IPv4 `to` is
    /// mapped for the dual-stack socket ([`udp::destination`]); an IPv6
    /// one fails on the IPv4-only fallback socket.
    pub fn send_foreign(&self, to: SocketAddr, bytes: &[u8]) -> Result<(), DataplaneError> {
        let sock = self.shared.udp.get();
        match sock.send_to(bytes, to) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(n) => Err(DataplaneError::Send {
                to,
                source: io::Error::other(format!("sent {n} of {} bytes", bytes.len())),
            }),
            Err(source) => {
                self.shared
                    .stats
                    .udp_send_errors
                    .fetch_add(1, Ordering::Relaxed);
                Err(DataplaneError::Send { to, source })
            }
        }
    }

    /// Hands the device a WireGuard datagram that did not come from the
    /// socket (a relay brought it) as if it came from `from` (the peer's
    /// relay endpoint), and does the IO that follows: the decrypted packet
    /// to the TUN, a handshake reply out (diverted again, for a relay
    /// endpoint).
    pub fn inject(&self, from: SocketAddr, datagram: &[u8]) {
        let Some(tun) = &self.tun else {
            return;
        };
        let mut out = Vec::new();
        if let Err(e) = self
            .shared
            .device()
            .handle_udp(Instant::now(), from, datagram, &mut out)
        {
            self.shared.log_device.note(
                "relayed datagram dropped",
                &self.shared.stats.device_drops,
                &format_args!("from {from}: {e}"),
            );
        }
        let mut writer = self
            .shared
            .inject_writer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        writer.flush(&self.shared, &mut out, &self.shared.udp.get(), tun);
    }

    /// Stops everything and removes the TUN device and the UAPI socket.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(mut uapi) = self.uapi.take() {
            uapi.stop();
        }
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.tun_wake.trigger();
        // Wakes the UDP reader now rather than at its next UDP_POLL: on
        // an unconnected UDP socket shutdown(2) fails with ENOTCONN but
        // still marks it shut for reading and wakes a blocked recvmsg
        // (Linux `inet_shutdown`), so the port is free as soon as the
        // threads have let go of it.
        let _ = nix::sys::socket::shutdown(
            self.shared.udp.get().sock.as_raw_fd(),
            nix::sys::socket::Shutdown::Read,
        );
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The threads held the other references: this closes the TUN fd,
        // and the kernel removes a non-persistent TUN device with it.
        self.tun = None;
    }
}

impl Drop for Interface {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs one of the interface's loops. Each is needed (no TUN reader: no
/// outgoing packets; no UDP reader: no incoming ones; no timers: no
/// handshakes), so one that ends before `stop` is set, by an error it
/// cannot go on from or by a panic, is fatal: the owner is told and takes
/// the whole interface down (`wgmesh wg up` exits non-zero), rather than
/// leave it up and half-dead.
fn supervised(label: &str, stop: &AtomicBool, fatal: &dyn Fn(&str), body: impl FnOnce()) {
    // Unwind safety: after a panic nothing of this thread's state is used
    // again, and the shared device is only used on the way down.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    if stop.load(Ordering::Acquire) {
        return;
    }
    match result {
        Ok(()) => fatal(&format!("the {label} thread ended")),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned());
            fatal(&format!("the {label} thread panicked: {what}"));
        }
    }
}

fn tun_loop(shared: &Shared, tun: &SyncDevice, wake: &InterruptEvent, mtu: usize) {
    let mut original = vec![0u8; BUF];
    // A super-packet becomes at most IDEAL_BATCH_SIZE packets of at most
    // the MTU. An MTU raised later with `ip link` makes longer packets
    // fail to fit: they are counted and dropped.
    let mut bufs = vec![vec![0u8; mtu.max(1280) + PACKET_SLACK]; IDEAL_BATCH_SIZE];
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    let mut out = Vec::new();
    let mut writer = Writer::new();
    loop {
        let n = match tun.recv_multiple_intr(&mut original, &mut bufs, &mut sizes, 0, wake) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
                continue;
            }
            Err(e) => {
                if shared.stop.load(Ordering::Acquire) {
                    return;
                }
                if tun_gone(tun, &e) {
                    shared.tun_gone.store(true, Ordering::Release);
                    shared.fatal(&format!("the TUN device is gone ({e})"));
                    return;
                }
                if e.raw_os_error().is_none() {
                    // tun-rs refused what it read (a malformed or
                    // oversized super-packet): drop it, keep reading.
                    shared
                        .log_tun
                        .note("TUN packet dropped", &shared.stats.tun_read_errors, &e);
                    continue;
                }
                shared.stats.tun_read_errors.fetch_add(1, Ordering::Relaxed);
                shared.fatal(&format!("reading the TUN device failed: {e}"));
                return;
            }
        };
        {
            let mut device = shared.device();
            let now = Instant::now();
            for (buf, &size) in bufs.iter().zip(&sizes).take(n) {
                if size == 0 {
                    continue;
                }
                if let Err(e) = device.handle_tun(now, &buf[..size], &mut out) {
                    shared.log_device.note(
                        "packet from the host dropped",
                        &shared.stats.device_drops,
                        &e,
                    );
                }
            }
        }
        if !out.is_empty() {
            writer.flush(shared, &mut out, &shared.udp.get(), tun);
        }
    }
}

/// Whether a failed TUN read means the device is gone. When the network
/// device behind a TUN fd is unregistered (`ip link del`, which is what
/// `wg-quick down` does for a userspace interface, or its namespace being
/// deleted), Linux detaches the fd and wakes its readers: poll(2) then
/// reports POLLERR (`tun_chr_poll`), which tun-rs turns into an error
/// without an errno, and read(2) and every ioctl but TUNSETIFF fail with
/// EBADFD. A malformed super-packet is refused without an errno too, so
/// that case is told apart by asking the fd for its name (TUNGETIFF): it
/// fails only on a detached fd. wireguard-go ends the same way, on the
/// read error (`RoutineReadFromTUN` closes the device).
fn tun_gone(tun: &SyncDevice, e: &io::Error) -> bool {
    const EBADFD: i32 = nix::errno::Errno::EBADFD as i32;
    e.raw_os_error() == Some(EBADFD) || tun.name().is_err_and(|e| e.raw_os_error() == Some(EBADFD))
}

fn udp_loop(shared: &Shared, tun: &SyncDevice) {
    let mut buf = vec![0u8; BUF];
    let mut cmsg = udp::recv_cmsg_space();
    let mut out = Vec::new();
    let mut writer = Writer::new();
    while !shared.stop.load(Ordering::Acquire) {
        // Taken afresh each time: a rebind is followed within one UDP_POLL.
        let sock = shared.udp.get();
        let got = sock.recv_batch(&mut buf, &mut cmsg);
        if shared.stop.load(Ordering::Acquire) {
            // Woken by `stop` (which shuts the socket down for reading).
            return;
        }
        let got = match got {
            // An empty datagram carries nothing for anyone (and would be
            // cut into chunks of zero bytes below).
            Ok(r) if r.len == 0 => continue,
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                        // An ICMP error for an earlier send; nothing to read.
                        | io::ErrorKind::ConnectionRefused
                ) =>
            {
                continue;
            }
            Err(e) => {
                shared
                    .log_udp
                    .note("UDP receive failed", &shared.stats.udp_recv_errors, &e);
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let from: SocketAddr = udp::canonical(got.from);
        {
            // Taken at the first WireGuard datagram, let go before calling
            // out to the foreign handler.
            let mut device: Option<MutexGuard<'_, Device>> = None;
            let now = Instant::now();
            // A GRO read is consecutive datagrams of `segment` bytes, the
            // last possibly shorter: exactly what the peer sent. Each is
            // told apart on its own.
            for datagram in buf[..got.len].chunks(got.segment) {
                if is_foreign(datagram) {
                    device = None;
                    match &shared.on_foreign {
                        Some(handler) => handler(from, datagram),
                        None => {
                            shared.stats.foreign_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                let device = device.get_or_insert_with(|| shared.device());
                if let Err(e) = device.handle_udp(now, from, datagram, &mut out) {
                    shared.log_device.note(
                        "datagram dropped",
                        &shared.stats.device_drops,
                        &format_args!("from {from}: {e}"),
                    );
                }
            }
        }
        writer.flush(shared, &mut out, &sock, tun);
    }
}

/// Whether a received datagram is for the foreign handler rather than the
/// device: not WireGuard-framed, and STUN. Every WireGuard message starts
/// with its type (1..=4) and three reserved zero bytes (WireGuard paper
/// §5.4), i.e. a little-endian u32 of 1..=4: one comparison for the common
/// case. (A STUN Binding response starts with 0x01 0x01, so the first byte
/// alone would not do.)
fn is_foreign(datagram: &[u8]) -> bool {
    if let Some(head) = datagram.first_chunk::<4>()
        && matches!(u32::from_le_bytes(*head), 1..=4)
    {
        return false;
    }
    stun::is_stun(datagram) || disco::is_disco(datagram) || relay::is_relay(datagram)
}

fn timer_loop(shared: &Shared, tun: &SyncDevice) {
    let mut out = Vec::new();
    let mut writer = Writer::new();
    let mut next = Instant::now() + TIMER_TICK;
    while !shared.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < next {
            // Unparked early by `stop`.
            std::thread::park_timeout(next - now);
            continue;
        }
        next = now + TIMER_TICK;
        shared.device().handle_timers(now, &mut out);
        if !out.is_empty() {
            writer.flush(shared, &mut out, &shared.udp.get(), tun);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: bool, body: impl FnOnce()) -> Vec<String> {
        let flag = AtomicBool::new(stop);
        let got = Mutex::new(Vec::new());
        supervised(
            "test",
            &flag,
            &|why| got.lock().expect("not poisoned").push(why.to_owned()),
            body,
        );
        got.into_inner().expect("not poisoned")
    }

    #[test]
    fn wireguard_stays_stun_leaves() {
        let txid = stun::TransactionId([9; 12]);
        let req = stun::binding_request(txid);
        assert!(is_foreign(&req));
        let resp = stun::binding_response(txid, "192.0.2.1:1".parse().unwrap(), None);
        // 0x01 0x01: a first byte WireGuard also uses.
        assert_eq!(resp[..2], [1, 1]);
        assert!(is_foreign(&resp));
        for ty in 1u8..=4 {
            let mut wg = vec![0u8; 148];
            wg[0] = ty;
            wg[4..8].copy_from_slice(&stun::MAGIC_COOKIE.to_be_bytes());
            assert!(!is_foreign(&wg));
            assert!(!is_foreign(&wg[..20]));
        }
        assert!(!is_foreign(&[]));
        assert!(!is_foreign(b"hello, not stun"));
        // Disco and relay frames leave too.
        let mut d = disco::MAGIC.to_vec();
        d.extend([0; 100]);
        assert!(is_foreign(&d));
        let keepalive = [relay::wire::KEEPALIVE];
        assert!(is_foreign(&keepalive));
    }

    /// A loop that panics or ends on its own is reported as fatal (the
    /// owner then takes the interface down); one that ends because the
    /// interface is stopping is not.
    #[test]
    fn a_loop_that_dies_is_fatal() {
        assert_eq!(
            run(false, || panic!("boom")),
            ["the test thread panicked: boom"]
        );
        let n = 7;
        assert_eq!(
            run(false, || panic!("boom {n}")),
            ["the test thread panicked: boom 7"]
        );
        assert_eq!(run(false, || {}), ["the test thread ended"]);
        assert!(run(true, || {}).is_empty());
    }
}
