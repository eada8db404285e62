//! Bearer tokens for the admin API: the bootstrap admin token (config or
//! `HOOKWARDEN_ADMIN_TOKEN`, compared in constant time) and tokens created with
//! `hookwarden tokens create`, stored as sha256 hashes, each with a role, optionally scoped to
//! sources and with an expiry. A token's name is the audit log's "who".

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::access::{Role, SourceScope, token_hash};
use crate::error::ApiError;

/// The authenticated caller of an admin route: the "who" of the audit log, and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    pub scope: SourceScope,
}

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::forbidden("role_insufficient", format!("this needs the {} role", role.as_str())))
        }
    }

    /// For what spans every source (the audit log, tokens): a token scoped to some is refused.
    pub fn require_every_source(&self) -> Result<(), ApiError> {
        match self.scope {
            SourceScope::All => Ok(()),
            SourceScope::Only(_) => Err(ApiError::forbidden(
                "scope_insufficient",
                "this needs a token for every source; this one is scoped to some",
            )),
        }
    }

    /// For a source the caller named: refused when outside its scope.
    pub fn require_source(&self, source: &str) -> Result<(), ApiError> {
        if self.scope.allows(source) {
            Ok(())
        } else {
            Err(ApiError::forbidden("source_forbidden", format!("this token may not act on source `{source}`")))
        }
    }
}

impl Caller {
    /// Who `token` is, or why it is refused (the bearer header's token, or the console's
    /// sign-in form's).
    pub async fn from_token(app: &AppState, token: &str) -> Result<Self, ApiError> {
        Self::from_token_hash(app, &token_hash(token)).await
    }

    /// Who the token with this sha256 is, checked now: a console session keeps only the
    /// hash, and a token revoked or expired since sign-in ends the session's rights at once.
    pub async fn from_token_hash(app: &AppState, hash: &str) -> Result<Self, ApiError> {
        if let Some(admin) = &app.config.admin_token
            && bool::from(token_hash(&admin.0).as_bytes().ct_eq(hash.as_bytes()))
        {
            return Ok(Caller { name: "bootstrap-admin".into(), role: Role::Admin, scope: SourceScope::All });
        }
        let invalid = || ApiError::unauthorized("token_invalid", "the token is not valid");
        let found = app.store.find_token(hash).await?.ok_or_else(invalid)?;
        if found.revoked_at.is_some() {
            return Err(ApiError::unauthorized("token_revoked", "the token was revoked"));
        }
        if found.expires_at.is_some_and(|at| at <= app.clock.now_ms()) {
            return Err(ApiError::unauthorized("token_expired", "the token has expired"));
        }
        let scope = match found.sources {
            None => SourceScope::All,
            Some(sources) => SourceScope::Only(sources.into_iter().collect()),
        };
        Ok(Caller { name: found.name, role: Role::parse(&found.role).ok_or_else(invalid)?, scope })
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
        Caller::from_token(app, token).await
    }
}
