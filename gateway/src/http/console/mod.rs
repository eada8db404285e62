//! The operator console at `/ui/`: server-rendered HTML pages over the same functions the
//! JSON handlers call (a second face on the core, not a second backend).
//!
//! Pages are askama templates (`gateway/templates/console/`), checked at compile time; the
//! stylesheet and one small script (`gateway/assets/`) are embedded in the binary and served
//! from it (no CDN, nothing to build). Every form works without the script, which only adds
//! span selection by dragging on the chart, the overview's refresh and live replay progress.
//!
//! Architecture invariants: a page handler never reads the store for what an API handler
//! computes (it calls that handler's function); every state-changing request is a form `POST`
//! taken through [`session::Posted`], which refuses it without the session's CSRF token or
//! from another site; every response under `/ui/` carries [`CSP`].

mod chart;
mod events;
mod gaps;
mod jobs;
mod overview;
mod page;
mod reconcile;
mod replay;
mod session;
mod storage;

pub use storage::StorageFigures;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;

/// No inline script or style, nothing from elsewhere, no framing, forms only to ourselves.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("../../../assets/console.css");
const SCRIPT: &str = include_str!("../../../assets/console.js");

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { axum::response::Redirect::to("/ui/") }))
        .route("/ui/", get(overview::page))
        .route("/ui/events", get(events::list))
        .route("/ui/events/{id}", get(events::show))
        .route("/ui/events/{id}/resolve", axum::routing::post(events::resolve))
        .route("/ui/gaps", get(gaps::page))
        .route("/ui/gaps/resolve", axum::routing::post(gaps::resolve))
        .route("/ui/reconcile", axum::routing::post(reconcile::run))
        .route("/ui/replay", get(replay::form))
        .route("/ui/replay/preview", axum::routing::post(replay::preview))
        .route("/ui/replay/run", axum::routing::post(replay::run))
        .route("/ui/replays", get(jobs::list))
        .route("/ui/replays/{id}", get(replay::job))
        .route("/ui/replays/{id}/events", get(replay::events))
        .route("/ui/replays/{id}/cancel", get(replay::cancel_form).post(replay::cancel))
        .route("/ui/replays/{id}/pause", axum::routing::post(replay::pause))
        .route("/ui/replays/{id}/resume", axum::routing::post(replay::resume))
        .route("/ui/signin", get(session::signin_form).post(session::signin))
        .route("/ui/signout", axum::routing::post(session::signout))
        .route("/ui/static/console.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/ui/static/console.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .layer(axum::middleware::map_response(secure_headers))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}

async fn not_found() -> Response {
    page::message(StatusCode::NOT_FOUND, "Not found", "There is no console page here.")
}

/// The headers of every console response: the policy, no sniffing, no referrer to other
/// sites, no framing;
/// pages are not cached (they show live data and carry the CSRF token).
async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // `same-origin`, not `no-referrer`: with no referrer a browser sends `Origin: null` on
    // the console's own form posts, which [`session::Posted`] must tell from a forged one.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
