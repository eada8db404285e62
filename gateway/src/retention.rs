//! The purge: a background task that applies each source's retention (SPEC.md "Retention").
//!
//! Every `run_every` (the shortest of the config's) the purger wakes, and purges the sources
//! whose own `run_every` has passed since their last run: first the archive of those that
//! have one (see `crate::archive`: of theirs only what it wrote may go), then payloads of
//! settled events past `payloads`, then whole events (settled past `events`, unsettled past
//! `unsettled`, none held by a pending retry or a running replay), then body hashes past
//! their source's `body_dedup_window`. Each in batches of their own short transactions with a
//! pause between them, so ingest keeps the writer. On PostgreSQL one gateway purges at a time
//! (an advisory lock; the others skip that run). Ages count from when an event was received,
//! on the injected clock; the runs' schedule is the monotonic clock's. The audit log is never
//! purged.
//!
//! Architecture invariant: this module decides what is due and when; only `store` knows how
//! rows are found and deleted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::archive::ArchiveError;
use crate::clock::SharedClock;
use crate::config::{Config, Retention};
use crate::store::{BatchPurged, Cursor, Cutoffs, PurgePlan, Store, StoreError};

/// Events per batch: a batch is one short write transaction (milliseconds).
const BATCH: usize = 500;
/// The pause between batches, in which ingest and deliveries take the writer.
const PAUSE: Duration = Duration::from_millis(2);

/// Why a run stopped; the next run goes on from where it did.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// What one run archived and removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// Events the archive wrote out first, and into how many files.
    pub archived: u64,
    pub archive_files: u64,
    /// Events whose payload went (their rows stay).
    pub payloads: u64,
    /// Events that went whole.
    pub events: u64,
    /// Body hashes past their window.
    pub body_hashes: u64,
    /// Rows deleted over every table.
    pub rows: u64,
}

/// This gateway's last purge run: when it ended (unix ms) and what it removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LastPurge {
    pub at: i64,
    pub report: PurgeReport,
}

/// The last run of a gateway's purger, for `/v1/storage`.
pub type PurgeStatus = Arc<Mutex<Option<LastPurge>>>;

/// Free pages given back to the file system per step (SQLite), each a short hold of the writer.
const FREE_PAGES_PER_STEP: i64 = 1024;

/// Applies the config's retention to a store.
pub struct Purger {
    store: Store,
    status: PurgeStatus,
    clock: SharedClock,
    global: Retention,
    sources: Vec<(String, Retention, Option<Duration>)>,
    /// The sources that archive before a purge, and where.
    archive_dirs: BTreeMap<String, PathBuf>,
    /// Batches of at most this many events (tests make it small to see a run in pieces).
    batch: usize,
    /// When each source was last purged (`None`: the sources no longer configured, on the
    /// global `run_every`), on the monotonic clock: each is purged on its own `run_every`.
    last_runs: Mutex<HashMap<Option<String>, Instant>>,
}

impl Purger {
    pub fn new(store: Store, config: &Config, clock: SharedClock) -> Self {
        let sources =
            config.sources.iter().map(|s| (s.name.clone(), s.retention.clone(), s.body_dedup_window)).collect();
        let archive_dirs =
            config.sources.iter().filter_map(|s| Some((s.name.clone(), s.retention.archive_dir.clone()?))).collect();
        Self {
            store,
            status: PurgeStatus::default(),
            clock,
            global: config.retention.clone(),
            sources,
            archive_dirs,
            batch: BATCH,
            last_runs: Mutex::default(),
        }
    }

    /// Where the last run is kept.
    pub fn status(&self) -> PurgeStatus {
        self.status.clone()
    }

    /// How often the purger wakes: the shortest `run_every` of the config; each run purges
    /// the sources whose own `run_every` has passed.
    pub fn period(&self) -> Duration {
        self.sources.iter().map(|(_, r, _)| r.run_every).chain([self.global.run_every]).min().expect("the global one")
    }

    /// Which sources' `run_every` has passed since their last purge (at `at`), marking them
    /// purged now; `None` stands for the sources no longer configured (global `run_every`).
    fn due(&self, at: Instant) -> Vec<Option<String>> {
        let mut last = self.last_runs.lock().expect("last runs");
        let every = self
            .sources
            .iter()
            .map(|(name, r, _)| (Some(name.clone()), r.run_every))
            .chain([(None, self.global.run_every)]);
        // A tick may come a little early of a period that equals the ticker's.
        const SLACK: Duration = Duration::from_millis(20);
        every
            .filter(|(key, run_every)| {
                let due = last.get(key).is_none_or(|ran| at + SLACK >= *ran + *run_every);
                if due {
                    last.insert(key.clone(), at);
                }
                due
            })
            .map(|(key, _)| key)
            .collect()
    }

    /// What may go at `now` (unix ms), of the sources `due` (the others keep everything).
    pub fn plan(&self, now: i64, due: &[Option<String>]) -> PurgePlan {
        let nothing = Cutoffs { payloads: i64::MIN, events: i64::MIN, unsettled: i64::MIN, body_hashes: i64::MIN };
        let is_due = |name: Option<&String>| due.iter().any(|d| d.as_ref() == name);
        let before = |age: Duration| now.saturating_sub(age.as_millis().min(i64::MAX as u128) as i64);
        let cutoffs = |r: &Retention, window: Option<Duration>| Cutoffs {
            payloads: before(r.payloads),
            events: before(r.events),
            unsettled: before(r.unsettled),
            // Without a window no body is a repeat: every hash may go.
            body_hashes: window.map_or(i64::MAX, before),
        };
        PurgePlan {
            sources: self
                .sources
                .iter()
                .map(|(name, r, window)| {
                    (name.clone(), if is_due(Some(name)) { cutoffs(r, *window) } else { nothing.clone() })
                })
                .collect(),
            others: if is_due(None) { cutoffs(&self.global, None) } else { nothing },
            now,
            archiving: self.archive_dirs.keys().cloned().collect(),
        }
    }

    /// One run, now; `None` when another gateway is purging (PostgreSQL).
    pub async fn run_once(&self) -> Result<Option<PurgeReport>, PurgeError> {
        let Some(_lock) = self.store.purge_lock().await? else {
            return Ok(None);
        };
        let plan = self.plan(self.clock.now_ms(), &self.due(Instant::now()));
        let mut report = PurgeReport::default();
        // An archive that cannot be written holds back its own sources' purge (their events
        // are not marked written), not the others': the purge goes on, and the run fails after.
        let mut archive_failed = None;
        if !self.archive_dirs.is_empty() {
            match crate::archive::archive(&self.store, &plan, &self.archive_dirs, plan.now).await {
                Ok(archived) => {
                    metrics::counter!("hookwarden_archived_events_total").increment(archived.events);
                    report.archived = archived.events;
                    report.archive_files = archived.files;
                }
                Err(err) => archive_failed = Some(err),
            }
        }
        let mut cursor: Cursor = None;
        loop {
            let (batch, next) = self.store.purge_payloads(&plan, &cursor, self.batch).await?;
            report.payloads += batch.picked as u64;
            self.count(&mut report, batch, "payloads");
            if batch.picked < self.batch {
                break;
            }
            cursor = next;
            tokio::time::sleep(PAUSE).await;
        }
        let mut cursor: Cursor = None;
        loop {
            let (batch, next) = self.store.purge_events(&plan, &cursor, self.batch).await?;
            report.events += batch.picked as u64;
            self.count(&mut report, batch, "events");
            if batch.picked < self.batch {
                break;
            }
            cursor = next;
            tokio::time::sleep(PAUSE).await;
        }
        loop {
            let batch = self.store.purge_body_hashes(&plan, self.batch).await?;
            report.body_hashes += batch.picked as u64;
            self.count(&mut report, batch, "body_hashes");
            if batch.picked < self.batch {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        self.return_free_pages().await?;
        *self.status.lock().expect("purge status") = Some(LastPurge { at: self.clock.now_ms(), report });
        match archive_failed {
            Some(err) => Err(err.into()),
            None => Ok(Some(report)),
        }
    }

    /// SQLite: gives the pages the purge freed back to the file system, a step at a time
    /// (free pages are reused by new rows anyway; this shrinks the file). Stops when a step
    /// frees nothing (a file made without `auto_vacuum = INCREMENTAL`: see `storage compact`).
    async fn return_free_pages(&self) -> Result<(), StoreError> {
        let mut left = i64::MAX;
        loop {
            let now_left = self.store.return_free_pages(FREE_PAGES_PER_STEP).await?;
            if now_left == 0 || now_left >= left {
                return Ok(());
            }
            left = now_left;
            tokio::time::sleep(PAUSE).await;
        }
    }

    /// Sets the storage gauges of `/metrics` from the store.
    pub async fn update_gauges(&self) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut stats = self.store.storage_by_source().await?;
        // A source whose every event went still reads 0, not its last figures.
        for (name, _, _) in &self.sources {
            if !stats.iter().any(|s| &s.source == name) {
                stats.push(crate::store::SourceStorage { source: name.clone(), ..Default::default() });
            }
        }
        for s in stats {
            let source = s.source.clone();
            metrics::gauge!("hookwarden_stored_events", "source" => source.clone()).set(s.events as f64);
            metrics::gauge!("hookwarden_stored_payloads", "source" => source.clone()).set(s.payloads as f64);
            metrics::gauge!("hookwarden_stored_payload_bytes", "source" => source.clone()).set(s.payload_bytes as f64);
            let age = s.oldest_unsettled_at.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0);
            metrics::gauge!("hookwarden_oldest_unsettled_event_age_seconds", "source" => source).set(age);
        }
        let db = self.store.database_storage().await?;
        metrics::gauge!("hookwarden_database_bytes").set(db.bytes as f64);
        if let Some(free) = db.free_bytes {
            metrics::gauge!("hookwarden_database_free_bytes").set(free as f64);
        }
        Ok(())
    }

    fn count(&self, report: &mut PurgeReport, batch: BatchPurged, what: &'static str) {
        report.rows += batch.rows;
        metrics::counter!("hookwarden_retention_purged_total", "what" => what).increment(batch.picked as u64);
        metrics::counter!("hookwarden_retention_rows_purged_total").increment(batch.rows);
    }

    /// Runs every [`Self::period`] until `stop`; a failed run is logged and tried again at
    /// the next period (nothing is half-done: each batch is one transaction).
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(self.period());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            let ran = tokio::select! {
                ran = self.run_once() => ran,
                // Stopping mid-run loses nothing: the batch in its transaction commits or not.
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match ran {
                Ok(Some(report)) => {
                    metrics::counter!("hookwarden_retention_runs_total", "result" => "purged").increment(1);
                    if report.rows > 0 {
                        tracing::info!(?report, "retention purged");
                    }
                }
                Ok(None) => {
                    metrics::counter!("hookwarden_retention_runs_total", "result" => "other_gateway").increment(1);
                }
                Err(err) => {
                    metrics::counter!("hookwarden_retention_runs_total", "result" => "failed").increment(1);
                    tracing::warn!(error = %err, "the retention purge failed; trying again at its next run");
                }
            }
            if let Err(err) = self.update_gauges().await {
                tracing::warn!(error = %err, "reading the storage figures for /metrics failed");
            }
        }
    }
}
