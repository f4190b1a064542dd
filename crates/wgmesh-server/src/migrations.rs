//! The schema, as numbered migrations applied in order, each in one
//! transaction and recorded in `schema_migrations`. Both backends get the
//! same tables and columns; only the DDL spelling differs.

use sqlx::Row;

use crate::db::{Backend, Db, DbError};

struct Migration {
    version: i64,
    sqlite: &'static str,
    postgres: &'static str,
}

/// The tables, with the id column spelt per backend (`{ID}`).
const V1: &str = "
CREATE TABLE networks (
    id {ID},
    name TEXT NOT NULL UNIQUE,
    overlay TEXT NOT NULL,
    topology TEXT NOT NULL,
    policy TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE setup_keys (
    id {ID},
    network_id BIGINT NOT NULL REFERENCES networks(id),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    reusable BIGINT NOT NULL,
    expires_at BIGINT,
    usage_limit BIGINT,
    used BIGINT NOT NULL,
    groups_json TEXT NOT NULL,
    hub BIGINT NOT NULL,
    revoked BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE nodes (
    id {ID},
    network_id BIGINT NOT NULL REFERENCES networks(id),
    name TEXT NOT NULL,
    public_key TEXT NOT NULL,
    address TEXT NOT NULL,
    groups_json TEXT NOT NULL,
    hub BIGINT NOT NULL,
    endpoints_json TEXT NOT NULL,
    credential_hash TEXT NOT NULL UNIQUE,
    last_seen BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    UNIQUE (network_id, public_key),
    UNIQUE (network_id, name),
    UNIQUE (network_id, address)
);
CREATE TABLE released_addresses (
    network_id BIGINT NOT NULL REFERENCES networks(id),
    address TEXT NOT NULL,
    released_at BIGINT NOT NULL,
    PRIMARY KEY (network_id, address)
);
CREATE TABLE admin_tokens (
    id {ID},
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked BIGINT NOT NULL
);
CREATE TABLE audit_log (
    id {ID},
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before_json TEXT,
    after_json TEXT
)";

/// Nodes that reach the others only through the hub (the planner's
/// `via_hub`), and setup keys that enrol such nodes.
const V2: &str = "
ALTER TABLE nodes ADD COLUMN via_hub BIGINT NOT NULL DEFAULT 0;
ALTER TABLE setup_keys ADD COLUMN via_hub BIGINT NOT NULL DEFAULT 0";

/// Relays (server-wide, serving every network), each with its bearer
/// token stored as SHA-256 like the other secrets ([`crate::secrets`]).
const V3: &str = "
CREATE TABLE relays (
    id {ID},
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    udp TEXT NOT NULL,
    ws_url TEXT,
    created_at BIGINT NOT NULL
)";

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: V1,
        postgres: V1,
    },
    Migration {
        version: 2,
        sqlite: V2,
        postgres: V2,
    },
    Migration {
        version: 3,
        sqlite: V3,
        postgres: V3,
    },
];

fn id_column(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        Backend::Postgres => "BIGSERIAL PRIMARY KEY",
    }
}

/// The newest migration applied; 0 for a database wgmesh never set up.
pub async fn applied(db: &Db) -> Result<i64, DbError> {
    let exists = match db.backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        }
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'"
        }
    };
    let n: i64 = sqlx::query(exists)
        .fetch_one(&db.pool)
        .await?
        .try_get("n")?;
    if n == 0 {
        return Ok(0);
    }
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(&db.pool)
        .await?;
    Ok(row.try_get("v")?)
}

/// Applies what is missing.
pub async fn run(db: &Db) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit(db).await?;
    let current = applied(db).await?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(DbError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let ddl = match db.backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        }
        .replace("{ID}", id_column(db.backend));
        let mut tx = db.begin_write().await?;
        for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(m.version)
            .bind(crate::clock::unix_secs())
            .execute(&mut *tx)
            .await?;
        tx.commit(db).await?;
    }
    Ok(())
}
