//! Wire contract specifications (docs/design.md §3): every `workflow.dlq.v1` message survives
//! binary protobuf and the canonical proto3 JSON mapping unchanged, the JSON shape is what
//! producers in other languages write, bad input yields a typed `DecodeError` (never a panic), and
//! the ids derived from messages are deterministic / unique.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;

use prost::Message;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{json, Value};
use workflow_dlq::wire::{
    codec::{decode, detect, encode, DecodeError, Encoding},
    ids,
    pb::{
        self, failure_callback_info::State, failure_envelope::Kind as EnvelopeKind,
        item_outcome::Status, recovery_command::Action, recovery_command::Ids,
        recovery_command::Selector, workflow_execution::Kind as ExecutionKind,
    },
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Asserts `msg` comes back equal through protobuf, JSON with a content-type header, and JSON
/// sniffed by its leading `{` with no header.
fn assert_round_trips<T>(msg: &T)
where
    T: Message + Default + Serialize + DeserializeOwned + PartialEq + Debug,
{
    let proto = encode(msg, Encoding::Protobuf);
    assert_eq!(
        &decode::<T>(None, Some(&proto)).expect("protobuf, sniffed"),
        msg,
        "protobuf (no header)"
    );
    assert_eq!(
        &decode::<T>(Some(b"application/x-protobuf"), Some(&proto)).expect("protobuf, header"),
        msg,
        "protobuf (content-type header)"
    );

    let json = encode(msg, Encoding::Json);
    assert_eq!(
        json.first(),
        Some(&b'{'),
        "JSON encoding is an object: {}",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(
        &decode::<T>(Some(b"application/json"), Some(&json)).expect("json, header"),
        msg,
        "JSON (content-type header): {}",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(
        &decode::<T>(None, Some(&json)).expect("json, sniffed"),
        msg,
        "JSON (sniffed by `{{`): {}",
        String::from_utf8_lossy(&json)
    );
}

/// The JSON encoding of `msg` as a `serde_json::Value`.
fn json_value<T: Message + Serialize>(msg: &T) -> Value {
    serde_json::from_slice(&encode(msg, Encoding::Json)).expect("encoder writes valid JSON")
}

fn decode_json<T: Message + Default + DeserializeOwned>(v: &Value) -> Result<T, DecodeError> {
    let bytes = serde_json::to_vec(v).unwrap();
    decode::<T>(Some(b"application/json"), Some(&bytes))
}

fn s(v: &str) -> String {
    v.to_owned()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| s(x)).collect()
}

fn header_values(v: &[&str]) -> pb::HeaderValues {
    pb::HeaderValues { values: strings(v) }
}

fn headers(pairs: &[(&str, &[&str])]) -> BTreeMap<String, pb::HeaderValues> {
    pairs
        .iter()
        .map(|(k, v)| (s(k), header_values(v)))
        .collect()
}

/// Bytes that are not valid UTF-8 (and include NUL and 0xff), so any accidental string
/// treatment of a `bytes` field would corrupt them.
const NOT_UTF8: &[u8] = &[
    0x00, 0xff, 0xfe, 0xc3, 0x28, 0x80, 0x7f, 0xf0, 0x28, 0x8c, 0xbc,
];

fn flow_control() -> pb::FlowControl {
    pb::FlowControl {
        key: s("tenant-42"),
        rate: 17,
        parallelism: -3,
        period_seconds: 86_400,
    }
}

fn step(id: i32) -> pb::Step {
    pb::Step {
        step_id: id,
        step_name: format!("step-{id}"),
        step_type: s("Run"),
        out: [NOT_UTF8, &[id as u8]].concat(),
        concurrent: 4,
        completed_at: 1_700_000_000_000 + i64::from(id),
    }
}

fn callback_info() -> pb::FailureCallbackInfo {
    pb::FailureCallbackInfo {
        state: State::CallbackFail as i32,
        response_status: 502,
        response_body: NOT_UTF8.to_vec(),
        response_headers: headers(&[
            ("Content-Type", &["text/plain"]),
            ("Set-Cookie", &["a=1", "b=2"]),
            ("X-Empty", &[]),
        ]),
    }
}

/// A `FailureEvent` with every one of its 31 fields set to a non-default value.
fn failure_event() -> pb::FailureEvent {
    pb::FailureEvent {
        event_id: s("evt-01HZX"),
        workflow_run_id: s("wfr_0192f1"),
        workflow_url: s("https://app.example.com/api/workflow?x=1&y=é"),
        workflow_created_at: i64::MAX,
        message_id: s("msg-1"),
        method: s("POST"),
        header: headers(&[
            ("Authorization", &["Bearer t"]),
            ("Content-Type", &["application/json"]),
            ("X-Multi", &["1", "2", "3"]),
        ]),
        body: NOT_UTF8.to_vec(),
        max_retries: 3,
        not_before: -1,
        caller_ip: s("2001:db8::1"),
        labels: strings(&["billing", "eu", "billing"]),
        flow_control: Some(flow_control()),
        completed_steps: vec![step(1), step(2), step(3)],
        failed_step: Some(step(4)),
        response_status: 500,
        response_header: headers(&[("Retry-After", &["10"]), ("Server", &["nginx"])]),
        response_body: b"{\"error\":\"boom\"}\xff".to_vec(),
        failure_callback: s("https://app.example.com/api/on-failure"),
        failure_callback_info: Some(callback_info()),
        failed_at: i64::MIN,
        error_message: s("step 4 failed: 500 Internal Server Error\n\t\"quoted\" ☃"),
        redrive_count: 2,
        topic_name: s("billing-group"),
        queue_name: s("invoices"),
        schedule_id: s("scd_01"),
        callback: s("https://app.example.com/api/on-delivery"),
        callback_header: headers(&[("X-Cb", &["1"])]),
        failure_callback_header: headers(&[("X-Fcb", &["2", "3"])]),
        redriven_from_dlq_id: s("dlq-prev"),
        lineage: strings(&["dlq-first", "dlq-prev"]),
    }
}

fn filter() -> pb::Filter {
    pb::Filter {
        from_date: -9_007_199_254_740_993, // beyond f64 precision: must not lose a digit
        to_date: 9_007_199_254_740_993,
        workflow_url: strings(&["https://a.example/wf", "https://b.example/wf"]),
        workflow_run_id: s("wfr_abc"),
        workflow_created_at: 1_700_000_000_123,
        label: strings(&["l1", "l2"]),
        failure_function_state: strings(&["CALLBACK_FAIL", "CALLBACK_SUCCESS"]),
        caller_ip: strings(&["10.0.0.1", "10.0.0.2"]),
        flow_control_key: strings(&["k1", "k2"]),
        message_id: s("msg-1"),
        topic_name: strings(&["g1", "g2"]),
        schedule_id: strings(&["scd_1"]),
        queue_name: strings(&["q1", "q2"]),
        response_status: vec![500, 503],
        signature: strings(&["0123456789abcdef"]),
        parked: Some(false), // set but false: must survive as set
    }
}

fn overrides() -> pb::Overrides {
    pb::Overrides {
        retries: Some(0),
        flow_control: Some(flow_control()),
        delay: s("10s"),
        retry_delay: s("pow(2, retried) * 1000"),
        labels: strings(&["redriven", "manual"]),
        failure_callback: s("https://app.example.com/api/other-failure"),
    }
}

fn recovery_command(selector: Selector) -> pb::RecoveryCommand {
    pb::RecoveryCommand {
        command_id: s("cmd-7"),
        action: Action::Resume as i32,
        selector: Some(selector),
        overrides: Some(overrides()),
        max_per_second: 12.5,
        dry_run: true,
        requested_by: s("ops@example.com"),
        reason: s("downstream fixed"),
        requested_at: 1_700_000_000_999,
        new_run_ids: [
            (s("dlq-aa"), s("wfr_1")),
            (s("dlq-bb"), s("wfr_2")),
            (s("dlq-cc"), s("wfr_3")),
        ]
        .into(),
        page_cursor: s("MTcwMDAwMDAwMDAwMDpkbHEtYWE"),
        force: true,
    }
}

fn item_outcome(status: Status) -> pb::ItemOutcome {
    pb::ItemOutcome {
        dlq_id: s("dlq-aa"),
        status: status as i32,
        detail: s("republished"),
        workflow_run_id: s("wfr_new"),
        workflow_created_at: 1_700_000_000_001,
    }
}

fn workflow_execution() -> pb::WorkflowExecution {
    pb::WorkflowExecution {
        workflow_run_id: s("wfr_new"),
        workflow_created_at: 1_700_000_000_002,
        kind: ExecutionKind::FailureCallback as i32,
        workflow_url: s("https://app.example.com/api/workflow"),
        method: s("PUT"),
        header: headers(&[("A", &["1"]), ("B", &["2", "3"])]),
        body: NOT_UTF8.to_vec(),
        steps: vec![step(1), step(2)],
        retries: 5,
        flow_control: Some(flow_control()),
        labels: strings(&["x", "y"]),
        delay: s("1m"),
        retry_delay: s("1000"),
        failure_callback: s("https://cb.example"),
        source_dlq_id: s("dlq-aa"),
        source_workflow_run_id: s("wfr_old"),
        command_id: s("cmd-7"),
        redrive_count: 3,
        failure: Some(failure_event()),
        lineage: strings(&["dlq-first", "dlq-prev"]),
    }
}

fn envelope_with_body() -> pb::FailureEnvelope {
    pb::FailureEnvelope {
        kind: Some(EnvelopeKind::Failure(failure_event())),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Every message round-trips through protobuf and JSON
// ---------------------------------------------------------------------------------------------

#[test]
fn every_message_round_trips_through_protobuf_and_json() {
    assert_round_trips(&header_values(&["a", "b", ""]));
    assert_round_trips(&flow_control());
    assert_round_trips(&step(7));
    assert_round_trips(&callback_info());
    assert_round_trips(&failure_event());
    assert_round_trips(&pb::FailureCallbackReport {
        dlq_id: s("dlq-aa"),
        info: Some(callback_info()),
    });
    assert_round_trips(&pb::DlqEntry {
        dlq_id: ids::dlq_id_for_event("evt-01HZX"),
        event: Some(failure_event()),
        created_at: 1_700_000_000_000,
        expires_at: 1_700_604_800_000,
        source_topic: s("workflow.failures"),
        source_partition: 11,
        source_offset: i64::MAX - 1,
        signature: s("0123456789abcdef"),
    });
    assert_round_trips(&filter());
    assert_round_trips(&overrides());
    assert_round_trips(&pb::recovery_command::Ids {
        ids: strings(&["dlq-aa", "dlq-bb"]),
    });
    assert_round_trips(&item_outcome(Status::NotFound));
    assert_round_trips(&pb::CommandResult {
        command_id: s("cmd-7"),
        action: Action::RetryFailureCallback as i32,
        dry_run: true,
        items: vec![
            item_outcome(Status::Ok),
            item_outcome(Status::Rejected),
            item_outcome(Status::Skipped),
        ],
        matched: 10_000_000_000,
        succeeded: 9_999_999_999,
        failed: -1,
        done: true,
        requested_by: s("ops@example.com"),
        completed_at: 1_700_000_000_003,
        page_cursor: s("MTcwMDAwMDAwMDAwMDpkbHEtYWE"),
        canceled: true,
        not_dispatched: 7,
        requested_at: 1_700_000_000_000,
        total: 10_000_000_000,
    });
    assert_round_trips(&workflow_execution());
}

#[test]
fn both_failure_envelope_arms_round_trip() {
    assert_round_trips(&envelope_with_body());
    assert_round_trips(&pb::FailureEnvelope {
        kind: Some(EnvelopeKind::CallbackReport(pb::FailureCallbackReport {
            dlq_id: s("dlq-aa"),
            info: Some(callback_info()),
        })),
    });
}

#[test]
fn every_recovery_command_selector_arm_round_trips() {
    let arms = [
        Selector::DlqIds(Ids {
            ids: strings(&["dlq-aa", "dlq-bb", "dlq-cc"]),
        }),
        Selector::Filter(filter()),
        Selector::All(true),
    ];
    for arm in arms {
        let cmd = recovery_command(arm.clone());
        assert_round_trips(&cmd);
        let back: pb::RecoveryCommand = decode(None, Some(&encode(&cmd, Encoding::Json))).unwrap();
        assert_eq!(back.selector, Some(arm));
        assert_eq!(back.new_run_ids.len(), 3);
    }
}

#[test]
fn optional_retries_zero_survives_as_present_not_unset() {
    let zero = pb::Overrides {
        retries: Some(0),
        ..Default::default()
    };
    let unset = pb::Overrides::default();

    for enc in [Encoding::Protobuf, Encoding::Json] {
        let back: pb::Overrides = decode(None, Some(&encode(&zero, enc))).unwrap();
        assert_eq!(back.retries, Some(0), "{enc:?}: explicit 0 keeps presence");
        let back: pb::Overrides = decode(None, Some(&encode(&unset, enc))).unwrap();
        assert_eq!(back.retries, None, "{enc:?}: unset stays unset");
    }
    assert_eq!(json_value(&zero), json!({"retries": 0}));
    assert_eq!(json_value(&unset), json!({}));
}

#[test]
fn every_enum_value_round_trips() {
    for state in [
        State::Unspecified,
        State::CallbackInprogress,
        State::CallbackSuccess,
        State::CallbackFail,
        State::CallbackCanceled,
    ] {
        assert_round_trips(&pb::FailureCallbackInfo {
            state: state as i32,
            ..callback_info()
        });
    }
    for action in [
        Action::Unspecified,
        Action::Restart,
        Action::Resume,
        Action::RetryFailureCallback,
        Action::Delete,
    ] {
        assert_round_trips(&pb::RecoveryCommand {
            action: action as i32,
            ..recovery_command(Selector::All(true))
        });
    }
    for status in [
        Status::Unspecified,
        Status::Ok,
        Status::NotFound,
        Status::Rejected,
        Status::Skipped,
    ] {
        assert_round_trips(&item_outcome(status));
    }
    for kind in [
        ExecutionKind::Unspecified,
        ExecutionKind::Restart,
        ExecutionKind::Resume,
        ExecutionKind::FailureCallback,
    ] {
        assert_round_trips(&pb::WorkflowExecution {
            kind: kind as i32,
            ..workflow_execution()
        });
    }
}

#[test]
fn default_messages_round_trip_and_encode_to_nothing() {
    assert_round_trips(&pb::FailureEvent::default());
    assert_round_trips(&pb::RecoveryCommand::default());
    assert!(encode(&pb::FailureEvent::default(), Encoding::Protobuf).is_empty());
    assert_eq!(json_value(&pb::FailureEvent::default()), json!({}));
}

// ---------------------------------------------------------------------------------------------
// 2. The JSON mapping is canonical proto3
// ---------------------------------------------------------------------------------------------

#[test]
fn json_field_names_are_lower_camel_case() {
    let v = json_value(&failure_event());
    let obj = v.as_object().unwrap();
    for key in [
        "eventId",
        "workflowRunId",
        "workflowUrl",
        "workflowCreatedAt",
        "messageId",
        "maxRetries",
        "notBefore",
        "callerIp",
        "flowControl",
        "completedSteps",
        "failedStep",
        "responseStatus",
        "responseHeader",
        "responseBody",
        "failureCallback",
        "failureCallbackInfo",
        "failedAt",
        "errorMessage",
        "redriveCount",
        // QStash's identity fields (issue 14, added on main).
        "topicName",
        "queueName",
        "scheduleId",
        "callback",
        "callbackHeader",
        "failureCallbackHeader",
        "redrivenFromDlqId",
        "lineage",
    ] {
        assert!(obj.contains_key(key), "missing `{key}` in {v}");
    }
    assert_eq!(obj.len(), 31, "one key per field: {v}");
    assert!(
        obj.keys().all(|k| !k.contains('_')),
        "no snake_case keys: {v}"
    );
    assert_eq!(v["completedSteps"][0]["stepId"], json!(1));
    assert_eq!(v["completedSteps"][0]["stepName"], json!("step-1"));
    assert_eq!(v["flowControl"]["periodSeconds"], json!(86_400));
    assert_eq!(
        v["failureCallbackInfo"]["responseHeaders"]["Set-Cookie"],
        json!({"values": ["a=1", "b=2"]}),
        "map keys are kept verbatim"
    );

    let cmd = json_value(&recovery_command(Selector::DlqIds(Ids {
        ids: strings(&["dlq-aa"]),
    })));
    assert_eq!(cmd["dlqIds"], json!({"ids": ["dlq-aa"]}));
    assert_eq!(cmd["newRunIds"]["dlq-bb"], json!("wfr_2"));
    assert_eq!(cmd["maxPerSecond"], json!(12.5));
    assert_eq!(cmd["dryRun"], json!(true));
    assert_eq!(
        cmd["overrides"]["retryDelay"],
        json!("pow(2, retried) * 1000")
    );
}

#[test]
fn json_bytes_are_standard_base64() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

    let v = json_value(&failure_event());
    assert_eq!(v["body"], json!(b64(NOT_UTF8)));
    assert_eq!(v["body"], json!("AP/+wyiAf/AojLw="));
    assert_eq!(v["completedSteps"][1]["out"], json!(b64(&step(2).out)));
    assert_eq!(
        v["failureCallbackInfo"]["responseBody"],
        json!(b64(NOT_UTF8))
    );
}

#[test]
fn json_int64_is_written_as_a_string() {
    let v = json_value(&failure_event());
    assert_eq!(v["workflowCreatedAt"], json!(i64::MAX.to_string()));
    assert_eq!(v["failedAt"], json!("-9223372036854775808"));
    assert_eq!(v["notBefore"], json!("-1"));
    assert_eq!(
        v["completedSteps"][0]["completedAt"],
        json!("1700000000001")
    );
    // int32 stays a JSON number.
    assert_eq!(v["maxRetries"], json!(3));
    assert_eq!(v["responseStatus"], json!(500));

    let f = json_value(&filter());
    assert_eq!(f["fromDate"], json!("-9007199254740993"));
    assert_eq!(f["toDate"], json!("9007199254740993"));
}

#[test]
fn json_enums_are_written_by_name() {
    let v = json_value(&callback_info());
    assert_eq!(v["state"], json!("CALLBACK_FAIL"));

    let cmd = json_value(&pb::RecoveryCommand {
        action: Action::Restart as i32,
        ..Default::default()
    });
    assert_eq!(cmd["action"], json!("RESTART"));

    assert_eq!(
        json_value(&item_outcome(Status::NotFound))["status"],
        json!("NOT_FOUND")
    );
    assert_eq!(
        json_value(&workflow_execution())["kind"],
        json!("FAILURE_CALLBACK")
    );
}

#[test]
fn json_parsing_accepts_int64_as_number_or_string() {
    let as_number: pb::Step =
        decode_json(&json!({"stepId": 1, "completedAt": 1_700_000_000_000_i64})).unwrap();
    let as_string: pb::Step =
        decode_json(&json!({"stepId": 1, "completedAt": "1700000000000"})).unwrap();
    assert_eq!(as_number.completed_at, 1_700_000_000_000);
    assert_eq!(as_number, as_string);

    let negative: pb::DlqEntry =
        decode_json(&json!({"createdAt": -5, "sourceOffset": "-6"})).unwrap();
    assert_eq!((negative.created_at, negative.source_offset), (-5, -6));
}

#[test]
fn json_parsing_accepts_enums_by_name_and_by_number() {
    let by_name: pb::FailureCallbackInfo = decode_json(&json!({"state": "CALLBACK_FAIL"})).unwrap();
    assert_eq!(by_name.state, State::CallbackFail as i32);

    let cmd: pb::RecoveryCommand = decode_json(&json!({"action": "RESTART", "all": true})).unwrap();
    assert_eq!(cmd.action, Action::Restart as i32);
    assert_eq!(cmd.selector, Some(Selector::All(true)));

    let by_number: pb::FailureCallbackInfo = decode_json(&json!({"state": 3})).unwrap();
    assert_eq!(by_number, by_name);
}

#[test]
fn json_parsing_accepts_original_proto_field_names_and_ignores_unknown_fields() {
    let e: pb::FailureEvent = decode_json(&json!({
        "event_id": "evt-1",
        "workflow_run_id": "wfr_1",
        "someFutureField": {"nested": [1, 2, 3]},
    }))
    .unwrap();
    assert_eq!(e.event_id, "evt-1");
    assert_eq!(e.workflow_run_id, "wfr_1");
}

/// docs/design.md §3 *Strictness*: what failure events may carry (a field of a newer proto) a
/// command may not — at any depth, in JSON and in protobuf — and an enum value outside the enum
/// is refused with one clean message.
#[test]
fn commands_are_strict_where_failure_events_are_lenient() {
    use workflow_dlq::wire::{codec::decode_strict, strict::RECOVERY_COMMAND};
    let ct = Some(&b"application/json"[..]);
    let strict = |v: Value| {
        decode_strict::<pb::RecoveryCommand>(
            RECOVERY_COMMAND,
            ct,
            Some(&v.to_string().into_bytes()),
        )
        .map_err(|e| e.to_string())
    };
    let envelope = json!({"failure": {"eventId": "e", "someFutureField": 1}});
    assert!(decode_json::<pb::FailureEnvelope>(&envelope).is_ok());
    for (command, message) in [
        (
            json!({"commandId": "c", "all": true, "dryrun": true}),
            r#"unknown field "dryrun" in RecoveryCommand"#,
        ),
        (
            json!({"commandId": "c", "ids": ["a"]}),
            r#"unknown field "ids" in RecoveryCommand"#,
        ),
        (
            json!({"commandId": "c", "filter": {"labels": ["x"]}}),
            r#"unknown field "labels" in RecoveryCommand.filter"#,
        ),
        (
            json!({"commandId": "c", "all": true, "overrides": {"retriess": 1}}),
            r#"unknown field "retriess" in RecoveryCommand.overrides"#,
        ),
    ] {
        assert_eq!(strict(command).unwrap_err(), message);
    }
    let e = strict(json!({"commandId": "c", "action": 99})).unwrap_err();
    assert!(
        e.starts_with("unknown value 99 for RecoveryCommand.action (enum Action: "),
        "{e}"
    );
    assert!(!e.contains("expected expected"), "{e}");
    // The same command spelt right decodes, by JSON or proto names.
    let ok = strict(json!({"command_id": "c", "action": "RESTART", "all": true, "dryRun": true}));
    assert!(ok.is_ok(), "{ok:?}");
    // Protobuf: a field number this schema does not have.
    let mut raw = pb::RecoveryCommand {
        command_id: "c".into(),
        ..Default::default()
    }
    .encode_to_vec();
    raw.extend([0xa0, 0x01, 0x01]); // field 20, varint 1
    assert!(decode::<pb::RecoveryCommand>(None, Some(&raw)).is_ok());
    let e = decode_strict::<pb::RecoveryCommand>(RECOVERY_COMMAND, None, Some(&raw)).unwrap_err();
    assert_eq!(e.to_string(), "unknown field number 20 in RecoveryCommand");
}

// ---------------------------------------------------------------------------------------------
// 3. A producer's hand-written JSON
// ---------------------------------------------------------------------------------------------

#[test]
fn a_hand_written_producer_failure_envelope_decodes_to_the_expected_struct() {
    // As a TypeScript/Go producer would write it: base64 bytes, int64 as a string, step ids as
    // numbers, the header map keyed by the original header name.
    let payload = br#"{
        "failure": {
            "eventId": "evt-123",
            "workflowRunId": "wfr_abc",
            "workflowUrl": "https://app.example.com/api/wf",
            "body": "eyJvcmRlciI6NDJ9",
            "header": {"Content-Type": {"values": ["application/json"]}},
            "completedSteps": [{"stepId": 1, "stepName": "a", "out": "Im9rIg=="}],
            "failedAt": "1700000000000"
        }
    }"#;

    let expected = pb::FailureEnvelope {
        kind: Some(EnvelopeKind::Failure(pb::FailureEvent {
            event_id: s("evt-123"),
            workflow_run_id: s("wfr_abc"),
            workflow_url: s("https://app.example.com/api/wf"),
            body: b"{\"order\":42}".to_vec(),
            header: headers(&[("Content-Type", &["application/json"])]),
            completed_steps: vec![pb::Step {
                step_id: 1,
                step_name: s("a"),
                out: b"\"ok\"".to_vec(),
                ..Default::default()
            }],
            failed_at: 1_700_000_000_000,
            ..Default::default()
        })),
    };

    let by_header: pb::FailureEnvelope = decode(Some(b"application/json"), Some(payload)).unwrap();
    assert_eq!(by_header, expected);
    let sniffed: pb::FailureEnvelope = decode(None, Some(payload)).unwrap();
    assert_eq!(sniffed, expected);
}

// ---------------------------------------------------------------------------------------------
// 4. Errors are typed, never a panic
// ---------------------------------------------------------------------------------------------

#[test]
fn truncated_protobuf_is_a_protobuf_error() {
    let full = encode(&envelope_with_body(), Encoding::Protobuf);
    assert!(full.len() > 100);

    let cuts: Vec<usize> = (1..full.len()).collect();
    let mut errors = 0;
    for &cut in &cuts {
        match decode::<pb::FailureEnvelope>(None, Some(&full[..cut])) {
            Err(e @ DecodeError::Protobuf(_)) => {
                assert_eq!(e.reason(), "protobuf");
                errors += 1;
            }
            Err(other) => panic!("cut at {cut}: unexpected error kind {other:?}"),
            Ok(_) => {} // a valid prefix: acceptable, it just must not panic
        }
    }
    // The envelope is a single length-delimited field, so every strict prefix claims more
    // bytes than it has: all of them must fail.
    assert_eq!(errors, cuts.len(), "every strict prefix is rejected");
}

#[test]
fn garbage_bytes_are_a_protobuf_error() {
    for garbage in [
        vec![0xff; 32],
        vec![0x80; 11],                           // over-long varint
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], // length far beyond the buffer
        vec![0x00],                               // field number 0
        vec![0x0f],                               // wire type 7 does not exist
    ] {
        let err = decode::<pb::FailureEnvelope>(None, Some(&garbage)).unwrap_err();
        assert!(
            matches!(err, DecodeError::Protobuf(_)),
            "{garbage:?} -> {err:?}"
        );
        assert_eq!(err.reason(), "protobuf");
        // The same holds for every other message type.
        assert!(matches!(
            decode::<pb::RecoveryCommand>(Some(b"application/x-protobuf"), Some(&garbage)),
            Err(DecodeError::Protobuf(_))
        ));
    }
}

#[test]
fn a_field_with_the_wrong_wire_type_is_a_protobuf_error() {
    // Field 1 (`failure`, a message: wire type 2) sent as a varint (wire type 0).
    let err = decode::<pb::FailureEnvelope>(None, Some(&[0x08, 0x01])).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf(_)), "{err:?}");
    assert_eq!(err.reason(), "protobuf");

    // Field 1 of FailureEvent (`event_id`, a string) sent as a fixed64.
    let inner = [0x09, 1, 2, 3, 4, 5, 6, 7, 8];
    let mut outer = vec![0x0a, inner.len() as u8];
    outer.extend_from_slice(&inner);
    let err = decode::<pb::FailureEnvelope>(None, Some(&outer)).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf(_)), "{err:?}");

    // A string field holding non-UTF-8 bytes.
    let bad_string = [0x0a, 0x04, 0x0a, 0x02, 0xff, 0xfe];
    let err = decode::<pb::FailureEnvelope>(None, Some(&bad_string)).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf(_)), "{err:?}");
}

#[test]
fn invalid_json_is_a_json_error() {
    for (ct, payload) in [
        (Some(&b"application/json"[..]), &br#"{"failure": "#[..]),
        (None, &br#"{"failure": "#[..]),
        (None, &b"{not json}"[..]),
        (Some(&b"application/json"[..]), &b""[..]),
        (Some(&b"application/json"[..]), &b"\xff\xfe"[..]),
    ] {
        let err = decode::<pb::FailureEnvelope>(ct, Some(payload)).unwrap_err();
        assert!(
            matches!(err, DecodeError::Json(_)),
            "{payload:?} -> {err:?}"
        );
        assert_eq!(err.reason(), "json");
    }
}

#[test]
fn json_with_a_wrong_type_is_a_json_error() {
    for payload in [
        json!({"failure": {"maxRetries": "lots"}}),
        json!({"failure": {"failedAt": "yesterday"}}),
        json!({"failure": {"body": "not base64!"}}),
        json!({"failure": {"labels": "one"}}),
        json!({"failure": {"header": {"A": "x"}}}),
        json!({"failure": {"failureCallbackInfo": {"state": "NOT_A_STATE"}}}),
        json!({"failure": {"maxRetries": 1e20}}),
        json!(["failure"]),
        json!("failure"),
    ] {
        let err = decode_json::<pb::FailureEnvelope>(&payload).unwrap_err();
        assert!(matches!(err, DecodeError::Json(_)), "{payload} -> {err:?}");
        assert_eq!(err.reason(), "json");
    }
}

#[test]
fn both_oneof_arms_at_once_is_a_json_error() {
    let payload = json!({"failure": {}, "callbackReport": {}});
    let err = decode_json::<pb::FailureEnvelope>(&payload).unwrap_err();
    assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
}

#[test]
fn a_missing_payload_is_empty() {
    let err = decode::<pb::FailureEnvelope>(None, None).unwrap_err();
    assert!(matches!(err, DecodeError::Empty), "{err:?}");
    assert_eq!(err.reason(), "empty");
    let err = decode::<pb::FailureEnvelope>(Some(b"application/json"), None).unwrap_err();
    assert!(matches!(err, DecodeError::Empty), "{err:?}");
}

#[test]
fn an_unsupported_content_type_is_rejected() {
    let json = encode(&envelope_with_body(), Encoding::Json);
    for ct in [&b"text/plain"[..], b"application/xml", b"", b"\xff\xfe"] {
        let err = decode::<pb::FailureEnvelope>(Some(ct), Some(&json)).unwrap_err();
        assert!(
            matches!(err, DecodeError::UnsupportedContentType(_)),
            "{ct:?} -> {err:?}"
        );
        assert_eq!(err.reason(), "content_type");
    }
    // The echoed content-type is bounded.
    let long = vec![b'x'; 10_000];
    match decode::<pb::FailureEnvelope>(Some(&long), Some(&json)) {
        Err(DecodeError::UnsupportedContentType(echo)) => assert!(echo.len() <= 100),
        other => panic!("expected UnsupportedContentType, got {other:?}"),
    }
}

#[test]
fn content_type_parameters_and_case_are_accepted() {
    let msg = envelope_with_body();
    let json = encode(&msg, Encoding::Json);
    for ct in [
        &b"application/json; charset=utf-8"[..],
        b"Application/JSON",
        b"  application/json ;charset=UTF-8",
    ] {
        assert_eq!(
            decode::<pb::FailureEnvelope>(Some(ct), Some(&json)).unwrap(),
            msg
        );
    }
    let proto = encode(&msg, Encoding::Protobuf);
    for ct in [
        &b"application/x-protobuf"[..],
        b"application/protobuf",
        b"application/vnd.google.protobuf",
        b"application/octet-stream",
        b"application/x-protobuf; messageType=workflow.dlq.v1.FailureEnvelope",
    ] {
        assert_eq!(
            decode::<pb::FailureEnvelope>(Some(ct), Some(&proto)).unwrap(),
            msg
        );
    }
}

#[test]
fn detection_uses_the_header_or_sniffs_a_leading_brace() {
    assert_eq!(detect(None, b"{}").unwrap(), Encoding::Json);
    assert_eq!(detect(None, b"\x0a\x00").unwrap(), Encoding::Protobuf);
    assert_eq!(detect(None, b"").unwrap(), Encoding::Protobuf);
    assert_eq!(
        detect(Some(b"application/json"), b"\x0a\x00").unwrap(),
        Encoding::Json
    );
    assert_eq!(
        detect(Some(b"application/x-protobuf"), b"{").unwrap(),
        Encoding::Protobuf
    );
    assert_eq!(Encoding::Json.content_type(), "application/json");
    assert_eq!(Encoding::Protobuf.content_type(), "application/x-protobuf");
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let depth = 10_000;
    let arrays = "[".repeat(depth);
    let objects = "{\"a\":".repeat(depth);

    // A bare array: JSON by header. (Without the header it does not start with `{`, so it is
    // sniffed as protobuf, where 0x5b is a start-group tag nested 10,000 deep: also an error.)
    let err = decode::<pb::FailureEnvelope>(Some(b"application/json"), Some(arrays.as_bytes()))
        .unwrap_err();
    assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
    let err = decode::<pb::FailureEnvelope>(None, Some(arrays.as_bytes())).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf(_)), "{err:?}");

    let payloads = [
        format!("{{\"failure\": {arrays}"),
        format!("{{\"failure\": {{\"eventId\": {arrays}"),
        format!("{{\"failure\": {{\"flowControl\": {objects}"),
        // Inside an unknown field, which is skipped rather than parsed into a message.
        format!("{{\"failure\": {{\"someFutureField\": {arrays}}}}}"),
        format!("{{\"someFutureField\": {objects}"),
    ];
    for payload in &payloads {
        for ct in [Some(&b"application/json"[..]), None] {
            let err = decode::<pb::FailureEnvelope>(ct, Some(payload.as_bytes())).unwrap_err();
            assert!(matches!(err, DecodeError::Json(_)), "{err:?}");
            assert_eq!(err.reason(), "json");
        }
    }

    // Well-formed but deep inside an unknown field: skipping it must not overflow the stack
    // either; whether it is accepted (ignored) or rejected, the result is not a crash.
    let closed = format!(
        "{{\"someFutureField\": {}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    match decode::<pb::FailureEnvelope>(None, Some(closed.as_bytes())) {
        Ok(env) => assert_eq!(env, pb::FailureEnvelope::default()),
        Err(err) => assert!(matches!(err, DecodeError::Json(_)), "{err:?}"),
    }
}

#[test]
fn decode_error_messages_are_human_readable() {
    let err = decode::<pb::FailureEnvelope>(Some(b"text/plain"), Some(b"x")).unwrap_err();
    assert!(err.to_string().contains("text/plain"), "{err}");
    assert_eq!(
        decode::<pb::FailureEnvelope>(None, None)
            .unwrap_err()
            .to_string(),
        "record has no value"
    );
    let err = decode::<pb::FailureEnvelope>(None, Some(b"{")).unwrap_err();
    assert!(err.to_string().starts_with("invalid JSON"), "{err}");
    let err = decode::<pb::FailureEnvelope>(None, Some(&[0xff; 4])).unwrap_err();
    assert!(err.to_string().starts_with("invalid protobuf"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 5. Derived ids
// ---------------------------------------------------------------------------------------------

#[test]
fn dlq_id_is_deterministic_per_event_and_differs_between_events() {
    let a = ids::dlq_id_for_event("evt-01HZX");
    assert_eq!(a, ids::dlq_id_for_event("evt-01HZX"));
    assert!(a.starts_with("dlq-") && a.len() == 36, "{a}");
    assert!(a[4..]
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    let distinct: HashSet<String> = (0..1_000)
        .map(|i| ids::dlq_id_for_event(&format!("evt-{i}")))
        .collect();
    assert_eq!(distinct.len(), 1_000);
    assert_ne!(ids::dlq_id_for_event(""), ids::dlq_id_for_event(" "));
    assert_ne!(
        ids::dlq_id_for_event("evt-1"),
        ids::dlq_id_for_event("EVT-1")
    );
}

#[test]
fn new_run_ids_are_unique_over_a_thousand_calls() {
    let run_ids: Vec<String> = (0..1_000).map(|_| ids::new_run_id()).collect();
    let distinct: HashSet<&String> = run_ids.iter().collect();
    assert_eq!(distinct.len(), run_ids.len());
    for id in &run_ids {
        assert!(id.starts_with("wfr_") && id.len() == 4 + 32, "{id}");
    }
    // Time-ordered (UUIDv7): generated in sequence, they sort in sequence.
    let mut sorted = run_ids.clone();
    sorted.sort();
    assert_eq!(sorted, run_ids);
}
