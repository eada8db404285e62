//! `POST /ingest/{source}`: verify, store durably, and only then answer 200.
//!
//! Order matters and is the guarantee: the source's rate limit (429) → unknown source (404) →
//! size (413) → signature (401) → group-committed insert → 200. Nothing is stored unless every
//! check passed, and nothing is acknowledged unless it was committed; a failed commit is a 503
//! so the provider retries.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::segment::Segment;
use crate::config::SourceConfig;
use crate::domain::{BodyDedup, EventId, HeaderBytes, NewEvent, Stored};
use crate::error::ApiError;
use crate::telemetry;
use tracing::Instrument;

/// Each source's ingest rate limit (`ingest_limit`), checked before its body is read: a flood
/// from one provider (or an attacker) gets 429 with `Retry-After` and cannot starve the other
/// sources of the writer; the provider retries later, so nothing is lost.
pub struct IngestLimits(HashMap<String, DefaultDirectRateLimiter>);

impl IngestLimits {
    pub fn from_sources(sources: &[SourceConfig]) -> Self {
        let limits = sources
            .iter()
            .filter_map(|s| {
                let limit = s.ingest_limit?;
                let per_second = NonZeroU32::new(limit.per_second)?;
                let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
                Some((s.name.clone(), RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))))
            })
            .collect();
        Self(limits)
    }

    /// `Some(wait)` when `source` is over its limit: how long until it may send again.
    fn over(&self, source: &str) -> Option<Duration> {
        let limiter = self.0.get(source)?;
        limiter.check().err().map(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }
}

#[utoipa::path(
    post,
    path = "/ingest/{source}",
    tag = "ingest",
    summary = "A provider's webhook in",
    description = "Checks, in this order: the source's rate limit (429 with `Retry-After`), that the \
        source exists (404), the size (413, `max_body_bytes`), the provider's signature (401: \
        `Stripe-Signature`, `X-Hub-Signature-256`, Standard Webhooks' `webhook-id`/`webhook-timestamp`/\
        `webhook-signature`, or an HMAC header, as the source's `verify` says); then stores the event \
        durably and only then answers 200. A provider's retry of an event it has is answered 200 with \
        `duplicate`. No bearer token: the provider's signature is the authentication. The body is \
        taken byte for byte, whatever its content type.",
    params(("source" = String, Path, description = "The source's name in the config (`stripe`, `github`, …)")),
    request_body(content = Option<Value>, content_type = "application/json",
        description = "The provider's event as it sent it: any bytes (the source's signature check decides)"),
    responses(
        (status = 200, description = "Stored (or stored before: `duplicate`)", body = super::openapi::Ingested),
        (status = 400, description = "The body could not be read (`body_unreadable`)", body = super::openapi::ErrorBody),
        (status = 401, description = "The signature does not verify (`signature_missing`, `signature_malformed`, \
            `signature_invalid`, `timestamp_stale`)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such source (`source_unknown`)", body = super::openapi::ErrorBody),
        (status = 413, description = "Over `max_body_bytes` (`payload_too_large`)", body = super::openapi::ErrorBody),
        (status = 429, description = "The source is over its `ingest_limit` (`rate_limited`); retry after \
            `Retry-After` seconds", body = super::openapi::ErrorBody,
            headers(("Retry-After" = String, description = "Seconds"))),
        (status = 503, description = "Not stored (`store_unavailable`); the provider retries", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("none")))
)]
async fn ingest(
    State(app): State<AppState>,
    Segment(source_name): Segment,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(wait) = app.ingest_limits.over(&source_name) {
        metrics::counter!("hookwarden_ingest_total", "source" => source_name.clone(), "result" => "rate_limited")
            .increment(1);
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("source `{source_name}` is over its ingest limit; retry in {seconds} s"),
        );
        return ([(RETRY_AFTER, seconds.to_string())], error).into_response();
    }
    if !app.sources.contains_key(&source_name) {
        return ApiError::not_found("source_unknown", format!("no source named `{source_name}`")).into_response();
    }
    // The event's id is chosen as its request comes in: it names the event's trace, whose
    // spans start here (see `telemetry`). A request refused below leaves its id unused.
    let started = std::time::SystemTime::now();
    let now_ms = app.clock.now_ms();
    let id = app.ids.next(now_ms);
    let span = tracing::info_span!("ingest", event_id = %id, source = %source_name);
    telemetry::under_event(&span, id.as_str());
    let answer = store(app, &source_name, id.clone(), now_ms, headers, body).instrument(span).await;
    if telemetry::exporting() {
        let (id, result) = match &answer {
            Ok(Json(answer)) if answer["duplicate"] == true => (id, "duplicate"),
            Ok(_) => (id, "stored"),
            Err(_) => (id, "refused"),
        };
        telemetry::record_event(id.as_str(), &source_name, result, started, std::time::SystemTime::now());
    }
    answer.into_response()
}

async fn store(
    app: AppState,
    source_name: &str,
    id: EventId,
    now_ms: i64,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let source = &app.sources[source_name];
    let source_name = source_name.to_string();
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
    if let Err(err) = source.verifier.verify(&headers, &body, now_ms.div_euclid(1000)) {
        metrics::counter!("hookwarden_ingest_total", "source" => source_name.clone(), "result" => "unauthorized")
            .increment(1);
        return Err(ApiError::unauthorized(err.code(), err.to_string()));
    }
    let provider_id = source.verifier.provider_event_id(source.dedup.as_ref(), &headers, &body);
    // The body's sha256, hashed once for both of its uses below, and only when one needs it.
    let sha256 = if provider_id.is_none() || source.body_dedup_window.is_some() {
        hex::encode(Sha256::digest(&body))
    } else {
        String::new()
    };
    let dedup_key = match provider_id {
        Some(provider_id) => provider_id,
        // No id in the request: the body is its only key. With a `body_dedup_window` the
        // window alone decides what repeats it (`body_hashes`), so the row's key is made the
        // event's own: a key of the body alone would make the same body a repeat for as long
        // as the first event is kept, whatever the window.
        None if source.body_dedup_window.is_some() => format!("{}/{id}", crate::verify::body_key(&sha256)),
        None => crate::verify::body_key(&sha256),
    };
    let event = NewEvent {
        id,
        dedup_key,
        event_type: source.verifier.event_type(source.event_type.as_ref(), &headers, &body),
        source: source_name.clone(),
        received_at: now_ms,
        headers: headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), HeaderBytes(value.as_bytes().to_vec())))
            .collect(),
        body_dedup: source.body_dedup_window.map(|window| BodyDedup {
            sha256: sha256.clone(),
            since: now_ms.saturating_sub(window.as_millis() as i64),
        }),
        body: body.to_vec(),
    };
    // The commit runs in its own task: a provider that hangs up now cancels this handler,
    // but not the write of an event that already passed every check.
    let commits = app.commits.clone();
    let commit = tracing::info_span!("commit");
    let committed =
        tokio::spawn(Box::pin(async move { commits.event(event).await }).instrument(commit)).await.ok().flatten();
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

pub fn router() -> OpenApiRouter<AppState> {
    // The size limit is enforced in the handler, with our own error body.
    OpenApiRouter::new().routes(routes!(ingest)).layer(DefaultBodyLimit::disable())
}
