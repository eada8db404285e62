//! Times at the API edge: a time that does not parse is a 400 `invalid_time`.

use crate::error::ApiError;
pub use crate::timestamp::format_ms;

pub fn parse_rfc3339(field: &str, text: &str) -> Result<i64, ApiError> {
    crate::timestamp::parse_rfc3339(field, text).map_err(|e| ApiError::bad_request("invalid_time", e.to_string()))
}
