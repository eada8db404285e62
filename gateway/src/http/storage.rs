//! `GET /v1/storage`: what the store keeps, per source (events, payloads and their bytes,
//! purged payloads, the oldest gap), each source's retention, the database's size and this
//! gateway's last purge. A token scoped to sources sees those sources only; the database as a
//! whole spans every source, so only a token for every source sees it.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::time::format_ms;
use super::{AppState, Caller, Role};
use crate::config::Retention;
use crate::error::ApiError;
use crate::store::SourceStorage;

fn duration(d: std::time::Duration) -> String {
    crate::timestamp::format_span(d)
}

fn retention_json(r: &Retention) -> Value {
    json!({
        "payloads": duration(r.payloads),
        "events": duration(r.events),
        "unsettled": duration(r.unsettled),
        "run_every": duration(r.run_every),
        "archive_dir": r.archive_dir.as_ref().map(|d| d.display().to_string()),
    })
}

#[utoipa::path(
    get,
    path = "/v1/storage",
    tag = "summary",
    summary = "What the store keeps, per source",
    description = "Per source: events, payloads and their bytes, purged payloads, the oldest unsettled \
        event and the retention in force. With a token for every source also the database's size \
        and this gateway's last purge.",
    responses((status = 200, description = "The storage view", body = super::openapi::Storage)),
    extensions(("x-required-role" = json!("viewer")))
)]
async fn storage(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let stored = app.store.storage_by_source().await?;
    let now = app.clock.now_ms();
    let mut sources = Vec::new();
    let mut names: Vec<&String> = app.sources.keys().collect();
    // Sources no longer in the config keep their events until purged: shown too.
    names.extend(stored.iter().map(|s| &s.source).filter(|s| !app.sources.contains_key(*s)));
    names.sort();
    for name in names.into_iter().filter(|n| caller.scope.allows(n)) {
        let s = stored
            .iter()
            .find(|s| &s.source == name)
            .cloned()
            .unwrap_or(SourceStorage { source: name.clone(), ..Default::default() });
        let retention = app.sources.get(name).map_or(&app.config.retention, |c| &c.retention);
        sources.push(json!({
            "source": s.source,
            "events": s.events,
            "payloads": s.payloads,
            "payload_bytes": s.payload_bytes,
            "payloads_purged": s.payloads_purged,
            "oldest_unsettled_at": s.oldest_unsettled_at.map(format_ms),
            "oldest_unsettled_age_seconds": s.oldest_unsettled_at.map(|at| (now - at).max(0) / 1000),
            "retention": retention_json(retention),
        }));
    }
    let mut out = json!({ "sources": sources });
    if caller.scope.limited_to().is_none() {
        let db = app.store.database_storage().await?;
        let last = *app.purge_status.lock().expect("purge status");
        out["database"] = json!({ "backend": format!("{:?}", app.store.backend()).to_lowercase(), "bytes": db.bytes, "free_bytes": db.free_bytes });
        out["last_purge"] = match last {
            Some(last) => json!({ "at": format_ms(last.at), "removed": last.report }),
            None => Value::Null,
        };
    }
    Ok(Json(out))
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(storage))
}
