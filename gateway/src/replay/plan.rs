//! The planner: turns a replay request into a [`ReplayPlan`] (what a dry run shows and what a
//! live run executes), refusing anything unscoped, unreasoned or unauthorised.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::filter::{self, Filter, FilterError};
use super::pace::{self, HandlerPace};
use crate::access::{Role, SourceScope};
use crate::config::SourceConfig;
use crate::delivery::idempotency_key;
use crate::domain::{EventId, Outcome};
use crate::store::{Selection, SqlParam, Store, StoreError};

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 1_000_000;
pub const DEFAULT_RATE: f64 = 2.0;
pub const MAX_RATE: f64 = 10_000.0;
const MAX_EVENT_IDS: usize = 10_000;
const SAMPLE: i64 = 5;

/// A replay as asked for (`POST /v1/replays`, or the CLI).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub source: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive; now when absent.
    pub until: Option<String>,
    pub event_ids: Option<Vec<String>>,
    /// Only events received after this one, in the database's order (`seq`): how a run
    /// that `limit` cut short is continued exactly where it stopped.
    pub after_event: Option<String>,
    pub filter: Option<String>,
    pub limit: Option<i64>,
    /// Sends per second.
    pub rate: Option<f64>,
    #[serde(default)]
    pub include_failed: bool,
    pub dry_run: Option<bool>,
    pub reason: Option<String>,
    pub override_confirmed: Option<Override>,
    /// Another destination (admins only), e.g. a staging handler.
    pub to: Option<String>,
    /// Ask the handler first (status probe) where the source has a `status_url`; on unless
    /// `false`. Never with `to`: another destination's events are not the handler's to settle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ask_first: Option<bool>,
}

impl ReplayRequest {
    /// Whether a run of this request asks the handler first (where a source can be asked).
    pub fn asks_first(&self) -> bool {
        self.ask_first != Some(false) && self.to.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub note: String,
}

/// Why a request cannot be planned; each maps to one status and code.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("a replay needs a scope: `since` (and optionally `until`) or `event_ids`; there is no replay-everything")]
    ScopeMissing,
    #[error("{0}")]
    Invalid(String),
    #[error("filter: {0}")]
    Filter(#[from] FilterError),
    #[error("no source named `{0}`")]
    SourceUnknown(String),
    #[error("a live replay needs a `reason`")]
    ReasonMissing,
    #[error("overriding confirmed events needs a non-empty `override_confirmed.note`")]
    OverrideNoteMissing,
    #[error("{0}")]
    Forbidden(String),
    #[error("this token may not act on source `{0}`")]
    SourceForbidden(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PlanError {
    pub fn code(&self) -> &'static str {
        match self {
            PlanError::ScopeMissing => "scope_required",
            PlanError::Invalid(_) => "invalid_request",
            PlanError::Filter(_) => "filter_invalid",
            PlanError::SourceUnknown(_) => "source_unknown",
            PlanError::ReasonMissing => "reason_required",
            PlanError::OverrideNoteMissing => "override_note_required",
            PlanError::Forbidden(_) => "role_insufficient",
            PlanError::SourceForbidden(_) => "source_forbidden",
            PlanError::Store(_) => "store_unavailable",
        }
    }
}

/// How much could go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    /// Only events nobody confirmed.
    Low,
    /// Events the handler reported as failed are included.
    Medium,
    /// Confirmed events are resent under an override.
    High,
}

/// What a replay would do: the dry run's answer and the live run's instructions.
#[derive(Debug, Clone)]
pub struct ReplayPlan {
    pub request: ReplayRequest,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub filter: Option<Filter>,
    /// Outcome counts over the whole scope.
    pub counts: HashMap<Outcome, i64>,
    pub eligible_outcomes: Vec<Outcome>,
    /// Eligible events in the scope, before `limit`.
    pub eligible_in_scope: i64,
    /// What a live run would send: `min(limit, eligible_in_scope)`.
    pub eligible: i64,
    pub limit: i64,
    pub rate: f64,
    pub risk: Risk,
    pub sample: Vec<Value>,
    /// The source's handler as it is now (a dry run of one source's events to its handler).
    pub pace: Option<HandlerPace>,
    /// The selection of eligible events, for the executor.
    pub selection: Selection,
}

impl ReplayPlan {
    pub fn estimated_seconds(&self) -> f64 {
        (self.eligible as f64 / self.rate).ceil()
    }

    /// The dry run's JSON.
    pub fn to_json(&self) -> Value {
        let count = |o| self.counts.get(&o).copied().unwrap_or(0);
        json!({
            "dry_run": true,
            "scope": {
                "source": self.request.source,
                "since": self.request.since,
                "until": self.request.until,
                // The window's end as planned (now, when `until` was not given): what a
                // command that covers the same events again must say.
                "until_planned": self.until.map(crate::timestamp::format_ms),
                "event_ids": self.request.event_ids.as_ref().map(Vec::len),
                "after_event": self.request.after_event,
            },
            "filter": self.filter.as_ref().map(ToString::to_string),
            "counts": {
                "confirmed": count(Outcome::Confirmed),
                "unknown": count(Outcome::Unknown),
                "failed": count(Outcome::Failed),
                "resolved": count(Outcome::Resolved),
            },
            "eligible_outcomes": self.eligible_outcomes,
            "eligible_in_scope": self.eligible_in_scope,
            "eligible": self.eligible,
            // Eligible events the limit leaves out: a run sends only `eligible` of them.
            "left_out": self.eligible_in_scope - self.eligible,
            "limit": self.limit,
            "rate": self.rate,
            "include_failed": self.request.include_failed,
            "override_confirmed": self.request.override_confirmed.is_some(),
            "to": self.request.to,
            "sample": self.sample,
            "estimated_seconds": self.estimated_seconds(),
            "risk": self.risk,
            "handler": self.pace,
        })
    }
}

fn parse_time(field: &str, text: &str) -> Result<i64, PlanError> {
    crate::timestamp::parse_rfc3339(field, text).map_err(|e| PlanError::Invalid(e.to_string()))
}

/// Checks a request and measures it against the store. `live` asks for the live run's
/// requirements (a reason); `role` and `scope` are the caller's: a scoped caller's replay
/// selects only events of its sources (others' ids count as unknown).
pub async fn plan(
    store: &Store,
    sources: &HashMap<String, SourceConfig>,
    request: ReplayRequest,
    role: Role,
    scope: &SourceScope,
    now_ms: i64,
) -> Result<ReplayPlan, PlanError> {
    let live = request.dry_run == Some(false);
    // A dry run changes nothing, so a viewer may run one (it is audited as theirs).
    if live && role < Role::Operator {
        return Err(PlanError::Forbidden("a live replay needs the operator role; a viewer may dry-run".into()));
    }
    let wanted = Scope {
        source: request.source.as_deref(),
        since: request.since.as_deref(),
        until: request.until.as_deref(),
        event_ids: request.event_ids.as_deref(),
        after_event: request.after_event.as_deref(),
        filter: request.filter.as_deref(),
    };
    let (mut selection, window) = scope_selection(store, sources, &wanted, scope, now_ms).await?;
    let (since, until, filter) = (window.since, window.until, window.filter);
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(PlanError::Invalid(format!("`limit` must be 1 to {MAX_LIMIT}")));
    }
    let rate = request.rate.unwrap_or(DEFAULT_RATE);
    if !(rate > 0.0 && rate <= MAX_RATE) {
        return Err(PlanError::Invalid(format!("`rate` must be above 0 and at most {MAX_RATE} per second")));
    }
    if let Some(o) = &request.override_confirmed
        && o.note.trim().is_empty()
    {
        return Err(PlanError::OverrideNoteMissing);
    }
    if let Some(to) = &request.to {
        if role < Role::Admin {
            return Err(PlanError::Forbidden("replaying to another URL (`to`) needs the admin role".into()));
        }
        crate::config::http_url(to).map_err(|e| PlanError::Invalid(format!("`to` {e}")))?;
    }
    if live && request.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(PlanError::ReasonMissing);
    }

    let mut eligible_outcomes = vec![Outcome::Unknown];
    // A resolved event goes out only when named by id (SPEC.md, "Words").
    if request.event_ids.is_some() {
        eligible_outcomes.push(Outcome::Resolved);
    }
    if request.include_failed {
        eligible_outcomes.push(Outcome::Failed);
    }
    if request.override_confirmed.is_some() {
        eligible_outcomes.push(Outcome::Confirmed);
    }
    let risk = if request.override_confirmed.is_some() {
        Risk::High
    } else if request.include_failed {
        Risk::Medium
    } else {
        Risk::Low
    };
    let counts = store.outcome_counts(&selection).await?;
    let eligible_in_scope: i64 = eligible_outcomes.iter().map(|o| counts.get(o).copied().unwrap_or(0)).sum();
    let marks = vec!["?"; eligible_outcomes.len()].join(", ");
    selection.and(
        &format!("outcome IN ({marks})"),
        eligible_outcomes.iter().map(|o| SqlParam::Text(o.as_str().to_string())).collect(),
    );
    let sample = store
        .sample_events(&selection, SAMPLE.min(limit))
        .await?
        .into_iter()
        .map(|e| {
            let destination = request
                .to
                .clone()
                .or_else(|| sources.get(&e.source).map(|s| s.forward_to.clone()))
                .unwrap_or_else(|| "(source no longer configured: skipped)".into());
            json!({
                "event_id": e.id,
                "source": e.source,
                "event_type": e.event_type,
                "received_at": crate::timestamp::format_ms(e.received_at),
                "outcome": e.outcome,
                "destination": destination,
                "idempotency_key": idempotency_key(&e.source, &e.dedup_key),
            })
        })
        .collect();
    // What the handler shows now, so the dry run can suggest a rate (or warn that it is
    // still failing). A live run needs none of it: it paces itself from the answers.
    let pace = match (&request.source, &request.to) {
        (Some(source), None) if !live => {
            Some(pace::judge(&store.recent_attempts(source, now_ms - pace::WINDOW_MS).await?, now_ms))
        }
        _ => None,
    };
    Ok(ReplayPlan {
        eligible: eligible_in_scope.min(limit),
        pace,
        request,
        since,
        until,
        filter,
        counts,
        eligible_outcomes,
        eligible_in_scope,
        limit,
        rate,
        risk,
        sample,
        selection,
    })
}

/// Which events a request means: a window or ids, maybe after an event, a filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub source: Option<&'a str>,
    /// RFC 3339, inclusive.
    pub since: Option<&'a str>,
    /// RFC 3339, exclusive; now when absent.
    pub until: Option<&'a str>,
    pub event_ids: Option<&'a [String]>,
    /// Only events received after this one (`seq`).
    pub after_event: Option<&'a str>,
    pub filter: Option<&'a str>,
}

/// What a scope came to besides its condition: its window (unix ms) and parsed filter.
#[derive(Debug, Clone, Default)]
pub struct Window {
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub filter: Option<Filter>,
}

/// The store condition for a scope, checked: mandatory (a window or ids), within the
/// caller's sources, a known source, a filter that parses. Replays and resolutions of a
/// selection both select through this.
pub async fn scope_selection(
    store: &Store,
    sources: &HashMap<String, SourceConfig>,
    wanted: &Scope<'_>,
    scope: &SourceScope,
    now_ms: i64,
) -> Result<(Selection, Window), PlanError> {
    let mut selection = Selection::default();
    let mut window = Window::default();
    if let Some(source) = wanted.source {
        if !scope.allows(source) {
            return Err(PlanError::SourceForbidden(source.to_string()));
        }
        if !sources.contains_key(source) {
            return Err(PlanError::SourceUnknown(source.to_string()));
        }
        selection.and("source = ?", vec![SqlParam::Text(source.to_string())]);
    }
    and_scope(&mut selection, scope);
    match (wanted.since, wanted.event_ids) {
        (None, None) => return Err(PlanError::ScopeMissing),
        (Some(_), Some(_)) => return Err(PlanError::Invalid("give a time window or `event_ids`, not both".into())),
        (Some(s), None) => {
            let start = parse_time("since", s)?;
            let end = wanted.until.map(|u| parse_time("until", u)).transpose()?.unwrap_or(now_ms);
            if start >= end {
                return Err(PlanError::Invalid("`since` must be before `until`".into()));
            }
            selection.and("received_at >= ? AND received_at < ?", vec![SqlParam::Int(start), SqlParam::Int(end)]);
            (window.since, window.until) = (Some(start), Some(end));
        }
        (None, Some(ids)) => {
            if ids.is_empty() || ids.len() > MAX_EVENT_IDS {
                return Err(PlanError::Invalid(format!("`event_ids` takes 1 to {MAX_EVENT_IDS} ids")));
            }
            if wanted.until.is_some() {
                return Err(PlanError::Invalid("`until` goes with `since`".into()));
            }
            let parsed = ids
                .iter()
                .map(|id| EventId::parse(id).ok_or_else(|| PlanError::Invalid(format!("`{id}` is not an event id"))))
                .collect::<Result<Vec<_>, _>>()?;
            let marks = vec!["?"; parsed.len()].join(", ");
            selection.and(
                &format!("id IN ({marks})"),
                parsed.into_iter().map(|id| SqlParam::Text(id.to_string())).collect(),
            );
        }
    }
    if let Some(after) = wanted.after_event {
        let id = EventId::parse(after)
            .ok_or_else(|| PlanError::Invalid(format!("`after_event` `{after}` is not an event id")))?;
        let Some(seq) = store.event_seq(&id).await? else {
            return Err(PlanError::Invalid(format!("`after_event`: no event `{after}`")));
        };
        selection.and("seq > ?", vec![SqlParam::Int(seq)]);
    }
    if let Some(text) = wanted.filter.map(str::trim).filter(|f| !f.is_empty()) {
        let parsed = filter::parse(text)?;
        and_filter(&mut selection, &parsed);
        window.filter = Some(parsed);
    }
    Ok((selection, window))
}

/// Adds a parsed filter expression to a store condition: what a replay selects by, and what
/// `GET /v1/events?filter=` lists by.
pub fn and_filter(selection: &mut Selection, filter: &filter::Filter) {
    let (sql, params) = filter.to_sql(1);
    selection.and(&numbered_to_marks(&sql), params.into_iter().map(to_store_param).collect());
}

/// Limits a store condition to a scoped token's sources (nothing for a token for all).
pub fn and_scope(selection: &mut Selection, scope: &SourceScope) {
    if let Some(only) = scope.limited_to() {
        let marks = vec!["?"; only.len()].join(", ");
        selection.and(&format!("source IN ({marks})"), only.iter().map(|s| SqlParam::Text(s.clone())).collect());
    }
}

/// The filter's `$n` placeholders as the `?` marks a [`Selection`] numbers itself.
pub fn numbered_to_marks(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// A filter parameter as the store binds it.
pub fn to_store_param(p: filter::SqlParam) -> SqlParam {
    match p {
        filter::SqlParam::Text(t) => SqlParam::Text(t),
        filter::SqlParam::Int(i) => SqlParam::Int(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_marks() {
        assert_eq!(numbered_to_marks("(a = $1) AND (b IN ($2, $13))"), "(a = ?) AND (b IN (?, ?))");
    }
}
