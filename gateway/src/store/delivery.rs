//! The durable delivery schedule: claiming due deliveries under a lease, and recording what
//! each attempt did.
//!
//! A claim sets `lease_owner`/`lease_until`; only the owner may complete it, and a lease that
//! runs out (its gateway died) makes the event claimable again. On PostgreSQL the claim skips
//! rows another gateway is claiming at the same moment, so each due delivery goes to one.

use sqlx::Connection;

use std::collections::HashMap;

use super::{Backend, Store, StoreError, with_pool, with_relaxed_writer, with_writer};
use crate::domain::{AttemptKind, EventId};

const CLAIM_SQLITE: &str = "UPDATE events SET lease_owner = $1, lease_until = $2 \
     WHERE id IN (SELECT id FROM events WHERE next_attempt_at <= $3 \
                  AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at LIMIT $4) \
     RETURNING id, source, dedup_key, attempts, ladder_attempts";
const CLAIM_POSTGRES: &str = "UPDATE events SET lease_owner = $1, lease_until = $2 \
     WHERE id IN (SELECT id FROM events WHERE next_attempt_at <= $3 \
                  AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at LIMIT $4 \
                  FOR UPDATE SKIP LOCKED) \
     RETURNING id, source, dedup_key, attempts, ladder_attempts";

/// Attempt rows per multi-row statement (9 parameters each).
const ATTEMPT_ROWS: usize = 300;

/// `INSERT INTO attempts … VALUES (…), (…)` for `rows` attempts; each attempt's number is its
/// event's attempt count plus one, read before the batch's updates.
fn insert_attempts_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO attempts (event_id, number, kind, replay_id, gateway, started_at, latency_ms, status_code, \
         error, response_excerpt) VALUES ",
    );
    for row in 0..rows {
        let p = row * 9;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "(${e}, (SELECT attempts + 1 FROM events WHERE id = ${e}), ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8,
            p + 9,
            e = p + 1
        ));
    }
    sql
}

/// Followed by `(ids…) RETURNING id`; `$1` is the delivery time, `$2` the lease owner.
const DELIVERED_MANY: &str = "UPDATE events SET attempts = attempts + 1, ladder_attempts = ladder_attempts + 1, \
     delivery_state = 'delivered', delivered_at = $1, next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL \
     WHERE lease_owner = $2 AND id IN";
const RETRY: &str = "UPDATE events SET attempts = attempts + 1, ladder_attempts = ladder_attempts + 1, \
     delivery_state = 'pending', \
     next_attempt_at = CASE WHEN receipts > 0 THEN NULL ELSE $3 END, lease_owner = NULL, lease_until = NULL \
     WHERE id = $1 AND lease_owner = $2";
const EXHAUSTED: &str = "UPDATE events SET attempts = attempts + 1, ladder_attempts = ladder_attempts + 1, \
     delivery_state = 'exhausted', next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL, \
     outcome = CASE WHEN outcome = 'unknown' THEN 'failed' ELSE outcome END, \
     error_code = CASE WHEN outcome = 'unknown' THEN $3 ELSE error_code END \
     WHERE id = $1 AND lease_owner = $2";

const REPLAY_DELIVERED: &str = "UPDATE events SET attempts = attempts + 1, delivery_state = 'delivered', \
     delivered_at = $2, next_attempt_at = NULL, \
     outcome = CASE WHEN receipts = 0 AND error_code = 'delivery_exhausted' THEN 'unknown' ELSE outcome END, \
     error_code = CASE WHEN receipts = 0 AND error_code = 'delivery_exhausted' THEN NULL ELSE error_code END \
     WHERE id = $1";
const REPLAY_FAILED: &str = "UPDATE events SET attempts = attempts + 1 WHERE id = $1";

/// An event claimed for delivery, with what the forward needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub event_id: EventId,
    pub source: String,
    pub dedup_key: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Attempts of any kind so far (the next one is `attempts + 1`).
    pub attempts: i64,
    /// Attempts that used up the ladder so far.
    pub ladder_attempts: i64,
}

/// What a finished scheduled attempt does to the event's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The handler answered 2xx at this time.
    Delivered { at: i64 },
    /// Try again at this time.
    RetryAt(i64),
    /// The ladder is used up: the event becomes `failed`.
    Exhausted,
    /// An operator's replay (no lease, no ladder); `Some(at)` when the handler answered 2xx.
    Replayed { delivered_at: Option<i64> },
}

/// One attempt's result, as it is written.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub event_id: EventId,
    /// The gateway that made the attempt (and holds its lease).
    pub gateway: String,
    pub kind: AttemptKind,
    pub replay_id: Option<String>,
    pub started_at: i64,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub completion: Completion,
}

impl Store {
    /// Leases up to `limit` deliveries due at `now` to `owner` until `lease_until`.
    pub async fn claim_due(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let sql = match self.backend() {
            Backend::Sqlite => CLAIM_SQLITE,
            Backend::Postgres => CLAIM_POSTGRES,
        };
        let claimed: Vec<(String, String, String, i64, i64)> = with_relaxed_writer!(self, pool => {
            sqlx::query_as(sql).bind(owner).bind(lease_until).bind(now).bind(limit).fetch_all(pool).await
        })?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        // Payloads never change, so they are read after the claim committed, by a reader.
        let marks: Vec<String> = (1..=claimed.len()).map(|n| format!("${n}")).collect();
        let sql =
            format!("SELECT event_id, headers, body FROM event_payloads WHERE event_id IN ({})", marks.join(", "));
        let payloads: Vec<(String, String, Vec<u8>)> = with_pool!(self, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for (id, ..) in &claimed {
                query = query.bind(id.as_str());
            }
            query.fetch_all(pool).await?
        });
        let mut payloads: HashMap<String, (String, Vec<u8>)> =
            payloads.into_iter().map(|(id, headers, body)| (id, (headers, body))).collect();
        claimed
            .into_iter()
            .map(|(id, source, dedup_key, attempts, ladder_attempts)| {
                let (headers, body) =
                    payloads.remove(&id).ok_or_else(|| StoreError::Corrupt(format!("event `{id}` has no payload")))?;
                Ok(DueDelivery {
                    event_id: EventId::from_stored(id),
                    source,
                    dedup_key,
                    headers: serde_json::from_str(&headers).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    body,
                    attempts,
                    ladder_attempts,
                })
            })
            .collect()
    }

    /// Records finished attempts in one transaction. For each, `true` when the gateway still
    /// held the lease and the schedule was updated; `false` when the lease had passed to
    /// another gateway, which then owns the schedule (the attempt is recorded either way).
    /// The common case, a 2xx, costs one statement per batch, not one per event; its
    /// `delivered_at` is the batch's latest time.
    pub async fn complete_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<bool>, StoreError> {
        let mut held = vec![false; records.len()];
        with_relaxed_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in records.chunks(ATTEMPT_ROWS) {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(insert_attempts_sql(chunk.len())));
                for r in chunk {
                    query = query
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
            // Delivered (the hot path): one UPDATE per gateway and chunk.
            let mut delivered: Vec<(usize, &AttemptRecord)> = Vec::new();
            for (i, r) in records.iter().enumerate() {
                let update = match r.completion {
                    Completion::Delivered { .. } => {
                        delivered.push((i, r));
                        continue;
                    }
                    Completion::RetryAt(at) => sqlx::query(RETRY).bind(r.event_id.as_str()).bind(&r.gateway).bind(at),
                    Completion::Replayed { delivered_at: Some(at) } => {
                        sqlx::query(REPLAY_DELIVERED).bind(r.event_id.as_str()).bind(at)
                    }
                    Completion::Replayed { delivered_at: None } => sqlx::query(REPLAY_FAILED).bind(r.event_id.as_str()),
                    Completion::Exhausted => sqlx::query(EXHAUSTED)
                        .bind(r.event_id.as_str())
                        .bind(&r.gateway)
                        .bind(crate::domain::EXHAUSTED_ERROR_CODE),
                };
                let updated = update.execute(&mut *tx).await?.rows_affected() == 1;
                held[i] = updated || matches!(r.completion, Completion::Replayed { .. });
            }
            delivered.sort_by(|a, b| a.1.gateway.cmp(&b.1.gateway));
            for group in delivered.chunk_by(|a, b| a.1.gateway == b.1.gateway) {
                for chunk in group.chunks(ATTEMPT_ROWS) {
                    let at = chunk.iter().map(|(_, r)| match r.completion {
                        Completion::Delivered { at } => at,
                        _ => 0,
                    }).max().unwrap_or(0);
                    let marks: Vec<String> = (0..chunk.len()).map(|n| format!("${}", n + 3)).collect();
                    let sql = format!("{DELIVERED_MANY} ({}) RETURNING id", marks.join(", "));
                    let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(at).bind(&chunk[0].1.gateway);
                    for (_, r) in chunk {
                        query = query.bind(r.event_id.as_str());
                    }
                    let updated: std::collections::HashSet<String> = query.fetch_all(&mut *tx).await?.into_iter().collect();
                    for (i, r) in chunk {
                        held[*i] = updated.contains(r.event_id.as_str());
                    }
                }
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        Ok(held)
    }

    /// Gives one claimed delivery back without an attempt (a receipt made it unnecessary).
    pub async fn release_lease(&self, event_id: &EventId, owner: &str) -> Result<(), StoreError> {
        with_writer!(self, pool => sqlx::query("UPDATE events SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2")
            .bind(event_id.as_str())
            .bind(owner)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Gives up leases: `owner`'s on a clean shutdown, or all of them (`None`) when a
    /// single-gateway SQLite store starts and no other gateway can hold one.
    pub async fn release_leases(&self, owner: Option<&str>) -> Result<u64, StoreError> {
        let done = with_writer!(self, pool => match owner {
            Some(owner) => sqlx::query("UPDATE events SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1")
                .bind(owner)
                .execute(pool)
                .await?
                .rows_affected(),
            None => sqlx::query("UPDATE events SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")
                .execute(pool)
                .await?
                .rows_affected(),
        });
        Ok(done)
    }
}
