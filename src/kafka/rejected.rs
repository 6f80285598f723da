//! Input that can't be decoded or validated goes to the rejected topic verbatim, with headers
//! naming where it came from and why, so an operator can inspect and replay it.

use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};

use super::txn::OutRecord;

/// Header names on a rejected record.
pub mod headers {
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    pub const REASON: &str = "dlq.reject.reason";
    pub const DETAIL: &str = "dlq.reject.detail";
    pub const TRUNCATED: &str = "dlq.truncated";
}

/// The record for the rejected topic: the original key and value, verbatim (cut to the maximum
/// record size if larger, and marked so), with headers naming its source and the reason.
pub fn record<'t>(
    m: &BorrowedMessage<'_>,
    reason: &str,
    detail: &str,
    rejected_topic: &'t str,
    max_bytes: usize,
) -> OutRecord<'t> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = m.headers() {
        for h in original.iter() {
            headers = headers.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    let mut value = m.payload().map(<[u8]>::to_vec);
    let truncated = value.as_ref().is_some_and(|v| v.len() > max_bytes);
    if let Some(v) = value.as_mut() {
        v.truncate(max_bytes);
    }
    let detail: String = detail.chars().take(1024).collect();
    headers = headers
        .insert(Header {
            key: headers::SOURCE_TOPIC,
            value: Some(m.topic()),
        })
        .insert(Header {
            key: headers::SOURCE_PARTITION,
            value: Some(&m.partition().to_string()),
        })
        .insert(Header {
            key: headers::SOURCE_OFFSET,
            value: Some(&m.offset().to_string()),
        })
        .insert(Header {
            key: headers::REASON,
            value: Some(reason),
        })
        .insert(Header {
            key: headers::DETAIL,
            value: Some(&detail),
        });
    if truncated {
        headers = headers.insert(Header {
            key: headers::TRUNCATED,
            value: Some("true"),
        });
    }
    OutRecord {
        topic: rejected_topic,
        key: m.key().map(|k| k.to_vec().into()),
        value,
        headers: Some(headers),
    }
}
