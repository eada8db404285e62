//! The group commit on SQLite, run by the commit task itself on the writer's handle.
//!
//! Through sqlx every statement is a round trip to the connection's own thread, its
//! arguments copied on the way: a group commit was eight of them (begin, four multi-row
//! statements, commit), and every ingest waits on the group commit. sqlx lends the handle out
//! (`SqliteConnection::lock_handle`), so the commit task runs the whole transaction on its
//! own thread instead, with single-row statements prepared once per commit and stepped once
//! per row: SQLite answers for each row whether it went in, so a provider's repeat needs no
//! second look at the batch.

use rusqlite::{Connection, Statement, Transaction, TransactionBehavior, params};

use super::delivery::{EXHAUSTED, REPLAY_DELIVERED, REPLAY_FAILED, RETRY};
use super::{AttemptRecord, Completion};
use crate::domain::{EXHAUSTED_ERROR_CODE, EventId, NewEvent, Stored};

/// New events are due at once: `next_attempt_at` is their received time.
const INSERT_EVENT: &str = "INSERT INTO events (id, source, dedup_key, event_type, received_at, next_attempt_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (source, dedup_key) DO NOTHING";
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
/// recorded either way. `relaxed` skips this transaction's fsync (see
/// `Store::record_replay_attempts`). On an error nothing of the group is written.
pub(super) fn write_group(
    db: &Connection,
    events: &[NewEvent],
    headers: &[String],
    attempts: &[AttemptRecord],
    update: &[bool],
    relaxed: bool,
) -> rusqlite::Result<Vec<Stored>> {
    if relaxed {
        db.execute_batch("PRAGMA synchronous = NORMAL")?;
    }
    let written = transaction(db, events, headers, attempts, update);
    if relaxed {
        // Every other write needs its fsync; a connection left relaxed must not be used again.
        db.execute_batch("PRAGMA synchronous = FULL")?;
    }
    written
}

fn transaction(
    db: &Connection,
    events: &[NewEvent],
    headers: &[String],
    attempts: &[AttemptRecord],
    update: &[bool],
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
            let row = params![id, event.source, event.dedup_key, event.event_type, event.received_at];
            if insert.execute(row)? == 1 {
                payload.execute(params![id, headers, event.body])?;
                stored.push(Stored::New(event.id.clone()));
                continue;
            }
            // A repeat of an event stored before, or earlier in this group: the first one's id.
            let existing = match &mut existing {
                Some(statement) => statement,
                None => existing.insert(tx.prepare(EXISTING)?),
            };
            let first: String = existing.query_row(params![event.source, event.dedup_key], |row| row.get(0))?;
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
        let mut delivered: Option<Statement<'_>> = None;
        for (r, _) in attempts.iter().zip(update).filter(|(_, update)| **update) {
            let id = r.event_id.as_str();
            match r.completion {
                Completion::Delivered { at } => {
                    let delivered = match &mut delivered {
                        Some(statement) => statement,
                        None => delivered.insert(tx.prepare(DELIVERED)?),
                    };
                    delivered.execute(params![id, at])?;
                }
                Completion::RetryAt(at) => {
                    tx.execute(&numbered(RETRY), params![id, at])?;
                }
                Completion::Exhausted => {
                    tx.execute(&numbered(EXHAUSTED), params![id, EXHAUSTED_ERROR_CODE])?;
                }
                Completion::Replayed { delivered_at: Some(at) } => {
                    tx.execute(&numbered(REPLAY_DELIVERED), params![id, at])?;
                }
                Completion::Replayed { delivered_at: None } => {
                    tx.execute(&numbered(REPLAY_FAILED), params![id])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(stored)
}

/// A statement shared with PostgreSQL, its `$n` parameters as SQLite's numbered `?n` (to
/// SQLite, `$1` is a parameter *named* "$1", numbered by where it first appears).
fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}
