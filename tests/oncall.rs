//! The on-call path (issue 15), walked as a tired person walks it: the real `hookwarden`
//! binary against a real gateway, on SQLite and PostgreSQL where the store is involved.
//! Exit codes and last lines that tell the truth, `--limit` that says what it leaves out and
//! how to go on, resolutions counted as `resolved`, the replay list and pause/resume.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{hookwarden, stdout};
use crate::replay::{outage, spec};
use crate::support::receiver::Behaviour;
use crate::support::{
    ADMIN_TOKEN, Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, on_both_backends,
};

const SINCE: &str = "2000-01-01T00:00:00Z";

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A job's counts as the last line of a run says them.
fn counts_said(c: &Value) -> String {
    format!(
        "sent {}, succeeded {}, failed {}, skipped (receipt arrived) {}, skipped (the handler had it) {}, \
         skipped (other) {}, skipped (payload purged) {}",
        c["sent"],
        c["succeeded"],
        c["failed"],
        c["skipped_receipt"],
        c["skipped_probe"],
        c["skipped_other"],
        c["skipped_purged"]
    )
}

async fn job(gw: &Gateway, id: &str) -> Value {
    let (status, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
    assert_eq!(status, 200, "{job}");
    job
}

/// A live run in which every send failed (the handler is still down) is not a success: exit
/// 3, and the last line says how many failed and why.
#[tokio::test]
async fn a_live_run_whose_sends_all_failed_exits_3_and_names_the_cause() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "down", 3).await;
    receiver.set(Behaviour { status: 500, ..Behaviour::default() });

    let live =
        hookwarden(&gw, &["replay", "orders", "--since", "1h", "--rate", "50", "--no-dry-run", "--reason", "INC-1"])
            .await;
    let out = stdout(&live);
    assert_eq!(live.status.code(), Some(3), "{live:?}");
    let last = out.lines().last().unwrap();
    assert!(last.contains("completed, 3 FAILED: sent 3, succeeded 0, failed 3"), "{out}");
    assert!(last.ends_with("most failed with HTTP 500 (3 of 3)"), "{out}");

    // JSON says the same, and the exit code is the same.
    receiver.set(Behaviour::default());
    let ok = hookwarden(
        &gw,
        &["replay", "orders", "--since", "1h", "--rate", "50", "--no-dry-run", "--reason", "INC-1", "--json"],
    )
    .await;
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let job: Value = serde_json::from_slice(&ok.stdout).expect("JSON only on stdout");
    assert_eq!((job["state"].as_str(), job["counts"]["succeeded"].as_i64()), (Some("completed"), Some(3)), "{job}");
}

/// `--limit` never leaves events behind without a word: the dry run says how many it leaves
/// out and prints the command that covers them; the live run says so and prints the command
/// that continues exactly where it stopped, in the order replays send (`seq`), so nothing the
/// first run sent goes out twice.
async fn the_limit_says_what_it_leaves_out_and_how_to_continue(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "limit", 5).await;

    let dry = hookwarden(&gw, &["replay", "orders", "--since", "1h", "--limit", "2", "--rate", "50"]).await;
    assert!(dry.status.success(), "{dry:?}");
    let report = stdout(&dry);
    assert!(report.contains("Would send    2 of 5 eligible (limit 2)"), "{report}");
    assert!(report.contains("Left out      3 eligible events by the limit"), "{report}");
    assert!(report.contains("To run it live (the first 2 only):"), "{report}");
    let all = report.lines().skip_while(|l| !l.starts_with("To send all 5 eligible events:")).nth(1).unwrap();
    assert!(all.contains("--limit 5") && all.contains("--until "), "{report}");

    let live = hookwarden(
        &gw,
        &["replay", "orders", "--since", "1h", "--limit", "2", "--rate", "50", "--no-dry-run", "--reason", "INC-2"],
    )
    .await;
    assert!(live.status.success(), "{live:?}");
    let out = stdout(&live);
    assert!(out.contains("3 more eligible events in the scope were left out by --limit"), "{out}");
    let command = out.lines().skip_while(|l| !l.starts_with("To continue where it stopped")).nth(1).unwrap().trim();
    assert!(command.contains(&format!("--after {}", ids[1])) && command.contains("--limit 3"), "{out}");
    // The first two went out once more; no receipt came, so they are still `unknown`.
    let replayed = |id: &str| receiver.for_event(id).iter().filter(|r| r.replay_id().is_some()).count();
    assert_eq!(ids.iter().map(|id| replayed(id)).collect::<Vec<_>>(), [1, 1, 0, 0, 0]);

    // The printed command, run as printed, sends the other three and nothing twice.
    let continued = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command.replacen("hookwarden", env!("CARGO_BIN_EXE_hookwarden"), 1))
        .env("HOOKWARDEN_URL", gw.url(""))
        .env("HOOKWARDEN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(continued.status.success(), "{continued:?}");
    assert!(!stdout(&continued).contains("left out"), "{continued:?}");
    assert_eq!(ids.iter().map(|id| replayed(id)).collect::<Vec<_>>(), [1, 1, 1, 1, 1]);
    // In the order received.
    let order: Vec<String> =
        receiver.received().iter().filter(|r| r.replay_id().is_some()).map(|r| r.event_id().to_string()).collect();
    assert_eq!(order, ids);
}

/// An operator's resolution settles an event without claiming it was applied: the gap view
/// counts it `resolved` (in total and in its bucket), never `confirmed`; a replay skips it
/// unless it is named by id; a resolution made after a run was planned drops its item, also
/// one named by id (the check before the send sees it).
async fn resolutions_are_counted_as_resolved_and_not_replayed_unless_named(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "resolve", 4).await;
    let (status, answer) =
        gw.admin_post(&format!("/v1/events/{}/resolve", ids[0]), &json!({ "note": "applied by hand, OPS-7" })).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("resolved")), "{answer}");
    let (status, again) = gw.admin_post(&format!("/v1/events/{}/resolve", ids[0]), &json!({ "note": "twice" })).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("event_settled")), "{again}");

    let (_, summary) = gw.admin_get("/v1/summary?bucket=24h&source=orders").await;
    let totals = &summary["totals"];
    assert_eq!((totals["resolved"].as_i64(), totals["confirmed"].as_i64()), (Some(1), Some(0)), "{summary}");
    assert_eq!(totals["unknown"], 3, "{summary}");
    let bucket = summary["buckets"].as_array().unwrap().iter().find(|b| b["total"] == 4).expect("the events' bucket");
    assert_eq!((bucket["resolved"].as_i64(), bucket["confirmed"].as_i64()), (Some(1), Some(0)), "{summary}");
    assert_eq!(gw.event(&ids[0]).await.unwrap()["attempt_log"].as_array().unwrap().len(), 1, "history kept");
    // The gap to the event, not only its bucket: from the first unsettled event to the last.
    let (first, last) = (gw.event(&ids[1]).await.unwrap(), gw.event(&ids[3]).await.unwrap());
    let gap = json!({ "first_received_at": first["received_at"], "last_received_at": last["received_at"] });
    assert_eq!(summary["gap"], gap, "{summary}");
    let table = stdout(&hookwarden(&gw, &["summary", "--source", "orders", "--bucket", "24h"]).await);
    assert!(table.contains("failed 0, resolved 1"), "{table}");
    assert!(
        table.contains(&format!(
            "gap: unsettled events received from {} to {}",
            first["received_at"].as_str().unwrap(),
            last["received_at"].as_str().unwrap()
        )),
        "{table}"
    );
    let header = table.lines().find(|l| l.starts_with("BUCKET")).unwrap_or_else(|| panic!("{table}"));
    assert!(header.trim_end().ends_with("FAILED  RESOLVED"), "{table}");
    let row = table.lines().find(|l| l.ends_with("<- gap")).unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[1..],
        ["0", "3", "0", "0", "1", "<-", "gap"],
        "confirmed unknown overdue failed resolved: {table}"
    );

    // Not eligible in a window; eligible when named by id.
    let dry = hookwarden(&gw, &["replay", "orders", "--since", "1h"]).await;
    let report = stdout(&dry);
    assert!(report.contains("resolved         1   excluded: an operator resolved them"), "{report}");
    assert!(report.contains("Would send    3 of 3 eligible"), "{report}");
    let (_, named) = gw.admin_post("/v1/replays", &json!({ "event_ids": [ids[0]] })).await;
    assert_eq!(named["eligible"], 1, "{named}");

    // Resolved after the run was planned: dropped, whether named by id or in the window.
    // The handler holds each send 600 ms, one at a time, so the last items wait their turn.
    receiver.set(Behaviour { delay: Duration::from_millis(600), ..Behaviour::default() });
    let body = json!({ "event_ids": [ids[0], ids[1], ids[2], ids[3]], "dry_run": false, "reason": "INC-3", "rate": 1 });
    let (status, started) = gw.admin_post("/v1/replays", &body).await;
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap();
    let (status, _) = gw.admin_post(&format!("/v1/events/{}/resolve", ids[3]), &json!({ "note": "by hand" })).await;
    assert_eq!(status, 200);
    let done = eventually(Duration::from_secs(30), "the run to end", || async {
        let job = job(&gw, id).await;
        (job["state"] == "completed" && job["settled"] == true).then_some(job)
    })
    .await;
    assert_eq!((done["counts"]["succeeded"].as_i64(), done["counts"]["skipped_other"].as_i64()), (Some(3), Some(1)));
    let replayed = |id: &str| receiver.for_event(id).iter().filter(|r| r.replay_id().is_some()).count();
    assert_eq!((replayed(&ids[0]), replayed(&ids[3])), (1, 0), "resolved before: sent; resolved after: not");
}

/// The replays list (newest first, keyset paging, a scoped token sees its sources' jobs
/// only) and pause/resume: audited with the change in one transaction, a paused job sends
/// nothing, keeps its lease and its gateway, and goes on where it stopped once resumed.
async fn replays_are_listed_paused_and_resumed(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let mut spec: GatewaySpec = spec(&db, &receiver);
    spec.sources.push(SourceSpec::new("billing", "{ kind = \"none\" }", &receiver.url("/billing")));
    let gw = Gateway::start(&spec).await;
    let ids = outage(&gw, &receiver, "pause", 6).await;
    let (status, _) = gw.ingest("billing", &[], br#"{"id":"b-1"}"#).await;
    assert_eq!(status, 200);

    let start = |source: &str, rate: u32| json!({ "source": source, "since": SINCE, "dry_run": false, "reason": "INC-4", "rate": rate });
    let (_, billing) = gw.admin_post("/v1/replays", &start("billing", 50)).await;
    let billing = billing["id"].as_str().unwrap().to_string();
    let (_, first) = gw
        .admin_post(
            "/v1/replays",
            &json!({ "source": "orders", "event_ids": [ids[0]], "dry_run": false, "reason": "x" }),
        )
        .await;
    let first = first["id"].as_str().unwrap().to_string();
    let (status, slow) = gw.admin_post("/v1/replays", &start("orders", 1)).await;
    assert_eq!(status, 202, "{slow}");
    let slow = slow["id"].as_str().unwrap().to_string();

    let created = gw
        .admin_post("/v1/tokens", &json!({ "name": "orders-oncall", "role": "operator", "sources": ["orders"] }))
        .await
        .1;
    let token = created["token"].as_str().unwrap().to_string();
    let t = Some(token.as_str());

    // Newest first, one per page, for the admin; a scoped token sees orders' jobs only.
    let mut pages = Vec::new();
    let mut path = "/v1/replays?limit=1".to_string();
    loop {
        let (status, page) = gw.call("GET", &path, Some(ADMIN_TOKEN), None).await;
        assert_eq!(status, 200, "{page}");
        pages.extend(page["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/replays?limit=1&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, [slow.clone(), first.clone(), billing.clone()]);
    let (_, scoped) = gw.call("GET", "/v1/replays?limit=1", t, None).await;
    assert_eq!(scoped["data"][0]["id"].as_str(), Some(slow.as_str()), "{scoped}");
    let next = scoped["next_cursor"].as_str().unwrap();
    let (_, rest) = gw.call("GET", &format!("/v1/replays?limit=5&cursor={next}"), t, None).await;
    let rest: Vec<&str> = rest["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(rest, [first.as_str()], "billing's job is not there for an orders token");
    let (status, _) = gw.call("GET", "/v1/replays?source=billing", t, None).await;
    assert_eq!(status, 403);
    let (status, _) = gw.call("POST", &format!("/v1/replays/{billing}/pause"), t, None).await;
    assert_eq!(status, 404, "another source's job is not there to pause");

    // The pause and its audit entry commit together or not at all.
    db.refuse("INSERT", "audit_log").await;
    let (status, _) = gw.call("POST", &format!("/v1/replays/{slow}/pause"), t, None).await;
    assert_eq!(status, 503);
    assert_eq!(job(&gw, &slow).await["state"], "running");
    db.allow("INSERT", "audit_log").await;

    let (status, paused) = gw.call("POST", &format!("/v1/replays/{slow}/pause"), t, None).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")), "{paused}");
    assert_eq!(paused["paused"]["by"], "orders-oncall", "{paused}");
    let (status, twice) = gw.call("POST", &format!("/v1/replays/{slow}/pause"), t, None).await;
    assert_eq!((status, twice["error"]["code"].as_str()), (409, Some("replay_not_running")), "{twice}");
    // Nothing goes out while paused (the rate would allow a send a second), and past the
    // lease (6 s) the job is still held by its gateway, not taken for dead.
    let sent_at_pause = eventually(Duration::from_secs(5), "the send in flight to be counted", || async {
        let job = job(&gw, &slow).await;
        let c = &job["counts"];
        let (sent, skipped) = (c["sent"].as_i64().unwrap(), c["skipped_other"].as_i64().unwrap());
        (receiver.received().iter().filter(|r| r.replay_id() == Some(slow.as_str())).count() as i64 == sent)
            .then_some(sent + skipped)
    })
    .await;
    let owned = format!("SELECT COUNT(*) FROM replays WHERE id = '{slow}' AND lease_owner IS NOT NULL");
    tokio::time::sleep(Duration::from_secs(7)).await;
    let held = job(&gw, &slow).await;
    assert_eq!(held["state"], "paused", "{held}");
    let c = &held["counts"];
    assert_eq!(c["sent"].as_i64().unwrap() + c["skipped_other"].as_i64().unwrap(), sent_at_pause, "{held}");
    assert_eq!(db.scalar(&owned).await, 1, "the paused job keeps its lease");
    assert!(sent_at_pause < 6, "the run was over before the pause: {held}");

    let (status, resumed) = gw.call("POST", &format!("/v1/replays/{slow}/resume"), t, None).await;
    assert_eq!((status, resumed["state"].as_str()), (200, Some("running")), "{resumed}");
    let done = eventually(Duration::from_secs(30), "the resumed run to end", || async {
        let job = job(&gw, &slow).await;
        (job["state"] == "completed" && job["settled"] == true).then_some(job)
    })
    .await;
    assert_eq!(done["counts"]["failed"], 0, "{done}");
    // Every event of the window went out exactly once in this run (the first job's too).
    let posts: Vec<String> = receiver
        .received()
        .iter()
        .filter(|r| r.replay_id() == Some(slow.as_str()))
        .map(|r| r.event_id().to_string())
        .collect();
    assert_eq!(posts, ids, "in order, once each");
    let audit = gw.audit().await;
    let actions: Vec<&str> =
        audit.iter().filter(|e| e["subject"] == slow.as_str()).map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["replay.started", "replay.paused", "replay.resumed", "replay.finished"]);
    let paused_entry = audit.iter().find(|e| e["action"] == "replay.paused").unwrap();
    assert_eq!(paused_entry["actor"], "orders-oncall");
}

on_both_backends!(
    events_are_resolved_one_or_a_selection_at_a_time,
    the_limit_says_what_it_leaves_out_and_how_to_continue,
    resolutions_are_counted_as_resolved_and_not_replayed_unless_named,
    replays_are_listed_paused_and_resumed,
    the_dry_run_judges_the_handlers_pace,
);

/// The dry run judges the handler as it is now: still failing (most of its latest attempts
/// failed, with the cause), or answering, with a rate suggested from its pace that the
/// printed live command carries.
async fn the_dry_run_judges_the_handlers_pace(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "pace", 30).await;
    let dry = stdout(&hookwarden(&gw, &["replay", "orders", "--since", "1h"]).await);
    assert!(
        dry.contains("Handler       last 15 minutes: 30 attempts, 0% answered 2xx\n"),
        "no latency of 2xx there were none of: {dry}"
    );
    assert!(dry.contains("STILL FAILING: 20 of its last 20 attempts failed (most: HTTP 500)"), "{dry}");
    assert!(!dry.contains("Suggested"), "{dry}");

    // The handler is back: new events go through at once.
    for i in 0..25 {
        let (status, answer) =
            gw.ingest("orders", &[], json!({ "id": format!("back-{i}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
    }
    eventually(Duration::from_secs(20), "the new events delivered", || async {
        (receiver.count() >= 55).then_some(())
    })
    .await;
    let out = hookwarden(&gw, &["replay", "orders", "--since", "1h", "--json"]).await;
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pace = &plan["handler"];
    assert_eq!((pace["attempts"].as_i64(), pace["succeeded"].as_i64()), (Some(55), Some(25)), "{plan}");
    assert_eq!(pace["still_failing"], false, "{plan}");
    // A local handler answers in milliseconds: half of one request at a time at its median
    // latency (pace.rs's unit tests pin the arithmetic), capped at 50/s.
    let median = pace["median_latency_ms"].as_f64().unwrap().max(1.0);
    let expected = (500.0 / median).clamp(2.0, 50.0);
    let expected = if expected < 10.0 { expected.floor() } else { (expected / 5.0).floor() * 5.0 };
    assert_eq!(pace["suggested_rate"].as_f64(), Some(expected), "{plan}");
    let dry = stdout(&hookwarden(&gw, &["replay", "orders", "--since", "1h"]).await);
    assert!(dry.contains(&format!("Suggested     --rate {expected}: about ")), "{dry}");
    assert!(dry.contains("(estimated at current handler throughput"), "{dry}");
    assert!(dry.contains(&format!("--rate {expected} --no-dry-run")), "the live command carries the suggestion: {dry}");
    // The operator's own rate stands.
    let mine = stdout(&hookwarden(&gw, &["replay", "orders", "--since", "1h", "--rate", "5"]).await);
    assert!(mine.contains("--rate 5 --no-dry-run"), "{mine}");
}

/// A viewer may dry-run (it changes nothing), audited as the viewer's; a live run is refused.
#[tokio::test]
async fn a_viewer_may_dry_run() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "viewer", 2).await;
    let viewer = gw.token("vera", "viewer").await;
    let as_viewer = |args: &'static [&'static str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookwarden"));
        command.args(args).env("HOOKWARDEN_URL", gw.url("")).env("HOOKWARDEN_TOKEN", &viewer);
        command
    };
    let dry = as_viewer(&["replay", "orders", "--since", "1h"]).output().await.unwrap();
    assert!(dry.status.success(), "{dry:?}");
    assert!(stdout(&dry).contains("Would send    2 of 2 eligible"), "{dry:?}");
    let live =
        as_viewer(&["replay", "orders", "--since", "1h", "--no-dry-run", "--reason", "x"]).output().await.unwrap();
    assert_eq!(live.status.code(), Some(1), "{live:?}");
    assert!(stderr(&live).contains("role_insufficient"), "{live:?}");
    let audit = gw.audit().await;
    let entry = audit.iter().find(|e| e["action"] == "replay.dry_run").unwrap();
    assert_eq!(entry["actor"], "vera", "{entry}");
}

/// `hookwarden …` with the admin token, run under a pseudo-terminal (`script`), so that a
/// Ctrl-C typed into it reaches the command as a person's would: stdin is the terminal's
/// keyboard, stdout all it shows. `script` starts the command through a shell; `exec`
/// makes the command replace it, since dash (Debian's `sh`, used when `SHELL` is unset, as
/// in CI) would otherwise wait in the terminal's foreground group and die of the Ctrl-C
/// itself, turning the command's own exit code into 130.
fn under_a_terminal(gw: &Gateway, args: &str) -> tokio::process::Child {
    tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", &format!("exec {} {args}", env!("CARGO_BIN_EXE_hookwarden")), "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("HOOKWARDEN_URL", gw.url(""))
        .env("HOOKWARDEN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script(1) from util-linux")
}

/// Reads the terminal's output into `seen` until it holds `needle`.
async fn read_until(out: &mut tokio::process::ChildStdout, seen: &mut String, needle: &str) {
    use tokio::io::AsyncReadExt;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut chunk = [0u8; 4096];
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let n = tokio::time::timeout(left, out.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no `{needle}` on the terminal; got:\n{seen}"))
            .unwrap();
        assert!(n > 0, "the terminal closed before `{needle}`; got:\n{seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
}

/// Ctrl-C in a terminal pauses the job's sending while `Cancel? [y/N]` waits for an answer
/// (nothing goes out meanwhile), `n` resumes it, `y` cancels it: exit 4, and the last line's
/// counts are the job's own, final ones.
#[tokio::test]
async fn ctrl_c_pauses_sending_while_the_question_is_open() {
    use tokio::io::AsyncWriteExt;
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "pty", 30).await;
    let mut cli = under_a_terminal(&gw, "replay orders --since 1h --rate 2 --no-dry-run --reason INC-5");
    let (mut keys, mut screen) = (cli.stdin.take().unwrap(), cli.stdout.take().unwrap());
    let mut seen = String::new();
    read_until(&mut screen, &mut seen, "Ctrl-C to cancel it").await;
    let id = seen[seen.find("rpl_").unwrap()..].split(' ').next().unwrap().to_string();
    let sent_by_replay = || receiver.received().iter().filter(|r| r.replay_id() == Some(id.as_str())).count();
    eventually(Duration::from_secs(10), "a first send", || async { (sent_by_replay() > 0).then_some(()) }).await;

    keys.write_all(b"\x03").await.unwrap();
    read_until(&mut screen, &mut seen, "[y/N] ").await;
    assert!(seen.contains("Sending is paused."), "{seen}");
    assert_eq!(job(&gw, &id).await["state"], "paused");
    // A send in flight at the pause still lands; after that, nothing while the question waits
    // (at 2/s, four more would have gone out).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_question = sent_by_replay();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sent_by_replay(), at_question, "a send while the question was open");

    keys.write_all(b"n\n").await.unwrap();
    read_until(&mut screen, &mut seen, "still running (resumed)").await;
    eventually(Duration::from_secs(10), "sends to go on", || async { (sent_by_replay() > at_question).then_some(()) })
        .await;

    keys.write_all(b"\x03").await.unwrap();
    seen.clear();
    read_until(&mut screen, &mut seen, "[y/N] ").await;
    keys.write_all(b"y\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), cli.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(4), "cancelled: {seen}");
    let mut rest = String::new();
    use tokio::io::AsyncReadExt;
    screen.read_to_string(&mut rest).await.unwrap();
    let last = rest.lines().rev().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("no last line in:\n{rest}"));
    let done = job(&gw, &id).await;
    let c = &done["counts"];
    let expected = format!("replay {id} cancelled: {}", counts_said(c));
    // What the terminal shows last on that line (the progress bar was cleared before it).
    let last = &last[last.rfind(&format!("replay {id}")).unwrap()..];
    assert_eq!(last.trim(), expected, "the last line's counts are the job's: {done}");
    assert_eq!(done["settled"], true, "{done}");
    assert_eq!(c["sent"].as_i64().unwrap() as usize, sent_by_replay());
    let audit = gw.audit().await;
    let pauses = audit.iter().filter(|e| e["subject"] == id.as_str() && e["action"] == "replay.paused").count();
    assert_eq!(pauses, 2, "each Ctrl-C paused the job, audited");
}

/// `hookwarden replays list|show|pause|resume|cancel|watch`: a person whose terminal died
/// finds the job and re-attaches to it.
#[tokio::test]
async fn replays_are_found_and_followed_from_the_command_line() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "jobs", 4).await;
    let body =
        json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "INC-6 terminal died", "rate": 1 });
    let (_, started) = gw.admin_post("/v1/replays", &body).await;
    let id = started["id"].as_str().unwrap().to_string();

    let list = hookwarden(&gw, &["replays", "list"]).await;
    let text = stdout(&list);
    assert!(list.status.success(), "{list:?}");
    let header = text.lines().next().unwrap();
    let row = text.lines().find(|l| l.starts_with(&id)).unwrap_or_else(|| panic!("{text}"));
    assert_eq!(header.find("STATE"), row.find("running"), "columns line up:\n{text}");
    assert!(row.contains("INC-6 terminal died"), "{text}");
    let listed: Value = serde_json::from_slice(&hookwarden(&gw, &["replays", "list", "--json"]).await.stdout).unwrap();
    assert_eq!(listed["data"][0]["id"].as_str(), Some(id.as_str()));

    let paused = hookwarden(&gw, &["replays", "pause", &id]).await;
    assert!(stdout(&paused).contains("is paused now"), "{paused:?}");
    let shown = stdout(&hookwarden(&gw, &["replays", "show", &id]).await);
    assert!(shown.contains("paused") && shown.contains("bootstrap-admin") && shown.contains("INC-6"), "{shown}");
    let resumed = hookwarden(&gw, &["replays", "resume", &id]).await;
    assert!(stdout(&resumed).contains("is running now"), "{resumed:?}");

    // Re-attach: follow it to its end; the exit code is the live run's.
    let watched = hookwarden(&gw, &["replays", "watch", &id]).await;
    assert_eq!(watched.status.code(), Some(0), "{watched:?}");
    assert!(stdout(&watched).contains(&format!("replay {id} completed: sent 4, succeeded 4, failed 0")), "{watched:?}");

    let (_, again) = gw.admin_post("/v1/replays", &body).await;
    let again = again["id"].as_str().unwrap().to_string();
    let cancelled = hookwarden(&gw, &["replays", "cancel", &again]).await;
    assert_eq!(cancelled.status.code(), Some(4), "{cancelled:?}");
    let job = job(&gw, &again).await;
    let c = &job["counts"];
    assert!(stdout(&cancelled).contains(&format!("cancelled: {}", counts_said(c))), "{cancelled:?} vs {job}");
    let watched = hookwarden(&gw, &["replays", "watch", &again]).await;
    assert_eq!(watched.status.code(), Some(4), "an ended job: its last line and exit code at once");
    let gone = hookwarden(&gw, &["replays", "show", "rpl_nope"]).await;
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("replay_unknown"), "{gone:?}");
}

/// `events resolve`: one event by the provider's id at once; a selection after a dry run,
/// all of it with one audit entry or nothing.
async fn events_are_resolved_one_or_a_selection_at_a_time(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "res", 5).await;

    let one = hookwarden(&gw, &["events", "resolve", "res-0", "--note", "refunded by hand, OPS-9"]).await;
    assert!(one.status.success(), "{one:?}");
    assert!(stdout(&one).contains(&format!("{} resolved", ids[0])), "{one:?}");
    assert_eq!(gw.event(&ids[0]).await.unwrap()["outcome"], "resolved");
    let twice = hookwarden(&gw, &["events", "resolve", &ids[0], "--note", "again"]).await;
    assert!(stderr(&twice).contains("event_settled"), "{twice:?}");

    let dry = hookwarden(&gw, &["events", "resolve", "--source", "orders", "--since", "1h", "--note", "bulk"]).await;
    assert!(dry.status.success(), "{dry:?}");
    let report = stdout(&dry);
    assert!(report.contains("unknown          4   would be resolved"), "{report}");
    assert!(report.contains("resolved         1   left as they are"), "{report}");
    assert_eq!(gw.event(&ids[1]).await.unwrap()["outcome"], "unknown", "a dry run changes nothing");
    let command =
        report.lines().skip_while(|l| !l.starts_with("To resolve these 4")).nth(1).unwrap().trim().to_string();
    let run = || {
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command.replacen("hookwarden", env!("CARGO_BIN_EXE_hookwarden"), 1))
            .env("HOOKWARDEN_URL", gw.url(""))
            .env("HOOKWARDEN_TOKEN", ADMIN_TOKEN)
            .output()
    };
    // All or nothing: with its audit entry refused, no event is resolved.
    db.refuse("INSERT", "audit_log").await;
    let refused = run().await.unwrap();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    db.allow("INSERT", "audit_log").await;
    for id in &ids[1..] {
        assert_eq!(gw.event(id).await.unwrap()["outcome"], "unknown");
    }
    let live = run().await.unwrap();
    assert!(stdout(&live).contains("Resolved 4 events"), "{live:?}");
    for id in &ids[1..] {
        assert_eq!(gw.event(id).await.unwrap()["outcome"], "resolved");
    }
    let audit = gw.audit().await;
    let bulk: Vec<&Value> = audit.iter().filter(|e| e["action"] == "events.resolved").collect();
    assert_eq!(bulk.len(), 1, "one entry for the selection");
    assert_eq!(bulk[0]["details"]["event_ids"].as_array().unwrap().len(), 4);
    assert_eq!(bulk[0]["details"]["note"], "bulk");
}

/// The provider's own id: a filter field, a column in lists, and what `events show` takes
/// (with `--source` when two sources have it); `events show` tells why an event stands where
/// it stands and prints its payload, cut unless `--full`; `events list` pages.
#[tokio::test]
async fn events_are_found_by_the_providers_id_and_shown_whole() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let mut spec: GatewaySpec = spec(&db, &receiver);
    spec.sources.push(
        SourceSpec::new("billing", "{ kind = \"none\" }", &receiver.url("/billing"))
            .with("dedup = { json_pointer = \"/id\" }"),
    );
    let gw = Gateway::start(&spec).await;
    let ids = outage(&gw, &receiver, "prov", 3).await;
    let lines: serde_json::Map<String, Value> = (0..60).map(|n| (format!("field_{n:02}"), json!(n))).collect();
    let (_, big) = gw.ingest("billing", &[], json!({ "id": "prov-1", "lines": lines }).to_string().as_bytes()).await;
    let big = big["event_id"].as_str().unwrap().to_string();

    let list = stdout(&hookwarden(&gw, &["events", "list", "--source", "orders"]).await);
    let header = list.lines().next().unwrap();
    assert!(header.contains("PROVIDER ID"), "{list}");
    let row = list.lines().find(|l| l.starts_with(&ids[0])).unwrap();
    assert_eq!(header.find("PROVIDER ID"), row.find("prov-0"), "columns line up:\n{list}");
    let filtered = hookwarden(&gw, &["events", "list", "--filter", "provider_id = prov-2", "--json"]).await;
    let filtered: Value = serde_json::from_slice(&filtered.stdout).unwrap();
    assert_eq!(filtered["data"][0]["id"].as_str(), Some(ids[2].as_str()), "{filtered}");

    let ambiguous = hookwarden(&gw, &["events", "show", "prov-1"]).await;
    assert_eq!(ambiguous.status.code(), Some(2), "{ambiguous:?}");
    assert!(stderr(&ambiguous).contains("add --source"), "{ambiguous:?}");
    let shown = stdout(&hookwarden(&gw, &["events", "show", "prov-1", "--source", "orders"]).await);
    assert!(shown.starts_with(&ids[1]), "{shown}");
    assert!(shown.contains("\"id\": \"prov-1\""), "the payload, pretty: {shown}");
    assert!(shown.contains("Attempts:") && !shown.contains("Receipts:"), "an empty section is left out: {shown}");

    let cut = stdout(&hookwarden(&gw, &["events", "show", &big]).await);
    assert!(cut.contains("more lines: add --full"), "{cut}");
    assert!(!cut.contains("field_59"), "{cut}");
    let full = stdout(&hookwarden(&gw, &["events", "show", &big, "--full"]).await);
    assert!(full.contains("\"field_59\": 59") && !full.contains("more lines"), "{full}");

    // Why it is not pending: the handler's failed receipt ends its retries.
    let failed = receipts_sdk::receipt::Receipt::failed(&ids[0], "E_DUPLICATE", None);
    gw.post_receipt(&crate::replay::handler_key().sign(&failed, crate::support::sign::now_secs())).await;
    let why = stdout(&hookwarden(&gw, &["events", "show", &ids[0]]).await);
    assert!(why.contains("no retry: the handler's receipt says it failed (E_DUPLICATE)"), "{why}");
    assert!(why.contains("Receipts:"), "{why}");

    // Pages: a cursor, or every page.
    let first = stdout(&hookwarden(&gw, &["events", "list", "--limit", "2"]).await);
    let cursor =
        first.lines().find_map(|l| l.split("--cursor ").nth(1)).unwrap().split([',', ' ']).next().unwrap().to_string();
    let second = stdout(&hookwarden(&gw, &["events", "list", "--limit", "2", "--cursor", &cursor]).await);
    assert_eq!(second.lines().filter(|l| l.starts_with("evt_")).count(), 2, "{second}");
    let all = hookwarden(&gw, &["events", "list", "--limit", "2", "--all", "--json"]).await;
    let all: Value = serde_json::from_slice(&all.stdout).unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), 4, "{all}");
}

/// `--reason` on a dry run is kept in its audit entry and said so; `--note` without
/// `--override-confirmed` is said to be ignored.
#[tokio::test]
async fn reasons_and_notes_on_a_dry_run_are_kept_or_said_ignored() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "why", 1).await;
    let dry = hookwarden(&gw, &["replay", "orders", "--since", "1h", "--reason", "INC-8", "--note", "stray"]).await;
    assert!(stdout(&dry).contains("--reason kept in this dry run's audit entry"), "{dry:?}");
    assert!(stdout(&dry).contains("--reason INC-8"), "the live command carries it: {dry:?}");
    assert!(stderr(&dry).contains("--note goes with --override-confirmed"), "{dry:?}");
    let audit = gw.audit().await;
    let entry = audit.iter().find(|e| e["action"] == "replay.dry_run").unwrap();
    assert_eq!(entry["details"]["request"]["reason"], "INC-8", "{entry}");
}

/// Messages a tired person can act on, times as people type them (said back in UTC), and
/// `--json` meaning JSON only on stdout, for every command that talks to the gateway.
#[tokio::test]
async fn messages_dates_and_json_as_people_need_them() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "msg", 2).await;
    let run = |args: &[&str], url: &str, token: Option<&str>, tz: &str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookwarden"));
        command.args(args).env("HOOKWARDEN_URL", url).env("TZ", tz).env_remove("HOOKWARDEN_TOKEN");
        if let Some(token) = token {
            command.env("HOOKWARDEN_TOKEN", token);
        }
        command.output()
    };
    let url = gw.url("");

    let missing = run(&["events", "list"], &url, None, "UTC").await.unwrap();
    assert_eq!(missing.status.code(), Some(1));
    let said = stderr(&missing);
    assert!(said.contains("HOOKWARDEN_TOKEN") && said.contains("--token") && !said.contains("Authorization"), "{said}");
    let bare = url.trim_start_matches("http://");
    let no_scheme = run(&["events", "list"], bare, Some(ADMIN_TOKEN), "UTC").await.unwrap();
    assert!(no_scheme.status.success(), "HOOKWARDEN_URL={bare}: {no_scheme:?}");
    let empty = run(&["events", "list"], "", Some(ADMIN_TOKEN), "UTC").await.unwrap();
    assert_eq!(empty.status.code(), Some(2));
    assert!(stderr(&empty).contains("e.g. http://127.0.0.1:8080"), "{empty:?}");
    let help = stdout(&run(&["events", "list", "--help"], &url, None, "UTC").await.unwrap());
    assert!(!help.contains("HOOKWARDEN_URL=]") && help.contains("[env: HOOKWARDEN_URL]"), "{help}");
    // The description is on the option's line, or on the next when clap lays help out below.
    let lines: Vec<&str> = help.lines().collect();
    let token = lines.iter().position(|l| l.contains("--token")).expect("--token in the help");
    assert!(lines[token..(token + 2).min(lines.len())].iter().any(|l| l.contains("optional")), "{help}");

    // 01:10 in a place two hours east of UTC is 23:10 UTC; the command says so.
    let at = run(&["events", "list", "--since", "01:10", "--json"], &url, Some(ADMIN_TOKEN), "UTC-2").await.unwrap();
    assert!(at.status.success(), "{at:?}");
    let said = stderr(&at);
    assert!(said.contains("`01:10` is ") && said.contains("T23:10:00Z (local time is UTC+02:00)"), "{said}");
    serde_json::from_slice::<Value>(&at.stdout).expect("JSON only on stdout");
    for since in ["yesterday", "2026-12-06", "today"] {
        let listed = run(&["events", "list", "--since", since], &url, Some(ADMIN_TOKEN), "UTC").await.unwrap();
        assert!(listed.status.success(), "--since {since}: {listed:?}");
    }
    let wrong = run(&["events", "list", "--since", "last tuesday"], &url, Some(ADMIN_TOKEN), "UTC").await.unwrap();
    assert_eq!(wrong.status.code(), Some(2));
    assert!(stderr(&wrong).contains("01:10 (today, local time)"), "{wrong:?}");

    // --json: nothing but JSON on stdout.
    for args in [
        vec!["events", "list"],
        vec!["events", "show", &ids[0]],
        vec!["summary"],
        vec!["audit"],
        vec!["audit", "verify"],
        vec!["replay", "orders", "--since", "1h", "--reason", "r"],
        vec!["replays", "list"],
        vec!["tokens", "list"],
        vec!["events", "resolve", "--since", "1h", "--note", "n"],
    ] {
        let mut args = args.clone();
        args.push("--json");
        let out = run(&args, &url, Some(ADMIN_TOKEN), "UTC").await.unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        let parsed: Result<Value, _> = serde_json::from_slice(&out.stdout);
        assert!(parsed.is_ok(), "{args:?} printed more than JSON:\n{}", stdout(&out));
    }
    let verified: Value = serde_json::from_slice(
        &run(&["audit", "verify", "--json"], &url, Some(ADMIN_TOKEN), "UTC").await.unwrap().stdout,
    )
    .unwrap();
    assert_eq!(verified["verified"], true, "{verified}");
}
