//! Storing inbound webhooks: the statements; [`Store::commit_group`] runs them, one multi-row
//! statement per up to [`ROWS_PER_STATEMENT`] events (a round trip per row would cost more
//! than the fsync the batch shares).

use super::{Store, StoreError};
use crate::domain::{NewEvent, Stored};

/// Rows per `INSERT`: at most 5 parameters each stays well under both backends' limits.
pub(super) const ROWS_PER_STATEMENT: usize = 500;
pub(super) const EXISTING: &str = "SELECT id FROM events WHERE source = $1 AND dedup_key = $2";

/// `INSERT … VALUES (…), (…) … ON CONFLICT DO NOTHING` for `rows` events; the
/// new events are due for delivery at once (`next_attempt_at` = `received_at`).
pub(super) fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(120 + rows * 32);
    sql.push_str("INSERT INTO events (id, source, dedup_key, event_type, received_at, next_attempt_at) VALUES ");
    for row in 0..rows {
        let p = row * 5;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4, p + 5, p + 5));
    }
    sql.push_str(" ON CONFLICT (source, dedup_key) DO NOTHING");
    sql
}

/// The payloads of `rows` new events.
pub(super) fn insert_payloads_sql(rows: usize) -> String {
    let marks: Vec<String> = (0..rows).map(|r| format!("(${}, ${}, ${})", r * 3 + 1, r * 3 + 2, r * 3 + 3)).collect();
    format!("INSERT INTO event_payloads (event_id, headers, body) VALUES {}", marks.join(", "))
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
    #[test]
    fn numbered_rows() {
        assert_eq!(
            super::insert_sql(2).split("VALUES ").nth(1).unwrap().split(" ON").next().unwrap(),
            "($1, $2, $3, $4, $5, $5), ($6, $7, $8, $9, $10, $10)"
        );
    }
}
