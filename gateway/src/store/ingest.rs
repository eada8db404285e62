//! Storing inbound webhooks: one transaction per group-committed batch.

use super::{Store, StoreError, with_pool};
use crate::domain::{EventId, NewEvent, Stored};

const INSERT: &str = "INSERT INTO events (id, source, dedup_key, event_type, received_at, headers, body, next_attempt_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $5) \
     ON CONFLICT (source, dedup_key) DO NOTHING RETURNING id";
const EXISTING: &str = "SELECT id FROM events WHERE source = $1 AND dedup_key = $2";

impl Store {
    /// Stores a batch in one transaction. A provider's repeat (same source and dedup key,
    /// also within the batch) is not stored again and answers the first event's id. The new
    /// events are due for delivery at once.
    pub async fn insert_events(&self, events: &[NewEvent]) -> Result<Vec<Stored>, StoreError> {
        let mut stored = Vec::with_capacity(events.len());
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for event in events {
                let headers = serde_json::to_string(&event.headers).expect("headers serialise");
                let inserted: Option<String> = sqlx::query_scalar(INSERT)
                    .bind(event.id.as_str())
                    .bind(&event.source)
                    .bind(&event.dedup_key)
                    .bind(event.event_type.as_deref())
                    .bind(event.received_at)
                    .bind(headers)
                    .bind(&event.body[..])
                    .fetch_optional(&mut *tx)
                    .await?;
                stored.push(match inserted {
                    Some(id) => Stored::New(EventId::from_stored(id)),
                    None => {
                        let id: String = sqlx::query_scalar(EXISTING)
                            .bind(&event.source)
                            .bind(&event.dedup_key)
                            .fetch_one(&mut *tx)
                            .await?;
                        Stored::Duplicate(EventId::from_stored(id))
                    }
                });
            }
            tx.commit().await?;
        });
        Ok(stored)
    }
}
