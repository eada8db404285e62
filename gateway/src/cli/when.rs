//! Times as people type them at 2 AM: RFC 3339, a duration ago (`90m`), `now`, `today`,
//! `yesterday`, a date (`2026-12-06`), a date and a time, or a time of day (`01:10`: today,
//! or yesterday when that is still to come). Those without an offset are local time; the
//! command says back what they came to in UTC, so nobody has to trust the conversion blindly.

use std::sync::OnceLock;

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::CliError;

/// This machine's offset from UTC, read once at start (reading it later, with the runtime's
/// threads about, is refused by the `time` crate).
static LOCAL: OnceLock<UtcOffset> = OnceLock::new();

/// Reads the local offset; call before any thread starts (`main` does).
pub fn read_local_offset() {
    let _ = LOCAL.set(UtcOffset::current_local_offset().unwrap_or(UtcOffset::UTC));
}

fn local() -> UtcOffset {
    LOCAL.get().copied().unwrap_or(UtcOffset::UTC)
}

/// A time argument as RFC 3339 (UTC unless given with its own offset). Local forms are said
/// back on stderr.
pub fn time_arg(text: &str, now: OffsetDateTime) -> Result<String, CliError> {
    let (at, local_form) = parse(text, now, local())?;
    if local_form {
        eprintln!("hookwarden: `{text}` is {at} (local time is {})", offset_text(local()));
    }
    Ok(at)
}

fn offset_text(offset: UtcOffset) -> String {
    let (h, m, _) = offset.as_hms();
    if (h, m) == (0, 0) { "UTC".into() } else { format!("UTC{:+03}:{:02}", h, m.abs()) }
}

/// `(RFC 3339, whether it was a local form)`.
fn parse(text: &str, now: OffsetDateTime, offset: UtcOffset) -> Result<(String, bool), CliError> {
    let text = text.trim();
    let rfc = |t: OffsetDateTime| t.to_offset(UtcOffset::UTC).format(&Rfc3339).expect("formats");
    if OffsetDateTime::parse(text, &Rfc3339).is_ok() {
        return Ok((text.to_string(), false));
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = time::Duration::try_from(ago).map_err(|_| CliError::Usage(format!("`{text}` is too long ago")))?;
        let at = now.checked_sub(ago).ok_or_else(|| CliError::Usage(format!("`{text}` is too long ago")))?;
        return Ok((rfc(at), false));
    }
    let today = now.to_offset(offset).date();
    let midnight = |date: Date| PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_offset(offset);
    let local = match text.to_ascii_lowercase().as_str() {
        "now" => return Ok((rfc(now), false)),
        "today" => Some(midnight(today)),
        "yesterday" => today.previous_day().map(midnight),
        _ => None,
    };
    let local = local
        .or_else(|| Date::parse(text, format_description!("[year]-[month]-[day]")).ok().map(midnight))
        .or_else(|| {
            [
                format_description!("[year]-[month]-[day] [hour]:[minute]"),
                format_description!("[year]-[month]-[day]T[hour]:[minute]"),
                format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            ]
            .iter()
            .find_map(|f| PrimitiveDateTime::parse(text, f).ok())
            .map(|t| t.assume_offset(offset))
        })
        .or_else(|| {
            [format_description!("[hour]:[minute]"), format_description!("[hour]:[minute]:[second]")]
                .iter()
                .find_map(|f| Time::parse(text, f).ok())
                .map(|time| {
                    let at = PrimitiveDateTime::new(today, time).assume_offset(offset);
                    // A time of day still to come means the last one: 23:00 typed at 01:00.
                    if at > now { at - time::Duration::days(1) } else { at }
                })
        });
    match local {
        Some(at) => Ok((rfc(at), true)),
        None => Err(CliError::Usage(format!(
            "`{text}` is not a time: write 2026-12-06, 2026-12-06 01:10, 01:10 (today, local time), yesterday, \
             a duration ago (90m, 3h) or RFC 3339 (2026-12-06T01:10:00Z)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &str, local_form: bool) {
        // 02:30 on 7 December in Berlin (UTC+1).
        let now = OffsetDateTime::parse("2026-12-07T01:30:00Z", &Rfc3339).unwrap();
        let berlin = UtcOffset::from_hms(1, 0, 0).unwrap();
        let got = parse(text, now, berlin).unwrap();
        assert_eq!(got, (expected.to_string(), local_form), "{text}");
    }

    #[test]
    fn people_type_dates_and_times_of_day() {
        check("2026-11-26T06:00:00Z", "2026-11-26T06:00:00Z", false);
        check("2026-11-26T06:00:00+01:00", "2026-11-26T06:00:00+01:00", false);
        check("90m", "2026-12-07T00:00:00Z", false);
        check("now", "2026-12-07T01:30:00Z", false);
        check("2026-12-06", "2026-12-05T23:00:00Z", true);
        check("yesterday", "2026-12-05T23:00:00Z", true);
        check("today", "2026-12-06T23:00:00Z", true);
        check("01:10", "2026-12-07T00:10:00Z", true);
        check("2026-12-06 23:15", "2026-12-06T22:15:00Z", true);
        // Still to come today: the last one.
        check("23:00", "2026-12-06T22:00:00Z", true);
        assert!(parse("last tuesday", OffsetDateTime::now_utc(), UtcOffset::UTC).is_err());
    }
}
