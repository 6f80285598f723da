//! Reading protobuf bytes in place: the fields of a message walked one by one, strings and
//! bytes borrowed from the record instead of copied into a decoded message.
//!
//! Two hot paths read this way: the view indexing a stored entry ([`crate::store::keys`]) and
//! ingest checking a failure event it then stores as it came ([`super::failure_ref`]). Both are
//! checked against prost on the same bytes by their tests. The tag numbers are those of
//! `proto/workflow/dlq/v1/dlq.proto` (field numbers are part of the contract: they never move).

/// Why bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("invalid protobuf: {0}")]
    Varint(#[from] prost::DecodeError),
    #[error("invalid protobuf: {0}")]
    Malformed(&'static str),
}

use WalkError::Malformed;

/// Field numbers of dlq.proto, by message.
pub mod tags {
    /// `DlqEntry`.
    pub mod entry {
        pub const DLQ_ID: u32 = 1;
        pub const EVENT: u32 = 2;
        pub const CREATED_AT: u32 = 3;
        pub const EXPIRES_AT: u32 = 4;
        pub const SOURCE_TOPIC: u32 = 5;
        pub const SOURCE_PARTITION: u32 = 6;
        pub const SOURCE_OFFSET: u32 = 7;
        pub const SIGNATURE: u32 = 8;
    }

    /// `WorkflowExecution`.
    pub mod execution {
        pub const WORKFLOW_RUN_ID: u32 = 1;
        pub const WORKFLOW_CREATED_AT: u32 = 2;
        pub const KIND: u32 = 3;
        pub const WORKFLOW_URL: u32 = 4;
        pub const METHOD: u32 = 5;
        pub const HEADER: u32 = 6;
        pub const BODY: u32 = 7;
        pub const STEPS: u32 = 8;
        pub const RETRIES: u32 = 9;
        pub const FLOW_CONTROL: u32 = 10;
        pub const LABELS: u32 = 11;
        pub const FAILURE_CALLBACK: u32 = 14;
        pub const SOURCE_DLQ_ID: u32 = 15;
        pub const SOURCE_WORKFLOW_RUN_ID: u32 = 16;
        pub const COMMAND_ID: u32 = 17;
        pub const REDRIVE_COUNT: u32 = 18;
        pub const LINEAGE: u32 = 20;
    }

    /// `FailureEnvelope`'s oneof.
    pub mod envelope {
        pub const FAILURE: u32 = 1;
        pub const CALLBACK_REPORT: u32 = 2;
    }

    /// `FailureEvent`.
    pub mod event {
        pub const EVENT_ID: u32 = 1;
        pub const WORKFLOW_RUN_ID: u32 = 2;
        pub const WORKFLOW_URL: u32 = 3;
        pub const WORKFLOW_CREATED_AT: u32 = 4;
        pub const MESSAGE_ID: u32 = 5;
        pub const METHOD: u32 = 6;
        pub const HEADER: u32 = 7;
        pub const BODY: u32 = 8;
        pub const MAX_RETRIES: u32 = 9;
        pub const NOT_BEFORE: u32 = 10;
        pub const CALLER_IP: u32 = 11;
        pub const LABELS: u32 = 12;
        pub const FLOW_CONTROL: u32 = 13;
        pub const COMPLETED_STEPS: u32 = 14;
        pub const FAILED_STEP: u32 = 15;
        pub const RESPONSE_STATUS: u32 = 16;
        pub const RESPONSE_HEADER: u32 = 17;
        pub const RESPONSE_BODY: u32 = 18;
        pub const FAILURE_CALLBACK: u32 = 19;
        pub const FAILURE_CALLBACK_INFO: u32 = 20;
        pub const FAILED_AT: u32 = 21;
        pub const ERROR_MESSAGE: u32 = 22;
        pub const REDRIVE_COUNT: u32 = 23;
        pub const TOPIC_NAME: u32 = 24;
        pub const QUEUE_NAME: u32 = 25;
        pub const SCHEDULE_ID: u32 = 26;
        pub const CALLBACK: u32 = 27;
        pub const CALLBACK_HEADER: u32 = 28;
        pub const FAILURE_CALLBACK_HEADER: u32 = 29;
        pub const REDRIVEN_FROM_DLQ_ID: u32 = 30;
        pub const LINEAGE: u32 = 31;
    }

    /// `Step`.
    pub mod step {
        pub const STEP_ID: u32 = 1;
        pub const STEP_NAME: u32 = 2;
        pub const STEP_TYPE: u32 = 3;
        pub const OUT: u32 = 4;
        pub const CONCURRENT: u32 = 5;
        pub const COMPLETED_AT: u32 = 6;
    }

    /// `FlowControl`.
    pub mod flow_control {
        pub const KEY: u32 = 1;
        pub const RATE: u32 = 2;
        pub const PARALLELISM: u32 = 3;
        pub const PERIOD_SECONDS: u32 = 4;
    }

    /// `FailureCallbackInfo`.
    pub mod callback_info {
        pub const STATE: u32 = 1;
        pub const RESPONSE_STATUS: u32 = 2;
        pub const RESPONSE_BODY: u32 = 3;
        pub const RESPONSE_HEADERS: u32 = 4;
    }

    /// A `map<string, HeaderValues>` entry, and `HeaderValues`.
    pub mod headers {
        pub const ENTRY_KEY: u32 = 1;
        pub const ENTRY_VALUE: u32 = 2;
        pub const VALUES: u32 = 1;
    }
}

/// One field of a protobuf message.
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// Fixed-width values (no field of dlq.proto has one: they are only ever skipped).
    Fixed,
}

/// A varint, with the one-byte case (most tags, most lengths of small fields) inline: prost's
/// own decoder is a call per varint, which was the largest single cost of the walk.
#[inline]
fn read_varint(buf: &mut &[u8]) -> Result<u64, WalkError> {
    match buf.split_first() {
        Some((&b, rest)) if b < 0x80 => {
            *buf = rest;
            Ok(u64::from(b))
        }
        _ => Ok(prost::encoding::decode_varint(buf)?),
    }
}

/// Walks the fields of one message in order (protobuf's merge order: a later occurrence of a
/// field overrides or extends an earlier one). Groups (wire types 3 and 4, deprecated since
/// proto2) are refused: no field of ours is one.
pub fn fields<'a>(
    mut buf: &'a [u8],
    mut each: impl FnMut(u32, Value<'a>) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    while !buf.is_empty() {
        let key = read_varint(&mut buf)?;
        let tag = u32::try_from(key >> 3).map_err(|_| Malformed("tag out of range"))?;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut buf)?),
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                buf = buf.get(width..).ok_or(Malformed("buffer underflow"))?;
                Value::Fixed
            }
            2 => {
                let len = usize::try_from(read_varint(&mut buf)?)
                    .map_err(|_| Malformed("length out of range"))?;
                if len > buf.len() {
                    return Err(Malformed("buffer underflow"));
                }
                let (bytes, rest) = buf.split_at(len);
                buf = rest;
                Value::Bytes(bytes)
            }
            _ => return Err(Malformed("unsupported wire type")),
        };
        if tag == 0 {
            return Err(Malformed("invalid tag value: 0"));
        }
        each(tag, value)?;
    }
    Ok(())
}

pub fn text(bytes: &[u8]) -> Result<&str, WalkError> {
    std::str::from_utf8(bytes)
        .map_err(|_| Malformed("invalid string value: data is not UTF-8 encoded"))
}

fn wrong_type() -> WalkError {
    Malformed("invalid wire type for a known field")
}

/// A length-delimited field's bytes (a string, bytes or a message).
pub fn bytes(v: Value<'_>) -> Result<&[u8], WalkError> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(wrong_type()),
    }
}

pub fn varint(v: Value<'_>) -> Result<u64, WalkError> {
    match v {
        Value::Varint(n) => Ok(n),
        _ => Err(wrong_type()),
    }
}
