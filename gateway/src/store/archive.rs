//! The archive's statements: which events are due to be archived, claiming them for a file,
//! reading them whole (row, payload, attempts, receipts) for a file or an export, marking a
//! file written, and importing archived events back, idempotently.
//!
//! An event goes to exactly one file: it is claimed for the file (`archive_file`) in one
//! transaction, and marked written (`archived_at`) once the file is durably in place. A purge
//! of an archiving source takes only events marked written (see `store/retention.rs`), so a
//! crash anywhere between loses nothing, and a file claimed but not marked is finished by the
//! next run, which never claims its events for another file (see `crate::archive`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::Row;

use super::commit::on_sqlite_writer;
use super::retention::{FREE, SETTLED, Sql, id_bound};
use super::selection::bind_all;
use super::{Backend, Pool, PurgePlan, SqlParam, Store, StoreError, with_pool, with_writer};

/// An event as the archive and `hookwarden export` write it: one JSON line. Times are unix
/// milliseconds; `headers` is the stored JSON of `[name, value]` pairs (a value that is not
/// UTF-8 is `{"base64": …}`), `body_base64` the exact bytes; both are `null` once retention
/// purged the payload (`payload_purged_at` says when).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedEvent {
    pub event: ArchivedRow,
    pub headers: Option<Box<RawValue>>,
    pub body_base64: Option<String>,
    pub attempts: Vec<ArchivedAttempt>,
    pub receipts: Vec<ArchivedReceipt>,
}

/// The event's row, every column but the delivery schedule and leases (an imported event is
/// never due: only a replay sends it again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedRow {
    pub id: String,
    pub source: String,
    pub dedup_key: String,
    pub event_type: Option<String>,
    pub received_at: i64,
    pub delivery_state: String,
    pub outcome: String,
    pub outcome_reason: Option<String>,
    pub outcome_at: Option<i64>,
    pub error_code: Option<String>,
    pub attempts: i64,
    pub ladder_attempts: i64,
    pub delivered_at: Option<i64>,
    pub receipts: i64,
    pub resolved_by: Option<String>,
    pub resolved_note: Option<String>,
    pub resolved_at: Option<i64>,
    pub payload_purged_at: Option<i64>,
    /// When the archive wrote it (`null` in an export of an event not archived).
    pub archived_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedAttempt {
    pub number: i64,
    pub kind: String,
    pub replay_id: Option<String>,
    pub gateway: String,
    pub started_at: i64,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedReceipt {
    pub receipt_id: String,
    pub key_id: String,
    pub status: String,
    pub target_record_id: Option<String>,
    pub error_code: Option<String>,
    pub detail: Option<String>,
    pub signed_at: i64,
    pub received_at: i64,
    pub via: String,
    /// The receipt's JSON as signed, and its signature: it can be verified again after import.
    pub body: String,
    pub signature: String,
}

/// An event due to be archived: its id, source and when it was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueForArchive {
    pub id: String,
    pub source: String,
    pub received_at: i64,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Imported {
    /// Events written, each with its payload, attempts and receipts.
    pub events: u64,
    pub attempts: u64,
    pub receipts: u64,
    /// Events the store had already (the same id, or the same source and dedup key): left as they are.
    pub present: u64,
}

const ROW_COLUMNS: &str = "id, source, dedup_key, event_type, received_at, delivery_state, outcome, outcome_reason, \
     outcome_at, error_code, attempts, ladder_attempts, delivered_at, receipts, resolved_by, resolved_note, resolved_at, \
     payload_purged_at, archived_at";

impl Store {
    /// Up to `limit` events of the archiving sources (`plan.archiving`), after `cursor`, that a purge of `plan`
    /// would take (settled past the earlier of `payloads` and `events`, gaps past
    /// `unsettled`, none held) and no file has claimed yet; in id order.
    pub async fn due_for_archive(
        &self,
        plan: &PurgePlan,
        cursor: &Option<String>,
        limit: usize,
    ) -> Result<Vec<DueForArchive>, StoreError> {
        let archiving = &plan.archiving;
        if archiving.is_empty() {
            return Ok(Vec::new());
        }
        let mut pick = Sql::new(self.backend());
        pick.push("SELECT e.id, e.source, e.received_at FROM events e WHERE e.id > ")
            .param(SqlParam::Text(cursor.clone().unwrap_or_default()))
            .push(" AND e.id < ")
            .param(SqlParam::Text(id_bound(plan.latest(|c| c.payloads.max(c.events).max(c.unsettled)))))
            .push(" AND e.archive_file IS NULL AND e.archived_at IS NULL AND e.source IN ")
            .ids_in(archiving)
            .push(&format!(" AND {FREE} AND (({SETTLED} AND e.received_at < "))
            .cutoff("e.source", plan, |c| c.payloads.max(c.events))
            .push(&format!(") OR (NOT {SETTLED} AND e.received_at < "))
            .cutoff("e.source", plan, |c| c.unsettled)
            .push(&format!(")) ORDER BY e.id LIMIT {limit}"));
        with_pool!(self, pool => {
            let rows: Vec<(String, String, i64)> =
                bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(pick.text.clone())), &pick.params).fetch_all(pool).await?;
            Ok(rows.into_iter().map(|(id, source, received_at)| DueForArchive { id, source, received_at }).collect())
        })
    }

    /// Claims the events `ids` not claimed yet for `file`, in one transaction; how many it
    /// claimed (an event claimed meanwhile by another file stays with that one).
    pub async fn claim_for_archive(&self, file: &str, ids: &[String]) -> Result<u64, StoreError> {
        let mut claim = Sql::new(self.backend());
        claim.push("UPDATE events SET archive_file = ").param(SqlParam::Text(file.to_string()));
        claim.push(" WHERE archive_file IS NULL AND id IN ").ids_in(ids);
        with_writer!(self, pool => {
            Ok(bind_all!(sqlx::query(sqlx::AssertSqlSafe(claim.text.clone())), &claim.params).execute(pool).await?.rows_affected())
        })
    }

    /// Files claimed and not marked written: what a run stopped in the middle of.
    pub async fn unfinished_archive_files(&self) -> Result<Vec<String>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar(
                "SELECT DISTINCT archive_file FROM events WHERE archive_file IS NOT NULL AND archived_at IS NULL \
                 ORDER BY archive_file",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// The events claimed for `file`, whole, in id order, as the file holds them once written
    /// at `at` (unix ms).
    pub async fn archived_events_of(&self, file: &str, at: i64) -> Result<Vec<ArchivedEvent>, StoreError> {
        let ids: Vec<String> = with_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM events WHERE archive_file = $1 ORDER BY id").bind(file).fetch_all(pool).await?
        });
        let mut events = self.archived_events(&ids).await?;
        for event in &mut events {
            event.event.archived_at = Some(at);
        }
        Ok(events)
    }

    /// Marks the events of `file` written at `at`: from now on a purge may take them. On
    /// SQLite without an fsync of its own, like the purge's batches: a mark lost to a power cut
    /// leaves the file claimed and unmarked, and the next run finds it whole and marks it
    /// again (the claim, which must not be lost, commits at FULL).
    pub async fn mark_archived(&self, file: &str, at: i64) -> Result<u64, StoreError> {
        const MARK: &str = "UPDATE events SET archived_at = ?1 WHERE archive_file = ?2 AND archived_at IS NULL";
        match &self.pool {
            Pool::Sqlite { write, .. } => {
                on_sqlite_writer(write, true, |db| Ok(db.execute(MARK, rusqlite::params![at, file])? as u64)).await
            }
            Pool::Postgres(pool) => Ok(sqlx::query(sqlx::AssertSqlSafe(MARK.replace('?', "$")))
                .bind(at)
                .bind(file)
                .execute(pool)
                .await?
                .rows_affected()),
        }
    }

    /// Up to `limit` events of `source` received in `[since, until)`, after `cursor`, whole,
    /// in id order: a page of `hookwarden export`.
    pub async fn export_page(
        &self,
        source: &str,
        since: i64,
        until: i64,
        cursor: &Option<String>,
        limit: usize,
    ) -> Result<Vec<ArchivedEvent>, StoreError> {
        let ids: Vec<String> = with_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT id FROM events WHERE source = $1 AND received_at >= $2 AND received_at < $3 AND id > $4 \
                 ORDER BY id LIMIT $5",
            )
            .bind(source)
            .bind(since)
            .bind(until)
            .bind(cursor.clone().unwrap_or_default())
            .bind(limit as i64)
            .fetch_all(pool)
            .await?
        });
        self.archived_events(&ids).await
    }

    /// The events `ids`, whole, in the order given (those not found left out).
    async fn archived_events(&self, ids: &[String]) -> Result<Vec<ArchivedEvent>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let select = |what: &str, order: &str| {
            let mut sql = Sql::new(self.backend());
            sql.push(what).ids_in(ids).push(order);
            sql
        };
        let rows = select(&format!("SELECT {ROW_COLUMNS} FROM events WHERE id IN "), "");
        let payloads = select("SELECT event_id, headers, body FROM event_payloads WHERE event_id IN ", "");
        let attempts = select(
            "SELECT event_id, number, kind, replay_id, gateway, started_at, latency_ms, status_code, error, \
             response_excerpt FROM attempts WHERE event_id IN ",
            " ORDER BY event_id, id",
        );
        let receipts = select(
            "SELECT event_id, receipt_id, key_id, status, target_record_id, error_code, detail, signed_at, received_at, \
             via, body, signature FROM receipts WHERE event_id IN ",
            " ORDER BY event_id, received_at, receipt_id",
        );
        let mut out: std::collections::HashMap<String, ArchivedEvent> = std::collections::HashMap::new();
        with_pool!(self, pool => {
            for row in bind_all!(sqlx::query(sqlx::AssertSqlSafe(rows.text.clone())), &rows.params).fetch_all(pool).await? {
                let event = ArchivedRow {
                    id: row.try_get("id")?,
                    source: row.try_get("source")?,
                    dedup_key: row.try_get("dedup_key")?,
                    event_type: row.try_get("event_type")?,
                    received_at: row.try_get("received_at")?,
                    delivery_state: row.try_get("delivery_state")?,
                    outcome: row.try_get("outcome")?,
                    outcome_reason: row.try_get("outcome_reason")?,
                    outcome_at: row.try_get("outcome_at")?,
                    error_code: row.try_get("error_code")?,
                    attempts: row.try_get("attempts")?,
                    ladder_attempts: row.try_get("ladder_attempts")?,
                    delivered_at: row.try_get("delivered_at")?,
                    receipts: row.try_get("receipts")?,
                    resolved_by: row.try_get("resolved_by")?,
                    resolved_note: row.try_get("resolved_note")?,
                    resolved_at: row.try_get("resolved_at")?,
                    payload_purged_at: row.try_get("payload_purged_at")?,
                    archived_at: row.try_get("archived_at")?,
                };
                let line = ArchivedEvent { event, headers: None, body_base64: None, attempts: Vec::new(), receipts: Vec::new() };
                out.insert(line.event.id.clone(), line);
            }
            for row in bind_all!(sqlx::query(sqlx::AssertSqlSafe(payloads.text.clone())), &payloads.params).fetch_all(pool).await? {
                let id: String = row.try_get("event_id")?;
                let headers: String = row.try_get("headers")?;
                let body: Vec<u8> = row.try_get("body")?;
                if let Some(line) = out.get_mut(&id) {
                    let headers = RawValue::from_string(headers)
                        .map_err(|e| StoreError::Corrupt(format!("headers of {id} are not JSON: {e}")))?;
                    line.headers = Some(headers);
                    line.body_base64 = Some(base64::Engine::encode(&base64::engine::general_purpose::STANDARD, body));
                }
            }
            for row in bind_all!(sqlx::query(sqlx::AssertSqlSafe(attempts.text.clone())), &attempts.params).fetch_all(pool).await? {
                let id: String = row.try_get("event_id")?;
                if let Some(line) = out.get_mut(&id) {
                    line.attempts.push(ArchivedAttempt {
                        number: row.try_get("number")?,
                        kind: row.try_get("kind")?,
                        replay_id: row.try_get("replay_id")?,
                        gateway: row.try_get("gateway")?,
                        started_at: row.try_get("started_at")?,
                        latency_ms: row.try_get("latency_ms")?,
                        status_code: row.try_get("status_code")?,
                        error: row.try_get("error")?,
                        response_excerpt: row.try_get("response_excerpt")?,
                    });
                }
            }
            for row in bind_all!(sqlx::query(sqlx::AssertSqlSafe(receipts.text.clone())), &receipts.params).fetch_all(pool).await? {
                let id: String = row.try_get("event_id")?;
                if let Some(line) = out.get_mut(&id) {
                    line.receipts.push(ArchivedReceipt {
                        receipt_id: row.try_get("receipt_id")?,
                        key_id: row.try_get("key_id")?,
                        status: row.try_get("status")?,
                        target_record_id: row.try_get("target_record_id")?,
                        error_code: row.try_get("error_code")?,
                        detail: row.try_get("detail")?,
                        signed_at: row.try_get("signed_at")?,
                        received_at: row.try_get("received_at")?,
                        via: row.try_get("via")?,
                        body: row.try_get("body")?,
                        signature: row.try_get("signature")?,
                    });
                }
            }
        });
        Ok(ids.iter().filter_map(|id| out.remove(id)).collect())
    }

    /// Writes `events` (checked: see `crate::archive::check`) in one transaction: each one
    /// the store does not have yet (by id, or by source and dedup key) with its payload,
    /// attempts and receipts; the others are left as they are, so importing twice adds
    /// nothing. Imported events are never due for delivery (only a replay sends them).
    pub async fn import_events(&self, events: &[ArchivedEvent]) -> Result<Imported, StoreError> {
        let backend = self.backend();
        // On SQLite the one writer numbers events (see `commit_sqlite`): an imported one comes
        // after the last stored, as the gateway numbers on from there when it starts.
        let (seq_column, seq_value) = match backend {
            Backend::Sqlite => {
                (", seq", ", (SELECT COALESCE((SELECT seq FROM events ORDER BY rowid DESC LIMIT 1), 0) + 1)")
            }
            Backend::Postgres => ("", ""),
        };
        let insert_event = format!(
            "INSERT INTO events ({ROW_COLUMNS}{seq_column}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15, $16, $17, $18, $19{seq_value}) ON CONFLICT DO NOTHING"
        );
        let mut imported = Imported::default();
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            for line in events {
                let e = &line.event;
                let written = sqlx::query(sqlx::AssertSqlSafe(insert_event.clone()))
                    .bind(&e.id)
                    .bind(&e.source)
                    .bind(&e.dedup_key)
                    .bind(&e.event_type)
                    .bind(e.received_at)
                    .bind(&e.delivery_state)
                    .bind(&e.outcome)
                    .bind(&e.outcome_reason)
                    .bind(e.outcome_at)
                    .bind(&e.error_code)
                    .bind(e.attempts)
                    .bind(e.ladder_attempts)
                    .bind(e.delivered_at)
                    .bind(e.receipts)
                    .bind(&e.resolved_by)
                    .bind(&e.resolved_note)
                    .bind(e.resolved_at)
                    .bind(e.payload_purged_at)
                    .bind(e.archived_at)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if written == 0 {
                    imported.present += 1;
                    continue;
                }
                imported.events += 1;
                if let (Some(headers), Some(body)) = (&line.headers, &line.body_base64) {
                    let body = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body)
                        .map_err(|err| StoreError::Corrupt(format!("body of {}: {err}", e.id)))?;
                    sqlx::query("INSERT INTO event_payloads (event_id, headers, body) VALUES ($1, $2, $3)")
                        .bind(&e.id)
                        .bind(headers.get())
                        .bind(body)
                        .execute(&mut *tx)
                        .await?;
                }
                for a in &line.attempts {
                    sqlx::query(
                        "INSERT INTO attempts (event_id, number, kind, replay_id, gateway, started_at, latency_ms, \
                         status_code, error, response_excerpt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                    )
                    .bind(&e.id)
                    .bind(a.number)
                    .bind(&a.kind)
                    .bind(&a.replay_id)
                    .bind(&a.gateway)
                    .bind(a.started_at)
                    .bind(a.latency_ms)
                    .bind(a.status_code)
                    .bind(&a.error)
                    .bind(&a.response_excerpt)
                    .execute(&mut *tx)
                    .await?;
                    imported.attempts += 1;
                }
                for r in &line.receipts {
                    imported.receipts += sqlx::query(
                        "INSERT INTO receipts (receipt_id, event_id, key_id, status, target_record_id, error_code, \
                         detail, signed_at, received_at, via, body, signature) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
                    )
                    .bind(&r.receipt_id)
                    .bind(&e.id)
                    .bind(&r.key_id)
                    .bind(&r.status)
                    .bind(&r.target_record_id)
                    .bind(&r.error_code)
                    .bind(&r.detail)
                    .bind(r.signed_at)
                    .bind(r.received_at)
                    .bind(&r.via)
                    .bind(&r.body)
                    .bind(&r.signature)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
            }
            tx.commit().await?;
        });
        Ok(imported)
    }
}
