//! Several gateways on one PostgreSQL database (leases, receipts announced across gateways,
//! a replay taken over, the order received whatever the hosts' clocks); one gateway per
//! SQLite file.

use std::time::Duration;

use serde_json::json;

use crate::replay;
use crate::support::receiver::Behaviour;
use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, metric};

const SINCE: &str = "2000-01-01T00:00:00Z";

fn spec(db: &TestDb, receiver: &Receiver) -> GatewaySpec {
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }");
    let mut spec = GatewaySpec::new(&db.url, vec![source]);
    (spec.lease, spec.timeout) = ("3s".into(), "2s".into());
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
    let mut spec = spec(&db, &receiver);
    // A's forwards stay out (no timeout) until A is killed; its leases then run out.
    (spec.lease, spec.timeout) = ("6s".into(), "5s".into());
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

/// A delivery's lease outlasts its forward. Here the source takes one request at a time and
/// the handler takes a second, so claimed events wait their turn past the 3.5 s lease they
/// were claimed under: each is renewed before it goes out, or left to the gateway that took it
/// over meanwhile. Two gateways never both send an event's first attempt. A config whose
/// lease would not outlast the forward is refused at start, saying why.
#[tokio::test]
async fn two_gateways_never_send_the_same_first_attempt_twice() {
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { delay: Duration::from_secs(1), ..Behaviour::default() });
    let mut spec = spec(&db, &receiver);
    spec.sources[0] = spec.sources[0].clone().with("max_in_flight = 1");
    (spec.lease, spec.timeout) = ("3500ms".into(), "2500ms".into());
    let (a, _b) = tokio::join!(Gateway::start(&spec), Gateway::start(&spec));
    let mut ids = Vec::new();
    for n in 0..8 {
        let (status, answer) = a.ingest("orders", &[], json!({ "id": format!("w{n}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["event_id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(40), "all 8 delivered", || async {
        let mut delivered = 0;
        for id in &ids {
            if a.event(id).await?["delivery_state"] == "delivered" {
                delivered += 1;
            }
        }
        (delivered == ids.len()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = receiver.counts_by_event();
    let twice: Vec<_> = ids.iter().filter(|id| counts.get(*id).copied().unwrap_or(0) != 1).collect();
    assert!(twice.is_empty(), "first attempts sent other than once: {twice:?} ({counts:?})");

    let mut refused = spec.clone();
    (refused.lease, refused.timeout) = ("10s".into(), "30s".into());
    let (status, log) = Gateway::start_refused(&refused).await;
    assert!(!status.success(), "a gateway ran with a lease shorter than its timeout");
    assert!(log.contains("delivery.lease (10s) must exceed delivery.timeout (30s) by at least 1s"), "{log}");
}

/// A receipt taken by gateway B drops the item of a replay that gateway A runs, through
/// PostgreSQL's NOTIFY: the item is dropped as announced, before its turn comes.
#[tokio::test]
async fn a_receipt_taken_by_one_gateway_drops_an_item_of_a_replay_run_by_another() {
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    let a = Gateway::start(&replay::spec(&db, &receiver)).await;
    let ids = replay::outage(&a, &receiver, "n", 200).await;
    let id = replay::live(&a, "notify", 25, 200).await;
    eventually(Duration::from_secs(10), "A sending", || async {
        (replay::replayed(&receiver).len() >= 5).then_some(())
    })
    .await;
    // B starts while A holds the job: B takes receipts, A runs the replay.
    let b = Gateway::start(&replay::spec(&db, &receiver)).await;
    let late = &ids[120..150];
    for event in late {
        replay::confirm(&b, event).await;
    }
    assert!(replay::replayed(&receiver).len() < 120, "the receipts came too late to be dropped as announced");
    let done = replay::wait_done(&a, &id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!((done["counts"]["skipped_receipt"].as_i64(), done["counts"]["sent"].as_i64()), (Some(30), Some(170)));
    let sent = replay::replayed(&receiver);
    assert!(late.iter().all(|e| !sent.contains_key(e)), "an item was sent after B recorded its receipt");
    let announced = metric(&a, "hookwarden_replay_skipped_receipts_total{at=\"announced\"}").await;
    assert_eq!(announced, 30.0, "A did not hear of B's receipts through NOTIFY");
}

/// Gateway A is killed (`kill -9`) in the middle of a replay; gateway B, on the same
/// PostgreSQL database, takes the job over once A's lease ran out and finishes it. No item
/// is sent twice: the items A had marked `sending` count as failed and are not resent.
#[tokio::test]
async fn a_replay_whose_gateway_is_killed_is_finished_by_another_sending_nothing_twice() {
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    let mut a = Gateway::start(&replay::spec(&db, &receiver)).await;
    let ids = replay::outage(&a, &receiver, "t", 60).await;
    let id = replay::live(&a, "takeover", 25, 60).await;
    eventually(Duration::from_secs(10), "a third sent by A", || async {
        (replay::replayed(&receiver).len() >= 20).then_some(())
    })
    .await;
    let b = Gateway::start(&replay::spec(&db, &receiver)).await;
    a.kill9();
    let at_kill = replay::replayed(&receiver).len();
    let done = replay::wait_done(&b, &id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let sent = replay::replayed(&receiver);
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert!(sent.len() > at_kill, "B sent nothing");
    let counts = &done["counts"];
    assert_eq!(counts["sent"], 60, "{done}");
    let (succeeded, failed) = (counts["succeeded"].as_u64().unwrap(), counts["failed"].as_u64().unwrap());
    assert_eq!(succeeded + failed, 60, "{done}");
    assert!(failed <= 13, "too many items caught by the kill: {done}");
    assert!(sent.keys().all(|e| ids.contains(e)));
    let finished = eventually(Duration::from_secs(5), "the finished entry", || async {
        b.audit().await.into_iter().find(|e| e["action"] == "replay.finished")
    })
    .await;
    assert_eq!(finished["details"]["counts"], done["counts"], "{finished}");
}
/// A replay cancelled through another gateway than the one running it, running and again
/// paused: the runner hears of it at its next lease renewal (the cancel cleared the lease),
/// marks what it had not sent cancelled and audits the end, so the job's counts become final
/// (`settled`) and nothing more is sent.
#[tokio::test]
async fn a_replay_cancelled_through_another_gateway_ends_with_final_counts() {
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    let a = Gateway::start(&replay::spec(&db, &receiver)).await;
    replay::outage(&a, &receiver, "c", 80).await;
    let b = Gateway::start(&replay::spec(&db, &receiver)).await;
    for pause_first in [false, true] {
        let id = replay::live(&a, "cancel-elsewhere", 4, 40).await;
        let sent_of = |id: &str| receiver.received().iter().filter(|r| r.replay_id() == Some(id)).count();
        eventually(Duration::from_secs(10), "A sending", || async { (sent_of(&id) >= 2).then_some(()) }).await;
        if pause_first {
            let (status, paused) = a.admin_post(&format!("/v1/replays/{id}/pause"), &json!({})).await;
            assert_eq!(status, 200, "{paused}");
        }
        let (status, cancelled) = b.admin_post(&format!("/v1/replays/{id}/cancel"), &json!({})).await;
        assert_eq!(status, 200, "{cancelled}");
        let done = eventually(Duration::from_secs(15), "the counts final", || async {
            let (_, job) = a.call("GET", &format!("/v1/replays/{id}"), None, None).await;
            (job["settled"] == true).then_some(job)
        })
        .await;
        assert_eq!(done["state"], "cancelled", "{done}");
        let c = &done["counts"];
        let sent = c["sent"].as_u64().unwrap();
        assert_eq!(sent + c["skipped_other"].as_u64().unwrap(), 40, "every item sent or cancelled: {done}");
        assert_eq!(sent as usize, sent_of(&id), "{done}");
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(sent_of(&id), sent as usize, "sent after the cancel");
        let audit = a.audit().await;
        let finished = audit.iter().find(|e| e["action"] == "replay.finished" && e["subject"] == id.as_str());
        assert!(finished.is_some(), "the run's end is audited (pause first: {pause_first})");
        let held = format!("SELECT COUNT(*) FROM replays WHERE id = '{id}' AND lease_owner IS NOT NULL");
        assert_eq!(db.scalar(&held).await, 0, "the ended run gave its lease up");
    }
}

/// A host's clock an hour behind.
struct Behind(i64);

impl hookwarden::clock::Clock for Behind {
    fn now_ms(&self) -> i64 {
        hookwarden::clock::Clock::now_ms(&hookwarden::clock::SystemClock) - self.0
    }
}

/// "The order received" is the database's, not the hosts' clocks: two gateways, one on a
/// host whose clock is an hour behind, take events in turn; the dry run's sample and the
/// replay follow the order the events were stored in, not their ids or times.
#[tokio::test]
async fn a_replay_sends_in_the_databases_order_whatever_the_gateways_clocks_say() {
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    let spec = replay::spec(&db, &receiver);
    let a = Gateway::start(&spec).await;
    let mut b = Gateway::start_in_process(&spec, std::sync::Arc::new(Behind(3_600_000))).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let gw = if n % 2 == 0 { &a } else { &b };
        let (status, answer) = gw.ingest("orders", &[], json!({ "id": format!("o{n}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["event_id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(10), "all delivered once", || async {
        (receiver.counts_by_event().len() >= ids.len()).then_some(())
    })
    .await;
    let skewed = b.event(&ids[1]).await.unwrap()["received_at"].as_str().unwrap().to_string();
    assert!(skewed.as_str() < b.event(&ids[0]).await.unwrap()["received_at"].as_str().unwrap(), "B's clock is behind");
    b.kill9();
    let (status, plan) =
        replay::replay(&a, None, json!({ "source": "orders", "since": SINCE, "limit": ids.len() })).await;
    assert_eq!(status, 200, "{plan}");
    let sample: Vec<&str> =
        plan["sample"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(sample, ids[..5].iter().map(String::as_str).collect::<Vec<_>>(), "the sample's order");
    let (status, job) = replay::replay(
        &a,
        None,
        json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "order", "rate": 50, "limit": ids.len() }),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    let done = replay::wait_done(&a, job["id"].as_str().unwrap(), Duration::from_secs(20)).await;
    assert_eq!(done["counts"]["succeeded"], ids.len(), "{done}");
    let order: Vec<String> =
        receiver.received().iter().filter(|r| r.replay_id().is_some()).map(|r| r.event_id().to_string()).collect();
    assert_eq!(order, ids, "the replay's order");
}
