//! The gap view: outcome counts per time bucket for one source.

use super::{Store, StoreError, with_pool};
use crate::domain::Outcome;

#[derive(Debug, Clone)]
pub struct SummaryQuery {
    pub source: String,
    /// Inclusive, unix ms.
    pub since: i64,
    /// Exclusive, unix ms.
    pub until: i64,
    pub bucket_ms: i64,
    /// Delivered before this without a receipt means overdue (now − the source's SLA).
    pub overdue_before: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryRow {
    pub bucket_start: i64,
    pub outcome: Outcome,
    pub overdue: bool,
    pub count: i64,
}

const SUMMARY: &str = "SELECT (received_at / $4) * $4 AS bucket, outcome, \
     CAST(CASE WHEN outcome = 'unknown' AND delivered_at IS NOT NULL AND delivered_at < $5 THEN 1 ELSE 0 END AS BIGINT) AS overdue, \
     COUNT(*) AS n FROM events WHERE source = $1 AND received_at >= $2 AND received_at < $3 \
     GROUP BY 1, 2, 3 ORDER BY 1";

const GAP_BOUNDS: &str = "SELECT MIN(received_at), MAX(received_at) FROM events \
     WHERE source = $1 AND received_at >= $2 AND received_at < $3 AND outcome IN ('unknown', 'failed')";

const FAILED_BY_CODE: &str = "SELECT error_code, COUNT(*) AS n FROM events \
     WHERE source = $1 AND received_at >= $2 AND received_at < $3 AND outcome = 'failed' GROUP BY error_code";

impl Store {
    pub async fn summary(&self, q: &SummaryQuery) -> Result<Vec<SummaryRow>, StoreError> {
        let rows: Vec<(i64, String, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(SUMMARY)
                .bind(&q.source)
                .bind(q.since)
                .bind(q.until)
                .bind(q.bucket_ms.max(1))
                .bind(q.overdue_before)
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(bucket_start, outcome, overdue, count)| {
                Ok(SummaryRow {
                    bucket_start,
                    outcome: Outcome::parse(&outcome)
                        .ok_or_else(|| StoreError::Corrupt(format!("outcome `{outcome}`")))?,
                    overdue: overdue == 1,
                    count,
                })
            })
            .collect()
    }

    /// When the first and the last unsettled (`unknown` or `failed`) event of the query's
    /// window arrived: the gap to the minute, not only its buckets.
    pub async fn gap_bounds(&self, q: &SummaryQuery) -> Result<Option<(i64, i64)>, StoreError> {
        let (first, last): (Option<i64>, Option<i64>) = with_pool!(self, pool => {
            sqlx::query_as(GAP_BOUNDS).bind(&q.source).bind(q.since).bind(q.until).fetch_one(pool).await?
        });
        Ok(first.zip(last))
    }

    /// The `failed` events of the query's window by their error code (`None` for none), for
    /// the gap view: what went wrong, not only how often.
    pub async fn failed_by_error_code(&self, q: &SummaryQuery) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        Ok(with_pool!(self, pool => {
            sqlx::query_as(FAILED_BY_CODE).bind(&q.source).bind(q.since).bind(q.until).fetch_all(pool).await?
        }))
    }
}
