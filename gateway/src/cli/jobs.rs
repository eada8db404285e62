//! `hookwarden replays list|show|watch|cancel|pause|resume`: replay jobs after the fact, so a
//! person whose terminal died re-attaches to a run (`watch` follows it to its end, with the
//! live run's progress bar, last line and exit code).

use serde_json::{Value, json};

use super::replay::{count, final_line, finish, watch};
use super::table::Table;
use super::{Api, CliError, print_json, with_query};

/// What `replays list` asks for.
pub struct ReplaysQuery {
    pub state: Option<String>,
    pub source: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Every page, not only the first.
    pub all: bool,
}

pub async fn replays_list(api: &Api, q: ReplaysQuery, json_out: bool) -> Result<(), CliError> {
    let mut cursor = q.cursor.clone();
    let mut jobs = Vec::new();
    let next = loop {
        let path = with_query(
            "/v1/replays",
            &[
                ("state", q.state.clone()),
                ("source", q.source.clone()),
                ("limit", q.limit.map(|l| l.to_string())),
                ("cursor", cursor.clone()),
            ],
        );
        let page = api.get(&path).await?;
        jobs.extend(page["data"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) if q.all => cursor = Some(next.to_string()),
            next => break next.map(str::to_string),
        }
    };
    if json_out {
        print_json(&json!({ "data": jobs, "next_cursor": next }));
        return Ok(());
    }
    let mut table =
        Table::new(&["ID", "STATE", "SOURCE", "CREATED", "BY", "SENT", "OK", "FAILED", "SKIPPED", "REASON"]);
    for j in &jobs {
        let c = &j["counts"];
        table.row(vec![
            text(&j["id"]),
            text(&j["state"]),
            j["source"].as_str().unwrap_or("(ids)").to_string(),
            text(&j["created_at"]),
            text(&j["created_by"]),
            format!("{}/{}", count(c, "sent"), count(c, "eligible")),
            count(c, "succeeded").to_string(),
            count(c, "failed").to_string(),
            (count(c, "skipped_receipt") + count(c, "skipped_other")).to_string(),
            text(&j["reason"]),
        ]);
    }
    if jobs.is_empty() {
        println!("No replays.");
    } else {
        print!("{table}");
    }
    if let Some(next) = next {
        println!("(more: hookwarden replays list --cursor {next}, or --all)");
    }
    Ok(())
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

pub async fn replays_show(api: &Api, id: &str, json_out: bool) -> Result<(), CliError> {
    let job = api.get(&format!("/v1/replays/{id}")).await?;
    if json_out {
        print_json(&job);
        return Ok(());
    }
    let mut lines = vec![
        ("state", text(&job["state"])),
        ("source", job["source"].as_str().unwrap_or("(event ids)").to_string()),
        ("created", format!("{} by {}", text(&job["created_at"]), text(&job["created_by"]))),
        ("reason", text(&job["reason"])),
    ];
    if let Some(filter) = job["filter"].as_str() {
        lines.push(("filter", filter.to_string()));
    }
    if let Some(to) = job["destination"].as_str() {
        lines.push(("destination", to.to_string()));
    }
    lines.push(("rate", format!("{}/s (now {:.1}/s)", job["rate"], job["current_rate"].as_f64().unwrap_or(0.0))));
    if let Some(p) = job["paused"].as_object() {
        lines.push(("paused", format!("{} by {}", text(&p["at"]), text(&p["by"]))));
    }
    if let Some(at) = job["finished_at"].as_str() {
        lines.push(("finished", at.to_string()));
    }
    println!("replay {}", text(&job["id"]));
    for (name, value) in lines {
        println!("  {name:<12} {value}");
    }
    let failures = job["failures"].as_array().cloned().unwrap_or_default();
    if !failures.is_empty() {
        println!("Failures, most common first:");
        for f in &failures {
            println!("  {:>6}  {}", count(f, "count"), text(&f["cause"]));
        }
    }
    println!("{}", final_line(&job));
    Ok(())
}

/// Follows a job to its end as the live run would have (progress, Ctrl-C, last line, exit
/// code); a job that ended already just gives its last line and exit code.
pub async fn replays_watch(api: &Api, id: &str, json_out: bool) -> Result<(), CliError> {
    let job = api.get(&format!("/v1/replays/{id}")).await?;
    let job = watch(api, id, count(&job["counts"], "eligible") as u64, json_out).await?;
    finish(&job, json_out, |left_out, last| continuation(&job, left_out, last))
}

/// The command that continues a job cut short by its limit, from what the job recorded.
fn continuation(job: &Value, left_out: i64, last: &str) -> String {
    let mut parts = vec!["hookwarden replay".to_string(), job["source"].as_str().unwrap_or("<source>").to_string()];
    for flag in ["since", "until"] {
        if let Some(v) = job[flag].as_str() {
            parts.push(format!("--{flag} {v}"));
        }
    }
    parts.push(format!("--after {last} --limit {left_out}"));
    parts.push("--no-dry-run --reason \"<why, for the audit log>\"".into());
    parts.join(" ")
}

/// `cancel`, `pause` or `resume` a job, then show where it stands.
pub async fn replays_act(api: &Api, id: &str, action: &str, json_out: bool) -> Result<(), CliError> {
    let job = api.post(&format!("/v1/replays/{id}/{action}"), &json!({})).await?;
    if action == "cancel" {
        // The counts settle once the gateway has written the cancelled items' results.
        let job = watch(api, id, count(&job["counts"], "eligible") as u64, true).await?;
        return finish(&job, json_out, |left_out, last| continuation(&job, left_out, last));
    }
    if json_out {
        print_json(&job);
    } else {
        println!("replay {id} is {} now", text(&job["state"]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_continuation_starts_after_the_last_item_and_keeps_the_window() {
        let job = json!({ "source": "orders", "since": "2026-12-06T01:00:00Z", "until": "2026-12-06T03:00:00Z" });
        assert_eq!(
            continuation(&job, 10, "evt_9"),
            "hookwarden replay orders --since 2026-12-06T01:00:00Z --until 2026-12-06T03:00:00Z --after evt_9 \
             --limit 10 --no-dry-run --reason \"<why, for the audit log>\""
        );
    }
}
