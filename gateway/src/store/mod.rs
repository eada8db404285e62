//! Every SQL statement of the gateway, for SQLite and PostgreSQL.
//!
//! One `Store` wraps either pool; [`with_pool!`] runs the same statement text on whichever it
//! is (both backends take `$1`-style parameters), so a query is written once and the two
//! backends differ only where their SQL must. The contract tests run on both.
//!
//! Architecture invariants: only this module knows SQL or table names; every timestamp is
//! passed in by the caller (never the database's `now()`), so time stays injectable; every
//! write that the gateway acknowledges is committed with full durability (SQLite WAL with
//! `synchronous=FULL`, PostgreSQL with `synchronous_commit=on`).

mod audit;
mod batch;
mod delivery;
mod events;
mod ingest;
mod receipts;
mod replays;
mod summary;
mod tokens;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use audit::NewAuditEntry;
pub use batch::Batcher;
pub use delivery::{AttemptRecord, Completion, DueDelivery};
pub use events::{EventDetail, EventQuery};
pub use receipts::{EventHold, NewReceipt, Recorded, StoredReceipt};
pub use replays::{
    ItemResult, NewReplay, ReplayCounts, ReplayItem, ReplayJob, SampleEvent, Selection, SendableEvent, SqlParam,
};
pub use summary::{SummaryQuery, SummaryRow};
pub use tokens::TokenRecord;

/// Why the store failed; the HTTP edge answers 503 for these so providers retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url `{0}`: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    /// A group-committed batch failed; each item of it gets the reason.
    #[error("{0}")]
    Batch(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
enum Pool {
    /// Readers, and the one writer: SQLite takes one writer at a time anyway, and queueing
    /// writers here (async) beats colliding in SQLite's busy handler (sleeps of milliseconds).
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
    },
    Postgres(PgPool),
}

/// The durable event log and delivery schedule.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

/// Runs `$body` with `$pool` bound to the concrete pool of either backend, for reads.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite { read: $pool, .. } => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Like [`with_pool!`], for statements that write.
macro_rules! with_writer {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite { write: $pool, .. } => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_writer;

/// Like [`with_writer!`], for writes whose loss on a power failure (not a process crash) only
/// means a delivery is repeated: claims and attempt results. On SQLite they commit with
/// `synchronous=NORMAL` (no fsync of their own; the WAL is ordered, so the next fully
/// synchronous commit makes them durable too); `$conn` is then the writer connection.
macro_rules! with_relaxed_writer {
    ($store:expr, $conn:ident => $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite { write, .. } => {
                let mut held = write.acquire().await?;
                sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *held).await?;
                let result = {
                    let $conn = &mut *held;
                    async { $body }.await
                };
                if let Err(err) = sqlx::query("PRAGMA synchronous = FULL").execute(&mut *held).await {
                    // Never hand a relaxed connection back to writers that need durability.
                    held.close_on_drop();
                    return Err(err.into());
                }
                result
            }
            $crate::store::Pool::Postgres($conn) => $body,
        }
    };
}
pub(crate) use with_relaxed_writer;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Store {
    /// Opens (creating a SQLite file if missing) and migrates the database at `url`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(false);
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options.clone())
                .await?;
            SQLITE_MIGRATIONS.run(&write).await?;
            // Readers cannot write: a statement sent to the wrong pool fails in every test.
            let read = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(true))
                .await?;
            Ok(Self { pool: Pool::Sqlite { read, write } })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "on")]);
            let pool = PgPoolOptions::new()
                .max_connections(32)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options)
                .await?;
            // Several gateways may start at once on one database; the lock serialises them.
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock(4242001)").execute(&mut *conn).await?;
            let migrated = POSTGRES_MIGRATIONS.run(&mut *conn).await;
            sqlx::query("SELECT pg_advisory_unlock(4242001)").execute(&mut *conn).await?;
            migrated?;
            drop(conn);
            Ok(Self { pool: Pool::Postgres(pool) })
        } else {
            Err(StoreError::UnsupportedUrl(url.to_string()))
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite { .. } => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    /// The SQLite writer's `synchronous` level (2 = FULL), for diagnostics and the test that
    /// relaxed writes hand the connection back at full durability; `None` on PostgreSQL.
    pub async fn writer_synchronous(&self) -> Result<Option<i64>, StoreError> {
        match &self.pool {
            Pool::Sqlite { write, .. } => Ok(Some(sqlx::query_scalar("PRAGMA synchronous").fetch_one(write).await?)),
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// A listener for receipt notifications, on PostgreSQL (`None` on SQLite).
    pub async fn receipt_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        match &self.pool {
            Pool::Sqlite { .. } => Ok(None),
            Pool::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen("hookwarden_receipts").await?;
                Ok(Some(listener))
            }
        }
    }

    pub async fn close(&self) {
        if let Pool::Sqlite { write, .. } = &self.pool {
            write.close().await;
        }
        with_pool!(self, pool => pool.close().await)
    }
}
