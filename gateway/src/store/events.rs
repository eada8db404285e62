//! Reading the event log for the admin API.

use sqlx::Row;

use super::audit::append_audit_in;
use super::selection::bind_all;
use super::{Backend, NewAuditEntry, Selection, SqlParam, Store, StoreError, with_pool, with_writer};
use crate::access::SourceScope;
use crate::domain::{Attempt, AttemptKind, DeliveryState, EventId, EventSummary, Outcome, ReceivedHeaders, Resolution};

const COLUMNS: &str = "id, source, dedup_key, event_type, received_at, outcome, error_code, delivery_state, \
     attempts, next_attempt_at, delivered_at, resolved_by, resolved_note, resolved_at, payload_purged_at, \
     outcome_reason";

/// Which events to list: newest first, in pages ending before `before`.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub source: Option<String>,
    /// Inclusive, unix ms.
    pub since: Option<i64>,
    /// Exclusive, unix ms.
    pub until: Option<i64>,
    pub outcome: Option<Outcome>,
    pub before: Option<EventId>,
    pub limit: i64,
    /// An operator's filter expression, as a condition (the replay planner builds the same).
    pub filter: Selection,
}

/// One event with everything the operator may want to see.
#[derive(Debug, Clone)]
pub struct EventDetail {
    pub summary: EventSummary,
    /// `None` once retention purged it (`summary.payload_purged_at` says when).
    pub payload: Option<Payload>,
    pub attempts: Vec<Attempt>,
}

/// An event's headers and body as received.
#[derive(Debug, Clone)]
pub struct Payload {
    pub headers: ReceivedHeaders,
    pub body: Vec<u8>,
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{value}`"))
}

macro_rules! summary_from_row {
    ($row:expr) => {{
        let row = $row;
        let outcome: String = row.try_get("outcome")?;
        let state: String = row.try_get("delivery_state")?;
        Ok::<_, StoreError>(EventSummary {
            id: EventId::from_stored(row.try_get("id")?),
            source: row.try_get("source")?,
            provider_event_id: row.try_get("dedup_key")?,
            event_type: row.try_get("event_type")?,
            received_at: row.try_get("received_at")?,
            outcome: Outcome::parse(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
            error_code: row.try_get("error_code")?,
            delivery_state: DeliveryState::parse(&state).ok_or_else(|| corrupt("delivery state", &state))?,
            attempts: row.try_get("attempts")?,
            next_attempt_at: row.try_get("next_attempt_at")?,
            delivered_at: row.try_get("delivered_at")?,
            outcome_reason: row.try_get("outcome_reason")?,
            resolution: match (
                row.try_get::<Option<String>, _>("resolved_by")?,
                row.try_get::<Option<String>, _>("resolved_note")?,
                row.try_get::<Option<i64>, _>("resolved_at")?,
            ) {
                (Some(by), Some(note), Some(at)) => Some(Resolution { by, note, at }),
                _ => None,
            },
            payload_purged_at: row.try_get("payload_purged_at")?,
        })
    }};
}

impl Store {
    pub async fn list_events(&self, q: &EventQuery) -> Result<Vec<EventSummary>, StoreError> {
        let mut condition = q.filter.clone();
        if let Some(source) = &q.source {
            condition.and("source = ?", vec![SqlParam::Text(source.clone())]);
        }
        // With an outcome, SQLite would take the window's range on `events_outcome_received`
        // and sort all of it (284 ms for the unknown ones of a day at a million events); the
        // unary `+` keeps the window off the index choice, so it walks `events_outcome_id`
        // newest first and stops at the page's end. PostgreSQL plans this well by itself.
        let received_at = match (q.outcome, self.backend()) {
            (Some(_), Backend::Sqlite) => "+received_at",
            _ => "received_at",
        };
        if let Some(since) = q.since {
            condition.and(&format!("{received_at} >= ?"), vec![SqlParam::Int(since)]);
        }
        if let Some(until) = q.until {
            condition.and(&format!("{received_at} < ?"), vec![SqlParam::Int(until)]);
        }
        if let Some(outcome) = q.outcome {
            condition.and("outcome = ?", vec![SqlParam::Text(outcome.as_str().to_string())]);
        }
        if let Some(before) = &q.before {
            condition.and("id < ?", vec![SqlParam::Text(before.as_str().to_string())]);
        }
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE {} ORDER BY id DESC LIMIT {}",
            condition.render(1),
            q.limit.clamp(1, 1000)
        );
        with_pool!(self, pool => {
            let query = bind_all!(sqlx::query(sqlx::AssertSqlSafe(sql)), condition.params());
            let rows = query.fetch_all(pool).await?;
            rows.iter().map(|row| summary_from_row!(row)).collect()
        })
    }

    pub async fn get_event(&self, id: &EventId) -> Result<Option<EventDetail>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS}, headers, body FROM events LEFT JOIN event_payloads ON event_id = id WHERE id = $1"
        );
        with_pool!(self, pool => {
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_optional(pool).await? else {
                return Ok(None);
            };
            let summary = summary_from_row!(&row)?;
            let headers: Option<String> = row.try_get("headers")?;
            let body: Option<Vec<u8>> = row.try_get("body")?;
            let attempts = sqlx::query(
                "SELECT number, kind, replay_id, started_at, latency_ms, status_code, error, response_excerpt \
                 FROM attempts WHERE event_id = $1 ORDER BY id",
            )
            .bind(id.as_str())
            .fetch_all(pool)
            .await?
            .iter()
            .map(|a| {
                let kind: String = a.try_get("kind")?;
                Ok::<_, StoreError>(Attempt {
                    number: a.try_get("number")?,
                    kind: if kind == "replay" { AttemptKind::Replay } else { AttemptKind::Scheduled },
                    replay_id: a.try_get("replay_id")?,
                    started_at: a.try_get("started_at")?,
                    latency_ms: a.try_get("latency_ms")?,
                    status_code: a.try_get("status_code")?,
                    error: a.try_get("error")?,
                    response_excerpt: a.try_get("response_excerpt")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
            let payload = match (headers, body) {
                (Some(headers), Some(body)) => Some(Payload {
                    headers: serde_json::from_str(&headers).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    body,
                }),
                _ => None,
            };
            Ok(Some(EventDetail { summary, payload, attempts }))
        })
    }
}

impl Store {
    /// An event's place in the order the events were received (`seq`), if it exists.
    pub async fn event_seq(&self, id: &EventId) -> Result<Option<i64>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar("SELECT seq FROM events WHERE id = $1").bind(id.as_str()).fetch_optional(pool).await?
        }))
    }

    /// An operator closes a gap without replay: the outcome becomes `resolved` (settled,
    /// never `confirmed`: nobody claims the application applied it), keeps who and why,
    /// cancels pending retries, and appends the audit entry `audit` makes of the event's
    /// source and outcome before, all in one transaction. The attempts and receipts stay.
    /// Nothing is written when there is no such event, none of a source in `scope`, or it is
    /// settled already (`confirmed` by a receipt, or resolved before).
    pub async fn resolve_event(
        &self,
        id: &EventId,
        scope: &SourceScope,
        by: &str,
        note: &str,
        now: i64,
        audit: impl FnOnce(&str, Outcome) -> NewAuditEntry,
    ) -> Result<Resolving, StoreError> {
        let lock = if self.backend() == Backend::Postgres { " FOR UPDATE" } else { "" };
        let before = format!("SELECT source, outcome FROM events WHERE id = $1{lock}");
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let found: Option<(String, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(before)).bind(id.as_str()).fetch_optional(&mut *tx).await?;
            let Some((source, was)) = found.filter(|(source, _)| scope.allows(source)) else {
                return Ok(Resolving::NotFound);
            };
            let was = Outcome::parse(&was).ok_or_else(|| corrupt("outcome", &was))?;
            if matches!(was, Outcome::Confirmed | Outcome::Resolved) {
                return Ok(Resolving::Settled(was));
            }
            sqlx::query(
                "UPDATE events SET outcome = 'resolved', resolved_by = $2, resolved_note = $3, resolved_at = $4, \
                 outcome_at = $4, next_attempt_at = NULL WHERE id = $1",
            )
            .bind(id.as_str())
            .bind(by)
            .bind(note)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            append_audit_in!(self, tx, &audit(&source, was));
            tx.commit().await?;
            Ok(Resolving::Resolved)
        })
    }
}

/// What resolving an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolving {
    Resolved,
    /// No such event (for this scope).
    NotFound,
    /// It was `confirmed` or `resolved` already: nothing changed.
    Settled(Outcome),
}

impl Store {
    /// Resolves every `unknown` or `failed` event of `selection` (at most `max`, in the order
    /// received) with one audit entry made of their ids, in one transaction: all of them and
    /// their entry, or none. Returns the ids resolved.
    pub async fn resolve_events(
        &self,
        selection: &Selection,
        by: &str,
        note: &str,
        now: i64,
        max: i64,
        audit: impl FnOnce(&[String]) -> NewAuditEntry,
    ) -> Result<Vec<String>, StoreError> {
        let lock = if self.backend() == Backend::Postgres { " FOR UPDATE" } else { "" };
        let pick = format!(
            "SELECT id FROM events WHERE {} AND outcome IN ('unknown', 'failed') ORDER BY seq LIMIT {}{lock}",
            selection.render(1),
            max.max(0)
        );
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let ids: Vec<String> = bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(pick)), selection.params())
                .fetch_all(&mut *tx)
                .await?;
            for chunk in ids.chunks(500) {
                let marks: Vec<String> = (0..chunk.len()).map(|n| format!("${}", n + 4)).collect();
                let sql = format!(
                    "UPDATE events SET outcome = 'resolved', resolved_by = $1, resolved_note = $2, resolved_at = $3, \
                     outcome_at = $3, next_attempt_at = NULL WHERE id IN ({})",
                    marks.join(", ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(by).bind(note).bind(now);
                for id in chunk {
                    query = query.bind(id);
                }
                query.execute(&mut *tx).await?;
            }
            append_audit_in!(self, tx, &audit(&ids));
            tx.commit().await?;
            Ok(ids)
        })
    }
}
