//! `hookwarden demo`: the newcomer's one command. Run fast (`--speed`), it must leave a real
//! gap a replay then closes: events confirmed before the outage, two failed with
//! `E_REJECTED`, the outage's events unknown; a live replay, started in the browser as a
//! newcomer would (tests/browser/demo.mjs), confirms them all through the example handler;
//! Ctrl-C stops everything and removes the temporary files.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::handler::orders_handler_binary;
use crate::support::{client, eventually, free_port};

#[tokio::test]
async fn the_demo_shows_a_gap_that_a_replay_closes() {
    let handler = orders_handler_binary();
    let port = free_port().port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_hookwarden"))
        .args(["demo", "--port", &port.to_string(), "--speed", "5"])
        .env("HOOKWARDEN_DEMO_HANDLER", handler)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hookwarden demo");
    let stdout = demo.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo: {line}");
            let _ = lines_tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let token = loop {
        let line = lines_rx.recv_timeout(Duration::from_secs(30)).expect("the demo prints its token");
        printed.push(line.clone());
        if let Some(token) = line.trim().strip_prefix("token") {
            break token.trim().to_string();
        }
    };
    assert!(printed.iter().any(|l| l.contains(&format!("http://127.0.0.1:{port}/ui/"))), "{printed:?}");
    let dir = loop {
        let line = lines_rx.recv_timeout(Duration::from_secs(30)).expect("the demo says where its files are");
        if let Some(rest) = line.split("Files in ").nth(1) {
            break std::path::PathBuf::from(rest.split(" (removed").next().unwrap());
        }
    };
    assert!(dir.exists());
    loop {
        let line = lines_rx.recv_timeout(Duration::from_secs(60)).expect("the provider finishes");
        if line.contains("has sent everything") {
            break;
        }
    }
    let http = client();
    let base = format!("http://127.0.0.1:{port}");
    let summary = || async {
        let answer = http
            .get(format!("{base}/v1/summary?since=2000-01-01T00:00:00Z&bucket=30d"))
            .bearer_auth(&token)
            .send()
            .await;
        answer.unwrap().json::<serde_json::Value>().await.unwrap()
    };
    // The gap: confirmed before and after, two failed with the handler's code, unknown between.
    let gap = eventually(Duration::from_secs(20), "the events before and after the outage confirmed", || async {
        let s = summary().await;
        (s["failed_by_error_code"]["E_REJECTED"] == 2 && s["totals"]["confirmed"].as_i64() >= Some(10)).then_some(s)
    })
    .await;
    let unknown = gap["totals"]["unknown"].as_i64().unwrap();
    assert!(unknown >= 10, "the outage left unknown events: {gap}");

    // A replay closes it: in the browser, as a newcomer would, through the example handler.
    crate::browser::scenario_at("demo", &base, &[("TOKEN", token.clone()), ("EXPECT_UNKNOWN", unknown.to_string())])
        .await;
    let closed = summary().await;
    assert_eq!(closed["totals"]["unknown"], 0, "{closed}");
    let confirmed = |s: &serde_json::Value| s["totals"]["confirmed"].as_i64().unwrap();
    assert_eq!(confirmed(&closed), confirmed(&gap) + unknown, "{closed}");
    assert_eq!(closed["failed_by_error_code"]["E_REJECTED"], 2, "{closed}");
    let audit = http.get(format!("{base}/v1/audit")).bearer_auth(&token).send().await.unwrap();
    let audit: serde_json::Value = audit.json().await.unwrap();
    let started = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "replay.started");
    assert!(
        started.is_some_and(|e| e.to_string().contains("demo: the handler is back")),
        "the browser's run is audited with its reason: {audit}"
    );

    // And through the API: nothing is left to replay.
    let plan = http
        .post(format!("{base}/v1/replays"))
        .bearer_auth(&token)
        .json(&json!({ "source": "orders", "since": "2000-01-01T00:00:00Z", "dry_run": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(plan.status().as_u16(), 200);
    let plan: serde_json::Value = plan.json().await.unwrap();
    assert_eq!(plan["eligible"], 0, "{plan}");

    // Ctrl-C: everything stops, the temporary files go.
    assert!(Command::new("kill").args(["-INT", &demo.id().to_string()]).status().unwrap().success());
    let status = eventually(Duration::from_secs(20), "the demo exits", || {
        let exited = demo.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "{status}");
    assert!(!dir.exists(), "{} is left behind", dir.display());
}
