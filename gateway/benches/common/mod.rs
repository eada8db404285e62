//! What the load benches share: arguments, the sink, /proc sampling, the gateway process, the
//! temp dir and database, and report formatting. Compiled into each bench as `mod common;`.

// Each bench uses only part of this module (ingest_load has no direct SQL, for instance).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::HOST;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sqlx::Connection;

/// The bench target's name (`ingest_load`, …), the prefix of its messages.
pub const BENCH: &str = env!("CARGO_CRATE_NAME");
pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

// ---- arguments ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    pub fn name(self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
        }
    }

    /// The value of `--db`.
    pub fn parse(text: &str) -> Result<Db, String> {
        match text {
            "sqlite" => Ok(Db::Sqlite),
            "postgres" | "pg" => Ok(Db::Postgres),
            other => Err(format!("--db {other}: use sqlite or postgres")),
        }
    }
}

/// `--pg-url`'s default: `HOOKWARDEN_BENCH_PG_URL`, else a local server.
pub fn default_pg_url() -> String {
    std::env::var("HOOKWARDEN_BENCH_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.into())
}

/// `--name=value` as (name, Some(value)); anything else as (arg, None).
pub fn split_flag(arg: &str) -> (String, Option<String>) {
    match arg.split_once('=') {
        Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
        _ => (arg.to_string(), None),
    }
}

/// A flag's value: the inline `=value`, else the next argument.
pub fn flag_value(
    inline: &Option<String>,
    raw: &mut impl Iterator<Item = String>,
    what: &str,
) -> Result<String, String> {
    inline.clone().or_else(|| raw.next()).ok_or_else(|| format!("{what} needs a value"))
}

pub fn positive(text: String, what: &str) -> Result<usize, String> {
    text.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| format!("{what}: a positive integer"))
}

pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

pub fn unix_now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

// ---- the sink (every source's forward_to) ----

/// Counts what the gateway delivers; each bench reads the counters it cares about.
#[derive(Default)]
pub struct Sink {
    pub posts: AtomicU64,
    /// Distinct `webhook-id`s seen.
    pub distinct: AtomicU64,
    /// Posts that carried `hookwarden-replay-id`.
    pub replayed: AtomicU64,
    pub seen: Mutex<HashSet<Vec<u8>>>,
    /// First and last replayed post.
    pub window: Mutex<Option<(Instant, Instant)>>,
}

async fn sink_handler(State(sink): State<Arc<Sink>>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    sink.posts.fetch_add(1, Ordering::Relaxed);
    if headers.contains_key("hookwarden-replay-id") {
        sink.replayed.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut window = sink.window.lock().expect("sink lock");
        *window = Some(window.map_or((now, now), |(first, _)| (first, now)));
    }
    if let Some(id) = headers.get("webhook-id") {
        let fresh = sink.seen.lock().expect("sink lock").insert(id.as_bytes().to_vec());
        if fresh {
            sink.distinct.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}

/// An axum server answering 200 to every POST, on a free loopback port.
pub async fn start_sink() -> Result<(Arc<Sink>, SocketAddr), String> {
    let sink = Arc::new(Sink::default());
    // A listen queue as long as the gateway's (128, the default, overflows when the gateway
    // opens a few hundred connections at once).
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| format!("sink socket: {e}"))?;
    socket.bind("127.0.0.1:0".parse().expect("an address")).map_err(|e| format!("sink bind: {e}"))?;
    let listener = socket.listen(1024).map_err(|e| format!("sink listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let app = axum::Router::new().fallback(axum::routing::post(sink_handler)).with_state(sink.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((sink, addr))
}

// ---- /proc sampling ----

pub fn clock_ticks() -> f64 {
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
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // After the comm: [0] state (field 3) … [11] utime (field 14), [12] stime (field 15).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

pub fn process_ticks(pid: u32) -> u64 {
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

/// Ticks of every other process: pid → (is a PostgreSQL server, ticks).
fn other_ticks(skip: &[u32]) -> HashMap<u32, (bool, u64)> {
    let mut out = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if !skip.contains(&pid)
                && let Some((comm, ticks)) = read_stat(&entry.path().join("stat"))
            {
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
        let d = t1.saturating_sub(before.get(pid).map_or(0, |(_, t)| *t));
        if *is_pg {
            pg += d;
        } else {
            rest += d;
        }
    }
    (pg, rest)
}

/// Machine-wide (busy, iowait, total) ticks from /proc/stat.
pub fn machine_ticks() -> (u64, u64, u64) {
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
pub fn vm_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok())
}

pub struct CpuSnapshot {
    pub gateway: u64,
    pub generator: u64,
    pub machine: (u64, u64, u64),
    pub threads: HashMap<String, (String, u64)>,
    pub others: HashMap<u32, (bool, u64)>,
}

pub fn cpu_snapshot(gateway: u32) -> CpuSnapshot {
    let me = std::process::id();
    CpuSnapshot {
        gateway: process_ticks(gateway),
        generator: process_ticks(me),
        machine: machine_ticks(),
        threads: thread_ticks(gateway),
        others: other_ticks(&[gateway, me]),
    }
}

/// CPU over a window, in % of one core (machine figures in % of all cores).
pub struct CpuShare {
    pub gateway: f64,
    pub generator: f64,
    pub postgres: f64,
    pub others: f64,
    pub machine_busy: f64,
    pub machine_iowait: f64,
    /// Gateway threads grouped by name.
    pub threads: Vec<(String, f64)>,
}

pub fn cpu_share(a: &CpuSnapshot, b: &CpuSnapshot, secs: f64) -> CpuShare {
    let ticks = clock_ticks();
    let secs = secs.max(1e-9);
    let pct = |t: u64| t as f64 / ticks / secs * 100.0;
    let (pg, rest) = other_delta(&a.others, &b.others);
    let total = b.machine.2.saturating_sub(a.machine.2).max(1) as f64;
    let mut by_comm: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, (comm, t1)) in &b.threads {
        let t0 = a.threads.get(tid).map_or(0, |(_, t)| *t);
        *by_comm.entry(comm.clone()).or_default() += t1.saturating_sub(t0);
    }
    let mut threads: Vec<(String, f64)> =
        by_comm.into_iter().map(|(c, t)| (c, pct(t))).filter(|(_, p)| *p >= 0.5).collect();
    threads.sort_by(|x, y| y.1.total_cmp(&x.1));
    CpuShare {
        gateway: pct(b.gateway.saturating_sub(a.gateway)),
        generator: pct(b.generator.saturating_sub(a.generator)),
        postgres: pct(pg),
        others: pct(rest),
        machine_busy: b.machine.0.saturating_sub(a.machine.0) as f64 / total * 100.0,
        machine_iowait: b.machine.1.saturating_sub(a.machine.1) as f64 / total * 100.0,
        threads,
    }
}

// ---- the gateway process, temp dir and database ----

/// Kills the gateway (if still running) and removes the temp dir, whatever happened.
pub struct Cleanup {
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl Cleanup {
    /// SIGTERM, then waits for the drain; returns how long it took (`None`: killed, or none running).
    pub fn stop_gateway(&mut self) -> Option<Duration> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        while started.elapsed() < Duration::from_secs(40) {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{BENCH}: the gateway did not stop on SIGTERM; killing it");
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

/// Runs `run(tag, database URL, cleanup)` with a temp dir `{tmpdir}/{prefix}-{pid}-{tag}` and a
/// database of its own (a SQLite file there, or a new PostgreSQL database), then stops the
/// gateway and drops that database whatever `run` returned.
pub async fn in_database<T>(
    tmpdir: &Path,
    prefix: &str,
    db: Db,
    pg_url: &str,
    run: impl AsyncFnOnce(&str, &str, &mut Cleanup) -> Result<T, String>,
) -> Result<T, String> {
    hookwarden::tls::install_crypto_provider();
    let tag = format!("{:08x}", rand::random::<u32>());
    let (mut cleanup, db_url, pg_db) = setup(tmpdir, prefix, &tag, db, pg_url).await?;
    let result = run(&tag, &db_url, &mut cleanup).await;
    teardown(&mut cleanup, pg_url, pg_db).await;
    result
}

/// A gateway config: `[server]` on `port`, `[database]`, an `[admin]` token if given, then
/// `sources` (see [`source_toml`]).
pub fn gateway_config(port: u16, db_url: &str, admin_token: Option<&str>, sources: &[String]) -> String {
    let admin = admin_token.map(|t| format!("\n[admin]\ntoken = \"{t}\"\n")).unwrap_or_default();
    format!("[server]\nlisten = \"127.0.0.1:{port}\"\n\n[database]\nurl = \"{db_url}\"\n{admin}{}", sources.concat())
}

/// One `[[sources]]` table signing with [`SIGNING_SECRET`]: `verify` is a TOML inline table,
/// `extra` further lines of the table.
pub fn source_toml(name: &str, verify: &str, forward_to: &str, extra: &str) -> String {
    format!(
        "\n[[sources]]\nname = \"{name}\"\nverify = {verify}\nforward_to = \"{forward_to}\"\n\
         signing_secret = \"{SIGNING_SECRET}\"\n{extra}"
    )
}

/// A run's temp dir `{tmpdir}/{prefix}-{pid}-{tag}` and its database: (cleanup, database URL,
/// name of the PostgreSQL database to drop in `teardown`).
async fn setup(
    tmpdir: &Path,
    prefix: &str,
    tag: &str,
    db: Db,
    pg_url: &str,
) -> Result<(Cleanup, String, Option<String>), String> {
    let dir = tmpdir.join(format!("{prefix}-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let cleanup = Cleanup { dir, child: None };
    match db {
        Db::Sqlite => {
            let url = format!("sqlite://{}", cleanup.dir.join("bench.db").display());
            Ok((cleanup, url, None))
        }
        Db::Postgres => {
            let (name, url) = create_pg_db(pg_url).await?;
            Ok((cleanup, url, Some(name)))
        }
    }
}

/// Stops the gateway, then drops the run's PostgreSQL database (a failure is only reported).
async fn teardown(cleanup: &mut Cleanup, pg_url: &str, pg_db: Option<String>) {
    cleanup.stop_gateway();
    if let Some(name) = pg_db
        && let Err(err) = drop_pg_db(pg_url, &name).await
    {
        eprintln!("{BENCH}: {err}");
    }
}

pub fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("free port: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The bench's HTTP/1 loopback client; `idle_per_host` keeps one pooled connection per worker.
pub fn http_client(idle_per_host: Option<usize>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder().http1_only().no_proxy().tcp_nodelay(true);
    if let Some(n) = idle_per_host {
        builder = builder.pool_max_idle_per_host(n);
    }
    builder.timeout(timeout).build().map_err(|e| format!("client: {e}"))
}

/// One keep-alive HTTP/1 connection of a load generator, on hyper's connection API: per
/// request it costs about a third less CPU than a pooled reqwest client, and the generator
/// shares the 2 cores with the gateway it measures.
pub struct RawConnection {
    /// `host:port`, also the `Host` header.
    pub addr: Arc<str>,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl RawConnection {
    /// Connects on the first request (and again after a failed one).
    pub fn new(addr: Arc<str>) -> Self {
        Self { addr, sender: None }
    }

    /// A POST of `body` to `path` with `headers`, answered with (status, whole body).
    pub async fn post<'a>(
        &mut self,
        path: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        body: Bytes,
    ) -> Result<(u16, Bytes), String> {
        let mut request = Request::post(path).header(HOST, &*self.addr);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
        let answered = self.send(request).await;
        if answered.is_err() {
            self.sender = None;
        }
        answered
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
        if self.sender.is_none() {
            let stream = tokio::net::TcpStream::connect(&*self.addr).await.map_err(|e| format!("connect: {e}"))?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        // Read the answer to the end so the connection can carry the next request.
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    }
}

/// A started gateway: its pid, `http://127.0.0.1:{port}`, and the file its stderr goes to.
pub struct Spawned {
    pub pid: u32,
    pub base: String,
    pub log_path: PathBuf,
}

/// Writes `config` to the temp dir, starts `hookwarden serve` on it without the variables in
/// `env_remove`, and waits (up to 60 s) until `/healthz` answers. The gateway is the binary
/// built with the bench, or `$HOOKWARDEN_BIN` when set (to compare two builds with one bench,
/// or keep a build that a shared target directory would overwrite).
pub async fn start_gateway(
    cleanup: &mut Cleanup,
    port: u16,
    config: &str,
    env_remove: &[&str],
    client: &reqwest::Client,
) -> Result<Spawned, String> {
    let config_path = cleanup.dir.join("hookwarden.toml");
    let log_path = cleanup.dir.join("gateway.log");
    std::fs::write(&config_path, config).map_err(|e| format!("write config: {e}"))?;
    let log = std::fs::File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
    let binary = std::env::var_os("HOOKWARDEN_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_hookwarden").into());
    let mut command = Command::new(binary);
    command.args(["serve", "--config"]).arg(&config_path);
    for name in env_remove {
        command.env_remove(name);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn gateway: {e}"))?;
    let pid = child.id();
    cleanup.child = Some(child);
    let base = format!("http://127.0.0.1:{port}");
    let waited = Instant::now();
    loop {
        if let Some(Ok(Some(status))) = cleanup.child.as_mut().map(|c| c.try_wait()) {
            return Err(format!("the gateway exited ({status}) before it was up:\n{}", log_tail(&log_path)));
        }
        if client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if waited.elapsed() > Duration::from_secs(60) {
            return Err(format!("the gateway was not up after 60s:\n{}", log_tail(&log_path)));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Ok(Spawned { pid, base, log_path })
}

/// Creates a fresh database on the server of `base`: (its name, its URL).
pub async fn create_pg_db(base: &str) -> Result<(String, String), String> {
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

pub async fn drop_pg_db(base: &str, name: &str) -> Result<(), String> {
    let mut conn = sqlx::postgres::PgConnection::connect(base).await.map_err(|e| format!("connect {base}: {e}"))?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .map_err(|e| format!("DROP DATABASE {name}: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// Runs statements on the bench's own connection to the gateway's database (outside `Store`).
pub async fn run_sql(db: Db, url: &str, statements: &[&str]) -> Result<Vec<u64>, String> {
    let mut affected = Vec::new();
    match db {
        Db::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(|e| e.to_string())?
                .busy_timeout(Duration::from_secs(30));
            let mut conn = sqlx::sqlite::SqliteConnection::connect_with(&options).await.map_err(|e| e.to_string())?;
            for sql in statements {
                let done = sqlx::query(sqlx::AssertSqlSafe(*sql)).execute(&mut conn).await;
                affected.push(done.map_err(|e| format!("{sql}: {e}"))?.rows_affected());
            }
            let _ = conn.close().await;
        }
        Db::Postgres => {
            let mut conn = sqlx::postgres::PgConnection::connect(url).await.map_err(|e| e.to_string())?;
            for sql in statements {
                let done = sqlx::query(sqlx::AssertSqlSafe(*sql)).execute(&mut conn).await;
                affected.push(done.map_err(|e| format!("{sql}: {e}"))?.rows_affected());
            }
            let _ = conn.close().await;
        }
    }
    Ok(affected)
}

pub async fn count_sql(db: Db, url: &str, sql: &str) -> Result<i64, String> {
    match db {
        Db::Sqlite => {
            let mut conn = sqlx::sqlite::SqliteConnection::connect(url).await.map_err(|e| e.to_string())?;
            let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await;
            let _ = conn.close().await;
            n.map_err(|e| format!("{sql}: {e}"))
        }
        Db::Postgres => {
            let mut conn = sqlx::postgres::PgConnection::connect(url).await.map_err(|e| e.to_string())?;
            let n = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut conn).await;
            let _ = conn.close().await;
            n.map_err(|e| format!("{sql}: {e}"))
        }
    }
}

// ---- load workers and the report ----

/// What one load worker saw; `not_confirmed` is receipts_load's own check.
#[derive(Default)]
pub struct WorkerStats {
    pub latencies_us: Vec<u32>,
    pub accepted: u64,
    pub not_confirmed: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl WorkerStats {
    /// Adds another worker's figures; the first error seen wins.
    pub fn absorb(&mut self, s: WorkerStats) {
        self.latencies_us.extend(s.latencies_us);
        self.accepted += s.accepted;
        self.not_confirmed += s.not_confirmed;
        self.errors += s.errors;
        for (code, n) in s.statuses {
            *self.statuses.entry(code).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = s.first_error;
        }
    }
}

pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[i.min(sorted_us.len() - 1)] as f64 / 1000.0
}

/// Latency of the accepted requests, in ms.
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn from_us(mut us: Vec<u32>) -> Latency {
        us.sort_unstable();
        Latency {
            p50: percentile_ms(&us, 50.0),
            p90: percentile_ms(&us, 90.0),
            p99: percentile_ms(&us, 99.0),
            max: us.last().map_or(0.0, |m| *m as f64 / 1000.0),
        }
    }

    pub fn show(&self) -> String {
        format!("p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms", self.p50, self.p90, self.p99, self.max)
    }

    pub fn json(&self) -> Value {
        json!({ "p50": self.p50, "p90": self.p90, "p99": self.p99, "max": self.max })
    }
}

/// Non-200 answers as `429×3 503×1`, or `0`.
pub fn statuses_text(statuses: &BTreeMap<u16, u64>) -> String {
    let parts: Vec<String> = statuses.iter().map(|(c, n)| format!("{c}×{n}")).collect();
    if parts.is_empty() { "0".into() } else { parts.join(" ") }
}

pub fn statuses_json(statuses: &BTreeMap<u16, u64>) -> serde_json::Map<String, Value> {
    statuses.iter().map(|(c, n)| (c.to_string(), json!(n))).collect()
}

/// ` (first: …)` when there was an error.
pub fn first_error_text(first: &Option<String>) -> String {
    first.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
}

/// Gateway threads as `tokio-runtime-w 80%, …`.
pub fn threads_text(threads: &[(String, f64)]) -> String {
    let parts: Vec<String> = threads.iter().map(|(c, p)| format!("{c} {p:.0}%")).collect();
    parts.join(", ")
}

pub fn threads_json(threads: &[(String, f64)]) -> serde_json::Map<String, Value> {
    threads.iter().map(|(c, p)| (c.clone(), json!(p))).collect()
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Every bench's `main`: parses the arguments (exit 2 with the usage when they are wrong),
/// runs `bench` on a multi-threaded runtime and turns its outcome into the exit code: an
/// error, or any failure it lists, fails the run.
pub fn run_main<A, F, Fut>(name: &str, usage: &str, args: Result<A, String>, bench: F) -> std::process::ExitCode
where
    F: FnOnce(A) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, String>>,
{
    let args = match args {
        Ok(args) => args,
        Err(err) => {
            eprintln!("{name}: {err}\nusage: {usage}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(bench(args)) {
        Ok(failures) if failures.is_empty() => std::process::ExitCode::SUCCESS,
        Ok(failures) => {
            eprintln!("{name}: FAILED: {}", failures.join("; "));
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("{name}: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
