//! What keeps ingest serving under abuse: a per-source rate limit (a flood from one provider
//! gets 429 with `Retry-After` and the other sources go on), a cap on open connections, and a
//! body-hash dedup window for providers that sign no timestamp (a captured GitHub request sent
//! again with a fresh delivery id is a repeat, not a new event).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, on_both_backends, sign};

fn source(name: &str, receiver: &Receiver) -> SourceSpec {
    SourceSpec::new(name, "{ kind = \"none\" }", &receiver.url(&format!("/{name}")))
        .with("dedup = { json_pointer = \"/id\" }")
}

/// A flood on one source (32 providers posting without pause) meets its `ingest_limit`: most
/// of it is answered 429 with a `Retry-After`, nothing refused is stored, and another
/// source's steady ingest is all answered 200, promptly.
#[tokio::test]
async fn a_flood_on_one_source_gets_429_and_does_not_starve_another() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let flood = source("flood", &receiver).with("ingest_limit = { per_second = 50, burst = 50 }");
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![flood, source("steady", &receiver)])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let url = gw.url("/ingest/flood");
    let flooders: Vec<_> = (0..32)
        .map(|w| {
            let (stop, url) = (stop.clone(), url.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let (mut stored, mut limited) = (0u32, 0u32);
                for n in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let body = json!({ "id": format!("f-{w}-{n}") }).to_string();
                    let response = http.post(&url).body(body).send().await.expect("flood request");
                    match response.status().as_u16() {
                        200 => stored += 1,
                        429 => {
                            let wait = response.headers().get("retry-after").expect("a Retry-After").to_str().unwrap();
                            assert!(wait.parse::<u64>().unwrap() >= 1, "{wait}");
                            let body: serde_json::Value = response.json().await.unwrap();
                            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
                            limited += 1;
                        }
                        other => panic!("the flood got {other}"),
                    }
                }
                (stored, limited)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut latencies = Vec::new();
    for i in 0..60 {
        let sent = Instant::now();
        let (status, answer) = gw.ingest("steady", &[], json!({ "id": format!("s-{i}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "the steady source was refused during the flood: {answer}");
        latencies.push(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let flood_lasted = started.elapsed() + Duration::from_millis(300);
    stop.store(true, Ordering::SeqCst);
    let (mut stored, mut limited) = (0, 0);
    for flooder in flooders {
        let (s, l) = flooder.await.unwrap();
        stored += s;
        limited += l;
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(p99 < Duration::from_millis(500), "the steady source's p99 was {p99:?} during the flood");
    assert!(limited > stored, "the flood was not held back: {stored} stored, {limited} limited");
    let allowed = 50 + (flood_lasted.as_secs_f64() * 50.0).ceil() as u32 + 10;
    assert!(stored <= allowed, "{stored} flood events stored in {flood_lasted:?}, limit ~{allowed}");
    let (_, events) = gw.admin_get("/v1/summary?source=flood").await;
    assert_eq!(events["totals"]["total"], stored, "what was refused is not stored: {events}");
}

/// `server.max_connections`: past it, a new connection waits (in the kernel's queue) until one
/// closes, and is then served.
#[tokio::test]
async fn connections_past_the_maximum_wait_for_one_to_close() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let mut spec = GatewaySpec::new(&db.url, vec![source("orders", &receiver)]);
    spec.server_extra = "max_connections = 4\n".into();
    let gw = Gateway::start(&spec).await;
    // Four clients open a connection each and hold it, sending half a request.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut socket = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        socket.write_all(b"POST /ingest/orders HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        held.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let gw_url = gw.url("/healthz");
    let waiting = tokio::spawn(async move { reqwest::get(gw_url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "a fifth connection was served while four were open");
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("served once one closed");
    assert_eq!(status.unwrap().unwrap(), 200);
}

async fn github_ingest(gw: &Gateway, source: &str, delivery: &str, body: &[u8]) -> (bool, String) {
    let headers = sign::github(GITHUB_SECRET, delivery, "push", body);
    let (status, answer) = gw.ingest(source, &headers, body).await;
    assert_eq!(status, 200, "{answer}");
    (answer["duplicate"].as_bool().unwrap(), answer["event_id"].as_str().unwrap().to_string())
}

const GITHUB_SECRET: &str = "github-secret";

/// GitHub signs no timestamp: a captured request sent again with a fresh `X-GitHub-Delivery`
/// verifies. Without a window it is a new event (the risk the README names); with
/// `body_dedup_window` it is a repeat of the first, also when copies arrive at once, and the
/// same body after the window is new again.
async fn a_replayed_github_request_is_a_repeat_within_the_body_dedup_window(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let verify = format!("{{ kind = \"github\", secret = \"{GITHUB_SECRET}\" }}");
    let guarded = SourceSpec::new("guarded", &verify, &receiver.url("/guarded")).with("body_dedup_window = \"1h\"");
    let brief = SourceSpec::new("brief", &verify, &receiver.url("/brief")).with("body_dedup_window = \"1s\"");
    let open = SourceSpec::new("open", &verify, &receiver.url("/open"));
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![guarded, brief, open])).await;
    let body = br#"{"ref":"refs/heads/main","after":"abc123"}"#;

    let (dup, first) = github_ingest(&gw, "open", "d-1", body).await;
    assert!(!dup);
    let (dup, second) = github_ingest(&gw, "open", "d-2", body).await;
    assert!(!dup && second != first, "without a window a replayed request is a new event");

    let (dup, original) = github_ingest(&gw, "guarded", "d-1", body).await;
    assert!(!dup);
    let (dup, replayed) = github_ingest(&gw, "guarded", "d-2", body).await;
    assert!(dup, "a fresh delivery id with the same body is a repeat");
    assert_eq!(replayed, original);
    let (dup, retried) = github_ingest(&gw, "guarded", "d-1", body).await;
    assert!(dup && retried == original, "a provider's retry is still a repeat");
    let (dup, other) = github_ingest(&gw, "guarded", "d-3", br#"{"ref":"refs/heads/main","after":"def456"}"#).await;
    assert!(!dup && other != original, "another body is another event");

    // Copies at once, each with its own delivery id: one event.
    let copies = br#"{"ref":"refs/heads/main","after":"concurrent"}"#;
    let answers = futures_join(&gw, "guarded", copies, 12).await;
    let ids: std::collections::HashSet<&String> = answers.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 1, "concurrent copies made several events: {answers:?}");
    assert_eq!(answers.iter().filter(|(dup, _)| !dup).count(), 1, "{answers:?}");

    // After the window the same body is an event again.
    let (dup, before) = github_ingest(&gw, "brief", "d-1", body).await;
    assert!(!dup);
    assert!(github_ingest(&gw, "brief", "d-2", body).await.0, "within the window");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (dup, after) = github_ingest(&gw, "brief", "d-3", body).await;
    assert!(!dup && after != before, "past the window the body is new again");

    eventually(Duration::from_secs(10), "the guarded source's events delivered", || async {
        (receiver.received().iter().filter(|r| r.path == "/guarded").count() >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let guarded: Vec<String> =
        receiver.received().iter().filter(|r| r.path == "/guarded").map(|r| r.event_id().to_string()).collect();
    assert_eq!(guarded.len(), 3, "each distinct body forwarded once: {guarded:?}");
}

/// `n` signed copies of `body`, each with its own delivery id, posted at once.
async fn futures_join(gw: &Gateway, source: &str, body: &[u8], n: usize) -> Vec<(bool, String)> {
    let url = gw.url(&format!("/ingest/{source}"));
    let posts: Vec<_> = (0..n)
        .map(|i| {
            let headers = sign::github(GITHUB_SECRET, &format!("copy-{i}"), "push", body);
            let (url, body) = (url.clone(), body.to_vec());
            tokio::spawn(async move {
                let mut request = reqwest::Client::new().post(url).body(body);
                for (name, value) in headers {
                    request = request.header(name, value);
                }
                let answer: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
                (answer["duplicate"].as_bool().expect("answered"), answer["event_id"].as_str().unwrap().to_string())
            })
        })
        .collect();
    let mut out = Vec::new();
    for post in posts {
        out.push(post.await.unwrap());
    }
    out
}

on_both_backends!(a_replayed_github_request_is_a_repeat_within_the_body_dedup_window);
