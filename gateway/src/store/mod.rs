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

mod archive;
mod audit;
mod batch;
mod body_dedup;
mod checkpoint;
mod commit;
mod commit_sqlite;
mod delivery;
mod events;
mod handoff;
mod health;
mod ingest;
mod receipts;
mod recent_attempts;
mod replays;
mod retention;
mod retry;
mod selection;
mod sessions;
mod summary;
mod tokens;

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use archive::{ArchivedAttempt, ArchivedEvent, ArchivedReceipt, ArchivedRow, DueForArchive, Imported};
pub use audit::NewAuditEntry;
pub use batch::{Batcher, Workers};
pub use commit::CommitQueue;
pub use delivery::{AttemptRecord, Completion, DueDelivery};
pub use events::{EventDetail, EventQuery, Payload, Resolving};
pub use handoff::{FreshDeliveries, Handoff, handoff};
pub use health::NotReady;
pub use receipts::{NewReceipt, Recorded, SendCheck, StoredReceipt};
pub use recent_attempts::RecentAttempt;
pub use replays::{
    FailureCause, ItemResult, Loaded, NewReplay, Paused, ReplayCounts, ReplayItem, ReplayJob, ReplayListQuery,
    ReplayPage, SampleEvent, SendableEvent, Toggle,
};
pub use retention::{BatchPurged, Cursor, Cutoffs, DatabaseStorage, PurgeLock, PurgePlan, SourceStorage, format_bytes};
pub use retry::retry_transient;
pub use selection::{Selection, SqlParam};
pub use sessions::ConsoleSession;
pub use summary::{SummaryQuery, SummaryRow};
pub use tokens::{Revoked, TokenRecord};

/// Why the store failed; the HTTP edge answers 503 for these so providers retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From the SQLite group commit, which runs on the writer's handle without sqlx.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url `{0}`: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("the store is shutting down")]
    Closed,
    #[error(
        "another gateway is running on this SQLite database (it holds {0}); run one gateway per SQLite file, or use PostgreSQL for several"
    )]
    InUse(String),
    #[error("{0}")]
    LockFile(String),
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
    /// A group-committed batch failed; each item of it gets the reason.
    #[error("{0}")]
    Batch(String),
}

impl StoreError {
    /// The database ran out of disk (SQLite `SQLITE_FULL`, PostgreSQL `53100`).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("13" | "53100")) || e.message().contains("disk is full")
            }
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => e.code == rusqlite::ErrorCode::DiskFull,
            other => other.to_string().contains("disk is full"),
        }
    }

    /// A failure that passes by itself: the database unreachable or restarting, a session
    /// cut, a full disk, contention. Work that met one waits and tries again instead of
    /// giving up (a statement the database refuses is not one of these).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(err) => match err {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(e) => {
                    let code = e.code();
                    let code = code.as_deref().unwrap_or("");
                    if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                        // BUSY (5), LOCKED (6), FULL (13), and their extended codes.
                        matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6 | 13))
                    } else {
                        // PostgreSQL: connection exceptions (08), insufficient resources (53),
                        // operator intervention (57: shutdown, cannot connect now),
                        // serialisation failures and deadlocks (40).
                        ["08", "53", "57", "40"].iter().any(|class| code.starts_with(class))
                    }
                }
                _ => false,
            },
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked | rusqlite::ErrorCode::DiskFull
            ),
            _ => false,
        }
    }
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
        leases: delivery::MemoryLeases,
        file: std::sync::Arc<std::path::Path>,
        checkpointer: checkpoint::Checkpointer,
        /// The `seq` of the last event stored: the one writer numbers events in the order it
        /// commits them (see `commit_sqlite`), from here.
        last_seq: std::sync::Arc<std::sync::atomic::AtomicI64>,
    },
    Postgres(PgPool),
}

/// The durable event log and delivery schedule.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Whether the last group commit failed, and why (`/readyz`).
    health: health::WriteHealth,
    /// Group commits (ingest and delivery results) so far: the purger reads whether others
    /// wrote since its last batch, and paces itself only when they did.
    group_commits: std::sync::Arc<std::sync::atomic::AtomicU64>,
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

/// The placeholder of the `n`th parameter (from 1) of a statement whose parameters each
/// appear once, in binding order: `$n` on PostgreSQL, plain `?` on SQLite. SQLite looks a
/// named parameter up by a linear search, which made binding a statement of a few hundred
/// parameters quadratic (a visible share of the writer's CPU).
pub(crate) fn mark(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_string(),
        Backend::Postgres => format!("${n}"),
    }
}

/// The conflict clause of the writer's multi-row statements: `OR ROLLBACK ` on SQLite, nothing on
/// PostgreSQL. Inside a transaction SQLite copies every page a multi-row statement may undo
/// into a statement journal (about a tenth of the writer's time on the ingest path); a
/// constraint failure that ends the whole transaction needs none, and the group fails as a
/// whole anyway. After such a failure the connection is replaced ([`replace_if_failed`]).
pub(crate) fn or_rollback(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "OR ROLLBACK ",
        Backend::Postgres => "",
    }
}

/// Closes the writer connection of a failed transaction on SQLite instead of handing it back:
/// a failing `OR ROLLBACK` statement (see [`or_rollback`]) ends the transaction inside
/// SQLite, which sqlx's own count of open transactions does not see.
pub(crate) fn replace_if_failed<DB: sqlx::Database, T, E>(
    conn: &mut sqlx::pool::PoolConnection<DB>,
    backend: Backend,
    written: &Result<T, E>,
) {
    if written.is_err() && backend == Backend::Sqlite {
        conn.close_on_drop();
    }
}

/// Most rows in one multi-row statement of the writer's hot paths (receipts on both
/// databases; events, payloads and attempts on PostgreSQL). Each row count is a statement
/// text of its own, and every one of them stays prepared ([`keep_prepared`],
/// [`WRITER_STATEMENTS`]): a group of up to this many rows runs one statement per kind, a
/// bigger one a few. Parsing and planning a statement
/// afresh cost ~12% of the gateway's instructions per ingested event (callgrind).
pub(crate) const PREPARED_ROWS: usize = 64;

/// Room in the SQLite writer's cache of prepared statements: every row count up to
/// [`PREPARED_ROWS`] of the receipts' two multi-row statements, with the single-row ones
/// beside them. (The ingest group commit runs its own statements, `commit_sqlite`.)
const WRITER_STATEMENTS: usize = 256;

/// Whether a multi-row statement of `rows` rows stays in sqlx's cache of prepared statements:
/// all that chunks of [`PREPARED_ROWS`] make. Longer ones (a few lookups of up to 500 ids)
/// are rare, and each kept would hold memory for nothing.
pub(crate) fn keep_prepared(rows: usize) -> bool {
    rows <= PREPARED_ROWS
}

/// Statement texts of a multi-row statement, by backend and row count (1 to
/// [`PREPARED_ROWS`]), built once per process. A text is the key sqlx finds its prepared
/// statement by, on every commit; formatting it afresh each time was ~4% of the instructions
/// per ingested event (callgrind).
pub(crate) struct SqlTexts {
    build: fn(Backend, usize) -> String,
    built: [std::sync::OnceLock<Vec<String>>; 2],
}

impl SqlTexts {
    pub(crate) const fn new(build: fn(Backend, usize) -> String) -> Self {
        Self { build, built: [std::sync::OnceLock::new(), std::sync::OnceLock::new()] }
    }

    /// The text for `rows` rows; built on the spot past [`PREPARED_ROWS`].
    pub(crate) fn get(&'static self, backend: Backend, rows: usize) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        if rows == 0 || rows > PREPARED_ROWS {
            return sqlx::AssertSqlSafe(Cow::Owned((self.build)(backend, rows)));
        }
        let texts = self.built[backend as usize]
            .get_or_init(|| (1..=PREPARED_ROWS).map(|n| (self.build)(backend, n)).collect());
        sqlx::AssertSqlSafe(Cow::Borrowed(texts[rows - 1].as_str()))
    }
}

/// `rows` groups of `per_row` placeholders, `(…), (…)`, numbered from `first` (see [`mark`]);
/// one group of `n` is an `IN (…)` list.
pub(crate) fn row_marks(backend: Backend, rows: usize, per_row: usize, first: usize) -> String {
    let groups: Vec<String> = (0..rows)
        .map(|row| {
            let marks: Vec<String> = (0..per_row).map(|col| mark(backend, first + row * per_row + col)).collect();
            format!("({})", marks.join(", "))
        })
        .collect();
    groups.join(", ")
}

/// How long a statement waits for a PostgreSQL connection (see `Store::connect`).
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

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
            let file = options.get_filename().to_path_buf();
            let checkpointer = checkpoint::Checkpointer::new();
            let hook = checkpointer.hook();
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                // A local file needs no liveness check; on the one writer it cost a round trip per turn.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(60))
                // Every writer connection, a replacement too, reports its commits to the checkpointer.
                .after_connect(move |conn, _| {
                    let hook = hook.clone();
                    Box::pin(async move { hook.install(conn).await })
                })
                // Pages freed by retention's purge can be given back to the file system
                // (`Store::return_free_pages`). Takes effect only on a new file (the writer
                // creates it); an existing one is converted by `hookwarden storage compact`
                // (a VACUUM, offline). Readers cannot set it: they are read-only.
                .connect_with(
                    options
                        .clone()
                        .auto_vacuum(sqlx::sqlite::SqliteAutoVacuum::Incremental)
                        .statement_cache_capacity(WRITER_STATEMENTS),
                )
                .await?;
            SQLITE_MIGRATIONS.run(&write).await?;
            // The last row's: `seq` and the rowid both grow with every insert on the one writer
            // (migration 0005 numbered the rows before it by their rowids), so the row with the
            // largest rowid holds the largest `seq`. One step from the end of the table;
            // `MAX(seq)` would read all of it (~1 s per million events here) or need an index
            // on `seq`, which would cost every ingested event a B-tree insert.
            let last_seq: i64 =
                sqlx::query_scalar("SELECT COALESCE((SELECT seq FROM events ORDER BY rowid DESC LIMIT 1), 0)")
                    .fetch_one(&write)
                    .await?;
            // Readers cannot write: a statement sent to the wrong pool fails in every test.
            let read = SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(options.read_only(true))
                .await?;
            checkpointer.start(&file)?;
            Ok(Self {
                pool: Pool::Sqlite {
                    read,
                    write,
                    leases: Default::default(),
                    file: file.into(),
                    checkpointer,
                    last_seq: std::sync::Arc::new(last_seq.into()),
                },
                health: Default::default(),
                group_commits: Default::default(),
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url)?.options([("synchronous_commit", "on")]);
            let pool = PgPoolOptions::new()
                .max_connections(32)
                // While PostgreSQL is down or restarting, an acquire retries the connection
                // until this runs out: a provider then hears 503 within it, not after its own
                // timeout, and retries later.
                .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            // Several gateways may start at once on one database; the lock serialises them.
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock(4242001)").execute(&mut *conn).await?;
            let migrated = POSTGRES_MIGRATIONS.run(&mut *conn).await;
            sqlx::query("SELECT pg_advisory_unlock(4242001)").execute(&mut *conn).await?;
            migrated?;
            drop(conn);
            Ok(Self { pool: Pool::Postgres(pool), health: Default::default(), group_commits: Default::default() })
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

    /// Makes this process the only gateway on a SQLite file, for as long as the returned lock
    /// file stays open (the OS releases it when the process ends, even on `kill -9`). SQLite
    /// leases live in memory, so a second gateway on the same file would resend events.
    /// `None` on PostgreSQL, where gateways share a database by design.
    pub fn lock_sole_gateway(&self) -> Result<Option<std::fs::File>, StoreError> {
        let Pool::Sqlite { file, .. } = &self.pool else {
            return Ok(None);
        };
        let mut path = file.as_os_str().to_owned();
        path.push(".gateway-lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::LockFile(format!("cannot open {}: {e}", path.display())))?;
        match lock.try_lock() {
            Ok(()) => Ok(Some(lock)),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(path.display().to_string())),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(StoreError::LockFile(format!("cannot lock {}: {e}", path.display())))
            }
        }
    }

    /// The SQLite writer's `synchronous` level (2 = FULL), for diagnostics and the test that
    /// every write path leaves it at full durability; `None` on PostgreSQL.
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

    /// Checkpoint passes of the checkpointer thread that found WAL frames copied into the
    /// database file (SQLite; 0 on PostgreSQL).
    pub fn checkpoints_run(&self) -> u64 {
        match &self.pool {
            Pool::Sqlite { checkpointer, .. } => checkpointer.checkpoints(),
            Pool::Postgres(_) => 0,
        }
    }

    pub async fn close(&self) {
        if let Pool::Sqlite { write, checkpointer, .. } = &self.pool {
            checkpointer.stop().await;
            write.close().await;
        }
        with_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, PREPARED_ROWS, SqlTexts, row_marks};

    fn marks(backend: Backend, rows: usize) -> String {
        format!("VALUES {}", row_marks(backend, rows, 2, 1))
    }

    static MARKS: SqlTexts = SqlTexts::new(marks);

    #[test]
    fn cached_texts_are_the_built_ones_for_every_row_count() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            for rows in [1, 2, 17, PREPARED_ROWS, PREPARED_ROWS + 1, 500] {
                assert_eq!(MARKS.get(backend, rows).0, marks(backend, rows), "{backend:?}, {rows} rows");
            }
        }
        assert_eq!(MARKS.get(Backend::Postgres, 2).0, "VALUES ($1, $2), ($3, $4)");
    }
}
