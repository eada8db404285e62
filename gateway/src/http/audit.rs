//! `GET /v1/audit`: the append-only audit log, oldest first, in pages. Nothing here (or
//! anywhere in the API) edits or deletes an entry.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Caller, Role, format_ms, parse_rfc3339};
use crate::audit::AuditEntry;
use crate::error::ApiError;

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// RFC 3339, inclusive.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Entries about this subject only (an event id, a replay id, a token id).
    pub subject: Option<String>,
    /// Entries after this sequence number (the cursor).
    pub after: Option<i64>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// A page of the audit log, oldest first, and the cursor of the next page: `GET /v1/audit`'s
/// answer, and the console's audit page.
pub async fn audit_page(
    app: &AppState,
    caller: &Caller,
    p: &Params,
) -> Result<(Vec<AuditEntry>, Option<i64>), ApiError> {
    caller.require(Role::Viewer)?;
    // The log spans every source (tokens, replays of any source): not for a scoped token.
    caller.require_every_source()?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", "`limit` must be 1 to 1000"));
    }
    let since = p.since.as_deref().map(|t| parse_rfc3339("since", t)).transpose()?;
    let until = p.until.as_deref().map(|t| parse_rfc3339("until", t)).transpose()?;
    let entries = app.store.list_audit(p.after.unwrap_or(0), since, until, p.subject.as_deref(), limit).await?;
    let next = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.seq)).flatten();
    Ok((entries, next))
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    summary = "The audit log, oldest first",
    description = "Append-only and hash-chained (`prev_hash`, `hash`): who did what to which subject. \
        Paged with `after` (the last page's `next_after`). Needs a token for every source.",
    params(Params),
    responses(
        (status = 200, description = "A page of entries", body = super::openapi::AuditPage),
        (status = 400, description = "A parameter does not parse (`invalid_query`, `invalid_time`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn list(
    State(app): State<AppState>,
    caller: Caller,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    caller.require_every_source()?;
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let (entries, next) = audit_page(&app, &caller, &p).await?;
    let shown: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).expect("serialises");
            v["time"] = json!(format_ms(e.at));
            v
        })
        .collect();
    Ok(Json(json!({ "entries": shown, "next_after": next })))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}
