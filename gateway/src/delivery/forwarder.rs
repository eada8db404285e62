//! One signed forward of an event to its handler (SPEC.md "Forwarding to the handler").
//!
//! Forwards go out through hyper's pooled client directly. reqwest, which the gateway used
//! here first, adds per request what a forward does not need: a redirect layer that copies
//! each request, proxy matching, a second URL parse and a header map merge, ~30k
//! instructions per forward (callgrind), an eighth of the gateway's work per ingested event.
//! TLS is the same: rustls with the platform's verifier, HTTP/2 where ALPN offers it.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use http_body_util::{BodyExt, Full};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::percent_decode_str;
use receipts_sdk::webhook::WebhookSecret;
use receipts_sdk::{forwarded, receipt};
use rustls_platform_verifier::BuilderVerifierExt;
use sha2::{Digest, Sha256};
use tokio::time::timeout_at;
use tracing::Instrument;

use crate::domain::HeaderBytes;
use crate::telemetry;

// The SDK's header names as `HeaderName`s, made once (a name given as text is parsed on every send).
const WEBHOOK_ID: HeaderName = HeaderName::from_static(forwarded::HEADER_WEBHOOK_ID);
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static(forwarded::HEADER_WEBHOOK_TIMESTAMP);
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static(forwarded::HEADER_WEBHOOK_SIGNATURE);
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static(forwarded::HEADER_IDEMPOTENCY_KEY);
const ATTEMPT: HeaderName = HeaderName::from_static(forwarded::HEADER_ATTEMPT);
const SOURCE: HeaderName = HeaderName::from_static(forwarded::HEADER_SOURCE);
const REPLAY_ID: HeaderName = HeaderName::from_static(forwarded::HEADER_REPLAY_ID);
/// W3C Trace Context: the forward's span, in the event's trace (see `telemetry`).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const AGENT: HeaderValue = HeaderValue::from_static(concat!("hookwarden/", env!("CARGO_PKG_VERSION")));

/// Longest excerpt of a handler's response kept with an attempt.
const EXCERPT_BYTES: usize = 512;

/// `idk_` + the first 32 hex digits of sha256(source, NUL, provider event id): the same on
/// every retry and replay of an event, and unique across sources.
pub fn idempotency_key(source: &str, dedup_key: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(source.as_bytes());
    hash.update([0u8]);
    hash.update(dedup_key.as_bytes());
    let mut key = *b"idk_00000000000000000000000000000000";
    hex::encode_to_slice(&hash.finalize()[..16], &mut key[4..]).expect("16 bytes make 32 hex digits");
    String::from_utf8(key.to_vec()).expect("hex digits are ASCII")
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
    /// The headers the provider sent; only `content-type` is passed on, byte for byte.
    pub original_headers: &'a [(String, HeaderBytes)],
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
    /// A `Retry-After` (seconds, or an HTTP date from now), when the handler sent one.
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
    fn from_response(headers: &HeaderMap) -> Option<Self> {
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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// For the whole exchange: connecting, the request, the response and its excerpt.
    timeout: Duration,
}

/// Why a forward got no answer.
enum Failure {
    /// The request could not be made (a URL or header value HTTP cannot carry).
    Request(String),
    Timeout(Duration),
    Client(hyper_util::client::legacy::Error),
}

impl Failure {
    /// `timeout: …`, `connect: …` or `transport: …`, with the causes (at most 500 bytes).
    fn describe(&self) -> String {
        let mut text = match self {
            Failure::Request(reason) => format!("request: {reason}"),
            Failure::Timeout(limit) => format!("timeout: no answer within {limit:?}"),
            Failure::Client(err) => {
                // The causes, and whether one was a timeout (the connector's own, connecting).
                let (mut causes, mut timed_out) = (String::new(), false);
                let mut source = std::error::Error::source(err);
                while let Some(inner) = source {
                    causes.push_str(&format!(": {inner}"));
                    timed_out |= inner
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
                    source = inner.source();
                }
                let kind = if timed_out {
                    "timeout"
                } else if err.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                format!("{kind}: {err}{causes}")
            }
        };
        text.truncate(text.floor_char_boundary(500));
        text
    }
}

/// A handler's answer, as far as a forward reads it.
struct Answer {
    status: u16,
    headers: HeaderMap,
    excerpt: Vec<u8>,
}

impl Forwarder {
    pub fn new(timeout: Duration) -> Self {
        crate::tls::install_crypto_provider();
        let tls = rustls::ClientConfig::builder()
            .with_platform_verifier()
            .expect("the platform's certificate verifier loads")
            .with_no_client_auth();
        warn_of_proxy_settings();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(timeout.min(Duration::from_secs(10))));
        // A pooled connection a middlebox dropped silently is found out in under a minute.
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Self { client, timeout }
    }

    /// Sends one forward in a `forward` span (under the current span, else under the
    /// event's root), whose `traceparent` the handler receives.
    pub async fn send(&self, req: ForwardRequest<'_>) -> ForwardResult {
        let span = tracing::info_span!(
            "forward",
            otel.kind = "client",
            event_id = req.event_id,
            source = req.source,
            attempt = req.attempt,
            replay_id = req.replay_id,
            http.response.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        if tracing::Span::current().is_none() {
            telemetry::under_event(&span, req.event_id);
        }
        let traceparent = telemetry::traceparent(&span, req.event_id);
        let result = self.send_traced(req, traceparent).instrument(span.clone()).await;
        if let Some(status) = result.status {
            span.record("http.response.status_code", status);
        }
        if let Some(error) = &result.error {
            span.record("error", error.as_str());
        }
        result
    }

    async fn send_traced(&self, req: ForwardRequest<'_>, traceparent: String) -> ForwardResult {
        let started = Instant::now();
        let answer = match request(&req, &traceparent) {
            Ok(request) => self.exchange(request, deadline(started, self.timeout)).await,
            Err(reason) => Err(Failure::Request(reason)),
        };
        let latency_ms = started.elapsed().as_millis() as i64;
        match answer {
            Ok(Answer { status, headers, excerpt }) => ForwardResult {
                status: Some(status),
                latency_ms,
                error: redirect_error(status, &headers),
                excerpt: (!excerpt.is_empty()).then(|| String::from_utf8_lossy(&excerpt).into_owned()),
                retry_after: headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, std::time::SystemTime::now())),
                inline_receipt: InlineReceipt::from_response(&headers),
            },
            Err(failure) => ForwardResult {
                status: None,
                latency_ms,
                error: Some(failure.describe()),
                excerpt: None,
                retry_after: None,
                inline_receipt: None,
            },
        }
    }

    /// Sends `request` and reads the answer's head and up to [`EXCERPT_BYTES`] of its body,
    /// all by `deadline`. A body still arriving at the deadline ends the excerpt; the status
    /// stands.
    async fn exchange(
        &self,
        request: hyper::Request<Full<Bytes>>,
        deadline: tokio::time::Instant,
    ) -> Result<Answer, Failure> {
        let response = timeout_at(deadline, self.client.request(request))
            .await
            .map_err(|_| Failure::Timeout(self.timeout))?
            .map_err(Failure::Client)?;
        let (head, mut body) = response.into_parts();
        let mut excerpt = Vec::new();
        while excerpt.len() < EXCERPT_BYTES {
            match timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        excerpt.extend_from_slice(data);
                    }
                }
                _ => break,
            }
        }
        excerpt.truncate(EXCERPT_BYTES);
        Ok(Answer { status: head.status.as_u16(), headers: head.headers, excerpt })
    }
}

/// The signed `POST` of one forward.
fn request(req: &ForwardRequest<'_>, traceparent: &str) -> Result<hyper::Request<Full<Bytes>>, String> {
    let (uri, basic) = match basic_auth(req.url) {
        None => (hyper::Uri::try_from(req.url.as_str()), None),
        Some((bare, header)) => (hyper::Uri::try_from(bare.as_str()), Some(header)),
    };
    let uri = uri.map_err(|e| format!("URL `{}`: {e}", req.url))?;
    let signature = req.secret.sign(req.event_id, req.now_secs, &req.body);
    let content_type = req
        .original_headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.as_bytes())
        .unwrap_or(b"application/json");
    let text = |name: &HeaderName, value: &str| {
        HeaderValue::from_str(value).map_err(|_| format!("`{name}` cannot carry {value:?}"))
    };
    // As received, also bytes that are not UTF-8: the provider's own value went through HTTP.
    let content_type = HeaderValue::from_bytes(content_type)
        .map_err(|_| format!("`{CONTENT_TYPE}` cannot carry {:?}", String::from_utf8_lossy(content_type)))?;
    let mut request = hyper::Request::post(uri).body(Full::new(req.body.clone())).map_err(|e| e.to_string())?;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, content_type);
    headers.insert(USER_AGENT, AGENT);
    headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
    headers.insert(WEBHOOK_ID, text(&WEBHOOK_ID, req.event_id)?);
    headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(req.now_secs));
    headers.insert(WEBHOOK_SIGNATURE, text(&WEBHOOK_SIGNATURE, &signature)?);
    headers.insert(IDEMPOTENCY_KEY, text(&IDEMPOTENCY_KEY, req.idempotency_key)?);
    headers.insert(ATTEMPT, HeaderValue::from(req.attempt));
    headers.insert(SOURCE, text(&SOURCE, req.source)?);
    headers.insert(TRACEPARENT, text(&TRACEPARENT, traceparent)?);
    if let Some(replay_id) = req.replay_id {
        headers.insert(REPLAY_ID, text(&REPLAY_ID, replay_id)?);
    }
    if let Some(basic) = basic {
        headers.insert(AUTHORIZATION, basic);
    }
    Ok(request)
}

/// What a 3xx answer means for a forward: forwards are signed for one URL and never follow
/// a redirect (a loop would be followed forever, and a signed body would go where the config
/// does not say), so a redirect is a failed attempt that names where it pointed.
fn redirect_error(status: u16, headers: &HeaderMap) -> Option<String> {
    if !(300..400).contains(&status) {
        return None;
    }
    let location = headers.get(hyper::header::LOCATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut text = match location {
        Some(to) => format!("redirect: the handler answered {status} to {to}; forwards do not follow redirects"),
        None => format!("redirect: the handler answered {status}; forwards do not follow redirects"),
    };
    text.truncate(text.floor_char_boundary(500));
    Some(text)
}

/// A `user:password@` in a forward URL goes out as HTTP Basic authentication (as reqwest,
/// which forwards used first, sent it), never in the request's URI: the URL without it, and
/// the header. `None` for a URL without credentials, the usual case.
fn basic_auth(url: &reqwest::Url) -> Option<(reqwest::Url, HeaderValue)> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let user = percent_decode_str(url.username()).decode_utf8_lossy();
    let password = url.password().map(|p| percent_decode_str(p).decode_utf8_lossy()).unwrap_or_default();
    let token = BASE64_STANDARD.encode(format!("{user}:{password}"));
    let mut header = HeaderValue::from_str(&format!("Basic {token}")).expect("base64 is a valid header value");
    header.set_sensitive(true);
    let mut bare = url.clone();
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    Some((bare, header))
}

/// A `Retry-After` value: delay-seconds, or an HTTP date (a date already past asks for no
/// wait). The date is the handler's wall clock, so it is read against the real one, `now`.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// When a forward must have an answer: `timeout` after `started` (far off for a timeout too
/// long to add).
fn deadline(started: Instant, timeout: Duration) -> tokio::time::Instant {
    let started = tokio::time::Instant::from_std(started);
    started.checked_add(timeout).unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Forwards connect directly. reqwest, which they used first, followed the proxy variables;
/// say so once when one is set, rather than let connections fail without a word.
fn warn_of_proxy_settings() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    const VARIABLES: [&str; 6] = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];
    if let Some(name) = VARIABLES.iter().find(|name| std::env::var_os(name).is_some()) {
        ONCE.call_once(|| {
            tracing::warn!(variable = name, "forwards connect directly to handlers; proxy variables are not used")
        });
    }
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
        // Handlers dedup on this exact form: sha256(source, NUL, id), first 16 bytes in hex.
        assert_eq!(a, "idk_a614a71e404480d5e8d3f202d01788f3");
    }

    /// Sends one forward to `url` with a `timeout` forwarder.
    async fn forward(url: &str, timeout: Duration) -> ForwardResult {
        let url = reqwest::Url::parse(url).unwrap();
        let secret = WebhookSecret::generate();
        Forwarder::new(timeout)
            .send(ForwardRequest {
                url: &url,
                event_id: "evt_1",
                source: "s",
                idempotency_key: "idk_1",
                attempt: 1,
                replay_id: None,
                original_headers: &[],
                body: Bytes::from_static(b"{}"),
                secret: &secret,
                now_secs: 1,
            })
            .await
    }

    /// A handler that accepts connections and then answers with `answer` (raw HTTP), or never.
    async fn handler(answer: Option<&'static [u8]>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = vec![0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    if let Some(answer) = answer {
                        let _ = socket.write_all(answer).await;
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_silent_handler_is_a_timeout() {
        let result = forward(&handler(None).await, Duration::from_millis(300)).await;
        assert_eq!(result.status, None);
        assert!(result.error.as_deref().unwrap().starts_with("timeout: "), "{:?}", result.error);
        assert!((300..5_000).contains(&result.latency_ms), "{}", result.latency_ms);
    }

    /// The deadline ends the excerpt, not the answer: the status the handler sent stands.
    #[tokio::test]
    async fn a_body_still_arriving_at_the_deadline_keeps_the_status() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nretry-after: 7\r\n\r\npartial";
        let result = forward(&handler(Some(answer)).await, Duration::from_millis(300)).await;
        assert_eq!(result.status, Some(200), "{:?}", result.error);
        assert_eq!(result.excerpt.as_deref(), Some("partial"));
        assert_eq!(result.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO), "a date past");
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
    }

    /// Credentials in a forward URL go out as Basic authentication, not in the request line
    /// or `Host`.
    #[tokio::test]
    async fn credentials_in_the_url_become_basic_authentication() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://us%40er:p%3Ass@{}/hook", listener.local_addr().unwrap());
        let received = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 8192];
            let n = socket.read(&mut request).await.unwrap();
            socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await.unwrap();
            String::from_utf8_lossy(&request[..n]).to_lowercase()
        });
        let result = forward(&url, Duration::from_secs(5)).await;
        assert_eq!(result.status, Some(200), "{:?}", result.error);
        let head = received.await.unwrap();
        // base64("us@er:p:ss")
        assert!(head.contains("authorization: basic dxnazxi6cdpzcw=="), "{head}");
        assert!(head.starts_with("post /hook http/1.1\r\n"), "{head}");
        assert!(!head.contains("us%40er") && !head.contains("p%3ass"), "{head}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        drop(listener);
        let result = forward(&url, Duration::from_secs(5)).await;
        assert_eq!(result.status, None);
        assert!(result.error.as_deref().unwrap().starts_with("connect: "), "{:?}", result.error);
    }
}
