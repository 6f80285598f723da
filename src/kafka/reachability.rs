//! Keeps `/readyz` honest after start: Kafka is asked for the store topic's metadata every few
//! seconds, and an unanswered request marks it unreachable (503) until an answer comes again.
//! Without this, a broker that goes away after start-up left the service reporting ready while
//! every pipeline was failing.

use std::{sync::Arc, time::Duration};

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use super::KafkaConn;
use crate::health::Health;

/// How often the cluster is asked.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long an answer may take before Kafka counts as unreachable.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Asks for `topic`'s metadata within [`TIMEOUT`]. A request that went to a broker which just
/// died fails at once, though the cluster answers from its other brokers: one failure is asked
/// again (librdkafka then picks a live broker), so killing one node of three does not flap
/// every instance's `/readyz`.
fn ask(client: &BaseConsumer, topic: &str) -> Result<usize, rdkafka::error::KafkaError> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.fetch_metadata(Some(topic), left) {
            Ok(md) => return Ok(md.brokers().len()),
            Err(e) if left <= Duration::from_millis(500) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Runs until `shutdown`, updating `health`'s Kafka reachability.
pub async fn watch(
    conn: KafkaConn,
    topic: String,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    let mut c = conn.client_config();
    c.set("group.id", "workflow-dlq-probe");
    let client: Arc<BaseConsumer> = match c.create() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            let error = conn.mask(&e.to_string());
            tracing::error!(error, "cannot create the Kafka reachability probe");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
        let (c, t) = (client.clone(), topic.clone());
        let answer = tokio::task::spawn_blocking(move || ask(&c, &t)).await;
        let reachable = matches!(answer, Ok(Ok(brokers)) if brokers > 0);
        if reachable != health.kafka_reachable() {
            if reachable {
                tracing::info!(bootstrap = conn.bootstrap, "Kafka reachable again");
            } else {
                let error = match answer {
                    Ok(Err(e)) => conn.mask(&e.to_string()),
                    Ok(Ok(_)) => "no brokers in the metadata".to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(
                    bootstrap = conn.bootstrap,
                    error,
                    "Kafka unreachable; not ready until it answers again"
                );
            }
        }
        health.set_kafka_reachable(reachable);
    }
}
