//! The database failing under a running gateway: PostgreSQL restarted under ingest load, its
//! sessions cut mid-transaction, SQLite's disk filling up. Nothing answered 200 is lost,
//! nothing is answered 200 without a commit, and the gateway recovers by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::pg_cluster::PgCluster;
use crate::support::{Gateway, GatewaySpec, Receiver, SourceSpec, eventually};

/// One ingest as a provider saw it.
#[derive(Debug, Clone)]
struct Answer {
    provider_id: String,
    sent: Instant,
    answered: Instant,
    status: u16,
    body: Value,
}

/// Providers posting without pause from `workers` tasks until `stop` is set.
struct Load {
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gw: &Gateway, prefix: &str, workers: usize, body_bytes: usize) -> Self {
        let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
        let stop: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let url = gw.url("/ingest/orders");
        let padding = "x".repeat(body_bytes);
        let tasks = (0..workers)
            .map(|w| {
                let (answers, stop, url, padding) = (answers.clone(), stop.clone(), url.clone(), padding.clone());
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
                    for n in 0.. {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            return;
                        }
                        let provider_id = format!("{prefix}-w{w}-{n}");
                        let body = json!({ "id": provider_id, "type": "load", "padding": padding }).to_string();
                        let sent = Instant::now();
                        let response = client.post(&url).body(body).send().await;
                        let (status, body) = match response {
                            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
                            // The gateway never drops a provider's connection: 0 marks it.
                            Err(_) => (0, Value::Null),
                        };
                        let answer = Answer { provider_id, sent, answered: Instant::now(), status, body };
                        let failed = answer.status != 200;
                        answers.lock().unwrap().push(answer);
                        if failed {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Self { answers, stop, tasks }
    }

    async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in self.tasks {
            task.await.expect("load task");
        }
        self.answers.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.answers.lock().unwrap().len()
    }
}

/// Every answer is a 200 (stored) or a 503 `store_unavailable` (retry later): never a dropped
/// connection, a 500 or another error. The answered events, by provider id.
fn check_answers(answers: &[Answer]) -> HashMap<String, String> {
    let mut acked = HashMap::new();
    for a in answers {
        match a.status {
            200 => {
                acked.insert(a.provider_id.clone(), a.body["event_id"].as_str().expect("an event id").to_string());
            }
            503 => assert_eq!(a.body["error"]["code"], "store_unavailable", "{a:?}"),
            _ => panic!("a provider got neither 200 nor 503: {a:?}"),
        }
    }
    acked
}

/// Every event answered 200 is stored, under its provider's id, and reaches the handler.
async fn every_acked_event_is_there(gw: &Gateway, receiver: &Receiver, acked: &HashMap<String, String>) {
    let stored: HashMap<String, String> = gw
        .all_events()
        .await
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap().to_string(), e["provider_event_id"].as_str().unwrap().to_string()))
        .collect();
    for (provider_id, event_id) in acked {
        assert_eq!(
            stored.get(event_id),
            Some(provider_id),
            "{event_id} ({provider_id}) was answered 200 and is not stored"
        );
    }
    eventually(Duration::from_secs(60), "every answered event delivered", || async {
        let counts = receiver.counts_by_event();
        acked.values().all(|id| counts.contains_key(id)).then_some(())
    })
    .await;
}

fn spec(url: &str, receiver: &Receiver) -> GatewaySpec {
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .ladder(&["200ms"], 20);
    GatewaySpec::new(url, vec![source])
}

/// PostgreSQL stops for a few seconds (`pg_ctl stop -m fast`, then start) under ingest load
/// and with a replay running. Providers get 503 while it is down and 200 again once it is
/// back, without the gateway being restarted; the replay finishes (not failed) and sends no
/// item twice; every event answered 200 is stored and delivered.
#[tokio::test]
async fn postgres_restarted_under_ingest_load_loses_nothing_acknowledged() {
    let cluster = PgCluster::start().await;
    let url = cluster.create_database("hookwarden").await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&url, &receiver)).await;

    // Events for a replay that is running when the database goes away.
    let mut replay_events = Vec::new();
    for i in 0..150 {
        let (status, answer) =
            gw.ingest("orders", &[], json!({ "id": format!("before-{i}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        replay_events.push(answer["event_id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(20), "the first deliveries", || async {
        let counts = receiver.counts_by_event();
        replay_events.iter().all(|id| counts.contains_key(id)).then_some(())
    })
    .await;
    let (status, job) = gw
        .admin_post(
            "/v1/replays",
            &json!({ "source": "orders", "since": "2000-01-01T00:00:00Z", "limit": 1000, "rate": 10,
                     "dry_run": false, "reason": "the restart test" }),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let replay_id = job["id"].as_str().unwrap().to_string();

    let load = Load::start(&gw, "restart", 8, 200);
    eventually(Duration::from_secs(20), "load before the restart", || async { (load.count() >= 200).then_some(()) })
        .await;
    let (_, running) = gw.admin_get(&format!("/v1/replays/{replay_id}")).await;
    assert_eq!(running["state"], "running", "the replay ended before the restart: {running}");
    cluster.stop_server();
    let stopped_at = Instant::now();
    // While it is down: /readyz says so, and why.
    let (ready_status, ready) = eventually(Duration::from_secs(20), "/readyz reports the outage", || async {
        let response = crate::support::client().get(gw.url("/readyz")).send().await.ok()?;
        let status = response.status().as_u16();
        (status == 503).then_some((status, response.json::<Value>().await.unwrap_or(Value::Null)))
    })
    .await;
    assert_eq!(ready_status, 503);
    assert!(ready["reason"].as_str().is_some_and(|r| !r.is_empty()), "{ready}");
    let down_for = Duration::from_secs(8);
    tokio::time::sleep(down_for.saturating_sub(stopped_at.elapsed())).await;
    cluster.start_server();
    let restarted_at = Instant::now();
    let first_ok = eventually(Duration::from_secs(60), "an ingest answered 200 after the restart", || async {
        let answers = load.answers.lock().unwrap().clone();
        answers.iter().filter(|a| a.sent >= restarted_at && a.status == 200).map(|a| a.answered).min()
    })
    .await;
    let recovered_in = first_ok - restarted_at;
    eprintln!("postgres restart: first ingest 200 after {recovered_in:?} from the server accepting connections");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answers = load.finish().await;

    let during: Vec<&Answer> = answers.iter().filter(|a| a.sent > stopped_at && a.answered < restarted_at).collect();
    assert!(
        during.iter().any(|a| a.status == 503),
        "no provider was told 503 while the database was down ({} requests)",
        during.len()
    );
    assert!(during.iter().all(|a| a.status != 200), "a 200 while the database was down");
    let slowest_503 = during.iter().filter(|a| a.status == 503).map(|a| a.answered - a.sent).max().unwrap_or_default();
    eprintln!("postgres restart: {} ingests answered while down, the slowest 503 took {slowest_503:?}", during.len());
    let acked = check_answers(&answers);
    assert!(acked.len() >= 300, "too little load to mean anything: {}", acked.len());
    assert!(recovered_in < Duration::from_secs(15), "the gateway took {recovered_in:?} to ingest again");
    let (ready_status, ready) = gw.admin_get("/readyz").await;
    assert_eq!(ready_status, 200, "{ready}");
    every_acked_event_is_there(&gw, &receiver, &acked).await;

    let job = eventually(Duration::from_secs(60), "the replay finished", || async {
        let (_, job) = gw.admin_get(&format!("/v1/replays/{replay_id}")).await;
        (job["state"] != "running").then_some(job)
    })
    .await;
    assert_eq!(job["state"], "completed", "{job}");
    let counts = &job["counts"];
    let eligible = counts["eligible"].as_i64().unwrap();
    assert_eq!(eligible, 150, "{job}");
    let accounted: i64 =
        ["succeeded", "failed", "skipped_receipt", "skipped_other"].iter().map(|k| counts[*k].as_i64().unwrap()).sum();
    assert_eq!(accounted, eligible, "{job}");
    let mut sent_by_replay: HashMap<String, usize> = HashMap::new();
    for r in receiver.received().iter().filter(|r| r.replay_id() == Some(replay_id.as_str())) {
        *sent_by_replay.entry(r.event_id().to_string()).or_default() += 1;
    }
    assert!(sent_by_replay.values().all(|n| *n == 1), "a replay item was sent twice: {sent_by_replay:?}");
    assert!(sent_by_replay.len() as i64 >= counts["succeeded"].as_i64().unwrap(), "{job}");
}

/// The gateway's sessions are ended under it (`pg_terminate_backend`, as a network cut or a
/// failover does) again and again under ingest load: transactions cut half-way commit
/// nothing and answer 503, the gateway reconnects by itself, nothing answered 200 is lost.
#[tokio::test]
async fn postgres_sessions_cut_mid_transaction_lose_nothing_acknowledged() {
    let cluster = PgCluster::start().await;
    let url = cluster.create_database("hookwarden").await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&url, &receiver)).await;
    let load = Load::start(&gw, "cut", 8, 200);
    let mut ended = 0;
    for _ in 0..6 {
        eventually(Duration::from_secs(20), "load between cuts", || async { (load.count() > 0).then_some(()) }).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        ended += cluster.terminate_sessions("hookwarden").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut_done = Instant::now();
    eventually(Duration::from_secs(20), "ingest answers 200 after the cuts", || async {
        let answers = load.answers.lock().unwrap().clone();
        answers.iter().any(|a| a.sent >= cut_done && a.status == 200).then_some(())
    })
    .await;
    let answers = load.finish().await;
    assert!(ended >= 6, "the cuts ended only {ended} sessions");
    let acked = check_answers(&answers);
    assert!(acked.len() >= 200, "too little load to mean anything: {}", acked.len());
    every_acked_event_is_there(&gw, &receiver, &acked).await;
    let (status, ready) = gw.admin_get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
}

/// A small tmpfs of the test's own, unmounted when dropped. Mounting needs root (CI runs the
/// tests as root); without it the test fails and says so.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "hookwarden-test"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            mounted.status.success(),
            "this test fills a disk of its own and mounts a tmpfs for it, which needs root: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Fills what is left of the disk with a file; its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("ballast");
        let mut file = std::fs::File::create(&path).expect("ballast file");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).and_then(|_| file.flush()).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// SQLite's disk fills up under ingest. Providers get 503 and nothing half-written stays
/// behind (an event answered 503 and posted again once there is room is new, not a
/// duplicate); `/readyz` says why it is not ready; once space returns the gateway takes
/// events again by itself, and everything answered 200 is there and delivered.
#[tokio::test]
async fn sqlite_on_a_full_disk_answers_503_and_recovers_when_space_returns() {
    let disk = SmallDisk::mount("24m");
    let url = format!("sqlite://{}", disk.path().join("hookwarden.db").display());
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&url, &receiver)).await;
    let body = |id: &str| json!({ "id": id, "padding": "p".repeat(16 * 1024) }).to_string();
    let mut acked = HashMap::new();
    for i in 0..20 {
        let id = format!("roomy-{i}");
        let (status, answer) = gw.ingest("orders", &[], body(&id).as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        acked.insert(id, answer["event_id"].as_str().unwrap().to_string());
    }
    let ballast = disk.fill();
    let mut refused = Vec::new();
    for i in 0..3000 {
        let id = format!("full-{i}");
        let (status, answer) = gw.ingest("orders", &[], body(&id).as_bytes()).await;
        match status {
            200 => {
                acked.insert(id, answer["event_id"].as_str().unwrap().to_string());
            }
            503 => {
                assert_eq!(answer["error"]["code"], "store_unavailable", "{answer}");
                refused.push(id);
                if refused.len() >= 5 {
                    break;
                }
            }
            other => panic!("a full disk answered {other}: {answer}"),
        }
    }
    assert!(refused.len() >= 5, "the disk never filled up: {} events stored", acked.len());
    let (status, ready) = gw.admin_get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["code"], "disk_full", "{ready}");
    assert!(ready["reason"].as_str().unwrap_or_default().contains("full"), "{ready}");

    std::fs::remove_file(&ballast).expect("remove the ballast");
    eventually(Duration::from_secs(20), "/readyz ready again", || async {
        let (status, _) = gw.admin_get("/readyz").await;
        (status == 200).then_some(())
    })
    .await;
    // The provider retries what was refused: each is new, so nothing of it was written.
    for id in &refused {
        let (status, answer) = gw.ingest("orders", &[], body(id).as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["duplicate"], false, "{id} was answered 503 but had been stored: {answer}");
        acked.insert(id.clone(), answer["event_id"].as_str().unwrap().to_string());
    }
    every_acked_event_is_there(&gw, &receiver, &acked).await;
    for event_id in acked.values().take(5) {
        let event = gw.event(event_id).await.expect("stored");
        assert_eq!(event["body"].as_str().unwrap(), body(event["provider_event_id"].as_str().unwrap()), "{event_id}");
    }
}
