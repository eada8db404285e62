//! Replay from the console: the form (scope from the chart's span, typed, or a gap review's
//! selection), the preview (always first: the dry run's counts per outcome, eligible, sample
//! with destination and idempotency key, ETA, risk), running it live with a reason (an
//! override of confirmed events is high risk and needs its own confirmation), a job's page
//! with its progress pushed over server-sent events (every count the job has, its pause),
//! pause and resume, and cancel with confirmation. Preview and run are `POST /v1/replays`'
//! function, progress `GET /v1/replays/{id}/events`', pause and resume
//! `POST /v1/replays/{id}/pause|resume`', cancel `POST /v1/replays/{id}/cancel`'s.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::events::enc;
use super::page::{self, Nav};
use super::session::{Posted, Signed};
use crate::access::Role;
use crate::http::AppState;
use crate::http::replays::{self as api, create_replay, visible_job};
use crate::replay::plan::{Override, ReplayRequest};
use crate::timestamp::format_ms;

/// The replay form's fields, as typed (what a preview carries on to the live run).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Draft {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    /// Event ids, separated by commas, spaces or lines.
    #[serde(default)]
    pub event_ids: String,
    #[serde(default)]
    pub filter: String,
    #[serde(default)]
    pub limit: String,
    #[serde(default)]
    pub rate: String,
    #[serde(default)]
    pub include_failed: String,
    #[serde(default)]
    pub override_confirmed: String,
    #[serde(default)]
    pub override_note: String,
}

impl Draft {
    /// From a posted form; a gap review's selection (`event`, repeated) becomes `event_ids`.
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let one =
            |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
        let selected: Vec<&str> = pairs.iter().filter(|(k, _)| k == "event").map(|(_, v)| v.as_str()).collect();
        let mut event_ids = one("event_ids");
        if !selected.is_empty() {
            event_ids = selected.join("\n");
        }
        Draft {
            source: one("source"),
            since: one("since"),
            until: one("until"),
            event_ids,
            filter: one("filter"),
            limit: one("limit"),
            rate: one("rate"),
            include_failed: one("include_failed"),
            override_confirmed: one("override_confirmed"),
            override_note: one("override_note"),
        }
    }

    fn ids(&self) -> Vec<String> {
        self.event_ids.split([',', ' ', '\n', '\r', '\t']).filter(|s| !s.is_empty()).map(str::to_string).collect()
    }

    fn overrides(&self) -> bool {
        !self.override_confirmed.is_empty()
    }

    /// The API request this draft is; a number that does not parse is the form's error.
    fn request(&self, dry_run: bool, reason: Option<String>) -> Result<ReplayRequest, String> {
        let text = |v: &str| (!v.is_empty()).then(|| v.to_string());
        let number = |name: &str, v: &str| -> Result<Option<f64>, String> {
            v.parse::<f64>()
                .map(Some)
                .or_else(|_| if v.is_empty() { Ok(None) } else { Err(format!("`{name}` `{v}` is not a number")) })
        };
        let ids = self.ids();
        Ok(ReplayRequest {
            source: text(&self.source),
            since: text(&self.since),
            until: text(&self.until),
            event_ids: (!ids.is_empty()).then_some(ids),
            filter: text(&self.filter),
            limit: number("limit", &self.limit)?.map(|l| l as i64),
            rate: number("rate", &self.rate)?,
            include_failed: !self.include_failed.is_empty(),
            dry_run: Some(dry_run),
            reason,
            override_confirmed: self.overrides().then(|| Override { note: self.override_note.clone() }),
            to: None,
            // The API's default: ask the handler first where the source has a status URL.
            ask_first: None,
            after_event: None,
        })
    }
}

#[derive(Template)]
#[template(path = "console/replay.html")]
struct Form {
    nav: Nav,
    d: Draft,
    sources: Vec<(String, bool)>,
    error: Option<String>,
    /// The error is the filter's (shown under that input).
    filter_error: bool,
    plan: Option<Plan>,
    /// Why this user may not run it live (a viewer), beside the disabled button.
    cannot_run: Option<String>,
    reason: String,
}

/// A dry run's answer, as the preview shows it.
pub struct Plan {
    pub confirmed: i64,
    pub unknown: i64,
    pub failed: i64,
    pub eligible: i64,
    pub eligible_in_scope: i64,
    pub limit: i64,
    pub rate: f64,
    pub eta: String,
    pub risk: String,
    pub eligible_outcomes: String,
    pub filter: String,
    pub sample: Vec<Sample>,
}

pub struct Sample {
    pub event_id: String,
    pub outcome: String,
    pub received_at: String,
    pub destination: String,
    pub idempotency_key: String,
}

fn eta(seconds: f64) -> String {
    let s = seconds.ceil() as u64;
    match s {
        0..=89 => format!("{s} s"),
        90..=5399 => format!("{} min", s.div_ceil(60)),
        _ => format!("{:.1} h", s as f64 / 3600.0),
    }
}

fn plan_of(shown: &Value) -> Plan {
    let int = |v: &Value| v.as_i64().unwrap_or(0);
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    Plan {
        confirmed: int(&shown["counts"]["confirmed"]),
        unknown: int(&shown["counts"]["unknown"]),
        failed: int(&shown["counts"]["failed"]),
        eligible: int(&shown["eligible"]),
        eligible_in_scope: int(&shown["eligible_in_scope"]),
        limit: int(&shown["limit"]),
        rate: shown["rate"].as_f64().unwrap_or(0.0),
        eta: eta(shown["estimated_seconds"].as_f64().unwrap_or(0.0)),
        risk: text(&shown["risk"]),
        eligible_outcomes: shown["eligible_outcomes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default(),
        filter: text(&shown["filter"]),
        sample: shown["sample"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|s| Sample {
                        event_id: text(&s["event_id"]),
                        outcome: text(&s["outcome"]),
                        received_at: text(&s["received_at"]),
                        destination: text(&s["destination"]),
                        idempotency_key: text(&s["idempotency_key"]),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn form_page(
    app: &AppState,
    who: &Signed,
    status: StatusCode,
    d: Draft,
    error: Option<(String, bool)>,
    plan: Option<Plan>,
    reason: String,
) -> Response {
    let cannot_run = (!who.may(Role::Operator)).then(|| {
        format!(
            "Replays, their preview too, need the operator role; you are signed in as {}.",
            who.caller.role.as_str()
        )
    });
    let (error, filter_error) = match error {
        Some((message, filter)) => (Some(message), filter),
        None => (None, false),
    };
    let form = Form {
        nav: Nav::new(who, "replay"),
        sources: super::page::source_choices(app, who, Some(d.source.as_str())),
        d,
        error,
        filter_error,
        plan,
        cannot_run,
        reason,
    };
    page::render(status, &form)
}

/// `GET /ui/replay`: the form, with the scope of the link that led here (the chart's span).
pub async fn form(State(app): State<AppState>, who: Signed, Query(d): Query<Draft>) -> Response {
    form_page(&app, &who, StatusCode::OK, d, None, None, String::new())
}

/// `POST /ui/replay/preview`: the dry run (audited, like every run), shown with the form to
/// run it live.
pub async fn preview(State(app): State<AppState>, posted: Posted<Vec<(String, String)>>) -> Response {
    let Posted { who, form } = posted;
    let d = Draft::from_pairs(&form);
    let request = match d.request(true, None) {
        Ok(request) => request,
        Err(message) => {
            return form_page(&app, &who, StatusCode::BAD_REQUEST, d, Some((message, false)), None, String::new());
        }
    };
    match create_replay(&app, &who.caller, request).await {
        Ok((_, shown)) => form_page(&app, &who, StatusCode::OK, d, None, Some(plan_of(&shown)), String::new()),
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => {
            page::message(err.status, "Store unavailable", &err.message)
        }
        Err(err) => {
            let filter = err.code == "filter_invalid";
            form_page(&app, &who, err.status, d, Some((err.message, filter)), None, String::new())
        }
    }
}

/// `POST /ui/replay/run`: the live run, with its reason; an override needs its own
/// confirmation. Then to the job's page.
pub async fn run(State(app): State<AppState>, posted: Posted<Vec<(String, String)>>) -> Response {
    let Posted { who, form } = posted;
    let d = Draft::from_pairs(&form);
    let field =
        |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
    let reason = field("reason");
    if d.overrides() && field("confirm_override") != "yes" {
        let message =
            "Resending confirmed events is high risk: tick the box that confirms it, or preview without the override.";
        return form_page(&app, &who, StatusCode::BAD_REQUEST, d, Some((message.into(), false)), None, reason);
    }
    let request = match d.request(false, (!reason.is_empty()).then(|| reason.clone())) {
        Ok(request) => request,
        Err(message) => return form_page(&app, &who, StatusCode::BAD_REQUEST, d, Some((message, false)), None, reason),
    };
    match create_replay(&app, &who.caller, request).await {
        Ok((_, shown)) => {
            let id = shown["id"].as_str().unwrap_or_default();
            Redirect::to(&format!("/ui/replays/{}", enc(id))).into_response()
        }
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => {
            page::message(err.status, "Store unavailable", &err.message)
        }
        Err(err) => {
            let filter = err.code == "filter_invalid";
            form_page(&app, &who, err.status, d, Some((err.message, filter)), None, reason)
        }
    }
}

#[derive(Template)]
#[template(path = "console/job.html")]
struct Job {
    nav: Nav,
    id: String,
    state: String,
    created_by: String,
    created_at: String,
    finished_at: String,
    reason: String,
    scope: String,
    filter: String,
    rate: f64,
    current_rate: f64,
    counts: crate::store::ReplayCounts,
    confirmed_in_scope: String,
    error: String,
    running: bool,
    /// The overview with the replay's window selected: where the gap is seen closing.
    overview: Option<String>,
    /// Who paused it and when (RFC 3339), while it is paused.
    paused: Option<(String, String)>,
    /// Why this user may not pause, resume or cancel it (a viewer).
    cannot_cancel: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct JobQuery {
    done: Option<String>,
}

/// `GET /ui/replays/{id}`: the job, its counts and rate, updated live by the script.
pub async fn job(
    State(app): State<AppState>,
    who: Signed,
    Path(id): Path<String>,
    Query(q): Query<JobQuery>,
) -> Response {
    let job = match visible_job(&app, &who.caller, &id).await {
        Ok(job) => job,
        Err(err) => return page::message(err.status, "No such replay", &err.message),
    };
    let request = &job.request;
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let scope = match (request["source"].as_str(), request["since"].as_str()) {
        (source, Some(since)) => format!(
            "{} from {since} until {}",
            source.unwrap_or("every source"),
            request["until"].as_str().map(str::to_string).unwrap_or_else(|| format_ms(job.created_at))
        ),
        _ => format!("{} events by id", request["event_ids"].as_array().map(Vec::len).unwrap_or(0)),
    };
    let overview = request["since"].as_str().map(|since| {
        let until = request["until"].as_str().map(str::to_string).unwrap_or_else(|| format_ms(job.created_at));
        let mut link = format!("/ui/?from={}&to={}", enc(since), enc(&until));
        if let Some(source) = request["source"].as_str() {
            link.push_str(&format!("&source={}", enc(source)));
        }
        link
    });
    let shown = api::job_json(&job);
    let confirmed = {
        let mut states = Box::pin(api::progress(app.clone(), who.caller.clone(), id.clone()));
        use futures_util::StreamExt;
        states.next().await.and_then(|s| s["confirmed_in_scope"].as_i64())
    };
    let running = matches!(job.state.as_str(), "running" | "paused");
    let page = Job {
        nav: Nav::new(&who, "replays"),
        id: job.id.clone(),
        state: job.state.clone(),
        created_by: job.created_by.clone(),
        created_at: format_ms(job.created_at),
        finished_at: job.finished_at.map(format_ms).unwrap_or_default(),
        reason: text(&shown["reason"]),
        scope,
        filter: text(&shown["filter"]),
        rate: job.rate,
        current_rate: job.current_rate,
        counts: job.counts.clone(),
        confirmed_in_scope: confirmed.map(|c| c.to_string()).unwrap_or_else(|| "—".into()),
        error: job.error.clone().unwrap_or_default(),
        running,
        overview,
        paused: job.paused.as_ref().map(|p| (p.by.clone(), format_ms(p.at))),
        cannot_cancel: (!who.may(Role::Operator)).then(|| {
            format!(
                "Pausing, resuming and cancelling need the operator role; you are signed in as {}.",
                who.caller.role.as_str()
            )
        }),
        notice: match q.done.as_deref() {
            Some("cancelled") => Some("Cancelled. Items already sent stay sent.".to_string()),
            Some("paused") => Some("Paused: nothing more is sent until it is resumed.".to_string()),
            Some("resumed") => Some("Resumed: it goes on where it stopped.".to_string()),
            _ => None,
        },
    };
    page::render(StatusCode::OK, &page)
}

/// `GET /ui/replays/{id}/events`: the job's progress as server-sent events, for its page.
pub async fn events(State(app): State<AppState>, who: Signed, Path(id): Path<String>) -> Response {
    if let Err(err) = visible_job(&app, &who.caller, &id).await {
        return page::message(err.status, "No such replay", &err.message);
    }
    api::progress_events(api::progress(app, who.caller, id))
}

#[derive(Template)]
#[template(path = "console/cancel.html")]
struct Cancel {
    nav: Nav,
    id: String,
    sent: i64,
    eligible: i64,
    cannot_cancel: Option<String>,
}

/// `GET /ui/replays/{id}/cancel`: are you sure?
pub async fn cancel_form(State(app): State<AppState>, who: Signed, Path(id): Path<String>) -> Response {
    let job = match visible_job(&app, &who.caller, &id).await {
        Ok(job) => job,
        Err(err) => return page::message(err.status, "No such replay", &err.message),
    };
    let cannot_cancel = if !who.may(Role::Operator) {
        Some(format!("Cancelling needs the operator role; you are signed in as {}.", who.caller.role.as_str()))
    } else if job.state != "running" && job.state != "paused" {
        Some(format!("This replay is {}; there is nothing to cancel.", job.state))
    } else {
        None
    };
    let page = Cancel {
        nav: Nav::new(&who, "replays"),
        id,
        sent: job.counts.sent,
        eligible: job.counts.eligible,
        cannot_cancel,
    };
    page::render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct NoFields {}

/// `POST /ui/replays/{id}/cancel`: cancels it (audited), back to its page.
pub async fn cancel(State(app): State<AppState>, Path(id): Path<String>, posted: Posted<NoFields>) -> Response {
    let Posted { who, form: NoFields {} } = posted;
    match api::cancel_replay(&app, &who.caller, &id).await {
        Ok(_) => Redirect::to(&format!("/ui/replays/{}?done=cancelled", enc(&id))).into_response(),
        Err(err) => page::message(err.status, "Not cancelled", &err.message),
    }
}

/// `POST /ui/replays/{id}/pause`: stops its sending (audited), back to its page.
pub async fn pause(State(app): State<AppState>, Path(id): Path<String>, posted: Posted<NoFields>) -> Response {
    toggle(app, id, posted, true).await
}

/// `POST /ui/replays/{id}/resume`: goes on where it stopped (audited), back to its page.
pub async fn resume(State(app): State<AppState>, Path(id): Path<String>, posted: Posted<NoFields>) -> Response {
    toggle(app, id, posted, false).await
}

async fn toggle(app: AppState, id: String, posted: Posted<NoFields>, pause: bool) -> Response {
    let Posted { who, form: NoFields {} } = posted;
    let (done, title) = if pause { ("paused", "Not paused") } else { ("resumed", "Not resumed") };
    match api::toggle_pause(&app, &who.caller, &id, pause).await {
        Ok(_) => Redirect::to(&format!("/ui/replays/{}?done={done}", enc(&id))).into_response(),
        Err(err) => page::message(err.status, title, &err.message),
    }
}

/// The overview's window as a replay form's scope (what "Replay this span" links to).
pub fn scope_link(source: Option<&str>, since: i64, until: i64) -> String {
    let mut link = format!("/ui/replay?since={}&until={}", enc(&format_ms(since)), enc(&format_ms(until)));
    if let Some(source) = source {
        link.push_str(&format!("&source={}", enc(source)));
    }
    link
}
