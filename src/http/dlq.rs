//! The Upstash Workflow DLQ dialect: listing and reading entries.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    extract::{Path, RawQuery, State},
    routing::get,
    Json, Router,
};
use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::{json, Map, Value};

use super::{ApiError, AppState};
use crate::{
    store::{Cursor, EntryFilter},
    wire::pb::{failure_callback_info::State as CbState, DlqEntry, Filter, HeaderValues, Step},
};

pub const DEFAULT_COUNT: usize = 100;
pub const MAX_COUNT: usize = 100;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/dlq", get(list))
        .route("/v2/workflows/dlq", get(list))
        .route("/v2/dlq/{dlq_id}", get(get_one))
        .route("/v2/workflows/dlq/{dlq_id}", get(get_one))
}

/// A parsed listing query: filter, cursor and page size.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub filter: Filter,
    pub cursor: Option<Cursor>,
    pub count: usize,
    pub dlq_ids: Vec<String>,
}

fn int(name: &str, v: &str) -> Result<i64, ApiError> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| ApiError::BadRequest(format!("`{name}` must be an integer, got `{v}`")))
}

/// Parses Upstash's query parameters. A field may repeat or hold comma-separated values.
pub fn parse_query(raw: Option<&str>) -> Result<ListQuery, ApiError> {
    let mut q = ListQuery {
        count: DEFAULT_COUNT,
        ..Default::default()
    };
    let f = &mut q.filter;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let many = || {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        match k.as_ref() {
            "cursor" if !v.trim().is_empty() => {
                q.cursor = Some(
                    Cursor::decode(&v)
                        .map_err(|_| ApiError::BadRequest(format!("invalid cursor `{v}`")))?,
                );
            }
            "count" => {
                let n = int("count", &v)?;
                if !(1..=MAX_COUNT as i64).contains(&n) {
                    return Err(ApiError::BadRequest(format!(
                        "`count` must be between 1 and {MAX_COUNT}, got {n}"
                    )));
                }
                q.count = n as usize;
            }
            "fromDate" => f.from_date = int("fromDate", &v)?,
            "toDate" => f.to_date = int("toDate", &v)?,
            "workflowUrl" => f.workflow_url.extend(many()),
            "workflowRunId" => f.workflow_run_id = v.trim().to_string(),
            "workflowCreatedAt" => f.workflow_created_at = int("workflowCreatedAt", &v)?,
            "label" => f.label.extend(many()),
            "failureFunctionState" => f.failure_function_state.extend(many()),
            "callerIp" | "callerIP" => f.caller_ip.extend(many()),
            "flowControlKey" => f.flow_control_key.extend(many()),
            "dlqIds" | "dlqId" => {
                let ids: Vec<String> = many().collect();
                if ids.is_empty() {
                    return Err(ApiError::BadRequest("`dlqIds` must not be empty".into()));
                }
                q.dlq_ids.extend(ids);
            }
            // The SDKs send `source=workflow`; other unknown parameters are ignored as Upstash does.
            _ => {}
        }
    }
    Ok(q)
}

async fn list(
    State(s): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw.as_deref())?;
    let filter =
        EntryFilter::compile(&q.filter).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let page = s.view.list(&filter, q.cursor.as_ref(), q.count);
    let mut body = Map::new();
    body.insert(
        "messages".into(),
        Value::Array(page.entries.iter().map(entry_json).collect()),
    );
    if let Some(next) = page.next {
        body.insert("cursor".into(), Value::String(next.encode()));
    }
    Ok(Json(Value::Object(body)))
}

async fn get_one(
    State(s): State<Arc<AppState>>,
    Path(dlq_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.view
        .get(&dlq_id)
        .map(|e| Json(entry_json(&e)))
        .ok_or_else(|| ApiError::NotFound(format!("DLQ message `{dlq_id}` was not found")))
}

fn headers_json(h: &BTreeMap<String, HeaderValues>) -> Value {
    Value::Object(
        h.iter()
            .map(|(k, v)| (k.clone(), json!(v.values)))
            .collect(),
    )
}

/// Bytes as UTF-8 text when they are, otherwise base64 under the `…Base64` name.
fn put_bytes(obj: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => obj.insert(name.into(), Value::String(text.into())),
        Err(_) => obj.insert(
            format!("{name}Base64"),
            Value::String(STANDARD.encode(bytes)),
        ),
    };
}

fn step_json(s: &Step) -> Value {
    let mut o = Map::new();
    o.insert("stepId".into(), json!(s.step_id));
    o.insert("stepName".into(), json!(s.step_name));
    o.insert("stepType".into(), json!(s.step_type));
    put_bytes(&mut o, "out", &s.out);
    o.insert("concurrent".into(), json!(s.concurrent));
    o.insert("completedAt".into(), json!(s.completed_at));
    Value::Object(o)
}

/// A listed message, with Upstash's field names plus ours.
pub fn entry_json(e: &DlqEntry) -> Value {
    let ev = e.event.clone().unwrap_or_default();
    let mut o = Map::new();
    o.insert("dlqId".into(), json!(e.dlq_id));
    o.insert("messageId".into(), json!(ev.message_id));
    o.insert("workflowRunId".into(), json!(ev.workflow_run_id));
    o.insert("workflowUrl".into(), json!(ev.workflow_url));
    o.insert("url".into(), json!(ev.workflow_url));
    o.insert("workflowCreatedAt".into(), json!(ev.workflow_created_at));
    o.insert("createdAt".into(), json!(e.created_at));
    o.insert("method".into(), json!(ev.method));
    o.insert("header".into(), headers_json(&ev.header));
    put_bytes(&mut o, "body", &ev.body);
    o.insert("maxRetries".into(), json!(ev.max_retries));
    o.insert("notBefore".into(), json!(ev.not_before));
    o.insert("callerIP".into(), json!(ev.caller_ip));
    o.insert("responseStatus".into(), json!(ev.response_status));
    o.insert("responseHeader".into(), headers_json(&ev.response_header));
    put_bytes(&mut o, "responseBody", &ev.response_body);
    if !ev.failure_callback.is_empty() {
        o.insert("failureCallback".into(), json!(ev.failure_callback));
    }
    if let Some(info) = &ev.failure_callback_info {
        let mut i = Map::new();
        let state = CbState::try_from(info.state).unwrap_or(CbState::Unspecified);
        i.insert("state".into(), json!(state.as_str_name()));
        i.insert("responseStatus".into(), json!(info.response_status));
        put_bytes(&mut i, "responseBody", &info.response_body);
        i.insert(
            "responseHeaders".into(),
            headers_json(&info.response_headers),
        );
        o.insert("failureCallbackInfo".into(), Value::Object(i));
    }
    if let Some(first) = ev.labels.first() {
        o.insert("label".into(), json!(first));
    }
    o.insert("labels".into(), json!(ev.labels));
    if let Some(fc) = &ev.flow_control {
        o.insert("flowControlKey".into(), json!(fc.key));
        o.insert(
            "flowControl".into(),
            json!({"key": fc.key, "rate": fc.rate, "parallelism": fc.parallelism, "period": fc.period_seconds}),
        );
    }
    if let Some(s) = &ev.failed_step {
        o.insert("failedStep".into(), step_json(s));
    }
    o.insert(
        "completedSteps".into(),
        Value::Array(ev.completed_steps.iter().map(step_json).collect()),
    );
    o.insert("errorMessage".into(), json!(ev.error_message));
    o.insert("expiresAt".into(), json!(e.expires_at));
    o.insert("redriveCount".into(), json!(ev.redrive_count));
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_comma_separated_values_both_count() {
        let q = parse_query(Some(
            "label=a,b&label=c&source=workflow&count=5&callerIp=1.2.3.4",
        ))
        .unwrap();
        assert_eq!(q.filter.label, ["a", "b", "c"]);
        assert_eq!(q.filter.caller_ip, ["1.2.3.4"]);
        assert_eq!(q.count, 5);
    }

    #[test]
    fn malformed_parameters_are_400_with_a_message() {
        for (query, needle) in [
            ("count=abc", "`count` must be an integer"),
            ("count=101", "between 1 and 100"),
            ("fromDate=yesterday", "`fromDate`"),
            ("cursor=%%%", "invalid cursor"),
            ("dlqIds=", "`dlqIds` must not be empty"),
        ] {
            let err = parse_query(Some(query)).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
            assert!(err.to_string().contains(needle), "{query}: {err}");
        }
    }
}
