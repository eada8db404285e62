//! `POST /v1/receipts`: a handler's signed statement that it applied (or failed) an event.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use receipts_sdk::receipt::{Receipt, ReceiptHeaders};
use serde_json::{Value, json};
use tracing::Instrument;

use super::AppState;
use crate::error::ApiError;
use crate::receipts::{Refusal, Via};
use crate::telemetry;

/// Receipts are small; anything larger is not one.
const MAX_RECEIPT_BYTES: usize = 64 * 1024;

async fn post_receipt(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Result<Json<Value>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a receipt is at most {MAX_RECEIPT_BYTES} bytes"),
        )
    };
    // Refused on its declared length before any of it is read, so the answer does not wait
    // for a body the client may never send.
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_RECEIPT_BYTES) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, MAX_RECEIPT_BYTES).await.map_err(|_| too_large())?;
    let span = receipt_span(&headers, &body);
    let read = ReceiptHeaders::read(|name| headers.get(name).and_then(|v| v.to_str().ok()));
    let result = match read {
        Ok(receipt_headers) => {
            app.receipts.accept(receipt_headers, &body, app.clock.now_ms(), Via::Post).instrument(span.clone()).await
        }
        Err(err) => Err(Refusal::Format(err)),
    };
    match &result {
        Ok(accepted) => {
            span.record("event_id", accepted.event_id.as_str()).record("outcome", accepted.outcome.as_str())
        }
        Err(refusal) => span.record("refused", refusal.code()),
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

/// The span of one posted receipt: under the `traceparent` the handler sent with it (the
/// forward's, when the handler passes it on), else under the root of the event it names.
fn receipt_span(headers: &HeaderMap, body: &[u8]) -> tracing::Span {
    let span = tracing::info_span!(
        "receipt",
        via = "post",
        event_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
        refused = tracing::field::Empty,
    );
    if !telemetry::exporting() {
        return span;
    }
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok());
    if !traceparent.is_some_and(|t| telemetry::under_traceparent(&span, t))
        && let Ok(receipt) = Receipt::parse(body)
    {
        telemetry::under_event(&span, &receipt.event_id);
    }
    span
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/receipts", post(post_receipt).layer(DefaultBodyLimit::disable()))
}
