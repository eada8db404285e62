//! One signed forward of an event to its handler (SPEC.md "Forwarding to the handler").

use std::time::{Duration, Instant};

use axum::body::Bytes;
use receipts_sdk::webhook::WebhookSecret;
use receipts_sdk::{forwarded, receipt};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

// The SDK's header names as `HeaderName`s, made once (a name given as text is parsed on every send).
const WEBHOOK_ID: HeaderName = HeaderName::from_static(forwarded::HEADER_WEBHOOK_ID);
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static(forwarded::HEADER_WEBHOOK_TIMESTAMP);
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static(forwarded::HEADER_WEBHOOK_SIGNATURE);
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(forwarded::HEADER_IDEMPOTENCY_KEY);
const ATTEMPT: HeaderName = HeaderName::from_static(forwarded::HEADER_ATTEMPT);
const SOURCE: HeaderName = HeaderName::from_static(forwarded::HEADER_SOURCE);
const REPLAY_ID: HeaderName = HeaderName::from_static(forwarded::HEADER_REPLAY_ID);

/// Longest excerpt of a handler's response kept with an attempt.
const EXCERPT_BYTES: usize = 512;

/// `idk_` + the first 32 hex digits of sha256(source, NUL, provider event id): the same on
/// every retry and replay of an event, and unique across sources.
pub fn idempotency_key(source: &str, dedup_key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0u8]);
    hash.update(dedup_key.as_bytes());
    format!("idk_{}", &hex::encode(hash.finalize())[..32])
}

/// Everything one forward needs.
pub struct ForwardRequest<'a> {
    /// Parsed once per source (or replay), not per send.
    pub url: &'a reqwest::Url,
    pub event_id: &'a str,
    pub source: &'a str,
    pub idempotency_key: &'a str,
    pub attempt: i64,
    pub replay_id: Option<&'a str>,
    /// The headers the provider sent; only `content-type` is passed on.
    pub original_headers: &'a [(String, String)],
    pub body: Bytes,
    pub secret: &'a WebhookSecret,
    pub now_secs: i64,
}

/// What the handler did with one forward.
#[derive(Debug, Clone)]
pub struct ForwardResult {
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub excerpt: Option<String>,
    /// A `Retry-After` in seconds, when the handler sent one.
    pub retry_after: Option<Duration>,
    /// A receipt the handler put on its response, when it did.
    pub inline_receipt: Option<InlineReceipt>,
}

/// The `receipt-*` headers of a handler's response, as received.
#[derive(Debug, Clone)]
pub struct InlineReceipt {
    headers: Vec<(&'static str, String)>,
}

impl InlineReceipt {
    fn from_response(headers: &reqwest::header::HeaderMap) -> Option<Self> {
        headers.get(receipt::HEADER_ID)?;
        let names = [
            receipt::HEADER_ID,
            receipt::HEADER_TIMESTAMP,
            receipt::HEADER_KEY,
            receipt::HEADER_SIGNATURE,
            receipt::HEADER_BODY,
        ];
        let headers =
            names.into_iter().filter_map(|name| Some((name, headers.get(name)?.to_str().ok()?.to_string()))).collect();
        Some(Self { headers })
    }

    /// The value of one `receipt-*` header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

impl ForwardResult {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A pooled HTTP client for handlers.
#[derive(Clone)]
pub struct Forwarder {
    client: reqwest::Client,
}

impl Forwarder {
    pub fn new(timeout: Duration) -> Self {
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(256)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hookwarden/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("HTTP client builds");
        Self { client }
    }

    pub async fn send(&self, req: ForwardRequest<'_>) -> ForwardResult {
        let signature = req.secret.sign(req.event_id, req.now_secs, &req.body);
        let content_type = req
            .original_headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str())
            .unwrap_or("application/json");
        let mut builder = self
            .client
            .post(req.url.clone())
            .header(CONTENT_TYPE, content_type)
            .header(WEBHOOK_ID, req.event_id)
            .header(WEBHOOK_TIMESTAMP, HeaderValue::from(req.now_secs))
            .header(WEBHOOK_SIGNATURE, signature)
            .header(IDEMPOTENCY_KEY, req.idempotency_key)
            .header(ATTEMPT, HeaderValue::from(req.attempt))
            .header(SOURCE, req.source);
        if let Some(replay_id) = req.replay_id {
            builder = builder.header(REPLAY_ID, replay_id);
        }
        let started = Instant::now();
        let result = builder.body(req.body).send().await;
        match result {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let inline_receipt = InlineReceipt::from_response(response.headers());
                let mut excerpt = Vec::new();
                while excerpt.len() < EXCERPT_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => excerpt.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                excerpt.truncate(EXCERPT_BYTES);
                ForwardResult {
                    status: Some(status),
                    latency_ms: started.elapsed().as_millis() as i64,
                    error: None,
                    excerpt: (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned()),
                    retry_after,
                    inline_receipt,
                }
            }
            Err(err) => ForwardResult {
                status: None,
                latency_ms: started.elapsed().as_millis() as i64,
                error: Some(describe(&err)),
                excerpt: None,
                retry_after: None,
                inline_receipt: None,
            },
        }
    }
}

fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    let mut text = format!("{kind}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    text.truncate(500);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_is_stable_and_per_source() {
        let a = idempotency_key("stripe", "evt_1");
        assert_eq!(a, idempotency_key("stripe", "evt_1"));
        assert_ne!(a, idempotency_key("github", "evt_1"));
        assert_ne!(idempotency_key("ab", "c"), idempotency_key("a", "bc"));
        assert_eq!(a.len(), 4 + 32);
    }
}
