//! Waiting out a store failure that passes by itself ([`StoreError::is_transient`]): the
//! database restarting, a session cut, a full disk that gets room again.

use std::future::Future;
use std::time::Duration;

use super::StoreError;

/// First pause between tries; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Runs `write` until it succeeds, fails in a way that does not pass, or `patience` is used
/// up (then its last error).
pub async fn retry_transient<T, F, Fut>(patience: Duration, mut write: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut pause = FIRST_PAUSE;
    loop {
        match write().await {
            Err(err) if err.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> StoreError {
        StoreError::Database(sqlx::Error::PoolTimedOut)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_one_succeeds() {
        let tries = AtomicU32::new(0);
        let result = retry_transient(Duration::from_secs(60), || async {
            if tries.fetch_add(1, Ordering::SeqCst) < 3 { Err(transient()) } else { Ok(7) }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn lasting_failures_end_at_once_and_patience_runs_out() {
        let tries = AtomicU32::new(0);
        let refused = retry_transient(Duration::from_secs(60), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(StoreError::Corrupt("no".into()))
        })
        .await;
        assert!(matches!(refused, Err(StoreError::Corrupt(_))));
        assert_eq!(tries.load(Ordering::SeqCst), 1, "a lasting failure is not retried");
        let started = tokio::time::Instant::now();
        let out = retry_transient(Duration::from_secs(5), || async { Err::<(), _>(transient()) }).await;
        assert!(out.unwrap_err().is_transient());
        assert!(started.elapsed() <= Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
