//! One status probe over HTTP (docs/status-probe.md): the signed question to a source's
//! `status_url`, and its answer read with bounds.
//!
//! The client follows no redirects (a probe goes where the config says, or nowhere), uses no
//! proxy from the environment, reads at most 1 MiB of answer, and gives the whole exchange,
//! connecting and reading included, `status_timeout`: a handler that hangs, trickles or
//! floods costs one failed probe, never a stalled caller. It knows nothing of receipts: the
//! entries of an answer are checked by `receipts::ReceiptDesk`, one by one.

use std::time::Duration;

use receipts_sdk::probe::{MAX_ANSWER_BYTES, PROBE_ID_PREFIX, ProbeAnswer, ProbeRequest};
use receipts_sdk::webhook::WebhookSecret;

/// Why a probe failed as a whole (nothing of it is used).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the request failed: {0}")]
    Transport(String),
    #[error("answered {status}: {excerpt}")]
    Status { status: u16, excerpt: String },
    #[error("the answer is over {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("the answer is not a probe answer: {0}")]
    Malformed(String),
}

impl ProbeFailure {
    /// The label the metrics count it under.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeFailure::Timeout(_) => "timeout",
            ProbeFailure::Transport(_) => "transport",
            ProbeFailure::Status { .. } => "status",
            ProbeFailure::TooLarge => "too_large",
            ProbeFailure::Malformed(_) => "malformed",
        }
    }
}

/// What one probe asks: where, with which secret, about which events of which source.
pub struct ProbeCall<'a> {
    pub url: &'a reqwest::Url,
    pub source: &'a str,
    pub secret: &'a WebhookSecret,
    pub event_ids: Vec<String>,
    pub timeout: Duration,
    pub now_secs: i64,
}

/// The HTTP side of probing; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct ProbeClient {
    http: reqwest::Client,
}

impl Default for ProbeClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeClient {
    pub fn new() -> Self {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("hookwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the probe client builds");
        Self { http }
    }

    /// Sends one signed probe and reads its answer, all within `call.timeout`.
    pub async fn ask(&self, call: ProbeCall<'_>) -> Result<ProbeAnswer, ProbeFailure> {
        let timeout = call.timeout;
        match tokio::time::timeout(timeout, self.exchange(call)).await {
            Ok(result) => result,
            Err(_) => Err(ProbeFailure::Timeout(timeout)),
        }
    }

    async fn exchange(&self, call: ProbeCall<'_>) -> Result<ProbeAnswer, ProbeFailure> {
        let probe_id = format!("{PROBE_ID_PREFIX}{}", ulid::Ulid::new());
        let signed = ProbeRequest::new(call.source, call.event_ids).sign(call.secret, &probe_id, call.now_secs);
        let mut request = self
            .http
            .post(call.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(receipts_sdk::forwarded::HEADER_SOURCE, call.source);
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let mut response =
            request.body(signed.body).send().await.map_err(|e| ProbeFailure::Transport(error_chain(&e)))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| ProbeFailure::Transport(error_chain(&e)))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ProbeFailure::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        if status != 200 {
            let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(ProbeFailure::Status { status, excerpt });
        }
        ProbeAnswer::parse(&body).map_err(|e| ProbeFailure::Malformed(e.to_string()))
    }
}

/// An error with its causes, `: `-joined (reqwest's own text stops at the outermost).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
