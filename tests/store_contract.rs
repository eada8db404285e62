//! The store's contract, run on both backends: dedup, exclusive claims, lease expiry.

use std::collections::HashSet;

use hookwarden::access::SourceScope;
use hookwarden::domain::Outcome;
use hookwarden::domain::{AttemptKind, EventId, NewEvent, Stored};
use hookwarden::store::{
    AttemptRecord, CommitQueue, Completion, Cutoffs, NewAuditEntry, NewReceipt, PurgePlan, Recorded, Resolving, Store,
};

use crate::support::{Db, TestDb, on_both_backends};

fn event(source: &str, key: &str, at: i64) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        source: source.into(),
        dedup_key: key.into(),
        event_type: Some("t".into()),
        received_at: at,
        headers: vec![("content-type".into(), "application/json".into())],
        body: format!("{{\"k\":\"{key}\"}}").into_bytes(),
        body_dedup: None,
    }
}

fn record(id: &EventId, gateway: &str, completion: Completion) -> AttemptRecord {
    AttemptRecord {
        event_id: id.clone(),
        gateway: gateway.into(),
        kind: AttemptKind::Scheduled,
        replay_id: None,
        started_at: 1_000,
        latency_ms: 3,
        status_code: Some(200),
        error: None,
        response_excerpt: None,
        completion,
        confirm_without_receipt: None,
    }
}

async fn check_dedup(kind: Db) {
    let db = TestDb::new(kind).await;
    let store = Store::connect(&db.url).await.unwrap();
    let batch = vec![event("s", "a", 1), event("s", "b", 1), event("s", "a", 1), event("t", "a", 1)];
    let stored = store.insert_events(&batch).await.unwrap();
    assert_eq!(stored[0], Stored::New(batch[0].id.clone()));
    assert_eq!(stored[1], Stored::New(batch[1].id.clone()));
    assert_eq!(stored[2], Stored::Duplicate(batch[0].id.clone()), "a repeat within one batch");
    assert_eq!(stored[3], Stored::New(batch[3].id.clone()), "keys are per source");
    let again = store.insert_events(&[event("s", "b", 2)]).await.unwrap();
    assert_eq!(again[0], Stored::Duplicate(batch[1].id.clone()), "a repeat in a later batch");
}

#[tokio::test]
async fn dedup_sqlite() {
    check_dedup(Db::Sqlite).await;
}

#[tokio::test]
async fn dedup_postgres() {
    check_dedup(Db::Postgres).await;
}

async fn check_claims(kind: Db) {
    let db = TestDb::new(kind).await;
    let store = Store::connect(&db.url).await.unwrap();
    let events: Vec<_> = (0..50).map(|n| event("s", &format!("k{n}"), 100)).collect();
    store.insert_events(&events).await.unwrap();

    // Two gateways claim at once: disjoint sets that cover everything due.
    let (a, b) = tokio::join!(store.claim_due("gw-a", 100, 10_000, 30), store.claim_due("gw-b", 100, 10_000, 30));
    let (a, b) = (a.unwrap(), b.unwrap());
    let ids_a: HashSet<_> = a.iter().map(|d| d.event_id.clone()).collect();
    let ids_b: HashSet<_> = b.iter().map(|d| d.event_id.clone()).collect();
    assert!(ids_a.is_disjoint(&ids_b), "an event was claimed twice");
    assert_eq!(ids_a.len() + ids_b.len(), 50);
    assert_eq!(a[0].body, events.iter().find(|e| e.id == a[0].event_id).unwrap().body);

    // Leased: nothing more to claim until the leases run out.
    assert!(store.claim_due("gw-c", 5_000, 20_000, 100).await.unwrap().is_empty());
    let reclaimed = store.claim_due("gw-c", 10_001, 20_000, 100).await.unwrap();
    assert_eq!(reclaimed.len(), 50, "expired leases are claimable again");

    // The old owner lost the lease: its result is kept, the schedule is the new owner's.
    let id = &reclaimed[0].event_id;
    let held = store
        .complete_attempts(&[
            record(id, "gw-a", Completion::Delivered { at: 10_002 }),
            record(id, "gw-c", Completion::RetryAt(30_000)),
        ])
        .await
        .unwrap();
    assert_eq!(held, vec![false, true]);
    let detail = store.get_event(id).await.unwrap().unwrap();
    assert_eq!(detail.attempts.len(), 2);
    assert_eq!(detail.summary.next_attempt_at, Some(30_000));
    assert_eq!(detail.summary.attempts, 1);

    // Exhaustion marks the event failed.
    let other = &reclaimed[1].event_id;
    store.complete_attempts(&[record(other, "gw-c", Completion::Exhausted)]).await.unwrap();
    let failed = store.get_event(other).await.unwrap().unwrap().summary;
    assert_eq!(failed.outcome, hookwarden::domain::Outcome::Failed);
    assert_eq!(failed.error_code.as_deref(), Some("delivery_exhausted"));
    assert_eq!(failed.next_attempt_at, None);
    // Results commit with full durability on SQLite too: the writer never leaves FULL.
    if kind == Db::Sqlite {
        assert_eq!(store.writer_synchronous().await.unwrap(), Some(2));
    }
    // Replay attempts commit without an fsync of their own, and hand the writer back at FULL.
    let mut replayed = record(other, "gw-c", Completion::Replayed { delivered_at: Some(40_000) });
    replayed.kind = AttemptKind::Replay;
    assert_eq!(store.record_replay_attempts(&[replayed]).await.unwrap(), vec![true]);
    assert_eq!(store.get_event(other).await.unwrap().unwrap().attempts.len(), 2);
    if kind == Db::Sqlite {
        assert_eq!(store.writer_synchronous().await.unwrap(), Some(2));
    }
}

#[tokio::test]
async fn claims_sqlite() {
    check_claims(Db::Sqlite).await;
}

#[tokio::test]
async fn claims_postgres() {
    check_claims(Db::Postgres).await;
}

fn receipt(id: &str, event: &EventId, status: &'static str, code: Option<&str>) -> NewReceipt {
    NewReceipt {
        receipt_id: id.into(),
        event_id: event.clone(),
        key_id: "k".into(),
        status,
        target_record_id: None,
        error_code: code.map(Into::into),
        detail: None,
        signed_at: 1_000,
        received_at: 2_000,
        via: "post",
        body: format!("{{\"r\":\"{id}\"}}"),
        signature: "v1a,x".into(),
    }
}

async fn check_receipt_batches(kind: Db) {
    let db = TestDb::new(kind).await;
    let store = Store::connect(&db.url).await.unwrap();
    let events: Vec<_> = (0..4).map(|n| event("s", &format!("r{n}"), 100)).collect();
    store.insert_events(&events).await.unwrap();
    let (a, b, c) = (&events[0].id, &events[1].id, &events[2].id);
    // Distinct events: the set-based path.
    let first = store
        .record_receipts(&[receipt("r1", a, "applied", None), receipt("r2", b, "failed", Some("E_DB"))])
        .await
        .unwrap();
    assert_eq!(first, vec![Recorded::New(Outcome::Confirmed), Recorded::New(Outcome::Failed)]);
    // Same event twice, a repeat and a conflicting reuse: row by row, in order.
    let mixed = store
        .record_receipts(&[
            receipt("r3", c, "failed", Some("E_X")),
            receipt("r4", c, "applied", None),
            receipt("r5", c, "failed", Some("E_LATE")),
            receipt("r1", a, "applied", None),
            NewReceipt { body: "other".into(), ..receipt("r2", b, "failed", Some("E_DB")) },
        ])
        .await
        .unwrap();
    assert_eq!(
        mixed,
        vec![
            Recorded::New(Outcome::Failed),
            Recorded::New(Outcome::Confirmed),
            Recorded::New(Outcome::Confirmed),
            Recorded::Repeat(Outcome::Confirmed),
            Recorded::IdConflict,
        ]
    );
    assert_eq!(store.list_receipts(c).await.unwrap().len(), 3);
    assert_eq!(store.get_event(b).await.unwrap().unwrap().summary.error_code.as_deref(), Some("E_DB"));
}

#[tokio::test]
async fn receipt_batches_sqlite() {
    check_receipt_batches(Db::Sqlite).await;
}

#[tokio::test]
async fn receipt_batches_postgres() {
    check_receipt_batches(Db::Postgres).await;
}

/// SQLite hands new events from the group commit to the dispatcher: only committed new ones,
/// only as many as the queue holds, and a claim from the store never returns a queued one
/// (it finds the ones that did not fit, and the dispatcher is told to look).
#[tokio::test]
async fn fresh_events_are_handed_off_once_sqlite() {
    let db = TestDb::new(Db::Sqlite).await;
    let store = Store::connect(&db.url).await.unwrap();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let (handoff, fresh) = hookwarden::store::handoff(2, "gw-a", wake.clone());
    let commits = CommitQueue::spawn(&store, Some(handoff));
    let events: Vec<_> = (0..4).map(|n| event("s", &format!("k{n}"), 100)).collect();
    for e in &events[..3] {
        assert_eq!(commits.event(e.clone()).await.unwrap().unwrap(), Stored::New(e.id.clone()));
    }
    // A provider's repeat is answered with the first id and queued nowhere.
    let repeat = event("s", "k0", 100);
    assert_eq!(commits.event(repeat).await.unwrap().unwrap(), Stored::Duplicate(events[0].id.clone()));
    assert!(fresh.missed(), "the third event did not fit and the dispatcher must claim it");
    assert!(!fresh.missed(), "told once");

    // The queued ones are leased: a claim from the store finds only the third.
    let claimed = store.claim_due("gw-a", 100, 10_000, 10).await.unwrap();
    assert_eq!(claimed.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>(), vec![events[2].id.clone()]);
    let queued = fresh.take(10);
    assert_eq!(
        queued.iter().map(|d| d.event_id.clone()).collect::<Vec<_>>(),
        vec![events[0].id.clone(), events[1].id.clone()]
    );
    assert_eq!(queued[0].body, events[0].body);
    assert_eq!(queued[0].headers, events[0].headers);
    assert_eq!((queued[0].attempts, queued[0].ladder_attempts), (0, 0));

    // Taken from the queue, their leases run out like a claim's, and they become claimable.
    store.lease_taken(&queued, "gw-a", 5_000);
    assert!(store.claim_due("gw-b", 4_999, 10_000, 10).await.unwrap().is_empty());
    let expired = store.claim_due("gw-b", 5_001, 10_000, 10).await.unwrap();
    assert_eq!(expired.len(), 2);

    // With room in the queue again, the next event goes there and nothing is missed.
    let last = events[3].clone();
    assert_eq!(commits.event(last.clone()).await.unwrap().unwrap(), Stored::New(last.id.clone()));
    assert_eq!(fresh.take(10).iter().map(|d| d.event_id.clone()).collect::<Vec<_>>(), vec![last.id]);
    assert!(!fresh.missed());
}

/// A group that fails inside SQLite (its statements are `OR ROLLBACK`, so SQLite itself ends
/// the transaction) stores none of its rows, and the groups after it commit for real.
#[tokio::test]
async fn a_failed_group_stores_nothing_and_the_next_commits_sqlite() {
    let db = TestDb::new(Db::Sqlite).await;
    let store = Store::connect(&db.url).await.unwrap();
    let first = event("s", "a", 1);
    store.insert_events(std::slice::from_ref(&first)).await.unwrap();
    // Same id, another key: the primary key fails, with a new event before it in the group.
    let mut clash = event("s", "b", 1);
    clash.id = first.id.clone();
    let before = event("s", "c", 1);
    for _ in 0..2 {
        assert!(store.insert_events(&[before.clone(), clash.clone()]).await.is_err());
        assert!(store.get_event(&before.id).await.unwrap().is_none(), "half a group was stored");
    }
    // Committed for real: another connection (the readers) sees it.
    let after = event("s", "d", 1);
    assert_eq!(store.insert_events(std::slice::from_ref(&after)).await.unwrap(), vec![Stored::New(after.id.clone())]);
    assert!(store.get_event(&after.id).await.unwrap().is_some(), "the next group did not commit");
    assert_eq!(store.writer_synchronous().await.unwrap(), Some(2));
}

/// Past 400 WAL pages the checkpoint runs on its own thread and connection, not in a commit;
/// what it copied reads back whole.
#[tokio::test]
async fn the_wal_is_checkpointed_beside_the_writer_sqlite() {
    let db = TestDb::new(Db::Sqlite).await;
    let store = Store::connect(&db.url).await.unwrap();
    assert_eq!(store.checkpoints_run(), 0);
    // ~3 KiB bodies: a page or more each, 600 events, well below the writer's own 2,000.
    let mut events = Vec::new();
    for batch in 0..6 {
        let mut group: Vec<NewEvent> = (0..100).map(|n| event("s", &format!("k{batch}-{n}"), 100)).collect();
        for e in &mut group {
            e.body = format!("{{\"pad\":\"{}\"}}", "x".repeat(3000)).into_bytes();
        }
        store.insert_events(&group).await.unwrap();
        events.extend(group);
    }
    let waited = std::time::Instant::now();
    while store.checkpoints_run() == 0 {
        assert!(waited.elapsed().as_secs() < 10, "no checkpoint ran beside the writer");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let due = store.claim_due("gw", 100, 10_000, 1_000).await.unwrap();
    assert_eq!(due.len(), events.len());
    assert!(due.iter().all(|d| d.body == events[0].body));
    assert_eq!(store.writer_synchronous().await.unwrap(), Some(2));
}

/// Every commit on the writer counts toward the checkpoint, not only the ingest group
/// commit's: a gateway taking only receipts gets its WAL copied beside the writer too.
#[tokio::test]
async fn receipts_alone_wake_the_checkpointer_sqlite() {
    let db = TestDb::new(Db::Sqlite).await;
    let store = Store::connect(&db.url).await.unwrap();
    let events: Vec<NewEvent> = (0..600).map(|n| event("s", &format!("k{n}"), 100)).collect();
    store.insert_events(&events).await.unwrap();
    assert_eq!(store.checkpoints_run(), 0, "small events alone are below the threshold");
    // ~3 KiB each: a page or more per receipt, 600 of them.
    for chunk in events.chunks(100) {
        let receipts: Vec<NewReceipt> = chunk
            .iter()
            .map(|e| NewReceipt {
                detail: Some("x".repeat(3000)),
                ..receipt(&format!("r-{}", e.id.as_str()), &e.id, "applied", None)
            })
            .collect();
        store.record_receipts(&receipts).await.unwrap();
    }
    let waited = std::time::Instant::now();
    while store.checkpoints_run() == 0 {
        assert!(waited.elapsed().as_secs() < 10, "receipts' pages never woke the checkpointer");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let listed = store.list_receipts(&events[599].id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].detail.as_deref().map(str::len), Some(3000));
}

/// Events are numbered (`seq`, the order received) in the order they are stored, also across
/// a restart of the store and past a provider's repeat, which takes no number of its own.
async fn order_received(kind: Db) {
    let db = TestDb::new(kind).await;
    let mut order = Vec::new();
    for round in 0..2 {
        let store = Store::connect(&db.url).await.unwrap();
        for key in ["a", "b", "a", "c"] {
            // Ids and times run backwards: the order is the store's, not theirs.
            let mut e = event("s", &format!("{key}{round}"), 10 - order.len() as i64);
            e.id = EventId::parse(&format!("evt_0{}000000000000000000000000", 9 - order.len())).unwrap();
            if let Stored::New(id) = &store.insert_events(&[e]).await.unwrap()[0] {
                order.push(id.clone());
            }
        }
        store.close().await;
    }
    assert_eq!(order.len(), 6);
    let mut seqs = Vec::new();
    for id in &order {
        seqs.push(db.scalar(&format!("SELECT seq FROM events WHERE id = '{id}'")).await);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "not numbered in the order stored: {seqs:?}");
}

on_both_backends!(order_received);

/// The check before a send sees an operator's resolution as committed, made after the run
/// was planned (so the executor drops the item, `JobRun::still_eligible`); receipts keep
/// their meaning: a `failed` one leaves the event resolved, an `applied` one confirms it.
async fn the_check_before_a_send_sees_a_resolution(kind: Db) {
    let db = TestDb::new(kind).await;
    let store = Store::connect(&db.url).await.unwrap();
    let events: Vec<_> = (0..2).map(|n| event("s", &format!("res{n}"), 100)).collect();
    store.insert_events(&events).await.unwrap();
    let (a, b) = (&events[0].id, &events[1].id);
    let before = store.check_before_send(a).await.unwrap();
    assert_eq!((before.outcome, before.resolved_at), (Outcome::Unknown, None));
    let entry = |_: &str, _: Outcome| NewAuditEntry {
        at: 5_000,
        actor: "op".into(),
        action: "event.resolved".into(),
        subject: None,
        details: serde_json::json!({}),
    };
    let scope = SourceScope::All;
    assert_eq!(store.resolve_event(a, &scope, "op", "by hand", 5_000, entry).await.unwrap(), Resolving::Resolved);
    let after = store.check_before_send(a).await.unwrap();
    assert_eq!((after.outcome, after.resolved_at, after.receipts), (Outcome::Resolved, Some(5_000), 0));
    assert_eq!(
        store.resolve_event(a, &scope, "op", "again", 6_000, entry).await.unwrap(),
        Resolving::Settled(Outcome::Resolved)
    );
    let only_t = SourceScope::Only(["t".to_string()].into());
    assert_eq!(store.resolve_event(b, &only_t, "op", "x", 6_000, entry).await.unwrap(), Resolving::NotFound);

    let failed = store.record_receipts(&[receipt("rf", a, "failed", Some("E_LATE"))]).await.unwrap();
    assert_eq!(failed, vec![Recorded::New(Outcome::Resolved)], "a failed receipt does not reopen it");
    let applied = store.record_receipts(&[receipt("ra", a, "applied", None)]).await.unwrap();
    assert_eq!(applied, vec![Recorded::New(Outcome::Confirmed)], "the application says it applied it");
}

on_both_backends!(the_check_before_a_send_sees_a_resolution);

/// A plan that purges every source's settled payloads before `payloads`, settled events
/// before `events`, and nothing unsettled.
fn purge_plan(payloads: i64, events: i64) -> PurgePlan {
    let others = Cutoffs { payloads, events, unsettled: i64::MIN, body_hashes: i64::MAX };
    PurgePlan { sources: Vec::new(), others, now: events + 20_000, archiving: Vec::new() }
}

/// The purge's batches commit without an fsync of their own on SQLite's writer: each hands
/// the writer back at FULL, what it purged is committed for real (a new store on the file
/// reads it so), and a batch that fails half-way leaves nothing of itself and the next
/// batch goes on.
#[tokio::test]
async fn purge_batches_hand_the_writer_back_at_full_and_fail_whole_sqlite() {
    let db = TestDb::new(Db::Sqlite).await;
    let store = Store::connect(&db.url).await.unwrap();
    // Ids carry their received time, as the gateway's do: the purge bounds its scans by them.
    let at = |ms: i64, n: usize| {
        let mut e = event("s", &format!("k{ms}-{n}"), ms);
        e.id = EventId::parse(&format!("evt_{}", ulid::Ulid::from_parts(ms as u64, n as u128))).unwrap();
        e
    };
    const T0: i64 = 1_800_000_000_000;
    let early: Vec<_> = (0..250).map(|n| at(T0 + n as i64, n)).collect();
    let late: Vec<_> = (0..250).map(|n| at(T0 + 5_000 + n as i64, n)).collect();
    store.insert_events(&early).await.unwrap();
    store.insert_events(&late).await.unwrap();
    // Delivered (no retry holds them) and confirmed by their receipts: settled.
    let due = store.claim_due("gw", T0 + 10_000, T0 + 70_000, 1_000).await.unwrap();
    assert_eq!(due.len(), 500);
    let delivered: Vec<_> =
        due.iter().map(|d| record(&d.event_id, "gw", Completion::Delivered { at: T0 + 10_000 })).collect();
    store.complete_attempts(&delivered).await.unwrap();
    let receipts: Vec<_> =
        early.iter().chain(&late).enumerate().map(|(n, e)| receipt(&format!("r{n}"), &e.id, "applied", None)).collect();
    store.record_receipts(&receipts).await.unwrap();
    let full = Some(2);

    // Payloads of the late ones (the early ones go whole below), 100 at a time.
    let plan = purge_plan(T0 + 6_000, T0 + 1_000);
    let mut cursor = None;
    let mut payloads = 0;
    loop {
        let (batch, next) = store.purge_payloads(&plan, &cursor, 100).await.unwrap();
        assert_eq!(store.writer_synchronous().await.unwrap(), full, "a payload batch left the writer relaxed");
        payloads += batch.picked;
        cursor = next;
        if batch.picked < 100 {
            break;
        }
    }
    assert_eq!(payloads, 250);

    // A batch that fails at its last statement (a trigger refuses one event's delete): none
    // of its deletes stay, and the writer is at FULL after it.
    db.execute(&[&format!(
        "CREATE TRIGGER refuse BEFORE DELETE ON events WHEN old.id = '{}' BEGIN SELECT RAISE(ABORT, 'refused'); END",
        early[150].id.as_str()
    )])
    .await;
    let (first, cursor) = store.purge_events(&plan, &None, 100).await.unwrap();
    assert_eq!(first.picked, 100);
    assert!(store.purge_events(&plan, &cursor, 100).await.is_err(), "the trigger did not refuse");
    assert_eq!(store.writer_synchronous().await.unwrap(), full, "a failed batch left the writer relaxed");
    for e in &early[100..200] {
        let kept = store.get_event(&e.id).await.unwrap().expect("half a failed batch was purged");
        assert!(kept.payload.is_some(), "a failed batch's payloads were purged");
        assert_eq!(store.list_receipts(&e.id).await.unwrap().len(), 1, "a failed batch's receipts were purged");
    }
    db.execute(&["DROP TRIGGER refuse"]).await;
    let mut cursor = cursor;
    let mut events = first.picked;
    loop {
        let (batch, next) = store.purge_events(&plan, &cursor, 100).await.unwrap();
        assert_eq!(store.writer_synchronous().await.unwrap(), full, "an event batch left the writer relaxed");
        events += batch.picked;
        cursor = next;
        if batch.picked < 100 {
            break;
        }
    }
    assert_eq!(events, 250);
    store.purge_body_hashes(&plan, 100).await.unwrap();
    store.return_free_pages(64).await.unwrap();
    assert_eq!(store.writer_synchronous().await.unwrap(), full, "the hashes or the pages step left the writer relaxed");
    drop(store);

    // A new store on the file: what the batches purged is gone, the rest is there.
    let store = Store::connect(&db.url).await.unwrap();
    for e in &early {
        assert!(store.get_event(&e.id).await.unwrap().is_none(), "a purged event came back");
    }
    for e in &late {
        let kept = store.get_event(&e.id).await.unwrap().expect("an event not due was purged");
        assert!(kept.summary.payload_purged_at.is_some(), "a payload purge was not committed");
    }
    // Ingest after the purge commits at FULL as ever.
    store.insert_events(&[event("s", "after", T0 + 20_000)]).await.unwrap();
    assert_eq!(store.writer_synchronous().await.unwrap(), full);
}
