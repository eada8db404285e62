//! `POST /v1/tokens` (admins): a new operator token, shown once, stored only as a hash.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, Caller};
use crate::access::{Role, new_token, token_hash};
use crate::error::ApiError;
use crate::store::{NewAuditEntry, TokenRecord};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
}

async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<Json<NewToken>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let Json(req) = body.map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let role = Role::parse(&req.role)
        .ok_or_else(|| ApiError::bad_request("invalid_request", "`role` is viewer, operator or admin"))?;
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("invalid_request", "`name` must be 1 to 100 characters"));
    }
    let token = new_token();
    let now = app.clock.now_ms();
    let record = TokenRecord {
        id: format!("tok_{}", ulid::Ulid::new()),
        name: name.clone(),
        role: role.as_str().into(),
        created_at: now,
        created_by: caller.name.clone(),
        revoked_at: None,
    };
    let audit = NewAuditEntry {
        at: now,
        actor: caller.name,
        action: "token.created".into(),
        subject: Some(name.clone()),
        details: json!({ "role": role.as_str(), "id": record.id }),
    };
    if !app.store.insert_token(&record, &token_hash(&token), &audit).await? {
        return Err(ApiError::new(StatusCode::CONFLICT, "token_name_taken", format!("a token named `{name}` exists")));
    }
    Ok((StatusCode::CREATED, Json(json!({ "name": name, "role": role.as_str(), "token": token }))))
}

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/tokens", post(create))
}
