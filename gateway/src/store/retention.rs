//! Retention's statements: purging settled payloads, whole events past their age, and the
//! body hashes past their window, in small batches of their own transactions.
//!
//! Each batch picks its events and deletes them in one short transaction, so the writer (on
//! SQLite the one connection every ingest waits for) is never held for long; the pick re-reads
//! every condition inside that transaction (on PostgreSQL locking the picked rows, skipping
//! those another transaction holds), so what changed since the last batch is seen. An event is
//! never purged while a retry is pending for it (`next_attempt_at`) or while a running replay
//! holds an item of it. The audit log is never touched.
//!
//! Batches walk a table in id order from a cursor, bounded above by the id of the latest
//! cutoff (event ids start with their received time), so a pass reads each row once and
//! never the events too young to go.
//!
//! On SQLite a batch runs on the writer's own handle, all at once, and commits without an
//! fsync of its own (`synchronous = NORMAL` for it alone, see
//! `commit_sqlite::with_synchronous`): the fsync was most of what a small batch held the one
//! writer for, and so what every ingest waiting behind it waited for. A purge lost to a power
//! cut brings its rows back (the next commit at FULL, an ingest's, makes it durable), and the
//! next run purges them again; nothing that must be kept depends on it.

use std::time::{Duration, Instant};

use rusqlite::{Transaction, TransactionBehavior, params_from_iter};

use super::commit::on_sqlite_writer;
use super::selection::bind_all;
use super::{Backend, Pool, SqlParam, Store, StoreError, mark};

/// The PostgreSQL advisory lock only the purging gateway holds.
const PURGE_LOCK: i64 = 4_242_017;

/// Unix-ms cutoffs of one source: what was received before each may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cutoffs {
    /// Payloads of settled events.
    pub payloads: i64,
    /// Settled events, whole.
    pub events: i64,
    /// Unsettled events (gaps), whole.
    pub unsettled: i64,
    /// Body hashes (`body_dedup_window`); `i64::MAX` for a source without a window.
    pub body_hashes: i64,
}

/// Cutoffs per source, and for every source not named (one removed from the config).
#[derive(Debug, Clone)]
pub struct PurgePlan {
    pub sources: Vec<(String, Cutoffs)>,
    pub others: Cutoffs,
    /// When the purge runs (unix ms): `payload_purged_at`.
    pub now: i64,
    /// The sources that archive before a purge: of theirs only events the archive wrote
    /// (`archived_at`) may go.
    pub archiving: Vec<String>,
}

/// Rows one batch removed, and how long it held the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchPurged {
    /// Events the batch picked (payloads, or whole events); fewer than asked: the pass is done.
    pub picked: usize,
    /// Rows deleted over every table (events, payloads, attempts, receipts, replay items, hashes).
    pub rows: u64,
    /// From the transaction's begin to the end of its commit (waiting for the writer not
    /// counted): on SQLite how long every other write waited behind it.
    pub held: Duration,
    /// Of that, the statements before the commit: what grows with the batch (the commit costs
    /// about the same for any size: an fsync on PostgreSQL, little on SQLite, whose purge
    /// commits skip theirs). The purger sizes batches by it.
    pub work: Duration,
}

/// Where a pass is: the last id it picked.
pub type Cursor = Option<String>;

/// Held by the one gateway purging a PostgreSQL database (`None` inside on SQLite, which has
/// one gateway per file). Dropping it closes its connection, which ends the lock.
pub struct PurgeLock {
    _conn: Option<sqlx::pool::PoolConnection<sqlx::Postgres>>,
}

pub(super) const SETTLED: &str = "(e.outcome = 'confirmed' OR e.resolved_at IS NOT NULL)";
/// Neither a pending retry nor a running replay holds the event.
pub(super) const FREE: &str = "e.next_attempt_at IS NULL AND NOT EXISTS (SELECT 1 FROM replay_items ri \
     JOIN replays r ON r.id = ri.replay_id WHERE ri.event_id = e.id AND r.state = 'running')";

/// The smallest event id of an event received at `ms` (ids are `evt_` and a ULID, whose
/// first ten characters are the time).
pub(super) fn id_bound(ms: i64) -> String {
    format!("evt_{}", ulid::Ulid::from_parts(ms.clamp(0, (1 << 48) - 1) as u64, 0))
}

/// Statement text numbered for its backend, with its parameters in binding order.
pub(super) struct Sql {
    backend: Backend,
    pub(super) text: String,
    pub(super) params: Vec<SqlParam>,
}

impl Sql {
    pub(super) fn new(backend: Backend) -> Self {
        Self { backend, text: String::new(), params: Vec::new() }
    }

    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(super) fn param(&mut self, p: SqlParam) -> &mut Self {
        self.params.push(p);
        let m = mark(self.backend, self.params.len());
        self.text.push_str(&m);
        self
    }

    /// `CASE <column> WHEN 'a' THEN x … ELSE other END`: the cutoff of each row's source.
    pub(super) fn cutoff(&mut self, column: &str, plan: &PurgePlan, pick: fn(&Cutoffs) -> i64) -> &mut Self {
        if plan.sources.is_empty() {
            // A CASE needs a WHEN: every source is one of the others.
            return self.param(SqlParam::Int(pick(&plan.others)));
        }
        self.push(&format!("(CASE {column}"));
        for (source, cutoffs) in &plan.sources {
            self.push(" WHEN ").param(SqlParam::Text(source.clone()));
            self.push(" THEN ").param(SqlParam::Int(pick(cutoffs)));
        }
        self.push(" ELSE ").param(SqlParam::Int(pick(&plan.others))).push(" END)")
    }

    /// ` AND …`: an archiving source's event only once the archive wrote it.
    fn archived_first(&mut self, plan: &PurgePlan) -> &mut Self {
        if plan.archiving.is_empty() {
            return self;
        }
        self.push(" AND (e.archived_at IS NOT NULL OR e.source NOT IN ").ids_in(&plan.archiving).push(")")
    }

    pub(super) fn ids_in(&mut self, ids: &[String]) -> &mut Self {
        self.push("(");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.param(SqlParam::Text(id.clone()));
        }
        self.push(")")
    }
}

impl PurgePlan {
    pub(super) fn latest(&self, pick: fn(&Cutoffs) -> i64) -> i64 {
        self.sources.iter().map(|(_, c)| pick(c)).chain([pick(&self.others)]).max().unwrap_or(i64::MIN)
    }

    fn earliest(&self, pick: fn(&Cutoffs) -> i64) -> i64 {
        self.sources.iter().map(|(_, c)| pick(c)).chain([pick(&self.others)]).min().unwrap_or(i64::MIN)
    }
}

impl Store {
    /// Takes the purge for this gateway: on PostgreSQL the advisory lock, on a connection of
    /// its own, unless another gateway holds it (`None`: that one purges now). On SQLite
    /// there is one gateway per file: always granted.
    pub async fn purge_lock(&self) -> Result<Option<PurgeLock>, StoreError> {
        match &self.pool {
            Pool::Sqlite { .. } => Ok(Some(PurgeLock { _conn: None })),
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await?;
                // Whatever happens next, the connection is closed, not reused: that ends the
                // session lock even when the purge stops half-way.
                conn.close_on_drop();
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(PURGE_LOCK)
                    .fetch_one(&mut *conn)
                    .await?;
                Ok(got.then_some(PurgeLock { _conn: Some(conn) }))
            }
        }
    }

    /// Purges the payloads (headers and body) of up to `limit` settled, free events received
    /// before their source's cutoff, after `cursor`; their rows stay, marked with `plan.now`.
    /// Not those past their `events` cutoff too: [`Store::purge_events`] takes them whole in
    /// the same run, payload and all, and marking a row about to go is work for nothing (with
    /// `payloads` = `events` it was half the purge's).
    pub async fn purge_payloads(
        &self,
        plan: &PurgePlan,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<(BatchPurged, Cursor), StoreError> {
        let backend = self.backend();
        // Every event received before the earliest `events` cutoff goes whole: the pass starts
        // after them (from the millisecond before, whose events all go whole too).
        let first = id_bound(plan.earliest(|c| c.events).saturating_sub(1));
        let after = cursor.clone().unwrap_or_default().max(first);
        let mut pick = Sql::new(backend);
        pick.push("SELECT p.event_id FROM event_payloads p JOIN events e ON e.id = p.event_id WHERE p.event_id > ")
            .param(SqlParam::Text(after))
            .push(" AND p.event_id < ")
            .param(SqlParam::Text(id_bound(plan.latest(|c| c.payloads))))
            .push(&format!(" AND {SETTLED} AND {FREE} AND e.received_at < "))
            .cutoff("e.source", plan, |c| c.payloads)
            .push(" AND e.received_at >= ")
            .cutoff("e.source", plan, |c| c.events)
            .archived_first(plan)
            .push(" ORDER BY p.event_id LIMIT ")
            .param(SqlParam::Int(limit as i64));
        if backend == Backend::Postgres {
            pick.push(" FOR UPDATE OF e SKIP LOCKED");
        }
        let purged = self
            .purge_batch(
                pick,
                &[
                    OverIds { head: "DELETE FROM event_payloads WHERE event_id".into(), counted: true },
                    // A number the purger made, not a user's value: the text stays one per run.
                    OverIds {
                        head: format!("UPDATE events SET payload_purged_at = {} WHERE id", plan.now),
                        counted: false,
                    },
                ],
            )
            .await?;
        Ok(purged.with_cursor(cursor))
    }

    /// Purges up to `limit` whole events, after `cursor`: settled ones received before their
    /// source's `events` cutoff, unsettled ones before its `unsettled` cutoff, none a retry or
    /// a running replay holds; with each its payload, attempts, receipts and replay items
    /// (and so its dedup key, a column of its row).
    pub async fn purge_events(
        &self,
        plan: &PurgePlan,
        cursor: &Cursor,
        limit: usize,
    ) -> Result<(BatchPurged, Cursor), StoreError> {
        let backend = self.backend();
        let mut pick = Sql::new(backend);
        pick.push("SELECT e.id FROM events e WHERE e.id > ")
            .param(SqlParam::Text(cursor.clone().unwrap_or_default()))
            .push(" AND e.id < ")
            .param(SqlParam::Text(id_bound(plan.latest(|c| c.events.max(c.unsettled)))))
            .push(&format!(" AND {FREE} AND (({SETTLED} AND e.received_at < "))
            .cutoff("e.source", plan, |c| c.events)
            .push(&format!(") OR (NOT {SETTLED} AND e.received_at < "))
            .cutoff("e.source", plan, |c| c.unsettled)
            .push("))")
            .archived_first(plan)
            .push(" ORDER BY e.id LIMIT ")
            .param(SqlParam::Int(limit as i64));
        if backend == Backend::Postgres {
            pick.push(" FOR UPDATE SKIP LOCKED");
        }
        let purged = self
            .purge_batch(
                pick,
                // Children first: on PostgreSQL attempts and receipts reference the event.
                &[
                    ("replay_items", "event_id"),
                    ("attempts", "event_id"),
                    ("receipts", "event_id"),
                    ("event_payloads", "event_id"),
                    ("events", "id"),
                ]
                .map(|(table, column)| OverIds { head: format!("DELETE FROM {table} WHERE {column}"), counted: true }),
            )
            .await?;
        Ok(purged.with_cursor(cursor))
    }

    /// One batch in one transaction: the events `pick` selects, and `then` run over their ids.
    /// On SQLite on the writer's handle without an fsync of its own (see the module's doc).
    async fn purge_batch(&self, pick: Sql, then: &[OverIds]) -> Result<PickedBatch, StoreError> {
        match &self.pool {
            Pool::Sqlite { write, .. } => {
                on_sqlite_writer(write, true, |db| {
                    let began = Instant::now();
                    let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
                    let ids = tx
                        .prepare(&pick.text)?
                        .query_map(params_from_iter(&pick.params), |row| row.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()?;
                    let mut rows = 0;
                    if !ids.is_empty() {
                        let marks = vec!["?"; ids.len()].join(", ");
                        for statement in then {
                            let n = tx.execute(&format!("{} IN ({marks})", statement.head), params_from_iter(&ids))?;
                            if statement.counted {
                                rows += n as u64;
                            }
                        }
                    }
                    let work = began.elapsed();
                    tx.commit()?;
                    Ok(PickedBatch { ids, rows, work, held: began.elapsed() })
                })
                .await
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let began = Instant::now();
                let ids: Vec<String> = bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(pick.text)), &pick.params)
                    .fetch_all(&mut *tx)
                    .await?;
                let mut rows = 0;
                if !ids.is_empty() {
                    for statement in then {
                        // The ids as one array: one text for every batch, prepared once per
                        // connection (a list of marks was a new statement to parse and plan
                        // each time, six per batch).
                        let text = format!("{} = ANY($1)", statement.head);
                        let done = sqlx::query(sqlx::AssertSqlSafe(text)).bind(&ids).execute(&mut *tx).await?;
                        if statement.counted {
                            rows += done.rows_affected();
                        }
                    }
                }
                let work = began.elapsed();
                tx.commit().await?;
                Ok(PickedBatch { ids, rows, work, held: began.elapsed() })
            }
        }
    }

    /// Deletes up to `limit` body hashes seen before their source's window (past it a body
    /// is no repeat, and the row only takes room).
    pub async fn purge_body_hashes(&self, plan: &PurgePlan, limit: usize) -> Result<BatchPurged, StoreError> {
        let backend = self.backend();
        let mut delete = Sql::new(backend);
        delete
            .push("DELETE FROM body_hashes WHERE (source, body_sha256) IN (SELECT source, body_sha256 FROM body_hashes b ")
            .push("WHERE b.received_at < ")
            .cutoff("b.source", plan, |c| c.body_hashes)
            .push(" LIMIT ")
            .param(SqlParam::Int(limit as i64))
            .push(")");
        match &self.pool {
            Pool::Sqlite { write, .. } => {
                on_sqlite_writer(write, true, |db| {
                    let began = Instant::now();
                    let rows = db.execute(&delete.text, params_from_iter(&delete.params))? as u64;
                    let held = began.elapsed();
                    Ok(BatchPurged { picked: rows as usize, rows, held, work: held })
                })
                .await
            }
            Pool::Postgres(pool) => {
                let began = Instant::now();
                let rows = bind_all!(sqlx::query(sqlx::AssertSqlSafe(delete.text)), &delete.params)
                    .execute(pool)
                    .await?
                    .rows_affected();
                let held = began.elapsed();
                Ok(BatchPurged { picked: rows as usize, rows, held, work: held })
            }
        }
    }
}

/// A statement over a batch's picked events: `head` (`DELETE FROM t WHERE column`) and the
/// condition on the ids; `counted`: whether its rows count as purged.
struct OverIds {
    head: String,
    counted: bool,
}

/// A batch's picked ids, rows deleted, and times (see [`BatchPurged`]).
struct PickedBatch {
    ids: Vec<String>,
    rows: u64,
    work: Duration,
    held: Duration,
}

impl PickedBatch {
    /// What the batch did, and where the pass goes on: after its last id (the same cursor
    /// when it picked nothing).
    fn with_cursor(self, cursor: &Cursor) -> (BatchPurged, Cursor) {
        let purged = BatchPurged { picked: self.ids.len(), rows: self.rows, held: self.held, work: self.work };
        (purged, self.ids.last().cloned().or_else(|| cursor.clone()))
    }
}

/// What one source keeps in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SourceStorage {
    pub source: String,
    /// Event rows (with or without their payload).
    pub events: i64,
    /// Of those, how many still have their payload.
    pub payloads: i64,
    /// Bytes of the payloads kept (bodies and headers as stored).
    pub payload_bytes: i64,
    /// Events whose payload retention purged (their rows kept).
    pub payloads_purged: i64,
    /// When the oldest unsettled event (a gap) was received (unix ms).
    pub oldest_unsettled_at: Option<i64>,
}

/// The database as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DatabaseStorage {
    /// Bytes of the database (SQLite: the file's pages; PostgreSQL: the database).
    pub bytes: i64,
    /// Of those, bytes free for reuse inside the file (SQLite's free pages; `None` on PostgreSQL).
    pub free_bytes: Option<i64>,
}

/// A byte count of the storage figures as people read it (binary units, one decimal), for
/// the console and `hookwarden storage` alike.
pub fn format_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

impl Store {
    /// Per source: events, payloads and their bytes, the oldest gap. A read of every event
    /// (on SQLite a reader, beside the writer): for `/v1/storage` and the purger's gauges,
    /// not for every request.
    pub async fn storage_by_source(&self) -> Result<Vec<SourceStorage>, StoreError> {
        let bytes = match self.backend() {
            Backend::Sqlite => "length(p.body) + length(CAST(p.headers AS BLOB))",
            Backend::Postgres => "octet_length(p.body) + octet_length(p.headers)",
        };
        let sql = format!(
            "SELECT e.source, COUNT(*), COUNT(p.event_id), CAST(COALESCE(SUM({bytes}), 0) AS BIGINT), \
             COUNT(e.payload_purged_at), MIN(CASE WHEN NOT {SETTLED} THEN e.received_at END) \
             FROM events e LEFT JOIN event_payloads p ON p.event_id = e.id GROUP BY e.source ORDER BY e.source"
        );
        let rows: Vec<(String, i64, i64, i64, i64, Option<i64>)> = super::with_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(source, events, payloads, payload_bytes, payloads_purged, oldest_unsettled_at)| SourceStorage {
                source,
                events,
                payloads,
                payload_bytes,
                payloads_purged,
                oldest_unsettled_at,
            })
            .collect())
    }

    /// The database's size, and on SQLite how much of it is free pages.
    pub async fn database_storage(&self) -> Result<DatabaseStorage, StoreError> {
        match &self.pool {
            Pool::Sqlite { read, .. } => {
                let (pages, free, size): (i64, i64, i64) = sqlx::query_as(
                    "SELECT (SELECT page_count FROM pragma_page_count()), \
                     (SELECT freelist_count FROM pragma_freelist_count()), (SELECT page_size FROM pragma_page_size())",
                )
                .fetch_one(read)
                .await?;
                Ok(DatabaseStorage { bytes: pages * size, free_bytes: Some(free * size) })
            }
            Pool::Postgres(pool) => {
                let bytes: i64 =
                    sqlx::query_scalar("SELECT pg_database_size(current_database())").fetch_one(pool).await?;
                Ok(DatabaseStorage { bytes, free_bytes: None })
            }
        }
    }

    /// SQLite: gives up to `pages` free pages back to the file system (`incremental_vacuum`,
    /// which needs `auto_vacuum = INCREMENTAL`: every new database is made so); how many
    /// free pages are left, and how long the step held the writer. 0 on PostgreSQL, whose
    /// autovacuum does its own.
    pub async fn return_free_pages(&self, pages: i64) -> Result<(i64, Duration), StoreError> {
        match &self.pool {
            Pool::Sqlite { write, .. } => {
                // Without an fsync of its own, like the purge's batches: pages lost to a power
                // cut are free pages again, given back by the next run.
                on_sqlite_writer(write, true, |db| {
                    let began = Instant::now();
                    let mut vacuum = db.prepare(&format!("PRAGMA incremental_vacuum({})", pages.max(1)))?;
                    // Stepped to its end, whether or not it answers rows.
                    let mut steps = vacuum.raw_query();
                    while steps.next()?.is_some() {}
                    drop(steps);
                    let left = db.query_row("PRAGMA freelist_count", [], |row| row.get(0))?;
                    Ok((left, began.elapsed()))
                })
                .await
            }
            Pool::Postgres(_) => Ok((0, Duration::ZERO)),
        }
    }

    /// SQLite: rewrites the whole file (`VACUUM`) with `auto_vacuum = INCREMENTAL`, the
    /// migration path of a file made before it was the default; its free pages go back to the
    /// file system on the way. Needs the gateway stopped (the caller holds its lock) and
    /// room for a second copy of the file. Nothing to do on PostgreSQL.
    pub async fn compact(&self) -> Result<(), StoreError> {
        if let Pool::Sqlite { write, .. } = &self.pool {
            let mut conn = write.acquire().await?;
            sqlx::query("PRAGMA auto_vacuum = INCREMENTAL").execute(&mut *conn).await?;
            sqlx::query("VACUUM").execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// SQLite: the file's pages, and of those the free ones; `None` on PostgreSQL.
    pub async fn page_counts(&self) -> Result<Option<(i64, i64)>, StoreError> {
        match &self.pool {
            Pool::Sqlite { read, .. } => Ok(Some(
                sqlx::query_as(
                    "SELECT (SELECT page_count FROM pragma_page_count()), \
                     (SELECT freelist_count FROM pragma_freelist_count())",
                )
                .fetch_one(read)
                .await?,
            )),
            Pool::Postgres(_) => Ok(None),
        }
    }

    /// SQLite's `auto_vacuum` mode: 0 none, 1 full, 2 incremental; `None` on PostgreSQL.
    pub async fn auto_vacuum(&self) -> Result<Option<i64>, StoreError> {
        match &self.pool {
            Pool::Sqlite { read, .. } => Ok(Some(sqlx::query_scalar("PRAGMA auto_vacuum").fetch_one(read).await?)),
            Pool::Postgres(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::id_bound;

    #[test]
    fn an_id_bound_sorts_between_the_ids_of_the_millisecond_before_and_its_own() {
        let ms = 1_765_000_000_123;
        let id = |ms: i64| format!("evt_{}", ulid::Ulid::from_parts(ms as u64, u128::MAX >> 48));
        assert!(id(ms - 1) < id_bound(ms));
        assert!(id_bound(ms) <= format!("evt_{}", ulid::Ulid::from_parts(ms as u64, 0)));
        assert!(id_bound(ms) < id(ms));
    }

    #[test]
    fn bytes_read_as_people_read_them() {
        assert_eq!(super::format_bytes(0), "0 B");
        assert_eq!(super::format_bytes(1023), "1023 B");
        assert_eq!(super::format_bytes(1536), "1.5 KiB");
        assert_eq!(super::format_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }
}
