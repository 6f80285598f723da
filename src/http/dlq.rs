//! Upstash's DLQ dialect, Workflow and QStash (docs/design.md §5): list and read entries, and the
//! actions — restart, resume (QStash's "retry": a run re-delivered with its completed steps
//! replayed), re-run or cancel the failure callback, delete. Every action is a
//! `RecoveryCommand` written to the command topic; the handler answers once its result is in.
//! An action with a deduplication key ([`super::dedup`]) acts once however often it is sent.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Extension, Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{
    auth::Caller,
    dedup,
    json::SizedJson,
    messages::{
        CallbackCanceled, DeleteResponse, DlqMessage, ErrorBody, FailureGroup, GroupStep,
        GroupsResponse, ListResponse, PublishResponse, RetryResponse, SkippedEntry, WorkflowRun,
        WorkflowRunsResponse,
    },
    overrides,
    query::{parse_groups_query, parse_query, Target, MAX_IDS},
    ApiError, AppState,
};
use crate::{
    commands::submit::SubmitError,
    signature::{normalise_message, url_without_query},
    store::{filter::Order, view::Group, EntryState},
    wire::{
        ids::new_run_id,
        pb::{
            failure_callback_info::State as CbState,
            item_outcome::Status,
            recovery_command::{Action, Ids, Selector},
            CommandResult, Overrides, RecoveryCommand,
        },
    },
};

/// How long an action waits for its command's result before answering 503.
pub const ACTION_WAIT: Duration = Duration::from_secs(20);
/// A bulk page is at most what the republish rate moves in this long, so it is answered within
/// [`ACTION_WAIT`] however low `--max-per-second` is set.
const PAGE_BUDGET: Duration = Duration::from_secs(10);
/// After an action, how long the handler waits for this instance's view to show it (so a list
/// right after a delete does not show the deleted entry).
const VIEW_CATCH_UP: Duration = Duration::from_secs(5);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/dlq", get(list).delete(delete_bulk))
        // Under both prefixes, as every read route is; the static segment wins over `{dlq_id}`.
        .route("/v2/workflows/dlq/groups", get(groups))
        .route("/v2/dlq/groups", get(groups))
        .route("/v2/workflows/dlq", get(list).delete(delete_bulk))
        .route("/v2/dlq/{dlq_id}", get(get_one).delete(delete_one))
        .route(
            "/v2/workflows/dlq/{dlq_id}",
            get(get_one).delete(delete_one),
        )
        .route("/v2/workflows/dlq/restart", post(restart_bulk))
        .route("/v2/workflows/dlq/resume", post(resume_bulk))
        .route("/v2/workflows/dlq/restart/{dlq_id}", post(restart_one))
        .route("/v2/workflows/dlq/resume/{dlq_id}", post(resume_one))
        .route(
            "/v2/workflows/dlq/callback/{dlq_id}",
            post(callback_one).delete(cancel_callback),
        )
        .route("/v2/dlq/retry", post(retry_bulk))
        .route("/v2/dlq/retry/{dlq_id}", post(retry_one))
}

// ---- documentation of the parameters (what `parse_query` accepts) ----

/// Filters: repeat a parameter or comma-separate values for several (OR within a field, AND
/// across fields).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct FilterParams {
    /// Entered the DLQ at or after (unix ms).
    #[param(minimum = 0)]
    fromDate: Option<i64>,
    /// Entered the DLQ at or before (unix ms).
    #[param(minimum = 0)]
    toDate: Option<i64>,
    #[param(explode = true, style = Form)]
    workflowUrl: Option<Vec<String>>,
    workflowRunId: Option<String>,
    /// Unix ms.
    workflowCreatedAt: Option<i64>,
    #[param(explode = true, style = Form)]
    label: Option<Vec<String>>,
    /// `CALLBACK_INPROGRESS`, `CALLBACK_SUCCESS`, `CALLBACK_FAIL` or `CALLBACK_CANCELED`.
    #[param(explode = true, style = Form)]
    failureFunctionState: Option<Vec<String>>,
    #[param(explode = true, style = Form)]
    callerIp: Option<Vec<String>>,
    #[param(explode = true, style = Form)]
    flowControlKey: Option<Vec<String>>,
    /// QStash: the failed message's id.
    messageId: Option<String>,
    /// QStash: the URL group (the SDKs' `urlGroup`).
    #[param(explode = true, style = Form)]
    topicName: Option<Vec<String>>,
    /// QStash: the schedule that sent the message.
    #[param(explode = true, style = Form)]
    scheduleId: Option<Vec<String>>,
    /// QStash: the queue it was enqueued to.
    #[param(explode = true, style = Form)]
    queueName: Option<Vec<String>>,
    /// HTTP status of the last failed delivery.
    #[param(explode = true, style = Form)]
    responseStatus: Option<Vec<i32>>,
    /// Failure signature (16 hex digits, from `GET /v2/workflows/dlq/groups`).
    #[param(explode = true, style = Form)]
    signature: Option<Vec<String>>,
    /// `true`: only parked entries (redriven `--max-redrives` times); `false`: none of them.
    parked: Option<bool>,
}

/// Single-entry restart and resume: act on a parked entry too.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ForceParams {
    /// `true`: restart or resume the entry even if it is parked (redriven `--max-redrives`
    /// times). Only here, one entry at a time: bulk actions always skip parked entries.
    force: Option<bool>,
}

/// Paging through groups.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct GroupPageParams {
    /// From the previous answer.
    cursor: Option<String>,
    /// Default and maximum 100.
    #[param(minimum = 1, maximum = 100)]
    count: Option<i64>,
    /// Sent by the SDKs; accepted and ignored.
    source: Option<String>,
}

/// Paging: an opaque cursor from the previous answer, and the page size.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    cursor: Option<String>,
    /// Default and maximum 100.
    #[param(minimum = 1, maximum = 100)]
    count: Option<i64>,
    /// Sent by the SDKs (`workflow`); accepted and ignored.
    source: Option<String>,
    /// `earliestFirst` (default) or `latestFirst`, by when the entry entered the DLQ. A cursor
    /// keeps the order it was made in.
    order: Option<String>,
}

/// Exactly these entries (at most 100; not with filters or a cursor).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct IdsParams {
    #[param(explode = true, style = Form)]
    dlqIds: Option<Vec<String>>,
}

/// `DELETE /v2/dlq` may name the entries in a JSON body instead (QStash's `delete_many`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteIdsBody {
    #[schema(min_items = 1, max_items = 100)]
    pub dlq_ids: Vec<String>,
}

// ---- reading ----

fn view_ready(s: &AppState) -> Result<(), ApiError> {
    if s.view.is_caught_up() {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "the store view is still loading from Kafka; retry shortly".into(),
        ))
    }
}

/// List DLQ entries, oldest first (or newest, with `order=latestFirst`); or, with `dlqIds`,
/// those of the named entries that exist.
#[utoipa::path(get, path = "/v2/workflows/dlq", tag = "dlq",
    params(IdsParams, FilterParams, PageParams),
    responses(
        (status = 200, description = "One page; `cursor` is absent on the last", body = ListResponse),
        (status = 400, description = "A malformed parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 503, description = "The view is still loading", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(s): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<SizedJson<ListResponse>, ApiError> {
    let q = parse_query(raw.as_deref())?;
    view_ready(&s)?;
    if !q.dlq_ids.is_empty() {
        let mut found: Vec<_> = q.dlq_ids.iter().filter_map(|id| s.view.get(id)).collect();
        found.sort_by(|a, b| (a.created_at, &a.dlq_id).cmp(&(b.created_at, &b.dlq_id)));
        if q.order == Order::LatestFirst {
            found.reverse();
        }
        let capacity = found.len() * JSON_BYTES_PER_ENTRY;
        return Ok(SizedJson {
            value: ListResponse {
                messages: found.into_iter().map(|e| message(&s, e)).collect(),
                cursor: None,
            },
            capacity,
        });
    }
    let page = s
        .view
        .list_in(&q.compiled, q.order, q.cursor.as_ref(), q.count);
    Ok(SizedJson {
        // An entry's JSON is about 1.5 times its protobuf (field names, escaped quotes).
        capacity: page.stored_bytes * 2 + 256,
        value: ListResponse {
            messages: page.entries.into_iter().map(|e| message(&s, e)).collect(),
            cursor: page.next.map(|c| c.encode()),
        },
    })
}

/// What a listed entry's JSON takes when its stored size is not at hand.
const JSON_BYTES_PER_ENTRY: usize = 2048;

fn message(s: &AppState, e: crate::wire::pb::DlqEntry) -> DlqMessage {
    DlqMessage::guarded(e, s.cfg.max_redrives)
}

/// Failure groups: the entries by signature (the same kind of failure), largest first,
/// narrowed by the usual filters.
#[utoipa::path(get, path = "/v2/workflows/dlq/groups", tag = "dlq",
    params(FilterParams, GroupPageParams),
    responses(
        (status = 200, description = "One page of groups; `cursor` is absent on the last", body = GroupsResponse),
        (status = 400, description = "A malformed parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 503, description = "The view is still loading", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn groups(
    State(s): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<GroupsResponse>, ApiError> {
    let q = parse_groups_query(raw.as_deref())?;
    view_ready(&s)?;
    let page = s.view.groups(&q.filter, q.cursor.as_ref(), q.count);
    Ok(Json(GroupsResponse {
        groups: page.groups.into_iter().map(group).collect(),
        cursor: page.next.map(|c| c.encode()),
    }))
}

fn group(g: Group) -> FailureGroup {
    let ev = g
        .sample
        .as_ref()
        .and_then(|e| e.event.clone())
        .unwrap_or_default();
    FailureGroup {
        signature: g.signature,
        count: g.count,
        first_seen: g.first_seen,
        last_seen: g.last_seen,
        workflow_url: url_without_query(&ev.workflow_url).to_string(),
        failed_step: ev.failed_step.as_ref().map(|st| GroupStep {
            step_name: st.step_name.clone(),
            step_type: st.step_type.clone(),
        }),
        response_status: ev.response_status,
        error_pattern: normalise_message(&ev.error_message),
        error_sample: ev.error_message,
        sample_dlq_id: g.sample.map(|e| e.dlq_id).unwrap_or_default(),
    }
}

fn not_found(dlq_id: &str) -> ApiError {
    ApiError::NotFound(format!("DLQ message `{dlq_id}` was not found"))
}

/// One DLQ entry.
#[utoipa::path(get, path = "/v2/workflows/dlq/{dlqId}", tag = "dlq",
    params(("dlqId" = String, Path, description = "The entry's id")),
    responses(
        (status = 200, body = DlqMessage),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such entry", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get_one(
    State(s): State<Arc<AppState>>,
    Path(dlq_id): Path<String>,
) -> Result<Json<DlqMessage>, ApiError> {
    view_ready(&s)?;
    s.view
        .get(&dlq_id)
        .map(|e| Json(message(&s, e)))
        .ok_or_else(|| not_found(&dlq_id))
}

// ---- acting ----

/// What an action did to the entries it targeted.
pub(crate) struct Acted {
    pub(crate) runs: Vec<WorkflowRun>,
    pub(crate) ok: Vec<String>,
    /// Refused by the command consumer (e.g. no failed callback to re-run), with why.
    refused: Vec<(String, String)>,
    /// Of those, the ones left alone (`SKIPPED`: parked), with why.
    skipped: Vec<(String, String)>,
    /// Gone by the time the command consumer got to them.
    vanished: Vec<String>,
    cursor: Option<String>,
}

/// Resolves the target against the view, writes the command, waits for its result. With a
/// deduplication key (`dedup`: the command id it stands for), a command already finished is
/// answered with its first outcome, acting on nothing.
async fn act(
    s: &AppState,
    caller: &Caller,
    action: Action,
    target: Target,
    overrides: Option<Overrides>,
    dedup: Option<String>,
    force: bool,
) -> Result<Acted, ApiError> {
    view_ready(s)?;
    if !s.ledger.is_caught_up() {
        return Err(ApiError::Unavailable(
            "the command ledger is still loading from Kafka; retry shortly".into(),
        ));
    }
    if let Some(first) = dedup.as_deref().and_then(|id| s.ledger.finished(id)) {
        let cursor = Some(first.page_cursor.clone()).filter(|c| !c.is_empty());
        return sort_outcomes(&first.command_id, &first, cursor);
    }
    let (ids, cursor, reason) = match target {
        Target::Ids(ids) => {
            let missing: Vec<&str> = ids
                .iter()
                .filter(|id| s.view.state(id) != EntryState::Present)
                .map(String::as_str)
                .collect();
            if missing.len() == 1 && ids.len() == 1 {
                return Err(not_found(missing[0]));
            }
            if !missing.is_empty() {
                return Err(ApiError::NotFound(format!(
                    "Some DLQ messages were not found: {}",
                    missing.join(", ")
                )));
            }
            (ids, None, "http: by id".to_string())
        }
        Target::Page {
            filter,
            order,
            cursor,
            count,
        } => {
            let budget = (s.cfg.max_per_second * PAGE_BUDGET.as_secs_f64()).floor() as usize;
            let count = count.min(budget.max(1)).min(MAX_IDS);
            let page = s.view.list_in(&filter, order, cursor.as_ref(), count);
            let ids = page.entries.into_iter().map(|e| e.dlq_id).collect();
            let what = if filter.is_empty() { "all" } else { "filter" };
            (
                ids,
                page.next.map(|c| c.encode()),
                format!("http: one page of {what}"),
            )
        }
    };
    if ids.is_empty() {
        return Ok(Acted {
            runs: Vec::new(),
            ok: Vec::new(),
            refused: Vec::new(),
            skipped: Vec::new(),
            vanished: Vec::new(),
            cursor,
        });
    }
    let starts_runs = matches!(
        action,
        Action::Restart | Action::Resume | Action::RetryFailureCallback
    );
    // With a deduplication key, the command is written under its own id (not the entry's), so
    // a retry sent while the first is still in flight lands on the same partition after it and
    // is recognised there as a duplicate.
    let keyed_by_command = dedup.is_some();
    let cmd = RecoveryCommand {
        command_id: dedup.unwrap_or_else(|| format!("http-{}", uuid::Uuid::now_v7())),
        action: action as i32,
        selector: Some(Selector::DlqIds(Ids { ids: ids.clone() })),
        overrides,
        requested_by: caller.requested_by(),
        reason,
        requested_at: crate::now_ms(),
        new_run_ids: if starts_runs {
            ids.iter().map(|id| (id.clone(), new_run_id())).collect()
        } else {
            Default::default()
        },
        page_cursor: cursor.clone().unwrap_or_default(),
        force,
        ..Default::default()
    };
    let result = s
        .commands
        .submit(&cmd, keyed_by_command, ACTION_WAIT)
        .await
        .map_err(|e| match e {
            SubmitError::NoAnswer { .. } | SubmitError::Produce { .. } => {
                ApiError::Unavailable(e.to_string())
            }
            SubmitError::Producer(_) => ApiError::Internal(e.to_string()),
        })?;
    let acted = sort_outcomes(&cmd.command_id, &result, cursor)?;
    await_view(s, action, &acted.ok).await;
    Ok(acted)
}

fn sort_outcomes(
    command_id: &str,
    result: &CommandResult,
    cursor: Option<String>,
) -> Result<Acted, ApiError> {
    if result.items.is_empty() && result.matched > 0 {
        return Err(ApiError::Internal(format!(
            "command {command_id} finished without per-entry outcomes"
        )));
    }
    let mut acted = Acted {
        runs: Vec::new(),
        ok: Vec::new(),
        refused: Vec::new(),
        skipped: Vec::new(),
        vanished: Vec::new(),
        cursor,
    };
    for item in &result.items {
        match Status::try_from(item.status).unwrap_or(Status::Unspecified) {
            Status::Ok => {
                if !item.workflow_run_id.is_empty() {
                    acted.runs.push(WorkflowRun {
                        workflow_run_id: item.workflow_run_id.clone(),
                        workflow_created_at: item.workflow_created_at,
                        dlq_id: item.dlq_id.clone(),
                    });
                }
                acted.ok.push(item.dlq_id.clone());
            }
            Status::NotFound => acted.vanished.push(item.dlq_id.clone()),
            Status::Skipped => {
                let why = (item.dlq_id.clone(), item.detail.clone());
                acted.skipped.push(why.clone());
                acted.refused.push(why);
            }
            _ => acted
                .refused
                .push((item.dlq_id.clone(), item.detail.clone())),
        }
    }
    Ok(acted)
}

/// Waits (bounded) until this instance's view shows what the command did, so the caller's
/// next read sees it.
async fn await_view(s: &AppState, action: Action, ok: &[String]) {
    let shown = |id: &String| match (s.view.get(id), action) {
        (None, a) => !matches!(
            a,
            Action::RetryFailureCallback | Action::CancelFailureCallback
        ),
        (Some(e), a) => {
            let state = e
                .event
                .and_then(|ev| ev.failure_callback_info)
                .map_or(0, |i| i.state);
            match a {
                Action::RetryFailureCallback => state != CbState::CallbackFail as i32,
                Action::CancelFailureCallback => state != CbState::CallbackInprogress as i32,
                _ => false,
            }
        }
    };
    // Re-checked on every move of the view's reader, until the deadline.
    let mut moved = s.view.progress.subscribe();
    let _ = tokio::time::timeout(VIEW_CATCH_UP, async {
        while !ok.iter().all(shown) {
            if moved.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
}

/// One entry's action: the run it started, or why not (a 400, as Upstash answers a callback
/// that cannot be re-run or canceled). The console calls it too, with the override headers
/// built from its form.
pub(crate) async fn act_on_one(
    s: &AppState,
    caller: &Caller,
    action: Action,
    dlq_id: String,
    headers: &HeaderMap,
    force: bool,
) -> Result<Acted, ApiError> {
    let overrides = match action {
        Action::Restart | Action::Resume => overrides::parse(headers)?,
        _ => None,
    };
    let forced = if force { " force" } else { "" };
    let request = format!("{} {dlq_id}{forced}", action.as_str_name());
    let dedup = dedup::command_id(headers, &request)?;
    let target = Target::Ids(vec![dlq_id.clone()]);
    let acted = act(s, caller, action, target, overrides, dedup, force).await?;
    if let Some((_, why)) = acted.refused.first() {
        return Err(ApiError::BadRequest(format!(
            "DLQ message `{dlq_id}` cannot be acted on: {why}"
        )));
    }
    if !acted.vanished.is_empty() {
        return Err(not_found(&dlq_id));
    }
    Ok(acted)
}

/// The one query parameter of a single-entry restart or resume: `force=true|false`. Anything
/// else is a 400, as on every route (a misspelt `froce` must not quietly not force).
fn parse_force(raw: Option<&str>) -> Result<bool, ApiError> {
    let mut force = false;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "force" => {
                force = match v.trim() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "`force` must be `true` or `false`, got `{other}`"
                        )))
                    }
                }
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}`"
                )))
            }
        }
    }
    Ok(force)
}

fn single_run(acted: Acted, dlq_id: &str) -> Result<Json<WorkflowRun>, ApiError> {
    acted
        .runs
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::Internal(format!("no run was reported for `{dlq_id}`")))
}

async fn runs_bulk(
    s: &AppState,
    caller: &Caller,
    action: Action,
    raw: Option<String>,
    headers: &HeaderMap,
) -> Result<Json<WorkflowRunsResponse>, ApiError> {
    let q = parse_query(raw.as_deref())?;
    let overrides = overrides::parse(headers)?;
    let request = format!("{} {}", action.as_str_name(), raw.unwrap_or_default());
    let dedup = dedup::command_id(headers, &request)?;
    let acted = act(s, caller, action, q.into_target(), overrides, dedup, false).await?;
    Ok(Json(WorkflowRunsResponse {
        workflow_runs: acted.runs,
        cursor: acted.cursor,
        skipped: acted.skipped.len() as u64,
        skipped_entries: acted
            .skipped
            .into_iter()
            .map(|(dlq_id, reason)| SkippedEntry { dlq_id, reason })
            .collect(),
    }))
}

/// Restart entries from the beginning: by `dlqIds`, by filter, or — with neither — all, one
/// page of `count` per call (follow `cursor`).
#[utoipa::path(post, path = "/v2/workflows/dlq/restart", tag = "dlq",
    params(IdsParams, FilterParams, PageParams),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 200, description = "The runs started; `cursor` names the next page", body = WorkflowRunsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "Some named entries do not exist", body = ErrorBody),
        (status = 503, description = "Not ready, or the command consumer did not answer in time", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn restart_bulk(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<WorkflowRunsResponse>, ApiError> {
    runs_bulk(&s, &caller, Action::Restart, raw, &headers).await
}

/// Resume entries from the point of failure (completed steps are replayed), like restart.
#[utoipa::path(post, path = "/v2/workflows/dlq/resume", tag = "dlq",
    params(IdsParams, FilterParams, PageParams),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 200, body = WorkflowRunsResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn resume_bulk(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<WorkflowRunsResponse>, ApiError> {
    runs_bulk(&s, &caller, Action::Resume, raw, &headers).await
}

/// Restart one entry.
#[utoipa::path(post, path = "/v2/workflows/dlq/restart/{dlqId}", tag = "dlq",
    params(("dlqId" = String, Path), ForceParams),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 200, body = WorkflowRun),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn restart_one(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(dlq_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<WorkflowRun>, ApiError> {
    let force = parse_force(raw.as_deref())?;
    let acted = act_on_one(
        &s,
        &caller,
        Action::Restart,
        dlq_id.clone(),
        &headers,
        force,
    )
    .await?;
    single_run(acted, &dlq_id)
}

/// Resume one entry.
#[utoipa::path(post, path = "/v2/workflows/dlq/resume/{dlqId}", tag = "dlq",
    params(("dlqId" = String, Path), ForceParams),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 200, body = WorkflowRun),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn resume_one(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(dlq_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Json<WorkflowRun>, ApiError> {
    let force = parse_force(raw.as_deref())?;
    let acted = act_on_one(&s, &caller, Action::Resume, dlq_id.clone(), &headers, force).await?;
    single_run(acted, &dlq_id)
}

/// Re-run the failure callback of an entry whose callback failed (`CALLBACK_FAIL`).
#[utoipa::path(post, path = "/v2/workflows/dlq/callback/{dlqId}", tag = "dlq",
    params(("dlqId" = String, Path)),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 200, body = WorkflowRun),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 400, description = "The entry has no failed callback to re-run", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn callback_one(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(dlq_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<WorkflowRun>, ApiError> {
    let acted = act_on_one(
        &s,
        &caller,
        Action::RetryFailureCallback,
        dlq_id.clone(),
        &headers,
        false,
    )
    .await?;
    single_run(acted, &dlq_id)
}

/// Delete one entry.
#[utoipa::path(delete, path = "/v2/workflows/dlq/{dlqId}", tag = "dlq",
    params(("dlqId" = String, Path)),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 200, body = DeleteResponse),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete_one(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(dlq_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<DeleteResponse>, ApiError> {
    let acted = act_on_one(&s, &caller, Action::Delete, dlq_id, &headers, false).await?;
    Ok(Json(DeleteResponse {
        deleted: acted.ok.len() as u64,
        cursor: None,
    }))
}

/// Delete entries: by `dlqIds` (query or JSON body), by filter, or — with neither — all, one
/// page of `count` per call (follow `cursor`).
#[utoipa::path(delete, path = "/v2/workflows/dlq", tag = "dlq",
    params(IdsParams, FilterParams, PageParams),
    request_body(content = Option<DeleteIdsBody>, content_type = "application/json"),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 200, body = DeleteResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, description = "Body too large"),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn delete_bulk(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DeleteResponse>, ApiError> {
    let mut q = parse_query(raw.as_deref())?;
    let request = format!(
        "DELETE {} {}",
        raw.as_deref().unwrap_or_default(),
        String::from_utf8_lossy(&body)
    );
    let dedup = dedup::command_id(&headers, &request)?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        let named: DeleteIdsBody = serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!(
                "the body must be JSON like {{\"dlqIds\": [\"…\"]}}: {e}"
            ))
        })?;
        if named.dlq_ids.iter().any(|id| id.trim().is_empty()) || named.dlq_ids.is_empty() {
            return Err(ApiError::BadRequest("`dlqIds` must not be empty".into()));
        }
        if !q.compiled.is_empty() || q.cursor.is_some() {
            return Err(ApiError::BadRequest(
                "give either `dlqIds` or filters, not both".into(),
            ));
        }
        q.dlq_ids.extend(named.dlq_ids);
        q.dlq_ids.sort();
        q.dlq_ids.dedup();
        if q.dlq_ids.len() > MAX_IDS {
            return Err(ApiError::BadRequest(format!(
                "at most {MAX_IDS} `dlqIds` per call, got {}",
                q.dlq_ids.len()
            )));
        }
    }
    let acted = act(
        &s,
        &caller,
        Action::Delete,
        q.into_target(),
        None,
        dedup,
        false,
    )
    .await?;
    Ok(Json(DeleteResponse {
        deleted: acted.ok.len() as u64,
        cursor: acted.cursor,
    }))
}

/// Cancel an in-progress failure callback (one re-run with `POST …/callback/{dlqId}`): the entry
/// is marked `CALLBACK_CANCELED`, and a later report of that run's end is ignored. Answers 302,
/// as Upstash documents it.
#[utoipa::path(delete, path = "/v2/workflows/dlq/callback/{dlqId}", tag = "dlq",
    params(("dlqId" = String, Path)),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 302, description = "Canceled", body = CallbackCanceled),
        (status = 400, description = "No failure callback in progress", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel_callback(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(dlq_id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<CallbackCanceled>), ApiError> {
    act_on_one(
        &s,
        &caller,
        Action::CancelFailureCallback,
        dlq_id.clone(),
        &headers,
        false,
    )
    .await?;
    Ok((
        StatusCode::FOUND,
        Json(CallbackCanceled {
            dlq_id,
            state: CbState::CallbackCanceled.as_str_name().to_string(),
        }),
    ))
}

// ---- QStash's retry ----
//
// QStash re-delivers a failed message as a new one with the same request. For a workflow run
// that is a resume: the run is re-delivered with its completed steps replayed, so nothing that
// succeeded runs twice. The new run's id is the `messageId` answered.

fn published(runs: Vec<WorkflowRun>) -> Vec<PublishResponse> {
    runs.into_iter()
        .map(|r| PublishResponse {
            message_id: r.workflow_run_id,
            dlq_id: r.dlq_id,
            workflow_created_at: r.workflow_created_at,
        })
        .collect()
}

/// Retry one message (QStash): re-delivered as a resume of its run. Takes the override headers
/// of restart and resume.
#[utoipa::path(post, path = "/v2/dlq/retry/{dlqId}", tag = "dlq",
    params(("dlqId" = String, Path), ForceParams),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 201, body = PublishResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retry_one(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(dlq_id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<PublishResponse>), ApiError> {
    let force = parse_force(raw.as_deref())?;
    let acted = act_on_one(&s, &caller, Action::Resume, dlq_id.clone(), &headers, force).await?;
    let run = single_run(acted, &dlq_id)?.0;
    let mut one = published(vec![run]);
    let first = one
        .pop()
        .ok_or_else(|| ApiError::Internal(format!("no run was reported for `{dlq_id}`")))?;
    Ok((StatusCode::CREATED, Json(first)))
}

/// Retry messages (QStash): by `dlqIds`, by filter, or — with neither — all, one page of `count`
/// per call (follow `cursor`). Each is re-delivered as a resume of its run.
#[utoipa::path(post, path = "/v2/dlq/retry", tag = "dlq",
    params(IdsParams, FilterParams, PageParams),
    responses(
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 201, description = "The messages re-delivered; `cursor` names the next page", body = RetryResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "Some named entries do not exist", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn retry_bulk(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<RetryResponse>), ApiError> {
    let Json(runs) = runs_bulk(&s, &caller, Action::Resume, raw, &headers).await?;
    Ok((
        StatusCode::CREATED,
        Json(RetryResponse {
            responses: published(runs.workflow_runs),
            cursor: runs.cursor,
        }),
    ))
}
