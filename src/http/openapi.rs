//! `GET /openapi.json`: an OpenAPI 3 document generated from the handlers and the response
//! types (utoipa), so it cannot drift from what the server accepts and answers.

use axum::Json;
use utoipa::{
    openapi::{
        security::{Http, HttpAuthScheme, SecurityScheme},
        OpenApi as Document, PathItem,
    },
    Modify, OpenApi,
};

use super::{dlq, jobs, messages};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "workflow-dlq",
        description = "A Kafka-native dead letter queue for durable workflow runs, in Upstash's \
                       DLQ dialect (Workflow and QStash). Every route but /healthz, /readyz and \
                       /metrics needs `Authorization: Bearer <token>`. A QStash retry \
                       re-delivers the failed request: for a workflow run that is a resume \
                       (completed steps are replayed, not run again). Every action takes an \
                       `Upstash-Deduplication-Id` (or `Idempotency-Key`) header: the same key \
                       for the same request acts once and answers the first outcome again."
    ),
    paths(
        dlq::list, dlq::get_one, dlq::delete_one, dlq::delete_bulk,
        dlq::restart_bulk, dlq::resume_bulk, dlq::restart_one, dlq::resume_one,
        dlq::callback_one, dlq::cancel_callback, dlq::retry_one, dlq::retry_bulk,
        jobs::start_job, jobs::list_jobs, jobs::get_job, jobs::cancel_job, dlq::groups,
        super::healthz, super::readyz, super::metrics_text, super::status, openapi_json,
    ),
    components(schemas(
        messages::DlqMessage, messages::FailureCallbackInfo, messages::FlowControl,
        messages::StepInfo, messages::ListResponse, messages::WorkflowRun,
        messages::WorkflowRunsResponse, messages::DeleteResponse, messages::ErrorBody,
        messages::PublishResponse, messages::RetryResponse, messages::CallbackCanceled,
        messages::SkippedEntry, messages::FailureGroup, messages::GroupStep,
        messages::GroupsResponse, dlq::DeleteIdsBody,
        jobs::JobRequest, jobs::JobView, jobs::JobFailure, jobs::JobStarted, jobs::JobList,
    )),
    modifiers(&BearerAuth),
    tags((name = "dlq", description = "Upstash Workflow's DLQ dialect"),
         (name = "service", description = "Health, metrics and status")),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// A copy of `item` served under another path, with its own operation ids.
fn alias(item: &PathItem, suffix: &str) -> PathItem {
    let mut copy = item.clone();
    for op in [
        &mut copy.get,
        &mut copy.post,
        &mut copy.delete,
        &mut copy.put,
        &mut copy.patch,
    ]
    .into_iter()
    .flatten()
    {
        op.operation_id = op.operation_id.as_ref().map(|id| format!("{id}{suffix}"));
    }
    copy
}

/// The document: `/v2/dlq…` routes are the same handlers as `/v2/workflows/dlq…`.
pub fn document() -> Document {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    for (from, to) in [
        ("/v2/workflows/dlq", "/v2/dlq"),
        ("/v2/workflows/dlq/{dlqId}", "/v2/dlq/{dlqId}"),
        ("/v2/workflows/dlq/groups", "/v2/dlq/groups"),
    ] {
        if let Some(item) = doc.paths.paths.get(from) {
            let copy = alias(item, "_v2_dlq");
            doc.paths.paths.insert(to.to_string(), copy);
        }
    }
    doc
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "service",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json"),
              (status = 401, body = messages::ErrorBody)),
    security(("bearer" = [])))]
pub async fn openapi_json() -> Json<Document> {
    Json(document())
}
