//! A client that posts receipts to the gateway's `POST /v1/receipts` (SPEC.md "Receipts").
//!
//! Every try is signed afresh (a new `receipt-timestamp`) under the SAME `receipt-id`, so the
//! gateway sees one idempotent receipt however many tries it took. Network errors, 5xx, 408
//! and 429 are retried with capped exponential backoff and jitter; any other 4xx is final and
//! comes back as [`ClientError::Rejected`] with the gateway's error code.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::receipt::{Receipt, ReceiptKey, new_receipt_id};
use crate::unix_now;

/// How many tries and how long to wait between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait after the first failed try; it doubles after each further one.
    pub base_delay: Duration,
    /// The longest wait between two tries (also caps a `Retry-After`).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries, waiting about 0.25 s, 0.5 s, 1 s, 2 s.
    fn default() -> Self {
        Self { max_attempts: 5, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(10) }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based): `base * 2^(attempt-1)`, capped,
    /// then scaled by a random factor in [0.5, 1] so many clients do not retry in step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        exp.min(self.max_delay).mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// The gateway's answer to an accepted receipt: the event's new outcome and anything else
/// it said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostAnswer {
    /// `confirmed`, `failed` or `unknown`.
    pub outcome: String,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Why a receipt was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// A final 4xx: trying again cannot help (bad signature, unknown key or event, …).
    #[error("the gateway refused the receipt ({status} {code}): {message}")]
    Rejected { status: u16, code: String, message: String },
    /// 5xx, 408 or 429 on the last try.
    #[error("the gateway answered {status} ({code}: {message}) after {attempts} tries")]
    Unavailable { status: u16, code: String, message: String, attempts: u32 },
    /// No answer on the last try (connection refused, reset, timeout).
    #[error("the gateway could not be reached after {attempts} tries: {message}")]
    Network { message: String, attempts: u32 },
    /// The gateway accepted the receipt (2xx) but its answer is not the expected JSON.
    #[error("the gateway accepted the receipt but answered unexpected JSON: {0}")]
    BadAnswer(String),
}

impl ClientError {
    /// Whether the receipt can never be accepted as it is (a final 4xx).
    pub fn is_rejected(&self) -> bool {
        matches!(self, ClientError::Rejected { .. })
    }

    /// Whether the gateway stored the receipt (a 2xx with an odd body).
    pub fn was_accepted(&self) -> bool {
        matches!(self, ClientError::BadAnswer(_))
    }
}

/// Posts signed receipts to one gateway. Cheap to clone (the HTTP pool is shared).
#[derive(Clone, Debug)]
pub struct ReceiptClient {
    http: reqwest::Client,
    url: String,
    key: ReceiptKey,
    retry: RetryPolicy,
}

/// `{"error": {"code": "...", "message": "..."}}`, the gateway's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

/// What one try came to.
enum Try {
    Done(Result<PostAnswer, ClientError>),
    /// Worth another try; with the server's `Retry-After`, if any.
    Again(ClientError, Option<Duration>),
}

impl ReceiptClient {
    /// A client for the gateway at `gateway_base_url` (e.g. `http://127.0.0.1:8080`),
    /// signing with `key`; 10 s timeout per try and the default [`RetryPolicy`].
    pub fn new(gateway_base_url: &str, key: ReceiptKey) -> Self {
        // reqwest is built without a default TLS provider; `ring` it is, once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("hookwarden-receipts-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        let url = format!("{}/v1/receipts", gateway_base_url.trim_end_matches('/'));
        Self { http, url, key, retry: RetryPolicy::default() }
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = RetryPolicy { max_attempts: retry.max_attempts.max(1), ..retry };
        self
    }

    /// Uses a caller's HTTP client (own timeouts, proxy, TLS roots).
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    pub fn key(&self) -> &ReceiptKey {
        &self.key
    }

    /// The full URL receipts are posted to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Posts `receipt` under a fresh receipt id, retrying as the policy says.
    pub async fn post(&self, receipt: &Receipt) -> Result<PostAnswer, ClientError> {
        self.post_with_id(receipt, &new_receipt_id()).await
    }

    /// Posts `receipt` under a given receipt id (e.g. one stored in an outbox): a receipt
    /// posted twice under one id counts once.
    pub async fn post_with_id(&self, receipt: &Receipt, receipt_id: &str) -> Result<PostAnswer, ClientError> {
        let mut attempt = 1;
        loop {
            let signed = self.key.sign_with_id(receipt, receipt_id, unix_now());
            let (error, retry_after) = match self.try_once(&signed, attempt).await {
                Try::Done(result) => return result,
                Try::Again(error, retry_after) => (error, retry_after),
            };
            if attempt >= self.retry.max_attempts {
                return Err(error);
            }
            let wait = self.retry.delay(attempt).max(retry_after.unwrap_or_default().min(self.retry.max_delay));
            tracing::debug!(receipt_id, attempt, ?wait, %error, "receipt post failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn try_once(&self, signed: &crate::receipt::SignedReceipt, attempt: u32) -> Try {
        let mut request = self.http.post(&self.url).header("content-type", "application/json");
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let response = match request.body(signed.body.clone()).send().await {
            Ok(response) => response,
            Err(e) => {
                return Try::Again(ClientError::Network { message: error_chain(&e), attempts: attempt }, None);
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match response.text().await {
            Ok(text) => text,
            // The connection broke while the answer was read: the receipt may or may not be
            // stored, and posting it again under the same id is safe either way.
            Err(e) => {
                return Try::Again(ClientError::Network { message: error_chain(&e), attempts: attempt }, None);
            }
        };
        if (200..300).contains(&status) {
            return Try::Done(
                serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer(format!("{e}: {}", excerpt(&text)))),
            );
        }
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => (format!("http_{status}"), excerpt(&text)),
        };
        if status >= 500 || status == 408 || status == 429 {
            Try::Again(ClientError::Unavailable { status, code, message, attempts: attempt }, retry_after)
        } else {
            Try::Done(Err(ClientError::Rejected { status, code, message }))
        }
    }
}

/// An error with its causes, e.g. "error sending request: connection refused".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

fn excerpt(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{StandIn, fast_retry};

    #[tokio::test]
    async fn retries_5xx_under_the_same_receipt_id_then_succeeds() {
        let gateway = StandIn::start(vec![503, 503, 200]).await;
        let client = ReceiptClient::new(&gateway.base_url(), gateway.key.clone()).with_retry(fast_retry(5));
        let receipt = Receipt::applied("evt_1").with_target_record("ord_1");
        let answer = client.post(&receipt).await.unwrap();
        assert_eq!(answer.outcome, "confirmed");
        let posts = gateway.posts();
        assert_eq!(posts.len(), 3);
        assert!(posts.iter().all(|p| p.receipt_id == posts[0].receipt_id && p.receipt_id.starts_with("rcp_")));
        assert!(posts.iter().all(|p| p.signature_ok && p.receipt == receipt && p.content_type == "application/json"));
    }

    #[tokio::test]
    async fn a_4xx_is_final_and_carries_the_gateway_error() {
        let gateway = StandIn::start(vec![403, 200]).await;
        let client = ReceiptClient::new(&gateway.base_url(), gateway.key.clone()).with_retry(fast_retry(5));
        let error = client.post_with_id(&Receipt::applied("evt_1"), "rcp_fixed").await.unwrap_err();
        assert_eq!(
            error,
            ClientError::Rejected { status: 403, code: "stand_in_403".into(), message: "scripted answer".into() }
        );
        assert!(error.is_rejected());
        assert_eq!(gateway.posts().len(), 1);
        assert_eq!(gateway.posts()[0].receipt_id, "rcp_fixed");
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let gateway = StandIn::start(vec![500, 502, 503, 200]).await;
        let client = ReceiptClient::new(&gateway.base_url(), gateway.key.clone()).with_retry(fast_retry(3));
        let error = client.post(&Receipt::applied("evt_1")).await.unwrap_err();
        assert!(matches!(error, ClientError::Unavailable { status: 503, attempts: 3, .. }), "{error:?}");
        assert_eq!(gateway.posts().len(), 3);
    }

    #[tokio::test]
    async fn retries_network_errors() {
        // A port nobody listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = ReceiptClient::new(&format!("http://127.0.0.1:{port}/"), ReceiptKey::generate("k"))
            .with_retry(fast_retry(3));
        assert_eq!(client.url(), format!("http://127.0.0.1:{port}/v1/receipts"));
        let error = client.post(&Receipt::applied("evt_1")).await.unwrap_err();
        assert!(matches!(error, ClientError::Network { attempts: 3, .. }), "{error:?}");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy =
            RetryPolicy { max_attempts: 10, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        for (attempt, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000)] {
            let d = policy.delay(attempt).as_millis();
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} ms");
        }
    }
}
