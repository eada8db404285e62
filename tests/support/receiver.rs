//! A handler stand-in: records every forward, checks its Standard Webhooks signature with the
//! `standardwebhooks` crate, and answers as the test tells it to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::gateway::SIGNING_SECRET;

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Whether a Standard Webhooks library accepted the gateway's signature.
    pub verified: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The replay that sent this, if any.
    pub fn replay_id(&self) -> Option<&str> {
        self.headers.get("hookwarden-replay-id").and_then(|v| v.to_str().ok())
    }

    /// The gateway's event id (`webhook-id`).
    pub fn event_id(&self) -> &str {
        self.header("webhook-id")
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy)]
pub struct Behaviour {
    pub status: u16,
    /// Answer this status to the first N requests of each event, then 200.
    pub fail_first: u32,
    pub delay: Duration,
    /// The delay applies from the (N+1)th request of each event on (0: to every request).
    pub delay_after: u32,
    pub retry_after: Option<u64>,
    /// Put an `applied` receipt on each 2xx, signed with the receiver's key.
    pub inline_receipt: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            status: 200,
            fail_first: 0,
            delay: Duration::ZERO,
            delay_after: 0,
            retry_after: None,
            inline_receipt: false,
        }
    }
}

#[derive(Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    per_event: Mutex<HashMap<String, u32>>,
    behaviour: Mutex<Behaviour>,
    receipt_key: Mutex<Option<receipts_sdk::receipt::ReceiptKey>>,
    /// Requests being answered now, and the most there ever were at once.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// Where to post an `applied` receipt before answering a 2xx (a gateway's base URL).
    receipt_post_to: Mutex<Option<String>>,
    /// Each such post: event id, how long the gateway took to answer it, its status.
    receipt_posts: Mutex<Vec<(String, Duration, u16)>>,
}

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    inner: Arc<Inner>,
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    inner.most_in_flight.fetch_max(now, Ordering::SeqCst);
    let answer = answer(&inner, uri, headers, body).await.into_response();
    inner.in_flight.fetch_sub(1, Ordering::SeqCst);
    answer
}

async fn answer(inner: &Inner, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse + use<> {
    let verified = standardwebhooks::Webhook::new(SIGNING_SECRET).unwrap().verify(&body, &headers).is_ok();
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let id_for_receipt = id.clone();
    let behaviour = *inner.behaviour.lock().unwrap();
    let seen = {
        let mut per_event = inner.per_event.lock().unwrap();
        let n = per_event.entry(id).or_default();
        *n += 1;
        *n
    };
    inner.received.lock().unwrap().push(Received {
        at: Instant::now(),
        path: uri.path().to_string(),
        headers,
        body,
        verified,
    });
    if !behaviour.delay.is_zero() && seen > behaviour.delay_after {
        tokio::time::sleep(behaviour.delay).await;
    }
    let status = if behaviour.fail_first > 0 {
        if seen <= behaviour.fail_first { behaviour.status } else { 200 }
    } else {
        behaviour.status
    };
    let post_to = inner.receipt_post_to.lock().unwrap().clone();
    let key = inner.receipt_key.lock().unwrap().clone();
    if let (Some(gateway), Some(key), true) = (post_to, key, (200..300).contains(&status)) {
        // A handler that commits, posts its receipt and only then answers the forward.
        let signed =
            key.sign(&receipts_sdk::receipt::Receipt::applied(id_for_receipt.clone()), super::sign::now_secs());
        let mut request = super::client().post(format!("{gateway}/v1/receipts")).body(signed.body.clone());
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let started = Instant::now();
        let answered = request.header("content-type", "application/json").send().await;
        let status = answered.map(|r| r.status().as_u16()).unwrap_or(0);
        inner.receipt_posts.lock().unwrap().push((id_for_receipt.clone(), started.elapsed(), status));
    }
    let mut response_headers = HeaderMap::new();
    if let Some(secs) = behaviour.retry_after {
        response_headers.insert("retry-after", secs.to_string().parse().unwrap());
    }
    let key = inner.receipt_key.lock().unwrap().clone();
    if let (true, true, Some(key)) = (behaviour.inline_receipt, (200..300).contains(&status), key) {
        let receipt = receipts_sdk::receipt::Receipt::applied(id_for_receipt);
        for (name, value) in key.sign(&receipt, super::sign::now_secs()).inline_headers() {
            response_headers.insert(name, value.parse().unwrap());
        }
    }
    (StatusCode::from_u16(status).unwrap(), response_headers, format!("status {status}"))
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.inner.behaviour.lock().unwrap() = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.received.lock().unwrap().clone()
    }

    /// The key inline receipts are signed with.
    pub fn set_receipt_key(&self, key: receipts_sdk::receipt::ReceiptKey) {
        *self.inner.receipt_key.lock().unwrap() = Some(key);
    }

    /// Posts an `applied` receipt (signed with the receipt key) to the gateway at `base`
    /// before answering each 2xx, as a handler that commits first does.
    pub fn post_receipts_before_answering(&self, base: &str) {
        *self.inner.receipt_post_to.lock().unwrap() = Some(base.to_string());
    }

    /// The receipts posted before answering: event id, the gateway's time to answer, status.
    pub fn receipt_posts(&self) -> Vec<(String, Duration, u16)> {
        self.inner.receipt_posts.lock().unwrap().clone()
    }

    /// Requests the receiver is answering now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests the receiver was answering at one time.
    pub fn most_in_flight(&self) -> usize {
        self.inner.most_in_flight.load(Ordering::SeqCst)
    }

    pub fn count(&self) -> usize {
        self.inner.received.lock().unwrap().len()
    }

    /// How many times each event id arrived.
    pub fn counts_by_event(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.inner.received.lock().unwrap().iter() {
            *counts.entry(r.event_id().to_string()).or_default() += 1;
        }
        counts
    }

    pub fn for_event(&self, id: &str) -> Vec<Received> {
        self.inner.received.lock().unwrap().iter().filter(|r| r.event_id() == id).cloned().collect()
    }
}
