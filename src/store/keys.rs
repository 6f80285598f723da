//! The fields of a stored entry the view indexes, read in place from its protobuf bytes.
//!
//! A cold start applies every entry of the store topic on one thread; decoding these few
//! fields with prost allocated a `String` for each of them, for an index that keeps none of
//! them. [`IndexKeys::read`] borrows them from the record instead. Its tags are those of
//! `proto/workflow/dlq/v1/dlq.proto`; a test checks it agrees with prost on the same bytes.

use crate::wire::walk::{
    bytes, fields,
    tags::{callback_info, entry, event, flow_control, step},
    text, varint, WalkError,
};

/// What the view needs of an entry, borrowed from its encoded bytes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IndexKeys<'a> {
    pub dlq_id: &'a str,
    pub created_at: i64,
    pub expires_at: i64,
    pub workflow_run_id: &'a str,
    pub workflow_url: &'a str,
    pub workflow_created_at: i64,
    pub caller_ip: &'a str,
    pub labels: Vec<&'a str>,
    pub flow_control_key: &'a str,
    pub callback_state: i32,
    pub message_id: &'a str,
    pub response_status: i32,
    pub topic_name: &'a str,
    pub queue_name: &'a str,
    pub schedule_id: &'a str,
    /// The stored signature (empty on entries stored before signatures existed).
    pub signature: &'a str,
    pub redrive_count: i32,
    /// What a signature is computed from when none is stored.
    pub step_name: &'a str,
    pub step_type: &'a str,
    pub error_message: &'a str,
}

impl<'a> IndexKeys<'a> {
    /// Reads the index fields of a protobuf-encoded `DlqEntry`; other fields are skipped.
    pub fn read(raw: &'a [u8]) -> Result<IndexKeys<'a>, WalkError> {
        let mut k = IndexKeys::default();
        fields(raw, |tag, v| {
            match tag {
                entry::DLQ_ID => k.dlq_id = text(bytes(v)?)?,
                entry::CREATED_AT => k.created_at = varint(v)? as i64,
                entry::EXPIRES_AT => k.expires_at = varint(v)? as i64,
                entry::EVENT => k.read_event(bytes(v)?)?,
                entry::SIGNATURE => k.signature = text(bytes(v)?)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(k)
    }

    /// The `dlqId` of a protobuf-encoded `DlqEntry` from its top-level fields alone (the event
    /// inside is skipped, not walked): the store reader's check of a record's key. The view
    /// reads the rest when it applies the entry ([`IndexKeys::read`]); reading it all on both
    /// threads was three quarters of the reader's time in a cold start.
    pub fn read_id(raw: &'a [u8]) -> Result<&'a str, WalkError> {
        let mut id = "";
        fields(raw, |tag, v| {
            if tag == entry::DLQ_ID {
                id = text(bytes(v)?)?;
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// The entry's signature: the stored one, or — for an entry stored before signatures
    /// existed — computed now from the same fields ingest uses, so old entries group too.
    pub fn signature(&self) -> std::borrow::Cow<'a, str> {
        if !self.signature.is_empty() {
            return std::borrow::Cow::Borrowed(self.signature);
        }
        std::borrow::Cow::Owned(crate::signature::signature(&crate::signature::Parts {
            workflow_url: self.workflow_url,
            step_name: self.step_name,
            step_type: self.step_type,
            response_status: self.response_status,
            error_message: self.error_message,
        }))
    }

    fn read_event(&mut self, raw: &'a [u8]) -> Result<(), WalkError> {
        fields(raw, |tag, v| {
            match tag {
                event::WORKFLOW_RUN_ID => self.workflow_run_id = text(bytes(v)?)?,
                event::WORKFLOW_URL => self.workflow_url = text(bytes(v)?)?,
                event::WORKFLOW_CREATED_AT => self.workflow_created_at = varint(v)? as i64,
                event::MESSAGE_ID => self.message_id = text(bytes(v)?)?,
                event::RESPONSE_STATUS => self.response_status = varint(v)? as i32,
                event::TOPIC_NAME => self.topic_name = text(bytes(v)?)?,
                event::QUEUE_NAME => self.queue_name = text(bytes(v)?)?,
                event::SCHEDULE_ID => self.schedule_id = text(bytes(v)?)?,
                event::ERROR_MESSAGE => self.error_message = text(bytes(v)?)?,
                event::REDRIVE_COUNT => self.redrive_count = varint(v)? as i32,
                event::FAILED_STEP => fields(bytes(v)?, |tag, v| {
                    match tag {
                        step::STEP_NAME => self.step_name = text(bytes(v)?)?,
                        step::STEP_TYPE => self.step_type = text(bytes(v)?)?,
                        _ => {}
                    }
                    Ok(())
                })?,
                event::CALLER_IP => self.caller_ip = text(bytes(v)?)?,
                event::LABELS => self.labels.push(text(bytes(v)?)?),
                event::FLOW_CONTROL => fields(bytes(v)?, |tag, v| {
                    if tag == flow_control::KEY {
                        self.flow_control_key = text(bytes(v)?)?;
                    }
                    Ok(())
                })?,
                event::FAILURE_CALLBACK_INFO => fields(bytes(v)?, |tag, v| {
                    if tag == callback_info::STATE {
                        self.callback_state = varint(v)? as i32;
                    }
                    Ok(())
                })?,
                _ => {}
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::wire::pb::{
        failure_callback_info::State, DlqEntry, FailureCallbackInfo, FailureEvent, FlowControl,
    };

    fn full_entry(n: i64) -> DlqEntry {
        DlqEntry {
            dlq_id: format!("dlq-{n:032x}"),
            created_at: 1_700_000_000_000 + n,
            expires_at: 1_700_600_000_000 + n,
            source_topic: "workflow.failures".into(),
            source_partition: 3,
            source_offset: n,
            event: Some(FailureEvent {
                event_id: format!("e-{n}"),
                workflow_run_id: format!("wfr_{n}"),
                workflow_url: format!("https://app.example.com/api/{}", n % 7),
                workflow_created_at: -n,
                caller_ip: "10.0.0.1".into(),
                labels: vec!["a".into(), format!("l-{}", n % 3), "ünï".into()],
                flow_control: Some(FlowControl {
                    key: format!("fc-{n}"),
                    ..Default::default()
                }),
                failure_callback: "https://cb.example.com".into(),
                failure_callback_info: Some(FailureCallbackInfo {
                    state: State::CallbackFail as i32,
                    ..Default::default()
                }),
                message_id: format!("msg_{n}"),
                response_status: if n % 2 == 0 { 500 } else { -1 },
                topic_name: "group-a".into(),
                queue_name: format!("q-{}", n % 2),
                schedule_id: "scd_1".into(),
                failed_step: Some(crate::wire::pb::Step {
                    step_name: format!("step-{}", n % 3),
                    step_type: "Run".into(),
                    ..Default::default()
                }),
                error_message: format!("failed {n} times"),
                redrive_count: (n % 4) as i32,
                ..Default::default()
            }),
            signature: format!("{n:016x}"),
        }
    }

    /// The index fields of an entry prost decoded: the oracle `read` is checked against.
    fn of(e: &DlqEntry) -> IndexKeys<'_> {
        let ev = e.event.as_ref();
        IndexKeys {
            dlq_id: &e.dlq_id,
            created_at: e.created_at,
            expires_at: e.expires_at,
            workflow_run_id: ev.map_or("", |v| &v.workflow_run_id),
            workflow_url: ev.map_or("", |v| &v.workflow_url),
            workflow_created_at: ev.map_or(0, |v| v.workflow_created_at),
            caller_ip: ev.map_or("", |v| &v.caller_ip),
            labels: ev.map_or(Vec::new(), |v| {
                v.labels.iter().map(String::as_str).collect()
            }),
            flow_control_key: ev
                .and_then(|v| v.flow_control.as_ref())
                .map_or("", |f| &f.key),
            callback_state: ev
                .and_then(|v| v.failure_callback_info.as_ref())
                .map_or(0, |i| i.state),
            message_id: ev.map_or("", |v| &v.message_id),
            response_status: ev.map_or(0, |v| v.response_status),
            topic_name: ev.map_or("", |v| &v.topic_name),
            queue_name: ev.map_or("", |v| &v.queue_name),
            schedule_id: ev.map_or("", |v| &v.schedule_id),
            signature: &e.signature,
            redrive_count: ev.map_or(0, |v| v.redrive_count),
            step_name: ev
                .and_then(|v| v.failed_step.as_ref())
                .map_or("", |s| &s.step_name),
            step_type: ev
                .and_then(|v| v.failed_step.as_ref())
                .map_or("", |s| &s.step_type),
            error_message: ev.map_or("", |v| &v.error_message),
        }
    }

    /// Reads `raw` both ways and compares.
    fn agrees_with_prost(raw: &[u8]) {
        let decoded = DlqEntry::decode(raw).unwrap();
        assert_eq!(IndexKeys::read(raw).unwrap(), of(&decoded));
    }

    #[test]
    fn reads_what_prost_decodes_from_the_same_bytes() {
        for n in [0, 1, 42, 9_999_999] {
            agrees_with_prost(&full_entry(n).encode_to_vec());
        }
        let empty = DlqEntry::default().encode_to_vec();
        assert_eq!(IndexKeys::read(&empty).unwrap(), IndexKeys::default());
    }

    #[test]
    fn a_repeated_event_merges_as_protobuf_does() {
        // Two encodings of the event field back to back: protobuf merges them.
        let mut raw = full_entry(1).encode_to_vec();
        let second = DlqEntry {
            event: Some(FailureEvent {
                workflow_url: "https://later.example.com".into(),
                labels: vec!["more".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        raw.extend(second.encode_to_vec());
        agrees_with_prost(&raw);
        assert_eq!(
            IndexKeys::read(&raw).unwrap().workflow_url,
            "https://later.example.com"
        );
        assert_eq!(IndexKeys::read(&raw).unwrap().labels.len(), 4);
    }

    #[test]
    fn malformed_bytes_are_an_error_never_a_panic() {
        let raw = full_entry(7).encode_to_vec();
        for cut in 0..raw.len() {
            let prost_ok = DlqEntry::decode(&raw[..cut]).is_ok();
            let ours = IndexKeys::read(&raw[..cut]);
            if prost_ok {
                assert!(ours.is_ok(), "cut at {cut}: prost decodes, we refuse");
            }
        }
        let mut bad_utf8 = DlqEntry {
            dlq_id: "dlq-x".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let at = bad_utf8.len() - 1;
        bad_utf8[at] = 0xff;
        assert!(IndexKeys::read(&bad_utf8).is_err());
        assert!(IndexKeys::read(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(IndexKeys::read_id(&bad_utf8).is_err());
        assert!(IndexKeys::read_id(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        // The id alone, from the same bytes: what a full read finds, wherever the read stops.
        for cut in 0..raw.len() {
            if let Ok(keys) = IndexKeys::read(&raw[..cut]) {
                assert_eq!(IndexKeys::read_id(&raw[..cut]).ok(), Some(keys.dlq_id));
            }
        }
    }
}
