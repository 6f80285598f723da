//! The record decoder and ingest's decision on one input record: any bytes, with any of the
//! content types the codec distinguishes, must give a decision (store, forward, duplicate or a
//! rejection with a bounded reason) and never panic.
#![no_main]

use std::{collections::HashMap, time::Duration};

use libfuzzer_sys::fuzz_target;
use workflow_dlq::{
    ingest::{Decider, Outcome},
    store::StoreView,
    wire::{decode, pb},
};

const CONTENT_TYPES: [Option<&[u8]>; 5] = [
    None,
    Some(b"application/json"),
    Some(b"application/x-protobuf"),
    Some(b"application/json; charset=utf-8"),
    Some(b"text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let ct = CONTENT_TYPES[selector as usize % CONTENT_TYPES.len()];
    let value = (selector & 0x80 == 0).then_some(payload);
    // Every message type a topic of ours carries.
    let _ = decode::<pb::FailureEnvelope>(ct, value);
    let _ = decode::<pb::RecoveryCommand>(ct, value);
    // The command consumer's strict decoding, and the id it answers an undecodable command by.
    let _ = workflow_dlq::wire::codec::decode_strict::<pb::RecoveryCommand>(
        workflow_dlq::wire::strict::RECOVERY_COMMAND,
        ct,
        value,
    );
    let _ = workflow_dlq::wire::codec::command_id_hint(ct, value);
    let _ = decode::<pb::DlqEntry>(ct, value);
    let _ = decode::<pb::CommandResult>(ct, value);
    let _ = decode::<pb::WorkflowExecution>(ct, value);

    let view = StoreView::new();
    let recent = HashMap::new();
    let decider = Decider {
        view: &view,
        retention: Duration::from_secs(3600),
        max_record_bytes: 64 * 1024,
        recent: &recent,
    };
    match decider.decide(ct, value, ("t", 0, 0), 1_700_000_000_000) {
        Outcome::Reject(r) => {
            let reason = r.reason();
            assert!(!reason.is_empty() && reason.len() <= 32, "{reason}");
            let _ = r.to_string();
        }
        Outcome::Store(entry) => {
            let ev = entry.event.as_ref().expect("a stored entry has its event");
            assert!(!ev.event_id.trim().is_empty());
            assert!(ev.error_message.len() <= 4096);
            // What ingest stores, the store reader must read back.
            let bytes = prost::Message::encode_to_vec(entry.as_ref());
            let back = decode::<pb::DlqEntry>(None, Some(&bytes)).expect("round trip");
            assert_eq!(&back, entry.as_ref());
        }
        Outcome::ForwardReport(_) | Outcome::Duplicate => {}
    }
});
