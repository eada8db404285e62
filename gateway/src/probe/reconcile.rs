//! Reconcile: ask a source's handler about every `unknown` event of a window and record what
//! it answers, without replaying anything (`POST /v1/reconcile`, `hookwarden reconcile`).
//!
//! The receipts the answers carried and the audit entry with the reconcile's counts commit
//! in one transaction: a reconcile that is not in the audit log settled nothing. The counts
//! add up: every unknown event of the window is either asked or left over (`limit`), every
//! asked one is settled (`confirmed`, `failed`), was already settled meanwhile (`duplicate`),
//! or stays `unknown` (left out of the answer, refused, or in a probe that failed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Prober;
use crate::access::{Role, SourceScope};
use crate::config::SourceConfig;
use crate::domain::{EventId, Outcome};
use crate::replay::plan::and_scope;
use crate::store::{NewAuditEntry, NewReceipt, Recorded, Selection, SqlParam, Store, StoreError};

/// Unknown events asked per reconcile unless `limit` says otherwise.
pub const DEFAULT_LIMIT: i64 = 10_000;
/// The most one reconcile asks about (its answers are recorded in one transaction).
pub const MAX_LIMIT: i64 = 50_000;
/// Probes in flight at once.
const CONCURRENCY: usize = 4;
/// Probe failures quoted in the report (the count has them all).
const FAILURES_SHOWN: usize = 5;

/// `POST /v1/reconcile`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    pub source: String,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive; now when absent.
    pub until: Option<String>,
    /// Most unknown events to ask about (default 10,000, at most 50,000).
    pub limit: Option<i64>,
}

/// Why a reconcile could not run; each maps to one status and code.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reconcile needs the operator role")]
    Forbidden,
    #[error("this token may not act on source `{0}`")]
    SourceForbidden(String),
    #[error("no source named `{0}`")]
    SourceUnknown(String),
    #[error("source `{0}` has no status_url: its handler cannot be asked")]
    NoStatusUrl(String),
    #[error("a reconcile needs a window: `since` (and optionally `until`)")]
    ScopeMissing,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReconcileError {
    pub fn code(&self) -> &'static str {
        match self {
            ReconcileError::Forbidden => "role_insufficient",
            ReconcileError::SourceForbidden(_) => "source_forbidden",
            ReconcileError::SourceUnknown(_) => "source_unknown",
            ReconcileError::NoStatusUrl(_) => "status_url_missing",
            ReconcileError::ScopeMissing => "scope_required",
            ReconcileError::Invalid(_) => "invalid_request",
            ReconcileError::Store(_) => "store_unavailable",
        }
    }
}

/// What a reconcile did; every number is an event count unless it says probes or entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReconcileReport {
    /// `unknown` events in the window when it started.
    pub unknown_in_window: i64,
    /// Events asked about (at most `limit`).
    pub asked: i64,
    /// Unknown events of the window not asked: past `limit`. Run again to ask them.
    pub not_asked: i64,
    pub probes: i64,
    pub probes_failed: i64,
    /// Events asked in probes that failed.
    pub in_failed_probes: i64,
    /// Answer entries received, and of them refused (by code).
    pub entries: i64,
    pub entries_refused: i64,
    pub refused_by_code: BTreeMap<String, i64>,
    /// Events the answers settled: now `confirmed` or `failed`.
    pub confirmed: i64,
    pub failed: i64,
    /// Events whose answered receipt the ledger already had (settled meanwhile).
    pub duplicate: i64,
    /// Asked events that are still `unknown`.
    pub still_unknown: i64,
    /// The first probe failures, as said.
    pub failures: Vec<String>,
}

impl ReconcileReport {
    /// Every unknown event of the window was asked, every probe answered, every entry taken.
    pub fn complete(&self) -> bool {
        self.not_asked == 0 && self.probes_failed == 0 && self.entries_refused == 0
    }
}

/// Who asks, and in the name of which token.
pub struct Caller<'a> {
    pub name: &'a str,
    pub role: Role,
    pub scope: &'a SourceScope,
}

/// Runs a reconcile: checks the request, asks the handler, records the answers with the
/// audit entry. `now_ms` is the gateway's clock (the window's default end).
pub async fn reconcile(
    prober: &Arc<Prober>,
    store: &Store,
    sources: &HashMap<String, SourceConfig>,
    request: ReconcileRequest,
    caller: Caller<'_>,
    now_ms: i64,
) -> Result<(ReconcileReport, ReconcileRequest), ReconcileError> {
    if caller.role < Role::Operator {
        return Err(ReconcileError::Forbidden);
    }
    if !caller.scope.allows(&request.source) {
        return Err(ReconcileError::SourceForbidden(request.source.clone()));
    }
    let source = sources.get(&request.source).ok_or_else(|| ReconcileError::SourceUnknown(request.source.clone()))?;
    if source.status_url.is_none() {
        return Err(ReconcileError::NoStatusUrl(source.name.clone()));
    }
    let since_text = request.since.as_deref().ok_or(ReconcileError::ScopeMissing)?;
    let parse = |field: &str, text: &str| {
        crate::timestamp::parse_rfc3339(field, text).map_err(|e| ReconcileError::Invalid(e.to_string()))
    };
    let since = parse("since", since_text)?;
    let until = request.until.as_deref().map(|u| parse("until", u)).transpose()?.unwrap_or(now_ms);
    if since >= until {
        return Err(ReconcileError::Invalid("`since` must be before `until`".into()));
    }
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ReconcileError::Invalid(format!("`limit` must be 1 to {MAX_LIMIT}")));
    }
    let mut request = request;
    request.until = Some(crate::timestamp::format_ms(until));

    let mut selection = Selection::default();
    selection.and("source = ?", vec![SqlParam::Text(source.name.clone())]);
    and_scope(&mut selection, caller.scope);
    selection.and("received_at >= ? AND received_at < ?", vec![SqlParam::Int(since), SqlParam::Int(until)]);
    selection.and("outcome = ?", vec![SqlParam::Text(Outcome::Unknown.as_str().into())]);
    let unknown_in_window = store.outcome_counts(&selection).await?.get(&Outcome::Unknown).copied().unwrap_or(0);
    let ids = store.event_ids(&selection, limit).await?;

    let mut report = ReconcileReport {
        unknown_in_window,
        asked: ids.len() as i64,
        not_asked: (unknown_in_window - ids.len() as i64).max(0),
        ..ReconcileReport::default()
    };
    let mut passed: Vec<NewReceipt> = Vec::new();
    for (chunk, result) in prober.ask_all(source, &ids, CONCURRENCY).await {
        report.probes += 1;
        match result {
            Ok(answered) => {
                report.entries += (answered.passed.len() + answered.rejected.len()) as i64;
                for code in answered.rejected {
                    refused(&mut report, code);
                }
                passed.extend(answered.passed);
            }
            Err(failure) => {
                report.probes_failed += 1;
                report.in_failed_probes += chunk.len() as i64;
                if report.failures.len() < FAILURES_SHOWN {
                    report.failures.push(failure.to_string());
                }
            }
        }
    }

    // The answers and the audit entry, in one transaction. The entry's counts are those of
    // what the write did, so it is made inside it.
    let actor = caller.name.to_string();
    let asked_request = request.clone();
    let base = report.clone();
    let batch = passed.clone();
    let at = now_ms;
    let entry = move |recorded: &[Recorded]| {
        let mut counts = base.clone();
        settle(&mut counts, &batch, recorded);
        NewAuditEntry {
            at,
            actor: actor.clone(),
            action: "reconcile".into(),
            subject: Some(asked_request.source.clone()),
            details: json!({ "request": asked_request, "counts": counts }),
        }
    };
    let recorded = store.record_receipts_audited(&passed, Some(&entry)).await?;
    settle(&mut report, &passed, &recorded);
    for (receipt, outcome) in passed.into_iter().zip(recorded) {
        // Only `announce`'s telling the bus and the metrics: the counts are made already.
        let _ = prober.desk().announce(receipt, outcome);
    }
    Ok((report, request))
}

fn refused(report: &mut ReconcileReport, code: &str) {
    report.entries_refused += 1;
    *report.refused_by_code.entry(code.to_string()).or_default() += 1;
}

/// Counts what recording the answers did, per event (an event answered twice counts once,
/// by its last receipt's outcome).
fn settle(report: &mut ReconcileReport, batch: &[NewReceipt], recorded: &[Recorded]) {
    let mut outcomes: HashMap<&EventId, Outcome> = HashMap::new();
    let mut repeats: HashSet<&EventId> = HashSet::new();
    for (receipt, result) in batch.iter().zip(recorded) {
        match result {
            Recorded::New(outcome) => {
                outcomes.insert(&receipt.event_id, *outcome);
            }
            Recorded::Repeat(_) => {
                repeats.insert(&receipt.event_id);
            }
            Recorded::IdConflict => refused(report, "receipt_id_conflict"),
        }
    }
    for outcome in outcomes.values() {
        match outcome {
            Outcome::Confirmed => report.confirmed += 1,
            Outcome::Failed => report.failed += 1,
            // A receipt never resolves; an operator's resolution made meanwhile is not the probe's.
            Outcome::Unknown | Outcome::Resolved => {}
        }
    }
    report.duplicate = repeats.iter().filter(|id| !outcomes.contains_key(**id)).count() as i64;
    report.still_unknown = report.asked - report.confirmed - report.failed - report.duplicate;
}
