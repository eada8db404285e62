//! `hookwarden replay`: the dry-run report, and the live run with its progress bar.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::table::Table;
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
    /// Only events received after this one (the order a replay sends in): continues a run
    /// that --limit cut short, as the run's last lines say.
    #[arg(long, value_name = "EVENT_ID")]
    pub after: Option<String>,
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
            "after_event": self.after,
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

    /// The exact command that runs this plan live, with the times made absolute (the window
    /// ends where the plan's did, so the command covers the same events however late it
    /// runs), sending at most `limit` events after `after`.
    fn live_command(&self, request: &Value, plan: &Value, limit: Option<i64>, after: Option<&str>) -> String {
        let mut parts = vec!["hookwarden".to_string(), "replay".into(), shell_quote(&self.source)];
        let mut flag = |name: &str, value: &Value| {
            if let Some(v) = value.as_str() {
                parts.push(format!("--{name} {}", shell_quote(v)));
            } else if let Some(n) = value.as_f64() {
                // As a person types it: `--rate 5`, not `5.0`.
                parts.push(format!("--{name} {n}"));
            }
        };
        flag("since", &request["since"]);
        if request["since"].is_string() {
            let until = &plan["scope"]["until_planned"];
            flag("until", if until.is_string() { until } else { &request["until"] });
        }
        match after {
            Some(after) => flag("after", &json!(after)),
            None => flag("after", &request["after_event"]),
        }
        flag("filter", &request["filter"]);
        match limit {
            Some(limit) => flag("limit", &json!(limit)),
            None => flag("limit", &request["limit"]),
        }
        // The operator's rate, or else the one suggested from the handler's pace.
        match (&request["rate"], plan["handler"]["suggested_rate"].as_f64()) {
            (Value::Null, Some(suggested)) if suggested > plan["rate"].as_f64().unwrap_or(0.0) => {
                flag("rate", &json!(suggested))
            }
            (rate, _) => flag("rate", rate),
        }
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
        let reason = self.reason.as_deref().map_or_else(|| "\"<why, for the audit log>\"".to_string(), shell_quote);
        parts.push(format!("--no-dry-run --reason {reason}"));
        parts.join(" ")
    }
}

pub(super) fn shell_quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/+@".contains(c)) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// How a live run ended, as the exit code says it (README, "At 2 AM").
pub mod exit {
    /// The job completed and no item failed.
    pub const COMPLETED: u8 = 0;
    /// The job completed, and at least one item failed (the handler did not take it).
    pub const ITEMS_FAILED: u8 = 3;
    /// The job was cancelled.
    pub const CANCELLED: u8 = 4;
    /// The job failed (the gateway could not go on with it).
    pub const JOB_FAILED: u8 = 5;
}

pub async fn replay(api: &Api, args: ReplayArgs) -> Result<(), CliError> {
    let request = args.request(OffsetDateTime::now_utc())?;
    if args.note.is_some() && !args.override_confirmed {
        eprintln!("hookwarden: --note goes with --override-confirmed; without it the note is ignored (use --reason)");
    }
    let answer = api.post("/v1/replays", &request).await?;
    if !args.live {
        if args.json {
            print_json(&answer);
        } else {
            let run = args.live_command(&request, &answer, None, None);
            let all = (count(&answer, "left_out") > 0)
                .then(|| args.live_command(&request, &answer, Some(count(&answer, "eligible_in_scope")), None));
            print!("{}", dry_run_report(&answer, &run, all.as_deref()));
            let mut kept = Vec::new();
            if args.reason.is_some() {
                kept.push("--reason");
            }
            if args.note.is_some() && args.override_confirmed {
                kept.push("--note");
            }
            if !kept.is_empty() {
                println!(
                    "({} kept in this dry run's audit entry; nothing ran, and the live command above carries {} again)",
                    kept.join(" and "),
                    if kept.len() == 1 { "it" } else { "them" }
                );
            }
        }
        return Ok(());
    }
    let id = answer["id"]
        .as_str()
        .ok_or_else(|| CliError::Failed("the gateway did not return a replay id".into()))?
        .to_string();
    let job = watch(api, &id, answer["eligible"].as_u64().unwrap_or(0), args.json).await?;
    finish(&job, args.json, |left_out, last| args.live_command(&request, &answer, Some(left_out), Some(last)))
}

/// Prints how a job ended (the report's last line, or its JSON) and turns it into the exit
/// code; `continuation` makes the command that sends what `--limit` left out.
pub(super) fn finish(job: &Value, json: bool, continuation: impl Fn(i64, &str) -> String) -> Result<(), CliError> {
    if json {
        print_json(job);
    } else {
        if let Some(left) = left_out_note(job, &continuation) {
            println!("{left}");
        }
        println!("{}", final_line(job));
    }
    match exit_code(job) {
        exit::COMPLETED => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}

/// The exit code of a job that ended.
pub fn exit_code(job: &Value) -> u8 {
    match job["state"].as_str() {
        Some("completed") if count(&job["counts"], "failed") == 0 => exit::COMPLETED,
        Some("completed") => exit::ITEMS_FAILED,
        Some("cancelled") => exit::CANCELLED,
        _ => exit::JOB_FAILED,
    }
}

/// What `--limit` left behind, and how to go on exactly where the run stopped.
fn left_out_note(job: &Value, continuation: &impl Fn(i64, &str) -> String) -> Option<String> {
    let left_out = count(job, "left_out");
    let last = job["last_event_id"].as_str()?;
    (left_out > 0 && job["state"] == "completed").then(|| {
        format!(
            "{left_out} more eligible event{} in the scope {} left out by --limit (this run sent the first {}).\n\
             To continue where it stopped, in the same order:\n  {}",
            plural(left_out),
            if left_out == 1 { "was" } else { "were" },
            count(&job["counts"], "eligible"),
            continuation(left_out, last)
        )
    })
}

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub(super) fn count(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or(0)
}

/// The dry run, as a report.
/// `all_command` runs it over every eligible event, when the limit leaves some out.
pub fn dry_run_report(plan: &Value, live_command: &str, all_command: Option<&str>) -> String {
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
            scope["until"].as_str().or(scope["until_planned"].as_str()).unwrap_or("now")
        )),
    }
    if let Some(after) = scope["after_event"].as_str() {
        out.push_str(&format!("  after        {after} (events received after it)\n"));
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
    let named = scope["event_ids"].is_u64();
    out.push_str(&format!(
        "  resolved  {:>8}   {}\n",
        count(counts, "resolved"),
        if named { "eligible: named by id" } else { "excluded: an operator resolved them (name one by --event-id)" }
    ));
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
    let left_out = count(plan, "left_out");
    if left_out > 0 {
        out.push_str(&format!(
            "Left out      {left_out} eligible event{} by the limit: this run would NOT send them\n",
            plural(left_out)
        ));
    }
    out.push_str(&handler_lines(&plan["handler"], eligible, rate));
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
        let mut table = Table::new(&["EVENT", "TYPE", "RECEIVED", "OUTCOME", "TO", "IDEMPOTENCY KEY"]);
        let cell = |item: &Value, name: &str, none: &str| item[name].as_str().unwrap_or(none).to_string();
        for item in &sample {
            table.row(vec![
                cell(item, "event_id", ""),
                cell(item, "event_type", "-"),
                cell(item, "received_at", ""),
                cell(item, "outcome", ""),
                cell(item, "destination", ""),
                cell(item, "idempotency_key", ""),
            ]);
        }
        for line in table.to_string().lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    if eligible == 0 {
        out.push_str("\nNothing to replay.\n");
    } else if let Some(all) = all_command {
        out.push_str(&format!("\nTo run it live (the first {eligible} only):\n  {live_command}\n"));
        out.push_str(&format!("To send all {} eligible events:\n  {all}\n", count(plan, "eligible_in_scope")));
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

/// The handler as it is now, and the rate suggested from it; or that it is still failing.
fn handler_lines(pace: &Value, eligible: i64, rate: f64) -> String {
    if !pace.is_object() {
        return String::new();
    }
    let minutes = pace["window_seconds"].as_i64().unwrap_or(0) / 60;
    let attempts = count(pace, "attempts");
    if attempts == 0 {
        return format!(
            "Handler       no attempts in the last {minutes} minutes to judge its pace from; the run starts at {rate}/s \
             and slows down on 429/503\n"
        );
    }
    // Latency and throughput are of the 2xx answers: a handler that answered none has neither.
    let pace_of_successes = match pace["median_latency_ms"].as_i64() {
        Some(ms) => {
            format!(", median {ms} ms, busiest minute {}/s", pace["busiest_per_second"].as_f64().unwrap_or(0.0))
        }
        None => String::new(),
    };
    let mut out = format!(
        "Handler       last {minutes} minutes: {attempts} attempt{}, {}% answered 2xx{pace_of_successes}\n",
        plural(attempts),
        count(pace, "succeeded") * 100 / attempts,
    );
    if pace["still_failing"] == true {
        out.push_str(&format!(
            "              STILL FAILING: {} of its last {} attempts failed (most: {}). A live run now would fail too.\n",
            count(pace, "latest_failed"),
            count(pace, "latest"),
            pace["latest_cause"].as_str().unwrap_or("?")
        ));
    } else if let Some(suggested) = pace["suggested_rate"].as_f64().filter(|s| *s > rate) {
        out.push_str(&format!(
            "Suggested     --rate {suggested}: about {} (estimated at current handler throughput: half what it showed, \
             and the run slows down on 429/503)\n",
            human_seconds((eligible as f64 / suggested).ceil())
        ));
    }
    out
}

fn human_seconds(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The report's last line: how the job ended, its counts, and for failures their most
/// common cause.
pub fn final_line(job: &Value) -> String {
    let c = &job["counts"];
    let state = job["state"].as_str().unwrap_or("in an unknown state");
    let failed = count(c, "failed");
    let how = match state {
        "completed" if failed > 0 => format!("completed, {failed} FAILED"),
        "failed" => format!("FAILED ({})", job["error"].as_str().unwrap_or("no reason given")),
        "cancelled" => "cancelled".to_string(),
        other => other.to_string(),
    };
    let mut line = format!(
        "replay {} {how}: sent {}, succeeded {}, failed {}, skipped (receipt arrived) {}, skipped (the handler had it) {}, \
         skipped (other) {}, skipped (payload purged) {}",
        job["id"].as_str().unwrap_or(""),
        count(c, "sent"),
        count(c, "succeeded"),
        failed,
        count(c, "skipped_receipt"),
        count(c, "skipped_probe"),
        count(c, "skipped_other"),
        count(c, "skipped_purged"),
    );
    if count(c, "probes_failed") > 0 {
        line.push_str(&format!("; {} of {} probes failed", count(c, "probes_failed"), count(c, "probes")));
    }
    if let Some(top) = job["failures"].as_array().and_then(|f| f.first()) {
        line.push_str(&format!(
            "; most failed with {} ({} of {failed})",
            top["cause"].as_str().unwrap_or("?"),
            count(top, "count")
        ));
    }
    if job["settled"] == false {
        line.push_str(" (counts not final: the gateway has not recorded every item's result yet)");
    }
    line
}

/// Follows a live run until it ends; Ctrl-C asks whether to cancel it.
pub(super) async fn watch(api: &Api, id: &str, eligible: u64, quiet: bool) -> Result<Value, CliError> {
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(eligible) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut ctrl_c = ctrl_c_listener().await;
    let mut settle_wait = 0;
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
        if !matches!(job["state"].as_str(), Some("running" | "paused")) {
            // The job's state changes before its last results are written (a cancel answers
            // at once, the send in flight and the cancelled items are counted after): the
            // counts printed are the job's final ones, or said not to be.
            // Up to 15 s: on a loaded gateway the last results' group commit can take seconds.
            if job["settled"] == false && settle_wait < 60 {
                settle_wait += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
            // The last line says the same, on a line of its own.
            bar.finish_and_clear();
            return Ok(job);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = &mut ctrl_c => {
                // Nothing more goes out while the question is open: the job is paused first
                // (a job that ended meanwhile, or a token that may not pause, just asks).
                let paused = api.post(&format!("/v1/replays/{id}/pause"), &json!({})).await.is_ok();
                let question = if paused {
                    format!("Sending is paused. Cancel replay {id}? Items already sent stay sent. [y/N] ")
                } else {
                    format!("Cancel replay {id}? Items already sent stay sent. [y/N] ")
                };
                let answer = bar.suspend(|| ask(&question));
                ctrl_c = ctrl_c_listener().await;
                if answer {
                    api.post(&format!("/v1/replays/{id}/cancel"), &json!({})).await?;
                } else {
                    if paused {
                        api.post(&format!("/v1/replays/{id}/resume"), &json!({})).await?;
                    }
                    eprintln!("still running{}; Ctrl-C again to cancel", if paused { " (resumed)" } else { "" });
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
            "scope": { "source": "orders", "since": "2026-11-26T04:00:00Z", "until": null, "until_planned": "2026-11-26T06:00:00Z" },
            "filter": "attempts < 3",
            "counts": { "confirmed": 120, "unknown": 37, "failed": 4 },
            "eligible": 37, "eligible_in_scope": 37, "left_out": 0, "limit": 50, "rate": 2.0, "estimated_seconds": 19.0,
            "risk": "low", "include_failed": false, "override_confirmed": false,
            "ask_first": { "enabled": true, "unknown": 37, "asked": 37, "would_settle": 12, "probes": 1,
                           "probes_failed": 0, "refused": 0, "partial": false },
            "sample": [{ "event_id": "evt_1", "event_type": "order.created", "received_at": "2026-11-26T04:01:00Z",
                         "outcome": "unknown", "destination": "http://h/orders", "idempotency_key": "idk_1" }],
        });
        let args = ReplayArgs { source: "orders".into(), since: Some("2h".into()), ..ReplayArgs::default() };
        let request = json!({ "since": "2026-11-26T04:00:00Z", "filter": "attempts < 3" });
        let report = dry_run_report(&plan, &args.live_command(&request, &plan, None, None), None);
        for expected in [
            "nothing was sent",
            "confirmed      120   excluded",
            "unknown         37   eligible",
            "add --include-failed",
            "Would send    37 of 37 eligible (limit 50), at 2/s: about 19s",
            "Risk          LOW",
            "Ask first     12 of 37 unknown would be settled by the handler (not sent)",
            "evt_1",
            "hookwarden replay orders --since 2026-11-26T04:00:00Z --until 2026-11-26T06:00:00Z --filter 'attempts < 3' --no-dry-run --reason",
        ] {
            assert!(report.contains(expected), "missing `{expected}` in:\n{report}");
        }
        assert!(!report.contains("Left out"), "{report}");
    }

    #[test]
    fn the_sample_lines_up_however_long_an_event_type() {
        let item = |id: &str, kind: &str| {
            json!({ "event_id": id, "event_type": kind, "received_at": "2026-11-26T04:01:00Z", "outcome": "unknown",
                    "destination": "http://h/orders", "idempotency_key": format!("idk_{id}") })
        };
        let plan = json!({
            "scope": { "source": "orders", "since": "2026-11-26T04:00:00Z", "until": null },
            "counts": { "unknown": 2 }, "eligible": 2, "eligible_in_scope": 2, "left_out": 0, "rate": 2.0,
            "risk": "low", "sample": [item("evt_1", "payment_intent.payment_failed"), item("evt_2", "order.paid")],
        });
        let report = dry_run_report(&plan, "hookwarden replay orders --no-dry-run", None);
        let lines: Vec<&str> = report.lines().filter(|l| l.contains("2026-11-26T04:01:00Z")).collect();
        assert_eq!(lines.len(), 2, "{report}");
        let at = |line: &str, what: &str| line.find(what).unwrap_or_else(|| panic!("no {what} in {line}"));
        assert_eq!(at(lines[0], "2026-11-26T04:01:00Z"), at(lines[1], "2026-11-26T04:01:00Z"), "{report}");
        assert_eq!(at(lines[0], "idk_evt_1"), at(lines[1], "idk_evt_2"), "{report}");
        assert!(report.contains("EVENT") && report.contains("IDEMPOTENCY KEY"), "{report}");
    }

    #[test]
    fn exit_codes_and_the_last_line_tell_how_the_job_ended() {
        let job = |state: &str, failed: i64| {
            json!({ "id": "rpl_1", "state": state, "settled": true, "error": "the store went away",
                    "counts": { "eligible": 4, "sent": 4, "succeeded": 4 - failed, "failed": failed },
                    "failures": if failed > 0 { json!([{ "cause": "HTTP 500", "count": failed }]) } else { json!([]) } })
        };
        assert_eq!(exit_code(&job("completed", 0)), exit::COMPLETED);
        assert_eq!(exit_code(&job("completed", 4)), exit::ITEMS_FAILED);
        assert_eq!(exit_code(&job("cancelled", 0)), exit::CANCELLED);
        assert_eq!(exit_code(&job("failed", 0)), exit::JOB_FAILED);
        assert!(final_line(&job("completed", 4)).contains("completed, 4 FAILED"));
        assert!(final_line(&job("completed", 4)).ends_with("most failed with HTTP 500 (4 of 4)"));
        assert!(final_line(&job("failed", 0)).contains("FAILED (the store went away)"));
        let mut moving = job("cancelled", 0);
        moving["settled"] = json!(false);
        assert!(final_line(&moving).contains("counts not final"));
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
