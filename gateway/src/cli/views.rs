//! `events list|show`, `summary`, `audit [verify]`.

use serde_json::{Value, json};
use time::OffsetDateTime;

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
}

pub async fn events_list(api: &Api, q: EventsQuery, json_out: bool) -> Result<(), CliError> {
    let now = OffsetDateTime::now_utc();
    let path = with_query(
        "/v1/events",
        &[
            ("source", q.source),
            ("since", q.since.map(|t| time_arg(&t, now)).transpose()?),
            ("until", q.until.map(|t| time_arg(&t, now)).transpose()?),
            ("outcome", q.outcome),
            ("filter", q.filter),
            ("limit", q.limit.map(|l| l.to_string())),
        ],
    );
    let page = api.get(&path).await?;
    if json_out {
        print_json(&page);
        return Ok(());
    }
    println!(
        "{:<31} {:<10} {:<26} {:<25} {:<28} {:<10} {:>3} PAYLOAD",
        "ID", "SOURCE", "TYPE", "RECEIVED", "OUTCOME", "DELIVERY", "ATT"
    );
    for e in page["data"].as_array().into_iter().flatten() {
        let mut outcome = s(&e["outcome"]).to_string();
        if let Some(code) = e["error_code"].as_str() {
            outcome.push_str(&format!(" ({code})"));
        }
        if e["overdue"] == true {
            outcome.push_str(" (overdue)");
        }
        println!(
            "{:<31} {:<10} {:<26} {:<25} {:<28} {:<10} {:>3} {}",
            s(&e["id"]),
            s(&e["source"]),
            s(&e["event_type"]),
            s(&e["received_at"]),
            outcome,
            s(&e["delivery_state"]),
            n(&e["attempts"]),
            s(&e["payload"])
        );
    }
    if let Some(next) = page["next_cursor"].as_str() {
        println!("(more: the API takes cursor={next})");
    }
    Ok(())
}

pub async fn event_show(api: &Api, id: &str, json_out: bool) -> Result<(), CliError> {
    let e = api.get(&format!("/v1/events/{id}")).await?;
    if json_out {
        print_json(&e);
        return Ok(());
    }
    println!("{}  ({} / {})", s(&e["id"]), s(&e["source"]), s(&e["event_type"]));
    println!("  provider id      {}", s(&e["provider_event_id"]));
    println!("  received         {}", s(&e["received_at"]));
    println!(
        "  outcome          {}{}",
        s(&e["outcome"]),
        e["error_code"].as_str().map(|c| format!(" ({c})")).unwrap_or_default()
    );
    if let Some(reason) = e["outcome_reason"].as_str() {
        println!("  why              {reason}");
    }
    println!(
        "  delivery         {} ({} attempts; next {})",
        s(&e["delivery_state"]),
        e["attempts"],
        s(&e["next_attempt_at"])
    );
    println!("  idempotency key  {}", s(&e["idempotency_key"]));
    match e["payload_purged_at"].as_str() {
        Some(at) => println!("  payload          purged {at} (retention): headers and body are gone"),
        None => println!("  payload          kept"),
    }
    if let Some(r) = e["resolved"].as_object() {
        println!("  resolved         {} by {}: {}", s(&r["at"]), s(&r["by"]), s(&r["note"]));
    }
    println!("Attempts:");
    for a in e["attempt_log"].as_array().into_iter().flatten() {
        println!(
            "  #{:<3} {:<9} {}  {:>5} ms  status {}  {}{}",
            a["number"],
            s(&a["kind"]),
            s(&a["started_at"]),
            a["latency_ms"],
            a["status_code"],
            a["error"].as_str().unwrap_or(""),
            a["replay_id"].as_str().map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    println!("Receipts:");
    for r in e["receipts"].as_array().into_iter().flatten() {
        println!(
            "  {} {:<8} key {:<12} via {:<6} {}{}",
            s(&r["received_at"]),
            s(&r["status"]),
            s(&r["key_id"]),
            s(&r["via"]),
            r["target_record_id"].as_str().map(|t| format!("record {t} ")).unwrap_or_default(),
            r["error_code"].as_str().unwrap_or("")
        );
    }
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
        "total {}: confirmed {}, unknown {} (overdue {}), failed {}",
        t["total"], t["confirmed"], t["unknown"], t["overdue"], t["failed"]
    );
    if let Some(codes) = v["failed_by_error_code"].as_object().filter(|c| !c.is_empty()) {
        let codes: Vec<String> = codes.iter().map(|(code, n)| format!("{code} {n}")).collect();
        println!("failed by error code: {}", codes.join(", "));
    }
    println!("\n{:<25} {:>9} {:>9} {:>9} {:>9}", "BUCKET", "CONFIRMED", "UNKNOWN", "OVERDUE", "FAILED");
    for b in v["buckets"].as_array().into_iter().flatten().filter(|b| b["total"] != 0) {
        let gap = if b["unknown"] != 0 || b["failed"] != 0 { "  <- gap" } else { "" };
        println!(
            "{:<25} {:>9} {:>9} {:>9} {:>9}{gap}",
            s(&b["start"]),
            b["confirmed"],
            b["unknown"],
            b["overdue"],
            b["failed"]
        );
    }
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

/// Fetches the whole log and recomputes its hash chain.
pub async fn audit_verify(api: &Api) -> Result<(), CliError> {
    let raw = fetch_audit(api, None, None).await?;
    let entries: Vec<AuditEntry> = raw
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| CliError::Failed(format!("the gateway returned an entry of an unknown shape: {e}")))?;
    verify_chain(&entries, GENESIS).map_err(|e| CliError::Failed(format!("audit log FAILED verification: {e}")))?;
    println!(
        "audit log verified: {} entries, hash chain intact{}",
        entries.len(),
        entries.last().map(|e| format!(", head {}", e.hash)).unwrap_or_default()
    );
    Ok(())
}
