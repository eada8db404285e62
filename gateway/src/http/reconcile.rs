//! `POST /v1/reconcile`: ask a source's handler about the `unknown` events of a window and
//! record its answers, without replaying (docs/status-probe.md). Operator; audited.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Caller};
use crate::error::ApiError;
use crate::probe::reconcile::{self, ReconcileError, ReconcileRequest};

fn reconcile_error(err: ReconcileError) -> ApiError {
    match err {
        ReconcileError::Store(err) => err.into(),
        ReconcileError::Forbidden | ReconcileError::SourceForbidden(_) => {
            ApiError::forbidden(err.code(), err.to_string())
        }
        ReconcileError::SourceUnknown(_) => ApiError::not_found(err.code(), err.to_string()),
        ReconcileError::NoStatusUrl(_) => ApiError::new(StatusCode::CONFLICT, err.code(), err.to_string()),
        other => ApiError::bad_request(other.code(), other.to_string()),
    }
}

#[utoipa::path(
    post,
    path = "/v1/reconcile",
    tag = "reconcile",
    summary = "Ask a source's handler about the unknown events of a window",
    description = "Sends status probes to the source's `status_url` for its `unknown` events in the window \
        (at most `limit`) and records the handler's signed answers as receipts, without replaying. \
        Audited.",
    request_body = crate::probe::reconcile::ReconcileRequest,
    responses(
        (status = 200, description = "What the handler's answers settled", body = super::openapi::Reconciled),
        (status = 400, description = "A body or field that does not parse (`invalid_request`, `scope_required`)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such source (`source_unknown`)", body = super::openapi::ErrorBody),
        (status = 409, description = "The source has no `status_url` (`status_url_missing`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("operator")))
)]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<Json<ReconcileRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let who = reconcile::Caller { name: &caller.name, role: caller.role, scope: &caller.scope };
    let (report, request) =
        reconcile::reconcile(&app.prober, &app.store, &app.sources, request, who, app.clock.now_ms())
            .await
            .map_err(reconcile_error)?;
    Ok(Json(json!({
        "source": request.source,
        "since": request.since,
        "until": request.until,
        "complete": report.complete(),
        "counts": report,
    })))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}
