//! Gap review: over a window, the failed events grouped by error code and the overdue ones
//! (delivered, no receipt past the source's SLA), with a selection to resolve with one note
//! or to take to the replay form. The counts are `GET /v1/summary`'s, the events
//! `GET /v1/events`' (filtered by `error_code` in the filter language), resolving a selection
//! is `POST /v1/events/resolve`'s function: all of it in one transaction and one audit entry.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::events::{Row, enc, row};
use super::overview::WINDOWS;
use super::page::{self, Nav};
use super::session::{Posted, Signed};
use crate::access::Role;
use crate::http::AppState;
use crate::http::events::{self as api, ListParams};
use crate::http::replays::plan_error;
use crate::http::summary;
use crate::replay::resolve::{ResolveRequest, resolve_selection};
use crate::timestamp::format_ms;

/// Events listed per group; past it the group links to the events list.
const PER_GROUP: i64 = 100;
/// Unknown events looked through for overdue ones.
const OVERDUE_SCAN: i64 = 500;

#[derive(Deserialize, Default)]
pub struct Params {
    window: Option<String>,
    source: Option<String>,
    done: Option<String>,
}

pub struct Group {
    pub code: String,
    pub count: i64,
    pub rows: Vec<Row>,
    /// The events list with this group's filter, for more than fit here.
    pub more: String,
}

#[derive(Template)]
#[template(path = "console/gaps.html")]
struct Gaps {
    nav: Nav,
    windows: Vec<(&'static str, bool)>,
    sources: Vec<(String, bool)>,
    window: String,
    groups: Vec<Group>,
    overdue: Vec<Row>,
    cannot_act: Option<String>,
    notice: Option<String>,
    back: String,
    /// Reconcile over the window.
    reconcile: super::reconcile::Form,
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', ""))
}

/// What a resolution did, from `done=resolved-N-of-M` (`M` selected).
fn resolved_notice(done: &str) -> String {
    let (n, of) = done.split_once("-of-").unwrap_or((done, done));
    let (n, of) = (n.parse::<i64>().unwrap_or(0), of.parse::<i64>().unwrap_or(0));
    let mut text = format!("Resolved {n} events with your note, in one audit entry.");
    if of > n {
        text.push_str(&format!(" {} of the {of} selected were settled already and left as they were.", of - n));
    }
    text
}

pub async fn page(State(app): State<AppState>, who: Signed, Query(p): Query<Params>) -> Response {
    let (window, bucket, window_ms) =
        WINDOWS.iter().copied().find(|(name, _, _)| Some(*name) == p.window.as_deref()).unwrap_or(WINDOWS[3]);
    let source = p.source.clone().filter(|s| !s.is_empty());
    let now = app.clock.now_ms();
    let since = format_ms(now - window_ms);
    let params = summary::Params {
        source: source.clone(),
        since: Some(since.clone()),
        until: Some(format_ms(now)),
        bucket: Some(bucket.into()),
    };
    let view = match summary::gap_view(&app, &who.caller, &params).await {
        Ok(view) => view,
        Err(err) => return page::message(err.status, "Cannot show this", &err.message),
    };
    let list = |outcome: &str, filter: Option<String>, limit: i64| ListParams {
        source: source.clone(),
        since: Some(since.clone()),
        outcome: Some(outcome.into()),
        filter,
        limit: Some(limit),
        ..Default::default()
    };
    let mut groups = Vec::new();
    for (code, count) in &view.failed_by_error_code {
        // Events failed without a code (resolved so by hand) cannot be named in the filter.
        let filter = (!code.is_empty()).then(|| format!("error_code = {}", quote(code)));
        let rows = match api::list_page(&app, &who.caller, list("failed", filter.clone(), PER_GROUP)).await {
            Ok(page) => page.events.iter().map(|e| row(&app, e, now)).collect(),
            Err(err) => return page::message(err.status, "Cannot show this", &err.message),
        };
        let mut more = format!("/ui/events?outcome=failed&since={}", enc(&since));
        if let Some(filter) = &filter {
            more.push_str(&format!("&filter={}", enc(filter)));
        }
        if let Some(s) = &source {
            more.push_str(&format!("&source={}", enc(s)));
        }
        groups.push(Group { code: code.clone(), count: *count, rows, more });
    }
    let overdue = match api::list_page(&app, &who.caller, list("unknown", None, OVERDUE_SCAN)).await {
        Ok(page) => page.events.iter().filter(|e| api::is_overdue(&app, e, now)).map(|e| row(&app, e, now)).collect(),
        Err(err) => return page::message(err.status, "Cannot show this", &err.message),
    };
    let mut back = format!("/ui/gaps?window={window}");
    if let Some(s) = &source {
        back.push_str(&format!("&source={}", enc(s)));
    }
    let reconcile = super::reconcile::Form::new(&app, &who, source.as_deref(), (now - window_ms, now), back.clone());
    let gaps = Gaps {
        nav: Nav::new(&who, "gaps"),
        windows: WINDOWS.iter().map(|(name, _, _)| (*name, *name == window)).collect(),
        sources: super::page::source_choices(&app, &who, source.as_deref()),
        window: window.into(),
        groups,
        overdue,
        cannot_act: (!who.may(Role::Operator)).then(|| {
            format!(
                "Resolving and replaying need the operator role; you are signed in as {}.",
                who.caller.role.as_str()
            )
        }),
        notice: p.done.as_deref().and_then(|d| d.strip_prefix("resolved-")).map(resolved_notice),
        back,
        reconcile,
    };
    page::render(StatusCode::OK, &gaps)
}

/// Resolves the selection with the one note through `POST /v1/events/resolve`'s function:
/// every selected event that is still `unknown` or `failed`, in one transaction with one
/// audit entry naming them all, or none of them. Selected events settled meanwhile are left
/// as they are, and the notice says how many.
pub async fn resolve(State(app): State<AppState>, posted: Posted<Vec<(String, String)>>) -> Response {
    let Posted { who, form } = posted;
    let field = |name: &str| form.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let note = field("note").into_iter().next().unwrap_or_default();
    let back = field("back").into_iter().next().filter(|b| b.starts_with("/ui/gaps")).unwrap_or("/ui/gaps".into());
    let events = field("event");
    if events.is_empty() {
        return page::message(
            StatusCode::BAD_REQUEST,
            "Nothing selected",
            "Select the events to resolve, then resolve them.",
        );
    }
    let request = ResolveRequest { event_ids: Some(events.clone()), note, dry_run: Some(false), ..Default::default() };
    let now = app.clock.now_ms();
    let c = &who.caller;
    match resolve_selection(&app.store, &app.sources, request, &c.name, c.role, &c.scope, now).await {
        Ok(done) => {
            let left = events.len() as i64 - done.resolving;
            let sep = if back.contains('?') { '&' } else { '?' };
            Redirect::to(&format!("{back}{sep}done=resolved-{}-of-{}", done.resolving, done.resolving + left))
                .into_response()
        }
        Err(err) => {
            let err = plan_error(err);
            let text = format!("{} Nothing was resolved.", err.message);
            page::message(err.status, "Not resolved", &text)
        }
    }
}
