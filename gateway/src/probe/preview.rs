//! The dry run's preview of asking first: which of the `unknown` events a replay would send
//! the handler would settle, asked now and **recorded nowhere** (a dry run stays free of
//! side effects). "ask first: 12 of 89 unknown would be settled by the handler".

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::Prober;
use crate::config::SourceConfig;
use crate::domain::{EventId, Outcome};
use crate::replay::plan::ReplayPlan;
use crate::store::{Store, StoreError};

/// Probes in flight at once for a preview.
const CONCURRENCY: usize = 4;
/// The items a preview looks at, at most: the first ones a live run would send. A dry run
/// answers in a few probes' time, whatever its `limit`.
pub const PREVIEW_ITEMS: i64 = 1_000;

/// What asking first would do for a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AskFirstPreview {
    /// Whether a live run of this plan asks first.
    pub enabled: bool,
    /// Why it does not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `unknown` events among the first items the run would send (at most `limit` and
    /// [`PREVIEW_ITEMS`]).
    pub unknown: i64,
    /// Whether the run would send more items than the preview looked at.
    pub partial: bool,
    /// Of them, asked now (their source has a `status_url`).
    pub asked: i64,
    /// Of them, events the handler's answer would settle.
    pub would_settle: i64,
    pub probes: i64,
    pub probes_failed: i64,
    /// Answer entries that would be refused.
    pub refused: i64,
}

/// Asks the handlers about the unknown events a live run of `plan` would send; records
/// nothing.
pub async fn preview(
    prober: &Arc<Prober>,
    store: &Store,
    sources: &HashMap<String, SourceConfig>,
    plan: &ReplayPlan,
) -> Result<AskFirstPreview, StoreError> {
    if !plan.request.asks_first() {
        let reason = if plan.request.to.is_some() {
            "a replay to another destination (`to`) does not ask the handler"
        } else {
            "turned off (`ask_first: false`)"
        };
        return Ok(AskFirstPreview { reason: Some(reason.into()), ..AskFirstPreview::default() });
    }
    let would_send = store.sample_events(&plan.selection, plan.limit.min(PREVIEW_ITEMS)).await?;
    let mut preview =
        AskFirstPreview { enabled: true, partial: plan.eligible > PREVIEW_ITEMS, ..AskFirstPreview::default() };
    let mut by_source: HashMap<&str, Vec<EventId>> = HashMap::new();
    for event in would_send.iter().filter(|e| e.outcome == Outcome::Unknown) {
        preview.unknown += 1;
        if sources.get(&event.source).is_some_and(|s| s.status_url.is_some()) {
            by_source.entry(event.source.as_str()).or_default().push(event.id.clone());
        }
    }
    if by_source.is_empty() && preview.unknown > 0 {
        preview.enabled = false;
        preview.reason = Some("no source in scope has a status_url".into());
    }
    for (name, ids) in by_source {
        let source = sources.get(name).expect("grouped by configured sources");
        preview.asked += ids.len() as i64;
        let mut settled: HashSet<EventId> = HashSet::new();
        for (_, result) in prober.ask_all(source, &ids, CONCURRENCY).await {
            preview.probes += 1;
            match result {
                Ok(answered) => {
                    preview.refused += answered.rejected.len() as i64;
                    settled.extend(answered.passed.into_iter().map(|r| r.event_id));
                }
                Err(_) => preview.probes_failed += 1,
            }
        }
        preview.would_settle += settled.len() as i64;
    }
    Ok(preview)
}
