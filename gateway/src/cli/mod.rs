//! The operator's commands: thin clients of the admin API (`--server`/`HOOKWARDEN_URL`,
//! `--token`/`HOOKWARDEN_TOKEN`). Each prints a report a tired person can trust, or the API's
//! JSON with `--json`.
//!
//! Architecture invariant: the CLI never opens the database; everything goes through the
//! API, so the server's checks, roles and audit log apply to the CLI too.

mod config_check;
mod reconcile;
mod replay;
mod storage;
mod tokens;
mod views;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use config_check::config_check;
pub use reconcile::{ReconcileArgs, reconcile};
pub use replay::{ReplayArgs, replay};
pub use storage::{compact as storage_compact, storage};
pub use tokens::{NewToken, tokens_create, tokens_list, tokens_revoke};
pub use views::{EventsQuery, audit, audit_verify, event_show, events_list, summary};

/// Why a command failed; `main` prints it and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the gateway at {server}: {source}")]
    Unreachable { server: String, source: reqwest::Error },
    #[error("{status} {code}: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Failed(String),
}

/// The admin API, as the CLI sees it.
pub struct Api {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(server: &str, token: Option<String>) -> Self {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("hookwarden-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("client");
        Self { server: server.trim_end_matches('/').to_string(), token, http }
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.get(format!("{}{path}", self.server))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.http.post(format!("{}{path}", self.server)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.http.delete(format!("{}{path}", self.server))).await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response =
            request.send().await.map_err(|source| CliError::Unreachable { server: self.server.clone(), source })?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        Err(CliError::Api {
            status,
            code: body["error"]["code"].as_str().unwrap_or("error").to_string(),
            message: body["error"]["message"].as_str().unwrap_or("the gateway gave no reason").to_string(),
        })
    }
}

/// `2026-11-26T06:00:00Z` as it is, or a duration ago (`90m`, `2h`, `1d`) as RFC 3339.
pub fn time_arg(text: &str, now: OffsetDateTime) -> Result<String, CliError> {
    if OffsetDateTime::parse(text, &Rfc3339).is_ok() {
        return Ok(text.to_string());
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        CliError::Usage(format!("`{text}` is neither an RFC 3339 time (2026-11-26T06:00:00Z) nor a duration ago (90m)"))
    })?;
    let at = now - time::Duration::try_from(ago).map_err(|_| CliError::Usage(format!("`{text}` is too long ago")))?;
    Ok(at.format(&Rfc3339).expect("formats"))
}

/// Appends `key=value` query pairs (values percent-encoded) to `path`.
fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let encoded: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", percent_encode(v)))).collect();
    if encoded.is_empty() { path.to_string() } else { format!("{path}?{}", encoded.join("&")) }
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("serialises"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_ago() {
        let now = OffsetDateTime::parse("2026-11-26T06:00:00Z", &Rfc3339).unwrap();
        assert_eq!(time_arg("90m", now).unwrap(), "2026-11-26T04:30:00Z");
        assert_eq!(time_arg("2026-11-25T00:00:00Z", now).unwrap(), "2026-11-25T00:00:00Z");
        assert!(time_arg("yesterday", now).is_err());
        assert_eq!(
            with_query("/v1/events", &[("since", Some("2026-11-26T04:30:00+01:00".into())), ("x", None)]),
            "/v1/events?since=2026-11-26T04%3A30%3A00%2B01%3A00"
        );
    }
}
