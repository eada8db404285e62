//! Least privilege: tokens scoped to sources (an operator of `orders` cannot read, resolve or
//! replay `billing`), that expire, that admins list and revoke; each change committed with
//! its audit entry, on SQLite and PostgreSQL.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, on_both_backends};

const SINCE: &str = "2000-01-01T00:00:00Z";

async fn gateway(db: &TestDb, receiver: &Receiver) -> Gateway {
    let source = |name: &str| {
        SourceSpec::new(name, "{ kind = \"none\" }", &receiver.url(&format!("/{name}")))
            .with("dedup = { json_pointer = \"/id\" }")
    };
    Gateway::start(&GatewaySpec::new(&db.url, vec![source("orders"), source("billing")])).await
}

async fn ingest(gw: &Gateway, source: &str, id: &str) -> String {
    let (status, answer) = gw.ingest(source, &[], json!({ "id": id }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    answer["event_id"].as_str().unwrap().to_string()
}

async fn create_token(gw: &Gateway, body: Value) -> Value {
    let (status, token) = gw.admin_post("/v1/tokens", &body).await;
    assert_eq!(status, 201, "{token}");
    token
}

fn sources_of(events: &Value) -> Vec<String> {
    let mut seen: Vec<String> =
        events["data"].as_array().unwrap().iter().map(|e| e["source"].as_str().unwrap().to_string()).collect();
    seen.sort();
    seen.dedup();
    seen
}

async fn scoped_tokens_act_only_on_their_sources(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = gateway(&db, &receiver).await;
    let order = ingest(&gw, "orders", "o-1").await;
    ingest(&gw, "orders", "o-2").await;
    let bill = ingest(&gw, "billing", "b-1").await;

    let created = create_token(
        &gw,
        json!({ "name": "orders-oncall", "role": "operator", "sources": ["orders"], "expires_in": "1h" }),
    )
    .await;
    assert_eq!(created["sources"], json!(["orders"]), "{created}");
    assert!(created["expires_at"].is_string(), "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    let t = Some(token.as_str());

    // Reading: only its sources, and another source's event is not there.
    let (status, events) = gw.call("GET", "/v1/events", t, None).await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(sources_of(&events), ["orders"], "{events}");
    assert_eq!(events["data"].as_array().unwrap().len(), 2);
    let (status, refused) = gw.call("GET", "/v1/events?source=billing", t, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("source_forbidden")), "{refused}");
    let (status, _) = gw.call("GET", &format!("/v1/events/{order}"), t, None).await;
    assert_eq!(status, 200);
    let (status, hidden) = gw.call("GET", &format!("/v1/events/{bill}"), t, None).await;
    assert_eq!((status, hidden["error"]["code"].as_str()), (404, Some("event_unknown")), "{hidden}");
    let (status, summary) = gw.call("GET", "/v1/summary", t, None).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["sources"].as_object().unwrap().keys().collect::<Vec<_>>(), ["orders"], "{summary}");
    assert_eq!(summary["totals"]["total"], 2, "{summary}");
    let (status, _) = gw.call("GET", "/v1/summary?source=billing", t, None).await;
    assert_eq!(status, 403);
    // The audit log spans every source.
    let (status, refused) = gw.call("GET", "/v1/audit", t, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("scope_insufficient")), "{refused}");

    // Acting: resolve and replay its own, never another source's.
    let note = json!({ "note": "fixed by hand" });
    let (status, hidden) = gw.call("POST", &format!("/v1/events/{bill}/resolve"), t, Some(&note)).await;
    assert_eq!(status, 404, "{hidden}");
    let untouched = gw.event(&bill).await.unwrap();
    assert_eq!((untouched["resolved"].is_null(), &untouched["outcome"]), (true, &json!("unknown")), "{untouched}");
    let (status, resolved) = gw.call("POST", &format!("/v1/events/{order}/resolve"), t, Some(&note)).await;
    assert_eq!(status, 200, "{resolved}");
    let billing_replay = json!({ "source": "billing", "since": SINCE });
    let (status, refused) = gw.call("POST", "/v1/replays", t, Some(&billing_replay)).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("source_forbidden")), "{refused}");
    let (status, dry) = gw.call("POST", "/v1/replays", t, Some(&json!({ "event_ids": [bill, order] }))).await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["counts"]["unknown"].as_i64().unwrap() + dry["counts"]["confirmed"].as_i64().unwrap(), 1, "{dry}");
    let (status, everywhere) = gw.call("POST", "/v1/replays", t, Some(&json!({ "since": SINCE }))).await;
    assert_eq!(status, 200, "{everywhere}");
    assert_eq!(everywhere["counts"]["unknown"], 1, "only orders' unresolved event: {everywhere}");
    let live = json!({ "source": "orders", "since": SINCE, "dry_run": false, "reason": "scoped run" });
    let (status, own) = gw.call("POST", "/v1/replays", t, Some(&live)).await;
    assert_eq!(status, 202, "{own}");
    let (status, _) = gw.call("GET", &format!("/v1/replays/{}", own["id"].as_str().unwrap()), t, None).await;
    assert_eq!(status, 200);
    // An admin's replay of billing is not there for it, nor one that spans sources.
    for body in [json!({ "source": "billing", "since": SINCE }), json!({ "since": SINCE })] {
        let mut body = body;
        body["dry_run"] = json!(false);
        body["reason"] = json!("admin run");
        let (status, other) = gw.admin_post("/v1/replays", &body).await;
        assert_eq!(status, 202, "{other}");
        let id = other["id"].as_str().unwrap();
        let (status, _) = gw.call("GET", &format!("/v1/replays/{id}"), t, None).await;
        assert_eq!(status, 404, "{body}");
        let (status, _) = gw.call("POST", &format!("/v1/replays/{id}/cancel"), t, None).await;
        assert_eq!(status, 404, "{body}");
    }

    // Token management is for admins with a token for every source.
    let scoped_admin =
        create_token(&gw, json!({ "name": "orders-admin", "role": "admin", "sources": ["orders"] })).await;
    let a = scoped_admin["token"].as_str();
    let (status, refused) = gw.call("POST", "/v1/tokens", a, Some(&json!({ "name": "x", "role": "admin" }))).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (403, Some("scope_insufficient")), "{refused}");
    let (status, _) = gw.call("GET", "/v1/tokens", a, None).await;
    assert_eq!(status, 403);
    let (status, _) = gw.call("GET", "/v1/tokens", t, None).await;
    assert_eq!(status, 403, "an operator lists no tokens");
    for bad in [
        json!({ "name": "y", "role": "viewer", "sources": [] }),
        json!({ "name": "y", "role": "viewer", "sources": ["nope"] }),
        json!({ "name": "y", "role": "viewer", "expires_in": "soon" }),
        json!({ "name": "y", "role": "viewer", "expires_at": "2001-01-01T00:00:00Z" }),
        json!({ "name": "y", "role": "viewer", "expires_in": "1h", "expires_at": "2099-01-01T00:00:00Z" }),
    ] {
        let (status, refused) = gw.admin_post("/v1/tokens", &bad).await;
        assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("invalid_request")), "{bad}: {refused}");
    }

    // Listing shows what a token may do, never the token; revoking ends it at once.
    let (status, listed) = gw.admin_get("/v1/tokens").await;
    assert_eq!(status, 200, "{listed}");
    let listed = listed["data"].as_array().unwrap().clone();
    let entry = listed.iter().find(|e| e["name"] == "orders-oncall").expect("listed");
    assert_eq!(entry["sources"], json!(["orders"]));
    assert_eq!(entry["active"], true);
    assert!(entry.get("token").is_none() && !entry.to_string().contains(&token), "{entry}");
    let id = entry["id"].as_str().unwrap();
    let (status, revoked) = gw.call("DELETE", &format!("/v1/tokens/{id}"), None, None).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, refused) = gw.call("GET", "/v1/events", t, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (401, Some("token_revoked")), "{refused}");
    let (status, again) = gw.call("DELETE", &format!("/v1/tokens/{id}"), None, None).await;
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("token_already_revoked")), "{again}");
    let (status, _) = gw.call("DELETE", "/v1/tokens/tok_nope", None, None).await;
    assert_eq!(status, 404);

    let audit = gw.audit().await;
    let created_entry = audit.iter().find(|e| e["action"] == "token.created" && e["subject"] == "orders-oncall");
    let created_entry = created_entry.expect("token.created audited");
    assert_eq!(created_entry["details"]["sources"], json!(["orders"]), "{created_entry}");
    assert!(created_entry["details"]["expires_at"].is_string(), "{created_entry}");
    let revoked_entry = audit.iter().find(|e| e["action"] == "token.revoked").expect("token.revoked audited");
    assert_eq!(revoked_entry["subject"], "orders-oncall");
    assert_eq!(revoked_entry["details"]["id"], id);
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = gateway(&db, &receiver).await;
    let created = create_token(&gw, json!({ "name": "brief", "role": "viewer", "expires_in": "1s" })).await;
    let t = created["token"].as_str();
    let (status, _) = gw.call("GET", "/v1/events", t, None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (status, refused) = gw.call("GET", "/v1/events", t, None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (401, Some("token_expired")), "{refused}");
    let (_, listed) = gw.admin_get("/v1/tokens").await;
    assert_eq!(listed["data"][0]["active"], false, "{listed}");
}

/// SQL that makes every audit append fail, and undoes it, per backend.
fn refuse_audit(kind: Db) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        Db::Sqlite => (
            &["CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'refused'); END"],
            &["DROP TRIGGER refuse_audit"],
        ),
        Db::Postgres => (
            &[
                "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused'; END; $$ LANGUAGE plpgsql",
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
            ],
            &["DROP TRIGGER refuse_audit ON audit_log"],
        ),
    }
}

/// A token change whose audit entry cannot be written does not happen: creating answers 503
/// and leaves no token; revoking answers 503 and the token keeps working.
async fn token_changes_commit_with_their_audit_entry_or_not_at_all(kind: Db) {
    let db = TestDb::new(kind).await;
    let receiver = Receiver::start().await;
    let gw = gateway(&db, &receiver).await;
    let kept = create_token(&gw, json!({ "name": "kept", "role": "viewer" })).await;
    let (refuse, allow) = refuse_audit(kind);
    db.execute(refuse).await;

    let (status, answer) = gw.admin_post("/v1/tokens", &json!({ "name": "ghost", "role": "admin" })).await;
    assert_eq!(status, 503, "{answer}");
    let (_, listed) = gw.admin_get("/v1/tokens").await;
    assert!(!listed.to_string().contains("ghost"), "a token without its audit entry: {listed}");
    let id = kept["id"].as_str().unwrap();
    let (status, answer) = gw.call("DELETE", &format!("/v1/tokens/{id}"), None, None).await;
    assert_eq!(status, 503, "{answer}");
    let (status, _) = gw.call("GET", "/v1/events", kept["token"].as_str(), None).await;
    assert_eq!(status, 200, "revoked without its audit entry");

    db.execute(allow).await;
    create_token(&gw, json!({ "name": "ghost", "role": "admin" })).await;
    let (status, _) = gw.call("DELETE", &format!("/v1/tokens/{id}"), None, None).await;
    assert_eq!(status, 200);
    let audit = gw.audit().await;
    let actions: Vec<(&str, &str)> =
        audit.iter().map(|e| (e["action"].as_str().unwrap(), e["subject"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        actions,
        [("token.created", "kept"), ("token.created", "ghost"), ("token.revoked", "kept")],
        "one entry per change that happened"
    );
}

/// `hookwarden tokens create --source … --expires …`, `tokens list`, `tokens revoke`.
#[tokio::test]
async fn admins_create_list_and_revoke_scoped_tokens_from_the_command_line() {
    use crate::cli::{hookwarden, stdout};
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let gw = gateway(&db, &receiver).await;
    let made = hookwarden(
        &gw,
        &[
            "tokens",
            "create",
            "--name",
            "night",
            "--role",
            "operator",
            "--source",
            "orders",
            "--expires",
            "12h",
            "--json",
        ],
    )
    .await;
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let made: Value = serde_json::from_slice(&made.stdout).unwrap();
    assert_eq!(made["sources"], json!(["orders"]), "{made}");
    let token = made["token"].as_str().unwrap();
    let (status, _) = gw.call("GET", "/v1/events?source=billing", Some(token), None).await;
    assert_eq!(status, 403);

    let listed = hookwarden(&gw, &["tokens", "list"]).await;
    assert!(listed.status.success());
    let table = stdout(&listed);
    let id = made["id"].as_str().unwrap();
    let row = table.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("night") && row.contains("orders") && row.ends_with("active"), "{row}");

    let bad = hookwarden(&gw, &["tokens", "create", "--name", "x", "--expires", "someday"]).await;
    assert_eq!(bad.status.code(), Some(2), "a usage error: {}", String::from_utf8_lossy(&bad.stderr));
    let revoked = hookwarden(&gw, &["tokens", "revoke", id]).await;
    assert!(revoked.status.success(), "{}", String::from_utf8_lossy(&revoked.stderr));
    assert!(stdout(&revoked).starts_with(&format!("revoked token {id} (night)")), "{}", stdout(&revoked));
    let again = hookwarden(&gw, &["tokens", "revoke", id]).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("token_already_revoked"));
    let listed = stdout(&hookwarden(&gw, &["tokens", "list"]).await);
    assert!(listed.lines().any(|l| l.starts_with(id) && l.contains("revoked")), "{listed}");
}

/// `server.admin_listen`: ingest, receipts and the probes face providers on one address; the
/// admin API (and metrics) answer only on the other, and neither serves the other's routes.
#[tokio::test]
async fn the_admin_api_listens_apart_from_ingest() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let source = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&crate::support::sign::receipt_keys_line(&[(&crate::support::sign::receipt_key("k-1", 1), false)]));
    let mut spec = GatewaySpec::new(&db.url, vec![source]);
    spec.admin_listen = true;
    let gw = Gateway::start(&spec).await;
    let admin = gw.admin_addr.expect("an admin address");
    assert_ne!(admin, gw.addr);
    let http = crate::support::client();
    let public = |path: &str| gw.url(path);
    let private = |path: &str| gw.admin_url(path);

    let id = ingest(&gw, "orders", "o-1").await;
    let key = crate::support::sign::receipt_key("k-1", 1);
    let signed = key.sign(&receipts_sdk::receipt::Receipt::applied(&id), crate::support::sign::now_secs());
    let (status, answer) = gw.post_receipt(&signed).await;
    assert_eq!(status, 200, "receipts are taken on the public address: {answer}");
    for path in ["/healthz", "/readyz"] {
        assert_eq!(http.get(public(path)).send().await.unwrap().status(), 200, "{path} public");
        assert_eq!(http.get(private(path)).send().await.unwrap().status(), 200, "{path} admin");
    }
    // The public address has no admin API, whatever the token.
    for path in
        ["/v1/events", "/v1/summary", "/v1/storage", "/v1/audit", "/v1/tokens", "/metrics", &format!("/v1/events/{id}")]
    {
        let response = http.get(public(path)).bearer_auth(crate::support::ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path} answered on the public address");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(body["error"]["code"], "route_unknown", "{path}: {body}");
    }
    let replay = json!({ "source": "orders", "since": SINCE });
    let response = http.post(public("/v1/replays")).bearer_auth(crate::support::ADMIN_TOKEN).json(&replay).send().await;
    assert_eq!(response.unwrap().status(), 404);
    // The admin address has the admin API and no ingest.
    let (status, events) = gw.admin_get("/v1/events").await;
    assert_eq!(status, 200, "{events}");
    assert_eq!(events["data"][0]["id"], id.as_str());
    assert_eq!(events["data"][0]["outcome"], "confirmed");
    assert_eq!(http.get(private("/metrics")).send().await.unwrap().status(), 200);
    let response = http.post(private("/ingest/orders")).body("{\"id\":\"o-2\"}").send().await.unwrap();
    assert_eq!(response.status(), 404, "ingest answered on the admin address");
    assert_eq!(http.post(private("/v1/receipts")).body("{}").send().await.unwrap().status(), 404);
}

on_both_backends!(scoped_tokens_act_only_on_their_sources, token_changes_commit_with_their_audit_entry_or_not_at_all);
