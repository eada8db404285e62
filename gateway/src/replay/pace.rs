//! How fast the handler can take a replay, judged from its recent attempts: what the dry run
//! shows so the operator does not send 1,000 events at the default 2/s (eight minutes), nor
//! into a handler that is still down.
//!
//! The suggestion starts conservatively: half of what the handler showed it can do (its
//! busiest minute of successes, or one request at a time at its median latency, whichever is
//! more), never below the default rate nor above [`MOST_SUGGESTED`]. A live run still backs
//! off on 429/503 (`rate.rs`), so a suggestion that proves too fast slows itself down.

use serde::Serialize;

use super::plan::DEFAULT_RATE;
use crate::store::RecentAttempt;

/// How far back the judgement looks: the handler as it is now, not before the outage.
pub const WINDOW_MS: i64 = 15 * 60 * 1000;
/// The newest attempts that say whether the handler is still failing.
const LATEST: usize = 20;
/// The most a suggestion goes to, whatever the handler showed.
pub const MOST_SUGGESTED: f64 = 50.0;

/// The handler's recent pace and the rate suggested from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HandlerPace {
    pub window_seconds: i64,
    pub attempts: usize,
    /// Attempts the handler answered with a 2xx.
    pub succeeded: usize,
    pub median_latency_ms: Option<i64>,
    /// Successes per second in the window's busiest minute.
    pub busiest_per_second: f64,
    /// Most of the latest attempts failed: a live run now would fail too.
    pub still_failing: bool,
    /// Of the latest attempts, how many failed, and their most common cause.
    pub latest: usize,
    pub latest_failed: usize,
    pub latest_cause: Option<String>,
    /// Sends per second to run at, when the handler showed enough to judge.
    pub suggested_rate: Option<f64>,
}

/// Judges `attempts` (one source's, oldest first) as of `now`.
pub fn judge(attempts: &[RecentAttempt], now: i64) -> HandlerPace {
    let attempts: Vec<&RecentAttempt> = attempts.iter().filter(|a| a.started_at >= now - WINDOW_MS).collect();
    let ok = |a: &RecentAttempt| a.status_code.is_some_and(|s| (200..300).contains(&s));
    let succeeded: Vec<&&RecentAttempt> = attempts.iter().filter(|a| ok(a)).collect();
    let mut latencies: Vec<i64> = succeeded.iter().map(|a| a.latency_ms).collect();
    latencies.sort_unstable();
    let median_latency_ms = latencies.get(latencies.len() / 2).copied();
    let mut per_minute = std::collections::HashMap::<i64, usize>::new();
    for a in &succeeded {
        *per_minute.entry(a.started_at.div_euclid(60_000)).or_default() += 1;
    }
    let busiest_per_second = per_minute.values().max().copied().unwrap_or(0) as f64 / 60.0;

    let latest = &attempts[attempts.len().saturating_sub(LATEST)..];
    let failed: Vec<&&RecentAttempt> = latest.iter().filter(|a| !ok(a)).collect();
    let mut causes = std::collections::BTreeMap::<String, usize>::new();
    for a in &failed {
        *causes.entry(cause(a)).or_default() += 1;
    }
    let latest_cause = causes.into_iter().max_by_key(|(_, n)| *n).map(|(c, _)| c);
    let still_failing = !latest.is_empty() && failed.len() * 2 > latest.len();

    let suggested_rate = (!still_failing && !succeeded.is_empty()).then(|| {
        let one_at_a_time = median_latency_ms.map_or(0.0, |ms| 1000.0 / ms.max(1) as f64);
        let shown = busiest_per_second.max(one_at_a_time);
        round_down(shown / 2.0).clamp(DEFAULT_RATE, MOST_SUGGESTED)
    });
    HandlerPace {
        window_seconds: WINDOW_MS / 1000,
        attempts: attempts.len(),
        succeeded: succeeded.len(),
        median_latency_ms,
        busiest_per_second: (busiest_per_second * 10.0).round() / 10.0,
        still_failing,
        latest: latest.len(),
        latest_failed: failed.len(),
        latest_cause,
        suggested_rate,
    }
}

/// A failed attempt's cause as the operator reads it.
fn cause(a: &RecentAttempt) -> String {
    match (&a.status_code, &a.error) {
        (Some(status), _) => format!("HTTP {status}"),
        (None, Some(error)) => error.clone(),
        (None, None) => "no answer".into(),
    }
}

/// A rate a person would type: whole numbers below 10, multiples of 5 above.
fn round_down(rate: f64) -> f64 {
    if rate < 10.0 { rate.floor() } else { (rate / 5.0).floor() * 5.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    // On a minute boundary, so the busiest minute below is one bucket.
    const NOW: i64 = 200 * 60_000;

    fn attempt(at: i64, latency_ms: i64, status: Option<i64>) -> RecentAttempt {
        RecentAttempt {
            started_at: at,
            latency_ms,
            status_code: status,
            error: status.is_none().then(|| "connection refused".into()),
        }
    }

    #[test]
    fn a_quick_handler_gets_half_of_what_it_showed() {
        // 600 successes in one minute (10/s), at 40 ms each (25/s one at a time).
        let attempts: Vec<_> = (0..600).map(|i| attempt(NOW - 120_000 + i * 100, 40, Some(200))).collect();
        let pace = judge(&attempts, NOW);
        assert_eq!((pace.attempts, pace.succeeded, pace.median_latency_ms), (600, 600, Some(40)));
        assert_eq!(pace.busiest_per_second, 10.0);
        assert!(!pace.still_failing);
        assert_eq!(pace.suggested_rate, Some(10.0), "half of 25/s, rounded down to a multiple of 5");
    }

    #[test]
    fn a_slow_or_quiet_handler_is_never_suggested_below_the_default() {
        let attempts = vec![attempt(NOW - 5_000, 2_000, Some(200)), attempt(NOW - 1_000, 3_000, Some(204))];
        assert_eq!(judge(&attempts, NOW).suggested_rate, Some(DEFAULT_RATE));
    }

    #[test]
    fn a_very_fast_handler_is_capped() {
        let attempts: Vec<_> = (0..3000).map(|i| attempt(NOW - 60_000 + i * 20, 2, Some(200))).collect();
        assert_eq!(judge(&attempts, NOW).suggested_rate, Some(MOST_SUGGESTED));
    }

    #[test]
    fn a_handler_still_failing_gets_no_suggestion_and_the_cause() {
        let mut attempts: Vec<_> = (0..30).map(|i| attempt(NOW - 300_000 + i * 1000, 30, Some(200))).collect();
        attempts.extend((0..15).map(|i| attempt(NOW - 60_000 + i * 1000, 5, Some(503))));
        attempts.extend((0..3).map(|i| attempt(NOW - 10_000 + i * 1000, 0, None)));
        let pace = judge(&attempts, NOW);
        assert!(pace.still_failing);
        assert_eq!((pace.latest, pace.latest_failed), (20, 18));
        assert_eq!(pace.latest_cause.as_deref(), Some("HTTP 503"));
        assert_eq!(pace.suggested_rate, None);
    }

    #[test]
    fn nothing_recent_means_nothing_to_judge() {
        let old = vec![attempt(NOW - WINDOW_MS - 1, 10, Some(200))];
        let pace = judge(&old, NOW);
        assert_eq!((pace.attempts, pace.suggested_rate, pace.still_failing), (0, None, false));
    }
}
