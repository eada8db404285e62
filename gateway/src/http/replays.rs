//! `POST /v1/replays` (dry run by default), `GET /v1/replays` (newest first, keyset paging),
//! `GET /v1/replays/{id}`, `POST /v1/replays/{id}/cancel`, `/pause` and `/resume`.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::segment::Segment;
use super::{AppState, Caller, Role};
use crate::error::ApiError;
use crate::replay::plan::{PlanError, ReplayRequest, plan};
use crate::store::{FailureCause, NewAuditEntry, NewReplay, ReplayCounts, ReplayJob, Toggle};

pub(super) fn plan_error(err: PlanError) -> ApiError {
    match err {
        PlanError::Store(err) => err.into(),
        PlanError::Forbidden(message) => ApiError::forbidden("role_insufficient", message),
        PlanError::SourceForbidden(_) => ApiError::forbidden("source_forbidden", err.to_string()),
        PlanError::SourceUnknown(_) => ApiError::not_found("source_unknown", err.to_string()),
        other => ApiError::bad_request(other.code(), other.to_string()),
    }
}

#[utoipa::path(
    post,
    path = "/v1/replays",
    tag = "replays",
    summary = "Plan a replay (dry run) or start one",
    description = "A scope is mandatory: a window (`since`, optionally `until`) or `event_ids`, narrowed \
        by `source` and `filter`. A dry run unless `\"dry_run\": false` (200 with counts, eligible \
        events, a sample, the time it takes and the risk; audited). A live run needs the operator \
        role and a `reason`, resends only `unknown` events (and `failed` with `include_failed`; \
        `confirmed` only with `override_confirmed`), and answers 202 with the job's `id`. `to` \
        (another destination) needs the admin role.",
    request_body = crate::replay::plan::ReplayRequest,
    responses(
        (status = 200, description = "The plan (a dry run)", body = super::openapi::ReplayPlan),
        (status = 202, description = "The run started", body = super::openapi::ReplayPlan),
        (status = 400, description = "A body or field that does not parse or is missing: `invalid_request`, \
            `scope_required`, `reason_required`, `override_note_required`, `filter_invalid`", body = super::openapi::ErrorBody),
        (status = 404, description = "No such source (`source_unknown`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<Json<ReplayRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let (status, shown) = create_replay(&app, &caller, request).await?;
    Ok((status, Json(shown)))
}

/// Plans a replay and, unless it is a dry run, starts it (the job and its audit entry in one
/// transaction): `POST /v1/replays`' answer (200 with the plan, or 202 with the job's `id`),
/// and the console's preview and run.
pub async fn create_replay(
    app: &AppState,
    caller: &Caller,
    request: ReplayRequest,
) -> Result<(StatusCode, Value), ApiError> {
    let now = app.clock.now_ms();
    let plan = plan(&app.store, &app.sources, request, caller.role, &caller.scope, now).await.map_err(plan_error)?;
    let mut shown = plan.to_json();
    if plan.request.dry_run != Some(false) {
        let preview = crate::probe::preview::preview(&app.prober, &app.store, &app.sources, &plan).await?;
        shown["ask_first"] = json!(preview);
        app.store
            .append_audit(NewAuditEntry {
                at: now,
                actor: caller.name.clone(),
                action: "replay.dry_run".into(),
                subject: plan.request.source.clone(),
                details: json!({ "request": plan.request, "plan": summary_of(&shown) }),
            })
            .await?;
        return Ok((StatusCode::OK, shown));
    }
    let id = format!("rpl_{}", ulid::Ulid::new());
    let mut recorded = serde_json::to_value(&plan.request).expect("serialises");
    recorded["eligible_outcomes"] = json!(plan.eligible_outcomes);
    recorded["filter_normalised"] = json!(plan.filter.as_ref().map(ToString::to_string));
    // The sources the run may touch, when its maker's token was scoped: who else may see it.
    recorded["scope"] = json!(caller.scope.limited_to());
    // What the limit left out of this run, and the window's end as planned: a continuation
    // covers the same scope after the run's last item.
    recorded["left_out"] = json!(plan.eligible_in_scope - plan.eligible);
    recorded["until_planned"] = json!(plan.until.map(crate::timestamp::format_ms));
    let job = NewReplay {
        id: id.clone(),
        created_by: caller.name.clone(),
        created_at: now,
        request: recorded.clone(),
        destination: plan.request.to.clone(),
        rate: plan.rate,
    };
    let audit = |eligible: i64| NewAuditEntry {
        at: now,
        actor: caller.name.clone(),
        action: "replay.started".into(),
        subject: Some(id.clone()),
        details: json!({
            "request": recorded,
            "reason": plan.request.reason,
            "override_note": plan.request.override_confirmed.as_ref().map(|o| o.note.clone()),
            "plan": summary_of(&shown),
            "eligible": eligible,
        }),
    };
    // The job and its audit entry commit together: a run that is not in the audit log does
    // not exist.
    let eligible = app.store.create_replay(&job, &plan.selection, plan.limit, audit).await?;
    app.replayer.wake();
    shown["dry_run"] = json!(false);
    shown["ask_first"] = json!({ "enabled": plan.request.asks_first() });
    shown["id"] = json!(id);
    shown["state"] = json!("running");
    shown["eligible"] = json!(eligible);
    Ok((StatusCode::ACCEPTED, shown))
}

/// The plan without its sample, for the audit log.
fn summary_of(plan: &Value) -> Value {
    let mut summary = plan.clone();
    if let Some(object) = summary.as_object_mut() {
        object.remove("sample");
    }
    summary
}

/// A job as the API shows it (the list shows the same, without `failures`).
pub fn job_json(job: &ReplayJob) -> Value {
    json!({
        "id": job.id,
        "state": job.state,
        "paused": job.paused.as_ref().map(|p| json!({ "by": p.by, "at": super::format_ms(p.at) })),
        // Every item has its final result: the counts will not move again.
        "settled": job.settled(),
        "left_out": job.request["left_out"],
        "created_by": job.created_by,
        "created_at": super::format_ms(job.created_at),
        "finished_at": job.finished_at.map(super::format_ms),
        "reason": job.request["reason"],
        "source": job.request["source"],
        // The window as planned (its end fixed), and where it started after: what a
        // continuation of the same scope says again.
        "since": job.request["since"],
        "until": job.request["until_planned"],
        "after_event": job.request["after_event"],
        "filter": job.request["filter_normalised"],
        "destination": job.destination,
        "rate": job.rate,
        "current_rate": job.current_rate,
        "counts": job.counts,
        "error": job.error,
    })
}

/// The job, when it exists and the caller's scope covers every source it may touch (its
/// `source`, or the scope its maker's token had); a job out of scope is not there for it.
pub async fn visible_job(app: &AppState, caller: &Caller, id: &str) -> Result<ReplayJob, ApiError> {
    let unknown = || ApiError::not_found("replay_unknown", format!("no replay `{id}`"));
    let job = app.store.get_replay(id).await?.ok_or_else(unknown)?;
    if job.visible_to(&caller.scope) { Ok(job) } else { Err(unknown()) }
}

/// The job with why its items failed (most common cause first) and its last item (where a
/// continuation of its scope starts after).
async fn job_detail(app: &AppState, job: &ReplayJob) -> Result<Value, ApiError> {
    let causes = app.store.replay_failure_causes(&job.id, 5).await?;
    let mut shown = job_json(job);
    shown["failures"] = json!(
        causes
            .iter()
            .map(|c: &FailureCause| json!({
                "status_code": c.status_code, "error": c.error, "count": c.count, "cause": c.describe(),
            }))
            .collect::<Vec<_>>()
    );
    shown["last_event_id"] = json!(app.store.replay_last_event(&job.id).await?);
    Ok(shown)
}

#[utoipa::path(
    get,
    path = "/v1/replays/{id}",
    tag = "replays",
    summary = "One replay job",
    description = "The job's state and counts, why its items failed (most common cause first) and its \
        last item (`after_event` of a continuation). A job over sources outside the token's scope \
        is not there for it.",
    params(("id" = String, Path, description = "The job's id (`rpl_…`)")),
    responses(
        (status = 200, description = "The job", body = super::openapi::ReplayDetail),
        (status = 404, description = "No such replay (`replay_unknown`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn show(State(app): State<AppState>, caller: Caller, Segment(id): Segment) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let job = visible_job(&app, &caller, &id).await?;
    Ok(Json(job_detail(&app, &job).await?))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[param(value_type = Option<super::openapi::ReplayState>)]
    state: Option<String>,
    source: Option<String>,
    /// 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The last page's `next_cursor`.
    cursor: Option<String>,
}

/// `GET /v1/replays?state=&source=&limit=&cursor=`: jobs newest first; `next_cursor` pages.
#[utoipa::path(
    get,
    path = "/v1/replays",
    tag = "replays",
    summary = "List replay jobs, newest first",
    description = "The jobs the token's scope covers, by state and source, paged with `cursor`.",
    params(ListParams),
    responses(
        (status = 200, description = "A page of jobs", body = super::openapi::ReplayPage),
        (status = 400, description = "A parameter does not parse (`invalid_query`)", body = super::openapi::ErrorBody),
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
    let query = crate::replay::jobs::list_query(p.state, p.source, p.limit, p.cursor)
        .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    if let Some(source) = &query.source {
        caller.require_source(source)?;
    }
    let page = app.store.list_replays(&query, &caller.scope).await?;
    Ok(Json(json!({
        "data": page.jobs.iter().map(job_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

/// `POST /v1/replays/{id}/pause` and `/resume`: stop sending and go on (audited; the job
/// keeps its lease while paused). Pausing takes effect at once on the gateway running the
/// job when it is this one, else at that gateway's next lease renewal (within a second).
async fn toggle(app: AppState, caller: Caller, id: String, pause: bool) -> Result<Json<Value>, ApiError> {
    let job = toggle_pause(&app, &caller, &id, pause).await?;
    Ok(Json(job_detail(&app, &job).await?))
}

/// Pauses or resumes a job (audited): `/pause` and `/resume`, and the console's buttons.
/// Answers the job as it is after.
pub async fn toggle_pause(app: &AppState, caller: &Caller, id: &str, pause: bool) -> Result<ReplayJob, ApiError> {
    caller.require(Role::Operator)?;
    visible_job(app, caller, id).await?;
    let now = app.clock.now_ms();
    let action = if pause { "replay.paused" } else { "replay.resumed" };
    let audit = |counts: &ReplayCounts| NewAuditEntry {
        at: now,
        actor: caller.name.clone(),
        action: action.into(),
        subject: Some(id.to_string()),
        details: json!({ "counts": counts }),
    };
    match app.store.toggle_replay_pause(id, pause, &caller.name, now, audit).await? {
        Toggle::Done(job) => {
            if pause {
                app.replayer.pause_local(id);
            } else {
                app.replayer.resume_local(id);
                app.replayer.wake();
            }
            Ok(*job)
        }
        Toggle::NotFound => Err(ApiError::not_found("replay_unknown", format!("no replay `{id}`"))),
        Toggle::NotApplicable(state) => Err(ApiError::new(
            StatusCode::CONFLICT,
            if pause { "replay_not_running" } else { "replay_not_paused" },
            format!("replay `{id}` is {state}"),
        )),
    }
}

#[utoipa::path(
    post,
    path = "/v1/replays/{id}/pause",
    tag = "replays",
    summary = "Pause a running replay",
    description = "Stops sending (audited); the job keeps its place. Takes effect at once on the gateway \
        running it when it is this one, else within a second.",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, paused", body = super::openapi::ReplayDetail),
        (status = 404, description = "No such replay (`replay_unknown`)", body = super::openapi::ErrorBody),
        (status = 409, description = "The job is not running (`replay_not_running`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("operator")))
)]
async fn pause(State(app): State<AppState>, caller: Caller, Segment(id): Segment) -> Result<Json<Value>, ApiError> {
    toggle(app, caller, id, true).await
}

#[utoipa::path(
    post,
    path = "/v1/replays/{id}/resume",
    tag = "replays",
    summary = "Resume a paused replay",
    description = "Goes on sending where the job paused (audited).",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, running", body = super::openapi::ReplayDetail),
        (status = 404, description = "No such replay (`replay_unknown`)", body = super::openapi::ErrorBody),
        (status = 409, description = "The job is not paused (`replay_not_paused`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("operator")))
)]
async fn resume(State(app): State<AppState>, caller: Caller, Segment(id): Segment) -> Result<Json<Value>, ApiError> {
    toggle(app, caller, id, false).await
}

/// Cancels a running job (audited with its counts at that moment): `POST
/// /v1/replays/{id}/cancel`, and the console's cancel. Answers the job as it is after.
pub async fn cancel_replay(app: &AppState, caller: &Caller, id: &str) -> Result<ReplayJob, ApiError> {
    caller.require(Role::Operator)?;
    let job = visible_job(app, caller, id).await?;
    let now = app.clock.now_ms();
    let audit = |counts: &crate::store::ReplayCounts| NewAuditEntry {
        at: now,
        actor: caller.name.clone(),
        action: "replay.cancelled".into(),
        subject: Some(id.to_string()),
        details: json!({ "counts_at_cancel": counts }),
    };
    if !app.store.cancel_replay(id, now, audit).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "replay_not_running",
            format!("replay `{id}` is {}", job.state),
        ));
    }
    app.replayer.stop_local(id);
    Ok(app.store.get_replay(id).await?.unwrap_or(job))
}

#[utoipa::path(
    post,
    path = "/v1/replays/{id}/cancel",
    tag = "replays",
    summary = "Cancel a replay",
    description = "Stops a running or paused job for good (audited with its counts at that moment).",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job, cancelled", body = super::openapi::ReplayDetail),
        (status = 404, description = "No such replay (`replay_unknown`)", body = super::openapi::ErrorBody),
        (status = 409, description = "The job is over (`replay_not_running`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("operator")))
)]
async fn cancel(State(app): State<AppState>, caller: Caller, Segment(id): Segment) -> Result<Json<Value>, ApiError> {
    let job = cancel_replay(&app, &caller, &id).await?;
    Ok(Json(job_detail(&app, &job).await?))
}

/// How often a progress stream looks at its job.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(400);

/// A job's progress as a stream of its states, each when it changed: the job (`job_json`)
/// with `confirmed_in_scope`, the `confirmed` count of the replay's window (its `source`,
/// `since` and `until`) as receipts arrive. Ends after the job has ended. Behind
/// `GET /v1/replays/{id}/events` and the console's replay page.
pub fn progress(app: AppState, caller: Caller, id: String) -> impl futures_util::Stream<Item = Value> + Send {
    futures_util::stream::unfold(
        (app, caller, id, None::<String>, false),
        |(app, caller, id, last, ended)| async move {
            if ended {
                return None;
            }
            let mut first = last.is_none();
            loop {
                if !first {
                    tokio::time::sleep(PROGRESS_EVERY).await;
                }
                first = false;
                let job = match visible_job(&app, &caller, &id).await {
                    Ok(job) => job,
                    Err(err) => {
                        let gone = json!({ "error": { "code": err.code, "message": err.message } });
                        return Some((gone, (app, caller, id, last, true)));
                    }
                };
                let mut shown = job_json(&job);
                shown["confirmed_in_scope"] = json!(confirmed_in_scope(&app, &caller, &job).await);
                let text = shown.to_string();
                let over = !matches!(job.state.as_str(), "running" | "paused");
                if last.as_deref() != Some(text.as_str()) || over {
                    return Some((shown, (app, caller, id, Some(text), over)));
                }
            }
        },
    )
}

/// The `confirmed` events of a replay's window now (`None` for a replay by event ids).
async fn confirmed_in_scope(app: &AppState, caller: &Caller, job: &ReplayJob) -> Option<i64> {
    let since = job.request["since"].as_str()?;
    let until = job.request["until"].as_str().map(str::to_string).unwrap_or_else(|| super::format_ms(job.created_at));
    let span = super::parse_rfc3339("until", &until).ok()? - super::parse_rfc3339("since", since).ok()?;
    let params = super::summary::Params {
        source: job.request["source"].as_str().map(str::to_string),
        since: Some(since.to_string()),
        until: Some(until),
        bucket: Some(format!("{}s", (span / 1000 / 1000).max(1) + 1)),
    };
    super::summary::gap_view(app, caller, &params).await.ok().map(|view| view.totals.confirmed)
}

/// `GET /v1/replays/{id}/events`: the job's progress as server-sent events (`progress`, then
/// `end` once the job is over).
#[utoipa::path(
    get,
    path = "/v1/replays/{id}/events",
    tag = "replays",
    summary = "A replay's progress as server-sent events",
    description = "A `progress` event with the job (as in the list, plus `confirmed_in_scope`: the \
        window's `confirmed` count now) each time it changes, then one `end` event once the job is \
        over (or an `end` with an `error` body when it is no longer visible).",
    params(("id" = String, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The stream; each event's data is a JSON object", content_type = "text/event-stream", body = Object),
        (status = 404, description = "No such replay (`replay_unknown`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn events(
    State(app): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<axum::response::Response, ApiError> {
    caller.require(Role::Viewer)?;
    visible_job(&app, &caller, &id).await?;
    Ok(progress_events(progress(app, caller, id)))
}

/// A progress stream as server-sent events: `progress` for each state, `end` for the last.
pub fn progress_events(stream: impl futures_util::Stream<Item = Value> + Send + 'static) -> axum::response::Response {
    use axum::response::IntoResponse;
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let events = stream.map(|state| {
        let over = state["error"].is_object() || !matches!(state["state"].as_str(), Some("running" | "paused"));
        Ok::<_, std::convert::Infallible>(
            Event::default().event(if over { "end" } else { "progress" }).data(state.to_string()),
        )
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(cancel))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .routes(routes!(events))
}
