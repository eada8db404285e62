//! Retention soak: steady ingest with a short retention, long enough to see the plateau.
//!
//! `cargo bench -p hookwarden --bench retention_soak -- --bench [--db sqlite|postgres]
//!     [--rate N] [--seconds N] [--keep 60s] [--run-every 5s] [--every N] [--pg-url URL]
//!     [--tmpdir DIR] [--archive] [--workers N]`
//!
//! One gateway, one source whose events a 2xx confirms (`no_receipt_types = ["*"]`, so each is
//! settled once delivered) and whose retention is `--keep` for payloads and events: after
//! `--keep` every second's ingest is due for purging, and the purge (every `--run-every`)
//! has to keep up with `--rate`. Workers post ~1 KiB events at `--rate` per second in total,
//! for `--seconds`. Every `--every` seconds the bench samples the gateway's RSS, the
//! database's size (SQLite: the file and its WAL; PostgreSQL: `pg_database_size`) and the
//! events stored; every 100 ms the purge counter of `/metrics`, which marks each 100 ms slot
//! as one where the purge deleted events or not. It reports ingest latency percentiles in
//! slots with and without purging, events purged per second of purging and overall, and the
//! gateway's figures of its purge batches (how long each held the writer, the last size).
//!
//! `--workers` (16): connections posting, each at `--rate / --workers` per second; a high
//! rate needs more of them (each waits for its answer before the next).
//!
//! `--archive`: the source archives before its purge (`archive_dir` in the bench's temp dir),
//! and a slot where the archive wrote events counts as one with purging too.
//!
//! Without `--bench` (e.g. under `cargo test --benches`) it is a smoke run: 100 events/s for
//! 6 s with `--keep 2s`, exiting 0 only if the gateway purged something.

mod common;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::{Cleanup, Db, Latency, RawConnection, positive, vm_kib};

#[derive(Debug, Clone)]
struct Args {
    smoke: bool,
    db: Db,
    rate: u64,
    seconds: u64,
    keep: String,
    run_every: String,
    every: u64,
    tmpdir: PathBuf,
    pg_url: String,
    archive: bool,
    workers: u64,
}

const USAGE: &str = "retention_soak [--bench] [--db sqlite|postgres] [--rate N] [--seconds N] [--keep DUR] \
[--run-every DUR] [--every N] [--tmpdir DIR] [--pg-url URL] [--archive] [--workers N]";

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1).peekable();
    let mut args = Args {
        smoke: true,
        db: Db::Sqlite,
        rate: 0,
        seconds: 0,
        keep: String::new(),
        run_every: "5s".into(),
        every: 0,
        tmpdir: std::env::temp_dir(),
        pg_url: common::default_pg_url(),
        archive: false,
        workers: 16,
    };
    let (mut rate, mut seconds, mut keep, mut every) = (None, None, None, None);
    while let Some(arg) = raw.next() {
        let (name, inline) = common::split_flag(&arg);
        let mut value = |what: &str| common::flag_value(&inline, &mut raw, what);
        match name.as_str() {
            "--bench" => args.smoke = false,
            "--db" => args.db = Db::parse(&value("--db")?)?,
            "--rate" => rate = Some(positive(value("--rate")?, "--rate")? as u64),
            "--seconds" => seconds = Some(positive(value("--seconds")?, "--seconds")? as u64),
            "--keep" => keep = Some(value("--keep")?),
            "--run-every" => args.run_every = value("--run-every")?,
            "--every" => every = Some(positive(value("--every")?, "--every")? as u64),
            "--tmpdir" => args.tmpdir = PathBuf::from(value("--tmpdir")?),
            "--pg-url" => args.pg_url = value("--pg-url")?,
            "--archive" => args.archive = true,
            "--workers" => args.workers = positive(value("--workers")?, "--workers")? as u64,
            "--help" | "-h" => return Err(USAGE.into()),
            other => eprintln!("retention_soak: ignoring argument `{other}`"),
        }
    }
    let (d_rate, d_seconds, d_keep, d_every) = if args.smoke { (100, 6, "2s", 1) } else { (500, 300, "60s", 10) };
    args.rate = rate.unwrap_or(d_rate);
    args.seconds = seconds.unwrap_or(d_seconds);
    args.keep = keep.unwrap_or_else(|| d_keep.into());
    args.every = every.unwrap_or(d_every);
    if args.smoke {
        args.run_every = "500ms".into();
    }
    Ok(args)
}

/// A value of the gateway's `/metrics` (the sum over its label sets); 0 when absent.
async fn metric(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(response) = client.get(format!("{base}/metrics")).send().await else { return 0.0 };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn database_bytes(db: Db, url: &str, dir: &std::path::Path) -> u64 {
    match db {
        Db::Sqlite => ["bench.db", "bench.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
            .map(|m| m.len())
            .sum(),
        Db::Postgres => {
            common::count_sql(db, url, "SELECT pg_database_size(current_database())").await.unwrap_or(0) as u64
        }
    }
}

struct Sample {
    at: f64,
    rss_kib: u64,
    db_bytes: u64,
    stored: i64,
    purged: f64,
}

async fn run(args: &Args, db_url: &str, cleanup: &mut Cleanup) -> Result<bool, String> {
    let (sink, sink_addr) = common::start_sink().await?;
    let port = common::free_port()?;
    let client = common::http_client(None, Duration::from_secs(10))?;
    let source = common::source_toml(
        "soak",
        "{ kind = \"none\" }",
        &format!("http://{sink_addr}/soak"),
        &format!(
            "dedup = {{ json_pointer = \"/id\" }}\nevent_type = {{ json_pointer = \"/type\" }}\nno_receipt_types = [\"*\"]\n{}",
            if args.archive {
                format!("retention = {{ archive_dir = \"{}\" }}\n", cleanup.dir.join("archive").display())
            } else {
                String::new()
            }
        ),
    );
    let mut config = common::gateway_config(port, db_url, None, &[source]);
    config.push_str(&format!(
        "\n[retention]\npayloads = \"{keep}\"\nevents = \"{keep}\"\nunsettled = \"{keep}\"\nrun_every = \"{}\"\n",
        args.run_every,
        keep = args.keep
    ));
    config.push_str("\n[delivery]\nmax_in_flight = 256\n");
    // A retention this short is refused for a provider with a redelivery window; `none` has none.
    let gateway = common::start_gateway(cleanup, port, &config, &[], &client).await?;
    let addr: Arc<str> = format!("127.0.0.1:{port}").into();

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers = args.workers;
    let interval = Duration::from_secs_f64(workers as f64 / args.rate as f64);
    let pad = "x".repeat(900);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (addr, stop, pad) = (addr.clone(), stop.clone(), pad.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = RawConnection::new(addr);
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut out: Vec<(f64, u32, bool)> = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                n += 1;
                let body = format!("{{\"id\":\"w{w}-{n}\",\"type\":\"soak.tick\",\"pad\":\"{pad}\"}}");
                let t = Instant::now();
                let answer = conn.post("/ingest/soak", [("content-type", "application/json")], Bytes::from(body)).await;
                let ok = matches!(answer, Ok((200, _)));
                out.push((started.elapsed().as_secs_f64(), t.elapsed().as_micros() as u32, ok));
            }
            out
        }));
    }

    // Every 100 ms: did the purge delete events in this slot?
    let mut slots: Vec<(f64, bool)> = Vec::new();
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_purged = 0.0;
    let mut last_archived = 0.0;
    let mut next_sample = 0.0;
    let events_purged = "hookwarden_retention_purged_total{what=\"events\"}";
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let purged = metric(&client, &gateway.base, events_purged).await;
        let archived = metric(&client, &gateway.base, "hookwarden_archived_events_total").await;
        let at = started.elapsed().as_secs_f64();
        slots.push((at, purged > last_purged || archived > last_archived));
        last_purged = purged;
        last_archived = archived;
        if at >= next_sample {
            next_sample += args.every as f64;
            let stored = metric(&client, &gateway.base, "hookwarden_stored_events").await as i64;
            samples.push(Sample {
                at,
                rss_kib: vm_kib(gateway.pid, "VmRSS:").unwrap_or(0),
                db_bytes: database_bytes(args.db, db_url, &cleanup.dir).await,
                stored,
                purged,
            });
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut requests = Vec::new();
    for task in tasks {
        requests.extend(task.await.map_err(|e| e.to_string())?);
    }

    // A request counts as "during a purge" when it ended in a slot whose purge count moved.
    let purging = |at: f64| slots.iter().find(|(end, _)| *end >= at).is_some_and(|(_, p)| *p);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut failed = 0;
    for (at, us, ok) in &requests {
        if !ok {
            failed += 1;
            continue;
        }
        if purging(*at) { with.push(*us) } else { without.push(*us) }
    }
    let (with_n, without_n) = (with.len(), without.len());
    let (lw, lo) = (Latency::from_us(with), Latency::from_us(without));
    let purging_secs = slots.iter().filter(|(_, p)| *p).count() as f64 / 10.0;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "retention_soak {}: {} events posted in {elapsed:.0} s ({:.0}/s asked {}), {failed} not 200; keep {}, run_every {}",
        args.db.name(),
        requests.len(),
        requests.len() as f64 / elapsed,
        args.rate,
        args.keep,
        args.run_every
    );
    println!("{:>6} {:>9} {:>12} {:>9} {:>10}", "t(s)", "RSS(MiB)", "db(MiB)", "stored", "purged");
    for s in &samples {
        println!(
            "{:>6.0} {:>9.1} {:>12.1} {:>9} {:>10.0}",
            s.at,
            s.rss_kib as f64 / 1024.0,
            s.db_bytes as f64 / 1_048_576.0,
            s.stored,
            s.purged
        );
    }
    println!(
        "ingest latency (ms) while purging: p50 {:.2} p99 {:.2} max {:.1} ({with_n} requests); otherwise: p50 {:.2} p99 {:.2} max {:.1} ({without_n})",
        lw.p50, lw.p99, lw.max, lo.p50, lo.p99, lo.max
    );
    println!(
        "purged {last_purged:.0} events: {:.0}/s over the {purging_secs:.1} s of 100 ms slots with purging, {:.0}/s over the run; delivered {}",
        last_purged / purging_secs.max(0.1),
        last_purged / elapsed,
        sink.posts.load(Ordering::Relaxed)
    );
    // How long the purge's batches held the writer, and the size the pacing ended at.
    let text = match client.get(format!("{}/metrics", gateway.base)).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    for line in text.lines().filter(|l| l.starts_with("hookwarden_retention_batch")) {
        println!("{line}");
    }
    Ok(last_purged > 0.0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let result = common::in_database(&args.tmpdir, "retention-soak", args.db, &args.pg_url, async |_, url, cleanup| {
        run(&args, url, cleanup).await
    })
    .await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("retention_soak: nothing was purged");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("retention_soak: {err}");
            ExitCode::FAILURE
        }
    }
}
