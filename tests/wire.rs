//! Wire contracts: every message of DESIGN §3 survives protobuf and canonical proto3 JSON, and
//! bad bytes give a typed error, never a panic.

use std::fmt::Debug;

use prost::Message;
use serde::{de::DeserializeOwned, Serialize};
use workflow_dlq::wire::{
    codec::{decode, encode, DecodeError, Encoding},
    pb::{self, recovery_command::Selector},
};

fn round_trips<T>(msg: T)
where
    T: Message + Default + Serialize + DeserializeOwned + PartialEq + Debug,
{
    let proto = encode(&msg, Encoding::Protobuf);
    assert_eq!(decode::<T>(None, Some(&proto)).unwrap(), msg, "protobuf");
    let json = encode(&msg, Encoding::Json);
    assert_eq!(
        decode::<T>(Some(b"application/json"), Some(&json)).unwrap(),
        msg,
        "json by header"
    );
    assert_eq!(decode::<T>(None, Some(&json)).unwrap(), msg, "json sniffed");
}

fn hv(v: &[&str]) -> pb::HeaderValues {
    pb::HeaderValues {
        values: v.iter().map(|s| s.to_string()).collect(),
    }
}

fn step(i: i32) -> pb::Step {
    pb::Step {
        step_id: i,
        step_name: format!("s{i}"),
        step_type: "Run".into(),
        out: vec![0xff, 0x00, i as u8],
        concurrent: 2,
        completed_at: -1_700_000_000_000 * i as i64,
    }
}

fn callback_info() -> pb::FailureCallbackInfo {
    pb::FailureCallbackInfo {
        state: pb::failure_callback_info::State::CallbackFail as i32,
        response_status: 502,
        response_body: vec![0xc3, 0x28],
        response_headers: [("a".into(), hv(&["1", "2"])), ("b".into(), hv(&["3"]))].into(),
    }
}

fn flow() -> pb::FlowControl {
    pb::FlowControl {
        key: "k".into(),
        rate: 5,
        parallelism: 3,
        period_seconds: 60,
    }
}

fn event() -> pb::FailureEvent {
    pb::FailureEvent {
        event_id: "e".into(),
        workflow_run_id: "r".into(),
        workflow_url: "https://x/y".into(),
        workflow_created_at: i64::MAX,
        message_id: "m".into(),
        method: "POST".into(),
        header: [("H".into(), hv(&["v1", "v2"]))].into(),
        body: vec![0, 159, 146, 150],
        max_retries: 3,
        not_before: 12,
        caller_ip: "1.2.3.4".into(),
        labels: vec!["l1".into(), "l2".into()],
        flow_control: Some(flow()),
        completed_steps: vec![step(1), step(2), step(3)],
        failed_step: Some(step(4)),
        response_status: 500,
        response_header: [("R".into(), hv(&["x"]))].into(),
        response_body: b"oops".to_vec(),
        failure_callback: "https://x/fail".into(),
        failure_callback_info: Some(callback_info()),
        failed_at: 1_700_000_000_123,
        error_message: "boom".into(),
        redrive_count: 2,
    }
}

fn filter() -> pb::Filter {
    pb::Filter {
        from_date: 1,
        to_date: 2,
        workflow_url: vec!["u1".into(), "u2".into()],
        workflow_run_id: "r".into(),
        workflow_created_at: 3,
        label: vec!["l".into()],
        failure_function_state: vec!["CALLBACK_FAIL".into()],
        caller_ip: vec!["ip".into()],
        flow_control_key: vec!["fc".into()],
    }
}

fn overrides() -> pb::Overrides {
    pb::Overrides {
        retries: Some(0),
        flow_control: Some(flow()),
        delay: "10s".into(),
        retry_delay: "1000 * retried".into(),
        labels: vec!["x".into()],
        failure_callback: "https://cb".into(),
    }
}

fn command(selector: Selector) -> pb::RecoveryCommand {
    pb::RecoveryCommand {
        command_id: "c".into(),
        action: pb::recovery_command::Action::Resume as i32,
        selector: Some(selector),
        overrides: Some(overrides()),
        max_per_second: 12.5,
        dry_run: true,
        requested_by: "ops".into(),
        reason: "incident".into(),
        requested_at: 99,
        new_run_ids: [("d1".into(), "r1".into()), ("d2".into(), "r2".into())].into(),
    }
}

fn outcome() -> pb::ItemOutcome {
    pb::ItemOutcome {
        dlq_id: "d".into(),
        status: pb::item_outcome::Status::Rejected as i32,
        detail: "why".into(),
        workflow_run_id: "r".into(),
        workflow_created_at: 7,
    }
}

#[test]
fn every_message_round_trips_through_protobuf_and_json() {
    round_trips(hv(&["a", "b"]));
    round_trips(flow());
    round_trips(step(1));
    round_trips(callback_info());
    round_trips(event());
    round_trips(pb::FailureCallbackReport {
        dlq_id: "d".into(),
        info: Some(callback_info()),
    });
    round_trips(pb::FailureEnvelope {
        kind: Some(pb::failure_envelope::Kind::Failure(event())),
    });
    round_trips(pb::FailureEnvelope {
        kind: Some(pb::failure_envelope::Kind::CallbackReport(
            pb::FailureCallbackReport {
                dlq_id: "d".into(),
                info: Some(callback_info()),
            },
        )),
    });
    round_trips(pb::DlqEntry {
        dlq_id: "d".into(),
        event: Some(event()),
        created_at: 1,
        expires_at: 2,
        source_topic: "t".into(),
        source_partition: 3,
        source_offset: 4,
    });
    round_trips(filter());
    round_trips(overrides());
    round_trips(command(Selector::DlqIds(pb::recovery_command::Ids {
        ids: vec!["a".into(), "b".into()],
    })));
    round_trips(command(Selector::Filter(filter())));
    round_trips(command(Selector::All(true)));
    round_trips(outcome());
    round_trips(pb::CommandResult {
        command_id: "c".into(),
        action: pb::recovery_command::Action::Delete as i32,
        dry_run: true,
        items: vec![outcome(), outcome()],
        matched: 2,
        succeeded: 1,
        failed: 1,
        done: true,
        requested_by: "ops".into(),
        completed_at: 5,
    });
    round_trips(pb::WorkflowExecution {
        workflow_run_id: "n".into(),
        workflow_created_at: 1,
        kind: pb::workflow_execution::Kind::FailureCallback as i32,
        workflow_url: "u".into(),
        method: "POST".into(),
        header: [("h".into(), hv(&["v"]))].into(),
        body: vec![1, 2, 255],
        steps: vec![step(1)],
        retries: 4,
        flow_control: Some(flow()),
        labels: vec!["l".into()],
        delay: "1s".into(),
        retry_delay: "2s".into(),
        failure_callback: "f".into(),
        source_dlq_id: "d".into(),
        source_workflow_run_id: "r".into(),
        command_id: "c".into(),
        redrive_count: 3,
        failure: Some(event()),
    });
}

#[test]
fn json_is_the_canonical_proto3_mapping() {
    let v: serde_json::Value = serde_json::from_slice(&encode(&event(), Encoding::Json)).unwrap();
    assert_eq!(v["workflowRunId"], "r");
    assert_eq!(
        v["workflowCreatedAt"],
        i64::MAX.to_string(),
        "int64 as string"
    );
    assert_eq!(v["body"], "AJ+Slg==", "bytes as base64");
    assert_eq!(
        v["failureCallbackInfo"]["state"], "CALLBACK_FAIL",
        "enum by name"
    );
    assert_eq!(v["completedSteps"][0]["stepName"], "s1");
    assert_eq!(v["header"]["H"]["values"][1], "v2");
}

#[test]
fn a_producers_hand_written_json_decodes() {
    let json = br#"{"failure": {"eventId": "e1", "workflowRunId": "r1", "workflowUrl": "https://a/b",
        "body": "aGk=", "header": {"Content-Type": {"values": ["application/json"]}},
        "completedSteps": [{"stepId": 1, "stepName": "a", "out": "MQ=="}],
        "failedAt": 1700000000000, "failureCallbackInfo": {"state": "CALLBACK_FAIL"}, "someFutureField": 1}}"#;
    let env: pb::FailureEnvelope = decode(None, Some(json)).unwrap();
    let Some(pb::failure_envelope::Kind::Failure(ev)) = env.kind else {
        panic!("a failure");
    };
    assert_eq!(ev.event_id, "e1");
    assert_eq!(ev.body, b"hi");
    assert_eq!(ev.header["Content-Type"].values, ["application/json"]);
    assert_eq!(ev.completed_steps[0].out, b"1");
    assert_eq!(ev.failed_at, 1_700_000_000_000);
}

#[test]
fn bad_bytes_give_typed_errors_never_a_panic() {
    let valid = pb::FailureEnvelope {
        kind: Some(pb::failure_envelope::Kind::Failure(event())),
    }
    .encode_to_vec();
    let mut errors = 0;
    for cut in 1..valid.len() {
        match decode::<pb::FailureEnvelope>(None, Some(&valid[..valid.len() - cut])) {
            Err(DecodeError::Protobuf(_)) => errors += 1,
            Err(e) => panic!("unexpected error kind {e:?}"),
            Ok(_) => {}
        }
    }
    assert!(errors > valid.len() / 2, "truncations detected: {errors}");
    let err = decode::<pb::FailureEnvelope>(None, Some(&[0xff; 32])).unwrap_err();
    assert_eq!(err.reason(), "protobuf");
    // Field 1 (a message) sent with the varint wire type.
    let err = decode::<pb::FailureEnvelope>(None, Some(&[0x08, 0x01])).unwrap_err();
    assert_eq!(err.reason(), "protobuf");
    for bad in [
        &b"{\"failure\": "[..],
        b"{\"failure\": {\"maxRetries\": \"lots\"}}",
    ] {
        let err = decode::<pb::FailureEnvelope>(None, Some(bad)).unwrap_err();
        assert_eq!(err.reason(), "json", "{}", String::from_utf8_lossy(bad));
    }
    let deep = vec![b'['; 10_000];
    let err = decode::<pb::FailureEnvelope>(Some(b"application/json"), Some(&deep)).unwrap_err();
    assert_eq!(err.reason(), "json");
    let err = decode::<pb::FailureEnvelope>(None, None).unwrap_err();
    assert!(matches!(err, DecodeError::Empty));
    let err = decode::<pb::FailureEnvelope>(Some(b"text/plain"), Some(b"x")).unwrap_err();
    assert_eq!(err.reason(), "content_type");
    let ok = decode::<pb::FailureEnvelope>(
        Some(b"application/json; charset=utf-8"),
        Some(br#"{"failure": {"eventId": "e"}}"#),
    );
    assert!(ok.is_ok());
}
