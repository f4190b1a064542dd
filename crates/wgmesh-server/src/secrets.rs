//! Bearer secrets: admin API tokens, node credentials, setup keys and
//! relay tokens.
//!
//! Each is 32 random bytes in URL-safe base64 behind a prefix that names
//! its kind (`wga_`, `wgn_`, `wgs_`, `wgr_`). Only a SHA-256 of it is stored:
//! the secrets are uniformly random, so a plain hash is as strong as a
//! slow one and lets the server look one up by hash in O(1).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A fresh secret with `prefix`.
pub fn generate(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// What is stored: hex SHA-256 of the whole secret.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first characters, shown in listings so an operator can tell keys
/// apart without the secret.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_prefixed_and_hash_stably() {
        let a = generate("wgs_").unwrap();
        let b = generate("wgs_").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("wgs_") && a.len() == 4 + 43);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        // FIPS 180-2 "abc".
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
