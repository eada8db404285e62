//! The replays page: past and running jobs, newest first, a page at a time (by cursor),
//! filtered by state and source, each linking to its page (a running one's is live, so an
//! operator whose tab closed re-attaches there). The data is `GET /v1/replays`': the same
//! checks ([`crate::replay::jobs::list_query`]) and the same store call.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::chart::clock_time;
use super::events::enc;
use super::page::{self, Nav};
use super::session::Signed;
use crate::http::AppState;
use crate::replay::jobs::{STATES, list_query};
use crate::store::ReplayJob;

/// Jobs per page.
const PAGE: i64 = 25;

#[derive(Deserialize, Default)]
pub struct Params {
    state: Option<String>,
    source: Option<String>,
    cursor: Option<String>,
    /// Jobs per page (default 25).
    limit: Option<i64>,
}

/// A job as a row of the list.
pub struct JobRow {
    pub id: String,
    pub state: String,
    pub source: String,
    pub created: String,
    pub created_at: String,
    pub created_by: String,
    pub reason: String,
    pub eligible: i64,
    pub sent: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Every skip: a receipt arrived, the handler's answer to a probe, a purged payload, other.
    pub skipped: i64,
    /// Running or paused: its page follows it live.
    pub live: bool,
}

fn row(job: &ReplayJob, now: i64) -> JobRow {
    let c = &job.counts;
    JobRow {
        id: job.id.clone(),
        state: job.state.clone(),
        source: job.request["source"].as_str().unwrap_or("every source").to_string(),
        created: clock_time(job.created_at, now - job.created_at >= 86_400_000),
        created_at: crate::timestamp::format_ms(job.created_at),
        created_by: job.created_by.clone(),
        reason: job.request["reason"].as_str().unwrap_or("").to_string(),
        eligible: c.eligible,
        sent: c.sent,
        succeeded: c.succeeded,
        failed: c.failed,
        skipped: c.skipped_receipt + c.skipped_probe + c.skipped_purged + c.skipped_other,
        live: matches!(job.state.as_str(), "running" | "paused"),
    }
}

#[derive(Template)]
#[template(path = "console/replays.html")]
struct Jobs {
    nav: Nav,
    states: Vec<(&'static str, bool)>,
    sources: Vec<(String, bool)>,
    rows: Vec<JobRow>,
    /// The list without a cursor (when on a later page), and the next page.
    first: Option<String>,
    next: Option<String>,
    error: Option<String>,
}

/// `GET /ui/replays?state=&source=&limit=&cursor=`.
pub async fn list(State(app): State<AppState>, who: Signed, Query(p): Query<Params>) -> Response {
    let some = |v: &Option<String>| v.as_ref().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let (state, source, cursor) = (some(&p.state), some(&p.source), some(&p.cursor));
    let mut base = String::from("/ui/replays?");
    let limit = p.limit.map(|l| l.to_string());
    for (k, v) in [("state", &state), ("source", &source), ("limit", &limit)] {
        if let Some(v) = v {
            base.push_str(&format!("{k}={}&", enc(v)));
        }
    }
    let mut error = None;
    let mut rows = Vec::new();
    let mut next = None;
    let checked = list_query(state.clone(), source.clone(), Some(p.limit.unwrap_or(PAGE)), cursor.clone());
    let allowed = source.as_deref().map_or(Ok(()), |s| who.caller.require_source(s).map_err(|e| e.message));
    match checked.and_then(|query| allowed.map(|_| query)) {
        Err(message) => error = Some(message),
        Ok(query) => match app.store.list_replays(&query, &who.caller.scope).await {
            Ok(page) => {
                let now = app.clock.now_ms();
                rows = page.jobs.iter().map(|j| row(j, now)).collect();
                next = page.next_cursor.map(|c| format!("{base}cursor={}", enc(&c)));
            }
            Err(err) => {
                let err = crate::error::ApiError::from(err);
                return page::message(err.status, "Store unavailable", &err.message);
            }
        },
    }
    let jobs = Jobs {
        nav: Nav::new(&who, "replays"),
        states: STATES.iter().map(|s| (*s, state.as_deref() == Some(*s))).collect(),
        sources: super::page::source_choices(&app, &who, source.as_deref()),
        rows,
        first: cursor.is_some().then(|| base.trim_end_matches(['&', '?']).to_string()),
        next,
        error: error.clone(),
    };
    let status = if error.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    page::render(status, &jobs)
}
