//! `events list|show|resolve`, `summary`, `audit [verify]`.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::table::Table;
use super::{Api, CliError, print_json, time_arg, with_query};
use crate::audit::{AuditEntry, GENESIS, verify_chain};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// A number for a table cell (a `Value` ignores width and alignment).
fn n(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// What `events list` asks for; each a query parameter of `GET /v1/events`.
pub struct EventsQuery {
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub outcome: Option<String>,
    pub filter: Option<String>,
    pub limit: Option<i64>,
    pub provider_id: Option<String>,
    pub cursor: Option<String>,
    /// Every page, not only the first.
    pub all: bool,
}

pub async fn events_list(api: &Api, q: EventsQuery, json_out: bool) -> Result<(), CliError> {
    let now = OffsetDateTime::now_utc();
    let since = q.since.map(|t| time_arg(&t, now)).transpose()?;
    let until = q.until.map(|t| time_arg(&t, now)).transpose()?;
    let mut cursor = q.cursor.clone();
    let mut events = Vec::new();
    let next = loop {
        let path = with_query(
            "/v1/events",
            &[
                ("source", q.source.clone()),
                ("since", since.clone()),
                ("until", until.clone()),
                ("outcome", q.outcome.clone()),
                ("filter", q.filter.clone()),
                ("provider_id", q.provider_id.clone()),
                ("limit", q.limit.map(|l| l.to_string())),
                ("cursor", cursor.clone()),
            ],
        );
        let page = api.get(&path).await?;
        events.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) if q.all => cursor = Some(next.to_string()),
            next => break next.map(str::to_string),
        }
    };
    if json_out {
        print_json(&json!({ "data": events, "next_cursor": next }));
        return Ok(());
    }
    let mut table =
        Table::new(&["ID", "SOURCE", "PROVIDER ID", "TYPE", "RECEIVED", "OUTCOME", "DELIVERY", "ATT", "PAYLOAD"]);
    for e in &events {
        let mut outcome = s(&e["outcome"]).to_string();
        if let Some(code) = e["error_code"].as_str() {
            outcome.push_str(&format!(" ({code})"));
        }
        if e["overdue"] == true {
            outcome.push_str(" (overdue)");
        }
        table.row(vec![
            s(&e["id"]).to_string(),
            s(&e["source"]).to_string(),
            s(&e["provider_event_id"]).to_string(),
            s(&e["event_type"]).to_string(),
            s(&e["received_at"]).to_string(),
            outcome,
            s(&e["delivery_state"]).to_string(),
            n(&e["attempts"]).to_string(),
            s(&e["payload"]).to_string(),
        ]);
    }
    if table.is_empty() {
        println!("No events.");
    } else {
        print!("{table}");
    }
    if let Some(next) = next {
        println!("(more: add --cursor {next}, or --all for every page)");
    }
    Ok(())
}

/// An event by its id (`evt_…`), or by the provider's own id (`--source` when two sources
/// have one alike).
pub async fn find_event(api: &Api, id: &str, source: Option<&str>) -> Result<Value, CliError> {
    if id.starts_with("evt_") {
        return api.get(&format!("/v1/events/{id}")).await;
    }
    let path = with_query(
        "/v1/events",
        &[("provider_id", Some(id.to_string())), ("source", source.map(str::to_string)), ("limit", Some("2".into()))],
    );
    let found = api.get(&path).await?;
    let found = found["data"].as_array().cloned().unwrap_or_default();
    match found.as_slice() {
        [] => Err(CliError::Failed(format!(
            "no event `{id}`: neither a gateway id (evt_…) nor a provider's event id{}",
            source.map(|s| format!(" of source {s}")).unwrap_or_default()
        ))),
        [one] => api.get(&format!("/v1/events/{}", s(&one["id"]))).await,
        several => {
            let sources: Vec<&str> = several.iter().map(|e| s(&e["source"])).collect();
            Err(CliError::Usage(format!(
                "provider id `{id}` is in more than one source ({}): add --source",
                sources.join(", ")
            )))
        }
    }
}

/// How much of a payload `events show` prints unless asked for all of it.
const PAYLOAD_LINES: usize = 40;

pub async fn event_show(api: &Api, id: &str, source: Option<&str>, full: bool, json_out: bool) -> Result<(), CliError> {
    let e = find_event(api, id, source).await?;
    if json_out {
        print_json(&e);
        return Ok(());
    }
    print!("{}", event_report(&e, full));
    Ok(())
}

/// `events show` as text: the facts, why it stands where it stands, then what there is of
/// attempts, receipts and the payload (an empty section is left out).
pub fn event_report(e: &Value, full: bool) -> String {
    let mut out = format!("{}  ({} / {})\n", s(&e["id"]), s(&e["source"]), s(&e["event_type"]));
    let mut line = |name: &str, value: String| out.push_str(&format!("  {name:<16} {value}\n"));
    line("provider id", s(&e["provider_event_id"]).to_string());
    line("received", s(&e["received_at"]).to_string());
    line(
        "outcome",
        format!("{}{}", s(&e["outcome"]), e["error_code"].as_str().map(|c| format!(" ({c})")).unwrap_or_default()),
    );
    if let Some(reason) = e["outcome_reason"].as_str() {
        line("why", reason.to_string());
    }
    line("delivery", delivery_status(e));
    line("idempotency key", s(&e["idempotency_key"]).to_string());
    if let Some(at) = e["payload_purged_at"].as_str() {
        line("payload", format!("purged {at} (retention): headers and body are gone"));
    }
    if let Some(r) = e["resolved"].as_object() {
        line("resolved", format!("{} by {}: {}", s(&r["at"]), s(&r["by"]), s(&r["note"])));
    }
    let attempts = e["attempt_log"].as_array().cloned().unwrap_or_default();
    if !attempts.is_empty() {
        out.push_str("Attempts:\n");
        let mut table = Table::new(&["#", "KIND", "STARTED", "MS", "STATUS", "ERROR", "REPLAY"]);
        for a in &attempts {
            table.row(vec![
                a["number"].to_string(),
                s(&a["kind"]).to_string(),
                s(&a["started_at"]).to_string(),
                a["latency_ms"].to_string(),
                a["status_code"].as_i64().map_or("-".into(), |c| c.to_string()),
                a["error"].as_str().unwrap_or("").to_string(),
                a["replay_id"].as_str().unwrap_or("").to_string(),
            ]);
        }
        out.push_str(&indent(&table.to_string()));
    }
    let receipts = e["receipts"].as_array().cloned().unwrap_or_default();
    if !receipts.is_empty() {
        out.push_str("Receipts:\n");
        let mut table = Table::new(&["RECEIVED", "STATUS", "KEY", "VIA", "RECORD", "ERROR"]);
        for r in &receipts {
            table.row(vec![
                s(&r["received_at"]).to_string(),
                s(&r["status"]).to_string(),
                s(&r["key_id"]).to_string(),
                s(&r["via"]).to_string(),
                r["target_record_id"].as_str().unwrap_or("").to_string(),
                r["error_code"].as_str().unwrap_or("").to_string(),
            ]);
        }
        out.push_str(&indent(&table.to_string()));
    }
    if let Some(body) = e["body"].as_str().filter(|b| !b.is_empty()) {
        let pretty = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| body.to_string());
        let lines: Vec<&str> = pretty.lines().collect();
        out.push_str(&format!("Payload ({} bytes):\n", body.len()));
        let shown = if full { lines.len() } else { lines.len().min(PAYLOAD_LINES) };
        for l in &lines[..shown] {
            out.push_str(&format!("  {l}\n"));
        }
        if shown < lines.len() {
            out.push_str(&format!("  … {} more lines: add --full to see all of it\n", lines.len() - shown));
        }
    } else if let Some(b64) = e["body_base64"].as_str() {
        out.push_str(&format!("Payload: not UTF-8, {} characters of base64 (--json shows it)\n", b64.len()));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// Where delivery stands, and why nothing more happens when nothing does.
fn delivery_status(e: &Value) -> String {
    let attempts = n(&e["attempts"]);
    let last = e["attempt_log"].as_array().and_then(|a| a.last()).map(|a| {
        match (a["status_code"].as_i64(), a["error"].as_str()) {
            (Some(code), _) => format!("the handler answered {code}"),
            (None, Some(err)) => format!("no answer ({err})"),
            (None, None) => "no answer".into(),
        }
    });
    let last_failed_receipt =
        e["receipts"].as_array().and_then(|r| r.iter().rev().find(|r| r["status"] == "failed")).cloned();
    if let Some(next) = e["next_attempt_at"].as_str() {
        return format!(
            "pending: attempt {} at {next}{}",
            attempts + 1,
            last.map(|l| format!(" (the last: {l})")).unwrap_or_default()
        );
    }
    match (s(&e["outcome"]), s(&e["delivery_state"])) {
        ("confirmed", _) => format!("done: the handler confirmed it ({attempts} attempts)"),
        ("resolved", _) => "done: an operator resolved it; no retry after a resolution".into(),
        ("failed", _) if last_failed_receipt.is_some() => format!(
            "no retry: the handler's receipt says it failed ({}); a failed receipt is final. \
             After the fix: hookwarden replay --event-id {} --include-failed",
            s(&last_failed_receipt.as_ref().expect("checked")["error_code"]),
            s(&e["id"])
        ),
        (_, "exhausted") => format!(
            "no retry: all {attempts} attempts failed{}; replay it once the handler is back",
            last.map(|l| format!(", the last as {l}")).unwrap_or_default()
        ),
        (_, "delivered") => format!(
            "delivered at {} (2xx); waiting for the handler's receipt{}",
            s(&e["delivered_at"]),
            if e["overdue"] == true { " — OVERDUE" } else { "" }
        ),
        (_, state) => format!("{state}: no attempt scheduled ({attempts} so far)"),
    }
}

/// `events resolve`: one event by id (or provider id) at once, or a selection with a dry run
/// first.
pub struct ResolveArgs {
    pub id: Option<String>,
    pub note: String,
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub filter: Option<String>,
    pub live: bool,
}

pub async fn events_resolve(api: &Api, args: ResolveArgs, json_out: bool) -> Result<(), CliError> {
    if args.note.trim().is_empty() {
        return Err(CliError::Usage("--note \"why\" is required (it goes into the audit log)".into()));
    }
    if let Some(id) = &args.id {
        if args.since.is_some() || args.filter.is_some() {
            return Err(CliError::Usage("give an event id, or a selection (--since, --filter), not both".into()));
        }
        let event = find_event(api, id, args.source.as_deref()).await?;
        let id = s(&event["id"]).to_string();
        let done = api.post(&format!("/v1/events/{id}/resolve"), &json!({ "note": args.note })).await?;
        if json_out {
            print_json(&done);
        } else {
            println!("{id} resolved: {}", args.note);
        }
        return Ok(());
    }
    if args.since.is_none() {
        return Err(CliError::Usage(
            "name an event (ID or the provider's id), or a selection: --since (and --until, --filter)".into(),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let request = json!({
        "source": args.source,
        "since": args.since.as_deref().map(|t| time_arg(t, now)).transpose()?,
        "until": args.until.as_deref().map(|t| time_arg(t, now)).transpose()?,
        "filter": args.filter,
        "note": args.note,
        "dry_run": !args.live,
    });
    let answer = api.post("/v1/events/resolve", &request).await?;
    if json_out {
        print_json(&answer);
        return Ok(());
    }
    let c = &answer["counts"];
    let resolving = n(&answer["resolving"]);
    if args.live {
        println!("Resolved {resolving} event{} with the note: {}", if resolving == 1 { "" } else { "s" }, args.note);
        return Ok(());
    }
    println!("Resolution (dry run): nothing was changed.\n");
    println!("In scope, by outcome:");
    println!("  unknown   {:>8}   would be resolved", n(&c["unknown"]));
    println!("  failed    {:>8}   would be resolved", n(&c["failed"]));
    println!("  confirmed {:>8}   left as they are", n(&c["confirmed"]));
    println!("  resolved  {:>8}   left as they are", n(&c["resolved"]));
    let sample: Vec<&str> = answer["event_ids"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if !sample.is_empty() {
        println!("\nFirst of them: {}", sample.join(", "));
    }
    if resolving == 0 {
        println!("\nNothing to resolve.");
        return Ok(());
    }
    let mut command = vec!["hookwarden events resolve".to_string()];
    for (flag, value) in [("source", &request["source"]), ("since", &request["since"]), ("until", &request["until"])] {
        if let Some(v) = value.as_str() {
            command.push(format!("--{flag} {}", super::replay::shell_quote(v)));
        }
    }
    if request["until"].is_null() {
        command.push(format!("--until {}", super::replay::shell_quote(&time_arg("0s", now)?)));
    }
    if let Some(f) = request["filter"].as_str() {
        command.push(format!("--filter {}", super::replay::shell_quote(f)));
    }
    command.push(format!("--note {} --no-dry-run", super::replay::shell_quote(&args.note)));
    println!("\nTo resolve these {resolving} (one audit entry, all or nothing):\n  {}", command.join(" "));
    Ok(())
}

pub async fn summary(
    api: &Api,
    source: Option<String>,
    since: Option<String>,
    until: Option<String>,
    bucket: Option<String>,
    json_out: bool,
) -> Result<(), CliError> {
    let now = OffsetDateTime::now_utc();
    let path = with_query(
        "/v1/summary",
        &[
            ("source", source),
            ("since", since.map(|t| time_arg(&t, now)).transpose()?),
            ("until", until.map(|t| time_arg(&t, now)).transpose()?),
            ("bucket", bucket),
        ],
    );
    let v = api.get(&path).await?;
    if json_out {
        print_json(&v);
        return Ok(());
    }
    let t = &v["totals"];
    println!("{} -> {}", s(&v["since"]), s(&v["until"]));
    println!(
        "total {}: confirmed {}, unknown {} (overdue {}), failed {}, resolved {}",
        t["total"], t["confirmed"], t["unknown"], t["overdue"], t["failed"], t["resolved"]
    );
    if let Some(codes) = v["failed_by_error_code"].as_object().filter(|c| !c.is_empty()) {
        let codes: Vec<String> = codes.iter().map(|(code, n)| format!("{code} {n}")).collect();
        println!("failed by error code: {}", codes.join(", "));
    }
    match v["gap"].as_object() {
        Some(gap) => println!(
            "gap: unsettled events received from {} to {}",
            s(&gap["first_received_at"]),
            s(&gap["last_received_at"])
        ),
        None => println!("gap: none (every event in the window is settled)"),
    }
    let mut table = Table::new(&["BUCKET", "CONFIRMED", "UNKNOWN", "OVERDUE", "FAILED", "RESOLVED", ""]);
    for b in v["buckets"].as_array().into_iter().flatten().filter(|b| b["total"] != 0) {
        let gap = if b["unknown"] != 0 || b["failed"] != 0 { "<- gap" } else { "" };
        table.row(vec![
            s(&b["start"]).to_string(),
            b["confirmed"].to_string(),
            b["unknown"].to_string(),
            b["overdue"].to_string(),
            b["failed"].to_string(),
            b["resolved"].to_string(),
            gap.to_string(),
        ]);
    }
    println!();
    print!("{table}");
    Ok(())
}

/// Every audit entry in the window, oldest first.
async fn fetch_audit(api: &Api, since: Option<String>, until: Option<String>) -> Result<Vec<Value>, CliError> {
    let mut out = Vec::new();
    let mut after = 0i64;
    loop {
        let path = with_query(
            "/v1/audit",
            &[
                ("since", since.clone()),
                ("until", until.clone()),
                ("after", Some(after.to_string())),
                ("limit", Some("1000".into())),
            ],
        );
        let page = api.get(&path).await?;
        out.extend(page["entries"].as_array().cloned().unwrap_or_default());
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => return Ok(out),
        }
    }
}

pub async fn audit(api: &Api, since: Option<String>, until: Option<String>, json_out: bool) -> Result<(), CliError> {
    let now = OffsetDateTime::now_utc();
    let since = since.map(|t| time_arg(&t, now)).transpose()?;
    let until = until.map(|t| time_arg(&t, now)).transpose()?;
    let entries = fetch_audit(api, since, until).await?;
    if json_out {
        print_json(&json!(entries));
        return Ok(());
    }
    for e in &entries {
        let d = &e["details"];
        let extra = match e["action"].as_str() {
            Some("replay.started") => format!("reason: {} eligible: {}", s(&d["reason"]), d["eligible"]),
            Some("replay.finished") => format!("{} {}", s(&d["state"]), d["counts"]),
            Some("event.resolved") => format!("note: {}", s(&d["note"])),
            _ => String::new(),
        };
        println!(
            "#{:<5} {} {:<16} {:<16} {:<32} {extra}",
            e["seq"],
            s(&e["time"]),
            s(&e["actor"]),
            s(&e["action"]),
            s(&e["subject"])
        );
    }
    Ok(())
}

/// Fetches the whole log and recomputes its hash chain (`--json`: only
/// `{"verified", "entries", "head"}`, or `{"verified": false, "error"}`, on stdout).
pub async fn audit_verify(api: &Api, json_out: bool) -> Result<(), CliError> {
    let raw = fetch_audit(api, None, None).await?;
    let checked = raw
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<Vec<AuditEntry>, _>>()
        .map_err(|e| format!("the gateway returned an entry of an unknown shape: {e}"))
        .and_then(|entries| {
            verify_chain(&entries, GENESIS).map_err(|e| format!("audit log FAILED verification: {e}"))?;
            Ok(entries)
        });
    match (checked, json_out) {
        (Ok(entries), true) => {
            print_json(&json!({ "verified": true, "entries": entries.len(), "head": entries.last().map(|e| &e.hash) }));
            Ok(())
        }
        (Ok(entries), false) => {
            println!(
                "audit log verified: {} entries, hash chain intact{}",
                entries.len(),
                entries.last().map(|e| format!(", head {}", e.hash)).unwrap_or_default()
            );
            Ok(())
        }
        (Err(error), true) => {
            print_json(&json!({ "verified": false, "error": error }));
            Err(CliError::Exit(1))
        }
        (Err(error), false) => Err(CliError::Failed(error)),
    }
}
