//! `POST /ingest/{source}`: verify, store durably, and only then answer 200.
//!
//! Order matters and is the guarantee: unknown source (404) → size (413) → signature (401) →
//! group-committed insert → 200. Nothing is stored unless every check passed, and nothing
//! is acknowledged unless it was committed; a failed commit is a 503 so the provider retries.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

use super::AppState;
use crate::domain::{HeaderBytes, NewEvent, Stored};
use crate::error::ApiError;

async fn ingest(
    State(app): State<AppState>,
    Path(source_name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(source) = app.sources.get(&source_name) else {
        return Err(ApiError::not_found("source_unknown", format!("no source named `{source_name}`")));
    };
    let limit = app.config.max_body_bytes;
    let too_large = || {
        metrics::counter!("hookwarden_ingest_total", "source" => source_name.clone(), "result" => "too_large")
            .increment(1);
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("the body is over {limit} bytes"))
    };
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|err| {
        if std::error::Error::source(&err).is_some_and(|e| e.is::<http_body_util::LengthLimitError>()) {
            too_large()
        } else {
            ApiError::bad_request("body_unreadable", "the request body could not be read")
        }
    })?;
    let now_ms = app.clock.now_ms();
    if let Err(err) = source.verifier.verify(&headers, &body, now_ms.div_euclid(1000)) {
        metrics::counter!("hookwarden_ingest_total", "source" => source_name.clone(), "result" => "unauthorized")
            .increment(1);
        return Err(ApiError::unauthorized(err.code(), err.to_string()));
    }
    let event = NewEvent {
        id: app.ids.next(now_ms),
        dedup_key: source.verifier.dedup_key(source.dedup.as_ref(), &headers, &body),
        event_type: source.verifier.event_type(source.event_type.as_ref(), &headers, &body),
        source: source_name.clone(),
        received_at: now_ms,
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), HeaderBytes(value.as_bytes().to_vec())))
            .collect(),
        body: body.to_vec(),
    };
    // The commit runs in its own task: a provider that hangs up now cancels this handler,
    // but not the write of an event that already passed every check.
    let commits = app.commits.clone();
    let committed = tokio::spawn(Box::pin(async move { commits.event(event).await })).await.ok().flatten();
    let stored = match committed {
        Some(Ok(stored)) => stored,
        Some(Err(err)) => {
            tracing::error!(error = %err, source = %source_name, "storing an event failed");
            metrics::counter!("hookwarden_ingest_total", "source" => source_name, "result" => "store_failed")
                .increment(1);
            return Err(ApiError::unavailable("the event could not be stored; retry later"));
        }
        None => {
            return Err(ApiError::unavailable("the gateway is shutting down; retry later"));
        }
    };
    let (id, duplicate) = match stored {
        Stored::New(id) => {
            app.dispatcher.wake();
            (id, false)
        }
        Stored::Duplicate(id) => (id, true),
    };
    let result = if duplicate { "duplicate" } else { "stored" };
    metrics::counter!("hookwarden_ingest_total", "source" => source_name, "result" => result).increment(1);
    Ok(Json(json!({ "event_id": id, "duplicate": duplicate })))
}

pub fn router() -> Router<AppState> {
    // The size limit is enforced in the handler, with our own error body.
    Router::new().route("/ingest/{source}", post(ingest).layer(DefaultBodyLimit::disable()))
}
