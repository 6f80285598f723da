//! Feeds the store view from the store topic (see [`crate::kafka::tail`]): last write wins per
//! `dlqId`, a tombstone removes. Ready once caught up with the topic's end at start.

use std::{sync::Arc, time::Instant};

use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;

use super::{keys::IndexKeys, StoreView};
use crate::{
    events::{Event, StoreIntegrityBreach},
    kafka::{tail, KafkaConn},
    metrics,
    wire::{codec, pb::DlqEntry},
};

/// Starts the store reader on its own thread; it stops when `shutdown` is cancelled.
pub fn spawn(
    worker: crate::health::Worker,
    conn: KafkaConn,
    topic: String,
    view: Arc<StoreView>,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let sink = StoreSink {
        view,
        started: Instant::now(),
    };
    tail::spawn(worker, conn, topic, sink, shutdown)
}

struct StoreSink {
    view: Arc<StoreView>,
    started: Instant,
}

impl tail::TailSink for StoreSink {
    fn record(&mut self, m: &BorrowedMessage<'_>) {
        apply(&self.view, m);
    }

    fn position(&mut self, partition: i32, next_offset: i64) {
        self.view.set_position(partition, next_offset);
    }

    fn caught_up(&mut self) {
        self.view.set_caught_up();
        publish_gauges(&self.view);
        tracing::info!(
            entries = self.view.len(),
            payload_bytes = self.view.payload_bytes(),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "store view caught up"
        );
    }
}

/// Sets `dlq_entries` and `dlq_oldest_entry_age_seconds` from the view.
pub fn publish_gauges(view: &StoreView) {
    let now = crate::now_ms();
    let age = view
        .oldest_created_at()
        .map(|t| ((now - t).max(0) as f64) / 1000.0)
        .unwrap_or(0.0);
    metrics::entries(view.len(), age);
}

fn apply(view: &StoreView, m: &BorrowedMessage<'_>) {
    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        StoreIntegrityBreach {
            what: &format!(
                "store record without a UTF-8 key at partition {} offset {}; skipped",
                m.partition(),
                m.offset()
            ),
        }
        .emit();
        return;
    };
    let Some(payload) = m.payload() else {
        view.remove(key);
        return;
    };
    let ct = codec::content_type_of(m.headers());
    let (partition, offset) = (m.partition(), m.offset());
    // Applied, or the other id the record holds, or the reason it can't be read.
    let applied: Result<Option<String>, String> = match codec::detect(ct, payload) {
        // Protobuf is kept as read, and only the index's fields are read, in place.
        Ok(codec::Encoding::Protobuf) => match IndexKeys::read(payload) {
            Ok(keys) if keys.dlq_id == key => {
                view.upsert_keys(partition, offset, &keys, payload);
                Ok(None)
            }
            Ok(keys) => Ok(Some(keys.dlq_id.to_string())),
            Err(e) => Err(e.to_string()),
        },
        // JSON is decoded whole and kept as protobuf.
        Ok(codec::Encoding::Json) => match codec::decode::<DlqEntry>(ct, Some(payload)) {
            Ok(entry) if entry.dlq_id == key => {
                view.upsert(partition, offset, &entry);
                Ok(None)
            }
            Ok(entry) => Ok(Some(entry.dlq_id)),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    match applied {
        Ok(None) => {}
        Ok(Some(id)) => StoreIntegrityBreach {
            what: &format!(
                "store record key `{key}` and dlqId `{id}` differ at partition {partition} \
                 offset {offset}; skipped"
            ),
        }
        .emit(),
        Err(e) => StoreIntegrityBreach {
            what: &format!(
                "undecodable store record `{key}` at partition {partition} offset {offset}: \
                 {e}; skipped"
            ),
        }
        .emit(),
    }
}
