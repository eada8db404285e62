//! `tokens create|list|revoke`: admins make tokens (scoped to sources, expiring), see them and
//! revoke them, through the admin API (each change is audited there).

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Api, CliError, print_json};

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// What `tokens create` asks for.
pub struct NewToken {
    pub name: String,
    pub role: String,
    /// Empty: every source.
    pub sources: Vec<String>,
    /// An RFC 3339 time, or a duration from now (`30d`).
    pub expires: Option<String>,
}

pub async fn tokens_create(api: &Api, new: NewToken, json_out: bool) -> Result<(), CliError> {
    let mut body = json!({ "name": new.name, "role": new.role });
    if !new.sources.is_empty() {
        body["sources"] = json!(new.sources);
    }
    match new.expires.as_deref() {
        None => {}
        Some(at) if OffsetDateTime::parse(at, &Rfc3339).is_ok() => body["expires_at"] = json!(at),
        Some(text) if humantime::parse_duration(text).is_ok() => body["expires_in"] = json!(text),
        Some(text) => {
            return Err(CliError::Usage(format!(
                "--expires `{text}` is neither an RFC 3339 time (2027-01-01T00:00:00Z) nor a duration (30d)"
            )));
        }
    }
    let v = api.post("/v1/tokens", &body).await?;
    if json_out {
        print_json(&v);
        return Ok(());
    }
    println!("token {} for {} ({}): {}", s(&v["id"]), s(&v["name"]), s(&v["role"]), s(&v["token"]));
    println!("  sources: {}   expires: {}", sources(&v), s(&v["expires_at"]));
    println!("It is shown once and stored only as a hash: keep it now (e.g. HOOKWARDEN_TOKEN).");
    Ok(())
}

fn sources(token: &Value) -> String {
    match token["sources"].as_array() {
        Some(list) => list.iter().map(|s| s.as_str().unwrap_or("?")).collect::<Vec<_>>().join(","),
        None => "all".into(),
    }
}

pub async fn tokens_list(api: &Api, json_out: bool) -> Result<(), CliError> {
    let v = api.get("/v1/tokens").await?;
    if json_out {
        print_json(&v);
        return Ok(());
    }
    let tokens = v["data"].as_array().cloned().unwrap_or_default();
    println!("{:<30} {:<20} {:<8} {:<20} {:<24} STATE", "ID", "NAME", "ROLE", "SOURCES", "EXPIRES");
    for t in &tokens {
        let state = if !t["revoked_at"].is_null() {
            format!("revoked {}", s(&t["revoked_at"]))
        } else if t["active"] == false {
            "expired".into()
        } else {
            "active".into()
        };
        println!(
            "{:<30} {:<20} {:<8} {:<20} {:<24} {state}",
            s(&t["id"]),
            s(&t["name"]),
            s(&t["role"]),
            sources(t),
            s(&t["expires_at"])
        );
    }
    println!("{} token(s)", tokens.len());
    Ok(())
}

pub async fn tokens_revoke(api: &Api, id: &str, json_out: bool) -> Result<(), CliError> {
    let v = api.delete(&format!("/v1/tokens/{id}")).await?;
    if json_out {
        print_json(&v);
    } else {
        println!("revoked token {} ({}) at {}", s(&v["id"]), s(&v["name"]), s(&v["revoked_at"]));
    }
    Ok(())
}
