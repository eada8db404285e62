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
mod receipts;
mod reconcile;
mod replays;
mod storage;
mod summary;
mod time;
mod tokens;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;

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

fn public_routes() -> Router<AppState> {
    Router::new().merge(ingest::router()).merge(receipts::router()).merge(health::probes())
}

fn admin_routes() -> Router<AppState> {
    Router::new()
        .merge(events::router())
        .merge(replays::router())
        .merge(reconcile::router())
        .merge(audit::router())
        .merge(tokens::router())
        .merge(summary::router())
        .merge(storage::router())
        .merge(console::router())
        .merge(health::metrics())
}

fn finish(routes: Router<AppState>, state: AppState) -> Router {
    routes
        // Errors are JSON everywhere, also for a path or method the API does not have.
        .fallback(|| async { ApiError::not_found("route_unknown", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .with_state(state)
}
