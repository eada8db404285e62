//! Forwarding and the retry ladder, against a real handler stand-in.

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::receiver::Behaviour;
use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually};

fn body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "id": id, "type": "order.created" })).unwrap()
}

async fn gateway(db: &TestDb, source: SourceSpec) -> Gateway {
    Gateway::start(&GatewaySpec::new(&db.url, vec![source])).await
}

async fn ingest(gw: &Gateway, id: &str) -> String {
    let (status, answer) = gw.ingest("orders", &[("x-request-id".into(), id.into())], &body(id)).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

fn orders(receiver: &Receiver) -> SourceSpec {
    SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/webhooks/orders"))
        .with("dedup = { header = \"x-request-id\" }")
}

#[tokio::test]
async fn forwards_verify_with_a_standard_webhooks_library_and_carry_stable_keys() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { status: 500, fail_first: 1, ..Behaviour::default() });
    let gw = gateway(&db, orders(&receiver).ladder(&["100ms"], 3)).await;
    let ids = [ingest(&gw, "a").await, ingest(&gw, "b").await, ingest(&gw, "c").await];
    eventually(Duration::from_secs(10), "each event forwarded twice", || async {
        (receiver.count() >= 6).then_some(())
    })
    .await;
    for id in &ids {
        let got = receiver.for_event(id);
        assert_eq!(got.len(), 2, "one failure, one success");
        let event = gw.event(id).await.unwrap();
        for (n, request) in got.iter().enumerate() {
            assert!(request.verified, "a Standard Webhooks library rejected the gateway's signature");
            assert_eq!(request.path, "/webhooks/orders");
            assert_eq!(request.header("idempotency-key"), event["idempotency_key"].as_str().unwrap());
            assert_eq!(request.header("hookwarden-attempt"), (n + 1).to_string());
            assert_eq!(request.header("hookwarden-source"), "orders");
            assert_eq!(request.header("content-type"), "application/json");
            assert_eq!(request.header("hookwarden-replay-id"), "");
            assert_eq!(&request.body[..], &body(event["provider_event_id"].as_str().unwrap())[..]);
        }
        assert_eq!(got[0].header("idempotency-key"), got[1].header("idempotency-key"));
    }
    let keys: std::collections::HashSet<_> =
        ids.iter().map(|id| receiver.for_event(id)[0].header("idempotency-key").to_string()).collect();
    assert_eq!(keys.len(), 3, "each event has its own key");
    eventually(Duration::from_secs(5), "delivered state", || async {
        let event = gw.event(&ids[0]).await?;
        (event["delivery_state"] == "delivered").then_some(())
    })
    .await;
    let event = gw.event(&ids[0]).await.unwrap();
    let log = event["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["status_code"], 500);
    assert_eq!(log[0]["response_excerpt"], "status 500");
    assert_eq!(log[1]["status_code"], 200);
    assert_eq!(event["outcome"], "unknown", "a 2xx is not a receipt");
}

#[tokio::test]
async fn a_failing_handler_sees_attempts_at_the_ladder_gaps_then_the_event_fails() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { status: 500, ..Behaviour::default() });
    let gw = gateway(&db, orders(&receiver).ladder(&["400ms", "1200ms"], 3)).await;
    let id = ingest(&gw, "doomed").await;
    let event = eventually(Duration::from_secs(10), "the event exhausted", || async {
        let event = gw.event(&id).await?;
        (event["delivery_state"] == "exhausted").then_some(event)
    })
    .await;
    assert_eq!(event["outcome"], "failed");
    assert_eq!(event["error_code"], "delivery_exhausted");
    assert_eq!(event["attempts"], 3);
    let got = receiver.for_event(&id);
    assert_eq!(got.len(), 3);
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1].at - w[0].at).collect();
    // Each gap is its rung ±20% jitter, plus at most a poll interval (100 ms) and some slack.
    let within = |gap: Duration, rung_ms: u64| {
        gap >= Duration::from_millis(rung_ms * 8 / 10) && gap <= Duration::from_millis(rung_ms * 12 / 10 + 400)
    };
    assert!(within(gaps[0], 400), "first gap {:?}", gaps[0]);
    assert!(within(gaps[1], 1200), "second gap {:?}", gaps[1]);
    // Nothing after the last rung.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.for_event(&id).len(), 3);
    let (_, failed) = gw.admin_get("/v1/events?outcome=failed").await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_handler_that_recovers_gets_the_event_on_the_next_rung() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { status: 503, fail_first: 2, ..Behaviour::default() });
    let gw = gateway(&db, orders(&receiver).ladder(&["200ms", "400ms", "800ms"], 4)).await;
    let id = ingest(&gw, "late").await;
    let event = eventually(Duration::from_secs(10), "delivered", || async {
        let event = gw.event(&id).await?;
        (event["delivery_state"] == "delivered").then_some(event)
    })
    .await;
    assert_eq!(event["attempts"], 3);
    assert_eq!(event["outcome"], "unknown");
    assert!(event["next_attempt_at"].is_null());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.for_event(&id).len(), 3, "no attempt after the success");
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { status: 429, fail_first: 1, retry_after: Some(2), ..Behaviour::default() });
    let gw = gateway(&db, orders(&receiver).ladder(&["100ms"], 3)).await;
    let id = ingest(&gw, "throttled").await;
    eventually(Duration::from_secs(10), "second attempt", || async {
        (receiver.for_event(&id).len() >= 2).then_some(())
    })
    .await;
    let got = receiver.for_event(&id);
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(1900), "the retry came after {gap:?}, before Retry-After's 2 s");
}

#[tokio::test]
async fn a_provider_that_hangs_up_mid_request_never_strands_a_committed_event() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = gateway(&db, orders(&receiver)).await;
    // Each provider writes a whole request and closes the connection without reading the
    // answer; some requests are cut off mid-body. Whatever was committed must be delivered.
    let mut tasks = Vec::new();
    for n in 0..40 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let payload = body(&format!("hangup-{n}"));
            let head = format!(
                "POST /ingest/orders HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-request-id: hangup-{n}\r\ncontent-length: {}\r\n\r\n",
                payload.len()
            );
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let cut = if n % 4 == 0 { payload.len() / 2 } else { payload.len() };
            stream.write_all(&payload[..cut]).await.unwrap();
            // Hang up at once, a moment later (mid-commit), or later still (mid-answer).
            tokio::time::sleep(Duration::from_millis([0, 0, 3, 40][n % 4])).await;
            drop(stream);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stored = gw.all_events().await;
    assert!(stored.len() >= 10, "too few requests were stored to mean anything ({})", stored.len());
    eventually(Duration::from_secs(10), "every stored event delivered", || async {
        let counts = receiver.counts_by_event();
        stored.iter().all(|e| counts.contains_key(e["id"].as_str().unwrap())).then_some(())
    })
    .await;
    for e in &stored {
        let n: u32 = e["provider_event_id"].as_str().unwrap().trim_start_matches("hangup-").parse().unwrap();
        assert_ne!(n % 4, 0, "a cut-off request must not be stored");
    }
}

/// A source's `max_in_flight` bounds the requests its handler has open at once, and every
/// event still goes out.
#[tokio::test]
async fn a_sources_in_flight_limit_bounds_concurrent_requests_to_its_handler() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { delay: Duration::from_millis(300), ..Behaviour::default() });
    let gw = gateway(&db, orders(&receiver).with("max_in_flight = 2")).await;
    for n in 0..6 {
        ingest(&gw, &format!("slow-{n}")).await;
    }
    eventually(Duration::from_secs(10), "all six delivered", || async { (receiver.count() == 6).then_some(()) }).await;
    assert_eq!(receiver.most_in_flight(), 2, "the handler saw more (or fewer) requests at once than the limit");
}

/// A handler that answers too late, and one that is not listening: both are failed
/// attempts with the reason in the attempt log, and both are retried on the ladder.
#[tokio::test]
async fn timeouts_and_refused_connections_are_retried() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { delay: Duration::from_millis(1500), ..Behaviour::default() });
    // Port 1 (tcpmux): nothing listens there, and no test can be given it.
    let nowhere = SourceSpec::new("nowhere", "{ kind = \"none\" }", "http://127.0.0.1:1/hooks")
        .with("dedup = { header = \"x-request-id\" }")
        .ladder(&["200ms"], 3);
    let mut spec = GatewaySpec::new(&db.url, vec![orders(&receiver).ladder(&["200ms"], 5), nowhere]);
    spec.timeout = "300ms".into();
    let gw = Gateway::start(&spec).await;
    let late = ingest(&gw, "late").await;
    eventually(Duration::from_secs(10), "the first, late request", || async {
        (!receiver.for_event(&late).is_empty()).then_some(())
    })
    .await;
    receiver.set(Behaviour::default());
    let (status, answer) = gw.ingest("nowhere", &[("x-request-id".into(), "n".into())], &body("n")).await;
    assert_eq!(status, 200, "{answer}");
    let unreachable = answer["event_id"].as_str().unwrap().to_string();
    let event = eventually(Duration::from_secs(10), "the late event delivered on a retry", || async {
        let event = gw.event(&late).await?;
        (event["delivery_state"] == "delivered").then_some(event)
    })
    .await;
    let log = event["attempt_log"].as_array().unwrap();
    assert!(log[0]["error"].as_str().unwrap().starts_with("timeout"), "{event}");
    assert_eq!(log.last().unwrap()["status_code"], 200, "{event}");
    let event = eventually(Duration::from_secs(10), "the unreachable event given up", || async {
        let event = gw.event(&unreachable).await?;
        (event["outcome"] == "failed").then_some(event)
    })
    .await;
    let log = event["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "{event}");
    assert!(log.iter().all(|a| a["status_code"].is_null() && a["error"].is_string()), "{event}");
    assert_eq!(event["error_code"], "delivery_exhausted");
}

/// During an outage the log tells the operator what they need, once: a WARN when the
/// source's deliveries start failing (with the handler's answer), none per retry, one when
/// they recover; and, written to a file rather than a terminal, no colour codes.
#[tokio::test]
async fn the_log_tells_when_a_source_starts_failing_and_when_it_recovers() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { status: 503, fail_first: 3, ..Behaviour::default() });
    let gw = gateway(&db, orders(&receiver).ladder(&["100ms"], 5)).await;
    for id in ["a", "b", "c", "d"] {
        ingest(&gw, id).await;
    }
    eventually(Duration::from_secs(15), "every event delivered after three failures", || async {
        (receiver.count() >= 16).then_some(())
    })
    .await;
    let log = eventually(Duration::from_secs(5), "the recovery in the log", || async {
        let log = gw.log();
        log.contains("deliveries to source orders recovered").then_some(log)
    })
    .await;
    let failing: Vec<_> = log.lines().filter(|l| l.contains("deliveries to source orders are failing")).collect();
    assert_eq!(failing.len(), 1, "one line when the outage starts, not one per attempt:\n{log}");
    assert!(failing[0].contains("WARN") && failing[0].contains("handler answered 503"), "{}", failing[0]);
    assert!(!log.contains("still failing"), "12 failures within a second are one line:\n{log}");
    let recovered: Vec<_> = log.lines().filter(|l| l.contains("recovered after")).collect();
    assert_eq!(recovered.len(), 1, "{log}");
    // The first success may come before the other events' last failures: at least the
    // first event's three, at most all twelve.
    let failures: u32 =
        recovered[0].split("recovered after ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap();
    assert!((3..=12).contains(&failures), "{}", recovered[0]);
    assert!(!log.contains('\u{1b}'), "colour codes in a log written to a file:\n{log}");
}
