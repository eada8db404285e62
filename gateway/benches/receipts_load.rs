//! Receipt load generator: drives `POST /v1/receipts` of the real `hookwarden` binary over
//! loopback and reports accepted receipts/s, latency, and how close the endpoint comes to the
//! raw ed25519 `verify_strict` rate of one core.
//!
//! `cargo bench -p hookwarden --bench receipts_load -- [--db sqlite|postgres] [--events N]
//!     [--connections N] [--verify-seconds S] [--json] [--tmpdir DIR] [--pg-url URL]`
//!
//! Without `--bench` (what `cargo bench` passes), e.g. under `cargo test --all-targets`, it is
//! a smoke run (200 events, 8 connections, SQLite) that exits 0 only if every receipt was
//! accepted, recorded, and moved its event to `confirmed`.
//!
//! Steps: the bench opens the database itself with `Store::connect` and stores N events with
//! `insert_events` (batches of 1,000), then puts them in the state a handler sees them in when
//! it sends its receipt (delivered once, nothing scheduled: one direct `UPDATE`, so the
//! dispatcher does not deliver 100,000 events while receipts are timed). It signs one `applied`
//! receipt per event before the clock starts (signing is the handler's cost, not the gateway's;
//! all are signed at one timestamp, so the run must end within the 5-minute tolerance), times
//! raw `verify_strict` of the same messages in-process on one core, starts the gateway on the
//! same database, and posts the receipts from C keep-alive connections, each receipt once.
//! CPU figures are sampled from /proc over the load window, in % of one core.
//!
//! `--store-only` measures the database side alone: no gateway, no HTTP, no signature check;
//! C tasks in this process call what the endpoint calls per receipt (`Store::event_source`,
//! then `Store::record_receipt`), on the same pre-loaded database; then records the same
//! receipts again under new receipt ids with `Store::record_receipts`, 256 per transaction
//! (the gateway's group commit), for the ceiling of the writes alone.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use common::{
    Cleanup, CpuShare, Db, Latency, WorkerStats, clock_ticks, count_sql, cpu_share, cpu_snapshot, machine_ticks,
    percentile_ms, positive, process_ticks, run_sql, unix_now_ms,
};
use hookwarden::domain::{EventId, NewEvent, Outcome};
use hookwarden::store::{NewReceipt, Recorded, Store};
use receipts_sdk::receipt::{Receipt, ReceiptHeaders, ReceiptKey, SignedReceipt};
use serde_json::json;

const ADMIN_TOKEN: &str = "hwt_bench_receipts_load_admin_token";
const KEY_ID: &str = "bench-receipts-1";
const FILL_BATCH: usize = 1_000;
/// Receipts are all signed at one timestamp; posting stops before the gateway's 5-minute
/// tolerance would refuse them.
const SIGNED_VALID_FOR: Duration = Duration::from_secs(285);

// ---- arguments ----

#[derive(Debug, Clone)]
struct Args {
    smoke: bool,
    db: Db,
    events: usize,
    connections: usize,
    verify_seconds: f64,
    json: bool,
    tmpdir: PathBuf,
    pg_url: String,
    store_only: bool,
}

const USAGE: &str = "receipts_load [--db sqlite|postgres] [--events N] [--connections N] [--verify-seconds S] \
[--json] [--tmpdir DIR] [--pg-url URL] [--store-only]";

fn parse_args() -> Result<Args, String> {
    let mut raw = std::env::args().skip(1);
    let mut smoke = true;
    let (mut events, mut connections, mut verify_seconds) = (None, None, None);
    let mut args = Args {
        smoke: true,
        db: Db::Sqlite,
        events: 100_000,
        connections: 64,
        verify_seconds: 2.0,
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
            "--events" | "-n" => events = Some(positive(value("--events")?, "--events")?),
            "--connections" | "-c" => connections = Some(positive(value("--connections")?, "--connections")?),
            "--verify-seconds" => {
                verify_seconds = Some(
                    value("--verify-seconds")?
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s >= 0.0)
                        .ok_or("--verify-seconds: a number ≥ 0")?,
                )
            }
            "--tmpdir" => args.tmpdir = PathBuf::from(value("--tmpdir")?),
            "--pg-url" => args.pg_url = value("--pg-url")?,
            "--help" | "-h" => return Err(USAGE.into()),
            // cargo may pass a filter or libtest flags; they mean nothing here.
            other => eprintln!("receipts_load: ignoring argument `{other}`"),
        }
    }
    args.smoke = smoke;
    let (d_events, d_conns, d_verify) = if smoke { (200, 8, 0.2) } else { (100_000, 64, 2.0) };
    args.events = events.unwrap_or(d_events);
    args.connections = connections.unwrap_or(d_conns);
    args.verify_seconds = verify_seconds.unwrap_or(d_verify);
    Ok(args)
}

// ---- filling and signing ----

/// Stores `n` events of source `bench` and marks them delivered; returns their ids in order.
async fn fill(db: Db, url: &str, n: usize) -> Result<(Vec<EventId>, Duration), String> {
    let started = Instant::now();
    let store = Store::connect(url).await.map_err(|e| format!("Store::connect: {e}"))?;
    let base = unix_now_ms() - 3_600_000;
    let mut ids = Vec::with_capacity(n);
    let mut i = 0usize;
    while i < n {
        let batch: Vec<NewEvent> = (i..(i + FILL_BATCH).min(n))
            .map(|k| NewEvent {
                id: EventId::generate(),
                source: "bench".into(),
                dedup_key: format!("evt_bench_{k:07}"),
                event_type: Some("bench.event".into()),
                received_at: base + k as i64,
                headers: vec![("content-type".into(), "application/json".into())],
                body: format!(r#"{{"id":"evt_bench_{k:07}","type":"bench.event","data":{{"n":{k}}}}}"#).into_bytes(),
                body_dedup: None,
            })
            .collect();
        i += batch.len();
        let stored = store.insert_events(&batch).await.map_err(|e| format!("insert_events: {e}"))?;
        if stored.len() != batch.len() {
            return Err(format!("insert_events stored {} of {}", stored.len(), batch.len()));
        }
        ids.extend(batch.into_iter().map(|e| e.id));
    }
    store.close().await;
    // What a handler sees when it sends its receipt: delivered once, no retry scheduled.
    let marked = run_sql(
        db,
        url,
        &["UPDATE events SET delivery_state = 'delivered', delivered_at = received_at + 20, attempts = 1, \
           ladder_attempts = 1, next_attempt_at = NULL WHERE source = 'bench'"],
    )
    .await?;
    if marked.first().copied() != Some(n as u64) {
        return Err(format!("marking the events delivered touched {marked:?} rows, not {n}"));
    }
    Ok((ids, started.elapsed()))
}

/// One `applied` receipt per event, signed on every core at one timestamp.
fn sign_all(key: &ReceiptKey, ids: &[EventId], timestamp: i64) -> Vec<SignedReceipt> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let chunk = ids.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = ids
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter().map(|id| key.sign(&Receipt::applied(id.as_str()), timestamp)).collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().expect("signing thread")).collect()
    })
}

/// In-process, one core: (raw `verify_strict`/s, the gateway's header-parsing verify path/s).
fn verify_rates(key: &ReceiptKey, signed: &[SignedReceipt], seconds: f64) -> Result<(f64, f64, u64), String> {
    let public = receipts_sdk::webhook::decode_public_key(&key.public_key_base64()).ok_or("public key")?;
    let prepared: Vec<(Vec<u8>, ed25519_dalek::Signature)> = signed
        .iter()
        .map(|s| {
            let content = receipts_sdk::webhook::signed_content(&s.receipt_id, &s.timestamp, &s.body);
            let sig = s.signature.strip_prefix("v1a,").and_then(receipts_sdk::webhook::decode_ed25519_signature);
            sig.map(|sig| (content, sig)).ok_or_else(|| format!("signature `{}` does not decode", s.signature))
        })
        .collect::<Result<_, String>>()?;
    let budget = Duration::from_secs_f64(seconds);
    let mut raw = 0u64;
    let started = Instant::now();
    'raw: loop {
        for (content, sig) in &prepared {
            public.verify_strict(content, sig).map_err(|e| format!("verify_strict failed: {e}"))?;
            raw += 1;
            if raw.is_multiple_of(64) && started.elapsed() >= budget {
                break 'raw;
            }
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    let raw_rate = raw as f64 / started.elapsed().as_secs_f64();
    let mut path = 0u64;
    let started = Instant::now();
    'path: loop {
        for s in signed {
            let headers = s.headers();
            let get = |name: &str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
            let read = ReceiptHeaders::read(get).map_err(|e| e.to_string())?;
            read.verify_signature(&s.body, &public).map_err(|e| e.to_string())?;
            Receipt::parse(&s.body).map_err(|e| e.to_string())?;
            path += 1;
            if path.is_multiple_of(64) && started.elapsed() >= budget {
                break 'path;
            }
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    Ok((raw_rate, path as f64 / started.elapsed().as_secs_f64(), raw))
}

// ---- the load ----

async fn worker(
    addr: Arc<str>,
    receipts: Arc<Vec<SignedReceipt>>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut connection = common::RawConnection::new(addr);
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let Some(receipt) = receipts.get(i) else { break };
        if Instant::now() >= deadline {
            break;
        }
        let headers = receipt.headers();
        let headers = std::iter::once(("content-type", "application/json"))
            .chain(headers.iter().map(|(name, value)| (*name, value.as_str())));
        let started = Instant::now();
        match connection.post("/v1/receipts", headers, Bytes::from(receipt.body.clone())).await {
            Ok((200, body)) => {
                stats.accepted += 1;
                stats.latencies_us.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                // Cheap check of the answer: the event is now confirmed.
                if !body.windows(21).any(|w| w == br#""outcome":"confirmed""#) {
                    stats.not_confirmed += 1;
                }
            }
            Ok((status, body)) => {
                *stats.statuses.entry(status).or_default() += 1;
                stats.first_error.get_or_insert_with(|| {
                    format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))
                });
            }
            Err(err) => {
                stats.errors += 1;
                stats.first_error.get_or_insert(err);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    stats
}

async fn store_only(
    args: &Args,
    db_url: &str,
    ids: &[EventId],
    receipts: &[SignedReceipt],
) -> Result<(u64, f64, Vec<u32>, f64, i64), String> {
    let store = Store::connect(db_url).await.map_err(|e| format!("Store::connect: {e}"))?;
    let work: Arc<Vec<(EventId, SignedReceipt)>> =
        Arc::new(ids.iter().cloned().zip(receipts.iter().cloned()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            let (store, work, next) = (store.clone(), work.clone(), next.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((id, signed)) = work.get(i) else { break };
                    let t = Instant::now();
                    store.event_source(id).await.map_err(|e| e.to_string())?.ok_or("event not found")?;
                    let now = unix_now_ms();
                    let record = NewReceipt {
                        receipt_id: signed.receipt_id.clone(),
                        event_id: id.clone(),
                        key_id: signed.key_id.clone(),
                        status: "applied",
                        target_record_id: None,
                        error_code: None,
                        detail: None,
                        signed_at: signed.timestamp.parse::<i64>().unwrap_or_default() * 1000,
                        received_at: now,
                        via: "post",
                        body: String::from_utf8_lossy(&signed.body).into_owned(),
                        signature: signed.signature.clone(),
                    };
                    match store.record_receipt(&record).await.map_err(|e| e.to_string())? {
                        Recorded::New(Outcome::Confirmed) => {}
                        other => return Err(format!("record_receipt: {other:?}")),
                    }
                    lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                }
                Ok::<_, String>(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The writes alone, grouped as the gateway's receipt writer groups them.
    let now = unix_now_ms();
    let again: Vec<NewReceipt> = work
        .iter()
        .map(|(id, signed)| NewReceipt {
            receipt_id: receipts_sdk::receipt::new_receipt_id(),
            event_id: id.clone(),
            key_id: signed.key_id.clone(),
            status: "applied",
            target_record_id: None,
            error_code: None,
            detail: None,
            signed_at: now,
            received_at: now,
            via: "post",
            body: String::from_utf8_lossy(&signed.body).into_owned(),
            signature: signed.signature.clone(),
        })
        .collect();
    let grouped_started = Instant::now();
    for batch in again.chunks(256) {
        store.record_receipts(batch).await.map_err(|e| format!("record_receipts: {e}"))?;
    }
    let grouped = again.len() as f64 / grouped_started.elapsed().as_secs_f64();
    store.close().await;
    lat.sort_unstable();
    let ledger = count_sql(args.db, db_url, "SELECT COUNT(*) FROM receipts").await? - again.len() as i64;
    Ok((lat.len() as u64, elapsed, lat, grouped, ledger))
}

struct Report {
    db: Db,
    events: usize,
    connections: usize,
    fill_s: f64,
    sign_s: f64,
    elapsed_s: f64,
    posted: u64,
    accepted: u64,
    not_confirmed: u64,
    rate: f64,
    latency: Latency,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    first_error: Option<String>,
    cut_off: bool,
    verify_raw: f64,
    verify_path: f64,
    verify_checked: u64,
    cpu: CpuShare,
    sink_posts: u64,
    /// Receipts in the ledger and confirmed events after the run (direct SQL).
    ledger: i64,
    confirmed: i64,
    /// `GET /v1/events/{id}` of the first and last receipted events said `confirmed`.
    spot_check: Result<(), String>,
}

/// `None`: a `--store-only` run that printed its own report and passed its check.
async fn bench(args: &Args) -> Result<Option<Report>, String> {
    common::in_database(&args.tmpdir, "hookwarden-receipts-bench", args.db, &args.pg_url, async |_, db_url, cleanup| {
        run_load(args, db_url, cleanup).await
    })
    .await
}

async fn run_load(args: &Args, db_url: &str, cleanup: &mut Cleanup) -> Result<Option<Report>, String> {
    eprintln!("receipts_load: storing {} events ({})…", args.events, args.db.name());
    let (ids, fill_time) = fill(args.db, db_url, args.events).await?;

    let key = ReceiptKey::generate(KEY_ID);
    let signing = Instant::now();
    let signed_at = unix_now_ms().div_euclid(1000);
    let receipts = {
        let (key, ids) = (key.clone(), ids.clone());
        tokio::task::spawn_blocking(move || sign_all(&key, &ids, signed_at)).await.map_err(|e| e.to_string())?
    };
    let valid_until = signing + SIGNED_VALID_FOR;
    let sign_time = signing.elapsed();
    eprintln!(
        "receipts_load: signed {} receipts in {:.2} s; timing verify_strict…",
        receipts.len(),
        sign_time.as_secs_f64()
    );
    let (verify_raw, verify_path, verify_checked) = {
        let (key, sample) = (key.clone(), receipts[..receipts.len().min(10_000)].to_vec());
        let seconds = args.verify_seconds;
        tokio::task::spawn_blocking(move || verify_rates(&key, &sample, seconds)).await.map_err(|e| e.to_string())??
    };

    if args.store_only {
        let me = std::process::id();
        let (t0, m0, wall) = (process_ticks(me), machine_ticks(), Instant::now());
        let (done, elapsed, lat, grouped, ledger) = store_only(args, db_url, &ids, &receipts).await?;
        let (t1, m1, wall) = (process_ticks(me), machine_ticks(), wall.elapsed().as_secs_f64());
        let busy = m1.0.saturating_sub(m0.0) as f64 / m1.2.saturating_sub(m0.2).max(1) as f64 * 100.0;
        println!(
            "hookwarden receipts_load --store-only: db={} events={} tasks={}: event_source + record_receipt {done} in \
             {elapsed:.2} s = {:.0}/s (p50 {:.2} ms, p99 {:.2} ms); record_receipts × 256 {grouped:.0}/s; \
             this process {:.0}% of one core, machine busy {busy:.0}% (both passes); ledger {ledger}",
            args.db.name(),
            args.events,
            args.connections,
            done as f64 / elapsed,
            percentile_ms(&lat, 50.0),
            percentile_ms(&lat, 99.0),
            t1.saturating_sub(t0) as f64 / clock_ticks() / wall * 100.0,
        );
        if ledger != done as i64 || done == 0 {
            return Err(format!("store-only: {done} recorded, {ledger} in the ledger"));
        }
        return Ok(None);
    }
    let (sink, sink_addr) = common::start_sink().await?;
    let port = common::free_port()?;
    let keys = format!("receipt_keys = [{{ id = \"{KEY_ID}\", public_key = \"{}\" }}]\n", key.public_key_base64());
    let source =
        common::source_toml("bench", r#"{ kind = "none" }"#, &format!("http://{sink_addr}/webhooks/bench"), &keys);
    let config = common::gateway_config(port, db_url, Some(ADMIN_TOKEN), &[source]);
    let client = common::http_client(None, Duration::from_secs(60))?;
    let env_remove = ["HOOKWARDEN_CONFIG", "HOOKWARDEN_ADMIN_TOKEN", "RUST_LOG"];
    let gw = common::start_gateway(cleanup, port, &config, &env_remove, &client).await?;
    let (pid, base) = (gw.pid, gw.base);
    let sink_before = sink.posts.load(Ordering::Relaxed);

    let addr: Arc<str> = base.trim_start_matches("http://").into();
    let receipts = Arc::new(receipts);
    let next = Arc::new(AtomicUsize::new(0));
    let before = cpu_snapshot(pid);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.connections)
        .map(|_| tokio::spawn(worker(addr.clone(), receipts.clone(), next.clone(), valid_until)))
        .collect();
    let mut all = WorkerStats::default();
    for w in workers {
        all.absorb(w.await.map_err(|e| format!("worker: {e}"))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = cpu_snapshot(pid);
    let cpu = cpu_share(&before, &after, elapsed);
    let sink_posts = sink.posts.load(Ordering::Relaxed) - sink_before;
    let non_ok: u64 = all.statuses.values().sum();
    let posted = all.accepted + non_ok + all.errors;
    let cut_off = (posted as usize) < receipts.len();

    // Through the admin API: the first and last receipted events are confirmed.
    let mut spot_check = Ok(());
    for id in [ids.first(), ids.get((posted as usize).saturating_sub(1))].into_iter().flatten() {
        let response = client.get(format!("{base}/v1/events/{id}")).bearer_auth(ADMIN_TOKEN).send().await;
        let outcome = match response {
            Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| {
                v.pointer("/outcome").or_else(|| v.pointer("/event/outcome")).and_then(|o| o.as_str()).map(String::from)
            }),
            Err(_) => None,
        };
        if outcome.as_deref() != Some("confirmed") {
            spot_check = Err(format!("GET /v1/events/{id}: outcome {outcome:?}, expected confirmed"));
        }
    }
    cleanup.stop_gateway();
    let ledger = count_sql(args.db, db_url, "SELECT COUNT(*) FROM receipts").await?;
    let confirmed = count_sql(args.db, db_url, "SELECT COUNT(*) FROM events WHERE outcome = 'confirmed'").await?;

    Ok(Some(Report {
        db: args.db,
        events: args.events,
        connections: args.connections,
        fill_s: fill_time.as_secs_f64(),
        sign_s: sign_time.as_secs_f64(),
        elapsed_s: elapsed,
        posted,
        accepted: all.accepted,
        not_confirmed: all.not_confirmed,
        rate: all.accepted as f64 / elapsed.max(1e-9),
        latency: Latency::from_us(all.latencies_us),
        statuses: all.statuses,
        errors: all.errors,
        first_error: all.first_error,
        cut_off,
        verify_raw,
        verify_path,
        verify_checked,
        cpu,
        sink_posts,
        ledger,
        confirmed,
        spot_check,
    }))
}

fn print_report(args: &Args, r: &Report) {
    let cores = common::cores();
    let mode = if args.smoke { "smoke" } else { "bench" };
    println!(
        "hookwarden receipts_load ({mode}): db={} events={} connections={} tmpdir={}",
        r.db.name(),
        r.events,
        r.connections,
        args.tmpdir.display()
    );
    println!("  setup           fill+mark {:.2} s, signing {:.2} s (excluded)", r.fill_s, r.sign_s);
    println!(
        "  load            {} posted in {:.2} s{}",
        r.posted,
        r.elapsed_s,
        if r.cut_off { " (CUT OFF: the signed timestamps were about to expire)" } else { "" }
    );
    println!("  accepted        {} ({:.0} receipts/s)", r.accepted, r.rate);
    println!("  latency (200)   {}", r.latency.show());
    println!(
        "  errors          non-200 {}   transport {}   200-but-not-confirmed {}{}",
        common::statuses_text(&r.statuses),
        r.errors,
        r.not_confirmed,
        common::first_error_text(&r.first_error)
    );
    println!(
        "  ed25519 (1 core) verify_strict {:.0}/s; headers+verify+parse {:.0}/s; endpoint = {:.0}% of 1 core's verify_strict",
        r.verify_raw,
        r.verify_path,
        r.rate / r.verify_raw.max(1e-9) * 100.0
    );
    println!(
        "  CPU (% of 1 core) gateway {:.0}%, generator {:.0}%, postgres {:.0}%, others {:.0}%; machine busy {:.0}% of {cores} cores, iowait {:.1}%",
        r.cpu.gateway, r.cpu.generator, r.cpu.postgres, r.cpu.others, r.cpu.machine_busy, r.cpu.machine_iowait
    );
    println!("  gateway threads {}", common::threads_text(&r.cpu.threads));
    println!(
        "  after           {} receipts in the ledger, {} events confirmed, {} posts reached the sink; spot check {}",
        r.ledger,
        r.confirmed,
        r.sink_posts,
        match &r.spot_check {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    if args.json {
        let line = json!({
            "bench": "receipts_load",
            "mode": mode,
            "db": r.db.name(),
            "events": r.events,
            "connections": r.connections,
            "duration_s": r.elapsed_s,
            "posted": r.posted,
            "accepted": r.accepted,
            "receipts_per_s": r.rate,
            "latency_ms": r.latency.json(),
            "non_200": common::statuses_json(&r.statuses),
            "errors": r.errors,
            "not_confirmed": r.not_confirmed,
            "cut_off": r.cut_off,
            "verify_strict_per_s_1core": r.verify_raw,
            "verify_path_per_s_1core": r.verify_path,
            "verify_checked": r.verify_checked,
            "gateway_cpu_pct": r.cpu.gateway,
            "generator_cpu_pct": r.cpu.generator,
            "postgres_cpu_pct": r.cpu.postgres,
            "others_cpu_pct": r.cpu.others,
            "machine_busy_pct": r.cpu.machine_busy,
            "machine_iowait_pct": r.cpu.machine_iowait,
            "gateway_threads": common::threads_json(&r.cpu.threads),
            "ledger_receipts": r.ledger,
            "confirmed_events": r.confirmed,
            "sink_posts": r.sink_posts,
            "cores": cores,
        });
        println!("{line}");
    }
}

fn main() -> ExitCode {
    common::run_main("receipts_load", USAGE, parse_args(), |args| async move {
        let Some(r) = bench(&args).await? else {
            return Ok(Vec::new());
        };
        print_report(&args, &r);
        let mut failures = Vec::new();
        if r.accepted == 0 {
            failures.push("no receipt was accepted".to_string());
        }
        if r.not_confirmed > 0 {
            failures.push(format!("{} accepted receipts did not answer `confirmed`", r.not_confirmed));
        }
        if r.ledger != r.accepted as i64 || r.confirmed != r.accepted as i64 {
            failures.push(format!(
                "{} accepted, but {} receipts in the ledger and {} confirmed events",
                r.accepted, r.ledger, r.confirmed
            ));
        }
        if let Err(e) = &r.spot_check {
            failures.push(e.clone());
        }
        if args.smoke && (r.accepted as usize) < r.events {
            failures.push(format!("smoke: only {} of {} receipts were accepted", r.accepted, r.events));
        }
        Ok(failures)
    })
}
