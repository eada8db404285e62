//! Storing inbound webhooks: the PostgreSQL statements, which [`Store::commit_group`] runs as
//! one multi-row statement per up to [`ROWS_PER_STATEMENT`] events (a round trip per row
//! would cost more than the fsync the batch shares). SQLite's run row by row on the
//! writer's own thread, without round trips (`commit_sqlite`).

use super::{Backend, PREPARED_ROWS, Store, StoreError, or_rollback, row_marks};
use crate::domain::{NewEvent, Stored};

/// Rows per `INSERT`.
pub(super) const ROWS_PER_STATEMENT: usize = PREPARED_ROWS;
pub(super) const EXISTING: &str = "SELECT id FROM events WHERE source = $1 AND dedup_key = $2";

/// `INSERT … VALUES (…), (…) … ON CONFLICT DO NOTHING` for `rows` events, each bound as
/// (id, source, dedup key, type, received at, received at): new events are due at once.
pub(super) fn insert_sql(backend: Backend, rows: usize) -> String {
    format!(
        "INSERT {}INTO events (id, source, dedup_key, event_type, received_at, next_attempt_at) VALUES {} \
         ON CONFLICT (source, dedup_key) DO NOTHING",
        or_rollback(backend),
        row_marks(backend, rows, 6, 1)
    )
}

/// The payloads of `rows` new events, each bound as (id, headers, body).
pub(super) fn insert_payloads_sql(backend: Backend, rows: usize) -> String {
    format!(
        "INSERT {}INTO event_payloads (event_id, headers, body) VALUES {}",
        or_rollback(backend),
        row_marks(backend, rows, 3, 1)
    )
}

impl Store {
    /// Stores a batch in one transaction. A provider's repeat (same source and dedup key,
    /// also within the batch) is not stored again and answers the first event's id.
    pub async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Stored>, StoreError> {
        Ok(self.commit_group(events, &[]).await?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, insert_sql};

    #[test]
    fn numbered_rows_on_postgres_anonymous_on_sqlite() {
        let values = |sql: String| sql.split("VALUES ").nth(1).unwrap().split(" ON").next().unwrap().to_string();
        assert_eq!(values(insert_sql(Backend::Postgres, 2)), "($1, $2, $3, $4, $5, $6), ($7, $8, $9, $10, $11, $12)");
        assert_eq!(values(insert_sql(Backend::Sqlite, 2)), "(?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?)");
    }
}
