//! Replay jobs and their items: the plan's counts and sample, the persisted job, and the
//! executor's bookkeeping (claims, item states, counters).
//!
//! Item states: `queued` → `sending` (written before the request goes out, so a resumed job
//! never sends an item twice) → `succeeded` | `failed`; or `queued` → `skipped_receipt` |
//! `skipped_outcome` | `skipped_probe` (the handler's answer to a status probe settled it) |
//! `skipped_purged` (its payload, or its whole event, went by retention) |
//! `cancelled`; a `sending` item found after a crash is `interrupted`.

use std::collections::HashMap;

use sqlx::Row;

use super::audit::append_audit_in;
use super::selection::bind_all;
use super::{Backend, NewAuditEntry, Selection, SendCheck, Store, StoreError, with_pool, with_writer};
use crate::access::SourceScope;
use crate::domain::{EventId, Outcome, ReceivedHeaders};

/// An event of a plan's sample.
#[derive(Debug, Clone)]
pub struct SampleEvent {
    pub id: EventId,
    pub source: String,
    pub dedup_key: String,
    pub event_type: Option<String>,
    pub received_at: i64,
    pub outcome: Outcome,
}

/// An event as a replay finds it: with its payload, or with none left to send.
#[derive(Debug, Clone)]
pub enum Loaded {
    Sendable(SendableEvent),
    /// Retention purged its payload, or the whole event: nothing to send.
    Purged,
}

/// An event as a replay sends it.
#[derive(Debug, Clone)]
pub struct SendableEvent {
    pub source: String,
    pub event_type: Option<String>,
    pub dedup_key: String,
    pub headers: ReceivedHeaders,
    pub body: Vec<u8>,
    pub attempts: i64,
}

/// A row of [`Store::load_for_send`]: id, source, dedup key, headers, body, attempts, event type.
type SendableRow = (String, String, String, String, Vec<u8>, i64, Option<String>);

/// A new job, as the planner made it.
#[derive(Debug, Clone)]
pub struct NewReplay {
    pub id: String,
    pub created_by: String,
    pub created_at: i64,
    pub request: serde_json::Value,
    pub destination: Option<String>,
    pub rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ReplayCounts {
    pub eligible: i64,
    pub sent: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub skipped_receipt: i64,
    pub skipped_other: i64,
    /// Items whose payload retention had purged: never sent with an empty body.
    pub skipped_purged: i64,
    /// Items the handler's answer to a status probe settled before they were sent.
    pub skipped_probe: i64,
    /// Probes the run sent (asking first), and of them those that failed as a whole.
    pub probes: i64,
    pub probes_failed: i64,
}

#[derive(Debug, Clone)]
pub struct ReplayJob {
    pub id: String,
    pub state: String,
    pub created_by: String,
    pub created_at: i64,
    pub request: serde_json::Value,
    pub destination: Option<String>,
    pub rate: f64,
    pub current_rate: f64,
    pub counts: ReplayCounts,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
    /// Who paused it and when, while `state` is `paused`.
    pub paused: Option<Paused>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    pub at: i64,
    pub by: String,
}

impl ReplayJob {
    /// The sources the job may touch: its `source`, or the sources its maker's token was
    /// scoped to; `None` for a job over every source.
    pub fn sources(&self) -> Option<Vec<&str>> {
        match (self.request["source"].as_str(), self.request["scope"].as_array()) {
            (Some(source), _) => Some(vec![source]),
            (None, Some(scope)) => scope.iter().map(serde_json::Value::as_str).collect(),
            (None, None) => None,
        }
    }

    /// Whether a token with `scope` may see and act on the job: its scope covers every
    /// source the job may touch.
    pub fn visible_to(&self, scope: &SourceScope) -> bool {
        if scope.limited_to().is_none() {
            return true;
        }
        self.sources().is_some_and(|sources| sources.iter().all(|s| scope.allows(s)))
    }

    /// Every item has its final result: the counts will not move again.
    pub fn settled(&self) -> bool {
        let c = &self.counts;
        c.sent + c.skipped_receipt + c.skipped_other + c.skipped_purged >= c.eligible
    }
}

/// Which jobs to list: newest first, in pages ending before `before` (a job id).
#[derive(Debug, Clone)]
pub struct ReplayListQuery {
    pub before: Option<String>,
    pub limit: i64,
    /// `running`, `paused`, `completed`, `cancelled`, `failed`.
    pub state: Option<String>,
    /// Only jobs whose `source` is this one.
    pub source: Option<String>,
}

/// One page of jobs; `next_cursor` is where the next page starts, when there may be one.
#[derive(Debug, Clone)]
pub struct ReplayPage {
    pub jobs: Vec<ReplayJob>,
    pub next_cursor: Option<String>,
}

/// Why items of a job failed, most common first: `status` (the handler's answer) or `error`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FailureCause {
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub count: i64,
}

impl FailureCause {
    /// As a person reads it: `HTTP 500`, or the error.
    pub fn describe(&self) -> String {
        match (self.status_code, &self.error) {
            (Some(code), _) => format!("HTTP {code}"),
            (None, Some(error)) => error.clone(),
            (None, None) => "no answer".into(),
        }
    }
}

/// What pausing or resuming a job did.
#[derive(Debug, Clone)]
pub enum Toggle {
    Done(Box<ReplayJob>),
    /// The job is in another state (nothing written).
    NotApplicable(String),
    NotFound,
}

#[derive(Debug, Clone)]
pub struct ReplayItem {
    pub seq: i64,
    pub event_id: EventId,
    pub receipts_at_plan: i64,
}

/// A change of one item's state.
#[derive(Debug, Clone)]
pub struct ItemResult {
    pub seq: i64,
    /// `sending`, `succeeded`, `failed`, `skipped_receipt`, `skipped_outcome`, `skipped_probe`,
    /// `cancelled`.
    pub state: &'static str,
    pub status_code: Option<i64>,
    pub latency_ms: Option<i64>,
    pub error: Option<String>,
    pub at: i64,
}

const JOB_COLUMNS: &str = "id, state, created_by, created_at, request, destination, rate, current_rate, eligible, sent, \
     succeeded, failed, skipped_receipt, skipped_other, skipped_purged, skipped_probe, probes, probes_failed, \
     finished_at, error, paused_at, paused_by";

macro_rules! job_from_row {
    ($row:expr) => {{
        let row = $row;
        let request: String = row.try_get("request")?;
        Ok::<_, StoreError>(ReplayJob {
            id: row.try_get("id")?,
            state: row.try_get("state")?,
            created_by: row.try_get("created_by")?,
            created_at: row.try_get("created_at")?,
            request: serde_json::from_str(&request).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            destination: row.try_get("destination")?,
            rate: row.try_get("rate")?,
            current_rate: row.try_get("current_rate")?,
            counts: ReplayCounts {
                eligible: row.try_get("eligible")?,
                sent: row.try_get("sent")?,
                succeeded: row.try_get("succeeded")?,
                failed: row.try_get("failed")?,
                skipped_receipt: row.try_get("skipped_receipt")?,
                skipped_other: row.try_get("skipped_other")?,
                skipped_purged: row.try_get("skipped_purged")?,
                skipped_probe: row.try_get("skipped_probe")?,
                probes: row.try_get("probes")?,
                probes_failed: row.try_get("probes_failed")?,
            },
            finished_at: row.try_get("finished_at")?,
            error: row.try_get("error")?,
            paused: match (row.try_get::<Option<i64>, _>("paused_at")?, row.try_get::<Option<String>, _>("paused_by")?)
            {
                (Some(at), Some(by)) => Some(Paused { at, by }),
                _ => None,
            },
        })
    }};
}

/// How an item state moves the job's counters: (sent, succeeded, failed, skipped_receipt,
/// skipped_other, skipped_purged, skipped_probe).
fn deltas(state: &str) -> [i64; 7] {
    match state {
        // `queued` again: a stopping gateway hands back what it had not sent.
        "sending" | "queued" => [0, 0, 0, 0, 0, 0, 0],
        "succeeded" => [1, 1, 0, 0, 0, 0, 0],
        "failed" | "interrupted" => [1, 0, 1, 0, 0, 0, 0],
        "skipped_receipt" => [0, 0, 0, 1, 0, 0, 0],
        "skipped_purged" => [0, 0, 0, 0, 0, 1, 0],
        "skipped_probe" => [0, 0, 0, 0, 0, 0, 1],
        _ => [0, 0, 0, 0, 1, 0, 0],
    }
}

impl Store {
    /// Outcome counts over a selection (the dry run's table).
    pub async fn outcome_counts(&self, sel: &Selection) -> Result<HashMap<Outcome, i64>, StoreError> {
        let sql = format!("SELECT outcome, COUNT(*) FROM events WHERE {} GROUP BY outcome", sel.render(1));
        let rows: Vec<(String, i64)> = with_pool!(self, pool => {
            bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), sel.params()).fetch_all(pool).await?
        });
        let mut out = HashMap::new();
        for (outcome, n) in rows {
            let outcome =
                Outcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt(format!("outcome `{outcome}`")))?;
            out.insert(outcome, n);
        }
        Ok(out)
    }

    /// The first events of a selection, in the order they were received (the plan's sample):
    /// the database's order (`seq`), never the hosts' clocks that made ids and times.
    pub async fn sample_events(&self, sel: &Selection, limit: i64) -> Result<Vec<SampleEvent>, StoreError> {
        let sql = format!(
            "SELECT id, source, dedup_key, event_type, received_at, outcome FROM events WHERE {} ORDER BY seq LIMIT {}",
            sel.render(1),
            limit.max(0)
        );
        let rows: Vec<(String, String, String, Option<String>, i64, String)> = with_pool!(self, pool => {
            bind_all!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), sel.params()).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id, source, dedup_key, event_type, received_at, outcome)| {
                Ok(SampleEvent {
                    id: EventId::from_stored(id),
                    source,
                    dedup_key,
                    event_type,
                    received_at,
                    outcome: Outcome::parse(&outcome)
                        .ok_or_else(|| StoreError::Corrupt(format!("outcome `{outcome}`")))?,
                })
            })
            .collect()
    }

    /// The ids of a selection's first `limit` events, in the order they were received.
    pub async fn event_ids(&self, sel: &Selection, limit: i64) -> Result<Vec<EventId>, StoreError> {
        let sql = format!("SELECT id FROM events WHERE {} ORDER BY seq LIMIT {}", sel.render(1), limit.max(0));
        let ids: Vec<String> = with_pool!(self, pool => {
            bind_all!(sqlx::query_scalar(sqlx::AssertSqlSafe(sql)), sel.params()).fetch_all(pool).await?
        });
        Ok(ids.into_iter().map(EventId::from_stored).collect())
    }

    /// What sending needs of some events: their source, key, headers and body; `Purged` for
    /// each whose payload (or whole event) retention took. Events are only ever deleted by
    /// retention, so an id with no row is one it purged.
    pub async fn load_for_send(&self, ids: &[EventId]) -> Result<HashMap<EventId, Loaded>, StoreError> {
        let mut out: HashMap<EventId, Loaded> = ids.iter().map(|id| (id.clone(), Loaded::Purged)).collect();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT id, source, dedup_key, headers, body, attempts, event_type FROM events JOIN event_payloads ON event_id = id \
                 WHERE id IN ({})",
                placeholders.join(", ")
            );
            let rows: Vec<SendableRow> = with_pool!(self, pool => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(id.as_str());
                }
                q.fetch_all(pool).await?
            });
            for (id, source, dedup_key, headers, body, attempts, event_type) in rows {
                let headers = serde_json::from_str(&headers).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let event = SendableEvent { source, event_type, dedup_key, headers, body, attempts };
                out.insert(EventId::from_stored(id), Loaded::Sendable(event));
            }
        }
        Ok(out)
    }

    /// Creates a running job with its items (the first `limit` events of `eligible`, in the
    /// order they were received: `seq`, the database's) and the audit entry `audit` makes of the item count, in one
    /// transaction: a job nobody can find in the audit log never exists, and so never runs.
    /// Returns how many items it has.
    pub async fn create_replay(
        &self,
        job: &NewReplay,
        eligible: &Selection,
        limit: i64,
        audit: impl FnOnce(i64) -> NewAuditEntry,
    ) -> Result<i64, StoreError> {
        let items = format!(
            "INSERT INTO replay_items (replay_id, seq, event_id, receipts_at_plan, state) \
             SELECT $1, ROW_NUMBER() OVER (ORDER BY seq), id, receipts, 'queued' \
             FROM (SELECT id, receipts, seq FROM events WHERE {} ORDER BY seq LIMIT {}) picked",
            eligible.render(2),
            limit.max(0)
        );
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO replays (id, state, created_by, created_at, request, destination, rate, current_rate, eligible) \
                 VALUES ($1, 'running', $2, $3, $4, $5, $6, $6, 0)",
            )
            .bind(&job.id)
            .bind(&job.created_by)
            .bind(job.created_at)
            .bind(job.request.to_string())
            .bind(job.destination.as_deref())
            .bind(job.rate)
            .execute(&mut *tx)
            .await?;
            let n = bind_all!(sqlx::query(sqlx::AssertSqlSafe(items)).bind(&job.id), eligible.params())
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64;
            sqlx::query("UPDATE replays SET eligible = $2 WHERE id = $1").bind(&job.id).bind(n).execute(&mut *tx).await?;
            append_audit_in!(self, tx, &audit(n));
            tx.commit().await?;
            Ok(n)
        })
    }

    pub async fn get_replay(&self, id: &str) -> Result<Option<ReplayJob>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM replays WHERE id = $1");
        with_pool!(self, pool => {
            match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await? {
                Some(row) => Ok(Some(job_from_row!(&row)?)),
                None => Ok(None),
            }
        })
    }

    /// Leases one running job whose lease is free or expired (a job of a dead gateway).
    pub async fn claim_replay(&self, owner: &str, now: i64, lease_until: i64) -> Result<Option<ReplayJob>, StoreError> {
        let lock = if self.backend() == Backend::Postgres { "FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!(
            "UPDATE replays SET lease_owner = $1, lease_until = $2 WHERE id = (SELECT id FROM replays \
             WHERE state = 'running' AND (lease_until IS NULL OR lease_until < $3) ORDER BY created_at LIMIT 1 {lock}) \
             RETURNING {JOB_COLUMNS}"
        );
        with_writer!(self, pool => {
            match sqlx::query(sqlx::AssertSqlSafe(sql)).bind(owner).bind(lease_until).bind(now).fetch_optional(pool).await? {
                Some(row) => Ok(Some(job_from_row!(&row)?)),
                None => Ok(None),
            }
        })
    }

    /// Extends a job's lease and records its current rate; answers the job's state, or `None`
    /// when this gateway no longer holds the lease.
    pub async fn renew_replay(
        &self,
        id: &str,
        owner: &str,
        lease_until: i64,
        current_rate: f64,
    ) -> Result<Option<String>, StoreError> {
        Ok(with_writer!(self, pool => sqlx::query_scalar(
            "UPDATE replays SET lease_until = $3, current_rate = $4 WHERE id = $1 AND lease_owner = $2 RETURNING state",
        )
        .bind(id)
        .bind(owner)
        .bind(lease_until)
        .bind(current_rate)
        .fetch_optional(pool)
        .await?))
    }

    /// The next queued items of a job, in order.
    pub async fn queued_items(&self, id: &str, limit: i64) -> Result<Vec<ReplayItem>, StoreError> {
        let rows: Vec<(i64, String, i64)> = with_pool!(self, pool => sqlx::query_as(
            "SELECT seq, event_id, receipts_at_plan FROM replay_items WHERE replay_id = $1 AND state = 'queued' ORDER BY seq LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(seq, event_id, receipts_at_plan)| ReplayItem {
                seq,
                event_id: EventId::from_stored(event_id),
                receipts_at_plan,
            })
            .collect())
    }

    /// Current receipt counts, outcomes and resolution times of some events (re-read before
    /// each batch).
    pub async fn receipt_counts(&self, ids: &[EventId]) -> Result<HashMap<EventId, SendCheck>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT id, receipts, outcome, resolved_at FROM events WHERE id IN ({})",
                placeholders.join(", ")
            );
            let rows: Vec<(String, i64, String, Option<i64>)> = with_pool!(self, pool => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(id.as_str());
                }
                q.fetch_all(pool).await?
            });
            for (id, receipts, outcome, resolved_at) in rows {
                let outcome =
                    Outcome::parse(&outcome).ok_or_else(|| StoreError::Corrupt(format!("outcome `{outcome}`")))?;
                out.insert(EventId::from_stored(id), SendCheck { receipts, outcome, resolved_at });
            }
        }
        Ok(out)
    }

    /// Records item state changes and moves the job's counters, in one transaction.
    pub async fn record_items(&self, id: &str, results: &[ItemResult]) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut totals = [0i64; 7];
        for r in results {
            for (t, d) in totals.iter_mut().zip(deltas(r.state)) {
                *t += d;
            }
        }
        // State changes without details (sending, skips) go out one statement per state.
        let (plain, detailed): (Vec<&ItemResult>, Vec<&ItemResult>) =
            results.iter().partition(|r| r.status_code.is_none() && r.latency_ms.is_none() && r.error.is_none());
        let mut groups: Vec<(&str, i64, Vec<i64>)> = Vec::new();
        for r in plain {
            match groups.iter_mut().find(|(state, at, seqs)| *state == r.state && *at == r.at && seqs.len() < 500) {
                Some((_, _, seqs)) => seqs.push(r.seq),
                None => groups.push((r.state, r.at, vec![r.seq])),
            }
        }
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            for (state, at, seqs) in &groups {
                let marks: Vec<String> = (0..seqs.len()).map(|n| format!("${}", n + 4)).collect();
                let sql = format!(
                    "UPDATE replay_items SET state = $2, at = $3 WHERE replay_id = $1 AND seq IN ({})",
                    marks.join(", ")
                );
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(*state).bind(*at);
                for seq in seqs {
                    query = query.bind(*seq);
                }
                query.execute(&mut *tx).await?;
            }
            for r in detailed {
                sqlx::query(
                    "UPDATE replay_items SET state = $3, status_code = COALESCE($4, status_code), \
                     latency_ms = COALESCE($5, latency_ms), error = COALESCE($6, error), at = $7 \
                     WHERE replay_id = $1 AND seq = $2",
                )
                .bind(id)
                .bind(r.seq)
                .bind(r.state)
                .bind(r.status_code)
                .bind(r.latency_ms)
                .bind(r.error.as_deref())
                .bind(r.at)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE replays SET sent = sent + $2, succeeded = succeeded + $3, failed = failed + $4, \
                 skipped_receipt = skipped_receipt + $5, skipped_other = skipped_other + $6, \
                 skipped_purged = skipped_purged + $7, skipped_probe = skipped_probe + $8 WHERE id = $1",
            )
            .bind(id)
            .bind(totals[0])
            .bind(totals[1])
            .bind(totals[2])
            .bind(totals[3])
            .bind(totals[4])
            .bind(totals[5])
            .bind(totals[6])
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Counts the probes a run sent before a batch (asking first), and how many failed.
    pub async fn count_probes(&self, id: &str, probes: i64, failed: i64) -> Result<(), StoreError> {
        with_writer!(self, pool => sqlx::query(
            "UPDATE replays SET probes = probes + $2, probes_failed = probes_failed + $3 WHERE id = $1",
        )
        .bind(id)
        .bind(probes)
        .bind(failed)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Items left `sending` by a crashed gateway: they may have gone out, so they are never
    /// sent again; they count as failed with the reason.
    pub async fn interrupt_sending(&self, id: &str, now: i64) -> Result<i64, StoreError> {
        let seqs: Vec<i64> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT seq FROM replay_items WHERE replay_id = $1 AND state = 'sending'",
        )
        .bind(id)
        .fetch_all(pool)
        .await?);
        let results: Vec<ItemResult> = seqs
            .iter()
            .map(|&seq| ItemResult {
                seq,
                state: "interrupted",
                status_code: None,
                latency_ms: None,
                error: Some("the gateway stopped while this item was being sent; not sent again".into()),
                at: now,
            })
            .collect();
        self.record_items(id, &results).await?;
        Ok(results.len() as i64)
    }

    /// Marks every still-queued item cancelled.
    pub async fn cancel_queued(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let items = self.queued_items(id, i64::MAX).await?;
        let results: Vec<ItemResult> = items
            .iter()
            .map(|i| ItemResult {
                seq: i.seq,
                state: "cancelled",
                status_code: None,
                latency_ms: None,
                error: None,
                at: now,
            })
            .collect();
        self.record_items(id, &results).await
    }

    /// Gives up this gateway's lease on a job that stays `running`, so that the next gateway
    /// to look takes it on at once (this one is stopping).
    pub async fn release_replay(&self, id: &str, gateway: &str) -> Result<(), StoreError> {
        with_writer!(self, pool => sqlx::query(
            "UPDATE replays SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(gateway)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Ends a running job (`completed`, `cancelled` or `failed`), with the pace it ended at
    /// when the run knows it, and appends `audit` in the same transaction; `false` when the
    /// job had ended already (the entry is written all the same: it records how the run on
    /// this gateway ended).
    pub async fn finish_replay(
        &self,
        id: &str,
        state: &str,
        now: i64,
        error: Option<&str>,
        current_rate: Option<f64>,
        audit: &NewAuditEntry,
    ) -> Result<bool, StoreError> {
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(
                "UPDATE replays SET state = $2, finished_at = $3, error = $4, lease_owner = NULL, lease_until = NULL, \
                 current_rate = COALESCE($5, current_rate), paused_at = NULL, paused_by = NULL \
                 WHERE id = $1 AND state IN ('running', 'paused')",
            )
            .bind(id)
            .bind(state)
            .bind(now)
            .bind(error)
            .bind(current_rate)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                // Cancelled meanwhile: the cancel left the lease to this run, which gives it up now.
                sqlx::query("UPDATE replays SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND state = 'cancelled'")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            append_audit_in!(self, tx, audit);
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Pauses a running job (`pause = true`) or resumes a paused one, with the audit entry
    /// `audit` makes of its counts at that moment, in one transaction. A paused job keeps
    /// its lease and its gateway, which stops sending and keeps renewing the lease, so no
    /// other gateway takes it over nor takes it for dead.
    pub async fn toggle_replay_pause(
        &self,
        id: &str,
        pause: bool,
        by: &str,
        now: i64,
        audit: impl FnOnce(&ReplayCounts) -> NewAuditEntry,
    ) -> Result<Toggle, StoreError> {
        let (from, to) = if pause { ("running", "paused") } else { ("paused", "running") };
        let sql = format!(
            "UPDATE replays SET state = $2, paused_at = $3, paused_by = $4 WHERE id = $1 AND state = $5 \
             RETURNING {JOB_COLUMNS}"
        );
        let (at, who) = if pause { (Some(now), Some(by)) } else { (None, None) };
        let current = "SELECT state FROM replays WHERE id = $1";
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(to)
                .bind(at)
                .bind(who)
                .bind(from)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                let state: Option<String> =
                    sqlx::query_scalar(current).bind(id).fetch_optional(&mut *tx).await?;
                return Ok(state.map_or(Toggle::NotFound, Toggle::NotApplicable));
            };
            let job = job_from_row!(&row)?;
            append_audit_in!(self, tx, &audit(&job.counts));
            tx.commit().await?;
            Ok(Toggle::Done(Box::new(job)))
        })
    }

    /// Jobs newest first (keyset paging on the id, whose ULID sorts by creation), those a
    /// token with `scope` may see (see [`ReplayJob::visible_to`]). The replays page of the
    /// console and `GET /v1/replays` both list through this.
    pub async fn list_replays(&self, q: &ReplayListQuery, scope: &SourceScope) -> Result<ReplayPage, StoreError> {
        let limit = q.limit.clamp(1, 1000);
        let mut jobs = Vec::new();
        let mut before = q.before.clone();
        // A scoped token may not see every job: pages are read until `limit` visible ones
        // are found or the jobs run out.
        loop {
            let mut sql = format!("SELECT {JOB_COLUMNS} FROM replays WHERE 1 = 1");
            let mut params: Vec<String> = Vec::new();
            if let Some(before) = &before {
                params.push(before.clone());
                sql.push_str(&format!(" AND id < ${}", params.len()));
            }
            if let Some(state) = &q.state {
                params.push(state.clone());
                sql.push_str(&format!(" AND state = ${}", params.len()));
            }
            sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
            let page: Vec<ReplayJob> = with_pool!(self, pool => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for p in &params {
                    query = query.bind(p);
                }
                let rows = query.fetch_all(pool).await?;
                rows.iter().map(|row| job_from_row!(row)).collect::<Result<Vec<_>, StoreError>>()?
            });
            let read = page.len();
            for (n, job) in page.into_iter().enumerate() {
                before = Some(job.id.clone());
                let wanted = q.source.as_deref().is_none_or(|s| job.request["source"].as_str() == Some(s));
                if wanted && job.visible_to(scope) {
                    jobs.push(job);
                    if jobs.len() as i64 == limit {
                        // Rows left in this page, or a full page read: there may be more.
                        let more = n + 1 < read || read as i64 == limit;
                        let next_cursor = more.then(|| before.clone()).flatten();
                        return Ok(ReplayPage { jobs, next_cursor });
                    }
                }
            }
            if (read as i64) < limit {
                return Ok(ReplayPage { jobs, next_cursor: None });
            }
        }
    }

    /// Why a job's items failed, most common cause first (at most `limit` causes).
    pub async fn replay_failure_causes(&self, id: &str, limit: i64) -> Result<Vec<FailureCause>, StoreError> {
        let sql = format!(
            "SELECT status_code, error, COUNT(*) AS n FROM replay_items \
             WHERE replay_id = $1 AND state IN ('failed', 'interrupted') \
             GROUP BY status_code, error ORDER BY n DESC, status_code LIMIT {}",
            limit.max(1)
        );
        let rows: Vec<(Option<i64>, Option<String>, i64)> = with_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(|(status_code, error, count)| FailureCause { status_code, error, count }).collect())
    }

    /// The last item of a job in its order (the event sent or skipped last, or to be): where
    /// a continuation of the same scope starts after.
    pub async fn replay_last_event(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_scalar("SELECT event_id FROM replay_items WHERE replay_id = $1 ORDER BY seq DESC LIMIT 1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Cancels a running job, with the audit entry `audit` makes of its counts at that
    /// moment, in one transaction; `false` when the job was not running (nothing written).
    /// The lease stays with the gateway running the job: told directly or not (the cancel may
    /// come through another gateway), it reads `cancelled` at its next renewal and ends the
    /// run itself (its queued items marked, its end audited); no gateway claims a cancelled job.
    pub async fn cancel_replay(
        &self,
        id: &str,
        now: i64,
        audit: impl FnOnce(&ReplayCounts) -> NewAuditEntry,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE replays SET state = 'cancelled', finished_at = $2, \
             paused_at = NULL, paused_by = NULL WHERE id = $1 AND state IN ('running', 'paused') RETURNING {JOB_COLUMNS}"
        );
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(now).fetch_optional(&mut *tx).await? else {
                return Ok(false);
            };
            let job = job_from_row!(&row)?;
            append_audit_in!(self, tx, &audit(&job.counts));
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Per-item results of a job, for its audit entry.
    pub async fn replay_item_results(&self, id: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        with_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT seq, event_id, state, status_code, latency_ms, error FROM replay_items WHERE replay_id = $1 ORDER BY seq",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(serde_json::json!({
                        "event_id": row.try_get::<String, _>("event_id")?,
                        "result": row.try_get::<String, _>("state")?,
                        "status_code": row.try_get::<Option<i64>, _>("status_code")?,
                        "latency_ms": row.try_get::<Option<i64>, _>("latency_ms")?,
                        "error": row.try_get::<Option<String>, _>("error")?,
                    }))
                })
                .collect()
        })
    }

    /// Gives back every replay lease (a single-gateway SQLite store at start).
    pub async fn release_replay_leases(&self) -> Result<(), StoreError> {
        with_writer!(self, pool => sqlx::query("UPDATE replays SET lease_owner = NULL, lease_until = NULL WHERE lease_owner IS NOT NULL")
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }
}
