//! The database behind the server: SQLite (default) or PostgreSQL, through
//! one sqlx `Any` pool, so every query is written once.
//!
//! Portable SQL only: `$N` parameters (SQLite reads them as positions),
//! BIGINT/TEXT columns (i64 and String in Rust; booleans are 0/1,
//! timestamps unix seconds or milliseconds, lists JSON text), and
//! `INSERT … RETURNING id`. Only the DDL differs between the backends
//! ([`crate::migrations`]).
//!
//! Writes go through [`WriteTx`], never sqlx's `Transaction`: a connection
//! whose transaction did not commit is closed, not handed back to the
//! pool (see [`WriteTx`] for why). Errors are sorted into what an operator
//! must fix and what passes by itself ([`Fault`]), so the API can answer
//! 503 for a full disk or a lost connection and 409 for a uniqueness
//! clash, instead of 500 for both.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Row};

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error(
        "unsupported database URL {0:?}: use sqlite:///path/to/file.db or postgres://user@host/db"
    )]
    BadUrl(String),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database schema is at version {found}, newer than this wgmesh knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error(
        "the database directory {} does not exist; `wgmesh server init --database URL` creates it",
        .0.display()
    )]
    NoDirectory(PathBuf),
    /// The database exists but wgmesh has never been set up in it, or
    /// there is none at all.
    #[error("{what}; run `wgmesh server init --database URL` first")]
    NotInitialised { what: String },
    #[error("{} is not a wgmesh database: {why}", .path.display())]
    NotADatabase { path: PathBuf, why: String },
    #[error(
        "the database {} cannot be written ({why}); the server needs to write it",
        .path.display()
    )]
    ReadOnly { path: PathBuf, why: String },
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
}

/// A connected pool and its backend.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

/// A database URL, parsed.
#[derive(Debug, Clone)]
struct Target {
    backend: Backend,
    /// The URL sqlx is given.
    url: String,
    /// SQLite only: the file.
    path: Option<PathBuf>,
}

fn parse_url(url: &str) -> Result<Target, DbError> {
    if let Some(rest) = url.strip_prefix("sqlite://") {
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return Err(DbError::BadUrl(url.to_owned()));
        }
        // mode=rw: the file must exist; only `server init` creates it.
        let sep = if rest.contains('?') { '&' } else { '?' };
        Ok(Target {
            backend: Backend::Sqlite,
            url: format!("sqlite://{rest}{sep}mode=rw"),
            path: Some(PathBuf::from(path)),
        })
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Target {
            backend: Backend::Postgres,
            url: url.to_owned(),
            path: None,
        })
    } else {
        Err(DbError::BadUrl(url.to_owned()))
    }
}

/// The SQLite file of a `sqlite://` URL (`None` for PostgreSQL).
pub fn sqlite_path(url: &str) -> Result<Option<PathBuf>, DbError> {
    Ok(parse_url(url)?.path)
}

/// What the first 100 bytes of a SQLite file must say, and the size they
/// promise (<https://www.sqlite.org/fileformat.html#the_database_header>).
fn check_sqlite_file(path: &Path) -> Result<(), DbError> {
    use std::io::Read;
    let io = |source| DbError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DbError::NotInitialised {
                what: format!("there is no database at {}", path.display()),
            });
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.is_file() {
        return Err(DbError::NotADatabase {
            path: path.to_owned(),
            why: "not a regular file".into(),
        });
    }
    if meta.len() == 0 {
        return Err(DbError::NotInitialised {
            what: format!("the database {} is empty", path.display()),
        });
    }
    // Opening for writing tells a read-only file or mount now, rather
    // than at the first write (SQLite would open it read-only).
    if let Err(e) = std::fs::OpenOptions::new().write(true).open(path) {
        return match e.kind() {
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                Err(DbError::ReadOnly {
                    path: path.to_owned(),
                    why: e.to_string(),
                })
            }
            _ => Err(io(e)),
        };
    }
    let mut header = [0u8; 100];
    let mut file = std::fs::File::open(path).map_err(io)?;
    let n = file.read(&mut header).map_err(io)?;
    if n < header.len() || &header[..16] != b"SQLite format 3\0" {
        return Err(DbError::NotADatabase {
            path: path.to_owned(),
            why: "no SQLite header".into(),
        });
    }
    // Page size at 16 (1 means 65536), size in pages at 28, valid only if
    // the change counter at 24 equals the version-valid-for number at 92.
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536,
        n => u64::from(n),
    };
    let pages = u64::from(u32::from_be_bytes([
        header[28], header[29], header[30], header[31],
    ]));
    // With a write-ahead log the file may be shorter than its header says
    // until the log is checkpointed (a server killed mid-checkpoint).
    let wal = std::fs::metadata(suffixed(path, "-wal")).is_ok_and(|m| m.len() > 0);
    if !wal && header[24..28] == header[92..96] && meta.len() < page_size * pages {
        return Err(DbError::NotADatabase {
            path: path.to_owned(),
            why: format!(
                "truncated: {} bytes, its header says {}",
                meta.len(),
                page_size * pages
            ),
        });
    }
    Ok(())
}

/// Makes the directory (0700, with its parents) and an empty file (0600)
/// for a new SQLite database, and tightens the modes of an existing one.
fn create_sqlite_file(path: &Path) -> Result<(), DbError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let io = |p: &Path, source| DbError::Io {
        path: p.to_owned(),
        source,
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io(dir, e))?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // An older wgmesh made it with the umask's mode; it holds
            // credential hashes, so only the server's user reads it.
            // SQLite gives -wal and -shm the mode of the database.
            for p in [
                path.to_owned(),
                suffixed(path, "-wal"),
                suffixed(path, "-shm"),
            ] {
                if p.exists() {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| io(&p, e))?;
                }
            }
        }
        Err(e) => return Err(io(path, e)),
    }
    Ok(())
}

pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Sorts the errors of a first connection into ones an operator can act
/// on at once (not "pool timed out" ten seconds later).
fn connect_error(target: &Target, e: sqlx::Error) -> DbError {
    let Some(path) = &target.path else {
        return DbError::Connect(e);
    };
    match sqlite_code(&e).map(|c| c & 0xff) {
        // SQLITE_CORRUPT, SQLITE_NOTADB
        Some(11 | 26) => DbError::NotADatabase {
            path: path.clone(),
            why: e.to_string(),
        },
        // SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_PERM
        Some(8 | 14 | 3) => DbError::ReadOnly {
            path: path.clone(),
            why: e.to_string(),
        },
        _ => DbError::Connect(e),
    }
}

fn sqlite_code(e: &sqlx::Error) -> Option<i64> {
    match e {
        sqlx::Error::Database(d) => d.code().and_then(|c| c.parse().ok()),
        _ => None,
    }
}

impl Db {
    /// Connects to an existing wgmesh database and brings its schema up
    /// to date. A missing, empty or never-initialised database is refused
    /// with a pointer to `wgmesh server init`.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        let target = parse_url(url)?;
        if let Some(path) = &target.path {
            if let Some(dir) = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
            {
                return Err(DbError::NoDirectory(dir.to_owned()));
            }
            check_sqlite_file(path)?;
        }
        let db = Self::connect(&target).await?;
        if crate::migrations::applied(&db).await? == 0 {
            return Err(DbError::NotInitialised {
                what: "the database has no wgmesh schema".into(),
            });
        }
        crate::migrations::run(&db).await?;
        Ok(db)
    }

    /// Creates the database if it is missing (a SQLite file 0600 in a
    /// directory made 0700) and brings its schema up to date: what `wgmesh
    /// server init` does, and tests.
    pub async fn create(url: &str) -> Result<Self, DbError> {
        let target = parse_url(url)?;
        if let Some(path) = &target.path {
            create_sqlite_file(path)?;
        }
        let db = Self::connect(&target).await?;
        crate::migrations::run(&db).await?;
        Ok(db)
    }

    async fn connect(target: &Target) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = target.backend;
        let options = AnyConnectOptions::from_str(&target.url)?.disable_statement_logging();
        // One connection first, so that a file that is not a database or
        // a server that refuses us is reported at once, with its cause;
        // the pool would retry until its acquire timeout.
        let mut first = AnyConnection::connect_with(&options)
            .await
            .map_err(|e| connect_error(target, e))?;
        prepare(&mut first, backend)
            .await
            .map_err(|e| connect_error(target, e))?;
        first.close().await.map_err(|e| connect_error(target, e))?;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer anyway; the server serialises its
            // writes (crate::service), so a few connections are plenty.
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            // While the database is away, requests fail with 503 after
            // this long rather than hang.
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| Box::pin(prepare(conn, backend)))
            .connect_lazy_with(options);
        Ok(Self { pool, backend })
    }

    /// Begins a write transaction ([`WriteTx`]).
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        // IMMEDIATE: take SQLite's write lock now, so a transaction never
        // fails half-way for a lock it could not upgrade.
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        if let Err(e) = conn.execute(begin).await {
            conn.close_on_drop();
            return Err(e);
        }
        Ok(WriteTx {
            conn,
            committed: false,
            audit_id: None,
        })
    }

    /// Whether the audit row `id` is in the database, asked on a fresh
    /// connection ([`WriteTx::commit`]).
    async fn audit_row_exists(&self, id: i64) -> Result<bool, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }
}

/// Per connection: WAL with full fsync, so that a commit that returned is
/// on disk (<https://www.sqlite.org/pragma.html#pragma_synchronous>).
async fn prepare(conn: &mut AnyConnection, backend: Backend) -> Result<(), sqlx::Error> {
    if backend == Backend::Sqlite {
        conn.execute("PRAGMA busy_timeout = 5000").await?;
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute("PRAGMA synchronous = FULL").await?;
        conn.execute("PRAGMA foreign_keys = ON").await?;
    }
    Ok(())
}

/// A write transaction on a connection taken from the pool for it alone.
///
/// Why not sqlx's `Transaction`: SQLite rolls a transaction back by itself
/// on some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM:
/// <https://www.sqlite.org/lang_transaction.html>, "Response To Errors
/// Within A Transaction"); sqlx's own ROLLBACK then fails, its depth
/// counter stays above zero, and the connection goes back to the pool
/// believing it is inside a transaction, so its next `begin` is only a
/// SAVEPOINT. We saw exactly that on a full disk: writes answered 201
/// that were never committed, and "database is locked" for every other
/// connection. Here a connection that did not commit is closed when the
/// `WriteTx` is dropped (closing rolls back, on both backends), never
/// reused.
#[derive(Debug)]
pub struct WriteTx {
    conn: PoolConnection<Any>,
    committed: bool,
    /// The audit row this transaction wrote: a commit whose reply was lost
    /// is judged by whether that row is there.
    audit_id: Option<i64>,
}

impl WriteTx {
    pub fn set_audit_id(&mut self, id: i64) {
        self.audit_id = Some(id);
    }

    /// Commits. `Ok` means the change is in the database.
    ///
    /// A COMMIT can fail after the server made it durable (PostgreSQL
    /// terminating the backend between the commit record and the reply).
    /// So on an error, the transaction's audit row is looked for on
    /// another connection: there means committed.
    pub async fn commit(mut self, db: &Db) -> Result<(), sqlx::Error> {
        let result = self.conn.execute("COMMIT").await;
        match result {
            Ok(_) => {
                self.committed = true;
                Ok(())
            }
            Err(e) => {
                let audit_id = self.audit_id;
                drop(self);
                match audit_id {
                    Some(id) => match db.audit_row_exists(id).await {
                        Ok(true) => {
                            eprintln!(
                                "wgmesh server: the commit of audit entry {id} reported {e}, but it is in the database"
                            );
                            Ok(())
                        }
                        Ok(false) => Err(e),
                        Err(check) => {
                            eprintln!(
                                "wgmesh server: the commit of audit entry {id} reported {e}, and whether it took cannot be checked ({check}); a restart reloads what is in the database"
                            );
                            Err(e)
                        }
                    },
                    None => Err(e),
                }
            }
        }
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        if !self.committed {
            self.conn.close_on_drop();
        }
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// What a database error means for the request that met it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Passes by itself (or when the operator frees space, remounts or
    /// restarts PostgreSQL): 503 with this reason.
    Unavailable(&'static str),
    /// A uniqueness constraint: 409, naming the column where known.
    Unique { field: Option<String> },
    /// Anything else: 500.
    Other,
}

/// Sorts a database error ([`Fault`]).
pub fn fault(e: &sqlx::Error) -> Fault {
    use sqlx::error::ErrorKind;
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            Fault::Unavailable("the database is not answering")
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
            Fault::Unavailable("the connection to the database was lost")
        }
        sqlx::Error::Database(d) => {
            if d.kind() == ErrorKind::UniqueViolation {
                return Fault::Unique {
                    field: unique_field(d.message(), d.constraint()),
                };
            }
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            let sqlite = d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some();
            if let (true, Ok(n)) = (sqlite, code.parse::<i64>()) {
                // SQLite result codes: https://www.sqlite.org/rescode.html
                return match n & 0xff {
                    13 => Fault::Unavailable("the database disk is full"),
                    8 => Fault::Unavailable("the database is read-only"),
                    5 | 6 => Fault::Unavailable("the database is busy"),
                    10 | 14 | 15 => Fault::Unavailable("the database cannot be written"),
                    _ => Fault::Other,
                };
            }
            // PostgreSQL SQLSTATE (appendix A of its manual): classes 08
            // connection exception, 28 authorization (a password
            // changed), 53 insufficient resources (disk full), 57
            // operator intervention (pg_terminate_backend, shutdown), 40
            // retryable conflicts; 25006 read-only transaction, 55000
            // "not accepting connections", 3D000 no such database.
            match (code.get(..2), code.as_str()) {
                (Some("08"), _) => Fault::Unavailable("the connection to the database was lost"),
                (Some("28"), _) => Fault::Unavailable("the database refused our credentials"),
                (Some("53"), _) => Fault::Unavailable("the database is out of resources"),
                (Some("57"), _) => Fault::Unavailable("the database connection was terminated"),
                (Some("40"), _) => Fault::Unavailable("the database is busy"),
                (_, "25006") => Fault::Unavailable("the database is read-only"),
                (_, "55000") => Fault::Unavailable("the database is not accepting connections"),
                (_, "3D000") => Fault::Unavailable("the database does not exist"),
                _ => Fault::Other,
            }
        }
        _ => Fault::Other,
    }
}

/// The column a uniqueness error names: SQLite says "UNIQUE constraint
/// failed: nodes.network_id, nodes.name"; PostgreSQL gives the
/// constraint, "nodes_network_id_name_key".
fn unique_field(message: &str, constraint: Option<&str>) -> Option<String> {
    if let Some(cols) = message.split("failed: ").nth(1) {
        return cols
            .split(", ")
            .map(|c| c.rsplit('.').next().unwrap_or(c))
            .filter(|c| *c != "network_id")
            .last()
            .map(str::to_owned);
    }
    let c = constraint?.strip_suffix("_key")?;
    let (_, cols) = c.split_once('_')?;
    let cols = cols.strip_prefix("network_id_").unwrap_or(cols);
    Some(cols.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_fields_from_both_backends() {
        assert_eq!(
            unique_field("UNIQUE constraint failed: networks.name", None).as_deref(),
            Some("name")
        );
        assert_eq!(
            unique_field(
                "UNIQUE constraint failed: nodes.network_id, nodes.name",
                None
            )
            .as_deref(),
            Some("name")
        );
        assert_eq!(
            unique_field("duplicate key value", Some("networks_name_key")).as_deref(),
            Some("name")
        );
        assert_eq!(
            unique_field("duplicate key value", Some("nodes_network_id_address_key")).as_deref(),
            Some("address")
        );
        assert_eq!(unique_field("duplicate key value", None), None);
    }

    #[test]
    fn urls() {
        assert!(matches!(parse_url("mysql://x"), Err(DbError::BadUrl(_))));
        assert!(matches!(parse_url("sqlite://"), Err(DbError::BadUrl(_))));
        let t = parse_url("sqlite:///var/lib/wgmesh/server.db").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t.path.as_deref(),
            Some(Path::new("/var/lib/wgmesh/server.db"))
        );
        assert_eq!(t.url, "sqlite:///var/lib/wgmesh/server.db?mode=rw");
    }
}
