//! The web console: server-rendered pages at `/console` over the same state the JSON API uses
//! (the store view, the command ledger, the command submitter), plus a small script for the
//! live parts. Assets are compiled into the binary; nothing is installed or fetched.
//!
//! Security (docs/design.md §5 *Console*): a stateless signed session cookie ([`session`]),
//! CSRF tokens on every form plus a same-origin check on every POST, a strict
//! Content-Security-Policy and friends on every response, escaping by construction in the
//! templates ([`html`]). The session's scope decides which forms are rendered, and every
//! action handler checks it again.

mod actions;
pub mod html;
pub mod pages;
pub mod rejected;
pub mod session;

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use maud::html;

use crate::http::{auth::Caller, ApiError, AppState};
use session::Session;

/// Sent with every console response. No inline script or style is allowed anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let console = Router::new()
        .route("/console", get(pages::overview))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route(
            "/console/signin",
            get(pages::signin_form).post(actions::signin),
        )
        .route("/console/signout", post(actions::signout))
        .route("/console/entries", get(pages::list))
        .route("/console/entries/{dlq_id}", get(pages::entry))
        .route("/console/entries/{dlq_id}/act", post(actions::act_one))
        .route("/console/count", get(pages::count))
        .route("/console/bulk", post(actions::bulk))
        .route("/console/groups", get(pages::groups))
        .route("/console/jobs", get(pages::jobs))
        .route("/console/jobs/{job_id}", get(pages::job))
        .route("/console/jobs/{job_id}/progress", get(pages::job_progress))
        .route("/console/jobs/{job_id}/cancel", post(actions::cancel_job))
        .route("/console/rejected", get(pages::rejected))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        // Any other console path: a page saying so (not the JSON API's 404).
        .route("/console/{*rest}", get(no_such_page))
        .route_layer(middleware::from_fn_with_state(state, guard));
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .merge(console)
}

async fn no_such_page() -> ConsoleError {
    ConsoleError::not_found("there is no such console page".into())
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Assets change only with the binary; a short cache keeps upgrades visible.
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// What can go wrong in a console request: the API's own error ([`ApiError`], one type for
/// both), shown as a page with the status and the reason instead of JSON.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConsoleError(#[from] pub ApiError);

impl ConsoleError {
    pub fn bad_request(m: String) -> Self {
        ConsoleError(ApiError::BadRequest(m))
    }
    pub fn forbidden(m: String) -> Self {
        ConsoleError(ApiError::Forbidden(m))
    }
    pub fn not_found(m: String) -> Self {
        ConsoleError(ApiError::NotFound(m))
    }
    pub fn conflict(m: String) -> Self {
        ConsoleError(ApiError::Conflict(m))
    }
    pub fn unavailable(m: String) -> Self {
        ConsoleError(ApiError::Unavailable(m))
    }
    pub fn internal(m: String) -> Self {
        ConsoleError(ApiError::Internal(m))
    }

    /// The API's status, except that a refused credential is a 403 page: a console session
    /// that lost its scope is signed in, not anonymous.
    fn status(&self) -> StatusCode {
        match &self.0 {
            ApiError::Unauthorized(_) => StatusCode::FORBIDDEN,
            e => e.status(),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        let title = status.canonical_reason().unwrap_or("Error");
        let body = html! {
            p.error role="alert" { (self.to_string()) }
            p { a href="/console" { "Back to the console" } }
        };
        let mut r = page(html::page(title, html::Nav::None, None, body));
        *r.status_mut() = status;
        r
    }
}

/// A rendered page as a response.
fn page(markup: maud::Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// Checks every console request: cross-site POSTs are refused; pages other than sign-in and
/// the assets need a valid session (GETs are sent to sign in, other methods get 401); every
/// response carries the security headers.
async fn guard(State(s): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let public = path == "/console/signin" || path.starts_with("/console/assets/");
    let reading = req.method() == Method::GET || req.method() == Method::HEAD;
    let mut response = if !reading && !same_origin(req.headers()) {
        ConsoleError::forbidden(
            "cross-origin request refused: console forms are accepted only from the console".into(),
        )
        .into_response()
    } else {
        match (public, session_of(&s, req.headers())) {
            (true, _) => next.run(req).await,
            (false, Some(session)) => {
                req.extensions_mut().insert(session);
                next.run(req).await
            }
            (false, None) if reading => Redirect::to("/console/signin").into_response(),
            (false, None) => {
                let mut r = ConsoleError::forbidden(
                    "you are not signed in (or the session expired): sign in again".into(),
                )
                .into_response();
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                r
            }
        }
    };
    security_headers(response.headers_mut());
    response
}

fn security_headers(h: &mut HeaderMap) {
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        // `same-origin`, not `no-referrer`: with `no-referrer` Chromium sends `Origin: null` on
        // form POSTs, and the same-origin check could not tell the console from a stranger.
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    // Pages hold entry data and CSRF tokens: never cached. Assets set their own.
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// False when the browser says another site sent the request (`Sec-Fetch-Site`), or `Origin`
/// names a different origin than the `Host` it was sent to. Clients that send neither (not a
/// browser) still need the CSRF token.
fn same_origin(h: &HeaderMap) -> bool {
    let text = |name| h.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    match (text("origin"), text("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin == format!("http://{host}") || origin == format!("https://{host}")
        }
        (Some(_), None) => false,
    }
}

fn now_secs() -> i64 {
    crate::now_ms() / 1000
}

fn session_of(s: &AppState, h: &HeaderMap) -> Option<Session> {
    let cookies = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let value = session::cookie_value(cookies)?;
    match session::verify(&s.tokens, value, now_secs()) {
        Ok(sess) => Some(sess),
        Err(e) => {
            tracing::debug!(error = %e, "console session refused");
            None
        }
    }
}

/// The caller the shared action code records (`requested_by`).
fn caller(s: &Session) -> Caller {
    Caller {
        name: s.name.clone(),
        scope: s.scope,
    }
}

/// A form body: its fields in order (keys may repeat, e.g. the selected `dlqIds`).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(body: &[u8]) -> Form {
        Form(
            form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The field's value, trimmed; `None` when absent or blank.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Every non-blank value of a repeated field.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }

    /// Refuses the form unless it carries this session's CSRF token.
    pub fn check_csrf(&self, s: &Session) -> Result<(), ConsoleError> {
        match self.get("csrf") {
            Some(t) if s.csrf_ok(t) => Ok(()),
            _ => Err(ConsoleError::forbidden(
                "the form's CSRF token is missing or belongs to another session: reload the page and try again"
                    .into(),
            )),
        }
    }
}

/// The filter part of a console query string, in the API's own parameters: blank fields (an
/// HTML form sends every field) are dropped, and the date fields may be given as
/// `YYYY-MM-DDTHH:MM[:SS]` in UTC (what a `datetime-local` input sends) as well as unix ms.
/// Paging parameters are returned apart. The result is then checked by the API's own parser.
pub struct ConsoleQuery {
    /// `name=value&…` of the filters only (for links, the live count and bulk actions).
    pub filter: String,
    pub cursor: Option<String>,
    pub order: Option<String>,
    pub count: Option<String>,
}

pub fn console_query(raw: Option<&str>) -> Result<ConsoleQuery, ConsoleError> {
    let mut filter = form_urlencoded::Serializer::new(String::new());
    let mut q = ConsoleQuery {
        filter: String::new(),
        cursor: None,
        order: None,
        count: None,
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k.as_ref() {
            "cursor" => q.cursor = Some(v.to_string()),
            "order" => q.order = Some(v.to_string()),
            "count" => q.count = Some(v.to_string()),
            "fromDate" | "toDate" | "workflowCreatedAt" => {
                filter.append_pair(&k, &date_ms(&k, v)?);
            }
            _ => {
                filter.append_pair(&k, v);
            }
        }
    }
    q.filter = filter.finish();
    Ok(q)
}

/// Unix ms as given, or a UTC date-time turned into unix ms.
fn date_ms(name: &str, v: &str) -> Result<String, ConsoleError> {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(v.to_string());
    }
    let full = if v.len() == 16 {
        format!("{v}:00")
    } else {
        v.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis().to_string())
        .ok_or_else(|| {
            ConsoleError::bad_request(format!(
                "`{name}` must be unix milliseconds or a UTC date-time like 2026-01-31T13:45, got `{v}`"
            ))
        })
}

/// Unix ms as a `datetime-local` value (UTC), to refill the filter form.
pub fn ms_to_input(v: &str) -> String {
    v.parse::<u64>()
        .ok()
        .map(|ms| {
            let t = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string();
            t.trim_end_matches('Z').chars().take(16).collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_fields_are_dropped_and_dates_become_ms() {
        let q = console_query(Some(
            "label=a&workflowUrl=&fromDate=2023-11-14T22:13&order=latestFirst&cursor=&count=50",
        ))
        .unwrap();
        assert_eq!(q.filter, "label=a&fromDate=1699999980000");
        assert_eq!(q.order.as_deref(), Some("latestFirst"));
        assert_eq!(q.cursor, None);
        assert_eq!(ms_to_input("1699999980000"), "2023-11-14T22:13");
        let err = console_query(Some("toDate=yesterday")).err().unwrap();
        assert!(err.to_string().contains("`toDate` must be"), "{err}");
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h), "no Origin: not a browser");
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert("origin", HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&h));
        h.insert("origin", HeaderValue::from_static("http://127.0.0.1:8080"));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }
}
