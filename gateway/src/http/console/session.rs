//! Signing in and out of the console, and who a console request comes from.
//!
//! Sign-in takes any API token (form field `token`) and checks it exactly as the bearer header
//! is checked. The browser then holds only a random session id, in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` over TLS); the database holds the id's sha256, the
//! token's sha256 and the session's CSRF token. Every request re-checks the token, so a
//! revoked or expired token ends its sessions at once; a session idle past
//! `console.session_idle` is over.
//!
//! A state-changing request is taken only through [`Posted`]: a form `POST` carrying the
//! session's CSRF token, not sent from another site (`Sec-Fetch-Site`, `Origin`).

use axum::extract::{Form, FromRequest, FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use super::page;
use crate::access::{Role, token_hash};
use crate::http::{AppState, Caller};
use crate::store::ConsoleSession;

const SESSION_COOKIE: &str = "hookwarden_session";
/// The sign-in form's own CSRF token (there is no session yet): a cookie and a hidden field
/// that must match.
const SIGNIN_COOKIE: &str = "hookwarden_signin";
/// A session's last use is written at most this often (its idle time counts from it).
const TOUCH_EVERY_MS: i64 = 60_000;

/// A signed-in console user: the API caller it acts as, and its session's CSRF token.
#[derive(Debug, Clone)]
pub struct Signed {
    pub caller: Caller,
    pub csrf: String,
}

impl Signed {
    pub fn may(&self, role: Role) -> bool {
        self.caller.role >= role
    }
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Over TLS (a proxy in front says so), or configured to assume it.
fn secure(app: &AppState, headers: &HeaderMap) -> bool {
    app.config.console.secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, secure: bool, clear: bool) -> HeaderValue {
    let mut text = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if secure {
        text.push_str("; Secure");
    }
    if clear {
        text.push_str("; Max-Age=0");
    }
    HeaderValue::from_str(&text).expect("cookie text is ASCII")
}

fn idle_before(app: &AppState, now: i64) -> i64 {
    now - app.config.console.session_idle.as_millis() as i64
}

/// Why a console request is not from a signed-in user (or is from another site).
pub enum Refused {
    /// A page asked for without a session: to the sign-in form, coming back afterwards.
    SignIn {
        next: String,
        notice: Option<&'static str>,
    },
    Forbidden(&'static str),
    Unavailable,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignIn { next, notice } => {
                let mut to = format!("/ui/signin?next={}", percent_encoding::utf8_percent_encode(&next, QUERY));
                if let Some(notice) = notice {
                    to.push_str("&notice=");
                    to.push_str(notice);
                }
                Redirect::to(&to).into_response()
            }
            Refused::Forbidden(why) => page::message(StatusCode::FORBIDDEN, "Refused", why),
            Refused::Unavailable => page::message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Store unavailable",
                "The event store is unavailable; try again.",
            ),
        }
    }
}

const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.');

/// The session of this request, if it has a live one; touched when last used a while ago.
async fn session_of(parts: &Parts, app: &AppState) -> Result<Option<(ConsoleSession, Caller)>, Refused> {
    let Some(id) = cookie(&parts.headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let now = app.clock.now_ms();
    let id_hash = token_hash(id);
    let Some(session) = app.store.find_session(&id_hash, idle_before(app, now)).await.map_err(|err| {
        tracing::error!(error = %err, "console session lookup");
        Refused::Unavailable
    })?
    else {
        return Ok(None);
    };
    let caller = match Caller::from_token_hash(app, &session.token_hash).await {
        Ok(caller) => caller,
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => return Err(Refused::Unavailable),
        // Revoked or expired since sign-in: the session is over.
        Err(_) => {
            let _ = app.store.delete_session(&id_hash).await;
            return Ok(None);
        }
    };
    if now - session.last_seen_at >= TOUCH_EVERY_MS
        && let Err(err) = app.store.touch_session(&id_hash, now).await
    {
        tracing::warn!(error = %err, "console session not touched");
    }
    Ok(Some((session, caller)))
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Refused> {
        match session_of(parts, app).await? {
            Some((session, caller)) => Ok(Signed { caller, csrf: session.csrf }),
            None => {
                let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui/").to_string();
                let had_cookie = cookie(&parts.headers, SESSION_COOKIE).is_some();
                Err(Refused::SignIn { next, notice: had_cookie.then_some("expired") })
            }
        }
    }
}

impl OptionalFromRequestParts<AppState> for Signed {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Option<Self>, Refused> {
        Ok(session_of(parts, app).await?.map(|(session, caller)| Signed { caller, csrf: session.csrf }))
    }
}

/// Refuses a request another site made the browser send: `Sec-Fetch-Site` (sent by every
/// current browser) must say same-origin or user-initiated, and an `Origin` must be this host.
fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let refused =
        Refused::Forbidden("This request came from another site; the console takes forms from its own pages only.");
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused);
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host) {
            return Err(refused);
        }
    }
    Ok(())
}

fn tokens_match(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// A state-changing console request: a signed-in user's form, with its session's CSRF token,
/// from the console's own pages. Anything else is refused (403) before the handler runs.
pub struct Posted<T> {
    pub who: Signed,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, app: &AppState) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        same_origin(&parts.headers).map_err(IntoResponse::into_response)?;
        let who = match session_of(&parts, app).await.map_err(IntoResponse::into_response)? {
            Some((session, caller)) => Signed { caller, csrf: session.csrf },
            None => {
                return Err(
                    Refused::Forbidden("No console session: sign in again and repeat what you did.").into_response()
                );
            }
        };
        let body = axum::body::Bytes::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(|e| page::message(StatusCode::BAD_REQUEST, "Bad form", &e.body_text()))?;
        let bad_form =
            |e: serde_urlencoded::de::Error| page::message(StatusCode::BAD_REQUEST, "Bad form", &e.to_string());
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).map_err(bad_form)?;
        let csrf = pairs.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str()).unwrap_or("");
        if !tokens_match(csrf, &who.csrf) {
            return Err(Refused::Forbidden(
                "The form's CSRF token is missing or not this session's; reload the page and try again.",
            )
            .into_response());
        }
        let form = serde_urlencoded::from_bytes(&body).map_err(bad_form)?;
        Ok(Posted { who, form })
    }
}

#[derive(Deserialize)]
pub struct SigninQuery {
    next: Option<String>,
    notice: Option<String>,
}

/// Only a path of the console itself is somewhere to go back to after sign-in.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("/ui//") && !n.contains('\\') => n.to_string(),
        _ => "/ui/".to_string(),
    }
}

pub async fn signin_form(
    State(app): State<AppState>,
    headers: HeaderMap,
    signed: Option<Signed>,
    axum::extract::Query(q): axum::extract::Query<SigninQuery>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if signed.is_some() {
        return Redirect::to(&next).into_response();
    }
    let notice = match q.notice.as_deref() {
        Some("expired") => {
            Some("Your session ended (idle too long, signed out, or its token was revoked). Sign in again.")
        }
        Some("signedout") => Some("Signed out."),
        _ => None,
    };
    signin_page(&app, &headers, StatusCode::OK, next, notice, None)
}

fn signin_page(
    app: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    next: String,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let csrf = random_hex();
    let mut response = page::signin(status, &csrf, &next, notice, error);
    response.headers_mut().append(header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, &csrf, secure(app, headers), false));
    response
}

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

pub async fn signin(State(app): State<AppState>, headers: HeaderMap, Form(form): Form<SigninForm>) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused.into_response();
    }
    let next = safe_next(form.next.as_deref());
    if !tokens_match(&form.csrf, cookie(&headers, SIGNIN_COOKIE).unwrap_or("")) {
        return signin_page(
            &app,
            &headers,
            StatusCode::FORBIDDEN,
            next,
            None,
            Some("The sign-in form expired or came from elsewhere; try again."),
        );
    }
    let token = form.token.trim();
    if token.is_empty() {
        return signin_page(&app, &headers, StatusCode::UNAUTHORIZED, next, None, Some("Enter a token."));
    }
    let caller = match Caller::from_token(&app, token).await {
        Ok(caller) => caller,
        Err(err) if err.status == StatusCode::SERVICE_UNAVAILABLE => return Refused::Unavailable.into_response(),
        Err(err) => {
            let why = match err.code {
                "token_revoked" => "That token was revoked.",
                "token_expired" => "That token has expired.",
                _ => "That token is not valid.",
            };
            return signin_page(&app, &headers, StatusCode::UNAUTHORIZED, next, None, Some(why));
        }
    };
    let now = app.clock.now_ms();
    let id = random_hex();
    let session = ConsoleSession {
        id_hash: token_hash(&id),
        token_hash: token_hash(token),
        csrf: random_hex(),
        created_at: now,
        last_seen_at: now,
    };
    if let Err(err) = app.store.create_session(&session, idle_before(&app, now)).await {
        tracing::error!(error = %err, "console session not stored");
        return Refused::Unavailable.into_response();
    }
    tracing::info!(who = %caller.name, role = caller.role.as_str(), "console sign-in");
    let mut response = Redirect::to(&next).into_response();
    let secure = secure(&app, &headers);
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, &id, secure, false));
    headers.append(header::SET_COOKIE, set_cookie(SIGNIN_COOKIE, "", secure, true));
    response
}

#[derive(Deserialize)]
pub struct NoFields {}

pub async fn signout(State(app): State<AppState>, headers: HeaderMap, posted: Posted<NoFields>) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE)
        && let Err(err) = app.store.delete_session(&token_hash(id)).await
    {
        tracing::error!(error = %err, "console session not deleted");
        return Refused::Unavailable.into_response();
    }
    let Posted { who, form: NoFields {} } = posted;
    tracing::info!(who = %who.caller.name, "console sign-out");
    let mut response = Redirect::to("/ui/signin?notice=signedout").into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", secure(&app, &headers), true));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_somewhere_to_return_to() {
        assert_eq!(safe_next(Some("/ui/events?x=1")), "/ui/events?x=1");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(safe_next(Some("/ui//evil.example")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn requests_from_other_sites_are_refused() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("gw.internal:9090"));
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert!(same_origin(&headers(&[])).is_ok());
        assert!(
            same_origin(&headers(&[("sec-fetch-site", "same-origin"), ("origin", "http://gw.internal:9090")])).is_ok()
        );
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[("origin", "http://gw.internal:9091")])).is_err());
        assert!(same_origin(&headers(&[("origin", "null")])).is_err());
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_over_tls() {
        let plain = set_cookie(SESSION_COOKIE, "abc", false, false);
        assert_eq!(plain, "hookwarden_session=abc; Path=/ui; HttpOnly; SameSite=Strict");
        assert!(set_cookie(SESSION_COOKIE, "abc", true, false).to_str().unwrap().ends_with("; Secure"));
    }
}
