//! The replay's pace: a token bucket (governor) whose rate halves when the handler says it
//! is overwhelmed (429 or 503, honouring `Retry-After`), down to one send per 10 s, and climbs
//! back by a quarter after every run of successes, up to the rate the operator asked for.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// The slowest a replay goes when the handler keeps pushing back.
pub const MIN_RATE: f64 = 0.1;
/// Successes in a row before the rate climbs again.
const RAMP_AFTER: u32 = 20;

struct State {
    current: f64,
    limiter: Arc<DefaultDirectRateLimiter>,
    streak: u32,
    paused_until: Option<Instant>,
}

/// A shared, adaptive token bucket.
pub struct AdaptiveRate {
    target: f64,
    state: Mutex<State>,
}

/// Rates from which the bucket holds more than one token.
const BURST_FROM: f64 = 100.0;

/// A bucket refilled at `rate` per second. Below [`BURST_FROM`] it holds one token, so sends
/// are evenly spaced and reach the handler in order; from there on it holds a tenth of a
/// second's worth, so bulk replays are not bound by timer resolution.
fn limiter(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let tokens = if rate < BURST_FROM { 1.0 } else { (rate / 10.0).min(1000.0) };
    let burst = NonZeroU32::new(tokens as u32).expect("at least one");
    let quota = Quota::with_period(period).expect("a positive period").allow_burst(burst);
    Arc::new(RateLimiter::direct(quota))
}

/// A bucket for a rate that replaces the one in use: empty, so the next send waits a whole
/// period at the new rate. (A fresh bucket is full, and after a 429 that token went out at
/// once: a handler throttling every send got them at its own speed, not the halved rate.)
fn replacement(rate: f64) -> Arc<DefaultDirectRateLimiter> {
    let bucket = limiter(rate);
    while bucket.check().is_ok() {}
    bucket
}

impl AdaptiveRate {
    pub fn new(target: f64) -> Self {
        let target = target.max(MIN_RATE);
        Self {
            target,
            state: Mutex::new(State { current: target, limiter: limiter(target), streak: 0, paused_until: None }),
        }
    }

    /// The rate now, in sends per second.
    pub fn current(&self) -> f64 {
        self.state.lock().expect("rate lock").current
    }

    /// Waits for the next send's turn.
    pub async fn ready(&self) {
        loop {
            let (limiter, paused_until) = {
                let state = self.state.lock().expect("rate lock");
                (state.limiter.clone(), state.paused_until)
            };
            if let Some(until) = paused_until.filter(|u| *u > Instant::now()) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            limiter.until_ready().await;
            // The rate may have dropped while we waited; the new limiter decides then.
            if Arc::ptr_eq(&limiter, &self.state.lock().expect("rate lock").limiter) {
                return;
            }
        }
    }

    /// The handler pushed back: halve the rate and pause for `retry_after` if it asked.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        let mut state = self.state.lock().expect("rate lock");
        state.current = (state.current / 2.0).max(MIN_RATE);
        state.limiter = replacement(state.current);
        state.streak = 0;
        if let Some(wait) = retry_after {
            state.paused_until = Some(Instant::now() + wait.min(Duration::from_secs(300)));
        }
    }

    /// A send went through: after a run of them, climb back towards the target.
    pub fn succeeded(&self) {
        let mut state = self.state.lock().expect("rate lock");
        state.streak += 1;
        if state.streak >= RAMP_AFTER && state.current < self.target {
            state.current = (state.current * 1.25).min(self.target);
            state.limiter = replacement(state.current);
            state.streak = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a slow-down the next send waits a whole period at the new rate: the new bucket
    /// starts empty (a full one let a send out at once after every 429).
    #[tokio::test]
    async fn the_send_after_a_slow_down_waits_its_period() {
        for target in [20.0, 400.0] {
            let rate = AdaptiveRate::new(target);
            rate.ready().await;
            rate.throttled(None);
            let started = std::time::Instant::now();
            rate.ready().await;
            let period = Duration::from_secs_f64(2.0 / target);
            assert!(started.elapsed() >= period.mul_f64(0.9), "at {target}/s: {:?}", started.elapsed());
        }
    }

    #[test]
    fn slows_down_multiplicatively_and_ramps_back_gradually() {
        let rate = AdaptiveRate::new(8.0);
        rate.throttled(None);
        assert_eq!(rate.current(), 4.0);
        for _ in 0..10 {
            rate.throttled(None);
        }
        assert_eq!(rate.current(), MIN_RATE, "never below one send per 10 s");
        for _ in 0..RAMP_AFTER {
            rate.succeeded();
        }
        assert!((rate.current() - 0.125).abs() < 1e-9);
        for _ in 0..(RAMP_AFTER * 100) {
            rate.succeeded();
        }
        assert_eq!(rate.current(), 8.0, "back to the target, not beyond");
    }

    #[tokio::test]
    async fn paces_sends() {
        let rate = AdaptiveRate::new(20.0);
        let start = Instant::now();
        for _ in 0..7 {
            rate.ready().await;
        }
        // The first send is free; six more at 20/s take 300 ms.
        assert!(start.elapsed() >= Duration::from_millis(280), "{:?}", start.elapsed());
        let fast = AdaptiveRate::new(1000.0);
        let start = Instant::now();
        for _ in 0..100 {
            fast.ready().await;
        }
        // A bulk rate starts with a tenth of a second's worth of sends at once.
        assert!(start.elapsed() < Duration::from_millis(50), "{:?}", start.elapsed());
    }
}
