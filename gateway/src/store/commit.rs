//! The one transaction that inbound events and attempt results share.
//!
//! On SQLite every write goes through one connection, so each transaction costs the whole
//! gateway a turn and an fsync. Committing a cycle's new events together with the results of
//! the deliveries that finished meanwhile pays that once, and leaves both fully durable.
//!
//! On SQLite the commit task runs the transaction itself on the writer's handle
//! ([`super::commit_sqlite`]). On PostgreSQL it goes through sqlx in multi-row statements,
//! chunks of at most `PREPARED_ROWS` rows with every row count kept prepared
//! (`keep_prepared`, here and for receipts): each count is a text of its own, and parsing it
//! afresh on most commits was ~12% of the instructions per ingested event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::delivery::{
    ATTEMPT_ROWS, CONFIRMED_WITHOUT_RECEIPT, DELIVERED_MANY, EXHAUSTED, OWNED, REPLAY_DELIVERED, REPLAY_FAILED, RETRY,
    insert_attempts_sql,
};
use super::ingest::{EXISTING, ROWS_PER_STATEMENT, insert_payloads_sql, insert_sql};
use super::{
    AttemptRecord, Backend, Batcher, Completion, Handoff, Pool, SqlTexts, Store, StoreError, Workers, body_dedup,
    commit_sqlite, keep_prepared, row_marks,
};
use crate::domain::{BodyDedup, EventId, NewEvent, Stored};

impl Store {
    /// Stores `events` and records `attempts` in one transaction.
    ///
    /// Events: a provider's repeat (same source and dedup key, also within the batch) is not
    /// stored again and answers the first event's id. Attempts: `true` when the gateway still
    /// held the event's lease and the schedule was updated; `false` when the lease had passed
    /// to another gateway, which then owns the schedule (the attempt is recorded either way).
    /// On PostgreSQL a 2xx, the common case, costs one statement per batch; its
    /// `delivered_at` is the batch's latest time.
    pub async fn commit_group(
        &self,
        events: &[NewEvent],
        attempts: &[AttemptRecord],
    ) -> Result<(Vec<Stored>, Vec<bool>), StoreError> {
        self.commit_group_with(events, attempts, false).await
    }

    /// Records replay attempts. On SQLite their commit skips its own fsync (`synchronous =
    /// NORMAL` for this one transaction): each item was marked `sending` durably before it
    /// went out and its result is committed with a full fsync after this (which, the WAL
    /// being ordered, makes this one durable too), so a power loss in between costs the
    /// history row of an attempt, never a second send. It spares the executor an fsync per
    /// batch of attempts on the single writer.
    pub async fn record_replay_attempts(&self, attempts: &[AttemptRecord]) -> Result<Vec<bool>, StoreError> {
        Ok(self.commit_group_with(&[], attempts, true).await?.1)
    }

    async fn commit_group_with(
        &self,
        events: &[NewEvent],
        attempts: &[AttemptRecord],
        relaxed: bool,
    ) -> Result<(Vec<Stored>, Vec<bool>), StoreError> {
        let headers: Vec<String> =
            events.iter().map(|e| serde_json::to_string(&e.headers).expect("headers serialise")).collect();
        let written = self.write_group(events, &headers, attempts, relaxed).await;
        self.health.note(&written);
        self.group_commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        written
    }

    /// How many group commits (ingest, delivery results) this store has run: a count that
    /// moved says others used the writer meanwhile.
    pub fn group_commits(&self) -> u64 {
        self.group_commits.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn write_group(
        &self,
        events: &[NewEvent],
        headers: &[String],
        attempts: &[AttemptRecord],
        relaxed: bool,
    ) -> Result<(Vec<Stored>, Vec<bool>), StoreError> {
        match &self.pool {
            Pool::Sqlite { write, leases, last_seq, .. } => {
                // Leases live in memory on SQLite: checked before the transaction.
                let held: Vec<bool> = attempts
                    .iter()
                    .map(|r| match r.completion {
                        Completion::Replayed { .. } => true,
                        _ => leases.owned_by(r.event_id.as_str(), &r.gateway),
                    })
                    .collect();
                let stored = on_sqlite_writer(write, relaxed, |db| {
                    commit_sqlite::write_group(db, events, headers, attempts, &held, last_seq)
                })
                .await?;
                // A lease ends only once the result is committed: a claim in between would resend.
                leases.release(
                    attempts
                        .iter()
                        .filter(|r| !matches!(r.completion, Completion::Replayed { .. }))
                        .map(|r| (r.gateway.as_str(), r.event_id.as_str())),
                );
                Ok((stored, held))
            }
            Pool::Postgres(pool) => write_postgres(pool, events, headers, attempts).await,
        }
    }
}

/// Runs `f` on the SQLite writer's own handle (see [`super::commit_sqlite`]), in one go: no
/// await in between, so no cancelled task can leave the handle half-way. `relaxed` runs it
/// with `synchronous = NORMAL` (its commits without an fsync of their own) and gives the
/// handle back at FULL: every other write needs its fsync. After an error the connection may
/// be inside a transaction (its rollback failed) or relaxed (its setting could not be
/// restored): it is closed, never reused.
pub(super) async fn on_sqlite_writer<R>(
    write: &sqlx::SqlitePool,
    relaxed: bool,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R>,
) -> Result<R, StoreError> {
    let mut conn = write.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let done = off_the_runtime(|| {
        // SAFETY: sqlx makes no call on the handle while `handle` is locked, and `db` (which
        // does not close a handle it did not open) and its statements are gone before
        // `handle` is unlocked.
        let db = unsafe { rusqlite::Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
        commit_sqlite::with_synchronous(&db, relaxed, f)
    });
    drop(handle);
    if done.is_err() {
        conn.close_on_drop();
    }
    Ok(done?)
}

/// Runs `f`, which blocks on the SQLite file, so that it holds up no other task: on the
/// multi-threaded runtime the worker's other tasks move elsewhere meanwhile. The ingest
/// group commit runs on a thread of its own (a current-thread runtime) and just blocks.
fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|runtime| runtime.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The group commit on PostgreSQL: multi-row statements through sqlx, each schedule update
/// checking the lease in its row (several gateways share the database).
async fn write_postgres(
    pool: &sqlx::PgPool,
    events: &[NewEvent],
    headers: &[String],
    attempts: &[AttemptRecord],
) -> Result<(Vec<Stored>, Vec<bool>), StoreError> {
    let backend = Backend::Postgres;
    let mut held: Vec<bool> = attempts.iter().map(|r| matches!(r.completion, Completion::Replayed { .. })).collect();
    let mut stored = Vec::with_capacity(events.len());
    let mut tx = pool.begin().await?;

    // Bodies seen within their source's window make their events repeats before any insert;
    // claimed in one order, so two transactions claiming the same bodies cannot deadlock.
    let mut repeats: HashMap<usize, EventId> = HashMap::new();
    let mut claims: Vec<(usize, &NewEvent, &BodyDedup)> =
        events.iter().enumerate().filter_map(|(i, e)| Some((i, e, e.body_dedup.as_ref()?))).collect();
    claims.sort_by(|a, b| (&a.1.source, &a.2.sha256).cmp(&(&b.1.source, &b.2.sha256)));
    for (i, event, dedup) in claims {
        let claimed = sqlx::query(body_dedup::CLAIM)
            .bind(&event.source)
            .bind(&dedup.sha256)
            .bind(event.id.as_str())
            .bind(event.received_at)
            .bind(dedup.since)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed == 0 {
            let first: String = sqlx::query_scalar(body_dedup::FIRST)
                .bind(&event.source)
                .bind(&dedup.sha256)
                .fetch_one(&mut *tx)
                .await?;
            repeats.insert(i, EventId::from_stored(first));
        }
    }
    let (to_insert, to_insert_headers): (Vec<&NewEvent>, Vec<&String>) =
        events.iter().zip(headers).enumerate().filter(|(i, _)| !repeats.contains_key(i)).map(|(_, pair)| pair).unzip();

    let mut inserted: HashSet<&str> = HashSet::with_capacity(events.len());
    for (chunk, chunk_headers) in to_insert.chunks(ROWS_PER_STATEMENT).zip(to_insert_headers.chunks(ROWS_PER_STATEMENT))
    {
        let mut query = sqlx::query(INSERT_EVENTS.get(backend, chunk.len())).persistent(keep_prepared(chunk.len()));
        for event in chunk {
            query = query
                .bind(event.id.as_str())
                .bind(&event.source)
                .bind(&event.dedup_key)
                .bind(event.event_type.as_deref())
                .bind(event.received_at)
                .bind(event.received_at);
        }
        let rows = query.execute(&mut *tx).await?.rows_affected() as usize;
        // Usually nothing repeats and every row went in: no need to ask which.
        let new: HashSet<&str> = if rows == chunk.len() {
            chunk.iter().map(|e| e.id.as_str()).collect()
        } else {
            let sql = format!("SELECT id FROM events WHERE id IN {}", row_marks(backend, 1, chunk.len(), 1));
            let mut query =
                sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).persistent(keep_prepared(chunk.len()));
            for event in chunk {
                query = query.bind(event.id.as_str());
            }
            let found: HashSet<String> = query.fetch_all(&mut *tx).await?.into_iter().collect();
            chunk.iter().map(|e| e.id.as_str()).filter(|id| found.contains(*id)).collect()
        };
        let fresh: Vec<(&NewEvent, &String)> = chunk
            .iter()
            .zip(chunk_headers)
            .filter(|(e, _)| new.contains(e.id.as_str()))
            .map(|(e, h)| (*e, *h))
            .collect();
        if !fresh.is_empty() {
            let mut payloads =
                sqlx::query(INSERT_PAYLOADS.get(backend, fresh.len())).persistent(keep_prepared(fresh.len()));
            for (event, headers) in &fresh {
                payloads = payloads.bind(event.id.as_str()).bind(headers.as_str()).bind(&event.body[..]);
            }
            payloads.execute(&mut *tx).await?;
        }
        inserted.extend(new);
    }
    for (i, event) in events.iter().enumerate() {
        if let Some(first) = repeats.remove(&i) {
            stored.push(Stored::Duplicate(first));
            continue;
        }
        if inserted.contains(event.id.as_str()) {
            stored.push(Stored::New(event.id.clone()));
            continue;
        }
        let id: String =
            sqlx::query_scalar(EXISTING).bind(&event.source).bind(&event.dedup_key).fetch_one(&mut *tx).await?;
        if let Some(dedup) = &event.body_dedup {
            sqlx::query(body_dedup::POINT_AT)
                .bind(&event.source)
                .bind(&dedup.sha256)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        stored.push(Stored::Duplicate(EventId::from_stored(id)));
    }

    for chunk in attempts.chunks(ATTEMPT_ROWS) {
        let mut query = sqlx::query(INSERT_ATTEMPTS.get(backend, chunk.len())).persistent(keep_prepared(chunk.len()));
        for r in chunk {
            query = query
                .bind(r.event_id.as_str())
                .bind(r.event_id.as_str())
                .bind(r.kind.as_str())
                .bind(r.replay_id.as_deref())
                .bind(&r.gateway)
                .bind(r.started_at)
                .bind(r.latency_ms)
                .bind(r.status_code)
                .bind(r.error.as_deref())
                .bind(r.response_excerpt.as_deref());
        }
        query.execute(&mut *tx).await?;
    }
    let owned = |sql: &str| sqlx::AssertSqlSafe(format!("{sql}{OWNED}"));
    let mut delivered: Vec<(usize, &AttemptRecord)> = Vec::new();
    for (i, r) in attempts.iter().enumerate() {
        let update = match r.completion {
            Completion::Delivered { .. } => {
                delivered.push((i, r));
                continue;
            }
            Completion::RetryAt(at) => sqlx::query(owned(RETRY)).bind(r.event_id.as_str()).bind(at).bind(&r.gateway),
            Completion::Exhausted => sqlx::query(owned(EXHAUSTED))
                .bind(r.event_id.as_str())
                .bind(crate::domain::EXHAUSTED_ERROR_CODE)
                .bind(&r.gateway),
            Completion::Replayed { delivered_at: Some(at) } => {
                sqlx::query(REPLAY_DELIVERED).bind(r.event_id.as_str()).bind(at)
            }
            Completion::Replayed { delivered_at: None } => sqlx::query(REPLAY_FAILED).bind(r.event_id.as_str()),
        };
        let updated = update.execute(&mut *tx).await?.rows_affected() == 1;
        held[i] = held[i] || updated;
    }
    // Delivered (the hot path): one UPDATE per gateway and chunk.
    delivered.sort_by(|a, b| a.1.gateway.cmp(&b.1.gateway));
    for group in delivered.chunk_by(|a, b| a.1.gateway == b.1.gateway) {
        for chunk in group.chunks(ATTEMPT_ROWS) {
            let at = chunk
                .iter()
                .map(|(_, r)| match r.completion {
                    Completion::Delivered { at } => at,
                    _ => 0,
                })
                .max()
                .unwrap_or(0);
            let mut query = sqlx::query_scalar::<_, String>(DELIVERED_OWNED.get(backend, chunk.len()))
                .persistent(keep_prepared(chunk.len()))
                .bind(at)
                .bind(&chunk[0].1.gateway);
            for (_, r) in chunk {
                query = query.bind(r.event_id.as_str());
            }
            let updated: HashSet<String> = query.fetch_all(&mut *tx).await?.into_iter().collect();
            for (i, r) in chunk {
                held[*i] = updated.contains(r.event_id.as_str());
            }
        }
    }
    // Events whose type needs no receipt, confirmed by their 2xx (after its update above).
    for (r, _) in attempts.iter().zip(&held).filter(|(_, held)| **held) {
        if let Some((reason, at)) = r.confirms() {
            sqlx::query(CONFIRMED_WITHOUT_RECEIPT)
                .bind(r.event_id.as_str())
                .bind(reason)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    Ok((stored, held))
}

static INSERT_EVENTS: SqlTexts = SqlTexts::new(insert_sql);
static INSERT_PAYLOADS: SqlTexts = SqlTexts::new(insert_payloads_sql);
static INSERT_ATTEMPTS: SqlTexts = SqlTexts::new(insert_attempts_sql);
static DELIVERED_OWNED: SqlTexts =
    SqlTexts::new(|backend, rows| format!("{DELIVERED_MANY} {} RETURNING id", row_marks(backend, 1, rows, 3)));

/// One write waiting for a group commit.
enum Write {
    Event(NewEvent),
    Attempt(AttemptRecord),
}

/// Its answer; errors as text, since a batch's error is every item's.
enum Written {
    Event(Result<Stored, String>),
    Attempt(Result<bool, String>),
}

/// Largest group commit.
const GROUP: usize = 512;
/// Concurrent group commits of inbound events on PostgreSQL, which commits them in parallel.
const POSTGRES_COMMITTERS: usize = 4;

/// The group commit of inbound events and attempt results. On SQLite both kinds share one
/// queue and so one transaction per cycle; on PostgreSQL inbound events commit in several
/// parallel transactions and results in their own.
#[derive(Clone)]
pub struct CommitQueue {
    events: Batcher<Write, Written>,
    attempts: Batcher<Write, Written>,
}

impl CommitQueue {
    /// `handoff` (SQLite) queues each group's new events for this gateway's dispatcher.
    pub fn spawn(store: &Store, handoff: Option<Handoff>) -> Self {
        let handoff = handoff.map(Arc::new);
        let write = move |store: Store, handoff: Option<Arc<Handoff>>| {
            move |writes: Vec<Write>| {
                let store = store.clone();
                let handoff = handoff.clone();
                async move {
                    let (mut events, mut attempts) = (Vec::new(), Vec::new());
                    let kinds: Vec<bool> = writes.iter().map(|w| matches!(w, Write::Event(_))).collect();
                    for write in writes {
                        match write {
                            Write::Event(e) => events.push(e),
                            Write::Attempt(a) => attempts.push(a),
                        }
                    }
                    if !events.is_empty() {
                        ::metrics::histogram!("hookwarden_ingest_batch_size").record(events.len() as f64);
                    }
                    let (stored, held) = match store.commit_and_hand_off(events, &attempts, handoff.as_deref()).await {
                        Ok((stored, held)) => (
                            stored.into_iter().map(Ok).collect::<Vec<_>>(),
                            held.into_iter().map(Ok).collect::<Vec<_>>(),
                        ),
                        Err(err) => (
                            kinds.iter().filter(|event| **event).map(|_| Err(err.to_string())).collect(),
                            attempts.iter().map(|_| Err(err.to_string())).collect(),
                        ),
                    };
                    let (mut stored, mut held) = (stored.into_iter(), held.into_iter());
                    kinds
                        .into_iter()
                        .map(|event| match event {
                            true => Written::Event(stored.next().expect("one answer per event")),
                            false => Written::Attempt(held.next().expect("one answer per attempt")),
                        })
                        .collect()
                }
            }
        };
        match store.backend() {
            Backend::Sqlite => {
                let one = Batcher::spawn(16_384, GROUP, Workers::OwnThread("hw-commit"), write(store.clone(), handoff));
                Self { events: one.clone(), attempts: one }
            }
            Backend::Postgres => Self {
                events: Batcher::spawn(16_384, GROUP, Workers::Shared(POSTGRES_COMMITTERS), write(store.clone(), None)),
                attempts: Batcher::spawn(4096, GROUP, Workers::Shared(1), write(store.clone(), None)),
            },
        }
    }

    /// Stores one inbound event once its group committed; `None` if the queue stopped.
    pub async fn event(&self, event: NewEvent) -> Option<Result<Stored, String>> {
        match self.events.submit(Write::Event(event)).await? {
            Written::Event(answer) => Some(answer),
            Written::Attempt(_) => unreachable!("an event is answered as an event"),
        }
    }

    /// Records one attempt's result once its group committed (see [`Store::commit_group`]).
    pub async fn attempt(&self, record: AttemptRecord) -> Option<Result<bool, String>> {
        match self.attempts.submit(Write::Attempt(record)).await? {
            Written::Attempt(answer) => Some(answer),
            Written::Event(_) => unreachable!("an attempt is answered as an attempt"),
        }
    }
}
