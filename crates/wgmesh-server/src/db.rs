//! The database behind the server: SQLite (default) or PostgreSQL, through
//! one sqlx `Any` pool, so every query is written once.
//!
//! Portable SQL only: `$N` parameters (SQLite reads them as positions),
//! BIGINT/TEXT columns (i64 and String in Rust; booleans are 0/1,
//! timestamps unix seconds or milliseconds, lists JSON text), and
//! `INSERT … RETURNING id`. Only the DDL differs between the backends
//! ([`crate::migrations`]).

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

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
}

/// A connected pool and its backend.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// Connects (creating a SQLite file on first start, in WAL mode) and
    /// brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(DbError::BadUrl(url.to_owned()));
            }
            // mode=rwc: create the file if it is missing.
            let sep = if path.contains('?') { '&' } else { '?' };
            (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(DbError::BadUrl(url.to_owned()));
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            // SQLite has one writer anyway; the server serialises its
            // writes (crate::state), so a few connections are plenty.
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let db = Self { pool, backend };
        crate::migrations::run(&db).await?;
        Ok(db)
    }
}
