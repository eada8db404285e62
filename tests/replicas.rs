//! Several gateways on one PostgreSQL database; one gateway per SQLite file.

use std::time::Duration;

use serde_json::json;

use crate::support::receiver::Behaviour;
use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually};

fn spec(db: &TestDb, receiver: &Receiver) -> GatewaySpec {
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }");
    let mut spec = GatewaySpec::new(&db.url, vec![source]);
    spec.lease = "2s".into();
    spec
}

#[tokio::test]
async fn two_gateways_deliver_each_event_once_and_none_is_left_behind() {
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    // A little handler latency keeps both dispatchers busy at once.
    receiver.set(Behaviour { delay: Duration::from_millis(20), ..Behaviour::default() });
    let spec = spec(&db, &receiver);
    let (a, b) = tokio::join!(Gateway::start(&spec), Gateway::start(&spec));
    let mut ids = Vec::new();
    for n in 0..300 {
        let gw = if n % 2 == 0 { &a } else { &b };
        let (status, answer) = gw.ingest("orders", &[], json!({ "id": format!("e{n}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["event_id"].as_str().unwrap().to_string());
    }
    // Dedup holds across gateways too.
    let (_, again) = b.ingest("orders", &[], json!({ "id": "e0" }).to_string().as_bytes()).await;
    assert_eq!(again["event_id"], ids[0].as_str());
    eventually(Duration::from_secs(30), "all 300 delivered", || async {
        (receiver.counts_by_event().len() >= 300).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = receiver.counts_by_event();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert!(ids.iter().all(|id| counts.contains_key(id)));
}

#[tokio::test]
async fn when_one_gateway_is_killed_the_other_delivers_its_leased_work() {
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    // The handler hangs, so gateway A's deliveries are all in flight, under A's leases.
    receiver.set(Behaviour { delay: Duration::from_secs(30), ..Behaviour::default() });
    let spec = spec(&db, &receiver);
    let mut a = Gateway::start(&spec).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let (status, answer) = a.ingest("orders", &[], json!({ "id": format!("k{n}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200);
        ids.push(answer["event_id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(10), "A has every event in flight", || async {
        (receiver.count() >= 10).then_some(())
    })
    .await;
    let b = Gateway::start(&spec).await;
    a.kill9();
    receiver.set(Behaviour::default());
    eventually(Duration::from_secs(20), "B delivered A's leased events", || async {
        for id in &ids {
            if b.event(id).await?["delivery_state"] != "delivered" {
                return None;
            }
        }
        Some(())
    })
    .await;
    for id in &ids {
        assert_eq!(receiver.for_event(id).len(), 2, "A's hung attempt, then B's");
    }
}

/// SQLite leases live in the gateway's memory, so a second gateway on the same file would
/// resend events: it must refuse to start, and a killed gateway must not block the next.
#[tokio::test]
async fn a_second_gateway_on_one_sqlite_file_refuses_to_start() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let spec = spec(&db, &receiver);
    let mut first = Gateway::start(&spec).await;
    let (status, log) = Gateway::start_refused(&spec).await;
    assert!(!status.success(), "a second gateway ran on the same SQLite file");
    assert!(log.contains("another gateway is running on this SQLite database"), "{log}");

    first.kill9();
    let mut next = Gateway::start(&spec).await;
    let (status, answer) = next.ingest("orders", &[], json!({ "id": "after" }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    next.terminate(Duration::from_secs(10)).await;
}
