//! Accepting a receipt, whichever way it came (`POST /v1/receipts`, inline on a handler's
//! 2xx, or in the answer to a status probe): the checks in their order, and the one call that
//! records it.
//!
//! The order is the contract: headers, key known and not revoked, timestamp, signature (all
//! 401), body (400), event (404), key allowed for the event's source (403); for a probe's
//! answer also the event being one that probe asked about; the receipt id not used for
//! another receipt (409). Nothing is written unless every check passed. The format itself is
//! `receipts_sdk::receipt`.

use std::collections::{HashMap, HashSet};
use tracing::Instrument;

use axum::http::StatusCode;
use ed25519_dalek::VerifyingKey;
use receipts_sdk::receipt::{self as format, Receipt, ReceiptError, ReceiptHeaders};

use crate::config::SourceConfig;
use crate::delivery::InlineReceipt;
use crate::domain::{EventId, Outcome};
use crate::store::{Batcher, NewReceipt, Recorded, Store, StoreError, Workers};
use tokio::sync::broadcast;

/// The receipt keys of every source: which public key an id names, and where it may confirm.
#[derive(Debug, Default)]
pub struct ReceiptKeys {
    keys: HashMap<String, KeyEntry>,
}

#[derive(Debug)]
struct KeyEntry {
    public: VerifyingKey,
    /// Source name → revoked on that source.
    sources: HashMap<String, bool>,
}

impl ReceiptKeys {
    /// Indexes the configured keys. Config loading already checked that each key decodes;
    /// one id must name one public key everywhere.
    pub fn from_sources(sources: &[SourceConfig]) -> Result<Self, String> {
        let mut keys: HashMap<String, KeyEntry> = HashMap::new();
        for source in sources {
            for key in &source.receipt_keys {
                let public = receipts_sdk::webhook::decode_public_key(&key.public_key)
                    .ok_or_else(|| format!("receipt key `{}` is not an ed25519 public key", key.id))?;
                let entry = keys.entry(key.id.clone()).or_insert_with(|| KeyEntry { public, sources: HashMap::new() });
                if entry.public != public {
                    return Err(format!("receipt key id `{}` names two different public keys", key.id));
                }
                entry.sources.insert(source.name.clone(), key.revoked);
            }
        }
        Ok(Self { keys })
    }
}

/// Which way a receipt came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Post,
    Inline,
    /// In the answer to a status probe (docs/status-probe.md).
    Probe,
}

impl Via {
    /// As the ledger's `via` column shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Post => "post",
            Via::Inline => "inline",
            Via::Probe => "probe",
        }
    }
}

/// The events a probe asked about: the only ones its answer may settle.
pub type Asked = HashSet<EventId>;

/// Why a receipt was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Format(ReceiptError),
    #[error("no source has a receipt key `{0}`")]
    KeyUnknown(String),
    #[error("receipt key `{0}` is revoked")]
    KeyRevoked(String),
    #[error("no event `{0}`")]
    EventUnknown(String),
    #[error("receipt key `{key}` may not confirm events of source `{source_name}`")]
    KeyForbidden { key: String, source_name: String },
    #[error("event `{0}` was not asked about in this probe")]
    ProbeEventUnasked(String),
    #[error("receipt id `{0}` was already used for a different receipt")]
    IdConflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Format(ReceiptError::Malformed(_) | ReceiptError::BadInlineBody) => StatusCode::BAD_REQUEST,
            Refusal::Format(_) | Refusal::KeyUnknown(_) | Refusal::KeyRevoked(_) => StatusCode::UNAUTHORIZED,
            Refusal::EventUnknown(_) => StatusCode::NOT_FOUND,
            Refusal::KeyForbidden { .. } | Refusal::ProbeEventUnasked(_) => StatusCode::FORBIDDEN,
            Refusal::IdConflict(_) => StatusCode::CONFLICT,
            Refusal::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Format(e) => e.code(),
            Refusal::KeyUnknown(_) => "receipt_key_unknown",
            Refusal::KeyRevoked(_) => "receipt_key_revoked",
            Refusal::EventUnknown(_) => "event_unknown",
            Refusal::KeyForbidden { .. } => "receipt_key_forbidden",
            Refusal::ProbeEventUnasked(_) => "probe_event_unasked",
            Refusal::IdConflict(_) => "receipt_id_conflict",
            Refusal::Store(_) => "store_unavailable",
        }
    }
}

/// A recorded receipt.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub event_id: EventId,
    pub receipt_id: String,
    pub outcome: Outcome,
    /// The same receipt had been recorded before.
    pub repeat: bool,
}

/// Where receipts are accepted: the keys, the store and the bus that tells running replays
/// about new receipts. Recording one waits for nothing but its own group commit: no send
/// holds anything a receipt needs (see `Store::check_before_send`).
pub struct ReceiptDesk {
    pub store: Store,
    pub keys: ReceiptKeys,
    pub bus: broadcast::Sender<EventId>,
    /// Group commit of receipts: concurrent receipts share one transaction and one fsync.
    writer: Batcher<NewReceipt, Result<Recorded, String>>,
    /// Concurrent receipts' event lookups share one query.
    lookups: Batcher<EventId, Result<Option<String>, String>>,
}

/// Largest group-committed batch of receipts.
const RECEIPT_BATCH: usize = 256;

impl ReceiptDesk {
    pub fn new(store: Store, keys: ReceiptKeys, bus: broadcast::Sender<EventId>) -> Self {
        let batch_store = store.clone();
        let workers = Workers::Shared(if store.backend() == crate::store::Backend::Postgres { 4 } else { 1 });
        let writer = Batcher::spawn(8192, RECEIPT_BATCH, workers, move |batch: Vec<NewReceipt>| {
            let store = batch_store.clone();
            async move {
                match store.record_receipts(&batch).await {
                    Ok(recorded) => recorded.into_iter().map(Ok).collect(),
                    Err(err) => batch.iter().map(|_| Err(err.to_string())).collect(),
                }
            }
        });
        let lookup_store = store.clone();
        let lookups = Batcher::spawn(8192, RECEIPT_BATCH, Workers::Shared(2), move |ids: Vec<EventId>| {
            let store = lookup_store.clone();
            async move {
                match store.event_sources(&ids).await {
                    Ok(sources) => sources.into_iter().map(Ok).collect(),
                    Err(err) => ids.iter().map(|_| Err(err.to_string())).collect(),
                }
            }
        });
        Self { store, keys, bus, writer, lookups }
    }

    /// Checks a receipt in the contract's order and records it.
    pub async fn accept(
        &self,
        headers: ReceiptHeaders<'_>,
        body: &[u8],
        now_ms: i64,
        via: Via,
    ) -> Result<Accepted, Refusal> {
        let record = self.check(headers, body, now_ms, via, None).await?;
        self.record(record).await
    }

    /// Every check but the last (the receipt id's, which the write makes), in the contract's
    /// order; for a probe's answer (`asked`) also that the event was one the probe asked
    /// about. Writes nothing: the receipt as it would be written.
    pub async fn check(
        &self,
        headers: ReceiptHeaders<'_>,
        body: &[u8],
        now_ms: i64,
        via: Via,
        asked: Option<&Asked>,
    ) -> Result<NewReceipt, Refusal> {
        let key = self.keys.keys.get(headers.key_id).ok_or_else(|| Refusal::KeyUnknown(headers.key_id.to_string()))?;
        if key.sources.values().all(|revoked| *revoked) {
            return Err(Refusal::KeyRevoked(headers.key_id.to_string()));
        }
        headers.check_timestamp(now_ms.div_euclid(1000)).map_err(Refusal::Format)?;
        headers.verify_signature(body, &key.public).map_err(Refusal::Format)?;
        let receipt = Receipt::parse(body).map_err(Refusal::Format)?;
        let unknown = || Refusal::EventUnknown(receipt.event_id.clone());
        let event_id = EventId::parse(&receipt.event_id).ok_or_else(unknown)?;
        let source = match self.lookups.submit(event_id.clone()).await {
            Some(Ok(source)) => source.ok_or_else(unknown)?,
            Some(Err(err)) => return Err(Refusal::Store(StoreError::Batch(err))),
            None => return Err(Refusal::Store(StoreError::Closed)),
        };
        match key.sources.get(&source) {
            None => return Err(Refusal::KeyForbidden { key: headers.key_id.to_string(), source_name: source }),
            Some(true) => return Err(Refusal::KeyRevoked(headers.key_id.to_string())),
            Some(false) => {}
        }
        if let Some(asked) = asked
            && !asked.contains(&event_id)
        {
            return Err(Refusal::ProbeEventUnasked(event_id.to_string()));
        }
        let signed_secs: i64 = headers.timestamp.parse().unwrap_or_default();
        Ok(NewReceipt {
            receipt_id: headers.id.to_string(),
            event_id,
            key_id: headers.key_id.to_string(),
            status: receipt.status.as_str(),
            target_record_id: receipt.target_record_id,
            error_code: receipt.error_code,
            detail: receipt.detail,
            signed_at: signed_secs * 1000,
            received_at: now_ms,
            via: via.as_str(),
            body: String::from_utf8_lossy(body).into_owned(),
            signature: headers.signature.to_string(),
        })
    }

    /// Records a checked receipt (group commit with other receipts): the last check, the
    /// receipt id's, is made by the write.
    pub async fn record(&self, record: NewReceipt) -> Result<Accepted, Refusal> {
        let recorded = match self.writer.submit(record.clone()).await {
            Some(Ok(recorded)) => recorded,
            Some(Err(err)) => return Err(Refusal::Store(StoreError::Batch(err))),
            None => return Err(Refusal::Store(StoreError::Closed)),
        };
        self.announce(record, recorded)
    }

    /// What recording `record` did, told: running replays hear of a new receipt, the metrics
    /// count it. For receipts written some other way than [`Self::record`] (a reconcile's, in
    /// the transaction of its audit entry).
    pub fn announce(&self, record: NewReceipt, recorded: Recorded) -> Result<Accepted, Refusal> {
        let (outcome, repeat) = match recorded {
            Recorded::New(outcome) => (outcome, false),
            Recorded::Repeat(outcome) => (outcome, true),
            Recorded::IdConflict => return Err(Refusal::IdConflict(record.receipt_id)),
        };
        if !repeat {
            let _ = self.bus.send(record.event_id.clone());
        }
        let repeat_label = if repeat { "true" } else { "false" };
        metrics::counter!("hookwarden_receipts_total", "status" => record.status, "via" => record.via, "repeat" => repeat_label).increment(1);
        Ok(Accepted { event_id: record.event_id, receipt_id: record.receipt_id, outcome, repeat })
    }

    /// Records a receipt that rode on a handler's 2xx for `event`; a refused one is logged
    /// and counted, never fatal to the delivery it came with.
    pub async fn accept_inline(&self, event: &EventId, inline: &InlineReceipt, now_ms: i64) {
        let body = inline.get(format::HEADER_BODY).map(format::decode_inline_body);
        let result = match (ReceiptHeaders::read(|name| inline.get(name)), body) {
            (Ok(headers), Some(Ok(body))) => {
                let span = tracing::info_span!("receipt", via = "inline", event_id = %event);
                self.accept(headers, &body, now_ms, Via::Inline).instrument(span).await.map(|_| ())
            }
            (Err(err), _) | (_, Some(Err(err))) => Err(Refusal::Format(err)),
            (_, None) => Err(Refusal::Format(ReceiptError::MissingHeader(format::HEADER_BODY))),
        };
        if let Err(refusal) = result {
            metrics::counter!("hookwarden_inline_receipts_refused_total", "code" => refusal.code()).increment(1);
            tracing::warn!(%event, code = refusal.code(), reason = %refusal, "inline receipt refused");
        }
    }
}
