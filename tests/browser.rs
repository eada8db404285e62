//! The operator console in a real browser: Debian's `chromium`, driven by `playwright-core`
//! (tests/browser, `npm ci --prefix tests/browser`; it downloads no browser of its own),
//! against a real gateway process and database. Each test prepares the gateway's state here
//! and runs one scenario script (`tests/browser/<name>.mjs`), which fails on any assertion,
//! any script error and any console error the scenario did not provoke on purpose.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use receipts_sdk::receipt::Receipt;

use crate::replay::{confirm, handler_key, outage, spec};
use crate::support::{ADMIN_TOKEN, Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, sign};

/// Far above a scenario's few seconds: only a hung browser gets here.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// One browser at a time: two cores are shared with the rest of the suite.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn browser_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/browser"))
}

/// Runs `tests/browser/<name>.mjs` against `gateway` with `env`; fails (never skips) without
/// node, chromium or the npm packages, saying what to install.
pub(crate) async fn scenario(name: &str, gateway: &Gateway, env: &[(&str, String)]) {
    scenario_at(name, &gateway.url(""), env).await
}

/// [`scenario`] against a gateway the test did not start itself (`hookwarden demo`'s), at `url`.
pub(crate) async fn scenario_at(name: &str, url: &str, env: &[(&str, String)]) {
    assert!(
        browser_dir().join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci --prefix tests/browser`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: `apt-get install chromium chromium-driver`");
    let _one_at_a_time = BROWSER.lock().await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(format!("{name}.mjs"))
        .current_dir(browser_dir())
        .env("GATEWAY_URL", url.trim_end_matches('/'))
        .env("CHROMIUM", &chromium)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| panic!("node is needed for the browser tests ({e})"));
    let group = child.id().expect("the child's pid");
    let output = match tokio::time::timeout(SCENARIO_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.expect("wait for node"),
        Err(_) => {
            let _ = std::process::Command::new("kill").args(["-KILL", &format!("-{group}")]).status();
            panic!("the browser scenario {name} did not finish within {SCENARIO_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(output.status.success(), "browser scenario {name} failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains(&format!("scenario {name}: passed")), "scenario {name} did not say it passed:\n{stdout}");
}

/// Sign in by keyboard (a wrong token refused), the session cookie's attributes, the CSP on
/// every response, a forged cross-site POST refused, sign-out, and the gap on the chart.
#[tokio::test]
async fn signing_in_and_out_with_the_guards_around_sessions() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "ord", 6).await;
    for id in &ids[..2] {
        confirm(&gw, id).await;
    }
    scenario(
        "signin",
        &gw,
        &[("ADMIN_TOKEN", ADMIN_TOKEN.to_string()), ("EXPECT_CONFIRMED", "2".into()), ("EXPECT_UNKNOWN", "4".into())],
    )
    .await;
}

/// The events list, an event's page, resolving with a note, the gap review's groups by error
/// code, and a viewer's disabled buttons.
#[tokio::test]
async fn reviewing_failed_events_and_resolving_them_with_a_note() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "ord", 6).await;
    for id in &ids[..2] {
        confirm(&gw, id).await;
    }
    for id in &ids[2..4] {
        let receipt = Receipt::failed(id.as_str(), "DB_CONSTRAINT_VIOLATION", None);
        let (status, answer) = gw.post_receipt(&handler_key().sign(&receipt, sign::now_secs())).await;
        assert_eq!(status, 200, "{answer}");
    }
    let operator = gw.token("oncall-ann", "operator").await;
    let viewer = gw.token("lead-bo", "viewer").await;
    scenario(
        "review",
        &gw,
        &[
            ("OPERATOR_TOKEN", operator),
            ("VIEWER_TOKEN", viewer),
            ("FAILED_CODE", "DB_CONSTRAINT_VIOLATION".into()),
            ("EVENTS", ids.len().to_string()),
        ],
    )
    .await;
    // What the browser did is in the store: both resolved, each with its audit entry.
    for id in &ids[2..4] {
        let event = gw.event(id).await.expect("the event");
        assert!(event["resolved"]["note"].as_str().is_some_and(|n| !n.is_empty()), "{event}");
    }
    // One from the event's page, one for the gap review's selection (resolved at once).
    let audit = gw.audit().await;
    let count = |action: &str| audit.iter().filter(|e| e["action"] == action).count();
    assert_eq!((count("event.resolved"), count("events.resolved")), (1, 1));
}

/// Reconcile from the console: five events delivered with their receipts lost; the handler's
/// status_url answers for three (two applied, one failed with a code). The operator presses
/// Reconcile on the overview, reads what it settled, finds the two left in the events list
/// and the overview's counts moved; a viewer's button is disabled and says why.
#[tokio::test]
async fn reconciling_from_the_console_settles_what_the_handler_answers() {
    let db = TestDb::new(Db::Sqlite).await;
    let (addr, server) = crate::probe::start_probe_server().await;
    let key = sign::receipt_key("probe-key", 7);
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &format!("http://{addr}/webhooks"))
        .with(&sign::receipt_keys_line(&[(&key, false)]))
        .with(&format!("status_url = \"http://{addr}/status/orders\""))
        .with("status_timeout = \"5s\"");
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![source])).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(crate::probe::ingest(&gw, "orders", &serde_json::json!({ "id": format!("ord_{n}") })).await);
    }
    crate::support::eventually(Duration::from_secs(20), "all delivered", || async {
        for id in &ids {
            (gw.event(id).await?["delivery_state"] == "delivered").then_some(())?;
        }
        Some(())
    })
    .await;
    let now = sign::now_secs();
    let failed = Receipt::failed(ids[2].as_str(), "E_OUT_OF_STOCK", None);
    let answers = vec![
        crate::probe::entry(&key, &ids[0], "rcp_console_0", now),
        crate::probe::entry(&key, &ids[1], "rcp_console_1", now),
        receipts_sdk::probe::AnswerEntry::from_signed(&key.sign_with_id(&failed, "rcp_console_2", now)),
    ];
    server.answers.lock().unwrap().insert("orders".into(), Some(answers));
    let operator = gw.token("oncall-ann", "operator").await;
    let viewer = gw.token("lead-bo", "viewer").await;
    scenario(
        "reconcile",
        &gw,
        &[
            ("OPERATOR_TOKEN", operator),
            ("VIEWER_TOKEN", viewer),
            ("UNKNOWN", "5".into()),
            ("APPLIED", "2".into()),
            ("FAILED", "1".into()),
            ("LEFT", ids[3..].join(",")),
        ],
    )
    .await;
    // What the browser did is in the store: settled by the probe, audited once, nothing replayed.
    for (id, outcome) in ids.iter().zip(["confirmed", "confirmed", "failed", "unknown", "unknown"]) {
        assert_eq!(gw.event(id).await.expect("the event")["outcome"], outcome, "{id}");
    }
    let audit = gw.audit().await;
    assert_eq!(audit.iter().filter(|e| e["action"] == "reconcile").count(), 1);
    assert!(!audit.iter().any(|e| e["action"].as_str().is_some_and(|a| a.starts_with("replay"))), "nothing replayed");
    let asked = server.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "one probe: {asked:?}");
    assert!(asked[0].2, "the probe was signed");
}

/// The gateway's clock for the story: the wall clock shifted into the past by an amount the
/// test moves back to zero, so an hour of traffic arrives in seconds and still has its hour.
struct ShiftedClock(std::sync::Arc<std::sync::atomic::AtomicI64>);

impl hookwarden::clock::Clock for ShiftedClock {
    fn now_ms(&self) -> i64 {
        sign::now_ms() + self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Ingests `per_minute` events in each minute from `from` to `to` minutes ago (the gateway's
/// shifted clock), waits until each was attempted, and answers their ids.
async fn minutes(
    gw: &Gateway,
    receiver: &Receiver,
    shift: &std::sync::atomic::AtomicI64,
    (from, to): (i64, i64),
    per_minute: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for minute in (to..from).rev() {
        shift.store(-(minute * 60_000), std::sync::atomic::Ordering::SeqCst);
        for i in 0..per_minute {
            let body = serde_json::json!({ "id": format!("ord-{minute}-{i}"), "type": "order.paid" }).to_string();
            let (status, answer) = gw.ingest("orders", &[], body.as_bytes()).await;
            assert_eq!(status, 200, "{answer}");
            ids.push(answer["event_id"].as_str().unwrap().to_string());
        }
    }
    crate::support::eventually(Duration::from_secs(30), "every event attempted", || async {
        let counts = receiver.counts_by_event();
        ids.iter().all(|id| counts.contains_key(id)).then_some(())
    })
    .await;
    ids
}

/// The whole 2 AM story in the browser, with the screenshots for docs/: an hour of orders
/// with a 15-minute handler outage in it; the operator finds the gap on the chart, selects
/// it, previews the replay (counts, sample, risk), runs it live with a reason, watches the
/// counts climb pushed from the server and three items dropped mid-batch as their receipts
/// arrive, and sees the gap closed; a viewer cannot start one (the buttons say why).
#[tokio::test]
async fn the_2am_story_from_gap_to_closed_gap() {
    use std::sync::atomic::{AtomicI64, Ordering};
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let shift = std::sync::Arc::new(AtomicI64::new(-60 * 60_000));
    let clock = std::sync::Arc::new(ShiftedClock(shift.clone()));
    let gw = Gateway::start_in_process(&spec(&db, &receiver), clock.clone()).await;
    let key = handler_key();
    let applied = |id: &str| key.sign(&Receipt::applied(id), hookwarden::clock::Clock::now_secs(clock.as_ref()));

    // Before the outage: delivered and confirmed.
    for id in minutes(&gw, &receiver, &shift, (50, 30), 2).await {
        assert_eq!(gw.post_receipt(&applied(&id)).await.0, 200);
    }
    // The outage: the handler answers 500; three events fail with a code.
    receiver.set(crate::support::receiver::Behaviour { status: 500, ..Default::default() });
    let outage = minutes(&gw, &receiver, &shift, (30, 15), 3).await;
    for id in outage.iter().step_by(15) {
        let failed = Receipt::failed(id.as_str(), "DB_CONSTRAINT_VIOLATION", None);
        let signed = key.sign(&failed, hookwarden::clock::Clock::now_secs(clock.as_ref()));
        assert_eq!(gw.post_receipt(&signed).await.0, 200);
    }
    // Back up: confirmed again.
    receiver.set(Default::default());
    for id in minutes(&gw, &receiver, &shift, (15, 5), 2).await {
        assert_eq!(gw.post_receipt(&applied(&id)).await.0, 200);
    }
    shift.store(0, Ordering::SeqCst);
    // From now on the handler confirms each forward before answering, a little slowly.
    receiver.set_receipt_key(key.clone());
    receiver.post_receipts_before_answering(&gw.url(""));
    receiver.set(crate::support::receiver::Behaviour { delay: Duration::from_millis(150), ..Default::default() });

    let unknown: Vec<&String> = outage.iter().enumerate().filter(|(i, _)| i % 15 != 0).map(|(_, id)| id).collect();
    // Receipts the handler sends for three items while the replay runs, before it reaches
    // them (a mid-batch drop).
    let late: Vec<serde_json::Value> = unknown[12..15]
        .iter()
        .map(|id| {
            let signed = key.sign(&Receipt::applied(id.as_str()), sign::now_secs());
            serde_json::json!({ "headers": signed.headers().into_iter().collect::<std::collections::BTreeMap<_, _>>(), "body": String::from_utf8(signed.body.clone()).unwrap() })
        })
        .collect();
    let operator = gw.token("oncall-ann", "operator").await;
    let viewer = gw.token("lead-bo", "viewer").await;
    let docs = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs"));
    scenario(
        "story",
        &gw,
        &[
            ("OPERATOR_TOKEN", operator),
            ("VIEWER_TOKEN", viewer),
            ("EXPECT_UNKNOWN", unknown.len().to_string()),
            ("EXPECT_FAILED", (outage.len() - unknown.len()).to_string()),
            ("LATE_RECEIPTS", serde_json::to_string(&late).unwrap()),
            ("SCREENSHOTS", docs.display().to_string()),
        ],
    )
    .await;
    // The run as the store has it: every unknown one confirmed, three of them by the late
    // receipts (dropped from the run), none sent twice.
    for id in &unknown {
        let event = gw.event(id).await.expect("the event");
        assert_eq!(event["outcome"], "confirmed", "{event}");
    }
    let sent = receiver.received().iter().filter(|r| r.replay_id().is_some()).count();
    assert_eq!(sent, unknown.len() - 3, "the three with late receipts were not sent");
}
