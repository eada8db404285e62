//! The console's server-side queries on a large store: the overview (the gap view over 24 h
//! in 15-minute buckets, per source, with the failed ones by error code) and the events list
//! (the newest page; the newest unknown ones of the last 24 h; a page deep in the log by
//! its cursor), each timed on the store functions the pages call; and, off the pages' path,
//! the storage figures the overview takes in the background, and the replays list.
//!
//! `cargo bench -p hookwarden --bench console_queries -- --bench [--db sqlite|postgres]
//!     [--events N] [--runs N] [--pg-url URL] [--no-vacuum]`
//!
//! The store is filled with one set-based statement: `--events` events (default 1,000,000)
//! over the last 24 hours, two sources, 90% confirmed, ~8% unknown, 2% failed with a code
//! (the triggers of migration 0012 fill the overview's counts as it goes). Then `ANALYZE`;
//! on PostgreSQL `VACUUM ANALYZE`, as autovacuum does after a bulk insert: until a vacuum
//! marks the new pages all-visible, an index-only scan (the overview's overdue count, the
//! failed ones by code) reads the table's pages too. `--no-vacuum` measures that moment.
//! Without `--bench` (under `cargo test --benches`) it is a smoke run on 20,000 events.

mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{Db, unix_now_ms};
use hookwarden::domain::{EventId, Outcome};
use hookwarden::store::{EventQuery, Store, SummaryQuery};
use sqlx::Connection;

const DAY_MS: i64 = 86_400_000;
const BUCKET_MS: i64 = 15 * 60_000;

struct Args {
    smoke: bool,
    db: Db,
    events: i64,
    runs: usize,
    pg_url: String,
    vacuum: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1).peekable();
    let mut args =
        Args { smoke: true, db: Db::Sqlite, events: 0, runs: 20, pg_url: common::default_pg_url(), vacuum: true };
    let mut events = None;
    while let Some(arg) = raw.next() {
        let (name, inline) = common::split_flag(&arg);
        let mut value = |what: &str| common::flag_value(&inline, &mut raw, what);
        match name.as_str() {
            "--bench" => args.smoke = false,
            "--db" => args.db = Db::parse(&value("--db")?)?,
            "--events" => events = Some(common::positive(value("--events")?, "--events")? as i64),
            "--runs" => args.runs = common::positive(value("--runs")?, "--runs")?,
            "--pg-url" => args.pg_url = value("--pg-url")?,
            "--no-vacuum" => args.vacuum = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    args.events = events.unwrap_or(if args.smoke { 20_000 } else { 1_000_000 });
    if args.smoke {
        args.runs = 2;
    }
    Ok(args)
}

/// Fills `events` events over the day before `now` (see the file's comment).
fn fill_sql(db: Db, events: i64, now: i64) -> String {
    let step = DAY_MS / events;
    let start = now - DAY_MS;
    let columns = "id, source, dedup_key, event_type, received_at, outcome, error_code, delivery_state, attempts, \
                   delivered_at, seq";
    let rows = |i: &str, id: &str| {
        format!(
            "{id}, CASE WHEN {i} % 2 = 0 THEN 'orders' ELSE 'stripe' END, 'k' || {i}, 'order.paid', {start} + {i} * {step}, \
             CASE WHEN {i} % 50 = 0 THEN 'failed' WHEN {i} % 12 = 0 THEN 'unknown' ELSE 'confirmed' END, \
             CASE WHEN {i} % 50 = 0 THEN 'E_DB' END, 'delivered', 1, {start} + {i} * {step} + 100, {i} + 1"
        )
    };
    match db {
        Db::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO events ({columns}) SELECT {} FROM n",
            rows("i", "printf('evt_%026d', i)"),
            last = events - 1
        ),
        Db::Postgres => format!(
            "INSERT INTO events ({columns}) SELECT {} FROM generate_series(0, {last}) AS i",
            rows("i", "'evt_' || lpad(i::text, 26, '0')"),
            last = events - 1
        ),
    }
}

struct Timing {
    what: &'static str,
    runs: Vec<Duration>,
    rows: usize,
}

impl Timing {
    fn report(&self) {
        let mut sorted = self.runs.clone();
        sorted.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let p = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{:<52} median {:>8.2} ms   p95 {:>8.2} ms   max {:>8.2} ms   ({} rows)",
            self.what,
            ms(p(0.5)),
            ms(p(0.95)),
            ms(*sorted.last().unwrap()),
            self.rows
        );
    }
}

async fn time<F, Fut>(what: &'static str, runs: usize, mut f: F) -> Result<Timing, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize, hookwarden::store::StoreError>>,
{
    let mut rows = f().await.map_err(|e| e.to_string())?; // warm the cache once
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        rows = f().await.map_err(|e| e.to_string())?;
        times.push(started.elapsed());
    }
    Ok(Timing { what, runs: times, rows })
}

async fn run(args: &Args) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (url, pg_admin) = match args.db {
        Db::Sqlite => (format!("sqlite://{}", dir.path().join("console.db").display()), None),
        Db::Postgres => {
            let name = format!("hw_console_bench_{:08x}", rand::random::<u32>());
            let mut admin = sqlx::PgConnection::connect(&args.pg_url).await.map_err(|e| e.to_string())?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
            let base = args.pg_url.rsplit_once('/').map(|(b, _)| b.to_string()).ok_or("--pg-url has no database")?;
            (format!("{base}/{name}"), Some((admin, name)))
        }
    };
    let result = measure(args, &url).await;
    if let Some((mut admin, name)) = pg_admin {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut admin)
            .await;
    }
    result
}

async fn measure(args: &Args, url: &str) -> Result<(), String> {
    let store = Store::connect(url).await.map_err(|e| e.to_string())?;
    let now = unix_now_ms();
    let filled = Instant::now();
    let fill = fill_sql(args.db, args.events, now);
    match args.db {
        Db::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(url).await.map_err(|e| e.to_string())?;
            sqlx::query(sqlx::AssertSqlSafe(fill)).execute(&mut conn).await.map_err(|e| e.to_string())?;
            sqlx::query("ANALYZE").execute(&mut conn).await.map_err(|e| e.to_string())?;
        }
        Db::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.map_err(|e| e.to_string())?;
            sqlx::query(sqlx::AssertSqlSafe(fill)).execute(&mut conn).await.map_err(|e| e.to_string())?;
            let analyze = if args.vacuum { "VACUUM ANALYZE events" } else { "ANALYZE events" };
            sqlx::query(analyze).execute(&mut conn).await.map_err(|e| e.to_string())?;
        }
    }
    println!(
        "console_queries: {} events on {} (filled{} in {:.1} s), {} runs each",
        args.events,
        args.db.name(),
        if args.db == Db::Postgres && args.vacuum { " and vacuumed" } else { "" },
        filled.elapsed().as_secs_f64(),
        args.runs
    );
    let overview = |source: &'static str| SummaryQuery {
        source: source.into(),
        since: now - DAY_MS,
        until: now,
        bucket_ms: BUCKET_MS,
        overdue_before: now - 300_000,
    };
    let mut timings = Vec::new();
    timings.push(
        time("overview: gap view, 24 h in 15 min buckets, 2 sources", args.runs, || async {
            let mut rows = 0;
            for source in ["orders", "stripe"] {
                rows += store.summary(&overview(source)).await?.len();
                rows += store.gap_bounds(&overview(source)).await?.map_or(0, |_| 1);
                rows += store.failed_by_error_code(&overview(source)).await?.len();
            }
            Ok(rows)
        })
        .await?,
    );
    timings.push(
        time("events list: newest 50", args.runs, || async {
            Ok(store.list_events(&EventQuery { limit: 50, ..Default::default() }).await?.len())
        })
        .await?,
    );
    timings.push(
        time("events list: newest 50 unknown of the last 24 h", args.runs, || async {
            let q = EventQuery {
                since: Some(now - DAY_MS),
                outcome: Some(Outcome::Unknown),
                limit: 50,
                ..Default::default()
            };
            Ok(store.list_events(&q).await?.len())
        })
        .await?,
    );
    let middle = format!("evt_{:026}", args.events / 2);
    timings.push(
        time("events list: 50 of one source, a page deep (cursor)", args.runs, || async {
            let q = EventQuery {
                source: Some("stripe".into()),
                before: EventId::parse(&middle),
                limit: 50,
                ..Default::default()
            };
            Ok(store.list_events(&q).await?.len())
        })
        .await?,
    );
    // Not on a page's path: the overview's storage figures are measured in the background,
    // at most once a minute (http/console/storage.rs); timed here for what that costs.
    timings.push(
        time("storage figures per source (background, once a minute)", args.runs.min(5), || async {
            Ok(store.storage_by_source().await?.len())
        })
        .await?,
    );
    timings.push(
        time("replays list: newest 25 jobs", args.runs, || async {
            let q = hookwarden::store::ReplayListQuery { before: None, limit: 25, state: None, source: None };
            Ok(store.list_replays(&q, &hookwarden::access::SourceScope::All).await?.jobs.len())
        })
        .await?,
    );
    // The counts the overview read must be the events' own (not timed).
    for source in ["orders", "stripe"] {
        let (served, recount) =
            (store.summary(&overview(source)).await, store.summary_recount(&overview(source)).await);
        if served.map_err(|e| e.to_string())? != recount.map_err(|e| e.to_string())? {
            return Err(format!("the overview's counts of {source} differ from a recount of its events"));
        }
    }
    println!("overview's counts equal a recount of the events: yes");
    for t in &timings {
        t.report();
        if t.rows == 0 && !t.what.starts_with("replays") {
            return Err(format!("{}: no rows", t.what));
        }
    }
    store.close().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("console_queries: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("console_queries: {err}");
            ExitCode::FAILURE
        }
    }
}
