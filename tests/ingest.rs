//! `POST /ingest/{source}`: every verifier kind, refusals that store nothing, dedup.

use std::time::Duration;

use serde_json::json;

use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, on_both_backends, sign};

const STRIPE_SECRET: &str = "whsec_stripe_endpoint_secret";
const GITHUB_SECRET: &str = "github-secret";
const STANDARD_SECRET: &str = "whsec_plJ3nmyCDGBKInavdOK15jsl";
const HMAC_SECRET: &str = "hmac-secret";

fn provider_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
}

async fn start(db: &TestDb, receiver: &Receiver) -> Gateway {
    use base64::Engine;
    let public = base64::engine::general_purpose::STANDARD.encode(provider_key().verifying_key().to_bytes());
    let sources = vec![
        SourceSpec::new(
            "stripe",
            &format!("{{ kind = \"stripe\", secret = \"{STRIPE_SECRET}\" }}"),
            &receiver.url("/stripe"),
        ),
        SourceSpec::new(
            "github",
            &format!("{{ kind = \"github\", secret = \"{GITHUB_SECRET}\" }}"),
            &receiver.url("/github"),
        ),
        SourceSpec::new(
            "acme",
            &format!("{{ kind = \"standard\", secret = \"{STANDARD_SECRET}\", public_keys = [\"{public}\"] }}"),
            &receiver.url("/acme"),
        ),
        SourceSpec::new(
            "plain",
            &format!("{{ kind = \"hmac\", header = \"x-signature\", secret = \"{HMAC_SECRET}\" }}"),
            &receiver.url("/plain"),
        ),
        SourceSpec::new("open", "{ kind = \"none\" }", &receiver.url("/open")),
    ];
    Gateway::start(&GatewaySpec::new(&db.url, sources)).await
}

fn body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "id": id, "type": "thing.happened", "data": { "n": 1 } })).unwrap()
}

/// Sends a request and checks its status; for 200, returns the event id.
async fn check(
    gw: &Gateway,
    source: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
    expected: u16,
) -> Option<String> {
    let (status, answer) = gw.ingest(source, &headers, body).await;
    assert_eq!(status, expected, "{source}: {answer}");
    if expected == 200 {
        assert_eq!(answer["duplicate"], false, "{answer}");
        Some(answer["event_id"].as_str().unwrap().to_string())
    } else {
        assert!(answer["error"]["code"].is_string(), "error body: {answer}");
        None
    }
}

#[tokio::test]
async fn every_kind_accepts_what_its_provider_signs_and_refuses_the_rest() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver).await;
    let now = sign::now_secs();
    let mut accepted = Vec::new();

    // Valid requests, signed as each provider signs them.
    let b = body("evt_stripe_1");
    accepted.extend(check(&gw, "stripe", sign::stripe(STRIPE_SECRET, now, &b), &b, 200).await);
    let b = body("gh");
    accepted.extend(check(&gw, "github", sign::github(GITHUB_SECRET, "delivery-1", "push", &b), &b, 200).await);
    let b = body("std");
    accepted.extend(check(&gw, "acme", sign::standard(STANDARD_SECRET, "msg_1", now, &b), &b, 200).await);
    accepted.extend(check(&gw, "acme", sign::standard_v1a(&provider_key(), "msg_2", now, &b), &b, 200).await);
    let b = b"not json at all".to_vec();
    accepted.extend(check(&gw, "plain", sign::hmac_header("x-signature", HMAC_SECRET, &b), &b, 200).await);
    accepted.extend(check(&gw, "open", vec![], &b, 200).await);

    // Wrong secret, stale timestamp, missing headers: 401.
    let b = body("evt_stripe_2");
    check(&gw, "stripe", sign::stripe("whsec_wrong", now, &b), &b, 401).await;
    check(&gw, "stripe", sign::stripe(STRIPE_SECRET, now - 301, &b), &b, 401).await;
    check(&gw, "stripe", vec![], &b, 401).await;
    check(&gw, "github", sign::github("wrong", "delivery-2", "push", &b), &b, 401).await;
    check(&gw, "github", vec![], &b, 401).await;
    check(&gw, "acme", sign::standard("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_3", now, &b), &b, 401).await;
    check(&gw, "acme", sign::standard(STANDARD_SECRET, "msg_4", now - 600, &b), &b, 401).await;
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    check(&gw, "acme", sign::standard_v1a(&other_key, "msg_5", now, &b), &b, 401).await;
    check(&gw, "acme", vec![], &b, 401).await;
    check(&gw, "plain", sign::hmac_header("x-signature", "wrong", &b), &b, 401).await;
    // A body changed after signing.
    let signed = sign::stripe(STRIPE_SECRET, now, &b);
    check(&gw, "stripe", signed, &body("evt_stripe_tampered"), 401).await;
    // Unknown source: 404. Oversized (the test config allows 64 KiB): 413.
    check(&gw, "nope", vec![], &b, 404).await;
    let big = vec![b'x'; 64 * 1024 + 1];
    check(&gw, "open", vec![], &big, 413).await;

    // Only the accepted events are in the log.
    let mut stored: Vec<String> = gw.all_events().await.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    stored.sort();
    accepted.sort();
    assert_eq!(stored, accepted);
    let events = gw.all_events().await;
    let by_source = |name: &str| events.iter().find(|e| e["source"] == name).cloned().unwrap();
    assert_eq!(by_source("github")["provider_event_id"], "delivery-1");
    assert_eq!(by_source("github")["event_type"], "push");
    assert_eq!(by_source("stripe")["provider_event_id"], "evt_stripe_1");
    assert_eq!(by_source("stripe")["event_type"], "thing.happened");
    assert!(by_source("open")["provider_event_id"].as_str().unwrap().starts_with("sha256:"));
}

#[tokio::test]
async fn a_repeated_provider_delivery_answers_the_same_id_and_is_forwarded_once() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver).await;
    let b = body("evt_repeat");
    let first = check(&gw, "stripe", sign::stripe(STRIPE_SECRET, sign::now_secs(), &b), &b, 200).await.unwrap();
    for _ in 0..3 {
        // Stripe retries with a fresh timestamp and signature; the event id in the body is the key.
        let (status, answer) = gw.ingest("stripe", &sign::stripe(STRIPE_SECRET, sign::now_secs(), &b), &b).await;
        assert_eq!(status, 200);
        assert_eq!(answer["event_id"], first.as_str());
        assert_eq!(answer["duplicate"], true);
    }
    // Same for the other kinds' ids: GitHub's delivery id, Standard Webhooks' webhook-id.
    let g = body("gh");
    let gh = check(&gw, "github", sign::github(GITHUB_SECRET, "d-7", "push", &g), &g, 200).await.unwrap();
    let (_, again) = gw.ingest("github", &sign::github(GITHUB_SECRET, "d-7", "push", &g), &g).await;
    assert_eq!(again["event_id"], gh.as_str());
    // Standard Webhooks: the retry has a new timestamp and signature, and the same webhook-id
    // even over a different body (the id is the key, not the bytes).
    let w = body("sw");
    let sw = check(&gw, "acme", sign::standard(STANDARD_SECRET, "msg_7", sign::now_secs(), &w), &w, 200).await.unwrap();
    let w2 = body("sw-changed");
    let (_, again) = gw.ingest("acme", &sign::standard(STANDARD_SECRET, "msg_7", sign::now_secs() + 1, &w2), &w2).await;
    assert_eq!((again["event_id"].as_str(), again["duplicate"].as_bool()), (Some(sw.as_str()), Some(true)), "{again}");
    eventually(Duration::from_secs(10), "the events delivered", || async { (receiver.count() >= 3).then_some(()) })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = receiver.counts_by_event();
    assert_eq!(counts.get(&first), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&gh), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&sw), Some(&1), "{counts:?}");
    assert_eq!(gw.all_events().await.len(), 3);
}

#[tokio::test]
async fn the_providers_own_libraries_sign_requests_the_gateway_accepts() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver).await;
    let b = body("evt_from_stripe_node");
    let signed = tokio::task::spawn_blocking({
        let b = b.clone();
        move || sign::by_provider_library("stripe", STRIPE_SECRET, &b)
    })
    .await
    .unwrap();
    check(&gw, "stripe", signed, &b, 200).await;
    let wrong = tokio::task::spawn_blocking({
        let b = b.clone();
        move || sign::by_provider_library("stripe", "whsec_not_this_one", &b)
    })
    .await
    .unwrap();
    check(&gw, "stripe", wrong, &b, 401).await;
    let g = body("from-octokit");
    let mut signed = tokio::task::spawn_blocking({
        let g = g.clone();
        move || sign::by_provider_library("github", GITHUB_SECRET, &g)
    })
    .await
    .unwrap();
    signed.push(("x-github-delivery".into(), "octokit-1".into()));
    check(&gw, "github", signed, &g, 200).await;
}

#[tokio::test]
async fn unknown_routes_get_json_errors_and_health_and_metrics_need_no_token() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver).await;
    let (status, answer) = gw.call("GET", "/v1/nothing-here", None, None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("route_unknown")), "{answer}");
    let (status, answer) = gw.call("GET", "/ingest/stripe", None, None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (405, Some("method_not_allowed")), "{answer}");
    assert!(answer["error"]["message"].is_string(), "{answer}");
    // Health and metrics need no token.
    check(&gw, "open", vec![], &body("counted"), 200).await;
    let bare = reqwest::Client::new();
    let health = bare.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let metrics = bare.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("hookwarden_ingest_total{") && l.contains("source=\"open\"") && l.ends_with(" 1")),
        "{text}"
    );
}

/// A commit that fails is a 503 (the provider retries later) and stores nothing of the
/// event; once the database takes writes again, the provider's retry goes in.
async fn check_a_failed_commit(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver).await;
    let first = body("before");
    check(&gw, "open", vec![], &first, 200).await;
    db.refuse("INSERT", "events").await;
    let refused = body("refused");
    let (status, answer) = gw.ingest("open", &[], &refused).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (503, Some("store_unavailable")), "{answer}");
    db.allow("INSERT", "events").await;
    assert_eq!(gw.all_events().await.len(), 1, "the refused event was stored");
    let id = check(&gw, "open", vec![], &refused, 200).await.unwrap();
    eventually(Duration::from_secs(10), "the retried event delivered", || async {
        receiver.counts_by_event().contains_key(&id).then_some(())
    })
    .await;
    assert_eq!(gw.all_events().await.len(), 2);
}

#[tokio::test]
async fn a_failed_commit_is_a_503_and_stores_nothing_sqlite() {
    check_a_failed_commit(Db::Sqlite).await;
}

#[tokio::test]
async fn a_failed_commit_is_a_503_and_stores_nothing_postgres() {
    check_a_failed_commit(Db::Postgres).await;
}

/// Headers are kept byte for byte: values with bytes that are not UTF-8 (obs-text, which
/// HTTP allows) are stored as received, shown by `GET /v1/events/{id}` as `{"base64": …}` of
/// their exact bytes (UTF-8 values as text), and a `content-type` carrying such bytes goes
/// to the handler exactly as the provider sent it.
async fn headers_are_kept_byte_for_byte(kind: Db) {
    use base64::Engine;
    use reqwest::header::HeaderValue;
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver).await;
    let content_type: &[u8] = b"application/json; charset=\"caf\xe9\"";
    let note: &[u8] = b"caf\xe9 \xff\x80";
    let response = crate::support::client()
        .post(gw.url("/ingest/open"))
        .header("content-type", HeaderValue::from_bytes(content_type).unwrap())
        .header("x-note", HeaderValue::from_bytes(note).unwrap())
        .header("x-text", HeaderValue::from_bytes("café".as_bytes()).unwrap())
        .body(body("bytes"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.json::<serde_json::Value>().await.unwrap()["event_id"].as_str().unwrap().to_string();
    let forwarded = eventually(Duration::from_secs(10), "the event forwarded", || async {
        receiver.for_event(&id).into_iter().next()
    })
    .await;
    assert_eq!(
        forwarded.headers.get("content-type").unwrap().as_bytes(),
        content_type,
        "content-type changed on the way"
    );
    let event = gw.event(&id).await.unwrap();
    let shown =
        |name: &str| event["headers"].as_array().unwrap().iter().find(|h| h[0] == name).map(|h| h[1].clone()).unwrap();
    let base64 = |bytes: &[u8]| json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) });
    assert_eq!(shown("x-note"), base64(note), "{event}");
    assert_eq!(shown("content-type"), base64(content_type), "{event}");
    assert_eq!(shown("x-text"), "café", "{event}");
}

on_both_backends!(headers_are_kept_byte_for_byte);
