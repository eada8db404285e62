//! The HTTP surface: one file per resource, each ending in `router()`; this module merges
//! them and holds the shared state.
//!
//! Architecture invariant: only `http/` knows about JSON bodies, status codes and headers of
//! the API; it calls the store and the domain modules, never SQL.

mod audit;
mod auth;
mod console;
mod events;
mod health;
mod ingest;
mod listener;
mod openapi;
mod receipts;
mod reconcile;
mod replays;
mod segment;
mod storage;
mod summary;
mod time;
mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::clock::SharedClock;
use crate::config::{Config, SourceConfig};
use crate::delivery::DispatcherHandle;
use crate::domain::EventIds;
use crate::error::ApiError;
use crate::probe::Prober;
use crate::receipts::ReceiptDesk;
use crate::replay::executor::Replayer;
use crate::store::{CommitQueue, Store};

pub use crate::access::Role;
pub use auth::Caller;
pub use ingest::IngestLimits;
pub use listener::BoundedListener;
pub use time::{format_ms, parse_rfc3339};

/// Everything a request handler may use, behind one `Arc`: axum clones the state for every
/// request, and a clone of the fields one by one was a dozen reference counts and an
/// allocation each time.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl AppState {
    pub fn new(app: App) -> Self {
        Self(Arc::new(app))
    }
}

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// The shared state's parts.
pub struct App {
    pub store: Store,
    pub sources: Arc<HashMap<String, SourceConfig>>,
    pub config: Arc<Config>,
    /// Group commit for inbound events (shared with attempt results).
    pub commits: CommitQueue,
    pub dispatcher: DispatcherHandle,
    pub receipts: Arc<ReceiptDesk>,
    pub replayer: Arc<Replayer>,
    /// Asks handlers about unknown events (status probes).
    pub prober: Arc<Prober>,
    pub clock: SharedClock,
    /// Ids of inbound events, from `clock`.
    pub ids: EventIds,
    pub metrics: PrometheusHandle,
    pub ingest_limits: IngestLimits,
    /// This gateway's last retention purge (`/v1/storage`).
    pub purge_status: crate::retention::PurgeStatus,
    /// The console overview's storage figures, measured in the background.
    pub console_storage: console::StorageFigures,
}

/// Every route, on one listener.
pub fn router(state: AppState) -> Router {
    finish(public_routes().merge(admin_routes()), state)
}

/// What faces providers and handlers when the admin API listens apart (`server.admin_listen`):
/// ingest, receipts and the health probes.
pub fn public_router(state: AppState) -> Router {
    finish(public_routes(), state)
}

/// The admin API with the probes and metrics, for its own (private) listener.
pub fn admin_router(state: AppState) -> Router {
    finish(admin_routes().merge(health::probes()), state)
}

/// The OpenAPI document of every route of both listeners (`GET /openapi.json`), built from
/// the same routers that serve them.
pub fn document() -> serde_json::Value {
    let routes = OpenApiRouter::with_openapi(openapi::Frame::openapi()).merge(public_routes()).merge(admin_routes());
    openapi::finish(routes.into_openapi())
}

fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().merge(ingest::router()).merge(receipts::router()).merge(health::probes())
}

/// Every route of the admin API. Each resource's routes go through utoipa-axum's `routes!`, so
/// each has its entry in the document; the console's are HTML and stay out of it.
fn admin_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(events::router())
        .merge(replays::router())
        .merge(reconcile::router())
        .merge(audit::router())
        .merge(tokens::router())
        .merge(summary::router())
        .merge(storage::router())
        .merge(OpenApiRouter::from(console::router()))
        .merge(health::metrics())
}

fn finish(routes: OpenApiRouter<AppState>, state: AppState) -> Router {
    Router::from(routes)
        // Errors are JSON everywhere, also for a path or method the API does not have.
        .fallback(|| async { ApiError::not_found("route_unknown", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .with_state(state)
}
