//! Handlers that misbehave at the network level: one that accepts and never answers, one that
//! trickles its answer a byte at a time (slowloris), one that answers 10 MB, a redirect loop,
//! a host that does not resolve. Each is a bounded failure, recorded with a clear error and
//! retried on the ladder, with the gateway's memory flat and other sources' deliveries on time.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually};

/// How a stand-in handler misbehaves once it has read the request.
#[derive(Clone, Copy)]
enum Misbehaviour {
    /// Keeps the connection open and says nothing.
    Silent,
    /// Sends a status line and headers one byte every 100 ms, never finishing them.
    Trickle,
    /// A 500 with a 10 MB body.
    Huge,
    /// A 302 to itself.
    RedirectLoop,
}

const HUGE_BYTES: usize = 10 * 1024 * 1024;

/// A raw TCP handler that misbehaves in one way; its URL.
async fn misbehaving(how: Misbehaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let location = url.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let location = location.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut request).await;
                match how {
                    Misbehaviour::Silent => tokio::time::sleep(Duration::from_secs(120)).await,
                    Misbehaviour::Trickle => {
                        for byte in b"HTTP/1.1 200 OK\r\nx-slow: ".iter().chain(std::iter::repeat(&b'a')) {
                            if socket.write_all(&[*byte]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    Misbehaviour::Huge => {
                        let head =
                            format!("HTTP/1.1 500 Internal Server Error\r\ncontent-length: {HUGE_BYTES}\r\n\r\n");
                        let _ = socket.write_all(head.as_bytes()).await;
                        let chunk = vec![b'z'; 64 * 1024];
                        for _ in 0..HUGE_BYTES / chunk.len() {
                            if socket.write_all(&chunk).await.is_err() {
                                return;
                            }
                        }
                    }
                    Misbehaviour::RedirectLoop => {
                        // `connection: close`, since this task drops the socket after one answer:
                        // a kept-alive connection would be reused by the gateway's pool and found
                        // closed ("connection closed before message completed"), not a 302.
                        let head = format!(
                            "HTTP/1.1 302 Found\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        );
                        let _ = socket.write_all(head.as_bytes()).await;
                    }
                }
            });
        }
    });
    url
}

fn source(name: &str, url: &str) -> SourceSpec {
    SourceSpec::new(name, "{ kind = \"none\" }", url).with("dedup = { json_pointer = \"/id\" }").ladder(&["300ms"], 3)
}

/// The gateway's peak resident memory, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the gateway's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn ingest(gw: &Gateway, source: &str, id: &str) -> String {
    let (status, answer) = gw.ingest(source, &[], json!({ "id": id }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

/// The attempt log of an event once its ladder is used up.
async fn exhausted(gw: &Gateway, id: &str) -> Vec<Value> {
    let event = eventually(Duration::from_secs(60), "the ladder used up", || async {
        let event = gw.event(id).await?;
        (event["delivery_state"] == "exhausted").then_some(event)
    })
    .await;
    assert_eq!(event["outcome"], "failed", "{event}");
    assert_eq!(event["error_code"], "delivery_exhausted", "{event}");
    let log = event["attempt_log"].as_array().unwrap().clone();
    assert_eq!(log.len(), 3, "every rung tried: {event}");
    log
}

#[tokio::test]
async fn misbehaving_handlers_are_bounded_recorded_failures_that_stall_nothing_else() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let sources = vec![
        source("silent", &misbehaving(Misbehaviour::Silent).await),
        source("trickle", &misbehaving(Misbehaviour::Trickle).await),
        source("huge", &misbehaving(Misbehaviour::Huge).await),
        source("redirect", &misbehaving(Misbehaviour::RedirectLoop).await),
        source("nowhere", "http://hookwarden-test-handler.invalid/hook"),
        SourceSpec::new("healthy", "{ kind = \"none\" }", &receiver.url("/healthy"))
            .with("dedup = { json_pointer = \"/id\" }"),
    ];
    let mut spec = GatewaySpec::new(&db.url, sources);
    spec.timeout = "2s".into();
    let gw = Gateway::start(&spec).await;
    let baseline_kib = peak_rss_kib(gw.pid());

    let mut bad = Vec::new();
    for name in ["silent", "trickle", "huge", "redirect", "nowhere"] {
        for i in 0..4 {
            bad.push((name, ingest(&gw, name, &format!("{name}-{i}")).await));
        }
    }
    // While the bad handlers hold their forwards, another source's events go out at once.
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let id = ingest(&gw, "healthy", &format!("healthy-{i}")).await;
        eventually(Duration::from_secs(10), "the healthy source's event delivered", || async {
            (!receiver.for_event(&id).is_empty()).then_some(())
        })
        .await;
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(1), "a healthy delivery waited {slowest:?} behind the bad handlers");

    for (name, id) in &bad {
        for attempt in exhausted(&gw, id).await {
            let error = attempt["error"].as_str().unwrap_or_default();
            let latency = attempt["latency_ms"].as_i64().unwrap();
            assert!(latency < 4_000, "{name}: an attempt took {latency} ms with a 2 s timeout: {attempt}");
            match *name {
                "silent" | "trickle" => {
                    assert!(attempt["status_code"].is_null(), "{name}: {attempt}");
                    assert!(error.starts_with("timeout: "), "{name}: {attempt}");
                }
                "huge" => {
                    assert_eq!(attempt["status_code"], 500, "{attempt}");
                    let excerpt = attempt["response_excerpt"].as_str().unwrap();
                    assert!(excerpt.len() <= 512 && excerpt.starts_with("zzz"), "{attempt}");
                }
                "redirect" => {
                    assert_eq!(attempt["status_code"], 302, "{attempt}");
                    assert!(error.starts_with("redirect: ") && error.contains("/hook"), "{attempt}");
                }
                "nowhere" => {
                    assert!(attempt["status_code"].is_null(), "{attempt}");
                    assert!(error.starts_with("connect: ") && error.contains("dns"), "{attempt}");
                }
                _ => unreachable!(),
            }
        }
    }
    // Twelve 10 MB answers were read only as far as their excerpt.
    let grown_kib = peak_rss_kib(gw.pid()).saturating_sub(baseline_kib);
    assert!(grown_kib < 40 * 1024, "the gateway's peak memory grew by {grown_kib} KiB");
}
