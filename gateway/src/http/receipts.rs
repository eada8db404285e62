//! `POST /v1/receipts`: a handler's signed statement that it applied (or failed) an event.

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use receipts_sdk::receipt::{Receipt, ReceiptHeaders};
use serde_json::{Value, json};
use tracing::Instrument;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::ApiError;
use crate::receipts::{Refusal, Via};
use crate::telemetry;

/// Receipts are small; anything larger is not one.
const MAX_RECEIPT_BYTES: usize = 64 * 1024;

#[utoipa::path(
    post,
    path = "/v1/receipts",
    tag = "receipts",
    summary = "A handler's signed receipt for an event",
    description = "The handler says it applied (or failed, or ignored) an event: the receipt's JSON as \
        the body, signed with a registered ed25519 key in four headers (SPEC.md, \"Receipts\"). A \
        repeat of a receipt the ledger has is answered 200 with `duplicate`. No bearer token: the \
        signature is the authentication. At most 64 KiB.",
    params(
        ("receipt-id" = String, Header, description = "The receipt's id; a retry reuses it"),
        ("receipt-timestamp" = String, Header, description = "Unix seconds"),
        ("receipt-key" = String, Header, description = "The registered key's id"),
        ("receipt-signature" = String, Header, description = "`v1a,<base64 ed25519 signature>`"),
    ),
    request_body(content = Object, content_type = "application/json",
        description = "The receipt: `event_id`, `status` (`applied`, `failed`, `ignored`) and what the wire format adds"),
    responses(
        (status = 200, description = "Recorded (or recorded before: `duplicate`)", body = super::openapi::ReceiptAccepted),
        (status = 400, description = "The receipt's JSON is not one (`receipt_malformed`)", body = super::openapi::ErrorBody),
        (status = 401, description = "Headers missing or not verifying (`receipt_header_missing`, \
            `receipt_timestamp_invalid`, `receipt_timestamp_stale`, `receipt_signature_invalid`, \
            `receipt_key_unknown`, `receipt_key_revoked`)", body = super::openapi::ErrorBody),
        (status = 403, description = "The key may not speak for that event's source (`receipt_key_forbidden`)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such event (`event_unknown`)", body = super::openapi::ErrorBody),
        (status = 409, description = "The receipt id was used for another receipt (`receipt_id_conflict`)", body = super::openapi::ErrorBody),
        (status = 413, description = "Over 64 KiB (`payload_too_large`)", body = super::openapi::ErrorBody),
        (status = 503, description = "Not recorded (`store_unavailable`); retry with the same id", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("none")))
)]
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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(post_receipt)).layer(DefaultBodyLimit::disable())
}
