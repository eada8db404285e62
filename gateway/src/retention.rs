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

use crate::archive::{ArchiveError, Archived};
use crate::clock::SharedClock;
use crate::config::{Config, Retention};
use crate::store::{Backend, BatchPurged, Cursor, Cutoffs, PurgePlan, Store, StoreError};

/// The work (its statements, before the commit) of one batch while others write, on SQLite.
/// Every ingest's group commit waits for the one writer connection while a batch holds it,
/// so an ingest waits for up to a batch's hold: fixed batches of 500 held it 30-60 ms and
/// ingest's p99 went from 16 to 67 ms; batches of 2 ms plus their commit's fsync still
/// doubled or tripled it. A batch's commit now costs no fsync (see `store::retention`), so
/// short batches cost little: 1 ms, under an ingest's own few milliseconds.
const SQLITE_BUSY_WORK: Duration = Duration::from_millis(1);
/// The same on PostgreSQL, where a batch holds nothing ingest waits for but competes with
/// it for the cores and the WAL, and has a round trip per statement (six): short against an
/// ingest's own few milliseconds, long enough that a batch is mostly work.
const POSTGRES_BUSY_WORK: Duration = Duration::from_millis(2);
/// The work of one batch once nobody else has written for [`QUIET`]: the commit is then a
/// small share of each batch, so a backlog goes at close to full speed; the first ingest after
/// the quiet waits for at most one such batch.
const QUIET_WORK: Duration = Duration::from_millis(25);
/// No group commit (ingest, delivery results) for this long: the writer is idle, and the
/// purge neither pauses nor keeps its batches short.
const QUIET: Duration = Duration::from_secs(1);
/// Events in the gateway's first batch; later ones are sized from the cost of the last.
const FIRST_BATCH: usize = 128;
/// Fewest events a batch takes on PostgreSQL. A batch has costs that do not grow with it, a
/// round trip per statement (six), which under load took 5-25 ms for 8 events as for 64:
/// counted as work per event they would shrink the batches to nothing, and the purge would
/// fall behind 500 events/s of ingest (measured).
const POSTGRES_MIN_BATCH: usize = 100;
/// The same on SQLite, whose batch runs on the writer's handle at once and commits without an
/// fsync: little is fixed, but a batch of a handful is all overhead.
const SQLITE_MIN_BATCH: usize = 20;
/// Most events a batch takes, however cheap the last ones were.
const MAX_BATCH: usize = 5_000;
/// The cost per event is taken from each full batch, but at most this many times the last
/// estimate or this many times smaller: one odd batch (a page fault, a stolen core) does not
/// swing the size.
const MAX_STEP: u64 = 2;
/// While others write, the pause after a batch is its hold times this: the purge holds the
/// writer at most half the time, so a burst of ingest never waits behind batch after batch.
const PAUSE_PER_HOLD: u32 = 1;
/// How far a purge that is behind stretches its batches (their work times this) and shortens
/// its pauses (their length divided by this), doubling run after run while behind: at the
/// most a batch does 8 ms (SQLite) of work and the purge has the writer ~90% of the time.
/// Measured: at 4,400 events/s of ingest on SQLite the duty cycle of a half purged 1,800/s,
/// and the store grew without end; a store that grows is worse than ingest that waits a
/// little longer.
const MAX_STRETCH: u32 = 8;
/// The longest pause that spreads a run (see [`Pacing::spread`]).
const MAX_SPREAD_PAUSE: Duration = Duration::from_secs(1);
/// Bounds of that pause: at least a turn for whoever waits, at most what keeps a slow batch
/// from stalling the purge.
const MIN_PAUSE: Duration = Duration::from_millis(1);
const MAX_PAUSE: Duration = Duration::from_millis(50);

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

/// Free pages given back to the file system in a step (SQLite): the first step's, and bounds
/// for the later ones, sized like a batch by [`Pacer`].
const FIRST_FREE_PAGES: usize = 256;
const MIN_FREE_PAGES: usize = 64;
const MAX_FREE_PAGES: usize = 4_096;
/// Free pages a SQLite file keeps after a run: this share of its pages (see
/// [`Purger::return_free_pages`]).
const KEEP_FREE: i64 = 8;

/// Sizes the purge's batches and the pauses between them from what the last ones cost:
/// while others write, a batch aims at its backend's busy work ([`SQLITE_BUSY_WORK`],
/// [`POSTGRES_BUSY_WORK`]) and the pause after it is as long as it held the writer (a duty
/// cycle of at most a half); once nobody else writes a batch aims at [`QUIET_WORK`] and there
/// is no pause, so a purge on an idle writer goes at full speed. Pure
/// arithmetic (no clock): the caller measures and says whether others write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pacer {
    /// The work of one unit (an event, a page) in the last full batches, damped.
    unit_ns: u64,
    /// Whether others wrote lately: which work the next batch aims at.
    busy: bool,
    /// The work a batch aims at while others write (its backend's).
    busy_work: Duration,
    min: usize,
    max: usize,
}

impl Pacer {
    /// Starts as if `first` units (taken within `min..=max`) were `busy_work`, with others
    /// writing.
    pub(crate) fn new(busy_work: Duration, first: usize, min: usize, max: usize) -> Self {
        let max = max.max(1);
        let min = min.clamp(1, max);
        let unit_ns = (busy_work.as_nanos() as u64 / first.clamp(min, max) as u64).max(1);
        Self { unit_ns, busy: true, busy_work, min, max }
    }

    /// The pacer of event batches on `backend`, at most `max` events each.
    fn events(backend: Backend, max: usize) -> Self {
        match backend {
            Backend::Sqlite => Self::new(SQLITE_BUSY_WORK, FIRST_BATCH, SQLITE_MIN_BATCH, max),
            Backend::Postgres => Self::new(POSTGRES_BUSY_WORK, FIRST_BATCH, POSTGRES_MIN_BATCH, max),
        }
    }

    /// How many units to take in the next batch; `stretch`: 1, or more while the purge is
    /// behind (see [`MAX_STRETCH`]).
    pub(crate) fn size(&self, stretch: u32) -> usize {
        let work = if self.busy { self.busy_work * stretch } else { QUIET_WORK };
        let units = work.as_nanos() as u64 / self.unit_ns;
        usize::try_from(units).unwrap_or(usize::MAX).clamp(self.min, self.max)
    }

    /// After a batch of `picked` units whose statements took `work` and which held the writer
    /// for `held` (with its commit); `busy`: whether others wrote lately. Learns the work per
    /// unit from a full batch (one that took fewer than asked was its pass's last, and says
    /// little) and answers the pause to take before the next.
    pub(crate) fn after(
        &mut self,
        picked: usize,
        work: Duration,
        held: Duration,
        busy: bool,
        stretch: u32,
    ) -> Duration {
        if picked > 0 && picked >= self.size(stretch) {
            let unit = (work.as_nanos() / picked as u128).min(u64::MAX as u128) as u64;
            self.unit_ns = unit.clamp(self.unit_ns / MAX_STEP, self.unit_ns.saturating_mul(MAX_STEP)).max(1);
        }
        self.busy = busy;
        if busy { (held * PAUSE_PER_HOLD / stretch).clamp(MIN_PAUSE, MAX_PAUSE) } else { Duration::ZERO }
    }
}

/// The purge's pacing, kept from run to run: a pacer per pass (their units cost differently),
/// and whether others write, from the store's count of group commits: busy while it moved
/// within [`QUIET`].
#[derive(Debug, Clone)]
struct Pacing {
    commits: u64,
    last_seen: Instant,
    payloads: Pacer,
    events: Pacer,
    body_hashes: Pacer,
    pages: Pacer,
    /// Files of the archive: always [`crate::archive::BATCH`] events (so a day is a few
    /// files, not many small ones); only the pause after each is paced.
    archive: Pacer,
    /// 1, or more while the purge is behind (see [`MAX_STRETCH`]): every pacer's.
    stretch: u32,
    /// Events the last run purged (payloads and whole): what the next is likely to find.
    last_purged: u64,
}

impl Pacing {
    fn new(commits: u64, backend: Backend) -> Self {
        let busy_work = Pacer::events(backend, MAX_BATCH).busy_work;
        Self {
            commits,
            last_seen: Instant::now(),
            payloads: Pacer::events(backend, MAX_BATCH),
            events: Pacer::events(backend, MAX_BATCH),
            body_hashes: Pacer::events(backend, MAX_BATCH),
            pages: Pacer::new(busy_work, FIRST_FREE_PAGES, MIN_FREE_PAGES, MAX_FREE_PAGES),
            archive: Pacer::new(busy_work, crate::archive::BATCH, crate::archive::BATCH, crate::archive::BATCH),
            stretch: 1,
            last_purged: 0,
        }
    }

    /// After a run that took `took`, the purger waking every `period`: a run longer than
    /// its period did not keep up with the events becoming due, so the next ones take more of
    /// the writer (the stretch doubles, up to [`MAX_STRETCH`]); one done within half of it
    /// gives some back (halves). Answers the stretch now.
    fn after_run(&mut self, took: Duration, period: Duration) -> u32 {
        self.stretch = if took > period {
            (self.stretch * 2).min(MAX_STRETCH)
        } else if took < period / 2 {
            (self.stretch / 2).max(1)
        } else {
            self.stretch
        };
        self.stretch
    }

    /// The time per event that spreads a run over half the purger's `period`, from what the
    /// last run purged (in a steady state about what this one finds): a run's events go in
    /// small batches with longer pauses instead of a burst at half the writer's time, so
    /// fewer ingests meet a batch. Nothing while the purge is behind (stretched) or before a
    /// first run has purged anything.
    fn spread(&self, period: Duration) -> Duration {
        if self.stretch > 1 || self.last_purged == 0 {
            return Duration::ZERO;
        }
        period / 2 / u32::try_from(self.last_purged).unwrap_or(u32::MAX)
    }

    /// Whether others wrote within [`QUIET`].
    fn busy(&mut self, store: &Store) -> bool {
        let commits = store.group_commits();
        if commits != self.commits {
            self.commits = commits;
            self.last_seen = Instant::now();
        }
        self.last_seen.elapsed() < QUIET
    }
}

/// Teaches `sizes` the last batch and waits the pause it answers (a yield when nobody else
/// writes: the writer then goes to whoever asks first). `floor`: the least pause (while others
/// write) that spreads the run over its time (see [`Pacing::spread`]).
#[allow(clippy::too_many_arguments)]
async fn pause(
    what: &'static str,
    sizes: &mut Pacer,
    stretch: u32,
    busy: bool,
    picked: usize,
    work: Duration,
    held: Duration,
    floor: Duration,
) {
    let mut pause = sizes.after(picked, work, held, busy, stretch);
    if busy {
        pause = pause.max(floor.saturating_sub(held).min(MAX_SPREAD_PAUSE));
    }
    metrics::gauge!("hookwarden_retention_batch_size", "what" => what).set(sizes.size(stretch) as f64);
    if pause.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(pause).await;
    }
}

/// Applies the config's retention to a store.
pub struct Purger {
    store: Store,
    status: PurgeStatus,
    clock: SharedClock,
    global: Retention,
    sources: Vec<(String, Retention, Option<Duration>)>,
    /// The sources that archive before a purge, and where.
    archive_dirs: BTreeMap<String, PathBuf>,
    /// How the last runs' batches went (see [`Pacer`]).
    pacing: Mutex<Pacing>,
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
        let pacing = Mutex::new(Pacing::new(store.group_commits(), store.backend()));
        Self {
            store,
            status: PurgeStatus::default(),
            clock,
            global: config.retention.clone(),
            sources,
            archive_dirs,
            pacing,
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
        let started = Instant::now();
        let plan = self.plan(self.clock.now_ms(), &self.due(started));
        let mut report = PurgeReport::default();
        let mut pacing = self.pacing.lock().expect("pacing").clone();
        // An archive that cannot be written holds back its own sources' purge (their events
        // are not marked written), not the others': the purge goes on, and the run fails after.
        let mut archive_failed = None;
        if !self.archive_dirs.is_empty() {
            match self.archive(&plan, &mut pacing).await {
                Ok(archived) => {
                    metrics::counter!("hookwarden_archived_events_total").increment(archived.events);
                    report.archived = archived.events;
                    report.archive_files = archived.files;
                }
                Err(err) => archive_failed = Some(err),
            }
        }
        let spread = pacing.spread(self.period());
        let mut cursor: Cursor = None;
        loop {
            let limit = pacing.payloads.size(pacing.stretch);
            let (batch, next) = self.store.purge_payloads(&plan, &cursor, limit).await?;
            report.payloads += batch.picked as u64;
            self.count(&mut report, batch, "payloads");
            if batch.picked < limit {
                break;
            }
            cursor = next;
            let busy = pacing.busy(&self.store);
            let floor = spread * batch.picked as u32;
            pause("payloads", &mut pacing.payloads, pacing.stretch, busy, batch.picked, batch.work, batch.held, floor)
                .await;
        }
        let mut cursor: Cursor = None;
        loop {
            let limit = pacing.events.size(pacing.stretch);
            let (batch, next) = self.store.purge_events(&plan, &cursor, limit).await?;
            report.events += batch.picked as u64;
            self.count(&mut report, batch, "events");
            if batch.picked < limit {
                break;
            }
            cursor = next;
            let busy = pacing.busy(&self.store);
            let floor = spread * batch.picked as u32;
            pause("events", &mut pacing.events, pacing.stretch, busy, batch.picked, batch.work, batch.held, floor)
                .await;
        }
        loop {
            let limit = pacing.body_hashes.size(pacing.stretch);
            let batch = self.store.purge_body_hashes(&plan, limit).await?;
            report.body_hashes += batch.picked as u64;
            self.count(&mut report, batch, "body_hashes");
            if batch.picked < limit {
                break;
            }
            let busy = pacing.busy(&self.store);
            pause(
                "body_hashes",
                &mut pacing.body_hashes,
                pacing.stretch,
                busy,
                batch.picked,
                batch.work,
                batch.held,
                Duration::ZERO,
            )
            .await;
        }
        self.return_free_pages(&mut pacing).await?;
        pacing.last_purged = report.payloads + report.events;
        let was = pacing.stretch;
        let stretch = pacing.after_run(started.elapsed(), self.period());
        metrics::gauge!("hookwarden_retention_stretch").set(stretch as f64);
        if stretch > was {
            tracing::warn!(
                took_ms = started.elapsed().as_millis() as u64,
                stretch,
                "the purge is behind the events becoming due (a run took longer than run_every): \
                 its next runs take more of the writer"
            );
        }
        *self.pacing.lock().expect("pacing") = pacing;
        *self.status.lock().expect("purge status") = Some(LastPurge { at: self.clock.now_ms(), report });
        match archive_failed {
            Some(err) => Err(err.into()),
            None => Ok(Some(report)),
        }
    }

    /// Writes out what a purge of `plan` could take of the archiving sources, a file (at most
    /// [`crate::archive::BATCH`] events) at a time, with a pause after each as long as its
    /// claim and mark held the writer while others write.
    async fn archive(&self, plan: &PurgePlan, pacing: &mut Pacing) -> Result<Archived, ArchiveError> {
        let now = plan.now;
        let mut done = crate::archive::finish_unfinished(&self.store, now).await?;
        let mut cursor: Cursor = None;
        loop {
            let limit = pacing.archive.size(pacing.stretch);
            let (batch, next) =
                crate::archive::archive_batch(&self.store, plan, &self.archive_dirs, now, &cursor, limit).await?;
            done.events += batch.archived.events;
            done.files += batch.archived.files;
            if batch.picked < limit {
                return Ok(done);
            }
            cursor = next;
            let busy = pacing.busy(&self.store);
            pause(
                "archive",
                &mut pacing.archive,
                pacing.stretch,
                busy,
                batch.picked,
                batch.held,
                batch.held,
                Duration::ZERO,
            )
            .await;
        }
    }

    /// SQLite: gives the pages the purge freed back to the file system, a step at a time,
    /// beyond [`KEEP_FREE`] of the file's pages: in a steady state a run frees about what
    /// ingest adds before the next, which would take them back at once (the soak gave a few
    /// thousand pages back after every run and grew the file by as many in the next seconds,
    /// a write of each page for nothing). Past that share (a backlog purged, a retention
    /// shortened) the rest goes back. Stops when a step frees nothing (a file made without
    /// `auto_vacuum = INCREMENTAL`: see `storage compact`).
    async fn return_free_pages(&self, pacing: &mut Pacing) -> Result<(), StoreError> {
        let Some((pages, mut left)) = self.store.page_counts().await? else { return Ok(()) };
        let keep = pages / KEEP_FREE;
        while left > keep {
            let step = pacing.pages.size(pacing.stretch).min(usize::try_from(left - keep).unwrap_or(usize::MAX));
            let (now_left, held) = self.store.return_free_pages(step as i64).await?;
            if now_left >= left {
                return Ok(());
            }
            let freed = usize::try_from(left - now_left).unwrap_or(step).min(step);
            left = now_left;
            let busy = pacing.busy(&self.store);
            // One statement: its work and its hold are one.
            pause("pages", &mut pacing.pages, pacing.stretch, busy, freed, held, held, Duration::ZERO).await;
        }
        Ok(())
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
        let (work_us, held_us) = (batch.work.as_micros() as u64, batch.held.as_micros() as u64);
        tracing::debug!(what, picked = batch.picked, rows = batch.rows, work_us, held_us, "purge batch");
        metrics::histogram!("hookwarden_retention_batch_seconds").record(batch.held.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    /// A commit's fsync: part of the hold, not of the work.
    const COMMIT: Duration = Duration::from_millis(3);

    const BUSY_WORK: Duration = Duration::from_millis(2);

    /// A batch of `n` whose statements took `work`, on a busy writer; the next size.
    fn after(p: &mut Pacer, n: usize, work: Duration) -> usize {
        p.after(n, work, work + COMMIT, true, 1);
        p.size(1)
    }

    #[test]
    fn a_batch_is_sized_for_its_work_within_a_step_and_the_bounds() {
        // 100 units start at 20 µs each (BUSY_WORK / 100).
        let mut p = Pacer::new(BUSY_WORK, 100, 10, 1_000);
        assert_eq!(p.size(1), 100);
        // 100 worked 4 ms: 40 µs each, 50 do the 2 ms; the commit's time does not count.
        assert_eq!(after(&mut p, 100, 4 * MS), 50);
        // Did the target: the size stays.
        assert_eq!(after(&mut p, 50, BUSY_WORK), 50);
        // Ten times too slow (a stolen core): halved, not cut to a tenth.
        assert_eq!(after(&mut p, 50, 20 * MS), 25);
        // Very cheap: doubled at most per batch.
        assert_eq!(after(&mut p, 25, Duration::from_micros(10)), 50);
        // Work of zero does not divide by zero; growth stops at the bound.
        for _ in 0..20 {
            let n = p.size(1);
            after(&mut p, n, Duration::ZERO);
        }
        assert_eq!(p.size(1), 1_000);
        // Always slow: down to the bound, never below.
        for _ in 0..40 {
            let n = p.size(1);
            after(&mut p, n, Duration::from_secs(1));
        }
        assert_eq!(p.size(1), 10);
    }

    #[test]
    fn a_quiet_writer_gets_longer_batches_and_a_busy_one_short_ones_at_once() {
        let mut p = Pacer::new(BUSY_WORK, 100, 10, 100_000);
        p.after(100, BUSY_WORK, BUSY_WORK + COMMIT, false, 1);
        let quiet = (QUIET_WORK.as_nanos() / (BUSY_WORK.as_nanos() / 100)) as usize;
        assert_eq!(p.size(1), quiet);
        // Its cost per event as before: the next is back to the busy size at once.
        p.after(quiet, QUIET_WORK, QUIET_WORK + COMMIT, true, 1);
        assert_eq!(p.size(1), 100);
    }

    #[test]
    fn a_short_batch_says_nothing_of_a_full_ones_cost() {
        let mut p = Pacer::new(BUSY_WORK, 100, 10, 1_000);
        assert_eq!(after(&mut p, 3, 40 * MS), 100);
        assert_eq!(after(&mut p, 0, 40 * MS), 100);
    }

    #[test]
    fn the_pause_is_the_hold_within_bounds_while_others_write_and_none_otherwise() {
        let mut p = Pacer::new(BUSY_WORK, 100, 10, 1_000);
        // The hold, commit and all.
        assert_eq!(p.after(100, MS, 4 * MS, true, 1), 4 * MS * PAUSE_PER_HOLD);
        assert_eq!(p.after(p.size(1), Duration::ZERO, Duration::from_micros(100), true, 1), MIN_PAUSE);
        assert_eq!(p.after(p.size(1), MS, Duration::from_secs(2), true, 1), MAX_PAUSE);
        assert_eq!(p.after(p.size(1), MS, 4 * MS, false, 1), Duration::ZERO);
        assert_eq!(p.after(p.size(1), MS, Duration::from_secs(2), false, 1), Duration::ZERO);
    }

    #[test]
    fn a_purge_behind_takes_more_of_the_writer_and_gives_it_back_once_ahead() {
        let period = Duration::from_secs(5);
        let mut pacing = Pacing::new(0, Backend::Sqlite);
        let (size, pause) =
            (pacing.events.size(pacing.stretch), pacing.events.clone().after(0, MS, 4 * MS, true, pacing.stretch));
        assert_eq!(pause, 4 * MS);
        // Runs longer than the period: the stretch doubles, to its bound.
        let stretches: Vec<u32> = (0..5).map(|_| pacing.after_run(period * 2, period)).collect();
        assert_eq!(stretches, [2, 4, 8, 8, 8]);
        // Batches do 8 times the work, pauses an eighth of the hold (within their bounds).
        assert_eq!(pacing.events.size(pacing.stretch), size * 8);
        // One stretch for every pass.
        assert_eq!(pacing.stretch, 8);
        assert_eq!(pacing.events.clone().after(0, MS, 16 * MS, true, pacing.stretch), 2 * MS);
        assert_eq!(pacing.events.clone().after(0, MS, 4 * MS, true, pacing.stretch), MIN_PAUSE);
        // A run of between half and the whole period keeps it; a short one halves it.
        assert_eq!(pacing.after_run(period * 3 / 4, period), 8);
        let stretches: Vec<u32> = (0..4).map(|_| pacing.after_run(period / 4, period)).collect();
        assert_eq!(stretches, [4, 2, 1, 1]);
        assert_eq!(pacing.events.size(pacing.stretch), size);
    }

    #[test]
    fn a_run_is_spread_over_half_the_period_from_what_the_last_one_purged() {
        let period = Duration::from_secs(5);
        let mut pacing = Pacing::new(0, Backend::Sqlite);
        assert_eq!(pacing.spread(period), Duration::ZERO, "nothing known before a first run");
        pacing.last_purged = 2_500;
        // 2,500 events over 2.5 s: 1 ms each.
        assert_eq!(pacing.spread(period), MS);
        // Behind: no spreading, the stretch decides.
        pacing.after_run(period * 2, period);
        assert_eq!(pacing.spread(period), Duration::ZERO);
    }

    #[test]
    fn a_pacer_starts_within_its_bounds() {
        assert_eq!(Pacer::new(BUSY_WORK, 5_000, 10, 1_000).size(1), 1_000);
        assert_eq!(Pacer::new(BUSY_WORK, 1, 10, 1_000).size(1), 10);
        assert_eq!(Pacer::new(BUSY_WORK, 0, 0, 0).size(1), 1);
        assert_eq!(Pacer::events(Backend::Sqlite, MAX_BATCH).size(1), FIRST_BATCH);
        assert_eq!(Pacer::events(Backend::Postgres, MAX_BATCH).size(1), FIRST_BATCH);
        // SQLite's batches aim at less work, and may shrink further.
        let mut sqlite = Pacer::events(Backend::Sqlite, MAX_BATCH);
        sqlite.after(FIRST_BATCH, SQLITE_BUSY_WORK * 2, SQLITE_BUSY_WORK * 2, true, 1);
        assert_eq!(sqlite.size(1), FIRST_BATCH / 2);
    }
}
