//! Consumer lag of our group on an input topic: end offsets minus committed offsets, the
//! number a Kafka operator already knows from `kafka-consumer-groups --describe`.

use std::time::Duration;

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    Offset, TopicPartitionList,
};
use tokio_util::sync::CancellationToken;

use super::KafkaConn;
use crate::metrics;

/// Records on `topic` that group `group` has not committed yet.
pub fn group_lag(conn: &KafkaConn, group: &str, topic: &str) -> Result<i64, KafkaError> {
    let mut c = conn.client_config();
    c.set("group.id", group).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    let mut lag = 0;
    for e in committed.elements() {
        let (low, high) =
            consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(5))?;
        let from = match e.offset() {
            Offset::Offset(o) => o.max(low),
            _ => low,
        };
        lag += (high - from).max(0);
    }
    Ok(lag)
}

/// Publishes `dlq_consumer_lag{topic}` for each (group, input topic) every `interval`.
#[tracing::instrument(name = "lag_monitor", skip_all)]
pub async fn monitor(
    conn: KafkaConn,
    inputs: Vec<(String, String)>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        for (group, topic) in &inputs {
            let (c, g, t) = (conn.clone(), group.clone(), topic.clone());
            match tokio::task::spawn_blocking(move || group_lag(&c, &g, &t)).await {
                Ok(Ok(lag)) => metrics::consumer_lag(topic, lag),
                Ok(Err(e)) => tracing::debug!(topic, error = %e, "consumer lag not measured"),
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
