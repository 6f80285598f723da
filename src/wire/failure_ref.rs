//! A failure event read in place from its envelope's protobuf bytes: ingest's fast path.
//!
//! Almost every failure arrives as protobuf and is stored unchanged inside a `DlqEntry`.
//! Decoding each one with prost allocated every string, header map and step of the event, to
//! check a handful of fields and then encode it all again. [`FailureRef::in_envelope`] walks
//! the event once instead: it checks everything prost's decoding checks (each known field's
//! wire type, every length, the UTF-8 of every string at any depth) and borrows the few fields
//! ingest needs; [`entry_with_event`] then writes the entry around the event's bytes as they
//! came.
//!
//! It is sound one way: whatever it accepts, prost decodes, to the same values (a test checks
//! this over every one-byte change and every cut of a full event). Whatever it does not take —
//! JSON, a callback report, an envelope with the event twice, a group field, anything
//! malformed — goes the decoding way, which gives the authoritative answer and, for a
//! rejection, its reason.

use prost::{encoding::WireType, Message};

use super::{
    pb::DlqEntry,
    walk::{
        bytes, fields,
        tags::{callback_info, entry, envelope, event, flow_control, headers, step},
        text, varint, WalkError,
    },
};

/// What ingest checks and keeps of a failure event, borrowed from the record.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FailureRef<'a> {
    /// The `FailureEvent`'s bytes exactly as received.
    pub raw: &'a [u8],
    pub event_id: &'a str,
    pub workflow_run_id: &'a str,
    pub workflow_url: &'a str,
    pub caller_ip: &'a str,
    pub failure_callback: &'a str,
    pub label_count: usize,
    pub longest_label: usize,
    /// `failure_callback_info.state`, when the event has a `failure_callback_info`.
    pub callback_state: Option<i32>,
    pub step_name: &'a str,
    pub step_type: &'a str,
    pub response_status: i32,
    pub failed_at: i64,
    pub error_message: &'a str,
    pub redrive_count: i32,
}

impl<'a> FailureRef<'a> {
    /// The failure event of a protobuf `FailureEnvelope`, or `None` when the envelope is not
    /// simply one well-formed failure (decode it with prost to learn what it is).
    pub fn in_envelope(envelope: &'a [u8]) -> Option<FailureRef<'a>> {
        let mut failure = None;
        let mut simple = true;
        fields(envelope, |tag, v| {
            match tag {
                // Twice is legal protobuf (the two merge), but not worth a second path.
                envelope::FAILURE => simple &= failure.replace(bytes(v)?).is_none(),
                envelope::CALLBACK_REPORT => simple = false,
                _ => {}
            }
            Ok(())
        })
        .ok()?;
        match (simple, failure) {
            (true, Some(raw)) => FailureRef::read(raw).ok(),
            _ => None,
        }
    }

    /// Walks a `FailureEvent`, last occurrence of a field last (protobuf's merge order),
    /// checking all of it as prost's decoding does.
    pub fn read(raw: &'a [u8]) -> Result<FailureRef<'a>, WalkError> {
        let mut f = FailureRef {
            raw,
            ..FailureRef::default()
        };
        fields(raw, |tag, v| {
            match tag {
                event::EVENT_ID => f.event_id = text(bytes(v)?)?,
                event::WORKFLOW_RUN_ID => f.workflow_run_id = text(bytes(v)?)?,
                event::WORKFLOW_URL => f.workflow_url = text(bytes(v)?)?,
                event::CALLER_IP => f.caller_ip = text(bytes(v)?)?,
                event::FAILURE_CALLBACK => f.failure_callback = text(bytes(v)?)?,
                event::ERROR_MESSAGE => f.error_message = text(bytes(v)?)?,
                event::LABELS => {
                    let label = text(bytes(v)?)?;
                    f.label_count += 1;
                    f.longest_label = f.longest_label.max(label.len());
                }
                event::RESPONSE_STATUS => f.response_status = varint(v)? as i32,
                event::FAILED_AT => f.failed_at = varint(v)? as i64,
                event::REDRIVE_COUNT => f.redrive_count = varint(v)? as i32,
                event::FAILED_STEP => fields(bytes(v)?, |tag, v| {
                    match tag {
                        step::STEP_NAME => f.step_name = text(bytes(v)?)?,
                        step::STEP_TYPE => f.step_type = text(bytes(v)?)?,
                        _ => check_step_field(tag, v)?,
                    }
                    Ok(())
                })?,
                event::FAILURE_CALLBACK_INFO => {
                    let mut state = f.callback_state.unwrap_or(0);
                    fields(bytes(v)?, |tag, v| {
                        match tag {
                            callback_info::STATE => state = varint(v)? as i32,
                            callback_info::RESPONSE_STATUS => _ = varint(v)?,
                            callback_info::RESPONSE_BODY => _ = bytes(v)?,
                            callback_info::RESPONSE_HEADERS => check_header_entry(bytes(v)?)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    f.callback_state = Some(state);
                }
                // The rest is checked as prost checks it and kept only as bytes.
                event::MESSAGE_ID
                | event::METHOD
                | event::TOPIC_NAME
                | event::QUEUE_NAME
                | event::SCHEDULE_ID
                | event::CALLBACK
                | event::REDRIVEN_FROM_DLQ_ID
                | event::LINEAGE => _ = text(bytes(v)?)?,
                event::BODY | event::RESPONSE_BODY => _ = bytes(v)?,
                event::WORKFLOW_CREATED_AT | event::MAX_RETRIES | event::NOT_BEFORE => {
                    _ = varint(v)?
                }
                event::HEADER
                | event::RESPONSE_HEADER
                | event::CALLBACK_HEADER
                | event::FAILURE_CALLBACK_HEADER => check_header_entry(bytes(v)?)?,
                event::FLOW_CONTROL => fields(bytes(v)?, |tag, v| {
                    match tag {
                        flow_control::KEY => _ = text(bytes(v)?)?,
                        flow_control::RATE
                        | flow_control::PARALLELISM
                        | flow_control::PERIOD_SECONDS => _ = varint(v)?,
                        _ => {}
                    }
                    Ok(())
                })?,
                event::COMPLETED_STEPS => fields(bytes(v)?, check_step_field)?,
                // Unknown to this version: skipped, as prost skips it.
                _ => {}
            }
            Ok(())
        })?;
        Ok(f)
    }
}

/// A `Step` field other than its name and type.
fn check_step_field(tag: u32, v: super::walk::Value<'_>) -> Result<(), WalkError> {
    match tag {
        step::STEP_NAME | step::STEP_TYPE => _ = text(bytes(v)?)?,
        step::OUT => _ = bytes(v)?,
        step::STEP_ID | step::CONCURRENT | step::COMPLETED_AT => _ = varint(v)?,
        _ => {}
    }
    Ok(())
}

/// One entry of a `map<string, HeaderValues>`.
fn check_header_entry(raw: &[u8]) -> Result<(), WalkError> {
    fields(raw, |tag, v| {
        match tag {
            headers::ENTRY_KEY => _ = text(bytes(v)?)?,
            headers::ENTRY_VALUE => fields(bytes(v)?, |tag, v| {
                if tag == headers::VALUES {
                    text(bytes(v)?)?;
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })
}

/// A `DlqEntry`'s bytes around a failure event's bytes as received. `head` holds every field
/// but the event (its `event` is ignored); the fields are written in prost's order, so for an
/// event prost itself encoded the result is byte for byte what prost writes for the whole
/// entry.
pub fn entry_with_event(mut head: DlqEntry, event: &[u8]) -> Vec<u8> {
    head.event = None;
    let dlq_id = std::mem::take(&mut head.dlq_id);
    let mut out = Vec::with_capacity(dlq_id.len() + event.len() + head.encoded_len() + 2 * 10 + 2);
    if !dlq_id.is_empty() {
        prost::encoding::string::encode(entry::DLQ_ID, &dlq_id, &mut out);
    }
    prost::encoding::encode_key(entry::EVENT, WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(event.len() as u64, &mut out);
    out.extend_from_slice(event);
    // Fields 3 and up; `dlq_id` (1) is empty and `event` (2) absent, so prost writes neither.
    out.extend_from_slice(&head.encode_to_vec());
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wire::pb::{
        failure_callback_info::State, failure_envelope::Kind, FailureCallbackInfo,
        FailureCallbackReport, FailureEnvelope, FailureEvent, FlowControl, HeaderValues, Step,
    };

    fn headers(n: usize) -> BTreeMap<String, HeaderValues> {
        (0..n)
            .map(|i| {
                (
                    format!("X-H-{i}"),
                    HeaderValues {
                        values: vec![format!("v{i}"), "ü".into()],
                    },
                )
            })
            .collect()
    }

    fn step(n: i32) -> Step {
        Step {
            step_id: n,
            step_name: format!("step-{n}"),
            step_type: "Run".into(),
            out: vec![n as u8; 3],
            concurrent: 1,
            completed_at: 1_700_000_000_000 + i64::from(n),
        }
    }

    /// Every field of the event set, nested ones included.
    pub(crate) fn full_event() -> FailureEvent {
        FailureEvent {
            event_id: "evt-1".into(),
            workflow_run_id: "wfr_1".into(),
            workflow_url: "https://app.example.com/api/wf?x=1".into(),
            workflow_created_at: 1_700_000_000_000,
            message_id: "msg_1".into(),
            method: "POST".into(),
            header: headers(2),
            body: b"{\"a\":1}".to_vec(),
            max_retries: 3,
            not_before: 7,
            caller_ip: "10.0.0.1".into(),
            labels: vec!["a".into(), "longer-label".into()],
            flow_control: Some(FlowControl {
                key: "fc".into(),
                rate: 1,
                parallelism: 2,
                period_seconds: 3,
            }),
            completed_steps: vec![step(1), step(2)],
            failed_step: Some(step(3)),
            response_status: 503,
            response_header: headers(1),
            response_body: b"down".to_vec(),
            failure_callback: "https://cb.example.com".into(),
            failure_callback_info: Some(FailureCallbackInfo {
                state: State::CallbackFail as i32,
                response_status: 500,
                response_body: b"no".to_vec(),
                response_headers: headers(1),
            }),
            failed_at: 1_700_000_000_500,
            error_message: "step failed after 3 retries: HTTP 503".into(),
            redrive_count: 1,
            topic_name: "t".into(),
            queue_name: "q".into(),
            schedule_id: "s".into(),
            callback: "https://c.example.com".into(),
            callback_header: headers(1),
            failure_callback_header: headers(1),
            redriven_from_dlq_id: "dlq-0".into(),
            lineage: vec!["dlq-0".into()],
        }
    }

    fn envelope(ev: FailureEvent) -> Vec<u8> {
        FailureEnvelope {
            kind: Some(Kind::Failure(ev)),
        }
        .encode_to_vec()
    }

    /// What `in_envelope` must find, from what prost decoded.
    fn expected(ev: &FailureEvent) -> impl Fn(&FailureRef<'_>) -> bool + '_ {
        move |f| {
            let step = ev.failed_step.clone().unwrap_or_default();
            f.event_id == ev.event_id
                && f.workflow_run_id == ev.workflow_run_id
                && f.workflow_url == ev.workflow_url
                && f.caller_ip == ev.caller_ip
                && f.failure_callback == ev.failure_callback
                && f.label_count == ev.labels.len()
                && f.longest_label == ev.labels.iter().map(String::len).max().unwrap_or(0)
                && f.callback_state == ev.failure_callback_info.as_ref().map(|i| i.state)
                && f.step_name == step.step_name
                && f.step_type == step.step_type
                && f.response_status == ev.response_status
                && f.failed_at == ev.failed_at
                && f.error_message == ev.error_message
                && f.redrive_count == ev.redrive_count
                && FailureEvent::decode(f.raw).as_ref() == Ok(ev)
        }
    }

    #[test]
    fn reads_what_prost_decodes_from_the_same_bytes() {
        for ev in [full_event(), FailureEvent::default()] {
            let raw = envelope(ev.clone());
            let f = FailureRef::in_envelope(&raw).expect("a well-formed failure");
            assert!(expected(&ev)(&f), "{f:?}");
        }
    }

    /// The walker's one promise: nothing it accepts is refused by prost or read differently.
    /// Every cut and every one-byte change of a full event is tried, both ways.
    #[test]
    fn accepts_nothing_prost_refuses_and_reads_what_prost_reads() {
        let raw = envelope(full_event());
        let (mut ours, mut prost_refused) = (0, 0);
        let mut check = |bytes: &[u8]| {
            let decoded = FailureEnvelope::decode(bytes);
            if decoded.is_err() {
                prost_refused += 1;
            }
            if let Some(f) = FailureRef::in_envelope(bytes) {
                ours += 1;
                let Ok(FailureEnvelope {
                    kind: Some(Kind::Failure(ev)),
                }) = decoded
                else {
                    panic!("accepted what prost does not read as a failure: {bytes:?}");
                };
                assert!(expected(&ev)(&f), "read differently: {f:?} against {ev:?}");
            }
        };
        for cut in 0..raw.len() {
            check(&raw[..cut]);
        }
        for at in 0..raw.len() {
            for byte in [0x00, 0x01, 0x07, 0x0a, 0x7f, 0x80, 0xc3, 0xff] {
                let mut changed = raw.clone();
                changed[at] = byte;
                check(&changed);
                changed[at] = raw[at] ^ 0x08; // flips a tag's wire type
                check(&changed);
            }
        }
        // Neither side of the comparison is vacuous.
        assert!(
            ours > 1_000 && prost_refused > 1_000,
            "{ours} {prost_refused}"
        );
    }

    #[test]
    fn what_it_does_not_take_goes_to_prost() {
        // A string deep inside a header map that is not UTF-8.
        let mut ev = FailureEvent {
            event_id: "e".into(),
            header: headers(1),
            ..Default::default()
        };
        let good = envelope(ev.clone());
        let at = good
            .iter()
            .rposition(|b| *b == 0xbc)
            .expect("the ü of a value");
        let mut bad = good.clone();
        bad[at] = 0xff;
        assert!(FailureEnvelope::decode(&bad[..]).is_err());
        assert!(FailureRef::in_envelope(&bad).is_none());
        // A callback report, and an envelope holding the event twice.
        let report = FailureEnvelope {
            kind: Some(Kind::CallbackReport(FailureCallbackReport::default())),
        }
        .encode_to_vec();
        assert!(FailureRef::in_envelope(&report).is_none());
        ev.header.clear();
        let twice = [envelope(ev.clone()), envelope(ev)].concat();
        assert!(FailureRef::in_envelope(&twice).is_none());
        assert!(FailureEnvelope::decode(&twice[..]).is_ok());
        assert!(FailureRef::in_envelope(&[]).is_none());
    }

    #[test]
    fn an_entry_around_prosts_own_event_bytes_is_what_prost_writes() {
        for ev in [full_event(), FailureEvent::default()] {
            let head = DlqEntry {
                dlq_id: "dlq-1".into(),
                event: None,
                created_at: 5,
                expires_at: 9,
                source_topic: "failures".into(),
                source_partition: 2,
                source_offset: 77,
                signature: "00ff00ff00ff00ff".into(),
            };
            let whole = DlqEntry {
                event: Some(ev.clone()),
                ..head.clone()
            };
            assert_eq!(
                entry_with_event(head, &ev.encode_to_vec()),
                whole.encode_to_vec()
            );
        }
        let zero = entry_with_event(DlqEntry::default(), &[]);
        assert_eq!(
            DlqEntry::decode(&zero[..]).ok(),
            Some(DlqEntry {
                event: Some(FailureEvent::default()),
                ..Default::default()
            })
        );
    }
}
