//! `/healthz` (the process is up), `/readyz` (the store answers and takes writes), `/metrics`
//! (Prometheus), and on every listener `/openapi.json` (see `openapi`).
//! None needs a token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    summary = "Liveness: the process is up",
    description = "Always 200 while the process answers. On every listener; no token.",
    responses((status = 200, description = "Up", body = super::openapi::Health)),
    extensions(("x-required-role" = json!("none")))
)]
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the store answers and takes writes; else 503 with why (`code`, `reason`), e.g.
/// `disk_full` on a SQLite disk with no room left.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    summary = "Readiness: the store answers and takes writes",
    description = "200 when the store answers and takes writes; else 503 with why. On every listener; \
        no token.",
    responses(
        (status = 200, description = "Ready", body = super::openapi::Ready),
        (status = 503, description = "Not ready (`code`: `disk_full`, `store_unavailable`, …)", body = super::openapi::NotReady),
    ),
    extensions(("x-required-role" = json!("none")))
)]
async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.readiness(app.clock.now_ms()).await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(not_ready) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "code": not_ready.code, "reason": not_ready.reason })),
        )
            .into_response(),
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    summary = "Prometheus metrics",
    description = "The gateway's counters and histograms in Prometheus' text format. On the admin \
        listener; no token (it names sources and volumes: keep that listener private).",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String)),
    extensions(("x-required-role" = json!("none")))
)]
async fn metrics_text(State(app): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render())
}

/// Liveness, readiness and the API's document, on every listener.
pub fn probes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).routes(routes!(super::openapi::openapi_json))
}

/// Prometheus text, with the admin API (it names sources and volumes).
pub fn metrics() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics_text))
}
