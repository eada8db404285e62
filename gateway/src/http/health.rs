//! `/healthz` (the process is up), `/readyz` (the store answers), `/metrics` (Prometheus).
//! None needs a token.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    app.store.ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}

async fn metrics(State(app): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", "text/plain; version=0.0.4")], app.metrics.render())
}

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(metrics))
}
