//! Closing gaps by hand, a selection at a time: which events a resolution would settle (the
//! dry run), and settling them, all in one transaction with one audit entry. The same
//! scope as a replay's (a window or ids, a filter, the token's sources); only `unknown` and
//! `failed` events are resolved, `confirmed` and `resolved` ones are left as they are.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::plan::{PlanError, Scope, scope_selection};
use crate::access::{Role, SourceScope};
use crate::config::SourceConfig;
use crate::domain::Outcome;
use crate::store::{NewAuditEntry, SqlParam, Store};

/// Most events one resolution settles: more is a sign the selection is wrong.
pub const MAX_RESOLVE: i64 = 10_000;
const SAMPLE: i64 = 5;

/// A resolution of a selection (`POST /v1/events/resolve`, or `hookwarden events resolve`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub event_ids: Option<Vec<String>>,
    pub filter: Option<String>,
    pub note: String,
    /// Default true: say what would be resolved, change nothing.
    pub dry_run: Option<bool>,
}

/// What a resolution did or would do.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub dry_run: bool,
    /// Every event in scope, by outcome.
    pub counts: HashMap<Outcome, i64>,
    /// The events it settles (`unknown` and `failed` ones), or would.
    pub resolving: i64,
    /// The first few, in the order received (a dry run), or every one resolved (a live run).
    pub event_ids: Vec<String>,
}

impl Resolution {
    pub fn to_json(&self) -> Value {
        let count = |o| self.counts.get(&o).copied().unwrap_or(0);
        json!({
            "dry_run": self.dry_run,
            "counts": {
                "confirmed": count(Outcome::Confirmed),
                "unknown": count(Outcome::Unknown),
                "failed": count(Outcome::Failed),
                "resolved": count(Outcome::Resolved),
            },
            "resolving": self.resolving,
            "event_ids": self.event_ids,
        })
    }
}

/// Plans a resolution and, unless it is a dry run, makes it: the events' outcomes and one
/// `events.resolved` audit entry (the note, the scope, every id) commit together. A dry run
/// is audited as `events.resolve_dry_run` (it changes nothing, so a viewer may run one).
#[allow(clippy::too_many_arguments)]
pub async fn resolve_selection(
    store: &Store,
    sources: &HashMap<String, SourceConfig>,
    request: ResolveRequest,
    actor: &str,
    role: Role,
    scope: &SourceScope,
    now_ms: i64,
) -> Result<Resolution, PlanError> {
    let dry_run = request.dry_run != Some(false);
    if !dry_run && role < Role::Operator {
        return Err(PlanError::Forbidden("resolving events needs the operator role; a viewer may dry-run".into()));
    }
    if request.note.trim().is_empty() {
        return Err(PlanError::Invalid("resolving events needs a `note` (it goes into the audit log)".into()));
    }
    let wanted = Scope {
        source: request.source.as_deref(),
        since: request.since.as_deref(),
        until: request.until.as_deref(),
        event_ids: request.event_ids.as_deref(),
        after_event: None,
        filter: request.filter.as_deref(),
    };
    let (mut selection, _) = scope_selection(store, sources, &wanted, scope, now_ms).await?;
    let counts = store.outcome_counts(&selection).await?;
    let resolving =
        counts.get(&Outcome::Unknown).copied().unwrap_or(0) + counts.get(&Outcome::Failed).copied().unwrap_or(0);
    if resolving > MAX_RESOLVE {
        return Err(PlanError::Invalid(format!(
            "the selection holds {resolving} unsettled events, more than {MAX_RESOLVE}: narrow the window or the filter"
        )));
    }
    selection.and("outcome IN (?, ?)", vec![SqlParam::Text("unknown".into()), SqlParam::Text("failed".into())]);
    let recorded = json!({
        "source": request.source, "since": request.since, "until": request.until,
        "event_ids": request.event_ids.as_ref().map(Vec::len), "filter": request.filter,
    });
    if dry_run {
        let sample: Vec<String> =
            store.sample_events(&selection, SAMPLE).await?.into_iter().map(|e| e.id.to_string()).collect();
        store
            .append_audit(NewAuditEntry {
                at: now_ms,
                actor: actor.to_string(),
                action: "events.resolve_dry_run".into(),
                subject: request.source.clone(),
                details: json!({ "scope": recorded, "note": request.note, "resolving": resolving }),
            })
            .await?;
        return Ok(Resolution { dry_run, counts, resolving, event_ids: sample });
    }
    let audit = |ids: &[String]| NewAuditEntry {
        at: now_ms,
        actor: actor.to_string(),
        action: "events.resolved".into(),
        subject: request.source.clone(),
        details: json!({ "scope": recorded, "note": request.note, "count": ids.len(), "event_ids": ids }),
    };
    let ids = store.resolve_events(&selection, actor, &request.note, now_ms, MAX_RESOLVE, audit).await?;
    Ok(Resolution { dry_run, counts, resolving: ids.len() as i64, event_ids: ids })
}
