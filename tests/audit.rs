//! The audit log: append-only in the database itself, and every audited change commits with
//! its entry or not at all, on both backends.

use std::time::Duration;

use serde_json::{Value, json};

use crate::replay::{outage, replay, replayed, spec, wait_done};
use crate::support::{Db, Gateway, Receiver, TestDb, eventually, on_both_backends};

const SINCE: &str = "2000-01-01T00:00:00Z";

/// The entries' actions, oldest first.
async fn actions(gw: &Gateway) -> Vec<String> {
    gw.audit().await.iter().map(|e| e["action"].as_str().unwrap().to_string()).collect()
}

/// The chain verifies from the first entry.
async fn verify(gw: &Gateway) {
    let entries: Vec<hookwarden::audit::AuditEntry> =
        gw.audit().await.into_iter().map(|e| serde_json::from_value(e).unwrap()).collect();
    hookwarden::audit::verify_chain(&entries, hookwarden::audit::GENESIS).unwrap();
}

/// Anyone with a SQL shell is refused too: the database's own triggers turn down an `UPDATE`
/// or a `DELETE` of the audit log, and the chain stays as written.
async fn the_audit_log_refuses_updates_and_deletes(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    gw.token("olga", "operator").await;
    gw.token("vera", "viewer").await;
    let before = gw.audit().await;
    assert_eq!(before.len(), 2);
    for sql in [
        "UPDATE audit_log SET actor = 'mallory' WHERE seq = 1",
        "UPDATE audit_log SET details = '{}'",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_log",
    ] {
        let refused = db.try_execute(sql).await.expect_err(sql);
        assert!(refused.contains("the audit log is append-only"), "{sql}: {refused}");
    }
    assert_eq!(gw.audit().await, before, "the log changed");
    verify(&gw).await;
}

on_both_backends!(the_audit_log_refuses_updates_and_deletes);

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

/// With audit entries refused, every audited change is refused with a 503 and leaves no
/// trace: an event stays unresolved, a token is not created, a replay neither starts nor
/// stops nor ends. Once entries are taken again, each change goes through with its entry.
async fn audited_changes_commit_with_their_entry_or_not_at_all(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "a", 6).await;
    // A run that is under way when the audit log breaks: 3 items at one a second.
    let (status, running) =
        replay(&gw, None, json!({ "event_ids": &ids[3..], "dry_run": false, "reason": "audit check", "rate": 1 }))
            .await;
    assert_eq!(status, 202, "{running}");
    let running = running["id"].as_str().unwrap().to_string();
    let audited_before = actions(&gw).await;
    db.refuse("INSERT", "audit_log").await;

    let resolve = format!("/v1/events/{}/resolve", ids[0]);
    let (status, answer) = gw.admin_post(&resolve, &json!({ "note": "fixed by hand" })).await;
    assert_eq!((status, code(&answer)), (503, "store_unavailable"), "{answer}");
    let event = gw.event(&ids[0]).await.unwrap();
    assert_eq!((event["outcome"].as_str(), event["resolved"].is_null()), (Some("unknown"), true), "{event}");

    let (status, answer) = gw.admin_post("/v1/tokens", &json!({ "name": "tina", "role": "operator" })).await;
    assert_eq!((status, code(&answer)), (503, "store_unavailable"), "{answer}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tokens").await, 0, "the token was stored without its entry");

    let live = json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "r", "rate": 50 });
    let (status, answer) = replay(&gw, None, live.clone()).await;
    assert_eq!((status, code(&answer)), (503, "store_unavailable"), "{answer}");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM replays").await, 1, "a replay was stored without its entry");

    let (status, answer) = gw.admin_post(&format!("/v1/replays/{running}/cancel"), &json!({})).await;
    assert_eq!((status, code(&answer)), (503, "store_unavailable"), "{answer}");
    // The run goes on, sends its items, and cannot end without its entry: it stays running
    // (and is taken up again, once its lease ran out, to try to end again).
    let sent = eventually(Duration::from_secs(15), "the run's items sent", || async {
        let (_, job) = gw.admin_get(&format!("/v1/replays/{running}")).await;
        (job["counts"]["sent"] == 3).then_some(job)
    })
    .await;
    assert_eq!(sent["state"], "running", "{sent}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, job) = gw.admin_get(&format!("/v1/replays/{running}")).await;
    assert_eq!(job["state"], "running", "the run ended without its entry: {job}");
    assert_eq!(actions(&gw).await, audited_before, "an entry was written while entries were refused");
    assert_eq!(replayed(&receiver).len(), 3, "only the running replay's items went out");

    db.allow("INSERT", "audit_log").await;
    let done = wait_done(&gw, &running, Duration::from_secs(20)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let (status, answer) = gw.admin_post(&resolve, &json!({ "note": "fixed by hand" })).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = gw.admin_post("/v1/tokens", &json!({ "name": "tina", "role": "operator" })).await;
    assert_eq!(status, 201, "the refused token's name was taken: {answer}");
    let after: Vec<String> = actions(&gw).await.split_off(audited_before.len());
    assert_eq!(after, ["replay.finished", "event.resolved", "token.created"]);
    let (status, answer) = replay(&gw, None, live).await;
    assert_eq!(status, 202, "{answer}");
    let started = actions(&gw).await.iter().filter(|a| *a == "replay.started").count();
    assert_eq!(started, 2, "the refused replay left an entry, or the new one none");
    verify(&gw).await;
}

on_both_backends!(audited_changes_commit_with_their_entry_or_not_at_all);
