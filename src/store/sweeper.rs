//! Retention: writes tombstones for entries past their `expires_at`. Several instances may sweep
//! at once: a tombstone written twice is still one deletion, and ingest refuses to re-create a
//! tombstoned entry, so no interleaving resurrects one.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::StoreView;
use crate::{
    events::{EntriesExpired, Event},
    kafka::{
        awaited::{AwaitedProducer, Outgoing},
        KafkaConn,
    },
};

pub struct Sweeper {
    pub conn: KafkaConn,
    pub topic: String,
    pub view: Arc<StoreView>,
    pub interval: Duration,
}

impl Sweeper {
    #[tracing::instrument(name = "sweeper", skip_all, fields(topic = %self.topic))]
    pub async fn run(self, shutdown: CancellationToken) {
        let config = self.conn.idempotent_producer_config();
        let producer = match AwaitedProducer::new(&config, "retention-sweep") {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(
                    error = self.conn.mask(&e.to_string()),
                    "retention sweeper: cannot create a producer; entries will not expire"
                );
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if !self.view.is_caught_up() {
                continue;
            }
            let expired = self.view.expired_ids(crate::now_ms());
            if expired.is_empty() {
                continue;
            }
            let mut written = 0u64;
            let sends = expired.iter().map(|id| {
                let tombstone = Outgoing {
                    topic: &self.topic,
                    key: id.as_bytes(),
                    value: None,
                    headers: None,
                };
                producer.send(tombstone, Duration::from_secs(10))
            });
            for r in futures::future::join_all(sends).await {
                match r {
                    Ok(_) => written += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, "retention sweeper: tombstone not written; retried next sweep")
                    }
                }
            }
            EntriesExpired { count: written }.emit();
        }
    }
}
