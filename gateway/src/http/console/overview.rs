//! The console's first page: the gap view. Per source the outcome counts over a window
//! (default 24 h), the timeline chart, the failed ones by error code, and the selected span
//! with what it holds, the storage figures per source, and reconcile. Its data is
//! `GET /v1/summary`'s (`summary::gap_view`) and `GET /v1/storage`'s (the store's
//! `storage_by_source`, see `storage.rs`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::chart::{self, Chart};
use super::events::enc;
use super::page::{self, Nav};
use super::session::Signed;
use crate::http::AppState;
use crate::http::summary::{self, Counts};
use crate::timestamp::{format_ms, parse_rfc3339};

/// The windows offered, with the bucket each is drawn in (about 60 to 100 columns).
pub const WINDOWS: [(&str, &str, i64); 5] = [
    ("15m", "10s", 900_000),
    ("1h", "1m", 3_600_000),
    ("6h", "5m", 21_600_000),
    ("24h", "15m", 86_400_000),
    ("7d", "2h", 604_800_000),
];

#[derive(Deserialize, Default)]
pub struct Params {
    window: Option<String>,
    source: Option<String>,
    /// The selected span, RFC 3339.
    from: Option<String>,
    to: Option<String>,
}

pub struct SourceRow {
    pub name: String,
    pub counts: Counts,
}

/// A source's storage figures, as `GET /v1/storage` has them.
pub struct Stored {
    pub source: String,
    pub events: i64,
    pub payloads: i64,
    pub payload_bytes: i64,
    pub bytes: String,
    pub purged: i64,
    /// When the oldest unsettled event was received, and how long ago ("" when none).
    pub oldest_unsettled: String,
    pub oldest_unsettled_at: String,
}

pub struct Selected {
    pub label: String,
    pub counts: Counts,
    /// The events list scoped to the span.
    pub events: String,
    /// The replay form scoped to the span.
    pub replay: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct Overview {
    nav: Nav,
    windows: Vec<(&'static str, bool)>,
    window: String,
    sources: Vec<(String, bool)>,
    rows: Vec<SourceRow>,
    totals: Counts,
    failed_by_code: Vec<(String, i64)>,
    chart: Chart,
    chart_width: f64,
    chart_height: f64,
    /// Where a span picked by dragging goes (`&from=…&to=…` appended).
    base: String,
    selected: Option<Selected>,
    updated: String,
    since_label: String,
    bucket: &'static str,
    error: Option<String>,
    /// Per source, what the store keeps, and when that was measured (`None`: being measured).
    storage: Option<(String, Vec<Stored>)>,
    /// Reconcile over the selected span, or the window.
    reconcile: super::reconcile::Form,
}

/// A duration as the overview says it: `45 s`, `12 min`, `3 h`, `2 d`.
fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=89 => format!("{s} s"),
        90..=5399 => format!("{} min", s / 60),
        5400..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

fn query_pair(key: &str, value: &str) -> String {
    format!("{key}={}", enc(value))
}

pub async fn page(State(app): State<AppState>, who: Signed, Query(p): Query<Params>) -> Response {
    let (window, bucket, window_ms) =
        WINDOWS.iter().copied().find(|(name, _, _)| Some(*name) == p.window.as_deref()).unwrap_or(WINDOWS[3]);
    let source = p.source.clone().filter(|s| !s.is_empty());
    let now = app.clock.now_ms();
    let params = summary::Params {
        source: source.clone(),
        since: Some(format_ms(now - window_ms)),
        until: Some(format_ms(now)),
        bucket: Some(bucket.into()),
    };
    let view = match summary::gap_view(&app, &who.caller, &params).await {
        Ok(view) => view,
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => {
            return page::message(err.status, "Store unavailable", &err.message);
        }
        Err(err) => return page::message(err.status, "Cannot show this", &err.message),
    };
    let mut base = format!("/ui/?{}", query_pair("window", window));
    if let Some(s) = &source {
        base.push('&');
        base.push_str(&query_pair("source", s));
    }
    let mut error = None;
    let span = match (p.from.as_deref(), p.to.as_deref()) {
        (Some(from), Some(to)) => match (parse_rfc3339("from", from), parse_rfc3339("to", to)) {
            (Ok(from), Ok(to)) if from < to => Some((from, to)),
            (Err(e), _) | (_, Err(e)) => {
                error = Some(e.to_string());
                None
            }
            _ => {
                error = Some("the selected span ends before it starts".into());
                None
            }
        },
        _ => None,
    };
    let link = |from: i64, to: i64| {
        format!("{base}&{}&{}", query_pair("from", &format_ms(from)), query_pair("to", &format_ms(to)))
    };
    let chart = chart::draw(&view.buckets, view.bucket_ms, span, link);
    let selected = span.map(|(from, to)| {
        let mut counts = Counts::default();
        for (_, c) in view.buckets.iter().filter(|(start, _)| *start >= from && start + view.bucket_ms <= to) {
            counts.confirmed += c.confirmed;
            counts.unknown += c.unknown;
            counts.failed += c.failed;
            counts.resolved += c.resolved;
            counts.overdue += c.overdue;
            counts.total += c.total;
        }
        let mut events = format!("/ui/events?since={}&until={}", enc(&format_ms(from)), enc(&format_ms(to)));
        if let Some(s) = &source {
            events.push_str(&format!("&source={}", enc(s)));
        }
        Selected {
            events,
            replay: super::replay::scope_link(source.as_deref(), from, to),
            label: format!(
                "{} – {} UTC",
                chart::clock_time(from, to - from >= 86_400_000),
                chart::clock_time(to, to - from >= 86_400_000)
            ),
            counts,
        }
    });
    let back = match span {
        Some((from, to)) => link(from, to),
        None => base.clone(),
    };
    let reconcile =
        super::reconcile::Form::new(&app, &who, source.as_deref(), span.unwrap_or((now - window_ms, now)), back);
    let storage = app.console_storage.get(&app.store, now).await.map(|(at, stored)| {
        let mut names: Vec<&String> = app.sources.keys().collect();
        names.extend(stored.iter().map(|s| &s.source).filter(|s| !app.sources.contains_key(*s)));
        names.sort();
        let rows = names
            .into_iter()
            .filter(|n| who.caller.scope.allows(n) && source.as_ref().is_none_or(|s| s == *n))
            .map(|name| {
                let s = stored.iter().find(|s| &s.source == name).cloned().unwrap_or_default();
                Stored {
                    source: name.clone(),
                    events: s.events,
                    payloads: s.payloads,
                    payload_bytes: s.payload_bytes,
                    bytes: crate::store::format_bytes(s.payload_bytes),
                    purged: s.payloads_purged,
                    oldest_unsettled: s
                        .oldest_unsettled_at
                        .map(|t| format!("{} UTC, {} ago", chart::clock_time(t, true), age(now - t)))
                        .unwrap_or_default(),
                    oldest_unsettled_at: s.oldest_unsettled_at.map(format_ms).unwrap_or_default(),
                }
            })
            .collect();
        (chart::clock_time_seconds(at), rows)
    });
    let overview = Overview {
        nav: Nav::new(&who, "overview"),
        windows: WINDOWS.iter().map(|(name, _, _)| (*name, *name == window)).collect(),
        window: window.into(),
        sources: super::page::source_choices(&app, &who, source.as_deref()),
        rows: view.sources.iter().map(|(name, counts)| SourceRow { name: name.clone(), counts: *counts }).collect(),
        totals: view.totals,
        failed_by_code: view.failed_by_error_code.iter().map(|(code, n)| (code.clone(), *n)).collect(),
        chart,
        chart_width: chart::WIDTH,
        chart_height: chart::HEIGHT,
        base,
        selected,
        updated: chart::clock_time(now, false),
        since_label: chart::clock_time(view.since, window_ms >= 86_400_000),
        bucket,
        error,
        storage,
        reconcile,
    };
    page::render(StatusCode::OK, &overview)
}
