//! The agent's state directory (default `/var/lib/wgmesh`): the node's
//! private key, its credential for the node routes, and the last network
//! map it applied, so that a restart reuses its identity and can bring the
//! mesh up before the server answers.
//!
//! Layout (directory 0700, every file 0600, each written whole through a
//! temporary file and a rename):
//! - `private.key`: the WireGuard private key, base64 as wg(8) writes it.
//!   Generated here from the OS's randomness; it never leaves the node
//!   (only its public key is sent) and is never logged;
//! - `credential`: the bearer secret the server returned at enrolment;
//! - `map.json`: the cached [`NetworkMap`].
//!
//! The status socket (`status.sock`) lives here too; it is [`crate::status`]'s.
//! This module does no networking.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use wgmesh_core::key::{KEY_LEN, PrivateKey};
use wgmesh_core::netmap::NetworkMap;
use zeroize::Zeroizing;

use crate::AgentError;

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wgmesh";

const KEY_FILE: &str = "private.key";
const CREDENTIAL_FILE: &str = "credential";
const MAP_FILE: &str = "map.json";
/// The status socket's file name.
pub const STATUS_SOCKET: &str = "status.sock";

/// An open state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Opens `path`, creating it (0700) if missing and narrowing its mode
    /// to 0700 if it exists: it holds the private key.
    pub fn open(path: &Path) -> Result<Self, AgentError> {
        match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(AgentError::BadState {
                    path: path.to_owned(),
                    reason: "not a directory".into(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(|e| AgentError::io(path, e))?;
            }
            Err(e) => return Err(AgentError::io(path, e)),
        }
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| AgentError::io(path, e))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the status socket goes.
    pub fn status_socket(&self) -> PathBuf {
        self.path.join(STATUS_SOCKET)
    }

    /// The node's private key: read from `private.key`, or generated from
    /// the OS's randomness and written there (0600) the first time.
    /// Returns the key and whether it was made now.
    pub fn load_or_create_key(&self) -> Result<(PrivateKey, bool), AgentError> {
        let path = self.path.join(KEY_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                // The reason only: the text itself is the secret.
                let key = text
                    .trim()
                    .parse::<PrivateKey>()
                    .map_err(|e| AgentError::BadState {
                        path: path.clone(),
                        reason: format!("not a private key: {e}"),
                    })?;
                Ok((key, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
                getrandom::fill(&mut bytes[..]).map_err(|e| {
                    AgentError::io(&path, std::io::Error::other(format!("OS randomness: {e}")))
                })?;
                let key = PrivateKey::from_random(*bytes);
                let mut text = key.to_base64();
                text.push('\n');
                write_private(&path, text.as_bytes())?;
                Ok((key, true))
            }
            Err(e) => Err(AgentError::io(path, e)),
        }
    }

    /// The credential from enrolment, if the node has enrolled.
    pub fn credential(&self) -> Result<Option<Zeroizing<String>>, AgentError> {
        let path = self.path.join(CREDENTIAL_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                let cred = text.trim();
                if cred.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Zeroizing::new(cred.to_owned())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AgentError::io(path, e)),
        }
    }

    pub fn save_credential(&self, credential: &str) -> Result<(), AgentError> {
        let text = Zeroizing::new(format!("{credential}\n"));
        write_private(&self.path.join(CREDENTIAL_FILE), text.as_bytes())
    }

    /// Forgets the credential (the server refused it): the next start
    /// enrols again.
    pub fn remove_credential(&self) -> Result<(), AgentError> {
        let path = self.path.join(CREDENTIAL_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(AgentError::io(path, e)),
        }
    }

    /// The last map applied, if any. A cache that does not parse is
    /// ignored (reported by the caller), not fatal: the server has the truth.
    pub fn cached_map(&self) -> Result<Option<NetworkMap>, AgentError> {
        let path = self.path.join(MAP_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::io(path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AgentError::BadState {
                path,
                reason: format!("not a network map: {e}"),
            })
    }

    pub fn save_map(&self, map: &NetworkMap) -> Result<(), AgentError> {
        let json = serde_json::to_vec_pretty(map).expect("invariant: a map serialises");
        write_private(&self.path.join(MAP_FILE), &json)
    }
}

/// Writes `contents` to `path` with mode 0600: a new file beside it
/// (O_EXCL, never through a planted symlink), synced, renamed into place,
/// so a crash leaves the old file or the new one, never half of one.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), AgentError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask can only narrow 0600, but make it exact.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(AgentError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt as _;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn modes_and_reuse() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let state = StateDir::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let (key, made) = state.load_or_create_key().unwrap();
        assert!(made);
        assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
        let (again, made) = state.load_or_create_key().unwrap();
        assert!(!made);
        assert_eq!(key.public_key(), again.public_key());

        assert!(state.credential().unwrap().is_none());
        state.save_credential("wgn_secret").unwrap();
        assert_eq!(mode(&dir.join(CREDENTIAL_FILE)), 0o600);
        assert_eq!(state.credential().unwrap().unwrap().as_str(), "wgn_secret");
        state.remove_credential().unwrap();
        assert!(state.credential().unwrap().is_none());
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn an_open_directory_is_narrowed_to_0700() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        StateDir::open(tmp.path()).unwrap();
        assert_eq!(mode(tmp.path()), 0o700);
        let file = tmp.path().join("f");
        fs::write(&file, "x").unwrap();
        assert!(matches!(
            StateDir::open(&file),
            Err(AgentError::BadState { .. })
        ));
    }

    #[test]
    fn a_bad_key_file_is_an_error_without_its_text() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        fs::write(tmp.path().join(KEY_FILE), "not-a-key-SECRETTEXT\n").unwrap();
        let e = state.load_or_create_key().unwrap_err().to_string();
        assert!(e.contains("not a private key"), "{e}");
        assert!(!e.contains("SECRETTEXT"), "{e}");
    }

    #[test]
    fn map_cache_round_trips_and_bad_cache_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        assert!(state.cached_map().unwrap().is_none());
        let map = crate::apply::tests::map(3, &[1, 2]);
        state.save_map(&map).unwrap();
        assert_eq!(mode(&tmp.path().join(MAP_FILE)), 0o600);
        assert_eq!(state.cached_map().unwrap(), Some(map));
        fs::write(tmp.path().join(MAP_FILE), "{").unwrap();
        assert!(state.cached_map().is_err());
    }
}
