//! `hookwarden config check FILE`: loads a config exactly as `serve` would (same parser, same
//! checks, same environment) and prints what it resolved to, secrets redacted, so an operator
//! can see what a gateway will do before starting it.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::CliError;
use crate::config::{Config, Retention, SourceConfig};
use crate::verify::{Extract, Verifier};

const REDACTED: &str = "<redacted>";

/// Checks the config at `path`; prints the resolved values (JSON with `json`).
pub fn config_check(path: &Path, json: bool) -> Result<(), CliError> {
    let config = Config::load(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let report = resolved(&config);
    if json {
        super::print_json(&report);
    } else {
        let mut out = String::new();
        render(&report, 0, &mut out);
        print!("{out}");
        println!("{}: valid, {} source(s); secrets redacted", path.display(), config.sources.len());
    }
    Ok(())
}

/// Every setting the gateway will run with, defaults filled in, secrets replaced by
/// `<redacted>` (or `null` when not set). A test checks that each field of [`Config`] and
/// [`SourceConfig`] has its entry here, so a new setting cannot be left out silently.
pub fn resolved(config: &Config) -> Value {
    json!({
        "listen": config.listen.to_string(),
        "admin_listen": config.admin_listen.map(|a| a.to_string()),
        "max_connections": config.max_connections,
        "max_body_bytes": config.max_body_bytes,
        "database_url": without_password(&config.database_url),
        "admin_token": config.admin_token.as_ref().map(|_| REDACTED),
        "delivery": {
            "poll_interval": duration(config.delivery.poll_interval),
            "lease": duration(config.delivery.lease),
            "timeout": duration(config.delivery.timeout),
            "max_in_flight": config.delivery.max_in_flight,
            "jitter": config.delivery.jitter,
        },
        "console": {
            "session_idle": duration(config.console.session_idle),
            "secure_cookie": config.console.secure_cookie,
        },
        "telemetry": {
            "otlp_endpoint": config.telemetry.otlp_endpoint.as_ref().map(|u| without_password(u.as_str())),
            "service_name": config.telemetry.service_name,
        },
        "retention": retention(&config.retention),
        "sources": config.sources.iter().map(source).collect::<Vec<_>>(),
    })
}

fn retention(r: &Retention) -> Value {
    json!({
        "payloads": duration(r.payloads),
        "events": duration(r.events),
        "unsettled": duration(r.unsettled),
        "run_every": duration(r.run_every),
        "archive_dir": r.archive_dir.as_ref().map(|d| d.display().to_string()),
    })
}

fn source(s: &SourceConfig) -> Value {
    json!({
        "name": s.name,
        "verifier": verifier(&s.verifier),
        "forward_to": without_password(&s.forward_to),
        "forward_url": without_password(s.forward_url.as_str()),
        "signing_secret": REDACTED,
        "receipt_keys": s.receipt_keys.iter().map(|k| json!({
            "id": k.id, "public_key": k.public_key, "revoked": k.revoked,
        })).collect::<Vec<_>>(),
        "ladder": {
            "rungs": s.ladder.rungs().iter().map(|d| duration(*d)).collect::<Vec<_>>(),
            "max_attempts": s.ladder.max_attempts(),
        },
        "receipt_sla": duration(s.receipt_sla),
        "dedup": s.dedup.as_ref().map(extract),
        "event_type": s.event_type.as_ref().map(extract),
        "max_in_flight": s.max_in_flight,
        "ingest_limit": s.ingest_limit.map(|l| json!({"per_second": l.per_second, "burst": l.burst})),
        "body_dedup_window": s.body_dedup_window.map(duration),
        "status_url": s.status_url.as_ref().map(|u| without_password(u.as_str())),
        "status_timeout": duration(s.status_timeout),
        "no_receipt_types": s.no_receipt_types.patterns(),
        "retention": retention(&s.retention),
    })
}

fn verifier(v: &Verifier) -> Value {
    match v {
        Verifier::Stripe { tolerance, .. } => {
            json!({"kind": "stripe", "secret": REDACTED, "tolerance": duration(*tolerance)})
        }
        Verifier::Github { .. } => json!({"kind": "github", "secret": REDACTED}),
        Verifier::Standard(w) => json!({
            "kind": "standard",
            "secret": w.secret.as_ref().map(|_| REDACTED),
            "public_keys": w.public_keys.len(),
            "tolerance": duration(Duration::from_secs(w.tolerance_secs.unsigned_abs())),
        }),
        Verifier::Hmac { header, encoding, prefix, .. } => json!({
            "kind": "hmac", "secret": REDACTED, "header": header,
            "encoding": format!("{encoding:?}").to_lowercase(), "prefix": prefix,
        }),
        Verifier::None => json!({"kind": "none"}),
    }
}

fn extract(e: &Extract) -> Value {
    match e {
        Extract::Header(name) => json!({"header": name}),
        Extract::JsonPointer(pointer) => json!({"json_pointer": pointer}),
    }
}

fn duration(d: Duration) -> String {
    crate::timestamp::format_span(d)
}

/// A URL with any password replaced; text that does not parse but holds credentials is
/// withheld whole rather than printed.
fn without_password(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(REDACTED));
            url.to_string()
        }
        Ok(_) => text.to_string(),
        Err(_) if text.contains('@') => REDACTED.to_string(),
        Err(_) => text.to_string(),
    }
}

/// `key  value` lines, nested objects indented under their key, lists of objects numbered.
fn render(value: &Value, depth: usize, out: &mut String) {
    let Value::Object(map) = value else { return };
    let width = map.keys().map(String::len).max().unwrap_or(0);
    for (key, item) in map {
        let indent = "  ".repeat(depth);
        match item {
            Value::Object(_) => {
                out.push_str(&format!("{indent}{key}\n"));
                render(item, depth + 1, out);
            }
            Value::Array(items) if items.iter().any(Value::is_object) => {
                for entry in items {
                    let title = entry.get("name").or_else(|| entry.get("id")).and_then(Value::as_str);
                    out.push_str(&format!("{indent}{key} {}\n", title.unwrap_or("")));
                    let rest: Map<String, Value> = entry
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter(|(k, _)| k.as_str() != "name")
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    render(&Value::Object(rest), depth + 1, out);
                }
            }
            _ => out.push_str(&format!("{indent}{key:width$}  {}\n", scalar(item))),
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/hookwarden.toml");

    /// The names of the fields a `{:#?}` of a struct shows at its first level.
    fn debug_fields(debug: &str) -> Vec<String> {
        debug
            .lines()
            .filter_map(|line| line.strip_prefix("    ")?.split_once(':').map(|(k, _)| k.to_string()))
            .filter(|k| !k.starts_with(' ') && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect()
    }

    #[test]
    fn every_setting_of_the_config_is_reported() {
        let config = Config::parse(EXAMPLE, &|_| None).unwrap();
        let report = resolved(&config);
        for field in debug_fields(&format!("{config:#?}")) {
            assert!(report.get(&field).is_some(), "`config check` does not show Config::{field}: add it to resolved()");
        }
        for field in debug_fields(&format!("{:#?}", config.sources[0])) {
            assert!(
                report["sources"][0].get(&field).is_some(),
                "`config check` does not show SourceConfig::{field}: add it to source()"
            );
        }
    }

    #[test]
    fn no_secret_is_printed() {
        let text =
            EXAMPLE.replace("url = \"sqlite://hookwarden.db\"", "url = \"postgres://hw:db-password-xyz@127.0.0.1/hw\"");
        let config = Config::parse(&text, &|_| None).unwrap();
        let mut printed = serde_json::to_string(&resolved(&config)).unwrap();
        render(&resolved(&config), 0, &mut printed);
        printed.push_str(&format!("{:?}", config.sources));
        for secret in [
            "db-password-xyz",
            "hw_admin_example_token",
            "whsec_example_stripe_endpoint_secret",
            "example-github-webhook-secret",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "plJ3nmyCDGBKInavdOK15jsl",
        ] {
            assert!(!printed.contains(secret), "`{secret}` printed");
        }
        assert!(printed.contains("postgres://hw:%3Credacted%3E@127.0.0.1/hw"), "{printed}");
    }
}
