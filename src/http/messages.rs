//! What the HTTP API answers, as typed bodies: a listed message with Upstash's field names
//! (plus ours), and the action responses. The OpenAPI document is generated from these types,
//! so it describes exactly what is served.

use std::collections::BTreeMap;

use base64::{engine::general_purpose::STANDARD, Engine};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::wire::pb::{failure_callback_info::State as CbState, DlqEntry, HeaderValues, Step};

/// Header name → its values.
pub type HeaderMap = BTreeMap<String, Vec<String>>;

/// A DLQ entry as Upstash's SDKs read it. Bytes that are UTF-8 are given as text, otherwise
/// base64 under the `…Base64` name.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DlqMessage {
    pub dlq_id: String,
    pub message_id: String,
    pub workflow_run_id: String,
    pub workflow_url: String,
    /// Same as `workflowUrl` (QStash's name for it).
    pub url: String,
    /// Unix ms.
    pub workflow_created_at: i64,
    /// When the entry entered the DLQ, unix ms.
    pub created_at: i64,
    pub method: String,
    pub header: HeaderMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
    pub max_retries: i32,
    pub not_before: i64,
    #[serde(rename = "callerIP")]
    pub caller_ip: String,
    pub response_status: i32,
    pub response_header: HeaderMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_callback: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_callback_info: Option<FailureCallbackInfo>,
    /// The failure callback's state at the top level, as Workflow lists it (also inside
    /// `failureCallbackInfo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_function_state: Option<String>,
    /// QStash: headers sent with the failure callback.
    #[serde(default, skip_serializing_if = "HeaderMap::is_empty")]
    pub failure_callback_header: HeaderMap,
    /// QStash: the per-delivery callback URL, and its headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    #[serde(default, skip_serializing_if = "HeaderMap::is_empty")]
    pub callback_header: HeaderMap,
    /// QStash: the URL group (a.k.a. topic) it was sent to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// QStash: the queue it was enqueued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,
    /// QStash: the schedule that sent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    /// The first label, as older SDKs read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_control_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_control: Option<FlowControl>,
    /// Flow control, flattened as QStash lists it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<StepInfo>,
    pub completed_steps: Vec<StepInfo>,
    pub error_message: String,
    /// When the entry expires (unix ms); 0 if never.
    pub expires_at: i64,
    /// How many times this run was already recovered from the DLQ.
    pub redrive_count: i32,
    /// Redriven `--max-redrives` times already: bulk restart and resume skip it; restart or
    /// resume it by id with `force=true`. (Absent from servers before 0.x: read as false.)
    #[serde(default)]
    pub parked: bool,
    /// The kind of failure (`GET /v2/workflows/dlq/groups`): 16 hex digits.
    #[serde(default)]
    pub signature: String,
    /// The entry this run was redriven from, when the platform said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redriven_from_dlq_id: Option<String>,
    /// Every earlier entry of this run, oldest first (they are gone from the DLQ: recovered).
    #[serde(default)]
    pub lineage: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureCallbackInfo {
    /// `CALLBACK_INPROGRESS`, `CALLBACK_SUCCESS`, `CALLBACK_FAIL`, `CALLBACK_CANCELED` or
    /// `STATE_UNSPECIFIED`.
    pub state: String,
    pub response_status: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body_base64: Option<String>,
    pub response_headers: HeaderMap,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlowControl {
    pub key: String,
    pub rate: i32,
    pub parallelism: i32,
    /// Seconds.
    pub period: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepInfo {
    pub step_id: i32,
    pub step_name: String,
    pub step_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_base64: Option<String>,
    pub concurrent: i32,
    pub completed_at: i64,
}

/// `GET /v2/dlq`: one page, and the cursor of the next when there is one.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListResponse {
    pub messages: Vec<DlqMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A run started from a DLQ entry.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRun {
    pub workflow_run_id: String,
    /// Unix ms.
    pub workflow_created_at: i64,
    /// The entry it was started from.
    pub dlq_id: String,
}

/// Bulk restart/resume: the runs started by this page, and the cursor of the next page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRunsResponse {
    pub workflow_runs: Vec<WorkflowRun>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Entries of this page left alone, e.g. parked ones (`parked: redriven N times`).
    #[serde(default)]
    pub skipped: u64,
    /// Each skipped entry and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_entries: Vec<SkippedEntry>,
}

/// An entry an action left alone, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedEntry {
    pub dlq_id: String,
    pub reason: String,
}

/// The failed step a group's entries share.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStep {
    pub step_name: String,
    pub step_type: String,
}

/// One kind of failure: the entries sharing a signature.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureGroup {
    /// 16 hex digits; `signature=` filters lists and actions to this group.
    pub signature: String,
    /// Entries in the group (that match the query's filters).
    pub count: u64,
    /// When its oldest and newest entries entered the DLQ (unix ms).
    pub first_seen: i64,
    pub last_seen: i64,
    /// The workflow URL, without its query string.
    pub workflow_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<GroupStep>,
    pub response_status: i32,
    /// The newest entry's error message, as it was.
    pub error_sample: String,
    /// The error message as grouped: values replaced by `<*>`.
    pub error_pattern: String,
    /// The newest entry of the group.
    pub sample_dlq_id: String,
}

/// `GET /v2/workflows/dlq/groups`: one page of groups, largest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GroupsResponse {
    pub groups: Vec<FailureGroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// Delete: how many entries this call deleted, and the cursor of the next page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeleteResponse {
    pub deleted: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// QStash's answer to a retry: the new message (for a workflow run: the new run's id).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishResponse {
    pub message_id: String,
    /// The entry it was re-delivered from.
    pub dlq_id: String,
    /// Unix ms.
    pub workflow_created_at: i64,
}

/// QStash's bulk retry: one response per message re-delivered, and the next page's cursor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetryResponse {
    pub responses: Vec<PublishResponse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A failure callback canceled.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackCanceled {
    pub dlq_id: String,
    /// `CALLBACK_CANCELED`.
    pub state: String,
}

/// Every error: a message a person can act on.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

/// UTF-8 bytes as text (moved, not copied), anything else as base64; nothing for no bytes.
fn text_or_base64(bytes: Vec<u8>) -> (Option<String>, Option<String>) {
    if bytes.is_empty() {
        return (None, None);
    }
    match String::from_utf8(bytes) {
        Ok(text) => (Some(text), None),
        Err(e) => (None, Some(STANDARD.encode(e.as_bytes()))),
    }
}

fn nonempty(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

fn header_map(h: BTreeMap<String, HeaderValues>) -> HeaderMap {
    h.into_iter().map(|(k, v)| (k, v.values)).collect()
}

impl From<Step> for StepInfo {
    fn from(s: Step) -> StepInfo {
        let (out, out_base64) = text_or_base64(s.out);
        StepInfo {
            step_id: s.step_id,
            step_name: s.step_name,
            step_type: s.step_type,
            out,
            out_base64,
            concurrent: s.concurrent,
            completed_at: s.completed_at,
        }
    }
}

impl DlqMessage {
    /// The message of `e` with `parked` set for `max_redrives`.
    pub fn guarded(e: DlqEntry, max_redrives: u32) -> DlqMessage {
        let mut m = DlqMessage::from(e);
        m.parked = crate::store::filter::is_parked(m.redrive_count, max_redrives);
        m
    }
}

impl From<DlqEntry> for DlqMessage {
    /// By value: the entry was decoded for this message alone, so its strings, header maps and
    /// steps move into it. Copying them, then freeing both, was a third of the CPU of a listed
    /// page (BENCHMARKS.md, ninth session).
    fn from(e: DlqEntry) -> DlqMessage {
        let ev = e.event.unwrap_or_default();
        let signature = if e.signature.is_empty() {
            crate::signature::of_event(&ev)
        } else {
            e.signature
        };
        let lineage = crate::republish::lineage(&ev);
        let (body, body_base64) = text_or_base64(ev.body);
        let (response_body, response_body_base64) = text_or_base64(ev.response_body);
        let failure_callback_info = ev.failure_callback_info.map(|info| {
            let (response_body, response_body_base64) = text_or_base64(info.response_body);
            FailureCallbackInfo {
                state: CbState::try_from(info.state)
                    .unwrap_or(CbState::Unspecified)
                    .as_str_name()
                    .to_string(),
                response_status: info.response_status,
                response_body,
                response_body_base64,
                response_headers: header_map(info.response_headers),
            }
        });
        let flow = ev.flow_control;
        DlqMessage {
            dlq_id: e.dlq_id,
            message_id: ev.message_id,
            workflow_run_id: ev.workflow_run_id,
            url: ev.workflow_url.clone(),
            workflow_url: ev.workflow_url,
            workflow_created_at: ev.workflow_created_at,
            created_at: e.created_at,
            method: ev.method,
            header: header_map(ev.header),
            body,
            body_base64,
            max_retries: ev.max_retries,
            not_before: ev.not_before,
            caller_ip: ev.caller_ip,
            response_status: ev.response_status,
            response_header: header_map(ev.response_header),
            response_body,
            response_body_base64,
            failure_callback: nonempty(ev.failure_callback),
            failure_function_state: failure_callback_info.as_ref().map(|i| i.state.clone()),
            failure_callback_info,
            failure_callback_header: header_map(ev.failure_callback_header),
            callback: nonempty(ev.callback),
            callback_header: header_map(ev.callback_header),
            topic_name: nonempty(ev.topic_name),
            queue_name: nonempty(ev.queue_name),
            schedule_id: nonempty(ev.schedule_id),
            label: ev.labels.first().cloned(),
            labels: ev.labels,
            flow_control_key: flow.as_ref().map(|f| f.key.clone()),
            parallelism: flow.as_ref().map(|f| f.parallelism),
            rate: flow.as_ref().map(|f| f.rate),
            period: flow.as_ref().map(|f| f.period_seconds),
            flow_control: flow.map(|f| FlowControl {
                key: f.key,
                rate: f.rate,
                parallelism: f.parallelism,
                period: f.period_seconds,
            }),
            failed_step: ev.failed_step.map(StepInfo::from),
            completed_steps: ev.completed_steps.into_iter().map(StepInfo::from).collect(),
            error_message: ev.error_message,
            expires_at: e.expires_at,
            redrive_count: ev.redrive_count,
            // Set by the handler, which knows `--max-redrives` (`DlqMessage::guarded`).
            parked: false,
            redriven_from_dlq_id: nonempty(ev.redriven_from_dlq_id),
            lineage,
            signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pb::{self, FailureEvent};

    fn entry(body: Vec<u8>) -> DlqEntry {
        DlqEntry {
            dlq_id: "dlq-1".into(),
            signature: String::new(),
            created_at: 7,
            expires_at: 9,
            event: Some(FailureEvent {
                workflow_url: "https://x.example/wf".into(),
                body,
                header: [(
                    "Content-Type".to_string(),
                    HeaderValues {
                        values: vec!["application/json".into()],
                    },
                )]
                .into(),
                labels: vec!["a".into(), "b".into()],
                flow_control: Some(pb::FlowControl {
                    key: "fc".into(),
                    rate: 5,
                    parallelism: 2,
                    period_seconds: 60,
                }),
                failure_callback_info: Some(pb::FailureCallbackInfo {
                    state: CbState::CallbackFail as i32,
                    response_body: vec![0xff, 0x00],
                    ..Default::default()
                }),
                completed_steps: vec![Step {
                    step_name: "one".into(),
                    out: b"{\"ok\":true}".to_vec(),
                    ..Default::default()
                }],
                redriven_from_dlq_id: "dlq-0".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The message moves the decoded entry's fields: text stays text, other bytes become
    /// base64 under the `…Base64` name, and the fields derived from others are filled.
    #[test]
    fn a_message_carries_every_field_of_its_entry() {
        let e = entry(b"{\"order\":1}".to_vec());
        let signature = crate::signature::of_event(e.event.as_ref().expect("event"));
        let m = DlqMessage::guarded(e, 0);
        assert_eq!(m.dlq_id, "dlq-1");
        assert_eq!((m.created_at, m.expires_at), (7, 9));
        assert_eq!(m.url, m.workflow_url);
        assert_eq!(m.body.as_deref(), Some("{\"order\":1}"));
        assert_eq!(m.body_base64, None);
        assert_eq!(m.header["Content-Type"], vec!["application/json"]);
        assert_eq!(m.label.as_deref(), Some("a"));
        assert_eq!(m.labels, vec!["a", "b"]);
        assert_eq!(m.flow_control_key.as_deref(), Some("fc"));
        assert_eq!(
            (m.rate, m.parallelism, m.period),
            (Some(5), Some(2), Some(60))
        );
        let info = m.failure_callback_info.as_ref().expect("info");
        assert_eq!(info.state, "CALLBACK_FAIL");
        assert_eq!(m.failure_function_state.as_deref(), Some("CALLBACK_FAIL"));
        assert_eq!(info.response_body, None);
        assert_eq!(info.response_body_base64.as_deref(), Some("/wA="));
        assert_eq!(m.completed_steps[0].out.as_deref(), Some("{\"ok\":true}"));
        assert_eq!(m.lineage, vec!["dlq-0"]);
        assert_eq!(m.signature, signature);
        assert!(!m.parked);
    }

    #[test]
    fn a_body_that_is_not_utf8_is_given_as_base64() {
        let m = DlqMessage::from(entry(vec![0xc3, 0x28, b'a']));
        assert_eq!(m.body, None);
        assert_eq!(m.body_base64.as_deref(), Some("wyhh"));
        let m = DlqMessage::from(entry(Vec::new()));
        assert_eq!((m.body, m.body_base64), (None, None));
    }
}
