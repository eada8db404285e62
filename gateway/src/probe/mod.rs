//! The status probe, gateway side (docs/status-probe.md): asking a source's handler which of
//! some `unknown` events it applied or failed, and checking its answer.
//!
//! [`Prober::ask`] sends one probe (at most 100 events) and checks every entry of the answer
//! exactly as a posted receipt is checked (`receipts::ReceiptDesk::check`), plus that the
//! entry's event was one this probe asked about. It records nothing: the replay executor
//! records what passed (ask first), a reconcile records it with its audit entry in one
//! transaction ([`reconcile`]), a dry run only counts it ([`preview`]). A probe that fails (timeout, transport, a status other than 200, a malformed answer)
//! fails as a whole and settles nothing; its caller counts it and goes on.
//!
//! Architecture invariant: nothing here waits on a handler while holding a database
//! connection, a transaction or a lock; answers are recorded after the probe ended.

pub mod client;
pub mod preview;
pub mod reconcile;

use std::sync::Arc;

use receipts_sdk::probe::MAX_EVENT_IDS;
use receipts_sdk::receipt::{self as format, ReceiptError, ReceiptHeaders};

pub use client::{ProbeClient, ProbeFailure};

use crate::clock::SharedClock;
use crate::config::SourceConfig;
use crate::domain::EventId;
use crate::receipts::{Asked, ReceiptDesk, Refusal, Via};
use crate::store::NewReceipt;

/// Events asked per probe (the wire format's most).
pub const PROBE_BATCH: usize = MAX_EVENT_IDS;

/// One probe's answer, checked entry by entry; nothing recorded yet.
#[derive(Debug, Default)]
pub struct Answered {
    /// Entries that passed every check but the receipt id's (the write makes that one).
    pub passed: Vec<NewReceipt>,
    /// The codes of the entries refused, one per entry.
    pub rejected: Vec<&'static str>,
}

/// Asks handlers; shared by the replay executor and the admin API.
pub struct Prober {
    client: ProbeClient,
    desk: Arc<ReceiptDesk>,
    clock: SharedClock,
}

impl Prober {
    pub fn new(desk: Arc<ReceiptDesk>, clock: SharedClock) -> Arc<Self> {
        Arc::new(Self { client: ProbeClient::new(), desk, clock })
    }

    pub fn desk(&self) -> &Arc<ReceiptDesk> {
        &self.desk
    }

    /// Asks `source`'s handler about `ids` (1 to [`PROBE_BATCH`], all of that source) and
    /// checks its answer; a source without `status_url` is a failed probe.
    pub async fn ask(&self, source: &SourceConfig, ids: &[EventId]) -> Result<Answered, ProbeFailure> {
        debug_assert!(!ids.is_empty() && ids.len() <= PROBE_BATCH);
        let Some(url) = &source.status_url else {
            return Err(ProbeFailure::Transport(format!("source `{}` has no status_url", source.name)));
        };
        let started = std::time::Instant::now();
        let answer = self
            .client
            .ask(client::ProbeCall {
                url,
                source: &source.name,
                secret: &source.signing_secret,
                event_ids: ids.iter().map(|id| id.to_string()).collect(),
                timeout: source.status_timeout,
                now_secs: self.clock.now_secs(),
            })
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(failure) => {
                metrics::counter!("hookwarden_probes_total", "result" => failure.kind()).increment(1);
                tracing::warn!(source = %source.name, asked = ids.len(), error = %failure, "status probe failed");
                return Err(failure);
            }
        };
        metrics::counter!("hookwarden_probes_total", "result" => "answered").increment(1);
        metrics::histogram!("hookwarden_probe_latency_seconds").record(started.elapsed().as_secs_f64());
        let asked: Asked = ids.iter().cloned().collect();
        let now_ms = self.clock.now_ms();
        // The entries are checked together, so their event lookups share the lookup batcher's
        // queries instead of waiting for one batch each (a probe answers up to 100).
        let checks = answer.receipts.iter().map(|entry| {
            let asked = &asked;
            async move {
                let body = entry.get(format::HEADER_BODY).map(format::decode_inline_body);
                match (ReceiptHeaders::read(|name| entry.get(name)), body) {
                    (Ok(headers), Some(Ok(body))) => {
                        self.desk.check(headers, &body, now_ms, Via::Probe, Some(asked)).await
                    }
                    (Err(err), _) | (_, Some(Err(err))) => Err(Refusal::Format(err)),
                    (_, None) => Err(Refusal::Format(ReceiptError::MissingHeader(format::HEADER_BODY))),
                }
            }
        });
        let mut checked = Answered::default();
        for result in futures_util::future::join_all(checks).await {
            match result {
                Ok(receipt) => checked.passed.push(receipt),
                Err(refusal) => {
                    metrics::counter!("hookwarden_probe_entries_refused_total", "code" => refusal.code()).increment(1);
                    tracing::warn!(source = %source.name, code = refusal.code(), reason = %refusal, "probe answer entry refused");
                    checked.rejected.push(refusal.code());
                }
            }
        }
        Ok(checked)
    }

    /// [`Self::ask`] over any number of events, [`PROBE_BATCH`] per probe, up to
    /// `concurrency` probes at once; one result per probe, with the events it asked.
    pub async fn ask_all(
        self: &Arc<Self>,
        source: &SourceConfig,
        ids: &[EventId],
        concurrency: usize,
    ) -> Vec<(Vec<EventId>, Result<Answered, ProbeFailure>)> {
        let source = Arc::new(source.clone());
        let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        // A probe whose task never reports (it panicked) counts as failed, not as unasked.
        let mut results: Vec<(Vec<EventId>, Result<Answered, ProbeFailure>)> = Vec::new();
        for (n, chunk) in ids.chunks(PROBE_BATCH).enumerate() {
            results.push((chunk.to_vec(), Err(ProbeFailure::Transport("the probe task failed".into()))));
            let (me, source, limit, chunk) = (self.clone(), source.clone(), limit.clone(), chunk.to_vec());
            tasks.spawn(async move {
                let _turn = limit.acquire_owned().await.expect("never closed");
                (n, me.ask(&source, &chunk).await)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((n, result)) => results[n].1 = result,
                Err(err) => tracing::error!(error = %err, "a probe task failed"),
            }
        }
        results
    }
}
