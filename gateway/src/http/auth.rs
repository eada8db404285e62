//! Bearer tokens for the admin API. Today: the bootstrap admin token from the config or
//! `HOOKWARDEN_ADMIN_TOKEN`, compared in constant time.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::error::ApiError;

/// What a token may do; each role may do everything of the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

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
            Err(ApiError::forbidden("role_insufficient", format!("this needs the {role:?} role")))
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
        if let Some(admin) = &app.config.admin_token {
            if bool::from(admin.0.as_bytes().ct_eq(token.as_bytes())) {
                return Ok(Caller { name: "bootstrap-admin".into(), role: Role::Admin });
            }
        }
        Err(ApiError::unauthorized("token_invalid", "the token is not valid"))
    }
}
