//! The group commit on SQLite, run by the commit task itself on the writer's handle.
//!
//! Through sqlx every statement is a round trip to the connection's own thread, its
//! arguments copied on the way: a group commit was eight of them (begin, four multi-row
//! statements, commit), and every ingest waits on the group commit. sqlx lends the handle out
//! (`SqliteConnection::lock_handle`), so the commit task runs the whole transaction on its
//! own thread instead, with single-row statements prepared once per commit and stepped once
//! per row: SQLite answers for each row whether it went in, so a provider's repeat needs no
//! second look at the batch.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{Connection, Statement, Transaction, TransactionBehavior, params};

use super::delivery::{CONFIRMED_WITHOUT_RECEIPT, EXHAUSTED, REPLAY_DELIVERED, REPLAY_FAILED, RETRY};
use super::{AttemptRecord, Completion};
use crate::domain::{BodyDedup, EXHAUSTED_ERROR_CODE, EventId, NewEvent, Stored};

/// New events are due at once: `next_attempt_at` is their received time. `seq` is their place
/// in the order received, which on SQLite's one writer is the order of its commits.
const INSERT_EVENT: &str = "INSERT INTO events (id, source, dedup_key, event_type, received_at, next_attempt_at, seq) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) ON CONFLICT (source, dedup_key) DO NOTHING";
const EXISTING: &str = "SELECT id FROM events WHERE source = ?1 AND dedup_key = ?2";
const INSERT_PAYLOAD: &str = "INSERT INTO event_payloads (event_id, headers, body) VALUES (?1, ?2, ?3)";
/// An attempt's number is its event's count plus one, read before the group's updates.
const INSERT_ATTEMPT: &str = "INSERT INTO attempts (event_id, number, kind, replay_id, gateway, started_at, \
     latency_ms, status_code, error, response_excerpt) \
     VALUES (?1, (SELECT attempts + 1 FROM events WHERE id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const DELIVERED: &str = "UPDATE events SET attempts = attempts + 1, ladder_attempts = ladder_attempts + 1, \
     delivery_state = 'delivered', delivered_at = ?2, next_attempt_at = NULL WHERE id = ?1";

/// Stores `events` (with their serialised `headers`) and records `attempts` in one
/// transaction on `db`; what each event became, in order. An attempt's schedule is updated
/// only where `update` says so (its lease is held, or it is a replay); the attempt itself is
/// recorded either way. New events are numbered on from `last_seq`, which moves on only once
/// they committed (only the writer, which runs this, reads or moves it). On an error nothing
/// of the group is written.
pub(super) fn write_group(
    db: &Connection,
    events: &[NewEvent],
    headers: &[String],
    attempts: &[AttemptRecord],
    update: &[bool],
    last_seq: &AtomicI64,
) -> rusqlite::Result<Vec<Stored>> {
    let mut seq = last_seq.load(Ordering::Acquire);
    let written = transaction(db, events, headers, attempts, update, &mut seq)?;
    last_seq.store(seq, Ordering::Release);
    Ok(written)
}

/// Runs `f` on `db`; `relaxed`: with `synchronous = NORMAL`, so that its commits skip their
/// own fsync (used where losing the last commits to a power cut costs nothing that matters:
/// see `Store::record_replay_attempts` and the retention purge). In WAL mode the next commit
/// at FULL syncs the log up to its own frames, so a relaxed commit is durable once any later
/// commit is, and never after one that came later. The setting is restored whatever `f`
/// answered; an error restoring it is the answer (the caller then closes the connection).
pub(super) fn with_synchronous<R>(
    db: &Connection,
    relaxed: bool,
    f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
) -> rusqlite::Result<R> {
    if !relaxed {
        return f(db);
    }
    db.execute_batch("PRAGMA synchronous = NORMAL")?;
    let done = f(db);
    db.execute_batch("PRAGMA synchronous = FULL")?;
    done
}

fn transaction(
    db: &Connection,
    events: &[NewEvent],
    headers: &[String],
    attempts: &[AttemptRecord],
    update: &[bool],
    seq: &mut i64,
) -> rusqlite::Result<Vec<Stored>> {
    // Dropped without `commit` (an error on the way), it rolls back.
    let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
    let mut stored = Vec::with_capacity(events.len());
    if !events.is_empty() {
        let mut insert = tx.prepare(INSERT_EVENT)?;
        let mut payload = tx.prepare(INSERT_PAYLOAD)?;
        let mut existing: Option<Statement<'_>> = None;
        for (event, headers) in events.iter().zip(headers) {
            let id = event.id.as_str();
            if let Some(dedup) = &event.body_dedup
                && let Some(first) = claim_body(&tx, event, dedup)?
            {
                stored.push(Stored::Duplicate(first));
                continue;
            }
            let row = params![id, event.source, event.dedup_key, event.event_type, event.received_at, *seq + 1];
            if insert.execute(row)? == 1 {
                *seq += 1;
                payload.execute(params![id, headers, event.body])?;
                stored.push(Stored::New(event.id.clone()));
                continue;
            }
            // A repeat of an event stored before, or earlier in this group: the first one's id.
            let first: String = prepared(&mut existing, &tx, EXISTING)?
                .query_row(params![event.source, event.dedup_key], |row| row.get(0))?;
            if let Some(dedup) = &event.body_dedup {
                tx.execute(&BODY_SQL.point_at, params![event.source, dedup.sha256, first])?;
            }
            stored.push(Stored::Duplicate(EventId::from_stored(first)));
        }
    }
    if !attempts.is_empty() {
        let mut insert = tx.prepare(INSERT_ATTEMPT)?;
        for r in attempts {
            insert.execute(params![
                r.event_id.as_str(),
                r.kind.as_str(),
                r.replay_id,
                r.gateway,
                r.started_at,
                r.latency_ms,
                r.status_code,
                r.error,
                r.response_excerpt,
            ])?;
        }
        // Each kind of update prepared once per commit, when first needed.
        let [mut delivered, mut retry, mut exhausted, mut replayed, mut replay_failed, mut confirmed]: [Option<
            Statement<'_>,
        >; 6] = Default::default();
        for (r, _) in attempts.iter().zip(update).filter(|(_, update)| **update) {
            let id = r.event_id.as_str();
            match r.completion {
                Completion::Delivered { at } => prepared(&mut delivered, &tx, DELIVERED)?.execute(params![id, at])?,
                Completion::RetryAt(at) => prepared(&mut retry, &tx, &UPDATES.retry)?.execute(params![id, at])?,
                Completion::Exhausted => {
                    prepared(&mut exhausted, &tx, &UPDATES.exhausted)?.execute(params![id, EXHAUSTED_ERROR_CODE])?
                }
                Completion::Replayed { delivered_at: Some(at) } => {
                    prepared(&mut replayed, &tx, &UPDATES.replay_delivered)?.execute(params![id, at])?
                }
                Completion::Replayed { delivered_at: None } => {
                    prepared(&mut replay_failed, &tx, &UPDATES.replay_failed)?.execute(params![id])?
                }
            };
            if let Some((reason, at)) = r.confirms() {
                prepared(&mut confirmed, &tx, &UPDATES.confirmed_without_receipt)?.execute(params![id, reason, at])?;
            }
        }
    }
    tx.commit()?;
    Ok(stored)
}

/// Claims `event`'s body for it (see [`super::body_dedup`]): `Some(first)` when the same body
/// came since `dedup.since`, and the event is a repeat of that first one.
fn claim_body(tx: &Connection, event: &NewEvent, dedup: &BodyDedup) -> rusqlite::Result<Option<EventId>> {
    let claimed = tx.execute(
        &BODY_SQL.claim,
        params![event.source, dedup.sha256, event.id.as_str(), event.received_at, dedup.since],
    )?;
    if claimed == 1 {
        return Ok(None);
    }
    let first: String = tx.query_row(&BODY_SQL.first, params![event.source, dedup.sha256], |row| row.get(0))?;
    Ok(Some(EventId::from_stored(first)))
}

/// `slot`'s statement, prepared on first use.
fn prepared<'s, 'c>(
    slot: &'s mut Option<Statement<'c>>,
    db: &'c Connection,
    sql: &str,
) -> rusqlite::Result<&'s mut Statement<'c>> {
    if slot.is_none() {
        *slot = Some(db.prepare(sql)?);
    }
    Ok(slot.as_mut().expect("prepared above"))
}

/// The schedule updates shared with PostgreSQL, their `$n` parameters as SQLite's numbered
/// `?n` (to SQLite, `$1` is a parameter *named* "$1", numbered by where it first appears).
struct Updates {
    retry: String,
    exhausted: String,
    replay_delivered: String,
    replay_failed: String,
    confirmed_without_receipt: String,
}

/// The body-dedup statements, numbered as SQLite takes them.
struct BodySql {
    claim: String,
    first: String,
    point_at: String,
}

static BODY_SQL: LazyLock<BodySql> = LazyLock::new(|| {
    let numbered = |sql: &str| sql.replace('$', "?");
    BodySql {
        claim: numbered(super::body_dedup::CLAIM),
        first: numbered(super::body_dedup::FIRST),
        point_at: numbered(super::body_dedup::POINT_AT),
    }
});

static UPDATES: LazyLock<Updates> = LazyLock::new(|| {
    let numbered = |sql: &str| sql.replace('$', "?");
    Updates {
        retry: numbered(RETRY),
        exhausted: numbered(EXHAUSTED),
        replay_delivered: numbered(REPLAY_DELIVERED),
        replay_failed: numbered(REPLAY_FAILED),
        confirmed_without_receipt: numbered(CONFIRMED_WITHOUT_RECEIPT),
    }
});
