//! orders-handler: an example hookwarden handler (axum + sqlx), written to be copied.
//!
//! For every event the gateway forwards to `POST /webhooks/{source}` it:
//! 1. checks the gateway's signature (Standard Webhooks, the source's `whsec_` secret);
//! 2. in ONE database transaction: skips the event if it was already processed, records an
//!    order, and queues an `applied` receipt in the outbox table;
//! 3. commits, then wakes the outbox flusher, which posts the receipt to the gateway.
//!
//! The receipt is written in the same transaction as the order, so the gateway hears
//! "applied" if and only if the order was committed, even if the handler crashes between the
//! commit and the post (the flusher sends it on the next start). Retries and replays of an
//! event are answered `{"status":"duplicate"}` and change nothing.
//!
//! Configuration (environment):
//! - `HANDLER_LISTEN` (default `127.0.0.1:3000`)
//! - `HANDLER_DATABASE_URL` (default `sqlite://orders.db`; a `postgres://` URL works too)
//! - `HOOKWARDEN_URL`: the gateway, where receipts go (default `http://127.0.0.1:8080`)
//! - `SIGNING_SECRET`: the source's `signing_secret` from the gateway config (default: the
//!   example config's `stripe` one); `SIGNING_SECRET_<SOURCE>` (e.g. `SIGNING_SECRET_GITHUB`)
//!   overrides it for one source
//! - `RECEIPT_KEY_ID`, `RECEIPT_KEY_SEED` (required): the handler's receipt key, as printed by
//!   `hookwarden keys generate`; its public half goes into the source's `receipt_keys`
//! - `FLUSH_INTERVAL_MS` (default 500): how often the outbox is flushed besides after commits
//! - `HANDLER_PAUSE_FLUSH=1`: never post receipts (tests use it to crash after a commit)
//! - `RUST_LOG` (default `info`): log filter; logs go to stderr
//!
//! It also answers the gateway's status probe at `POST /hookwarden/status/{source}` (put that
//! URL in the source's `status_url`): which of the asked events it applied or failed, from the
//! same outbox and processed-events tables (docs/status-probe.md), so a replay skips events
//! whose receipt was lost instead of resending them.
//!
//! Test hook: an event whose body has `"fail": true` is rejected by the business logic; the
//! handler answers 422 and sends a `failed` receipt with error code `E_REJECTED`.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use receipts_sdk::client::ReceiptClient;
use receipts_sdk::forwarded::verify_forwarded;
use receipts_sdk::outbox::{self, FlushWaker};
use receipts_sdk::receipt::{Receipt, ReceiptKey};
use receipts_sdk::unix_now;
use receipts_sdk::webhook::WebhookSecret;
use serde_json::{Value, json};
use sqlx::{Any, AnyPool, Transaction};
use tracing::{error, info, warn};

const DEFAULT_SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The business table. One row per event: `already_processed` makes sure of that.
const CREATE_ORDERS: &str = "CREATE TABLE IF NOT EXISTS orders (
    event_id TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    source TEXT NOT NULL,
    amount BIGINT NULL,
    received_at BIGINT NOT NULL
)";

/// What every request handler shares.
#[derive(Clone)]
struct App {
    db: AnyPool,
    /// The secret each source's forwards are signed with, by source name.
    secrets: HashMap<String, WebhookSecret>,
    default_secret: WebhookSecret,
    /// `None` with `HANDLER_PAUSE_FLUSH=1`.
    flusher: Option<FlushWaker>,
    /// Signs the receipts of status-probe answers.
    key: ReceiptKey,
}

/// What `orders-handler --help` prints: its settings, all from the environment.
const HELP: &str = "\
orders-handler: an example hookwarden handler. It records each forwarded event as an order
in its database and confirms it to the gateway with a signed receipt, through an outbox.

Usage: orders-handler            (settings come from the environment)

Settings:
  RECEIPT_KEY_ID, RECEIPT_KEY_SEED   required: the handler's receipt key, as printed by
                                     `hookwarden keys generate`; its public half goes into the
                                     source's `receipt_keys` (demo key of the example config:
                                     orders-1 / wyuvxtBuk7iKv4TlOIxbWp49Pqpp5VhWAoiiOzOGyiE=)
  HANDLER_LISTEN                     address to listen on (default 127.0.0.1:3000)
  HANDLER_DATABASE_URL               sqlite://orders.db (default) or a postgres:// URL
  HOOKWARDEN_URL                     the gateway, where receipts go (default http://127.0.0.1:8080)
  SIGNING_SECRET                     the source's signing_secret (default: the example's)
  SIGNING_SECRET_<SOURCE>            the same for one source, e.g. SIGNING_SECRET_GITHUB
  FLUSH_INTERVAL_MS                  how often the outbox is flushed besides after commits (500)
  HANDLER_PAUSE_FLUSH=1              never post receipts (to try a lost receipt)
  RUST_LOG                           log filter (default info); logs go to stderr

Routes:
  POST /webhooks/{source}            forwards from the gateway
  POST /hookwarden/status/{source}   the gateway's status probe (the source's status_url)
  GET  /orders                       the orders recorded, as JSON

To make it fail an event: send one whose body has \"fail\": true. The handler answers 422
and sends a `failed` receipt with error code E_REJECTED. To make it fail everything, stop it:
the gateway's retries and the gap view show the outage.
";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("-h" | "--help") => {
            print!("{HELP}");
            return Ok(());
        }
        Some(other) => {
            eprintln!("orders-handler: unexpected argument `{other}`: settings come from the environment; see --help");
            std::process::exit(2);
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()); // no colour codes in log files
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();

    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let required = |name: &str| std::env::var(name).map_err(|_| format!("{name} must be set"));
    let listen = env("HANDLER_LISTEN", "127.0.0.1:3000");
    let database_url = env("HANDLER_DATABASE_URL", "sqlite://orders.db");
    let gateway_url = env("HOOKWARDEN_URL", "http://127.0.0.1:8080");
    let default_secret = WebhookSecret::parse(&env("SIGNING_SECRET", DEFAULT_SIGNING_SECRET))?;
    let mut secrets = HashMap::new();
    for (name, value) in std::env::vars() {
        if let Some(source) = name.strip_prefix("SIGNING_SECRET_") {
            secrets.insert(source.to_lowercase(), WebhookSecret::parse(&value)?);
        }
    }
    let key = ReceiptKey::from_seed_base64(required("RECEIPT_KEY_ID")?, &required("RECEIPT_KEY_SEED")?)?;
    let flush_interval = Duration::from_millis(env("FLUSH_INTERVAL_MS", "500").parse()?);
    let pause_flush = env("HANDLER_PAUSE_FLUSH", "0") == "1";

    // The database: SQLite or PostgreSQL, chosen by the URL.
    sqlx::any::install_default_drivers();
    let is_sqlite = database_url.starts_with("sqlite:");
    let db = AnyPool::connect(&sqlite_create_if_missing(&database_url)).await?;
    if is_sqlite {
        // Readers (GET /orders, the flusher) then do not hold up writers.
        sqlx::query("PRAGMA journal_mode = WAL").execute(&db).await?;
    }
    outbox::ensure_schema(&db).await?; // the outbox and processed-events tables
    sqlx::query(CREATE_ORDERS).execute(&db).await?;

    // The flusher posts committed receipts: at once when woken, else every `flush_interval`.
    // Its first pass sends whatever a previous run committed but did not post.
    let client = ReceiptClient::new(&gateway_url, key.clone());
    let flusher = (!pause_flush).then(|| outbox::spawn_flusher(db.clone(), client, flush_interval));
    if pause_flush {
        warn!("HANDLER_PAUSE_FLUSH=1: receipts are queued but never posted");
    }

    let app = App { db, secrets, default_secret, flusher: flusher.as_ref().map(|f| f.waker()), key };
    let router = Router::new()
        .route("/webhooks/{source}", post(receive))
        .route("/hookwarden/status/{source}", post(status_probe))
        .route("/orders", get(list_orders))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    info!(%listen, %gateway_url, "orders-handler listening");
    axum::serve(listener, router).with_graceful_shutdown(shutdown_signal()).await?;
    if let Some(flusher) = flusher {
        flusher.shutdown().await;
    }
    Ok(())
}

/// `POST /webhooks/{source}`: one forwarded event.
async fn receive(
    State(app): State<App>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    // 1. Is it really the gateway? Also gives the event id, the key to be idempotent on.
    let secret = app.secrets.get(&source).unwrap_or(&app.default_secret);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let forwarded = match verify_forwarded(secret, header, &body, unix_now()) {
        Ok(forwarded) => forwarded,
        Err(e) => {
            warn!(%source, error = %e, "refused a forward");
            return Ok(reply(StatusCode::UNAUTHORIZED, json!({ "error": e.to_string() })));
        }
    };
    let event_id = forwarded.event_id.as_str();
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return reject(&app, event_id, "E_MALFORMED", "the body is not JSON").await;
    };

    // 2. One transaction: the "already processed?" mark, the order and its receipt.
    let mut tx = app.db.begin().await?;
    if outbox::already_processed(&mut tx, event_id).await? {
        tx.commit().await?;
        info!(event_id, attempt = forwarded.attempt, "duplicate: already processed");
        return Ok(reply(StatusCode::OK, json!({ "status": "duplicate" })));
    }
    match record_order(&mut tx, &source, event_id, &event).await {
        Ok(order_id) => {
            outbox::enqueue(&mut tx, &Receipt::applied(event_id).with_target_record(&order_id)).await?;
            tx.commit().await?;
            // 3. Committed: now the receipt may go.
            app.wake_flusher();
            info!(event_id, order_id, attempt = forwarded.attempt, "order recorded");
            Ok(reply(StatusCode::OK, json!({ "status": "applied", "order_id": order_id })))
        }
        Err(OrderError::Rejected(detail)) => {
            // Undo the order AND the processed mark, so a later replay may try again.
            tx.rollback().await?;
            reject(&app, event_id, "E_REJECTED", &detail).await
        }
        // A database error: answer 500 (the transaction rolls back when dropped) and let
        // the gateway retry; no receipt, the event is not applied yet.
        Err(OrderError::Db(e)) => Err(e.into()),
    }
}

/// `POST /hookwarden/status/{source}`: the gateway asks which events were applied; the
/// outbox answers from its tables with signed receipts.
async fn status_probe(
    State(app): State<App>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let secret = app.secrets.get(&source).unwrap_or(&app.default_secret);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let answer = outbox::serve_probe(&app.db, &app.key, secret, header, &body).await?;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Ok((status, [(axum::http::header::CONTENT_TYPE, "application/json")], answer.body).into_response())
}

/// The business write: one order per event.
async fn record_order(
    tx: &mut Transaction<'_, Any>,
    source: &str,
    event_id: &str,
    event: &Value,
) -> Result<String, OrderError> {
    // Stripe-style events carry the object under `data.object`; others are the object.
    let object = event.pointer("/data/object").unwrap_or(event);
    let field = |name: &str| object.get(name).or_else(|| event.get(name));
    let Some(order_id) = field("id").and_then(Value::as_str) else {
        return Err(OrderError::Rejected("the event has no order id".into()));
    };
    sqlx::query("INSERT INTO orders (event_id, order_id, source, amount, received_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(event_id)
        .bind(order_id)
        .bind(source)
        .bind(field("amount").and_then(Value::as_i64))
        .bind(unix_now())
        .execute(&mut **tx)
        .await?;
    // Test hook: a rule that refuses the order after it was written; the rollback undoes it.
    if event.get("fail") == Some(&Value::Bool(true)) {
        return Err(OrderError::Rejected("the order was refused (test hook `fail: true`)".into()));
    }
    Ok(order_id.to_string())
}

/// Answers 422 and sends a `failed` receipt, committed in a transaction of its own (the
/// business transaction was rolled back). The event is not marked processed.
async fn reject(app: &App, event_id: &str, code: &str, detail: &str) -> Result<Response, AppError> {
    let mut tx = app.db.begin().await?;
    outbox::enqueue(&mut tx, &Receipt::failed(event_id, code, Some(detail.to_string()))).await?;
    tx.commit().await?;
    app.wake_flusher();
    warn!(event_id, code, detail, "event rejected");
    Ok(reply(StatusCode::UNPROCESSABLE_ENTITY, json!({ "status": "rejected", "error_code": code, "detail": detail })))
}

/// `GET /orders`: every recorded order, oldest first.
async fn list_orders(State(app): State<App>) -> Result<Response, AppError> {
    let rows: Vec<(String, String, String, Option<i64>, i64)> = sqlx::query_as(
        "SELECT event_id, order_id, source, amount, received_at FROM orders ORDER BY received_at, event_id",
    )
    .fetch_all(&app.db)
    .await?;
    let orders: Vec<Value> = rows
        .into_iter()
        .map(|(event_id, order_id, source, amount, received_at)| {
            json!({ "event_id": event_id, "order_id": order_id, "source": source, "amount": amount, "received_at": received_at })
        })
        .collect();
    Ok(reply(StatusCode::OK, json!(orders)))
}

impl App {
    fn wake_flusher(&self) {
        if let Some(flusher) = &self.flusher {
            flusher.wake();
        }
    }
}

enum OrderError {
    /// The business logic refused the event: a permanent failure, reported by receipt.
    Rejected(String),
    /// The database failed: possibly temporary, retried by the gateway.
    Db(sqlx::Error),
}

impl From<sqlx::Error> for OrderError {
    fn from(e: sqlx::Error) -> Self {
        OrderError::Db(e)
    }
}

/// Any unexpected error: logged, answered 500, and the gateway retries.
struct AppError(String);

impl<E: std::error::Error> From<E> for AppError {
    fn from(e: E) -> Self {
        AppError(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        error!(error = %self.0, "request failed");
        reply(StatusCode::INTERNAL_SERVER_ERROR, json!({ "error": self.0 }))
    }
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// `sqlite://orders.db` → `sqlite://orders.db?mode=rwc`, so the file is created on first run.
fn sqlite_create_if_missing(url: &str) -> String {
    if url.starts_with("sqlite:") && !url.contains('?') { format!("{url}?mode=rwc") } else { url.to_string() }
}

/// Ctrl-C or SIGTERM: stop taking requests, finish the ones under way.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
}
