//! What every console page shares: the navigation bar (who is signed in, the sign-out form),
//! rendering a template into a response, and the plain message and sign-in pages.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::session::Signed;
use crate::access::{Role, SourceScope};

/// The navigation bar's data.
pub struct Nav {
    pub who: String,
    pub role: &'static str,
    /// "every source", or the sources a scoped token may see.
    pub scope: String,
    pub csrf: String,
    /// Which page is shown (`overview`, `events`, …), marked in the bar.
    pub current: &'static str,
    /// Whether the signed-in token may change things (operator or admin).
    pub operates: bool,
}

impl Nav {
    pub fn new(who: &Signed, current: &'static str) -> Self {
        Self {
            who: who.caller.name.clone(),
            role: who.caller.role.as_str(),
            scope: match &who.caller.scope {
                SourceScope::All => "every source".into(),
                SourceScope::Only(sources) => sources.iter().cloned().collect::<Vec<_>>().join(", "),
            },
            csrf: who.csrf.clone(),
            current,
            operates: who.may(Role::Operator),
        }
    }

    pub fn is(&self, page: &str) -> bool {
        self.current == page
    }
}

/// The sources the signed-in token may see, for a page's source chooser, each with whether it
/// is the `chosen` one.
pub fn source_choices(app: &crate::http::AppState, who: &Signed, chosen: Option<&str>) -> Vec<(String, bool)> {
    app.config
        .sources
        .iter()
        .filter(|s| who.caller.scope.allows(&s.name))
        .map(|s| (s.name.clone(), Some(s.name.as_str()) == chosen))
        .collect()
}

/// A rendered template with its status; a template that fails to render is a logged 500.
pub fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "console template");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be rendered").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct Message<'a> {
    title: &'a str,
    text: &'a str,
}

/// A page that only says something (refused, not found, unavailable).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    render(status, &Message { title, text })
}

#[derive(Template)]
#[template(path = "console/signin.html")]
struct Signin<'a> {
    csrf: &'a str,
    next: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

pub fn signin(status: StatusCode, csrf: &str, next: &str, notice: Option<&str>, error: Option<&str>) -> Response {
    render(status, &Signin { csrf, next, notice, error })
}
