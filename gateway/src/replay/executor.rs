//! The executor: runs persisted replay jobs, on whichever gateway holds the job's lease.
//!
//! Per job: items go out in the order the events were received, in batches of at most 500.
//! Before each batch every remaining item's outcome is read again; receipts announced on the
//! bus (in-process, and from other gateways through PostgreSQL NOTIFY) drop queued items at
//! once; and just before each send the item is checked (`Store::check_before_send`, which
//! holds nothing while the handler answers). Each of the three counts the items it drops in
//! `hookwarden_replay_skipped_receipts_total{at}`. Before each batch, too, the batch's
//! `unknown` items are asked about at their source's `status_url` (ask first, see
//! [`Replayer::ask_first`]): what the handler's answer settles is recorded and dropped as
//! `skipped_probe`; a probe that fails only costs its timeout. An item is
//! marked `sending` durably before it goes out, so a job resumed after a crash never sends an
//! item twice. Pace: [`AdaptiveRate`]; concurrency: a semaphore.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use serde_json::json;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, watch};

use super::rate::AdaptiveRate;
use crate::clock::SharedClock;
use crate::config::SourceConfig;
use crate::delivery::{ForwardRequest, Forwarder, idempotency_key};
use crate::domain::{AttemptKind, EventId, Outcome};
use crate::probe::Prober;
use crate::receipts::ReceiptDesk;
use crate::store::Recorded;
use crate::store::{
    AttemptRecord, Batcher, Completion, ItemResult, Loaded, NewAuditEntry, ReplayItem, ReplayJob, SendCheck,
    SendableEvent, Store, StoreError, Workers, retry_transient,
};
use crate::telemetry;
use tracing::Instrument;

/// Items re-checked and sent per batch.
pub const BATCH: i64 = 500;
/// Send tasks whose results are not yet written, per job (bounds memory, not speed).
const MAX_OUTSTANDING: u32 = 4096;
/// Probes in flight at once when a batch asks first (100 events each).
const PROBES_AT_ONCE: usize = 4;
/// How often a running job's lease is extended (leases last `delivery.lease`, seconds).
const RENEW_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct ReplaySettings {
    pub lease: Duration,
    pub poll_interval: Duration,
    /// Sends in flight at once per job.
    pub concurrency: usize,
    pub timeout: Duration,
}

pub struct Replayer {
    store: Store,
    sources: Arc<HashMap<String, SourceConfig>>,
    forwarder: Forwarder,
    receipts: Arc<ReceiptDesk>,
    /// Asks handlers about a batch's unknown items before it goes (ask first).
    prober: Arc<Prober>,
    clock: SharedClock,
    gateway_id: String,
    settings: ReplaySettings,
    wake: Notify,
    /// Jobs running here, to stop them at once on cancel or shutdown.
    running: Mutex<HashMap<String, watch::Sender<Stop>>>,
    /// Set when `run` starts to stop: a job claimed after that is told at once.
    shutting_down: AtomicBool,
    /// Group commit of replay attempts into the events' attempt logs.
    attempts: Batcher<AttemptRecord, Result<(), String>>,
}

/// What a job's run ended in.
enum End {
    Completed,
    Cancelled,
    /// Another gateway holds the job now (ours stalled past the lease).
    LeaseLost,
    /// This gateway is stopping: the job stays `running` for the next one.
    Shutdown,
}

/// What a lease renewal found.
enum Renewal {
    Running,
    Paused,
    Ended(End),
}

/// What a running job is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    /// An operator paused it: nothing more goes out until it is resumed; the job keeps its
    /// lease (renewed while paused), so no other gateway takes it over.
    Pause,
    /// An operator cancelled it: what is left is not sent.
    Cancel,
    /// The gateway is stopping: what is left goes back in the queue for the next one.
    Shutdown,
}

impl Replayer {
    pub fn new(
        store: Store,
        sources: Arc<HashMap<String, SourceConfig>>,
        receipts: Arc<ReceiptDesk>,
        prober: Arc<Prober>,
        clock: SharedClock,
        gateway_id: String,
        settings: ReplaySettings,
    ) -> Arc<Self> {
        let writer = store.clone();
        let patience = settings.lease;
        let attempts = Batcher::spawn(8192, 512, Workers::Shared(1), move |records: Vec<AttemptRecord>| {
            let store = writer.clone();
            async move {
                match retry_transient(patience, || store.record_replay_attempts(&records)).await {
                    Ok(_) => records.iter().map(|_| Ok(())).collect(),
                    Err(err) => records.iter().map(|_| Err(err.to_string())).collect(),
                }
            }
        });
        Arc::new(Self {
            attempts,
            forwarder: Forwarder::new(settings.timeout),
            store,
            sources,
            receipts,
            prober,
            clock,
            gateway_id,
            settings,
            wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// A new job was created: look for it now rather than at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops a job running on this gateway (its state was already set to `cancelled`).
    pub fn stop_local(&self, id: &str) {
        if let Some(stop) = self.running.lock().expect("running lock").get(id) {
            let _ = stop.send(Stop::Cancel);
        }
    }

    /// Pauses a job running on this gateway (its state was already set to `paused`); one
    /// running elsewhere sees it at its next lease renewal (within a second).
    pub fn pause_local(&self, id: &str) {
        if let Some(stop) = self.running.lock().expect("running lock").get(id) {
            stop.send_if_modified(|told| {
                let running = *told == Stop::Run;
                if running {
                    *told = Stop::Pause;
                }
                running
            });
        }
    }

    /// Lets a paused job running on this gateway go on (its state was already set back to
    /// `running`); a cancel or a shutdown told meanwhile stands.
    pub fn resume_local(&self, id: &str) {
        if let Some(stop) = self.running.lock().expect("running lock").get(id) {
            stop.send_if_modified(|told| {
                let paused = *told == Stop::Pause;
                if paused {
                    *told = Stop::Run;
                }
                paused
            });
        }
    }

    /// Claims and runs jobs until `shutdown`, then hands the running ones back (see
    /// [`Stop::Shutdown`]) and waits for them to do so.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut jobs = tokio::task::JoinSet::new();
        while !*shutdown.borrow() {
            while jobs.try_join_next().is_some() {}
            let now = self.clock.now_ms();
            let lease_until = now + self.settings.lease.as_millis() as i64;
            match self.store.claim_replay(&self.gateway_id, now, lease_until).await {
                Ok(Some(job)) => {
                    jobs.spawn(self.clone().execute(job));
                    continue;
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "claiming replay jobs failed"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.shutting_down.store(true, Ordering::SeqCst);
        for stop in self.running.lock().expect("running lock").values() {
            let _ = stop.send(Stop::Shutdown);
        }
        while jobs.join_next().await.is_some() {}
    }

    async fn execute(self: Arc<Self>, job: ReplayJob) {
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let ours = stop_rx.clone();
        {
            let mut running = self.running.lock().expect("running lock");
            // Claimed as the gateway began to stop: told at once (`run` set the flag first).
            if self.shutting_down.load(Ordering::SeqCst) {
                let _ = stop_tx.send(Stop::Shutdown);
            }
            running.insert(job.id.clone(), stop_tx);
        }
        tracing::info!(replay = %job.id, eligible = job.counts.eligible, "replay running");
        let run = self.job_run(&job);
        let result = self.drive_through_outages(&job, &run, stop_rx).await;
        {
            // Only this run's own entry: a fresh run of the job may have replaced it.
            let mut running = self.running.lock().expect("running lock");
            if running.get(&job.id).is_some_and(|stop| stop.subscribe().same_channel(&ours)) {
                running.remove(&job.id);
            }
        }
        let now = self.clock.now_ms();
        let (state, error) = match result {
            Ok(End::LeaseLost) => return,
            Ok(End::Shutdown) => {
                if let Err(err) = self.store.release_replay(&job.id, &self.gateway_id).await {
                    tracing::warn!(replay = %job.id, error = %err, "handing the replay on failed; its lease runs out instead");
                }
                tracing::info!(replay = %job.id, "replay handed on: the gateway is stopping");
                return;
            }
            Ok(End::Completed) => ("completed", None),
            Ok(End::Cancelled) => ("cancelled", None),
            Err(err) => ("failed", Some(err.to_string())),
        };
        if state == "cancelled"
            && let Err(err) = self.store.cancel_queued(&job.id, now).await
        {
            tracing::warn!(replay = %job.id, error = %err, "marking cancelled items failed");
        }
        // The job's end and its audit entry commit together. If either fails the job stays
        // `running` under this gateway's lease; once that runs out the job is claimed again,
        // finds nothing left to send, and ends then.
        let ended = match self.finished_entry(&job.id, state, error.as_deref()).await {
            Ok(entry) => {
                self.store.finish_replay(&job.id, state, now, error.as_deref(), Some(run.rate.current()), &entry).await
            }
            Err(err) => Err(err),
        };
        match ended {
            Ok(here) => tracing::info!(replay = %job.id, state, ended_here = here, "replay ended"),
            Err(err) => {
                tracing::error!(replay = %job.id, error = %err, "ending the replay with its audit entry failed")
            }
        }
    }

    /// The `replay.finished` entry: the job's counts and every item's result (all final once
    /// the run drained, so read before the transaction that ends the job).
    async fn finished_entry(&self, id: &str, state: &str, error: Option<&str>) -> Result<NewAuditEntry, StoreError> {
        let job = self.store.get_replay(id).await?;
        let items = self.store.replay_item_results(id).await?;
        let counts = job.as_ref().map(|j| json!(j.counts)).unwrap_or_default();
        Ok(NewAuditEntry {
            at: self.clock.now_ms(),
            actor: job.map(|j| j.created_by).unwrap_or_default(),
            action: "replay.finished".into(),
            subject: Some(id.to_string()),
            details: json!({ "state": state, "error": error, "counts": counts, "items": items, "gateway": self.gateway_id }),
        })
    }

    /// What a job's run keeps while it goes: its pace, its sends in flight, the receipts seen.
    fn job_run(&self, job: &ReplayJob) -> Arc<JobRun> {
        let eligible: HashSet<Outcome> = job.request["eligible_outcomes"]
            .as_array()
            .map(|list| list.iter().filter_map(|o| o.as_str().and_then(Outcome::parse)).collect())
            .unwrap_or_else(|| HashSet::from([Outcome::Unknown]));
        let concurrency = self.settings.concurrency.min(job.rate.ceil().max(1.0) as usize) as u32;
        // As `ReplayRequest::asks_first` decided for the request the job was made of (its
        // stored form carries more fields than the request).
        let ask_first = job.request["ask_first"] != false && job.destination.is_none();
        Arc::new(JobRun {
            id: job.id.clone(),
            ask_first,
            destination: job.destination.as_deref().map(crate::config::http_url),
            eligible,
            planned_at: job.created_at,
            rate: AdaptiveRate::new(job.rate),
            receipted: Mutex::new(HashSet::new()),
            permits: Arc::new(Semaphore::new(concurrency as usize)),
            outstanding: Arc::new(Semaphore::new(MAX_OUTSTANDING as usize)),
            results: self.result_writer(&job.id),
        })
    }

    /// [`Self::drive`], carried across store failures that pass by themselves (the database
    /// restarting, a session cut, a full disk): the run waits until the store renews its lease
    /// again and then goes on where the store says it is, rather than ending the job failed.
    /// Items the failed pass had marked `sending` are then reported interrupted, never resent.
    async fn drive_through_outages(
        self: &Arc<Self>,
        job: &ReplayJob,
        run: &Arc<JobRun>,
        stop: watch::Receiver<Stop>,
    ) -> Result<End, StoreError> {
        loop {
            let err = match self.drive(job, run, stop.clone()).await {
                Err(err) if err.is_transient() => err,
                done => return done,
            };
            tracing::warn!(replay = %job.id, error = %err, "the store failed under a running replay; it goes on once the store is back");
            run.drain().await;
            let mut pause = Duration::from_millis(100);
            loop {
                match stop.has_changed().map(|_| *stop.borrow()) {
                    Ok(Stop::Run | Stop::Pause) => {}
                    Ok(Stop::Cancel) => return Ok(End::Cancelled),
                    Ok(Stop::Shutdown) => return Ok(End::Shutdown),
                    Err(_) => return Ok(End::LeaseLost),
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
                let until = self.clock.now_ms() + self.settings.lease.as_millis() as i64;
                match self.store.renew_replay(&job.id, &self.gateway_id, until, run.rate.current()).await {
                    // A paused job waits in `drive`, which renews before it sends anything.
                    Ok(Some(state)) if state == "running" || state == "paused" => break,
                    Ok(Some(_)) => return Ok(End::Cancelled),
                    Ok(None) => return Ok(End::LeaseLost),
                    Err(err) if err.is_transient() => {}
                    Err(err) => return Err(err),
                }
            }
            tracing::info!(replay = %job.id, "the store is back: the replay goes on");
        }
    }

    /// Runs a job's items until none is queued, the job is cancelled, or the lease is lost;
    /// waits while it is paused.
    async fn drive(
        self: &Arc<Self>,
        job: &ReplayJob,
        run: &Arc<JobRun>,
        mut stop: watch::Receiver<Stop>,
    ) -> Result<End, StoreError> {
        let resumed = self.store.interrupt_sending(&job.id, self.clock.now_ms()).await?;
        if resumed > 0 {
            tracing::warn!(replay = %job.id, resumed, "resumed a job: items that were being sent are not sent again");
        }
        let mut bus = self.receipts.bus.subscribe();
        // Renewed before the first send: a job paused meanwhile (say, while the store was
        // down) sends nothing before it is resumed.
        let mut renewed_at = tokio::time::Instant::now() - RENEW_EVERY;
        'batches: loop {
            let items = self.store.queued_items(&job.id, BATCH).await?;
            if items.is_empty() {
                run.drain().await;
                return Ok(End::Completed);
            }
            let (sendable, unknown) = self.recheck_batch(run, &mut bus, items).await?;
            let mut events =
                self.store.load_for_send(&sendable.iter().map(|i| i.event_id.clone()).collect::<Vec<_>>()).await?;
            let sendable = if run.ask_first && !unknown.is_empty() {
                // The lease is renewed while the handler is asked (a slow one takes its
                // `status_timeout`), and a cancel or a shutdown is heard at once: the batch's
                // items are all still `queued`, nothing of it was sent.
                let asking = self.ask_first(run, sendable, &unknown, &events);
                tokio::pin!(asking);
                loop {
                    tokio::select! {
                        kept = &mut asking => break kept?,
                        changed = stop.changed() => {
                            let told = match changed {
                                Ok(()) => *stop.borrow_and_update(),
                                Err(_) => {
                                    run.drain().await;
                                    return Ok(End::LeaseLost);
                                }
                            };
                            match told {
                                // A pause takes effect before the next send, after the probe.
                                Stop::Run | Stop::Pause => {}
                                Stop::Cancel => {
                                    run.drain().await;
                                    return Ok(End::Cancelled);
                                }
                                Stop::Shutdown => {
                                    run.drain().await;
                                    return Ok(End::Shutdown);
                                }
                            }
                        }
                        _ = tokio::time::sleep_until(renewed_at + RENEW_EVERY) => {
                            // A pause takes effect before the next send, after the probe.
                            if let Renewal::Ended(end) = self.renew(job, run, &mut renewed_at).await {
                                run.drain().await;
                                return Ok(end);
                            }
                        }
                    }
                }
            } else {
                sendable
            };
            events.retain(|id, _| sendable.iter().any(|i| &i.event_id == id));
            let chunk_size = (run.rate.current() / 2.0).clamp(1.0, 64.0) as usize;
            for chunk in sendable.chunks(chunk_size) {
                if renewed_at.elapsed() >= RENEW_EVERY {
                    match self.renew(job, run, &mut renewed_at).await {
                        Renewal::Running => {}
                        Renewal::Paused => {
                            if let Some(end) = self.wait_while_paused(job, run, &mut stop, &mut renewed_at).await {
                                run.drain().await;
                                return Ok(end);
                            }
                            continue 'batches;
                        }
                        Renewal::Ended(end) => {
                            run.drain().await;
                            return Ok(end);
                        }
                    }
                }
                if *stop.borrow() == Stop::Pause {
                    if let Some(end) = self.wait_while_paused(job, run, &mut stop, &mut renewed_at).await {
                        run.drain().await;
                        return Ok(end);
                    }
                    continue 'batches;
                }
                // Written before anything goes out: a crash from here on never resends these.
                let now = self.clock.now_ms();
                let sending: Vec<ItemResult> = chunk.iter().map(|i| item_result(i.seq, "sending", now)).collect();
                self.store.record_items(&job.id, &sending).await?;
                for (n, item) in chunk.iter().enumerate() {
                    // The wait for the next turn can outlast the lease (a handler that keeps
                    // answering 429 slows the run to one send per 10 s, a `Retry-After` pauses
                    // it, slow sends hold every slot): the lease is renewed while waiting, not
                    // only between chunks. The turn is one future, polled across renewals, so a
                    // renewal neither takes a second token nor gives up a slot.
                    let turn = async {
                        run.rate.ready().await;
                        run.permits.clone().acquire_owned().await.expect("semaphore never closed")
                    };
                    tokio::pin!(turn);
                    let (told, permit) = loop {
                        tokio::select! {
                            permit = &mut turn => break (*stop.borrow(), Some(permit)),
                            changed = stop.changed() => match changed {
                                Ok(()) => match *stop.borrow_and_update() {
                                    Stop::Run => {}
                                    told => break (told, None),
                                },
                                // The sender is gone: this gateway claimed the job afresh (its
                                // lease had run out) and that run goes on; this one steps aside.
                                Err(_) => {
                                    run.drain().await;
                                    return Ok(End::LeaseLost);
                                }
                            },
                            _ = tokio::time::sleep_until(renewed_at + RENEW_EVERY) => {
                                match self.renew(job, run, &mut renewed_at).await {
                                    Renewal::Running => {}
                                    Renewal::Paused => break (Stop::Pause, None),
                                    Renewal::Ended(End::Cancelled) => break (Stop::Cancel, None),
                                    Renewal::Ended(end) => {
                                        // Whoever holds the lease now marks the items left
                                        // `sending` here interrupted: never sent, never resent.
                                        run.drain().await;
                                        return Ok(end);
                                    }
                                }
                            }
                        }
                    };
                    let Some(permit) = permit.filter(|_| told == Stop::Run) else {
                        // Marked `sending` but never sent: cancelled, or back in the queue (for
                        // the gateway that takes the job on, or for when it is resumed).
                        let (state, end) = match told {
                            Stop::Shutdown => ("queued", Some(End::Shutdown)),
                            Stop::Pause => ("queued", None),
                            _ => ("cancelled", Some(End::Cancelled)),
                        };
                        let now = self.clock.now_ms();
                        let unsent: Vec<ItemResult> =
                            chunk[n..].iter().map(|i| item_result(i.seq, state, now)).collect();
                        self.store.record_items(&job.id, &unsent).await?;
                        let end = match end {
                            Some(end) => Some(end),
                            None => self.wait_while_paused(job, run, &mut stop, &mut renewed_at).await,
                        };
                        match end {
                            Some(end) => {
                                run.drain().await;
                                return Ok(end);
                            }
                            // Resumed: the queue is read again, in order, from where it stopped.
                            None => continue 'batches,
                        }
                    };
                    run.note_receipts(&mut bus);
                    // Retention took its payload (or the whole event): skipped, counted as such,
                    // never sent with an empty body.
                    let Some(Loaded::Sendable(event)) = events.get(&item.event_id).cloned() else {
                        run.finish(item_result(item.seq, "skipped_purged", self.clock.now_ms())).await;
                        continue;
                    };
                    if run.receipted.lock().expect("receipted lock").contains(&item.event_id) {
                        skipped(Skip::Announced);
                        run.finish(item_result(item.seq, "skipped_receipt", self.clock.now_ms())).await;
                        continue;
                    }
                    let task = run.outstanding.clone().acquire_owned().await.expect("semaphore never closed");
                    let me = self.clone();
                    let run = run.clone();
                    let item = item.clone();
                    let span = tracing::info_span!(
                        "replay.item",
                        event_id = %item.event_id,
                        source = %event.source,
                        replay_id = %run.id,
                        seq = item.seq,
                    );
                    telemetry::under_event(&span, item.event_id.as_str());
                    // Boxed for the reason the dispatcher's forwards are.
                    tokio::spawn(Box::pin(async move {
                        me.send_one(&run, &item, event, permit).instrument(span).await;
                        drop(task);
                    }));
                }
            }
        }
    }

    /// While the job is paused: sends nothing, keeps renewing the lease (a paused job is
    /// neither taken over nor taken for dead), and returns `None` once it is resumed, or how
    /// the run ends (cancelled, lease lost, the gateway stopping).
    async fn wait_while_paused(
        &self,
        job: &ReplayJob,
        run: &JobRun,
        stop: &mut watch::Receiver<Stop>,
        renewed_at: &mut tokio::time::Instant,
    ) -> Option<End> {
        tracing::info!(replay = %job.id, "replay paused");
        loop {
            match *stop.borrow_and_update() {
                Stop::Cancel => return Some(End::Cancelled),
                Stop::Shutdown => return Some(End::Shutdown),
                Stop::Run | Stop::Pause => {}
            }
            // The store decides (a pause or resume may have been asked of another gateway).
            match self.renew(job, run, renewed_at).await {
                Renewal::Running => {
                    self.resume_local(&job.id);
                    let _ = stop.borrow_and_update();
                    tracing::info!(replay = %job.id, "replay resumed");
                    return None;
                }
                Renewal::Paused => {}
                Renewal::Ended(end) => return Some(end),
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        return Some(End::LeaseLost);
                    }
                }
                _ = tokio::time::sleep_until(*renewed_at + RENEW_EVERY) => {}
            }
        }
    }

    /// Extends the lease (and stores the pace), noting when in `renewed_at`; says whether the
    /// job runs, is paused, or must stop here. A renewal that fails is logged and tried again
    /// on the next tick, as a lease outlasts many: a database blip does not end the run
    /// half-way through a chunk, and a lease really lost meanwhile shows on the next renewal
    /// that goes through.
    async fn renew(&self, job: &ReplayJob, run: &JobRun, renewed_at: &mut tokio::time::Instant) -> Renewal {
        let until = self.clock.now_ms() + self.settings.lease.as_millis() as i64;
        let renewed = self.store.renew_replay(&job.id, &self.gateway_id, until, run.rate.current()).await;
        *renewed_at = tokio::time::Instant::now();
        match renewed {
            Ok(state) => match state.as_deref() {
                Some("running") => Renewal::Running,
                Some("paused") => Renewal::Paused,
                Some(_) => Renewal::Ended(End::Cancelled),
                None => Renewal::Ended(End::LeaseLost),
            },
            Err(err) => {
                tracing::warn!(replay = %job.id, error = %err, "renewing the replay's lease failed; trying again");
                Renewal::Running
            }
        }
    }

    /// Asks the handlers of the batch's `unknown` items (`unknown`, of sources with a
    /// `status_url`) whether they applied or failed them, records what the answers say (the
    /// receipt ledger's checks, `via = probe`), and drops the items a new receipt settled
    /// (`skipped_probe`); returns the rest. A probe that fails, or answers that cannot be
    /// recorded, drop nothing: those items go out under the usual checks.
    async fn ask_first(
        &self,
        run: &JobRun,
        sendable: Vec<ReplayItem>,
        unknown: &HashSet<EventId>,
        events: &HashMap<EventId, Loaded>,
    ) -> Result<Vec<ReplayItem>, StoreError> {
        let mut by_source: HashMap<&str, Vec<EventId>> = HashMap::new();
        for item in &sendable {
            let Some(Loaded::Sendable(event)) = events.get(&item.event_id).filter(|_| unknown.contains(&item.event_id))
            else {
                continue;
            };
            if self.sources.get(&event.source).is_some_and(|s| s.status_url.is_some()) {
                by_source.entry(event.source.as_str()).or_default().push(item.event_id.clone());
            }
        }
        if by_source.is_empty() {
            return Ok(sendable);
        }
        let (mut probes, mut failed) = (0i64, 0i64);
        let mut passed = Vec::new();
        for (name, ids) in &by_source {
            let source = self.sources.get(*name).expect("grouped by configured sources");
            for (_, result) in self.prober.ask_all(source, ids, PROBES_AT_ONCE).await {
                probes += 1;
                match result {
                    Ok(answered) => passed.extend(answered.passed),
                    Err(_) => failed += 1,
                }
            }
        }
        let mut settled: HashSet<EventId> = HashSet::new();
        if !passed.is_empty() {
            match self.store.record_receipts(&passed).await {
                Ok(recorded) => {
                    for (receipt, result) in passed.into_iter().zip(recorded) {
                        if matches!(result, Recorded::New(_)) {
                            settled.insert(receipt.event_id.clone());
                        }
                        let _ = self.receipts.announce(receipt, result);
                    }
                }
                Err(err) => {
                    tracing::warn!(replay = %run.id, error = %err, "recording the handler's answers failed; the items go out as planned")
                }
            }
        }
        self.store.count_probes(&run.id, probes, failed).await?;
        let now = self.clock.now_ms();
        let (dropped, keep): (Vec<ReplayItem>, Vec<ReplayItem>) =
            sendable.into_iter().partition(|i| settled.contains(&i.event_id));
        metrics::counter!("hookwarden_replay_skipped_probe_total").increment(dropped.len() as u64);
        let results: Vec<ItemResult> = dropped.iter().map(|i| item_result(i.seq, "skipped_probe", now)).collect();
        self.store.record_items(&run.id, &results).await?;
        Ok(keep)
    }

    /// Re-reads a batch's outcomes and drops what is no longer eligible; returns the rest,
    /// and which of them are `unknown`.
    async fn recheck_batch(
        &self,
        run: &JobRun,
        bus: &mut broadcast::Receiver<EventId>,
        items: Vec<ReplayItem>,
    ) -> Result<(Vec<ReplayItem>, HashSet<EventId>), StoreError> {
        run.note_receipts(bus);
        let ids: Vec<EventId> = items.iter().map(|i| i.event_id.clone()).collect();
        let current = self.store.receipt_counts(&ids).await?;
        let now = self.clock.now_ms();
        let mut keep = Vec::with_capacity(items.len());
        let mut dropped = Vec::new();
        let mut unknown = HashSet::new();
        for item in items {
            let receipted = run.receipted.lock().expect("receipted lock").contains(&item.event_id);
            match current.get(&item.event_id) {
                Some(check) if check.receipts > item.receipts_at_plan || receipted => {
                    skipped(if check.receipts > item.receipts_at_plan { Skip::Batch } else { Skip::Announced });
                    dropped.push(item_result(item.seq, "skipped_receipt", now))
                }
                Some(check) if !run.still_eligible(check) => {
                    dropped.push(item_result(item.seq, "skipped_outcome", now))
                }
                Some(check) => {
                    if check.outcome == Outcome::Unknown {
                        unknown.insert(item.event_id.clone());
                    }
                    keep.push(item)
                }
                // No row: retention purged the whole event (nothing else deletes one).
                None => dropped.push(item_result(item.seq, "skipped_purged", now)),
            }
        }
        self.store.record_items(&run.id, &dropped).await?;
        Ok((keep, unknown))
    }

    /// Checks one item and sends it, or drops it.
    /// `permit` is one of the job's sends in flight: given back as soon as the send ended, so
    /// the next send does not wait for this one's results to be written.
    async fn send_one(&self, run: &JobRun, item: &ReplayItem, event: SendableEvent, permit: OwnedSemaphorePermit) {
        let Some(source) = self.sources.get(&event.source) else {
            run.finish(item_result(item.seq, "skipped_outcome", self.clock.now_ms())).await;
            return;
        };
        // The send's decision (see `Store::check_before_send`): nothing is held while it is out.
        // The attempt starts with it: its `started_at` is never later than the check.
        let started_at = self.clock.now_ms();
        let check = match self.store.check_before_send(&item.event_id).await {
            Ok(check) => check,
            Err(err) => {
                let mut failed = item_result(item.seq, "failed", self.clock.now_ms());
                failed.error = Some(format!("could not check the event before sending: {err}"));
                run.finish(failed).await;
                return;
            }
        };
        if check.receipts > item.receipts_at_plan {
            skipped(Skip::AtSend);
            run.finish(item_result(item.seq, "skipped_receipt", self.clock.now_ms())).await;
            return;
        }
        if !run.still_eligible(&check) {
            run.finish(item_result(item.seq, "skipped_outcome", self.clock.now_ms())).await;
            return;
        }
        let url = match &run.destination {
            None => &source.forward_url,
            Some(Ok(url)) => url,
            Some(Err(err)) => {
                let mut failed = item_result(item.seq, "failed", self.clock.now_ms());
                failed.error = Some(format!("the destination {err}"));
                run.finish(failed).await;
                return;
            }
        };
        let key = idempotency_key(&event.source, &event.dedup_key);
        let result = self
            .forwarder
            .send(ForwardRequest {
                url,
                event_id: item.event_id.as_str(),
                source: &event.source,
                idempotency_key: &key,
                attempt: event.attempts + 1,
                replay_id: Some(&run.id),
                original_headers: &event.headers,
                body: Bytes::from(event.body),
                secret: &source.signing_secret,
                now_secs: started_at.div_euclid(1000),
            })
            .await;
        drop(permit);
        let now = self.clock.now_ms();
        let ok = result.succeeded();
        if ok {
            run.rate.succeeded();
        } else if matches!(result.status, Some(429 | 503)) {
            run.rate.throttled(result.retry_after);
        }
        metrics::counter!("hookwarden_replay_sends_total", "result" => if ok { "succeeded" } else { "failed" })
            .increment(1);
        let attempt = AttemptRecord {
            event_id: item.event_id.clone(),
            gateway: self.gateway_id.clone(),
            kind: AttemptKind::Replay,
            replay_id: Some(run.id.clone()),
            started_at,
            latency_ms: result.latency_ms,
            status_code: result.status.map(i64::from),
            error: result.error.clone(),
            response_excerpt: result.excerpt.clone(),
            completion: Completion::Replayed { delivered_at: ok.then_some(now) },
            confirm_without_receipt: source.no_receipt_reason(event.event_type.as_deref()),
        };
        if let Some(Err(err)) = self.attempts.submit(attempt).await {
            tracing::warn!(replay = %run.id, event = %item.event_id, error = %err, "recording a replay attempt failed");
        }
        if let Some(inline) = result.inline_receipt.as_ref().filter(|_| ok) {
            self.receipts.accept_inline(&item.event_id, inline, now).await;
        }
        let mut done = item_result(item.seq, if ok { "succeeded" } else { "failed" }, now);
        done.status_code = result.status.map(i64::from);
        done.latency_ms = Some(result.latency_ms);
        done.error = result.error;
        run.finish(done).await;
    }

    /// A group-commit writer of one job's item results.
    /// Results that meet a store failure that passes are written again for up to a lease:
    /// an item left `sending` is reported interrupted when the run resumes.
    fn result_writer(&self, id: &str) -> Batcher<ItemResult, ()> {
        let store = self.store.clone();
        let id = id.to_string();
        let patience = self.settings.lease;
        Batcher::spawn(4096, 512, Workers::Shared(1), move |results: Vec<ItemResult>| {
            let store = store.clone();
            let id = id.clone();
            async move {
                if let Err(err) = retry_transient(patience, || store.record_items(&id, &results)).await {
                    tracing::error!(replay = %id, error = %err, "recording replay results failed");
                }
                vec![(); results.len()]
            }
        })
    }
}

/// One job's running state on this gateway.
struct JobRun {
    id: String,
    /// Ask the handler about a batch's unknown items before sending it.
    ask_first: bool,
    /// Another destination than the sources' own, parsed once; checked when the replay was
    /// planned, so an error here is a job stored before that check.
    destination: Option<Result<reqwest::Url, String>>,
    eligible: HashSet<Outcome>,
    /// When the job was planned (created): a resolution after it drops the item.
    planned_at: i64,
    rate: AdaptiveRate,
    /// Events whose receipts were announced since the run started.
    receipted: Mutex<HashSet<EventId>>,
    permits: Arc<Semaphore>,
    /// One permit per send task until its results are written: holding all of them means the
    /// run has nothing outstanding.
    outstanding: Arc<Semaphore>,
    results: Batcher<ItemResult, ()>,
}

impl JobRun {
    /// Whether an item may still go out, as far as its outcome goes: one of the run's
    /// eligible outcomes, and not resolved by an operator since the run was planned (a
    /// resolved event named by id goes out only when it was resolved before).
    fn still_eligible(&self, check: &SendCheck) -> bool {
        self.eligible.contains(&check.outcome) && check.resolved_at.is_none_or(|at| at < self.planned_at)
    }

    fn note_receipts(&self, bus: &mut broadcast::Receiver<EventId>) {
        let mut receipted = self.receipted.lock().expect("receipted lock");
        loop {
            match bus.try_recv() {
                Ok(id) => {
                    receipted.insert(id);
                }
                // Missed announcements are harmless: the batch re-read and the check before the send decide.
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    }

    async fn finish(&self, result: ItemResult) {
        self.results.submit(result).await;
    }

    /// Waits until every send of this run has finished.
    async fn drain(&self) {
        let all = self.outstanding.acquire_many(MAX_OUTSTANDING).await;
        drop(all);
    }
}

/// Where an item was dropped for a receipt recorded after the run started.
#[derive(Debug, Clone, Copy)]
enum Skip {
    /// The re-read of every remaining item before a batch.
    Batch,
    /// The receipt was announced on the bus (this gateway's, or another's through NOTIFY).
    Announced,
    /// The check just before the send.
    AtSend,
}

/// Counts a drop in `hookwarden_replay_skipped_receipts_total{at}`: each layer can be seen
/// doing its part (the tests look).
fn skipped(at: Skip) {
    let at = match at {
        Skip::Batch => "batch",
        Skip::Announced => "announced",
        Skip::AtSend => "send",
    };
    metrics::counter!("hookwarden_replay_skipped_receipts_total", "at" => at).increment(1);
}

fn item_result(seq: i64, state: &'static str, at: i64) -> ItemResult {
    ItemResult { seq, state, status_code: None, latency_ms: None, error: None, at }
}
