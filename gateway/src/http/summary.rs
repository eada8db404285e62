//! `GET /v1/summary`: the gap view. Outcome counts (with overdue ones) in total, per source
//! and per time bucket, so an operator sees where the missing events are, and the failed
//! ones by error code, so they see what went wrong.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::time::{format_ms, parse_rfc3339};
use super::{AppState, Caller, Role};
use crate::domain::Outcome;
use crate::error::ApiError;
use crate::store::SummaryQuery;

const MAX_BUCKETS: i64 = 2000;
const DAY_MS: i64 = 86_400_000;
/// 0001-01-01T00:00:00Z, the earliest time RFC 3339 can write.
const EARLIEST_MS: i64 = -62_135_596_800_000;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub source: Option<String>,
    /// RFC 3339, inclusive (default: a day before `until`).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339, exclusive (default: now).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// A duration (`15m`, `1h`; default `1h`), at least 1s and at most 2000 buckets.
    pub bucket: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Counts {
    pub confirmed: i64,
    pub failed: i64,
    pub unknown: i64,
    /// Closed by an operator with a note: settled, but never counted as `confirmed`.
    pub resolved: i64,
    /// Delivered, no receipt, and past the source's `receipt_sla` (part of `unknown`).
    pub overdue: i64,
    pub total: i64,
}

impl Counts {
    fn add(&mut self, outcome: Outcome, overdue: bool, n: i64) {
        match outcome {
            Outcome::Confirmed => self.confirmed += n,
            Outcome::Failed => self.failed += n,
            Outcome::Unknown => self.unknown += n,
            Outcome::Resolved => self.resolved += n,
        }
        if overdue {
            self.overdue += n;
        }
        self.total += n;
    }
}

/// The gap view over a window, as both front ends show it (the JSON API and the console).
#[derive(Debug, Clone)]
pub struct GapView {
    /// Unix ms, inclusive.
    pub since: i64,
    /// Unix ms, exclusive.
    pub until: i64,
    pub bucket_ms: i64,
    pub totals: Counts,
    /// The failed ones by error code (`""`: none).
    pub failed_by_error_code: BTreeMap<String, i64>,
    pub sources: BTreeMap<String, Counts>,
    /// Each bucket's start (unix ms) and counts, oldest first, empty ones too.
    pub buckets: Vec<(i64, Counts)>,
    /// When the first and the last unsettled event of the window arrived (unix ms), if any.
    pub gap: Option<(i64, i64)>,
}

/// The gap view the caller may see: `GET /v1/summary`'s answer, and the console's overview.
pub async fn gap_view(app: &AppState, caller: &Caller, p: &Params) -> Result<GapView, ApiError> {
    caller.require(Role::Viewer)?;
    let now = app.clock.now_ms();
    let until = p.until.as_deref().map(|t| parse_rfc3339("until", t)).transpose()?.unwrap_or(now);
    let since = p.since.as_deref().map(|t| parse_rfc3339("since", t)).transpose()?.unwrap_or(until - DAY_MS);
    if since >= until {
        return Err(ApiError::bad_request("invalid_query", "`since` must be before `until`"));
    }
    let bucket = p.bucket.as_deref().unwrap_or("1h");
    let bucket_ms = humantime::parse_duration(bucket)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("`bucket` `{bucket}` is not a duration ({e})")))?
        .as_millis() as i64;
    if bucket_ms < 1000 || (until - since) / bucket_ms > MAX_BUCKETS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`bucket` must be at least 1s and give at most {MAX_BUCKETS} buckets"),
        ));
    }
    let sources: Vec<_> = match &p.source {
        Some(name) => {
            caller.require_source(name)?;
            vec![
                app.sources
                    .get(name)
                    .ok_or_else(|| ApiError::not_found("source_unknown", format!("no source named `{name}`")))?,
            ]
        }
        None => app.config.sources.iter().filter(|s| caller.scope.allows(&s.name)).collect(),
    };
    let mut totals = Counts::default();
    let mut per_source = BTreeMap::new();
    let mut buckets: BTreeMap<i64, Counts> = BTreeMap::new();
    let first = since.div_euclid(bucket_ms) * bucket_ms;
    // Buckets start on multiples of their length since 1970: a long bucket over an early
    // `since` would start before year 1, which no RFC 3339 time can say.
    if first < EARLIEST_MS {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`since` and `bucket` give a first bucket that starts before year 1",
        ));
    }
    for start in (first..until).step_by(bucket_ms as usize) {
        buckets.insert(start, Counts::default());
    }
    let mut failed_by_error_code: BTreeMap<String, i64> = BTreeMap::new();
    let mut gap: Option<(i64, i64)> = None;
    for source in sources {
        let query = SummaryQuery {
            source: source.name.clone(),
            since,
            until,
            bucket_ms,
            overdue_before: now - source.receipt_sla.as_millis() as i64,
        };
        let rows = app.store.summary(&query).await?;
        if let Some((first, last)) = app.store.gap_bounds(&query).await? {
            gap = Some(gap.map_or((first, last), |(f, l)| (f.min(first), l.max(last))));
        }
        for (code, n) in app.store.failed_by_error_code(&query).await? {
            // Codes are never empty; "" counts failed events without one.
            *failed_by_error_code.entry(code.unwrap_or_default()).or_default() += n;
        }
        let mut counts = Counts::default();
        for row in rows {
            counts.add(row.outcome, row.overdue, row.count);
            buckets.entry(row.bucket_start).or_default().add(row.outcome, row.overdue, row.count);
        }
        totals.add(Outcome::Confirmed, false, counts.confirmed);
        totals.add(Outcome::Failed, false, counts.failed);
        totals.add(Outcome::Unknown, false, counts.unknown);
        totals.add(Outcome::Resolved, false, counts.resolved);
        totals.overdue += counts.overdue;
        per_source.insert(source.name.clone(), counts);
    }
    Ok(GapView {
        since,
        until,
        bucket_ms,
        totals,
        failed_by_error_code,
        sources: per_source,
        buckets: buckets.into_iter().collect(),
        gap,
    })
}

#[utoipa::path(
    get,
    path = "/v1/summary",
    tag = "summary",
    summary = "The gap view: outcome counts per source and time bucket",
    description = "Counts of `confirmed`, `failed`, `unknown` (and of them `overdue`) and `resolved` \
        events over a window, in total, per source and per time bucket, and the failed ones by \
        error code: where the missing events are. Only the sources the token may see.",
    params(Params),
    responses(
        (status = 200, description = "The gap view", body = super::openapi::Summary),
        (status = 400, description = "A parameter does not parse or is out of range (`invalid_query`, \
            `invalid_time`)", body = super::openapi::ErrorBody),
        (status = 404, description = "No such source (`source_unknown`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn summary(
    State(app): State<AppState>,
    caller: Caller,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let view = gap_view(&app, &caller, &p).await?;
    let buckets: Vec<Value> = view
        .buckets
        .iter()
        .map(|(start, counts)| {
            let mut v = json!(counts);
            v["start"] = json!(format_ms(*start));
            v
        })
        .collect();
    Ok(Json(json!({
        "since": format_ms(view.since),
        "until": format_ms(view.until),
        "bucket_seconds": view.bucket_ms / 1000,
        "totals": view.totals,
        "failed_by_error_code": view.failed_by_error_code,
        "sources": view.sources,
        "buckets": buckets,
        "gap": view.gap.map(|(first, last)| json!({ "first_received_at": format_ms(first), "last_received_at": format_ms(last) })),
    })))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(summary))
}
