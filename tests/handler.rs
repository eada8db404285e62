//! The example handlers against a real gateway: the Rust `orders-handler` (receipts through
//! its transactional outbox, also across a kill -9 between commit and post) and the Python
//! one in examples/python (FastAPI and the Python SDK, receipts-sdk/python, whose own pytest
//! suite, run by tests/python_sdk.rs, tests it further).

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use receipts_sdk::receipt::ReceiptKey;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::gateway::SIGNING_SECRET;
use crate::support::{Db, Gateway, GatewaySpec, SourceSpec, TestDb, eventually};

pub(crate) const KEY_ID: &str = "orders-handler-1";
const PIP_HINT: &str = "python3 -m pip install -r examples/python/requirements.txt (from the repository root)";

pub(crate) fn handler_key() -> ReceiptKey {
    ReceiptKey::from_seed_base64(KEY_ID, &B64.encode([42u8; 32])).unwrap()
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the gateway package sits in the workspace")
}

/// Builds the example handler once per test binary, into the directory of the `hookwarden`
/// binary (same target dir, same profile).
pub(crate) fn orders_handler_binary() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let hookwarden = Path::new(env!("CARGO_BIN_EXE_hookwarden"));
        let binary = hookwarden.with_file_name("orders-handler");
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "hookwarden-examples", "--bin", "orders-handler"]).current_dir(workspace_root());
        if hookwarden.parent().and_then(Path::file_name).is_some_and(|dir| dir == "release") {
            cargo.arg("--release");
        }
        // The variables cargo sets for this test process describe the gateway package; build
        // scripts that watch them (ring's) would be rerun, and rerun again by the next plain
        // build.
        for (name, _) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            let package_var = name.starts_with("CARGO_PKG_") || name.starts_with("CARGO_BIN_EXE_");
            let crate_var = matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_BIN_NAME"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
            if package_var || crate_var {
                cargo.env_remove(name);
            }
        }
        let status = cargo.status().expect("run cargo build for the example handler");
        assert!(status.success(), "cargo build -p hookwarden-examples --bin orders-handler failed: {status}");
        assert!(binary.exists(), "the example handler was built, but not at {}", binary.display());
        binary
    })
}

/// The Python SDK's source in this tree, put first on the Python path of what the tests run,
/// so they test the tree rather than whatever copy pip installed.
fn python_sdk_path() -> PathBuf {
    workspace_root().join("receipts-sdk/python/src")
}

/// Fails (never skips) when Python or the handler's packages are missing, and says how to
/// install them.
fn require_python_handler() {
    let output = Command::new("python3")
        .args(["-c", "import hookwarden_receipts, fastapi, uvicorn, sqlalchemy"])
        .env("PYTHONPATH", python_sdk_path())
        .output();
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            panic!("the Python handler's packages are missing: {PIP_HINT}\n{}", String::from_utf8_lossy(&out.stderr))
        }
        Err(e) => panic!("python3 is needed for the Python handler ({e}); then {PIP_HINT}"),
    }
}

pub(crate) fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

/// A handler process (the Rust example or the Python one) on a fixed address with its own
/// SQLite database; restartable on the same address and database.
pub(crate) struct HandlerProcess {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    pub(crate) db_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl HandlerProcess {
    pub(crate) fn rust(addr: SocketAddr, gateway: &Gateway) -> Self {
        Self::new(orders_handler_binary().to_path_buf(), vec![], addr, gateway)
    }

    fn python(addr: SocketAddr, gateway: &Gateway) -> Self {
        let script = workspace_root().join("examples/python/handler.py");
        let mut handler = Self::new("python3".into(), vec!["-u".into(), script.display().to_string()], addr, gateway);
        handler.env.push(("PYTHONPATH".into(), python_sdk_path().display().to_string()));
        handler.env.push(("PYTHONDONTWRITEBYTECODE".into(), "1".into()));
        handler
    }

    fn new(program: PathBuf, args: Vec<String>, addr: SocketAddr, gateway: &Gateway) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db_path = dir.path().join("orders.db");
        let key = handler_key();
        let env = [
            ("HANDLER_LISTEN", addr.to_string()),
            ("HANDLER_DATABASE_URL", format!("sqlite://{}", db_path.display())),
            ("HOOKWARDEN_URL", gateway.url("")),
            ("SIGNING_SECRET", SIGNING_SECRET.to_string()),
            ("RECEIPT_KEY_ID", key.id.clone()),
            ("RECEIPT_KEY_SEED", key.seed_base64()),
            ("FLUSH_INTERVAL_MS", "200".to_string()),
            ("RUST_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into())),
        ];
        Self {
            program,
            args,
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            addr,
            db_path,
            log_path: dir.path().join("handler.log"),
            child: None,
            http: crate::support::client(),
            _dir: dir,
        }
    }

    /// Starts the process with `extra` environment and waits until `GET /orders` answers.
    pub(crate) async fn start(&mut self, extra: &[(&str, &str)]) {
        assert!(self.child.is_none(), "the handler is running already");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("log file");
        let mut command = Command::new(&self.program);
        command.args(&self.args).current_dir(workspace_root());
        for (name, _) in std::env::vars() {
            if name.starts_with("SIGNING_SECRET_") || name == "HANDLER_PAUSE_FLUSH" {
                command.env_remove(name);
            }
        }
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command.envs(extra.iter().copied());
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.program.display()));
        self.child = Some(child);
        let url = self.url("/orders");
        let (http, log_path) = (self.http.clone(), self.log_path.clone());
        let child = self.child.as_mut().expect("child");
        eventually(Duration::from_secs(20), "handler ready", || {
            if let Some(status) = child.try_wait().ok().flatten() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("the handler exited with {status} before it was ready:\n{log}");
            }
            let (http, url) = (http.clone(), url.clone());
            async move { http.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ()) }
        })
        .await;
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The gateway's `forward_to` for source `orders`.
    pub(crate) fn forward_to(addr: SocketAddr) -> String {
        format!("http://{addr}/webhooks/orders")
    }

    /// SIGKILL: no shutdown code runs.
    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `GET /orders`.
    pub(crate) async fn orders(&self) -> Vec<Value> {
        let response = self.http.get(self.url("/orders")).send().await.expect("GET /orders");
        assert_eq!(response.status(), 200);
        response.json::<Vec<Value>>().await.expect("orders JSON")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for HandlerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- handler log ({}) ----\n{}", self.addr, self.log());
        }
        self.kill9();
    }
}

/// Source `orders` forwarding to the handler at `handler`, deduplicated on the body's `id`,
/// accepting the handler's receipt key.
async fn start_gateway(db: &TestDb, handler: SocketAddr, ladder: &[&str], max_attempts: u32) -> Gateway {
    let key = handler_key();
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &HandlerProcess::forward_to(handler))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&format!("receipt_keys = [{{ id = \"{}\", public_key = \"{}\" }}]", key.id, key.public_key_base64()))
        .ladder(ladder, max_attempts);
    Gateway::start(&GatewaySpec::new(&db.url, vec![source])).await
}

/// Ingests an order event; answers the gateway's event id.
async fn ingest(gw: &Gateway, body: &Value) -> String {
    let (status, answer) = gw.ingest("orders", &[], body.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["duplicate"], false, "{answer}");
    answer["event_id"].as_str().expect("event_id").to_string()
}

async fn wait_for_outcome(gw: &Gateway, id: &str, outcome: &str) -> Value {
    eventually(Duration::from_secs(20), &format!("{id} {outcome}"), || async {
        let event = gw.event(id).await?;
        (event["outcome"] == outcome).then_some(event)
    })
    .await
}

/// The event's receipts as `(status, error_code, target_record_id)`.
fn receipts(event: &Value) -> Vec<(String, Value, Value)> {
    let list = event["receipts"].as_array().expect("receipts");
    list.iter()
        .map(|r| {
            assert_eq!(r["key_id"], KEY_ID, "{r}");
            (r["status"].as_str().unwrap().to_string(), r["error_code"].clone(), r["target_record_id"].clone())
        })
        .collect()
}

fn applied(order_id: &str) -> (String, Value, Value) {
    ("applied".into(), Value::Null, json!(order_id))
}

/// The event ids of the handler's orders, sorted (so, like the gateway's ids, in the order
/// the events were received), duplicates kept.
pub(crate) fn order_event_ids(orders: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = orders.iter().map(|o| o["event_id"].as_str().unwrap().to_string()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_example_handler_confirms_through_its_outbox() {
    orders_handler_binary();
    let db = TestDb::new(Db::Sqlite).await;
    let addr = free_addr();
    let gw = start_gateway(&db, addr, &["300ms", "1s", "3s"], 4).await;
    let mut handler = HandlerProcess::rust(addr, &gw);
    handler.start(&[]).await;

    let mut events = Vec::new();
    for (n, amount) in [(1001, 1200), (1002, 50), (1003, 999)] {
        let order_id = format!("ord_{n}");
        let id = ingest(&gw, &json!({ "id": order_id, "type": "order.created", "amount": amount })).await;
        events.push((id, order_id));
    }
    for (id, order_id) in &events {
        let event = wait_for_outcome(&gw, id, "confirmed").await;
        assert_eq!(receipts(&event), [applied(order_id)], "{event}");
        assert_eq!(event["receipts"][0]["via"], "post", "the outbox flusher posts receipts");
        assert_eq!(event["attempts"], 1, "{event}");
    }
    // One order per event, under the event's id.
    let orders = handler.orders().await;
    let expected: Vec<String> = events.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(order_event_ids(&orders), expected, "{orders:?}");
    for (id, order_id) in &events {
        let order = orders.iter().find(|o| o["event_id"] == id.as_str()).unwrap();
        assert_eq!((order["order_id"].as_str(), order["source"].as_str()), (Some(order_id.as_str()), Some("orders")));
    }

    // The provider retries the first event: the gateway answers with the same event and does
    // not forward it again, so the handler records no second order.
    let (status, answer) = gw
        .ingest(
            "orders",
            &[],
            json!({ "id": "ord_1001", "type": "order.created", "amount": 1200 }).to_string().as_bytes(),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["event_id"].as_str(), answer["duplicate"].as_bool()), (Some(events[0].0.as_str()), Some(true)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(order_event_ids(&handler.orders().await), expected);
    assert_eq!(gw.all_events().await.len(), 3);
    let event = gw.event(&events[0].0).await.unwrap();
    assert_eq!((event["attempts"].as_i64(), receipts(&event).len()), (Some(1), 1), "{event}");
}

#[tokio::test]
async fn a_receipt_is_sent_iff_the_commit_happened_even_across_a_handler_crash() {
    orders_handler_binary();
    let db = TestDb::new(Db::Postgres).await;
    let addr = free_addr();
    // A long first rung: the refused event is not retried while the handler is down.
    let gw = start_gateway(&db, addr, &["30s"], 5).await;
    let mut handler = HandlerProcess::rust(addr, &gw);
    handler.start(&[("HANDLER_PAUSE_FLUSH", "1")]).await;

    let mut good = Vec::new();
    for n in 1..=3 {
        let order_id = format!("ord_crash_{n}");
        good.push((ingest(&gw, &json!({ "id": order_id, "amount": n * 100 })).await, order_id));
    }
    let bad = ingest(&gw, &json!({ "id": "ord_crash_bad", "amount": 1, "fail": true })).await;

    // The handler committed the orders (and queued the receipts), but posted nothing.
    let good_ids: HashSet<String> = good.iter().map(|(id, _)| id.clone()).collect();
    eventually(Duration::from_secs(20), "the orders committed", || async {
        let orders = order_event_ids(&handler.orders().await);
        (orders.iter().cloned().collect::<HashSet<_>>() == good_ids).then_some(())
    })
    .await;
    eventually(Duration::from_secs(20), "the orders delivered and the refused event answered", || async {
        for id in &good_ids {
            (gw.event(id).await?["delivery_state"] == "delivered").then_some(())?;
        }
        let event = gw.event(&bad).await?;
        (event["attempt_log"][0]["status_code"] == 422 && !event["next_attempt_at"].is_null()).then_some(())
    })
    .await;
    for id in good_ids.iter().chain([&bad]) {
        let event = gw.event(id).await.unwrap();
        assert_eq!(event["outcome"], "unknown", "{event}");
        assert!(receipts(&event).is_empty(), "{event}");
    }
    let queued = outbox(&handler.db_path).await;
    assert_eq!(queued.len(), 4, "one receipt per event, queued in the same transaction: {queued:?}");
    assert!(queued.iter().all(|row| !row.sent), "{queued:?}");

    // kill -9 between commit and post; the next start's flusher sends what was committed.
    handler.kill9();
    handler.start(&[]).await;
    for (id, order_id) in &good {
        let event = wait_for_outcome(&gw, id, "confirmed").await;
        assert_eq!(receipts(&event), [applied(order_id)], "{event}");
    }
    // The refused event: rolled back, so never an `applied` receipt; its `failed` one arrives.
    let event = wait_for_outcome(&gw, &bad, "failed").await;
    assert_eq!(event["error_code"], "E_REJECTED", "{event}");
    assert_eq!(receipts(&event), [("failed".to_string(), json!("E_REJECTED"), Value::Null)], "{event}");
    eventually(Duration::from_secs(10), "the outbox drained", || async {
        outbox(&handler.db_path).await.iter().all(|row| row.sent).then_some(())
    })
    .await;
    for row in outbox(&handler.db_path).await {
        let expected = if row.event_id == bad { "failed" } else { "applied" };
        assert_eq!(row.status, expected, "{row:?}");
        assert!(row.error.is_none(), "the gateway refused a receipt: {row:?}");
    }
    let orders = handler.orders().await;
    assert_eq!(order_event_ids(&orders).into_iter().collect::<HashSet<_>>(), good_ids, "{orders:?}");
    assert!(orders.iter().all(|o| o["order_id"] != "ord_crash_bad"), "{orders:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let event = gw.event(&bad).await.unwrap();
    assert_eq!((event["outcome"].as_str(), receipts(&event).len()), (Some("failed"), 1), "{event}");
}

/// One row of the handler's receipt outbox.
#[derive(Debug)]
pub(crate) struct OutboxRow {
    pub(crate) event_id: String,
    pub(crate) status: String,
    pub(crate) sent: bool,
    pub(crate) error: Option<String>,
}

/// The handler's outbox, read straight from its SQLite file.
pub(crate) async fn outbox(db_path: &Path) -> Vec<OutboxRow> {
    let url = format!("sqlite://{}", db_path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open the handler's database");
    let rows: Vec<(String, String, Option<i64>, Option<String>)> =
        sqlx::query_as("SELECT event_id, body, sent_at, last_error FROM hookwarden_receipt_outbox ORDER BY created_at")
            .fetch_all(&mut conn)
            .await
            .expect("read the outbox");
    rows.into_iter()
        .map(|(event_id, body, sent_at, error)| {
            let body: Value = serde_json::from_str(&body).expect("receipt JSON");
            let status = body["status"].as_str().unwrap().to_string();
            OutboxRow { event_id, status, sent: sent_at.is_some(), error }
        })
        .collect()
}

#[tokio::test]
async fn a_python_handler_confirms_events() {
    require_python_handler();
    let db = TestDb::new(Db::Sqlite).await;
    let addr = free_addr();
    let gw = start_gateway(&db, addr, &["300ms", "1s", "3s"], 4).await;
    let mut handler = HandlerProcess::python(addr, &gw);
    handler.start(&[]).await;

    let first = ingest(&gw, &json!({ "id": "ord_py_1", "amount": 700 })).await;
    let second = ingest(&gw, &json!({ "data": { "object": { "id": "ord_py_2", "amount": 5 } } })).await;
    let refused = ingest(&gw, &json!({ "id": "ord_py_bad", "fail": true })).await;
    for (id, order_id) in [(&first, "ord_py_1"), (&second, "ord_py_2")] {
        let event = wait_for_outcome(&gw, id, "confirmed").await;
        assert_eq!(receipts(&event), [applied(order_id)], "{event}");
        assert_eq!(event["receipts"][0]["via"], "post");
    }
    let event = wait_for_outcome(&gw, &refused, "failed").await;
    assert_eq!(event["error_code"], "E_REJECTED", "{event}");
    let orders = handler.orders().await;
    assert_eq!(order_event_ids(&orders), [first.clone(), second.clone()], "{orders:?}");
    let order = orders.iter().find(|o| o["event_id"] == second.as_str()).unwrap();
    assert_eq!(order["order_id"], "ord_py_2", "{orders:?}");
}

/// The README's receipt test vector, reproduced by the Python SDK's `sign` primitive.
#[test]
fn the_python_sdk_signs_the_readme_vector() {
    require_python_handler();
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let section = readme.split_once("## Receipts: the wire format").expect("the receipts section").1;
    let block = section.split_once("```text\n").and_then(|(_, rest)| rest.split_once("```")).expect("vector").0;
    let value = |label: &str| {
        let prefix = format!("{label}: ");
        let line = block.lines().find(|line| line.starts_with(&prefix));
        line.unwrap_or_else(|| panic!("the vector lacks `{label}`"))[prefix.len()..].to_string()
    };
    let body: Value = serde_json::from_str(&value("body")).expect("the body is JSON");
    let script = r#"
import json, sys
sys.path.insert(0, "receipts-sdk/python/src")
from hookwarden_receipts import Receipt, sign
v = json.load(sys.stdin)
body = Receipt.applied(v["event_id"], target_record_id=v["target_record_id"]).to_json()
headers = sign(v["seed"], v["key_id"], v["receipt_id"], int(v["timestamp"]), body)
print(json.dumps({"body": body.decode(), "headers": headers}))
"#;
    let input = json!({
        "event_id": body["event_id"], "status": body["status"], "target_record_id": body["target_record_id"],
        "seed": value("seed (base64)"), "key_id": value("receipt-key"), "receipt_id": value("receipt-id"),
        "timestamp": value("receipt-timestamp"),
    });
    let mut child = Command::new("python3")
        .args(["-c", script])
        .current_dir(workspace_root())
        .env("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in the source tree
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let got: Value = serde_json::from_slice(&output.stdout).expect("the script's JSON");
    assert_eq!(got["body"], value("body"));
    assert_eq!(got["headers"]["receipt-signature"], value("receipt-signature"));
    assert_eq!(got["headers"]["receipt-id"], value("receipt-id"));
    assert_eq!(got["headers"]["receipt-timestamp"], value("receipt-timestamp"));
    assert_eq!(got["headers"]["receipt-key"], value("receipt-key"));
}

/// `orders-handler --help` says what to set (the receipt key, the database, the gateway) and
/// how to make it fail an event; an argument it does not take is refused, pointing at it.
#[test]
fn the_example_handler_says_how_to_run_it() {
    let help = std::process::Command::new(orders_handler_binary()).arg("--help").output().unwrap();
    assert!(help.status.success(), "{help:?}");
    let text = String::from_utf8(help.stdout).unwrap();
    for needed in ["RECEIPT_KEY_ID, RECEIPT_KEY_SEED", "HANDLER_DATABASE_URL", "HOOKWARDEN_URL", "\"fail\": true"] {
        assert!(text.contains(needed), "no `{needed}` in:\n{text}");
    }
    let wrong = std::process::Command::new(orders_handler_binary()).arg("--port").output().unwrap();
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("see --help"), "{wrong:?}");
}
