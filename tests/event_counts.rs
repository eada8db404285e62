//! The overview's counts (`event_counts`, kept by triggers on `events`, migration 0012) equal
//! a recount of the events after every kind of write: ingest, delivery, receipts (applied and
//! failed), a resolution, retention's purge, an import. Checked as the API answers the gap
//! view (`GET /v1/summary`), as the store answers it, for windows cut mid-minute and not, in
//! buckets of whole minutes (read from the counts) and not (the fallback), and table-wide.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hookwarden::clock::{Clock, ManualClock};
use hookwarden::store::{Store, SummaryQuery};
use hookwarden::timestamp::format_ms;
use receipts_sdk::receipt::Receipt;
use serde_json::{Value, json};

use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, on_both_backends, sign};

on_both_backends!(the_overview_counts_equal_a_recount_after_every_kind_of_write);

const MINUTE: i64 = 60_000;
const SLA_MS: i64 = 30_000;

/// Counts of `event_counts` (summed over PostgreSQL's shards) that a grouping of `events`
/// does not give, and the reverse; and rows below zero, or at zero for a minute purged.
const DRIFT: &str = "SELECT \
     (SELECT COUNT(*) FROM (SELECT source, minute, outcome, SUM(n) FROM event_counts GROUP BY 1, 2, 3 HAVING SUM(n) <> 0 \
      EXCEPT SELECT source, (received_at / 60000) * 60000, outcome, COUNT(*) FROM events GROUP BY 1, 2, 3) a) + \
     (SELECT COUNT(*) FROM (SELECT source, (received_at / 60000) * 60000, outcome, COUNT(*) FROM events GROUP BY 1, 2, 3 \
      EXCEPT SELECT source, minute, outcome, SUM(n) FROM event_counts GROUP BY 1, 2, 3 HAVING SUM(n) <> 0) b) + \
     (SELECT COUNT(*) FROM event_counts c WHERE n < 0 OR (n = 0 AND NOT EXISTS \
      (SELECT 1 FROM events e WHERE e.source = c.source AND e.received_at >= c.minute AND e.received_at < c.minute + 60000)))";

async fn hookwarden(args: &[&str], paths: &[&Path]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookwarden"));
    command.args(args).args(paths).env("RUST_LOG", "error").env_remove("HOOKWARDEN_CONFIG");
    command.output().await.expect("runs")
}

async fn post(gw: &Gateway, id: &str) -> String {
    let (status, answer) =
        gw.ingest("orders", &[("x-id".into(), id.into())], json!({ "n": id }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

/// The gap view of `orders` over several windows, each as the API and the store answer it,
/// against a grouping of the events; and the counts table against a grouping, whole.
async fn check(gw: Option<&Gateway>, db: &TestDb, store: &Store, now: i64, first: i64, what: &str) {
    let minute = first.div_euclid(MINUTE) * MINUTE;
    let windows = [
        // Cut mid-minute at both ends, in minute buckets and in 5-minute ones.
        (first - 45_123, now + 1_234, "1m", MINUTE),
        (first - 45_123, now + 1_234, "5m", 5 * MINUTE),
        // On whole minutes.
        (minute - MINUTE, now.div_euclid(MINUTE) * MINUTE + 2 * MINUTE, "1m", MINUTE),
        // Inside one minute (two events): no whole minute to read from the counts.
        (first - 10_000, first + 20_001, "1m", MINUTE),
        // Buckets of 90 s cut minutes in two: all counted from the events.
        (first - 45_123, now + 1_234, "90s", 90_000),
    ];
    for (since, until, bucket, bucket_ms) in windows {
        let q = SummaryQuery { source: "orders".into(), since, until, bucket_ms, overdue_before: now - SLA_MS };
        let recount = store.summary_recount(&q).await.unwrap();
        let served = store.summary(&q).await.unwrap();
        assert_eq!(served, recount, "{what}: the store's gap view over {since}..{until} in {bucket} buckets");
        let Some(gw) = gw else { continue };

        let mut expected: BTreeMap<String, Value> = BTreeMap::new();
        for row in &recount {
            let counts = expected.entry(format_ms(row.bucket_start)).or_insert_with(
                || json!({ "confirmed": 0, "failed": 0, "unknown": 0, "resolved": 0, "overdue": 0, "total": 0 }),
            );
            let add = |counts: &mut Value, key: &str| {
                counts[key] = json!(counts[key].as_i64().unwrap() + row.count);
            };
            add(counts, row.outcome.as_str());
            add(counts, "total");
            if row.overdue {
                add(counts, "overdue");
            }
        }
        // The API's buckets, the empty ones left out.
        let path =
            format!("/v1/summary?source=orders&since={}&until={}&bucket={bucket}", format_ms(since), format_ms(until));
        let (status, view) = gw.admin_get(&path).await;
        assert_eq!(status, 200, "{view}");
        let answered: BTreeMap<String, Value> = view["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["total"] != 0)
            .map(|b| {
                let mut counts = b.clone();
                let start = counts.as_object_mut().unwrap().remove("start").unwrap();
                (start.as_str().unwrap().to_string(), counts)
            })
            .collect();
        assert_eq!(answered, expected, "{what}: GET {path}");
    }
    assert_eq!(db.scalar(DRIFT).await, 0, "{what}: event_counts differs from a grouping of the events");
}

/// Through a gateway on a clock the test moves: 12 events over four minutes, delivered
/// (some of them overdue as the clock moves), 4 applied and 2 failed receipts (one failed
/// again with another code), one resolved, exported; the settled ones purged by retention;
/// the export imported into a second store (and again, adding nothing). After each step the
/// counts agree with the events.
async fn the_overview_counts_equal_a_recount_after_every_kind_of_write(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let key = sign::receipt_key("orders-1", 1);
    let orders = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { header = \"x-id\" }")
        .with("receipt_sla = \"30s\"")
        .with(&sign::receipt_keys_line(&[(&key, false)]));
    let mut spec = GatewaySpec::new(&db.url, vec![orders.clone()]);
    spec.retention = "events = \"10m\"\nunsettled = \"1d\"\nrun_every = \"100ms\"".into();
    // Half a minute into a minute, so the window's edges cut minutes.
    let first = sign::now_ms().div_euclid(MINUTE) * MINUTE + 30_500;
    let clock = ManualClock::at(first);
    let gw = Gateway::start_in_process(&spec, Arc::new(clock.clone())).await;
    let store = Store::connect(&db.url).await.unwrap();

    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(post(&gw, &format!("o-{i}")).await);
        clock.advance(20_000);
    }
    eventually(Duration::from_secs(20), "12 events delivered", || async {
        let delivered = gw.all_events().await.iter().filter(|e| e["delivery_state"] == "delivered").count();
        (delivered == 12).then_some(())
    })
    .await;
    check(Some(&gw), &db, &store, clock.now_ms(), first, "after ingest and delivery").await;

    let receipt = |receipt: Receipt| key.sign(&receipt, clock.now_ms() / 1000);
    for id in &ids[..4] {
        let (status, answer) = gw.post_receipt(&receipt(Receipt::applied(id))).await;
        assert_eq!(status, 200, "{answer}");
    }
    for (id, code) in [(&ids[4], "E_STOCK"), (&ids[5], "E_STOCK"), (&ids[4], "E_PRICE")] {
        let (status, answer) = gw.post_receipt(&receipt(Receipt::failed(id, code, None))).await;
        assert_eq!(status, 200, "{answer}");
    }
    check(Some(&gw), &db, &store, clock.now_ms(), first, "after receipts").await;

    let (status, answer) =
        gw.admin_post(&format!("/v1/events/{}/resolve", ids[6]), &json!({ "note": "applied by hand" })).await;
    assert_eq!(status, 200, "{answer}");
    clock.advance(SLA_MS);
    check(Some(&gw), &db, &store, clock.now_ms(), first, "after a resolution, with more of them overdue").await;

    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("orders.jsonl.gz");
    let config = gw.config_path().to_str().unwrap().to_string();
    let (since, until) = (format_ms(first - MINUTE), format_ms(clock.now_ms() + MINUTE));
    let export =
        ["export", "--config", &config, "--source", "orders", "--since", &since, "--until", &until, "--output"];
    let out = hookwarden(&export, &[&file]).await;
    assert!(out.status.success(), "{out:?}");

    // Past `events` for the 5 settled ones (4 confirmed, 1 resolved); the others stay.
    clock.advance(11 * MINUTE);
    eventually(Duration::from_secs(20), "the settled events purged", || async {
        (gw.all_events().await.len() == 7).then_some(())
    })
    .await;
    check(Some(&gw), &db, &store, clock.now_ms(), first, "after retention's purge").await;

    // The copy: a store the target gateway made, stopped while importing (SQLite takes one
    // writer), then started again to answer.
    let copy = TestDb::new(kind).await;
    let copy_spec = GatewaySpec::new(&copy.url, vec![orders]);
    let mut target = Gateway::start_in_process(&copy_spec, Arc::new(ManualClock::at(clock.now_ms()))).await;
    target.kill9();
    let target_config = target.config_path().to_str().unwrap().to_string();
    let copy_store = Store::connect(&copy.url).await.unwrap();
    for (round, said) in [(1, "imported 12 events"), (2, "imported 0 events")] {
        let out = hookwarden(&["import", "--config", &target_config], &[&file]).await;
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with(said), "{out:?}");
        check(None, &copy, &copy_store, clock.now_ms(), first, &format!("after import {round}")).await;
    }
    let target = Gateway::start_in_process(&copy_spec, Arc::new(ManualClock::at(clock.now_ms()))).await;
    check(Some(&target), &copy, &copy_store, clock.now_ms(), first, "the imported store").await;
    let path = format!("/v1/summary?source=orders&since={since}&until={until}&bucket=1m");
    assert_eq!(
        target.admin_get(&path).await.1["totals"],
        json!({ "confirmed": 4, "failed": 2, "unknown": 5, "resolved": 1, "overdue": 5, "total": 12 }),
        "the copy counts what was exported"
    );
    store.close().await;
    copy_store.close().await;
}
