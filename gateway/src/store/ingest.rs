//! Storing inbound webhooks: one transaction per group-committed batch, one multi-row
//! statement per up to [`ROWS_PER_STATEMENT`] events (a round trip per row would cost more
//! than the fsync the batch shares).

use std::collections::HashSet;

use super::{Store, StoreError, with_writer};
use crate::domain::{EventId, NewEvent, Stored};

/// Rows per `INSERT`: at most 5 parameters each stays well under both backends' limits.
const ROWS_PER_STATEMENT: usize = 500;
const EXISTING: &str = "SELECT id FROM events WHERE source = $1 AND dedup_key = $2";

/// `INSERT … VALUES (…), (…) … ON CONFLICT DO NOTHING RETURNING id` for `rows` events; the
/// new events are due for delivery at once (`next_attempt_at` = `received_at`).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(120 + rows * 32);
    sql.push_str("INSERT INTO events (id, source, dedup_key, event_type, received_at, next_attempt_at) VALUES ");
    for row in 0..rows {
        let p = row * 5;
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${})", p + 1, p + 2, p + 3, p + 4, p + 5, p + 5));
    }
    sql.push_str(" ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id");
    sql
}

/// The payloads of `rows` new events.
fn insert_payloads_sql(rows: usize) -> String {
    let marks: Vec<String> = (0..rows).map(|r| format!("(${}, ${}, ${})", r * 3 + 1, r * 3 + 2, r * 3 + 3)).collect();
    format!("INSERT INTO event_payloads (event_id, headers, body) VALUES {}", marks.join(", "))
}

impl Store {
    /// Stores a batch in one transaction. A provider's repeat (same source and dedup key,
    /// also within the batch) is not stored again and answers the first event's id.
    pub async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Stored>, StoreError> {
        let headers: Vec<String> =
            events.iter().map(|e| serde_json::to_string(&e.headers).expect("headers serialise")).collect();
        let mut stored = Vec::with_capacity(events.len());
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut inserted = HashSet::with_capacity(events.len());
            for (chunk, chunk_headers) in events.chunks(ROWS_PER_STATEMENT).zip(headers.chunks(ROWS_PER_STATEMENT)) {
                let sql = insert_sql(chunk.len());
                let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
                for event in chunk {
                    query = query
                        .bind(event.id.as_str())
                        .bind(&event.source)
                        .bind(&event.dedup_key)
                        .bind(event.event_type.as_deref())
                        .bind(event.received_at);
                }
                let new: HashSet<String> = query.fetch_all(&mut *tx).await?.into_iter().collect();
                let fresh: Vec<(&NewEvent, &String)> =
                    chunk.iter().zip(chunk_headers).filter(|(e, _)| new.contains(e.id.as_str())).collect();
                if !fresh.is_empty() {
                    let mut payloads = sqlx::query(sqlx::AssertSqlSafe(insert_payloads_sql(fresh.len())));
                    for (event, headers) in &fresh {
                        payloads = payloads.bind(event.id.as_str()).bind(headers.as_str()).bind(&event.body[..]);
                    }
                    payloads.execute(&mut *tx).await?;
                }
                inserted.extend(new);
            }
            for event in events {
                if inserted.contains(event.id.as_str()) {
                    stored.push(Stored::New(event.id.clone()));
                    continue;
                }
                let id: String = sqlx::query_scalar(EXISTING)
                    .bind(&event.source)
                    .bind(&event.dedup_key)
                    .fetch_one(&mut *tx)
                    .await?;
                stored.push(Stored::Duplicate(EventId::from_stored(id)));
            }
            tx.commit().await?;
        });
        Ok(stored)
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
