//! The durable delivery schedule: claiming due deliveries under a lease, and recording what
//! each attempt did.
//!
//! A claim sets `lease_owner`/`lease_until`; only the owner may complete it, and a lease that
//! runs out (its gateway died) makes the event claimable again. On PostgreSQL the claim skips
//! rows another gateway is claiming at the same moment, so each due delivery goes to one.

use sqlx::Connection;

use super::{Backend, Store, StoreError, with_relaxed_writer, with_writer};
use crate::domain::{AttemptKind, EventId};
use sqlx::Row;

const CLAIM_SQLITE: &str = "UPDATE events SET lease_owner = $1, lease_until = $2 \
     WHERE id IN (SELECT id FROM events WHERE next_attempt_at <= $3 \
                  AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at LIMIT $4) \
     RETURNING id, source, dedup_key, headers, body, attempts, ladder_attempts";
const CLAIM_POSTGRES: &str = "UPDATE events SET lease_owner = $1, lease_until = $2 \
     WHERE id IN (SELECT id FROM events WHERE next_attempt_at <= $3 \
                  AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at LIMIT $4 \
                  FOR UPDATE SKIP LOCKED) \
     RETURNING id, source, dedup_key, headers, body, attempts, ladder_attempts";

const INSERT_ATTEMPT: &str = "INSERT INTO attempts \
     (event_id, number, kind, replay_id, gateway, started_at, latency_ms, status_code, error, response_excerpt) \
     VALUES ($1, (SELECT attempts + 1 FROM events WHERE id = $1), $2, $3, $4, $5, $6, $7, $8, $9)";

const DELIVERED: &str = "UPDATE events SET attempts = attempts + 1, ladder_attempts = ladder_attempts + 1, \
     delivery_state = 'delivered', delivered_at = $3, next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL \
     WHERE id = $1 AND lease_owner = $2";
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
        with_relaxed_writer!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| {
                    let headers: String = row.try_get("headers")?;
                    Ok(DueDelivery {
                        event_id: EventId::from_stored(row.try_get("id")?),
                        source: row.try_get("source")?,
                        dedup_key: row.try_get("dedup_key")?,
                        headers: serde_json::from_str(&headers).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        body: row.try_get("body")?,
                        attempts: row.try_get("attempts")?,
                        ladder_attempts: row.try_get("ladder_attempts")?,
                    })
                })
                .collect()
        })
    }

    /// Records finished attempts in one transaction. For each, `true` when the gateway still
    /// held the lease and the schedule was updated; `false` when the lease had passed to
    /// another gateway, which then owns the schedule (the attempt is recorded either way).
    pub async fn complete_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<bool>, StoreError> {
        let mut held = Vec::with_capacity(records.len());
        with_relaxed_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            for r in records {
                sqlx::query(INSERT_ATTEMPT)
                    .bind(r.event_id.as_str())
                    .bind(r.kind.as_str())
                    .bind(r.replay_id.as_deref())
                    .bind(&r.gateway)
                    .bind(r.started_at)
                    .bind(r.latency_ms)
                    .bind(r.status_code)
                    .bind(r.error.as_deref())
                    .bind(r.response_excerpt.as_deref())
                    .execute(&mut *tx)
                    .await?;
                let update = match r.completion {
                    Completion::Delivered { at } => sqlx::query(DELIVERED).bind(r.event_id.as_str()).bind(&r.gateway).bind(at),
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
                held.push(updated || matches!(r.completion, Completion::Replayed { .. }));
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
