//! The gap view: outcome counts per time bucket for one source.
//!
//! Grouping every event of a day took about 2 s at a million events, and the overview asks
//! every 15 s. So the counts are kept as events are written: `event_counts` holds, per
//! source and minute of `received_at`, how many events are in each outcome. Triggers on
//! `events` (migration 0012) keep it, in the transaction of every statement that inserts,
//! settles, resolves or deletes an event: ingest's group commit, receipts, the probe,
//! resolutions, retention's purge, import. The guarantee lives in the database, in one place,
//! so no writer can forget it. (On PostgreSQL a count is split over a few rows, by the
//! connection that inserted the event, so concurrent ingest transactions do not queue on one
//! row; reads sum them.) [`Store::summary`] reads the whole minutes of a window from
//! there and counts the rest live (the minutes cut by the window's edges, and the overdue
//! ones, which depend on the time of asking); [`Store::summary_recount`] groups the events
//! themselves, as the fallback and for tests to check the counts against.

use std::collections::BTreeMap;

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

/// The grain of `event_counts`.
const MINUTE_MS: i64 = 60_000;

/// Every event of `[$2, $3)` grouped: the fallback, and what a recount gives.
const RECOUNT: &str = "SELECT (received_at / $4) * $4 AS bucket, outcome, \
     CAST(CASE WHEN outcome = 'unknown' AND delivered_at IS NOT NULL AND delivered_at < $5 THEN 1 ELSE 0 END AS BIGINT) AS overdue, \
     COUNT(*) AS n, CAST(0 AS BIGINT) AS part FROM events WHERE source = $1 AND received_at >= $2 AND received_at < $3 \
     GROUP BY 1, 2, 3";

/// The counts of the whole minutes `[$6, $7)`, with the overdue ones among their `unknown`
/// counted live (`part` 1: moved from not overdue to overdue), and the events of the cut
/// minutes before and after grouped as [`RECOUNT`] does. One statement: one snapshot.
const COUNTED: &str = "SELECT (minute / $4) * $4 AS bucket, outcome, CAST(0 AS BIGINT) AS overdue, \
     CAST(SUM(n) AS BIGINT) AS n, CAST(0 AS BIGINT) AS part FROM event_counts \
     WHERE source = $1 AND minute >= $6 AND minute < $7 GROUP BY 1, 2 \
     UNION ALL SELECT (received_at / $4) * $4, 'unknown', CAST(1 AS BIGINT), COUNT(*), CAST(1 AS BIGINT) FROM events \
     WHERE source = $1 AND outcome = 'unknown' AND received_at >= $6 AND received_at < $7 AND delivered_at < $5 GROUP BY 1 \
     UNION ALL SELECT (received_at / $4) * $4, outcome, \
     CAST(CASE WHEN outcome = 'unknown' AND delivered_at IS NOT NULL AND delivered_at < $5 THEN 1 ELSE 0 END AS BIGINT), \
     COUNT(*), CAST(0 AS BIGINT) FROM events WHERE source = $1 AND received_at >= $2 AND received_at < $6 GROUP BY 1, 2, 3 \
     UNION ALL SELECT (received_at / $4) * $4, outcome, \
     CAST(CASE WHEN outcome = 'unknown' AND delivered_at IS NOT NULL AND delivered_at < $5 THEN 1 ELSE 0 END AS BIGINT), \
     COUNT(*), CAST(0 AS BIGINT) FROM events WHERE source = $1 AND received_at >= $7 AND received_at < $3 GROUP BY 1, 2, 3";

/// The first and last unsettled event, each a seek on the partial indexes `events_unknown`
/// and `events_failed` (a `MIN` and a `MAX` over `outcome IN (…)` read the whole range).
const GAP_BOUNDS: &str = "SELECT \
     (SELECT MIN(received_at) FROM events WHERE source = $1 AND outcome = 'unknown' AND received_at >= $2 AND received_at < $3), \
     (SELECT MAX(received_at) FROM events WHERE source = $1 AND outcome = 'unknown' AND received_at >= $2 AND received_at < $3), \
     (SELECT MIN(received_at) FROM events WHERE source = $1 AND outcome = 'failed' AND received_at >= $2 AND received_at < $3), \
     (SELECT MAX(received_at) FROM events WHERE source = $1 AND outcome = 'failed' AND received_at >= $2 AND received_at < $3)";

const FAILED_BY_CODE: &str = "SELECT error_code, COUNT(*) AS n FROM events \
     WHERE source = $1 AND received_at >= $2 AND received_at < $3 AND outcome = 'failed' GROUP BY error_code";

/// The whole minutes `[first, end)` of the query's window that `event_counts` can answer:
/// only when a bucket is whole minutes (a minute then falls in one bucket), and only when
/// the window holds at least one whole minute.
pub(crate) fn counted_minutes(q: &SummaryQuery) -> Option<(i64, i64)> {
    if q.bucket_ms <= 0 || q.bucket_ms % MINUTE_MS != 0 {
        return None;
    }
    let first = -(-q.since).div_euclid(MINUTE_MS) * MINUTE_MS;
    let end = q.until.div_euclid(MINUTE_MS) * MINUTE_MS;
    (first < end).then_some((first, end))
}

impl Store {
    /// The query's events by bucket, outcome and overdue: from `event_counts` where it can
    /// answer ([`counted_minutes`]), else by [`Store::summary_recount`]. Bucket by bucket the
    /// same answer, ordered by bucket, outcome and overdue.
    pub async fn summary(&self, q: &SummaryQuery) -> Result<Vec<SummaryRow>, StoreError> {
        let Some((first, end)) = counted_minutes(q) else {
            return self.summary_recount(q).await;
        };
        let rows: Vec<(i64, String, i64, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(COUNTED)
                .bind(&q.source)
                .bind(q.since)
                .bind(q.until)
                .bind(q.bucket_ms)
                .bind(q.overdue_before)
                .bind(first)
                .bind(end)
                .fetch_all(pool)
                .await?
        });
        let mut counts: BTreeMap<(i64, &'static str, bool), i64> = BTreeMap::new();
        for (bucket, outcome, overdue, n, part) in rows {
            let outcome = parse_outcome(&outcome)?.as_str();
            if part == 1 {
                *counts.entry((bucket, outcome, false)).or_default() -= n;
            }
            *counts.entry((bucket, outcome, overdue == 1)).or_default() += n;
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|((bucket_start, outcome, overdue), count)| {
                Ok(SummaryRow { bucket_start, outcome: parse_outcome(outcome)?, overdue, count })
            })
            .collect()
    }

    /// [`Store::summary`] by grouping every event of the window: what `event_counts` must
    /// always agree with (the tests hold it to that), and the answer for buckets that are not
    /// whole minutes.
    pub async fn summary_recount(&self, q: &SummaryQuery) -> Result<Vec<SummaryRow>, StoreError> {
        let rows: Vec<(i64, String, i64, i64, i64)> = with_pool!(self, pool => {
            sqlx::query_as(RECOUNT)
                .bind(&q.source)
                .bind(q.since)
                .bind(q.until)
                .bind(q.bucket_ms.max(1))
                .bind(q.overdue_before)
                .fetch_all(pool)
                .await?
        });
        let mut rows = rows
            .into_iter()
            .map(|(bucket_start, outcome, overdue, count, _)| {
                Ok(SummaryRow { bucket_start, outcome: parse_outcome(&outcome)?, overdue: overdue == 1, count })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        rows.sort_by_key(|r| (r.bucket_start, r.outcome.as_str(), r.overdue));
        Ok(rows)
    }

    /// When the first and the last unsettled (`unknown` or `failed`) event of the query's
    /// window arrived: the gap to the minute, not only its buckets.
    pub async fn gap_bounds(&self, q: &SummaryQuery) -> Result<Option<(i64, i64)>, StoreError> {
        let (unknown_first, unknown_last, failed_first, failed_last): (
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        ) = with_pool!(self, pool => {
            sqlx::query_as(GAP_BOUNDS).bind(&q.source).bind(q.since).bind(q.until).fetch_one(pool).await?
        });
        let first = [unknown_first, failed_first].into_iter().flatten().min();
        let last = [unknown_last, failed_last].into_iter().flatten().max();
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

fn parse_outcome(text: &str) -> Result<Outcome, StoreError> {
    Outcome::parse(text).ok_or_else(|| StoreError::Corrupt(format!("outcome `{text}`")))
}

#[cfg(test)]
mod tests {
    use super::{SummaryQuery, counted_minutes};

    fn query(since: i64, until: i64, bucket_ms: i64) -> SummaryQuery {
        SummaryQuery { source: "s".into(), since, until, bucket_ms, overdue_before: 0 }
    }

    #[test]
    fn counts_serve_the_whole_minutes_of_a_window_in_whole_minute_buckets() {
        const M: i64 = 60_000;
        // Aligned on both ends: all of it.
        assert_eq!(counted_minutes(&query(10 * M, 20 * M, 5 * M)), Some((10 * M, 20 * M)));
        // Cut minutes at both ends are left to the events.
        assert_eq!(counted_minutes(&query(10 * M + 1, 20 * M - 1, M)), Some((11 * M, 19 * M)));
        assert_eq!(counted_minutes(&query(10 * M - 1, 20 * M + 1, 15 * M)), Some((10 * M, 20 * M)));
        // No whole minute inside: none.
        assert_eq!(counted_minutes(&query(10 * M + 1, 11 * M + 5, M)), None);
        assert_eq!(counted_minutes(&query(10 * M + 1, 11 * M - 1, M)), None);
        // A bucket that is not whole minutes would split a minute between two buckets.
        assert_eq!(counted_minutes(&query(10 * M, 20 * M, 90_000)), None);
        assert_eq!(counted_minutes(&query(10 * M, 20 * M, 30_000)), None);
        assert_eq!(counted_minutes(&query(10 * M, 20 * M, 0)), None);
        // Before 1970 the floor and ceiling still round the right way.
        assert_eq!(counted_minutes(&query(-2 * M - 1, -1, M)), Some((-2 * M, -M)));
    }
}
