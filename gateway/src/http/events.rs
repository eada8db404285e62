//! `GET /v1/events` (newest first, cursor paging) and `GET /v1/events/{id}`.

use axum::Json;
use axum::extract::{Query, State};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::segment::Segment;
use super::time::{format_ms, parse_rfc3339};
use super::{AppState, Caller, Role};
use crate::delivery::idempotency_key;
use crate::domain::{EventId, EventSummary, Outcome};
use crate::error::ApiError;
use crate::replay::plan::{and_filter, and_scope};
use crate::replay::resolve::{ResolveRequest, resolve_selection};
use crate::store::{EventDetail, EventQuery, Resolving, Selection, StoredReceipt};

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub source: Option<String>,
    /// RFC 3339, inclusive.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    #[param(format = DateTime)]
    pub until: Option<String>,
    #[param(value_type = Option<Outcome>)]
    pub outcome: Option<String>,
    /// The replay filter language (`outcome = unknown AND attempts < 3`).
    pub filter: Option<String>,
    /// 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// The last page's `next_cursor`.
    pub cursor: Option<String>,
    /// The provider's own event id (Stripe's `evt_…`, `X-GitHub-Delivery`, `webhook-id`).
    pub provider_id: Option<String>,
}

/// Delivered without a receipt for longer than its source's `receipt_sla`.
pub fn is_overdue(app: &AppState, e: &EventSummary, now: i64) -> bool {
    let sla = app.sources.get(&e.source).map(|s| s.receipt_sla.as_millis() as i64);
    e.outcome == Outcome::Unknown && matches!((e.delivered_at, sla), (Some(at), Some(sla)) if at + sla < now)
}

/// An event as the API shows it; `overdue` when delivered without a receipt for longer than
/// its source's `receipt_sla`.
fn event_json(app: &AppState, e: &EventSummary, now: i64) -> Value {
    let overdue = is_overdue(app, e, now);
    json!({
        "id": e.id,
        "source": e.source,
        "provider_event_id": e.provider_event_id,
        "event_type": e.event_type,
        "received_at": format_ms(e.received_at),
        "outcome": e.outcome,
        "outcome_reason": e.outcome_reason,
        "error_code": e.error_code,
        "delivery_state": e.delivery_state,
        "attempts": e.attempts,
        "next_attempt_at": e.next_attempt_at.map(format_ms),
        "delivered_at": e.delivered_at.map(format_ms),
        "idempotency_key": idempotency_key(&e.source, &e.provider_event_id),
        "overdue": overdue,
        "resolved": e.resolution.as_ref().map(|r| json!({ "by": r.by, "note": r.note, "at": format_ms(r.at) })),
        "payload": if e.payload_purged_at.is_some() { "purged" } else { "kept" },
        "payload_purged_at": e.payload_purged_at.map(format_ms),
    })
}

/// One page of events, newest first, and where the next page starts.
pub struct EventPage {
    pub events: Vec<EventSummary>,
    pub next_cursor: Option<EventId>,
}

/// The events the caller may see that match `p`: `GET /v1/events`' answer, and the console's
/// events list.
pub async fn list_page(app: &AppState, caller: &Caller, p: ListParams) -> Result<EventPage, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("`limit` must be 1 to {MAX_LIMIT}")));
    }
    let outcome = p
        .outcome
        .as_deref()
        .map(|o| {
            Outcome::parse(o).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`outcome` `{o}` is not confirmed, failed, unknown or resolved"),
                )
            })
        })
        .transpose()?;
    let before = p
        .cursor
        .as_deref()
        .map(|c| EventId::parse(c).ok_or_else(|| ApiError::bad_request("invalid_query", "`cursor` is not an event id")))
        .transpose()?;
    if let Some(source) = &p.source {
        caller.require_source(source)?;
    }
    let mut filter = Selection::default();
    and_scope(&mut filter, &caller.scope);
    if let Some(text) = p.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
        let parsed = crate::replay::filter::parse(text)
            .map_err(|err| ApiError::bad_request(err.code(), format!("filter: {err}")))?;
        and_filter(&mut filter, &parsed);
    }
    if let Some(id) = &p.provider_id {
        filter.and("dedup_key = ?", vec![crate::store::SqlParam::Text(id.clone())]);
    }
    let query = EventQuery {
        source: p.source,
        since: p.since.as_deref().map(|t| parse_rfc3339("since", t)).transpose()?,
        until: p.until.as_deref().map(|t| parse_rfc3339("until", t)).transpose()?,
        outcome,
        before,
        limit,
        filter,
    };
    let events = app.store.list_events(&query).await?;
    let next_cursor = (events.len() as i64 == limit).then(|| events.last().map(|e| e.id.clone())).flatten();
    Ok(EventPage { events, next_cursor })
}

#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    summary = "List events, newest first",
    description = "The events the token may see (its source scope), filtered by source, time \
        window (`since` inclusive, `until` exclusive, RFC 3339), outcome, the replay filter language \
        and the provider's id; paged with `cursor` (the last page's `next_cursor`).",
    params(ListParams),
    responses(
        (status = 200, description = "A page of events", body = super::openapi::EventPage),
        (status = 400, description = "A parameter does not parse: `invalid_query`, `invalid_time`, or \
            `filter_invalid`", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let page = list_page(&app, &caller, p).await?;
    let now = app.clock.now_ms();
    Ok(Json(json!({
        "data": page.events.iter().map(|e| event_json(&app, e, now)).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

/// The event with its receipts, when the caller may see it (another source's event is not
/// there for a scoped token): `GET /v1/events/{id}`, and the console's event page.
pub async fn detail(app: &AppState, caller: &Caller, id: &str) -> Result<(EventDetail, Vec<StoredReceipt>), ApiError> {
    caller.require(Role::Viewer)?;
    let not_found = || ApiError::not_found("event_unknown", format!("no event `{id}`"));
    let event_id = EventId::parse(id).ok_or_else(not_found)?;
    let detail = app.store.get_event(&event_id).await?.ok_or_else(not_found)?;
    if !caller.scope.allows(&detail.summary.source) {
        return Err(not_found());
    }
    let receipts = app.store.list_receipts(&event_id).await?;
    Ok((detail, receipts))
}

#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    tag = "events",
    summary = "One event with its payload, receipts and attempts",
    description = "The event as lists show it, with the body and headers as the provider sent them \
        (absent once retention purged them: `payload` is `purged`), its receipts and its attempt log. \
        An event outside the token's source scope is not there for it (404).",
    params(("id" = String, Path, description = "The event's id (`evt_…`)")),
    responses(
        (status = 200, description = "The event", body = super::openapi::EventDetail),
        (status = 404, description = "No such event (`event_unknown`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn show(State(app): State<AppState>, caller: Caller, Segment(id): Segment) -> Result<Json<Value>, ApiError> {
    let (detail, receipts) = detail(&app, &caller, &id).await?;
    let mut out = event_json(&app, &detail.summary, app.clock.now_ms());
    let object = out.as_object_mut().expect("event json is an object");
    // A purged payload shows as `"payload": "purged"` with neither headers nor body: never
    // as an empty body that could be taken for what the provider sent.
    if let Some(payload) = &detail.payload {
        let body = match std::str::from_utf8(&payload.body) {
            Ok(text) => json!({ "body": text }),
            Err(_) => {
                json!({ "body_base64": base64::engine::general_purpose::STANDARD.encode(&payload.body) })
            }
        };
        object.extend(body.as_object().expect("object").clone());
        object.insert("headers".into(), json!(payload.headers));
    }
    object.insert(
        "receipts".into(),
        json!(
            receipts
                .iter()
                .map(|r| json!({
                    "receipt_id": r.receipt_id,
                    "key_id": r.key_id,
                    "status": r.status,
                    "target_record_id": r.target_record_id,
                    "error_code": r.error_code,
                    "detail": r.detail,
                    "signed_at": format_ms(r.signed_at),
                    "received_at": format_ms(r.received_at),
                    "via": r.via,
                }))
                .collect::<Vec<_>>()
        ),
    );
    object.insert(
        "attempt_log".into(),
        json!(
            detail
                .attempts
                .iter()
                .map(|a| json!({
                    "number": a.number,
                    "kind": a.kind,
                    "replay_id": a.replay_id,
                    "started_at": format_ms(a.started_at),
                    "latency_ms": a.latency_ms,
                    "status_code": a.status_code,
                    "error": a.error,
                    "response_excerpt": a.response_excerpt,
                }))
                .collect::<Vec<_>>()
        ),
    );
    Ok(Json(out))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// Why the gap is closed without replay (audited).
    #[schema(min_length = 1)]
    pub note: String,
}

/// Closes an event's gap without replay, with a note, audited in the same transaction:
/// `POST /v1/events/{id}/resolve`, and the console's resolve forms. Answers the new outcome.
pub async fn resolve_with_note(app: &AppState, caller: &Caller, id: &str, req: Resolve) -> Result<Outcome, ApiError> {
    caller.require(Role::Operator)?;
    if req.note.trim().is_empty() {
        return Err(ApiError::bad_request("note_required", "resolving an event needs a `note`"));
    }
    let not_found = || ApiError::not_found("event_unknown", format!("no event `{id}`"));
    let event_id = EventId::parse(id).ok_or_else(not_found)?;
    let now = app.clock.now_ms();
    let audit = |source: &str, before: Outcome| crate::store::NewAuditEntry {
        at: now,
        actor: caller.name.clone(),
        action: "event.resolved".into(),
        subject: Some(id.to_string()),
        details: json!({ "note": req.note, "outcome": Outcome::Resolved, "outcome_before": before, "source": source }),
    };
    match app.store.resolve_event(&event_id, &caller.scope, &caller.name, &req.note, now, audit).await? {
        Resolving::Resolved => {}
        Resolving::NotFound => return Err(not_found()),
        Resolving::Settled(outcome) => {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "event_settled",
                format!("event `{id}` is {} already; nothing changed", outcome.as_str()),
            ));
        }
    }
    Ok(Outcome::Resolved)
}

/// `POST /v1/events/{id}/resolve`: close a gap without replay, with a note (audited).
#[utoipa::path(
    post,
    path = "/v1/events/{id}/resolve",
    tag = "events",
    summary = "Resolve one event with a note",
    description = "Closes an `unknown` or `failed` event's gap without replay: its outcome becomes \
        `resolved` (never `confirmed`), with the note and the token's name, audited in the same \
        transaction.",
    params(("id" = String, Path, description = "The event's id")),
    request_body = Resolve,
    responses(
        (status = 200, description = "Resolved", body = super::openapi::EventResolved),
        (status = 400, description = "No `note` (`note_required`) or a body that does not parse \
            (`invalid_request`)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such event (`event_unknown`)", body = super::openapi::ErrorBody),
        (status = 409, description = "The event is settled already (`event_settled`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("operator")))
)]
async fn resolve(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    body: Result<Json<Resolve>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let outcome = resolve_with_note(&app, &caller, &id, req).await?;
    Ok(Json(json!({ "event_id": id, "outcome": outcome })))
}

/// `POST /v1/events/resolve`: resolve a selection (a window or ids, a filter) with one note,
/// a dry run unless `"dry_run": false`; all of it with one audit entry, or nothing.
#[utoipa::path(
    post,
    path = "/v1/events/resolve",
    tag = "events",
    summary = "Resolve a selection of events with one note",
    description = "A time window (`since`, `until`) or `event_ids`, narrowed by `source` and `filter`: \
        a dry run (what would be resolved) unless `\"dry_run\": false`, which needs the operator role \
        and resolves every `unknown` and `failed` event of the selection with one audit entry.",
    request_body = crate::replay::resolve::ResolveRequest,
    responses(
        (status = 200, description = "What was (or would be) resolved", body = super::openapi::Resolution),
        (status = 400, description = "A body or field that does not parse (`invalid_request`, \
            `invalid_time`, `scope_required`, `note_required`, `filter_invalid`)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such source (`source_unknown`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn resolve_many(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<Json<ResolveRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let Json(request) = body.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let now = app.clock.now_ms();
    let done = resolve_selection(&app.store, &app.sources, request, &caller.name, caller.role, &caller.scope, now)
        .await
        .map_err(super::replays::plan_error)?;
    Ok(Json(done.to_json()))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resolve_many))
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(resolve))
}
