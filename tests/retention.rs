//! Retention (SPEC.md "Retention"): settled payloads and events purged after their ages, gaps
//! kept, dedup keys living exactly as long as their events, replays skipping what was purged,
//! the audit log untouched; a purge killed half-way loses nothing that should be kept; on
//! PostgreSQL one gateway purges at a time.

use std::sync::Arc;
use std::time::Duration;

use hookwarden::clock::ManualClock;
use serde_json::json;

use crate::cli::hookwarden;
use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, free_port, on_both_backends};

on_both_backends!(
    storage_shows_what_each_source_keeps,
    a_body_without_an_id_repeats_within_its_window_or_while_its_event_is_kept,
    settled_events_go_gaps_stay_and_dedup_lasts_as_long_as_the_event,
    a_purge_killed_half_way_loses_nothing_it_should_keep
);

fn source(name: &str, forward_to: &str) -> SourceSpec {
    SourceSpec::new(name, "{ kind = \"none\" }", forward_to).with("dedup = { header = \"x-id\" }")
}

async fn post(gw: &Gateway, source: &str, id: &str) -> (String, bool) {
    let (status, answer) =
        gw.ingest(source, &[("x-id".into(), id.into())], json!({ "n": id }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    (answer["event_id"].as_str().unwrap().to_string(), answer["duplicate"].as_bool().unwrap())
}

/// With retention in seconds on a clock the test moves: a settled event's payload goes first
/// (the row stays and says so; a replay naming it counts it `skipped_purged` and sends
/// nothing), then the whole event with its dedup key (a redelivery inside the window is a
/// duplicate, after it a new event); a gap stays for `unsettled`, and one a pending retry
/// holds stays past it. The audit chain still verifies.
async fn settled_events_go_gaps_stay_and_dedup_lasts_as_long_as_the_event(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let dead = free_port();
    let orders = source("orders", &receiver.url("/orders"));
    let flaky = source("flaky", &format!("http://{dead}/flaky")).ladder(&["1h"], 2);
    let mut spec = GatewaySpec::new(&db.url, vec![orders, flaky]);
    spec.retention = "payloads = \"2s\"\nevents = \"5s\"\nunsettled = \"8s\"\nrun_every = \"100ms\"".into();
    let clock = ManualClock::at(1_800_000_000_000);
    let gw = Gateway::start_in_process(&spec, Arc::new(clock.clone())).await;

    let (a, _) = post(&gw, "orders", "a").await;
    let (b, _) = post(&gw, "orders", "b").await;
    let (gap, _) = post(&gw, "orders", "c").await;
    let (held, _) = post(&gw, "flaky", "f").await;
    eventually(Duration::from_secs(10), "a, b and c delivered, f tried once", || async {
        let tried = gw.event(&held).await.is_some_and(|e| e["attempts"] == 1 && !e["next_attempt_at"].is_null());
        (receiver.count() == 3 && tried).then_some(())
    })
    .await;
    for id in [&a, &b] {
        let (status, answer) =
            gw.admin_post(&format!("/v1/events/{id}/resolve"), &json!({ "note": "applied by hand" })).await;
        assert_eq!(status, 200, "{answer}");
    }
    let audit_before = gw.audit().await.len();

    clock.advance(1_000);
    assert_eq!(post(&gw, "orders", "a").await, (a.clone(), true), "a redelivery within the window is a duplicate");

    // t = 3 s: past `payloads` for the settled ones; the gap keeps its payload.
    clock.advance(2_000);
    let purged = eventually(Duration::from_secs(10), "a's payload purged", || async {
        gw.event(&a).await.filter(|e| e["payload"] == "purged")
    })
    .await;
    assert!(purged.get("body").is_none() && purged.get("headers").is_none(), "{purged}");
    assert!(purged["payload_purged_at"].is_string(), "{purged}");
    let kept = gw.event(&gap).await.unwrap();
    assert_eq!((kept["payload"].as_str(), kept["body"].as_str()), (Some("kept"), Some("{\"n\":\"c\"}")), "{kept}");
    let (_, listed) = gw.admin_get("/v1/events?source=orders").await;
    let shown: Vec<(&str, &str)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["payload"].as_str().unwrap()))
        .collect();
    assert!(shown.contains(&(a.as_str(), "purged")) && shown.contains(&(gap.as_str(), "kept")), "{shown:?}");
    let shown = hookwarden(&gw, &["events", "show", &a]).await;
    assert!(crate::cli::stdout(&shown).contains("payload          purged"), "{shown:?}");

    // A replay naming the purged event sends nothing and says why.
    let (status, job) =
        gw.admin_post("/v1/replays", &json!({ "event_ids": [a], "dry_run": false, "reason": "retention test", "override_confirmed": { "note": "resend it" } })).await;
    assert_eq!(status, 202, "{job}");
    let path = format!("/v1/replays/{}", job["id"].as_str().unwrap());
    let done = eventually(Duration::from_secs(10), "the replay ends", || async {
        let (_, job) = gw.admin_get(&path).await;
        (job["state"] != "running").then_some(job)
    })
    .await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        (done["counts"]["skipped_purged"].as_i64(), done["counts"]["sent"].as_i64()),
        (Some(1), Some(0)),
        "{done}"
    );
    assert_eq!(receiver.count(), 3, "nothing was sent for a purged payload");
    assert_eq!(post(&gw, "orders", "b").await, (b.clone(), true), "its dedup key outlives its payload");

    // t = 6 s: past `events` for the settled ones: their rows and keys go; the gap stays.
    clock.advance(3_000);
    eventually(Duration::from_secs(10), "a and b purged whole", || async {
        (gw.event(&a).await.is_none() && gw.event(&b).await.is_none()).then_some(())
    })
    .await;
    assert_eq!(gw.event(&gap).await.unwrap()["payload"], "kept");
    let (again, duplicate) = post(&gw, "orders", "a").await;
    assert!(!duplicate && again != a, "after the window a redelivery is a new event: {again}");

    // t = 9 s: past `unsettled`: the gap goes; the event a retry holds stays.
    clock.advance(3_000);
    eventually(Duration::from_secs(10), "the gap purged", || async { gw.event(&gap).await.is_none().then_some(()) })
        .await;
    let still = gw.event(&held).await.expect("an event with a pending retry is never purged");
    assert_eq!(still["payload"], "kept", "{still}");
    assert!(gw.event(&again).await.is_some(), "a young event stays");

    let audit = gw.audit().await;
    assert!(audit.len() > audit_before, "the audit log only grew");
    let verify = hookwarden(&gw, &["audit", "verify"]).await;
    assert!(verify.status.success(), "{verify:?}");
}

/// A source whose requests carry no id dedups on the body's hash. With `body_dedup_window`
/// the window alone decides: the same body inside it is a repeat, after it a new event (the
/// first one still kept). Without a window the same body repeats the first event for as long
/// as that event is kept, and is new once retention purged it.
async fn a_body_without_an_id_repeats_within_its_window_or_while_its_event_is_kept(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let windowed = SourceSpec::new("windowed", "{ kind = \"none\" }", &receiver.url("/windowed"))
        .with("body_dedup_window = \"2s\"");
    let plain = SourceSpec::new("plain", "{ kind = \"none\" }", &receiver.url("/plain"))
        .with("retention = { events = \"4s\", unsettled = \"4s\" }");
    let mut spec = GatewaySpec::new(&db.url, vec![windowed, plain]);
    spec.retention = "run_every = \"100ms\"".into();
    let clock = ManualClock::at(1_800_000_000_000);
    let gw = Gateway::start_in_process(&spec, Arc::new(clock.clone())).await;
    let post = |source: &'static str| {
        let gw = &gw;
        async move {
            let (status, answer) = gw.ingest(source, &[], b"{\"ping\":true}").await;
            assert_eq!(status, 200, "{answer}");
            (answer["event_id"].as_str().unwrap().to_string(), answer["duplicate"].as_bool().unwrap())
        }
    };
    let (first_windowed, _) = post("windowed").await;
    let (first_plain, _) = post("plain").await;
    clock.advance(1_000);
    assert_eq!(post("windowed").await, (first_windowed.clone(), true));
    assert_eq!(post("plain").await, (first_plain.clone(), true));

    clock.advance(2_000);
    let (second, duplicate) = post("windowed").await;
    assert!(!duplicate && second != first_windowed, "past its window the same body is a new event");
    assert!(gw.event(&first_windowed).await.is_some(), "the first event is still kept");
    assert_eq!(post("plain").await, (first_plain.clone(), true), "without a window: a repeat while kept");

    clock.advance(2_000);
    eventually(Duration::from_secs(10), "the plain source's first event purged", || async {
        gw.event(&first_plain).await.is_none().then_some(())
    })
    .await;
    let (again, duplicate) = post("plain").await;
    assert!(!duplicate && again != first_plain, "once its event is purged the body is new");
}

/// `GET /v1/storage`, `hookwarden storage` and `/metrics` say per source how many events and
/// payloads are kept, their bytes, how many payloads were purged and the oldest gap; a token
/// scoped to a source sees that source only, and not the database as a whole. A new SQLite
/// file gives freed pages back (`auto_vacuum = INCREMENTAL`).
async fn storage_shows_what_each_source_keeps(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let sources = vec![source("orders", &receiver.url("/orders")), source("other", &receiver.url("/other"))];
    let mut spec = GatewaySpec::new(&db.url, sources);
    spec.retention = "payloads = \"1s\"\nevents = \"1h\"\nunsettled = \"1h\"\nrun_every = \"100ms\"".into();
    let gw = Gateway::start(&spec).await;
    let (a, _) = post(&gw, "orders", "a").await;
    post(&gw, "orders", "b").await;
    post(&gw, "orders", "c").await;
    post(&gw, "other", "x").await;
    eventually(Duration::from_secs(10), "4 delivered", || async { (receiver.count() == 4).then_some(()) }).await;
    let (status, _) = gw.admin_post(&format!("/v1/events/{a}/resolve"), &json!({ "note": "done" })).await;
    assert_eq!(status, 200);
    let report = eventually(Duration::from_secs(10), "a's payload purged, in the storage report", || async {
        let (status, report) = gw.admin_get("/v1/storage").await;
        assert_eq!(status, 200, "{report}");
        (report["sources"][0]["payloads_purged"] == 1).then_some(report)
    })
    .await;
    let orders = &report["sources"][0];
    assert_eq!(
        (orders["source"].as_str(), orders["events"].as_i64(), orders["payloads"].as_i64()),
        (Some("orders"), Some(3), Some(2)),
        "{report}"
    );
    assert!(orders["payload_bytes"].as_i64().unwrap() > 2 * 9, "bodies and headers: {report}");
    assert!(orders["oldest_unsettled_at"].is_string(), "{report}");
    assert_eq!(orders["retention"]["payloads"], "1s", "{report}");
    assert_eq!(
        (report["sources"][1]["source"].as_str(), report["sources"][1]["events"].as_i64()),
        (Some("other"), Some(1))
    );
    assert!(report["database"]["bytes"].as_i64().unwrap() > 0, "{report}");
    assert!(report["last_purge"]["removed"]["payloads"].is_number(), "{report}");

    let (status, created) =
        gw.admin_post("/v1/tokens", &json!({ "name": "other-viewer", "role": "viewer", "sources": ["other"] })).await;
    assert_eq!(status, 201, "{created}");
    let (status, scoped) = gw.call("GET", "/v1/storage", created["token"].as_str(), None).await;
    assert_eq!(status, 200, "{scoped}");
    let names: Vec<&str> =
        scoped["sources"].as_array().unwrap().iter().map(|s| s["source"].as_str().unwrap()).collect();
    assert_eq!(names, ["other"], "{scoped}");
    assert!(scoped.get("database").is_none() && scoped.get("last_purge").is_none(), "{scoped}");

    let shown = crate::cli::stdout(&hookwarden(&gw, &["storage"]).await);
    assert!(shown.contains("orders") && shown.contains("database: "), "{shown}");
    eventually(Duration::from_secs(10), "the gauges", || async {
        let events = crate::support::metric(&gw, "hookwarden_stored_events{source=\"orders\"}").await;
        let purged = crate::support::metric(&gw, "hookwarden_retention_purged_total{what=\"payloads\"}").await;
        (events == 3.0 && purged == 1.0).then_some(())
    })
    .await;
    if kind == Db::Sqlite {
        assert_eq!(db.scalar("PRAGMA auto_vacuum").await, 2, "a new file is made with auto_vacuum = INCREMENTAL");
    }
}

/// `hookwarden storage compact` converts a SQLite file made before `auto_vacuum =
/// INCREMENTAL` (offline), keeping every event; it is refused while a gateway runs on it.
#[tokio::test]
async fn storage_compact_converts_an_old_sqlite_file() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let spec = GatewaySpec::new(&db.url, vec![source("orders", &receiver.url("/orders"))]);
    let mut gw = Gateway::start(&spec).await;
    post(&gw, "orders", "a").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookwarden.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\n[[sources]]\nname = \"orders\"\nverify = {{ kind = \"none\" }}\n\
             forward_to = \"http://127.0.0.1:9/\"\nsigning_secret = \"{}\"\n",
            db.url,
            crate::support::gateway::SIGNING_SECRET
        ),
    )
    .unwrap();
    let compact = || {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookwarden"));
        command.args(["storage", "compact", "--config"]).arg(&config).env("RUST_LOG", "error");
        command.output()
    };
    let refused = compact().await.unwrap();
    assert!(!refused.status.success(), "compacted under a running gateway: {refused:?}");
    gw.kill9();
    db.execute(&["PRAGMA auto_vacuum = NONE; VACUUM"]).await;
    assert_eq!(db.scalar("PRAGMA auto_vacuum").await, 0, "the old kind of file");
    let done = compact().await.unwrap();
    assert!(done.status.success(), "{done:?}");
    assert!(String::from_utf8_lossy(&done.stdout).contains("auto_vacuum = incremental"), "{done:?}");
    assert_eq!(db.scalar("PRAGMA auto_vacuum").await, 2);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM events").await, 1);
}

/// Old events written straight into the store: `settled` confirmed ones (each with a payload
/// and an attempt) and `gaps` unknown ones, received an hour ago.
pub(crate) async fn seed_old_events(db: &TestDb, kind: Db, settled: usize, gaps: usize) {
    let received = hookwarden::clock::Clock::now_ms(&hookwarden::clock::SystemClock) - 3_600_000;
    let total = settled + gaps;
    let ids: Vec<String> =
        (0..total).map(|i| format!("evt_{}", ulid::Ulid::from_parts(received as u64 + i as u64, 7))).collect();
    let body = if kind == Db::Postgres { "'\\x7b7d'::bytea" } else { "X'7B7D'" };
    for (chunk_no, chunk) in ids.chunks(500).enumerate() {
        let (mut events, mut payloads, mut attempts) = (Vec::new(), Vec::new(), Vec::new());
        for (j, id) in chunk.iter().enumerate() {
            let i = chunk_no * 500 + j;
            let outcome = if i < settled { "confirmed" } else { "unknown" };
            let at = received + i as i64;
            let seq = if kind == Db::Sqlite { format!(", {}", i + 1) } else { String::new() };
            events.push(format!("('{id}', 'orders', 'k{i}', 't', {at}, 'delivered', '{outcome}', 1, 1, {at}{seq})"));
            payloads.push(format!("('{id}', '[]', {body})"));
            attempts.push(format!("('{id}', 1, 'scheduled', 'gw-seed', {at}, 3, 200)"));
        }
        let seq = if kind == Db::Sqlite { ", seq" } else { "" };
        db.execute(&[
            &format!(
                "INSERT INTO events (id, source, dedup_key, event_type, received_at, delivery_state, outcome, attempts, \
                 ladder_attempts, delivered_at{seq}) VALUES {}",
                events.join(", ")
            ),
            &format!("INSERT INTO event_payloads (event_id, headers, body) VALUES {}", payloads.join(", ")),
            &format!(
                "INSERT INTO attempts (event_id, number, kind, gateway, started_at, latency_ms, status_code) VALUES {}",
                attempts.join(", ")
            ),
        ])
        .await;
    }
}

/// What must hold whenever a purge stopped, wherever: every gap there with its payload and
/// attempt, nothing left of a purged event (no payload or attempt without its row).
pub(crate) async fn check_nothing_half_purged(db: &TestDb, gaps: i64) {
    let count = |sql: &'static str| db.scalar(sql);
    assert_eq!(count("SELECT COUNT(*) FROM events WHERE outcome = 'unknown'").await, gaps, "a gap was purged");
    assert_eq!(
        count("SELECT COUNT(*) FROM events e JOIN event_payloads p ON p.event_id = e.id WHERE e.outcome = 'unknown'")
            .await,
        gaps,
        "a gap lost its payload"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM attempts WHERE event_id NOT IN (SELECT id FROM events)").await,
        0,
        "attempts outlived their event"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM event_payloads WHERE event_id NOT IN (SELECT id FROM events)").await,
        0,
        "payloads outlived their event"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM events e WHERE payload_purged_at IS NULL AND NOT EXISTS (SELECT 1 FROM event_payloads p WHERE p.event_id = e.id)").await,
        0,
        "a payload went without its event saying so"
    );
}

/// A gateway killed with SIGKILL at moments inside its purge, again and again: each batch is
/// one transaction, so no gap goes, nothing of a purged event is left behind, and the next
/// start finishes the job.
async fn a_purge_killed_half_way_loses_nothing_it_should_keep(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let mut spec = GatewaySpec::new(&db.url, vec![source("orders", &receiver.url("/orders"))]);
    spec.retention = "payloads = \"1s\"\nevents = \"30m\"\nunsettled = \"1d\"\nrun_every = \"100ms\"".into();
    // Migrated by a first start; seeded while it is down.
    let mut gw = Gateway::start(&spec).await;
    gw.kill9();
    let (settled, gaps) = (8_000, 300);
    seed_old_events(&db, kind, settled, gaps).await;
    let mut kills = 0;
    for delay_ms in [5u64, 40, 90, 150, 250] {
        gw.restart().await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        gw.kill9();
        let left = db.scalar("SELECT COUNT(*) FROM events WHERE outcome = 'confirmed'").await;
        if left > 0 {
            kills += 1;
        }
        check_nothing_half_purged(&db, gaps as i64).await;
    }
    assert!(kills > 0, "no kill landed before the purge was done: nothing was tested");
    gw.restart().await;
    eventually(Duration::from_secs(60), "every settled event purged", || async {
        (db.scalar("SELECT COUNT(*) FROM events WHERE outcome = 'confirmed'").await == 0).then_some(())
    })
    .await;
    check_nothing_half_purged(&db, gaps as i64).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM attempts").await, gaps as i64);
}

/// A purge that frees most of a SQLite file gives the pages back: the file shrinks, keeping
/// at most an eighth of its pages free for the ingest to come (a steady state's churn is not
/// given back only to grow the file again).
#[tokio::test]
async fn a_large_purge_shrinks_the_sqlite_file() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let mut spec = GatewaySpec::new(&db.url, vec![source("orders", &receiver.url("/orders"))]);
    spec.retention = "payloads = \"1s\"\nevents = \"30m\"\nunsettled = \"1d\"\nrun_every = \"100ms\"".into();
    let mut gw = Gateway::start(&spec).await;
    gw.kill9();
    seed_old_events(&db, Db::Sqlite, 6_000, 100).await;
    let before = db.scalar("PRAGMA page_count").await;
    gw.restart().await;
    let (pages, free) = eventually(Duration::from_secs(60), "settled events purged, free pages given back", || async {
        let left = db.scalar("SELECT COUNT(*) FROM events WHERE outcome = 'confirmed'").await;
        let (pages, free) = (db.scalar("PRAGMA page_count").await, db.scalar("PRAGMA freelist_count").await);
        (left == 0 && free <= pages / 8).then_some((pages, free))
    })
    .await;
    assert!(pages * 2 < before, "the file did not shrink: {before} pages, now {pages} ({free} free)");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM events").await, 100, "the gaps stay");
}

/// On PostgreSQL one gateway purges at a time: while the purge lock is held elsewhere, no
/// gateway purges; two gateways then purge the backlog between them, and each settled event
/// goes once, every gap stays.
#[tokio::test]
async fn on_postgres_one_gateway_purges_at_a_time() {
    use sqlx::Connection;
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    let mut spec = GatewaySpec::new(&db.url, vec![source("orders", &receiver.url("/orders"))]);
    spec.retention = "payloads = \"1s\"\nevents = \"30m\"\nunsettled = \"1d\"\nrun_every = \"100ms\"".into();
    let mut first = Gateway::start(&spec).await;
    first.kill9();
    let (settled, gaps) = (3_000, 100);
    seed_old_events(&db, Db::Postgres, settled, gaps).await;

    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(4242017)").fetch_one(&mut holder).await.unwrap();
    assert!(got);
    first.restart().await;
    let second = Gateway::start(&spec).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM events WHERE outcome = 'confirmed'").await,
        settled as i64,
        "a gateway purged while another held the purge lock"
    );
    holder.close().await.unwrap();
    eventually(Duration::from_secs(60), "the backlog purged", || async {
        (db.scalar("SELECT COUNT(*) FROM events WHERE outcome = 'confirmed'").await == 0).then_some(())
    })
    .await;
    check_nothing_half_purged(&db, gaps as i64).await;
    let series = "hookwarden_retention_runs_total{result=\"other_gateway\"}";
    let skipped = crate::support::metric(&first, series).await + crate::support::metric(&second, series).await;
    assert!(skipped > 0.0, "neither gateway ever found the other purging");
    drop(second);
}

/// Each source is purged on its own `run_every`: with the same ages, a source that runs every
/// 100 ms loses its settled payload at once, one that runs every hour keeps it until then
/// (its first run, at start, found nothing due).
#[tokio::test]
async fn each_source_purges_on_its_own_run_every() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let fast = source("fast", &receiver.url("/fast")).with("retention = { run_every = \"100ms\" }");
    let slow = source("slow", &receiver.url("/slow")).with("retention = { run_every = \"1h\" }");
    let mut spec = GatewaySpec::new(&db.url, vec![fast, slow]);
    spec.retention = "payloads = \"1s\"\nrun_every = \"1h\"".into();
    let clock = ManualClock::at(1_800_000_000_000);
    let gw = Gateway::start_in_process(&spec, Arc::new(clock.clone())).await;
    let (f, _) = post(&gw, "fast", "f").await;
    let (s, _) = post(&gw, "slow", "s").await;
    eventually(Duration::from_secs(10), "2 delivered", || async { (receiver.count() == 2).then_some(()) }).await;
    for id in [&f, &s] {
        let (status, answer) = gw.admin_post(&format!("/v1/events/{id}/resolve"), &json!({ "note": "done" })).await;
        assert_eq!(status, 200, "{answer}");
    }
    clock.advance(2_000);
    eventually(Duration::from_secs(10), "the fast source's payload purged", || async {
        gw.event(&f).await.filter(|e| e["payload"] == "purged")
    })
    .await;
    // Ten more of the fast source's runs: the slow one's is not due for an hour.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(gw.event(&s).await.unwrap()["payload"], "kept");
}
