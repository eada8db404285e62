//! The dispatcher: claims due deliveries from the store, forwards them with bounded
//! concurrency, and writes each result back with the next rung of the ladder.
//!
//! [`Dispatcher::step`] is one pass; [`Dispatcher::run`] is the loop around it, woken early
//! by new ingests and otherwise polling every `poll_interval`. On SQLite, new events arrive
//! from the group commit through a queue (`store::handoff`), and the store is claimed from
//! every `poll_interval` (for retries) or when that queue overflowed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use tokio::sync::{Notify, Semaphore, watch};

use super::health::{self, SourceHealth};
use super::{ForwardRequest, Forwarder, NextStep, idempotency_key};
use crate::clock::SharedClock;
use crate::config::{Config, DeliveryConfig, LEASE_MARGIN, SourceConfig};
use crate::domain::{AttemptKind, EventId};
use crate::receipts::ReceiptDesk;
use crate::store::{AttemptRecord, CommitQueue, Completion, DueDelivery, FreshDeliveries, Store, StoreError};
use crate::telemetry;
use tracing::Instrument;

/// Most deliveries claimed in one pass.
const CLAIM_BATCH: usize = 128;
/// When an event's source was removed from the config, look again this much later.
const ORPHAN_RETRY_MS: i64 = 3_600_000;

struct Lane {
    source: SourceConfig,
    permits: Arc<Semaphore>,
}

pub struct Dispatcher {
    store: Store,
    lanes: HashMap<String, Lane>,
    forwarder: Forwarder,
    settings: DeliveryConfig,
    /// This gateway's name on leases and attempts.
    gateway_id: String,
    clock: SharedClock,
    wake: Arc<Notify>,
    in_flight: Arc<Semaphore>,
    commits: CommitQueue,
    receipts: Arc<ReceiptDesk>,
    /// New events from the group commit (SQLite); without it every pass claims from the store.
    fresh: Option<FreshDeliveries>,
    /// When the store is next claimed from, given a queue of fresh events.
    next_claim: Mutex<Instant>,
    /// Events this gateway is delivering now. One whose lease ran out while it waited for
    /// its source's turn can be claimed again, by this gateway too: that claim is dropped
    /// here, the delivery already under way goes on (and renews the lease before it sends).
    delivering: Mutex<HashSet<EventId, foldhash::fast::RandomState>>,
    /// Tells the log when a source's deliveries start failing and when they recover.
    health: SourceHealth,
}

/// Lets the ingest path nudge the dispatcher after a commit.
#[derive(Clone)]
pub struct DispatcherHandle {
    wake: Arc<Notify>,
}

impl DispatcherHandle {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

impl Dispatcher {
    /// `wake` is the dispatcher's nudge; the hand-off of `fresh` events (if any) shares it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        commits: CommitQueue,
        config: &Config,
        receipts: Arc<ReceiptDesk>,
        clock: SharedClock,
        gateway_id: String,
        wake: Arc<Notify>,
        fresh: Option<FreshDeliveries>,
    ) -> Arc<Self> {
        let lanes = config
            .sources
            .iter()
            .map(|s| (s.name.clone(), Lane { source: s.clone(), permits: Arc::new(Semaphore::new(s.max_in_flight)) }))
            .collect();
        Arc::new(Self {
            store,
            lanes,
            forwarder: Forwarder::new(config.delivery.timeout),
            settings: config.delivery.clone(),
            gateway_id,
            clock,
            wake,
            in_flight: Arc::new(Semaphore::new(config.delivery.max_in_flight)),
            commits,
            receipts,
            fresh,
            next_claim: Mutex::new(Instant::now()),
            delivering: Mutex::new(HashSet::default()),
            health: SourceHealth::new(health::TELL_EVERY),
        })
    }

    pub fn handle(&self) -> DispatcherHandle {
        DispatcherHandle { wake: self.wake.clone() }
    }

    /// Delivers until `shutdown` turns true, then waits for deliveries in flight and gives
    /// back the leases it still holds.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let claimed = tokio::select! {
                result = self.step() => result,
                _ = shutdown.changed() => break,
            };
            match claimed {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "claiming due deliveries failed"),
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
                _ = shutdown.changed() => {}
            }
        }
        let all = self.settings.max_in_flight as u32;
        let _ = tokio::time::timeout(self.settings.timeout, self.in_flight.acquire_many(all)).await;
        if let Err(err) = self.store.release_leases(Some(&self.gateway_id)).await {
            tracing::warn!(error = %err, "releasing leases at shutdown failed");
        }
    }

    /// One pass: waits for room, takes fresh events and claims what is due (as much as there
    /// is room for) and starts each delivery. Returns how many it started.
    pub async fn step(self: &Arc<Self>) -> Result<usize, StoreError> {
        let first = self.in_flight.clone().acquire_owned().await.expect("semaphore never closed");
        let room = (1 + self.in_flight.available_permits()).min(CLAIM_BATCH);
        let now = self.clock.now_ms();
        let lease_until = now + self.settings.lease.as_millis() as i64;
        let mut due = match &self.fresh {
            Some(fresh) => fresh.take(room),
            None => Vec::new(),
        };
        self.store.lease_taken(&due, &self.gateway_id, lease_until);
        if due.len() < room && self.claim_now() {
            let wanted = room - due.len();
            let claimed = self.store.claim_due(&self.gateway_id, now, lease_until, wanted as i64).await?;
            if self.fresh.is_some() {
                // A full claim may have left more behind: claim again at once.
                let next =
                    if claimed.len() < wanted { Instant::now() + self.settings.poll_interval } else { Instant::now() };
                *self.next_claim.lock().expect("claim time") = next;
            }
            due.extend(claimed);
        }
        let mut started = 0;
        let mut first = Some(first);
        for delivery in due {
            if !self.delivering.lock().expect("delivering set").insert(delivery.event_id.clone()) {
                continue;
            }
            started += 1;
            let permit = match first.take() {
                Some(permit) => permit,
                None => self.in_flight.clone().acquire_owned().await.expect("semaphore never closed"),
            };
            let me = self.clone();
            // Boxed: a forward's future is kilobytes, which the runtime would otherwise copy
            // by value into the task and again on completion (a visible share of CPU per event).
            let span = tracing::info_span!("deliver", event_id = %delivery.event_id, source = %delivery.source);
            telemetry::under_event(&span, delivery.event_id.as_str());
            tokio::spawn(Box::pin(async move {
                let event = delivery.event_id.clone();
                me.deliver(delivery, lease_until).instrument(span).await;
                me.delivering.lock().expect("delivering set").remove(&event);
                drop(permit);
            }));
        }
        metrics::gauge!("hookwarden_deliveries_in_flight")
            .set((self.settings.max_in_flight - self.in_flight.available_permits()) as f64);
        Ok(started)
    }

    /// Whether this pass claims from the store: always without a queue of fresh events;
    /// with one, when it overflowed or a poll interval passed (retries come due in the store).
    fn claim_now(&self) -> bool {
        let Some(fresh) = &self.fresh else { return true };
        fresh.missed() || Instant::now() >= *self.next_claim.lock().expect("claim time")
    }

    /// Delivers `due`, claimed under a lease until `lease_until`.
    async fn deliver(&self, mut due: DueDelivery, lease_until: i64) {
        let Some(lane) = self.lanes.get(&due.source) else {
            tracing::warn!(event = %due.event_id, source = %due.source, "event of a source no longer configured");
            let now = self.clock.now_ms();
            let mut record = self.attempt(&due, now, Completion::RetryAt(now + ORPHAN_RETRY_MS));
            record.error = Some("source not configured".into());
            self.record(record).await;
            return;
        };
        let lane_permit = lane.permits.acquire().await.expect("semaphore never closed");
        if !self.keep_lease(&due.event_id, lease_until).await {
            return;
        }
        // A retry whose receipt was recorded since it was scheduled is not sent. The check is
        // the send's decision and holds nothing while the handler answers: a receipt recorded
        // after it finds the send decided, and the result below does not undo the receipt.
        // The attempt starts with the check: its `started_at` is never later than the check.
        let started_at = self.clock.now_ms();
        if due.ladder_attempts > 0 {
            match self.store.check_before_send(&due.event_id).await {
                // An operator's resolution settles the event too: no retry after it.
                Ok(check) if check.receipts == 0 && check.resolved_at.is_none() => {}
                checked => {
                    if let Err(err) = checked {
                        tracing::warn!(event = %due.event_id, error = %err, "checking for a receipt failed");
                    }
                    if let Err(err) = self.store.release_lease(&due.event_id, &self.gateway_id).await {
                        tracing::warn!(event = %due.event_id, error = %err, "releasing a lease failed");
                    }
                    return;
                }
            }
        }
        let key = idempotency_key(&due.source, &due.dedup_key);
        let result = self
            .forwarder
            .send(ForwardRequest {
                url: &lane.source.forward_url,
                event_id: due.event_id.as_str(),
                source: &due.source,
                idempotency_key: &key,
                attempt: due.attempts + 1,
                replay_id: None,
                original_headers: &due.headers,
                body: Bytes::from(std::mem::take(&mut due.body)),
                secret: &lane.source.signing_secret,
                now_secs: started_at.div_euclid(1000),
            })
            .await;
        // The source's limit is on requests its handler has in flight; this one is over, and
        // waiting for the group commit of its result must not hold the next one back.
        drop(lane_permit);
        let now = self.clock.now_ms();
        let told = if result.succeeded() {
            self.health.succeeded(&due.source, now)
        } else {
            self.health.failed(&due.source, &health::cause(result.status, result.error.as_deref()), now)
        };
        if let Some(line) = told {
            line.log();
        }
        let completion = if result.succeeded() {
            Completion::Delivered { at: now }
        } else {
            let made = (due.ladder_attempts + 1) as u32;
            let honoured = matches!(result.status, Some(429 | 503));
            let retry_after = result.retry_after.filter(|_| honoured);
            let jitter_unit: f64 = rand::random_range(-1.0..=1.0);
            match lane.source.ladder.after_failure(made, self.settings.jitter, jitter_unit, retry_after) {
                NextStep::RetryIn(ms) => Completion::RetryAt(now + ms),
                NextStep::GiveUp => Completion::Exhausted,
            }
        };
        let label = match completion {
            Completion::Delivered { .. } => "delivered",
            Completion::RetryAt(_) => "retry",
            Completion::Exhausted => "exhausted",
            Completion::Replayed { .. } => "replayed",
        };
        metrics::counter!("hookwarden_delivery_attempts_total", "source" => due.source.clone(), "result" => label)
            .increment(1);
        metrics::histogram!("hookwarden_delivery_latency_seconds").record(result.latency_ms as f64 / 1000.0);
        let inline = result.inline_receipt.clone().filter(|_| result.succeeded());
        let mut record = self.attempt(&due, started_at, completion);
        record.latency_ms = result.latency_ms;
        record.status_code = result.status.map(i64::from);
        record.error = result.error;
        record.response_excerpt = result.excerpt;
        record.confirm_without_receipt = lane.source.no_receipt_reason(due.event_type.as_deref());
        self.record(record).await;
        if let Some(inline) = inline {
            self.receipts.accept_inline(&due.event_id, &inline, self.clock.now_ms()).await;
        }
    }

    /// Whether this gateway still holds the lease on `event` for long enough to send it: the
    /// wait for the source's turn may have used up the lease taken at the claim. When what is
    /// left would not outlast the forward and [`LEASE_MARGIN`], the lease is renewed; a lease
    /// that passed to another gateway meanwhile means that gateway sends the event, not this
    /// one.
    async fn keep_lease(&self, event: &EventId, lease_until: i64) -> bool {
        let now = self.clock.now_ms();
        if lease_until - now >= (self.settings.timeout + LEASE_MARGIN).as_millis() as i64 {
            return true;
        }
        let until = now + self.settings.lease.as_millis() as i64;
        match self.store.renew_lease(event, &self.gateway_id, until).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(%event, "lease passed to another gateway while waiting for the source's turn; not sent here");
                false
            }
            Err(err) => {
                tracing::warn!(%event, error = %err, "renewing a lease failed; the event is left to be claimed again");
                false
            }
        }
    }

    /// A scheduled attempt of `due` started at `started_at`, to be filled in.
    fn attempt(&self, due: &DueDelivery, started_at: i64, completion: Completion) -> AttemptRecord {
        AttemptRecord {
            event_id: due.event_id.clone(),
            gateway: self.gateway_id.clone(),
            kind: AttemptKind::Scheduled,
            replay_id: None,
            started_at,
            latency_ms: 0,
            status_code: None,
            error: None,
            response_excerpt: None,
            completion,
            confirm_without_receipt: None,
        }
    }

    async fn record(&self, record: AttemptRecord) {
        let event = record.event_id.clone();
        match self.commits.attempt(record).await {
            Some(Ok(true)) => {}
            Some(Ok(false)) => {
                tracing::info!(%event, "lease passed to another gateway before the result was written")
            }
            Some(Err(err)) => {
                tracing::warn!(%event, error = %err, "recording an attempt failed; the lease will expire and the event be retried")
            }
            None => tracing::warn!(%event, "attempt writer stopped"),
        }
    }
}
