//! The status probe, gateway side (docs/status-probe.md): `hookwarden reconcile` against the
//! real example handler, whose receipts were lost, and against a probe server of the test's
//! own that answers forged, replayed, slow or no answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use receipts_sdk::probe::{AnswerEntry, ProbeAnswer, verify_probe};
use receipts_sdk::receipt::{Receipt, ReceiptKey};
use receipts_sdk::webhook::WebhookSecret;
use serde_json::{Value, json};

use crate::cli::{hookwarden, stdout};
use crate::handler::{HandlerProcess, free_addr, handler_key, order_event_ids, orders_handler_binary, outbox};
use crate::support::gateway::SIGNING_SECRET;
use crate::support::receiver::Behaviour;
use crate::support::sign::{now_ms, now_secs, receipt_key, receipt_keys_line};
use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, on_both_backends};

on_both_backends!(
    a_reconcile_settles_what_the_handler_applied,
    forged_slow_or_absent_answers_settle_nothing,
    a_replay_asks_first_and_sends_only_what_the_handler_lacks,
    a_slow_or_dead_status_url_never_stalls_a_replay,
    events_that_need_no_receipt_are_confirmed_by_their_2xx,
);

/// Ingests `body` to `source` (no signature); the new event's id.
pub(crate) async fn ingest(gw: &Gateway, source: &str, body: &Value) -> String {
    let (status, answer) = gw.ingest(source, &[], body.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().expect("event_id").to_string()
}

async fn event(gw: &Gateway, id: &str) -> Value {
    gw.event(id).await.unwrap_or_else(|| panic!("no event {id}"))
}

/// `(outcome, [via of each receipt])` of an event.
async fn settled(gw: &Gateway, id: &str) -> (String, Vec<String>) {
    let e = event(gw, id).await;
    let vias = e["receipts"].as_array().unwrap().iter().map(|r| r["via"].as_str().unwrap().to_string()).collect();
    (e["outcome"].as_str().unwrap().to_string(), vias)
}

/// A handler that applied 6 events and failed 1 but lost every receipt (its flusher never
/// ran), and never saw 2 more: a reconcile confirms the 6 and fails the 1 through the probe,
/// leaves the 2 `unknown`, and is audited with those counts. The receipts the handler posts
/// later are duplicates: one receipt per event in the ledger.
async fn a_reconcile_settles_what_the_handler_applied(kind: Db) {
    orders_handler_binary();
    let db = TestDb::new(kind).await;
    let addr = free_addr();
    let key = handler_key();
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &HandlerProcess::forward_to(addr))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&format!("receipt_keys = [{{ id = \"{}\", public_key = \"{}\" }}]", key.id, key.public_key_base64()))
        .with(&format!("status_url = \"http://{addr}/hookwarden/status/orders\""))
        .with("status_timeout = \"5s\"")
        .ladder(&["60s"], 5);
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![source])).await;
    let mut handler = HandlerProcess::rust(addr, &gw);
    handler.start(&[("HANDLER_PAUSE_FLUSH", "1")]).await;

    let mut applied = Vec::new();
    for n in 0..6 {
        applied.push(ingest(&gw, "orders", &json!({ "id": format!("ord_rec_{n}"), "amount": n })).await);
    }
    let refused = ingest(&gw, "orders", &json!({ "id": "ord_rec_bad", "fail": true })).await;
    eventually(Duration::from_secs(20), "the handler answered every forward", || async {
        for id in &applied {
            (gw.event(id).await?["delivery_state"] == "delivered").then_some(())?;
        }
        (gw.event(&refused).await?["attempt_log"][0]["status_code"] == 422).then_some(())
    })
    .await;
    assert_eq!(order_event_ids(&handler.orders().await), applied, "the handler applied the six");
    // Two more while the handler is down: it never sees them.
    handler.kill9();
    let mut unseen = Vec::new();
    for n in 0..2 {
        unseen.push(ingest(&gw, "orders", &json!({ "id": format!("ord_unseen_{n}") })).await);
    }
    eventually(Duration::from_secs(20), "the two forwards failed", || async {
        for id in &unseen {
            gw.event(id).await?["attempt_log"].as_array().filter(|a| !a.is_empty())?;
        }
        Some(())
    })
    .await;
    handler.start(&[("HANDLER_PAUSE_FLUSH", "1")]).await;
    for id in applied.iter().chain([&refused]).chain(&unseen) {
        assert_eq!(settled(&gw, id).await, ("unknown".to_string(), vec![]), "receipts lost: all unknown");
    }

    let out = hookwarden(&gw, &["reconcile", "orders", "--since", "1h"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "asked the handler about 9 of 9 unknown events in 1 probes",
        "confirmed            6",
        "failed               1",
        "still unknown        2",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    for id in &applied {
        assert_eq!(settled(&gw, id).await, ("confirmed".to_string(), vec!["probe".to_string()]), "{id}");
    }
    assert_eq!(settled(&gw, &refused).await, ("failed".to_string(), vec!["probe".to_string()]));
    assert_eq!(event(&gw, &refused).await["error_code"], "E_REJECTED");
    for id in &unseen {
        assert_eq!(settled(&gw, id).await, ("unknown".to_string(), vec![]), "the handler said nothing of {id}");
    }
    let audit = gw.audit().await;
    let entry = audit.iter().rev().find(|e| e["action"] == "reconcile").expect("the reconcile is audited");
    assert_eq!(entry["subject"], "orders", "{entry}");
    let counts = &entry["details"]["counts"];
    assert_eq!((counts["asked"].as_i64(), counts["confirmed"].as_i64()), (Some(9), Some(6)), "{entry}");
    assert_eq!((counts["failed"].as_i64(), counts["still_unknown"].as_i64()), (Some(1), Some(2)), "{entry}");

    // Asked again, the two the handler never saw stay unknown; nothing else is asked.
    let (status, again) =
        gw.admin_post("/v1/reconcile", &json!({ "source": "orders", "since": "2020-01-01T00:00:00Z" })).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!((again["counts"]["asked"].as_i64(), again["counts"]["still_unknown"].as_i64()), (Some(2), Some(2)));
    assert_eq!(again["complete"], true, "{again}");

    // The handler's flusher runs at last: the gateway has each of those receipts already.
    handler.kill9();
    handler.start(&[]).await;
    eventually(Duration::from_secs(20), "the handler's outbox drained", || async {
        outbox(&handler_db(&handler)).await.iter().all(|row| row.sent).then_some(())
    })
    .await;
    for row in outbox(&handler_db(&handler)).await {
        assert!(row.error.is_none(), "the gateway refused the posted receipt: {row:?}");
    }
    for id in &applied {
        assert_eq!(settled(&gw, id).await.1, ["probe"], "one receipt per event, posted later as a duplicate");
    }
}

fn handler_db(handler: &HandlerProcess) -> std::path::PathBuf {
    handler.db_path.clone()
}

/// What the test's probe server does, per source (the last segment of its path).
#[derive(Default)]
pub(crate) struct ProbeServer {
    /// The answer to give, per source; `None`: hang for a minute.
    pub answers: Mutex<HashMap<String, Option<Vec<AnswerEntry>>>>,
    /// Every probe received: (source, asked ids, whether its signature verified).
    pub asked: Mutex<Vec<(String, Vec<String>, bool)>>,
}

async fn probe_endpoint(
    State(server): State<Arc<ProbeServer>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let secret = WebhookSecret::parse(SIGNING_SECRET).unwrap();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verified = verify_probe(&secret, header, &body, now_secs());
    let ids = verified.as_ref().map(|p| p.event_ids.clone()).unwrap_or_default();
    server.asked.lock().unwrap().push((source.clone(), ids, verified.is_ok()));
    let answer = server.answers.lock().unwrap().get(&source).cloned().unwrap_or(Some(vec![]));
    match answer {
        Some(receipts) => (StatusCode::OK, ProbeAnswer { receipts }.to_json()).into_response(),
        None => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::OK.into_response()
        }
    }
}

pub(crate) async fn start_probe_server() -> (SocketAddr, Arc<ProbeServer>) {
    let server = Arc::new(ProbeServer::default());
    let app = Router::new()
        .route("/status/{source}", post(probe_endpoint))
        .route("/webhooks", post(|| async { StatusCode::OK }))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, server)
}

pub(crate) fn entry(key: &ReceiptKey, event_id: &str, receipt_id: &str, timestamp: i64) -> AnswerEntry {
    AnswerEntry::from_signed(&key.sign_with_id(&Receipt::applied(event_id), receipt_id, timestamp))
}

async fn reconcile(gw: &Gateway, source: &str, since_ms: i64, token: Option<&str>) -> (u16, Value) {
    let body = json!({ "source": source, "since": hookwarden::timestamp::format_ms(since_ms) });
    gw.call("POST", "/v1/reconcile", token, Some(&body)).await
}

/// Forged answers (an unknown key, the right key id with another key's signature, a receipt
/// signed ten minutes ago, a receipt for an event the probe did not ask about, an honest
/// receipt captured from one probe replayed in the answer to another) settle nothing and are
/// counted refused by code; a slow status_url and one nobody listens on are failed probes,
/// answered within the timeout; only operators of the source may reconcile.
async fn forged_slow_or_absent_answers_settle_nothing(kind: Db) {
    let db = TestDb::new(kind).await;
    let (addr, server) = start_probe_server().await;
    let key = receipt_key("probe-key", 7);
    let keys = receipt_keys_line(&[(&key, false)]);
    let dead = crate::support::free_port();
    let source = |name: &str, status_url: String| {
        SourceSpec::new(name, "{ kind = \"none\" }", &format!("http://{addr}/webhooks"))
            .with(&keys)
            .with(&format!("status_url = \"{status_url}\""))
            .with("status_timeout = \"700ms\"")
    };
    let spec = GatewaySpec::new(
        &db.url,
        vec![
            source("forged", format!("http://{addr}/status/forged")),
            source("slow", format!("http://{addr}/status/slow")),
            source("dead", format!("http://{dead}/status")),
        ],
    );
    let gw = Gateway::start(&spec).await;

    let outside = ingest(&gw, "forged", &json!({ "n": "outside" })).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = now_ms();
    let mut inside = Vec::new();
    for n in 0..3 {
        inside.push(ingest(&gw, "forged", &json!({ "n": n })).await);
    }
    let slow_event = ingest(&gw, "slow", &json!({ "n": "slow" })).await;
    let dead_event = ingest(&gw, "dead", &json!({ "n": "dead" })).await;
    eventually(Duration::from_secs(20), "all delivered", || async {
        for id in inside.iter().chain([&outside, &slow_event, &dead_event]) {
            (gw.event(id).await?["delivery_state"] == "delivered").then_some(())?;
        }
        Some(())
    })
    .await;

    let now = now_secs();
    let intruder = receipt_key("intruder", 9);
    let impostor = receipt_key("probe-key", 8); // the right key id, another private key
    let honest_for_outside = entry(&key, &outside, "rcp_outside_1", now);
    server.answers.lock().unwrap().insert(
        "forged".into(),
        Some(vec![
            entry(&intruder, &inside[0], "rcp_forged_1", now),
            entry(&impostor, &inside[1], "rcp_forged_2", now),
            entry(&key, &inside[2], "rcp_forged_3", now - 600),
            honest_for_outside.clone(),
        ]),
    );
    let (status, answer) = reconcile(&gw, "forged", since, None).await;
    assert_eq!(status, 200, "{answer}");
    let counts = &answer["counts"];
    assert_eq!(answer["complete"], false, "{answer}");
    assert_eq!((counts["asked"].as_i64(), counts["entries"].as_i64()), (Some(3), Some(4)), "{answer}");
    assert_eq!((counts["confirmed"].as_i64(), counts["still_unknown"].as_i64()), (Some(0), Some(3)), "{answer}");
    assert_eq!(
        counts["refused_by_code"],
        json!({ "receipt_key_unknown": 1, "receipt_signature_invalid": 1, "receipt_timestamp_stale": 1,
                "probe_event_unasked": 1 }),
        "{answer}"
    );
    for id in inside.iter().chain([&outside]) {
        assert_eq!(settled(&gw, id).await, ("unknown".to_string(), vec![]), "a forged answer settled {id}");
    }
    {
        let asked = server.asked.lock().unwrap();
        let (source, ids, verified) = asked.last().unwrap().clone();
        assert_eq!((source.as_str(), verified), ("forged", true), "the gateway's probe verifies with the secret");
        assert_eq!(ids, inside, "the probe asked about the window's unknown events, in order, and nothing else");
    }

    // An honest receipt for the first event settles it; captured and replayed in the answer
    // to a probe about the others, it settles nothing more.
    let honest = entry(&key, &inside[0], "rcp_honest_1", now_secs());
    server.answers.lock().unwrap().insert("forged".into(), Some(vec![honest.clone()]));
    // With its audit entry refused, a reconcile records nothing either.
    db.refuse("INSERT", "audit_log").await;
    let (status, answer) = reconcile(&gw, "forged", since, None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("store_unavailable")), "{answer}");
    assert_eq!(settled(&gw, &inside[0]).await, ("unknown".to_string(), vec![]), "settled without its entry");
    db.allow("INSERT", "audit_log").await;
    let (status, answer) = reconcile(&gw, "forged", since, None).await;
    assert_eq!((status, answer["counts"]["confirmed"].as_i64()), (200, Some(1)), "{answer}");
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(settled(&gw, &inside[0]).await, ("confirmed".to_string(), vec!["probe".to_string()]));
    server.answers.lock().unwrap().insert("forged".into(), Some(vec![honest]));
    let (status, answer) = reconcile(&gw, "forged", since, None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["counts"]["refused_by_code"], json!({ "probe_event_unasked": 1 }), "{answer}");
    assert_eq!(answer["counts"]["still_unknown"], 2, "{answer}");
    for id in &inside[1..] {
        assert_eq!(settled(&gw, id).await, ("unknown".to_string(), vec![]));
    }
    assert_eq!(event(&gw, &inside[0]).await["receipts"].as_array().unwrap().len(), 1, "recorded once");

    // A slow status_url and a dead one: failed probes, within the timeout, nothing settled.
    server.answers.lock().unwrap().insert("slow".into(), None);
    for (name, id) in [("slow", &slow_event), ("dead", &dead_event)] {
        let started = Instant::now();
        let out = hookwarden(&gw, &["reconcile", name, "--since", "1h"]).await;
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "{name}: took {elapsed:?}");
        assert_eq!(out.status.code(), Some(1), "{name}: a failed probe is not a complete reconcile");
        let text = stdout(&out);
        assert!(text.contains("1 of 1 probes FAILED (1 events not asked in effect)"), "{name}:\n{text}");
        if name == "slow" {
            assert!(text.contains("no answer within 700ms"), "{text}");
        }
        assert!(String::from_utf8_lossy(&out.stderr).contains("1 probes failed"), "{name}");
        assert_eq!(settled(&gw, id).await, ("unknown".to_string(), vec![]));
    }

    // Operators only, of the source: a viewer, or an operator of another source, is refused.
    let viewer = gw.token("viewer", "viewer").await;
    let (status, answer) = reconcile(&gw, "forged", since, Some(&viewer)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("role_insufficient")), "{answer}");
    let body = json!({ "name": "slow-op", "role": "operator", "sources": ["slow"] });
    let (status, made) = gw.admin_post("/v1/tokens", &body).await;
    assert_eq!(status, 201, "{made}");
    let (status, answer) = reconcile(&gw, "forged", since, made["token"].as_str()).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("source_forbidden")), "{answer}");
    let reconciles = gw.audit().await.into_iter().filter(|e| e["action"] == "reconcile").count();
    assert_eq!(reconciles, 5, "every reconcile that ran is audited, the refused ones are not");
}

/// The issue's story: a handler applied 30 of 100 events but lost their receipts, and never
/// saw the other 70. The dry run shows the 30 settled by the probe and records nothing; the
/// live run sends exactly the 70, and the handler's own table holds each event once.
async fn a_replay_asks_first_and_sends_only_what_the_handler_lacks(kind: Db) {
    orders_handler_binary();
    let db = TestDb::new(kind).await;
    let addr = free_addr();
    let key = handler_key();
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &HandlerProcess::forward_to(addr))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&format!("receipt_keys = [{{ id = \"{}\", public_key = \"{}\" }}]", key.id, key.public_key_base64()))
        .with(&format!("status_url = \"http://{addr}/hookwarden/status/orders\""))
        .ladder(&["60s"], 5);
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![source])).await;
    let mut handler = HandlerProcess::rust(addr, &gw);
    handler.start(&[("HANDLER_PAUSE_FLUSH", "1")]).await;

    let mut applied = Vec::new();
    for n in 0..30 {
        applied.push(ingest(&gw, "orders", &json!({ "id": format!("ord_a_{n}"), "amount": n })).await);
    }
    eventually(Duration::from_secs(30), "the handler applied the 30", || async {
        (handler.orders().await.len() == 30).then_some(())
    })
    .await;
    handler.kill9();
    let mut missed = Vec::new();
    for n in 0..70 {
        missed.push(ingest(&gw, "orders", &json!({ "id": format!("ord_m_{n}"), "amount": n })).await);
    }
    eventually(Duration::from_secs(30), "the 70 forwards failed", || async {
        let (_, page) = gw.admin_get("/v1/events?limit=1000&filter=attempts%20%3E%3D%201").await;
        (page["data"].as_array()?.len() == 100).then_some(())
    })
    .await;
    handler.start(&[("HANDLER_PAUSE_FLUSH", "1")]).await;
    let all: Vec<String> = applied.iter().chain(&missed).cloned().collect();
    for id in &all {
        assert_eq!(settled(&gw, id).await, ("unknown".to_string(), vec![]), "receipts lost: all unknown");
    }

    let out = hookwarden(&gw, &["replay", "orders", "--since", "1h", "--limit", "100"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Ask first     30 of 100 unknown would be settled by the handler (not sent)"), "{text}");
    for id in &all {
        assert_eq!(settled(&gw, id).await, ("unknown".to_string(), vec![]), "the dry run recorded {id}");
    }
    assert_eq!(handler.orders().await.len(), 30, "the dry run sent nothing");

    let live = [
        "replay",
        "orders",
        "--since",
        "1h",
        "--limit",
        "100",
        "--rate",
        "500",
        "--no-dry-run",
        "--reason",
        "issue 19",
    ];
    let out = hookwarden(&gw, &live).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("sent 70, succeeded 70, failed 0, skipped (receipt arrived) 0, skipped (the handler had it) 30"),
        "{text}"
    );
    let (_, jobs) = gw.admin_get("/v1/audit?limit=1000").await;
    let finished = jobs["entries"].as_array().unwrap().iter().rev().find(|e| e["action"] == "replay.finished").cloned();
    let counts = &finished.expect("the run's end is audited")["details"]["counts"];
    assert_eq!(
        (counts["sent"].as_i64(), counts["skipped_probe"].as_i64(), counts["skipped_receipt"].as_i64()),
        (Some(70), Some(30), Some(0)),
        "{counts}"
    );
    assert_eq!((counts["probes"].as_i64(), counts["probes_failed"].as_i64()), (Some(1), Some(0)), "{counts}");
    let mut expected = all.clone();
    expected.sort();
    assert_eq!(order_event_ids(&handler.orders().await), expected, "each event applied once, none twice");
    for id in &applied {
        let e = event(&gw, id).await;
        assert_eq!((e["outcome"].as_str(), e["attempts"].as_i64()), (Some("confirmed"), Some(1)), "not resent: {e}");
        assert_eq!(e["receipts"][0]["via"], "probe", "{e}");
    }
    for id in &missed {
        let e = event(&gw, id).await;
        assert_eq!(e["attempts"], 2, "sent once by the replay: {e}");
    }
}

/// A status_url that hangs, or that nobody listens on, costs a replay its timeout and
/// nothing else: the run completes, sends every item, and counts the failed probe; with
/// `ask_first: false` nothing is asked.
async fn a_slow_or_dead_status_url_never_stalls_a_replay(kind: Db) {
    let db = TestDb::new(kind).await;
    let (addr, server) = start_probe_server().await;
    let key = receipt_key("probe-key", 7);
    let dead = crate::support::free_port();
    let source = |name: &str, status_url: String| {
        SourceSpec::new(name, "{ kind = \"none\" }", &format!("http://{addr}/webhooks"))
            .with(&receipt_keys_line(&[(&key, false)]))
            .with(&format!("status_url = \"{status_url}\""))
            .with("status_timeout = \"700ms\"")
    };
    let spec = GatewaySpec::new(
        &db.url,
        vec![source("slow", format!("http://{addr}/status/slow")), source("dead", format!("http://{dead}/status"))],
    );
    let gw = Gateway::start(&spec).await;
    server.answers.lock().unwrap().insert("slow".into(), None);
    let since = hookwarden::timestamp::format_ms(now_ms() - 1000);
    let mut ids = Vec::new();
    for name in ["slow", "dead"] {
        for n in 0..3 {
            ids.push(ingest(&gw, name, &json!({ "n": n, "source": name })).await);
        }
    }
    eventually(Duration::from_secs(20), "all delivered", || async {
        for id in &ids {
            (gw.event(id).await?["delivery_state"] == "delivered").then_some(())?;
        }
        Some(())
    })
    .await;
    for (name, ask_first) in [("slow", true), ("dead", true), ("slow", false)] {
        let started = Instant::now();
        let body = json!({ "source": name, "since": since, "dry_run": false, "reason": "r", "rate": 100,
                           "ask_first": ask_first });
        let (status, answer) = gw.admin_post("/v1/replays", &body).await;
        assert_eq!(status, 202, "{answer}");
        let id = answer["id"].as_str().unwrap().to_string();
        let job = eventually(Duration::from_secs(10), "the replay ended", || async {
            let (_, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
            (job["state"] != "running").then_some(job)
        })
        .await;
        let elapsed = started.elapsed();
        assert_eq!(job["state"], "completed", "{name}: {job}");
        let c = &job["counts"];
        assert_eq!((c["sent"].as_i64(), c["succeeded"].as_i64()), (Some(3), Some(3)), "{name}: {job}");
        let probes = if ask_first { 1 } else { 0 };
        assert_eq!((c["probes"].as_i64(), c["probes_failed"].as_i64()), (Some(probes), Some(probes)), "{name}: {job}");
        assert_eq!(c["skipped_probe"], 0, "{name}: {job}");
        assert!(elapsed < Duration::from_secs(5), "{name}: the replay took {elapsed:?}");
    }
}

/// A source's `no_receipt_types` (exact or `*` globs): such an event is `confirmed` by its
/// 2xx, first delivery or replay, with the reason shown; it never sits in the gap view, and a
/// replay treats it as confirmed. Other types still wait for a receipt.
async fn events_that_need_no_receipt_are_confirmed_by_their_2xx(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with("event_type = { json_pointer = \"/type\" }")
        .with("no_receipt_types = [\"ping\", \"*.updated\"]")
        .ladder(&["1h"], 8);
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![source])).await;
    let since = hookwarden::timestamp::format_ms(now_ms() - 1000);

    // Handler down: neither is confirmed by a failed attempt.
    receiver.set(Behaviour { status: 500, ..Behaviour::default() });
    let updated = ingest(&gw, "orders", &json!({ "id": "a", "type": "customer.updated" })).await;
    let created = ingest(&gw, "orders", &json!({ "id": "b", "type": "order.created" })).await;
    eventually(Duration::from_secs(20), "both attempted", || async {
        let counts = receiver.counts_by_event();
        (counts.contains_key(&updated) && counts.contains_key(&created)).then_some(())
    })
    .await;
    for id in [&updated, &created] {
        let e = event(&gw, id).await;
        assert_eq!((e["outcome"].as_str(), &e["outcome_reason"]), (Some("unknown"), &Value::Null), "{e}");
    }

    // Handler up: a ping is confirmed by its 2xx, an order waits for its receipt.
    receiver.set(Behaviour::default());
    let ping = ingest(&gw, "orders", &json!({ "id": "c", "type": "ping" })).await;
    let order = ingest(&gw, "orders", &json!({ "id": "d", "type": "order.created" })).await;
    let confirmed = eventually(Duration::from_secs(20), "the ping confirmed", || async {
        let e = gw.event(&ping).await?;
        (e["outcome"] == "confirmed").then_some(e)
    })
    .await;
    assert_eq!(
        confirmed["outcome_reason"],
        "no receipt needed: event type `ping` matches `ping` in no_receipt_types; a 2xx confirms it"
    );
    assert!(confirmed["receipts"].as_array().unwrap().is_empty(), "{confirmed}");
    eventually(Duration::from_secs(20), "the order delivered", || async {
        (gw.event(&order).await?["delivery_state"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(event(&gw, &order).await["outcome"], "unknown");
    let shown = hookwarden(&gw, &["events", "show", &ping]).await;
    assert!(stdout(&shown).contains("why              no receipt needed: event type `ping`"), "{}", stdout(&shown));

    // The gap view counts the ping confirmed, never unknown or overdue.
    let (_, summary) = gw.admin_get(&format!("/v1/summary?source=orders&since={since}")).await;
    assert_eq!(
        (summary["totals"]["confirmed"].as_i64(), summary["totals"]["unknown"].as_i64()),
        (Some(1), Some(3)),
        "{summary}"
    );

    // A replay treats the ping as confirmed; replayed with a 2xx, the updated event is
    // confirmed too, the orders still wait for receipts.
    let dry = json!({ "source": "orders", "since": since });
    let (status, plan) = gw.admin_post("/v1/replays", &dry).await;
    assert_eq!(
        (status, plan["counts"]["confirmed"].as_i64(), plan["eligible"].as_i64()),
        (200, Some(1), Some(3)),
        "{plan}"
    );
    let live = json!({ "source": "orders", "since": since, "dry_run": false, "reason": "r", "rate": 100 });
    let (status, started) = gw.admin_post("/v1/replays", &live).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    let job = eventually(Duration::from_secs(20), "the replay ended", || async {
        let (_, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
        (job["state"] != "running").then_some(job)
    })
    .await;
    assert_eq!((job["state"].as_str(), job["counts"]["sent"].as_i64()), (Some("completed"), Some(3)), "{job}");
    let e = event(&gw, &updated).await;
    assert_eq!(e["outcome"], "confirmed", "{e}");
    assert!(e["outcome_reason"].as_str().unwrap().contains("`customer.updated` matches `*.updated`"), "{e}");
    for id in [&created, &order] {
        assert_eq!(event(&gw, id).await["outcome"], "unknown");
    }
    let (_, plan) = gw.admin_post("/v1/replays", &dry).await;
    assert_eq!((plan["counts"]["confirmed"].as_i64(), plan["eligible"].as_i64()), (Some(2), Some(2)), "{plan}");
}
