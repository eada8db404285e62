//! The durable delivery schedule: claiming due deliveries under a lease, and recording what
//! each attempt did.
//!
//! A claim leases an event to one gateway until a deadline; only the owner may complete it,
//! and a lease that runs out (its gateway died) makes the event claimable again. On
//! PostgreSQL, where several gateways share a database, leases are columns of the event
//! (`lease_owner`/`lease_until`) and a claim skips rows another gateway is claiming at the
//! same moment, so each due delivery goes to one. On SQLite one gateway process owns the
//! file, so leases live in memory ([`MemoryLeases`]): a claim is a read, not a write that
//! would cost the single writer a transaction per pass, and a crash loses nothing (the
//! events are still due when the gateway starts again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Backend, Pool, Store, StoreError, mark, or_rollback, row_marks, with_writer};
use crate::domain::{AttemptKind, EventId, ReceivedHeaders};

const CLAIM_POSTGRES: &str = "UPDATE events SET lease_owner = $1, lease_until = $2 \
     WHERE id IN (SELECT id FROM events WHERE next_attempt_at <= $3 \
                  AND (lease_until IS NULL OR lease_until < $3) ORDER BY next_attempt_at LIMIT $4 \
                  FOR UPDATE SKIP LOCKED) \
     RETURNING id, source, dedup_key, attempts, ladder_attempts, event_type";
/// Due events and their payloads, less those leased (`$2`, a JSON array of ids).
const DUE_SQLITE: &str = "SELECT e.id, e.source, e.dedup_key, e.attempts, e.ladder_attempts, e.event_type, p.headers, p.body \
     FROM events e JOIN event_payloads p ON p.event_id = e.id \
     WHERE e.next_attempt_at <= $1 AND e.id NOT IN (SELECT value FROM json_each($2)) \
     ORDER BY e.next_attempt_at LIMIT $3";

/// Event id to (owner, until).
type LeaseMap = HashMap<String, (String, i64), foldhash::fast::RandomState>;

/// In-memory leases of a SQLite store: event id to (owner, until). Semantics match the
/// PostgreSQL columns: a lease is live while `until >= now`; an expired one can be taken over.
///
/// The map sees several lookups per delivery; its keys are the gateway's own event ids, so
/// it hashes with foldhash rather than the (flood-resistant, slower) default.
#[derive(Clone, Default)]
pub(super) struct MemoryLeases {
    held: Arc<Mutex<LeaseMap>>,
    /// One claim at a time, so two claimers never read the same due rows.
    claiming: Arc<tokio::sync::Mutex<()>>,
}

impl MemoryLeases {
    pub(super) fn owned_by(&self, event: &str, owner: &str) -> bool {
        self.held.lock().expect("lease map").get(event).is_some_and(|(o, _)| o == owner)
    }

    /// Leases events that are about to commit to `owner` until its dispatcher takes them
    /// (see `handoff`); nobody else can hold a lease on an event that does not exist yet.
    pub(super) fn hold_fresh<'a>(&self, events: impl IntoIterator<Item = &'a str>, owner: &str) {
        let mut held = self.held.lock().expect("lease map");
        for event in events {
            held.insert(event.to_string(), (owner.to_string(), i64::MAX));
        }
    }

    /// Sets the end of `owner`'s leases on `events` to `until` (leases of others stay); how
    /// many it renewed.
    fn renew<'a>(&self, events: impl IntoIterator<Item = &'a str>, owner: &str, until: i64) -> usize {
        let mut held = self.held.lock().expect("lease map");
        let mut renewed = 0;
        for event in events {
            if let Some(lease) = held.get_mut(event)
                && lease.0 == owner
            {
                lease.1 = until;
                renewed += 1;
            }
        }
        renewed
    }

    /// Ends leases given as (owner, event), each only if that owner still holds it (after the
    /// write that ends them committed).
    pub(super) fn release<'a>(&self, ended: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut held = self.held.lock().expect("lease map");
        for (owner, event) in ended {
            if held.get(event).is_some_and(|(o, _)| o == owner) {
                held.remove(event);
            }
        }
    }
}

/// Attempt rows per multi-row statement (10 parameters each).
pub(super) const ATTEMPT_ROWS: usize = super::PREPARED_ROWS;

/// `INSERT INTO attempts … VALUES (…), (…)` for `rows` attempts, each bound as (event, event,
/// kind, replay, gateway, started, latency, status, error, excerpt): the attempt's number is
/// its event's attempt count plus one, read before the batch's updates.
pub(super) fn insert_attempts_sql(backend: Backend, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let m = |col: usize| mark(backend, row * 10 + col + 1);
            let rest: Vec<String> = (2..10).map(m).collect();
            format!("({}, (SELECT attempts + 1 FROM events WHERE id = {}), {})", m(0), m(1), rest.join(", "))
        })
        .collect();
    format!(
        "INSERT {}INTO attempts (event_id, number, kind, replay_id, gateway, started_at, latency_ms, status_code, \
         error, response_excerpt) VALUES {}",
        or_rollback(backend),
        values.join(", ")
    )
}

/// Followed by `(ids…)`; `$1` is the delivery time, `$2` the lease owner (PostgreSQL).
pub(super) const DELIVERED_MANY: &str = "UPDATE events SET attempts = attempts + 1, ladder_attempts = ladder_attempts + 1, \
     delivery_state = 'delivered', delivered_at = $1, next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL \
     WHERE lease_owner = $2 AND id IN";
/// `$1` event, `$2` retry time; followed by [`OWNED`] on PostgreSQL. A receipt recorded, or
/// an operator's resolution made, while the attempt was out stands: no retry is scheduled.
pub(super) const RETRY: &str = "UPDATE events SET attempts = attempts + 1, ladder_attempts = ladder_attempts + 1, \
     delivery_state = 'pending', \
     next_attempt_at = CASE WHEN receipts > 0 OR resolved_at IS NOT NULL THEN NULL ELSE $2 END, \
     lease_owner = NULL, lease_until = NULL \
     WHERE id = $1";
/// `$1` event, `$2` error code; followed by [`OWNED`] on PostgreSQL. An event with a receipt
/// (recorded while the last attempt was out) is neither exhausted nor failed by it.
pub(super) const EXHAUSTED: &str = "UPDATE events SET attempts = attempts + 1, ladder_attempts = ladder_attempts + 1, \
     delivery_state = CASE WHEN receipts > 0 THEN delivery_state ELSE 'exhausted' END, \
     next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL, \
     outcome = CASE WHEN outcome = 'unknown' AND receipts = 0 THEN 'failed' ELSE outcome END, \
     error_code = CASE WHEN outcome = 'unknown' AND receipts = 0 THEN $2 ELSE error_code END \
     WHERE id = $1";
/// The lease check of a PostgreSQL schedule update; `$3` is the owner.
pub(super) const OWNED: &str = " AND lease_owner = $3";

pub(super) const REPLAY_DELIVERED: &str = "UPDATE events SET attempts = attempts + 1, delivery_state = 'delivered', \
     delivered_at = $2, next_attempt_at = NULL, \
     outcome = CASE WHEN receipts = 0 AND error_code = 'delivery_exhausted' THEN 'unknown' ELSE outcome END, \
     error_code = CASE WHEN receipts = 0 AND error_code = 'delivery_exhausted' THEN NULL ELSE error_code END \
     WHERE id = $1";
pub(super) const REPLAY_FAILED: &str = "UPDATE events SET attempts = attempts + 1 WHERE id = $1";
/// After a 2xx of an event whose type needs no receipt (the source's `no_receipt_types`):
/// `$1` event, `$2` the reason shown, `$3` the time. A receipt, or an operator's resolution,
/// stands: the handler's word and the operator's go first.
pub(super) const CONFIRMED_WITHOUT_RECEIPT: &str = "UPDATE events SET outcome = 'confirmed', error_code = NULL, \
     outcome_reason = $2, outcome_at = $3 \
     WHERE id = $1 AND outcome <> 'confirmed' AND receipts = 0 AND resolved_at IS NULL \
     AND delivery_state = 'delivered'";

/// An event claimed for delivery, with what the forward needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub event_id: EventId,
    pub source: String,
    pub dedup_key: String,
    pub headers: ReceivedHeaders,
    pub body: Vec<u8>,
    /// Attempts of any kind so far (the next one is `attempts + 1`).
    pub attempts: i64,
    /// Attempts that used up the ladder so far.
    pub ladder_attempts: i64,
    /// The event's type, when it has one (a source's `no_receipt_types` look at it).
    pub event_type: Option<String>,
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
    /// On a 2xx, confirm the event without a receipt, for this reason (its type is one of
    /// the source's `no_receipt_types`); in the same transaction as the attempt.
    pub confirm_without_receipt: Option<String>,
}

impl AttemptRecord {
    /// The reason to confirm the event by, when this attempt got a 2xx and its type needs no
    /// receipt.
    pub(super) fn confirms(&self) -> Option<(&str, i64)> {
        let at = match self.completion {
            Completion::Delivered { at } | Completion::Replayed { delivered_at: Some(at) } => at,
            _ => return None,
        };
        self.confirm_without_receipt.as_deref().map(|reason| (reason, at))
    }
}

/// A due row as the SQLite claim reads it: id, source, dedup key, attempts, ladder attempts,
/// event type, headers, body.
type DueRow = (String, String, String, i64, i64, Option<String>, String, Vec<u8>);

/// Decodes a claimed row's stored headers.
fn due_delivery(
    (id, source, dedup_key, attempts, ladder_attempts, event_type): (String, String, String, i64, i64, Option<String>),
    headers: &str,
    body: Vec<u8>,
) -> Result<DueDelivery, StoreError> {
    Ok(DueDelivery {
        event_id: EventId::from_stored(id),
        source,
        dedup_key,
        headers: serde_json::from_str(headers).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        body,
        attempts,
        ladder_attempts,
        event_type,
    })
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
        match &self.pool {
            Pool::Sqlite { read, leases, .. } => {
                let _one = leases.claiming.lock().await;
                let live: Vec<String> = leases
                    .held
                    .lock()
                    .expect("lease map")
                    .iter()
                    .filter(|(_, (_, until))| *until >= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                let live = serde_json::to_string(&live).expect("ids serialise");
                let rows: Vec<DueRow> =
                    sqlx::query_as(DUE_SQLITE).bind(now).bind(live).bind(limit).fetch_all(read).await?;
                let mut held = leases.held.lock().expect("lease map");
                let mut claimed = Vec::with_capacity(rows.len());
                for (id, source, key, attempts, ladder, event_type, headers, body) in rows {
                    // Leased since the list above was taken (a fresh event handed off): skip.
                    if held.get(&id).is_some_and(|(_, until)| *until >= now) {
                        continue;
                    }
                    held.insert(id.clone(), (owner.to_string(), lease_until));
                    claimed.push(due_delivery((id, source, key, attempts, ladder, event_type), &headers, body)?);
                }
                Ok(claimed)
            }
            Pool::Postgres(pool) => {
                let claimed: Vec<(String, String, String, i64, i64, Option<String>)> = sqlx::query_as(CLAIM_POSTGRES)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?;
                if claimed.is_empty() {
                    return Ok(Vec::new());
                }
                // Payloads never change, so they are read after the claim committed.
                let sql = format!(
                    "SELECT event_id, headers, body FROM event_payloads WHERE event_id IN {}",
                    row_marks(Backend::Postgres, 1, claimed.len(), 1)
                );
                let mut query = sqlx::query_as::<_, (String, String, Vec<u8>)>(sqlx::AssertSqlSafe(sql));
                for (id, ..) in &claimed {
                    query = query.bind(id.as_str());
                }
                let mut payloads: HashMap<String, (String, Vec<u8>)> =
                    query.fetch_all(pool).await?.into_iter().map(|(id, headers, body)| (id, (headers, body))).collect();
                claimed
                    .into_iter()
                    .map(|row| {
                        let (headers, body) = payloads
                            .remove(&row.0)
                            .ok_or_else(|| StoreError::Corrupt(format!("event `{}` has no payload", row.0)))?;
                        due_delivery(row, &headers, body)
                    })
                    .collect()
            }
        }
    }

    /// Records finished attempts in one transaction. For each, `true` when the gateway still
    /// held the lease and the schedule was updated; `false` when the lease had passed to
    /// another gateway, which then owns the schedule (the attempt is recorded either way).
    pub async fn complete_attempts(&self, records: &[AttemptRecord]) -> Result<Vec<bool>, StoreError> {
        Ok(self.commit_group(&[], records).await?.1)
    }

    /// Renews the leases of fresh deliveries `owner`'s dispatcher took from its queue: they
    /// were held without a limit while queued, and run out at `until` like a claim's.
    pub fn lease_taken(&self, events: &[DueDelivery], owner: &str, until: i64) {
        if let Pool::Sqlite { leases, .. } = &self.pool {
            leases.renew(events.iter().map(|due| due.event_id.as_str()), owner, until);
        }
    }

    /// Extends `owner`'s lease on one claimed delivery to `until`; `false` when `owner` no
    /// longer holds it (its lease ran out and another gateway claimed the event).
    pub async fn renew_lease(&self, event_id: &EventId, owner: &str, until: i64) -> Result<bool, StoreError> {
        match &self.pool {
            Pool::Sqlite { leases, .. } => Ok(leases.renew([event_id.as_str()], owner, until) == 1),
            Pool::Postgres(pool) => {
                let renewed = sqlx::query("UPDATE events SET lease_until = $3 WHERE id = $1 AND lease_owner = $2")
                    .bind(event_id.as_str())
                    .bind(owner)
                    .bind(until)
                    .execute(pool)
                    .await?
                    .rows_affected();
                Ok(renewed == 1)
            }
        }
    }

    /// Gives one claimed delivery back without an attempt (a receipt made it unnecessary).
    pub async fn release_lease(&self, event_id: &EventId, owner: &str) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite { leases, .. } => leases.release([(owner, event_id.as_str())]),
            Pool::Postgres(pool) => {
                sqlx::query(
                    "UPDATE events SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
                )
                .bind(event_id.as_str())
                .bind(owner)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Gives up leases: `owner`'s on a clean shutdown, or all of them (`None`) when a
    /// single-gateway SQLite store starts (leases written by versions that kept them in rows).
    pub async fn release_leases(&self, owner: Option<&str>) -> Result<u64, StoreError> {
        if let (Pool::Sqlite { leases, .. }, Some(owner)) = (&self.pool, owner) {
            let mut held = leases.held.lock().expect("lease map");
            let before = held.len();
            held.retain(|_, (o, _)| o != owner);
            return Ok((before - held.len()) as u64);
        }
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

#[cfg(test)]
mod tests {
    use super::{Backend, insert_attempts_sql};

    #[test]
    fn each_attempt_row_numbers_itself_from_its_event() {
        let values = |sql: String| sql.split("VALUES ").nth(1).unwrap().to_string();
        assert_eq!(
            values(insert_attempts_sql(Backend::Postgres, 2)),
            "($1, (SELECT attempts + 1 FROM events WHERE id = $2), $3, $4, $5, $6, $7, $8, $9, $10), \
             ($11, (SELECT attempts + 1 FROM events WHERE id = $12), $13, $14, $15, $16, $17, $18, $19, $20)"
        );
        assert!(
            values(insert_attempts_sql(Backend::Sqlite, 1))
                .starts_with("(?, (SELECT attempts + 1 FROM events WHERE id = ?), ?")
        );
    }
}
