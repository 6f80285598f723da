//! A bounded read of the rejected topic's tail, on demand: the console's Rejected page and the
//! overview's count. Nothing keeps this in memory between requests — the topic is the record;
//! each request reads at most `per_partition` records from the end of each partition, within
//! a deadline.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{Headers, Message},
    Offset, TopicPartitionList,
};

use crate::kafka::{rejected::headers, KafkaConn};

/// How long one read may take in all.
const DEADLINE: Duration = Duration::from_secs(4);
/// Longest value kept per record (for display).
const VALUE_PREVIEW: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum RejectedError {
    #[error("cannot read the rejected topic `{topic}`: {source}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("reading the rejected topic was interrupted: {0}")]
    Task(String),
}

/// One rejected record, as its headers describe it.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp (unix ms), when the broker gave one.
    pub timestamp: Option<i64>,
    pub reason: String,
    pub detail: String,
    pub source: String,
    pub key: String,
    /// The start of the value, lossily as text.
    pub value: String,
    pub value_len: usize,
}

/// The tail that was read, newest first, and how many records the topic holds.
#[derive(Debug, Default)]
pub struct Tail {
    pub total: i64,
    pub records: Vec<Rejected>,
}

/// Reads the last `per_partition` records of every partition of `topic` (0: only the counts).
pub async fn tail(
    conn: &KafkaConn,
    topic: &str,
    per_partition: i64,
) -> Result<Tail, RejectedError> {
    let (conn, topic) = (conn.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        read(&conn, &topic, per_partition).map_err(|source| RejectedError::Kafka { topic, source })
    })
    .await
    .map_err(|e| RejectedError::Task(e.to_string()))?
}

fn read(conn: &KafkaConn, topic: &str, per_partition: i64) -> Result<Tail, KafkaError> {
    let consumer: BaseConsumer = conn.reader_config().create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(3))?;
    let mut tail = Tail::default();
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(3))?;
            tail.total += (high - low).max(0);
            let from = (high - per_partition).max(low);
            if per_partition > 0 && high > from {
                tpl.add_partition_offset(topic, p.id(), Offset::Offset(from))?;
                ends.insert(p.id(), high);
            }
        }
    }
    if ends.is_empty() {
        return Ok(tail);
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    while !ends.is_empty() && started.elapsed() < DEADLINE {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
        let header = |name: &str| {
            m.headers()
                .and_then(|hs| hs.iter().find(|h| h.key == name))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let value = m.payload().unwrap_or_default();
        tail.records.push(Rejected {
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            reason: header(headers::REASON),
            detail: header(headers::DETAIL),
            source: format!(
                "{} [{}] @{}",
                header(headers::SOURCE_TOPIC),
                header(headers::SOURCE_PARTITION),
                header(headers::SOURCE_OFFSET)
            ),
            key: m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            value: String::from_utf8_lossy(&value[..value.len().min(VALUE_PREVIEW)]).into_owned(),
            value_len: value.len(),
        });
    }
    tail.records.sort_by(|a, b| {
        (b.timestamp, b.partition, b.offset).cmp(&(a.timestamp, a.partition, a.offset))
    });
    Ok(tail)
}
