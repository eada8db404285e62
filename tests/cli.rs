//! The `hookwarden` operator commands, run as a person would, against a real gateway.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{ChildStderr, Command};

use crate::replay::{outage, spec};
use crate::support::{ADMIN_TOKEN, Db, Gateway, Receiver, TestDb, eventually};

/// `hookwarden args…` as an operator pointed at `gw` with the admin token.
fn command(gw: &Gateway, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookwarden"));
    command.args(args).env("HOOKWARDEN_URL", gw.url("")).env("HOOKWARDEN_TOKEN", ADMIN_TOKEN).env("RUST_LOG", "error");
    command
}

pub(crate) async fn hookwarden(gw: &Gateway, args: &[&str]) -> Output {
    command(gw, args).output().await.expect("run hookwarden")
}

pub(crate) fn stdout(out: &Output) -> String {
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
    // After the replay each event has a second (replay) attempt.
    let filtered =
        hookwarden(&gw, &["events", "list", "--filter", "attempts >= 2 AND source = orders", "--json"]).await;
    let filtered: serde_json::Value = serde_json::from_slice(&filtered.stdout).unwrap();
    assert_eq!(filtered["data"].as_array().unwrap().len(), 4, "{filtered}");
    let none = hookwarden(&gw, &["events", "list", "--filter", "attempts >= 3", "--json"]).await;
    let none: serde_json::Value = serde_json::from_slice(&none.stdout).unwrap();
    assert_eq!(none["data"].as_array().unwrap().len(), 0, "{none}");
    let first = listed["data"][0]["id"].as_str().unwrap();
    let shown = stdout(&hookwarden(&gw, &["events", "show", first]).await);
    assert!(shown.starts_with(first) && shown.contains("Attempts:") && shown.contains(" replay "), "{shown}");
    let summary = stdout(&hookwarden(&gw, &["summary", "--bucket", "1h"]).await);
    assert!(summary.contains("unknown 4"), "{summary}");
    let token = stdout(&hookwarden(&gw, &["tokens", "create", "--name", "otto", "--role", "viewer"]).await);
    assert!(token.contains("hwt_"), "{token}");
}

/// Reads `stderr` into `seen` until it holds `needle` (prompts end without a newline).
async fn wait_for(stderr: &mut ChildStderr, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut chunk = [0u8; 1024];
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stderr.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` on stderr; got:\n{seen}"))
            .unwrap();
        assert!(n > 0, "stderr closed before `{needle}`; got:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

fn interrupt(pid: u32) {
    let sent = std::process::Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(sent.success());
}

/// Ctrl-C during a live run asks before cancelling: "n" leaves the job running, "y" cancels
/// it, and what was sent so far stays sent.
#[tokio::test]
async fn ctrl_c_during_a_live_replay_asks_before_cancelling() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "ctrlc", 6).await;
    let posts_before = receiver.count();

    let mut cli =
        command(&gw, &["replay", "orders", "--since", "1h", "--rate", "0.5", "--no-dry-run", "--reason", "INC-11"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
    let pid = cli.id().unwrap();
    let (mut stdin, mut stderr) = (cli.stdin.take().unwrap(), cli.stderr.take().unwrap());
    let mut seen = String::new();
    // At once: the handler is in place before the command says to press Ctrl-C.
    wait_for(&mut stderr, &mut seen, "Ctrl-C to cancel it").await;

    interrupt(pid);
    wait_for(&mut stderr, &mut seen, "[y/N] ").await;
    stdin.write_all(b"n\n").await.unwrap();
    wait_for(&mut stderr, &mut seen, "still running").await;
    let id = seen.split("replay ").nth(1).and_then(|rest| rest.split(' ').next()).unwrap().to_string();
    let (_, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
    assert_eq!(job["state"], "running", "{job}");

    interrupt(pid);
    seen.clear();
    wait_for(&mut stderr, &mut seen, "[y/N] ").await;
    stdin.write_all(b"y\n").await.unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), cli.wait_with_output()).await.unwrap().unwrap();
    // A run that did not complete is not a success for scripts either: 4, cancelled.
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(stdout(&out).contains("cancelled: sent"), "{out:?}");
    let (_, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    // A send in flight at the cancel still finishes and is counted (the job says `cancelled`
    // at once); then the counts match what the handler got, and nothing more goes out.
    let sent = eventually(Duration::from_secs(10), "the counts to match the handler's posts", || async {
        let (_, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
        let sent = job["counts"]["sent"].as_i64().unwrap() as usize;
        (sent == receiver.count() - posts_before).then_some(sent)
    })
    .await;
    assert!(sent < 6, "the replay ran to its end");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.count() - posts_before, sent, "a send after the cancel (the rate allows one per 2 s)");
}
