//! Reconcile from the console (issue 19): ask a source's handler, at its `status_url`, about
//! the `unknown` events of a span, and record what it answers, without replaying. The form
//! sits on the overview (the selected span, or the window) and on the gap review (its
//! window); the run is `POST /v1/reconcile`'s function ([`crate::probe::reconcile`]): operator
//! only, audited, its receipts and audit entry in one transaction. The page after it says
//! what it settled.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::events::enc;
use super::page::{self, Nav};
use super::session::{Posted, Signed};
use crate::access::Role;
use crate::http::AppState;
use crate::probe::reconcile::{self as core, ReconcileError, ReconcileReport, ReconcileRequest};
use crate::timestamp::format_ms;

/// The reconcile form's data, as the overview and the gap review show it.
pub struct Form {
    /// The sources with a `status_url` the user may see, and whether each is the chosen one.
    pub sources: Vec<(String, bool)>,
    /// The span, RFC 3339.
    pub since: String,
    pub until: String,
    /// Where the result page links back to.
    pub back: String,
    /// Why the button is disabled: a viewer, or no source with a `status_url` in view.
    pub cannot: Option<String>,
}

impl Form {
    /// The form for a span, `source` preselected when it is one that can be asked.
    pub fn new(app: &AppState, who: &Signed, source: Option<&str>, (since, until): (i64, i64), back: String) -> Self {
        let mut sources: Vec<(String, bool)> = app
            .config
            .sources
            .iter()
            .filter(|s| s.status_url.is_some() && who.caller.scope.allows(&s.name))
            .filter(|s| source.is_none_or(|chosen| chosen == s.name))
            .map(|s| (s.name.clone(), Some(s.name.as_str()) == source))
            .collect();
        sources.sort();
        let cannot = if !who.may(Role::Operator) {
            Some(format!("Reconciling needs the operator role; you are signed in as {}.", who.caller.role.as_str()))
        } else if sources.is_empty() {
            Some(match source {
                Some(name) => format!("Source {name} has no status_url: its handler cannot be asked."),
                None => "No source here has a status_url: no handler can be asked.".to_string(),
            })
        } else {
            None
        };
        Form { sources, since: format_ms(since), until: format_ms(until), back, cannot }
    }
}

#[derive(Deserialize)]
pub struct Fields {
    #[serde(default)]
    source: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    back: String,
}

#[derive(Template)]
#[template(path = "console/reconciled.html")]
struct Reconciled {
    nav: Nav,
    source: String,
    since: String,
    until: String,
    r: ReconcileReport,
    complete: bool,
    refused: Vec<(String, i64)>,
    back: String,
    /// The events list of what stays unknown in the span.
    unknown: String,
}

/// `POST /ui/reconcile`: runs it, then shows what it settled.
pub async fn run(State(app): State<AppState>, posted: Posted<Fields>) -> Response {
    let Posted { who, form } = posted;
    let back =
        Some(form.back.clone()).filter(|b| b.starts_with("/ui/") && !b.starts_with("//")).unwrap_or("/ui/".into());
    let request = ReconcileRequest {
        source: form.source.clone(),
        since: Some(form.since.clone()).filter(|s| !s.is_empty()),
        until: Some(form.until.clone()).filter(|s| !s.is_empty()),
        limit: None,
    };
    let caller = core::Caller { name: &who.caller.name, role: who.caller.role, scope: &who.caller.scope };
    match core::reconcile(&app.prober, &app.store, &app.sources, request, caller, app.clock.now_ms()).await {
        Ok((r, request)) => {
            let (since, until) = (request.since.unwrap_or_default(), request.until.unwrap_or_default());
            let unknown = format!(
                "/ui/events?source={}&outcome=unknown&since={}&until={}",
                enc(&request.source),
                enc(&since),
                enc(&until)
            );
            let page = Reconciled {
                nav: Nav::new(&who, "overview"),
                source: request.source,
                since,
                until,
                complete: r.complete(),
                refused: r.refused_by_code.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                r,
                back,
                unknown,
            };
            page::render(StatusCode::OK, &page)
        }
        Err(err) => {
            let status = match &err {
                ReconcileError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
                ReconcileError::Forbidden | ReconcileError::SourceForbidden(_) => StatusCode::FORBIDDEN,
                ReconcileError::SourceUnknown(_) => StatusCode::NOT_FOUND,
                ReconcileError::NoStatusUrl(_) => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            let message = match err {
                ReconcileError::Store(err) => crate::error::ApiError::from(err).message,
                other => other.to_string(),
            };
            page::message(status, "Not reconciled", &format!("{message}. Nothing was asked or recorded."))
        }
    }
}
