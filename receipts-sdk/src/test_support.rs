//! A stand-in for the gateway's `POST /v1/receipts`, for the client and outbox tests: it
//! checks each post's signature, records it, and answers from a script of status codes
//! (200 once the script is used up). Receipts for events named `evt_poison…` get a 400.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::json;

use crate::client::RetryPolicy;
use crate::receipt::{Receipt, ReceiptHeaders, ReceiptKey};
use crate::webhook::decode_public_key;

#[derive(Debug, Clone)]
pub struct Post {
    pub receipt_id: String,
    pub content_type: String,
    pub signature_ok: bool,
    pub receipt: Receipt,
}

#[derive(Default)]
struct Shared {
    script: VecDeque<u16>,
    posts: Vec<Post>,
}

pub struct StandIn {
    pub key: ReceiptKey,
    addr: std::net::SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    pub async fn start(script: Vec<u16>) -> Self {
        let key = ReceiptKey::generate("test-key");
        let shared = Arc::new(Mutex::new(Shared { script: script.into(), posts: Vec::new() }));
        let public = decode_public_key(&key.public_key_base64()).unwrap();
        let state = (shared.clone(), public);
        let app = axum::Router::new().route("/v1/receipts", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { key, addr, shared, task }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn posts(&self) -> Vec<Post> {
        self.shared.lock().unwrap().posts.clone()
    }

    /// Answers the next posts with these codes.
    #[cfg_attr(not(feature = "outbox"), allow(dead_code))]
    pub fn script(&self, codes: &[u16]) {
        self.shared.lock().unwrap().script.extend(codes);
    }
}

type StandInState = (Arc<Mutex<Shared>>, ed25519_dalek::VerifyingKey);

async fn receive(
    State((shared, public)): State<StandInState>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let read = ReceiptHeaders::read(get).expect("the four receipt headers");
    let signature_ok = read.verify_signature(&body, &public).is_ok() && read.check_timestamp(crate::unix_now()).is_ok();
    let receipt = Receipt::parse(&body).expect("a well-formed receipt");
    let mut shared = shared.lock().unwrap();
    let code = if receipt.event_id.starts_with("evt_poison") { 400 } else { shared.script.pop_front().unwrap_or(200) };
    let outcome = match receipt.status {
        crate::receipt::ReceiptStatus::Applied => "confirmed",
        crate::receipt::ReceiptStatus::Failed => "failed",
    };
    shared.posts.push(Post {
        receipt_id: read.id.to_string(),
        content_type: get("content-type").unwrap_or_default().to_string(),
        signature_ok,
        receipt,
    });
    let status = StatusCode::from_u16(code).unwrap();
    if code == 200 {
        (status, Json(json!({ "outcome": outcome, "event_id": "ignored" })))
    } else {
        (status, Json(json!({ "error": { "code": format!("stand_in_{code}"), "message": "scripted answer" } })))
    }
}

/// Retries with no real waiting.
pub fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(5) }
}
