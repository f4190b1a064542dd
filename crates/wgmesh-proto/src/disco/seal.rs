//! Sealing disco messages with the nodes' own WireGuard keys.
//!
//! The key for a pair of nodes is BLAKE2s("wgmesh disco v1" ‖ X25519(a, B)
//! ‖ the two public keys, lower first): static-static, the same both ways,
//! known only to the two key holders. Each message is sealed with
//! XChaCha20-Poly1305 under a fresh random 24-byte nonce (random nonces
//! are safe at that size), with the magic and the sender's key as
//! associated data, so a sender cannot be swapped.
//!
//! Replays: a nonce seen in the last [`REPLAY_WINDOW_MS`] is refused, and
//! pings and call-me-maybes carry the sender's wall-clock time, refused
//! when further than [`MAX_SKEW_MS`] from ours (so a replay older than the
//! nonce memory is refused too; NTP-synchronised nodes are assumed). Pongs
//! carry the ping's transaction id, which the path manager accepts once.

use std::collections::{HashMap, VecDeque};

use blake2::{Blake2s256, Digest};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use wgmesh_core::key::{PrivateKey, PublicKey};
use zeroize::Zeroizing;

use super::wire::{MAGIC, Message, WireError};

/// How far a ping's or call-me-maybe's clock may be from ours.
pub const MAX_SKEW_MS: u64 = 120_000;
/// How long seen nonces are remembered (longer than the skew allowed both
/// ways, so a replay is caught by one check or the other).
pub const REPLAY_WINDOW_MS: u64 = 2 * MAX_SKEW_MS + 10_000;
/// Most nonces remembered; the oldest go first.
const MAX_SEEN: usize = 16_384;

const HEADER: usize = MAGIC.len() + 32 + 24;
const TAG: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoError {
    #[error("not a disco message")]
    NotDisco,
    #[error("disco message too short")]
    Truncated,
    #[error("disco message from a key that is not a peer")]
    UnknownSender,
    #[error("disco message failed authentication")]
    Unauthenticated,
    #[error("replayed disco message")]
    Replayed,
    #[error("disco message clock {skew_ms} ms away from ours")]
    Stale { skew_ms: u64 },
    #[error("peer key gives no shared secret (low-order point)")]
    WeakKey,
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// A message that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub from: PublicKey,
    pub message: Message,
}

/// This node's disco crypto: its key, the pair keys it has derived, and
/// the nonces it has seen.
pub struct DiscoKeys {
    private: PrivateKey,
    public: PublicKey,
    pair_keys: HashMap<PublicKey, Zeroizing<[u8; 32]>>,
    seen: HashMap<[u8; 24], u64>,
    seen_order: VecDeque<([u8; 24], u64)>,
}

impl std::fmt::Debug for DiscoKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoKeys")
            .field("public", &self.public)
            .field("pairs", &self.pair_keys.len())
            .finish_non_exhaustive()
    }
}

impl DiscoKeys {
    pub fn new(private: PrivateKey) -> Self {
        let public = private.public_key();
        Self {
            private,
            public,
            pair_keys: HashMap::new(),
            seen: HashMap::new(),
            seen_order: VecDeque::new(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Forgets a peer's pair key (it left the map).
    pub fn forget(&mut self, peer: &PublicKey) {
        self.pair_keys.remove(peer);
    }

    fn pair_key(&mut self, peer: &PublicKey) -> Result<XChaCha20Poly1305, DiscoError> {
        if !self.pair_keys.contains_key(peer) {
            let secret = x25519_dalek::StaticSecret::from(*self.private.as_bytes());
            let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*peer.as_bytes()));
            if !shared.was_contributory() {
                return Err(DiscoError::WeakKey);
            }
            let (lo, hi) = if self.public <= *peer {
                (self.public, *peer)
            } else {
                (*peer, self.public)
            };
            let mut h = Blake2s256::new();
            h.update(b"wgmesh disco v1");
            h.update(shared.as_bytes());
            h.update(lo.as_bytes());
            h.update(hi.as_bytes());
            let key: [u8; 32] = h.finalize().into();
            self.pair_keys.insert(*peer, Zeroizing::new(key));
        }
        let key = self.pair_keys.get(peer).expect("invariant: inserted above");
        Ok(XChaCha20Poly1305::new(key.as_slice().into()))
    }

    /// Seals `msg` for `to`; `nonce` must be fresh random bytes.
    pub fn seal(
        &mut self,
        to: &PublicKey,
        msg: &Message,
        nonce: [u8; 24],
    ) -> Result<Vec<u8>, DiscoError> {
        let aead = self.pair_key(to)?;
        let mut out = Vec::with_capacity(HEADER + 64 + TAG);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(self.public.as_bytes());
        out.extend_from_slice(&nonce);
        let sealed = aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &msg.emit(),
                    aad: &out[..MAGIC.len() + 32],
                },
            )
            .map_err(|_| DiscoError::Unauthenticated)?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a datagram from a peer `is_peer` accepts, at wall-clock
    /// `now_ms` (unix milliseconds).
    pub fn open(
        &mut self,
        now_ms: u64,
        datagram: &[u8],
        is_peer: impl Fn(&PublicKey) -> bool,
    ) -> Result<Opened, DiscoError> {
        if !super::is_disco(datagram) {
            return Err(DiscoError::NotDisco);
        }
        if datagram.len() < HEADER + TAG + 1 {
            return Err(DiscoError::Truncated);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&datagram[MAGIC.len()..MAGIC.len() + 32]);
        let from = PublicKey::from_bytes(key);
        if from == self.public || !is_peer(&from) {
            return Err(DiscoError::UnknownSender);
        }
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&datagram[MAGIC.len() + 32..HEADER]);
        let aead = self.pair_key(&from)?;
        let plain = aead
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &datagram[HEADER..],
                    aad: &datagram[..MAGIC.len() + 32],
                },
            )
            .map_err(|_| DiscoError::Unauthenticated)?;
        let message = Message::parse(&plain)?;
        self.expire(now_ms);
        if self.seen.contains_key(&nonce) {
            return Err(DiscoError::Replayed);
        }
        if let Message::Ping { sent_at_ms, .. } | Message::CallMeMaybe { sent_at_ms, .. } = &message
        {
            let skew_ms = sent_at_ms.abs_diff(now_ms);
            if skew_ms > MAX_SKEW_MS {
                return Err(DiscoError::Stale { skew_ms });
            }
        }
        self.remember(nonce, now_ms);
        Ok(Opened { from, message })
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

    fn remember(&mut self, nonce: [u8; 24], now_ms: u64) {
        self.seen.insert(nonce, now_ms);
        self.seen_order.push_back((nonce, now_ms));
    }
}

#[cfg(test)]
mod tests;
