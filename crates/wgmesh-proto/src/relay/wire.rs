//! Relay frames and their bytes.
//!
//! One frame per UDP datagram or per WebSocket binary message. The first
//! byte is the frame type, from 0xE1 up: never a WireGuard message type
//! (1–4 followed by three zero bytes), never a STUN first byte (< 0x40,
//! RFC 8489 §5), never disco's 0xD1 — so the relay's UDP port, and a
//! node's one socket, tell them apart by that byte alone ([`is_relay`]).
//!
//! | type | frame | direction | body |
//! |------|-------|-----------|------|
//! | 0xE1 | client hello | node → relay | version (1), node key (32), unix ms (u64), nonce (24), tag (16) |
//! | 0xE2 | server hello | relay → node | version (1) |
//! | 0xE3 | refused | relay → node | reason (1) |
//! | 0xE4 | send | node → relay | destination key (32), payload (1..) |
//! | 0xE5 | recv | relay → node | source key (32), payload (1..) |
//! | 0xE6 | keepalive | both | — |
//! | 0xE7 | peer gone | relay → node | key (32) |
//!
//! Integers are big-endian. The payload is opaque (a WireGuard or disco
//! datagram) and is never looked at: the relay reads the 33-byte header
//! and copies the rest.

use wgmesh_core::key::PublicKey;

/// The protocol version a hello carries.
pub const VERSION: u8 = 1;

pub const CLIENT_HELLO: u8 = 0xE1;
pub const SERVER_HELLO: u8 = 0xE2;
pub const REFUSED: u8 = 0xE3;
pub const SEND: u8 = 0xE4;
pub const RECV: u8 = 0xE5;
pub const KEEPALIVE: u8 = 0xE6;
pub const PEER_GONE: u8 = 0xE7;

/// The length of a client hello: type, version, key, time, nonce, tag.
pub const CLIENT_HELLO_LEN: usize = 1 + 1 + 32 + 8 + 24 + 16;
/// The bytes of a client hello its tag covers (everything before it).
pub const CLIENT_HELLO_SIGNED_LEN: usize = CLIENT_HELLO_LEN - 16;
/// The header of a send or recv frame: type and key.
pub const DATA_HEADER_LEN: usize = 1 + 32;
/// The largest frame: what one UDP datagram over IPv4 can carry
/// (65,535 − 20 − 8); WebSocket messages are held to the same.
pub const MAX_FRAME_LEN: usize = 65_507;
/// The largest payload of a send or recv frame.
pub const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN - DATA_HEADER_LEN;

/// Is this datagram a relay frame (by its first byte)? A cheap test for
/// demultiplexing; [`Frame::parse`] checks the rest.
pub fn is_relay(datagram: &[u8]) -> bool {
    matches!(datagram.first(), Some(CLIENT_HELLO..=PEER_GONE))
}

/// Why the relay refused a hello or a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The key is not an enrolled node of the network.
    NotMember,
    /// The hello's tag did not verify: not the key's holder, or not for
    /// this relay.
    BadProof,
    /// The hello's nonce was seen before.
    Replayed,
    /// The hello's clock is too far from the relay's.
    ClockSkew,
    /// A frame other than a hello from a session that has not said hello
    /// (or whose registration expired: say hello again).
    NotRegistered,
    /// A hello of a protocol version this relay does not speak.
    Version,
    /// A code this build does not know.
    Other(u8),
}

impl RefuseReason {
    pub fn code(self) -> u8 {
        match self {
            Self::NotMember => 1,
            Self::BadProof => 2,
            Self::Replayed => 3,
            Self::ClockSkew => 4,
            Self::NotRegistered => 5,
            Self::Version => 6,
            Self::Other(c) => c,
        }
    }

    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::NotMember,
            2 => Self::BadProof,
            3 => Self::Replayed,
            4 => Self::ClockSkew,
            5 => Self::NotRegistered,
            6 => Self::Version,
            c => Self::Other(c),
        }
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotMember => f.write_str("not a member of the network"),
            Self::BadProof => f.write_str("hello proof did not verify"),
            Self::Replayed => f.write_str("replayed hello"),
            Self::ClockSkew => f.write_str("hello clock too far from the relay's"),
            Self::NotRegistered => f.write_str("not registered (say hello first)"),
            Self::Version => f.write_str("unsupported protocol version"),
            Self::Other(c) => write!(f, "refused with code {c}"),
        }
    }
}

/// A client hello as it is on the wire; [`super::hello`] makes and checks
/// the tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello {
    pub version: u8,
    pub node: PublicKey,
    pub unix_ms: u64,
    pub nonce: [u8; 24],
    pub tag: [u8; 16],
}

/// One frame, parsed; payloads borrow the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    ClientHello(ClientHello),
    ServerHello { version: u8 },
    Refused(RefuseReason),
    Send { to: PublicKey, payload: &'a [u8] },
    Recv { from: PublicKey, payload: &'a [u8] },
    Keepalive,
    PeerGone(PublicKey),
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("empty relay frame")]
    Empty,
    #[error("unknown relay frame type {0:#04x}")]
    UnknownType(u8),
    #[error("truncated relay frame (type {kind:#04x}): {got} bytes, {needed} needed")]
    Truncated { kind: u8, needed: usize, got: usize },
    #[error("relay frame (type {kind:#04x}) with {extra} trailing bytes")]
    Trailing { kind: u8, extra: usize },
    #[error("relay frame of {0} bytes, more than {MAX_FRAME_LEN}")]
    TooLong(usize),
    #[error("relay data frame with an empty payload")]
    EmptyPayload,
}

fn key_at(b: &[u8], at: usize) -> PublicKey {
    let mut k = [0u8; 32];
    k.copy_from_slice(&b[at..at + 32]);
    PublicKey::from_bytes(k)
}

fn exact(b: &[u8], kind: u8, len: usize) -> Result<(), FrameError> {
    if b.len() < len {
        return Err(FrameError::Truncated {
            kind,
            needed: len,
            got: b.len(),
        });
    }
    if b.len() > len {
        return Err(FrameError::Trailing {
            kind,
            extra: b.len() - len,
        });
    }
    Ok(())
}

impl<'a> Frame<'a> {
    /// Parses one frame; every length is checked, nothing panics.
    pub fn parse(b: &'a [u8]) -> Result<Self, FrameError> {
        let Some(&kind) = b.first() else {
            return Err(FrameError::Empty);
        };
        if b.len() > MAX_FRAME_LEN {
            return Err(FrameError::TooLong(b.len()));
        }
        match kind {
            CLIENT_HELLO => {
                exact(b, kind, CLIENT_HELLO_LEN)?;
                let mut unix = [0u8; 8];
                unix.copy_from_slice(&b[34..42]);
                let mut nonce = [0u8; 24];
                nonce.copy_from_slice(&b[42..66]);
                let mut tag = [0u8; 16];
                tag.copy_from_slice(&b[66..82]);
                Ok(Frame::ClientHello(ClientHello {
                    version: b[1],
                    node: key_at(b, 2),
                    unix_ms: u64::from_be_bytes(unix),
                    nonce,
                    tag,
                }))
            }
            SERVER_HELLO => {
                exact(b, kind, 2)?;
                Ok(Frame::ServerHello { version: b[1] })
            }
            REFUSED => {
                exact(b, kind, 2)?;
                Ok(Frame::Refused(RefuseReason::from_code(b[1])))
            }
            SEND | RECV => {
                if b.len() < DATA_HEADER_LEN {
                    return Err(FrameError::Truncated {
                        kind,
                        needed: DATA_HEADER_LEN + 1,
                        got: b.len(),
                    });
                }
                let key = key_at(b, 1);
                let payload = &b[DATA_HEADER_LEN..];
                if payload.is_empty() {
                    return Err(FrameError::EmptyPayload);
                }
                Ok(if kind == SEND {
                    Frame::Send { to: key, payload }
                } else {
                    Frame::Recv { from: key, payload }
                })
            }
            KEEPALIVE => {
                exact(b, kind, 1)?;
                Ok(Frame::Keepalive)
            }
            PEER_GONE => {
                exact(b, kind, 33)?;
                Ok(Frame::PeerGone(key_at(b, 1)))
            }
            other => Err(FrameError::UnknownType(other)),
        }
    }

    /// The bytes [`Frame::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Frame::ClientHello(_) => CLIENT_HELLO_LEN,
            Frame::ServerHello { .. } | Frame::Refused(_) => 2,
            Frame::Send { payload, .. } | Frame::Recv { payload, .. } => {
                DATA_HEADER_LEN + payload.len()
            }
            Frame::Keepalive => 1,
            Frame::PeerGone(_) => 33,
        }
    }

    /// Appends the frame's bytes to `out`. A payload longer than
    /// [`MAX_PAYLOAD_LEN`] or empty is the caller's error: [`Frame::to_vec`]
    /// refuses it.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.reserve(self.buffer_len());
        match self {
            Frame::ClientHello(h) => {
                out.push(CLIENT_HELLO);
                out.push(h.version);
                out.extend_from_slice(h.node.as_bytes());
                out.extend_from_slice(&h.unix_ms.to_be_bytes());
                out.extend_from_slice(&h.nonce);
                out.extend_from_slice(&h.tag);
            }
            Frame::ServerHello { version } => out.extend_from_slice(&[SERVER_HELLO, *version]),
            Frame::Refused(r) => out.extend_from_slice(&[REFUSED, r.code()]),
            Frame::Send { to, payload } => {
                out.push(SEND);
                out.extend_from_slice(to.as_bytes());
                out.extend_from_slice(payload);
            }
            Frame::Recv { from, payload } => {
                out.push(RECV);
                out.extend_from_slice(from.as_bytes());
                out.extend_from_slice(payload);
            }
            Frame::Keepalive => out.push(KEEPALIVE),
            Frame::PeerGone(k) => {
                out.push(PEER_GONE);
                out.extend_from_slice(k.as_bytes());
            }
        }
    }

    /// The frame's bytes, if it is one [`Frame::parse`] would accept.
    pub fn to_vec(&self) -> Result<Vec<u8>, FrameError> {
        if let Frame::Send { payload, .. } | Frame::Recv { payload, .. } = self {
            if payload.is_empty() {
                return Err(FrameError::EmptyPayload);
            }
            if payload.len() > MAX_PAYLOAD_LEN {
                return Err(FrameError::TooLong(DATA_HEADER_LEN + payload.len()));
            }
        }
        let mut out = Vec::with_capacity(self.buffer_len());
        self.emit(&mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn send_bytes() {
        let bytes = hex(&format!("e4 {} 01 00 00 00 aa", "11".repeat(32)));
        let f = Frame::parse(&bytes).unwrap();
        assert_eq!(
            f,
            Frame::Send {
                to: key(0x11),
                payload: &[1, 0, 0, 0, 0xaa]
            }
        );
        assert_eq!(f.to_vec().unwrap(), bytes);
    }

    #[test]
    fn recv_bytes() {
        let bytes = hex(&format!("e5 {} 04 00 00 00", "22".repeat(32)));
        assert_eq!(
            Frame::parse(&bytes).unwrap(),
            Frame::Recv {
                from: key(0x22),
                payload: &[4, 0, 0, 0]
            }
        );
    }

    #[test]
    fn client_hello_bytes() {
        let bytes = hex(&format!(
            "e1 01 {} 0000 0193 0000 0001 {} {}",
            "33".repeat(32),
            "44".repeat(24),
            "55".repeat(16)
        ));
        assert_eq!(bytes.len(), CLIENT_HELLO_LEN);
        let f = Frame::parse(&bytes).unwrap();
        assert_eq!(
            f,
            Frame::ClientHello(ClientHello {
                version: 1,
                node: key(0x33),
                unix_ms: 0x0193_0000_0001,
                nonce: [0x44; 24],
                tag: [0x55; 16],
            })
        );
        assert_eq!(f.to_vec().unwrap(), bytes);
    }

    #[test]
    fn small_frames_bytes() {
        assert_eq!(
            Frame::parse(&[0xe2, 0x01]).unwrap(),
            Frame::ServerHello { version: 1 }
        );
        assert_eq!(
            Frame::parse(&[0xe3, 0x01]).unwrap(),
            Frame::Refused(RefuseReason::NotMember)
        );
        assert_eq!(
            Frame::parse(&[0xe3, 0x63]).unwrap(),
            Frame::Refused(RefuseReason::Other(0x63))
        );
        assert_eq!(Frame::parse(&[0xe6]).unwrap(), Frame::Keepalive);
        let mut gone = vec![0xe7];
        gone.extend_from_slice(&[0x66; 32]);
        assert_eq!(Frame::parse(&gone).unwrap(), Frame::PeerGone(key(0x66)));
        for r in [
            RefuseReason::NotMember,
            RefuseReason::BadProof,
            RefuseReason::Replayed,
            RefuseReason::ClockSkew,
            RefuseReason::NotRegistered,
            RefuseReason::Version,
        ] {
            assert_eq!(RefuseReason::from_code(r.code()), r);
        }
    }

    #[test]
    fn bad_frames_have_typed_errors() {
        assert_eq!(Frame::parse(&[]), Err(FrameError::Empty));
        assert_eq!(
            Frame::parse(&[0x01, 0, 0, 0]),
            Err(FrameError::UnknownType(1))
        );
        assert_eq!(Frame::parse(&[0xd1]), Err(FrameError::UnknownType(0xd1)));
        assert_eq!(
            Frame::parse(&[0xe6, 0]),
            Err(FrameError::Trailing {
                kind: 0xe6,
                extra: 1
            })
        );
        assert_eq!(
            Frame::parse(&[0xe1, 1, 2]),
            Err(FrameError::Truncated {
                kind: 0xe1,
                needed: CLIENT_HELLO_LEN,
                got: 3
            })
        );
        assert_eq!(
            Frame::parse(&[0xe4; 10]),
            Err(FrameError::Truncated {
                kind: 0xe4,
                needed: 34,
                got: 10
            })
        );
        assert_eq!(Frame::parse(&[0xe4; 33]), Err(FrameError::EmptyPayload));
        assert_eq!(
            Frame::parse(&vec![0xe4; MAX_FRAME_LEN + 1]),
            Err(FrameError::TooLong(MAX_FRAME_LEN + 1))
        );
        let big = vec![7u8; MAX_PAYLOAD_LEN + 1];
        assert!(
            Frame::Send {
                to: key(1),
                payload: &big
            }
            .to_vec()
            .is_err()
        );
    }

    #[test]
    fn never_wireguard_stun_or_disco() {
        // WireGuard's four message types, each followed by three zeros.
        for t in 1u8..=4 {
            assert!(!is_relay(&[t, 0, 0, 0, 9, 9]));
        }
        assert!(!is_relay(&crate::disco::MAGIC));
        let stun = crate::stun::binding_request(crate::stun::TransactionId([7; 12]));
        assert!(!is_relay(&stun));
        for t in CLIENT_HELLO..=PEER_GONE {
            assert!(is_relay(&[t]));
            assert!(!crate::stun::is_stun(&[t; 20]));
            assert!(!crate::disco::is_disco(&[t; 8]));
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = Frame::parse(&bytes);
        }

        #[test]
        fn parse_typed_never_panics(kind in 0xE0u8..=0xE8, rest in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..100)) {
            let mut b = vec![kind];
            b.extend(rest);
            if let Ok(f) = Frame::parse(&b) {
                proptest::prop_assert_eq!(f.to_vec().unwrap(), b);
            }
        }

        #[test]
        fn data_round_trips(k in proptest::prelude::any::<[u8; 32]>(), payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300)) {
            let f = Frame::Send { to: PublicKey::from_bytes(k), payload: &payload };
            let bytes = f.to_vec().unwrap();
            proptest::prop_assert_eq!(Frame::parse(&bytes).unwrap(), f);
        }
    }
}
