//! `POST /v1/receipts` and inline receipts: refusals that change nothing, the outcome
//! ledger, retries cancelled by receipts, overdue events and the gap view.

use std::time::Duration;

use receipts_sdk::receipt::{Receipt, ReceiptKey, SignedReceipt};
use serde_json::{Value, json};

use crate::support::receiver::Behaviour;
use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, on_both_backends, sign};

fn key(id: &str, seed: u8) -> ReceiptKey {
    sign::receipt_key(id, seed)
}

/// `orders` accepts keys `orders-1` and (revoked) `old-1`; `billing` accepts `billing-1`.
async fn start(db: &TestDb, receiver: &Receiver, ladder: &[&str]) -> Gateway {
    let keys = sign::receipt_keys_line;
    let orders = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&keys(&[(&key("orders-1", 1), false), (&key("old-1", 3), true)]))
        .with("receipt_sla = \"1s\"")
        .ladder(ladder, 5);
    let billing = SourceSpec::new("billing", "{ kind = \"none\" }", &receiver.url("/billing"))
        .with(&keys(&[(&key("billing-1", 2), false)]));
    Gateway::start(&GatewaySpec::new(&db.url, vec![orders, billing])).await
}

async fn ingest(gw: &Gateway, id: &str) -> String {
    let (status, answer) = gw.ingest("orders", &[], json!({ "id": id }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

async fn post(gw: &Gateway, signed: &SignedReceipt) -> (u16, Value) {
    gw.post_receipt(signed).await
}

async fn outcome(gw: &Gateway, id: &str) -> Value {
    gw.event(id).await.unwrap()["outcome"].clone()
}

#[tokio::test]
async fn refusals_carry_their_status_and_code_and_change_nothing() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver, &["30s"]).await;
    let id = ingest(&gw, "o-1").await;
    let now = sign::now_secs();
    let applied = Receipt::applied(&id);

    let check = |signed: SignedReceipt, status: u16, code: &'static str| {
        let gw = &gw;
        let id = id.clone();
        async move {
            let (got, answer) = post(gw, &signed).await;
            assert_eq!((got, answer["error"]["code"].as_str().unwrap_or("")), (status, code), "{answer}");
            assert_eq!(outcome(gw, &id).await, "unknown", "a refused receipt changed the outcome");
        }
    };
    // Forged: signed by another key under `orders-1`'s name.
    let mut forged = key("orders-1", 9).sign(&applied, now);
    check(forged.clone(), 401, "receipt_signature_invalid").await;
    // A body changed after signing.
    forged = key("orders-1", 1).sign(&applied, now);
    forged.body = serde_json::to_vec(&Receipt::failed(&id, "E_X", None)).unwrap();
    check(forged, 401, "receipt_signature_invalid").await;
    check(key("nobody", 1).sign(&applied, now), 401, "receipt_key_unknown").await;
    check(key("old-1", 3).sign(&applied, now), 401, "receipt_key_revoked").await;
    check(key("billing-1", 2).sign(&applied, now), 403, "receipt_key_forbidden").await;
    check(key("orders-1", 1).sign(&Receipt::applied("evt_01JD0000000000000000000000"), now), 404, "event_unknown")
        .await;
    check(key("orders-1", 1).sign(&applied, now - 301), 401, "receipt_timestamp_stale").await;
    // Malformed bodies, validly signed: not JSON, an unknown status, `failed` without a code.
    let signer = key("orders-1", 1);
    for bad in [
        b"not json".to_vec(),
        json!({"event_id": id, "status": "done"}).to_string().into_bytes(),
        json!({"event_id": id, "status": "failed"}).to_string().into_bytes(),
    ] {
        let mut signed = signer.sign(&applied, now);
        signed.body = bad;
        let resigned = resign(&signer, &signed);
        check(resigned, 400, "receipt_malformed").await;
    }
    // Missing headers.
    let response = crate::support::client()
        .post(gw.url("/v1/receipts"))
        .body(serde_json::to_vec(&applied).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "receipt_header_missing");
    assert!(gw.event(&id).await.unwrap()["receipts"].as_array().unwrap().is_empty());
}

/// Signs arbitrary body bytes with the receipt's id and timestamp, as a buggy handler might.
fn resign(key: &ReceiptKey, signed: &SignedReceipt) -> SignedReceipt {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let seed: [u8; 32] =
        base64::engine::general_purpose::STANDARD.decode(key.seed_base64()).unwrap().try_into().unwrap();
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let content = receipts_sdk::webhook::signed_content(&signed.receipt_id, &signed.timestamp, &signed.body);
    let signature = base64::engine::general_purpose::STANDARD.encode(signing.sign(&content).to_bytes());
    SignedReceipt { signature: format!("v1a,{signature}"), ..signed.clone() }
}

#[tokio::test]
async fn the_ledger_is_idempotent_and_confirmed_never_silently_goes_back() {
    let db = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver, &["30s"]).await;
    let signer = key("orders-1", 1);
    let id = ingest(&gw, "o-2").await;

    let failed = signer.sign(&Receipt::failed(&id, "E_DB", Some("deadlock".into())), sign::now_secs());
    let (status, answer) = post(&gw, &failed).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("failed")), "{answer}");
    assert_eq!(gw.event(&id).await.unwrap()["error_code"], "E_DB");

    let applied = signer.sign(&Receipt::applied(&id).with_target_record("order-77"), sign::now_secs());
    let (_, answer) = post(&gw, &applied).await;
    assert_eq!(answer["outcome"], "confirmed");
    // The same receipt again (a handler's retried post): one receipt, same answer.
    let (status, again) = post(&gw, &applied).await;
    assert_eq!((status, again["duplicate"].as_bool()), (200, Some(true)));
    // A later `failed` receipt is kept and shown, but the outcome stays confirmed.
    let late = signer.sign(&Receipt::failed(&id, "E_LATE", None), sign::now_secs());
    let (_, answer) = post(&gw, &late).await;
    assert_eq!(answer["outcome"], "confirmed");
    let event = gw.event(&id).await.unwrap();
    assert_eq!(event["outcome"], "confirmed");
    let receipts = event["receipts"].as_array().unwrap();
    let statuses: Vec<_> = receipts.iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "applied", "failed"]);
    assert_eq!(receipts[1]["target_record_id"], "order-77");
    // The same receipt id reused for another receipt is a conflict.
    let mut reused =
        signer.sign_with_id(&Receipt::applied(&id).with_target_record("other"), &applied.receipt_id, sign::now_secs());
    reused = resign(&signer, &reused);
    let (status, answer) = post(&gw, &reused).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("receipt_id_conflict")));
}

#[tokio::test]
async fn a_receipt_cancels_pending_retries_and_races_with_in_flight_attempts() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    // The first attempt hangs for 1.5 s and then fails; the receipt arrives meanwhile.
    receiver.set(Behaviour { status: 500, delay: Duration::from_millis(1500), ..Behaviour::default() });
    let gw = start(&db, &receiver, &["500ms"]).await;
    let signer = key("orders-1", 1);
    let racing = ingest(&gw, "race").await;
    eventually(Duration::from_secs(5), "the attempt in flight", || async {
        (!receiver.for_event(&racing).is_empty()).then_some(())
    })
    .await;
    let (status, _) = post(&gw, &signer.sign(&Receipt::applied(&racing), sign::now_secs())).await;
    assert_eq!(status, 200);

    // A pending retry: the first attempt failed, the next is scheduled when the receipt comes.
    receiver.set(Behaviour { status: 500, ..Behaviour::default() });
    let pending = ingest(&gw, "pending").await;
    eventually(Duration::from_secs(5), "a failed first attempt", || async {
        let event = gw.event(&pending).await?;
        (event["attempts"] == 1).then_some(())
    })
    .await;
    let (status, _) = post(&gw, &signer.sign(&Receipt::applied(&pending), sign::now_secs())).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for id in [&racing, &pending] {
        assert_eq!(receiver.for_event(id).len(), 1, "an attempt went out after the receipt was recorded");
        let event = gw.event(id).await.unwrap();
        assert!(event["next_attempt_at"].is_null(), "{event}");
        assert_eq!(event["outcome"], "confirmed");
    }
}

#[tokio::test]
async fn inline_receipts_on_a_2xx_confirm_the_event() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    receiver.set_receipt_key(key("orders-1", 1));
    receiver.set(Behaviour { inline_receipt: true, ..Behaviour::default() });
    let gw = start(&db, &receiver, &["30s"]).await;
    let id = ingest(&gw, "inline").await;
    let event = eventually(Duration::from_secs(5), "confirmed inline", || async {
        let event = gw.event(&id).await?;
        (event["outcome"] == "confirmed").then_some(event)
    })
    .await;
    assert_eq!(event["receipts"][0]["via"], "inline");
    // A handler signing inline with a key of another source confirms nothing.
    receiver.set_receipt_key(key("billing-1", 2));
    let other = ingest(&gw, "inline-forbidden").await;
    eventually(Duration::from_secs(5), "delivered", || async {
        (gw.event(&other).await?["delivery_state"] == "delivered").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(outcome(&gw, &other).await, "unknown");
}

#[tokio::test]
async fn overdue_events_and_the_gap_view() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = start(&db, &receiver, &["30s"]).await;
    let signer = key("orders-1", 1);
    let confirmed = ingest(&gw, "g-1").await;
    let silent = ingest(&gw, "g-2").await;
    eventually(Duration::from_secs(5), "two delivered", || async { (receiver.count() >= 2).then_some(()) }).await;
    receiver.set(Behaviour { status: 500, ..Behaviour::default() });
    let failing = ingest(&gw, "g-3").await;
    eventually(Duration::from_secs(5), "all three attempted", || async { (receiver.count() >= 3).then_some(()) }).await;
    post(&gw, &signer.sign(&Receipt::applied(&confirmed), sign::now_secs())).await;
    post(&gw, &signer.sign(&Receipt::failed(&failing, "E_VALIDATION", None), sign::now_secs())).await;
    // The source's receipt_sla is 1 s.
    let event = eventually(Duration::from_secs(5), "the silent event overdue", || async {
        let event = gw.event(&silent).await?;
        (event["overdue"] == true).then_some(event)
    })
    .await;
    assert_eq!(event["outcome"], "unknown");
    assert_eq!(gw.event(&confirmed).await.unwrap()["overdue"], false);
    let (status, summary) = gw.admin_get("/v1/summary?source=orders&bucket=1m").await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        summary["totals"],
        json!({ "confirmed": 1, "failed": 1, "unknown": 1, "resolved": 0, "overdue": 1, "total": 3 })
    );
    assert_eq!(summary["failed_by_error_code"], json!({ "E_VALIDATION": 1 }), "{summary}");
    let busy: Vec<&Value> = summary["buckets"].as_array().unwrap().iter().filter(|b| b["total"] != 0).collect();
    assert!(!busy.is_empty() && busy.len() <= 2, "{summary}");
    let (status, _) = gw.admin_get("/v1/summary?bucket=banana").await;
    assert_eq!(status, 400);
    let (_, everything) = gw.admin_get("/v1/summary").await;
    assert_eq!(everything["sources"]["billing"]["total"], 0);
}

/// Rotation: a key made by `hookwarden keys generate` works beside the current one, and the
/// config line it prints, pasted on a second source, makes the same key good there too.
#[tokio::test]
async fn a_generated_key_rotates_in_beside_the_current_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookwarden"))
        .args(["keys", "generate", "--id", "orders-2", "--json"])
        .output()
        .expect("run hookwarden keys generate");
    assert!(out.status.success(), "{out:?}");
    let generated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_key = ReceiptKey::from_seed_base64("orders-2", generated["seed"].as_str().unwrap()).unwrap();
    assert_eq!(new_key.public_key_base64(), generated["public_key"].as_str().unwrap());
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let orders = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&sign::receipt_keys_line(&[(&key("orders-1", 1), false), (&new_key, false)]));
    let billing = SourceSpec::new("billing", "{ kind = \"none\" }", &receiver.url("/billing"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(generated["config"].as_str().unwrap());
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![orders, billing])).await;
    let old_signed = ingest(&gw, "rot-a").await;
    let new_signed = ingest(&gw, "rot-b").await;
    let (status, answer) = gw.ingest("billing", &[], json!({ "id": "rot-c" }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let on_billing = answer["event_id"].as_str().unwrap().to_string();
    let now = sign::now_secs();
    for (signer, event) in [(key("orders-1", 1), &old_signed), (new_key.clone(), &new_signed), (new_key, &on_billing)] {
        let (status, answer) = post(&gw, &signer.sign(&Receipt::applied(event.as_str()), now)).await;
        assert_eq!(status, 200, "{} for {event}: {answer}", signer.id);
        assert_eq!(outcome(&gw, event).await, "confirmed");
    }
    // The old key is registered on orders only.
    let (_, answer) = gw.ingest("billing", &[], json!({ "id": "rot-d" }).to_string().as_bytes()).await;
    let other = answer["event_id"].as_str().unwrap();
    let (status, answer) = post(&gw, &key("orders-1", 1).sign(&Receipt::applied(other), now)).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("receipt_key_forbidden")), "{answer}");
}

/// The last attempt the ladder allows fails while the handler's receipt is being recorded:
/// the attempt's result does not undo the receipt (the event is neither exhausted nor failed).
async fn a_failed_last_attempt_leaves_a_receipt_recorded_meanwhile(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    receiver.set(Behaviour { status: 500, delay: Duration::from_millis(1500), ..Behaviour::default() });
    let orders = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&sign::receipt_keys_line(&[(&key("orders-1", 1), false)]))
        .ladder(&["500ms"], 1);
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![orders])).await;
    let id = ingest(&gw, "last").await;
    eventually(Duration::from_secs(5), "the only attempt in flight", || async {
        (!receiver.for_event(&id).is_empty()).then_some(())
    })
    .await;
    let (status, answer) = post(&gw, &key("orders-1", 1).sign(&Receipt::applied(&id), sign::now_secs())).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("confirmed")), "{answer}");
    let event = eventually(Duration::from_secs(10), "the attempt's result written", || async {
        let event = gw.event(&id).await?;
        (event["attempts"] == 1).then_some(event)
    })
    .await;
    assert_eq!(event["attempt_log"][0]["status_code"], 500, "{event}");
    assert_eq!(event["outcome"], "confirmed", "{event}");
    assert_ne!(event["delivery_state"], "exhausted", "{event}");
    assert!(event["error_code"].is_null() && event["next_attempt_at"].is_null(), "{event}");
}

on_both_backends!(a_failed_last_attempt_leaves_a_receipt_recorded_meanwhile);
