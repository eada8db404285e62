//! Times at the API edge: RFC 3339 in and out, unix milliseconds inside.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;

pub fn parse_rfc3339(field: &str, text: &str) -> Result<i64, ApiError> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        ApiError::bad_request("invalid_time", format!("`{field}`: `{text}` is not an RFC 3339 time ({e})"))
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_rfc3339("since", "2026-11-26T06:00:00.250Z").unwrap();
        assert_eq!(format_ms(ms), "2026-11-26T06:00:00.25Z");
        assert!(parse_rfc3339("since", "yesterday").is_err());
    }
}
