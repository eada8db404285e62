//! Times as people and APIs write them: RFC 3339 in and out, unix milliseconds inside.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A time that does not parse, with the field it was given for.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{field}`: `{text}` is not an RFC 3339 time ({reason})")]
pub struct TimeError {
    pub field: String,
    pub text: String,
    reason: String,
}

/// Unix milliseconds of an RFC 3339 time given for `field`.
pub fn parse_rfc3339(field: &str, text: &str) -> Result<i64, TimeError> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| TimeError {
        field: field.to_string(),
        text: text.to_string(),
        reason: e.to_string(),
    })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// RFC 3339 (UTC) of unix milliseconds.
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A configured span as a person writes it, in its largest whole unit (`90d`, `36h`, `15m`,
/// `1500ms`), which the config parses back. (humantime's own rendering of 90 days is
/// "2months 29days 2h 52m 48s": months of 30.44 days.)
pub fn format_span(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_as_they_were_written() {
        use std::time::Duration;
        let span = |s| format_span(humantime::parse_duration(s).unwrap());
        assert_eq!(span("90days"), "90d");
        assert_eq!(span("36h"), "36h");
        assert_eq!(span("90m"), "90m");
        assert_eq!(span("1s"), "1s");
        assert_eq!(span("1500ms"), "1500ms");
        assert_eq!(format_span(Duration::ZERO), "0ms");
        for text in ["90d", "36h", "90m", "1s", "1500ms"] {
            assert_eq!(span(text), text, "parses back to itself");
        }
    }

    #[test]
    fn round_trip() {
        let ms = parse_rfc3339("since", "2026-11-26T06:00:00.250Z").unwrap();
        assert_eq!(format_ms(ms), "2026-11-26T06:00:00.25Z");
        let err = parse_rfc3339("since", "yesterday").unwrap_err();
        assert!(err.to_string().starts_with("`since`: `yesterday` is not an RFC 3339 time"), "{err}");
    }
}
