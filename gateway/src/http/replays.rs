//! `POST /v1/replays` (dry run by default), `GET /v1/replays/{id}`, `POST /v1/replays/{id}/cancel`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{AppState, Caller, Role};
use crate::error::ApiError;
use crate::replay::plan::{PlanError, ReplayRequest, plan};
use crate::store::{NewAuditEntry, NewReplay, ReplayJob};

fn plan_error(err: PlanError) -> ApiError {
    match err {
        PlanError::Store(err) => err.into(),
        PlanError::Forbidden(message) => ApiError::forbidden("role_insufficient", message),
        PlanError::SourceForbidden(_) => ApiError::forbidden("source_forbidden", err.to_string()),
        PlanError::SourceUnknown(_) => ApiError::not_found("source_unknown", err.to_string()),
        other => ApiError::bad_request(other.code(), other.to_string()),
    }
}

async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<Json<ReplayRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
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
        return Ok((StatusCode::OK, Json(shown)));
    }
    let id = format!("rpl_{}", ulid::Ulid::new());
    let mut recorded = serde_json::to_value(&plan.request).expect("serialises");
    recorded["eligible_outcomes"] = json!(plan.eligible_outcomes);
    recorded["filter_normalised"] = json!(plan.filter.as_ref().map(ToString::to_string));
    // The sources the run may touch, when its maker's token was scoped: who else may see it.
    recorded["scope"] = json!(caller.scope.limited_to());
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
    Ok((StatusCode::ACCEPTED, Json(shown)))
}

/// The plan without its sample, for the audit log.
fn summary_of(plan: &Value) -> Value {
    let mut summary = plan.clone();
    if let Some(object) = summary.as_object_mut() {
        object.remove("sample");
    }
    summary
}

fn job_json(job: &ReplayJob) -> Value {
    json!({
        "id": job.id,
        "state": job.state,
        "created_by": job.created_by,
        "created_at": super::format_ms(job.created_at),
        "finished_at": job.finished_at.map(super::format_ms),
        "reason": job.request["reason"],
        "source": job.request["source"],
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
async fn visible_job(app: &AppState, caller: &Caller, id: &str) -> Result<ReplayJob, ApiError> {
    let unknown = || ApiError::not_found("replay_unknown", format!("no replay `{id}`"));
    let job = app.store.get_replay(id).await?.ok_or_else(unknown)?;
    if caller.scope.limited_to().is_none() {
        return Ok(job);
    }
    let sources: Option<Vec<&str>> = match (job.request["source"].as_str(), job.request["scope"].as_array()) {
        (Some(source), _) => Some(vec![source]),
        (None, Some(scope)) => scope.iter().map(Value::as_str).collect(),
        (None, None) => None,
    };
    match sources {
        Some(sources) if sources.iter().all(|s| caller.scope.allows(s)) => Ok(job),
        _ => Err(unknown()),
    }
}

async fn show(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let job = visible_job(&app, &caller, &id).await?;
    Ok(Json(job_json(&job)))
}

async fn cancel(State(app): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Operator)?;
    let job = visible_job(&app, &caller, &id).await?;
    let now = app.clock.now_ms();
    let audit = |counts: &crate::store::ReplayCounts| NewAuditEntry {
        at: now,
        actor: caller.name.clone(),
        action: "replay.cancelled".into(),
        subject: Some(id.clone()),
        details: json!({ "counts_at_cancel": counts }),
    };
    if !app.store.cancel_replay(&id, now, audit).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "replay_not_running",
            format!("replay `{id}` is {}", job.state),
        ));
    }
    app.replayer.stop_local(&id);
    let job = app.store.get_replay(&id).await?.unwrap_or(job);
    Ok(Json(job_json(&job)))
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/replays", post(create))
        .route("/v1/replays/{id}", get(show))
        .route("/v1/replays/{id}/cancel", post(cancel))
}
