//! Bulk jobs over HTTP: a job is a bulk `RecoveryCommand` (ids, a filter or all) on the command
//! topic — so it survives restarts and rebalances like any command — and its progress is what
//! the results topic says, read through the ledger. A cancel is a marker on the results topic
//! that the job's dispatcher reads (docs/design.md §4 *Jobs*): every entry not acted on by then
//! is answered SKIPPED, and the cancel answers once the job's final result is written, so no
//! entry is acted on after it.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Bytes,
    extract::{Extension, Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    routing::get,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{auth::Caller, dedup, messages::ErrorBody, ApiError, AppState};
use crate::{
    commands::{ledger::CommandRecord, submit::SubmitError, validate::validate},
    wire::{
        pb::{item_outcome::Status, recovery_command::Action, CommandResult, RecoveryCommand},
        strict,
    },
};

/// How long a dry run or a cancel waits for the job's final result.
const JOB_WAIT: Duration = Duration::from_secs(20);
/// Failures listed in a job's view.
const FAILURES_SHOWN: usize = 20;
/// Entries named in a dry run's answer.
const SAMPLE: usize = 20;
/// Jobs listed at most.
const MAX_LISTED: usize = 100;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/workflows/dlq/jobs", get(list_jobs).post(start_job))
        .route(
            "/v2/workflows/dlq/jobs/{job_id}",
            get(get_job).delete(cancel_job),
        )
}

/// A bulk job: the action and exactly one of `dlqIds`, `filter` or `all`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobRequest {
    /// `RESTART`, `RESUME`, `RETRY_FAILURE_CALLBACK`, `DELETE` or `CANCEL_FAILURE_CALLBACK`.
    pub action: String,
    #[serde(default)]
    pub dlq_ids: Option<Vec<String>>,
    /// The `Filter` message in its JSON form (unknown fields are a 400).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<serde_json::Value>,
    #[serde(default)]
    pub all: Option<bool>,
    /// The `Overrides` message in its JSON form.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub overrides: Option<serde_json::Value>,
    /// Republish pace for this job (entries per second); unset = `--max-per-second`.
    #[serde(default)]
    pub max_per_second: Option<f64>,
    /// Resolve and report the exact set; act on nothing.
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A job as the results topic tells it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    /// `running`, `done` or `canceled`.
    pub state: String,
    pub action: String,
    pub dry_run: bool,
    pub requested_by: String,
    /// Entries the job covers (0 until its fan-out started).
    pub matched: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Skipped: parked, already acted on, or left by a cancel.
    pub skipped: i64,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms; absent while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Set when a cancel was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_by: Option<String>,
    /// The first failed entries.
    pub failures: Vec<JobFailure>,
    /// A dry run: some of the entries it matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobFailure {
    pub dlq_id: String,
    pub error: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStarted {
    pub job_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

fn action_name(action: i32) -> String {
    Action::try_from(action)
        .map(|a| a.as_str_name())
        .unwrap_or("ACTION_UNSPECIFIED")
        .to_string()
}

/// The view of a job from its ledger record.
fn view(job_id: &str, rec: &CommandRecord) -> JobView {
    let finished: Option<&CommandResult> = rec.finished.as_ref();
    let items: Vec<_> = match finished {
        Some(f) => f.items.iter().collect(),
        None => rec.items.values().collect(),
    };
    let count = |s: &[Status]| {
        items
            .iter()
            .filter(|i| s.iter().any(|s| *s as i32 == i.status))
            .count() as i64
    };
    let (matched, succeeded, failed) = match finished {
        Some(f) => (f.matched, f.succeeded, f.failed),
        None => (
            rec.total.or(rec.dispatched).unwrap_or(0),
            count(&[Status::Ok]),
            count(&[Status::NotFound, Status::Rejected]),
        ),
    };
    let skipped = match finished {
        Some(_) => (matched - succeeded - failed).max(0),
        None => count(&[Status::Skipped]),
    };
    let state = match finished {
        Some(f) if f.canceled => "canceled",
        Some(_) => "done",
        None => "running",
    };
    let mut failures: Vec<JobFailure> = items
        .iter()
        .filter(|i| i.status == Status::NotFound as i32 || i.status == Status::Rejected as i32)
        .map(|i| JobFailure {
            dlq_id: i.dlq_id.clone(),
            error: i.detail.clone(),
        })
        .collect();
    failures.sort_by(|a, b| a.dlq_id.cmp(&b.dlq_id));
    failures.truncate(FAILURES_SHOWN);
    let dry_run = finished.is_some_and(|f| f.dry_run);
    JobView {
        job_id: job_id.to_string(),
        state: state.to_string(),
        action: action_name(rec.action),
        dry_run,
        requested_by: rec.requested_by.clone(),
        matched,
        succeeded,
        failed,
        skipped,
        started_at: rec.requested_at,
        finished_at: finished.map(|f| f.completed_at),
        cancel_requested_by: rec.cancel_requested.clone(),
        failures,
        sample: if dry_run {
            items
                .iter()
                .take(SAMPLE)
                .map(|i| i.dlq_id.clone())
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn no_such_job(job_id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "job `{job_id}` was not found (or has not started yet)"
    ))
}

/// The `RecoveryCommand` a job request stands for, checked like one read from the command
/// topic (strict JSON, then the command's own validation), so a misspelt field is a 400.
fn job_command(
    req: JobRequest,
    job_id: String,
    caller: &Caller,
) -> Result<RecoveryCommand, ApiError> {
    let mut cmd = serde_json::json!({
        "commandId": job_id,
        "action": req.action,
        "dryRun": req.dry_run,
        "requestedBy": caller.requested_by(),
        "requestedAt": crate::now_ms().to_string(),
        "reason": req.reason.unwrap_or_else(|| "http: job".into()),
    });
    let selectors = [
        req.dlq_ids.is_some(),
        req.filter.is_some(),
        req.all.is_some(),
    ];
    if selectors.iter().filter(|s| **s).count() != 1 {
        return Err(ApiError::BadRequest(
            "give exactly one of `dlqIds`, `filter` or `all`".into(),
        ));
    }
    if let Some(ids) = req.dlq_ids {
        cmd["dlqIds"] = serde_json::json!({ "ids": ids });
    }
    if let Some(f) = req.filter {
        cmd["filter"] = f;
    }
    if let Some(all) = req.all {
        cmd["all"] = all.into();
    }
    if let Some(o) = req.overrides {
        cmd["overrides"] = o;
    }
    if let Some(rate) = req.max_per_second {
        cmd["maxPerSecond"] = rate.into();
    }
    strict::check_json(strict::RECOVERY_COMMAND, &cmd)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let cmd: RecoveryCommand = serde_json::from_value(cmd)
        .map_err(|e| ApiError::BadRequest(format!("invalid job: {e}")))?;
    validate(&cmd).map_err(|e| ApiError::BadRequest(format!("{}: {e}", e.code())))?;
    Ok(cmd)
}

/// Jobs are read from the ledger: until it has read the results topic, "no such job" could be
/// wrong.
fn ledger_ready(s: &AppState) -> Result<(), ApiError> {
    if s.ledger.is_caught_up() {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "the command ledger is still loading from Kafka; retry shortly".into(),
        ))
    }
}

fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::NoAnswer { .. } | SubmitError::Produce { .. } => {
            ApiError::Unavailable(e.to_string())
        }
        SubmitError::Producer(_) => ApiError::Internal(e.to_string()),
    }
}

/// Waits (bounded) for the job's final result; its view either way.
async fn await_job(s: &AppState, job_id: &str) -> Option<JobView> {
    let deadline = tokio::time::Instant::now() + JOB_WAIT;
    loop {
        let changed = s.ledger.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let rec = s.ledger.record_of(job_id);
        if rec.as_ref().is_some_and(|r| r.finished.is_some())
            || tokio::time::Instant::now() >= deadline
        {
            return rec.map(|r| view(job_id, &r));
        }
        let _ = tokio::time::timeout_at(deadline, changed).await;
    }
}

/// Start a bulk job: 202 `{jobId}`, then follow it with `GET …/jobs/{jobId}`. A dry run
/// answers 200 with the exact count and a sample, acting on nothing.
#[utoipa::path(post, path = "/v2/workflows/dlq/jobs", tag = "dlq",
    request_body(content = JobRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Started", body = JobStarted),
        (status = 200, description = "A dry run's answer", body = JobView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn start_job(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let req: JobRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be a job like {{\"action\": \"RESTART\", \"all\": true}}: {e}"
        ))
    })?;
    let job_id = dedup::command_id(&headers, &format!("JOB {}", String::from_utf8_lossy(&body)))?
        .map(|id| id.replacen("http-dedup-", "job-", 1))
        .unwrap_or_else(|| format!("job-{}", uuid::Uuid::now_v7()));
    match submit_job(&s, &caller, req, job_id).await? {
        Submitted::DryRun(v) => Ok((
            StatusCode::OK,
            Json(serde_json::to_value(v).unwrap_or_default()),
        )),
        Submitted::Started(job_id) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "jobId": job_id })),
        )),
    }
}

/// What [`submit_job`] did: a dry run's answer, or the id of the job now running.
pub enum Submitted {
    DryRun(Box<JobView>),
    Started(String),
}

/// Checks a job request and writes its command; a dry run is waited for. Shared by the JSON
/// API and the console, so both start exactly the same jobs.
pub async fn submit_job(
    s: &AppState,
    caller: &Caller,
    req: JobRequest,
    job_id: String,
) -> Result<Submitted, ApiError> {
    let dry_run = req.dry_run;
    let cmd = job_command(req, job_id.clone(), caller)?;
    ledger_ready(s)?;
    s.commands
        .send(&cmd, JOB_WAIT)
        .await
        .map_err(submit_error)?;
    if dry_run {
        let v = await_job(s, &job_id)
            .await
            .filter(|v| v.state != "running")
            .ok_or_else(|| {
                ApiError::Unavailable(format!(
                    "dry run {job_id} was written but not answered within {JOB_WAIT:?}"
                ))
            })?;
        return Ok(Submitted::DryRun(Box::new(v)));
    }
    Ok(Submitted::Started(job_id))
}

/// A job's view as far as the ledger knows it (`None`: not written or not dispatched yet).
pub fn job_view(s: &AppState, job_id: &str) -> Option<JobView> {
    s.ledger.record_of(job_id).map(|r| view(job_id, &r))
}

/// Recent jobs, newest first.
pub fn recent_jobs(s: &AppState, count: usize) -> Vec<JobView> {
    s.ledger
        .jobs(count.min(MAX_LISTED))
        .iter()
        .map(|(id, rec)| view(id, rec))
        .collect()
}

/// One job's progress.
#[utoipa::path(get, path = "/v2/workflows/dlq/jobs/{jobId}", tag = "dlq",
    params(("jobId" = String, Path)),
    responses((status = 200, body = JobView), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_job(
    State(s): State<Arc<AppState>>,
    Path(job_id): Path<String>,
) -> Result<Json<JobView>, ApiError> {
    ledger_ready(&s)?;
    let rec = s
        .ledger
        .record_of(&job_id)
        .filter(|r| r.total.is_some() || r.dispatched.is_some() || r.finished.is_some())
        .ok_or_else(|| no_such_job(&job_id))?;
    Ok(Json(view(&job_id, &rec)))
}

/// Recent jobs (bulk commands, from HTTP or the command topic), newest first.
#[utoipa::path(get, path = "/v2/workflows/dlq/jobs", tag = "dlq",
    params(("count" = Option<usize>, Query, description = "At most this many (1–100, default 20)")),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_jobs(
    State(s): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<JobList>, ApiError> {
    let mut count = 20;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "count" => {
                count = v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LISTED).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`count` must be between 1 and {MAX_LISTED}, got `{v}`"
                        ))
                    })?
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{other}`"
                )))
            }
        }
    }
    let jobs = s
        .ledger
        .jobs(count)
        .iter()
        .map(|(id, rec)| view(id, rec))
        .collect();
    Ok(Json(JobList { jobs }))
}

/// Cancel a job: no entry is acted on after the cancel is committed (the job's final result,
/// which this answers with), and each entry acted on before it was acted on once. 409 if the
/// job had already finished.
#[utoipa::path(delete, path = "/v2/workflows/dlq/jobs/{jobId}", tag = "dlq",
    params(("jobId" = String, Path)),
    responses(
        (status = 200, description = "Canceled (or it finished first): its final view", body = JobView),
        (status = 202, description = "Cancel asked; the job has not written its final result yet", body = JobView),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The token's scope does not allow acting", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job had already finished", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel_job(
    State(s): State<Arc<AppState>>,
    Extension(caller): Extension<Caller>,
    Path(job_id): Path<String>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let v = cancel(&s, &caller, &job_id).await?;
    let status = if v.state == "running" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(v)))
}

/// Asks a running job to stop and waits (bounded) for its final result: the JSON API's and
/// the console's cancel.
pub async fn cancel(s: &AppState, caller: &Caller, job_id: &str) -> Result<JobView, ApiError> {
    ledger_ready(s)?;
    let rec = s
        .ledger
        .record_of(job_id)
        .ok_or_else(|| no_such_job(job_id))?;
    if let Some(f) = &rec.finished {
        return Err(ApiError::Conflict(format!(
            "job `{job_id}` already finished ({} at {})",
            if f.canceled { "canceled" } else { "done" },
            f.completed_at
        )));
    }
    s.commands
        .cancel(
            &s.cfg.topics.results,
            job_id,
            &caller.requested_by(),
            JOB_WAIT,
        )
        .await
        .map_err(submit_error)?;
    await_job(s, job_id)
        .await
        .ok_or_else(|| no_such_job(job_id))
}
