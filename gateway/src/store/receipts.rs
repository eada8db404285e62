//! The receipt ledger and the outcome it drives.
//!
//! Receipts are only ever inserted. Recording one and moving the event's outcome happen in
//! one transaction, which also cancels the event's pending retries. `confirmed` is sticky: a
//! later `failed` receipt is kept and shown, but the outcome stays `confirmed`. So is an
//! operator's `resolved` against a `failed` receipt; an `applied` one makes it `confirmed`.

use std::collections::{HashMap, HashSet};

use sqlx::Row;

use super::audit::append_audit_in;
use super::{
    Backend, NewAuditEntry, SqlTexts, Store, StoreError, keep_prepared, mark, or_rollback, replace_if_failed,
    row_marks, with_pool, with_writer,
};
use crate::domain::{EventId, Outcome};

/// A verified receipt, as it is written.
#[derive(Debug, Clone)]
pub struct NewReceipt {
    pub receipt_id: String,
    pub event_id: EventId,
    pub key_id: String,
    /// `applied` or `failed`.
    pub status: &'static str,
    pub target_record_id: Option<String>,
    pub error_code: Option<String>,
    pub detail: Option<String>,
    /// The signed `receipt-timestamp`, in ms.
    pub signed_at: i64,
    pub received_at: i64,
    /// `post` (`POST /v1/receipts`), `inline` (on a handler's 2xx) or `probe` (in the answer
    /// to a status probe).
    pub via: &'static str,
    pub body: String,
    pub signature: String,
}

/// What recording a receipt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new receipt; the event's outcome is now this.
    New(Outcome),
    /// The same receipt again (same id, same body): nothing changed.
    Repeat(Outcome),
    /// The receipt id was used before for a different receipt.
    IdConflict,
}

/// Makes the audit entry of some recorded receipts from what recording them did.
pub type AuditOf = dyn Fn(&[Recorded]) -> NewAuditEntry + Sync;

/// A receipt of the ledger, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredReceipt {
    pub receipt_id: String,
    pub key_id: String,
    pub status: String,
    pub target_record_id: Option<String>,
    pub error_code: Option<String>,
    pub detail: Option<String>,
    pub signed_at: i64,
    pub received_at: i64,
    pub via: String,
}

const INSERT: &str = "INSERT INTO receipts (receipt_id, event_id, key_id, status, target_record_id, error_code, detail, \
     signed_at, received_at, via, body, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
     ON CONFLICT (receipt_id) DO NOTHING";
const APPLY: &str = "UPDATE events SET receipts = receipts + 1, next_attempt_at = NULL, outcome_at = $4, \
     outcome = CASE WHEN $2 = 'applied' OR outcome = 'confirmed' THEN 'confirmed' \
     WHEN outcome = 'resolved' THEN 'resolved' ELSE 'failed' END, \
     error_code = CASE WHEN $2 = 'applied' THEN NULL WHEN outcome IN ('confirmed', 'resolved') THEN error_code ELSE $3 END \
     WHERE id = $1 RETURNING outcome";

/// Event ids per source lookup.
const SOURCE_LOOKUPS: usize = 500;
/// Receipt rows per multi-row insert (12 parameters each).
const RECEIPT_ROWS: usize = super::PREPARED_ROWS;
/// Event ids per notification (PostgreSQL payloads stay under 8,000 bytes).
const NOTIFY_IDS: usize = 200;

static INSERT_RECEIPTS: SqlTexts = SqlTexts::new(insert_receipts_sql);
static CONFIRM_MANY: SqlTexts = SqlTexts::new(confirm_many_sql);

/// Confirms `rows` events by their `applied` receipts (distinct events only), bound as the
/// time, then the event ids.
fn confirm_many_sql(backend: Backend, rows: usize) -> String {
    format!(
        "UPDATE {}events SET receipts = receipts + 1, next_attempt_at = NULL, outcome_at = {}, \
         outcome = 'confirmed', error_code = NULL WHERE id IN {}",
        or_rollback(backend),
        mark(backend, 1),
        row_marks(backend, 1, rows, 2)
    )
}

fn insert_receipts_sql(backend: Backend, rows: usize) -> String {
    format!(
        "INSERT {}INTO receipts (receipt_id, event_id, key_id, status, target_record_id, error_code, detail, \
         signed_at, received_at, via, body, signature) VALUES {} ON CONFLICT (receipt_id) DO NOTHING RETURNING receipt_id",
        or_rollback(backend),
        row_marks(backend, rows, 12, 1)
    )
}

macro_rules! bind_receipt {
    ($query:expr, $r:expr) => {
        $query
            .bind(&$r.receipt_id)
            .bind($r.event_id.as_str())
            .bind(&$r.key_id)
            .bind($r.status)
            .bind($r.target_record_id.as_deref())
            .bind($r.error_code.as_deref())
            .bind($r.detail.as_deref())
            .bind($r.signed_at)
            .bind($r.received_at)
            .bind($r.via)
            .bind(&$r.body)
            .bind(&$r.signature)
    };
}

fn outcome(text: &str) -> Result<Outcome, StoreError> {
    Outcome::parse(text).ok_or_else(|| StoreError::Corrupt(format!("outcome `{text}`")))
}

/// What the check before a send read: the event's receipts, outcome and when an operator
/// resolved it, as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendCheck {
    pub receipts: i64,
    pub outcome: Outcome,
    pub resolved_at: Option<i64>,
}

/// On PostgreSQL the read also takes `FOR SHARE` for as long as the statement runs: a receipt
/// being committed on the row at that moment is waited for (its transaction, never a
/// handler) and seen, instead of the row as it was before.
const CHECK_SQLITE: &str = "SELECT receipts, outcome, resolved_at FROM events WHERE id = $1";
const CHECK_POSTGRES: &str = "SELECT receipts, outcome, resolved_at FROM events WHERE id = $1 FOR SHARE";

impl Store {
    /// The check that decides a retry or a replay send, taken just before it goes out. This
    /// is what keeps "nothing is sent after its receipt was recorded", across gateways too:
    /// a receipt is recorded when its transaction commits, and this one statement reads the
    /// event as committed, holding nothing once it answers. So a receipt either committed
    /// before the check (the check sees it and the send is dropped) or after it (the send was
    /// decided first and goes out; the handler's idempotency key absorbs it). Nothing waits
    /// on a handler while holding a connection, a transaction or a lock a receipt needs; and
    /// the attempt's result, written after the send, never undoes a receipt recorded during
    /// it (the schedule updates in `store::delivery` look at `receipts` in SQL).
    pub async fn check_before_send(&self, id: &EventId) -> Result<SendCheck, StoreError> {
        let (receipts, o, resolved_at): (i64, String, Option<i64>) = match &self.pool {
            super::Pool::Sqlite { read, .. } => sqlx::query_as(CHECK_SQLITE).bind(id.as_str()).fetch_one(read).await?,
            super::Pool::Postgres(pool) => sqlx::query_as(CHECK_POSTGRES).bind(id.as_str()).fetch_one(pool).await?,
        };
        Ok(SendCheck { receipts, outcome: outcome(&o)?, resolved_at })
    }

    /// The source and outcome of an event, or `None` when there is no such event.
    pub async fn event_source(&self, id: &EventId) -> Result<Option<(String, Outcome)>, StoreError> {
        let row: Option<(String, String)> = with_pool!(self, pool => {
            sqlx::query_as("SELECT source, outcome FROM events WHERE id = $1").bind(id.as_str()).fetch_optional(pool).await?
        });
        row.map(|(source, o)| Ok((source, outcome(&o)?))).transpose()
    }

    /// The sources of `ids`, in order (`None` where there is no such event): one query for a
    /// whole group of concurrent receipts instead of a round trip to a reader each.
    pub async fn event_sources(&self, ids: &[EventId]) -> Result<Vec<Option<String>>, StoreError> {
        let mut found: HashMap<String, String> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(SOURCE_LOOKUPS) {
            let sql =
                format!("SELECT id, source FROM events WHERE id IN {}", row_marks(self.backend(), 1, chunk.len(), 1));
            let rows: Vec<(String, String)> = with_pool!(self, pool => {
                let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(id.as_str());
                }
                query.fetch_all(pool).await?
            });
            found.extend(rows);
        }
        Ok(ids.iter().map(|id| found.get(id.as_str()).cloned()).collect())
    }

    /// Records a receipt idempotently and moves the event's outcome.
    pub async fn record_receipt(&self, r: &NewReceipt) -> Result<Recorded, StoreError> {
        let mut recorded = self.record_receipts(std::slice::from_ref(r)).await?;
        Ok(recorded.pop().expect("one answer per receipt"))
    }

    /// Records receipts in one transaction (group commit), each idempotently, in order.
    /// A batch of distinct events and receipt ids (the usual case) costs one multi-row insert
    /// and one update for its `applied` receipts; anything else goes row by row, in order.
    pub async fn record_receipts(&self, batch: &[NewReceipt]) -> Result<Vec<Recorded>, StoreError> {
        self.record_receipts_audited(batch, None).await
    }

    /// [`Self::record_receipts`], and with `audit` the entry it makes of what was recorded,
    /// in the same transaction: the receipts and their entry commit together or not at all.
    pub async fn record_receipts_audited(
        &self,
        batch: &[NewReceipt],
        audit: Option<&AuditOf>,
    ) -> Result<Vec<Recorded>, StoreError> {
        let backend = self.backend();
        let postgres = backend == Backend::Postgres;
        let events: HashSet<&str> = batch.iter().map(|r| r.event_id.as_str()).collect();
        let ids: HashSet<&str> = batch.iter().map(|r| r.receipt_id.as_str()).collect();
        let set_based = events.len() == batch.len() && ids.len() == batch.len();
        with_writer!(self, pool => {
            let mut conn = pool.acquire().await?;
            let written = async {
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                let mut answers: Vec<Option<Recorded>> = vec![None; batch.len()];
                let mut new_ones: HashSet<String> = HashSet::new();
                if set_based {
                    for chunk in batch.chunks(RECEIPT_ROWS) {
                        let mut query = sqlx::query_scalar::<_, String>(INSERT_RECEIPTS.get(backend, chunk.len()))
                            .persistent(keep_prepared(chunk.len()));
                        for r in chunk {
                            query = bind_receipt!(query, r);
                        }
                        new_ones.extend(query.fetch_all(&mut *tx).await?);
                    }
                    let applied: Vec<&NewReceipt> =
                        batch.iter().filter(|r| r.status == "applied" && new_ones.contains(&r.receipt_id)).collect();
                    for chunk in applied.chunks(RECEIPT_ROWS) {
                        let mut query = sqlx::query(CONFIRM_MANY.get(backend, chunk.len()))
                            .persistent(keep_prepared(chunk.len()))
                            .bind(chunk.iter().map(|r| r.received_at).max());
                        for r in chunk {
                            query = query.bind(r.event_id.as_str());
                        }
                        query.execute(&mut *tx).await?;
                    }
                    for (i, r) in batch.iter().enumerate() {
                        if r.status == "applied" && new_ones.contains(&r.receipt_id) {
                            answers[i] = Some(Recorded::New(Outcome::Confirmed));
                        }
                    }
                }
                for (i, r) in batch.iter().enumerate() {
                    if answers[i].is_some() {
                        continue;
                    }
                    let inserted = if set_based {
                        new_ones.contains(&r.receipt_id)
                    } else {
                        bind_receipt!(sqlx::query(INSERT), r).execute(&mut *tx).await?.rows_affected() == 1
                    };
                    if !inserted {
                        let (event_id, body): (String, String) =
                            sqlx::query_as("SELECT event_id, body FROM receipts WHERE receipt_id = $1")
                                .bind(&r.receipt_id)
                                .fetch_one(&mut *tx)
                                .await?;
                        if event_id != r.event_id.as_str() || body != r.body {
                            answers[i] = Some(Recorded::IdConflict);
                            continue;
                        }
                        let current: String = sqlx::query_scalar("SELECT outcome FROM events WHERE id = $1")
                            .bind(r.event_id.as_str())
                            .fetch_one(&mut *tx)
                            .await?;
                        answers[i] = Some(Recorded::Repeat(outcome(&current)?));
                        continue;
                    }
                    let new_outcome: String = sqlx::query_scalar(APPLY)
                        .bind(r.event_id.as_str())
                        .bind(r.status)
                        .bind(r.error_code.as_deref())
                        .bind(r.received_at)
                        .fetch_one(&mut *tx)
                        .await?;
                    answers[i] = Some(Recorded::New(outcome(&new_outcome)?));
                }
                if postgres {
                    // Delivered on commit: running replays on every gateway drop these events at once.
                    let fresh: Vec<&str> = batch
                        .iter()
                        .zip(&answers)
                        .filter(|(_, a)| matches!(a, Some(Recorded::New(_))))
                        .map(|(r, _)| r.event_id.as_str())
                        .collect();
                    for chunk in fresh.chunks(NOTIFY_IDS) {
                        sqlx::query("SELECT pg_notify('hookwarden_receipts', $1)").bind(chunk.join(",")).execute(&mut *tx).await?;
                    }
                }
                let answers: Vec<Recorded> = answers.into_iter().map(|a| a.expect("every receipt answered")).collect();
                if let Some(audit) = audit {
                    append_audit_in!(self, tx, &audit(&answers));
                }
                tx.commit().await?;
                Ok::<_, StoreError>(answers)
            }
            .await;
            replace_if_failed(&mut conn, backend, &written);
            written
        })
    }

    pub async fn list_receipts(&self, event_id: &EventId) -> Result<Vec<StoredReceipt>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT receipt_id, key_id, status, target_record_id, error_code, detail, signed_at, received_at, via \
                 FROM receipts WHERE event_id = $1 ORDER BY received_at, receipt_id",
            )
            .bind(event_id.as_str())
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(StoredReceipt {
                        receipt_id: row.try_get("receipt_id")?,
                        key_id: row.try_get("key_id")?,
                        status: row.try_get("status")?,
                        target_record_id: row.try_get("target_record_id")?,
                        error_code: row.try_get("error_code")?,
                        detail: row.try_get("detail")?,
                        signed_at: row.try_get("signed_at")?,
                        received_at: row.try_get("received_at")?,
                        via: row.try_get("via")?,
                    })
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, confirm_many_sql, insert_receipts_sql};

    /// SQLite gets anonymous `?` (a named one is looked up by a linear search per bind, which
    /// was a seventh of the writer's time here) and `OR ROLLBACK` (no statement journal).
    #[test]
    fn receipt_statements_per_backend() {
        assert_eq!(
            confirm_many_sql(Backend::Sqlite, 2).split("outcome_at = ").nth(1).unwrap().split(',').next().unwrap(),
            "?"
        );
        assert!(confirm_many_sql(Backend::Sqlite, 2).ends_with("WHERE id IN (?, ?)"));
        assert!(confirm_many_sql(Backend::Sqlite, 2).starts_with("UPDATE OR ROLLBACK events"));
        assert!(confirm_many_sql(Backend::Postgres, 2).ends_with("WHERE id IN ($2, $3)"));
        assert!(confirm_many_sql(Backend::Postgres, 2).starts_with("UPDATE events"));
        let sqlite = insert_receipts_sql(Backend::Sqlite, 2);
        assert!(sqlite.starts_with("INSERT OR ROLLBACK INTO receipts"));
        assert!(!sqlite.contains('$'));
        assert_eq!(sqlite.matches('?').count(), 24);
        assert!(insert_receipts_sql(Backend::Postgres, 2).contains("$24)"));
    }
}
