//! `/healthz` (the process is up), `/readyz` (the store answers and takes writes), `/metrics`
//! (Prometheus).
//! None needs a token.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when the store answers and takes writes; else 503 with why (`code`, `reason`), e.g.
/// `disk_full` on a SQLite disk with no room left.
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

async fn metrics_text(State(app): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render())
}

/// Liveness and readiness, on every listener.
pub fn probes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
}

/// Prometheus text, with the admin API (it names sources and volumes).
pub fn metrics() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics_text))
}
