//! The storage figures the overview shows per source: `GET /v1/storage`'s store call
//! ([`Store::storage_by_source`]), kept for a minute. That call scans every event, which a
//! page that refreshes itself every 15 seconds must not wait for: it runs in the background,
//! and the overview shows the last figures with the time they were taken.

use std::sync::{Arc, Mutex};

use crate::store::{SourceStorage, Store};

/// How old figures may be before the next page view measures again.
const FRESH_MS: i64 = 60_000;
/// How long the first page view of a gateway waits for the first figures.
const FIRST_WAIT_MS: u64 = 300;

/// The last figures, shared by every console request of one gateway.
#[derive(Default, Clone)]
pub struct StorageFigures(Arc<Mutex<Figures>>);

#[derive(Default)]
struct Figures {
    /// When the last figures were taken (the gateway's clock), and them.
    taken: Option<(i64, Vec<SourceStorage>)>,
    measuring: bool,
}

impl StorageFigures {
    /// The last figures and when they were taken; starts measuring again (in the
    /// background) when they are older than a minute, and when there are none yet waits for
    /// the first measurement a moment ([`FIRST_WAIT_MS`]).
    pub async fn get(&self, store: &Store, now: i64) -> Option<(i64, Vec<SourceStorage>)> {
        let first = self.measure(store, now);
        if first.is_none() {
            for _ in 0..FIRST_WAIT_MS / 10 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                if let Some(taken) = self.0.lock().expect("storage figures").taken.clone() {
                    return Some(taken);
                }
            }
        }
        first
    }

    fn measure(&self, store: &Store, now: i64) -> Option<(i64, Vec<SourceStorage>)> {
        let mut figures = self.0.lock().expect("storage figures");
        let stale = figures.taken.as_ref().is_none_or(|(at, _)| now - at >= FRESH_MS);
        if stale && !figures.measuring {
            figures.measuring = true;
            let (shared, store) = (self.0.clone(), store.clone());
            tokio::spawn(async move {
                let measured = store.storage_by_source().await;
                let mut figures = shared.lock().expect("storage figures");
                figures.measuring = false;
                match measured {
                    Ok(sources) => figures.taken = Some((now, sources)),
                    Err(err) => tracing::warn!(error = %err, "console: storage figures"),
                }
            });
        }
        figures.taken.clone()
    }
}
