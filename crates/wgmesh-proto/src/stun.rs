//! STUN (RFC 8489) for the Binding method only, with no IO: what a node needs
//! to learn its server-reflexive address (the NAT mapping of its WireGuard
//! port) and what a server needs to tell it.
//!
//! It owns the wire format: the 20-byte header (message type, length, magic
//! cookie, 96-bit transaction id, §5), attributes as type-length-value with
//! 4-byte padding (§14), XOR-MAPPED-ADDRESS (IPv4 and IPv6, §14.2),
//! MAPPED-ADDRESS (§14.1: read from RFC 3489-era servers, written to RFC
//! 3489 clients), SOFTWARE (optional on emit, §14.14), ERROR-CODE (§14.8)
//! and UNKNOWN-ATTRIBUTES (§14.9, the 420 answer of §6.3.1.1), and
//! FINGERPRINT (§14.7: emitted on every RFC 8489 message built here,
//! checked whenever present). And [`is_stun`], the cheap test that tells
//! STUN apart from WireGuard on the one UDP socket both share.
//!
//! The server side ([`respond`]) also answers classic RFC 3489 clients,
//! whose requests carry no magic cookie, as RFC 8489 §11 asks: the 16
//! bytes after the length are their transaction id, echoed, and the
//! answer is MAPPED-ADDRESS. The client side and [`is_stun`] stay RFC
//! 8489 only: a node never sends a classic request, so a cookie-less
//! datagram on its socket is never its STUN.
//!
//! It does not own authentication: MESSAGE-INTEGRITY(-SHA256) and USERNAME
//! are recognised and skipped, never verified or emitted (wgmesh's Binding
//! requests are unauthenticated, as public STUN servers' are; the reflexive
//! address is then checked by disco pings, not trusted). Nor retransmission
//! timers, choosing servers or transaction ids: those are the caller's
//! (randomness and time are inputs in this crate).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The magic cookie every RFC 5389/8489 message carries at bytes 4..8 (§5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The fixed header: type (2), length (2), cookie (4), transaction id (12).
pub const HEADER_LEN: usize = 20;

/// The Binding method (§18.2).
pub const METHOD_BINDING: u16 = 0x001;

/// Attribute types (§18.3). Below 0x8000 an attribute is
/// comprehension-required, from 0x8000 comprehension-optional (§14).
pub mod attr {
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// RFC 3489 §11.2.2: "send the answer there". Never honoured (it would
    /// make the server reflect traffic at a third party); RFC 8489 §11
    /// has it treated as unknown, so it gets a 420.
    pub const RESPONSE_ADDRESS: u16 = 0x0002;
    /// RFC 5780 §7.2 (RFC 3489 §11.2.4 before it): answer from the other
    /// address and/or port. Understood when it asks for no change (what
    /// RFC 3489 clients send in their first test); a 420 when it asks for
    /// one, as there is no other address to answer from.
    pub const CHANGE_REQUEST: u16 = 0x0003;
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const ERROR_CODE: u16 = 0x0009;
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    pub const REALM: u16 = 0x0014;
    pub const NONCE: u16 = 0x0015;
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    pub const PASSWORD_ALGORITHM: u16 = 0x001D;
    pub const USERHASH: u16 = 0x001E;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const SOFTWARE: u16 = 0x8022;
    pub const ALTERNATE_SERVER: u16 = 0x8023;
    pub const FINGERPRINT: u16 = 0x8028;
}

/// XORed into the CRC-32 of FINGERPRINT (§14.7): "STUN" in ASCII.
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// An attribute header: type (2) and value length (2).
const ATTR_HEADER_LEN: usize = 4;

/// The FINGERPRINT attribute, header and CRC.
const FINGERPRINT_LEN: usize = ATTR_HEADER_LEN + 4;

/// The longest SOFTWARE value allowed: fewer than 128 characters (§14.14),
/// at most 763 bytes; we keep to 127 bytes.
pub const SOFTWARE_MAX: usize = 127;

/// Why bytes are not the STUN message asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Shorter than a header, or than the header's length says.
    #[error("truncated STUN message: {got} bytes, {needed} needed")]
    Truncated { needed: usize, got: usize },
    /// The first two bits are not zero or the magic cookie is missing
    /// (§6: not STUN, or RFC 3489 STUN, which we do not speak).
    #[error("not a STUN message")]
    NotStun,
    /// The header's length is not a multiple of 4 or not the datagram's.
    #[error("bad STUN length: the header says {declared} bytes of attributes, {actual} follow")]
    BadLength { declared: usize, actual: usize },
    /// A well-formed message of another class or method.
    #[error("not a Binding success response (message type {message_type:#06x})")]
    Unexpected { message_type: u16 },
    /// A Binding error response (§6.3.4), with its ERROR-CODE if any.
    #[error("STUN error response {}", code.map_or_else(|| "without a code".to_owned(), |c| c.to_string()))]
    ErrorResponse { code: Option<u16> },
    /// An attribute runs past the end of the message.
    #[error("STUN attribute {kind:#06x} truncated")]
    AttributeTruncated { kind: u16 },
    /// An attribute we read has a value of the wrong shape.
    #[error("bad STUN attribute {kind:#06x}: {why}")]
    BadAttribute { kind: u16, why: &'static str },
    /// A comprehension-required attribute we do not know (§14: the
    /// message must then be refused).
    #[error("unknown comprehension-required STUN attribute {kind:#06x}")]
    UnknownRequired { kind: u16 },
    /// Something follows FINGERPRINT, which must be last (§14.7).
    #[error("STUN attribute {kind:#06x} after FINGERPRINT")]
    AfterFingerprint { kind: u16 },
    /// FINGERPRINT present and wrong (§14.7): corrupt, or not STUN at all.
    #[error("STUN FINGERPRINT mismatch: carried {carried:#010x}, computed {computed:#010x}")]
    FingerprintMismatch { carried: u32, computed: u32 },
    /// A success response without (XOR-)MAPPED-ADDRESS.
    #[error("STUN Binding response without a mapped address")]
    NoMappedAddress,
}

/// A transaction id (§5): 96 bits the client picks at random, the server
/// echoes, and the client matches responses against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TransactionId(pub [u8; 12]);

/// The class of a message (§5: bits C1 and C0 of the message type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Request,
    Indication,
    SuccessResponse,
    ErrorResponse,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::SuccessResponse => 0b10,
            Class::ErrorResponse => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Self {
        match bits & 0b11 {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::SuccessResponse,
            _ => Class::ErrorResponse,
        }
    }
}

/// The message type for `method` and `class`: the 12 method bits M11..M0
/// with C1 and C0 slotted in at bits 8 and 4 (§5, figure 3).
pub fn message_type(method: u16, class: Class) -> u16 {
    let c = class.bits();
    (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((c & 0b01) << 4)
        | ((c & 0b10) << 7)
}

/// The cheap demultiplexing test (RFC 8489 §6.3, as RFC 7983 §7 uses it
/// to share a port): the first two bits are zero, the magic cookie is at bytes 4..8,
/// and the header's length is a multiple of 4 and exactly what follows the
/// header. A WireGuard message (type 1..=4 then three zero bytes) is never
/// STUN: its "length" reads as 0, and no WireGuard message is 20 bytes.
pub fn is_stun(datagram: &[u8]) -> bool {
    Packet::new_checked(datagram).is_ok()
}

/// A STUN message in a buffer, smoltcp-style: [`Packet::new_checked`]
/// validates the header once, then the accessors cannot fail.
#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without looking at it; the accessors may then panic
    /// on a short buffer. Use [`Packet::new_checked`] for received bytes.
    pub fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` if its header is a STUN header that accounts for
    /// exactly the bytes that follow it (§5, §6.3).
    pub fn new_checked(buffer: T) -> Result<Self, StunError> {
        let p = Self::new_checked_any(buffer)?;
        if !p.has_magic_cookie() {
            return Err(StunError::NotStun);
        }
        Ok(p)
    }

    /// As [`Packet::new_checked`], but a message without the magic cookie
    /// is taken too: an RFC 3489 message, whose transaction id is the 128
    /// bits after the length (RFC 3489 §11.1; RFC 8489 §11). For a server
    /// only: what a node receives must pass [`Packet::new_checked`].
    pub fn new_checked_any(buffer: T) -> Result<Self, StunError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(StunError::Truncated {
                needed: HEADER_LEN,
                got: b.len(),
            });
        }
        if b[0] & 0xC0 != 0 {
            return Err(StunError::NotStun);
        }
        let declared = usize::from(u16::from_be_bytes([b[2], b[3]]));
        let actual = b.len() - HEADER_LEN;
        if declared % 4 != 0 || declared != actual {
            return Err(StunError::BadLength { declared, actual });
        }
        Ok(Self { buffer })
    }

    pub fn message_type(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The 12 method bits, with the class bits taken out (§5).
    pub fn method(&self) -> u16 {
        let t = self.message_type();
        (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80)
    }

    pub fn class(&self) -> Class {
        let t = self.message_type();
        Class::from_bits(((t >> 4) & 0b01) | ((t >> 7) & 0b10))
    }

    /// The 96-bit transaction id of an RFC 8489 message (§5).
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.buffer.as_ref()[8..HEADER_LEN]);
        TransactionId(id)
    }

    /// Whether bytes 4..8 are the magic cookie: an RFC 5389/8489 message
    /// rather than an RFC 3489 one (RFC 8489 §11).
    pub fn has_magic_cookie(&self) -> bool {
        self.buffer.as_ref()[4..8] == MAGIC_COOKIE.to_be_bytes()
    }

    /// Bytes 4..20: the magic cookie and transaction id of an RFC 8489
    /// message, the whole 128-bit transaction id of an RFC 3489 one. A
    /// response copies them from its request (RFC 8489 §6.3.2, §11).
    fn cookie_and_id(&self) -> [u8; 16] {
        let mut tail = [0u8; 16];
        tail.copy_from_slice(&self.buffer.as_ref()[4..HEADER_LEN]);
        tail
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The attributes, in order; an `Err` ends the walk.
    pub fn attributes(&self) -> Attributes<'_> {
        Attributes {
            message: self.buffer.as_ref(),
            offset: HEADER_LEN,
            failed: false,
        }
    }
}

/// One attribute: its type, its value (without padding), and where it
/// starts in the message (FINGERPRINT covers the bytes before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    pub kind: u16,
    pub value: &'a [u8],
    pub offset: usize,
}

impl Attribute<'_> {
    /// Below 0x8000: an agent that does not know it must refuse the message (§14).
    pub fn comprehension_required(&self) -> bool {
        self.kind < 0x8000
    }
}

/// Iterator over a message's attributes (§14: type, length, value, padding
/// to a multiple of 4 bytes that the length does not count).
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    message: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<Attribute<'a>, StunError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.message.len() {
            return None;
        }
        let rest = &self.message[self.offset..];
        if rest.len() < ATTR_HEADER_LEN {
            // Cannot happen in a checked packet (lengths are multiples of 4
            // and values are padded), but bytes are bytes.
            self.failed = true;
            return Some(Err(StunError::AttributeTruncated { kind: 0 }));
        }
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let padded = len.div_ceil(4) * 4;
        if rest.len() < ATTR_HEADER_LEN + padded {
            self.failed = true;
            return Some(Err(StunError::AttributeTruncated { kind }));
        }
        let value = &rest[ATTR_HEADER_LEN..ATTR_HEADER_LEN + len];
        let offset = self.offset;
        self.offset += ATTR_HEADER_LEN + padded;
        Some(Ok(Attribute {
            kind,
            value,
            offset,
        }))
    }
}

/// What a walk over a message's attributes found that Binding cares about.
#[derive(Debug, Default)]
struct Summary {
    xor_mapped: Option<SocketAddr>,
    mapped: Option<SocketAddr>,
    error_code: Option<u16>,
}

/// Walks the attributes: checks FINGERPRINT if present (and that it is
/// last), refuses unknown comprehension-required attributes, decodes the
/// address attributes. Attributes after MESSAGE-INTEGRITY other than
/// FINGERPRINT are ignored, as §14.5 says.
fn summarize<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Summary, StunError> {
    let txid = p.transaction_id();
    let mut s = Summary::default();
    let mut after_integrity = false;
    let mut fingerprint_seen = false;
    for a in p.attributes() {
        let a = a?;
        if fingerprint_seen {
            return Err(StunError::AfterFingerprint { kind: a.kind });
        }
        if a.kind == attr::FINGERPRINT {
            fingerprint_seen = true;
            check_fingerprint(p.as_bytes(), &a)?;
            continue;
        }
        if after_integrity {
            continue;
        }
        match a.kind {
            attr::XOR_MAPPED_ADDRESS => {
                s.xor_mapped.get_or_insert(decode_address(&a, Some(&txid))?);
            }
            attr::MAPPED_ADDRESS => {
                s.mapped.get_or_insert(decode_address(&a, None)?);
            }
            attr::ERROR_CODE => {
                // Reserved (21 bits), class (3 bits: 3..=6), number (8 bits: 0..=99).
                if a.value.len() < 4 {
                    return Err(StunError::BadAttribute {
                        kind: a.kind,
                        why: "shorter than 4 bytes",
                    });
                }
                let class = u16::from(a.value[2] & 0x07);
                let number = u16::from(a.value[3]);
                s.error_code = Some(class * 100 + number);
            }
            // Not verified (see the module doc), and what follows is not
            // covered by it: ignored from here on.
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 => after_integrity = true,
            // Known, and nothing Binding needs from them.
            attr::USERNAME
            | attr::UNKNOWN_ATTRIBUTES
            | attr::REALM
            | attr::NONCE
            | attr::PASSWORD_ALGORITHM
            | attr::USERHASH => {}
            kind if a.comprehension_required() => {
                return Err(StunError::UnknownRequired { kind });
            }
            // Comprehension-optional: SOFTWARE, ALTERNATE-SERVER, ICE's and
            // anything newer; skipped.
            _ => {}
        }
    }
    Ok(s)
}

fn check_fingerprint(message: &[u8], a: &Attribute<'_>) -> Result<(), StunError> {
    let carried: [u8; 4] = a.value.try_into().map_err(|_| StunError::BadAttribute {
        kind: attr::FINGERPRINT,
        why: "not 4 bytes",
    })?;
    let carried = u32::from_be_bytes(carried);
    // The CRC covers the message up to the attribute, with the header's
    // length already counting it (§14.7); FINGERPRINT being last, that is
    // the length as received.
    let computed = crc32(&message[..a.offset]) ^ FINGERPRINT_XOR;
    if carried == computed {
        Ok(())
    } else {
        Err(StunError::FingerprintMismatch { carried, computed })
    }
}

/// Decodes (XOR-)MAPPED-ADDRESS (§14.1, §14.2): a zero byte, the family
/// (1: IPv4, 2: IPv6), the port, the address. XORed: the port with the top
/// half of the cookie, an IPv4 address with the cookie, an IPv6 address
/// with the cookie followed by the transaction id.
fn decode_address(a: &Attribute<'_>, xor: Option<&TransactionId>) -> Result<SocketAddr, StunError> {
    let bad = |why| StunError::BadAttribute { kind: a.kind, why };
    let v = a.value;
    if v.len() < 4 {
        return Err(bad("shorter than 4 bytes"));
    }
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    if let Some(txid) = xor {
        mask[4..].copy_from_slice(&txid.0);
        // The cookie's most significant 16 bits (§14.2).
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let xored = |bytes: &[u8], out: &mut [u8]| {
        for (i, (o, b)) in out.iter_mut().zip(bytes).enumerate() {
            *o = if xor.is_some() { b ^ mask[i] } else { *b };
        }
    };
    let ip = match (v[1], v.len()) {
        (0x01, 8) => {
            let mut o = [0u8; 4];
            xored(&v[4..8], &mut o);
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (0x02, 20) => {
            let mut o = [0u8; 16];
            xored(&v[4..20], &mut o);
            IpAddr::V6(Ipv6Addr::from(o))
        }
        (0x01 | 0x02, _) => return Err(bad("wrong length for its family")),
        _ => return Err(bad("unknown address family")),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Builds a message: the header, the attributes `body` appends, then
/// FINGERPRINT. The length field is set before the CRC is taken, as §14.7
/// requires.
fn emit(message_type: u16, txid: TransactionId, body: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut tail = [0u8; 16];
    tail[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    tail[4..].copy_from_slice(&txid.0);
    emit_with(message_type, tail, true, body)
}

/// Builds a message whose header ends in `tail` (cookie and id, or an RFC
/// 3489 id), with FINGERPRINT last if `fingerprint` (RFC 3489 has none).
fn emit_with(
    message_type: u16,
    tail: [u8; 16],
    fingerprint: bool,
    body: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + 64);
    buf.extend_from_slice(&message_type.to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&tail);
    body(&mut buf);
    let trailer = if fingerprint { FINGERPRINT_LEN } else { 0 };
    let len = buf.len() - HEADER_LEN + trailer;
    let len = u16::try_from(len).expect("invariant: Binding messages built here are < 64 KiB");
    buf[2..4].copy_from_slice(&len.to_be_bytes());
    if fingerprint {
        let crc = crc32(&buf) ^ FINGERPRINT_XOR;
        put_attribute(&mut buf, attr::FINGERPRINT, &crc.to_be_bytes());
    }
    buf
}

/// Appends one attribute and its zero padding (§14).
fn put_attribute(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).expect("invariant: attribute values built here are small");
    buf.extend_from_slice(&kind.to_be_bytes());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(value);
    let pad = value.len().div_ceil(4) * 4 - value.len();
    buf.extend_from_slice(&[0u8; 3][..pad]);
}

/// Appends XOR-MAPPED-ADDRESS for `addr` (§14.2).
fn put_xor_mapped(buf: &mut Vec<u8>, txid: &TransactionId, addr: SocketAddr) {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(&txid.0);
    put_address(buf, attr::XOR_MAPPED_ADDRESS, addr, Some(&mask));
}

/// Appends (XOR-)MAPPED-ADDRESS for `addr` (§14.1, §14.2), XORed with
/// `mask` (the cookie, then the transaction id) if given. An IPv4-mapped
/// IPv6 address (a dual-stack socket's view of an IPv4 peer) is written as
/// the IPv4 address it is.
fn put_address(buf: &mut Vec<u8>, kind: u16, addr: SocketAddr, mask: Option<&[u8; 16]>) {
    let zero = [0u8; 16];
    let mask = mask.unwrap_or(&zero);
    let port = addr.port() ^ u16::from_be_bytes([mask[0], mask[1]]);
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let mut value = Vec::with_capacity(20);
    value.push(0);
    match ip {
        IpAddr::V4(v4) => {
            value.push(0x01);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(v4.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
        IpAddr::V6(v6) => {
            value.push(0x02);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(v6.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    put_attribute(buf, kind, &value);
}

/// A Binding request (§6.1) with no attributes but FINGERPRINT (which lets
/// a server that multiplexes protocols tell it apart, §7). `txid` must be
/// random (§5): it is what a response is matched to, and an off-path
/// attacker must not guess it.
pub fn binding_request(txid: TransactionId) -> Vec<u8> {
    emit(message_type(METHOD_BINDING, Class::Request), txid, |_| {})
}

/// A Binding success response (§6.3.3) telling the client it was seen at
/// `mapped`, with SOFTWARE if given (cut to [`SOFTWARE_MAX`] bytes at a
/// character boundary) and FINGERPRINT.
pub fn binding_response(
    txid: TransactionId,
    mapped: SocketAddr,
    software: Option<&str>,
) -> Vec<u8> {
    emit(
        message_type(METHOD_BINDING, Class::SuccessResponse),
        txid,
        |buf| {
            if let Some(sw) = software {
                let mut end = sw.len().min(SOFTWARE_MAX);
                while !sw.is_char_boundary(end) {
                    end -= 1;
                }
                put_attribute(buf, attr::SOFTWARE, &sw.as_bytes()[..end]);
            }
            put_xor_mapped(buf, &txid, mapped);
        },
    )
}

/// What [`respond`] sent back, for a server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResponseKind {
    /// A Binding success response: XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS
    /// to an RFC 3489 client.
    Success,
    /// A 420 (Unknown Attribute) error response with UNKNOWN-ATTRIBUTES
    /// (§6.3.1.1).
    UnknownAttribute,
}

/// A server's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub bytes: Vec<u8>,
    pub kind: ResponseKind,
    /// The request had no magic cookie (RFC 3489, RFC 8489 §11).
    pub rfc3489: bool,
}

/// The reason phrase RFC 8489 §14.8 gives for 420.
const UNKNOWN_ATTRIBUTE_REASON: &[u8] = b"Unknown Attribute";

/// The server side: for a well-formed Binding request from `from`, the
/// success response that tells the client `from` (XOR-MAPPED-ADDRESS;
/// MAPPED-ADDRESS to an RFC 3489 client, §11); for one carrying
/// comprehension-required attributes we do not understand, a 420 error
/// response that lists them in UNKNOWN-ATTRIBUTES (§6.3.1.1); `None` for
/// anything else, which a server drops silently: not a Binding request,
/// malformed, or with a wrong FINGERPRINT (§7.3).
///
/// Reflection stays small: a success response is at most 52 bytes (IPv6),
/// 2.6 times a bare 20-byte request at worst; a 420 is 60 bytes plus 2 per
/// listed attribute, rounded up to 4 (each listed attribute took at least
/// 4 bytes of the request), at most 2.7 times its request (64 bytes for a
/// 24-byte request).
pub fn respond(request: &[u8], from: SocketAddr) -> Option<Response> {
    let p = Packet::new_checked_any(request).ok()?;
    if p.method() != METHOD_BINDING || p.class() != Class::Request {
        return None;
    }
    let unknown = unknown_in_request(&p).ok()?;
    let rfc3489 = !p.has_magic_cookie();
    let tail = p.cookie_and_id();
    let fingerprint = !rfc3489;
    if unknown.is_empty() {
        let bytes = emit_with(
            message_type(METHOD_BINDING, Class::SuccessResponse),
            tail,
            fingerprint,
            |buf| {
                if rfc3489 {
                    // No cookie to XOR with: the address as it is (§11).
                    put_address(buf, attr::MAPPED_ADDRESS, from, None);
                } else {
                    put_xor_mapped(buf, &p.transaction_id(), from);
                }
            },
        );
        return Some(Response {
            bytes,
            kind: ResponseKind::Success,
            rfc3489,
        });
    }
    let bytes = emit_with(
        message_type(METHOD_BINDING, Class::ErrorResponse),
        tail,
        fingerprint,
        |buf| {
            // ERROR-CODE (§14.8): 21 reserved bits, the class (4) in 3
            // bits, the number (20) in 8, then the reason phrase.
            let mut code = vec![0, 0, 4, 20];
            code.extend_from_slice(UNKNOWN_ATTRIBUTE_REASON);
            put_attribute(buf, attr::ERROR_CODE, &code);
            // UNKNOWN-ATTRIBUTES (§14.9): the 16-bit types, padded as
            // any attribute.
            let list: Vec<u8> = unknown.iter().flat_map(|k| k.to_be_bytes()).collect();
            put_attribute(buf, attr::UNKNOWN_ATTRIBUTES, &list);
        },
    );
    Some(Response {
        bytes,
        kind: ResponseKind::UnknownAttribute,
        rfc3489,
    })
}

/// [`respond`]'s bytes alone.
pub fn answer(request: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    respond(request, from).map(|r| r.bytes)
}

/// Walks a request's attributes as a server (§6.3, §6.3.1): FINGERPRINT
/// must check out if present (and be last), and the comprehension-required
/// attributes not understood are returned, each once, in order. Understood:
/// those [`summarize`] knows, and CHANGE-REQUEST when it asks for no change
/// (RFC 3489 clients send that in their first test); asking for another
/// address or port, it is not one we can honour and is listed, as is
/// RESPONSE-ADDRESS (RFC 8489 §11; RFC 5780 §6.1 has a server without an
/// alternate address answer CHANGE-REQUEST with 420).
fn unknown_in_request<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Vec<u16>, StunError> {
    let mut unknown: Vec<u16> = Vec::new();
    // Membership in a set: a 64 KiB request may carry 16,000 attributes.
    let mut listed = HashSet::new();
    let mut after_integrity = false;
    let mut fingerprint_seen = false;
    for a in p.attributes() {
        let a = a?;
        if fingerprint_seen {
            return Err(StunError::AfterFingerprint { kind: a.kind });
        }
        if a.kind == attr::FINGERPRINT {
            fingerprint_seen = true;
            check_fingerprint(p.as_bytes(), &a)?;
            continue;
        }
        if after_integrity {
            continue;
        }
        let understood = match a.kind {
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 => {
                after_integrity = true;
                true
            }
            attr::CHANGE_REQUEST => {
                // 32 bits: flag A (change IP) is 0x4, B (change port) 0x2.
                let flags: [u8; 4] = a.value.try_into().map_err(|_| StunError::BadAttribute {
                    kind: a.kind,
                    why: "not 4 bytes",
                })?;
                u32::from_be_bytes(flags) & 0x6 == 0
            }
            attr::MAPPED_ADDRESS
            | attr::XOR_MAPPED_ADDRESS
            | attr::ERROR_CODE
            | attr::USERNAME
            | attr::UNKNOWN_ATTRIBUTES
            | attr::REALM
            | attr::NONCE
            | attr::PASSWORD_ALGORITHM
            | attr::USERHASH => true,
            _ => !a.comprehension_required(),
        };
        if !understood && listed.insert(a.kind) {
            unknown.push(a.kind);
        }
    }
    Ok(unknown)
}

/// The client side: the transaction id and the reflexive address of a
/// Binding success response. XOR-MAPPED-ADDRESS is preferred; MAPPED-ADDRESS
/// is taken from servers that only send that (§14.1). The caller matches
/// the id against the requests it has outstanding.
pub fn parse_binding_response(datagram: &[u8]) -> Result<(TransactionId, SocketAddr), StunError> {
    let p = Packet::new_checked(datagram)?;
    let summary = summarize(&p)?;
    if p.method() != METHOD_BINDING {
        return Err(StunError::Unexpected {
            message_type: p.message_type(),
        });
    }
    match p.class() {
        Class::SuccessResponse => {}
        Class::ErrorResponse => {
            return Err(StunError::ErrorResponse {
                code: summary.error_code,
            });
        }
        Class::Request | Class::Indication => {
            return Err(StunError::Unexpected {
                message_type: p.message_type(),
            });
        }
    }
    let addr = summary
        .xor_mapped
        .or(summary.mapped)
        .ok_or(StunError::NoMappedAddress)?;
    Ok((p.transaction_id(), addr))
}

/// CRC-32 as ISO/IEC 13239 / ITU-T V.42 / Ethernet compute it (reflected
/// polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF), which is what
/// FINGERPRINT uses (§14.7). Bitwise, no table: STUN messages are tiny.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hex with spaces and newlines, as the RFC prints it.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    const RFC5769_TXID: [u8; 12] = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    /// RFC 5769 §2.1, "Sample Request" (short-term credentials, ICE
    /// attributes). Its MESSAGE-INTEGRITY is not verified (we have no
    /// credentials support), only stepped over.
    const SAMPLE_REQUEST: &str = "
        00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
        00 24 00 04 6e 00 01 ff
        80 29 00 08 93 2f f9 b1 51 26 3b 36
        00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
        00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
        80 28 00 04 e5 7a 3b cf";

    /// RFC 5769 §2.2, "Sample IPv4 Response". Its MESSAGE-INTEGRITY
    /// (HMAC-SHA1 with the password "VOkJxbRl1RmTxUk/WvJxBt") is skipped
    /// without being verified: wgmesh does not do STUN authentication.
    const SAMPLE_IPV4_RESPONSE: &str = "
        01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
        00 20 00 08 00 01 a1 47 e1 12 a6 43
        00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
        80 28 00 04 c0 7d 4c 96";

    /// RFC 5769 §2.3, "Sample IPv6 Response"; MESSAGE-INTEGRITY skipped as above.
    const SAMPLE_IPV6_RESPONSE: &str = "
        01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
        00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
        00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
        80 28 00 04 c8 fb 0b 4c";

    #[test]
    fn crc32_check_value() {
        // The catalogue's check value for CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn rfc5769_ipv4_response() {
        let msg = hex(SAMPLE_IPV4_RESPONSE);
        assert!(is_stun(&msg));
        let p = Packet::new_checked(&msg[..]).unwrap();
        assert_eq!(p.class(), Class::SuccessResponse);
        assert_eq!(p.method(), METHOD_BINDING);
        let fp = p
            .attributes()
            .map(Result::unwrap)
            .find(|a| a.kind == attr::FINGERPRINT)
            .unwrap();
        check_fingerprint(&msg, &fp).unwrap();
        let (txid, addr) = parse_binding_response(&msg).unwrap();
        assert_eq!(txid, TransactionId(RFC5769_TXID));
        assert_eq!(addr, "192.0.2.1:32853".parse().unwrap());
    }

    #[test]
    fn rfc5769_ipv6_response() {
        let msg = hex(SAMPLE_IPV6_RESPONSE);
        assert!(is_stun(&msg));
        let (txid, addr) = parse_binding_response(&msg).unwrap();
        assert_eq!(txid, TransactionId(RFC5769_TXID));
        assert_eq!(
            addr,
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
                .parse()
                .unwrap()
        );
    }

    /// A flipped bit anywhere the FINGERPRINT covers is caught.
    #[test]
    fn corrupted_vectors_fail_the_fingerprint() {
        let mut msg = hex(SAMPLE_IPV4_RESPONSE);
        msg[26] ^= 0x01; // inside SOFTWARE
        assert!(matches!(
            parse_binding_response(&msg),
            Err(StunError::FingerprintMismatch { .. })
        ));
    }

    /// The 420 our responder sends to [`SAMPLE_REQUEST`] (built by hand
    /// from RFC 8489 §14.8, §14.9 and §14.7; the CRC with Python's
    /// zlib.crc32): ERROR-CODE 420 "Unknown Attribute", UNKNOWN-ATTRIBUTES
    /// listing PRIORITY (0x0024) and padded to 4, FINGERPRINT.
    const SAMPLE_REQUEST_420: &str = "
        01 11 00 2c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
        00 09 00 15 00 00 04 14 55 6e 6b 6e 6f 77 6e 20 41 74 74 72 69 62 75 74 65 00 00 00
        00 0a 00 02 00 24 00 00
        80 28 00 04 bd 47 dc 87";

    /// The sample request's FINGERPRINT checks out; it carries PRIORITY, a
    /// comprehension-required ICE attribute we do not know, so it gets a
    /// 420 that lists it (§6.3.1.1); ICE-CONTROLLED (0x8029) is
    /// comprehension-optional and not listed.
    #[test]
    fn rfc5769_request_gets_a_420_listing_priority() {
        let msg = hex(SAMPLE_REQUEST);
        let p = Packet::new_checked(&msg[..]).unwrap();
        assert_eq!(p.class(), Class::Request);
        assert_eq!(p.method(), METHOD_BINDING);
        assert_eq!(
            summarize(&p).unwrap_err(),
            StunError::UnknownRequired { kind: 0x0024 }
        );
        let fp = p
            .attributes()
            .map(Result::unwrap)
            .find(|a| a.kind == attr::FINGERPRINT)
            .unwrap();
        check_fingerprint(&msg, &fp).unwrap();
        let resp = respond(&msg, "192.0.2.1:1".parse().unwrap()).unwrap();
        assert_eq!(resp.kind, ResponseKind::UnknownAttribute);
        assert!(!resp.rfc3489);
        assert_eq!(resp.bytes, hex(SAMPLE_REQUEST_420));
        // Our own client reads it as the error it is.
        assert_eq!(
            parse_binding_response(&resp.bytes).unwrap_err(),
            StunError::ErrorResponse { code: Some(420) }
        );
    }

    /// Unknown comprehension-required attributes are each listed once, in
    /// order; unknown optional ones are not; an odd count is padded.
    #[test]
    fn unknown_attributes_listed_once_in_order() {
        let txid = TransactionId([6; 12]);
        let req = emit(message_type(METHOD_BINDING, Class::Request), txid, |b| {
            put_attribute(b, 0x7001, &[1]);
            put_attribute(b, 0xC001, &[]);
            put_attribute(b, 0x0024, &[0; 4]);
            put_attribute(b, 0x7001, &[2]);
            put_attribute(b, attr::SOFTWARE, b"x");
        });
        let resp = respond(&req, "192.0.2.1:9".parse().unwrap()).unwrap();
        assert_eq!(resp.kind, ResponseKind::UnknownAttribute);
        let p = Packet::new_checked(&resp.bytes[..]).unwrap();
        assert_eq!(p.transaction_id(), txid);
        assert_eq!(p.class(), Class::ErrorResponse);
        let list = p
            .attributes()
            .map(Result::unwrap)
            .find(|a| a.kind == attr::UNKNOWN_ATTRIBUTES)
            .unwrap();
        assert_eq!(list.value, [0x70, 0x01, 0x00, 0x24]);
        // A wrong FINGERPRINT is not answered at all, 420 or not (§7.3).
        let mut bad = req.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert_eq!(respond(&bad, "192.0.2.1:9".parse().unwrap()), None);
        // Only unknown optional attributes: answered with success.
        let req = emit(message_type(METHOD_BINDING, Class::Request), txid, |b| {
            put_attribute(b, 0xC001, &[]);
        });
        let resp = respond(&req, "192.0.2.1:9".parse().unwrap()).unwrap();
        assert_eq!(resp.kind, ResponseKind::Success);
    }

    /// Test I of Debian's `stun` client (stund 0.97, RFC 3489), as
    /// captured from `stun 127.0.0.1:PORT`: a Binding request with no
    /// magic cookie (the 16 bytes after the length are its transaction
    /// id) and CHANGE-REQUEST asking for no change.
    const RFC3489_REQUEST: &str = "
        00 01 00 08 01 a1 24 5d df 62 2f 03 97 4b 53 2a ce 32 77 78
        00 03 00 04 00 00 00 00";

    /// Our answer to it from 192.0.2.1:32853 (RFC 8489 §11): the 16 bytes
    /// copied, MAPPED-ADDRESS (not XORed: there is no cookie), nothing else.
    const RFC3489_RESPONSE: &str = "
        01 01 00 0c 01 a1 24 5d df 62 2f 03 97 4b 53 2a ce 32 77 78
        00 01 00 08 00 01 80 55 c0 00 02 01";

    /// Its test II (CHANGE-REQUEST: change IP), and our 420: there is no
    /// other address to answer from; still no cookie and no FINGERPRINT.
    const RFC3489_CHANGE_IP: &str = "
        00 01 00 08 02 48 28 28 e4 96 f2 02 bd ac 70 37 c2 55 59 34
        00 03 00 04 00 00 00 04";
    const RFC3489_CHANGE_IP_420: &str = "
        01 11 00 24 02 48 28 28 e4 96 f2 02 bd ac 70 37 c2 55 59 34
        00 09 00 15 00 00 04 14 55 6e 6b 6e 6f 77 6e 20 41 74 74 72 69 62 75 74 65 00 00 00
        00 0a 00 02 00 03 00 00";

    #[test]
    fn rfc3489_request_gets_mapped_address() {
        let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let req = hex(RFC3489_REQUEST);
        let resp = respond(&req, from).unwrap();
        assert_eq!(resp.kind, ResponseKind::Success);
        assert!(resp.rfc3489);
        assert_eq!(resp.bytes, hex(RFC3489_RESPONSE));
        // A bare one (pystun3's first test) too; and from a dual-stack
        // socket the address is the IPv4 one.
        let mut bare = req[..HEADER_LEN].to_vec();
        bare[3] = 0;
        let resp = answer(&bare, "[::ffff:192.0.2.1]:32853".parse().unwrap()).unwrap();
        assert_eq!(resp[HEADER_LEN..], hex(RFC3489_RESPONSE)[HEADER_LEN..]);
        assert_eq!(resp[4..HEADER_LEN], req[4..HEADER_LEN]);
        // An IPv6 client gets family 2.
        let v6 = answer(&bare, "[2001:db8::1]:7".parse().unwrap()).unwrap();
        assert_eq!(
            v6[HEADER_LEN..],
            hex("00 01 00 14 00 02 00 07 20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01")
        );
    }

    #[test]
    fn rfc3489_change_and_response_address_get_a_420() {
        let from: SocketAddr = "192.0.2.1:32853".parse().unwrap();
        let resp = respond(&hex(RFC3489_CHANGE_IP), from).unwrap();
        assert_eq!(resp.kind, ResponseKind::UnknownAttribute);
        assert!(resp.rfc3489);
        assert_eq!(resp.bytes, hex(RFC3489_CHANGE_IP_420));
        // RESPONSE-ADDRESS would have us send the answer elsewhere: never
        // (RFC 8489 §11 treats it as unknown).
        let mut req = hex(RFC3489_REQUEST);
        req[HEADER_LEN + 1] = 0x02;
        let resp = respond(&req, from).unwrap();
        assert_eq!(resp.kind, ResponseKind::UnknownAttribute);
        assert_eq!(resp.bytes[resp.bytes.len() - 4..], [0x00, 0x02, 0x00, 0x00]);
        // A CHANGE-REQUEST of the wrong size is malformed: dropped.
        let mut req = hex(RFC3489_REQUEST);
        req[HEADER_LEN + 3] = 0x03;
        assert_eq!(respond(&req, from), None);
    }

    /// What the node's side makes of classic messages: never STUN (a node
    /// sends RFC 8489 requests only), so on the shared socket they go
    /// nowhere near the STUN client, disco or the relay client, and they
    /// are not WireGuard-framed either (a type 1..=4, three zero bytes):
    /// the device drops them. A classic response is no answer for us.
    #[test]
    fn rfc3489_messages_are_not_a_nodes_stun_disco_relay_or_wireguard() {
        for m in [RFC3489_REQUEST, RFC3489_RESPONSE, RFC3489_CHANGE_IP_420] {
            let m = hex(m);
            assert!(!is_stun(&m));
            assert!(!crate::disco::is_disco(&m));
            assert!(!crate::relay::is_relay(&m));
            let head = u32::from_le_bytes(m[..4].try_into().unwrap());
            assert!(!(1..=4).contains(&head));
        }
        assert_eq!(
            parse_binding_response(&hex(RFC3489_RESPONSE)).unwrap_err(),
            StunError::NotStun
        );
    }

    #[test]
    fn message_types() {
        assert_eq!(message_type(METHOD_BINDING, Class::Request), 0x0001);
        assert_eq!(message_type(METHOD_BINDING, Class::Indication), 0x0011);
        assert_eq!(message_type(METHOD_BINDING, Class::SuccessResponse), 0x0101);
        assert_eq!(message_type(METHOD_BINDING, Class::ErrorResponse), 0x0111);
        for method in [0x001, 0x003, 0x00a, 0xfff] {
            for class in [
                Class::Request,
                Class::Indication,
                Class::SuccessResponse,
                Class::ErrorResponse,
            ] {
                let mut msg = emit(message_type(method, class), TransactionId([7; 12]), |_| {});
                msg.truncate(HEADER_LEN);
                msg[3] = 0;
                let p = Packet::new_checked(&msg[..]).unwrap();
                assert_eq!((p.method(), p.class()), (method, class));
            }
        }
    }

    #[test]
    fn request_answer_parse_round_trip() {
        for from in [
            "192.0.2.1:32853",
            "203.0.113.77:1",
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            "[2001:db8::1]:65535",
        ] {
            let from: SocketAddr = from.parse().unwrap();
            let txid = TransactionId([0x5a; 12]);
            let req = binding_request(txid);
            assert!(is_stun(&req));
            assert_eq!(req.len(), HEADER_LEN + FINGERPRINT_LEN);
            let resp = answer(&req, from).unwrap();
            assert!(is_stun(&resp));
            assert_eq!(parse_binding_response(&resp).unwrap(), (txid, from));
            // A request is not a response, and a response is not answered.
            assert_eq!(
                parse_binding_response(&req).unwrap_err(),
                StunError::Unexpected {
                    message_type: 0x0001
                }
            );
            assert_eq!(answer(&resp, from), None);
        }
    }

    /// A dual-stack socket sees an IPv4 client as ::ffff:a.b.c.d; the
    /// client is told its IPv4 address.
    #[test]
    fn mapped_v4_is_answered_as_v4() {
        let txid = TransactionId([1; 12]);
        let resp = answer(
            &binding_request(txid),
            "[::ffff:192.0.2.9]:4000".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            parse_binding_response(&resp).unwrap().1,
            "192.0.2.9:4000".parse().unwrap()
        );
    }

    #[test]
    fn software_is_emitted_padded_and_skipped() {
        let txid = TransactionId([2; 12]);
        let to: SocketAddr = "198.51.100.2:51820".parse().unwrap();
        let resp = binding_response(txid, to, Some("wgmesh 0.1"));
        let p = Packet::new_checked(&resp[..]).unwrap();
        let kinds: Vec<(u16, usize)> = p
            .attributes()
            .map(|a| a.map(|a| (a.kind, a.value.len())).unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                (attr::SOFTWARE, 10),
                (attr::XOR_MAPPED_ADDRESS, 8),
                (attr::FINGERPRINT, 4)
            ]
        );
        assert_eq!(parse_binding_response(&resp).unwrap(), (txid, to));
        let long = "é".repeat(100);
        let resp = binding_response(txid, to, Some(&long));
        assert_eq!(parse_binding_response(&resp).unwrap(), (txid, to));
    }

    /// Old servers (RFC 3489 style, with the cookie) send MAPPED-ADDRESS
    /// only; no FINGERPRINT either, which is optional.
    #[test]
    fn mapped_address_only() {
        let mut msg = hex("01 01 00 0c 21 12 a4 42 00 01 02 03 04 05 06 07 08 09 0a 0b
                           00 01 00 08 00 01 ca 6c c0 00 02 05");
        let (_, addr) = parse_binding_response(&msg).unwrap();
        assert_eq!(addr, "192.0.2.5:51820".parse().unwrap());
        // Unknown family.
        msg[25] = 3;
        assert_eq!(
            parse_binding_response(&msg).unwrap_err(),
            StunError::BadAttribute {
                kind: attr::MAPPED_ADDRESS,
                why: "unknown address family"
            }
        );
    }

    #[test]
    fn error_response_and_missing_address() {
        let txid = TransactionId([3; 12]);
        let err = emit(
            message_type(METHOD_BINDING, Class::ErrorResponse),
            txid,
            |b| put_attribute(b, attr::ERROR_CODE, &[0, 0, 4, 20, b'x']),
        );
        assert_eq!(
            parse_binding_response(&err).unwrap_err(),
            StunError::ErrorResponse { code: Some(420) }
        );
        let empty = emit(
            message_type(METHOD_BINDING, Class::SuccessResponse),
            txid,
            |_| {},
        );
        assert_eq!(
            parse_binding_response(&empty).unwrap_err(),
            StunError::NoMappedAddress
        );
    }

    #[test]
    fn unknown_optional_skipped_required_refused_and_fingerprint_last() {
        let txid = TransactionId([4; 12]);
        let to: SocketAddr = "192.0.2.1:9".parse().unwrap();
        let with = |kind: u16| {
            emit(
                message_type(METHOD_BINDING, Class::SuccessResponse),
                txid,
                |b| {
                    put_attribute(b, kind, &[1, 2, 3, 4, 5]);
                    put_xor_mapped(b, &txid, to);
                },
            )
        };
        assert_eq!(parse_binding_response(&with(0xC001)).unwrap(), (txid, to));
        assert_eq!(
            parse_binding_response(&with(0x7001)).unwrap_err(),
            StunError::UnknownRequired { kind: 0x7001 }
        );
        // Something after a FINGERPRINT that is itself right (its CRC
        // taken with the header's length counting what follows).
        let mut msg = Vec::new();
        msg.extend_from_slice(&[0x01, 0x01, 0, 12]);
        msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        msg.extend_from_slice(&txid.0);
        let crc = crc32(&msg) ^ FINGERPRINT_XOR;
        put_attribute(&mut msg, attr::FINGERPRINT, &crc.to_be_bytes());
        put_attribute(&mut msg, attr::SOFTWARE, &[]);
        assert_eq!(
            parse_binding_response(&msg).unwrap_err(),
            StunError::AfterFingerprint { kind: 0x8022 }
        );
    }

    #[test]
    fn truncated_and_garbage_are_typed_errors() {
        let msg = binding_response(TransactionId([5; 12]), "192.0.2.1:9".parse().unwrap(), None);
        for n in 0..msg.len() {
            assert!(parse_binding_response(&msg[..n]).is_err(), "{n} bytes");
            assert!(!is_stun(&msg[..n]) || n == HEADER_LEN);
        }
        assert_eq!(
            parse_binding_response(&msg[..10]).unwrap_err(),
            StunError::Truncated {
                needed: 20,
                got: 10
            }
        );
        // An attribute whose length runs past the message.
        let mut bad = msg.clone();
        bad[HEADER_LEN + 3] = 200;
        assert_eq!(
            parse_binding_response(&bad).unwrap_err(),
            StunError::AttributeTruncated {
                kind: attr::XOR_MAPPED_ADDRESS
            }
        );
        let mut bad = msg.clone();
        bad[4] ^= 1;
        assert_eq!(
            parse_binding_response(&bad).unwrap_err(),
            StunError::NotStun
        );
        let mut bad = msg;
        bad[0] |= 0x40;
        assert!(!is_stun(&bad));
    }

    /// WireGuard's four messages (type, three zero bytes, then indices and
    /// ciphertext; 148, 92, 64 and ≥32 bytes) are never taken for STUN,
    /// whatever the rest of their bytes — even a sender index equal to the
    /// magic cookie.
    fn wireguard() -> impl Strategy<Value = Vec<u8>> {
        (
            1u8..=4,
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 200),
        )
            .prop_map(|(ty, cookie, mut rest)| {
                let len = match ty {
                    1 => 148,
                    2 => 92,
                    3 => 64,
                    _ => 32 + usize::from(rest[0] & 0x7f) * 16 % 160,
                };
                rest.truncate(len);
                rest[..4].copy_from_slice(&[ty, 0, 0, 0]);
                if cookie {
                    rest[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                }
                rest
            })
    }

    proptest! {
        #[test]
        fn wireguard_is_never_stun(msg in wireguard()) {
            prop_assert!(!is_stun(&msg));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = is_stun(&bytes);
            let _ = answer(&bytes, "192.0.2.1:1".parse().unwrap());
            let _ = parse_binding_response(&bytes);
        }

        /// Bytes behind a valid header reach the attribute walk, which must
        /// not panic either.
        #[test]
        fn arbitrary_attributes_never_panic(
            ty in prop_oneof![Just(0x0001u16), Just(0x0101), Just(0x0111), any::<u16>()],
            words in proptest::collection::vec(any::<[u8; 4]>(), 0..40),
            xor in any::<bool>(),
        ) {
            let mut msg = Vec::new();
            msg.extend_from_slice(&(ty & 0x3fff).to_be_bytes());
            let len = u16::try_from(words.len() * 4).unwrap();
            msg.extend_from_slice(&len.to_be_bytes());
            msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
            msg.extend_from_slice(&[9; 12]);
            for w in &words {
                msg.extend_from_slice(w);
            }
            if xor && msg.len() >= HEADER_LEN + 4 {
                msg[HEADER_LEN..HEADER_LEN + 2].copy_from_slice(&attr::XOR_MAPPED_ADDRESS.to_be_bytes());
            }
            prop_assert!(is_stun(&msg));
            let _ = answer(&msg, "[2001:db8::1]:1".parse().unwrap());
            let _ = parse_binding_response(&msg);
        }

        /// Any classic Binding request (no cookie) is answered with the
        /// sender's address in MAPPED-ADDRESS and its 128-bit id echoed,
        /// and is never taken for a node's STUN.
        #[test]
        fn rfc3489_any_id_any_address(id in any::<[u8; 16]>(), ip in any::<[u8; 4]>(), port in any::<u16>()) {
            prop_assume!(id[..4] != MAGIC_COOKIE.to_be_bytes());
            let mut req = vec![0x00, 0x01, 0x00, 0x00];
            req.extend_from_slice(&id);
            prop_assert!(!is_stun(&req));
            let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port);
            let resp = answer(&req, from).unwrap();
            prop_assert_eq!(&resp[..4], &[0x01, 0x01, 0x00, 0x0c][..]);
            prop_assert_eq!(&resp[4..HEADER_LEN], &id[..]);
            let p = Packet::new_checked_any(&resp[..]).unwrap();
            let a = p.attributes().next().unwrap().unwrap();
            prop_assert_eq!(a.kind, attr::MAPPED_ADDRESS);
            prop_assert_eq!(decode_address(&a, None).unwrap(), from);
        }

        #[test]
        fn round_trip_any_address(ip in any::<[u8; 16]>(), v4 in any::<bool>(), port in any::<u16>(), id in any::<[u8; 12]>()) {
            let ip = if v4 {
                IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(ip))
            };
            let from = SocketAddr::new(ip, port);
            let want = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(from, |v4| SocketAddr::new(IpAddr::V4(v4), port)),
                IpAddr::V4(_) => from,
            };
            let resp = answer(&binding_request(TransactionId(id)), from).unwrap();
            prop_assert_eq!(parse_binding_response(&resp).unwrap(), (TransactionId(id), want));
        }
    }
}
