//! Ingest load generator: drives `POST /ingest/{source}` of the real `hookwarden` binary over
//! loopback and reports accepted events/s, latency, delivery catch-up and the gateway's peak RSS.
//!
//! `cargo bench -p hookwarden --bench ingest_load -- [--db sqlite|postgres] [--seconds N]
//!     [--connections N] [--verify none|stripe] [--json] [--tmpdir DIR] [--pg-url URL]
//!     [--body-bytes N]`
//!
//! Without `--bench` (what `cargo bench` passes), e.g. under `cargo test --benches`, it is a
//! smoke run (1 s, 8 connections, SQLite) that exits 0 only if at least one event was accepted
//! and delivered. `--tmpdir /dev/shm` puts the SQLite file on tmpfs (fsync becomes free): a
//! measurement aid, not a realistic setting.
//!
//! Pieces, all in this process except the gateway: a sink handler (axum, answers 200 to every
//! POST and counts distinct `webhook-id`s), the config and database it writes, the gateway
//! child process, and the client (reqwest, one pooled keep-alive connection per worker).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use serde_json::json;
use sqlx::Connection;

const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_bench_stripe_endpoint_secret";
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

// ---- arguments ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Db {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VerifyKind {
    None,
    Stripe,
}

#[derive(Debug, Clone)]
struct Args {
    smoke: bool,
    db: Db,
    seconds: f64,
    connections: usize,
    verify: VerifyKind,
    json: bool,
    tmpdir: PathBuf,
    pg_url: String,
    body_bytes: usize,
}

const USAGE: &str = "ingest_load [--db sqlite|postgres] [--seconds N] [--connections N] \
[--verify none|stripe] [--json] [--tmpdir DIR] [--pg-url URL] [--body-bytes N]";

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1).peekable();
    let mut smoke = true;
    let (mut db, mut seconds, mut connections) = (None, None, None);
    let mut args = Args {
        smoke: true,
        db: Db::Sqlite,
        seconds: 10.0,
        connections: 64,
        verify: VerifyKind::None,
        json: false,
        tmpdir: std::env::temp_dir(),
        pg_url: std::env::var("HOOKWARDEN_BENCH_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.into()),
        body_bytes: 600,
    };
    while let Some(arg) = raw.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline.clone().or_else(|| raw.next()).ok_or_else(|| format!("{what} needs a value"))
        };
        match name.as_str() {
            "--bench" => smoke = false,
            "--json" => args.json = true,
            "--db" => {
                db = Some(match value("--db")?.as_str() {
                    "sqlite" => Db::Sqlite,
                    "postgres" | "pg" => Db::Postgres,
                    other => return Err(format!("--db {other}: use sqlite or postgres")),
                })
            }
            "--seconds" => {
                seconds = Some(
                    value("--seconds")?
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0)
                        .ok_or("--seconds: a positive number")?,
                )
            }
            "--connections" | "-c" => {
                connections = Some(
                    value("--connections")?
                        .parse::<usize>()
                        .ok()
                        .filter(|c| *c > 0)
                        .ok_or("--connections: a positive integer")?,
                )
            }
            "--verify" => {
                args.verify = match value("--verify")?.as_str() {
                    "none" => VerifyKind::None,
                    "stripe" => VerifyKind::Stripe,
                    other => return Err(format!("--verify {other}: use none or stripe")),
                }
            }
            "--tmpdir" => args.tmpdir = PathBuf::from(value("--tmpdir")?),
            "--pg-url" => args.pg_url = value("--pg-url")?,
            "--body-bytes" => {
                args.body_bytes = value("--body-bytes")?.parse().map_err(|_| "--body-bytes: an integer")?
            }
            "--help" | "-h" => return Err(USAGE.into()),
            // cargo may pass a filter or libtest flags; they mean nothing here.
            other => eprintln!("ingest_load: ignoring argument `{other}`"),
        }
    }
    args.smoke = smoke;
    let (d_db, d_seconds, d_conns) = if smoke { (Db::Sqlite, 1.0, 8) } else { (Db::Sqlite, 10.0, 64) };
    args.db = db.unwrap_or(d_db);
    args.seconds = seconds.unwrap_or(d_seconds);
    args.connections = connections.unwrap_or(d_conns);
    Ok(args)
}

// ---- the sink (the source's forward_to) ----

#[derive(Default)]
struct Sink {
    posts: AtomicU64,
    distinct: AtomicU64,
    seen: Mutex<HashSet<Vec<u8>>>,
}

async fn sink_handler(State(sink): State<Arc<Sink>>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    sink.posts.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = headers.get("webhook-id") {
        let fresh = sink.seen.lock().expect("sink lock").insert(id.as_bytes().to_vec());
        if fresh {
            sink.distinct.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}

async fn start_sink() -> Result<(Arc<Sink>, SocketAddr), String> {
    let sink = Arc::new(Sink::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("sink bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = axum::Router::new().fallback(axum::routing::post(sink_handler)).with_state(sink.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((sink, addr))
}

// ---- /proc sampling ----

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// (comm, utime + stime in ticks) from a /proc/.../stat file.
fn read_stat(path: &Path) -> Option<(String, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the comm: [0] state (field 3) … [11] utime (field 14), [12] stime (field 15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

fn process_ticks(pid: u32) -> u64 {
    read_stat(Path::new(&format!("/proc/{pid}/stat"))).map_or(0, |(_, t)| t)
}

/// Per thread: tid → (comm, ticks).
fn thread_ticks(pid: u32) -> HashMap<String, (String, u64)> {
    let mut out = HashMap::new();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for entry in dir.flatten() {
            if let Some(stat) = read_stat(&entry.path().join("stat")) {
                out.insert(entry.file_name().to_string_lossy().into_owned(), stat);
            }
        }
    }
    out
}

/// CPU ticks of every other process, split into PostgreSQL servers and the rest.
fn other_ticks(skip: &[u32]) -> HashMap<u32, (bool, u64)> {
    let mut out = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if skip.contains(&pid) {
                continue;
            }
            if let Some((comm, ticks)) = read_stat(&entry.path().join("stat")) {
                out.insert(pid, (comm.starts_with("postgres"), ticks));
            }
        }
    }
    out
}

/// (postgres, rest) ticks spent between two `other_ticks` snapshots.
fn other_delta(before: &HashMap<u32, (bool, u64)>, after: &HashMap<u32, (bool, u64)>) -> (u64, u64) {
    let (mut pg, mut rest) = (0, 0);
    for (pid, (is_pg, t1)) in after {
        let t0 = before.get(pid).map_or(0, |(_, t)| *t);
        let d = t1.saturating_sub(t0);
        if *is_pg {
            pg += d;
        } else {
            rest += d;
        }
    }
    (pg, rest)
}

/// Machine-wide (busy, iowait, total) ticks from /proc/stat.
fn machine_ticks() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest is inside user).
    let (idle, iowait) = (get(3), get(4));
    let total: u64 = (0..8).map(get).sum();
    (total - idle - iowait, iowait, total)
}

/// A `Vm*` line of /proc/<pid>/status, in KiB.
fn vm_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok())
}

// ---- the gateway process, temp dir and database ----

/// Kills the gateway (if still running) and removes the temp dir, whatever happened.
struct Cleanup {
    dir: PathBuf,
    child: Option<Child>,
}

impl Cleanup {
    /// SIGTERM, then waits for the drain; returns how long it took.
    fn stop_gateway(&mut self) -> Option<Duration> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        while started.elapsed() < Duration::from_secs(40) {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("ingest_load: the gateway did not stop on SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn create_pg_db(base: &str) -> Result<(String, String), String> {
    let name = format!("hw_bench_{:08x}", rand::random::<u32>());
    let mut conn = sqlx::postgres::PgConnection::connect(base).await.map_err(|e| format!("connect {base}: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
    let _ = conn.close().await;
    // Same server and credentials, the new database.
    let url = match base.rsplit_once('/') {
        Some((prefix, rest)) if !prefix.ends_with('/') => {
            let query = rest.split_once('?').map(|(_, q)| format!("?{q}"));
            format!("{prefix}/{name}{}", query.unwrap_or_default())
        }
        _ => format!("{}/{name}", base.trim_end_matches('/')),
    };
    Ok((name, url))
}

async fn drop_pg_db(base: &str, name: &str) -> Result<(), String> {
    let mut conn = sqlx::postgres::PgConnection::connect(base).await.map_err(|e| format!("connect {base}: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("DROP DATABASE {name}: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

// ---- the load ----

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A Stripe-looking event of about `target` bytes with a unique id.
fn make_body(tag: &str, n: u64, target: usize) -> String {
    let head = format!(
        r#"{{"id":"evt_{tag}_{n:010}","object":"event","type":"bench.event","created":{t},"livemode":false,"data":{{"object":{{"id":"pi_{n:010}","object":"payment_intent","amount":{amount},"currency":"usd","status":"succeeded","metadata":{{"order_id":"ord_{n}"}},"description":""#,
        t = unix_now(),
        amount = 100 + n % 10_000,
    );
    let tail = r#""}}}"#;
    let pad = target.saturating_sub(head.len() + tail.len());
    let mut body = String::with_capacity(head.len() + pad + tail.len());
    body.push_str(&head);
    body.extend(std::iter::repeat_n('x', pad));
    body.push_str(tail);
    body
}

fn stripe_signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Default)]
struct WorkerStats {
    latencies_us: Vec<u32>,
    accepted: u64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    client: reqwest::Client,
    url: Arc<str>,
    stripe: bool,
    next: Arc<AtomicU64>,
    tag: Arc<str>,
    body_bytes: usize,
    deadline: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    while Instant::now() < deadline {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let body = make_body(&tag, n, body_bytes);
        let mut request = client.post(&*url).header("content-type", "application/json");
        if stripe {
            let sig = stripe_signature(STRIPE_SECRET.as_bytes(), unix_now(), body.as_bytes());
            request = request.header("stripe-signature", sig);
        }
        let started = Instant::now();
        match request.body(body).send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the answer to the end so the connection goes back to the pool.
                let read = response.bytes().await;
                let elapsed = started.elapsed();
                match read {
                    Ok(_) if status == 200 => {
                        stats.accepted += 1;
                        stats.latencies_us.push(elapsed.as_micros().min(u32::MAX as u128) as u32);
                    }
                    Ok(_) => *stats.statuses.entry(status).or_default() += 1,
                    Err(err) => {
                        stats.errors += 1;
                        stats.first_error.get_or_insert_with(|| err.to_string());
                    }
                }
            }
            Err(err) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| format!("{err:?}"));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    stats
}

/// (count, sum) of the gateway's `hookwarden_ingest_batch_size` from `/metrics`.
async fn scrape_batches(client: &reqwest::Client, base: &str) -> (u64, u64) {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else {
        return (0, 0);
    };
    let text = response.text().await.unwrap_or_default();
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (value("hookwarden_ingest_batch_size_count"), value("hookwarden_ingest_batch_size_sum"))
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[i.min(sorted_us.len() - 1)] as f64 / 1000.0
}

// ---- the run ----

struct Report {
    db: Db,
    verify: VerifyKind,
    connections: usize,
    elapsed_s: f64,
    requests: u64,
    accepted: u64,
    rate: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    delivered_during: u64,
    delivered_total: u64,
    duplicate_posts: u64,
    catch_up_ms: Option<f64>,
    peak_rss_kib: u64,
    gateway_cpu_pct: f64,
    generator_cpu_pct: f64,
    machine_busy_pct: f64,
    machine_iowait_pct: f64,
    postgres_cpu_pct: f64,
    others_cpu_pct: f64,
    threads: Vec<(String, f64)>,
    shutdown_ms: Option<f64>,
    batches: u64,
    batched: u64,
    db_bytes: Option<u64>,
}

async fn bench(args: &Args) -> Result<Report, String> {
    hookwarden::tls::install_crypto_provider();
    let tag = format!("{:08x}", rand::random::<u32>());
    let dir = args.tmpdir.join(format!("hookwarden-bench-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut cleanup = Cleanup { dir, child: None };

    let (db_url, pg_db) = match args.db {
        Db::Sqlite => (format!("sqlite://{}", cleanup.dir.join("bench.db").display()), None),
        Db::Postgres => {
            let (name, url) = create_pg_db(&args.pg_url).await?;
            (url, Some(name))
        }
    };
    let result = run_load(args, &tag, &db_url, &mut cleanup).await;
    cleanup.stop_gateway();
    if let Some(name) = pg_db
        && let Err(err) = drop_pg_db(&args.pg_url, &name).await
    {
        eprintln!("ingest_load: {err}");
    }
    result
}

async fn run_load(args: &Args, tag: &str, db_url: &str, cleanup: &mut Cleanup) -> Result<Report, String> {
    let (sink, sink_addr) = start_sink().await?;
    let port = free_port()?;
    let verify = match args.verify {
        VerifyKind::None => r#"{ kind = "none" }"#.to_string(),
        VerifyKind::Stripe => format!(r#"{{ kind = "stripe", secret = "{STRIPE_SECRET}" }}"#),
    };
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"

[database]
url = "{db_url}"

[[sources]]
name = "bench"
verify = {verify}
forward_to = "http://{sink_addr}/webhooks/bench"
signing_secret = "{SIGNING_SECRET}"
"#
    );
    let config_path = cleanup.dir.join("hookwarden.toml");
    let log_path = cleanup.dir.join("gateway.log");
    std::fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
    let log = std::fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
    let child = Command::new(env!("CARGO_BIN_EXE_hookwarden"))
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .env_remove("HOOKWARDEN_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn gateway: {e}"))?;
    let pid = child.id();
    cleanup.child = Some(child);

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.connections + 8)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("client: {e}"))?;

    // Up?
    let waited = Instant::now();
    loop {
        if let Some(Ok(Some(status))) = cleanup.child.as_mut().map(|c| c.try_wait()) {
            return Err(format!("the gateway exited ({status}) before it was up:\n{}", log_tail(&log_path)));
        }
        let ok = client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if waited.elapsed() > Duration::from_secs(60) {
            return Err(format!("the gateway was not up after 60s:\n{}", log_tail(&log_path)));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // One probe through the whole path (ingest → store → dispatcher → sink) before timing.
    let url: Arc<str> = format!("{base}/ingest/bench").into();
    let probe = make_body(&format!("{tag}probe"), 0, args.body_bytes);
    let mut request = client.post(&*url).header("content-type", "application/json");
    if args.verify == VerifyKind::Stripe {
        request = request
            .header("stripe-signature", stripe_signature(STRIPE_SECRET.as_bytes(), unix_now(), probe.as_bytes()));
    }
    let response = request.body(probe).send().await.map_err(|e| format!("probe request: {e}"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if status != StatusCode::OK {
        return Err(format!("probe answered {status}: {text}"));
    }
    let waited = Instant::now();
    while sink.distinct.load(Ordering::Relaxed) < 1 {
        if waited.elapsed() > Duration::from_secs(30) {
            return Err(format!("the probe event was not delivered within 30s:\n{}", log_tail(&log_path)));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let baseline = sink.distinct.load(Ordering::Relaxed);
    let baseline_posts = sink.posts.load(Ordering::Relaxed);

    // Peak RSS, sampled while loaded (VmHWM at the end is the authority).
    let stop_sampling = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop_sampling.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(vm_kib(pid, "VmRSS:").unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };

    let ticks = clock_ticks();
    let me = std::process::id();
    let (gw0, gen0, m0, th0, o0) =
        (process_ticks(pid), process_ticks(me), machine_ticks(), thread_ticks(pid), other_ticks(&[pid, me]));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let next = Arc::new(AtomicU64::new(1));
    let tag: Arc<str> = tag.into();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(worker(
                client.clone(),
                url.clone(),
                args.verify == VerifyKind::Stripe,
                next.clone(),
                tag.clone(),
                args.body_bytes,
                deadline,
            ))
        })
        .collect();
    let mut all = WorkerStats::default();
    for w in workers {
        let s = w.await.map_err(|e| format!("worker: {e}"))?;
        all.latencies_us.extend(s.latencies_us);
        all.accepted += s.accepted;
        all.errors += s.errors;
        for (code, n) in s.statuses {
            *all.statuses.entry(code).or_default() += n;
        }
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
    }
    let load_end = Instant::now();
    let elapsed = (load_end - started).as_secs_f64();
    let (gw1, gen1, m1, th1, o1) =
        (process_ticks(pid), process_ticks(me), machine_ticks(), thread_ticks(pid), other_ticks(&[pid, me]));
    let (pg_ticks, rest_ticks) = other_delta(&o0, &o1);
    let delivered_during = sink.distinct.load(Ordering::Relaxed) - baseline;

    // Does delivery keep pace? Wait until every accepted event reached the sink.
    let limit = Duration::from_secs_f64((args.seconds * 5.0).max(30.0));
    let catch_up_ms = loop {
        let seen = sink.distinct.load(Ordering::Relaxed) - baseline;
        if seen >= all.accepted {
            break Some(load_end.elapsed().as_secs_f64() * 1000.0);
        }
        if load_end.elapsed() > limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let delivered_total = sink.distinct.load(Ordering::Relaxed) - baseline;
    let posts = sink.posts.load(Ordering::Relaxed) - baseline_posts;
    stop_sampling.store(true, Ordering::Relaxed);
    let sampled_peak = sampler.await.unwrap_or(0);
    let peak_rss_kib = vm_kib(pid, "VmHWM:").unwrap_or(0).max(sampled_peak);
    let db_bytes = db_url.strip_prefix("sqlite://").map(|path| {
        ["", "-wal", "-shm"].iter().filter_map(|s| std::fs::metadata(format!("{path}{s}")).ok()).map(|m| m.len()).sum()
    });
    let (batches, batched) = scrape_batches(&client, &base).await;
    let shutdown = cleanup.stop_gateway();

    // CPU over the load window, as % of one core.
    let secs = elapsed.max(1e-9);
    let pct = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / ticks / secs * 100.0;
    let (mt, mi, mtot) = (m1.0.saturating_sub(m0.0), m1.1.saturating_sub(m0.1), m1.2.saturating_sub(m0.2).max(1));
    let mut by_comm: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (comm, t1)) in &th1 {
        let t0 = th0.get(tid).map_or(0, |(_, t)| *t);
        *by_comm.entry(comm.clone()).or_default() += t1.saturating_sub(t0);
    }
    let mut threads: Vec<(String, f64)> =
        by_comm.into_iter().map(|(c, t)| (c, t as f64 / ticks / secs * 100.0)).filter(|(_, p)| *p >= 0.5).collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));

    let mut lat = all.latencies_us;
    lat.sort_unstable();
    let non_ok: u64 = all.statuses.values().sum();
    Ok(Report {
        db: args.db,
        verify: args.verify,
        connections: args.connections,
        elapsed_s: elapsed,
        requests: all.accepted + non_ok + all.errors,
        accepted: all.accepted,
        rate: all.accepted as f64 / secs,
        p50: percentile_ms(&lat, 50.0),
        p90: percentile_ms(&lat, 90.0),
        p99: percentile_ms(&lat, 99.0),
        max: lat.last().map_or(0.0, |m| *m as f64 / 1000.0),
        statuses: all.statuses,
        errors: all.errors,
        first_error: all.first_error,
        delivered_during,
        delivered_total,
        duplicate_posts: posts.saturating_sub(delivered_total),
        catch_up_ms,
        peak_rss_kib,
        gateway_cpu_pct: pct(gw0, gw1),
        generator_cpu_pct: pct(gen0, gen1),
        machine_busy_pct: mt as f64 / mtot as f64 * 100.0,
        machine_iowait_pct: mi as f64 / mtot as f64 * 100.0,
        postgres_cpu_pct: pct(0, pg_ticks),
        others_cpu_pct: pct(0, rest_ticks),
        threads,
        batches,
        batched,
        shutdown_ms: shutdown.map(|d| d.as_secs_f64() * 1000.0),
        db_bytes,
    })
}

fn print_report(args: &Args, r: &Report) {
    let db = match r.db {
        Db::Sqlite => "sqlite",
        Db::Postgres => "postgres",
    };
    let verify = match r.verify {
        VerifyKind::None => "none",
        VerifyKind::Stripe => "stripe",
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mode = if args.smoke { "smoke" } else { "bench" };
    println!(
        "hookwarden ingest_load ({mode}): db={db} verify={verify} connections={} body≈{}B tmpdir={}",
        r.connections,
        args.body_bytes,
        args.tmpdir.display()
    );
    println!("  duration        {:.2} s, {} requests", r.elapsed_s, r.requests);
    println!("  accepted        {} ({:.0} events/s)", r.accepted, r.rate);
    println!("  latency (200)   p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms", r.p50, r.p90, r.p99, r.max);
    let statuses: Vec<String> = r.statuses.iter().map(|(c, n)| format!("{c}×{n}")).collect();
    println!(
        "  non-200         {}   transport errors {}{}",
        if statuses.is_empty() { "0".into() } else { statuses.join(" ") },
        r.errors,
        r.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    println!(
        "  delivered       {} during load ({:.0}%), {} in all, {} repeated posts",
        r.delivered_during,
        if r.accepted > 0 { r.delivered_during as f64 / r.accepted as f64 * 100.0 } else { 0.0 },
        r.delivered_total,
        r.duplicate_posts
    );
    match r.catch_up_ms {
        Some(ms) => println!("  caught up       {ms:.0} ms after the load stopped"),
        None => println!("  caught up       NO: {}/{} delivered when the wait ended", r.delivered_total, r.accepted),
    }
    println!(
        "  gateway         peak RSS {:.1} MiB, CPU {:.0}% of one core; shutdown {}",
        r.peak_rss_kib as f64 / 1024.0,
        r.gateway_cpu_pct,
        r.shutdown_ms.map_or("killed".into(), |ms| format!("{ms:.0} ms"))
    );
    if r.batches > 0 {
        println!(
            "  ingest commits  {} group commits, {:.1} events each, {:.0} commits/s",
            r.batches,
            r.batched as f64 / r.batches as f64,
            r.batches as f64 / r.elapsed_s
        );
    }
    let threads: Vec<String> = r.threads.iter().map(|(c, p)| format!("{c} {p:.0}%")).collect();
    println!("  gateway threads {}", threads.join(", "));
    println!(
        "  generator+sink  CPU {:.0}%; machine busy {:.0}% of {cores} cores, iowait {:.1}%",
        r.generator_cpu_pct, r.machine_busy_pct, r.machine_iowait_pct
    );
    println!(
        "  other processes postgres {:.0}%, everything else {:.0}% (of one core)",
        r.postgres_cpu_pct, r.others_cpu_pct
    );
    if let Some(bytes) = r.db_bytes {
        println!("  sqlite files    {:.1} MiB", bytes as f64 / 1048576.0);
    }
    if args.json {
        let line = json!({
            "mode": mode,
            "db": db,
            "verify": verify,
            "connections": r.connections,
            "body_bytes": args.body_bytes,
            "duration_s": r.elapsed_s,
            "requests": r.requests,
            "accepted": r.accepted,
            "accepted_per_s": r.rate,
            "latency_ms": { "p50": r.p50, "p90": r.p90, "p99": r.p99, "max": r.max },
            "non_200": r.statuses.iter().map(|(c, n)| (c.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "errors": r.errors,
            "delivered_during_load": r.delivered_during,
            "delivered_total": r.delivered_total,
            "repeated_posts": r.duplicate_posts,
            "catch_up_ms": r.catch_up_ms,
            "gateway_peak_rss_kib": r.peak_rss_kib,
            "gateway_cpu_pct": r.gateway_cpu_pct,
            "generator_cpu_pct": r.generator_cpu_pct,
            "machine_busy_pct": r.machine_busy_pct,
            "machine_iowait_pct": r.machine_iowait_pct,
            "postgres_cpu_pct": r.postgres_cpu_pct,
            "others_cpu_pct": r.others_cpu_pct,
            "cores": cores,
            "shutdown_ms": r.shutdown_ms,
            "ingest_commits": r.batches,
            "ingest_committed_events": r.batched,
        });
        println!("{line}");
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("ingest_load: {err}\nusage: {USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(bench(&args)) {
        Ok(report) => {
            print_report(&args, &report);
            if report.accepted > 0 && report.delivered_total > 0 {
                ExitCode::SUCCESS
            } else {
                eprintln!("ingest_load: FAILED: nothing was accepted and delivered");
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("ingest_load: {err}");
            ExitCode::FAILURE
        }
    }
}
