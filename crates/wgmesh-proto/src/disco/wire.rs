//! Disco messages and their bytes.
//!
//! A datagram is `MAGIC (8) | sender public key (32) | nonce (24) |
//! sealed payload`; the payload, once opened ([`super::seal`]), is one
//! message:
//!
//! | type | message | body |
//! |------|---------|------|
//! | 1 | ping | tx id (12), sent at (u64 unix ms) |
//! | 2 | pong | tx id (12), the ping's source as the receiver saw it (addr) |
//! | 3 | call me maybe | sent at (u64 unix ms), count (u8 ≤ 16), addrs |
//!
//! An addr is a family byte (4 or 6), the address (4 or 16 bytes) and the
//! port (u16), all in network byte order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The first bytes of every disco datagram. The first, 0xD1, is neither a
/// WireGuard message type (1–4) nor a STUN first byte (< 0x40).
pub const MAGIC: [u8; 8] = [0xD1, b'W', b'G', b'M', b'D', b'I', b'S', b'C'];

/// Most endpoints a call-me-maybe carries.
pub const MAX_ENDPOINTS: usize = 16;

const PING: u8 = 1;
const PONG: u8 = 2;
const CALL_ME_MAYBE: u8 = 3;

/// One disco message, opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// "Are you there, on this path?" Answered with a pong to its source.
    Ping { tx: [u8; 12], sent_at_ms: u64 },
    /// The answer to the ping with `tx`, telling the pinger the address
    /// its ping came from (its address on this path, as STUN would).
    Pong { tx: [u8; 12], observed: SocketAddr },
    /// "Ping me on these now": sent through the relay or the control
    /// stream, so that both sides send at the same moment and each side's
    /// first packet opens its own NAT for the other's.
    CallMeMaybe {
        sent_at_ms: u64,
        endpoints: Vec<SocketAddr>,
    },
}

/// Why bytes are not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("truncated disco message")]
    Truncated,
    #[error("unknown disco message type {0}")]
    UnknownType(u8),
    #[error("unknown address family {0}")]
    BadFamily(u8),
    #[error("call-me-maybe with {0} endpoints (at most 16)")]
    TooManyEndpoints(usize),
    #[error("trailing bytes after a disco message")]
    Trailing,
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// A cursor that never reads past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn addr(&mut self) -> Result<SocketAddr, WireError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            f => return Err(WireError::BadFamily(f)),
        };
        let port = u16::from_be_bytes(self.array()?);
        Ok(SocketAddr::new(ip, port))
    }
}

impl Message {
    /// The plaintext payload.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Message::Ping { tx, sent_at_ms } => {
                out.push(PING);
                out.extend_from_slice(tx);
                out.extend_from_slice(&sent_at_ms.to_be_bytes());
            }
            Message::Pong { tx, observed } => {
                out.push(PONG);
                out.extend_from_slice(tx);
                put_addr(&mut out, *observed);
            }
            Message::CallMeMaybe {
                sent_at_ms,
                endpoints,
            } => {
                out.push(CALL_ME_MAYBE);
                out.extend_from_slice(&sent_at_ms.to_be_bytes());
                let n = endpoints.len().min(MAX_ENDPOINTS);
                out.push(n as u8);
                for e in &endpoints[..n] {
                    put_addr(&mut out, *e);
                }
            }
        }
        out
    }

    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader(payload);
        let msg = match r.u8()? {
            PING => Message::Ping {
                tx: r.array()?,
                sent_at_ms: r.u64()?,
            },
            PONG => Message::Pong {
                tx: r.array()?,
                observed: r.addr()?,
            },
            CALL_ME_MAYBE => {
                let sent_at_ms = r.u64()?;
                let n = usize::from(r.u8()?);
                if n > MAX_ENDPOINTS {
                    return Err(WireError::TooManyEndpoints(n));
                }
                let mut endpoints = Vec::with_capacity(n);
                for _ in 0..n {
                    endpoints.push(r.addr()?);
                }
                Message::CallMeMaybe {
                    sent_at_ms,
                    endpoints,
                }
            }
            t => return Err(WireError::UnknownType(t)),
        };
        if !r.0.is_empty() {
            return Err(WireError::Trailing);
        }
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_bytes() {
        let ping = Message::Ping {
            tx: [0xAA; 12],
            sent_at_ms: 0x0102030405060708,
        };
        let mut want = vec![1];
        want.extend([0xAA; 12]);
        want.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(ping.emit(), want);

        let pong = Message::Pong {
            tx: [0xBB; 12],
            observed: "198.51.100.10:51820".parse().unwrap(),
        };
        let mut want = vec![2];
        want.extend([0xBB; 12]);
        want.extend([4, 198, 51, 100, 10, 0xCA, 0x6C]);
        assert_eq!(pong.emit(), want);

        let cmm = Message::CallMeMaybe {
            sent_at_ms: 1,
            endpoints: vec!["[2001:db8::1]:1".parse().unwrap()],
        };
        let mut want = vec![3, 0, 0, 0, 0, 0, 0, 0, 1, 1, 6];
        want.extend([
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1,
        ]);
        assert_eq!(cmm.emit(), want);
        for m in [ping, pong, cmm] {
            assert_eq!(Message::parse(&m.emit()).unwrap(), m);
        }
    }

    #[test]
    fn bad_payloads_are_typed_errors() {
        assert_eq!(Message::parse(&[]), Err(WireError::Truncated));
        assert_eq!(Message::parse(&[9]), Err(WireError::UnknownType(9)));
        assert_eq!(Message::parse(&[1, 0]), Err(WireError::Truncated));
        let mut pong = vec![2];
        pong.extend([0; 12]);
        pong.push(5);
        assert_eq!(Message::parse(&pong), Err(WireError::BadFamily(5)));
        let mut cmm = vec![3, 0, 0, 0, 0, 0, 0, 0, 0, 17];
        cmm.extend([0; 7 * 17]);
        assert_eq!(Message::parse(&cmm), Err(WireError::TooManyEndpoints(17)));
        let mut ping = Message::Ping {
            tx: [0; 12],
            sent_at_ms: 0,
        }
        .emit();
        ping.push(0);
        assert_eq!(Message::parse(&ping), Err(WireError::Trailing));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = Message::parse(&bytes);
        }
    }
}
