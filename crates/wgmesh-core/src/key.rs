//! WireGuard keys: Curve25519 private and public keys and preshared keys,
//! in the base64 text form that wg(8) reads and prints.
//!
//! Randomness is an input (the core does no IO): callers hand 32 random bytes
//! to [`PrivateKey::from_random`] / [`PresharedKey::from_random`].

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every WireGuard key, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a key in base64 (44 characters, one trailing `=`).
pub const KEY_B64_LEN: usize = 44;

/// Why a key's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("a key is 44 base64 characters, this is {0}")]
    Length(usize),
    #[error("not valid base64")]
    Base64,
    #[error("extra text after the key")]
    TrailingData,
}

/// Decodes the text form into `key`, exactly as strict as wg(8)'s
/// `key_from_base64`: 44 characters of the standard alphabet, the last one
/// `=`, the unused low bits of the last character zero, no whitespace.
///
/// Decoding goes through a stack buffer that is wiped afterwards, so no copy
/// of secret bytes is left behind on the heap or the stack.
fn decode(text: &str, key: &mut [u8; KEY_LEN]) -> Result<(), KeyError> {
    // 44 base64 characters may decode to up to 33 bytes; `decode_slice`
    // wants room for that estimate.
    let mut out = Zeroizing::new([0u8; KEY_LEN + 1]);
    let Some(head) = text.get(..KEY_B64_LEN) else {
        return Err(KeyError::Length(text.chars().count()));
    };
    let decoded = B64.decode_slice(head, &mut out[..]);
    if text.len() > KEY_B64_LEN {
        return Err(if matches!(decoded, Ok(KEY_LEN)) {
            KeyError::TrailingData
        } else {
            KeyError::Length(text.chars().count())
        });
    }
    match decoded {
        Ok(KEY_LEN) => {
            key.copy_from_slice(&out[..KEY_LEN]);
            Ok(())
        }
        _ => Err(KeyError::Base64),
    }
}

fn encode(bytes: &[u8; KEY_LEN]) -> String {
    B64.encode(bytes)
}

/// Compares two secrets without an early exit, so timing does not tell how
/// many leading bytes matched.
fn ct_eq(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Clamps a Curve25519 scalar as RFC 7748 §5 and wg(8)'s `genkey` do.
fn clamp(mut b: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
    b[0] &= 248;
    b[31] = (b[31] & 127) | 64;
    b
}

/// 32 secret bytes: zeroized on drop, compared in constant time, never shown.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct Secret32([u8; KEY_LEN]);

impl Secret32 {
    fn parse(text: &str) -> Result<Self, KeyError> {
        let mut secret = Self([0; KEY_LEN]);
        decode(text, &mut secret.0)?;
        Ok(secret)
    }

    fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(encode(&self.0))
    }
}

impl PartialEq for Secret32 {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}
impl Eq for Secret32 {}

/// The API the two secret key types share: `as_bytes`, `to_base64`,
/// `FromStr`, constant-time `==` and a `Debug` that never shows the key.
macro_rules! secret_key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
        pub struct $name(Secret32);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &(self.0).0
            }

            /// The base64 text form, wiped when dropped. Keep it short-lived.
            pub fn to_base64(&self) -> Zeroizing<String> {
                self.0.to_base64()
            }
        }

        impl FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, KeyError> {
                Secret32::parse(s).map(Self)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

secret_key! {
    /// A Curve25519 private key. Zeroized on drop; `Debug` never shows it.
    PrivateKey
}

impl PrivateKey {
    /// A new key from 32 bytes of OS randomness, clamped as `wg genkey` does.
    pub fn from_random(bytes: [u8; KEY_LEN]) -> Self {
        Self(Secret32(clamp(bytes)))
    }

    /// The key exactly as given (wg(8) does not clamp keys it reads either:
    /// clamping happens inside the scalar multiplication).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Secret32(bytes))
    }

    /// The matching public key: X25519(clamp(k), 9), as `wg pubkey` computes it.
    pub fn public_key(&self) -> PublicKey {
        // `StaticSecret` zeroizes itself on drop.
        let secret = x25519_dalek::StaticSecret::from(*self.as_bytes());
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

secret_key! {
    /// A preshared key (the optional `psk` of Noise IKpsk2). Zeroized on drop;
    /// `Debug` never shows it.
    PresharedKey
}

impl PresharedKey {
    /// A new key from 32 bytes of OS randomness, used as they are (`wg genpsk`).
    pub fn from_random(bytes: [u8; KEY_LEN]) -> Self {
        Self(Secret32(bytes))
    }
}

/// A Curve25519 public key: a node's identity on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        let mut key = [0; KEY_LEN];
        decode(s, &mut key)?;
        Ok(Self(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("bad public key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7748 §6.1: Alice's private key and the public key X25519 derives from it.
    const RFC7748_ALICE_PRIV: &str =
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const RFC7748_ALICE_PUB: &str =
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("test vector is hex");
        }
        out
    }

    #[test]
    fn rfc7748_public_key() {
        let k = PrivateKey::from_bytes(hex32(RFC7748_ALICE_PRIV));
        assert_eq!(k.public_key().as_bytes(), &hex32(RFC7748_ALICE_PUB));
    }

    #[test]
    fn base64_round_trip_and_wg_vector() {
        // A pair from wg(8): `echo sHp/… | wg pubkey` prints DArY….
        let k: PrivateKey = "sHp/p7VT4tGYRUb2BjD7RjdXX6zhlV0pbHZKo4RuPFU="
            .parse()
            .expect("valid key");
        assert_eq!(
            k.public_key().to_string(),
            "DArYwUz2QsVHmWjxy6ijBcgNu26sOyRACZt1vkYmIAs="
        );
        assert_eq!(
            k.to_base64().as_str(),
            "sHp/p7VT4tGYRUb2BjD7RjdXX6zhlV0pbHZKo4RuPFU="
        );
    }

    #[test]
    fn bad_text_is_refused_with_reason() {
        let good = "DArYwUz2QsVHmWjxy6ijBcgNu26sOyRACZt1vkYmIAs=";
        assert_eq!("abc".parse::<PublicKey>(), Err(KeyError::Length(3)));
        assert_eq!(
            format!("{good}x").parse::<PublicKey>(),
            Err(KeyError::TrailingData)
        );
        assert_eq!(
            format!("{good} junk").parse::<PublicKey>(),
            Err(KeyError::TrailingData)
        );
        let bad = good.replace('Y', "!");
        assert_eq!(bad.parse::<PublicKey>(), Err(KeyError::Base64));
        // 44 characters but encodes 33 bytes (no padding): wrong length.
        assert!(
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                .parse::<PublicKey>()
                .is_err()
        );
    }

    #[test]
    fn genkey_clamps_like_wg() {
        let k = PrivateKey::from_random([0xff; 32]);
        assert_eq!(k.as_bytes()[0] & 7, 0);
        assert_eq!(k.as_bytes()[31] & 0xc0, 0x40);
    }

    #[test]
    fn debug_never_shows_secrets() {
        let k = PrivateKey::from_random([7; 32]);
        let p = PresharedKey::from_random([7; 32]);
        for shown in [format!("{k:?}"), format!("{p:?}")] {
            assert!(shown.contains("redacted"));
            assert!(!shown.contains(k.to_base64().as_str()));
            assert!(!shown.contains(p.to_base64().as_str()));
        }
    }

    #[test]
    fn non_canonical_and_unpadded_text_is_refused_like_wg() {
        let good = "DArYwUz2QsVHmWjxy6ijBcgNu26sOyRACZt1vkYmIAs=";
        // The last character before '=' carries 4 bits of the key and 2
        // unused bits; wg's key_from_base64 refuses any unused bit set.
        let low_bits = format!("{}t=", &good[..42]);
        assert_eq!(low_bits.parse::<PublicKey>(), Err(KeyError::Base64));
        // Two '=' (a 31-byte key) and no '=' are refused too.
        assert_eq!(
            format!("{}==", &good[..42]).parse::<PublicKey>(),
            Err(KeyError::Base64)
        );
        // 43 characters, and a key with a space inside: wrong length / alphabet.
        assert_eq!(good[..43].parse::<PublicKey>(), Err(KeyError::Length(43)));
        assert_eq!(
            format!(" {}", &good[1..]).parse::<PublicKey>(),
            Err(KeyError::Base64)
        );
        // A bad key followed by more text is a length problem, not trailing data.
        assert_eq!(
            format!("{}!x", &good[..43]).parse::<PublicKey>(),
            Err(KeyError::Length(45))
        );
        // Multi-byte text neither panics nor passes.
        assert!("é".repeat(30).parse::<PrivateKey>().is_err());
        assert!(format!("{}é", &good[..43]).parse::<PrivateKey>().is_err());
    }

    #[test]
    fn secret_keys_share_one_behaviour() {
        let text = "sHp/p7VT4tGYRUb2BjD7RjdXX6zhlV0pbHZKo4RuPFU=";
        let k: PrivateKey = text.parse().expect("valid");
        let p: PresharedKey = text.parse().expect("valid");
        assert_eq!(k.as_bytes(), p.as_bytes());
        assert_eq!(p.to_base64().as_str(), text);
        assert_eq!(p.clone(), p);
        assert_ne!(p, PresharedKey::from_random([0; 32]));
        assert_eq!(k, PrivateKey::from_bytes(*k.as_bytes()));
        assert_eq!(format!("{p:?}"), "PresharedKey(<redacted>)");
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
        // `to_base64` hands out a buffer that wipes itself.
        let shown: Zeroizing<String> = k.to_base64();
        assert_eq!(shown.len(), KEY_B64_LEN);
    }
}
