//! Replay load: times the dry run (`POST /v1/replays`) over a window of 1,000,000 events, and the
//! live executor's throughput, against the real `hookwarden` binary over loopback.
//!
//! `cargo bench -p hookwarden --bench replay_load -- [--part all|dry|exec] [--db sqlite|postgres]
//!     [--events N] [--exec-events N] [--runs N] [--rate R] [--body-bytes N] [--json]
//!     [--tmpdir DIR] [--pg-url URL]`
//!
//! Without `--bench` (what `cargo bench` passes), e.g. under `cargo test --all-targets`, it is
//! a smoke run (10,000 + 200 events, 2 runs, SQLite) that exits 0 only if the dry runs
//! answered the expected counts and the live replay completed with every item sent once.
//!
//! Steps: the bench opens the database itself with `Store::connect` and stores, with
//! `insert_events` in batches of 5,000, N events of source `bench` spread over one day
//! (`event_type` bench.a/b/c by turns) and M events of source `exec` in a later hour. Then,
//! on its own connection, it puts them in a settled state that `Store` has no call for: every
//! event delivered, nothing scheduled (so the dispatcher stays idle while replays are timed),
//! `attempts` 1 to 4 by turns, and of `bench` ~10% `confirmed` and 2% `failed` (`E_DB`); the
//! rest `unknown`. Then it starts the gateway on the same database and:
//! (a) dry run: `POST /v1/replays` over the whole `bench` day, without and with the filter
//!     `attempts < 3 AND event_type = bench.a`, R times each; checks the counts against what
//!     was stored; then times the same plan in-process (`replay::plan::plan`, no HTTP, no
//!     audit entry) and its two statements alone (`Store::outcome_counts`, `sample_events`),
//!     and prints SQLite's query plan for them;
//! (b) executor: a live replay of the `exec` hour (rate R, limit M) to a sink answering 200;
//!     items/s from just before the `POST` to the first `GET /v1/replays/{id}` (polled every
//!     10 ms) that says `completed`, with the sink's first-to-last send and the CPU split.
//!
//! `--store-only` measures the executor's per-item database work alone (no gateway, no HTTP):
//! 32 tasks (the SQLite executor's concurrency) each check the event before its send
//! (`Store::check_before_send`) and record its attempt (`Store::complete_attempts` with one record,
//! one transaction per item); then the same attempts recorded 500 per
//! transaction, for the ceiling a grouped write would have.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{
    Cleanup, CpuShare, CpuSnapshot, Db, Sink, count_sql, cpu_share, cpu_snapshot, positive, run_sql, unix_now_ms,
};
use hookwarden::access::SourceScope;
use hookwarden::domain::{AttemptKind, EventId, NewEvent, Outcome};
use hookwarden::http::Role;
use hookwarden::replay::plan::{ReplayRequest, numbered_to_marks, plan, to_store_param};
use hookwarden::store::{AttemptRecord, Completion, EventQuery, Selection, SqlParam, Store};
use serde_json::{Value, json};
use sqlx::Connection;

const ADMIN_TOKEN: &str = "hwt_bench_replay_load_admin_token";
const FILL_BATCH: usize = 5_000;
const FILTER: &str = "attempts < 3 AND event_type = bench.a";
const DAY_MS: i64 = 86_400_000;

// ---- arguments ----

#[derive(Debug, Clone)]
struct Args {
    smoke: bool,
    db: Db,
    dry: bool,
    exec: bool,
    events: usize,
    exec_events: usize,
    runs: usize,
    rate: f64,
    body_bytes: usize,
    json: bool,
    tmpdir: PathBuf,
    pg_url: String,
    store_only: bool,
}

const USAGE: &str = "replay_load [--part all|dry|exec] [--db sqlite|postgres] [--events N] [--exec-events N] \
[--runs N] [--rate R] [--body-bytes N] [--json] [--tmpdir DIR] [--pg-url URL] [--store-only]";

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let mut smoke = true;
    let (mut events, mut exec_events, mut runs) = (None, None, None);
    let mut args = Args {
        smoke: true,
        db: Db::Sqlite,
        dry: true,
        exec: true,
        events: 1_000_000,
        exec_events: 20_000,
        runs: 5,
        rate: 10_000.0,
        body_bytes: 300,
        json: false,
        tmpdir: std::env::temp_dir(),
        pg_url: common::default_pg_url(),
        store_only: false,
    };
    while let Some(arg) = raw.next() {
        let (name, inline) = common::split_flag(&arg);
        let mut value = |what: &str| common::flag_value(&inline, &mut raw, what);
        match name.as_str() {
            "--bench" => smoke = false,
            "--json" => args.json = true,
            "--store-only" => args.store_only = true,
            "--db" => args.db = Db::parse(&value("--db")?)?,
            "--part" => {
                (args.dry, args.exec) = match value("--part")?.as_str() {
                    "all" => (true, true),
                    "dry" => (true, false),
                    "exec" => (false, true),
                    other => return Err(format!("--part {other}: use all, dry or exec")),
                }
            }
            "--events" | "-n" => events = Some(positive(value("--events")?, "--events")?),
            "--exec-events" => exec_events = Some(positive(value("--exec-events")?, "--exec-events")?),
            "--runs" => runs = Some(positive(value("--runs")?, "--runs")?),
            "--rate" => {
                args.rate = value("--rate")?
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0)
                    .ok_or("--rate: a positive number of sends per second")?
            }
            "--body-bytes" => args.body_bytes = positive(value("--body-bytes")?, "--body-bytes")?,
            "--tmpdir" => args.tmpdir = PathBuf::from(value("--tmpdir")?),
            "--pg-url" => args.pg_url = value("--pg-url")?,
            "--help" | "-h" => return Err(USAGE.into()),
            // cargo may pass a filter or libtest flags; they mean nothing here.
            other => eprintln!("replay_load: ignoring argument `{other}`"),
        }
    }
    if args.store_only {
        (args.dry, args.exec) = (false, true);
    }
    args.smoke = smoke;
    let (d_events, d_exec, d_runs) = if smoke { (10_000, 200, 2) } else { (1_000_000, 20_000, 5) };
    args.events = events.unwrap_or(d_events);
    args.exec_events = exec_events.unwrap_or(d_exec);
    args.runs = runs.unwrap_or(d_runs);
    Ok(args)
}

// ---- filling ----

const EVENT_TYPES: [&str; 3] = ["bench.a", "bench.b", "bench.c"];

/// What the fill stored for event `k` of source `bench`: (outcome, attempts, event type).
fn shape(k: usize) -> (Outcome, i64, &'static str) {
    let outcome = if k.is_multiple_of(10) {
        Outcome::Confirmed
    } else if k % 50 == 7 {
        Outcome::Failed
    } else {
        Outcome::Unknown
    };
    (outcome, 1 + (k % 4) as i64, EVENT_TYPES[k % 3])
}

/// Outcome counts over all `bench` events, or over those the bench filter selects.
fn expected_counts(n: usize, filtered: bool) -> HashMap<Outcome, i64> {
    let mut counts = HashMap::new();
    for k in 0..n {
        let (outcome, attempts, event_type) = shape(k);
        if !filtered || (attempts < 3 && event_type == "bench.a") {
            *counts.entry(outcome).or_default() += 1;
        }
    }
    counts
}

fn body(prefix: &str, k: usize, event_type: &str, target: usize) -> Vec<u8> {
    let head = format!(r#"{{"id":"{prefix}{k:08}","type":"{event_type}","data":{{"object":{{"n":{k},"note":""#);
    let tail = r#""}}}"#;
    let mut out = head.into_bytes();
    out.extend(std::iter::repeat_n(b'x', target.saturating_sub(out.len() + tail.len())));
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Stores `n` events of `source` with `insert_events`, received evenly over [start, start + span).
async fn store_events(
    store: &Store,
    source: &str,
    prefix: &str,
    n: usize,
    start: i64,
    span: i64,
    body_bytes: usize,
) -> Result<(), String> {
    let mut k = 0usize;
    while k < n {
        let batch: Vec<NewEvent> = (k..(k + FILL_BATCH).min(n))
            .map(|k| {
                let event_type = if source == "bench" { shape(k).2 } else { "exec.event" };
                NewEvent {
                    id: EventId::generate(),
                    source: source.into(),
                    dedup_key: format!("{prefix}{k:08}"),
                    event_type: Some(event_type.into()),
                    received_at: start + (k as i128 * span as i128 / n as i128) as i64,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: body(prefix, k, event_type, body_bytes),
                    body_dedup: None,
                }
            })
            .collect();
        k += batch.len();
        let stored = store.insert_events(&batch).await.map_err(|e| format!("insert_events: {e}"))?;
        if stored.len() != batch.len() {
            return Err(format!("insert_events stored {} of {}", stored.len(), batch.len()));
        }
    }
    Ok(())
}

struct Filled {
    /// The `bench` day and the `exec` hour, unix ms.
    day: (i64, i64),
    hour: (i64, i64),
    insert_s: f64,
    settle_s: f64,
}

async fn fill(args: &Args, url: &str) -> Result<Filled, String> {
    let now = unix_now_ms().div_euclid(1000) * 1000;
    let day = (now - 2 * DAY_MS, now - DAY_MS);
    let hour = (now - 2 * 3_600_000, now - 3_600_000);
    let started = Instant::now();
    let store = Store::connect(url).await.map_err(|e| format!("Store::connect: {e}"))?;
    let bench_n = if args.dry { args.events } else { 0 };
    store_events(&store, "bench", "d-", bench_n, day.0, day.1 - day.0, args.body_bytes).await?;
    if args.exec {
        store_events(&store, "exec", "x-", args.exec_events, hour.0, hour.1 - hour.0, args.body_bytes).await?;
    }
    store.close().await;
    let insert_s = started.elapsed().as_secs_f64();
    // The settled state (see the module doc); the numbers follow `shape`.
    let started = Instant::now();
    let k = "CAST(SUBSTR(dedup_key, 3) AS INTEGER)";
    let settle = [
        format!(
            "UPDATE events SET delivery_state = 'delivered', delivered_at = received_at + 20, next_attempt_at = NULL, \
             attempts = 1 + {k} % 4, ladder_attempts = 1 + {k} % 4 WHERE source = 'bench'"
        ),
        format!(
            "UPDATE events SET outcome = 'confirmed', receipts = 1, outcome_at = received_at + 30 \
             WHERE source = 'bench' AND {k} % 10 = 0"
        ),
        format!(
            "UPDATE events SET outcome = 'failed', error_code = 'E_DB', receipts = 1, outcome_at = received_at + 30 \
             WHERE source = 'bench' AND {k} % 50 = 7"
        ),
        "UPDATE events SET delivery_state = 'delivered', delivered_at = received_at + 20, next_attempt_at = NULL, \
         attempts = 1, ladder_attempts = 1 WHERE source = 'exec'"
            .to_string(),
    ];
    let statements: Vec<&str> = settle.iter().map(String::as_str).collect();
    let done = run_sql(args.db, url, &statements).await?;
    let want = [bench_n as u64, bench_n.div_ceil(10) as u64, (0..bench_n).filter(|k| k % 50 == 7).count() as u64];
    let exec_n = if args.exec { args.exec_events as u64 } else { 0 };
    if done[..3] != want || done[3] != exec_n {
        return Err(format!("settling touched {done:?} rows, expected {want:?} and {exec_n}"));
    }
    if args.db == Db::Sqlite {
        run_sql(args.db, url, &["PRAGMA wal_checkpoint(TRUNCATE)"]).await?;
    }
    Ok(Filled { day, hour, insert_s, settle_s: started.elapsed().as_secs_f64() })
}

// ---- the gateway ----

struct Gateway {
    base: String,
    pid: u32,
    client: reqwest::Client,
    /// The config file's text.
    config: String,
}

async fn start_gateway(db_url: &str, sink: SocketAddr, cleanup: &mut Cleanup) -> Result<Gateway, String> {
    let port = common::free_port()?;
    let source =
        |name: &str| common::source_toml(name, r#"{ kind = "none" }"#, &format!("http://{sink}/webhooks/{name}"), "");
    let config = common::gateway_config(port, db_url, Some(ADMIN_TOKEN), &[source("bench"), source("exec")]);
    let client = common::http_client(None, Duration::from_secs(120))?;
    let env_remove = ["HOOKWARDEN_CONFIG", "HOOKWARDEN_ADMIN_TOKEN", "RUST_LOG"];
    let spawned = common::start_gateway(cleanup, port, &config, &env_remove, &client).await?;
    Ok(Gateway { base: spawned.base, pid: spawned.pid, client, config })
}

async fn post_replay(gw: &Gateway, request: &Value) -> Result<(StatusCode, Value, Duration), String> {
    let started = Instant::now();
    let response = gw
        .client
        .post(format!("{}/v1/replays", gw.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(request)
        .send()
        .await
        .map_err(|e| format!("POST /v1/replays: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("POST /v1/replays: {e}"))?;
    let took = started.elapsed();
    let value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&body) }));
    Ok((status, value, took))
}

// ---- (a) the dry run ----

#[derive(Debug, Clone, Default)]
struct Timings {
    ms: Vec<f64>,
}

impl Timings {
    fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        v
    }
    fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }
    fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
    }
    fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
    fn show(&self) -> String {
        format!("min {:.0} ms  median {:.0} ms  max {:.0} ms", self.min(), self.median(), self.max())
    }
    fn json(&self) -> Value {
        json!({ "min_ms": self.min(), "median_ms": self.median(), "max_ms": self.max(), "all_ms": self.ms })
    }
}

struct DryVariant {
    label: &'static str,
    filter: Option<&'static str>,
    http: Timings,
    in_process: Timings,
    counts_sql: Timings,
    sample_sql: Timings,
    answer: Value,
    /// Empty when the answer's counts matched what was stored.
    mismatch: Option<String>,
    query_plan: Vec<String>,
}

struct DryReport {
    events: usize,
    variants: Vec<DryVariant>,
    /// Over the HTTP dry runs only (the in-process timings run in the bench's own process).
    cpu: CpuShare,
}

async fn query_plan(db: Db, url: &str, sql: &str, params: &[SqlParam]) -> Vec<String> {
    let run = async {
        match db {
            Db::Sqlite => {
                let mut conn = sqlx::sqlite::SqliteConnection::connect(url).await?;
                let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(format!(
                    "EXPLAIN QUERY PLAN {sql}"
                )));
                for p in params {
                    q = match p {
                        SqlParam::Text(t) => q.bind(t.clone()),
                        SqlParam::Int(i) => q.bind(*i),
                    };
                }
                let rows = q.fetch_all(&mut conn).await?;
                Ok::<_, sqlx::Error>(rows.into_iter().map(|r| r.3).collect())
            }
            Db::Postgres => {
                let mut conn = sqlx::postgres::PgConnection::connect(url).await?;
                let mut q =
                    sqlx::query_as::<_, (String,)>(sqlx::AssertSqlSafe(format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}")));
                for p in params {
                    q = match p {
                        SqlParam::Text(t) => q.bind(t.clone()),
                        SqlParam::Int(i) => q.bind(*i),
                    };
                }
                let rows = q.fetch_all(&mut conn).await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }
        }
    };
    run.await.unwrap_or_else(|e| vec![format!("(EXPLAIN failed: {e})")])
}

async fn dry_runs(args: &Args, gw: &Gateway, db_url: &str, filled: &Filled) -> Result<DryReport, String> {
    let (since, until) = (hookwarden::http::format_ms(filled.day.0), hookwarden::http::format_ms(filled.day.1));
    let config = hookwarden::config::Config::parse(&gw.config, &|_| None).map_err(|e| format!("config: {e}"))?;
    let sources: HashMap<_, _> = config.sources.iter().map(|s| (s.name.clone(), s.clone())).collect();
    let mut variants = Vec::new();
    let (mut cpu_before, mut cpu_after, mut http_secs) = (Vec::new(), Vec::new(), 0.0);
    for (label, filter) in [("window", None), ("window + filter", Some(FILTER))] {
        let mut request = json!({ "source": "bench", "since": since, "until": until });
        if let Some(f) = filter {
            request["filter"] = json!(f);
        }
        let mut http = Timings::default();
        let mut answer = Value::Null;
        cpu_before.push(cpu_snapshot(gw.pid));
        let http_started = Instant::now();
        for _ in 0..args.runs {
            let (status, value, took) = post_replay(gw, &request).await?;
            if status != StatusCode::OK {
                return Err(format!("dry run `{label}` answered {status}: {value}"));
            }
            http.push(took);
            answer = value;
        }
        http_secs += http_started.elapsed().as_secs_f64();
        cpu_after.push(cpu_snapshot(gw.pid));
        let expected = expected_counts(args.events, filter.is_some());
        let count = |o: Outcome| expected.get(&o).copied().unwrap_or(0);
        let got = |name: &str| answer.pointer(&format!("/counts/{name}")).and_then(Value::as_i64);
        let want_json = json!({
            "confirmed": count(Outcome::Confirmed),
            "unknown": count(Outcome::Unknown),
            "failed": count(Outcome::Failed),
        });
        let mismatch = if ["confirmed", "unknown", "failed"].iter().all(|n| got(n) == want_json[n].as_i64())
            && answer["eligible_in_scope"].as_i64() == Some(count(Outcome::Unknown))
        {
            None
        } else {
            Some(format!(
                "counts {} eligible_in_scope {}, expected {want_json}",
                answer["counts"], answer["eligible_in_scope"]
            ))
        };

        // The same plan in-process (no HTTP, no audit entry), and its two statements alone.
        let store = Store::connect(db_url).await.map_err(|e| format!("Store::connect: {e}"))?;
        let mut in_process = Timings::default();
        for _ in 0..args.runs {
            let request: ReplayRequest = serde_json::from_value(request.clone()).map_err(|e| e.to_string())?;
            let started = Instant::now();
            plan(&store, &sources, request, Role::Admin, &SourceScope::All, unix_now_ms())
                .await
                .map_err(|e| format!("plan: {e}"))?;
            in_process.push(started.elapsed());
        }
        let mut selection = Selection::default();
        selection.and("source = ?", vec![SqlParam::Text("bench".into())]);
        selection.and(
            "received_at >= ? AND received_at < ?",
            vec![SqlParam::Int(filled.day.0), SqlParam::Int(filled.day.1)],
        );
        let mut where_sql = "(source = ?) AND (received_at >= ? AND received_at < ?)".to_string();
        let mut params = vec![SqlParam::Text("bench".into()), SqlParam::Int(filled.day.0), SqlParam::Int(filled.day.1)];
        if let Some(f) = filter {
            let (sql, filter_params) = hookwarden::replay::filter::parse(f).map_err(|e| e.to_string())?.to_sql(1);
            let converted: Vec<SqlParam> = filter_params.into_iter().map(to_store_param).collect();
            selection.and(&numbered_to_marks(&sql), converted.clone());
            where_sql.push_str(&format!(" AND ({})", numbered_to_marks(&sql)));
            params.extend(converted);
        }
        let mut counts_sql = Timings::default();
        for _ in 0..args.runs {
            let started = Instant::now();
            store.outcome_counts(&selection).await.map_err(|e| e.to_string())?;
            counts_sql.push(started.elapsed());
        }
        let mut eligible = selection.clone();
        eligible.and("outcome IN (?)", vec![SqlParam::Text("unknown".into())]);
        let mut sample_sql = Timings::default();
        for _ in 0..args.runs {
            let started = Instant::now();
            store.sample_events(&eligible, 5).await.map_err(|e| e.to_string())?;
            sample_sql.push(started.elapsed());
        }
        store.close().await;
        let numbered = |sql: &str| {
            let mut n = 0;
            sql.chars()
                .map(|c| {
                    if c == '?' {
                        n += 1;
                        format!("${n}")
                    } else {
                        c.to_string()
                    }
                })
                .collect::<String>()
        };
        let counts_text = numbered(&format!("SELECT outcome, COUNT(*) FROM events WHERE {where_sql} GROUP BY outcome"));
        let mut plan_lines = query_plan(args.db, db_url, &counts_text, &params).await;
        let mut sample_params = params.clone();
        sample_params.push(SqlParam::Text("unknown".into()));
        let sample_text = numbered(&format!(
            "SELECT id, source, dedup_key, event_type, received_at, outcome FROM events WHERE {where_sql} \
             AND (outcome IN (?)) ORDER BY id LIMIT 5"
        ));
        plan_lines.push("-- sample:".into());
        plan_lines.extend(query_plan(args.db, db_url, &sample_text, &sample_params).await);
        variants.push(DryVariant {
            label,
            filter,
            http,
            in_process,
            counts_sql,
            sample_sql,
            answer,
            mismatch,
            query_plan: plan_lines,
        });
    }
    // Both HTTP loops as one window: their ticks summed, over their summed wall time.
    let merged = |snaps: &mut Vec<CpuSnapshot>| -> CpuSnapshot {
        let mut out = snaps.remove(0);
        for s in snaps.drain(..) {
            out.gateway += s.gateway;
            out.generator += s.generator;
            out.machine = (out.machine.0 + s.machine.0, out.machine.1 + s.machine.1, out.machine.2 + s.machine.2);
            for (tid, (comm, t)) in s.threads {
                out.threads.entry(tid).or_insert((comm, 0)).1 += t;
            }
            for (pid, (pg, t)) in s.others {
                out.others.entry(pid).or_insert((pg, 0)).1 += t;
            }
        }
        out
    };
    let cpu = cpu_share(&merged(&mut cpu_before), &merged(&mut cpu_after), http_secs);
    Ok(DryReport { events: args.events, variants, cpu })
}

// ---- (b) the executor ----

struct ExecReport {
    eligible: i64,
    rate: f64,
    create_ms: f64,
    total_s: f64,
    items_per_s: f64,
    /// First to last replayed post at the sink.
    send_window_s: f64,
    /// Last replayed post to `completed` seen.
    tail_ms: f64,
    counts: Value,
    state: String,
    replayed_posts: u64,
    distinct_exec_ids: usize,
    /// Replay attempts in the database afterwards.
    replay_attempts: i64,
    cpu: CpuShare,
}

async fn exec_run(args: &Args, gw: &Gateway, sink: &Sink, db_url: &str, filled: &Filled) -> Result<ExecReport, String> {
    let request = json!({
        "source": "exec",
        "since": hookwarden::http::format_ms(filled.hour.0),
        "until": hookwarden::http::format_ms(filled.hour.1),
        "dry_run": false,
        "reason": "replay_load bench",
        "rate": args.rate,
        "limit": args.exec_events,
    });
    let replayed_before = sink.replayed.load(Ordering::Relaxed);
    *sink.window.lock().expect("sink lock") = None;
    let before = cpu_snapshot(gw.pid);
    let started = Instant::now();
    let (status, answer, create) = post_replay(gw, &request).await?;
    if status != StatusCode::ACCEPTED {
        return Err(format!("live replay answered {status}: {answer}"));
    }
    let id = answer["id"].as_str().ok_or_else(|| format!("no `id` in {answer}"))?.to_string();
    let eligible = answer["eligible"].as_i64().unwrap_or(-1);
    let limit = Duration::from_secs_f64((args.exec_events as f64 / 100.0).max(60.0));
    let (state, job) = loop {
        let response = gw
            .client
            .get(format!("{}/v1/replays/{id}", gw.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .map_err(|e| format!("GET /v1/replays/{id}: {e}"))?;
        let job: Value = response.json().await.map_err(|e| format!("GET /v1/replays/{id}: {e}"))?;
        let state = job["state"].as_str().unwrap_or("?").to_string();
        if state != "running" {
            break (state, job);
        }
        if started.elapsed() > limit {
            return Err(format!("replay {id} still running after {limit:?}: {job}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let total = started.elapsed();
    let after = cpu_snapshot(gw.pid);
    let done_at = Instant::now();
    let window = *sink.window.lock().expect("sink lock");
    let exec_ids = {
        let seen = sink.seen.lock().expect("sink lock");
        seen.len()
    };
    let replay_attempts = count_sql(args.db, db_url, "SELECT COUNT(*) FROM attempts WHERE kind = 'replay'").await?;
    Ok(ExecReport {
        eligible,
        rate: args.rate,
        create_ms: create.as_secs_f64() * 1000.0,
        total_s: total.as_secs_f64(),
        items_per_s: eligible as f64 / total.as_secs_f64(),
        send_window_s: window.map_or(0.0, |(a, b)| (b - a).as_secs_f64()),
        tail_ms: window.map_or(0.0, |(_, b)| done_at.saturating_duration_since(b).as_secs_f64() * 1000.0),
        counts: job["counts"].clone(),
        state,
        replayed_posts: sink.replayed.load(Ordering::Relaxed) - replayed_before,
        distinct_exec_ids: exec_ids,
        replay_attempts,
        cpu: cpu_share(&before, &after, total.as_secs_f64()),
    })
}

// ---- --store-only: the executor's per-item writes alone ----

/// (items/s one transaction per item with 32 tasks, items/s 500 per transaction).
async fn store_only(args: &Args, db_url: &str, filled: &Filled) -> Result<(f64, f64), String> {
    let store = Store::connect(db_url).await.map_err(|e| format!("Store::connect: {e}"))?;
    let mut ids = Vec::with_capacity(args.exec_events);
    let mut before = None;
    loop {
        let page = store
            .list_events(&EventQuery {
                source: Some("exec".into()),
                since: Some(filled.hour.0),
                until: Some(filled.hour.1),
                before: before.clone(),
                limit: 1000,
                ..EventQuery::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        ids.extend(page.into_iter().map(|e| e.id));
    }
    let record = |id: &EventId| AttemptRecord {
        event_id: id.clone(),
        gateway: "bench".into(),
        kind: AttemptKind::Replay,
        replay_id: Some("rpl_bench".into()),
        started_at: unix_now_ms(),
        latency_ms: 1,
        status_code: Some(200),
        error: None,
        response_excerpt: Some(String::new()),
        completion: Completion::Replayed { delivered_at: Some(unix_now_ms()) },
        confirm_without_receipt: None,
    };
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, ids, next) = (store.clone(), ids.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(id) = ids.get(i) else { break };
                    store.check_before_send(id).await.map_err(|e| e.to_string())?;
                    store.complete_attempts(&[record(id)]).await.map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let single = ids.len() as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for chunk in ids.chunks(500) {
        let records: Vec<AttemptRecord> = chunk.iter().map(record).collect();
        store.complete_attempts(&records).await.map_err(|e| e.to_string())?;
    }
    let grouped = ids.len() as f64 / started.elapsed().as_secs_f64();
    store.close().await;
    let recorded = count_sql(args.db, db_url, "SELECT COUNT(*) FROM attempts WHERE kind = 'replay'").await?;
    if recorded != 2 * ids.len() as i64 || ids.is_empty() {
        return Err(format!("store-only: {recorded} attempts recorded for 2 × {} items", ids.len()));
    }
    Ok((single, grouped))
}

// ---- the run ----

struct Report {
    db: Db,
    filled: Filled,
    dry: Option<DryReport>,
    exec: Option<ExecReport>,
    /// Posts the sink got that were not replays (the dispatcher should have had nothing to do).
    dispatcher_posts: u64,
}

/// `None`: a `--store-only` run that printed its own report and passed its check.
async fn bench(args: &Args) -> Result<Option<Report>, String> {
    common::in_database(&args.tmpdir, "hookwarden-replay-bench", args.db, &args.pg_url, async |_, db_url, cleanup| {
        run(args, db_url, cleanup).await
    })
    .await
}

async fn run(args: &Args, db_url: &str, cleanup: &mut Cleanup) -> Result<Option<Report>, String> {
    eprintln!(
        "replay_load: storing {} + {} events ({})…",
        if args.dry { args.events } else { 0 },
        if args.exec { args.exec_events } else { 0 },
        args.db.name()
    );
    let filled = fill(args, db_url).await?;
    eprintln!("replay_load: stored in {:.1} s, settled in {:.1} s", filled.insert_s, filled.settle_s);
    if args.store_only {
        let (single, grouped) = store_only(args, db_url, &filled).await?;
        println!(
            "hookwarden replay_load --store-only: db={} items={}: check_before_send + complete_attempts(1 record) \
             × 32 tasks {single:.0} items/s; complete_attempts(500 records) {grouped:.0} items/s",
            args.db.name(),
            args.exec_events
        );
        return Ok(None);
    }
    let (sink, sink_addr) = common::start_sink().await?;
    let gw = start_gateway(db_url, sink_addr, cleanup).await?;
    let dry = if args.dry {
        eprintln!("replay_load: dry runs…");
        Some(dry_runs(args, &gw, db_url, &filled).await?)
    } else {
        None
    };
    let exec = if args.exec {
        eprintln!("replay_load: live replay of {} events…", args.exec_events);
        Some(exec_run(args, &gw, &sink, db_url, &filled).await?)
    } else {
        None
    };
    let dispatcher_posts = sink.posts.load(Ordering::Relaxed) - sink.replayed.load(Ordering::Relaxed);
    Ok(Some(Report { db: args.db, filled, dry, exec, dispatcher_posts }))
}

fn cpu_line(cpu: &CpuShare) -> String {
    format!(
        "gateway {:.0}% [{}], bench {:.0}%, postgres {:.0}%, others {:.0}%; machine busy {:.0}%, iowait {:.1}%",
        cpu.gateway,
        common::threads_text(&cpu.threads),
        cpu.generator,
        cpu.postgres,
        cpu.others,
        cpu.machine_busy,
        cpu.machine_iowait
    )
}

fn print_report(args: &Args, r: &Report) {
    let cores = common::cores();
    let mode = if args.smoke { "smoke" } else { "bench" };
    println!("hookwarden replay_load ({mode}): db={} cores={cores} tmpdir={}", r.db.name(), args.tmpdir.display());
    println!("  fill            insert_events {:.1} s, settling SQL {:.1} s", r.filled.insert_s, r.filled.settle_s);
    if let Some(d) = &r.dry {
        println!("  (a) dry run over {} events, {} runs each; CPU % of one core:", d.events, args.runs);
        for v in &d.variants {
            println!(
                "    {:<16} HTTP          {}{}",
                v.label,
                v.http.show(),
                v.filter.map(|f| format!("   [{f}]")).unwrap_or_default()
            );
            println!("    {:<16} plan() in-proc {}", "", v.in_process.show());
            println!("    {:<16} counts SQL    {}", "", v.counts_sql.show());
            println!("    {:<16} sample SQL    {}", "", v.sample_sql.show());
            println!(
                "    {:<16} answer        counts {} eligible_in_scope {} {}",
                "",
                v.answer["counts"],
                v.answer["eligible_in_scope"],
                v.mismatch.as_deref().map_or("(as stored)".to_string(), |m| format!("MISMATCH: {m}"))
            );
            println!("    {:<16} query plan    {}", "", v.query_plan.join(" | "));
        }
        println!("    CPU during the HTTP dry runs: {}", cpu_line(&d.cpu));
    }
    if let Some(e) = &r.exec {
        println!(
            "  (b) live replay of {} items at rate {}: {} in {:.2} s = {:.0} items/s (create {:.0} ms, sink first→last {:.2} s, last send→completed seen {:.0} ms)",
            e.eligible, e.rate, e.state, e.total_s, e.items_per_s, e.create_ms, e.send_window_s, e.tail_ms
        );
        println!(
            "    counts {}; sink got {} replayed posts, {} distinct webhook-ids; {} replay attempts recorded",
            e.counts, e.replayed_posts, e.distinct_exec_ids, e.replay_attempts
        );
        println!("    CPU: {}", cpu_line(&e.cpu));
    }
    println!("  dispatcher      {} non-replay posts reached the sink (expected 0)", r.dispatcher_posts);
    if args.json {
        let line = json!({
            "bench": "replay_load",
            "mode": mode,
            "db": r.db.name(),
            "cores": cores,
            "fill_insert_s": r.filled.insert_s,
            "fill_settle_s": r.filled.settle_s,
            "dry": r.dry.as_ref().map(|d| json!({
                "events": d.events,
                "variants": d.variants.iter().map(|v| json!({
                    "label": v.label,
                    "filter": v.filter,
                    "http": v.http.json(),
                    "plan_in_process": v.in_process.json(),
                    "counts_sql": v.counts_sql.json(),
                    "sample_sql": v.sample_sql.json(),
                    "counts": v.answer["counts"],
                    "mismatch": v.mismatch,
                    "query_plan": v.query_plan,
                })).collect::<Vec<_>>(),
                "gateway_cpu_pct": d.cpu.gateway,
            })),
            "exec": r.exec.as_ref().map(|e| json!({
                "eligible": e.eligible,
                "rate": e.rate,
                "state": e.state,
                "total_s": e.total_s,
                "items_per_s": e.items_per_s,
                "create_ms": e.create_ms,
                "send_window_s": e.send_window_s,
                "counts": e.counts,
                "replayed_posts": e.replayed_posts,
                "gateway_cpu_pct": e.cpu.gateway,
                "bench_cpu_pct": e.cpu.generator,
                "machine_busy_pct": e.cpu.machine_busy,
                "gateway_threads": common::threads_json(&e.cpu.threads),
            })),
            "dispatcher_posts": r.dispatcher_posts,
        });
        println!("{line}");
    }
}

fn failures(args: &Args, r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(d) = &r.dry {
        for v in &d.variants {
            if let Some(m) = &v.mismatch {
                out.push(format!("dry run `{}`: {m}", v.label));
            }
        }
    }
    if let Some(e) = &r.exec {
        let succeeded = e.counts["succeeded"].as_i64().unwrap_or(-1);
        if e.state != "completed" {
            out.push(format!("the live replay ended `{}`, not completed", e.state));
        }
        if e.eligible != args.exec_events as i64 || succeeded != e.eligible {
            out.push(format!(
                "the live replay had {} eligible and {succeeded} succeeded of {}",
                e.eligible, args.exec_events
            ));
        }
        if e.replay_attempts != args.exec_events as i64 {
            out.push(format!("{} replay attempts recorded for {} items", e.replay_attempts, args.exec_events));
        }
        if e.replayed_posts != args.exec_events as u64 {
            out.push(format!("the sink got {} replayed posts for {} items", e.replayed_posts, args.exec_events));
        }
    }
    if r.dispatcher_posts > 0 {
        out.push(format!("{} deliveries by the dispatcher: the settled state did not hold", r.dispatcher_posts));
    }
    out
}

fn main() -> ExitCode {
    common::run_main("replay_load", USAGE, parse_args(), |args| async move {
        let Some(report) = bench(&args).await? else {
            return Ok(Vec::new());
        };
        print_report(&args, &report);
        Ok(failures(&args, &report))
    })
}
