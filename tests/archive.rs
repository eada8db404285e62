//! The archive before purge, `hookwarden export` and `hookwarden import`: every event a purge
//! takes is in exactly one archive file first, whole (row, headers, body, attempts,
//! receipts), also when the gateway is killed in the middle; the files import back; an
//! export from SQLite imports into PostgreSQL equal, once, and a damaged file imports nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use hookwarden::archive::ArchivedEvent;
use hookwarden::clock::{Clock, ManualClock};
use receipts_sdk::receipt::Receipt;
use serde_json::json;

use crate::retention::{check_nothing_half_purged, seed_old_events};
use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, on_both_backends, sign};

on_both_backends!(
    a_run_that_died_between_claim_and_mark_is_finished_once,
    archive_comes_before_every_purge_and_holds_each_event_once_whole,
    a_kill_during_archive_and_purge_loses_no_event_and_writes_none_twice
);

async fn hookwarden(args: &[&str], paths: &[&Path]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookwarden"));
    command.args(args).args(paths).env("RUST_LOG", "error").env_remove("HOOKWARDEN_CONFIG");
    command.output().await.expect("runs")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// Every complete archive file under `dir` (not the `.tmp` of one being written), by path.
fn archive_files(dir: &Path) -> BTreeMap<PathBuf, Vec<ArchivedEvent>> {
    let mut files = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(archive_files(&path));
        } else if path.to_string_lossy().ends_with(".jsonl.gz") {
            let events = hookwarden::archive::read_file(&path).unwrap().collect::<Result<Vec<_>, _>>();
            files.insert(path.clone(), events.unwrap_or_else(|e| panic!("a damaged archive file: {e}")));
        }
    }
    files
}

/// The ids of every archived event, checked to be in one file each.
fn archived_ids(dir: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for (path, events) in archive_files(dir) {
        for e in events {
            assert!(ids.insert(e.event.id.clone()), "{} is in two files (again in {})", e.event.id, path.display());
        }
    }
    ids
}

fn source(name: &str, forward_to: &str) -> SourceSpec {
    SourceSpec::new(name, "{ kind = \"none\" }", forward_to).with("dedup = { header = \"x-id\" }")
}

async fn post(gw: &Gateway, source: &str, id: &str) -> String {
    let (status, answer) =
        gw.ingest(source, &[("x-id".into(), id.into())], json!({ "n": id }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

async fn resolve(gw: &Gateway, id: &str) {
    let (status, answer) = gw.admin_post(&format!("/v1/events/{id}/resolve"), &json!({ "note": "by hand" })).await;
    assert_eq!(status, 200, "{answer}");
}

/// With seconds of retention on a clock the test moves: while the archive directory cannot
/// be made, nothing of the archiving source is purged (another source's is); once it can,
/// each event is written once, with its headers, body, attempts and receipts, before its
/// payload goes, and again nothing when its row goes later; the gap too, before it goes. The
/// files import back into a fresh store.
async fn archive_comes_before_every_purge_and_holds_each_event_once_whole(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("archive");
    std::fs::write(&dir, "a file where the archive's directory should be").unwrap();
    let key = sign::receipt_key("orders-1", 1);
    let orders = source("orders", &receiver.url("/orders"))
        .with(&sign::receipt_keys_line(&[(&key, false)]))
        .with(&format!("retention = {{ archive_dir = \"{}\" }}", dir.display()));
    let plain = source("plain", &receiver.url("/plain"));
    let mut spec = GatewaySpec::new(&db.url, vec![orders.clone(), plain]);
    spec.retention = "payloads = \"2s\"\nevents = \"5s\"\nunsettled = \"8s\"\nrun_every = \"100ms\"".into();
    let clock = ManualClock::at(1_800_000_000_000);
    let gw = Gateway::start_in_process(&spec, Arc::new(clock.clone())).await;

    let a = post(&gw, "orders", "a").await;
    let b = post(&gw, "orders", "b").await;
    let gap = post(&gw, "orders", "c").await;
    let p = post(&gw, "plain", "p").await;
    eventually(Duration::from_secs(10), "4 delivered", || async { (receiver.count() == 4).then_some(()) }).await;
    let (status, answer) = gw.post_receipt(&key.sign(&Receipt::applied(&a), clock.now_ms() / 1000)).await;
    assert_eq!(status, 200, "{answer}");
    resolve(&gw, &b).await;
    resolve(&gw, &p).await;

    // t = 3 s: every settled payload is due; the archive cannot be written.
    clock.advance(3_000);
    eventually(Duration::from_secs(10), "the plain source's payload purged", || async {
        gw.event(&p).await.filter(|e| e["payload"] == "purged")
    })
    .await;
    eventually(Duration::from_secs(10), "archive runs failing", || async {
        let failed = crate::support::metric(&gw, "hookwarden_retention_runs_total{result=\"failed\"}").await;
        (failed >= 3.0).then_some(())
    })
    .await;
    for id in [&a, &b] {
        assert_eq!(gw.event(id).await.unwrap()["payload"], "kept", "purged without its archive");
    }

    std::fs::remove_file(&dir).unwrap();
    eventually(Duration::from_secs(10), "a's and b's payloads purged", || async {
        let purged = |e: Option<serde_json::Value>| e.is_some_and(|e| e["payload"] == "purged");
        (purged(gw.event(&a).await) && purged(gw.event(&b).await)).then_some(())
    })
    .await;
    let files = archive_files(&dir);
    let lines: Vec<&ArchivedEvent> = files.values().flatten().collect();
    assert_eq!(lines.iter().map(|e| e.event.id.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from([&*a, &*b]));
    let day = dir.join("orders").join("2027-01-15");
    assert!(files.keys().all(|f| f.parent() == Some(&*day)), "per source and day: {:?}", files.keys());
    let archived_a = lines.iter().find(|e| e.event.id == a).unwrap();
    let body = archived_a.body_base64.as_deref().expect("the body, archived before its purge");
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD.decode(body).unwrap(),
        json!({ "n": "a" }).to_string().as_bytes()
    );
    assert!(archived_a.headers.as_ref().unwrap().get().contains("x-id"), "{:?}", archived_a.headers);
    assert_eq!(archived_a.event.outcome, "confirmed");
    assert_eq!((archived_a.attempts.len(), archived_a.receipts.len()), (1, 1));
    assert_eq!(archived_a.receipts[0].status, "applied");
    assert!(archived_a.event.archived_at.is_some());

    // t = 9 s: a and b go whole (archived already: not again), the gap is archived and goes.
    clock.advance(6_000);
    eventually(Duration::from_secs(10), "a, b and the gap purged whole", || async {
        (gw.event(&a).await.is_none() && gw.event(&b).await.is_none() && gw.event(&gap).await.is_none()).then_some(())
    })
    .await;
    assert_eq!(archived_ids(&dir), BTreeSet::from([a.clone(), b.clone(), gap.clone()]));
    let files = archive_files(&dir);
    let archived_gap = files.values().flatten().find(|e| e.event.id == gap).unwrap();
    assert_eq!((archived_gap.event.outcome.as_str(), archived_gap.body_base64.is_some()), ("unknown", true));
    // (In-process gateways share the test process's metrics: at least this one's three.)
    let metric = crate::support::metric(&gw, "hookwarden_archived_events_total").await;
    assert!(metric >= 3.0, "{metric}");
    drop(gw);

    // A restore drill: the files back into a fresh store, shown by a gateway on it.
    let fresh = TestDb::new(kind).await;
    let mut restored = Gateway::start(&GatewaySpec::new(&fresh.url, vec![orders])).await;
    restored.kill9();
    let paths: Vec<PathBuf> = files.keys().cloned().collect();
    let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let config = restored.config_path().to_path_buf();
    let out = hookwarden(&["import", "--config", config.to_str().unwrap()], &paths).await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).starts_with("imported 3 events (3 attempts, 1 receipts)"), "{out:?}");
    restored.restart().await;
    let shown = restored.event(&gap).await.expect("the gap, restored");
    assert_eq!((shown["outcome"].as_str(), shown["body"].as_str()), (Some("unknown"), Some("{\"n\":\"c\"}")));
    // Archived before its payload went, a comes back with it.
    let shown = restored.event(&a).await.expect("a, restored");
    assert_eq!(
        (shown["outcome"].as_str(), shown["body"].as_str()),
        (Some("confirmed"), Some("{\"n\":\"a\"}")),
        "{shown}"
    );
    assert_eq!(shown["receipts"].as_array().map(Vec::len), Some(1), "{shown}");
}

/// A gateway killed with SIGKILL at moments inside its archive and purge of 8,000 old
/// settled events, again and again: whenever it stopped, every settled event not in a
/// complete archive file still has its row and payload, no event is in two files, no gap
/// went; the next start finishes, and then each is in exactly one file.
async fn a_kill_during_archive_and_purge_loses_no_event_and_writes_none_twice(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("archive");
    let orders = source("orders", &receiver.url("/orders"))
        .with(&format!("retention = {{ archive_dir = \"{}\" }}", dir.display()));
    let mut spec = GatewaySpec::new(&db.url, vec![orders]);
    spec.retention = "payloads = \"1s\"\nevents = \"30m\"\nunsettled = \"1d\"\nrun_every = \"100ms\"".into();
    let mut gw = Gateway::start(&spec).await;
    gw.kill9();
    let (settled, gaps) = (8_000usize, 300usize);
    seed_old_events(&db, kind, settled, gaps).await;

    let check = |ids: &BTreeSet<String>| {
        let list = if ids.is_empty() {
            "''".to_string()
        } else {
            ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(", ")
        };
        format!(
            "SELECT COUNT(*) FROM events e JOIN event_payloads p ON p.event_id = e.id \
             WHERE e.outcome = 'confirmed' AND e.id NOT IN ({list})"
        )
    };
    let mut kills = 0;
    for delay_ms in [5u64, 40, 90, 150, 250, 400] {
        gw.restart().await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        gw.kill9();
        let ids = archived_ids(&dir);
        if ids.len() < settled {
            kills += 1;
        }
        let kept_whole = db.scalar(&check(&ids)).await as usize;
        assert_eq!(kept_whole, settled - ids.len(), "a settled event neither in a file nor kept whole");
        check_nothing_half_purged(&db, gaps as i64).await;
    }
    assert!(kills > 0, "no kill landed before the archive was done: nothing was tested");
    gw.restart().await;
    eventually(Duration::from_secs(60), "every settled event purged", || async {
        (db.scalar("SELECT COUNT(*) FROM events WHERE outcome = 'confirmed'").await == 0).then_some(())
    })
    .await;
    assert_eq!(archived_ids(&dir).len(), settled, "each settled event in exactly one file");
    check_nothing_half_purged(&db, gaps as i64).await;
    assert_eq!(db.scalar("SELECT COUNT(*) FROM events WHERE archived_at IS NOT NULL").await, 0, "gaps not archived");
}

/// One archive pass as the purger runs it (without its pauses): the files a run left
/// unfinished, then batches of what is due.
async fn archive_all(
    store: &hookwarden::store::Store,
    plan: &hookwarden::store::PurgePlan,
    dirs: &BTreeMap<String, std::path::PathBuf>,
    now: i64,
) -> hookwarden::archive::Archived {
    let mut done = hookwarden::archive::finish_unfinished(store, now).await.unwrap();
    let mut cursor = None;
    loop {
        let (batch, next) = hookwarden::archive::archive_batch(store, plan, dirs, now, &cursor, 4).await.unwrap();
        done.events += batch.archived.events;
        done.files += batch.archived.files;
        if batch.picked < 4 {
            return done;
        }
        cursor = next;
    }
}

/// The archive's protocol, step by step: a run that died after its file was renamed into
/// place (claimed, not marked) is only marked, its file left as it is; one that died while
/// writing (a `.tmp` half written) is written again from its claimed rows; the events no
/// file claimed go to a new file. Each event ends in exactly one file, marked.
async fn a_run_that_died_between_claim_and_mark_is_finished_once(kind: Db) {
    use hookwarden::store::{Cutoffs, PurgePlan, Store};
    let db = TestDb::new(kind).await;
    let store = Store::connect(&db.url).await.unwrap();
    seed_old_events(&db, kind, 10, 0).await;
    let ids: Vec<String> = {
        let page = store.export_page("orders", 0, i64::MAX, &None, 100).await.unwrap();
        page.into_iter().map(|e| e.event.id).collect()
    };
    assert_eq!(ids.len(), 10);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("archive");
    let now = sign::now_ms();
    let file = |n: &str| dir.join("orders").join("died").join(format!("{n}.jsonl.gz")).to_string_lossy().into_owned();
    let (renamed, half) = (file("renamed"), file("half"));
    assert_eq!(store.claim_for_archive(&renamed, &ids[..3]).await.unwrap(), 3);
    let events = store.archived_events_of(&renamed, now - 1_000).await.unwrap();
    hookwarden::archive::write_atomically(Path::new(&renamed), &events).unwrap();
    let renamed_bytes = std::fs::read(&renamed).unwrap();
    assert_eq!(store.claim_for_archive(&half, &ids[3..6]).await.unwrap(), 3);
    std::fs::write(format!("{half}.tmp"), b"\x1f\x8b half a gzip").unwrap();
    assert_eq!(store.claim_for_archive(&file("other"), &ids[..4]).await.unwrap(), 0, "claimed twice");

    let cutoffs = Cutoffs { payloads: now, events: now, unsettled: now, body_hashes: i64::MIN };
    let nothing = Cutoffs { payloads: i64::MIN, events: i64::MIN, unsettled: i64::MIN, body_hashes: i64::MIN };
    let plan =
        PurgePlan { sources: vec![("orders".into(), cutoffs)], others: nothing, now, archiving: vec!["orders".into()] };
    let dirs = BTreeMap::from([("orders".to_string(), dir.clone())]);
    let done = archive_all(&store, &plan, &dirs, now).await;
    assert_eq!((done.events, done.files), (10, 3));
    assert_eq!(std::fs::read(&renamed).unwrap(), renamed_bytes, "a file in place is whole: left as it is");
    let files = archive_files(&dir);
    assert_eq!(files[Path::new(&half)].len(), 3, "the half-written file, written again whole");
    assert_eq!(archived_ids(&dir), ids.iter().cloned().collect::<BTreeSet<_>>());
    assert!(!Path::new(&format!("{half}.tmp")).exists());
    assert_eq!(db.scalar("SELECT COUNT(*) FROM events WHERE archived_at IS NULL").await, 0);
    let again = archive_all(&store, &plan, &dirs, now).await;
    assert_eq!((again.events, again.files), (0, 0), "nothing is archived twice");
    store.close().await;
}

/// `hookwarden export` from a SQLite gateway's store and `hookwarden import` into a
/// PostgreSQL one: every event, attempt and receipt equal as the API shows them; importing
/// twice adds nothing; a damaged file (a bad line, a cut gzip) is refused naming the line,
/// and nothing of it is written.
#[tokio::test]
async fn export_from_sqlite_imports_into_postgres_equal_and_once() {
    let lite = TestDb::new(Db::Sqlite).await;
    let pg = TestDb::new(Db::Postgres).await;
    let receiver = Receiver::start().await;
    let key = sign::receipt_key("orders-1", 1);
    let orders = source("orders", &receiver.url("/orders")).with(&sign::receipt_keys_line(&[(&key, false)]));
    let gw = Gateway::start(&GatewaySpec::new(&lite.url, vec![orders.clone()])).await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(post(&gw, "orders", &format!("o-{i}")).await);
    }
    eventually(Duration::from_secs(10), "30 delivered", || async { (receiver.count() == 30).then_some(()) }).await;
    for (i, id) in ids.iter().enumerate().take(12) {
        let receipt =
            if i == 11 { Receipt::failed(id, "E_STOCK", Some("out of stock".into())) } else { Receipt::applied(id) };
        let (status, answer) = gw.post_receipt(&key.sign(&receipt, sign::now_secs())).await;
        assert_eq!(status, 200, "{answer}");
    }
    resolve(&gw, &ids[20]).await;

    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("orders.jsonl.gz");
    let config = gw.config_path().to_path_buf();
    let args = ["export", "--config", config.to_str().unwrap(), "--source", "orders", "--since", "1h", "--output"];
    let out = hookwarden(&args, &[&file]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains("exported 30 events of orders"), "{out:?}");

    let target = Gateway::start(&GatewaySpec::new(&pg.url, vec![orders])).await;
    let target_config = target.config_path().to_path_buf();
    let import = async || hookwarden(&["import", "--config", target_config.to_str().unwrap()], &[&file]).await;
    let out = import().await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).starts_with("imported 30 events (30 attempts, 12 receipts)"), "{out:?}");
    for id in &ids {
        assert_eq!(target.event(id).await, gw.event(id).await, "{id} differs after the move");
    }
    let counts = || async {
        let mut counts = Vec::new();
        for table in ["events", "event_payloads", "attempts", "receipts"] {
            counts.push(pg.scalar(&format!("SELECT COUNT(*) FROM {table}")).await);
        }
        counts
    };
    assert_eq!(counts().await, [30, 30, 30, 12]);
    let out = import().await;
    assert!(out.status.success(), "{out:?}");
    assert!(text(&out.stdout).contains("imported 0 events (0 attempts, 0 receipts)"), "{out:?}");
    assert!(text(&out.stdout).contains("30 were in the store already"), "{out:?}");
    assert_eq!(counts().await, [30, 30, 30, 12], "a second import added something");

    // The export of the copy is the export of the original, line for line.
    let out = hookwarden(
        &["export", "--config", target_config.to_str().unwrap(), "--source", "orders", "--since", "1h"],
        &[],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let copy = out_dir.path().join("copy.jsonl.gz");
    std::fs::write(&copy, &out.stdout).unwrap();
    let lines = |path: &Path| {
        hookwarden::archive::read_file(path)
            .unwrap()
            .map(|e| serde_json::to_value(e.unwrap()).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(lines(&copy), lines(&file));

    // Damaged files: a good line, then a bad one; a gzip cut short. Nothing of either is written.
    let mut fresh = lines(&file)[0].clone();
    fresh["event"]["id"] = json!(format!("evt_{}", ulid::Ulid::new()));
    fresh["event"]["dedup_key"] = json!("fresh-key");
    let bad = out_dir.path().join("bad.jsonl");
    std::fs::write(&bad, format!("{fresh}\n{{\"event\": {{\"id\": \"evt_1\"\n")).unwrap();
    let out = hookwarden(&["import", "--config", target_config.to_str().unwrap()], &[&bad]).await;
    assert!(!out.status.success(), "{out:?}");
    let said = text(&out.stderr);
    assert!(said.contains(&format!("{}:2: ", bad.display())) && said.contains("nothing was imported"), "{said}");
    let gz = std::fs::read(&file).unwrap();
    let cut = out_dir.path().join("cut.jsonl.gz");
    std::fs::write(&cut, &gz[..gz.len() / 2]).unwrap();
    let out = hookwarden(&["import", "--config", target_config.to_str().unwrap()], &[&cut]).await;
    assert!(!out.status.success(), "{out:?}");
    assert!(text(&out.stderr).contains(&format!("{}:", cut.display())), "{out:?}");
    assert_eq!(counts().await, [30, 30, 30, 12], "a damaged file wrote something");
}
