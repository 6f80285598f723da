//! The store guard (docs/design.md §4): the store is only as safe as its topic. On start and every
//! `guard_interval` it checks that the topic is compacted with no time or size retention, and that
//! no partition's log start offset has passed an entry the view still holds. A breach is logged
//! loudly, counted in `dlq_store_integrity_errors_total` and fails `/readyz`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rdkafka::{
    admin::{AdminClient, AdminOptions, ResourceSpecifier},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};
use tokio_util::sync::CancellationToken;

use super::StoreView;
use crate::{
    events::{Event, StoreIntegrityBreach},
    health::Health,
    kafka::KafkaConn,
};

/// What a check found wrong with the store topic's configuration, if anything.
pub fn config_breach(settings: &HashMap<String, String>) -> Option<String> {
    let get = |k: &str| settings.get(k).map(String::as_str);
    let mut problems = Vec::new();
    if let Some(policy) = get("cleanup.policy") {
        if policy.trim() != "compact" {
            problems.push(format!("cleanup.policy is `{policy}`, must be `compact`"));
        }
    }
    for k in ["retention.ms", "retention.bytes"] {
        if let Some(v) = get(k) {
            if v.trim() != "-1" {
                problems.push(format!("{k} is {v}, must be -1 (no retention)"));
            }
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Partitions whose log start offset passed an entry the view still holds.
pub fn truncations(
    lowest_live: &HashMap<i32, i64>,
    log_start: &HashMap<i32, i64>,
) -> Vec<(i32, i64, i64)> {
    let mut found: Vec<(i32, i64, i64)> = lowest_live
        .iter()
        .filter_map(|(p, live)| {
            log_start
                .get(p)
                .filter(|start| **start > *live)
                .map(|start| (*p, *live, *start))
        })
        .collect();
    found.sort_unstable();
    found
}

pub struct StoreGuard {
    pub conn: KafkaConn,
    pub topic: String,
    pub view: Arc<StoreView>,
    pub health: Arc<Health>,
    pub interval: Duration,
}

impl StoreGuard {
    #[tracing::instrument(name = "store_guard", skip_all, fields(topic = %self.topic))]
    pub async fn run(self, shutdown: CancellationToken) {
        let admin: Option<AdminClient<DefaultClientContext>> =
            match self.conn.client_config().create() {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::error!(
                        error = self.conn.mask(&e.to_string()),
                        "store guard: cannot create an admin client"
                    );
                    None
                }
            };
        loop {
            if let Some(admin) = &admin {
                self.check_config(admin).await;
            }
            self.check_log_start().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    async fn check_config(&self, admin: &AdminClient<DefaultClientContext>) {
        if self.conn.embedded {
            // The mock broker has no topic configuration (and no compaction) to check.
            return;
        }
        let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
        let result = admin
            .describe_configs(&[ResourceSpecifier::Topic(&self.topic)], &opts)
            .await;
        let settings: HashMap<String, String> = match result {
            Ok(mut rs) => match rs.pop() {
                Some(Ok(resource)) => resource
                    .entries
                    .into_iter()
                    .filter_map(|e| e.value.map(|v| (e.name, v)))
                    .collect(),
                Some(Err(e)) => {
                    tracing::warn!(topic = self.topic, error = %e, "store guard: describe configs failed");
                    return;
                }
                None => return,
            },
            Err(e) => {
                tracing::warn!(topic = self.topic, error = %e, "store guard: describe configs failed");
                return;
            }
        };
        let breach = config_breach(&settings);
        if let Some(b) = &breach {
            StoreIntegrityBreach {
                what: &format!("the store topic {} may lose entries: {b}", self.topic),
            }
            .emit();
        }
        self.health.set_store_config_breach(breach);
    }

    async fn check_log_start(&self) {
        if !self.view.is_caught_up() {
            return;
        }
        let conn = self.conn.clone();
        let topic = self.topic.clone();
        // Taken before the offsets are read: an entry the view holds now was on the topic
        // before, so a log start past it is a real loss, not a race with a newer write.
        let lowest_live = self.view.lowest_live_offsets();
        let starts = tokio::task::spawn_blocking(move || log_start_offsets(&conn, &topic)).await;
        match starts {
            // Reachability is the probe's (`kafka::reachability`) alone: a partition whose
            // leader is being elected fails this read, and marking all of Kafka unreachable for
            // it flapped every instance's `/readyz` whenever one node of a cluster died.
            Ok(Ok(starts)) => {
                for (partition, live, start) in truncations(&lowest_live, &starts) {
                    let what = format!(
                        "partition {partition} of {} starts at offset {start}, past entry offset {live} \
                         the view holds: records were deleted from the store",
                        self.topic
                    );
                    StoreIntegrityBreach { what: &what }.emit();
                    self.health.set_store_truncated(what);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(topic = self.topic, error = %e, "store guard: cannot read log start offsets");
            }
            Err(e) => tracing::error!(error = %e, "store guard task failed"),
        }
    }
}

fn log_start_offsets(conn: &KafkaConn, topic: &str) -> Result<HashMap<i32, i64>, KafkaError> {
    let consumer: BaseConsumer = conn.reader_config().create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    let mut out = HashMap::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            let (low, _) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5))?;
            out.insert(p.id(), low);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_compacted_topic_without_retention_is_fine() {
        let s = settings(&[
            ("cleanup.policy", "compact"),
            ("retention.ms", "-1"),
            ("retention.bytes", "-1"),
        ]);
        assert_eq!(config_breach(&s), None);
    }

    #[test]
    fn delete_policy_or_any_retention_is_a_breach() {
        let s = settings(&[
            ("cleanup.policy", "compact,delete"),
            ("retention.ms", "1000"),
        ]);
        let b = config_breach(&s).unwrap();
        assert!(
            b.contains("cleanup.policy") && b.contains("retention.ms"),
            "{b}"
        );
    }

    #[test]
    fn a_log_start_past_a_held_entry_is_a_truncation() {
        let live = HashMap::from([(0, 5), (1, 7)]);
        let start = HashMap::from([(0, 5), (1, 8)]);
        assert_eq!(truncations(&live, &start), vec![(1, 7, 8)]);
    }
}
