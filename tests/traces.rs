//! Traces: each event's life is one trace in the team's tracing backend. A collector in the
//! test process takes the gateway's OTLP/HTTP export (protobuf, decoded with
//! `opentelemetry-proto`), and the test receiver stands in for the handler, so what is
//! checked is what a backend would get: the spans, how they nest, and that the `traceparent`
//! a handler receives (and posts its receipt with) joins the same trace.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use receipts_sdk::receipt::Receipt;
use serde_json::json;

use crate::support::{Db, Gateway, GatewaySpec, Receiver, SourceSpec, TestDb, eventually, on_both_backends, sign};

/// One exported span, as a backend would store it.
#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root.
    parent: String,
    attributes: HashMap<String, String>,
    service: String,
}

impl Span {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map(String::as_str).unwrap_or("")
    }
}

/// An OTLP/HTTP trace collector on loopback: every span posted to `/v1/traces`.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<Mutex<usize>>,
}

impl Collector {
    async fn start() -> (Self, String) {
        let collector = Self::default();
        let app = Router::new().route("/v1/traces", post(collect)).with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (collector, url)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    fn posts(&self) -> usize {
        *self.posts.lock().unwrap()
    }

    fn in_trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

async fn collect(State(collector): State<Collector>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    *collector.posts.lock().unwrap() += 1;
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                collector.spans.lock().unwrap().push(Span {
                    name: span.name.clone(),
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent: hex::encode(&span.parent_span_id),
                    attributes: span.attributes.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect(),
                    service: service.clone(),
                });
            }
        }
    }
    ""
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// The trace id an event's spans carry: its ULID as 32 hex digits.
fn trace_of(event_id: &str) -> String {
    let ulid = ulid::Ulid::from_string(event_id.strip_prefix("evt_").unwrap()).unwrap();
    format!("{:032x}", ulid.0)
}

/// `(trace id, span id)` of a `traceparent` value, checked for the W3C shape.
fn parse_traceparent(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value:?}");
    assert_eq!(parts[0], "00", "traceparent {value:?}");
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "traceparent {value:?}");
    assert_eq!(parts[3], "01", "sampled: {value:?}");
    (parts[1].to_string(), parts[2].to_string())
}

fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one `{name}` span in {spans:#?}");
    found[0]
}

fn spec(db: &TestDb, receiver: &Receiver, collector: Option<&str>) -> GatewaySpec {
    let orders = SourceSpec::new("orders", "{ kind = \"none\" }", &receiver.url("/orders"))
        .with("dedup = { json_pointer = \"/id\" }")
        .with(&sign::receipt_keys_line(&[(&sign::receipt_key("orders-1", 1), false)]));
    let mut spec = GatewaySpec::new(&db.url, vec![orders]);
    if let Some(url) = collector {
        spec.telemetry = format!("otlp_endpoint = \"{url}\"\nservice_name = \"gw-under-test\"");
    }
    spec
}

/// Ingest → commit → forward → receipt, one trace: the handler gets the forward's
/// `traceparent`, posts its receipt with it, and the receipt's span lands under the forward.
async fn one_event_is_one_trace(db: Db) {
    let db = TestDb::new(db).await;
    let receiver = Receiver::start().await;
    let (collector, endpoint) = Collector::start().await;
    let mut gw = Gateway::start(&spec(&db, &receiver, Some(&endpoint))).await;

    let (status, answer) = gw.ingest("orders", &[], json!({ "id": "o-1" }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap().to_string();
    let forwarded = eventually(Duration::from_secs(10), "the forward", || {
        let receiver = &receiver;
        let event_id = event_id.clone();
        async move { receiver.for_event(&event_id).into_iter().next() }
    })
    .await;
    let traceparent = forwarded.header("traceparent").to_string();
    let (handler_trace, forward_span) = parse_traceparent(&traceparent);
    assert_eq!(handler_trace, trace_of(&event_id), "the handler's trace is the event's");

    let signed = sign::receipt_key("orders-1", 1).sign(&Receipt::applied(&event_id), sign::now_secs());
    let (status, answer) = gw.post_receipt_with(&signed, &[("traceparent", &traceparent)]).await;
    assert_eq!(status, 200, "{answer}");

    // A graceful stop flushes what is still queued for export.
    assert!(gw.terminate(Duration::from_secs(15)).await.is_some_and(|s| s.success()), "{}", gw.log());
    let spans = collector.in_trace(&trace_of(&event_id));

    let root = one(&spans, "event");
    assert_eq!(root.parent, "", "`event` is the trace's root: {root:?}");
    assert_eq!((root.attr("event_id"), root.attr("source"), root.attr("result")), (&*event_id, "orders", "stored"));
    assert_eq!(root.service, "gw-under-test");
    let ingest = one(&spans, "ingest");
    assert_eq!(ingest.parent, root.span_id, "ingest under the event: {ingest:?}");
    assert_eq!((ingest.attr("event_id"), ingest.attr("source")), (&*event_id, "orders"));
    let commit = one(&spans, "commit");
    assert_eq!(commit.parent, ingest.span_id, "the commit inside the ingest");
    let deliver = one(&spans, "deliver");
    assert_eq!(deliver.parent, root.span_id, "the delivery under the event, though it ran apart from the ingest");
    let forward = one(&spans, "forward");
    assert_eq!(forward.parent, deliver.span_id);
    assert_eq!(forward.span_id, forward_span, "the handler's traceparent names the forward");
    assert_eq!(
        (forward.attr("event_id"), forward.attr("source"), forward.attr("attempt")),
        (&*event_id, "orders", "1")
    );
    assert_eq!(forward.attr("http.response.status_code"), "200");
    let receipt = one(&spans, "receipt");
    assert_eq!(receipt.parent, forward_span, "the receipt under the forward its traceparent named");
    assert_eq!((receipt.attr("event_id"), receipt.attr("outcome")), (&*event_id, "confirmed"));
}

/// A replay's send is its own span under the event, with its own `traceparent`; a receipt
/// posted without one still joins the event's trace.
async fn replays_and_receipts_without_traceparent_join_the_events_trace(db: Db) {
    let db = TestDb::new(db).await;
    let receiver = Receiver::start().await;
    let (collector, endpoint) = Collector::start().await;
    let mut gw = Gateway::start(&spec(&db, &receiver, Some(&endpoint))).await;
    let (status, answer) = gw.ingest("orders", &[], json!({ "id": "o-2" }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap().to_string();
    eventually(Duration::from_secs(10), "the first forward", || {
        let n = receiver.for_event(&event_id).len();
        async move { (n == 1).then_some(()) }
    })
    .await;

    crate::replay::live(&gw, "traces", 50, 10).await;
    let replayed = eventually(Duration::from_secs(15), "the replay's send", || {
        let sends = receiver.for_event(&event_id);
        async move { sends.into_iter().find(|r| r.replay_id().is_some()) }
    })
    .await;
    let (trace, replay_span) = parse_traceparent(replayed.header("traceparent"));
    assert_eq!(trace, trace_of(&event_id));
    let first = receiver.for_event(&event_id).into_iter().find(|r| r.replay_id().is_none()).unwrap();
    assert_ne!(parse_traceparent(first.header("traceparent")).1, replay_span, "each send has its own span");

    let signed = sign::receipt_key("orders-1", 1).sign(&Receipt::applied(&event_id), sign::now_secs());
    let (status, answer) = gw.post_receipt(&signed).await;
    assert_eq!(status, 200, "{answer}");
    assert!(gw.terminate(Duration::from_secs(15)).await.is_some_and(|s| s.success()), "{}", gw.log());

    let spans = collector.in_trace(&trace_of(&event_id));
    let root = one(&spans, "event");
    let item = one(&spans, "replay.item");
    assert_eq!(item.parent, root.span_id, "the replay item under the event");
    assert_eq!((item.attr("event_id"), item.attr("source")), (&*event_id, "orders"));
    assert_eq!(item.attr("replay_id"), replayed.replay_id().unwrap());
    let forwards: Vec<&Span> = spans.iter().filter(|s| s.name == "forward").collect();
    assert_eq!(forwards.len(), 2, "{spans:#?}");
    let replay_forward = forwards.iter().find(|s| s.span_id == replay_span).expect("the replay's forward span");
    assert_eq!(replay_forward.parent, item.span_id);
    assert_eq!(replay_forward.attr("replay_id"), item.attr("replay_id"));
    let receipt = one(&spans, "receipt");
    assert_eq!(receipt.parent, root.span_id, "a receipt without traceparent hangs under its event");
}

/// Without `otlp_endpoint` nothing is exported, and forwards still carry a `traceparent`
/// in the event's trace, so a handler's own traces group by event.
async fn without_an_endpoint_nothing_is_exported(db: Db) {
    let db = TestDb::new(db).await;
    let receiver = Receiver::start().await;
    let (collector, _endpoint) = Collector::start().await;
    let mut gw = Gateway::start(&spec(&db, &receiver, None)).await;
    let (status, answer) = gw.ingest("orders", &[], json!({ "id": "o-3" }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap().to_string();
    let forwarded = eventually(Duration::from_secs(10), "the forward", || {
        let first = receiver.for_event(&event_id).into_iter().next();
        async move { first }
    })
    .await;
    assert_eq!(parse_traceparent(forwarded.header("traceparent")).0, trace_of(&event_id));
    assert!(gw.terminate(Duration::from_secs(15)).await.is_some_and(|s| s.success()), "{}", gw.log());
    assert_eq!(collector.posts(), 0);
}

on_both_backends!(
    one_event_is_one_trace,
    replays_and_receipts_without_traceparent_join_the_events_trace,
    without_an_endpoint_nothing_is_exported
);

/// `--log-format json` (here through its variable): one JSON object per line.
#[tokio::test]
async fn json_logs_name_the_event() {
    let db = TestDb::new(Db::Sqlite).await;
    let receiver = Receiver::start().await;
    let mut spec = spec(&db, &receiver, None);
    spec.env.push(("HOOKWARDEN_LOG_FORMAT".into(), "json".into()));
    let mut gw = Gateway::start(&spec).await;
    let (status, answer) = gw.ingest("orders", &[], json!({ "id": "o-4" }).to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(gw.terminate(Duration::from_secs(15)).await.is_some_and(|s| s.success()), "{}", gw.log());
    let log = gw.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "gateway starting"), "{log}");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "gateway stopped"), "{log}");
}
