//! A transactional outbox for receipts, and an "already processed?" check, on sqlx.
//!
//! The handler writes its receipt into `hookwarden_receipt_outbox` in the SAME transaction
//! as its business write ([`enqueue`]); a flusher posts it after the commit ([`flush_once`],
//! [`spawn_flusher`]). So a receipt is sent if and only if the commit happened, also across a
//! crash: a rolled-back transaction takes its receipt with it, and a receipt committed just
//! before a crash is posted by the next flusher. Posts are at least once, under the receipt's
//! stored id, which the gateway treats as one idempotent receipt.
//!
//! [`already_processed`] marks an event processed in the caller's transaction and says
//! whether it already was, so replays and retries of an event apply it once.
//!
//! The same two tables answer the gateway's status probe ([`serve_probe`], [`answer_probe`]):
//! an event whose receipt was lost is settled by asking instead of being resent.
//!
//! Runs on SQLite, PostgreSQL, and either through `sqlx::Any` ([`Backend`]). Tables (created by
//! [`ensure_schema`]; times are unix milliseconds):
//!
//! ```sql
//! hookwarden_receipt_outbox(receipt_id TEXT PRIMARY KEY, event_id TEXT, body TEXT,
//!     created_at BIGINT, sent_at BIGINT NULL, attempts BIGINT, last_error TEXT NULL)
//! hookwarden_processed_events(event_id TEXT PRIMARY KEY, processed_at BIGINT)
//! ```
//!
//! A row with `sent_at` set and `last_error` NULL was accepted; with both set the gateway
//! refused it for good (a final 4xx other than 401), and it was put aside so it does not block
//! the queue.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Database, Pool, Transaction};
use tokio::sync::Notify;

use crate::client::{ClientError, ReceiptClient};
use crate::probe::{self, AnswerEntry, ProbeAnswer};
use crate::receipt::{Receipt, ReceiptError, ReceiptKey, ReceiptStatus, new_receipt_id};
use crate::webhook::WebhookSecret;

/// How many unsent receipts one query picks up.
const BATCH: i64 = 100;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hookwarden_receipt_outbox (
        receipt_id TEXT PRIMARY KEY,
        event_id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        sent_at BIGINT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        last_error TEXT NULL
    )",
    "CREATE INDEX IF NOT EXISTS hookwarden_receipt_outbox_unsent
        ON hookwarden_receipt_outbox (created_at) WHERE sent_at IS NULL",
    "CREATE TABLE IF NOT EXISTS hookwarden_processed_events (
        event_id TEXT PRIMARY KEY,
        processed_at BIGINT NOT NULL
    )",
];

/// PostgreSQL: two processes creating the same tables at once may collide; this
/// transaction-scoped lock makes them take turns.
const PG_SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(7261937401)";

/// Why an outbox call failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the receipt is not valid: {0}")]
    Receipt(#[from] ReceiptError),
}

/// What one [`flush_once`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Receipts the gateway accepted.
    pub sent: usize,
    /// Receipts the gateway refused for good (final 4xx), put aside with their error.
    pub rejected: usize,
    /// Set when the pass stopped early because the gateway was unreachable or answered
    /// 5xx; the receipts stay queued for the next pass.
    pub error: Option<String>,
}

/// Counts of the outbox's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub unsent: i64,
    pub sent: i64,
    pub rejected: i64,
}

mod sealed {
    pub trait Sealed {}
}

/// A database the outbox runs on: [`sqlx::Sqlite`], [`sqlx::Postgres`] or [`sqlx::Any`]
/// (connected to either). The methods are the outbox's SQL, written once in a macro below.
pub trait Backend: Database + sealed::Sealed {
    #[doc(hidden)]
    fn create_schema(conn: &mut Self::Connection) -> impl Future<Output = sqlx::Result<()>> + Send;
    #[doc(hidden)]
    fn insert_receipt(
        conn: &mut Self::Connection,
        receipt_id: &str,
        event_id: &str,
        body: &str,
        now_ms: i64,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// `true` when this call marked the event (it was not marked before).
    #[doc(hidden)]
    fn mark_processed(
        conn: &mut Self::Connection,
        event_id: &str,
        now_ms: i64,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// `(receipt_id, body)` of the oldest unsent receipts.
    #[doc(hidden)]
    fn unsent(pool: &Pool<Self>, limit: i64) -> impl Future<Output = sqlx::Result<Vec<(String, String)>>> + Send;
    /// Counts a try; `sent_at` set ends the receipt's life in the queue.
    #[doc(hidden)]
    fn record_try(
        pool: &Pool<Self>,
        receipt_id: &str,
        sent_at: Option<i64>,
        error: Option<&str>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    #[doc(hidden)]
    fn stats(pool: &Pool<Self>) -> impl Future<Output = sqlx::Result<OutboxStats>> + Send;
    /// `(receipt_id, event_id, body)` of the receipts kept for `event_ids` (not put aside),
    /// oldest first.
    #[doc(hidden)]
    fn stored_receipts(
        pool: &Pool<Self>,
        event_ids: &[String],
    ) -> impl Future<Output = sqlx::Result<Vec<(String, String, String)>>> + Send;
    /// Which of `event_ids` are marked processed.
    #[doc(hidden)]
    fn processed_among(
        pool: &Pool<Self>,
        event_ids: &[String],
    ) -> impl Future<Output = sqlx::Result<Vec<String>>> + Send;
}

/// Implements [`Backend`] for one sqlx database; `$is_postgres` tells from a connection
/// whether it talks to PostgreSQL. The SQL is portable: `$n` parameters (which SQLite also
/// takes) and `ON CONFLICT DO NOTHING` (SQLite 3.24+).
macro_rules! backend {
    ($db:ty, $is_postgres:expr) => {
        impl sealed::Sealed for $db {}

        impl Backend for $db {
            async fn create_schema(conn: &mut <$db as Database>::Connection) -> sqlx::Result<()> {
                let is_postgres: fn(&<$db as Database>::Connection) -> bool = $is_postgres;
                if is_postgres(conn) {
                    sqlx::query(PG_SCHEMA_LOCK).execute(&mut *conn).await?;
                }
                for statement in SCHEMA {
                    sqlx::query(*statement).execute(&mut *conn).await?;
                }
                Ok(())
            }

            async fn insert_receipt(
                conn: &mut <$db as Database>::Connection,
                receipt_id: &str,
                event_id: &str,
                body: &str,
                now_ms: i64,
            ) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO hookwarden_receipt_outbox (receipt_id, event_id, body, created_at, attempts)
                     VALUES ($1, $2, $3, $4, 0)",
                )
                .bind(receipt_id)
                .bind(event_id)
                .bind(body)
                .bind(now_ms)
                .execute(&mut *conn)
                .await?;
                Ok(())
            }

            async fn mark_processed(
                conn: &mut <$db as Database>::Connection,
                event_id: &str,
                now_ms: i64,
            ) -> sqlx::Result<bool> {
                let done = sqlx::query(
                    "INSERT INTO hookwarden_processed_events (event_id, processed_at) VALUES ($1, $2)
                     ON CONFLICT (event_id) DO NOTHING",
                )
                .bind(event_id)
                .bind(now_ms)
                .execute(&mut *conn)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn unsent(pool: &Pool<$db>, limit: i64) -> sqlx::Result<Vec<(String, String)>> {
                sqlx::query_as(
                    "SELECT receipt_id, body FROM hookwarden_receipt_outbox WHERE sent_at IS NULL
                     ORDER BY created_at, receipt_id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(pool)
                .await
            }

            async fn record_try(
                pool: &Pool<$db>,
                receipt_id: &str,
                sent_at: Option<i64>,
                error: Option<&str>,
            ) -> sqlx::Result<()> {
                // `sent_at IS NULL`: a receipt another flusher already sent stays sent.
                sqlx::query(
                    "UPDATE hookwarden_receipt_outbox SET attempts = attempts + 1, sent_at = $2, last_error = $3
                     WHERE receipt_id = $1 AND sent_at IS NULL",
                )
                .bind(receipt_id)
                .bind(sent_at)
                .bind(error)
                .execute(pool)
                .await?;
                Ok(())
            }

            async fn stats(pool: &Pool<$db>) -> sqlx::Result<OutboxStats> {
                let (unsent, sent, rejected): (i64, i64, i64) = sqlx::query_as(
                    "SELECT COUNT(CASE WHEN sent_at IS NULL THEN 1 END),
                            COUNT(CASE WHEN sent_at IS NOT NULL AND last_error IS NULL THEN 1 END),
                            COUNT(CASE WHEN sent_at IS NOT NULL AND last_error IS NOT NULL THEN 1 END)
                     FROM hookwarden_receipt_outbox",
                )
                .fetch_one(pool)
                .await?;
                Ok(OutboxStats { unsent, sent, rejected })
            }

            async fn stored_receipts(
                pool: &Pool<$db>,
                event_ids: &[String],
            ) -> sqlx::Result<Vec<(String, String, String)>> {
                let sql = format!(
                    "SELECT receipt_id, event_id, body FROM hookwarden_receipt_outbox
                     WHERE event_id IN ({}) AND (sent_at IS NULL OR last_error IS NULL)
                     ORDER BY created_at, receipt_id",
                    placeholders(event_ids.len())
                );
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for id in event_ids {
                    query = query.bind(id.as_str());
                }
                query.fetch_all(pool).await
            }

            async fn processed_among(pool: &Pool<$db>, event_ids: &[String]) -> sqlx::Result<Vec<String>> {
                let sql = format!(
                    "SELECT event_id FROM hookwarden_processed_events WHERE event_id IN ({})",
                    placeholders(event_ids.len())
                );
                let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
                for id in event_ids {
                    query = query.bind(id.as_str());
                }
                query.fetch_all(pool).await
            }
        }
    };
}

/// `$1, $2, …, $n`: both SQLite and PostgreSQL take them.
fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

backend!(sqlx::Sqlite, |_| false);
backend!(sqlx::Postgres, |_| true);
backend!(sqlx::Any, |conn| conn.backend_name() == <sqlx::Postgres as Database>::NAME);

/// Creates the outbox's tables if they are missing; safe to call on every start.
pub async fn ensure_schema<DB: Backend>(pool: &Pool<DB>) -> Result<(), OutboxError> {
    let mut tx = pool.begin().await?;
    DB::create_schema(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Queues `receipt` in the caller's transaction and returns its receipt id. It is posted
/// only once that transaction commits (wake the flusher then).
pub async fn enqueue<DB: Backend>(tx: &mut Transaction<'_, DB>, receipt: &Receipt) -> Result<String, OutboxError> {
    // Checked now, so a malformed receipt fails the caller's transaction, not the flusher.
    let body = serde_json::to_string(receipt).expect("receipts serialise");
    Receipt::parse(body.as_bytes())?;
    let receipt_id = new_receipt_id();
    DB::insert_receipt(tx, &receipt_id, &receipt.event_id, &body, unix_now_ms()).await?;
    Ok(receipt_id)
}

/// Marks `event_id` processed in the caller's transaction and tells whether it ALREADY was
/// (`true`: a replay or retry; skip the business write). A rolled-back transaction takes the
/// mark with it. Two transactions marking the same event at once take turns: the second
/// waits for the first, and sees `true` only if the first committed.
pub async fn already_processed<DB: Backend>(tx: &mut Transaction<'_, DB>, event_id: &str) -> Result<bool, OutboxError> {
    Ok(!DB::mark_processed(tx, event_id, unix_now_ms()).await?)
}

/// Posts every unsent receipt, oldest first, each under its stored receipt id. An accepted
/// receipt is marked sent; one refused with a final 4xx (400, 403, 404, …) is put aside with
/// its error, so it does not block the queue; on a network error, a 5xx (after the client's
/// own retries) or a 401 (the handler's key is not accepted) the pass stops and the receipts
/// stay queued.
pub async fn flush_once<DB: Backend>(pool: &Pool<DB>, client: &ReceiptClient) -> Result<FlushReport, OutboxError> {
    let mut report = FlushReport::default();
    loop {
        let batch = DB::unsent(pool, BATCH).await?;
        let full = batch.len() as i64 == BATCH;
        for (receipt_id, body) in batch {
            let receipt = match Receipt::parse(body.as_bytes()) {
                Ok(receipt) => receipt,
                Err(e) => {
                    tracing::warn!(receipt_id, error = %e, "outbox receipt is malformed; put aside");
                    DB::record_try(pool, &receipt_id, Some(unix_now_ms()), Some(&e.to_string())).await?;
                    report.rejected += 1;
                    continue;
                }
            };
            match client.post_with_id(&receipt, &receipt_id).await {
                Ok(_) => {
                    DB::record_try(pool, &receipt_id, Some(unix_now_ms()), None).await?;
                    report.sent += 1;
                }
                Err(e) if e.was_accepted() => {
                    DB::record_try(pool, &receipt_id, Some(unix_now_ms()), None).await?;
                    report.sent += 1;
                }
                // A 401 is about the key or the clock (unknown or revoked key, bad signature),
                // not this receipt: every receipt would fail alike, so keep them queued until
                // the key is fixed rather than put them all aside.
                Err(e) if e.is_rejected() && !matches!(e, ClientError::Rejected { status: 401, .. }) => {
                    tracing::warn!(receipt_id, event_id = receipt.event_id, error = %e, "the gateway refused a receipt; put aside");
                    DB::record_try(pool, &receipt_id, Some(unix_now_ms()), Some(&e.to_string())).await?;
                    report.rejected += 1;
                }
                Err(e) => {
                    DB::record_try(pool, &receipt_id, None, Some(&e.to_string())).await?;
                    report.error = Some(e.to_string());
                    return Ok(report);
                }
            }
        }
        if !full {
            return Ok(report);
        }
    }
}

/// How many receipts are queued, sent and put aside.
pub async fn stats<DB: Backend>(pool: &Pool<DB>) -> Result<OutboxStats, OutboxError> {
    Ok(DB::stats(pool).await?)
}

/// The answer to a status probe about `event_ids` (docs/status-probe.md), from this outbox.
/// For each asked event, the first that applies: its latest `applied` receipt, re-signed now
/// under its stored id (the gateway counts one id with one body once); if the event is only
/// marked processed, an `applied` receipt under [`probe::probe_receipt_id`]; its latest
/// `failed` receipt; nothing, and the event stays `unknown` at the gateway. `applied` comes
/// first because it is final at the gateway, whatever failed before it.
pub async fn answer_probe<DB: Backend>(
    pool: &Pool<DB>,
    key: &ReceiptKey,
    event_ids: &[String],
) -> Result<ProbeAnswer, OutboxError> {
    let mut answer = ProbeAnswer::default();
    if event_ids.is_empty() {
        return Ok(answer);
    }
    let now = crate::unix_now();
    // Event id → (receipt id, receipt): the latest stored of each status.
    let mut applied: HashMap<String, (String, Receipt)> = HashMap::new();
    let mut failed: HashMap<String, (String, Receipt)> = HashMap::new();
    for (receipt_id, event_id, body) in DB::stored_receipts(pool, event_ids).await? {
        let Ok(receipt) = Receipt::parse(body.as_bytes()) else { continue };
        let latest = if receipt.status == ReceiptStatus::Applied { &mut applied } else { &mut failed };
        latest.insert(event_id, (receipt_id, receipt));
    }
    let processed: HashSet<String> = DB::processed_among(pool, event_ids).await?.into_iter().collect();
    let mut seen = HashSet::new();
    for event_id in event_ids {
        if !seen.insert(event_id.as_str()) {
            continue;
        }
        let signed = if let Some((receipt_id, receipt)) = applied.get(event_id) {
            key.sign_with_id(receipt, receipt_id, now)
        } else if processed.contains(event_id) {
            key.sign_with_id(&Receipt::applied(event_id.as_str()), &probe::probe_receipt_id(event_id), now)
        } else if let Some((receipt_id, receipt)) = failed.get(event_id) {
            key.sign_with_id(receipt, receipt_id, now)
        } else {
            continue;
        };
        answer.receipts.push(AnswerEntry::from_signed(&signed));
    }
    Ok(answer)
}

/// What to answer a status probe with: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Serves a status probe from any web framework: checks the request with the source's
/// `secret` ([`probe::verify_probe`]) and answers from this outbox ([`answer_probe`]); a
/// refused probe gets 401 or 400 with `{"error": {"code", "message"}}`. Mount it at the
/// source's `status_url`.
pub async fn serve_probe<'h, DB: Backend>(
    pool: &Pool<DB>,
    key: &ReceiptKey,
    secret: &WebhookSecret,
    get_header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
) -> Result<ProbeReply, OutboxError> {
    let request = match probe::verify_probe(secret, get_header, body, crate::unix_now()) {
        Ok(request) => request,
        Err(e) => {
            let code = if e.status() == 401 { "probe_unauthorized" } else { "probe_malformed" };
            let body = serde_json::json!({ "error": { "code": code, "message": e.to_string() } });
            return Ok(ProbeReply { status: e.status(), body: body.to_string().into_bytes() });
        }
    };
    let answer = answer_probe(pool, key, &request.event_ids).await?;
    Ok(ProbeReply { status: 200, body: answer.to_json() })
}

/// Wakes a [`Flusher`] for an immediate pass; cheap to clone into request handlers.
#[derive(Debug, Clone)]
pub struct FlushWaker(Arc<Notify>);

impl FlushWaker {
    /// Call after a commit that queued a receipt. Wakes during a pass cause one more pass.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// A background task running [`flush_once`] every `interval` and whenever woken.
#[derive(Debug)]
pub struct Flusher {
    waker: FlushWaker,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Flusher {
    pub fn wake(&self) {
        self.waker.wake();
    }

    pub fn waker(&self) -> FlushWaker {
        self.waker.clone()
    }

    /// Stops after the pass under way, if any.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        let _ = self.task.await;
    }
}

/// Starts a [`Flusher`] on the current tokio runtime; its first pass runs at once, so
/// receipts committed before a crash go out on the next start.
pub fn spawn_flusher<DB: Backend>(pool: Pool<DB>, client: ReceiptClient, interval: Duration) -> Flusher {
    let wake = Arc::new(Notify::new());
    let stop = Arc::new(Notify::new());
    let task = tokio::spawn({
        let (wake, stop) = (wake.clone(), stop.clone());
        async move {
            loop {
                match flush_once(&pool, &client).await {
                    Ok(FlushReport { error: Some(error), .. }) => {
                        tracing::warn!(%error, "receipt outbox: gateway unavailable; will retry")
                    }
                    Ok(report) if report.sent + report.rejected > 0 => {
                        tracing::debug!(sent = report.sent, rejected = report.rejected, "receipt outbox flushed")
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "receipt outbox flush failed; will retry"),
                }
                tokio::select! {
                    biased;
                    _ = stop.notified() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(interval) => {}
                }
            }
        }
    });
    Flusher { waker: FlushWaker(wake), stop, task }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::test_support::{StandIn, fast_retry};
    use sqlx::Connection;
    use sqlx::postgres::{PgConnection, PgPoolOptions};
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    /// The whole contract, against one database.
    async fn scenario<DB: Backend>(pool: Pool<DB>) {
        ensure_schema(&pool).await.unwrap();
        ensure_schema(&pool).await.unwrap(); // idempotent
        let gateway = StandIn::start(vec![]).await;
        let client = ReceiptClient::new(&gateway.base_url(), gateway.key.clone()).with_retry(fast_retry(2));

        // Rolled back: the receipt and the processed mark go with the transaction.
        let mut tx = pool.begin().await.unwrap();
        assert!(!already_processed(&mut tx, "evt_a").await.unwrap());
        enqueue(&mut tx, &Receipt::applied("evt_a")).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(flush_once(&pool, &client).await.unwrap(), FlushReport::default());
        assert!(gateway.posts().is_empty());

        // Committed: sent exactly once, under the id `enqueue` returned.
        let mut tx = pool.begin().await.unwrap();
        assert!(!already_processed(&mut tx, "evt_a").await.unwrap(), "the rollback un-marked evt_a");
        let receipt = Receipt::applied("evt_a").with_target_record("ord_a");
        let id = enqueue(&mut tx, &receipt).await.unwrap();
        tx.commit().await.unwrap();
        let report = flush_once(&pool, &client).await.unwrap();
        assert_eq!(report, FlushReport { sent: 1, ..FlushReport::default() });
        assert_eq!(flush_once(&pool, &client).await.unwrap(), FlushReport::default());
        let posts = gateway.posts();
        assert_eq!(posts.len(), 1);
        assert_eq!(
            (posts[0].receipt_id.as_str(), &posts[0].receipt, posts[0].signature_ok),
            (id.as_str(), &receipt, true)
        );
        assert_eq!(stats(&pool).await.unwrap(), OutboxStats { unsent: 0, sent: 1, rejected: 0 });

        // A replay of a committed event is a duplicate, in every later transaction.
        for _ in 0..2 {
            let mut tx = pool.begin().await.unwrap();
            assert!(already_processed(&mut tx, "evt_a").await.unwrap());
            tx.commit().await.unwrap();
        }

        // Gateway down (503 on both client tries): queued, then sent under the same id.
        gateway.script(&[503, 503]);
        let mut tx = pool.begin().await.unwrap();
        let id_b = enqueue(&mut tx, &Receipt::failed("evt_b", "E_DB", Some("deadlock".into()))).await.unwrap();
        tx.commit().await.unwrap();
        let report = flush_once(&pool, &client).await.unwrap();
        assert_eq!(report.sent, 0);
        assert!(report.error.as_deref().is_some_and(|e| e.contains("503")), "{report:?}");
        assert_eq!(stats(&pool).await.unwrap().unsent, 1);
        assert_eq!(flush_once(&pool, &client).await.unwrap().sent, 1);
        let posts: Vec<_> = gateway.posts().into_iter().skip(1).collect();
        assert_eq!(posts.len(), 3);
        assert!(posts.iter().all(|p| p.receipt_id == id_b && p.receipt.status == ReceiptStatus::Failed));

        // A 401 (the key is not accepted) is not the receipt's fault: it stays queued.
        gateway.script(&[401]);
        let mut tx = pool.begin().await.unwrap();
        enqueue(&mut tx, &Receipt::applied("evt_k")).await.unwrap();
        tx.commit().await.unwrap();
        let report = flush_once(&pool, &client).await.unwrap();
        assert_eq!((report.sent, report.rejected), (0, 0));
        assert!(report.error.as_deref().is_some_and(|e| e.contains("401")), "{report:?}");
        assert_eq!(flush_once(&pool, &client).await.unwrap().sent, 1);
        assert_eq!(gateway.posts().len(), 6);

        // A receipt the gateway refuses for good is put aside; the next one still goes, and
        // they go oldest first.
        for event in ["evt_poison_1", "evt_c"] {
            let mut tx = pool.begin().await.unwrap();
            enqueue(&mut tx, &Receipt::applied(event)).await.unwrap();
            tx.commit().await.unwrap();
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let report = flush_once(&pool, &client).await.unwrap();
        assert_eq!((report.sent, report.rejected), (1, 1), "{report:?}");
        let events: Vec<_> = gateway.posts().into_iter().skip(6).map(|p| p.receipt.event_id).collect();
        assert_eq!(events, ["evt_poison_1", "evt_c"]);
        assert_eq!(stats(&pool).await.unwrap(), OutboxStats { unsent: 0, sent: 4, rejected: 1 });
        assert!(flush_once(&pool, &client).await.unwrap() == FlushReport::default());

        // A malformed receipt fails the caller's transaction at once.
        let mut tx = pool.begin().await.unwrap();
        let bad = Receipt { error_code: None, ..Receipt::failed("evt_d", "E", None) };
        assert!(matches!(enqueue(&mut tx, &bad).await, Err(OutboxError::Receipt(_))));
        tx.rollback().await.unwrap();

        // Two transactions marking one event: the second waits for the first; after the
        // first rolls back it marks the event itself.
        let mut first = pool.begin().await.unwrap();
        assert!(!already_processed(&mut first, "evt_e").await.unwrap());
        let started = Instant::now();
        let (second, ()) = tokio::join!(
            async {
                let mut tx = pool.begin().await.unwrap();
                let already = already_processed(&mut tx, "evt_e").await.unwrap();
                let waited = started.elapsed();
                tx.commit().await.unwrap();
                (already, waited)
            },
            async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                first.rollback().await.unwrap();
            }
        );
        assert!(!second.0, "the first transaction rolled back");
        assert!(second.1 >= Duration::from_millis(250), "the second did not wait: {:?}", second.1);
        let mut tx = pool.begin().await.unwrap();
        assert!(already_processed(&mut tx, "evt_e").await.unwrap());
        tx.rollback().await.unwrap();

        // The status probe is answered from the same tables: the latest kept receipt of an
        // event under its stored id, `applied` under the derived id for one only marked
        // processed, nothing for an unknown event or a receipt put aside.
        let mut tx = pool.begin().await.unwrap();
        assert!(!already_processed(&mut tx, "evt_p").await.unwrap());
        tx.commit().await.unwrap();
        // evt_q failed first and was applied by a later retry: `applied` is the answer.
        let mut tx = pool.begin().await.unwrap();
        enqueue(&mut tx, &Receipt::failed("evt_q", "E_DB", None)).await.unwrap();
        tx.commit().await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
        let mut tx = pool.begin().await.unwrap();
        let id_q = enqueue(&mut tx, &Receipt::applied("evt_q")).await.unwrap();
        tx.commit().await.unwrap();
        let asked: Vec<String> = ["evt_a", "evt_b", "evt_p", "evt_x", "evt_poison_1", "evt_a", "evt_q"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let answer = answer_probe(&pool, &gateway.key, &asked).await.unwrap();
        let got: Vec<(String, String, Receipt)> = answer
            .receipts
            .iter()
            .map(|e| {
                let body = crate::receipt::decode_inline_body(&e.body).unwrap();
                let read = crate::receipt::ReceiptHeaders::read(|n| e.get(n)).unwrap();
                let public = crate::webhook::decode_public_key(&gateway.key.public_key_base64()).unwrap();
                read.verify_signature(&body, &public).unwrap();
                read.check_timestamp(crate::unix_now()).unwrap();
                (e.receipt_id.clone(), e.key_id.clone(), Receipt::parse(&body).unwrap())
            })
            .collect();
        let key_id = gateway.key.id.clone();
        assert_eq!(
            got,
            vec![
                (id.clone(), key_id.clone(), receipt.clone()),
                (id_b.clone(), key_id.clone(), Receipt::failed("evt_b", "E_DB", Some("deadlock".into()))),
                (probe::probe_receipt_id("evt_p"), key_id.clone(), Receipt::applied("evt_p")),
                (id_q, key_id.clone(), Receipt::applied("evt_q")),
            ]
        );

        // Served to a signed probe; refused to one signed with another secret.
        let secret = WebhookSecret::generate();
        let request = probe::ProbeRequest::new("orders", vec!["evt_p".into(), "evt_x".into()]);
        let signed = request.sign(&secret, "prb_t1", crate::unix_now());
        let headers = signed.headers();
        let get = |n: &str| headers.iter().find(|(h, _)| *h == n).map(|(_, v)| v.as_str());
        let reply = serve_probe(&pool, &gateway.key, &secret, get, &signed.body).await.unwrap();
        assert_eq!(reply.status, 200);
        let answer = ProbeAnswer::parse(&reply.body).unwrap();
        assert_eq!(answer.receipts.len(), 1);
        assert_eq!(answer.receipts[0].receipt_id, probe::probe_receipt_id("evt_p"));
        let forged = request.sign(&WebhookSecret::generate(), "prb_t2", crate::unix_now());
        let headers = forged.headers();
        let get = |n: &str| headers.iter().find(|(h, _)| *h == n).map(|(_, v)| v.as_str());
        let reply = serve_probe(&pool, &gateway.key, &secret, get, &forged.body).await.unwrap();
        assert_eq!(reply.status, 401);
        assert!(String::from_utf8(reply.body).unwrap().contains("probe_unauthorized"));

        // The background flusher sends a committed receipt when woken, well before its interval.
        let flusher = spawn_flusher(pool.clone(), client.clone(), Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(50)).await; // its first pass finds nothing
        let mut tx = pool.begin().await.unwrap();
        let id_f = enqueue(&mut tx, &Receipt::applied("evt_f")).await.unwrap();
        tx.commit().await.unwrap();
        flusher.wake();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gateway.posts().iter().any(|p| p.receipt_id == id_f) {
            assert!(Instant::now() < deadline, "the woken flusher did not send the receipt");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        flusher.shutdown().await;
        assert_eq!(stats(&pool).await.unwrap().unsent, 0);
    }

    fn sqlite_file() -> (tempfile::TempDir, SqliteConnectOptions) {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new().filename(dir.path().join("handler.db")).create_if_missing(true);
        (dir, options)
    }

    #[tokio::test]
    async fn outbox_on_sqlite() {
        let (_dir, options) = sqlite_file();
        scenario(SqlitePoolOptions::new().connect_with(options).await.unwrap()).await;
    }

    #[tokio::test]
    async fn outbox_on_sqlite_through_any() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("handler.db").display());
        scenario(sqlx::AnyPool::connect(&url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn outbox_on_postgres() {
        let db = PgTestDb::create().await;
        scenario(PgPoolOptions::new().connect(&db.url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn outbox_on_postgres_through_any() {
        sqlx::any::install_default_drivers();
        let db = PgTestDb::create().await;
        scenario(sqlx::AnyPool::connect(&db.url).await.unwrap()).await;
    }

    #[tokio::test]
    async fn concurrent_ensure_schema_on_postgres() {
        let db = PgTestDb::create().await;
        let pool = PgPoolOptions::new().max_connections(4).connect(&db.url).await.unwrap();
        let (a, b, c) = tokio::join!(ensure_schema(&pool), ensure_schema(&pool), ensure_schema(&pool));
        a.unwrap();
        b.unwrap();
        c.unwrap();
    }

    /// A fresh PostgreSQL database, dropped at the end. PostgreSQL is required: these tests
    /// fail, never skip, when it is not there.
    struct PgTestDb {
        url: String,
        name: String,
    }

    fn pg_admin_url() -> String {
        std::env::var("HOOKWARDEN_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
    }

    impl PgTestDb {
        async fn create() -> Self {
            let admin = pg_admin_url();
            let mut conn = PgConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test: {e}"));
            let name = format!("sdk_test_{:016x}", rand::random::<u64>());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
            let base = admin.rsplit_once('/').map(|(base, _)| base).expect("the admin url names a database");
            Self { url: format!("{base}/{name}"), name }
        }
    }

    impl Drop for PgTestDb {
        fn drop(&mut self) {
            // Drop is not async: a small runtime on its own thread drops the database.
            let name = self.name.clone();
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                runtime.block_on(async move {
                    if let Ok(mut conn) = PgConnection::connect(&pg_admin_url()).await {
                        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
                    }
                });
            })
            .join();
        }
    }
}
