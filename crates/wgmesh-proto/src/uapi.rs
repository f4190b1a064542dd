//! The cross-platform userspace WireGuard API (UAPI), as `wg(8)` speaks it
//! over `/var/run/wireguard/IFACE.sock` (https://www.wireguard.com/xplatform/).
//!
//! A request is `get=1\n\n` or `set=1\n` followed by `key=value` lines and
//! an empty line; the reply is `key=value` lines (for `get`) and then
//! `errno=N\n\n`. This module parses requests into typed commands and
//! renders replies; it never applies anything (see [`crate::Device`]).

use std::net::SocketAddr;

use ipnet::IpNet;
use wgmesh_core::key::{KEY_LEN, PresharedKey, PrivateKey, PublicKey};

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get,
    Set(SetCommand),
}

/// `set=1`: changes to apply, in order, as one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetCommand {
    /// `private_key=`: `Some(None)` removes the key (an all-zero key in UAPI).
    pub private_key: Option<Option<PrivateKey>>,
    /// `listen_port=`.
    pub listen_port: Option<u16>,
    /// `fwmark=`: `Some(0)` removes it.
    pub fwmark: Option<u32>,
    /// `replace_peers=true`: remove every existing peer first, including those
    /// named below, which are then made afresh (as the kernel and wireguard-go do).
    pub replace_peers: bool,
    pub peers: Vec<PeerChange>,
}

/// The lines that follow one `public_key=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    pub public_key: PublicKey,
    /// `remove=true`.
    pub remove: bool,
    /// `update_only=true`: do nothing if the peer does not exist.
    pub update_only: bool,
    /// `preshared_key=`: `Some(None)` removes it (all zero).
    pub preshared_key: Option<Option<PresharedKey>>,
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive_interval=`: `Some(0)` turns it off.
    pub persistent_keepalive: Option<u16>,
    /// `replace_allowed_ips=true`: clear the list before the additions below.
    pub replace_allowed_ips: bool,
    /// `allowed_ip=` lines, in order.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerChange {
    /// A change that names the peer and nothing else.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// What `get=1` reports: a snapshot of the device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceSnapshot {
    pub private_key: Option<PrivateKey>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PeerSnapshot {
    pub public_key: PublicKey,
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    /// Wall-clock time of the last handshake, as (seconds, nanoseconds)
    /// since the Unix epoch; `None` if there was none.
    pub last_handshake: Option<(u64, u32)>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: u16,
    pub allowed_ips: Vec<IpNet>,
}

/// Why a request was refused, with the errno `wg(8)` expects back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UapiError {
    /// A malformed request: unknown key, bad value, bad order (EINVAL).
    #[error("line {line}: {reason}")]
    Invalid { line: usize, reason: String },
    /// A request that is not get=1 or set=1 (EPROTO).
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
}

impl UapiError {
    /// The (positive) errno number; [`render_error`] writes it negated, as
    /// wireguard-go does and as `wg set` expects.
    pub fn errno(&self) -> i32 {
        match self {
            UapiError::Invalid { .. } => 22,      // EINVAL
            UapiError::UnknownOperation(_) => 71, // EPROTO
        }
    }
}

// ---------------------------------------------------------------------------
// The codec.
//
// Behaviour follows the reference userspace implementation, wireguard-go's
// `device/uapi.go`, and the client, wireguard-tools' `src/ipc-uapi.h`,
// wherever the xplatform page is silent.

/// The largest request [`parse_request`] buffers: 1 MiB.
///
/// The server keeps a connection's bytes until the request's empty line
/// arrives, so without a cap a client could make it buffer forever. 1 MiB is
/// a `wg setconf` of roughly 3,000 peers that each have a preshared key, an
/// endpoint and two allowed IPs (about 330 bytes a peer); a request that
/// needs more must be split into several `set=1` requests, which `Device`
/// applies one after the other.
pub const MAX_REQUEST_LEN: usize = 1 << 20;

/// Length of a key in the hex form UAPI uses.
const KEY_HEX_LEN: usize = 2 * KEY_LEN;

/// Reads one request from the start of `input` (a socket's bytes so far):
/// `Ok(None)` if more bytes are needed (no empty line yet),
/// `Ok(Some((request, consumed_len)))` when a whole request has arrived; the
/// bytes after `consumed_len` belong to the next request.
///
/// Bad requests give a [`UapiError`] naming the line (the operation line is
/// line 1). After an error the end of the bad request is not known, so the
/// server should answer with [`render_error`] and close the connection (as
/// wireguard-go does after an unknown operation; `wg(8)` opens a new
/// connection for every operation anyway).
///
/// Only complete lines are judged, so feeding a request in pieces gives, for
/// every prefix, either `Ok(None)` or the result of the whole. More than
/// [`MAX_REQUEST_LEN`] bytes without the end of the request is an error.
/// The cost is linear in `input.len()`, and a server calls it again after
/// every read, so a client trickling bytes one at a time costs it quadratic
/// time up to the cap; the socket is root's alone (wireguard-go's too).
///
/// What is accepted (all as wireguard-go accepts it unless noted):
/// - `get=1` followed at once by the empty line, or `set=1` followed by
///   `key=value` lines and the empty line. Lines end in `\n` alone.
/// - Device keys, only before the first `public_key=`: `private_key` (64 hex
///   digits, either case; all zero removes the key), `listen_port` (0–65535;
///   0 picks a port), `fwmark` (0–2³²−1; 0 removes it), `replace_peers=true`.
/// - Peer keys, after a `public_key=`: `remove=true`, `update_only=true`,
///   `preshared_key` (hex; all zero removes it), `endpoint` (`1.2.3.4:51820`
///   or `[v6]:51820`, with an optional numeric scope `[fe80::1%2]:51820`),
///   `persistent_keepalive_interval` (0–65535 seconds; 0 turns it off),
///   `replace_allowed_ips=true`, `allowed_ip` (`addr/len`; host bits are
///   allowed and masked off, as wireguard-go's and the kernel's tables do),
///   `protocol_version=1`.
/// - A repeated key keeps the last value. `replace_allowed_ips=true` also
///   drops the `allowed_ip=` lines before it in the same peer section (in
///   wireguard-go it clears the table at that point). After `remove=true` the
///   rest of the section is checked but dropped, as wireguard-go ignores it:
///   the [`PeerChange`] says only `remove`.
///
/// Refused on purpose, where wireguard-go would accept: `\r\n` line ends, a
/// scope given as an interface name (`%eth0`, which would need a lookup this
/// sans-IO code cannot do), and `allowed_ip=-addr/len` (removing one entry,
/// which wireguard-tools ≥ v1.0.20250521 sends for `allowed-ips -addr/len`;
/// [`PeerChange`] has no field for it).
pub fn parse_request(input: &[u8]) -> Result<Option<(Request, usize)>, UapiError> {
    let window = &input[..input.len().min(MAX_REQUEST_LEN)];
    let mut lines = Lines::new(window);
    let Some(op) = lines.next() else {
        return incomplete(input, 1);
    };
    match op {
        b"get=1" => match window.get(lines.pos) {
            None => incomplete(input, 2),
            Some(b'\n') => Ok(Some((Request::Get, lines.pos + 1))),
            // wireguard-go: "trailing character in UAPI get".
            Some(_) => Err(invalid(2, "get=1 must be followed by an empty line")),
        },
        b"set=1" => {
            let mut parser = SetParser::default();
            while let Some(line) = lines.next() {
                if line.is_empty() {
                    return Ok(Some((Request::Set(parser.finish()), lines.pos)));
                }
                parser.line(lines.number, line)?;
            }
            incomplete(input, lines.number + 1)
        }
        other => Err(UapiError::UnknownOperation(shown_operation(other))),
    }
}

/// The reply to `get=1`: the `key=value` lines, then `errno=0` and the empty
/// line.
///
/// The keys come in wireguard-go's order: `private_key` (only if set and not
/// all zero), `listen_port` and `fwmark` (only if not zero), then for every
/// peer `public_key`, `preshared_key` (all zero if none), `protocol_version=1`,
/// `endpoint` (if known), `last_handshake_time_sec`/`_nsec` (0 and 0 if
/// none), `tx_bytes`, `rx_bytes`, `persistent_keepalive_interval`, and one
/// `allowed_ip` per entry (host bits masked off). Keys are lowercase hex.
///
/// The reply holds the private key: wipe it after writing it (for example
/// with `zeroize::Zeroize`). It is built in a buffer sized up front, so no
/// stray copy of the key is left behind by a reallocation.
pub fn render_get(snapshot: &DeviceSnapshot) -> String {
    use std::fmt::Write as _;
    const ERR: &str = "writing to a String cannot fail";

    let mut out = String::with_capacity(get_reply_capacity(snapshot));
    if let Some(key) = &snapshot.private_key
        && !is_zero(key.as_bytes())
    {
        push_hex_key(&mut out, "private_key", key.as_bytes());
    }
    if snapshot.listen_port != 0 {
        writeln!(out, "listen_port={}", snapshot.listen_port).expect(ERR);
    }
    if snapshot.fwmark != 0 {
        writeln!(out, "fwmark={}", snapshot.fwmark).expect(ERR);
    }
    for peer in &snapshot.peers {
        push_hex_key(&mut out, "public_key", peer.public_key.as_bytes());
        let psk = peer.preshared_key.as_ref().map(PresharedKey::as_bytes);
        push_hex_key(&mut out, "preshared_key", psk.unwrap_or(&[0; KEY_LEN]));
        out.push_str("protocol_version=1\n");
        if let Some(endpoint) = &peer.endpoint {
            // `SocketAddr`'s text is what wg reads back: `1.2.3.4:51820`,
            // `[2001:db8::1]:51820`, `[fe80::1%2]:51820`.
            writeln!(out, "endpoint={endpoint}").expect(ERR);
        }
        let (sec, nsec) = peer.last_handshake.unwrap_or((0, 0));
        writeln!(out, "last_handshake_time_sec={sec}").expect(ERR);
        writeln!(out, "last_handshake_time_nsec={nsec}").expect(ERR);
        writeln!(out, "tx_bytes={}", peer.tx_bytes).expect(ERR);
        writeln!(out, "rx_bytes={}", peer.rx_bytes).expect(ERR);
        writeln!(
            out,
            "persistent_keepalive_interval={}",
            peer.persistent_keepalive
        )
        .expect(ERR);
        for net in &peer.allowed_ips {
            // Masked, as wireguard-go's table gives its entries back.
            writeln!(out, "allowed_ip={}", net.trunc()).expect(ERR);
        }
    }
    out.push_str("errno=0\n\n");
    debug_assert!(out.len() <= get_reply_capacity(snapshot));
    out
}

/// The reply to a set, or to a failed request: `errno=N` and the empty line,
/// with `errno` written exactly as given (0 for success).
pub fn render_errno(errno: i32) -> String {
    format!("errno={errno}\n\n")
}

/// The reply to a refused request, as wireguard-go writes it: the errno
/// negated (`errno=-22`).
///
/// The sign matters to `wg(8)`: after a set it sets `errno = -value`, so
/// `errno=-22` makes `wg set` print "Invalid argument" while `errno=22`
/// would print "Unknown error -22". (After a get it wants the positive
/// number, but the only get that can fail is one `wg` never sends.)
pub fn render_error(error: &UapiError) -> String {
    render_errno(-error.errno())
}

/// Bytes enough for [`render_get`]'s reply, counted line by line from the
/// longest value each line can take.
fn get_reply_capacity(snapshot: &DeviceSnapshot) -> usize {
    const KEY_LINE: usize = "preshared_key=".len() + KEY_HEX_LEN + 1;
    // `[ffff:…:ffff%4294967295]:65535`
    const ENDPOINT_LINE: usize = "endpoint=".len() + 1 + 39 + 11 + 2 + 5 + 1;
    const U64_LINE: usize = "last_handshake_time_nsec=".len() + 20 + 1;
    const ALLOWED_IP_LINE: usize = "allowed_ip=".len() + 39 + 4 + 1;
    const PEER: usize = 2 * KEY_LINE + ENDPOINT_LINE + 6 * U64_LINE + "protocol_version=1\n".len();
    const DEVICE: usize = KEY_LINE + 2 * U64_LINE + "errno=0\n\n".len();
    DEVICE
        + snapshot
            .peers
            .iter()
            .map(|p| PEER + ALLOWED_IP_LINE * p.allowed_ips.len())
            .sum::<usize>()
}

fn push_hex_key(out: &mut String, name: &str, key: &[u8; KEY_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str(name);
    out.push('=');
    // Straight into the reply: no temporary copy of the key's text.
    for b in key {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out.push('\n');
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |acc, b| acc | b) == 0
}

/// The complete (`\n`-terminated) lines of `buf`, numbered from 1.
struct Lines<'a> {
    buf: &'a [u8],
    /// Where the next line starts.
    pos: usize,
    /// Number of the line last returned.
    number: usize,
}

impl<'a> Lines<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            number: 0,
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.buf.get(self.pos..)?;
        let len = rest.iter().position(|&b| b == b'\n')?;
        self.pos += len + 1;
        self.number += 1;
        rest.get(..len)
    }
}

/// No end of request yet: wait for more, unless the cap is reached.
fn incomplete(input: &[u8], line: usize) -> Result<Option<(Request, usize)>, UapiError> {
    if input.len() >= MAX_REQUEST_LEN {
        Err(invalid(
            line,
            format!("request longer than {MAX_REQUEST_LEN} bytes without its empty line"),
        ))
    } else {
        Ok(None)
    }
}

fn invalid(line: usize, reason: impl Into<String>) -> UapiError {
    UapiError::Invalid {
        line,
        reason: reason.into(),
    }
}

/// The operation for an error message: the name before `=` if it looks like
/// one, and the value only if it is too short to be a key (so `set=1\r` or
/// `get=2` show, a stray secret never does).
fn shown_operation(line: &[u8]) -> String {
    let (name, value) = match line.iter().position(|&b| b == b'=') {
        Some(eq) => (&line[..eq], Some(&line[eq + 1..])),
        None => (line, None),
    };
    let mut shown = shown_name(name);
    if let Some(value) = value {
        shown.push('=');
        if value.len() <= 4 {
            shown.extend(value.escape_ascii().map(char::from));
        } else {
            shown.push_str("<not shown>");
        }
    }
    shown
}

/// A key as an error may show it: lowercase letters and `_`, at most 32 of
/// them. Anything else (hex digits of a key, binary) is not shown.
fn shown_name(name: &[u8]) -> String {
    if !name.is_empty()
        && name.len() <= 32
        && name.iter().all(|&b| b.is_ascii_lowercase() || b == b'_')
    {
        String::from_utf8_lossy(name).into_owned()
    } else {
        format!("<{} bytes, not shown>", name.len())
    }
}

/// A non-secret value as an error may show it: quoted, at most 64 bytes.
fn shown_value(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// The state of a `set=1` being read.
#[derive(Default)]
struct SetParser {
    cmd: SetCommand,
    /// The peer section being read, if a `public_key=` was seen.
    peer: Option<PeerChange>,
}

impl SetParser {
    fn finish(mut self) -> SetCommand {
        if let Some(peer) = self.peer.take() {
            self.cmd.peers.push(peer);
        }
        self.cmd
    }

    fn line(&mut self, number: usize, line: &[u8]) -> Result<(), UapiError> {
        let err = |reason: String| invalid(number, reason);
        let line = std::str::from_utf8(line).map_err(|_| err("not UTF-8".into()))?;
        let Some((key, value)) = line.split_once('=') else {
            return Err(err("expected key=value".into()));
        };
        if key == "public_key" {
            let public_key = decode_hex_key(value)
                .map(|k| PublicKey::from_bytes(*k))
                .ok_or_else(|| err(format!("public_key: not {KEY_HEX_LEN} hex digits")))?;
            if let Some(done) = self.peer.replace(PeerChange::new(public_key)) {
                self.cmd.peers.push(done);
            }
            return Ok(());
        }
        match &mut self.peer {
            None => device_line(&mut self.cmd, key, value).map_err(err),
            Some(peer) => {
                // A removed peer keeps only `remove`: wireguard-go ignores
                // the rest of its section (it becomes a "dummy" peer), but
                // still refuses malformed lines in it.
                let mut scratch;
                let target = if peer.remove {
                    scratch = PeerChange::new(peer.public_key);
                    &mut scratch
                } else {
                    &mut *peer
                };
                peer_line(target, key, value).map_err(err)?;
                if target.remove {
                    *peer = PeerChange {
                        remove: true,
                        ..PeerChange::new(peer.public_key)
                    };
                }
                Ok(())
            }
        }
    }
}

fn device_line(cmd: &mut SetCommand, key: &str, value: &str) -> Result<(), String> {
    match key {
        "private_key" => {
            let bytes = decode_hex_key(value)
                .ok_or_else(|| format!("private_key: not {KEY_HEX_LEN} hex digits"))?;
            cmd.private_key = Some((!is_zero(&bytes[..])).then(|| PrivateKey::from_bytes(*bytes)));
        }
        "listen_port" => cmd.listen_port = Some(decimal(key, value)?),
        "fwmark" => cmd.fwmark = Some(decimal(key, value)?),
        "replace_peers" => cmd.replace_peers = flag(key, value)?,
        "remove"
        | "update_only"
        | "preshared_key"
        | "endpoint"
        | "persistent_keepalive_interval"
        | "replace_allowed_ips"
        | "allowed_ip"
        | "protocol_version" => {
            return Err(format!("{key} before any public_key="));
        }
        _ => return Err(format!("unknown device key {}", shown_name(key.as_bytes()))),
    }
    Ok(())
}

fn peer_line(peer: &mut PeerChange, key: &str, value: &str) -> Result<(), String> {
    match key {
        "remove" => peer.remove = flag(key, value)?,
        "update_only" => peer.update_only = flag(key, value)?,
        "preshared_key" => {
            let bytes = decode_hex_key(value)
                .ok_or_else(|| format!("preshared_key: not {KEY_HEX_LEN} hex digits"))?;
            // `from_random` takes the bytes as they are; it is the only
            // constructor from bytes the key type has.
            peer.preshared_key =
                Some((!is_zero(&bytes[..])).then(|| PresharedKey::from_random(*bytes)));
        }
        "endpoint" => {
            peer.endpoint = Some(
                parse_endpoint(value)
                    .map_err(|why| format!("endpoint {}: {why}", shown_value(value)))?,
            );
        }
        "persistent_keepalive_interval" => peer.persistent_keepalive = Some(decimal(key, value)?),
        "replace_allowed_ips" => {
            peer.replace_allowed_ips = flag(key, value)?;
            // The table is cleared at this point, taking earlier lines with it.
            peer.allowed_ips.clear();
        }
        "allowed_ip" => peer.allowed_ips.push(
            parse_allowed_ip(value)
                .map_err(|why| format!("allowed_ip {}: {why}", shown_value(value)))?,
        ),
        "protocol_version" => {
            if value != "1" {
                return Err(format!(
                    "protocol_version {} (only 1 exists)",
                    shown_value(value)
                ));
            }
        }
        "private_key" | "listen_port" | "fwmark" | "replace_peers" => {
            return Err(format!("device key {key} after a public_key="));
        }
        _ => return Err(format!("unknown peer key {}", shown_name(key.as_bytes()))),
    }
    Ok(())
}

/// `true`, the only value the boolean keys take (wireguard-go refuses
/// anything else, `false` included).
fn flag(key: &str, value: &str) -> Result<bool, String> {
    if value == "true" {
        Ok(true)
    } else {
        Err(format!("{key} takes only true, not {}", shown_value(value)))
    }
}

/// An unsigned decimal in `T`'s range: digits only (no sign, no space;
/// leading zeros are fine, as for Go's `strconv.ParseUint`).
fn decimal<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    digits(value)
        .ok_or_else(|| format!("{key}: {} is not a number", shown_value(value)))?
        .parse()
        .map_err(|_| format!("{key}: {} is out of range", shown_value(value)))
}

/// `value` if it is one or more ASCII digits. (Rust's integer parsing would
/// also take a leading `+`.)
fn digits(value: &str) -> Option<&str> {
    (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())).then_some(value)
}

/// 64 hex digits, either case (wg's `key_from_hex` and Go's `hex.Decode`
/// both take uppercase too), into a buffer wiped on drop. The digits are
/// decoded without branching on their values, as wg does, since they may be
/// a private key.
fn decode_hex_key(value: &str) -> Option<zeroize::Zeroizing<[u8; KEY_LEN]>> {
    let text = value.as_bytes();
    if text.len() != KEY_HEX_LEN {
        return None;
    }
    let mut key = zeroize::Zeroizing::new([0u8; KEY_LEN]);
    let mut bad = 0u8;
    for (byte, pair) in key.iter_mut().zip(text.chunks_exact(2)) {
        let (hi, hi_bad) = hex_nibble(pair[0]);
        let (lo, lo_bad) = hex_nibble(pair[1]);
        *byte = (hi << 4) | lo;
        bad |= hi_bad | lo_bad;
    }
    (bad == 0).then_some(key)
}

/// One hex digit's value, and 1 if it was not a hex digit; computed with
/// arithmetic rather than a lookup or a branch on `c`.
fn hex_nibble(c: u8) -> (u8, u8) {
    let num = c ^ b'0'; // 0..=9 for a digit
    let is_num = u8::from(num < 10);
    let alpha = (c | 0x20).wrapping_sub(b'a'); // 0..=5 for a–f / A–F
    let is_alpha = u8::from(alpha < 6);
    let value = (num & is_num.wrapping_neg()) | (alpha.wrapping_add(10) & is_alpha.wrapping_neg());
    (value & 0xf, (is_num | is_alpha) ^ 1)
}

/// `1.2.3.4:51820`, `[2001:db8::1]:51820` or `[fe80::1%2]:51820`: what
/// wg(8) sends (it resolves names itself) and what Go's
/// `netip.ParseAddrPort` takes, except that the scope must be a number.
fn parse_endpoint(value: &str) -> Result<SocketAddr, &'static str> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    if let Some(rest) = value.strip_prefix('[') {
        let (host, port) = rest
            .split_once(']')
            .ok_or("no closing ] after the IPv6 address")?;
        let port = port.strip_prefix(':').ok_or("no :port after the ]")?;
        let (addr, scope_id) = match host.split_once('%') {
            None => (host, 0),
            Some((addr, scope)) => (
                addr,
                digits(scope)
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or("the scope must be a numeric interface index")?,
            ),
        };
        let ip: Ipv6Addr = addr.parse().map_err(|_| "not an IPv6 address")?;
        Ok(SocketAddr::V6(SocketAddrV6::new(
            ip,
            endpoint_port(port)?,
            0,
            scope_id,
        )))
    } else {
        let (host, port) = value.rsplit_once(':').ok_or("no :port")?;
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| "not an IPv4 address (IPv6 goes in brackets)")?;
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, endpoint_port(port)?)))
    }
}

fn endpoint_port(port: &str) -> Result<u16, &'static str> {
    digits(port)
        .and_then(|p| p.parse().ok())
        .ok_or("the port must be a number from 0 to 65535")
}

/// `addr/len`, with the host bits masked off.
fn parse_allowed_ip(value: &str) -> Result<IpNet, &'static str> {
    if value.starts_with('-') {
        return Err("removing a single allowed IP is not supported; use replace_allowed_ips");
    }
    let (addr, len) = value.split_once('/').ok_or("no /prefix-length")?;
    let ip: std::net::IpAddr = addr.parse().map_err(|_| "not an IP address")?;
    let len: u8 = digits(len)
        .filter(|l| l.len() <= 3)
        .and_then(|l| l.parse().ok())
        .ok_or("the prefix length must be a number")?;
    IpNet::new(ip, len)
        .map(|net| net.trunc())
        .map_err(|_| "prefix length too long for the address family")
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

    use proptest::prelude::*;

    use super::*;

    // The example set request and get reply of https://www.wireguard.com/xplatform/
    // ("Example Dialog"), byte for byte.
    const XPLATFORM_SET: &str = "set=1
private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a
fwmark=0
listen_port=12912
replace_peers=true
public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
replace_allowed_ips=true
allowed_ip=192.168.4.4/32
endpoint=[abcd:23::33%2]:51820
public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376
replace_allowed_ips=true
allowed_ip=192.168.4.6/32
persistent_keepalive_interval=111
endpoint=182.122.22.19:3233
public_key=662e14fd594556f522604703340351258903b64f35553763f19426ab2a515c58
endpoint=5.152.198.39:51820
replace_allowed_ips=true
allowed_ip=192.168.4.10/32
allowed_ip=192.168.4.11/32
public_key=e818b58db5274087fcc1be5dc728cf53d3b5726b4cef6b9bab8f8f8c2452c25c
remove=true

";

    const XPLATFORM_GET_REPLY: &str =
        "private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a
listen_port=12912
public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
allowed_ip=192.168.4.4/32
endpoint=[abcd:23::33%2]:51820
public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376
tx_bytes=38333
rx_bytes=2224
allowed_ip=192.168.4.6/32
persistent_keepalive_interval=111
endpoint=182.122.22.19:3233
public_key=662e14fd594556f522604703340351258903b64f35553763f19426ab2a515c58
endpoint=5.152.198.39:51820
allowed_ip=192.168.4.10/32
allowed_ip=192.168.4.11/32
tx_bytes=1212111
rx_bytes=1929999999
protocol_version=1
errno=0

";

    const PRIV_HEX: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
    const PSK_HEX: &str = "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52";
    const PEER1: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";
    const PEER2: &str = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376";
    const PEER3: &str = "662e14fd594556f522604703340351258903b64f35553763f19426ab2a515c58";
    const PEER4: &str = "e818b58db5274087fcc1be5dc728cf53d3b5726b4cef6b9bab8f8f8c2452c25c";
    const ZERO_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn bytes(hex: &str) -> [u8; KEY_LEN] {
        *decode_hex_key(hex).expect("test vector is 64 hex digits")
    }
    fn pubkey(hex: &str) -> PublicKey {
        PublicKey::from_bytes(bytes(hex))
    }
    fn net(s: &str) -> IpNet {
        s.parse().expect("test vector is a CIDR")
    }
    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test vector is a socket address")
    }

    fn parse_set(text: &str) -> Result<SetCommand, UapiError> {
        match parse_request(text.as_bytes())? {
            Some((Request::Set(cmd), n)) => {
                assert_eq!(n, text.len(), "the whole request is consumed");
                Ok(cmd)
            }
            other => panic!("expected a whole set request, got {other:?}"),
        }
    }

    /// Parses `set=1\n{body}\n` and returns the error.
    fn set_error(body: &str) -> UapiError {
        let text = format!("set=1\n{body}\n");
        parse_set(&text).expect_err(&format!("{body:?} must be refused"))
    }

    fn xplatform_set_command() -> SetCommand {
        SetCommand {
            private_key: Some(Some(PrivateKey::from_bytes(bytes(PRIV_HEX)))),
            listen_port: Some(12912),
            fwmark: Some(0),
            replace_peers: true,
            peers: vec![
                PeerChange {
                    preshared_key: Some(Some(PresharedKey::from_random(bytes(PSK_HEX)))),
                    replace_allowed_ips: true,
                    allowed_ips: vec![net("192.168.4.4/32")],
                    endpoint: Some(SocketAddr::V6(SocketAddrV6::new(
                        "abcd:23::33".parse().expect("v6"),
                        51820,
                        0,
                        2,
                    ))),
                    ..PeerChange::new(pubkey(PEER1))
                },
                PeerChange {
                    replace_allowed_ips: true,
                    allowed_ips: vec![net("192.168.4.6/32")],
                    persistent_keepalive: Some(111),
                    endpoint: Some(addr("182.122.22.19:3233")),
                    ..PeerChange::new(pubkey(PEER2))
                },
                PeerChange {
                    endpoint: Some(addr("5.152.198.39:51820")),
                    replace_allowed_ips: true,
                    allowed_ips: vec![net("192.168.4.10/32"), net("192.168.4.11/32")],
                    ..PeerChange::new(pubkey(PEER3))
                },
                PeerChange {
                    remove: true,
                    ..PeerChange::new(pubkey(PEER4))
                },
            ],
        }
    }

    /// The device the xplatform get reply describes.
    fn xplatform_snapshot() -> DeviceSnapshot {
        let peer = |key: &str| PeerSnapshot {
            public_key: pubkey(key),
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: 0,
            allowed_ips: Vec::new(),
        };
        DeviceSnapshot {
            private_key: Some(PrivateKey::from_bytes(bytes(PRIV_HEX))),
            listen_port: 12912,
            fwmark: 0,
            peers: vec![
                PeerSnapshot {
                    preshared_key: Some(PresharedKey::from_random(bytes(PSK_HEX))),
                    allowed_ips: vec![net("192.168.4.4/32")],
                    endpoint: Some(addr("[abcd:23::33%2]:51820")),
                    ..peer(PEER1)
                },
                PeerSnapshot {
                    tx_bytes: 38333,
                    rx_bytes: 2224,
                    allowed_ips: vec![net("192.168.4.6/32")],
                    persistent_keepalive: 111,
                    endpoint: Some(addr("182.122.22.19:3233")),
                    ..peer(PEER2)
                },
                PeerSnapshot {
                    endpoint: Some(addr("5.152.198.39:51820")),
                    allowed_ips: vec![net("192.168.4.10/32"), net("192.168.4.11/32")],
                    tx_bytes: 1212111,
                    rx_bytes: 1929999999,
                    ..peer(PEER3)
                },
            ],
        }
    }

    /// A get reply read the way wg(8) reads it (wireguard-tools
    /// `userspace_get_device`): keys in any order, unknown keys ignored,
    /// device keys only before the first peer, `errno` must be 0.
    fn decode_get_reply(text: &str) -> Result<DeviceSnapshot, String> {
        let body = text
            .strip_suffix("\n\n")
            .ok_or("reply does not end in an empty line")?;
        let mut dev = DeviceSnapshot::default();
        let mut errno = None;
        for line in body.split('\n') {
            let (key, value) = line.split_once('=').ok_or(format!("bad line {line:?}"))?;
            let num = |max: u64| -> Result<u64, String> {
                digits(value)
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&n| n <= max)
                    .ok_or(format!("bad number in {line:?}"))
            };
            let key32 = || decode_hex_key(value).ok_or(format!("bad key in {line:?}"));
            let in_peer = !dev.peers.is_empty();
            match key {
                "private_key" if !in_peer => {
                    dev.private_key = Some(PrivateKey::from_bytes(*key32()?))
                }
                "listen_port" if !in_peer => dev.listen_port = num(0xffff)? as u16,
                "fwmark" if !in_peer => dev.fwmark = num(0xffff_ffff)? as u32,
                "public_key" => dev.peers.push(PeerSnapshot {
                    public_key: PublicKey::from_bytes(*key32()?),
                    preshared_key: None,
                    endpoint: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: 0,
                    allowed_ips: Vec::new(),
                }),
                "errno" => errno = Some(num(0x7fff_ffff)?),
                _ if !in_peer => {}
                _ => {
                    let peer = dev.peers.last_mut().expect("in_peer");
                    match key {
                        "preshared_key" => {
                            let k = key32()?;
                            peer.preshared_key =
                                (!is_zero(&k[..])).then(|| PresharedKey::from_random(*k));
                        }
                        "endpoint" => peer.endpoint = Some(parse_endpoint(value)?),
                        "persistent_keepalive_interval" => {
                            peer.persistent_keepalive = num(0xffff)? as u16
                        }
                        "allowed_ip" => peer.allowed_ips.push(parse_allowed_ip(value)?),
                        "last_handshake_time_sec" => {
                            let (_, ns) = peer.last_handshake.unwrap_or_default();
                            peer.last_handshake = Some((num(i64::MAX as u64)?, ns));
                        }
                        "last_handshake_time_nsec" => {
                            let (s, _) = peer.last_handshake.unwrap_or_default();
                            peer.last_handshake = Some((s, num(999_999_999)? as u32));
                        }
                        "rx_bytes" => peer.rx_bytes = num(u64::MAX)?,
                        "tx_bytes" => peer.tx_bytes = num(u64::MAX)?,
                        _ => {}
                    }
                }
            }
        }
        for peer in &mut dev.peers {
            // wg shows a zero handshake time as "never".
            if peer.last_handshake == Some((0, 0)) {
                peer.last_handshake = None;
            }
        }
        match errno {
            Some(0) => Ok(dev),
            other => Err(format!("errno {other:?}")),
        }
    }

    /// A set request written the way wg(8) writes one (wireguard-tools
    /// `userspace_set_device`): device keys, then per peer `public_key`, and
    /// either `remove=true` alone or the peer's keys in wg's order.
    fn encode_set(cmd: &SetCommand) -> String {
        use std::fmt::Write as _;
        let hex = |k: &[u8; KEY_LEN]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut out = String::from("set=1\n");
        match &cmd.private_key {
            Some(Some(k)) => writeln!(out, "private_key={}", hex(k.as_bytes())),
            Some(None) => writeln!(out, "private_key={ZERO_HEX}"),
            None => Ok(()),
        }
        .expect("String");
        if let Some(p) = cmd.listen_port {
            writeln!(out, "listen_port={p}").expect("String");
        }
        if let Some(m) = cmd.fwmark {
            writeln!(out, "fwmark={m}").expect("String");
        }
        if cmd.replace_peers {
            out.push_str("replace_peers=true\n");
        }
        for peer in &cmd.peers {
            writeln!(out, "public_key={}", hex(peer.public_key.as_bytes())).expect("String");
            if peer.remove {
                out.push_str("remove=true\n");
                continue;
            }
            if peer.update_only {
                out.push_str("update_only=true\n");
            }
            match &peer.preshared_key {
                Some(Some(k)) => writeln!(out, "preshared_key={}", hex(k.as_bytes())),
                Some(None) => writeln!(out, "preshared_key={ZERO_HEX}"),
                None => Ok(()),
            }
            .expect("String");
            if let Some(e) = peer.endpoint {
                writeln!(out, "endpoint={e}").expect("String");
            }
            if let Some(k) = peer.persistent_keepalive {
                writeln!(out, "persistent_keepalive_interval={k}").expect("String");
            }
            if peer.replace_allowed_ips {
                out.push_str("replace_allowed_ips=true\n");
            }
            for net in &peer.allowed_ips {
                writeln!(out, "allowed_ip={net}").expect("String");
            }
        }
        out.push('\n');
        out
    }

    #[test]
    fn xplatform_set_example() {
        assert_eq!(parse_set(XPLATFORM_SET), Ok(xplatform_set_command()));
    }

    #[test]
    fn xplatform_get_example() {
        // The page's reply, read as wg reads it, is the device we expect ...
        let snapshot = xplatform_snapshot();
        assert_eq!(decode_get_reply(XPLATFORM_GET_REPLY), Ok(snapshot.clone()));
        // ... and our reply for that device, in wireguard-go's key order,
        // reads back the same.
        let ours = render_get(&snapshot);
        assert_eq!(
            ours,
            format!(
                "private_key={PRIV_HEX}
listen_port=12912
public_key={PEER1}
preshared_key={PSK_HEX}
protocol_version=1
endpoint=[abcd:23::33%2]:51820
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
allowed_ip=192.168.4.4/32
public_key={PEER2}
preshared_key={ZERO_HEX}
protocol_version=1
endpoint=182.122.22.19:3233
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=38333
rx_bytes=2224
persistent_keepalive_interval=111
allowed_ip=192.168.4.6/32
public_key={PEER3}
preshared_key={ZERO_HEX}
protocol_version=1
endpoint=5.152.198.39:51820
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=1212111
rx_bytes=1929999999
persistent_keepalive_interval=0
allowed_ip=192.168.4.10/32
allowed_ip=192.168.4.11/32
errno=0

"
            )
        );
        assert_eq!(decode_get_reply(&ours), Ok(snapshot));
    }

    #[test]
    fn render_get_of_an_empty_device_and_the_optional_lines() {
        // No private key, port or fwmark: only the status line.
        assert_eq!(render_get(&DeviceSnapshot::default()), "errno=0\n\n");
        // An all-zero private key is "none" (wireguard-go checks IsZero).
        let zero = DeviceSnapshot {
            private_key: Some(PrivateKey::from_bytes([0; KEY_LEN])),
            ..DeviceSnapshot::default()
        };
        assert_eq!(render_get(&zero), "errno=0\n\n");
        let dev = DeviceSnapshot {
            private_key: None,
            listen_port: 0,
            fwmark: 0xffff_ffff,
            peers: vec![PeerSnapshot {
                public_key: pubkey(PEER1),
                preshared_key: None,
                endpoint: Some(addr("[2001:db8::1]:65535")),
                last_handshake: Some((1_700_000_000, 999_999_999)),
                rx_bytes: u64::MAX,
                tx_bytes: 1,
                persistent_keepalive: 65535,
                allowed_ips: vec![net("0.0.0.0/0"), net("::/0"), net("fd00::/64")],
            }],
        };
        let text = render_get(&dev);
        assert_eq!(
            text,
            format!(
                "fwmark=4294967295
public_key={PEER1}
preshared_key={ZERO_HEX}
protocol_version=1
endpoint=[2001:db8::1]:65535
last_handshake_time_sec=1700000000
last_handshake_time_nsec=999999999
tx_bytes=1
rx_bytes=18446744073709551615
persistent_keepalive_interval=65535
allowed_ip=0.0.0.0/0
allowed_ip=::/0
allowed_ip=fd00::/64
errno=0

"
            )
        );
        assert_eq!(decode_get_reply(&text), Ok(dev));
    }

    #[test]
    fn render_errno_and_error() {
        assert_eq!(render_errno(0), "errno=0\n\n");
        assert_eq!(render_errno(-22), "errno=-22\n\n");
        assert_eq!(render_error(&set_error("bogus=1")), "errno=-22\n\n");
        assert_eq!(
            render_error(&UapiError::UnknownOperation("x".into())),
            "errno=-71\n\n"
        );
    }

    #[test]
    fn get_requests() {
        assert_eq!(parse_request(b"get=1\n\n"), Ok(Some((Request::Get, 7))));
        // Pipelined: only the first request is consumed.
        assert_eq!(
            parse_request(b"get=1\n\nset=1\n\n"),
            Ok(Some((Request::Get, 7)))
        );
        assert_eq!(
            parse_request(b"set=1\n\nget=1\n\n"),
            Ok(Some((Request::Set(SetCommand::default()), 7)))
        );
        let e = parse_request(b"get=1\nlisten_port=1\n\n").expect_err("get takes nothing");
        assert!(matches!(e, UapiError::Invalid { line: 2, .. }), "{e:?}");
    }

    #[test]
    fn waits_for_the_empty_line() {
        for partial in [
            &b""[..],
            b"g",
            b"get=1",
            b"get=1\n",
            b"set=1\n",
            b"set=1\nlisten_port=1",
            b"set=1\nlisten_port=1\n",
            // A line is judged only once it is complete.
            b"set=1\nlisten_port=99999999",
            b"set=1\nbogus",
        ] {
            assert_eq!(parse_request(partial), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn split_at_every_byte_boundary_parses_the_same() {
        let every_key = format!(
            "set=1\nprivate_key={ZERO_HEX}\nlisten_port=0\nfwmark=7\nreplace_peers=true\n\
             public_key={PEER1}\nupdate_only=true\npreshared_key={PSK_HEX}\n\
             endpoint=[::1]:1\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
             allowed_ip=10.0.0.0/8\nprotocol_version=1\npublic_key={PEER2}\nremove=true\n\n"
        );
        let bad_late = format!("set=1\npublic_key={PEER1}\nendpoint=[::1]:1\nfwmark=1\n\n");
        let inputs: Vec<&[u8]> = vec![
            XPLATFORM_SET.as_bytes(),
            b"get=1\n\n",
            b"set=1\n\n",
            every_key.as_bytes(),
            bad_late.as_bytes(),
            b"hello\n\n",
            b"get=1\nx",
        ];
        for input in inputs {
            let whole = parse_request(input);
            for k in 0..input.len() {
                let part = parse_request(&input[..k]);
                match (&whole, &part) {
                    // A prefix of a whole request only ever waits ...
                    (Ok(Some((_, n))), Ok(None)) if k < *n => {}
                    // ... or, past the request's end, parses the same.
                    (Ok(Some((_, n))), _) if k >= *n => assert_eq!(part, whole),
                    // A bad request waits, or fails the same way.
                    (Err(_), Ok(None)) => {}
                    (Err(_), _) => assert_eq!(part, whole),
                    _ => panic!("{input:?} split at {k}: {part:?} vs whole {whole:?}"),
                }
            }
        }
        assert!(parse_set(&every_key).is_ok());
        assert!(parse_set(&bad_late).is_err());
    }

    #[test]
    fn every_error_case() {
        use UapiError::{Invalid, UnknownOperation};
        // (request body after set=1, line, words the reason must contain)
        let pk = format!("public_key={PEER1}\n");
        let cases: Vec<(String, usize, &str)> = vec![
            ("listen_port".into(), 2, "key=value"),
            ("=1".into(), 2, "unknown device key"),
            ("bogus=1".into(), 2, "unknown device key bogus"),
            ("Listen_port=1".into(), 2, "unknown device key"),
            ("listen_port=65536".into(), 2, "out of range"),
            ("listen_port=-1".into(), 2, "not a number"),
            ("listen_port=+1".into(), 2, "not a number"),
            ("listen_port=".into(), 2, "not a number"),
            ("listen_port= 1".into(), 2, "not a number"),
            ("listen_port=1 ".into(), 2, "not a number"),
            ("listen_port=1\r".into(), 2, "not a number"),
            ("fwmark=4294967296".into(), 2, "out of range"),
            ("fwmark=0x10".into(), 2, "not a number"),
            (format!("private_key={}", &PRIV_HEX[1..]), 2, "64 hex"),
            (format!("private_key={PRIV_HEX}0"), 2, "64 hex"),
            (format!("private_key=g{}", &PRIV_HEX[1..]), 2, "64 hex"),
            (format!("private_key= {}", &PRIV_HEX[1..]), 2, "64 hex"),
            ("replace_peers=false".into(), 2, "only true"),
            ("replace_peers=TRUE".into(), 2, "only true"),
            ("replace_peers=1".into(), 2, "only true"),
            ("endpoint=1.2.3.4:5".into(), 2, "before any public_key"),
            ("protocol_version=1".into(), 2, "before any public_key"),
            ("allowed_ip=10.0.0.0/8".into(), 2, "before any public_key"),
            ("listen_port=1\n\u{ff}".into(), 3, "key=value"),
            ("public_key=".into(), 2, "public_key: not 64 hex"),
            (
                format!("public_key={}", &PEER1[2..]),
                2,
                "public_key: not 64 hex",
            ),
            (
                format!("{pk}listen_port=1"),
                3,
                "device key listen_port after",
            ),
            (
                format!("{pk}private_key={PRIV_HEX}"),
                3,
                "device key private_key",
            ),
            (format!("{pk}fwmark=1"), 3, "device key fwmark"),
            (
                format!("{pk}replace_peers=true"),
                3,
                "device key replace_peers",
            ),
            (format!("{pk}remove=false"), 3, "only true"),
            (format!("{pk}update_only=yes"), 3, "only true"),
            (format!("{pk}replace_allowed_ips=1"), 3, "only true"),
            (format!("{pk}protocol_version=2"), 3, "protocol_version"),
            (format!("{pk}protocol_version=01"), 3, "protocol_version"),
            (format!("{pk}protocol_version="), 3, "protocol_version"),
            (
                format!("{pk}persistent_keepalive_interval=65536"),
                3,
                "out of range",
            ),
            (
                format!("{pk}persistent_keepalive_interval=off"),
                3,
                "not a number",
            ),
            (
                format!("{pk}preshared_key=xyz"),
                3,
                "preshared_key: not 64 hex",
            ),
            (format!("{pk}endpoint=1.2.3.4"), 3, "no :port"),
            (format!("{pk}endpoint=1.2.3.4:65536"), 3, "port"),
            (format!("{pk}endpoint=1.2.3.4:"), 3, "port"),
            (format!("{pk}endpoint=1.2.3.4:+5"), 3, "port"),
            (format!("{pk}endpoint=::1:51820"), 3, "brackets"),
            (format!("{pk}endpoint=[::1]51820"), 3, "no :port after"),
            (format!("{pk}endpoint=[::1:51820"), 3, "no closing ]"),
            (format!("{pk}endpoint=[::1]:"), 3, "port"),
            (format!("{pk}endpoint=[1.2.3.4]:5"), 3, "not an IPv6"),
            (
                format!("{pk}endpoint=[fe80::1%eth0]:5"),
                3,
                "numeric interface index",
            ),
            (
                format!("{pk}endpoint=[fe80::1%]:5"),
                3,
                "numeric interface index",
            ),
            (format!("{pk}endpoint=[fe80::1%4294967296]:5"), 3, "numeric"),
            (
                format!("{pk}endpoint=vpn.example.com:51820"),
                3,
                "not an IPv4",
            ),
            (format!("{pk}endpoint="), 3, "no :port"),
            (format!("{pk}allowed_ip=10.0.0.0"), 3, "no /prefix"),
            (format!("{pk}allowed_ip=10.0.0.0/33"), 3, "too long"),
            (format!("{pk}allowed_ip=::/129"), 3, "too long"),
            (format!("{pk}allowed_ip=10.0.0.0/-1"), 3, "must be a number"),
            (
                format!("{pk}allowed_ip=10.0.0.0/0008"),
                3,
                "must be a number",
            ),
            (format!("{pk}allowed_ip=10.0.0.0/ 8"), 3, "must be a number"),
            (format!("{pk}allowed_ip=10.0.0/8"), 3, "not an IP"),
            (format!("{pk}allowed_ip=fe80::1%2/64"), 3, "not an IP"),
            (format!("{pk}allowed_ip=-10.0.0.0/8"), 3, "not supported"),
            (format!("{pk}bogus=1"), 3, "unknown peer key bogus"),
            (
                format!("{pk}last_handshake_time_sec=1"),
                3,
                "unknown peer key",
            ),
            (format!("{pk}tx_bytes=1"), 3, "unknown peer key"),
            // Lines after remove=true are dropped, but still checked.
            (format!("{pk}remove=true\nendpoint=x"), 4, "endpoint"),
        ];
        for (body, line, words) in cases {
            let e = set_error(&body);
            assert_eq!(e.errno(), 22, "{body:?}: {e}");
            match &e {
                Invalid { line: l, reason } => {
                    assert_eq!(*l, line, "{body:?}: {e}");
                    assert!(reason.contains(words), "{body:?}: {e} lacks {words:?}");
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }

        for (input, shown) in [
            (&b"hello\n\n"[..], "hello"),
            (b"get=2\n\n", "get=2"),
            (b"set=1\r\n\r\n", "set=1\\r"),
            (b"GET=1\n\n", "<3 bytes, not shown>=1"),
            (b"\n", "<0 bytes, not shown>"),
        ] {
            let e = parse_request(input).expect_err("unknown operation");
            assert_eq!(e, UnknownOperation(shown.into()), "{input:?}");
            assert_eq!(e.errno(), 71);
        }
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let psk_b64 = PresharedKey::from_random(bytes(PSK_HEX)).to_base64();
        let priv_b64 = PrivateKey::from_bytes(bytes(PRIV_HEX)).to_base64();
        let secrets = [
            PRIV_HEX.to_string(),
            PSK_HEX.to_string(),
            PRIV_HEX.to_uppercase(),
            priv_b64.to_string(),
            psk_b64.to_string(),
        ];
        let check = |text: &str| {
            for secret in &secrets {
                // Not even a quarter of one.
                assert!(!text.contains(&secret[..16]), "{text} shows a secret");
            }
        };
        check(&format!("{:?}", parse_request(XPLATFORM_SET.as_bytes())));
        // A key that is one digit short, or has a bad digit, is not echoed.
        for body in [
            format!("private_key={}", &PRIV_HEX[1..]),
            format!("private_key={}x", &PRIV_HEX[1..]),
            format!("public_key={PEER1}\npreshared_key={}", &PSK_HEX[1..]),
            format!("{PRIV_HEX}={PSK_HEX}"),
            PRIV_HEX.to_string(),
            format!("private_key={PRIV_HEX}\nbogus=1"),
        ] {
            let e = set_error(&body);
            check(&e.to_string());
            check(&format!("{e:?}"));
        }
        // Nor is a private key sent as the operation line.
        let e = parse_request(format!("private_key={PRIV_HEX}\n\n").as_bytes())
            .expect_err("not an operation");
        check(&format!("{e} {e:?}"));
    }

    #[test]
    fn key_values() {
        // Uppercase hex is a key too (wg's key_from_hex, Go's hex.Decode).
        let cmd = parse_set(&format!(
            "set=1\nprivate_key={}\npublic_key={}\npreshared_key={}\n\n",
            PRIV_HEX.to_uppercase(),
            PEER1.to_uppercase(),
            PSK_HEX.to_uppercase()
        ))
        .expect("uppercase keys");
        assert_eq!(
            cmd.private_key,
            Some(Some(PrivateKey::from_bytes(bytes(PRIV_HEX))))
        );
        assert_eq!(cmd.peers[0].public_key, pubkey(PEER1));
        assert_eq!(
            cmd.peers[0].preshared_key,
            Some(Some(PresharedKey::from_random(bytes(PSK_HEX))))
        );
        // All zero removes the private key and the preshared key.
        let cmd = parse_set(&format!(
            "set=1\nprivate_key={ZERO_HEX}\npublic_key={PEER1}\npreshared_key={ZERO_HEX}\n\n"
        ))
        .expect("zero keys");
        assert_eq!(cmd.private_key, Some(None));
        assert_eq!(cmd.peers[0].preshared_key, Some(None));
        // Every nibble of the decoder.
        let all: String = "0123456789abcdefABCDEF".chars().cycle().take(64).collect();
        let mut expect = [0u8; KEY_LEN];
        for (i, b) in expect.iter_mut().enumerate() {
            *b = u8::from_str_radix(&all[2 * i..2 * i + 2], 16).expect("hex");
        }
        assert_eq!(decode_hex_key(&all).map(|k| *k), Some(expect));
        for c in 0..=255u8 {
            let valid = c.is_ascii_hexdigit();
            assert_eq!(hex_nibble(c).1 == 0, valid, "{c:#x}");
            if valid {
                assert_eq!(
                    u32::from(hex_nibble(c).0),
                    char::from(c).to_digit(16).expect("hex")
                );
            }
        }
    }

    #[test]
    fn numeric_bounds() {
        let cmd = parse_set(&format!(
            "set=1\nlisten_port=65535\nfwmark=4294967295\npublic_key={PEER1}\n\
             persistent_keepalive_interval=65535\npublic_key={PEER2}\n\
             persistent_keepalive_interval=0\n\n"
        ))
        .expect("bounds");
        assert_eq!(cmd.listen_port, Some(65535));
        assert_eq!(cmd.fwmark, Some(u32::MAX));
        assert_eq!(cmd.peers[0].persistent_keepalive, Some(65535));
        assert_eq!(cmd.peers[1].persistent_keepalive, Some(0));
        let cmd = parse_set("set=1\nlisten_port=0\nfwmark=0\n\n").expect("zero");
        assert_eq!((cmd.listen_port, cmd.fwmark), (Some(0), Some(0)));
        // Leading zeros, as Go's ParseUint takes them.
        let cmd = parse_set("set=1\nlisten_port=051820\n\n").expect("leading zero");
        assert_eq!(cmd.listen_port, Some(51820));
    }

    #[test]
    fn endpoints() {
        let cases = [
            ("1.2.3.4:51820", addr("1.2.3.4:51820")),
            ("0.0.0.0:0", addr("0.0.0.0:0")),
            ("[::1]:51820", addr("[::1]:51820")),
            ("[::ffff:1.2.3.4]:1", addr("[::ffff:1.2.3.4]:1")),
            (
                "[fe80::1%7]:51820",
                SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1),
                    51820,
                    0,
                    7,
                )),
            ),
            ("1.2.3.4:00080", addr("1.2.3.4:80")),
        ];
        for (text, want) in cases {
            assert_eq!(parse_endpoint(text), Ok(want), "{text}");
            // What render_get writes for it reads back the same.
            assert_eq!(parse_endpoint(&want.to_string()), Ok(want), "{text}");
        }
    }

    #[test]
    fn allowed_ips_are_masked() {
        let cmd = parse_set(&format!(
            "set=1\npublic_key={PEER1}\nallowed_ip=10.1.2.3/8\nallowed_ip=2001:db8::1/32\n\
             allowed_ip=192.168.1.1/32\nallowed_ip=1.2.3.4/0\nallowed_ip=::1/128\n\n"
        ))
        .expect("host bits");
        assert_eq!(
            cmd.peers[0].allowed_ips,
            vec![
                net("10.0.0.0/8"),
                net("2001:db8::/32"),
                net("192.168.1.1/32"),
                net("0.0.0.0/0"),
                net("::1/128")
            ]
        );
    }

    #[test]
    fn order_semantics_follow_wireguard_go() {
        let cmd = parse_set(&format!(
            "set=1\nlisten_port=1\nlisten_port=2\n\
             public_key={PEER1}\nallowed_ip=10.0.0.1/32\nendpoint=1.1.1.1:1\n\
             replace_allowed_ips=true\nallowed_ip=10.0.0.2/32\nendpoint=2.2.2.2:2\n\
             public_key={PEER2}\nendpoint=3.3.3.3:3\nremove=true\nallowed_ip=10.0.0.3/32\n\
             public_key={PEER1}\nupdate_only=true\n\n"
        ))
        .expect("valid");
        assert_eq!(cmd.listen_port, Some(2), "the last value wins");
        assert_eq!(
            cmd.peers,
            vec![
                PeerChange {
                    // replace_allowed_ips drops the allowed_ip before it.
                    replace_allowed_ips: true,
                    allowed_ips: vec![net("10.0.0.2/32")],
                    endpoint: Some(addr("2.2.2.2:2")),
                    ..PeerChange::new(pubkey(PEER1))
                },
                PeerChange {
                    // A removed peer is only removed.
                    remove: true,
                    ..PeerChange::new(pubkey(PEER2))
                },
                PeerChange {
                    // The same key again is a second change, in order.
                    update_only: true,
                    ..PeerChange::new(pubkey(PEER1))
                },
            ]
        );
    }

    #[test]
    fn request_size_is_capped() {
        let line = "listen_port=51820\n";
        let mut text = String::from("set=1\n");
        while text.len() + line.len() < MAX_REQUEST_LEN {
            text.push_str(line);
        }
        // Just under the cap (and not yet ended): waiting.
        assert!(text.len() < MAX_REQUEST_LEN);
        assert_eq!(parse_request(text.as_bytes()), Ok(None));
        // Ended within the cap: fine.
        let mut ended = text.clone();
        ended.push('\n');
        assert!(ended.len() <= MAX_REQUEST_LEN);
        assert!(matches!(
            parse_request(ended.as_bytes()),
            Ok(Some((Request::Set(_), n))) if n == ended.len()
        ));
        // The cap reached without the empty line: refused.
        while text.len() < MAX_REQUEST_LEN {
            text.push_str(line);
        }
        let e = parse_request(text.as_bytes()).expect_err("too long");
        assert!(e.to_string().contains("longer than 1048576"), "{e}");
        // A first line that never ends is refused too.
        let e = parse_request(&vec![b'g'; MAX_REQUEST_LEN]).expect_err("too long");
        assert_eq!(e.errno(), 22);
    }

    fn arb_key() -> impl Strategy<Value = [u8; KEY_LEN]> {
        any::<[u8; KEY_LEN]>()
    }

    fn arb_endpoint() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<u32>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
            (any::<u128>(), any::<u16>(), any::<u32>()).prop_map(|(ip, port, scope)| {
                SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, scope))
            }),
        ]
    }

    fn arb_net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(|(ip, len)| IpNet::new(IpAddr::V4(ip.into()), len).expect("len ≤ 32")),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(ip, len)| IpNet::new(IpAddr::V6(ip.into()), len).expect("len ≤ 128")),
        ]
    }

    prop_compose! {
        fn arb_peer_change()(
            key in arb_key(),
            remove in any::<bool>(),
            update_only in any::<bool>(),
            psk in proptest::option::of(proptest::option::of(arb_key())),
            endpoint in proptest::option::of(arb_endpoint()),
            keepalive in proptest::option::of(any::<u16>()),
            replace_allowed_ips in any::<bool>(),
            allowed_ips in proptest::collection::vec(arb_net(), 0..4),
        ) -> PeerChange {
            PeerChange {
                public_key: PublicKey::from_bytes(key),
                remove,
                update_only,
                preshared_key: psk.map(|k| k.map(PresharedKey::from_random)),
                endpoint,
                persistent_keepalive: keepalive,
                replace_allowed_ips,
                allowed_ips,
            }
        }
    }

    prop_compose! {
        fn arb_set_command()(
            private_key in proptest::option::of(proptest::option::of(arb_key())),
            listen_port in proptest::option::of(any::<u16>()),
            fwmark in proptest::option::of(any::<u32>()),
            replace_peers in any::<bool>(),
            peers in proptest::collection::vec(arb_peer_change(), 0..5),
        ) -> SetCommand {
            SetCommand {
                private_key: private_key.map(|k| k.map(PrivateKey::from_bytes)),
                listen_port,
                fwmark,
                replace_peers,
                peers,
            }
        }
    }

    prop_compose! {
        fn arb_peer_snapshot()(
            key in arb_key(),
            psk in proptest::option::of(arb_key()),
            endpoint in proptest::option::of(arb_endpoint()),
            handshake in proptest::option::of((1..=i64::MAX as u64, 0..1_000_000_000u32)),
            rx_bytes in any::<u64>(),
            tx_bytes in any::<u64>(),
            persistent_keepalive in any::<u16>(),
            allowed_ips in proptest::collection::vec(arb_net(), 0..6),
        ) -> PeerSnapshot {
            PeerSnapshot {
                public_key: PublicKey::from_bytes(key),
                preshared_key: psk.map(PresharedKey::from_random),
                endpoint,
                last_handshake: handshake,
                rx_bytes,
                tx_bytes,
                persistent_keepalive,
                allowed_ips,
            }
        }
    }

    /// What the parser makes of `cmd` once written the way wg writes it:
    /// host bits masked, all-zero keys as removals, a removed peer only removed.
    fn normalized(mut cmd: SetCommand) -> SetCommand {
        if let Some(Some(k)) = &cmd.private_key
            && is_zero(k.as_bytes())
        {
            cmd.private_key = Some(None);
        }
        for peer in &mut cmd.peers {
            if peer.remove {
                *peer = PeerChange {
                    remove: true,
                    ..PeerChange::new(peer.public_key)
                };
                continue;
            }
            if let Some(Some(k)) = &peer.preshared_key
                && is_zero(k.as_bytes())
            {
                peer.preshared_key = Some(None);
            }
            for net in &mut peer.allowed_ips {
                *net = net.trunc();
            }
        }
        cmd
    }

    /// Lines that reach every branch of the set parser more often than
    /// random bytes would.
    fn arb_set_line() -> impl Strategy<Value = String> {
        let keys = prop_oneof![
            prop::sample::select(vec![
                "private_key",
                "listen_port",
                "fwmark",
                "replace_peers",
                "public_key",
                "remove",
                "update_only",
                "preshared_key",
                "endpoint",
                "persistent_keepalive_interval",
                "replace_allowed_ips",
                "allowed_ip",
                "protocol_version",
            ])
            .prop_map(String::from),
            "[a-z_]{0,8}",
        ];
        let values = prop_oneof![
            Just("true".to_string()),
            Just("1".to_string()),
            Just(PEER1.to_string()),
            Just(ZERO_HEX.to_string()),
            "[0-9a-fA-F]{62,66}",
            "[0-9]{0,12}",
            "\\[[0-9a-f:%]{0,40}\\]:[0-9]{0,6}",
            "[0-9.:/-]{0,24}",
            ".{0,12}",
        ];
        (keys, values).prop_map(|(k, v)| format!("{k}={v}\n"))
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_and_prefixes_agree(
            input in proptest::collection::vec(any::<u8>(), 0..256),
            cut in any::<prop::sample::Index>(),
        ) {
            let whole = parse_request(&input);
            if let Ok(Some((_, n))) = &whole {
                prop_assert!(*n <= input.len());
                prop_assert_eq!(parse_request(&input[..*n]), whole.clone());
            }
            let k = cut.index(input.len() + 1);
            let part = parse_request(&input[..k]);
            prop_assert!(part == Ok(None) || part == whole, "{:?} vs {:?}", part, whole);
        }

        #[test]
        fn line_soup_never_panics_and_prefixes_agree(
            lines in proptest::collection::vec(arb_set_line(), 0..12),
            end in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut input = format!("set=1\n{}", lines.concat());
            if end {
                input.push('\n');
            }
            let input = input.as_bytes();
            let whole = parse_request(input);
            let k = cut.index(input.len() + 1);
            let part = parse_request(&input[..k]);
            prop_assert!(part == Ok(None) || part == whole, "{:?} vs {:?}", part, whole);
        }

        #[test]
        fn what_wg_writes_parses_back(cmd in arb_set_command()) {
            let text = encode_set(&cmd);
            prop_assert_eq!(parse_set(&text), Ok(normalized(cmd)));
        }

        #[test]
        fn get_reply_reads_back(
            private_key in proptest::option::of(arb_key()),
            listen_port in any::<u16>(),
            fwmark in any::<u32>(),
            peers in proptest::collection::vec(arb_peer_snapshot(), 0..5),
        ) {
            let dev = DeviceSnapshot {
                private_key: private_key.map(PrivateKey::from_bytes),
                listen_port,
                fwmark,
                peers,
            };
            let text = render_get(&dev);
            prop_assert!(text.len() <= get_reply_capacity(&dev));
            let mut want = dev.clone();
            for peer in &mut want.peers {
                for net in &mut peer.allowed_ips {
                    *net = net.trunc();
                }
            }
            if want.private_key.as_ref().is_some_and(|k| is_zero(k.as_bytes())) {
                want.private_key = None;
            }
            for peer in &mut want.peers {
                if peer.preshared_key.as_ref().is_some_and(|k| is_zero(k.as_bytes())) {
                    peer.preshared_key = None;
                }
            }
            prop_assert_eq!(decode_get_reply(&text), Ok(want));
        }
    }
}
