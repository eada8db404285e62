//! The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` (no token: it
//! describes routes, not data). It is built from the same `routes!` lists as the router
//! (utoipa-axum), so a route cannot be served without its entry here; `tests` below fail when
//! an entry lacks a summary, a description or its role, and when a route is added to an axum
//! router outside those lists.
//!
//! The handlers build their answers with `json!`; the types here describe those bodies for
//! the document only (they are never built). schemathesis (`.ci/run`, tests/openapi.rs)
//! checks the gateway's real answers against them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa::openapi::OpenApi;

use crate::domain::{AttemptKind, DeliveryState, Outcome};
use crate::probe::reconcile::ReconcileReport;
use crate::store::ReplayCounts;

/// The extension naming the least role a route's bearer token needs (`none`: no token).
pub const ROLE_EXTENSION: &str = "x-required-role";

/// The document's frame: what the routes' entries are added to.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "hookwarden",
        description = "A receipt-aware webhook gateway. Providers post to `/ingest/{source}`; \
            handlers post signed receipts to `/v1/receipts`; operators use the `/v1` API with a \
            bearer token (`Authorization: Bearer <token>`). Each operation names the least role \
            its token needs in `x-required-role` (`viewer` < `operator` < `admin`, or `none`). \
            Every error is `{\"error\": {\"code\", \"message\"}}` with a stable `code`. The \
            console (`/ui/`) is HTML and not part of this document.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody)),
    tags(
        (name = "ingest", description = "Providers' webhooks in"),
        (name = "receipts", description = "Handlers' signed statements of what they applied"),
        (name = "events", description = "Stored events, their receipts and attempts"),
        (name = "replays", description = "Guardrailed resends of the events a handler missed"),
        (name = "reconcile", description = "Asking a handler what it applied"),
        (name = "summary", description = "The gap view and what is stored"),
        (name = "audit", description = "The hash-chained audit log"),
        (name = "tokens", description = "API tokens"),
        (name = "health", description = "Probes, metrics and this document"),
    )
)]
pub struct Frame;

/// The document with what every route has in common added from its role: the bearer
/// scheme, and the 401, 403 and 503 answers every route with a token can give.
pub fn finish(mut doc: OpenApi) -> Value {
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut doc = serde_json::to_value(doc).expect("the document serialises");
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token: the bootstrap admin token, or one made with `POST /v1/tokens` \
                (`hookwarden tokens create`). Its role and source scope decide what it may do.",
        }
    });
    let error = |text: &str| {
        json!({
            "description": text,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
        })
    };
    let paths = doc["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        for (method, operation) in item.as_object_mut().expect("path item").iter_mut() {
            // Unique ids from the method and path (the handlers' names repeat: `list`, `create`).
            let words = path.split(['/', '{', '}', '.', '-']).filter(|w| !w.is_empty());
            operation["operationId"] =
                json!(std::iter::once(method.as_str()).chain(words).collect::<Vec<_>>().join("_"));
            let in_path = operation["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "path"));
            if in_path {
                let bad_segment = "A path segment is not UTF-8 once decoded (`invalid_path`).";
                let responses = operation["responses"].as_object_mut().expect("responses");
                match responses.get_mut("400") {
                    Some(found) => {
                        let text = format!("{} {bad_segment}", found["description"].as_str().unwrap_or_default());
                        found["description"] = json!(text);
                    }
                    None => {
                        responses.insert("400".into(), error(bad_segment));
                    }
                }
            }
            let Some(role) = operation.get(ROLE_EXTENSION).and_then(Value::as_str).map(str::to_string) else {
                continue;
            };
            if role == "none" {
                continue;
            }
            operation["security"] = json!([{ "bearer": [] }]);
            let responses = operation["responses"].as_object_mut().expect("responses");
            responses.entry("401").or_insert_with(|| {
                error("No token, or not a valid one (`token_missing`, `token_invalid`, `token_revoked`, `token_expired`).")
            });
            responses.entry("403").or_insert_with(|| {
                error(&format!(
                    "The token's role is below `{role}` (`role_insufficient`), or its source scope does not \
                     cover what was asked (`source_forbidden`, `scope_insufficient`)."
                ))
            });
            responses
                .entry("503")
                .or_insert_with(|| error("The event store is unavailable (`store_unavailable`); try again."));
        }
    }
    doc
}

/// The served document, built once.
pub fn served() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_string(&super::document()).expect("serialises"))
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    summary = "This API's OpenAPI 3.1 document",
    description = "Every route of the JSON API with its parameters, bodies, answers, error codes and \
        the role it needs. No token needed. The console's HTML pages (`/ui/`) are not in it.",
    responses((status = 200, description = "The document", content_type = "application/json", body = Object)),
    extensions(("x-required-role" = json!("none")))
)]
pub async fn openapi_json() -> impl axum::response::IntoResponse {
    ([(CONTENT_TYPE, "application/json")], served())
}

/// Every error's body.
#[derive(ToSchema)]
#[schema(example = json!({ "error": { "code": "token_missing", "message": "send `Authorization: Bearer <token>`" } }))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable (`event_unknown`, `invalid_query`, `role_insufficient`, …).
    pub code: String,
    /// For people; may change.
    pub message: String,
}

/// `POST /ingest/{source}`'s answer.
#[derive(ToSchema)]
pub struct Ingested {
    /// The stored event's id (the first one's, for a duplicate).
    pub event_id: String,
    /// The provider sent this event before: nothing new was stored.
    pub duplicate: bool,
}

/// `POST /v1/receipts`' answer.
#[derive(ToSchema)]
pub struct ReceiptAccepted {
    pub event_id: String,
    pub receipt_id: String,
    /// The event's outcome after this receipt.
    pub outcome: Outcome,
    /// The ledger had this receipt already (a retried post).
    pub duplicate: bool,
}

#[derive(ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

#[derive(ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: String,
}

#[derive(ToSchema)]
pub struct NotReady {
    #[schema(example = "unavailable")]
    pub status: String,
    /// e.g. `disk_full`, `store_unavailable`.
    pub code: String,
    pub reason: String,
}

/// An operator's resolution of an event.
#[derive(ToSchema)]
pub struct ResolvedBy {
    pub by: String,
    pub note: String,
    #[schema(format = DateTime)]
    pub at: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum PayloadKept {
    Kept,
    /// Retention purged its headers and body; the event's row stays.
    Purged,
}

/// An event as lists show it.
#[derive(ToSchema)]
pub struct Event {
    pub id: String,
    pub source: String,
    /// The provider's own id (Stripe's `evt_…`, `X-GitHub-Delivery`, `webhook-id`), or a key
    /// made from the body when it has none.
    pub provider_event_id: String,
    pub event_type: Option<String>,
    #[schema(format = DateTime)]
    pub received_at: String,
    pub outcome: Outcome,
    /// Why the outcome is what it is when no receipt made it so.
    pub outcome_reason: Option<String>,
    pub error_code: Option<String>,
    pub delivery_state: DeliveryState,
    pub attempts: i64,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    /// The `Idempotency-Key` forwards carry.
    pub idempotency_key: String,
    /// Delivered without a receipt for longer than the source's `receipt_sla`.
    pub overdue: bool,
    pub resolved: Option<ResolvedBy>,
    pub payload: PayloadKept,
    #[schema(format = DateTime)]
    pub payload_purged_at: Option<String>,
}

#[derive(ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub data: Vec<Event>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// A header value: the exact bytes as text, or `{"base64": …}` when they are not UTF-8.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum HeaderValue {
    Text(String),
    Bytes(HeaderBase64),
}

#[derive(ToSchema)]
pub struct HeaderBase64 {
    pub base64: String,
}

#[derive(ToSchema)]
pub struct Receipt {
    pub receipt_id: String,
    pub key_id: String,
    /// `applied`, `failed` or `ignored`.
    pub status: String,
    pub target_record_id: Option<String>,
    pub error_code: Option<String>,
    pub detail: Option<String>,
    #[schema(format = DateTime)]
    pub signed_at: String,
    #[schema(format = DateTime)]
    pub received_at: String,
    /// `post` (to `/v1/receipts`), `response` (on a forward's answer) or `probe`.
    pub via: String,
}

#[derive(ToSchema)]
pub struct Attempt {
    pub number: i64,
    pub kind: AttemptKind,
    pub replay_id: Option<String>,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// An event with its payload (unless purged), receipts and attempts.
#[derive(ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: Event,
    /// The body as the provider sent it, when it is UTF-8 (absent once purged).
    pub body: Option<String>,
    /// The body, standard base64, when it is not UTF-8.
    pub body_base64: Option<String>,
    /// The headers as the provider sent them (absent once purged).
    /// `[name, value]` pairs.
    pub headers: Option<Vec<Vec<HeaderValue>>>,
    pub receipts: Vec<Receipt>,
    pub attempt_log: Vec<Attempt>,
}

#[derive(ToSchema)]
pub struct EventResolved {
    pub event_id: String,
    pub outcome: Outcome,
}

/// Events by outcome.
#[derive(ToSchema)]
pub struct OutcomeCounts {
    pub confirmed: i64,
    pub unknown: i64,
    pub failed: i64,
    pub resolved: i64,
}

#[derive(ToSchema)]
pub struct Resolution {
    pub dry_run: bool,
    /// Every event in scope, by outcome.
    pub counts: OutcomeCounts,
    /// The events it settles (`unknown` and `failed`), or would.
    pub resolving: i64,
    /// The first few (a dry run), or every one resolved (a live run).
    pub event_ids: Vec<String>,
}

#[derive(ToSchema)]
pub struct PlanScope {
    pub source: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// The window's end as planned (now, when `until` was not given).
    pub until_planned: Option<String>,
    /// How many ids the request named.
    pub event_ids: Option<i64>,
    pub after_event: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

/// A replay's plan (a dry run, 200), or the plan of the run it started (202, with `id`,
/// `state` and the `eligible` count it took).
#[derive(ToSchema)]
pub struct ReplayPlan {
    pub dry_run: bool,
    pub scope: PlanScope,
    /// The filter as normalised.
    pub filter: Option<String>,
    /// Every event in scope, by outcome.
    pub counts: OutcomeCounts,
    pub eligible_outcomes: Vec<Outcome>,
    /// Eligible events in scope, before `limit`.
    pub eligible_in_scope: i64,
    /// What a live run sends.
    pub eligible: i64,
    /// Eligible events `limit` leaves out.
    pub left_out: i64,
    pub limit: i64,
    /// Sends per second.
    pub rate: f64,
    pub include_failed: bool,
    pub override_confirmed: bool,
    pub to: Option<String>,
    /// The first items a run would send (event, destination, idempotency key).
    #[schema(value_type = Vec<Object>)]
    pub sample: Vec<Value>,
    pub estimated_seconds: f64,
    pub risk: Risk,
    /// Whether a live run asks the handler first, and (a dry run) what its answer would settle.
    #[schema(value_type = Object)]
    pub ask_first: Value,
    /// How the source's handler is doing now, and the rate it suggests (a dry run of one
    /// source to its own handler; null otherwise).
    #[schema(value_type = Option<Object>)]
    pub handler: Option<Value>,
    /// The started job's id (202 only).
    pub id: Option<String>,
    /// `running` (202 only).
    pub state: Option<String>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ReplayState {
    Running,
    Paused,
    Completed,
    Cancelled,
    Failed,
}

#[derive(ToSchema)]
pub struct PausedBy {
    pub by: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// A replay job as lists show it.
#[derive(ToSchema)]
pub struct ReplayJob {
    pub id: String,
    pub state: ReplayState,
    pub paused: Option<PausedBy>,
    /// Every item has its final result: the counts will not move again.
    pub settled: bool,
    /// Eligible events the run's `limit` left out.
    pub left_out: Option<i64>,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    pub reason: Option<String>,
    pub source: Option<String>,
    pub since: Option<String>,
    /// The window's end as planned.
    pub until: Option<String>,
    pub after_event: Option<String>,
    pub filter: Option<String>,
    /// Another destination than the source's (admins only).
    pub destination: Option<String>,
    pub rate: f64,
    /// The rate now (lower after 429 or 503 answers).
    pub current_rate: f64,
    pub counts: ReplayCounts,
    pub error: Option<String>,
}

#[derive(ToSchema)]
pub struct FailureCause {
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub count: i64,
    pub cause: String,
}

/// A replay job with why its items failed and its last item.
#[derive(ToSchema)]
pub struct ReplayDetail {
    #[serde(flatten)]
    pub job: ReplayJob,
    /// Most common cause first.
    pub failures: Vec<FailureCause>,
    /// Where a continuation of the same scope starts after (`after_event`).
    pub last_event_id: Option<String>,
}

#[derive(ToSchema)]
pub struct ReplayPage {
    pub data: Vec<ReplayJob>,
    pub next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub struct Reconciled {
    pub source: String,
    pub since: Option<String>,
    pub until: Option<String>,
    /// Every unknown event of the window was asked about.
    pub complete: bool,
    pub counts: ReconcileReport,
}

#[derive(ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    /// Unix ms.
    pub at: i64,
    #[schema(format = DateTime)]
    pub time: String,
    /// The token name of whoever did it.
    pub actor: String,
    /// e.g. `replay.dry_run`, `replay.started`, `event.resolved`, `token.created`.
    pub action: String,
    pub subject: Option<String>,
    #[schema(value_type = Object)]
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(ToSchema)]
pub struct AuditPage {
    /// Oldest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `after` for the next page; null on the last.
    pub next_after: Option<i64>,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

#[derive(ToSchema)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The sources it may act on; null: every source.
    pub sources: Option<Vec<String>>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

/// A new token, with its secret (shown this once).
#[derive(ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: Token,
    pub token: String,
}

#[derive(ToSchema)]
pub struct ListedToken {
    #[serde(flatten)]
    pub record: Token,
    /// Neither revoked nor expired.
    pub active: bool,
}

#[derive(ToSchema)]
pub struct TokenList {
    pub data: Vec<ListedToken>,
}

#[derive(ToSchema)]
pub struct Bucket {
    #[serde(flatten)]
    pub counts: super::summary::Counts,
    #[schema(format = DateTime)]
    pub start: String,
}

#[derive(ToSchema)]
pub struct Summary {
    #[schema(format = DateTime)]
    pub since: String,
    #[schema(format = DateTime)]
    pub until: String,
    pub bucket_seconds: i64,
    pub totals: super::summary::Counts,
    /// Failed events by error code (`""`: without one).
    pub failed_by_error_code: BTreeMap<String, i64>,
    pub sources: BTreeMap<String, super::summary::Counts>,
    /// Oldest first, empty ones too.
    pub buckets: Vec<Bucket>,
    /// When the window's first and last unsettled events arrived; null when none is.
    pub gap: Option<GapBounds>,
}

#[derive(ToSchema)]
pub struct GapBounds {
    #[schema(format = DateTime)]
    pub first_received_at: String,
    #[schema(format = DateTime)]
    pub last_received_at: String,
}

#[derive(ToSchema)]
pub struct Retention {
    /// Durations (`30days`).
    pub payloads: String,
    pub events: String,
    pub unsettled: String,
    pub run_every: String,
    pub archive_dir: Option<String>,
}

#[derive(ToSchema)]
pub struct SourceStorage {
    pub source: String,
    pub events: i64,
    pub payloads: i64,
    pub payload_bytes: i64,
    pub payloads_purged: i64,
    #[schema(format = DateTime)]
    pub oldest_unsettled_at: Option<String>,
    pub oldest_unsettled_age_seconds: Option<i64>,
    pub retention: Retention,
}

#[derive(ToSchema)]
pub struct Database {
    /// `sqlite` or `postgres`.
    pub backend: String,
    pub bytes: i64,
    pub free_bytes: Option<i64>,
}

#[derive(ToSchema)]
pub struct Storage {
    pub sources: Vec<SourceStorage>,
    /// Only for a token for every source.
    pub database: Option<Database>,
    /// This gateway's last purge (only for a token for every source).
    #[schema(value_type = Option<Object>)]
    pub last_purge: Option<Value>,
}

#[cfg(test)]
mod tests {
    //! The document against the routes, and the rendered reference (docs/api.md) against the
    //! document. `HOOKWARDEN_BLESS=1 cargo test -p hookwarden --lib http::openapi` rewrites
    //! docs/api.md and docs/openapi.json after a change of the API.

    use std::path::{Path, PathBuf};

    use serde_json::Value;

    use super::ROLE_EXTENSION;

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    out.push((method.to_uppercase(), path.clone(), op));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_described_with_its_role_parameters_and_errors() {
        let doc = super::super::document();
        assert_eq!(doc["openapi"], "3.1.0");
        let ops = operations(&doc);
        assert!(ops.len() >= 24, "{} operations", ops.len());
        for (method, path, op) in ops {
            let at = format!("{method} {path}");
            for field in ["summary", "description"] {
                assert!(op[field].as_str().is_some_and(|t| t.trim().len() > 10), "{at}: no {field}");
            }
            assert!(op["tags"].as_array().is_some_and(|t| !t.is_empty()), "{at}: no tag");
            let role = op[ROLE_EXTENSION].as_str().unwrap_or_else(|| panic!("{at}: no {ROLE_EXTENSION}"));
            assert!(["none", "viewer", "operator", "admin"].contains(&role), "{at}: role {role}");
            assert_eq!(op.get("security").is_some(), role != "none", "{at}: bearer auth and role disagree");
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|s| s.starts_with('2')), "{at}: no success answer");
            for (status, response) in responses {
                assert!(response["description"].as_str().is_some_and(|d| !d.is_empty()), "{at} {status}");
                if status.starts_with(['4', '5']) && path != "/readyz" {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
                        "{at} {status}: errors have the API's error body"
                    );
                }
            }
            if role != "none" {
                for status in ["401", "403", "503"] {
                    assert!(responses.contains_key(status), "{at}: no {status}");
                }
            }
            // Every `{name}` of the path is a declared path parameter.
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
                .unwrap_or_default();
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(['{', '}']);
                assert!(declared.contains(&name), "{at}: path parameter `{name}` undeclared");
            }
        }
    }

    /// Every route outside the console is added through utoipa-axum's `routes!`, which needs
    /// the handler's `#[utoipa::path]`: a plain axum `.route(` would serve a route the
    /// document does not have.
    #[test]
    fn no_route_bypasses_the_document() {
        let http = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
        let mut offenders = Vec::new();
        let mut files = vec![http.clone()];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                if path.ends_with("console") {
                    continue; // HTML pages, not the JSON API
                }
                files.extend(std::fs::read_dir(&path).expect("read dir").map(|e| e.expect("entry").path()));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read");
                for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with("//")) {
                    let plain_router = line.contains(concat!("Router", "::new()")) && !line.contains("OpenApiRouter");
                    if line.contains(concat!(".route", "(")) || line.contains(concat!(".nest", "(")) || plain_router {
                        offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "routes outside `routes!` (add them with #[utoipa::path]):\n{}",
            offenders.join("\n")
        );
    }

    fn docs_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
    }

    #[test]
    fn the_rendered_reference_is_current() {
        let doc = super::super::document();
        let json = serde_json::to_string_pretty(&doc).expect("serialises") + "\n";
        let markdown = render(&doc);
        let targets = [("openapi.json", json), ("api.md", markdown)];
        if std::env::var_os("HOOKWARDEN_BLESS").is_some() {
            for (name, text) in &targets {
                std::fs::write(docs_dir().join(name), text).expect("write");
            }
        }
        for (name, text) in &targets {
            let on_disk = std::fs::read_to_string(docs_dir().join(name)).unwrap_or_default();
            assert!(
                &on_disk == text,
                "docs/{name} is stale: HOOKWARDEN_BLESS=1 cargo test -p hookwarden --lib http::openapi"
            );
        }
    }

    /// The schema's name (`$ref`), or its type in a few words.
    fn type_of(schema: &Value) -> String {
        if let Some(name) = schema["$ref"].as_str() {
            let name = name.rsplit('/').next().unwrap_or(name);
            return format!("[{name}](#{})", name.to_lowercase());
        }
        if let Some(any) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()).or(schema["allOf"].as_array()) {
            return any.iter().map(type_of).collect::<Vec<_>>().join(" or ");
        }
        if let Some(values) = schema["enum"].as_array() {
            return values.iter().map(|v| format!("`{}`", v.as_str().unwrap_or("null"))).collect::<Vec<_>>().join(", ");
        }
        let types: Vec<String> = match &schema["type"] {
            Value::String(t) => vec![t.clone()],
            Value::Array(ts) => ts.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
            _ => vec!["any".into()],
        };
        types
            .iter()
            .map(|t| match t.as_str() {
                "array" => format!("array of {}", type_of(&schema["items"])),
                "object" if schema["additionalProperties"].is_object() => {
                    format!("map of {}", type_of(&schema["additionalProperties"]))
                }
                "string" if schema["format"].is_string() => {
                    format!("string ({})", schema["format"].as_str().unwrap_or(""))
                }
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }

    fn cell(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
    }

    /// docs/api.md: the document as a page to read, operations by tag, then the schemas.
    fn render(doc: &Value) -> String {
        let mut out = String::new();
        out.push_str("# hookwarden HTTP API reference\n\n");
        out.push_str(
            "Generated from the OpenAPI document the gateway serves at `GET /openapi.json` \
             ([docs/openapi.json](openapi.json)) by `gateway/src/http/openapi.rs`'s tests; do not edit.\n\n",
        );
        out.push_str(&format!("{}\n\n", doc["info"]["description"].as_str().unwrap_or_default()));
        let ops = operations(doc);
        for tag in doc["tags"].as_array().expect("tags") {
            let name = tag["name"].as_str().unwrap_or_default();
            out.push_str(&format!("## {name}\n\n{}\n\n", tag["description"].as_str().unwrap_or_default()));
            for (method, path, op) in ops.iter().filter(|(_, _, op)| op["tags"][0] == name) {
                out.push_str(&format!(
                    "### `{method} {path}`\n\n**{}**\n\n",
                    op["summary"].as_str().unwrap_or_default()
                ));
                out.push_str(&format!("{}\n\n", op["description"].as_str().unwrap_or_default()));
                let role = op[ROLE_EXTENSION].as_str().unwrap_or_default();
                out.push_str(&match role {
                    "none" => "Token: none.\n\n".to_string(),
                    role => format!("Token: `Authorization: Bearer …` with at least the `{role}` role.\n\n"),
                });
                if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
                    out.push_str("| parameter | in | type | required | description |\n|---|---|---|---|---|\n");
                    for p in params {
                        out.push_str(&format!(
                            "| `{}` | {} | {} | {} | {} |\n",
                            p["name"].as_str().unwrap_or_default(),
                            p["in"].as_str().unwrap_or_default(),
                            type_of(&p["schema"]),
                            if p["required"] == true { "yes" } else { "no" },
                            cell(p["description"].as_str().unwrap_or_default()),
                        ));
                    }
                    out.push('\n');
                }
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    for (media, body) in content {
                        out.push_str(&format!("Body (`{media}`): {}\n\n", type_of(&body["schema"])));
                    }
                }
                out.push_str("| status | answer | body |\n|---|---|---|\n");
                for (status, response) in op["responses"].as_object().expect("responses") {
                    let body = response["content"]
                        .as_object()
                        .map(|c| {
                            c.iter()
                                .map(|(media, b)| match media.as_str() {
                                    "application/json" => type_of(&b["schema"]),
                                    other => format!("`{other}`"),
                                })
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "| {status} | {} | {body} |\n",
                        cell(response["description"].as_str().unwrap_or_default())
                    ));
                }
                out.push('\n');
            }
        }
        out.push_str("## Schemas\n\n");
        for (name, schema) in doc["components"]["schemas"].as_object().expect("schemas") {
            out.push_str(&format!("### {name}\n\n"));
            if let Some(text) = schema["description"].as_str() {
                out.push_str(&format!("{}\n\n", text));
            }
            let parts: Vec<&Value> = match schema["allOf"].as_array() {
                Some(all) => all.iter().collect(),
                None => vec![schema],
            };
            let mut table = String::new();
            for part in parts {
                if part["$ref"].is_string() {
                    out.push_str(&format!("Every field of {}, and:\n\n", type_of(part)));
                    continue;
                }
                let required: Vec<&str> = part["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for (field, s) in part["properties"].as_object().into_iter().flatten() {
                    table.push_str(&format!(
                        "| `{field}` | {} | {} | {} |\n",
                        type_of(s),
                        if required.contains(&field.as_str()) { "yes" } else { "no" },
                        cell(s["description"].as_str().unwrap_or_default()),
                    ));
                }
            }
            if table.is_empty() {
                out.push_str(&format!("{}\n\n", type_of(schema)));
            } else {
                out.push_str("| field | type | always there | description |\n|---|---|---|---|\n");
                out.push_str(&table);
                out.push('\n');
            }
        }
        out
    }
}
