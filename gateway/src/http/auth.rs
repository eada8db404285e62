//! Bearer tokens for the admin API: the bootstrap admin token (config or
//! `HOOKWARDEN_ADMIN_TOKEN`, compared in constant time) and operator tokens created with
//! `hookwarden tokens create`, stored as sha256 hashes. A token's name is the audit log's "who".

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::access::{Role, token_hash};
use crate::error::ApiError;

/// The authenticated caller of an admin route: the "who" of the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden("role_insufficient", format!("this needs the {} role", role.as_str())))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("token_missing", "send `Authorization: Bearer <token>`"))?;
        if let Some(admin) = &app.config.admin_token
            && bool::from(admin.0.as_bytes().ct_eq(token.as_bytes()))
        {
            return Ok(Caller { name: "bootstrap-admin".into(), role: Role::Admin });
        }
        let invalid = || ApiError::unauthorized("token_invalid", "the token is not valid");
        let (name, role) = app.store.find_token(&token_hash(token)).await?.ok_or_else(invalid)?;
        Ok(Caller { name, role: Role::parse(&role).ok_or_else(invalid)? })
    }
}
