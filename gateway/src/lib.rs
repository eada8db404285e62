//! hookwarden: a receipt-aware webhook gateway with guardrailed replay.
//!
//! Code map (each module says what it deliberately does not do):
//! - [`config`]: the TOML file, resolved and checked once, secrets included.
//! - [`domain`]: ids, outcomes, delivery states, events and attempts as types.
//! - [`verify`]: provider signatures (stripe, github, standard, hmac, none).
//! - [`store`]: every SQL statement, on SQLite and PostgreSQL; group commit.
//! - [`delivery`]: the signed forward, the retry ladder, the dispatcher.
//! - [`receipts`]: accepting signed receipts (posted, inline or probed) in the contract's order.
//! - [`probe`]: asking a handler about `unknown` events (the status probe) and reconciling.
//! - [`http`]: routes, JSON, status codes; the only place that knows HTTP.
//! - [`clock`]: time as a dependency; [`timestamp`]: RFC 3339 in and out.
//! - [`access`]: roles, source scopes and tokens, asked by both front ends and the planner.
//! - [`audit`]: the hash chain of the append-only audit log.
//! - [`telemetry`]: log lines and trace export; one trace per event, keyed by its id.
//! - [`retention`]: the purge of settled payloads, old events and body hashes (never the audit log).
//!
//! The guarantees, and where each lives:
//! - never 200 before commit: `http::ingest` answers only after `store::CommitQueue` committed;
//! - nothing lost across a crash: delivery is driven from the database (`delivery`), under
//!   leases that expire (rows on PostgreSQL; memory on SQLite, one gateway per file, locked).
//!   An event stays due in its row until its result commits; on SQLite the group commit also
//!   queues new events for the dispatcher after they committed (`store::handoff`), and what
//!   that queue misses or a crash drops is claimed from the database. A request handler
//!   never hands anything over, so a provider that hangs up cannot strand an event.
//! - nothing is sent after its receipt was recorded: every retry and replay send is decided
//!   by one short read of the event as committed (`Store::check_before_send`), and a receipt
//!   is recorded when it commits, so a receipt committed first drops the send and one
//!   committed later finds it decided. The result written after the send never undoes a
//!   receipt recorded meanwhile (guarded in the schedule's SQL, `store::delivery`).
//! - nothing waits on a handler while holding a database connection, a transaction or a
//!   lock a receipt needs: a handler that hangs slows its own deliveries, nobody else's.

pub mod access;
pub mod archive;
pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod http;
mod metrics;
pub mod probe;
#[cfg(test)]
mod properties;
pub mod receipts;
pub mod replay;
pub mod retention;
pub mod store;
pub mod telemetry;
pub mod timestamp;
pub mod tls;
pub mod verify;

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::delivery::Dispatcher;
use crate::domain::EventId;
use crate::receipts::{ReceiptDesk, ReceiptKeys};
use crate::replay::executor::{ReplaySettings, Replayer};
use crate::store::{Backend, CommitQueue, Store, StoreError};
use tokio::sync::broadcast;

/// Why a gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// New events queued from the group commit to the dispatcher (SQLite); beyond it the
/// dispatcher claims them from the store.
const FRESH_QUEUE: usize = 1024;

/// Receipt notifications buffered for running replays.
const RECEIPT_BUS: usize = 65_536;

/// Where a gateway takes requests: everything on `public`, or, with `admin` (the config's
/// `server.admin_listen`), ingest, receipts and probes on `public` and the admin API apart.
pub struct Listeners {
    pub public: TcpListener,
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(public: TcpListener) -> Self {
        Self { public, admin: None }
    }
}

/// Runs a gateway on `listeners` until `shutdown` resolves, then drains: stops taking
/// requests, finishes deliveries in flight, and gives back its leases.
pub async fn run(
    config: Config,
    listeners: impl Into<Listeners>,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let listeners = listeners.into();
    let listener = &listeners.public;
    let receipt_keys = ReceiptKeys::from_sources(&config.sources).map_err(RunError::Config)?;
    let store = Store::connect(&config.database_url).await?;
    let _sole = store.lock_sole_gateway()?;
    if store.backend() == Backend::Sqlite {
        // One gateway per SQLite file: leases left by a crashed run are ours to take back.
        store.release_leases(None).await?;
        store.release_replay_leases().await?;
    }
    let gateway_id = format!("gw-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let address = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let admin = listeners.admin.as_ref().map(address).unwrap_or_else(|| "(with the rest)".into());
    tracing::info!(%gateway_id, backend = ?store.backend(), listen = %address(listener), %admin, "gateway starting");
    let max_connections = config.max_connections;

    let (bus, _) = broadcast::channel(RECEIPT_BUS);
    let receipts = Arc::new(ReceiptDesk::new(store.clone(), receipt_keys, bus.clone()));
    // The listener holds a pooled connection: it is stopped before the pool is closed.
    let listening =
        store.receipt_listener().await?.map(|l| tokio::spawn(forward_receipt_notifications(l, bus.clone())));
    let wake = Arc::new(Notify::new());
    let (handoff, fresh) = match store.backend() {
        Backend::Sqlite => {
            let (handoff, fresh) = store::handoff(FRESH_QUEUE, &gateway_id, wake.clone());
            (Some(handoff), Some(fresh))
        }
        Backend::Postgres => (None, None),
    };
    let commits = CommitQueue::spawn(&store, handoff);
    let dispatcher = Dispatcher::new(
        store.clone(),
        commits.clone(),
        &config,
        receipts.clone(),
        clock.clone(),
        gateway_id.clone(),
        wake,
        fresh,
    );
    let sources = Arc::new(config.sources.iter().map(|s| (s.name.clone(), s.clone())).collect::<HashMap<_, _>>());
    let prober = probe::Prober::new(receipts.clone(), clock.clone());
    let replayer = Replayer::new(
        store.clone(),
        sources.clone(),
        receipts.clone(),
        prober.clone(),
        clock.clone(),
        gateway_id.clone(),
        ReplaySettings {
            lease: config.delivery.lease,
            poll_interval: config.delivery.poll_interval,
            concurrency: if store.backend() == Backend::Sqlite { 32 } else { 8 },
            timeout: config.delivery.timeout,
        },
    );
    let purger = retention::Purger::new(store.clone(), &config, clock.clone());
    let ingest_limits = http::IngestLimits::from_sources(&config.sources);
    let state = http::AppState::new(http::App {
        store: store.clone(),
        sources,
        config: Arc::new(config),
        commits,
        dispatcher: dispatcher.handle(),
        receipts,
        replayer: replayer.clone(),
        prober,
        clock,
        ids: Default::default(),
        metrics: metrics::handle(),
        ingest_limits,
        purge_status: purger.status(),
        console_storage: Default::default(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let delivering = tokio::spawn(dispatcher.run(stop_rx.clone()));
    let replaying = tokio::spawn(replayer.run(stop_rx.clone()));
    let purging = tokio::spawn(purger.run(stop_rx));
    serve(listeners, state, max_connections, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = delivering.await;
    let _ = replaying.await;
    let _ = purging.await;
    if let Some(listening) = listening {
        listening.abort();
        let _ = listening.await;
    }
    store.close().await;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Serves HTTP on `listeners` (each keeping at most `max_connections` open) until `shutdown`
/// resolves, then lets the requests in flight finish.
async fn serve(
    listeners: Listeners,
    state: http::AppState,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let graceful = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let bounded = |listener| http::BoundedListener::new(listener, max_connections);
    let served = match listeners.admin {
        None => {
            let app = http::router(state);
            axum::serve(bounded(listeners.public), app).with_graceful_shutdown(graceful(stopped)).await
        }
        Some(admin) => {
            let public = axum::serve(bounded(listeners.public), http::public_router(state.clone()))
                .with_graceful_shutdown(graceful(stopped.clone()));
            let admin =
                axum::serve(bounded(admin), http::admin_router(state)).with_graceful_shutdown(graceful(stopped));
            let (public, admin) = tokio::join!(public.into_future(), admin.into_future());
            public.and(admin)
        }
    };
    if let Err(err) = served {
        tracing::error!(error = %err, "server error");
    }
}

/// Receipts recorded by other gateways (PostgreSQL NOTIFY) onto this gateway's bus.
async fn forward_receipt_notifications(mut listener: sqlx::postgres::PgListener, bus: broadcast::Sender<EventId>) {
    loop {
        match listener.recv().await {
            Ok(note) => {
                for id in note.payload().split(',').filter_map(EventId::parse) {
                    let _ = bus.send(id);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "receipt notifications interrupted; reconnecting");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut signal) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Conventions the code map promises, checked by plain `cargo test`.
#[cfg(test)]
mod tidy {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    /// The domain sits below both front ends: nothing under `replay/`, `delivery/` or `store/`
    /// (nor the modules beside them that both faces share) reaches up into `http/`.
    #[test]
    fn domain_code_never_imports_from_http() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut offenders = Vec::new();
        for file in rust_files(&src) {
            let relative = file.strip_prefix(&src).expect("under src").to_string_lossy().replace('\\', "/");
            if relative.starts_with("http/") || relative.starts_with("cli/") || relative == "lib.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("readable source");
            if text.contains("crate::http") || text.contains("super::http") {
                offenders.push(relative);
            }
        }
        assert!(offenders.is_empty(), "domain modules import from http/: {offenders:?}");
    }

    /// Every source file starts with a `//!` comment saying what it is for.
    #[test]
    fn every_file_says_what_it_is_for() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let missing: Vec<_> = rust_files(&src)
            .into_iter()
            .filter(|f| !std::fs::read_to_string(f).expect("readable source").starts_with("//!"))
            .collect();
        assert!(missing.is_empty(), "files without a `//!` header: {missing:?}");
    }
}
