//! A source's most recent attempts (retries and replays alike): what the planner judges the
//! handler's current pace from.

use super::{Store, StoreError, with_pool};

/// How far back, in attempts of the whole gateway, the look at a source goes: the newest
/// rows by primary key, so the query reads a bounded slice of the table however large it is.
pub const LOOK_BACK_ROWS: i64 = 5_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentAttempt {
    pub started_at: i64,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
}

const RECENT: &str = "SELECT a.started_at, a.latency_ms, a.status_code, a.error \
     FROM (SELECT event_id, started_at, latency_ms, status_code, error FROM attempts ORDER BY id DESC LIMIT $3) a \
     JOIN events e ON e.id = a.event_id WHERE e.source = $1 AND a.started_at >= $2 ORDER BY a.started_at";

impl Store {
    /// `source`'s attempts started at or after `since` (unix ms), oldest first, among the
    /// gateway's last [`LOOK_BACK_ROWS`] attempts.
    pub async fn recent_attempts(&self, source: &str, since: i64) -> Result<Vec<RecentAttempt>, StoreError> {
        let rows: Vec<(i64, i64, Option<i64>, Option<String>)> = with_pool!(self, pool => {
            sqlx::query_as(RECENT).bind(source).bind(since).bind(LOOK_BACK_ROWS).fetch_all(pool).await?
        });
        Ok(rows
            .into_iter()
            .map(|(started_at, latency_ms, status_code, error)| RecentAttempt {
                started_at,
                latency_ms,
                status_code,
                error,
            })
            .collect())
    }
}
