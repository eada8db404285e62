//! `hookwarden replay`: the dry-run report, and the live run with its progress bar.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::{Api, CliError, print_json, time_arg};

/// What the operator typed (the `hookwarden replay` arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplayArgs {
    /// The source whose events to replay.
    pub source: String,
    /// Start of the window (inclusive): RFC 3339, or a duration ago such as 90m.
    #[arg(long)]
    pub since: Option<String>,
    /// End of the window (exclusive); now when omitted.
    #[arg(long)]
    pub until: Option<String>,
    /// Replay exactly these events instead of a window (repeatable).
    #[arg(long = "event-id")]
    pub event_ids: Vec<String>,
    /// e.g. "outcome = unknown AND attempts < 3".
    #[arg(long)]
    pub filter: Option<String>,
    /// Most events to send (default 50).
    #[arg(long)]
    pub limit: Option<i64>,
    /// Sends per second (default 2).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Also replay events the handler reported as failed.
    #[arg(long)]
    pub include_failed: bool,
    /// Also resend confirmed events (needs --note).
    #[arg(long)]
    pub override_confirmed: bool,
    /// Why confirmed events must be resent (kept in the audit log).
    #[arg(long)]
    pub note: Option<String>,
    /// Run it for real (needs --reason).
    #[arg(long = "no-dry-run")]
    pub live: bool,
    /// Why this replay runs (kept in the audit log).
    #[arg(long)]
    pub reason: Option<String>,
    /// Send to another URL instead (admins only), e.g. a staging handler.
    #[arg(long)]
    pub to: Option<String>,
    /// Do not ask the handler first (status probe) which events it already applied.
    #[arg(long = "no-ask-first")]
    pub no_ask_first: bool,
    /// Set from the global `--json`.
    #[arg(skip)]
    pub json: bool,
}

impl ReplayArgs {
    fn request(&self, now: OffsetDateTime) -> Result<Value, CliError> {
        if self.since.is_none() && self.event_ids.is_empty() {
            return Err(CliError::Usage("a replay needs a scope: --since (and --until) or --event-id".into()));
        }
        if self.override_confirmed && self.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(CliError::Usage(
                "--override-confirmed needs --note \"why confirmed events must be resent\"".into(),
            ));
        }
        if self.live && self.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(CliError::Usage("--no-dry-run needs --reason \"why\" (it goes into the audit log)".into()));
        }
        Ok(json!({
            "source": self.source,
            "since": self.since.as_deref().map(|t| time_arg(t, now)).transpose()?,
            "until": self.until.as_deref().map(|t| time_arg(t, now)).transpose()?,
            "event_ids": (!self.event_ids.is_empty()).then_some(&self.event_ids),
            "filter": self.filter,
            "limit": self.limit,
            "rate": self.rate,
            "include_failed": self.include_failed,
            "override_confirmed": self.override_confirmed.then(|| json!({ "note": self.note })),
            "dry_run": !self.live,
            "reason": self.reason,
            "to": self.to,
            "ask_first": !self.no_ask_first,
        }))
    }

    /// The exact command that runs this plan live, with the times made absolute.
    fn live_command(&self, request: &Value) -> String {
        let mut parts = vec!["hookwarden".to_string(), "replay".into(), shell_quote(&self.source)];
        let mut flag = |name: &str, value: &Value| {
            if let Some(v) = value.as_str() {
                parts.push(format!("--{name} {}", shell_quote(v)));
            } else if value.is_number() {
                parts.push(format!("--{name} {value}"));
            }
        };
        flag("since", &request["since"]);
        flag("until", &request["until"]);
        flag("filter", &request["filter"]);
        flag("limit", &request["limit"]);
        flag("rate", &request["rate"]);
        flag("to", &request["to"]);
        for id in &self.event_ids {
            parts.push(format!("--event-id {id}"));
        }
        if self.include_failed {
            parts.push("--include-failed".into());
        }
        if self.override_confirmed {
            parts.push(format!("--override-confirmed --note {}", shell_quote(self.note.as_deref().unwrap_or(""))));
        }
        if self.no_ask_first {
            parts.push("--no-ask-first".into());
        }
        parts.push("--no-dry-run --reason \"<why, for the audit log>\"".into());
        parts.join(" ")
    }
}

fn shell_quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/+@".contains(c)) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

pub async fn replay(api: &Api, args: ReplayArgs) -> Result<(), CliError> {
    let request = args.request(OffsetDateTime::now_utc())?;
    let answer = api.post("/v1/replays", &request).await?;
    if !args.live {
        if args.json {
            print_json(&answer);
        } else {
            print!("{}", dry_run_report(&answer, &args.live_command(&request)));
        }
        return Ok(());
    }
    let id = answer["id"]
        .as_str()
        .ok_or_else(|| CliError::Failed("the gateway did not return a replay id".into()))?
        .to_string();
    let job = watch(api, &id, answer["eligible"].as_u64().unwrap_or(0), args.json).await?;
    if args.json {
        print_json(&job);
    } else {
        println!("{}", final_line(&job));
    }
    match job["state"].as_str() {
        Some("completed") => Ok(()),
        other => Err(CliError::Failed(format!("replay {id} ended {}", other.unwrap_or("in an unknown state")))),
    }
}

fn count(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or(0)
}

/// The dry run, as a report.
pub fn dry_run_report(plan: &Value, live_command: &str) -> String {
    let counts = &plan["counts"];
    let mut out = String::new();
    out.push_str("Replay plan (dry run): nothing was sent.\n\n");
    let scope = &plan["scope"];
    out.push_str(&format!("  source       {}\n", scope["source"].as_str().unwrap_or("(all)")));
    match scope["event_ids"].as_u64() {
        Some(n) => out.push_str(&format!("  scope        {n} event ids\n")),
        None => out.push_str(&format!(
            "  window       {} -> {}\n",
            scope["since"].as_str().unwrap_or("?"),
            scope["until"].as_str().unwrap_or("now")
        )),
    }
    if let Some(filter) = plan["filter"].as_str() {
        out.push_str(&format!("  filter       {filter}\n"));
    }
    let include_failed = plan["include_failed"].as_bool().unwrap_or(false);
    let overriding = plan["override_confirmed"].as_bool().unwrap_or(false);
    out.push_str("\nIn scope, by outcome:\n");
    out.push_str(&format!(
        "  confirmed {:>8}   {}\n",
        count(counts, "confirmed"),
        if overriding { "ELIGIBLE (override)" } else { "excluded: the handler confirmed them" }
    ));
    out.push_str(&format!("  unknown   {:>8}   eligible\n", count(counts, "unknown")));
    out.push_str(&format!(
        "  failed    {:>8}   {}\n",
        count(counts, "failed"),
        if include_failed {
            "eligible (--include-failed)"
        } else {
            "not sent: review them with `hookwarden events list --filter 'outcome = failed'`, or add --include-failed"
        }
    ));
    let eligible = count(plan, "eligible");
    let rate = plan["rate"].as_f64().unwrap_or(0.0);
    out.push_str(&format!(
        "\nWould send    {eligible} of {} eligible (limit {}), at {rate}/s: about {}\n",
        count(plan, "eligible_in_scope"),
        count(plan, "limit"),
        human_seconds(plan["estimated_seconds"].as_f64().unwrap_or(0.0))
    ));
    if let Some(to) = plan["to"].as_str() {
        out.push_str(&format!("Destination   {to} (instead of the source's handler)\n"));
    }
    out.push_str(&ask_first_line(&plan["ask_first"]));
    let risk = plan["risk"].as_str().unwrap_or("?");
    let why = match risk {
        "low" => "only events nobody confirmed",
        "medium" => "includes events the handler reported as failed",
        _ => "resends events the handler CONFIRMED",
    };
    out.push_str(&format!("Risk          {}: {why}\n", risk.to_uppercase()));
    let sample = plan["sample"].as_array().cloned().unwrap_or_default();
    if !sample.is_empty() {
        out.push_str("\nFirst items, in the order they would go:\n");
        for item in &sample {
            out.push_str(&format!(
                "  {}  {:<20} {}  {:<9} -> {}  key {}\n",
                item["event_id"].as_str().unwrap_or(""),
                item["event_type"].as_str().unwrap_or("-"),
                item["received_at"].as_str().unwrap_or(""),
                item["outcome"].as_str().unwrap_or(""),
                item["destination"].as_str().unwrap_or(""),
                item["idempotency_key"].as_str().unwrap_or("")
            ));
        }
    }
    if eligible == 0 {
        out.push_str("\nNothing to replay.\n");
    } else {
        out.push_str(&format!("\nTo run it live:\n  {live_command}\n"));
    }
    out
}

/// What asking the handler first would do, as the dry run found out.
fn ask_first_line(preview: &Value) -> String {
    if preview.is_null() {
        return String::new();
    }
    if preview["enabled"] != true {
        let why = preview["reason"].as_str().unwrap_or("off");
        return format!("Ask first     no: {why}\n");
    }
    let mut line = format!(
        "Ask first     {} of {} unknown would be settled by the handler (not sent)",
        count(preview, "would_settle"),
        count(preview, "unknown")
    );
    if count(preview, "asked") < count(preview, "unknown") {
        line.push_str(&format!("; {} of them asked (the others' source has no status_url)", count(preview, "asked")));
    }
    if count(preview, "probes_failed") > 0 {
        line.push_str(&format!(
            "; {} of {} probes FAILED (a live run goes on without their answers)",
            count(preview, "probes_failed"),
            count(preview, "probes")
        ));
    }
    if count(preview, "refused") > 0 {
        line.push_str(&format!("; {} answer entries would be refused", count(preview, "refused")));
    }
    if preview["partial"] == true {
        line.push_str("; the first 1000 items looked at");
    }
    line + "\n"
}

fn human_seconds(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

fn final_line(job: &Value) -> String {
    let c = &job["counts"];
    format!(
        "replay {} {}: sent {}, succeeded {}, failed {}, skipped (receipt arrived) {}, skipped (the handler had it) {}, \
         skipped (other) {}, skipped (payload purged) {}{}",
        job["id"].as_str().unwrap_or(""),
        job["state"].as_str().unwrap_or(""),
        count(c, "sent"),
        count(c, "succeeded"),
        count(c, "failed"),
        count(c, "skipped_receipt"),
        count(c, "skipped_probe"),
        count(c, "skipped_other"),
        count(c, "skipped_purged"),
        if count(c, "probes_failed") > 0 {
            format!("; {} of {} probes failed", count(c, "probes_failed"), count(c, "probes"))
        } else {
            String::new()
        },
    )
}

/// Follows a live run until it ends; Ctrl-C asks whether to cancel it.
async fn watch(api: &Api, id: &str, eligible: u64, quiet: bool) -> Result<Value, CliError> {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(eligible) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut ctrl_c = ctrl_c_listener().await;
    if !quiet {
        eprintln!("replay {id} started; Ctrl-C to cancel it");
    }
    loop {
        let job = api.get(&format!("/v1/replays/{id}")).await?;
        let c = &job["counts"];
        let done = count(c, "sent")
            + count(c, "skipped_receipt")
            + count(c, "skipped_other")
            + count(c, "skipped_probe")
            + count(c, "skipped_purged");
        bar.set_position(done as u64);
        bar.set_message(format!(
            "sent {} ok {} failed {} skipped {} at {:.1}/s",
            count(c, "sent"),
            count(c, "succeeded"),
            count(c, "failed"),
            count(c, "skipped_receipt")
                + count(c, "skipped_other")
                + count(c, "skipped_probe")
                + count(c, "skipped_purged"),
            job["current_rate"].as_f64().unwrap_or(0.0)
        ));
        if job["state"] != "running" {
            bar.finish();
            return Ok(job);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = &mut ctrl_c => {
                let answer = bar.suspend(|| ask(&format!("Cancel replay {id}? Items already sent stay sent. [y/N] ")));
                ctrl_c = ctrl_c_listener().await;
                if answer {
                    api.post(&format!("/v1/replays/{id}/cancel"), &json!({})).await?;
                } else {
                    eprintln!("still running; Ctrl-C again to cancel");
                }
            }
        }
    }
}

/// A Ctrl-C listener that is already listening: tokio starts to on the first poll, and a
/// Ctrl-C before that would go unseen (or, before the first, end the command unasked). So
/// it is polled once here, before anyone is told to press Ctrl-C.
async fn ctrl_c_listener() -> Pin<Box<impl Future<Output = std::io::Result<()>>>> {
    loop {
        let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
        let listening = tokio::select! {
            biased;
            _ = &mut ctrl_c => false,
            _ = std::future::ready(()) => true,
        };
        // A finished listener must not be polled again: one that already fired is replaced.
        if listening {
            return ctrl_c;
        }
    }
}

fn ask(question: &str) -> bool {
    use std::io::Write;
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_would_happen_and_how_to_run_it() {
        let plan = json!({
            "scope": { "source": "orders", "since": "2026-11-26T04:00:00Z", "until": "2026-11-26T06:00:00Z" },
            "filter": "attempts < 3",
            "counts": { "confirmed": 120, "unknown": 37, "failed": 4 },
            "eligible": 37, "eligible_in_scope": 37, "limit": 50, "rate": 2.0, "estimated_seconds": 19.0,
            "risk": "low", "include_failed": false, "override_confirmed": false,
            "ask_first": { "enabled": true, "unknown": 37, "asked": 37, "would_settle": 12, "probes": 1,
                           "probes_failed": 0, "refused": 0, "partial": false },
            "sample": [{ "event_id": "evt_1", "event_type": "order.created", "received_at": "2026-11-26T04:01:00Z",
                         "outcome": "unknown", "destination": "http://h/orders", "idempotency_key": "idk_1" }],
        });
        let args = ReplayArgs { source: "orders".into(), since: Some("2h".into()), ..ReplayArgs::default() };
        let request = json!({ "since": "2026-11-26T04:00:00Z", "filter": "attempts < 3" });
        let report = dry_run_report(&plan, &args.live_command(&request));
        for expected in [
            "nothing was sent",
            "confirmed      120   excluded",
            "unknown         37   eligible",
            "add --include-failed",
            "Would send    37 of 37 eligible (limit 50), at 2/s: about 19s",
            "Risk          LOW",
            "Ask first     12 of 37 unknown would be settled by the handler (not sent)",
            "evt_1",
            "hookwarden replay orders --since 2026-11-26T04:00:00Z --filter 'attempts < 3' --no-dry-run --reason",
        ] {
            assert!(report.contains(expected), "missing `{expected}` in:\n{report}");
        }
    }

    #[test]
    fn live_runs_need_a_reason_and_overrides_a_note() {
        let now = OffsetDateTime::now_utc();
        let live = ReplayArgs { source: "s".into(), since: Some("1h".into()), live: true, ..ReplayArgs::default() };
        assert!(live.request(now).is_err());
        let unscoped = ReplayArgs { source: "s".into(), ..ReplayArgs::default() };
        assert!(unscoped.request(now).is_err());
        let overriding = ReplayArgs {
            source: "s".into(),
            since: Some("1h".into()),
            override_confirmed: true,
            ..ReplayArgs::default()
        };
        assert!(overriding.request(now).is_err());
    }
}
