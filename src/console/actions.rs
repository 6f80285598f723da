//! The console's state-changing handlers: sign in and out, one entry's action, bulk actions
//! (dry run → confirm → job), cancelling a job. Each checks the same-origin guard (in
//! [`super::guard`]), the form's CSRF token and the session's scope, then calls the code the
//! JSON API's handlers call — nothing here talks to the service over HTTP.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Extension, Path, State},
    http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
};
use maud::html;

use super::{
    caller, html as h,
    html::{can_act, page as frame, Nav},
    page,
    pages::signin_page,
    session::{self, Session},
    ConsoleError, Form,
};
use crate::{
    http::{
        dlq::act_on_one,
        jobs::{self, JobRequest, Submitted},
        overrides,
        query::{parse_query, MAX_IDS},
        AppState,
    },
    tokens::verify,
    wire::pb::recovery_command::Action,
};

// ---- sign-in ----

pub async fn signin(State(s): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let Some(token) = form.get("token").and_then(|t| verify(&s.tokens, t)) else {
        let mut r = page(signin_page(Some("That token is not valid here.")));
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    };
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let cookie = session::set_cookie(&session::issue(token, super::now_secs()), secure);
    let mut r = Redirect::to("/console").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub async fn signout(
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    Form::parse(&body).check_csrf(&session)?;
    let mut r = Redirect::to("/console/signin").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

// ---- shared checks ----

/// The form of an action: parsed, its CSRF token checked against the session, and the
/// session allowed to act — in that order, for every action handler.
fn operator_form(session: &Session, body: &Bytes) -> Result<Form, ConsoleError> {
    let form = Form::parse(body);
    form.check_csrf(session)?;
    require_operate(session)?;
    Ok(form)
}

fn require_operate(s: &Session) -> Result<(), ConsoleError> {
    if can_act(s) {
        Ok(())
    } else {
        Err(ConsoleError::forbidden(format!(
            "token `{}` has scope `{}`: acting needs `operate`",
            s.name,
            s.scope.as_str()
        )))
    }
}

/// The console's four actions (the job API takes the same names).
fn action_of(form: &Form) -> Result<Action, ConsoleError> {
    let name = form
        .get("action")
        .ok_or_else(|| ConsoleError::bad_request("choose an action".into()))?;
    match Action::from_str_name(name) {
        Some(
            a @ (Action::Restart | Action::Resume | Action::RetryFailureCallback | Action::Delete),
        ) => Ok(a),
        _ => Err(ConsoleError::bad_request(format!(
            "unknown action `{name}`"
        ))),
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Restart => "Restart",
        Action::Resume => "Resume",
        Action::RetryFailureCallback => "Retry the failure callback of",
        Action::Delete => "Delete",
        _ => "Act on",
    }
}

/// The override fields of a form as the `Upstash-*` headers the JSON API reads, so they are
/// parsed and checked by exactly the same code ([`overrides::parse`]).
fn override_headers(form: &Form) -> Result<HeaderMap, ConsoleError> {
    let mut h = HeaderMap::new();
    for (field, name) in [
        ("retries", overrides::RETRIES),
        ("delay", overrides::DELAY),
        ("retryDelay", overrides::RETRY_DELAY),
        ("flowControlKey", overrides::FLOW_CONTROL_KEY),
        ("flowControlValue", overrides::FLOW_CONTROL_VALUE),
        ("label", overrides::LABEL),
        ("failureCallback", overrides::FAILURE_CALLBACK),
    ] {
        if let Some(v) = form.get(field) {
            let v = HeaderValue::from_str(v).map_err(|_| {
                ConsoleError::bad_request(format!("`{field}` must be visible ASCII"))
            })?;
            h.insert(HeaderName::from_static(name), v);
        }
    }
    Ok(h)
}

const OVERRIDE_FIELDS: [&str; 7] = [
    "retries",
    "delay",
    "retryDelay",
    "flowControlKey",
    "flowControlValue",
    "label",
    "failureCallback",
];

// ---- one entry ----

pub async fn act_one(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(dlq_id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let form = operator_form(&session, &body)?;
    let action = action_of(&form)?;
    let headers = match action {
        Action::Restart | Action::Resume => override_headers(&form)?,
        _ => HeaderMap::new(),
    };
    let force = form.get("force") == Some("true");
    let acted = act_on_one(
        &s,
        &caller(&session),
        action,
        dlq_id.clone(),
        &headers,
        force,
    )
    .await?;
    let entry_href = format!("/console/entries/{}", h::seg(&dlq_id));
    let body = html! {
        p.success role="status" #result {
            @match action {
                Action::Delete => { "Deleted " code { (dlq_id) } "." }
                _ => {
                    (verb(action)) " " code { (dlq_id) } ": done."
                    @for r in &acted.runs { " New run " code.run-id { (r.workflow_run_id) } "." }
                }
            }
        }
        p {
            @if action != Action::Delete { a href=(entry_href) { "Back to the entry" } " · " }
            a href="/console/entries" { "All entries" }
        }
    };
    Ok(page(frame("Done", Nav::Entries, Some(&session), body)))
}

// ---- bulk ----

/// A bulk request from a form: the selection or the filter, the action and its overrides.
fn job_request(form: &Form, action: Action, dry_run: bool) -> Result<JobRequest, ConsoleError> {
    let target = form.get("target").unwrap_or("filter");
    let (dlq_ids, filter, all) = match target {
        "selection" => {
            let ids = form.all("dlqIds");
            if ids.is_empty() {
                return Err(ConsoleError::bad_request(
                    "no entry is selected: tick the entries to act on, or act on the filter".into(),
                ));
            }
            if ids.len() > MAX_IDS {
                return Err(ConsoleError::bad_request(format!(
                    "at most {MAX_IDS} selected entries at once, got {}",
                    ids.len()
                )));
            }
            (Some(ids), None, None)
        }
        "filter" => {
            let q = parse_query(Some(form.get("filter").unwrap_or_default()))?;
            if q.compiled.is_empty() {
                (None, None, Some(true))
            } else {
                let f = serde_json::to_value(&q.filter)
                    .map_err(|e| ConsoleError::internal(format!("filter as JSON: {e}")))?;
                (None, Some(f), None)
            }
        }
        other => {
            return Err(ConsoleError::bad_request(format!(
                "`target` must be `selection` or `filter`, got `{other}`"
            )))
        }
    };
    let overrides = match action {
        Action::Restart | Action::Resume => overrides::parse(&override_headers(form)?)?
            .map(|o| serde_json::to_value(&o))
            .transpose()
            .map_err(|e| ConsoleError::internal(format!("overrides as JSON: {e}")))?,
        _ => None,
    };
    let max_per_second = form
        .get("maxPerSecond")
        .map(|v| {
            v.parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| {
                    ConsoleError::bad_request(format!(
                        "`maxPerSecond` must be a positive number, got `{v}`"
                    ))
                })
        })
        .transpose()?;
    Ok(JobRequest {
        action: action.as_str_name().to_string(),
        dlq_ids,
        filter,
        all,
        overrides,
        max_per_second,
        dry_run,
        reason: Some(format!("console: {target}")),
    })
}

/// Step one shows the dry run's count and asks to confirm; step two (`confirm=yes`) starts
/// the job and shows its progress.
pub async fn bulk(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let form = operator_form(&session, &body)?;
    let action = action_of(&form)?;
    let confirmed = form.get("confirm") == Some("yes");
    let req = job_request(&form, action, !confirmed)?;
    let job_id = format!("job-{}", uuid::Uuid::now_v7());
    match jobs::submit_job(&s, &caller(&session), req, job_id).await? {
        Submitted::Started(id) => {
            Ok(Redirect::to(&format!("/console/jobs/{}", h::seg(&id))).into_response())
        }
        Submitted::DryRun(v) => {
            let target = form.get("target").unwrap_or("filter");
            let filter = form.get("filter").unwrap_or_default();
            let what = match (target, filter.is_empty()) {
                ("selection", _) => "selected".to_string(),
                (_, true) => "— every entry in the DLQ —".to_string(),
                (_, false) => format!("matching {filter}"),
            };
            let body = html! {
                form.card #confirm-form method="post" action="/console/bulk" {
                    p.lead #dry-run {
                        (verb(action)) " " strong #dry-run-count { (v.matched) } " entries " (what) "?"
                    }
                    @if !v.sample.is_empty() {
                        details { summary { "Some of them" } ul { @for id in &v.sample { li { code { (id) } } } } }
                    }
                    p.hint { "Counted now by a dry run; entries that arrive or leave before the job runs change the final figure." }
                    input type="hidden" name="csrf" value=(session.csrf);
                    input type="hidden" name="confirm" value="yes";
                    input type="hidden" name="action" value=(action.as_str_name());
                    input type="hidden" name="target" value=(target);
                    input type="hidden" name="filter" value=(filter);
                    @for id in form.all("dlqIds") { input type="hidden" name="dlqIds" value=(id); }
                    @if let Some(r) = form.get("maxPerSecond") { input type="hidden" name="maxPerSecond" value=(r); }
                    @for f in OVERRIDE_FIELDS {
                        @if let Some(v) = form.get(f) { input type="hidden" name=(f) value=(v); }
                    }
                    div.buttons {
                        button #confirm.danger type="submit" disabled[v.matched == 0] { (verb(action)) " " (v.matched) " entries" }
                        a href="/console/entries" { "Cancel" }
                    }
                }
            };
            Ok(page(frame("Confirm", Nav::Entries, Some(&session), body)))
        }
    }
}

pub async fn cancel_job(
    State(s): State<Arc<AppState>>,
    Extension(session): Extension<Session>,
    Path(job_id): Path<String>,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    operator_form(&session, &body)?;
    jobs::cancel(&s, &caller(&session), &job_id).await?;
    Ok(Redirect::to(&format!("/console/jobs/{}", h::seg(&job_id))).into_response())
}
