//! The relay's static key: made on first start into the state directory
//! (`relay.key`, base64, mode 0600, in a 0700 directory), read on every
//! later start. Nodes learn the public half (from the network map), and
//! prove their keys to it in their hellos.
//!
//! It does not own the hello crypto ([`wgmesh_proto::relay::hello`]).

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use wgmesh_core::key::PrivateKey;
use zeroize::Zeroizing;

/// The key file's name in the state directory.
pub const KEY_FILE: &str = "relay.key";

pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

/// Reads the relay key from `state_dir`, or makes one there first.
/// Returns the key and whether it was made now.
pub fn load_or_create(state_dir: &Path) -> anyhow::Result<(PrivateKey, bool)> {
    match fs::symlink_metadata(state_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(state_dir)
                .with_context(|| format!("cannot create {}", state_dir.display()))?;
            fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot chmod 700 {}", state_dir.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", state_dir.display())),
        Ok(m) if !m.file_type().is_dir() => {
            bail!("{} is not a directory", state_dir.display())
        }
        Ok(_) => {}
    }
    let path = key_path(state_dir);
    match fs::symlink_metadata(&path) {
        Ok(meta) => {
            if !meta.file_type().is_file() {
                bail!(
                    "{} is not a regular file; refusing to read a key from it",
                    path.display()
                );
            }
            if meta.permissions().mode() & 0o077 != 0 {
                bail!(
                    "{} is readable by others (mode {:o}); chmod 600 it",
                    path.display(),
                    meta.permissions().mode() & 0o777
                );
            }
            let text = Zeroizing::new(
                fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            );
            let key: PrivateKey = text
                .trim()
                .parse()
                .with_context(|| format!("{} does not hold a key", path.display()))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut bytes[..]).context("no randomness for the relay key")?;
            let key = PrivateKey::from_random(*bytes);
            let text = Zeroizing::new(format!("{}\n", key.to_base64().as_str()));
            // O_EXCL and 0600 from the first byte: never through a planted
            // symlink, never readable by others.
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok((key, true))
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_0600_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (k1, made) = load_or_create(&state).unwrap();
        assert!(made);
        let mode = fs::metadata(key_path(&state)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k2, made) = load_or_create(&state).unwrap();
        assert!(!made);
        assert_eq!(k1.public_key(), k2.public_key());
        fs::set_permissions(key_path(&state), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&state).is_err());
    }
}
