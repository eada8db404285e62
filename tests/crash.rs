//! kill -9 of the gateway: every event answered 200 is there after restart, and delivery
//! (first attempts and pending retries) resumes, on SQLite and on PostgreSQL.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::support::receiver::Behaviour;
use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually};

fn spec(db: &TestDb, receiver: &Receiver, ladder: &[&str]) -> GatewaySpec {
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .ladder(ladder, 10);
    let mut spec = GatewaySpec::new(&db.url, vec![source]);
    // Leases of the killed process must run out quickly on PostgreSQL.
    (spec.lease, spec.timeout) = ("3s".into(), "2s".into());
    spec
}

async fn answered_events_survive_kill_9_during_a_burst(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let mut gw = Gateway::start(&spec(&db, &receiver, &["200ms"])).await;
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let url = gw.url("/ingest/orders");
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let acked = acked.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let client = crate::support::client();
                for n in 0.. {
                    let provider_id = format!("w{w}-{n}");
                    let body = json!({ "id": provider_id, "type": "burst" }).to_string();
                    let Ok(response) = client.post(&url).body(body).send().await else {
                        return;
                    };
                    if response.status() != 200 {
                        continue;
                    }
                    let Ok(answer) = response.json::<serde_json::Value>().await else {
                        return;
                    };
                    let event_id = answer["event_id"].as_str().unwrap().to_string();
                    acked.lock().unwrap().push((provider_id, event_id));
                }
            })
        })
        .collect();
    // Killed mid-burst once enough was answered to mean something (on a busy machine that
    // takes longer than on an idle one).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    eventually(Duration::from_secs(20), "50 events answered", || async {
        (acked.lock().unwrap().len() >= 50).then_some(())
    })
    .await;
    gw.kill9();
    for worker in workers {
        worker.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 50, "the burst was too small to mean anything: {}", acked.len());

    gw.restart().await;
    for (provider_id, event_id) in &acked {
        let event = gw.event(event_id).await.unwrap_or_else(|| panic!("{event_id} was answered 200 and then lost"));
        assert_eq!(event["provider_event_id"], provider_id.as_str());
    }
    eventually(Duration::from_secs(30), "every answered event delivered after restart", || async {
        let counts = receiver.counts_by_event();
        acked.iter().all(|(_, id)| counts.contains_key(id)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn answered_events_survive_kill_9_during_a_burst_sqlite() {
    answered_events_survive_kill_9_during_a_burst(Db::Sqlite).await;
}

#[tokio::test]
async fn answered_events_survive_kill_9_during_a_burst_postgres() {
    answered_events_survive_kill_9_during_a_burst(Db::Postgres).await;
}

async fn pending_retries_resume_after_kill_9(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { status: 500, ..Behaviour::default() });
    let mut gw = Gateway::start(&spec(&db, &receiver, &["1s"])).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (status, answer) = gw.ingest("orders", &[], json!({ "id": format!("r{n}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200);
        ids.push(answer["event_id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(10), "a first, failed attempt of each", || async {
        ids.iter().all(|id| !receiver.for_event(id).is_empty()).then_some(())
    })
    .await;
    gw.kill9();
    receiver.set(Behaviour::default());
    gw.restart().await;
    eventually(Duration::from_secs(30), "each event delivered by a resumed retry", || async {
        for id in &ids {
            let event = gw.event(id).await?;
            if event["delivery_state"] != "delivered" {
                return None;
            }
        }
        Some(())
    })
    .await;
    for id in &ids {
        let got = receiver.for_event(id);
        assert!(got.len() >= 2, "{id}: {} attempts", got.len());
        assert_eq!(got.last().unwrap().header("idempotency-key"), got[0].header("idempotency-key"));
    }
}

#[tokio::test]
async fn pending_retries_resume_after_kill_9_sqlite() {
    pending_retries_resume_after_kill_9(Db::Sqlite).await;
}

#[tokio::test]
async fn pending_retries_resume_after_kill_9_postgres() {
    pending_retries_resume_after_kill_9(Db::Postgres).await;
}

async fn sigterm_stops_the_gateway_cleanly(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let mut gw = Gateway::start(&spec(&db, &receiver, &["200ms"])).await;
    for n in 0..20 {
        let (status, _) = gw.ingest("orders", &[], json!({ "id": format!("t{n}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200);
    }
    let status = gw.terminate(Duration::from_secs(10)).await.expect("the gateway did not stop within 10 s of SIGTERM");
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn sigterm_stops_the_gateway_cleanly_sqlite() {
    sigterm_stops_the_gateway_cleanly(Db::Sqlite).await;
}

#[tokio::test]
async fn sigterm_stops_the_gateway_cleanly_postgres() {
    sigterm_stops_the_gateway_cleanly(Db::Postgres).await;
}
