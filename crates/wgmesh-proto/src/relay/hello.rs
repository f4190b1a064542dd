//! The client hello's proof: that the node holds the private key of the
//! public key it registers, and that the hello was made for this relay,
//! now.
//!
//! The key is BLAKE2s("wgmesh relay v1" ‖ X25519(node, relay) ‖ node key ‖
//! relay key): static-static, as disco's pair key ([`crate::disco::seal`]),
//! known only to the node and the relay. The tag is XChaCha20-Poly1305's
//! over an empty message, with every byte of the hello before the tag
//! (type, version, node key, unix ms, nonce) as associated data, under the
//! hello's random 24-byte nonce.
//!
//! Replays: the relay refuses a hello whose clock is more than
//! [`MAX_SKEW_MS`] from its own, and one whose nonce it has seen within
//! [`REPLAY_WINDOW_MS`] (longer than the skew both ways, so a replay is
//! caught by one check or the other). Nonces are remembered only once the
//! tag verified, so strangers cannot fill the memory.
//!
//! It does not own membership or registration: that is [`super::core`].

use std::collections::{HashMap, VecDeque};

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use wgmesh_core::key::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

use super::wire::{CLIENT_HELLO_SIGNED_LEN, ClientHello, Frame, VERSION};

/// How far a hello's clock may be from the relay's.
pub const MAX_SKEW_MS: u64 = 120_000;
/// How long seen nonces are remembered.
pub const REPLAY_WINDOW_MS: u64 = 2 * MAX_SKEW_MS + 10_000;
/// Most nonces remembered; the oldest go first.
const MAX_SEEN: usize = 65_536;

/// Why a hello was not accepted (or could not be made).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    #[error("the tag does not verify")]
    BadProof,
    #[error("replayed hello")]
    Replayed,
    #[error("hello clock {skew_ms} ms away from ours")]
    ClockSkew { skew_ms: u64 },
    #[error("unsupported relay protocol version {0}")]
    Version(u8),
    #[error("key gives no shared secret (low-order point)")]
    WeakKey,
}

/// The hello key between `node` (whose side holds `secret`) and the
/// relay; `secret` is either side's private key, `peer` the other's public.
fn hello_key(
    secret: &PrivateKey,
    peer: &PublicKey,
    node: &PublicKey,
    relay: &PublicKey,
) -> Result<Zeroizing<[u8; 32]>, HelloError> {
    let s = x25519_dalek::StaticSecret::from(*secret.as_bytes());
    let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(*peer.as_bytes()));
    if !shared.was_contributory() {
        return Err(HelloError::WeakKey);
    }
    let mut h = Blake2s256::new();
    h.update(b"wgmesh relay v1");
    h.update(shared.as_bytes());
    h.update(node.as_bytes());
    h.update(relay.as_bytes());
    Ok(Zeroizing::new(h.finalize().into()))
}

fn signed_bytes(h: &ClientHello) -> Vec<u8> {
    let mut b = Vec::with_capacity(CLIENT_HELLO_SIGNED_LEN + 16);
    Frame::ClientHello(*h).emit(&mut b);
    b.truncate(CLIENT_HELLO_SIGNED_LEN);
    b
}

/// The node's side: the key derived once, hellos made on demand.
#[derive(Clone)]
pub struct HelloSealer {
    node: PublicKey,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for HelloSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelloSealer")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl HelloSealer {
    pub fn new(node: &PrivateKey, relay: &PublicKey) -> Result<Self, HelloError> {
        let public = node.public_key();
        Ok(Self {
            node: public,
            key: hello_key(node, relay, &public, relay)?,
        })
    }

    pub fn node(&self) -> PublicKey {
        self.node
    }

    /// A hello at wall-clock `unix_ms` with a fresh random `nonce`.
    pub fn hello(&self, unix_ms: u64, nonce: [u8; 24]) -> ClientHello {
        let mut h = ClientHello {
            version: VERSION,
            node: self.node,
            unix_ms,
            nonce,
            tag: [0; 16],
        };
        let aead = XChaCha20Poly1305::new(self.key.as_slice().into());
        let tag = aead
            .encrypt_in_place_detached(XNonce::from_slice(&nonce), &signed_bytes(&h), &mut [])
            .expect("invariant: an empty message is within XChaCha20-Poly1305's limits");
        h.tag.copy_from_slice(&tag);
        h
    }
}

/// The relay's side: its key, the hello keys derived so far, the nonces
/// seen.
pub struct HelloVerifier {
    private: PrivateKey,
    public: PublicKey,
    keys: HashMap<PublicKey, Zeroizing<[u8; 32]>>,
    seen: HashMap<[u8; 24], u64>,
    seen_order: VecDeque<([u8; 24], u64)>,
}

impl std::fmt::Debug for HelloVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelloVerifier")
            .field("public", &self.public)
            .field("keys", &self.keys.len())
            .field("seen", &self.seen.len())
            .finish_non_exhaustive()
    }
}

impl HelloVerifier {
    pub fn new(private: PrivateKey) -> Self {
        let public = private.public_key();
        Self {
            private,
            public,
            keys: HashMap::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Forgets a node's derived key (it left the network).
    pub fn forget(&mut self, node: &PublicKey) {
        self.keys.remove(node);
    }

    /// Checks `h` at wall-clock `now_ms`: version, tag, clock, nonce. The
    /// caller has checked membership first (so strangers cost no X25519).
    pub fn verify(&mut self, now_ms: u64, h: &ClientHello) -> Result<(), HelloError> {
        if h.version != VERSION {
            return Err(HelloError::Version(h.version));
        }
        if !self.keys.contains_key(&h.node) {
            let key = hello_key(&self.private, &h.node, &h.node, &self.public)?;
            self.keys.insert(h.node, key);
        }
        let key = self.keys.get(&h.node).expect("invariant: inserted above");
        let aead = XChaCha20Poly1305::new(key.as_slice().into());
        aead.decrypt_in_place_detached(
            XNonce::from_slice(&h.nonce),
            &signed_bytes(h),
            &mut [],
            Tag::from_slice(&h.tag),
        )
        .map_err(|_| HelloError::BadProof)?;
        self.expire(now_ms);
        if self.seen.contains_key(&h.nonce) {
            return Err(HelloError::Replayed);
        }
        let skew_ms = h.unix_ms.abs_diff(now_ms);
        if skew_ms > MAX_SKEW_MS {
            return Err(HelloError::ClockSkew { skew_ms });
        }
        self.seen.insert(h.nonce, now_ms);
        self.seen_order.push_back((h.nonce, now_ms));
        Ok(())
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((nonce, at)) = self.seen_order.front().copied() {
            if now_ms.saturating_sub(at) <= REPLAY_WINDOW_MS && self.seen_order.len() < MAX_SEEN {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&nonce);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PrivateKey {
        PrivateKey::from_random([b; 32])
    }

    const T: u64 = 1_764_000_000_000;

    #[test]
    fn a_hello_verifies_once() {
        let relay = key(1);
        let node = key(2);
        let sealer = HelloSealer::new(&node, &relay.public_key()).unwrap();
        let mut v = HelloVerifier::new(relay);
        let h = sealer.hello(T, [9; 24]);
        assert_eq!(v.verify(T + 5, &h), Ok(()));
        assert_eq!(v.verify(T + 6, &h), Err(HelloError::Replayed));
        // A fresh nonce is fine again.
        assert_eq!(v.verify(T + 7, &sealer.hello(T + 7, [10; 24])), Ok(()));
    }

    #[test]
    fn the_wire_form_verifies() {
        let relay = key(1);
        let sealer = HelloSealer::new(&key(2), &relay.public_key()).unwrap();
        let bytes = Frame::ClientHello(sealer.hello(T, [3; 24]))
            .to_vec()
            .unwrap();
        let Frame::ClientHello(h) = Frame::parse(&bytes).unwrap() else {
            panic!("not a hello")
        };
        assert_eq!(HelloVerifier::new(relay).verify(T, &h), Ok(()));
    }

    #[test]
    fn forged_hellos_fail() {
        let relay = key(1);
        let node = key(2);
        let mut v = HelloVerifier::new(relay.clone());
        // Someone else's key claiming to be `node`.
        let mallory = HelloSealer::new(&key(3), &relay.public_key()).unwrap();
        let mut h = mallory.hello(T, [1; 24]);
        h.node = node.public_key();
        assert_eq!(v.verify(T, &h), Err(HelloError::BadProof));
        // Made for another relay.
        let other = HelloSealer::new(&node, &key(4).public_key()).unwrap();
        assert_eq!(
            v.verify(T, &other.hello(T, [2; 24])),
            Err(HelloError::BadProof)
        );
        // Any changed byte.
        let good = HelloSealer::new(&node, &relay.public_key()).unwrap();
        let mut h = good.hello(T, [5; 24]);
        h.unix_ms += 1;
        assert_eq!(v.verify(T, &h), Err(HelloError::BadProof));
        let mut h = good.hello(T, [6; 24]);
        h.tag[0] ^= 1;
        assert_eq!(v.verify(T, &h), Err(HelloError::BadProof));
        let mut h = good.hello(T, [7; 24]);
        h.version = 2;
        assert_eq!(v.verify(T, &h), Err(HelloError::Version(2)));
        // A forged one does not burn the nonce for the real holder.
        assert_eq!(v.verify(T, &good.hello(T, [1; 24])), Ok(()));
    }

    #[test]
    fn clock_skew_is_refused() {
        let relay = key(1);
        let sealer = HelloSealer::new(&key(2), &relay.public_key()).unwrap();
        let mut v = HelloVerifier::new(relay);
        assert_eq!(
            v.verify(T + MAX_SKEW_MS + 1, &sealer.hello(T, [1; 24])),
            Err(HelloError::ClockSkew {
                skew_ms: MAX_SKEW_MS + 1
            })
        );
        assert_eq!(
            v.verify(T - MAX_SKEW_MS - 1, &sealer.hello(T, [2; 24])),
            Err(HelloError::ClockSkew {
                skew_ms: MAX_SKEW_MS + 1
            })
        );
        assert_eq!(v.verify(T + MAX_SKEW_MS, &sealer.hello(T, [3; 24])), Ok(()));
    }

    #[test]
    fn low_order_keys_are_refused() {
        let relay = key(1);
        assert_eq!(
            HelloSealer::new(&key(2), &PublicKey::from_bytes([0; 32])).err(),
            Some(HelloError::WeakKey)
        );
        let mut v = HelloVerifier::new(relay);
        let h = ClientHello {
            version: VERSION,
            node: PublicKey::from_bytes([0; 32]),
            unix_ms: T,
            nonce: [0; 24],
            tag: [0; 16],
        };
        assert_eq!(v.verify(T, &h), Err(HelloError::WeakKey));
    }
}
