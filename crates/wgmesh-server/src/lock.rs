//! One server per SQLite database: an exclusive `flock(2)` on
//! `<database>.lock`, held for the life of the process and released by
//! the kernel however it ends (also on SIGKILL). The file says who holds
//! it, so that a second server can name the first.
//!
//! SQLite's own locking does not prevent this: two servers each keep the
//! world in memory and only ever see their own writes. PostgreSQL takes no
//! such lock; replicas on one PostgreSQL are a later feature.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    #[error(
        "the database {} is in use by another wgmesh process ({holder}); one server per SQLite database (lock file {})",
        .database.display(), .lock.display()
    )]
    Held {
        database: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error(
        "the database directory cannot be written ({}); the server needs to write it",
        .lock.display()
    )]
    ReadOnly {
        lock: PathBuf,
        source: std::io::Error,
    },
    #[error("the lock file {}", .lock.display())]
    Io {
        lock: PathBuf,
        source: std::io::Error,
    },
}

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct DbLock {
    file: File,
    path: PathBuf,
}

impl DbLock {
    /// Takes the lock of the SQLite file `database`, or says who holds it.
    /// `holder` describes this process for the next one to ask.
    pub fn acquire(database: &Path, holder: &str) -> Result<Self, LockError> {
        let path = crate::db::suffixed(database, ".lock");
        let io = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                LockError::ReadOnly {
                    lock: path.clone(),
                    source,
                }
            }
            _ => LockError::Io {
                lock: path.clone(),
                source,
            },
        };
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(io)?
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = match text.trim() {
                    "" => "it has not said who it is yet".to_owned(),
                    t => t.to_owned(),
                };
                return Err(LockError::Held {
                    database: database.to_owned(),
                    lock: path,
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut lock = Self { file, path };
        lock.describe(holder)?;
        Ok(lock)
    }

    /// Rewrites who holds the lock (e.g. once the listen port is known).
    pub fn describe(&mut self, holder: &str) -> Result<(), LockError> {
        let io = |source| LockError::Io {
            lock: self.path.clone(),
            source,
        };
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        writeln!(self.file, "pid {}, {holder}", std::process::id()).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_told_who_has_it() {
        let dir = tempfile::tempdir().expect("invariant: a temp dir can be made");
        let db = dir.path().join("server.db");
        let first = DbLock::acquire(&db, "listening on 127.0.0.1:8080")
            .expect("invariant: nobody else holds a fresh lock");
        match DbLock::acquire(&db, "second") {
            Err(LockError::Held { holder, .. }) => {
                assert_eq!(
                    holder,
                    format!("pid {}, listening on 127.0.0.1:8080", std::process::id())
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        DbLock::acquire(&db, "third").expect("invariant: released by drop");
    }
}
