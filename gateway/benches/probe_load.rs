//! Probe load: events settled per second by asking a handler (the status probe,
//! docs/status-probe.md), against the real `hookwarden` binary over loopback.
//!
//! `cargo bench -p hookwarden --bench probe_load -- [--db sqlite|postgres] [--events N]
//!     [--runs N] [--json] [--tmpdir DIR] [--pg-url URL]`
//!
//! Without `--bench` (what `cargo bench` passes), e.g. under `cargo test --all-targets`, it is
//! a smoke run (300 events, one run, SQLite) that exits 0 only if every event was settled.
//!
//! Per run: the bench stores N events of source `probe` with `Store::insert_events` and marks
//! them delivered on its own connection (so nothing is forwarded while it measures): N
//! `unknown` events, as after an outage whose receipts were lost. The handler is built on the
//! Rust SDK, in the bench's process: axum serving `outbox::serve_probe` from a SQLite outbox
//! whose processed-events table holds all N ids (it applied them all; it answers each with a
//! signed `applied` receipt under the probe receipt id). Then it times one
//! `POST /v1/reconcile` over the window: the gateway asks 100 ids per probe, four probes at a
//! time, checks every answer entry as a receipt and records them with the audit entry in one
//! transaction. Settled per second = N / the reconcile's wall time.

mod common;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{Db, free_port, gateway_config, http_client, in_database, run_sql, source_toml, start_gateway};
use hookwarden::domain::{EventId, NewEvent};
use hookwarden::store::Store;
use receipts_sdk::outbox;
use receipts_sdk::receipt::ReceiptKey;
use receipts_sdk::webhook::WebhookSecret;
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "hwt_bench_probe_load_admin_token";
const BENCH: &str = "probe_load";
const FILL_BATCH: usize = 5_000;

struct Args {
    db: Db,
    events: usize,
    runs: usize,
    json: bool,
    tmpdir: std::path::PathBuf,
    pg_url: String,
}

fn parse_args() -> Result<Args, String> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let bench = raw.iter().any(|a| a == "--bench");
    let mut args = Args {
        db: Db::Sqlite,
        events: if bench { 10_000 } else { 300 },
        runs: if bench { 3 } else { 1 },
        json: false,
        tmpdir: std::env::temp_dir(),
        pg_url: common::default_pg_url(),
    };
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = common::split_flag(&arg);
        let mut value = |what: &str| common::flag_value(&inline, &mut it, what);
        match name.as_str() {
            "--bench" => {}
            "--db" => args.db = Db::parse(&value("--db")?)?,
            "--events" => args.events = common::positive(value("--events")?, "--events")?,
            "--runs" => args.runs = common::positive(value("--runs")?, "--runs")?,
            "--json" => args.json = true,
            "--tmpdir" => args.tmpdir = value("--tmpdir")?.into(),
            "--pg-url" => args.pg_url = value("--pg-url")?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.events > 50_000 {
        return Err("--events: a reconcile asks about at most 50,000 events".into());
    }
    Ok(args)
}

/// The handler's side: the SDK's probe endpoint over its SQLite outbox.
#[derive(Clone)]
struct Handler {
    pool: sqlx::SqlitePool,
    key: ReceiptKey,
    secret: WebhookSecret,
}

async fn status(State(h): State<Arc<Handler>>, headers: HeaderMap, body: Bytes) -> axum::response::Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match outbox::serve_probe(&h.pool, &h.key, &h.secret, header, &body).await {
        Ok(reply) => (StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK), reply.body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// One measured reconcile: (seconds, the answer).
async fn run_once(args: &Args, tag: &str, db_url: &str, cleanup: &mut common::Cleanup) -> Result<(f64, Value), String> {
    // The gateway's database: N unknown, delivered events.
    let store = Store::connect(db_url).await.map_err(|e| format!("connect: {e}"))?;
    let now = common::unix_now_ms() - 60_000;
    let mut ids = Vec::with_capacity(args.events);
    for start in (0..args.events).step_by(FILL_BATCH) {
        let batch: Vec<NewEvent> = (start..(start + FILL_BATCH).min(args.events))
            .map(|n| NewEvent {
                id: EventId::generate(),
                source: "probe".into(),
                dedup_key: format!("{tag}-{n}"),
                event_type: Some("bench.probe".into()),
                received_at: now,
                headers: vec![],
                body: b"{}".to_vec(),
                body_dedup: None,
            })
            .collect();
        ids.extend(batch.iter().map(|e| e.id.to_string()));
        store.insert_events(&batch).await.map_err(|e| format!("insert: {e}"))?;
    }
    store.close().await;
    run_sql(
        args.db,
        db_url,
        &["UPDATE events SET delivery_state = 'delivered', delivered_at = received_at, next_attempt_at = NULL, attempts = 1"],
    )
    .await?;

    // The handler: it applied every one of them and lost the receipts.
    let handler_db = format!("sqlite://{}?mode=rwc", cleanup.dir.join("handler.db").display());
    let pool = sqlx::SqlitePool::connect(&handler_db).await.map_err(|e| format!("handler db: {e}"))?;
    outbox::ensure_schema(&pool).await.map_err(|e| format!("handler schema: {e}"))?;
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    for id in &ids {
        sqlx::query("INSERT INTO hookwarden_processed_events (event_id, processed_at) VALUES ($1, $2)")
            .bind(id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    let key = ReceiptKey::from_seed_base64("bench-1", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")
        .map_err(|e| e.to_string())?;
    let secret = WebhookSecret::parse(common::SIGNING_SECRET).map_err(|e| e.to_string())?;
    let handler = Arc::new(Handler { pool, key: key.clone(), secret });
    let app = axum::Router::new().route("/status", axum::routing::post(status)).with_state(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let handler_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let port = free_port()?;
    let extra = format!(
        "receipt_keys = [{{ id = \"{}\", public_key = \"{}\" }}]\nstatus_url = \"http://{handler_addr}/status\"\n\
         status_timeout = \"30s\"\nretry_ladder = [\"24h\"]\n",
        key.id,
        key.public_key_base64()
    );
    let config = gateway_config(
        port,
        db_url,
        Some(ADMIN_TOKEN),
        &[source_toml("probe", "{ kind = \"none\" }", "http://127.0.0.1:9/unused", &extra)],
    );
    let client = http_client(None, Duration::from_secs(600))?;
    start_gateway(cleanup, port, &config, &["HOOKWARDEN_ADMIN_TOKEN"], &client).await?;
    let body = json!({ "source": "probe", "since": "2000-01-01T00:00:00Z", "limit": args.events });
    let started = Instant::now();
    let response = client
        .post(format!("http://127.0.0.1:{port}/v1/reconcile"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("reconcile: {e}"))?;
    let status = response.status();
    let answer: Value = response.json().await.map_err(|e| format!("reconcile answer: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    serving.abort();
    if !status.is_success() || answer["counts"]["confirmed"].as_u64() != Some(args.events as u64) {
        return Err(format!("the reconcile did not settle all {} events: {status} {answer}", args.events));
    }
    Ok((seconds, answer))
}

async fn run(args: Args) -> Result<(), String> {
    let mut rates = Vec::new();
    for n in 0..args.runs {
        let (seconds, answer) = in_database(&args.tmpdir, BENCH, args.db, &args.pg_url, async |tag, url, cleanup| {
            run_once(&args, tag, url, cleanup).await
        })
        .await?;
        let rate = args.events as f64 / seconds;
        rates.push(rate);
        let probes = answer["counts"]["probes"].as_i64().unwrap_or(0);
        if args.json {
            println!(
                "{}",
                json!({ "run": n + 1, "db": args.db.name(), "events": args.events, "probes": probes,
                                   "seconds": seconds, "settled_per_second": rate })
            );
        } else {
            println!(
                "{BENCH} {} run {}: {} events settled in {probes} probes in {seconds:.2}s = {rate:.0} events/s",
                args.db.name(),
                n + 1,
                args.events
            );
        }
    }
    rates.sort_by(f64::total_cmp);
    if !args.json {
        println!("{BENCH} {}: median {:.0} events/s over {} runs", args.db.name(), rates[rates.len() / 2], args.runs);
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("{BENCH}: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{BENCH}: {err}");
            ExitCode::FAILURE
        }
    }
}
