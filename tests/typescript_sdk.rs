//! The TypeScript receipts SDK (`receipts-sdk/typescript`, npm `hookwarden-receipts`) and its
//! example handler (`examples/typescript`): their `node --test` suite, run against this build's
//! gateway binary, so the README's one test command covers them. The suite itself is the
//! SDK's `npm test` (it builds the SDK, the example and the tests with `tsc`, then runs
//! `node --test`), and runs alone as `HOOKWARDEN_BIN=target/debug/hookwarden npm test --prefix
//! receipts-sdk/typescript`. Beside it, one test moves a handler's outbox between the Rust and
//! the TypeScript SDK.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use receipts_sdk::client::ReceiptClient;
use receipts_sdk::outbox;
use receipts_sdk::receipt::{Receipt, ReceiptKey};
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use tokio::io::AsyncWriteExt;

use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually};

/// Far above the suite's ~40 s: only a hung run gets here.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

const INSTALL_HINT: &str = "npm ci --prefix receipts-sdk/typescript && npm ci --prefix examples/typescript";

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the gateway package sits in the workspace")
}

/// Fails (never skips) when the npm dependencies are not installed, and says how to install them.
fn require_node_modules() {
    for package in ["receipts-sdk/typescript", "examples/typescript"] {
        let modules = workspace_root().join(package).join("node_modules");
        assert!(modules.is_dir(), "{} is missing: run {INSTALL_HINT}", modules.display());
    }
}

#[tokio::test]
async fn the_typescript_sdk_suite_passes_against_this_gateway() {
    require_node_modules();
    let _one_at_a_time = NODE.lock().await;
    let mut command = tokio::process::Command::new("npm");
    command
        .args(["test", "--silent"])
        .current_dir(workspace_root().join("receipts-sdk/typescript"))
        .env("HOOKWARDEN_BIN", env!("CARGO_BIN_EXE_hookwarden"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // npm, the test runner and the gateways and handlers it starts share one group, so a
        // hung run can be ended whole.
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| panic!("npm is needed for the TypeScript SDK's tests ({e})"));
    let group = child.id().expect("the child's pid");
    let output = match tokio::time::timeout(SUITE_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for npm test"),
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-KILL", &format!("-{group}")]).status();
            panic!("the TypeScript SDK's suite did not finish within {SUITE_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "npm test in receipts-sdk/typescript failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // The runner's closing lines: a run that ran nothing is not a pass.
    let count = |label: &str| {
        stdout
            .lines()
            .find_map(|line| line.trim_start_matches(['ℹ', '#', ' ']).strip_prefix(label)?.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no `{label}` line in the suite's output:\n{stdout}"))
    };
    assert!(count("pass ") > 0, "the suite passed no test:\n{stdout}");
    assert_eq!((count("fail "), count("skipped "), count("todo ")), (0, 0, 0), "{stdout}");
}

/// The node suite and the cross-language test both run tsc and node on the same folders: one
/// at a time.
static NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The TypeScript half of the cross-language test: reads its arguments as JSON on stdin,
/// flushes the outbox (the Rust SDK's receipt), then queues a receipt of its own and answers
/// a status probe for the first event, and prints what it did as JSON.
const TYPESCRIPT_HANDLER: &str = r#"
import Database from "better-sqlite3";
import { Receipt, ReceiptClient, ReceiptKey, answerProbe, flushOnce } from "hookwarden-receipts";
import { SqliteOutbox } from "hookwarden-receipts/sqlite";
const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const args = JSON.parse(Buffer.concat(chunks).toString());
const db = new Database(args.db);
const outbox = new SqliteOutbox(db);
outbox.ensureSchema();
const key = ReceiptKey.fromSeed(args.keyId, args.seed);
const flushed = await flushOnce(outbox, new ReceiptClient(args.gateway, key));
const queued = db.transaction(() => {
  if (outbox.alreadyProcessed(args.second)) throw new Error("the second event is marked already");
  return outbox.enqueue(Receipt.applied(args.second).withTargetRecord("ord_ts"));
})();
const probe = await answerProbe(outbox, key, { probeId: "prb_x", source: "orders", eventIds: [args.first] });
db.close();
console.log(JSON.stringify({ flushed, queued, probe }));
"#;

/// One outbox, two languages: a receipt the Rust SDK queued is posted by the TypeScript
/// flusher and one TypeScript queued by the Rust flusher, each under the id stored when it was
/// queued; the TypeScript probe answer for the Rust receipt has its id and bytes exactly (the
/// gateway counts it as a duplicate). So a handler can change language and keep its database.
#[tokio::test]
async fn a_handler_moves_between_rust_and_typescript_with_its_outbox() {
    require_node_modules();
    let _one_at_a_time = NODE.lock().await;
    let build = std::process::Command::new("npm")
        .args(["run", "build", "--silent", "--prefix", "receipts-sdk/typescript"])
        .current_dir(workspace_root())
        .output()
        .expect("npm run build");
    assert!(build.status.success(), "{}", String::from_utf8_lossy(&build.stdout));

    let receiver = Receiver::start().await;
    let key = ReceiptKey::generate("orders-x-1");
    let db = TestDb::new(Db::Sqlite).await;
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders")).with(&format!(
        "receipt_keys = [{{ id = \"{}\", public_key = \"{}\" }}]",
        key.id,
        key.public_key_base64()
    ));
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![source])).await;
    let mut events = Vec::new();
    for order in ["ord_rust", "ord_ts"] {
        let (status, answer) = gw.ingest("orders", &[], json!({ "id": order }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        events.push(answer["event_id"].as_str().unwrap().to_string());
    }

    // The Rust SDK queues a receipt for the first event.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("handler.db");
    let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true);
    let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
    outbox::ensure_schema(&pool).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert!(!outbox::already_processed(&mut tx, &events[0]).await.unwrap());
    let rust_id =
        outbox::enqueue(&mut tx, &Receipt::applied(events[0].as_str()).with_target_record("ord_rust")).await.unwrap();
    tx.commit().await.unwrap();
    pool.close().await;

    // The TypeScript SDK posts it, queues its own for the second event, answers a probe.
    let mut node = tokio::process::Command::new("node")
        .args(["--input-type=module", "-e", TYPESCRIPT_HANDLER])
        .current_dir(workspace_root().join("receipts-sdk/typescript"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let args = json!({
        "db": path, "gateway": gw.url(""), "keyId": key.id, "seed": key.seed_base64(),
        "first": events[0], "second": events[1],
    });
    let mut stdin = node.stdin.take().unwrap();
    stdin.write_all(args.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let output = tokio::time::timeout(Duration::from_secs(60), node.wait_with_output()).await.unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let typescript: Value = serde_json::from_slice(&output.stdout).expect("the script's JSON");
    assert_eq!(typescript["flushed"], json!({ "sent": 1, "rejected": 0 }), "{typescript}");
    let first = wait_for_outcome(&gw, &events[0], "confirmed").await;
    assert_eq!(
        (first["receipts"][0]["receipt_id"].as_str(), first["receipts"].as_array().unwrap().len()),
        (Some(rust_id.as_str()), 1)
    );

    // The Rust SDK's flusher posts the TypeScript receipt.
    let pool = SqlitePoolOptions::new().connect_with(SqliteConnectOptions::new().filename(&path)).await.unwrap();
    let report = outbox::flush_once(&pool, &ReceiptClient::new(&gw.url(""), key.clone())).await.unwrap();
    assert_eq!((report.sent, report.rejected, report.error), (1, 0, None));
    let second = wait_for_outcome(&gw, &events[1], "confirmed").await;
    assert_eq!(second["receipts"][0]["receipt_id"], typescript["queued"], "{second}");
    assert_eq!(second["receipts"][0]["target_record_id"], "ord_ts");
    assert_eq!(outbox::stats(&pool).await.unwrap(), outbox::OutboxStats { unsent: 0, sent: 2, rejected: 0 });

    // TypeScript's probe answer for the Rust receipt: the same id and bytes, so a duplicate.
    let entry = &typescript["probe"]["receipts"][0];
    assert_eq!(entry["receipt-id"], rust_id.as_str());
    let body = B64.decode(entry["receipt-body"].as_str().unwrap()).unwrap();
    assert_eq!(body, serde_json::to_vec(&Receipt::applied(events[0].as_str()).with_target_record("ord_rust")).unwrap());
    let mut request =
        reqwest::Client::new().post(gw.url("/v1/receipts")).body(body).header("content-type", "application/json");
    for name in ["receipt-id", "receipt-timestamp", "receipt-key", "receipt-signature"] {
        request = request.header(name, entry[name].as_str().unwrap());
    }
    let answer: Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(
        (answer["duplicate"].as_bool(), answer["outcome"].as_str()),
        (Some(true), Some("confirmed")),
        "{answer}"
    );
}

async fn wait_for_outcome(gw: &Gateway, id: &str, outcome: &str) -> Value {
    eventually(Duration::from_secs(20), &format!("{id} {outcome}"), || async {
        let event = gw.event(id).await?;
        (event["outcome"] == outcome).then_some(event)
    })
    .await
}
