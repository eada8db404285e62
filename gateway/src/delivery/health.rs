//! Whether a source's handler is answering, told in the log the way an operator needs it
//! during an outage: one WARN when its deliveries start failing (with the cause), at most one
//! per interval while they go on failing, and one when they recover. Never a line per
//! attempt: an outage with hundreds of retries open would bury everything else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// How often, at most, a source that goes on failing is told about again.
pub const TELL_EVERY: Duration = Duration::from_secs(60);

/// What the log says about a source; [`HealthLine::log`] writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthLine {
    /// The first failure after deliveries succeeded (or since the gateway started).
    Failing { source: String, cause: String },
    /// Deliveries are still failing: how many since the first, and the latest cause.
    StillFailing { source: String, failures: u64, for_ms: i64, cause: String },
    /// A delivery succeeded after failures.
    Recovered { source: String, failures: u64, for_ms: i64 },
}

impl HealthLine {
    pub fn log(&self) {
        match self {
            Self::Failing { source, cause } => {
                tracing::warn!(%source, "deliveries to source {source} are failing: {cause}")
            }
            Self::StillFailing { source, failures, for_ms, cause } => tracing::warn!(
                %source,
                "deliveries to source {source} still failing: {failures} failed attempts in {}, latest: {cause}",
                seconds(*for_ms)
            ),
            Self::Recovered { source, failures, for_ms } => tracing::warn!(
                %source,
                "deliveries to source {source} recovered after {failures} failed attempts over {}",
                seconds(*for_ms)
            ),
        }
    }
}

#[derive(Default)]
struct Health {
    failing: Option<Episode>,
    /// When this source was last told about, whatever the line.
    last_line_at: Option<i64>,
}

struct Episode {
    since: i64,
    failures: u64,
    /// Whether the start of this episode was told (its recovery is told only then: the log
    /// never says "recovered" about a failure it did not mention).
    told: bool,
}

/// Per-source delivery health, fed with every attempt's result.
pub struct SourceHealth {
    every_ms: i64,
    sources: Mutex<HashMap<String, Health>>,
}

impl SourceHealth {
    pub fn new(every: Duration) -> Self {
        Self { every_ms: every.as_millis() as i64, sources: Mutex::new(HashMap::new()) }
    }

    /// A failed attempt at `now`; `cause` is its status or error, as a person reads it.
    pub fn failed(&self, source: &str, cause: &str, now: i64) -> Option<HealthLine> {
        let mut sources = self.sources.lock().expect("health lock");
        let health = sources.entry(source.to_string()).or_default();
        let quiet = health.last_line_at.is_some_and(|at| now - at < self.every_ms);
        let line = match &mut health.failing {
            None => {
                // A source flapping between success and failure is told about at most once
                // per interval too; the next line then says how long it has been failing.
                health.failing = Some(Episode { since: now, failures: 1, told: !quiet });
                (!quiet).then(|| HealthLine::Failing { source: source.to_string(), cause: cause.to_string() })
            }
            Some(episode) => {
                episode.failures += 1;
                (!quiet).then(|| {
                    episode.told = true;
                    HealthLine::StillFailing {
                        source: source.to_string(),
                        failures: episode.failures,
                        for_ms: now - episode.since,
                        cause: cause.to_string(),
                    }
                })
            }
        };
        if line.is_some() {
            health.last_line_at = Some(now);
        }
        line
    }

    /// A successful attempt at `now`.
    pub fn succeeded(&self, source: &str, now: i64) -> Option<HealthLine> {
        let mut sources = self.sources.lock().expect("health lock");
        let health = sources.get_mut(source)?;
        let episode = health.failing.take()?;
        if !episode.told {
            return None;
        }
        health.last_line_at = Some(now);
        Some(HealthLine::Recovered {
            source: source.to_string(),
            failures: episode.failures,
            for_ms: now - episode.since,
        })
    }
}

/// A span of time to the second, as people write it ("2m 5s").
fn seconds(ms: i64) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(ms.max(0) as u64 / 1000))
}

/// A failed attempt's cause in a few words: the status the handler answered, or the error.
pub fn cause(status: Option<u16>, error: Option<&str>) -> String {
    match (status, error) {
        (Some(status), _) => format!("handler answered {status}"),
        (None, Some(error)) => error.to_string(),
        (None, None) => "no answer".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing(source: &str, cause: &str) -> Option<HealthLine> {
        Some(HealthLine::Failing { source: source.into(), cause: cause.into() })
    }

    #[test]
    fn an_outage_is_told_when_it_starts_once_a_minute_while_it_lasts_and_when_it_ends() {
        let health = SourceHealth::new(Duration::from_secs(60));
        assert_eq!(health.succeeded("orders", 0), None, "nothing to tell about a healthy source");
        assert_eq!(health.failed("orders", "handler answered 503", 1_000), failing("orders", "handler answered 503"));
        for n in 0..500 {
            assert_eq!(health.failed("orders", "handler answered 503", 1_000 + n * 100), None, "one line per attempt");
        }
        assert_eq!(
            health.failed("orders", "timed out", 61_000),
            Some(HealthLine::StillFailing {
                source: "orders".into(),
                failures: 502,
                for_ms: 60_000,
                cause: "timed out".into()
            })
        );
        assert_eq!(health.failed("orders", "timed out", 62_000), None);
        assert_eq!(
            health.succeeded("orders", 70_000),
            Some(HealthLine::Recovered { source: "orders".into(), failures: 503, for_ms: 69_000 })
        );
        assert_eq!(health.succeeded("orders", 71_000), None, "recovered once");
    }

    #[test]
    fn sources_are_told_about_apart() {
        let health = SourceHealth::new(Duration::from_secs(60));
        assert_eq!(health.failed("orders", "handler answered 500", 0), failing("orders", "handler answered 500"));
        assert_eq!(health.failed("github", "connection refused", 10), failing("github", "connection refused"));
        assert_eq!(health.succeeded("github", 20).map(|l| matches!(l, HealthLine::Recovered { .. })), Some(true));
        assert_eq!(health.failed("orders", "handler answered 500", 30), None, "orders is still in its outage");
    }

    #[test]
    fn a_flapping_source_is_told_about_at_most_once_per_interval() {
        let health = SourceHealth::new(Duration::from_secs(60));
        assert!(health.failed("orders", "handler answered 500", 0).is_some());
        assert!(health.succeeded("orders", 1_000).is_some());
        // Failing again within the interval: quiet, and so is its recovery.
        assert_eq!(health.failed("orders", "handler answered 500", 2_000), None);
        assert_eq!(health.succeeded("orders", 3_000), None);
        assert_eq!(health.failed("orders", "handler answered 500", 4_000), None);
        // A minute after the last line, the episode still going on is told, from its start.
        assert_eq!(
            health.failed("orders", "handler answered 500", 61_000),
            Some(HealthLine::StillFailing {
                source: "orders".into(),
                failures: 2,
                for_ms: 57_000,
                cause: "handler answered 500".into()
            })
        );
        assert!(health.succeeded("orders", 62_000).is_some());
    }
}
