//! `POST /v1/receipts`: a handler's signed statement that it applied (or failed) an event.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use receipts_sdk::receipt::ReceiptHeaders;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;
use crate::receipts::{Refusal, Via};

/// Receipts are small; anything larger is not one.
const MAX_RECEIPT_BYTES: usize = 64 * 1024;

async fn post_receipt(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let body = axum::body::to_bytes(body, MAX_RECEIPT_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a receipt is at most {MAX_RECEIPT_BYTES} bytes"),
        )
    })?;
    let read = ReceiptHeaders::read(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    let result = match read {
        Ok(receipt_headers) => app.receipts.accept(receipt_headers, &body, app.clock.now_ms(), Via::Post).await,
        Err(err) => Err(Refusal::Format(err)),
    };
    match result {
        Ok(accepted) => Ok(Json(json!({
            "event_id": accepted.event_id,
            "receipt_id": accepted.receipt_id,
            "outcome": accepted.outcome,
            "duplicate": accepted.repeat,
        }))),
        Err(Refusal::Store(err)) => Err(err.into()),
        Err(refusal) => Err(ApiError::new(refusal.status(), refusal.code(), refusal.to_string())),
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/receipts", post(post_receipt).layer(DefaultBodyLimit::disable()))
}
