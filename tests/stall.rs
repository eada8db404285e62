//! A slow handler stalls nothing else. Nothing waits on a handler while holding a database
//! connection, a transaction or a lock a receipt needs: hundreds of retries hanging at one
//! source leave another source's ingests and receipts answering at their usual pace, and a
//! handler that posts its receipt before it answers the forward is not kept waiting.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::receiver::Behaviour;
use crate::support::{
    Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, client, eventually, on_both_backends, sign,
};

/// Retries left hanging at the slow source while the other source is measured.
const HANGING: usize = 250;

fn none_source(name: &str, receiver: &Receiver) -> SourceSpec {
    SourceSpec::new(name, "{ kind = \"none\" }", &receiver.url(&format!("/{name}")))
        .with("dedup = { json_pointer = \"/id\" }")
}

/// The `p`-quantile (0..=1) of some latencies.
fn quantile(latencies: &mut [Duration], p: f64) -> Duration {
    latencies.sort();
    latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
}

/// `POST` `body` to `url` with `headers`: the status and how long the answer took.
async fn timed_post(http: &reqwest::Client, url: &str, headers: &[(String, String)], body: Vec<u8>) -> (u16, Duration) {
    let mut request = http.post(url).body(body).header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let started = Instant::now();
    let status = request.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
    (status, started.elapsed())
}

async fn a_slow_handler_stalls_no_other_source(kind: Db) {
    let db = TestDb::new(kind).await;
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    // Each event's first attempt fails at once; every retry then hangs for 20 s.
    slow.set(Behaviour {
        status: 500,
        fail_first: 1,
        delay: Duration::from_secs(20),
        delay_after: 1,
        ..Behaviour::default()
    });
    let key = sign::receipt_key("fast-1", 7);
    let sources = vec![
        none_source("slow", &slow).with("max_in_flight = 400").ladder(&["100ms"], 3),
        none_source("fast", &fast).with(&sign::receipt_keys_line(&[(&key, false)])),
    ];
    let mut spec = GatewaySpec::new(&db.url, sources);
    (spec.timeout, spec.lease) = ("25s".into(), "60s".into());
    spec.delivery_extra = "max_in_flight = 400\n".into();
    let gw = Gateway::start(&spec).await;
    let http = client();

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (http, url) = (http.clone(), gw.url("/ingest/slow"));
        tasks.spawn(async move {
            for i in (worker..HANGING + 10).step_by(8) {
                let body = json!({ "id": format!("slow-{i}") }).to_string().into_bytes();
                let (status, _) = timed_post(&http, &url, &[], body).await;
                assert_eq!(status, 200, "ingest at the slow source");
            }
        });
    }
    tasks.join_all().await;
    eventually(Duration::from_secs(15), "250 retries hanging at the slow handler", || async {
        (slow.in_flight() >= HANGING).then_some(())
    })
    .await;

    // Meanwhile: another source's ingests and receipts, four at a time.
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let (http, base, key) = (http.clone(), gw.url(""), key.clone());
        tasks.spawn(async move {
            let (mut ingests, mut receipts) = (Vec::new(), Vec::new());
            for i in 0..50 {
                let body = json!({ "id": format!("fast-{worker}-{i}") }).to_string().into_bytes();
                let started = Instant::now();
                let answer = http
                    .post(format!("{base}/ingest/fast"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("ingest at the fast source");
                let status = answer.status().as_u16();
                ingests.push((status, started.elapsed()));
                if status != 200 {
                    continue;
                }
                let event: serde_json::Value = answer.json().await.unwrap();
                let signed = key.sign(
                    &receipts_sdk::receipt::Receipt::applied(event["event_id"].as_str().unwrap()),
                    sign::now_secs(),
                );
                let headers: Vec<(String, String)> =
                    signed.headers().into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
                receipts.push(timed_post(&http, &format!("{base}/v1/receipts"), &headers, signed.body.clone()).await);
            }
            (ingests, receipts)
        });
    }
    let (mut ingests, mut receipts) = (Vec::new(), Vec::new());
    for (i, r) in tasks.join_all().await {
        ingests.extend(i);
        receipts.extend(r);
    }
    let still_hanging = slow.in_flight();

    let failed: Vec<u16> = ingests.iter().chain(&receipts).map(|(s, _)| *s).filter(|s| *s != 200).collect();
    let mut ingest_latency: Vec<Duration> = ingests.iter().map(|(_, d)| *d).collect();
    let mut receipt_latency: Vec<Duration> = receipts.iter().map(|(_, d)| *d).collect();
    let (ingest_p50, ingest_p99) = (quantile(&mut ingest_latency, 0.5), quantile(&mut ingest_latency, 0.99));
    let (receipt_p50, receipt_p99) = (quantile(&mut receipt_latency, 0.5), quantile(&mut receipt_latency, 0.99));
    eprintln!(
        "{kind:?}: {still_hanging} retries hanging; other source: {} ingests p50 {ingest_p50:?} p99 {ingest_p99:?}, \
         {} receipts p50 {receipt_p50:?} p99 {receipt_p99:?}",
        ingests.len(),
        receipts.len()
    );
    assert!(failed.is_empty(), "answers other than 200 at the other source: {failed:?}");
    assert_eq!((ingests.len(), receipts.len()), (200, 200));
    assert!(still_hanging >= HANGING, "the retries did not stay open through the measurement: {still_hanging}");
    assert!(ingest_p99 < Duration::from_millis(500), "ingest p99 {ingest_p99:?}");
    assert!(receipt_p99 < Duration::from_millis(500), "receipts p99 {receipt_p99:?}");
}

on_both_backends!(a_slow_handler_stalls_no_other_source);

/// A handler that commits, posts its receipt and only then answers the retry: the receipt is
/// accepted at once, not once the forward timed out, and the retry's 2xx is what is recorded.
async fn a_receipt_posted_before_answering_is_accepted_at_once(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let key = sign::receipt_key("orders-1", 1);
    receiver.set_receipt_key(key.clone());
    receiver.set(Behaviour { status: 500, fail_first: 1, ..Behaviour::default() });
    let source =
        none_source("orders", &receiver).with(&sign::receipt_keys_line(&[(&key, false)])).ladder(&["200ms"], 3);
    let mut spec = GatewaySpec::new(&db.url, vec![source]);
    (spec.timeout, spec.lease) = ("5s".into(), "10s".into());
    let gw = Gateway::start(&spec).await;
    receiver.post_receipts_before_answering(&gw.url(""));
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, answer) =
            gw.ingest("orders", &[], json!({ "id": format!("early-{i}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["event_id"].as_str().unwrap().to_string());
    }
    let posts = eventually(Duration::from_secs(15), "three receipts posted from inside the retries", || async {
        let posts = receiver.receipt_posts();
        (posts.len() >= 3).then_some(posts)
    })
    .await;
    for (event, took, status) in &posts {
        assert_eq!(*status, 200, "the receipt for {event}");
        assert!(
            *took < Duration::from_secs(1),
            "the receipt for {event} waited {took:?} (the forward times out at 5 s)"
        );
    }
    for id in &ids {
        let event = eventually(Duration::from_secs(10), "the retry's answer recorded", || async {
            let event = gw.event(id).await?;
            (event["attempt_log"].as_array()?.len() == 2).then_some(event)
        })
        .await;
        assert_eq!(event["outcome"], "confirmed", "{event}");
        assert_eq!(event["attempt_log"][1]["status_code"], 200, "the retry was answered, not timed out: {event}");
        assert!(event["next_attempt_at"].is_null(), "{event}");
    }
}

on_both_backends!(a_receipt_posted_before_answering_is_accepted_at_once);
