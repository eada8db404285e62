//! The `hookwarden` operator commands, run as a person would, against a real gateway.

use std::process::Output;

use tokio::process::Command;

use crate::replay::{outage, spec};
use crate::support::{ADMIN_TOKEN, Db, Gateway, Receiver, TestDb};

async fn hookwarden(gw: &Gateway, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hookwarden"))
        .args(args)
        .env("HOOKWARDEN_URL", gw.url(""))
        .env("HOOKWARDEN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "error")
        .output()
        .await
        .expect("run hookwarden")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn an_operator_previews_runs_and_verifies_a_replay_from_the_command_line() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "cli", 4).await;

    let dry = hookwarden(&gw, &["replay", "orders", "--since", "1h"]).await;
    assert!(dry.status.success(), "{dry:?}");
    let report = stdout(&dry);
    for expected in ["nothing was sent", "unknown          4   eligible", "Risk          LOW", "--no-dry-run --reason"]
    {
        assert!(report.contains(expected), "missing `{expected}` in:\n{report}");
    }

    let refused = hookwarden(&gw, &["replay", "orders", "--since", "1h", "--no-dry-run"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--reason"));
    let bad_filter = hookwarden(&gw, &["replay", "orders", "--since", "1h", "--filter", "outcome = nope"]).await;
    assert_eq!(bad_filter.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad_filter.stderr).contains("filter_invalid"), "{bad_filter:?}");

    let live = hookwarden(
        &gw,
        &["replay", "orders", "--since", "1h", "--rate", "50", "--no-dry-run", "--reason", "INC-9", "--json"],
    )
    .await;
    assert!(live.status.success(), "{live:?}");
    let job: serde_json::Value = serde_json::from_slice(&live.stdout).unwrap();
    assert_eq!((job["state"].as_str(), job["counts"]["succeeded"].as_i64()), (Some("completed"), Some(4)), "{job}");

    let verify = hookwarden(&gw, &["audit", "verify"]).await;
    assert!(verify.status.success(), "{verify:?}");
    assert!(stdout(&verify).contains("hash chain intact"));
    let audit = stdout(&hookwarden(&gw, &["audit"]).await);
    assert!(audit.contains("replay.started") && audit.contains("INC-9"), "{audit}");
    let events = hookwarden(&gw, &["events", "list", "--json"]).await;
    let listed: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 4);
    let summary = stdout(&hookwarden(&gw, &["summary", "--bucket", "1h"]).await);
    assert!(summary.contains("unknown 4"), "{summary}");
    let token = stdout(&hookwarden(&gw, &["tokens", "create", "--name", "otto", "--role", "viewer"]).await);
    assert!(token.contains("hwt_"), "{token}");
}
