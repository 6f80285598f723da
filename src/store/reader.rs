//! Tails the whole store topic (read_committed, every partition, from the beginning) into the
//! view. Ready once every partition has reached the end offset it had when the reader started.

use std::{
    collections::HashMap,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Message,
    Offset, TopicPartitionList,
};
use tokio_util::sync::CancellationToken;

use super::StoreView;
use crate::{
    kafka::KafkaConn,
    metrics,
    wire::{codec, pb::DlqEntry},
};

/// Starts the reader on its own thread; it stops when `shutdown` is cancelled.
pub fn spawn(
    conn: KafkaConn,
    topic: String,
    view: Arc<StoreView>,
    shutdown: CancellationToken,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("store-reader".into())
        .spawn(move || {
            while !shutdown.is_cancelled() {
                match read(&conn, &topic, &view, &shutdown) {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(topic, error = %e, "store reader failed; retrying");
                        thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
}

fn read(
    conn: &KafkaConn,
    topic: &str,
    view: &StoreView,
    shutdown: &CancellationToken,
) -> Result<(), KafkaError> {
    let consumer: BaseConsumer = conn.reader_config().create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    // The end of each partition now: caught up once every partition reaches it.
    let mut pending: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            pending.insert(p, high);
        }
    }
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    tracing::info!(topic, partitions = partitions.len(), to_read = ?pending, "rebuilding the store view");
    let started = Instant::now();
    let mut last_gauges = Instant::now();
    let mut caught_up = view.is_caught_up();
    while !shutdown.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                apply(view, &m);
                if pending
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    pending.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "store reader error"),
            None => {}
        }
        if !pending.is_empty() {
            // With read_committed the last offsets may be transaction markers, never delivered
            // as records; librdkafka's position moves past them, so the position is the signal.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements() {
                    if let Offset::Offset(pos) = e.offset() {
                        if pending.get(&e.partition()).is_some_and(|end| pos >= *end) {
                            pending.remove(&e.partition());
                        }
                    }
                }
            }
        }
        if !caught_up && pending.is_empty() {
            caught_up = true;
            view.set_caught_up();
            tracing::info!(
                topic,
                entries = view.len(),
                payload_bytes = view.payload_bytes(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "store view caught up"
            );
        }
        if last_gauges.elapsed() >= Duration::from_secs(1) {
            last_gauges = Instant::now();
            publish_gauges(view);
        }
    }
    Ok(())
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

fn apply(view: &StoreView, m: &rdkafka::message::BorrowedMessage<'_>) {
    let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
        tracing::error!(
            partition = m.partition(),
            offset = m.offset(),
            "store record without a UTF-8 key; skipped"
        );
        metrics::store_integrity_error();
        return;
    };
    match m.payload() {
        None => {
            view.remove(key);
        }
        Some(payload) => {
            let ct = codec::content_type_of(m.headers());
            match codec::decode::<DlqEntry>(ct, Some(payload)) {
                Ok(entry) if entry.dlq_id == key => view.upsert(m.partition(), m.offset(), &entry),
                Ok(entry) => {
                    tracing::error!(
                        key,
                        dlq_id = entry.dlq_id,
                        offset = m.offset(),
                        "store record key and dlqId differ; skipped"
                    );
                    metrics::store_integrity_error();
                }
                Err(e) => {
                    tracing::error!(key, partition = m.partition(), offset = m.offset(), error = %e, "undecodable store record; skipped");
                    metrics::store_integrity_error();
                }
            }
        }
    }
}
