//! The operator's commands: thin clients of the admin API (`--server`/`HOOKWARDEN_URL`,
//! `--token`/`HOOKWARDEN_TOKEN`). Each prints a report a tired person can trust, or the API's
//! JSON with `--json`.
//!
//! Architecture invariant: the CLI never opens the database; everything goes through the
//! API, so the server's checks, roles and audit log apply to the CLI too. The exceptions
//! are the offline tools given a config file, which act on the store itself, as an operator
//! with the database's credentials could: `storage compact`, `export` and `import`.

mod archive;
mod config_check;
mod demo;
mod jobs;
mod reconcile;
mod replay;
mod storage;
mod table;
mod tokens;
mod views;
mod when;

use serde_json::Value;

pub use archive::{ExportArgs, export, import};
pub use config_check::config_check;
pub use demo::demo;
pub use jobs::{ReplaysQuery, replays_act, replays_list, replays_show, replays_watch};
pub use reconcile::{ReconcileArgs, reconcile};
pub use replay::{ReplayArgs, replay};
pub use storage::{compact as storage_compact, storage};
pub use tokens::{NewToken, tokens_create, tokens_list, tokens_revoke};
pub use views::{EventsQuery, ResolveArgs, audit, audit_verify, event_show, events_list, events_resolve, summary};
pub use when::{read_local_offset, time_arg};

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
    /// The command said what happened already; only the exit code is left to give.
    #[error("exit status {0}")]
    Exit(u8),
}

/// The admin API, as the CLI sees it.
pub struct Api {
    server: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// `server` may leave out the scheme (`localhost:8080` is `http://localhost:8080`); an
    /// empty one is refused with what to write.
    pub fn new(server: &str, token: Option<String>) -> Result<Self, CliError> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("hookwarden-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("client");
        let server = server_url(server)?;
        let token = token.filter(|t| !t.trim().is_empty());
        Ok(Self { server, token, http })
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
        let code = body["error"]["code"].as_str().unwrap_or("error").to_string();
        let mut message = body["error"]["message"].as_str().unwrap_or("the gateway gave no reason").to_string();
        if code == "token_missing" {
            message = "no token given: export HOOKWARDEN_TOKEN=hwt_… (or pass --token hwt_…); \
                       `hookwarden tokens create` makes one"
                .into();
        }
        Err(CliError::Api { status, code, message })
    }
}

/// The gateway's address as a base URL: `localhost:8080` gets `http://`, a trailing `/` goes.
fn server_url(text: &str) -> Result<String, CliError> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() {
        return Err(CliError::Usage(
            "HOOKWARDEN_URL (or --server) is empty: set it to the gateway's admin address, e.g. http://127.0.0.1:8080"
                .into(),
        ));
    }
    let url = if text.contains("://") { text.to_string() } else { format!("http://{text}") };
    match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Ok(url),
        _ => Err(CliError::Usage(format!(
            "`{text}` is not the gateway's address: write http://host:port or https://host (e.g. http://127.0.0.1:8080)"
        ))),
    }
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
    fn queries_are_encoded_and_addresses_get_a_scheme() {
        assert_eq!(
            with_query("/v1/events", &[("since", Some("2026-11-26T04:30:00+01:00".into())), ("x", None)]),
            "/v1/events?since=2026-11-26T04%3A30%3A00%2B01%3A00"
        );
        assert_eq!(server_url("localhost:8080/").unwrap(), "http://localhost:8080");
        assert_eq!(server_url("https://gw.internal").unwrap(), "https://gw.internal");
        assert!(server_url("").is_err());
        assert!(server_url("ftp://x").is_err());
    }
}
