//! The retry ladder: when the next attempt goes out after a failed one.

use std::time::Duration;

/// The longest wait a handler's `Retry-After` can ask of a scheduled retry: the default
/// ladder's last rung. A ladder with a longer rung allows that instead.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(24 * 3600);

/// The rungs between attempts and how many attempts there are in all (the first included).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryLadder {
    rungs: Vec<Duration>,
    max_attempts: u32,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Retry after this many milliseconds.
    RetryIn(i64),
    /// No attempts left: the event is exhausted.
    GiveUp,
}

impl RetryLadder {
    /// 30s, 2m, 8m, 30m, 2h, 8h, 24h.
    pub fn default_rungs() -> Vec<Duration> {
        [30, 120, 480, 1800, 7200, 28_800, 86_400].into_iter().map(Duration::from_secs).collect()
    }

    pub fn new(rungs: Vec<Duration>, max_attempts: u32) -> Self {
        Self { rungs, max_attempts: max_attempts.max(1) }
    }

    /// The waits between attempts, in order.
    pub fn rungs(&self) -> &[Duration] {
        &self.rungs
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// After `attempts_made` ladder attempts failed: retry, or give up. `jitter_unit` is a
    /// uniform sample in [-1, 1] scaled by `jitter` (±20% by default); a `Retry-After` from
    /// the handler replaces the rung when it asks for longer, up to [`RETRY_AFTER_CAP`] or the
    /// ladder's longest rung if that is longer (a handler asking for a year does not park the
    /// event for a year). Past the last rung the last one repeats, so a ladder shorter than
    /// `max_attempts` still spaces its retries.
    pub fn after_failure(
        &self,
        attempts_made: u32,
        jitter: f64,
        jitter_unit: f64,
        retry_after: Option<Duration>,
    ) -> NextStep {
        if attempts_made >= self.max_attempts {
            return NextStep::GiveUp;
        }
        let Some(last) = self.rungs.last() else {
            return NextStep::RetryIn(0);
        };
        let index = (attempts_made.max(1) - 1) as usize;
        let rung = self.rungs.get(index).unwrap_or(last);
        let base = rung.as_millis() as f64;
        let mut delay = base * (1.0 + jitter * jitter_unit.clamp(-1.0, 1.0));
        if let Some(asked) = retry_after {
            let cap = self.rungs.iter().max().unwrap_or(last).max(&RETRY_AFTER_CAP);
            delay = delay.max(asked.min(*cap).as_millis() as f64);
        }
        NextStep::RetryIn(delay.round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(attempts_made: u32, jitter_unit: f64, retry_after: Option<u64>, expected: NextStep) {
        let ladder = RetryLadder::new(RetryLadder::default_rungs(), 8);
        let got = ladder.after_failure(attempts_made, 0.2, jitter_unit, retry_after.map(Duration::from_secs));
        assert_eq!(got, expected, "after {attempts_made} attempts");
    }

    #[test]
    fn default_ladder_rungs_jitter_and_exhaustion() {
        check(1, 0.0, None, NextStep::RetryIn(30_000));
        check(2, 0.0, None, NextStep::RetryIn(120_000));
        check(7, 0.0, None, NextStep::RetryIn(86_400_000));
        check(8, 0.0, None, NextStep::GiveUp);
        check(1, 1.0, None, NextStep::RetryIn(36_000));
        check(1, -1.0, None, NextStep::RetryIn(24_000));
        check(1, 0.0, Some(90), NextStep::RetryIn(90_000));
        check(2, 0.0, Some(5), NextStep::RetryIn(120_000));
        check(1, 0.0, Some(365 * 86_400), NextStep::RetryIn(86_400_000));
        let short = RetryLadder::new(vec![Duration::from_millis(100)], 3);
        assert_eq!(
            short.after_failure(1, 0.0, 0.0, Some(Duration::from_secs(7200))),
            NextStep::RetryIn(7_200_000),
            "a short ladder still honours hours"
        );
    }
}
