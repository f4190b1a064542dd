//! The few header fields the packet filter reads: addresses, protocol,
//! fragment position, ports, TCP flags, ICMP echo identifiers and the
//! packet an ICMP error quotes.
//!
//! It owns only reading (RFC 791 IPv4, RFC 8200 IPv6 and its extension
//! headers, RFC 9293 TCP, RFC 768 UDP, RFC 792 ICMP, RFC 4443 ICMPv6);
//! what to do with a packet is `filter.rs`'s. Every read is bounds-checked:
//! a short or inconsistent packet is [`Malformed`], never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wgmesh_core::netmap::Proto;

/// The packet is too short or its lengths do not add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// How much of a packet must be there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A packet as received: its IP length must fit the buffer and its
    /// transport header must be whole (a first fragment too short for its
    /// TCP header is refused: the "tiny fragment" attack, RFC 1858 §3).
    Whole,
    /// The packet an ICMP error quotes: cut after 8 bytes of transport
    /// header for ICMPv4 (RFC 792), after what fits for ICMPv6 (RFC 4443
    /// §2.4 (c)); ports are enough.
    Quoted,
}

/// A packet's position in its fragment train, when it is a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// IPv4 Identification or IPv6 Fragment header Identification.
    pub id: u32,
    /// Offset zero: it carries the transport header.
    pub first: bool,
}

/// The IP layer of a packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ip<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 Protocol, or the IPv6 upper-layer Next Header after the
    /// extension headers (the fragment's for a non-first fragment).
    pub proto: u8,
    pub fragment: Option<Fragment>,
    /// What follows the IP headers, up to the IP length.
    pub payload: &'a [u8],
}

/// IPv6 extension headers walked before giving up (RFC 8200 §4.1 expects
/// each at most once or twice).
const MAX_EXTENSION_HEADERS: usize = 8;

fn read_u16(b: &[u8], at: usize) -> Result<u16, Malformed> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Ok(u16::from_be_bytes([x, y])),
        _ => Err(Malformed),
    }
}

fn read_u32(b: &[u8], at: usize) -> Result<u32, Malformed> {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => Ok(u32::from_be_bytes([w, x, y, z])),
        _ => Err(Malformed),
    }
}

fn byte(b: &[u8], at: usize) -> Result<u8, Malformed> {
    b.get(at).copied().ok_or(Malformed)
}

pub(crate) fn parse_ip(b: &[u8], mode: Mode) -> Result<Ip<'_>, Malformed> {
    match byte(b, 0)? >> 4 {
        4 => parse_ipv4(b, mode),
        6 => parse_ipv6(b, mode),
        _ => Err(Malformed),
    }
}

/// The end of the IP packet in `b`: its stated length, which a received
/// packet must fit and a quoted one may exceed.
fn packet_end(b: &[u8], stated: usize, mode: Mode) -> Result<usize, Malformed> {
    match mode {
        Mode::Whole if stated > b.len() => Err(Malformed),
        Mode::Whole => Ok(stated),
        Mode::Quoted => Ok(stated.min(b.len())),
    }
}

/// RFC 791 §3.1.
fn parse_ipv4(b: &[u8], mode: Mode) -> Result<Ip<'_>, Malformed> {
    let header_len = usize::from(byte(b, 0)? & 0x0f) * 4;
    if header_len < 20 || b.len() < header_len {
        return Err(Malformed);
    }
    let total = usize::from(read_u16(b, 2)?);
    if total < header_len {
        return Err(Malformed);
    }
    let end = packet_end(b, total, mode)?;
    let id = read_u16(b, 4)?;
    let flags_offset = read_u16(b, 6)?;
    let more_fragments = flags_offset & 0x2000 != 0;
    let offset = flags_offset & 0x1fff;
    let fragment = (more_fragments || offset != 0).then_some(Fragment {
        id: u32::from(id),
        first: offset == 0,
    });
    let addr = |at: usize| -> Result<IpAddr, Malformed> {
        Ok(IpAddr::V4(Ipv4Addr::from(read_u32(b, at)?)))
    };
    Ok(Ip {
        src: addr(12)?,
        dst: addr(16)?,
        proto: byte(b, 9)?,
        fragment,
        payload: b.get(header_len..end).ok_or(Malformed)?,
    })
}

/// RFC 8200 §3–§4: the fixed header, then the extension headers a packet
/// to us may carry, to find the upper-layer protocol.
fn parse_ipv6(b: &[u8], mode: Mode) -> Result<Ip<'_>, Malformed> {
    if b.len() < 40 {
        return Err(Malformed);
    }
    let end = packet_end(b, 40 + usize::from(read_u16(b, 4)?), mode)?;
    let addr = |at: usize| -> Result<IpAddr, Malformed> {
        let octets: [u8; 16] = b
            .get(at..at + 16)
            .and_then(|s| s.try_into().ok())
            .ok_or(Malformed)?;
        Ok(IpAddr::V6(Ipv6Addr::from(octets)))
    };
    let (src, dst) = (addr(8)?, addr(24)?);
    let b = &b[..end];
    let mut next = byte(b, 6)?;
    let mut at = 40;
    let mut fragment = None;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let len = match next {
            // Hop-by-Hop Options, Routing, Destination Options: length in
            // 8-octet units, not counting the first 8 (RFC 8200 §4.3–§4.6).
            0 | 43 | 60 => (usize::from(byte(b, at + 1)?) + 1) * 8,
            // Authentication Header: in 4-octet units, minus 2 (RFC 4302 §2.2).
            51 => (usize::from(byte(b, at + 1)?) + 2) * 4,
            // Fragment: 8 octets; offset in 8-octet units (RFC 8200 §4.5).
            44 => {
                let offset = read_u16(b, at + 2)? >> 3;
                fragment = Some(Fragment {
                    id: read_u32(b, at + 4)?,
                    first: offset == 0,
                });
                if offset != 0 {
                    // No upper-layer header here: the protocol is the
                    // fragment header's Next Header.
                    let proto = byte(b, at)?;
                    return Ok(Ip {
                        src,
                        dst,
                        proto,
                        fragment,
                        payload: &[],
                    });
                }
                8
            }
            _ => {
                return Ok(Ip {
                    src,
                    dst,
                    proto: next,
                    fragment,
                    payload: b.get(at..).ok_or(Malformed)?,
                });
            }
        };
        next = byte(b, at)?;
        at += len;
        if at > b.len() {
            return Err(Malformed);
        }
    }
    Err(Malformed)
}

/// What the filter reads past the IP headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// TCP or UDP.
    Ports { src: u16, dst: u16, tcp_flags: u8 },
    /// ICMP Echo (RFC 792) or ICMPv6 Echo (RFC 4443 §4).
    Echo { id: u16, request: bool },
    /// An ICMP error about a packet this node sent, as the flow that
    /// packet belongs to (`None` when the quote is unreadable).
    Error { quoted: Option<FlowKey> },
    /// A non-first fragment: its transport header is in the first.
    LaterFragment,
    /// Another ICMP message or another protocol.
    Other,
}

impl Transport {
    /// The destination port for the rules: TCP and UDP only.
    pub fn dst_port(self) -> Option<u16> {
        match self {
            Transport::Ports { dst, .. } => Some(dst),
            _ => None,
        }
    }
}

/// TCP flags (RFC 9293 §3.1).
pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_RST: u8 = 0x04;

impl Ip<'_> {
    pub fn transport(&self, mode: Mode) -> Result<Transport, Malformed> {
        if self.fragment.is_some_and(|f| !f.first) {
            return Ok(Transport::LaterFragment);
        }
        let p = self.payload;
        let whole = mode == Mode::Whole;
        match self.proto {
            Proto::TCP => {
                if whole && p.len() < 20 {
                    return Err(Malformed);
                }
                Ok(Transport::Ports {
                    src: read_u16(p, 0)?,
                    dst: read_u16(p, 2)?,
                    tcp_flags: p.get(13).copied().unwrap_or(0),
                })
            }
            Proto::UDP => {
                if whole && p.len() < 8 {
                    return Err(Malformed);
                }
                Ok(Transport::Ports {
                    src: read_u16(p, 0)?,
                    dst: read_u16(p, 2)?,
                    tcp_flags: 0,
                })
            }
            Proto::ICMP | Proto::ICMPV6 => {
                if whole && p.len() < 8 {
                    return Err(Malformed);
                }
                let kind = byte(p, 0)?;
                let v6 = self.proto == Proto::ICMPV6;
                let echo = match (v6, kind) {
                    (false, 8) | (true, 128) => Some(true),
                    (false, 0) | (true, 129) => Some(false),
                    _ => None,
                };
                if let Some(request) = echo {
                    return Ok(Transport::Echo {
                        id: read_u16(p, 4)?,
                        request,
                    });
                }
                // Destination Unreachable, Source Quench, Time Exceeded,
                // Parameter Problem (RFC 792); Destination Unreachable,
                // Packet Too Big, Time Exceeded, Parameter Problem (RFC
                // 4443 §3). Not inside a quote: an error about an error is
                // never sent (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)).
                let error = if v6 {
                    (1..=4).contains(&kind)
                } else {
                    matches!(kind, 3 | 4 | 11 | 12)
                };
                if error && whole {
                    let quoted = p
                        .get(8..)
                        .and_then(|q| parse_ip(q, Mode::Quoted).ok())
                        .and_then(|ip| Some((ip, ip.transport(Mode::Quoted).ok()?)))
                        .and_then(|(ip, t)| FlowKey::outbound(&ip, t));
                    return Ok(Transport::Error { quoted });
                }
                Ok(Transport::Other)
            }
            _ => Ok(Transport::Other),
        }
    }
}

/// A flow as this node sees it: what it sent from `local` to `remote`.
/// ICMP echo flows use the identifier as `local_port` and 0 as
/// `remote_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub proto: u8,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub local_port: u16,
    pub remote_port: u16,
}

impl FlowKey {
    /// The flow of a packet this node sends, if it opens or continues one
    /// whose replies are let in: TCP, UDP, and echo requests.
    pub fn outbound(ip: &Ip<'_>, t: Transport) -> Option<Self> {
        let (local_port, remote_port) = match t {
            Transport::Ports { src, dst, .. } => (src, dst),
            Transport::Echo { id, request: true } => (id, 0),
            _ => return None,
        };
        Some(Self {
            proto: ip.proto,
            local: ip.src,
            remote: ip.dst,
            local_port,
            remote_port,
        })
    }

    /// The flow a received packet would answer: TCP, UDP, echo replies,
    /// and ICMP errors about a packet this node (its destination) sent.
    pub fn inbound(ip: &Ip<'_>, t: Transport) -> Option<Self> {
        let (local_port, remote_port) = match t {
            Transport::Ports { src, dst, .. } => (dst, src),
            Transport::Echo { id, request: false } => (id, 0),
            Transport::Error { quoted: Some(k) } if k.local == ip.dst => return Some(k),
            _ => return None,
        };
        Some(Self {
            proto: ip.proto,
            local: ip.dst,
            remote: ip.src,
            local_port,
            remote_port,
        })
    }
}
