//! The operator console over plain HTTP (what a browser cannot be made to show directly):
//! sessions kept server-side by a hash, their idle expiry and sign-out, a revoked token ending
//! its sessions at once, the CSRF token on every state-changing form, and the security
//! headers on every console response. The browser tests (tests/browser.rs) cover the rest.

use std::collections::HashMap;
use std::sync::Arc;

use hookwarden::clock::ManualClock;
use sha2::Digest;

use crate::replay::{outage, spec};
use crate::support::{ADMIN_TOKEN, Db, Gateway, GatewaySpec, Receiver, TestDb, on_both_backends};

/// A browser stand-in: keeps the console's cookies, follows no redirects.
pub(crate) struct Browser {
    base: String,
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

pub(crate) struct Answer {
    pub status: u16,
    pub location: String,
    pub body: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Browser {
    pub fn new(gw: &Gateway) -> Self {
        hookwarden::tls::install_crypto_provider();
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { base: gw.url(""), http, cookies: HashMap::new() }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let cookie: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let response = request.header("cookie", cookie.join("; ")).send().await.expect("console request");
        for set in response.headers().get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let (pair, attributes) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_string(), value.to_string());
            }
        }
        Answer {
            status: response.status().as_u16(),
            location: response.headers().get("location").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// A form post as the console's own page sends it (same origin).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("origin", self.base.clone())
            .header("sec-fetch-site", "same-origin")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form));
        self.send(request).await
    }

    pub async fn sign_in(&mut self, token: &str) -> Answer {
        let form = self.get("/ui/signin").await;
        let csrf = hidden(&form.body, "csrf");
        self.post("/ui/signin", &[("token", token), ("csrf", &csrf), ("next", "/ui/")]).await
    }

    /// The CSRF token of the signed-in session, as its pages carry it.
    pub async fn csrf(&mut self) -> String {
        let page = self.get("/ui/").await;
        assert_eq!(page.status, 200, "signed in");
        hidden(&page.body, "csrf")
    }
}

/// `application/x-www-form-urlencoded` of `pairs`.
pub(crate) fn form_body(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

/// The value of the hidden input `name` in a page.
pub(crate) fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no hidden `{name}` in:\n{html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

async fn sessions_in_store(db: &TestDb, id_hash: &str) -> i64 {
    db.scalar(&format!("SELECT COUNT(*) FROM console_sessions WHERE id_hash = '{id_hash}'")).await
}

/// A session is a random id in the cookie and only its hash in the database; sign-out needs
/// the session's CSRF token and ends it there; a revoked token ends its sessions at once.
async fn sessions_live_server_side_and_end_on_sign_out_or_revocation(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let mut browser = Browser::new(&gw);

    let signed_in = browser.sign_in(ADMIN_TOKEN).await;
    assert_eq!((signed_in.status, signed_in.location.as_str()), (303, "/ui/"), "{}", signed_in.body);
    let cookie = signed_in.headers.get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect::<Vec<_>>();
    let session_cookie = cookie.iter().find(|c| c.starts_with("hookwarden_session=")).expect("a session cookie");
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Strict"), "{session_cookie}");
    let id = browser.cookies["hookwarden_session"].clone();
    assert!(!id.contains(ADMIN_TOKEN));
    let id_hash = hex::encode(sha2::Sha256::digest(id.as_bytes()));
    assert_eq!(sessions_in_store(&db, &id_hash).await, 1, "the store keeps the id's hash");
    assert_eq!(sessions_in_store(&db, &id).await, 0, "never the id itself");

    // Sign-out without the session's CSRF token (or with another) is refused and ends nothing.
    for form in [vec![], vec![("csrf", "0123")]] {
        let refused = browser.post("/ui/signout", &form).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(refused.body.contains("CSRF"), "{}", refused.body);
    }
    assert_eq!(browser.get("/ui/").await.status, 200, "still signed in");
    let csrf = browser.csrf().await;
    let out = browser.post("/ui/signout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location.as_str()), (303, "/ui/signin?notice=signedout"));
    assert_eq!(sessions_in_store(&db, &id_hash).await, 0, "signed out: the session is gone");
    browser.cookies.insert("hookwarden_session".into(), id.clone());
    let after = browser.get("/ui/").await;
    assert_eq!(after.status, 303);
    assert!(after.location.starts_with("/ui/signin"), "{}", after.location);

    // A session of a token revoked since sign-in is over at once.
    let token = gw.token("oncall-ann", "operator").await;
    let mut ann = Browser::new(&gw);
    assert_eq!(ann.sign_in(&token).await.status, 303);
    assert_eq!(ann.get("/ui/").await.status, 200);
    let (status, tokens) = gw.admin_get("/v1/tokens").await;
    assert_eq!(status, 200);
    let ann_token = tokens["data"].as_array().unwrap().iter().find(|t| t["name"] == "oncall-ann").unwrap();
    let id = ann_token["id"].as_str().unwrap().to_string();
    assert_eq!(gw.call("DELETE", &format!("/v1/tokens/{id}"), None, None).await.0, 200);
    let revoked = ann.get("/ui/").await;
    assert_eq!(revoked.status, 303);
    assert_eq!(revoked.location, "/ui/signin?next=/ui/&notice=expired");
}

on_both_backends!(sessions_live_server_side_and_end_on_sign_out_or_revocation);

/// A session unused for longer than `console.session_idle` is over; used within it, it lives on.
#[tokio::test]
async fn an_idle_session_expires() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let spec: GatewaySpec = spec(&db, &receiver);
    let clock = ManualClock::at(1_800_000_000_000);
    let gw = Gateway::start_in_process(&with_console(spec, "session_idle = \"10m\""), Arc::new(clock.clone())).await;
    let mut browser = Browser::new(&gw);
    assert_eq!(browser.sign_in(ADMIN_TOKEN).await.status, 303);
    for _ in 0..3 {
        clock.advance(9 * 60_000);
        assert_eq!(browser.get("/ui/").await.status, 200, "used every 9 minutes, the session lives on");
    }
    clock.advance(10 * 60_000 + 1);
    let expired = browser.get("/ui/").await;
    assert_eq!((expired.status, expired.location.as_str()), (303, "/ui/signin?next=/ui/&notice=expired"));
}

/// Appends a `[console]` section to the gateway's config.
fn with_console(mut spec: GatewaySpec, lines: &str) -> GatewaySpec {
    // The last section of the written config is the sources'; `[console]` goes before them
    // through the delivery section's extra lines.
    spec.delivery_extra.push_str(&format!("\n[console]\n{lines}\n"));
    spec
}

/// Every console response carries the policy and the other headers, a sign-in form posted
/// from another site is refused, and a wrong token is a 401 that leaves no session.
#[tokio::test]
async fn console_responses_carry_the_security_headers() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let mut browser = Browser::new(&gw);
    for path in ["/ui/", "/ui/signin", "/ui/static/console.js", "/ui/static/console.css", "/ui/no-such-page"] {
        let answer = browser.get(path).await;
        let csp = answer.headers.get("content-security-policy").map(|v| v.to_str().unwrap()).unwrap_or("");
        assert_eq!(csp, hookwarden_csp(), "{path}");
        assert_eq!(answer.headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(answer.headers["x-frame-options"], "DENY", "{path}");
    }
    let wrong = browser.sign_in("hwt_wrong").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("not valid"));
    assert!(!browser.cookies.contains_key("hookwarden_session"));

    let form = browser.get("/ui/signin").await;
    let csrf = hidden(&form.body, "csrf");
    let forged = browser
        .send(
            reqwest::Client::new()
                .post(gw.url("/ui/signin"))
                .header("origin", "http://127.0.0.1:1")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_body(&[("token", ADMIN_TOKEN), ("csrf", &csrf)])),
        )
        .await;
    assert_eq!(forged.status, 403, "a sign-in posted from another origin");
    assert!(!browser.cookies.contains_key("hookwarden_session"));
}

fn hookwarden_csp() -> &'static str {
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}

/// The server-sent events of `GET /v1/replays/{id}/events` (a token, as any API client), up
/// to and including `end`: each `(event, data)`.
pub(crate) async fn replay_events(gw: &Gateway, token: &str, id: &str) -> Vec<(String, serde_json::Value)> {
    let mut response = reqwest::Client::new()
        .get(gw.url(&format!("/v1/replays/{id}/events")))
        .bearer_auth(token)
        .send()
        .await
        .expect("progress stream");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (mut text, mut events) = (String::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Some(chunk) =
        tokio::time::timeout_at(deadline, response.chunk()).await.expect("the stream ended in time").unwrap()
    {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field =
                |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::trim).map(str::to_string);
            if let (Some(event), Some(data)) = (field("event:"), field("data:")) {
                events.push((event, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

/// A live replay's progress, pushed: the counts as they move, the scope's confirmed count
/// climbing as receipts arrive, `end` once the job completed; another source's token sees no
/// such replay.
#[tokio::test]
async fn replay_progress_is_pushed_as_server_sent_events() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    outage(&gw, &receiver, "p", 8).await;
    receiver.set_receipt_key(crate::replay::handler_key());
    receiver.post_receipts_before_answering(&gw.url(""));
    let body = serde_json::json!({ "source": "orders", "since": "2000-01-01T00:00:00Z", "dry_run": false, "reason": "progress", "rate": 6 });
    let (status, job) = gw.admin_post("/v1/replays", &body).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap();
    let viewer = gw.token("vera", "viewer").await;
    let events = replay_events(&gw, &viewer, id).await;
    let (last_kind, last) = events.last().expect("some events");
    assert_eq!(last_kind, "end");
    assert_eq!(last["state"], "completed", "{last}");
    assert_eq!(last["counts"]["succeeded"], 8);
    assert_eq!(last["confirmed_in_scope"], 8);
    let progress: Vec<_> = events.iter().filter(|(kind, _)| kind == "progress").map(|(_, e)| e).collect();
    assert!(progress.len() >= 3, "progress was pushed as it moved: {events:?}");
    let sent: Vec<i64> = progress.iter().map(|e| e["counts"]["sent"].as_i64().unwrap()).collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    let confirmed: Vec<i64> = events.iter().map(|(_, e)| e["confirmed_in_scope"].as_i64().unwrap()).collect();
    assert!(confirmed[0] < 8 && confirmed.windows(2).all(|w| w[0] <= w[1]), "it climbed: {confirmed:?}");
    let (status, _) = gw.call("GET", &format!("/v1/replays/{id}/events"), Some("nope"), None).await;
    assert_eq!(status, 401);
}

/// The `href`s of the links in `html` whose text is `text`.
fn link_to(html: &str, text: &str) -> Option<String> {
    let end = html.find(&format!(">{text}</a>"))?;
    let start = html[..end].rfind("href=\"")? + "href=\"".len();
    Some(html[start..end].split('"').next().unwrap().replace("&amp;", "&").replace("&#38;", "&"))
}

/// The text of the element with `id` in `html` (its first text, tags dropped).
fn cell(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id} in:\n{html}"));
    let rest = &html[start..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].trim().to_string()
}

/// The replays page lists what `GET /v1/replays` lists, newest first, a page at a time by
/// cursor, every job once; a running (here paused) one is marked live and links to its page,
/// which follows it; a bad state is the API's message; a viewer sees the list too.
async fn the_replays_page_lists_jobs_newest_first_a_page_at_a_time(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "j", 8).await;
    for pair in ids[..6].chunks(2) {
        let body = serde_json::json!({ "event_ids": pair, "dry_run": false, "reason": "by ids", "rate": 100 });
        let (status, job) = gw.admin_post("/v1/replays", &body).await;
        assert_eq!(status, 202, "{job}");
        crate::replay::wait_done(&gw, job["id"].as_str().unwrap(), std::time::Duration::from_secs(30)).await;
    }
    // One left running, slowly, and paused: the page's live one.
    let body = serde_json::json!({ "event_ids": &ids[6..], "dry_run": false, "reason": "slow one", "rate": 0.05 });
    let (status, job) = gw.admin_post("/v1/replays", &body).await;
    assert_eq!(status, 202, "{job}");
    let running = job["id"].as_str().unwrap().to_string();
    let (status, paused) = gw.call("POST", &format!("/v1/replays/{running}/pause"), None, None).await;
    assert_eq!(status, 200, "{paused}");
    let (_, api) = gw.admin_get("/v1/replays?limit=100").await;
    let expected: Vec<String> =
        api["data"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect();
    assert_eq!((expected.len(), expected[0].as_str()), (4, running.as_str()), "{api}");

    let viewer = gw.token("lead-bo", "viewer").await;
    let mut browser = Browser::new(&gw);
    assert_eq!(browser.sign_in(&viewer).await.status, 303);
    let (mut seen, mut next, mut pages) = (Vec::new(), Some("/ui/replays?limit=3".to_string()), 0);
    while let Some(path) = next.take() {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        for piece in page.body.split("<a href=\"/ui/replays/rpl_").skip(1) {
            seen.push(format!("rpl_{}", piece.split('"').next().unwrap()));
        }
        if pages == 1 {
            assert!(page.body.contains("class=\"live\""), "the paused one is marked live");
            assert!(page.body.contains(&format!("aria-label=\"watch {running} live\"")), "{}", page.body);
            assert!(page.body.contains("slow one") && page.body.contains("aria-current=\"page\">Replays"));
        }
        next = link_to(&page.body, "Older replays");
        assert!(pages < 10, "the pages end");
    }
    assert_eq!((pages, &seen), (2, &expected), "every job once, newest first, as the API lists them");

    let paused_only = browser.get("/ui/replays?state=paused").await;
    assert_eq!(paused_only.body.matches("<a href=\"/ui/replays/rpl_").count(), 1, "{}", paused_only.body);
    let bad = browser.get("/ui/replays?state=done").await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("`state` `done` is not one of running, paused"), "{}", bad.body);

    // Re-attaching: the running job's page follows it by server-sent events.
    let live = browser.get(&format!("/ui/replays/{running}")).await;
    assert!(live.body.contains(&format!("data-progress=\"/ui/replays/{running}/events\"")), "{}", live.body);
    assert_eq!(cell(&live.body, "state"), "paused");
    let by = paused["paused"]["by"].as_str().unwrap();
    assert!(live.body.contains(&format!("Paused by {by} at")), "{}", live.body);
}

/// A running replay's page shows every count the job has (the handler's answer to the probe
/// settling items: `skipped_probe`; the probes sent) as the API has them, and pauses and
/// resumes it for an operator (audited in their name); a viewer's buttons are disabled and
/// say why, and a viewer's forged pause is refused.
/// A gateway with source `orders` whose handler (the probe server) says it applied the first
/// two of five delivered, unknown events, and source `plain` without a `status_url`: the
/// gateway, the five ids and the RFC 3339 time before them.
async fn probed(db: &TestDb) -> (Gateway, Vec<String>, String) {
    use crate::probe::{entry, ingest, start_probe_server};
    let (addr, server) = start_probe_server().await;
    let key = crate::support::sign::receipt_key("probe-key", 7);
    let source = |name: &str| {
        crate::support::SourceSpec::new(name, "{ kind = \"none\" }", &format!("http://{addr}/webhooks"))
            .with(&crate::support::sign::receipt_keys_line(&[(&key, false)]))
    };
    let orders = source("orders").with(&format!("status_url = \"http://{addr}/status/orders\""));
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![orders, source("plain")])).await;
    let since = hookwarden::timestamp::format_ms(crate::support::sign::now_ms() - 1000);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(ingest(&gw, "orders", &serde_json::json!({ "n": n })).await);
    }
    crate::support::eventually(std::time::Duration::from_secs(20), "all delivered", || async {
        for id in &ids {
            (gw.event(id).await?["delivery_state"] == "delivered").then_some(())?;
        }
        Some(())
    })
    .await;
    let now = crate::support::sign::now_secs();
    let answers = vec![entry(&key, &ids[0], "rcp_had_0", now), entry(&key, &ids[1], "rcp_had_1", now)];
    server.answers.lock().unwrap().insert("orders".into(), Some(answers));
    (gw, ids, since)
}

async fn the_replay_page_shows_every_count_and_pauses_and_resumes(kind: Db) {
    let db = TestDb::new(kind).await;
    let (gw, _, since) = probed(&db).await;
    let operator = gw.token("oncall-ann", "operator").await;
    let mut ann = Browser::new(&gw);
    assert_eq!(ann.sign_in(&operator).await.status, 303);
    let csrf = ann.csrf().await;
    let body =
        serde_json::json!({ "source": "orders", "since": since, "dry_run": false, "reason": "pause me", "rate": 0.5 });
    let (status, job) = gw.admin_post("/v1/replays", &body).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    crate::support::eventually(std::time::Duration::from_secs(20), "the probe settled two", || async {
        let (_, job) = gw.admin_get(&format!("/v1/replays/{id}")).await;
        (job["counts"]["skipped_probe"] == 2).then_some(())
    })
    .await;

    let paused = ann.post(&format!("/ui/replays/{id}/pause"), &[("csrf", &csrf)]).await;
    assert_eq!(
        (paused.status, paused.location.clone()),
        (303, format!("/ui/replays/{id}?done=paused")),
        "{}",
        paused.body
    );
    let (_, api) = gw.admin_get(&format!("/v1/replays/{id}")).await;
    assert_eq!((api["state"].as_str(), api["paused"]["by"].as_str()), (Some("paused"), Some("oncall-ann")), "{api}");
    let page = ann.get(&paused.location).await;
    assert_eq!(cell(&page.body, "state"), "paused");
    assert!(page.body.contains("Paused by oncall-ann at"), "{}", page.body);
    assert!(page.body.contains("id=\"resume-form\" class=\"inline\">"), "resume shown: {}", page.body);
    assert!(page.body.contains("id=\"pause-form\" class=\"inline\" hidden>"), "pause hidden: {}", page.body);
    // Every count of the job, as the API has it.
    let (_, api) = gw.admin_get(&format!("/v1/replays/{id}")).await;
    for (name, value) in api["counts"].as_object().unwrap() {
        assert_eq!(cell(&page.body, &format!("count-{name}")), value.to_string(), "{name} on the page: {api}");
    }
    assert_eq!(cell(&page.body, "count-skipped_probe"), "2");
    assert_eq!(cell(&page.body, "count-probes"), "1");

    // A viewer: the same page, the buttons disabled with the reason, a pause refused.
    let viewer = gw.token("lead-bo", "viewer").await;
    let mut bo = Browser::new(&gw);
    assert_eq!(bo.sign_in(&viewer).await.status, 303);
    let watched = bo.get(&format!("/ui/replays/{id}")).await;
    assert!(watched.body.contains("<button type=\"button\" disabled aria-describedby=\"cancel-why\">Pause</button>"));
    assert!(watched.body.contains("operator role; you are signed in as viewer"), "{}", watched.body);
    let bo_csrf = bo.csrf().await;
    let refused = bo.post(&format!("/ui/replays/{id}/resume"), &[("csrf", &bo_csrf)]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    let resumed = ann.post(&format!("/ui/replays/{id}/resume"), &[("csrf", &csrf)]).await;
    assert_eq!(resumed.location, format!("/ui/replays/{id}?done=resumed"), "{}", resumed.body);
    let (_, api) = gw.admin_get(&format!("/v1/replays/{id}")).await;
    assert_eq!(api["state"], "running", "{api}");
    let done = crate::replay::wait_done(&gw, &id, std::time::Duration::from_secs(60)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let page = ann.get(&format!("/ui/replays/{id}")).await;
    for (name, value) in done["counts"].as_object().unwrap() {
        assert_eq!(cell(&page.body, &format!("count-{name}")), value.to_string(), "{name} at the end: {done}");
    }
    assert_eq!((cell(&page.body, "count-sent"), cell(&page.body, "count-skipped_probe")), ("3".into(), "2".into()));
    let audit = gw.audit().await;
    let by =
        |action: &str| audit.iter().filter(|e| e["action"] == action).map(|e| e["actor"].clone()).collect::<Vec<_>>();
    assert_eq!((by("replay.paused"), by("replay.resumed")), (vec!["oncall-ann".into()], vec!["oncall-ann".into()]));
}

/// Gap review resolves a selection through `POST /v1/events/resolve`'s function: one
/// transaction, one audit entry naming every event; a selection with an id that is not an
/// event resolves nothing; selected events settled already are left as they are and counted.
async fn gap_review_resolves_a_selection_at_once(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "g", 5).await;
    crate::replay::confirm(&gw, &ids[4]).await;
    let mut browser = Browser::new(&gw);
    assert_eq!(browser.sign_in(ADMIN_TOKEN).await.status, 303);
    let csrf = browser.csrf().await;
    let back = "/ui/gaps?window=24h";

    // One bad id in the selection: nothing is resolved.
    let mut form = vec![("csrf", csrf.as_str()), ("back", back), ("note", "INC-9 duplicates")];
    form.extend(ids[..2].iter().map(|id| ("event", id.as_str())));
    form.push(("event", "not-an-event"));
    let refused = browser.post("/ui/gaps/resolve", &form).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("Nothing was resolved"), "{}", refused.body);
    for id in &ids[..2] {
        assert_eq!(gw.event(id).await.unwrap()["outcome"], "unknown");
    }

    // Four unsettled and one confirmed: the four resolved at once, the confirmed one left.
    let mut form = vec![("csrf", csrf.as_str()), ("back", back), ("note", "INC-9 duplicates")];
    form.extend(ids.iter().map(|id| ("event", id.as_str())));
    let done = browser.post("/ui/gaps/resolve", &form).await;
    assert_eq!(
        (done.status, done.location.as_str()),
        (303, "/ui/gaps?window=24h&done=resolved-4-of-5"),
        "{}",
        done.body
    );
    let shown = browser.get(&done.location).await;
    assert!(shown.body.contains("Resolved 4 events with your note, in one audit entry."), "{}", shown.body);
    assert!(shown.body.contains("1 of the 5 selected were settled already"), "{}", shown.body);
    for id in &ids[..4] {
        assert_eq!(gw.event(id).await.unwrap()["outcome"], "resolved");
    }
    assert_eq!(gw.event(&ids[4]).await.unwrap()["outcome"], "confirmed");
    let audit = gw.audit().await;
    let entries: Vec<_> = audit.iter().filter(|e| e["action"] == "events.resolved").collect();
    assert_eq!(entries.len(), 1, "one audit entry for the selection: {audit:?}");
    let mut named: Vec<String> = entries[0]["details"]["event_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    named.sort();
    let mut expected = ids[..4].to_vec();
    expected.sort();
    assert_eq!(named, expected);
    assert_eq!(entries[0]["details"]["note"], "INC-9 duplicates");
    assert_eq!(audit.iter().filter(|e| e["action"] == "event.resolved").count(), 0, "not one at a time");
}

on_both_backends!(
    the_replays_page_lists_jobs_newest_first_a_page_at_a_time,
    the_replay_page_shows_every_count_and_pauses_and_resumes,
    gap_review_resolves_a_selection_at_once,
);

/// The reconcile form of a page.
fn reconcile_form(html: &str) -> &str {
    let start = html.find("action=\"/ui/reconcile\"").expect("a reconcile form");
    &html[start..start + html[start..].find("</form>").unwrap()]
}

/// The Reconcile button asks the handler about a span's unknown events through
/// `POST /v1/reconcile`'s function and shows what it settled (audited in the operator's
/// name); a viewer's button is disabled and says why and a viewer's post is refused; a source
/// without a `status_url` cannot be asked, and the page says so.
async fn reconcile_from_the_console_settles_what_the_handler_had(kind: Db) {
    let db = TestDb::new(kind).await;
    let (gw, ids, _) = probed(&db).await;
    let operator = gw.token("oncall-ann", "operator").await;
    let mut ann = Browser::new(&gw);
    assert_eq!(ann.sign_in(&operator).await.status, 303);
    for page in ["/ui/?window=1h", "/ui/gaps?window=1h"] {
        let shown = ann.get(page).await;
        let form = reconcile_form(&shown.body);
        assert!(form.contains("<option value=\"orders\">orders</option>"), "{page}: {form}");
        assert!(!form.contains("plain"), "plain cannot be asked: {form}");
        assert!(form.contains("<button type=\"submit\" id=\"reconcile\" class=\"secondary\">"), "{page}: {form}");
    }
    let plain = ann.get("/ui/?source=plain").await;
    assert!(plain.body.contains("Source plain has no status_url: its handler cannot be asked."), "{}", plain.body);

    let overview = ann.get("/ui/?window=1h&source=orders").await;
    let form = |name: &str| hidden(&overview.body[overview.body.find("action=\"/ui/reconcile\"").unwrap()..], name);
    let (since, until, back) = (form("since"), form("until"), form("back"));
    let csrf = hidden(&overview.body, "csrf");
    let fields = [("csrf", csrf.as_str()), ("source", "orders"), ("since", &since), ("until", &until), ("back", &back)];
    let done = ann.post("/ui/reconcile", &fields).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let counts: Vec<(&str, &str)> = vec![
        ("r-unknown_in_window", "5"),
        ("r-asked", "5"),
        ("r-confirmed", "2"),
        ("r-failed", "0"),
        ("r-still_unknown", "3"),
        ("r-probes", "1"),
        ("r-probes_failed", "0"),
    ];
    for (id, value) in counts {
        assert_eq!(cell(&done.body, id), value, "{id}: {}", done.body);
    }
    assert!(done.body.contains("it settled 2 (2 confirmed, 0 failed); 3 stay unknown"), "{}", done.body);
    assert_eq!(link_to(&done.body, "Back").as_deref(), Some(back.as_str()));
    for (i, id) in ids.iter().enumerate() {
        let expected = if i < 2 { "confirmed" } else { "unknown" };
        assert_eq!(gw.event(id).await.unwrap()["outcome"], expected, "{id}");
    }
    let audit = gw.audit().await;
    let entry = audit.iter().find(|e| e["action"] == "reconcile").expect("audited");
    assert_eq!(
        (entry["actor"].as_str(), entry["details"]["counts"]["confirmed"].as_i64()),
        (Some("oncall-ann"), Some(2))
    );

    let viewer = gw.token("lead-bo", "viewer").await;
    let mut bo = Browser::new(&gw);
    assert_eq!(bo.sign_in(&viewer).await.status, 303);
    let watched = bo.get("/ui/?window=1h").await;
    assert!(watched.body.contains("disabled aria-describedby=\"reconcile-why\""), "{}", watched.body);
    assert!(watched.body.contains("Reconciling needs the operator role; you are signed in as viewer."));
    let bo_csrf = bo.csrf().await;
    let fields = [("csrf", bo_csrf.as_str()), ("source", "orders"), ("since", &since), ("until", &until)];
    let refused = bo.post("/ui/reconcile", &fields).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("operator role. Nothing was asked or recorded."), "{}", refused.body);
    assert_eq!(gw.audit().await.iter().filter(|e| e["action"] == "reconcile").count(), 1);
}

/// The overview shows per source what `GET /v1/storage` shows (measured in the background:
/// the first view may say it is measuring), and its chart draws resolved events as a layer.
async fn the_overview_shows_storage_as_the_api_does_and_resolved_events(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&spec(&db, &receiver)).await;
    let ids = outage(&gw, &receiver, "s", 4).await;
    let body = serde_json::json!({ "event_ids": &ids[..1], "note": "by hand", "dry_run": false });
    let (status, answer) = gw.admin_post("/v1/events/resolve", &body).await;
    assert_eq!(status, 200, "{answer}");
    let mut browser = Browser::new(&gw);
    assert_eq!(browser.sign_in(ADMIN_TOKEN).await.status, 303);
    let cookies = browser.cookies.clone();
    let page = crate::support::eventually(std::time::Duration::from_secs(20), "storage measured", || {
        let (cookies, gw) = (cookies.clone(), &gw);
        async move {
            let mut again = Browser::new(gw);
            again.cookies = cookies;
            let page = again.get("/ui/").await;
            page.body.contains("id=\"storage\"").then_some(page)
        }
    })
    .await;
    let (_, api) = gw.admin_get("/v1/storage").await;
    let orders = api["sources"].as_array().unwrap().iter().find(|s| s["source"] == "orders").unwrap().clone();
    let table = &page.body[page.body.find("id=\"storage\"").unwrap()..];
    let row = &table[table.find("<th scope=\"row\">orders</th>").expect("an orders row")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains(&format!("<td class=\"stored-events\">{}</td>", orders["events"])), "{row} vs {orders}");
    assert_eq!(orders["events"], 4);
    assert!(row.contains(&format!("value=\"{}\"", orders["payload_bytes"])), "{row} vs {orders}");
    assert!(orders["payload_bytes"].as_i64().unwrap() > 0);
    assert!(row.contains(&format!("<td class=\"purged\">{}</td>", orders["payloads_purged"])), "{row}");
    let oldest = orders["oldest_unsettled_at"].as_str().unwrap();
    assert!(row.contains(&format!("datetime=\"{oldest}\"")), "{row} vs {orders}");
    assert!(page.body.contains("<rect class=\"resolved\""), "the chart's resolved layer");
    assert!(page.body.contains("3 unknown, 0 failed, 1 resolved"), "the column's label says it");
}

on_both_backends!(
    reconcile_from_the_console_settles_what_the_handler_had,
    the_overview_shows_storage_as_the_api_does_and_resolved_events,
);
