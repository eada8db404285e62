//! A path segment (`{id}`, `{source}`) whose rejection is the API's error body: axum's own
//! `Path` answers a segment whose percent-encoding is not UTF-8 (`/v1/events/%FF`) with a
//! text/plain 400, which no client of a JSON API expects (schemathesis' check of the
//! document's content types).

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::ApiError;

/// The route's one path parameter, decoded.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(segment)) => Ok(Self(segment)),
            Err(rejection) => Err(ApiError::bad_request("invalid_path", rejection.body_text())),
        }
    }
}
