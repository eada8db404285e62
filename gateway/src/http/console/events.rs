//! The events list (the filter language in one input, its column-exact error shown inline,
//! keyset paging), one event's page (payload, headers, attempts, receipts, resolution, audit
//! entries) and resolving an event with a note. The data is `GET /v1/events`',
//! `GET /v1/events/{id}`'s and `GET /v1/audit?subject=`'s; resolving is
//! `POST /v1/events/{id}/resolve`'s function.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use serde::Deserialize;

use super::chart::clock_time;
use super::page::{self, Nav};
use super::session::{Posted, Signed};
use crate::access::Role;
use crate::delivery::idempotency_key;
use crate::domain::{EventSummary, Outcome};
use crate::error::ApiError;
use crate::http::events::{self as api, ListParams, Resolve};
use crate::http::{AppState, audit};
use crate::timestamp::format_ms;

const PAGE: i64 = 50;

/// The list's query, as the form sends it (empty fields are absent).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Params {
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub outcome: Option<String>,
    pub filter: Option<String>,
    pub cursor: Option<String>,
    /// Events per page (default 50).
    pub limit: Option<String>,
}

fn present(value: &Option<String>) -> Option<String> {
    value.as_ref().map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// What a value in a console link escapes: all but RFC 3986's unreserved characters.
const ESCAPED: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// A value for a console link's path or query.
pub fn enc(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, ESCAPED).to_string()
}

impl Params {
    /// The query string of these parameters (without the cursor).
    pub fn query(&self) -> String {
        [
            ("source", &self.source),
            ("since", &self.since),
            ("until", &self.until),
            ("outcome", &self.outcome),
            ("filter", &self.filter),
        ]
        .iter()
        .chain([("limit", &self.limit)].iter())
        .filter_map(|(k, v)| present(v).map(|v| format!("{k}={}", enc(&v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// An event as a row of a console table.
pub struct Row {
    pub id: String,
    pub source: String,
    pub event_type: String,
    pub received: String,
    pub received_at: String,
    pub outcome: &'static str,
    pub overdue: bool,
    pub error_code: String,
    pub attempts: i64,
    pub state: &'static str,
    pub resolved: bool,
}

pub fn row(app: &AppState, e: &EventSummary, now: i64) -> Row {
    Row {
        id: e.id.to_string(),
        source: e.source.clone(),
        event_type: e.event_type.clone().unwrap_or_default(),
        received: clock_time(e.received_at, true),
        received_at: format_ms(e.received_at),
        outcome: e.outcome.as_str(),
        overdue: api::is_overdue(app, e, now),
        error_code: e.error_code.clone().unwrap_or_default(),
        attempts: e.attempts,
        state: e.delivery_state.as_str(),
        resolved: e.resolution.is_some(),
    }
}

/// A filter that did not parse: the API's message, and a caret under its column.
pub struct FilterProblem {
    pub message: String,
    pub caret: String,
}

#[derive(Template)]
#[template(path = "console/events.html")]
struct List {
    nav: Nav,
    p: Params,
    sources: Vec<(String, bool)>,
    outcomes: Vec<(&'static str, bool)>,
    rows: Vec<Row>,
    next: Option<String>,
    first: Option<String>,
    filter_problem: Option<FilterProblem>,
    error: Option<String>,
}

pub async fn list(State(app): State<AppState>, who: Signed, Query(p): Query<Params>) -> Response {
    let params = ListParams {
        source: present(&p.source),
        since: present(&p.since),
        until: present(&p.until),
        outcome: present(&p.outcome),
        filter: present(&p.filter),
        limit: Some(present(&p.limit).and_then(|l| l.parse().ok()).unwrap_or(PAGE)),
        cursor: present(&p.cursor),
        provider_id: None,
    };
    let (mut rows, mut next, mut filter_problem, mut error) = (Vec::new(), None, None, None);
    match api::list_page(&app, &who.caller, params).await {
        Ok(page) => {
            let now = app.clock.now_ms();
            rows = page.events.iter().map(|e| row(&app, e, now)).collect();
            next = page.next_cursor.map(|c| {
                let query = p.query();
                format!("/ui/events?{query}{}cursor={}", if query.is_empty() { "" } else { "&" }, enc(c.as_str()))
            });
        }
        Err(err) if err.code == "filter_invalid" => filter_problem = Some(filter_problem_of(&p, &err)),
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => {
            return page::message(err.status, "Store unavailable", &err.message);
        }
        Err(err) => error = Some(err.message),
    }
    let status = if filter_problem.is_some() || error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    let outcome = present(&p.outcome);
    let source = present(&p.source);
    let first = present(&p.cursor).map(|_| format!("/ui/events?{}", p.query()));
    let list = List {
        nav: Nav::new(&who, "events"),
        sources: super::page::source_choices(&app, &who, source.as_deref()),
        outcomes: ["confirmed", "unknown", "failed", "resolved"]
            .iter()
            .map(|o| (*o, Some(*o) == outcome.as_deref()))
            .collect(),
        p,
        rows,
        next,
        first,
        filter_problem,
        error,
    };
    page::render(status, &list)
}

/// The API's message for a filter that does not parse, and where: a caret under the column
/// the parser names (the same parse the API ran).
fn filter_problem_of(p: &Params, err: &ApiError) -> FilterProblem {
    let text = present(&p.filter).unwrap_or_default();
    let column = crate::replay::filter::parse(&text).err().map(|e| e.column).unwrap_or(1);
    FilterProblem { message: err.message.clone(), caret: format!("{}^", " ".repeat(column.saturating_sub(1))) }
}

pub struct Header {
    pub name: String,
    pub value: String,
}

pub struct AttemptRow {
    pub number: i64,
    pub kind: &'static str,
    pub replay_id: String,
    pub started: String,
    pub latency_ms: i64,
    pub status: String,
    pub error: String,
    pub excerpt: String,
}

pub struct ReceiptRow {
    pub receipt_id: String,
    pub status: String,
    pub key_id: String,
    pub target_record_id: String,
    pub error_code: String,
    pub detail: String,
    pub received: String,
    pub via: String,
}

pub struct AuditRow {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub details: String,
}

#[derive(Template)]
#[template(path = "console/event.html")]
struct Detail {
    nav: Nav,
    row: Row,
    provider_event_id: String,
    idempotency_key: String,
    next_attempt: String,
    delivered: String,
    body: String,
    body_is_json: bool,
    headers: Vec<Header>,
    attempts: Vec<AttemptRow>,
    receipts: Vec<ReceiptRow>,
    resolution: Option<(String, String, String)>,
    /// The audit entries about this event, or why they cannot be shown.
    audit: Result<Vec<AuditRow>, String>,
    /// Why this user may not resolve (a viewer), shown beside the disabled button.
    cannot_resolve: Option<String>,
    notice: Option<String>,
    error: Option<String>,
    note: String,
}

#[derive(Deserialize, Default)]
pub struct DetailQuery {
    done: Option<String>,
}

pub async fn show(
    State(app): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let notice = match q.done.as_deref() {
        Some("resolved") => Some("Resolved, with your note (in the audit log).".to_string()),
        _ => None,
    };
    detail_page(&app, &who, &id, StatusCode::OK, notice, None, String::new()).await
}

async fn detail_page(
    app: &AppState,
    who: &Signed,
    id: &str,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
    note: String,
) -> Response {
    let (detail, receipts) = match api::detail(app, &who.caller, id).await {
        Ok(found) => found,
        Err(err) => return page::message(err.status, "No such event", &err.message),
    };
    let e = &detail.summary;
    let now = app.clock.now_ms();
    let (body, body_is_json, headers) = match &detail.payload {
        // Retention purged it: the event's row stays, its headers and body do not.
        None => (
            format!(
                "(purged by retention{})",
                e.payload_purged_at.map(|at| format!(" at {}", format_ms(at))).unwrap_or_default()
            ),
            false,
            Vec::new(),
        ),
        Some(payload) => {
            let (body, is_json) = match std::str::from_utf8(&payload.body) {
                Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(json) => (serde_json::to_string_pretty(&json).unwrap_or_else(|_| text.to_string()), true),
                    Err(_) => (text.to_string(), false),
                },
                Err(_) => (
                    format!("(not UTF-8; base64) {}", base64::engine::general_purpose::STANDARD.encode(&payload.body)),
                    false,
                ),
            };
            let headers = payload
                .headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: match std::str::from_utf8(&value.0) {
                        Ok(text) => text.to_string(),
                        Err(_) => format!("(base64) {}", base64::engine::general_purpose::STANDARD.encode(&value.0)),
                    },
                })
                .collect();
            (body, is_json, headers)
        }
    };
    let attempts = detail
        .attempts
        .iter()
        .map(|a| AttemptRow {
            number: a.number,
            kind: a.kind.as_str(),
            replay_id: a.replay_id.clone().unwrap_or_default(),
            started: format_ms(a.started_at),
            latency_ms: a.latency_ms,
            status: a.status_code.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
            error: a.error.clone().unwrap_or_default(),
            excerpt: a.response_excerpt.clone().unwrap_or_default(),
        })
        .collect();
    let receipts = receipts
        .iter()
        .map(|r| ReceiptRow {
            receipt_id: r.receipt_id.clone(),
            status: r.status.clone(),
            key_id: r.key_id.clone(),
            target_record_id: r.target_record_id.clone().unwrap_or_default(),
            error_code: r.error_code.clone().unwrap_or_default(),
            detail: r.detail.clone().unwrap_or_default(),
            received: format_ms(r.received_at),
            via: r.via.clone(),
        })
        .collect();
    let audit_params = audit::Params { subject: Some(id.to_string()), limit: Some(100), ..Default::default() };
    let audit = match audit::audit_page(app, &who.caller, &audit_params).await {
        Ok((entries, _)) => Ok(entries
            .iter()
            .map(|a| AuditRow {
                seq: a.seq,
                time: format_ms(a.at),
                actor: a.actor.clone(),
                action: a.action.clone(),
                details: a.details.to_string(),
            })
            .collect()),
        Err(err) => Err(err.message),
    };
    let cannot_resolve = if !who.may(Role::Operator) {
        Some(format!("Resolving needs the operator role; you are signed in as {}.", who.caller.role.as_str()))
    } else if e.outcome == Outcome::Confirmed {
        Some("This event is confirmed by its handler's receipt; there is no gap to close.".into())
    } else if e.outcome == Outcome::Resolved {
        Some("This event was resolved already (see its resolution below).".into())
    } else {
        None
    };
    let detail_page = Detail {
        nav: Nav::new(who, "events"),
        row: row(app, e, now),
        provider_event_id: e.provider_event_id.clone(),
        idempotency_key: idempotency_key(&e.source, &e.provider_event_id),
        next_attempt: e.next_attempt_at.map(format_ms).unwrap_or_else(|| "—".into()),
        delivered: e.delivered_at.map(format_ms).unwrap_or_else(|| "—".into()),
        body,
        body_is_json,
        headers,
        attempts,
        receipts,
        resolution: e.resolution.as_ref().map(|r| (r.by.clone(), r.note.clone(), format_ms(r.at))),
        audit,
        cannot_resolve,
        notice,
        error,
        note,
    };
    page::render(status, &detail_page)
}

#[derive(Deserialize)]
pub struct ResolveForm {
    #[serde(default)]
    note: String,
}

/// Resolving one event from its page: the API's function; a refusal is shown on the page.
pub async fn resolve(State(app): State<AppState>, Path(id): Path<String>, posted: Posted<ResolveForm>) -> Response {
    let Posted { who, form } = posted;
    let request = Resolve { note: form.note.clone() };
    match api::resolve_with_note(&app, &who.caller, &id, request).await {
        Ok(_) => Redirect::to(&format!("/ui/events/{}?done=resolved", enc(&id))).into_response(),
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => {
            page::message(err.status, "Store unavailable", &err.message)
        }
        Err(err) => detail_page(&app, &who, &id, err.status, None, Some(err.message), form.note).await,
    }
}
