//! `hookwarden reconcile`: ask a source's handler about the window's `unknown` events and
//! record its answers (no replay). Exits 0 only when every unknown event of the window was
//! asked, every probe answered and every answer entry accepted.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Api, CliError, print_json, time_arg};

/// What the operator typed.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReconcileArgs {
    /// The source whose handler to ask.
    pub source: String,
    /// Start of the window (inclusive): RFC 3339, or a duration ago such as 90m.
    #[arg(long)]
    pub since: String,
    /// End of the window (exclusive); now when omitted.
    #[arg(long)]
    pub until: Option<String>,
    /// Most unknown events to ask about (default 10,000).
    #[arg(long)]
    pub limit: Option<i64>,
    /// Set from the global `--json`.
    #[arg(skip)]
    pub json: bool,
}

pub async fn reconcile(api: &Api, args: ReconcileArgs) -> Result<(), CliError> {
    let now = OffsetDateTime::now_utc();
    let request = json!({
        "source": args.source,
        "since": time_arg(&args.since, now)?,
        "until": args.until.as_deref().map(|t| time_arg(t, now)).transpose()?,
        "limit": args.limit,
    });
    let answer = api.post("/v1/reconcile", &request).await?;
    if args.json {
        print_json(&answer);
    } else {
        print!("{}", report(&answer));
    }
    if answer["complete"].as_bool() == Some(true) {
        Ok(())
    } else {
        Err(CliError::Failed(incomplete_reason(&answer["counts"])))
    }
}

fn n(counts: &Value, key: &str) -> i64 {
    counts[key].as_i64().unwrap_or(0)
}

/// The answer as a report.
pub fn report(answer: &Value) -> String {
    let c = &answer["counts"];
    let mut out = format!(
        "Reconcile {} {} -> {}: asked the handler about {} of {} unknown events in {} probes.\n\n",
        answer["source"].as_str().unwrap_or("?"),
        answer["since"].as_str().unwrap_or("?"),
        answer["until"].as_str().unwrap_or("now"),
        n(c, "asked"),
        n(c, "unknown_in_window"),
        n(c, "probes"),
    );
    out.push_str(&format!("  confirmed      {:>7}   the handler had applied them\n", n(c, "confirmed")));
    out.push_str(&format!("  failed         {:>7}   the handler had failed them\n", n(c, "failed")));
    out.push_str(&format!("  duplicate      {:>7}   settled meanwhile by the same receipt\n", n(c, "duplicate")));
    out.push_str(&format!("  still unknown  {:>7}   not settled: replay them\n", n(c, "still_unknown")));
    if n(c, "not_asked") > 0 {
        out.push_str(&format!("  not asked      {:>7}   past --limit: run again\n", n(c, "not_asked")));
    }
    if n(c, "probes_failed") > 0 {
        out.push_str(&format!(
            "\n{} of {} probes FAILED ({} events not asked in effect):\n",
            n(c, "probes_failed"),
            n(c, "probes"),
            n(c, "in_failed_probes")
        ));
        for failure in c["failures"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {}\n", failure.as_str().unwrap_or("")));
        }
    }
    if n(c, "entries_refused") > 0 {
        out.push_str(&format!("\n{} answer entries REFUSED (nothing recorded for them):\n", n(c, "entries_refused")));
        for (code, count) in c["refused_by_code"].as_object().into_iter().flatten() {
            out.push_str(&format!("  {code:<28} {}\n", count.as_i64().unwrap_or(0)));
        }
    }
    out
}

fn incomplete_reason(c: &Value) -> String {
    let mut why = Vec::new();
    if n(c, "probes_failed") > 0 {
        why.push(format!("{} probes failed", n(c, "probes_failed")));
    }
    if n(c, "entries_refused") > 0 {
        why.push(format!("{} answer entries were refused", n(c, "entries_refused")));
    }
    if n(c, "not_asked") > 0 {
        why.push(format!("{} unknown events were not asked (limit)", n(c, "not_asked")));
    }
    format!("reconcile incomplete: {}", why.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_was_settled_and_what_failed() {
        let answer = json!({
            "source": "orders", "since": "2026-11-26T04:00:00Z", "until": "2026-11-26T06:00:00Z", "complete": false,
            "counts": { "unknown_in_window": 250, "asked": 200, "not_asked": 50, "probes": 2, "probes_failed": 1,
                        "in_failed_probes": 100, "entries": 31, "entries_refused": 1,
                        "refused_by_code": { "receipt_signature_invalid": 1 }, "confirmed": 28, "failed": 2,
                        "duplicate": 0, "still_unknown": 170, "failures": ["no answer within 2s"] },
        });
        let text = report(&answer);
        for expected in [
            "asked the handler about 200 of 250 unknown events in 2 probes",
            "confirmed           28",
            "still unknown      170",
            "not asked           50",
            "1 of 2 probes FAILED",
            "no answer within 2s",
            "receipt_signature_invalid",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
        let why = incomplete_reason(&answer["counts"]);
        assert!(why.contains("1 probes failed") && why.contains("50 unknown events were not asked"), "{why}");
    }
}
