//! Ingest load generator: drives `POST /ingest/{source}` of the real `hookwarden` binary over
//! loopback and reports accepted events/s, latency, delivery catch-up and the gateway's peak RSS.
//!
//! `cargo bench -p hookwarden --bench ingest_load -- [--db sqlite|postgres] [--seconds N]
//!     [--connections N] [--rate R] [--verify none|stripe] [--json] [--tmpdir DIR]
//!     [--pg-url URL] [--body-bytes N] [--otlp]`
//!
//! `--otlp` turns trace export on (`[telemetry] otlp_endpoint`) towards a collector stand-in
//! in this process (a sink answering 200 to every export), to measure what export costs.
//!
//! By default each connection is a closed loop (the next request as soon as the last is
//! answered): the gateway's capacity at that concurrency. `--rate R` offers R requests per
//! second instead (open loop, as wrk2 does): connection i of N sends at i/R, i/R + N/R, …
//! whether or not the gateway keeps up, and a request's latency counts from its scheduled
//! time, so a gateway that falls behind shows it in its latency rather than by slowing the
//! generator. tokio's timer fires on millisecond ticks: a send may leave up to ~1 ms late,
//! and that lateness counts in its latency.
//!
//! Without `--bench` (what `cargo bench` passes), e.g. under `cargo test --benches`, it is a
//! smoke run (1 s, 8 connections, SQLite) that exits 0 only if at least one event was accepted
//! and delivered; any run fails if the sink got an event twice. `--tmpdir /dev/shm` puts the SQLite file on tmpfs (fsync becomes free): a
//! measurement aid, not a realistic setting.
//!
//! Pieces, all in this process except the gateway: a sink handler (axum, answers 200 to every
//! POST and counts distinct `webhook-id`s), the config and database it writes, the gateway
//! child process, and the client (`common::RawConnection`, one keep-alive HTTP/1 connection per worker;
//! the probe and the metrics scrape use reqwest).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use common::{Cleanup, Db, Latency, WorkerStats, cpu_share, cpu_snapshot, positive, unix_now, vm_kib};
use hmac::{KeyInit, Mac};
use serde_json::json;

const STRIPE_SECRET: &str = "whsec_bench_stripe_endpoint_secret";

// ---- arguments ----

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
    /// Requests per second offered (open loop); `None`: closed loops.
    rate: Option<f64>,
    verify: VerifyKind,
    json: bool,
    tmpdir: PathBuf,
    pg_url: String,
    body_bytes: usize,
    /// Export traces (to a sink in this process).
    otlp: bool,
}

const USAGE: &str = "ingest_load [--db sqlite|postgres] [--seconds N] [--connections N] [--rate R] \
[--verify none|stripe] [--json] [--tmpdir DIR] [--pg-url URL] [--body-bytes N] [--otlp]";

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1).peekable();
    let mut smoke = true;
    let (mut db, mut seconds, mut connections) = (None, None, None);
    let mut args = Args {
        smoke: true,
        db: Db::Sqlite,
        seconds: 10.0,
        connections: 64,
        rate: None,
        verify: VerifyKind::None,
        json: false,
        tmpdir: std::env::temp_dir(),
        pg_url: common::default_pg_url(),
        body_bytes: 600,
        otlp: false,
    };
    while let Some(arg) = raw.next() {
        let (name, inline) = common::split_flag(&arg);
        let mut value = |what: &str| common::flag_value(&inline, &mut raw, what);
        match name.as_str() {
            "--bench" => smoke = false,
            "--json" => args.json = true,
            "--otlp" => args.otlp = true,
            "--db" => db = Some(Db::parse(&value("--db")?)?),
            "--seconds" => {
                seconds = Some(
                    value("--seconds")?
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0)
                        .ok_or("--seconds: a positive number")?,
                )
            }
            "--connections" | "-c" => connections = Some(positive(value("--connections")?, "--connections")?),
            "--rate" => {
                args.rate =
                    Some(value("--rate")?.parse::<f64>().ok().filter(|r| *r > 0.0).ok_or("--rate: a positive number")?)
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

// ---- the load ----

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

/// When one connection sends: as soon as its last request was answered, or on a schedule.
#[derive(Clone, Copy)]
enum Pace {
    Closed,
    /// The first send at `first`, then one every `every`.
    Open {
        first: Instant,
        every: Duration,
    },
}

/// One connection's loop: post, read the answer, repeat (at once or at its next scheduled
/// time) until `deadline`.
async fn worker(
    addr: Arc<str>,
    stripe: bool,
    next: Arc<AtomicU64>,
    tag: Arc<str>,
    body_bytes: usize,
    pace: Pace,
    deadline: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut connection = common::RawConnection::new(addr);
    // The next scheduled send and the gap between sends, in an open loop.
    let mut schedule = match pace {
        Pace::Closed => None,
        Pace::Open { first, every } => Some((first, every)),
    };
    loop {
        // Latency counts from the scheduled time in an open loop, from the send in a closed one.
        let started = match &mut schedule {
            Some((at, every)) => {
                let this = *at;
                if this >= deadline {
                    break;
                }
                tokio::time::sleep_until(this.into()).await;
                *at += *every;
                this
            }
            None => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
        };
        let n = next.fetch_add(1, Ordering::Relaxed);
        let body = make_body(&tag, n, body_bytes);
        let signature = stripe.then(|| stripe_signature(STRIPE_SECRET.as_bytes(), unix_now(), body.as_bytes()));
        let headers = std::iter::once(("content-type", "application/json"))
            .chain(signature.as_deref().map(|sig| ("stripe-signature", sig)));
        match connection.post("/ingest/bench", headers, Bytes::from(body)).await {
            Ok((200, _)) => {
                stats.accepted += 1;
                stats.latencies_us.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Ok((status, _)) => *stats.statuses.entry(status).or_default() += 1,
            Err(err) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(err);
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

// ---- the run ----

struct Report {
    /// OTLP exports the collector stand-in received (with `--otlp`).
    otlp_exports: Option<u64>,
    db: Db,
    verify: VerifyKind,
    connections: usize,
    rate_offered: Option<f64>,
    elapsed_s: f64,
    requests: u64,
    accepted: u64,
    rate: f64,
    latency: Latency,
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
    common::in_database(&args.tmpdir, "hookwarden-bench", args.db, &args.pg_url, async |tag, db_url, cleanup| {
        run_load(args, tag, db_url, cleanup).await
    })
    .await
}

async fn run_load(args: &Args, tag: &str, db_url: &str, cleanup: &mut Cleanup) -> Result<Report, String> {
    let (sink, sink_addr) = common::start_sink().await?;
    let port = common::free_port()?;
    let verify = match args.verify {
        VerifyKind::None => r#"{ kind = "none" }"#.to_string(),
        VerifyKind::Stripe => format!(r#"{{ kind = "stripe", secret = "{STRIPE_SECRET}" }}"#),
    };
    let source = common::source_toml("bench", &verify, &format!("http://{sink_addr}/webhooks/bench"), "");
    let mut config = common::gateway_config(port, db_url, None, &[source]);
    let collector = match args.otlp {
        true => {
            let (collector, addr) = common::start_sink().await?;
            config.push_str(&format!("\n[telemetry]\notlp_endpoint = \"http://{addr}\"\n"));
            Some(collector)
        }
        false => None,
    };
    let client = common::http_client(None, Duration::from_secs(60))?;
    // Unlike the other benches, RUST_LOG and HOOKWARDEN_ADMIN_TOKEN pass through to this gateway.
    let gw = common::start_gateway(cleanup, port, &config, &["HOOKWARDEN_CONFIG"], &client).await?;
    let (pid, base, log_path) = (gw.pid, gw.base, gw.log_path);

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
            return Err(format!("the probe event was not delivered within 30s:\n{}", common::log_tail(&log_path)));
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

    let before = cpu_snapshot(pid);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let next = Arc::new(AtomicU64::new(1));
    let tag: Arc<str> = tag.into();
    let addr: Arc<str> = base.trim_start_matches("http://").into();
    let workers: Vec<_> = (0..args.connections)
        .map(|i| {
            let pace = match args.rate {
                None => Pace::Closed,
                Some(rate) => Pace::Open {
                    first: started + Duration::from_secs_f64(i as f64 / rate),
                    every: Duration::from_secs_f64(args.connections as f64 / rate),
                },
            };
            tokio::spawn(worker(
                addr.clone(),
                args.verify == VerifyKind::Stripe,
                next.clone(),
                tag.clone(),
                args.body_bytes,
                pace,
                deadline,
            ))
        })
        .collect();
    let mut all = WorkerStats::default();
    for w in workers {
        all.absorb(w.await.map_err(|e| format!("worker: {e}"))?);
    }
    let load_end = Instant::now();
    let elapsed = (load_end - started).as_secs_f64();
    let after = cpu_snapshot(pid);
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
    let cpu = cpu_share(&before, &after, elapsed);

    let non_ok: u64 = all.statuses.values().sum();
    Ok(Report {
        otlp_exports: collector.map(|c| c.posts.load(Ordering::Relaxed)),
        db: args.db,
        verify: args.verify,
        connections: args.connections,
        rate_offered: args.rate,
        elapsed_s: elapsed,
        requests: all.accepted + non_ok + all.errors,
        accepted: all.accepted,
        rate: all.accepted as f64 / secs,
        latency: Latency::from_us(all.latencies_us),
        statuses: all.statuses,
        errors: all.errors,
        first_error: all.first_error,
        delivered_during,
        delivered_total,
        duplicate_posts: posts.saturating_sub(delivered_total),
        catch_up_ms,
        peak_rss_kib,
        gateway_cpu_pct: cpu.gateway,
        generator_cpu_pct: cpu.generator,
        machine_busy_pct: cpu.machine_busy,
        machine_iowait_pct: cpu.machine_iowait,
        postgres_cpu_pct: cpu.postgres,
        others_cpu_pct: cpu.others,
        threads: cpu.threads,
        batches,
        batched,
        shutdown_ms: shutdown.map(|d| d.as_secs_f64() * 1000.0),
        db_bytes,
    })
}

fn print_report(args: &Args, r: &Report) {
    let db = r.db.name();
    let verify = match r.verify {
        VerifyKind::None => "none",
        VerifyKind::Stripe => "stripe",
    };
    let cores = common::cores();
    let mode = if args.smoke { "smoke" } else { "bench" };
    println!(
        "hookwarden ingest_load ({mode}): db={db} verify={verify} connections={} body≈{}B tmpdir={}",
        r.connections,
        args.body_bytes,
        args.tmpdir.display()
    );
    println!("  duration        {:.2} s, {} requests", r.elapsed_s, r.requests);
    if let Some(exports) = r.otlp_exports {
        println!("  trace export    on: {exports} OTLP exports received");
    }
    if let Some(offered) = r.rate_offered {
        println!("  offered         {offered:.0} events/s (open loop; latency from each request's scheduled time)");
    }
    println!("  accepted        {} ({:.0} events/s)", r.accepted, r.rate);
    println!("  latency (200)   {}", r.latency.show());
    println!(
        "  non-200         {}   transport errors {}{}",
        common::statuses_text(&r.statuses),
        r.errors,
        common::first_error_text(&r.first_error)
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
    println!("  gateway threads {}", common::threads_text(&r.threads));
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
            "rate_offered": r.rate_offered,
            "body_bytes": args.body_bytes,
            "duration_s": r.elapsed_s,
            "requests": r.requests,
            "accepted": r.accepted,
            "accepted_per_s": r.rate,
            "latency_ms": r.latency.json(),
            "non_200": common::statuses_json(&r.statuses),
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
    common::run_main("ingest_load", USAGE, parse_args(), |args| async move {
        let report = bench(&args).await?;
        print_report(&args, &report);
        let mut failures = Vec::new();
        if report.accepted == 0 || report.delivered_total == 0 {
            failures.push("nothing was accepted and delivered".to_string());
        }
        // The sink answers 200 to everything: a second post of an event is a double send
        // (fresh events handed off and claims from the store must never both take one).
        if report.duplicate_posts > 0 {
            failures.push(format!("{} events were posted to the sink more than once", report.duplicate_posts));
        }
        Ok(failures)
    })
}
