//! A corpus of malformed requests over every route: bad JSON, wrong types, huge values, bad
//! query strings, methods a route does not take, bad `Authorization` headers, odd paths. The
//! gateway answers each with a 4xx and an error code, never a 5xx, and stays up.

use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb};

/// Every route of the API, with a path that names something real where it takes an id.
fn routes(event_id: &str, replay_id: &str, token_id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("POST", "/ingest/orders".into()),
        ("POST", "/ingest/nope".into()),
        ("POST", "/v1/receipts".into()),
        ("GET", "/v1/events".into()),
        ("GET", format!("/v1/events/{event_id}")),
        ("POST", format!("/v1/events/{event_id}/resolve")),
        ("POST", "/v1/events/resolve".into()),
        ("GET", "/v1/summary".into()),
        ("GET", "/v1/storage".into()),
        ("POST", "/v1/replays".into()),
        ("POST", "/v1/reconcile".into()),
        ("GET", format!("/v1/replays/{replay_id}")),
        ("POST", format!("/v1/replays/{replay_id}/cancel")),
        ("GET", "/v1/replays".into()),
        ("POST", format!("/v1/replays/{replay_id}/pause")),
        ("POST", format!("/v1/replays/{replay_id}/resume")),
        ("GET", "/v1/audit".into()),
        ("POST", "/v1/tokens".into()),
        ("GET", "/v1/tokens".into()),
        ("DELETE", format!("/v1/tokens/{token_id}")),
        ("GET", "/healthz".into()),
        ("GET", "/readyz".into()),
        ("GET", "/metrics".into()),
    ]
}

/// Query strings that are wrong in every way a query can be.
const QUERIES: [&str; 16] = [
    "?limit=abc",
    "?limit=-1",
    "?limit=99999999999999999999999",
    "?limit=0",
    "?since=yesterday&until=2026-13-45T99:99:99Z",
    "?since=-99999-01-01T00:00:00Z",
    "?since=9999-12-31T23:59:59Z&until=0001-01-01T00:00:00Z",
    "?outcome=maybe",
    "?filter=outcome%20%3D%3D%20x%20OR",
    "?filter=%FF%FE",
    "?cursor=evt_%00",
    "?bucket=1ns",
    "?bucket=9999999999999y&since=0001-01-01T00:00:00Z",
    "?after=-5&after=abc",
    "?unknown=1&source=%E2%80%AE",
    "?source[]=x&limit[]=1",
];

/// Bodies that are wrong in every way a JSON body can be.
fn bodies() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        "",
        "{",
        "null",
        "[]",
        "\"text\"",
        "{\"note\": 5, \"outcome\": []}",
        "{\"name\": \"\", \"role\": \"root\"}",
        "{\"name\": \"x\", \"role\": \"viewer\", \"sources\": \"orders\", \"expires_in\": \"forever\"}",
        "{\"name\": \"x\", \"role\": \"viewer\", \"sources\": [], \"expires_at\": \"9999-99-99\"}",
        "{\"source\": 5, \"since\": true}",
        "{\"source\": \"orders\", \"since\": \"2000-01-01T00:00:00Z\", \"rate\": 1e308, \"limit\": -5}",
        "{\"source\": \"orders\", \"since\": \"2000-01-01T00:00:00Z\", \"rate\": -1, \"limit\": 1e30}",
        "{\"source\": \"orders\", \"since\": \"2000-01-01T00:00:00Z\", \"filter\": \"(((((\", \"to\": \"ftp://x\"}",
        "{\"event_id\": \"evt_x\", \"status\": \"applied\"}",
        "{\"a\": {\"b\": {\"c\": {\"d\": {\"e\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}}}}",
        "\u{0}\u{1}\u{2}",
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .collect();
    out.push(vec![0xff, 0xfe, 0x00, 0x7b]);
    out.push(format!("{{\"note\": \"{}\"}}", "n".repeat(3 * 1024 * 1024)).into_bytes());
    out.push(
        json!({ "source": "orders", "event_ids": (0..20_000).map(|i| format!("evt_{i}")).collect::<Vec<_>>() })
            .to_string()
            .into_bytes(),
    );
    out.push(format!("[{}]", "1,".repeat(200_000) + "1").into_bytes());
    out
}

/// `Authorization` values that are not a valid bearer token.
fn bad_auth() -> Vec<Option<Vec<u8>>> {
    vec![
        None,
        Some(b"Bearer".to_vec()),
        Some(b"Bearer ".to_vec()),
        Some(b"bearer test-admin-token".to_vec()),
        Some(b"Basic dGVzdDp0ZXN0".to_vec()),
        Some(format!("Bearer {}", "a".repeat(16 * 1024)).into_bytes()),
        Some(b"Bearer hwt_\xff\xfe".to_vec()),
        Some(b"Bearer hwt_0000000000000000000000000000000000000000000000000000000000000000".to_vec()),
        Some(format!("Bearer {ADMIN_TOKEN} extra").into_bytes()),
    ]
}

struct Outcome {
    what: String,
    status: u16,
    /// `None` when only the head was sent again (see [`head_only`]).
    body: Option<Value>,
}

async fn send(
    http: &reqwest::Client,
    gw: &Gateway,
    method: &str,
    path: &str,
    auth: Option<&[u8]>,
    body: Option<&[u8]>,
) -> Outcome {
    let what = format!(
        "{method} {} auth={:?} body={:?}",
        &path[..path.len().min(120)],
        auth.map(|a| String::from_utf8_lossy(&a[..a.len().min(40)]).into_owned()),
        body.map(|b| String::from_utf8_lossy(&b[..b.len().min(60)]).into_owned())
    );
    let mut request = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), gw.url(path));
    if let Some(auth) = auth {
        request = request.header("authorization", reqwest::header::HeaderValue::from_bytes(auth).unwrap());
    }
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_vec());
    }
    let response = match request.send().await {
        Ok(response) => response,
        // A body too large may be refused before it is read, and the connection closed while
        // the client still writes: ask again with the head alone.
        Err(_) if body.is_some_and(|b| b.len() > 1024 * 1024) => {
            let status = head_only(gw, method, path, auth, body.unwrap().len()).await;
            return Outcome { what, status, body: None };
        }
        Err(e) => panic!("{what}: the gateway dropped the request: {e}"),
    };
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Outcome { what, status, body: Some(body) }
}

/// Sends a request's head declaring a body of `length` bytes, and no body: the status the
/// gateway answers before reading it.
async fn head_only(gw: &Gateway, method: &str, path: &str, auth: Option<&[u8]>, length: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(gw.addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n"
    )
    .into_bytes();
    if let Some(auth) = auth {
        head.extend_from_slice(b"authorization: ");
        head.extend_from_slice(auth);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    socket.write_all(&head).await.expect("write the head");
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer to a head declaring {length} bytes"))
        .expect("read the status line");
    let line = String::from_utf8_lossy(&answer[..n]).into_owned();
    line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{method} {path}: {line:?}"))
}

/// A 4xx with an error code (a few come from the HTTP layer itself, before any route: those
/// have no JSON body), and never a 5xx.
fn check(outcome: &Outcome) {
    assert!(outcome.status < 500, "{}: {} {:?}", outcome.what, outcome.status, outcome.body);
    if let Some(body) = outcome.body.as_ref().filter(|_| outcome.status >= 400 && ![413, 431].contains(&outcome.status))
    {
        assert!(
            body["error"]["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{}: {} without an error code: {body}",
            outcome.what,
            outcome.status,
        );
    }
}

#[tokio::test]
async fn malformed_requests_over_every_route_get_4xx_never_5xx() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let source =
        SourceSpec::new("orders", "{ kind = \"hmac\", header = \"x-signature\", secret = \"k\" }", &receiver.url("/o"));
    let gw = Gateway::start(&GatewaySpec::new(&db.url, vec![source])).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let routes =
        routes("evt_01KDVDNA00M2GT58X4MPKAFA59", "rpl_01KDVDNA00M2GT58X4MPKAFA59", "tok_01KDVDNA00M2GT58X4MPKAFA59");
    let admin = format!("Bearer {ADMIN_TOKEN}").into_bytes();
    let mut sent = 0;
    for (method, path) in &routes {
        // Wrong bodies, as an admin (so the body is what gets looked at).
        for body in bodies() {
            check(&send(&http, &gw, method, path, Some(&admin), Some(&body)).await);
            sent += 1;
        }
        // Wrong queries.
        for query in QUERIES {
            check(&send(&http, &gw, method, &format!("{path}{query}"), Some(&admin), None).await);
            sent += 1;
        }
        // Wrong credentials.
        for auth in bad_auth() {
            let outcome = send(&http, &gw, method, path, auth.as_deref(), Some(b"{}")).await;
            check(&outcome);
            let open = path.starts_with("/ingest") || path.starts_with("/v1/receipts") || !path.starts_with("/v1");
            if !open {
                assert_eq!(outcome.status, 401, "{}: {:?}", outcome.what, outcome.body);
            }
            sent += 1;
        }
        // Methods the route does not take.
        for other in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            if other != *method {
                check(&send(&http, &gw, other, path, Some(&admin), Some(b"{}")).await);
                sent += 1;
            }
        }
    }
    // Paths no route has, and ids no entity has.
    for path in [
        "/",
        "/v1",
        "/v1/events/",
        "/v1/events/%00",
        "/v1/events/..%2f..%2fetc%2fpasswd",
        &format!("/v1/events/evt_{}", "9".repeat(5000)),
        "/v1/replays/rpl_x/cancel/extra",
        "/ingest/",
        "/ingest/%E2%80%AE",
        &format!("/ingest/{}", "s".repeat(5000)),
        "/v1/tokens/",
    ] {
        check(&send(&http, &gw, "GET", path, Some(&admin), None).await);
        check(&send(&http, &gw, "POST", path, Some(&admin), Some(b"{}")).await);
        sent += 2;
    }
    assert!(sent > 500, "the corpus is too small: {sent}");
    let (status, _) = gw.admin_get("/readyz").await;
    assert_eq!(status, 200, "the gateway is not ready after the corpus");
}
