//! Logs and traces: the process's `tracing` subscriber (text or JSON lines on stderr) and,
//! with `[telemetry] otlp_endpoint`, its spans exported over OTLP/HTTP (protobuf).
//!
//! Each event is one trace, and its trace id is the event's ULID (the 128 bits of
//! `evt_…`), so every piece of the event's life joins it without anything stored: the
//! ingest (root span `event`, from the request to the commit), each forward and replay send
//! (whose `traceparent` the handler receives), and a receipt the handler posts with that
//! `traceparent`. The root's span id is derived from the event id too ([`event_context`]),
//! so a forward from another gateway, or after a restart, still hangs under it.
//!
//! Without an endpoint nothing is built: no exporter, no OpenTelemetry layer, and the spans
//! are plain `tracing` spans (they name the event in log lines). What telemetry does not do:
//! sample (every event is recorded), block (a full export queue drops spans), or decide
//! anything the gateway does.

use std::cell::Cell;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use sha2::{Digest, Sha256};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::TelemetryConfig;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the spans it happened in.
    Json,
}

/// The instrumentation scope of the gateway's spans.
const SCOPE: &str = "hookwarden";

/// Whether spans are exported; read on the request path to skip what only export needs.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (an `otlp_endpoint` is configured).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the exporter running; dropping it flushes the spans still queued.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            EXPORTING.store(false, Ordering::Relaxed);
            if let Err(err) = provider.shutdown() {
                eprintln!("hookwarden: flushing traces at exit: {err}");
            }
        }
    }
}

/// Installs the process's subscriber: log lines in `format` on stderr (filtered by
/// `RUST_LOG`, default `info,sqlx=warn`) and, when `telemetry` names an endpoint, the span
/// exporter. Call once, outside an async runtime (the exporter's blocking HTTP client).
pub fn init(format: LogFormat, telemetry: Option<&TelemetryConfig>) -> Result<Telemetry, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,sqlx=warn".into());
    let (text, json) = match format {
        // Colour only for a person at a terminal: a log file or journal gets plain text.
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Json => (None, Some(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))),
    };
    let provider = match telemetry.and_then(|t| t.otlp_endpoint.as_ref().map(|endpoint| (t, endpoint))) {
        Some((config, endpoint)) => Some(provider(endpoint, &config.service_name)?),
        None => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(SCOPE)).with_threads(false).with_location(false));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(otel)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
        EXPORTING.store(true, Ordering::Relaxed);
    }
    Ok(Telemetry { provider })
}

fn provider(endpoint: &reqwest::Url, service_name: &str) -> Result<SdkTracerProvider, String> {
    // The exporter's reqwest client takes its TLS from the process's provider, as ours do.
    crate::tls::install_crypto_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint).as_str())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(EventIds)
        .with_resource(Resource::builder().with_service_name(service_name.to_string()).build())
        .build())
}

/// Where spans are posted: the endpoint as given when it names a path (`…/v1/traces`),
/// else the collector's standard OTLP/HTTP path under it.
pub fn traces_url(endpoint: &reqwest::Url) -> reqwest::Url {
    if endpoint.path().trim_end_matches('/').is_empty() {
        let mut url = endpoint.clone();
        url.set_path("/v1/traces");
        url
    } else {
        endpoint.clone()
    }
}

thread_local! {
    /// Ids the next span built on this thread takes instead of random ones (see [`EventIds`]).
    static CHOSEN: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, except for the root span of an event, built with ids derived from the event
/// id: the SDK takes no ids from a span builder, only from its generator.
#[derive(Debug)]
struct EventIds;

impl IdGenerator for EventIds {
    fn new_trace_id(&self) -> TraceId {
        CHOSEN.with(Cell::get).map(|(trace, _)| trace).unwrap_or_else(|| RandomIdGenerator::default().new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        CHOSEN.with(Cell::get).map(|(_, span)| span).unwrap_or_else(|| RandomIdGenerator::default().new_span_id())
    }
}

/// The trace of an event: its ULID's 128 bits.
pub fn event_trace_id(event_id: &str) -> TraceId {
    let ulid = event_id.strip_prefix("evt_").and_then(|u| ulid::Ulid::from_string(u).ok());
    match ulid {
        Some(ulid) if ulid.0 != 0 => TraceId::from(ulid.0),
        // Not an id this gateway made (never for a stored event): a stable one from its text.
        _ => TraceId::from(u128::from_be_bytes(digest(event_id, b"trace")[..16].try_into().expect("16 bytes"))),
    }
}

/// The span id of an event's root span (`event`).
pub fn event_span_id(event_id: &str) -> SpanId {
    let id = u64::from_be_bytes(digest(event_id, b"span")[..8].try_into().expect("8 bytes"));
    SpanId::from(id.max(1))
}

fn digest(event_id: &str, what: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"hookwarden ");
    hash.update(what);
    hash.update([0u8]);
    hash.update(event_id.as_bytes());
    hash.finalize().into()
}

/// The event's root span as a parent: what every span of the event's life hangs under.
pub fn event_context(event_id: &str) -> Context {
    let root = SpanContext::new(
        event_trace_id(event_id),
        event_span_id(event_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(root)
}

/// Records the root span of an event: `started` (the request came in) to `ended` (its
/// answer was decided). Nothing when not exporting.
pub fn record_event(event_id: &str, source: &str, result: &str, started: SystemTime, ended: SystemTime) {
    if !exporting() {
        return;
    }
    let tracer = opentelemetry::global::tracer(SCOPE);
    let builder = tracer.span_builder("event").with_kind(SpanKind::Server).with_start_time(started).with_attributes([
        KeyValue::new("event_id", event_id.to_string()),
        KeyValue::new("source", source.to_string()),
        KeyValue::new("result", result.to_string()),
    ]);
    CHOSEN.with(|c| c.set(Some((event_trace_id(event_id), event_span_id(event_id)))));
    let mut span = tracer.build_with_context(builder, &Context::new());
    CHOSEN.with(|c| c.set(None));
    opentelemetry::trace::Span::end_with_timestamp(&mut span, ended);
}

/// Hangs `span` (not yet entered) under the event's root span. Nothing when not exporting.
pub fn under_event(span: &tracing::Span, event_id: &str) {
    if exporting() {
        let _ = span.set_parent(event_context(event_id));
    }
}

/// Hangs `span` (not yet entered) under a W3C `traceparent` a caller sent; `false` when the
/// value is not one (or when not exporting).
pub fn under_traceparent(span: &tracing::Span, traceparent: &str) -> bool {
    if !exporting() {
        return false;
    }
    match parse_traceparent(traceparent) {
        Some(parent) => span.set_parent(Context::new().with_remote_span_context(parent)).is_ok(),
        None => false,
    }
}

/// The `traceparent` of a forward sent inside `span`: that span's context when exporting;
/// otherwise the event's root, so a handler's own traces still group by event.
pub fn traceparent(span: &tracing::Span, event_id: &str) -> String {
    let context = if exporting() { span.context() } else { event_context(event_id) };
    let binding = context.span();
    let sc = binding.span_context();
    if sc.is_valid() {
        format_traceparent(sc)
    } else {
        format_traceparent(event_context(event_id).span().span_context())
    }
}

/// `00-{trace id}-{span id}-{flags}` (W3C Trace Context, version 00).
pub fn format_traceparent(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// A W3C `traceparent` (version 00, or a later version read as 00 would), as a remote parent.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let value = value.trim();
    let mut parts = value.split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1);
    let sc = SpanContext::new(trace, span, flags, true, TraceState::default());
    sc.is_valid().then_some(sc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_trace_is_its_ulid() {
        let id = crate::domain::EventId::generate();
        let ulid = ulid::Ulid::from_string(id.as_str().strip_prefix("evt_").unwrap()).unwrap();
        assert_eq!(event_trace_id(id.as_str()).to_string(), format!("{:032x}", ulid.0));
        assert_eq!(event_span_id(id.as_str()), event_span_id(&String::from(id.as_str())));
        assert_ne!(event_span_id(id.as_str()), event_span_id(crate::domain::EventId::generate().as_str()));
    }

    #[test]
    fn traceparent_round_trips_and_refuses_what_is_not_one() {
        let parsed = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(parsed.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id().to_string(), "00f067aa0ba902b7");
        assert!(parsed.is_sampled());
        assert_eq!(format_traceparent(&parsed), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }

    #[test]
    fn the_traces_path_is_added_to_a_bare_endpoint_only() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(traces_url(&url("http://collector:4318")).as_str(), "http://collector:4318/v1/traces");
        assert_eq!(traces_url(&url("http://collector:4318/")).as_str(), "http://collector:4318/v1/traces");
        assert_eq!(traces_url(&url("https://x.example/otlp/v1/traces")).as_str(), "https://x.example/otlp/v1/traces");
    }
}
