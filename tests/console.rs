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
