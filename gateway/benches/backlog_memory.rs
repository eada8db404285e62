//! Backlog memory: does the gateway's memory stay flat while a large backlog of undelivered
//! events sits in its database?
//!
//! `cargo bench -p hookwarden --bench backlog_memory -- --bench [--db sqlite|postgres]
//!     [--events N] [--seconds N] [--every N] [--json] [--tmpdir DIR] [--pg-url URL]`
//!
//! The gateway first runs once to create its schema and is stopped; the bench then writes
//! `--events` due events (about 1 KiB each) straight into the database with one set-based
//! statement, and starts the gateway again with a handler that refuses connections. Every
//! attempt fails at once and goes back on the retry ladder, so the gateway works through the
//! whole backlog as fast as it can while none of it is ever delivered. The bench samples the
//! gateway's RSS every `--every` seconds and reports the series, the peak (VmHWM), and how
//! much RSS grew between the first and the second half of the run.
//!
//! Without `--bench` (e.g. under `cargo test --benches`) it is a smoke run: 20,000 events,
//! 3 seconds, exiting 0 only if the gateway made attempts and stayed up.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use common::{Cleanup, Db, positive, unix_now_ms, vm_kib};
use serde_json::json;

#[derive(Debug, Clone)]
struct Args {
    smoke: bool,
    db: Db,
    events: u64,
    seconds: u64,
    every: u64,
    json: bool,
    tmpdir: PathBuf,
    pg_url: String,
}

const USAGE: &str = "backlog_memory [--db sqlite|postgres] [--events N] [--seconds N] [--every N] [--json] \
[--tmpdir DIR] [--pg-url URL]";

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1).peekable();
    let mut smoke = true;
    let (mut events, mut seconds, mut every) = (None, None, None);
    let mut args = Args {
        smoke: true,
        db: Db::Sqlite,
        events: 0,
        seconds: 0,
        every: 0,
        json: false,
        tmpdir: std::env::temp_dir(),
        pg_url: common::default_pg_url(),
    };
    while let Some(arg) = raw.next() {
        let (name, inline) = common::split_flag(&arg);
        let mut value = |what: &str| common::flag_value(&inline, &mut raw, what);
        match name.as_str() {
            "--bench" => smoke = false,
            "--json" => args.json = true,
            "--db" => args.db = Db::parse(&value("--db")?)?,
            "--events" => events = Some(positive(value("--events")?, "--events")? as u64),
            "--seconds" => seconds = Some(positive(value("--seconds")?, "--seconds")? as u64),
            "--every" => every = Some(positive(value("--every")?, "--every")? as u64),
            "--tmpdir" => args.tmpdir = PathBuf::from(value("--tmpdir")?),
            "--pg-url" => args.pg_url = value("--pg-url")?,
            "--help" | "-h" => return Err(USAGE.into()),
            other => eprintln!("backlog_memory: ignoring argument `{other}`"),
        }
    }
    args.smoke = smoke;
    let (d_events, d_seconds, d_every) = if smoke { (20_000, 3, 1) } else { (1_000_000, 300, 10) };
    args.events = events.unwrap_or(d_events);
    args.seconds = seconds.unwrap_or(d_seconds);
    args.every = every.unwrap_or(d_every);
    Ok(args)
}

/// The statements that write `n` due events, all received at `at`, with ~1 KiB payloads.
fn backlog_sql(db: Db, n: u64, at: i64) -> Vec<String> {
    let headers = r#"[["content-type","application/json"]]"#;
    match db {
        Db::Sqlite => vec![
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
                 INSERT INTO events (id, source, dedup_key, event_type, received_at, next_attempt_at, seq) \
                 SELECT printf('evt_backlog%015d', i), 'bench', 'k' || i, 'bench.backlog', {at}, {at}, i + 1 FROM n",
                last = n - 1
            ),
            format!(
                "INSERT INTO event_payloads (event_id, headers, body) \
                 SELECT id, '{headers}', CAST(printf('{{\"id\":\"%s\",\"pad\":\"%s\"}}', id, hex(randomblob(480))) AS BLOB) \
                 FROM events WHERE source = 'bench'"
            ),
        ],
        Db::Postgres => vec![
            format!(
                "INSERT INTO events (id, source, dedup_key, event_type, received_at, next_attempt_at) \
                 SELECT 'evt_backlog' || lpad(i::text, 15, '0'), 'bench', 'k' || i, 'bench.backlog', {at}, {at} \
                 FROM generate_series(0, {last}) AS i",
                last = n - 1
            ),
            format!(
                "INSERT INTO event_payloads (event_id, headers, body) \
                 SELECT id, '{headers}', convert_to('{{\"id\":\"' || id || '\",\"pad\":\"' || \
                 repeat(md5(id), 30) || '\"}}', 'UTF8') FROM events WHERE source = 'bench'"
            ),
        ],
    }
}

#[derive(Debug)]
struct Report {
    events: u64,
    load_s: f64,
    run_s: f64,
    samples: Vec<(f64, u64)>,
    peak_kib: u64,
    first_half_max_kib: u64,
    second_half_max_kib: u64,
    attempts: i64,
    still_due: i64,
    db_bytes: Option<u64>,
}

async fn bench(args: &Args) -> Result<Report, String> {
    common::in_database(&args.tmpdir, "hookwarden-backlog", args.db, &args.pg_url, async |_, db_url, cleanup| {
        run(args, db_url, cleanup).await
    })
    .await
}

async fn run(args: &Args, db_url: &str, cleanup: &mut Cleanup) -> Result<Report, String> {
    // A port nothing listens on: every forward is refused at once.
    let refused = common::free_port()?;
    let port = common::free_port()?;
    let forward_to = format!("http://127.0.0.1:{refused}/webhooks/bench");
    let source = common::source_toml("bench", r#"{ kind = "none" }"#, &forward_to, "");
    let config = common::gateway_config(port, db_url, None, &[source]);
    let client = common::http_client(None, Duration::from_secs(30))?;
    common::start_gateway(cleanup, port, &config, &["HOOKWARDEN_CONFIG", "RUST_LOG"], &client).await?;
    cleanup.stop_gateway().ok_or("the gateway did not stop after creating its schema")?;

    let loading = Instant::now();
    let statements = backlog_sql(args.db, args.events, unix_now_ms());
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    common::run_sql(args.db, db_url, &statements).await?;
    let load_s = loading.elapsed().as_secs_f64();

    let gw = common::start_gateway(cleanup, port, &config, &["HOOKWARDEN_CONFIG", "RUST_LOG"], &client).await?;
    let started = Instant::now();
    let mut samples = Vec::new();
    for tick in 1..=args.seconds.div_ceil(args.every) {
        let at = Duration::from_secs((tick * args.every).min(args.seconds));
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        if let Some(Ok(Some(status))) = cleanup.child.as_mut().map(|c| c.try_wait()) {
            return Err(format!("the gateway exited ({status}):\n{}", common::log_tail(&gw.log_path)));
        }
        let rss = vm_kib(gw.pid, "VmRSS:").ok_or("could not read the gateway's RSS")?;
        samples.push((started.elapsed().as_secs_f64(), rss));
        if !args.json {
            eprintln!("  {:>6.0} s  RSS {:>7.1} MiB", started.elapsed().as_secs_f64(), rss as f64 / 1024.0);
        }
    }
    let run_s = started.elapsed().as_secs_f64();
    let peak_kib = vm_kib(gw.pid, "VmHWM:").unwrap_or(0);
    let half = samples.len() / 2;
    let max_of = |s: &[(f64, u64)]| s.iter().map(|(_, k)| *k).max().unwrap_or(0);
    let (first_half_max_kib, second_half_max_kib) = (max_of(&samples[..half]), max_of(&samples[half..]));
    cleanup.stop_gateway();

    let attempts = common::count_sql(args.db, db_url, "SELECT COUNT(*) FROM attempts").await?;
    let still_due =
        common::count_sql(args.db, db_url, "SELECT COUNT(*) FROM events WHERE next_attempt_at IS NOT NULL").await?;
    let db_bytes = match args.db {
        Db::Sqlite => ["bench.db", "bench.db-wal"]
            .iter()
            .map(|f| std::fs::metadata(cleanup.dir.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>()
            .into(),
        Db::Postgres => None,
    };
    Ok(Report {
        events: args.events,
        load_s,
        run_s,
        samples,
        peak_kib,
        first_half_max_kib,
        second_half_max_kib,
        attempts,
        still_due,
        db_bytes,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print(args: &Args, r: &Report) {
    let growth = r.second_half_max_kib as i64 - r.first_half_max_kib as i64;
    if args.json {
        let value = json!({
            "db": args.db.name(),
            "events": r.events,
            "load_s": r.load_s,
            "run_s": r.run_s,
            "rss_samples_kib": r.samples.iter().map(|(t, k)| json!([t, k])).collect::<Vec<_>>(),
            "peak_rss_kib": r.peak_kib,
            "first_half_max_rss_kib": r.first_half_max_kib,
            "second_half_max_rss_kib": r.second_half_max_kib,
            "attempts": r.attempts,
            "still_due": r.still_due,
            "db_bytes": r.db_bytes,
        });
        println!("{value}");
        return;
    }
    let mode = if args.smoke { "smoke" } else { "bench" };
    println!("hookwarden backlog_memory ({mode}): db={} events={}", args.db.name(), r.events);
    println!(
        "  backlog written   {:.1} s{}",
        r.load_s,
        match r.db_bytes {
            Some(b) => format!(", database {:.0} MiB", b as f64 / 1_048_576.0),
            None => String::new(),
        }
    );
    println!(
        "  gateway ran       {:.0} s against a refusing handler: {} attempts ({:.0}/s), {} events still undelivered",
        r.run_s,
        r.attempts,
        r.attempts as f64 / r.run_s,
        r.still_due
    );
    println!(
        "  RSS               first sample {:.1} MiB, peak {:.1} MiB; max of the first half {:.1} MiB, of the second {:.1} MiB ({:+.1} MiB)",
        mib(r.samples.first().map_or(0, |s| s.1)),
        mib(r.peak_kib),
        mib(r.first_half_max_kib),
        mib(r.second_half_max_kib),
        growth as f64 / 1024.0
    );
}

fn main() -> ExitCode {
    common::run_main("backlog_memory", USAGE, parse_args(), |args| async move {
        let report = bench(&args).await?;
        print(&args, &report);
        let mut failures = Vec::new();
        if report.attempts == 0 {
            failures.push("the gateway made no attempts".to_string());
        }
        if report.still_due < report.events as i64 {
            failures.push(format!(
                "{} events left the backlog against a refusing handler",
                report.events as i64 - report.still_due
            ));
        }
        Ok(failures)
    })
}
