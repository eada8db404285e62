//! The OpenAPI document (`GET /openapi.json`) against a running gateway: served without a
//! token on every listener, valid OpenAPI 3.1 (openapi-spec-validator), and schemathesis run
//! from it, with an admin token, finds no server error (5xx) and no answer that breaks it
//! (status, content type, headers, body schema). Both Python tools come from PyPI (`.ci/run`
//! installs them); `tests/openapi/schemathesis.toml` bounds the run.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, sign};

#[tokio::test]
async fn the_document_is_served_without_a_token_on_every_listener() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let orders = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"));
    let mut spec = GatewaySpec::new(&db.url, vec![orders]);
    spec.admin_listen = true;
    let gw = Gateway::start(&spec).await;
    let client = crate::support::client();
    let mut served = Vec::new();
    for url in [gw.url("/openapi.json"), gw.admin_url("/openapi.json")] {
        let response = client.get(&url).send().await.expect("request");
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(response.headers()["content-type"], "application/json");
        served.push(response.json::<Value>().await.expect("json"));
    }
    assert_eq!(served[0], served[1], "both listeners serve the whole API's document");
    let doc = &served[0];
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["paths"]["/v1/events"]["get"]["x-required-role"], "viewer");
    assert_eq!(doc["paths"]["/v1/tokens"]["post"]["security"], json!([{ "bearer": [] }]));
    assert!(doc["paths"]["/ui/"].is_null(), "the console's HTML pages are not in it");
    // The committed copy (docs/openapi.json, rendered as docs/api.md) is the served one.
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("docs/openapi.json")).expect("docs/openapi.json"))
            .expect("json");
    assert_eq!(
        &committed, doc,
        "docs/openapi.json is stale: HOOKWARDEN_BLESS=1 cargo test -p hookwarden --lib http::openapi"
    );
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the gateway package sits in the workspace")
}

fn python(args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let output = Command::new("python3")
        .args(args)
        .current_dir(root().join("tests/openapi"))
        .envs(envs.iter().copied())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let key = sign::receipt_key("orders-1", 1);
    let orders = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&sign::receipt_keys_line(&[(&key, false)]))
        .with(&format!("status_url = \"{}\"", receiver.url("/status")))
        .ladder(&["1s"], 3);
    let github = SourceSpec::new("github", "{ kind = \"github\", secret = \"gh-secret\" }", &receiver.url("/github"));
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![orders, github])).await;

    // Something to list and look at: events (one confirmed by a receipt), a replay, a token.
    let mut ids = Vec::new();
    for n in 0..4 {
        let (status, answer) = gw.ingest("orders", &[], json!({ "id": format!("o-{n}") }).to_string().as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["event_id"].as_str().expect("id").to_string());
    }
    eventually(std::time::Duration::from_secs(20), "the events delivered", || async {
        let all = gw.all_events().await;
        (all.iter().all(|e| e["delivery_state"] == "delivered")).then_some(())
    })
    .await;
    let signed = key.sign(&receipts_sdk::receipt::Receipt::applied(&ids[0]), sign::now_secs());
    assert_eq!(gw.post_receipt(&signed).await.0, 200);
    let since = hookwarden::http::format_ms(sign::now_ms() - 3_600_000);
    let (status, answer) = gw
        .admin_post("/v1/replays", &json!({ "source": "orders", "since": since, "dry_run": false, "reason": "seed" }))
        .await;
    assert_eq!(status, 202, "{answer}");
    let replay = answer["id"].as_str().expect("replay id").to_string();
    let (status, token) = gw.admin_post("/v1/tokens", &json!({ "name": "seed-viewer", "role": "viewer" })).await;
    assert_eq!(status, 201, "{token}");
    let token_id = token["id"].as_str().expect("token id").to_string();

    let doc_url = gw.url("/openapi.json");
    let served = crate::support::client().get(&doc_url).send().await.expect("request").text().await.expect("text");
    let dir = tempfile::tempdir().expect("tempdir");
    let doc_file = dir.path().join("openapi.json");
    std::fs::write(&doc_file, served).expect("write");
    let (valid, text) = python(&["-m", "openapi_spec_validator", doc_file.to_str().expect("utf-8")], &[]);
    assert!(valid, "the served document is not valid OpenAPI:\n{text}");

    let (passed, text) = python(
        &["-m", "schemathesis.cli", "run", &doc_url, "--no-color"],
        &[
            ("HOOKWARDEN_TOKEN", ADMIN_TOKEN),
            ("HOOKWARDEN_EVENT", &ids[1]),
            ("HOOKWARDEN_REPLAY", &replay),
            ("HOOKWARDEN_TOKEN_ID", &token_id),
        ],
    );
    println!("---- schemathesis ----\n{text}");
    assert!(passed, "schemathesis found server errors or answers outside the document (its report is above)");
    assert!(!gw.log().contains("panicked"), "the gateway panicked under schemathesis:\n{}", gw.log());
}

/// Found while fuzzing from the document: axum's own `Path` answered a segment that is not
/// UTF-8 once decoded with a text/plain 400, and the gap view wrote a bucket starting before
/// year 1 as `"start": ""`. Both now answer the API's JSON error, as the document says.
#[tokio::test]
async fn answers_outside_the_document_found_by_fuzzing_stay_fixed() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let orders = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"));
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![orders])).await;
    let client = crate::support::client();
    for (method, path) in [
        ("GET", "/v1/events/%FF"),
        ("POST", "/v1/events/%FF/resolve"),
        ("GET", "/v1/replays/%FF"),
        ("POST", "/v1/replays/%FF/cancel"),
        ("POST", "/v1/replays/%FF/pause"),
        ("POST", "/v1/replays/%FF/resume"),
        ("GET", "/v1/replays/%FF/events"),
        ("DELETE", "/v1/tokens/%C3%28"),
        ("POST", "/ingest/%FF"),
    ] {
        let response = client
            .request(method.parse().expect("method"), gw.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "note": "n" }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400, "{method} {path}");
        assert_eq!(response.headers()["content-type"], "application/json", "{method} {path}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "invalid_path", "{method} {path}: {body}");
    }

    let (status, body) = gw
        .call(
            "GET",
            "/v1/summary?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59Z&bucket=1000000000h",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
    // The same window with a bucket that fits starts every bucket at a real time.
    let (status, body) = gw
        .call(
            "GET",
            "/v1/summary?since=1000-01-01T00:00:00Z&until=3000-01-01T00:00:00Z&bucket=100000h",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["buckets"].as_array().expect("buckets").iter().all(|b| b["start"].as_str().is_some_and(|s| !s.is_empty()))
    );
}
