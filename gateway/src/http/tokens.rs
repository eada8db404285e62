//! `POST /v1/tokens`, `GET /v1/tokens`, `DELETE /v1/tokens/{id}`: admins with a token for every
//! source make, list and revoke tokens. A token is shown once and stored only as a hash;
//! each change commits with its audit entry.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::segment::Segment;
use super::time::{format_ms, parse_rfc3339};
use super::{AppState, Caller};
use crate::access::{Role, new_token, token_hash};
use crate::error::ApiError;
use crate::store::{NewAuditEntry, Revoked, TokenRecord};

/// The longest a token may live, when it expires at all.
const MAX_LIFETIME_MS: i64 = 10 * 365 * 86_400_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// 1 to 100 characters, unique: the audit log's "who".
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    #[schema(value_type = super::openapi::Role)]
    role: String,
    /// The sources it may act on; absent: every source.
    sources: Option<Vec<String>>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    /// A duration from now (`30d`, `12h`), instead of `expires_at`.
    expires_in: Option<String>,
}

fn token_json(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "sources": t.sources,
        "created_at": format_ms(t.created_at),
        "created_by": t.created_by,
        "expires_at": t.expires_at.map(format_ms),
        "revoked_at": t.revoked_at.map(format_ms),
    })
}

#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "Make an API token",
    description = "A token with a role, optionally scoped to sources and with an expiry. The token is in \
        this answer only; the gateway keeps its sha256. Audited. Needs a token for every source.",
    request_body = NewToken,
    responses(
        (status = 201, description = "The token, with its secret", body = super::openapi::CreatedToken),
        (status = 400, description = "A body or field that does not parse or is out of range (`invalid_request`, \
            `invalid_time`)", body = super::openapi::ErrorBody),
        (status = 409, description = "A token with that name exists (`token_name_taken`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("admin")))
)]
async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    caller.require_every_source()?;
    let Json(req) = body.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::bad_request("invalid_request", "`role` is viewer, operator or admin"))?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("invalid_request", "`name` must be 1 to 100 characters"));
    }
    let sources = match req.sources {
        None => None,
        Some(list) => {
            let set: BTreeSet<String> = list.into_iter().collect();
            if set.is_empty() {
                return Err(ApiError::bad_request("invalid_request", "`sources` names at least one source"));
            }
            if let Some(unknown) = set.iter().find(|s| !app.sources.contains_key(*s)) {
                return Err(ApiError::bad_request("invalid_request", format!("no source named `{unknown}`")));
            }
            Some(set.into_iter().collect::<Vec<_>>())
        }
    };
    let now = app.clock.now_ms();
    let expires_at = match (req.expires_at.as_deref(), req.expires_in.as_deref()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("invalid_request", "give `expires_at` or `expires_in`, not both"));
        }
        (Some(at), None) => Some(parse_rfc3339("expires_at", at)?),
        (None, Some(text)) => {
            let duration = humantime::parse_duration(text.trim()).map_err(|e| {
                ApiError::bad_request("invalid_request", format!("`expires_in` `{text}` is not a duration ({e})"))
            })?;
            Some(now.saturating_add(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)))
        }
        (None, None) => None,
    };
    if let Some(at) = expires_at
        && (at <= now || at - now > MAX_LIFETIME_MS)
    {
        return Err(ApiError::bad_request("invalid_request", "a token expires in the future, within ten years"));
    }
    let token = new_token();
    let record = TokenRecord {
        id: format!("tok_{}", ulid::Ulid::new()),
        name: name.clone(),
        role: role.as_str().into(),
        sources,
        created_at: now,
        created_by: caller.name.clone(),
        expires_at,
        revoked_at: None,
    };
    let audit = NewAuditEntry {
        at: now,
        actor: caller.name,
        action: "token.created".into(),
        subject: Some(name.clone()),
        details: json!({
            "id": record.id,
            "role": role.as_str(),
            "sources": record.sources,
            "expires_at": record.expires_at.map(format_ms),
        }),
    };
    if !app.store.insert_token(&record, &token_hash(&token), &audit).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "token_name_taken", format!("a token named `{name}` exists")));
    }
    let mut shown = token_json(&record);
    shown["token"] = json!(token);
    Ok((StatusCode::CREATED, Json(shown)))
}

#[utoipa::path(
    get,
    path = "/v1/tokens",
    tag = "tokens",
    summary = "List API tokens",
    description = "Every token made with `POST /v1/tokens`, revoked and expired ones too, without their \
        secrets. Needs a token for every source.",
    responses((status = 200, description = "The tokens", body = super::openapi::TokenList)),
    extensions(("x-required-role" = json!("admin")))
)]
async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    caller.require_every_source()?;
    let now = app.clock.now_ms();
    let tokens: Vec<Value> = app
        .store
        .list_tokens()
        .await?
        .iter()
        .map(|t| {
            let mut v = token_json(t);
            v["active"] = json!(t.revoked_at.is_none() && t.expires_at.is_none_or(|at| at > now));
            v
        })
        .collect();
    Ok(Json(json!({ "data": tokens })))
}

#[utoipa::path(
    delete,
    path = "/v1/tokens/{id}",
    tag = "tokens",
    summary = "Revoke an API token",
    description = "The token stops working at once (and the console sessions signed in with it). Audited. \
        Needs a token for every source.",
    params(("id" = String, Path, description = "The token's id (`tok_…`)")),
    responses(
        (status = 200, description = "The token, revoked", body = super::openapi::Token),
        (status = 404, description = "No such token (`token_unknown`)", body = super::openapi::ErrorBody),
        (status = 409, description = "Revoked before (`token_already_revoked`)", body = super::openapi::ErrorBody),
    ),
    extensions(("x-required-role" = json!("admin")))
)]
async fn revoke(State(app): State<AppState>, caller: Caller, Segment(id): Segment) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Admin)?;
    caller.require_every_source()?;
    let now = app.clock.now_ms();
    let actor = caller.name;
    let revoked = app
        .store
        .revoke_token(&id, now, |t| NewAuditEntry {
            at: now,
            actor,
            action: "token.revoked".into(),
            subject: Some(t.name.clone()),
            details: json!({ "id": t.id, "role": t.role, "sources": t.sources }),
        })
        .await?;
    match revoked {
        Revoked::Now(t) => Ok(Json(token_json(&t))),
        Revoked::Before(t) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "token_already_revoked",
            format!("token `{}` was revoked at {}", t.id, t.revoked_at.map(format_ms).unwrap_or_default()),
        )),
        Revoked::Unknown => Err(ApiError::not_found("token_unknown", format!("no token `{id}`"))),
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(revoke))
}
