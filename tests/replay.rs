//! Guardrailed replay end to end: refusals, the dry run, live runs with re-evaluation and
//! mid-batch drops, the override, cancel, resume after kill -9, the race with receipts, the
//! audit log, and the on-call story.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use receipts_sdk::receipt::Receipt;
use serde_json::{Value, json};

use crate::support::receiver::Behaviour;
use crate::support::{
    ADMIN_TOKEN, Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, metric, on_both_backends, sign,
};

const SINCE: &str = "2000-01-01T00:00:00Z";

pub(crate) fn handler_key() -> receipts_sdk::receipt::ReceiptKey {
    sign::receipt_key("orders-1", 1)
}

pub(crate) fn spec(db: &TestDb, receiver: &Receiver) -> GatewaySpec {
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&sign::receipt_keys_line(&[(&handler_key(), false)]))
        // The outage: one failed attempt each, the next retry far away.
        .ladder(&["1h"], 8);
    let mut spec = GatewaySpec::new(&db.url, vec![source]);
    // A restarted gateway on PostgreSQL takes a killed one's job over once its lease ran out.
    (spec.lease, spec.timeout) = ("6s".into(), "5s".into());
    spec
}

/// Ingests `n` events while the handler is down; each gets one failed attempt.
pub(crate) async fn outage(gw: &Gateway, receiver: &Receiver, prefix: &str, n: usize) -> Vec<String> {
    receiver.set(Behaviour { status: 500, ..Behaviour::default() });
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (status, answer) =
            gw.ingest("orders", &[], json!({ "id": format!("{prefix}-{i}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["event_id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(30), "every event attempted once", || async {
        let counts = receiver.counts_by_event();
        ids.iter().all(|id| counts.contains_key(id)).then_some(())
    })
    .await;
    receiver.set(Behaviour::default());
    ids
}

pub(crate) async fn confirm(gw: &Gateway, id: &str) {
    let (status, answer) = gw.post_receipt(&handler_key().sign(&Receipt::applied(id), sign::now_secs())).await;
    assert_eq!(status, 200, "{answer}");
}

pub(crate) async fn replay(gw: &Gateway, token: Option<&str>, body: Value) -> (u16, Value) {
    gw.call("POST", "/v1/replays", token, Some(&body)).await
}

/// Starts a live replay of the whole window, `limit` items at `rate`: the job's id.
pub(crate) async fn live(gw: &Gateway, reason: &str, rate: u32, limit: usize) -> String {
    let body =
        json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": reason, "rate": rate, "limit": limit });
    let (status, job) = replay(gw, None, body).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().unwrap().to_string()
}

pub(crate) async fn wait_done(gw: &Gateway, id: &str, timeout: Duration) -> Value {
    eventually(timeout, "the replay finished", || async {
        let (_, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
        (job["state"] != "running").then_some(job)
    })
    .await
}

/// The replay requests the receiver got, by event id.
pub(crate) fn replayed(receiver: &Receiver) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in receiver.received().iter().filter(|r| r.replay_id().is_some()) {
        *out.entry(r.event_id().to_string()).or_default() += 1;
    }
    out
}

async fn refusals_say_what_is_wrong(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let viewer = gw.token("vera", "viewer").await;
    let operator = gw.token("olga", "operator").await;
    let check = |body: Value, token: Option<String>, status: u16, code: &'static str| {
        let gw = &gw;
        async move {
            let (got, answer) = replay(gw, token.as_deref(), body).await;
            assert_eq!((got, answer["error"]["code"].as_str().unwrap_or("")), (status, code), "{answer}");
            answer
        }
    };
    let op = || Some(operator.clone());
    check(json!({ "source": "orders" }), op(), 400, "scope_required").await;
    let bad = check(
        json!({ "source": "orders", "since": SINCE, "filter": "outcome = unknown AND attempts < many" }),
        op(),
        400,
        "filter_invalid",
    )
    .await;
    assert!(bad["error"]["message"].as_str().unwrap().contains("column"), "{bad}");
    check(json!({ "source": "orders", "since": SINCE, "dry_run": false }), op(), 400, "reason_required").await;
    // A dry run changes nothing: a viewer may run one; a live run needs an operator.
    check(json!({ "source": "orders", "since": SINCE }), Some(viewer.clone()), 200, "").await;
    let live_by_viewer = json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "r" });
    check(live_by_viewer, Some(viewer.clone()), 403, "role_insufficient").await;
    check(
        json!({ "source": "orders", "since": SINCE, "override_confirmed": { "note": " " } }),
        op(),
        400,
        "override_note_required",
    )
    .await;
    check(
        json!({ "source": "orders", "since": SINCE, "to": "http://127.0.0.1:1/staging" }),
        op(),
        403,
        "role_insufficient",
    )
    .await;
    let admin = || Some(ADMIN_TOKEN.to_string());
    check(
        json!({ "source": "orders", "since": SINCE, "to": "http://127.0.0.1:99999/x" }),
        admin(),
        400,
        "invalid_request",
    )
    .await;
    check(json!({ "source": "nope", "since": SINCE }), op(), 404, "source_unknown").await;
    check(json!({ "source": "orders", "since": "yesterday" }), op(), 400, "invalid_request").await;
    check(json!({ "source": "orders", "since": SINCE, "rate": 0 }), op(), 400, "invalid_request").await;
    check(json!({ "source": "orders", "since": SINCE, "everything": true }), op(), 400, "invalid_request").await;
    let (status, _) = gw.call("GET", "/v1/events", Some("hwt_not_a_token"), None).await;
    assert_eq!(status, 401);
    assert_eq!(receiver.count(), 0);
}

async fn the_dry_run_counts_samples_sends_nothing_and_is_audited(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "d", 6).await;
    confirm(&gw, &ids[0]).await;
    confirm(&gw, &ids[1]).await;
    gw.post_receipt(&handler_key().sign(&Receipt::failed(&ids[2], "E_DB", None), sign::now_secs())).await;
    let before = receiver.count();
    let (status, plan) = replay(&gw, None, json!({ "source": "orders", "since": SINCE })).await;
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["counts"], json!({ "confirmed": 2, "unknown": 3, "failed": 1, "resolved": 0 }));
    assert_eq!((plan["eligible"].as_i64(), plan["risk"].as_str()), (Some(3), Some("low")));
    assert_eq!(plan["estimated_seconds"], 2.0, "3 items at 2/s");
    let sample = plan["sample"].as_array().unwrap();
    assert_eq!(sample.len(), 3);
    assert_eq!(sample[0]["event_id"], ids[3].as_str(), "in the order received");
    assert_eq!(sample[0]["destination"], receiver.url("/orders"));
    let event = gw.event(&ids[3]).await.unwrap();
    assert_eq!(sample[0]["idempotency_key"], event["idempotency_key"]);
    let (_, medium) =
        replay(&gw, None, json!({ "source": "orders", "since": SINCE, "include_failed": true, "limit": 2 })).await;
    assert_eq!(
        (medium["eligible"].as_i64(), medium["eligible_in_scope"].as_i64(), medium["risk"].as_str()),
        (Some(2), Some(4), Some("medium"))
    );
    let (_, high) = replay(
        &gw,
        None,
        json!({ "source": "orders", "since": SINCE, "override_confirmed": { "note": "handler lost writes" } }),
    )
    .await;
    assert_eq!((high["eligible"].as_i64(), high["risk"].as_str()), (Some(5), Some("high")));
    let (_, filtered) = replay(&gw, None, json!({ "source": "orders", "since": SINCE, "filter": "outcome IN (unknown, failed) AND attempts >= 1", "include_failed": true })).await;
    assert_eq!(filtered["eligible"], 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), before, "a dry run sent something");
    let audit = gw.audit().await;
    assert_eq!(audit.iter().filter(|e| e["action"] == "replay.dry_run").count(), 4);
    assert!(audit.iter().all(|e| e["actor"] == "bootstrap-admin" || e["action"] == "token.created"));
    // The audit log by time window.
    let (_, window) = gw.admin_get(&format!("/v1/audit?since={SINCE}")).await;
    assert_eq!(window["entries"].as_array().unwrap().len(), audit.len(), "{window}");
    let (_, before) = gw.admin_get(&format!("/v1/audit?until={SINCE}")).await;
    assert_eq!(before["entries"].as_array().unwrap().len(), 0, "{before}");
    let (_, later) = gw.admin_get("/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(later["entries"].as_array().unwrap().len(), 0, "{later}");
}

async fn live_run_sends_only_what_is_eligible(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let operator = gw.token("olga", "operator").await;
    let ids = outage(&gw, &receiver, "l", 10).await;
    for id in &ids[..3] {
        confirm(&gw, id).await;
    }
    let (status, job) = replay(
        &gw,
        Some(&operator),
        json!({
            // 100 ms apart: the order the handler sees is the order sent, with room for a
            // loaded machine (at 50/s, 20 ms apart, two sends swapped places on the way).
            "source": "orders", "since": SINCE, "dry_run": false, "reason": "INC-42 handler outage", "rate": 10
        }),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["eligible"], 7);
    let id = job["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("rpl_"));
    let done = wait_done(&gw, &id, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(
        done["counts"],
        json!({ "eligible": 7, "sent": 7, "succeeded": 7, "failed": 0, "skipped_receipt": 0, "skipped_other": 0, "skipped_purged": 0,
                "skipped_probe": 0, "probes": 0, "probes_failed": 0 })
    );
    let sent = replayed(&receiver);
    assert_eq!(sent.len(), 7);
    for confirmed in &ids[..3] {
        assert!(!sent.contains_key(confirmed), "a confirmed event was replayed without an override");
    }
    // In the order received, with the replay id and the event's own idempotency key and signature.
    let replays: Vec<_> = receiver.received().into_iter().filter(|r| r.replay_id().is_some()).collect();
    let order: Vec<&str> = replays.iter().map(|r| r.event_id()).collect();
    let expected: Vec<&str> = ids[3..].iter().map(String::as_str).collect();
    assert_eq!(order, expected);
    for r in &replays {
        assert!(r.verified);
        assert_eq!(r.replay_id(), Some(id.as_str()));
        assert_eq!(r.header("idempotency-key"), receiver.for_event(r.event_id())[0].header("idempotency-key"));
    }
    let event = gw.event(&ids[5]).await.unwrap();
    let log = event["attempt_log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["kind"], "replay");
    assert_eq!(log.last().unwrap()["replay_id"], id.as_str());
    assert_eq!(event["delivery_state"], "delivered");
    assert!(event["next_attempt_at"].is_null(), "a delivered replay cancels the pending retry");
    let audit = gw.audit().await;
    let started = audit.iter().find(|e| e["action"] == "replay.started").unwrap();
    assert_eq!(
        (started["actor"].as_str(), started["details"]["reason"].as_str()),
        (Some("olga"), Some("INC-42 handler outage"))
    );
    let finished = eventually(Duration::from_secs(5), "the finished entry", || async {
        gw.audit().await.into_iter().find(|e| e["action"] == "replay.finished")
    })
    .await;
    assert_eq!(finished["details"]["items"].as_array().unwrap().len(), 7);
    assert_eq!(finished["details"]["counts"]["succeeded"], 7);
    let entries: Vec<hookwarden::audit::AuditEntry> =
        gw.audit().await.into_iter().map(|e| serde_json::from_value(e).unwrap()).collect();
    hookwarden::audit::verify_chain(&entries, hookwarden::audit::GENESIS).unwrap();
}

#[tokio::test]
async fn a_live_run_sends_only_what_is_eligible_sqlite() {
    live_run_sends_only_what_is_eligible(Db::Sqlite).await;
}

#[tokio::test]
async fn a_live_run_sends_only_what_is_eligible_postgres() {
    live_run_sends_only_what_is_eligible(Db::Postgres).await;
}

async fn confirmed_events_go_out_only_under_an_override_with_its_note_audited(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "o", 3).await;
    for id in &ids {
        confirm(&gw, id).await;
    }
    let (_, job) =
        replay(&gw, None, json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "r", "rate": 50 }))
            .await;
    assert_eq!(job["eligible"], 0);
    let (status, job) = replay(
        &gw,
        None,
        json!({
            "source": "orders", "since": SINCE, "dry_run": false, "reason": "handler lost its writes",
            "override_confirmed": { "note": "DB restored from a backup older than these events" }, "rate": 50
        }),
    )
    .await;
    assert_eq!((status, job["eligible"].as_i64(), job["risk"].as_str()), (202, Some(3), Some("high")));
    let done = wait_done(&gw, job["id"].as_str().unwrap(), Duration::from_secs(10)).await;
    assert_eq!(done["counts"]["succeeded"], 3);
    assert_eq!(replayed(&receiver).len(), 3);
    let audit = gw.audit().await;
    let started: Vec<_> = audit.iter().filter(|e| e["action"] == "replay.started").collect();
    assert_eq!(started[1]["details"]["override_note"], "DB restored from a backup older than these events");
}

async fn receipts_drop_items_between_and_within_batches(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "m", 20).await;
    let (_, job) =
        replay(&gw, None, json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "r", "rate": 5 }))
            .await;
    let id = job["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "the first sends", || async { (replayed(&receiver).len() >= 2).then_some(()) })
        .await;
    // Receipts arrive for items still queued: they must not go out.
    for late in &ids[10..16] {
        confirm(&gw, late).await;
    }
    let done = wait_done(&gw, &id, Duration::from_secs(20)).await;
    assert_eq!(done["counts"]["skipped_receipt"], 6, "{done}");
    assert_eq!(done["counts"]["sent"], 14);
    let sent = replayed(&receiver);
    for late in &ids[10..16] {
        assert!(!sent.contains_key(late), "{late} was sent after its receipt was recorded");
    }
    let finished = eventually(Duration::from_secs(5), "the audit", || async {
        gw.audit().await.into_iter().find(|e| e["action"] == "replay.finished")
    })
    .await;
    let skipped =
        finished["details"]["items"].as_array().unwrap().iter().filter(|i| i["result"] == "skipped_receipt").count();
    assert_eq!(skipped, 6);
}

async fn a_cancelled_run_stops_sending(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let viewer = gw.token("vera", "viewer").await;
    outage(&gw, &receiver, "c", 20).await;
    let (_, job) =
        replay(&gw, None, json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "r", "rate": 4 }))
            .await;
    let id = job["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "some sends", || async { (replayed(&receiver).len() >= 2).then_some(()) })
        .await;
    let (status, _) = gw.call("POST", &format!("/v1/replays/{id}/cancel"), Some(&viewer), None).await;
    assert_eq!(status, 403);
    let (status, cancelled) = gw.admin_post(&format!("/v1/replays/{id}/cancel"), &json!({})).await;
    assert_eq!((status, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
    let at_cancel = replayed(&receiver).len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(replayed(&receiver).len() <= at_cancel + 1, "sends went on after the cancel");
    let (status, _) = gw.admin_post(&format!("/v1/replays/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 409);
    let (_, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
    assert_eq!(job["state"], "cancelled");
    assert!(job["counts"]["skipped_other"].as_i64().unwrap() >= 10, "{job}");
}

/// A gateway stopped the ordinary way (a deploy, SIGTERM) in the middle of a live replay
/// leaves the job running for the next gateway: it is not cancelled, and every item is sent
/// once, none lost to the stop.
async fn a_graceful_restart_hands_a_running_replay_on(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let mut gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "g", 30).await;
    let (_, job) = replay(
        &gw,
        None,
        json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "deploy mid-run", "rate": 10 }),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "some sent", || async { (replayed(&receiver).len() >= 8).then_some(()) }).await;
    assert!(gw.terminate(Duration::from_secs(15)).await.is_some_and(|s| s.success()), "{}", gw.log());
    gw.restart().await;
    let done = wait_done(&gw, &id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let sent = replayed(&receiver);
    assert_eq!(sent.len(), ids.len(), "{done}");
    assert!(sent.values().all(|n| *n == 1), "sent twice: {sent:?}");
    assert_eq!(
        (done["counts"]["succeeded"].as_i64(), done["counts"]["failed"].as_i64()),
        (Some(30), Some(0)),
        "{done}"
    );
}

async fn resume_after_kill_9_sends_no_item_twice(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let mut gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "k", 60).await;
    let (_, job) = replay(
        &gw,
        None,
        json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "r", "rate": 25, "limit": 60 }),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "a third sent", || async { (replayed(&receiver).len() >= 20).then_some(()) })
        .await;
    gw.kill9();
    gw.restart().await;
    let done = wait_done(&gw, &id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let sent = replayed(&receiver);
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice by the replay: {twice:?}");
    let counts = &done["counts"];
    assert_eq!(counts["sent"], 60, "{done}");
    // Items the crash caught mid-send may or may not have arrived; they count as failed and
    // are not sent again.
    let (succeeded, failed) =
        (counts["succeeded"].as_u64().unwrap() as usize, counts["failed"].as_u64().unwrap() as usize);
    assert_eq!(succeeded + failed, 60, "{done}");
    assert!(succeeded <= sent.len() && sent.len() <= 60, "{done}");
    assert!(failed <= 13, "too many items caught by the crash: {failed}");
    assert!(ids.iter().filter(|id| sent.contains_key(*id)).count() == sent.len());
}

#[tokio::test]
async fn resume_after_kill_9_sends_no_item_twice_sqlite() {
    resume_after_kill_9_sends_no_item_twice(Db::Sqlite).await;
}

#[tokio::test]
async fn resume_after_kill_9_sends_no_item_twice_postgres() {
    resume_after_kill_9_sends_no_item_twice(Db::Postgres).await;
}

/// The core promise under races: receipts posted at random moments while a replay of
/// thousands of events runs. A send is decided by its check before it goes out, and its
/// attempt's `started_at` is taken before that check: no replay attempt of an event may have
/// started after its receipt was recorded (answered 200). A send decided before may still
/// arrive after the 200 (the handler's idempotency key absorbs it); one decided after may not
/// exist.
async fn no_send_after_a_recorded_receipt(kind: Db, rounds: u64, events: usize) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    for round in 0..rounds {
        let seed: u64 = rand::random();
        let ids = outage(&gw, &receiver, &format!("race{round}"), events).await;
        let since = gw.event(&ids[0]).await.unwrap()["received_at"].as_str().unwrap().to_string();
        let (status, job) = replay(
            &gw,
            None,
            json!({
                "source": "orders", "since": since, "dry_run": false, "reason": "race", "rate": 10000, "limit": events
            }),
        )
        .await;
        assert_eq!(status, 202, "{job}");
        let job_id = job["id"].as_str().unwrap().to_string();
        // Post receipts for random events at random moments while the run goes on.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
        let mut recorded: HashMap<String, i64> = HashMap::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let pick = &ids[rand::RngExt::random_range(&mut rng, 0..ids.len())];
            if !recorded.contains_key(pick) {
                let (status, _) = gw.post_receipt(&handler_key().sign(&Receipt::applied(pick), sign::now_secs())).await;
                assert_eq!(status, 200);
                recorded.insert(pick.clone(), sign::now_ms());
            }
            tokio::time::sleep(Duration::from_micros(rand::RngExt::random_range(&mut rng, 0..2000))).await;
            let (_, state) = gw.admin_get(&format!("/v1/replays/{job_id}")).await;
            if state["state"] != "running" {
                break;
            }
        }
        let done = wait_done(&gw, &job_id, Duration::from_secs(60)).await;
        assert_eq!(done["state"], "completed");
        let mut violations = Vec::new();
        for (id, at) in &recorded {
            let event = gw.event(id).await.unwrap();
            for attempt in event["attempt_log"].as_array().unwrap() {
                let started_at =
                    hookwarden::timestamp::parse_rfc3339("started_at", attempt["started_at"].as_str().unwrap())
                        .unwrap();
                if attempt["replay_id"] == job_id.as_str() && started_at > *at {
                    violations.push(format!("{id}: attempt started at {started_at}, receipt recorded by {at}"));
                }
            }
        }
        assert!(
            violations.is_empty(),
            "round {round} (seed {seed}): sent after the receipt was recorded: {violations:?}"
        );
        let counts = &done["counts"];
        assert!(counts["skipped_receipt"].as_i64().unwrap() > 0, "round {round}: no receipt raced the run: {done}");
        assert_eq!(
            counts["sent"].as_i64().unwrap() + counts["skipped_receipt"].as_i64().unwrap(),
            events as i64,
            "{done}"
        );
        let sent = replayed(&receiver);
        assert_eq!(
            receiver.received().iter().filter(|r| r.replay_id() == Some(job_id.as_str())).count() as i64,
            counts["sent"].as_i64().unwrap(),
            "the handler got other than the sends counted"
        );
        assert!(sent.values().all(|n| *n == 1), "an event replayed twice");
    }
}

#[tokio::test]
async fn no_send_after_a_recorded_receipt_sqlite() {
    no_send_after_a_recorded_receipt(Db::Sqlite, 3, 1500).await;
}

#[tokio::test]
async fn no_send_after_a_recorded_receipt_postgres() {
    no_send_after_a_recorded_receipt(Db::Postgres, 2, 1000).await;
}

/// An admin picks events by id, includes a failed one, and sends them to a staging handler:
/// only those go out, only there, and the audit log says where.
async fn chosen_events_including_a_failed_one_go_to_staging(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let staging = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "s", 4).await;
    confirm(&gw, &ids[0]).await;
    gw.post_receipt(&handler_key().sign(&Receipt::failed(&ids[1], "E_DB", None), sign::now_secs())).await;
    let to = staging.url("/orders");
    let (status, job) = replay(
        &gw,
        None,
        json!({
            "event_ids": [ids[0], ids[1], ids[2]], "include_failed": true, "to": to,
            "dry_run": false, "reason": "try the fix on staging", "rate": 50
        }),
    )
    .await;
    assert_eq!((status, job["eligible"].as_i64()), (202, Some(2)), "{job}");
    let done = wait_done(&gw, job["id"].as_str().unwrap(), Duration::from_secs(20)).await;
    assert_eq!((done["state"].as_str(), done["counts"]["succeeded"].as_i64()), (Some("completed"), Some(2)), "{done}");
    let mut sent: Vec<String> = replayed(&staging).into_keys().collect();
    sent.sort();
    let mut expected = vec![ids[1].clone(), ids[2].clone()];
    expected.sort();
    assert_eq!(sent, expected, "the confirmed one, or one not chosen, went out");
    assert!(replayed(&receiver).is_empty(), "the production handler got a replay");
    assert!(staging.received().iter().all(|r| r.verified), "staging got an unsigned request");
    let audit = gw.audit().await;
    let started = audit.iter().find(|e| e["action"] == "replay.started").unwrap();
    assert_eq!(started["details"]["request"]["to"], to.as_str(), "{started}");
    assert_eq!(started["details"]["request"]["include_failed"], true, "{started}");
}

/// A handler answering 429 halves the replay's pace each time: the gap before each next
/// send doubles, never a burst of sends at the handler's speed.
async fn a_throttling_handler_slows_the_replay_down(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "t", 6).await;
    let scheduled = gw.event(&ids[0]).await.unwrap()["next_attempt_at"].clone();
    assert!(scheduled.is_string(), "the retry an hour on");
    // Each event had one request in the outage; its replay is the second, answered 429.
    receiver.set(Behaviour { status: 429, fail_first: 2, ..Behaviour::default() });
    let (status, job) = replay(
        &gw,
        None,
        json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "slow-down check", "rate": 10 }),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let done = wait_done(&gw, job["id"].as_str().unwrap(), Duration::from_secs(30)).await;
    assert_eq!((done["counts"]["sent"].as_i64(), done["counts"]["failed"].as_i64()), (Some(6), Some(6)), "{done}");
    assert_eq!(done["current_rate"], 10.0 / 64.0, "six halvings: {done}");
    let sends: Vec<Instant> = receiver.received().iter().filter(|r| r.replay_id().is_some()).map(|r| r.at).collect();
    assert_eq!(sends.len(), ids.len(), "{done}");
    for (k, pair) in sends.windows(2).enumerate() {
        // After k + 1 throttles the rate is 10 / 2^(k+1) per second. A send waits on the
        // bucket of its time, so if a 429 comes back later than the period before it, the
        // next send can go at that older period, half the new one: a burst would be far
        // below either.
        let period = Duration::from_secs_f64(2f64.powi(k as i32 + 1) / 10.0);
        let gap = pair[1] - pair[0];
        assert!(gap >= period.mul_f64(0.45), "send {} came {gap:?} after the one before, not {period:?}", k + 2);
    }
    assert!(sends[sends.len() - 1] - sends[0] >= Duration::from_secs(5), "six halvings from 10/s take 6.2 s");
    // A failed replay send is in the attempt log but leaves the retry schedule alone.
    let event = gw.event(&ids[0]).await.unwrap();
    assert_eq!(event["next_attempt_at"], scheduled, "{event}");
    assert_eq!((event["attempts"].as_i64(), event["outcome"].as_str()), (Some(2), Some("unknown")), "{event}");
}

/// A run the store fails under (here a trigger refusing every item update, put on behind
/// the gateway's back) ends `failed` with the reason, in the job and in the audit log, and
/// sends nothing after the failure.
async fn a_run_the_store_fails_under_ends_failed_and_says_why(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "x", 20).await;
    let (_, job) = replay(
        &gw,
        None,
        json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "store breaks", "rate": 5 }),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "a first send", || async { (!replayed(&receiver).is_empty()).then_some(()) })
        .await;
    db.refuse("UPDATE", "replay_items").await;
    let done = wait_done(&gw, &id, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(done["error"].as_str().unwrap().contains("refused by the test"), "{done}");
    let at_failure = replayed(&receiver).len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(replayed(&receiver).len(), at_failure, "sends went on after the run failed");
    assert!(at_failure < 20, "the run was not stopped by the failure: {at_failure} sent");
    let finished = eventually(Duration::from_secs(5), "the finished entry", || async {
        gw.audit().await.into_iter().find(|e| e["action"] == "replay.finished")
    })
    .await;
    assert_eq!(finished["details"]["state"], "failed", "{finished}");
    assert!(finished["details"]["error"].as_str().unwrap().contains("refused by the test"), "{finished}");
}

/// A query parameter's value, percent-encoded.
fn encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The ids `GET /v1/events` answers for `query`, sorted.
async fn listed(gw: &Gateway, query: &str) -> Vec<String> {
    let (status, page) = gw.admin_get(&format!("/v1/events?{query}")).await;
    assert_eq!(status, 200, "{page}");
    let mut ids: Vec<String> =
        page["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

async fn events_are_listed_by_the_filter_language(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "f", 4).await;
    confirm(&gw, &ids[0]).await;
    gw.post_receipt(&handler_key().sign(&Receipt::failed(&ids[1], "E_DB", None), sign::now_secs())).await;
    gw.post_receipt(&handler_key().sign(&Receipt::failed(&ids[2], "E_TIMEOUT", None), sign::now_secs())).await;
    let by_code = format!("filter={}", encoded("outcome = failed AND error_code IN ('E_DB', \"E_X\")"));
    assert_eq!(listed(&gw, &by_code).await, vec![ids[1].clone()]);
    let mut open = vec![ids[1].clone(), ids[2].clone(), ids[3].clone()];
    open.sort();
    assert_eq!(listed(&gw, &format!("source=orders&filter={}", encoded("outcome != confirmed"))).await, open);
    // With the other parameters: they all hold.
    assert_eq!(
        listed(&gw, &format!("outcome=unknown&filter={}", encoded("attempts >= 1 AND source = orders"))).await,
        vec![ids[3].clone()]
    );
    // Paged: the cursor's own condition numbered after the filter's.
    let (_, page) = gw.admin_get(&format!("/v1/events?limit=2&filter={}", encoded("outcome != confirmed"))).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let mut paged = listed(&gw, &format!("limit=2&cursor={cursor}&filter={}", encoded("outcome != confirmed"))).await;
    paged.extend(page["data"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()));
    paged.sort();
    assert_eq!(paged, open);
    let (status, refused) = gw.admin_get(&format!("/v1/events?filter={}", encoded("outcome ~ unknown"))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("filter_invalid")), "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("column 9"), "{refused}");
}

#[tokio::test]
async fn events_are_listed_by_the_filter_language_sqlite() {
    events_are_listed_by_the_filter_language(Db::Sqlite).await;
}

#[tokio::test]
async fn events_are_listed_by_the_filter_language_postgres() {
    events_are_listed_by_the_filter_language(Db::Postgres).await;
}

async fn resolving_an_event_closes_its_gap_with_an_audited_note(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "r", 2).await;
    let (status, _) = gw.admin_post(&format!("/v1/events/{}/resolve", ids[0]), &json!({ "note": "" })).await;
    assert_eq!(status, 400);
    let (status, answer) = gw
        .admin_post(&format!("/v1/events/{}/resolve", ids[0]), &json!({ "note": "applied by hand, ticket OPS-7" }))
        .await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("resolved")), "{answer}");
    let (_, plan) = replay(&gw, None, json!({ "source": "orders", "since": SINCE })).await;
    assert_eq!(plan["counts"]["unknown"], 1);
    let audit = gw.audit().await;
    let resolved = audit.iter().find(|e| e["action"] == "event.resolved").unwrap();
    assert_eq!(resolved["details"]["note"], "applied by hand, ticket OPS-7");
    assert_eq!(resolved["subject"], ids[0].as_str());
    let event = gw.event(&ids[0]).await.unwrap();
    assert_eq!(event["resolved"]["note"], "applied by hand, ticket OPS-7", "{event}");
    assert_eq!(event["resolved"]["by"], "bootstrap-admin", "{event}");
    assert!(gw.event(&ids[1]).await.unwrap()["resolved"].is_null());
}

async fn the_on_call_story(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    receiver.set_receipt_key(handler_key());
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    // Before the outage: events arrive, the handler applies them and says so.
    receiver.set(Behaviour { inline_receipt: true, ..Behaviour::default() });
    let mut before = Vec::new();
    for i in 0..5 {
        let (_, answer) = gw.ingest("orders", &[], json!({ "id": format!("pre-{i}") }).to_string().as_bytes()).await;
        before.push(answer["event_id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(10), "confirmed before the outage", || async {
        for id in &before {
            if gw.event(id).await?["outcome"] != "confirmed" {
                return None;
            }
        }
        Some(())
    })
    .await;
    // The outage: 20 events fail; the provider retries some of them (duplicates).
    let during = outage(&gw, &receiver, "out", 20).await;
    for i in 0..5 {
        let (_, again) = gw.ingest("orders", &[], json!({ "id": format!("out-{i}") }).to_string().as_bytes()).await;
        assert_eq!(again["duplicate"], true);
    }
    // Some were applied after all (the handler committed, then crashed before answering).
    for id in &during[..4] {
        confirm(&gw, id).await;
    }
    // 2 AM: find the gap.
    let (_, summary) = gw.admin_get("/v1/summary?source=orders&bucket=1h").await;
    assert_eq!(summary["totals"]["unknown"], 16, "{summary}");
    // Preview.
    let (_, plan) = replay(&gw, None, json!({ "source": "orders", "since": SINCE, "limit": 100 })).await;
    assert_eq!(plan["counts"], json!({ "confirmed": 9, "unknown": 16, "failed": 0, "resolved": 0 }));
    assert_eq!(plan["eligible"], 16);
    // The handler is back; run it live.
    receiver.set(Behaviour { inline_receipt: true, ..Behaviour::default() });
    let (status, job) = replay(&gw, None, json!({
        "source": "orders", "since": SINCE, "limit": 100, "rate": 20, "dry_run": false, "reason": "INC-7 orders outage"
    }))
    .await;
    assert_eq!(status, 202);
    let done = wait_done(&gw, job["id"].as_str().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(done["counts"]["succeeded"], 16, "{done}");
    // The gap is closed: every event confirmed by the handler's receipts.
    let summary = eventually(Duration::from_secs(10), "the gap closed", || async {
        let (_, summary) = gw.admin_get("/v1/summary?source=orders&bucket=1h").await;
        (summary["totals"]["unknown"] == 0).then_some(summary)
    })
    .await;
    assert_eq!(summary["totals"]["confirmed"], 25);
    assert_eq!(replayed(&receiver).len(), 16, "nothing confirmed was replayed");
}

/// The re-read before each batch of 500: a live run of 1,200 items, and while its first batch
/// goes out, receipts for 60 items of the second and third batches. Each is dropped when
/// its batch is read again, counted exactly, and the handler gets exactly the others.
async fn receipts_between_batches_drop_their_items_counted_exactly(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "b", 1200).await;
    let late: Vec<String> = ids[600..640].iter().chain(&ids[1100..1120]).cloned().collect();
    // Signed ahead, so that posting them takes well under the first batch's 12 s.
    let signed: Vec<_> = late.iter().map(|e| handler_key().sign(&Receipt::applied(e), sign::now_secs())).collect();
    let (status, job) = replay(
        &gw,
        None,
        json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "batches", "rate": 40, "limit": 1200 }),
    )
    .await;
    assert_eq!((status, job["eligible"].as_i64()), (202, Some(1200)), "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "the first batch going out", || async {
        (replayed(&receiver).len() >= 10).then_some(())
    })
    .await;
    let mut posting = tokio::task::JoinSet::new();
    for chunk in signed.chunks(8) {
        let (url, chunk) = (gw.url("/v1/receipts"), chunk.to_vec());
        posting.spawn(async move {
            for signed in chunk {
                let mut request = crate::support::client().post(&url).body(signed.body.clone());
                for (name, value) in signed.headers() {
                    request = request.header(name, value);
                }
                let answer = request.header("content-type", "application/json").send().await.unwrap();
                assert_eq!(answer.status(), 200, "{}", signed.receipt_id);
            }
        });
    }
    posting.join_all().await;
    assert!(replayed(&receiver).len() < 500, "the receipts landed after the first batch");
    let done = wait_done(&gw, &id, Duration::from_secs(90)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let counts = &done["counts"];
    assert_eq!((counts["sent"].as_i64(), counts["skipped_receipt"].as_i64()), (Some(1140), Some(60)), "{done}");
    assert_eq!((counts["succeeded"].as_i64(), counts["failed"].as_i64()), (Some(1140), Some(0)), "{done}");
    let sent = replayed(&receiver);
    let missing: Vec<&String> = ids.iter().filter(|e| !late.contains(e) && !sent.contains_key(*e)).collect();
    let extra: Vec<&String> = sent.keys().filter(|e| late.contains(e) || !ids.contains(e)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "not sent: {missing:?}; sent though receipted: {extra:?}");
    assert!(sent.values().all(|n| *n == 1), "an item sent twice");
    let at_batch = metric(&gw, "hookwarden_replay_skipped_receipts_total{at=\"batch\"}").await;
    assert_eq!(at_batch, 60.0, "not dropped by the re-read before their batches");
}

on_both_backends!(
    refusals_say_what_is_wrong,
    the_dry_run_counts_samples_sends_nothing_and_is_audited,
    confirmed_events_go_out_only_under_an_override_with_its_note_audited,
    receipts_drop_items_between_and_within_batches,
    a_cancelled_run_stops_sending,
    a_graceful_restart_hands_a_running_replay_on,
    chosen_events_including_a_failed_one_go_to_staging,
    a_throttling_handler_slows_the_replay_down,
    a_run_the_store_fails_under_ends_failed_and_says_why,
    resolving_an_event_closes_its_gap_with_an_audited_note,
    the_on_call_story,
    receipts_between_batches_drop_their_items_counted_exactly,
);
